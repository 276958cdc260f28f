//! The worker's input edge end to end: records that do not decode are dead-lettered with the
//! documented headers and their original bytes, and never hold up the partition; change events
//! that are not signups are skipped and counted, never dead-lettered.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use account_sync::delivery::sink::headers;
use account_sync::devtools::registry::RegistryHandle;
use account_sync::registry::wire;
use apache_avro::types::{Record as AvroRecord, Value as AvroValue};
use apache_avro::Schema as AvroSchema;
use common::emulator::{count, emulator_config};
use common::kafka::{
    admin_get, ends, event_json, eventually, produce, ReadRecord, RunningWorker, WorkerEnv,
};

/// What a bad record must be dead-lettered with.
enum Reason {
    Exactly(String),
    StartsWith(String),
}

impl Reason {
    fn exactly(reason: impl Into<String>) -> Reason {
        Reason::Exactly(reason.into())
    }

    fn starts_with(prefix: impl Into<String>) -> Reason {
        Reason::StartsWith(prefix.into())
    }
}

/// One input record of a test: key, payload, `Some(reason)` when it must not decode,
/// `Some(skip reason)` when it must be skipped, and the outcome status of a good one.
struct Input {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    bad: Option<Reason>,
    skipped: Option<&'static str>,
    status: &'static str,
}

/// A record that decodes to a create: its outcome is `imported`.
fn good(user: &str, payload: Vec<u8>) -> Input {
    record(user, Some(payload))
}

fn record(key: &str, payload: Option<Vec<u8>>) -> Input {
    Input {
        key: Some(key.as_bytes().to_vec()),
        payload,
        bad: None,
        skipped: None,
        status: "imported",
    }
}

/// A profile update of a user the stream has no other event of (so no window can reduce it with
/// another: its outcome is `updated` however the records fall into windows).
fn updated(user: &str, payload: Vec<u8>) -> Input {
    Input {
        status: "updated",
        ..record(user, Some(payload))
    }
}

fn bad(key: &str, payload: Option<Vec<u8>>, reason: Reason) -> Input {
    Input {
        bad: Some(reason),
        ..record(key, payload)
    }
}

fn skipped(key: &str, payload: Option<Vec<u8>>, reason: &'static str) -> Input {
    Input {
        skipped: Some(reason),
        ..record(key, payload)
    }
}

/// Produces `inputs` in order to partition 0 of a one-partition input topic, runs a worker with
/// `extra` flags until every record is accounted for, and checks: one outcome per good record and
/// none for a bad or skipped one, one dead letter per bad record with the documented headers and
/// the original key and payload, each skipped one counted by its reason, and the committed offset
/// at the end of the partition.
async fn run_and_check(
    inputs: &[Input],
    extra: &[&str],
) -> (WorkerEnv, BTreeMap<i64, serde_json::Value>) {
    let env = WorkerEnv::start(1, emulator_config()).await;
    // Keys here are ASCII; `produce` takes &str keys.
    let keys: Vec<Option<String>> = inputs
        .iter()
        .map(|i| {
            i.key
                .as_ref()
                .map(|k| String::from_utf8(k.clone()).unwrap())
        })
        .collect();
    let records: Vec<(Option<&str>, Option<&[u8]>)> = inputs
        .iter()
        .zip(&keys)
        .map(|(i, k)| (k.as_deref(), i.payload.as_deref()))
        .collect();
    let offsets = produce(&env.kafka.producer(), &env.topics.input, Some(0), &records).await;
    let n_bad = inputs.iter().filter(|i| i.bad.is_some()).count();
    let n_skipped = inputs.iter().filter(|i| i.skipped.is_some()).count();
    let n_good = inputs.len() - n_bad - n_skipped;

    let worker = env.worker(extra);
    let metrics = worker.metrics.clone();
    let end = ends(&offsets);
    assert_eq!(
        env.wait_outcomes(n_good, Duration::from_secs(30)).await,
        n_good
    );
    assert!(
        common::kafka::eventually(Duration::from_secs(20), || env.committed() == end).await,
        "the partition keeps flowing past bad records: committed {:?}, end {end:?}",
        env.committed()
    );
    worker.stop().await.expect("clean stop");

    let mut outcomes: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
    for r in env.outcomes() {
        let (p, o) = r.source();
        assert_eq!(p, 0);
        assert!(
            outcomes.insert(o, r.json()).is_none(),
            "two outcomes for offset {o}"
        );
    }
    let mut dead: BTreeMap<i64, ReadRecord> = BTreeMap::new();
    for d in env.dead_letters() {
        let o: i64 = d.header(headers::SOURCE_OFFSET).parse().unwrap();
        assert!(
            dead.insert(o, d).is_none(),
            "two dead letters for offset {o}"
        );
    }
    assert_eq!(outcomes.len(), n_good, "{outcomes:?}");
    assert_eq!(dead.len(), n_bad);
    for (input, &(p, o)) in inputs.iter().zip(&offsets) {
        assert_eq!(p, 0);
        if input.skipped.is_some() {
            assert!(!outcomes.contains_key(&o), "skipped offset {o}: an outcome");
            assert!(!dead.contains_key(&o), "skipped offset {o}: a dead letter");
            continue;
        }
        match &input.bad {
            None => {
                assert!(
                    !dead.contains_key(&o),
                    "good record at offset {o} dead-lettered: {:?}",
                    dead[&o]
                );
                let v = &outcomes[&o];
                assert_eq!(v["status"], input.status, "offset {o}: {v}");
                assert_eq!(v["source_topic"], env.topics.input.as_str());
            }
            Some(reason) => {
                assert!(
                    !outcomes.contains_key(&o),
                    "bad record at offset {o} got an outcome"
                );
                let d = &dead[&o];
                assert_eq!(d.key, input.key, "offset {o}: original key");
                assert_eq!(
                    d.payload, input.payload,
                    "offset {o}: original payload bytes"
                );
                assert_eq!(d.header(headers::STAGE), "decode");
                assert_eq!(d.header(headers::CODE), "0");
                let got = d.header(headers::REASON);
                match reason {
                    Reason::Exactly(want) => assert_eq!(got, want.as_str(), "offset {o}"),
                    Reason::StartsWith(want) => {
                        assert!(got.starts_with(want), "offset {o}: {got:?}")
                    }
                }
                assert_eq!(d.header(headers::SOURCE_TOPIC), env.topics.input);
                assert_eq!(d.header(headers::SOURCE_PARTITION), "0");
                assert_eq!(d.header(headers::ATTEMPTS), "0");
                humantime::parse_rfc3339(d.header(headers::FAILED_AT))
                    .expect("failed-at is RFC 3339");
            }
        }
    }
    assert_eq!(
        metrics
            .events_dead_lettered
            .with_label_values(&["decode", "invalid_input"])
            .get(),
        n_bad as u64
    );
    let mut skips: BTreeMap<&str, u64> = BTreeMap::new();
    for reason in inputs.iter().filter_map(|i| i.skipped) {
        *skips.entry(reason).or_default() += 1;
    }
    for reason in [
        "unchanged",
        "delete",
        "truncate",
        "message",
        "tombstone",
        "other_type",
    ] {
        assert_eq!(
            metrics.events_skipped.with_label_values(&[reason]).get(),
            skips.get(reason).copied().unwrap_or(0),
            "skipped for {reason}"
        );
    }
    assert_eq!(env.committed(), end);
    // The tests' workers import one by one; an update is always a batch call.
    let n_updated = inputs.iter().filter(|i| i.status == "updated").count();
    let calls = env.emu.stats().calls;
    assert_eq!(
        count(&calls, "account_import"),
        (n_good - n_updated) as u64,
        "a bad record costs no API call"
    );
    assert!(count(&calls, "multiaccount_import") as usize <= n_updated);
    (env, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_records_are_dead_lettered_and_the_partition_flows_on() {
    let nick_501 = "n".repeat(501);
    let inputs = vec![
        good("json-0", event_json("json-0", "zero")),
        bad(
            "k-not-json",
            Some(b"this is not json".to_vec()),
            Reason::starts_with("payload is not valid JSON: "),
        ),
        good("json-1", event_json("json-1", "one")),
        bad(
            "k-missing",
            Some(br#"{"Nick":"no id"}"#.to_vec()),
            Reason::exactly("no UserID at JSON pointer /UserID"),
        ),
        bad(
            "k-empty",
            Some(br#"{"UserID":""}"#.to_vec()),
            Reason::exactly("UserID is empty"),
        ),
        good("json-2", event_json("json-2", "two")),
        bad(
            "k-33",
            Some(format!(r#"{{"UserID":"{}"}}"#, "a".repeat(33)).into_bytes()),
            Reason::exactly("UserID is 33 bytes, over the 32-byte limit"),
        ),
        bad(
            "k-space",
            Some(br#"{"UserID":"has space"}"#.to_vec()),
            Reason::exactly("UserID contains characters outside [A-Za-z0-9_-]"),
        ),
        good("json-3", event_json("json-3", "three")),
        bad(
            "k-nick",
            Some(event_json("json-nick", &nick_501)),
            Reason::exactly("Nick is 501 bytes, over the 500-byte limit"),
        ),
        bad(
            "k-tombstone",
            None,
            Reason::exactly("record has no payload (tombstone)"),
        ),
        good("json-4", event_json("json-4", "four")),
        bad(
            "k-utf8",
            Some(b"{\"UserID\":\"\xff\xfe\"}".to_vec()),
            Reason::exactly("payload is not valid UTF-8"),
        ),
        bad(
            "k-number",
            Some(br#"{"UserID":42}"#.to_vec()),
            Reason::exactly("UserID at JSON pointer /UserID is not a string"),
        ),
        bad(
            "k-huge",
            Some(vec![b' '; 70_000]),
            Reason::exactly("payload is 70000 bytes, over the 65536-byte limit"),
        ),
        good("json-5", event_json("json-5", "five")),
    ];
    let (_env, outcomes) = run_and_check(&inputs, &[]).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["json-0", "json-1", "json-2", "json-3", "json-4", "json-5"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_input_format_takes_the_trimmed_payload_as_the_user_id() {
    let inputs = vec![
        // A bad record first and last: the committed offset must move past both edges too.
        bad(
            "k-space",
            Some(b"plain 0".to_vec()),
            Reason::exactly("UserID contains characters outside [A-Za-z0-9_-]"),
        ),
        good("k1", b"plain-1".to_vec()),
        good("k2", b"  plain-2 \n".to_vec()),
        bad(
            "k-blank",
            Some(b"  \t ".to_vec()),
            Reason::exactly("UserID is empty"),
        ),
        good("k4", b"plain-4".to_vec()),
        bad(
            "k-json",
            Some(br#"{"UserID":"plain-5"}"#.to_vec()),
            Reason::exactly("UserID contains characters outside [A-Za-z0-9_-]"),
        ),
        bad(
            "k-33",
            Some("b".repeat(33).into_bytes()),
            Reason::exactly("UserID is 33 bytes, over the 32-byte limit"),
        ),
        bad(
            "k-utf8",
            Some(b"plain-\xff".to_vec()),
            Reason::exactly("payload is not valid UTF-8"),
        ),
        good("k8", b"plain-8".to_vec()),
        bad(
            "k-tombstone",
            None,
            Reason::exactly("record has no payload (tombstone)"),
        ),
    ];
    let (_env, outcomes) = run_and_check(&inputs, &["--input-format", "plain"]).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["plain-1", "plain-2", "plain-4", "plain-8"]);
}

/// A Debezium change event of the users table (`id`, `name`, `avatar`) in the envelope form.
fn change(op: &str, before: serde_json::Value, after: serde_json::Value) -> Vec<u8> {
    let source = serde_json::json!({"connector": "postgresql", "db": "app", "table": "users"});
    serde_json::json!({"before": before, "after": after, "source": source, "op": op, "ts_ms": 1})
        .to_string()
        .into_bytes()
}

/// The same in the JSON converter's schema wrapper (`schemas.enable=true`).
fn with_schema(event: Vec<u8>) -> Vec<u8> {
    let payload: serde_json::Value = serde_json::from_slice(&event).unwrap();
    let schema = serde_json::json!({"type": "struct", "name": "app.public.users.Envelope", "optional": false});
    serde_json::json!({"schema": schema, "payload": payload})
        .to_string()
        .into_bytes()
}

/// `row` with another column, `seen`, which the worker does not write.
fn with_column(mut row: serde_json::Value, seen: i64) -> serde_json::Value {
    row["seen"] = seen.into();
    row
}

fn row(id: serde_json::Value, name: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "name": name, "avatar": format!("https://a.example/{name}.png")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_inserts_and_profile_updates_are_made_and_the_other_changes_are_skipped() {
    let null = serde_json::Value::Null;
    let inputs =
        vec![
        good(
            "dbz-1",
            change("c", null.clone(), row("dbz-1".into(), "one")),
        ),
        good(
            "dbz-2",
            change("r", null.clone(), row("dbz-2".into(), "two")),
        ),
        // An update of the profile is made; one of other columns only is skipped.
        updated(
            "dbz-9",
            change("u", row("dbz-9".into(), "nine"), row("dbz-9".into(), "nueve")),
        ),
        skipped(
            "dbz-1",
            Some(change(
                "u",
                with_column(row("dbz-1".into(), "one"), 1),
                with_column(row("dbz-1".into(), "one"), 2),
            )),
            "unchanged",
        ),
        good(
            "dbz-3",
            with_schema(change("c", null.clone(), row("dbz-3".into(), "three"))),
        ),
        // A table's integer key is the UserID's digits.
        good("4004", change("c", null.clone(), row(4004.into(), "four"))),
        skipped(
            "dbz-2",
            Some(change("d", row("dbz-2".into(), "two"), null.clone())),
            "delete",
        ),
        skipped("dbz-2", None, "tombstone"),
        skipped(
            "t",
            Some(change("t", null.clone(), null.clone())),
            "truncate",
        ),
        skipped(
            "m",
            Some(
                br#"{"op":"m","ts_ms":1,"source":{},"message":{"prefix":"p","content":"Yw=="}}"#
                    .to_vec(),
            ),
            "message",
        ),
        // ExtractNewRecordState: the row alone, with the fields it adds.
        good(
            "dbz-5",
            br#"{"id":"dbz-5","name":"five","__op":"c","__deleted":"false"}"#.to_vec(),
        ),
        updated(
            "dbz-10",
            br#"{"id":"dbz-10","name":"dix","__op":"u","__deleted":"false"}"#.to_vec(),
        ),
        skipped(
            "dbz-5",
            Some(with_schema(
                br#"{"id":"dbz-5","name":"cinq","__op":"d","__deleted":"true"}"#.to_vec(),
            )),
            "delete",
        ),
        good("dbz-6", br#"{"id":"dbz-6","name":"six"}"#.to_vec()),
        bad(
            "k-op",
            Some(br#"{"op":"x","source":{},"after":{"id":"dbz-7"}}"#.to_vec()),
            Reason::exactly(
                r#"not a Debezium change event: op "x" is not one of c, r, u, d, t, m"#,
            ),
        ),
        bad(
            "k-no-after",
            Some(change("c", null.clone(), null.clone())),
            Reason::exactly(r#"not a Debezium change event: op "c" has no "after" row object"#),
        ),
        bad(
            "k-no-id",
            Some(change(
                "c",
                null.clone(),
                serde_json::json!({"name": "nobody"}),
            )),
            Reason::exactly("no UserID at JSON pointer /id"),
        ),
        good("dbz-8", change("c", null, row("dbz-8".into(), "eight"))),
    ];
    let flags = [
        "--input-envelope",
        "debezium",
        "--user-id-pointer",
        "/id",
        "--nick-pointer",
        "/name",
        "--face-url-pointer",
        "/avatar",
    ];
    let (env, outcomes) = run_and_check(&inputs, &flags).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["dbz-1", "dbz-2", "dbz-9", "dbz-3", "4004", "dbz-5", "dbz-10", "dbz-6", "dbz-8"]
    );
    let stats = env.emu.stats();
    assert_eq!(
        stats.imported_accounts, 9,
        "the inserts and the updates of missing accounts, and nothing for the rest"
    );
}

/// The local Schema Registry of the registry-format tests, on a fresh port.
async fn start_registry(user_info: Option<&str>) -> RegistryHandle {
    RegistryHandle::start("127.0.0.1:0".parse().unwrap(), user_info.map(str::to_owned))
        .await
        .expect("registry starts")
}

/// A record framed as the registry's serializers frame it: magic byte, schema id, body.
fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = wire::header(id).to_vec();
    out.extend_from_slice(body);
    out
}

const SIGNUP_V1: &str = r#"{"type":"record","name":"Signup","namespace":"app","fields":[
    {"name":"user_id","type":"string"},
    {"name":"nick","type":["null","string"],"default":null}]}"#;

/// The same record a version later: a new optional field and an enum, nick unchanged.
const SIGNUP_V2: &str = r#"{"type":"record","name":"Signup","namespace":"app","fields":[
    {"name":"user_id","type":"string"},
    {"name":"plan","type":{"type":"enum","name":"Plan","symbols":["FREE","PRO"]}},
    {"name":"nick","type":["null","string"],"default":null},
    {"name":"avatar","type":["null","string"],"default":null}]}"#;

/// An Avro record of `schema` with `fields` (a union field given as `Some` takes its branch 1).
fn avro(schema: &str, fields: &[(&str, AvroValue)]) -> Vec<u8> {
    let schema = AvroSchema::parse_str(schema).unwrap();
    let mut r = AvroRecord::new(&schema).unwrap();
    for (name, value) in fields {
        r.put(name, value.clone());
    }
    apache_avro::to_avro_datum(&schema, r).unwrap()
}

fn some(s: &str) -> AvroValue {
    AvroValue::Union(1, Box::new(AvroValue::String(s.into())))
}

fn string(s: &str) -> AvroValue {
    AvroValue::String(s.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_of_two_writer_schemas_are_read_and_each_schema_is_asked_for_once() {
    let registry = start_registry(None).await;
    let v1 = registry.register("signups-value", SIGNUP_V1, None, vec![]);
    let v2 = registry.register("signups-value", SIGNUP_V2, None, vec![]);
    assert_ne!(v1, v2);
    let one = |user: &str, nick: &str| {
        framed(
            v1,
            &avro(
                SIGNUP_V1,
                &[("user_id", string(user)), ("nick", some(nick))],
            ),
        )
    };
    let two = |user: &str| {
        let plan = AvroValue::Enum(1, "PRO".into());
        let fields = [
            ("user_id", string(user)),
            ("plan", plan),
            ("nick", AvroValue::Union(0, Box::new(AvroValue::Null))),
            ("avatar", some("https://a.example/x.png")),
        ];
        framed(v2, &avro(SIGNUP_V2, &fields))
    };
    let mut corrupt = one("avro-bad", "x");
    corrupt.truncate(corrupt.len() - 2);
    let inputs = vec![
        good("avro-1", one("avro-1", "one")),
        good("avro-2", two("avro-2")),
        bad(
            "k-unknown",
            Some(framed(999, b"\x02x")),
            Reason::exactly(
                "schema id 999 not found in the schema registry (error 40403: Schema 999 not found)",
            ),
        ),
        good("avro-3", one("avro-3", "three")),
        bad(
            "k-corrupt",
            Some(corrupt),
            Reason::starts_with(format!("payload does not decode with schema id {v1}: ")),
        ),
        bad(
            "k-json",
            Some(event_json("avro-json", "j")),
            Reason::exactly("payload starts with byte 0x7b, not the Schema Registry magic byte 0 (a record produced without the registry's serializer?)"),
        ),
        good("avro-4", two("avro-4")),
        bad(
            "k-unknown-again",
            Some(framed(999, b"")),
            Reason::starts_with("schema id 999 not found"),
        ),
        good("avro-5", one("avro-5", "five")),
    ];
    let url = registry.base_url();
    let flags = [
        "--input-format",
        "avro",
        "--schema-registry-url",
        &url,
        "--user-id-pointer",
        "/user_id",
        "--nick-pointer",
        "/nick",
        "--face-url-pointer",
        "/avatar",
    ];
    let (_env, outcomes) = run_and_check(&inputs, &flags).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["avro-1", "avro-2", "avro-3", "avro-4", "avro-5"]);
    assert_eq!(
        registry.id_lookups(),
        3,
        "once per schema id (v1, v2 and the unknown 999), whatever the records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_records_are_read_with_the_json_pointers() {
    let registry = start_registry(None).await;
    let schema =
        r#"{"type":"object","properties":{"UserID":{"type":"string"},"Nick":{"type":"string"}}}"#;
    let id = registry.register("signups-value", schema, Some("JSON"), vec![]);
    let avro_id = registry.register("other-value", SIGNUP_V1, None, vec![]);
    let inputs = vec![
        good("js-1", framed(id, &event_json("js-1", "one"))),
        bad(
            "k-avro",
            Some(framed(avro_id, b"{}")),
            Reason::exactly(format!(
                "schema id {avro_id} is AVRO, not JSON as the input format says"
            )),
        ),
        bad(
            "k-not-json",
            Some(framed(id, b"not json")),
            Reason::starts_with("payload is not valid JSON: "),
        ),
        good("js-2", framed(id, &event_json("js-2", "two"))),
    ];
    let url = registry.base_url();
    let flags = [
        "--input-format",
        "json-schema",
        "--schema-registry-url",
        &url,
    ];
    let (_env, outcomes) = run_and_check(&inputs, &flags).await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(registry.id_lookups(), 2);
}

/// Debezium's Avro converter: the envelope with the row as a union of null and a record.
const USERS_ENVELOPE: &str = r#"{"type":"record","name":"Envelope","namespace":"app.public.users","fields":[
    {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
        {"name":"id","type":"long"},{"name":"name","type":["null","string"],"default":null}]}],"default":null},
    {"name":"after","type":["null","Value"],"default":null},
    {"name":"source","type":{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
        {"name":"table","type":"string"}]}},
    {"name":"op","type":"string"},
    {"name":"ts_ms","type":["null","long"],"default":null}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_avro_changes_are_read_through_the_registry() {
    let registry = start_registry(None).await;
    let id = registry.register("app.public.users-value", USERS_ENVELOPE, None, vec![]);
    let row = |user: i64, name: &str| {
        AvroValue::Union(
            1,
            Box::new(AvroValue::Record(vec![
                ("id".into(), AvroValue::Long(user)),
                ("name".into(), some(name)),
            ])),
        )
    };
    let none = || AvroValue::Union(0, Box::new(AvroValue::Null));
    let change = |op: &str, before: AvroValue, after: AvroValue| {
        let source = AvroValue::Record(vec![("table".into(), string("users"))]);
        let fields = [
            ("before", before),
            ("after", after),
            ("source", source),
            ("op", string(op)),
            ("ts_ms", AvroValue::Union(1, Box::new(AvroValue::Long(1)))),
        ];
        framed(id, &avro(USERS_ENVELOPE, &fields))
    };
    let inputs = vec![
        good("1001", change("c", none(), row(1001, "ann"))),
        good("1002", change("r", none(), row(1002, "bob"))),
        updated("1004", change("u", row(1004, "dan"), row(1004, "daniel"))),
        skipped(
            "1002",
            Some(change("d", row(1002, "bob"), none())),
            "delete",
        ),
        skipped("1002", None, "tombstone"),
        good("1003", change("c", none(), row(1003, "cy"))),
    ];
    let url = registry.base_url();
    let flags = [
        "--input-format",
        "avro",
        "--input-envelope",
        "debezium",
        "--schema-registry-url",
        &url,
        "--user-id-pointer",
        "/id",
        "--nick-pointer",
        "/name",
    ];
    let (_env, outcomes) = run_and_check(&inputs, &flags).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["1001", "1002", "1004", "1003"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_does_not_answer_pauses_intake_and_nothing_is_dead_lettered() {
    let registry = start_registry(Some("sync:pw")).await;
    let id = registry.register("signups-value", SIGNUP_V1, None, vec![]);
    let env = WorkerEnv::start(1, emulator_config()).await;
    let users: Vec<String> = (0..20).map(|i| format!("sr-down-{i}")).collect();
    let records: Vec<Vec<u8>> = users
        .iter()
        .map(|u| {
            framed(
                id,
                &avro(SIGNUP_V1, &[("user_id", string(u)), ("nick", some("n"))]),
            )
        })
        .collect();
    let keyed: Vec<(Option<&str>, Option<&[u8]>)> = users
        .iter()
        .zip(&records)
        .map(|(u, r)| (Some(u.as_str()), Some(r.as_slice())))
        .collect();
    let offsets = produce(&env.kafka.producer(), &env.topics.input, Some(0), &keyed).await;
    let dir = tempfile_dir("sr-down");
    let user_info = dir.join("user-info");
    std::fs::write(&user_info, "sync:pw\n").unwrap();
    let url = registry.base_url();
    registry.set_down(true);
    let (worker, admin) = RunningWorker::start_with_admin(env.args(&[
        "--input-format",
        "avro",
        "--schema-registry-url",
        &url,
        "--schema-registry-user-info-file",
        user_info.to_str().unwrap(),
        "--user-id-pointer",
        "/user_id",
        "--systemic-probe-interval",
        "100ms",
    ]))
    .await;
    let m = worker.metrics.clone();
    // Down: intake pauses on the first record, /readyz says why, the lookups go on.
    assert!(
        eventually(Duration::from_secs(30), || m.paused.get() == 1
            && m.systemic_fault
                .with_label_values(&["schema_registry"])
                .get()
                == 1)
        .await,
        "intake paused for the registry"
    );
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("schema registry unavailable: schema id 1: HTTP 503"),
        "{body}"
    );
    assert!(!body.contains("pw"), "no credential in /readyz: {body}");
    let asked = registry.id_lookups();
    assert!(
        eventually(Duration::from_secs(30), || registry.id_lookups()
            >= asked + 2)
        .await,
        "the lookup is asked again while the registry is down"
    );
    assert_eq!(env.outcome_count(), 0);
    assert_eq!(env.dead_letter_count(), 0, "nothing dead-lettered");

    // Up again: the gate reopens and every record goes through.
    registry.set_down(false);
    assert_eq!(
        env.wait_outcomes(users.len(), Duration::from_secs(30))
            .await,
        users.len()
    );
    assert!(
        eventually(Duration::from_secs(20), || env.committed()
            == ends(&offsets))
        .await,
        "committed to the end"
    );
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(m.paused.get(), 0);
    worker.stop().await.expect("clean stop");
    assert_eq!(env.dead_letter_count(), 0);
    assert!(env
        .outcomes()
        .iter()
        .all(|r| r.json()["status"] == "imported"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory under the system's temporary one.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "account-sync-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `.proto` files of a test, compiled as a producer's serializer has them.
fn proto_pool(files: &[(&str, &str)]) -> prost_reflect::DescriptorPool {
    struct Files(Vec<(String, String)>);
    impl protox::file::FileResolver for Files {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            match self.0.iter().find(|(n, _)| n == name) {
                Some((n, source)) => protox::file::File::from_source(n, source),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let owned = files
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    let mut compiler = protox::Compiler::with_file_resolver(Files(owned));
    for (name, _) in files {
        compiler
            .open_file(name)
            .expect("the test's .proto compiles");
    }
    compiler.descriptor_pool()
}

/// A Protobuf record framed as Confluent's serializer frames it: id, message index path, message.
fn framed_proto(
    id: u32,
    path: &[usize],
    desc: prost_reflect::MessageDescriptor,
    json: serde_json::Value,
) -> Vec<u8> {
    use protox::prost::Message;
    let message = prost_reflect::DynamicMessage::deserialize(desc, json).unwrap();
    let mut body = wire::encode_message_indexes(path);
    body.extend(message.encode_to_vec());
    framed(id, &body)
}

const PROFILE_PROTO: &str = r#"syntax = "proto3";
package common;
message Profile { string nick = 1; string face_url = 2; }
"#;

const SIGNUP_PROTO: &str = r#"syntax = "proto3";
package app;
import "common/profile.proto";
message Heartbeat { int64 at = 1; }
message Signup {
  string user_id = 1;
  common.Profile profile = 2;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_are_read_with_their_imports_by_the_proto_field_names() {
    let registry = start_registry(None).await;
    let common = registry.register(
        "common/profile.proto",
        PROFILE_PROTO,
        Some("PROTOBUF"),
        vec![],
    );
    assert!(common > 0);
    let reference = account_sync::devtools::registry::SchemaReference {
        name: "common/profile.proto".into(),
        subject: "common/profile.proto".into(),
        version: 1,
    };
    let id = registry.register(
        "signups-value",
        SIGNUP_PROTO,
        Some("PROTOBUF"),
        vec![reference],
    );
    let pool = proto_pool(&[
        ("common/profile.proto", PROFILE_PROTO),
        ("signup.proto", SIGNUP_PROTO),
    ]);
    let signup = pool.get_message_by_name("app.Signup").unwrap();
    let heartbeat = pool.get_message_by_name("app.Heartbeat").unwrap();
    let record = |user: &str, nick: &str| {
        let json = serde_json::json!({"userId": user, "profile": {"nick": nick, "faceUrl": "https://a.example/p.png"}});
        framed_proto(id, &[1], signup.clone(), json)
    };
    let inputs = vec![
        good("pb-1", record("pb-1", "one")),
        good("pb-2", record("pb-2", "two")),
        bad(
            "k-heartbeat",
            Some(framed_proto(id, &[0], heartbeat, serde_json::json!({"at": 5}))),
            Reason::exactly("no UserID at JSON pointer /user_id"),
        ),
        bad(
            "k-path",
            Some(framed(id, &[0x02, 0x0e, 0x0a, 0x02, b'x', b'y'])),
            Reason::exactly(format!(
                "payload does not decode with schema id {id}: the message index path [7] names no message of the schema"
            )),
        ),
        good("pb-3", record("pb-3", "three")),
    ];
    let url = registry.base_url();
    let flags = [
        "--input-format",
        "protobuf",
        "--schema-registry-url",
        &url,
        "--user-id-pointer",
        "/user_id",
        "--nick-pointer",
        "/profile/nick",
        "--face-url-pointer",
        "/profile/face_url",
    ];
    let (_env, outcomes) = run_and_check(&inputs, &flags).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["pb-1", "pb-2", "pb-3"]);
    assert_eq!(registry.id_lookups(), 1, "one schema id, asked for once");
}
