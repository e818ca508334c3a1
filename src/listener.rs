//! `Listener`: accepts connection requests on a socket address (`ucp_listener_h`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::Signal;
use crate::sockaddr::{CSockAddr, from_storage};
use crate::status::{Error, Result, Status, check};
use crate::sys;
use crate::worker::Worker;

/// Connection requests that arrived and were not yet taken; filled by the UCX callback.
struct Pending {
    requests: Mutex<VecDeque<usize>>,
    /// Raised at every arrival: wakes threads sleeping in `Engine::accept_signals` (its flag
    /// means nothing, the queue does).
    arrival: Signal,
}

struct ListenerInner {
    worker: Worker,
    handle: sys::ucp_listener_h,
    pending: Box<Pending>,
}

// SAFETY: the listener lives on a MULTI-mode worker (UCX calls are thread-safe); the queue is a Mutex.
unsafe impl Send for ListenerInner {}
// SAFETY: as above.
unsafe impl Sync for ListenerInner {}

/// Listens for connections on a socket address. Incoming requests queue up; take them with
/// [`try_accept`](Listener::try_accept) / [`accept_timeout`](Listener::accept_timeout) and
/// accept ([`Worker::accept`]) or reject them. `Send + Sync`.
pub struct Listener(Arc<ListenerInner>);

/// A peer asking to connect. Accept it with [`Worker::accept`] (on any worker of the listener's
/// context, from any thread); dropping it rejects it.
pub struct ConnRequest {
    listener: Arc<ListenerInner>,
    raw: sys::ucp_conn_request_h,
    client: Option<SocketAddr>,
}

// SAFETY: the request is used only through UCX calls on the listener's MULTI-mode worker.
unsafe impl Send for ConnRequest {}

unsafe extern "C" fn conn_callback(request: sys::ucp_conn_request_h, arg: *mut libc::c_void) {
    // SAFETY: arg is the listener's boxed Pending, alive until ucp_listener_destroy returns.
    let pending = unsafe { &*(arg as *const Pending) };
    pending
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(request as usize);
    pending.arrival.raise();
}

impl Listener {
    /// Listens on `addr` (port 0 picks a free port; read it back with
    /// [`local_addr`](Listener::local_addr)).
    pub fn bind(worker: &Worker, addr: SocketAddr) -> Result<Listener> {
        let pending = Box::new(Pending {
            requests: Mutex::new(VecDeque::new()),
            arrival: Signal::new(),
        });
        let c_addr = CSockAddr::new(addr);
        let params = sys::ucp_listener_params_t {
            field_mask: u64::from(
                sys::ucp_listener_params_field::UCP_LISTENER_PARAM_FIELD_SOCK_ADDR.0
                    | sys::ucp_listener_params_field::UCP_LISTENER_PARAM_FIELD_CONN_HANDLER.0,
            ),
            sockaddr: sys::ucs_sock_addr_t {
                addr: c_addr.as_ptr() as *const sys::sockaddr,
                addrlen: c_addr.len(),
            },
            conn_handler: sys::ucp_listener_conn_handler_t {
                cb: Some(conn_callback),
                arg: &*pending as *const Pending as *mut libc::c_void,
            },
            ..Default::default()
        };
        let mut handle = ptr::null_mut();
        // SAFETY: params and the sockaddr outlive the call; pending outlives the listener.
        check("ucp_listener_create", unsafe {
            sys::ucp_listener_create(worker.handle(), &params, &mut handle)
        })
        .map_err(|e| e.with_new_detail(addr.to_string()))?;
        Ok(Listener(Arc::new(ListenerInner {
            worker: worker.clone(),
            handle,
            pending,
        })))
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let mut attr = sys::ucp_listener_attr_t {
            field_mask: u64::from(sys::ucp_listener_attr_field::UCP_LISTENER_ATTR_FIELD_SOCKADDR.0),
            ..Default::default()
        };
        // SAFETY: the listener is live; attr is writable.
        check("ucp_listener_query", unsafe {
            sys::ucp_listener_query(self.0.handle, &mut attr)
        })?;
        // SAFETY: UCX filled in a sockaddr_storage, which has the same layout as libc's.
        unsafe { from_storage(&attr.sockaddr as *const _ as *const libc::sockaddr_storage) }
            .ok_or_else(|| {
                Error::with_detail(
                    "ucp_listener_query",
                    Status::ERR_INVALID_ADDR,
                    "unknown address family",
                )
            })
    }

    /// The worker this listener runs on.
    pub fn worker(&self) -> &Worker {
        &self.0.worker
    }

    /// Raised whenever a connection request arrives.
    pub(crate) fn arrival(&self) -> &Signal {
        &self.0.pending.arrival
    }

    /// Whether a connection request is queued.
    pub(crate) fn has_request(&self) -> bool {
        !self
            .0
            .pending
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Takes a queued connection request, if any. Does not progress the worker.
    pub fn try_accept(&self) -> Option<ConnRequest> {
        let raw = self
            .0
            .pending
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()?;
        let raw = raw as sys::ucp_conn_request_h;
        Some(ConnRequest {
            listener: self.0.clone(),
            raw,
            client: query_client(raw),
        })
    }

    /// Progresses the worker until a connection request arrives or `timeout` passes.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<ConnRequest>> {
        self.0
            .worker
            .progress_until(|| self.has_request(), Instant::now().checked_add(timeout))?;
        Ok(self.try_accept())
    }
}

fn query_client(raw: sys::ucp_conn_request_h) -> Option<SocketAddr> {
    let mut attr = sys::ucp_conn_request_attr_t {
        field_mask: u64::from(
            sys::ucp_conn_request_attr_field::UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR.0,
        ),
        ..Default::default()
    };
    // SAFETY: raw is a live connection request; attr is writable.
    let status = unsafe { sys::ucp_conn_request_query(raw, &mut attr) };
    if Status::from_raw(status).is_ok() {
        // SAFETY: UCX filled in a sockaddr_storage.
        unsafe { from_storage(&attr.client_address as *const _ as *const libc::sockaddr_storage) }
    } else {
        None
    }
}

impl ConnRequest {
    /// The connecting peer's address.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client
    }

    /// Rejects the request; the peer's endpoint fails with `ERR_REJECTED` or unreachable.
    pub fn reject(self) {
        // Drop rejects.
    }

    /// Gives up the raw handle to `ucp_ep_create` (which consumes it).
    pub(crate) fn into_raw(self) -> sys::ucp_conn_request_h {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the Arc is moved out exactly once.
        drop(unsafe { ptr::read(&this.listener) });
        this.raw
    }
}

impl Drop for ConnRequest {
    fn drop(&mut self) {
        // SAFETY: the request was neither accepted nor rejected; the listener is alive (held).
        let status = unsafe { sys::ucp_listener_reject(self.listener.handle, self.raw) };
        if let Err(err) = check("ucp_listener_reject", status) {
            log::debug!("{err}");
        }
    }
}

impl Drop for ListenerInner {
    fn drop(&mut self) {
        // Rejects the queued requests and destroys the listener as one step for the threads
        // that progress the worker (UCX delivers requests from progress, which takes the gate):
        // a request that arrived between the two was never rejected and its client waited for
        // its timeout. Requests UCX has not delivered yet, `ucp_listener_destroy` rejects.
        let _gate = self.worker.gate();
        for raw in self
            .pending
            .requests
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            // SAFETY: queued requests were never handed out; the listener is still live.
            unsafe { sys::ucp_listener_reject(self.handle, raw as sys::ucp_conn_request_h) };
        }
        // SAFETY: no ConnRequest holds this listener any more (they hold the Arc).
        unsafe { sys::ucp_listener_destroy(self.handle) };
    }
}
