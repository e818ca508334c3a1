//! What swucx adds to an operation, in one process over UCX's `self` transport (no wire, no
//! peer), so the time is all software. `tag` (the default): a tag receive posted, a matching
//! 8 B send, both completed. `am`: an 8 B active message sent and counted by its handler.
//! `tag-now` and `am-now`: the same with the send made by `tag_send_now` / `am_send_now`
//! (within the call, no request).
//! Compare with `target/examples/ucx-op-cost` (examples/c/ucx_op_cost.c), the same loops written
//! on UCX directly. Both print `RESULT ... ns_per_pair=...`.
//!
//!   target/release/examples/op_cost [PAIRS [tag|am|tag-now|am-now]]     (default 5000000, plus 10% warm-up)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use swucx::{AmFlags, Context, Features, MemRegion, RegionBuf, Worker};

fn usage() -> ! {
    eprintln!("usage: op_cost [PAIRS [tag|am|tag-now|am-now]]");
    std::process::exit(2)
}

fn main() -> Result<(), swucx::Error> {
    let mut args = std::env::args().skip(1);
    let pairs: u64 = match args.next() {
        Some(arg) => arg.parse().unwrap_or_else(|_| usage()),
        None => 5_000_000,
    };
    let op = args.next().unwrap_or_else(|| "tag".to_owned());
    let (am, now) = match op.as_str() {
        "tag" => (false, false),
        "am" => (true, false),
        "tag-now" => (false, true),
        "am-now" => (true, true),
        _ => usage(),
    };
    let features = Features {
        tag: !am,
        stream: false,
        am,
        rma: false,
        wakeup: false,
    };
    let context = Context::builder()
        .features(features)
        .config("TLS", "self")
        .without_peer_failure_handling()
        .build()?;
    // SAFETY: the worker and everything made from it are used on this thread only.
    let worker = unsafe { Worker::new_serialized(&context) }?;
    let ep = worker.connect_address(&worker.address()?)?;
    let region = MemRegion::allocate(&context, 128)?;
    // Each operation hands its buffer back; the next one reuses it (no clone per operation).
    let send_buf = region.slice(0, 8)?;
    let send = if now {
        SendMode::Now(&[0; 8])
    } else {
        SendMode::Request(send_buf)
    };
    let ns = if am {
        am_pairs(&worker, &ep, pairs, send)?
    } else {
        tag_pairs(&worker, &ep, pairs, send, region.slice(64, 8)?)?
    };
    println!("RESULT impl=swucx op={op} pairs={pairs} ns_per_pair={ns:.1}");
    Ok(())
}

/// How the loops send: a request owning a registered buffer (handed back and reused by the next
/// send), or within the call from a borrowed slice.
enum SendMode<'a> {
    Request(RegionBuf),
    Now(&'a [u8]),
}

/// Tag pairs: a receive posted, a matching send, both completed; nanoseconds per pair.
fn tag_pairs(
    worker: &Worker,
    ep: &swucx::Endpoint,
    pairs: u64,
    send: SendMode<'_>,
    recv_buf: RegionBuf,
) -> Result<f64, swucx::Error> {
    let mut send = send;
    let mut recv_buf = Some(recv_buf);
    let mut start = Instant::now();
    for i in 0..pairs + pairs / 10 {
        if i == pairs / 10 {
            start = Instant::now();
        }
        let recv = worker.tag_recv(1, u64::MAX, recv_buf.take().expect("returned"))?;
        send = match send {
            SendMode::Request(buf) => {
                let request = ep.tag_send(1, buf)?;
                while !request.poll() {}
                SendMode::Request(request.wait()?.buffer)
            }
            SendMode::Now(buf) => {
                ep.tag_send_now(1, buf)?;
                SendMode::Now(buf)
            }
        };
        while !recv.poll() {}
        recv_buf = Some(recv.wait()?.buffer);
    }
    Ok(start.elapsed().as_nanos() as f64 / pairs as f64)
}

/// AM pairs: an active message sent, completed, and counted by its handler; nanoseconds per pair.
fn am_pairs(
    worker: &Worker,
    ep: &swucx::Endpoint,
    pairs: u64,
    send: SendMode<'_>,
) -> Result<f64, swucx::Error> {
    let arrived = Arc::new(AtomicU64::new(0));
    let counter = arrived.clone();
    worker.set_am_handler(1, move |_| {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release)
    })?;
    let mut send = send;
    let mut start = Instant::now();
    for i in 0..pairs + pairs / 10 {
        if i == pairs / 10 {
            start = Instant::now();
        }
        send = match send {
            SendMode::Request(buf) => {
                let request = ep.am_send(1, &[][..], buf, AmFlags::NONE)?;
                while !request.poll() {}
                SendMode::Request(request.wait()?.buffer.1)
            }
            SendMode::Now(buf) => {
                ep.am_send_now(1, &[], buf, AmFlags::NONE)?;
                SendMode::Now(buf)
            }
        };
        while arrived.load(Ordering::Acquire) <= i {
            worker.progress();
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / pairs as f64)
}
