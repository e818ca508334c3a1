//! Remote memory access: `Endpoint::put` and `Endpoint::get` against a peer's exported region.
//!
//! Completion is local; call [`Endpoint::flush`] for the data to be visible at the target.
//! On UCX 1.13 over TCP these are emulated in software (slow); over RDMA and shared memory they
//! are zero-copy.

use crate::buffer::{Buf, BufMut};
use crate::endpoint::Endpoint;
use crate::memory::RemoteKey;
use crate::request::{Callback, OpKind, OpParams, Request};
use crate::status::{Error, Result, Status};
use crate::sys;

impl Endpoint {
    /// Writes `buffer` into the peer's region at `offset`.
    pub fn put<B: Buf>(&self, buffer: B, rkey: &RemoteKey, offset: u64) -> Result<Request<B>> {
        self.check_rkey("ucp_put_nbx", rkey)?;
        let remote = rkey.remote_addr("ucp_put_nbx", offset, buffer.len())?;
        let handle = self.lock_handle("ucp_put_nbx")?;
        let params = OpParams::new(
            "ucp_put_nbx",
            OpKind::Send,
            Callback::Send,
            buffer.region().map(|r| r.memh()),
            0,
        );
        // SAFETY: endpoint live under the lock; rkey kept alive with the request; range checked.
        let ptr = unsafe {
            sys::ucp_put_nbx(
                handle.raw(),
                buffer.as_ptr().cast(),
                buffer.len(),
                remote,
                rkey.raw(),
                &params.param,
            )
        };
        drop(handle);
        let len = buffer.len();
        Ok(self.track(
            params
                .finish(self.worker(), ptr, buffer, len, None)?
                .keep_alive(rkey.clone()),
        ))
    }

    /// Reads `buffer.len()` bytes of the peer's region at `offset` into `buffer`.
    pub fn get<B: BufMut>(
        &self,
        mut buffer: B,
        rkey: &RemoteKey,
        offset: u64,
    ) -> Result<Request<B>> {
        self.check_rkey("ucp_get_nbx", rkey)?;
        let remote = rkey.remote_addr("ucp_get_nbx", offset, buffer.len())?;
        let handle = self.lock_handle("ucp_get_nbx")?;
        let params = OpParams::new(
            "ucp_get_nbx",
            OpKind::OtherRecv,
            Callback::Send,
            buffer.region().map(|r| r.memh()),
            0,
        );
        // SAFETY: as for put; the request owns the destination buffer.
        let ptr = unsafe {
            sys::ucp_get_nbx(
                handle.raw(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                remote,
                rkey.raw(),
                &params.param,
            )
        };
        drop(handle);
        let len = buffer.len();
        Ok(self.track(
            params
                .finish(self.worker(), ptr, buffer, len, None)?
                .keep_alive(rkey.clone()),
        ))
    }

    fn check_rkey(&self, op: &'static str, rkey: &RemoteKey) -> Result<()> {
        if std::sync::Arc::ptr_eq(&rkey.endpoint().0, &self.0) {
            Ok(())
        } else {
            Err(Error::with_detail(
                op,
                Status::ERR_INVALID_PARAM,
                "remote key was unpacked for another endpoint",
            ))
        }
    }
}
