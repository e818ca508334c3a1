//! SeaweedFS file ids: `"<volume id>,<needle id hex><cookie 8 hex>"`.
//!
//! Parsing follows weed (`needle.ParsePath`, `ParseNeedleIdCookie`): the last 8 hex digits are
//! the cookie, the 1 to 16 before them the needle id; an optional `_<decimal>` suffix adds a delta
//! to the needle id (batch assignment); an optional `.ext` extension is dropped first.
//!
//! Formatting follows `formatNeedleIdCookie`: the 12 bytes `id (u64 BE) ‖ cookie (u32 BE)` are
//! hex-encoded after dropping the id's leading zero *bytes* (so `7,0188e07130`, not `7,188e07130`).

use std::fmt;
use std::str::FromStr;

/// Why a file id string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FidError {
    /// No `,` separates the volume id from the needle key.
    #[error("file id {0:?}: missing ',' between volume id and needle key")]
    MissingComma(String),
    /// The volume id is not a decimal number that fits in 32 bits.
    #[error("file id {0:?}: volume id is not a decimal number below 2^32")]
    BadVolumeId(String),
    /// The needle key (id + cookie) has 8 or fewer hex digits.
    #[error("file id {0:?}: needle key is too short (needs more than 8 hex digits)")]
    KeyTooShort(String),
    /// The needle key has more than 24 hex digits.
    #[error("file id {0:?}: needle key is too long (at most 24 hex digits)")]
    KeyTooLong(String),
    /// The needle key contains something other than hex digits.
    #[error("file id {0:?}: needle key is not hexadecimal")]
    BadHex(String),
    /// The `_delta` suffix is not a decimal number.
    #[error("file id {0:?}: '_' suffix is not a decimal delta")]
    BadDelta(String),
}

/// A parsed file id: which volume, which needle, and the needle's cookie (its access secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// The volume id.
    pub volume_id: u32,
    /// The needle id, with any `_delta` already added (wrapping, as weed does).
    pub needle_id: u64,
    /// The cookie that must match the one stored in the needle.
    pub cookie: u32,
}

/// A file id with the parts of its text that weed treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFid<'a> {
    /// The resolved file id (delta applied).
    pub id: FileId,
    /// `vid,key` without the `_delta` suffix and the extension: what a read JWT's `fid` claim must
    /// equal.
    pub base: &'a str,
    /// The `_delta` suffix, if any.
    pub delta: Option<u64>,
    /// The extension including its dot (`.jpg`), if any.
    pub ext: Option<&'a str>,
}

impl FileId {
    /// Makes a file id from its parts.
    pub const fn new(volume_id: u32, needle_id: u64, cookie: u32) -> Self {
        Self {
            volume_id,
            needle_id,
            cookie,
        }
    }

    /// Parses `vid,<key>[_delta][.ext]`; see [`FileId::parse_parts`] for the pieces.
    pub fn parse(s: &str) -> Result<Self, FidError> {
        Self::parse_parts(s).map(|p| p.id)
    }

    /// Parses `vid,<key>[_delta][.ext]` and returns the id with the text's parts.
    pub fn parse_parts(s: &str) -> Result<ParsedFid<'_>, FidError> {
        let err_s = || s.to_string();
        // The extension goes first (weed's parseURLPath), then the delta (Needle.ParsePath).
        let (rest, ext) = match s.rfind('.') {
            Some(i) if i > 0 => (&s[..i], Some(&s[i..])),
            _ => (s, None),
        };
        let (vid_s, key_s) = rest
            .split_once(',')
            .ok_or_else(|| FidError::MissingComma(err_s()))?;
        if vid_s.is_empty() || !vid_s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FidError::BadVolumeId(err_s()));
        }
        let volume_id: u32 = vid_s.parse().map_err(|_| FidError::BadVolumeId(err_s()))?;
        let (key_s, delta) = match key_s.rfind('_') {
            Some(i) if i > 0 => {
                let d = &key_s[i + 1..];
                if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FidError::BadDelta(err_s()));
                }
                let d: u64 = d.parse().map_err(|_| FidError::BadDelta(err_s()))?;
                (&key_s[..i], Some(d))
            }
            _ => (key_s, None),
        };
        let (needle_id, cookie) = parse_key(key_s).map_err(|e| e(err_s()))?;
        let needle_id = needle_id.wrapping_add(delta.unwrap_or(0));
        Ok(ParsedFid {
            id: FileId::new(volume_id, needle_id, cookie),
            base: &rest[..vid_s.len() + 1 + key_s.len()],
            delta,
            ext,
        })
    }

    /// The needle key as weed formats it: id without leading zero bytes, then 8 hex cookie digits.
    pub fn key_hex(&self) -> String {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&self.needle_id.to_be_bytes());
        bytes[8..].copy_from_slice(&self.cookie.to_be_bytes());
        let skip = bytes[..8].iter().take_while(|&&b| b == 0).count();
        let mut out = String::with_capacity(24);
        for b in &bytes[skip..] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Splits and decodes a needle key: the last 8 hex digits are the cookie.
fn parse_key(key: &str) -> Result<(u64, u32), fn(String) -> FidError> {
    if key.len() <= 8 {
        return Err(FidError::KeyTooShort);
    }
    if key.len() > 24 {
        return Err(FidError::KeyTooLong);
    }
    if !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FidError::BadHex);
    }
    let split = key.len() - 8;
    let id = u64::from_str_radix(&key[..split], 16).map_err(|_| FidError::BadHex as fn(_) -> _)?;
    let cookie =
        u32::from_str_radix(&key[split..], 16).map_err(|_| FidError::BadHex as fn(_) -> _)?;
    Ok((id, cookie))
}

impl fmt::Display for FileId {
    /// Formats as weed does: `vid,<key_hex>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.volume_id, self.key_hex())
    }
}

impl FromStr for FileId {
    type Err = FidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_weed_examples() {
        let f = FileId::parse("7,0188e07130").unwrap();
        assert_eq!(f, FileId::new(7, 1, 0x88e0_7130));
        assert_eq!(f.to_string(), "7,0188e07130");
        let f = FileId::parse("3,03e2abf0b7").unwrap();
        assert_eq!(f, FileId::new(3, 3, 0xe2ab_f0b7));
        // Nibble-odd ids parse; formatting pads the id to whole bytes.
        let f = FileId::parse("1,188e07130").unwrap();
        assert_eq!(f, FileId::new(1, 1, 0x88e0_7130));
        assert_eq!(f.to_string(), "1,0188e07130");
        let big = FileId::new(u32::MAX, u64::MAX, u32::MAX);
        assert_eq!(big.to_string(), "4294967295,ffffffffffffffffffffffff");
        assert_eq!(FileId::parse(&big.to_string()).unwrap(), big);
        let f = FileId::new(9, 0x1234_5678_9abc, 0xdead_beef);
        assert_eq!(FileId::parse(&f.to_string()).unwrap(), f);
        assert_eq!("9,123456789abcdeadbeef".parse::<FileId>().unwrap(), f);
    }

    #[test]
    fn delta_and_extension() {
        let p = FileId::parse_parts("3,01637037d6_2.jpg").unwrap();
        assert_eq!(p.id, FileId::new(3, 3, 0x6370_37d6));
        assert_eq!(p.base, "3,01637037d6");
        assert_eq!(p.delta, Some(2));
        assert_eq!(p.ext, Some(".jpg"));
        // Only the last extension is dropped, as in weed: the rest is not hex.
        let s = "3,01637037d6.tar.gz";
        assert_eq!(FileId::parse(s), Err(FidError::BadHex(s.to_string())));
        let p = FileId::parse_parts("3,01637037d6_0").unwrap();
        assert_eq!(p.id.needle_id, 1);
        assert_eq!(p.base, "3,01637037d6");
        // Delta wraps like weed's uint64 addition.
        let p = FileId::parse("1,ffffffffffffffff00000000_1").unwrap();
        assert_eq!(p.needle_id, 0);
    }

    #[test]
    fn malformed_ids_are_refused_clearly() {
        use FidError::*;
        type Want = fn(String) -> FidError;
        let cases: &[(&str, Want)] = &[
            ("", MissingComma),
            ("70188e07130", MissingComma),
            (",0188e07130", BadVolumeId),
            ("x,0188e07130", BadVolumeId),
            ("-1,0188e07130", BadVolumeId),
            ("+1,0188e07130", BadVolumeId),
            ("4294967296,0188e07130", BadVolumeId),
            ("99999999999999999999999,0188e07130", BadVolumeId),
            ("7,88e07130", KeyTooShort),
            ("7,", KeyTooShort),
            ("7,0102030405060708090a0b0c0d", KeyTooLong),
            ("7,01g8e07130", BadHex),
            ("7,0x88e07130", BadHex),
            ("7,+188e07130", BadHex),
            ("7,01 8e07130", BadHex),
            ("7,0188e07130_", BadDelta),
            ("7,0188e07130_x", BadDelta),
            ("7,0188e07130_-1", BadDelta),
            ("7,0188e07130_99999999999999999999999", BadDelta),
        ];
        for (s, want) in cases {
            assert_eq!(FileId::parse(s), Err(want(s.to_string())), "{s:?}");
        }
        // The message names the input.
        let msg = FileId::parse("7,zz").unwrap_err().to_string();
        assert!(msg.contains("7,zz"), "{msg}");
    }

    #[test]
    fn arbitrary_strings_never_panic() {
        let alphabet = [
            "", ",", "_", ".", "0", "9", "a", "f", "g", "é", "ÿ", "00000000", "ffffffff", "-",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut s = String::new();
            for k in 0..(seed % 9) {
                s.push_str(alphabet[((seed >> (k * 4)) % alphabet.len() as u64) as usize]);
            }
            if let Ok(f) = FileId::parse(&s) {
                // Whatever parses re-parses from its own formatting when the id is nonzero.
                if f.needle_id != 0 {
                    assert_eq!(FileId::parse(&f.to_string()).unwrap(), f, "{s:?}");
                }
            }
        }
    }
}
