//! Status codes, their text, and the thread-local detail message of the last failure.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};

use super::boundary;
use crate::Status;

/// A status code: `SWUCX_OK` (0), `SWUCX_INPROGRESS` (1), or a negative error.
///
/// UCX's codes (`ucs_status_t`, 1 to -100) keep their values; swucx's own codes start at -1000.
/// Codes are never renumbered.
pub type swucx_status_t = i32;

/// Success.
pub const SWUCX_OK: swucx_status_t = 0;
/// The operation has started and has not completed yet.
pub const SWUCX_INPROGRESS: swucx_status_t = 1;
/// UCX: no pending message.
pub const SWUCX_ERR_NO_MESSAGE: swucx_status_t = -1;
/// UCX: no resources are available to initiate the operation.
pub const SWUCX_ERR_NO_RESOURCE: swucx_status_t = -2;
/// UCX: input/output error.
pub const SWUCX_ERR_IO_ERROR: swucx_status_t = -3;
/// UCX: out of memory.
pub const SWUCX_ERR_NO_MEMORY: swucx_status_t = -4;
/// UCX: invalid parameter.
pub const SWUCX_ERR_INVALID_PARAM: swucx_status_t = -5;
/// UCX: destination is unreachable.
pub const SWUCX_ERR_UNREACHABLE: swucx_status_t = -6;
/// UCX: address not valid (also: an address string swucx could not parse).
pub const SWUCX_ERR_INVALID_ADDR: swucx_status_t = -7;
/// UCX: function not implemented.
pub const SWUCX_ERR_NOT_IMPLEMENTED: swucx_status_t = -8;
/// UCX: message truncated (the receive buffer is shorter than the message).
pub const SWUCX_ERR_MESSAGE_TRUNCATED: swucx_status_t = -9;
/// UCX: no progress.
pub const SWUCX_ERR_NO_PROGRESS: swucx_status_t = -10;
/// UCX: provided buffer is too small.
pub const SWUCX_ERR_BUFFER_TOO_SMALL: swucx_status_t = -11;
/// UCX: no such element (also: an active message has no reply endpoint).
pub const SWUCX_ERR_NO_ELEM: swucx_status_t = -12;
/// UCX: failed to connect some of the requested endpoints.
pub const SWUCX_ERR_SOME_CONNECTS_FAILED: swucx_status_t = -13;
/// UCX: no such device.
pub const SWUCX_ERR_NO_DEVICE: swucx_status_t = -14;
/// UCX: device is busy (also from `swucx_worker_arm`: events are pending, progress first).
pub const SWUCX_ERR_BUSY: swucx_status_t = -15;
/// UCX: request canceled.
pub const SWUCX_ERR_CANCELED: swucx_status_t = -16;
/// UCX: shared memory error.
pub const SWUCX_ERR_SHMEM_SEGMENT: swucx_status_t = -17;
/// UCX: element already exists.
pub const SWUCX_ERR_ALREADY_EXISTS: swucx_status_t = -18;
/// UCX: index out of range (also: an RMA range outside the remote region).
pub const SWUCX_ERR_OUT_OF_RANGE: swucx_status_t = -19;
/// UCX: operation timed out (also: a swucx wait or accept whose timeout passed).
pub const SWUCX_ERR_TIMED_OUT: swucx_status_t = -20;
/// UCX: user-defined limit was reached.
pub const SWUCX_ERR_EXCEEDS_LIMIT: swucx_status_t = -21;
/// UCX: unsupported operation.
pub const SWUCX_ERR_UNSUPPORTED: swucx_status_t = -22;
/// UCX: operation rejected by the remote peer.
pub const SWUCX_ERR_REJECTED: swucx_status_t = -23;
/// UCX: endpoint is not connected (also: the endpoint was closed).
pub const SWUCX_ERR_NOT_CONNECTED: swucx_status_t = -24;
/// UCX: connection reset by the remote peer.
pub const SWUCX_ERR_CONNECTION_RESET: swucx_status_t = -25;
/// UCX: endpoint timeout (the peer stopped answering).
pub const SWUCX_ERR_ENDPOINT_TIMEOUT: swucx_status_t = -80;

/// swucx: a pointer argument was NULL.
pub const SWUCX_ERR_NULL_ARG: swucx_status_t = -1000;
/// swucx: the library panicked (a bug); the detail is in `swucx_last_error_message`.
pub const SWUCX_ERR_PANIC: swucx_status_t = -1001;
/// swucx: the call is not allowed in the object's current state (a request not complete yet, an
/// active message already received or kept). A wait inside a callback is `SWUCX_ERR_BUSY`.
pub const SWUCX_ERR_INVALID_STATE: swucx_status_t = -1002;
/// swucx: a string argument was not valid UTF-8.
pub const SWUCX_ERR_UTF8: swucx_status_t = -1003;
/// swucx: a handle argument is not a live handle of the expected type (destroyed, of another
/// type, or garbage; detected where possible, not guaranteed).
pub const SWUCX_ERR_BAD_HANDLE: swucx_status_t = -1004;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the detail message of a failure on this thread (into the thread's buffer: no
/// allocation once it is long enough).
pub(crate) fn set_last_error(msg: &str) {
    // `try_with`: a call from a thread-local destructor (the thread's storage already gone)
    // keeps no message rather than panicking, which the panic boundary could not catch.
    let _ = LAST_ERROR.try_with(|last| {
        let mut last = last.borrow_mut();
        last.clear();
        last.push_str(msg);
    });
}

/// A static, NUL-terminated text for `status`; never NULL ("Unknown error" for codes nobody
/// defines). UCX codes get UCX's own text (`ucs_status_string`).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_status_string(status: swucx_status_t) -> *const c_char {
    let own: &'static CStr = match status {
        SWUCX_ERR_NULL_ARG => c"NULL argument",
        SWUCX_ERR_PANIC => c"panic inside swucx",
        SWUCX_ERR_INVALID_STATE => c"invalid state for this call",
        SWUCX_ERR_UTF8 => c"string is not valid UTF-8",
        SWUCX_ERR_BAD_HANDLE => c"not a live handle of the expected type",
        -100..=1 => {
            let text = boundary(|| static_text(Status(status as i8)));
            return if text.is_null() {
                c"Unknown error".as_ptr()
            } else {
                text
            };
        }
        _ => c"Unknown error",
    };
    own.as_ptr()
}

/// UCX's status text as a static C string, cached per code (UCX's strings are static, but the
/// core exposes them as `&str`, which is not NUL-terminated by type).
fn static_text(status: Status) -> *const c_char {
    use std::sync::OnceLock;
    static TEXTS: OnceLock<Vec<std::ffi::CString>> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        (-100i32..=1)
            .map(|code| std::ffi::CString::new(Status(code as i8).as_str()).unwrap_or_default())
            .collect()
    });
    texts[(i32::from(status.0) + 100) as usize].as_ptr()
}

/// True for the codes that mean the peer or the connection to it failed (connection reset,
/// endpoint timeout, the link and endpoint failure ranges, unreachable, not connected, I/O error).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_status_is_peer_failure(status: swucx_status_t) -> bool {
    (-100..=1).contains(&status) && Status(status as i8).is_peer_failure()
}

/// Copies the detail message of the last failed swucx call on this thread into `buf`, with
/// `snprintf` semantics: writes at most `len - 1` bytes plus a NUL (nothing if `len` is 0, or if
/// `buf` is NULL) and returns the full length of the message, not counting the NUL. The message
/// stays until the next failing call on the same thread; "" if none failed yet.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_last_error_message(buf: *mut c_char, len: usize) -> usize {
    boundary(|| {
        let copy_out = |msg: &str| {
            if !buf.is_null() && len > 0 {
                let n = msg.len().min(len - 1);
                // SAFETY: the caller gives `len` writable bytes at `buf`; n + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            msg.len()
        };
        // From a thread-local destructor the message is gone: "".
        LAST_ERROR
            .try_with(|last| copy_out(&last.borrow()))
            .unwrap_or_else(|_| copy_out(""))
    })
}
