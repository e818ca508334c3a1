//! Which connections a needle server lets in: at most so many open at once, and at most so
//! many from one client host, so that one host (a runaway client, a leak, a hostile peer)
//! cannot take every slot and lock the others out.
//!
//! The accepting lane takes a [`Slot`] for each connection request before it accepts it; the
//! slot travels with the connection to the lane that serves it and is given back when that
//! lane drops it (the connection ended, its accept failed, or the server stopped before
//! accepting it). Taking is done by one thread; giving back by any.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::seaweed::stats::ServerStats;

/// Connections a server keeps open at most by default
/// ([`NeedleServer::with_max_connections`]); past it new ones are rejected and their clients
/// read over HTTP. The Go client opens one per engine to a server, so this is about as many
/// mounting hosts.
///
/// [`NeedleServer::with_max_connections`]: crate::seaweed::NeedleServer::with_max_connections
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Connections one client host keeps open at most by default
/// ([`NeedleServer::with_max_connections_per_host`]): an eighth of
/// [`DEFAULT_MAX_CONNECTIONS`], far more than a host's mounts open (one per engine each), so
/// that one host alone cannot fill the server.
///
/// [`NeedleServer::with_max_connections_per_host`]: crate::seaweed::NeedleServer::with_max_connections_per_host
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 512;

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds its most connections.
    ServerFull { max: usize },
    /// The client's host holds its most connections.
    HostFull { host: IpAddr, max: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ServerFull { max } => write!(
                f,
                "{max} connections open, the most this server keeps (--max-connections)"
            ),
            Refusal::HostFull { host, max } => write!(
                f,
                "{max} connections open from {host}, the most one host keeps \
                 (--max-connections-per-host)"
            ),
        }
    }
}

/// The server's connection slots: the limits and what is taken, per host. Shared by the lanes.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    max_per_host: usize,
    /// Open connections per client host (hosts with none are removed).
    per_host: Mutex<HashMap<IpAddr, usize>>,
    /// Counts the open connections (the gauge the server-wide limit is checked against).
    stats: Arc<ServerStats>,
}

/// One open connection's slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    /// The client's host, when UCX told it.
    host: Option<IpAddr>,
}

impl Slots {
    /// Slots for at most `max` connections, `max_per_host` from one host (0 counts as 1).
    pub(crate) fn new(max: usize, max_per_host: usize, stats: Arc<ServerStats>) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            max_per_host: max_per_host.max(1),
            per_host: Mutex::new(HashMap::new()),
            stats,
        })
    }

    /// A slot for a connection from `host` (unknown: counted only against the server-wide
    /// limit), or why there is none. One thread takes slots (the accepting lane), so the
    /// server-wide check and the count cannot race with another take.
    pub(crate) fn take(self: &Arc<Slots>, host: Option<IpAddr>) -> Result<Slot, Refusal> {
        if self.stats.open_connections() >= self.max {
            return Err(Refusal::ServerFull { max: self.max });
        }
        // One host whatever the address family it came in by (::ffff:10.0.0.1 is 10.0.0.1).
        let host = host.map(|ip| ip.to_canonical());
        if let Some(ip) = host {
            let mut per_host = self.per_host();
            let open = per_host.entry(ip).or_insert(0);
            if *open >= self.max_per_host {
                return Err(Refusal::HostFull {
                    host: ip,
                    max: self.max_per_host,
                });
            }
            *open += 1;
        }
        self.stats.connection_opening();
        Ok(Slot {
            slots: self.clone(),
            host,
        })
    }

    fn per_host(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_host.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.host {
            let mut per_host = self.slots.per_host();
            if let Some(open) = per_host.get_mut(&ip) {
                *open -= 1;
                if *open == 0 {
                    per_host.remove(&ip);
                }
            }
        }
        self.slots.stats.connections_gone(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn one_host_cannot_take_every_slot() {
        let stats = Arc::new(ServerStats::default());
        let slots = Slots::new(4, 2, stats.clone());
        let a1 = slots.take(ip("10.0.0.1")).unwrap();
        let a2 = slots.take(ip("::ffff:10.0.0.1")).unwrap();
        let host_full = Refusal::HostFull {
            host: "10.0.0.1".parse().unwrap(),
            max: 2,
        };
        assert_eq!(slots.take(ip("10.0.0.1")).unwrap_err(), host_full);
        let b1 = slots.take(ip("10.0.0.2")).unwrap();
        let unknown = slots.take(None).unwrap();
        assert_eq!(stats.open_connections(), 4);
        // Server-wide before per host: a new host is refused too.
        assert_eq!(
            slots.take(ip("10.0.0.3")).unwrap_err(),
            Refusal::ServerFull { max: 4 }
        );
        drop(unknown);
        assert_eq!(slots.take(ip("10.0.0.1")).unwrap_err(), host_full);
        drop(a1);
        let a3 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(stats.open_connections(), 3);
        drop((a2, a3, b1));
        assert_eq!(stats.open_connections(), 0);
        assert!(slots.per_host().is_empty(), "hosts with none are forgotten");
        assert!(host_full.to_string().contains("10.0.0.1"));
    }

    #[test]
    fn zero_limits_count_as_one() {
        let slots = Slots::new(0, 0, Arc::new(ServerStats::default()));
        let only = slots.take(ip("10.0.0.1")).unwrap();
        assert!(matches!(
            slots.take(ip("10.0.0.2")),
            Err(Refusal::ServerFull { max: 1 })
        ));
        drop(only);
        assert!(slots.take(ip("10.0.0.2")).is_ok());
    }
}
