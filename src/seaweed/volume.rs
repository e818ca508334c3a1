//! Volumes: a `.dat` + `.idx` (+ `.vif`) triple, and a directory of them, read the way
//! `weed volume` reads them (`storage/volume_read.go`, `server/volume_server_handlers_read.go`).
//!
//! A [`Volume`] keeps the `.dat` and `.idx` open, the `.dat` mapped read-only, and the needle map
//! in memory. Before every read it checks the `.idx` path (one `stat`): new rows appended by weed
//! are applied, and when the file was replaced (a vacuum renames `.cpd`/`.cpx` over `.dat`/`.idx`
//! and bumps the superblock's compaction revision) both files are reopened and the map rebuilt, so
//! no read uses offsets from another revision. Every read checks the needle header's id and Size
//! against the index, and after the read that the `.dat` path still names the file read from (one
//! `stat`; a commit renames the `.dat` first). Either disagreement (a read racing a compaction
//! commit) reloads the volume and reads again; if it persists the read returns the retryable
//! [`VolumeError::Stale`], never wrong bytes or bytes from replaced files.
//!
//! Needle bytes are read in place from the mapping, and the data comes back as a range of it
//! ([`Payload::Mapped`]), not a copy; only decompressed data is owned. Of a gzip needle only the
//! range asked for is kept: the stream is decompressed up to the range's end and the bytes before
//! it dropped, at most [`needle::MAX_DECOMPRESSED`] bytes per read ([`VolumeError::TooLarge`]
//! past it). A needle past the mapped length (weed appended since) makes the volume map the file
//! again; payloads of the old mapping stay valid, and so do those of a replaced `.dat` (the
//! mapping holds the old inode).
//!
//! Refusals follow weed: an unknown id is [`VolumeError::NotFound`], a deleted one
//! [`VolumeError::Deleted`], a wrong cookie [`VolumeError::CookieMismatch`], a needle past its TTL
//! [`VolumeError::Expired`]. Needles whose Size is at most 1 MiB are read whole and CRC-checked on
//! every read; larger ones only on full reads, as weed does. One difference: weed serves an empty
//! (0-byte) needle without comparing cookies; this reader compares them.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fid::FileId;
use super::index::{NeedleMap, NeedleValue, OffsetWidth};
use super::needle::{
    self, NEEDLE_HEADER_SIZE, Needle, NeedleError, NeedleHeader, NeedleMeta, PAGED_READ_LIMIT,
};
use super::superblock::{SUPER_BLOCK_SIZE, SuperBlock, SuperBlockError};
use super::vif::{VifError, VolumeInfo};
use crate::buffer::{FileMap, MappedSlice, Payload};

/// Why a read or an open failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No volume with this id in the directory.
    #[error("volume {0} not found")]
    VolumeNotFound(u32),
    /// The needle id is not in the volume.
    #[error("needle {0:#x} not found")]
    NotFound(u64),
    /// The needle exists but the cookie differs.
    #[error("needle {0:#x}: cookie mismatch")]
    CookieMismatch(u64),
    /// The needle was deleted.
    #[error("needle {0:#x} deleted")]
    Deleted(u64),
    /// The needle's TTL has passed.
    #[error("needle {0:#x} expired")]
    Expired(u64),
    /// The requested range is outside the data.
    #[error("range {offset}+{size} outside {len} bytes")]
    BadRange {
        /// Requested start.
        offset: u64,
        /// Requested length.
        size: u64,
        /// Length of the data.
        len: u64,
    },
    /// Decompressing the needle's gzip data for this read would pass `limit` bytes
    /// ([`needle::MAX_DECOMPRESSED`]).
    #[error("needle {needle:#x}: data decompresses to more than {limit} bytes")]
    TooLarge {
        /// The needle.
        needle: u64,
        /// The cap.
        limit: u64,
        /// The length the gzip trailer claims (above `limit`, unchecked).
        len: u64,
    },
    /// The volume changed under the read (compaction commit); retry.
    #[error("volume {0} changed during the read (compaction); retry")]
    Stale(u32),
    /// The volume's data lives in a remote tier and cannot be read locally.
    #[error("volume {0} is tiered to remote storage")]
    Remote(u32),
    /// The needle is a chunk manifest (flag `0x80`: a JSON list of the file's chunks, written
    /// by `weed upload -maxMB` or with `?cm=true`), which weed's HTTP GET answers with the
    /// chunks' bytes; its own bytes are not the file's, so it is not served here.
    #[error("needle {0:#x} is a chunk manifest (read it over HTTP)")]
    ChunkManifest(u64),
    /// Needle bytes that do not parse or fail their CRC.
    #[error("volume {volume}: {source}")]
    Needle {
        /// The volume.
        volume: u32,
        /// What was wrong.
        source: NeedleError,
    },
    /// A bad superblock.
    #[error("{path}: {source}")]
    SuperBlock {
        /// The `.dat` file.
        path: PathBuf,
        /// What was wrong.
        source: SuperBlockError,
    },
    /// A bad `.vif`.
    #[error("{path}: {source}")]
    Vif {
        /// The `.vif` file.
        path: PathBuf,
        /// What was wrong.
        source: VifError,
    },
    /// The `.idx` offset width could not be determined.
    #[error("{0}: cannot tell 4- from 5-byte offsets")]
    OffsetWidth(PathBuf),
    /// An I/O error on a volume file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl VolumeError {
    /// Whether weed answers this with 404 (not found, cookie mismatch, deleted, expired). A
    /// volume this reader does not have is not one: weed may hold it elsewhere (another disk,
    /// erasure-coded, a remote tier), and clients read it over HTTP (`INTERNAL`).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            VolumeError::NotFound(_)
                | VolumeError::CookieMismatch(_)
                | VolumeError::Deleted(_)
                | VolumeError::Expired(_)
        )
    }

    /// Whether retrying the same read may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, VolumeError::Stale(_))
    }
}

/// What to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// First byte of the data to return.
    pub offset: u64,
    /// How many bytes; `None` reads to the end. `offset + size` beyond the data is
    /// [`VolumeError::BadRange`].
    pub size: Option<u64>,
    /// Return the data as stored (gzip for compressed needles) instead of decompressed. Ranges
    /// then apply to the stored bytes.
    pub stored: bool,
    /// The time for TTL checks, in unix nanoseconds; `None` uses the clock.
    pub now_unix_ns: Option<u64>,
    /// The caller checks the CRC itself: a whole large needle (more than 1 MiB, the only ones
    /// weed checks on full reads alone) is returned unchecked, with
    /// [`ReadResult::crc_unchecked`] set. Small needles, decompressed ones and ranges of
    /// compressed ones are always checked here.
    pub crc_at_caller: bool,
}

impl ReadOptions {
    /// A range `[offset, offset + size)`.
    pub fn range(offset: u64, size: u64) -> Self {
        ReadOptions {
            offset,
            size: Some(size),
            ..Self::default()
        }
    }
}

/// A successful read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The requested bytes: a range of the `.dat` mapping, or owned bytes when decompressed.
    pub data: Payload,
    /// Length of the whole data in the form returned (decompressed unless `stored`/`compressed`).
    /// For a range of a gzip needle that ends before the data does, the length the gzip trailer
    /// claims (exact for single-member gzip under 4 GiB; see [`needle::gunzip_range`]).
    pub total_len: u64,
    /// Whether `data` is gzip'd stored bytes (only when [`ReadOptions::stored`] was asked and the
    /// needle is compressed).
    pub compressed: bool,
    /// The needle header.
    pub header: NeedleHeader,
    /// Name, mime, last-modified, TTL, pairs, CRC, append time.
    pub meta: NeedleMeta,
    /// Byte offset of the needle in the `.dat`; its stored data starts 20 bytes later.
    pub dat_offset: u64,
    /// `data` is the whole stored data, not checked against `meta.checksum` here (only with
    /// [`ReadOptions::crc_at_caller`]): the caller must check it.
    pub crc_unchecked: bool,
}

/// The open files and map of a volume at one compaction revision.
#[derive(Debug)]
struct State {
    dat: File,
    dat_ident: (u64, u64),
    /// The `.dat` mapped read-only; remapped (longer) when a needle lies past it.
    dat_map: Mutex<Arc<FileMap>>,
    idx: File,
    idx_ident: (u64, u64),
    superblock: SuperBlock,
    map: NeedleMap,
}

/// One volume: `<collection_>vid.dat`, `.idx` and `.vif` in a directory.
#[derive(Debug)]
pub struct Volume {
    id: u32,
    collection: String,
    paths: VolumePaths,
    width: OffsetWidth,
    state: RwLock<State>,
    /// Held while a read reloads the volume after finding its files replaced, so the reads
    /// that found it at the same time reload it once, not once each.
    reloading: Mutex<()>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn ident(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where a volume's files are: `<base>.dat`, `.vif` and `.cpd` next to each other, `.idx` and
/// `.cpx` under `idx_base` (the same as `base` unless weed runs with `-dir.idx`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumePaths {
    base: PathBuf,
    idx_base: PathBuf,
}

impl VolumePaths {
    /// The volume's file with this extension.
    fn file(&self, ext: &str) -> PathBuf {
        match ext {
            "idx" | "cpx" => with_ext(&self.idx_base, ext),
            _ => with_ext(&self.base, ext),
        }
    }
}

impl Volume {
    /// Opens the volume whose files are `<base>.dat`, `<base>.idx` and `<base>.vif` (e.g.
    /// `dir/7` or `dir/pics_7`).
    pub fn open(base: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        let base = base.into();
        Self::open_with_index(base.clone(), base)
    }

    /// Opens the volume whose `.dat` and `.vif` are at `<base>` and whose `.idx` is at
    /// `<idx_base>` (weed's `-dir.idx`: e.g. `/hdd/7` and `/ssd/7`).
    pub fn open_with_index(
        base: impl Into<PathBuf>,
        idx_base: impl Into<PathBuf>,
    ) -> Result<Self, VolumeError> {
        let paths = VolumePaths {
            base: base.into(),
            idx_base: idx_base.into(),
        };
        let base = &paths.base;
        let name = base
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (collection, id) = parse_volume_name(&name).ok_or_else(|| VolumeError::Io {
            path: base.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a volume file name"),
        })?;
        let vif_path = paths.file("vif");
        let info = match std::fs::read(&vif_path) {
            Ok(text) => VolumeInfo::parse(&text).map_err(|source| VolumeError::Vif {
                path: vif_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => VolumeInfo::default(),
            Err(e) => return Err(io_err(&vif_path)(e)),
        };
        let dat_path = paths.file("dat");
        if info.remote && !dat_path.exists() {
            return Err(VolumeError::Remote(id));
        }
        let width = match info.offset_width {
            Some(w) => w,
            None => detect_offset_width(&paths)?,
        };
        let state = load_state(&paths, width)?;
        Ok(Volume {
            id,
            collection: collection.to_string(),
            paths,
            width,
            state: RwLock::new(state),
            reloading: Mutex::new(()),
        })
    }

    /// The volume id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The collection ("" for the default collection).
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The `.idx` offset width.
    pub fn offset_width(&self) -> OffsetWidth {
        self.width
    }

    /// The superblock as last loaded.
    pub fn superblock(&self) -> SuperBlock {
        self.read_state().superblock
    }

    /// How many needles are live (as of the last refresh).
    pub fn live_count(&self) -> usize {
        self.read_state().map.live_count()
    }

    /// The live needles as of the last refresh: `(needle id, byte offset, header Size)`.
    pub fn live_needles(&self) -> Vec<(u64, u64, u32)> {
        self.read_state().map.live().collect()
    }

    /// The path of the `.dat` file.
    pub fn dat_path(&self) -> PathBuf {
        self.paths.file("dat")
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Catches up with weed: applies `.idx` rows appended since the last call, or reloads both
    /// files when the `.idx` was replaced or shrank (compaction, repair). Returns `true` when
    /// the volume was reloaded.
    pub fn refresh(&self) -> Result<bool, VolumeError> {
        let idx_path = self.paths.file("idx");
        let meta = std::fs::metadata(&idx_path).map_err(io_err(&idx_path))?;
        {
            let st = self.read_state();
            if ident(&meta) == st.idx_ident && meta.len() == st.map.consumed() {
                return Ok(false);
            }
        }
        let mut st = self.write_state();
        if ident(&meta) != st.idx_ident || meta.len() < st.map.consumed() {
            *st = load_state(&self.paths, self.width)?;
            return Ok(true);
        }
        follow_tail(&mut st, &idx_path)?;
        Ok(false)
    }

    /// Forces a reload of both files and the map.
    pub fn reload(&self) -> Result<(), VolumeError> {
        let fresh = load_state(&self.paths, self.width)?;
        *self.write_state() = fresh;
        Ok(())
    }

    /// Reads needle `needle_id` if `cookie` matches: the whole data or a range of it. The data
    /// is a range of the volume's `.dat` mapping ([`Payload::Mapped`], no copy) unless it had to
    /// be decompressed.
    pub fn read(
        &self,
        needle_id: u64,
        cookie: u32,
        opts: &ReadOptions,
    ) -> Result<ReadResult, VolumeError> {
        self.refresh()?;
        let mut reloaded = false;
        loop {
            let (r, read_from, files) = {
                let st = self.read_state();
                let files = (st.dat_ident, st.idx_ident);
                (
                    self.read_once(&st, needle_id, cookie, opts),
                    st.dat_ident,
                    files,
                )
            };
            // The answer must come from the files the volume's paths name once the read is
            // done. The index and the data disagreeing means the files were replaced under the
            // open ones; otherwise one `stat` of the .dat tells whether a compaction committed
            // (it renames the .dat first) during or just before the read.
            let replaced = if r.as_ref().is_err_and(is_layout_mismatch) {
                self.files_replaced()?
            } else {
                self.dat_replaced(read_from)?
            };
            if !replaced {
                return r;
            }
            if reloaded {
                return Err(VolumeError::Stale(self.id));
            }
            // Reload (waiting for a commit in progress to finish) and read once more.
            self.reload_unless_done(files)?;
            reloaded = true;
        }
    }

    /// Reloads unless another read did since the state with these `(.dat, .idx)` files was
    /// read (one reload at a time).
    fn reload_unless_done(&self, files: ((u64, u64), (u64, u64))) -> Result<(), VolumeError> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let now = {
            let st = self.read_state();
            (st.dat_ident, st.idx_ident)
        };
        if now == files { self.reload() } else { Ok(()) }
    }

    /// Whether the `.dat` or `.idx` path now names another file than the open one.
    fn files_replaced(&self) -> Result<bool, VolumeError> {
        let st = self.read_state();
        for (ext, open) in [("dat", st.dat_ident), ("idx", st.idx_ident)] {
            if self.path_replaced(ext, open)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the `.dat` path now names another file than `read_from`.
    fn dat_replaced(&self, read_from: (u64, u64)) -> Result<bool, VolumeError> {
        self.path_replaced("dat", read_from)
    }

    fn path_replaced(&self, ext: &str, open: (u64, u64)) -> Result<bool, VolumeError> {
        let p = self.paths.file(ext);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(ident(&m) != open),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// The mapping of `st`'s `.dat` that covers its first `end` bytes: the current one, or a new
    /// mapping of the whole file when the needle lies past it (weed appended since). Old mappings
    /// stay alive as long as a payload uses them.
    fn dat_map(&self, st: &State, end: u64) -> Result<Arc<FileMap>, VolumeError> {
        let mut map = st.dat_map.lock().unwrap_or_else(|e| e.into_inner());
        if end <= map.len() as u64 {
            return Ok(map.clone());
        }
        let dat_path = self.paths.file("dat");
        let len = st.dat.metadata().map_err(io_err(&dat_path))?.len();
        if end > len {
            return Err(VolumeError::Needle {
                volume: self.id,
                source: NeedleError::Truncated {
                    what: "needle in .dat",
                    need: end,
                    got: len,
                },
            });
        }
        // SAFETY: weed only appends to a .dat and rewrites its superblock in place, which is read
        // with pread, never through the mapping; it truncates only an append that failed, past
        // every needle the .idx points at (the only bytes read through the mapping).
        let fresh = unsafe { FileMap::map(&st.dat, len) }.map_err(io_err(&dat_path))?;
        *map = Arc::new(fresh);
        Ok(map.clone())
    }

    /// Why a read of the deleted `needle_id` fails: `Deleted`, or `CookieMismatch` when the
    /// needle it deleted (still in the `.dat` until a compaction) has another cookie, so a
    /// wrong cookie does not learn that the id existed (weed checks it before reading a
    /// deleted needle too).
    fn deleted(&self, st: &State, needle_id: u64, cookie: u32, was: Option<u64>) -> VolumeError {
        let mut h = [0u8; NEEDLE_HEADER_SIZE];
        let header = was.and_then(|at| match read_up_to(&st.dat, &mut h, at) {
            Ok(NEEDLE_HEADER_SIZE) => NeedleHeader::parse(&h).ok(),
            _ => None,
        });
        match header {
            Some(h) if h.id == needle_id && h.cookie != cookie => {
                VolumeError::CookieMismatch(needle_id)
            }
            _ => VolumeError::Deleted(needle_id),
        }
    }

    fn read_once(
        &self,
        st: &State,
        needle_id: u64,
        cookie: u32,
        opts: &ReadOptions,
    ) -> Result<ReadResult, VolumeError> {
        let (offset, size) = match st.map.get(needle_id) {
            None => return Err(VolumeError::NotFound(needle_id)),
            Some(NeedleValue::Deleted { was }) => {
                return Err(self.deleted(st, needle_id, cookie, was));
            }
            Some(NeedleValue::Live { offset, size }) => (offset, size),
        };
        let version = st.superblock.version;
        let nerr = |source| VolumeError::Needle {
            volume: self.id,
            source,
        };
        // Header, body and tail, read in place from the mapping.
        let body_end = offset + NEEDLE_HEADER_SIZE as u64 + u64::from(size);
        let map = self.dat_map(st, body_end + version.tail_size() as u64)?;
        let (needle_at, needle_end) = (offset as usize, body_end as usize + version.tail_size());
        // Every byte is faulted in (fault_in) before it is read through the mapping.
        let fault = |from: usize, to: usize| {
            fault_in(&st.dat, &map, from, to).map_err(|source| VolumeError::Io {
                path: self.paths.file("dat"),
                source,
            })
        };
        let whole = &map.as_slice()[needle_at..needle_end];

        let (header, meta, stored) = if size <= PAGED_READ_LIMIT {
            // Small needle: parse it whole and check the CRC, like weed's ReadNeedleBlob.
            fault(needle_at, needle_end)?;
            let n = Needle::parse(whole, version, Some((needle_id, size))).map_err(|e| {
                // Check the cookie before reporting a corrupt needle body.
                match NeedleHeader::parse(whole) {
                    Ok(h) if h.id == needle_id && h.size == size && h.cookie != cookie => {
                        VolumeError::CookieMismatch(needle_id)
                    }
                    _ => nerr(e),
                }
            })?;
            (n.header, n.meta, n.data)
        } else {
            // Large needle: header, metadata and tail; the CRC only on full reads (below). Of
            // the data only what the read touches is faulted in (below).
            let body_at = needle_at + NEEDLE_HEADER_SIZE;
            fault(needle_at, (body_at + 4).min(needle_end))?;
            let header = NeedleHeader::parse(whole).map_err(nerr)?;
            needle::check_header(&header, needle_id, size).map_err(nerr)?;
            if header.cookie != cookie {
                // Before looking at a body the caller may not read.
                return Err(VolumeError::CookieMismatch(needle_id));
            }
            let body = &whole[NEEDLE_HEADER_SIZE..NEEDLE_HEADER_SIZE + size as usize];
            let data = needle::data_range(body, version).map_err(nerr)?;
            fault(body_at + data.end, needle_end)?;
            let (mut meta, data) = needle::parse_body(body, version).map_err(nerr)?;
            let tail = &whole[NEEDLE_HEADER_SIZE + size as usize..];
            (meta.checksum, meta.append_at_ns) = needle::parse_tail(tail, version).map_err(nerr)?;
            (header, meta, data)
        };
        if header.cookie != cookie {
            return Err(VolumeError::CookieMismatch(needle_id));
        }
        check_expiry(&meta, needle_id, opts)?;
        if meta.is_chunk_manifest() {
            return Err(VolumeError::ChunkManifest(needle_id));
        }
        // Small needles were CRC-checked whole above; large ones are checked (in place) when
        // compressed (weed reads those whole) or read whole, as weed does.
        let checked = size <= PAGED_READ_LIMIT;
        let decompress = meta.is_compressed() && !opts.stored;
        // The stored bytes `from..to` faulted in (those of small needles already are).
        let stored_at = stored.as_ptr() as usize - map.as_ptr() as usize;
        let fault_stored = |from: usize, to: usize| {
            if checked {
                Ok(())
            } else {
                fault(stored_at + from, stored_at + to)
            }
        };
        if decompress && !checked {
            fault_stored(0, stored.len())?;
            needle::check_crc(stored, meta.checksum).map_err(nerr)?;
        }
        let (data, total_len, crc_unchecked) = if decompress && needle::is_gzip(stored) {
            // Only the range is decompressed (and what precedes it walked through), capped.
            let g = needle::gunzip_range(stored, opts.offset, opts.size, needle::MAX_DECOMPRESSED)
                .map_err(|e| match e {
                    NeedleError::TooLarge { limit, len } => VolumeError::TooLarge {
                        needle: needle_id,
                        limit,
                        len,
                    },
                    e => nerr(e),
                })?;
            // A range past the end: the stream was read to its end, so the length is exact.
            let (start, end) = range(opts, g.total_len)?;
            debug_assert_eq!(g.data.len() as u64, end - start);
            (Payload::Owned(g.data), g.total_len, false)
        } else {
            // As stored (also compressed data that is not gzip, as weed serves it).
            let total_len = stored.len() as u64;
            let (start, end) = range(opts, total_len)?;
            let (start, end) = (start as usize, end as usize);
            // Checked here unless above (small, or decompressed): a whole read (or left to the
            // caller), and any range of a compressed needle.
            let unchecked = !checked && !decompress;
            let whole = start == 0 && end == stored.len();
            let crc_unchecked = unchecked && whole && opts.crc_at_caller;
            if unchecked && !crc_unchecked && (whole || meta.is_compressed()) {
                fault_stored(0, stored.len())?;
                needle::check_crc(stored, meta.checksum).map_err(nerr)?;
            } else {
                // What UCX sends (or the client copies) from the mapping.
                fault_stored(start, end)?;
            }
            let data = MappedSlice::of(&map, &stored[start..end])
                .expect("needle bytes lie in the mapping");
            (Payload::Mapped(data), total_len, crc_unchecked)
        };
        Ok(ReadResult {
            data,
            total_len,
            compressed: opts.stored && meta.is_compressed(),
            header,
            meta,
            dat_offset: offset,
            crc_unchecked,
        })
    }
}

/// Errors that mean the index points at something else than the needle it names: a truncated
/// `.dat`, or a header with another id or Size.
fn is_layout_mismatch(e: &VolumeError) -> bool {
    matches!(
        e,
        VolumeError::Needle {
            source: NeedleError::IdMismatch { .. }
                | NeedleError::SizeMismatch { .. }
                | NeedleError::Truncated { .. },
            ..
        }
    )
}

fn check_expiry(meta: &NeedleMeta, id: u64, opts: &ReadOptions) -> Result<(), VolumeError> {
    if meta.is_expired_at(opts.now_unix_ns.unwrap_or_else(now_ns)) {
        return Err(VolumeError::Expired(id));
    }
    Ok(())
}

/// Resolves the requested range against `len` bytes of data.
fn range(opts: &ReadOptions, len: u64) -> Result<(u64, u64), VolumeError> {
    let size = opts.size.unwrap_or(len.saturating_sub(opts.offset));
    match opts.offset.checked_add(size) {
        Some(end) if opts.offset <= len && end <= len => Ok((opts.offset, end)),
        _ => Err(VolumeError::BadRange {
            offset: opts.offset,
            size,
            len,
        }),
    }
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Splits a volume file stem into collection and id: `7` → ("", 7), `pics_7` → ("pics", 7).
pub fn parse_volume_name(stem: &str) -> Option<(&str, u32)> {
    let (collection, id) = match stem.rfind('_') {
        Some(i) if i > 0 => (&stem[..i], &stem[i + 1..]),
        _ => ("", stem),
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((collection, id.parse().ok()?))
}

/// How long to wait for a compaction commit (the window between weed's two renames) to finish.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Opens the files of a volume and builds its map. A compaction commit renames `.cpd` to `.dat`
/// and then `.cpx` to `.idx`; between the two, a `.cpx` exists without a `.cpd`. Loading then
/// would pair the new `.dat` with the old `.idx`, so it waits for the commit to finish, and
/// returns [`VolumeError::Stale`] if it does not within [`COMMIT_WAIT`].
fn load_state(paths: &VolumePaths, width: OffsetWidth) -> Result<State, VolumeError> {
    let mid_commit = || paths.file("cpx").exists() && !paths.file("cpd").exists();
    let start = std::time::Instant::now();
    loop {
        if !mid_commit() {
            let st = load_state_once(paths, width)?;
            if !mid_commit() {
                return Ok(st);
            }
        }
        if start.elapsed() > COMMIT_WAIT {
            let id = paths
                .base
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_volume_name)
                .map_or(0, |(_, id)| id);
            return Err(VolumeError::Stale(id));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn load_state_once(paths: &VolumePaths, width: OffsetWidth) -> Result<State, VolumeError> {
    let idx_path = paths.file("idx");
    let dat_path = paths.file("dat");
    // Open the .idx first: a compaction commit renames the .dat before the .idx, so a new .idx
    // comes with a new .dat.
    let idx = File::open(&idx_path).map_err(io_err(&idx_path))?;
    let dat = File::open(&dat_path).map_err(io_err(&dat_path))?;
    let idx_meta = idx.metadata().map_err(io_err(&idx_path))?;
    let dat_meta = dat.metadata().map_err(io_err(&dat_path))?;
    warn_if_residency_hidden(&dat_path, &dat_meta);
    let mut sb = [0u8; SUPER_BLOCK_SIZE];
    let got = read_up_to(&dat, &mut sb, 0).map_err(io_err(&dat_path))?;
    let superblock = SuperBlock::parse(&sb[..got]).map_err(|source| VolumeError::SuperBlock {
        path: dat_path.clone(),
        source,
    })?;
    // SAFETY: see `Volume::dat_map`.
    let dat_map = unsafe { FileMap::map(&dat, dat_meta.len()) }.map_err(io_err(&dat_path))?;
    let mut st = State {
        dat,
        dat_ident: ident(&dat_meta),
        dat_map: Mutex::new(Arc::new(dat_map)),
        idx,
        idx_ident: ident(&idx_meta),
        superblock,
        map: NeedleMap::new(width),
    };
    follow_tail(&mut st, &idx_path)?;
    Ok(st)
}

/// `.idx` rows read at a time (a large index is not read into memory whole).
const IDX_ROWS_PER_READ: usize = 64 << 10;

/// Applies the `.idx` bytes past what the map consumed, up to the file's length now (a
/// half-written last row is left for later).
fn follow_tail(st: &mut State, idx_path: &Path) -> Result<(), VolumeError> {
    let len = st.idx.metadata().map_err(io_err(idx_path))?.len();
    let row = st.map.width().entry_size();
    let mut buf = Vec::new();
    loop {
        let from = st.map.consumed();
        let left = len.saturating_sub(from);
        if left < row as u64 {
            return Ok(());
        }
        buf.resize(left.min((IDX_ROWS_PER_READ * row) as u64) as usize, 0);
        let got = read_up_to(&st.idx, &mut buf, from).map_err(io_err(idx_path))?;
        if st.map.apply(&buf[..got]) == 0 {
            return Ok(()); // the file shrank meanwhile
        }
    }
}

/// Makes bytes `start..end` of the `.dat` safe to read through `map` (a mapping of `dat` from
/// its first byte): when some of their pages are not in memory, reads them with `pread` first,
/// which brings them into the page cache or returns the disk's error (`EIO`) or a short count
/// (a file truncated under the index). Read through the mapping instead, those pages would
/// fault, and a fault the kernel cannot satisfy raises `SIGBUS`, which ends the process. (Pages
/// evicted again between this and the read still fault; a disk error there still does.)
fn fault_in(dat: &File, map: &FileMap, start: usize, end: usize) -> io::Result<()> {
    if map.is_resident(start, end) {
        return Ok(());
    }
    let mut buf = vec![0u8; FAULT_IN_CHUNK.min(end.saturating_sub(start))];
    let mut at = start;
    while at < end {
        let n = (end - at).min(buf.len());
        if read_up_to(dat, &mut buf[..n], at as u64)? < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends before byte {end}, where the index says a needle ends"),
            ));
        }
        at += n;
    }
    Ok(())
}

/// Warns (once per process) when the kernel hides from this process which pages of `path` are
/// in memory: `mincore` tells it only to a process that owns the file, may write it, or has
/// `CAP_FOWNER` (Linux 5.0 on), and reports every page resident to others, so [`fault_in`]
/// cannot protect their reads from `SIGBUS`.
fn warn_if_residency_hidden(path: &Path, meta: &std::fs::Metadata) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if residency_visible(path, meta) || WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    log::warn!(
        "{}: this process neither owns nor may write it, so the kernel does not tell it which \
         pages are in memory (mincore): a disk read error under a needle will end it with \
         SIGBUS instead of answering INTERNAL; run it as the user that owns the volumes (weed's)",
        path.display()
    );
}

/// Whether `mincore` on a mapping of `path` tells the truth to this process: it owns the file,
/// may write it, or has `CAP_FOWNER`.
fn residency_visible(path: &Path, meta: &std::fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    if meta.uid() == unsafe { libc::geteuid() } || has_cap_fowner() {
        return true;
    }
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is a NUL-terminated path that lives across the call.
    unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS,
        ) == 0
    }
}

/// Whether this process's effective capabilities hold `CAP_FOWNER` (`/proc/self/status`).
fn has_cap_fowner() -> bool {
    const CAP_FOWNER: u32 = 3;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_FOWNER) != 0)
}

/// The bytes [`fault_in`] reads per `pread`.
const FAULT_IN_CHUNK: usize = 256 << 10;

/// Reads as much as is there (short at end of file).
fn read_up_to(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Without a `.vif`: picks the width whose rows point at needle headers with the same id.
fn detect_offset_width(paths: &VolumePaths) -> Result<OffsetWidth, VolumeError> {
    let idx_path = paths.file("idx");
    let dat_path = paths.file("dat");
    let idx = File::open(&idx_path).map_err(io_err(&idx_path))?;
    let idx_len = idx.metadata().map_err(io_err(&idx_path))?.len();
    let dat = File::open(&dat_path).map_err(io_err(&dat_path))?;
    let mut fits = Vec::new();
    for w in [OffsetWidth::Four, OffsetWidth::Five] {
        let row = w.entry_size() as u64;
        if idx_len % row != 0 {
            continue;
        }
        // The first and the last 8 rows (overlapping in a short index).
        let sampled = (idx_len / row).min(8) * row;
        let mut head = vec![0u8; sampled as usize];
        let mut tail = vec![0u8; sampled as usize];
        read_up_to(&idx, &mut head, 0).map_err(io_err(&idx_path))?;
        read_up_to(&idx, &mut tail, idx_len - sampled).map_err(io_err(&idx_path))?;
        let mut sample = head
            .chunks_exact(w.entry_size())
            .chain(tail.chunks_exact(w.entry_size()));
        let ok = sample.all(|row| {
            let Ok(e) = super::index::IndexEntry::parse(row, w) else {
                return false;
            };
            if e.is_deletion() && e.offset_units == 0 {
                return true;
            }
            let mut h = [0u8; NEEDLE_HEADER_SIZE];
            matches!(
                read_up_to(&dat, &mut h, e.byte_offset()),
                Ok(NEEDLE_HEADER_SIZE)
            ) && NeedleHeader::parse(&h).is_ok_and(|h| h.id == e.needle_id)
        });
        if ok {
            fits.push(w);
        }
    }
    match fits.as_slice() {
        // An empty index fits both: weed's default build uses 4 bytes.
        [w] => Ok(*w),
        [_, _] => Ok(OffsetWidth::Four),
        _ => Err(VolumeError::OffsetWidth(idx_path)),
    }
}

/// The volumes of one or more directories, as `weed volume -dir` keeps them (weed takes a
/// comma-separated list, one per disk). Volumes that appear or disappear are noticed on
/// [`VolumeDir::rescan`], which a read of an unknown volume also triggers when a directory
/// changed since the last scan (or a scan is [`RESCAN_EVERY`] old): so reads of volume ids this
/// server does not hold cost one `stat` per directory, not a scan each. `Send + Sync`.
#[derive(Debug)]
pub struct VolumeDir {
    dirs: Vec<PathBuf>,
    /// weed's `-dir.idx`: where `.idx` files are when not next to their `.dat`.
    idx_dir: Option<PathBuf>,
    volumes: RwLock<HashMap<u32, Arc<Volume>>>,
    last_scan: Mutex<Scan>,
    /// Held by a scan from its listing until its result is in place, so that two scans never
    /// apply their listings out of order.
    scanning: Mutex<()>,
}

/// The longest a read of an unknown volume id waits for a directory scan when no directory
/// looks changed (a change within the file system's timestamp granularity of the last scan
/// can leave a directory's modification time as it was).
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// A modification time this close to the scan that saw it may hide a later change with the
/// same timestamp (Linux stamps directories from a clock that ticks every few milliseconds).
const MTIME_GRAIN: Duration = Duration::from_millis(100);

/// What the last directory scan saw.
#[derive(Debug, Default)]
struct Scan {
    /// When it began (None: never).
    at: Option<Instant>,
    /// Each directory's modification time then (None where it could not be read).
    mtimes: Vec<Option<SystemTime>>,
    /// No modification time lay within `MTIME_GRAIN` before the scan (else a change with the
    /// same timestamp may follow unseen, and a miss scans again).
    settled: bool,
}

impl VolumeDir {
    /// Opens every volume in `dir` (a `.dat` with its `.idx`). Volumes that fail to open are
    /// skipped with a warning; a missing directory is an error.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        Self::open_all([dir.into()])
    }

    /// Opens every volume in each of `dirs` (weed's `-dir=/d1,/d2`). A volume id found in two
    /// directories is served from the first (with a warning). At least one directory is needed;
    /// a missing one is an error.
    pub fn open_all(dirs: impl IntoIterator<Item = PathBuf>) -> Result<Self, VolumeError> {
        Self::open_with_index(dirs, None)
    }

    /// As [`VolumeDir::open_all`], with the `.idx` files in `idx_dir` where they are not next
    /// to their `.dat` (weed's `-dir.idx`).
    pub fn open_with_index(
        dirs: impl IntoIterator<Item = PathBuf>,
        idx_dir: Option<PathBuf>,
    ) -> Result<Self, VolumeError> {
        let dirs: Vec<PathBuf> = dirs.into_iter().collect();
        if dirs.is_empty() {
            return Err(VolumeError::Io {
                path: PathBuf::new(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "no volume directory"),
            });
        }
        if let Some(idx_dir) = &idx_dir {
            std::fs::read_dir(idx_dir).map_err(io_err(idx_dir))?;
        }
        let d = VolumeDir {
            dirs,
            idx_dir,
            volumes: RwLock::new(HashMap::new()),
            last_scan: Mutex::new(Scan::default()),
            scanning: Mutex::new(()),
        };
        d.rescan()?;
        Ok(d)
    }

    /// The directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Each directory's modification time (the index directory's last), None where it cannot
    /// be read.
    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        let mtime = |d: &PathBuf| std::fs::metadata(d).and_then(|m| m.modified()).ok();
        self.dirs.iter().chain(&self.idx_dir).map(mtime).collect()
    }

    /// Where the volume whose `.dat` is `<base>.dat` has its files: its `.idx` next to it, else
    /// in the index directory; None without an `.idx`.
    fn paths_of(&self, base: PathBuf) -> Option<VolumePaths> {
        let beside = VolumePaths {
            idx_base: base.clone(),
            base,
        };
        if beside.file("idx").exists() {
            return Some(beside);
        }
        let idx_base = self.idx_dir.as_ref()?.join(beside.base.file_name()?);
        let apart = VolumePaths { idx_base, ..beside };
        apart.file("idx").exists().then_some(apart)
    }

    /// Re-reads the directories: opens new volumes, drops those whose files are gone, reloads
    /// those whose files were replaced. Volumes are opened and reloaded outside the lock reads
    /// take, which is held only to put the result in place.
    pub fn rescan(&self) -> Result<(), VolumeError> {
        let _one = self.scanning.lock().unwrap_or_else(|e| e.into_inner());
        let mtimes = self.mtimes();
        let now = SystemTime::now();
        // A time in the future (a skewed clock) says nothing either way: the timer decides.
        let settled = mtimes
            .iter()
            .flatten()
            .all(|t| *t + MTIME_GRAIN < now || *t > now);
        *self.last_scan.lock().unwrap_or_else(|e| e.into_inner()) = Scan {
            at: Some(Instant::now()),
            mtimes,
            settled,
        };
        self.scan()
    }

    /// Rescans if a directory changed since the last scan, or that scan is `RESCAN_EVERY` old;
    /// not while another thread starts one.
    fn rescan_if_changed(&self) -> Result<(), VolumeError> {
        let mtimes = self.mtimes();
        let due = match self.last_scan.try_lock() {
            Ok(last) => {
                last.at.is_none_or(|at| at.elapsed() >= RESCAN_EVERY)
                    || last.mtimes != mtimes
                    || !last.settled
            }
            Err(_) => false,
        };
        if due { self.rescan() } else { Ok(()) }
    }

    /// Lists the volumes of every directory and brings `volumes` in line with it.
    fn scan(&self) -> Result<(), VolumeError> {
        let mut found: HashMap<u32, VolumePaths> = HashMap::new();
        for dir in &self.dirs {
            for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
                let entry = entry.map_err(io_err(dir))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(stem) = name.strip_suffix(".dat") else {
                    continue;
                };
                let Some((_, id)) = parse_volume_name(stem) else {
                    continue;
                };
                let Some(paths) = self.paths_of(dir.join(stem)) else {
                    continue;
                };
                if let Some(first) = found.get(&id) {
                    log::warn!(
                        "volume {id} is in {} and in {}; serving the first",
                        first.base.display(),
                        paths.base.display()
                    );
                    continue;
                }
                found.insert(id, paths);
            }
        }
        let known: Vec<(u32, Arc<Volume>)> = self
            .volumes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, v)| (*id, Arc::clone(v)))
            .collect();
        let mut opened = Vec::new();
        for (id, paths) in &found {
            match known.iter().find(|(k, _)| k == id) {
                Some((_, v)) if v.paths == *paths => {
                    if let Err(e) = v.refresh() {
                        log::warn!("volume {id}: {e}");
                    }
                }
                _ => match Volume::open_with_index(&paths.base, &paths.idx_base) {
                    Ok(v) => opened.push((*id, Arc::new(v))),
                    Err(e) => log::warn!("skipping volume {}: {e}", paths.base.display()),
                },
            }
        }
        let mut vols = self.volumes.write().unwrap_or_else(|e| e.into_inner());
        vols.retain(|id, v| found.get(id) == Some(&v.paths));
        for (id, v) in opened {
            vols.insert(id, v);
        }
        Ok(())
    }

    /// The volume with this id, rescanning the directories first if it is not known and one
    /// of them changed (see [`VolumeDir`]).
    pub fn volume(&self, id: u32) -> Result<Arc<Volume>, VolumeError> {
        if let Some(v) = self.get(id) {
            return Ok(v);
        }
        self.rescan_if_changed()?;
        self.get(id).ok_or(VolumeError::VolumeNotFound(id))
    }

    fn get(&self, id: u32) -> Option<Arc<Volume>> {
        self.volumes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The ids of the open volumes, sorted.
    pub fn volume_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .volumes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Reads a file id: the whole data or a range, with weed's refusal rules.
    pub fn read(&self, fid: &FileId, opts: &ReadOptions) -> Result<ReadResult, VolumeError> {
        let v = self.volume(fid.volume_id)?;
        match v.read(fid.needle_id, fid.cookie, opts) {
            Err(VolumeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                // The volume's files went away (volume deleted or moved).
                self.rescan()?;
                Err(VolumeError::VolumeNotFound(fid.volume_id))
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seaweed::index::IndexEntry;
    use crate::seaweed::needle::{FLAG_IS_COMPRESSED, NeedleBuilder, NeedleVersion};
    use crate::seaweed::ttl::Ttl;
    use std::io::Write;

    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "swucx-vol-{tag}-{}-{}",
                std::process::id(),
                now_ns()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TmpDir(p)
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes volumes the way weed does: superblock, needles appended, one .idx row each.
    struct Writer {
        dat: File,
        idx: File,
        pos: u64,
        width: OffsetWidth,
        version: NeedleVersion,
    }

    impl Writer {
        fn create(base: &Path, version: NeedleVersion, width: OffsetWidth, rev: u16) -> Self {
            Self::create_as(base, ("dat", "idx"), version, width, rev)
        }

        fn create_as(
            base: &Path,
            (dat_ext, idx_ext): (&str, &str),
            version: NeedleVersion,
            width: OffsetWidth,
            rev: u16,
        ) -> Self {
            let mut dat = File::create(with_ext(base, dat_ext)).unwrap();
            let idx = File::create(with_ext(base, idx_ext)).unwrap();
            let sb = SuperBlock {
                version,
                replica_placement: 0,
                ttl: Ttl::NONE,
                compaction_revision: rev,
                extra_size: 0,
            };
            dat.write_all(&sb.to_bytes()).unwrap();
            let bytes = if width == OffsetWidth::Five { 5 } else { 4 };
            std::fs::write(
                with_ext(base, "vif"),
                format!(r#"{{"version":{},"bytesOffset":{bytes}}}"#, version as u8),
            )
            .unwrap();
            Writer {
                dat,
                idx,
                pos: 8,
                width,
                version,
            }
        }

        fn put(&mut self, b: &NeedleBuilder) -> u64 {
            let (bytes, size) = b.build(self.version);
            let at = self.pos;
            self.dat.write_all(&bytes).unwrap();
            self.pos += bytes.len() as u64;
            self.row(b.id, at / 8, size as i32);
            at
        }

        fn delete(&mut self, id: u64, cookie: u32) {
            let (bytes, _) = NeedleBuilder {
                id,
                cookie,
                ..Default::default()
            }
            .build(self.version);
            let at = self.pos;
            self.dat.write_all(&bytes).unwrap();
            self.pos += bytes.len() as u64;
            self.row(id, at / 8, -1);
        }

        fn row(&mut self, id: u64, units: u64, size: i32) {
            let e = IndexEntry {
                needle_id: id,
                offset_units: units,
                size,
            };
            self.idx.write_all(&e.to_bytes(self.width)).unwrap();
        }
    }

    fn needle(id: u64, cookie: u32, data: &[u8]) -> NeedleBuilder {
        NeedleBuilder {
            id,
            cookie,
            data: data.to_vec(),
            name: Some(b"f".to_vec()),
            last_modified: Some(1),
            append_at_ns: now_ns(),
            ..Default::default()
        }
    }

    fn gzip(data: &[u8], level: flate2::Compression) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A needle storing `gz` with the compressed flag, as weed stores gzip'd uploads.
    fn compressed(id: u64, cookie: u32, gz: &[u8]) -> NeedleBuilder {
        NeedleBuilder {
            flags: FLAG_IS_COMPRESSED,
            ..needle(id, cookie, gz)
        }
    }

    #[test]
    fn reads_refuses_and_follows_appends() {
        let t = TmpDir::new("basic");
        let base = t.0.join("7");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        w.put(&needle(1, 0xaaaa, b"one"));
        w.put(&needle(2, 0xbbbb, b"two"));
        w.put(&needle(3, 0xcccc, b""));
        w.delete(2, 0xbbbb);
        let dir = VolumeDir::open(&t.0).unwrap();
        assert_eq!(dir.volume_ids(), vec![7]);
        let r = dir
            .read(&FileId::new(7, 1, 0xaaaa), &ReadOptions::default())
            .unwrap();
        assert_eq!(r.data, b"one");
        assert_eq!(r.meta.name, b"f");
        let rd = |id, c, o: &ReadOptions| dir.read(&FileId::new(7, id, c), o);
        let d = ReadOptions::default();
        assert!(matches!(
            rd(1, 0xaaab, &d),
            Err(VolumeError::CookieMismatch(1))
        ));
        assert!(matches!(rd(2, 0xbbbb, &d), Err(VolumeError::Deleted(2))));
        // A wrong cookie does not learn that the id existed.
        assert!(matches!(
            rd(2, 0xbbba, &d),
            Err(VolumeError::CookieMismatch(2))
        ));
        assert!(matches!(rd(9, 0, &d), Err(VolumeError::NotFound(9))));
        assert!(rd(3, 0xcccc, &d).unwrap().data.is_empty());
        assert!(matches!(
            rd(3, 0xccc0, &d),
            Err(VolumeError::CookieMismatch(3))
        ));
        assert!(matches!(
            dir.read(&FileId::new(8, 1, 0), &d),
            Err(VolumeError::VolumeNotFound(8))
        ));
        // Ranges.
        assert_eq!(
            rd(1, 0xaaaa, &ReadOptions::range(1, 2)).unwrap().data,
            b"ne"
        );
        assert_eq!(rd(1, 0xaaaa, &ReadOptions::range(3, 0)).unwrap().data, b"");
        let tail = ReadOptions {
            offset: 1,
            ..ReadOptions::default()
        };
        assert_eq!(rd(1, 0xaaaa, &tail).unwrap().data, b"ne");
        assert!(matches!(
            rd(1, 0xaaaa, &ReadOptions::range(2, 2)),
            Err(VolumeError::BadRange { len: 3, .. })
        ));
        assert!(matches!(
            rd(1, 0xaaaa, &ReadOptions::range(u64::MAX, 2)),
            Err(VolumeError::BadRange { .. })
        ));
        // Appends while open, including an overwrite and a re-added deleted id.
        w.put(&needle(4, 0xdddd, b"four"));
        w.put(&needle(1, 0xaaaa, b"one v2"));
        w.put(&needle(2, 0xbbbb, b"two again"));
        assert_eq!(rd(4, 0xdddd, &d).unwrap().data, b"four");
        assert_eq!(rd(1, 0xaaaa, &d).unwrap().data, b"one v2");
        assert_eq!(rd(2, 0xbbbb, &d).unwrap().data, b"two again");
        // A half-written .idx row is left for later.
        let e = IndexEntry {
            needle_id: 5,
            offset_units: w.pos / 8,
            size: 0,
        }
        .to_bytes(OffsetWidth::Five);
        w.idx.write_all(&e[..7]).unwrap();
        assert!(matches!(rd(5, 0, &d), Err(VolumeError::NotFound(5))));
        w.put(&needle(5, 0xeeee, b"")); // weed would not do this; just finishes garbage
        // New volumes appear; removed ones go away.
        let mut w9 = Writer::create(&t.0.join("pics_9"), NeedleVersion::V2, OffsetWidth::Four, 0);
        w9.put(&needle(1, 1, b"nine"));
        let r = dir.read(&FileId::new(9, 1, 1), &d).unwrap();
        assert_eq!(r.data, b"nine");
        assert_eq!(dir.volume(9).unwrap().collection(), "pics");
        for ext in ["dat", "idx", "vif"] {
            std::fs::remove_file(with_ext(&t.0.join("pics_9"), ext)).unwrap();
        }
        assert!(matches!(
            dir.read(&FileId::new(9, 1, 1), &d),
            Err(VolumeError::VolumeNotFound(9))
        ));
        assert_eq!(dir.volume_ids(), vec![7]);
    }

    #[test]
    fn compaction_reloads_and_never_serves_stale_offsets() {
        let t = TmpDir::new("compact");
        let base = t.0.join("3");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Four, 0);
        w.put(&needle(1, 1, &[1; 100]));
        w.put(&needle(2, 2, &[2; 200]));
        w.put(&needle(3, 3, &[3; 300]));
        w.delete(1, 1);
        let v = Volume::open(&base).unwrap();
        assert_eq!(v.offset_width(), OffsetWidth::Four);
        let d = ReadOptions::default();
        assert_eq!(v.read(3, 3, &d).unwrap().data, vec![3; 300]);
        // Compact as weed does: write .cpd/.cpx with the live needles, rename over.
        let five = OffsetWidth::Four;
        let mut c = Writer::create_as(&base, ("cpd", "cpx"), NeedleVersion::V3, five, 1);
        c.put(&needle(2, 2, &[2; 200]));
        c.put(&needle(3, 3, &[3; 300]));
        drop(c);
        std::fs::rename(with_ext(&base, "cpd"), with_ext(&base, "dat")).unwrap();
        // Between the two renames the .dat the volume has open is no longer the volume's: a
        // read does not answer from it but waits for the commit, and reports a retryable error
        // when it does not finish.
        let e = v.read(3, 3, &d).unwrap_err();
        assert!(matches!(e, VolumeError::Stale(3)), "{e}");
        assert_eq!(v.superblock().compaction_revision, 0);
        // A volume opened now (new .dat, old .idx) would pair the wrong files: it waits for the
        // commit and reports a retryable error instead.
        let e = Volume::open(&base).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        std::fs::rename(with_ext(&base, "cpx"), with_ext(&base, "idx")).unwrap();
        assert_eq!(v.read(3, 3, &d).unwrap().data, vec![3; 300]);
        assert_eq!(v.superblock().compaction_revision, 1);
        assert!(matches!(v.read(1, 1, &d), Err(VolumeError::NotFound(1))));
        assert_eq!(v.live_count(), 2);
        assert_eq!(
            Volume::open(&base).unwrap().read(2, 2, &d).unwrap().data,
            vec![2; 200]
        );
    }

    /// Pages of the `.dat` that the file no longer has (truncated under the index; a disk read
    /// error under the mapping is alike) give an I/O error, not SIGBUS: the bytes are read with
    /// `pread` when not resident before the mapping is touched.
    #[test]
    fn a_needle_the_dat_lost_is_an_io_error_not_sigbus() {
        let t = TmpDir::new("lost");
        let base = t.0.join("8");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        let first: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        w.put(&needle(1, 1, &first));
        let at = w.put(&needle(2, 2, &vec![9; 300_000]));
        let v = Volume::open(&base).unwrap();
        let d = ReadOptions::default();
        assert_eq!(v.read(2, 2, &d).unwrap().data.len(), 300_000);
        let map = v.read(1, 1, &d).unwrap();
        // The second needle's pages leave the file (and the page cache); the mapping stays.
        let dat = std::fs::OpenOptions::new()
            .write(true)
            .open(with_ext(&base, "dat"))
            .unwrap();
        dat.set_len(at + 4096 * 2).unwrap();
        for _ in 0..2 {
            match v.read(2, 2, &d) {
                Err(e @ VolumeError::Io { .. }) => {
                    assert_eq!(
                        crate::seaweed::protocol::Status::from(&e),
                        crate::seaweed::protocol::Status::Internal,
                        "{e}"
                    )
                }
                other => panic!("a lost needle read {:?}", other.map(|r| r.data.len())),
            }
        }
        // The needle before it still reads, from the same mapping.
        assert_eq!(v.read(1, 1, &d).unwrap().data, first);
        drop(map);
    }

    /// A range of a large needle faults in what the read touches (header, metadata, tail, the
    /// range), not the whole needle: a cold 8 MiB needle read 4 KiB in its middle stays on
    /// disk elsewhere. (`pread` reads ahead only; a fault on the mapping would read around,
    /// up to the disk's read_ahead_kb, before the range too.)
    #[test]
    fn a_range_of_a_large_cold_needle_faults_in_only_the_range() {
        let t = TmpDir::new("cold");
        let base = t.0.join("9");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i ^ (i >> 11)) as u8).collect();
        let data_at = w.put(&needle(1, 1, &big)) as usize + NEEDLE_HEADER_SIZE + 4;
        let dat = File::open(with_ext(&base, "dat")).unwrap();
        dat.sync_all().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dat);
        // SAFETY: advice on an open fd; no memory is involved.
        let rc = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        // SAFETY: the test's own file; nothing truncates or rewrites it while mapped.
        let map = unsafe { FileMap::map(&dat, dat.metadata().unwrap().len()) }.unwrap();
        let page_at = |at: usize| map.is_resident(data_at + at, data_at + at + 4096);
        let far = 2 << 20;
        assert!(
            !page_at(far),
            "the page cache kept the file: nothing to measure"
        );
        let v = Volume::open(&base).unwrap();
        let r = v.read(1, 1, &ReadOptions::range(4 << 20, 4096)).unwrap();
        assert!(r.data == big[4 << 20..(4 << 20) + 4096]);
        assert!(page_at(4 << 20), "the range was not faulted in");
        assert!(!page_at(far), "bytes the read does not touch were read");
    }

    #[test]
    fn payloads_are_ranges_of_the_dat_mapping_not_copies() {
        let t = TmpDir::new("zerocopy");
        let base = t.0.join("6");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        let small: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
        let at_small = w.put(&needle(1, 1, &small));
        let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i ^ (i >> 9)) as u8).collect();
        let at_big = w.put(&needle(2, 2, &big));
        let text = b"compressible needle text\n".repeat(2000);
        let gz = gzip(&text, flate2::Compression::default());
        w.put(&compressed(3, 3, &gz));
        let v = Volume::open(&base).unwrap();
        let d = ReadOptions::default();
        let dat = std::fs::read(with_ext(&base, "dat")).unwrap();
        // The bytes a payload hands to UCX (Buf::as_ptr) lie inside the volume's .dat mapping,
        // at the needle's data offset, and equal what weed wrote.
        let mapped = |r: &ReadResult| -> (Arc<FileMap>, usize) {
            let Payload::Mapped(m) = &r.data else {
                panic!("expected a mapped payload, got an owned one");
            };
            let map = m.map().clone();
            let ptr = crate::Buf::as_ptr(&r.data);
            let len = crate::Buf::len(&r.data);
            assert!(
                ptr as usize >= map.as_ptr() as usize
                    && ptr as usize + len <= map.as_ptr() as usize + map.len(),
                "payload not inside the mapping"
            );
            assert_eq!(ptr as usize - map.as_ptr() as usize, m.offset());
            (map, m.offset())
        };
        let r = v.read(1, 1, &d).unwrap();
        let (map, off) = mapped(&r);
        assert_eq!(off as u64, at_small + 20);
        assert_eq!(map.len(), dat.len());
        assert!(r.data == small);
        assert_eq!(map.as_slice(), &dat[..]);
        let r = v.read(1, 1, &ReadOptions::range(100, 50)).unwrap();
        assert_eq!(mapped(&r).1 as u64, at_small + 20 + 100);
        assert!(r.data == small[100..150]);
        // Large needle, whole (CRC checked in place) and a range.
        let r = v.read(2, 2, &d).unwrap();
        assert_eq!(mapped(&r).1 as u64, at_big + 20);
        assert!(r.data == big);
        let r = v.read(2, 2, &ReadOptions::range(1 << 20, 4096)).unwrap();
        assert_eq!(mapped(&r).1 as u64, at_big + 20 + (1 << 20));
        assert!(r.data == big[1 << 20..(1 << 20) + 4096]);
        // Compressed: the stored bytes are mapped; decompressed ones are owned.
        let r = v.read(3, 3, &ReadOptions { stored: true, ..d }).unwrap();
        mapped(&r);
        assert!(r.data == gz && r.compressed);
        let r = v.read(3, 3, &d).unwrap();
        assert!(matches!(r.data, Payload::Owned(_)) && r.data == text);

        // weed appends: a needle past the mapped length is read from a new, longer mapping; a
        // payload of the old one stays valid.
        let held = v.read(1, 1, &d).unwrap();
        let grown: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + 1) as u8).collect();
        let at_grown = w.put(&needle(4, 4, &grown));
        let r = v.read(4, 4, &d).unwrap();
        let (new_map, off) = mapped(&r);
        assert_eq!(off as u64, at_grown + 20);
        assert!(new_map.len() > map.len() && !Arc::ptr_eq(&new_map, &map));
        assert!(r.data == grown);
        assert!(held.data == small);
        // Reads within the new length reuse the mapping.
        assert!(Arc::ptr_eq(&mapped(&v.read(1, 1, &d).unwrap()).0, &new_map));

        // Compaction: weed renames new files over the old ones. Payloads taken before keep the
        // old inode's bytes; reads after it come from a mapping of the new .dat.
        drop(w);
        let mut c = Writer::create_as(
            &base,
            ("cpd", "cpx"),
            NeedleVersion::V3,
            OffsetWidth::Five,
            1,
        );
        let at_new = c.put(&needle(4, 4, &grown));
        c.put(&needle(1, 1, &small));
        drop(c);
        std::fs::rename(with_ext(&base, "cpd"), with_ext(&base, "dat")).unwrap();
        std::fs::rename(with_ext(&base, "cpx"), with_ext(&base, "idx")).unwrap();
        let r = v.read(4, 4, &d).unwrap();
        let (compacted, off) = mapped(&r);
        assert_eq!(off as u64, at_new + 20);
        assert!(!Arc::ptr_eq(&compacted, &new_map));
        assert!(r.data == grown);
        assert_eq!(v.superblock().compaction_revision, 1);
        assert!(held.data == small);
        assert!(matches!(v.read(2, 2, &d), Err(VolumeError::NotFound(2))));
    }

    #[test]
    fn replaced_files_are_reloaded() {
        // The .dat replaced under an open volume while its .idx still matches the old layout
        // (no .cpx to tell): the header check catches it and the volume reloads.
        let t = TmpDir::new("replace");
        let base = t.0.join("4");
        let mut old = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Four, 0);
        old.put(&needle(1, 1, &[1; 64]));
        old.put(&needle(2, 2, &[2; 64]));
        drop(old);
        let v = Volume::open(&base).unwrap();
        let d = ReadOptions::default();
        assert_eq!(v.read(2, 2, &d).unwrap().data, vec![2; 64]);
        let mut c = Writer::create_as(
            &base,
            ("new.dat", "new.idx"),
            NeedleVersion::V3,
            OffsetWidth::Four,
            1,
        );
        c.put(&needle(2, 2, &[2; 64]));
        drop(c);
        std::fs::rename(with_ext(&base, "new.dat"), with_ext(&base, "dat")).unwrap();
        std::fs::rename(with_ext(&base, "new.idx"), with_ext(&base, "idx")).unwrap();
        // Force the stale map to be used once: reading goes through refresh, which reloads.
        assert_eq!(v.read(2, 2, &d).unwrap().data, vec![2; 64]);
        assert!(matches!(v.read(1, 1, &d), Err(VolumeError::NotFound(1))));
    }

    #[test]
    fn gzip_ranges_decompress_only_the_range() {
        let t = TmpDir::new("gzip-range");
        let base = t.0.join("4");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        // A gzip bomb: 64 KiB stored, 64 MiB decompressed.
        let bomb_len = 64u64 << 20;
        let bomb = gzip(&vec![0; bomb_len as usize], flate2::Compression::best());
        w.put(&compressed(1, 1, &bomb));
        let text: Vec<u8> = (0..300_000u32)
            .map(|i| b"seaweed needle "[(i % 15) as usize] ^ (i / 4096) as u8)
            .collect();
        w.put(&compressed(
            2,
            2,
            &gzip(&text, flate2::Compression::default()),
        ));
        let v = Volume::open(&base).unwrap();
        let owned = |r: &ReadResult| match &r.data {
            Payload::Owned(b) => b.capacity(),
            Payload::Mapped(_) => panic!("expected decompressed (owned) bytes"),
        };
        // 1 byte at the start and 3 in the middle of the bomb: nothing else is kept (the whole
        // decompressed data was 64 MiB of buffer), and the length comes from the gzip trailer.
        for (offset, size) in [(0, 1), (bomb_len / 2, 3)] {
            let r = v.read(1, 1, &ReadOptions::range(offset, size)).unwrap();
            assert_eq!(r.data, vec![0; size as usize]);
            assert!(owned(&r) < 4096, "kept {} bytes of buffer", owned(&r));
            assert_eq!(r.total_len, bomb_len);
        }
        // Ranges of a normal needle: inside, to the end, ending at the end, empty at the end.
        let len = text.len() as u64;
        for (offset, size) in [(123_457, 1000), (0, 1), (len - 10, 10), (len, 0)] {
            let r = v.read(2, 2, &ReadOptions::range(offset, size)).unwrap();
            assert_eq!(r.data, &text[offset as usize..(offset + size) as usize]);
            assert_eq!(r.total_len, len);
            assert!(owned(&r) <= size as usize);
        }
        let tail = ReadOptions {
            offset: 200_000,
            ..ReadOptions::default()
        };
        assert_eq!(v.read(2, 2, &tail).unwrap().data, &text[200_000..]);
        assert_eq!(v.read(2, 2, &ReadOptions::default()).unwrap().data, text);
        // Past the end: BAD_RANGE with the exact decompressed length.
        for (offset, size) in [(len - 10, 11), (len + 1, 0), (u64::MAX, 2)] {
            match v.read(2, 2, &ReadOptions::range(offset, size)) {
                Err(VolumeError::BadRange {
                    offset: o,
                    size: s,
                    len: l,
                }) => {
                    assert_eq!((o, s, l), (offset, size, len));
                }
                other => panic!("range {offset}+{size}: {other:?}"),
            }
        }
        let past = ReadOptions {
            offset: len + 1,
            ..ReadOptions::default()
        };
        assert!(matches!(
            v.read(2, 2, &past),
            Err(VolumeError::BadRange { len: l, .. }) if l == len
        ));
    }

    #[test]
    fn gzip_needle_past_the_decompression_cap_is_too_large() {
        let t = TmpDir::new("gzip-cap");
        let base = t.0.join("4");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        // 1 MiB more than the cap, as gzip members of 1 MiB each (about 1 KiB apiece).
        let member = gzip(&[7; 1 << 20], flate2::Compression::best());
        let members = (needle::MAX_DECOMPRESSED >> 20) as usize + 1;
        w.put(&compressed(1, 1, &member.repeat(members)));
        let v = Volume::open(&base).unwrap();
        // Inside the cap: fine.
        let r = v.read(1, 1, &ReadOptions::range(5 << 20, 2)).unwrap();
        assert_eq!(r.data, [7, 7]);
        // A range past the cap: walking to it would pass the cap.
        let e = v
            .read(1, 1, &ReadOptions::range(needle::MAX_DECOMPRESSED, 1))
            .unwrap_err();
        assert!(
            matches!(e, VolumeError::TooLarge { needle: 1, limit, len }
                if limit == needle::MAX_DECOMPRESSED && len > limit),
            "{e:?}"
        );
        assert_eq!(
            crate::seaweed::protocol::Status::from(&e),
            crate::seaweed::protocol::Status::TooLarge
        );
    }

    #[test]
    fn large_compressed_expired_and_corrupt_needles() {
        let t = TmpDir::new("large");
        let base = t.0.join("5");
        let mut w = Writer::create(&base, NeedleVersion::V3, OffsetWidth::Five, 0);
        let big: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        w.put(&needle(1, 1, &big));
        let text = b"hello compressible text\n".repeat(50_000);
        let gz = gzip(&text, flate2::Compression::default());
        w.put(&compressed(2, 2, &gz));
        let mut ttl = needle(3, 3, b"short lived");
        ttl.ttl = Some(Ttl::from_bytes([1, 1]));
        ttl.append_at_ns = 1_000 * 60_000_000_000;
        w.put(&ttl);
        // A compressed needle above the paged-read limit (random bytes do not compress).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..3 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let big_gz = gzip(&noise, flate2::Compression::fast());
        assert!(big_gz.len() > PAGED_READ_LIMIT as usize);
        w.put(&compressed(4, 4, &big_gz));
        let corrupt_at = w.put(&needle(5, 5, &[5; 2 << 20]));
        let small_corrupt_at = w.put(&needle(6, 6, &[6; 1000]));
        let gz_corrupt_at = w.put(&compressed(7, 7, &big_gz));
        drop(w);
        // Corrupt one data byte of needles 5, 6 and 7.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(with_ext(&base, "dat"))
            .unwrap();
        f.write_all_at(&[0xff], corrupt_at + 20 + 1000).unwrap();
        f.write_all_at(&[0xff], small_corrupt_at + 20 + 10).unwrap();
        f.write_all_at(&[!big_gz[2000]], gz_corrupt_at + 20 + 2000)
            .unwrap();

        let v = Volume::open(&base).unwrap();
        let d = ReadOptions::default();
        assert_eq!(v.read(1, 1, &d).unwrap().data, big);
        assert_eq!(
            v.read(1, 1, &ReadOptions::range(1 << 20, 4096))
                .unwrap()
                .data,
            &big[1 << 20..(1 << 20) + 4096]
        );
        assert!(matches!(
            v.read(1, 2, &d),
            Err(VolumeError::CookieMismatch(1))
        ));
        let r = v.read(2, 2, &d).unwrap();
        assert_eq!(r.data, text);
        assert!(!r.compressed);
        let r = v.read(2, 2, &ReadOptions { stored: true, ..d }).unwrap();
        assert_eq!(r.data, gz);
        assert!(r.compressed);
        assert_eq!(
            v.read(2, 2, &ReadOptions::range(24, 5)).unwrap().data,
            b"hello"
        );
        let r = v.read(4, 4, &ReadOptions::range(5, 1000)).unwrap();
        assert_eq!(r.data, &noise[5..1005]);
        assert_eq!(r.total_len, noise.len() as u64);
        let r = v.read(4, 4, &ReadOptions { stored: true, ..d }).unwrap();
        assert_eq!(r.data, big_gz);
        assert!(matches!(v.read(3, 3, &d), Err(VolumeError::Expired(3))));
        let before = ReadOptions {
            now_unix_ns: Some(1_000 * 60_000_000_000 + 1),
            ..d
        };
        assert_eq!(v.read(3, 3, &before).unwrap().data, b"short lived");
        // Large needle: CRC checked on full reads only (like weed); ranges elsewhere still work.
        assert!(matches!(
            v.read(5, 5, &d),
            Err(VolumeError::Needle {
                source: NeedleError::Crc { .. },
                ..
            })
        ));
        assert_eq!(
            v.read(5, 5, &ReadOptions::range(0, 100)).unwrap().data,
            vec![5; 100]
        );
        // ... unless the caller checks it: then the whole data comes back, marked unchecked.
        let at_caller = ReadOptions {
            crc_at_caller: true,
            ..d
        };
        let r = v.read(5, 5, &at_caller).unwrap();
        assert!(r.crc_unchecked);
        assert!(needle::check_crc(&r.data, r.meta.checksum).is_err());
        assert!(
            !v.read(4, 4, &at_caller).unwrap().crc_unchecked,
            "decompressed: checked here"
        );
        // Small needle: always checked.
        assert!(matches!(
            v.read(6, 6, &ReadOptions::range(0, 1)),
            Err(VolumeError::Needle {
                source: NeedleError::Crc { .. },
                ..
            })
        ));
        // Large compressed needle: checked on every read, as weed reads it whole, also a range
        // of its stored (gzip) bytes; a whole read the caller checks is left to it.
        let stored_range = ReadOptions {
            stored: true,
            ..ReadOptions::range(10, 100)
        };
        assert_eq!(v.read(4, 4, &stored_range).unwrap().data, &big_gz[10..110]);
        for opts in [stored_range, ReadOptions::range(10, 100)] {
            assert!(
                matches!(
                    v.read(7, 7, &opts),
                    Err(VolumeError::Needle {
                        source: NeedleError::Crc { .. },
                        ..
                    })
                ),
                "{opts:?}"
            );
        }
        let whole_at_caller = ReadOptions {
            stored: true,
            ..at_caller
        };
        assert!(v.read(7, 7, &whole_at_caller).unwrap().crc_unchecked);
    }

    #[test]
    fn malformed_volume_files_are_errors() {
        let t = TmpDir::new("bad");
        let base = t.0.join("1");
        // Truncated superblock.
        std::fs::write(with_ext(&base, "dat"), [3, 0, 0]).unwrap();
        std::fs::write(with_ext(&base, "idx"), []).unwrap();
        assert!(matches!(
            Volume::open(&base),
            Err(VolumeError::SuperBlock { .. })
        ));
        std::fs::write(with_ext(&base, "dat"), [9, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(matches!(
            Volume::open(&base),
            Err(VolumeError::SuperBlock { .. })
        ));
        // Bad .vif.
        std::fs::write(with_ext(&base, "dat"), [3, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        std::fs::write(with_ext(&base, "vif"), b"{nope").unwrap();
        assert!(matches!(Volume::open(&base), Err(VolumeError::Vif { .. })));
        std::fs::remove_file(with_ext(&base, "vif")).unwrap();
        // Index rows pointing past the end of the .dat, or at garbage.
        let rows: Vec<u8> = [
            IndexEntry {
                needle_id: 1,
                offset_units: 1000,
                size: 10,
            },
            IndexEntry {
                needle_id: 2,
                offset_units: 1,
                size: 2_000_000,
            },
        ]
        .iter()
        .flat_map(|e| e.to_bytes(OffsetWidth::Four))
        .collect();
        std::fs::write(with_ext(&base, "idx"), &rows).unwrap();
        // Without a .vif the width cannot be confirmed from these rows.
        assert!(matches!(
            Volume::open(&base),
            Err(VolumeError::OffsetWidth(_))
        ));
        std::fs::write(with_ext(&base, "vif"), br#"{"bytesOffset":4}"#).unwrap();
        let mut dat = vec![3, 0, 0, 0, 0, 0, 0, 0];
        dat.extend(
            NeedleHeader {
                cookie: 0,
                id: 2,
                size: 2_000_000,
            }
            .to_bytes(),
        );
        dat.extend(100u32.to_be_bytes()); // DataSize 100 but the file ends here
        std::fs::write(with_ext(&base, "dat"), &dat).unwrap();
        let v = Volume::open(&base).unwrap();
        let d = ReadOptions::default();
        assert!(matches!(v.read(1, 0, &d), Err(VolumeError::Needle { .. })));
        assert!(matches!(v.read(2, 0, &d), Err(VolumeError::Needle { .. })));
        // Random garbage .dat and .idx never panic.
        let mut seed = 77u64;
        for round in 0..200 {
            let mut rnd = |n: usize| -> Vec<u8> {
                (0..n)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) as u8
                    })
                    .collect()
            };
            let mut dat = vec![3, 0, 0, 0, 0, 0, 0, 0];
            dat.extend(rnd(round * 7 % 400));
            let mut idx = Vec::new();
            for k in 0..(round % 6) {
                let mut e = IndexEntry::parse(&rnd(17), OffsetWidth::Five).unwrap();
                e.needle_id = k as u64;
                e.offset_units %= 60;
                idx.extend(e.to_bytes(OffsetWidth::Five));
            }
            std::fs::write(with_ext(&base, "dat"), &dat).unwrap();
            std::fs::write(with_ext(&base, "idx"), &idx).unwrap();
            std::fs::write(with_ext(&base, "vif"), br#"{"bytesOffset":5}"#).unwrap();
            if let Ok(v) = Volume::open(&base) {
                for k in 0..6 {
                    let _ = v.read(k, 0, &d);
                    let _ = v.read(k, 0, &ReadOptions::range(3, 5));
                }
            }
        }
    }

    #[test]
    fn volume_names() {
        assert_eq!(parse_volume_name("7"), Some(("", 7)));
        assert_eq!(parse_volume_name("pics_7"), Some(("pics", 7)));
        assert_eq!(parse_volume_name("a_b_12"), Some(("a_b", 12)));
        assert_eq!(parse_volume_name("_7"), None);
        assert_eq!(parse_volume_name("pics"), None);
        assert_eq!(parse_volume_name("7x"), None);
        assert_eq!(parse_volume_name("99999999999"), None);
    }

    #[test]
    fn volumes_of_several_directories() {
        let (a, b) = (TmpDir::new("dir-a"), TmpDir::new("dir-b"));
        let mut w1 = Writer::create(&a.0.join("1"), NeedleVersion::V3, OffsetWidth::Four, 0);
        w1.put(&needle(1, 1, b"a1"));
        let mut w2 = Writer::create(&b.0.join("pics_2"), NeedleVersion::V3, OffsetWidth::Four, 0);
        w2.put(&needle(1, 1, b"b2"));
        let mut w3a = Writer::create(&a.0.join("3"), NeedleVersion::V3, OffsetWidth::Four, 0);
        w3a.put(&needle(1, 1, b"a3"));
        let mut w3b = Writer::create(&b.0.join("3"), NeedleVersion::V3, OffsetWidth::Four, 0);
        w3b.put(&needle(1, 1, b"b3"));
        let dir = VolumeDir::open_all([a.0.clone(), b.0.clone()]).unwrap();
        assert_eq!(dir.volume_ids(), vec![1, 2, 3]);
        let rd = |v| dir.read(&FileId::new(v, 1, 1), &ReadOptions::default());
        assert_eq!(rd(1).unwrap().data, b"a1");
        assert_eq!(rd(2).unwrap().data, b"b2");
        assert_eq!(rd(3).unwrap().data, b"a3", "the first directory's volume 3");
        assert!(VolumeDir::open_all(Vec::new()).is_err());
        assert!(VolumeDir::open_all([a.0.clone(), a.0.join("missing")]).is_err());
    }

    /// A read of an unknown volume id rescans only when a directory changed, or the last scan
    /// is RESCAN_EVERY old: a volume added without a visible change (within the timestamp
    /// granularity) is found after that.
    #[test]
    fn unknown_volume_ids_rescan_only_changed_directories() {
        let t = TmpDir::new("rescan");
        Writer::create(&t.0.join("1"), NeedleVersion::V3, OffsetWidth::Four, 0)
            .put(&needle(1, 1, b"one"));
        let settled = SystemTime::now() - Duration::from_secs(10);
        let set_mtime = |at| File::open(&t.0).unwrap().set_modified(at).unwrap();
        set_mtime(settled);
        let opened = Instant::now();
        let dir = VolumeDir::open(&t.0).unwrap();
        let d = ReadOptions::default();
        assert!(matches!(
            dir.read(&FileId::new(2, 1, 1), &d),
            Err(VolumeError::VolumeNotFound(2))
        ));
        // Volume 2 appears, but the directory's time says nothing changed: not seen yet.
        Writer::create(&t.0.join("2"), NeedleVersion::V3, OffsetWidth::Four, 0)
            .put(&needle(1, 1, b"two"));
        set_mtime(settled);
        let unseen = dir.read(&FileId::new(2, 1, 1), &d);
        // (Unless this machine stalled for RESCAN_EVERY since the scan, when it may be seen.)
        if opened.elapsed() < RESCAN_EVERY {
            assert!(matches!(unseen, Err(VolumeError::VolumeNotFound(2))));
        }
        std::thread::sleep(RESCAN_EVERY);
        assert_eq!(dir.read(&FileId::new(2, 1, 1), &d).unwrap().data, b"two");
        // Volume 3 appears and the directory's time changes: seen at once.
        Writer::create(&t.0.join("3"), NeedleVersion::V3, OffsetWidth::Four, 0)
            .put(&needle(1, 1, b"three"));
        assert_eq!(dir.read(&FileId::new(3, 1, 1), &d).unwrap().data, b"three");
    }

    /// An index longer than one read's worth of rows loads whole, with either offset width
    /// detected from its first and last rows.
    #[test]
    fn long_indexes_load_in_pieces() {
        let rows = IDX_ROWS_PER_READ + 100;
        for width in [OffsetWidth::Four, OffsetWidth::Five] {
            let t = TmpDir::new("long-idx");
            let mut w = Writer::create(&t.0.join("4"), NeedleVersion::V3, width, 0);
            for id in 1..=rows as u64 {
                w.put(&needle(id, 7, &id.to_le_bytes()));
            }
            std::fs::remove_file(with_ext(&t.0.join("4"), "vif")).ok();
            let dir = VolumeDir::open(&t.0).unwrap();
            let d = ReadOptions::default();
            for id in [1, IDX_ROWS_PER_READ as u64, rows as u64] {
                let r = dir.read(&FileId::new(4, id, 7), &d).unwrap();
                assert_eq!(r.data, id.to_le_bytes(), "{width:?} needle {id}");
            }
        }
    }

    /// weed's `-dir.idx`: the `.idx` (and a compaction's `.cpx`) in another directory.
    #[test]
    fn index_files_in_another_directory() {
        let (data, index) = (TmpDir::new("split-dat"), TmpDir::new("split-idx"));
        let mut w = Writer::create(&data.0.join("5"), NeedleVersion::V3, OffsetWidth::Four, 0);
        w.put(&needle(1, 9, b"split"));
        std::fs::rename(
            with_ext(&data.0.join("5"), "idx"),
            with_ext(&index.0.join("5"), "idx"),
        )
        .unwrap();
        assert!(VolumeDir::open(&data.0).unwrap().volume_ids().is_empty());
        let missing = Some(index.0.join("missing"));
        assert!(VolumeDir::open_with_index([data.0.clone()], missing).is_err());
        let dir = VolumeDir::open_with_index([data.0.clone()], Some(index.0.clone())).unwrap();
        assert_eq!(dir.volume_ids(), vec![5]);
        let d = ReadOptions::default();
        assert_eq!(dir.read(&FileId::new(5, 1, 9), &d).unwrap().data, b"split");
        // Rows weed appends to the moved .idx are followed (the writer's file was moved).
        w.put(&needle(2, 9, b"more"));
        assert_eq!(dir.read(&FileId::new(5, 2, 9), &d).unwrap().data, b"more");
    }
}
