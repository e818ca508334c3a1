//! TCP keepalive on an endpoint's connection socket: how a peer whose host vanished (powered
//! off, cable pulled, network partition: no FIN or RST ever comes) turns into an endpoint error.
//!
//! UCX notices a killed peer by its socket being reset. A vanished host resets nothing: data
//! in flight is retransmitted for up to ~15 minutes (`net.ipv4.tcp_retries2`) and every pending
//! operation waits that long (measured over a veth pair whose far end went down: 32 pending
//! 1 MiB sends still pending after 118 s, an 8 B ping-pong after 30 s). UCX 1.13 alone does not
//! help: its tcp keepalive settings (`UCX_TCP_KEEPIDLE`, `_KEEPINTVL`, `_KEEPCNT`) did not reach
//! the sockets that carry data, keepalive never probes a socket with unacknowledged data anyway,
//! and `UCX_TCP_USER_TIMEOUT` only came with later releases.
//!
//! An endpoint created through a listener (client or server side) also keeps the socket of its
//! connection setup open (UCX's tcp connection manager), idle after wireup, and UCX fails the
//! endpoint when that socket fails. With keepalive armed on it (by those same three settings,
//! whose defaults swucx sets to 2 s, 1 s and 2 probes) the kernel probes the peer while the
//! connection is idle there, and once the probes go unanswered UCX reports the endpoint failed
//! (`Connection reset by remote peer`) and fails every pending operation: 2-4 s after the link
//! went down in the same measurement. UCX does not expose the socket, so it is found by its
//! addresses: `ucp_ep_query` gives the endpoint's local and remote socket addresses, and the
//! process's file descriptors are searched (newest first) for the socket with exactly that
//! pair, which no other socket on the host can have.
//!
//! Endpoints connected by worker address have no such socket; from UCX 1.22 on,
//! `UCX_TCP_USER_TIMEOUT` (swucx's default 10 s, `DEFAULT_CONFIG`) bounds how long their data
//! may go unacknowledged; with older releases they keep UCX's behaviour.

use std::net::SocketAddr;
use std::time::Duration;

use crate::Endpoint;
use crate::sockaddr::from_storage;
use crate::status::{Error, Result, Status};
use crate::sys;

/// The keepalive armed on connection sockets ([`Context::keepalive`](crate::Context::keepalive)).
/// A field left `None` keeps the system's default (`auto` in UCX's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`, from `UCX_TCP_KEEPIDLE`).
    pub idle: Option<Duration>,
    /// Time between unanswered probes (`TCP_KEEPINTVL`, from `UCX_TCP_KEEPINTVL`).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`, from
    /// `UCX_TCP_KEEPCNT`).
    pub probes: Option<u32>,
}

impl KeepAlive {
    /// Reads UCX's three tcp keepalive settings (None: unset). Its syntax: a time is
    /// `<number>[m|s|ms|us|ns]` (seconds without a unit), a count a whole number, `auto` the
    /// system's default; `inf` in any of them turns keepalive off (None). With swucx's defaults
    /// (2 s, 1 s, 2) a vanished peer is noticed within about `idle + probes * interval` = 4 s
    /// of its last sign of life, and a live idle peer costs one small packet each way per 2 s.
    pub(crate) fn from_settings(
        idle: Option<&str>,
        interval: Option<&str>,
        probes: Option<&str>,
    ) -> Result<Option<KeepAlive>> {
        if [idle, interval, probes]
            .iter()
            .any(|v| v.map(str::trim) == Some("inf"))
        {
            return Ok(None);
        }
        const TIME: &str = "a time (<number>[m|s|ms|us|ns])";
        Ok(Some(KeepAlive {
            idle: setting("TCP_KEEPIDLE", idle, TIME, duration)?,
            interval: setting("TCP_KEEPINTVL", interval, TIME, duration)?,
            probes: setting("TCP_KEEPCNT", probes, "a count", |v| v.parse().ok())?,
        }))
    }
}

/// One setting's value: None when unset or `auto`, an error naming the variable when `parse`
/// (which reads `what`) does not take it.
fn setting<T>(
    name: &str,
    value: Option<&str>,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>> {
    match value.map(str::trim) {
        None | Some("auto") => Ok(None),
        Some(v) => parse(v).map(Some).ok_or_else(|| {
            Error::with_detail(
                "keepalive",
                Status::ERR_INVALID_PARAM,
                format!("UCX_{name}={v}: not {what}, auto or inf"),
            )
        }),
    }
}

/// A time as UCX writes it (`2s`, `500ms`, `10000000.00us`, `2`), up to 2^31 s (the socket
/// options' limit).
fn duration(value: &str) -> Option<Duration> {
    const UNITS: &[(&str, f64)] = &[
        ("ms", 1e-3),
        ("us", 1e-6),
        ("ns", 1e-9),
        ("s", 1.0),
        ("m", 60.0),
    ];
    let (digits, scale) = UNITS
        .iter()
        .find_map(|&(unit, scale)| value.strip_suffix(unit).map(|d| (d, scale)))
        .unwrap_or((value, 1.0));
    let secs = digits.trim().parse::<f64>().ok()? * scale;
    (secs >= 0.0 && secs < f64::from(i32::MAX)).then(|| Duration::from_secs_f64(secs))
}

/// Arms `keepalive` on the connection socket of `ep`, if it has one: not an endpoint
/// connected by worker address, one already failed or closed, or one whose socket UCX closed
/// (those are left as they are; a failing `setsockopt` is logged). Called right after
/// `ucp_ep_create`; the query holds the endpoint as every UCX call on it does, the search and
/// the socket options need nothing of UCX.
pub(crate) fn arm(ep: &Endpoint, keepalive: KeepAlive) {
    let Some((local, remote)) = ep
        .lock_handle("ucp_ep_query")
        .ok()
        .and_then(|handle| socket_addresses(handle.raw()))
    else {
        return;
    };
    match find_socket(local, remote) {
        None => log::debug!("keepalive: no open socket {local} -> {remote}"),
        Some(fd) => {
            if let Err(e) = set_keepalive(fd, keepalive) {
                log::warn!("keepalive on the connection {local} -> {remote}: {e}");
            }
        }
    }
}

/// The endpoint's local and remote socket address, if it was created with one. `ep` is live
/// and held (`Endpoint::lock_handle`).
fn socket_addresses(ep: sys::ucp_ep_h) -> Option<(SocketAddr, SocketAddr)> {
    let mut attr = sys::ucp_ep_attr_t {
        field_mask: u64::from(
            sys::ucp_ep_attr_field::UCP_EP_ATTR_FIELD_LOCAL_SOCKADDR.0
                | sys::ucp_ep_attr_field::UCP_EP_ATTR_FIELD_REMOTE_SOCKADDR.0,
        ),
        // SAFETY: ucp_ep_attr_t is plain old data; all-zero is a valid value.
        ..unsafe { std::mem::zeroed() }
    };
    // SAFETY: ep is a live endpoint the caller holds; attr is writable.
    crate::status::check("ucp_ep_query", unsafe { sys::ucp_ep_query(ep, &mut attr) }).ok()?;
    // SAFETY: UCX filled both fields in (status OK); bindgen's sockaddr_storage has libc's
    // layout (both are the C type).
    unsafe {
        Some((
            from_storage(&attr.local_sockaddr as *const _ as *const libc::sockaddr_storage)?,
            from_storage(&attr.remote_sockaddr as *const _ as *const libc::sockaddr_storage)?,
        ))
    }
}

/// The open socket of this process whose local and peer addresses are `local` and `remote`.
/// Descriptors are tried newest (highest) first: the one sought was opened moments ago.
fn find_socket(local: SocketAddr, remote: SocketAddr) -> Option<libc::c_int> {
    let mut fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable_by(|a, b| b.cmp(a));
    fds.into_iter().find(|&fd| {
        socket_address(fd, libc::getsockname) == Some(local)
            && socket_address(fd, libc::getpeername) == Some(remote)
    })
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// `getsockname` or `getpeername` of `fd` as a `SocketAddr` (None: not an IP socket).
fn socket_address(fd: libc::c_int, name: NameFn) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage is writable for len bytes; an fd that is not a socket (or closed by now)
    // only makes the call fail.
    if unsafe { name(fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len) } != 0 {
        return None;
    }
    // SAFETY: storage is a valid sockaddr_storage the kernel filled in.
    unsafe { from_storage(&storage) }
}

fn set_keepalive(fd: libc::c_int, keepalive: KeepAlive) -> std::io::Result<()> {
    let secs = |d: Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, Some(1)),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            keepalive.idle.map(secs),
        ),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            keepalive.interval.map(secs),
        ),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            keepalive
                .probes
                .map(|n| n.clamp(1, i32::MAX as u32) as libc::c_int),
        ),
    ];
    for (level, option, value) in options {
        let Some(value) = value else { continue };
        // SAFETY: value is a c_int that lives across the call, and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(idle: &str, interval: &str, probes: &str) -> Result<Option<KeepAlive>> {
        KeepAlive::from_settings(Some(idle), Some(interval), Some(probes))
    }

    #[test]
    fn reads_ucx_syntax() {
        let k = parse("2s", "500ms", "3").unwrap().unwrap();
        assert_eq!(k.idle, Some(Duration::from_secs(2)));
        assert_eq!(k.interval, Some(Duration::from_millis(500)));
        assert_eq!(k.probes, Some(3));
        // As ucx_info prints UCX's own defaults; a bare number is seconds.
        let k = parse("10000000.00us", "2", "auto").unwrap().unwrap();
        assert_eq!(k.idle, Some(Duration::from_secs(10)));
        assert_eq!(k.interval, Some(Duration::from_secs(2)));
        assert_eq!(k.probes, None);
        let k = KeepAlive::from_settings(None, Some("1m"), None)
            .unwrap()
            .unwrap();
        assert_eq!(k.interval, Some(Duration::from_secs(60)));
        assert_eq!(k.idle, None);
    }

    #[test]
    fn inf_turns_it_off_and_nonsense_is_an_error() {
        assert_eq!(parse("inf", "1s", "2").unwrap(), None);
        assert_eq!(parse("2s", "1s", "inf").unwrap(), None);
        for bad in ["", "-1s", "2h", "s", "1e40s", "nan"] {
            let err = parse(bad, "1s", "2").expect_err(bad);
            assert_eq!(err.status(), Status::ERR_INVALID_PARAM, "{bad}");
            assert!(err.to_string().contains("UCX_TCP_KEEPIDLE"), "{err}");
        }
        for bad in ["2.5", "2s", "-1"] {
            let err = parse("2s", "1s", bad).expect_err(bad);
            assert!(err.to_string().contains("UCX_TCP_KEEPCNT"), "{err}");
        }
    }
}
