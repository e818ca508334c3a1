//! Private FFI layer: bindgen output over `cbits/ucx_wrapper.h` (the system UCX plus the C shims).
//! Nothing here is public; the safe types in the rest of the crate are the only way in.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unnecessary_transmutes,
    unused_imports
)]

include!(concat!(env!("OUT_DIR"), "/ucx_sys.rs"));
