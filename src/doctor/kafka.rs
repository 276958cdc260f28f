//! The Kafka checks, with the worker's connection settings (`--brokers`, every
//! `--kafka-property`: SASL, TLS): the brokers answer a metadata request, the three topics exist
//! (their partition counts), the consumer group's coordinator serves its committed offsets, the
//! brokers serve the group protocol asked for ([`super::protocols`]), and in exactly-once mode a
//! transactional producer can initialise.
//!
//! Blocking librdkafka calls, each bounded by `--kafka-timeout`: run it on a blocking thread.
//! Nothing joins the group (that would take partitions from a running worker) and the
//! transactional producer uses an id of its own (the worker's would fence the running replica).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::protocols::{self, ApiLog};
use super::report::{count, Check, Problem};
use crate::config::{DeliveryArg, WorkerArgs};
use crate::kafka::txn_error::{CallError, ErrorClass, Stage, TxnFailure};

/// What the Kafka checks found.
pub(super) struct Findings {
    /// `brokers`, the three topics, `group`, and `transactions` in exactly-once mode.
    pub checks: Vec<Check>,
    /// Partitions of the input topic, when it exists (for the `replicas` check).
    pub input_partitions: Option<usize>,
}

impl Findings {
    /// The checks' thread died (a bug): every Kafka check is reported failed with `why`.
    pub fn crashed(why: &str) -> Findings {
        Findings {
            checks: vec![Check::fail(
                "brokers",
                format!("the Kafka checks stopped: {why}"),
                "report this as a bug in account-sync",
            )],
            input_partitions: None,
        }
    }
}

/// Why a Kafka check failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaProblem {
    /// librdkafka refused the settings (an unknown or invalid property).
    #[error("librdkafka refuses the settings: {0}")]
    Client(KafkaError),
    /// No broker answered.
    #[error("no broker of {brokers} answered within {timeout}: {reason}")]
    Unreachable {
        brokers: String,
        timeout: String,
        reason: String,
    },
    /// The topic is not in the cluster's metadata.
    #[error("topic {topic:?} ({flag}) does not exist, or this principal may not describe it")]
    MissingTopic { flag: &'static str, topic: String },
    /// The broker reports an error for the topic (authorization, leader not available, ...).
    #[error("topic {topic:?} ({flag}): {error:?}")]
    Topic {
        flag: &'static str,
        topic: String,
        error: RDKafkaRespErr,
    },
    /// The group's coordinator did not serve its committed offsets.
    #[error("the committed offsets of group {group:?} cannot be read: {reason}")]
    Group { group: String, reason: String },
    /// A transactional producer could not initialise.
    #[error("a transactional producer cannot initialise: {0}")]
    Transactions(String),
}

impl Problem for KafkaProblem {
    fn fix(&self) -> String {
        match self {
            KafkaProblem::Client(_) => "fix the --kafka-property the message names (librdkafka's CONFIGURATION.md lists the properties)".into(),
            KafkaProblem::Unreachable { .. } => "check --brokers (host:port of bootstrap servers) and the network path from here; for TLS or SASL, the --kafka-property settings (security.protocol, sasl.mechanism, sasl.username, sasl.password, ssl.ca.location)".into(),
            KafkaProblem::MissingTopic { flag, topic } => format!("create {topic:?} (the worker creates no topics), e.g. kafka-topics.sh --create --topic {topic} --partitions N, or fix {flag}; with ACLs, allow DESCRIBE on it"),
            KafkaProblem::Topic { topic, .. } => format!("with ACLs, allow DESCRIBE and READ (input) or WRITE (outcome, dead letters) on topic {topic:?}; otherwise check the brokers' health"),
            KafkaProblem::Group { group, .. } => format!("with ACLs, allow DESCRIBE and READ on group {group:?}; otherwise check that the brokers' __consumer_offsets topic is available"),
            KafkaProblem::Transactions(_) => "with ACLs, allow WRITE and DESCRIBE on the transactional.id; make sure the cluster has transaction.state.log.replication.factor brokers up; or run with --delivery at-least-once".into(),
        }
    }
}

/// Records librdkafka's errors and logs instead of logging them: the one that explains an
/// unreachable cluster (refused connection, TLS handshake, SASL authentication) goes into the
/// check's line, not into a log nobody reads; the brokers' ApiVersions answers go to the
/// `group-protocol` check.
#[derive(Default)]
struct Recorder {
    /// The most specific error reported so far.
    reason: Mutex<Option<String>>,
    /// The brokers' ApiVersions answers, from the log.
    apis: ApiLog,
    /// Log lines and errors served so far (see [`serve_queued`]).
    served: AtomicUsize,
}

impl Recorder {
    fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps `reason` unless a more specific one is already there.
    fn record(&self, reason: &str, generic: bool) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() || !generic {
            *slot = Some(reason.to_owned());
        }
    }
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.apis.observe(fac, message);
        tracing::debug!(target: "rdkafka", fac, "{message}");
        // Connection failures ("Connect to ... failed: Connection refused", TLS handshakes,
        // SASL authentication) are logged before they become errors, if they ever do.
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.record(message, false);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        // "1/1 brokers are down" says less than the connection error before it.
        let generic = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        self.record(reason, generic);
    }
}

impl ConsumerContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Runs the Kafka checks in order; each depends on the one before it.
pub(super) fn check(w: &WorkerArgs, timeout: Duration) -> Findings {
    let mut checks = Vec::new();
    let not_checked = |checks: &mut Vec<Check>, why: &str| {
        for name in after_brokers(w) {
            checks.push(Check::skip(name, why));
        }
    };
    if let Err(e) = w.kafka.validate() {
        let why = format!("the Kafka settings are invalid ({e})");
        checks.push(Check::skip("brokers", &why));
        not_checked(&mut checks, &why);
        return Findings {
            checks,
            input_partitions: None,
        };
    }
    let (consumer, metadata) = match connect(w, timeout) {
        Ok(found) => found,
        Err(problem) => {
            checks.push(Check::of("brokers", Err(problem)));
            not_checked(&mut checks, "the brokers did not answer");
            return Findings {
                checks,
                input_partitions: None,
            };
        }
    };
    checks.push(brokers_check(w, &metadata));
    let topics = [
        ("input-topic", "--input-topic", &w.kafka.input_topic),
        ("outcome-topic", "--outcome-topic", &w.outcome_topic),
        ("dlq-topic", "--dlq-topic", &w.kafka.dlq_topic),
    ];
    let mut input_partitions = None;
    for (name, flag, topic) in topics {
        let found = partitions(&metadata, flag, topic);
        if name == "input-topic" {
            input_partitions = found.as_ref().ok().copied();
        }
        checks.push(topic_check(name, topic, found));
    }
    checks.push(match input_partitions {
        Some(n) => group_check(w, &consumer, n, timeout),
        None => Check::skip("group", "the input topic is missing"),
    });
    // After the group check: the group's coordinator, which would serve the heartbeats, is among
    // the brokers asked by then.
    serve_queued(&consumer);
    checks.push(protocols::check(
        &consumer.context().apis,
        w.kafka.group_protocol,
    ));
    if w.delivery == DeliveryArg::ExactlyOnce {
        checks.push(Check::of("transactions", transactions(w, timeout)));
    }
    Findings {
        checks,
        input_partitions,
    }
}

/// The checks that need the brokers, for their lines when the brokers cannot be asked.
fn after_brokers(w: &WorkerArgs) -> Vec<&'static str> {
    let mut names = vec![
        "input-topic",
        "outcome-topic",
        "dlq-topic",
        "group",
        "group-protocol",
    ];
    if w.delivery == DeliveryArg::ExactlyOnce {
        names.push("transactions");
    }
    names
}

/// The configuration of the doctor's consumer: the user's consumer properties, then what the
/// doctor itself needs (as the worker's clients set theirs), with librdkafka's `feature` debug
/// context added, in which it logs each broker's ApiVersions answer ([`super::protocols`]).
fn consumer_config(w: &WorkerArgs) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    let props = w.kafka.consumer_properties();
    for (k, v) in &props {
        cfg.set(k, v);
    }
    let debug = props.iter().rev().find(|(k, _)| k == "debug");
    cfg.set("bootstrap.servers", &w.kafka.brokers)
        .set(
            "debug",
            protocols::debug_with_feature(debug.map(|(_, v)| v.as_str())),
        )
        .set_log_level(RDKafkaLogLevel::Debug);
    cfg
}

/// Serves the log lines and errors the consumer's queue holds (its log goes through the queue):
/// one event a poll, until a poll serves none.
fn serve_queued(consumer: &BaseConsumer<Recorder>) {
    // Bounded: a queue refilled as fast as it is served (a debug=all flood) ends it too.
    for _ in 0..1_000_000 {
        let before = consumer.context().served.load(Ordering::Relaxed);
        let polled = consumer.poll(Duration::ZERO);
        if polled.is_none() && consumer.context().served.load(Ordering::Relaxed) == before {
            break;
        }
    }
}

/// A consumer of the worker's group (it never subscribes) and the whole cluster's metadata.
/// Asking for every topic rather than the three by name keeps a broker that auto-creates topics
/// from creating a mistyped one.
fn connect(
    w: &WorkerArgs,
    timeout: Duration,
) -> Result<(BaseConsumer<Recorder>, Metadata), KafkaProblem> {
    let consumer: BaseConsumer<Recorder> = consumer_config(w)
        .set("group.id", &w.kafka.group_id)
        .set("enable.auto.commit", "false")
        .create_with_context(Recorder::default())
        .map_err(KafkaProblem::Client)?;
    match consumer.fetch_metadata(None, timeout) {
        Ok(md) => Ok((consumer, md)),
        // One poll serves the error callbacks queued meanwhile: they say why.
        Err(e) => Err(KafkaProblem::Unreachable {
            brokers: w.kafka.brokers.clone(),
            timeout: super::limits::human(timeout),
            reason: {
                serve_queued(&consumer);
                consumer.context().reason().unwrap_or_else(|| e.to_string())
            },
        }),
    }
}

fn brokers_check(w: &WorkerArgs, md: &Metadata) -> Check {
    let list: Vec<String> = md
        .brokers()
        .iter()
        .map(|b| format!("{} {}:{}", b.id(), b.host(), b.port()))
        .collect();
    // Only the settings that say how the connection is made; never their credentials.
    let how: Vec<String> = w
        .kafka
        .properties()
        .into_iter()
        .filter(|(k, _)| k == "security.protocol" || k == "sasl.mechanism")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let how = match how.is_empty() {
        true => String::new(),
        false => format!(", with {}", how.join(" ")),
    };
    Check::pass(
        "brokers",
        format!(
            "{} reachable{how}: {}",
            count(list.len(), "broker"),
            list.join(", ")
        ),
    )
    .with("brokers", list.len())
}

/// The partition count of `topic`, or why there is none.
fn partitions(md: &Metadata, flag: &'static str, topic: &str) -> Result<usize, KafkaProblem> {
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaProblem::MissingTopic {
            flag,
            topic: topic.to_owned(),
        });
    };
    match t.error() {
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            Err(KafkaProblem::MissingTopic {
                flag,
                topic: topic.to_owned(),
            })
        }
        Some(error) => Err(KafkaProblem::Topic {
            flag,
            topic: topic.to_owned(),
            error,
        }),
        None => Ok(t.partitions().len()),
    }
}

fn topic_check(name: &'static str, topic: &str, found: Result<usize, KafkaProblem>) -> Check {
    let partitions = found.as_ref().ok().copied();
    let check = Check::of(
        name,
        found.map(|n| format!("{topic:?} exists, {}", count(n, "partition"))),
    )
    .with("topic", topic);
    match partitions {
        Some(n) => check.with("partitions", n),
        None => check,
    }
}

/// Reads the group's committed offsets of every input partition: the coordinator answers and
/// this principal may describe the group (what the worker needs before it can join).
fn group_check(
    w: &WorkerArgs,
    consumer: &BaseConsumer<Recorder>,
    partitions: usize,
    timeout: Duration,
) -> Check {
    let group = &w.kafka.group_id;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(&w.kafka.input_topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| KafkaProblem::Group {
            group: group.clone(),
            reason: e.to_string(),
        })
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter(|e| matches!(e.offset(), Offset::Offset(_)))
                .count()
        });
    let n = committed.as_ref().ok().copied();
    let check = Check::of(
        "group",
        committed.map(|n| match n {
            0 => format!(
                "group {group:?} can be described: no committed offsets yet (a first run starts at the earliest offsets)"
            ),
            n => format!(
                "group {group:?} can be described: committed offsets on {n} of {partitions} input partitions"
            ),
        }),
    )
    .with("group", group.as_str());
    match n {
        Some(n) => check.with("committed_partitions", n),
        None => check,
    }
}

/// `init_transactions` with an id of the doctor's own, derived from the worker's (ACLs on
/// transactional ids are usually by prefix). Never the worker's own id: initialising it would
/// fence a replica that runs with it.
fn transactions(w: &WorkerArgs, timeout: Duration) -> Result<String, KafkaProblem> {
    let id = match &w.transactional_id {
        Some(id) => format!("{id}-doctor"),
        None => format!("{}-doctor", w.kafka.group_id),
    };
    let producer: BaseProducer<Recorder> =
        crate::delivery::sink::producer_config(&w.kafka.brokers, &w.kafka.producer_properties())
            .set("transactional.id", &id)
            .create_with_context(Recorder::default())
            .map_err(KafkaProblem::Client)?;
    producer.init_transactions(timeout).map_err(|e| {
        let call = CallError::classify(Stage::Init, &e);
        KafkaProblem::Transactions(match call.class {
            ErrorClass::Unsupported => TxnFailure::Unsupported(call).to_string(),
            _ => call.to_string(),
        })
    })?;
    Ok(format!(
        "a transactional producer initialises (transactional.id {id:?}, the doctor's own)"
    ))
}
