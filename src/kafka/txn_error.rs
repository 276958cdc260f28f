//! Errors of librdkafka's transactional calls, classified by its transaction contract
//! (`rd_kafka_commit_transaction` and `rd_kafka_abort_transaction` in `rdkafka.h`): one
//! [`ErrorClass`] per error, and the [`TxnFailure`] that stops exactly-once delivery.
//!
//! - retriable (the call timed out while the coordinator was loading or moving, ...): the *same*
//!   call is made again: the operation goes on in the background and a new call resumes it;
//! - abortable: the transaction is aborted (the abort itself made again until it succeeds) and the
//!   batch redone (its records are owned and can be produced again);
//! - fatal (this producer was fenced by a newer one with the same `transactional.id`, ...): the
//!   producer is unusable. The worker stops without committing further; the next start
//!   re-initialises the same `transactional.id` and resumes from the last committed offsets.
//!   Rebuilding the producer in place instead would fence the newer producer in turn;
//! - unsupported (the brokers lack transactions, or deny this `transactional.id`): fatal, with a
//!   message that says so and what to run instead.
//!
//! Shared by the committer ([`crate::delivery::transaction`]), `doctor` (which checks a
//! transactional producer) and the metrics (the labels of
//! `account_sync_transaction_errors_total`).

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The step of a transaction a call belongs to (the `stage` label of
/// `account_sync_transaction_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `init_transactions` at start-up.
    Init,
    /// `begin_transaction`.
    Begin,
    /// Producing the batch's records (their delivery).
    Produce,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

impl Stage {
    /// Every stage, for the metric's series.
    pub const ALL: [Stage; 6] = [
        Stage::Init,
        Stage::Begin,
        Stage::Produce,
        Stage::SendOffsets,
        Stage::Commit,
        Stage::Abort,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Begin => "begin",
            Stage::Produce => "produce",
            Stage::SendOffsets => "send_offsets",
            Stage::Commit => "commit",
            Stage::Abort => "abort",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What librdkafka says about an error of a transactional call: the flags of its
/// `rd_kafka_error_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// `rd_kafka_error_is_fatal`.
    pub fatal: bool,
    /// `rd_kafka_error_txn_requires_abort`.
    pub abortable: bool,
    /// `rd_kafka_error_is_retriable`.
    pub retriable: bool,
}

/// What to do about an error (the `kind` label, see [`ErrorClass::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Make the same call again.
    Retriable,
    /// Abort the transaction and redo the batch.
    Abortable,
    /// The producer is unusable: stop.
    Fatal,
    /// The cluster cannot do transactions for this producer: stop, and say so.
    Unsupported,
}

/// Codes that mean the cluster cannot do transactions for this producer at all, whatever flag
/// librdkafka gives them: retrying or aborting cannot help. librdkafka reports a broker without the
/// transactional requests as `_UNSUPPORTED_FEATURE` ("EndTxnRequest (KIP-98) not supported by
/// broker") and calls that *retriable* at commit and send-offsets time, so following its flag
/// alone would retry forever.
const UNSUPPORTED: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::UnsupportedFeature,
    RDKafkaErrorCode::UnsupportedVersion,
    RDKafkaErrorCode::UnsupportedForMessageFormat,
    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
];

impl ErrorClass {
    /// The `kind` label values (unsupported counts as fatal).
    pub const LABELS: [&'static str; 3] = ["retriable", "abortable", "fatal"];

    /// The class of an error with `code` and librdkafka's `flags`.
    pub fn of(code: RDKafkaErrorCode, flags: Flags) -> ErrorClass {
        if UNSUPPORTED.contains(&code) {
            ErrorClass::Unsupported
        } else if flags.fatal {
            ErrorClass::Fatal
        } else if flags.abortable {
            ErrorClass::Abortable
        } else if flags.retriable {
            ErrorClass::Retriable
        } else {
            // No hint how to go on (an invalid state, a bad argument): librdkafka's own tests
            // treat this as a failure too.
            ErrorClass::Fatal
        }
    }

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Retriable => "retriable",
            ErrorClass::Abortable => "abortable",
            ErrorClass::Fatal | ErrorClass::Unsupported => "fatal",
        }
    }
}

/// A failed transactional call, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {reason}")]
pub struct CallError {
    /// The call.
    pub stage: Stage,
    /// What to do about it.
    pub class: ErrorClass,
    /// librdkafka's error.
    pub reason: String,
}

impl CallError {
    /// Classifies `e`, an error of a transactional call at `stage`.
    pub fn classify(stage: Stage, e: &KafkaError) -> CallError {
        let (class, reason) = match e {
            KafkaError::Transaction(rd) => {
                let flags = Flags {
                    fatal: rd.is_fatal(),
                    abortable: rd.txn_requires_abort(),
                    retriable: rd.is_retriable(),
                };
                let reason = format!("{} ({})", rd.string(), rd.name());
                (ErrorClass::of(rd.code(), flags), reason)
            }
            // Not librdkafka's transactional API (building the offsets to send): no flags.
            other => {
                let code = other.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                (ErrorClass::of(code, Flags::default()), other.to_string())
            }
        };
        CallError {
            stage,
            class,
            reason,
        }
    }

    /// Classifies `e`, a record of the transaction that was not delivered. The transaction is then
    /// incomplete and must be aborted (librdkafka has already purged its other records), unless
    /// the producer itself failed (`fatal`, its fatal error: fenced while producing, ...).
    pub fn undelivered(e: &KafkaError, fatal: Option<(RDKafkaErrorCode, String)>) -> CallError {
        let (class, reason) = match fatal {
            Some((code, why)) => {
                let flags = Flags {
                    fatal: true,
                    ..Flags::default()
                };
                (
                    ErrorClass::of(code, flags),
                    format!("{e}: {why} ({code:?})"),
                )
            }
            None => (ErrorClass::Abortable, e.to_string()),
        };
        CallError {
            stage: Stage::Produce,
            class,
            reason,
        }
    }

    /// What the committer does about it, for the log.
    pub fn action(&self) -> &'static str {
        match (self.class, self.stage) {
            (ErrorClass::Retriable, _) | (ErrorClass::Abortable, Stage::Abort) => {
                "calling it again"
            }
            (ErrorClass::Abortable, _) => "aborting the transaction and redoing the batch",
            (ErrorClass::Fatal | ErrorClass::Unsupported, _) => {
                "stopping: no further transaction is attempted"
            }
        }
    }

    /// The failure that stops the worker, for a fatal or unsupported error.
    pub fn stop(self) -> TxnFailure {
        match self.class {
            ErrorClass::Unsupported => TxnFailure::Unsupported(self),
            _ => TxnFailure::Fatal(self),
        }
    }
}

/// Why exactly-once delivery stopped: nothing further is committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnFailure {
    /// The cluster cannot do transactions for this producer.
    #[error(
        "the Kafka broker does not support transactions for this producer ({0}). \
         --delivery exactly-once needs Kafka transactions: brokers that implement them (Apache \
         Kafka 0.11 or later) and, with ACLs, WRITE and DESCRIBE on the transactional.id. Run \
         with --delivery at-least-once against this broker"
    )]
    Unsupported(CallError),
    /// The producer is unusable (for example fenced by a newer producer with the same
    /// `transactional.id`).
    #[error(
        "fatal transaction error, the producer cannot go on ({0}); the next start \
         re-initialises the transactional.id and resumes from the last committed offsets"
    )]
    Fatal(CallError),
    /// Retriable or abortable errors outlasted the budget.
    #[error(
        "transaction not committed within {budget:?} (transaction.timeout.ms); last error: {last}"
    )]
    OutOfTime {
        /// The budget.
        budget: Duration,
        /// The last error.
        last: CallError,
    },
}

#[cfg(test)]
#[path = "txn_error_tests.rs"]
mod tests;
