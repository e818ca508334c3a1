//! `swucx_request_t`: an operation in flight on a caller's buffer, and its outcome.

use std::time::Duration;

pub(crate) use super::engine::timeout;
use super::engine::{SignalList, swucx_signal_t};
use super::status::{
    SWUCX_ERR_INVALID_PARAM, SWUCX_ERR_INVALID_STATE, SWUCX_ERR_TIMED_OUT, SWUCX_INPROGRESS,
    SWUCX_OK, set_last_error, swucx_status_t,
};
use super::{
    Handle, boundary, fail, fail_with, impl_handle, try_mut, try_opt_out, try_ref, try_take,
    write_out,
};
use crate::{Engine, RawBuf, RegionBuf, Request, Signal, WaitEnd};

/// An operation started on a caller's buffer (send, receive, put, get, active message).
///
/// The buffer is borrowed, not copied: it must stay valid (and, for receives, untouched) until
/// the operation has completed, i.e. until `swucx_request_test`/`_poll`/`_wait` (or
/// `swucx_engine_wait`) returned something other than `SWUCX_INPROGRESS`. **Freeing an unfinished
/// request does not stop the operation: the buffer must still outlive it** (cancel a tag receive
/// first, or force-close the endpoint). **One exception: a request that failed detached**
/// (`swucx_request_is_detached`: its endpoint's peer failed while UCX still held the operation)
/// **leaves its buffer to UCX for good**: never free or reuse that buffer. Use a request from one
/// thread at a time.
///
/// Methods: `swucx_request_test`, `swucx_request_poll`, `swucx_request_wait`,
/// `swucx_request_info`, `swucx_request_is_detached`, `swucx_request_cancel`,
/// `swucx_request_free`, `swucx_engine_wait`, `swucx_engine_wait_signals`.
pub struct swucx_request_t {
    magic: u64,
    state: ReqState,
}
impl_handle!(swucx_request_t, b"SWreq\0\0\0");

pub(crate) enum ReqState {
    /// A running operation on one buffer.
    One(Request<RawBuf>),
    /// A running active-message send (header and payload).
    Two(Request<(RawBuf, RawBuf)>),
    /// A running operation on a part of a registered region (`*_mem` functions).
    Region(Request<RegionBuf>),
    /// A running active-message send with its payload in a registered region.
    TwoRegion(Request<(RawBuf, RegionBuf)>),
    /// The outcome, once complete.
    Done {
        status: swucx_status_t,
        message: Option<String>,
        length: usize,
        sender_tag: u64,
        /// Ended detached (`swucx_request_is_detached`).
        detached: bool,
    },
    /// Freed (kept in the pool).
    Empty,
}

/// Requests freed on this thread, reused to save an allocation per operation, oldest first
/// and only once `QUARANTINE` requests were freed after them: a stale handle (a request used,
/// or freed again, after its `swucx_request_free`) finds its magic number cleared
/// (`SWUCX_ERR_BAD_HANDLE`) for that long, instead of a new request in its place that it would
/// free or wait for. At most `MAX_POOLED`; past that the oldest is freed.
const MAX_POOLED: usize = 64;
const QUARANTINE: usize = 16;
thread_local! {
    // Boxes, not values: a pooled request keeps its heap address, which C holds as the handle.
    static POOL: std::cell::RefCell<std::collections::VecDeque<Box<swucx_request_t>>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

impl ReqState {
    fn is_complete(&self) -> bool {
        match self {
            ReqState::One(r) => r.is_complete(),
            ReqState::Two(r) => r.is_complete(),
            ReqState::Region(r) => r.is_complete(),
            ReqState::TwoRegion(r) => r.is_complete(),
            ReqState::Done { .. } | ReqState::Empty => true,
        }
    }

    fn poll(&self) -> bool {
        match self {
            ReqState::One(r) => r.poll(),
            ReqState::Two(r) => r.poll(),
            ReqState::Region(r) => r.poll(),
            ReqState::TwoRegion(r) => r.poll(),
            ReqState::Done { .. } | ReqState::Empty => true,
        }
    }

    fn wait_timeout(&self, timeout: Duration) -> crate::Result<bool> {
        match self {
            ReqState::One(r) => r.wait_timeout(timeout),
            ReqState::Two(r) => r.wait_timeout(timeout),
            ReqState::Region(r) => r.wait_timeout(timeout),
            ReqState::TwoRegion(r) => r.wait_timeout(timeout),
            ReqState::Done { .. } | ReqState::Empty => Ok(true),
        }
    }

    fn engine_wait(
        &self,
        engine: &Engine,
        timeout: Option<Duration>,
        signals: &[&Signal],
        spin: bool,
    ) -> WaitEnd {
        match self {
            ReqState::One(r) => engine.wait_end(r, timeout, signals, spin),
            ReqState::Two(r) => engine.wait_end(r, timeout, signals, spin),
            ReqState::Region(r) => engine.wait_end(r, timeout, signals, spin),
            ReqState::TwoRegion(r) => engine.wait_end(r, timeout, signals, spin),
            ReqState::Done { .. } | ReqState::Empty => WaitEnd::Complete,
        }
    }

    /// Whether the operation runs on `engine`'s worker, or has nothing left to run (done).
    fn runs_on(&self, engine: &Engine) -> bool {
        let worker = match self {
            ReqState::One(r) => r.worker(),
            ReqState::Two(r) => r.worker(),
            ReqState::Region(r) => r.worker(),
            ReqState::TwoRegion(r) => r.worker(),
            ReqState::Done { .. } | ReqState::Empty => None,
        };
        worker.is_none_or(|w| engine.is_own(w))
    }

    fn is_detached(&self) -> bool {
        match self {
            ReqState::One(r) => r.is_detached(),
            ReqState::Two(r) => r.is_detached(),
            ReqState::Region(r) => r.is_detached(),
            ReqState::TwoRegion(r) => r.is_detached(),
            ReqState::Done { detached, .. } => *detached,
            ReqState::Empty => false,
        }
    }

    fn cancel(&self) {
        match self {
            ReqState::One(r) => r.cancel(),
            ReqState::Two(r) => r.cancel(),
            ReqState::Region(r) => r.cancel(),
            ReqState::TwoRegion(r) => r.cancel(),
            ReqState::Done { .. } | ReqState::Empty => {}
        }
    }

    /// Turns a complete operation into its outcome (no-op if not complete or already done).
    fn settle(&mut self) {
        if !self.is_complete() || matches!(self, ReqState::Done { .. } | ReqState::Empty) {
            return;
        }
        let detached = self.is_detached();
        let result = match std::mem::replace(self, ReqState::Empty) {
            ReqState::One(r) => r.wait().map(|d| (d.length, d.sender_tag)),
            ReqState::Two(r) => r.wait().map(|d| (d.length, d.sender_tag)),
            ReqState::Region(r) => r.wait().map(|d| (d.length, d.sender_tag)),
            ReqState::TwoRegion(r) => r.wait().map(|d| (d.length, d.sender_tag)),
            ReqState::Done { .. } | ReqState::Empty => unreachable!("checked above"),
        };
        *self = match result {
            Ok((length, sender_tag)) => ReqState::Done {
                status: SWUCX_OK,
                message: None,
                length,
                sender_tag,
                detached,
            },
            Err(e) => ReqState::Done {
                status: swucx_status_t::from(e.status().0),
                message: Some(e.to_string()),
                length: 0,
                sender_tag: 0,
                detached,
            },
        };
    }

    /// The status to report now: INPROGRESS, or the final status (recording its detail).
    fn status(&mut self) -> swucx_status_t {
        self.settle();
        match self {
            ReqState::Done {
                status, message, ..
            } => {
                if let Some(m) = message {
                    set_last_error(m);
                }
                *status
            }
            ReqState::Empty => SWUCX_ERR_INVALID_STATE,
            _ => SWUCX_INPROGRESS,
        }
    }
}

/// Hands out a started operation: writes the request to `*req_p` and returns `SWUCX_OK` if it
/// already completed, `SWUCX_INPROGRESS` if not; on failure to start, returns the error and
/// writes nothing.
pub(crate) fn hand_out(
    started: crate::Result<ReqState>,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    let state = match started {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    let status = if state.is_complete() {
        SWUCX_OK
    } else {
        SWUCX_INPROGRESS
    };
    // `try_with`: from a thread-local destructor the pool is gone; allocate instead.
    let reused = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() > QUARANTINE {
            pool.pop_front()
        } else {
            None
        }
    });
    let boxed = match reused.ok().flatten() {
        Some(mut boxed) => {
            boxed.magic = swucx_request_t::MAGIC;
            boxed.state = state;
            boxed
        }
        None => Box::new(swucx_request_t {
            magic: swucx_request_t::MAGIC,
            state,
        }),
    };
    write_out!(req_p, Box::into_raw(boxed));
    status
}

/// The longest single wait slice (so deadlines never overflow `Instant`).
const SLICE: Duration = Duration::from_secs(3600);

/// Tells whether the operation is complete, without progressing the worker. Returns
/// `SWUCX_INPROGRESS` while it runs, then its final status: `SWUCX_OK` or the error it ended
/// with (e.g. `SWUCX_ERR_CANCELED`, `SWUCX_ERR_MESSAGE_TRUNCATED`, `SWUCX_ERR_CONNECTION_RESET`).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_test(req: *mut swucx_request_t) -> swucx_status_t {
    boundary(|| try_mut!(req).state.status())
}

/// Progresses the request's worker once, then reports as `swucx_request_test` does.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_poll(req: *mut swucx_request_t) -> swucx_status_t {
    boundary(|| {
        let req = try_mut!(req);
        req.state.poll();
        req.state.status()
    })
}

/// Progresses the request's worker on this thread (busy first, then sleeping on its event fd if
/// the context has the wakeup feature) until the operation completes or `timeout_ms` passes
/// (negative: no limit). Returns the final status, or `SWUCX_ERR_TIMED_OUT` (the request keeps
/// running). Not from inside a callback (`SWUCX_ERR_BUSY`). For a worker another thread
/// progresses, use an engine and `swucx_engine_wait`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_wait(req: *mut swucx_request_t, timeout_ms: i64) -> swucx_status_t {
    boundary(|| {
        let req = try_mut!(req);
        let done = match timeout(timeout_ms) {
            Some(t) => req.state.wait_timeout(t),
            None => loop {
                match req.state.wait_timeout(SLICE) {
                    Ok(false) => continue,
                    other => break other,
                }
            },
        };
        match done {
            Ok(true) => req.state.status(),
            Ok(false) => fail_with(SWUCX_ERR_TIMED_OUT, "request wait timed out"),
            Err(e) => fail(e),
        }
    })
}

/// Waits for the request through an engine (any thread): spins driving progress, then sleeps
/// until the completion wakes it or `timeout_ms` passes (negative: no limit). Returns the final
/// status or `SWUCX_ERR_TIMED_OUT`; `SWUCX_ERR_BUSY` inside a callback, where no wait is
/// allowed; `SWUCX_ERR_INVALID_PARAM` for an operation still running on another worker than the
/// engine's (the engine progresses only its own: such a wait would never end).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_wait(
    engine: *const super::engine::swucx_engine_t,
    req: *mut swucx_request_t,
    timeout_ms: i64,
) -> swucx_status_t {
    boundary(|| {
        let engine = &super::try_ref!(engine).engine;
        let req = try_mut!(req);
        if let Err(status) = refuse_wait(req.state.runs_on(engine)) {
            return status;
        }
        match req
            .state
            .engine_wait(engine, timeout(timeout_ms), &[], true)
        {
            WaitEnd::Complete => req.state.status(),
            _ => fail_with(SWUCX_ERR_TIMED_OUT, "engine wait timed out"),
        }
    })
}

/// `swucx_engine_wait_signals` flag: sleep at once, without the spin (e.g. waiting again after
/// a wait that already spun).
pub const SWUCX_WAIT_NO_SPIN: u32 = 1 << 0;

/// Whether a wait with these `SWUCX_WAIT_*` flags spins first; unknown flags are an error
/// (recorded; the status to return).
fn wait_spins(flags: u32) -> Result<bool, swucx_status_t> {
    if flags & !SWUCX_WAIT_NO_SPIN != 0 {
        return Err(fail_with(
            SWUCX_ERR_INVALID_PARAM,
            format!("unknown wait flags {flags:#x}"),
        ));
    }
    Ok(flags & SWUCX_WAIT_NO_SPIN == 0)
}

/// Refuses an engine wait that cannot end well: inside a UCX callback (a handler on the
/// progressing thread), which it would hold up, or deadlock, the progress it waits for
/// (`SWUCX_ERR_BUSY`, as `swucx_request_wait`), and unless `on_engine`, i.e. what it waits for
/// is on the engine's worker (or complete): the engine progresses only its own worker, so such a
/// wait would never end (`SWUCX_ERR_INVALID_PARAM`). Records the detail; the status to return.
fn refuse_wait(on_engine: bool) -> Result<(), swucx_status_t> {
    crate::worker::refuse_wait_in_callback("engine wait").map_err(fail)?;
    if on_engine {
        Ok(())
    } else {
        Err(fail_with(
            SWUCX_ERR_INVALID_PARAM,
            "what the engine wait is for belongs to another worker than the engine's",
        ))
    }
}

/// The arguments of an engine wait, checked: whether it spins (`flags`) and the signals it
/// watches; then the wait itself, by `refuse_wait`. On failure the detail is recorded and the
/// status to return given.
pub(crate) fn wait_args<'a>(
    flags: u32,
    signals: *const *const swucx_signal_t,
    count: usize,
    on_engine: bool,
) -> Result<(bool, SignalList<'a>), swucx_status_t> {
    let spin = wait_spins(flags)?;
    let signals = SignalList::new(signals, count)?;
    refuse_wait(on_engine)?;
    Ok((spin, signals))
}

/// As `swucx_engine_wait`, and the wait also ends as soon as one of the `count` signals in
/// `signals` is raised (`swucx_signal_raise` from any thread, or an endpoint's failure with
/// `swucx_ep_raise_on_failure`); a signal already raised ends it at once. While it sleeps the
/// thread has no periodic wake-up, so a thread can wait for as long as it takes, with a way to
/// interrupt it (cancellation, shutdown). Returns the final status when the operation completed,
/// `SWUCX_INPROGRESS` when a signal ended the wait (the request keeps running: wait again,
/// cancel it, or keep its buffer alive until it completes), or `SWUCX_ERR_TIMED_OUT`. `signals`
/// may be NULL when `count` is 0; at most `SWUCX_WAIT_MAX_SIGNALS` (`SWUCX_ERR_INVALID_PARAM`).
/// `flags`: 0 or `SWUCX_WAIT_NO_SPIN`. `SWUCX_ERR_INVALID_PARAM` for an operation on another
/// worker, as for `swucx_engine_wait`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_wait_signals(
    engine: *const super::engine::swucx_engine_t,
    req: *mut swucx_request_t,
    timeout_ms: i64,
    flags: u32,
    signals: *const *const swucx_signal_t,
    count: usize,
) -> swucx_status_t {
    boundary(|| {
        let engine = &super::try_ref!(engine).engine;
        let req = try_mut!(req);
        let (spin, refs) = match wait_args(flags, signals, count, req.state.runs_on(engine)) {
            Ok(args) => args,
            Err(status) => return status,
        };
        match req
            .state
            .engine_wait(engine, timeout(timeout_ms), refs.get(), spin)
        {
            WaitEnd::Complete => req.state.status(),
            WaitEnd::Signalled => SWUCX_INPROGRESS,
            WaitEnd::TimedOut => fail_with(SWUCX_ERR_TIMED_OUT, "engine wait timed out"),
        }
    })
}

/// The outcome details of a completed operation: bytes sent or received (`length_p`) and, for
/// tag receives, the sender's tag (`sender_tag_p`, 0 otherwise). Either out-pointer may be NULL
/// if not wanted. Returns the operation's final status (details written only if `SWUCX_OK`), or
/// `SWUCX_ERR_INVALID_STATE` if it is still running.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_info(
    req: *mut swucx_request_t,
    length_p: *mut usize,
    sender_tag_p: *mut u64,
) -> swucx_status_t {
    boundary(|| {
        let req = try_mut!(req);
        try_opt_out!(length_p);
        try_opt_out!(sender_tag_p);
        let status = req.state.status();
        if status == SWUCX_INPROGRESS {
            return fail_with(SWUCX_ERR_INVALID_STATE, "request is still in progress");
        }
        if let ReqState::Done {
            status: SWUCX_OK,
            length,
            sender_tag,
            ..
        } = req.state
        {
            if !length_p.is_null() {
                write_out!(length_p, length);
            }
            if !sender_tag_p.is_null() {
                write_out!(sender_tag_p, sender_tag);
            }
        }
        status
    })
}

/// Whether the operation ended detached: its endpoint's peer failed while UCX still held it
/// (UCX 1.13 keeps some, e.g. rendezvous sends over shared memory, for good), so swucx gave it
/// up and it completed with the failure status, but **UCX may still read or write its buffer**:
/// keep that buffer valid, and unused, for the rest of the process (never free or reuse it).
/// Check it when a request completes with an error before releasing the buffer. False for a
/// request still running, one UCX completed (successfully or not), and a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_is_detached(req: *const swucx_request_t) -> bool {
    boundary(|| try_ref!(req).state.is_detached())
}

/// Asks UCX to cancel the operation. Only a tag receive not matched yet can be cancelled; it
/// then completes with `SWUCX_ERR_CANCELED`. For other operations this does nothing. Returns
/// `SWUCX_OK` (the outcome comes through test/poll/wait).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_cancel(req: *mut swucx_request_t) -> swucx_status_t {
    boundary(|| {
        try_mut!(req).state.cancel();
        SWUCX_OK
    })
}

/// Frees the request. NULL is a no-op. If the operation is still running it goes on in the
/// background (an unmatched tag receive is cancelled): the buffer must stay valid until UCX is
/// done with it. Using the handle afterwards, or freeing it again, is undefined behaviour: it is
/// detected (`SWUCX_ERR_BAD_HANDLE`, nothing freed) while its memory is not reused, which for a
/// request is until at least 16 more requests were freed on the freeing thread.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_request_free(req: *mut swucx_request_t) {
    boundary(|| {
        if req.is_null() {
            return;
        }
        let mut boxed = try_take!(req);
        boxed.state = ReqState::Empty;
        // From a thread-local destructor the pool is gone: the box is freed instead.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() == MAX_POOLED {
                pool.pop_front();
            }
            pool.push_back(boxed);
        });
    })
}
