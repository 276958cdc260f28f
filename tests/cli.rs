//! The `account-sync` binary as users run it: dev services print their address first, bad
//! settings fail at start-up naming the setting, and `run` stops cleanly on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::emulator::{emulator_config, start_emulator, ADMIN, SDKAPPID, SECRET};
use common::kafka::{committed, ends, produce_users, read_all, TestKafka};
use common::process::{Proc, BIN};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn dev_kafka_prints_bootstrap_servers_and_stops_on_sigterm() {
    let mut child = Proc::spawn(
        "dev-kafka",
        &args(&[
            "dev",
            "kafka",
            "--brokers",
            "3",
            "--topic",
            "signups:6",
            "--topic",
            "account-dlq:1",
        ]),
        &[],
    );
    let line = child.first_line();
    assert_eq!(line.split(',').count(), 3, "three brokers: {line}");
    assert!(
        line.split(',').all(|b| b.starts_with("127.0.0.1:")),
        "{line}"
    );
    // A real client can use it.
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &line)
        .create()
        .unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(
        &consumer,
        Some("signups"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 6);
    assert!(child.stop("-TERM", Duration::from_secs(10)).success());
}

#[test]
fn dev_chat_api_prints_its_base_url_and_serves_stats() {
    let mut child = Proc::spawn(
        "chat-api",
        &args(&["dev", "chat-api", "--listen", "127.0.0.1:0"]),
        &[("ACCOUNT_SYNC_SECRET_KEY", SECRET)],
    );
    let url = child.first_line();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{url}/stats"))
            .await
            .unwrap()
            .json_or_text()
            .await
    });
    assert!(stats["calls"].is_object(), "{stats}");
    assert!(child.stop("-TERM", Duration::from_secs(10)).success());
}

trait JsonOrText {
    async fn json_or_text(self) -> serde_json::Value;
}
impl JsonOrText for reqwest::Response {
    async fn json_or_text(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[test]
fn chat_api_without_a_key_fails_clearly() {
    let out = Command::new(BIN)
        .args(["dev", "chat-api"])
        .env_remove("ACCOUNT_SYNC_SECRET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ACCOUNT_SYNC_SECRET_KEY"));
}

#[test]
fn bad_settings_fail_at_start_up_naming_the_setting() {
    let cases: &[(&[&str], &str)] = &[
        (&["--window-size", "150"], "--window-size"),
        (&["--window-linger", "soon"], "window-linger"),
        (&["--api-base-url", "http://chat.example.com"], "clear text"),
        (
            &["--kafka-property", "enable.auto.commit=false"],
            "enable.auto.commit",
        ),
        (&["--request-timeout", "1s"], "timeout"),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "run",
            "--brokers",
            "127.0.0.1:9",
            "--sdkappid",
            "1400000000",
            "--admin-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let out = Command::new(BIN)
            .args(&args)
            .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} accepted");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!err.contains(SECRET));
    }
    // No key at all.
    let out = Command::new(BIN)
        .args([
            "run",
            "--brokers",
            "127.0.0.1:9",
            "--sdkappid",
            "1400000000",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_remove("ACCOUNT_SYNC_SECRET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ACCOUNT_SYNC_SECRET_KEY"));
}

#[test]
fn usersig_is_reproducible_and_verifies() {
    let gen = Command::new(BIN)
        .args([
            "usersig",
            "--sdkappid",
            "1400000000",
            "--identifier",
            "administrator",
            "--time",
            "1700000000",
        ])
        .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let sig = String::from_utf8(gen.stdout).unwrap().trim().to_owned();
    let again = Command::new(BIN)
        .args([
            "usersig",
            "--sdkappid",
            "1400000000",
            "--time",
            "1700000000",
        ])
        .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(again.stdout).unwrap().trim(),
        sig,
        "same inputs, same UserSig"
    );
    let fresh = Command::new(BIN)
        .args(["usersig", "--sdkappid", "1400000000"])
        .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
        .output()
        .unwrap();
    let fresh = String::from_utf8(fresh.stdout).unwrap().trim().to_owned();
    let ok = Command::new(BIN)
        .args(["usersig", "verify", &fresh, "--sdkappid", "1400000000"])
        .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));
    // 2023's sig has expired by now; a wrong key is a bad signature.
    let old = Command::new(BIN)
        .args(["usersig", "verify", &sig, "--sdkappid", "1400000000"])
        .env("ACCOUNT_SYNC_SECRET_KEY", SECRET)
        .output()
        .unwrap();
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stdout).contains("70001"));
    let wrong = Command::new(BIN)
        .args(["usersig", "verify", &fresh, "--sdkappid", "1400000000"])
        .env("ACCOUNT_SYNC_SECRET_KEY", "another key")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("70009"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_and_stops_cleanly_on_sigterm() {
    let kafka = TestKafka::start(1);
    let topics = kafka.worker_topics(2).await;
    let emu = start_emulator(emulator_config()).await;
    let users: Vec<String> = (0..300).map(|i| format!("cli-{i:04}")).collect();
    let offsets = produce_users(&kafka.producer(), &topics.input, 2, &users).await;
    let group = kafka.name("cli-group");
    let key_file = std::env::temp_dir().join(format!("as-cli-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let sdkappid = SDKAPPID.to_string();
    let base = emu.base_url();
    let key_path = key_file.to_string_lossy().into_owned();
    let mut child = Proc::spawn(
        "run",
        &args(&[
            "run",
            "--brokers",
            &kafka.brokers,
            "--group-id",
            &group,
            "--input-topic",
            &topics.input,
            "--outcome-topic",
            &topics.outcomes,
            "--dlq-topic",
            &topics.dlq,
            "--sdkappid",
            &sdkappid,
            "--identifier",
            ADMIN,
            "--api-base-url",
            &base,
            "--secret-key-file",
            &key_path,
            "--admin-listen",
            "127.0.0.1:0",
            "--window-linger",
            "50ms",
            "--log-format",
            "json",
        ]),
        &[],
    );
    let brokers = kafka.brokers.clone();
    let outcomes_topic = topics.outcomes.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        read_all(
            &brokers,
            &outcomes_topic,
            300,
            Duration::from_secs(60),
            false,
        )
    })
    .await
    .unwrap();
    assert_eq!(outcomes.len(), 300);
    let status = tokio::task::spawn_blocking(move || child.stop("-TERM", Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    let c = committed(&kafka.brokers, &group, &topics.input, 2);
    for p in 0..2 {
        let end = ends(&offsets)[&p];
        assert_eq!(
            c.get(&p),
            Some(&end),
            "partition {p} committed to the end after SIGTERM"
        );
    }
    std::fs::remove_file(key_file).ok();
}
