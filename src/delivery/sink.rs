//! Outcome and dead-letter records: their formats (`docs/ARCHITECTURE.md`, "Records") and producing
//! them.
//!
//! The encoding functions are pure so that tests and benches can check the exact bytes; [`Sink`]
//! sends them with an idempotent producer and resolves only when the broker has acknowledged.

use std::time::{Duration, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::domain::{Outcome, OutcomeStatus, SourcePos, Stage};

/// Header names of dead-letter records.
pub mod headers {
    pub const STAGE: &str = "account-sync.error.stage";
    pub const CODE: &str = "account-sync.error.code";
    pub const REASON: &str = "account-sync.error.reason";
    /// The failure class ([`crate::domain::failure_class`]): what `dlq replay --class` filters on.
    pub const CLASS: &str = "account-sync.error.class";
    pub const SOURCE_TOPIC: &str = "account-sync.source.topic";
    pub const SOURCE_PARTITION: &str = "account-sync.source.partition";
    pub const SOURCE_OFFSET: &str = "account-sync.source.offset";
    pub const ATTEMPTS: &str = "account-sync.attempts";
    pub const FAILED_AT: &str = "account-sync.failed-at";
}

/// The outcome record value (field order as in `docs/ARCHITECTURE.md`, "Records"); `source` says
/// where the input record was (its fields stand between `attempts` and `processed_at`).
#[derive(Serialize)]
struct OutcomeJson<'a, S> {
    user_id: &'a str,
    status: OutcomeStatus,
    error_code: i64,
    error_info: &'a str,
    attempts: u32,
    #[serde(flatten)]
    source: S,
    processed_at: &'a str,
}

/// Where a Kafka input record was: the source fields of the worker's outcome records.
#[derive(Serialize)]
struct KafkaSource<'a> {
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
}

/// RFC 3339 UTC with milliseconds: `2026-11-22T12:00:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Encodes an outcome record value.
pub fn encode_outcome(
    user_id: &str,
    outcome: &Outcome,
    source_topic: &str,
    pos: SourcePos,
    processed_at: &str,
) -> Vec<u8> {
    let source = KafkaSource {
        source_topic,
        source_partition: pos.partition,
        source_offset: pos.offset,
    };
    encode_outcome_from(user_id, outcome, source, processed_at)
}

/// Encodes an outcome record value whose source fields are `source`'s (a struct serialising to
/// an object), e.g. `{"line": 12}` for a line of a backfill file.
pub fn encode_outcome_from<S: Serialize>(
    user_id: &str,
    outcome: &Outcome,
    source: S,
    processed_at: &str,
) -> Vec<u8> {
    serde_json::to_vec(&OutcomeJson {
        user_id,
        status: outcome.status,
        error_code: outcome.error_code,
        error_info: &outcome.error_info,
        attempts: outcome.attempts,
        source,
        processed_at,
    })
    .expect("serialising a plain struct cannot fail")
}

/// What a dead-letter record says about the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it failed.
    pub stage: Stage,
    /// Vendor code; 0 where none.
    pub code: i64,
    /// Human-readable reason.
    pub reason: String,
    /// Why, as one of the [`failure_class`](crate::domain::failure_class) values.
    pub class: &'static str,
    /// API attempts made (0 for decode failures).
    pub attempts: u32,
}

/// Builds the dead-letter headers.
pub fn dead_letter_headers(
    dl: &DeadLetter,
    source_topic: &str,
    pos: SourcePos,
    failed_at: &str,
) -> OwnedHeaders {
    let code = dl.code.to_string();
    let partition = pos.partition.to_string();
    let offset = pos.offset.to_string();
    let attempts = dl.attempts.to_string();
    let pairs: [(&str, &str); 9] = [
        (headers::STAGE, dl.stage.as_str()),
        (headers::CODE, &code),
        (headers::REASON, &dl.reason),
        (headers::CLASS, dl.class),
        (headers::SOURCE_TOPIC, source_topic),
        (headers::SOURCE_PARTITION, &partition),
        (headers::SOURCE_OFFSET, &offset),
        (headers::ATTEMPTS, &attempts),
        (headers::FAILED_AT, failed_at),
    ];
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}

/// A record could not be delivered, even after librdkafka's own retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not deliver a record to topic {topic}: {error}")]
pub struct SinkError {
    /// Target topic.
    pub topic: String,
    /// librdkafka's error.
    pub error: KafkaError,
}

/// Which output topic a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The outcome topic.
    Outcome,
    /// The dead-letter topic.
    DeadLetter,
}

/// A record ready to be produced. Owned, so a transaction can produce it again after an abort.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Outcome or dead-letter topic.
    pub target: Target,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Option<Vec<u8>>,
    /// Headers (dead letters).
    pub headers: Option<OwnedHeaders>,
}

/// The configuration of a producer that resolves a send only once the record is safe: idempotent
/// (no duplicates or reordering from its own retries) with acks=all (librdkafka refuses anything
/// else with idempotence). `extra` are the user's librdkafka properties; the ones the guarantees
/// rest on are refused earlier, by config validation.
pub fn producer_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    for (k, v) in extra {
        cfg.set(k, v);
    }
    cfg
}

/// Produces outcome and dead-letter records.
pub struct Sink {
    /// Idempotent (or transactional) producer shared by all windows.
    producer: FutureProducer,
    /// Outcome topic name.
    outcome_topic: String,
    /// Dead-letter topic name.
    dlq_topic: String,
    /// Input topic name (written into records).
    source_topic: String,
}

impl Sink {
    /// Builds the producer ([`producer_config`]); transactional when `transactional_id` is given
    /// (exactly-once mode; the [`Committer`](crate::delivery::transaction::Committer) then initialises its
    /// transactions).
    pub fn new(
        brokers: &str,
        extra: &[(String, String)],
        source_topic: &str,
        outcome_topic: &str,
        dlq_topic: &str,
        transactional_id: Option<&str>,
    ) -> Result<Self, KafkaError> {
        let mut cfg = producer_config(brokers, extra);
        if let Some(id) = transactional_id {
            cfg.set("transactional.id", id);
        }
        Ok(Sink {
            producer: cfg.create()?,
            outcome_topic: outcome_topic.to_owned(),
            dlq_topic: dlq_topic.to_owned(),
            source_topic: source_topic.to_owned(),
        })
    }

    /// The input topic name, as written into records.
    pub fn source_topic(&self) -> &str {
        &self.source_topic
    }

    /// The producer (the transaction committer drives its transactions).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The outcome record of `user_id` (key = UserID).
    pub fn outcome_record(
        &self,
        user_id: &str,
        outcome: &Outcome,
        pos: SourcePos,
        processed_at: &str,
    ) -> OutRecord {
        OutRecord {
            target: Target::Outcome,
            key: Some(user_id.as_bytes().to_vec()),
            payload: Some(encode_outcome(
                user_id,
                outcome,
                &self.source_topic,
                pos,
                processed_at,
            )),
            headers: None,
        }
    }

    /// A dead-letter record: the original key and payload unchanged, plus the headers.
    pub fn dead_letter_record(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        pos: SourcePos,
        dl: &DeadLetter,
        failed_at: &str,
    ) -> OutRecord {
        OutRecord {
            target: Target::DeadLetter,
            key: key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
            headers: Some(dead_letter_headers(dl, &self.source_topic, pos, failed_at)),
        }
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: &OutRecord) -> Result<(), SinkError> {
        let topic = match record.target {
            Target::Outcome => &self.outcome_topic,
            Target::DeadLetter => &self.dlq_topic,
        };
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = &record.key {
            r = r.key(k.as_slice());
        }
        if let Some(p) = &record.payload {
            r = r.payload(p.as_slice());
        }
        if let Some(h) = &record.headers {
            r = r.headers(h.clone());
        }
        // Queue-full waits are unbounded: back-pressure, not failure. Delivery itself is bounded by
        // librdkafka's message.timeout.ms, after its own retries.
        self.producer
            .send(r, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(error, _)| SinkError {
                topic: topic.clone(),
                error,
            })
    }

    /// Waits until everything queued is delivered (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;
    use crate::domain::failure_class;

    fn pos() -> SourcePos {
        SourcePos {
            partition: 3,
            offset: 1234,
            epoch: 1,
        }
    }

    #[test]
    fn outcome_record_is_exactly_the_documented_json() {
        let o = Outcome::success(OutcomeStatus::Imported, 1);
        let bytes = encode_outcome("u1", &o, "signups", pos(), "2026-11-22T12:00:00.123Z");
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"user_id":"u1","status":"imported","error_code":0,"error_info":"","attempts":1,"source_topic":"signups","source_partition":3,"source_offset":1234,"processed_at":"2026-11-22T12:00:00.123Z"}"#
        );
        let f = Outcome {
            status: OutcomeStatus::AlreadyImported,
            ..o.clone()
        };
        assert!(String::from_utf8(encode_outcome("u1", &f, "s", pos(), "t"))
            .unwrap()
            .contains(r#""status":"already_imported""#));
    }

    #[test]
    fn timestamps_are_rfc3339_millis_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let s = rfc3339_millis(t);
        assert!(s.ends_with(".123Z") && s.len() == 24, "{s}");
    }

    #[test]
    fn dead_letter_headers_are_complete() {
        let dl = DeadLetter {
            stage: Stage::Import,
            code: 40601,
            reason: "Nick too long".into(),
            class: failure_class::REJECTED,
            attempts: 2,
        };
        let h = dead_letter_headers(&dl, "signups", pos(), "2026-11-22T12:00:00.123Z");
        let got: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("account-sync.error.stage", "import"),
            ("account-sync.error.code", "40601"),
            ("account-sync.error.reason", "Nick too long"),
            ("account-sync.error.class", "rejected"),
            ("account-sync.source.topic", "signups"),
            ("account-sync.source.partition", "3"),
            ("account-sync.source.offset", "1234"),
            ("account-sync.attempts", "2"),
            ("account-sync.failed-at", "2026-11-22T12:00:00.123Z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }
}
