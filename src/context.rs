//! `Context`: one UCP context (`ucp_context_h`), the features it enables and its UCX configuration.

use std::ffi::{CStr, CString};
use std::ptr;
use std::sync::Arc;

use crate::keepalive::KeepAlive;
use crate::status::{Error, Result, Status, check};
use crate::sys;

/// One UCX setting swucx applies by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultSetting {
    /// The environment variables (without `UCX_`) that, when set, make swucx leave it alone.
    pub env: &'static [&'static str],
    /// The keys handed to `ucp_config_modify`, tried in order until UCX takes one: UCX 1.13
    /// takes a transport's setting only by its table's field name (`PUT_ENABLE`) and silently
    /// ignores the prefixed one, UCX 1.22 wants the prefixed one (`TCP_PUT_ENABLE`).
    pub keys: &'static [&'static str],
    /// The value.
    pub value: &'static str,
    /// Which contexts it applies to, by their transports.
    pub transports: DefaultFor,
    /// The oldest UCX release (major, minor) it applies to.
    pub since: (u32, u32),
}

/// Which contexts a [`DefaultSetting`] applies to, judged by `UCX_TLS` (the context's override or
/// the environment; unset means all transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultFor {
    /// Every context.
    All,
    /// Contexts whose transports may include shared memory (posix/sysv).
    MayUseShm,
    /// Contexts whose transports may include tcp.
    MayUseTcp,
    /// Contexts whose transports may include tcp but not shared memory (e.g. `tcp,self`).
    TcpWithoutShm,
}

impl DefaultSetting {
    /// Whether `key` (without `UCX_`) is one of this setting's keys or variables.
    fn names(&self, key: &str) -> bool {
        self.keys.contains(&key) || self.env.contains(&key)
    }
}

/// UCX 1.16 made protocols v2 the default (`UCX_PROTO_ENABLE=y`), which chooses protocols by
/// its own cost estimates.
const PROTOCOLS_V2: (u32, u32) = (1, 16);

/// UCX 1.22 brought `UCX_TCP_USER_TIMEOUT` (not in 1.17-1.21's libraries). Older releases take
/// the name and warn "invalid configuration" when a worker is created.
const TCP_USER_TIMEOUT_SINCE: (u32, u32) = (1, 22);

/// UCX configuration swucx sets unless the environment sets it (or the context disables
/// defaults):
/// - shared memory keeps working between processes when peer-failure handling is on (without
///   it UCX silently drops posix/sysv for error-handling endpoints). UCX 1.13 accepts this only
///   under the mm tables' field name `MM_ERROR_HANDLING`, which sets both
///   `UCX_POSIX_ERROR_HANDLING` and `UCX_SYSV_ERROR_HANDLING`;
/// - tcp's put zero-copy off when shared memory may be used: with it, client-server endpoints
///   between processes on one host move large messages over loopback TCP instead of shared
///   memory (half the bandwidth) and every progress call polls the tcp sockets (`epoll_wait`:
///   an idle progress of the accepting worker ~20 -> ~375 ns with UCX 1.22). Pure-tcp contexts
///   keep it;
/// - keepalive every 500 ms, so a dead peer on shared memory is noticed within about a second;
/// - tcp keepalive (`UCX_TCP_KEEPIDLE`, `_KEEPINTVL`, `_KEEPCNT`: 2 s, 1 s, 2 probes) on each
///   connection's setup socket (src/keepalive.rs), and, from UCX 1.22
///   (`UCX_TCP_USER_TIMEOUT`), a 10 s bound on how long data sent over tcp may go
///   unacknowledged: a peer whose host vanished fails its endpoints within about 4 s, those
///   connected by worker address (which have no setup socket) within about 10 s. Longer than
///   the keepalive because it also drops a live peer that stops reading (a process stopped in
///   a debugger), which keepalive does not;
/// - listeners bind with `SO_REUSEADDR`, so a restarted server gets its port back at once
///   instead of failing with "Address already in use" while the old connections sit in
///   TIME_WAIT (UCX's own default is off). UCX 1.13 takes it only under the connection
///   managers' table name `CM_REUSEADDR` (for `UCX_TCP_CM_REUSEADDR` and `UCX_RDMA_CM_REUSEADDR`);
/// - from UCX 1.16 (protocols v2), where tcp may be used, zero-copy sends only from 8 KiB: v2
///   sends tcp messages of 1 B and up by zero-copy, and UCX takes its short path (the only one
///   a send within the call, `*_send_now`, can use) only up to the smallest size any protocol
///   table gives short, so over tcp every such send of 1 B or more was refused (UCX 1.22);
/// - from UCX 1.16, where tcp may be used and shared memory may not, rendezvous by put
///   zero-copy: v2's default moves large tcp messages as fragments copied in and out (1 MiB
///   active messages over tcp loopback 0.8-1.0 GB/s; with this and the zero-copy threshold
///   2.5-3.3 GB/s, UCX 1.22). Not where shared memory may be used: it cost bandwidth between
///   processes on one host there.
pub const DEFAULT_CONFIG: &[DefaultSetting] = &[
    DefaultSetting {
        env: &[
            "POSIX_ERROR_HANDLING",
            "SYSV_ERROR_HANDLING",
            "MM_ERROR_HANDLING",
        ],
        keys: &["MM_ERROR_HANDLING"],
        value: "y",
        transports: DefaultFor::MayUseShm,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["TCP_PUT_ENABLE"],
        keys: &["PUT_ENABLE", "TCP_PUT_ENABLE"],
        value: "n",
        transports: DefaultFor::MayUseShm,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["KEEPALIVE_INTERVAL"],
        keys: &["KEEPALIVE_INTERVAL"],
        value: "500ms",
        transports: DefaultFor::All,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["TCP_KEEPIDLE"],
        keys: &["KEEPIDLE", "TCP_KEEPIDLE"],
        value: "2s",
        transports: DefaultFor::MayUseTcp,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["TCP_KEEPINTVL"],
        keys: &["KEEPINTVL", "TCP_KEEPINTVL"],
        value: "1s",
        transports: DefaultFor::MayUseTcp,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["TCP_KEEPCNT"],
        keys: &["KEEPCNT", "TCP_KEEPCNT"],
        value: "2",
        transports: DefaultFor::MayUseTcp,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["TCP_USER_TIMEOUT"],
        keys: &["TCP_USER_TIMEOUT"],
        value: "10s",
        transports: DefaultFor::MayUseTcp,
        since: TCP_USER_TIMEOUT_SINCE,
    },
    DefaultSetting {
        env: &["TCP_CM_REUSEADDR", "RDMA_CM_REUSEADDR"],
        keys: &["CM_REUSEADDR"],
        value: "y",
        transports: DefaultFor::All,
        since: (0, 0),
    },
    DefaultSetting {
        env: &["ZCOPY_THRESH"],
        keys: &["ZCOPY_THRESH"],
        value: "8k",
        transports: DefaultFor::MayUseTcp,
        since: PROTOCOLS_V2,
    },
    DefaultSetting {
        env: &["RNDV_SCHEME"],
        keys: &["RNDV_SCHEME"],
        value: "put_zcopy",
        transports: DefaultFor::TcpWithoutShm,
        since: PROTOCOLS_V2,
    },
];

/// The UCP features a context can enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Tag matching (`UCP_FEATURE_TAG`).
    pub tag: bool,
    /// Streams (`UCP_FEATURE_STREAM`). Off by default: UCX 1.13 aborts a process with streams
    /// on that receives an empty stream message, which any peer that can connect may send.
    /// Enable them only where every peer is trusted.
    pub stream: bool,
    /// Active messages (`UCP_FEATURE_AM`).
    pub am: bool,
    /// Remote memory access, put and get (`UCP_FEATURE_RMA`).
    pub rma: bool,
    /// Event-fd wakeup for sleeping workers (`UCP_FEATURE_WAKEUP`).
    pub wakeup: bool,
}

/// Every feature but streams (see [`Features::stream`]).
impl Default for Features {
    fn default() -> Self {
        Features {
            stream: false,
            ..Features::ALL
        }
    }
}

impl Features {
    /// Every feature, streams included.
    pub const ALL: Features = Features {
        tag: true,
        stream: true,
        am: true,
        rma: true,
        wakeup: true,
    };

    fn to_mask(self) -> u64 {
        let bit = |on: bool, f: sys::ucp_feature| if on { u64::from(f.0) } else { 0 };
        bit(self.tag, sys::ucp_feature::UCP_FEATURE_TAG)
            | bit(self.stream, sys::ucp_feature::UCP_FEATURE_STREAM)
            | bit(self.am, sys::ucp_feature::UCP_FEATURE_AM)
            | bit(self.rma, sys::ucp_feature::UCP_FEATURE_RMA)
            | bit(self.wakeup, sys::ucp_feature::UCP_FEATURE_WAKEUP)
    }
}

/// Builds a `Context`: features, a name, and UCX configuration overrides (`TLS`, `RNDV_SCHEME`, ...).
#[derive(Debug, Clone, Default)]
pub struct ContextBuilder {
    features: Features,
    name: Option<String>,
    overrides: Vec<(String, String)>,
    no_defaults: bool,
    no_peer_failure: bool,
}

impl ContextBuilder {
    /// Chooses the UCP features (default: all but streams, [`Features::stream`]).
    pub fn features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// Names the context in UCX's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets one UCX configuration value for this context only, e.g. `("TLS", "tcp,self")` or
    /// `("RNDV_SCHEME", "put_zcopy")`; the key is UCX's variable name without `UCX_`.
    /// Overrides win over the environment and over `DEFAULT_CONFIG`.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.push((key.into(), value.into()));
        self
    }

    /// Creates endpoints without peer-failure handling (`UCP_ERR_HANDLING_MODE_NONE`). Needed
    /// for transports that cannot detect a failed peer, such as `self` alone; a dead peer may
    /// then leave operations hanging. Default: peer-failure handling on.
    pub fn without_peer_failure_handling(mut self) -> Self {
        self.no_peer_failure = true;
        self
    }

    /// Skips `DEFAULT_CONFIG` (shm error handling, tcp put off, the short keepalive, listener
    /// address reuse; on UCX 1.16 and later the zero-copy threshold and the rendezvous scheme).
    pub fn without_default_config(mut self) -> Self {
        self.no_defaults = true;
        self
    }

    /// The value a UCX setting (its variable name without `UCX_`) takes in this context: the last
    /// override by any of its names, else the environment, else swucx's default (if any).
    fn effective(&self, env: &str) -> Option<String> {
        let default = DEFAULT_CONFIG.iter().find(|s| s.env.contains(&env));
        self.overrides
            .iter()
            .rev()
            .find(|(key, _)| key == env || default.is_some_and(|s| s.names(key)))
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var(format!("UCX_{env}")).ok())
            .or_else(|| {
                default
                    .filter(|_| !self.no_defaults)
                    .map(|s| s.value.to_string())
            })
    }

    /// Creates the context.
    pub fn build(self) -> Result<Context> {
        raise_async_event_limit();
        let config = UcxConfig::read()?;
        let keepalive = if self.no_peer_failure {
            None
        } else {
            KeepAlive::from_settings(
                self.effective("TCP_KEEPIDLE").as_deref(),
                self.effective("TCP_KEEPINTVL").as_deref(),
                self.effective("TCP_KEEPCNT").as_deref(),
            )?
        };
        if !self.no_defaults {
            let tls = self.effective("TLS");
            let shm = tls_may_use(tls.as_deref(), SHM_TRANSPORTS);
            let tcp = tls_may_use(tls.as_deref(), &["tcp"]);
            let version = ucx_release();
            for setting in DEFAULT_CONFIG {
                let in_env = setting
                    .env
                    .iter()
                    .any(|key| std::env::var_os(format!("UCX_{key}")).is_some());
                let overridden = self.overrides.iter().any(|(key, _)| setting.names(key));
                let applies = match setting.transports {
                    DefaultFor::All => true,
                    DefaultFor::MayUseShm => shm,
                    DefaultFor::MayUseTcp => tcp,
                    DefaultFor::TcpWithoutShm => tcp && !shm,
                };
                if !in_env && !overridden && applies && version >= setting.since {
                    // A UCX release that lacks a setting still works without it; an override,
                    // below, must apply.
                    if let Err(err) = config.set_any(setting.keys, setting.value) {
                        log::debug!("default UCX setting not applied: {err}");
                    }
                }
            }
        }
        for (key, value) in &self.overrides {
            // An override by one of a default's keys goes by all of them (whichever this UCX
            // takes).
            match DEFAULT_CONFIG
                .iter()
                .find(|s| s.keys.contains(&key.as_str()))
            {
                Some(setting) => config.set_any(setting.keys, value)?,
                None => config.set(key, value)?,
            }
        }
        let name = self
            .name
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| {
                Error::with_detail("ucp_init", Status::ERR_INVALID_PARAM, "NUL in name")
            })?;

        let mut params = sys::ucp_params_t {
            field_mask: u64::from(
                sys::ucp_params_field::UCP_PARAM_FIELD_FEATURES.0
                    | sys::ucp_params_field::UCP_PARAM_FIELD_MT_WORKERS_SHARED.0,
            ),
            features: self.features.to_mask(),
            mt_workers_shared: 1,
            ..Default::default()
        };
        if let Some(name) = &name {
            params.field_mask |= u64::from(sys::ucp_params_field::UCP_PARAM_FIELD_NAME.0);
            params.name = name.as_ptr();
        }
        let mut handle = ptr::null_mut();
        // SAFETY: params and config are valid for the call; UCX copies what it keeps (the name
        // included); handle is written only on success.
        check("ucp_init", unsafe {
            sys::swucx_shim_ucp_init(&params, config.0, &mut handle)
        })?;
        let mut inner = ContextInner {
            handle,
            features: self.features,
            peer_failure: !self.no_peer_failure,
            keepalive,
            memory_type_hint: false,
        };
        // (If the query fails, dropping `inner` releases the context.)
        let host_only = 1 << sys::ucs_memory_type::UCS_MEMORY_TYPE_HOST.0;
        inner.memory_type_hint = inner.memory_types()? != host_only;
        Ok(Context(Arc::new(inner)))
    }
}

/// The `UCX_TLS` names that select shared memory (posix/sysv).
const SHM_TRANSPORTS: &[&str] = &["sm", "shm", "mm", "posix", "sysv"];

/// Whether a `UCX_TLS` value (None: unset, i.e. all) can select a transport named in `names`
/// (or `all`). An exclusion list (`^...`) counts as one that can.
fn tls_may_use(tls: Option<&str>, names: &[&str]) -> bool {
    let Some(tls) = tls else { return true };
    let tls = tls.trim();
    if tls.starts_with('^') {
        return true;
    }
    tls.split(',')
        .map(|t| t.trim().trim_end_matches(":aux"))
        .any(|t| t == "all" || names.contains(&t))
}

/// A `ucp_config_t` read from the environment, released on drop.
struct UcxConfig(*mut sys::ucp_config_t);

impl UcxConfig {
    fn read() -> Result<UcxConfig> {
        let mut config = ptr::null_mut();
        // SAFETY: NULL prefix and file mean "UCX_ from the environment"; config is an out-pointer.
        check("ucp_config_read", unsafe {
            sys::ucp_config_read(ptr::null(), ptr::null(), &mut config)
        })?;
        Ok(UcxConfig(config))
    }

    fn set(&self, key: &str, value: &str) -> Result<()> {
        let invalid = || {
            Error::with_detail(
                "ucp_config_modify",
                Status::ERR_INVALID_PARAM,
                "NUL in key or value",
            )
        };
        let c_key = CString::new(key).map_err(|_| invalid())?;
        let c_value = CString::new(value).map_err(|_| invalid())?;
        // SAFETY: self.0 is a live config; both strings are NUL-terminated and outlive the call.
        let raw = unsafe { sys::ucp_config_modify(self.0, c_key.as_ptr(), c_value.as_ptr()) };
        check("ucp_config_modify", raw).map_err(|e| e.with_new_detail(format!("UCX_{key}={value}")))
    }

    /// Sets the first of `keys` UCX takes; the last one's error if it takes none.
    fn set_any(&self, keys: &[&str], value: &str) -> Result<()> {
        let mut outcome = Ok(());
        for key in keys {
            outcome = self.set(key, value);
            if outcome.is_ok() {
                break;
            }
        }
        outcome
    }
}

impl Drop for UcxConfig {
    fn drop(&mut self) {
        // SAFETY: self.0 came from ucp_config_read and is released once.
        unsafe { sys::ucp_config_release(self.0) }
    }
}

pub(crate) struct ContextInner {
    pub(crate) handle: sys::ucp_context_h,
    features: Features,
    peer_failure: bool,
    /// The keepalive armed on connection sockets (None: none; src/keepalive.rs).
    keepalive: Option<KeepAlive>,
    /// Whether operations tell UCX their buffers are host memory
    /// (`UCP_OP_ATTR_FIELD_MEMORY_TYPE`): only when UCX knows memory types besides host (a GPU
    /// memory domain), where it would otherwise look each buffer up. With host memory alone
    /// the hint bought nothing and measured slower (8 B active messages over shm, alternating
    /// runs, docs/bench.md finding 9).
    memory_type_hint: bool,
}

impl ContextInner {
    /// The memory types UCX supports on this context (bits by `ucs_memory_type`).
    fn memory_types(&self) -> Result<u64> {
        let mut attr = sys::ucp_context_attr {
            field_mask: u64::from(sys::ucp_context_attr_field::UCP_ATTR_FIELD_MEMORY_TYPES.0),
            ..Default::default()
        };
        // SAFETY: the handle is live; attr is a valid out-structure whose field mask asks for
        // the memory types only.
        check("ucp_context_query", unsafe {
            sys::ucp_context_query(self.handle, &mut attr)
        })?;
        Ok(attr.memory_types)
    }
}

// SAFETY: the context is created with mt_workers_shared, so UCX serializes access to its shared
// state; the handle itself is an immutable pointer.
unsafe impl Send for ContextInner {}
// SAFETY: as above.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // SAFETY: every worker and memory region holds a Context clone, so none is alive now.
        unsafe { sys::ucp_cleanup(self.handle) }
    }
}

/// A UCP context. Cheap to clone (reference counted); shared by every worker and memory region
/// made from it, and torn down when the last of them is dropped. `Send + Sync`.
#[derive(Clone)]
pub struct Context(pub(crate) Arc<ContextInner>);

impl Context {
    /// A context with the default features (all but streams: [`Features::stream`]) and
    /// swucx's default configuration.
    pub fn new() -> Result<Context> {
        Context::builder().build()
    }

    /// A builder for features and configuration overrides.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// The features this context was created with.
    pub fn features(&self) -> Features {
        self.0.features
    }

    /// Whether endpoints made from this context detect peer failure.
    pub fn peer_failure_handling(&self) -> bool {
        self.0.peer_failure
    }

    /// The TCP keepalive swucx arms on the socket of each connection made through a listener,
    /// from `UCX_TCP_KEEPIDLE`, `UCX_TCP_KEEPINTVL` and `UCX_TCP_KEEPCNT` as this context sees
    /// them (swucx's defaults: 2 s, 1 s, 2). None without peer-failure handling or when either
    /// is `inf` (src/keepalive.rs).
    pub fn keepalive(&self) -> Option<KeepAlive> {
        self.0.keepalive
    }

    pub(crate) fn handle(&self) -> sys::ucp_context_h {
        self.0.handle
    }

    /// Whether operations pass UCX the host memory type (see `ContextInner::memory_type_hint`).
    pub(crate) fn memory_type_hint(&self) -> bool {
        self.0.memory_type_hint
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("features", &self.0.features)
            .finish()
    }
}

/// How many async event handlers UCS allows in a process (`UCX_ASYNC_MAX_EVENTS`, UCX < 1.14;
/// later releases have no limit) unless the environment says: UCX's 1,024 let a server's connection sockets run out of handlers past
/// about a thousand connections (or sockets that never finish a handshake), and UCX 1.13 then
/// closes the refused sockets twice and corrupts its heap (a hostile peer crashed `swucx serve`
/// that way: 1,100 idle TCP connections, then a few UCX clients). Each worker's missed-event
/// queue takes 8 bytes per handler allowed (512 KiB here).
pub const ASYNC_MAX_EVENTS: u32 = 65_536;

/// Raises UCS's async event limit to [`ASYNC_MAX_EVENTS`] once per process, at the first
/// context built (before swucx makes any worker: each sizes a queue by the limit), unless
/// `UCX_ASYNC_MAX_EVENTS` is set (UCS read it when it loaded).
fn raise_async_event_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("UCX_ASYNC_MAX_EVENTS").is_some() {
            return;
        }
        if async_max_events().is_some_and(|limit| limit < ASYNC_MAX_EVENTS) {
            // SAFETY: a plain write of a UCS global, here before any worker of this process
            // (swucx's) exists and so before UCS's async thread reads it.
            unsafe { sys::swucx_shim_set_async_max_events(ASYNC_MAX_EVENTS) };
        }
    });
}

/// The async event limit in force (`UCX_ASYNC_MAX_EVENTS`, or what swucx raised it to); `None`
/// for UCX 1.14 and later, which have no such limit.
pub fn async_max_events() -> Option<u32> {
    // SAFETY: a plain read of a UCS global (0 from the shim where UCX has none).
    let limit = unsafe { sys::swucx_shim_async_max_events() };
    (limit != 0).then_some(limit)
}

/// The (major, minor) release of the UCX library loaded at run time, e.g. `(1, 13)` (compare
/// with [`DefaultSetting::since`]).
pub fn ucx_release() -> (u32, u32) {
    let (mut major, mut minor, mut release) = (0, 0, 0);
    // SAFETY: three valid out-pointers; UCX writes its version numbers.
    unsafe { sys::ucp_get_version(&mut major, &mut minor, &mut release) };
    (major, minor)
}

/// The version of the UCX library loaded at run time, e.g. `"1.13.1"`.
pub fn ucx_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::ucp_get_version_string()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_lists_tell_which_transports_a_context_may_use() {
        assert!(tls_may_use(None, SHM_TRANSPORTS) && tls_may_use(None, &["tcp"]));
        let swucx_shm = Some("posix,sysv,cma,self,tcp");
        assert!(tls_may_use(swucx_shm, SHM_TRANSPORTS) && tls_may_use(swucx_shm, &["tcp"]));
        assert!(!tls_may_use(Some("tcp,self"), SHM_TRANSPORTS));
        assert!(tls_may_use(Some(" tcp , self"), &["tcp"]));
        assert!(!tls_may_use(Some("self"), &["tcp"]));
        assert!(tls_may_use(Some("sm:aux,rc"), SHM_TRANSPORTS));
        assert!(tls_may_use(Some("all"), &["tcp"]));
        assert!(
            tls_may_use(Some("^tcp"), &["tcp"]),
            "exclusion lists count as may"
        );
    }

    #[test]
    fn keepalive_follows_ucx_tcp_settings() {
        let context = |b: ContextBuilder| b.config("TLS", "tcp").build();
        let two_one_two = Some(KeepAlive {
            idle: Some(std::time::Duration::from_secs(2)),
            interval: Some(std::time::Duration::from_secs(1)),
            probes: Some(2),
        });
        let keys = ["TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"];
        if keys
            .iter()
            .all(|k| std::env::var_os(format!("UCX_{k}")).is_none())
        {
            let defaults = context(Context::builder()).unwrap();
            assert_eq!(defaults.keepalive(), two_one_two, "swucx's defaults");
        }
        // Overrides win over the environment, by either of a setting's names.
        let set = context(
            Context::builder()
                .config("TCP_KEEPIDLE", "2s")
                .config("KEEPINTVL", "1s")
                .config("TCP_KEEPCNT", "2"),
        )
        .unwrap();
        assert_eq!(set.keepalive(), two_one_two);
        let tuned = context(Context::builder().config("TCP_KEEPIDLE", "30s")).unwrap();
        assert_eq!(
            tuned.keepalive().and_then(|k| k.idle),
            Some(std::time::Duration::from_secs(30))
        );
        let off = context(Context::builder().config("TCP_KEEPCNT", "inf")).unwrap();
        assert_eq!(off.keepalive(), None);
        let no_peer_failure = context(Context::builder().without_peer_failure_handling()).unwrap();
        assert_eq!(no_peer_failure.keepalive(), None);
        let err = context(Context::builder().config("TCP_KEEPINTVL", "soon")).unwrap_err();
        assert_eq!(err.status(), Status::ERR_INVALID_PARAM);
    }

    #[test]
    fn the_loaded_ucx_release_is_read() {
        let (major, minor) = ucx_release();
        assert!((major, minor) >= (1, 13), "{major}.{minor}");
        assert!(ucx_version().starts_with(&format!("{major}.{minor}.")));
    }
}
