//! `account-sync dlq replay`: dead letters back to the input topic, once their cause is fixed.
//!
//! A replay reads the dead-letter topic with a consumer group of its own, from that group's
//! committed offsets up to the high watermarks fetched when it starts (dead letters written during
//! the run are left for the next one), and produces each dead letter that passes the filters to
//! the input topic: the original key and payload bytes, unchanged, and one header,
//! [`REPLAYED_FROM`], saying which dead letter it was. The dead-letter headers are not copied: the
//! replayed record is an input record like any other, and if it fails again the worker writes a
//! new dead letter with fresh headers.
//!
//! Offsets are committed (synchronously) only up to records whose replay the broker acknowledged
//! (acks=all, idempotent producer), every second and at the end, so:
//! - a clean stop (SIGINT / SIGTERM) waits for the sends in flight, commits and exits: the next run
//!   replays nothing twice;
//! - a kill loses nothing, but the records acknowledged since the last commit (at most about one
//!   second of replay, plus the sends in flight) are replayed again by the next run: at-least-once,
//!   which the worker absorbs (account_check finds the account imported);
//! - records the filters skip are passed over for good *by this group*: a later replay with other
//!   filters needs another `--group`.

mod args;
pub mod filter;
mod replay;
mod report;

pub use args::{Plan, ReplayArgs};
pub use replay::replay;

/// Header of a replayed record: the dead letter it came from, `topic/partition/offset`.
pub const REPLAYED_FROM: &str = "account-sync.replayed-from";

/// Why a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every partition read up to its end as of the start.
    EndOfTopic,
    /// `--limit` matching dead letters handled.
    Limit,
    /// Shutdown signal: in-flight sends finished and committed.
    Interrupted,
    /// A replay or commit failed (the error says which).
    Failed,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Dead letters read.
    pub read: u64,
    /// Read and passing the filters (in a dry run: what would be replayed).
    pub matched: u64,
    /// Replayed and acknowledged by the broker.
    pub replayed: u64,
    /// Read and not passing the filters.
    pub skipped: u64,
    /// Offsets committed by this run, per partition of the dead-letter topic.
    pub committed: Vec<(i32, i64)>,
    /// Why it ended.
    pub stop: Stop,
}

/// A replay that could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A setting is wrong (exit code 2); the message names it.
    #[error("{0}")]
    Config(String),
    /// Creating a Kafka client, or reading topic metadata or offsets, failed.
    #[error("{what}: {error}")]
    Kafka {
        /// What was being done.
        what: &'static str,
        /// librdkafka's error.
        error: rdkafka::error::KafkaError,
    },
    /// A replayed record could not be delivered, after librdkafka's own retries. Nothing from
    /// it on is committed, so the next run starts with it.
    #[error(
        "replaying dead letter {position} failed: {error}; offsets are committed only up to it"
    )]
    Produce {
        /// The dead letter, `topic/partition/offset`.
        position: String,
        /// librdkafka's error.
        error: rdkafka::error::KafkaError,
    },
    /// The final commit failed: the records replayed since the last commit are replayed again by
    /// the next run.
    #[error("committing the replay's offsets failed: {0}; the next run replays the records since the last commit again")]
    Commit(rdkafka::error::KafkaError),
}

impl ReplayError {
    /// The process exit code: 2 for bad settings, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// `topic/partition/offset`, as in [`REPLAYED_FROM`].
pub fn position(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}
