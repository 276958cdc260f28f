//! The worker's vocabulary, used by every stage: where an input record came from
//! ([`SourcePos`]), a decoded record waiting for its outcome ([`InputRecord`]), what happened to
//! it ([`Outcome`], [`OutcomeStatus`]), where it failed ([`Stage`]) and why ([`failure_class`]),
//! or why it asked nothing of the worker ([`SkipReason`]); what an event asks ([`AccountEvent`],
//! [`EventKind`]).
//! How outcomes are written to Kafka is [`crate::delivery::sink`]'s business.

use serde::Serialize;

/// One event of an account's life: what to make true of the account. Made by the decoder
/// (`worker/event.rs`, which also checks fields read from elsewhere: `AccountEvent::from_fields`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEvent {
    /// 1-32 bytes of `[A-Za-z0-9_-]`.
    pub user_id: String,
    /// Optional nickname, at most 500 bytes.
    pub nick: Option<String>,
    /// Optional avatar URL, at most 500 bytes.
    pub face_url: Option<String>,
    /// Create, update or delete.
    pub kind: EventKind,
}

/// What an event asks of its user's account (ARCHITECTURE, "Event kinds and order per user").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventKind {
    /// A signup: the account exists; an existing account's profile is left alone.
    #[default]
    Create,
    /// A profile change: the account exists with this Nick / FaceUrl (created if missing).
    Update,
    /// The user is gone: the account does not exist (only with `--apply-deletes`).
    Delete,
}

impl EventKind {
    /// Every kind, for the metrics' zero series.
    pub const ALL: [EventKind; 3] = [EventKind::Create, EventKind::Update, EventKind::Delete];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        }
    }
}

/// Where an input record came from: enough to dead-letter it, report it, and mark its offset done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourcePos {
    /// Input partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Assignment epoch of the partition when the record was read; completions from an older
    /// epoch (the partition was revoked meanwhile) are ignored by the offset tracker.
    pub epoch: u64,
}

/// A decoded input record waiting for its outcome.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Source position.
    pub pos: SourcePos,
    /// The decoded event.
    pub event: AccountEvent,
    /// Original key bytes, dead-lettered unchanged.
    pub key: Option<Vec<u8>>,
    /// Original payload bytes, dead-lettered unchanged.
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp of the record (ms since epoch), for end-to-end latency.
    pub timestamp_ms: Option<i64>,
}

/// `status` of an outcome record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The account was created (account_import, or multiaccount_import for a create).
    Imported,
    /// account_check said Imported: a create had nothing to do.
    AlreadyImported,
    /// An update's profile was written (the account created if it was missing).
    Updated,
    /// account_delete removed the account.
    Deleted,
    /// A delete found no account (ResultCode 70107, or `account_check` in a dry run).
    AlreadyAbsent,
    /// Dry run: a create would have imported the account.
    WouldImport,
    /// Dry run: an update would have written the profile.
    WouldUpdate,
    /// Dry run: a delete would have removed the account.
    WouldDelete,
    /// Failed permanently (also dead-lettered).
    Failed,
}

impl OutcomeStatus {
    /// Every status, for the metrics' zero series.
    pub const ALL: [OutcomeStatus; 9] = [
        OutcomeStatus::Imported,
        OutcomeStatus::AlreadyImported,
        OutcomeStatus::Updated,
        OutcomeStatus::Deleted,
        OutcomeStatus::AlreadyAbsent,
        OutcomeStatus::WouldImport,
        OutcomeStatus::WouldUpdate,
        OutcomeStatus::WouldDelete,
        OutcomeStatus::Failed,
    ];

    /// The JSON / metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Imported => "imported",
            OutcomeStatus::AlreadyImported => "already_imported",
            OutcomeStatus::Updated => "updated",
            OutcomeStatus::Deleted => "deleted",
            OutcomeStatus::AlreadyAbsent => "already_absent",
            OutcomeStatus::WouldImport => "would_import",
            OutcomeStatus::WouldUpdate => "would_update",
            OutcomeStatus::WouldDelete => "would_delete",
            OutcomeStatus::Failed => "failed",
        }
    }
}

/// The stage at which a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Decode,
    Check,
    Import,
    Delete,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 4] = [Stage::Decode, Stage::Check, Stage::Import, Stage::Delete];

    /// Header / metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Check => "check",
            Stage::Import => "import",
            Stage::Delete => "delete",
        }
    }
}

/// Why a record asks nothing of the worker and is only marked done. Counted by reason, never
/// dead-lettered: the record is well-formed, it just changes nothing the worker keeps in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A row changed, but none of the fields the worker writes (Nick, FaceUrl): `op` `u` whose
    /// `before` and `after` rows agree on them.
    Unchanged,
    /// A delete, while deletes are not applied (`--apply-deletes` is off).
    Delete,
    /// A table truncated (`op` `t`).
    Truncate,
    /// A logical decoding message (`op` `m`).
    Message,
    /// The tombstone (no payload) that follows a delete, for log compaction.
    Tombstone,
    /// An event type in none of the lists, when `--create-types` is given.
    OtherType,
}

impl SkipReason {
    /// Every reason, for the metric's zero series.
    pub const ALL: [SkipReason; 6] = [
        SkipReason::Unchanged,
        SkipReason::Delete,
        SkipReason::Truncate,
        SkipReason::Message,
        SkipReason::Tombstone,
        SkipReason::OtherType,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unchanged => "unchanged",
            SkipReason::Delete => "delete",
            SkipReason::Truncate => "truncate",
            SkipReason::Message => "message",
            SkipReason::Tombstone => "tombstone",
            SkipReason::OtherType => "other_type",
        }
    }
}

/// What happened to one decoded input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Final status.
    pub status: OutcomeStatus,
    /// Vendor ErrorCode / ResultCode; 0 on success or when there is none.
    pub error_code: i64,
    /// Why it failed; empty on success.
    pub error_info: String,
    /// API attempts of the call that decided the status.
    pub attempts: u32,
    /// Stage that failed, for the dead-letter record (None on success).
    pub failed_stage: Option<Stage>,
    /// Why it failed, as a bounded metric label (see [`failure_class`]); "" on success.
    pub failure_class: &'static str,
}

impl Outcome {
    /// A record that ended well (`Imported` or `AlreadyImported`): no error, no failure class.
    pub fn success(status: OutcomeStatus, attempts: u32) -> Outcome {
        Outcome {
            status,
            error_code: 0,
            error_info: String::new(),
            attempts,
            failed_stage: None,
            failure_class: "",
        }
    }
}

/// Dead-letter reason classes (the `class` label of the dead-letter counter).
pub mod failure_class {
    /// The record did not decode.
    pub const INVALID_INPUT: &str = "invalid_input";
    /// The vendor rejected this account (70402, 40005, 40601, 70399, a per-item ResultCode).
    pub const REJECTED: &str = "rejected";
    /// Transient errors or frequency limits outlasted the retry budget (or an unknown code its
    /// smaller budget).
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// The vendor called our request malformed, or we refused to send it: a bug in account-sync.
    pub const BUG: &str = "bug";
    /// Every class, for label and flag values.
    pub const ALL: [&str; 4] = [INVALID_INPUT, REJECTED, RETRIES_EXHAUSTED, BUG];
}
