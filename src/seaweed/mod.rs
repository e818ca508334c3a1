//! SeaweedFS storage: reading exactly what a real `weed volume` wrote.
//!
//! - [`fid`]: file ids (`vid,<needle id hex><cookie 8 hex>`, `_delta` suffix, extension).
//! - [`ttl`]: the 2-byte time-to-live used by superblocks and needles.
//! - [`superblock`]: the 8-byte (+ extra) header of a `.dat` file.
//! - [`vif`]: the `.vif` JSON volume info (version, 4- or 5-byte offsets).
//! - [`index`]: `.idx` rows and the in-memory needle map (last row wins, tombstones, tail following).
//! - [`needle`]: needle header, body and tail for versions 2 and 3, CRC-32C, padding, gzip.
//! - [`volume`]: one volume and a directory of volumes: look up `(vid, needle id, cookie)` and read
//!   the data or a range of it, with weed's refusal rules (not found, cookie mismatch, deleted,
//!   expired, bad range), following appends, compactions and volumes that come and go.
//!
//! - [`protocol`]: the READ request/reply wire format (docs/protocol.md).
//! - [`server`] / [`client`]: serving and reading needles over UCX active messages; `slots`:
//!   the server's connection limits (server-wide and per client host).
//! - [`stats`]: a server's counters (replies by status, bytes, connections), as Prometheus text.
//!
//! All multi-byte integers on disk are big-endian. Every parser here takes arbitrary bytes and
//! returns an error on malformed input; none panics.
//!
//! [`fid`]: crate::seaweed::fid
//! [`ttl`]: crate::seaweed::ttl
//! [`superblock`]: crate::seaweed::superblock
//! [`vif`]: crate::seaweed::vif
//! [`index`]: crate::seaweed::index
//! [`needle`]: crate::seaweed::needle
//! [`volume`]: crate::seaweed::volume
//! [`protocol`]: crate::seaweed::protocol
//! [`server`]: crate::seaweed::server
//! [`client`]: crate::seaweed::client
//! [`stats`]: crate::seaweed::stats

pub mod client;
pub mod direct;
pub mod fid;
pub mod index;
pub mod jwt;
pub mod needle;
pub mod protocol;
pub mod server;
mod slots;
pub mod stats;
pub mod superblock;
pub mod ttl;
pub mod vif;
pub mod volume;

pub use client::{ClientError, NeedleClient, NeedleData};
pub use fid::{FidError, FileId, ParsedFid};
pub use index::{IndexEntry, IndexError, NeedleMap, NeedleValue, OffsetWidth};
pub use jwt::{JwtError, KeySource, ReadKey, weed_config_dirs};
pub use needle::{Needle, NeedleError, NeedleHeader, NeedleMeta, NeedleVersion};
pub use server::{NeedleServer, NeedleSource, ServerThread};
pub use stats::{ServerStats, StatsSnapshot};
pub use superblock::{SuperBlock, SuperBlockError};
pub use ttl::Ttl;
pub use vif::{VifError, VolumeInfo};
pub use volume::{ReadOptions, ReadResult, Volume, VolumeDir, VolumeError};
