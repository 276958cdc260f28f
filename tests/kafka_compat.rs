//! Kafka compatibility (README, "Kafka compatibility"; `docs/kafka.md`): the consumer group
//! protocol, `--group-protocol classic|consumer` (KIP-848), and `--kafka-property` settings each
//! going to the clients of its kind.
//!
//! - settings that do not fit the group protocol are refused at start-up, naming them (`run`,
//!   `dlq replay`);
//! - a worker on the consumer protocol imports users end to end on the mock cluster with every
//!   request of the classic protocol switched off there, in both delivery modes;
//! - a clean start with a consumer-only and a producer-only property logs no `CONFWARN` (a start
//!   whose settings librdkafka does warn about shows that its warnings reach the log).

mod common;

use std::process::Command;
use std::time::Duration;

use account_sync::devtools::embedded_kafka::CONSUMER_GROUP_HEARTBEAT;
use account_sync::kafka::group_protocol::CLASSIC_ONLY;
use account_sync::worker::WorkerError;
use common::emulator::{emulator_config, SECRET};
use common::kafka::{ends, eventually, mock_env, read_all, wait_for_records, WorkerEnv};
use common::process::{run_args, Proc, BIN};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Runs the binary with `args` (the key in the environment, plus `env`) to its exit, which must
/// come before it connects anywhere; returns the exit code and stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
        .env_remove("ACCOUNT_SYNC_GROUP_PROTOCOL")
        .env_remove("ACCOUNT_SYNC_KAFKA_PROPERTIES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains(SECRET), "{err}");
    (out.status.code(), err)
}

/// `run` with nothing to connect to: a setting the worker refuses stops it before Kafka is asked.
const RUN: [&str; 7] = [
    "run",
    "--brokers",
    "127.0.0.1:9",
    "--sdkappid",
    "1400000000",
    "--admin-listen",
    "127.0.0.1:0",
];

#[test]
fn settings_that_do_not_fit_the_group_protocol_are_refused_at_start_up() {
    // Each classic protocol property under --group-protocol consumer.
    for key in CLASSIC_ONLY {
        let prop = format!("{key}=1000");
        let args = [
            &RUN[..],
            &["--group-protocol", "consumer", "--kafka-property", &prop],
        ]
        .concat();
        let (code, err) = refused(&args, &[]);
        assert_eq!(code, Some(1), "{key} accepted: {err}");
        assert!(
            err.contains(&format!("--kafka-property {key}"))
                && err.contains("not supported with --group-protocol consumer"),
            "{key}: {err}"
        );
    }
    // The same from the environment (as the Helm chart sets it).
    let (code, err) = refused(
        &RUN,
        &[
            ("ACCOUNT_SYNC_GROUP_PROTOCOL", "consumer"),
            (
                "ACCOUNT_SYNC_KAFKA_PROPERTIES",
                "fetch.wait.max.ms=30;session.timeout.ms=4000",
            ),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--kafka-property session.timeout.ms"), "{err}");
    // group.protocol itself is the flag's.
    let args = [&RUN[..], &["--kafka-property", "group.protocol=consumer"]].concat();
    let (code, err) = refused(&args, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--kafka-property group.protocol") && err.contains("--group-protocol"),
        "{err}"
    );
    // The consumer protocol's assignor under classic would be ignored: refused too.
    let args = [
        &RUN[..],
        &["--kafka-property", "group.remote.assignor=range"],
    ]
    .concat();
    let (code, err) = refused(&args, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--kafka-property group.remote.assignor"),
        "{err}"
    );
    // A property librdkafka does not know: named, its value (maybe a password) not echoed.
    let args = [&RUN[..], &["--kafka-property", "sasl.pasword=hunter2"]].concat();
    let (code, err) = refused(&args, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--kafka-property sasl.pasword") && !err.contains("hunter2"),
        "{err}"
    );
    // dlq replay shares the Kafka settings: the same refusal, its exit code for bad settings.
    let (code, err) = refused(
        &[
            "dlq",
            "replay",
            "--brokers",
            "127.0.0.1:9",
            "--group-protocol",
            "consumer",
            "--kafka-property",
            "heartbeat.interval.ms=300",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--kafka-property heartbeat.interval.ms"),
        "{err}"
    );
}

/// The classic protocol's requests, switched off on the mock: a member of the consumer protocol
/// needs none of them (a classic member could not join at all).
const CLASSIC_APIS: [RDKafkaApiKey; 4] = [
    RDKafkaApiKey::JoinGroup,
    RDKafkaApiKey::SyncGroup,
    RDKafkaApiKey::Heartbeat,
    RDKafkaApiKey::LeaveGroup,
];

/// A world on the mock cluster without the classic protocol's requests; `None` against an
/// external broker (that needs the mock).
async fn consumer_protocol_only() -> Option<WorkerEnv> {
    let env = mock_env(1, 3, emulator_config()).await?;
    let mock = env.kafka.embedded.as_ref().expect("the mock cluster");
    for api in CLASSIC_APIS {
        mock.set_api_versions(api, None).expect("API switched off");
    }
    Some(env)
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_the_consumer_protocol_imports_users_end_to_end() {
    let Some(env) = consumer_protocol_only().await else {
        return;
    };
    let users = users("kip848", 40);
    let offsets = env.produce_users(&users).await;
    let worker = env.worker(&["--group-protocol", "consumer"]);
    assert_eq!(env.wait_outcomes(40, Duration::from_secs(60)).await, 40);
    worker.stop().await.expect("clean stop");
    env.assert_all_imported(40, &offsets);
}

/// A fatal answer to the consumer protocol's heartbeat (here `GROUP_MAX_SIZE_REACHED`: a
/// deployment scaled beyond the broker's `group.consumer.max.size`; `GROUP_AUTHORIZATION_FAILED`
/// and `UNSUPPORTED_ASSIGNOR` are others) leaves librdkafka's consumer unable to go on: the worker
/// stops with the error instead of polling a dead consumer forever, and what it had done stays
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_group_error_stops_the_worker_with_it() {
    let Some(env) = consumer_protocol_only().await else {
        return;
    };
    let users = users("kip848-fatal", 20);
    let offsets = env.produce_users(&users).await;
    let worker = env.worker(&["--group-protocol", "consumer"]);
    assert_eq!(env.wait_outcomes(20, Duration::from_secs(60)).await, 20);
    let end = ends(&offsets);
    // (Only the partitions that got records: the others have nothing to commit.)
    let committed = || -> std::collections::BTreeMap<i32, i64> {
        let mut c = env.committed();
        c.retain(|p, _| end.contains_key(p));
        c
    };
    assert!(
        eventually(Duration::from_secs(60), || committed() == end).await,
        "committed {:?}, expected {end:?}",
        committed()
    );
    let mock = env.kafka.embedded.as_ref().expect("the mock cluster");
    mock.request_errors(
        CONSUMER_GROUP_HEARTBEAT,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_MAX_SIZE_REACHED],
    )
    .expect("error injected");
    match worker.stopped_by_itself(Duration::from_secs(60)).await {
        Err(WorkerError::Kafka(KafkaError::MessageConsumptionFatal(_))) => {}
        other => panic!("expected a fatal consumer error, got {other:?}"),
    }
    assert_eq!(committed(), end, "what was done stays committed");
}

/// Exactly-once on the consumer protocol: the transactions carry the group's metadata, a member
/// epoch instead of a generation. (The mock stores no transactional offsets: the worker's
/// committed-offset gauge says what it sent, as in `tests/exactly_once.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_on_the_consumer_protocol() {
    let Some(env) = consumer_protocol_only().await else {
        return;
    };
    let users = users("kip848-eos", 40);
    let offsets = env.produce_users(&users).await;
    let txn = env.kafka.name("txn");
    let worker = env.worker(&[
        "--group-protocol",
        "consumer",
        "--delivery",
        "exactly-once",
        "--transactional-id",
        &txn,
        "--transaction-linger",
        "50ms",
    ]);
    let (brokers, topic) = (env.kafka.brokers.clone(), env.topics.outcomes.clone());
    let outcomes = tokio::task::spawn_blocking(move || {
        read_all(&brokers, &topic, 40, Duration::from_secs(60), true)
    })
    .await
    .expect("reader");
    let metrics = worker.metrics.clone();
    worker.stop().await.expect("clean stop");
    let sources: std::collections::BTreeSet<_> = outcomes.iter().map(|r| r.source()).collect();
    assert_eq!((outcomes.len(), sources.len()), (40, 40), "each once");
    for (p, end) in ends(&offsets) {
        let sent = metrics
            .committed_offset
            .with_label_values(&[&p.to_string()])
            .get();
        assert_eq!(
            sent, end,
            "partition {p}: offsets sent with the transactions"
        );
    }
}

/// Starts the binary on `env` with `extra` flags, lets it import `users` end to end (so every
/// client was created and used: the input consumer, the producer, the budget coordinator's
/// producer, reader and admin client), stops it with SIGTERM and returns its log.
async fn log_of_a_run(env: &WorkerEnv, name: &str, users: &[String], extra: &[&str]) -> String {
    let admin = ["--admin-listen", "127.0.0.1:0"];
    let args = run_args(
        &env.kafka.brokers,
        &env.topics,
        &env.group,
        &env.emu.base_url(),
        &[&admin[..], extra].concat(),
    );
    let mut worker = Proc::spawn(name, &args, &[("ACCOUNT_SYNC_SECRET_KEY", SECRET)]);
    let before = env.outcome_count();
    env.produce_users(users).await;
    let n = before + users.len();
    let got = wait_for_records(
        &env.kafka.brokers,
        &env.topics.outcomes,
        n,
        Duration::from_secs(60),
    )
    .await;
    assert!(got >= n, "{got} of {n} outcomes: {}", worker.logs());
    let status = tokio::task::spawn_blocking(move || {
        let status = worker.stop("-TERM", Duration::from_secs(60));
        (status, worker.logs())
    })
    .await
    .expect("stopped");
    assert!(status.0.success(), "{}", status.1);
    status.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_start_logs_no_confwarn() {
    let env = WorkerEnv::start(2, emulator_config()).await;
    // librdkafka's warnings about its settings reach the worker's log: a SASL user name without
    // SASL is a CONFWARN of every client, whatever goes where (and harmless on a plaintext
    // connection).
    let log = log_of_a_run(
        &env,
        "confwarn",
        &users("warned", 5),
        &["--kafka-property", "sasl.username=account-sync-test"],
    )
    .await;
    assert!(
        log.contains("CONFWARN") && log.contains("sasl.username"),
        "librdkafka's warnings are in the log: {log}"
    );
    // A consumer-only property (and the classic session settings run_args gives, consumer-only
    // too), a producer-only one and one of both kinds: each goes only where it belongs.
    let log = log_of_a_run(
        &env,
        "clean",
        &users("clean", 5),
        &[
            "--kafka-property",
            "fetch.wait.max.ms=30",
            "--kafka-property",
            "linger.ms=2",
            "--kafka-property",
            "client.id=account-sync-test",
        ],
    )
    .await;
    assert!(log.contains("worker started"), "{log}");
    assert!(!log.contains("CONFWARN"), "{log}");
    // The exactly-once producer (a producer-only transaction property) starts clean too.
    let txn = env.kafka.name("txn");
    let log = log_of_a_run(
        &env,
        "clean-eos",
        &users("clean-eos", 5),
        &[
            "--delivery",
            "exactly-once",
            "--transactional-id",
            &txn,
            "--kafka-property",
            "transaction.timeout.ms=30000",
        ],
    )
    .await;
    assert!(!log.contains("CONFWARN"), "{log}");
}
