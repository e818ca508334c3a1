//! Buffers an in-flight operation owns until UCX completes it.
//!
//! UCX reads or writes an operation's buffer until it reports completion, and nothing (not even
//! `ucp_request_free`) stops it earlier. So every safe operation takes its buffer by value and the
//! `Request` hands it back when UCX is done; a dropped `Request` keeps the buffer alive until then.

use std::sync::Arc;

use crate::memory::MemRegion;

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
