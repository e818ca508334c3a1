//! Tag-matched messages: `Endpoint::tag_send` and `Worker::tag_recv` (with a tag mask).

use crate::buffer::{Buf, BufMut, RawBuf, memh_for};
use crate::endpoint::{Endpoint, EpHandle};
use crate::request::{Callback, OpKind, OpParams, Request, finish_now, now_param};
use crate::status::Result;
use crate::sys;
use crate::worker::Worker;

impl Endpoint {
    /// Sends `buffer` with `tag`. Small messages go eagerly, large ones by rendezvous (the
    /// receiver pulls them straight into its buffer).
    #[inline(always)]
    pub fn tag_send<B: Buf>(&self, tag: u64, buffer: B) -> Result<Request<B>> {
        let handle = self.lock_handle(TAG_SEND)?;
        let params = OpParams::new(
            self.worker(),
            TAG_SEND,
            OpKind::SEND,
            Callback::Send,
            memh_for(&buffer),
            0,
        );
        // SAFETY: the request owns the buffer until UCX completes the send.
        let ptr = unsafe { post_tag_send(&handle, tag, &buffer, &params.param) };
        let len = buffer.len();
        Ok(handle.track(params.finish(self.worker(), ptr, buffer, len, None)?))
    }

    /// Sends `buffer` with `tag` within this call or not at all: [`Status::ERR_NO_RESOURCE`]
    /// when UCX cannot send it at once (nothing was sent; [`tag_send`](Endpoint::tag_send)
    /// can). Small messages go at once when the transport has room: up to a few dozen bytes
    /// over shared memory (UCX 1.13's short limit there; 100 B is already refused) and up to
    /// about 8 KiB over tcp. `buffer` is borrowed for the call only: no request, no copy.
    ///
    /// [`Status::ERR_NO_RESOURCE`]: crate::Status::ERR_NO_RESOURCE
    pub fn tag_send_now(&self, tag: u64, buffer: &[u8]) -> Result<()> {
        // SAFETY: tag_send_now_raw returns only once UCX is done with the send (UCX completes it
        // within the call or refuses it; `finish_now` aborts otherwise), so the borrowed slice
        // outlives its use of it (and a send does not write to it).
        let buffer = unsafe { RawBuf::new(buffer.as_ptr().cast_mut(), buffer.len()) };
        self.tag_send_now_raw(tag, buffer)
    }

    /// [`tag_send_now`](Endpoint::tag_send_now) of a raw buffer (the C ABI's).
    pub(crate) fn tag_send_now_raw(&self, tag: u64, buffer: RawBuf) -> Result<()> {
        let handle = self.lock_handle(TAG_SEND)?;
        let param = now_param(self.worker(), memh_for(&buffer), 0);
        // SAFETY: the send completes within the call or is refused (`now_param`), while the
        // caller's buffer is valid.
        finish_now(TAG_SEND, unsafe {
            post_tag_send(&handle, tag, &buffer, &param)
        })
    }
}

const TAG_SEND: &str = "ucp_tag_send_nbx";

/// `ucp_tag_send_nbx` of `buffer` on the endpoint `handle` holds.
///
/// # Safety
/// `buffer` must stay valid until UCX completes the send.
#[inline(always)]
unsafe fn post_tag_send<B: Buf>(
    handle: &EpHandle<'_>,
    tag: u64,
    buffer: &B,
    param: &sys::ucp_request_param_t,
) -> sys::ucs_status_ptr_t {
    // SAFETY: the endpoint is live under the lock; the caller keeps the buffer valid.
    unsafe {
        sys::ucp_tag_send_nbx(
            handle.raw(),
            buffer.as_ptr().cast(),
            buffer.len(),
            tag,
            param,
        )
    }
}

impl Worker {
    /// Receives the next message whose tag matches `tag` on the bits set in `mask`, from any
    /// endpoint of this worker. A message longer than the buffer fails with
    /// `ERR_MESSAGE_TRUNCATED`. Cancellable while unmatched ([`Request::cancel`]).
    #[inline(always)]
    pub fn tag_recv<B: BufMut>(&self, tag: u64, mask: u64, mut buffer: B) -> Result<Request<B>> {
        let mut params = OpParams::new(
            self,
            "ucp_tag_recv_nbx",
            OpKind::TAG_RECV,
            Callback::TagRecv,
            memh_for(&buffer),
            0,
        );
        // A message that already arrived (unexpected eager) could complete the receive at once,
        // and UCX 1.13 then reports neither length nor sender tag (RECV_INFO stays unwritten).
        // NO_IMM_CMPL makes UCX run the callback, which carries both, before returning.
        params.param.op_attr_mask |= sys::ucp_op_attr_t::UCP_OP_ATTR_FLAG_NO_IMM_CMPL.0;
        let ptr = {
            let _gate = self.gate();
            // SAFETY: the worker is live; the buffer is owned by the request until UCX completes
            // the receive.
            unsafe {
                sys::ucp_tag_recv_nbx(
                    self.handle(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    tag,
                    mask,
                    &params.param,
                )
            }
        };
        let len = buffer.len();
        params.finish(self, ptr, buffer, len, None)
    }
}
