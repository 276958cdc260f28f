//! `account-sync backfill FILE`: a one-off migration of existing users from a file (JSON Lines,
//! CSV or one UserID a line), through the worker's own check and import stages, without Kafka.
//!
//! The file is read lazily on a thread of its own ([`input`]); its users are grouped into windows
//! of up to 100 distinct UserIDs ([`crate::worker::window`]) and each window is resolved by
//! [`crate::worker::pipeline::Stages::resolve`], as in the worker: `account_check`, then
//! `account_import` for the users not imported, under the limiters, with the retries, the
//! systemic gate, its prober and the outage behaviour. At most `--max-windows-in-flight` windows
//! are in flight; further lines are read only as windows finish, so memory does not grow with
//! the file.
//!
//! Lines finish out of order; the contiguous done watermark over line numbers
//! ([`crate::kafka::offsets::OffsetTracker`], one "partition") is what `--checkpoint` records
//! ([`checkpoint`]): every line up to it has its outcome written (and synced) or its reject
//! reported. A rerun of the same command skips those lines. After a kill, the lines above the
//! checkpoint that were finished already are done again: their outcome records appear twice in
//! `--outcomes` (at-least-once; the calls are idempotent, and a user imported by the first run
//! comes out `already_imported`). Lines at or below the checkpoint are never done again.
//! Ctrl-C / SIGTERM stops reading, lets the windows in flight finish (up to `--drain-timeout`),
//! and writes the checkpoint: then nothing is done twice.
//!
//! The run takes the rates it is given (`--check-rate`, `--import-rate`, defaults the vendor's
//! whole budget): beside a running worker, give each a part of the app's budget.

mod args;
pub mod checkpoint;
pub mod input;
mod report;
mod run;

pub use args::{BackfillArgs, Plan, Source};
pub use input::FileFormat;

use crate::shutdown::Shutdown;

/// Why a backfill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every line of the file is done.
    Complete,
    /// A signal came first: the checkpoint says where to continue.
    Interrupted,
}

/// What a backfill did (this run only: lines an earlier run did are not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Lines read and handled by this run (blank lines and the CSV header included).
    pub lines_read: u64,
    /// Lines skipped because the checkpoint says an earlier run did them.
    pub skipped_done: u64,
    /// Users resolved (one per line that held one).
    pub users: u64,
    /// Of which imported by this run.
    pub imported: u64,
    /// Of which already imported.
    pub already_imported: u64,
    /// Of which updated (profile written).
    pub updated: u64,
    /// Of which deleted.
    pub deleted: u64,
    /// Of which already absent (a delete of an account that did not exist).
    pub already_absent: u64,
    /// Of which, in a dry run, what would have been done (imported, updated or deleted).
    pub would: u64,
    /// Of which failed (in the outcomes, or listed on stderr).
    pub failed: u64,
    /// Bad lines reported in the rejects.
    pub rejected: u64,
    /// API attempts per API name (retries and probes included).
    pub calls: Vec<(&'static str, u64)>,
    /// Frequency-limit answers (all APIs).
    pub frequency_limited: u64,
    /// Every line up to this one is done (the checkpoint's value).
    pub done_through_line: u64,
    /// Why it ended.
    pub stop: Stop,
}

impl Summary {
    /// The process exit code: 1 when a user failed, 3 when interrupted before the end, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 {
            1
        } else if self.stop == Stop::Interrupted {
            3
        } else {
            0
        }
    }
}

/// A backfill that could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// A setting is wrong, or FILE cannot be read (exit code 2); the message names it.
    #[error("{0}")]
    Config(String),
    /// Reading FILE or writing an output failed during the run (exit code 1). The checkpoint
    /// was not moved past what was written before.
    #[error("{what} {path}: {error}")]
    Io {
        /// The setting naming the file (`FILE`, `--outcomes`, `--rejects`, `--checkpoint`).
        what: &'static str,
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

impl BackfillError {
    /// The process exit code: 2 for bad settings and an unreadable FILE, 1 for a failure
    /// during the run.
    pub fn exit_code(&self) -> u8 {
        match self {
            BackfillError::Config(_) => 2,
            BackfillError::Io { .. } => 1,
        }
    }
}

/// Runs the backfill `args` describe; see the [module documentation](self). Progress and the
/// summary go to stderr. Stops at the end of the file, or when `shutdown` fires (after the
/// windows in flight).
pub async fn run(args: BackfillArgs, shutdown: Shutdown) -> Result<Summary, BackfillError> {
    let plan = args.plan().map_err(BackfillError::Config)?;
    run::Backfill::start(plan, shutdown).await?.run().await
}
