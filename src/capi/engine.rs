//! `swucx_engine_t`: the thread-safe front (a worker plus waiting from any thread).

use std::ffi::c_void;
use std::sync::Arc;

use super::context::swucx_context_t;
use super::endpoint::raw_buf;
use super::request::{ReqState, hand_out, swucx_request_t, wait_args};
use super::status::{
    SWUCX_ERR_CANCELED, SWUCX_ERR_INVALID_PARAM, SWUCX_ERR_TIMED_OUT, SWUCX_INPROGRESS, SWUCX_OK,
    swucx_status_t,
};
use super::worker::{new_worker, swucx_worker_t};
use super::{
    Handle, boundary, fail, fail_with, impl_handle, into_handle, try_opt_out, try_out, try_ref,
    try_take, write_out,
};
use crate::{Engine, Signal, Status, WaitEnd};

/// A MULTI-threaded worker plus the means to wait on its operations from any number of threads
/// (`swucx_engine_wait`): a waiter spins driving progress, then sleeps; a background thread
/// progresses what nobody waits for. Idle, no thread runs. Under the hood: `swucx::Engine`.
/// Any thread.
///
/// Methods: `swucx_engine_create`, `swucx_engine_worker`, `swucx_engine_wait`,
/// `swucx_engine_wait_signals`, `swucx_engine_tag_recv`, `swucx_engine_accept`,
/// `swucx_engine_am_recv`, `swucx_engine_am_recv_into`, `swucx_engine_progress`,
/// `swucx_engine_spin_begin`, `swucx_engine_spin_end`, `swucx_engine_hand_over`,
/// `swucx_engine_destroy`.
pub struct swucx_engine_t {
    magic: u64,
    pub(crate) engine: Engine,
}
impl_handle!(swucx_engine_t, b"SWengine");

/// Creates an engine (a new worker and its background progress thread) on `context`, which
/// should have `SWUCX_FEATURE_WAKEUP`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_create(
    context: *const swucx_context_t,
    engine_p: *mut *mut swucx_engine_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        try_out!(engine_p);
        match Engine::new(context) {
            Ok(engine) => {
                write_out!(
                    engine_p,
                    into_handle(swucx_engine_t {
                        magic: swucx_engine_t::MAGIC,
                        engine,
                    })
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// A new handle to the engine's worker (make endpoints, listeners and handlers on it); destroy
/// it with `swucx_worker_destroy`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_worker(
    engine: *const swucx_engine_t,
    worker_p: *mut *mut swucx_worker_t,
) -> swucx_status_t {
    boundary(|| {
        let engine = &try_ref!(engine).engine;
        try_out!(worker_p);
        write_out!(worker_p, new_worker(engine.worker().clone()));
        SWUCX_OK
    })
}

/// Progresses the engine's worker once, unless another thread is progressing it for the engine
/// (a waiter or the background thread): then returns 0 at once, without contending for UCX's
/// worker lock. Returns the number of events processed (0 for a NULL or invalid handle). For
/// spinning on something no wait covers, e.g. an active message expected within microseconds.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_progress(engine: *const swucx_engine_t) -> u32 {
    boundary(|| try_ref!(engine).engine.progress())
}

/// Announces that the calling thread is about to spin on `swucx_engine_progress` (e.g. for an
/// active message expected within microseconds): while it spins, and for a moment after
/// (another spin usually follows), the engine's background thread leaves the worker to the
/// spinner instead of waking for every arrival and contending for it. Every begin needs one
/// `swucx_engine_spin_end`, from any thread; a spin left unended keeps the background thread
/// off the worker (only waits and spinners progress). A thread that stops spinning to sleep on
/// something only progress delivers calls `swucx_engine_hand_over` first.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_spin_begin(engine: *const swucx_engine_t) -> swucx_status_t {
    boundary(|| {
        try_ref!(engine).engine.begin_spin();
        SWUCX_OK
    })
}

/// Ends a spin announced by `swucx_engine_spin_begin`. `SWUCX_ERR_INVALID_PARAM` if no spin
/// is running.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_spin_end(engine: *const swucx_engine_t) -> swucx_status_t {
    boundary(|| {
        if try_ref!(engine).engine.end_spin() {
            SWUCX_OK
        } else {
            fail_with(
                SWUCX_ERR_INVALID_PARAM,
                "no spin is running (swucx_engine_spin_end without swucx_engine_spin_begin)",
            )
        }
    })
}

/// Asks the engine's background thread to progress now (it may be resting after spins): call
/// it before sleeping on something only progress delivers, e.g. a message a handler hands to
/// this thread. `swucx_engine_wait` and its kin do this themselves.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_hand_over(engine: *const swucx_engine_t) -> swucx_status_t {
    boundary(|| {
        try_ref!(engine).engine.hand_over();
        SWUCX_OK
    })
}

/// Receives the next message whose tag matches `tag` on the bits set in `tag_mask`, from any
/// endpoint of the engine's worker, into `length` bytes at `buffer`, waiting as
/// `swucx_engine_wait_signals` does (`timeout_ms` negative: no limit; `flags`: 0 or
/// `SWUCX_WAIT_NO_SPIN`; up to `SWUCX_WAIT_MAX_SIGNALS` signals). Unlike
/// `swucx_worker_tag_recv`, nothing stays posted after the call unless it says so: when the
/// wait ends without a message, the receive is withdrawn. So `buffer` need only be valid for
/// the call (e.g. a Go buffer cgo pins for the call), in every case but one: a message that
/// matched and is still arriving (a rendezvous, or fragments) when the wait ended.
///
/// Returns:
/// - `SWUCX_OK`: received; the length and the sender's tag are written to `*length_p` and
///   `*sender_tag_p` (either may be NULL).
/// - the receive's error, e.g. `SWUCX_ERR_MESSAGE_TRUNCATED` (a message longer than `length`).
/// - `SWUCX_ERR_TIMED_OUT` (the timeout passed) or `SWUCX_ERR_CANCELED` (a signal was raised):
///   nothing received, nothing posted.
/// - `SWUCX_INPROGRESS`: the wait ended while a matched message was still arriving; its request
///   is written to `*req_p` (the buffer is UCX's until it completes: wait for it as for
///   `swucx_worker_tag_recv`'s). With `req_p` NULL the call waits for such a message to its
///   end instead (its sender's failure ends it with an error), so it never returns this.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn swucx_engine_tag_recv(
    engine: *const swucx_engine_t,
    buffer: *mut c_void,
    length: usize,
    tag: u64,
    tag_mask: u64,
    timeout_ms: i64,
    flags: u32,
    signals: *const *const swucx_signal_t,
    count: usize,
    length_p: *mut usize,
    sender_tag_p: *mut u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let engine = &try_ref!(engine).engine;
        // The C contract: `length` writable bytes at `buffer`, untouched by the caller during
        // the call, and past it while a request handed out in `*req_p` runs.
        let buf = raw_buf!(buffer, length);
        try_opt_out!(length_p);
        try_opt_out!(sender_tag_p);
        try_opt_out!(req_p);
        let (spin, refs) = match wait_args(flags, signals, count, true) {
            Ok(args) => args,
            Err(status) => return status,
        };
        let request = match engine.worker().tag_recv(tag, tag_mask, buf) {
            Ok(request) => request,
            Err(e) => return fail(e),
        };
        let end = engine.wait_end(&request, timeout(timeout_ms), refs.get(), spin);
        if end != WaitEnd::Complete {
            request.cancel();
            if !request.is_complete() && !req_p.is_null() {
                // In progress even if it completes meanwhile: the caller looks at the request.
                hand_out(Ok(ReqState::One(request)), req_p);
                return SWUCX_INPROGRESS;
            }
        }
        // Waited for through the engine only if it still runs (a matched message, no req_p).
        let result = if request.is_complete() {
            request.wait()
        } else {
            engine.wait(request)
        };
        match result {
            Ok(done) => {
                if !length_p.is_null() {
                    write_out!(length_p, done.length);
                }
                if !sender_tag_p.is_null() {
                    write_out!(sender_tag_p, done.sender_tag);
                }
                SWUCX_OK
            }
            Err(e) if e.status() == Status::ERR_CANCELED => match end {
                WaitEnd::Signalled => fail_with(SWUCX_ERR_CANCELED, "tag receive: signalled"),
                _ => fail_with(SWUCX_ERR_TIMED_OUT, "tag receive timed out"),
            },
            Err(e) => fail(e),
        }
    })
}

/// Stops the engine's background thread and releases the engine. NULL is a no-op
/// (`SWUCX_OK`). Its worker lives on while handles to it (or its endpoints and requests) exist,
/// progressed only by explicit calls from then on. No thread may be waiting on the engine (or
/// call it) any more: end such waits first (a signal they watch), then destroy. Not from inside
/// a callback (`SWUCX_ERR_BUSY`, nothing done): callbacks run on the engine's own thread or in a
/// wait on it, which the destroy would wait for or pull the engine from under. Using the handle
/// afterwards, or destroying it again, is undefined behaviour (detected as
/// `SWUCX_ERR_BAD_HANDLE` only while its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_destroy(engine: *mut swucx_engine_t) -> swucx_status_t {
    boundary(|| {
        if engine.is_null() {
            return SWUCX_OK;
        }
        try_ref!(engine);
        if let Err(e) = crate::worker::refuse_wait_in_callback("swucx_engine_destroy") {
            return fail(e);
        }
        drop(try_take!(engine));
        SWUCX_OK
    })
}

/// A flag any thread may raise to end `swucx_engine_wait_signals` calls that watch it: their
/// threads wake at once. It stays raised until `swucx_signal_reset`. Any number of threads may
/// wait on one signal at the same time; a wait may watch several (a per-call cancellation, a
/// shutdown flag, an endpoint's failure). Any thread; destroy it only when no wait uses it.
///
/// Methods: `swucx_signal_create`, `swucx_signal_raise`, `swucx_signal_reset`,
/// `swucx_signal_is_raised`, `swucx_signal_destroy`, `swucx_ep_raise_on_failure`.
pub struct swucx_signal_t {
    magic: u64,
    pub(crate) signal: Arc<Signal>,
}
impl_handle!(swucx_signal_t, b"SWsignal");

/// Creates a signal that is not raised.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_signal_create(signal_p: *mut *mut swucx_signal_t) -> swucx_status_t {
    boundary(|| {
        try_out!(signal_p);
        write_out!(
            signal_p,
            into_handle(swucx_signal_t {
                magic: swucx_signal_t::MAGIC,
                signal: Arc::new(Signal::new()),
            })
        );
        SWUCX_OK
    })
}

/// Raises the signal: every wait watching it ends (returns `SWUCX_INPROGRESS` unless its
/// operation completed), now and until `swucx_signal_reset`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_signal_raise(signal: *const swucx_signal_t) -> swucx_status_t {
    boundary(|| {
        try_ref!(signal).signal.raise();
        SWUCX_OK
    })
}

/// Lowers the signal. Make sure nothing raises it for an earlier purpose afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_signal_reset(signal: *const swucx_signal_t) -> swucx_status_t {
    boundary(|| {
        try_ref!(signal).signal.reset();
        SWUCX_OK
    })
}

/// Whether the signal is raised (false for a NULL or invalid handle).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_signal_is_raised(signal: *const swucx_signal_t) -> bool {
    boundary(|| try_ref!(signal).signal.is_raised())
}

/// Destroys the signal handle. NULL is a no-op. Endpoints it was registered with forget it. Using
/// the handle afterwards, or destroying it again, is undefined behaviour (detected as
/// `SWUCX_ERR_BAD_HANDLE` only while its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_signal_destroy(signal: *mut swucx_signal_t) {
    boundary(|| {
        if !signal.is_null() {
            drop(try_take!(signal));
        }
    })
}

/// The most signals one wait (`swucx_engine_wait_signals`, `swucx_engine_accept`) watches.
pub const SWUCX_WAIT_MAX_SIGNALS: usize = 8;

/// The signals of a wait, borrowed from the C array into a fixed one (no allocation).
pub(crate) struct SignalList<'a> {
    refs: [&'a Signal; SWUCX_WAIT_MAX_SIGNALS],
    count: usize,
}

impl<'a> SignalList<'a> {
    /// Checks `count` and each handle; on failure records the detail and gives the status.
    pub(crate) fn new(
        signals: *const *const swucx_signal_t,
        count: usize,
    ) -> Result<SignalList<'a>, swucx_status_t> {
        static UNUSED: Signal = Signal::new();
        if count > SWUCX_WAIT_MAX_SIGNALS {
            return Err(super::fail_with(
                SWUCX_ERR_INVALID_PARAM,
                format!("{count} signals, at most {SWUCX_WAIT_MAX_SIGNALS}"),
            ));
        }
        let mut refs: [&'a Signal; SWUCX_WAIT_MAX_SIGNALS] = [&UNUSED; SWUCX_WAIT_MAX_SIGNALS];
        if count > 0 {
            super::non_null(signals, "signals").map_err(super::ArgError::fail::<swucx_status_t>)?;
            // SAFETY: non-NULL; the caller passes an array of `count` signal handles.
            let list = unsafe { std::slice::from_raw_parts(signals, count) };
            for (slot, &signal) in refs.iter_mut().zip(list) {
                // SAFETY: as for try_ref: NULL or a handle from this library, checked first.
                let handle = unsafe { super::handle_ref(signal, "signals") };
                *slot = &handle
                    .map_err(super::ArgError::fail::<swucx_status_t>)?
                    .signal;
            }
        }
        Ok(SignalList { refs, count })
    }

    pub(crate) fn get(&self) -> &[&'a Signal] {
        &self.refs[..self.count]
    }
}

/// A timeout in milliseconds; negative means none.
pub(crate) fn timeout(ms: i64) -> Option<std::time::Duration> {
    u64::try_from(ms).ok().map(std::time::Duration::from_millis)
}
