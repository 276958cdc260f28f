//! UserSigs: any text decoded and verified (as the emulator and `account-sync usersig verify`
//! do with what they are given); any bytes, as the document inside a UserSig (zlib, base64),
//! decoded to the fields an independent reading finds; and any identifier signed and read back.
//!
//! The key is a fixed test value, not a secret; no real UserSig is in the corpus.

#![no_main]

use std::io::Write;
use std::sync::LazyLock;

use account_sync::chat::usersig::{self, SecretKey, UserSigDoc, UserSigError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SDKAPPID: u64 = 1_400_000_000;
const IDENTIFIER: &str = "administrator";
const NOW: u64 = 1_700_000_000;

static KEY: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::new("fuzz-test-key-not-a-secret"));
static OTHER_KEY: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::new("another-test-key"));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let decoded = usersig::decode(&text);
    let verified = usersig::verify(&KEY, &text, SDKAPPID, IDENTIFIER, NOW);
    match (&decoded, &verified) {
        (Err(d), Err(v)) => assert_eq!(d, v, "verify fails first where decode does"),
        (Err(d), Ok(_)) => panic!("verified what does not decode: {d}"),
        (Ok(_), Err(e)) => assert!(
            !matches!(
                e,
                UserSigError::Empty | UserSigError::Base64 | UserSigError::Zlib
            ),
            "{e}"
        ),
        (Ok(doc), Ok(v)) => {
            assert_eq!(doc, v);
            assert_eq!((v.sdkappid, v.identifier.as_str()), (SDKAPPID, IDENTIFIER));
            assert!(NOW <= v.expires_at());
        }
    }
    if let Err(e) = &verified {
        assert_ne!(e.vendor_code(), 0);
    }

    // The input as the document inside a UserSig: decoded exactly when it has the fields.
    let decoded = usersig::decode(&encode(data));
    match (document_fields(data), decoded) {
        (Some(want), Ok(doc)) => assert_eq!(fields(&doc), want),
        (None, Err(UserSigError::Document(_))) => {}
        (want, got) => panic!("document {want:?}, decoded {got:?}"),
    }

    // Any identifier (the first 64 characters of the input), signed at any time, reads back as
    // signed, and only for the app and the key it was signed for.
    let identifier: String = text.chars().take(64).collect();
    let (time, expire) = (NOW - u64::from(data.len() as u8), 86_400);
    let sig = usersig::generate(&KEY, SDKAPPID, &identifier, time, expire);
    let doc = usersig::verify(&KEY, sig.expose(), SDKAPPID, &identifier, NOW)
        .unwrap_or_else(|e| panic!("a fresh UserSig for {identifier:?} does not verify: {e}"));
    assert_eq!(
        (&doc.identifier, doc.time, doc.expire),
        (&identifier, time, expire)
    );
    assert!(matches!(
        usersig::verify(&KEY, sig.expose(), SDKAPPID + 1, &identifier, NOW),
        Err(UserSigError::SdkAppIdMismatch { .. })
    ));
    assert_eq!(
        usersig::verify(&OTHER_KEY, sig.expose(), SDKAPPID, &identifier, NOW),
        Err(UserSigError::BadSignature)
    );
});

/// A UserSig carrying `doc`: zlib, standard base64, the URL-safe substitutions.
fn encode(doc: &[u8]) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(doc).unwrap();
    let b64 = STANDARD.encode(z.finish().unwrap());
    b64.replace('+', "*").replace('/', "-").replace('=', "_")
}

type Fields = (String, String, u64, u64, u64, Option<String>);

fn fields(d: &UserSigDoc) -> Fields {
    let d = d.clone();
    (
        d.version,
        d.identifier,
        d.sdkappid,
        d.time,
        d.expire,
        d.userbuf,
    )
}

/// The fields of a document, read with `serde_json::Value`: strings, and numbers that may be
/// given as numeric strings, as the vendor's libraries write them.
fn document_fields(doc: &[u8]) -> Option<Fields> {
    let v: Value = serde_json::from_slice(doc).ok()?;
    let o = v.as_object()?;
    let string = |k: &str| o.get(k)?.as_str().map(str::to_owned);
    let number = |k: &str| match o.get(k)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let userbuf = match o.get("TLS.userbuf") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    string("TLS.sig")?;
    Some((
        string("TLS.ver")?,
        string("TLS.identifier")?,
        number("TLS.sdkappid")?,
        number("TLS.time")?,
        number("TLS.expire")?,
        userbuf,
    ))
}
