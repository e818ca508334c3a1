//! Ping-pong latency and windowed bandwidth over swucx, shaped like `ucx_perftest` so the two
//! can be compared in the same run (see `scripts/bench.sh`).
//!
//! ```text
//! pingpong --server [--listen 0.0.0.0:13337] [--cpu 0]
//! pingpong --connect 127.0.0.1:13337 --api tag|am|stream --mode lat|bw --size 8 --iters 100000
//!          [--warmup N] [--window 32] [--front] [--wireup cm|address] [--transport shm|tcp]
//!          [--cpu 1] [--features tm]
//! ```
//!
//! The client's last line on stdout is the result, e.g.
//! `RESULT mode=lat api=am size=8 iters=100000 lat_us_p50=0.310 lat_us_p99=0.520 lat_us_avg=0.330`
//! or `RESULT mode=bw api=am size=1048576 iters=2000 window=32 gbps=14.90` (plus `front=1`).
//!
//! # How it measures (as `ucx_perftest` does)
//! - Buffers are allocated once with `MemRegion::allocate` (UCX-mapped memory, passed with its
//!   memory handle) and reused by every operation; a `RegionBuf` clone is a reference count.
//! - Tag and AM messages of up to `SEND_NOW_MAX` bytes are sent with `tag_send_now` /
//!   `am_send_now` (within the call, no request; as the Go package does), and with a request
//!   when UCX refuses (the transport is momentarily full).
//! - Inline mode (the default) busy-polls: `Request::poll` / `Worker::progress` loops, never
//!   sleeping. `--front` waits through `swucx::Engine::wait` (spin, then sleep) instead.
//! - Latency is a ping-pong; every figure is one-way, i.e. half the round trip.
//! - Bandwidth keeps `--window` sends in flight; the time runs at the sender from the first send
//!   to the receiver's acknowledgement that it has everything (ucx_perftest ends with a flush).
//! - AM receive handlers do not copy eager payloads; rendezvous payloads are received into the
//!   pre-allocated buffer (`ucp_am_recv_data_nbx`), like ucx_perftest's `ucp_am_*` tests.
//!
//! # Control protocol
//! Control messages are tag messages with tags `CTRL | kind`; data uses `DATA_TAG` (tag API),
//! AM id `AM_DATA` (am API) or the endpoint's stream (stream API).
//! 1. client -> server `HELLO`, a 40-byte header, little endian:
//!    ```text
//!    offset 0  u32 magic   0x50505753 ("SWPP")
//!    offset 4  u16 version 1
//!    offset 6  u8  api     0 = tag, 1 = am, 2 = stream
//!    offset 7  u8  mode    0 = lat, 1 = bw
//!    offset 8  u64 size    message size in bytes
//!    offset 16 u64 iters   measured iterations (messages for bw)
//!    offset 24 u64 warmup  warm-up iterations run before the measured ones
//!    offset 32 u32 window  sends in flight for bw
//!    offset 36 u32 flags   bit 0: the client uses the Engine front (informational)
//!                          bit 1: address wireup; the client's worker address follows
//!    ```
//! 2. server -> client `READY` once its buffers and AM handler are set up: empty, or with
//!    address wireup the server's worker address. Then each side connects to the other's
//!    address, drops the CM endpoint and uses the new endpoint for everything below.
//! 3. lat: `warmup + iters` round trips; the server echoes every message from its loop.
//!    bw: `warmup` messages, then an `ACK` from the server; then `iters` messages and an `ACK`.
//! 4. client -> server `BYE`; both close the endpoint. The server then takes the next client.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use swucx::{
    AmFlags, AmMessage, Buf, Context, Done, Endpoint, Engine, Features, Listener, MemRegion,
    RegionBuf, Request, Status, Worker, WorkerAddress,
};

const MAGIC: u32 = 0x5050_5753;
const VERSION: u16 = 1;
const HEADER_LEN: usize = 40;

const CTRL: u64 = 0xC7A1_0000_0000_0000;
const HELLO: u64 = CTRL | 1;
const READY: u64 = CTRL | 2;
const ACK: u64 = CTRL | 3;
const BYE: u64 = CTRL | 4;
const DATA_TAG: u64 = 1;
const AM_DATA: u16 = 7;
const EMPTY: &[u8] = &[];
/// Tag and AM sends up to this size try `*_send_now` first (about UCX's short path over shm).
const SEND_NOW_MAX: usize = 96;
/// Receive buffer for control messages (header plus a worker address).
const MAX_CTRL: usize = 64 * 1024;

/// How long any single wait may go without completing before the run is declared stuck.
const STUCK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    Tag,
    Am,
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Lat,
    Bw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Wireup {
    /// Data on the endpoint made by `Worker::connect` / `accept` (UCX's sockaddr CM).
    Cm,
    /// Exchange worker addresses over the CM endpoint, close it, and move the data to endpoints
    /// made by `Worker::connect_address` (what ucx_perftest does, with its own socket).
    Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// UCX_TLS=posix,sysv,cma,self,tcp (tcp is needed for the connection setup).
    Shm,
    /// UCX_TLS=tcp,self and UCX_NET_DEVICES=lo.
    Tcp,
}

/// swucx ping-pong / bandwidth benchmark (compare with ucx_perftest).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run the server: take parameters from each client, serve clients one after another.
    #[arg(long, conflicts_with = "connect")]
    server: bool,
    /// Server address to listen on.
    #[arg(long, default_value = "0.0.0.0:13337")]
    listen: SocketAddr,
    /// Run the client against this server.
    #[arg(long, required_unless_present = "server")]
    connect: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = Api::Tag)]
    api: Api,
    #[arg(long, value_enum, default_value_t = Mode::Lat)]
    mode: Mode,
    /// Message size in bytes.
    #[arg(long, default_value_t = 8)]
    size: usize,
    /// Measured iterations (round trips for lat, messages for bw).
    #[arg(long, default_value_t = 100_000)]
    iters: u64,
    /// Warm-up iterations (default: iters/10, at most 10000).
    #[arg(long)]
    warmup: Option<u64>,
    /// Sends in flight for bw.
    #[arg(long, default_value_t = 32)]
    window: u32,
    /// Wait through swucx::Engine instead of busy-polling inline.
    #[arg(long)]
    front: bool,

    /// With --front: how long a waiter spins (driving progress) before it sleeps; 0 hands every
    /// wait to the engine's progress thread (the design docs/design.md measures against).
    #[arg(long, default_value_t = swucx::DEFAULT_SPIN.as_micros() as u64)]
    front_spin_us: u64,

    /// Use MULTI-threaded workers (swucx's default, `Worker::new`) instead of SERIALIZED ones
    /// (`Worker::new_serialized`) for inline progress; compare with `ucx_perftest -M multi`.
    #[arg(long)]
    multi: bool,

    /// With --front: after the run, keep the connection open and idle this many seconds and
    /// report the process's CPU use meanwhile (`idle_cpu_pct`, % of one core).
    #[arg(long)]
    idle_secs: Option<u64>,
    /// How the data endpoints are made.
    #[arg(long, value_enum, default_value_t = Wireup::Cm)]
    wireup: Wireup,
    /// Sets UCX_TLS (and UCX_NET_DEVICES) for this process unless the environment already does.
    #[arg(long, value_enum)]
    transport: Option<Transport>,
    /// Pin the (main) thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// UCP features, as ucx_info -u letters: t(ag) s(tream) m (AM) r(ma) w(akeup). Default: the
    /// client enables tag (control messages) plus its --api, and wakeup with --front; the server
    /// enables t, s and m.
    #[arg(long)]
    features: Option<String>,
}

fn parse_features(letters: &str) -> Res<Features> {
    let mut f = Features {
        tag: false,
        stream: false,
        am: false,
        rma: false,
        wakeup: false,
    };
    for c in letters.chars() {
        match c {
            't' => f.tag = true,
            's' => f.stream = true,
            'm' => f.am = true,
            'r' => f.rma = true,
            'w' => f.wakeup = true,
            _ => return Err(format!("unknown feature letter {c:?} (use t, s, m, r, w)")),
        }
    }
    if !f.tag {
        return Err("features must include t (control messages are tag messages)".into());
    }
    Ok(f)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    api: Api,
    mode: Mode,
    size: usize,
    iters: u64,
    warmup: u64,
    window: u32,
    front: bool,
    wireup: Wireup,
}

impl Params {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&MAGIC.to_le_bytes());
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.push(match self.api {
            Api::Tag => 0,
            Api::Am => 1,
            Api::Stream => 2,
        });
        h.push(match self.mode {
            Mode::Lat => 0,
            Mode::Bw => 1,
        });
        h.extend_from_slice(&(self.size as u64).to_le_bytes());
        h.extend_from_slice(&self.iters.to_le_bytes());
        h.extend_from_slice(&self.warmup.to_le_bytes());
        h.extend_from_slice(&self.window.to_le_bytes());
        let flags = u32::from(self.front) | (u32::from(self.wireup == Wireup::Address) << 1);
        h.extend_from_slice(&flags.to_le_bytes());
        debug_assert_eq!(h.len(), HEADER_LEN);
        h
    }

    /// Decodes the header at the start of `h` (a worker address may follow it).
    fn decode(h: &[u8]) -> Result<Params, String> {
        if h.len() < HEADER_LEN {
            return Err(format!("header is {} bytes, want {HEADER_LEN}", h.len()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
        if u32_at(0) != MAGIC {
            return Err("bad header magic".into());
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        if version != VERSION {
            return Err(format!("header version {version}, want {VERSION}"));
        }
        let api = match h[6] {
            0 => Api::Tag,
            1 => Api::Am,
            2 => Api::Stream,
            x => return Err(format!("unknown api {x}")),
        };
        let mode = match h[7] {
            0 => Mode::Lat,
            1 => Mode::Bw,
            x => return Err(format!("unknown mode {x}")),
        };
        let params = Params {
            api,
            mode,
            size: usize::try_from(u64_at(8)).map_err(|_| "size too large")?,
            iters: u64_at(16),
            warmup: u64_at(24),
            window: u32_at(32),
            front: u32_at(36) & 1 != 0,
            wireup: if u32_at(36) & 2 != 0 {
                Wireup::Address
            } else {
                Wireup::Cm
            },
        };
        params.validate()?;
        Ok(params)
    }

    fn validate(&self) -> Result<(), String> {
        if self.iters == 0 {
            return Err("iters must be > 0".into());
        }
        if self.window == 0 {
            return Err("window must be > 0".into());
        }
        if self.size > (1 << 32) {
            return Err("size must be <= 4 GiB".into());
        }
        if self.api == Api::Stream && self.size == 0 {
            return Err("stream needs size > 0".into());
        }
        Ok(())
    }
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// How the waiting thread gets its operations done.
enum Driver {
    /// Busy-poll the worker on this thread (ucx_perftest's way).
    Inline(Worker),
    /// Go through the thread-safe front.
    Front(Engine),
}

impl Driver {
    fn worker(&self) -> &Worker {
        match self {
            Driver::Inline(w) => w,
            Driver::Front(e) => e.worker(),
        }
    }

    /// Waits for `req`; inline, by calling `Request::poll` until it completes.
    #[inline]
    fn wait<B: Send + 'static>(&self, req: Request<B>, ep: &Endpoint) -> Res<Done<B>> {
        match self {
            Driver::Inline(_) => {
                self.until_complete(ep, &req)?;
                req.wait().map_err(|e| e.to_string())
            }
            Driver::Front(engine) => engine.wait(req).map_err(|e| e.to_string()),
        }
    }

    /// Progresses until `done()` holds.
    #[inline]
    fn until(&self, ep: &Endpoint, mut done: impl FnMut() -> bool) -> Res<()> {
        match self {
            Driver::Inline(worker) => {
                let mut spins = 0u32;
                let mut since: Option<Instant> = None;
                while !done() {
                    worker.progress();
                    spins = spins.wrapping_add(1);
                    if spins & 0xFFFF == 0 {
                        check_stuck(ep, &mut since)?;
                    }
                }
                Ok(())
            }
            Driver::Front(engine) => {
                if engine.progress_until(&mut done, STUCK) {
                    Ok(())
                } else {
                    Err(stuck_error(ep))
                }
            }
        }
    }

    /// Waits until `request` is complete, without taking its result; inline, by calling
    /// `Request::poll` (which progresses the worker) until it completes.
    #[inline]
    fn until_complete<B: Send + 'static>(&self, ep: &Endpoint, request: &Request<B>) -> Res<()> {
        match self {
            Driver::Inline(_) => {
                if !request.is_complete() {
                    let mut spins = 0u32;
                    let mut since: Option<Instant> = None;
                    while !request.poll() {
                        spins = spins.wrapping_add(1);
                        if spins & 0xFFFF == 0 {
                            check_stuck(ep, &mut since)?;
                        }
                    }
                }
                Ok(())
            }
            Driver::Front(engine) => {
                if engine.wait_timeout(request, STUCK) {
                    Ok(())
                } else {
                    Err(stuck_error(ep))
                }
            }
        }
    }
}

/// Why a wait through the front gave up after `STUCK`.
#[cold]
fn stuck_error(ep: &Endpoint) -> String {
    match ep.failure() {
        Some(status) => format!("peer failed: {status}"),
        None => format!("no progress for {STUCK:?}"),
    }
}

/// Called now and then from busy loops: fails on a dead peer or a wait that takes too long.
#[cold]
fn check_stuck(ep: &Endpoint, since: &mut Option<Instant>) -> Res<()> {
    if let Some(status) = ep.failure() {
        return Err(format!("peer failed: {status}"));
    }
    let start = *since.get_or_insert_with(Instant::now);
    if start.elapsed() > STUCK {
        return Err(format!("no progress for {STUCK:?}"));
    }
    Ok(())
}

/// Active-message arrivals, shared between the AM handler and the loop that waits for them.
#[derive(Default)]
struct AmRx {
    eager: AtomicU64,
    rndv_done: AtomicU64,
    rndv_pending: AtomicUsize,
    /// Rendezvous receives in flight, oldest first (they complete in order, nearly always).
    rndv: Mutex<VecDeque<Request<RegionBuf>>>,
    error: Mutex<Option<String>>,
    /// Set with `error`, so the per-message check is a load, not a lock.
    failed: AtomicBool,
}

impl AmRx {
    /// The handler: count eager arrivals, receive rendezvous payloads into `buf`.
    fn handle(&self, msg: AmMessage<'_>, buf: &RegionBuf) {
        if !msg.is_rendezvous() {
            // Handlers of one worker never run concurrently (UCX calls them from progress, under
            // the worker's lock on a MULTI worker): a load and a store count without a locked
            // read-modify-write.
            let n = self.eager.load(Ordering::Relaxed);
            self.eager.store(n + 1, Ordering::Release);
            return;
        }
        match msg.recv_into(buf.clone()) {
            Ok(req) => {
                self.rndv.lock().unwrap().push_back(req);
                self.rndv_pending.fetch_add(1, Ordering::Release);
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&self, e: swucx::Error) {
        *self.error.lock().unwrap() = Some(e.to_string());
        self.failed.store(true, Ordering::Release);
    }

    /// Messages fully arrived so far.
    #[inline]
    fn arrived(&self) -> u64 {
        if self.rndv_pending.load(Ordering::Acquire) > 0 {
            self.reap();
        }
        self.eager.load(Ordering::Acquire) + self.rndv_done.load(Ordering::Acquire)
    }

    /// Collects the completed rendezvous receives at the front of the queue.
    fn reap(&self) {
        let mut pending = self.rndv.lock().unwrap();
        while pending.front().is_some_and(|r| r.is_complete()) {
            let req = pending.pop_front().expect("front");
            self.rndv_pending.fetch_sub(1, Ordering::Release);
            match req.wait() {
                Ok(_) => {
                    self.rndv_done.fetch_add(1, Ordering::Release);
                }
                Err(e) => self.fail(e),
            }
        }
    }

    #[inline]
    fn check(&self) -> Res<()> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.error.lock().unwrap().take() {
            Some(e) => Err(format!("AM receive: {e}")),
            None => Ok(()),
        }
    }
}

/// Registers the AM data handler for one session.
fn set_am_handler(worker: &Worker, rx: &Arc<AmRx>, rbuf: &RegionBuf) -> Res<()> {
    let rx = rx.clone();
    let rbuf = rbuf.clone();
    worker
        .set_am_handler(AM_DATA, move |msg| rx.handle(msg, &rbuf))
        .map_err(err("set_am_handler"))
}

/// One side's data operations for a session.
struct Io<'a> {
    driver: &'a Driver,
    ep: &'a Endpoint,
    api: Api,
    sbuf: RegionBuf,
    rbuf: RegionBuf,
    /// The buffers the last completed send and receive handed back, reused by the next ones
    /// (saves cloning a `RegionBuf`, two atomic updates, per operation).
    spare_sbuf: Cell<Option<RegionBuf>>,
    spare_rbuf: Cell<Option<RegionBuf>>,
    rx: Arc<AmRx>,
}

/// An in-flight send of any API (concrete types, no boxing), or one UCX completed within the
/// call (`*_send_now`).
enum SendReq {
    Tag(Request<RegionBuf>),
    Am(Request<(&'static [u8], RegionBuf)>),
    Stream(Request<RegionBuf>),
    Sent,
}

impl SendReq {
    #[inline]
    fn is_complete(&self) -> bool {
        match self {
            SendReq::Tag(r) | SendReq::Stream(r) => r.is_complete(),
            SendReq::Am(r) => r.is_complete(),
            SendReq::Sent => true,
        }
    }

    #[inline]
    fn wait(self, io: &Io<'_>) -> Res<()> {
        let buffer = match self {
            SendReq::Tag(r) | SendReq::Stream(r) => io.driver.wait(r, io.ep)?.buffer,
            SendReq::Am(r) => io.driver.wait(r, io.ep)?.buffer.1,
            SendReq::Sent => return Ok(()),
        };
        io.spare_sbuf.set(Some(buffer));
        Ok(())
    }
}

/// A posted receive (tag or stream); AM arrivals are counted by the handler instead.
type RecvReq = Request<RegionBuf>;

impl Io<'_> {
    #[inline]
    fn start_send(&self) -> Res<SendReq> {
        if self.sbuf.len() <= SEND_NOW_MAX && self.api != Api::Stream && self.send_now()? {
            return Ok(SendReq::Sent);
        }
        let buf = self.spare_sbuf.take().unwrap_or_else(|| self.sbuf.clone());
        Ok(match self.api {
            Api::Tag => SendReq::Tag(self.ep.tag_send(DATA_TAG, buf).map_err(err("tag_send"))?),
            Api::Am => SendReq::Am(
                self.ep
                    .am_send(AM_DATA, EMPTY, buf, AmFlags::NONE)
                    .map_err(err("am_send"))?,
            ),
            Api::Stream => SendReq::Stream(self.ep.stream_send(buf).map_err(err("stream_send"))?),
        })
    }

    /// Sends the send buffer within the call (tag or AM): false when UCX refused to (nothing
    /// was sent).
    #[inline]
    fn send_now(&self) -> Res<bool> {
        // SAFETY: the region outlives `self.sbuf`, which nothing writes to during a session.
        let bytes = unsafe { std::slice::from_raw_parts(self.sbuf.as_ptr(), self.sbuf.len()) };
        let sent = match self.api {
            Api::Tag => self.ep.tag_send_now(DATA_TAG, bytes),
            _ => self.ep.am_send_now(AM_DATA, EMPTY, bytes, AmFlags::NONE),
        };
        match sent {
            Ok(()) => Ok(true),
            Err(e) if e.status() == Status::ERR_NO_RESOURCE => Ok(false),
            Err(e) => Err(format!("send_now: {e}")),
        }
    }

    /// Posts a receive for one message (tag/stream); `None` for AM.
    #[inline]
    fn post_recv(&self) -> Res<Option<RecvReq>> {
        let buf = || self.spare_rbuf.take().unwrap_or_else(|| self.rbuf.clone());
        Ok(match self.api {
            Api::Tag => Some(
                self.driver
                    .worker()
                    .tag_recv(DATA_TAG, u64::MAX, buf())
                    .map_err(err("tag_recv"))?,
            ),
            Api::Stream => Some(self.ep.stream_recv(buf()).map_err(err("stream_recv"))?),
            Api::Am => None,
        })
    }

    /// Waits for the receive `recv` (tag/stream) or for AM arrival number `n` (1-based).
    #[inline]
    fn wait_recv(&self, recv: Option<RecvReq>, n: u64) -> Res<()> {
        self.until_received(recv.as_ref(), n)?;
        self.take_received(recv)
    }

    /// Waits until the receive `recv` (tag/stream) completes or AM arrival number `n` (1-based)
    /// is in, without taking its result: the latency loops answer first and take the result
    /// after, off the round trip's path.
    #[inline]
    fn until_received(&self, recv: Option<&RecvReq>, n: u64) -> Res<()> {
        match recv {
            Some(r) => self.driver.until_complete(self.ep, r),
            None => {
                let rx = &self.rx;
                self.driver.until(self.ep, || rx.arrived() >= n)
            }
        }
    }

    /// Takes the result of a receive (waiting if needed) and checks its length, or checks the AM
    /// handler's record.
    #[inline]
    fn take_received(&self, recv: Option<RecvReq>) -> Res<()> {
        match recv {
            Some(r) => {
                let done = self.driver.wait(r, self.ep)?;
                if done.length != self.rbuf.len() {
                    return Err(format!(
                        "received {} bytes, want {}",
                        done.length,
                        self.rbuf.len()
                    ));
                }
                self.spare_rbuf.set(Some(done.buffer));
                Ok(())
            }
            None => self.rx.check(),
        }
    }
}

/// Sends a control message and waits for it locally.
fn ctrl_send(driver: &Driver, ep: &Endpoint, tag: u64, payload: Vec<u8>) -> Res<()> {
    let req = ep.tag_send(tag, payload).map_err(err("control send"))?;
    driver.wait(req, ep).map(drop)
}

fn ctrl_recv(driver: &Driver, tag: u64, len: usize) -> Res<Request<Vec<u8>>> {
    driver
        .worker()
        .tag_recv(tag, u64::MAX, vec![0u8; len])
        .map_err(err("control receive"))
}

fn build_context(transport: Option<Transport>, features: Features) -> Res<Context> {
    let mut builder = Context::builder().name("pingpong").features(features);
    let absent = |key: &str| std::env::var_os(format!("UCX_{key}")).is_none();
    match transport {
        Some(Transport::Shm) if absent("TLS") => {
            builder = builder.config("TLS", "posix,sysv,cma,self,tcp");
        }
        Some(Transport::Tcp) => {
            if absent("TLS") {
                builder = builder.config("TLS", "tcp,self");
            }
            if absent("NET_DEVICES") {
                builder = builder.config("NET_DEVICES", "lo");
            }
        }
        _ => {}
    }
    builder.build().map_err(err("context"))
}

fn pin_cpu(cpu: usize) -> Res<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set. CPU_SET bounds-checks the index.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("cpu {cpu} out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Registered send and receive buffers of `size` bytes (at least one byte is mapped).
fn buffers(context: &Context, size: usize) -> Res<(MemRegion, RegionBuf, RegionBuf)> {
    let region = MemRegion::allocate(context, 2 * size.max(64)).map_err(err("mem allocate"))?;
    region.write_at(0, &vec![0xA5; size]).ok();
    let sbuf = region.slice(0, size).map_err(err("slice"))?;
    let rbuf = region.slice(size.max(64), size).map_err(err("slice"))?;
    Ok((region, sbuf, rbuf))
}

// ---------------------------------------------------------------------------------------------
// Server

/// A worker for inline progress: MULTI with `multi`, else SERIALIZED.
fn new_worker(context: &Context, multi: bool) -> Res<Worker> {
    if multi {
        Worker::new(context).map_err(err("worker"))
    } else {
        // SAFETY: this program uses an inline worker and everything made from it on one thread
        // at a time (the watchdog thread below only exits the process).
        unsafe { Worker::new_serialized(context) }.map_err(err("worker"))
    }
}

fn run_server(args: &Args) -> Res<()> {
    let features = parse_features(args.features.as_deref().unwrap_or("tsm"))?;
    let context = build_context(args.transport, features)?;
    let worker = new_worker(&context, args.multi)?;
    let listener = Listener::bind(&worker, args.listen).map_err(err("listen"))?;
    let addr = listener.local_addr().map_err(err("listener address"))?;
    if let Some(cpu) = args.cpu {
        pin_cpu(cpu)?;
    }
    eprintln!("pingpong server listening on {addr}");
    let driver = Driver::Inline(worker.clone());
    let mut served = 0u64;
    loop {
        // Idle. With the wakeup feature, sleep on the worker's event fd (accept_timeout arms
        // it); without (the default, as in ucx_perftest), progress now and then.
        let request = if features.wakeup {
            listener
                .accept_timeout(Duration::from_secs(1))
                .map_err(err("accept"))?
        } else {
            if worker.progress() == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
            listener.try_accept()
        };
        let Some(request) = request else {
            continue;
        };
        let peer = request.client_addr();
        let ep = match worker.accept(request) {
            Ok(ep) => ep,
            Err(e) => {
                eprintln!("pingpong server: accept from {peer:?}: {e}");
                continue;
            }
        };
        served += 1;
        match serve_one(&context, &driver, ep.clone()) {
            Ok(p) => eprintln!(
                "pingpong server: client #{served} {peer:?} done ({:?} {:?} size={} iters={})",
                p.api, p.mode, p.size, p.iters
            ),
            Err(e) => eprintln!("pingpong server: client #{served} {peer:?}: {e}"),
        }
        // The client has said BYE (or failed): a non-blocking close, finished by later progress.
        drop(ep);
    }
}

fn serve_one(context: &Context, driver: &Driver, cm_ep: Endpoint) -> Res<Params> {
    let hello = ctrl_recv(driver, HELLO, MAX_CTRL)?;
    let bye = ctrl_recv(driver, BYE, 0)?;
    let hello = driver.wait(hello, &cm_ep)?;
    let hello = &hello.buffer[..hello.length];
    let p = Params::decode(hello)?;
    let mut ready = Vec::new();
    let ep = match p.wireup {
        Wireup::Cm => cm_ep.clone(),
        Wireup::Address => {
            // SAFETY: the ping-pong trusts its peer to send its worker's whole address.
            let peer = unsafe { WorkerAddress::from_bytes(hello[HEADER_LEN..].to_vec()) };
            ready = driver
                .worker()
                .address()
                .map_err(err("worker address"))?
                .as_bytes()
                .to_vec();
            driver
                .worker()
                .connect_address(&peer)
                .map_err(err("connect_address"))?
        }
    };
    let ep = &ep;
    let (_region, sbuf, rbuf) = buffers(context, p.size)?;
    let rx = Arc::new(AmRx::default());
    if p.api == Api::Am {
        set_am_handler(driver.worker(), &rx, &rbuf)?;
    }
    let io = Io {
        driver,
        ep,
        api: p.api,
        sbuf,
        rbuf,
        spare_sbuf: Cell::new(None),
        spare_rbuf: Cell::new(None),
        rx,
    };
    ctrl_send(driver, &cm_ep, READY, ready)?;
    if p.wireup == Wireup::Address {
        drop(cm_ep);
    }
    match p.mode {
        Mode::Lat => {
            for i in 1..=p.warmup + p.iters {
                let recv = io.post_recv()?;
                io.until_received(recv.as_ref(), i)?;
                let send = io.start_send()?;
                io.take_received(recv)?;
                send.wait(&io)?;
            }
        }
        Mode::Bw => {
            let mut arrived = 0u64;
            for count in [p.warmup, p.iters] {
                if count == 0 {
                    continue;
                }
                bw_receive(&io, p.window, count, &mut arrived)?;
                ctrl_send(driver, ep, ACK, Vec::new())?;
            }
        }
    }
    driver.wait(bye, ep)?;
    Ok(p)
}

/// Receives `count` messages with up to `window` receives posted (tag/stream), or counts AM
/// arrivals; `arrived` is the running AM total.
fn bw_receive(io: &Io<'_>, window: u32, count: u64, arrived: &mut u64) -> Res<()> {
    if io.api == Api::Am {
        *arrived += count;
        return io.wait_recv(None, *arrived);
    }
    let mut posted: VecDeque<RecvReq> = VecDeque::with_capacity(window as usize);
    let mut issued = 0u64;
    let mut done = 0u64;
    while done < count {
        while issued < count && posted.len() < window as usize {
            posted.push_back(io.post_recv()?.expect("tag/stream receive"));
            issued += 1;
        }
        let front = posted.pop_front().expect("a posted receive");
        io.wait_recv(Some(front), 0)?;
        done += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client

fn run_client(args: &Args, server: SocketAddr) -> Res<String> {
    let p = Params {
        api: args.api,
        mode: args.mode,
        size: args.size,
        iters: args.iters,
        warmup: args.warmup.unwrap_or((args.iters / 10).min(10_000)),
        window: args.window,
        front: args.front,
        wireup: args.wireup,
    };
    p.validate()?;
    let default_features = format!(
        "t{}{}",
        match p.api {
            Api::Tag => "",
            Api::Am => "m",
            Api::Stream => "s",
        },
        if p.front { "w" } else { "" }
    );
    let features = parse_features(args.features.as_deref().unwrap_or(&default_features))?;
    let context = build_context(args.transport, features)?;
    // The Engine's progress thread is created before pinning, so it keeps the full CPU mask.
    let driver = if args.front {
        Driver::Front(
            Engine::with_spin(&context, Duration::from_micros(args.front_spin_us))
                .map_err(err("engine"))?,
        )
    } else {
        Driver::Inline(new_worker(&context, args.multi)?)
    };
    if let Some(cpu) = args.cpu {
        pin_cpu(cpu)?;
    }
    let worker = driver.worker().clone();
    let (_region, sbuf, rbuf) = buffers(&context, p.size)?;
    let rx = Arc::new(AmRx::default());
    if p.api == Api::Am {
        set_am_handler(&worker, &rx, &rbuf)?;
    }
    let ep = worker.connect(server).map_err(err("connect"))?;
    let ready = ctrl_recv(&driver, READY, MAX_CTRL)?;
    let mut hello = p.encode();
    if p.wireup == Wireup::Address {
        hello.extend_from_slice(worker.address().map_err(err("worker address"))?.as_bytes());
    }
    if let Err(e) = ctrl_send(&driver, &ep, HELLO, hello) {
        // Complete the posted receive before the worker goes away.
        ready.cancel();
        let _ = ready.wait_timeout(Duration::from_secs(1));
        return Err(format!("handshake with {server}: {e}"));
    }
    let ready = driver
        .wait(ready, &ep)
        .map_err(|e| format!("handshake with {server}: {e}"))?;
    let ep = match p.wireup {
        Wireup::Cm => ep,
        Wireup::Address => {
            // SAFETY: as above (the server's address, sent back).
            let peer = unsafe { WorkerAddress::from_bytes(ready.buffer[..ready.length].to_vec()) };
            let data_ep = worker
                .connect_address(&peer)
                .map_err(err("connect_address"))?;
            drop(ep);
            data_ep
        }
    };
    match ep.transports() {
        Ok(t) => eprintln!(
            "pingpong: transports {}",
            t.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Err(e) => eprintln!("pingpong: transports unknown: {e}"),
    }
    let io = Io {
        driver: &driver,
        ep: &ep,
        api: p.api,
        sbuf,
        rbuf,
        spare_sbuf: Cell::new(None),
        spare_rbuf: Cell::new(None),
        rx,
    };
    let mut result = match p.mode {
        Mode::Lat => client_lat(&io, &p)?,
        Mode::Bw => client_bw(&io, &p)?,
    };
    if p.front {
        result.push_str(" front=1");
        if let Some(secs) = args.idle_secs {
            let idle = Duration::from_secs(secs);
            let (cpu_before, wall) = (process_cpu_time(), Instant::now());
            std::thread::sleep(idle);
            let used = process_cpu_time().saturating_sub(cpu_before);
            let pct = 100.0 * used.as_secs_f64() / wall.elapsed().as_secs_f64();
            result.push_str(&format!(" idle_secs={secs} idle_cpu_pct={pct:.2}"));
        }
    }
    ctrl_send(&driver, &ep, BYE, Vec::new())?;
    // Dropping the endpoint starts a flush close without waiting; dropping the worker then
    // progresses until it is done. (Endpoint::close waits through the library's sleeping wait,
    // which asks UCX for the event fd and so logs an error when the wakeup feature is off.)
    drop(io);
    drop(ep);
    Ok(result)
}

/// CPU time (user + system) this process has used so far.
fn process_cpu_time() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills it for RUSAGE_SELF.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Time stamps for every round trip, as cheap as ucx_perftest's (its `ucs_get_time` reads the
/// CPU's time-stamp counter on x86-64, about 8 ns; `Instant::now` costs about 20 ns, which sat
/// on the measured path once per round trip). Ticks become nanoseconds by the ratio of ticks to
/// `Instant` time over the whole run. Elsewhere the ticks are `Instant` nanoseconds.
struct Stamps {
    since: Instant,
    #[cfg(target_arch = "x86_64")]
    first_tick: u64,
}

impl Stamps {
    fn start() -> Stamps {
        Stamps {
            since: Instant::now(),
            #[cfg(target_arch = "x86_64")]
            first_tick: Stamps::tsc(),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn tsc() -> u64 {
        // SAFETY: RDTSC exists on every x86-64 CPU and only reads the counter.
        unsafe { std::arch::x86_64::_rdtsc() }
    }

    /// The current time in ticks.
    #[inline(always)]
    fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        return Stamps::tsc();
        #[cfg(not(target_arch = "x86_64"))]
        return self.since.elapsed().as_nanos() as u64;
    }

    /// Nanoseconds per tick, measured from `start` to now.
    fn ns_per_tick(&self) -> f64 {
        #[cfg(target_arch = "x86_64")]
        return self.since.elapsed().as_nanos() as f64
            / Stamps::tsc().saturating_sub(self.first_tick).max(1) as f64;
        #[cfg(not(target_arch = "x86_64"))]
        return 1.0;
    }
}

fn client_lat(io: &Io<'_>, p: &Params) -> Res<String> {
    let total = p.warmup + p.iters;
    let mut rtts: Vec<u64> = Vec::with_capacity(p.iters as usize);
    let clock = Stamps::start();
    let mut start = clock.now();
    let mut last = start;
    // The last reply (tag/stream), complete, its result not taken yet; AM has none to take
    // (`take_received(None)` checks the handler's record).
    let mut pending: Option<RecvReq> = None;
    for i in 1..=total {
        if i == p.warmup + 1 {
            start = clock.now();
            last = start;
        }
        // Send first, then post the receive (as ucx_perftest does): the reply cannot arrive
        // before a round trip, and posting it is then off the critical path. The reply's result
        // is taken after the next send has started, off the path as well.
        let send = io.start_send()?;
        io.take_received(pending.take())?;
        send.wait(io)?;
        pending = io.post_recv()?;
        io.until_received(pending.as_ref(), i)?;
        if i > p.warmup {
            let now = clock.now();
            rtts.push(now - last);
            last = now;
        }
    }
    io.take_received(pending)?;
    let ns_per_tick = clock.ns_per_tick();
    let elapsed_ns = (last - start) as f64 * ns_per_tick;
    rtts.sort_unstable();
    let pct = |q: f64| {
        let idx = ((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1;
        rtts[idx] as f64 * ns_per_tick / 2.0 / 1e3
    };
    let avg = elapsed_ns / p.iters as f64 / 2.0 / 1e3;
    Ok(format!(
        "RESULT mode=lat api={} size={} iters={} lat_us_p50={:.3} lat_us_p99={:.3} lat_us_avg={:.3}",
        api_name(p.api),
        p.size,
        p.iters,
        pct(0.50),
        pct(0.99),
        avg
    ))
}

fn client_bw(io: &Io<'_>, p: &Params) -> Res<String> {
    let mut inflight: VecDeque<SendReq> = VecDeque::with_capacity(p.window as usize);
    let mut elapsed = Duration::ZERO;
    for (count, measured) in [(p.warmup, false), (p.iters, true)] {
        if count == 0 {
            continue;
        }
        let ack = ctrl_recv(io.driver, ACK, 0)?;
        let start = Instant::now();
        for _ in 0..count {
            if inflight.len() >= p.window as usize {
                reap_sends(io, &mut inflight, p.window as usize)?;
            }
            inflight.push_back(io.start_send()?);
        }
        while let Some(req) = inflight.pop_front() {
            req.wait(io)?;
        }
        io.driver.wait(ack, io.ep)?;
        if measured {
            elapsed = start.elapsed();
        }
    }
    let gbps = (p.iters as f64 * p.size as f64) / elapsed.as_secs_f64() / 1e9;
    Ok(format!(
        "RESULT mode=bw api={} size={} iters={} window={} gbps={:.3}",
        api_name(p.api),
        p.size,
        p.iters,
        p.window,
        gbps
    ))
}

/// Makes room in a full window: completes at least the oldest send, and any that follow it
/// and are already complete.
#[inline]
fn reap_sends(io: &Io<'_>, inflight: &mut VecDeque<SendReq>, window: usize) -> Res<()> {
    while inflight.len() >= window {
        match io.driver {
            Driver::Inline(worker) => {
                while inflight.front().is_some_and(|r| r.is_complete()) {
                    inflight.pop_front().expect("front").wait(io)?;
                }
                if inflight.len() >= window {
                    worker.progress();
                    if let Some(status) = io.ep.failure() {
                        return Err(format!("peer failed: {status}"));
                    }
                }
            }
            Driver::Front(_) => {
                inflight.pop_front().expect("front").wait(io)?;
            }
        }
    }
    Ok(())
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::Tag => "tag",
        Api::Am => "am",
        Api::Stream => "stream",
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let outcome = if args.server {
        run_server(&args).map(|()| String::new())
    } else {
        let server = args.connect.expect("clap requires --connect");
        // A last resort against a hang the busy loops cannot see (e.g. inside Engine::wait).
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(600));
            eprintln!("pingpong: error: watchdog: still running after 600 s");
            std::process::exit(3);
        });
        run_client(&args, server)
    };
    match outcome {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pingpong: error: {e}");
            ExitCode::FAILURE
        }
    }
}
