//! The superblock at the start of every `.dat` file (`storage/super_block/super_block.go`).
//!
//! ```text
//! 0  version            u8   (1, 2 or 3)
//! 1  replica placement  u8
//! 2  TTL                2 bytes (count, unit)
//! 4  compaction revision u16 BE, incremented by every vacuum
//! 6  extra size         u16 BE; for v2/v3 that many bytes of protobuf follow
//! ```
//! The first needle starts at [`SuperBlock::block_size`].

use super::needle::NeedleVersion;
use super::ttl::Ttl;

/// The fixed part of a superblock, in bytes.
pub const SUPER_BLOCK_SIZE: usize = 8;

/// Why a superblock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperBlockError {
    /// Fewer than 8 bytes.
    #[error("superblock truncated: {0} bytes, need 8")]
    Truncated(usize),
    /// A version other than 1, 2 or 3.
    #[error("unsupported volume version {0}")]
    UnsupportedVersion(u8),
}

/// A parsed superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperBlock {
    /// The needle format version of every needle in the volume.
    pub version: NeedleVersion,
    /// The replica placement byte (e.g. `0x01` for "001").
    pub replica_placement: u8,
    /// The volume's TTL.
    pub ttl: Ttl,
    /// Bumped by every compaction (vacuum): needles move when it changes.
    pub compaction_revision: u16,
    /// Bytes of protobuf `SuperBlockExtra` after the fixed 8 bytes (v2 and v3 only).
    pub extra_size: u16,
}

impl SuperBlock {
    /// Parses the first 8 bytes of a `.dat` file.
    pub fn parse(b: &[u8]) -> Result<Self, SuperBlockError> {
        let b: &[u8; SUPER_BLOCK_SIZE] = b
            .get(..SUPER_BLOCK_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(SuperBlockError::Truncated(b.len()))?;
        let version =
            NeedleVersion::from_u8(b[0]).ok_or(SuperBlockError::UnsupportedVersion(b[0]))?;
        let extra_size = u16::from_be_bytes([b[6], b[7]]);
        Ok(SuperBlock {
            version,
            replica_placement: b[1],
            ttl: Ttl::from_bytes([b[2], b[3]]),
            compaction_revision: u16::from_be_bytes([b[4], b[5]]),
            extra_size: if version == NeedleVersion::V1 {
                0
            } else {
                extra_size
            },
        })
    }

    /// Where the first needle starts: 8, plus the extra bytes for v2 and v3.
    pub fn block_size(&self) -> u64 {
        SUPER_BLOCK_SIZE as u64 + u64::from(self.extra_size)
    }

    /// The 8 bytes as weed writes them (without the extra protobuf).
    pub fn to_bytes(&self) -> [u8; SUPER_BLOCK_SIZE] {
        let r = self.compaction_revision.to_be_bytes();
        let e = self.extra_size.to_be_bytes();
        [
            self.version as u8,
            self.replica_placement,
            self.ttl.count,
            self.ttl.unit,
            r[0],
            r[1],
            e[0],
            e[1],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weed_superblocks() {
        // A TTL volume written by weed 4.48: v3, replication 000, ttl 3m.
        let sb = SuperBlock::parse(&[3, 0, 3, 1, 0, 0, 0, 0]).unwrap();
        assert_eq!(sb.version, NeedleVersion::V3);
        assert_eq!(sb.ttl, Ttl::from_bytes([3, 1]));
        assert_eq!(sb.compaction_revision, 0);
        assert_eq!(sb.block_size(), 8);
        let sb = SuperBlock::parse(&[2, 1, 0, 0, 0x01, 0x02, 0, 9, 0xff]).unwrap();
        assert_eq!(sb.version, NeedleVersion::V2);
        assert_eq!(sb.replica_placement, 1);
        assert_eq!(sb.compaction_revision, 0x0102);
        assert_eq!(sb.block_size(), 17);
        assert_eq!(sb.to_bytes(), [2, 1, 0, 0, 1, 2, 0, 9]);
        // v1 has no extra bytes.
        assert_eq!(
            SuperBlock::parse(&[1, 0, 0, 0, 0, 0, 0, 9])
                .unwrap()
                .block_size(),
            8
        );
    }

    #[test]
    fn malformed_superblocks() {
        for n in 0..8 {
            assert_eq!(
                SuperBlock::parse(&[3; 8][..n]),
                Err(SuperBlockError::Truncated(n))
            );
        }
        for v in [0u8, 4, 255] {
            assert_eq!(
                SuperBlock::parse(&[v, 0, 0, 0, 0, 0, 0, 0]),
                Err(SuperBlockError::UnsupportedVersion(v))
            );
        }
    }
}
