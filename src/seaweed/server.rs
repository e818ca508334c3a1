//! The needle server: answers READ requests (docs/protocol.md) over UCX active messages, with
//! bytes from a [`NeedleSource`]: a volume directory ([`VolumeDir`], for the daemon) or a host's
//! own storage code (for embedding in a volume server).
//!
//! [`NeedleServer::run`] runs one lane per thread (one by default): each progresses its own
//! worker and serves the requests its AM handler queued for the connections dealt to it (the
//! handler itself only queues, so disk reads never run inside UCX's progress); the first lane
//! also accepts connections. A lane sleeps on its worker's event fd when idle.
//!
//! Payloads go out without a copy: [`VolumeDir`] answers with a range of its read-only mapping
//! of the `.dat` file ([`Payload::Mapped`]), which the AM send owns (and so keeps mapped) until
//! UCX is done with it; payloads of [`RNDV_THRESHOLD`] bytes and more go by rendezvous, so the
//! client pulls them straight from the mapping into its buffer (cma, RDMA) or UCX's transport
//! reads them from there (tcp, shared memory). Only decompressed needles are owned bytes. The
//! mapping is not registered with UCX (`MemRegion`): see docs/protocol.md.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::seaweed::fid::FileId;
use crate::seaweed::jwt::ReadKey;
use crate::seaweed::protocol::{
    AM_ID_READ, AM_ID_READ_REPLY, DirectPayload, MAX_HEADER_LEN, ProtocolError, ReadFlags,
    ReadReply, ReadRequest, Status, peek_request_id,
};
use crate::seaweed::slots::{Refusal, Slot, Slots};
use crate::seaweed::stats::ServerStats;
use crate::seaweed::volume::{VolumeDir, VolumeError};
use crate::{
    AmFlags, CloseMode, ConnRequest, Context, Endpoint, Listener, Payload, Request, Worker,
};

/// Payloads at least this large go by rendezvous: the client pulls them into its buffer.
pub const RNDV_THRESHOLD: usize = 8 << 10;
/// The most serving threads a server runs ([`NeedleServer::with_threads`]).
pub const MAX_THREADS: usize = 256;
/// The longest sleep on the event fd, so a stop request is seen promptly.
const IDLE_SLEEP: Duration = Duration::from_millis(100);
/// How long the server keeps progressing without pause while replies are in flight.
const REPLY_SPIN: Duration = Duration::from_millis(1);
/// How long the server keeps progressing after the last activity before it sleeps, when the
/// previous pause between activities was shorter than [`SPIN_IF_GAP_BELOW`]: a client reading
/// small needles back to back sends its next request within microseconds, sooner than a
/// wake-up. (Clients busy for longer between requests, e.g. copying a large payload, find the
/// server asleep: its spinning would only take their CPU.)
const IDLE_SPIN: Duration = Duration::from_micros(200);
/// See [`IDLE_SPIN`].
const SPIN_IF_GAP_BELOW: Duration = Duration::from_micros(50);
/// The pause between progress rounds while replies are in flight, after REPLY_SPIN.
const REPLY_POLL: Duration = Duration::from_micros(20);
/// After this long without activity while replies are in flight (a client that does not take
/// them), the pause doubles from REPLY_POLL up to [`REPLY_POLL_MAX`].
const REPLY_STALL: Duration = Duration::from_millis(10);
/// The longest pause between progress rounds while replies are in flight.
const REPLY_POLL_MAX: Duration = Duration::from_millis(1);
/// Replies in flight to one connection past which its requests are answered [`Status::Busy`]
/// (a client that stops taking its replies holds at most this many payloads; the Go client
/// keeps at most 64 reads in flight per server by default).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
/// Replies in flight on one thread past which requests are answered [`Status::Busy`].
pub const MAX_IN_FLIGHT_PER_THREAD: usize = 4096;
/// Unfinished replies to one connection (its [`Status::Busy`] refusals among them) past which
/// its requests are dropped without a reply: a client this far past
/// [`MAX_IN_FLIGHT_PER_CONNECTION`] sends on without taking even its refusals, and answering it
/// would only queue more of them in this process. Its connection is closed once its oldest
/// reply has waited [`REPLY_TIMEOUT`].
pub const MAX_UNFINISHED_PER_CONNECTION: usize = 2 * MAX_IN_FLIGHT_PER_CONNECTION;
/// Owned payload bytes (decompressed needles, a host's buffers: heap memory, up to 256 MiB
/// each) in flight to one connection past which its requests are answered [`Status::Busy`].
/// Payloads that are ranges of a mapped `.dat` cost no memory of their own and do not count.
pub const MAX_OWNED_BYTES_IN_FLIGHT_PER_CONNECTION: u64 = 1 << 30;
/// Owned payload bytes in flight on one thread past which requests are answered
/// [`Status::Busy`].
pub const MAX_OWNED_BYTES_IN_FLIGHT_PER_THREAD: u64 = 4 << 30;
/// How long the oldest unfinished reply to a connection (of any kind: a rendezvous or direct
/// payload the client must take, or an eager reply, a refusal among them, that its transport
/// cannot deliver while the client does not progress) may wait, beyond the time the
/// connection's bytes in flight need at [`MIN_CLIENT_RATE`], before the server closes the
/// connection; and how long a stopping server waits for its replies before
/// it closes the connections still holding some (their clients see the connection fail).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest a client is expected to take its payloads (bytes per second): a connection
/// with more in flight gets that much longer before it counts as stalled.
pub const MIN_CLIENT_RATE: u64 = 4 << 20;
/// How often a serving thread looks for connections whose replies stand still.
const STALL_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a connection may go without a request and with no reply in flight before the
/// server closes it by default ([`NeedleServer::with_idle_timeout`]), so that connections
/// their clients forgot do not hold slots for good. Clients should close theirs sooner (the
/// Go client's `Options.IdleConnTimeout`, 120 s by default), so that a request never crosses
/// the server's close.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a serving thread looks for idle connections at most.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);
pub use crate::seaweed::slots::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_HOST};
/// The least time between two warnings of one kind (rejected connections, failed reads).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A request the handler queued.
struct Job {
    /// The endpoint to answer on.
    ep: Endpoint,
    /// The raw request header.
    header: Vec<u8>,
    /// The message carried data, which a READ request must not.
    with_data: bool,
}

/// A reply in flight and the connection it goes to.
struct InFlight {
    request: Request<(Vec<u8>, Payload)>,
    ep: Endpoint,
    /// Its payload's length, and how much of it is owned (heap) memory.
    bytes: u64,
    owned: u64,
    /// When it was sent: a reply unfinished for long means a client that does not progress
    /// (eager replies complete without the client's help only while its transport has room).
    sent: Instant,
}

/// What one connection has in flight on a lane.
#[derive(Default)]
struct ConnLoad {
    replies: usize,
    bytes: u64,
    owned: u64,
}

/// An open connection of a lane.
struct Client {
    ep: Endpoint,
    /// Its share of the server's connection limits, given back when the client is dropped.
    _slot: Slot,
    /// The client's address, for the log.
    peer: String,
    /// A request came since the last idle check.
    active: bool,
    /// When the idle checks last saw it with a request or a reply in flight (or it opened).
    busy_at: Instant,
}

/// A connection request's client address as the log shows it.
fn peer_name(request: &ConnRequest) -> String {
    request
        .client_addr()
        .map_or_else(|| "(address unknown)".to_string(), |addr| addr.to_string())
}

/// The key of a connection in [`Lane::clients`] and [`Lane::per_connection`] (a reply endpoint
/// is the accepted endpoint itself: `Worker::endpoint_by_handle`).
fn connection_key(ep: &Endpoint) -> usize {
    Arc::as_ptr(&ep.0) as usize
}

/// Where a [`NeedleServer`] gets the bytes of a READ request (the read JWT, if required, is
/// already checked). Called on the server's threads (from several at once with
/// [`NeedleServer::with_threads`]), outside UCX callbacks, so it may block on disk. Returns the reply header and its payload (`reply.payload_len` must equal its length):
/// owned bytes (`Vec<u8>`, `.into()`), or a [`MappedSlice`](crate::MappedSlice) of a mapped file
/// that the send keeps alive and reads in place.
pub trait NeedleSource: Send + Sync {
    /// Answers `request`.
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload);
}

/// The daemon's back end: the files a `weed volume` wrote. Payloads are ranges of the `.dat`
/// mapping; a read that a compaction commit overtook (the `.dat` replaced before the read was
/// done) is read again from the new files, or answered [`Status::Stale`], never from stale
/// offsets (see [`Volume::read`](crate::seaweed::Volume::read)).
impl NeedleSource for VolumeDir {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        let fid = FileId::new(request.volume_id, request.needle_id, request.cookie);
        match VolumeDir::read(self, &fid, &request.read_options()) {
            Ok(result) => (ReadReply::ok(request, &result), result.data),
            Err(e) => {
                let reply = ReadReply::from_error(request.request_id, &e);
                // A failure of this server (I/O, a corrupt needle) is the operator's to see; a
                // chunk manifest is not one (its clients read it over HTTP, as they should).
                let failed =
                    reply.status == Status::Internal && !matches!(e, VolumeError::ChunkManifest(_));
                if failed && let Some(held_back) = FAILED_READS.allow() {
                    log::warn!(
                        "read of {fid}: {e} (answered INTERNAL: read over HTTP; {held_back} \
                         more such reads since the last warning)"
                    );
                }
                (reply, Payload::default())
            }
        }
    }
}

/// Fails unless `worker`'s transports carry active-message headers as long as the protocol's
/// longest ([`MAX_HEADER_LEN`]): a READ request with a 4096-byte JWT.
pub fn check_am_header_limit(worker: &Worker) -> crate::Result<()> {
    am_header_limit_ok(worker.max_am_header()?)
}

fn am_header_limit_ok(limit: usize) -> crate::Result<()> {
    if limit >= MAX_HEADER_LEN {
        return Ok(());
    }
    Err(crate::Error::with_detail(
        "ucp_worker_query",
        crate::Status::ERR_UNSUPPORTED,
        format!(
            "the transports UCX chose carry active-message headers of at most {limit} bytes; \
             the needle protocol needs {MAX_HEADER_LEN} (choose other transports with UCX_TLS, \
             or raise their segment size, e.g. UCX_TCP_TX_SEG_SIZE)"
        ),
    ))
}

/// Serves needle reads from one [`NeedleSource`] on one listener, on one thread or more
/// ([`with_threads`](NeedleServer::with_threads)).
///
/// Each thread runs a lane: a worker of its own with the connections dealt to it. The first
/// lane also owns the listener and deals new connections to the lanes in turn (accepting a
/// request on another lane's worker), so one connection's requests are always served by one
/// thread and the lanes share nothing while serving.
pub struct NeedleServer {
    listener: Listener,
    /// At least one; the first owns the listener.
    lanes: Vec<Lane>,
    answerer: Answerer,
    reply_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_connections: usize,
    max_connections_per_host: usize,
}

/// What every lane answers with; shared by the lanes' threads.
struct Answerer {
    source: Arc<dyn NeedleSource>,
    read_key: Option<ReadKey>,
    direct_reads: bool,
}

/// One worker and the connections, requests and replies on it. One thread runs it.
struct Lane {
    /// The lane's number (0: the accepting lane), for the log.
    index: usize,
    worker: Worker,
    /// Requests the AM handler queued.
    jobs: Arc<Mutex<VecDeque<Job>>>,
    /// Connection requests the accepting lane dealt to this lane, to accept on its worker,
    /// with the slots it took for them.
    dealt: Arc<Mutex<Vec<(ConnRequest, Slot)>>>,
    /// The open connections, by [`connection_key`].
    clients: HashMap<usize, Client>,
    /// Replies in flight that need this side's progress to move their bytes.
    replies: Vec<InFlight>,
    /// Direct replies in flight: the client copies the payload itself and then releases the
    /// rendezvous; the release arrives as an event like a request does.
    direct_replies: Vec<InFlight>,
    /// Replies in flight per connection ([`connection_key`]), both kinds.
    per_connection: HashMap<usize, ConnLoad>,
    /// Owned payload bytes in flight, both kinds of reply.
    owned_in_flight: u64,
    /// Replies of connections closed by [`Lane::abandon`], kept until UCX has finished
    /// cancelling them (dropped at once, UCX 1.13 crashed destroying the worker after).
    cancelled: Vec<InFlight>,
    /// The server's counters, shared by the lanes. Its open connections (all lanes together)
    /// are counted up by the accepting lane when it takes a connection, down by the lane whose
    /// connection ends.
    stats: Arc<ServerStats>,
}

/// Where the accepting lane deals a connection to another lane: its inbox, and its worker to
/// wake.
struct Inbox {
    dealt: Arc<Mutex<Vec<(ConnRequest, Slot)>>>,
    worker: Worker,
}

/// The accepting lane's listener and the other lanes' inboxes.
struct Dealer<'a> {
    listener: &'a Listener,
    others: Vec<Inbox>,
    /// Deals so far; the next connection goes to lane `next % lanes`.
    next: usize,
    /// The connection limits: a new connection is rejected when it gets no slot.
    slots: Arc<Slots>,
    /// Warnings about rejected connections.
    rejections: Throttle,
}

/// The server's stop flag, and the lanes' own: one lane failing stops them all.
struct Stop<'a> {
    requested: &'a AtomicBool,
    lane_failed: AtomicBool,
    /// [`REPLY_TIMEOUT`] or the server's own.
    reply_timeout: Duration,
    /// [`DEFAULT_IDLE_TIMEOUT`], the server's own, or none.
    idle_timeout: Option<Duration>,
}

/// Sets the flag if the lane's thread unwinds, so the other lanes stop too.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

impl Stop<'_> {
    fn now(&self) -> bool {
        self.requested.load(Ordering::Acquire) || self.lane_failed.load(Ordering::Acquire)
    }
}

impl NeedleServer {
    /// Listens on `addr` (port 0 picks one) and serves the volumes in `dir`.
    pub fn bind(
        context: &Context,
        dir: VolumeDir,
        addr: SocketAddr,
    ) -> crate::Result<NeedleServer> {
        NeedleServer::bind_source(context, Arc::new(dir), addr)
    }

    /// Listens on `addr` and serves what `source` supplies (the embedding back end). Fails if
    /// the context's transports cannot carry the protocol's longest header
    /// ([`check_am_header_limit`]), or if it lacks active messages or has streams on
    /// (`ERR_INVALID_PARAM`; with streams any client could abort the process with an empty
    /// stream message, [`Features::stream`]).
    ///
    /// [`Features::stream`]: crate::Features::stream
    pub fn bind_source(
        context: &Context,
        source: Arc<dyn NeedleSource>,
        addr: SocketAddr,
    ) -> crate::Result<NeedleServer> {
        let features = context.features();
        let refused = if !features.am {
            Some("its context has no active messages (the AM feature), which the protocol uses")
        } else if features.stream {
            Some(
                "its context has streams on, which lets any client abort the process (UCX 1.13 \
                 asserts on an empty stream message); make the context without streams (the \
                 default features)",
            )
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(crate::Error::with_detail(
                "needle server",
                crate::Status::ERR_INVALID_PARAM,
                why,
            ));
        }
        let first = Lane::new(context, 0, Arc::default())?;
        let listener = Listener::bind(&first.worker, addr)?;
        Ok(NeedleServer {
            listener,
            lanes: vec![first],
            answerer: Answerer {
                source,
                read_key: None,
                direct_reads: true,
            },
            reply_timeout: REPLY_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
        })
    }

    /// Requires a valid read JWT signed with `key` on every request, as `weed volume` does when
    /// `[jwt.signing.read] key` is set (an empty key checks nothing).
    pub fn with_read_key(mut self, key: ReadKey) -> NeedleServer {
        self.answerer.read_key = Some(key);
        self
    }

    /// Whether to tell clients that ask where a rendezvous payload lies in this process, so that
    /// a client on this host can copy it out itself (direct reads, the default; see
    /// [`crate::seaweed::direct`]). Off, every payload moves through UCX.
    pub fn with_direct_reads(mut self, enabled: bool) -> NeedleServer {
        self.answerer.direct_reads = enabled;
        self
    }

    /// How long a connection's replies may stand still before the server closes it, and how
    /// long a stop waits for the replies in flight (default [`REPLY_TIMEOUT`]).
    pub fn with_reply_timeout(mut self, timeout: Duration) -> NeedleServer {
        self.reply_timeout = timeout;
        self
    }

    /// Closes connections that go `timeout` without a request and with no reply in flight
    /// (checked every second at most, so up to a second later); `None` (or zero) keeps them
    /// until their clients close them. Default [`DEFAULT_IDLE_TIMEOUT`]. A client that sends a
    /// request as the server closes its connection sees that read fail: clients should close
    /// idle connections well before the server does.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> NeedleServer {
        self.idle_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Keeps at most `max` connections open (default [`DEFAULT_MAX_CONNECTIONS`]; 0 counts as
    /// 1): past it new connections are rejected (the Go client then reads over HTTP and tries
    /// UCX again later) with a warning at most every 10 s. Each connection holds file
    /// descriptors (tcp: sockets) and UCX buffers.
    pub fn with_max_connections(mut self, max: usize) -> NeedleServer {
        self.max_connections = max.max(1);
        self
    }

    /// Keeps at most `max` connections open from one client host (by IP address; default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_HOST`]; 0 counts as 1): past it that host's new
    /// connections are rejected as past [`with_max_connections`](Self::with_max_connections),
    /// so that one host cannot take every slot. Clients on this host all count as one host
    /// (their connections come from a loopback address).
    pub fn with_max_connections_per_host(mut self, max: usize) -> NeedleServer {
        self.max_connections_per_host = max.max(1);
        self
    }

    /// Serves on `threads` threads (0 counts as 1, the default), each with a worker of its
    /// own; connections are dealt to them in turn as they arrive. More threads serve more
    /// clients at once where one thread's sending is the limit (tcp: the kernel's copy of every
    /// payload); the source is then called from all of them. Fails with `ERR_INVALID_PARAM` for
    /// more than [`MAX_THREADS`], or if UCX refuses a worker.
    pub fn with_threads(mut self, threads: usize) -> crate::Result<NeedleServer> {
        if threads > MAX_THREADS {
            return Err(crate::Error::with_detail(
                "needle server threads",
                crate::Status::ERR_INVALID_PARAM,
                format!("{threads} threads (at most {MAX_THREADS})"),
            ));
        }
        let context = self.lanes[0].worker.context().clone();
        let stats = self.lanes[0].stats.clone();
        self.lanes.truncate(threads.max(1));
        while self.lanes.len() < threads {
            let lane = Lane::new(&context, self.lanes.len(), stats.clone())?;
            self.lanes.push(lane);
        }
        Ok(self)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> crate::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters (replies by status, bytes, connections), updated while it serves;
    /// read them from any thread ([`ServerStats::snapshot`]).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.lanes[0].stats.clone()
    }

    /// Serves until `stop` is set, then stops accepting connections, answers the requests it
    /// has received, finishes the replies in flight and returns. Requests that arrive while it
    /// finishes are answered [`Status::Busy`]. The first lane runs on the calling thread, every
    /// other on a thread of its own that ends before this returns; if one lane fails, all stop
    /// and the first failure is returned.
    pub fn run(&mut self, stop: &AtomicBool) -> crate::Result<()> {
        let NeedleServer {
            listener,
            lanes,
            answerer,
            reply_timeout,
            idle_timeout,
            max_connections,
            max_connections_per_host,
        } = self;
        let answerer = &*answerer;
        let stop = Stop {
            requested: stop,
            lane_failed: AtomicBool::new(false),
            reply_timeout: *reply_timeout,
            idle_timeout: *idle_timeout,
        };
        let stop = &stop;
        let (first, others) = lanes.split_first_mut().expect("a server has a lane");
        let dealer = Dealer {
            listener,
            others: others.iter().map(Lane::inbox).collect(),
            next: 0,
            slots: Slots::new(
                *max_connections,
                *max_connections_per_host,
                first.stats.clone(),
            ),
            rejections: Throttle::new(WARN_EVERY),
        };
        let outcome = std::thread::scope(|scope| {
            let mut threads = Vec::with_capacity(others.len());
            let mut outcome = Ok(());
            for lane in others.iter_mut() {
                let spawned = std::thread::Builder::new()
                    .name(format!("swucx-lane-{}", lane.index))
                    .spawn_scoped(scope, move || lane.run(answerer, stop, None));
                match spawned {
                    Ok(thread) => threads.push(thread),
                    Err(e) => {
                        stop.lane_failed.store(true, Ordering::Release);
                        outcome = Err(crate::Error::with_detail(
                            "spawning a needle server thread",
                            crate::Status::ERR_NO_RESOURCE,
                            e.to_string(),
                        ));
                        break;
                    }
                }
            }
            let first_outcome = first.run(answerer, stop, Some(dealer));
            outcome = outcome.and(first_outcome);
            for thread in threads {
                match thread.join() {
                    Ok(lane_outcome) => outcome = outcome.and(lane_outcome),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            outcome
        });
        // Requests dealt to a lane after it finished (the first lane deals until it sees the
        // stop) are rejected now, not left waiting; their slots are given back.
        for lane in lanes.iter() {
            lane.dealt.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        outcome
    }
}

impl Lane {
    /// A worker with the READ handler, which only queues (disk reads never run inside UCX's
    /// progress).
    fn new(context: &Context, index: usize, stats: Arc<ServerStats>) -> crate::Result<Lane> {
        let worker = Worker::new(context)?;
        check_am_header_limit(&worker)?;
        let jobs: Arc<Mutex<VecDeque<Job>>> = Arc::default();
        let queue = jobs.clone();
        let counts = stats.clone();
        worker.set_am_handler(AM_ID_READ, move |msg| {
            let Some(ep) = msg.reply_endpoint() else {
                // Counted and throttled: a client could send these as fast as it likes.
                counts.request_dropped();
                if let Some(held_back) = NO_REPLY_ENDPOINT.allow() {
                    log::warn!(
                        "READ request without a reply endpoint (sent without UCX's REPLY flag); \
                         dropped ({held_back} more since the last warning)"
                    );
                }
                return;
            };
            let job = Job {
                ep,
                header: msg.header().to_vec(),
                with_data: !msg.is_empty(),
            };
            queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(job);
        })?;
        Ok(Lane {
            index,
            worker,
            jobs,
            dealt: Arc::default(),
            clients: HashMap::new(),
            replies: Vec::new(),
            direct_replies: Vec::new(),
            per_connection: HashMap::new(),
            owned_in_flight: 0,
            cancelled: Vec::new(),
            stats,
        })
    }

    fn inbox(&self) -> Inbox {
        Inbox {
            dealt: self.dealt.clone(),
            worker: self.worker.clone(),
        }
    }

    /// Serves until `stop`, then finishes (see [`NeedleServer::run`]). A lane that fails (or
    /// panics: a source's `read` may) sets the lanes' own stop flag.
    fn run(
        &mut self,
        answerer: &Answerer,
        stop: &Stop,
        mut dealer: Option<Dealer>,
    ) -> crate::Result<()> {
        let _on_panic = StopOnPanic(&stop.lane_failed);
        let outcome = self.serve_until(answerer, stop, dealer.as_mut());
        if outcome.is_err() {
            stop.lane_failed.store(true, Ordering::Release);
        }
        self.finish(answerer, stop.reply_timeout);
        outcome
    }

    fn serve_until(
        &mut self,
        answerer: &Answerer,
        stop: &Stop,
        mut dealer: Option<&mut Dealer>,
    ) -> crate::Result<()> {
        let efd = self.worker.event_fd()?;
        let mut last_busy = Instant::now();
        let mut last_gap = Duration::MAX;
        let mut last_stall_check = last_busy;
        let mut last_idle_check = last_busy;
        while !stop.now() {
            // One look at the clock per round (on a VM a read costs as much as a progress call).
            let now = Instant::now();
            // Also while busy: a lane kept busy by others must still find stalled clients.
            if !self.per_connection.is_empty()
                && now.duration_since(last_stall_check) >= STALL_CHECK_EVERY
            {
                last_stall_check = now;
                self.close_stalled(stop.reply_timeout);
            }
            if let Some(timeout) = stop.idle_timeout
                && now.duration_since(last_idle_check) >= (timeout / 4).min(IDLE_CHECK_EVERY)
            {
                last_idle_check = now;
                self.close_idle(now, timeout);
            }
            if self.step(answerer, dealer.as_deref_mut()) {
                last_gap = now.duration_since(last_busy);
                last_busy = now;
                continue;
            }
            if !self.replies.is_empty() {
                // Replies in flight need this side's progress, and not always after an event
                // (a rendezvous the client answers, a full shared-memory FIFO draining): keep
                // progressing (yielding the CPU to whatever else is runnable) for a while after
                // the last activity, then sleep on the event fd (new requests wake it) for
                // REPLY_POLL, longer while nothing moves.
                let idle = now.duration_since(last_busy);
                if idle < REPLY_SPIN {
                    std::thread::yield_now();
                } else if self.worker.arm()? {
                    crate::worker::poll_readable(efd, reply_poll(idle));
                }
            } else if last_gap < SPIN_IF_GAP_BELOW && now.duration_since(last_busy) < IDLE_SPIN {
                std::thread::yield_now();
            } else if self.worker.arm()? {
                crate::worker::poll_readable(efd, IDLE_SLEEP);
            }
        }
        Ok(())
    }

    /// Answers the requests received, then finishes the replies in flight, answering
    /// [`Status::Busy`] to requests that arrive meanwhile. After `timeout` it closes the
    /// connections whose replies are still in flight (a client that does not take them).
    fn finish(&mut self, answerer: &Answerer, timeout: Duration) {
        let received = self.take_jobs();
        log::info!(
            "stopping: no new connections; answering {} received requests, then finishing {} \
             replies in flight (lane {})",
            received.len(),
            self.replies.len() + self.direct_replies.len(),
            self.index
        );
        for job in received {
            self.serve(answerer, &job, false);
        }
        let started = Instant::now();
        let mut last_busy = started;
        let mut all_finished = true;
        while !self.replies.is_empty() || !self.direct_replies.is_empty() {
            if self.worker.progress() > 0 {
                last_busy = Instant::now();
            }
            for job in self.take_jobs() {
                self.serve(answerer, &job, true);
            }
            self.reap_replies();
            if started.elapsed() >= timeout {
                let why = format!("stopping, replies still in flight after {timeout:?}");
                self.abandon(|_| true, &why);
                all_finished = false;
                break;
            }
            std::thread::sleep(reply_poll(last_busy.elapsed()));
        }
        // Let UCX finish cancelling what was abandoned before the worker goes.
        let started = Instant::now();
        while !self.cancelled.is_empty() && started.elapsed() < Duration::from_secs(1) {
            self.worker.progress();
            self.cancelled.retain(|r| !r.request.is_complete());
        }
        if all_finished {
            log::info!("stopped: every reply finished (lane {})", self.index);
        }
    }

    /// Closes the connections whose oldest unfinished reply has waited `timeout` plus the time
    /// their bytes in flight need at [`MIN_CLIENT_RATE`] (a client that stopped taking them, or
    /// progressing at all: hung, stopped, or hostile), so they hold no payloads and no share of
    /// the lane's limits. Every kind of reply counts: a rendezvous or direct payload waits for
    /// the client to take it, and an eager one (a refusal too) for its transport's room, which
    /// a client that does not progress never frees.
    fn close_stalled(&mut self, timeout: Duration) {
        let mut oldest: HashMap<usize, Instant> = HashMap::new();
        for reply in self.replies.iter().chain(&self.direct_replies) {
            let at = oldest
                .entry(connection_key(&reply.ep))
                .or_insert(reply.sent);
            *at = (*at).min(reply.sent);
        }
        let per_connection = &self.per_connection;
        let stalled: Vec<usize> = oldest
            .into_iter()
            .filter(|(key, sent)| {
                let bytes = per_connection.get(key).map_or(0, |load| load.bytes);
                sent.elapsed() >= timeout + Duration::from_secs(bytes / MIN_CLIENT_RATE)
            })
            .map(|(key, _)| key)
            .collect();
        if !stalled.is_empty() {
            let why = format!("replies not taken for {timeout:?} and more");
            self.abandon(|key| stalled.contains(&key), &why);
        }
    }

    /// Closes the connections that have had no request and no reply in flight for `timeout`
    /// (as far as the checks, `now` the latest, saw).
    fn close_idle(&mut self, now: Instant, timeout: Duration) {
        let mut idle = Vec::new();
        for (key, client) in &mut self.clients {
            if std::mem::take(&mut client.active) || self.per_connection.contains_key(key) {
                client.busy_at = now;
            } else if now.duration_since(client.busy_at) >= timeout {
                idle.push(*key);
            }
        }
        let mut closed = 0;
        for key in idle {
            // A close progresses the worker, which may queue a request from the next one.
            if self.has_queued_request(key) {
                continue;
            }
            let Some(client) = self.clients.get(&key) else {
                continue;
            };
            log::info!(
                "closing the connection of client {} idle for {timeout:?} (lane {})",
                client.peer,
                self.index
            );
            if let Err(e) = client.ep.close(CloseMode::Force) {
                log::debug!("closing an idle connection: {e}");
            }
            closed += 1;
        }
        // The next round's check of the connections drops them.
        self.stats.connections_closed(closed);
    }

    /// Whether a request from the connection `key` waits in the queue.
    fn has_queued_request(&self, key: usize) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().any(|job| connection_key(&job.ep) == key)
    }

    /// Closes the connections `doomed` picks (by [`connection_key`]) among those with replies
    /// in flight, and drops their replies (their clients see the connection fail).
    fn abandon(&mut self, doomed: impl Fn(usize) -> bool, why: &str) {
        let mut abandoned = Vec::new();
        for in_flight in [&mut self.replies, &mut self.direct_replies] {
            let (picked, kept): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(in_flight)
                .into_iter()
                .partition(|r| doomed(connection_key(&r.ep)));
            *in_flight = kept;
            abandoned.extend(picked);
        }
        let mut closed = HashMap::new();
        for reply in &abandoned {
            closed.entry(connection_key(&reply.ep)).or_insert(&reply.ep);
        }
        log::warn!(
            "{why}: closing {} connections, {} replies unfinished (lane {})",
            closed.len(),
            abandoned.len(),
            self.index
        );
        for (key, ep) in &closed {
            if let Err(e) = ep.close(CloseMode::Force) {
                log::debug!("closing a connection: {e}");
            }
            if let Some(load) = self.per_connection.remove(key) {
                self.owned_in_flight -= load.owned;
            }
        }
        self.stats.connections_closed(closed.len());
        // The closes cancel the replies; progress finishes them (reap_replies, finish).
        self.cancelled.extend(abandoned);
    }

    fn take_jobs(&self) -> VecDeque<Job> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One round: progress, accept (and deal), serve queued requests, reap finished replies.
    /// Returns whether anything happened.
    fn step(&mut self, answerer: &Answerer, dealer: Option<&mut Dealer>) -> bool {
        let mut busy = self.worker.progress() > 0;
        if let Some(dealer) = dealer {
            while let Some(request) = dealer.listener.try_accept() {
                busy = true;
                let host = request.client_addr().map(|addr| addr.ip());
                let slot = match dealer.slots.take(host) {
                    Ok(slot) => slot,
                    Err(why) => {
                        self.stats.connection_rejected();
                        dealer.reject(request, why);
                        continue;
                    }
                };
                let lane = dealer.next % (dealer.others.len() + 1);
                dealer.next += 1;
                match lane.checked_sub(1).map(|i| &dealer.others[i]) {
                    None => self.accept(request, slot),
                    Some(inbox) => inbox.deal(request, slot),
                }
            }
        }
        let dealt = std::mem::take(&mut *self.dealt.lock().unwrap_or_else(|e| e.into_inner()));
        for (request, slot) in dealt {
            busy = true;
            self.accept(request, slot);
        }
        // Ended connections give their slots back.
        self.clients
            .retain(|_, client| client.ep.failure().is_none() && !client.ep.is_closed());
        for job in self.take_jobs() {
            busy = true;
            self.serve(answerer, &job, false);
        }
        self.reap_replies();
        busy
    }

    /// Accepts `request` into `slot` (given back if the accept fails).
    fn accept(&mut self, request: ConnRequest, slot: Slot) {
        let peer = peer_name(&request);
        match self.worker.accept(request) {
            Ok(ep) => {
                log::info!("client {peer} connected (lane {})", self.index);
                self.stats.connection_accepted();
                let client = Client {
                    _slot: slot,
                    peer,
                    active: false,
                    busy_at: Instant::now(),
                    ep,
                };
                self.clients.insert(connection_key(&client.ep), client);
            }
            Err(e) => log::warn!("accepting {peer}: {e}"),
        }
    }

    /// Answers one request: refused at once when it carried data, its connection (or this
    /// thread) is over its in-flight limit or the server is `stopping` ([`Status::Busy`]), else
    /// read from the source. A request whose id cannot be read, or whose connection has
    /// [`MAX_UNFINISHED_PER_CONNECTION`] replies unfinished, is dropped (the client's request
    /// times out).
    fn serve(&mut self, answerer: &Answerer, job: &Job, stopping: bool) {
        let key = connection_key(&job.ep);
        if let Some(client) = self.clients.get_mut(&key) {
            client.active = true;
        }
        let unfinished = self.per_connection.get(&key).map_or(0, |load| load.replies);
        if unfinished >= MAX_UNFINISHED_PER_CONNECTION {
            log::debug!(
                "READ request of a connection with {unfinished} replies unfinished; dropped"
            );
            self.stats.request_dropped();
            return;
        }
        let Some(id) = peek_request_id(&job.header) else {
            log::debug!("READ request without a readable id; dropped");
            self.stats.request_dropped();
            return;
        };
        let (reply, payload) = match ReadRequest::decode(&job.header) {
            Err(ProtocolError::UnsupportedVersion(_)) => (ReadReply::unknown_version(id), None),
            Err(e) => {
                log::debug!("bad READ request: {e}");
                (ReadReply::status(id, Status::BadRequest), None)
            }
            Ok(request) if job.with_data => {
                log::debug!("READ request with data");
                (refusal(&request, Status::BadRequest), None)
            }
            Ok(request) if stopping || self.over_limit(&job.ep) => {
                (refusal(&request, Status::Busy), None)
            }
            Ok(request) => {
                let (reply, payload) = answerer.answer(&request, &job.ep);
                (reply, Some(payload))
            }
        };
        self.send_reply(&job.ep, reply, payload.unwrap_or_default());
    }

    /// Whether `ep`'s connection, or this lane, has as many replies (or bytes) in flight as it
    /// may.
    fn over_limit(&self, ep: &Endpoint) -> bool {
        let conn = self.per_connection.get(&connection_key(ep));
        conn.is_some_and(|load| {
            load.replies >= MAX_IN_FLIGHT_PER_CONNECTION
                || load.owned >= MAX_OWNED_BYTES_IN_FLIGHT_PER_CONNECTION
        }) || self.replies.len() + self.direct_replies.len() >= MAX_IN_FLIGHT_PER_THREAD
            || self.owned_in_flight >= MAX_OWNED_BYTES_IN_FLIGHT_PER_THREAD
    }

    fn send_reply(&mut self, ep: &Endpoint, reply: ReadReply, payload: Payload) {
        let encoded = match reply.encode() {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("encoding a reply: {e}");
                return;
            }
        };
        let rendezvous = payload.len() >= RNDV_THRESHOLD;
        let flags = if rendezvous {
            AmFlags::RNDV
        } else {
            AmFlags::NONE
        };
        let in_flight = if reply.direct.is_some() {
            &mut self.direct_replies
        } else {
            &mut self.replies
        };
        let bytes = payload.len() as u64;
        let owned = if matches!(payload, Payload::Owned(_)) {
            bytes
        } else {
            0
        };
        // Counted before the send, so a client that has its reply finds it counted.
        let direct = reply.direct.is_some();
        self.stats.reply_sent(reply.status, bytes, direct);
        match ep.am_send(AM_ID_READ_REPLY, encoded, payload, flags) {
            Ok(request) => {
                in_flight.push(InFlight {
                    request,
                    ep: ep.clone(),
                    bytes,
                    owned,
                    sent: Instant::now(),
                });
                let load = self.per_connection.entry(connection_key(ep)).or_default();
                load.replies += 1;
                load.bytes += bytes;
                load.owned += owned;
                self.owned_in_flight += owned;
            }
            Err(e) => log::debug!("sending a reply: {e}"),
        }
    }

    fn reap_replies(&mut self) {
        let Lane {
            replies,
            direct_replies,
            per_connection,
            owned_in_flight,
            ..
        } = self;
        let mut finished = |reply: &InFlight| {
            if !reply.request.is_complete() {
                return false;
            }
            // Counted in when sent (send_reply) and only taken out here or with the whole
            // connection (abandon), so these cannot underflow.
            debug_assert!(*owned_in_flight >= reply.owned);
            *owned_in_flight -= reply.owned;
            let key = connection_key(&reply.ep);
            if let Some(load) = per_connection.get_mut(&key) {
                debug_assert!(load.replies > 0 && load.bytes >= reply.bytes);
                load.replies -= 1;
                load.bytes -= reply.bytes;
                load.owned -= reply.owned;
                if load.replies == 0 {
                    per_connection.remove(&key);
                }
            }
            true
        };
        replies.retain(|r| !finished(r));
        direct_replies.retain(|r| !finished(r));
        self.cancelled.retain(|r| !r.request.is_complete());
    }
}

impl Dealer<'_> {
    /// Rejects a connection past a limit (`why`), with a warning at most every
    /// [`WARN_EVERY`] (a crowd of clients would flood the log).
    fn reject(&mut self, request: ConnRequest, why: Refusal) {
        let peer = peer_name(&request);
        request.reject();
        if let Some(left_out) = self.rejections.allow() {
            log::warn!(
                "rejected {} connection(s) (the last from {peer}: {why}); their clients read \
                 over HTTP",
                left_out + 1,
            );
        }
    }
}

/// Lets a kind of warning through at most every so often, counting those it held back.
/// Shared by threads.
struct Throttle {
    every: Duration,
    /// When the last warning went through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last)` when a warning may go through now.
    fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state
            .0
            .is_some_and(|at| now.duration_since(at) < self.every)
        {
            state.1 += 1;
            return None;
        }
        let held_back = std::mem::take(&mut state.1);
        state.0 = Some(now);
        Some(held_back)
    }
}

/// Warnings about reads the server failed (answered INTERNAL), of every server in the process.
static FAILED_READS: Throttle = Throttle::new(WARN_EVERY);

/// Warnings about READ requests dropped for want of a reply endpoint, of every server.
static NO_REPLY_ENDPOINT: Throttle = Throttle::new(WARN_EVERY);

impl Inbox {
    /// Hands `request` to the lane and wakes it.
    fn deal(&self, request: ConnRequest, slot: Slot) {
        self.dealt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((request, slot));
        if let Err(e) = self.worker.signal() {
            log::warn!("waking a needle server lane: {e}");
        }
    }
}

impl Answerer {
    /// The reply to a request that decoded, in its version. A payload that goes by rendezvous
    /// to a client that asked for direct reads is announced with its address: the send keeps it
    /// there until the client releases the rendezvous (docs/protocol.md, "Direct reads"). Only
    /// when `ep` is on shared memory (the client is on this host): over tcp or RDMA the address
    /// and pid would help no one and tell a remote peer about this process.
    fn answer(&self, request: &ReadRequest, ep: &Endpoint) -> (ReadReply, Payload) {
        let fid = FileId::new(request.volume_id, request.needle_id, request.cookie);
        let refused = self
            .read_key
            .as_ref()
            .and_then(|key| key.verify(&request.jwt, &fid, unix_now()).err());
        let (reply, payload) = match refused {
            Some(why) => {
                log::debug!("read of {fid} refused: {why}");
                let reply = ReadReply::status(request.request_id, Status::Unauthorized);
                (reply, Payload::default())
            }
            None => self.source.read(request),
        };
        let mut reply = reply.in_version(request.version);
        if self.direct_reads
            && request.flags.contains(ReadFlags::DIRECT)
            && reply.status == Status::Ok
            && payload.len() >= RNDV_THRESHOLD
            && ep.on_shared_memory()
        {
            reply.direct = Some(DirectPayload {
                address: payload.as_slice().as_ptr() as u64,
                pid: std::process::id(),
            });
        }
        (reply, payload)
    }
}

/// A [`NeedleServer`] running on a thread of its own ([`NeedleServer::spawn`]).
pub struct ServerThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<crate::Result<()>>>,
}

impl NeedleServer {
    /// Runs the server on a new thread until [`ServerThread::stop`] (or drop).
    pub fn spawn(mut self) -> ServerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("swucx-needle-server".into())
            .spawn(move || self.run(&flag))
            .expect("spawn the needle server thread");
        ServerThread {
            stop,
            thread: Some(thread),
        }
    }
}

impl ServerThread {
    /// Asks the server to stop (as [`stop`](ServerThread::stop) does) without waiting for it.
    pub fn begin_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops accepting, answers the requests received, finishes the replies in flight, and
    /// returns how the server ended.
    pub fn stop(mut self) -> crate::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> crate::Result<()> {
        self.begin_stop();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(outcome)) => outcome,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Err(err) = self.finish() {
            log::warn!("needle server: {err}");
        }
    }
}

/// A reply refusing `request` with `status`, in the request's version.
fn refusal(request: &ReadRequest, status: Status) -> ReadReply {
    ReadReply::status(request.request_id, status).in_version(request.version)
}

/// The pause between progress rounds while replies are in flight, `idle` after the last
/// activity: [`REPLY_POLL`], doubling every [`REPLY_STALL`] up to [`REPLY_POLL_MAX`].
fn reply_poll(idle: Duration) -> Duration {
    let doublings = (idle.as_millis() / REPLY_STALL.as_millis()).min(16) as u32;
    REPLY_POLL
        .saturating_mul(1 << doublings)
        .min(REPLY_POLL_MAX)
}

/// Seconds since the unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_counts_what_it_holds_back() {
        let throttle = Throttle::new(Duration::from_millis(50));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(throttle.allow(), Some(2));
        assert_eq!(throttle.allow(), None);
    }

    #[test]
    fn am_header_limit_below_the_protocol_maximum_is_refused() {
        assert!(am_header_limit_ok(MAX_HEADER_LEN).is_ok());
        assert!(am_header_limit_ok(8140).is_ok());
        let err = am_header_limit_ok(MAX_HEADER_LEN - 1).unwrap_err();
        assert_eq!(err.status(), crate::Status::ERR_UNSUPPORTED);
        let text = err.to_string();
        assert!(text.contains("4143") && text.contains("4144"), "{text}");
    }
}
