//! The embedding back end: a host supplies needle bytes through `NeedleSource`, and clients read
//! them over UCX (tcp and shm) exactly, with the host's error statuses and the read-JWT check.
//! Also: the direct-read trailer goes only to clients on shared memory, `Stale` replies are
//! retryable and retried a bounded number of times, stopping a server still delivers the read
//! it is serving, malformed requests are refused, and a client that does not take its replies
//! is held to an in-flight limit and cannot block a stop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swucx::seaweed::needle::{crc32c, legacy_crc};
use swucx::seaweed::protocol::{
    AM_ID_READ, AM_ID_READ_REPLY, MAX_HEADER_LEN, ReadFlags, ReadReply, ReadRequest, Status,
    VERSION,
};
use swucx::seaweed::server::MAX_IN_FLIGHT_PER_CONNECTION;
use swucx::seaweed::{
    ClientError, FileId, NeedleClient, NeedleError, NeedleServer, NeedleSource, ReadKey,
};
use swucx::{AmDesc, AmFlags, AmQueue, CloseMode, Context, Payload, Worker};

/// A host's store: whole files by (volume, needle, cookie); it holds the volumes of its files.
struct MapSource(HashMap<(u32, u64, u32), Vec<u8>>);

impl NeedleSource for MapSource {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        if !self
            .0
            .keys()
            .any(|(volume, _, _)| *volume == request.volume_id)
        {
            return (
                ReadReply::status(request.request_id, Status::NoVolume),
                Payload::default(),
            );
        }
        let key = (request.volume_id, request.needle_id, request.cookie);
        let Some(data) = self.0.get(&key) else {
            return (
                ReadReply::status(request.request_id, Status::NotFound),
                Payload::default(),
            );
        };
        let start = (request.offset as usize).min(data.len());
        let end = match request.size {
            0 => data.len(),
            size => (start + size as usize).min(data.len()),
        };
        let payload = data[start..end].to_vec();
        let reply = ReadReply {
            data_size: data.len() as u64,
            payload_len: payload.len() as u64,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, payload.into())
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Files of every size class (empty, eager, rendezvous) and the store holding them.
fn sample_files() -> (Vec<(FileId, Vec<u8>)>, MapSource) {
    let files: Vec<(FileId, Vec<u8>)> = [0usize, 1, 4096, 65536, 1 << 20, (4 << 20) + 7]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (
                FileId::new(3, 0x100 + i as u64, 0xabcd_0000 + i as u32),
                bytes(len, i as u8),
            )
        })
        .collect();
    let source = MapSource(
        files
            .iter()
            .map(|(f, d)| ((f.volume_id, f.needle_id, f.cookie), d.clone()))
            .collect(),
    );
    (files, source)
}

#[test]
fn host_supplied_bytes_over_tcp_and_shm() {
    let (files, source) = sample_files();
    let source: Arc<dyn NeedleSource> = Arc::new(source);
    let key = ReadKey::new("host-key");
    let timeout = Duration::from_secs(30);
    for tls in ["tcp,self", "posix,sysv,cma,self,tcp"] {
        let context = context_on(tls);
        let server =
            NeedleServer::bind_source(&context, source.clone(), "127.0.0.1:0".parse().unwrap())
                .unwrap()
                .with_read_key(key.clone());
        let addr = server.local_addr().unwrap();
        let serving = server.spawn();
        let client = NeedleClient::connect(&context, addr).unwrap();
        let exp = 4_000_000_000;
        for (fid, data) in &files {
            let token = key.mint(&fid.to_string(), exp);
            let got = client.read_with_jwt(fid, 0, 0, &token, timeout).unwrap();
            assert!(got.data == *data, "{tls} {fid}: bytes differ");
            if data.len() > 10 {
                let got = client.read_with_jwt(fid, 3, 7, &token, timeout).unwrap();
                assert_eq!(got.data, data[3..10], "{tls} {fid}: range");
            }
            match client.read(fid, 0, 0, timeout) {
                Err(ClientError::Status(Status::Unauthorized)) => {}
                other => panic!("{tls} {fid}: read without a token gave {other:?}"),
            }
        }
        let missing = FileId::new(3, 0xdead, 1);
        let token = key.mint(&missing.to_string(), exp);
        match client.read_with_jwt(&missing, 0, 0, &token, timeout) {
            Err(ClientError::Status(Status::NotFound)) => {}
            other => panic!("{tls}: missing needle gave {other:?}"),
        }
        // Over shared memory the first large payload (64 KiB) proves direct reads, and the
        // 1 MiB and 4 MiB ones are copied straight out of the server's memory; never over tcp.
        let want = if tls.starts_with("tcp") { 0 } else { 2 };
        assert_eq!(client.direct_reads(), want, "{tls}: direct reads");
        drop(client);
        // Turned off on either side, every payload moves through UCX.
        let (_, data) = &files[4];
        let big = &files[4].0;
        let token = key.mint(&big.to_string(), exp);
        let off = NeedleClient::connect(&context, addr)
            .unwrap()
            .with_direct_reads(false);
        for _ in 0..3 {
            let got = off.read_with_jwt(big, 0, 0, &token, timeout).unwrap();
            assert!(
                got.data == *data,
                "{tls}: bytes differ without direct reads"
            );
        }
        assert_eq!(
            off.direct_reads(),
            0,
            "{tls}: client turned direct reads off"
        );
        serving.stop().expect("server run");
        let server =
            NeedleServer::bind_source(&context, source.clone(), "127.0.0.1:0".parse().unwrap())
                .unwrap()
                .with_direct_reads(false);
        let addr = server.local_addr().unwrap();
        let serving = server.spawn();
        let client = NeedleClient::connect(&context, addr).unwrap();
        for _ in 0..3 {
            let got = client.read(big, 0, 0, timeout).unwrap();
            assert!(
                got.data == *data,
                "{tls}: bytes differ from a server without direct reads"
            );
        }
        assert_eq!(
            client.direct_reads(),
            0,
            "{tls}: server turned direct reads off"
        );
        drop(client);
        serving.stop().expect("server run");
    }
}

/// Sends `request` to `addr` over a bare connection from a context on `tls` and returns the
/// reply, its rendezvous payload released unreceived (as after a direct read), and whether the
/// payload came by rendezvous.
fn raw_read(tls: &str, addr: std::net::SocketAddr, request: &ReadRequest) -> (ReadReply, bool) {
    let context = context_on(tls);
    let worker = Worker::new(&context).unwrap();
    let replies: Arc<Mutex<Vec<(ReadReply, AmDesc)>>> = Arc::default();
    let sink = replies.clone();
    worker
        .set_am_handler(AM_ID_READ_REPLY, move |msg| {
            if let Ok(reply) = ReadReply::decode(msg.header()) {
                sink.lock().unwrap().push((reply, msg.keep()));
            }
        })
        .unwrap();
    let ep = worker.connect(addr).unwrap();
    let flags = AmFlags::REPLY | AmFlags::EAGER;
    let send = ep
        .am_send(AM_ID_READ, request.encode().unwrap(), Vec::new(), flags)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replies.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{tls}: no reply");
        worker.progress();
    }
    drop(send);
    let (reply, desc) = replies.lock().unwrap().pop().unwrap();
    let rendezvous = desc.is_rendezvous();
    drop(desc);
    ep.close(CloseMode::Flush).unwrap();
    (reply, rendezvous)
}

/// The direct-read trailer (the payload's address and the server's pid) goes only to clients
/// whose connection is on shared memory: one over tcp that asks for it gets a plain reply.
#[test]
fn direct_trailer_only_over_shared_memory() {
    let (files, source) = sample_files();
    let (fid, data) = &files[3];
    assert!(data.len() >= 65536, "a rendezvous payload");
    let server = NeedleServer::bind_source(
        &context_on("posix,sysv,cma,self,tcp"),
        Arc::new(source),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let request = ReadRequest {
        version: VERSION,
        request_id: 7,
        volume_id: fid.volume_id,
        needle_id: fid.needle_id,
        cookie: fid.cookie,
        offset: 0,
        size: 0,
        flags: ReadFlags::DIRECT,
        jwt: Vec::new(),
    };
    for (tls, trailer) in [("tcp,self", false), ("posix,sysv,cma,self,tcp", true)] {
        for _ in 0..2 {
            let (reply, rendezvous) = raw_read(tls, addr, &request);
            assert_eq!(reply.status, Status::Ok, "{tls}");
            assert_eq!(reply.payload_len, data.len() as u64, "{tls}");
            assert!(rendezvous, "{tls}: not by rendezvous");
            assert_eq!(reply.direct.is_some(), trailer, "{tls}: {:?}", reply.direct);
        }
    }
    serving.stop().expect("server run");
}

/// A store that notes the name of every thread that reads from it.
struct ThreadsSeen {
    store: MapSource,
    names: Mutex<HashSet<String>>,
}

impl NeedleSource for ThreadsSeen {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.names.lock().unwrap().insert(name);
        self.store.read(request)
    }
}

/// A server on three threads deals its connections to all of them, and clients reading at once
/// through every one get their bytes exactly; stopping ends every thread.
#[test]
fn connections_are_dealt_to_every_server_thread() {
    let (files, store) = sample_files();
    let files = Arc::new(files);
    let too_many = NeedleServer::bind_source(
        &context_on("tcp,self"),
        Arc::new(MapSource(HashMap::new())),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
    .with_threads(swucx::seaweed::server::MAX_THREADS + 1);
    assert_eq!(
        too_many.err().map(|e| e.status()),
        Some(swucx::Status::ERR_INVALID_PARAM)
    );
    for tls in ["tcp,self", "posix,sysv,cma,self,tcp"] {
        let context = context_on(tls);
        let source = Arc::new(ThreadsSeen {
            store: MapSource(store.0.clone()),
            names: Mutex::default(),
        });
        let server =
            NeedleServer::bind_source(&context, source.clone(), "127.0.0.1:0".parse().unwrap())
                .unwrap()
                .with_threads(3)
                .unwrap();
        let addr = server.local_addr().unwrap();
        let serving = server.spawn();
        let readers: Vec<_> = (0..6)
            .map(|_| NeedleClient::connect(&context, addr).unwrap())
            .map(|client| {
                let files = files.clone();
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        for (fid, data) in files.iter() {
                            let got = client.read(fid, 0, 0, Duration::from_secs(30)).unwrap();
                            assert!(got.data == *data, "{fid}: bytes differ");
                        }
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().expect("reader");
        }
        serving.stop().expect("server run");
        let mut names: Vec<String> = source.names.lock().unwrap().iter().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            ["swucx-lane-1", "swucx-lane-2", "swucx-needle-server"],
            "{tls}: the threads that served"
        );
    }
}

/// A store that panics on one needle.
struct PanicOn(u64);

impl NeedleSource for PanicOn {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        assert_ne!(request.needle_id, self.0, "the source's own panic");
        let data = bytes(100, 1);
        let reply = ReadReply {
            data_size: data.len() as u64,
            payload_len: data.len() as u64,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, data.into())
    }
}

/// A source that panics on one of two threads stops the whole server (it does not serve on
/// with one thread gone): the reader on the other thread loses its connection too, and
/// stopping the server hands the panic on.
#[test]
fn a_panic_on_one_server_thread_stops_them_all() {
    let context = context_on("tcp,self");
    let server = NeedleServer::bind_source(
        &context,
        Arc::new(PanicOn(666)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
    .with_threads(2)
    .unwrap();
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let timeout = Duration::from_secs(10);
    let fine = FileId::new(1, 1, 1);
    // Connections are dealt in turn (a client connects with its first read): the first to the
    // accepting thread, the second to the other, whose source then panics.
    let on_first = NeedleClient::connect(&context, addr).unwrap();
    assert_eq!(
        on_first.read(&fine, 0, 0, timeout).unwrap().data,
        bytes(100, 1)
    );
    let on_second = NeedleClient::connect(&context, addr).unwrap();
    assert_eq!(
        on_second.read(&fine, 0, 0, timeout).unwrap().data,
        bytes(100, 1)
    );
    let first_reader = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            match on_first.read(&fine, 0, 0, timeout) {
                Ok(got) => assert_eq!(got.data, bytes(100, 1)),
                Err(e) => return Some(e),
            }
        }
        None
    });
    assert!(
        on_second
            .read(&FileId::new(1, 666, 1), 0, 0, timeout)
            .is_err()
    );
    // The connection fails, or (the stopping thread answering what arrives while a reply is
    // still in flight) the read is answered BUSY.
    let lost = first_reader.join().unwrap();
    assert!(
        matches!(
            lost,
            Some(ClientError::Ucx(_) | ClientError::Status(Status::Busy))
        ),
        "the first thread served on: {lost:?}"
    );
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serving.stop()));
    let panic = stopped.expect_err("the source's panic comes out of stop");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("the source's own panic"), "{text}");
}

/// A source that answers `Stale` a given number of times, then the bytes.
struct FlakySource {
    data: Vec<u8>,
    stale_left: Mutex<u32>,
}

impl NeedleSource for FlakySource {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        let mut left = self.stale_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return (
                ReadReply::status(request.request_id, Status::Stale),
                Payload::default(),
            );
        }
        let reply = ReadReply {
            data_size: self.data.len() as u64,
            payload_len: self.data.len() as u64,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, self.data.clone().into())
    }
}

/// A context on the transports `tls` (tcp on the loopback device only).
fn context_on(tls: &str) -> Context {
    Context::builder()
        .config("TLS", tls)
        .config("NET_DEVICES", "lo")
        .build()
        .unwrap()
}

#[test]
fn stale_is_retryable_and_retried_a_bounded_number_of_times() {
    let context = context_on("tcp,self");
    let source = Arc::new(FlakySource {
        data: bytes(20_000, 9),
        stale_left: Mutex::new(0),
    });
    let server =
        NeedleServer::bind_source(&context, source.clone(), "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let timeout = Duration::from_secs(30);
    let fid = FileId::new(1, 2, 3);
    // Without retries the caller sees Stale, and that it is retryable.
    let no_retries = NeedleClient::connect(&context, addr)
        .unwrap()
        .with_stale_retries(0);
    *source.stale_left.lock().unwrap() = 1;
    let err = no_retries.read(&fid, 0, 0, timeout).unwrap_err();
    assert!(matches!(err, ClientError::Status(Status::Stale)), "{err}");
    assert!(err.is_retryable() && !err.is_not_found());
    assert!(no_retries.read(&fid, 0, 0, timeout).unwrap().data == source.data);
    drop(no_retries);
    // By default a few Stale replies are retried away ...
    let client = NeedleClient::connect(&context, addr).unwrap();
    *source.stale_left.lock().unwrap() = 3;
    assert!(client.read(&fid, 0, 0, timeout).unwrap().data == source.data);
    assert_eq!(*source.stale_left.lock().unwrap(), 0);
    // ... but not forever.
    let client = client.with_stale_retries(2);
    *source.stale_left.lock().unwrap() = 5;
    let err = client.read(&fid, 0, 0, timeout).unwrap_err();
    assert!(matches!(err, ClientError::Status(Status::Stale)), "{err}");
    assert_eq!(
        *source.stale_left.lock().unwrap(),
        2,
        "1 request + 2 retries"
    );
    assert!(!ClientError::Status(Status::NotFound).is_retryable());
    assert!(ClientError::Status(Status::Busy).is_retryable());
    drop((client, source));
    serving.stop().expect("server run");
}

/// A source that blocks in `read` until the test lets it go.
struct GateSource {
    data: Vec<u8>,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl NeedleSource for GateSource {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        let reply = ReadReply {
            data_size: self.data.len() as u64,
            payload_len: self.data.len() as u64,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, self.data.clone().into())
    }
}

/// Stopping a server while it serves a read (a rendezvous payload) still delivers that read.
#[test]
fn stop_finishes_the_read_in_flight() {
    let context = context_on("tcp,self");
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let data = bytes(3 << 20, 4);
    let source = Arc::new(GateSource {
        data: data.clone(),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let server =
        NeedleServer::bind_source(&context, source, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let client = NeedleClient::connect(&context, addr).unwrap();
    let reader = std::thread::spawn(move || {
        client
            .read(&FileId::new(1, 1, 1), 0, 0, Duration::from_secs(60))
            .map(|d| d.data)
    });
    // The server is inside the source's read when it is told to stop.
    entered.recv().unwrap();
    serving.begin_stop();
    release.send(()).unwrap();
    let got = reader
        .join()
        .unwrap()
        .expect("the read in flight completes");
    assert!(got == data);
    serving.stop().expect("server run");
}

/// The transports of the tests here carry the protocol's longest header (the refusal of shorter
/// ones is tested through the `swucx` binary, whose environment can shrink UCX's segments:
/// tests/swucx_cli.rs).
#[test]
fn test_transports_carry_the_longest_header() {
    for tls in ["tcp,self", "posix,sysv,cma,self,tcp", "tcp"] {
        let context = context_on(tls);
        let limit = Worker::new(&context).unwrap().max_am_header().unwrap();
        assert!(limit >= MAX_HEADER_LEN, "{tls}: {limit}");
    }
}

/// A source that leaves the CRC to the client (as the volume back end does for whole large
/// needles when asked), with the stored CRC it was given.
struct UncheckedSource {
    data: Vec<u8>,
    crc: u32,
}

impl NeedleSource for UncheckedSource {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        assert!(
            request.flags.contains(ReadFlags::CRC_AT_CLIENT),
            "the client offers to check the CRC"
        );
        let reply = ReadReply {
            data_size: self.data.len() as u64,
            payload_len: self.data.len() as u64,
            crc: self.crc,
            crc_unchecked: true,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, self.data.clone().into())
    }
}

#[test]
fn client_checks_the_crc_the_server_left_unchecked() {
    let data = bytes(3 << 20, 9);
    let good = crc32c(&data);
    let context = Context::builder()
        .config("TLS", "posix,sysv,cma,self,tcp")
        .build()
        .unwrap();
    let fid = FileId::new(1, 2, 3);
    let timeout = Duration::from_secs(30);
    // The stored CRC in either form weed writes is accepted; anything else is a corrupt needle.
    for (crc, ok) in [(good, true), (legacy_crc(good), true), (good ^ 1, false)] {
        let source = Arc::new(UncheckedSource {
            data: data.clone(),
            crc,
        });
        let server =
            NeedleServer::bind_source(&context, source, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let serving = server.spawn();
        let client = NeedleClient::connect(&context, addr).unwrap();
        match client.read(&fid, 0, 0, timeout) {
            Ok(got) if ok => assert!(got.data == data, "bytes differ"),
            Err(ClientError::Corrupt(NeedleError::Crc { stored, .. })) if !ok => {
                assert_eq!(stored, crc)
            }
            other => panic!("crc {crc:08x}: {:?}", other.map(|d| d.data.len())),
        }
        drop(client);
        serving.stop().expect("server run");
    }
}

/// A source that answers every request with the same bytes.
struct SameBytes(Vec<u8>);

impl NeedleSource for SameBytes {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        let reply = ReadReply {
            data_size: self.0.len() as u64,
            payload_len: self.0.len() as u64,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, self.0.clone().into())
    }
}

/// A raw protocol client: a worker, its reply queue and an endpoint to `addr`.
struct RawClient {
    worker: Worker,
    replies: AmQueue,
    ep: swucx::Endpoint,
}

impl RawClient {
    fn connect(context: &Context, addr: std::net::SocketAddr) -> RawClient {
        let worker = Worker::new(context).unwrap();
        let replies = AmQueue::new(&worker, AM_ID_READ_REPLY).unwrap();
        let ep = worker.connect(addr).unwrap();
        RawClient {
            worker,
            replies,
            ep,
        }
    }

    /// Sends a READ message with this header and data (the send is left to complete).
    fn send(&self, header: Vec<u8>, data: Vec<u8>) {
        self.send_with(header, data, AmFlags::REPLY);
    }

    /// As `send`, with these flags.
    fn send_with(&self, header: Vec<u8>, data: Vec<u8>, flags: AmFlags) {
        let sent = self.ep.am_send(AM_ID_READ, header, data, flags).unwrap();
        drop(sent);
    }

    /// Progresses until `n` replies are queued or `limit` passes; returns how many are.
    fn await_replies(&self, n: usize, limit: Duration) -> usize {
        let start = Instant::now();
        while self.replies.len() < n && start.elapsed() < limit {
            self.worker.progress();
        }
        self.replies.len()
    }
}

fn request(id: u64) -> Vec<u8> {
    ReadRequest {
        request_id: id,
        ..ReadRequest::default()
    }
    .encode()
    .unwrap()
}

/// docs/protocol.md: a request that does not decode is answered BAD_REQUEST when its id can be
/// read and dropped when not; a request with data is a BAD_REQUEST; the connection serves on.
#[test]
fn malformed_requests_are_refused_or_dropped() {
    let context = context_on("tcp,self");
    let source = Arc::new(SameBytes(bytes(100, 1)));
    let server =
        NeedleServer::bind_source(&context, source, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let serving = server.spawn();
    let client = RawClient::connect(&context, addr);
    let mut v9 = request(42);
    v9[2] = 9;
    let mut v2 = request(43);
    v2[2] = 2;
    let cases = [
        ("garbage", vec![0xff], Vec::new(), None),
        (
            "version 9",
            v9,
            Vec::new(),
            Some((42, Status::UnknownVersion, 1)),
        ),
        (
            "with data",
            v2,
            vec![1u8; 65536],
            Some((43, Status::BadRequest, 2)),
        ),
        ("good", request(44), Vec::new(), Some((44, Status::Ok, 1))),
    ];
    for (what, header, data, want) in cases {
        client.send(header, data);
        let limit = Duration::from_secs(if want.is_some() { 30 } else { 1 });
        let got = client.await_replies(1, limit);
        match want {
            None => assert_eq!(got, 0, "{what}: answered"),
            Some(want) => {
                let reply = client.replies.try_recv().expect(what);
                let reply = ReadReply::decode(&reply.header).unwrap();
                let got = (reply.request_id, reply.status, reply.version);
                assert_eq!(got, want, "{what}: in the request's version");
            }
        }
    }
    // Without UCX's REPLY flag there is no endpoint to answer on: dropped and counted (a
    // client may send many; the warning about them is throttled).
    for id in 45..55 {
        client.send_with(request(id), Vec::new(), AmFlags::NONE);
    }
    assert_eq!(
        client.await_replies(1, Duration::from_secs(1)),
        0,
        "answered"
    );
    let counted = stats.snapshot();
    assert_eq!(counted.requests_dropped, 11, "{counted:?}");
    for status in [Status::UnknownVersion, Status::BadRequest, Status::Ok] {
        assert_eq!(counted.replies_with(status), 1, "{status:?}: {counted:?}");
    }
    drop(client);
    serving.stop().expect("server run");
}

/// A client that does not take its rendezvous replies holds at most
/// MAX_IN_FLIGHT_PER_CONNECTION of them, its further requests are answered BUSY while other
/// clients are served, and the server closes its connection once its replies stood still for
/// the reply timeout; a stop waits for such a client no longer than that either.
#[test]
fn a_client_holding_its_replies_gets_busy_and_cannot_block_a_stop() {
    for tls in ["tcp,self", "posix,sysv,cma,self,tcp"] {
        client_holding_its_replies(tls);
    }
}

/// Sends `n` requests and sorts the replies into those held (OK, rendezvous not taken) and a
/// count of BUSY ones.
fn hold_replies(client: &RawClient, n: usize) -> (Vec<swucx::QueuedAm>, usize) {
    for id in 0..n as u64 {
        client.send(request(id), Vec::new());
    }
    assert_eq!(client.await_replies(n, Duration::from_secs(60)), n);
    let mut held = Vec::new();
    let mut busy = 0;
    while let Some(reply) = client.replies.try_recv() {
        match ReadReply::decode(&reply.header).unwrap().status {
            Status::Ok => held.push(reply),
            Status::Busy => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    (held, busy)
}

/// Progresses `client` until its connection fails (the server closed it), up to 30 s,
/// sending a request every 300 ms meanwhile (answered BUSY: such replies complete without the
/// client, so they must not keep the connection alive).
fn await_closed_by_server(client: &RawClient) -> bool {
    let start = Instant::now();
    let mut last_request = start;
    while start.elapsed() < Duration::from_secs(30) {
        client.worker.progress();
        if client.ep.failure().is_some() {
            return true;
        }
        if last_request.elapsed() >= Duration::from_millis(300) {
            last_request = Instant::now();
            client.send(request(1 << 20), Vec::new());
            while client.replies.try_recv().is_some() {}
        }
    }
    false
}

/// The name of the server thread whose CPU time `client_holding_its_replies` measures.
const SERVER_THREAD: &str = "held-replies";

/// CPU time (user + system, in clock ticks) of this process's threads named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let Some(end) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[end + 2..].split(' ').collect();
        total += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    total
}

fn client_holding_its_replies(tls: &str) {
    let context = context_on(tls);
    let source = Arc::new(SameBytes(bytes(64 << 10, 2)));
    let timeout = Duration::from_secs(3);
    let mut server = NeedleServer::bind_source(&context, source, "127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_reply_timeout(timeout);
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    // On a thread of its own name, whose CPU time is measured below (other tests run servers
    // at the same time).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let serving = std::thread::Builder::new()
        .name(SERVER_THREAD.into())
        .spawn(move || server.run(&flag))
        .unwrap();
    let client = RawClient::connect(&context, addr);
    let (held, busy) = hold_replies(&client, MAX_IN_FLIGHT_PER_CONNECTION + 40);
    assert_eq!(
        (held.len(), busy),
        (MAX_IN_FLIGHT_PER_CONNECTION, 40),
        "{tls}"
    );
    // Another client is served meanwhile.
    let other = NeedleClient::connect(&context, addr).unwrap();
    let read = other.read(&FileId::new(1, 1, 1), 0, 0, Duration::from_secs(30));
    assert_eq!(read.unwrap().data.len(), 64 << 10);
    drop(other);
    // Waiting on them costs the server little CPU (it sleeps on its event fd between looks),
    // also while requests (answered BUSY) keep coming every 40 ms.
    let before = thread_cpu_ticks(SERVER_THREAD);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        client.send(request(1 << 21), Vec::new());
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_millis(40) {
            client.worker.progress();
            std::thread::sleep(Duration::from_millis(1));
        }
        while client.replies.try_recv().is_some() {}
    }
    let ticks = thread_cpu_ticks(SERVER_THREAD) - before;
    assert!(
        ticks < 50,
        "{tls}: the server used {ticks}0 ms of CPU in 1 s"
    );
    // Replies that stand still for the timeout: the server closes the connection.
    assert!(await_closed_by_server(&client), "{tls}: not closed");
    drop((held, client));
    // A stop does not wait longer than the timeout for a client holding its replies.
    let client = RawClient::connect(&context, addr);
    let (held, _) = hold_replies(&client, 10);
    assert_eq!(held.len(), 10);
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        stop.store(true, Ordering::Release);
        done_tx.send(serving.join().unwrap().is_ok()).unwrap()
    });
    let start = Instant::now();
    let stopped = loop {
        client.worker.progress();
        if let Ok(ok) = done.try_recv() {
            break ok;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{tls}: stop blocked"
        );
    };
    assert!(stopped, "server run");
    drop(held);
    // The stalled connection and the one still holding replies at the stop.
    let counted = stats.snapshot();
    assert_eq!(counted.connections_closed, 2, "{tls}: {counted:?}");
    assert!(
        counted.replies_with(Status::Busy) >= 40,
        "{tls}: {counted:?}"
    );
}

/// A volume the host does not hold is NO_VOLUME to clients of protocol version 3 (NeedleClient
/// speaks it) and INTERNAL to older ones, who fall back to HTTP on that.
#[test]
fn a_volume_the_host_does_not_hold() {
    let context = context_on("tcp,self");
    let (files, source) = sample_files();
    let server =
        NeedleServer::bind_source(&context, Arc::new(source), "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let timeout = Duration::from_secs(30);
    let client = NeedleClient::connect(&context, addr).unwrap();
    let elsewhere = FileId::new(4, 1, 1);
    match client.read(&elsewhere, 0, 0, timeout) {
        Err(ClientError::Status(Status::NoVolume)) => {}
        other => panic!("a volume not held gave {other:?}"),
    }
    assert!(client.read(&files[2].0, 0, 0, timeout).unwrap().data == files[2].1);
    drop(client);
    let raw = RawClient::connect(&context, addr);
    for (version, want) in [
        (1, Status::Internal),
        (2, Status::Internal),
        (3, Status::NoVolume),
    ] {
        let header = ReadRequest {
            version,
            request_id: u64::from(version),
            volume_id: 4,
            needle_id: 1,
            ..ReadRequest::default()
        };
        raw.send(header.encode().unwrap(), Vec::new());
        assert_eq!(raw.await_replies(1, timeout), 1);
        let reply = ReadReply::decode(&raw.replies.try_recv().unwrap().header).unwrap();
        assert_eq!((reply.version, reply.status), (version, want));
    }
    drop(raw);
    serving.stop().expect("server run");
}

/// A host that answers like a server of protocol version 1 (UNKNOWN_VERSION to later ones;
/// through the server the refusal comes in the request's version, where a real version-1 server
/// answers in version 1: the client takes either).
struct VersionOneHost {
    seen: Mutex<Vec<u8>>,
}

impl NeedleSource for VersionOneHost {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Payload) {
        self.seen.lock().unwrap().push(request.version);
        if request.version > 1 {
            let reply = ReadReply {
                data_size: 1,
                ..ReadReply::status(request.request_id, Status::UnknownVersion)
            };
            return (reply, Payload::default());
        }
        SameBytes(bytes(100, 5)).read(request)
    }
}

/// NeedleClient steps down to the version an older server speaks, once per connection.
#[test]
fn the_client_steps_down_to_an_older_servers_version() {
    let context = context_on("tcp,self");
    let host = Arc::new(VersionOneHost {
        seen: Mutex::new(Vec::new()),
    });
    let server =
        NeedleServer::bind_source(&context, host.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let client = NeedleClient::connect(&context, addr).unwrap();
    for _ in 0..2 {
        let got = client.read(&FileId::new(1, 1, 1), 0, 0, Duration::from_secs(30));
        assert_eq!(got.unwrap().data, bytes(100, 5));
    }
    assert_eq!(*host.seen.lock().unwrap(), vec![VERSION, 2, 1, 1]);
    drop(client);
    serving.stop().expect("server run");
}

/// A large reply a client takes slowly is not taken for a stalled client: a connection gets
/// the reply timeout plus the time its bytes in flight need at MIN_CLIENT_RATE.
#[test]
fn a_large_reply_taken_slowly_is_not_a_stall() {
    let context = context_on("tcp,self");
    let data = bytes(32 << 20, 6);
    let source = Arc::new(SameBytes(data.clone()));
    let server = NeedleServer::bind_source(&context, source, "127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_reply_timeout(Duration::from_millis(500));
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let client = RawClient::connect(&context, addr);
    client.send(request(1), Vec::new());
    assert_eq!(client.await_replies(1, Duration::from_secs(30)), 1);
    let reply = client.replies.try_recv().unwrap();
    // Taken after 2 s (four reply timeouts, well within 500 ms + 32 MiB at 4 MiB/s).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        client.worker.progress();
    }
    assert!(client.ep.failure().is_none(), "closed as stalled");
    let recv = reply.payload.recv_into(vec![0u8; data.len()]).unwrap();
    let start = Instant::now();
    while !recv.is_complete() && start.elapsed() < Duration::from_secs(30) {
        client.worker.progress();
    }
    let got = recv.wait().expect("the payload");
    assert!(got.buffer == data);
    drop(client);
    serving.stop().expect("server run");
}

/// Past `with_max_connections` a new connection is rejected (its reads fail with a connection
/// error, not a timeout), counted over every server thread; a connection that ends makes room.
#[test]
fn connections_past_the_limit_are_rejected() {
    one_connection_at_a_time(|server| server.with_max_connections(1));
}

/// The same past `with_max_connections_per_host` from one host (127.0.0.1), with room left on
/// the server.
#[test]
fn connections_past_the_per_host_limit_are_rejected() {
    one_connection_at_a_time(|server| {
        server
            .with_max_connections(100)
            .with_max_connections_per_host(1)
    });
}

/// Checks that a server `limited` to one connection from this host rejects a second one while
/// the first is open, on either of its two threads, and lets one in after it ended.
fn one_connection_at_a_time(limited: impl FnOnce(NeedleServer) -> NeedleServer) {
    let context = context_on("tcp,self");
    let (files, source) = sample_files();
    let server =
        NeedleServer::bind_source(&context, Arc::new(source), "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let server = limited(server).with_threads(2).unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let serving = server.spawn();
    let (fid, data) = &files[1];
    let timeout = Duration::from_secs(30);
    let rejected = |client: NeedleClient| {
        let started = Instant::now();
        match client.read(fid, 0, 0, timeout) {
            Err(ClientError::Ucx(e)) => assert!(started.elapsed() < Duration::from_secs(10), "{e}"),
            other => panic!("a connection past the limit read {other:?}"),
        }
    };
    let first = NeedleClient::connect(&context, addr).unwrap();
    assert!(first.read(fid, 0, 0, timeout).unwrap().data == *data);
    rejected(NeedleClient::connect(&context, addr).unwrap());
    drop(first);
    // The first lane notices its connection ended; then a new one goes to the second lane.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let client = NeedleClient::connect(&context, addr).unwrap();
        match client.read(fid, 0, 0, timeout) {
            Ok(got) => {
                assert!(got.data == *data);
                break client;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no room after the first connection ended: {e}"),
        }
    };
    rejected(NeedleClient::connect(&context, addr).unwrap());
    let counted = stats.snapshot();
    assert_eq!(counted.open_connections, 1, "{counted:?}");
    assert_eq!(counted.connections_accepted, 2, "{counted:?}");
    assert!(counted.connections_rejected >= 2, "{counted:?}");
    assert_eq!(counted.replies_with(Status::Ok), 2, "{counted:?}");
    assert_eq!(counted.payload_bytes, 2 * data.len() as u64, "{counted:?}");
    drop(second);
    serving.stop().expect("server run");
}

/// A connection without requests for the idle timeout is closed by the server (its next read
/// fails; its slot is free again); one that keeps reading is not.
#[test]
fn idle_connections_are_closed() {
    let context = context_on("tcp,self");
    let (files, source) = sample_files();
    let idle_timeout = Duration::from_millis(400);
    let server =
        NeedleServer::bind_source(&context, Arc::new(source), "127.0.0.1:0".parse().unwrap())
            .unwrap()
            .with_idle_timeout(Some(idle_timeout));
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let serving = server.spawn();
    let (fid, data) = &files[1];
    let timeout = Duration::from_secs(30);
    let reading = NeedleClient::connect(&context, addr).unwrap();
    let idle = NeedleClient::connect(&context, addr).unwrap();
    assert!(idle.read(fid, 0, 0, timeout).unwrap().data == *data);
    let started = Instant::now();
    while started.elapsed() < 4 * idle_timeout {
        assert!(reading.read(fid, 0, 0, timeout).unwrap().data == *data);
        std::thread::sleep(idle_timeout / 8);
    }
    match idle.read(fid, 0, 0, timeout) {
        Err(ClientError::Ucx(_)) => {}
        other => panic!("a read on a connection idle for 4x the timeout: {other:?}"),
    }
    assert!(reading.read(fid, 0, 0, timeout).unwrap().data == *data);
    let counted = stats.snapshot();
    assert_eq!(counted.connections_closed, 1, "{counted:?}");
    assert_eq!(counted.open_connections, 1, "{counted:?}");
    drop((reading, idle));
    serving.stop().expect("server run");
}

/// A context with streams lets any client abort the process (UCX 1.13 asserts on an empty
/// stream message): a needle server refuses one. The default features have no streams.
#[test]
fn a_context_with_streams_is_refused() {
    let (_, source) = sample_files();
    let source = Arc::new(source);
    let with_streams = Context::builder()
        .features(swucx::Features::ALL)
        .build()
        .unwrap();
    let refused = NeedleServer::bind_source(
        &with_streams,
        source.clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .err()
    .expect("a server on a context with streams");
    assert_eq!(
        refused.status(),
        swucx::Status::ERR_INVALID_PARAM,
        "{refused}"
    );
    assert!(refused.to_string().contains("streams"), "{refused}");
    let default = Context::new().unwrap();
    assert!(!default.features().stream);
    NeedleServer::bind_source(&default, source, "127.0.0.1:0".parse().unwrap()).unwrap();
}
