//! A registry-framed Avro record, read with its writer schema (`--input-format avro`), for
//! writer schemas of the shapes signup streams have: strings and optional strings, enums,
//! numbers, bytes and fixed, arrays and maps, nested and named records, a Debezium envelope. The
//! first input byte picks the schema, the rest is the record.
//!
//! Whatever the bytes, the read ends without a panic, a hang or an allocation beyond what the
//! payload's size allows (apache-avro's bound is the largest payload), every accepted event obeys
//! the vendor's rules, and a dead-letter reason stays short.

#![no_main]

use std::sync::{Arc, LazyLock};

use account_sync::registry::wire;
use account_sync::registry::{RegisteredSchema, SchemaKind};
use account_sync::worker::event::{Decoded, Decoder, Envelope, InputFormat};
use account_sync::worker::schemas::SchemaCache;
use account_sync_fuzz::check_decoded;
use libfuzzer_sys::fuzz_target;

/// The writer schemas, by id (their index + 1).
const SCHEMAS: &[&str] = &[
    r#"{"type":"record","name":"Signup","fields":[
        {"name":"UserID","type":"string"},
        {"name":"Nick","type":["null","string"],"default":null},
        {"name":"FaceUrl","type":["null","string"],"default":null}]}"#,
    r#"{"type":"record","name":"Signup","namespace":"app","fields":[
        {"name":"UserID","type":["null","string","long"]},
        {"name":"plan","type":{"type":"enum","name":"Plan","symbols":["FREE","PRO","TEAM"]}},
        {"name":"score","type":"double"},
        {"name":"ratio","type":"float"},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":["null","int","string"]}},
        {"name":"raw","type":"bytes"},
        {"name":"digest","type":{"type":"fixed","name":"Digest","size":4}},
        {"name":"Nick","type":["null","string"],"default":null}]}"#,
    r#"{"type":"record","name":"Outer","namespace":"app","fields":[
        {"name":"user","type":{"type":"record","name":"User","fields":[
            {"name":"UserID","type":"string"},
            {"name":"friends","type":{"type":"array","items":"User"}}]}},
        {"name":"history","type":{"type":"array","items":{"type":"array","items":"long"}}}]}"#,
    r#"{"type":"record","name":"Envelope","namespace":"db.users","fields":[
        {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
            {"name":"UserID","type":"long"},{"name":"Nick","type":["null","string"]}]}]},
        {"name":"after","type":["null","Value"]},
        {"name":"op","type":"string"}]}"#,
];

static DECODERS: LazyLock<(Decoder, Decoder)> = LazyLock::new(|| {
    let cache = Arc::new(SchemaCache::new(SchemaKind::Avro));
    for (i, text) in SCHEMAS.iter().enumerate() {
        let schema = RegisteredSchema {
            id: i as u32 + 1,
            kind: SchemaKind::Avro,
            text: (*text).into(),
            references: Vec::new(),
        };
        let compiled = cache.compile(&schema);
        assert!(compiled.is_ok(), "schema {}: {compiled:?}", i + 1);
        cache.insert(schema.id, compiled);
    }
    let plain = Decoder::new(InputFormat::Avro, "/UserID", "/Nick", "/FaceUrl")
        .unwrap()
        .with_schemas(cache.clone());
    let nested = Decoder::new(InputFormat::Avro, "/user/UserID", "/Nick", "/FaceUrl")
        .unwrap()
        .with_envelope(Envelope::Debezium)
        .unwrap()
        .with_schemas(cache);
    (plain, nested)
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, record)) = data.split_first() else {
        return;
    };
    let id = u32::from(pick) % SCHEMAS.len() as u32 + 1;
    let mut payload = wire::header(id).to_vec();
    payload.extend_from_slice(record);
    let (plain, nested) = &*DECODERS;
    for decoder in [plain, nested] {
        match decoder.decode_record(Some(&payload)) {
            Ok(Decoded::Event(e)) => check_decoded(&Ok(e), 300),
            Ok(Decoded::Skipped(_)) => {}
            Ok(Decoded::AwaitsSchema(id)) => panic!("schema {id} is cached"),
            Err(err) => check_decoded(&Err(err), 300),
        }
    }
});
