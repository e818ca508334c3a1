//! `swucx_context_t`: a UCX context (features and configuration).

use std::ffi::c_char;

use super::status::{SWUCX_ERR_INVALID_PARAM, SWUCX_OK, swucx_status_t};
use super::{
    Handle, boundary, c_str, fail, impl_handle, into_handle, try_arg, try_out, try_ref, try_take,
    write_out,
};
use crate::{Context, Features};

/// A UCX context: the features and configuration shared by every worker and memory region made
/// from it. Under the hood: a reference to `swucx::Context`; destroying it while workers or
/// memory regions exist only drops your reference (they keep the context alive). Any thread.
///
/// Methods: `swucx_context_create`, `swucx_context_destroy`, `swucx_worker_create`,
/// `swucx_engine_create`, `swucx_mem_map`, `swucx_mem_allocate`.
pub struct swucx_context_t {
    magic: u64,
    pub(crate) context: Context,
}
impl_handle!(swucx_context_t, b"SWctx\0\0\0");

/// Tag matching (`UCP_FEATURE_TAG`).
pub const SWUCX_FEATURE_TAG: u64 = 1 << 0;
/// Byte streams (`UCP_FEATURE_STREAM`). Not in the default: UCX 1.13 aborts a process with
/// streams on that receives an empty stream message, which any peer that can connect may send.
/// Enable them only where every peer is trusted.
pub const SWUCX_FEATURE_STREAM: u64 = 1 << 1;
/// Active messages (`UCP_FEATURE_AM`).
pub const SWUCX_FEATURE_AM: u64 = 1 << 2;
/// Remote memory access: put and get (`UCP_FEATURE_RMA`).
pub const SWUCX_FEATURE_RMA: u64 = 1 << 3;
/// Event-fd wakeup for sleeping workers (`UCP_FEATURE_WAKEUP`).
pub const SWUCX_FEATURE_WAKEUP: u64 = 1 << 4;
/// Every feature, streams included.
pub const SWUCX_FEATURE_ALL: u64 = 0x1f;
/// The default features: every one but streams (`SWUCX_FEATURE_STREAM`).
pub const SWUCX_FEATURE_DEFAULT: u64 = SWUCX_FEATURE_ALL & !SWUCX_FEATURE_STREAM;

/// `swucx_context_params_t.features` is set.
pub const SWUCX_CONTEXT_PARAM_FIELD_FEATURES: u64 = 1 << 0;
/// `swucx_context_params_t.name` is set.
pub const SWUCX_CONTEXT_PARAM_FIELD_NAME: u64 = 1 << 1;
/// `swucx_context_params_t.config` and `config_count` are set.
pub const SWUCX_CONTEXT_PARAM_FIELD_CONFIG: u64 = 1 << 2;
/// `swucx_context_params_t.flags` is set.
pub const SWUCX_CONTEXT_PARAM_FIELD_FLAGS: u64 = 1 << 3;

/// Endpoints without peer-failure handling (needed when the only transport is `self`).
pub const SWUCX_CONTEXT_FLAG_NO_PEER_FAILURE: u64 = 1 << 0;
/// Skip swucx's default UCX settings (shared-memory error handling, short keepalive, ...).
pub const SWUCX_CONTEXT_FLAG_NO_DEFAULT_CONFIG: u64 = 1 << 1;

/// One UCX configuration setting: the variable name without `UCX_` and its value, e.g.
/// `{"TLS", "tcp,self"}`. Overrides the environment for this context only.
#[repr(C)]
pub struct swucx_config_entry_t {
    /// Variable name without the `UCX_` prefix.
    pub key: *const c_char,
    /// Value.
    pub value: *const c_char,
}

/// Parameters of `swucx_context_create`. Fields not named in `field_mask` take their defaults.
#[repr(C)]
pub struct swucx_context_params_t {
    /// Which fields are set: `SWUCX_CONTEXT_PARAM_FIELD_*`.
    pub field_mask: u64,
    /// `SWUCX_FEATURE_*` bits (default: `SWUCX_FEATURE_DEFAULT`, all but streams).
    pub features: u64,
    /// A name for UCX's logs (NUL-terminated UTF-8).
    pub name: *const c_char,
    /// UCX configuration overrides, `config_count` entries.
    pub config: *const swucx_config_entry_t,
    /// Number of entries in `config`.
    pub config_count: usize,
    /// `SWUCX_CONTEXT_FLAG_*` bits (default: none).
    pub flags: u64,
}

/// Why `params` cannot be taken, if it sets bits no version of this API defines (a caller built
/// against a newer header, or garbage) or no feature at all.
fn unknown_bits(p: &swucx_context_params_t) -> Option<String> {
    const FIELDS: u64 = SWUCX_CONTEXT_PARAM_FIELD_FEATURES
        | SWUCX_CONTEXT_PARAM_FIELD_NAME
        | SWUCX_CONTEXT_PARAM_FIELD_CONFIG
        | SWUCX_CONTEXT_PARAM_FIELD_FLAGS;
    const FLAGS: u64 = SWUCX_CONTEXT_FLAG_NO_PEER_FAILURE | SWUCX_CONTEXT_FLAG_NO_DEFAULT_CONFIG;
    let has = |bit: u64| p.field_mask & bit != 0;
    if p.field_mask & !FIELDS != 0 {
        return Some(format!(
            "unknown field_mask bits {:#x}",
            p.field_mask & !FIELDS
        ));
    }
    if has(SWUCX_CONTEXT_PARAM_FIELD_FEATURES) {
        if p.features & !SWUCX_FEATURE_ALL != 0 {
            return Some(format!(
                "unknown feature bits {:#x}",
                p.features & !SWUCX_FEATURE_ALL
            ));
        }
        if p.features == 0 {
            return Some("no features (SWUCX_FEATURE_DEFAULT is the usual set)".to_string());
        }
    }
    if has(SWUCX_CONTEXT_PARAM_FIELD_FLAGS) && p.flags & !FLAGS != 0 {
        return Some(format!("unknown flag bits {:#x}", p.flags & !FLAGS));
    }
    None
}

/// Creates a context. `params` may be NULL for all defaults (`SWUCX_FEATURE_DEFAULT`, swucx's
/// default configuration, UCX settings from the environment). Bits `field_mask`, `features`
/// or `flags` do not define, and an empty feature set, are `SWUCX_ERR_INVALID_PARAM`. On success writes the new handle to
/// `*context_p`; destroy it with `swucx_context_destroy`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_context_create(
    params: *const swucx_context_params_t,
    context_p: *mut *mut swucx_context_t,
) -> swucx_status_t {
    boundary(|| {
        try_out!(context_p);
        let mut builder = Context::builder();
        // SAFETY: params is NULL or points to a params struct the caller filled in.
        if let Some(p) = unsafe { params.as_ref() } {
            let has = |bit: u64| p.field_mask & bit != 0;
            if let Some(refused) = unknown_bits(p) {
                return super::fail_with(SWUCX_ERR_INVALID_PARAM, refused);
            }
            if has(SWUCX_CONTEXT_PARAM_FIELD_FEATURES) {
                let on = |bit: u64| p.features & bit != 0;
                builder = builder.features(Features {
                    tag: on(SWUCX_FEATURE_TAG),
                    stream: on(SWUCX_FEATURE_STREAM),
                    am: on(SWUCX_FEATURE_AM),
                    rma: on(SWUCX_FEATURE_RMA),
                    wakeup: on(SWUCX_FEATURE_WAKEUP),
                });
            }
            if has(SWUCX_CONTEXT_PARAM_FIELD_NAME) {
                // SAFETY: the caller set the field: a NUL-terminated string.
                let name = match unsafe { c_str(p.name, "params->name") } {
                    Ok(name) => name,
                    Err(status) => return status,
                };
                builder = builder.name(name);
            }
            if has(SWUCX_CONTEXT_PARAM_FIELD_CONFIG) {
                let config = try_arg!(super::c_array(p.config, p.config_count, "params->config"));
                // SAFETY: checked by c_array (non-NULL, aligned, at most isize::MAX bytes); the
                // caller gives config_count readable entries.
                let entries = unsafe { std::slice::from_raw_parts(config, p.config_count) };
                for entry in entries {
                    // SAFETY: each entry holds two NUL-terminated strings.
                    let (key, value) = match unsafe {
                        (
                            c_str(entry.key, "params->config[].key"),
                            c_str(entry.value, "params->config[].value"),
                        )
                    } {
                        (Ok(k), Ok(v)) => (k, v),
                        (Err(status), _) | (_, Err(status)) => return status,
                    };
                    builder = builder.config(key, value);
                }
            }
            if has(SWUCX_CONTEXT_PARAM_FIELD_FLAGS) {
                if p.flags & SWUCX_CONTEXT_FLAG_NO_PEER_FAILURE != 0 {
                    builder = builder.without_peer_failure_handling();
                }
                if p.flags & SWUCX_CONTEXT_FLAG_NO_DEFAULT_CONFIG != 0 {
                    builder = builder.without_default_config();
                }
            }
        }
        match builder.build() {
            Ok(context) => {
                write_out!(
                    context_p,
                    into_handle(swucx_context_t {
                        magic: swucx_context_t::MAGIC,
                        context,
                    })
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Releases the caller's reference to the context. NULL is a no-op. Workers and memory regions made
/// from it stay usable; UCX's context is cleaned up when the last of them is gone. Using the handle
/// afterwards, or destroying it again, is undefined behaviour (detected as `SWUCX_ERR_BAD_HANDLE`
/// only while its memory is not reused).
#[unsafe(no_mangle)]
pub extern "C" fn swucx_context_destroy(context: *mut swucx_context_t) {
    boundary(|| {
        if !context.is_null() {
            drop(try_take!(context));
        }
    })
}

/// The `SWUCX_FEATURE_*` bits the context was created with. 0 for a NULL or invalid handle.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_context_features(context: *const swucx_context_t) -> u64 {
    boundary(|| {
        let f = try_ref!(context).context.features();
        let bit = |on: bool, b: u64| if on { b } else { 0 };
        bit(f.tag, SWUCX_FEATURE_TAG)
            | bit(f.stream, SWUCX_FEATURE_STREAM)
            | bit(f.am, SWUCX_FEATURE_AM)
            | bit(f.rma, SWUCX_FEATURE_RMA)
            | bit(f.wakeup, SWUCX_FEATURE_WAKEUP)
    })
}
