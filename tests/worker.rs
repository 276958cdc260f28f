//! The worker end to end: Kafka (mock cluster) → emulator → outcome and dead-letter topics.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use account_sync::emulator::is_preexisting;
use common::emulator::{emulator_config, start_emulator};
use common::kafka::{committed, produce_users, read_all, worker_args, RunningWorker, TestKafka};

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
    let outcomes = read_all(&kafka.brokers, &topics.outcomes, 500, Duration::from_secs(60), false);
    worker.stop().await.expect("clean stop");

    assert_eq!(outcomes.len(), 500);
    let by_user: HashMap<String, String> = outcomes
        .iter()
        .map(|r| {
            let v = r.json();
            (v["user_id"].as_str().unwrap().to_owned(), v["status"].as_str().unwrap().to_owned())
        })
        .collect();
    for u in &users {
        let want = if is_preexisting(u, 0.3) { "already_imported" } else { "imported" };
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
