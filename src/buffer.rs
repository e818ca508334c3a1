//! Buffers an in-flight operation owns until UCX completes it.
//!
//! UCX reads or writes an operation's buffer until it reports completion, and nothing (not even
//! `ucp_request_free`) stops it earlier. So every safe operation takes its buffer by value and the
//! `Request` hands it back when UCX is done; a dropped `Request` keeps the buffer alive until then.
//!
//! Besides heap buffers, an operation can send straight from a file: [`FileMap`] maps a file
//! read-only, a [`MappedSlice`] is a range of it that keeps the mapping alive, and [`Payload`] is
//! either owned bytes or such a slice (what the needle server sends).

use std::fs::File;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::memory::MemRegion;
use crate::sys;

/// Memory UCX may read from while an operation is in flight.
///
/// # Safety
/// `as_ptr()..as_ptr() + len()` must stay valid for reads, and must not move, for as long as the
/// value lives, even after the value itself is moved (heap storage, not inline arrays).
pub unsafe trait Buf: Send + 'static {
    /// Start of the bytes.
    fn as_ptr(&self) -> *const u8;
    /// Number of bytes.
    fn len(&self) -> usize;
    /// True if there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The registered region these bytes lie in, if any (passed to UCX as the memory handle).
    fn region(&self) -> Option<&MemRegion> {
        None
    }
}

/// Messages shorter than this go to UCX without their region's memory handle: UCX copies them
/// (its short and buffered-copy protocols start at 0 and reach past this on every transport) and
/// would only spend time on the handle (about 20 instructions per receive in UCX 1.13).
const MEMH_MIN_LEN: usize = 256;

/// The memory handle to pass UCX with `buffer`: its region's, when the message is long enough
/// for UCX to move it in place (zero-copy, rendezvous).
#[inline(always)]
pub(crate) fn memh_for<B: Buf + ?Sized>(buffer: &B) -> Option<sys::ucp_mem_h> {
    if buffer.len() < MEMH_MIN_LEN {
        return None;
    }
    buffer.region().map(|r| r.memh())
}

/// Memory UCX may write into while an operation is in flight.
///
/// # Safety
/// As for [`Buf`], and the bytes must be writable and not read or written by anyone else while
/// the value is owned by an operation.
pub unsafe trait BufMut: Buf {
    /// Start of the writable bytes.
    fn as_mut_ptr(&mut self) -> *mut u8;
}

// SAFETY: a Vec's heap storage does not move when the Vec is moved and lives until it is dropped.
unsafe impl Buf for Vec<u8> {
    fn as_ptr(&self) -> *const u8 {
        <[u8]>::as_ptr(self)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

// SAFETY: as for Buf; the Vec is owned, so nobody else can touch its bytes.
unsafe impl BufMut for Vec<u8> {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        <[u8]>::as_mut_ptr(self)
    }
}

// SAFETY: a boxed slice's heap storage does not move with the box.
unsafe impl Buf for Box<[u8]> {
    fn as_ptr(&self) -> *const u8 {
        <[u8]>::as_ptr(self)
    }
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

// SAFETY: as for Buf; the box is owned.
unsafe impl BufMut for Box<[u8]> {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        <[u8]>::as_mut_ptr(self)
    }
}

// SAFETY: the Arc's allocation lives while any clone does and is immutable.
unsafe impl Buf for Arc<[u8]> {
    fn as_ptr(&self) -> *const u8 {
        <[u8]>::as_ptr(self)
    }
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

// SAFETY: static data never moves or goes away.
unsafe impl Buf for &'static [u8] {
    fn as_ptr(&self) -> *const u8 {
        <[u8]>::as_ptr(self)
    }
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

/// Borrowed memory handed to an operation without ownership: the `unsafe` way to send from or
/// receive into memory the caller manages (C buffers, memory shared with another runtime).
#[derive(Debug)]
pub struct RawBuf {
    ptr: *mut u8,
    len: usize,
}

impl RawBuf {
    /// Wraps `len` bytes at `ptr`.
    ///
    /// # Safety
    /// The bytes must stay valid (and, for receives, writable and otherwise untouched) until the
    /// operation using this `RawBuf` has completed, which is after the `Request` reports
    /// completion, not when it is dropped: dropping an unfinished `Request` does not stop UCX.
    /// For an operation that ended detached ([`Request::is_detached`](crate::Request::is_detached):
    /// its peer failed while UCX held it), that is never: keep them for the rest of the process.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> RawBuf {
        RawBuf { ptr, len }
    }
}

// SAFETY: the constructor's contract makes the caller responsible for the memory across threads.
unsafe impl Send for RawBuf {}

// SAFETY: validity and stability of the bytes are the constructor's contract.
unsafe impl Buf for RawBuf {
    fn as_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

// SAFETY: as for Buf; exclusivity is the constructor's contract.
unsafe impl BufMut for RawBuf {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
}

/// A read-only, shared mapping of the first bytes of a file (`mmap(PROT_READ, MAP_SHARED)`),
/// unmapped on drop.
///
/// The mapping belongs to the file's inode, not its path: renaming another file over the path, or
/// unlinking it, leaves the mapped bytes as they were. Bytes appended past the mapped length are
/// not visible through it; map the file again to see them.
#[derive(Debug)]
pub struct FileMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is immutable from this process and lives until the FileMap is dropped; the
// pointer is not tied to a thread.
unsafe impl Send for FileMap {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps the first `len` bytes of `file` (opened for reading). A `len` of 0 maps nothing.
    ///
    /// # Safety
    /// For as long as the mapping lives, nobody may truncate the file below `len` (touching a
    /// page the file no longer covers raises `SIGBUS`), and the bytes read through it must not
    /// be written meanwhile (appending past `len` and rewriting bytes never read through the
    /// mapping are fine). `weed volume` treats its `.dat` files that way: it appends needles and
    /// rewrites only the superblock in place.
    pub unsafe fn map(file: &File, len: u64) -> std::io::Result<FileMap> {
        let len = usize::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large to map")
        })?;
        if len == 0 {
            return Ok(FileMap {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only mapping chosen by the kernel; it aliases no Rust object.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap"))?;
        Ok(FileMap { ptr, len })
    }

    /// Start of the mapped bytes.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Number of mapped bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes, read in place.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: len readable bytes are mapped at ptr until drop; `map`'s contract keeps them
        // unwritten and within the file.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Whether every page holding bytes `start..end` of the mapping is in memory now
    /// (`mincore`), so that reading them takes no disk read (until the kernel evicts them). A
    /// range outside the mapping, or a failing `mincore`, counts as not resident.
    pub fn is_resident(&self, start: usize, end: usize) -> bool {
        if start >= end {
            return true;
        }
        if end > self.len {
            return false;
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // The mapping starts on a page boundary, so its offsets align as the addresses do.
        let first = start / page * page;
        let pages = (end - first).div_ceil(page);
        // One byte per page; on the stack for needles up to 256 KiB (4 KiB pages).
        let mut on_stack = [0u8; 64];
        let mut on_heap = Vec::new();
        let resident = if pages <= on_stack.len() {
            &mut on_stack[..pages]
        } else {
            on_heap.resize(pages, 0);
            &mut on_heap[..]
        };
        // SAFETY: [ptr + first, ptr + first + pages * page) lies within the mapping (its last
        // page may extend past len, still inside the mapped page); `resident` has one byte per
        // page, as mincore writes.
        let rc = unsafe {
            libc::mincore(
                self.ptr.as_ptr().add(first).cast(),
                pages * page,
                resident.as_mut_ptr().cast(),
            )
        };
        rc == 0 && resident.iter().all(|b| b & 1 == 1)
    }

    /// Whether `bytes` lies inside this mapping.
    pub fn contains(&self, bytes: &[u8]) -> bool {
        let start = self.ptr.as_ptr() as usize;
        let at = bytes.as_ptr() as usize;
        at >= start && at + bytes.len() <= start + self.len
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len are the mapping made in `map`, unmapped once; nothing borrows it
            // (every slice and in-flight operation holds an Arc of this FileMap).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// A range of a [`FileMap`] that keeps the mapping alive: an operation sends it without a copy.
#[derive(Clone, Debug)]
pub struct MappedSlice {
    map: Arc<FileMap>,
    offset: usize,
    len: usize,
}

impl MappedSlice {
    /// `len` bytes at `offset` of `map`; `None` if they are not all mapped.
    pub fn new(map: Arc<FileMap>, offset: usize, len: usize) -> Option<MappedSlice> {
        match offset.checked_add(len) {
            Some(end) if end <= map.len() => Some(MappedSlice { map, offset, len }),
            _ => None,
        }
    }

    /// The slice `bytes` (borrowed from `map`'s bytes) as a `MappedSlice`; `None` if it does not
    /// lie inside the mapping.
    pub fn of(map: &Arc<FileMap>, bytes: &[u8]) -> Option<MappedSlice> {
        if !map.contains(bytes) {
            return None;
        }
        let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
        MappedSlice::new(map.clone(), offset, bytes.len())
    }

    /// The mapping these bytes lie in.
    pub fn map(&self) -> &Arc<FileMap> {
        &self.map
    }

    /// Where the bytes start in the mapping (= in the file).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes, read in place.
    pub fn as_slice(&self) -> &[u8] {
        &self.map.as_slice()[self.offset..self.offset + self.len]
    }
}

impl Deref for MappedSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

// SAFETY: the Arc keeps the mapping (read-only, never moved) alive as long as the slice, and the
// range was checked against it at construction.
unsafe impl Buf for MappedSlice {
    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// Bytes to send: owned, or a range of a mapped file sent from the mapping without a copy.
#[derive(Clone)]
pub enum Payload {
    /// Bytes on the heap.
    Owned(Vec<u8>),
    /// A range of a mapped file.
    Mapped(MappedSlice),
}

impl Payload {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Owned(v) => v,
            Payload::Mapped(m) => m,
        }
    }

    /// The mapped range, if the bytes are one.
    pub fn as_mapped(&self) -> Option<&MappedSlice> {
        match self {
            Payload::Owned(_) => None,
            Payload::Mapped(m) => Some(m),
        }
    }

    /// The bytes as a `Vec` (a copy when mapped).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Owned(v) => v,
            Payload::Mapped(m) => m.as_slice().to_vec(),
        }
    }
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::Owned(Vec::new())
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload::Owned(v)
    }
}

impl From<MappedSlice> for Payload {
    fn from(m: MappedSlice) -> Payload {
        Payload::Mapped(m)
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Payload::Owned(_) => "Owned",
            Payload::Mapped(_) => "Mapped",
        };
        f.debug_tuple(kind).field(&self.as_slice()).finish()
    }
}

/// Payloads are equal when their bytes are, owned or mapped.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Payload {}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for Payload {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Payload {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Payload {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Payload> for Vec<u8> {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<Payload> for [u8] {
    fn eq(&self, other: &Payload) -> bool {
        self == other.as_slice()
    }
}

// SAFETY: both variants are Bufs (heap storage or a kept-alive mapping) and the enum moves with them.
unsafe impl Buf for Payload {
    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn mapped_slices_point_into_the_file_mapping_and_outlive_renames() {
        let dir = std::env::temp_dir().join(format!("swucx-filemap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.dat");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY: this test only appends to the file and replaces its path.
        let map = Arc::new(unsafe { FileMap::map(&file, 10) }.unwrap());
        let s = MappedSlice::new(map.clone(), 2, 5).unwrap();
        assert_eq!(&*s, b"23456");
        assert!(map.contains(&s));
        assert_eq!(
            MappedSlice::of(&map, &map.as_slice()[4..6])
                .unwrap()
                .offset(),
            4
        );
        assert!(MappedSlice::of(&map, b"elsewhere").is_none());
        assert!(MappedSlice::new(map.clone(), 8, 3).is_none());
        assert!(MappedSlice::new(map.clone(), usize::MAX, 2).is_none());
        let p = Payload::from(s.clone());
        assert_eq!(Buf::as_ptr(&p), map.as_ptr().wrapping_add(2));
        assert_eq!(Buf::len(&p), 5);
        assert_eq!(p, Payload::from(b"23456".to_vec()));
        assert_eq!(p, b"23456");
        // Appends are not seen; a path replaced under the mapping leaves its bytes alone.
        f.write_all(b"abc").unwrap();
        std::fs::write(dir.join("new"), b"XXXXXXXXXXXXX").unwrap();
        std::fs::rename(dir.join("new"), &path).unwrap();
        drop((map, file));
        assert_eq!(s.map().len(), 10);
        assert_eq!(&*s, b"23456");
        // SAFETY: as above.
        let empty = unsafe { FileMap::map(&File::open(&path).unwrap(), 0) }.unwrap();
        assert!(empty.is_empty() && empty.as_slice().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `is_resident` over pages dropped from the page cache, then read: one page (on the
    /// stack), many (on the heap), an end that is not a page boundary, the empty range, and a
    /// range past the mapping.
    #[test]
    fn residency_follows_the_page_cache() {
        let dir = std::env::temp_dir().join(format!("swucx-resident-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.dat");
        let len = (1 << 20) + 100;
        std::fs::write(&path, vec![7u8; len]).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: advice on an open fd; no memory is involved.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        // SAFETY: the test's own file, not changed while mapped.
        let map = unsafe { FileMap::map(&file, len as u64) }.unwrap();
        assert!(
            !map.is_resident(0, len),
            "the page cache kept the file: nothing to test"
        );
        assert!(!map.is_resident(len - 10, len));
        assert!(map.is_resident(5, 5), "an empty range");
        assert!(!map.is_resident(0, len + 1), "past the mapping");
        let mut buf = vec![0u8; len];
        assert_eq!(file.read_at(&mut buf, 0).unwrap(), len);
        assert!(map.is_resident(0, len) && map.is_resident(len - 10, len));
        assert!(map.is_resident(4096, 8192));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
