//! `account-sync demo`: the whole job in one process — embedded Kafka (librdkafka's mock
//! cluster), the Chat API emulator, a load generator, the worker — and an independent check.
//!
//! The check does not trust the worker's counters: a separate consumer reads the outcome and
//! dead-letter topics back and matches them to what the load generator produced, offset by
//! offset. `lost` is an input record with no record of its own; `duplicates` are records beyond
//! the expected one(s). The demo exits non-zero when anything is lost.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::chat::SecretKey;
use crate::config::WorkerArgs;
use crate::devtools::embedded_kafka::EmbeddedKafka;
use crate::devtools::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use crate::devtools::registry::RegistryHandle;
use crate::shutdown::Shutdown;
use crate::worker::Worker;

pub(crate) const INPUT: &str = "signups";
pub(crate) const OUTCOMES: &str = "account-outcomes";
pub(crate) const DLQ: &str = "account-dlq";
pub(crate) const SDKAPPID: u64 = 1_400_000_000;
pub(crate) const ADMIN: &str = "administrator";

/// `account-sync demo` settings.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Signup events to produce.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Events produced per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Share of users the emulator already knows (they need a check but no import).
    #[arg(long, default_value_t = 0.8)]
    pub existing_fraction: f64,
    /// Share of malformed events (dead-lettered at decode).
    #[arg(long, default_value_t = 0.01)]
    pub bad_fraction: f64,
    /// account_check calls/s, enforced by the emulator and respected by the worker; 0 = unlimited.
    #[arg(long, default_value_t = 100.0)]
    pub check_rate: f64,
    /// account_import calls/s, enforced by the emulator and respected by the worker; 0 = unlimited.
    #[arg(long, default_value_t = 200.0)]
    pub import_rate: f64,
    /// multiaccount_import calls/s, enforced by the emulator and respected by the worker; 0 =
    /// unlimited.
    #[arg(long, default_value_t = 100.0)]
    pub batch_import_rate: f64,
    /// How the worker imports: single, batch or auto (see `account-sync run --help`).
    #[arg(long, value_enum, default_value = "auto")]
    pub import_api: crate::worker::pipeline::ImportApi,
    /// Emulated API latency in ms (± half of it as jitter).
    #[arg(long, default_value_t = 20)]
    pub api_latency_ms: u64,
    /// Share of API calls that fail transiently (70169 / 70500) and are retried.
    #[arg(long, default_value_t = 0.0)]
    pub api_error_rate: f64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Give up waiting for outcomes after this long.
    #[arg(long, default_value = "10m", value_parser = crate::parse::parse_duration)]
    pub timeout: Duration,
    /// Admin endpoint of the demo's worker (/metrics, /readyz).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
    /// How the load is written: json, or avro (framed for a local Schema Registry, which the
    /// demo starts; the worker then runs --input-format avro).
    #[arg(long, value_enum, default_value = "json")]
    pub input_format: LoadFormat,
}

/// The demo's result, as written by `--summary-json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub produced: u64,
    pub outcomes: u64,
    pub imported: u64,
    pub already_imported: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub decode_dead_lettered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub check_calls: u64,
    pub import_calls: u64,
    pub batch_import_calls: u64,
    pub delete_calls: u64,
    pub updated: u64,
    pub deleted: u64,
    pub already_absent: u64,
    pub frequency_limited: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// What the load generator produced at one input offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    /// Whether the event is well-formed (expects an outcome) or bad (expects a dead letter).
    pub good: bool,
    /// Produce time, ms since the epoch (also the record's Kafka timestamp).
    pub at_ms: i64,
}

/// The fields of an outcome record the verifier reads (borrowed: no per-record allocation).
#[derive(serde::Deserialize)]
struct OutcomeView<'a> {
    source_partition: i32,
    source_offset: i64,
    status: &'a str,
    processed_at: &'a str,
}

/// Records seen for one input offset.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    outcomes: u32,
    dead_letters: u32,
    /// Outcome status was failed (expects a dead letter too).
    failed: bool,
}

impl DemoArgs {
    fn validate(&self) -> Result<(), String> {
        for (flag, v) in [
            ("--existing-fraction", self.existing_fraction),
            ("--bad-fraction", self.bad_fraction),
            ("--api-error-rate", self.api_error_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{flag} must be between 0 and 1, got {v}"));
            }
        }
        if self.events == 0 {
            return Err("--events must be at least 1".into());
        }
        if !(1..=100).contains(&self.partitions) {
            return Err("--partitions must be 1 to 100".into());
        }
        if [
            self.rate,
            self.check_rate,
            self.import_rate,
            self.batch_import_rate,
        ]
        .iter()
        .any(|r| *r < 0.0)
        {
            return Err(
                "--rate, --check-rate, --import-rate and --batch-import-rate must not be negative"
                    .into(),
            );
        }
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The mock broker keeps at most 5 MiB per partition (librdkafka's `rdkafka_mock.c`) and drops
/// older records beyond that; a topic gets enough partitions to hold its load within 4.5 MiB each.
const MOCK_PARTITION_BYTES: u64 = 9 << 19;
/// Bytes a load record takes in the mock broker's log, rounded up (key 21 B, payload ~100 B,
/// record and batch overhead).
const RECORD_BYTES: u64 = 150;

/// Partitions for a topic holding `events` records: `requested`, or more when the mock broker
/// would otherwise drop some of them.
pub(crate) fn partitions_for(events: u64, requested: i32) -> i32 {
    let needed = (events * RECORD_BYTES).div_ceil(MOCK_PARTITION_BYTES);
    requested.max(i32::try_from(needed).unwrap_or(i32::MAX))
}

/// Runs the demo; `Ok(FAILURE)` when records were lost.
pub async fn run(args: DemoArgs, shutdown: Shutdown) -> Result<ExitCode, String> {
    args.validate()?;
    let partitions = partitions_for(args.events, args.partitions);
    if partitions != args.partitions {
        eprintln!(
            "account-sync demo: {partitions} partitions instead of {}, so that the embedded broker keeps every record",
            args.partitions
        );
    }
    // A fresh key per run: nothing secret is hard-coded, and nothing of it is printed.
    let key = SecretKey::new(format!(
        "demo-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    ));
    let kafka = EmbeddedKafka::start(
        1,
        &[
            (INPUT.into(), partitions),
            (OUTCOMES.into(), partitions),
            (DLQ.into(), 1),
        ],
    )
    .map_err(|e| format!("embedded Kafka: {e}"))?;
    let brokers = kafka.bootstrap_servers().to_owned();
    let emulator = start_emulator(&args, key.clone()).await?;
    let registry = match args.input_format {
        LoadFormat::Avro => Some(avro_registry().await?),
        LoadFormat::Json => None,
    };
    let registry_url = registry.as_ref().map(|r| r.0.base_url());
    let mut format_flags = Vec::new();
    if let Some(url) = &registry_url {
        format_flags.extend([
            "--input-format",
            "avro",
            "--schema-registry-url",
            url.as_str(),
        ]);
    }
    let (admin_listen, batch_rate) = (
        args.admin_listen.to_string(),
        args.batch_import_rate.to_string(),
    );
    let import_api = args
        .import_api
        .to_possible_value()
        .expect("no variant is skipped");
    let worker_args = worker_args(
        &brokers,
        &emulator.base_url(),
        key,
        (args.check_rate, args.import_rate),
        "account-sync-demo",
        &[
            "--admin-listen",
            &admin_listen,
            "--batch-import-rate",
            &batch_rate,
            "--import-api",
            import_api.get_name(),
        ]
        .into_iter()
        .chain(format_flags)
        .collect::<Vec<_>>(),
    )?;
    let admin = crate::observe::admin::bind_admin(worker_args.admin_listen).await?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let worker = Worker::new(worker_args).map_err(|e| e.to_string())?;
    let (worker_stop, worker_trigger) = Shutdown::new();
    let worker_task = tokio::spawn(worker.run(Some(admin), worker_stop));
    eprintln!(
        "account-sync demo: {} events{}, {} partitions, {:.0}% already imported, {:.1}% malformed, limits {}/s check and {}/s import, API latency {} ms",
        args.events,
        match args.input_format {
            LoadFormat::Avro => " in Avro (through a local Schema Registry)",
            LoadFormat::Json => "",
        },
        partitions,
        args.existing_fraction * 100.0,
        args.bad_fraction * 100.0,
        rate_text(args.check_rate),
        rate_text(args.import_rate),
        args.api_latency_ms
    );
    eprintln!(
        "  Kafka {brokers} · Chat API emulator {} · metrics http://{admin_addr}/metrics",
        emulator.base_url()
    );

    let started = Instant::now();
    let load = Load {
        topic: INPUT.to_owned(),
        events: args.events,
        rate: args.rate,
        bad_fraction: args.bad_fraction,
        hot: None,
        avro_schema_id: registry.as_ref().map(|r| r.1),
        kinds: None,
    };
    let spec = CollectSpec {
        partitions,
        target: args.events,
        timeout: args.timeout,
        quiet: args.quiet,
    };
    let producer_task = {
        let brokers = brokers.clone();
        tokio::spawn(async move { produce_load(&brokers, &load).await })
    };
    let verify = {
        let (brokers, shutdown) = (brokers.clone(), shutdown.clone());
        tokio::task::spawn_blocking(move || collect(&brokers, &spec, &shutdown))
    };
    let produced = producer_task.await.map_err(|e| e.to_string())??;
    let seen = verify.await.map_err(|e| e.to_string())?;
    worker_trigger.trigger();
    let worker_result = worker_task.await.map_err(|e| e.to_string())?;
    let stats = emulator.stats();
    emulator.shutdown().await;
    drop(kafka);

    let summary = summarize(&produced, &seen, &stats, started.elapsed());
    print_table(
        &summary,
        [args.check_rate, args.import_rate, args.batch_import_rate],
    );
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("--summary-json {}: {e}", path.display()))?;
    }
    worker_result.map_err(|e| format!("worker: {e}"))?;
    if summary.lost > 0 {
        eprintln!("LOST {} records", summary.lost);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Settings of an in-process worker on the embedded Kafka's [`INPUT`] topic, talking to the
/// emulator at `api_base_url` with `rates` (check, import; 0 = unlimited) as the app's budget.
/// `extra` flags are appended (a flag given here must not be among the defaults).
pub(crate) fn worker_args(
    brokers: &str,
    api_base_url: &str,
    key: SecretKey,
    rates: (f64, f64),
    group: &str,
    extra: &[&str],
) -> Result<WorkerArgs, String> {
    let (sdkappid, check, import) = (
        SDKAPPID.to_string(),
        rates.0.to_string(),
        rates.1.to_string(),
    );
    let mut argv = vec![
        "--brokers",
        brokers,
        "--group-id",
        group,
        "--sdkappid",
        &sdkappid,
        "--identifier",
        ADMIN,
        "--api-base-url",
        api_base_url,
        "--check-rate",
        &check,
        "--import-rate",
        &import,
        "--commit-interval",
        "1s",
    ];
    argv.extend_from_slice(extra);
    WorkerArgs::from_args(argv, key)
}

fn rate_text(r: f64) -> String {
    if r == 0.0 {
        "unlimited".into()
    } else {
        format!("{r}")
    }
}

async fn start_emulator(args: &DemoArgs, key: SecretKey) -> Result<EmulatorHandle, String> {
    let cfg = EmulatorConfig {
        sdkappid: SDKAPPID,
        identifier: ADMIN.into(),
        secret_key: Some(key),
        check_rate: args.check_rate,
        import_rate: args.import_rate,
        multi_import_rate: args.batch_import_rate,
        latency_ms: args.api_latency_ms,
        latency_jitter_ms: args.api_latency_ms / 2,
        transient_error_rate: args.api_error_rate,
        existing_fraction: args.existing_fraction,
        ..EmulatorConfig::default()
    };
    Emulator::start(cfg, "127.0.0.1:0".parse().expect("static address"))
        .await
        .map_err(|e| format!("Chat API emulator: {e}"))
}

/// A malformed payload of one of several kinds (`None` = tombstone).
fn bad_payload(i: u64) -> Option<Vec<u8>> {
    match i % 6 {
        0 => Some(b"this is not json".to_vec()),
        1 => Some(br#"{"UserID":""}"#.to_vec()),
        2 => Some(br#"{"Nick":"no user id"}"#.to_vec()),
        3 => Some(br#"{"UserID":"has a space"}"#.to_vec()),
        4 => Some(format!(r#"{{"UserID":"{}"}}"#, "x".repeat(33)).into_bytes()),
        _ => None,
    }
}

/// What the load generator produces: `events` signup events for fresh UserIDs on `topic`.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    /// Input topic.
    pub topic: String,
    /// Events to produce.
    pub events: u64,
    /// Events per second; 0 = as fast as possible.
    pub rate: f64,
    /// Share of malformed events.
    pub bad_fraction: f64,
    /// Skew: this share of the events on one partition, the rest round-robin over the others
    /// (`None`: by key, evenly).
    pub hot: Option<HotPartition>,
    /// `Some(id)`: events written in Avro with [`SIGNUP_AVRO_SCHEMA`], framed for a registry
    /// that has it as `id`; `None`: JSON.
    pub avro_schema_id: Option<u32>,
    /// `Some`: JSON events of each kind, named in a `type` field; `None`: signups alone.
    pub kinds: Option<KindMix>,
}

/// A lifecycle load: the shares of updates and deletes among the events (the rest are creates).
/// Each event's kind is in its `type` field; the worker reads it with [`KindMix::WORKER_FLAGS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KindMix {
    /// Share of profile updates.
    pub update: f64,
    /// Share of deletes.
    pub delete: f64,
}

impl KindMix {
    /// The worker flags that read the load's kinds and make its deletes.
    pub(crate) const WORKER_FLAGS: [&'static str; 7] = [
        "--event-type-pointer",
        "/type",
        "--update-types",
        "update",
        "--delete-types",
        "delete",
        "--apply-deletes",
    ];

    /// The `type` of the next event, given a uniform random `r` in [0, 1).
    fn pick(&self, r: f64) -> &'static str {
        if r < self.delete {
            "delete"
        } else if r < self.delete + self.update {
            "update"
        } else {
            "create"
        }
    }
}

/// How the demo's load is written (`demo --input-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoadFormat {
    /// JSON objects, read by the default pointers.
    #[default]
    Json,
    /// Avro through a local Schema Registry (the worker runs `--input-format avro`).
    Avro,
}

/// The writer schema of the Avro load: the fields the default pointers read, so the worker's
/// pointers are the same for either format.
pub(crate) const SIGNUP_AVRO_SCHEMA: &str = r#"{"type":"record","name":"Signup","namespace":"account_sync.demo","fields":[{"name":"UserID","type":"string"},{"name":"Nick","type":["null","string"],"default":null},{"name":"FaceUrl","type":["null","string"],"default":null}]}"#;

/// A local Schema Registry holding [`SIGNUP_AVRO_SCHEMA`], and the schema's id.
pub(crate) async fn avro_registry() -> Result<(RegistryHandle, u32), String> {
    let registry = RegistryHandle::start("127.0.0.1:0".parse().expect("an address"), None)
        .await
        .map_err(|e| format!("schema registry: {e}"))?;
    let id = registry.register("signups-value", SIGNUP_AVRO_SCHEMA, None, Vec::new());
    Ok((registry, id))
}

/// A load event in Avro, framed for schema `id`.
fn avro_event(schema: &apache_avro::Schema, id: u32, user: &str, n: u64) -> Vec<u8> {
    use apache_avro::types::Value;
    let some = |s: String| Value::Union(1, Box::new(Value::String(s)));
    let record = Value::Record(vec![
        ("UserID".into(), Value::String(user.to_owned())),
        ("Nick".into(), some(format!("User {n}"))),
        (
            "FaceUrl".into(),
            some(format!("https://example.com/a/{n}.png")),
        ),
    ]);
    let mut out = crate::registry::wire::header(id).to_vec();
    out.extend(apache_avro::to_avro_datum(schema, record).expect("the record fits its schema"));
    out
}

/// A skewed load: `fraction` of the events on `partition` of `partitions`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HotPartition {
    /// The hot partition.
    pub partition: i32,
    /// Its share of the events.
    pub fraction: f64,
    /// Partitions of the topic.
    pub partitions: i32,
}

impl HotPartition {
    /// The partition of the next event, given a uniform random `r` in [0, 1) and the count of
    /// cold events so far (for the round-robin).
    fn pick(&self, r: f64, cold: &mut u64) -> i32 {
        if r < self.fraction || self.partitions < 2 {
            return self.partition;
        }
        let others = (self.partitions - 1) as u64;
        let k = (*cold % others) as i32;
        *cold += 1;
        if k >= self.partition {
            k + 1
        } else {
            k
        }
    }
}

/// Produces the load; returns what was produced at each (partition, offset).
pub(crate) async fn produce_load(
    brokers: &str,
    load: &Load,
) -> Result<HashMap<(i32, i64), Produced>, String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| format!("load producer: {e}"))?;
    let run = fastrand::u32(..);
    let mut rng = fastrand::Rng::with_seed(u64::from(run));
    let mut produced = HashMap::with_capacity(load.events as usize);
    let avro = apache_avro::Schema::parse_str(SIGNUP_AVRO_SCHEMA).expect("a valid schema");
    let batch = if load.rate > 0.0 {
        (load.rate / 20.0).ceil().max(1.0) as u64
    } else {
        1_000
    };
    let started = Instant::now();
    let mut i = 0u64;
    let mut cold = 0u64;
    while i < load.events {
        if load.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / load.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let end = (i + batch).min(load.events);
        let mut items = Vec::with_capacity((end - i) as usize);
        for n in i..end {
            let user = format!("demo-{run:08x}-{n:07}");
            let good = rng.f64() >= load.bad_fraction;
            let payload = if good {
                Some(match (load.avro_schema_id, load.kinds) {
                    (Some(id), _) => avro_event(&avro, id, &user, n),
                    (None, Some(mix)) => {
                        let kind = mix.pick(rng.f64());
                        format!(r#"{{"type":"{kind}","UserID":"{user}","Nick":"User {n}","FaceUrl":"https://example.com/a/{n}.png"}}"#).into_bytes()
                    }
                    (None, None) => format!(r#"{{"UserID":"{user}","Nick":"User {n}","FaceUrl":"https://example.com/a/{n}.png"}}"#).into_bytes(),
                })
            } else {
                bad_payload(n)
            };
            items.push((user, payload, good));
        }
        let at_ms = now_ms();
        let parts: Vec<Option<i32>> = items
            .iter()
            .map(|_| load.hot.map(|h| h.pick(rng.f64(), &mut cold)))
            .collect();
        let sends = items.iter().zip(&parts).map(|((user, payload, _), part)| {
            let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(&load.topic)
                .key(user.as_str())
                .timestamp(at_ms);
            if let Some(p) = part {
                r = r.partition(*p);
            }
            if let Some(p) = payload {
                r = r.payload(p.as_slice());
            }
            producer.send(r, Timeout::Never)
        });
        for (res, (_, _, good)) in futures_util::future::join_all(sends)
            .await
            .into_iter()
            .zip(&items)
        {
            let d = res.map_err(|(e, _)| format!("producing load: {e}"))?;
            produced.insert((d.partition, d.offset), Produced { good: *good, at_ms });
        }
        i = end;
    }
    Ok(produced)
}

/// What the verifier waits for.
#[derive(Debug, Clone)]
pub(crate) struct CollectSpec {
    /// Partitions of the outcome topic.
    pub partitions: i32,
    /// Input records to account for.
    pub target: u64,
    /// Give up after this long.
    pub timeout: Duration,
    /// No progress bar.
    pub quiet: bool,
}

/// Reads outcome and dead-letter records until `spec.target` input records are accounted for,
/// `spec.timeout` passes, or `shutdown`.
pub(crate) fn collect(
    brokers: &str,
    spec: &CollectSpec,
    shutdown: &Shutdown,
) -> Result<CollectResult, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "account-sync-demo-verifier")
        .set("enable.auto.commit", "false")
        // Records are timed when they arrive here: don't let an idle fetch sit on them.
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| format!("verifier: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions {
        tpl.add_partition_offset(OUTCOMES, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    tpl.add_partition_offset(DLQ, 0, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer
        .assign(&tpl)
        .map_err(|e| format!("verifier: {e}"))?;

    let mut r = CollectResult::default();
    let started = Instant::now();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let target = spec.target;
    loop {
        let accounted = r.accounted();
        if accounted >= target || started.elapsed() > spec.timeout || shutdown.is_triggered() {
            // A short grace period to catch duplicates that are still on their way.
            let grace = Instant::now() + Duration::from_millis(500);
            while Instant::now() < grace {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    r.add(&m);
                }
            }
            break;
        }
        if let Some(res) = consumer.poll(Duration::from_millis(100)) {
            let m = res.map_err(|e| format!("verifier: {e}"))?;
            r.add(&m);
        }
        if !spec.quiet && last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            draw_progress(accounted, target, started.elapsed());
        }
    }
    if !spec.quiet {
        draw_progress(r.accounted().min(target), target, started.elapsed());
        eprintln!();
    }
    r.elapsed = started.elapsed();
    Ok(r)
}

fn draw_progress(done: u64, total: u64, elapsed: Duration) {
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    eprint!(
        "\r  {} {done}/{total} events done  {rate:>7.0} ev/s  {:>5.1}s",
        crate::progress::bar(done, total),
        elapsed.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

/// What the verifier read back.
#[derive(Debug, Default)]
pub(crate) struct CollectResult {
    /// Per input (partition, offset).
    seen: HashMap<(i32, i64), Seen>,
    /// Per input offset, the outcome's processed_at (ms) of its first outcome.
    pub processed_ms: HashMap<(i32, i64), i64>,
    /// Per input offset, when the verifier read its first outcome (ms since the epoch).
    pub received_ms: HashMap<(i32, i64), i64>,
    /// Statuses of all outcome records.
    statuses: HashMap<String, u64>,
    /// Dead letters by stage.
    dead_by_stage: HashMap<String, u64>,
    /// Input offsets with their expected record(s) complete.
    complete: u64,
    /// Time from start to the end of collection.
    elapsed: Duration,
    /// Last processed_at seen (ms).
    last_processed_ms: i64,
}

impl CollectResult {
    fn accounted(&self) -> u64 {
        self.complete
    }

    fn add(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let before_complete;
        let key;
        if m.topic() == OUTCOMES {
            let Some(v) = m
                .payload()
                .and_then(|p| serde_json::from_slice::<OutcomeView<'_>>(p).ok())
            else {
                return;
            };
            key = (v.source_partition, v.source_offset);
            let e = self.seen.entry(key).or_default();
            before_complete = is_complete(e);
            e.outcomes += 1;
            e.failed |= v.status == "failed";
            match self.statuses.get_mut(v.status) {
                Some(n) => *n += 1,
                None => {
                    self.statuses.insert(v.status.to_owned(), 1);
                }
            }
            self.received_ms.entry(key).or_insert_with(now_ms);
            if let Ok(t) = humantime::parse_rfc3339(v.processed_at) {
                let ms = t
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                self.processed_ms.entry(key).or_insert(ms);
                self.last_processed_ms = self.last_processed_ms.max(ms);
            }
        } else {
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            let (Some(p), Some(o)) = (
                header(crate::delivery::sink::headers::SOURCE_PARTITION),
                header(crate::delivery::sink::headers::SOURCE_OFFSET),
            ) else {
                return;
            };
            key = (p.parse().unwrap_or(-1), o.parse().unwrap_or(-1));
            let stage = header(crate::delivery::sink::headers::STAGE).unwrap_or_default();
            *self.dead_by_stage.entry(stage).or_default() += 1;
            let e = self.seen.entry(key).or_default();
            before_complete = is_complete(e);
            e.dead_letters += 1;
        }
        if !before_complete && is_complete(&self.seen[&key]) {
            self.complete += 1;
        }
    }
}

/// An input offset has what it needs: an outcome (plus a dead letter if failed), or a dead
/// letter alone (decode failure).
fn is_complete(s: &Seen) -> bool {
    (s.outcomes > 0 && (!s.failed || s.dead_letters > 0)) || (s.outcomes == 0 && s.dead_letters > 0)
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn summarize(
    produced: &HashMap<(i32, i64), Produced>,
    collected: &Result<CollectResult, String>,
    stats: &crate::devtools::emulator::Stats,
    _wall: Duration,
) -> Summary {
    let empty = CollectResult::default();
    let c = collected.as_ref().unwrap_or(&empty);
    let mut s = Summary {
        produced: produced.len() as u64,
        ..Summary::default()
    };
    let mut latencies = Vec::with_capacity(produced.len());
    for (key, p) in produced {
        let seen = c.seen.get(key).copied().unwrap_or_default();
        let expected_outcomes = u32::from(p.good);
        let expected_dead = if p.good { u32::from(seen.failed) } else { 1 };
        if seen.outcomes < expected_outcomes || seen.dead_letters < expected_dead {
            s.lost += 1;
        }
        s.duplicates += u64::from(
            seen.outcomes.saturating_sub(expected_outcomes)
                + seen.dead_letters.saturating_sub(expected_dead),
        );
        if let Some(done) = c.processed_ms.get(key) {
            latencies.push((done - p.at_ms) as f64);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    s.outcomes = c.statuses.values().sum();
    s.imported = c.statuses.get("imported").copied().unwrap_or(0);
    s.already_imported = c.statuses.get("already_imported").copied().unwrap_or(0);
    s.failed = c.statuses.get("failed").copied().unwrap_or(0);
    s.dead_lettered = c.dead_by_stage.values().sum();
    s.decode_dead_lettered = c.dead_by_stage.get("decode").copied().unwrap_or(0);
    s.check_calls = stats.calls.get("account_check").copied().unwrap_or(0);
    s.import_calls = stats.calls.get("account_import").copied().unwrap_or(0);
    s.batch_import_calls = stats.calls.get("multiaccount_import").copied().unwrap_or(0);
    s.delete_calls = stats.calls.get("account_delete").copied().unwrap_or(0);
    let status = |name: &str| c.statuses.get(name).copied().unwrap_or(0);
    (s.updated, s.deleted, s.already_absent) = (
        status("updated"),
        status("deleted"),
        status("already_absent"),
    );
    s.frequency_limited = stats.rate_limited.values().sum();
    let first_ms = produced.values().map(|p| p.at_ms).min().unwrap_or(0);
    s.elapsed_seconds = if c.last_processed_ms > first_ms {
        (c.last_processed_ms - first_ms) as f64 / 1000.0
    } else {
        c.elapsed.as_secs_f64()
    };
    s.events_per_second = if s.elapsed_seconds > 0.0 {
        s.produced as f64 / s.elapsed_seconds
    } else {
        0.0
    };
    s.latency_p50_ms = percentile(&latencies, 0.50);
    s.latency_p99_ms = percentile(&latencies, 0.99);
    if let Err(e) = collected {
        eprintln!("verifier failed: {e}");
    }
    s
}

/// Calls per second over the run as a share of `limit` ("-" when unlimited or no time passed).
fn ceiling_use(calls: u64, seconds: f64, limit: f64) -> String {
    if limit <= 0.0 || seconds <= 0.0 {
        return "-".into();
    }
    format!("{:.0} %", calls as f64 / seconds / limit * 100.0)
}

/// The summary table; `limits` are the check, import and batch import budgets (calls/s).
fn print_table(s: &Summary, limits: [f64; 3]) {
    let t = s.elapsed_seconds;
    let rows: [(&str, String); 20] = [
        ("events produced", s.produced.to_string()),
        ("outcome records", s.outcomes.to_string()),
        ("  imported", s.imported.to_string()),
        ("  already imported", s.already_imported.to_string()),
        ("  failed", s.failed.to_string()),
        ("dead-lettered", s.dead_lettered.to_string()),
        ("  of which at decode", s.decode_dead_lettered.to_string()),
        ("lost", s.lost.to_string()),
        ("duplicates", s.duplicates.to_string()),
        ("account_check calls", s.check_calls.to_string()),
        ("account_import calls", s.import_calls.to_string()),
        (
            "multiaccount_import calls",
            s.batch_import_calls.to_string(),
        ),
        (
            "  check ceiling in use",
            ceiling_use(s.check_calls, t, limits[0]),
        ),
        (
            "  import ceiling in use",
            ceiling_use(s.import_calls, t, limits[1]),
        ),
        (
            "  batch ceiling in use",
            ceiling_use(s.batch_import_calls, t, limits[2]),
        ),
        ("frequency-limit answers", s.frequency_limited.to_string()),
        ("elapsed", format!("{:.2} s", s.elapsed_seconds)),
        ("throughput", format!("{:.0} events/s", s.events_per_second)),
        ("latency p50", format!("{:.0} ms", s.latency_p50_ms)),
        ("latency p99", format!("{:.0} ms", s.latency_p99_ms)),
    ];
    println!();
    println!("  {:<26} {:>14}", "account-sync demo", "");
    println!("  {}", "-".repeat(41));
    for (k, v) in rows {
        println!("  {k:<26} {v:>14}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_get_enough_partitions_for_the_mock_broker() {
        assert_eq!(partitions_for(12_000, 6), 6);
        assert_eq!(partitions_for(200_000, 6), 7);
        assert_eq!(partitions_for(1_000_000, 6), 32);
        assert_eq!(partitions_for(1_000_000, 64), 64);
    }

    #[test]
    fn completeness_rules() {
        assert!(!is_complete(&Seen::default()));
        assert!(is_complete(&Seen {
            outcomes: 1,
            dead_letters: 0,
            failed: false
        }));
        assert!(!is_complete(&Seen {
            outcomes: 1,
            dead_letters: 0,
            failed: true
        }));
        assert!(is_complete(&Seen {
            outcomes: 1,
            dead_letters: 1,
            failed: true
        }));
        assert!(is_complete(&Seen {
            outcomes: 0,
            dead_letters: 1,
            failed: false
        }));
    }

    #[test]
    fn lost_and_duplicates_are_counted_per_offset() {
        let mut produced = HashMap::new();
        produced.insert(
            (0, 0),
            Produced {
                good: true,
                at_ms: 1000,
            },
        );
        produced.insert(
            (0, 1),
            Produced {
                good: true,
                at_ms: 1000,
            },
        );
        produced.insert(
            (0, 2),
            Produced {
                good: false,
                at_ms: 1000,
            },
        );
        produced.insert(
            (0, 3),
            Produced {
                good: true,
                at_ms: 1000,
            },
        );
        let mut c = CollectResult::default();
        c.seen.insert(
            (0, 0),
            Seen {
                outcomes: 2,
                dead_letters: 0,
                failed: false,
            },
        ); // one duplicate
        c.seen.insert(
            (0, 2),
            Seen {
                outcomes: 0,
                dead_letters: 1,
                failed: false,
            },
        );
        c.seen.insert(
            (0, 3),
            Seen {
                outcomes: 1,
                dead_letters: 0,
                failed: true,
            },
        ); // failed without DLQ: lost
        c.statuses.insert("imported".into(), 3);
        c.processed_ms.insert((0, 0), 1100);
        let s = summarize(
            &produced,
            &Ok(c),
            &crate::devtools::emulator::Stats::default(),
            Duration::ZERO,
        );
        assert_eq!(s.produced, 4);
        assert_eq!(
            s.lost, 2,
            "(0,1) has nothing; (0,3) failed without its dead letter"
        );
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.latency_p50_ms, 100.0);
    }

    #[test]
    fn bad_payloads_never_decode() {
        let d = crate::worker::event::Decoder::json_default();
        for i in 0..12 {
            assert!(d.decode(bad_payload(i).as_deref()).is_err(), "kind {i}");
        }
    }
}
