//! `Status` (a UCX status code) and `Error` (the UCX call that failed plus its status).

use std::ffi::CStr;
use std::fmt;

use crate::sys;

/// A UCX status code (`ucs_status_t`): 0 is OK, 1 is in progress, negative values are errors.
///
/// A newtype over the integer, never a Rust enum: UCX may return codes this crate does not name.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub i8);

macro_rules! status_consts {
    ($($name:ident = $ucs:ident;)*) => {
        impl Status {
            $(
                #[doc = concat!("`", stringify!($ucs), "`")]
                pub const $name: Status = Status(sys::ucs_status_t::$ucs.0);
            )*
        }
    };
}

status_consts! {
    OK = UCS_OK;
    INPROGRESS = UCS_INPROGRESS;
    ERR_NO_MESSAGE = UCS_ERR_NO_MESSAGE;
    ERR_NO_RESOURCE = UCS_ERR_NO_RESOURCE;
    ERR_IO_ERROR = UCS_ERR_IO_ERROR;
    ERR_NO_MEMORY = UCS_ERR_NO_MEMORY;
    ERR_INVALID_PARAM = UCS_ERR_INVALID_PARAM;
    ERR_UNREACHABLE = UCS_ERR_UNREACHABLE;
    ERR_INVALID_ADDR = UCS_ERR_INVALID_ADDR;
    ERR_NOT_IMPLEMENTED = UCS_ERR_NOT_IMPLEMENTED;
    ERR_MESSAGE_TRUNCATED = UCS_ERR_MESSAGE_TRUNCATED;
    ERR_NO_PROGRESS = UCS_ERR_NO_PROGRESS;
    ERR_BUFFER_TOO_SMALL = UCS_ERR_BUFFER_TOO_SMALL;
    ERR_NO_ELEM = UCS_ERR_NO_ELEM;
    ERR_SOME_CONNECTS_FAILED = UCS_ERR_SOME_CONNECTS_FAILED;
    ERR_NO_DEVICE = UCS_ERR_NO_DEVICE;
    ERR_BUSY = UCS_ERR_BUSY;
    ERR_CANCELED = UCS_ERR_CANCELED;
    ERR_SHMEM_SEGMENT = UCS_ERR_SHMEM_SEGMENT;
    ERR_ALREADY_EXISTS = UCS_ERR_ALREADY_EXISTS;
    ERR_OUT_OF_RANGE = UCS_ERR_OUT_OF_RANGE;
    ERR_TIMED_OUT = UCS_ERR_TIMED_OUT;
    ERR_EXCEEDS_LIMIT = UCS_ERR_EXCEEDS_LIMIT;
    ERR_UNSUPPORTED = UCS_ERR_UNSUPPORTED;
    ERR_REJECTED = UCS_ERR_REJECTED;
    ERR_NOT_CONNECTED = UCS_ERR_NOT_CONNECTED;
    ERR_CONNECTION_RESET = UCS_ERR_CONNECTION_RESET;
    ERR_ENDPOINT_TIMEOUT = UCS_ERR_ENDPOINT_TIMEOUT;
}

impl Status {
    pub(crate) fn from_raw(raw: sys::ucs_status_t) -> Status {
        Status(raw.0)
    }

    pub(crate) fn to_raw(self) -> sys::ucs_status_t {
        sys::ucs_status_t(self.0)
    }

    /// True for `OK`.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// True for any negative (error) code.
    pub fn is_err(self) -> bool {
        self.0 < 0
    }

    /// True for the codes UCX reports when the peer or the connection to it failed
    /// (`UCS_ERR_CONNECTION_RESET`, `UCS_ERR_ENDPOINT_TIMEOUT`, the link and endpoint failure
    /// ranges, `UCS_ERR_UNREACHABLE`, `UCS_ERR_NOT_CONNECTED`, and `UCS_ERR_IO_ERROR`, which
    /// UCX's shared-memory and tcp transports report for a peer gone mid-transfer).
    pub fn is_peer_failure(self) -> bool {
        let code = self.0;
        code == Status::ERR_CONNECTION_RESET.0
            || code == Status::ERR_UNREACHABLE.0
            || code == Status::ERR_NOT_CONNECTED.0
            || code == Status::ERR_IO_ERROR.0
            || (sys::ucs_status_t::UCS_ERR_LAST_ENDPOINT_FAILURE.0
                ..=sys::ucs_status_t::UCS_ERR_FIRST_LINK_FAILURE.0)
                .contains(&code)
    }

    /// UCX's text for this code (`ucs_status_string`).
    pub fn as_str(self) -> &'static str {
        self.as_c_str().to_str().unwrap_or("invalid status text")
    }

    /// UCX's text for this code as a C string (for handing to C callers as is).
    pub fn as_c_str(self) -> &'static CStr {
        // SAFETY: ucs_status_string accepts any value and returns a pointer to a static,
        // NUL-terminated string ("Unknown error" for codes it does not know).
        unsafe { CStr::from_ptr(sys::ucs_status_string(self.to_raw())) }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({}: {})", self.0, self.as_str())
    }
}

/// An error from swucx: the UCX call (or swucx check) that failed, its status, and detail.
///
/// One pointer wide (the parts are boxed), so `Result<T>` is no bigger than `T` when `T` has a
/// spare pointer niche, and moving an `Ok` value never copies an error's parts: with the status
/// byte inline, its padding overlapped the `Ok` payload and every move of a `Result<Request<_>>`
/// copied those bytes in overlapping loads that stalled on store forwarding (`perf annotate` of
/// `examples/op_cost.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}", .0.op, .0.status, detail_suffix(&.0.detail))]
pub struct Error(Box<ErrorParts>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorParts {
    op: &'static str,
    status: Status,
    detail: Option<String>,
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

impl Error {
    /// An error for `op` with `status` and no detail.
    #[cold]
    pub fn new(op: &'static str, status: Status) -> Error {
        Error(Box::new(ErrorParts {
            op,
            status,
            detail: None,
        }))
    }

    /// An error for `op` with `status` and a detail message.
    #[cold]
    pub fn with_detail(op: &'static str, status: Status, detail: impl Into<String>) -> Error {
        Error(Box::new(ErrorParts {
            op,
            status,
            detail: Some(detail.into()),
        }))
    }

    /// The UCX function or swucx operation that failed, e.g. `"ucp_ep_create"`.
    pub fn op(&self) -> &'static str {
        self.0.op
    }

    /// The status code of this error.
    pub fn status(&self) -> Status {
        self.0.status
    }

    /// Extra context (an address, a size), if any.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// The same error with `detail` in place of any it had.
    pub(crate) fn with_new_detail(mut self, detail: impl Into<String>) -> Error {
        self.0.detail = Some(detail.into());
        self
    }
}

/// The result type of every fallible swucx call.
pub type Result<T> = std::result::Result<T, Error>;

/// Turns a UCX status into `Ok(())` or an `Error` naming `op`.
pub(crate) fn check(op: &'static str, raw: sys::ucs_status_t) -> Result<()> {
    let status = Status::from_raw(raw);
    if status.is_ok() {
        Ok(())
    } else {
        Err(Error::new(op, status))
    }
}

/// What a `*_nbx` call returned: done at once, a request to wait for, or an error.
pub(crate) enum StatusPtr {
    Done,
    Pending(*mut libc::c_void),
    Failed(Status),
}

/// The lowest pointer value that encodes an error: `UCS_PTR_IS_ERR(p)` is `(uintptr_t)p >=
/// (uintptr_t)UCS_ERR_LAST`. The test below holds this against UCX's own macros (C shims).
const FIRST_ERROR_PTR: usize = sys::ucs_status_t::UCS_ERR_LAST.0 as isize as usize;

/// Decodes a `ucs_status_ptr_t` as UCX's `UCS_PTR_*` macros do: NULL is `UCS_OK`, a value at or
/// above `FIRST_ERROR_PTR` is an error code (read with `UCS_PTR_STATUS`), anything else is a
/// request. Runs on every operation, so the two common cases are decided here, without a call.
#[inline(always)]
pub(crate) fn decode_status_ptr(ptr: sys::ucs_status_ptr_t) -> StatusPtr {
    match ptr as usize {
        0 => StatusPtr::Done,
        value if value < FIRST_ERROR_PTR => StatusPtr::Pending(ptr),
        _ => decode_error_ptr(ptr),
    }
}

#[cold]
#[inline(never)]
fn decode_error_ptr(ptr: sys::ucs_status_ptr_t) -> StatusPtr {
    // SAFETY: the shim only looks at the pointer value; it never dereferences it.
    StatusPtr::Failed(Status::from_raw(unsafe { sys::swucx_shim_ptr_status(ptr) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_comes_from_ucx() {
        assert_eq!(Status::OK.as_str(), "Success");
        assert_eq!(Status::ERR_CANCELED.0, -16);
        assert!(Status::ERR_CONNECTION_RESET.is_peer_failure());
        assert!(Status::ERR_ENDPOINT_TIMEOUT.is_peer_failure());
        assert!(!Status::ERR_CANCELED.is_peer_failure());
        let err = Error::with_detail("ucp_ep_create", Status::ERR_UNREACHABLE, "10.0.0.2:1");
        assert_eq!(
            err.to_string(),
            "ucp_ep_create: Destination is unreachable (10.0.0.2:1)"
        );
    }

    #[test]
    fn status_ptr_decoding_uses_ucx_macros() {
        assert!(matches!(
            decode_status_ptr(std::ptr::null_mut()),
            StatusPtr::Done
        ));
        let err = Status::ERR_NO_MEMORY.0 as isize as *mut libc::c_void;
        assert!(
            matches!(decode_status_ptr(err), StatusPtr::Failed(s) if s == Status::ERR_NO_MEMORY)
        );
        let mut x = 0u64;
        let p = (&mut x as *mut u64).cast();
        assert!(matches!(decode_status_ptr(p), StatusPtr::Pending(q) if q == p));
        // Every status code and the values around the boundaries decode as UCX's macros say.
        let values = (i8::MIN..=0).map(|s| s as isize as usize).chain([
            1,
            4096,
            usize::MAX / 2,
            FIRST_ERROR_PTR - 1,
            FIRST_ERROR_PTR,
        ]);
        for value in values {
            let ptr = value as *mut libc::c_void;
            // SAFETY: the shims only look at the pointer values.
            let (is_err, is_ptr, status) = unsafe {
                (
                    sys::swucx_shim_ptr_is_err(ptr) != 0,
                    sys::swucx_shim_ptr_is_ptr(ptr) != 0,
                    Status::from_raw(sys::swucx_shim_ptr_status(ptr)),
                )
            };
            match decode_status_ptr(ptr) {
                StatusPtr::Done => assert!(value == 0 && !is_err && !is_ptr, "{value:#x}"),
                StatusPtr::Pending(q) => assert!(q == ptr && is_ptr && !is_err, "{value:#x}"),
                StatusPtr::Failed(s) => assert!(is_err && !is_ptr && s == status, "{value:#x}"),
            }
        }
    }
}
