//! `swucx_am_queue_t`: the active messages of one id, queued until a thread takes them.

use super::am::{new_desc, swucx_am_desc_t};
use super::engine::{swucx_engine_t, swucx_signal_t, timeout};
use super::request::wait_args;
use super::status::{
    SWUCX_ERR_NO_MESSAGE, SWUCX_ERR_TIMED_OUT, SWUCX_INPROGRESS, SWUCX_OK, swucx_status_t,
};
use super::worker::swucx_worker_t;
use super::{
    Handle, boundary, c_bytes_mut, fail, fail_with, impl_handle, into_handle, try_arg, try_out,
    try_ref, try_take, write_out,
};
use std::ffi::c_void;

use super::endpoint::{new_ep, swucx_ep_t};
use crate::{AmQueue, Engine, QueuedAm};

/// The queue of the active messages with one id on a worker: each message waits in it (header
/// copied, payload kept) until a thread takes it with `swucx_engine_am_recv` (waiting as
/// `swucx_engine_wait_signals` does) or `swucx_am_queue_try_recv`, in arrival order. For threads
/// that wait for their next message, as for a tag receive, with no code of theirs inside
/// progress; a handler (`swucx_worker_set_am_handler`) is for code that reacts to each message
/// inside progress. Any thread; any number of threads may take from one queue.
///
/// Methods: `swucx_am_queue_create`, `swucx_engine_am_recv`, `swucx_engine_am_recv_into`,
/// `swucx_am_queue_try_recv`,
/// `swucx_am_queue_length`, `swucx_am_queue_destroy`.
pub struct swucx_am_queue_t {
    magic: u64,
    queue: AmQueue,
}
impl_handle!(swucx_am_queue_t, b"SWamqueu");

/// Queues the active messages with `id` that reach `worker` (replacing the id's handler;
/// registered before traffic starts): writes the new queue to `*queue_p`. The queue
/// is unbounded.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_queue_create(
    worker: *const swucx_worker_t,
    id: u16,
    queue_p: *mut *mut swucx_am_queue_t,
) -> swucx_status_t {
    boundary(|| {
        let worker = &try_ref!(worker).worker;
        try_out!(queue_p);
        match AmQueue::new(worker, id) {
            Ok(queue) => {
                write_out!(
                    queue_p,
                    into_handle(swucx_am_queue_t {
                        magic: swucx_am_queue_t::MAGIC,
                        queue,
                    })
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Takes the oldest message from `queue`, which must be on the engine's worker
/// (`SWUCX_ERR_INVALID_PARAM` otherwise: the engine progresses no other), waiting for it: spins
/// driving progress, then sleeps until a message arrives, `timeout_ms` passes (negative: no
/// limit) or one of the `count` signals in `signals` is raised. Writes the message to
/// `*desc_p` (read its header and reply endpoint, receive its payload with
/// `swucx_am_desc_recv`) and returns `SWUCX_OK`; `SWUCX_INPROGRESS` when a signal ended the
/// wait, `SWUCX_ERR_TIMED_OUT` when the time did. `flags`: 0 or `SWUCX_WAIT_NO_SPIN`; `signals`
/// as for `swucx_engine_wait_signals`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_am_recv(
    engine: *const swucx_engine_t,
    queue: *const swucx_am_queue_t,
    timeout_ms: i64,
    flags: u32,
    signals: *const *const swucx_signal_t,
    count: usize,
    desc_p: *mut *mut swucx_am_desc_t,
) -> swucx_status_t {
    boundary(|| {
        let engine = &try_ref!(engine).engine;
        let queue = &try_ref!(queue).queue;
        try_out!(desc_p);
        match wait_next(engine, queue, timeout_ms, flags, signals, count) {
            Ok(message) => {
                write_out!(desc_p, new_desc(message));
                SWUCX_OK
            }
            Err(status) => status,
        }
    })
}

/// The wait of `swucx_engine_am_recv[_into]`: the message, or the status to return.
fn wait_next(
    engine: &Engine,
    queue: &AmQueue,
    timeout_ms: i64,
    flags: u32,
    signals: *const *const swucx_signal_t,
    count: usize,
) -> Result<QueuedAm, swucx_status_t> {
    let (spin, refs) = wait_args(flags, signals, count, queue.is_on(engine.worker()))?;
    match engine.am_recv_with(queue, timeout(timeout_ms), refs.get(), spin) {
        Some(message) => Ok(message),
        None if refs.get().iter().any(|s| s.is_raised()) => Err(SWUCX_INPROGRESS),
        None => Err(fail_with(
            SWUCX_ERR_TIMED_OUT,
            "active-message receive timed out",
        )),
    }
}

/// What `swucx_engine_am_recv_into` took.
#[repr(C)]
pub struct swucx_am_recv_info_t {
    /// The payload's length.
    pub length: usize,
    /// The header's length.
    pub header_length: usize,
    /// NULL when the header and the payload were copied into the caller's buffers; else the
    /// message, not taken apart (its payload comes by rendezvous, or the payload or the header
    /// is longer than its buffer): read it and receive its payload with `swucx_am_desc_*`, or
    /// destroy it.
    pub desc: *mut swucx_am_desc_t,
    /// The endpoint to reply on (a new handle: destroy it), or NULL when the sender asked for
    /// none.
    pub reply_ep: *mut swucx_ep_t,
}

/// `swucx_engine_am_recv` and the usual next steps in one call, for small messages: waits as
/// it does for the next message in `queue`, then copies its header into `header_capacity`
/// bytes at `header` and its eager payload into `capacity` bytes at `buffer` (either may be
/// NULL when its capacity is 0) and fills `*info`. A message that does not fit, or whose
/// payload comes by rendezvous, is handed over whole in `info->desc`. Returns `SWUCX_OK` when a
/// message was taken; `SWUCX_INPROGRESS` (signalled) and `SWUCX_ERR_TIMED_OUT` as
/// `swucx_engine_am_recv` (`*info` untouched).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn swucx_engine_am_recv_into(
    engine: *const swucx_engine_t,
    queue: *const swucx_am_queue_t,
    timeout_ms: i64,
    flags: u32,
    signals: *const *const swucx_signal_t,
    count: usize,
    header: *mut c_void,
    header_capacity: usize,
    buffer: *mut c_void,
    capacity: usize,
    info: *mut swucx_am_recv_info_t,
) -> swucx_status_t {
    boundary(|| {
        let engine = &try_ref!(engine).engine;
        let queue = &try_ref!(queue).queue;
        // SAFETY: the caller passes `header_capacity` writable bytes at `header` and `capacity`
        // at `buffer` (either NULL when its capacity is 0), which nothing else uses during the
        // call.
        let header = try_arg!(unsafe { c_bytes_mut(header, header_capacity, "header") });
        // SAFETY: as for `header`.
        let buffer = try_arg!(unsafe { c_bytes_mut(buffer, capacity, "buffer") });
        try_out!(info);
        let message = match wait_next(engine, queue, timeout_ms, flags, signals, count) {
            Ok(message) => message,
            Err(status) => return status,
        };
        let QueuedAm {
            header: head,
            payload,
            reply_endpoint,
        } = message;
        let (length, header_length) = (payload.len(), head.len());
        let reply_ep = reply_endpoint.clone().map_or(std::ptr::null_mut(), new_ep);
        let untaken = if header_length <= header.len() {
            payload.copy_eager(buffer).err()
        } else {
            Some(payload)
        };
        let desc = match untaken {
            None => {
                header[..header_length].copy_from_slice(&head);
                std::ptr::null_mut()
            }
            Some(payload) => new_desc(QueuedAm {
                header: head,
                payload,
                reply_endpoint,
            }),
        };
        write_out!(
            info,
            swucx_am_recv_info_t {
                length,
                header_length,
                desc,
                reply_ep,
            }
        );
        SWUCX_OK
    })
}

/// Takes the oldest message from `queue` if one is there, without waiting or progressing:
/// writes it to `*desc_p` and returns `SWUCX_OK`, else `SWUCX_ERR_NO_MESSAGE`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_queue_try_recv(
    queue: *const swucx_am_queue_t,
    desc_p: *mut *mut swucx_am_desc_t,
) -> swucx_status_t {
    boundary(|| {
        let queue = &try_ref!(queue).queue;
        try_out!(desc_p);
        match queue.try_recv() {
            Some(message) => {
                write_out!(desc_p, new_desc(message));
                SWUCX_OK
            }
            None => SWUCX_ERR_NO_MESSAGE,
        }
    })
}

/// The number of messages waiting in `queue` (0 for a NULL or invalid handle).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_queue_length(queue: *const swucx_am_queue_t) -> usize {
    boundary(|| try_ref!(queue).queue.len())
}

/// Destroys the queue: the messages still in it are released, and later ones with its id are
/// dropped. No wait may use it any more. NULL is a no-op. Using the handle afterwards, or
/// destroying it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while its
/// memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_am_queue_destroy(queue: *mut swucx_am_queue_t) {
    boundary(|| {
        if !queue.is_null() {
            drop(try_take!(queue));
        }
    })
}
