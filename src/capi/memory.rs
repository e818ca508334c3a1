//! `swucx_mem_t` (registered memory) and `swucx_rkey_t` (a peer's region, for put and get).

use std::ffi::c_void;

use super::context::swucx_context_t;
use super::endpoint::swucx_ep_t;
use super::status::{SWUCX_OK, swucx_status_t};
use super::{
    Handle, boundary, byte_slice, fail, impl_handle, into_handle, swucx_bytes_t, try_arg, try_out,
    try_ref, try_take, write_out,
};
use crate::{MemRegion, RemoteKey};

/// Memory registered with UCX, for zero-copy transfers and as the target of a peer's put and
/// get. Under the hood: a reference to `swucx::MemRegion` (holds its context). Any thread.
///
/// Methods: `swucx_mem_map`, `swucx_mem_allocate`, `swucx_mem_address`, `swucx_mem_length`,
/// `swucx_mem_export`, `swucx_mem_unmap`.
pub struct swucx_mem_t {
    magic: u64,
    pub(crate) region: MemRegion,
}
impl_handle!(swucx_mem_t, b"SWmemreg");

/// A peer's memory region unpacked for one endpoint: the target of `swucx_ep_put` and
/// `swucx_ep_get`. Under the hood: `swucx::RemoteKey` (holds the endpoint, which it keeps
/// alive). The caller owns the handle: free it with `swucx_rkey_destroy`, which may come before
/// the operations using it complete (they keep what they need). Immutable, so any number of
/// threads may use it at once (as its endpoint allows: any thread on a MULTI worker); destroy it
/// once none does.
///
/// Methods: `swucx_rkey_unpack`, `swucx_rkey_length`, `swucx_rkey_destroy`.
pub struct swucx_rkey_t {
    magic: u64,
    pub(crate) rkey: RemoteKey,
}
impl_handle!(swucx_rkey_t, b"SWrkey\0\0");

fn hand_region(result: crate::Result<MemRegion>, mem_p: *mut *mut swucx_mem_t) -> swucx_status_t {
    match result {
        Ok(region) => {
            write_out!(
                mem_p,
                into_handle(swucx_mem_t {
                    magic: swucx_mem_t::MAGIC,
                    region,
                })
            );
            SWUCX_OK
        }
        Err(e) => fail(e),
    }
}

/// Registers `length` bytes at `address`, memory the caller owns (`ucp_mem_map`). The memory
/// must stay valid until the region is unmapped and no operation or peer uses it any more. An
/// empty region, or one past `PTRDIFF_MAX` bytes or the end of the address space, is
/// `SWUCX_ERR_INVALID_PARAM`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_mem_map(
    context: *const swucx_context_t,
    address: *mut c_void,
    length: usize,
    mem_p: *mut *mut swucx_mem_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        // Empty regions and ones that wrap around are refused by MemRegion itself.
        try_arg!(super::c_array(
            address.cast_const().cast::<u8>(),
            length,
            "address"
        ));
        try_out!(mem_p);
        // SAFETY: the C contract above: the caller keeps the memory valid while it is mapped.
        hand_region(
            unsafe { MemRegion::register_raw(context, address.cast(), length) },
            mem_p,
        )
    })
}

/// Lets UCX allocate `length` bytes of registered memory (best for shared memory and RDMA); read
/// its address with `swucx_mem_address`. Freed by UCX when the region is unmapped. More than the
/// host's physical memory is `SWUCX_ERR_NO_MEMORY`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_mem_allocate(
    context: *const swucx_context_t,
    length: usize,
    mem_p: *mut *mut swucx_mem_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        try_out!(mem_p);
        hand_region(MemRegion::allocate(context, length), mem_p)
    })
}

/// The start of the region's memory. NULL for a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_mem_address(mem: *const swucx_mem_t) -> *mut c_void {
    boundary(|| try_ref!(mem).region.as_ptr().cast())
}

/// The region's length in bytes. 0 for a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_mem_length(mem: *const swucx_mem_t) -> usize {
    boundary(|| try_ref!(mem).region.len())
}

/// The descriptor a peer needs to reach the region with put and get (address, length and UCX's
/// packed remote key, framed and checksummed), in a new bytes handle. Send it to the peer and
/// unpack it there with `swucx_rkey_unpack`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_mem_export(
    mem: *const swucx_mem_t,
    descriptor_p: *mut *mut swucx_bytes_t,
) -> swucx_status_t {
    boundary(|| {
        let region = &try_ref!(mem).region;
        try_out!(descriptor_p);
        match region.export() {
            Ok(bytes) => {
                write_out!(descriptor_p, into_handle(swucx_bytes_t::new(bytes)));
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// `length` bytes at byte `offset` of the region behind a `swucx_mem_t *` argument, as an
/// operation's buffer (UCX gets the region's memory handle), or the function's fallback:
/// `SWUCX_ERR_NULL_ARG` / `SWUCX_ERR_BAD_HANDLE` for the handle, `SWUCX_ERR_OUT_OF_RANGE` if the
/// range is not inside the region.
macro_rules! mem_buf {
    ($mem:ident, $offset:ident, $len:ident) => {{
        let region = &$crate::capi::try_ref!($mem).region;
        match region.slice($offset, $len) {
            Ok(buf) => buf,
            Err(e) => return $crate::capi::fail(e),
        }
    }};
}
pub(crate) use mem_buf;

/// Releases the caller's reference to the region. NULL is a no-op. UCX unmaps it when no request in
/// flight uses it any more. Using the handle afterwards, or destroying it again, is undefined
/// behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_mem_unmap(mem: *mut swucx_mem_t) {
    boundary(|| {
        if !mem.is_null() {
            drop(try_take!(mem));
        }
    })
}

/// Unpacks a peer's region descriptor (`length` bytes from its `swucx_mem_export`) for use on
/// `ep`. Bytes that are not an intact descriptor (a wrong frame or checksum, a region that wraps
/// around the address space) fail with `SWUCX_ERR_INVALID_PARAM` before UCX sees them. On
/// success writes a new remote key to `*rkey_p`.
///
/// **Only for descriptors from trusted peers**, unchanged (as UCX's RDMA model assumes): the
/// checks catch damage, not forgery. UCX parses the packed key without bounds, and over shared
/// memory (posix, sysv) turns the remote addresses into local pointers without checking them, so
/// a forged descriptor lets `swucx_ep_put` and `swucx_ep_get` write and read any memory of this
/// process.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_rkey_unpack(
    ep: *const swucx_ep_t,
    descriptor: *const c_void,
    length: usize,
    rkey_p: *mut *mut swucx_rkey_t,
) -> swucx_status_t {
    boundary(|| {
        let ep = &try_ref!(ep).ep;
        try_out!(rkey_p);
        // SAFETY: the caller gives `length` readable bytes at `descriptor` (NULL when 0).
        let bytes = try_arg!(unsafe { byte_slice(descriptor, length, "descriptor") });
        // SAFETY: the C contract above: the descriptor comes from a trusted peer's export.
        match unsafe { RemoteKey::unpack(ep, bytes) } {
            Ok(rkey) => {
                write_out!(
                    rkey_p,
                    into_handle(swucx_rkey_t {
                        magic: swucx_rkey_t::MAGIC,
                        rkey,
                    })
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// The length of the remote region. 0 for a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_rkey_length(rkey: *const swucx_rkey_t) -> u64 {
    boundary(|| try_ref!(rkey).rkey.len())
}

/// Releases the remote key. NULL is a no-op. Operations in flight keep what they need. Using the
/// handle afterwards, or destroying it again, is undefined behaviour (detected as
/// `SWUCX_ERR_BAD_HANDLE` only while its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_rkey_destroy(rkey: *mut swucx_rkey_t) {
    boundary(|| {
        if !rkey.is_null() {
            drop(try_take!(rkey));
        }
    })
}
