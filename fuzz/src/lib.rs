//! What the fuzz targets share: how a target derives a request from its input, the checks every
//! answer error must pass, and those every decoded event must pass.

use account_sync::chat::api::{is_valid_user_id, MAX_PROFILE_FIELD_BYTES, MAX_USER_ID_BYTES};
use account_sync::chat::{Api, ChatError, FailureClass};
use account_sync::worker::event::{AccountEvent, DecodeError};

/// The UserIDs a request is made of: the ids of the vendor's samples (`docs/chat-api.md`), short
/// ones, and one of the longest allowed (32 bytes).
pub const POOL: [&str; 8] = [
    "UserID_1",
    "UserID_2",
    "u1",
    "u2",
    "u3",
    "a",
    "b",
    "abcdefghijabcdefghijabcdefghij32",
];

/// Splits an input into a request and the answer body. The first byte says how many UserIDs were
/// requested (`byte % 8 + 1`), each of the next that many bytes picks one from [`POOL`]
/// (`byte % 8`), and the rest is the body. With digits: `"00{…}"` asks about `UserID_1`,
/// `"2015{…}"` about `UserID_1`, `UserID_2` and `a`, `"100{…}"` about `UserID_1` twice (a
/// window can hold a UserID twice).
pub fn request(data: &[u8]) -> Option<(Vec<&'static str>, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let n = usize::from(first % 8) + 1;
    if rest.len() < n {
        return None;
    }
    let (picks, body) = rest.split_at(n);
    let ids = picks.iter().map(|&b| POOL[usize::from(b % 8)]).collect();
    Some((ids, body))
}

/// The longest `Display` an answer error may have, whatever the body (up to 256 KiB) held: it goes
/// into logs, outcome and dead-letter records. (A reason of a few hundred bytes and the body's
/// first 120 bytes, escaped: at most about 1 KiB.)
pub const MAX_ERROR_TEXT: usize = 2048;

/// An answer that is not a result is the API's fault (unreadable, retryable) or the vendor's
/// error for the call, about `api`, and says so in a bounded text.
pub fn check_answer_error(err: &ChatError, api: Api) {
    match err {
        ChatError::BadResponse { api: a, .. } => {
            assert_eq!(*a, api);
            assert_eq!(err.class(), FailureClass::Retryable);
        }
        ChatError::Vendor { api: a, code, .. } => {
            assert_eq!(*a, api);
            assert_ne!(*code, 0, "ErrorCode 0 is not an error");
        }
        other => panic!("an answer can only be unreadable or the vendor's error: {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.len() <= MAX_ERROR_TEXT,
        "error text is {} bytes: {}…",
        text.len(),
        &text[..text.floor_char_boundary(200)]
    );
}

/// The body read independently of the code under test, as a JSON document. Lossily: serde_json
/// skips the fields a response type does not have without checking their UTF-8, so invalid UTF-8
/// in a field nobody reads does not make an answer unreadable.
pub fn document(body: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_str(&String::from_utf8_lossy(body)).ok()
}

/// An answer's `ResultItem` read independently of the code under test, each item as `Item` (the
/// fields a check looks at, as JSON values). Read with serde, field by field like the code under
/// test reads it, so that a field neither reads is skipped unread: a [`document`] refuses the
/// whole body for a number no `f64` can hold (`7e402`) in a field of an item nobody reads, which
/// the code under test rightly accepts. `None` for a body the code under test cannot have read.
pub fn result_items<Item: serde::de::DeserializeOwned>(body: &[u8]) -> Option<Vec<Item>> {
    #[derive(serde::Deserialize)]
    struct Answer<Item> {
        #[serde(rename = "ResultItem", default = "Vec::new")]
        items: Vec<Item>,
    }
    let text = String::from_utf8_lossy(body);
    Some(serde_json::from_str::<Answer<Item>>(&text).ok()?.items)
}

/// An answer's `FailAccounts` read independently, each entry as a JSON value (see
/// [`result_items`] for why not through a [`document`]).
pub fn fail_accounts(body: &[u8]) -> Option<Vec<serde_json::Value>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "FailAccounts", default)]
        accounts: Vec<serde_json::Value>,
    }
    let text = String::from_utf8_lossy(body);
    Some(serde_json::from_str::<Answer>(&text).ok()?.accounts)
}

/// The body's `ErrorCode` (see [`document`]): `Some` only for a JSON object whose `ErrorCode` is
/// an integer. A field nobody reads may hold a number no `f64` can (`7e402`): serde skips it, a
/// `Value` refuses the whole body. For such a body the `ErrorCode` is read alone, every other
/// field skipped.
pub fn error_code(body: &[u8]) -> Option<i64> {
    match document(body) {
        Some(doc) => doc.get("ErrorCode")?.as_i64(),
        None => {
            #[derive(serde::Deserialize)]
            struct Code {
                #[serde(rename = "ErrorCode")]
                code: Option<serde_json::Value>,
            }
            let text = String::from_utf8_lossy(body);
            serde_json::from_str::<Code>(&text).ok()?.code?.as_i64()
        }
    }
}

/// What every decoded event must be, whatever the payload: the vendor's rules (UserID 1-32 bytes
/// of `[A-Za-z0-9_-]`, Nick and FaceUrl non-empty and at most 500 bytes). And a decode error, the
/// dead-letter reason, stays under `max_reason` bytes.
pub fn check_decoded(result: &Result<AccountEvent, DecodeError>, max_reason: usize) {
    match result {
        Ok(e) => {
            assert!(is_valid_user_id(&e.user_id), "{:?}", e.user_id);
            assert!(e.user_id.len() <= MAX_USER_ID_BYTES);
            for field in [&e.nick, &e.face_url].into_iter().flatten() {
                assert!(!field.is_empty() && field.len() <= MAX_PROFILE_FIELD_BYTES);
            }
        }
        Err(err) => assert!(err.to_string().len() <= max_reason, "{err}"),
    }
}
