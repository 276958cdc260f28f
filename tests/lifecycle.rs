//! The account's whole life end to end: creates, profile updates and deletions, each user's in
//! offset order across windows in flight; deletion switched off for the app; a dry run.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use account_sync::devtools::emulator::{EmulatorConfig, Profile, UserCall};
use common::emulator::{count, emulator_config};
use common::events::{after, payload, states, Kind, Stream, LIFECYCLE, ROUNDS};
use common::kafka::{eventually, outcomes_by_source, produce, WorkerEnv};

/// Asserts that the vendor saw `user`'s events take effect in their order: every state a call
/// left behind is the state of an event at or after the one the previous call reached.
fn assert_in_order(user: &str, log: &[UserCall], wanted: &[Option<Profile>]) {
    let (mut state, mut reached) = (None, 0);
    for call in log {
        let Some(next) = after(&state, call) else {
            continue;
        };
        match (reached..wanted.len()).find(|&j| wanted[j] == next) {
            Some(j) => reached = j,
            None => panic!(
                "{user}: {call:?} left {next:?}, which no event from #{reached} on asks for; log {log:?}, states {wanted:?}"
            ),
        }
        state = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_s_events_take_effect_in_offset_order_across_windows_in_flight() {
    // Answers 0-40 ms late, so windows in flight answer out of order.
    let cfg = EmulatorConfig {
        user_log: true,
        latency_ms: 20,
        latency_jitter_ms: 20,
        ..emulator_config()
    };
    let env = WorkerEnv::start(2, cfg).await;
    // Rounds of one event per user: a user's next event comes a round later, many windows of 2
    // later, while the earlier ones are still in flight.
    let users: Vec<String> = (0..24).map(|i| format!("life-{i:02}")).collect();
    let stream = Stream::of(&users, &ROUNDS, env.partitions);
    stream
        .produce(&env.kafka.producer(), &env.topics.input)
        .await;
    let produced = stream.len();

    let mut flags = LIFECYCLE.to_vec();
    flags.extend(["--window-size", "2"]);
    let worker = env.worker(&flags);
    assert_eq!(
        env.wait_outcomes(produced, Duration::from_secs(120)).await,
        produced
    );
    worker.stop().await.expect("clean stop");

    assert_eq!(env.dead_letter_count(), 0);
    for (user, events) in &stream.events {
        let wanted = states(None, events);
        assert_eq!(
            &env.emu.profile(user),
            wanted.last().unwrap(),
            "{user}: the account is what its last event asks"
        );
        assert_in_order(user, &env.emu.user_log(user), &wanted);
    }
    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(outcomes.len(), produced);
    let statuses: BTreeMap<String, usize> = outcomes.values().fold(BTreeMap::new(), |mut m, v| {
        *m.entry(v["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
        m
    });
    for status in ["imported", "updated", "deleted"] {
        assert!(statuses.contains_key(status), "{status} in {statuses:?}");
    }
    assert!(
        statuses.keys().all(|s| [
            "imported",
            "already_imported",
            "updated",
            "deleted",
            "already_absent"
        ]
        .contains(&s.as_str())),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_switched_off_pauses_without_dead_lettering_until_it_is_on() {
    // Every account exists: the creates are already imported, the deletes find their accounts.
    let cfg = EmulatorConfig {
        deletion_disabled: true,
        existing_fraction: 1.0,
        ..emulator_config()
    };
    let env = WorkerEnv::start(1, cfg).await;
    let kept: Vec<String> = (0..10).map(|i| format!("kept-{i}")).collect();
    let gone: Vec<String> = (0..10).map(|i| format!("gone-{i}")).collect();
    let of = |users: &[String], kind| -> Vec<(String, Vec<u8>)> {
        users
            .iter()
            .map(|u| (u.clone(), payload(u, kind, "n")))
            .collect()
    };
    produce_to(&env, &of(&kept, Kind::Create)).await;
    let worker = env.worker(LIFECYCLE);
    let m = worker.metrics.clone();
    assert_eq!(env.wait_outcomes(10, Duration::from_secs(30)).await, 10);

    produce_to(&env, &of(&gone, Kind::Delete)).await;
    assert!(
        eventually(Duration::from_secs(30), || m.paused.get() == 1
            && m.systemic_fault.with_label_values(&["71000"]).get() == 1)
        .await,
        "deletion off pauses intake with its code"
    );
    // The deletes wait at the gate: no outcome, no dead letter.
    assert_eq!(env.outcome_count(), 10);
    assert_eq!(env.dead_letter_count(), 0);
    assert!(gone.iter().all(|u| env.emu.profile(u).is_some()));

    env.emu.set_deletion_enabled(true);
    assert_eq!(env.wait_outcomes(20, Duration::from_secs(120)).await, 20);
    assert!(eventually(Duration::from_secs(20), || m.paused.get() == 0).await);
    worker.stop().await.expect("clean stop");
    assert!(gone.iter().all(|u| env.emu.profile(u).is_none()));
    assert!(kept.iter().all(|u| env.emu.profile(u).is_some()));
    assert_eq!(env.dead_letter_count(), 0);
    let statuses = statuses(&env);
    assert_eq!(statuses.get("deleted"), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get("already_imported"), Some(&10), "{statuses:?}");
}

/// Produces `(key, payload)` records in order to partition 0.
async fn produce_to(env: &WorkerEnv, records: &[(String, Vec<u8>)]) {
    let records: Vec<(Option<&str>, Option<&[u8]>)> = records
        .iter()
        .map(|(k, p)| (Some(k.as_str()), Some(p.as_slice())))
        .collect();
    produce(&env.kafka.producer(), &env.topics.input, Some(0), &records).await;
}

/// Outcome records by status (read once the worker stopped).
fn statuses(env: &WorkerEnv) -> BTreeMap<String, usize> {
    env.outcomes().iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.json()["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
        m
    })
}

/// 40 users, half of whom exist: creates, updates and deletes in turn (index `i % 4`: create,
/// update, delete, create).
const MIXED: [Kind; 4] = [Kind::Create, Kind::Update, Kind::Delete, Kind::Create];

async fn mixed_env() -> (WorkerEnv, Vec<String>) {
    let cfg = EmulatorConfig {
        existing_fraction: 0.5,
        ..emulator_config()
    };
    let env = WorkerEnv::start(1, cfg).await;
    let users: Vec<String> = (0..40).map(|i| format!("mix-{i:02}")).collect();
    let records: Vec<(String, Vec<u8>)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), payload(u, MIXED[i % 4], "nick")))
        .collect();
    produce_to(&env, &records).await;
    (env, users)
}

fn exists_before(user: &str) -> bool {
    account_sync::devtools::emulator::is_preexisting(user, 0.5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_apply_deletes_deletes_are_skipped_and_counted() {
    let (env, users) = mixed_env().await;
    let worker = env.worker(&LIFECYCLE[..LIFECYCLE.len() - 1]);
    let m = worker.metrics.clone();
    assert_eq!(env.wait_outcomes(30, Duration::from_secs(60)).await, 30);
    assert!(
        eventually(Duration::from_secs(20), || m
            .events_skipped
            .with_label_values(&["delete"])
            .get()
            == 10)
        .await
    );
    worker.stop().await.expect("clean stop");
    assert_eq!(count(&env.emu.stats().calls, "account_delete"), 0);
    for (i, u) in users.iter().enumerate() {
        let exists = env.emu.profile(u).is_some();
        match MIXED[i % 4] {
            Kind::Delete => assert_eq!(exists, exists_before(u), "{u}: untouched"),
            _ => assert!(exists, "{u}"),
        }
    }
    assert_eq!(env.outcome_count(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_calls_only_account_check_and_says_what_it_would_do() {
    let (env, users) = mixed_env().await;
    let mut flags = LIFECYCLE.to_vec();
    flags.push("--dry-run");
    let worker = env.worker(&flags);
    assert_eq!(env.wait_outcomes(40, Duration::from_secs(60)).await, 40);
    worker.stop().await.expect("clean stop");
    let stats = env.emu.stats();
    for api in ["account_import", "multiaccount_import", "account_delete"] {
        assert_eq!(count(&stats.calls, api), 0, "{api}: {stats:?}");
    }
    assert!(count(&stats.calls, "account_check") > 0);
    for u in &users {
        assert_eq!(
            env.emu.profile(u).is_some(),
            exists_before(u),
            "{u}: untouched"
        );
    }
    let outcomes = outcomes_by_source(&env.outcomes());
    assert_eq!(outcomes.len(), 40);
    for v in outcomes.values() {
        let user = v["user_id"].as_str().unwrap();
        let i: usize = user["mix-".len()..].parse().unwrap();
        let want = match (MIXED[i % 4], exists_before(user)) {
            (Kind::Create, true) => "already_imported",
            (Kind::Create, false) => "would_import",
            (Kind::Update, _) => "would_update",
            (Kind::Delete, true) => "would_delete",
            (Kind::Delete, false) => "already_absent",
        };
        assert_eq!(v["status"], want, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_paid_edition_an_account_deleted_cannot_come_back_and_is_dead_lettered_as_rejected() {
    let cfg = EmulatorConfig {
        paid_edition: true,
        ..emulator_config()
    };
    let env = WorkerEnv::start(1, cfg).await;
    let worker = env.worker(LIFECYCLE);
    produce_to(
        &env,
        &[("back".to_owned(), payload("back", Kind::Create, "a"))],
    )
    .await;
    assert_eq!(env.wait_outcomes(1, Duration::from_secs(60)).await, 1);
    let records = [("back", Kind::Delete, ""), ("back", Kind::Create, "b")]
        .map(|(u, k, n)| (u.to_owned(), payload(u, k, n)));
    produce_to(&env, &records).await;
    assert_eq!(env.wait_outcomes(3, Duration::from_secs(60)).await, 3);
    worker.stop().await.expect("clean stop");
    // The delete is made first (the create after it closes its window: order); the create is
    // then refused for 3 months: the vendor's rule, a rejected account.
    let outcomes = outcomes_by_source(&env.outcomes());
    let statuses: Vec<&str> = outcomes
        .values()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["imported", "deleted", "failed"]);
    let dead = env.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header(account_sync::delivery::sink::headers::CODE),
        "70399"
    );
    assert_eq!(
        dead[0].header(account_sync::delivery::sink::headers::CLASS),
        "rejected"
    );
    assert!(env.emu.profile("back").is_none());
}
