//! Remote memory access: `Endpoint::put` and `Endpoint::get` against a peer's exported region.
//!
//! Completion is local; call [`Endpoint::flush`] for the data to be visible at the target.
//! On UCX 1.13 over TCP these are emulated in software (slow); over RDMA and shared memory they
//! are zero-copy.

use crate::buffer::{Buf, BufMut, memh_for};
use crate::endpoint::Endpoint;
use crate::memory::RemoteKey;
use crate::request::{Callback, OpKind, OpParams, Request};
use crate::status::{Error, Result, Status};
use crate::sys;

/// The UCX call of one RMA direction: `ucp_put_nbx` or `ucp_get_nbx`.
type RmaCall = unsafe extern "C" fn(
    sys::ucp_ep_h,
    *mut libc::c_void,
    usize,
    u64,
    sys::ucp_rkey_h,
    *const sys::ucp_request_param_t,
) -> sys::ucs_status_ptr_t;

/// `ucp_put_nbx` with its source buffer typed as writable, to share `RmaCall` with get (UCX only
/// reads from it).
unsafe extern "C" fn put_nbx(
    ep: sys::ucp_ep_h,
    buffer: *mut libc::c_void,
    count: usize,
    remote_addr: u64,
    rkey: sys::ucp_rkey_h,
    param: *const sys::ucp_request_param_t,
) -> sys::ucs_status_ptr_t {
    // SAFETY: forwarded unchanged from the caller, who upholds ucp_put_nbx's contract.
    unsafe { sys::ucp_put_nbx(ep, buffer, count, remote_addr, rkey, param) }
}

impl Endpoint {
    /// Writes `buffer` into the peer's region at `offset`.
    pub fn put<B: Buf>(&self, buffer: B, rkey: &RemoteKey, offset: u64) -> Result<Request<B>> {
        let ptr = buffer.as_ptr() as *mut u8;
        // SAFETY: put only reads `ptr`, which the request keeps alive with the buffer.
        unsafe {
            self.rma(
                "ucp_put_nbx",
                put_nbx,
                OpKind::SEND,
                buffer,
                ptr,
                rkey,
                offset,
            )
        }
    }

    /// Reads `buffer.len()` bytes of the peer's region at `offset` into `buffer`.
    pub fn get<B: BufMut>(
        &self,
        mut buffer: B,
        rkey: &RemoteKey,
        offset: u64,
    ) -> Result<Request<B>> {
        let ptr = buffer.as_mut_ptr();
        // SAFETY: `ptr` is the writable start of the buffer the request keeps alive.
        unsafe {
            self.rma(
                "ucp_get_nbx",
                sys::ucp_get_nbx,
                OpKind::OTHER_RECV,
                buffer,
                ptr,
                rkey,
                offset,
            )
        }
    }

    /// One put or get of `buffer` (whose bytes start at `ptr`).
    ///
    /// # Safety
    /// `ptr` must be `buffer`'s start, writable if `call` writes (get).
    #[allow(clippy::too_many_arguments)]
    unsafe fn rma<B: Buf>(
        &self,
        op: &'static str,
        call: RmaCall,
        kind: OpKind,
        buffer: B,
        ptr: *mut u8,
        rkey: &RemoteKey,
        offset: u64,
    ) -> Result<Request<B>> {
        self.check_rkey(op, rkey)?;
        let remote = rkey.remote_addr(op, offset, buffer.len())?;
        let handle = self.lock_handle(op)?;
        let params = OpParams::new(
            self.worker(),
            op,
            kind,
            Callback::Send,
            memh_for(&buffer),
            0,
        );
        let len = buffer.len();
        // SAFETY: endpoint live under the lock; the rkey and buffer are kept alive with the
        // request; the range was checked against the remote region.
        let status = unsafe {
            call(
                handle.raw(),
                ptr.cast(),
                len,
                remote,
                rkey.raw(),
                &params.param,
            )
        };
        let request = params.finish(self.worker(), status, buffer, len, None)?;
        Ok(handle.track(request.keep_alive(rkey.clone())))
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
