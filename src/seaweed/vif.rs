//! The `.vif` file: JSON `VolumeInfo` that weed writes next to each volume, e.g.
//! `{"version":3,"replication":"","bytesOffset":5,"datFileSize":"0","expireAtSec":"0",...}`.
//!
//! Only the fields a reader needs are taken: the needle version, the offset width of the `.idx`
//! (`bytesOffset`: 4 or 5) and whether the `.dat` lives in a remote tier (`files` not empty).

use super::index::OffsetWidth;

/// Why a `.vif` was refused.
#[derive(Debug, thiserror::Error)]
pub enum VifError {
    /// Not JSON, or not a JSON object.
    #[error("volume info is not a JSON object: {0}")]
    Json(String),
    /// `bytesOffset` is neither 4 nor 5.
    #[error("volume info: unsupported bytesOffset {0}")]
    BadOffsetWidth(i64),
}

/// The parts of a `.vif` a reader uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeInfo {
    /// `version`, if present.
    pub version: Option<u8>,
    /// The `.idx` offset width from `bytesOffset`, if present (absent in old files: 4 bytes).
    pub offset_width: Option<OffsetWidth>,
    /// `expireAtSec` (0 = never), if present: when weed deletes a TTL volume as a whole.
    pub expire_at_sec: Option<u64>,
    /// Whether the `.dat` has been moved to a remote tier (`files` is a non-empty list).
    pub remote: bool,
}

impl VolumeInfo {
    /// Parses the JSON text of a `.vif`. An empty file parses as all-absent (weed writes `{}`-like
    /// files for old volumes).
    pub fn parse(text: &[u8]) -> Result<Self, VifError> {
        if text.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Self::default());
        }
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| VifError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| VifError::Json("top level is not an object".into()))?;
        // Protobuf JSON writes 64-bit numbers as strings; accept both forms.
        let int = |key: &str| -> Option<i64> {
            match obj.get(key)? {
                serde_json::Value::Number(n) => n.as_i64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }
        };
        let offset_width = match int("bytesOffset") {
            None | Some(0) => None,
            Some(4) => Some(OffsetWidth::Four),
            Some(5) => Some(OffsetWidth::Five),
            Some(n) => return Err(VifError::BadOffsetWidth(n)),
        };
        Ok(VolumeInfo {
            version: int("version").and_then(|n| u8::try_from(n).ok()),
            offset_width,
            expire_at_sec: int("expireAtSec").and_then(|n| u64::try_from(n).ok()),
            remote: obj
                .get("files")
                .and_then(|f| f.as_array())
                .is_some_and(|a| !a.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weed_vif() {
        let text = br#"{
  "files":  [],
  "version":  3,
  "replication":  "",
  "bytesOffset":  5,
  "datFileSize":  "0",
  "expireAtSec":  "1795601502",
  "readOnly":  false,
  "ecShardConfig":  null,
  "readOnlyCanDelete":  false
}"#;
        let vi = VolumeInfo::parse(text).unwrap();
        assert_eq!(vi.version, Some(3));
        assert_eq!(vi.offset_width, Some(OffsetWidth::Five));
        assert_eq!(vi.expire_at_sec, Some(1_795_601_502));
        assert!(!vi.remote);
        let vi = VolumeInfo::parse(br#"{"bytesOffset":4,"files":[{"backendName":"s3"}]}"#).unwrap();
        assert_eq!(vi.offset_width, Some(OffsetWidth::Four));
        assert!(vi.remote);
        assert_eq!(VolumeInfo::parse(b"  \n").unwrap(), VolumeInfo::default());
        assert_eq!(VolumeInfo::parse(b"{}").unwrap(), VolumeInfo::default());
    }

    #[test]
    fn malformed_vif() {
        assert!(matches!(VolumeInfo::parse(b"{"), Err(VifError::Json(_))));
        assert!(matches!(VolumeInfo::parse(b"[1]"), Err(VifError::Json(_))));
        assert!(matches!(
            VolumeInfo::parse(b"\xff\xfe"),
            Err(VifError::Json(_))
        ));
        assert!(matches!(
            VolumeInfo::parse(br#"{"bytesOffset":8}"#),
            Err(VifError::BadOffsetWidth(8))
        ));
    }
}
