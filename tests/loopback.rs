//! In-process loopback tests over real UCX: every operation kind over the `self`, shared-memory
//! and TCP transport sets, byte-exact at sizes 0 B .. 16 MiB, plus cancel, close, connect by
//! worker address, listeners on port 0, malformed remote keys and the thread-safe `Engine`.
//!
//! Both sides live in this process. Waits progress both workers (or a background thread
//! progresses the peer), and every wait is bounded by `common::TIMEOUT`.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Pair, Progressor, SIZES, TIMEOUT, Tls, am_inbox, any_local, assert_bytes, bounded, next_kept,
    pattern, progress_until,
};
use swucx::{
    AmFlags, AmQueue, CloseMode, Context, Engine, Listener, MemRegion, RemoteKey, Request, Status,
    Worker, WorkerAddress,
};

// ---------------------------------------------------------------------------------------------
// Tag send/recv
// ---------------------------------------------------------------------------------------------

fn tag_sizes(tls: Tls) {
    let pair = Pair::new(tls);
    for &size in SIZES {
        let tag = 0x5100_0000 + size as u64;
        let data = pattern(size, 1);
        let recv = pair
            .server_worker
            .tag_recv(tag, u64::MAX, vec![0u8; size])
            .expect("tag_recv");
        let send = pair.client.tag_send(tag, data.clone()).expect("tag_send");
        let sent = pair.wait(send, "tag send");
        assert_eq!(sent.length, size);
        let got = pair.wait(recv, "tag recv");
        assert_eq!(got.length, size, "{tls:?} tag {size}: received length");
        assert_eq!(got.sender_tag, tag);
        assert_bytes(&got.buffer, &data, &format!("{tls:?} tag {size}"));
    }
}

#[test]
fn tag_self() {
    tag_sizes(Tls::SelfOnly);
}

#[test]
fn tag_shm() {
    tag_sizes(Tls::Shm);
}

#[test]
fn tag_tcp() {
    tag_sizes(Tls::Tcp);
}

// ---------------------------------------------------------------------------------------------
// Stream send/recv
// ---------------------------------------------------------------------------------------------

fn stream_sizes(tls: Tls) {
    let pair = Pair::new(tls);
    // Size 0 is refused: UCX 1.13 aborts the process that receives an empty stream message.
    let empty = pair.client.stream_send(Vec::<u8>::new()).unwrap_err();
    assert_eq!(empty.status(), swucx::Status::ERR_INVALID_PARAM, "{empty}");
    for &size in SIZES.iter().filter(|&&s| s > 0) {
        let data = pattern(size, 2);
        let recv = pair
            .server
            .stream_recv(vec![0u8; size])
            .expect("stream_recv");
        let send = pair.client.stream_send(data.clone()).expect("stream_send");
        pair.wait(send, "stream send");
        let got = pair.wait(recv, "stream recv");
        assert_eq!(got.length, size, "{tls:?} stream {size}: received length");
        assert_bytes(&got.buffer, &data, &format!("{tls:?} stream {size}"));
    }
    // And back the other way, so both directions of the stream work.
    let data = pattern(65536, 3);
    let recv = pair
        .client
        .stream_recv(vec![0u8; 65536])
        .expect("stream_recv");
    let send = pair.server.stream_send(data.clone()).expect("stream_send");
    pair.wait(send, "stream send back");
    let got = pair.wait(recv, "stream recv back");
    assert_bytes(&got.buffer, &data, &format!("{tls:?} stream back"));
}

#[test]
fn stream_self() {
    stream_sizes(Tls::SelfOnly);
}

#[test]
fn stream_shm() {
    stream_sizes(Tls::Shm);
}

#[test]
fn stream_tcp() {
    stream_sizes(Tls::Tcp);
}

// ---------------------------------------------------------------------------------------------
// Active messages: header + payload, eager and rendezvous, keep and recv_into
// ---------------------------------------------------------------------------------------------

const AM_KEEP: u16 = 7;
const AM_RECV_IN_HANDLER: u16 = 8;

fn am_header(size: usize, flags: u8) -> Vec<u8> {
    let mut h = (size as u64).to_le_bytes().to_vec();
    h.push(flags);
    h.extend_from_slice(b"swucx-am-header");
    h
}

fn am_sizes(tls: Tls) {
    let pair = Pair::new(tls);
    let workers = pair.workers();
    // Handler 7 keeps the message (AmMessage::keep); the test receives it later with
    // AmDesc::recv_into. Handler 8 receives inside the handler (AmMessage::recv_into).
    let inbox = am_inbox(&pair.server_worker, AM_KEEP);
    type InHandler = Arc<Mutex<VecDeque<(Vec<u8>, bool, usize, Request<Vec<u8>>)>>>;
    let received: InHandler = Arc::new(Mutex::new(VecDeque::new()));
    let sink = received.clone();
    pair.server_worker
        .set_am_handler(AM_RECV_IN_HANDLER, move |msg| {
            let header = msg.header().to_vec();
            let rndv = msg.is_rendezvous();
            let len = msg.len();
            let request = msg.recv_into(vec![0u8; len]).expect("recv_into in handler");
            sink.lock().unwrap().push_back((header, rndv, len, request));
        })
        .expect("set AM handler");

    let cases = [
        (AmFlags::NONE, 0u8, "auto"),
        (AmFlags::EAGER, 1u8, "eager"),
        (AmFlags::RNDV, 2u8, "rndv"),
    ];
    for (flags, code, name) in cases {
        for &size in SIZES {
            let what = format!("{tls:?} AM {name} {size}");
            let data = pattern(size, 4 + u64::from(code));
            let header = am_header(size, code);
            // Alternate the two receive styles.
            let in_handler = (size + usize::from(code)) % 2 == 1;
            let id = if in_handler {
                AM_RECV_IN_HANDLER
            } else {
                AM_KEEP
            };
            let send = pair
                .client
                .am_send(id, header.clone(), data.clone(), flags)
                .expect("am_send");
            let (got_header, rndv, got) = if in_handler {
                let mut item = None;
                progress_until(&workers, &what, || {
                    item = received.lock().unwrap().pop_front();
                    item.is_some()
                });
                let (h, rndv, len, request) = item.unwrap();
                assert_eq!(len, size, "{what}: announced length");
                (h, rndv, pair.wait(request, &what))
            } else {
                let kept = next_kept(&workers, &inbox, &what);
                assert_eq!(kept.desc.len(), size, "{what}: announced length");
                assert_eq!(kept.desc.is_rendezvous(), kept.rendezvous);
                let request = kept.desc.recv_into(vec![0u8; size]).expect("recv_into");
                (kept.header, kept.rendezvous, pair.wait(request, &what))
            };
            let sent = pair.wait(send, &format!("{what} (send)"));
            assert_eq!(sent.buffer.0, header);
            assert_bytes(&got_header, &header, &format!("{what}: header"));
            assert_eq!(got.length, size, "{what}: received length");
            assert_bytes(&got.buffer, &data, &what);
            if flags == AmFlags::EAGER {
                assert!(!rndv, "{what}: EAGER must not arrive by rendezvous");
            }
            if flags == AmFlags::RNDV && size > 0 {
                assert!(rndv, "{what}: RNDV must arrive by rendezvous");
            }
            if size == 16 << 20 && flags != AmFlags::EAGER {
                assert!(rndv, "{what}: a 16 MiB message must arrive by rendezvous");
            }
        }
    }
}

#[test]
fn am_self() {
    am_sizes(Tls::SelfOnly);
}

#[test]
fn am_shm() {
    am_sizes(Tls::Shm);
}

#[test]
fn am_tcp() {
    am_sizes(Tls::Tcp);
}

/// `Endpoint::am_send_now` and `tag_send_now`: a small message is sent within the call and
/// arrives intact; one too large to send at once is refused with `ERR_NO_RESOURCE` and never
/// arrives; the endpoint carries on.
fn send_now(tls: Tls) {
    let pair = Pair::new(tls);
    let workers = pair.workers();
    let inbox = am_inbox(&pair.server_worker, AM_KEEP);
    // The first message wires the endpoint up (until then UCX cannot send at once).
    let first = pair
        .client
        .am_send(AM_KEEP, vec![], vec![0u8; 8], AmFlags::NONE)
        .expect("am_send");
    pair.wait(first, "first AM");
    next_kept(&workers, &inbox, "first AM");

    // An 8 B message goes at once unless the transport is momentarily full (a keepalive or an
    // earlier message still queued): then it is refused, and goes once progress drained it.
    let until_sent = |what: &str, send: &dyn Fn() -> swucx::Result<()>| {
        for _ in 0..10_000 {
            match send() {
                Ok(()) => return,
                Err(e) if e.status() == Status::ERR_NO_RESOURCE => {
                    workers.iter().for_each(|w| {
                        w.progress();
                    });
                }
                Err(e) => panic!("{tls:?} {what}: {e}"),
            }
        }
        panic!("{tls:?} {what}: refused 10,000 times");
    };
    let data = pattern(8, 9);
    until_sent("am_send_now of 8 B", &|| {
        pair.client
            .am_send_now(AM_KEEP, &[3u8; 4], &data, AmFlags::NONE)
    });
    let kept = next_kept(&workers, &inbox, "AM sent now");
    assert_eq!(kept.header, vec![3u8; 4]);
    let got = pair.wait(
        kept.desc.recv_into(vec![0u8; 8]).expect("recv_into"),
        "recv",
    );
    assert_bytes(&got.buffer, &data, &format!("{tls:?} AM sent now"));
    let big = vec![5u8; 1 << 20];
    let refused = pair
        .client
        .am_send_now(AM_KEEP, &[], &big, AmFlags::NONE)
        .expect_err("a 1 MiB AM cannot be sent within the call");
    assert_eq!(refused.status(), Status::ERR_NO_RESOURCE, "{refused}");

    let tag = 0x6e6f_7700;
    let recv = pair
        .server_worker
        .tag_recv(tag, u64::MAX, vec![0u8; 1 << 20])
        .expect("tag_recv");
    let refused = pair
        .client
        .tag_send_now(tag, &big)
        .expect_err("a 1 MiB tag message cannot be sent within the call");
    assert_eq!(refused.status(), Status::ERR_NO_RESOURCE, "{refused}");
    for _ in 0..1000 {
        for w in &workers {
            w.progress();
        }
    }
    assert!(
        !recv.is_complete(),
        "{tls:?}: a refused tag message arrived"
    );
    assert!(inbox.is_empty(), "{tls:?}: a refused AM arrived");
    until_sent("tag_send_now of 8 B", &|| {
        pair.client.tag_send_now(tag, &data)
    });
    let got = pair.wait(recv, "tag sent now");
    assert_eq!(got.length, 8);
    assert_bytes(&got.buffer[..8], &data, &format!("{tls:?} tag sent now"));
}

#[test]
fn send_now_shm() {
    send_now(Tls::Shm);
}

#[test]
fn send_now_tcp() {
    send_now(Tls::Tcp);
}

/// Active messages to a worker that registered no handler for their id (a client that sends
/// its request to a peer that does not speak the protocol, or any peer sending any id) are
/// dropped; the receiver survives, the sends complete and a handled id still works. UCX 1.13
/// read the handler table before checking the id and crashed here: with no table at all, and
/// for ids past its end (from about 19,000 up with ids 0-255 registered).
fn am_without_handlers(tls: Tls) {
    let pair = Pair::new(tls);
    let workers = pair.workers();
    let unhandled = [0x30, 256, 19_000, 40_000, u16::MAX];
    for (i, flags) in [
        AmFlags::REPLY,
        AmFlags::NONE,
        AmFlags::REPLY | AmFlags::EAGER,
    ]
    .into_iter()
    .cycle()
    .take(30)
    .enumerate()
    {
        let send = pair
            .client
            .am_send(
                unhandled[i % unhandled.len()],
                vec![1u8; 48],
                vec![2u8; i * 100],
                flags,
            )
            .expect("am_send");
        progress_until(&workers, "an unhandled AM is delivered", || send.poll());
    }
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = handled.clone();
    pair.server_worker
        .set_am_handler(u16::MAX - 1, move |_| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    let send = pair
        .client
        .am_send(u16::MAX - 1, Vec::new(), vec![3u8; 8], AmFlags::NONE)
        .expect("am_send");
    progress_until(&workers, "a handled AM arrives", || {
        handled.load(std::sync::atomic::Ordering::Relaxed) == 1
    });
    send.wait().expect("the handled AM's send");
}

/// A header up to `max_am_header` arrives whole; a longer one is refused with
/// `ERR_INVALID_PARAM` by both kinds of send (UCX 1.13 aborted the process: "RTS is too big"),
/// and so are flags asking for both the eager and the rendezvous protocol.
fn am_send_refusals(tls: Tls) {
    let pair = Pair::new(tls);
    let workers = pair.workers();
    let limit = pair.client_worker.max_am_header().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    pair.server_worker
        .set_am_handler(0x32, move |msg| {
            seen.lock().unwrap().push(msg.header().to_vec());
        })
        .unwrap();
    let header: Vec<u8> = (0..limit).map(|i| i as u8).collect();
    let send = pair
        .client
        .am_send(0x32, header.clone(), vec![5u8; 1 << 20], AmFlags::NONE)
        .expect("am_send at the limit");
    progress_until(&workers, "a header at the limit arrives", || {
        !got.lock().unwrap().is_empty()
    });
    send.wait().expect("the send at the limit");
    assert!(
        got.lock().unwrap()[0] == header,
        "the header arrived changed"
    );
    let mut longer = header;
    longer.push(0);
    let refused = pair
        .client
        .am_send(0x32, longer.clone(), vec![5u8; 8], AmFlags::NONE)
        .expect_err("a header past the limit was sent");
    assert_eq!(refused.status(), Status::ERR_INVALID_PARAM, "{refused}");
    let refused = pair
        .client
        .am_send_now(0x32, &longer, &[], AmFlags::NONE)
        .expect_err("a header past the limit was sent now");
    assert_eq!(refused.status(), Status::ERR_INVALID_PARAM, "{refused}");
    let refused = pair
        .client
        .am_send(
            0x32,
            Vec::new(),
            vec![5u8; 8],
            AmFlags::EAGER | AmFlags::RNDV,
        )
        .expect_err("a send asking for both protocols was sent");
    assert_eq!(refused.status(), Status::ERR_INVALID_PARAM, "{refused}");
}

#[test]
fn am_send_refusals_shm() {
    am_send_refusals(Tls::Shm);
}

#[test]
fn am_send_refusals_tcp() {
    am_send_refusals(Tls::Tcp);
}

#[test]
fn am_without_handlers_shm() {
    am_without_handlers(Tls::Shm);
}

#[test]
fn am_without_handlers_tcp() {
    am_without_handlers(Tls::Tcp);
}

/// A handler that is replaced or removed is not called again and is dropped at once (what it
/// holds is freed); one replaced from inside a handler (maybe its own) is kept until the worker
/// goes. After removal, messages for the id are dropped.
#[test]
fn am_handlers_replaced_and_removed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pair = Pair::new(Tls::Shm);
    let workers = pair.workers();
    let calls: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let handler = |i: usize| {
        let count = calls[i].clone();
        move |_: swucx::AmMessage<'_>| {
            count.fetch_add(1, Ordering::Relaxed);
        }
    };
    let deliver = || {
        let send = pair
            .client
            .am_send(0x31, Vec::new(), vec![7u8; 8], AmFlags::NONE)
            .expect("am_send");
        progress_until(&workers, "an AM is delivered", || send.poll());
        for _ in 0..100 {
            pair.server_worker.progress();
        }
    };
    pair.server_worker.set_am_handler(0x31, handler(0)).unwrap();
    deliver();
    pair.server_worker.set_am_handler(0x31, handler(1)).unwrap();
    assert_eq!(
        Arc::strong_count(&calls[0]),
        1,
        "the replaced handler was not dropped"
    );
    deliver();
    let counts = || {
        calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(), [1, 1, 0]);
    pair.server_worker.remove_am_handler(0x31).unwrap();
    assert_eq!(
        Arc::strong_count(&calls[1]),
        1,
        "the removed handler was not dropped"
    );
    deliver();
    assert_eq!(counts(), [1, 1, 0], "a removed handler ran");
    // Replaced from inside itself: the new one takes the next message; the old one is kept
    // (it was running) until the worker goes.
    let worker = pair.server_worker.clone();
    let (count, next) = (calls[2].clone(), handler(0));
    let next = Mutex::new(Some(next));
    pair.server_worker
        .set_am_handler(0x31, move |_| {
            count.fetch_add(1, Ordering::Relaxed);
            if let Some(next) = next.lock().unwrap().take() {
                worker.set_am_handler(0x31, next).unwrap();
            }
        })
        .unwrap();
    deliver();
    deliver();
    assert_eq!(counts(), [2, 1, 1]);
    assert_eq!(
        Arc::strong_count(&calls[2]),
        2,
        "the handler replaced from inside was dropped"
    );
}

// ---------------------------------------------------------------------------------------------
// RMA: put/get against an exported region
// ---------------------------------------------------------------------------------------------

fn rma_sizes(tls: Tls) {
    let pair = Pair::new(tls);
    let max = *SIZES.iter().max().unwrap();
    let region = MemRegion::allocate(&pair.context, max + 64).expect("allocate region");
    let descriptor = region.export().expect("export");
    // SAFETY: the descriptor is this process's own export, unchanged.
    let rkey = unsafe { RemoteKey::unpack(&pair.client, &descriptor) }.expect("unpack rkey");
    assert_eq!(rkey.len(), region.len() as u64);
    // The target of put/get must be progressed (over TCP, RMA is emulated with messages), and
    // Endpoint::flush waits on the client's worker only: progress the server in the background.
    let _server = (tls != Tls::SelfOnly).then(|| Progressor::start(&pair.server_worker));
    // Size 0 is skipped: a zero-byte put or get moves nothing and there is nothing to compare.
    for &size in SIZES.iter().filter(|&&s| s > 0) {
        let what = format!("{tls:?} put {size}");
        let offset = 13u64; // unaligned on purpose
        let data = pattern(size, 10);
        let put = pair.client.put(data.clone(), &rkey, offset).expect("put");
        common::wait_timeout(put, &what).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ep = pair.client.clone();
        bounded(TIMEOUT, "flush", move || ep.flush()).expect("flush");
        let mut at_target = vec![0u8; size];
        region.read_at(offset as usize, &mut at_target).unwrap();
        assert_bytes(&at_target, &data, &what);

        let what = format!("{tls:?} get {size}");
        let data = pattern(size, 11);
        region.write_at(7, &data).unwrap();
        let get = pair.client.get(vec![0u8; size], &rkey, 7).expect("get");
        let got = common::wait_timeout(get, &what).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_bytes(&got.buffer, &data, &what);
    }
    // Out-of-range accesses are refused before UCX sees them.
    assert!(pair.client.put(vec![0u8; 65], &rkey, max as u64).is_err());
    assert!(pair.client.get(vec![0u8; 1], &rkey, u64::MAX).is_err());
}

#[test]
fn rma_self() {
    rma_sizes(Tls::SelfOnly);
}

#[test]
fn rma_shm() {
    rma_sizes(Tls::Shm);
}

#[test]
fn rma_tcp() {
    rma_sizes(Tls::Tcp);
}

// ---------------------------------------------------------------------------------------------
// Shared memory is really used by peer-error-handling endpoints
// ---------------------------------------------------------------------------------------------

#[test]
fn shm_endpoint_uses_shared_memory() {
    let pair = Pair::new(Tls::Shm);
    pair.tag_round_trip(0x77, &pattern(4096, 5));
    let transports = pair.client.transports().expect("transports");
    assert!(
        transports.iter().any(|t| t.is_shared_memory()),
        "client endpoint uses no shared-memory transport: {transports:?}"
    );
    let transports = pair.server.transports().expect("transports");
    assert!(
        transports.iter().any(|t| t.is_shared_memory()),
        "server endpoint uses no shared-memory transport: {transports:?}"
    );
    // With tcp's put off (swucx's default where shared memory may be used, under whichever key
    // this UCX takes) neither end keeps a tcp lane, whose sockets every progress would poll.
    for (side, ep) in [("client", &pair.client), ("server", &pair.server)] {
        let transports = ep.transports().expect("transports");
        assert!(
            !transports.iter().any(|t| t.transport == "tcp"),
            "{side} endpoint has a tcp lane: {transports:?}"
        );
    }
}

/// An override of a default setting works by either of its names on any UCX release: tcp's put
/// turned back on (`swucx serve` does) gives a shm pair its tcp lanes again (UCX 1.13 takes only
/// `PUT_ENABLE`, 1.22 only `TCP_PUT_ENABLE`).
#[test]
fn override_of_a_default_goes_by_either_name() {
    for name in ["PUT_ENABLE", "TCP_PUT_ENABLE"] {
        let context = Context::builder()
            .config("TLS", "posix,sysv,cma,self,tcp")
            .config(name, "y")
            .build()
            .expect("context");
        let pair = Pair::listener_pair_on(Tls::Shm, context);
        let transports = pair.client.transports().expect("transports");
        assert!(
            transports.iter().any(|t| t.transport == "tcp"),
            "{name}=y: no tcp lane: {transports:?}"
        );
    }
}

#[test]
fn tcp_endpoint_uses_tcp() {
    let pair = Pair::new(Tls::Tcp);
    let transports = pair.client.transports().expect("transports");
    assert!(
        transports.iter().any(|t| t.transport == "tcp"),
        "{transports:?}"
    );
    assert!(!transports.iter().any(|t| t.is_shared_memory()));
}

// ---------------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_unmatched_tag_recv() {
    for tls in [Tls::Shm, Tls::Tcp] {
        let pair = Pair::new(tls);
        let recv = pair
            .server_worker
            .tag_recv(0xDEAD, u64::MAX, vec![0u8; 64])
            .expect("tag_recv");
        assert!(!recv.is_complete());
        recv.cancel();
        let err = pair
            .wait_result(recv, "cancelled recv")
            .expect_err("a cancelled receive must fail");
        assert_eq!(err.status(), Status::ERR_CANCELED, "{tls:?}: {err}");
        // The worker still works afterwards.
        pair.tag_round_trip(0xBEEF, b"after cancel");
    }
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

/// Every operation kind on a closed endpoint returns `Err` (it must not crash or hang).
fn assert_closed_ops_fail(ep: &swucx::Endpoint, what: &str) {
    assert!(ep.is_closed(), "{what}: is_closed");
    assert!(ep.tag_send(1, vec![1u8; 8]).is_err(), "{what}: tag_send");
    assert!(ep.stream_send(vec![1u8; 8]).is_err(), "{what}: stream_send");
    assert!(ep.stream_recv(vec![0u8; 8]).is_err(), "{what}: stream_recv");
    assert!(
        ep.am_send(AM_KEEP, vec![1u8], vec![1u8; 8], AmFlags::NONE)
            .is_err(),
        "{what}: am_send"
    );
    assert!(ep.flush().is_err(), "{what}: flush");
    assert!(ep.transports().is_err(), "{what}: transports");
    // Closing again is a no-op.
    ep.close(CloseMode::Force).expect("second close");
}

fn close_case(tls: Tls, close_server: bool, mode: CloseMode) {
    let what = format!(
        "{tls:?} close {} {mode:?}",
        if close_server { "server" } else { "client" }
    );
    let pair = Pair::new(tls);
    let (closing, other, other_worker) = if close_server {
        (
            pair.server.clone(),
            pair.client.clone(),
            pair.client_worker.clone(),
        )
    } else {
        (
            pair.client.clone(),
            pair.server.clone(),
            pair.server_worker.clone(),
        )
    };
    // A receive in flight on the closing side's worker does not disturb the close.
    let progress_peer = Progressor::start(&other_worker);
    let ep = closing.clone();
    bounded(TIMEOUT, &what, move || ep.close(mode)).expect("close");
    assert_closed_ops_fail(&closing, &what);
    // The peer's endpoint: an operation either fails or completes, within the bound.
    drop(progress_peer);
    if tls != Tls::SelfOnly {
        if let Ok(request) = other.tag_send(9, vec![7u8; 100]) {
            let done = request.wait_timeout(TIMEOUT).expect("wait_timeout");
            assert!(done, "{what}: send on the peer endpoint hung");
            let _ = request.wait();
        }
        let ep = other.clone();
        bounded(TIMEOUT, &what, move || ep.close(CloseMode::Force)).expect("close peer");
        assert_closed_ops_fail(&other, &format!("{what} (peer)"));
    }
}

#[test]
fn close_client_flush() {
    for tls in [Tls::Shm, Tls::Tcp] {
        close_case(tls, false, CloseMode::Flush);
    }
}

#[test]
fn close_client_force() {
    for tls in [Tls::Shm, Tls::Tcp] {
        close_case(tls, false, CloseMode::Force);
    }
}

#[test]
fn close_server_flush() {
    for tls in [Tls::Shm, Tls::Tcp] {
        close_case(tls, true, CloseMode::Flush);
    }
}

#[test]
fn close_server_force() {
    for tls in [Tls::Shm, Tls::Tcp] {
        close_case(tls, true, CloseMode::Force);
    }
}

#[test]
fn close_self_endpoint() {
    for mode in [CloseMode::Flush, CloseMode::Force] {
        let pair = Pair::new(Tls::SelfOnly);
        pair.tag_round_trip(3, b"x");
        let ep = pair.client.clone();
        bounded(TIMEOUT, "close self", move || ep.close(mode)).expect("close");
        assert_closed_ops_fail(&pair.client, &format!("self {mode:?}"));
    }
}

#[test]
fn force_close_cancels_outstanding_sends() {
    let pair = Pair::new(Tls::Tcp);
    // 1 MiB tag sends go by rendezvous and stay pending: nobody receives them.
    let sends: Vec<_> = (0..4)
        .map(|i| {
            pair.client
                .tag_send(0x4000 + i, pattern(1 << 20, i))
                .unwrap()
        })
        .collect();
    for _ in 0..100 {
        pair.client_worker.progress();
        pair.server_worker.progress();
    }
    let ep = pair.client.clone();
    bounded(TIMEOUT, "force close", move || ep.close(CloseMode::Force)).expect("close");
    for send in sends {
        let result = common::wait_timeout(send, "cancelled send");
        assert!(
            result.is_err(),
            "an unreceived send must fail after a force close"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting by worker address, and listeners on port 0
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_by_worker_address() {
    for tls in [Tls::SelfOnly, Tls::Shm, Tls::Tcp] {
        let context = tls.context();
        let server = Worker::new(&context).unwrap();
        let client = if tls == Tls::SelfOnly {
            server.clone()
        } else {
            Worker::new(&context).unwrap()
        };
        let address = server.address().expect("address");
        assert!(!address.as_bytes().is_empty());
        // SAFETY: an empty address, which connect_address refuses before UCX sees it.
        let empty = unsafe { WorkerAddress::from_bytes(Vec::new()) };
        let refused = server.connect_address(&empty).unwrap_err();
        assert_eq!(refused.status(), Status::ERR_INVALID_ADDR, "{refused}");
        let ep = client.connect_address(&address).expect("connect_address");
        assert_eq!(ep.peer_addr(), None);
        let data = pattern(100_000, 6);
        let recv = server
            .tag_recv(42, u64::MAX, vec![0u8; data.len()])
            .unwrap();
        let send = ep.tag_send(42, data.clone()).unwrap();
        let workers = [&client, &server];
        common::wait_on(&workers, send, "send").expect("send");
        let got = common::wait_on(&workers, recv, "recv").expect("recv");
        assert_bytes(&got.buffer, &data, &format!("{tls:?} connect_address"));
        let ep2 = ep.clone();
        let _p = (tls != Tls::SelfOnly).then(|| Progressor::start(&server));
        bounded(TIMEOUT, "close", move || ep2.close(CloseMode::Flush)).expect("close");
    }
}

#[test]
fn listener_on_port_zero() {
    let context = Tls::Tcp.context();
    let worker = Worker::new(&context).unwrap();
    let a = Listener::bind(&worker, any_local()).expect("bind a");
    let b = Listener::bind(&worker, any_local()).expect("bind b");
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    assert_ne!(a_addr.port(), 0);
    assert_ne!(b_addr.port(), 0);
    assert_ne!(a_addr.port(), b_addr.port());
    // Binding the same port again fails cleanly.
    assert!(Listener::bind(&worker, a_addr).is_err());
    // A connection to b arrives on b only; accept_timeout on a times out with None.
    let client = Worker::new(&context).unwrap();
    let ep = client.connect(b_addr).expect("connect");
    assert_eq!(ep.peer_addr(), Some(b_addr));
    let _p = Progressor::start(&client);
    let request = b
        .accept_timeout(TIMEOUT)
        .expect("accept_timeout")
        .expect("connection request");
    assert!(request.client_addr().is_some());
    let server_ep = worker.accept(request).expect("accept");
    assert!(
        a.accept_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none()
    );
    let recv = client.tag_recv(5, u64::MAX, vec![0u8; 3]).unwrap();
    common::wait_timeout(server_ep.tag_send(5, b"abc".to_vec()).unwrap(), "send").unwrap();
    let got = common::wait_timeout(recv, "recv").unwrap();
    assert_eq!(got.buffer, b"abc");
    drop(_p);
    common::close_all(&[&ep, &server_ep], &[&client, &worker]);
}

/// A request from a listener on one worker is accepted on another worker of the context (how
/// the needle server deals connections to its threads): the endpoint lives on the accepting
/// worker, with the transports of the set, and carries eager and rendezvous messages both ways.
#[test]
fn accept_on_another_worker() {
    for tls in [Tls::Shm, Tls::Tcp] {
        let context = tls.context();
        let listening = Worker::new(&context).unwrap();
        let serving = Worker::new(&context).unwrap();
        let client = Worker::new(&context).unwrap();
        let listener = Listener::bind(&listening, any_local()).unwrap();
        let ep = client.connect(listener.local_addr().unwrap()).unwrap();
        let workers = [&listening, &serving, &client];
        let mut request = None;
        common::progress_until(&workers, "connection request", || {
            request = listener.try_accept();
            request.is_some()
        });
        let server_ep = serving.accept(request.unwrap()).expect("accept");
        for (tag, size) in [(1, 8), (2, (1 << 20) + 13)] {
            let data = pattern(size, tag);
            let recv = serving.tag_recv(tag, u64::MAX, vec![0u8; size]).unwrap();
            common::wait_on(&workers, ep.tag_send(tag, data.clone()).unwrap(), "send").unwrap();
            let got = common::wait_on(&workers, recv, "recv").unwrap();
            assert_bytes(
                &got.buffer,
                &data,
                &format!("{tls:?} to the accepting worker"),
            );
            let recv = client.tag_recv(tag, u64::MAX, vec![0u8; size]).unwrap();
            let send = server_ep.tag_send(tag, data.clone()).unwrap();
            common::wait_on(&workers, send, "reply").unwrap();
            let got = common::wait_on(&workers, recv, "reply recv").unwrap();
            assert_bytes(
                &got.buffer,
                &data,
                &format!("{tls:?} from the accepting worker"),
            );
        }
        let names: Vec<String> = server_ep
            .transports()
            .unwrap()
            .iter()
            .map(|t| t.transport.clone())
            .collect();
        let want_shm = tls == Tls::Shm;
        assert!(
            names.iter().all(|t| (t != "tcp") == want_shm),
            "{tls:?}: transports {names:?}"
        );
        common::close_all(&[&ep, &server_ep], &workers);
    }
}

/// A server that restarts binds its port again at once: the connection it served leaves a
/// TIME_WAIT socket on that port, and swucx's default `CM_REUSEADDR=y` lets the bind through.
#[test]
fn listener_rebinds_its_port_after_a_connection() {
    let context = Tls::Tcp.context();
    let worker = Worker::new(&context).unwrap();
    let client = Worker::new(&context).unwrap();
    let listener = Listener::bind(&worker, any_local()).expect("bind");
    let addr = listener.local_addr().unwrap();
    let ep = client.connect(addr).expect("connect");
    let progress = Progressor::start(&client);
    let request = listener
        .accept_timeout(TIMEOUT)
        .expect("accept_timeout")
        .expect("connection request");
    let server_ep = worker.accept(request).expect("accept");
    let recv = client.tag_recv(9, u64::MAX, vec![0u8; 2]).unwrap();
    common::wait_timeout(server_ep.tag_send(9, b"hi".to_vec()).unwrap(), "send").unwrap();
    assert_eq!(common::wait_timeout(recv, "recv").unwrap().buffer, b"hi");
    drop(progress);
    // The server side closes first, so the TIME_WAIT socket holds the listener's port.
    common::close_all(&[&server_ep, &ep], &[&worker, &client]);
    drop(listener);
    let again = Listener::bind(&worker, addr).expect("bind the same port again");
    assert_eq!(again.local_addr().unwrap(), addr);
}

#[test]
fn rejected_connection_fails_client() {
    let context = Tls::Tcp.context();
    let server = Worker::new(&context).unwrap();
    let client = Worker::new(&context).unwrap();
    let listener = Listener::bind(&server, any_local()).unwrap();
    let ep = client.connect(listener.local_addr().unwrap()).unwrap();
    let _p = Progressor::start(&client);
    listener
        .accept_timeout(TIMEOUT)
        .unwrap()
        .expect("connection request")
        .reject();
    drop(_p);
    progress_until(&[&client, &server], "rejection", || ep.failure().is_some());
    assert!(ep.tag_send(1, vec![0u8; 4]).is_err());
    common::close_all(&[&ep], &[&client, &server]);
}

// ---------------------------------------------------------------------------------------------
// Remote keys: malformed descriptors are refused
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_rkey_descriptors_are_refused() {
    let pair = Pair::new(Tls::Tcp);
    let region = MemRegion::register(&pair.context, vec![0u8; 4096]).unwrap();
    let good = region.export().unwrap();
    // SAFETY: bad descriptors are refused before UCX sees them (what this test checks), and
    // the good one is this process's own export, unchanged.
    let unpack = |ep, bytes: &[u8]| unsafe { RemoteKey::unpack(ep, bytes) };
    unpack(&pair.client, &good).expect("the intact descriptor unpacks");
    assert!(unpack(&pair.client, &[]).is_err(), "empty");
    for cut in [
        1,
        4,
        5,
        20,
        25,
        good.len() / 2,
        good.len() - 4,
        good.len() - 1,
    ] {
        assert!(
            unpack(&pair.client, &good[..cut]).is_err(),
            "truncated to {cut}"
        );
    }
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x5A;
        assert!(unpack(&pair.client, &bad).is_err(), "byte {i} flipped");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(unpack(&pair.client, &longer).is_err(), "trailing byte");
    assert!(
        unpack(&pair.client, &pattern(good.len(), 9)).is_err(),
        "garbage"
    );
    assert!(
        unpack(&pair.client, &pattern(300, 9)).is_err(),
        "garbage 300"
    );
    // A region that wraps around the address space, framed and checksummed: its put and get
    // addresses would overflow.
    let mut wraps = good.clone();
    wraps[5..13].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    wraps[13..21].copy_from_slice(&64u64.to_le_bytes());
    let body = wraps.len() - 4;
    let crc = crc32c::crc32c(&wraps[..body]);
    wraps[body..].copy_from_slice(&crc.to_le_bytes());
    assert!(
        unpack(&pair.client, &wraps).is_err(),
        "a region that wraps around"
    );
    // Zero-length regions are refused at registration, and more than the host has at once
    // (UCX 1.13 filled /dev/shm until the host ran out).
    assert!(MemRegion::allocate(&pair.context, 0).is_err());
    let huge = MemRegion::allocate(&pair.context, 1 << 46).expect_err("64 TiB allocated");
    assert_eq!(huge.status(), Status::ERR_NO_MEMORY, "{huge}");
}

// ---------------------------------------------------------------------------------------------
// Engine: many threads, tag and AM request/response, byte-exact
// ---------------------------------------------------------------------------------------------

const THREADS: u64 = 3;
const ROUNDS: u64 = 12;
const REPLY: u64 = 1 << 63;
const AM_REQ: u16 = 20;
const AM_RESP: u16 = 21;

fn engine_size(thread: u64, round: u64) -> usize {
    [0usize, 1, 100, 8191, 65536, 300_000][((thread + round) % 6) as usize]
}

fn engine_round_trips(tls: Tls) {
    let context = tls.context();
    let engine = Arc::new(Engine::new(&context).expect("engine"));

    // The server: its own worker, progressed in the background.
    let server = Worker::new(&context).unwrap();
    let listener = Listener::bind(&server, any_local()).unwrap();
    let addr = listener.local_addr().unwrap();
    let _progress = Progressor::start(&server);

    // Server AM side: the handler keeps requests, a thread answers them.
    type AmJob = (Vec<u8>, swucx::AmDesc, swucx::Endpoint);
    let am_jobs: Arc<Mutex<VecDeque<AmJob>>> = Arc::default();
    let sink = am_jobs.clone();
    server
        .set_am_handler(AM_REQ, move |msg| {
            let header = msg.header().to_vec();
            let reply = msg.reply_endpoint().expect("reply endpoint");
            sink.lock().unwrap().push_back((header, msg.keep(), reply));
        })
        .unwrap();

    // Client AM side: responses by (thread, round).
    let responses: Arc<Mutex<HashMap<Vec<u8>, swucx::AmDesc>>> = Arc::default();
    let sink = responses.clone();
    engine
        .worker()
        .set_am_handler(AM_RESP, move |msg| {
            let header = msg.header().to_vec();
            sink.lock().unwrap().insert(header, msg.keep());
        })
        .unwrap();

    let ep = engine.worker().connect(addr).expect("connect");
    let request = listener
        .accept_timeout(TIMEOUT)
        .unwrap()
        .expect("connection request");
    let server_ep = server.accept(request).unwrap();
    // Finish wireup with one round trip before the threads start: UCX 1.13.1 aborts
    // (`proto_am.inl: Assertion max_iov > 1`, "Invalid am_short length: 108 (expected <= 100)")
    // when AM sends issued during wireup are replayed onto the posix lane.
    let recv = server.tag_recv(1, u64::MAX, vec![0u8; 2]).unwrap();
    engine
        .wait(ep.tag_send(1, b"hi".to_vec()).unwrap())
        .unwrap();
    assert_eq!(
        common::wait_timeout(recv, "wireup recv").unwrap().buffer,
        b"hi"
    );
    let recv = engine.worker().tag_recv(2, u64::MAX, vec![0u8; 2]).unwrap();
    common::wait_timeout(
        server_ep.tag_send(2, b"ho".to_vec()).unwrap(),
        "wireup send",
    )
    .unwrap();
    assert!(engine.wait_timeout(&recv, TIMEOUT));
    assert_eq!(engine.wait(recv).unwrap().buffer, b"ho");

    let tag_messages = (0..THREADS).filter(|t| t % 2 == 0).count() as u64 * ROUNDS;
    let am_messages = (0..THREADS).filter(|t| t % 2 == 1).count() as u64 * ROUNDS;

    // Tag echo thread.
    let tag_server = {
        let server = server.clone();
        let server_ep = server_ep.clone();
        std::thread::spawn(move || {
            for _ in 0..tag_messages {
                let recv = server.tag_recv(0, 0, vec![0u8; 1 << 20]).unwrap();
                let got = common::wait_timeout(recv, "server tag recv").unwrap();
                let reply = got.buffer[..got.length].to_vec();
                let send = server_ep.tag_send(got.sender_tag | REPLY, reply).unwrap();
                common::wait_timeout(send, "server tag reply").unwrap();
            }
        })
    };
    // AM echo thread.
    let am_server = {
        let am_jobs = am_jobs.clone();
        let server = server.clone();
        std::thread::spawn(move || {
            for _ in 0..am_messages {
                let mut job = None;
                let deadline = std::time::Instant::now() + TIMEOUT;
                while job.is_none() {
                    assert!(std::time::Instant::now() < deadline, "server AM wait");
                    job = am_jobs.lock().unwrap().pop_front();
                    if job.is_none() {
                        server.progress();
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                let (header, desc, reply_ep) = job.unwrap();
                let len = desc.len();
                let got = common::wait_timeout(desc.recv_into(vec![0u8; len]).unwrap(), "am recv")
                    .unwrap();
                let send = reply_ep
                    .am_send(AM_RESP, header, got.buffer, AmFlags::NONE)
                    .unwrap();
                common::wait_timeout(send, "server AM reply").unwrap();
            }
        })
    };

    let clients: Vec<_> = (0..THREADS)
        .map(|thread| {
            let engine = engine.clone();
            let ep = ep.clone();
            let responses = responses.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let size = engine_size(thread, round);
                    let data = pattern(size, thread * 1000 + round);
                    let what = format!("engine {tls:?} thread {thread} round {round} size {size}");
                    if thread % 2 == 0 {
                        let tag = (thread << 32) | round;
                        let recv = engine
                            .worker()
                            .tag_recv(tag | REPLY, u64::MAX, vec![0u8; size])
                            .unwrap();
                        let send = ep.tag_send(tag, data.clone()).unwrap();
                        engine.wait(send).unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert!(engine.wait_timeout(&recv, TIMEOUT), "{what}: reply");
                        let got = engine.wait(recv).unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert_eq!(got.length, size);
                        assert_bytes(&got.buffer, &data, &what);
                    } else {
                        let header = format!("{thread}/{round}").into_bytes();
                        let send = ep
                            .am_send(AM_REQ, header.clone(), data.clone(), AmFlags::REPLY)
                            .unwrap();
                        assert!(engine.wait_timeout(&send, TIMEOUT), "{what}: send");
                        engine.wait(send).unwrap_or_else(|e| panic!("{what}: {e}"));
                        let mut desc = None;
                        let arrived = engine.progress_until(
                            || {
                                desc = responses.lock().unwrap().remove(&header);
                                desc.is_some()
                            },
                            TIMEOUT,
                        );
                        assert!(arrived, "{what}: no AM reply");
                        let desc = desc.unwrap();
                        assert_eq!(desc.len(), size);
                        let request = desc.recv_into(vec![0u8; size]).unwrap();
                        assert!(engine.wait_timeout(&request, TIMEOUT), "{what}: recv");
                        let got = engine.wait(request).unwrap();
                        assert_bytes(&got.buffer, &data, &what);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    tag_server.join().expect("tag server");
    am_server.join().expect("AM server");
    drop(_progress);
    common::close_all(&[&ep, &server_ep], &[&server]);
}

#[test]
fn engine_threads_tcp() {
    engine_round_trips(Tls::Tcp);
}

#[test]
fn engine_threads_shm() {
    engine_round_trips(Tls::Shm);
}

// ---------------------------------------------------------------------------------------------
// AM queues: messages waited for through an Engine
// ---------------------------------------------------------------------------------------------

const AM_Q_REQ: u16 = 30;
/// Client thread t answers come back on id AM_Q_RESP + t, each to a queue of its own.
const AM_Q_RESP: u16 = 31;

/// Two engines, a client with two threads and a server with one: requests carry a header and
/// ask for replies; the server takes them with `Engine::am_recv`, receives each payload (eager
/// and rendezvous sizes) and echoes it on the reply endpoint; each client thread takes its
/// echoes from a queue of its own and checks every byte.
fn engine_am_queues(tls: Tls) {
    const CLIENT_THREADS: u16 = 2;
    const AM_ROUNDS: usize = 10;
    let sizes = [0usize, 8, 8191, 65536, (1 << 20) + 13];
    let context = tls.context();
    let server = Arc::new(Engine::new(&context).expect("server engine"));
    let client = Arc::new(Engine::new(&context).expect("client engine"));
    let requests = AmQueue::new(server.worker(), AM_Q_REQ).expect("request queue");
    let listener = Listener::bind(server.worker(), any_local()).unwrap();
    let ep = client
        .worker()
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let conn = server
        .accept_signals(&listener, Some(TIMEOUT), &[])
        .expect("connection request");
    let server_ep = server.worker().accept(conn).unwrap();

    let echo = {
        let server = server.clone();
        std::thread::spawn(move || {
            for _ in 0..usize::from(CLIENT_THREADS) * AM_ROUNDS {
                let message = server
                    .am_recv(&requests, Some(TIMEOUT), &[])
                    .expect("a request within the timeout");
                let reply = message.reply_endpoint.expect("reply endpoint");
                let len = message.payload.len();
                let rendezvous = message.payload.is_rendezvous();
                let got = server
                    .wait(message.payload.recv_into(vec![0u8; len]).unwrap())
                    .unwrap();
                assert_eq!(got.length, len);
                if len > 1 << 20 {
                    assert!(rendezvous, "{len} B must arrive by rendezvous");
                }
                let id = AM_Q_RESP + u16::from(message.header[0]);
                let send = reply
                    .am_send(id, message.header, got.buffer, AmFlags::NONE)
                    .unwrap();
                server.wait(send).expect("echo");
            }
        })
    };
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|thread| {
            let client = client.clone();
            let ep = ep.clone();
            let replies = AmQueue::new(client.worker(), AM_Q_RESP + thread).unwrap();
            std::thread::spawn(move || {
                for round in 0..AM_ROUNDS {
                    let size = sizes[round % sizes.len()];
                    let what = format!("{tls:?} AM queue thread {thread} round {round} {size} B");
                    let data = pattern(size, u64::from(thread) * 100 + round as u64);
                    let header = vec![thread as u8, round as u8, 0xAB];
                    let send = ep
                        .am_send(AM_Q_REQ, header.clone(), data.clone(), AmFlags::REPLY)
                        .unwrap();
                    client.wait(send).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let message = client
                        .am_recv(&replies, Some(TIMEOUT), &[])
                        .unwrap_or_else(|| panic!("{what}: no echo"));
                    assert_eq!(message.header, header, "{what}: header");
                    assert!(message.reply_endpoint.is_none(), "{what}: no reply asked");
                    let got = client
                        .wait(message.payload.recv_into(vec![0u8; size]).unwrap())
                        .unwrap();
                    assert_eq!(got.length, size, "{what}: length");
                    assert_bytes(&got.buffer, &data, &what);
                }
                assert!(replies.is_empty());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    echo.join().expect("echo thread");
    ep.close(CloseMode::Flush).unwrap();
    drop(server_ep);
}

#[test]
fn engine_am_queues_shm() {
    engine_am_queues(Tls::Shm);
}

#[test]
fn engine_am_queues_tcp() {
    engine_am_queues(Tls::Tcp);
}

/// `Engine::am_recv` ends on a signal and on its timeout with nothing taken; a payload larger
/// than the receive buffer is an error; dropping a queue releases its messages, and a new
/// queue on the id gets the next ones.
#[test]
fn engine_am_queue_waits_end_and_queues_replace() {
    const AM_Q: u16 = 33;
    let (engine, ep) = engine_connected_to_itself();
    let engine = Arc::new(engine);
    let queue = Arc::new(AmQueue::new(engine.worker(), AM_Q).unwrap());
    let send = |n: u8, size: usize| {
        engine
            .wait(
                ep.am_send(AM_Q, vec![n], vec![n; size], AmFlags::NONE)
                    .unwrap(),
            )
            .unwrap();
    };

    assert!(
        engine
            .am_recv(&queue, Some(Duration::from_millis(20)), &[])
            .is_none()
    );
    let signal = Arc::new(swucx::Signal::new());
    let waiter = {
        let (engine, queue, signal) = (engine.clone(), queue.clone(), signal.clone());
        std::thread::spawn(move || engine.am_recv(&queue, None, &[&signal]).is_none())
    };
    std::thread::sleep(Duration::from_millis(20));
    signal.raise();
    assert!(
        bounded(TIMEOUT, "signalled am_recv", move || waiter.join().unwrap()),
        "a signal ends the wait with nothing taken"
    );

    // A message that is there is taken even with the signal raised (there: in the queue; the
    // send may complete before progress has delivered it).
    send(1, 8);
    assert!(engine.progress_until(|| queue.len() == 1, TIMEOUT));
    let message = engine
        .am_recv(&queue, Some(TIMEOUT), &[&signal])
        .expect("message 1");
    assert_eq!(message.header, [1]);
    let too_short = message.payload.recv_into(vec![0u8; 4]);
    assert_eq!(
        too_short.err().map(|e| e.status()),
        Some(Status::ERR_MESSAGE_TRUNCATED)
    );

    // Dropping a queue releases what waits in it; a new queue on the id gets what follows.
    send(2, 100);
    assert!(engine.progress_until(|| queue.len() == 1, TIMEOUT));
    drop(Arc::try_unwrap(queue).ok().expect("the only reference"));
    let queue = AmQueue::new(engine.worker(), AM_Q).unwrap();
    send(3, 100);
    let message = engine
        .am_recv(&queue, Some(TIMEOUT), &[])
        .expect("message 3");
    assert_eq!(message.header, [3]);
    assert!(queue.is_empty());
    ep.close(CloseMode::Flush).unwrap();
}

/// Several threads taking from one queue: each `am_recv` returns a message or waits, never
/// ends early because another thread took the message it woke for (it returned `None` then).
#[test]
fn engine_am_queue_shared_by_receivers() {
    const AM_Q: u16 = 34;
    const RECEIVERS: usize = 4;
    const MESSAGES: usize = 400;
    let (engine, ep) = engine_connected_to_itself();
    let engine = Arc::new(engine);
    let queue = Arc::new(AmQueue::new(engine.worker(), AM_Q).unwrap());
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receivers: Vec<_> = (0..RECEIVERS)
        .map(|_| {
            let (engine, queue, taken) = (engine.clone(), queue.clone(), taken.clone());
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering::SeqCst;
                // Each message is counted when taken; a thread stops once all are.
                while taken.load(SeqCst) < MESSAGES {
                    match engine.am_recv(&queue, Some(Duration::from_millis(500)), &[]) {
                        Some(_) => {
                            taken.fetch_add(1, SeqCst);
                        }
                        None => assert!(
                            taken.load(SeqCst) >= MESSAGES - RECEIVERS,
                            "am_recv gave None before its 500 ms timeout while messages came"
                        ),
                    }
                }
            })
        })
        .collect();
    for n in 0..MESSAGES {
        let send = ep
            .am_send(AM_Q, Vec::new(), vec![n as u8; 8], AmFlags::NONE)
            .unwrap();
        engine.wait(send).unwrap();
        if n % 16 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    for r in receivers {
        r.join().expect("receiver");
    }
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), MESSAGES);
    ep.close(CloseMode::Flush).unwrap();
}

/// A spin longer than the clock can add (`Duration::MAX`) is taken as `MAX_SPIN`: waits work
/// (they panicked adding it to the time).
#[test]
fn engine_with_the_longest_spin_waits() {
    let engine = Engine::with_spin(&Tls::Tcp.context(), Duration::MAX).expect("engine");
    let ep = engine
        .worker()
        .connect_address(&engine.worker().address().unwrap())
        .unwrap();
    let recv = engine.worker().tag_recv(9, u64::MAX, vec![0u8; 8]).unwrap();
    engine.wait(ep.tag_send(9, vec![4u8; 8]).unwrap()).unwrap();
    assert_eq!(engine.wait(recv).unwrap().buffer, [4u8; 8]);
    ep.close(CloseMode::Flush).unwrap();
}

/// An Engine over tcp and an endpoint from its worker to itself.
fn engine_connected_to_itself() -> (Engine, swucx::Endpoint) {
    let engine = Engine::new(&Tls::Tcp.context()).expect("engine");
    let ep = engine
        .worker()
        .connect_address(&engine.worker().address().unwrap())
        .unwrap();
    (engine, ep)
}

/// Engine waits inside a handler on the engine's worker (run by the thread that progresses: the
/// background thread or a waiter, which the wait would hold up) return at once instead of
/// hanging: `wait` fails with `ERR_BUSY`, `wait_signals` reports the request still running, and
/// `am_recv`, `accept_signals` and `progress_until` report only what is there.
#[test]
fn engine_waits_inside_a_handler_return_at_once() {
    use swucx::WaitEnd;
    const AM_ID: u16 = 34;
    let (engine, ep) = engine_connected_to_itself();
    let engine = Arc::new(engine);
    let (tx, rx) = std::sync::mpsc::channel();
    // Taken by the handler on its first call, so nothing it holds outlives it.
    let handed = Mutex::new(Some((
        Arc::downgrade(&engine),
        AmQueue::new(engine.worker(), AM_ID + 1).unwrap(),
        Listener::bind(engine.worker(), any_local()).unwrap(),
        engine
            .worker()
            .tag_recv(0xDEAD, u64::MAX, vec![0u8; 8])
            .unwrap(),
        tx,
    )));
    engine
        .worker()
        .set_am_handler(AM_ID, move |_| {
            let Some((engine, queue, listener, request, tx)) = handed.lock().unwrap().take() else {
                return;
            };
            let engine = engine.upgrade().expect("engine");
            let ended = engine.wait_signals(&request, None, &[]);
            let waited = engine.wait(request).map(|_| ()).map_err(|e| e.status());
            let queued = engine.am_recv(&queue, None, &[]).is_some();
            let accepted = engine.accept_signals(&listener, None, &[]).is_some();
            let progressed = engine.progress_until(|| false, TIMEOUT);
            let _ = tx.send((ended, waited, queued, accepted, progressed));
        })
        .unwrap();
    // Sent from a thread of its own, which may run the handler while it waits: this one only
    // watches.
    let sender = {
        let (engine, ep) = (engine.clone(), ep.clone());
        std::thread::spawn(move || {
            engine.wait(ep.am_send(AM_ID, vec![1], vec![], AmFlags::NONE)?)
        })
    };
    let Ok(outcome) = rx.recv_timeout(TIMEOUT) else {
        // The handler hangs holding the worker: dropping the engine (which joins its thread)
        // or the endpoint (which takes the worker's gate) would hang too.
        std::mem::forget((engine, ep));
        panic!("a wait inside the handler hung");
    };
    assert_eq!(
        outcome,
        (
            WaitEnd::TimedOut,
            Err(Status::ERR_BUSY),
            false,
            false,
            false
        )
    );
    sender.join().unwrap().expect("AM send");
    ep.close(CloseMode::Flush).unwrap();
}

/// `Engine::wait_signals` / `sleep_signals`: a signal raised by another thread ends a wait that
/// has no timeout (the request keeps running), a raised signal ends the next wait at once, a
/// lowered one does not, and the request then completes normally. `accept_signals` likewise.
#[test]
fn engine_wait_signals() {
    use swucx::{Signal, WaitEnd};
    let (engine, ep) = engine_connected_to_itself();
    let recv = engine.worker().tag_recv(9, u64::MAX, vec![0u8; 8]).unwrap();
    let (stop, other) = (Arc::new(Signal::new()), Arc::new(Signal::new()));
    let raiser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stop.raise();
        })
    };
    let start = std::time::Instant::now();
    assert_eq!(
        engine.wait_signals(&recv, None, &[&other, &stop]),
        WaitEnd::Signalled
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    raiser.join().unwrap();
    assert_eq!(
        engine.sleep_signals(&recv, None, &[&stop]),
        WaitEnd::Signalled
    );
    stop.reset();
    assert!(!stop.is_raised());
    let short = Some(Duration::from_millis(20));
    assert_eq!(
        engine.wait_signals(&recv, short, &[&stop]),
        WaitEnd::TimedOut
    );
    assert_eq!(
        engine.sleep_signals(&recv, short, &[&stop]),
        WaitEnd::TimedOut
    );
    // A healthy endpoint raises nothing.
    ep.raise_on_failure(&other);
    assert!(!other.is_raised());
    engine
        .wait(ep.tag_send(9, b"signals!".to_vec()).unwrap())
        .unwrap();
    assert_eq!(
        engine.sleep_signals(&recv, Some(TIMEOUT), &[&stop, &other]),
        WaitEnd::Complete
    );
    assert_eq!(engine.wait(recv).unwrap().buffer, b"signals!");
    ep.close(CloseMode::Flush).unwrap();

    // accept_signals: the engine's thread progresses the listener while this one sleeps.
    let listener = Listener::bind(engine.worker(), any_local()).unwrap();
    assert!(engine.accept_signals(&listener, short, &[]).is_none());
    stop.raise();
    assert!(engine.accept_signals(&listener, None, &[&stop]).is_none());
    stop.reset();
    let client = engine
        .worker()
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let request = engine
        .accept_signals(&listener, Some(TIMEOUT), &[&stop])
        .expect("a connection request");
    let server = engine.worker().accept(request).unwrap();
    drop(listener);
    common::close_all(&[&client, &server], &[]);
}

/// `Engine::spinning`: a spinner's progress calls deliver what arrives, and once its spin ends
/// the background thread takes over, with a hand-over (at once) or without one (after its
/// rest), so an active message nobody spins for still arrives.
#[test]
fn engine_spin_then_background_takes_over() {
    const AM_SPIN: u16 = 22;
    let context = Tls::Tcp.context();
    let engine = Engine::new(&context).expect("engine");
    let inbox = am_inbox(engine.worker(), AM_SPIN);
    let ep = engine
        .worker()
        .connect_address(&engine.worker().address().unwrap())
        .unwrap();
    let send = |n: u8| {
        engine
            .wait(
                ep.am_send(AM_SPIN, vec![n], vec![n; 64], AmFlags::NONE)
                    .unwrap(),
            )
            .unwrap()
    };
    let arrived = |n: usize| inbox.len() >= n;
    // Only sleeps and looks: progress, if any, comes from the background thread.
    let sleep_until_arrived = |n: usize, what: &str| {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !arrived(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not delivered"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };

    let spin = engine.spinning();
    send(1);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !arrived(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "spinner: not delivered"
        );
        engine.progress();
    }
    drop(spin);
    send(2);
    sleep_until_arrived(2, "after a spin without hand-over");

    let spin = engine.spinning();
    drop(spin);
    engine.hand_over();
    send(3);
    sleep_until_arrived(3, "after a hand-over");
    let headers: Vec<u8> = std::iter::from_fn(|| inbox.try_recv())
        .map(|m| m.header[0])
        .collect();
    assert_eq!(headers, [1, 2, 3]);
    ep.close(CloseMode::Flush).unwrap();
}

/// A spin announced and left running while its own thread sleeps in a wait (the message comes
/// later than the wait's spin lasts): the background thread sees that nobody progresses and
/// drives. It used to rest for ever behind such a spin, and the wait hung.
#[test]
fn engine_drives_behind_a_spin_that_stalled() {
    let (engine, ep) = engine_connected_to_itself();
    engine.wait(ep.tag_send(7, vec![7u8; 8]).unwrap()).unwrap();
    engine
        .wait(engine.worker().tag_recv(7, u64::MAX, vec![0u8; 8]).unwrap())
        .unwrap();
    let spin = engine.spinning();
    let recv = engine.worker().tag_recv(8, u64::MAX, vec![0u8; 8]).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            engine.wait(ep.tag_send(8, vec![8u8; 8]).unwrap()).unwrap();
        });
        assert!(
            engine.wait_timeout(&recv, TIMEOUT),
            "a wait behind a stalled spin was never progressed"
        );
    });
    drop(spin);
    assert_eq!(engine.wait(recv).unwrap().buffer, vec![8u8; 8]);
    ep.close(CloseMode::Flush).unwrap();
}

/// Messages that arrive before their receive is posted (unexpected) still report their own
/// sender tag and length.
#[test]
fn tag_recv_of_unexpected_messages_reports_tag_and_length() {
    for tls in [Tls::SelfOnly, Tls::Shm, Tls::Tcp] {
        let context = tls.context();
        let worker = Worker::new(&context).unwrap();
        let ep = worker.connect_address(&worker.address().unwrap()).unwrap();
        let sends: Vec<_> = [5u64, 6, 7]
            .iter()
            .enumerate()
            .map(|(i, tag)| ep.tag_send(*tag, pattern(10 * (i + 1), *tag)).unwrap())
            .collect();
        for _ in 0..1000 {
            worker.progress();
        }
        for (i, tag) in [5u64, 6, 7].iter().enumerate() {
            let recv = worker.tag_recv(0, 0, vec![0u8; 100]).unwrap();
            let got = common::wait_timeout(recv, "unexpected recv").unwrap();
            let what = format!("{tls:?} unexpected tag {tag}");
            assert_eq!(got.sender_tag, *tag, "{what}");
            assert_eq!(got.length, 10 * (i + 1), "{what}");
            assert_bytes(&got.buffer[..got.length], &pattern(got.length, *tag), &what);
        }
        for send in sends {
            common::wait_timeout(send, "send").unwrap();
        }
        common::close_all(&[&ep], &[&worker]);
    }
}

/// `Endpoint::close` inside an AM handler that UCX runs within a send on that very endpoint
/// (the `self` transport delivers at once) returns `ERR_BUSY` and does nothing: it used to
/// deadlock on the endpoint's lock, and elsewhere closed the endpoint while saying BUSY.
#[test]
fn close_inside_a_handler_is_busy_and_closes_nothing() {
    const AM_CLOSE: u16 = 77;
    let pair = Pair::self_pair();
    let endpoint = Arc::new(Mutex::new(Some(pair.client.clone())));
    let outcome: Arc<Mutex<Option<Status>>> = Arc::default();
    let (ep, seen) = (endpoint.clone(), outcome.clone());
    pair.server_worker
        .set_am_handler(AM_CLOSE, move |_msg| {
            let ep = ep.lock().unwrap().clone().unwrap();
            let status = match ep.close(CloseMode::Flush) {
                Ok(()) => Status::OK,
                Err(e) => e.status(),
            };
            *seen.lock().unwrap() = Some(status);
        })
        .unwrap();
    let sent = bounded(
        TIMEOUT,
        "a send whose handler closes its endpoint",
        move || {
            pair.client
                .am_send_now(AM_CLOSE, &[], &[1], AmFlags::NONE)?;
            while outcome.lock().unwrap().is_none() {
                pair.client_worker.progress();
            }
            let closed = outcome.lock().unwrap().unwrap();
            // Still open: a message goes through after the handler's refused close.
            pair.client
                .am_send_now(AM_CLOSE, &[], &[2], AmFlags::NONE)?;
            endpoint.lock().unwrap().take();
            Ok::<_, swucx::Error>(closed)
        },
    );
    assert_eq!(sent.unwrap(), Status::ERR_BUSY);
}

/// An endpoint dropped while a large send that nobody receives is still running: its close
/// cancels the send (a flushing close in the background ended under UCX 1.13's rendezvous, and
/// UCX aborted the process when the worker went), and the workers go without a hang.
#[test]
fn dropping_an_endpoint_under_an_untaken_send_cancels_it() {
    let context = Context::builder()
        .config("TLS", "tcp,self")
        .config("NET_DEVICES", "lo")
        .config("RNDV_THRESH", "8k")
        .build()
        .unwrap();
    let server = Worker::new(&context).unwrap();
    let client = Worker::new(&context).unwrap();
    let ep = client.connect_address(&server.address().unwrap()).unwrap();
    // A small message first, and progress a while after it, so the connection is up and the
    // large send goes straight onto the wire.
    let hello = server.tag_recv(555, u64::MAX, vec![0u8; 8]).unwrap();
    let sent = ep.tag_send(555, vec![1u8; 8]).unwrap();
    let started = std::time::Instant::now();
    while !(hello.is_complete() && sent.is_complete()) && started.elapsed() < TIMEOUT {
        client.progress();
        server.progress();
    }
    assert_eq!(hello.wait().unwrap().length, 8);
    sent.wait().unwrap();
    for _ in 0..1000 {
        client.progress();
        server.progress();
    }
    // The server no longer progresses, so the send cannot end by itself: UCX 1.13 announces it
    // by rendezvous and waits for an answer; UCX 1.22 (protocols v2) sends tags over tcp as
    // eager fragments at every size, and 64 MiB do not fit in loopback's socket buffers.
    let send = ep.tag_send(556, vec![7u8; 64 << 20]).unwrap();
    for _ in 0..1000 {
        client.progress();
    }
    assert!(
        !send.is_complete(),
        "a 64 MiB send to a peer that does not progress ended: {:?}",
        send.wait().map(|done| done.length)
    );
    drop(ep);
    let started = std::time::Instant::now();
    while !send.is_complete() && started.elapsed() < TIMEOUT {
        client.progress();
        server.progress();
    }
    assert!(
        send.is_complete(),
        "the send still runs {TIMEOUT:?} after its endpoint was dropped"
    );
    let ended = send
        .wait()
        .expect_err("the send completed without a receiver");
    assert_eq!(ended.status(), Status::ERR_CANCELED, "{ended}");
    // Both workers see the connection's end before they go: UCX 1.13 aborted the process
    // ("got REP message", ucp_request.c:684; fixed upstream by openucx/ucx#8175) in some runs
    // where the server's worker was destroyed within a millisecond or so of its first progress
    // after the force close; seen only with both workers in one process (30 ping-pong clients
    // connected by worker address and killed mid-transfer left their server running).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        client.progress();
        server.progress();
    }
    drop((client, server));
}
