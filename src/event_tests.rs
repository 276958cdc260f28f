//! Decoder tests: every rejection reason, and a hostile-input sweep that must never panic.

use super::*;

fn json(payload: &str) -> Result<SignupEvent, DecodeError> {
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
        SignupEvent {
            user_id: "abc".into(),
            nick: Some("N".into()),
            face_url: Some("a".into())
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
