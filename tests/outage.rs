//! A Chat API outage pauses the worker and dead-letters nothing; a backup domain is used before
//! an outage is declared; a poison account is still dead-lettered alone.
//!
//! Retry budgets are short here (`--retry-max-elapsed 1s`), so every outage below outlasts them:
//! without the outage rule each waiting call would dead-letter its users.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use account_sync::devtools::emulator::{BrokenAnswer, Emulator, EmulatorHandle, Faults};
use account_sync::observe::metrics::Metrics;
use common::emulator::{count, emulator_config, start_emulator, SECRET};
use common::kafka::{
    admin_get, ends, eventually, outcomes_by_source, worker_args, RunningWorker, WorkerEnv,
};
use common::process::{run_args, Proc};

/// Short retry budgets and a quick outage rule.
const FLAGS: &[&str] = &[
    "--retry-max-elapsed",
    "1s",
    "--outage-after",
    "2s",
    "--outage-min-failed-calls",
    "2",
];

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

fn outage_in_force(m: &Metrics) -> bool {
    m.paused.get() == 1 && m.systemic_fault.with_label_values(&["unavailable"]).get() == 1
}

fn outages(m: &Metrics) -> u64 {
    m.systemic_faults.with_label_values(&["unavailable"]).get()
}

/// Runs `users` through a worker while `outage` is in force on the emulator, checks that the
/// worker pauses with the reason on `/readyz` and writes nothing, cures the outage with `cure`
/// and checks that every user is imported, nothing dead-lettered and every offset committed.
async fn outage_then_recovery(
    env: &WorkerEnv,
    api_base_url: &str,
    users: &[String],
    hold_for: Duration,
    cure: impl std::future::Future<Output = ()>,
) {
    let offsets = env.produce_users(users).await;
    let args = worker_args(&env.kafka, &env.topics, api_base_url, &env.group, FLAGS);
    let (worker, admin) = RunningWorker::start_with_admin(args).await;
    let m = worker.metrics.clone();
    assert!(
        eventually(Duration::from_secs(30), || outage_in_force(&m)).await,
        "the outage closes the gate and pauses intake"
    );
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Chat API unavailable"), "/readyz: {body}");

    // Longer than any call's retry budget: still nothing written, nothing committed.
    tokio::time::sleep(hold_for).await;
    assert!(outage_in_force(&m), "still paused");
    assert_eq!(env.dead_letter_count(), 0, "nothing dead-lettered");
    assert_eq!(env.outcome_count(), 0, "no outcomes during the outage");
    assert!(env.committed().is_empty(), "{:?}", env.committed());

    cure.await;
    assert_eq!(
        env.wait_outcomes(users.len(), Duration::from_secs(60))
            .await,
        users.len(),
        "every event gets its outcome after the outage"
    );
    assert!(
        eventually(Duration::from_secs(10), || m.paused.get() == 0).await,
        "intake resumed"
    );
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outages(&m), 1, "one outage, no flapping");
    worker.stop().await.expect("clean stop");

    env.assert_all_imported(users.len(), &offsets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answered_502_pauses_the_worker_until_the_api_is_back() {
    let mut cfg = emulator_config();
    cfg.http_502_rate = 1.0;
    let env = WorkerEnv::start(2, cfg).await;
    let users = users("bad-gateway", 120);
    let url = env.emu.base_url();
    outage_then_recovery(&env, &url, &users, Duration::from_secs(3), async {
        env.emu.set_faults(Faults::default());
    })
    .await;
    assert!(users.iter().all(|u| env.emu.imported(u)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_time_out_pause_the_worker_until_the_api_is_back() {
    let mut cfg = emulator_config();
    cfg.hang_rate = 1.0;
    // Longer than the worker's 3.5 s request timeout.
    cfg.hang_ms = 8_000;
    let env = WorkerEnv::start(2, cfg).await;
    let users = users("hang", 60);
    let url = env.emu.base_url();
    outage_then_recovery(&env, &url, &users, Duration::from_secs(2), async {
        env.emu.set_faults(Faults::default());
    })
    .await;
}

/// An API (or a proxy) answering HTTP 200 with answers that do not answer the request: the HTTP
/// calls "succeed", yet nothing is learnt about any user, so it is an outage like a 502 — the
/// worker pauses, dead-letters nothing and imports everyone once the answers heal.
async fn broken_answers_then_healed(kind: BrokenAnswer, prefix: &str) {
    let mut cfg = emulator_config();
    cfg.broken_answer = Some(kind);
    let env = WorkerEnv::start(2, cfg).await;
    let users = users(prefix, 100);
    let url = env.emu.base_url();
    outage_then_recovery(&env, &url, &users, Duration::from_secs(3), async {
        env.emu.set_faults(Faults::default());
    })
    .await;
    assert!(env.emu.stats().broken_answers > 0);
}

/// The answers name users nobody asked about (the vendor bug or a middlebox replaying
/// another request's answer): before, every event was dead-lettered `retries_exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_about_other_users_pause_the_worker_until_they_heal() {
    broken_answers_then_healed(BrokenAnswer::ForeignUsers, "foreign").await;
}

/// Answers that never end: refused at the body limit, so the worker's memory stays flat, and an
/// outage like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_end_pause_the_worker_until_they_heal() {
    broken_answers_then_healed(BrokenAnswer::EndlessBody, "endless").await;
}

/// A proxy's page with status 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_page_with_status_200_pauses_the_worker_until_it_heals() {
    broken_answers_then_healed(BrokenAnswer::HtmlPage, "proxy-page").await;
}

/// A fresh emulator (same app, no faults) on `addr`, where an earlier one listened.
async fn start_on(addr: SocketAddr) -> EmulatorHandle {
    Emulator::start(emulator_config(), addr)
        .await
        .expect("the emulator starts again on its old port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_api_pauses_the_worker_until_it_listens_again() {
    let mut env = WorkerEnv::start(2, emulator_config()).await;
    let (url, addr) = (env.emu.base_url(), env.emu.local_addr());
    // Connections to the old address are refused from now on; `env.emu` is a stand-in.
    let stand_in = start_emulator(emulator_config()).await;
    let stopped = std::mem::replace(&mut env.emu, stand_in);
    stopped.shutdown().await;
    let users = users("refused", 80);
    let revived = std::sync::Mutex::new(None);
    outage_then_recovery(&env, &url, &users, Duration::from_secs(2), async {
        *revived.lock().unwrap() = Some(start_on(addr).await);
    })
    .await;
    let revived = revived.into_inner().unwrap().expect("restarted");
    assert!(users.iter().all(|u| revived.imported(u)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_failing_backup_healthy_calls_go_to_the_backup_and_back() {
    let mut cfg = emulator_config();
    cfg.http_502_rate = 1.0;
    let env = WorkerEnv::start(2, cfg).await;
    let backup = start_emulator(emulator_config()).await;
    let backup_url = backup.base_url();
    // The default --outage-after (10 s), not the 2 s of FLAGS: the calls fail over within
    // milliseconds of the first failure, and "no outage meanwhile" should not rest on a loaded
    // machine managing that within 2 s.
    let mut flags: Vec<&str> = FLAGS
        .chunks(2)
        .filter(|f| f[0] != "--outage-after")
        .flatten()
        .copied()
        .collect();
    flags.extend(["--backup-api-base-url", &backup_url]);
    let first = users("failover", 100);
    let offsets = env.produce_users(&first).await;
    let worker = env.worker(&flags);
    let m = worker.metrics.clone();
    assert_eq!(env.wait_outcomes(100, Duration::from_secs(30)).await, 100);
    assert_eq!(m.chat_api_domain.with_label_values(&["backup"]).get(), 1);
    assert_eq!(
        m.chat_api_domain_switches
            .with_label_values(&["backup"])
            .get(),
        1
    );
    assert!(
        first.iter().all(|u| backup.imported(u)),
        "served by the backup"
    );
    assert_eq!(outages(&m), 0, "no pause: the backup served");

    // The primary heals: the failback probe sends calls back to it.
    env.emu.set_faults(Faults::default());
    assert!(
        eventually(Duration::from_secs(10), || m
            .chat_api_domain
            .with_label_values(&["primary"])
            .get()
            == 1)
        .await,
        "back on the primary"
    );
    let backup_calls = backup.stats().calls.values().sum::<u64>();
    let second = users("failback", 50);
    let more = env.produce_users(&second).await;
    assert_eq!(env.wait_outcomes(150, Duration::from_secs(30)).await, 150);
    worker.stop().await.expect("clean stop");
    assert!(
        second.iter().all(|u| env.emu.imported(u)),
        "served by the primary"
    );
    assert_eq!(
        backup.stats().calls.values().sum::<u64>(),
        backup_calls,
        "nothing more went to the backup"
    );
    assert_eq!(env.dead_letter_count(), 0);
    let mut all = offsets;
    all.extend(more);
    assert_eq!(env.committed(), ends(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_api_is_retried_not_paused() {
    let mut cfg = emulator_config();
    cfg.http_502_rate = 0.3;
    let env = WorkerEnv::start(2, cfg).await;
    let users = users("flaky", 300);
    let offsets = env.produce_users(&users).await;
    // The default outage rule; enough attempts that 30 % failures never exhaust a call.
    let worker = env.worker(&["--retry-max-attempts", "30", "--retry-max-elapsed", "30s"]);
    let m = worker.metrics.clone();
    assert_eq!(env.wait_outcomes(300, Duration::from_secs(60)).await, 300);
    assert_eq!(outages(&m), 0, "never paused");
    worker.stop().await.expect("clean stop");
    assert!(
        count(&env.emu.stats().calls, "account_import") > 300,
        "retried"
    );
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(outcomes_by_source(&env.outcomes()).len(), 300);
    assert_eq!(env.committed(), ends(&offsets));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_account_is_dead_lettered_alone_while_the_rest_flows() {
    let mut cfg = emulator_config();
    cfg.poison_user_id = vec!["poison-025".into()];
    let env = WorkerEnv::start(2, cfg).await;
    let users = users("poison", 50);
    let offsets = env.produce_users(&users).await;
    let worker = env.worker(FLAGS);
    let m = worker.metrics.clone();
    assert_eq!(env.wait_outcomes(50, Duration::from_secs(30)).await, 50);
    worker.stop().await.expect("clean stop");
    assert_eq!(outages(&m), 0, "one failing account is no outage");

    let dead = env.dead_letters();
    assert_eq!(dead.len(), 1, "only the poison account");
    assert_eq!(dead[0].key.as_deref(), Some(b"poison-025".as_slice()));
    assert_eq!(
        m.events_dead_lettered
            .with_label_values(&["import", "retries_exhausted"])
            .get(),
        1
    );
    let outcomes = outcomes_by_source(&env.outcomes());
    let failed: Vec<_> = outcomes
        .values()
        .filter(|v| v["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["user_id"], "poison-025");
    assert_eq!(failed[0]["error_code"], 70500);
    assert!(users
        .iter()
        .filter(|u| *u != "poison-025")
        .all(|u| env.emu.imported(u)));
    assert_eq!(env.committed(), ends(&offsets));
}

/// The binary, as Kubernetes runs it: an API host that does not resolve is an outage; SIGTERM
/// during it exits 0 without waiting out the drain timeout (the windows waiting at the closed
/// gate are abandoned at once), offsets uncommitted; a restart once the API is reachable imports
/// everything. The drain timeout is a minute, so "did not wait for it" has a wide margin on a
/// loaded machine (the test used to allow 6 s against a 3 s drain timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_exits_cleanly_and_a_restart_imports_everything() {
    let env = WorkerEnv::start(2, emulator_config()).await;
    let users = users("dns", 40);
    let offsets = env.produce_users(&users).await;
    let secret = [("ACCOUNT_SYNC_SECRET_KEY", SECRET)];
    let drain_timeout = Duration::from_secs(60);
    let mut flags = FLAGS.to_vec();
    flags.extend(["--drain-timeout", "60s"]);
    let unresolvable = "https://account-sync-outage-test.invalid";
    let args = run_args(
        &env.kafka.brokers,
        &env.topics,
        &env.group,
        unresolvable,
        &flags,
    );
    let mut proc = Proc::spawn("dns-outage", &args, &secret);
    let logs_say = |p: &Proc, what: &str| p.logs().contains(what);
    assert!(
        eventually(Duration::from_secs(30), || logs_say(
            &proc,
            "Chat API unavailable"
        ))
        .await,
        "the outage is declared; log: {}",
        proc.logs()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    let status = proc.stop("-TERM", drain_timeout + Duration::from_secs(30));
    assert!(status.success(), "exit 0; log: {}", proc.logs());
    assert!(
        asked.elapsed() < drain_timeout,
        "the stop did not wait out the drain timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(env.outcome_count(), 0);
    assert!(
        env.committed().values().all(|o| *o == 0),
        "nothing committed past the start: {:?}",
        env.committed()
    );

    let args = run_args(
        &env.kafka.brokers,
        &env.topics,
        &env.group,
        &env.emu.base_url(),
        FLAGS,
    );
    let mut proc = Proc::spawn("after-outage", &args, &secret);
    assert_eq!(env.wait_outcomes(40, Duration::from_secs(40)).await, 40);
    assert!(
        eventually(Duration::from_secs(20), || env.committed()
            == ends(&offsets))
        .await,
        "committed: {:?}",
        env.committed()
    );
    assert!(proc.stop("-TERM", Duration::from_secs(30)).success());
    assert!(users.iter().all(|u| env.emu.imported(u)));
    assert_eq!(env.dead_letter_count(), 0);
}
