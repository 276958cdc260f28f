//! `account-sync dlq replay` as users run it (the binary as a child process): dead letters of a
//! real worker run replayed by filter with their original bytes; kills, clean stops and dry runs
//! followed by reruns that neither lose nor repeat what they must not; bad settings exit 2.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use account_sync::delivery::sink::{dead_letter_headers, headers, DeadLetter};
use account_sync::dlq::REPLAYED_FROM;
use account_sync::domain::{failure_class, SourcePos, Stage};
use common::emulator::emulator_config;
use common::kafka::{
    committed, count_records, event_json, produce, produce_with_headers, read_everything,
    skip_without, Broker, Needs, ReadRecord, TestKafka, Topics, WorkerEnv,
};
use common::process::Proc;
use rdkafka::message::OwnedHeaders;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// One replay setup: a broker, the worker's topics and group (the replay's group defaults to
/// `<group>-dlq-replay`).
struct Replays<'a> {
    kafka: &'a TestKafka,
    topics: &'a Topics,
    worker_group: &'a str,
}

impl<'a> Replays<'a> {
    fn new(kafka: &'a TestKafka, topics: &'a Topics, worker_group: &'a str) -> Self {
        Replays {
            kafka,
            topics,
            worker_group,
        }
    }

    /// `dlq replay` arguments plus `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "dlq",
            "replay",
            "--brokers",
            &self.kafka.brokers,
            "--group-id",
            self.worker_group,
            "--input-topic",
            &self.topics.input,
            "--dlq-topic",
            &self.topics.dlq,
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn spawn(&self, name: &str, extra: &[&str]) -> Proc {
        Proc::spawn(name, &self.args(extra), &[])
    }

    /// Runs a replay to its end; returns its exit status, stdout and stderr.
    fn run(&self, name: &str, extra: &[&str]) -> (ExitStatus, String, String) {
        let mut p = self.spawn(name, extra);
        let status = p.wait(Duration::from_secs(30), "of a replay");
        (status, p.stdout(), p.logs())
    }

    /// Runs a replay that must succeed; returns its stderr.
    fn run_ok(&self, name: &str, extra: &[&str]) -> String {
        let (status, _, log) = self.run(name, extra);
        assert!(status.success(), "{name}: {status:?}\n{log}");
        assert!(!log.contains("ERROR"), "{name} logged an error:\n{log}");
        log
    }

    /// The replay group's committed offsets on the dead-letter topic (default group unless given).
    fn committed(&self, group: Option<&str>, partitions: i32) -> BTreeMap<i32, i64> {
        let default = format!("{}-dlq-replay", self.worker_group);
        let group = group.unwrap_or(&default);
        committed(&self.kafka.brokers, group, &self.topics.dlq, partitions)
    }

    /// Every record of the input topic.
    fn input(&self) -> Vec<ReadRecord> {
        read_everything(&self.kafka.brokers, &self.topics.input)
    }

    /// The replayed records of the input topic, by the dead letter they came from.
    fn replayed(&self) -> BTreeMap<(i32, i64), Vec<ReadRecord>> {
        replayed_by_source(&self.input(), &self.topics.dlq)
    }

    /// The payloads of the replayed records.
    fn replayed_payloads(&self) -> BTreeSet<Vec<u8>> {
        let replayed = self.replayed();
        let all = replayed.values().flatten();
        all.filter_map(|x| x.payload.clone()).collect()
    }
}

/// The dead letter a replayed record came from, from its header: `(partition, offset)`.
fn replayed_from(r: &ReadRecord, dlq: &str) -> (i32, i64) {
    let v = r.header(REPLAYED_FROM);
    let rest = v
        .strip_prefix(&format!("{dlq}/"))
        .unwrap_or_else(|| panic!("{v} names {dlq}"));
    let (p, o) = rest.split_once('/').expect("partition/offset");
    (p.parse().unwrap(), o.parse().unwrap())
}

/// The replayed records of the input topic, by the dead letter they came from (several if replayed
/// more than once).
fn replayed_by_source(records: &[ReadRecord], dlq: &str) -> BTreeMap<(i32, i64), Vec<ReadRecord>> {
    let mut out: BTreeMap<(i32, i64), Vec<ReadRecord>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.headers.contains_key(REPLAYED_FROM))
    {
        out.entry(replayed_from(r, dlq))
            .or_default()
            .push(r.clone());
    }
    out
}

/// A number from the summary: the line `  {label}   N`.
fn summary(log: &str, label: &str) -> u64 {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("  {label} "))?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary line {label:?} in:\n{log}"))
}

/// A broker with an input topic (2 partitions) and a dead-letter topic of `dlq_partitions`.
async fn broker(dlq_partitions: i32) -> (TestKafka, Topics) {
    let kafka = TestKafka::start(1);
    let topics = Topics {
        input: kafka.name("signups"),
        outcomes: kafka.name("outcomes"),
        dlq: kafka.name("dlq"),
    };
    kafka.create_topic(&topics.input, 2).await;
    kafka.create_topic(&topics.dlq, dlq_partitions).await;
    (kafka, topics)
}

/// The payload of seeded dead letter `i` (unique, so that replays can be traced to it).
fn seed_payload(i: usize) -> Vec<u8> {
    event_json(&format!("seed-{i:05}"), &format!("nick-{i}"))
}

/// The headers the worker would write for seeded dead letter `i` failing at `stage` (decode ones
/// `invalid_input`, the others `rejected` 40005), made by the sink's own encoder.
fn seed_headers(i: usize, stage: Stage, input_topic: &str) -> OwnedHeaders {
    let (class, code) = match stage {
        Stage::Decode => (failure_class::INVALID_INPUT, 0),
        _ => (failure_class::REJECTED, 40005),
    };
    let dl = DeadLetter {
        stage,
        code,
        reason: format!("seeded {i}"),
        class,
        attempts: 1,
    };
    let src = SourcePos {
        partition: 0,
        offset: i as i64,
        epoch: 1,
    };
    let failed_at = account_sync::delivery::sink::rfc3339_millis(SystemTime::now());
    dead_letter_headers(&dl, input_topic, src, &failed_at)
}

/// Writes `n` dead letters ([`seed_payload`], [`seed_headers`]) round-robin over `partitions`
/// partitions of `topics.dlq`; `stage_of(i)` picks each one's stage. Returns each one's
/// (partition, offset).
async fn seed(
    kafka: &TestKafka,
    topics: &Topics,
    partitions: i32,
    n: usize,
    stage_of: impl Fn(usize) -> Stage,
) -> Vec<(i32, i64)> {
    let producer = kafka.producer();
    let mut positions = vec![(0, 0); n];
    for p in 0..partitions {
        let mine: Vec<usize> = (0..n).filter(|i| *i as i32 % partitions == p).collect();
        let keys: Vec<String> = mine.iter().map(|i| format!("seed-{i:05}")).collect();
        let payloads: Vec<Vec<u8>> = mine.iter().map(|&i| seed_payload(i)).collect();
        let records: Vec<_> = mine
            .iter()
            .zip(keys.iter().zip(&payloads))
            .map(|(&i, (k, v))| {
                let h = seed_headers(i, stage_of(i), &topics.input);
                (Some(k.as_str()), Some(v.as_slice()), Some(h))
            })
            .collect();
        let offsets = produce_with_headers(&producer, &topics.dlq, Some(p), &records).await;
        for (&i, pos) in mine.iter().zip(offsets) {
            positions[i] = pos;
        }
    }
    positions
}

/// Decode failures at even `i`, import failures at odd ones.
fn alternate(i: usize) -> Stage {
    if i % 2 == 0 {
        Stage::Decode
    } else {
        Stage::Import
    }
}

/// A broker whose dead-letter topic (one partition) holds ten dead letters, [`alternate`]ly
/// decode and import failures; returns their positions too.
async fn ten_alternating() -> (TestKafka, Topics, Vec<(i32, i64)>) {
    let (kafka, topics) = broker(1).await;
    let positions = seed(&kafka, &topics, 1, 10, alternate).await;
    (kafka, topics, positions)
}

/// A real worker run: good events, malformed events (decode) and accounts the vendor rejects
/// (40005, import). `--stage decode` replays exactly the malformed ones, with their original bytes
/// and the header; `--class rejected` (another group) the rejected ones; a rerun of the first
/// replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_dead_letters_replay_by_filter_with_original_bytes() {
    let mut cfg = emulator_config();
    cfg.sensitive_word = vec!["badword".into()];
    let env = WorkerEnv::start(1, cfg).await;
    let good: Vec<Vec<u8>> = (0..3)
        .map(|i| event_json(&format!("ok-{i}"), "fine"))
        .collect();
    let malformed: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        br#"{"Nick":"no user id"}"#.to_vec(),
        br#"{"UserID":"bad id with spaces"}"#.to_vec(),
    ];
    let rejected: Vec<Vec<u8>> = (0..2)
        .map(|i| event_json(&format!("rude-{i}"), "a badword nick"))
        .collect();
    let all: Vec<(Option<&str>, Option<&[u8]>)> = good
        .iter()
        .chain(&malformed)
        .chain(&rejected)
        .map(|p| (Some("k"), Some(p.as_slice())))
        .collect();
    produce(&env.kafka.producer(), &env.topics.input, Some(0), &all).await;

    let worker = env.worker(&[]);
    assert_eq!(env.wait_outcomes(5, Duration::from_secs(30)).await, 5);
    assert!(
        common::kafka::wait_for_records(
            &env.kafka.brokers,
            &env.topics.dlq,
            5,
            Duration::from_secs(10)
        )
        .await
            >= 5
    );
    worker.stop().await.expect("clean stop");
    let dead = env.dead_letters();
    assert_eq!(dead.len(), 5);
    let by_class = |c: &str| {
        dead.iter()
            .filter(|d| d.header(headers::CLASS) == c)
            .count()
    };
    assert_eq!((by_class("invalid_input"), by_class("rejected")), (3, 2));
    let input_before = count_records(&env.kafka.brokers, &env.topics.input);
    assert_eq!(input_before, 8);

    let r = Replays::new(&env.kafka, &env.topics, &env.group);
    let log = r.run_ok("decode", &["--stage", "decode"]);
    assert_eq!(
        [
            summary(&log, "read"),
            summary(&log, "matched"),
            summary(&log, "replayed"),
            summary(&log, "skipped by filter")
        ],
        [5, 3, 3, 2],
        "{log}"
    );
    assert_eq!(
        r.replayed_payloads(),
        malformed.iter().cloned().collect(),
        "the malformed ones, byte for byte"
    );
    for ((p, o), copies) in &r.replayed() {
        assert_eq!(copies.len(), 1);
        let d = &dead[*o as usize];
        assert_eq!(*p, 0);
        assert_eq!(d.header(headers::STAGE), "decode");
        assert_eq!((&copies[0].key, &copies[0].payload), (&d.key, &d.payload));
        assert_eq!(
            copies[0].headers.len(),
            1,
            "only the replayed-from header: {:?}",
            copies[0].headers
        );
    }
    assert_eq!(
        r.committed(None, 1),
        BTreeMap::from([(0, 5)]),
        "default group, committed to the end"
    );

    let log = r.run_ok(
        "rejected",
        &["--class", "rejected", "--code", "40005", "--group", "other"],
    );
    assert_eq!(summary(&log, "replayed"), 2, "{log}");
    let want: BTreeSet<Vec<u8>> = malformed.iter().chain(&rejected).cloned().collect();
    assert_eq!(r.replayed_payloads(), want);

    let log = r.run_ok("rerun", &["--stage", "decode"]);
    assert_eq!(summary(&log, "read"), 0, "{log}");
    assert_eq!(
        count_records(&env.kafka.brokers, &env.topics.input),
        input_before + 5
    );
}

/// A replay slow enough to be stopped mid-way on any machine: librdkafka's queue holds at most 50
/// records, and a batch waits 20 ms (`linger.ms`) before it is sent, so the replay cannot go
/// faster than 2,500 records a second — 12,000 take at least 4.8 s, and a half or three
/// quarters left take seconds, whatever the machine's speed. (With the queue alone, the pace
/// was the machine's: about 4,000 a second here, and a fast machine could finish before the
/// test stopped it.)
const SLOW: [&str; 4] = [
    "--kafka-property",
    "queue.buffering.max.messages=50",
    "--kafka-property",
    "linger.ms=20",
];

impl Replays<'_> {
    /// Starts a [`SLOW`] replay and waits (polling every 20 ms, at most 30 s) until `cond` holds;
    /// panics if the replay exits first.
    fn slow_replay_until(&self, name: &str, what: &str, mut cond: impl FnMut() -> bool) -> Proc {
        let mut p = self.spawn(name, &SLOW);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(p.running(), "exited before {what}: {}", p.logs());
            assert!(
                Instant::now() < deadline,
                "no {what} within 30 s: {}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(p.running(), "finished before {what}: stop it earlier");
        p
    }
}

/// A broker whose dead-letter topic (3 partitions) holds many decode failures (12,000, or
/// [`Broker::many_records`]); returns their positions too.
async fn many_dead_letters() -> (TestKafka, Topics, Vec<(i32, i64)>) {
    let (kafka, topics) = broker(3).await;
    let n = Broker::current().many_records();
    let positions = seed(&kafka, &topics, 3, n, |_| Stage::Decode).await;
    (kafka, topics, positions)
}

/// Positions below the committed offsets.
fn below(positions: &[(i32, i64)], committed: &BTreeMap<i32, i64>) -> BTreeSet<(i32, i64)> {
    positions
        .iter()
        .filter(|(p, o)| *o < committed.get(p).copied().unwrap_or(0))
        .copied()
        .collect()
}

/// SIGKILL mid-replay (no drain, no final commit), then a rerun: every dead letter is replayed,
/// with its bytes; what was committed at the kill is not replayed again, and the only duplicates
/// are records that were acknowledged (in the topic) but not yet committed when the kill came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replay_loses_nothing_and_repeats_only_what_was_not_committed() {
    let (kafka, topics, positions) = many_dead_letters().await;
    let n = positions.len();
    let r = Replays::new(&kafka, &topics, "kill");
    let mut p = r.slow_replay_until("killed", "half replayed and committed once", || {
        count_records(&kafka.brokers, &topics.input) >= n / 2 && !r.committed(None, 3).is_empty()
    });
    assert!(!p.stop("-KILL", Duration::from_secs(10)).success());
    // Whatever the dead process had on the wire has landed by now.
    std::thread::sleep(Duration::from_millis(300));
    let at_kill = r.committed(None, 3);
    let before = r.replayed();
    assert!(before.len() < n, "killed mid-way: {} of {n}", before.len());
    let committed = below(&positions, &at_kill);
    assert!(
        committed.iter().all(|pos| before.contains_key(pos)),
        "committed only after the broker acknowledged"
    );

    let log = r.run_ok("after-kill", &[]);
    assert_eq!(
        summary(&log, "read") as usize,
        n - committed.len(),
        "resumed at the commit"
    );
    let after = r.replayed();
    let mut duplicates = 0;
    for (i, pos) in positions.iter().enumerate() {
        let copies = after.get(pos).map_or(&[][..], Vec::as_slice);
        match copies.len() {
            1 => {}
            2 => {
                assert!(
                    !committed.contains(pos) && before.contains_key(pos),
                    "{pos:?} replayed twice, but it was committed or not acknowledged at the kill"
                );
                duplicates += 1;
            }
            c => panic!("dead letter {pos:?} replayed {c} times"),
        }
        assert!(copies
            .iter()
            .all(|c| c.payload.as_deref() == Some(&seed_payload(i)[..])));
    }
    eprintln!(
        "killed after {} replayed ({} committed); {duplicates} replayed again",
        before.len(),
        committed.len()
    );
}

/// SIGTERM mid-replay: the sends in flight finish and are committed, exit 0; exactly what was
/// replayed is committed, so the rerun replays each remaining dead letter once and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_commits_what_it_replayed_and_a_rerun_repeats_nothing() {
    let (kafka, topics, positions) = many_dead_letters().await;
    let n = positions.len();
    let r = Replays::new(&kafka, &topics, "term");
    let mut p = r.slow_replay_until("stopped", "a quarter replayed", || {
        count_records(&kafka.brokers, &topics.input) >= n / 4
    });
    let status = p.stop("-TERM", Duration::from_secs(20));
    let log = p.logs();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}\n{log}");
    assert!(log.contains("stopped            by a signal"), "{log}");
    let committed = below(&positions, &r.committed(None, 3));
    let before = r.replayed();
    assert!(committed.len() < n, "stopped mid-way");
    let replayed: BTreeSet<(i32, i64)> = before.keys().copied().collect();
    let odd: Vec<_> = replayed.symmetric_difference(&committed).take(5).collect();
    assert!(
        odd.is_empty(),
        "replayed exactly what is committed: {} replayed, {} committed, e.g. {odd:?} in one only",
        replayed.len(),
        committed.len()
    );
    assert_eq!(summary(&log, "replayed") as usize, committed.len());

    let log = r.run_ok("after-stop", &[]);
    assert_eq!(summary(&log, "replayed") as usize, n - committed.len());
    let after = r.replayed();
    assert_eq!(after.len(), n, "every dead letter replayed");
    assert!(after.values().all(|c| c.len() == 1), "none replayed twice");
}

/// A dry run lists the matching dead letters on stdout and writes and commits nothing (a secret
/// in a Kafka property is not printed); the real run after it replays everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_but_writes_and_commits_nothing() {
    let (kafka, topics, positions) = ten_alternating().await;
    let r = Replays::new(&kafka, &topics, "dry");
    let secret = "sasl.password=hunter2-not-for-logs";
    let (status, out, log) = r.run(
        "dry",
        &["--dry-run", "--stage", "import", "--kafka-property", secret],
    );
    assert!(status.success(), "{log}");
    assert!(
        !out.contains("hunter2") && !log.contains("hunter2"),
        "{out}\n{log}"
    );
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(listed.len(), 5, "{out}");
    for (line, i) in listed.iter().zip((1..10).step_by(2)) {
        let want = format!(
            "{}/0/{} stage=import class=rejected code=40005",
            topics.dlq, positions[i].1
        );
        assert!(line.starts_with(&want), "{line}");
        assert!(line.contains(&format!("key=\"seed-{i:05}\"")), "{line}");
    }
    assert_eq!(summary(&log, "would replay"), 5, "{log}");
    // The time filters read the failed-at header: every seeded dead letter failed just now.
    for (window, want) in [("--since", 10), ("--until", 0)] {
        let log = r.run_ok("dry-time", &["--dry-run", window, "1h"]);
        assert_eq!(summary(&log, "would replay"), want, "{window} 1h: {log}");
    }
    assert_eq!(
        count_records(&kafka.brokers, &topics.input),
        0,
        "nothing written"
    );
    assert!(r.committed(None, 1).is_empty(), "nothing committed");

    let log = r.run_ok("real", &[]);
    assert_eq!(summary(&log, "replayed"), 10, "{log}");
    assert_eq!(r.replayed().len(), 10);
}

/// `--limit 2` replays the first two matching dead letters and commits just past the second; the
/// next run goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_replays_at_most_n_and_the_next_run_goes_on_after_them() {
    let (kafka, topics, positions) = ten_alternating().await;
    let r = Replays::new(&kafka, &topics, "limit");
    let log = r.run_ok("limit", &["--stage", "decode", "--limit", "2"]);
    assert_eq!(summary(&log, "replayed"), 2, "{log}");
    assert!(log.contains("at --limit"), "{log}");
    let first = r.replayed();
    assert_eq!(
        first.keys().copied().collect::<Vec<_>>(),
        [positions[0], positions[2]]
    );
    assert_eq!(
        r.committed(None, 1),
        BTreeMap::from([(0, positions[2].1 + 1)])
    );

    let log = r.run_ok("rest", &["--stage", "decode"]);
    assert_eq!(
        (summary(&log, "read"), summary(&log, "replayed")),
        (7, 3),
        "{log}"
    );
    let all = r.replayed();
    let decode: Vec<(i32, i64)> = positions.iter().copied().step_by(2).collect();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), decode);
    assert!(all.values().all(|c| c.len() == 1));
}

/// A record the producer refuses for good (larger than its message.max.bytes): exit 1 naming
/// it, the records before it replayed and committed, nothing from it on; a rerun without the
/// limit replays the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_fails_for_good_exits_1_and_commits_nothing_past_it() {
    let (kafka, topics) = broker(1).await;
    let big = vec![b'x'; 5000];
    let payloads: Vec<Vec<u8>> = (0..4)
        .map(|i| if i == 2 { big.clone() } else { seed_payload(i) })
        .collect();
    let records: Vec<_> = payloads
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                Some("k"),
                Some(v.as_slice()),
                Some(seed_headers(i, Stage::Decode, &topics.input)),
            )
        })
        .collect();
    produce_with_headers(&kafka.producer(), &topics.dlq, Some(0), &records).await;
    let r = Replays::new(&kafka, &topics, "fail");
    let (status, _, log) = r.run("fails", &["--kafka-property", "message.max.bytes=2000"]);
    assert_eq!(status.code(), Some(1), "{log}");
    let want = format!("replaying dead letter {}/0/2 failed", topics.dlq);
    assert!(log.contains(&want), "{log}");
    let replayed = r.replayed();
    assert_eq!(
        replayed.keys().copied().collect::<Vec<_>>(),
        [(0, 0), (0, 1)]
    );
    assert_eq!(
        r.committed(None, 1),
        BTreeMap::from([(0, 2)]),
        "not past the failed one"
    );

    let log = r.run_ok("retry", &[]);
    assert_eq!(summary(&log, "read"), 2, "{log}");
    let replayed = r.replayed();
    assert_eq!(replayed.len(), 4);
    assert!(replayed.values().all(|c| c.len() == 1));
    assert_eq!(replayed[&(0, 2)][0].payload.as_deref(), Some(&big[..]));
}

/// Bad settings exit 2 before anything is read, and the message names the setting; the topics
/// come from the worker's environment variables too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_exit_2_naming_the_setting() {
    let (kafka, topics) = broker(1).await;
    seed(&kafka, &topics, 1, 3, |_| Stage::Decode).await;
    let r = Replays::new(&kafka, &topics, "bad");
    for (extra, name) in [
        (&["--stage", "send"][..], "--stage"),
        (&["--class", "flaky"], "--class"),
        (&["--code", "many"], "--code"),
        (&["--limit", "0"], "--limit"),
        (&["--since", "yesterday"], "--since"),
        (&["--since", "1h", "--until", "2h"], "--since"),
        (&["--to", topics.dlq.as_str()], "--to"),
        (&["--to", "no-such-topic"], "--to"),
        (&["--group", "bad"], "--group"),
        (
            &["--kafka-property", "enable.idempotence=false"],
            "enable.idempotence",
        ),
    ] {
        let (status, _, log) = r.run("bad", extra);
        assert_eq!(status.code(), Some(2), "{extra:?}: {log}");
        assert!(log.contains(name), "{extra:?} names {name}: {log}");
    }
    let env_only = ["dlq", "replay", "--input-topic", &topics.input].map(String::from);
    for (var, value, name) in [
        ("ACCOUNT_SYNC_BROKERS", " ", "--brokers"),
        ("ACCOUNT_SYNC_DLQ_TOPIC", "no-such-dlq", "--dlq-topic"),
    ] {
        let brokers = if var == "ACCOUNT_SYNC_BROKERS" {
            value
        } else {
            &kafka.brokers
        };
        let env = [("ACCOUNT_SYNC_BROKERS", brokers), (var, value)];
        let mut p = Proc::spawn("bad-env", &env_only, &env);
        let status = p.wait(Duration::from_secs(30), "of a replay");
        assert_eq!(status.code(), Some(2), "{var}: {}", p.logs());
        assert!(p.logs().contains(name), "{var} names {name}: {}", p.logs());
    }
    assert_eq!(count_records(&kafka.brokers, &topics.input), 0);
    assert!(r.committed(None, 1).is_empty());
}

/// While the broker holds back its acknowledgements (retriable produce errors), nothing is
/// committed, though everything has been read; at no time is more committed than the input topic
/// holds; once the acks come, everything is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_committed_before_the_broker_acknowledges() {
    if skip_without(Needs::FaultInjection) {
        return;
    }
    let (kafka, topics) = broker(1).await;
    seed(&kafka, &topics, 1, 10, |_| Stage::Decode).await;
    let k = kafka
        .embedded
        .as_ref()
        .expect("the mock cluster injects errors");
    // librdkafka retries these with backoff (100 ms doubling to 1 s): seconds without an ack.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 12];
    k.request_errors(RDKafkaApiKey::Produce, &errors).unwrap();
    let r = Replays::new(&kafka, &topics, "acks");
    let started = Instant::now();
    let mut p = r.spawn("held", &[]);
    let mut first_ack = None;
    while p.running() {
        // Committed first: whatever is committed must already be in the topic when it is counted.
        let c: i64 = r.committed(None, 1).values().sum();
        let n = count_records(&kafka.brokers, &topics.input) as i64;
        assert!(c <= n, "{c} committed, {n} acknowledged");
        if n > 0 && first_ack.is_none() {
            first_ack = Some(started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{}", p.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_ack = first_ack.unwrap_or_else(|| started.elapsed());
    eprintln!("first ack after {first_ack:?}");
    assert!(
        first_ack > Duration::from_millis(1500),
        "the acks were held past a commit interval (1 s): {first_ack:?}"
    );
    assert!(p.wait(Duration::from_secs(1), "").success(), "{}", p.logs());
    assert_eq!(r.committed(None, 1), BTreeMap::from([(0, 10)]));
    let replayed = r.replayed();
    assert_eq!(replayed.len(), 10);
    assert!(
        replayed.values().all(|c| c.len() == 1),
        "idempotent: no duplicates from the retries"
    );
}
