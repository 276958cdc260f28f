//! The event decoder on any payload, in every layout the worker is configured with: JSON with
//! the default top-level pointers (the one-pass path), JSON with escaped top-level pointers that
//! name one key twice, JSON with nested pointers (the document path), plain, and inside the
//! Debezium envelope.
//!
//! Whatever it accepts obeys the vendor's rules, and the one-pass path agrees with the document
//! path: the payload wrapped as `{"w": PAYLOAD}` and read with `/w/UserID`… must decode alike.
//! A payload that decodes as a signup is the same signup as the row of a Debezium insert. A
//! payload with a `type` decodes, with event kinds, to the same event of the kind its type names.

#![no_main]

use account_sync::worker::event::{
    AccountEvent, DecodeError, Decoded, Decoder, Envelope, InputFormat,
};
use account_sync::worker::kinds::KindRule;
use account_sync_fuzz::check_decoded;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

struct Decoders {
    default: Decoder,
    escaped: Decoder,
    nested: Decoder,
    wrapped: Decoder,
    plain: Decoder,
    debezium: Decoder,
    typed: Decoder,
}

static DECODERS: LazyLock<Decoders> = LazyLock::new(|| Decoders {
    default: Decoder::json_default(),
    escaped: Decoder::new(InputFormat::Json, "/a~1b", "/~0n", "/a~1b").unwrap(),
    nested: Decoder::new(InputFormat::Json, "/user/id", "/user/name", "/avatar").unwrap(),
    wrapped: Decoder::new(InputFormat::Json, "/w/UserID", "/w/Nick", "/w/FaceUrl").unwrap(),
    plain: Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap(),
    debezium: Decoder::json_default()
        .with_envelope(Envelope::Debezium)
        .unwrap(),
    typed: Decoder::json_default()
        .with_kinds(KindRule {
            pointer: Some("/type".into()),
            update: vec!["u".into()],
            delete: vec!["d".into()],
            apply_deletes: true,
            ..KindRule::default()
        })
        .unwrap(),
});

/// What every accepted event and every rejection must be (the reason: under 200 bytes).
fn check(result: &Result<AccountEvent, DecodeError>) {
    check_decoded(result, 200);
}

/// The wrapped decoder's result as the default decoder would give it for the bare payload.
fn unwrapped(r: Result<AccountEvent, DecodeError>) -> Result<AccountEvent, DecodeError> {
    r.map_err(|e| match e {
        DecodeError::MissingUserId(_) => DecodeError::MissingUserId("/UserID".into()),
        DecodeError::NotAString { field, .. } => DecodeError::NotAString {
            field,
            pointer: format!("/{field}"),
        },
        other => other,
    })
}

fuzz_target!(|payload: &[u8]| {
    let d = &*DECODERS;
    // Read independently: one JSON value, within serde_json's recursion limit.
    let is_json = serde_json::from_slice::<serde_json::Value>(payload).is_ok();
    let default = d.default.decode(Some(payload));
    for result in [
        &default,
        &d.escaped.decode(Some(payload)),
        &d.nested.decode(Some(payload)),
    ] {
        check(result);
        if !is_json {
            assert!(result.is_err(), "accepted a payload that is not JSON");
        }
    }

    let change = d.debezium.decode_record(Some(payload));
    match &change {
        Ok(Decoded::Event(e)) => check(&Ok(e.clone())),
        Ok(Decoded::Skipped(_)) => assert!(is_json, "skipped a payload that is not JSON"),
        Ok(Decoded::AwaitsSchema(id)) => panic!("JSON never awaits a schema ({id})"),
        Err(err) => check(&Err(err.clone())),
    }
    if !is_json {
        assert!(!matches!(change, Ok(Decoded::Event(_))));
    }
    // The same row as a Debezium insert decodes to the same signup.
    if let Ok(e) = &default {
        let mut insert = b"{\"op\":\"c\",\"source\":{},\"after\":".to_vec();
        insert.extend_from_slice(payload);
        insert.push(b'}');
        match d.debezium.decode_record(Some(&insert)) {
            Ok(Decoded::Event(got)) => assert_eq!(&got, e),
            Err(DecodeError::NotJson(m)) if m.contains("recursion limit") => {}
            other => panic!("the insert of a signup row: {other:?}"),
        }
    }

    // With event kinds: the same event, of the kind its type names (a type in no list is a
    // create), or the type's own error.
    match d.typed.decode_record(Some(payload)) {
        Ok(Decoded::Event(e)) => {
            let want = default.clone().map(|d| AccountEvent { kind: e.kind, ..d });
            assert_eq!(want, Ok(e.clone()), "typed and untyped disagree");
        }
        Ok(other) => panic!("nothing is skipped with these kinds: {other:?}"),
        Err(err) => check(&Err(err)),
    }

    let plain = d.plain.decode(Some(payload));
    check(&plain);
    if let Ok(e) = &plain {
        let text = std::str::from_utf8(payload).unwrap();
        assert_eq!(
            e.user_id,
            text.trim_matches(|c: char| c.is_ascii_whitespace())
        );
        assert_eq!((&e.nick, &e.face_url), (&None, &None));
    }

    // The differential: only for a payload that is one JSON value by itself (a payload such as
    // `1,"UserID":"x"` would change the wrapper's meaning), and not one nested so deep that the
    // wrapper's level crosses serde_json's recursion limit.
    if !is_json {
        assert!(matches!(
            default,
            Err(DecodeError::NotJson(_) | DecodeError::NotUtf8 | DecodeError::TooLarge(_))
        ));
        return;
    }
    let mut w = b"{\"w\":".to_vec();
    w.extend_from_slice(payload);
    w.push(b'}');
    let wrapped = d.wrapped.decode(Some(&w));
    if matches!(&wrapped, Err(DecodeError::NotJson(m)) if m.contains("recursion limit")) {
        return;
    }
    if matches!(wrapped, Err(DecodeError::TooLarge(_))) {
        return;
    }
    assert_eq!(default, unwrapped(wrapped));
});
