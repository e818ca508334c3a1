//! Two-process tests: the test binary re-executes itself as a child (the hidden `child_entry`
//! test acts only when `SWUCX_CHILD_ROLE` is set). The child listens on 127.0.0.1:0, prints its
//! port, and serves; the parent connects. Covers shm and tcp, tag / stream / AM (eager and
//! rendezvous) byte-exact, close from either side, a peer killed with SIGKILL while 64
//! operations are outstanding, and a peer whose host vanishes (a child in a network namespace
//! of its own whose link goes down: no FIN, no RST).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TIMEOUT, Tls, am_inbox, any_local, assert_bytes, next_kept, pattern};
use swucx::{AmFlags, CloseMode, Context, Endpoint, Listener, Worker};

const ROLE_ENV: &str = "SWUCX_CHILD_ROLE";
/// Set in the process `vanished_peer_tcp` runs itself in.
const FRESH_ENV: &str = "SWUCX_TEST_FRESH_PROCESS";
/// Set for a child in a namespace of its own: "device@ip" of its end of the veth pair.
const VETH_ENV: &str = "SWUCX_CHILD_VETH";
const SIZES: &[usize] = common::SIZES;
/// The tag of the child's worker address (role "address-watcher").
const ADDRESS_TAG: u64 = 0xAD;
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
    ip: IpAddr,
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
        SocketAddr::new(self.ip, self.port)
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
    // In a namespace of its own (Veth): tcp on its end of the pair, listening on its address.
    let veth = std::env::var(VETH_ENV).ok();
    let (context, listen) = match veth.as_deref().map(|v| v.split_once('@').expect("dev@ip")) {
        Some((device, ip)) => (
            veth_context(device, false),
            SocketAddr::new(ip.parse().expect("child ip"), 0),
        ),
        None => (Tls::from_name(tls).context(), any_local()),
    };
    let worker = Worker::new(&context).expect("worker");
    let inbox = am_inbox(&worker, AM_TO_CHILD);
    let listener = Listener::bind(&worker, listen).expect("listen");
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
        "watcher" | "address-watcher" => {
            if role == "address-watcher" {
                // The parent moves its sends to an endpoint it connects by this address.
                let address = worker.address().expect("worker address");
                wait(
                    ep.tag_send(ADDRESS_TAG, address.as_bytes().to_vec())
                        .unwrap(),
                    "address",
                );
            }
            // Never receive, and exit successfully only once this side's endpoint failed (the
            // parent cut the link): the accepting side notices a vanished peer too.
            let failed = std::sync::Arc::new(swucx::Signal::new());
            ep.raise_on_failure(&failed);
            common::progress_until(&[&worker], "the parent's failure", || failed.is_raised());
            println!("SWUCX_PEER_FAILED");
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
    spawn_child(role, tls, close, None)
}

/// Spawns the child, in `veth`'s namespace when given (`ip netns exec` execs the test binary
/// in the same process, so the PID is the child's).
fn spawn_child(role: &str, tls: Tls, close: &str, veth: Option<&Veth>) -> ChildProc {
    // SWUCX_CHILD_CLOSE goes to the child's environment only (Command::env), never ours.
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = match veth {
        Some(v) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &v.namespace]).arg(exe);
            c.env(VETH_ENV, format!("{}@{}", v.inner_device, v.inner_ip));
            c
        }
        None => Command::new(exe),
    };
    let mut child = command
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
    let ip = veth.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |v| IpAddr::V4(v.inner_ip));
    ChildProc { child, ip, port }
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

/// Posts 64 x 1 MiB tag sends the child never receives (rendezvous: they stay outstanding).
fn pending_sends(worker: &Worker, ep: &Endpoint) -> Vec<swucx::Request<Vec<u8>>> {
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
    sends
}

/// Every send completes with an error within `limit` of `event` (which just happened). Returns
/// how many swucx detached (UCX still held them; `Request::is_detached`).
fn all_fail_within(sends: Vec<swucx::Request<Vec<u8>>>, limit: Duration, event: &str) -> usize {
    let deadline = Instant::now() + limit;
    let mut detached = 0;
    for (i, send) in sends.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = send.wait_timeout(left).expect("wait_timeout");
        assert!(done, "send {i} not completed within {limit:?} of {event}");
        let was_detached = send.is_detached();
        let err = send
            .wait()
            .expect_err(&format!("send {i} must fail after {event}"));
        assert!(err.status().is_err(), "{err}");
        detached += usize::from(was_detached);
    }
    detached
}

/// The child is SIGKILLed while 64 x 1 MiB tag sends (rendezvous, never received) are
/// outstanding: each completes with an error within 2 s of the kill, the endpoint reports the
/// failure, new operations fail, and the same worker then talks to a new child.
fn killed_peer(tls: Tls) {
    let context = tls.context();
    let worker = Worker::new(&context).unwrap();
    let mut child = ChildProc::spawn("sleeper", tls);
    let ep = connect(&worker, &child);
    let sends = pending_sends(&worker, &ep);
    let failed = std::sync::Arc::new(swucx::Signal::new());
    ep.raise_on_failure(&failed);
    assert!(!failed.is_raised());
    child.child.kill().expect("SIGKILL the child"); // Child::kill sends SIGKILL to this PID.
    let _ = child.child.wait();
    let detached = all_fail_within(sends, Duration::from_secs(2), &format!("{tls:?}, the kill"));
    if tls == Tls::Shm && swucx::ucx_release() == (1, 13) {
        // UCX 1.13 keeps rendezvous sends whose RTS went out over shared memory for good (its
        // request pool reports them unreturned when the worker goes): they end detached, their
        // buffers left to UCX.
        assert!(detached > 0, "UCX 1.13 leaves shm sends pending");
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

/// As `killed_peer`, but the endpoint is gone before the kill: its last clone dropped (which
/// starts a flush close in the background), or closed with flush on a thread of its own (the
/// close cannot finish while the sends are outstanding). The worker must still fail what UCX
/// leaves pending: every send ends with an error within 2 s of the kill, and a close that was
/// waiting returns.
fn killed_peer_after_close(tls: Tls, dropped: bool) {
    let context = tls.context();
    let worker = Worker::new(&context).unwrap();
    let mut child = ChildProc::spawn("sleeper", tls);
    let ep = connect(&worker, &child);
    let sends = pending_sends(&worker, &ep);
    let closer = if dropped {
        drop(ep);
        None
    } else {
        let closer = std::thread::spawn(move || ep.close(CloseMode::Flush));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!closer.is_finished(), "a flush close waits for the sends");
        Some(closer)
    };
    for _ in 0..1000 {
        worker.progress();
    }
    child.child.kill().expect("SIGKILL the child");
    let _ = child.child.wait();
    all_fail_within(sends, Duration::from_secs(2), &format!("{tls:?}, the kill"));
    if let Some(closer) = closer {
        let deadline = Instant::now() + TIMEOUT;
        while !closer.is_finished() {
            assert!(Instant::now() < deadline, "the flush close did not return");
            worker.progress();
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = closer.join().expect("close thread");
    }
}

#[test]
fn sigkill_shm_after_drop() {
    killed_peer_after_close(Tls::Shm, true);
}

#[test]
fn sigkill_shm_during_flush_close() {
    killed_peer_after_close(Tls::Shm, false);
}

#[test]
fn sigkill_tcp_after_drop() {
    killed_peer_after_close(Tls::Tcp, true);
}

#[test]
fn sigkill_tcp() {
    killed_peer(Tls::Tcp);
}

#[test]
fn sigkill_shm() {
    killed_peer(Tls::Shm);
}

/// A network namespace joined to this one by a veth pair, standing for a second host: the
/// child runs inside, the parent talks to it over tcp on the pair. Names and the /30 subnet
/// come from this process's PID, so parallel test binaries do not collide; dropping it deletes
/// the namespace, which removes the pair. Needs root and iproute2 (`ip netns`).
struct Veth {
    namespace: String,
    outer_device: String,
    inner_device: String,
    inner_ip: Ipv4Addr,
}

impl Veth {
    fn create() -> Veth {
        let pid = std::process::id();
        let base = 4 * (pid % (1 << 14));
        let subnet =
            |host: u32| Ipv4Addr::new(10, 231, (base >> 8) as u8, (base & 0xff) as u8 + host as u8);
        let veth = Veth {
            namespace: format!("swucx-test-{pid}"),
            outer_device: format!("swxo{pid}"),
            inner_device: format!("swxi{pid}"),
            inner_ip: subnet(2),
        };
        let (ns, outer, inner) = (&veth.namespace, &veth.outer_device, &veth.inner_device);
        let outer_cidr = format!("{}/30", subnet(1));
        let inner_cidr = format!("{}/30", veth.inner_ip);
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns,
        ]);
        ip(&["addr", "add", &outer_cidr, "dev", outer]);
        ip(&["link", "set", outer, "up"]);
        ip(&["-n", ns, "addr", "add", &inner_cidr, "dev", inner]);
        ip(&["-n", ns, "link", "set", inner, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        veth
    }

    /// The far end's link goes down: from here the child's host has vanished (packets to it
    /// are dropped, nothing answers, nothing is reset).
    fn cut(&self) {
        ip(&[
            "-n",
            &self.namespace,
            "link",
            "set",
            &self.inner_device,
            "down",
        ]);
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2; scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// tcp only, on `device`: both ends of the veth pair. 1 MiB goes by rendezvous (UCX 1.22 sent
/// it eagerly over a veth device by its own threshold), so unreceived sends stay pending.
/// `by_address`: for endpoints connected by worker address, which UCX 1.22 gives no lane for
/// rendezvous by tcp put (swucx's `RNDV_SCHEME` default over tcp): its own choice instead.
fn veth_context(device: &str, by_address: bool) -> Context {
    let builder = Context::builder()
        .name("swucx-test-veth")
        .config("TLS", "tcp")
        .config("NET_DEVICES", device)
        .config("RNDV_THRESH", "64k");
    let builder = if by_address {
        builder.config("RNDV_SCHEME", "auto")
    } else {
        builder
    };
    builder.build().expect("create UCX context")
}

/// Runs the test `name` again in a process of its own and returns true (its caller returns);
/// false in that process, which runs the test. The vanished-peer tests need one: UCX 1.22
/// reads the routing table once per process (`ucs_netlink`'s cache) and then finds no route
/// over a veth pair made after the process's first tcp connection.
fn rerun_in_fresh_process(name: &str) -> bool {
    if std::env::var_os(FRESH_ENV).is_some() {
        return false;
    }
    let status = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(FRESH_ENV, "1")
        .status()
        .unwrap_or_else(|e| panic!("run {name} in a process of its own: {e}"));
    assert!(status.success(), "{name}: {status}");
    true
}

/// The child's host vanishes while 64 x 1 MiB tag sends (rendezvous, never received) are
/// outstanding: no FIN or RST ever comes. Every send fails within 8 s of the cut (16 s by
/// address, where swucx's 10 s `UCX_TCP_USER_TIMEOUT` tells; UCX alone left them pending for
/// minutes), and the child's side of the connection fails as well.
/// `by_address`: the sends go over an endpoint connected by the child's worker address
/// (which has no connection-setup socket), not over the one made through its listener.
fn vanished_peer(by_address: bool) {
    let veth = Veth::create();
    let context = veth_context(&veth.outer_device, by_address);
    let worker = Worker::new(&context).unwrap();
    let role = if by_address {
        "address-watcher"
    } else {
        "watcher"
    };
    let child = spawn_child(role, Tls::Tcp, "parent", Some(&veth));
    let cm_ep = connect(&worker, &child);
    let ep = if by_address {
        let address = wait(
            worker
                .tag_recv(ADDRESS_TAG, u64::MAX, vec![0u8; 4096])
                .unwrap(),
            "the child's worker address",
        );
        let mut bytes = address.buffer;
        bytes.truncate(address.length);
        // SAFETY: the whole address the child's worker gave (one tag message, length checked
        // by the receive), from a trusted peer: our own child.
        let address = unsafe { swucx::WorkerAddress::from_bytes(bytes) };
        worker.connect_address(&address).expect("connect_address")
    } else {
        cm_ep.clone()
    };
    let sends = pending_sends(&worker, &ep);
    veth.cut();
    let cut = Instant::now();
    let limit = Duration::from_secs(if by_address { 16 } else { 8 });
    all_fail_within(sends, limit, "the cut");
    eprintln!(
        "vanished peer (by address: {by_address}): every send failed {:?} after the cut",
        cut.elapsed()
    );
    for ep in [&ep, &cm_ep] {
        assert!(
            ep.failure().is_some_and(|f| f.is_err()),
            "the endpoint must report the failure"
        );
        let ep2 = ep.clone();
        common::bounded(TIMEOUT, "close failed ep", move || {
            ep2.close(CloseMode::Force)
        })
        .expect("close");
    }
    child.join();
}

/// A vanished peer over the connection made through its listener: only the keepalive swucx
/// arms on the connection's setup socket can tell (src/keepalive.rs).
#[test]
fn vanished_peer_tcp() {
    if !rerun_in_fresh_process("vanished_peer_tcp") {
        vanished_peer(false);
    }
}

/// A vanished peer over an endpoint connected by worker address: swucx's default
/// `UCX_TCP_USER_TIMEOUT` (10 s) bounds how long sent data may go unacknowledged. Releases
/// before 1.22 have no such setting (such endpoints wait out TCP's retransmissions there): the
/// test runs on 1.22 (`make compat`) and newer.
#[test]
fn vanished_peer_by_address_tcp() {
    if rerun_in_fresh_process("vanished_peer_by_address_tcp") {
        return;
    }
    // Where swucx's default applies (UCX 1.13 takes the name and warns, so it goes by release).
    let default = swucx::DEFAULT_CONFIG
        .iter()
        .find(|s| s.env.contains(&"TCP_USER_TIMEOUT"))
        .expect("swucx's UCX_TCP_USER_TIMEOUT default");
    if swucx::ucx_release() < default.since {
        eprintln!(
            "vanished_peer_by_address_tcp: skipped, UCX {} has no UCX_TCP_USER_TIMEOUT",
            swucx::ucx_version()
        );
        return;
    }
    vanished_peer(true);
}
