//! `account-sync doctor` as a user runs it: the binary, with the settings of `run`, against the
//! embedded Kafka and the Chat API emulator. A healthy setup passes every check (exit 0); each
//! kind of mistake gives its own ✗ line, and only that one (exit 1); the secret key never appears
//! in what it prints.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use account_sync::devtools::embedded_kafka::CONSUMER_GROUP_HEARTBEAT;
use account_sync::devtools::registry::RegistryHandle;
use common::emulator::{emulator_config, SECRET};
use common::kafka::{mock_env, WorkerEnv};
use common::process::{run_args, Proc};

/// What one doctor run printed, and how it ended.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The status symbol of each check line, by check name (`brokers` → `✓`).
    fn statuses(&self) -> BTreeMap<String, String> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let (symbol, rest) = l.split_once(' ')?;
                let (name, _) = rest.split_once(": ")?;
                ["✓", "✗", "-"]
                    .contains(&symbol)
                    .then(|| (name.to_owned(), symbol.to_owned()))
            })
            .collect()
    }

    /// The names of the failed checks.
    fn failed(&self) -> Vec<String> {
        let s = self.statuses();
        s.into_iter()
            .filter(|(_, symbol)| symbol == "✗")
            .map(|(name, _)| name)
            .collect()
    }

    /// The line of check `name`.
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}: ")))
            })
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", self.stdout))
    }

    /// Exit code 1, and `check` the one ✗ line, containing every one of `words`.
    fn fails_only(&self, check: &str, words: &[&str]) {
        assert_eq!(self.code, Some(1), "{}{}", self.stdout, self.stderr);
        assert_eq!(self.failed(), vec![check.to_owned()], "{}", self.stdout);
        let line = self.line(check);
        assert!(line.starts_with("✗ "), "{line}");
        for w in words {
            assert!(line.contains(w), "{w:?} missing from {line:?}");
        }
        assert!(line.contains(" → "), "a failure says what to do: {line}");
    }
}

/// A broker with the worker's topics (2 input partitions) and an emulator.
async fn world() -> WorkerEnv {
    WorkerEnv::start(2, emulator_config()).await
}

/// `account-sync doctor` with the test worker's settings (those of `run_args`), `changes`
/// replacing the value of a flag already there or added, the key in the environment (`key`).
/// A `--group-protocol` change goes to `run_args`, which leaves the classic protocol's session
/// settings out under `consumer`.
async fn doctor(env: &WorkerEnv, changes: &[(&str, &str)], key: &str) -> Outcome {
    let protocol: Vec<&str> = changes
        .iter()
        .filter(|(flag, _)| *flag == "--group-protocol")
        .flat_map(|(flag, value)| [*flag, *value])
        .collect();
    let mut args = run_args(
        &env.kafka.brokers,
        &env.topics,
        &env.group,
        &env.emu.base_url(),
        &protocol,
    );
    args[0] = "doctor".into();
    for (flag, value) in changes.iter().filter(|(f, _)| *f != "--group-protocol") {
        match args.iter().position(|a| a == flag) {
            Some(i) if !value.is_empty() => args[i + 1] = value.to_string(),
            Some(_) => {}
            None if value.is_empty() => args.push(flag.to_string()),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }
    let key = key.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut p = Proc::spawn("doctor", &args, &[("ACCOUNT_SYNC_SECRET_KEY", &key)]);
        let status = p.wait(Duration::from_secs(60), "of the doctor");
        let out = Outcome {
            code: status.code(),
            stdout: p.stdout(),
            stderr: p.logs(),
        };
        eprintln!("doctor took {:?}:\n{}", started.elapsed(), out.stdout);
        assert!(
            key.is_empty() || !out.stdout.contains(&key) && !out.stderr.contains(&key),
            "the secret key was printed"
        );
        out
    })
    .await
    .expect("doctor run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_setup_passes_every_check() {
    let env = world().await;
    let out = doctor(&env, &[("--replicas", "2")], SECRET).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let statuses = out.statuses();
    for check in [
        "config",
        "brokers",
        "input-topic",
        "outcome-topic",
        "dlq-topic",
        "group",
        "group-protocol",
        "chat-api",
        "usersig",
        "rates",
        "replicas",
    ] {
        assert_eq!(
            statuses.get(check).map(String::as_str),
            Some("✓"),
            "{check}: {}",
            out.stdout
        );
    }
    assert!(out.line("input-topic").contains("2 partitions"));
    assert!(out.line("outcome-topic").contains("3 partitions"));
    assert!(out.line("dlq-topic").contains("1 partition"));
    assert!(out
        .line("replicas")
        .contains("2 replicas for 2 partitions: 1 each"));
    assert!(out
        .stdout
        .ends_with("doctor: every check passed (11 passed)\n"));
    let calls = env.emu.stats().calls;
    assert_eq!(calls.get("account_check"), Some(&1), "one probe: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_for_machines_and_transactions_in_exactly_once_mode() {
    let env = world().await;
    let txn = env.kafka.name("txn");
    let out = doctor(
        &env,
        &[
            ("--delivery", "exactly-once"),
            ("--transactional-id", &txn),
            ("--json", ""),
        ],
        SECRET,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true);
    let checks: BTreeMap<&str, &serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c))
        .collect();
    assert_eq!(checks["transactions"]["status"], "pass");
    let doctor_id = format!("{txn}-doctor");
    assert!(
        checks["transactions"]["message"]
            .as_str()
            .unwrap()
            .contains(&doctor_id),
        "the doctor's own transactional.id, never the worker's"
    );
    assert_eq!(checks["input-topic"]["data"]["partitions"], 2);
    assert_eq!(checks["replicas"]["status"], "skip");
    assert!(checks.values().all(|c| c["status"] != "fail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker() {
    let env = world().await;
    // A port nothing listens on: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = doctor(
        &env,
        &[("--brokers", &closed), ("--kafka-timeout", "2s")],
        SECRET,
    )
    .await;
    out.fails_only("brokers", &[&closed, "within 2s", "Connection refused"]);
    for check in [
        "input-topic",
        "outcome-topic",
        "dlq-topic",
        "group",
        "group-protocol",
    ] {
        assert!(
            out.line(check).starts_with("- ") && out.line(check).contains("not checked"),
            "{}",
            out.line(check)
        );
    }
    assert!(
        out.line("chat-api").starts_with("✓ "),
        "the API is asked anyway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic() {
    let env = world().await;
    let out = doctor(&env, &[("--dlq-topic", "no-such-dlq")], SECRET).await;
    out.fails_only(
        "dlq-topic",
        &["\"no-such-dlq\"", "does not exist", "--create"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key() {
    let env = world().await;
    let out = doctor(&env, &[], "not-the-apps-key-42").await;
    out.fails_only("chat-api", &["70009", "secret key", "--secret-key-file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identifier_that_is_not_an_admin() {
    let env = world().await;
    let out = doctor(&env, &[("--identifier", "just_a_user")], SECRET).await;
    out.fails_only(
        "chat-api",
        &["\"just_a_user\"", "not an app administrator", "60010"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_above_the_vendor_limit() {
    let env = world().await;
    let out = doctor(&env, &[("--import-rate", "250")], SECRET).await;
    out.fails_only("rates", &["account_import at 250/s", "limit of 200/s"]);
    assert_eq!(
        env.emu.stats().calls.get("account_check"),
        Some(&1),
        "the rate is checked, not tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_run_would_refuse() {
    let env = world().await;
    let out = doctor(&env, &[("--window-size", "150")], SECRET).await;
    out.fails_only("config", &["--window-size must be 1 to 100"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_key() {
    let env = world().await;
    let out = doctor(&env, &[], "").await;
    out.fails_only("config", &["ACCOUNT_SYNC_SECRET_KEY is empty"]);
    assert!(out.line("chat-api").starts_with("- "), "{}", out.stdout);
    assert!(
        out.line("brokers").starts_with("✓ "),
        "Kafka is asked anyway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_partitions() {
    let env = world().await;
    let out = doctor(&env, &[("--replicas", "5")], SECRET).await;
    out.fails_only(
        "replicas",
        &["--replicas 5", "2 partitions", "3 replicas would sit idle"],
    );
}

/// The brokers' group protocols, from their ApiVersions answers: the mock serves both (it has
/// ConsumerGroupHeartbeat), so either `--group-protocol` passes, and the line says which the
/// worker would use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_protocols_the_brokers_serve() {
    let Some(env) = mock_env(1, 2, emulator_config()).await else {
        return;
    };
    for protocol in ["classic", "consumer"] {
        let out = doctor(&env, &[("--group-protocol", protocol)], SECRET).await;
        assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
        let line = out.line("group-protocol");
        assert!(
            line.starts_with("✓ ")
                && line.contains("serve both group protocols, classic and consumer")
                && line.contains("ConsumerGroupHeartbeat v1..1")
                && line.ends_with(&format!("the worker uses {protocol}")),
            "{line}"
        );
    }
}

/// A broker without KIP-848 (ConsumerGroupHeartbeat not served, as before Kafka 4.0): the doctor
/// fails `--group-protocol consumer` with what to do, and passes classic, saying the consumer
/// protocol is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_protocol_on_brokers_without_it() {
    let Some(env) = mock_env(1, 2, emulator_config()).await else {
        return;
    };
    let mock = env.kafka.embedded.as_ref().expect("the mock cluster");
    mock.set_api_versions(CONSUMER_GROUP_HEARTBEAT, None)
        .expect("ConsumerGroupHeartbeat disabled");
    let out = doctor(&env, &[("--group-protocol", "consumer")], SECRET).await;
    out.fails_only(
        "group-protocol",
        &[
            "--group-protocol consumer needs ConsumerGroupHeartbeat",
            "Apache Kafka 4.0",
            "does not serve it",
            "never be given a partition",
            "use --group-protocol classic",
        ],
    );
    let out = doctor(&env, &[], SECRET).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let line = out.line("group-protocol");
    assert!(
        line.starts_with("✓ ")
            && line.contains("serve the classic group protocol, which the worker uses")
            && line.contains("does not serve it"),
        "{line}"
    );

    // A broker serving only v0 (Kafka 3.7's early access): not enough for this librdkafka.
    mock.set_api_versions(CONSUMER_GROUP_HEARTBEAT, Some((0, 0)))
        .expect("ConsumerGroupHeartbeat v0 only");
    let out = doctor(&env, &[("--group-protocol", "consumer")], SECRET).await;
    out.fails_only("group-protocol", &["serves only v0..0"]);
}

/// Under `--group-protocol consumer`, a classic protocol property is a configuration error: the
/// `config` line names it, and the Kafka checks are not made with settings the worker refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_property_under_the_consumer_protocol() {
    let env = world().await;
    let out = doctor(
        &env,
        &[
            ("--group-protocol", "consumer"),
            ("--kafka-property", "partition.assignment.strategy=range"),
        ],
        SECRET,
    )
    .await;
    out.fails_only(
        "config",
        &["partition.assignment.strategy", "--group-protocol consumer"],
    );
    assert!(out.line("brokers").starts_with("- "), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_registry_and_its_credentials() {
    let env = world().await;
    let registry = RegistryHandle::start(
        "127.0.0.1:0".parse().unwrap(),
        Some("sync:s3cret-pw".into()),
    )
    .await
    .expect("registry starts");
    registry.register("signups-value", r#""string""#, None, vec![]);
    let dir = std::env::temp_dir().join(format!("doctor-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (good, bad) = (dir.join("good"), dir.join("bad"));
    std::fs::write(&good, "sync:s3cret-pw\n").unwrap();
    std::fs::write(&bad, "sync:wrong-pw\n").unwrap();
    let url = registry.base_url();
    let with = |file: &std::path::Path| {
        vec![
            ("--input-format", "avro".to_owned()),
            ("--schema-registry-url", url.clone()),
            (
                "--schema-registry-user-info-file",
                file.to_str().unwrap().to_owned(),
            ),
        ]
    };
    let changes = with(&good);
    let changes: Vec<(&str, &str)> = changes.iter().map(|(f, v)| (*f, v.as_str())).collect();
    let out = doctor(&env, &changes, SECRET).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.line("schema-registry")
            .contains("answers with these credentials: 1 subjects"),
        "{}",
        out.stdout
    );
    let changes = with(&bad);
    let changes: Vec<(&str, &str)> = changes.iter().map(|(f, v)| (*f, v.as_str())).collect();
    let out = doctor(&env, &changes, SECRET).await;
    out.fails_only("schema-registry", &["refused the credentials", "user info"]);
    for secret in ["s3cret-pw", "wrong-pw"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a credential was printed"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
