//! `Endpoint`: a connection to a peer worker (`ucp_ep_h`), with peer-failure handling, close and a
//! report of the transports it actually uses.

use std::net::SocketAddr;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, Weak};

use crate::engine::Signal;
use crate::listener::ConnRequest;
use crate::request::{Callback, Completion, OpKind, OpParams, Request};
use crate::sockaddr::CSockAddr;
use crate::status::{Error, Result, Status, StatusPtr, decode_status_ptr};
use crate::sys;
use crate::transport::{TransportUse, parse_ep_info};
use crate::worker::{CallbackGuard, Gate, Worker, WorkerAddress, WorkerInner};

/// How to close an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Complete outstanding operations and disconnect from the peer.
    Flush,
    /// Drop the connection at once: outstanding operations complete with `ERR_CANCELED`.
    Force,
}

/// A callback run (inside progress, on the progressing thread) when the peer fails.
pub type ErrorHandler = Box<dyn FnMut(Status) + Send>;

/// State the UCX error callback reaches through its `arg`; lives until UCX's close completes.
pub(crate) struct EpShared {
    /// This state itself, for the worker to hold once the peer failed: it fails `inflight`
    /// after the forced close, also when no `Endpoint` is left (dropped or closed with requests
    /// still pending; a running close keeps this alive).
    this: Weak<EpShared>,
    failed: AtomicI8,
    on_error: Mutex<Option<ErrorHandler>>,
    /// The endpoint, so the worker can force-close it after a failure (set at creation).
    endpoint: OnceLock<Weak<EndpointInner>>,
    worker: Weak<WorkerInner>,
    /// Operations on this endpoint that did not complete at once, to fail them if the peer
    /// dies and UCX leaves them pending.
    inflight: Mutex<Vec<Weak<Completion>>>,
    /// Raised when the peer fails (`Endpoint::raise_on_failure`).
    failure_signals: Mutex<Vec<Weak<Signal>>>,
}

pub(crate) struct EndpointInner {
    worker: Worker,
    /// The UCX handle; 0 once closed. Changed only under `in_use`'s write lock.
    handle: AtomicUsize,
    /// On a MULTI worker, operations hold the read lock for the UCX call, so a close cannot
    /// destroy the handle under them. (A SERIALIZED worker's user promised one thread at a time:
    /// operations there only read `handle`, saving two atomic updates per call.)
    in_use: RwLock<()>,
    shared: Arc<EpShared>,
    peer: Option<SocketAddr>,
    closed_by_us: AtomicBool,
    /// [`Endpoint::on_shared_memory`]'s answer, once asked.
    on_shared_memory: OnceLock<bool>,
}

/// A connection to one peer. Cheap to clone; `Send + Sync` (the worker is MULTI-threaded).
///
/// Created with peer-failure handling on: when the peer dies, every outstanding send completes
/// with an error, the error handler runs, and later operations return that error. Dropping the
/// last clone closes the endpoint without blocking: with a flush when nothing is in flight,
/// else by force (its running operations end canceled: UCX 1.13 aborts the process when a
/// flushing close ends under a rendezvous the peer never took), and by force if it failed.
/// The worker waits for such closes (at most 5 s, when the peer does not answer) before it is
/// destroyed, and leaks itself rather than abort if they do not finish. Use
/// [`close`](Endpoint::close) to finish the operations first and wait.
#[derive(Clone)]
pub struct Endpoint(pub(crate) Arc<EndpointInner>);

unsafe extern "C" fn ep_error_callback(
    arg: *mut libc::c_void,
    _ep: sys::ucp_ep_h,
    status: sys::ucs_status_t,
) {
    // SAFETY: arg is the EpShared the endpoint registered; it lives until UCX's close completes,
    // and UCX calls this only before that.
    let shared = unsafe { &*(arg as *const EpShared) };
    let status = Status::from_raw(status);
    shared.failed.store(status.0, Ordering::Release);
    log::debug!("endpoint failed: {status}");
    // After `failed` is set, under the lock `raise_on_failure` registers with: every signal is
    // raised here or sees the failure there.
    for signal in shared
        .failure_signals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        if let Some(signal) = signal.upgrade() {
            signal.raise();
        }
    }
    // UCX 1.13 leaves sends queued on a failed shared-memory lane pending forever; a forced
    // close completes them. It cannot run inside this callback: the worker does it right after
    // this progress call returns.
    if let (Some(worker), Some(shared)) = (shared.worker.upgrade(), shared.this.upgrade()) {
        worker.schedule_force_close(shared, status);
    }
    let _guard = CallbackGuard::enter();
    if let Some(handler) = shared
        .on_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(status))).is_err() {
            log::error!("endpoint error handler panicked");
        }
    }
}

impl EpShared {
    /// Whether an operation on the endpoint has not completed yet.
    fn has_pending(&self) -> bool {
        let inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight
            .iter()
            .any(|c| c.upgrade().is_some_and(|c| !c.is_done()))
    }

    /// The status a forced close fails what it leaves pending with: the peer's failure, if that
    /// is why it was forced, else `ERR_CANCELED`.
    fn forced_close_status(&self) -> Status {
        match self.failed.load(Ordering::Acquire) {
            0 => Status::ERR_CANCELED,
            failed => Status(failed),
        }
    }

    /// Forces the close of the endpoint, if it is still open (used by the worker after a peer
    /// failure).
    pub(crate) fn force_close(&self) {
        if let Some(inner) = self.endpoint.get().and_then(Weak::upgrade) {
            Endpoint(inner).force_close_in_background();
        }
    }

    /// Fails with `status` every tracked operation UCX has not completed (after a peer failure
    /// and a forced close had their chance).
    pub(crate) fn fail_inflight(&self, status: Status) {
        let inflight =
            std::mem::take(&mut *self.inflight.lock().unwrap_or_else(|e| e.into_inner()));
        for completion in inflight.iter().filter_map(Weak::upgrade) {
            completion.detach(status);
        }
    }
}

/// Frees the close request and the endpoint's shared state once UCX's close completes.
unsafe extern "C" fn ep_close_callback(
    request: *mut libc::c_void,
    status: sys::ucs_status_t,
    user_data: *mut libc::c_void,
) {
    // SAFETY: user_data is the ClosingEp boxed by `start_close`; this callback is its only consumer.
    let closing = unsafe { Box::from_raw(user_data as *mut ClosingEp) };
    // SAFETY: request is the live close request; freeing it here is allowed.
    unsafe { sys::ucp_request_free(request) };
    closing.count.fetch_sub(1, Ordering::AcqRel);
    // A peer that fails while its endpoint closes (dropped, or closed with flush while
    // operations were outstanding) ends the close with the error instead of calling the error
    // callback, and UCX 1.13 leaves the operations queued on a failed shared-memory lane pending
    // as it does there: have the worker fail them.
    // A forced close cancels the operations, but UCX 1.13 leaves rendezvous sends on a
    // shared-memory lane pending for good: the worker ends those as canceled.
    let status = Status::from_raw(status);
    let leftover = match status {
        status if status.is_err() => Some(status),
        _ if closing.forced => Some(closing.shared.forced_close_status()),
        _ => None,
    };
    if let Some(status) = leftover
        && let Some(worker) = closing.shared.worker.upgrade()
    {
        worker.schedule_force_close(closing.shared.clone(), status);
    }
}

/// What a running close keeps alive, and whom it tells when it is done.
struct ClosingEp {
    shared: Arc<EpShared>,
    /// A forced close: what it leaves pending is failed (see `ep_close_callback`).
    forced: bool,
    /// The worker's count of running closes.
    count: Arc<AtomicUsize>,
    done: Option<Arc<AtomicBool>>,
}

impl Drop for ClosingEp {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.store(true, Ordering::Release);
        }
    }
}

impl Worker {
    /// Connects to a listener at `addr` (client-server mode; needs `tcp` among UCX's transports
    /// for the connection setup even when data then moves over shared memory).
    pub fn connect(&self, addr: SocketAddr) -> Result<Endpoint> {
        let c_addr = CSockAddr::new(addr);
        let mut params = ep_params_base(self);
        params.field_mask |= u64::from(
            sys::ucp_ep_params_field::UCP_EP_PARAM_FIELD_SOCK_ADDR.0
                | sys::ucp_ep_params_field::UCP_EP_PARAM_FIELD_FLAGS.0,
        );
        params.flags = sys::ucp_ep_params_flags_field::UCP_EP_PARAMS_FLAGS_CLIENT_SERVER.0;
        params.sockaddr = sys::ucs_sock_addr_t {
            addr: c_addr.as_ptr() as *const sys::sockaddr,
            addrlen: c_addr.len(),
        };
        self.create_endpoint(params, Some(addr))
            .map_err(|e| e.with_new_detail(addr.to_string()))
    }

    /// Connects to a peer worker by its address ([`Worker::address`]), without a listener.
    /// Fails with `ERR_INVALID_ADDR` on an empty address.
    pub fn connect_address(&self, address: &WorkerAddress) -> Result<Endpoint> {
        if address.as_bytes().is_empty() {
            return Err(Error::with_detail(
                "ucp_ep_create",
                Status::ERR_INVALID_ADDR,
                "empty worker address",
            ));
        }
        let mut params = ep_params_base(self);
        params.field_mask |=
            u64::from(sys::ucp_ep_params_field::UCP_EP_PARAM_FIELD_REMOTE_ADDRESS.0);
        params.address = address.as_bytes().as_ptr() as *const sys::ucp_address_t;
        self.create_endpoint(params, None)
    }

    /// Accepts a connection request from a [`Listener`](crate::Listener): on this worker, which
    /// may be another worker of the listener's context than the one it listens on (the endpoint
    /// is then this worker's; tested over shm and tcp on UCX 1.13 and 1.22).
    pub fn accept(&self, request: ConnRequest) -> Result<Endpoint> {
        let peer = request.client_addr();
        let raw = request.into_raw();
        let mut params = ep_params_base(self);
        params.field_mask |= u64::from(sys::ucp_ep_params_field::UCP_EP_PARAM_FIELD_CONN_REQUEST.0);
        params.conn_request = raw;
        self.create_endpoint(params, peer)
    }

    fn create_endpoint(
        &self,
        mut params: sys::ucp_ep_params_t,
        peer: Option<SocketAddr>,
    ) -> Result<Endpoint> {
        let shared = Arc::new_cyclic(|this| EpShared {
            this: this.clone(),
            failed: AtomicI8::new(0),
            on_error: Mutex::new(None),
            endpoint: OnceLock::new(),
            worker: self.downgrade(),
            inflight: Mutex::new(Vec::new()),
            failure_signals: Mutex::new(Vec::new()),
        });
        params.err_handler = sys::ucp_err_handler_t {
            cb: Some(ep_error_callback),
            arg: Arc::as_ptr(&shared) as *mut libc::c_void,
        };
        let mut handle = ptr::null_mut();
        // SAFETY: params and everything it points to (address bytes, sockaddr, shared) outlive
        // the call; UCX copies the addresses; handle is an out-pointer.
        crate::status::check("ucp_ep_create", unsafe {
            sys::ucp_ep_create(self.handle(), &params, &mut handle)
        })?;
        let inner = Arc::new(EndpointInner {
            worker: self.clone(),
            handle: AtomicUsize::new(handle as usize),
            in_use: RwLock::new(()),
            shared,
            peer,
            closed_by_us: AtomicBool::new(false),
            on_shared_memory: OnceLock::new(),
        });
        self.0
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle as usize, Arc::downgrade(&inner));
        let _ = inner.shared.endpoint.set(Arc::downgrade(&inner));
        match inner.shared.failed.load(Ordering::Acquire) {
            0 => {}
            code => self
                .0
                .schedule_force_close(inner.shared.clone(), Status(code)),
        }
        let endpoint = Endpoint(inner);
        if let Some(keepalive) = self.context().keepalive().filter(|_| peer.is_some()) {
            crate::keepalive::arm(&endpoint, keepalive);
        }
        Ok(endpoint)
    }

    /// Finds the `Endpoint` for a UCX endpoint handle of this worker (e.g. an AM reply endpoint).
    pub(crate) fn endpoint_by_handle(&self, handle: sys::ucp_ep_h) -> Option<Endpoint> {
        let map = self.0.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(handle as usize))
            .and_then(|weak| weak.upgrade())
            .map(Endpoint)
    }
}

/// Endpoint parameters every swucx endpoint uses: peer-failure handling as the context says.
fn ep_params_base(worker: &Worker) -> sys::ucp_ep_params_t {
    let err_mode = if worker.context().peer_failure_handling() {
        sys::ucp_err_handling_mode_t::UCP_ERR_HANDLING_MODE_PEER
    } else {
        sys::ucp_err_handling_mode_t::UCP_ERR_HANDLING_MODE_NONE
    };
    sys::ucp_ep_params_t {
        field_mask: u64::from(
            sys::ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE.0
                | sys::ucp_ep_params_field::UCP_EP_PARAM_FIELD_ERR_HANDLER.0,
        ),
        err_mode,
        ..Default::default()
    }
}

/// The locked, checked UCX handle of a usable endpoint, held for one UCX call (with the
/// worker's gate, taken first) and the [`track`](EpHandle::track) of the request it made.
pub(crate) struct EpHandle<'a> {
    raw: sys::ucp_ep_h,
    shared: &'a EpShared,
    _in_use: Option<RwLockReadGuard<'a, ()>>,
    _gate: Gate<'a>,
}

impl EpHandle<'_> {
    pub(crate) fn raw(&self) -> sys::ucp_ep_h {
        self.raw
    }

    /// Registers a request started with this handle that did not complete at once, so a peer
    /// failure can end it. Done while the handle is held: the forced close that precedes
    /// `EpShared::fail_inflight` takes the handle under the write lock, so it waits for this
    /// (on a SERIALIZED worker nothing else runs meanwhile); registered after the lock, a
    /// request could miss the failure and leave its waiter hanging.
    #[inline(always)]
    pub(crate) fn track<B: Send + 'static>(&self, request: Request<B>) -> Request<B> {
        if !request.is_complete() {
            let mut inflight = self
                .shared
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if inflight.len() >= 64 {
                inflight.retain(|c| c.upgrade().is_some_and(|c| !c.is_done()));
            }
            inflight.push(Arc::downgrade(request.completion()));
        }
        request
    }
}

impl Endpoint {
    /// The worker this endpoint runs on.
    pub fn worker(&self) -> &Worker {
        &self.0.worker
    }

    /// The peer's socket address, for endpoints made by `connect` or `accept`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer
    }

    /// Sets the callback run when the peer fails (inside progress, on the progressing thread),
    /// replacing an earlier one. Once this returns the earlier one is not running and is not
    /// called again (it runs under the lock this takes: do not call this from inside it).
    /// The endpoint keeps the handler until it goes: a handler that holds a clone of this
    /// endpoint keeps it (and its worker) alive for good; hold a [`Weak`](std::sync::Weak)
    /// or nothing of it (the status says what failed).
    pub fn set_error_handler(&self, handler: impl FnMut(Status) + Send + 'static) {
        self.replace_error_handler(Some(Box::new(handler)));
    }

    /// Removes the error handler, as [`set_error_handler`](Endpoint::set_error_handler)
    /// replaces one.
    pub fn clear_error_handler(&self) {
        self.replace_error_handler(None);
    }

    fn replace_error_handler(&self, handler: Option<ErrorHandler>) {
        let old = std::mem::replace(
            &mut *self
                .0
                .shared
                .on_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            handler,
        );
        drop(old); // outside the lock: what the handler holds may take it again
    }

    /// Raises `signal` when the peer fails (at once if it already has), e.g. to end an
    /// [`Engine::wait_signals`](crate::Engine::wait_signals) on a worker-wide tag receive that
    /// expects this peer's reply. The endpoint keeps only a weak reference: dropping the signal
    /// unregisters it.
    pub fn raise_on_failure(&self, signal: &Arc<Signal>) {
        {
            let mut signals = self
                .0
                .shared
                .failure_signals
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            signals.retain(|s| s.strong_count() > 0);
            signals.push(Arc::downgrade(signal));
        }
        if self.failure().is_some() {
            signal.raise();
        }
    }

    /// The failure status if the peer failed, else `None`.
    #[inline(always)]
    pub fn failure(&self) -> Option<Status> {
        match self.0.shared.failed.load(Ordering::Acquire) {
            0 => None,
            code => Some(Status(code)),
        }
    }

    /// True once [`close`](Endpoint::close) was called.
    pub fn is_closed(&self) -> bool {
        self.0.closed_by_us.load(Ordering::Acquire)
    }

    /// The UCX handle for one call, or the error that makes the endpoint unusable.
    #[inline(always)]
    pub(crate) fn lock_handle(&self, op: &'static str) -> Result<EpHandle<'_>> {
        let gate = self.0.worker.gate();
        let in_use = self
            .0
            .worker
            .is_multi()
            .then(|| self.0.in_use.read().unwrap_or_else(|e| e.into_inner()));
        if let Some(status) = self.failure() {
            return Err(Error::with_detail(op, status, "endpoint failed"));
        }
        let raw = self.0.handle.load(Ordering::Acquire);
        if raw == 0 {
            return Err(Error::with_detail(
                op,
                Status::ERR_NOT_CONNECTED,
                "endpoint is closed",
            ));
        }
        Ok(EpHandle {
            raw: raw as sys::ucp_ep_h,
            shared: &self.0.shared,
            _in_use: in_use,
            _gate: gate,
        })
    }

    /// The transports and devices UCX chose for this endpoint (its lanes), e.g. `posix/memory`,
    /// `cma/memory`, `tcp/lo`. Read from `ucp_ep_print_info`; wireup may still be running right
    /// after connect, so progress until the peer has answered before relying on it.
    pub fn transports(&self) -> Result<Vec<TransportUse>> {
        let handle = self.lock_handle("ucp_ep_print_info")?;
        let mut buf = vec![0u8; 16384];
        // SAFETY: the endpoint is live while the read lock is held; buf is writable for its length.
        let n = unsafe {
            sys::swucx_shim_ep_print_info(handle.raw(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 0 {
            return Err(Error::new("ucp_ep_print_info", Status::ERR_NO_MEMORY));
        }
        let text = String::from_utf8_lossy(&buf[..(n as usize).min(buf.len() - 1)]);
        Ok(parse_ep_info(&text))
    }

    /// Whether UCX put this endpoint on a shared-memory transport
    /// ([`TransportUse::is_shared_memory`]: the peer is on this host). Read from
    /// [`transports`](Endpoint::transports) on the first call and remembered for every clone,
    /// since the report costs a formatted dump: ask once wireup is done (the peer has answered),
    /// after which the lanes do not change. False if the report cannot be read (a failed or
    /// closed endpoint).
    pub fn on_shared_memory(&self) -> bool {
        *self.0.on_shared_memory.get_or_init(|| {
            self.transports()
                .is_ok_and(|t| t.iter().any(TransportUse::is_shared_memory))
        })
    }

    /// Flushes the endpoint: every RMA operation issued before completes at the target.
    pub fn flush(&self) -> Result<()> {
        self.flush_nb()?.wait().map(|_| ())
    }

    /// Starts a flush of the endpoint; the request completes when every RMA operation issued
    /// before has completed at the target (the target must be progressing).
    pub fn flush_nb(&self) -> Result<Request<()>> {
        let handle = self.lock_handle("ucp_ep_flush_nbx")?;
        let params = OpParams::new(
            &self.0.worker,
            "ucp_ep_flush_nbx",
            OpKind::SEND,
            Callback::Send,
            None,
            0,
        );
        // SAFETY: the endpoint is live while the read lock is held; params carries our callback.
        let ptr = unsafe { sys::ucp_ep_flush_nbx(handle.raw(), &params.param) };
        Ok(handle.track(params.finish(&self.0.worker, ptr, (), 0, None)?))
    }

    /// Closes the endpoint and waits until UCX has closed it. `Flush` completes outstanding
    /// operations first; `Force` cancels them. Later operations on any clone return an error.
    /// Closing a closed endpoint is a no-op. Inside a UCX callback (an AM handler, which UCX
    /// may run inside a send on this very endpoint) it does nothing and returns `ERR_BUSY`:
    /// close it after the callback returned (or drop it, which closes in the background).
    pub fn close(&self, mode: CloseMode) -> Result<()> {
        crate::worker::refuse_wait_in_callback("ucp_ep_close_nbx")?;
        if mode == CloseMode::Flush {
            // The operations first: UCX 1.13 can finish a flushing close while a rendezvous
            // the peer has not taken is still queued, and then aborts the process.
            self.0
                .worker
                .progress_until(|| !self.0.shared.has_pending(), None)?;
        }
        let Some(raw) = self.take_handle() else {
            return Ok(());
        };
        let done = Arc::new(AtomicBool::new(false));
        let status = self.0.start_close(raw, mode, Some(done.clone()));
        if !matches!(status, Ok(true)) {
            self.0
                .worker
                .progress_until(|| done.load(Ordering::Acquire), None)?;
        }
        // UCX ends some of the operations the close cancelled (a rendezvous receive) only in a
        // later round of progress, and no event wakes a thread sleeping on the worker for it
        // (a waiter slept ~0.8 s, until keepalive traffic): wake it.
        if let Err(err) = self.0.worker.signal() {
            log::debug!("after closing an endpoint: {err}");
        }
        status.map(|_| ())
    }

    /// Starts a forced close without waiting.
    fn force_close_in_background(&self) {
        if let Some(raw) = self.take_handle() {
            if let Err(err) = self.0.start_close(raw, CloseMode::Force, None) {
                log::debug!("closing a failed endpoint: {err}");
            }
        }
    }

    fn take_handle(&self) -> Option<sys::ucp_ep_h> {
        self.0.closed_by_us.store(true, Ordering::Release);
        let raw = {
            let _writer = self.0.in_use.write().unwrap_or_else(|e| e.into_inner());
            match self.0.handle.swap(0, Ordering::AcqRel) {
                0 => return None,
                raw => raw,
            }
        };
        let worker = &self.0.worker;
        worker
            .0
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&raw);
        Some(raw as sys::ucp_ep_h)
    }
}

impl EndpointInner {
    /// Starts `ucp_ep_close_nbx`; the callback releases the shared state when UCX is done.
    /// Returns Ok(true) if the close completed at once. `done` is set when it completes.
    fn start_close(
        &self,
        raw: sys::ucp_ep_h,
        mode: CloseMode,
        done: Option<Arc<AtomicBool>>,
    ) -> Result<bool> {
        let force = mode == CloseMode::Force || self.shared.failed.load(Ordering::Acquire) != 0;
        let closing = Box::into_raw(Box::new(ClosingEp {
            shared: self.shared.clone(),
            forced: force,
            count: self.worker.0.closing.clone(),
            done,
        }));
        let param = sys::ucp_request_param_t {
            op_attr_mask: sys::ucp_op_attr_t::UCP_OP_ATTR_FIELD_CALLBACK.0
                | sys::ucp_op_attr_t::UCP_OP_ATTR_FIELD_USER_DATA.0
                | sys::ucp_op_attr_t::UCP_OP_ATTR_FIELD_FLAGS.0,
            flags: if force {
                sys::ucp_ep_close_flags_t::UCP_EP_CLOSE_FLAG_FORCE.0
            } else {
                0
            },
            cb: sys::ucp_request_param_t__bindgen_ty_1 {
                send: Some(ep_close_callback),
            },
            user_data: closing as *mut libc::c_void,
            ..Default::default()
        };
        self.worker.0.closing.fetch_add(1, Ordering::AcqRel);
        let ptr = {
            let _gate = self.worker.gate();
            // SAFETY: raw is the endpoint's handle, taken out of the lock, so no other call
            // uses it.
            unsafe { sys::ucp_ep_close_nbx(raw, &param) }
        };
        match decode_status_ptr(ptr) {
            StatusPtr::Pending(_) => Ok(false),
            other => {
                // SAFETY: UCX did not take the callback; the box is still ours.
                drop(unsafe { Box::from_raw(closing) });
                self.worker.0.closing.fetch_sub(1, Ordering::AcqRel);
                if force {
                    // As in `ep_close_callback`.
                    let status = self.shared.forced_close_status();
                    self.worker
                        .0
                        .schedule_force_close(self.shared.clone(), status);
                }
                match other {
                    StatusPtr::Failed(status) if !force => {
                        Err(Error::new("ucp_ep_close_nbx", status))
                    }
                    _ => Ok(true),
                }
            }
        }
    }
}

impl Drop for EndpointInner {
    fn drop(&mut self) {
        let raw = std::mem::take(self.handle.get_mut());
        if raw == 0 {
            return;
        }
        self.worker
            .0
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&raw);
        // Operations still running are cancelled: a flushing close in the background could end
        // under a rendezvous the peer never takes, which UCX 1.13 aborts the process for.
        let mode = if self.shared.has_pending() {
            CloseMode::Force
        } else {
            CloseMode::Flush
        };
        if let Err(err) = self.start_close(raw as sys::ucp_ep_h, mode, None) {
            log::debug!("closing a dropped endpoint: {err}");
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer", &self.0.peer)
            .field("failure", &self.failure())
            .finish()
    }
}
