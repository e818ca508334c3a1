//! Active messages: handlers by id on a worker, `Endpoint::am_send` with a header and a payload,
//! eager and rendezvous receive straight into a caller's buffer, and reply endpoints.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::BitOr;
use std::sync::{Arc, TryLockError, Weak};

use crate::buffer::{Buf, BufMut, RawBuf, memh_for};
use crate::endpoint::{Endpoint, EpHandle};
use crate::request::{Callback, OpKind, OpParams, Request, finish_now, now_param};
use crate::status::{Error, Result, Status, check};
use crate::sys;
use crate::worker::{CallbackGuard, Worker, WorkerInner};

/// Flags for [`Endpoint::am_send`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmFlags(u32);

impl AmFlags {
    /// No flags: UCX picks eager or rendezvous by size.
    pub const NONE: AmFlags = AmFlags(0);
    /// Let the receiver reply: its handler gets [`AmMessage::reply_endpoint`].
    pub const REPLY: AmFlags = AmFlags(sys::ucp_send_am_flags::UCP_AM_SEND_FLAG_REPLY.0);
    /// Force the eager protocol.
    pub const EAGER: AmFlags = AmFlags(sys::ucp_send_am_flags::UCP_AM_SEND_FLAG_EAGER.0);
    /// Force the rendezvous protocol (the receiver pulls the payload into its buffer).
    pub const RNDV: AmFlags = AmFlags(sys::ucp_send_am_flags::UCP_AM_SEND_FLAG_RNDV.0);
}

impl BitOr for AmFlags {
    type Output = AmFlags;
    fn bitor(self, rhs: AmFlags) -> AmFlags {
        AmFlags(self.0 | rhs.0)
    }
}

/// The closure type of an active-message handler.
type AmHandlerFn = dyn Fn(AmMessage<'_>) + Send + Sync;

/// A registered handler with what its trampoline needs. Owned by the worker.
pub(crate) struct AmHandlerSlot {
    worker: Weak<WorkerInner>,
    handler: Box<AmHandlerFn>,
}

/// An active message, seen inside its handler (which runs inside `progress`).
///
/// The header and eager data are valid only during the handler. To keep the payload, or to
/// receive a rendezvous payload into a buffer, call [`keep`](AmMessage::keep) or
/// [`recv_into`](AmMessage::recv_into); otherwise it is released when the handler returns (a
/// rendezvous sender then completes without transferring the payload).
pub struct AmMessage<'a> {
    worker: &'a Worker,
    header: &'a [u8],
    data: *mut libc::c_void,
    length: usize,
    attr: u64,
    reply_ep: sys::ucp_ep_h,
    kept: &'a Cell<bool>,
}

impl<'a> AmMessage<'a> {
    /// The message header.
    pub fn header(&self) -> &'a [u8] {
        self.header
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.length
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// True if the payload waits at the sender (rendezvous) and must be received into a buffer.
    pub fn is_rendezvous(&self) -> bool {
        self.attr & u64::from(sys::ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FLAG_RNDV.0) != 0
    }

    /// The eager payload, if it arrived with the message (not for rendezvous).
    pub fn data(&self) -> Option<&'a [u8]> {
        if self.is_rendezvous() {
            return None;
        }
        if self.length == 0 {
            return Some(&[]);
        }
        // SAFETY: for eager messages UCX passes `length` readable bytes valid during the handler.
        Some(unsafe { std::slice::from_raw_parts(self.data as *const u8, self.length) })
    }

    /// The endpoint to answer on, when the sender used [`AmFlags::REPLY`] and the endpoint is
    /// one of this worker's (accepted or connected) endpoints.
    pub fn reply_endpoint(&self) -> Option<Endpoint> {
        if self.attr & u64::from(sys::ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FIELD_REPLY_EP.0) == 0
            || self.reply_ep.is_null()
        {
            return None;
        }
        self.worker.endpoint_by_handle(self.reply_ep)
    }

    /// The worker the message arrived on.
    pub fn worker(&self) -> &'a Worker {
        self.worker
    }

    /// Keeps the payload beyond the handler: rendezvous and UCX-owned eager data stay with UCX
    /// (no copy), other eager data is copied.
    pub fn keep(self) -> AmDesc {
        let ucx_owned = self.is_rendezvous()
            || self.attr & u64::from(sys::ucp_am_recv_attr_t::UCP_AM_RECV_ATTR_FLAG_DATA.0) != 0;
        let kind = if ucx_owned {
            self.kept.set(true);
            DescKind::Ucx {
                desc: self.data as usize,
                rndv: self.is_rendezvous(),
            }
        } else {
            DescKind::Copied(self.data().unwrap_or_default().to_vec())
        };
        AmDesc {
            worker: self.worker.clone(),
            length: self.length,
            kind: Some(kind),
        }
    }

    /// Receives the payload into `buffer` (which must be at least [`len`](AmMessage::len) bytes):
    /// a rendezvous payload lands there directly (zero-copy over RDMA and cma).
    pub fn recv_into<B: BufMut>(self, buffer: B) -> Result<Request<B>> {
        match self.data() {
            // Eager data is valid until the handler returns: copy it, UCX releases it.
            Some(bytes) => copy_payload(bytes, buffer),
            None => self.keep().recv_into(buffer),
        }
    }
}

enum DescKind {
    Ucx { desc: usize, rndv: bool },
    Copied(Vec<u8>),
}

/// A kept AM payload: receive it with [`recv_into`](AmDesc::recv_into) (from any thread);
/// dropping it releases it. `Send`.
pub struct AmDesc {
    worker: Worker,
    length: usize,
    kind: Option<DescKind>,
}

impl AmDesc {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.length
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// True if the payload is still at the sender (rendezvous).
    pub fn is_rendezvous(&self) -> bool {
        matches!(self.kind, Some(DescKind::Ucx { rndv: true, .. }))
    }

    /// Copies an eager payload into the front of `dst` and releases it: its length, or `self`
    /// back untouched for a rendezvous payload or a `dst` shorter than the payload. No request
    /// is made (the C ABI's one-call receive).
    #[cfg(feature = "capi")]
    pub(crate) fn copy_eager(mut self, dst: &mut [u8]) -> std::result::Result<usize, AmDesc> {
        if dst.len() < self.length {
            return Err(self);
        }
        // SAFETY: dst is an exclusive slice of at least self.length bytes.
        unsafe { self.take_eager(dst.as_mut_ptr()) }.ok_or(self)
    }

    /// Copies an eager payload to `dst` and releases it; None (nothing taken) for a rendezvous
    /// payload. Through raw pointers, never a slice: `dst` may be memory others can reach (a
    /// region's clones, a peer's puts, a C caller's buffer).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `self.length` bytes that overlap neither UCX's nor our
    /// own copy of the payload.
    unsafe fn take_eager(&mut self, dst: *mut u8) -> Option<usize> {
        let src = match &self.kind {
            Some(DescKind::Copied(bytes)) => bytes.as_ptr(),
            // Kept eager data is the payload itself. UCX 1.13's ucp_am_recv_data_nbx copies it
            // but never returns the descriptor to its pool (each receive leaked one), so copy
            // here and release it.
            Some(DescKind::Ucx { desc, rndv: false }) => *desc as *const u8,
            _ => return None,
        };
        // SAFETY: src holds the payload's self.length bytes (our copy, or UCX's kept descriptor,
        // valid until released below); the caller vouches for dst.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, self.length) };
        if let Some(DescKind::Ucx { desc, .. }) = self.kind.take() {
            self.worker.release_am_data(desc as *mut libc::c_void);
        }
        Some(self.length)
    }

    /// Receives the payload into the first [`len`](AmDesc::len) bytes of `buffer`.
    /// A buffer shorter than the payload fails with `ERR_MESSAGE_TRUNCATED` (payload released).
    pub fn recv_into<B: BufMut>(mut self, mut buffer: B) -> Result<Request<B>> {
        check_room(self.length, &buffer)?;
        // SAFETY: the buffer is writable for buffer.len() >= self.length bytes (BufMut's
        // contract, checked above) and cannot overlap UCX's or our own copy of the payload.
        if let Some(copied) = unsafe { self.take_eager(buffer.as_mut_ptr()) } {
            return Ok(Request::ready(buffer, copied));
        }
        match self.kind.take() {
            Some(DescKind::Ucx { desc, rndv: true }) => {
                let params = OpParams::new(
                    &self.worker,
                    "ucp_am_recv_data_nbx",
                    OpKind::OTHER_RECV,
                    Callback::Length,
                    memh_for(&buffer),
                    0,
                );
                let ptr = {
                    let _gate = self.worker.gate();
                    // SAFETY: desc is the live descriptor UCX handed to the handler (kept with
                    // UCS_INPROGRESS); UCX takes it over here even on failure. The request owns
                    // the buffer until completion.
                    unsafe {
                        sys::ucp_am_recv_data_nbx(
                            self.worker.handle(),
                            desc as *mut libc::c_void,
                            buffer.as_mut_ptr().cast(),
                            self.length,
                            &params.param,
                        )
                    }
                };
                let length = self.length;
                params.finish(&self.worker, ptr, buffer, length, Some(length))
            }
            // Only a payload taken already has no kind; recv_into consumes the desc.
            _ => Err(Error::with_detail(
                "ucp_am_recv_data_nbx",
                Status::ERR_INVALID_PARAM,
                "the payload was received already",
            )),
        }
    }
}

impl Drop for AmDesc {
    fn drop(&mut self) {
        if let Some(DescKind::Ucx { desc, .. }) = self.kind.take() {
            // A kept descriptor not handed to ucp_am_recv_data_nbx, released once.
            self.worker.release_am_data(desc as *mut libc::c_void);
        }
    }
}

/// Fails with `ERR_MESSAGE_TRUNCATED` when `buffer` is shorter than a `length`-byte payload.
fn check_room<B: BufMut>(length: usize, buffer: &B) -> Result<()> {
    if buffer.len() < length {
        return Err(Error::with_detail(
            "ucp_am_recv_data_nbx",
            Status::ERR_MESSAGE_TRUNCATED,
            format!("payload {length} bytes, buffer {}", buffer.len()),
        ));
    }
    Ok(())
}

/// Copies an eager payload into the front of `buffer`: a request that is already complete.
fn copy_payload<B: BufMut>(bytes: &[u8], mut buffer: B) -> Result<Request<B>> {
    check_room(bytes.len(), &buffer)?;
    // SAFETY: the buffer is writable for at least bytes.len() (checked above) and cannot
    // overlap UCX's or our own copy of the payload.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.as_mut_ptr(), bytes.len()) };
    Ok(Request::ready(buffer, bytes.len()))
}

/// The handler of ids nobody registered: drops the message (UCX releases its data, and a
/// rendezvous sender completes without a transfer).
unsafe extern "C" fn drop_unhandled_am(
    arg: *mut libc::c_void,
    _header: *const libc::c_void,
    _header_length: usize,
    _data: *mut libc::c_void,
    length: usize,
    _param: *const sys::ucp_am_recv_param_t,
) -> sys::ucs_status_t {
    log::debug!(
        "active message id {} ({length} bytes) has no handler; dropped",
        arg as usize
    );
    sys::ucs_status_t::UCS_OK
}

unsafe extern "C" fn am_callback(
    arg: *mut libc::c_void,
    header: *const libc::c_void,
    header_length: usize,
    data: *mut libc::c_void,
    length: usize,
    param: *const sys::ucp_am_recv_param_t,
) -> sys::ucs_status_t {
    // SAFETY: arg is a slot of the worker's handler table, kept as long as UCX may call with
    // it: until its id is registered again (UCX registers and calls handlers under the
    // worker's lock, so none runs then; one replaced from inside a callback is kept) or the
    // worker is destroyed.
    let slot = unsafe { &*(arg as *const AmHandlerSlot) };
    // Handlers run inside a call on the worker (progress), made through a live `Worker`, so the
    // worker outlives this call whenever any strong reference exists; none does only while the
    // worker is being destroyed, and then the message is dropped. A borrowed `Worker` instead of
    // an upgraded one saves two atomic updates per message.
    if slot.worker.strong_count() == 0 {
        return sys::ucs_status_t::UCS_OK;
    }
    // SAFETY: the pointer comes from a Weak of a live Arc (checked above; kept alive by the
    // caller of progress); ManuallyDrop leaves the count untouched.
    let worker =
        std::mem::ManuallyDrop::new(Worker(unsafe { Arc::from_raw(slot.worker.as_ptr()) }));
    // SAFETY: UCX passes a valid param and header_length readable header bytes for the call.
    let (param, header) = unsafe {
        let header = if header_length == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(header as *const u8, header_length)
        };
        (&*param, header)
    };
    let kept = Cell::new(false);
    let message = AmMessage {
        worker: &worker,
        header,
        data,
        length,
        attr: param.recv_attr,
        reply_ep: param.reply_ep,
        kept: &kept,
    };
    let _guard = CallbackGuard::enter();
    let handler = &slot.handler;
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(message))).is_err() {
        log::error!("active message handler panicked; message dropped");
    }
    if kept.get() {
        sys::ucs_status_t::UCS_INPROGRESS
    } else {
        sys::ucs_status_t::UCS_OK
    }
}

impl Worker {
    /// Gives every active-message id (all 65,536) a handler that drops the message, until a
    /// real one replaces it. UCX 1.13 mishandles an active message that reaches a worker with no
    /// handler for its id: it reads the id's slot without checking that the table holds it (a
    /// worker that never registered a handler crashed reading a NULL table; an id past the
    /// table's end is read from whatever memory follows, and ids from about 19,000 up crashed
    /// the receiver), and dropping such messages corrupted the heap (a later callback jumped
    /// into freed memory). A client that sends its request to a peer that does not speak the
    /// protocol is exactly that, and any peer that can connect can send any id. Registered
    /// from the highest id down, so UCX sizes its table once (about 1.5 MiB per worker).
    pub(crate) fn reserve_am_ids(&self) -> Result<()> {
        for id in (0..=u16::MAX).rev() {
            // SAFETY: the callback needs no state (arg is the id).
            unsafe {
                self.register_am_callback(
                    id,
                    Some(drop_unhandled_am),
                    usize::from(id) as *mut libc::c_void,
                )?
            };
        }
        Ok(())
    }

    /// Makes UCX call `cb` with `arg` for whole active messages with `id`.
    ///
    /// # Safety
    /// `arg` must stay valid for `cb` until the worker is destroyed or the id is registered
    /// again.
    unsafe fn register_am_callback(
        &self,
        id: u16,
        cb: sys::ucp_am_recv_callback_t,
        arg: *mut libc::c_void,
    ) -> Result<()> {
        let params = sys::ucp_am_handler_param_t {
            field_mask: u64::from(
                sys::ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_ID.0
                    | sys::ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_FLAGS.0
                    | sys::ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_CB.0
                    | sys::ucp_am_handler_param_field::UCP_AM_HANDLER_PARAM_FIELD_ARG.0,
            ),
            id: u32::from(id),
            flags: sys::ucp_am_cb_flags::UCP_AM_FLAG_WHOLE_MSG.0,
            cb,
            arg,
        };
        // SAFETY: the worker is live; the caller keeps arg valid for cb.
        check("ucp_worker_set_am_recv_handler", unsafe {
            sys::ucp_worker_set_am_recv_handler(self.handle(), &params)
        })
    }

    /// Registers `handler` for active messages with `id`, replacing an earlier one: once this
    /// returns, the earlier handler is not running on any other thread and is not called again
    /// (UCX calls handlers under the worker's lock, which registering takes too; on a
    /// [`new_serialized`](Worker::new_serialized) worker, because its caller serializes), and it
    /// is dropped then (kept until the worker goes when replaced from inside a callback). It runs
    /// inside [`progress`](Worker::progress) on the progressing thread (on a MULTI worker, on
    /// several threads at once if several progress), so it must be short and must not block;
    /// sending (e.g. a reply) from it is allowed. Register before traffic starts (until then,
    /// and for every id without a handler, messages are dropped). The worker keeps the handler
    /// until the id is registered again or the worker goes: a handler that holds a clone of
    /// this worker or of an endpoint on it keeps them alive (endpoints open, the worker never
    /// destroyed); reply with [`AmMessage::reply_endpoint`] (sent with [`AmFlags::REPLY`]) or
    /// hold a [`Weak`](std::sync::Weak).
    pub fn set_am_handler(
        &self,
        id: u16,
        handler: impl Fn(AmMessage<'_>) + Send + Sync + 'static,
    ) -> Result<()> {
        let slot = Arc::new(AmHandlerSlot {
            worker: self.downgrade(),
            handler: Box::new(handler),
        });
        let arg = Arc::as_ptr(&slot) as *mut libc::c_void;
        // SAFETY: the table keeps the slot until its id is registered again or the worker goes.
        unsafe { self.install_am_handler(id, Some(am_callback), arg, Some(slot)) }
    }

    /// Removes the handler of `id` (as [`set_am_handler`](Worker::set_am_handler) replaces
    /// one): later messages with `id` are dropped.
    pub fn remove_am_handler(&self, id: u16) -> Result<()> {
        // SAFETY: the callback needs no state (arg is the id). Not a NULL callback: UCX 1.13
        // mishandles messages for an id without one (`reserve_am_ids`).
        unsafe {
            self.install_am_handler(
                id,
                Some(drop_unhandled_am),
                usize::from(id) as *mut libc::c_void,
                None,
            )
        }
    }

    /// Makes UCX call `cb` with `arg` for `id` and records `slot` as its handler, as one step
    /// under the handler table's lock; the handler it replaces is dropped after the lock. A
    /// registration from inside a callback holds UCX's worker lock, which a thread holding the
    /// table's lock may be waiting for: it only tries the table's lock (`ERR_BUSY` while another
    /// thread registers on this worker).
    ///
    /// # Safety
    /// As for `register_am_callback`; `arg` may point into `slot`.
    unsafe fn install_am_handler(
        &self,
        id: u16,
        cb: sys::ucp_am_recv_callback_t,
        arg: *mut libc::c_void,
        slot: Option<Arc<AmHandlerSlot>>,
    ) -> Result<()> {
        let mut handlers = if crate::worker::in_callback() {
            match self.0.am_handlers.try_lock() {
                Ok(handlers) => handlers,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::with_detail(
                        "ucp_worker_set_am_recv_handler",
                        Status::ERR_BUSY,
                        "another thread is registering an active-message handler on this worker",
                    ));
                }
            }
        } else {
            self.0.am_handlers.lock().unwrap_or_else(|e| e.into_inner())
        };
        // SAFETY: the caller's contract; the table keeps `slot` (arg's target) from here on.
        unsafe { self.register_am_callback(id, cb, arg)? };
        let replaced = handlers.replace(id, slot);
        drop(handlers);
        drop(replaced); // after the lock: what it holds may call into UCX as it goes
        Ok(())
    }
}

/// The handlers registered on a worker, by id, and those replaced from inside a callback
/// (which may still be running them), kept until the worker goes.
#[derive(Default)]
pub(crate) struct AmHandlers {
    by_id: HashMap<u16, Arc<AmHandlerSlot>>,
    retired: Vec<Arc<AmHandlerSlot>>,
}

impl AmHandlers {
    /// Records `slot` as `id`'s handler after UCX switched to it. Returns the one it replaced,
    /// for the caller to drop, unless this thread is inside a callback (maybe that handler's):
    /// then it is retired (kept).
    fn replace(&mut self, id: u16, slot: Option<Arc<AmHandlerSlot>>) -> Option<Arc<AmHandlerSlot>> {
        let old = match slot {
            Some(slot) => self.by_id.insert(id, slot),
            None => self.by_id.remove(&id),
        };
        match old {
            Some(old) if crate::worker::in_callback() => {
                self.retired.push(old);
                None
            }
            old => old,
        }
    }
}

impl Endpoint {
    /// Sends an active message `id` with `header` and `payload`. Both stay owned by the request
    /// until UCX completes the send (on UCX 1.13 the header is not copied at send time).
    /// Large payloads go by rendezvous: the send completes once the receiver has pulled them.
    #[inline(always)]
    pub fn am_send<H: Buf, B: Buf>(
        &self,
        id: u16,
        header: H,
        payload: B,
        flags: AmFlags,
    ) -> Result<Request<(H, B)>> {
        check_am_send(self.worker(), header.len(), flags)?;
        let handle = self.lock_handle(AM_SEND)?;
        let params = OpParams::new(
            self.worker(),
            AM_SEND,
            OpKind::SEND,
            Callback::Send,
            memh_for(&payload),
            flags.0,
        );
        // SAFETY: the request owns header and payload until UCX completes the send.
        let ptr = unsafe { post_am_send(&handle, id, &header, &payload, &params.param) };
        let len = payload.len();
        Ok(handle.track(params.finish(self.worker(), ptr, (header, payload), len, None)?))
    }

    /// Sends an active message within this call or not at all: [`Status::ERR_NO_RESOURCE`] when
    /// UCX cannot send it at once (nothing was sent; [`am_send`](Endpoint::am_send) can). Small
    /// eager messages go at once when the transport has room (as for
    /// [`tag_send_now`](Endpoint::tag_send_now): a few dozen bytes over shared memory, about 8
    /// KiB over tcp). `header` and `payload` are
    /// borrowed for the call only: no request, no copy.
    pub fn am_send_now(
        &self,
        id: u16,
        header: &[u8],
        payload: &[u8],
        flags: AmFlags,
    ) -> Result<()> {
        // SAFETY: am_send_now_raw returns only once UCX is done with the send (UCX completes it
        // within the call or refuses it; `finish_now` aborts otherwise), so the borrowed slices
        // outlive its use of them (and a send does not write to them).
        let (header, payload) = unsafe {
            (
                RawBuf::new(header.as_ptr().cast_mut(), header.len()),
                RawBuf::new(payload.as_ptr().cast_mut(), payload.len()),
            )
        };
        self.am_send_now_raw(id, header, payload, flags)
    }

    /// [`am_send_now`](Endpoint::am_send_now) of raw buffers (the C ABI's).
    pub(crate) fn am_send_now_raw(
        &self,
        id: u16,
        header: RawBuf,
        payload: RawBuf,
        flags: AmFlags,
    ) -> Result<()> {
        check_am_send(self.worker(), header.len(), flags)?;
        let handle = self.lock_handle(AM_SEND)?;
        let param = now_param(self.worker(), memh_for(&payload), flags.0);
        // SAFETY: the send completes within the call or is refused (`now_param`), while the
        // caller's buffers are valid.
        finish_now(AM_SEND, unsafe {
            post_am_send(&handle, id, &header, &payload, &param)
        })
    }
}

const AM_SEND: &str = "ucp_am_send_nbx";

/// `ERR_INVALID_PARAM` for a send UCX would abort on or decide silently: a header longer than
/// the worker's limit ([`Worker::max_am_header`]; UCX 1.13 aborts the process), or flags that
/// ask for both the eager and the rendezvous protocol.
#[inline(always)]
fn check_am_send(worker: &Worker, header_length: usize, flags: AmFlags) -> Result<()> {
    if let Some(limit) = worker.am_header_limit()
        && header_length > limit
    {
        return Err(Error::with_detail(
            AM_SEND,
            Status::ERR_INVALID_PARAM,
            format!(
                "header of {header_length} bytes; this worker sends at most {limit} (max_am_header)"
            ),
        ));
    }
    let both = AmFlags::EAGER.0 | AmFlags::RNDV.0;
    if flags.0 & both == both {
        return Err(Error::with_detail(
            AM_SEND,
            Status::ERR_INVALID_PARAM,
            "both the eager and the rendezvous protocol asked for",
        ));
    }
    Ok(())
}

/// `ucp_am_send_nbx` of `header` and `payload` on the endpoint `handle` holds.
///
/// # Safety
/// `header` and `payload` must stay valid until UCX completes the send.
#[inline(always)]
unsafe fn post_am_send<H: Buf, B: Buf>(
    handle: &EpHandle<'_>,
    id: u16,
    header: &H,
    payload: &B,
    param: &sys::ucp_request_param_t,
) -> sys::ucs_status_ptr_t {
    // SAFETY: the endpoint is live under the lock; the caller keeps the buffers valid.
    unsafe {
        sys::ucp_am_send_nbx(
            handle.raw(),
            u32::from(id),
            header.as_ptr().cast(),
            header.len(),
            payload.as_ptr().cast(),
            payload.len(),
            param,
        )
    }
}
