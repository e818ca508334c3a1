//! Tag-matched messages: `Endpoint::tag_send` and `Worker::tag_recv` (with a tag mask).

use crate::buffer::{Buf, BufMut, memh_for};
use crate::endpoint::Endpoint;
use crate::request::{Callback, OpKind, OpParams, Request};
use crate::status::Result;
use crate::sys;
use crate::worker::Worker;

impl Endpoint {
    /// Sends `buffer` with `tag`. Small messages go eagerly, large ones by rendezvous (the
    /// receiver pulls them straight into its buffer).
    #[inline(always)]
    pub fn tag_send<B: Buf>(&self, tag: u64, buffer: B) -> Result<Request<B>> {
        let handle = self.lock_handle("ucp_tag_send_nbx")?;
        let params = OpParams::new(
            self.worker(),
            "ucp_tag_send_nbx",
            OpKind::SEND,
            Callback::Send,
            memh_for(&buffer),
            0,
        );
        // SAFETY: the endpoint is live under the lock; the buffer is owned by the request until
        // UCX completes the send.
        let ptr = unsafe {
            sys::ucp_tag_send_nbx(
                handle.raw(),
                buffer.as_ptr().cast(),
                buffer.len(),
                tag,
                &params.param,
            )
        };
        drop(handle);
        let len = buffer.len();
        Ok(self.track(params.finish(self.worker(), ptr, buffer, len, None)?))
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
