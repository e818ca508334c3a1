//! `ReadKey::verify` (read JWTs, attacker-controlled) on arbitrary input: no panic, and never
//! accepts what the key did not sign.
//!
//! Input: a mode byte, the file id asked for (volume u32, needle id u64, cookie u32, all BE),
//! `now` (u64 BE), then the rest, read by mode (mode byte mod 3):
//!
//! - 0, raw token: the rest is the token as sent. Whatever verifies carries a valid HMAC
//!   (recomputed here for the header's `alg`) of its `header.claims` under the key, is refused
//!   with `Signature` under another key, and has a `fid` claim that covers the asked id.
//! - 1, minted: `exp` (u64 BE), then the `fid` claim (UTF-8). The token `ReadKey::mint` makes
//!   verifies exactly when `now < exp` (compared as weed does, in f64: only exact below 2^53)
//!   and the claim covers the id: it is a file id as weed formats it (no delta, no extension)
//!   with the same volume and cookie and a needle id not above the asked one. Another key
//!   refuses it with `Signature`.
//! - 2, signed header and claims: an algorithm byte (HS256/384/512), a length byte, that many
//!   bytes of header, the rest claims; both base64url-encoded and signed here with the key. Never
//!   refused with `Signature` when the header is JSON naming the algorithm used; whatever
//!   verifies has a `fid` claim that covers the id and no `exp` at or before `now`.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Sha256, Sha384, Sha512};
use swucx::seaweed::{FileId, JwtError, ReadKey};

const KEY: &[u8] = b"fuzz-read-signing-key-0123456789";
/// Not `KEY` followed by zero bytes (HMAC pads short keys with zeros, so those are the same key).
const OTHER_KEY: &[u8] = b"fuzz-read-signing-key-0123456788";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((head, rest)) = rest.split_first_chunk::<24>() else {
        return;
    };
    let fid = FileId::new(
        u32::from_be_bytes(head[0..4].try_into().unwrap()),
        u64::from_be_bytes(head[4..12].try_into().unwrap()),
        u32::from_be_bytes(head[12..16].try_into().unwrap()),
    );
    let now = u64::from_be_bytes(head[16..24].try_into().unwrap());
    let key = ReadKey::new(KEY);
    let other = ReadKey::new(OTHER_KEY);
    match mode % 3 {
        0 => {
            if key.verify(rest, &fid, now).is_ok() {
                let token = std::str::from_utf8(rest).expect("an accepted token is UTF-8");
                assert!(signature_valid(token), "accepted without a valid signature");
                assert_eq!(other.verify(rest, &fid, now), Err(JwtError::Signature));
                let claims = token.split('.').nth(1).expect("three parts");
                assert!(claims_allow(claims, &fid, now));
            }
        }
        1 => {
            let Some((exp, claim)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let exp = u64::from_be_bytes(*exp);
            let Ok(claim) = std::str::from_utf8(claim) else {
                return;
            };
            let token = key.mint(claim, exp);
            let got = key.verify(token.as_bytes(), &fid, now);
            if got.is_ok() {
                assert!(now < exp, "accepted at {now}, expiring at {exp}");
            }
            let in_time = if now < 1 << 53 && exp <= 1 << 53 {
                now < exp
            } else {
                (now as f64) < (exp as f64)
            };
            let want = if !in_time {
                Err(JwtError::Expired)
            } else if covers(claim, &fid) {
                Ok(())
            } else {
                Err(JwtError::WrongFid(claim.to_string()))
            };
            assert_eq!(got, want, "claim {claim:?} exp {exp} now {now} fid {fid}");
            assert_eq!(
                other.verify(token.as_bytes(), &fid, now),
                Err(JwtError::Signature)
            );
        }
        _ => {
            let Some((&[alg, header_len], rest)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let Some(header) = rest.get(..usize::from(header_len)) else {
                return;
            };
            let claims = &rest[header.len()..];
            let alg = ["HS256", "HS384", "HS512"][usize::from(alg % 3)];
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac(alg, &signed)));
            let got = key.verify(token.as_bytes(), &fid, now);
            let names_alg = serde_json::from_slice::<serde_json::Value>(header)
                .is_ok_and(|h| h.get("alg").and_then(|a| a.as_str()) == Some(alg));
            if names_alg {
                assert_ne!(got, Err(JwtError::Signature), "{token}");
            }
            if got.is_ok() {
                assert!(names_alg, "accepted a token signed with another algorithm");
                let claims = token.split('.').nth(1).unwrap();
                assert!(claims_allow(claims, &fid, now), "{token}");
                assert_eq!(
                    other.verify(token.as_bytes(), &fid, now),
                    Err(JwtError::Signature)
                );
            }
        }
    }
});

/// The HMAC of `signed` under `KEY` with the JWT algorithm `alg`.
fn mac(alg: &str, signed: &str) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(signed: &str) -> Vec<u8> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(KEY).unwrap();
        m.update(signed.as_bytes());
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        "HS256" => run::<Hmac<Sha256>>(signed),
        "HS384" => run::<Hmac<Sha384>>(signed),
        "HS512" => run::<Hmac<Sha512>>(signed),
        _ => unreachable!(),
    }
}

/// Whether `token`'s signature is the HMAC of its first two parts under `KEY`, for the `alg` its
/// header names.
fn signature_valid(token: &str) -> bool {
    let Some((signed, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Some(header) = signed
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).ok())
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
    else {
        return false;
    };
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    if !["HS256", "HS384", "HS512"].contains(&alg) {
        return false;
    }
    URL_SAFE_NO_PAD.decode(signature).ok() == Some(mac(alg, signed))
}

/// Whether the base64url `claims` name a `fid` that covers `fid`, expire after `now` and are
/// not before it (time claims as numbers or numeric strings, as weed reads them).
fn claims_allow(claims: &str, fid: &FileId, now: u64) -> bool {
    let Some(claims) = URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
    else {
        return false;
    };
    let now = now as f64;
    let exp_ok = time_claim(&claims, "exp").is_some_and(|exp| exp.is_none_or(|exp| now < exp));
    let nbf_ok = time_claim(&claims, "nbf").is_some_and(|nbf| nbf.is_none_or(|nbf| now >= nbf));
    let fid_ok = claims
        .get("fid")
        .and_then(|f| f.as_str())
        .is_some_and(|claim| covers(claim, fid));
    exp_ok && nbf_ok && fid_ok
}

/// The time claim `name` of an acceptable token: `Some(None)` absent or null, `Some(Some(t))` a
/// number or a string holding one (parsed by Rust's looser float syntax: a string weed reads as
/// a number reads the same here), `None` for anything else.
fn time_claim(claims: &serde_json::Value, name: &str) -> Option<Option<f64>> {
    match claims.get(name) {
        None | Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::Number(n)) => n.as_f64().map(Some),
        Some(serde_json::Value::String(s)) => s.parse::<f64>().ok().map(Some),
        Some(_) => None,
    }
}

/// Whether a `fid` claim lets one read `fid`: a plain file id as weed formats it, same volume and
/// cookie, needle id not above the asked one (weed strips the asked id's `_delta`).
fn covers(claim: &str, fid: &FileId) -> bool {
    let Ok(base) = FileId::parse(claim) else {
        return false;
    };
    base.to_string() == claim
        && base.volume_id == fid.volume_id
        && base.cookie == fid.cookie
        && base.needle_id <= fid.needle_id
}
