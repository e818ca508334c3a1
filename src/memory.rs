//! `MemRegion` (registered memory, `ucp_mem_h`) and `RemoteKey` (a peer's region, `ucp_rkey_h`).
//!
//! A region is exported as a self-describing descriptor (address, length and UCX's packed rkey,
//! framed and checksummed), so wrong or truncated bytes are refused before UCX parses them.

use std::ptr;
use std::sync::Arc;

use crate::buffer::{Buf, BufMut};
use crate::context::Context;
use crate::endpoint::Endpoint;
use crate::status::{Error, Result, Status, check};
use crate::sys;

struct RegionInner {
    context: Context,
    memh: sys::ucp_mem_h,
    addr: *mut u8,
    len: usize,
    /// Memory the region was made from, if swucx owns it (freed after unmapping).
    _owned: Option<Vec<u8>>,
}

// SAFETY: the memory handle is used only through thread-safe UCX calls (the context is created
// with mt_workers_shared); the bytes are accessed only through raw-pointer copies or unsafe views.
unsafe impl Send for RegionInner {}
// SAFETY: as above.
unsafe impl Sync for RegionInner {}

impl Drop for RegionInner {
    fn drop(&mut self) {
        // SAFETY: memh came from ucp_mem_map on this context; every operation using the region
        // holds a clone, so none is in flight.
        let status = unsafe { sys::ucp_mem_unmap(self.context.handle(), self.memh) };
        if let Err(err) = check("ucp_mem_unmap", status) {
            log::warn!("{err}");
        }
    }
}

/// Memory registered with UCX for zero-copy and remote access. Cheap to clone; `Send + Sync`.
///
/// The bytes may be written by a peer (put) or by UCX (receives) at any time while operations
/// run, so they are reached through copies ([`read_at`](MemRegion::read_at),
/// [`write_at`](MemRegion::write_at)) or `unsafe` views.
#[derive(Clone)]
pub struct MemRegion(Arc<RegionInner>);

/// The host's physical memory in bytes (`u128::MAX` when the system does not say).
fn physical_memory() -> u128 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page_size <= 0 {
        return u128::MAX;
    }
    pages as u128 * page_size as u128
}

impl MemRegion {
    /// Registers `buffer` (owned by the region from now on).
    pub fn register(context: &Context, mut buffer: Vec<u8>) -> Result<MemRegion> {
        let addr = buffer.as_mut_ptr();
        let len = buffer.len();
        // SAFETY: the Vec's storage lives in the region (kept below) until after unmapping.
        unsafe { Self::map(context, addr, len, 0, Some(buffer)) }
    }

    /// Lets UCX allocate `len` bytes of registered memory (best for shared memory and RDMA).
    /// More than the host's physical memory is `ERR_NO_MEMORY` at once (UCX 1.13, its System V
    /// segment refused, went on filling a POSIX shared-memory file until the host ran out).
    pub fn allocate(context: &Context, len: usize) -> Result<MemRegion> {
        let host = physical_memory();
        if len as u128 > host {
            return Err(Error::with_detail(
                "ucp_mem_map",
                Status::ERR_NO_MEMORY,
                format!("{len} bytes is more than this host's memory ({host} bytes)"),
            ));
        }
        let flags = sys::UCP_MEM_MAP_ALLOCATE.0;
        // SAFETY: with ALLOCATE, UCX owns the memory and frees it at unmap.
        unsafe { Self::map(context, ptr::null_mut(), len, flags, None) }
    }

    /// Registers memory the caller owns.
    ///
    /// # Safety
    /// `addr..addr + len` must stay valid, and not be freed, until the region and every clone and
    /// operation using it are gone.
    pub unsafe fn register_raw(context: &Context, addr: *mut u8, len: usize) -> Result<MemRegion> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::map(context, addr, len, 0, None) }
    }

    unsafe fn map(
        context: &Context,
        addr: *mut u8,
        len: usize,
        flags: u32,
        owned: Option<Vec<u8>>,
    ) -> Result<MemRegion> {
        if len == 0 {
            return Err(Error::with_detail(
                "ucp_mem_map",
                Status::ERR_INVALID_PARAM,
                "zero-length region",
            ));
        }
        if (addr as usize).checked_add(len).is_none() {
            return Err(Error::with_detail(
                "ucp_mem_map",
                Status::ERR_INVALID_PARAM,
                "the region runs past the end of the address space",
            ));
        }
        let params = sys::ucp_mem_map_params_t {
            field_mask: u64::from(
                sys::ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_ADDRESS.0
                    | sys::ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_LENGTH.0
                    | sys::ucp_mem_map_params_field::UCP_MEM_MAP_PARAM_FIELD_FLAGS.0,
            ),
            address: addr.cast(),
            length: len,
            flags,
            ..Default::default()
        };
        let mut memh = ptr::null_mut();
        // SAFETY: params describe memory the caller vouched for (or ask UCX to allocate).
        check("ucp_mem_map", unsafe {
            sys::ucp_mem_map(context.handle(), &params, &mut memh)
        })?;
        let mut attr = sys::ucp_mem_attr_t {
            field_mask: u64::from(
                sys::ucp_mem_attr_field::UCP_MEM_ATTR_FIELD_ADDRESS.0
                    | sys::ucp_mem_attr_field::UCP_MEM_ATTR_FIELD_LENGTH.0,
            ),
            ..Default::default()
        };
        // SAFETY: memh is live; attr is writable.
        let queried = check("ucp_mem_query", unsafe {
            sys::ucp_mem_query(memh, &mut attr)
        });
        let region = MemRegion(Arc::new(RegionInner {
            context: context.clone(),
            memh,
            addr: if queried.is_ok() {
                attr.address.cast()
            } else {
                addr
            },
            len,
            _owned: owned,
        }));
        queried.map(|()| region)
    }

    /// Start address of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    pub(crate) fn memh(&self) -> sys::ucp_mem_h {
        self.0.memh
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_range("read_at", offset, dst.len())?;
        // SAFETY: the range is inside the region, which is live; dst is a distinct Rust buffer.
        unsafe { ptr::copy_nonoverlapping(self.0.addr.add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check_range("write_at", offset, src.len())?;
        // SAFETY: the range is inside the region, which is live; src is a distinct Rust buffer.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.0.addr.add(offset), src.len()) };
        Ok(())
    }

    /// A view of the region's bytes.
    ///
    /// # Safety
    /// No operation, peer or other thread may write the region while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is live and len bytes long; the caller excludes writers.
        unsafe { std::slice::from_raw_parts(self.0.addr, self.0.len) }
    }

    /// A part of the region to pass to an operation as its buffer (UCX then gets the memory
    /// handle and skips its registration cache).
    pub fn slice(&self, offset: usize, len: usize) -> Result<RegionBuf> {
        self.check_range("slice", offset, len)?;
        Ok(RegionBuf {
            region: self.clone(),
            offset,
            len,
        })
    }

    fn check_range(&self, op: &'static str, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.0.len => Ok(()),
            _ => Err(Error::with_detail(
                op,
                Status::ERR_OUT_OF_RANGE,
                format!("{offset}+{len} > {}", self.0.len),
            )),
        }
    }

    /// The descriptor a peer needs to reach this region with put/get: address, length and the
    /// packed remote key. Give it to [`RemoteKey::unpack`] on the peer: whoever has it may read
    /// and write the region at any time.
    pub fn export(&self) -> Result<Vec<u8>> {
        let mut rkey_buf = ptr::null_mut();
        let mut rkey_len = 0usize;
        // SAFETY: the context and memh are live; the out-pointers are valid.
        check("ucp_rkey_pack", unsafe {
            sys::ucp_rkey_pack(
                self.0.context.handle(),
                self.0.memh,
                &mut rkey_buf,
                &mut rkey_len,
            )
        })?;
        // SAFETY: UCX returned rkey_len readable bytes, released right after the copy.
        let rkey = unsafe { std::slice::from_raw_parts(rkey_buf as *const u8, rkey_len) }.to_vec();
        // SAFETY: rkey_buf came from ucp_rkey_pack.
        unsafe { sys::ucp_rkey_buffer_release(rkey_buf) };
        Ok(RegionDescriptor {
            addr: self.0.addr as u64,
            len: self.0.len as u64,
            rkey,
        }
        .encode())
    }
}

impl std::fmt::Debug for MemRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemRegion")
            .field("addr", &self.0.addr)
            .field("len", &self.0.len)
            .finish()
    }
}

/// A part of a [`MemRegion`] used as an operation's buffer.
#[derive(Clone, Debug)]
pub struct RegionBuf {
    region: MemRegion,
    offset: usize,
    len: usize,
}

impl RegionBuf {
    /// The region this part lies in.
    pub fn region_ref(&self) -> &MemRegion {
        &self.region
    }
}

// SAFETY: the region (held by the Arc) stays mapped while the RegionBuf lives; the range was
// checked at construction.
unsafe impl Buf for RegionBuf {
    fn as_ptr(&self) -> *const u8 {
        // SAFETY: offset is within the region.
        unsafe { self.region.0.addr.add(self.offset) }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn region(&self) -> Option<&MemRegion> {
        Some(&self.region)
    }
}

// SAFETY: as for Buf; exclusive use of the range during an operation is the region user's
// documented duty (see MemRegion).
unsafe impl BufMut for RegionBuf {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: offset is within the region.
        unsafe { self.region.0.addr.add(self.offset) }
    }
}

/// The wire form of an exported region:
/// `"SWRK" | version u8 | addr u64 | len u64 | rkey_len u32 | rkey | crc32c u32` (little endian;
/// the checksum covers everything before it).
struct RegionDescriptor {
    addr: u64,
    len: u64,
    rkey: Vec<u8>,
}

const DESCRIPTOR_MAGIC: &[u8; 4] = b"SWRK";
const DESCRIPTOR_VERSION: u8 = 1;
const DESCRIPTOR_FIXED: usize = 4 + 1 + 8 + 8 + 4;
/// Largest packed rkey accepted (UCX's are tens to a few hundred bytes).
pub const MAX_RKEY_LEN: usize = 4096;

impl RegionDescriptor {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DESCRIPTOR_FIXED + self.rkey.len() + 4);
        out.extend_from_slice(DESCRIPTOR_MAGIC);
        out.push(DESCRIPTOR_VERSION);
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&(self.rkey.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.rkey);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<RegionDescriptor> {
        let bad = |why: &str| {
            Error::with_detail(
                "RemoteKey::unpack",
                Status::ERR_INVALID_PARAM,
                why.to_string(),
            )
        };
        if bytes.len() < DESCRIPTOR_FIXED + 4 {
            return Err(bad("descriptor truncated"));
        }
        if &bytes[..4] != DESCRIPTOR_MAGIC {
            return Err(bad("not a swucx region descriptor"));
        }
        if bytes[4] != DESCRIPTOR_VERSION {
            return Err(bad("unsupported descriptor version"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let rkey_len = u32::from_le_bytes(bytes[21..25].try_into().expect("4 bytes")) as usize;
        if rkey_len == 0 || rkey_len > MAX_RKEY_LEN {
            return Err(bad("rkey length out of range"));
        }
        if bytes.len() != DESCRIPTOR_FIXED + rkey_len + 4 {
            return Err(bad("descriptor length does not match its rkey length"));
        }
        let body = &bytes[..DESCRIPTOR_FIXED + rkey_len];
        let crc = u32::from_le_bytes(bytes[body.len()..].try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != crc {
            return Err(bad("descriptor checksum mismatch"));
        }
        let (addr, len) = (u64_at(5), u64_at(13));
        if addr.checked_add(len).is_none() {
            return Err(bad("region wraps around the address space"));
        }
        Ok(RegionDescriptor {
            addr,
            len,
            rkey: body[DESCRIPTOR_FIXED..].to_vec(),
        })
    }
}

/// A peer's memory region, unpacked for one endpoint: the target of put and get.
/// Holds the endpoint; cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct RemoteKey(Arc<RkeyInner>);

struct RkeyInner {
    endpoint: Endpoint,
    rkey: sys::ucp_rkey_h,
    addr: u64,
    len: u64,
}

// SAFETY: the rkey is used only in UCX calls on the endpoint's MULTI-mode worker.
unsafe impl Send for RkeyInner {}
// SAFETY: as above; it has no interior mutability.
unsafe impl Sync for RkeyInner {}

impl RemoteKey {
    /// Unpacks a descriptor from [`MemRegion::export`] for use on `endpoint`. Bytes that are not
    /// an intact descriptor (a wrong frame or checksum, a region that wraps around the address
    /// space) are refused with `ERR_INVALID_PARAM` before UCX sees them.
    ///
    /// # Safety
    /// `descriptor` must come from a trusted peer (as UCX's RDMA model assumes): the export of
    /// one of its regions, unchanged. The checks above catch damage, not forgery: UCX parses
    /// the packed key without bounds, and over shared memory (posix, sysv) it maps the peer's
    /// segment and turns the remote addresses into local pointers without checking them, so a
    /// forged descriptor lets [`Endpoint::put`] and [`Endpoint::get`] write and read any memory
    /// of this process. Descriptors from untrusted peers must not reach this.
    pub unsafe fn unpack(endpoint: &Endpoint, descriptor: &[u8]) -> Result<RemoteKey> {
        let desc = RegionDescriptor::decode(descriptor)?;
        let handle = endpoint.lock_handle("ucp_ep_rkey_unpack")?;
        let mut rkey = ptr::null_mut();
        // SAFETY: the endpoint is live under the lock; the rkey bytes are intact (checksummed)
        // and come from a trusted peer's export (the caller's contract).
        check("ucp_ep_rkey_unpack", unsafe {
            sys::ucp_ep_rkey_unpack(handle.raw(), desc.rkey.as_ptr().cast(), &mut rkey)
        })?;
        Ok(RemoteKey(Arc::new(RkeyInner {
            endpoint: endpoint.clone(),
            rkey,
            addr: desc.addr,
            len: desc.len,
        })))
    }

    /// Length of the remote region.
    pub fn len(&self) -> u64 {
        self.0.len
    }

    /// True for an empty remote region.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// The endpoint this key was unpacked for.
    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// The remote address of `offset..offset + len`, if it lies inside the region.
    pub(crate) fn remote_addr(&self, op: &'static str, offset: u64, len: usize) -> Result<u64> {
        let inside = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.0.len);
        match self.0.addr.checked_add(offset).filter(|_| inside) {
            Some(addr) => Ok(addr),
            None => Err(Error::with_detail(
                op,
                Status::ERR_OUT_OF_RANGE,
                format!("{offset}+{len} > {}", self.0.len),
            )),
        }
    }

    pub(crate) fn raw(&self) -> sys::ucp_rkey_h {
        self.0.rkey
    }
}

impl Drop for RkeyInner {
    fn drop(&mut self) {
        // SAFETY: the rkey came from ucp_ep_rkey_unpack; the endpoint is held, so still alive.
        unsafe { sys::ucp_rkey_destroy(self.rkey) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arbitrary and mutated bytes never panic the decoder, and only intact descriptors pass.
    #[test]
    fn descriptor_decoder_survives_random_input() {
        let valid = RegionDescriptor {
            addr: 0xdead_beef,
            len: 4096,
            rkey: vec![7; 40],
        }
        .encode();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200_000 {
            let mut bytes = if round % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 200) as usize).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
            }
            if let Ok(decoded) = RegionDescriptor::decode(&bytes) {
                assert_eq!(decoded.encode(), bytes, "only intact descriptors decode");
            }
        }
    }

    #[test]
    fn a_region_that_wraps_around_is_refused() {
        let at = |addr, len| RegionDescriptor {
            addr,
            len,
            rkey: vec![1; 8],
        };
        let edge = at(u64::MAX - 64, 64).encode();
        assert!(RegionDescriptor::decode(&edge).is_ok(), "ends at the top");
        let wraps = at(u64::MAX - 63, 64).encode();
        assert!(RegionDescriptor::decode(&wraps).is_err(), "wraps around");
    }

    #[test]
    fn descriptor_round_trip_and_rejects() {
        let d = RegionDescriptor {
            addr: 0x1000,
            len: 64,
            rkey: vec![1, 2, 3, 4, 5],
        };
        let bytes = d.encode();
        let back = RegionDescriptor::decode(&bytes).expect("intact descriptor");
        assert_eq!(
            (back.addr, back.len, back.rkey),
            (0x1000, 64, vec![1, 2, 3, 4, 5])
        );
        for cut in 0..bytes.len() {
            assert!(
                RegionDescriptor::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(RegionDescriptor::decode(&bad).is_err(), "flipped byte {i}");
        }
    }
}
