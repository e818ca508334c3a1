//! Needles: one stored file inside a `.dat` (`storage/needle/needle_read.go`, `needle_write_v2.go`,
//! `needle_write_v3.go`, `crc.go`). Offsets are relative to the needle start (8-byte aligned):
//!
//! ```text
//! 0   cookie      u32
//! 4   needle id   u64
//! 12  Size        u32  = body size, 0 for an empty file or a delete marker
//! --- body (v2/v3, present when Size > 0) ---
//! 16  DataSize    u32
//! 20  Data        DataSize bytes (gzip'd when flags & 0x01)
//!     Flags       u8
//!     [name size u8][name]      flags & 0x02
//!     [mime size u8][mime]      flags & 0x04
//!     [last modified: 5 bytes]  flags & 0x08 (unix seconds)
//!     [TTL: 2 bytes]            flags & 0x10
//!     [pairs size u16][pairs]   flags & 0x20 (JSON object)
//! --- tail ---
//! 16+Size  CRC-32C of Data        u32
//! 20+Size  append time, unix ns   u64 (v3 only)
//!          padding: 1..8 bytes to the next multiple of 8 (never 0; contents undefined)
//! ```
//! Version 1 has no body structure: `Data` is the whole `Size` bytes.

use std::borrow::Cow;
use std::io::{self, Read};
use std::ops::Range;

use super::ttl::Ttl;

/// Bytes of the needle header (cookie, id, Size).
pub const NEEDLE_HEADER_SIZE: usize = 16;
/// Bytes of the CRC in the tail.
pub const CHECKSUM_SIZE: usize = 4;
/// Bytes of the v3 append timestamp in the tail.
pub const TIMESTAMP_SIZE: usize = 8;
/// Needles at most this large (header Size) are read and CRC-checked whole by weed; larger ones are
/// streamed and checked only on full reads (`volume_read.go PagedReadLimit`).
pub const PAGED_READ_LIMIT: u32 = 1024 * 1024;

/// The most decompressed bytes one read of a gzip needle may produce or walk through (bytes
/// before a range are decompressed and dropped, and count too); past it the read fails with
/// [`NeedleError::TooLarge`]. weed's volume server refuses uploads over `-fileSizeLimitMB`
/// (default 256, "to avoid out of memory") and gzips only uploads it accepted, so every needle
/// weed compressed itself inflates to at most 256 MiB unless the operator raised that limit; only
/// uploads sent already gzip'd (`Content-Encoding: gzip`, limited by their compressed size) can
/// inflate further, up to about 1000 times. The filer stores files in chunks of a few MiB.
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Flag: the data is compressed (gzip).
pub const FLAG_IS_COMPRESSED: u8 = 0x01;
/// Flag: a name follows the data.
pub const FLAG_HAS_NAME: u8 = 0x02;
/// Flag: a MIME type follows.
pub const FLAG_HAS_MIME: u8 = 0x04;
/// Flag: a 5-byte last-modified time follows.
pub const FLAG_HAS_LAST_MODIFIED: u8 = 0x08;
/// Flag: a 2-byte TTL follows.
pub const FLAG_HAS_TTL: u8 = 0x10;
/// Flag: JSON pairs follow.
pub const FLAG_HAS_PAIRS: u8 = 0x20;
/// Flag: the data is a chunk manifest (JSON list of chunks), expanded by weed's HTTP handler.
pub const FLAG_IS_CHUNK_MANIFEST: u8 = 0x80;

/// The needle format version (from the superblock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NeedleVersion {
    /// Version 1: cookie, id, Size, Data, CRC, padding. No longer written.
    V1 = 1,
    /// Version 2: adds DataSize, flags and metadata.
    V2 = 2,
    /// Version 3: adds the 8-byte append timestamp to the tail. Current.
    V3 = 3,
}

impl NeedleVersion {
    /// The version for a stored byte, if supported.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(NeedleVersion::V1),
            2 => Some(NeedleVersion::V2),
            3 => Some(NeedleVersion::V3),
            _ => None,
        }
    }

    /// Bytes after the body: the CRC, plus the timestamp in v3.
    pub const fn tail_size(self) -> usize {
        match self {
            NeedleVersion::V3 => CHECKSUM_SIZE + TIMESTAMP_SIZE,
            _ => CHECKSUM_SIZE,
        }
    }

    /// Padding after the tail for a needle with this header Size: 1..=8, never 0.
    pub const fn padding(self, size: u32) -> u64 {
        let unpadded = NEEDLE_HEADER_SIZE as u64 + size as u64 + self.tail_size() as u64;
        8 - unpadded % 8
    }

    /// Bytes the needle takes on disk: header, body, tail and padding (weed's `GetActualSize`).
    pub const fn actual_size(self, size: u32) -> u64 {
        NEEDLE_HEADER_SIZE as u64 + size as u64 + self.tail_size() as u64 + self.padding(size)
    }
}

/// Why needle bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedleError {
    /// Fewer bytes than the layout needs.
    #[error("needle truncated: {what} needs {need} bytes, have {got}")]
    Truncated {
        /// Which part.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        got: u64,
    },
    /// The header's needle id is not the one the index points at.
    #[error("needle id mismatch: index says {expected:#x}, header says {found:#x}")]
    IdMismatch {
        /// From the index.
        expected: u64,
        /// From the needle header.
        found: u64,
    },
    /// The header's Size is not the one the index points at.
    #[error("needle size mismatch: index says {expected}, header says {found}")]
    SizeMismatch {
        /// From the index.
        expected: u32,
        /// From the needle header.
        found: u32,
    },
    /// A length field points outside the needle body.
    #[error("needle corrupted: {0} out of range")]
    Corrupt(&'static str),
    /// The stored CRC matches neither CRC-32C of the data nor its legacy transform.
    #[error("needle CRC mismatch: stored {stored:08x}, data has {computed:08x}")]
    Crc {
        /// The CRC in the tail.
        stored: u32,
        /// CRC-32C of the data.
        computed: u32,
    },
    /// Compressed data that does not decompress.
    #[error("needle data does not decompress: {0}")]
    Decompress(String),
    /// Decompressing would pass `limit` bytes (see [`MAX_DECOMPRESSED`]).
    #[error("needle data decompresses to more than {limit} bytes (gzip trailer: {len})")]
    TooLarge {
        /// The cap that was reached.
        limit: u64,
        /// The decompressed length the gzip trailer claims, above `limit` (see [`gunzip_range`]).
        len: u64,
    },
}

/// The 16-byte needle header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedleHeader {
    /// The cookie (must match the file id's).
    pub cookie: u32,
    /// The needle id.
    pub id: u64,
    /// The body size (0 for empty files and delete markers).
    pub size: u32,
}

impl NeedleHeader {
    /// Parses the first 16 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, NeedleError> {
        need(b, NEEDLE_HEADER_SIZE, "header")?;
        Ok(NeedleHeader {
            cookie: be32(&b[0..4]),
            id: be64(&b[4..12]),
            size: be32(&b[12..16]),
        })
    }

    /// The 16 bytes as weed writes them.
    pub fn to_bytes(&self) -> [u8; NEEDLE_HEADER_SIZE] {
        let mut out = [0u8; NEEDLE_HEADER_SIZE];
        out[0..4].copy_from_slice(&self.cookie.to_be_bytes());
        out[4..12].copy_from_slice(&self.id.to_be_bytes());
        out[12..16].copy_from_slice(&self.size.to_be_bytes());
        out
    }
}

/// Everything about a needle except its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NeedleMeta {
    /// The flag byte (0 for v1 and for empty needles).
    pub flags: u8,
    /// Length of the stored data.
    pub data_size: u32,
    /// The file name, if stored.
    pub name: Vec<u8>,
    /// The MIME type, if stored (may be empty with the flag set).
    pub mime: Vec<u8>,
    /// Last-modified time in unix seconds, if stored.
    pub last_modified: Option<u64>,
    /// The needle's TTL, if stored.
    pub ttl: Option<Ttl>,
    /// The JSON pairs (sent back by weed as HTTP headers), if stored.
    pub pairs: Vec<u8>,
    /// The CRC stored in the tail.
    pub checksum: u32,
    /// The append time in unix nanoseconds (v3; 0 in v1/v2).
    pub append_at_ns: u64,
}

impl NeedleMeta {
    /// Whether the stored data is compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_IS_COMPRESSED != 0
    }

    /// Whether the data is a chunk manifest.
    pub fn is_chunk_manifest(&self) -> bool {
        self.flags & FLAG_IS_CHUNK_MANIFEST != 0
    }

    /// Whether weed would call this needle expired at `now_unix_ns` (`volume_read.go`): it has a
    /// TTL and a last-modified time, and `now >= append time + TTL`. (v2 needles have no append
    /// time, so a TTL'd v2 needle is expired, as in weed.)
    pub fn is_expired_at(&self, now_unix_ns: u64) -> bool {
        let Some(ttl) = self.ttl else { return false };
        if !ttl.is_some() || self.last_modified.is_none() {
            return false;
        }
        let expires = self
            .append_at_ns
            .saturating_add(u64::from(ttl.minutes()).saturating_mul(60_000_000_000));
        now_unix_ns >= expires
    }

    /// The HTTP ETag weed sends: the stored CRC as 8 hex digits.
    pub fn etag(&self) -> String {
        format!("{:08x}", self.checksum)
    }
}

/// A fully parsed needle: header, metadata and the stored data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle<'a> {
    /// The header.
    pub header: NeedleHeader,
    /// The metadata and tail.
    pub meta: NeedleMeta,
    /// The data as stored (compressed when `meta.is_compressed()`).
    pub data: &'a [u8],
}

impl<'a> Needle<'a> {
    /// Parses a whole needle (`16 + Size + tail` bytes at least; padding may follow) and checks
    /// its CRC, like weed's `ReadBytes`. `expect` is the `(id, Size)` from the index, checked
    /// against the header when given.
    pub fn parse(
        blob: &'a [u8],
        version: NeedleVersion,
        expect: Option<(u64, u32)>,
    ) -> Result<Self, NeedleError> {
        let header = NeedleHeader::parse(blob)?;
        if let Some((id, size)) = expect {
            check_header(&header, id, size)?;
        }
        let body_end = NEEDLE_HEADER_SIZE as u64 + u64::from(header.size);
        need(blob, body_end + version.tail_size() as u64, "body and tail")?;
        let body = &blob[NEEDLE_HEADER_SIZE..body_end as usize];
        let (mut meta, data) = parse_body(body, version)?;
        let (checksum, append_at_ns) = parse_tail(&blob[body_end as usize..], version)?;
        meta.checksum = checksum;
        meta.append_at_ns = append_at_ns;
        if !data.is_empty() {
            check_crc(data, checksum)?;
        }
        Ok(Needle { header, meta, data })
    }

    /// The data as weed serves it to a client that does not accept gzip: gunzipped when the
    /// needle is compressed and the data is gzip, else as stored.
    pub fn decompressed(&self) -> Result<Cow<'a, [u8]>, NeedleError> {
        if self.meta.is_compressed() {
            maybe_gunzip(self.data)
        } else {
            Ok(Cow::Borrowed(self.data))
        }
    }
}

/// Checks a header against the index's `(id, Size)`.
pub fn check_header(h: &NeedleHeader, id: u64, size: u32) -> Result<(), NeedleError> {
    if h.id != id {
        return Err(NeedleError::IdMismatch {
            expected: id,
            found: h.id,
        });
    }
    if h.size != size {
        return Err(NeedleError::SizeMismatch {
            expected: size,
            found: h.size,
        });
    }
    Ok(())
}

/// Where the data lies in a body (the `Size` bytes after the header), reading only its first
/// four bytes (v2/v3: the data size; the metadata follows the data); for v1 the whole body is
/// data, and an empty v2/v3 body has none.
pub fn data_range(body: &[u8], version: NeedleVersion) -> Result<Range<usize>, NeedleError> {
    if version == NeedleVersion::V1 || body.is_empty() {
        return Ok(0..if version == NeedleVersion::V1 {
            body.len()
        } else {
            0
        });
    }
    if body.len() < 4 {
        return Err(NeedleError::Corrupt("data size"));
    }
    let data_end = 4usize
        .checked_add(be32(&body[0..4]) as usize)
        .filter(|&e| e <= body.len())
        .ok_or(NeedleError::Corrupt("data size"))?;
    Ok(4..data_end)
}

/// Splits a v2/v3 body (the `Size` bytes after the header) into metadata and data; for v1 the whole
/// body is data. Lenient like weed: fields past the end of the body are simply absent.
pub fn parse_body(body: &[u8], version: NeedleVersion) -> Result<(NeedleMeta, &[u8]), NeedleError> {
    let data = data_range(body, version)?;
    let mut meta = if version == NeedleVersion::V1 || body.is_empty() {
        NeedleMeta::default()
    } else {
        parse_non_data(&body[data.end..])?
    };
    meta.data_size = u32::try_from(data.len()).map_err(|_| NeedleError::Corrupt("v1 size"))?;
    Ok((meta, &body[data]))
}

/// Parses what follows the data in a v2/v3 body: flags, name, mime, last-modified, TTL, pairs.
/// `data_size` in the result is 0; the caller sets it.
pub fn parse_non_data(b: &[u8]) -> Result<NeedleMeta, NeedleError> {
    let mut meta = NeedleMeta::default();
    let mut i = 0usize;
    let n = b.len();
    if i < n {
        meta.flags = b[i];
        i += 1;
    }
    let flags = meta.flags;
    if i < n && flags & FLAG_HAS_NAME != 0 {
        let len = usize::from(b[i]);
        i += 1;
        meta.name = b
            .get(i..i + len)
            .ok_or(NeedleError::Corrupt("name"))?
            .to_vec();
        i += len;
    }
    if i < n && flags & FLAG_HAS_MIME != 0 {
        let len = usize::from(b[i]);
        i += 1;
        meta.mime = b
            .get(i..i + len)
            .ok_or(NeedleError::Corrupt("mime"))?
            .to_vec();
        i += len;
    }
    if i < n && flags & FLAG_HAS_LAST_MODIFIED != 0 {
        let lm = b
            .get(i..i + 5)
            .ok_or(NeedleError::Corrupt("last modified"))?;
        meta.last_modified = Some(lm.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)));
        i += 5;
    }
    if i < n && flags & FLAG_HAS_TTL != 0 {
        let t = b.get(i..i + 2).ok_or(NeedleError::Corrupt("ttl"))?;
        meta.ttl = Some(Ttl::from_bytes([t[0], t[1]]));
        i += 2;
    }
    if i < n && flags & FLAG_HAS_PAIRS != 0 {
        let ps = b.get(i..i + 2).ok_or(NeedleError::Corrupt("pairs size"))?;
        let len = usize::from(u16::from_be_bytes([ps[0], ps[1]]));
        i += 2;
        meta.pairs = b
            .get(i..i + len)
            .ok_or(NeedleError::Corrupt("pairs"))?
            .to_vec();
    }
    Ok(meta)
}

/// Parses the tail (the bytes from `16 + Size` on): the stored CRC and, for v3, the append time.
pub fn parse_tail(b: &[u8], version: NeedleVersion) -> Result<(u32, u64), NeedleError> {
    need(b, version.tail_size() as u64, "tail")?;
    let crc = be32(&b[0..4]);
    let ts = if version == NeedleVersion::V3 {
        be64(&b[4..12])
    } else {
        0
    };
    Ok((crc, ts))
}

/// CRC-32C (Castagnoli) of `data`, as weed stores it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The legacy transform of a CRC that weed wrote before 3.09 (`crc.Value()`):
/// `(c >> 15 | c << 17) + 0xa282ead8`.
pub const fn legacy_crc(c: u32) -> u32 {
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Checks that `stored` is CRC-32C of `data` or its legacy transform.
pub fn check_crc(data: &[u8], stored: u32) -> Result<(), NeedleError> {
    crc_matches(crc32c(data), stored)
}

/// Checks a computed CRC-32C against a stored one (either form).
pub fn crc_matches(computed: u32, stored: u32) -> Result<(), NeedleError> {
    if stored == computed || stored == legacy_crc(computed) {
        Ok(())
    } else {
        Err(NeedleError::Crc { stored, computed })
    }
}

/// Whether `data` starts with the gzip magic bytes.
pub fn is_gzip(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0x1f && data[1] == 0x8b
}

/// Decompresses gzip data (all members, as Go's reader does) up to [`MAX_DECOMPRESSED`] bytes;
/// other data is returned unchanged, as weed's `MaybeDecompressData` does for an unsupported
/// compression.
pub fn maybe_gunzip(data: &[u8]) -> Result<Cow<'_, [u8]>, NeedleError> {
    if !is_gzip(data) {
        return Ok(Cow::Borrowed(data));
    }
    Ok(Cow::Owned(
        gunzip_range(data, 0, None, MAX_DECOMPRESSED)?.data,
    ))
}

/// A range of decompressed gzip data ([`gunzip_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gunzipped {
    /// The decompressed bytes in `[offset, offset + size)`, cut at the end of the data.
    pub data: Vec<u8>,
    /// Length of the whole decompressed data: exact when the stream was read to its end, else
    /// (the range ended before it) what the gzip trailer claims, see [`gunzip_range`].
    pub total_len: u64,
}

/// Decompresses the bytes `[offset, offset + size)` of gzip `data` (all members; `size` `None`:
/// to the end) as a stream: the bytes before `offset` are decompressed into a scratch buffer and
/// dropped, and decompression stops one byte after the range (to learn whether the data goes
/// on). At most `limit` bytes are produced or walked through; a range that needs more, or a whole
/// read of longer data, is [`NeedleError::TooLarge`].
///
/// The total length is exact when the stream ended (flate2 then has also checked every member's
/// CRC-32 and length trailer): a range past the end gets the true length, and the caller reports
/// it as a bad range. When the range ended first, it is the gzip trailer's ISIZE (the length mod
/// 2^32 of the last member), lifted to the smallest value above the bytes walked with those low
/// 32 bits: exact for single-member gzip (what weed writes) under 4 GiB, never below
/// `offset + size + 1`, and not checked. It is only reported, never used to size a buffer.
pub fn gunzip_range(
    data: &[u8],
    offset: u64,
    size: Option<u64>,
    limit: u64,
) -> Result<Gunzipped, NeedleError> {
    let err = |e: io::Error| NeedleError::Decompress(e.to_string());
    let mut dec = flate2::read::MultiGzDecoder::new(data).take(limit);
    let skipped = io::copy(&mut (&mut dec).take(offset), &mut io::sink()).map_err(err)?;
    let want = size.unwrap_or(u64::MAX);
    // Room for 4x the stored bytes (bounded by the needle, not by what it inflates to), or less
    // when less is asked for; more grows as it comes.
    let guess = want.min(limit).min(data.len().saturating_mul(4) as u64);
    let mut out = Vec::with_capacity(guess as usize);
    (&mut dec).take(want).read_to_end(&mut out).map_err(err)?;
    let walked = skipped + out.len() as u64;
    // One byte more, past `limit` too: whether the data goes on.
    let more = io::copy(&mut dec.into_inner().take(1), &mut io::sink()).map_err(err)? == 1;
    if !more {
        return Ok(Gunzipped {
            data: out,
            total_len: walked,
        });
    }
    let len = trailer_len(data, walked);
    if skipped == offset && size == Some(out.len() as u64) {
        Ok(Gunzipped {
            data: out,
            total_len: len,
        })
    } else {
        // The range (or the whole data) goes past `limit`.
        Err(NeedleError::TooLarge { limit, len })
    }
}

/// The decompressed length gzip `data`'s trailer claims (ISIZE, little-endian in the last 4
/// bytes), taken as the low 32 bits of the smallest length above `walked`.
fn trailer_len(data: &[u8], walked: u64) -> u64 {
    let isize = data
        .last_chunk::<4>()
        .map_or(0, |b| u64::from(u32::from_le_bytes(*b)));
    let len = (walked & !0xffff_ffff) | isize;
    if len > walked {
        len
    } else {
        len.saturating_add(1 << 32)
    }
}

fn need(b: &[u8], n: impl TryInto<u64>, what: &'static str) -> Result<(), NeedleError> {
    let n = n.try_into().unwrap_or(u64::MAX);
    if (b.len() as u64) < n {
        return Err(NeedleError::Truncated {
            what,
            need: n,
            got: b.len() as u64,
        });
    }
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Builds needle bytes as weed writes them (header, body, tail, padding). For tests and tools.
#[derive(Debug, Clone, Default)]
pub struct NeedleBuilder {
    /// Cookie.
    pub cookie: u32,
    /// Needle id.
    pub id: u64,
    /// Stored data.
    pub data: Vec<u8>,
    /// Flags (name/mime/... flags are set from the fields below; set the others here).
    pub flags: u8,
    /// Name.
    pub name: Option<Vec<u8>>,
    /// MIME type.
    pub mime: Option<Vec<u8>>,
    /// Last modified, unix seconds.
    pub last_modified: Option<u64>,
    /// TTL.
    pub ttl: Option<Ttl>,
    /// JSON pairs.
    pub pairs: Option<Vec<u8>>,
    /// Append time (v3).
    pub append_at_ns: u64,
    /// Store the legacy CRC transform instead of the plain CRC.
    pub legacy_crc: bool,
}

impl NeedleBuilder {
    /// Encodes the needle for `version`; returns the bytes and the header Size.
    pub fn build(&self, version: NeedleVersion) -> (Vec<u8>, u32) {
        let mut body = Vec::new();
        if version == NeedleVersion::V1 {
            body.extend_from_slice(&self.data);
        } else if !self.data.is_empty() {
            let mut flags = self.flags;
            body.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
            body.extend_from_slice(&self.data);
            let flag_pos = body.len();
            body.push(0);
            if let Some(n) = &self.name {
                flags |= FLAG_HAS_NAME;
                let n = &n[..n.len().min(255)];
                body.push(n.len() as u8);
                body.extend_from_slice(n);
            }
            if let Some(m) = &self.mime {
                flags |= FLAG_HAS_MIME;
                let m = &m[..m.len().min(255)];
                body.push(m.len() as u8);
                body.extend_from_slice(m);
            }
            if let Some(lm) = self.last_modified {
                flags |= FLAG_HAS_LAST_MODIFIED;
                body.extend_from_slice(&lm.to_be_bytes()[3..]);
            }
            if let Some(t) = self.ttl {
                flags |= FLAG_HAS_TTL;
                body.extend_from_slice(&t.to_bytes());
            }
            if let Some(p) = &self.pairs {
                flags |= FLAG_HAS_PAIRS;
                body.extend_from_slice(&(p.len() as u16).to_be_bytes());
                body.extend_from_slice(p);
            }
            body[flag_pos] = flags;
        }
        let size = body.len() as u32;
        let mut out = NeedleHeader {
            cookie: self.cookie,
            id: self.id,
            size,
        }
        .to_bytes()
        .to_vec();
        out.extend_from_slice(&body);
        let mut crc = crc32c(&self.data);
        if self.legacy_crc {
            crc = legacy_crc(crc);
        }
        out.extend_from_slice(&crc.to_be_bytes());
        if version == NeedleVersion::V3 {
            out.extend_from_slice(&self.append_at_ns.to_be_bytes());
        }
        // weed leaves garbage in the padding; so do we.
        out.extend(std::iter::repeat_n(0xa5, version.padding(size) as usize));
        (out, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1-byte needle weed 4.48 wrote (`2,0379563739`), from its `.dat` at offset 8.
    const WEED_1B: &str = "79563739 0000000000000003 0000000f 00000001 be 0e 02 7a31 00 006b06b3aa \
                           4c109ebf 18eb41e39568900b 0000000f00";
    /// The 0-byte needle (`3,02e6695ea9`).
    const WEED_0B: &str = "e6695ea9 0000000000000002 00000000 00000000 18eb41e38fcde57e 00000000";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_real_weed_needles() {
        let b = hex(WEED_1B);
        assert_eq!(b.len() as u64, NeedleVersion::V3.actual_size(15));
        let n = Needle::parse(&b, NeedleVersion::V3, Some((3, 15))).unwrap();
        assert_eq!(n.header.cookie, 0x7956_3739);
        assert_eq!(n.data, &[0xbe]);
        assert_eq!(n.meta.flags, 0x0e);
        assert_eq!(n.meta.name, b"z1");
        assert_eq!(n.meta.mime, b"");
        assert_eq!(n.meta.last_modified, Some(0x6b06b3aa));
        assert_eq!(n.meta.ttl, None);
        assert_eq!(n.meta.etag(), "4c109ebf");
        assert_eq!(n.meta.append_at_ns, 0x18eb_41e3_9568_900b);
        let b = hex(WEED_0B);
        assert_eq!(b.len(), 32);
        let n = Needle::parse(&b, NeedleVersion::V3, Some((2, 0))).unwrap();
        assert!(n.data.is_empty());
        assert_eq!(
            n.meta,
            NeedleMeta {
                append_at_ns: 0x18eb_41e3_8fcd_e57e,
                ..NeedleMeta::default()
            }
        );
    }

    #[test]
    fn padding_is_one_to_eight() {
        // Research: 4 KiB file Size 4115 -> pad 1; 64 KiB Size 65556 -> pad 8; 1 MiB -> pad 1.
        assert_eq!(NeedleVersion::V3.padding(4115), 1);
        assert_eq!(NeedleVersion::V3.actual_size(4115), 4144);
        assert_eq!(NeedleVersion::V3.padding(65556), 8);
        assert_eq!(NeedleVersion::V3.actual_size(65556), 65592);
        assert_eq!(NeedleVersion::V3.padding(1_048_595), 1);
        assert_eq!(NeedleVersion::V3.actual_size(0), 32);
        assert_eq!(NeedleVersion::V2.padding(0), 4);
        for s in 0..64u32 {
            for v in [NeedleVersion::V1, NeedleVersion::V2, NeedleVersion::V3] {
                let p = v.padding(s);
                assert!((1..=8).contains(&p));
                assert_eq!(v.actual_size(s) % 8, 0);
            }
        }
    }

    #[test]
    fn round_trips_every_field_and_version() {
        let b = NeedleBuilder {
            cookie: 0xdead_beef,
            id: 0x1234,
            data: b"hello world".to_vec(),
            name: Some(b"a.txt".to_vec()),
            mime: Some(b"text/plain".to_vec()),
            last_modified: Some(1_700_000_000),
            ttl: Some(Ttl::from_bytes([3, 1])),
            pairs: Some(br#"{"Foo":"bar"}"#.to_vec()),
            append_at_ns: 42,
            ..Default::default()
        };
        for v in [NeedleVersion::V2, NeedleVersion::V3] {
            let (bytes, size) = b.build(v);
            assert_eq!(bytes.len() as u64, v.actual_size(size));
            let n = Needle::parse(&bytes, v, Some((0x1234, size))).unwrap();
            assert_eq!(n.data, b"hello world");
            assert_eq!(n.meta.flags, 0x3e);
            assert_eq!(n.meta.name, b"a.txt");
            assert_eq!(n.meta.mime, b"text/plain");
            assert_eq!(n.meta.last_modified, Some(1_700_000_000));
            assert_eq!(n.meta.ttl, Some(Ttl::from_bytes([3, 1])));
            assert_eq!(n.meta.pairs, br#"{"Foo":"bar"}"#);
            assert_eq!(
                n.meta.append_at_ns,
                if v == NeedleVersion::V3 { 42 } else { 0 }
            );
        }
        let (bytes, size) = b.build(NeedleVersion::V1);
        let n = Needle::parse(&bytes, NeedleVersion::V1, Some((0x1234, size))).unwrap();
        assert_eq!(n.data, b"hello world");
    }

    #[test]
    fn crc_plain_legacy_and_corrupt() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let mut b = NeedleBuilder {
            id: 1,
            data: vec![7; 100],
            ..Default::default()
        };
        let (ok, _) = b.build(NeedleVersion::V3);
        Needle::parse(&ok, NeedleVersion::V3, None).unwrap();
        b.legacy_crc = true;
        let (legacy, _) = b.build(NeedleVersion::V3);
        assert_ne!(legacy, ok);
        Needle::parse(&legacy, NeedleVersion::V3, None).unwrap();
        let mut bad = ok.clone();
        bad[30] ^= 1; // a data byte
        assert!(matches!(
            Needle::parse(&bad, NeedleVersion::V3, None),
            Err(NeedleError::Crc { .. })
        ));
    }

    #[test]
    fn header_mismatch_and_truncation() {
        let (bytes, size) = NeedleBuilder {
            id: 5,
            data: vec![1, 2, 3],
            ..Default::default()
        }
        .build(NeedleVersion::V3);
        assert_eq!(
            Needle::parse(&bytes, NeedleVersion::V3, Some((6, size))),
            Err(NeedleError::IdMismatch {
                expected: 6,
                found: 5
            })
        );
        assert_eq!(
            Needle::parse(&bytes, NeedleVersion::V3, Some((5, size + 1))),
            Err(NeedleError::SizeMismatch {
                expected: size + 1,
                found: size
            })
        );
        let unpadded = 16 + size as usize + 12;
        for n in 0..unpadded {
            assert!(
                matches!(
                    Needle::parse(&bytes[..n], NeedleVersion::V3, None),
                    Err(NeedleError::Truncated { .. })
                ),
                "{n}"
            );
        }
        Needle::parse(&bytes[..unpadded], NeedleVersion::V3, None).unwrap();
    }

    #[test]
    fn corrupt_lengths_are_errors() {
        // DataSize larger than the body.
        let mut body = 100u32.to_be_bytes().to_vec();
        body.extend([0; 10]);
        assert_eq!(
            parse_body(&body, NeedleVersion::V3),
            Err(NeedleError::Corrupt("data size"))
        );
        assert_eq!(
            parse_body(&[0, 0], NeedleVersion::V3),
            Err(NeedleError::Corrupt("data size"))
        );
        assert_eq!(
            parse_non_data(&[FLAG_HAS_NAME, 5, b'a']),
            Err(NeedleError::Corrupt("name"))
        );
        assert_eq!(
            parse_non_data(&[FLAG_HAS_MIME, 9]),
            Err(NeedleError::Corrupt("mime"))
        );
        assert_eq!(
            parse_non_data(&[FLAG_HAS_LAST_MODIFIED, 1, 2]),
            Err(NeedleError::Corrupt("last modified"))
        );
        assert_eq!(
            parse_non_data(&[FLAG_HAS_TTL, 1]),
            Err(NeedleError::Corrupt("ttl"))
        );
        assert_eq!(
            parse_non_data(&[FLAG_HAS_PAIRS, 0]),
            Err(NeedleError::Corrupt("pairs size"))
        );
        assert_eq!(
            parse_non_data(&[FLAG_HAS_PAIRS, 0, 3, b'{']),
            Err(NeedleError::Corrupt("pairs"))
        );
        // Fields past the end are absent, as in weed.
        let m = parse_non_data(&[FLAG_HAS_NAME | FLAG_HAS_TTL]).unwrap();
        assert!(m.name.is_empty() && m.ttl.is_none());
    }

    #[test]
    fn ttl_expiry_follows_weed() {
        let min = 60_000_000_000u64;
        let m = NeedleMeta {
            ttl: Some(Ttl::from_bytes([3, 1])),
            last_modified: Some(1),
            append_at_ns: 1000 * min,
            ..Default::default()
        };
        assert!(!m.is_expired_at(1002 * min));
        assert!(m.is_expired_at(1003 * min));
        // Without a last-modified time, or with an empty TTL, nothing expires.
        assert!(
            !NeedleMeta {
                last_modified: None,
                ..m.clone()
            }
            .is_expired_at(u64::MAX)
        );
        assert!(
            !NeedleMeta {
                ttl: Some(Ttl::NONE),
                ..m.clone()
            }
            .is_expired_at(u64::MAX)
        );
    }

    #[test]
    fn gzip_is_decompressed_other_data_kept() {
        use std::io::Write;
        let text = b"compressible ".repeat(1000);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&text).unwrap();
        let gz = enc.finish().unwrap();
        let b = NeedleBuilder {
            id: 1,
            data: gz.clone(),
            flags: FLAG_IS_COMPRESSED,
            ..Default::default()
        };
        let (bytes, _) = b.build(NeedleVersion::V3);
        let n = Needle::parse(&bytes, NeedleVersion::V3, None).unwrap();
        assert!(n.meta.is_compressed());
        assert_eq!(n.data, &gz[..]);
        assert_eq!(&*n.decompressed().unwrap(), &text[..]);
        // Compressed flag but not gzip: served as stored.
        assert_eq!(&*maybe_gunzip(b"plain").unwrap(), b"plain");
        // Broken gzip: an error, not a panic.
        let mut broken = gz.clone();
        broken.truncate(gz.len() / 2);
        assert!(matches!(
            maybe_gunzip(&broken),
            Err(NeedleError::Decompress(_))
        ));
        assert!(matches!(
            maybe_gunzip(&[0x1f, 0x8b]),
            Err(NeedleError::Decompress(_))
        ));
    }

    #[test]
    fn gzip_ranges_stream_and_stop_at_the_cap() {
        use std::io::Write;
        let gz = |data: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        };
        let text: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let one = gz(&text);
        let range = |data, offset, size, limit| gunzip_range(data, offset, size, limit);
        // A range: exactly its bytes; the length from the trailer, then exact at the end.
        let g = range(&one, 100, Some(50), 1 << 20).unwrap();
        assert_eq!((&g.data[..], g.total_len), (&text[100..150], 10_000));
        let g = range(&one, 9_990, Some(10), 10_000).unwrap();
        assert_eq!((&g.data[..], g.total_len), (&text[9_990..], 10_000));
        // Past the end: the bytes there are and the exact length.
        let g = range(&one, 9_990, Some(20), 1 << 20).unwrap();
        assert_eq!((&g.data[..], g.total_len), (&text[9_990..], 10_000));
        let g = range(&one, 20_000, None, 1 << 20).unwrap();
        assert_eq!((g.data.len(), g.total_len), (0, 10_000));
        // The cap: a whole read or a range past it fails; a range below it does not.
        assert_eq!(range(&one, 0, None, 10_000).unwrap().data, text);
        for (offset, size) in [(0, None), (5, None), (9_000, Some(2))] {
            assert!(matches!(
                range(&one, offset, size, 9_000),
                Err(NeedleError::TooLarge {
                    limit: 9_000,
                    len: 10_000
                })
            ));
        }
        let g = range(&one, 8_000, Some(1_000), 9_000).unwrap();
        assert_eq!((&g.data[..], g.total_len), (&text[8_000..9_000], 10_000));
        // Two members: read across them; a trailer that undercounts is lifted past the range.
        let two = [gz(&text[..6_000]), gz(&text[6_000..])].concat();
        let g = range(&two, 5_990, Some(20), 1 << 20).unwrap();
        assert_eq!(g.data, &text[5_990..6_010]);
        assert_eq!(g.total_len, 4_000 + (1 << 32));
        assert_eq!(range(&two, 0, None, 1 << 20).unwrap().total_len, 10_000);
        assert_eq!(&*maybe_gunzip(&two).unwrap(), &text[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (valid, _) = NeedleBuilder {
            id: 1,
            data: vec![9; 40],
            name: Some(b"n".to_vec()),
            pairs: Some(b"{}".to_vec()),
            ..Default::default()
        }
        .build(NeedleVersion::V3);
        for _ in 0..20_000 {
            let r = next();
            let mut b = if r % 2 == 0 {
                (0..(r >> 8) % 200)
                    .map(|_| next() as u8)
                    .collect::<Vec<u8>>()
            } else {
                let mut v = valid.clone();
                for _ in 0..(r >> 8) % 4 + 1 {
                    let i = next() as usize % v.len();
                    v[i] = next() as u8;
                }
                v
            };
            if r % 3 == 0 {
                // Small Size values make the random bytes actually reach the body parser.
                b.resize(b.len().max(16), 0);
                b[12..16].copy_from_slice(&((r >> 20) as u32 % 64).to_be_bytes());
            }
            for v in [NeedleVersion::V1, NeedleVersion::V2, NeedleVersion::V3] {
                if let Ok(n) = Needle::parse(&b, v, None) {
                    let _ = n.decompressed();
                }
                let _ = parse_non_data(&b);
                let _ = parse_body(&b, v);
            }
        }
    }
}
