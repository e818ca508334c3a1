//! The `swucx` binary: `swucx serve` stops cleanly on SIGTERM and SIGINT, takes the read-JWT key
//! from weed's configuration the way weed finds it (or a flag or key file; warning when there is
//! none, refusing an empty one), and refuses transports whose active-message headers are too
//! short for the protocol, and exports its counters as Prometheus metrics; `swucx read` reads
//! through it. The volume is written here in weed's
//! format (no weed needed). Every process started is killed by PID on drop, and
//! waits are bounded.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use swucx::seaweed::needle::NeedleBuilder;
use swucx::seaweed::{FileId, IndexEntry, NeedleVersion, OffsetWidth, ReadKey, SuperBlock, Ttl};

mod common;
use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_swucx");
/// The longest wait for a process to print its address or to exit (a bound, not a measurement).
const BOUND: Duration = Duration::from_secs(60);

/// Writes volume `vid` into `dir` as weed does: superblock, needles, one `.idx` row each.
fn write_volume(dir: &Path, vid: u32, needles: &[(FileId, Vec<u8>)]) {
    let sb = SuperBlock {
        version: NeedleVersion::V3,
        replica_placement: 0,
        ttl: Ttl::NONE,
        compaction_revision: 0,
        extra_size: 0,
    };
    let mut dat = sb.to_bytes().to_vec();
    let mut idx = Vec::new();
    for (fid, data) in needles {
        let (bytes, size) = NeedleBuilder {
            id: fid.needle_id,
            cookie: fid.cookie,
            data: data.clone(),
            ..Default::default()
        }
        .build(NeedleVersion::V3);
        let entry = IndexEntry {
            needle_id: fid.needle_id,
            offset_units: dat.len() as u64 / 8,
            size: size as i32,
        };
        idx.extend(entry.to_bytes(OffsetWidth::Four));
        dat.extend(bytes);
    }
    std::fs::write(dir.join(format!("{vid}.dat")), dat).unwrap();
    std::fs::write(dir.join(format!("{vid}.idx")), idx).unwrap();
    std::fs::write(
        dir.join(format!("{vid}.vif")),
        r#"{"version":3,"bytesOffset":4}"#,
    )
    .unwrap();
}

/// A volume directory with one needle, inside a temp dir that also serves as cwd and HOME.
struct Setup {
    tmp: TempDir,
    volumes: PathBuf,
    fid: FileId,
    data: Vec<u8>,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let tmp = TempDir::new(&format!("cli-{tag}"));
        let volumes = tmp.0.join("volumes");
        std::fs::create_dir_all(&volumes).unwrap();
        let fid = FileId::new(7, 0x1234, 0x89ab_cdef);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        write_volume(&volumes, 7, &[(fid, data.clone())]);
        Setup {
            tmp,
            volumes,
            fid,
            data,
        }
    }

    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(&self.tmp.0)
            .env("HOME", &self.tmp.0)
            .env_remove("WEED_JWT_SIGNING_READ_KEY")
            .env_remove("RUST_LOG")
            .env("UCX_TLS", "tcp,self")
            .env("UCX_NET_DEVICES", "lo")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Starts `swucx serve` on a free port with `args` after the defaults.
    fn serve(&self, args: &[&str], env: &[(&str, &str)]) -> Serve {
        self.serve_on("127.0.0.1:0", args, env)
    }

    /// Starts `swucx serve --listen listen` with `args` after the defaults.
    fn serve_on(&self, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        self.spawn_serve(self.command(env), listen, args)
    }

    /// Starts `swucx serve` on a free port under an open-files limit of `nofile`.
    fn serve_with_open_files(&self, nofile: u64, args: &[&str]) -> Serve {
        use std::os::unix::process::CommandExt;
        let mut command = self.command(&[]);
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.spawn_serve(command, "127.0.0.1:0", args)
    }

    /// Starts `command` as `swucx serve --listen listen` with `args` after the defaults.
    fn spawn_serve(&self, mut command: Command, listen: &str, args: &[&str]) -> Serve {
        let log = self.tmp.0.join(format!(
            "serve-{}.log",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = command
            .args(["serve", "--listen", listen, "--dir"])
            .arg(&self.volumes)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start swucx serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = log.with_extension("out");
        std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            // UCX logs to stdout: the rest goes to a file `stderr()` reads too.
            if let Ok(mut file) = std::fs::File::create(out) {
                let _ = std::io::copy(&mut stdout, &mut file);
            }
        });
        let line = rx.recv_timeout(BOUND).unwrap_or_default();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_string);
        Serve {
            child,
            log,
            addr,
            banner: line,
        }
    }

    fn read(&self, addr: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.read_within(addr, "30", args, env)
    }

    /// `swucx read --timeout-secs timeout_secs` of the needle (the option may be given once).
    fn read_within(
        &self,
        addr: &str,
        timeout_secs: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let fid = self.fid.to_string();
        self.command(env)
            .args([
                "read",
                "--timeout-secs",
                timeout_secs,
                "--server",
                addr,
                &fid,
            ])
            .args(args)
            .output()
            .expect("run swucx read")
    }
}

/// A running `swucx serve`, killed on drop.
struct Serve {
    child: Child,
    log: PathBuf,
    /// The address it printed, if it started.
    addr: Option<String>,
    /// The line it printed when it started listening.
    banner: String,
}

impl Serve {
    fn addr(&self) -> &str {
        self.addr
            .as_deref()
            .unwrap_or_else(|| panic!("swucx serve did not start:\n{}", self.stderr()))
    }

    /// What it wrote to stderr, then what UCX logged to its stdout after the banner.
    fn stderr(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text += &std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default();
        text
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < BOUND,
                "swucx serve did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Also: a server restarted right after one stopped gets its port back. The second run listens
/// on the first one's address, where a connection that was open when the first stopped (a bare
/// TCP connection to the listener, closed by the server first) left a TIME_WAIT socket. The
/// second runs three threads: three reads (three connections) are served one by each, and
/// every thread finishes.
#[test]
fn serve_stops_cleanly_on_sigterm_sigint_and_sighup() {
    let setup = Setup::new("signals");
    let mut previous: Option<String> = None;
    for (signal, name, threads) in [
        (libc::SIGTERM, "SIGTERM", 1),
        (libc::SIGINT, "SIGINT", 3),
        (libc::SIGHUP, "SIGHUP", 1),
    ] {
        let threads_arg = threads.to_string();
        let args = ["--threads", threads_arg.as_str()];
        let mut serve = match &previous {
            Some(addr) => setup.serve_on(addr, &args, &[]),
            None => setup.serve(&args, &[]),
        };
        let addr = serve.addr().to_string();
        if let Some(before) = &previous {
            assert_eq!(&addr, before, "{name}: restarted on another address");
        }
        previous = Some(addr.clone());
        let open_connection = std::net::TcpStream::connect(&addr).expect("connect to the listener");
        for _ in 0..threads {
            let out = setup.read(&addr, &[], &[]);
            assert!(out.status.success(), "{name}: read: {}", stderr(&out));
            assert!(out.stdout == setup.data, "{name}: bytes differ");
        }
        serve.signal(signal);
        let status = serve.wait();
        let log = serve.stderr();
        assert!(status.success(), "{name}: exit {status}:\n{log}");
        for lane in 0..threads {
            for line in [
                format!("connected (lane {lane})"),
                format!("stopped: every reply finished (lane {lane})"),
            ] {
                assert!(log.contains(&line), "{name}: no line {line:?}:\n{log}");
            }
        }
        assert!(
            log.contains("stopping: no new connections"),
            "{name}: no stopping line:\n{log}"
        );
        assert!(
            log.contains(&format!("swucx serve: stopped on {name}")),
            "{name}: no stopped line:\n{log}"
        );
        drop(open_connection);
        // Nothing answers there any more.
        let out = setup.read_within(&addr, "5", &[], &[]);
        assert!(!out.status.success(), "{name}: a stopped server answered");
        assert!(
            stderr(&out).contains("connect"),
            "{name}: not a connection failure: {}",
            stderr(&out)
        );
    }
}

/// A timeout too long to add to the clock (`u64::MAX` seconds) waits without end instead of
/// overflowing the deadline.
#[test]
fn read_takes_a_timeout_past_the_clock() {
    let setup = Setup::new("timeout");
    let serve = setup.serve(&[], &[]);
    let out = setup.read_within(serve.addr(), &u64::MAX.to_string(), &[], &[]);
    assert!(out.status.success(), "read: {}", stderr(&out));
    assert!(out.stdout == setup.data, "bytes differ");
}

/// Against a port that accepts TCP but is no needle server (it never answers), `swucx read`
/// gives up after its timeout, not seconds later waiting for a graceful close; and a timeout
/// of 0 is refused.
#[test]
fn read_gives_up_on_a_silent_peer_at_its_timeout() {
    let setup = Setup::new("silent");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let started = Instant::now();
    let out = setup.read_within(&addr, "1", &[], &[]);
    let took = started.elapsed();
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("no reply within 1s"),
        "{err}"
    );
    assert!(!err.contains("leaking"), "{err}");
    // A graceful close used to add 5 s.
    assert!(took < Duration::from_secs(4), "took {took:?}: {err}");
    let zero = setup.read_within(&addr, "0", &[], &[]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
    held.join().unwrap();
}

#[test]
fn serve_takes_the_read_key_from_weeds_configuration() {
    let setup = Setup::new("jwt");
    let fid = setup.fid.to_string();
    let token = |key: &str| ReadKey::new(key).mint(&fid, 4_000_000_000);
    let write_toml = |dir: &Path, key: &str| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("security.toml"),
            format!("[jwt.signing]\nkey = \"write\"\n\n[jwt.signing.read]\nkey = \"{key}\"\n"),
        )
        .unwrap();
    };
    // Serves with `args`/`env`; checks the line naming the key's source, that a read without a
    // token is refused, that a token signed with `key` is accepted and one with `wrong` refused.
    let check = |args: &[&str], env: &[(&str, &str)], key: &str, source: &str, wrong: &str| {
        let mut serve = setup.serve(args, env);
        let addr = serve.addr().to_string();
        let ok = setup.read(&addr, &["--jwt", &token(key)], &[]);
        let missing = setup.read(&addr, &[], &[]);
        let other = setup.read(&addr, &["--jwt", &token(wrong)], &[]);
        serve.signal(libc::SIGTERM);
        assert!(serve.wait().success());
        let log = serve.stderr();
        assert!(
            log.contains(&format!("read JWTs required (key from {source})")),
            "{source}:\n{log}"
        );
        assert!(ok.status.success(), "{source}: {}", stderr(&ok));
        assert!(ok.stdout == setup.data);
        for (case, out) in [("no token", &missing), ("wrong key", &other)] {
            assert!(!out.status.success(), "{source}: {case} accepted");
            assert!(
                stderr(out).contains("Unauthorized"),
                "{source}: {case}: {}",
                stderr(out)
            );
        }
    };
    // No configuration anywhere weed looks: no token needed (if the machine has none in
    // /usr/local/etc/seaweedfs or /etc/seaweedfs).
    let system_config = ["/usr/local/etc/seaweedfs", "/etc/seaweedfs"]
        .iter()
        .any(|d| Path::new(d).join("security.toml").exists());
    if !system_config {
        let mut serve = setup.serve(&[], &[]);
        let out = setup.read(serve.addr(), &[], &[]);
        serve.signal(libc::SIGTERM);
        assert!(serve.wait().success());
        assert!(out.status.success(), "no key: {}", stderr(&out));
        let log = serve.stderr();
        assert!(!log.contains("read JWTs required"), "{log}");
        // Said loudly, with where it looked.
        let home_file = setup.tmp.0.join(".seaweedfs/security.toml");
        for line in [
            "WARNING: read JWTs are NOT checked",
            "WEED_JWT_SIGNING_READ_KEY",
            "./security.toml",
            &home_file.display().to_string(),
            "/etc/seaweedfs/security.toml",
        ] {
            assert!(log.contains(line), "no key: no {line:?}:\n{log}");
        }
    }
    // $HOME/.seaweedfs/security.toml.
    let home = setup.tmp.0.join(".seaweedfs");
    write_toml(&home, "home-key");
    let home_file = home.join("security.toml").display().to_string();
    check(&[], &[], "home-key", &home_file, "cwd-key");
    // ./security.toml comes first.
    write_toml(&setup.tmp.0, "cwd-key");
    check(&[], &[], "cwd-key", "./security.toml", "home-key");
    // The environment wins over the files; an empty variable is ignored (as viper does).
    let env = [("WEED_JWT_SIGNING_READ_KEY", "env-key")];
    check(&[], &env, "env-key", "WEED_JWT_SIGNING_READ_KEY", "cwd-key");
    let empty = [("WEED_JWT_SIGNING_READ_KEY", "")];
    check(&[], &empty, "cwd-key", "./security.toml", "env-key");
    // --jwt-read-key wins over everything.
    let flag = ["--jwt-read-key", "flag-key"];
    check(&flag, &env, "flag-key", "--jwt-read-key", "env-key");
    // So does --jwt-read-key-file, whose trailing newline is not part of the key.
    let key_file = setup.tmp.0.join("read.key");
    std::fs::write(&key_file, "file-key\n").unwrap();
    let path = key_file.display().to_string();
    let source = format!("--jwt-read-key-file {path}");
    check(
        &["--jwt-read-key-file", &path],
        &env,
        "file-key",
        &source,
        "env-key",
    );
}

/// An empty key would check nothing: `swucx serve` refuses to start with one, given by flag or
/// file, and with both flags or an unreadable key file.
#[test]
fn serve_refuses_an_empty_or_ambiguous_read_key() {
    let setup = Setup::new("jwt-refused");
    let empty_file = setup.tmp.0.join("empty.key");
    std::fs::write(&empty_file, "\n").unwrap();
    let empty_file = empty_file.display().to_string();
    let missing_file = setup.tmp.0.join("missing.key").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["--jwt-read-key", ""], "--jwt-read-key: the key is empty"),
        (
            &["--jwt-read-key-file", &empty_file],
            "the key is empty, which would check no read JWT",
        ),
        (&["--jwt-read-key-file", &missing_file], &missing_file),
        (
            &["--jwt-read-key", "k", "--jwt-read-key-file", &empty_file],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let mut serve = setup.serve(args, &[]);
        let status = serve.wait();
        let log = serve.stderr();
        assert!(serve.addr.is_none() && !status.success(), "{args:?}: {log}");
        assert!(log.contains(want), "{args:?}: no {want:?}:\n{log}");
    }
}

/// `swucx serve` leaves the kernel's ptrace rules alone unless asked, and says at start who can
/// make direct reads under them.
#[test]
fn serve_says_who_may_make_direct_reads() {
    let setup = Setup::new("ptrace");
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    let start = |args: &[&str]| {
        let mut serve = setup.serve(args, &[]);
        // A read first, so the server is surely serving when the signal comes.
        let out = setup.read(serve.addr(), &[], &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serve.signal(libc::SIGTERM);
        assert!(serve.wait().success());
        serve.stderr()
    };
    let log = start(&[]);
    let want = match scope {
        None => "direct reads: no Yama: processes of this user",
        Some(0) => "direct reads: Yama ptrace_scope 0: processes of this user",
        Some(1) => "direct reads: Yama ptrace_scope 1: clients cannot read",
        Some(_) => "direct reads: Yama ptrace_scope",
    };
    assert!(log.contains(want), "no {want:?}:\n{log}");
    assert!(!log.contains("PR_SET_PTRACER_ANY set"), "{log}");
    // Asked for, it is tried (without Yama the kernel refuses it: nothing to widen).
    let log = start(&["--direct-reads-ptracer-any"]);
    let want = match scope {
        None => "PR_SET_PTRACER_ANY not set",
        Some(_) => "PR_SET_PTRACER_ANY set",
    };
    assert!(log.contains(want), "no {want:?}:\n{log}");
    // No direct reads, nothing to say about them.
    let log = start(&["--no-direct-reads"]);
    assert!(!log.contains("direct reads:"), "{log}");
    let mut serve = setup.serve(&["--no-direct-reads", "--direct-reads-ptracer-any"], &[]);
    assert!(!serve.wait().success() && serve.stderr().contains("cannot be used with"));
}

#[test]
fn transports_with_short_am_headers_are_refused() {
    let setup = Setup::new("amheader");
    // A 2 KiB tcp segment leaves about 2000 bytes of AM header; the protocol needs 4144.
    let short = [("UCX_TLS", "tcp"), ("UCX_TCP_TX_SEG_SIZE", "2k")];
    let mut serve = setup.serve(&[], &short);
    let status = serve.wait();
    let log = serve.stderr();
    assert!(serve.addr.is_none() && !status.success(), "{log}");
    assert!(
        log.contains("active-message headers of at most") && log.contains("needs 4144"),
        "{log}"
    );
    // The client checks too, before it connects; a normal server is there.
    let mut serve = setup.serve(&[], &[]);
    let out = setup.read(serve.addr(), &[], &short);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("active-message headers of at most"),
        "{}",
        stderr(&out)
    );
    let out = setup.read(serve.addr(), &[], &[]);
    assert!(out.status.success() && out.stdout == setup.data);
    serve.signal(libc::SIGTERM);
    assert!(serve.wait().success());
}

/// `GET path` over HTTP/1.0 from `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    conn.set_read_timeout(Some(BOUND)).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// `--metrics-listen`: the counters of what was served, in Prometheus' text format.
#[test]
fn serve_exports_metrics() {
    let setup = Setup::new("metrics");
    let mut serve = setup.serve(&["--metrics-listen", "127.0.0.1:0"], &[]);
    let addr = serve.addr().to_string();
    let metrics = serve
        .banner
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {:?}", serve.banner))
        .to_string();
    let out = setup.read(&addr, &[], &[]);
    assert!(out.status.success(), "read: {}", stderr(&out));
    let missing = FileId::new(7, 0x99, 0x89ab_cdef).to_string();
    let out = setup
        .command(&[])
        .args(["read", "--timeout-secs", "30", "--server", &addr, &missing])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a missing needle was read");
    let (status, body) = http_get(&metrics, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    for line in [
        "swucx_serve_replies_total{status=\"ok\"} 1\n".to_string(),
        "swucx_serve_replies_total{status=\"not_found\"} 1\n".to_string(),
        "swucx_serve_replies_total{status=\"busy\"} 0\n".to_string(),
        format!("swucx_serve_payload_bytes_total {}\n", setup.data.len()),
        "swucx_serve_connections_accepted_total 2\n".to_string(),
        "swucx_serve_connections_rejected_total 0\n".to_string(),
    ] {
        assert!(body.contains(&line), "no {line:?} in:\n{body}");
    }
    assert!(http_get(&metrics, "/").0.contains(" 404 "));
    serve.signal(libc::SIGTERM);
    assert!(serve.wait().success(), "{}", serve.stderr());
}

/// Under an open-files limit too small for `--max-connections`, the server lowers it (with a
/// warning) and rejects connections past it, instead of running out of descriptors (UCX then
/// aborts, or accepts no one for good); once the clients leave it serves again.
#[test]
fn serve_keeps_connections_within_the_open_files_limit() {
    let setup = Setup::new("nofile");
    // 256 spare, 3 per connection: room for a few connections past what is open at start.
    let serve = setup.serve_with_open_files(300, &["--max-connections", "1000"]);
    let addr: std::net::SocketAddr = serve.addr().parse().unwrap();
    assert!(serve.banner.contains(", 1 volume in "), "{}", serve.banner);
    let err = serve.stderr();
    let fits: usize = err
        .split("--max-connections 1000 lowered to ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no warning about the open-files limit:\n{err}"));
    assert!((1..=14).contains(&fits), "{fits} connections fit:\n{err}");
    let context = swucx::Context::builder()
        .config("TLS", "tcp,self")
        .config("NET_DEVICES", "lo")
        .build()
        .unwrap();
    let timeout = Duration::from_secs(30);
    let mut served = Vec::new();
    let mut rejected = 0;
    for _ in 0..fits + 20 {
        let client = swucx::seaweed::NeedleClient::connect(&context, addr).unwrap();
        match client.read(&setup.fid, 0, 0, timeout) {
            Ok(got) => {
                assert!(got.data == setup.data);
                served.push(client);
            }
            Err(_) => rejected += 1,
        }
    }
    assert_eq!(served.len(), fits, "{}", serve.stderr());
    assert_eq!(rejected, 20);
    drop(served);
    let deadline = Instant::now() + BOUND;
    loop {
        let client = swucx::seaweed::NeedleClient::connect(&context, addr).unwrap();
        match client.read(&setup.fid, 0, 0, timeout) {
            Ok(got) => {
                assert!(got.data == setup.data);
                break;
            }
            Err(e) if Instant::now() > deadline => panic!("no read after the clients left: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(serve.stderr().contains("rejected"), "{}", serve.stderr());
}

/// A read the server fails (here: a `.dat` cut short under its index) is answered INTERNAL and
/// logged with its file id and cause, for the operator.
#[test]
fn serve_logs_the_reads_it_fails() {
    let setup = Setup::new("internal");
    let dat = setup.volumes.join("7.dat");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dat)
        .unwrap()
        .set_len(100)
        .unwrap();
    let serve = setup.serve(&[], &[]);
    let out = setup.read(serve.addr(), &[], &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("Internal"),
        "{}",
        stderr(&out)
    );
    let fid = setup.fid.to_string();
    let deadline = Instant::now() + BOUND;
    while !serve.stderr().contains(&format!("read of {fid}: ")) {
        assert!(Instant::now() < deadline, "not logged:\n{}", serve.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        serve.stderr().contains("answered INTERNAL"),
        "{}",
        serve.stderr()
    );
}

/// More than UCX's default 1,024 async event handlers' worth of sockets: 1,100 TCP connections
/// to the listening port that never start UCX's handshake, held, then closed, followed by
/// ordinary clients. With UCX's default limit the server closed refused sockets twice ("failed
/// to close fd") and crashed within a few clients (a hostile peer's attack); swucx raises the
/// limit, and the server serves every read afterwards.
#[test]
fn serve_survives_more_idle_sockets_than_ucx_had_handlers_for() {
    let setup = Setup::new("sockets");
    let serve = setup.serve(&[], &[]);
    // This process holds the sockets: its soft open-files limit up to the hard one.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 1300,
        "open-files limit {}",
        limit.rlim_cur
    );
    let sockets: Vec<_> = (0..1100)
        .map(|_| std::net::TcpStream::connect(serve.addr()).expect("a TCP connection"))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    drop(sockets);
    for i in 0..20 {
        let out = setup.read(serve.addr(), &["-o", "/dev/null"], &[]);
        assert!(
            out.status.success(),
            "read {i} after the idle sockets: {}\nserver:\n{}",
            stderr(&out),
            serve.stderr()
        );
    }
    assert!(
        !serve.stderr().contains("failed to close fd"),
        "{}",
        serve.stderr()
    );
}
