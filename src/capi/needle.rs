//! `swucx_needle_server_t`: the needle-read server (docs/protocol.md) with the bytes supplied by
//! the host, for embedding in SeaweedFS's own volume server. The host registers one callback;
//! swucx decodes each READ request, checks the read JWT when configured, calls the callback on
//! one of the server's threads, and sends the reply the callback filled in.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::context::swucx_context_t;
use super::endpoint::parse_addr;
use super::status::{
    SWUCX_ERR_BUSY, SWUCX_ERR_INVALID_PARAM, SWUCX_ERR_NO_MEMORY, SWUCX_ERR_NULL_ARG, SWUCX_OK,
    swucx_status_t,
};
use super::{
    Handle, boundary, c_bytes, fail, fail_with, impl_handle, into_handle, try_out, try_ref,
    try_take, write_out,
};
use crate::Payload;
use crate::seaweed::client::MAX_PAYLOAD_LEN;
use crate::seaweed::protocol::{ReadReply, ReadRequest, Status};
use crate::seaweed::server::{NeedleServer, NeedleSource, ServerThread};
use crate::seaweed::{ReadKey, ServerStats};

/// Reply status: the payload holds the requested bytes.
pub const SWUCX_READ_OK: u8 = 0;
/// Reply status: no such needle in a volume the host holds (for a volume it does not hold,
/// `SWUCX_READ_NO_VOLUME`).
pub const SWUCX_READ_NOT_FOUND: u8 = 1;
/// Reply status: the needle exists with another cookie.
pub const SWUCX_READ_COOKIE_MISMATCH: u8 = 2;
/// Reply status: the needle was deleted.
pub const SWUCX_READ_DELETED: u8 = 3;
/// Reply status: the needle's TTL has passed.
pub const SWUCX_READ_EXPIRED: u8 = 4;
/// Reply status: the read is not allowed.
pub const SWUCX_READ_UNAUTHORIZED: u8 = 5;
/// Reply status: the range lies outside the data (set `data_size` to the data length).
pub const SWUCX_READ_BAD_RANGE: u8 = 6;
/// Reply status: the reply would be too large; the client reads smaller ranges.
pub const SWUCX_READ_TOO_LARGE: u8 = 7;
/// Reply status: overloaded; the client retries after a back-off.
pub const SWUCX_READ_BUSY: u8 = 8;
/// Reply status: the volume changed under the read; the client retries at once.
pub const SWUCX_READ_STALE: u8 = 9;
/// Reply status: a server-side failure; the client falls back to HTTP.
pub const SWUCX_READ_INTERNAL: u8 = 10;
/// Reply status: the host does not hold the volume; the client reads it over HTTP (clients of
/// protocol versions before 3 are told `SWUCX_READ_INTERNAL`).
pub const SWUCX_READ_NO_VOLUME: u8 = 13;

/// Whether a host's callback may answer `status` (UNKNOWN_VERSION and BAD_REQUEST are the
/// server's own).
fn host_status(status: u8) -> bool {
    status <= SWUCX_READ_INTERNAL || status == SWUCX_READ_NO_VOLUME
}

/// A READ request as the host's callback sees it. Valid only during the callback.
#[repr(C)]
pub struct swucx_read_request_t {
    /// The client's request id (swucx echoes it; informational).
    pub request_id: u64,
    /// The file id's volume id.
    pub volume_id: u32,
    /// The file id's cookie: the host must check it against the needle's.
    pub cookie: u32,
    /// The file id's needle id.
    pub needle_id: u64,
    /// First byte of the data to return.
    pub offset: u64,
    /// Bytes to return; 0 = to the end of the data.
    pub size: u64,
    /// Request flags (docs/protocol.md: bit 0 name, 1 mime, 2 stored bytes, 3 the client checks
    /// the CRC of whole large needles; a host that supplies the bytes may ignore it).
    pub flags: u16,
    /// The read JWT (not NUL-terminated; `jwt_length` bytes, possibly 0, then NULL). swucx already
    /// checked it when the server was given a read key.
    pub jwt: *const u8,
    /// Length of `jwt`.
    pub jwt_length: usize,
}

/// The reply the host's callback fills in with `swucx_read_reply_set` and, for an OK reply with
/// data, `swucx_read_reply_payload`. Valid only during the callback; a callback that sets
/// nothing answers `SWUCX_READ_INTERNAL`.
pub struct swucx_read_reply_t {
    magic: u64,
    /// The request's range, which an OK payload must match (`swucx_read_reply_payload`).
    offset: u64,
    size: u64,
    status: u8,
    data_size: u64,
    crc: u32,
    last_modified: u64,
    payload: Vec<u8>,
}
impl_handle!(swucx_read_reply_t, b"SWreadrp");

/// The host's read callback: answer `request` by filling `reply`. Called on one of the server's
/// threads (several at once with more than one), outside UCX callbacks (it may block on disk).
pub type swucx_needle_read_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        request: *const swucx_read_request_t,
        reply: *mut swucx_read_reply_t,
    ),
>;

/// A needle server: listens, accepts clients, and answers READ requests through the host's
/// callback on its serving threads. Destroy it to stop.
///
/// Methods: `swucx_needle_server_create`, `swucx_needle_server_port`,
/// `swucx_needle_server_stats`, `swucx_needle_server_destroy`.
pub struct swucx_needle_server_t {
    magic: u64,
    port: u16,
    stats: Arc<ServerStats>,
    /// The source the server's threads call: tells whether a destroy comes from its callback.
    source: Arc<CallbackSource>,
    thread: ServerThread,
}
impl_handle!(swucx_needle_server_t, b"SWneedle");

/// Room for replies by status code in `swucx_needle_server_stats_t` (codes are below it).
pub const SWUCX_READ_STATUS_SLOTS: usize = 32;

const _: () = assert!(Status::ALL.len() <= SWUCX_READ_STATUS_SLOTS);

/// A needle server's counters since it started (`swucx_needle_server_stats`), e.g. for the
/// host's metrics.
#[repr(C)]
pub struct swucx_needle_server_stats_t {
    /// Requests answered, by status code (`SWUCX_READ_*`, also the server's own refusals:
    /// UNKNOWN_VERSION 11, BAD_REQUEST 12); `replies[SWUCX_READ_OK]` are the reads served.
    /// Codes no status has are 0.
    pub replies: [u64; SWUCX_READ_STATUS_SLOTS],
    /// OK replies: their payload bytes, and how many were announced for a direct read (the
    /// client copies the payload out of this process itself).
    pub payload_bytes: u64,
    pub direct_replies: u64,
    /// Requests dropped unanswered: no readable request id, or their connection was far past
    /// its limit of unfinished replies.
    pub requests_dropped: u64,
    /// Client connections: open now; accepted, rejected at a connection limit (4096 open,
    /// 512 from one client host), and closed by the server (replies not taken in time, idle
    /// for 300 s, or at a stop) since it started.
    pub open_connections: u64,
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub connections_closed: u64,
}

thread_local! {
    /// The source whose host callback this thread is running (NULL outside one).
    static SERVING: Cell<*const CallbackSource> = const { Cell::new(std::ptr::null()) };
}

/// The host callback as a [`NeedleSource`].
struct CallbackSource {
    callback:
        unsafe extern "C" fn(*mut c_void, *const swucx_read_request_t, *mut swucx_read_reply_t),
    user_data: usize,
}

impl NeedleSource for CallbackSource {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        let c_request = swucx_read_request_t {
            request_id: request.request_id,
            volume_id: request.volume_id,
            cookie: request.cookie,
            needle_id: request.needle_id,
            offset: request.offset,
            size: request.size,
            flags: request.flags.bits(),
            jwt: c_bytes(&request.jwt),
            jwt_length: request.jwt.len(),
        };
        let mut reply = swucx_read_reply_t {
            magic: swucx_read_reply_t::MAGIC,
            offset: request.offset,
            size: request.size,
            status: SWUCX_READ_INTERNAL,
            data_size: 0,
            crc: 0,
            last_modified: 0,
            payload: Vec::new(),
        };
        let outer = SERVING.replace(self);
        // SAFETY: the host registered this callback for exactly these arguments; both pointers
        // are valid for the call and the reply is not touched by anyone else meanwhile.
        unsafe { (self.callback)(self.user_data as *mut c_void, &c_request, &mut reply) };
        SERVING.set(outer);
        reply.magic = 0;
        to_reply(request, reply)
    }
}

/// Checks what the host filled in and makes the protocol reply; inconsistent answers become
/// INTERNAL (logged), so a host bug never puts a malformed reply on the wire.
fn to_reply(request: &ReadRequest, reply: swucx_read_reply_t) -> (ReadReply, Payload) {
    let id = request.request_id;
    let status = match Status::from_code(reply.status) {
        Ok(s) if host_status(reply.status) => s,
        _ => {
            log::error!(
                "host read callback answered undefined status {}",
                reply.status
            );
            return (ReadReply::status(id, Status::Internal), Payload::default());
        }
    };
    let payload_len = reply.payload.len() as u64;
    if status != Status::Ok {
        if payload_len != 0 {
            log::error!("host read callback gave a payload with status {status:?}");
            return (ReadReply::status(id, Status::Internal), Payload::default());
        }
        let mut r = ReadReply::status(id, status);
        if matches!(status, Status::BadRange | Status::TooLarge) {
            r.data_size = reply.data_size;
        }
        return (r, Payload::default());
    }
    if payload_len_for(request.offset, request.size, reply.data_size) != Some(payload_len) {
        log::error!(
            "host read callback: payload of {payload_len} bytes for a request of {} bytes, data size {}",
            request.size,
            reply.data_size
        );
        return (ReadReply::status(id, Status::Internal), Payload::default());
    }
    // The CRC is passed on, not checked: the host read the needle itself (weed checks a
    // needle's CRC as it reads it), and of a compressed needle it covers the stored (gzip)
    // bytes, not the data the host returns.
    let r = ReadReply {
        data_size: reply.data_size,
        crc: reply.crc,
        last_modified: (reply.last_modified != 0).then_some(reply.last_modified),
        payload_len,
        ..ReadReply::status(id, Status::Ok)
    };
    (r, Payload::Owned(reply.payload))
}

/// The length an OK reply's payload must have for a request of `size` bytes (0: to the end)
/// at `offset` into data of `data_size` bytes; `None` when no length fits (the range is past
/// the end: the host should answer BAD_RANGE).
fn payload_len_for(offset: u64, size: u64, data_size: u64) -> Option<u64> {
    let len = match size {
        0 => data_size.checked_sub(offset)?,
        size => size,
    };
    (offset.checked_add(len)? <= data_size && len <= MAX_PAYLOAD_LEN).then_some(len)
}

/// Starts a needle server listening on `address` ("ip:port"; port 0 picks one, read it with
/// `swucx_needle_server_port`) that answers through `callback` (called with `user_data` on the
/// server's threads until the server is destroyed). `read_key` (NULL or "": none) makes it
/// require read JWTs signed with that key, as `weed volume` does with `[jwt.signing.read] key`;
/// requests that fail the check are refused without calling the callback. `threads` (0 counts
/// as 1, at most 256: `SWUCX_ERR_INVALID_PARAM`) is the number of serving threads, each with a UCX worker of its own, new connections
/// dealt to them in turn (as `swucx serve --threads`): with more than one, `callback` is called
/// from several threads at once. It keeps at most 4096 connections open (as `swucx serve`);
/// past that new ones are rejected. The context needs the AM feature and must not have streams
/// (`SWUCX_ERR_INVALID_PARAM`: any client could abort the process, see `SWUCX_FEATURE_STREAM`);
/// the default features are right.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_needle_server_create(
    context: *const swucx_context_t,
    address: *const c_char,
    callback: swucx_needle_read_cb,
    user_data: *mut c_void,
    read_key: *const c_char,
    threads: u32,
    server_p: *mut *mut swucx_needle_server_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        try_out!(server_p);
        let Some(callback) = callback else {
            return fail_with(SWUCX_ERR_NULL_ARG, "argument `callback` is NULL");
        };
        // SAFETY: address is NULL or a NUL-terminated string from the caller.
        let addr = match unsafe { parse_addr(address, "address") } {
            Ok(addr) => addr,
            Err(status) => return status,
        };
        let key = if read_key.is_null() {
            None
        } else {
            // SAFETY: read_key is a NUL-terminated string from the caller.
            match unsafe { super::c_str(read_key, "read_key") } {
                Ok("") => None,
                Ok(k) => Some(ReadKey::new(k)),
                Err(status) => return status,
            }
        };
        let source = Arc::new(CallbackSource {
            callback,
            user_data: user_data as usize,
        });
        let serving = Arc::clone(&source);
        let threads = usize::try_from(threads).unwrap_or(usize::MAX);
        let mut server = match NeedleServer::bind_source(context, source, addr)
            .and_then(|server| server.with_threads(threads))
        {
            Ok(server) => server,
            Err(e) => return fail(e),
        };
        if let Some(key) = key {
            server = server.with_read_key(key);
        }
        let port = match server.local_addr() {
            Ok(a) => a.port(),
            Err(e) => return fail(e),
        };
        let stats = server.stats();
        write_out!(
            server_p,
            into_handle(swucx_needle_server_t {
                magic: swucx_needle_server_t::MAGIC,
                port,
                stats,
                source: serving,
                thread: server.spawn(),
            })
        );
        SWUCX_OK
    })
}

/// The port the server listens on.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_needle_server_port(
    server: *const swucx_needle_server_t,
    port_p: *mut u16,
) -> swucx_status_t {
    boundary(|| {
        let server = try_ref!(server);
        try_out!(port_p);
        write_out!(port_p, server.port);
        SWUCX_OK
    })
}

/// Writes the server's counters to `*stats_p`, whose size the caller gives as `stats_size`
/// (`sizeof(swucx_needle_server_stats_t)` where it is compiled): the first `stats_size` bytes
/// of the structure are written, no more, so a program built against an older header (a
/// shorter structure) keeps working with a library that counts more. A `stats_size` below one
/// counter (8 bytes) is `SWUCX_ERR_INVALID_PARAM`. Any thread, any time until destroy.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_needle_server_stats(
    server: *const swucx_needle_server_t,
    stats_p: *mut swucx_needle_server_stats_t,
    stats_size: usize,
) -> swucx_status_t {
    boundary(|| {
        let server = try_ref!(server);
        try_out!(stats_p);
        if stats_size < std::mem::size_of::<u64>() {
            return fail_with(
                SWUCX_ERR_INVALID_PARAM,
                format!("stats_size {stats_size} holds no counter"),
            );
        }
        let counted = server.stats.snapshot();
        let mut replies = [0; SWUCX_READ_STATUS_SLOTS];
        replies[..counted.replies.len()].copy_from_slice(&counted.replies);
        let stats = swucx_needle_server_stats_t {
            replies,
            payload_bytes: counted.payload_bytes,
            direct_replies: counted.direct_replies,
            requests_dropped: counted.requests_dropped,
            open_connections: counted.open_connections,
            connections_accepted: counted.connections_accepted,
            connections_rejected: counted.connections_rejected,
            connections_closed: counted.connections_closed,
        };
        let n = stats_size.min(std::mem::size_of::<swucx_needle_server_stats_t>());
        // SAFETY: stats_p is non-NULL and, by this function's contract, writable for
        // stats_size bytes; `stats` is a local of at least n bytes; they do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping((&raw const stats).cast::<u8>(), stats_p.cast::<u8>(), n);
        }
        SWUCX_OK
    })
}

/// Stops the server: no new requests, the replies in flight finish (after 10 s, `REPLY_TIMEOUT`,
/// the connections still holding some are closed), its threads end (the callback is not called
/// after this returns). Returns `SWUCX_OK` (a failure the server ended with is logged); NULL is
/// a no-op. From inside the server's own callback, `SWUCX_ERR_BUSY` and nothing done: the stop
/// waits for the server's threads, the callback's among them. Using the handle afterwards, or
/// destroying it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while
/// its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_needle_server_destroy(
    server: *mut swucx_needle_server_t,
) -> swucx_status_t {
    boundary(|| {
        if server.is_null() {
            return SWUCX_OK;
        }
        if std::ptr::eq(SERVING.get(), Arc::as_ptr(&try_ref!(server).source)) {
            return fail_with(
                SWUCX_ERR_BUSY,
                "a needle server cannot be destroyed from its own callback",
            );
        }
        if let Err(e) = try_take!(server).thread.stop() {
            log::warn!("needle server: {e}");
        }
        SWUCX_OK
    })
}

/// Sets the reply's status (`SWUCX_READ_*`) and what it says of the needle: `data_size` (the
/// length of the whole data; for BAD_RANGE and TOO_LARGE the data length), `crc` (the needle's
/// stored CRC-32C) and `last_modified` (unix seconds, 0 for none). Call it inside the callback.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_read_reply_set(
    reply: *mut swucx_read_reply_t,
    status: u8,
    data_size: u64,
    crc: u32,
    last_modified: u64,
) -> swucx_status_t {
    boundary(|| {
        let reply = super::try_mut!(reply);
        if !host_status(status) {
            return fail_with(
                SWUCX_ERR_INVALID_PARAM,
                format!("undefined read status {status}"),
            );
        }
        reply.status = status;
        reply.data_size = data_size;
        reply.crc = crc;
        reply.last_modified = last_modified;
        SWUCX_OK
    })
}

/// Gives the callback a buffer of `length` bytes to write the payload into (`*buffer_p`,
/// swucx's memory, valid until the callback returns; the reply is sent from it; NULL for
/// `length` 0). A second call
/// replaces the first buffer. Call `swucx_read_reply_set` first: `length` must be the
/// requested size (or, for a request of size 0, the rest of the data from the offset: the
/// `data_size` given there less the offset), within the data and below 4 GiB; any other length
/// is `SWUCX_ERR_INVALID_PARAM` before anything is allocated, and `SWUCX_ERR_NO_MEMORY` when
/// `length` bytes cannot be allocated. On either error the reply keeps no buffer and answers
/// INTERNAL unless set again.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_read_reply_payload(
    reply: *mut swucx_read_reply_t,
    length: usize,
    buffer_p: *mut *mut u8,
) -> swucx_status_t {
    boundary(|| {
        let reply = super::try_mut!(reply);
        try_out!(buffer_p);
        if payload_len_for(reply.offset, reply.size, reply.data_size) != Some(length as u64) {
            reply.payload = Vec::new();
            reply.status = SWUCX_READ_INTERNAL;
            return fail_with(
                SWUCX_ERR_INVALID_PARAM,
                format!(
                    "a payload of {length} bytes for a request of {} bytes at offset {} (data size {})",
                    reply.size, reply.offset, reply.data_size
                ),
            );
        }
        let mut payload = Vec::new();
        if payload.try_reserve_exact(length).is_err() {
            reply.payload = Vec::new();
            reply.status = SWUCX_READ_INTERNAL;
            return fail_with(
                SWUCX_ERR_NO_MEMORY,
                format!("cannot allocate a payload of {length} bytes"),
            );
        }
        payload.resize(length, 0);
        reply.payload = payload;
        // NULL when empty, as `c_bytes` gives (not an empty Vec's dangling address).
        let start = if length == 0 {
            std::ptr::null_mut()
        } else {
            reply.payload.as_mut_ptr()
        };
        write_out!(buffer_p, start);
        SWUCX_OK
    })
}
