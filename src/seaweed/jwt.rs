//! Read JWTs as SeaweedFS checks them (`weed/security/jwt.go`, `guard.go`): HMAC-signed (HS256,
//! HS384 or HS512) tokens whose `fid` claim must equal the file id (`vid,<needle><cookie>`, no
//! `_delta` suffix or extension) and whose `exp` / `nbf` must hold. The key comes from weed's
//! `security.toml` (`[jwt.signing.read] key`), looked up where weed looks, or from
//! `WEED_JWT_SIGNING_READ_KEY`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

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
    /// `exp` has passed or `nbf` has not come.
    #[error("token expired or not yet valid")]
    Expired,
    /// The `fid` claim names another file.
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

    /// The key weed would use: `WEED_JWT_SIGNING_READ_KEY`, else `[jwt.signing.read] key` from
    /// the first `security.toml` in `./`, `$HOME/.seaweedfs/`, `/etc/seaweedfs/`. `None` if
    /// neither sets a non-empty key.
    pub fn from_weed_config() -> Result<Option<ReadKey>, String> {
        if let Ok(key) = std::env::var("WEED_JWT_SIGNING_READ_KEY") {
            return Ok((!key.is_empty()).then(|| ReadKey::new(key)));
        }
        let mut dirs = vec![PathBuf::from(".")];
        if let Some(home) = std::env::var_os("HOME") {
            dirs.push(Path::new(&home).join(".seaweedfs"));
        }
        dirs.push(PathBuf::from("/etc/seaweedfs"));
        for dir in dirs {
            let path = dir.join("security.toml");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
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
            return Ok((!key.is_empty()).then(|| ReadKey::new(key)));
        }
        Ok(None)
    }

    /// Checks `token` for file `fid` (`vid,<needle><cookie>`) at `now` (unix seconds).
    pub fn verify(&self, token: &[u8], fid: &str, now: u64) -> Result<(), JwtError> {
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
        let number = |name: &str| claims.get(name).and_then(|v| v.as_f64());
        if number("exp").is_some_and(|exp| (now as f64) > exp)
            || number("nbf").is_some_and(|nbf| (now as f64) < nbf)
        {
            return Err(JwtError::Expired);
        }
        match claims.get("fid").and_then(|f| f.as_str()) {
            Some(claimed) if claimed == fid => Ok(()),
            other => Err(JwtError::WrongFid(other.unwrap_or_default().to_string())),
        }
    }

    /// Mints an HS256 token for `fid` expiring at `exp` (unix seconds), as weed's master and
    /// filer do.
    pub fn mint(&self, fid: &str, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims =
            URL_SAFE_NO_PAD.encode(serde_json::json!({ "fid": fid, "exp": exp }).to_string());
        let signed = format!("{header}.{claims}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }
}

/// Length of `header.claims`, the signed part of a token.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
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
        let now = 1_800_000_000;
        let good = key.mint(FID, now + 60);
        assert_eq!(key.verify(good.as_bytes(), FID, now), Ok(()));
        assert_eq!(key.verify(b"", FID, now), Err(JwtError::Missing));
        assert_eq!(
            key.verify(key.mint(FID, now - 1).as_bytes(), FID, now),
            Err(JwtError::Expired)
        );
        assert!(matches!(
            key.verify(key.mint("7,0288e07130", now + 60).as_bytes(), FID, now),
            Err(JwtError::WrongFid(_))
        ));
        let other = ReadKey::new("another key");
        assert_eq!(
            key.verify(other.mint(FID, now + 60).as_bytes(), FID, now),
            Err(JwtError::Signature)
        );
        for garbage in [
            &b"x"[..],
            b"a.b.c",
            b"a.b.c.d",
            &[0xff, 0xfe, b'.', b'.'][..],
        ] {
            assert!(key.verify(garbage, FID, now).is_err());
        }
        // No key: nothing is checked.
        assert_eq!(ReadKey::new("").verify(b"", FID, now), Ok(()));
    }
}
