//! `swucx`: serve SeaweedFS needles from a volume directory over UCX, or read one.
//!
//! ```text
//! swucx serve --dir VOLUME_DIR[,VOLUME_DIR...] [--dir-idx IDX_DIR] [--listen IP:PORT] [--threads N]
//!             [--jwt-read-key-file PATH] [--max-connections N] [--max-connections-per-host N]
//!             [--idle-timeout-secs SECS] [--metrics-listen IP:PORT]
//! swucx read --server IP:PORT FID [--offset N] [--size N] [-o FILE]
//! ```
//! Transports come from UCX's environment (UCX_TLS, UCX_NET_DEVICES). Logging: RUST_LOG (default
//! `info` for `serve`, `warn` for `read`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use swucx::Context;
use swucx::seaweed::{
    ClientError, FileId, NeedleClient, NeedleServer, ReadKey, ServerStats, VolumeDir,
    weed_config_dirs,
};

#[derive(Parser)]
#[command(name = "swucx", version, about = "SeaweedFS needle reads over UCX")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the needles of a weed volume directory until SIGTERM/SIGINT.
    Serve(ServeArgs),
    /// Read one file id (or a range of it) to stdout or a file.
    Read {
        /// The server's address.
        #[arg(long)]
        server: SocketAddr,
        /// The file id, e.g. `3,01637037d6`.
        fid: String,
        /// First byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// How many bytes (0: to the end).
        #[arg(long, default_value_t = 0)]
        size: u64,
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<std::path::PathBuf>,
        /// The read JWT, when the server requires one.
        #[arg(long, default_value = "")]
        jwt: String,
        /// Give up after this many seconds (at least 1).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_secs: u64,
    },
}

/// `swucx serve`'s options.
#[derive(clap::Args)]
struct ServeArgs {
    /// The directories `weed volume -dir` writes (comma-separated, as weed takes them, or
    /// the flag repeated). Volumes this server does not find there (erasure-coded, remote
    /// tier, another server's) are answered NO_VOLUME and clients read them over HTTP.
    #[arg(long, required = true, value_delimiter = ',')]
    dir: Vec<std::path::PathBuf>,
    /// Where the `.idx` files are when weed runs with `-dir.idx` (an `.idx` next to its
    /// `.dat` is still taken first, as weed does).
    #[arg(long)]
    dir_idx: Option<std::path::PathBuf>,
    /// Address to listen on (port 0 picks one; the bound address is printed). The default
    /// port is weed volume's default HTTP port 8080 + 20000, where the Go client looks.
    #[arg(long, default_value = "0.0.0.0:28080")]
    listen: SocketAddr,
    /// Require read JWTs signed with this key (default: weed's own configuration:
    /// WEED_JWT_SIGNING_READ_KEY, else `[jwt.signing.read] key` in the first security.toml in
    /// ./, $HOME/.seaweedfs/, /usr/local/etc/seaweedfs/, /etc/seaweedfs/). Other local users
    /// can read a command line (/proc/PID/cmdline): prefer --jwt-read-key-file. An empty key
    /// is refused.
    #[arg(long)]
    jwt_read_key: Option<String>,
    /// Require read JWTs signed with the key in this file (its content, trailing newline
    /// removed), which keeps the key off the command line.
    #[arg(long, value_name = "PATH", conflicts_with = "jwt_read_key")]
    jwt_read_key_file: Option<std::path::PathBuf>,
    /// Do not let clients on this host copy payloads out of this process's memory (direct
    /// reads, docs/protocol.md); every payload then moves through UCX.
    #[arg(long)]
    no_direct_reads: bool,
    /// Where Yama's kernel.yama.ptrace_scope is 1 (Ubuntu's default), let clients make direct
    /// reads by letting ANY process of this user ptrace this daemon (PR_SET_PTRACER_ANY).
    /// RISK: every such process can then read the read key and every mapped needle, and
    /// write this process's memory. Without it, clients there get EPERM and receive payloads
    /// through UCX instead; the kernel's rules are left as they are.
    #[arg(long, conflicts_with = "no_direct_reads")]
    direct_reads_ptracer_any: bool,
    /// Threads serving reads, each with a UCX worker of its own; new connections are dealt
    /// to them in turn (one connection is served by one thread).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=swucx::seaweed::server::MAX_THREADS as i64))]
    threads: u16,
    /// Connections kept open at most; past it new ones are rejected (their clients read over
    /// HTTP). Each holds file descriptors: the soft RLIMIT_NOFILE is raised to the hard one.
    #[arg(long, default_value_t = swucx::seaweed::server::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Connections kept open at most from one client host (by IP address; clients on this
    /// host count as one); past it that host's new ones are rejected, so that one host cannot
    /// take every slot.
    #[arg(long, default_value_t = swucx::seaweed::server::DEFAULT_MAX_CONNECTIONS_PER_HOST as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_host: u64,
    /// Close connections that go this many seconds without a request and with no reply in
    /// flight (0: never), so that connections their clients forgot do not hold slots. Keep it
    /// well above the clients' own idle close (the Go client's IdleConnTimeout, 120 s).
    #[arg(long, value_name = "SECS",
          default_value_t = swucx::seaweed::server::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_secs: u64,
    /// Serve the server's counters (replies by status, bytes, connections) as Prometheus
    /// metrics at http://IP:PORT/metrics (port 0 picks one; the address is printed). Off by
    /// default. No authentication: bind it to 127.0.0.1 or a management network.
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
}

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::Relaxed);
    STOP.store(true, Ordering::Release);
}

/// Where `swucx serve` takes the read key from: a flag, or weed's configuration.
enum KeyOption {
    /// `--jwt-read-key KEY`.
    Flag(String),
    /// `--jwt-read-key-file PATH`.
    File(std::path::PathBuf),
    /// Neither: as weed finds it ([`ReadKey::from_weed_config`]).
    WeedConfig,
}

/// The read key and a description of where it came from, or `None` when none is configured
/// anywhere. An empty key given by flag or file is an error: it would check nothing.
fn read_key(option: KeyOption) -> Result<Option<(ReadKey, String)>, String> {
    let (key, source) = match option {
        KeyOption::Flag(key) => (key.into_bytes(), "--jwt-read-key".to_string()),
        KeyOption::File(path) => {
            let mut key = std::fs::read(&path)
                .map_err(|e| format!("--jwt-read-key-file {}: {e}", path.display()))?;
            if key.ends_with(b"\n") {
                key.pop();
                if key.ends_with(b"\r") {
                    key.pop();
                }
            }
            (key, format!("--jwt-read-key-file {}", path.display()))
        }
        KeyOption::WeedConfig => {
            return Ok(ReadKey::from_weed_config()?.map(|(key, src)| (key, src.to_string())));
        }
    };
    if key.is_empty() {
        return Err(format!(
            "{source}: the key is empty, which would check no read JWT; give the key, or omit \
             the option to use weed's configuration"
        ));
    }
    Ok(Some((ReadKey::new(key), source)))
}

/// The warning `swucx serve` prints when no read key is configured: every needle is then served
/// without a token, which an operator whose weed requires read JWTs must notice.
fn unchecked_warning() -> String {
    let files: Vec<_> = weed_config_dirs()
        .iter()
        .map(|dir| dir.join("security.toml"))
        .collect();
    let found = match files.iter().find(|file| file.exists()) {
        Some(file) => format!("; {} exists but sets no read key", file.display()),
        None => String::new(),
    };
    let looked: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
    format!(
        "swucx serve: WARNING: read JWTs are NOT checked: every needle is served to any client. \
         No read key: none given by --jwt-read-key or --jwt-read-key-file, none in \
         WEED_JWT_SIGNING_READ_KEY, and no [jwt.signing.read] key in the first security.toml \
         among {}{found}",
        looked.join(", ")
    )
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let key = match (args.jwt_read_key, args.jwt_read_key_file) {
        (Some(key), _) => KeyOption::Flag(key),
        (None, Some(path)) => KeyOption::File(path),
        (None, None) => KeyOption::WeedConfig,
    };
    let key = read_key(key)?;
    let direct_reads = !args.no_direct_reads;
    let threads = args.threads;
    let shown = args
        .dir
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let given = match &args.dir_idx {
        Some(idx) => format!("--dir {shown}, --dir-idx {}", idx.display()),
        None => format!("--dir {shown}"),
    };
    let volumes = VolumeDir::open_with_index(args.dir, args.dir_idx)
        .map_err(|e| format!("opening the volumes ({given}): {e}"))?;
    let found = volumes.volume_ids().len();
    if found == 0 {
        eprintln!(
            "swucx serve: WARNING: no volumes (.dat with .idx) in {shown}: every read is answered \
             NO_VOLUME (clients read over HTTP) until some appear; is it weed volume's -dir?"
        );
    }
    let context = server_context(direct_reads)?;
    let listen = args.listen;
    let open_files = raise_open_files_limit();
    let max_per_host = usize::try_from(args.max_connections_per_host).unwrap_or(usize::MAX);
    let mut server = NeedleServer::bind(&context, volumes, listen)
        .map_err(|e| {
            let hint = if e.status() == swucx::Status::ERR_BUSY {
                " (the address is in use: another swucx serve, or another program)"
            } else {
                ""
            };
            format!("listen {listen}: {e}{hint}")
        })?
        .with_direct_reads(direct_reads)
        .with_max_connections_per_host(max_per_host)
        .with_idle_timeout(
            (args.idle_timeout_secs > 0).then(|| Duration::from_secs(args.idle_timeout_secs)),
        )
        .with_threads(threads.into())
        .map_err(|e| format!("{threads} threads: {e}"))?;
    // Fitted once every worker holds its descriptors (~10 each).
    let max_connections = fit_open_files(args.max_connections, open_files);
    server = server.with_max_connections(usize::try_from(max_connections).unwrap_or(usize::MAX));
    if direct_reads {
        direct_read_access(args.direct_reads_ptracer_any);
    }
    match key {
        Some((key, source)) => {
            eprintln!("swucx serve: read JWTs required (key from {source})");
            server = server.with_read_key(key);
        }
        None => eprintln!("{}", unchecked_warning()),
    }
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let metrics = match args.metrics_listen {
        Some(at) => {
            let bound = serve_metrics(at, server.stats())?;
            format!(", metrics on http://{bound}/metrics")
        }
        None => String::new(),
    };
    // Before the line that tells a supervisor it is up, so a stop right after it is clean.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        // A hangup (the terminal closed) stops it too; UCX would take it for its debug signal
        // (UCX_DEBUG_SIGNO) and go on silently.
        libc::signal(libc::SIGHUP, on_signal as *const () as libc::sighandler_t);
    }
    println!(
        "swucx serve: listening on {addr}, {found} volume{} in {shown}, {threads} thread{}{metrics}",
        if found == 1 { "" } else { "s" },
        if threads == 1 { "" } else { "s" }
    );
    let _ = std::io::stdout().flush();
    server.run(&STOP).map_err(|e| e.to_string())?;
    let signal = match SIGNAL.load(Ordering::Relaxed) {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    };
    // Each thread logged whether every reply finished or which connections it closed.
    eprintln!("swucx serve: stopped on {signal}");
    Ok(())
}

/// Answers `GET /metrics` at `at` with the server's counters in Prometheus' text format, on a
/// thread of its own for the life of the process; other paths get 404. Returns the bound
/// address.
fn serve_metrics(at: SocketAddr, stats: Arc<ServerStats>) -> Result<SocketAddr, String> {
    let http = tiny_http::Server::http(at).map_err(|e| format!("--metrics-listen {at}: {e}"))?;
    let bound = http
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("--metrics-listen {at}: not an IP address"))?;
    let content_type = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"text/plain; version=0.0.4; charset=utf-8"[..],
    )
    .map_err(|()| "metrics: bad header".to_string())?;
    std::thread::Builder::new()
        .name("swucx-metrics".into())
        .spawn(move || {
            for request in http.incoming_requests() {
                let path = request.url().split('?').next().unwrap_or_default();
                let outcome = if path == "/metrics" {
                    let text = stats.snapshot().prometheus();
                    let response =
                        tiny_http::Response::from_string(text).with_header(content_type.clone());
                    request.respond(response)
                } else {
                    request.respond(tiny_http::Response::empty(404))
                };
                if let Err(e) = outcome {
                    log::debug!("answering a metrics request: {e}");
                }
            }
        })
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok(bound)
}

/// File descriptors one client connection may hold (UCX 1.13: its sockets and wake-up
/// descriptors, ~2 measured over tcp), and those kept free for everything else (volumes that
/// appear later, the metrics server, UCX's own).
const FDS_PER_CONNECTION: u64 = 3;
const FDS_RESERVED: u64 = 256;

/// `max` connections, or fewer when the open-files limit `soft` (None: unlimited or unknown)
/// leaves room for fewer, with a warning: UCX aborts the process, or stops accepting anyone for
/// good, when it runs out of descriptors, where a connection past `--max-connections` is only
/// rejected. Counts the descriptors open now, so call it once the workers exist.
fn fit_open_files(max: u64, soft: Option<u64>) -> u64 {
    let Some(soft) = soft else {
        return max;
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count() as u64);
    let room = soft.saturating_sub(open + FDS_RESERVED) / FDS_PER_CONNECTION;
    if room >= max {
        return max;
    }
    let fits = room.max(1);
    eprintln!(
        "swucx serve: WARNING: --max-connections {max} lowered to {fits}: the open-files limit \
         ({soft} with {open} open) leaves room for {fits} connections at {FDS_PER_CONNECTION} \
         descriptors each and {FDS_RESERVED} spare; raise it (ulimit -n, systemd's LimitNOFILE) \
         to keep more"
    );
    fits
}

/// Raises the soft limit on open files to the hard one, as Go programs (weed among them) do at
/// start: every connection holds file descriptors, and the soft limit is often 1024. Returns
/// the soft limit then in force (None: unlimited, or unknown).
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct it is given, which lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            log::debug!(
                "open files limit stays at {soft}: {}",
                std::io::Error::last_os_error()
            );
            limit.rlim_cur = soft;
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Says who can make direct reads from this daemon under the kernel's ptrace rules, and widens
/// them with `PR_SET_PTRACER_ANY` only when the operator asked (`--direct-reads-ptracer-any`).
fn direct_read_access(ptracer_any: bool) {
    use swucx::seaweed::direct::{allow_any_ptracer, yama_ptrace_scope};
    let scope = yama_ptrace_scope();
    if ptracer_any {
        match allow_any_ptracer() {
            Ok(()) if scope == Some(1) => log::warn!(
                "direct reads: PR_SET_PTRACER_ANY set (--direct-reads-ptracer-any): under Yama \
                 ptrace_scope 1, ANY process of this user may now ptrace this daemon: read its \
                 read key and every mapped needle, and write its memory"
            ),
            Ok(()) => log::info!("direct reads: PR_SET_PTRACER_ANY set"),
            Err(e) => log::info!("direct reads: PR_SET_PTRACER_ANY not set: {e}"),
        }
    }
    match scope {
        None | Some(0) => log::info!(
            "direct reads: {}: processes of this user on this host can read this daemon's \
             memory anyway (ptrace rules), so they make direct reads",
            scope.map_or("no Yama".to_string(), |s| format!("Yama ptrace_scope {s}"))
        ),
        Some(1) if ptracer_any => {}
        Some(1) => log::info!(
            "direct reads: Yama ptrace_scope 1: clients cannot read this daemon's memory \
             (EPERM) and receive payloads through UCX instead; --direct-reads-ptracer-any would \
             let them, and every process of this user ptrace this daemon"
        ),
        Some(2) => log::info!(
            "direct reads: Yama ptrace_scope 2: only clients with CAP_SYS_PTRACE make direct \
             reads; the others receive payloads through UCX"
        ),
        Some(s) => log::info!(
            "direct reads: Yama ptrace_scope {s}: no client can read this daemon's memory; \
             payloads move through UCX"
        ),
    }
}

/// The daemon's UCX context. Direct reads take clients on this host off the rendezvous path, so
/// tcp clients get tcp's put zero-copy (UCX writes the client's buffer straight from the `.dat`
/// mapping), which swucx's defaults turn off where shared memory may be used; `UCX_TCP_PUT_ENABLE`
/// still decides when set. (UCX releases without the setting run without it.)
fn server_context(direct_reads: bool) -> Result<Context, String> {
    if direct_reads && std::env::var_os("UCX_TCP_PUT_ENABLE").is_none() {
        match Context::builder().config("PUT_ENABLE", "y").build() {
            Ok(context) => return Ok(context),
            Err(e) => log::debug!("tcp put zero-copy stays off: {e}"),
        }
    }
    Context::new().map_err(|e| e.to_string())
}

/// What a failed read's connection error likely means, for `swucx read`'s message.
fn read_hint(e: &ClientError) -> &'static str {
    use swucx::Status;
    match e {
        ClientError::Ucx(e) => match e.status() {
            Status::ERR_NOT_CONNECTED | Status::ERR_UNREACHABLE => {
                " (nothing listening there? swucx serve listens on weed's HTTP port + 20000)"
            }
            Status::ERR_CONNECTION_RESET => {
                " (the peer closed the connection: not a swucx serve port, or a transport it \
                 cannot use with this process, e.g. shared memory across users: try UCX_TLS=tcp)"
            }
            Status::ERR_REJECTED => " (the server is at its connection limit)",
            _ => "",
        },
        ClientError::Timeout(_) => " (is it a swucx serve port?)",
        _ => "",
    }
}

fn read(
    server: SocketAddr,
    fid: &str,
    offset: u64,
    size: u64,
    output: Option<std::path::PathBuf>,
    jwt: &str,
    timeout: Duration,
) -> Result<(), String> {
    let fid = FileId::parse(fid).map_err(|e| e.to_string())?;
    let context = Context::new().map_err(|e| e.to_string())?;
    let client = NeedleClient::connect(&context, server).map_err(|e| format!("{server}: {e}"))?;
    let data = client
        .read_with_jwt(&fid, offset, size, jwt, timeout)
        .map_err(|e| format!("read {fid} from {server}: {e}{}", read_hint(&e)))?;
    match output {
        Some(path) => {
            std::fs::write(&path, &data.data).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => std::io::stdout()
            .write_all(&data.data)
            .map_err(|e| format!("stdout: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        Command::Serve(_) => "info",
        Command::Read { .. } => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Read {
            server,
            fid,
            offset,
            size,
            output,
            jwt,
            timeout_secs,
        } => read(
            server,
            &fid,
            offset,
            size,
            output,
            &jwt,
            Duration::from_secs(timeout_secs),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("swucx: {reason}");
            ExitCode::FAILURE
        }
    }
}
