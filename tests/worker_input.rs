//! The worker's input edge end to end: records that do not decode are dead-lettered with the
//! documented headers and their original bytes, and never hold up the partition.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use account_sync::delivery::sink::headers;
use common::emulator::{count, emulator_config};
use common::kafka::{ends, event_json, produce, ReadRecord, WorkerEnv};

/// What a bad record must be dead-lettered with.
enum Reason {
    Exactly(&'static str),
    StartsWith(&'static str),
}

/// One input record of a test: key, payload, and `Some(reason)` when it must not decode.
struct Input {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    bad: Option<Reason>,
}

fn good(user: &str, payload: Vec<u8>) -> Input {
    Input {
        key: Some(user.as_bytes().to_vec()),
        payload: Some(payload),
        bad: None,
    }
}

fn bad(key: &str, payload: Option<Vec<u8>>, reason: Reason) -> Input {
    Input {
        key: Some(key.as_bytes().to_vec()),
        payload,
        bad: Some(reason),
    }
}

/// Produces `inputs` in order to partition 0 of a one-partition input topic, runs a worker with
/// `extra` flags until every record is accounted for, and checks: one outcome per good record and
/// none for a bad one, one dead letter per bad record with the documented headers and the original
/// key and payload, and the committed offset at the end of the partition.
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
    let n_good = inputs.len() - n_bad;

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
        match &input.bad {
            None => {
                assert!(
                    !dead.contains_key(&o),
                    "good record at offset {o} dead-lettered: {:?}",
                    dead[&o]
                );
                let v = &outcomes[&o];
                assert_eq!(v["status"], "imported", "offset {o}: {v}");
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
                    Reason::Exactly(want) => assert_eq!(got, *want, "offset {o}"),
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
    assert_eq!(env.committed(), end);
    let imports = count(&env.emu.stats().calls, "account_import");
    assert_eq!(imports, n_good as u64, "a bad record costs no API call");
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
            Reason::StartsWith("payload is not valid JSON: "),
        ),
        good("json-1", event_json("json-1", "one")),
        bad(
            "k-missing",
            Some(br#"{"Nick":"no id"}"#.to_vec()),
            Reason::Exactly("no UserID at JSON pointer /UserID"),
        ),
        bad(
            "k-empty",
            Some(br#"{"UserID":""}"#.to_vec()),
            Reason::Exactly("UserID is empty"),
        ),
        good("json-2", event_json("json-2", "two")),
        bad(
            "k-33",
            Some(format!(r#"{{"UserID":"{}"}}"#, "a".repeat(33)).into_bytes()),
            Reason::Exactly("UserID is 33 bytes, over the 32-byte limit"),
        ),
        bad(
            "k-space",
            Some(br#"{"UserID":"has space"}"#.to_vec()),
            Reason::Exactly("UserID contains characters outside [A-Za-z0-9_-]"),
        ),
        good("json-3", event_json("json-3", "three")),
        bad(
            "k-nick",
            Some(event_json("json-nick", &nick_501)),
            Reason::Exactly("Nick is 501 bytes, over the 500-byte limit"),
        ),
        bad(
            "k-tombstone",
            None,
            Reason::Exactly("record has no payload (tombstone)"),
        ),
        good("json-4", event_json("json-4", "four")),
        bad(
            "k-utf8",
            Some(b"{\"UserID\":\"\xff\xfe\"}".to_vec()),
            Reason::Exactly("payload is not valid UTF-8"),
        ),
        bad(
            "k-number",
            Some(br#"{"UserID":42}"#.to_vec()),
            Reason::Exactly("UserID at JSON pointer /UserID is not a string"),
        ),
        bad(
            "k-huge",
            Some(vec![b' '; 70_000]),
            Reason::Exactly("payload is 70000 bytes, over the 65536-byte limit"),
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
            Reason::Exactly("UserID contains characters outside [A-Za-z0-9_-]"),
        ),
        good("k1", b"plain-1".to_vec()),
        good("k2", b"  plain-2 \n".to_vec()),
        bad(
            "k-blank",
            Some(b"  \t ".to_vec()),
            Reason::Exactly("UserID is empty"),
        ),
        good("k4", b"plain-4".to_vec()),
        bad(
            "k-json",
            Some(br#"{"UserID":"plain-5"}"#.to_vec()),
            Reason::Exactly("UserID contains characters outside [A-Za-z0-9_-]"),
        ),
        bad(
            "k-33",
            Some("b".repeat(33).into_bytes()),
            Reason::Exactly("UserID is 33 bytes, over the 32-byte limit"),
        ),
        bad(
            "k-utf8",
            Some(b"plain-\xff".to_vec()),
            Reason::Exactly("payload is not valid UTF-8"),
        ),
        good("k8", b"plain-8".to_vec()),
        bad(
            "k-tombstone",
            None,
            Reason::Exactly("record has no payload (tombstone)"),
        ),
    ];
    let (_env, outcomes) = run_and_check(&inputs, &["--input-format", "plain"]).await;
    let users: Vec<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["plain-1", "plain-2", "plain-4", "plain-8"]);
}
