//! `swucx_ep_t`: a connection to a peer, and the operations posted on it.

use std::ffi::{c_char, c_void};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::memory::{mem_buf, swucx_mem_t, swucx_rkey_t};
use super::request::{ReqState, hand_out, swucx_request_t};
use super::status::{SWUCX_ERR_INVALID_ADDR, SWUCX_ERR_INVALID_PARAM, SWUCX_OK, swucx_status_t};
use super::{
    Handle, boundary, c_str, fail, fail_with, impl_handle, into_handle, status_of,
    status_of_send_now, swucx_bytes_t, try_out, try_ref, try_take, write_out,
};
use crate::{CloseMode, Endpoint};

/// A connection to one peer. Under the hood: a reference to `swucx::Endpoint` (holds its
/// worker). Thread-safe on a MULTI worker. Destroying the last handle of an open endpoint starts
/// a flush close in the background; `swucx_ep_close` closes and waits.
///
/// Methods: `swucx_ep_destroy`, `swucx_ep_close`, `swucx_ep_failure`,
/// `swucx_ep_set_error_handler`, `swucx_ep_raise_on_failure`, `swucx_ep_transports`,
/// `swucx_ep_tag_send`, `swucx_ep_stream_send`, `swucx_ep_stream_recv`,
/// `swucx_ep_stream_recv_some`, `swucx_ep_am_send`, `swucx_ep_put`, `swucx_ep_get`, `swucx_ep_flush`, `swucx_rkey_unpack`.
pub struct swucx_ep_t {
    magic: u64,
    pub(crate) ep: Endpoint,
}
impl_handle!(swucx_ep_t, b"SWendpnt");

pub(crate) fn new_ep(ep: Endpoint) -> *mut swucx_ep_t {
    into_handle(swucx_ep_t {
        magic: swucx_ep_t::MAGIC,
        ep,
    })
}

/// Parses an "ip:port" argument.
///
/// # Safety
/// `ptr` must be NULL or a NUL-terminated string.
pub(crate) unsafe fn parse_addr(
    ptr: *const c_char,
    name: &'static str,
) -> Result<SocketAddr, swucx_status_t> {
    // SAFETY: forwarded contract.
    let text = unsafe { c_str(ptr, name) }?;
    text.parse::<SocketAddr>().map_err(|_| {
        fail_with(
            SWUCX_ERR_INVALID_ADDR,
            format!("`{text}` is not an \"ip:port\" address"),
        )
    })
}

/// Reads a `sockaddr_in` / `sockaddr_in6` argument.
///
/// # Safety
/// `ptr` must be NULL or readable for `len` bytes.
pub(crate) unsafe fn parse_sockaddr(
    ptr: *const c_void,
    len: usize,
) -> Result<SocketAddr, swucx_status_t> {
    if ptr.is_null() {
        return Err(super::ArgError::Null("sockaddr").fail());
    }
    let bad = |why: &str| fail_with(SWUCX_ERR_INVALID_ADDR, format!("sockaddr: {why}"));
    if len < std::mem::size_of::<libc::sa_family_t>() {
        return Err(bad("too short"));
    }
    // SAFETY: at least the family field is readable; unaligned reads copy the structs out.
    let family = unsafe { std::ptr::read_unaligned(ptr.cast::<libc::sa_family_t>()) };
    match i32::from(family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: len covers a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(ptr.cast::<libc::sockaddr_in>()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: len covers a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(ptr.cast::<libc::sockaddr_in6>()) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        libc::AF_INET | libc::AF_INET6 => Err(bad("length too short for its family")),
        _ => Err(bad("not AF_INET or AF_INET6")),
    }
}

/// Releases the caller's reference to the endpoint. NULL is a no-op. When the last reference goes
/// (requests in flight hold one), an open endpoint is closed in the background: with a flush
/// when nothing is in flight, else by force (operations still running end with
/// `SWUCX_ERR_CANCELED`: UCX 1.13 aborts the process when a flushing close ends under a
/// rendezvous the peer never took), and by force if the peer failed. `swucx_ep_close` with
/// `SWUCX_EP_CLOSE_FLUSH` first finishes them. The worker waits for background closes (at most
/// 5 s, when the peer does not answer) before it is destroyed, and leaks itself rather than
/// let UCX abort if they do not finish. Using the handle afterwards, or destroying it again,
/// is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while its memory is not
/// reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_destroy(ep: *mut swucx_ep_t) {
    boundary(|| {
        if !ep.is_null() {
            drop(try_take!(ep));
        }
    })
}

/// `swucx_ep_close` mode: complete outstanding operations, then disconnect.
pub const SWUCX_EP_CLOSE_FLUSH: u32 = 0;
/// `swucx_ep_close` mode: disconnect at once; outstanding operations end with
/// `SWUCX_ERR_CANCELED`.
pub const SWUCX_EP_CLOSE_FORCE: u32 = 1;

/// Closes the endpoint (`SWUCX_EP_CLOSE_FLUSH` or `SWUCX_EP_CLOSE_FORCE`) and waits, progressing
/// the worker, until UCX has closed it. Later operations on it fail with
/// `SWUCX_ERR_NOT_CONNECTED`; closing again is a no-op. The handle must still be destroyed.
/// Inside a callback (an AM handler: UCX may run one inside a send on this very endpoint) it
/// does nothing and returns `SWUCX_ERR_BUSY`. A flush first waits for the endpoint's operations
/// to complete, then for the peer: one that does not progress holds it up (use
/// `SWUCX_EP_CLOSE_FORCE` then).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_close(ep: *const swucx_ep_t, mode: u32) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let mode = match mode {
            SWUCX_EP_CLOSE_FLUSH => CloseMode::Flush,
            SWUCX_EP_CLOSE_FORCE => CloseMode::Force,
            other => {
                return fail_with(
                    SWUCX_ERR_INVALID_PARAM,
                    format!("unknown close mode {other}"),
                );
            }
        };
        status_of(ep.close(mode))
    })
}

/// The endpoint's failure: `SWUCX_OK` while the peer is fine, else the status UCX reported when
/// it failed (e.g. `SWUCX_ERR_CONNECTION_RESET`, `SWUCX_ERR_ENDPOINT_TIMEOUT`).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_failure(ep: *const swucx_ep_t) -> swucx_status_t {
    boundary(|| match try_ref!(ep).ep.failure() {
        Some(status) => swucx_status_t::from(status.0),
        None => SWUCX_OK,
    })
}

/// Raises `signal` when the endpoint's peer fails (at once if it already has), e.g. to end a
/// `swucx_engine_wait_signals` on a worker-wide tag receive that expects this peer's reply. The
/// endpoint holds the signal weakly: destroying the signal handle unregisters it.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_raise_on_failure(
    ep: *const swucx_ep_t,
    signal: *const super::engine::swucx_signal_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        ep.raise_on_failure(&try_ref!(signal).signal);
        SWUCX_OK
    })
}

/// Called when an endpoint's peer fails, with the failure status and the `user_data` given to
/// `swucx_ep_set_error_handler`. Runs inside progress on the progressing thread: it must not
/// block, wait or progress.
pub type swucx_ep_error_callback_t =
    Option<unsafe extern "C" fn(status: swucx_status_t, user_data: *mut c_void)>;

/// `user_data` moves to whichever thread progresses; the C caller vouches for that.
struct UserData(*mut c_void);
// SAFETY: the C API documents that callbacks run on the progressing thread with this pointer.
unsafe impl Send for UserData {}

impl UserData {
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Sets (replaces) the callback run when the peer fails; NULL removes it. Once this returns the
/// earlier callback is not running and is not called again, so its `user_data` may be freed
/// (do not call this from inside the callback: it runs under the lock this takes).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_set_error_handler(
    ep: *const swucx_ep_t,
    callback: swucx_ep_error_callback_t,
    user_data: *mut c_void,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let Some(callback) = callback else {
            ep.clear_error_handler();
            return SWUCX_OK;
        };
        let user_data = UserData(user_data);
        ep.set_error_handler(move |status| {
            // SAFETY: a C function pointer the caller registered, called with its own user_data.
            unsafe { callback(swucx_status_t::from(status.0), user_data.get()) }
        });
        SWUCX_OK
    })
}

/// The transports and devices UCX chose for the endpoint, as text: "transport/device" pairs
/// separated by commas, e.g. "posix/memory,cma/memory,tcp/lo", in a new bytes handle (a
/// NUL-terminated string). Wireup may still run right after connecting: exchange a message
/// first.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_transports(
    ep: *const swucx_ep_t,
    transports_p: *mut *mut swucx_bytes_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        try_out!(transports_p);
        match ep.transports() {
            Ok(list) => {
                let text = list
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                write_out!(
                    transports_p,
                    into_handle(swucx_bytes_t::new(text.into_bytes()))
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Flushes the endpoint (all RMA issued before completes at the target); blocks, progressing
/// the worker, until done.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_flush(ep: *const swucx_ep_t) -> swucx_status_t {
    boundary(|| status_of(try_ref!(ep).ep.flush()))
}

/// A borrowed C buffer as a `RawBuf`, checked by `c_array` (NULL is allowed for length 0 and
/// becomes a dangling non-NULL pointer, which the slices made of the buffer need; a length past
/// `PTRDIFF_MAX` is `SWUCX_ERR_INVALID_PARAM`).
macro_rules! raw_buf {
    ($ptr:ident, $len:ident) => {{
        let ptr = $crate::capi::try_arg!($crate::capi::c_array(
            $ptr.cast::<u8>(),
            $len,
            stringify!($ptr)
        ));
        // SAFETY: the C contract of every operation: the buffer stays valid (and, for
        // receives, untouched) until the request completes (for `*_send_now`, which complete
        // within the call, until the call returns); for length 0 nothing is accessed.
        unsafe { $crate::RawBuf::new(ptr.cast_mut(), $len) }
    }};
}
pub(crate) use raw_buf;

/// Sends `length` bytes at `buffer` with `tag`. The buffer must stay valid until the request
/// completes. On success writes a request to `*req_p` and returns `SWUCX_OK` (already complete)
/// or `SWUCX_INPROGRESS`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_tag_send(
    ep: *const swucx_ep_t,
    buffer: *const c_void,
    length: usize,
    tag: u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        try_out!(req_p);
        hand_out(ep.tag_send(tag, buf).map(ReqState::One), req_p)
    })
}

/// Sends `length` bytes at `buffer` with `tag` within this call or not at all: `SWUCX_OK` once
/// sent, `SWUCX_ERR_NO_RESOURCE` when UCX cannot send it at once (nothing was sent and no error
/// message is recorded; send it with `swucx_ep_tag_send`), or an error as for
/// `swucx_ep_tag_send` (a closed or failed endpoint, a bad argument). Small messages go at once
/// when the transport has room (over shared memory about 100 bytes). The buffer is read during
/// the call only and may be reused or freed when it returns; no request.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_tag_send_now(
    ep: *const swucx_ep_t,
    buffer: *const c_void,
    length: usize,
    tag: u64,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        status_of_send_now(ep.tag_send_now_raw(tag, buf))
    })
}

/// As `swucx_ep_tag_send`, from `length` bytes at byte `offset` of the registered region `mem`
/// (UCX gets its memory handle: no registration-cache lookup). The region stays mapped while
/// the request runs; the bytes must stay unchanged until it completes.
/// `SWUCX_ERR_OUT_OF_RANGE` if the range is not inside the region.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_tag_send_mem(
    ep: *const swucx_ep_t,
    mem: *const swucx_mem_t,
    offset: usize,
    length: usize,
    tag: u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        try_ref!(mem);
        try_out!(req_p);
        let buf = mem_buf!(mem, offset, length);
        hand_out(ep.tag_send(tag, buf).map(ReqState::Region), req_p)
    })
}

/// Sends `length` bytes at `buffer` on the endpoint's byte stream (as `swucx_ep_tag_send`;
/// the context needs `SWUCX_FEATURE_STREAM`). `length` 0 is refused
/// (`SWUCX_ERR_INVALID_PARAM`): UCX 1.13 aborts the process that receives an empty stream
/// message.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_stream_send(
    ep: *const swucx_ep_t,
    buffer: *const c_void,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        try_out!(req_p);
        hand_out(ep.stream_send(buf).map(ReqState::One), req_p)
    })
}

/// Receives exactly `length` bytes from the stream into `buffer` (valid and untouched until the
/// request completes). On success writes a request to `*req_p`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_stream_recv(
    ep: *const swucx_ep_t,
    buffer: *mut c_void,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        try_out!(req_p);
        hand_out(ep.stream_recv(buf).map(ReqState::One), req_p)
    })
}

/// As `swucx_ep_stream_send`, from `length` bytes at byte `offset` of the registered region `mem`
/// (as `swucx_ep_tag_send_mem`).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_stream_send_mem(
    ep: *const swucx_ep_t,
    mem: *const swucx_mem_t,
    offset: usize,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        try_ref!(mem);
        try_out!(req_p);
        let buf = mem_buf!(mem, offset, length);
        hand_out(ep.stream_send(buf).map(ReqState::Region), req_p)
    })
}

/// As `swucx_ep_stream_recv`, into `length` bytes at byte `offset` of the registered region
/// `mem` (untouched by others until the request completes). `SWUCX_ERR_OUT_OF_RANGE` if the
/// range is not inside the region.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_stream_recv_mem(
    ep: *const swucx_ep_t,
    mem: *const swucx_mem_t,
    offset: usize,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        try_ref!(mem);
        try_out!(req_p);
        let buf = mem_buf!(mem, offset, length);
        hand_out(ep.stream_recv(buf).map(ReqState::Region), req_p)
    })
}

/// Receives whatever the stream has, at least one byte and at most `length`; the received length
/// comes from `swucx_request_info`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_stream_recv_some(
    ep: *const swucx_ep_t,
    buffer: *mut c_void,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        try_out!(req_p);
        hand_out(ep.stream_recv_some(buf).map(ReqState::One), req_p)
    })
}

/// Writes `length` bytes at `buffer` into the peer's region (`rkey`, unpacked for this endpoint)
/// at byte `offset`. Completion is local: `swucx_ep_flush` makes it visible at the target.
/// `SWUCX_ERR_OUT_OF_RANGE` if the range is outside the region.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_put(
    ep: *const swucx_ep_t,
    buffer: *const c_void,
    length: usize,
    rkey: *const swucx_rkey_t,
    offset: u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        let rkey = &try_ref!(rkey).rkey;
        try_out!(req_p);
        hand_out(ep.put(buf, rkey, offset).map(ReqState::One), req_p)
    })
}

/// Reads `length` bytes of the peer's region (`rkey`) at byte `offset` into `buffer` (valid and
/// untouched until the request completes).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_get(
    ep: *const swucx_ep_t,
    buffer: *mut c_void,
    length: usize,
    rkey: *const swucx_rkey_t,
    offset: u64,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let buf = raw_buf!(buffer, length);
        let rkey = &try_ref!(rkey).rkey;
        try_out!(req_p);
        hand_out(ep.get(buf, rkey, offset).map(ReqState::One), req_p)
    })
}
