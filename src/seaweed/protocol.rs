//! The needle-read wire protocol, versions 1 to 3: a READ request and its reply header.
//!
//! Pure and transport independent: these are the bytes that travel as UCX active-message
//! headers (the request as the header of [`AM_ID_READ`] with no payload, the reply header as the
//! header of [`AM_ID_READ_REPLY`] with the needle bytes as its payload). docs/protocol.md is the
//! specification; this module is its reference implementation.
//!
//! Every message starts with the same four bytes: the magic `"SW"`, a version byte and a kind
//! byte. All integers are little-endian at fixed offsets, variable fields are length-prefixed and
//! bounded ([`MAX_JWT_LEN`], [`MAX_NAME_LEN`], [`MAX_MIME_LEN`]), so no header is longer than
//! [`MAX_HEADER_LEN`] bytes. The decoders take arbitrary bytes and never panic: anything
//! truncated, oversized, inconsistent or followed by trailing bytes is a [`ProtocolError`]. Any
//! input a decoder accepts re-encodes to exactly the same bytes (the encoding is canonical).

use thiserror::Error;

use super::volume::{ReadOptions, ReadResult, VolumeError};

/// The first two bytes of every message.
pub const MAGIC: [u8; 2] = *b"SW";
/// The highest protocol version this module speaks. Version 2 is version 1 plus direct reads
/// ([`ReadFlags::DIRECT`], [`ReadReply::direct`]); version 3 is version 2 plus the status
/// [`Status::NoVolume`].
pub const VERSION: u8 = 3;
/// The first version with [`Status::NoVolume`].
pub const NO_VOLUME_VERSION: u8 = 3;
/// The lowest protocol version this module speaks.
pub const MIN_VERSION: u8 = 1;
/// Kind byte of a READ request.
pub const KIND_READ_REQUEST: u8 = 1;
/// Kind byte of a READ reply.
pub const KIND_READ_REPLY: u8 = 2;

/// Active-message id a READ request is sent on (header = request, no payload).
pub const AM_ID_READ: u16 = 0x30;
/// Active-message id a READ reply is sent on (header = reply header, payload = the bytes).
pub const AM_ID_READ_REPLY: u16 = 0x31;

/// Length of the fixed part of a READ request (everything before the JWT).
pub const READ_REQUEST_FIXED_LEN: usize = 48;
/// Length of the fixed part of a READ reply header (everything before name and mime).
pub const READ_REPLY_FIXED_LEN: usize = 48;
/// Largest read JWT a request may carry.
pub const MAX_JWT_LEN: usize = 4096;
/// Largest file name a reply may carry (needles store at most 255 bytes).
pub const MAX_NAME_LEN: usize = 1024;
/// Largest MIME type a reply may carry (needles store at most 255 bytes).
pub const MAX_MIME_LEN: usize = 1024;
/// Largest encoded READ request.
pub const MAX_READ_REQUEST_LEN: usize = READ_REQUEST_FIXED_LEN + MAX_JWT_LEN;
/// Length of the direct-read trailer of a version-2 reply with [`ReadReply::direct`].
pub const DIRECT_TRAILER_LEN: usize = 16;
/// Largest encoded READ reply header.
pub const MAX_READ_REPLY_LEN: usize =
    READ_REPLY_FIXED_LEN + MAX_NAME_LEN + MAX_MIME_LEN + DIRECT_TRAILER_LEN;
/// Largest header of any message: what a transport must be able to carry as an AM header
/// (UCX 1.13 reports `max_am_header` 8100..8140 bytes on this machine's transports).
pub const MAX_HEADER_LEN: usize = if MAX_READ_REQUEST_LEN > MAX_READ_REPLY_LEN {
    MAX_READ_REQUEST_LEN
} else {
    MAX_READ_REPLY_LEN
};

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// Fewer bytes than the layout needs.
    #[error("truncated message: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the layout needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// More bytes than any valid message of this kind can have.
    #[error("message of {len} bytes exceeds the {max}-byte maximum")]
    TooLong {
        /// Bytes present.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Bytes after the end of the message.
    #[error("{extra} trailing bytes after a {len}-byte message")]
    TrailingBytes {
        /// The message length its fields describe.
        len: usize,
        /// Bytes beyond it.
        extra: usize,
    },
    /// The first two bytes are not `"SW"`.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A message of another kind.
    #[error("message kind {found}, expected {expected}")]
    WrongKind {
        /// The kind the decoder wanted.
        expected: u8,
        /// The kind byte present.
        found: u8,
    },
    /// A variable field longer than its limit.
    #[error("{field} of {len} bytes exceeds the {max}-byte limit")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its limit.
        max: usize,
    },
    /// Flag bits that version 1 does not define.
    #[error("undefined flag bits {0:#x}")]
    UnknownFlags(u16),
    /// A status code that version 1 does not define.
    #[error("undefined status code {0}")]
    UnknownStatus(u8),
    /// A reserved field that is not zero.
    #[error("reserved field is {0:#x}, must be 0")]
    ReservedNotZero(u16),
    /// A JWT byte outside printable ASCII (`0x21..=0x7e`).
    #[error("JWT byte {byte:#04x} at {at} is not printable ASCII")]
    BadJwtByte {
        /// The byte.
        byte: u8,
        /// Its index in the JWT.
        at: usize,
    },
    /// Fields that contradict each other.
    #[error("inconsistent message: {0}")]
    Inconsistent(&'static str),
}

/// The outcome of a READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The payload holds the requested bytes.
    Ok = 0,
    /// No such needle (in a volume this server holds).
    NotFound = 1,
    /// The needle exists with another cookie.
    CookieMismatch = 2,
    /// The needle was deleted.
    Deleted = 3,
    /// The needle's TTL has passed.
    Expired = 4,
    /// The read JWT is missing, invalid, expired or for another file id.
    Unauthorized = 5,
    /// The range lies outside the data; `data_size` holds the data length.
    BadRange = 6,
    /// The reply would exceed the server's payload limit; read smaller ranges. `data_size` holds
    /// the data length. Also a read of a gzip needle that would decompress more than the server's
    /// cap (`needle::MAX_DECOMPRESSED`); `data_size` is then the length the gzip trailer claims.
    TooLarge = 7,
    /// The server is overloaded; retry after a back-off.
    Busy = 8,
    /// The volume changed under the read (compaction); retry at once.
    Stale = 9,
    /// A server-side failure (I/O, corrupt needle; before version 3 also a volume the server
    /// does not hold): read it over HTTP, not again here.
    Internal = 10,
    /// The server does not speak the request's version; `data_size` holds the highest it does.
    UnknownVersion = 11,
    /// The request did not decode.
    BadRequest = 12,
    /// (Version 3.) The server does not hold the volume (not in its directories, or a kind it
    /// does not read: erasure-coded, remote tier): read it over HTTP, where weed finds it.
    NoVolume = 13,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 14] = [
        Status::Ok,
        Status::NotFound,
        Status::CookieMismatch,
        Status::Deleted,
        Status::Expired,
        Status::Unauthorized,
        Status::BadRange,
        Status::TooLarge,
        Status::Busy,
        Status::Stale,
        Status::Internal,
        Status::UnknownVersion,
        Status::BadRequest,
        Status::NoVolume,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status's name in snake case (`ok`, `not_found`, ...), as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not_found",
            Status::CookieMismatch => "cookie_mismatch",
            Status::Deleted => "deleted",
            Status::Expired => "expired",
            Status::Unauthorized => "unauthorized",
            Status::BadRange => "bad_range",
            Status::TooLarge => "too_large",
            Status::Busy => "busy",
            Status::Stale => "stale",
            Status::Internal => "internal",
            Status::UnknownVersion => "unknown_version",
            Status::BadRequest => "bad_request",
            Status::NoVolume => "no_volume",
        }
    }

    /// The status for a wire code.
    pub fn from_code(code: u8) -> Result<Self, ProtocolError> {
        Status::ALL
            .get(usize::from(code))
            .copied()
            .ok_or(ProtocolError::UnknownStatus(code))
    }

    /// Whether sending the same request again may succeed ([`Status::Busy`], [`Status::Stale`]).
    pub fn is_retryable(self) -> bool {
        matches!(self, Status::Busy | Status::Stale)
    }

    /// Whether weed's HTTP read answers this case with 404.
    pub fn is_not_found(self) -> bool {
        matches!(
            self,
            Status::NotFound | Status::CookieMismatch | Status::Deleted | Status::Expired
        )
    }
}

impl From<&VolumeError> for Status {
    fn from(e: &VolumeError) -> Self {
        match e {
            // A wrong cookie is NOT_FOUND on the wire, as weed answers 404 for both: telling
            // them apart would tell a client which needle ids exist without their cookies.
            VolumeError::NotFound(_) | VolumeError::CookieMismatch(_) => Status::NotFound,
            VolumeError::VolumeNotFound(_) | VolumeError::Remote(_) => Status::NoVolume,
            VolumeError::Deleted(_) => Status::Deleted,
            VolumeError::Expired(_) => Status::Expired,
            VolumeError::BadRange { .. } => Status::BadRange,
            VolumeError::TooLarge { .. } => Status::TooLarge,
            VolumeError::Stale(_) => Status::Stale,
            // Clients read those over HTTP, where weed expands them.
            VolumeError::ChunkManifest(_)
            | VolumeError::Needle { .. }
            | VolumeError::SuperBlock { .. }
            | VolumeError::Vif { .. }
            | VolumeError::OffsetWidth(_)
            | VolumeError::Io { .. } => Status::Internal,
        }
    }
}

impl From<VolumeError> for Status {
    fn from(e: VolumeError) -> Self {
        Status::from(&e)
    }
}

/// The flag bits of a READ request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReadFlags(u16);

impl ReadFlags {
    /// No flags.
    pub const NONE: ReadFlags = ReadFlags(0);
    /// Return the needle's file name in the reply.
    pub const WANT_NAME: ReadFlags = ReadFlags(1);
    /// Return the needle's MIME type in the reply.
    pub const WANT_MIME: ReadFlags = ReadFlags(1 << 1);
    /// Return the bytes as stored (gzip for compressed needles) instead of decompressed.
    pub const WANT_STORED: ReadFlags = ReadFlags(1 << 2);
    /// The client checks the CRC of a whole large needle itself (the server may then skip its
    /// check and say so with [`ReadReply::crc_unchecked`]).
    pub const CRC_AT_CLIENT: ReadFlags = ReadFlags(1 << 3);
    /// Version 2: the client can read the server's memory (`process_vm_readv`); a rendezvous
    /// payload's reply then says where it lies ([`ReadReply::direct`]).
    pub const DIRECT: ReadFlags = ReadFlags(1 << 4);
    /// Every bit version 2 defines (version 1: all but [`ReadFlags::DIRECT`]).
    pub const ALL: ReadFlags = ReadFlags(0b1_1111);

    /// The raw bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Flags from raw bits, refusing undefined ones.
    pub fn from_bits(bits: u16) -> Result<Self, ProtocolError> {
        if bits & !Self::ALL.0 != 0 {
            return Err(ProtocolError::UnknownFlags(bits & !Self::ALL.0));
        }
        Ok(ReadFlags(bits))
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: ReadFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ReadFlags {
    type Output = ReadFlags;
    fn bitor(self, rhs: ReadFlags) -> ReadFlags {
        ReadFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ReadFlags {
    fn bitor_assign(&mut self, rhs: ReadFlags) {
        self.0 |= rhs.0;
    }
}

/// A READ request: bytes `[offset, offset + size)` of needle `(volume_id, needle_id, cookie)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadRequest {
    /// The protocol version ([`MIN_VERSION`]..=[`VERSION`]); the reply comes in the same one.
    pub version: u8,
    /// Chosen by the client; echoed in the reply.
    pub request_id: u64,
    /// The volume id of the file id.
    pub volume_id: u32,
    /// The needle id of the file id.
    pub needle_id: u64,
    /// The cookie of the file id.
    pub cookie: u32,
    /// First byte to return.
    pub offset: u64,
    /// How many bytes; 0 reads to the end of the data.
    pub size: u64,
    /// What else to return, and in which form.
    pub flags: ReadFlags,
    /// The read JWT (the token alone, without `Bearer `), empty when none.
    pub jwt: Vec<u8>,
}

/// A version-1 request for the whole of needle 0 of volume 0, for building on.
impl Default for ReadRequest {
    fn default() -> Self {
        ReadRequest {
            version: MIN_VERSION,
            request_id: 0,
            volume_id: 0,
            needle_id: 0,
            cookie: 0,
            offset: 0,
            size: 0,
            flags: ReadFlags::NONE,
            jwt: Vec::new(),
        }
    }
}

/// Where a rendezvous payload lies in the server's memory (a version-2 reply to a request with
/// [`ReadFlags::DIRECT`]). The bytes stay there, unchanged, until the client releases the
/// reply's rendezvous descriptor (or receives the payload through UCX, or the connection fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirectPayload {
    /// Address of the payload's first byte in the server process.
    pub address: u64,
    /// The server's process id (in the server's pid namespace).
    pub pid: u32,
}

/// Reply flag: the payload is the needle's stored gzip bytes.
const REPLY_COMPRESSED: u8 = 1;
/// Reply flag: `last_modified` is present.
const REPLY_HAS_LAST_MODIFIED: u8 = 1 << 1;
/// Reply flag: a name is present (possibly empty).
const REPLY_HAS_NAME: u8 = 1 << 2;
/// Reply flag: a MIME type is present (possibly empty).
const REPLY_HAS_MIME: u8 = 1 << 3;
/// Reply flag: the server did not check the CRC; the client must.
const REPLY_CRC_UNCHECKED: u8 = 1 << 4;
/// Reply flag (version 2): a direct-read trailer follows name and mime.
const REPLY_DIRECT: u8 = 1 << 5;
/// Every reply flag bit version 2 defines (version 1: all but [`REPLY_DIRECT`]).
const REPLY_ALL: u8 = 0b11_1111;

/// The header of a READ reply; the payload (`payload_len` bytes) travels beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadReply {
    /// The protocol version: the request's, or 1 for [`Status::UnknownVersion`] and for a
    /// request that did not decode.
    pub version: u8,
    /// The request's id.
    pub request_id: u64,
    /// The outcome.
    pub status: Status,
    /// The payload is the stored gzip bytes of a compressed needle (only with [`Status::Ok`]).
    pub compressed: bool,
    /// Length of the whole data in the returned form (with [`Status::Ok`], [`Status::BadRange`]
    /// and [`Status::TooLarge`]); for [`Status::UnknownVersion`] the highest version the server
    /// speaks; otherwise 0.
    pub data_size: u64,
    /// The CRC-32C stored in the needle's tail (0 unless [`Status::Ok`]).
    pub crc: u32,
    /// Last-modified time in unix seconds, when the needle stores one.
    pub last_modified: Option<u64>,
    /// The file name, when asked for and stored.
    pub name: Option<Vec<u8>>,
    /// The MIME type, when asked for and stored.
    pub mime: Option<Vec<u8>>,
    /// Length of the payload that follows (0 unless [`Status::Ok`]).
    pub payload_len: u64,
    /// The payload is the whole stored data and the server did not check it against `crc`
    /// (only with [`Status::Ok`], when the request carried [`ReadFlags::CRC_AT_CLIENT`]): the
    /// client must (see [`check_crc`](crate::seaweed::needle::check_crc)).
    pub crc_unchecked: bool,
    /// Where the payload lies in the server's memory (version 2, only with [`Status::Ok`], a
    /// non-empty payload and a request with [`ReadFlags::DIRECT`]).
    pub direct: Option<DirectPayload>,
}

impl ReadReply {
    /// A reply with no payload: an error status, or `Ok` for an empty range.
    pub fn status(request_id: u64, status: Status) -> Self {
        ReadReply {
            version: MIN_VERSION,
            request_id,
            status,
            compressed: false,
            data_size: 0,
            crc: 0,
            last_modified: None,
            name: None,
            mime: None,
            payload_len: 0,
            crc_unchecked: false,
            direct: None,
        }
    }

    /// The answer to a request in a version this server does not speak.
    pub fn unknown_version(request_id: u64) -> Self {
        ReadReply {
            data_size: u64::from(VERSION),
            ..Self::status(request_id, Status::UnknownVersion)
        }
    }

    /// This reply in `version`: a status that version lacks becomes the one it had for the case
    /// ([`Status::NoVolume`] is [`Status::Internal`] before version 3).
    pub fn in_version(mut self, version: u8) -> Self {
        self.version = version;
        if self.status == Status::NoVolume && version < NO_VOLUME_VERSION {
            self.status = Status::Internal;
        }
        self
    }

    /// The reply for a volume error (`data_size` is the data length for a bad range, and the
    /// length the gzip trailer claims for a needle over the decompression cap).
    pub fn from_error(request_id: u64, e: &VolumeError) -> Self {
        let mut r = Self::status(request_id, Status::from(e));
        if let VolumeError::BadRange { len, .. } | VolumeError::TooLarge { len, .. } = e {
            r.data_size = *len;
        }
        r
    }

    /// The header of a successful read of `request` (the payload is `result.data`). Name and
    /// mime are included when asked for and stored in the needle.
    pub fn ok(request: &ReadRequest, result: &ReadResult) -> Self {
        let pick = |want: ReadFlags, v: &Vec<u8>| {
            (request.flags.contains(want) && !v.is_empty()).then(|| v.clone())
        };
        ReadReply {
            version: request.version,
            request_id: request.request_id,
            status: Status::Ok,
            compressed: result.compressed,
            data_size: result.total_len,
            crc: result.meta.checksum,
            last_modified: result.meta.last_modified,
            name: pick(ReadFlags::WANT_NAME, &result.meta.name),
            mime: pick(ReadFlags::WANT_MIME, &result.meta.mime),
            payload_len: result.data.len() as u64,
            crc_unchecked: result.crc_unchecked,
            direct: None,
        }
    }
}

impl ReadRequest {
    /// What to ask the volume reader for.
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            offset: self.offset,
            size: (self.size != 0).then_some(self.size),
            stored: self.flags.contains(ReadFlags::WANT_STORED),
            now_unix_ns: None,
            crc_at_caller: self.flags.contains(ReadFlags::CRC_AT_CLIENT),
        }
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        READ_REQUEST_FIXED_LEN + self.jwt.len()
    }

    /// Check the limits `decode` enforces.
    fn validate(&self) -> Result<(), ProtocolError> {
        if self.jwt.len() > MAX_JWT_LEN {
            return Err(ProtocolError::FieldTooLong {
                field: "jwt",
                len: self.jwt.len(),
                max: MAX_JWT_LEN,
            });
        }
        if let Some(at) = self.jwt.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(ProtocolError::BadJwtByte {
                byte: self.jwt[at],
                at,
            });
        }
        ReadFlags::from_bits(self.flags.bits())?;
        check_version(self.version)?;
        if self.version < 2 && self.flags.contains(ReadFlags::DIRECT) {
            return Err(ProtocolError::UnknownFlags(ReadFlags::DIRECT.bits()));
        }
        Ok(())
    }

    /// Append the encoding to `out`. Fails (writing nothing) on a JWT over [`MAX_JWT_LEN`] or
    /// with a non-printable byte.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.validate()?;
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(KIND_READ_REQUEST);
        out.extend_from_slice(&self.flags.bits().to_le_bytes());
        out.extend_from_slice(&(self.jwt.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.volume_id.to_le_bytes());
        out.extend_from_slice(&self.cookie.to_le_bytes());
        out.extend_from_slice(&self.needle_id.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.jwt);
        Ok(())
    }

    /// The encoding.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decode exactly one request from `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, ProtocolError> {
        let version = check_prelude(buf, KIND_READ_REQUEST, MAX_READ_REQUEST_LEN)?;
        let r = Reader(buf);
        if buf.len() < READ_REQUEST_FIXED_LEN {
            return Err(ProtocolError::Truncated {
                need: READ_REQUEST_FIXED_LEN,
                have: buf.len(),
            });
        }
        let flags = ReadFlags::from_bits(r.u16(4))?;
        let jwt_len = usize::from(r.u16(6));
        if jwt_len > MAX_JWT_LEN {
            return Err(ProtocolError::FieldTooLong {
                field: "jwt",
                len: jwt_len,
                max: MAX_JWT_LEN,
            });
        }
        let len = READ_REQUEST_FIXED_LEN + jwt_len;
        check_len(buf, len)?;
        let jwt = buf[READ_REQUEST_FIXED_LEN..len].to_vec();
        let req = ReadRequest {
            version,
            request_id: r.u64(8),
            volume_id: r.u32(16),
            cookie: r.u32(20),
            needle_id: r.u64(24),
            offset: r.u64(32),
            size: r.u64(40),
            flags,
            jwt,
        };
        req.validate()?;
        Ok(req)
    }
}

/// The request id of something that looks like a READ request of any version (magic and kind
/// right, at least 16 bytes), so that a server can answer [`Status::UnknownVersion`] or
/// [`Status::BadRequest`] to the right request. Offsets 0..16 keep this meaning in every version.
pub fn peek_request_id(buf: &[u8]) -> Option<u64> {
    if buf.len() < 16 || buf[0..2] != MAGIC || buf[3] != KIND_READ_REQUEST {
        return None;
    }
    Some(Reader(buf).u64(8))
}

impl ReadReply {
    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        READ_REPLY_FIXED_LEN
            + self.name.as_ref().map_or(0, Vec::len)
            + self.mime.as_ref().map_or(0, Vec::len)
            + self.direct.map_or(0, |_| DIRECT_TRAILER_LEN)
    }

    /// Check the limits and consistency rules `decode` enforces.
    fn validate(&self) -> Result<(), ProtocolError> {
        let name_len = self.name.as_ref().map_or(0, Vec::len);
        let mime_len = self.mime.as_ref().map_or(0, Vec::len);
        if name_len > MAX_NAME_LEN {
            return Err(ProtocolError::FieldTooLong {
                field: "name",
                len: name_len,
                max: MAX_NAME_LEN,
            });
        }
        if mime_len > MAX_MIME_LEN {
            return Err(ProtocolError::FieldTooLong {
                field: "mime",
                len: mime_len,
                max: MAX_MIME_LEN,
            });
        }
        check_version(self.version)?;
        if self.status == Status::NoVolume && self.version < NO_VOLUME_VERSION {
            return Err(ProtocolError::UnknownStatus(self.status.code()));
        }
        if self.direct.is_some() {
            if self.version < 2 {
                return Err(ProtocolError::UnknownFlags(u16::from(REPLY_DIRECT)));
            }
            if self.status != Status::Ok || self.payload_len == 0 {
                return Err(ProtocolError::Inconsistent(
                    "a direct-read trailer without an OK payload",
                ));
            }
        }
        if self.status != Status::Ok {
            if self.payload_len != 0 {
                return Err(ProtocolError::Inconsistent("payload with an error status"));
            }
            if self.compressed || self.name.is_some() || self.mime.is_some() || self.crc_unchecked {
                return Err(ProtocolError::Inconsistent(
                    "compressed, crc-unchecked, name or mime with an error status",
                ));
            }
            if self.crc != 0 || self.last_modified.is_some() {
                return Err(ProtocolError::Inconsistent(
                    "crc or last-modified with an error status",
                ));
            }
        } else if self.payload_len > self.data_size {
            return Err(ProtocolError::Inconsistent("payload longer than the data"));
        } else if self.crc_unchecked && self.payload_len != self.data_size {
            return Err(ProtocolError::Inconsistent(
                "crc-unchecked with less than the whole data",
            ));
        }
        Ok(())
    }

    fn flag_byte(&self) -> u8 {
        let mut f = 0;
        if self.compressed {
            f |= REPLY_COMPRESSED;
        }
        if self.last_modified.is_some() {
            f |= REPLY_HAS_LAST_MODIFIED;
        }
        if self.name.is_some() {
            f |= REPLY_HAS_NAME;
        }
        if self.mime.is_some() {
            f |= REPLY_HAS_MIME;
        }
        if self.crc_unchecked {
            f |= REPLY_CRC_UNCHECKED;
        }
        if self.direct.is_some() {
            f |= REPLY_DIRECT;
        }
        f
    }

    /// Append the encoding to `out`. Fails (writing nothing) on an oversized name or mime, or
    /// on fields that contradict the status.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.validate()?;
        let name: &[u8] = self.name.as_deref().unwrap_or(&[]);
        let mime: &[u8] = self.mime.as_deref().unwrap_or(&[]);
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(KIND_READ_REPLY);
        out.push(self.status.code());
        out.push(self.flag_byte());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.data_size.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        out.extend_from_slice(&self.last_modified.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&(mime.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(mime);
        if let Some(direct) = self.direct {
            out.extend_from_slice(&direct.address.to_le_bytes());
            out.extend_from_slice(&direct.pid.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        Ok(())
    }

    /// The encoding.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decode exactly one reply header from `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, ProtocolError> {
        let version = check_prelude(buf, KIND_READ_REPLY, MAX_READ_REPLY_LEN)?;
        if buf.len() < READ_REPLY_FIXED_LEN {
            return Err(ProtocolError::Truncated {
                need: READ_REPLY_FIXED_LEN,
                have: buf.len(),
            });
        }
        let r = Reader(buf);
        let status = Status::from_code(buf[4])?;
        let flags = buf[5];
        let defined = if version < 2 {
            REPLY_ALL & !REPLY_DIRECT
        } else {
            REPLY_ALL
        };
        if flags & !defined != 0 {
            return Err(ProtocolError::UnknownFlags(u16::from(flags & !defined)));
        }
        let name_len = usize::from(r.u16(6));
        let mime_len = usize::from(r.u16(44));
        let reserved = r.u16(46);
        if reserved != 0 {
            return Err(ProtocolError::ReservedNotZero(reserved));
        }
        if name_len > MAX_NAME_LEN {
            return Err(ProtocolError::FieldTooLong {
                field: "name",
                len: name_len,
                max: MAX_NAME_LEN,
            });
        }
        if mime_len > MAX_MIME_LEN {
            return Err(ProtocolError::FieldTooLong {
                field: "mime",
                len: mime_len,
                max: MAX_MIME_LEN,
            });
        }
        if flags & REPLY_HAS_NAME == 0 && name_len != 0 {
            return Err(ProtocolError::Inconsistent(
                "name length without the name flag",
            ));
        }
        if flags & REPLY_HAS_MIME == 0 && mime_len != 0 {
            return Err(ProtocolError::Inconsistent(
                "mime length without the mime flag",
            ));
        }
        let last_modified = r.u64(32);
        if flags & REPLY_HAS_LAST_MODIFIED == 0 && last_modified != 0 {
            return Err(ProtocolError::Inconsistent(
                "last-modified without the last-modified flag",
            ));
        }
        let mime_end = READ_REPLY_FIXED_LEN + name_len + mime_len;
        let has_direct = flags & REPLY_DIRECT != 0;
        check_len(
            buf,
            mime_end + if has_direct { DIRECT_TRAILER_LEN } else { 0 },
        )?;
        let name_end = READ_REPLY_FIXED_LEN + name_len;
        let trailer = Reader(&buf[mime_end..]);
        if has_direct && trailer.u32(12) != 0 {
            let reserved = trailer.u32(12);
            return Err(ProtocolError::ReservedNotZero(
                u16::try_from(reserved).unwrap_or(u16::MAX),
            ));
        }
        let reply = ReadReply {
            version,
            request_id: r.u64(8),
            status,
            compressed: flags & REPLY_COMPRESSED != 0,
            data_size: r.u64(16),
            crc: r.u32(40),
            last_modified: (flags & REPLY_HAS_LAST_MODIFIED != 0).then_some(last_modified),
            name: (flags & REPLY_HAS_NAME != 0)
                .then(|| buf[READ_REPLY_FIXED_LEN..name_end].to_vec()),
            mime: (flags & REPLY_HAS_MIME != 0).then(|| buf[name_end..mime_end].to_vec()),
            payload_len: r.u64(24),
            crc_unchecked: flags & REPLY_CRC_UNCHECKED != 0,
            direct: has_direct.then(|| DirectPayload {
                address: trailer.u64(0),
                pid: trailer.u32(8),
            }),
        };
        reply.validate()?;
        Ok(reply)
    }
}

/// Check the four-byte prelude and the overall length bound; returns the version.
fn check_prelude(buf: &[u8], kind: u8, max: usize) -> Result<u8, ProtocolError> {
    if buf.len() < 4 {
        return Err(ProtocolError::Truncated {
            need: 4,
            have: buf.len(),
        });
    }
    if buf[0..2] != MAGIC {
        return Err(ProtocolError::BadMagic([buf[0], buf[1]]));
    }
    check_version(buf[2])?;
    if buf[3] != kind {
        return Err(ProtocolError::WrongKind {
            expected: kind,
            found: buf[3],
        });
    }
    if buf.len() > max {
        return Err(ProtocolError::TooLong {
            len: buf.len(),
            max,
        });
    }
    Ok(buf[2])
}

/// Refuse a version outside [`MIN_VERSION`]..=[`VERSION`].
fn check_version(version: u8) -> Result<(), ProtocolError> {
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    Ok(())
}

/// Require `buf` to be exactly `len` bytes.
fn check_len(buf: &[u8], len: usize) -> Result<(), ProtocolError> {
    match buf.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(ProtocolError::Truncated {
            need: len,
            have: buf.len(),
        }),
        std::cmp::Ordering::Greater => Err(ProtocolError::TrailingBytes {
            len,
            extra: buf.len() - len,
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Little-endian reads at offsets the caller has bounds-checked against the fixed length.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.0.get(at..at + N) {
            a.copy_from_slice(s);
        }
        a
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.array(at))
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.array(at))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.array(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: a small deterministic generator for the robustness loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize, f: impl Fn(u8) -> u8) -> Vec<u8> {
            (0..n).map(|_| f(self.next() as u8)).collect()
        }
        fn len(&mut self, max: usize) -> usize {
            // Favour the edges: 0, small, and the limit.
            match self.below(4) {
                0 => 0,
                1 => max,
                2 => self.below(16),
                _ => self.below(max + 1),
            }
        }
        fn u64(&mut self) -> u64 {
            match self.below(4) {
                0 => 0,
                1 => u64::MAX,
                _ => self.next(),
            }
        }
    }

    fn random_request(rng: &mut Rng) -> ReadRequest {
        let jwt_len = rng.len(MAX_JWT_LEN);
        let version = MIN_VERSION + rng.below(usize::from(VERSION)) as u8;
        let mut flags = rng.next() as u16 & ReadFlags::ALL.0;
        if version < 2 {
            flags &= !ReadFlags::DIRECT.0;
        }
        ReadRequest {
            version,
            request_id: rng.u64(),
            volume_id: rng.next() as u32,
            needle_id: rng.u64(),
            cookie: rng.next() as u32,
            offset: rng.u64(),
            size: rng.u64(),
            flags: ReadFlags(flags),
            jwt: rng.bytes(jwt_len, |b| 0x21 + b % 94),
        }
    }

    fn random_reply(rng: &mut Rng) -> ReadReply {
        let status = Status::ALL[rng.below(Status::ALL.len())];
        let mut r = ReadReply::status(rng.u64(), status);
        r.version = MIN_VERSION + rng.below(usize::from(VERSION)) as u8;
        if status == Status::NoVolume {
            r.version = NO_VOLUME_VERSION;
        }
        r.data_size = rng.u64();
        if status == Status::Ok {
            r.payload_len = if r.data_size == 0 {
                0
            } else {
                rng.next() % r.data_size
            };
            r.compressed = rng.below(2) == 0;
            if rng.below(4) == 0 {
                r.payload_len = r.data_size;
                r.crc_unchecked = true;
            }
            r.crc = rng.next() as u32;
            r.last_modified = (rng.below(2) == 0).then(|| rng.u64());
            if rng.below(2) == 0 {
                let n = rng.len(MAX_NAME_LEN);
                r.name = Some(rng.bytes(n, |b| b));
            }
            if rng.below(2) == 0 {
                let n = rng.len(MAX_MIME_LEN);
                r.mime = Some(rng.bytes(n, |b| b));
            }
            if r.version >= 2 && r.payload_len > 0 && rng.below(2) == 0 {
                r.direct = Some(DirectPayload {
                    address: rng.u64(),
                    pid: rng.next() as u32,
                });
            }
        }
        r
    }

    fn sample_request() -> ReadRequest {
        ReadRequest {
            version: 1,
            request_id: 0x0102_0304_0506_0708,
            volume_id: 7,
            needle_id: 0x0188,
            cookie: 0xe071_3000,
            offset: 4096,
            size: 65536,
            flags: ReadFlags::WANT_NAME | ReadFlags::WANT_MIME,
            jwt: b"eyJhbGciOiJIUzI1NiJ9.eyJmaWQiOiI3LDAxODhlMDcxMzAifQ.sig".to_vec(),
        }
    }

    fn sample_reply() -> ReadReply {
        ReadReply {
            version: 1,
            request_id: 42,
            status: Status::Ok,
            compressed: true,
            data_size: 1 << 20,
            crc: 0xdead_beef,
            last_modified: Some(1_764_000_000),
            name: Some(b"hello.txt".to_vec()),
            mime: Some(b"text/plain".to_vec()),
            payload_len: 4096,
            crc_unchecked: false,
            direct: None,
        }
    }

    #[test]
    fn version_2_adds_direct_reads_and_nothing_else() {
        let req = ReadRequest {
            version: 2,
            flags: ReadFlags::CRC_AT_CLIENT | ReadFlags::DIRECT,
            ..sample_request()
        };
        let b = req.encode().unwrap();
        assert_eq!(&b[0..4], b"SW\x02\x01");
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), 0b1_1000);
        assert_eq!(ReadRequest::decode(&b).unwrap(), req);
        let mut v1 = b.clone();
        v1[2] = 1;
        assert_eq!(
            ReadRequest::decode(&v1),
            Err(ProtocolError::UnknownFlags(ReadFlags::DIRECT.bits()))
        );
        assert!(
            ReadRequest {
                version: 1,
                ..req.clone()
            }
            .encode()
            .is_err()
        );

        let direct = DirectPayload {
            address: 0x7f00_1234_5678,
            pid: 4242,
        };
        let reply = ReadReply {
            version: 2,
            direct: Some(direct),
            ..sample_reply()
        };
        let b = reply.encode().unwrap();
        assert_eq!(b.len(), 48 + 9 + 10 + DIRECT_TRAILER_LEN);
        assert_eq!(&b[0..4], b"SW\x02\x02");
        assert_eq!(b[5], 0b10_1111);
        assert_eq!(&b[48..67], b"hello.txttext/plain");
        assert_eq!(&b[67..75], &0x7f00_1234_5678u64.to_le_bytes());
        assert_eq!(&b[75..79], &4242u32.to_le_bytes());
        assert_eq!(&b[79..83], &[0, 0, 0, 0]);
        assert_eq!(ReadReply::decode(&b).unwrap(), reply);
        let mut reserved = b.clone();
        reserved[82] = 1;
        assert!(matches!(
            ReadReply::decode(&reserved),
            Err(ProtocolError::ReservedNotZero(_))
        ));
        let mut v1 = b.clone();
        v1[2] = 1;
        assert!(
            ReadReply::decode(&v1).is_err(),
            "no direct trailer in version 1"
        );
        let mut short = b.clone();
        short.truncate(b.len() - 1);
        assert!(ReadReply::decode(&short).is_err());
        let empty = ReadReply {
            payload_len: 0,
            ..reply.clone()
        };
        assert!(empty.encode().is_err(), "nothing to read directly");
        let mut error = ReadReply::status(1, Status::NotFound);
        error.version = 2;
        error.direct = Some(direct);
        assert!(error.encode().is_err());
        let plain = ReadReply {
            version: 2,
            ..sample_reply()
        };
        let b = plain.encode().unwrap();
        assert_eq!(b.len(), 48 + 9 + 10);
        assert_eq!(ReadReply::decode(&b).unwrap(), plain);
        let mut v4 = b.clone();
        v4[2] = 4;
        assert_eq!(
            ReadReply::decode(&v4),
            Err(ProtocolError::UnsupportedVersion(4))
        );
    }

    #[test]
    fn request_layout_is_the_documented_one() {
        let b = sample_request().encode().unwrap();
        assert_eq!(&b[0..4], b"SW\x01\x01");
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), 0b011);
        assert_eq!(usize::from(u16::from_le_bytes([b[6], b[7]])), b.len() - 48);
        assert_eq!(&b[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[16..20], &7u32.to_le_bytes());
        assert_eq!(&b[20..24], &0xe071_3000u32.to_le_bytes());
        assert_eq!(&b[24..32], &0x0188u64.to_le_bytes());
        assert_eq!(&b[32..40], &4096u64.to_le_bytes());
        assert_eq!(&b[40..48], &65536u64.to_le_bytes());
        assert_eq!(&b[48..], sample_request().jwt.as_slice());
        assert_eq!(peek_request_id(&b), Some(0x0102_0304_0506_0708));
    }

    #[test]
    fn reply_layout_is_the_documented_one() {
        let b = sample_reply().encode().unwrap();
        assert_eq!(&b[0..4], b"SW\x01\x02");
        assert_eq!(b[4], 0);
        assert_eq!(b[5], 0b1111);
        assert_eq!(&b[6..8], &9u16.to_le_bytes());
        assert_eq!(&b[8..16], &42u64.to_le_bytes());
        assert_eq!(&b[16..24], &(1u64 << 20).to_le_bytes());
        assert_eq!(&b[24..32], &4096u64.to_le_bytes());
        assert_eq!(&b[32..40], &1_764_000_000u64.to_le_bytes());
        assert_eq!(&b[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&b[44..46], &10u16.to_le_bytes());
        assert_eq!(&b[46..48], &[0, 0]);
        assert_eq!(&b[48..], b"hello.txttext/plain");
    }

    #[test]
    fn round_trips() {
        let req = sample_request();
        assert_eq!(ReadRequest::decode(&req.encode().unwrap()).unwrap(), req);
        let bare = ReadRequest::default();
        let b = bare.encode().unwrap();
        assert_eq!(b.len(), READ_REQUEST_FIXED_LEN);
        assert_eq!(ReadRequest::decode(&b).unwrap(), bare);
        let max = ReadRequest {
            jwt: vec![b'a'; MAX_JWT_LEN],
            ..req
        };
        let b = max.encode().unwrap();
        assert_eq!(b.len(), MAX_READ_REQUEST_LEN);
        assert_eq!(ReadRequest::decode(&b).unwrap(), max);

        let rep = sample_reply();
        assert_eq!(ReadReply::decode(&rep.encode().unwrap()).unwrap(), rep);
        let unchecked = ReadReply {
            payload_len: rep.data_size,
            crc_unchecked: true,
            ..rep.clone()
        };
        let b = unchecked.encode().unwrap();
        assert_eq!(b[5] & REPLY_CRC_UNCHECKED, REPLY_CRC_UNCHECKED);
        assert_eq!(ReadReply::decode(&b).unwrap(), unchecked);
        // Unchecked is only for the whole data of an OK reply.
        let partial = ReadReply {
            crc_unchecked: true,
            ..rep.clone()
        };
        assert!(partial.encode().is_err());
        let empty_fields = ReadReply {
            name: Some(Vec::new()),
            mime: Some(Vec::new()),
            last_modified: Some(0),
            ..rep.clone()
        };
        assert_eq!(
            ReadReply::decode(&empty_fields.encode().unwrap()).unwrap(),
            empty_fields
        );
        let max = ReadReply {
            version: 2,
            name: Some(vec![0xff; MAX_NAME_LEN]),
            mime: Some(vec![0; MAX_MIME_LEN]),
            direct: Some(DirectPayload {
                address: u64::MAX,
                pid: u32::MAX,
            }),
            ..rep
        };
        let b = max.encode().unwrap();
        assert_eq!(b.len(), MAX_READ_REPLY_LEN);
        assert_eq!(ReadReply::decode(&b).unwrap(), max);
        for s in Status::ALL {
            let r = ReadReply::status(9, s).in_version(VERSION);
            assert_eq!(ReadReply::decode(&r.encode().unwrap()).unwrap(), r);
            assert_eq!(Status::from_code(s.code()).unwrap(), s);
        }
        // NO_VOLUME is a version-3 status: not in an older reply.
        let mut old = ReadReply::status(9, Status::NoVolume);
        assert_eq!(old.encode(), Err(ProtocolError::UnknownStatus(13)));
        old.version = 3;
        let mut b = old.encode().unwrap();
        b[2] = 2;
        assert_eq!(ReadReply::decode(&b), Err(ProtocolError::UnknownStatus(13)));
        let uv = ReadReply::unknown_version(3);
        assert_eq!(
            (uv.version, uv.data_size),
            (1, 3),
            "a version-1 reply naming version 3"
        );
        assert_eq!(ReadReply::decode(&uv.encode().unwrap()).unwrap(), uv);
    }

    #[test]
    fn limits_fit_an_am_header() {
        assert_eq!(MAX_READ_REQUEST_LEN, 4144);
        assert_eq!(MAX_READ_REPLY_LEN, 2112);
        assert_eq!(MAX_HEADER_LEN, 4144);
        // The smallest max_am_header UCX 1.13.1 reports here (UCX_TLS=all) is 8100.
        const { assert!(MAX_HEADER_LEN <= 8100) };
    }

    #[test]
    fn request_rejections() {
        let good = sample_request().encode().unwrap();
        let err = |b: &[u8]| ReadRequest::decode(b).unwrap_err();

        assert_eq!(err(&[]), ProtocolError::Truncated { need: 4, have: 0 });
        assert_eq!(
            err(b"SW\x01"),
            ProtocolError::Truncated { need: 4, have: 3 }
        );
        assert_eq!(
            err(&good[..47]),
            ProtocolError::Truncated { need: 48, have: 47 }
        );
        assert_eq!(
            err(&good[..good.len() - 1]),
            ProtocolError::Truncated {
                need: good.len(),
                have: good.len() - 1
            }
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            err(&b),
            ProtocolError::TrailingBytes {
                len: good.len(),
                extra: 1
            }
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(err(&b), ProtocolError::BadMagic([b'X', b'W']));
        let mut b = good.clone();
        b[2] = 4;
        assert_eq!(err(&b), ProtocolError::UnsupportedVersion(4));
        assert_eq!(peek_request_id(&b), Some(0x0102_0304_0506_0708));
        assert_eq!(peek_request_id(&b[..15]), None);
        let mut b = good.clone();
        b[2] = 0;
        assert_eq!(err(&b), ProtocolError::UnsupportedVersion(0));
        let mut b = good.clone();
        b[3] = KIND_READ_REPLY;
        assert_eq!(
            err(&b),
            ProtocolError::WrongKind {
                expected: 1,
                found: 2
            }
        );
        assert_eq!(peek_request_id(&b), None);
        let mut b = good.clone();
        b[4] = 0x10;
        assert_eq!(err(&b), ProtocolError::UnknownFlags(0x10));
        let mut b = good.clone();
        b[5] = 0x80;
        assert_eq!(err(&b), ProtocolError::UnknownFlags(0x8000));
        // A JWT length past the limit.
        let mut b = good[..48].to_vec();
        b[6..8].copy_from_slice(&4097u16.to_le_bytes());
        assert_eq!(
            err(&b),
            ProtocolError::FieldTooLong {
                field: "jwt",
                len: 4097,
                max: MAX_JWT_LEN
            }
        );
        // A whole message past the maximum.
        let mut b = good.clone();
        b.resize(MAX_READ_REQUEST_LEN + 1, b'a');
        assert_eq!(
            err(&b),
            ProtocolError::TooLong {
                len: MAX_READ_REQUEST_LEN + 1,
                max: MAX_READ_REQUEST_LEN
            }
        );
        // Non-printable JWT bytes.
        for bad in [b' ', 0, 0x7f, 0x80, b'\n'] {
            let mut b = good.clone();
            b[50] = bad;
            assert_eq!(err(&b), ProtocolError::BadJwtByte { byte: bad, at: 2 });
        }
        // A reply is not a request.
        assert!(matches!(
            err(&sample_reply().encode().unwrap()),
            ProtocolError::WrongKind { .. }
        ));
    }

    #[test]
    fn request_encode_refuses_what_decode_would() {
        let mut r = sample_request();
        r.jwt = vec![b'a'; MAX_JWT_LEN + 1];
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            r.encode_into(&mut out),
            Err(ProtocolError::FieldTooLong { field: "jwt", .. })
        ));
        assert_eq!(out, [1, 2, 3]);
        r.jwt = b"Bearer x".to_vec();
        assert_eq!(
            r.encode(),
            Err(ProtocolError::BadJwtByte { byte: b' ', at: 6 })
        );
        r.jwt.clear();
        r.flags = ReadFlags(0x10);
        assert_eq!(r.encode(), Err(ProtocolError::UnknownFlags(0x10)));
    }

    #[test]
    fn reply_rejections() {
        let good = sample_reply().encode().unwrap();
        let err = |b: &[u8]| ReadReply::decode(b).unwrap_err();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            b
        };

        assert_eq!(
            err(&good[..2]),
            ProtocolError::Truncated { need: 4, have: 2 }
        );
        assert_eq!(
            err(&good[..40]),
            ProtocolError::Truncated { need: 48, have: 40 }
        );
        assert_eq!(
            err(&good[..good.len() - 3]),
            ProtocolError::Truncated {
                need: good.len(),
                have: good.len() - 3
            }
        );
        assert_eq!(
            err(&with(&|b| b.extend_from_slice(b"xx"))),
            ProtocolError::TrailingBytes {
                len: good.len(),
                extra: 2
            }
        );
        assert_eq!(
            err(&with(&|b| b[1] = 0)),
            ProtocolError::BadMagic([b'S', 0])
        );
        assert_eq!(
            err(&with(&|b| b[2] = 9)),
            ProtocolError::UnsupportedVersion(9)
        );
        assert_eq!(
            err(&sample_request().encode().unwrap()),
            ProtocolError::WrongKind {
                expected: 2,
                found: 1
            }
        );
        assert_eq!(err(&with(&|b| b[4] = 14)), ProtocolError::UnknownStatus(14));
        assert_eq!(
            err(&with(&|b| b[4] = 0xff)),
            ProtocolError::UnknownStatus(0xff)
        );
        assert_eq!(
            err(&with(&|b| b[5] |= 0x20)),
            ProtocolError::UnknownFlags(0x20)
        );
        assert_eq!(
            err(&with(&|b| b[46] = 1)),
            ProtocolError::ReservedNotZero(1)
        );
        assert_eq!(
            err(&with(&|b| b[6..8].copy_from_slice(&1025u16.to_le_bytes()))),
            ProtocolError::FieldTooLong {
                field: "name",
                len: 1025,
                max: MAX_NAME_LEN
            }
        );
        assert_eq!(
            err(&with(&|b| b[44..46].copy_from_slice(&1025u16.to_le_bytes()))),
            ProtocolError::FieldTooLong {
                field: "mime",
                len: 1025,
                max: MAX_MIME_LEN
            }
        );
        assert!(matches!(
            err(&with(&|b| b[5] &= !REPLY_HAS_NAME)),
            ProtocolError::Inconsistent(_)
        ));
        assert!(matches!(
            err(&with(&|b| b[5] &= !REPLY_HAS_MIME)),
            ProtocolError::Inconsistent(_)
        ));
        assert!(matches!(
            err(&with(&|b| b[5] &= !REPLY_HAS_LAST_MODIFIED)),
            ProtocolError::Inconsistent(_)
        ));
        // An error status with a payload, a name, a crc.
        let e = ReadReply::status(1, Status::NotFound).encode().unwrap();
        let mut b = e.clone();
        b[24] = 1;
        assert_eq!(
            err(&b),
            ProtocolError::Inconsistent("payload with an error status")
        );
        let mut b = e.clone();
        b[5] = REPLY_COMPRESSED;
        assert!(matches!(err(&b), ProtocolError::Inconsistent(_)));
        let mut b = e.clone();
        b[40] = 1;
        assert!(matches!(err(&b), ProtocolError::Inconsistent(_)));
        // A payload longer than the data.
        let mut b = good.clone();
        b[16..24].copy_from_slice(&10u64.to_le_bytes());
        assert_eq!(
            err(&b),
            ProtocolError::Inconsistent("payload longer than the data")
        );
        // A whole message past the maximum.
        let mut b = good.clone();
        b.resize(MAX_READ_REPLY_LEN + 1, 0);
        assert!(matches!(err(&b), ProtocolError::TooLong { .. }));
    }

    #[test]
    fn reply_encode_refuses_what_decode_would() {
        let mut r = sample_reply();
        r.name = Some(vec![0; MAX_NAME_LEN + 1]);
        assert!(matches!(
            r.encode(),
            Err(ProtocolError::FieldTooLong { field: "name", .. })
        ));
        r.name = None;
        r.mime = Some(vec![0; MAX_MIME_LEN + 1]);
        assert!(matches!(
            r.encode(),
            Err(ProtocolError::FieldTooLong { field: "mime", .. })
        ));
        let mut e = ReadReply::status(1, Status::Busy);
        e.payload_len = 1;
        assert!(e.encode().is_err());
        let mut e = ReadReply::status(1, Status::Busy);
        e.name = Some(Vec::new());
        assert!(e.encode().is_err());
    }

    #[test]
    fn volume_errors_map_to_statuses() {
        use std::path::PathBuf;
        let io = || VolumeError::Io {
            path: PathBuf::from("/x/1.dat"),
            source: std::io::Error::other("boom"),
        };
        let cases = [
            (VolumeError::VolumeNotFound(1), Status::NoVolume),
            (VolumeError::NotFound(1), Status::NotFound),
            (VolumeError::CookieMismatch(1), Status::NotFound),
            (VolumeError::Deleted(1), Status::Deleted),
            (VolumeError::Expired(1), Status::Expired),
            (
                VolumeError::BadRange {
                    offset: 10,
                    size: 5,
                    len: 12,
                },
                Status::BadRange,
            ),
            (
                VolumeError::TooLarge {
                    needle: 1,
                    limit: 256 << 20,
                    len: 1 << 30,
                },
                Status::TooLarge,
            ),
            (VolumeError::Stale(1), Status::Stale),
            (VolumeError::Remote(1), Status::NoVolume),
            (VolumeError::ChunkManifest(1), Status::Internal),
            (
                VolumeError::OffsetWidth(PathBuf::from("/x/1.idx")),
                Status::Internal,
            ),
            (io(), Status::Internal),
        ];
        for (e, s) in cases {
            assert_eq!(Status::from(&e), s, "{e}");
            assert_eq!(e.is_not_found(), s.is_not_found(), "{e}");
            assert_eq!(e.is_retryable(), s.is_retryable(), "{e}");
            let r = ReadReply::from_error(5, &e).in_version(VERSION);
            assert_eq!(r.status, s);
            let old = ReadReply::from_error(5, &e).in_version(2);
            let before = if s == Status::NoVolume {
                Status::Internal
            } else {
                s
            };
            assert_eq!(old.status, before, "{e} in version 2");
            assert_eq!(ReadReply::decode(&r.encode().unwrap()).unwrap(), r);
        }
        let r = ReadReply::from_error(
            5,
            &VolumeError::BadRange {
                offset: 10,
                size: 5,
                len: 12,
            },
        );
        assert_eq!(r.data_size, 12);
        let r = ReadReply::from_error(
            5,
            &VolumeError::TooLarge {
                needle: 1,
                limit: 256 << 20,
                len: 1 << 30,
            },
        );
        assert_eq!(r.data_size, 1 << 30);
        assert_eq!(Status::from(VolumeError::Deleted(3)), Status::Deleted);
    }

    #[test]
    fn ok_reply_from_a_read_result() {
        use crate::seaweed::{NeedleHeader, NeedleMeta};
        let result = ReadResult {
            data: vec![7; 100].into(),
            total_len: 1000,
            compressed: true,
            header: NeedleHeader {
                cookie: 1,
                id: 2,
                size: 3,
            },
            meta: NeedleMeta {
                name: b"a.txt".to_vec(),
                mime: Vec::new(),
                last_modified: Some(1_700_000_000),
                checksum: 0x1234_5678,
                ..NeedleMeta::default()
            },
            dat_offset: 8,
            crc_unchecked: false,
        };
        let mut req = sample_request();
        let r = ReadReply::ok(&req, &result);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.request_id, req.request_id);
        assert_eq!(
            (r.data_size, r.payload_len, r.crc),
            (1000, 100, 0x1234_5678)
        );
        assert!(r.compressed);
        assert_eq!(r.last_modified, Some(1_700_000_000));
        assert_eq!(r.name.as_deref(), Some(&b"a.txt"[..]));
        // Asked for, but the needle stores no MIME type.
        assert_eq!(r.mime, None);
        assert_eq!(ReadReply::decode(&r.encode().unwrap()).unwrap(), r);
        // Not asked for.
        req.flags = ReadFlags::NONE;
        assert_eq!(ReadReply::ok(&req, &result).name, None);
    }

    #[test]
    fn request_to_read_options() {
        let mut r = sample_request();
        let o = r.read_options();
        assert_eq!((o.offset, o.size, o.stored), (4096, Some(65536), false));
        r.size = 0;
        r.flags |= ReadFlags::WANT_STORED;
        let o = r.read_options();
        assert_eq!((o.size, o.stored), (None, true));
    }

    /// Mutate a valid encoding: flip bytes, truncate, extend, rewrite a length field.
    fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                1 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                2 => {
                    let n = rng.below(b.len() + 1);
                    b.truncate(n);
                }
                3 => {
                    let n = 1 + rng.below(8);
                    b.extend(rng.bytes(n, |x| x));
                }
                4 if b.len() >= 8 => {
                    // The length fields at 6..8 (both kinds) and 44..46 (reply).
                    let at = if b.len() >= 46 && rng.below(2) == 0 {
                        44
                    } else {
                        6
                    };
                    let v = rng.next() as u16 % 5000;
                    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
                _ => {
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b.remove(i);
                    }
                }
            }
        }
    }

    /// Whatever decodes must re-encode to the same bytes, so a mutation either is rejected or
    /// produces another canonical message.
    fn check_canonical(b: &[u8]) -> (bool, bool) {
        let req = ReadRequest::decode(b);
        if let Ok(r) = &req {
            assert_eq!(r.encode().unwrap(), b);
        }
        let rep = ReadReply::decode(b);
        if let Ok(r) = &rep {
            assert_eq!(r.encode().unwrap(), b);
        }
        assert!(req.is_err() || rep.is_err());
        (req.is_ok(), rep.is_ok())
    }

    #[test]
    fn randomized_robustness() {
        let mut rng = Rng(0x5357_4d55_4341_5831);
        let mut rejected = 0usize;
        for i in 0..20_000 {
            if i % 2 == 0 {
                let r = random_request(&mut rng);
                let b = r.encode().unwrap();
                assert_eq!(ReadRequest::decode(&b).unwrap(), r);
                assert!(ReadReply::decode(&b).is_err());
                let mut m = b.clone();
                mutate(&mut rng, &mut m);
                let (ok, _) = check_canonical(&m);
                if !ok {
                    rejected += 1;
                } else if m != b {
                    // A mutation that decodes is a different valid request.
                    assert_ne!(ReadRequest::decode(&m).unwrap(), r);
                }
            } else {
                let r = random_reply(&mut rng);
                let b = r.encode().unwrap();
                assert_eq!(ReadReply::decode(&b).unwrap(), r);
                assert!(ReadRequest::decode(&b).is_err());
                let mut m = b.clone();
                mutate(&mut rng, &mut m);
                let (_, ok) = check_canonical(&m);
                if !ok {
                    rejected += 1;
                } else if m != b {
                    assert_ne!(ReadReply::decode(&m).unwrap(), r);
                }
            }
        }
        assert!(rejected > 5_000, "only {rejected} mutations rejected");

        // Random bytes, with and without a valid prelude.
        for _ in 0..20_000 {
            let n = rng.below(200);
            let mut b = rng.bytes(n, |x| x);
            if b.len() >= 4 && rng.below(2) == 0 {
                b[0..2].copy_from_slice(&MAGIC);
                b[2] = VERSION;
                b[3] = 1 + rng.below(2) as u8;
            }
            check_canonical(&b);
            let _ = peek_request_id(&b);
        }
    }
}
