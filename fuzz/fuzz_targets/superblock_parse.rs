//! `SuperBlock::parse` (the first bytes of a `.dat`) on arbitrary bytes: no panic; refused
//! exactly when shorter than 8 bytes (`Truncated` with the length) or of a version other than
//! 1-3 (`UnsupportedVersion` with it); what parses re-encodes to the first 8 bytes (with the extra
//! size 0 for version 1, which has none) and its first needle starts 8 + extra size bytes in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swucx::seaweed::superblock::SUPER_BLOCK_SIZE;
use swucx::seaweed::{NeedleVersion, SuperBlock, SuperBlockError};

fuzz_target!(|data: &[u8]| {
    match SuperBlock::parse(data) {
        Ok(sb) => {
            let mut want: [u8; SUPER_BLOCK_SIZE] = data[..SUPER_BLOCK_SIZE].try_into().unwrap();
            if sb.version == NeedleVersion::V1 {
                want[6..].fill(0);
            }
            assert_eq!(sb.to_bytes(), want);
            assert_eq!(sb.block_size(), 8 + u64::from(sb.extra_size));
            assert_eq!(SuperBlock::parse(&sb.to_bytes()), Ok(sb));
        }
        Err(SuperBlockError::Truncated(n)) => {
            assert_eq!(n, data.len());
            assert!(n < SUPER_BLOCK_SIZE);
        }
        Err(SuperBlockError::UnsupportedVersion(v)) => {
            assert!(data.len() >= SUPER_BLOCK_SIZE);
            assert_eq!(v, data[0]);
            assert!(!(1..=3).contains(&v));
        }
    }
});
