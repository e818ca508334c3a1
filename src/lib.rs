//! # swucx: a fast, safe data path over UCX
//!
//! swucx wraps OpenUCX's UCP API (which picks RDMA, TCP or shared memory at run time) in safe
//! Rust, for SeaweedFS volume reads.
//!
//! ## Objects
//! - [`Context`]: UCX features and configuration; shared by everything made from it.
//! - [`Worker`]: the progress engine. MULTI-threaded: any thread may use it.
//! - [`Listener`] / [`ConnRequest`]: accept connections on a socket address.
//! - [`Endpoint`]: a connection; tag, stream, active-message and RMA operations live here.
//! - [`MemRegion`] / [`RemoteKey`]: registered memory and a peer's view of it.
//! - [`Request`]: an operation in flight, owning its buffer until UCX completes it.
//! - [`Engine`]: the thread-safe front for many callers (waits without busy threads).
//!
//! ## Threading and buffers
//! Callbacks (AM handlers, error handlers) run inside [`Worker::progress`] on the thread that
//! progresses; they may send but must not block or wait. Operations take their buffers by value
//! ([`Buf`], [`BufMut`]); [`RawBuf`] is the `unsafe` borrowed form.
//!
//! ## Example
//! ```
//! use swucx::{Context, Worker};
//! let context = Context::new()?;
//! let worker = Worker::new(&context)?;
//! let me = worker.connect_address(&worker.address()?)?;
//! let recv = worker.tag_recv(7, u64::MAX, vec![0u8; 5])?;
//! me.tag_send(7, b"hello".to_vec())?.wait()?;
//! assert_eq!(recv.wait()?.buffer, b"hello");
//! # Ok::<(), swucx::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod am;
mod am_queue;
mod buffer;
mod capi;
mod context;
mod endpoint;
mod engine;
mod keepalive;
mod listener;
mod memory;
mod request;
mod rma;
/// The SeaweedFS layer (Rust only; not part of the C header).
/// cbindgen:ignore
pub mod seaweed;
mod sockaddr;
mod status;
mod stream;
mod sys;
mod tag;
mod transport;
mod worker;

pub use am::{AmDesc, AmFlags, AmMessage};
pub use am_queue::{AmQueue, QueuedAm};
pub use buffer::{Buf, BufMut, FileMap, MappedSlice, Payload, RawBuf};
pub use context::{
    ASYNC_MAX_EVENTS, Context, ContextBuilder, DEFAULT_CONFIG, DefaultFor, DefaultSetting,
    Features, async_max_events, ucx_release, ucx_version,
};
pub use endpoint::{CloseMode, Endpoint, ErrorHandler};
pub use engine::{DEFAULT_SPIN, Engine, MAX_SPIN, Signal, SpinGuard, WaitEnd};
pub use keepalive::KeepAlive;
pub use listener::{ConnRequest, Listener};
pub use memory::{MAX_RKEY_LEN, MemRegion, RegionBuf, RemoteKey};
pub use request::{Done, Request};
pub use status::{Error, Result, Status};
pub use transport::TransportUse;
pub use worker::{Worker, WorkerAddress, in_callback};

/// README.md's Rust examples, compiled as doctests (`cargo test --doc`) so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
