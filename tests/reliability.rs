//! At-least-once under injected faults, in process: Kafka request errors and a broker outage (the
//! mock cluster's `request_errors` / `broker_down`), a delivery that fails for good, Chat API
//! faults (transient codes, HTTP 502, hanging requests), systemic faults (wrong key, edition
//! limit) and rebalances with workers joining and leaving. Each test reads the outcome and
//! dead-letter topics back and checks that every input offset has its record: zero lost. The
//! crash (SIGKILL) and secrets tests run the binary as a child process: `tests/crash.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_sync::chat::{Api, SecretKey};
use account_sync::devtools::emulator::Faults;
use account_sync::observe::metrics::Metrics;
use account_sync::worker::WorkerError;
use common::emulator::{count, emulator_config, start_emulator, SECRET};
use common::kafka::{
    admin_get, eventually, group_flags, mock_env, poll_until, produce_users, read_everything,
    skip_without, Broker, Needs, ReadRecord, RunningWorker, WorkerEnv,
};
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Ends the test process when a test panics while a worker may still run. Without it a failed
/// assertion can hang the run instead of failing it: the test's mock cluster is dropped while the
/// worker task is still stopping, and the worker's final synchronous offset commit then waits
/// forever for a group coordinator that no longer exists (the runtime's shutdown waits for it).
/// Declared first in a test, so dropped last. [`ExitOnPanic::arm`] also writes each panic
/// straight to the process's stderr: the test harness captures the usual panic message and
/// prints it only when the test returns, which an exit from here never does. The exit names the
/// failed test (the harness names each test's thread after it), since the harness's own summary
/// never comes; the tests of this binary that had not finished yet do not run (CI runs
/// `cargo test --no-fail-fast`, so the other test binaries still do).
struct ExitOnPanic;

impl ExitOnPanic {
    fn arm() -> Self {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                use std::io::Write;
                let thread = std::thread::current();
                let name = thread.name().unwrap_or("?");
                // Not eprintln!: that goes to the harness's capture, lost on exit.
                let _ = writeln!(std::io::stderr(), "thread '{name}' {info}");
                default(info);
            }));
        });
        ExitOnPanic
    }
}

impl Drop for ExitOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            use std::io::Write;
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("(unnamed thread)");
            // Not eprintln!: that goes to the harness's capture, lost on exit.
            let _ = writeln!(
                std::io::stderr(),
                "test {name} FAILED (tests/reliability.rs); exiting now rather than hang in \
                 teardown: the tests of this binary still running or not started yet do not run"
            );
            std::process::exit(101);
        }
    }
}

/// Logs a milestone of a test with the time since `t0` (timings for the test log).
fn mark(t0: Instant, what: &str) {
    eprintln!("[{:>6.2}s] {what}", t0.elapsed().as_secs_f64());
}

/// `n` UserIDs `{prefix}-00000`, ….
fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Produces `users` (round-robin over the input partitions, as `produce_users` does) and returns
/// which UserID each input (partition, offset) holds.
async fn produce(env: &WorkerEnv, users: &[String]) -> BTreeMap<(i32, i64), String> {
    produce_with(&env.kafka.producer(), env, users).await
}

/// [`produce`] with a given producer (a test producing many batches reuses one).
async fn produce_with(
    producer: &FutureProducer,
    env: &WorkerEnv,
    users: &[String],
) -> BTreeMap<(i32, i64), String> {
    let offsets = produce_users(producer, &env.topics.input, env.partitions, users).await;
    // `produce_users` produces partition by partition, each in input order.
    let parts = env.partitions as usize;
    let ordered = (0..parts).flat_map(|p| users.iter().skip(p).step_by(parts));
    let expected: BTreeMap<(i32, i64), String> =
        offsets.into_iter().zip(ordered.cloned()).collect();
    assert_eq!(expected.len(), users.len(), "every record produced once");
    expected
}

/// One past the last input offset of every partition.
fn ends_of(expected: &BTreeMap<(i32, i64), String>) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for &(p, o) in expected.keys() {
        let e = out.entry(p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    out
}

/// What the outcome topic says about the input.
struct Tally {
    /// Outcome JSON values per input (partition, offset), in the order they were read.
    by_source: BTreeMap<(i32, i64), Vec<Value>>,
    /// Outcome records beyond the first of their input record.
    duplicates: usize,
}

/// Checks that every outcome names an input record and its UserID, and that every input record
/// has at least one outcome: zero lost. Returns the tally (duplicates counted, not refused).
fn assert_none_lost(expected: &BTreeMap<(i32, i64), String>, outcomes: &[ReadRecord]) -> Tally {
    let mut by_source: BTreeMap<(i32, i64), Vec<Value>> = BTreeMap::new();
    for r in outcomes {
        let v = r.json();
        let src = r.source();
        let user = expected
            .get(&src)
            .unwrap_or_else(|| panic!("outcome for {src:?}, which is not an input record: {v}"));
        assert_eq!(v["user_id"], user.as_str(), "outcome of input {src:?}");
        assert_eq!(r.key.as_deref(), Some(user.as_bytes()), "key of {v}");
        by_source.entry(src).or_default().push(v);
    }
    let lost: Vec<&(i32, i64)> = expected
        .keys()
        .filter(|k| !by_source.contains_key(k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} input records have no outcome (lost), e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    Tally {
        duplicates: outcomes.len() - by_source.len(),
        by_source,
    }
}

/// At-least-once's core rule: no committed offset ever passes a record without its outcome.
fn assert_commit_covered(
    expected: &BTreeMap<(i32, i64), String>,
    committed: &BTreeMap<i32, i64>,
    outcomes: &[ReadRecord],
) {
    let have: std::collections::BTreeSet<(i32, i64)> =
        outcomes.iter().map(ReadRecord::source).collect();
    for (&p, &c) in committed {
        let missing: Vec<i64> = expected
            .keys()
            .filter(|&&(q, o)| q == p && o < c && !have.contains(&(q, o)))
            .map(|&(_, o)| o)
            .collect();
        assert!(
            missing.is_empty(),
            "partition {p} committed to {c}, yet offsets {missing:?} have no outcome: skipped"
        );
    }
}

/// Every status equals `want` (all of them are first outcomes or replays of a user imported).
fn assert_statuses(tally: &Tally, allowed: &[&str]) {
    for (src, vs) in &tally.by_source {
        for v in vs {
            let s = v["status"].as_str().unwrap();
            assert!(allowed.contains(&s), "input {src:?}: status {s} ({v})");
        }
    }
}

/// Polls `/readyz` every 50 ms until `want(status, body)` or `within`; returns the last answer.
async fn readyz_until(
    addr: SocketAddr,
    within: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let probe = || admin_get(addr, "/readyz");
    let done = |(s, b): &(u16, String)| want(*s, b);
    poll_until(within, Duration::from_millis(50), probe, done)
        .await
        .0
}

/// Waits until the group has committed the end of every input partition.
async fn wait_committed(env: &WorkerEnv, end: &BTreeMap<i32, i64>, within: Duration) {
    assert!(
        eventually(within, || env.committed() == *end).await,
        "committed {:?}, input ends {end:?}",
        env.committed()
    );
}

/// The end of a run: waits until the group has committed the end of every input partition,
/// stops `worker` (panicking with `why` if the stop fails), and reads the outcome topic back,
/// checking that nothing was lost.
async fn finish_run(
    env: &WorkerEnv,
    expected: &BTreeMap<(i32, i64), String>,
    worker: RunningWorker,
    within: Duration,
    why: &str,
) -> (Vec<ReadRecord>, Tally) {
    wait_committed(env, &ends_of(expected), within).await;
    worker.stop().await.expect(why);
    let outcomes = env.outcomes();
    let tally = assert_none_lost(expected, &outcomes);
    (outcomes, tally)
}

// ---------------------------------------------------------------------------------------------
// Broker faults (mock cluster)

/// Retriable errors injected into Produce, Fetch and OffsetCommit mid-run: librdkafka retries
/// them (the producer is idempotent), the worker keeps going, nothing is lost or duplicated.
///
/// Mid-run by construction: the worker finishes a first part of the input; then, with the API
/// held (nothing can finish), the rest is produced and the errors injected; the API is released
/// after. The test used to inject after the 150th outcome and assume the input was not done yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_broker_errors_on_produce_fetch_and_commit_lose_nothing() {
    let _exit_on_panic = ExitOnPanic::arm();
    let mut cfg = emulator_config();
    cfg.latency_ms = 5;
    cfg.check_rate = 400.0;
    cfg.import_rate = 800.0;
    let Some(env) = mock_env(3, 6, cfg).await else {
        return;
    };
    let users = users("rq", 1500);
    let (first, rest) = users.split_at(300);
    let mut expected = produce(&env, first).await;
    let worker = env.worker(&[
        // Injected errors hit the next requests of their kind from any client: the budget
        // coordinator's leases (Produce) must not take the ones meant for the outcomes (one
        // worker needs no budget topic).
        "--budget-split",
        "partitions",
        "--check-rate",
        "400",
        "--import-rate",
        "800",
        "--window-size",
        "50",
        "--max-events-in-flight",
        "300",
        // One produce request in flight per connection: the mock cluster does not check the
        // sequence numbers of an idempotent producer without a transactional.id, so when a
        // request fails (injected) and the next one in flight succeeds, librdkafka infers — as
        // it may from a real broker, which rejects out-of-order sequences — that the first was
        // written too, and acknowledges records the mock never stored (see the README's mock
        // broker notes). With one request in flight no later request can succeed first.
        "--kafka-property",
        "max.in.flight.requests.per.connection=1",
    ]);
    let m = worker.metrics.clone();
    wait_committed(&env, &ends_of(&expected), Duration::from_secs(60)).await;
    env.emu.hold();
    expected.extend(produce(&env, rest).await);

    use RDKafkaRespErr::*;
    let k = env.kafka.embedded.as_ref().expect("mock cluster");
    let produce_errors = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ]
    .repeat(5);
    k.request_errors(RDKafkaApiKey::Produce, &produce_errors)
        .unwrap();
    k.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ]
        .repeat(5),
    )
    .unwrap();
    k.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ]
        .repeat(4),
    )
    .unwrap();
    let at_injection = env.outcome_count();
    eprintln!("broker errors injected after {at_injection} outcomes");
    assert_eq!(at_injection, first.len(), "injected mid-run");
    env.emu.release();

    let (outcomes, tally) = finish_run(
        &env,
        &expected,
        worker,
        Duration::from_secs(60),
        "retriable broker errors never become delivery failures",
    )
    .await;
    eprintln!(
        "retriable broker errors: {} outcomes, {} duplicates, {} consumer errors",
        outcomes.len(),
        tally.duplicates,
        m.consumer_errors.get()
    );
    assert_eq!(
        tally.duplicates, 0,
        "one worker, no rebalance: the idempotent producer's retries add no duplicate"
    );
    assert_statuses(&tally, &["imported"]);
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.emu.stats().imported_accounts, users.len() as u64);
}

/// Broker 1 (leader of a third of the partitions) goes down for 2 s, then broker 2: produce
/// requests queue and are retried, fetches of their partitions stall, and the worker picks up
/// when they return. Nothing lost; the run ends with every offset committed and a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_going_down_and_up_mid_run_lose_nothing() {
    let _exit_on_panic = ExitOnPanic::arm();
    let mut cfg = emulator_config();
    cfg.latency_ms = 5;
    cfg.check_rate = 400.0;
    cfg.import_rate = 800.0;
    let Some(env) = mock_env(3, 6, cfg).await else {
        return;
    };
    let users = users("down", 1500);
    let expected = produce(&env, &users).await;
    let max_in_flight = 300;
    // 200 imports/s: the 1500 users take ≥ 7.5 s, so both outages fall mid-run.
    let worker = env.worker(&[
        "--check-rate",
        "100",
        "--import-rate",
        "200",
        "--window-size",
        "50",
        "--max-events-in-flight",
        &max_in_flight.to_string(),
    ]);
    let m = worker.metrics.clone();
    assert!(env.wait_outcomes(100, Duration::from_secs(30)).await >= 100);

    let k = env.kafka.embedded.as_ref().expect("mock cluster");
    let mut during = Vec::new();
    for broker in [1, 2] {
        k.broker_down(broker).unwrap();
        let before = m.outcomes.with_label_values(&["imported"]).get();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        during.push(m.outcomes.with_label_values(&["imported"]).get() - before);
        k.broker_up(broker).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after_outages = env.outcome_count();
    eprintln!(
        "broker outages: outcomes acknowledged while a broker was down {during:?}, \
         {after_outages} outcomes after both"
    );
    assert!(after_outages < users.len(), "the outages were mid-run");

    let (outcomes, tally) = finish_run(
        &env,
        &expected,
        worker,
        Duration::from_secs(60),
        "a broker outage shorter than message.timeout.ms is no delivery failure",
    )
    .await;
    eprintln!(
        "broker outages: {} outcomes, {} duplicates, {} consumer errors",
        outcomes.len(),
        tally.duplicates,
        m.consumer_errors.get()
    );
    // Only a rebalance (the group coordinator was down) can replay records, and at most those
    // in flight.
    assert!(
        tally.duplicates <= max_in_flight,
        "{} duplicates, more than the {max_in_flight} records that can be in flight",
        tally.duplicates
    );
    assert_statuses(&tally, &["imported", "already_imported"]);
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.emu.stats().imported_accounts, users.len() as u64);
}

/// A produce error librdkafka does not retry (TOPIC_AUTHORIZATION_FAILED) makes some outcome
/// records undeliverable: the worker stops by itself with `WorkerError::Delivery`, its committed
/// offsets never pass a record without an outcome, and a restart finishes the input.
///
/// The errors hit the worker's outcome records by construction: it finishes a first part, then
/// the API is held while the rest is produced and the errors injected, and no other client
/// produces meanwhile (the test's producer is done, and the worker has no budget topic). The test
/// used to inject after the 60th outcome, assuming the worker had not finished by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_outcome_stops_the_worker_without_committing_past_it() {
    let _exit_on_panic = ExitOnPanic::arm();
    let mut cfg = emulator_config();
    cfg.latency_ms = 5;
    let Some(env) = mock_env(3, 3, cfg).await else {
        return;
    };
    let users = users("undeliverable", 600);
    let (first, rest) = users.split_at(60);
    let mut expected = produce(&env, first).await;
    let flags = [
        "--window-size",
        "20",
        "--max-events-in-flight",
        "200",
        // No budget coordinator: its leases (Produce) would take the injected errors.
        "--budget-split",
        "partitions",
    ];
    let a = env.worker(&flags);
    let ma = a.metrics.clone();
    wait_committed(&env, &ends_of(&expected), Duration::from_secs(60)).await;
    env.emu.hold();
    expected.extend(produce(&env, rest).await);

    let k = env.kafka.embedded.as_ref().expect("mock cluster");
    k.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    )
    .unwrap();
    env.emu.release();
    let result = a.stopped_by_itself(Duration::from_secs(30)).await;
    match result {
        Err(WorkerError::Delivery(reason)) => eprintln!("worker stopped: {reason}"),
        other => panic!("expected WorkerError::Delivery, got {other:?}"),
    }

    let committed = env.committed();
    let outcomes_a = env.outcomes();
    eprintln!(
        "after the delivery failure: {} outcomes, committed {committed:?}, {} events consumed",
        outcomes_a.len(),
        ma.events_consumed.get()
    );
    assert_commit_covered(&expected, &committed, &outcomes_a);
    assert!(
        expected.len() > outcomes_a.len(),
        "stopped before finishing the input"
    );

    let b = env.worker(&flags);
    let (outcomes, tally) = finish_run(
        &env,
        &expected,
        b,
        Duration::from_secs(60),
        "the restart runs cleanly",
    )
    .await;
    eprintln!(
        "after the restart: {} outcomes, {} duplicates",
        outcomes.len(),
        tally.duplicates
    );
    assert!(
        tally.duplicates <= 200,
        "{} duplicates: more than --max-events-in-flight",
        tally.duplicates
    );
    assert_statuses(&tally, &["imported", "already_imported"]);
    assert_eq!(env.dead_letter_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// API faults

/// 20 % transient vendor errors (70169/70500), 5 % HTTP 502 and 1 % requests that hang past the
/// worker's request timeout: every user still ends imported, nothing is dead-lettered, and the
/// faults and the retries they caused are visible in the emulator's and the worker's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_are_retried_and_nothing_is_lost() {
    let _exit_on_panic = ExitOnPanic::arm();
    let mut cfg = emulator_config();
    cfg.check_rate = 400.0;
    cfg.import_rate = 800.0;
    let env = WorkerEnv::start(3, cfg).await;
    env.emu.set_faults(Faults {
        latency_ms: 5,
        latency_jitter_ms: 5,
        transient_error_rate: 0.20,
        http_502_rate: 0.05,
        hang_rate: 0.01,
        // Longer than the worker's --request-timeout (3500 ms, set by `worker_args`).
        hang_ms: 5_000,
        ..Faults::default()
    });
    let users = users("apifault", 600);
    let expected = produce(&env, &users).await;
    let worker = env.worker(&[
        "--check-rate",
        "400",
        "--import-rate",
        "800",
        "--window-size",
        "25",
        "--retry-max-attempts",
        "10",
    ]);
    let m = worker.metrics.clone();
    let (_, tally) = finish_run(
        &env,
        &expected,
        worker,
        Duration::from_secs(60),
        "clean stop",
    )
    .await;
    let stats = env.emu.stats();
    let retried = tally
        .by_source
        .values()
        .filter(|v| v[0]["attempts"].as_u64().unwrap() > 1)
        .count();
    let retries: u64 = ["account_check", "account_import"]
        .iter()
        .map(|api| m.api_retries.with_label_values(&[api]).get())
        .sum();
    eprintln!(
        "API faults: {} transient, {} HTTP 502, {} hung; {} import calls for {} users; \
         {retries} retries; {retried} outcomes with attempts > 1",
        stats.transient_errors,
        stats.http_502,
        stats.hung,
        count(&stats.calls, "account_import"),
        users.len()
    );
    assert_eq!(
        tally.duplicates, 0,
        "no crash, no rebalance: one outcome each"
    );
    assert_statuses(&tally, &["imported"]);
    assert_eq!(env.dead_letter_count(), 0, "every fault was retried away");
    assert!(users.iter().all(|u| env.emu.imported(u)));
    assert_eq!(stats.imported_accounts, users.len() as u64);
    assert!(stats.transient_errors > 0, "{stats:?}");
    assert!(stats.http_502 > 0, "{stats:?}");
    assert!(stats.hung > 0, "{stats:?}");
    assert!(
        count(&stats.calls, "account_import") > users.len() as u64,
        "failed imports were retried: {stats:?}"
    );
    assert!(retries > 0);
    assert!(
        retried > 0,
        "some outcome records show more than one attempt"
    );
}

// ---------------------------------------------------------------------------------------------
// Systemic faults

/// A wrong key: `/readyz` answers 503 naming the fault while nothing is written or committed;
/// once the emulator has the right key, `/readyz` turns 200 by itself and every user is imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_wrong_key_fault_until_it_is_cured() {
    let _exit_on_panic = ExitOnPanic::arm();
    let mut cfg = emulator_config();
    cfg.secret_key = Some(SecretKey::new("not-the-key-the-worker-signs-with"));
    let env = WorkerEnv::start(2, cfg).await;
    let users = users("readyz", 60);
    let expected = produce(&env, &users).await;
    let (worker, admin) = RunningWorker::start_with_admin(env.args(&[])).await;

    let (status, body) = readyz_until(admin, Duration::from_secs(20), |s, b| {
        s == 503 && b.contains("systemic fault")
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: systemic fault (code 70009)"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "still not ready: {body}");
    assert_eq!(env.outcome_count(), 0);
    assert_eq!(env.dead_letter_count(), 0, "nothing dead-lettered");
    assert!(env.committed().is_empty(), "{:?}", env.committed());

    env.emu.set_secret_key(SecretKey::new(SECRET));
    let (status, body) = readyz_until(admin, Duration::from_secs(20), |s, _| s == 200).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (_, tally) = finish_run(
        &env,
        &expected,
        worker,
        Duration::from_secs(30),
        "clean stop",
    )
    .await;
    assert_eq!(tally.duplicates, 0);
    assert_statuses(&tally, &["imported"]);
    assert_eq!(env.dead_letter_count(), 0);
}

/// The edition's account limit (70398) is systemic: intake pauses, `/readyz` stays 503 naming
/// 70398, nothing is dead-lettered and no offset passes a record without an outcome. The limit
/// cannot be raised at run time; a worker pointed at an app without the limit then finishes the
/// input with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edition_account_limit_pauses_without_dead_lettering() {
    let _exit_on_panic = ExitOnPanic::arm();
    let t0 = Instant::now();
    let limit = 40;
    let mut cfg = emulator_config();
    cfg.max_accounts = Some(limit);
    let env = WorkerEnv::start(2, cfg).await;
    let users = users("edition", 120);
    let expected = produce(&env, &users).await;
    let end = ends_of(&expected);
    let (worker, admin) = RunningWorker::start_with_admin(env.args(&["--window-size", "20"])).await;
    let m = worker.metrics.clone();
    mark(t0, "edition: worker started");

    let (status, body) = readyz_until(admin, Duration::from_secs(20), |s, b| {
        s == 503 && b.contains("code 70398")
    })
    .await;
    mark(t0, "edition: not ready");
    assert!(
        status == 503 && body.starts_with("not ready: systemic fault (code 70398)"),
        "{status} {body}"
    );
    // `/readyz` reads the gate itself; the paused gauge is the intake loop's, set when the loop
    // next runs after the closing, which on a loaded machine can be after the first sample. Wait
    // for it; then the worker must stay not ready and paused while the limit holds: sample for 3 s.
    assert!(
        eventually(Duration::from_secs(20), || m.paused.get() == 1).await,
        "intake never paused for the limit"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut samples, mut ready_seen, mut unpaused_seen) = (0, 0, 0);
    while Instant::now() < deadline {
        let (s, _) = admin_get(admin, "/readyz").await;
        samples += 1;
        ready_seen += usize::from(s == 200);
        unpaused_seen += usize::from(m.paused.get() == 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = env.emu.stats();
    eprintln!(
        "edition limit: {samples} samples, ready in {ready_seen}, unpaused in {unpaused_seen}; \
         {} import calls, {} answered 70398",
        count(&stats.calls, "account_import"),
        count(&stats.rejected_by_code, "70398")
    );
    assert_eq!(ready_seen, 0, "/readyz answered 200 while the limit held");
    assert_eq!(unpaused_seen, 0, "intake resumed while the limit held");
    assert_eq!(m.systemic_fault.with_label_values(&["70398"]).get(), 1);
    assert_eq!(stats.imported_accounts, limit);
    assert!(count(&stats.rejected_by_code, "70398") >= 1);
    assert_eq!(env.dead_letter_count(), 0, "nothing dead-lettered");
    worker.stop().await.expect("clean stop during the fault");
    mark(t0, "edition: stopped");

    let committed = env.committed();
    let outcomes_a = env.outcomes();
    assert!(outcomes_a.len() < users.len(), "the limit stopped progress");
    assert!(
        outcomes_a.iter().all(|r| r.json()["status"] == "imported"),
        "no failed outcome during the fault"
    );
    assert_commit_covered(&expected, &committed, &outcomes_a);

    // The edition is upgraded (here: an app without the limit): the rest goes through.
    let emu2 = start_emulator(emulator_config()).await;
    let url2 = emu2.base_url();
    let b = env.worker(&["--api-base-url", &url2]);
    wait_committed(&env, &end, Duration::from_secs(30)).await;
    mark(t0, "edition: all committed");
    b.stop().await.expect("clean stop");
    mark(t0, "edition: second worker stopped");
    let outcomes = env.outcomes();
    let tally = assert_none_lost(&expected, &outcomes);
    assert_statuses(&tally, &["imported"]);
    assert_eq!(env.dead_letter_count(), 0);
    eprintln!(
        "edition limit: {} outcomes in all, {} duplicates",
        outcomes.len(),
        tally.duplicates
    );
}

// ---------------------------------------------------------------------------------------------
// Rebalance

/// Three workers in one group on a 6-partition topic: A and B share the partitions and work
/// through a first part of the input; C joins, then A leaves, each time while the workers hold
/// records in flight. Every input offset ends with an outcome, the duplicates stay within the
/// records in flight on the partitions that changed owner, and the group's committed offsets
/// reach the end of every partition.
///
/// Every premise holds by construction, whatever the machine's speed: before each membership
/// change the test waits until everything produced so far is committed, holds the emulator's
/// API (`EmulatorHandle::hold`: requests wait, none fails), produces the next part and waits
/// until the workers have read all of it. No API call can answer, so all of it stays in flight
/// and nothing finishes while the group rebalances; the test releases the API once the group
/// has settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_joining_and_leaving_mid_run_lose_nothing() {
    joining_and_leaving_under("classic").await;
}

/// The same under the consumer group protocol (KIP-848): the broker assigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_joining_and_leaving_mid_run_lose_nothing_under_the_consumer_protocol() {
    joining_and_leaving_under("consumer").await;
}

async fn joining_and_leaving_under(protocol: &str) {
    let _exit_on_panic = ExitOnPanic::arm();
    let t0 = Instant::now();
    let mut cfg = emulator_config();
    cfg.latency_ms = 10;
    cfg.check_rate = 400.0;
    cfg.import_rate = 800.0;
    const PARTITIONS: i64 = 6;
    if protocol == "consumer" && skip_without(Needs::ConsumerProtocol) {
        return;
    }
    let env = WorkerEnv::start(PARTITIONS as i32, cfg).await;
    // The parts of the input, produced round-robin, so each has the same number of records on
    // every partition: 200 per partition before C joins, then 50 per partition held in flight
    // at each membership change.
    let first_part = users("rebalance-a", 200 * PARTITIONS as usize);
    let per_partition_held: i64 = 50;
    let held_part = |prefix: &str| users(prefix, (per_partition_held * PARTITIONS) as usize);
    // A worker can hold a whole held part, whatever its share of the partitions: intake never
    // stops at the bound, so "all of it read" is reached.
    let max_in_flight = (per_partition_held * PARTITIONS).to_string();
    let flags = [
        "--check-rate",
        "400",
        "--import-rate",
        "800",
        "--window-size",
        "25",
        "--max-events-in-flight",
        &max_in_flight,
        // A held request must not time out (it would be retried: harmless, but then the hold
        // would not be all that keeps the records in flight).
        "--request-timeout",
        "300s",
        // The drains of revoked partitions, and A's drain when it stops, cannot finish while the
        // API is held: a short drain timeout lets the partitions go with their records in
        // flight, which their next owner replays.
        "--drain-timeout",
        "1s",
    ];
    // The mock cluster waits up to session.timeout.ms − 1 s for members to rejoin in every
    // rebalance round: a short session keeps the rounds short (group_flags).
    let group = group_flags(protocol);
    let flags: Vec<&str> = flags
        .into_iter()
        .chain(group.iter().map(String::as_str))
        .collect();
    // Upper bounds for a loaded machine, not premises: each wait ends as soon as its condition
    // holds, and with the API held the conditions cannot be missed.
    let within = Duration::from_secs(90);
    let producer = env.kafka.producer();
    let mut expected = BTreeMap::new();

    // A and B form the group before there is any input: no membership change during the first
    // part.
    let a = env.worker(&flags);
    let b = env.worker(&flags);
    let (ma, mb) = (a.metrics.clone(), b.metrics.clone());
    let assigned = |ms: &[&Arc<Metrics>]| -> Vec<i64> {
        ms.iter().map(|m| m.assigned_partitions.get()).collect()
    };
    let in_flight =
        |ms: &[&Arc<Metrics>]| -> i64 { ms.iter().map(|m| m.events_in_flight.get()).sum() };
    assert!(
        eventually(within, || ma.assigned_partitions.get() > 0
            && mb.assigned_partitions.get() > 0
            && assigned(&[&ma, &mb]).iter().sum::<i64>() == PARTITIONS)
        .await,
        "A and B share the 6 partitions: {:?}",
        assigned(&[&ma, &mb])
    );
    mark(
        t0,
        &format!("rebalance: A, B own {:?}", assigned(&[&ma, &mb])),
    );
    expected.extend(produce_with(&producer, &env, &first_part).await);
    wait_committed(&env, &ends_of(&expected), within).await;
    mark(t0, "rebalance: first part done and committed");

    // C joins while A and B hold the second part in flight.
    env.emu.hold();
    expected.extend(produce_with(&producer, &env, &held_part("rebalance-b")).await);
    assert!(
        eventually(within, || in_flight(&[&ma, &mb])
            == per_partition_held * PARTITIONS)
        .await,
        "A and B read the whole second part: {} in flight",
        in_flight(&[&ma, &mb])
    );
    let c = env.worker(&flags);
    let mc = c.metrics.clone();
    assert!(
        eventually(within, || mc.assigned_partitions.get() > 0
            && assigned(&[&ma, &mb, &mc]).iter().sum::<i64>() == PARTITIONS)
        .await,
        "C gets partitions: {:?}",
        assigned(&[&ma, &mb, &mc])
    );
    let moved_at_join = mc.assigned_partitions.get();
    mark(
        t0,
        &format!(
            "rebalance: C joined; A, B, C own {:?}; {} API requests held",
            assigned(&[&ma, &mb, &mc]),
            env.emu.held()
        ),
    );
    env.emu.release();

    // A leaves while the three hold the third part in flight.
    wait_committed(&env, &ends_of(&expected), within).await;
    mark(t0, "rebalance: second part done and committed");
    env.emu.hold();
    expected.extend(produce_with(&producer, &env, &held_part("rebalance-c")).await);
    assert!(
        eventually(within, || in_flight(&[&ma, &mb, &mc])
            == per_partition_held * PARTITIONS)
        .await,
        "A, B and C read the whole third part: {} in flight",
        in_flight(&[&ma, &mb, &mc])
    );
    let moved_at_leave = ma.assigned_partitions.get();
    let in_flight_a = ma.events_in_flight.get();
    assert!(
        moved_at_leave > 0 && in_flight_a == moved_at_leave * per_partition_held,
        "A leaves with records in flight: {in_flight_a} on {moved_at_leave} partitions"
    );
    a.stop().await.expect("A stops cleanly");
    assert!(
        eventually(within, || assigned(&[&mb, &mc]).iter().sum::<i64>()
            == PARTITIONS)
        .await,
        "B and C take A's partitions: {:?}",
        assigned(&[&mb, &mc])
    );
    mark(
        t0,
        &format!(
            "rebalance: A left with {in_flight_a} records in flight; B, C own {:?}; {} API \
             requests held",
            assigned(&[&mb, &mc]),
            env.emu.held()
        ),
    );
    env.emu.release();

    let end = ends_of(&expected);
    wait_committed(&env, &end, within).await;
    mark(t0, "rebalance: all committed");
    b.stop().await.expect("B stops cleanly");
    c.stop().await.expect("C stops cleanly");

    let outcomes = read_everything(&env.kafka.brokers, &env.topics.outcomes);
    let tally = assert_none_lost(&expected, &outcomes);
    let consumed = ma.events_consumed.get() + mb.events_consumed.get() + mc.events_consumed.get();
    // What can come back twice. At each membership change everything produced before was done
    // and committed, and nothing finished while the group rebalanced (the API was held), so no
    // record was done but uncommitted: the mock coordinator's REBALANCE_IN_PROGRESS answers to
    // the commits sent during a rebalance cost nothing. Only records in flight on a partition
    // that changed owner are processed again — by the new owner from the committed offset, and
    // by the old one once the API is released (A's are abandoned when it stops) — each once per
    // change. Every partition had `per_partition_held` records in flight; the partitions that
    // changed owner are C's at the join (cooperative-sticky moves only what C takes) and A's
    // when it leaves. An eager assignor (range, where the broker has no cooperative-sticky)
    // revokes every partition at each change, and a member given back its own partition reads
    // it again from the committed offset too: there every partition counts at both changes.
    let (moved_at_join, moved_at_leave) = if Broker::current().cooperative() {
        (moved_at_join, moved_at_leave)
    } else {
        (PARTITIONS, PARTITIONS)
    };
    let bound = ((moved_at_join + moved_at_leave) * per_partition_held) as usize;
    eprintln!(
        "rebalance: {} inputs, {} outcomes, {} duplicates (bound {bound}: {moved_at_join} + \
         {moved_at_leave} partitions moved × {per_partition_held} in flight); consumed A {} B {} \
         C {}",
        expected.len(),
        outcomes.len(),
        tally.duplicates,
        ma.events_consumed.get(),
        mb.events_consumed.get(),
        mc.events_consumed.get()
    );
    assert!(
        tally.duplicates <= bound,
        "{} duplicates, bound {bound}",
        tally.duplicates
    );
    assert!(
        consumed >= outcomes.len() as u64,
        "every outcome comes from a consumed record"
    );
    assert!(mc.events_consumed.get() > 0 && ma.events_consumed.get() > 0);
    assert_statuses(&tally, &["imported", "already_imported"]);
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.emu.stats().imported_accounts, expected.len() as u64);
    assert_eq!(env.committed(), end);
}

/// A member joins while the other holds a backlog it could not finish within the drain timeout:
/// the revocation costs at most one API round trip. Every import is held by the emulator, so
/// nothing of A's finishes: A holds the whole backlog in flight, 8 of its records in imports
/// under way (`--max-imports-in-flight 8`). When B joins, A lets go at once every record of its
/// revoked partitions that no call is answering — the only way A's records in flight can become
/// fewer while the imports are held — and the test then releases the imports: A's drain ends with
/// the calls that were under way, far within `--drain-timeout`, nothing left. Duplicates can
/// only be records whose calls were under way at the revocation ("awaited").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_under_a_backlog_takes_one_round_trip() {
    revocation_under_a_backlog_under("classic").await;
}

/// The same under the consumer group protocol (KIP-848).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_under_a_backlog_takes_one_round_trip_under_the_consumer_protocol() {
    revocation_under_a_backlog_under("consumer").await;
}

async fn revocation_under_a_backlog_under(protocol: &str) {
    let _exit_on_panic = ExitOnPanic::arm();
    let t0 = Instant::now();
    let mut cfg = emulator_config();
    cfg.latency_ms = 20;
    cfg.check_rate = 0.0;
    cfg.import_rate = 0.0;
    // Its premise is an incremental revocation: A keeps the partitions B does not take.
    let needs = match protocol {
        "consumer" => Needs::ConsumerProtocol,
        _ => Needs::CooperativeAssignor,
    };
    if skip_without(needs) {
        return;
    }
    let env = WorkerEnv::start(4, cfg).await;
    let backlog = 1_000;
    let in_flight = backlog.to_string();
    let flags = [
        "--import-api",
        "single",
        "--max-imports-in-flight",
        "8",
        "--max-events-in-flight",
        &in_flight,
        // Far longer than the one round trip a revocation should take.
        "--drain-timeout",
        "60s",
        // Held imports must not time out (a retry would be a second round trip).
        "--request-timeout",
        "300s",
    ];
    let group = group_flags(protocol);
    let flags: Vec<&str> = flags
        .into_iter()
        .chain(group.iter().map(String::as_str))
        .collect();
    let within = Duration::from_secs(90);
    env.emu.hold_only(&[Api::AccountImport]);
    let expected = produce(&env, &users("backlog", backlog)).await;
    let a = env.worker(&flags);
    let ma = a.metrics.clone();
    assert!(
        eventually(within, || ma.events_in_flight.get() == backlog as i64
            && env.emu.held() == 8)
        .await,
        "A holds the backlog, 8 imports under way: {} in flight, {} held",
        ma.events_in_flight.get(),
        env.emu.held()
    );
    mark(t0, "revocation: A holds the backlog; B joins");
    let b = env.worker(&flags);
    let mb = b.metrics.clone();
    assert!(
        eventually(within, || ma.events_in_flight.get() < backlog as i64).await,
        "A's revocation lets go what no call is answering"
    );
    env.emu.release();
    assert!(
        eventually(within, || mb.assigned_partitions.get() > 0
            && ma.assigned_partitions.get() + mb.assigned_partitions.get() == 4)
        .await,
        "B gets partitions"
    );
    let fate = |f: &str| ma.revoked_records.with_label_values(&[f]).get();
    let (drains, took) = (
        ma.revocation_drain.get_sample_count(),
        ma.revocation_drain.get_sample_sum(),
    );
    let (let_go, awaited, left) = (fate("let_go"), fate("awaited"), fate("left"));
    mark(
        t0,
        &format!("revocation: {drains} drain(s) in {took:.3} s: {let_go} let go, {awaited} awaited, {left} left"),
    );
    assert!(drains >= 1, "A revoked partitions");
    assert!(
        took < 30.0,
        "one round trip, not the drain timeout: {took} s"
    );
    assert_eq!(left, 0, "nothing left to the drain timeout");
    assert!(awaited <= 8, "only calls under way are awaited: {awaited}");
    assert!(let_go > 0);

    wait_committed(&env, &ends_of(&expected), within).await;
    a.stop().await.expect("A stops cleanly");
    b.stop().await.expect("B stops cleanly");
    let outcomes = read_everything(&env.kafka.brokers, &env.topics.outcomes);
    let tally = assert_none_lost(&expected, &outcomes);
    eprintln!(
        "revocation: {} duplicates, {awaited} awaited",
        tally.duplicates
    );
    assert!(
        tally.duplicates as u64 <= awaited,
        "{} duplicates; only the {awaited} records whose calls were under way may come twice",
        tally.duplicates
    );
    // A record processed twice finds its account there the second time.
    assert_statuses(&tally, &["imported", "already_imported"]);
    for (src, values) in &tally.by_source {
        assert_eq!(values[0]["status"], "imported", "first outcome of {src:?}");
    }
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.emu.stats().imported_accounts, backlog as u64);
}
