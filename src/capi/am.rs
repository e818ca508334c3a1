//! Active messages: C handlers, the message seen inside a handler, kept payloads, and sends.

use std::ffi::c_void;

use super::endpoint::{new_ep, raw_buf, swucx_ep_t};
use super::memory::{mem_buf, swucx_mem_t};
use super::request::{ReqState, hand_out, swucx_request_t};
use super::status::{SWUCX_ERR_INVALID_STATE, SWUCX_ERR_NO_ELEM, SWUCX_OK, swucx_status_t};
use super::worker::swucx_worker_t;
use super::{
    Handle, boundary, c_bytes, fail_with, handle_mut, impl_handle, into_handle, status_of,
    status_of_send_now, try_arg, try_out, try_ref, try_take, write_out,
};
use crate::{AmDesc, AmFlags, AmMessage, Endpoint, QueuedAm, RawBuf};

/// An active message, seen inside its handler only (the pointer is invalid once the handler
/// returns). Read it with the accessors; to keep the payload, receive it into a buffer
/// (`swucx_am_msg_recv`) or keep it (`swucx_am_msg_keep`) before returning. Otherwise it is
/// released when the handler returns.
///
/// Methods: `swucx_am_msg_header`, `swucx_am_msg_length`, `swucx_am_msg_is_rndv`,
/// `swucx_am_msg_data`, `swucx_am_msg_reply_ep`, `swucx_am_msg_recv`, `swucx_am_msg_keep`.
pub struct swucx_am_msg_t {
    _private: [u8; 0],
}

/// What a `swucx_am_msg_t` pointer really points to (on the handler's stack).
struct AmMsgState<'a> {
    magic: u64,
    /// `None` once received or kept.
    msg: Option<AmMessage<'a>>,
}
impl_handle!(AmMsgState<'static>, b"SWammsg\0");

/// A kept active message (`swucx_am_msg_keep`, or taken from a queue with
/// `swucx_engine_am_recv`): its header, reply endpoint and payload, to receive from any thread
/// later (`swucx_am_desc_recv`) or release (`swucx_am_desc_destroy`). The caller owns it until
/// one of those two, which consume it (the receive also on failure); it holds its worker and
/// (rendezvous) the sender's payload until then. Any thread: the reading functions may run on
/// several threads at once, but not alongside the receive or destroy.
///
/// Methods: `swucx_am_desc_length`, `swucx_am_desc_is_rndv`, `swucx_am_desc_header`,
/// `swucx_am_desc_reply_ep`, `swucx_am_desc_recv`, `swucx_am_desc_destroy`.
pub struct swucx_am_desc_t {
    magic: u64,
    desc: AmDesc,
    header: Vec<u8>,
    reply: Option<Endpoint>,
}
impl_handle!(swucx_am_desc_t, b"SWamdesc");

/// A new descriptor handle for a kept message.
pub(super) fn new_desc(message: QueuedAm) -> *mut swucx_am_desc_t {
    into_handle(swucx_am_desc_t {
        magic: swucx_am_desc_t::MAGIC,
        desc: message.payload,
        header: message.header,
        reply: message.reply_endpoint,
    })
}

/// An active-message handler: called with the message and the `user_data` given at
/// registration, inside progress on the progressing thread (on a MULTI worker progressed by
/// several threads, possibly on several at once). It must be short and must not block, wait or
/// progress; sending (e.g. a reply) is allowed.
pub type swucx_am_callback_t =
    Option<unsafe extern "C" fn(msg: *mut swucx_am_msg_t, user_data: *mut c_void)>;

/// `user_data` moves to whichever thread progresses; the C caller vouches for that.
struct UserData(*mut c_void);
// SAFETY: the C API documents that handlers run on the progressing thread with this pointer.
unsafe impl Send for UserData {}
// SAFETY: the C API documents that on a MULTI worker a handler may run on several progressing
// threads at once; the C caller makes its user_data fit for that.
unsafe impl Sync for UserData {}

impl UserData {
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Registers `callback` for active messages with `id`, replacing an earlier one; NULL removes
/// it (later messages with `id` are dropped). Register before traffic starts. Once this
/// returns, the earlier callback is not running on another thread and is not called again
/// (unless this is called from inside that callback, which then finishes), so its `user_data`
/// may be freed. From inside a callback, `SWUCX_ERR_BUSY` while another thread registers a
/// handler on the same worker (try again later).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_worker_set_am_handler(
    worker: *const swucx_worker_t,
    id: u16,
    callback: swucx_am_callback_t,
    user_data: *mut c_void,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        let Some(callback) = callback else {
            return status_of(worker.remove_am_handler(id));
        };
        let user_data = UserData(user_data);
        let result = worker.set_am_handler(id, move |msg: AmMessage<'_>| {
            let mut state = AmMsgState {
                magic: AmMsgState::MAGIC,
                msg: Some(msg),
            };
            let ptr = (&mut state as *mut AmMsgState<'_>).cast::<swucx_am_msg_t>();
            // SAFETY: a C function pointer the caller registered, called with a message that
            // lives until it returns and with its own user_data.
            unsafe { callback(ptr, user_data.get()) };
            // SAFETY: ptr is `state`, which is still alive; clearing the magic makes a message
            // pointer kept past the handler detectable while the stack slot is not reused.
            unsafe { std::ptr::write_volatile(&mut state.magic, 0) };
        });
        status_of(result)
    })
}

/// The live message behind `msg`, or the function's fallback.
macro_rules! try_msg {
    ($p:ident) => {
        // SAFETY: C handlers pass the message pointer they were given (valid during the
        // handler) or NULL; the helper checks NULL, alignment and the magic first.
        try_arg!(unsafe { handle_mut($p.cast::<AmMsgState<'static>>(), stringify!($p)) })
    };
}

/// The message header: writes its start to `*header_p` (NULL when empty) and its length to
/// `*length_p` (valid during the handler).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_header(
    msg: *mut swucx_am_msg_t,
    header_p: *mut *const c_void,
    length_p: *mut usize,
) -> swucx_status_t {
    boundary(|| {
        let state = try_msg!(msg);
        try_out!(header_p);
        try_out!(length_p);
        let Some(m) = state.msg.as_ref() else {
            return fail_with(SWUCX_ERR_INVALID_STATE, "message already received or kept");
        };
        write_out!(header_p, c_bytes(m.header()).cast());
        write_out!(length_p, m.header().len());
        SWUCX_OK
    })
}

/// The payload length in bytes (0 for a NULL or invalid message).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_length(msg: *mut swucx_am_msg_t) -> usize {
    boundary(|| try_msg!(msg).msg.as_ref().map_or(0, |m| m.len()))
}

/// True if the payload waits at the sender (rendezvous) and must be received into a buffer
/// with `swucx_am_msg_recv` (false for a NULL or invalid message).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_is_rndv(msg: *mut swucx_am_msg_t) -> bool {
    boundary(|| {
        try_msg!(msg)
            .msg
            .as_ref()
            .is_some_and(|m| m.is_rendezvous())
    })
}

/// The eager payload: writes its start to `*data_p` (NULL when empty; valid during the handler;
/// its length is `swucx_am_msg_length`). `SWUCX_ERR_INVALID_STATE` for a rendezvous message or
/// one already received or kept.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_data(
    msg: *mut swucx_am_msg_t,
    data_p: *mut *const c_void,
) -> swucx_status_t {
    boundary(|| {
        let state = try_msg!(msg);
        try_out!(data_p);
        match state.msg.as_ref().and_then(|m| m.data()) {
            Some(data) => {
                write_out!(data_p, c_bytes(data).cast());
                SWUCX_OK
            }
            None => fail_with(
                SWUCX_ERR_INVALID_STATE,
                "no eager payload (rendezvous, or already received or kept)",
            ),
        }
    })
}

/// The endpoint to reply on, when the sender used `SWUCX_AM_FLAG_REPLY` and the endpoint is one
/// of this worker's: writes a new endpoint handle to `*ep_p` (destroy it when done; it may be
/// kept past the handler). `SWUCX_ERR_NO_ELEM` if there is none.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_reply_ep(
    msg: *mut swucx_am_msg_t,
    ep_p: *mut *mut swucx_ep_t,
) -> swucx_status_t {
    boundary(|| {
        let state = try_msg!(msg);
        try_out!(ep_p);
        match state.msg.as_ref().and_then(|m| m.reply_endpoint()) {
            Some(ep) => {
                write_out!(ep_p, new_ep(ep));
                SWUCX_OK
            }
            None => fail_with(SWUCX_ERR_NO_ELEM, "message has no reply endpoint"),
        }
    })
}

/// Receives the payload into `length` bytes at `buffer` (at least `swucx_am_msg_length`; valid
/// and untouched until the request completes): a rendezvous payload lands there directly. Takes
/// the payload: later calls on `msg` fail with `SWUCX_ERR_INVALID_STATE`. On success writes a
/// request to `*req_p`. Do not wait for it inside the handler; poll it afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_recv(
    msg: *mut swucx_am_msg_t,
    buffer: *mut c_void,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let state = try_msg!(msg);
        let buf: RawBuf = raw_buf!(buffer, length);
        try_out!(req_p);
        let Some(m) = state.msg.take() else {
            return fail_with(SWUCX_ERR_INVALID_STATE, "message already received or kept");
        };
        hand_out(m.recv_into(buf).map(ReqState::One), req_p)
    })
}

/// As `swucx_am_msg_recv`, into `length` bytes at byte `offset` of the registered region `mem`
/// (a rendezvous payload lands there directly, with the region's memory handle).
/// `SWUCX_ERR_OUT_OF_RANGE` if the range is not inside the region.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_recv_mem(
    msg: *mut swucx_am_msg_t,
    mem: *const swucx_mem_t,
    offset: usize,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let state = try_msg!(msg);
        try_ref!(mem);
        try_out!(req_p);
        let buf = mem_buf!(mem, offset, length);
        let Some(m) = state.msg.take() else {
            return fail_with(SWUCX_ERR_INVALID_STATE, "message already received or kept");
        };
        hand_out(m.recv_into(buf).map(ReqState::Region), req_p)
    })
}

/// Keeps the message beyond the handler (no copy of a rendezvous or UCX-owned payload; the
/// header is copied): writes a new descriptor to `*desc_p`. Takes the payload from `msg`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_msg_keep(
    msg: *mut swucx_am_msg_t,
    desc_p: *mut *mut swucx_am_desc_t,
) -> swucx_status_t {
    boundary(|| {
        let state = try_msg!(msg);
        try_out!(desc_p);
        let Some(m) = state.msg.take() else {
            return fail_with(SWUCX_ERR_INVALID_STATE, "message already received or kept");
        };
        write_out!(
            desc_p,
            new_desc(QueuedAm {
                header: m.header().to_vec(),
                reply_endpoint: m.reply_endpoint(),
                payload: m.keep(),
            })
        );
        SWUCX_OK
    })
}

/// The kept payload's length (0 for a NULL or invalid handle).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_desc_length(desc: *const swucx_am_desc_t) -> usize {
    boundary(|| try_ref!(desc).desc.len())
}

/// True if the kept payload is still at the sender (rendezvous).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_desc_is_rndv(desc: *const swucx_am_desc_t) -> bool {
    boundary(|| try_ref!(desc).desc.is_rendezvous())
}

/// The kept message's header: writes its start to `*header_p` (NULL when empty) and its
/// length to `*length_p` (valid until the descriptor is received or destroyed).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_desc_header(
    desc: *const swucx_am_desc_t,
    header_p: *mut *const c_void,
    length_p: *mut usize,
) -> swucx_status_t {
    boundary(|| {
        let desc = try_ref!(desc);
        try_out!(header_p);
        try_out!(length_p);
        write_out!(header_p, c_bytes(&desc.header).cast());
        write_out!(length_p, desc.header.len());
        SWUCX_OK
    })
}

/// The endpoint to reply on, as `swucx_am_msg_reply_ep` (a new handle each call; destroy it
/// when done). `SWUCX_ERR_NO_ELEM` if the message has none.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_desc_reply_ep(
    desc: *const swucx_am_desc_t,
    ep_p: *mut *mut swucx_ep_t,
) -> swucx_status_t {
    boundary(|| {
        let desc = try_ref!(desc);
        try_out!(ep_p);
        match &desc.reply {
            Some(ep) => {
                write_out!(ep_p, new_ep(ep.clone()));
                SWUCX_OK
            }
            None => fail_with(SWUCX_ERR_NO_ELEM, "message has no reply endpoint"),
        }
    })
}

/// Receives the kept payload into `length` bytes at `buffer` (at least its length; valid and
/// untouched until the request completes). Consumes `desc`, also on failure (then released
/// unreceived). On success writes a request to `*req_p`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_desc_recv(
    desc: *mut swucx_am_desc_t,
    buffer: *mut c_void,
    length: usize,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        // Taken first, so that a failed call below still consumes it (dropped: released).
        let desc = try_take!(desc).desc;
        let buf: RawBuf = raw_buf!(buffer, length);
        try_out!(req_p);
        hand_out(desc.recv_into(buf).map(ReqState::One), req_p)
    })
}

/// Releases a kept payload without receiving it. NULL is a no-op. Using the handle afterwards, or
/// destroying it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while its
/// memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_desc_destroy(desc: *mut swucx_am_desc_t) {
    boundary(|| {
        if !desc.is_null() {
            drop(try_take!(desc));
        }
    })
}

/// `swucx_ep_am_send` flag: let the receiver reply (its handler gets `swucx_am_msg_reply_ep`).
pub const SWUCX_AM_FLAG_REPLY: u32 = 1 << 0;
/// `swucx_ep_am_send` flag: force the eager protocol.
pub const SWUCX_AM_FLAG_EAGER: u32 = 1 << 1;
/// `swucx_ep_am_send` flag: force the rendezvous protocol.
pub const SWUCX_AM_FLAG_RNDV: u32 = 1 << 2;

/// Sends active message `id` with `header_length` bytes of header and `length` bytes of payload.
/// Both buffers must stay valid until the request completes (UCX 1.13 does not copy the header
/// at send time). Large payloads go by rendezvous: the send completes once the receiver has
/// pulled them. `flags`: `SWUCX_AM_FLAG_*`. On success writes a request to `*req_p`. A header
/// longer than UCX's limit for the worker (its `max_am_header`, about 8 KiB over shared memory
/// and tcp) is `SWUCX_ERR_INVALID_PARAM`; put larger data in the payload.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_am_send(
    ep: *const swucx_ep_t,
    id: u16,
    header: *const c_void,
    header_length: usize,
    payload: *const c_void,
    length: usize,
    flags: u32,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let header_buf = raw_buf!(header, header_length);
        let payload_buf = raw_buf!(payload, length);
        try_out!(req_p);
        hand_out(
            ep.am_send(id, header_buf, payload_buf, am_flags(flags))
                .map(ReqState::Two),
            req_p,
        )
    })
}

/// Sends active message `id` within this call or not at all: `SWUCX_OK` once sent,
/// `SWUCX_ERR_NO_RESOURCE` when UCX cannot send it at once (nothing was sent and no error
/// message is recorded; send it with `swucx_ep_am_send`), or an error as for `swucx_ep_am_send`
/// (a closed or failed endpoint, a bad argument). Small eager messages go at once when the
/// transport has room (over shared memory about 100 bytes of header and payload);
/// `SWUCX_AM_FLAG_RNDV` is always refused. The buffers are read during the call only and may be
/// reused or freed when it returns (e.g. Go memory that is not pinned); no request. `flags`:
/// `SWUCX_AM_FLAG_*`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_am_send_now(
    ep: *const swucx_ep_t,
    id: u16,
    header: *const c_void,
    header_length: usize,
    payload: *const c_void,
    length: usize,
    flags: u32,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let header_buf = raw_buf!(header, header_length);
        let payload_buf = raw_buf!(payload, length);
        status_of_send_now(ep.am_send_now_raw(id, header_buf, payload_buf, am_flags(flags)))
    })
}

/// `SWUCX_AM_FLAG_*` bits as `AmFlags` (unknown bits are ignored).
fn am_flags(flags: u32) -> AmFlags {
    let mut am_flags = AmFlags::NONE;
    for (bit, flag) in [
        (SWUCX_AM_FLAG_REPLY, AmFlags::REPLY),
        (SWUCX_AM_FLAG_EAGER, AmFlags::EAGER),
        (SWUCX_AM_FLAG_RNDV, AmFlags::RNDV),
    ] {
        if flags & bit != 0 {
            am_flags = am_flags | flag;
        }
    }
    am_flags
}

/// As `swucx_ep_am_send`, with the payload `length` bytes at byte `offset` of the registered
/// region `mem` (UCX gets its memory handle: no registration-cache lookup, and a rendezvous
/// payload is read straight from the region). The header is a plain buffer, valid until the
/// request completes. `SWUCX_ERR_OUT_OF_RANGE` if the range is not inside the region.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ep_am_send_mem(
    ep: *const swucx_ep_t,
    id: u16,
    header: *const c_void,
    header_length: usize,
    mem: *const swucx_mem_t,
    offset: usize,
    length: usize,
    flags: u32,
    req_p: *mut *mut swucx_request_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        let header_buf = raw_buf!(header, header_length);
        try_ref!(mem);
        try_out!(req_p);
        let payload_buf = mem_buf!(mem, offset, length);
        hand_out(
            ep.am_send(id, header_buf, payload_buf, am_flags(flags))
                .map(ReqState::TwoRegion),
            req_p,
        )
    })
}
