//! `FileId::parse` / `parse_parts` (file ids from requests and JWT claims) on arbitrary UTF-8: no
//! panic, the two agree, and the parts are the text's own: `base` is where the text starts and
//! parses (alone) to the id before the delta, `ext` is where it ends, the delta is the `_`
//! suffix in between. Formatting inverts parsing: every id with a nonzero needle id formats to a
//! text that parses back to it with no delta or extension (`Display` drops the needle id's
//! leading zero bytes, so needle id 0 formats to the 8 cookie digits alone, which weed refuses
//! as too short too); a parsed `base` that is not weed's formatting of its id differs only in
//! spelling (leading zeros or upper-case hex).
//!
//! The first 16 bytes of the input also make a `FileId` (volume u32, needle id u64, cookie u32,
//! all BE) whose formatting must parse back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swucx::seaweed::{FidError, FileId};

fuzz_target!(|data: &[u8]| {
    if let Some(b) = data.first_chunk::<16>() {
        let id = FileId::new(
            u32::from_be_bytes(b[0..4].try_into().unwrap()),
            u64::from_be_bytes(b[4..12].try_into().unwrap()),
            u32::from_be_bytes(b[12..16].try_into().unwrap()),
        );
        round_trips(&id);
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parts = FileId::parse_parts(s);
    let id = parts.as_ref().map(|p| p.id).map_err(Clone::clone);
    assert_eq!(FileId::parse(s), id);
    assert_eq!(s.parse::<FileId>(), id);
    let Ok(p) = parts else {
        return;
    };
    // The parts are the text's: base, then `_delta`, then the extension.
    assert!(s.starts_with(p.base), "{s:?}");
    let after_base = &s[p.base.len()..];
    let ext = p.ext.unwrap_or("");
    assert!(after_base.ends_with(ext), "{s:?}");
    if let Some(ext) = p.ext {
        assert!(ext.starts_with('.') && !ext[1..].contains('.'), "{s:?}");
    }
    let delta_text = &after_base[..after_base.len() - ext.len()];
    match p.delta {
        None => assert_eq!(delta_text, "", "{s:?}"),
        Some(d) => {
            let digits = delta_text.strip_prefix('_').expect("delta starts with '_'");
            assert_eq!(digits.parse::<u64>(), Ok(d), "{s:?}");
        }
    }
    // The base alone parses to the id before the delta.
    let base = FileId::parse_parts(p.base).expect("the base parses");
    assert_eq!((base.base, base.delta, base.ext), (p.base, None, None));
    assert_eq!(
        base.id.needle_id.wrapping_add(p.delta.unwrap_or(0)),
        p.id.needle_id
    );
    assert_eq!(
        (base.id.volume_id, base.id.cookie),
        (p.id.volume_id, p.id.cookie)
    );
    // The base is weed's formatting of its id but for spelling: leading zeros, case.
    let formatted = base.id.to_string();
    if formatted != p.base {
        let (fv, fk) = formatted.split_once(',').unwrap();
        let (bv, bk) = p.base.split_once(',').unwrap();
        assert_eq!(
            fv.trim_start_matches('0'),
            bv.trim_start_matches('0'),
            "{s:?}"
        );
        assert_eq!(
            fk.trim_start_matches('0'),
            bk.to_ascii_lowercase().trim_start_matches('0'),
            "{s:?}"
        );
    }
    round_trips(&p.id);
});

/// `id` formats to a text that parses back to it (needle id 0: to one weed refuses as well).
fn round_trips(id: &FileId) {
    let text = id.to_string();
    let parsed = FileId::parse_parts(&text);
    if id.needle_id == 0 {
        assert_eq!(parsed, Err(FidError::KeyTooShort(text.clone())));
        return;
    }
    let parsed = parsed.expect("a formatted id parses");
    assert_eq!(parsed.id, *id);
    assert_eq!(
        (parsed.base, parsed.delta, parsed.ext),
        (&text[..], None, None)
    );
}
