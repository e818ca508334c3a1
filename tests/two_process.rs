//! Two-process tests: the test binary re-executes itself as a child (the hidden `child_entry`
//! test acts only when `SWUCX_CHILD_ROLE` is set). The child listens on 127.0.0.1:0, prints its
//! port, and serves; the parent connects. Covers shm and tcp, tag / stream / AM (eager and
//! rendezvous) byte-exact, close from either side, and a peer killed with SIGKILL while 64
//! operations are outstanding.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TIMEOUT, Tls, am_inbox, any_local, assert_bytes, next_kept, pattern};
use swucx::{AmFlags, CloseMode, Endpoint, Listener, Worker};

const ROLE_ENV: &str = "SWUCX_CHILD_ROLE";
const SIZES: &[usize] = common::SIZES;
const AM_TO_CHILD: u16 = 1;
const AM_TO_PARENT: u16 = 2;
const AM_CASES: &[(usize, u8)] = &[
    (0, 1),
    (100, 1),
    (65536, 1),
    (100, 2),
    (1 << 20, 0),
    (16 << 20, 2),
    (16 << 20, 0),
];

fn am_flags(code: u8) -> AmFlags {
    match code {
        1 => AmFlags::EAGER,
        2 => AmFlags::RNDV,
        _ => AmFlags::NONE,
    }
}

/// A spawned child that is killed (only this PID) if the test ends early.
struct ChildProc {
    child: Child,
    port: u16,
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildProc {
    fn spawn(role: &str, tls: Tls) -> ChildProc {
        spawn_with_close(role, tls, "parent")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits (bounded) for the child to exit and asserts success.
    fn join(mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "child failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait<B: Send + 'static>(request: swucx::Request<B>, what: &str) -> swucx::Done<B> {
    common::wait_timeout(request, what).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The child side: listens, accepts one connection, then runs `role`.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return; // Not a child: nothing to do.
    };
    let (role, tls) = role.split_once(':').expect("role:tls");
    let tls = Tls::from_name(tls);
    let context = tls.context();
    let worker = Worker::new(&context).expect("worker");
    let inbox = am_inbox(&worker, AM_TO_CHILD);
    let listener = Listener::bind(&worker, any_local()).expect("listen");
    println!("SWUCX_PORT={}", listener.local_addr().unwrap().port());
    let request = listener
        .accept_timeout(TIMEOUT)
        .expect("accept_timeout")
        .expect("no connection");
    let ep = worker.accept(request).expect("accept");
    // Hello, so the parent knows the connection is fully up.
    wait(ep.tag_send(0xAB, b"hello".to_vec()).unwrap(), "hello");
    match role {
        "echo" => {
            echo_script(&worker, &ep, &inbox);
            let close = std::env::var("SWUCX_CHILD_CLOSE").unwrap_or_default();
            finish_child(&worker, &ep, &close);
        }
        "sleeper" => {
            // Accept and never receive: the parent's operations stay outstanding until it kills
            // us. Bounded in case the parent is gone.
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

/// The child's half of the exchange: echo every tag, stream and AM message back.
fn echo_script(worker: &Worker, ep: &Endpoint, inbox: &swucx::AmQueue) {
    for &size in SIZES {
        let got = wait(
            worker.tag_recv(10, u64::MAX, vec![0u8; size]).unwrap(),
            "child tag recv",
        );
        assert_eq!(got.length, size);
        assert_bytes(&got.buffer, &pattern(size, 20), "child tag");
        wait(ep.tag_send(11, got.buffer).unwrap(), "child tag send");
    }
    // Stream size 0 is skipped (nothing to receive).
    for &size in SIZES.iter().filter(|&&s| s > 0) {
        let got = wait(
            ep.stream_recv(vec![0u8; size]).unwrap(),
            "child stream recv",
        );
        assert_bytes(&got.buffer, &pattern(size, 21), "child stream");
        wait(ep.stream_send(got.buffer).unwrap(), "child stream send");
    }
    for &(size, code) in AM_CASES {
        let kept = next_kept(&[worker], inbox, "child AM");
        assert_eq!(kept.header, [code, 0xEE]);
        if code == 2 && size > 0 {
            assert!(kept.rendezvous, "RNDV message must arrive by rendezvous");
        }
        if code == 1 {
            assert!(
                !kept.rendezvous,
                "EAGER message must not arrive by rendezvous"
            );
        }
        if size == 16 << 20 {
            assert!(
                kept.rendezvous,
                "a 16 MiB message must arrive by rendezvous"
            );
        }
        let got = wait(
            kept.desc.recv_into(vec![0u8; size]).unwrap(),
            "child AM recv",
        );
        assert_bytes(&got.buffer, &pattern(size, 22), "child AM");
        let send = ep
            .am_send(AM_TO_PARENT, kept.header, got.buffer, am_flags(code))
            .unwrap();
        wait(send, "child AM send");
    }
}

/// After the script: either close ourselves, or wait for the parent to close.
fn finish_child(worker: &Worker, ep: &Endpoint, close: &str) {
    match close {
        "flush" | "force" => {
            let mode = if close == "flush" {
                CloseMode::Flush
            } else {
                CloseMode::Force
            };
            // Wait for the parent to be ready (it posts a tag "ready" message).
            wait(
                worker.tag_recv(0xCC, u64::MAX, vec![0u8; 5]).unwrap(),
                "ready",
            );
            let ep2 = ep.clone();
            common::bounded(TIMEOUT, "child close", move || ep2.close(mode)).expect("close");
            assert!(ep.tag_send(1, vec![0u8; 4]).is_err());
            // Give the close time to reach the parent before exiting.
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                worker.progress();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        _ => {
            // The parent closes: we see our endpoint fail (disconnect) within the bound.
            common::progress_until(&[worker], "parent close seen by child", || {
                ep.failure().is_some()
            });
            assert!(ep.tag_send(1, vec![0u8; 4]).is_err());
        }
    }
}

/// The parent side of the exchange, checking every echo byte-exact.
fn parent_script(worker: &Worker, ep: &Endpoint, inbox: &swucx::AmQueue) {
    for &size in SIZES {
        let data = pattern(size, 20);
        let recv = worker.tag_recv(11, u64::MAX, vec![0u8; size]).unwrap();
        wait(ep.tag_send(10, data.clone()).unwrap(), "tag send");
        let got = wait(recv, "tag echo");
        assert_eq!(got.length, size);
        assert_bytes(&got.buffer, &data, &format!("tag echo {size}"));
    }
    for &size in SIZES.iter().filter(|&&s| s > 0) {
        let data = pattern(size, 21);
        let recv = ep.stream_recv(vec![0u8; size]).unwrap();
        wait(ep.stream_send(data.clone()).unwrap(), "stream send");
        let got = wait(recv, "stream echo");
        assert_bytes(&got.buffer, &data, &format!("stream echo {size}"));
    }
    for &(size, code) in AM_CASES {
        let data = pattern(size, 22);
        let send = ep
            .am_send(AM_TO_CHILD, vec![code, 0xEE], data.clone(), am_flags(code))
            .unwrap();
        let kept = next_kept(&[worker], inbox, "AM echo");
        wait(send, "AM send");
        if size == 16 << 20 {
            assert!(kept.rendezvous, "a 16 MiB echo must arrive by rendezvous");
        }
        let got = wait(
            kept.desc.recv_into(vec![0u8; size]).unwrap(),
            "AM echo recv",
        );
        assert_bytes(&got.buffer, &data, &format!("AM echo {size} flags {code}"));
    }
}

fn connect(worker: &Worker, child: &ChildProc) -> Endpoint {
    let ep = worker.connect(child.addr()).expect("connect");
    let hello = wait(
        worker.tag_recv(0xAB, u64::MAX, vec![0u8; 5]).unwrap(),
        "hello",
    );
    assert_eq!(hello.buffer, b"hello");
    ep
}

/// `closer`: "parent" closes with flush; "flush"/"force": the child closes with that mode.
fn two_process(tls: Tls, closer: &str) {
    let child = spawn_with_close("echo", tls, closer);
    let context = tls.context();
    let worker = Worker::new(&context).unwrap();
    let inbox = am_inbox(&worker, AM_TO_PARENT);
    let ep = connect(&worker, &child);
    parent_script(&worker, &ep, &inbox);
    if tls == Tls::Shm {
        let transports = ep.transports().unwrap();
        assert!(
            transports.iter().any(|t| t.is_shared_memory()),
            "shm between processes: {transports:?}"
        );
    }
    if closer == "parent" {
        let ep2 = ep.clone();
        common::bounded(TIMEOUT, "parent close", move || ep2.close(CloseMode::Flush))
            .expect("close");
        assert!(ep.tag_send(1, vec![0u8; 4]).is_err());
    } else {
        wait(ep.tag_send(0xCC, b"ready".to_vec()).unwrap(), "ready");
        common::progress_until(&[&worker], "child close seen by parent", || {
            ep.failure().is_some()
        });
        assert!(ep.tag_send(1, vec![0u8; 4]).is_err());
        let ep2 = ep.clone();
        common::bounded(TIMEOUT, "close failed ep", move || {
            ep2.close(CloseMode::Force)
        })
        .expect("close");
    }
    child.join();
}

fn spawn_with_close(role: &str, tls: Tls, close: &str) -> ChildProc {
    // SWUCX_CHILD_CLOSE goes to the child's environment only (Command::env), never ours.
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, format!("{role}:{}", tls.name()))
        .env("SWUCX_CHILD_CLOSE", close)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test child_entry ... " on the same line first.
            if let Some(at) = line.find("SWUCX_PORT=") {
                let port = &line[at + "SWUCX_PORT=".len()..];
                let _ = tx.send(port.trim().parse::<u16>().expect("port"));
            }
        }
    });
    let port = rx
        .recv_timeout(TIMEOUT)
        .expect("child did not report its port");
    ChildProc { child, port }
}

#[test]
fn tcp_parent_closes() {
    two_process(Tls::Tcp, "parent");
}

#[test]
fn tcp_child_closes_flush() {
    two_process(Tls::Tcp, "flush");
}

#[test]
fn shm_parent_closes() {
    two_process(Tls::Shm, "parent");
}

#[test]
fn shm_child_closes_force() {
    two_process(Tls::Shm, "force");
}

/// The child is SIGKILLed while 64 x 1 MiB tag sends (rendezvous, never received) are
/// outstanding: each completes with an error within 2 s of the kill, the endpoint reports the
/// failure, new operations fail, and the same worker then talks to a new child.
fn killed_peer(tls: Tls) {
    let context = tls.context();
    let worker = Worker::new(&context).unwrap();
    let mut child = ChildProc::spawn("sleeper", tls);
    let ep = connect(&worker, &child);
    let sends: Vec<_> = (0..64u64)
        .map(|i| {
            ep.tag_send(0x1000 + i, pattern(1 << 20, i))
                .expect("tag_send")
        })
        .collect();
    for _ in 0..1000 {
        worker.progress();
    }
    assert!(
        sends.iter().all(|s| !s.is_complete()),
        "unreceived rendezvous sends must still be outstanding"
    );
    let failed = std::sync::Arc::new(swucx::Signal::new());
    ep.raise_on_failure(&failed);
    assert!(!failed.is_raised());
    child.child.kill().expect("SIGKILL the child"); // Child::kill sends SIGKILL to this PID.
    let _ = child.child.wait();
    let deadline = Instant::now() + Duration::from_secs(2);
    for (i, send) in sends.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = send.wait_timeout(left).expect("wait_timeout");
        assert!(
            done,
            "{tls:?}: send {i} not completed within 2 s of the kill"
        );
        assert!(send.wait().is_err(), "{tls:?}: send {i} must fail");
    }
    let failure = ep.failure().expect("endpoint must report the failure");
    assert!(failure.is_err(), "{failure:?}");
    assert!(
        failed.is_raised(),
        "{tls:?}: the failure signal must be raised"
    );
    let late = std::sync::Arc::new(swucx::Signal::new());
    ep.raise_on_failure(&late);
    assert!(
        late.is_raised(),
        "{tls:?}: registering on a failed endpoint raises at once"
    );
    assert!(
        ep.tag_send(1, vec![0u8; 8]).is_err(),
        "new operation must fail"
    );
    let ep2 = ep.clone();
    common::bounded(TIMEOUT, "close failed ep", move || {
        ep2.close(CloseMode::Force)
    })
    .expect("close");
    drop(child);

    // The survivor: the same worker connects to a new child and exchanges messages.
    let child = spawn_with_close("echo", tls, "parent");
    let inbox = am_inbox(&worker, AM_TO_PARENT);
    let ep = connect(&worker, &child);
    parent_script(&worker, &ep, &inbox);
    let ep2 = ep.clone();
    common::bounded(TIMEOUT, "parent close", move || ep2.close(CloseMode::Flush)).expect("close");
    child.join();
}

#[test]
fn sigkill_tcp() {
    killed_peer(Tls::Tcp);
}

#[test]
fn sigkill_shm() {
    killed_peer(Tls::Shm);
}
