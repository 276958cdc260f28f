//! Decoder tests: every rejection reason, and a hostile-input sweep that must never panic.

use super::*;
use crate::worker::kinds::{KindRule, TypeError};

fn json(payload: &str) -> Result<AccountEvent, DecodeError> {
    Decoder::json_default().decode(Some(payload.as_bytes()))
}

#[test]
fn decodes_the_default_layout() {
    let e =
        json(r#"{"UserID":"u_1-A","Nick":"Ann","FaceUrl":"https://x/y.png","extra":1}"#).unwrap();
    assert_eq!(e.user_id, "u_1-A");
    assert_eq!(e.nick.as_deref(), Some("Ann"));
    assert_eq!(e.face_url.as_deref(), Some("https://x/y.png"));
    let bare = json(r#"{"UserID":"u2","Nick":null,"FaceUrl":""}"#).unwrap();
    assert_eq!((bare.nick, bare.face_url), (None, None));
}

#[test]
fn custom_pointers() {
    let d = Decoder::new(
        InputFormat::Json,
        "/user/id",
        "/user/profile/name",
        "/avatar",
    )
    .unwrap();
    let e = d
        .decode(Some(
            br#"{"user":{"id":"abc","profile":{"name":"N"}},"avatar":"a"}"#,
        ))
        .unwrap();
    assert_eq!(
        e,
        AccountEvent {
            user_id: "abc".into(),
            nick: Some("N".into()),
            face_url: Some("a".into()),
            kind: EventKind::Create,
        }
    );
    assert!(Decoder::new(InputFormat::Json, "UserID", "/Nick", "/FaceUrl").is_err());
}

#[test]
fn plain_format() {
    let d = Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap();
    assert_eq!(d.decode(Some(b"user42\n")).unwrap().user_id, "user42");
    assert_eq!(d.decode(Some(b"  ")).unwrap_err(), DecodeError::EmptyUserId);
    assert_eq!(
        d.decode(Some(b"a b")).unwrap_err(),
        DecodeError::UserIdCharacters
    );
}

#[test]
fn each_rejection_has_its_reason() {
    let d = Decoder::json_default();
    assert_eq!(d.decode(None).unwrap_err(), DecodeError::Tombstone);
    assert_eq!(
        d.decode(Some(&[0xff, 0xfe])).unwrap_err(),
        DecodeError::NotUtf8
    );
    assert!(matches!(json("{not json"), Err(DecodeError::NotJson(_))));
    assert_eq!(
        json(r#"{"Nick":"x"}"#).unwrap_err(),
        DecodeError::MissingUserId("/UserID".into())
    );
    assert_eq!(
        json(r#"{"UserID":null}"#).unwrap_err(),
        DecodeError::MissingUserId("/UserID".into())
    );
    assert!(matches!(
        json(r#"{"UserID":42}"#),
        Err(DecodeError::NotAString {
            field: "UserID",
            ..
        })
    ));
    assert_eq!(
        json(r#"{"UserID":""}"#).unwrap_err(),
        DecodeError::EmptyUserId
    );
    let long = "a".repeat(33);
    assert_eq!(
        json(&format!(r#"{{"UserID":"{long}"}}"#)).unwrap_err(),
        DecodeError::UserIdTooLong(33)
    );
    assert_eq!(
        json(r#"{"UserID":"us\u0435r"}"#).unwrap_err(),
        DecodeError::UserIdCharacters
    );
    let nick = "n".repeat(501);
    assert_eq!(
        json(&format!(r#"{{"UserID":"u","Nick":"{nick}"}}"#)).unwrap_err(),
        DecodeError::FieldTooLong {
            field: "Nick",
            len: 501
        }
    );
    assert!(matches!(
        json(r#"{"UserID":"u","FaceUrl":[1]}"#),
        Err(DecodeError::NotAString {
            field: "FaceUrl",
            ..
        })
    ));
    assert!(matches!(json("[]"), Err(DecodeError::MissingUserId(_))));
    let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        d.decode(Some(&huge)).unwrap_err(),
        DecodeError::TooLarge(MAX_PAYLOAD_BYTES + 1)
    );
    // 500 bytes is still fine.
    let ok = "n".repeat(500);
    assert!(json(&format!(r#"{{"UserID":"u","Nick":"{ok}"}}"#)).is_ok());
}

#[test]
fn reasons_read_well() {
    assert_eq!(
        json(r#"{"UserID":""}"#).unwrap_err().to_string(),
        "UserID is empty"
    );
    assert_eq!(
        json(r#"{"UserID":7}"#).unwrap_err().to_string(),
        "UserID at JSON pointer /UserID is not a string"
    );
}

#[test]
fn deep_json_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(json(&deep), Err(DecodeError::NotJson(_))));
    let deep_obj = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    assert!(matches!(json(&deep_obj), Err(DecodeError::NotJson(_))));
}

/// A deterministic sweep of hostile payloads: random bytes, mutated valid events, wrong types,
/// look-alike characters. Nothing may panic; anything accepted must satisfy the UserID rules.
#[test]
fn hostile_sweep_never_panics_and_never_accepts_a_bad_user_id() {
    let d = Decoder::json_default();
    let plain = Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let seeds: &[&[u8]] = &[
        br#"{"UserID":"abc","Nick":"n","FaceUrl":"f"}"#,
        br#"{"UserID":["abc"]}"#,
        br#"{"UserID":{"x":1}}"#,
        br#"{"UserID":true}"#,
        "{\"UserID\":\"\u{0430}bc\"}".as_bytes(),
        "{\"UserID\":\"ab\u{200b}c\"}".as_bytes(),
        "{\"UserID\":\"\u{ff41}bc\"}".as_bytes(),
        br#"{"UserID":"a\u0000b"}"#,
        br#"{"UserID":"abc","UserID":"def"}"#,
        b"null",
        b"\"abc\"",
        b"12345",
    ];
    let mut accepted = 0;
    for i in 0..20_000 {
        let payload: Vec<u8> = match i % 3 {
            0 => (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect(),
            1 => {
                let mut p = seeds[rng.usize(..seeds.len())].to_vec();
                for _ in 0..rng.usize(0..4) {
                    if !p.is_empty() {
                        let at = rng.usize(..p.len());
                        p[at] = rng.u8(..);
                    }
                }
                p
            }
            _ => seeds[rng.usize(..seeds.len())].to_vec(),
        };
        for decoder in [&d, &plain] {
            if let Ok(e) = decoder.decode(Some(&payload)) {
                accepted += 1;
                assert!(
                    api::is_valid_user_id(&e.user_id),
                    "accepted {:?} from {payload:?}",
                    e.user_id
                );
            }
        }
    }
    assert!(
        accepted > 0,
        "the sweep should also produce some valid events"
    );
}

/// The one-pass path for top-level pointers and the general path (whole document, then pointers)
/// agree on every input: same event, or the same error with the same reason text.
#[test]
fn one_pass_and_document_paths_agree() {
    let decoders = [
        Decoder::json_default(),
        // Escaped pointer tokens, and two pointers naming the same key.
        Decoder::new(InputFormat::Json, "/a~1b", "/~0n", "/a~1b").unwrap(),
        Decoder::new(InputFormat::Json, "/", "/Nick", "/Nick").unwrap(),
    ];
    for d in &decoders {
        assert!(d.top_level.is_some());
    }
    let mut corpus: Vec<Vec<u8>> = [
        r#"{"UserID":"abc","Nick":"n","FaceUrl":"f"}"#,
        r#"  {"UserID":"abc"}  "#,
        r#"{"UserID":"abc"} x"#,
        r#"{"UserID":"abc",}"#,
        r#"{"UserID":"abc","UserID":"def"}"#,
        r#"{"UserID":"abc","UserID":7}"#,
        r#"{"UserID":7,"UserID":"abc"}"#,
        r#"{"User\u0049D":"esc","Nick":"\u00e9t\u00e9","FaceUrl":"a\/b"}"#,
        r#"{"UserID":"a\u0062c"}"#,
        r#"{"UserID":null,"Nick":"n"}"#,
        r#"{"Nick":"n"}"#,
        r#"{"UserID":"abc","Nick":null,"FaceUrl":""}"#,
        r#"{"UserID":"abc","Nick":1,"FaceUrl":"f"}"#,
        r#"{"UserID":"abc","Nick":"n","FaceUrl":[1,{"x":[]}]}"#,
        r#"{"UserID":{"nested":"abc"},"Nick":"n"}"#,
        r#"{"x":{"UserID":"abc"},"UserID":"top"}"#,
        r#"{"UserID":"abc","big":123456789012345678901234567890,"f":1.5e300,"t":true}"#,
        r#"{"a/b":"slash","~n":"tilde","":"empty"}"#,
        r#"{"UserID":"abc","x":1e400}"#,
        r#"{"UserID":1e400}"#,
        r#"{"UserID":"abc","x":"\ud800"}"#,
        r#"{"UserID":"\ud83d\ude00"}"#,
        r#"{"UserID":"abc","Nick":"\ud83d\ude00"}"#,
        r#"{"UserID":"has space"}"#,
        r#"{"UserID":"abcdefghijabcdefghijabcdefghijabc"}"#,
        "{}",
        "{",
        r#"{"UserID":"abc""#,
        r#"{"UserID" "abc"}"#,
        r#"{"UserID":"abc"}{"#,
        "[1,2]",
        "null",
        "\"abc\"",
        " 12",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    corpus.push(format!(r#"{{"UserID":"abc","Nick":"{}"}}"#, "n".repeat(501)).into_bytes());
    corpus.push(
        format!(
            r#"{{"UserID":"abc","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        )
        .into_bytes(),
    );
    // Mutations of valid events.
    let mut rng = fastrand::Rng::with_seed(0xdec0de);
    let base = br#"{"UserID":"abc","Nick":"n\"q","FaceUrl":"f","a/b":"x","~n":null,"":"e"}"#;
    for _ in 0..5_000 {
        let mut p = base.to_vec();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..p.len());
            let alphabet = b"{}[]\":,\\ anu0";
            p[at] = alphabet[rng.usize(..alphabet.len())];
        }
        corpus.push(p);
    }
    for d in &decoders {
        let keys = d.top_level.as_ref().unwrap();
        for payload in &corpus {
            let Ok(text) = std::str::from_utf8(payload) else {
                continue;
            };
            let general = d.decode_document(text);
            if text.trim_start().starts_with('{') {
                assert_eq!(d.decode_top_level(text, keys), general, "{text}");
            }
            assert_eq!(d.decode(Some(payload)), general, "{text}");
        }
    }
}

fn debezium() -> Decoder {
    Decoder::new(InputFormat::Json, "/id", "/name", "/avatar")
        .unwrap()
        .with_envelope(Envelope::Debezium)
        .unwrap()
}

#[test]
fn the_debezium_envelope_needs_a_structured_format() {
    let plain = Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap();
    let err = plain.with_envelope(Envelope::Debezium).unwrap_err();
    assert!(
        err.contains("--input-envelope debezium needs a structured --input-format"),
        "{err}"
    );
}

#[test]
fn a_debezium_insert_is_read_by_the_pointers_from_its_row() {
    let d = debezium();
    let insert =
        br#"{"before":null,"after":{"id":"u1","name":"Ann","avatar":""},"source":{},"op":"c"}"#;
    assert_eq!(
        d.decode_record(Some(insert)),
        Ok(Decoded::Event(AccountEvent {
            user_id: "u1".into(),
            nick: Some("Ann".into()),
            face_url: None,
            kind: EventKind::Create,
        }))
    );
    // An integer key column is the UserID's digits; a fraction is not a UserID.
    let int = br#"{"after":{"id":-42},"source":{},"op":"r"}"#;
    assert_eq!(
        d.decode_record(Some(int)).unwrap(),
        Decoded::Event(AccountEvent {
            user_id: "-42".into(),
            nick: None,
            face_url: None,
            kind: EventKind::Create,
        })
    );
    let fraction = br#"{"after":{"id":4.5},"source":{},"op":"c"}"#;
    assert_eq!(
        d.decode_record(Some(fraction)).unwrap_err().to_string(),
        "UserID at JSON pointer /id is not a string"
    );
    // The vendor's rules hold for the row as for any event.
    let long = format!(
        r#"{{"after":{{"id":"{}"}},"source":{{}},"op":"c"}}"#,
        "a".repeat(33)
    );
    assert_eq!(
        d.decode_record(Some(long.as_bytes())),
        Err(DecodeError::UserIdTooLong(33))
    );
}

#[test]
fn debezium_tombstones_are_skipped_and_change_events_have_their_own_bound() {
    let d = debezium();
    assert_eq!(
        d.decode_record(None),
        Ok(Decoded::Skipped(SkipReason::Tombstone))
    );
    // Larger than a signup event may be...
    let pad = "x".repeat(100_000);
    let wide = format!(r#"{{"after":{{"id":"u1","pad":"{pad}"}},"source":{{}},"op":"c"}}"#);
    assert!(matches!(
        d.decode_record(Some(wide.as_bytes())),
        Ok(Decoded::Event(_))
    ));
    // ...but bounded.
    let huge = vec![b' '; MAX_CHANGE_EVENT_BYTES + 1];
    assert_eq!(
        d.decode_record(Some(&huge)),
        Err(DecodeError::ChangeEventTooLarge(MAX_CHANGE_EVENT_BYTES + 1))
    );
    assert!(matches!(
        d.decode_record(Some(b"not json")),
        Err(DecodeError::NotJson(_))
    ));
}

#[test]
fn without_an_envelope_a_record_is_the_signup_itself() {
    let d = Decoder::json_default();
    assert_eq!(
        d.decode_record(Some(br#"{"UserID":"u1"}"#)),
        d.decode(Some(br#"{"UserID":"u1"}"#)).map(Decoded::Event)
    );
    assert_eq!(d.decode_record(None), Err(DecodeError::Tombstone));
}

fn event(user: &str, nick: Option<&str>, kind: EventKind) -> Decoded {
    Decoded::Event(AccountEvent {
        user_id: user.into(),
        nick: nick.map(Into::into),
        face_url: None,
        kind,
    })
}

fn kinds(apply_deletes: bool) -> KindRule {
    KindRule {
        pointer: Some("/type".into()),
        update: vec!["renamed".into()],
        delete: vec!["gone".into()],
        apply_deletes,
        ..KindRule::default()
    }
}

#[test]
fn debezium_updates_and_deletes_are_kinds_of_their_own() {
    let d = debezium()
        .with_kinds(KindRule {
            apply_deletes: true,
            ..KindRule::default()
        })
        .unwrap();
    let renamed = br#"{"before":{"id":"u1","name":"Ann"},"after":{"id":"u1","name":"Bo"},"source":{},"op":"u"}"#;
    assert_eq!(
        d.decode_record(Some(renamed)),
        Ok(event("u1", Some("Bo"), EventKind::Update))
    );
    // Another column changed: nothing the worker writes did.
    let touched = br#"{"before":{"id":"u1","name":"Ann","seen":1},"after":{"id":"u1","name":"Ann","seen":2},"source":{},"op":"u"}"#;
    assert_eq!(
        d.decode_record(Some(touched)),
        Ok(Decoded::Skipped(SkipReason::Unchanged))
    );
    // Without the row before the change, the update is made.
    let blind = br#"{"before":null,"after":{"id":"u1","name":"Ann"},"source":{},"op":"u"}"#;
    assert_eq!(
        d.decode_record(Some(blind)),
        Ok(event("u1", Some("Ann"), EventKind::Update))
    );
    let deleted = br#"{"before":{"id":7,"name":"Ann"},"after":null,"source":{},"op":"d"}"#;
    assert_eq!(
        d.decode_record(Some(deleted)),
        Ok(event("7", Some("Ann"), EventKind::Delete))
    );
    // Deletes are skipped unless applied.
    assert_eq!(
        debezium().decode_record(Some(deleted)),
        Ok(Decoded::Skipped(SkipReason::Delete))
    );
}

#[test]
fn a_typed_event_takes_its_kind_from_its_type() {
    let d = Decoder::json_default().with_kinds(kinds(true)).unwrap();
    let decode = |json: &str| d.decode_record(Some(json.as_bytes()));
    assert_eq!(
        decode(r#"{"type":"signup","UserID":"u1","Nick":"A"}"#),
        Ok(event("u1", Some("A"), EventKind::Create))
    );
    assert_eq!(
        decode(r#"{"type":"renamed","UserID":"u1","Nick":"B"}"#),
        Ok(event("u1", Some("B"), EventKind::Update))
    );
    assert_eq!(
        decode(r#"{"type":"gone","UserID":"u1"}"#),
        Ok(event("u1", None, EventKind::Delete))
    );
    assert_eq!(
        decode(r#"{"UserID":"u1"}"#),
        Err(DecodeError::EventType(TypeError::Missing("/type".into())))
    );
    let unapplied = Decoder::json_default().with_kinds(kinds(false)).unwrap();
    assert_eq!(
        unapplied.decode_record(Some(br#"{"type":"gone","UserID":"u1"}"#)),
        Ok(Decoded::Skipped(SkipReason::Delete))
    );
    // A plain payload has no type to read.
    let plain = Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl").unwrap();
    assert!(plain.with_kinds(kinds(true)).is_err());
}

#[test]
fn an_untyped_event_is_of_the_default_kind() {
    let rule = KindRule {
        default: EventKind::Delete,
        apply_deletes: true,
        ..KindRule::default()
    };
    let plain = Decoder::new(InputFormat::Plain, "/UserID", "/Nick", "/FaceUrl")
        .unwrap()
        .with_kinds(rule.clone())
        .unwrap();
    assert_eq!(
        plain.decode_record(Some(b"u1\n")),
        Ok(event("u1", None, EventKind::Delete))
    );
    let json = Decoder::json_default().with_kinds(rule).unwrap();
    assert_eq!(
        json.decode_record(Some(br#"{"UserID":"u1"}"#)),
        Ok(event("u1", None, EventKind::Delete))
    );
}
