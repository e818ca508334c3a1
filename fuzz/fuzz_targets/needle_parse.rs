//! The needle decoders (bytes of a `.dat`, which a corrupt or hostile volume can hold) on
//! arbitrary input: no panic, every output within its input and its caps.
//!
//! Input: a control byte (its value mod 3 + 1: the needle version; bit 2: compress the blob here
//! first; bits 3 and 4: offset and size counted down from `u64::MAX`), an offset (u16 BE), a size
//! (u16 BE, 0xffff = to the end), a decompression limit (u16 BE, in units of 16 bytes), then the
//! blob. Asserted:
//!
//! - `NeedleHeader::parse` takes the first 16 bytes and `to_bytes` gives them back.
//! - `Needle::parse` (with and without the header's own `(id, Size)` as the index's) gives the
//!   same result either way and an id or Size mismatch when they differ; a parsed needle's data
//!   lies inside the blob (from byte 20 for v2/v3, 16 for v1), has `data_size` bytes and its CRC,
//!   and the blob holds `16 + Size + tail`. `decompressed()` is the data itself unless the needle
//!   is compressed, else what `maybe_gunzip` gives.
//! - `parse_body` / `parse_non_data` / `parse_tail` on the blob: data inside it, name and mime at
//!   most 255 bytes, pairs at most 65535, all taken from the blob.
//! - `maybe_gunzip`: non-gzip data comes back unchanged and borrowed; at most `MAX_DECOMPRESSED`.
//! - `gunzip_range(blob, offset, size, limit)`: at most `size` bytes, at most `limit` walked, and
//!   `total_len` not below the bytes walked; when the whole data decompresses (flate2 checked
//!   every member's CRC and length) to L bytes, a range within a limit of at least L is exactly
//!   `full[offset..][..size]` with `total_len` L when it reaches the end, and a whole read with a
//!   limit below L is `TooLarge`.
//! - With bit 2, the blob is gzip'd here, so that every range of it must decompress to exactly
//!   those bytes of the blob.
//!
//! Memory: libFuzzer's default `-max_len` (4096) bounds the blob; deflate inflates at most about
//! 1032:1, so a whole decompression is at most about 4 MiB and a range at most 1 MiB (`limit` is
//! at most 0xffff * 16 bytes).
#![no_main]

use std::borrow::Cow;
use std::io::Write;

use libfuzzer_sys::fuzz_target;
use swucx::seaweed::needle::{
    MAX_DECOMPRESSED, NEEDLE_HEADER_SIZE, gunzip_range, is_gzip, maybe_gunzip, parse_body,
    parse_non_data, parse_tail,
};
use swucx::seaweed::{Needle, NeedleError, NeedleHeader, NeedleVersion};

fuzz_target!(|data: &[u8]| {
    let Some((ctl, blob)) = data.split_first_chunk::<7>() else {
        return;
    };
    let version = NeedleVersion::from_u8(ctl[0] % 3 + 1).unwrap();
    let compress = ctl[0] & 4 != 0;
    let from_top = |bit: u8, v: u64| if ctl[0] & bit != 0 { u64::MAX - v } else { v };
    let offset = from_top(8, u64::from(u16::from_be_bytes([ctl[1], ctl[2]])));
    let size = match u16::from_be_bytes([ctl[3], ctl[4]]) {
        0xffff => None,
        s => Some(from_top(16, u64::from(s))),
    };
    let limit = u64::from(u16::from_be_bytes([ctl[5], ctl[6]])) * 16;

    if compress {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(blob).unwrap();
        let gz = enc.finish().unwrap();
        check_gunzip(&gz, offset, size, limit, Some(blob));
        return;
    }

    let header = NeedleHeader::parse(blob);
    match &header {
        Ok(h) => assert_eq!(&h.to_bytes()[..], &blob[..NEEDLE_HEADER_SIZE]),
        Err(e) => assert!(matches!(e, NeedleError::Truncated { .. })),
    }
    let needle = Needle::parse(blob, version, None);
    if let Ok(h) = header {
        assert_eq!(Needle::parse(blob, version, Some((h.id, h.size))), needle);
        assert!(matches!(
            Needle::parse(blob, version, Some((h.id ^ 1, h.size))),
            Err(NeedleError::IdMismatch { .. })
        ));
        assert!(matches!(
            Needle::parse(blob, version, Some((h.id, h.size ^ 1))),
            Err(NeedleError::SizeMismatch { .. })
        ));
    }
    if let Ok(n) = &needle {
        let size = n.header.size as usize;
        assert!(blob.len() >= NEEDLE_HEADER_SIZE + size + version.tail_size());
        let start = n.data.as_ptr() as usize - blob.as_ptr() as usize;
        let data_start = if version == NeedleVersion::V1 {
            NEEDLE_HEADER_SIZE
        } else {
            NEEDLE_HEADER_SIZE + 4
        };
        if !n.data.is_empty() {
            assert_eq!(start, data_start);
            assert!(start + n.data.len() <= NEEDLE_HEADER_SIZE + size);
            assert_eq!(n.data.len(), n.meta.data_size as usize);
            swucx::seaweed::needle::check_crc(n.data, n.meta.checksum).unwrap();
        }
        match n.decompressed() {
            Ok(Cow::Borrowed(d)) => assert!(std::ptr::eq(d, n.data)),
            Ok(Cow::Owned(d)) => {
                assert!(n.meta.is_compressed() && is_gzip(n.data));
                assert!(d.len() as u64 <= MAX_DECOMPRESSED);
            }
            Err(e) => assert!(n.meta.is_compressed(), "{e}"),
        }
    }
    if let Ok((meta, d)) = parse_body(blob, version) {
        within(blob, d);
        if version != NeedleVersion::V1 && !blob.is_empty() {
            assert_eq!(d.len(), meta.data_size as usize);
            assert_eq!(d.as_ptr() as usize - blob.as_ptr() as usize, 4);
        }
    }
    if let Ok(meta) = parse_non_data(blob) {
        assert!(meta.name.len() <= 255 && meta.mime.len() <= 255 && meta.pairs.len() <= 65535);
        let used = usize::from(!blob.is_empty()) + meta.name.len() + meta.mime.len();
        assert!(used + meta.pairs.len() <= blob.len());
        assert_eq!(meta.data_size, 0);
        if !blob.is_empty() {
            assert_eq!(meta.flags, blob[0]);
        }
    }
    match parse_tail(blob, version) {
        Ok((crc, ts)) => {
            assert!(blob.len() >= version.tail_size());
            assert_eq!(crc.to_be_bytes(), blob[..4]);
            if version != NeedleVersion::V3 {
                assert_eq!(ts, 0);
            }
        }
        Err(_) => assert!(blob.len() < version.tail_size()),
    }
    match maybe_gunzip(blob) {
        Ok(Cow::Borrowed(d)) => assert!(!is_gzip(blob) && std::ptr::eq(d, blob)),
        Ok(Cow::Owned(d)) => assert!(is_gzip(blob) && d.len() as u64 <= MAX_DECOMPRESSED),
        Err(_) => assert!(is_gzip(blob)),
    }
    check_gunzip(blob, offset, size, limit, None);
});

/// `gunzip_range` on `gz`: within its bounds, and consistent with decompressing all of it (or
/// with `plain`, what `gz` is known to decompress to).
fn check_gunzip(gz: &[u8], offset: u64, size: Option<u64>, limit: u64, plain: Option<&[u8]>) {
    let full = gunzip_range(gz, 0, None, MAX_DECOMPRESSED);
    if let Some(plain) = plain {
        let full = full.as_ref().expect("gzip made here decompresses");
        assert_eq!(full.data, plain);
        assert_eq!(full.total_len, plain.len() as u64);
    }
    if let Ok(f) = &full {
        assert_eq!(f.total_len, f.data.len() as u64);
        if is_gzip(gz) {
            assert_eq!(*maybe_gunzip(gz).unwrap(), f.data);
        }
    }
    let range = gunzip_range(gz, offset, size, limit);
    if let Ok(g) = &range {
        let walked = offset.min(g.total_len) + g.data.len() as u64;
        assert!(size.is_none_or(|s| g.data.len() as u64 <= s));
        assert!(walked <= limit, "walked {walked} past the limit {limit}");
        assert!(g.total_len >= walked);
    }
    let Ok(f) = &full else {
        return;
    };
    let len = f.data.len() as u64;
    if len <= limit {
        let g = range.expect("a range of data within the limit decompresses");
        let from = offset.min(len) as usize;
        let to = size.map_or(len, |s| offset.saturating_add(s).min(len)) as usize;
        assert_eq!(g.data, f.data[from..to.max(from)]);
        if size.is_none_or(|s| offset.saturating_add(s) >= len) {
            assert_eq!(g.total_len, len);
        } else {
            assert!(g.total_len > offset + size.unwrap());
        }
    } else if offset == 0 && size.is_none() {
        assert!(matches!(range, Err(NeedleError::TooLarge { .. })));
    }
}

/// `part` lies inside `whole`.
fn within(whole: &[u8], part: &[u8]) {
    let start = part.as_ptr() as usize;
    let base = whole.as_ptr() as usize;
    assert!(part.is_empty() || (start >= base && start + part.len() <= base + whole.len()));
}
