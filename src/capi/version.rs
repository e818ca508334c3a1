//! Version of swucx and of the UCX library loaded at run time.

use std::ffi::{CString, c_char};
use std::sync::OnceLock;

use super::boundary;

/// Major version of the swucx this header belongs to (checked against Cargo.toml by the tests).
pub const SWUCX_VERSION_MAJOR: u32 = 0;
/// Minor version of the swucx this header belongs to.
pub const SWUCX_VERSION_MINOR: u32 = 1;
/// Patch version of the swucx this header belongs to.
pub const SWUCX_VERSION_PATCH: u32 = 0;

/// The version of the swucx library, e.g. "0.1.0" (static; never NULL).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_version() -> *const c_char {
    static VERSION: OnceLock<CString> = OnceLock::new();
    boundary(|| {
        VERSION
            .get_or_init(|| CString::new(crate::VERSION).unwrap_or_default())
            .as_ptr()
    })
}

/// The version of the UCX library loaded at run time, e.g. "1.13.1" (static; NULL only after an
/// internal panic).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_ucx_version() -> *const c_char {
    static VERSION: OnceLock<CString> = OnceLock::new();
    boundary(|| {
        VERSION
            .get_or_init(|| CString::new(crate::ucx_version()).unwrap_or_default())
            .as_ptr()
    })
}
