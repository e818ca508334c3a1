//! Byte streams on an endpoint: `Endpoint::stream_send` / `stream_recv`.
//!
//! Streams are off unless a context asks for them ([`Features::stream`]): UCX 1.13 aborts a
//! process with streams on that receives an empty stream message, which any peer that can
//! connect may send. Enable them only where every peer is trusted.
//!
//! [`Features::stream`]: crate::Features::stream

use crate::buffer::{Buf, BufMut, memh_for};
use crate::endpoint::Endpoint;
use crate::request::{Callback, OpKind, OpParams, Request};
use crate::status::{Error, Result, Status};
use crate::sys;

impl Endpoint {
    /// Sends `buffer` on the endpoint's byte stream. An empty buffer is refused
    /// (`ERR_INVALID_PARAM`): UCX 1.13 aborts the receiving process on an empty stream message.
    pub fn stream_send<B: Buf>(&self, buffer: B) -> Result<Request<B>> {
        if buffer.len() == 0 {
            return Err(Error::with_detail(
                "ucp_stream_send_nbx",
                Status::ERR_INVALID_PARAM,
                "an empty stream message (UCX 1.13 aborts the process that receives one)",
            ));
        }
        let handle = self.lock_handle("ucp_stream_send_nbx")?;
        let params = OpParams::new(
            self.worker(),
            "ucp_stream_send_nbx",
            OpKind::SEND,
            Callback::Send,
            memh_for(&buffer),
            0,
        );
        // SAFETY: the endpoint is live under the lock; the request owns the buffer.
        let ptr = unsafe {
            sys::ucp_stream_send_nbx(
                handle.raw(),
                buffer.as_ptr().cast(),
                buffer.len(),
                &params.param,
            )
        };
        let len = buffer.len();
        Ok(handle.track(params.finish(self.worker(), ptr, buffer, len, None)?))
    }

    /// Receives exactly `buffer.len()` bytes from the stream (`UCP_STREAM_RECV_FLAG_WAITALL`).
    pub fn stream_recv<B: BufMut>(&self, buffer: B) -> Result<Request<B>> {
        self.stream_recv_flags(
            buffer,
            sys::ucp_stream_recv_flags_t::UCP_STREAM_RECV_FLAG_WAITALL.0,
        )
    }

    /// Receives whatever the stream has, at least one byte and at most `buffer.len()`; the
    /// received length is in [`Done::length`](crate::Done::length).
    pub fn stream_recv_some<B: BufMut>(&self, buffer: B) -> Result<Request<B>> {
        self.stream_recv_flags(buffer, 0)
    }

    fn stream_recv_flags<B: BufMut>(&self, mut buffer: B, flags: u32) -> Result<Request<B>> {
        let handle = self.lock_handle("ucp_stream_recv_nbx")?;
        let params = OpParams::new(
            self.worker(),
            "ucp_stream_recv_nbx",
            OpKind::OTHER_RECV,
            Callback::Length,
            memh_for(&buffer),
            flags,
        );
        let mut length = 0usize;
        // SAFETY: the endpoint is live under the lock; the request owns the buffer; `length` is
        // written only if the receive completes at once, before the call returns.
        let ptr = unsafe {
            sys::ucp_stream_recv_nbx(
                handle.raw(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut length,
                &params.param,
            )
        };
        let len = buffer.len();
        Ok(handle.track(params.finish(self.worker(), ptr, buffer, len, Some(length))?))
    }
}
