//! Micro benchmarks of the hot path: decode, windowing, UserSig generation, record encoding,
//! limiter acquire. `cargo bench --bench micro`.
//!
//! They measure the worker's own CPU cost per event, which the end-to-end figures (dominated by the
//! vendor's rate limits) cannot show. The end-to-end figures come from `account-sync bench`
//! (`src/devtools/bench.rs`).

use std::hint::black_box;
use std::time::Duration;

use account_sync::chat::usersig::{self, SecretKey};
use account_sync::delivery::sink::encode_outcome;
use account_sync::domain::{EventKind, InputRecord, Outcome, OutcomeStatus, SourcePos};
use account_sync::limiter::Limiter;
use account_sync::worker::event::{AccountEvent, Decoder};
use account_sync::worker::window::{CloseReason, Window};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn decode(c: &mut Criterion) {
    let d = Decoder::json_default();
    let payload = br#"{"UserID":"user_000123456","Nick":"Some Nickname","FaceUrl":"https://cdn.example.com/avatars/000123456.png","source":"web","ts":1795358026}"#;
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_event", |b| {
        b.iter(|| d.decode(Some(black_box(payload))).unwrap())
    });
    g.bench_function("json_rejected", |b| {
        b.iter(|| {
            d.decode(Some(black_box(br#"{"UserID":"bad id"}"#)))
                .unwrap_err()
        })
    });
    // Pointers below the top level take the general path (whole document, then the pointers).
    let nested = Decoder::new(
        account_sync::worker::event::InputFormat::Json,
        "/user/UserID",
        "/user/Nick",
        "/user/FaceUrl",
    )
    .unwrap();
    let nested_payload = br#"{"user":{"UserID":"user_000123456","Nick":"Some Nickname","FaceUrl":"https://cdn.example.com/avatars/000123456.png"},"source":"web","ts":1795358026}"#;
    g.bench_function("json_event_nested_pointers", |b| {
        b.iter(|| nested.decode(Some(black_box(nested_payload))).unwrap())
    });
    // The same event in Avro, framed for a registry, its writer schema in the cache.
    let (avro, avro_payload) = avro_decoder();
    g.bench_function("avro_event", |b| {
        b.iter(|| avro.decode_record(Some(black_box(&avro_payload))).unwrap())
    });
    g.finish();
}

/// A decoder of `--input-format avro` with its schema cached, and an event framed for it.
fn avro_decoder() -> (Decoder, Vec<u8>) {
    use account_sync::registry::{wire, RegisteredSchema, SchemaKind};
    use account_sync::worker::schemas::SchemaCache;
    use apache_avro::types::Value;
    const SCHEMA: &str = r#"{"type":"record","name":"Signup","namespace":"app","fields":[
        {"name":"UserID","type":"string"},
        {"name":"Nick","type":["null","string"],"default":null},
        {"name":"FaceUrl","type":["null","string"],"default":null},
        {"name":"source","type":"string"},
        {"name":"ts","type":"long"}]}"#;
    let cache = std::sync::Arc::new(SchemaCache::new(SchemaKind::Avro));
    let registered = RegisteredSchema {
        id: 1,
        kind: SchemaKind::Avro,
        text: SCHEMA.into(),
        references: Vec::new(),
    };
    cache.insert(1, cache.compile(&registered));
    let decoder = Decoder::new(
        account_sync::worker::event::InputFormat::Avro,
        "/UserID",
        "/Nick",
        "/FaceUrl",
    )
    .unwrap()
    .with_schemas(cache);
    let some = |s: &str| Value::Union(1, Box::new(Value::String(s.into())));
    let record = Value::Record(vec![
        ("UserID".into(), Value::String("user_000123456".into())),
        ("Nick".into(), some("Some Nickname")),
        (
            "FaceUrl".into(),
            some("https://cdn.example.com/avatars/000123456.png"),
        ),
        ("source".into(), Value::String("web".into())),
        ("ts".into(), Value::Long(1_795_358_026)),
    ]);
    let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
    let mut payload = wire::header(1).to_vec();
    payload.extend(apache_avro::to_avro_datum(&schema, record).unwrap());
    (decoder, payload)
}

fn record(i: u64) -> InputRecord {
    InputRecord {
        pos: SourcePos {
            partition: (i % 6) as i32,
            offset: i as i64,
            epoch: 1,
        },
        event: AccountEvent {
            user_id: format!("user_{:09}", i % 90),
            nick: None,
            face_url: None,
            kind: EventKind::Create,
        },
        key: None,
        payload: None,
        timestamp_ms: None,
    }
}

fn windowing(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(100));
    g.bench_function("fill_100_records_90_distinct", |b| {
        b.iter_batched(
            || (0..100).map(record).collect::<Vec<_>>(),
            |records| {
                let mut w = Window::new(100, Duration::from_millis(250));
                for r in records {
                    black_box(w.push(r));
                }
                w.take(CloseReason::Flush)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn usersig_generation(c: &mut Criterion) {
    let key = SecretKey::new("5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e");
    let sig = usersig::generate(&key, 1_400_000_000, "administrator", 1_700_000_000, 86_400);
    c.bench_function("usersig/generate", |b| {
        b.iter(|| {
            usersig::generate(
                &key,
                black_box(1_400_000_000),
                "administrator",
                1_700_000_000,
                86_400,
            )
        })
    });
    c.bench_function("usersig/verify", |b| {
        b.iter(|| {
            usersig::verify(
                &key,
                black_box(sig.expose()),
                1_400_000_000,
                "administrator",
                1_700_000_001,
            )
            .unwrap()
        })
    });
}

fn encoding(c: &mut Criterion) {
    let o = Outcome::success(OutcomeStatus::Imported, 1);
    let pos = SourcePos {
        partition: 3,
        offset: 123_456,
        epoch: 1,
    };
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_outcome", |b| {
        b.iter(|| {
            encode_outcome(
                black_box("user_000123456"),
                &o,
                "signups",
                pos,
                "2026-11-22T12:00:00.123Z",
            )
        })
    });
    g.finish();
}

fn limiter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // A rate far above what the loop can reach: this measures the bookkeeping, not the waiting.
    let l = Limiter::new(1e12, 1_000_000);
    c.bench_function("limiter/acquire_uncontended", |b| {
        b.iter(|| rt.block_on(l.acquire()))
    });
    c.bench_function("limiter/try_acquire", |b| {
        b.iter(|| black_box(l.try_acquire()))
    });
}

criterion_group!(
    benches,
    decode,
    windowing,
    usersig_generation,
    encoding,
    limiter
);
criterion_main!(benches);
