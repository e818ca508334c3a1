//! `swucx_worker_t`: a UCX worker, its progress engine and event-fd wakeup, and the operations
//! that belong to the worker (tag receive, connecting and accepting endpoints).

use std::ffi::{c_char, c_int, c_void};

use super::context::swucx_context_t;
use super::endpoint::swucx_ep_t;
use super::endpoint::{new_ep, parse_addr, parse_sockaddr, raw_buf};
use super::listener::swucx_conn_request_t;
use super::memory::{mem_buf, swucx_mem_t};
use super::request::{ReqState, hand_out, swucx_request_t};
use super::status::{SWUCX_ERR_BUSY, SWUCX_OK, swucx_status_t};
use super::{
    Handle, boundary, byte_slice, fail, impl_handle, into_handle, status_of, swucx_bytes_t,
    try_arg, try_out, try_ref, try_take, write_out,
};
use crate::{Worker, WorkerAddress};

/// A UCX worker: the progress engine endpoints, listeners and operations run on. Callbacks
/// (active-message handlers, endpoint error handlers) run inside `swucx_worker_progress` (or a
/// wait) on the thread that progresses. Under the hood: a reference to `swucx::Worker`;
/// destroying it only drops your reference (endpoints, listeners and requests keep it alive).
///
/// Made by `swucx_worker_create` it is thread-safe (UCX's MULTI mode): any thread may use it and
/// its children. Made by `swucx_worker_create_serialized` the caller must serialize every use of
/// it and of everything made from it.
///
/// Methods: `swucx_worker_create`, `swucx_worker_create_serialized`, `swucx_worker_destroy`,
/// `swucx_worker_progress`, `swucx_worker_efd`, `swucx_worker_arm`, `swucx_worker_signal`,
/// `swucx_worker_wait`, `swucx_worker_address`, `swucx_worker_flush`, `swucx_worker_connect`,
/// `swucx_worker_connect_sockaddr`, `swucx_worker_connect_address`, `swucx_worker_accept`,
/// `swucx_worker_tag_recv`, `swucx_worker_set_am_handler`, `swucx_listener_create`.
pub struct swucx_worker_t {
    magic: u64,
    pub(crate) worker: Worker,
}
impl_handle!(swucx_worker_t, b"SWworker");

pub(crate) fn new_worker(worker: Worker) -> *mut swucx_worker_t {
    into_handle(swucx_worker_t {
        magic: swucx_worker_t::MAGIC,
        worker,
    })
}

/// Creates a thread-safe worker (UCX's MULTI thread mode) on `context`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_create(
    context: *const swucx_context_t,
    worker_p: *mut *mut swucx_worker_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        try_out!(worker_p);
        match Worker::new(context) {
            Ok(worker) => {
                write_out!(worker_p, new_worker(worker));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Creates a worker in UCX's SERIALIZED thread mode: no lock on each UCX call (faster), but the
/// caller must never use this worker, or any endpoint, listener, request, active message or
/// memory handle made from it, from two threads at the same time. Not for engines.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_create_serialized(
    context: *const swucx_context_t,
    worker_p: *mut *mut swucx_worker_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        try_out!(worker_p);
        // SAFETY: the C contract above makes the caller serialize every use of the worker.
        match unsafe { Worker::new_serialized(context) } {
            Ok(worker) => {
                write_out!(worker_p, new_worker(worker));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Releases the caller's reference to the worker. NULL is a no-op. UCX's worker is destroyed when
/// the last endpoint, listener and request made from it is gone too, after the endpoint closes
/// still running finish: it waits for them at most 5 s (a peer that does not answer), then leaks
/// the worker rather than let UCX abort. Using the handle afterwards,
/// or destroying it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while
/// its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_destroy(worker: *mut swucx_worker_t) {
    boundary(|| {
        if !worker.is_null() {
            drop(try_take!(worker));
        }
    })
}

/// Runs UCX's progress engine once; returns the number of events processed (0 for a NULL or
/// invalid handle, and inside a callback, where progress is not allowed).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_progress(worker: *const swucx_worker_t) -> u32 {
    boundary(|| try_ref!(worker).worker.progress())
}

/// The worker's event file descriptor (needs `SWUCX_FEATURE_WAKEUP`): readable when there is
/// work for progress. Arm it with `swucx_worker_arm` before sleeping on it. Owned by the worker:
/// do not close it.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_efd(
    worker: *const swucx_worker_t,
    fd_p: *mut c_int,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_out!(fd_p);
        match worker.event_fd() {
            Ok(fd) => {
                write_out!(fd_p, fd);
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Arms the event fd, as `ucp_worker_arm`: `SWUCX_OK` means it is now safe to sleep on the fd;
/// `SWUCX_ERR_BUSY` means events are pending (progress, then arm again).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_arm(worker: *const swucx_worker_t) -> swucx_status_t {
    boundary(|| match try_ref!(worker).worker.arm() {
        Ok(true) => SWUCX_OK,
        Ok(false) => SWUCX_ERR_BUSY,
        Err(e) => fail(e),
    })
}

/// Wakes a thread sleeping on the event fd or in `swucx_worker_wait`. Any thread, any mode.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_signal(worker: *const swucx_worker_t) -> swucx_status_t {
    boundary(|| status_of(try_ref!(worker).worker.signal()))
}

/// Blocks until the worker has events to progress (`ucp_worker_wait`; needs the wakeup feature).
/// `SWUCX_ERR_BUSY` inside a callback.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_wait(worker: *const swucx_worker_t) -> swucx_status_t {
    boundary(|| status_of(try_ref!(worker).worker.wait()))
}

/// The worker's address, for `swucx_worker_connect_address` on a peer. On success writes a new
/// bytes handle to `*address_p` (free it with `swucx_bytes_destroy`).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_address(
    worker: *const swucx_worker_t,
    address_p: *mut *mut swucx_bytes_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_out!(address_p);
        match worker.address() {
            Ok(addr) => {
                write_out!(
                    address_p,
                    into_handle(swucx_bytes_t::new(addr.into_bytes()))
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Flushes every endpoint of the worker (all RMA issued before completes at its target).
/// Blocks, progressing the worker, until done.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_flush(worker: *const swucx_worker_t) -> swucx_status_t {
    boundary(|| status_of(try_ref!(worker).worker.flush()))
}

/// Connects to a listener at `address`, "ip:port" (e.g. "127.0.0.1:13337" or "[::1]:13337").
/// Needs `tcp` among UCX's transports for the connection setup. The connection completes in the
/// background: operations may be posted at once. On success writes a new endpoint to `*ep_p`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_connect(
    worker: *const swucx_worker_t,
    address: *const c_char,
    ep_p: *mut *mut swucx_ep_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_out!(ep_p);
        // SAFETY: address is NULL or a NUL-terminated string from the caller.
        let addr = match unsafe { parse_addr(address, "address") } {
            Ok(addr) => addr,
            Err(status) => return status,
        };
        match worker.connect(addr) {
            Ok(ep) => {
                write_out!(ep_p, new_ep(ep));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// As `swucx_worker_connect`, with the address as a `struct sockaddr_in` or `sockaddr_in6` of
/// `sockaddr_len` bytes.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_connect_sockaddr(
    worker: *const swucx_worker_t,
    sockaddr: *const c_void,
    sockaddr_len: usize,
    ep_p: *mut *mut swucx_ep_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_out!(ep_p);
        // SAFETY: sockaddr is NULL or readable for sockaddr_len bytes.
        let addr = match unsafe { parse_sockaddr(sockaddr, sockaddr_len) } {
            Ok(addr) => addr,
            Err(status) => return status,
        };
        match worker.connect(addr) {
            Ok(ep) => {
                write_out!(ep_p, new_ep(ep));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Connects to a peer worker by its address (`swucx_worker_address` on the peer: `length`
/// bytes at `address`), without a listener. On success writes a new endpoint to `*ep_p`. An
/// empty address fails with `SWUCX_ERR_INVALID_ADDR`. UCX parses the address without bounds and
/// trusts it: the bytes must be a whole, unchanged address from `swucx_worker_address` (a
/// truncated or forged one can crash the process), so frame addresses that travel and take them
/// from trusted peers only; untrusted peers connect through a listener.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_connect_address(
    worker: *const swucx_worker_t,
    address: *const c_void,
    length: usize,
    ep_p: *mut *mut swucx_ep_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_out!(ep_p);
        // SAFETY: the caller gives `length` readable bytes at `address` (NULL when 0).
        let bytes = try_arg!(unsafe { byte_slice(address, length, "address") });
        // SAFETY: the caller vouches for the bytes (above); an empty address is refused.
        let address = unsafe { WorkerAddress::from_bytes(bytes.to_vec()) };
        match worker.connect_address(&address) {
            Ok(ep) => {
                write_out!(ep_p, new_ep(ep));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Accepts a connection request (from `swucx_listener_accept`). Consumes `conn_request`, also on
/// failure (then rejected): do not use or destroy it afterwards. On success writes a new
/// endpoint to `*ep_p`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_accept(
    worker: *const swucx_worker_t,
    conn_request: *mut swucx_conn_request_t,
    ep_p: *mut *mut swucx_ep_t,
) -> swucx_status_t {
    boundary(|| {
        // Taken first, so that a failed call below still consumes it (dropped: rejected).
        let request = try_take!(conn_request).request;
        let worker = &try_ref!(worker).worker;
        try_out!(ep_p);
        match worker.accept(request) {
            Ok(ep) => {
                write_out!(ep_p, new_ep(ep));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Posts a receive of the next message whose tag matches `tag` on the bits set in `tag_mask`,
/// from any endpoint of the worker, into `length` bytes at `buffer` (which must stay valid and
/// untouched until the request completes). A longer message completes the request with
/// `SWUCX_ERR_MESSAGE_TRUNCATED`. Cancellable while unmatched. On success writes a request to
/// `*req_p` and returns `SWUCX_OK` (already complete) or `SWUCX_INPROGRESS`; the received length
/// and sender tag come from `swucx_request_info`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_tag_recv(
    worker: *const swucx_worker_t,
    buffer: *mut c_void,
    length: usize,
    tag: u64,
    tag_mask: u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        let buf = raw_buf!(buffer, length);
        try_out!(req_p);
        hand_out(
            worker.tag_recv(tag, tag_mask, buf).map(ReqState::One),
            req_p,
        )
    })
}

/// As `swucx_worker_tag_recv`, into `length` bytes at byte `offset` of the registered region
/// `mem` (UCX gets its memory handle; the bytes must stay untouched until the request
/// completes). `SWUCX_ERR_OUT_OF_RANGE` if the range is not inside the region.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_tag_recv_mem(
    worker: *const swucx_worker_t,
    mem: *const swucx_mem_t,
    offset: usize,
    length: usize,
    tag: u64,
    tag_mask: u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_ref!(mem);
        try_out!(req_p);
        let buf = mem_buf!(mem, offset, length);
        hand_out(
            worker.tag_recv(tag, tag_mask, buf).map(ReqState::Region),
            req_p,
        )
    })
}
