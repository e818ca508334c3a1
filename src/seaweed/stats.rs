//! What a needle server has done: replies by status, payload bytes, connections. The serving
//! threads count into one [`ServerStats`] (relaxed atomic adds, no locks); anyone may read a
//! [`StatsSnapshot`] of it at any time from any thread, e.g. to export it as Prometheus metrics
//! ([`StatsSnapshot::prometheus`], `swucx serve --metrics-listen`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::seaweed::protocol::Status;

// The counters are indexed by status code: the codes must be 0, 1, 2, ... in `Status::ALL`.
const _: () = {
    let mut i = 0;
    while i < Status::ALL.len() {
        assert!(Status::ALL[i] as usize == i);
        i += 1;
    }
};

/// Counters of one needle server, shared by its threads ([`NeedleServer::stats`]).
///
/// [`NeedleServer::stats`]: crate::seaweed::NeedleServer::stats
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered (replies handed to UCX), by status code.
    replies: [AtomicU64; Status::ALL.len()],
    payload_bytes: AtomicU64,
    direct_replies: AtomicU64,
    requests_dropped: AtomicU64,
    /// Open connections, accepted or being handed to a serving thread: the gauge the
    /// connection limit is checked against.
    open_connections: AtomicUsize,
    connections_accepted: AtomicU64,
    connections_rejected: AtomicU64,
    connections_closed: AtomicU64,
}

/// A copy of a server's counters at one moment (each counter read on its own: under load, two
/// of them may be a few events apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests answered, by status code ([`Status::code`]): `replies[0]` are the reads
    /// served. (A reply counts when it is handed to UCX: also one whose client left before it
    /// went out.)
    pub replies: [u64; Status::ALL.len()],
    /// Payload bytes of the `OK` replies (by rendezvous, eagerly or for direct reads).
    pub payload_bytes: u64,
    /// `OK` replies announced for a direct read (the client may copy the payload out of this
    /// process itself; one that cannot takes it through UCX).
    pub direct_replies: u64,
    /// Requests dropped without a reply: no readable request id, or their connection had
    /// [`MAX_UNFINISHED_PER_CONNECTION`] replies unfinished.
    ///
    /// [`MAX_UNFINISHED_PER_CONNECTION`]: crate::seaweed::server::MAX_UNFINISHED_PER_CONNECTION
    pub requests_dropped: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Connections accepted since the server started.
    pub connections_accepted: u64,
    /// Connections rejected for a connection limit (server-wide or per client host).
    pub connections_rejected: u64,
    /// Connections the server closed: replies not taken in time, idle for the idle timeout, or
    /// still in flight at a stop.
    pub connections_closed: u64,
}

impl ServerStats {
    /// A reply of `status` sent, `payload` bytes long, `direct` if announced for a direct read.
    pub(crate) fn reply_sent(&self, status: Status, payload: u64, direct: bool) {
        self.replies[usize::from(status.code())].fetch_add(1, Ordering::Relaxed);
        if status == Status::Ok {
            self.payload_bytes.fetch_add(payload, Ordering::Relaxed);
            if direct {
                self.direct_replies.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn request_dropped(&self) {
        self.requests_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now (or being handed to a serving thread).
    pub(crate) fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }

    /// A connection taken from the listener, before its accept.
    pub(crate) fn connection_opening(&self) {
        self.open_connections.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` connections that were opening or open are gone (ended, or their accept failed).
    pub(crate) fn connections_gone(&self, n: usize) {
        let before = self.open_connections.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "{n} connections gone of {before} open");
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_rejected(&self) {
        self.connections_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connections_closed(&self, n: usize) {
        self.connections_closed
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            replies: std::array::from_fn(|i| self.replies[i].load(Ordering::Relaxed)),
            payload_bytes: self.payload_bytes.load(Ordering::Relaxed),
            direct_replies: self.direct_replies.load(Ordering::Relaxed),
            requests_dropped: self.requests_dropped.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed) as u64,
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_rejected: self.connections_rejected.load(Ordering::Relaxed),
            connections_closed: self.connections_closed.load(Ordering::Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// The replies sent with `status`.
    pub fn replies_with(&self, status: Status) -> u64 {
        self.replies[usize::from(status.code())]
    }

    /// The counters in Prometheus' text exposition format (version 0.0.4), every metric named
    /// `swucx_serve_*`.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP swucx_serve_{name} {help}");
            let _ = writeln!(out, "# TYPE swucx_serve_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "swucx_serve_{name}{labels} {value}");
            }
        };
        let by_status: Vec<(String, u64)> = Status::ALL
            .iter()
            .map(|s| {
                (
                    format!("{{status=\"{}\"}}", s.name()),
                    self.replies_with(*s),
                )
            })
            .collect();
        metric(
            "replies_total",
            "counter",
            "READ requests answered, by status (ok: reads served).",
            &by_status,
        );
        let single: [(&str, &str, &str, u64); 7] = [
            (
                "payload_bytes_total",
                "counter",
                "Payload bytes of the ok replies.",
                self.payload_bytes,
            ),
            (
                "direct_replies_total",
                "counter",
                "Ok replies announced for a direct read (the client copies the payload itself).",
                self.direct_replies,
            ),
            (
                "requests_dropped_total",
                "counter",
                "Requests dropped without a reply (no readable request id, sent without a reply endpoint, or a connection far past its in-flight limit).",
                self.requests_dropped,
            ),
            (
                "connections_open",
                "gauge",
                "Client connections open.",
                self.open_connections,
            ),
            (
                "connections_accepted_total",
                "counter",
                "Client connections accepted.",
                self.connections_accepted,
            ),
            (
                "connections_rejected_total",
                "counter",
                "Client connections rejected at a connection limit (server-wide or per client host).",
                self.connections_rejected,
            ),
            (
                "connections_closed_total",
                "counter",
                "Client connections the server closed (replies not taken in time, idle, or at a stop).",
                self.connections_closed,
            ),
        ];
        for (name, kind, help, value) in single {
            metric(name, kind, help, &[(String::new(), value)]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_exposes_every_status() {
        let stats = ServerStats::default();
        stats.reply_sent(Status::Ok, 100, true);
        stats.reply_sent(Status::Ok, 20, false);
        stats.reply_sent(Status::NotFound, 0, false);
        stats.reply_sent(Status::Busy, 5, false);
        let snap = stats.snapshot();
        assert_eq!(snap.replies_with(Status::Ok), 2);
        assert_eq!(snap.replies_with(Status::NotFound), 1);
        assert_eq!(snap.replies_with(Status::Busy), 1);
        assert_eq!((snap.payload_bytes, snap.direct_replies), (120, 1));
        let text = snap.prometheus();
        assert!(text.contains("swucx_serve_replies_total{status=\"ok\"} 2\n"));
        assert!(text.contains("swucx_serve_replies_total{status=\"not_found\"} 1\n"));
        assert!(text.contains("swucx_serve_payload_bytes_total 120\n"));
        assert!(text.contains("# TYPE swucx_serve_connections_open gauge\n"));
        for status in Status::ALL {
            assert!(text.contains(&format!("{{status=\"{}\"}}", status.name())));
        }
    }
}
