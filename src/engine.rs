//! `Engine`: the thread-safe front over a worker for many callers (C threads, Go goroutines).
//!
//! Design (measured alternatives in docs/design.md): the caller that waits drives progress
//! itself while it spins (whoever holds the driver lock progresses, the others just watch their
//! own completion), then sleeps on its completion. A background thread sleeps on the worker's
//! event fd and progresses only when something arrives that nobody is waiting on (incoming
//! messages, connection requests, keepalive), or when a sleeping waiter asks it to. Idle, no
//! thread runs.
//!
//! A wait can also end early, without periodic wake-ups, when a [`Signal`] is raised from
//! another thread (a cancelled Go context, an engine shutting down) or an endpoint's peer fails
//! ([`Endpoint::raise_on_failure`](crate::Endpoint::raise_on_failure)).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::am_queue::{AmQueue, QueuedAm};
use crate::context::Context;
use crate::listener::{ConnRequest, Listener};
use crate::request::{Completion, Done, Request};
use crate::status::{Error, Result, Status};
use crate::worker::{Worker, in_callback, poll_readable};

/// How long a waiter spins (driving progress if it can) before it sleeps.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// The longest spin [`Engine::with_spin`] takes: a waiter spinning longer only burns a core.
pub const MAX_SPIN: Duration = Duration::from_secs(1);

/// A flag any thread may raise to end waits in [`Engine::wait_signals`] that watch it: the
/// waiting threads wake at once (they sleep without periodic wake-ups otherwise). It stays raised
/// until [`reset`](Signal::reset). Any number of threads may wait on one signal, and one wait
/// may watch several. `Send + Sync`; share it with `Arc`.
pub struct Signal {
    raised: AtomicBool,
    /// The threads sleeping in a wait that watches this signal.
    sleepers: Mutex<Vec<Thread>>,
}

impl Signal {
    /// A signal that is not raised.
    pub const fn new() -> Signal {
        Signal {
            raised: AtomicBool::new(false),
            sleepers: Mutex::new(Vec::new()),
        }
    }

    /// Raises the signal and wakes every thread waiting on it.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        for thread in self
            .sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            thread.unpark();
        }
    }

    /// Lowers the signal (later waits sleep again).
    pub fn reset(&self) {
        self.raised.store(false, Ordering::Release);
    }

    /// Whether the signal is raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Registers the current thread as a sleeper (before it checks the flag and parks).
    pub(crate) fn enter(&self) {
        self.sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(std::thread::current());
    }

    pub(crate) fn leave(&self) {
        let me = std::thread::current().id();
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = sleepers.iter().position(|t| t.id() == me) {
            sleepers.swap_remove(i);
        }
    }
}

impl Default for Signal {
    fn default() -> Signal {
        Signal::new()
    }
}

/// How [`Engine::wait_signals`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The operation completed.
    Complete,
    /// The timeout passed first; the operation goes on.
    TimedOut,
    /// One of the signals was raised first; the operation goes on.
    Signalled,
}

/// Parks this thread until it is unparked or `deadline` passes; false (without parking) once it
/// has passed. Sleeps in waits loop on it, looking at their condition after every wake-up.
pub(crate) fn park_before(deadline: Option<Instant>) -> bool {
    match deadline {
        None => std::thread::park(),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return false;
            }
            std::thread::park_timeout(d - now);
        }
    }
    true
}

/// What an engine wait waits for: an operation's completion or a queue's next message.
pub(crate) trait Awaited {
    /// True once the wait may end.
    fn is_ready(&self) -> bool;

    /// Sleeps until ready (true), `deadline` passes or `stop()` holds (false); whoever makes
    /// `stop()` true unparks this thread. Another thread must progress.
    fn park_until(&self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> bool;
}

impl Awaited for Completion {
    #[inline(always)]
    fn is_ready(&self) -> bool {
        self.is_done()
    }

    fn park_until(&self, deadline: Option<Instant>, stop: &dyn Fn() -> bool) -> bool {
        Completion::park_until(self, deadline, stop)
    }
}

struct Shared {
    worker: Worker,
    /// Held by whoever is progressing the worker on behalf of the engine.
    driver: Mutex<()>,
    stop: AtomicBool,
    spin: Duration,
    /// Spins driving progress (waiters in their spin phase, `Engine::spinning`): the low 32
    /// bits count those running, the high 32 bits count those begun (wrapping). While any runs,
    /// or one began during its last rest, the background thread rests instead of sleeping armed
    /// on the event fd, where arrivals the spinners handle anyway kept waking it. Over tcp, an
    /// Engine ping-pong client spent a quarter of its samples queued for its socket's lock in
    /// `recv` (none inline) and its mean latency was 1.8x the inline one; resting: 15% and 1.5x
    /// (p50 unchanged, 2026-12-04). Resting until spins stop beginning (not just until none
    /// runs) keeps it off the CPU between a ping-pong's spins, where it woke every few
    /// iterations, each wake-up costing the host 10-60 us (a Go server with a C client over
    /// tcp, `perf sched`: the client lost its CPU to it for up to 60 us).
    spins: AtomicU64,
    /// Set by a thread that needs the background thread to progress now (it is about to sleep
    /// on something only progress delivers): ends the rest at once.
    hand_over: AtomicBool,
    /// True while the background thread holds `driver`; it gives the worker up to any spinner
    /// after one progress call, and the spinner waits for it (yielding its CPU) instead of going
    /// to sleep.
    background_drives: AtomicBool,
    /// Where the background thread rests; notified on a hand-over.
    rest: (Mutex<()>, Condvar),
    /// Spins announced with [`Engine::spinning`] or `begin_spin` and not yet ended (part of
    /// `spins`' running count): while any is, rests last at most `MAX_REST`.
    announced: AtomicU32,
    /// Progress calls made by threads other than the background one (counted under `driver`,
    /// so a plain load and store suffice): a spin announced while this stands still for a
    /// whole rest is not spinning (its thread went to sleep in a wait of its own without ending
    /// it), and the background thread drives instead.
    foreground_progress: AtomicU64,
}

/// How long the background thread rests before it looks again whether spins went on; it takes
/// over progress one to two rests after the last spin ended without a hand-over (up to
/// `MAX_REST`, or `MAX_QUIET_REST` when only waits spun, later after a long spin).
const REST: Duration = Duration::from_micros(200);

/// The longest rest while a spinner keeps running and one of the spins is announced
/// ([`Engine::spinning`]): such a spin can stall (its thread may sleep without ending it), and
/// the rest is how soon the background thread notices.
const MAX_REST: Duration = Duration::from_millis(1);

/// The longest rest while only waits spin. A wait's spin cannot stall (it progresses, or ends
/// and hands over before it sleeps), so the rest only bounds how soon the background thread
/// takes over once spinning stops; each rest that ends wakes the thread on some waiter's CPU
/// (docs/design.md; bench finding 20).
const MAX_QUIET_REST: Duration = Duration::from_millis(10);

/// How many spin rounds a waiter makes between looks at the clock.
const CLOCK_EVERY: u32 = 8;

/// A wait's time limit, turned into a deadline at the wait's first look at the clock (a wait
/// that ends within its first spin rounds reads no clock: ~30 ns per read on this VM, as much as
/// a progress call). The deadline is then late by those few rounds.
#[derive(Clone, Copy)]
enum Limit {
    /// No limit.
    Never,
    /// This long from the first look at the clock.
    After(Duration),
    /// Resolved.
    At(Instant),
}

impl Limit {
    fn new(timeout: Option<Duration>) -> Limit {
        timeout.map_or(Limit::Never, Limit::After)
    }

    /// The deadline, fixed from `now` if not yet (None: no limit, or one too far to represent).
    fn deadline(&mut self, now: Instant) -> Option<Instant> {
        match *self {
            Limit::Never => None,
            Limit::At(at) => Some(at),
            Limit::After(timeout) => match now.checked_add(timeout) {
                Some(at) => {
                    *self = Limit::At(at);
                    Some(at)
                }
                None => {
                    *self = Limit::Never;
                    None
                }
            },
        }
    }

    /// Whether the deadline has passed (fixing it now if not yet).
    fn passed(&mut self) -> bool {
        let now = Instant::now();
        self.deadline(now).is_some_and(|d| now >= d)
    }
}

/// One spin begun in `Shared::spins` (the high half), with no spin running for it.
const BEGUN_ONLY: u64 = 1 << 32;

/// One spin in `Shared::spins`: one more running, one more begun.
const SPIN_BEGUN: u64 = 1 | BEGUN_ONLY;

/// Counts a waiter as spinning for as long as it lives.
struct Spinning<'a>(&'a Shared);

impl<'a> Spinning<'a> {
    fn new(shared: &'a Shared) -> Spinning<'a> {
        shared.spins.fetch_add(SPIN_BEGUN, Ordering::AcqRel);
        Spinning(shared)
    }
}

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        self.0.spins.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A spin announced with [`Engine::spinning`]; ends when dropped.
pub struct SpinGuard<'a>(&'a Shared);

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.end_spin();
    }
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

    /// As [`new`](Engine::new), with the time a waiter spins before sleeping (at most
    /// [`MAX_SPIN`], 1 s: longer is taken as that).
    pub fn with_spin(context: &Context, spin: Duration) -> Result<Engine> {
        let spin = spin.min(MAX_SPIN);
        let worker = Worker::new(context)?;
        let efd = worker.event_fd()?;
        let shared = Arc::new(Shared {
            worker,
            driver: Mutex::new(()),
            stop: AtomicBool::new(false),
            spin,
            spins: AtomicU64::new(0),
            hand_over: AtomicBool::new(false),
            background_drives: AtomicBool::new(false),
            rest: (Mutex::new(()), Condvar::new()),
            announced: AtomicU32::new(0),
            foreground_progress: AtomicU64::new(0),
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

    /// Whether `worker` is the engine's (the only one its waits progress).
    #[cfg(feature = "capi")]
    pub(crate) fn is_own(&self, worker: &Worker) -> bool {
        Arc::ptr_eq(&self.shared.worker.0, &worker.0)
    }

    /// Waits for `request` and returns its result: spins (driving progress when no other thread
    /// is), then sleeps until the completion wakes it. Every wait of an engine is for something
    /// on the engine's own worker ([`worker`](Engine::worker)), the only one it progresses: an
    /// operation of another worker that nobody progresses would never complete (the C ABI
    /// refuses such waits with `SWUCX_ERR_INVALID_PARAM`). Inside a callback (a handler on the
    /// progressing thread), where the wait would hold up the progress it waits for, an
    /// operation that is not complete fails with `ERR_BUSY` (as [`Request::wait`] does; the
    /// operation goes on without its owner).
    pub fn wait<B: Send + 'static>(&self, mut request: Request<B>) -> Result<Done<B>> {
        self.shared
            .wait_for(&**request.completion(), &mut Limit::Never, &[], true);
        request.take_result()
    }

    /// Waits up to `timeout` for `request` to complete; returns whether it did. The request stays
    /// the caller's either way (drop it to abandon the wait; the buffer stays alive until UCX is
    /// done with it).
    pub fn wait_timeout<B: Send + 'static>(&self, request: &Request<B>, timeout: Duration) -> bool {
        self.wait_signals(request, Some(timeout), &[]) == WaitEnd::Complete
    }

    /// Waits for `request` until it completes, `timeout` passes (`None`: no limit) or one of
    /// `signals` is raised (already raised: returns at once unless the request is complete).
    /// Spins like [`wait`](Engine::wait), then sleeps with no periodic wake-up: the completion,
    /// [`Signal::raise`] or the deadline wakes it. The request stays the caller's either way.
    /// Inside a callback (a handler on the progressing thread), where the wait would hold up
    /// the progress it waits for, it returns at once: `Complete` if the request is, else
    /// `Signalled` if a signal is raised, else `TimedOut`.
    pub fn wait_signals<B: Send + 'static>(
        &self,
        request: &Request<B>,
        timeout: Option<Duration>,
        signals: &[&Signal],
    ) -> WaitEnd {
        self.wait_end(request, timeout, signals, true)
    }

    /// As [`wait_signals`](Engine::wait_signals) without the spin: sleeps at once (the
    /// background thread progresses), e.g. to wait again after a wait that already spun.
    pub fn sleep_signals<B: Send + 'static>(
        &self,
        request: &Request<B>,
        timeout: Option<Duration>,
        signals: &[&Signal],
    ) -> WaitEnd {
        self.wait_end(request, timeout, signals, false)
    }

    /// [`wait_signals`](Engine::wait_signals), or [`sleep_signals`](Engine::sleep_signals)
    /// unless `spin` (the C ABI's `SWUCX_WAIT_NO_SPIN`).
    pub(crate) fn wait_end<B: Send + 'static>(
        &self,
        request: &Request<B>,
        timeout: Option<Duration>,
        signals: &[&Signal],
        spin: bool,
    ) -> WaitEnd {
        if self.shared.wait_for(
            &**request.completion(),
            &mut Limit::new(timeout),
            signals,
            spin,
        ) {
            WaitEnd::Complete
        } else if signals.iter().any(|s| s.is_raised()) {
            WaitEnd::Signalled
        } else {
            WaitEnd::TimedOut
        }
    }

    /// Takes the next message from `queue` (one on this engine's worker), waiting for it as
    /// [`wait_signals`](Engine::wait_signals) waits for an operation: spins driving progress,
    /// then sleeps until a message arrives, `timeout` passes (`None`: no limit) or one of
    /// `signals` is raised (`None` for both; tell them apart with [`Signal::is_raised`]). A
    /// message that is there already is taken even when a signal is raised. Inside a callback (a
    /// handler on the progressing thread), where the wait would hold up the progress it waits
    /// for, it only takes a message that is there already (`None` at once otherwise).
    pub fn am_recv(
        &self,
        queue: &AmQueue,
        timeout: Option<Duration>,
        signals: &[&Signal],
    ) -> Option<QueuedAm> {
        self.am_recv_with(queue, timeout, signals, true)
    }

    /// As [`am_recv`](Engine::am_recv); without the spin unless `spin` (the C ABI's
    /// `SWUCX_WAIT_NO_SPIN`).
    pub(crate) fn am_recv_with(
        &self,
        queue: &AmQueue,
        timeout: Option<Duration>,
        signals: &[&Signal],
        spin: bool,
    ) -> Option<QueuedAm> {
        let mut limit = Limit::new(timeout);
        loop {
            if let Some(message) = queue.try_recv() {
                return Some(message);
            }
            // Ready means a message was there: another receiver may have taken it first, and
            // then the wait ends early too; only the limit, a signal or a callback ends this.
            if !self
                .shared
                .wait_for(queue.awaited(), &mut limit, signals, spin)
            {
                let message = queue.try_recv();
                if message.is_some()
                    || in_callback()
                    || signals.iter().any(|s| s.is_raised())
                    || limit.passed()
                {
                    return message;
                }
            }
        }
    }

    /// Progresses the worker once, unless another thread is progressing it for the engine (a
    /// waiter, the background thread): then it returns 0 at once instead of contending for
    /// UCX's worker lock. Returns the number of events processed. For a caller that spins on
    /// something no wait covers (e.g. an active message expected within microseconds).
    pub fn progress(&self) -> u32 {
        match self.shared.driver.try_lock() {
            Ok(_driver) => self.shared.progress_in_foreground(),
            Err(_) => 0,
        }
    }

    /// Announces that the calling thread is about to spin on [`progress`](Engine::progress)
    /// for something no wait covers (e.g. an active message expected within microseconds).
    /// While it spins, and for a moment after (another spin usually follows), the background
    /// thread stays off the worker, as it does while a waiter spins, instead of waking for
    /// every arrival and taking the worker from the spinner. A thread that stops spinning to
    /// sleep on something only progress delivers calls [`hand_over`](Engine::hand_over) first.
    pub fn spinning(&self) -> SpinGuard<'_> {
        self.begin_spin();
        SpinGuard(&self.shared)
    }

    /// Asks the background thread to progress now (it may be resting after spins): call it
    /// before sleeping on something only progress delivers, e.g. a message a handler hands to
    /// this thread. Waits on requests do this themselves.
    pub fn hand_over(&self) {
        self.shared.hand_over();
    }

    /// The C ABI's form of [`spinning`](Engine::spinning): a spin announced here lasts until a
    /// matching [`end_spin`](Engine::end_spin).
    pub(crate) fn begin_spin(&self) {
        self.shared.announced.fetch_add(1, Ordering::AcqRel);
        self.shared.spins.fetch_add(SPIN_BEGUN, Ordering::AcqRel);
    }

    /// Ends a spin announced by `begin_spin`; false if none is announced.
    #[cfg(feature = "capi")]
    pub(crate) fn end_spin(&self) -> bool {
        self.shared.end_spin()
    }

    /// Waits for a connection request on `listener`, which must be on this engine's worker (the
    /// engine's background thread progresses it; this thread only sleeps), until one arrives
    /// (returned), `timeout` passes (`None`: no limit) or one of `signals` is raised (`None`
    /// either way; tell them apart with [`Signal::is_raised`]). No periodic wake-up. Inside a
    /// callback (a handler on the progressing thread, which this wait would hold up) it only
    /// takes a request that is there already (`None` at once otherwise).
    pub fn accept_signals(
        &self,
        listener: &Listener,
        timeout: Option<Duration>,
        signals: &[&Signal],
    ) -> Option<ConnRequest> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let arrival = listener.arrival();
        loop {
            if let Some(request) = listener.try_accept() {
                return Some(request);
            }
            let now = Instant::now();
            if in_callback()
                || signals.iter().any(|s| s.is_raised())
                || deadline.is_some_and(|d| now >= d)
            {
                return None;
            }
            // Registered first, then checked again: an arrival or a raise from now on unparks.
            arrival.enter();
            for signal in signals {
                signal.enter();
            }
            if !listener.has_request() && !signals.iter().any(|s| s.is_raised()) {
                match deadline {
                    None => std::thread::park(),
                    Some(d) => std::thread::park_timeout(d.saturating_duration_since(now)),
                }
            }
            arrival.leave();
            for signal in signals {
                signal.leave();
            }
        }
    }

    /// Waits until `done()` holds or `timeout` passes (for conditions that are not a single
    /// request, e.g. a reply arriving in a handler): drives progress while it spins, then leaves
    /// progress to the background thread and checks back with growing pauses (up to 1 ms).
    /// Inside a callback (a handler on the progressing thread, which this wait would hold up)
    /// it returns `done()` at once.
    pub fn progress_until(&self, mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
        if in_callback() {
            return done();
        }
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut pause = Duration::from_micros(10);
        while !done() {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            if now.duration_since(start) < self.shared.spin {
                let _ = self.shared.drive_once();
                continue;
            }
            self.shared.hand_over();
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
        true
    }
}

impl Shared {
    /// Progresses the worker once unless another thread is doing it: the number of events
    /// processed, or `None` if another thread drives.
    fn drive_once(&self) -> Option<u32> {
        if let Ok(_driver) = self.driver.try_lock() {
            Some(self.progress_in_foreground())
        } else {
            std::hint::spin_loop();
            None
        }
    }

    /// Progresses the worker for a waiter or spinner, which holds `driver`.
    #[inline(always)]
    fn progress_in_foreground(&self) -> u32 {
        let n = self.foreground_progress.load(Ordering::Relaxed);
        self.foreground_progress
            .store(n.wrapping_add(1), Ordering::Relaxed);
        self.worker.progress()
    }

    /// Spins (if `spin`), then sleeps, until `awaited` is ready (true), `limit` passes or
    /// one of `signals` is raised (false). Inside a callback, false at once unless ready: the
    /// callback holds up the progress the wait would need (on the background thread, nothing
    /// else progresses; on a waiter's, its spin could not progress either).
    fn wait_for<A: Awaited + ?Sized>(
        &self,
        awaited: &A,
        limit: &mut Limit,
        signals: &[&Signal],
        spin: bool,
    ) -> bool {
        let raised = || signals.iter().any(|s| s.is_raised());
        let spin = if spin { self.spin } else { Duration::ZERO };
        if awaited.is_ready() {
            // Counted as a spin begun: the background thread stays off the worker while
            // waits keep coming, as it does while they spin (when its drives finished the
            // operations before their waiters came, they found them done and never spun, and
            // it went on driving and arming the worker, which had the peer signal it for every
            // shm fragment).
            self.spins.fetch_add(BEGUN_ONLY, Ordering::Relaxed);
            return true;
        }
        if in_callback() {
            return false;
        }
        // Fixed at the first look at the clock, and again whenever progress did something
        // since the last one (the spin goes on from there).
        let mut spin_until: Option<Instant> = None;
        let spinning = (spin > Duration::ZERO).then(|| Spinning::new(self));
        let mut rounds = 0u32;
        let mut moved = false;
        while !awaited.is_ready() {
            if raised() {
                return false;
            }
            // The clock every few rounds: on a VM reading it cost as much as a progress call.
            rounds = rounds.wrapping_add(1);
            if spin == Duration::ZERO || rounds % CLOCK_EVERY == 0 {
                let now = Instant::now();
                let deadline = limit.deadline(now);
                if std::mem::take(&mut moved) || spin_until.is_none() {
                    spin_until = Some(deadline.map_or(now + spin, |d| d.min(now + spin)));
                }
                if spin_until.is_some_and(|until| now >= until) {
                    drop(spinning);
                    return self.sleep_for(awaited, deadline, signals, &raised);
                }
            }
            match self.drive_once() {
                // The background thread drives (e.g. a rendezvous transfer that arrived before
                // this wait began): it hands the worker over to this spinner shortly. Yield
                // meanwhile: when both threads share a CPU (a process bound to one), spinning
                // would only keep the driver off it until the scheduler steps in (bench
                // finding 11).
                None if self.background_drives.load(Ordering::Acquire) => {
                    std::thread::yield_now();
                    // The clock next round: the yield may have given up a time slice.
                    rounds = CLOCK_EVERY - 1;
                }
                // Only one waiter spins: while another waiter drives progress, the others
                // sleep and leave the CPU to it and to the peer (many waiters spinning on a
                // small machine starve everyone).
                None => {
                    drop(spinning);
                    let deadline = limit.deadline(Instant::now());
                    return self.sleep_for(awaited, deadline, signals, &raised);
                }
                // Work is moving (e.g. a rendezvous transfer in steps, which raises no event
                // the background thread would wake for): keep driving it.
                Some(n) if n > 0 => moved = true,
                Some(_) => {}
            }
        }
        true
    }

    fn sleep_for<A: Awaited + ?Sized>(
        &self,
        awaited: &A,
        deadline: Option<Instant>,
        signals: &[&Signal],
        raised: &dyn Fn() -> bool,
    ) -> bool {
        // Registered before the flags are checked again (in park_until), so a raise in between
        // still unparks this thread.
        for signal in signals {
            signal.enter();
        }
        // Make sure the background thread is awake to progress for us, then sleep.
        self.hand_over();
        let done = awaited.park_until(deadline, raised);
        for signal in signals {
            signal.leave();
        }
        done
    }

    /// Ends one announced spin; false if none is running.
    fn end_spin(&self) -> bool {
        let ended = self
            .spins
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word as u32 > 0).then(|| word - 1)
            })
            .is_ok();
        if ended {
            // Saturating: an unmatched end (C's `swucx_engine_spin_end`) may have ended a
            // wait's spin instead.
            let _ = self
                .announced
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        ended
    }

    /// Makes the background thread progress now: ends its rest, or its sleep on the event fd.
    fn hand_over(&self) {
        self.hand_over.store(true, Ordering::Release);
        self.wake_background();
        if let Err(err) = self.worker.signal() {
            log::warn!("{err}");
        }
    }

    /// Ends the background thread's rest (under its mutex: see `serve_events`).
    fn wake_background(&self) {
        let _guard = self.rest.0.lock().unwrap_or_else(|e| e.into_inner());
        self.rest.1.notify_one();
    }

    /// The background thread: progress what arrives, then sleep on the event fd.
    fn serve_events(&self, efd: i32) {
        let mut begun_seen = 0u32;
        let mut rest = REST;
        while !self.stop.load(Ordering::Acquire) {
            let spins = self.spins.load(Ordering::Acquire);
            let (running, begun) = (spins as u32, (spins >> 32) as u32);
            let spinning = running > 0 || begun != begun_seen;
            begun_seen = begun;
            let mut stalled = false;
            if !self.hand_over.swap(false, Ordering::AcqRel) && spinning {
                // Spinners drive progress: rest (not armed) until a hand-over or the rest
                // passes; longer each time a spinner is still at it (up to MAX_REST).
                // Checked again under the lock: a hand-over sets the flag first, then notifies
                // under the lock, so the notice cannot be missed.
                let progressed = self.foreground_progress.load(Ordering::Relaxed);
                let guard = self.rest.0.lock().unwrap_or_else(|e| e.into_inner());
                let handed_over = self.hand_over.load(Ordering::Acquire);
                if !handed_over {
                    let _ = self.rest.1.wait_timeout(guard, rest);
                }
                // A spin still announced with no progress made in the foreground for a whole
                // rest is not spinning: drive, or a waiter asleep behind it waits for ever. But
                // not while a foreground thread holds the driver: one progress call can take
                // longer than a rest (over tcp it writes every 1 MiB rendezvous put it can into
                // the socket), and taking over then had this thread make a fifth of the sends
                // of an Engine client sending 1 MiB messages, alternating with the waiter on
                // the socket (bench finding 20).
                stalled = !handed_over
                    && running > 0
                    && self.foreground_progress.load(Ordering::Relaxed) == progressed
                    && self.driver.try_lock().is_ok();
                if !stalled {
                    rest = if running == 0 {
                        REST
                    } else if self.announced.load(Ordering::Acquire) > 0 {
                        (rest * 2).min(MAX_REST)
                    } else {
                        (rest * 2).min(MAX_QUIET_REST)
                    };
                    continue;
                }
            }
            rest = REST;
            let driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
            self.background_drives.store(true, Ordering::Release);
            let spinner_waits = || !stalled && self.spins.load(Ordering::Acquire) as u32 > 0;
            while self.worker.progress() > 0 && !spinner_waits() {}
            // A spinner takes the worker over (it waits for the lock meanwhile, yielding).
            let armed = (!spinner_waits()).then(|| self.worker.arm());
            drop(driver);
            // Cleared only once the lock is free: a spinner that finds the lock taken while
            // this is set keeps trying, and one that found it taken without it (during
            // `arm`, or between the flag and the unlock) took this thread for another waiter
            // and went to sleep.
            self.background_drives.store(false, Ordering::Release);
            let Some(armed) = armed else {
                continue;
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
        self.shared.wake_background();
        let _ = self.shared.worker.signal();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
