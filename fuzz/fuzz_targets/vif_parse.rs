//! `VolumeInfo::parse` (a volume's `.vif` JSON) on arbitrary bytes: no panic (serde_json's
//! recursion limit keeps deep nesting off the stack); blank input is all-absent; anything else is
//! accepted only as a JSON object, whose `bytesOffset` (number or string) then was absent, 0, 4 or
//! 5, and refused with `BadOffsetWidth` naming any other integer value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swucx::seaweed::{OffsetWidth, VifError, VolumeInfo};

fuzz_target!(|data: &[u8]| {
    let parsed = VolumeInfo::parse(data);
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        assert_eq!(parsed.unwrap(), VolumeInfo::default());
        return;
    }
    let json = serde_json::from_slice::<serde_json::Value>(data).ok();
    let Some(obj) = json.as_ref().and_then(|v| v.as_object()) else {
        assert!(matches!(parsed, Err(VifError::Json(_))));
        return;
    };
    let bytes_offset = match obj.get("bytesOffset") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse::<i64>().ok(),
        _ => None,
    };
    match parsed {
        Ok(vi) => {
            let want = match bytes_offset {
                None | Some(0) => None,
                Some(4) => Some(OffsetWidth::Four),
                Some(5) => Some(OffsetWidth::Five),
                Some(n) => panic!("bytesOffset {n} accepted"),
            };
            assert_eq!(vi.offset_width, want);
            let files = obj.get("files").and_then(|f| f.as_array());
            assert_eq!(vi.remote, files.is_some_and(|f| !f.is_empty()));
        }
        Err(VifError::BadOffsetWidth(n)) => {
            assert_eq!(Some(n), bytes_offset);
            assert!(![0, 4, 5].contains(&n));
        }
        Err(VifError::Json(e)) => panic!("a JSON object refused: {e}"),
    }
});
