//! Rate budgets shared across replicas (`docs/ARCHITECTURE.md`, "Rate limits across replicas"):
//! three workers in one group on a 6-partition topic, each configured with the app's whole budget,
//! stay together within the emulator's limits (no 60007) and use at least 95 % of them.
//!
//! The limits are smaller than the vendor's (20 check/s, 40 import/s, 10 batch import/s) to keep
//! the test short.

mod common;

use std::time::{Duration, Instant};

use common::emulator::{count, emulator_config, SECRET};
use common::kafka::{event_json, eventually, mock_env, produce, RunningWorker, WorkerEnv};
use common::process::{run_args, Proc};

const PARTITIONS: i32 = 6;
const REPLICAS: usize = 3;
const CHECK_RATE: f64 = 20.0;
const IMPORT_RATE: f64 = 40.0;
const BATCH_RATE: f64 = 10.0;

/// Waits until each of `workers` owns `PARTITIONS / workers.len()` partitions and has taken that
/// share of the app's budget; panics with what they have otherwise.
async fn wait_for_shares(workers: &[&RunningWorker]) {
    let n = workers.len();
    let share = 1.0 / n as f64;
    let settled = eventually(Duration::from_secs(60), || {
        workers.iter().all(|w| {
            let m = &w.metrics;
            let ceiling = |api: &str| m.limiter_ceiling.with_label_values(&[api]).get();
            m.assigned_partitions.get() == i64::from(PARTITIONS) / n as i64
                && (ceiling("account_import") - IMPORT_RATE * share).abs() < 1e-6
                && (ceiling("account_check") - CHECK_RATE * share).abs() < 1e-6
                && (ceiling("multiaccount_import") - BATCH_RATE * share).abs() < 1e-6
        })
    })
    .await;
    let state: Vec<_> = workers
        .iter()
        .map(|w| {
            let m = &w.metrics;
            (
                m.assigned_partitions.get(),
                m.limiter_ceiling
                    .with_label_values(&["account_check"])
                    .get(),
                m.limiter_ceiling
                    .with_label_values(&["account_import"])
                    .get(),
            )
        })
        .collect();
    assert!(
        settled,
        "each of {n} replicas owns {} partitions and 1/{n} of the budget; (partitions, check, import): {state:?}",
        i64::from(PARTITIONS) / n as i64
    );
}

/// The emulator enforcing the test's check and import limits, with 20 ± 10 ms of API latency.
fn limited_emulator() -> account_sync::devtools::emulator::EmulatorConfig {
    let mut cfg = emulator_config();
    cfg.check_rate = CHECK_RATE;
    cfg.import_rate = IMPORT_RATE;
    cfg.latency_ms = 20;
    cfg.latency_jitter_ms = 10;
    cfg
}

/// Flags of a replica: the app's whole budget, plus `extra`.
fn budget_flags<'a>(check: &'a str, import: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--check-rate",
        check,
        "--import-rate",
        import,
        "--batch-import-rate",
        "10",
    ];
    flags.extend_from_slice(extra);
    flags
}

/// Three workers on `env`'s group with the app's budget, once each owns its share of the
/// partitions and has taken its share of the budget.
async fn replicas(env: &WorkerEnv, extra: &[&str]) -> Vec<RunningWorker> {
    let (check, import) = (CHECK_RATE.to_string(), IMPORT_RATE.to_string());
    let flags = budget_flags(&check, &import, extra);
    let workers: Vec<RunningWorker> = (0..REPLICAS).map(|_| env.worker(&flags)).collect();
    wait_for_shares(&workers.iter().collect::<Vec<_>>()).await;
    workers
}

/// Waits until every one of `users` has an outcome, stops the replicas, checks that each user was
/// imported exactly once, and returns the emulator's stats.
async fn run_out(
    env: &WorkerEnv,
    workers: Vec<RunningWorker>,
    users: &[String],
) -> account_sync::devtools::emulator::Stats {
    assert!(
        env.wait_outcomes(users.len(), Duration::from_secs(60))
            .await
            >= users.len(),
        "every user gets an outcome"
    );
    stop_all(workers).await;
    let stats = env.emu.stats();
    assert_eq!(
        stats.imported_accounts,
        users.len() as u64,
        "every user imported once"
    );
    stats
}

/// Samples the emulator's accepted calls of `api` every 10 ms until `total` were accepted (or
/// `within` passes); returns (seconds since start, accepted) samples.
async fn sample_accepted(
    env: &WorkerEnv,
    api: &str,
    total: u64,
    within: Duration,
) -> Vec<(f64, u64)> {
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let accepted = count(&env.emu.stats().accepted, api);
        samples.push((start.elapsed().as_secs_f64(), accepted));
        if accepted >= total || start.elapsed() > within {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls per second over the steady part: from the first sample at or above 10 % of `total` to
/// the first at or above 90 %.
fn steady_rate(samples: &[(f64, u64)], total: u64) -> f64 {
    let at = |q: f64| {
        samples
            .iter()
            .find(|(_, n)| *n as f64 >= q * total as f64)
            .copied()
            .expect("the run reached the mark")
    };
    let ((t10, n10), (t90, n90)) = (at(0.1), at(0.9));
    (n90 - n10) as f64 / (t90 - t10)
}

async fn stop_all(workers: Vec<RunningWorker>) {
    for w in workers {
        w.stop().await.expect("clean stop");
    }
}

/// Samples the emulator's accepted `api` calls until `calls` are in, waits until all `users`
/// have an outcome, stops the replicas, and checks that together they used 95-105 % of `limit`
/// over the steady part, without a single frequency-limit answer. Returns the emulator's stats.
async fn assert_shared_use(
    env: &WorkerEnv,
    workers: Vec<RunningWorker>,
    api: &str,
    calls: u64,
    users: usize,
    limit: f64,
) -> account_sync::devtools::emulator::Stats {
    let samples = sample_accepted(env, api, calls, Duration::from_secs(60)).await;
    assert!(
        env.wait_outcomes(users, Duration::from_secs(30)).await >= users,
        "every user gets an outcome"
    );
    stop_all(workers).await;

    let stats = env.emu.stats();
    assert_eq!(
        stats.rate_limited.values().sum::<u64>(),
        0,
        "together the replicas stay within the app's limits: {stats:?}"
    );
    let rate = steady_rate(&samples, calls);
    eprintln!("steady part: {rate:.2} {api} calls/s together (limit {limit}/s)");
    assert!(
        rate >= 0.95 * limit,
        "the replicas use at least 95 % of the {limit}/s {api} limit together: {rate:.1}/s"
    );
    assert!(rate <= 1.05 * limit, "and not more than it: {rate:.1}/s");
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_import_budget() {
    let cfg = limited_emulator();
    let env = WorkerEnv::start(PARTITIONS, cfg).await;
    let workers = replicas(&env, &[]).await;

    // ~10 s of imports for the whole app, spread over all partitions.
    let users: Vec<String> = (0..400).map(|i| format!("budget-new-{i:04}")).collect();
    env.produce_users(&users).await;
    let stats = assert_shared_use(
        &env,
        workers,
        "account_import",
        users.len() as u64,
        users.len(),
        IMPORT_RATE,
    )
    .await;
    assert_eq!(count(&stats.accepted, "account_import"), users.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_check_budget() {
    let mut cfg = limited_emulator();
    cfg.existing_fraction = 1.0;
    let env = WorkerEnv::start(PARTITIONS, cfg).await;
    // Windows of 5 UserIDs: ~10 s of checks for 1,000 already-imported users.
    let workers = replicas(&env, &["--window-size", "5"]).await;

    let users: Vec<String> = (0..1_000).map(|i| format!("budget-old-{i:04}")).collect();
    env.produce_users(&users).await;
    // Every window holds 5 distinct users (a backlog fills them): 200 checks.
    let checks = users.len() as u64 / 5;
    assert_shared_use(
        &env,
        workers,
        "account_check",
        checks,
        users.len(),
        CHECK_RATE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_batch_import_budget() {
    let mut cfg = emulator_config();
    // The emulator limits only the API under test here (the check and single-import budgets
    // have their own tests): its slack below applies to every limited API, and would tighten
    // the others' buckets.
    cfg.check_rate = 0.0;
    cfg.import_rate = 0.0;
    cfg.multi_import_rate = BATCH_RATE;
    // No jitter: at 10 calls/s the replicas' calls are 100 ms apart with no slack left in the
    // emulator's bucket, and ±10 ms of latency before the emulator counts a call can let one
    // arrive early; the other budget tests, at 20 and 40 calls/s, keep the jitter.
    cfg.latency_ms = 20;
    // The emulator counts a call when it arrives, not when the worker's limiter let it go: the
    // machine's scheduling delay between the two (under CI load, tens of ms) is not the
    // worker's doing. At 10 calls/s with the replicas using all of it, the emulator's bucket has
    // no slack, and one call delayed then followed by one on time drew a 60007 (1 run in 4 on a
    // loaded 2-core machine). One call of slack (100 ms) absorbs that delay; an overshoot of the
    // replicas' rate still empties it within seconds, and the steady-rate bound below still
    // holds them to 95-105 % of the limit.
    cfg.rate_burst = Some(BATCH_RATE as u32 + 1);
    let env = WorkerEnv::start(PARTITIONS, cfg).await;
    // Windows of 10 new users, each imported in one multiaccount_import: ~10 s of batch calls.
    let workers = replicas(&env, &["--window-size", "10", "--import-api", "batch"]).await;

    let users: Vec<String> = (0..1_000).map(|i| format!("budget-batch-{i:04}")).collect();
    env.produce_users(&users).await;
    let stats = assert_shared_use(
        &env,
        workers,
        "multiaccount_import",
        users.len() as u64 / 10,
        users.len(),
        BATCH_RATE,
    )
    .await;
    assert_eq!(
        count(&stats.calls, "account_import"),
        0,
        "no single imports"
    );
    assert_eq!(stats.imported_accounts, users.len() as u64);
}

/// `--budget-split partitions`: each replica's share is its fraction of the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_shares_follow_every_rebalance() {
    shares_follow_every_rebalance(&["--budget-split", "partitions"]).await;
}

/// By demand, idle replicas split the budget equally: a third each, then half when one leaves
/// (its tombstone releases its share at once), and a third again when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_shares_follow_members_leaving_and_joining() {
    shares_follow_every_rebalance(&[]).await;
}

async fn shares_follow_every_rebalance(extra: &[&str]) {
    let env = WorkerEnv::start(PARTITIONS, emulator_config()).await;
    let (check, import) = (CHECK_RATE.to_string(), IMPORT_RATE.to_string());
    let flags = budget_flags(&check, &import, extra);
    let mut workers = replicas(&env, extra).await;

    // One leaves: the other two each gain a partition and half the budget.
    workers.pop().unwrap().stop().await.expect("clean stop");
    wait_for_shares(&workers.iter().collect::<Vec<_>>()).await;

    // It comes back: the two only give partitions up (a rebalance that only revokes, for them),
    // and go back to a third each.
    workers.push(env.worker(&flags));
    wait_for_shares(&workers.iter().collect::<Vec<_>>()).await;
    stop_all(workers).await;
}

/// The skew of issue 14: 80 % of the new users on one of six partitions. By partition share the
/// replica with the hot partition could use only a third of the import budget while the others
/// run dry; by demand the three together use the whole budget, without a frequency-limit answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_partition_gets_the_budget_the_others_do_not_use() {
    let cfg = limited_emulator();
    let env = WorkerEnv::start(PARTITIONS, cfg).await;
    let workers = replicas(&env, &[]).await;

    // 25 s of imports for the whole app: 1,000 users, 800 of them on partition 0. The replicas
    // without it run out after about 6 s; from then on the one with it may use the whole budget.
    let users: Vec<String> = (0..1000).map(|i| format!("skew-{i:04}")).collect();
    produce_skewed(&env, &users, 0.8).await;
    let stats = assert_shared_use(
        &env,
        workers,
        "account_import",
        users.len() as u64,
        users.len(),
        IMPORT_RATE,
    )
    .await;
    assert_eq!(count(&stats.accepted, "account_import"), users.len() as u64);
}

/// Produces JSON events for `users`: `hot` of them on partition 0, the rest round-robin over
/// the other partitions.
async fn produce_skewed(env: &WorkerEnv, users: &[String], hot: f64) {
    let producer = env.kafka.producer();
    let cut = (users.len() as f64 * hot).round() as usize;
    let payloads: Vec<Vec<u8>> = users.iter().map(|u| event_json(u, "n")).collect();
    type KeyAndPayload<'a> = (Option<&'a str>, Option<&'a [u8]>);
    let mut by_partition: Vec<Vec<KeyAndPayload>> = vec![Vec::new(); PARTITIONS as usize];
    for (i, (u, p)) in users.iter().zip(&payloads).enumerate() {
        let part = if i < cut {
            0
        } else {
            1 + (i - cut) % (PARTITIONS as usize - 1)
        };
        by_partition[part].push((Some(u.as_str()), Some(p.as_slice())));
    }
    for (part, records) in by_partition.iter().enumerate() {
        produce(&producer, &env.topics.input, Some(part as i32), records).await;
    }
}

/// A replica SIGKILLed mid-run — a process of its own, so it sends no tombstone and does not
/// leave the group — keeps its share until its lease expires; then the other two take it back
/// within seconds. A replica that joins mid-run gets a share only once the others can have seen
/// it. Over the whole run: frequency-limit answers at most 0.5 % of the calls, and every user
/// imported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_releases_its_share_when_its_lease_expires() {
    let cfg = limited_emulator();
    let env = WorkerEnv::start(PARTITIONS, cfg).await;
    let lease = Duration::from_secs(2);
    let (check, import) = (CHECK_RATE.to_string(), IMPORT_RATE.to_string());
    let flags = budget_flags(&check, &import, &[]);
    let mut workers: Vec<RunningWorker> = (0..2).map(|_| env.worker(&flags)).collect();
    let api = env.emu.base_url();
    let args = run_args(&env.kafka.brokers, &env.topics, &env.group, &api, &flags);
    let mut victim = Proc::spawn(
        "budget-victim",
        &args,
        &[("ACCOUNT_SYNC_SECRET_KEY", SECRET)],
    );
    let import_ceilings = |ws: &[RunningWorker]| -> Vec<f64> {
        ws.iter()
            .map(|w| {
                w.metrics
                    .limiter_ceiling
                    .with_label_values(&["account_import"])
                    .get()
            })
            .collect()
    };
    // The two in this process own a third of the partitions and of the budget each: the
    // victim's lease is in their view.
    let third = IMPORT_RATE / 3.0;
    let settled = eventually(Duration::from_secs(60), || {
        workers
            .iter()
            .all(|w| w.metrics.assigned_partitions.get() == 2)
            && import_ceilings(&workers)
                .iter()
                .all(|c| (c - third).abs() < 1e-6)
    })
    .await;
    assert!(
        settled,
        "three replicas share the budget: {:?}; victim: {}",
        import_ceilings(&workers),
        victim.logs()
    );

    let users: Vec<String> = (0..600).map(|i| format!("killed-{i:04}")).collect();
    env.produce_users(&users).await;
    assert!(env.wait_outcomes(100, Duration::from_secs(30)).await >= 100);

    let status = victim.stop("-KILL", Duration::from_secs(10));
    assert!(!status.success(), "killed: {status:?}");
    let killed = Instant::now();
    let back = eventually(lease + Duration::from_secs(5), || {
        import_ceilings(&workers).iter().sum::<f64>() >= 0.95 * IMPORT_RATE
    })
    .await;
    assert!(
        back,
        "the two left hold {:?} of {IMPORT_RATE} imports/s {:?} after the kill",
        import_ceilings(&workers),
        killed.elapsed()
    );
    eprintln!(
        "budget back to the two replicas {:?} after the kill",
        killed.elapsed()
    );

    // A newcomer mid-run.
    workers.push(env.worker(&flags));
    let stats = run_out(&env, workers, &users).await;
    let calls: u64 = stats.calls.values().sum();
    let limited: u64 = stats.rate_limited.values().sum();
    eprintln!("{limited} frequency-limit answers of {calls} calls");
    assert!(
        limited as f64 <= 0.005 * calls as f64,
        "frequency-limit answers at most 0.5 % of the calls: {limited} of {calls}"
    );
}

/// The coordination topic's partition leader goes down mid-run: leases can be neither written nor
/// read, every replica falls back to its partition share within about a lease — never over the
/// budget meanwhile — and goes back to sharing by demand once the leader is back. (Two brokers:
/// the input, output and group live on the first, the budget topic on the second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_topic_whose_leader_is_down_falls_back_to_partition_shares_and_recovers() {
    let cfg = limited_emulator();
    let Some(env) = mock_env(2, PARTITIONS, cfg).await else {
        return;
    };
    let mock = env.kafka.embedded.as_ref().expect("mock cluster");
    let topic = env.kafka.name("budget");
    env.kafka.create_topic(&topic, 1).await;
    mock.partition_leader(&topic, 0, 2).unwrap();
    let t = &env.topics;
    for (name, partitions) in [(&t.input, PARTITIONS), (&t.outcomes, 1), (&t.dlq, 1)] {
        for p in 0..partitions {
            mock.partition_leader(name, p, 1).unwrap();
        }
    }
    mock.group_coordinator(&env.group, 1).unwrap();
    let extra = ["--budget-topic", topic.as_str()];
    let workers = replicas(&env, &extra).await;
    let modes = |mode: &str| -> Vec<i64> {
        workers
            .iter()
            .map(|w| w.metrics.budget_mode.with_label_values(&[mode]).get())
            .collect()
    };
    assert_eq!(modes("demand"), vec![1; REPLICAS]);

    let users: Vec<String> = (0..600).map(|i| format!("leader-down-{i:04}")).collect();
    env.produce_users(&users).await;
    assert!(env.wait_outcomes(60, Duration::from_secs(30)).await >= 60);

    mock.broker_down(2).unwrap();
    let fell_back = eventually(Duration::from_secs(10), || {
        modes("partition_share") == vec![1; REPLICAS]
    })
    .await;
    assert!(
        fell_back,
        "every replica falls back: {:?}",
        modes("partition_share")
    );
    let limited_at_fallback = env.emu.stats().rate_limited.values().sum::<u64>();

    mock.broker_up(2).unwrap();
    let recovered = eventually(Duration::from_secs(30), || {
        modes("demand") == vec![1; REPLICAS]
    })
    .await;
    assert!(
        recovered,
        "every replica shares by demand again: {:?}",
        modes("demand")
    );
    let stats = run_out(&env, workers, &users).await;
    assert_eq!(
        limited_at_fallback, 0,
        "no frequency-limit answer up to the fallback: {stats:?}"
    );
    assert_eq!(
        stats.rate_limited.values().sum::<u64>(),
        0,
        "nor through the fallback and back: {stats:?}"
    );
}

/// While the budget topic cannot be used (here: it does not exist and may not be created, on a
/// broker that does not create topics by itself), every replica falls back to its partition
/// share — which needs nobody else and never adds up to more than the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_budget_topic_replicas_fall_back_to_partition_shares() {
    let cfg = limited_emulator();
    let env = WorkerEnv::start(PARTITIONS, cfg).await;
    let missing = env.kafka.name("no-such-budget-topic");
    let extra = [
        "--budget-topic",
        missing.as_str(),
        "--no-budget-topic-create",
    ];
    let workers = replicas(&env, &extra).await;
    for w in &workers {
        let mode = |m: &str| w.metrics.budget_mode.with_label_values(&[m]).get();
        assert_eq!((mode("demand"), mode("partition_share")), (0, 1));
    }
    let users: Vec<String> = (0..300).map(|i| format!("fallback-{i:04}")).collect();
    env.produce_users(&users).await;
    // Evenly spread, the partition shares use the budget too.
    assert_shared_use(
        &env,
        workers,
        "account_import",
        users.len() as u64,
        users.len(),
        IMPORT_RATE,
    )
    .await;
}
