//! TLSSigAPIv2: the admin UserSig that authenticates every REST call.
//!
//! Generation follows `docs/chat-api.md` ("UserSig (TLSSigAPIv2)") step by step: HMAC-SHA256 over
//! a four-line content string, a JSON document carrying the HMAC, zlib, standard base64, then the
//! URL-safe substitutions `+`→`*`, `/`→`-`, `=`→`_`.
//!
//! Verification never compares bytes: Tencent's own libraries differ in JSON key order, spacing and
//! zlib level, so [`verify`] undoes the encoding, parses the JSON and recomputes the HMAC from the
//! parsed fields (constant-time comparison through [`Mac::verify_slice`]).

use std::fmt;
use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Largest inflated document [`verify`] accepts: a real one is ~200 bytes, and a UserSig comes from
/// the network in the emulator, so a zlib bomb must not be able to allocate without bound.
const MAX_DOC_BYTES: u64 = 16 * 1024;

/// The app's secret key. Wrapped so that it can never reach a log line or an error through `Debug`.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps the key; surrounding whitespace (a trailing newline in a mounted Secret file) is dropped.
    pub fn new(key: impl Into<String>) -> Self {
        SecretKey(key.into().trim().to_owned())
    }

    /// True when the key is empty (after trimming): a configuration error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A generated UserSig. `Debug` and `Display` are redacted; [`UserSig::expose`] is the one way out,
/// used only to build the request URL.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSig(String);

impl UserSig {
    /// Wraps a UserSig string obtained elsewhere (the CLI's `verify`, tests).
    pub fn from_string(s: impl Into<String>) -> Self {
        UserSig(s.into())
    }

    /// The raw string. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserSig(<redacted>)")
    }
}

/// What a UserSig says about itself, as decoded by [`decode`] / [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSigDoc {
    /// `TLS.ver`; "2.0" for this algorithm.
    pub version: String,
    /// `TLS.identifier`: the account the sig was issued to.
    pub identifier: String,
    /// `TLS.sdkappid`.
    pub sdkappid: u64,
    /// `TLS.time`: issue time, Unix seconds.
    pub time: u64,
    /// `TLS.expire`: validity in seconds from `time`.
    pub expire: u64,
    /// `TLS.userbuf` (base64), present only in TRTC PrivateMapKeys; part of the signed content.
    pub userbuf: Option<String>,
    /// `TLS.sig`: base64 of the HMAC. Not secret by itself but useless to show; kept for `verify`.
    #[serde(skip)]
    sig: String,
}

impl UserSigDoc {
    /// Unix second after which the sig is expired.
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// Why a UserSig was rejected. Each variant maps to the vendor's error code, so the emulator answers
/// exactly as the real service would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    /// Empty string.
    #[error("UserSig is empty")]
    Empty,
    /// Not valid base64 after undoing the URL substitutions.
    #[error("UserSig is not valid base64")]
    Base64,
    /// Not a zlib stream, or inflates to something too large.
    #[error("UserSig is not a valid zlib stream")]
    Zlib,
    /// Inflated but not the JSON document (or a field has the wrong type / is missing).
    #[error("UserSig document is malformed: {0}")]
    Document(String),
    /// `TLS.identifier` is not the identifier of the request.
    #[error("UserSig was issued to identifier {found:?}, not {expected:?}")]
    IdentifierMismatch { expected: String, found: String },
    /// `TLS.sdkappid` is not the SDKAppID of the request.
    #[error("UserSig was issued for SDKAppID {found}, not {expected}")]
    SdkAppIdMismatch { expected: u64, found: u64 },
    /// `now > time + expire`.
    #[error("UserSig expired at Unix time {expired_at}")]
    Expired { expired_at: u64 },
    /// The HMAC does not match: tampered, or signed with another key.
    #[error("UserSig signature does not match (wrong secret key or tampered)")]
    BadSignature,
}

impl UserSigError {
    /// The vendor ErrorCode for this rejection (public codes: `docs/chat-api.md`, "Error codes").
    pub fn vendor_code(&self) -> i64 {
        match self {
            UserSigError::Empty => 70002,
            UserSigError::Base64 => 70003,
            UserSigError::Zlib | UserSigError::Document(_) => 70005,
            UserSigError::IdentifierMismatch { .. } => 70013,
            UserSigError::SdkAppIdMismatch { .. } => 70014,
            UserSigError::Expired { .. } => 70001,
            UserSigError::BadSignature => 70009,
        }
    }
}

/// The signed content: four lines (five with a userbuf), each ending in `\n`.
fn content_to_sign(
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf: Option<&str>,
) -> String {
    let mut s = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(buf) = userbuf {
        s.push_str("TLS.userbuf:");
        s.push_str(buf);
        s.push('\n');
    }
    s
}

fn hmac_for(key: &SecretKey, content: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(content.as_bytes());
    mac
}

/// Base64 of HMAC-SHA256(key, content): the `TLS.sig` field.
fn sign(key: &SecretKey, content: &str) -> String {
    STANDARD.encode(hmac_for(key, content).finalize().into_bytes())
}

/// The document as we serialise it. Field order matches Tencent's reference libraries; verifiers must
/// not depend on it.
#[derive(Serialize)]
struct DocOut<'a> {
    #[serde(rename = "TLS.ver")]
    ver: &'a str,
    #[serde(rename = "TLS.identifier")]
    identifier: &'a str,
    #[serde(rename = "TLS.sdkappid")]
    sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    expire: u64,
    #[serde(rename = "TLS.time")]
    time: u64,
    #[serde(rename = "TLS.sig")]
    sig: &'a str,
}

/// Generates a UserSig for `identifier` issued at `time` (Unix seconds), valid for `expire` seconds.
pub fn generate(
    key: &SecretKey,
    sdkappid: u64,
    identifier: &str,
    time: u64,
    expire: u64,
) -> UserSig {
    let sig = sign(
        key,
        &content_to_sign(identifier, sdkappid, time, expire, None),
    );
    let doc = DocOut {
        ver: "2.0",
        identifier,
        sdkappid,
        expire,
        time,
        sig: &sig,
    };
    let json = serde_json::to_vec(&doc).expect("serialising a plain struct cannot fail");
    let mut z = ZlibEncoder::new(Vec::with_capacity(json.len()), Compression::default());
    z.write_all(&json).expect("writing to a Vec cannot fail");
    let compressed = z.finish().expect("writing to a Vec cannot fail");
    UserSig(url_safe(&STANDARD.encode(compressed)))
}

fn url_safe(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

fn url_unsafe(sig: &str) -> String {
    sig.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect()
}

/// Decodes a UserSig without checking it: the document it carries. Used by [`verify`] and by
/// `account-sync usersig verify` to show what a sig says even when it is invalid.
pub fn decode(sig: &str) -> Result<UserSigDoc, UserSigError> {
    let sig = sig.trim();
    if sig.is_empty() {
        return Err(UserSigError::Empty);
    }
    let compressed = STANDARD
        .decode(url_unsafe(sig))
        .map_err(|_| UserSigError::Base64)?;
    let mut json = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_DOC_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|_| UserSigError::Zlib)?;
    if json.len() as u64 > MAX_DOC_BYTES {
        return Err(UserSigError::Zlib);
    }
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| UserSigError::Document(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| UserSigError::Document("not a JSON object".into()))?;
    let string = |name: &str| -> Result<String, UserSigError> {
        obj.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| UserSigError::Document(format!("{name} missing or not a string")))
    };
    // Numbers are numbers in every official library; accept numeric strings too, since parsing
    // leniently costs nothing and the HMAC still decides.
    let number = |name: &str| -> Result<u64, UserSigError> {
        match obj.get(name) {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| UserSigError::Document(format!("{name} missing or not an unsigned number")))
    };
    let userbuf = match obj.get("TLS.userbuf") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(UserSigError::Document("TLS.userbuf is not a string".into())),
    };
    Ok(UserSigDoc {
        version: string("TLS.ver")?,
        identifier: string("TLS.identifier")?,
        sdkappid: number("TLS.sdkappid")?,
        time: number("TLS.time")?,
        expire: number("TLS.expire")?,
        userbuf,
        sig: string("TLS.sig")?,
    })
}

/// Verifies `sig` for (`sdkappid`, `identifier`) at Unix time `now`, the way the vendor does.
///
/// Order of checks: decoding, sdkappid, identifier, signature, expiry. The signature is checked
/// before expiry so that a tampered sig is reported as tampered even when it is also old.
pub fn verify(
    key: &SecretKey,
    sig: &str,
    sdkappid: u64,
    identifier: &str,
    now: u64,
) -> Result<UserSigDoc, UserSigError> {
    let doc = decode(sig)?;
    if doc.sdkappid != sdkappid {
        return Err(UserSigError::SdkAppIdMismatch {
            expected: sdkappid,
            found: doc.sdkappid,
        });
    }
    if doc.identifier != identifier {
        return Err(UserSigError::IdentifierMismatch {
            expected: identifier.to_owned(),
            found: doc.identifier,
        });
    }
    let raw_sig = STANDARD
        .decode(doc.sig.as_bytes())
        .map_err(|_| UserSigError::BadSignature)?;
    let content = content_to_sign(
        &doc.identifier,
        doc.sdkappid,
        doc.time,
        doc.expire,
        doc.userbuf.as_deref(),
    );
    hmac_for(key, &content)
        .verify_slice(&raw_sig)
        .map_err(|_| UserSigError::BadSignature)?;
    if now > doc.expires_at() {
        return Err(UserSigError::Expired {
            expired_at: doc.expires_at(),
        });
    }
    Ok(doc)
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "usersig_tests.rs"]
mod tests;
