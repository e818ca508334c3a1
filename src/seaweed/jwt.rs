//! Read JWTs as SeaweedFS checks them (`weed/security/jwt.go`, `guard.go`): HMAC-signed (HS256,
//! HS384 or HS512) tokens whose `fid` claim must name the file id (`vid,<needle><cookie>`, no
//! `_delta` suffix or extension; see [`ReadKey::verify`] for ids with a delta) and whose `exp` /
//! `nbf` must hold. The key comes from weed's `security.toml` (`[jwt.signing.read] key`), looked
//! up where weed looks ([`weed_config_dirs`]), or from `WEED_JWT_SIGNING_READ_KEY`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

use crate::seaweed::fid::FileId;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No token, but the server requires one.
    #[error("no read token")]
    Missing,
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not an HMAC algorithm.
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    /// The signature does not match the key.
    #[error("bad signature")]
    Signature,
    /// `exp` has come (a token is valid while now < `exp`) or `nbf` has not.
    #[error("token expired or not yet valid")]
    Expired,
    /// The `fid` claim names another file (one that does not cover the requested id).
    #[error("token is for file {0:?}")]
    WrongFid(String),
}

/// The read-signing key of a volume server. An empty key disables the check, as in weed.
#[derive(Clone, PartialEq, Eq)]
pub struct ReadKey(Vec<u8>);

impl std::fmt::Debug for ReadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadKey(..)")
    }
}

impl ReadKey {
    /// A key from its bytes.
    pub fn new(key: impl Into<Vec<u8>>) -> ReadKey {
        ReadKey(key.into())
    }

    /// The key weed would use, and where it came from: `WEED_JWT_SIGNING_READ_KEY` when set to
    /// a non-empty value (viper ignores empty variables), else `[jwt.signing.read] key` from the
    /// first `security.toml` in [`weed_config_dirs`]. `None` if neither sets a non-empty key
    /// (the first file found decides, even without a key, as in weed).
    pub fn from_weed_config() -> Result<Option<(ReadKey, KeySource)>, String> {
        ReadKey::from_weed_config_in(
            std::env::var("WEED_JWT_SIGNING_READ_KEY").ok(),
            &weed_config_dirs(),
        )
    }

    /// [`from_weed_config`](ReadKey::from_weed_config) with the variable's value and the
    /// directories given.
    pub fn from_weed_config_in(
        env: Option<String>,
        dirs: &[PathBuf],
    ) -> Result<Option<(ReadKey, KeySource)>, String> {
        if let Some(key) = env.filter(|k| !k.is_empty()) {
            return Ok(Some((ReadKey::new(key), KeySource::Env)));
        }
        for dir in dirs {
            let path = dir.join("security.toml");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Never skipped: it may hold the read key weed enforces, and serving without it
                // would serve every needle unchecked.
                Err(e) => {
                    return Err(format!(
                        "{}: {e} (weed's configuration, which may hold the read key: make it \
                         readable, or give the key with --jwt-read-key-file; a service with \
                         systemd's ProtectHome cannot read a home directory)",
                        path.display()
                    ));
                }
            };
            let doc: toml::Table = text
                .parse()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let key = doc
                .get("jwt")
                .and_then(|j| j.get("signing"))
                .and_then(|s| s.get("read"))
                .and_then(|r| r.get("key"))
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            return Ok((!key.is_empty()).then(|| (ReadKey::new(key), KeySource::File(path))));
        }
        Ok(None)
    }

    /// Checks `token` for file `fid` at `now` (unix seconds). The `fid` claim may also name a
    /// smaller needle id of the same volume and cookie: weed strips a file id's `_delta` before
    /// comparing, so a token for the base id reads every `base_delta` (`fid` carries the sum).
    pub fn verify(&self, token: &[u8], fid: &FileId, now: u64) -> Result<(), JwtError> {
        if self.0.is_empty() {
            return Ok(());
        }
        if token.is_empty() {
            return Err(JwtError::Missing);
        }
        let token = std::str::from_utf8(token).map_err(|_| JwtError::Malformed("not UTF-8"))?;
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three parts"));
        };
        let header: serde_json::Value = decode_json(header)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let signed = &token[..header_len(token)];
        let alg = header
            .get("alg")
            .and_then(|a| a.as_str())
            .unwrap_or_default();
        let valid = match alg {
            "HS256" => check_mac::<Hmac<Sha256>>(&self.0, signed, &signature),
            "HS384" => check_mac::<Hmac<Sha384>>(&self.0, signed, &signature),
            "HS512" => check_mac::<Hmac<Sha512>>(&self.0, signed, &signature),
            other => return Err(JwtError::Algorithm(other.to_string())),
        };
        if !valid {
            return Err(JwtError::Signature);
        }
        let claims: serde_json::Value = decode_json(claims)?;
        let (exp, nbf) = (numeric_date(&claims, "exp")?, numeric_date(&claims, "nbf")?);
        // As golang-jwt v5 (weed's): valid while now < exp, and from nbf on.
        if exp.is_some_and(|exp| (now as f64) >= exp) || nbf.is_some_and(|nbf| (now as f64) < nbf) {
            return Err(JwtError::Expired);
        }
        match claims.get("fid").and_then(|f| f.as_str()) {
            Some(claimed) if claim_covers(claimed, fid) => Ok(()),
            other => Err(JwtError::WrongFid(other.unwrap_or_default().to_string())),
        }
    }

    /// Mints an HS256 token for `fid` expiring at `exp` (unix seconds), as weed's master and
    /// filer do.
    pub fn mint(&self, fid: &str, exp: u64) -> String {
        self.sign(&serde_json::json!({ "fid": fid, "exp": exp }))
    }

    /// An HS256 token of `claims`.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }
}

/// Where a read key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `WEED_JWT_SIGNING_READ_KEY` environment variable.
    Env,
    /// A `security.toml`.
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => f.write_str("WEED_JWT_SIGNING_READ_KEY"),
            KeySource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The directories weed 4.48 reads `security.toml` from, in order: `.`, `$HOME/.seaweedfs`,
/// `/usr/local/etc/seaweedfs`, `/etc/seaweedfs` (`weed master -h`; the scaffold's comment
/// omits `/usr/local/etc`).
pub fn weed_config_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(".")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".seaweedfs"));
    }
    dirs.push(PathBuf::from("/usr/local/etc/seaweedfs"));
    dirs.push(PathBuf::from("/etc/seaweedfs"));
    dirs
}

/// Whether a token whose `fid` claim is `claimed` lets one read `fid`, as weed decides.
///
/// weed's volume server (`maybeCheckJwtAuthorization`) compares the claim with the URL's file id
/// after stripping its `_delta` suffix, so a token for the base id `V,KC` reads `V,(K+delta)C`
/// for every delta. The request carries the needle id with the delta already added (the client
/// resolved it), so the server cannot strip it; accepting a claim of the same volume and cookie
/// whose needle id is at most the requested one gives weed's effect. (weed's addition wraps at
/// 2^64; a wrapping delta, which weed's assign never hands out, is refused here.) The claim
/// itself must be a plain `vid,key` as weed formats it, with no delta or extension.
fn claim_covers(claimed: &str, fid: &FileId) -> bool {
    let Ok(base) = FileId::parse(claimed) else {
        return false;
    };
    base.to_string() == claimed
        && base.volume_id == fid.volume_id
        && base.cookie == fid.cookie
        && base.needle_id <= fid.needle_id
}

/// Length of `header.claims`, the signed part of a token.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

/// The time claim `name` (`exp`, `nbf`) as golang-jwt v5 (weed's) reads a `NumericDate`: absent
/// or `null` is none; a JSON number, or a string that is one (`"1700000000"`), is its value; a
/// string that is not a JSON number, one out of range, or any other type (`true`, an object)
/// makes the token malformed.
fn numeric_date(claims: &serde_json::Value, name: &str) -> Result<Option<f64>, JwtError> {
    use serde_json::Value;
    let value = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        // Go's json.Number takes exactly a JSON number's text: no blanks, no "+1", ".5", "inf".
        Some(Value::String(s)) if !s.contains(|c: char| c.is_ascii_whitespace()) => {
            serde_json::from_str::<serde_json::Number>(s)
                .ok()
                .and_then(|n| n.as_f64())
        }
        Some(_) => None,
    };
    match value {
        Some(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(JwtError::Malformed("a time claim is not a number")),
    }
}

fn decode_json(part: &str) -> Result<serde_json::Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("part is not JSON"))
}

fn check_mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], signed: &str, signature: &[u8]) -> bool {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(signed.as_bytes());
    mac.verify_slice(signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FID: &str = "7,0188e07130";

    #[test]
    fn accepts_and_refuses_like_weed() {
        let key = ReadKey::new("test-read-signing-key-0123456789");
        let fid = FileId::parse(FID).unwrap();
        let now = 1_800_000_000;
        let good = key.mint(FID, now + 60);
        assert_eq!(key.verify(good.as_bytes(), &fid, now), Ok(()));
        assert_eq!(key.verify(b"", &fid, now), Err(JwtError::Missing));
        assert_eq!(
            key.verify(key.mint(FID, now - 1).as_bytes(), &fid, now),
            Err(JwtError::Expired)
        );
        assert!(matches!(
            key.verify(key.mint("7,0288e07130", now + 60).as_bytes(), &fid, now),
            Err(JwtError::WrongFid(_))
        ));
        let other = ReadKey::new("another key");
        assert_eq!(
            key.verify(other.mint(FID, now + 60).as_bytes(), &fid, now),
            Err(JwtError::Signature)
        );
        for garbage in [
            &b"x"[..],
            b"a.b.c",
            b"a.b.c.d",
            &[0xff, 0xfe, b'.', b'.'][..],
        ] {
            assert!(key.verify(garbage, &fid, now).is_err());
        }
        // golang-jwt v5 (weed's) takes a token as valid while now < exp: not at exp itself.
        let exp = key.mint(FID, now);
        assert_eq!(key.verify(exp.as_bytes(), &fid, now - 1), Ok(()));
        assert_eq!(
            key.verify(exp.as_bytes(), &fid, now),
            Err(JwtError::Expired)
        );
        assert_eq!(
            key.verify(exp.as_bytes(), &fid, now + 1),
            Err(JwtError::Expired)
        );
        // No key: nothing is checked.
        assert_eq!(ReadKey::new("").verify(b"", &fid, now), Ok(()));
    }

    /// golang-jwt v5 (weed's) reads `exp` and `nbf` as a NumericDate: a JSON number or a string
    /// that is one; `null` is no claim; anything else makes the token malformed (weed answers
    /// 401), never "no expiry".
    #[test]
    fn time_claims_are_numbers_or_numeric_strings() {
        use serde_json::json;
        let key = ReadKey::new("test-read-signing-key-0123456789");
        let fid = FileId::parse(FID).unwrap();
        let now = 1_800_000_000;
        let verify = |claims: serde_json::Value| {
            let mut claims = claims;
            claims["fid"] = json!(FID);
            key.verify(key.sign(&claims).as_bytes(), &fid, now)
        };
        for ok in [
            json!({ "exp": now + 60 }),
            json!({ "exp": "1800000060" }),
            json!({ "exp": "1.80000006e9" }),
            json!({ "exp": 1_800_000_000.5 }),
            json!({ "exp": null, "nbf": "1799999999" }),
            json!({}),
        ] {
            assert_eq!(verify(ok.clone()), Ok(()), "{ok}");
        }
        for expired in [
            json!({ "exp": "1800000000" }),
            json!({ "exp": "-1" }),
            json!({ "nbf": "1800000001" }),
        ] {
            assert_eq!(verify(expired.clone()), Err(JwtError::Expired), "{expired}");
        }
        for malformed in [
            json!({ "exp": true }),
            json!({ "exp": false }),
            json!({ "exp": {} }),
            json!({ "exp": [1_900_000_000] }),
            json!({ "exp": "soon" }),
            json!({ "exp": "" }),
            json!({ "exp": " 1900000000" }),
            json!({ "exp": "+1900000000" }),
            json!({ "exp": "1900000000." }),
            json!({ "exp": "0x71" }),
            json!({ "exp": "inf" }),
            json!({ "exp": "NaN" }),
            json!({ "exp": "1e400" }),
            json!({ "exp": now + 60, "nbf": true }),
        ] {
            assert!(
                matches!(verify(malformed.clone()), Err(JwtError::Malformed(_))),
                "{malformed}: {:?}",
                verify(malformed.clone())
            );
        }
    }

    /// weed strips a URL's `_delta` before comparing the claim, so a token for the base id reads
    /// every `base_delta`; the request carries the sum, so the server accepts a claim of the same
    /// volume and cookie with a needle id not above the requested one, and nothing else.
    #[test]
    fn a_token_for_the_base_fid_reads_its_deltas() {
        let key = ReadKey::new("test-read-signing-key-0123456789");
        let now = 1_800_000_000;
        let token = |claim: &str| key.mint(claim, now + 60);
        let verify = |claim: &str, fid: &str| {
            key.verify(token(claim).as_bytes(), &FileId::parse(fid).unwrap(), now)
        };
        // "7,0188e07130_5" is needle 6: read with the base fid's token, as weed allows.
        for read in [
            "7,0188e07130_0",
            "7,0188e07130_1",
            "7,0188e07130_5",
            "7,0788e07130",
        ] {
            assert_eq!(verify(FID, read), Ok(()), "{read}");
        }
        let wrong = |claim: &str, read: &str| {
            assert!(
                matches!(verify(claim, read), Err(JwtError::WrongFid(_))),
                "{claim} read {read}"
            );
        };
        // Another cookie, another volume, a larger needle id.
        wrong("7,0188e07131", "7,0188e07130_5");
        wrong("8,0188e07130", "7,0188e07130_5");
        wrong("7,0788e07130", "7,0188e07130_5");
        wrong("7,0788e07130", FID);
        // The claim is a plain fid as weed formats it: no delta, extension or other spelling.
        wrong("7,0188e07130_0", FID);
        wrong("7,0188e07130.jpg", FID);
        wrong("7,188e07130", FID);
        wrong("", FID);
        // A delta that wraps past 2^64 (never assigned by weed) is not covered.
        wrong("7,ffffffffffffffff88e07130", "7,ffffffffffffffff88e07130_1");
    }

    #[test]
    fn key_is_found_the_way_weed_finds_it() {
        let root = std::env::temp_dir().join(format!("swucx-jwt-{}", std::process::id()));
        let dirs: Vec<PathBuf> = ["cwd", "home/.seaweedfs", "usr-local-etc", "etc"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        let write = |i: usize, text: &str| std::fs::write(dirs[i].join("security.toml"), text);
        let found = |env: Option<&str>| {
            ReadKey::from_weed_config_in(env.map(str::to_string), &dirs)
                .unwrap()
                .map(|(k, src)| (k, src.to_string()))
        };
        let file = |i: usize| dirs[i].join("security.toml").display().to_string();
        assert_eq!(found(None), None);
        // The last directory, then each earlier one takes over.
        write(3, "[jwt.signing.read]\nkey = \"etc\"\n").unwrap();
        assert_eq!(found(None), Some((ReadKey::new("etc"), file(3))));
        write(2, "[jwt.signing.read]\nkey = \"usr-local\"\n").unwrap();
        assert_eq!(found(None), Some((ReadKey::new("usr-local"), file(2))));
        write(
            1,
            "[jwt.signing.read]\nkey = \"home\"\nexpires_after_seconds = 10\n",
        )
        .unwrap();
        assert_eq!(found(None), Some((ReadKey::new("home"), file(1))));
        // The first file found decides, even when it sets no read key (only the write key).
        write(0, "[jwt.signing]\nkey = \"write-only\"\n").unwrap();
        assert_eq!(found(None), None);
        write(0, "[jwt.signing.read]\nkey = \"cwd\"\n").unwrap();
        assert_eq!(found(None), Some((ReadKey::new("cwd"), file(0))));
        // A set variable wins over every file; an empty one is ignored, as viper does.
        assert_eq!(
            found(Some("from-env")),
            Some((ReadKey::new("from-env"), "WEED_JWT_SIGNING_READ_KEY".into()))
        );
        assert_eq!(found(Some("")), Some((ReadKey::new("cwd"), file(0))));
        // A broken file is an error naming it.
        write(0, "[jwt.signing.read\nkey=").unwrap();
        let err = ReadKey::from_weed_config_in(None, &dirs).unwrap_err();
        assert!(err.contains(&file(0)), "{err}");
        let _ = std::fs::remove_dir_all(&root);
        let defaults = weed_config_dirs();
        assert_eq!(defaults[0], PathBuf::from("."));
        assert_eq!(defaults.last(), Some(&PathBuf::from("/etc/seaweedfs")));
        assert!(defaults.contains(&PathBuf::from("/usr/local/etc/seaweedfs")));
    }
}
