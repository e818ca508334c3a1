//! Helpers shared by the integration tests: transport sets, byte patterns, bounded waits,
//! connected worker pairs and temp dirs. Everything here uses real UCX on 127.0.0.1.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use swucx::{AmDesc, AmQueue, CloseMode, Context, Done, Endpoint, Listener, Request, Worker};

/// The upper bound for any single wait in the tests (a hang fails the test instead).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The message sizes every operation must move byte-exact.
pub const SIZES: &[usize] = &[0, 1, 8191, 65536, (1 << 20) + 13, 16 << 20];

/// A set of UCX transports, chosen per context (never through the process environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// In-process only (`self`): connect a worker to its own address.
    SelfOnly,
    /// Shared memory; tcp is needed for the sockaddr connection setup.
    Shm,
    /// TCP on the loopback device.
    Tcp,
}

impl Tls {
    pub fn name(self) -> &'static str {
        match self {
            Tls::SelfOnly => "self",
            Tls::Shm => "shm",
            Tls::Tcp => "tcp",
        }
    }

    pub fn from_name(name: &str) -> Tls {
        match name {
            "self" => Tls::SelfOnly,
            "shm" => Tls::Shm,
            "tcp" => Tls::Tcp,
            other => panic!("unknown transport set {other}"),
        }
    }

    /// A context on these transports with every feature, streams included (the tests' peers
    /// are their own; a needle server refuses a context with streams).
    pub fn context(self) -> Context {
        let builder = Context::builder()
            .name(format!("swucx-test-{}", self.name()))
            .features(swucx::Features::ALL);
        let builder = match self {
            // `self` has neither peer-failure detection nor wakeup events.
            Tls::SelfOnly => builder
                .config("TLS", "self")
                .without_peer_failure_handling()
                .features(swucx::Features {
                    wakeup: false,
                    ..swucx::Features::ALL
                }),
            Tls::Shm => builder.config("TLS", "posix,sysv,cma,self,tcp"),
            Tls::Tcp => builder
                .config("TLS", "tcp,self")
                .config("NET_DEVICES", "lo"),
        };
        builder.build().expect("create UCX context")
    }
}

/// 127.0.0.1 with port 0 (the listener picks a free port).
pub fn any_local() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// `size` pseudo-random bytes from xorshift64*, seeded by `size` and `salt`.
pub fn pattern(size: usize, salt: u64) -> Vec<u8> {
    let mut state = (size as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03))
        | 1;
    let mut out = vec![0u8; size];
    let mut chunks = out.chunks_exact_mut(8);
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let last = next().to_le_bytes();
    let n = tail.len();
    tail.copy_from_slice(&last[..n]);
    out
}

/// Asserts `got == want` without printing megabytes on failure.
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} of {} (got {:#04x}, want {:#04x})",
            want.len(),
            got[i],
            want[i]
        );
    }
}

/// Progresses `workers` on this thread until `done()` holds; panics after `TIMEOUT`.
pub fn progress_until(workers: &[&Worker], what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    let mut idle = 0u32;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let events: u32 = workers.iter().map(|w| w.progress()).sum();
        if events == 0 {
            idle += 1;
            if idle > 1000 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        } else {
            idle = 0;
        }
    }
}

/// Progresses `workers` until `request` completes, then returns its result (panics on timeout).
pub fn wait_on<B: Send + 'static>(
    workers: &[&Worker],
    request: Request<B>,
    what: &str,
) -> swucx::Result<Done<B>> {
    progress_until(workers, what, || request.is_complete());
    request.wait()
}

/// Waits with the request's own worker (`Request::wait_timeout`), failing on timeout.
pub fn wait_timeout<B: Send + 'static>(request: Request<B>, what: &str) -> swucx::Result<Done<B>> {
    let done = request
        .wait_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: wait_timeout failed: {e}"));
    assert!(done, "timed out waiting for {what}");
    request.wait()
}

/// Runs `f` on a thread and returns its result; panics if it does not finish within `timeout`.
pub fn bounded<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}

/// Progresses a worker on a background thread until dropped.
pub struct Progressor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progressor {
    pub fn start(worker: &Worker) -> Progressor {
        Progressor::start_with(worker, || {})
    }

    /// As [`start`](Progressor::start), calling `each_round` before every progress call (e.g.
    /// to accept connections from a listener on the worker).
    pub fn start_with(
        worker: &Worker,
        mut each_round: impl FnMut() + Send + 'static,
    ) -> Progressor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let worker = worker.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                each_round();
                if worker.progress() == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        Progressor {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progressor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An AM message taken from a queue: the header, whether it came by rendezvous, and the desc.
pub struct Kept {
    pub header: Vec<u8>,
    pub rendezvous: bool,
    pub desc: AmDesc,
}

/// Queues the active messages with `id` that reach `worker`.
pub fn am_inbox(worker: &Worker, id: u16) -> AmQueue {
    AmQueue::new(worker, id).expect("create AM queue")
}

/// Two connected endpoints (or one endpoint to itself, for `self`).
pub struct Pair {
    pub tls: Tls,
    pub context: Context,
    pub client_worker: Worker,
    pub server_worker: Worker,
    pub client: Endpoint,
    /// The accepting side's endpoint (for `self`, the same endpoint as `client`).
    pub server: Endpoint,
    pub listener: Option<Listener>,
}

impl Pair {
    /// For `Tls::SelfOnly`: one worker with an endpoint to its own address. Otherwise: two
    /// workers on one context, connected through a listener on 127.0.0.1:0.
    pub fn new(tls: Tls) -> Pair {
        if tls == Tls::SelfOnly {
            Pair::self_pair()
        } else {
            Pair::listener_pair(tls)
        }
    }

    pub fn self_pair() -> Pair {
        let context = Tls::SelfOnly.context();
        let worker = Worker::new(&context).expect("worker");
        let ep = worker
            .connect_address(&worker.address().expect("address"))
            .expect("connect to own address");
        Pair {
            tls: Tls::SelfOnly,
            context,
            client_worker: worker.clone(),
            server_worker: worker,
            client: ep.clone(),
            server: ep,
            listener: None,
        }
    }

    pub fn listener_pair(tls: Tls) -> Pair {
        Pair::listener_pair_on(tls, tls.context())
    }

    /// As `listener_pair`, on `context` (made for `tls`).
    pub fn listener_pair_on(tls: Tls, context: Context) -> Pair {
        let server_worker = Worker::new(&context).expect("server worker");
        let client_worker = Worker::new(&context).expect("client worker");
        let listener = Listener::bind(&server_worker, any_local()).expect("listen");
        let addr = listener.local_addr().expect("listener address");
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0, "port 0 must be replaced by the real port");
        let client = client_worker.connect(addr).expect("connect");
        let mut request = None;
        progress_until(
            &[&server_worker, &client_worker],
            "connection request",
            || {
                request = listener.try_accept();
                request.is_some()
            },
        );
        let server = server_worker
            .accept(request.expect("connection request"))
            .expect("accept");
        let pair = Pair {
            tls,
            context,
            client_worker,
            server_worker,
            client,
            server,
            listener: Some(listener),
        };
        // Finish wireup both ways with one round trip.
        pair.tag_round_trip(0xC0FFEE, b"hello");
        pair
    }

    pub fn workers(&self) -> Vec<&Worker> {
        if self.tls == Tls::SelfOnly {
            vec![&self.client_worker]
        } else {
            vec![&self.client_worker, &self.server_worker]
        }
    }

    /// Progresses both workers until `request` completes.
    pub fn wait<B: Send + 'static>(&self, request: Request<B>, what: &str) -> Done<B> {
        wait_on(&self.workers(), request, what).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Like `wait` but returns the result (for expected errors).
    pub fn wait_result<B: Send + 'static>(
        &self,
        request: Request<B>,
        what: &str,
    ) -> swucx::Result<Done<B>> {
        wait_on(&self.workers(), request, what)
    }

    pub fn until(&self, what: &str, done: impl FnMut() -> bool) {
        progress_until(&self.workers(), what, done)
    }

    /// client -> server tag message, then server -> client, both checked.
    pub fn tag_round_trip(&self, tag: u64, data: &[u8]) {
        let recv = self
            .server_worker
            .tag_recv(tag, u64::MAX, vec![0u8; data.len()])
            .expect("tag_recv");
        let send = self.client.tag_send(tag, data.to_vec()).expect("tag_send");
        self.wait(send, "round-trip send");
        let got = self.wait(recv, "round-trip recv");
        assert_bytes(&got.buffer[..got.length], data, "round trip (to server)");
        let recv = self
            .client_worker
            .tag_recv(tag + 1, u64::MAX, vec![0u8; data.len()])
            .expect("tag_recv");
        let send = self
            .server
            .tag_send(tag + 1, data.to_vec())
            .expect("tag_send");
        self.wait(send, "round-trip reply send");
        let got = self.wait(recv, "round-trip reply recv");
        assert_bytes(&got.buffer[..got.length], data, "round trip (to client)");
    }
}

/// Closes `endpoints` (flush) while every worker in `workers` is progressed in the background,
/// so a close that needs the peer's answer can finish. Errors (a peer already gone) are ignored;
/// a close that does not finish within `TIMEOUT` fails the test.
pub fn close_all(endpoints: &[&Endpoint], workers: &[&Worker]) {
    let _progress: Vec<Progressor> = workers.iter().map(|w| Progressor::start(w)).collect();
    for ep in endpoints {
        let ep = (*ep).clone();
        let _ = bounded(TIMEOUT, "endpoint close", move || {
            ep.close(CloseMode::Flush)
        });
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Best effort without panicking again: force closes need no answer from the peer.
            let _ = self.client.close(CloseMode::Force);
            let _ = self.server.close(CloseMode::Force);
            return;
        }
        let workers = self.workers();
        close_all(&[&self.client, &self.server], &workers);
    }
}

/// Takes the first message from `inbox`, progressing `workers` until one arrives.
pub fn next_kept(workers: &[&Worker], inbox: &AmQueue, what: &str) -> Kept {
    let mut got = None;
    progress_until(workers, what, || {
        got = inbox.try_recv();
        got.is_some()
    });
    let message = got.expect("queued message");
    Kept {
        header: message.header,
        rendezvous: message.payload.is_rendezvous(),
        desc: message.payload,
    }
}

/// A fresh directory under the system temp dir (`swucx-<tag>-<pid>-<nanos>`), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Creates the directory.
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("swucx-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
