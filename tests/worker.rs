//! The worker end to end: Kafka (mock cluster) → emulator → outcome and dead-letter topics.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_sync::chat::SecretKey;
use account_sync::delivery::sink::headers;
use account_sync::devtools::emulator::is_preexisting;
use common::emulator::{count, emulator_config, start_emulator, SECRET};
use common::kafka::{
    committed, ends, event_json, eventually, outcomes_by_source, produce, produce_users, read_all,
    trickle, worker_args, RunningWorker, TestKafka, WorkerEnv,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_gets_the_right_outcome() {
    let kafka = TestKafka::start(1);
    let topics = kafka.worker_topics(3).await;
    let mut cfg = emulator_config();
    cfg.existing_fraction = 0.3;
    let emu = start_emulator(cfg).await;
    let users: Vec<String> = (0..500).map(|i| format!("user-{i:05}")).collect();
    let offsets = produce_users(&kafka.producer(), &topics.input, 3, &users).await;
    assert_eq!(offsets.len(), 500);

    let group = kafka.name("group");
    let worker = RunningWorker::start(worker_args(&kafka, &topics, &emu.base_url(), &group, &[]));
    let outcomes = read_all(
        &kafka.brokers,
        &topics.outcomes,
        500,
        Duration::from_secs(60),
        false,
    );
    worker.stop().await.expect("clean stop");

    assert_eq!(outcomes.len(), 500);
    let by_user: HashMap<String, String> = outcomes
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["user_id"].as_str().unwrap().to_owned(),
                v["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for u in &users {
        let want = if is_preexisting(u, 0.3) {
            "already_imported"
        } else {
            "imported"
        };
        assert_eq!(by_user[u], want, "{u}");
    }
    let c = committed(&kafka.brokers, &group, &topics.input, 3);
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for (p, o) in offsets {
        let e = ends.entry(p).or_default();
        *e = (*e).max(o + 1);
    }
    for (p, end) in ends {
        assert_eq!(c.get(&p), Some(&end), "partition {p} committed to its end");
    }
}

/// `(key, payload)` pairs in the shape [`produce`] takes.
fn as_records(records: &[(String, Vec<u8>)]) -> Vec<(Option<&str>, Option<&[u8]>)> {
    records
        .iter()
        .map(|(k, p)| (Some(k.as_str()), Some(p.as_slice())))
        .collect()
}

/// The first `{base}-{i}` for which `is_preexisting(_, fraction)` is `want`.
fn user_with(base: &str, fraction: f64, want: bool) -> String {
    (0..)
        .map(|i| format!("{base}-{i}"))
        .find(|u| is_preexisting(u, fraction) == want)
        .unwrap()
}

/// Upper bound of the waits below on a loaded machine; not a premise (each wait ends as soon as
/// its condition holds, and nothing the tests assert races it).
const WITHIN: Duration = Duration::from_secs(60);

/// `--request-timeout` of a worker whose checks [`hold_two_checks`] holds: a held check must not
/// time out, or its retry is one check more than the windows (seen on tansu, where the records
/// came slower than the 3.5 s default of the tests).
const HELD_TIMEOUT: &str = "300s";

/// Makes the windows of the records produced next close only when they are full, or on the
/// API's release: holds the emulator's API and produces two `blockers` (to partition 0) one at a
/// time, each closed as soon as it was read and its check held. The close rule lets a window close
/// early (idle) only while fewer than two checks are in flight, so until the test calls
/// `env.emu.release()` a window closes full or by its linger (give the worker a linger longer
/// than the test) — whatever the pace at which intake reads. Without this, a window meant to hold
/// several records could close idle between two of them on a machine slow to hand them over (2 ms
/// without a record is idle). Returns the blockers' offsets. The worker needs
/// `--request-timeout` [`HELD_TIMEOUT`].
async fn hold_two_checks(env: &WorkerEnv, blockers: [&str; 2]) -> Vec<(i32, i64)> {
    env.emu.hold();
    let producer = env.kafka.producer();
    let mut offsets = Vec::new();
    for (i, user) in blockers.into_iter().enumerate() {
        let payload = event_json(user, "blocker");
        offsets.extend(
            produce(
                &producer,
                &env.topics.input,
                Some(0),
                &[(Some(user), Some(payload.as_slice()))],
            )
            .await,
        );
        let held = i as u64 + 1;
        assert!(
            eventually(WITHIN, || env.emu.held() == held).await,
            "blocker {user}: {} API requests held, want {held}",
            env.emu.held()
        );
    }
    offsets
}

/// Waits until the worker has read `n` records.
async fn wait_consumed(metrics: &account_sync::observe::metrics::Metrics, n: u64) {
    assert!(
        eventually(WITHIN, || metrics.events_consumed.get() == n).await,
        "{} records read, want {n}",
        metrics.events_consumed.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_in_one_window_are_checked_once_and_each_get_an_outcome() {
    let mut cfg = emulator_config();
    cfg.existing_fraction = 0.5;
    let env = WorkerEnv::start(1, cfg).await;
    let dup_a = user_with("dup-a", 0.5, false);
    let dup_b = user_with("dup-b", 0.5, true);
    let solo_c = user_with("solo-c", 0.5, false);
    let solo_d = user_with("solo-d", 0.5, false);
    let blockers = [
        user_with("blocker-1", 0.5, false),
        user_with("blocker-2", 0.5, false),
    ];
    let order = [&dup_a, &dup_b, &solo_c, &dup_a, &solo_d, &dup_b, &dup_a];
    let records: Vec<(String, Vec<u8>)> = order
        .iter()
        .enumerate()
        .map(|(i, u)| (u.to_string(), event_json(u, &format!("nick-{i}"))))
        .collect();

    // A window of up to 100 ids that could linger for a minute: all seven records land in one
    // window, held open by the two blockers' checks until all seven are read; on the API's
    // release it closes because intake has nothing more (idle), not by its linger.
    let worker = env.worker(&[
        "--window-size",
        "100",
        "--window-linger",
        "60s",
        "--request-timeout",
        HELD_TIMEOUT,
    ]);
    let metrics = worker.metrics.clone();
    let blocked = hold_two_checks(&env, [&blockers[0], &blockers[1]]).await;
    let offsets = produce(
        &env.kafka.producer(),
        &env.topics.input,
        Some(0),
        &as_records(&records),
    )
    .await;
    wait_consumed(&metrics, 2 + 7).await;
    env.emu.release();
    assert_eq!(env.wait_outcomes(2 + 7, WITHIN).await, 2 + 7);
    worker.stop().await.expect("clean stop");

    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(
        outcomes.len(),
        2 + 7,
        "one outcome per record, duplicates included"
    );
    for (&(p, o), u) in offsets.iter().zip(order) {
        let v = &outcomes[&(p, o)];
        assert_eq!(v["user_id"], u.as_str(), "offset {o}");
        let want = if *u == dup_b {
            "already_imported"
        } else {
            "imported"
        };
        assert_eq!(v["status"], want, "{u} at offset {o}");
        assert_eq!(v["error_code"], 0);
        assert_eq!(v["attempts"], 1);
    }
    let stats = env.emu.stats();
    assert_eq!(
        count(&stats.calls, "account_check"),
        2 + 1,
        "one window, one check (and one per blocker): {stats:?}"
    );
    assert_eq!(
        count(&stats.calls, "account_import"),
        2 + 3,
        "imports = distinct new users (a, c, d; and the blockers): {stats:?}"
    );
    assert_eq!(stats.imported_accounts, 2 + 3);
    assert_eq!(metrics.windows.with_label_values(&["idle"]).get(), 2 + 1);
    assert_eq!(metrics.windows.with_label_values(&["linger"]).get(), 0);
    assert_eq!(metrics.windows.with_label_values(&["full"]).get(), 0);
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.committed(), ends(&[blocked, offsets].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_when_full() {
    let env = WorkerEnv::start(1, emulator_config()).await;
    let users: Vec<String> = (0..35).map(|i| format!("full-{i:02}")).collect();

    // With two checks held, a window closes only when full: exactly three, whatever the pace of
    // intake; the last five close once the API is released (idle), not by the minute's linger.
    let worker = env.worker(&[
        "--window-size",
        "10",
        "--window-linger",
        "60s",
        "--request-timeout",
        HELD_TIMEOUT,
    ]);
    let metrics = worker.metrics.clone();
    let blocked = hold_two_checks(&env, ["full-blocker-1", "full-blocker-2"]).await;
    let offsets = env.produce_users(&users).await;
    wait_consumed(&metrics, 2 + 35).await;
    let full_while_held = metrics.windows.with_label_values(&["full"]).get();
    env.emu.release();
    assert_eq!(env.wait_outcomes(2 + 35, WITHIN).await, 2 + 35);
    worker.stop().await.expect("clean stop");

    let full = metrics.windows.with_label_values(&["full"]).get();
    let linger = metrics.windows.with_label_values(&["linger"]).get();
    let idle = metrics.windows.with_label_values(&["idle"]).get();
    let checks = count(&env.emu.stats().calls, "account_check");
    assert_eq!(
        (full_while_held, full, linger, idle),
        (3, 3, 0, 2 + 1),
        "35 ids in windows of 10: 3 full windows, the other 5 in one closed idle (and the two \
         blockers); (full while held, full, linger, idle)"
    );
    assert_eq!(checks, 2 + 4, "one check per window: {checks}");
    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(outcomes.len(), 2 + 35);
    assert!(outcomes.values().all(|v| v["status"] == "imported"));
    assert_eq!(count(&env.emu.stats().calls, "account_import"), 2 + 35);
    assert_eq!(env.committed(), ends(&[blocked, offsets].concat()));
}

/// A window that does not fill and that nothing closes earlier closes by its linger. Here the
/// check budget is spent: one check per 5 s, and a first event took the token, so closing the
/// window early would not send its check any sooner (the next token comes long after the linger).
/// The linger (1 s) leaves the first event's idle close a second to happen in, and the next
/// token is still 4 s away when the five arrive (they are produced as soon as the first has its
/// outcome): margins for a loaded machine, not races a slow one could lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_does_not_fill_closes_by_linger() {
    let env = WorkerEnv::start(1, emulator_config()).await;
    let first = env.produce_users(&["linger-first".to_owned()]).await;
    let worker = env.worker(&[
        "--window-linger",
        "1s",
        "--check-rate",
        "0.2",
        "--check-burst",
        "1",
    ]);
    let metrics = worker.metrics.clone();
    assert_eq!(env.wait_outcomes(1, Duration::from_secs(30)).await, 1);
    assert_eq!(
        metrics.windows.with_label_values(&["idle"]).get(),
        1,
        "the first event, alone with a token to spare, went at once"
    );
    let users: Vec<String> = (0..5).map(|i| format!("linger-{i}")).collect();
    let offsets = env.produce_users(&users).await;
    assert_eq!(env.wait_outcomes(6, Duration::from_secs(30)).await, 6);
    worker.stop().await.expect("clean stop");

    assert!(metrics.windows.with_label_values(&["linger"]).get() >= 1);
    assert_eq!(metrics.windows.with_label_values(&["idle"]).get(), 1);
    assert_eq!(
        metrics.windows.with_label_values(&["full"]).get(),
        0,
        "5 ids never fill a window of 100"
    );
    let outcomes = outcomes_by_source(&env.outcomes());
    let got: BTreeSet<&str> = outcomes
        .values()
        .map(|v| v["user_id"].as_str().unwrap())
        .filter(|u| *u != "linger-first")
        .collect();
    assert_eq!(got, users.iter().map(String::as_str).collect());
    assert!(outcomes.values().all(|v| v["status"] == "imported"));
    assert_eq!(env.committed(), ends(&[first, offsets].concat()));
}

/// A trickle of events, one at a time: each gets its outcome without waiting for the linger
/// (a minute here), in a window of its own that closed as soon as intake had nothing more for it.
///
/// What shows it is the close reason of every window (idle, none by linger), which does not
/// depend on the machine's speed; the event-to-outcome times are printed, not asserted (the test
/// used to require each under 1 s, a wall-clock bound a loaded machine can miss with the worker
/// doing nothing wrong). Every trickle event waits for its outcome at most 30 s (`trickle`), half
/// the linger: an event that waited for the linger fails the test either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_events_gets_outcomes_well_under_the_linger() {
    let env = WorkerEnv::start(1, emulator_config()).await;
    let worker = env.worker(&["--window-linger", "60s"]);
    let metrics = worker.metrics.clone();
    let took = trickle(&env, &metrics, "trickle", 5).await;
    worker.stop().await.expect("clean stop");
    eprintln!("trickle: event -> outcome {took:?}");
    assert_eq!(took.len(), 5);
    assert_eq!(metrics.windows.with_label_values(&["idle"]).get(), 6);
    assert_eq!(metrics.windows.with_label_values(&["linger"]).get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_account_is_dead_lettered_alone() {
    let mut cfg = emulator_config();
    cfg.sensitive_word = vec!["badword".into()];
    let env = WorkerEnv::start(1, cfg).await;
    let records: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            let u = format!("profile-{i}");
            let nick = if i == 3 {
                "has a badword inside".to_owned()
            } else {
                format!("nick-{i}")
            };
            (u.clone(), event_json(&u, &nick))
        })
        .collect();

    // All six in one window, held open by the two blockers' checks until all six are read.
    let worker = env.worker(&["--window-linger", "60s", "--request-timeout", HELD_TIMEOUT]);
    let metrics = worker.metrics.clone();
    let blocked = hold_two_checks(&env, ["profile-blocker-1", "profile-blocker-2"]).await;
    let offsets = produce(
        &env.kafka.producer(),
        &env.topics.input,
        Some(0),
        &as_records(&records),
    )
    .await;
    wait_consumed(&metrics, 2 + 6).await;
    env.emu.release();
    assert_eq!(env.wait_outcomes(2 + 6, WITHIN).await, 2 + 6);
    worker.stop().await.expect("clean stop");

    assert_eq!(
        count(&env.emu.stats().calls, "account_check"),
        2 + 1,
        "all six in one window (and one check per blocker)"
    );
    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(outcomes.len(), 2 + 6);
    let bad = &outcomes[&offsets[3]];
    assert_eq!(bad["user_id"], "profile-3");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["error_code"], 40005);
    let info = bad["error_info"].as_str().unwrap();
    assert!(info.contains("40005"), "{info}");
    let attempts = bad["attempts"].as_i64().unwrap();
    assert_eq!(attempts, 1, "a permanent error is not retried");
    for (i, src) in offsets.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_eq!(outcomes[src]["status"], "imported", "profile-{i}");
        assert!(env.emu.imported(&format!("profile-{i}")));
    }
    assert!(!env.emu.imported("profile-3"));

    let dead = env.dead_letters();
    assert_eq!(dead.len(), 1, "only the rejected user is dead-lettered");
    let d = &dead[0];
    assert_eq!(d.key.as_deref(), Some(b"profile-3".as_slice()));
    assert_eq!(
        d.payload.as_deref(),
        Some(records[3].1.as_slice()),
        "original payload bytes"
    );
    assert_eq!(d.header(headers::STAGE), "import");
    assert_eq!(d.header(headers::CODE), "40005");
    assert_eq!(d.header(headers::REASON), info);
    assert_eq!(d.header(headers::CLASS), "rejected");
    assert_eq!(d.header(headers::ATTEMPTS), attempts.to_string());
    assert_eq!(d.header(headers::SOURCE_TOPIC), env.topics.input);
    assert_eq!(d.header(headers::SOURCE_PARTITION), "0");
    assert_eq!(d.header(headers::SOURCE_OFFSET), offsets[3].1.to_string());
    humantime::parse_rfc3339(d.header(headers::FAILED_AT)).expect("failed-at is RFC 3339");
    assert_eq!(
        metrics
            .events_dead_lettered
            .with_label_values(&["import", "rejected"])
            .get(),
        1
    );
    assert_eq!(metrics.outcomes.with_label_values(&["failed"]).get(), 1);
    assert_eq!(
        metrics.outcomes.with_label_values(&["imported"]).get(),
        2 + 5
    );
    assert_eq!(env.committed(), ends(&[blocked, offsets].concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_clean_stop_reprocesses_nothing() {
    let env = WorkerEnv::start(3, emulator_config()).await;
    let users: Vec<String> = (0..150).map(|i| format!("restart-{i:03}")).collect();
    let offsets = env.produce_users(&users).await;

    let a = env.worker(&[]);
    assert_eq!(env.wait_outcomes(150, Duration::from_secs(30)).await, 150);
    a.stop().await.expect("clean stop");
    let committed = env.committed();
    assert_eq!(
        committed,
        ends(&offsets),
        "a clean stop commits everything it finished"
    );
    let calls = env.emu.stats().calls;

    let b = env.worker(&[]);
    let mb = b.metrics.clone();
    assert!(
        eventually(Duration::from_secs(20), || mb.assigned_partitions.get()
            == 3)
        .await,
        "worker B joins the group and owns all 3 partitions"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop().await.expect("clean stop");

    assert_eq!(
        mb.events_consumed.get(),
        0,
        "B starts at the committed end: nothing to read"
    );
    assert_eq!(env.outcome_count(), 150, "no outcome written twice");
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.emu.stats().calls, calls, "no API call repeated");
    assert_eq!(env.committed(), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_keeps_the_worker_under_the_vendor_limits() {
    // Emulator and worker at the vendor's defaults: check 100/s, import 200/s.
    let env = WorkerEnv::start(3, emulator_config()).await;
    let users: Vec<String> = (0..3000).map(|i| format!("limit-{i:05}")).collect();
    let offsets = env.produce_users(&users).await;

    let started = Instant::now();
    let worker = env.worker(&[]);
    let metrics = worker.metrics.clone();
    // A bound on liveness only (15 s of work at the limits; tansu on a loaded machine is slower).
    assert_eq!(
        env.wait_outcomes(3000, Duration::from_secs(300)).await,
        3000
    );
    let took = started.elapsed();
    worker.stop().await.expect("clean stop");

    let stats = env.emu.stats();
    assert!(
        stats.rate_limited.values().all(|&n| n == 0),
        "no 60007 answers: {stats:?}"
    );
    assert!(
        stats.rejected_by_code.is_empty(),
        "no error answers at all: {stats:?}"
    );
    assert_eq!(count(&stats.calls, "account_import"), 3000);
    assert_eq!(
        metrics
            .frequency_limited
            .with_label_values(&["account_import"])
            .get(),
        0
    );
    // 3000 imports at 200/s (a 20-call burst first) cannot take less than ~14.9 s.
    assert!(
        took >= Duration::from_secs(14),
        "3000 imports in {took:?}: faster than the limit allows"
    );
    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(outcomes.len(), 3000);
    assert!(outcomes.values().all(|v| v["status"] == "imported"));
    assert_eq!(env.committed(), ends(&offsets));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemic_fault_pauses_without_dead_lettering_and_recovers_by_itself() {
    let mut cfg = emulator_config();
    cfg.secret_key = Some(SecretKey::new("not-the-key-the-worker-signs-with"));
    let env = WorkerEnv::start(2, cfg).await;
    let users: Vec<String> = (0..40).map(|i| format!("systemic-{i:02}")).collect();
    let offsets = env.produce_users(&users).await;

    let worker = env.worker(&[]);
    let m = worker.metrics.clone();
    assert!(
        eventually(Duration::from_secs(20), || m.paused.get() == 1
            && m.systemic_fault.with_label_values(&["70009"]).get() == 1)
        .await,
        "the wrong key (70009) closes the gate and pauses intake"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(m.paused.get(), 1, "still paused");
    assert_eq!(env.outcome_count(), 0, "no outcomes during the fault");
    assert_eq!(
        env.dead_letter_count(),
        0,
        "nothing dead-lettered during the fault"
    );
    assert!(
        env.committed().is_empty(),
        "no offset committed during the fault: {:?}",
        env.committed()
    );
    let stats = env.emu.stats();
    assert_eq!(count(&stats.calls, "account_import"), 0);
    assert!(count(&stats.rejected_by_code, "70009") >= 1, "{stats:?}");

    env.emu.set_secret_key(SecretKey::new(SECRET));
    assert_eq!(
        env.wait_outcomes(40, Duration::from_secs(30)).await,
        40,
        "the worker resumes by itself"
    );
    assert!(
        eventually(WITHIN, || m.paused.get() == 0).await,
        "intake resumed"
    );
    assert_eq!(m.systemic_fault.with_label_values(&["70009"]).get(), 0);
    worker.stop().await.expect("clean stop");

    env.assert_all_imported(40, &offsets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_pauses_intake_and_bounds_records_in_flight() {
    let mut cfg = emulator_config();
    cfg.latency_ms = 50;
    let env = WorkerEnv::start(3, cfg).await;
    let users: Vec<String> = (0..1000).map(|i| format!("bp-{i:04}")).collect();
    let offsets = env.produce_users(&users).await;

    let worker = env.worker(&[
        "--max-events-in-flight",
        "100",
        "--window-size",
        "10",
        "--max-windows-in-flight",
        "2",
    ]);
    let m = worker.metrics.clone();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (m, done) = (m.clone(), done.clone());
        tokio::spawn(async move {
            let (mut max_in_flight, mut max_windows, mut paused_seen) = (0, 0, false);
            while !done.load(Ordering::Relaxed) {
                max_in_flight = max_in_flight.max(m.events_in_flight.get());
                max_windows = max_windows.max(m.windows_in_flight.get());
                paused_seen |= m.paused.get() == 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (max_in_flight, max_windows, paused_seen)
        })
    };
    assert_eq!(env.wait_outcomes(1000, Duration::from_secs(60)).await, 1000);
    done.store(true, Ordering::Relaxed);
    let (max_in_flight, max_windows, paused_seen) = sampler.await.unwrap();
    worker.stop().await.expect("clean stop");
    eprintln!(
        "back-pressure: max events in flight {max_in_flight}, max windows in flight {max_windows}"
    );

    assert!(paused_seen, "intake paused at some point");
    // Intake stops reading at the bound, so the bound is exact.
    assert!(
        max_in_flight <= 100,
        "events in flight {max_in_flight} over the bound of 100"
    );
    assert!(
        max_windows <= 2,
        "windows in flight {max_windows} over the bound of 2"
    );
    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(outcomes.len(), 1000);
    assert!(outcomes.values().all(|v| v["status"] == "imported"));
    assert_eq!(env.committed(), ends(&offsets));
}

/// At its in-flight bound the worker stops reading; when the bound holds for long (a slow
/// vendor), it pauses its partitions and polls again, so a rebalance is served while its records
/// are still in flight instead of after them.
///
/// The vendor is as slow as can be: the emulator holds every API request until B has its
/// partition, so A's window cannot finish first whatever the machine's speed (the test used to
/// make each call take 10 s and race the rebalance against them). Served by the 5 s fallback, B
/// is assigned about 10 s after A reaches its bound; without it, not before the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_held_at_its_bound_still_serves_a_rebalance() {
    let env = WorkerEnv::start(2, emulator_config()).await;
    let users: Vec<String> = (0..20).map(|i| format!("held-{i:03}")).collect();
    env.produce_users(&users).await;
    let flags = [
        "--max-events-in-flight",
        "10",
        "--window-size",
        "10",
        // Held requests must not time out: the hold is what keeps A's records in flight.
        "--request-timeout",
        "300s",
        "--drain-timeout",
        "1s",
    ];

    env.emu.hold();
    let a = env.worker(&flags);
    let ma = a.metrics.clone();
    assert!(
        eventually(WITHIN, || ma.events_in_flight.get() >= 10
            && ma.paused.get() == 1)
        .await,
        "worker A reaches its bound"
    );
    let held_at = Instant::now();
    let b = env.worker(&flags);
    let mb = b.metrics.clone();
    assert!(
        eventually(WITHIN, || mb.assigned_partitions.get() >= 1).await,
        "worker B gets a partition while A's records are held in flight"
    );
    let waited = held_at.elapsed();
    assert_eq!(
        ma.outcomes.with_label_values(&["imported"]).get(),
        0,
        "A's window was still held when B was assigned ({waited:?} after A reached its bound)"
    );
    eprintln!("held worker: B assigned {waited:?} after A reached its bound");

    env.emu.release();
    // At least once: records of the partition A gave up while they were in flight (its revocation
    // drain is 1 s here) get a second outcome from B, so count outcomes per source record.
    let per_source = || {
        let mut n: BTreeMap<(i32, i64), usize> = BTreeMap::new();
        for r in env.outcomes() {
            // A replayed record finds its user imported by the first attempt.
            let status = r.json()["status"].clone();
            assert!(
                status == "imported" || status == "already_imported",
                "{status}"
            );
            *n.entry(r.source()).or_default() += 1;
        }
        n
    };
    assert!(
        eventually(WITHIN, || per_source().len() == 20).await,
        "every record gets an outcome"
    );
    a.stop().await.expect("A stops cleanly");
    b.stop().await.expect("B stops cleanly");
    let replayed: usize = per_source().values().map(|n| n - 1).sum();
    assert!(
        replayed <= 10,
        "{replayed} second outcomes: more than A's 10 records in flight"
    );
    assert!(users.iter().all(|u| env.emu.imported(u)));
    assert_eq!(env.dead_letter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_mid_stream_commits_only_finished_records_and_loses_nothing() {
    let mut cfg = emulator_config();
    cfg.latency_ms = 20;
    // A doubled budget on both sides keeps the test short; the limiter is tested elsewhere.
    cfg.check_rate = 200.0;
    cfg.import_rate = 400.0;
    let env = WorkerEnv::start(3, cfg).await;
    let users: Vec<String> = (0..2000).map(|i| format!("stop-{i:05}")).collect();
    let (first_part, second_part) = users.split_at(500);
    let mut offsets = env.produce_users(first_part).await;
    let flags = [
        "--check-rate",
        "200",
        "--import-rate",
        "400",
        "--max-events-in-flight",
        "300",
        "--window-size",
        "50",
    ];

    // Mid-stream by construction, whatever the machine's speed: A finishes a first part, then
    // holds 300 records of the second (its bound) in flight with the API held; it is asked to
    // stop before the API is released, so it reads nothing more and drains those 300. (The test
    // used to stop A a second after its first outcome and assume it had not finished by then.)
    let a = env.worker(&flags);
    let ma = a.metrics.clone();
    assert!(
        eventually(WITHIN, || env.committed() == ends(&offsets)).await,
        "worker A finishes the first part: committed {:?}",
        env.committed()
    );
    env.emu.hold();
    offsets.extend(env.produce_users(second_part).await);
    let end = ends(&offsets);
    assert!(
        eventually(WITHIN, || ma.events_in_flight.get() == 300).await,
        "A reads up to its bound: {} in flight",
        ma.events_in_flight.get()
    );
    let in_flight_at_stop = ma.events_in_flight.get();
    a.ask_to_stop();
    env.emu.release();
    a.stop().await.expect("clean stop");

    let committed_a = env.committed();
    let outcomes_a = env.outcomes();
    let mut emitted: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for r in &outcomes_a {
        let (p, o) = r.source();
        emitted.entry(p).or_default().insert(o);
    }
    let committed_total: i64 = committed_a.values().sum();
    eprintln!(
        "graceful stop: {} outcomes, committed {committed_a:?} (total {committed_total}), {in_flight_at_stop} in flight at stop",
        outcomes_a.len()
    );
    assert_eq!(
        committed_total,
        first_part.len() as i64 + in_flight_at_stop,
        "stopped mid-stream, having drained all it read: the first part and the {in_flight_at_stop} \
         in flight (committed {committed_a:?})"
    );
    for p in 0..3 {
        let c = committed_a.get(&p).copied().unwrap_or(0);
        let have = emitted.get(&p).cloned().unwrap_or_default();
        let contiguous = (0..).take_while(|o| have.contains(o)).count() as i64;
        assert!(
            c <= contiguous,
            "partition {p}: committed {c}, but outcomes only cover 0..{contiguous}"
        );
        // A graceful stop drains what it read: everything it emitted is committed too.
        assert!(
            have.iter().all(|&o| o < c),
            "partition {p}: outcomes past the committed offset {c}"
        );
    }

    let b = env.worker(&flags);
    assert!(
        eventually(WITHIN, || env.committed() == end).await,
        "worker B finishes the input: committed {:?}, end {end:?}",
        env.committed()
    );
    b.stop().await.expect("clean stop");

    let all = env.outcomes();
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for r in &all {
        *seen.entry(r.source()).or_default() += 1;
    }
    for (&p, &e) in &end {
        for o in 0..e {
            assert!(
                seen.contains_key(&(p, o)),
                "input {p}/{o} has no outcome: lost"
            );
        }
    }
    let duplicates = all.len() - seen.len();
    eprintln!(
        "graceful stop: {} outcomes in all, {duplicates} duplicates",
        all.len()
    );
    assert!(
        duplicates as i64 <= in_flight_at_stop,
        "{duplicates} duplicates, {in_flight_at_stop} were in flight"
    );
    assert!(all.iter().all(|r| r.json()["status"] == "imported"));
    assert_eq!(env.dead_letter_count(), 0);
}
