//! RDMA (InfiniBand/RoCE) over UCX's verbs transports. Needs a host with an HCA, so ignored by
//! default: `cargo test --test rdma_hw -- --ignored` on such a host (set UCX_NET_DEVICES to pick
//! the port, e.g. mlx5_0:1).

mod common;

use common::{SIZES, assert_bytes, pattern, wait_on};
use swucx::{AmFlags, Context, Worker};

/// Two workers in this process, connected by worker address over RDMA only (no tcp, no shm),
/// move every size byte-exact by tag and by active message (eager and rendezvous, which over
/// RDMA is a zero-copy read or write into the receive buffer).
#[test]
#[ignore = "needs an RDMA HCA (InfiniBand or RoCE); this machine has none"]
fn tag_and_am_over_verbs() {
    let context = Context::builder()
        .config("TLS", "rc,ud,dc,self")
        .build()
        .expect("UCX context with verbs transports");
    let a = Worker::new(&context).unwrap();
    let b = Worker::new(&context).unwrap();
    let ep = a.connect_address(&b.address().unwrap()).unwrap();
    let workers = [&a, &b];
    let inbox = common::am_inbox(&b, 7);
    for &size in SIZES {
        let data = pattern(size, 42);
        let recv = b.tag_recv(1, u64::MAX, vec![0u8; size]).unwrap();
        wait_on(&workers, ep.tag_send(1, data.clone()).unwrap(), "tag send").unwrap();
        let got = wait_on(&workers, recv, "tag recv").unwrap();
        assert_bytes(&got.buffer[..got.length], &data, &format!("tag {size} B"));

        let send = ep
            .am_send(7, Vec::new(), data.clone(), AmFlags::NONE)
            .unwrap();
        let kept = common::next_kept(&workers, &inbox, "am");
        let recv = kept.desc.recv_into(vec![0u8; size]).unwrap();
        let got = wait_on(&workers, recv, "am recv").unwrap();
        wait_on(&workers, send, "am send").unwrap();
        assert_bytes(&got.buffer[..size], &data, &format!("am {size} B"));
    }
    let lanes = ep.transports().unwrap();
    assert!(
        lanes
            .iter()
            .all(|t| !t.is_shared_memory() && t.transport != "tcp"),
        "expected verbs lanes only, got {lanes:?}"
    );
    common::close_all(&[&ep], &[&a, &b]);
}
