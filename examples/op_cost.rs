//! What swucx adds to an operation: a tag receive posted, a matching 8 B send, both completed,
//! in one process over UCX's `self` transport (no wire, no peer), so the time is all software.
//! Compare with `target/examples/ucx-op-cost` (examples/c/ucx_op_cost.c), the same loop written
//! on UCX directly. Both print `RESULT ns_per_pair=...`.
//!
//!   target/release/examples/op_cost [PAIRS]     (default 5000000, plus 10% warm-up)

use std::time::Instant;

use swucx::{Context, Features, MemRegion, Worker};

fn main() -> Result<(), swucx::Error> {
    let pairs: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().unwrap_or_else(|_| {
            eprintln!("usage: op_cost [PAIRS]");
            std::process::exit(2)
        }),
        None => 5_000_000,
    };
    let features = Features {
        tag: true,
        stream: false,
        am: false,
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
    let mut send_buf = Some(region.slice(0, 8)?);
    let mut recv_buf = Some(region.slice(64, 8)?);
    let mut start = Instant::now();
    for i in 0..pairs + pairs / 10 {
        if i == pairs / 10 {
            start = Instant::now();
        }
        let recv = worker.tag_recv(1, u64::MAX, recv_buf.take().expect("returned"))?;
        let send = ep.tag_send(1, send_buf.take().expect("returned"))?;
        while !send.poll() {}
        send_buf = Some(send.wait()?.buffer);
        while !recv.poll() {}
        recv_buf = Some(recv.wait()?.buffer);
    }
    let ns = start.elapsed().as_nanos() as f64 / pairs as f64;
    println!("RESULT impl=swucx pairs={pairs} ns_per_pair={ns:.1}");
    Ok(())
}
