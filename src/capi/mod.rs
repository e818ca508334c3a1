//! The C ABI of swucx (feature `capi`, on by default): a thin, 1:1 face over the Rust API.
//!
//! Every export is written out as `#[unsafe(no_mangle)] pub extern "C" fn swucx_*` and documented
//! for the generated header (`include/swucx.h`, made by cbindgen from these files; see
//! `docs/c-api.md` for the conventions). Each body runs inside [`boundary`], so a panic becomes
//! `SWUCX_ERR_PANIC` (or the documented default of a function that returns a value) instead of
//! crossing into C, and every pointer argument is checked before use: NULL gives
//! `SWUCX_ERR_NULL_ARG`, a pointer that is not a live handle of the expected type (where it can be
//! told) gives `SWUCX_ERR_BAD_HANDLE`.
//!
//! Handles are boxed Rust objects behind opaque C types. Each carries a type-specific magic
//! number that `_destroy` clears, so handle confusion is detected, and a stale handle (used or
//! destroyed again after its `_destroy`) is detected while its memory is not reused: a safety
//! net, not a guarantee, for such a use is undefined behaviour. Freed requests are reused only
//! after many younger ones (`request.rs`), so a request freed twice does not free its successor.

#![cfg(feature = "capi")]
#![allow(non_camel_case_types)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]
// Constants and types exist for the C header; Rust code needs only some of them.
#![allow(dead_code)]

use std::any::Any;
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

mod am;
mod am_queue;
mod context;
mod endpoint;
mod engine;
mod listener;
mod memory;
mod needle;
mod request;
mod status;
mod version;
mod worker;

use status::swucx_status_t;
use status::{
    SWUCX_ERR_BAD_HANDLE, SWUCX_ERR_INVALID_PARAM, SWUCX_ERR_NULL_ARG, SWUCX_ERR_PANIC,
    SWUCX_ERR_UTF8, set_last_error,
};

/// What an exported function returns when its arguments are unusable or its body panics.
pub(crate) trait Fallback {
    /// For a NULL pointer argument.
    fn null_arg() -> Self;
    /// For a pointer that is not a live handle of the expected type.
    fn bad_handle() -> Self;
    /// For a pointer argument, not a handle, that is unusable though not NULL (misaligned, or
    /// an array longer than any object can be).
    fn invalid() -> Self;
    /// For a panic inside the body.
    fn panicked() -> Self;
}

impl Fallback for swucx_status_t {
    fn null_arg() -> Self {
        SWUCX_ERR_NULL_ARG
    }
    fn bad_handle() -> Self {
        SWUCX_ERR_BAD_HANDLE
    }
    fn invalid() -> Self {
        SWUCX_ERR_INVALID_PARAM
    }
    fn panicked() -> Self {
        SWUCX_ERR_PANIC
    }
}

macro_rules! fallback {
    ($value:expr => $($t:ty),*) => {
        $(impl Fallback for $t {
            fn null_arg() -> Self { $value }
            fn bad_handle() -> Self { $value }
            fn invalid() -> Self { $value }
            fn panicked() -> Self { $value }
        })*
    };
}
fallback!(Default::default() => (), bool, u16, u32, u64, usize);
fallback!(std::ptr::null() => *const c_char, *const u8);
fallback!(std::ptr::null_mut() => *mut c_void);

/// The panic boundary: runs `body`; a panic is recorded as the thread's last error and turned
/// into `R::panicked()`.
pub(crate) fn boundary<R: Fallback>(body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            set_last_error(&format!("panic in swucx: {}", panic_message(&*payload)));
            R::panicked()
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Why a pointer argument was refused.
pub(crate) enum ArgError {
    Null(&'static str),
    Bad(&'static str),
    /// A pointer argument, not a handle, that is unusable though not NULL: its name, and why.
    Invalid(&'static str, &'static str),
}

impl ArgError {
    /// Records the detail and returns the function's fallback value.
    pub(crate) fn fail<R: Fallback>(self) -> R {
        match self {
            ArgError::Null(name) => {
                set_last_error(&format!("argument `{name}` is NULL"));
                R::null_arg()
            }
            ArgError::Bad(name) => {
                set_last_error(&format!(
                    "argument `{name}` is not a live swucx handle of the expected type"
                ));
                R::bad_handle()
            }
            ArgError::Invalid(name, why) => {
                set_last_error(&format!("argument `{name}`: {why}"));
                R::invalid()
            }
        }
    }
}

/// A boxed Rust object behind an opaque C handle type, marked with a per-type magic number.
pub(crate) trait Handle: Sized + 'static {
    /// The magic number every live handle of this type carries.
    const MAGIC: u64;
    /// Byte offset of the `magic: u64` field.
    const MAGIC_OFFSET: usize;
}

/// Implements [`Handle`] for a handle struct that has a `magic: u64` field.
macro_rules! impl_handle {
    ($ty:ty, $magic:expr) => {
        impl $crate::capi::Handle for $ty {
            const MAGIC: u64 = u64::from_le_bytes(*$magic);
            const MAGIC_OFFSET: usize = std::mem::offset_of!($ty, magic);
        }
    };
}
pub(crate) use impl_handle;

/// Moves `value` to the heap and hands it out as a C handle.
pub(crate) fn into_handle<T: Handle>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Checks that `ptr` is non-NULL, aligned and carries `T`'s magic.
///
/// # Safety
/// `ptr` must be NULL or point to readable memory of at least `size_of::<T>()` bytes (a live or
/// garbage handle the caller passed; reading a freed one is what C callers are told not to do).
pub(crate) unsafe fn check_handle<T: Handle>(
    ptr: *const T,
    name: &'static str,
) -> Result<(), ArgError> {
    if ptr.is_null() {
        return Err(ArgError::Null(name));
    }
    if (ptr as usize) % std::mem::align_of::<T>() != 0 {
        return Err(ArgError::Bad(name));
    }
    // SAFETY: the caller guarantees the memory is readable; the offset is that of a u64 field
    // inside T, so the read is in bounds and aligned.
    let magic =
        unsafe { std::ptr::read_volatile(ptr.cast::<u8>().add(T::MAGIC_OFFSET).cast::<u64>()) };
    if magic == T::MAGIC {
        Ok(())
    } else {
        Err(ArgError::Bad(name))
    }
}

/// Borrows the handle behind `ptr` after [`check_handle`].
///
/// # Safety
/// As for [`check_handle`]; the handle must not be destroyed while the borrow lives.
pub(crate) unsafe fn handle_ref<'a, T: Handle>(
    ptr: *const T,
    name: &'static str,
) -> Result<&'a T, ArgError> {
    // SAFETY: forwarded contract.
    unsafe { check_handle(ptr, name)? };
    // SAFETY: checked non-NULL, aligned and live (magic) above.
    Ok(unsafe { &*ptr })
}

/// Mutably borrows the handle behind `ptr` after [`check_handle`].
///
/// # Safety
/// As for [`handle_ref`], and no other reference to the handle may exist (the C caller must not
/// use it from two threads at once).
pub(crate) unsafe fn handle_mut<'a, T: Handle>(
    ptr: *mut T,
    name: &'static str,
) -> Result<&'a mut T, ArgError> {
    // SAFETY: forwarded contract.
    unsafe { check_handle(ptr, name)? };
    // SAFETY: checked non-NULL, aligned and live (magic) above; exclusivity is the caller's.
    Ok(unsafe { &mut *ptr })
}

/// Takes back ownership of a handle (for `_destroy` and consuming calls) and clears its magic.
///
/// # Safety
/// As for [`check_handle`]; `ptr` must have come from [`into_handle`] and not be used afterwards.
pub(crate) unsafe fn take_handle<T: Handle>(
    ptr: *mut T,
    name: &'static str,
) -> Result<Box<T>, ArgError> {
    // SAFETY: forwarded contract.
    unsafe { check_handle(ptr, name)? };
    // SAFETY: checked above; the magic is cleared so a second destroy is detected while the
    // memory is not reused.
    unsafe { std::ptr::write_volatile(ptr.cast::<u8>().add(T::MAGIC_OFFSET).cast::<u64>(), 0) };
    // SAFETY: the pointer came from Box::into_raw (into_handle) and ownership returns here once.
    Ok(unsafe { Box::from_raw(ptr) })
}

/// Checks a non-handle pointer argument for NULL.
pub(crate) fn non_null<T>(ptr: *const T, name: &'static str) -> Result<(), ArgError> {
    if ptr.is_null() {
        Err(ArgError::Null(name))
    } else {
        Ok(())
    }
}

/// Checks a C array argument of `count` elements of `T` at `ptr`, as Rust's slices need it:
/// non-NULL (NULL is allowed when `count` is 0), aligned, and at most `isize::MAX` bytes
/// (`PTRDIFF_MAX`, past which no object can be). Returns the pointer to use: `ptr`, or for an
/// empty array a dangling, aligned, non-NULL one (a NULL slice is undefined behaviour even
/// when empty).
pub(crate) fn c_array<T>(
    ptr: *const T,
    count: usize,
    name: &'static str,
) -> Result<*const T, ArgError> {
    if count == 0 {
        return Ok(std::ptr::NonNull::<T>::dangling().as_ptr());
    }
    non_null(ptr, name)?;
    if !ptr.is_aligned() {
        return Err(ArgError::Invalid(name, "not aligned for its element type"));
    }
    match count.checked_mul(std::mem::size_of::<T>()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(ptr),
        _ => Err(ArgError::Invalid(
            name,
            "length past PTRDIFF_MAX bytes (no object is that large)",
        )),
    }
}

/// The `len` bytes at `ptr` as a writable slice, checked as [`c_array`].
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` points to `len` writable bytes that nothing else
/// uses while the slice lives.
pub(crate) unsafe fn c_bytes_mut<'a>(
    ptr: *mut c_void,
    len: usize,
    name: &'static str,
) -> Result<&'a mut [u8], ArgError> {
    let ptr = c_array(ptr.cast::<u8>(), len, name)?;
    // SAFETY: non-NULL and aligned (c_array), at most isize::MAX bytes, writable and unshared
    // per the caller's contract (or dangling for length 0, which a slice allows).
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast_mut(), len) })
}

/// The start of `bytes` for C, NULL when they are empty: an empty Rust slice's pointer is a
/// dangling non-null address (0x1), which Go's runtime rejects as a bad pointer once such a value
/// sits in a goroutine's stack (cgo callers copy these fields into Go variables).
pub(crate) fn c_bytes(bytes: &[u8]) -> *const u8 {
    if bytes.is_empty() {
        std::ptr::null()
    } else {
        bytes.as_ptr()
    }
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` must be NULL or a NUL-terminated string readable for the call.
pub(crate) unsafe fn c_str<'a>(
    ptr: *const c_char,
    name: &'static str,
) -> Result<&'a str, swucx_status_t> {
    if ptr.is_null() {
        return Err(ArgError::Null(name).fail());
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| {
        set_last_error(&format!("argument `{name}` is not valid UTF-8"));
        SWUCX_ERR_UTF8
    })
}

/// `ptr` as a byte slice of `len` bytes, checked as [`c_array`].
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` must be readable for `len` bytes for the
/// lifetime of the slice.
pub(crate) unsafe fn byte_slice<'a>(
    ptr: *const c_void,
    len: usize,
    name: &'static str,
) -> Result<&'a [u8], ArgError> {
    let ptr = c_array(ptr.cast::<u8>(), len, name)?;
    // SAFETY: non-NULL and aligned (c_array), at most isize::MAX bytes, readable per the
    // caller's contract (or dangling for length 0, which a slice allows).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Early-returns the function's fallback if a pointer argument is unusable.
macro_rules! try_arg {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::capi::ArgError::fail(e),
        }
    };
}
pub(crate) use try_arg;

/// Borrows a handle argument or returns the fallback: `let w = try_ref!(worker);`.
macro_rules! try_ref {
    ($p:ident) => {
        // SAFETY: C callers pass NULL or a handle from this library (docs/c-api.md); the helper
        // checks NULL, alignment and the type's magic before borrowing.
        $crate::capi::try_arg!(unsafe { $crate::capi::handle_ref($p, stringify!($p)) })
    };
}
pub(crate) use try_ref;

/// Mutably borrows a handle argument or returns the fallback.
macro_rules! try_mut {
    ($p:ident) => {
        // SAFETY: as for try_ref; C callers use a request from one thread at a time.
        $crate::capi::try_arg!(unsafe { $crate::capi::handle_mut($p, stringify!($p)) })
    };
}
pub(crate) use try_mut;

/// Takes ownership of a handle argument (destroy, consume) or returns the fallback.
macro_rules! try_take {
    ($p:ident) => {
        // SAFETY: as for try_ref; the C caller gives the handle up with this call.
        $crate::capi::try_arg!(unsafe { $crate::capi::take_handle($p, stringify!($p)) })
    };
}
pub(crate) use try_take;

/// Checks an out-pointer: non-NULL, and aligned for its type (a misaligned one is no valid C
/// pointer to its type: garbage, refused with `SWUCX_ERR_INVALID_PARAM`).
pub(crate) fn out_ptr<T>(ptr: *mut T, name: &'static str) -> Result<(), ArgError> {
    non_null(ptr, name)?;
    if ptr.is_aligned() {
        Ok(())
    } else {
        Err(ArgError::Invalid(name, "not aligned for its type"))
    }
}

/// Checks an out-pointer with `out_ptr` or returns the fallback.
macro_rules! try_out {
    ($p:ident) => {
        $crate::capi::try_arg!($crate::capi::out_ptr($p, stringify!($p)))
    };
}
pub(crate) use try_out;

/// Checks an optional out-pointer (NULL: not wanted) as `try_out!` does when it is not NULL.
macro_rules! try_opt_out {
    ($p:ident) => {
        if !$p.is_null() {
            $crate::capi::try_out!($p);
        }
    };
}
pub(crate) use try_opt_out;

/// Writes an out-parameter that was checked with `try_out!` (or `try_opt_out!` and found
/// non-NULL).
macro_rules! write_out {
    ($p:ident, $v:expr) => {
        // SAFETY: checked non-NULL and aligned; the C caller passes a location writable for
        // the value.
        unsafe { $p.write($v) }
    };
}
pub(crate) use write_out;

/// Ends a function on a swucx error: records its text, returns its status.
pub(crate) fn fail(err: crate::Error) -> swucx_status_t {
    set_last_error(&err.to_string());
    swucx_status_t::from(err.status().0)
}

/// The status of an operation with no result: `SWUCX_OK`, or its error (recorded, as `fail`).
pub(crate) fn status_of(result: crate::Result<()>) -> swucx_status_t {
    match result {
        Ok(()) => status::SWUCX_OK,
        Err(e) => fail(e),
    }
}

/// The status of a `*_send_now`: as `status_of`, except that a refusal (`SWUCX_ERR_NO_RESOURCE`,
/// the expected answer for a message that cannot go at once) records no message.
pub(crate) fn status_of_send_now(result: crate::Result<()>) -> swucx_status_t {
    match result {
        Err(e) if e.status() == crate::Status::ERR_NO_RESOURCE => status::SWUCX_ERR_NO_RESOURCE,
        other => status_of(other),
    }
}

/// Ends a function on an error of swucx's own (C layer): records `msg`, returns `code`.
pub(crate) fn fail_with(code: swucx_status_t, msg: impl AsRef<str>) -> swucx_status_t {
    set_last_error(msg.as_ref());
    code
}

/// Variable-length bytes handed to C (a worker address, a memory descriptor, a text).
///
/// The bytes are followed by a NUL byte that is not counted, so text can be used as a C string.
/// The caller owns the handle: free it with `swucx_bytes_destroy`; the pointer from
/// `swucx_bytes_data` is valid until then. The bytes never change, so any number of threads
/// may read them at once; destroy the handle once none does.
///
/// Methods: `swucx_bytes_data`, `swucx_bytes_length`, `swucx_bytes_destroy`.
pub struct swucx_bytes_t {
    magic: u64,
    /// The bytes plus one trailing NUL.
    data: Vec<u8>,
}
impl_handle!(swucx_bytes_t, b"SWbytes\0");

impl swucx_bytes_t {
    pub(crate) fn new(mut data: Vec<u8>) -> swucx_bytes_t {
        data.push(0);
        swucx_bytes_t {
            magic: <Self as Handle>::MAGIC,
            data,
        }
    }
}

/// The start of the bytes (followed by a NUL byte not counted in the length). Valid until the
/// handle is destroyed. NULL for a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_bytes_data(bytes: *const swucx_bytes_t) -> *const u8 {
    boundary(|| try_ref!(bytes).data.as_ptr())
}

/// The number of bytes (not counting the trailing NUL). 0 for a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_bytes_length(bytes: *const swucx_bytes_t) -> usize {
    boundary(|| try_ref!(bytes).data.len() - 1)
}

/// Frees a bytes handle. NULL is a no-op. Using the handle (or its data) afterwards, or freeing
/// it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE` only while its memory is
/// not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_bytes_destroy(bytes: *mut swucx_bytes_t) {
    boundary(|| {
        if !bytes.is_null() {
            drop(try_take!(bytes));
        }
    })
}
