//! UserSigs: any text decoded and verified (as the emulator and `account-sync usersig verify`
//! do with what they are given), and any identifier signed and read back.
//!
//! The key is a fixed test value, not a secret; no real UserSig is in the corpus.

#![no_main]

use account_sync::chat::usersig::{self, SecretKey, UserSigError};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

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
