//! The binary as it runs in production, killed without warning: `account-sync run` as a child
//! process against `account-sync dev kafka` (another child) and the Chat API emulator, SIGKILLed
//! mid-stream and restarted. Every input offset must end with its outcome (zero lost); the
//! duplicates a kill causes are bounded by what the killed worker had not committed. The second
//! test runs a whole flow at debug log level and checks that neither the secret key nor a
//! UserSig ever shows in the logs, the metrics or the records.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use account_sync::chat::usersig;
use account_sync::chat::SecretKey;
use account_sync::devtools::emulator::Faults;
use common::emulator::{count, emulator_config, start_emulator, ADMIN, SDKAPPID, SECRET};
use common::events::{states, Stream, LIFECYCLE, ROUNDS};
use common::kafka::{
    committed, count_records, event_json, produce, produce_users, read_everything, skip_without,
    Broker, Needs, ReadRecord, TestKafka, Topics,
};
use common::process::{run_args, Proc, RUN_ARGS_SESSION};

/// How long after a kill the dead member is out of its group: its session (`run_args`: 4 s on
/// the mock, longer elsewhere) and a second.
fn dead_member_gone() -> Duration {
    Broker::current().dead_member_session(RUN_ARGS_SESSION) + Duration::from_secs(1)
}

/// Logs a milestone with the time since `t0`.
fn mark(t0: Instant, what: &str) {
    eprintln!("[{:>6.2}s] {what}", t0.elapsed().as_secs_f64());
}

/// Source (partition, offset) → outcome count.
fn tally(outcomes: &[ReadRecord]) -> BTreeMap<(i32, i64), usize> {
    let mut t = BTreeMap::new();
    for r in outcomes {
        *t.entry(r.source()).or_default() += 1;
    }
    t
}

/// What a kill left behind: the committed offsets, and how many input records already had an
/// outcome without being committed (the records a restart will process again).
struct KillSnapshot {
    committed: BTreeMap<i32, i64>,
    outcomes: usize,
    uncommitted_with_outcome: usize,
}

/// Reads the committed offsets and the outcome topic after a kill; checks that no committed
/// offset passes an input record without an outcome.
fn snapshot(
    brokers: &str,
    group: &str,
    topics: &Topics,
    partitions: i32,
    expected: &BTreeMap<(i32, i64), String>,
) -> KillSnapshot {
    let committed = committed(brokers, group, &topics.input, partitions);
    let outcomes = read_everything(brokers, &topics.outcomes);
    let have = tally(&outcomes);
    for (&p, &c) in &committed {
        let skipped: Vec<i64> = expected
            .keys()
            .filter(|&&(q, o)| q == p && o < c && !have.contains_key(&(q, o)))
            .map(|&(_, o)| o)
            .collect();
        assert!(
            skipped.is_empty(),
            "partition {p} committed to {c}, but {skipped:?} have no outcome"
        );
    }
    let uncommitted_with_outcome = have
        .keys()
        .filter(|&&(p, o)| o >= committed.get(&p).copied().unwrap_or(0))
        .count();
    KillSnapshot {
        committed,
        outcomes: outcomes.len(),
        uncommitted_with_outcome,
    }
}

/// Kills the worker three times mid-stream (SIGKILL: no drain, no commit, no leave) and restarts
/// it; the fourth run finishes. Zero lost; the duplicates are exactly the replays of what each
/// kill left uncommitted, and that is bounded by the records in flight plus one commit interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_and_restart_loses_nothing() {
    sigkill_and_restart_under("classic").await;
}

/// The same under the consumer group protocol (KIP-848): a killed member holds its partitions
/// until the broker's session timeout for consumer groups (6 s here) ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_and_restart_loses_nothing_under_the_consumer_protocol() {
    sigkill_and_restart_under("consumer").await;
}

/// The crash test's broker: `account-sync dev kafka` as a child process (the mock cluster as
/// users run it), or the external broker of the test run (`ACCOUNT_SYNC_TEST_BROKERS`) with
/// topics and a group of unique names.
struct CrashBroker {
    brokers: String,
    topics: Topics,
    group: String,
    /// The dev kafka process, when there is no external broker; stopped at the end.
    dev_kafka: Option<Proc>,
}

impl CrashBroker {
    async fn start(partitions: i32) -> CrashBroker {
        if Broker::current() != Broker::Mock {
            let kafka = TestKafka::start(1);
            return CrashBroker {
                brokers: kafka.brokers.clone(),
                topics: kafka.worker_topics(partitions).await,
                group: kafka.name("crash-group"),
                dev_kafka: None,
            };
        }
        let mut dev_kafka = Proc::spawn(
            "dev-kafka",
            &[
                "dev",
                "kafka",
                "--brokers",
                "1",
                "--topic",
                &format!("signups:{partitions}"),
                "--topic",
                "outcomes:3",
                "--topic",
                "dlq:1",
                "--consumer-group-session-timeout",
                "6s",
                "--consumer-group-heartbeat-interval",
                "500ms",
            ]
            .map(String::from),
            &[],
        );
        let brokers = dev_kafka.first_line();
        assert!(brokers.starts_with("127.0.0.1:"), "{brokers}");
        CrashBroker {
            brokers,
            topics: Topics {
                input: "signups".into(),
                outcomes: "outcomes".into(),
                dlq: "dlq".into(),
            },
            group: "crash-group".into(),
            dev_kafka: Some(dev_kafka),
        }
    }
}

async fn sigkill_and_restart_under(protocol: &str) {
    if protocol == "consumer" && skip_without(Needs::ConsumerProtocol) {
        return;
    }
    let t0 = Instant::now();
    let partitions = 3;
    let broker = CrashBroker::start(partitions).await;
    let (brokers, topics, group) = (
        broker.brokers.as_str(),
        &broker.topics,
        broker.group.as_str(),
    );
    // The emulator in this process: latency, so that work is in flight when the kill comes.
    let mut cfg = emulator_config();
    cfg.latency_ms = 20;
    cfg.latency_jitter_ms = 10;
    cfg.check_rate = 200.0;
    cfg.import_rate = 400.0;
    let emu = start_emulator(cfg).await;
    let api = emu.base_url();

    let users: Vec<String> = (0..3000).map(|i| format!("crash-{i:05}")).collect();
    let client = TestKafka {
        embedded: None,
        brokers: brokers.to_owned(),
        prefix: String::new(),
    };
    let offsets = produce_users(&client.producer(), &topics.input, partitions, &users).await;
    let parts = partitions as usize;
    let expected: BTreeMap<(i32, i64), String> = offsets
        .iter()
        .copied()
        .zip(
            (0..parts)
                .flat_map(|p| users.iter().skip(p).step_by(parts))
                .cloned(),
        )
        .collect();
    assert_eq!(expected.len(), users.len());
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for &(p, o) in expected.keys() {
        end.insert(p, end.get(&p).copied().unwrap_or(0).max(o + 1));
    }
    mark(t0, "crash: broker up, 3000 users produced");

    let max_in_flight = 300;
    let args = run_args(
        brokers,
        topics,
        group,
        &api,
        &[
            "--check-rate",
            "200",
            "--import-rate",
            "400",
            "--window-size",
            "50",
            "--max-events-in-flight",
            &max_in_flight.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--group-protocol",
            protocol,
        ],
    );
    let env = [("ACCOUNT_SYNC_SECRET_KEY", SECRET)];
    let count_outcomes = || count_records(brokers, &topics.outcomes);

    let mut snapshots: Vec<KillSnapshot> = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();
    for (run, kill_after_ms) in [700u64, 1300, 1000].into_iter().enumerate() {
        let mut worker = Proc::spawn(&format!("worker-{run}"), &args, &env);
        logs.push(worker.log.clone());
        // Kill only once this run has written something: mid-stream, not mid-start-up.
        let before = count_outcomes();
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_outcomes() <= before {
            assert!(worker.running(), "worker exited: {}", worker.logs());
            assert!(Instant::now() < deadline, "run {run} made no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        let status = worker.stop("-KILL", Duration::from_secs(10));
        assert!(!status.success(), "killed: {status:?}");
        // Anything the dead process had on the wire has landed by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = snapshot(brokers, group, topics, partitions, &expected);
        mark(
            t0,
            &format!(
                "crash: kill {} after {kill_after_ms} ms of progress: {} outcomes, committed {:?}, \
                 {} inputs with an outcome but not committed",
                run + 1,
                s.outcomes,
                s.committed,
                s.uncommitted_with_outcome
            ),
        );
        assert!(s.outcomes < users.len(), "kill {} came mid-stream", run + 1);
        snapshots.push(s);
        if !Broker::current().joins_beside_dead_members() {
            // The dead member's session ends before the next one joins.
            tokio::time::sleep(dead_member_gone()).await;
        }
    }

    let mut last = Proc::spawn("worker-final", &args, &env);
    logs.push(last.log.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if committed(brokers, group, &topics.input, partitions) == end {
            break;
        }
        assert!(last.running(), "final worker exited: {}", last.logs());
        assert!(
            Instant::now() < deadline,
            "not finished: committed {:?}, end {end:?}",
            committed(brokers, group, &topics.input, partitions)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mark(
        t0,
        "crash: the fourth run committed the end of every partition",
    );
    let status = last.stop("-TERM", Duration::from_secs(30));
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");

    let outcomes = read_everything(brokers, &topics.outcomes);
    let t = tally(&outcomes);
    for r in &outcomes {
        let v = r.json();
        let src = r.source();
        let user = expected
            .get(&src)
            .unwrap_or_else(|| panic!("outcome for a record that was never produced: {v}"));
        assert_eq!(v["user_id"], user.as_str());
        let status = v["status"].as_str().unwrap();
        assert!(
            status == "imported" || status == "already_imported",
            "{src:?}: {v}"
        );
    }
    let lost: Vec<&(i32, i64)> = expected.keys().filter(|k| !t.contains_key(k)).collect();
    assert!(
        lost.is_empty(),
        "{} input records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(
        count_records(brokers, &topics.dlq),
        0,
        "nothing dead-lettered"
    );
    assert!(users.iter().all(|u| emu.imported(u)));
    let duplicates = outcomes.len() - t.len();
    let replayable: usize = snapshots.iter().map(|s| s.uncommitted_with_outcome).sum();
    let stats = emu.stats();
    mark(
        t0,
        &format!(
            "crash: {} outcomes for {} inputs, {duplicates} duplicates (bound: {replayable} \
             uncommitted with an outcome at the kills); {} import calls",
            outcomes.len(),
            expected.len(),
            count(&stats.calls, "account_import")
        ),
    );
    // A duplicate is an input record that had its outcome but was not committed when a kill
    // came, so a restart processed it again.
    assert!(duplicates <= replayable, "{duplicates} > {replayable}");
    // What a kill leaves uncommitted: the records in flight (at most --max-events-in-flight)
    // plus those finished within the last commit interval (200 ms at ≤ 400 imports/s, replays
    // of already-imported users go faster: checks only) — a generous 400.
    for (i, s) in snapshots.iter().enumerate() {
        assert!(
            s.uncommitted_with_outcome <= max_in_flight + 400,
            "kill {}: {} records with an outcome were uncommitted",
            i + 1,
            s.uncommitted_with_outcome
        );
    }
    assert!(
        duplicates <= 3 * (max_in_flight + 400),
        "{duplicates} duplicates"
    );
    if let Some(mut dev_kafka) = broker.dev_kafka {
        dev_kafka.stop("-TERM", Duration::from_secs(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Tokens of the UserSig alphabet (url-safe base64 with `*`, `-`, `_`) at least 40 long: every
/// UserSig is one (a real one is ~200 characters).
fn sig_like_tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '*' | '-' | '_')))
        .filter(|t| t.len() >= 40)
        .collect()
}

/// Fails naming `what` when `text` holds the secret key, a `usersig=` query parameter, one of
/// the `candidates` (UserSigs the worker may have made) or any token that decodes as a UserSig.
fn assert_no_secret(what: &str, text: &str, candidates: &[String]) {
    assert!(!text.contains(SECRET), "{what} contains the secret key");
    assert!(
        !text.to_ascii_lowercase().contains("usersig="),
        "{what} contains a usersig= parameter"
    );
    for c in candidates {
        assert!(
            !text.contains(c.as_str()),
            "{what} contains the admin UserSig"
        );
    }
    for t in sig_like_tokens(text) {
        assert!(
            usersig::decode(t).is_err(),
            "{what} contains a token that decodes as a UserSig: {t}"
        );
    }
}

/// A whole flow at debug level (`--log-level debug` and `RUST_LOG=debug`): good users, one the
/// vendor rejects (dead-lettered), one record that does not decode, and API faults (transient
/// codes, HTTP 502, requests that hang past the timeout) so the error paths log too. Neither
/// the secret key nor the UserSig may appear in stderr, `/metrics`, `/readyz` or any record.
/// Creates, updates and deletes of the same users, killed mid-stream and restarted: every user's
/// account ends as its last event asks. (A replay after a kill makes a user's calls again from
/// the last committed offset, so the vendor may see part of a user's history twice, in order
/// each time; the end is the same.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_end_as_the_last_event_asks_after_a_sigkill() {
    let partitions = 2;
    let broker = CrashBroker::start(partitions).await;
    let (brokers, topics, group) = (
        broker.brokers.as_str(),
        &broker.topics,
        broker.group.as_str(),
    );
    let mut cfg = emulator_config();
    cfg.user_log = true;
    cfg.latency_ms = 20;
    cfg.latency_jitter_ms = 15;
    let emu = start_emulator(cfg).await;
    let users: Vec<String> = (0..60).map(|i| format!("life-{i:02}")).collect();
    let stream = Stream::of(&users, &ROUNDS, partitions);
    let client = TestKafka {
        embedded: None,
        brokers: brokers.to_owned(),
        prefix: String::new(),
    };
    // The first half of the rounds now, the rest after the kill: whatever the machine's speed,
    // the killed worker leaves work to the next one (and may have some of its own in flight).
    let producer = client.producer();
    let half = ROUNDS.len() / 2;
    stream
        .produce_rounds(&producer, &topics.input, 0..half)
        .await;
    let mut extra = LIFECYCLE.to_vec();
    extra.extend(["--window-size", "5", "--admin-listen", "127.0.0.1:0"]);
    let args = run_args(brokers, topics, group, &emu.base_url(), &extra);
    let env = [("ACCOUNT_SYNC_SECRET_KEY", SECRET)];
    let count_outcomes = || count_records(brokers, &topics.outcomes);

    let mut worker = Proc::spawn("worker-life", &args, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_outcomes() == 0 {
        assert!(worker.running(), "worker exited: {}", worker.logs());
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!worker.stop("-KILL", Duration::from_secs(10)).success());
    let end = stream
        .produce_rounds(&producer, &topics.input, half..ROUNDS.len())
        .await;
    if !Broker::current().joins_beside_dead_members() {
        tokio::time::sleep(dead_member_gone()).await;
    }

    let mut last = Proc::spawn("worker-life-final", &args, &env);
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(brokers, group, &topics.input, partitions) != end {
        assert!(last.running(), "final worker exited: {}", last.logs());
        assert!(Instant::now() < deadline, "not finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.stop("-TERM", Duration::from_secs(30)).success());
    assert_eq!(count_records(brokers, &topics.dlq), 0);
    for (user, events) in &stream.events {
        assert_eq!(
            &emu.profile(user),
            states(None, events).last().unwrap(),
            "{user}: the account is what its last event asks; calls {:?}",
            emu.user_log(user)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_usersig_in_logs_metrics_or_records() {
    let t0 = Instant::now();
    let kafka = TestKafka::start(1);
    let topics = kafka.worker_topics(2).await;
    let group = kafka.name("secrets");
    let mut cfg = emulator_config();
    cfg.sensitive_word = vec!["forbidden".into()];
    let emu = start_emulator(cfg).await;
    // Requests hang (past the 3.5 s request timeout) until a few have; then only 5 % transient
    // codes and 5 % HTTP 502 go on.
    let faults = |hang_rate| Faults {
        latency_ms: 5,
        latency_jitter_ms: 0,
        transient_error_rate: 0.05,
        http_502_rate: 0.05,
        hang_rate,
        hang_ms: 4_000,
        ..Faults::default()
    };
    emu.set_faults(faults(0.5));

    let mut records: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| {
            let u = format!("secret-flow-{i:03}");
            let nick = if i == 7 {
                "a forbidden nick".to_owned()
            } else {
                format!("n{i}")
            };
            (u.clone(), event_json(&u, &nick))
        })
        .collect();
    records.push(("garbage".into(), b"{not json".to_vec()));
    let as_refs: Vec<(Option<&str>, Option<&[u8]>)> = records
        .iter()
        .map(|(k, p)| (Some(k.as_str()), Some(p.as_slice())))
        .collect();
    produce(&kafka.producer(), &topics.input, None, &as_refs).await;

    let key_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("secrets-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let admin = {
        // A free port for the admin server (the worker does not print the one it picked).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (admin_s, key_s) = (admin.to_string(), key_file.to_string_lossy().into_owned());
    let validity = 86_400u64;
    let started_at = usersig::unix_now();
    let mut worker = Proc::spawn(
        "secrets-worker",
        &run_args(
            &kafka.brokers,
            &topics,
            &group,
            &emu.base_url(),
            &[
                "--admin-listen",
                &admin_s,
                "--secret-key-file",
                &key_s,
                "--usersig-validity",
                "1day",
                "--log-level",
                "debug",
                // librdkafka's own debug output, for the consumer and the producer.
                "--kafka-property",
                "debug=broker,cgrp,topic,protocol,msg",
            ],
        ),
        &[("RUST_LOG", "debug")],
    );

    // 150 outcomes (one failed), two dead letters (the rejected user, the undecodable record).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut hanging = true;
    while count_records(&kafka.brokers, &topics.outcomes) < 150
        || count_records(&kafka.brokers, &topics.dlq) < 2
    {
        if hanging && emu.stats().hung >= 3 {
            emu.set_faults(faults(0.0));
            hanging = false;
        }
        assert!(worker.running(), "worker exited: {}", worker.logs());
        assert!(
            Instant::now() < deadline,
            "flow did not finish: {}",
            worker.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mark(t0, "secrets: every record has its outcome / dead letter");
    let get = |path: &str| {
        let url = format!("http://{admin}{path}");
        async move {
            let r = reqwest::get(&url)
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (ms, metrics) = get("/metrics").await;
    let (rs, readyz) = get("/readyz").await;
    assert_eq!((ms, rs), (200, 200), "{readyz}");
    let status = worker.stop("-TERM", Duration::from_secs(30));
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    let finished_at = usersig::unix_now();
    let logs = worker.logs();
    std::fs::remove_file(&key_file).ok();

    let outcomes = read_everything(&kafka.brokers, &topics.outcomes);
    let dead = read_everything(&kafka.brokers, &topics.dlq);
    assert_eq!(outcomes.len(), 150);
    assert_eq!(dead.len(), 2);
    let stats = emu.stats();
    mark(
        t0,
        &format!(
            "secrets: {} log lines, {} bytes of metrics; emulator: {} transient, {} HTTP 502, {} hung",
            logs.lines().count(),
            metrics.len(),
            stats.transient_errors,
            stats.http_502,
            stats.hung
        ),
    );
    // The error paths did run, and at debug level.
    assert!(
        stats.http_502 > 0 && stats.transient_errors > 0 && stats.hung > 0,
        "{stats:?}"
    );
    assert!(logs.contains("DEBUG"), "debug logging is on");
    assert!(
        logs.contains("librdkafka"),
        "librdkafka's debug output is in the log"
    );
    assert!(
        logs.contains("hyper_util"),
        "the HTTP client's debug output is in the log"
    );
    // The client does not log retried attempts; the metrics count them.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("account_sync_api_requests_total")
                && l.contains(r#"result="retryable""#)
                && !l.ends_with(" 0")),
        "retried API failures are counted"
    );
    assert!(logs.contains("40005"), "the rejected account is logged");
    assert!(logs.contains("does not decode"), "the bad record is logged");

    // Every UserSig the worker can have made: issued in [start, finish] with that validity.
    let key = SecretKey::new(SECRET);
    let candidates: Vec<String> = (started_at - 2..=finished_at + 2)
        .map(|t| {
            usersig::generate(&key, SDKAPPID, ADMIN, t, validity)
                .expose()
                .to_owned()
        })
        .collect();
    // The detector itself works: a real UserSig in a log-like line is caught.
    let planted = format!(
        "url=http://x/v4/a?sdkappid=1&usersig={}&random=1",
        candidates[0]
    );
    assert!(sig_like_tokens(&planted)
        .iter()
        .any(|t| usersig::decode(t).is_ok()));

    assert_no_secret("stderr", &logs, &candidates);
    assert_no_secret("/metrics", &metrics, &candidates);
    assert_no_secret("/readyz", &readyz, &candidates);
    for r in outcomes.iter().chain(&dead) {
        let mut text = String::new();
        text.push_str(&String::from_utf8_lossy(
            r.key.as_deref().unwrap_or_default(),
        ));
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(
            r.payload.as_deref().unwrap_or_default(),
        ));
        for (k, v) in &r.headers {
            text.push_str(&format!("\n{k}: {v}"));
        }
        assert_no_secret("a record", &text, &candidates);
    }
}
