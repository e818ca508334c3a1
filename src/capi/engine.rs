//! `swucx_engine_t`: the thread-safe front (a worker plus waiting from any thread).

use super::context::swucx_context_t;
use super::status::{SWUCX_OK, swucx_status_t};
use super::worker::{new_worker, swucx_worker_t};
use super::{
    Handle, boundary, fail, impl_handle, into_handle, try_out, try_ref, try_take, write_out,
};
use crate::Engine;

/// A MULTI-threaded worker plus the means to wait on its operations from any number of threads
/// (`swucx_engine_wait`): a waiter spins driving progress, then sleeps; a background thread
/// progresses what nobody waits for. Idle, no thread runs. Under the hood: `swucx::Engine`.
/// Any thread.
///
/// Methods: `swucx_engine_create`, `swucx_engine_worker`, `swucx_engine_wait`,
/// `swucx_engine_destroy`.
pub struct swucx_engine_t {
    magic: u64,
    pub(crate) engine: Engine,
}
impl_handle!(swucx_engine_t, b"SWengine");

/// Creates an engine (a new worker and its background progress thread) on `context`, which
/// should have `SWUCX_FEATURE_WAKEUP`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_create(
    context: *const swucx_context_t,
    engine_p: *mut *mut swucx_engine_t,
) -> swucx_status_t {
    boundary(|| {
        let context = &try_ref!(context).context;
        try_out!(engine_p);
        match Engine::new(context) {
            Ok(engine) => {
                write_out!(
                    engine_p,
                    into_handle(swucx_engine_t {
                        magic: swucx_engine_t::MAGIC,
                        engine,
                    })
                );
                SWUCX_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// A new handle to the engine's worker (make endpoints, listeners and handlers on it); destroy
/// it with `swucx_worker_destroy`.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_worker(
    engine: *const swucx_engine_t,
    worker_p: *mut *mut swucx_worker_t,
) -> swucx_status_t {
    boundary(|| {
        let engine = &try_ref!(engine).engine;
        try_out!(worker_p);
        write_out!(worker_p, new_worker(engine.worker().clone()));
        SWUCX_OK
    })
}

/// Stops the engine's background thread and releases the engine. NULL is a no-op. Its worker
/// lives on while handles to it (or its endpoints and requests) exist, progressed only by
/// explicit calls from then on.
#[unsafe(no_mangle)]
pub extern "C" fn swucx_engine_destroy(engine: *mut swucx_engine_t) {
    boundary(|| {
        if !engine.is_null() {
            drop(try_take!(engine));
        }
    })
}
