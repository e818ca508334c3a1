//! examples/c/pingpong.c against examples/pingpong.rs: the C client with the Rust server and the
//! Rust client with the C server, over shm and tcp, latency and bandwidth, tag and AM, a few
//! iterations each (exit status 0 and the RESULT line). And `make install-files` into a temporary
//! prefix: the C ping-pong built from it with only `pkg-config --cflags --libs swucx`, run
//! against a Rust server.
//!
//! Servers listen on 127.0.0.1 on a free port and are killed by PID at the end; every process
//! runs under a timeout.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where cargo put libswucx.{a,so} and examples/pingpong.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

fn out_dir() -> PathBuf {
    let dir = profile_dir().join("c-pingpong");
    std::fs::create_dir_all(&dir).expect("create c-pingpong dir");
    dir
}

fn check(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn words(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The Rust ping-pong (built by `cargo test --all-targets`; built here if missing).
fn rust_pingpong() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = profile_dir().join("examples/pingpong");
        if !exe.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            check(
                Command::new(cargo)
                    .current_dir(root())
                    .args(["build", "--example", "pingpong"]),
                "cargo build --example pingpong",
            );
        }
        exe
    })
    .clone()
}

/// The C ping-pong, built against this profile's static library.
fn c_pingpong() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = out_dir().join("pingpong-c");
        let ucx = check(
            Command::new("pkg-config").args(["--libs", "ucx"]),
            "pkg-config --libs ucx",
        );
        check(
            Command::new("gcc")
                .args(["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror"])
                .arg("-I")
                .arg(root().join("include"))
                .arg(root().join("examples/c/pingpong.c"))
                .arg(profile_dir().join("libswucx.a"))
                .args(words(&ucx))
                .args([
                    "-lgcc_s",
                    "-lutil",
                    "-lrt",
                    "-lpthread",
                    "-lm",
                    "-ldl",
                    "-lc",
                ])
                .arg("-o")
                .arg(&exe),
            "building examples/c/pingpong.c",
        );
        exe
    })
    .clone()
}

/// A port nothing listens on right now (bound to port 0, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Shm,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::Tcp => "tcp",
        }
    }

    fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Transport::Shm => &[("UCX_TLS", "posix,sysv,cma,self,tcp")],
            Transport::Tcp => &[("UCX_TLS", "tcp,self"), ("UCX_NET_DEVICES", "lo")],
        }
    }
}

/// A running ping-pong server, killed by PID when dropped.
struct Server {
    child: Child,
    port: u16,
    what: String,
}

impl Server {
    fn start(exe: &Path, transport: Transport, extra_env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(exe);
        cmd.args(["--server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--transport", transport.name()])
            .envs(transport.env().iter().copied())
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe:?}: {e}"));
        let what = format!("{} server ({})", exe.display(), transport.name());
        // Wait for its "listening on" line; keep draining its stderr afterwards.
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let up = line.contains("listening on");
                    seen.push(line);
                    if up {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{what} exited before listening:\n{}", seen.join("\n"));
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not listen within 30 s:\n{}", seen.join("\n"));
            }
        }
        Server { child, port, what }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a client to completion under CLIENT_TIMEOUT; returns its stdout and stderr.
fn run_client(
    exe: &Path,
    server: &Server,
    transport: Transport,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> (String, String) {
    let mut child = Command::new(exe)
        .args(["--connect", &format!("127.0.0.1:{}", server.port)])
        .args(["--transport", transport.name()])
        .args(args)
        .envs(transport.env().iter().copied())
        .envs(extra_env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe:?}: {e}"));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("client output");
            panic!(
                "{exe:?} {args:?} against {} timed out:\n{}",
                server.what,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("client output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{exe:?} {args:?} against {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        server.what,
        out.status
    );
    (stdout, stderr)
}

/// Checks the client's last stdout line: the RESULT line for these parameters.
fn check_result(stdout: &str, api: &str, mode: &str, size: u64, iters: u64) {
    let line = stdout.lines().last().unwrap_or_default();
    let prefix = format!("RESULT mode={mode} api={api} size={size} iters={iters} ");
    assert!(
        line.starts_with(&prefix),
        "want a line starting {prefix:?}, got {line:?}"
    );
    let key = if mode == "lat" {
        "lat_us_p50="
    } else {
        "gbps="
    };
    let value: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"));
    assert!(value > 0.0 && value.is_finite(), "{line:?}");
}

/// Every (api, mode) cell of one client against one server.
fn interop(server_exe: &Path, client_exe: &Path, transport: Transport) {
    let server = Server::start(server_exe, transport, &[]);
    for api in ["tag", "am"] {
        for (mode, size, iters) in [("lat", 8u64, 200u64), ("bw", 1u64 << 20, 40)] {
            let (size_s, iters_s) = (size.to_string(), iters.to_string());
            let args = [
                "--api", api, "--mode", mode, "--size", &size_s, "--iters", &iters_s, "--warmup",
                "10", "--window", "8",
            ];
            let (stdout, _) = run_client(client_exe, &server, transport, &args, &[]);
            check_result(&stdout, api, mode, size, iters);
        }
    }
    drop(server);
}

#[test]
fn c_client_rust_server_shm() {
    interop(&rust_pingpong(), &c_pingpong(), Transport::Shm);
}

#[test]
fn rust_client_c_server_shm() {
    interop(&c_pingpong(), &rust_pingpong(), Transport::Shm);
}

#[test]
fn c_client_rust_server_tcp() {
    interop(&rust_pingpong(), &c_pingpong(), Transport::Tcp);
}

#[test]
fn rust_client_c_server_tcp() {
    interop(&c_pingpong(), &rust_pingpong(), Transport::Tcp);
}

/// Stream, address wireup and the engine front, C client against the Rust server (tcp).
#[test]
fn c_client_stream_address_wireup_and_front() {
    let server = Server::start(&rust_pingpong(), Transport::Tcp, &[]);
    let cases: [&[&str]; 3] = [
        &["--api", "stream", "--mode", "lat"],
        &["--api", "tag", "--mode", "lat", "--wireup", "address"],
        &["--api", "am", "--mode", "lat", "--front"],
    ];
    for case in cases {
        let mut args = case.to_vec();
        args.extend(["--size", "8", "--iters", "100", "--warmup", "5"]);
        let (stdout, _) = run_client(&c_pingpong(), &server, Transport::Tcp, &args, &[]);
        check_result(&stdout, case[1], "lat", 8, 100);
    }
}

/// `make install-files PREFIX=<tmp>` (the binary and libraries of this profile), then the C ping-pong built
/// with only `pkg-config --cflags --libs swucx` and run against a Rust server.
#[test]
fn installed_prefix_builds_with_pkg_config() {
    let prefix = out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    check(
        Command::new("make")
            .current_dir(root())
            .args(["-s", "install-files"])
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("LIB_SRC={}", profile_dir().display())),
        "make install-files",
    );
    let lib = prefix.join("lib");
    for file in [
        "libswucx.a",
        "libswucx.so",
        "libswucx.so.0",
        "pkgconfig/swucx.pc",
    ] {
        assert!(lib.join(file).exists(), "{file} not installed");
    }
    assert!(prefix.join("include/swucx.h").exists());
    let version = check(
        Command::new(prefix.join("bin/swucx")).arg("--version"),
        "the installed swucx --version",
    );
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("swucx "));
    assert_eq!(
        std::fs::read_link(lib.join("libswucx.so")).expect("libswucx.so is a symlink"),
        Path::new("libswucx.so.0")
    );
    // The shared library carries its soname.
    let dynamic = check(
        Command::new("readelf")
            .arg("-d")
            .arg(lib.join("libswucx.so.0")),
        "readelf -d",
    );
    assert!(
        String::from_utf8_lossy(&dynamic.stdout).contains("[libswucx.so.0]"),
        "no SONAME libswucx.so.0"
    );

    let pc_path = lib.join("pkgconfig");
    let flags = check(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(["--cflags", "--libs", "swucx"]),
        "pkg-config --cflags --libs swucx",
    );
    check(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(["--static", "--libs", "swucx"]),
        "pkg-config --static --libs swucx",
    );
    let exe = out_dir().join("pingpong-c-installed");
    check(
        Command::new("gcc")
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"])
            .arg(root().join("examples/c/pingpong.c"))
            .args(words(&flags))
            .arg("-o")
            .arg(&exe),
        "building pingpong.c with pkg-config swucx",
    );
    let needed = check(Command::new("readelf").arg("-d").arg(&exe), "readelf -d");
    assert!(
        String::from_utf8_lossy(&needed.stdout).contains("[libswucx.so.0]"),
        "the program does not ask for libswucx.so.0"
    );
    let server = Server::start(&rust_pingpong(), Transport::Tcp, &[]);
    // The installed library first; UCX from wherever the environment finds it (a UCX outside
    // the system's directories, as in `make compat`).
    let lib_path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(outer) if !outer.is_empty() => format!("{}:{outer}", lib.display()),
        _ => lib.display().to_string(),
    };
    let env = [("LD_LIBRARY_PATH", lib_path.as_str())];
    let (stdout, _) = run_client(
        &exe,
        &server,
        Transport::Tcp,
        &[
            "--api", "am", "--mode", "lat", "--size", "8", "--iters", "100",
        ],
        &env,
    );
    check_result(&stdout, "am", "lat", 8, 100);
}
