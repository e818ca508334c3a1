//! `.idx` decoding (a volume's index file, which a corrupt or hostile volume can hold) on
//! arbitrary bytes, for both offset widths: no panic, and the needle map is what the rows say.
//!
//! Input: a control byte (bit 0: 4- or 5-byte offsets), a split point (u16 BE, taken modulo the
//! length + 1), then the `.idx` bytes. Asserted:
//!
//! - `IndexEntry::parse` takes a row from any input at least a row long (else `Truncated` with
//!   the lengths) and `to_bytes` gives the row back; the offset fits its width, the byte offset is
//!   8 times it, and a row deletes exactly when its offset is 0 or its size negative.
//! - `NeedleMap::from_bytes` consumes the whole rows, and feeding the same bytes in two calls of
//!   `apply` cut at the split point (a growing `.idx` read while weed appends), the second from
//!   where the first stopped, gives the same map.
//! - The map is what the rows say, worked out here per id: live with the last row's offset and
//!   size when that row is live; deleted, pointing at the last live row, when a live row came
//!   before the last deletion; unknown when the id never had a live row. `live_count` and `live`
//!   agree with that.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use swucx::seaweed::{IndexEntry, IndexError, NeedleMap, NeedleValue, OffsetWidth};

fuzz_target!(|data: &[u8]| {
    let Some((ctl, bytes)) = data.split_first_chunk::<3>() else {
        return;
    };
    let width = if ctl[0] & 1 == 0 {
        OffsetWidth::Four
    } else {
        OffsetWidth::Five
    };
    let n = width.entry_size();
    let split = usize::from(u16::from_be_bytes([ctl[1], ctl[2]])) % (bytes.len() + 1);

    match IndexEntry::parse(bytes, width) {
        Ok(e) => {
            assert!(bytes.len() >= n);
            assert_eq!(e.to_bytes(width), &bytes[..n]);
            assert!(e.offset_units < 1 << (8 * width.bytes()));
            assert_eq!(e.byte_offset(), e.offset_units * 8);
            assert_eq!(e.is_deletion(), e.offset_units == 0 || e.size < 0);
        }
        Err(e) => assert_eq!(
            e,
            IndexError::Truncated {
                got: bytes.len(),
                need: n
            }
        ),
    }

    let whole = bytes.len() - bytes.len() % n;
    let map = NeedleMap::from_bytes(bytes, width);
    assert_eq!(map.width(), width);
    assert_eq!(map.consumed(), whole as u64);

    // Fed in two parts, as a growing file is.
    let mut fed = NeedleMap::new(width);
    let first = fed.apply(&bytes[..split]);
    assert_eq!(first, split - split % n);
    let second = fed.apply(&bytes[first..]);
    assert_eq!(first + second, whole);
    assert_eq!(fed.consumed(), whole as u64);

    // What the rows say, per id: the last live row and whether a deletion came after it.
    let mut want: HashMap<u64, (Option<IndexEntry>, bool)> = HashMap::new();
    for row in bytes.chunks_exact(n) {
        let e = IndexEntry::parse(row, width).unwrap();
        let (last_live, deleted) = want.entry(e.needle_id).or_default();
        if e.is_deletion() {
            *deleted = true;
        } else {
            *last_live = Some(e);
            *deleted = false;
        }
    }
    let mut live_want = Vec::new();
    for (&id, &(last_live, deleted)) in &want {
        let expected = match last_live {
            None => None,
            Some(e) if deleted => Some(NeedleValue::Deleted {
                was: Some(e.byte_offset()),
            }),
            Some(e) => {
                live_want.push((id, e.byte_offset(), e.size as u32));
                Some(NeedleValue::Live {
                    offset: e.byte_offset(),
                    size: e.size as u32,
                })
            }
        };
        assert_eq!(map.get(id), expected, "id {id:#x}");
        assert_eq!(fed.get(id), expected, "id {id:#x}");
    }
    live_want.sort_unstable();
    for m in [&map, &fed] {
        let mut live: Vec<_> = m.live().collect();
        live.sort_unstable();
        assert_eq!(live, live_want);
        assert_eq!(m.live_count(), live_want.len());
    }
});
