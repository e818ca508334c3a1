//! `Worker`: a UCP worker (`ucp_worker_h`), its progress engine and event-fd wakeup.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::am::AmHandlers;
use crate::context::Context;
use crate::endpoint::{EndpointInner, EpShared};
use crate::request::{Callback, OpKind, OpParams};
use crate::status::{Error, Result, Status, check};
use crate::sys;

thread_local! {
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Whether this thread holds a worker's gate (see `Worker::gate`).
    static HOLDS_GATE: Cell<bool> = const { Cell::new(false) };
}

/// Held for one busy UCX call on a MULTI worker (see [`Worker::gate`]).
pub(crate) struct Gate<'a>(Option<std::sync::MutexGuard<'a, ()>>);

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        if self.0.is_some() {
            HOLDS_GATE.with(|h| h.set(false));
        }
    }
}

/// Marks the current thread as running a swucx callback inside `ucp_worker_progress` for as long
/// as the guard lives. Progress and blocking waits are refused there (UCX forbids re-entry).
pub(crate) struct CallbackGuard;

impl CallbackGuard {
    pub(crate) fn enter() -> CallbackGuard {
        CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
        CallbackGuard
    }
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// True while the current thread runs a callback from inside `ucp_worker_progress`.
#[inline(always)]
pub fn in_callback() -> bool {
    CALLBACK_DEPTH.with(|d| d.get() > 0)
}

/// `ERR_BUSY` (naming `op`) inside a callback, where a wait would hold up, or deadlock, the
/// progress it waits for: every wait that can be called there checks this first.
pub(crate) fn refuse_wait_in_callback(op: &'static str) -> Result<()> {
    if in_callback() {
        return Err(Error::with_detail(
            op,
            Status::ERR_BUSY,
            "cannot wait inside a UCX callback",
        ));
    }
    Ok(())
}

/// How long `progress_until` busy-polls without any event before it sleeps on the event fd.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);
/// How long a thread spins for a busy gate before it sleeps (see `Worker::gate`).
const GATE_SPIN: Duration = Duration::from_micros(20);
/// The longest single sleep on the event fd (so deadlines and missed wakeups stay bounded).
const MAX_SLEEP: Duration = Duration::from_millis(50);

pub(crate) struct WorkerInner {
    handle: sys::ucp_worker_h,
    context: Context,
    /// Endpoints by UCX handle, so an AM reply endpoint can be turned back into an `Endpoint`.
    pub(crate) endpoints: Mutex<HashMap<usize, Weak<EndpointInner>>>,
    /// The AM handler of each id (see `Worker::set_am_handler`).
    pub(crate) am_handlers: Mutex<AmHandlers>,
    /// Failed endpoints to force-close after the current progress call (not from callbacks),
    /// then to fail what UCX still holds of them, with the failure's status.
    failed_endpoints: Mutex<Vec<(Arc<EpShared>, Status)>>,
    has_failed_endpoints: AtomicBool,
    /// Endpoint closes still running in UCX; the worker waits for them before it is destroyed.
    pub(crate) closing: Arc<AtomicUsize>,
    /// MULTI thread mode (UCX takes the worker's lock in every call).
    multi: bool,
    /// Taken in front of UCX's worker lock by busy calls (see `Worker::gate`).
    gate: Mutex<()>,
    /// Completed UCX requests and AM data descriptors whose owners are done with them, released
    /// by the next progress call (see `Worker::free_request` and `Worker::release_am_data`).
    deferred_releases: Mutex<Vec<Deferred>>,
    has_deferred_releases: AtomicBool,
    /// `ucp_dt_make_contig(1)`, the datatype of every operation (evaluated once, by a C shim).
    bytes_datatype: sys::ucp_datatype_t,
    /// The `op_attr_mask` fields every operation sets (callback, user data, datatype, and the
    /// memory type where the context gives UCX that hint), fixed at creation: no per-operation
    /// branch on the hint.
    op_attr_base: u32,
    /// The longest active-message header UCX can send (`max_am_header`), queried once when the
    /// context has the AM feature: a longer one makes UCX 1.13 abort the process.
    max_am_header: OnceLock<usize>,
}

// SAFETY: the worker is created in UCS_THREAD_MODE_MULTI, so every UCX call on it is thread-safe
// (or SERIALIZED, whose unsafe constructor makes the caller serialize them); the Rust-side state
// is behind mutexes and atomics.
unsafe impl Send for WorkerInner {}
// SAFETY: as above.
unsafe impl Sync for WorkerInner {}

impl Drop for WorkerInner {
    fn drop(&mut self) {
        // Let endpoint closes that are still running finish (bounded), then destroy.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.closing.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            // SAFETY: handle is live until ucp_worker_destroy below.
            unsafe { sys::ucp_worker_progress(self.handle) };
        }
        for deferred in std::mem::take(
            self.deferred_releases
                .get_mut()
                .unwrap_or_else(|e| e.into_inner()),
        ) {
            deferred.release(self.handle);
        }
        let unfinished = self.closing.load(Ordering::Acquire);
        if unfinished > 0 {
            // UCX aborts when a worker is destroyed under running requests: leak it instead,
            // with what it still uses: its context (ucp_cleanup under a live worker, whose async
            // handlers stay registered, would free what they reach) and the AM handlers UCX may
            // still call (with the worker gone they drop the message).
            log::warn!(
                "worker dropped with {unfinished} endpoint close(s) still running (peer not progressing?); leaking the worker"
            );
            std::mem::forget(self.context.clone());
            std::mem::forget(std::mem::take(
                self.am_handlers
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner()),
            ));
            return;
        }
        // SAFETY: every Endpoint, Listener and Request holds a Worker clone, so none is alive.
        unsafe { sys::ucp_worker_destroy(self.handle) };
    }
}

/// A UCP worker: the progress engine that endpoints, listeners and operations run on.
///
/// Created in UCX's MULTI thread mode, so it is `Send + Sync`: any thread may post operations and
/// call [`progress`](Worker::progress) ([`Worker::new_serialized`] trades that for speed). Callbacks (completions, AM handlers) run inside `progress`
/// on the calling thread. Cheap to clone (reference counted).
#[derive(Clone)]
pub struct Worker(pub(crate) Arc<WorkerInner>);

/// A worker's address (`ucp_worker_get_address`): pass it to a peer's
/// [`Worker::connect_address`](crate::Worker::connect_address) to connect without a listener.
///
/// UCX parses an address without knowing its length and trusts what it reads, so a truncated
/// or forged one can make it read out of bounds: an address made from bytes
/// ([`from_bytes`](WorkerAddress::from_bytes)) is `unsafe`. Move addresses between trusted
/// peers only, whole (frame them when they travel); untrusted peers connect through a
/// [`Listener`](crate::Listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAddress(Vec<u8>);

impl WorkerAddress {
    /// The address from the bytes a worker's [`address`](Worker::address) gave
    /// ([`as_bytes`](WorkerAddress::as_bytes)), e.g. received from its peer.
    ///
    /// # Safety
    /// `bytes` must be such an address, whole and unchanged: UCX reads it without bounds when
    /// it connects ([`Worker::connect_address`] refuses only an empty one).
    pub unsafe fn from_bytes(bytes: Vec<u8>) -> WorkerAddress {
        WorkerAddress(bytes)
    }

    /// The address's bytes, to send to a peer.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The address's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Something UCX owns that its owner is done with, handed back to UCX later.
enum Deferred {
    /// A completed request (`ucp_request_free`).
    Request(usize),
    /// A kept AM data descriptor (`ucp_am_data_release`).
    AmData(usize),
}

impl Deferred {
    fn release(self, worker: sys::ucp_worker_h) {
        match self {
            // SAFETY: a completed request of this worker, handed over once by its owner.
            Deferred::Request(raw) => unsafe { sys::ucp_request_free(raw as *mut libc::c_void) },
            // SAFETY: a kept descriptor of this worker, handed over once by its owner.
            Deferred::AmData(data) => unsafe {
                sys::ucp_am_data_release(worker, data as *mut libc::c_void)
            },
        }
    }
}

impl WorkerInner {
    /// Queues a failed endpoint for a forced close after the running progress call, and for
    /// failing with `status` what UCX still holds of it then.
    pub(crate) fn schedule_force_close(&self, endpoint: Arc<EpShared>, status: Status) {
        self.failed_endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((endpoint, status));
        self.has_failed_endpoints.store(true, Ordering::Release);
    }
}

impl Worker {
    /// Creates a worker on `context`.
    pub fn new(context: &Context) -> Result<Worker> {
        Worker::create(context, sys::ucs_thread_mode_t::UCS_THREAD_MODE_MULTI)
    }

    /// Creates a worker in UCX's SERIALIZED thread mode: no lock on every UCX call, which saves
    /// about 0.1 us per round trip over shared memory (what `ucx_perftest` measures by default).
    ///
    /// # Safety
    /// The caller must never use this worker, or any endpoint, listener, request, AM message or
    /// memory handle made from it, from two threads at the same time (moving them between threads
    /// is fine). Not for use with [`Engine`](crate::Engine), which makes its own MULTI worker.
    pub unsafe fn new_serialized(context: &Context) -> Result<Worker> {
        Worker::create(context, sys::ucs_thread_mode_t::UCS_THREAD_MODE_SERIALIZED)
    }

    fn create(context: &Context, thread_mode: sys::ucs_thread_mode_t) -> Result<Worker> {
        let params = sys::ucp_worker_params_t {
            field_mask: u64::from(
                sys::ucp_worker_params_field::UCP_WORKER_PARAM_FIELD_THREAD_MODE.0,
            ),
            thread_mode,
            ..Default::default()
        };
        let mut handle = ptr::null_mut();
        // SAFETY: the context is live (held below); params is valid; handle is an out-pointer.
        check("ucp_worker_create", unsafe {
            sys::ucp_worker_create(context.handle(), &params, &mut handle)
        })?;
        let worker = Worker(Arc::new(WorkerInner {
            handle,
            context: context.clone(),
            endpoints: Mutex::new(HashMap::new()),
            am_handlers: Mutex::default(),
            failed_endpoints: Mutex::new(Vec::new()),
            has_failed_endpoints: AtomicBool::new(false),
            closing: Arc::new(AtomicUsize::new(0)),
            multi: thread_mode == sys::ucs_thread_mode_t::UCS_THREAD_MODE_MULTI,
            gate: Mutex::new(()),
            deferred_releases: Mutex::new(Vec::new()),
            has_deferred_releases: AtomicBool::new(false),
            // SAFETY: the shim evaluates a UCX macro; it has no preconditions.
            bytes_datatype: unsafe { sys::swucx_shim_dt_contig_bytes() },
            op_attr_base: op_attr_base(context),
            max_am_header: OnceLock::new(),
        }));
        let granted = worker.thread_mode()?;
        if granted != thread_mode {
            // A UCX built without multi-thread support hands out a worker without its lock,
            // which every `Send + Sync` promise here rests on (the worker is dropped, destroyed).
            return Err(Error::with_detail(
                "ucp_worker_create",
                Status::ERR_UNSUPPORTED,
                format!(
                    "asked for thread mode {}, UCX gave {} (UCX built without multi-thread \
                     support, --enable-mt?)",
                    thread_mode.0, granted.0
                ),
            ));
        }
        if context.features().am {
            let limit = worker.max_am_header()?;
            worker.0.max_am_header.get_or_init(|| limit);
            worker.reserve_am_ids()?;
        }
        Ok(worker)
    }

    /// The thread mode UCX gave the worker.
    fn thread_mode(&self) -> Result<sys::ucs_thread_mode_t> {
        let attr = self.query(sys::ucp_worker_attr_field::UCP_WORKER_ATTR_FIELD_THREAD_MODE)?;
        Ok(attr.thread_mode)
    }

    /// The worker's attributes in `field` (`ucp_worker_query`).
    fn query(&self, field: sys::ucp_worker_attr_field) -> Result<sys::ucp_worker_attr_t> {
        let mut attr = sys::ucp_worker_attr_t {
            field_mask: u64::from(field.0),
            ..Default::default()
        };
        // SAFETY: handle is live; attr is writable and asks only for `field`.
        check("ucp_worker_query", unsafe {
            sys::ucp_worker_query(self.0.handle, &mut attr)
        })?;
        Ok(attr)
    }

    pub(crate) fn handle(&self) -> sys::ucp_worker_h {
        self.0.handle
    }

    pub(crate) fn downgrade(&self) -> Weak<WorkerInner> {
        Arc::downgrade(&self.0)
    }

    /// The context this worker belongs to.
    pub fn context(&self) -> &Context {
        &self.0.context
    }

    /// Runs UCX's progress engine once; returns the number of events processed. Callbacks run
    /// here. Inside a callback this does nothing and returns 0 (UCX forbids re-entry).
    #[inline]
    pub fn progress(&self) -> u32 {
        if in_callback() {
            return 0;
        }
        let _gate = self.gate();
        // SAFETY: the handle is live; MULTI mode makes concurrent calls safe.
        let events = unsafe { sys::ucp_worker_progress(self.0.handle) };
        if self.0.has_failed_endpoints.load(Ordering::Acquire)
            || self.0.has_deferred_releases.load(Ordering::Acquire)
        {
            self.tidy_up();
        }
        events
    }

    /// What a progress call left to do outside UCX's callbacks: force-closes failed endpoints
    /// and releases deferred requests and AM data. Out of line, so the busy-polling path of
    /// `progress` stays a handful of instructions around UCX's own.
    #[cold]
    #[inline(never)]
    fn tidy_up(&self) {
        if self.0.has_failed_endpoints.load(Ordering::Acquire) {
            self.close_failed_endpoints();
        }
        if self.0.has_deferred_releases.load(Ordering::Acquire) {
            self.release_deferred();
        }
    }

    /// The datatype of contiguous bytes, `ucp_dt_make_contig(1)`.
    #[inline(always)]
    pub(crate) fn bytes_datatype(&self) -> sys::ucp_datatype_t {
        self.0.bytes_datatype
    }

    /// The `op_attr_mask` fields every operation on this worker sets.
    #[inline(always)]
    pub(crate) fn op_attr_base(&self) -> u32 {
        self.0.op_attr_base
    }

    /// True for a MULTI-threaded worker (`Worker::new`), false for a SERIALIZED one.
    #[inline(always)]
    pub(crate) fn is_multi(&self) -> bool {
        self.0.multi
    }

    /// A sleeping lock taken in front of UCX's own worker lock by the calls threads contend for
    /// (progress, arm, sends, receives). On a MULTI worker UCX guards every call with a
    /// spinlock: with more threads than cores (16 Go readers on 2 cores), a thread preempted
    /// while holding it left the others spinning through whole time slices (reads stalled for
    /// tens of milliseconds). Behind this gate they sleep instead, and UCX's spinlock is
    /// uncontended. UCX's lock still does the protecting, so a call made without the gate is
    /// safe, only slower under contention. A no-op on a SERIALIZED worker, inside a UCX callback
    /// (the progressing thread holds it, or UCX's async thread runs the callback), and for a
    /// thread that holds a gate already.
    #[inline(always)]
    pub(crate) fn gate(&self) -> Gate<'_> {
        if !self.0.multi || in_callback() || HOLDS_GATE.with(Cell::get) {
            return Gate(None);
        }
        let guard = match self.0.gate.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => self.wait_for_gate(),
        };
        HOLDS_GATE.with(|h| h.set(true));
        Gate(Some(guard))
    }

    /// Takes the gate another thread holds: spins for up to GATE_SPIN first (the holder is
    /// usually mid-call on the other core, done within microseconds; a sleeping waiter pays a
    /// wake-up of 10-20 us), then sleeps until it is free. Out of line: `gate`'s first try is the
    /// path every uncontended call takes, and reads no clock (on a VM reading it costs as much
    /// as an uncontended call through the gate).
    #[cold]
    #[inline(never)]
    fn wait_for_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        let start = Instant::now();
        loop {
            std::hint::spin_loop();
            match self.0.gate.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if start.elapsed() >= GATE_SPIN {
                return self.0.gate.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Frees a completed UCX request its owner is done with. On a MULTI worker
    /// `ucp_request_free` takes the worker's spinlock, which a thread that progresses holds
    /// nearly all the time under load (the engine's background thread moving a rendezvous
    /// stream): a waiter freeing its request there spun for it, burning a core. So the free is
    /// left to the next progress call, which holds the lock anyway.
    #[inline(always)]
    pub(crate) fn free_request(&self, raw: *mut libc::c_void) {
        if !self.0.multi || in_callback() {
            Deferred::Request(raw as usize).release(self.0.handle);
        } else {
            self.defer(Deferred::Request(raw as usize));
        }
    }

    /// Releases an AM data descriptor kept from a handler (`ucp_am_data_release`). Inside a
    /// callback the release waits for the end of the progress call: the descriptor may belong
    /// to the message whose handler is still running, which UCX has not marked kept yet.
    pub(crate) fn release_am_data(&self, data: *mut libc::c_void) {
        if in_callback() {
            self.defer(Deferred::AmData(data as usize));
        } else {
            let _gate = self.gate();
            Deferred::AmData(data as usize).release(self.0.handle);
        }
    }

    fn defer(&self, deferred: Deferred) {
        self.0
            .deferred_releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(deferred);
        self.0.has_deferred_releases.store(true, Ordering::Release);
    }

    fn release_deferred(&self) {
        let list = {
            let mut list = self
                .0
                .deferred_releases
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.0.has_deferred_releases.store(false, Ordering::Release);
            std::mem::take(&mut *list)
        };
        for deferred in list {
            deferred.release(self.0.handle);
        }
    }

    /// Force-closes endpoints whose peer failed, so UCX completes (with an error) every
    /// operation still queued on them.
    fn close_failed_endpoints(&self) {
        let failed = {
            let mut list = self
                .0
                .failed_endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.0.has_failed_endpoints.store(false, Ordering::Release);
            std::mem::take(&mut *list)
        };
        for (endpoint, _) in &failed {
            endpoint.force_close();
        }
        // Give the forced closes a few rounds to complete operations with errors, then fail
        // what UCX still holds (UCX 1.13 keeps sends queued on shared-memory lanes pending).
        for _ in 0..16 {
            // SAFETY: the handle is live; this is not inside a callback (checked by progress).
            unsafe { sys::ucp_worker_progress(self.0.handle) };
        }
        for (endpoint, status) in &failed {
            endpoint.fail_inflight(*status);
        }
    }

    /// The worker's event file descriptor: readable when there is work for `progress`. Only
    /// edge-like: call [`arm`](Worker::arm) before sleeping on it. Owned by the worker.
    pub fn event_fd(&self) -> Result<RawFd> {
        let mut fd: libc::c_int = -1;
        // SAFETY: handle is live; fd is an out-pointer.
        check("ucp_worker_get_efd", unsafe {
            sys::ucp_worker_get_efd(self.0.handle, &mut fd)
        })?;
        Ok(fd)
    }

    /// Arms the event fd. Returns `false` if events are already pending (progress, then arm
    /// again) and `true` if it is now safe to sleep on the fd.
    pub fn arm(&self) -> Result<bool> {
        let _gate = self.gate();
        // SAFETY: handle is live.
        let raw = unsafe { sys::ucp_worker_arm(self.0.handle) };
        if Status::from_raw(raw) == Status::ERR_BUSY {
            return Ok(false);
        }
        check("ucp_worker_arm", raw).map(|()| true)
    }

    /// Wakes a thread sleeping on the event fd or in [`wait`](Worker::wait). Any thread may call it.
    pub fn signal(&self) -> Result<()> {
        // SAFETY: ucp_worker_signal is documented safe from any thread in any thread mode.
        check("ucp_worker_signal", unsafe {
            sys::ucp_worker_signal(self.0.handle)
        })
    }

    /// Blocks until the worker has events to progress (`ucp_worker_wait`). Fails with
    /// `ERR_BUSY` inside a callback, where it would hold up the progress it waits for.
    pub fn wait(&self) -> Result<()> {
        refuse_wait_in_callback("ucp_worker_wait")?;
        // SAFETY: handle is live.
        check("ucp_worker_wait", unsafe {
            sys::ucp_worker_wait(self.0.handle)
        })
    }

    /// This worker's address, for [`Worker::connect_address`] on a peer.
    pub fn address(&self) -> Result<WorkerAddress> {
        let mut addr = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: handle is live; addr/len are out-pointers.
        check("ucp_worker_get_address", unsafe {
            sys::ucp_worker_get_address(self.0.handle, &mut addr, &mut len)
        })?;
        // SAFETY: UCX returned len readable bytes at addr, released right after the copy.
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec();
        // SAFETY: addr came from ucp_worker_get_address on this worker.
        unsafe { sys::ucp_worker_release_address(self.0.handle, addr) };
        Ok(WorkerAddress(bytes))
    }

    /// The longest active-message header this worker can send (`ucp_worker_query` with
    /// `UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER`), as UCX computes it from the transports the
    /// context enabled.
    pub fn max_am_header(&self) -> Result<usize> {
        if let Some(limit) = self.0.max_am_header.get() {
            return Ok(*limit);
        }
        let attr = self.query(sys::ucp_worker_attr_field::UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER)?;
        Ok(attr.max_am_header)
    }

    /// [`max_am_header`](Worker::max_am_header) as read at creation; None without the AM
    /// feature.
    #[inline(always)]
    pub(crate) fn am_header_limit(&self) -> Option<usize> {
        self.0.max_am_header.get().copied()
    }

    /// Progresses until `done()` holds or `deadline` passes (`Ok(false)`). Busy-polls first, then
    /// sleeps on the event fd between bursts so an idle wait costs no CPU.
    pub(crate) fn progress_until(
        &self,
        mut done: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        if done() {
            return Ok(true);
        }
        refuse_wait_in_callback("wait")?;
        let mut idle_since = Instant::now();
        let efd = if self.context().features().wakeup {
            self.event_fd().ok()
        } else {
            None
        };
        loop {
            let events = self.progress();
            if done() {
                return Ok(true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            if events > 0 {
                idle_since = now;
                continue;
            }
            if let Some(fd) = efd {
                if now.duration_since(idle_since) >= SPIN_BEFORE_SLEEP && self.arm()? {
                    let mut sleep = MAX_SLEEP;
                    if let Some(d) = deadline {
                        sleep = sleep.min(d.saturating_duration_since(now));
                    }
                    poll_readable(fd, sleep);
                    idle_since = Instant::now();
                }
            }
        }
    }

    /// Flushes every endpoint of this worker: all RMA issued before completes at the target.
    pub fn flush(&self) -> Result<()> {
        self.flush_nb()?.wait().map(|_| ())
    }

    /// Starts a flush of every endpoint of this worker (see [`flush`](Worker::flush)).
    pub fn flush_nb(&self) -> Result<crate::Request<()>> {
        let params = OpParams::new(
            self,
            "ucp_worker_flush_nbx",
            OpKind::SEND,
            Callback::Send,
            None,
            0,
        );
        // SAFETY: handle is live; the params carry a callback and the completion pointer.
        let ptr = unsafe { sys::ucp_worker_flush_nbx(self.0.handle, &params.param) };
        params.finish(self, ptr, (), 0, None)
    }
}

/// Waits up to `timeout` (rounded up to whole milliseconds, so a short wait still sleeps) for
/// `fd` to become readable.
pub(crate) fn poll_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: pfd is a valid pollfd array of length 1 for the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("handle", &self.0.handle)
            .finish()
    }
}

/// The `op_attr_mask` fields every operation sets on a worker of `context`: the memory type
/// only where the context gives UCX that hint (`Context::memory_type_hint`).
fn op_attr_base(context: &Context) -> u32 {
    use sys::ucp_op_attr_t as A;
    let base = A::UCP_OP_ATTR_FIELD_CALLBACK.0
        | A::UCP_OP_ATTR_FIELD_USER_DATA.0
        | A::UCP_OP_ATTR_FIELD_DATATYPE.0;
    if context.memory_type_hint() {
        base | A::UCP_OP_ATTR_FIELD_MEMORY_TYPE.0
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Listener;

    /// A worker dropped while an endpoint's close cannot finish (its flush waits for a peer
    /// that does not progress) is leaked after 5 s, and keeps its context alive: the last
    /// `Context` clone would otherwise call `ucp_cleanup` under it.
    #[test]
    fn a_leaked_worker_keeps_its_context() {
        let context = Context::builder()
            .config("TLS", "tcp,self")
            .config("NET_DEVICES", "lo")
            .build()
            .expect("context");
        let server = Worker::new(&context).expect("server worker");
        let client = Worker::new(&context).expect("client worker");
        let listener =
            Listener::bind(&server, (std::net::Ipv4Addr::LOCALHOST, 0).into()).expect("listen");
        let ep = client
            .connect(listener.local_addr().expect("address"))
            .expect("connect");
        let deadline = Instant::now() + Duration::from_secs(30);
        let request = loop {
            assert!(Instant::now() < deadline, "no connection request");
            client.progress();
            server.progress();
            if let Some(request) = listener.try_accept() {
                break request;
            }
        };
        let accepted = server.accept(request).expect("accept");
        let ping = ep.tag_send(1, vec![0u8; 8]).expect("send");
        let pong = server.tag_recv(1, u64::MAX, vec![0u8; 8]).expect("recv");
        while !(ping.is_complete() && pong.is_complete()) {
            assert!(Instant::now() < deadline, "no round trip");
            client.progress();
            server.progress();
        }
        // The server does not progress from here on: the flushing close the dropped endpoint
        // starts (nothing is in flight) waits for its answer, which never comes.
        drop((ping, pong, ep));
        assert_eq!(
            Arc::strong_count(&context.0),
            3,
            "the test's and two workers'"
        );
        drop(client);
        assert_eq!(
            Arc::strong_count(&context.0),
            3,
            "the leaked worker's clone is kept"
        );
        accepted
            .close(crate::CloseMode::Force)
            .expect("close the accepted endpoint");
    }
}
