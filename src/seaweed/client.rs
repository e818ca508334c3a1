//! The needle client: reads a needle (or a range of it) from a [`NeedleServer`] over UCX.
//!
//! [`NeedleServer`]: crate::seaweed::server::NeedleServer

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::seaweed::direct::{DirectMode, DirectState};
use crate::seaweed::fid::FileId;
use crate::seaweed::needle::{NeedleError, check_crc};
use crate::seaweed::protocol::{
    AM_ID_READ, AM_ID_READ_REPLY, MIN_VERSION, ProtocolError, ReadFlags, ReadReply, ReadRequest,
    Status, VERSION,
};
use crate::seaweed::server::check_am_header_limit;
use crate::{AmDesc, AmFlags, CloseMode, Context, Endpoint, Worker};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// UCX failed (connection, transfer, peer death).
    #[error(transparent)]
    Ucx(#[from] crate::Error),
    /// A message did not decode.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server answered with an error status.
    #[error("server: {0:?}")]
    Status(Status),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The needle's data does not match its stored CRC (checked here when the server left it
    /// to the client): the needle is corrupt on the server's disk, as weed would report.
    #[error("needle data fails its CRC: {0}")]
    Corrupt(NeedleError),
    /// The reply's payload length disagrees with its header.
    #[error("reply carries {got} bytes, header says {want}")]
    LengthMismatch {
        /// Bytes that arrived.
        got: u64,
        /// Bytes the header announced.
        want: u64,
    },
    /// The reply announces a payload longer than the read asked for (or, for a read to the
    /// end, than [`MAX_PAYLOAD_LEN`]); refused before anything is allocated for it.
    #[error("reply announces {got} bytes, more than the {most} this read takes")]
    TooLong {
        /// Bytes the reply announced.
        got: u64,
        /// The most the read takes: its size, or [`MAX_PAYLOAD_LEN`].
        most: u64,
    },
    /// The reply is in another protocol version than its request (docs/protocol.md,
    /// "Versioning": only a version-1 `UNKNOWN_VERSION` or `BAD_REQUEST` may differ).
    #[error("reply in protocol version {got} to a request in version {want}")]
    VersionMismatch {
        /// The reply's version.
        got: u8,
        /// The request's.
        want: u8,
    },
}

impl ClientError {
    /// Whether sending the read again may succeed: the server answered [`Status::Busy`] or
    /// [`Status::Stale`], or no reply came in time. (A [`ClientError::Ucx`] error means the
    /// connection failed: connect again before retrying, or fall back to HTTP.)
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Status(s) => s.is_retryable(),
            ClientError::Timeout(_) => true,
            _ => false,
        }
    }

    /// Whether weed would answer this read with 404 (see [`Status::is_not_found`]).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status(s) if s.is_not_found())
    }
}

/// How often a read answered [`Status::Stale`] is sent again by default.
pub const DEFAULT_STALE_RETRIES: u32 = 4;

/// The longest payload a read to the end (size 0) takes: a needle's data is shorter (its
/// `Size` is a `u32`), and a reply announcing more is refused ([`ClientError::TooLong`]) before
/// a buffer is allocated for it. A read with a size takes at most that size.
pub const MAX_PAYLOAD_LEN: u64 = u32::MAX as u64;

/// The requests waiting for their replies and the replies that arrived for them. Shared by the
/// reply handler (which runs in the worker's progress, on whichever reading thread progresses)
/// and the readers, under its mutex.
#[derive(Default)]
struct Inbox {
    /// The ids of the requests in flight. A reply to any other id (its request timed out or
    /// failed, a duplicate, a stranger's) is dropped in the handler, which releases its payload:
    /// a rendezvous sender's send then completes without a transfer, so the server does not
    /// wait for it until it takes the connection for stalled.
    waiting: HashSet<u64>,
    /// Replies to waiting requests, with their payloads kept for the reader.
    arrived: HashMap<u64, (ReadReply, AmDesc)>,
}

/// A request's place in the [`Inbox`] while its read runs (owned by the reading thread). When
/// it drops (the read ended, with its reply or not) the request is no longer in flight, and a
/// reply that arrived meanwhile unclaimed is released.
struct Waiting<'a> {
    inbox: &'a Mutex<Inbox>,
    id: u64,
}

impl<'a> Waiting<'a> {
    /// Puts request `id` in flight.
    fn new(inbox: &'a Mutex<Inbox>, id: u64) -> Waiting<'a> {
        lock(inbox).waiting.insert(id);
        Waiting { inbox, id }
    }

    /// The reply, if it arrived.
    fn take(&self) -> Option<(ReadReply, AmDesc)> {
        lock(self.inbox).arrived.remove(&self.id)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let unclaimed = {
            let mut inbox = lock(self.inbox);
            inbox.waiting.remove(&self.id);
            inbox.arrived.remove(&self.id)
        };
        // Released outside the lock.
        drop(unclaimed);
    }
}

fn lock(inbox: &Mutex<Inbox>) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection to one needle server. Reads may be issued from any thread. It does not
/// reconnect: once its connection failed (the server died or restarted, `ClientError` tells a
/// peer failure), every later read fails too; connect a new client. A server closes
/// connections that go its idle timeout without a request (`swucx serve --idle-timeout-secs`,
/// 300 s by default): a client kept longer between reads finds it closed. (The Go client,
/// `go/seaweed`, pools, closes idle connections first, and reconnects.)
///
/// Over shared memory it reads large payloads straight from the server's memory (direct reads,
/// [`crate::seaweed::direct`]) once a first payload proved that this works;
/// [`with_direct_reads(false)`](NeedleClient::with_direct_reads) turns that off.
pub struct NeedleClient {
    worker: Worker,
    ep: Endpoint,
    inbox: Arc<Mutex<Inbox>>,
    next_id: AtomicU64,
    stale_retries: u32,
    direct: DirectState,
    direct_reads: AtomicU64,
    /// The protocol version requests go in: [`VERSION`], lower once the server said it does
    /// not speak it.
    version: AtomicU8,
}

/// Closes the connection at once (nothing is in flight between reads): a graceful close would
/// wait for a server that does not answer (a port that is not a needle server's) for seconds.
impl Drop for NeedleClient {
    fn drop(&mut self) {
        if let Err(e) = self.ep.close(CloseMode::Force) {
            log::debug!("closing a needle client's connection: {e}");
        }
    }
}

/// A successful read: the reply header and the bytes.
#[derive(Debug)]
pub struct NeedleData {
    /// The reply header (size of the whole data, CRC, name, mime, last-modified).
    pub reply: ReadReply,
    /// The requested bytes.
    pub data: Vec<u8>,
}

impl NeedleClient {
    /// Connects to the server at `addr`. Fails if the context's transports cannot carry the
    /// protocol's longest header ([`check_am_header_limit`]).
    pub fn connect(context: &Context, addr: SocketAddr) -> Result<NeedleClient, ClientError> {
        let worker = Worker::new(context)?;
        check_am_header_limit(&worker)?;
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let sink = inbox.clone();
        worker.set_am_handler(AM_ID_READ_REPLY, move |msg| {
            match ReadReply::decode(msg.header()) {
                Ok(reply) => {
                    let id = reply.request_id;
                    let mut inbox = lock(&sink);
                    if inbox.waiting.remove(&id) {
                        inbox.arrived.insert(id, (reply, msg.keep()));
                    } else {
                        // msg is released when the handler returns.
                        log::debug!("reply to request {id}, which is not in flight, dropped");
                    }
                }
                Err(e) => log::warn!("undecodable reply dropped: {e}"),
            }
        })?;
        let ep = worker.connect(addr)?;
        Ok(NeedleClient {
            worker,
            ep,
            inbox,
            next_id: AtomicU64::new(1),
            stale_retries: DEFAULT_STALE_RETRIES,
            direct: DirectState::new(true),
            direct_reads: AtomicU64::new(0),
            version: AtomicU8::new(VERSION),
        })
    }

    /// Turns direct reads on (the default: used over shared memory once proven) or off.
    pub fn with_direct_reads(mut self, enabled: bool) -> NeedleClient {
        self.direct = DirectState::new(enabled);
        self
    }

    /// How many reads took their payload straight from the server's memory.
    pub fn direct_reads(&self) -> u64 {
        self.direct_reads.load(Ordering::Relaxed)
    }

    /// Sends a read answered [`Status::Stale`] (it raced a compaction commit) again up to
    /// `retries` times, each a new request: the first at once, later ones after a back-off of
    /// 1 ms doubling up to 50 ms, all within the read's timeout. 0 returns `Stale` to the
    /// caller. Default: [`DEFAULT_STALE_RETRIES`].
    pub fn with_stale_retries(mut self, retries: u32) -> NeedleClient {
        self.stale_retries = retries;
        self
    }

    /// Reads `size` bytes (0: to the end, at most [`MAX_PAYLOAD_LEN`]) at `offset` of the
    /// needle `fid`, waiting up to `timeout` for the reply (a timeout too long to add to the
    /// clock waits without end).
    pub fn read(
        &self,
        fid: &FileId,
        offset: u64,
        size: u64,
        timeout: Duration,
    ) -> Result<NeedleData, ClientError> {
        self.read_with_jwt(fid, offset, size, "", timeout)
    }

    /// As [`read`](NeedleClient::read), presenting the read JWT `jwt` (the token, without
    /// `Bearer `) to a server that requires one.
    pub fn read_with_jwt(
        &self,
        fid: &FileId,
        offset: u64,
        size: u64,
        jwt: &str,
        timeout: Duration,
    ) -> Result<NeedleData, ClientError> {
        let deadline = Instant::now().checked_add(timeout);
        // The CRC of a whole large needle is checked here, not on the server: the work spreads
        // over the clients, and the check covers the transfer too.
        let flags = ReadFlags::WANT_NAME | ReadFlags::WANT_MIME | ReadFlags::CRC_AT_CLIENT;
        let mut request = ReadRequest {
            version: MIN_VERSION,
            request_id: 0,
            volume_id: fid.volume_id,
            needle_id: fid.needle_id,
            cookie: fid.cookie,
            offset,
            size,
            flags,
            jwt: jwt.as_bytes().to_vec(),
        };
        let mut stale = 0;
        loop {
            // Every attempt is a new request (a late reply to an earlier one is dropped).
            request.request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
            request.version = self.version.load(Ordering::Relaxed);
            request.flags = if self.direct.mode() != DirectMode::Off && request.version >= 2 {
                flags | ReadFlags::DIRECT
            } else {
                flags
            };
            match self.read_once(&request, timeout, deadline) {
                // An older server: one version lower (direct reads need version 2).
                Err(ClientError::Status(Status::UnknownVersion))
                    if request.version > MIN_VERSION =>
                {
                    let lower = request.version - 1;
                    log::info!("the server does not speak protocol version {}", lower + 1);
                    // Only from the version this request went in (another reader may have
                    // stepped down further meanwhile).
                    let _ = self.version.compare_exchange(
                        request.version,
                        lower,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if lower < 2 {
                        self.direct.disable();
                    }
                }
                Err(ClientError::Status(Status::Stale)) if stale < self.stale_retries => {
                    if stale > 0 {
                        let pause = Duration::from_millis(1 << (stale - 1).min(6))
                            .min(Duration::from_millis(50));
                        if deadline.is_some_and(|end| Instant::now() + pause >= end) {
                            return Err(ClientError::Status(Status::Stale));
                        }
                        std::thread::sleep(pause);
                    }
                    stale += 1;
                    log::debug!("read of {fid} raced a compaction; retry {stale}");
                }
                outcome => return outcome,
            }
        }
    }

    /// Sends `request` and waits for its reply (until `deadline`, if any).
    fn read_once(
        &self,
        request: &ReadRequest,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<NeedleData, ClientError> {
        // In flight before it is sent, so that no reply finds it missing.
        let waiting = Waiting::new(&self.inbox, request.request_id);
        let send = self.ep.am_send(
            AM_ID_READ,
            request.encode()?,
            Vec::new(),
            AmFlags::REPLY | AmFlags::EAGER,
        )?;
        let mut arrived = None;
        let got_reply = self.worker.progress_until(
            || {
                arrived = waiting.take();
                arrived.is_some() || self.ep.failure().is_some()
            },
            deadline,
        )?;
        drop(send);
        drop(waiting);
        let Some((reply, desc)) = arrived else {
            if let Some(status) = self.ep.failure() {
                return Err(
                    crate::Error::with_detail("read", status, "server connection failed").into(),
                );
            }
            debug_assert!(!got_reply);
            return Err(ClientError::Timeout(timeout));
        };
        check_reply(request, &reply, desc.len())?;
        let data = match reply.direct.filter(|_| desc.is_rendezvous()) {
            Some(from) => {
                // A payload copied directly drops `desc` unreceived with the closure, which
                // completes the server's send.
                let (data, direct) = self.direct.fetch(
                    from,
                    desc.len(),
                    || self.ep.on_shared_memory(),
                    || receive_payload(desc, timeout, deadline),
                )?;
                if direct {
                    self.direct_reads.fetch_add(1, Ordering::Relaxed);
                }
                data
            }
            None => receive_payload(desc, timeout, deadline)?,
        };
        if reply.crc_unchecked {
            check_crc(&data, reply.crc).map_err(ClientError::Corrupt)?;
        }
        Ok(NeedleData { reply, data })
    }
}

/// Whether `reply`, with a `len`-byte payload, answers `request` acceptably: in its version
/// (or a version-1 `UNKNOWN_VERSION` or `BAD_REQUEST`, which a server sends to a request it
/// cannot decode), `OK`, and with a payload of the announced length that the read takes (at
/// most its size, or [`MAX_PAYLOAD_LEN`] to the end). Checked before a buffer is allocated.
fn check_reply(request: &ReadRequest, reply: &ReadReply, len: usize) -> Result<(), ClientError> {
    let undecoded = reply.version == MIN_VERSION
        && matches!(reply.status, Status::UnknownVersion | Status::BadRequest);
    if reply.version != request.version && !undecoded {
        return Err(ClientError::VersionMismatch {
            got: reply.version,
            want: request.version,
        });
    }
    if reply.status != Status::Ok {
        return Err(ClientError::Status(reply.status));
    }
    if len as u64 != reply.payload_len {
        return Err(ClientError::LengthMismatch {
            got: len as u64,
            want: reply.payload_len,
        });
    }
    let most = match request.size {
        0 => MAX_PAYLOAD_LEN,
        size => size,
    };
    if reply.payload_len > most {
        return Err(ClientError::TooLong {
            got: reply.payload_len,
            most,
        });
    }
    Ok(())
}

/// Receives a reply's payload through UCX, waiting until `deadline` (if any).
fn receive_payload(
    desc: AmDesc,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, ClientError> {
    let len = desc.len();
    let receive = desc.recv_into(vec![0u8; len])?;
    if let Some(end) = deadline {
        if !receive.wait_timeout(end.saturating_duration_since(Instant::now()))? {
            return Err(ClientError::Timeout(timeout));
        }
    }
    Ok(receive.wait()?.buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: u8, size: u64) -> ReadRequest {
        ReadRequest {
            version,
            request_id: 9,
            volume_id: 1,
            needle_id: 2,
            cookie: 3,
            offset: 0,
            size,
            flags: ReadFlags::NONE,
            jwt: Vec::new(),
        }
    }

    fn ok(len: u64) -> ReadReply {
        ReadReply {
            data_size: len,
            payload_len: len,
            ..ReadReply::status(9, Status::Ok)
        }
    }

    #[test]
    fn replies_are_checked_before_a_buffer_is_allocated() {
        let check = |request: &ReadRequest, reply: &ReadReply, len: u64| {
            check_reply(request, reply, len as usize)
        };
        let v3 = request(VERSION, 0);
        assert!(check(&v3, &ok(10).in_version(VERSION), 10).is_ok());
        let most = MAX_PAYLOAD_LEN;
        assert!(check(&v3, &ok(most).in_version(VERSION), most).is_ok());
        assert!(matches!(
            check(&v3, &ok(most + 1).in_version(VERSION), most + 1),
            Err(ClientError::TooLong { got, most: m }) if got == most + 1 && m == most
        ));
        // With a size, that size is the most, however large.
        let sized = request(VERSION, 1 << 40);
        assert!(check(&sized, &ok(1 << 40).in_version(VERSION), 1 << 40).is_ok());
        assert!(matches!(
            check(
                &sized,
                &ok((1 << 40) + 1).in_version(VERSION),
                (1 << 40) + 1
            ),
            Err(ClientError::TooLong { .. })
        ));
        assert!(matches!(
            check(&v3, &ok(10).in_version(VERSION), 11),
            Err(ClientError::LengthMismatch { got: 11, want: 10 })
        ));
        assert!(matches!(
            check(&v3, &ok(10).in_version(2), 10),
            Err(ClientError::VersionMismatch {
                got: 2,
                want: VERSION
            })
        ));
        // A server answers what it cannot decode in version 1.
        for status in [Status::UnknownVersion, Status::BadRequest] {
            assert!(matches!(
                check(&v3, &ReadReply::status(9, status), 0),
                Err(ClientError::Status(s)) if s == status
            ));
        }
        assert!(matches!(
            check(&v3, &ReadReply::status(9, Status::NotFound), 0),
            Err(ClientError::VersionMismatch {
                got: 1,
                want: VERSION
            })
        ));
        let v1 = request(1, 0);
        assert!(matches!(
            check(&v1, &ReadReply::status(9, Status::NotFound), 0),
            Err(ClientError::Status(Status::NotFound))
        ));
    }
}
