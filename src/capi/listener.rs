//! `swucx_listener_t` and `swucx_conn_request_t`: accepting connections on a socket address.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use super::endpoint::{parse_addr, parse_sockaddr};
use super::status::{SWUCX_ERR_TIMED_OUT, SWUCX_INPROGRESS, SWUCX_OK, swucx_status_t};
use super::worker::swucx_worker_t;
use super::{
    Handle, boundary, fail, fail_with, impl_handle, into_handle, swucx_bytes_t, try_out, try_ref,
    try_take, write_out,
};
use crate::{ConnRequest, Listener};

/// Listens for connections on a socket address; requests queue up until taken with
/// `swucx_listener_accept`. Under the hood: `swucx::Listener` (holds its worker). Thread-safe
/// on a MULTI worker.
///
/// Methods: `swucx_listener_create`, `swucx_listener_create_sockaddr`, `swucx_listener_port`,
/// `swucx_listener_address`, `swucx_listener_accept`, `swucx_engine_accept`,
/// `swucx_listener_destroy`.
pub struct swucx_listener_t {
    magic: u64,
    listener: Listener,
}
impl_handle!(swucx_listener_t, b"SWlisten");

/// A peer asking to connect, taken from a listener (`swucx_listener_accept`,
/// `swucx_engine_accept`). The caller owns it until it accepts it with `swucx_worker_accept` or
/// refuses it with `swucx_conn_request_reject`: both consume it, also on failure (do not use it
/// afterwards); it keeps its listener alive until then. Use it from one thread at a time; it
/// may move between threads.
///
/// Methods: `swucx_conn_request_client_address`, `swucx_worker_accept`,
/// `swucx_conn_request_reject`.
pub struct swucx_conn_request_t {
    magic: u64,
    pub(crate) request: ConnRequest,
}
impl_handle!(swucx_conn_request_t, b"SWconnrq");

fn bind(
    worker: *const swucx_worker_t,
    addr: std::net::SocketAddr,
    listener_p: *mut *mut swucx_listener_t,
) -> swucx_status_t {
    let worker = &try_ref!(worker).worker;
    match Listener::bind(worker, addr) {
        Ok(listener) => {
            write_out!(
                listener_p,
                into_handle(swucx_listener_t {
                    magic: swucx_listener_t::MAGIC,
                    listener,
                })
            );
            SWUCX_OK
        }
        Err(e) => fail(e),
    }
}

/// Listens on `address`, "ip:port" (port 0 picks a free port: read it with
/// `swucx_listener_port`). On success writes a new listener to `*listener_p`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_listener_create(
    worker: *const swucx_worker_t,
    address: *const c_char,
    listener_p: *mut *mut swucx_listener_t,
) -> swucx_status_t {
    boundary(|| {
        try_ref!(worker);
        try_out!(listener_p);
        // SAFETY: address is NULL or a NUL-terminated string from the caller.
        match unsafe { parse_addr(address, "address") } {
            Ok(addr) => bind(worker, addr, listener_p),
            Err(status) => status,
        }
    })
}

/// As `swucx_listener_create`, with a `struct sockaddr_in` or `sockaddr_in6` of `sockaddr_len`
/// bytes.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_listener_create_sockaddr(
    worker: *const swucx_worker_t,
    sockaddr: *const c_void,
    sockaddr_len: usize,
    listener_p: *mut *mut swucx_listener_t,
) -> swucx_status_t {
    boundary(|| {
        try_ref!(worker);
        try_out!(listener_p);
        // SAFETY: sockaddr is NULL or readable for sockaddr_len bytes.
        match unsafe { parse_sockaddr(sockaddr, sockaddr_len) } {
            Ok(addr) => bind(worker, addr, listener_p),
            Err(status) => status,
        }
    })
}

/// The port the listener is bound to (the real one when created with port 0).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_listener_port(
    listener: *const swucx_listener_t,
    port_p: *mut u16,
) -> swucx_status_t {
    boundary(|| {
        let listener = &try_ref!(listener).listener;
        try_out!(port_p);
        match listener.local_addr() {
            Ok(addr) => {
                write_out!(port_p, addr.port());
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// The address the listener is bound to as text, "ip:port", in a new bytes handle (a
/// NUL-terminated string; free it with `swucx_bytes_destroy`).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_listener_address(
    listener: *const swucx_listener_t,
    address_p: *mut *mut swucx_bytes_t,
) -> swucx_status_t {
    boundary(|| {
        let listener = &try_ref!(listener).listener;
        try_out!(address_p);
        match listener.local_addr() {
            Ok(addr) => {
                write_out!(
                    address_p,
                    into_handle(swucx_bytes_t::new(addr.to_string().into_bytes()))
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// A new handle for a taken connection request.
fn new_conn_request(request: ConnRequest) -> *mut swucx_conn_request_t {
    into_handle(swucx_conn_request_t {
        magic: swucx_conn_request_t::MAGIC,
        request,
    })
}

/// Takes the next connection request, progressing the listener's worker for up to `timeout_ms`
/// (0: only take one already queued, without progressing; negative: no limit). On success writes
/// the request to `*conn_request_p`; `SWUCX_ERR_TIMED_OUT` if none arrived.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_listener_accept(
    listener: *const swucx_listener_t,
    timeout_ms: i64,
    conn_request_p: *mut *mut swucx_conn_request_t,
) -> swucx_status_t {
    boundary(|| {
        let listener = &try_ref!(listener).listener;
        try_out!(conn_request_p);
        let taken = match u64::try_from(timeout_ms) {
            Ok(0) => Ok(listener.try_accept()),
            Ok(ms) => listener.accept_timeout(Duration::from_millis(ms)),
            Err(_) => loop {
                match listener.accept_timeout(Duration::from_secs(3600)) {
                    Ok(None) => continue,
                    other => break other,
                }
            },
        };
        match taken {
            Ok(Some(request)) => {
                write_out!(conn_request_p, new_conn_request(request));
                SWUCX_OK
            }
            Ok(None) => fail_with(SWUCX_ERR_TIMED_OUT, "no connection request arrived"),
            Err(e) => fail(e),
        }
    })
}

/// Takes the next connection request through an engine: `listener` must be on the engine's
/// worker (`SWUCX_ERR_INVALID_PARAM` otherwise: the engine progresses no other), whose
/// background thread progresses it while this thread sleeps, with no periodic wake-up, until a
/// request arrives (written to `*conn_request_p`, `SWUCX_OK`), `timeout_ms` passes (negative:
/// no limit; `SWUCX_ERR_TIMED_OUT`) or one of the `count` signals is raised
/// (`SWUCX_INPROGRESS`), as for `swucx_engine_wait_signals`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_accept(
    engine: *const super::engine::swucx_engine_t,
    listener: *const swucx_listener_t,
    timeout_ms: i64,
    signals: *const *const super::engine::swucx_signal_t,
    count: usize,
    conn_request_p: *mut *mut swucx_conn_request_t,
) -> swucx_status_t {
    boundary(|| {
        let engine = &try_ref!(engine).engine;
        let listener = &try_ref!(listener).listener;
        try_out!(conn_request_p);
        let on_engine = engine.is_own(listener.worker());
        let refs = match super::request::wait_args(0, signals, count, on_engine) {
            Ok((_, refs)) => refs,
            Err(status) => return status,
        };
        let timeout = super::engine::timeout(timeout_ms);
        match engine.accept_signals(listener, timeout, refs.get()) {
            Some(request) => {
                write_out!(conn_request_p, new_conn_request(request));
                SWUCX_OK
            }
            None if refs.get().iter().any(|s| s.is_raised()) => SWUCX_INPROGRESS,
            None => fail_with(SWUCX_ERR_TIMED_OUT, "no connection request arrived"),
        }
    })
}

/// Stops listening and releases the listener. NULL is a no-op. Queued connection requests are
/// rejected; endpoints already accepted are not affected. Using the handle afterwards, or
/// destroying it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while its
/// memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_listener_destroy(listener: *mut swucx_listener_t) {
    boundary(|| {
        if !listener.is_null() {
            drop(try_take!(listener));
        }
    })
}

/// The connecting peer's address as text, "ip:port", in a new bytes handle.
/// `SWUCX_ERR_NO_ELEM` if UCX did not report it.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_conn_request_client_address(
    conn_request: *const swucx_conn_request_t,
    address_p: *mut *mut swucx_bytes_t,
) -> swucx_status_t {
    boundary(|| {
        let request = &try_ref!(conn_request).request;
        try_out!(address_p);
        match request.client_addr() {
            Some(addr) => {
                write_out!(
                    address_p,
                    into_handle(swucx_bytes_t::new(addr.to_string().into_bytes()))
                );
                SWUCX_OK
            }
            None => fail_with(
                super::status::SWUCX_ERR_NO_ELEM,
                "client address not reported",
            ),
        }
    })
}

/// Rejects the connection request (the peer's endpoint fails). Consumes it. NULL is a no-op. Using
/// the handle afterwards, or destroying it again, is undefined behaviour (detected as
/// `SWUCX_ERR_BAD_HANDLE` only while its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_conn_request_reject(conn_request: *mut swucx_conn_request_t) {
    boundary(|| {
        if !conn_request.is_null() {
            try_take!(conn_request).request.reject();
        }
    })
}
