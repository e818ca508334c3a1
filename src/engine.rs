//! `Engine`: the thread-safe front over a worker for many callers (C threads, Go goroutines).
//!
//! Design (measured alternatives in docs/design.md): the caller that waits drives progress
//! itself while it spins (whoever holds the driver lock progresses, the others just watch their
//! own completion), then sleeps on its completion. A background thread sleeps on the worker's
//! event fd and progresses only when something arrives that nobody is waiting on (incoming
//! messages, connection requests, keepalive), or when a sleeping waiter asks it to. Idle, no
//! thread runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::request::{Completion, Done, Request};
use crate::status::{Error, Result, Status};
use crate::worker::{Worker, poll_readable};

/// How long a waiter spins (driving progress if it can) before it sleeps.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

struct Shared {
    worker: Worker,
    /// Held by whoever is progressing the worker on behalf of the engine.
    driver: Mutex<()>,
    stop: AtomicBool,
    spin: Duration,
}

/// A worker plus the means to wait on its operations from any number of threads.
/// `Send + Sync`; share it with `Arc` or by reference. Dropping it stops its background thread.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Creates a worker on `context` and the engine's background thread.
    pub fn new(context: &Context) -> Result<Engine> {
        Engine::with_spin(context, DEFAULT_SPIN)
    }

    /// As [`new`](Engine::new), with the time a waiter spins before sleeping.
    pub fn with_spin(context: &Context, spin: Duration) -> Result<Engine> {
        let worker = Worker::new(context)?;
        let efd = worker.event_fd()?;
        let shared = Arc::new(Shared {
            worker,
            driver: Mutex::new(()),
            stop: AtomicBool::new(false),
            spin,
        });
        let background = shared.clone();
        let thread = std::thread::Builder::new()
            .name("swucx-progress".into())
            .spawn(move || background.serve_events(efd))
            .map_err(|e| {
                Error::with_detail("Engine::new", Status::ERR_NO_RESOURCE, e.to_string())
            })?;
        Ok(Engine {
            shared,
            thread: Some(thread),
        })
    }

    /// The engine's worker: make endpoints, listeners and handlers on it.
    pub fn worker(&self) -> &Worker {
        &self.shared.worker
    }

    /// Waits for `request` and returns its result: spins (driving progress when no other thread
    /// is), then sleeps until the completion wakes it.
    pub fn wait<B: Send + 'static>(&self, mut request: Request<B>) -> Result<Done<B>> {
        self.shared.wait_for(request.completion(), None);
        request.take_result()
    }

    /// Waits up to `timeout` for `request` to complete; returns whether it did. The request stays
    /// the caller's either way (drop it to abandon the wait; the buffer stays alive until UCX is
    /// done with it).
    pub fn wait_timeout<B: Send + 'static>(&self, request: &Request<B>, timeout: Duration) -> bool {
        self.shared
            .wait_for(request.completion(), Instant::now().checked_add(timeout))
    }

    /// Waits until `done()` holds or `timeout` passes (for conditions that are not a single
    /// request, e.g. a reply arriving in a handler): drives progress while it spins, then leaves
    /// progress to the background thread and checks back with growing pauses (up to 1 ms).
    pub fn progress_until(&self, mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut pause = Duration::from_micros(10);
        while !done() {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            if now.duration_since(start) < self.shared.spin {
                self.shared.drive_once();
                continue;
            }
            if let Err(err) = self.shared.worker.signal() {
                log::warn!("{err}");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
        true
    }
}

impl Shared {
    fn drive_once(&self) {
        if let Ok(_driver) = self.driver.try_lock() {
            self.worker.progress();
        } else {
            std::hint::spin_loop();
        }
    }

    fn wait_for(&self, completion: &Completion, deadline: Option<Instant>) -> bool {
        let start = Instant::now();
        let spin_until = deadline.map_or(start + self.spin, |d| d.min(start + self.spin));
        while !completion.is_done() {
            if Instant::now() >= spin_until {
                // Make sure the background thread is awake to progress for us, then sleep.
                if let Err(err) = self.worker.signal() {
                    log::warn!("{err}");
                }
                return completion.park_until(deadline);
            }
            self.drive_once();
        }
        true
    }

    /// The background thread: progress what arrives, then sleep on the event fd.
    fn serve_events(&self, efd: i32) {
        while !self.stop.load(Ordering::Acquire) {
            let armed = {
                let _driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
                while self.worker.progress() > 0 {}
                self.worker.arm()
            };
            match armed {
                Ok(true) => {
                    poll_readable(efd, Duration::from_secs(1));
                }
                Ok(false) => {}
                Err(err) => {
                    log::error!("engine progress thread: {err}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.worker.signal();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
