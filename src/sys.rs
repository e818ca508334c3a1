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

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::size_of;

    /// The structures Rust fills in and hands to UCX (directly or through the shims) must have
    /// the size the C compiler gives them with the same headers.
    #[test]
    fn rust_and_c_agree_on_struct_sizes() {
        // SAFETY: the shims only return sizeof() of a type.
        unsafe {
            assert_eq!(swucx_shim_sizeof_ucp_params(), size_of::<ucp_params_t>());
            assert_eq!(
                swucx_shim_sizeof_ucp_worker_params(),
                size_of::<ucp_worker_params_t>()
            );
            assert_eq!(
                swucx_shim_sizeof_ucp_ep_params(),
                size_of::<ucp_ep_params_t>()
            );
            assert_eq!(
                swucx_shim_sizeof_ucp_listener_params(),
                size_of::<ucp_listener_params_t>()
            );
            assert_eq!(
                swucx_shim_sizeof_ucp_request_param(),
                size_of::<ucp_request_param_t>()
            );
            assert_eq!(
                swucx_shim_sizeof_ucp_mem_map_params(),
                size_of::<ucp_mem_map_params_t>()
            );
            assert_eq!(
                swucx_shim_sizeof_ucp_am_handler_param(),
                size_of::<ucp_am_handler_param_t>()
            );
            assert_eq!(
                swucx_shim_sizeof_ucp_am_recv_param(),
                size_of::<ucp_am_recv_param_t>()
            );
        }
        assert_eq!(size_of::<ucs_status_t>(), 1);
        assert_eq!(
            size_of::<libc::sockaddr_storage>(),
            size_of::<sockaddr_storage>()
        );
    }
}
