//! A registry-framed Protobuf record (`--input-format protobuf`): the message index path, then
//! the message, read with a writer schema that imports another file, nests messages, and has
//! every field kind a signup carries (strings, 64-bit ids, enums, repeated and map fields, a
//! nested message, bytes, a well-known type).
//!
//! Whatever the bytes, the read ends without a panic or a hang, every accepted event obeys the
//! vendor's rules, and a dead-letter reason stays short.

#![no_main]

use std::sync::{Arc, LazyLock};

use account_sync::registry::wire;
use account_sync::registry::{Referenced, RegisteredSchema, SchemaKind};
use account_sync::worker::event::{Decoded, Decoder, InputFormat};
use account_sync::worker::schemas::SchemaCache;
use account_sync_fuzz::check_decoded;
use libfuzzer_sys::fuzz_target;

const PROFILE: &str = r#"syntax = "proto3"; package common;
message Profile { string nick = 1; string face_url = 2; repeated string tags = 3; }"#;

const SIGNUP: &str = r#"syntax = "proto3"; package app;
import "common/profile.proto";
import "google/protobuf/timestamp.proto";
enum Plan { FREE = 0; PRO = 1; }
message Signup {
  oneof id { string user_id = 1; int64 numeric_id = 2; }
  common.Profile profile = 3;
  Plan plan = 4;
  map<string, string> attrs = 5;
  bytes raw = 6;
  google.protobuf.Timestamp at = 7;
  message Nested { Signup inner = 1; repeated int64 ids = 2; }
  Nested nested = 8;
}"#;

static DECODER: LazyLock<Decoder> = LazyLock::new(|| {
    let cache = Arc::new(SchemaCache::new(SchemaKind::Protobuf));
    let schema = RegisteredSchema {
        id: 1,
        kind: SchemaKind::Protobuf,
        text: SIGNUP.into(),
        references: vec![Referenced {
            name: "common/profile.proto".into(),
            text: PROFILE.into(),
        }],
    };
    let compiled = cache.compile(&schema);
    assert!(compiled.is_ok(), "{compiled:?}");
    cache.insert(1, compiled);
    Decoder::new(
        InputFormat::Protobuf,
        "/user_id",
        "/profile/nick",
        "/profile/face_url",
    )
    .unwrap()
    .with_schemas(cache)
});

fuzz_target!(|body: &[u8]| {
    let mut payload = wire::header(1).to_vec();
    payload.extend_from_slice(body);
    match DECODER.decode_record(Some(&payload)) {
        Ok(Decoded::Event(e)) => check_decoded(&Ok(e), 300),
        Ok(other) => panic!("a record without envelope is a signup or an error: {other:?}"),
        Err(err) => check_decoded(&Err(err), 300),
    }
});
