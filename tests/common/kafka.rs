//! Kafka helpers for the integration tests: an embedded broker (librdkafka's mock cluster) or an
//! external one (`ACCOUNT_SYNC_TEST_BROKERS`), topics with unique names, a producer, a reader that
//! collects outcome and dead-letter records, and a worker runner.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use account_sync::chat::SecretKey;
use account_sync::config::WorkerArgs;
use account_sync::devtools::embedded_kafka::EmbeddedKafka;
use account_sync::shutdown::{Shutdown, Trigger};
use account_sync::worker::{Worker, WorkerError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use serde_json::Value;

use account_sync::devtools::emulator::{EmulatorConfig, EmulatorHandle};

use super::emulator::{start_emulator, ADMIN, SDKAPPID, SECRET};

/// Environment variable naming an external broker to test against instead of the mock cluster.
pub const BROKERS_ENV: &str = "ACCOUNT_SYNC_TEST_BROKERS";

/// Environment variable saying which implementation runs at `ACCOUNT_SYNC_TEST_BROKERS`: `kafka`
/// (the default: Apache Kafka, or a broker with its features such as Redpanda) or `tansu`.
pub const BROKER_KIND_ENV: &str = "ACCOUNT_SYNC_TEST_BROKER_KIND";

/// The Kafka implementation the tests run on. Tests that need what it lacks skip, saying so
/// ([`skip_without`]); where a bound depends on it (how many partitions a rebalance moves), the
/// test asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// librdkafka's mock cluster, embedded in the test process: fault injection, transactions,
    /// both group protocols.
    Mock,
    /// An external Apache Kafka or a broker with its features.
    Kafka,
    /// An external tansu (0.6, SQLite storage: `.ci/tansu.sh`): the classic group protocol with
    /// eager assignors only (no cooperative-sticky), no filtering of aborted transactions, no
    /// KIP-848 (docs/kafka.md, "Testing on tansu").
    Tansu,
}

/// What a test may need of its broker beyond producing, reading and classic consumer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The mock cluster's test API: injected request errors, brokers taken down, leaders moved.
    FaultInjection,
    /// Transactions whose aborted records `read_committed` consumers never see (exactly-once).
    Transactions,
    /// KIP-848's consumer group protocol (`--group-protocol consumer`).
    ConsumerProtocol,
    /// The cooperative-sticky assignor of classic groups (the worker's default): rebalances
    /// that revoke only the partitions that move.
    CooperativeAssignor,
}

impl Broker {
    /// The broker of this test run, from [`BROKERS_ENV`] and [`BROKER_KIND_ENV`]; panics naming
    /// the variable on a kind it does not know.
    pub fn current() -> Broker {
        if !std::env::var(BROKERS_ENV).is_ok_and(|b| !b.trim().is_empty()) {
            return Broker::Mock;
        }
        match std::env::var(BROKER_KIND_ENV).as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("kafka") => Broker::Kafka,
            Ok("tansu") => Broker::Tansu,
            Ok(other) => panic!("{BROKER_KIND_ENV}={other}: expected kafka or tansu"),
        }
    }

    /// Whether this broker has what `need` names.
    pub fn has(self, need: Needs) -> bool {
        match (self, need) {
            (Broker::Mock, _) => true,
            (_, Needs::FaultInjection) => false,
            (Broker::Kafka, _) => true,
            (Broker::Tansu, _) => false,
        }
    }

    /// Whether classic groups can use the cooperative-sticky assignor (the worker's default).
    /// Where not, the tests give the worker the range assignor: every rebalance then revokes
    /// every partition of every member before it assigns.
    pub fn cooperative(self) -> bool {
        self.has(Needs::CooperativeAssignor)
    }

    /// The classic protocol's session settings a test worker gets, `(session.timeout.ms,
    /// heartbeat.interval.ms)`, from what the test asks of the mock: short sessions let the
    /// mock's rebalances and a killed member's end come soon. Apache Kafka refuses sessions
    /// under `group.min.session.timeout.ms` (6 s by default). tansu 0.6 on SQLite answers
    /// heartbeats seconds late while the suite's parallel tests write to it (4 s measured): with
    /// a 4 s session it expired live members, and their rejoin never completed, each JoinGroup
    /// round (3 s in tansu) outlasting what was left of the new member's session, so SyncGroup
    /// answered "rebalance in progress", then "unknown member", in a loop, and the worker held no
    /// partition. There sessions are [`TANSU_SESSION`].
    pub fn classic_session(self, session_ms: u32, heartbeat_ms: u32) -> (u32, u32) {
        match self {
            Broker::Mock => (session_ms, heartbeat_ms),
            Broker::Kafka => (session_ms.max(6_000), heartbeat_ms),
            Broker::Tansu => (TANSU_SESSION.as_millis() as u32, 1_000),
        }
    }

    /// How long a member that died without leaving holds its place in a classic group of a
    /// test worker whose session the test asked to be `asked`: until its session ends.
    pub fn dead_member_session(self, asked: Duration) -> Duration {
        let (session_ms, _) = self.classic_session(asked.as_millis() as u32, 0);
        Duration::from_millis(u64::from(session_ms))
    }

    /// Whether a member may join a classic group while a member that died without leaving
    /// (SIGKILL) is still within its session. tansu 0.6 then makes the dead member the group's
    /// leader again and assigns the new one nothing, for good; it drops a dead member only when
    /// a join comes after its session ended. There a test waits out the session before it
    /// starts the next member.
    pub fn joins_beside_dead_members(self) -> bool {
        self != Broker::Tansu
    }

    /// Dead letters the replay tests seed where they need many (a replay stopped mid-way):
    /// tansu 0.6 on SQLite stores a record and each of its headers row by row and stops
    /// answering other requests for minutes while it takes 12,000 of them.
    pub fn many_records(self) -> usize {
        match self {
            Broker::Tansu => 3_000,
            _ => 12_000,
        }
    }
}

/// True (the test returns at once) when the current broker lacks `need`. Says so on the test's
/// stderr outside the test harness's capture, with the test's name, so that every skip and its
/// reason shows in the log of the run: a skip is never a silent pass.
pub fn skip_without(need: Needs) -> bool {
    let broker = Broker::current();
    if broker.has(need) {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    // Not eprintln!: the harness captures that for passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs {need:?}, which the {broker:?} broker lacks"
    );
    true
}

/// A broker for one test: embedded (dropped with the test) or external.
pub struct TestKafka {
    /// The embedded cluster, when no external broker is configured.
    pub embedded: Option<EmbeddedKafka>,
    /// bootstrap.servers
    pub brokers: String,
    /// Prefix that makes this test's topic and group names unique on a shared external broker.
    pub prefix: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The classic session of test workers on tansu ([`Broker::classic_session`]): several times
/// the heartbeat latency measured under the suite's load, so that no live member expires.
pub const TANSU_SESSION: Duration = Duration::from_secs(15);

/// How long a read of the broker's metadata, watermarks or committed offsets may take. Only a
/// bound on a broker that does not answer: tansu on a loaded 2-core machine took over 10 s.
pub const BROKER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The mock's session timeout of consumer-protocol groups (KIP-848), as `worker_args` gives
/// classic ones: a member that vanished holds its partitions this long.
pub const CONSUMER_GROUP_SESSION: Duration = Duration::from_secs(6);
/// The mock's heartbeat interval of consumer-protocol groups: how soon a member hears of a new
/// assignment.
pub const CONSUMER_GROUP_HEARTBEAT: Duration = Duration::from_millis(500);

/// The classic protocol's session settings (`session.timeout.ms`, `heartbeat.interval.ms`, as
/// the test asks of the mock: [`Broker::classic_session`] for the others) as `--kafka-property`
/// flags, and the range assignor on a broker without cooperative-sticky
/// ([`Broker::cooperative`]), unless `extra` asks for `--group-protocol consumer`, where the
/// broker decides them and the worker refuses them (the mock's are set by [`TestKafka::start`]).
pub fn classic_group_flags(extra: &[&str], session_ms: u32, heartbeat_ms: u32) -> Vec<String> {
    let consumer = extra
        .windows(2)
        .any(|w| w == ["--group-protocol", "consumer"])
        || extra.contains(&"--group-protocol=consumer");
    if consumer {
        return Vec::new();
    }
    let (session_ms, heartbeat_ms) = Broker::current().classic_session(session_ms, heartbeat_ms);
    let mut properties = vec![
        format!("session.timeout.ms={session_ms}"),
        format!("heartbeat.interval.ms={heartbeat_ms}"),
    ];
    if !Broker::current().cooperative() {
        properties.push("partition.assignment.strategy=range".to_owned());
    }
    properties
        .into_iter()
        .flat_map(|p| ["--kafka-property".to_owned(), p])
        .collect()
}

/// `--group-protocol PROTOCOL` (`classic` or `consumer`), with the classic protocol's short
/// session settings (4 s, heartbeats every 300 ms: the mock waits up to session.timeout.ms − 1 s
/// for members in every rebalance round, and its first round a fixed 3 s, so not shorter); under
/// `consumer` the mock's own, set by [`TestKafka::start`].
pub fn group_flags(protocol: &str) -> Vec<String> {
    let mut flags = vec!["--group-protocol".to_owned(), protocol.to_owned()];
    flags.extend(classic_group_flags(
        &["--group-protocol", protocol],
        4000,
        300,
    ));
    flags
}

impl TestKafka {
    /// Starts the mock cluster (`brokers` brokers), or connects to `ACCOUNT_SYNC_TEST_BROKERS`.
    pub fn start(brokers: i32) -> TestKafka {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}-{}-{}", std::process::id(), n, fastrand::u32(..));
        match std::env::var(BROKERS_ENV) {
            Ok(b) if !b.trim().is_empty() => TestKafka {
                embedded: None,
                brokers: b,
                prefix,
            },
            _ => {
                let k = EmbeddedKafka::start(brokers, &[]).expect("mock cluster starts");
                // The consumer group protocol's (KIP-848) counterparts of the classic session
                // settings every test worker gets (`worker_args`): there the broker decides them.
                k.set_consumer_group_timings(CONSUMER_GROUP_SESSION, CONSUMER_GROUP_HEARTBEAT)
                    .expect("consumer group timings");
                TestKafka {
                    brokers: k.bootstrap_servers().to_owned(),
                    embedded: Some(k),
                    prefix,
                }
            }
        }
    }

    /// A unique topic name for this test.
    pub fn name(&self, base: &str) -> String {
        format!("{}-{base}", self.prefix)
    }

    /// Creates a topic (mock cluster API, or the admin API on an external broker).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        match &self.embedded {
            Some(k) => k.create_topic(name, partitions).expect("create topic"),
            None => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", &self.brokers)
                    .create()
                    .expect("admin client");
                let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                let r = admin
                    .create_topics([&t], &AdminOptions::new())
                    .await
                    .expect("create topics");
                for x in r {
                    x.expect("topic created");
                }
            }
        }
    }

    /// The three topics of a worker: input (`partitions`), outcomes (3), dead letters (1).
    pub async fn worker_topics(&self, partitions: i32) -> Topics {
        let t = Topics {
            input: self.name("signups"),
            outcomes: self.name("outcomes"),
            dlq: self.name("dlq"),
        };
        self.create_topic(&t.input, partitions).await;
        self.create_topic(&t.outcomes, 3).await;
        self.create_topic(&t.dlq, 1).await;
        t
    }

    /// An idempotent producer.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }
}

/// Topic names of one worker setup.
#[derive(Debug, Clone)]
pub struct Topics {
    pub input: String,
    pub outcomes: String,
    pub dlq: String,
}

/// Produces `(key, payload)` records to `partition` (or by key when None); returns their offsets.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    records: &[(Option<&str>, Option<&[u8]>)],
) -> Vec<(i32, i64)> {
    let records: Vec<_> = records.iter().map(|&(k, p)| (k, p, None)).collect();
    produce_with_headers(producer, topic, partition, &records).await
}

/// A record for [`produce_with_headers`]: key, payload, headers.
pub type HeadedRecord<'a> = (Option<&'a str>, Option<&'a [u8]>, Option<OwnedHeaders>);

/// [`produce`] with headers (e.g. dead letters made with `sink::dead_letter_headers`).
pub async fn produce_with_headers(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    records: &[HeadedRecord<'_>],
) -> Vec<(i32, i64)> {
    let futures = records.iter().map(|(key, payload, headers)| {
        let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(p) = payload {
            r = r.payload(p);
        }
        if let Some(p) = partition {
            r = r.partition(p);
        }
        if let Some(h) = headers {
            r = r.headers(h.clone());
        }
        producer.send(r, Timeout::After(Duration::from_secs(30)))
    });
    let delivered = futures_util::future::join_all(futures).await;
    delivered
        .into_iter()
        .map(|d| d.map(|d| (d.partition, d.offset)).expect("produced"))
        .collect()
}

/// Produces JSON signup events for `users` round-robin over `partitions` partitions.
pub async fn produce_users(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    users: &[String],
) -> Vec<(i32, i64)> {
    let payloads: Vec<Vec<u8>> = users
        .iter()
        .map(|u| format!(r#"{{"UserID":"{u}","Nick":"n-{u}"}}"#).into_bytes())
        .collect();
    let mut out = Vec::new();
    for p in 0..partitions {
        let recs: Vec<(Option<&str>, Option<&[u8]>)> = users
            .iter()
            .zip(&payloads)
            .enumerate()
            .filter(|(i, _)| (*i as i32) % partitions == p)
            .map(|(_, (u, pl))| (Some(u.as_str()), Some(pl.as_slice())))
            .collect();
        if !recs.is_empty() {
            out.extend(produce(producer, topic, Some(p), &recs).await);
        }
    }
    out
}

/// JSON signup event bytes with a UserID and a Nick.
pub fn event_json(user_id: &str, nick: &str) -> Vec<u8> {
    serde_json::json!({ "UserID": user_id, "Nick": nick })
        .to_string()
        .into_bytes()
}

/// The end (one past the last offset) of each partition that `offsets` (from [`produce`]) touched.
pub fn ends(offsets: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for &(p, o) in offsets {
        let e = out.entry(p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    out
}

/// How many records `topic` holds now: the sum over its partitions of high − low watermark (no
/// transactions are involved, so every offset is a record).
pub fn count_records(brokers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("counter-{}", fastrand::u64(..)))
        .create()
        .expect("counting consumer");
    let md = consumer
        .fetch_metadata(Some(topic), BROKER_READ_TIMEOUT)
        .expect("metadata");
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), BROKER_READ_TIMEOUT)
                .expect("watermarks");
            (high - low) as usize
        })
        .sum()
}

/// Waits (polling every 100 ms) until `topic` holds at least `n` records; returns the count.
pub async fn wait_for_records(brokers: &str, topic: &str, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let c = count_records(brokers, topic);
        if c >= n || Instant::now() >= deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long [`read_everything`] may take: a bound on liveness only (it returns as soon as every
/// record arrived). tansu on SQLite, while other tests write to it, served none of 4,300 records
/// with headers in 30 s once.
pub const READ_EVERYTHING_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads every record `topic` holds now (call it once nothing more is written, e.g. after the
/// worker stopped), asserting that all of them arrived.
pub fn read_everything(brokers: &str, topic: &str) -> Vec<ReadRecord> {
    let n = count_records(brokers, topic);
    let out = read_all(brokers, topic, n, READ_EVERYTHING_TIMEOUT, false);
    assert_eq!(out.len(), n, "read back every record of {topic}");
    out
}

/// A record read back from the outcome or dead-letter topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl ReadRecord {
    /// The payload as JSON (outcome records).
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_deref().unwrap_or(b"null"))
            .expect("outcome payload is JSON")
    }

    /// A header's value (dead letters); panics naming it when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", self.headers))
    }

    /// The source (partition, offset): from the JSON of an outcome, or the headers of a dead letter.
    pub fn source(&self) -> (i32, i64) {
        if let Some(p) = self.headers.get("account-sync.source.partition") {
            return (
                p.parse().unwrap(),
                self.headers["account-sync.source.offset"].parse().unwrap(),
            );
        }
        let v = self.json();
        (
            v["source_partition"].as_i64().unwrap() as i32,
            v["source_offset"].as_i64().unwrap(),
        )
    }
}

/// Reads every record of `topic` from the beginning until `expected` have arrived or `within`
/// passed (then returns what it has). `read_committed` for exactly-once checks.
pub fn read_all(
    brokers: &str,
    topic: &str,
    expected: usize,
    within: Duration,
    read_committed: bool,
) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", fastrand::u64(..)))
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("reader");
    let md = consumer
        .fetch_metadata(Some(topic), BROKER_READ_TIMEOUT)
        .expect("metadata");
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ReadRecord {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    out
}

/// The committed offsets of `group` on `topic`, per partition (absent = nothing committed).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, BROKER_READ_TIMEOUT)
        .expect("committed offsets");
    c.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Worker arguments for the test broker, topics and an emulator, plus `extra` flags. A flag in
/// `extra` (spelt `--flag value`) replaces the default given here: clap refuses a single-valued
/// flag twice. The classic group protocol's session settings are given unless `extra` asks for
/// `--group-protocol consumer` ([`classic_group_flags`]).
pub fn worker_args(
    kafka: &TestKafka,
    topics: &Topics,
    api_base_url: &str,
    group: &str,
    extra: &[&str],
) -> WorkerArgs {
    let sdkappid = SDKAPPID.to_string();
    let defaults: [(&str, &str); 15] = [
        ("--brokers", &kafka.brokers),
        ("--group-id", group),
        ("--input-topic", &topics.input),
        ("--outcome-topic", &topics.outcomes),
        ("--dlq-topic", &topics.dlq),
        ("--sdkappid", &sdkappid),
        ("--identifier", ADMIN),
        ("--api-base-url", api_base_url),
        ("--request-timeout", "3500ms"),
        ("--retry-initial-backoff", "10ms"),
        ("--retry-max-backoff", "100ms"),
        ("--window-linger", "50ms"),
        ("--commit-interval", "200ms"),
        ("--systemic-probe-interval", "100ms"),
        // The tests written for one account_import per user keep counting them; the batch and
        // auto modes have their own tests (tests/batch.rs).
        ("--import-api", "single"),
    ];
    let mut args: Vec<String> = Vec::new();
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    // Repeatable: the caller's properties are added after these (librdkafka keeps the last).
    args.extend(classic_group_flags(extra, 6000, 500));
    args.extend(extra.iter().map(|s| s.to_string()));
    WorkerArgs::from_args(args, SecretKey::new(SECRET)).expect("valid worker args")
}

/// A worker running in this process.
pub struct RunningWorker {
    trigger: Trigger,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
    pub metrics: std::sync::Arc<account_sync::observe::metrics::Metrics>,
}

impl RunningWorker {
    /// Starts a worker on the current runtime.
    pub fn start(args: WorkerArgs) -> RunningWorker {
        let worker = Worker::new(args).expect("worker builds");
        let metrics = worker.metrics();
        let (shutdown, trigger) = Shutdown::new();
        let task = tokio::spawn(worker.run(None, shutdown));
        RunningWorker {
            trigger,
            task,
            metrics,
        }
    }

    /// Starts a worker that also serves its admin endpoints (`/metrics`, `/healthz`, `/readyz`)
    /// on a fresh 127.0.0.1 port; returns the worker and that address.
    pub async fn start_with_admin(args: WorkerArgs) -> (RunningWorker, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("admin listener binds on 127.0.0.1:0");
        let addr = listener.local_addr().expect("admin listener address");
        let worker = Worker::new(args).expect("worker builds");
        let metrics = worker.metrics();
        let (shutdown, trigger) = Shutdown::new();
        let task = tokio::spawn(worker.run(Some(listener), shutdown));
        let running = RunningWorker {
            trigger,
            task,
            metrics,
        };
        (running, addr)
    }

    /// Waits up to `within` for it to stop by itself, without asking it to (a final delivery
    /// failure stops it); returns its result.
    pub async fn stopped_by_itself(self, within: Duration) -> Result<(), WorkerError> {
        // Held until the task ends: dropping the trigger would ask the worker to stop.
        let _trigger = self.trigger;
        tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("the worker did not stop by itself within {within:?}"))
            .expect("worker task")
    }

    /// Asks it to stop without waiting for it (then [`Self::stop`] waits): a test can let work
    /// held back go on once the worker is known to be stopping.
    pub fn ask_to_stop(&self) {
        self.trigger.trigger();
    }

    /// Asks it to stop and waits for it; returns its result.
    pub async fn stop(self) -> Result<(), WorkerError> {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("worker stops within 60 s")
            .expect("worker task")
    }
}

/// Calls `probe` every `every` until its answer satisfies `done` or `within` passes; returns the
/// last answer and whether it did. The async sibling of [`eventually`], for answers worth keeping
/// (a scrape, an HTTP status and body).
pub async fn poll_until<T, Fut>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> (T, bool)
where
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let answer = probe().await;
        if done(&answer) {
            return (answer, true);
        }
        if Instant::now() >= deadline {
            return (answer, false);
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `f` until it returns true or `within` passes; returns whether it did.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// One test's world: a broker, the worker's three topics, an emulator and a consumer group name.
pub struct WorkerEnv {
    pub kafka: TestKafka,
    pub topics: Topics,
    /// Partitions of the input topic.
    pub partitions: i32,
    pub emu: EmulatorHandle,
    /// The group workers of this test join (a second worker on it resumes the first's offsets).
    pub group: String,
}

impl WorkerEnv {
    /// A one-broker mock cluster (or the external broker), topics with `partitions` input
    /// partitions, and an emulator started from `emu`.
    pub async fn start(partitions: i32, emu: EmulatorConfig) -> WorkerEnv {
        WorkerEnv::on(TestKafka::start(1), partitions, emu).await
    }

    /// A world on `kafka`: topics with `partitions` input partitions, an emulator from `emu`.
    async fn on(kafka: TestKafka, partitions: i32, emu: EmulatorConfig) -> WorkerEnv {
        let topics = kafka.worker_topics(partitions).await;
        let group = kafka.name("group");
        let emu = start_emulator(emu).await;
        WorkerEnv {
            kafka,
            topics,
            partitions,
            emu,
            group,
        }
    }

    /// Worker arguments for this world plus `extra` flags.
    pub fn args(&self, extra: &[&str]) -> WorkerArgs {
        worker_args(
            &self.kafka,
            &self.topics,
            &self.emu.base_url(),
            &self.group,
            extra,
        )
    }

    /// Starts a worker with `extra` flags.
    pub fn worker(&self, extra: &[&str]) -> RunningWorker {
        RunningWorker::start(self.args(extra))
    }

    /// Produces JSON events for `users` round-robin over the input partitions.
    pub async fn produce_users(&self, users: &[String]) -> Vec<(i32, i64)> {
        produce_users(
            &self.kafka.producer(),
            &self.topics.input,
            self.partitions,
            users,
        )
        .await
    }

    /// The group's committed offsets on the input topic.
    pub fn committed(&self) -> BTreeMap<i32, i64> {
        committed(
            &self.kafka.brokers,
            &self.group,
            &self.topics.input,
            self.partitions,
        )
    }

    /// Waits until the outcome topic holds at least `n` records; returns how many it holds.
    pub async fn wait_outcomes(&self, n: usize, within: Duration) -> usize {
        wait_for_records(&self.kafka.brokers, &self.topics.outcomes, n, within).await
    }

    /// Records in the outcome topic now.
    pub fn outcome_count(&self) -> usize {
        count_records(&self.kafka.brokers, &self.topics.outcomes)
    }

    /// Records in the dead-letter topic now.
    pub fn dead_letter_count(&self) -> usize {
        count_records(&self.kafka.brokers, &self.topics.dlq)
    }

    /// Every outcome record (read once the worker stopped).
    pub fn outcomes(&self) -> Vec<ReadRecord> {
        read_everything(&self.kafka.brokers, &self.topics.outcomes)
    }

    /// Every dead-letter record (read once the worker stopped).
    pub fn dead_letters(&self) -> Vec<ReadRecord> {
        read_everything(&self.kafka.brokers, &self.topics.dlq)
    }

    /// Once the workers stopped: `n` outcomes, one per input record, all `imported`, nothing
    /// dead-lettered, and the group's offsets committed to the end of `offsets`.
    pub fn assert_all_imported(&self, n: usize, offsets: &[(i32, i64)]) {
        let outcomes = outcomes_by_source(&self.outcomes());
        assert_eq!(outcomes.len(), n);
        assert!(
            outcomes.values().all(|v| v["status"] == "imported"),
            "{outcomes:?}"
        );
        assert_eq!(self.dead_letter_count(), 0);
        assert_eq!(self.committed(), ends(offsets));
    }
}

/// Outcome JSON values keyed by source (partition, offset); panics on a second outcome for one
/// source record.
pub fn outcomes_by_source(records: &[ReadRecord]) -> BTreeMap<(i32, i64), Value> {
    let mut out = BTreeMap::new();
    for r in records {
        let v = r.json();
        let src = (
            v["source_partition"].as_i64().unwrap() as i32,
            v["source_offset"].as_i64().unwrap(),
        );
        assert!(
            out.insert(src, v).is_none(),
            "two outcomes for source record {src:?}"
        );
    }
    out
}

/// GET `path` on a worker's admin server: (status, body).
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// A world on a mock cluster of `brokers` brokers. `None` (the test is skipped) when the tests
/// run against an external broker: fault injection needs the mock cluster.
pub async fn mock_env(brokers: i32, partitions: i32, emu: EmulatorConfig) -> Option<WorkerEnv> {
    if skip_without(Needs::FaultInjection) {
        return None;
    }
    Some(WorkerEnv::on(TestKafka::start(brokers), partitions, emu).await)
}

/// Outcomes the worker has delivered (acknowledged, or committed in exactly-once mode).
pub fn outcomes_delivered(metrics: &account_sync::observe::metrics::Metrics) -> u64 {
    ["imported", "already_imported", "failed"]
        .iter()
        .map(|s| metrics.outcomes.with_label_values(&[s]).get())
        .sum()
}

/// Sends a trickle to `env`'s worker (whose metrics are `metrics`, started on an empty input
/// topic): one event to warm up (the consumer's first fetches of a partition can be late on the
/// mock broker; the producer connects), then `n` events one at a time, each once the one before
/// has its outcome. Returns, for the `n` events, the time from producing the event (its
/// acknowledgement included) to the worker counting its outcome delivered, to within 10 ms.
pub async fn trickle(
    env: &WorkerEnv,
    metrics: &account_sync::observe::metrics::Metrics,
    prefix: &str,
    n: u64,
) -> Vec<Duration> {
    let producer = env.kafka.producer();
    let send = |user: String| {
        let (producer, topic) = (producer.clone(), env.topics.input.clone());
        async move { produce_users(&producer, &topic, 1, &[user]).await }
    };
    let delivered = |k: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while outcomes_delivered(metrics) < k {
            assert!(
                Instant::now() < deadline,
                "event {k} got no outcome in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    send(format!("{prefix}-warm-up")).await;
    delivered(1).await;
    let mut took = Vec::new();
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        send(format!("{prefix}-{i}")).await;
        delivered(i + 2).await;
        took.push(t.elapsed());
    }
    took
}
