//! The window and decode tasks: what a closed window does once the intake loop has let it go
//! (wait for a window slot, resolve, deliver each user's records as soon as its outcome is
//! decided), and the dead letter of a record that did not decode.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::event::DecodeError;
use super::live::{LiveRecords, Revocations};
use super::order::{Turn, UserOrder};
use super::pipeline::Stages;
use super::window::{CheckInFlight, ChecksInFlight, ClosedWindow};
use crate::delivery::sink::DeadLetter;
use crate::delivery::Delivery;
use crate::domain::{failure_class, Outcome, OutcomeStatus, SkipReason, SourcePos, Stage};
use crate::observe::metrics::Metrics;

/// Everything the window and decode tasks share.
pub(super) struct Shared {
    /// The check and import stages.
    pub stages: Stages,
    /// Where their records go.
    pub delivery: Arc<Delivery>,
    /// Bounds the windows in flight.
    pub window_slots: Arc<Semaphore>,
    /// Windows closed whose account_check has not answered yet (the window close rule).
    pub checks: Arc<ChecksInFlight>,
    /// Metrics of this worker.
    pub metrics: Arc<Metrics>,
    /// The revocations in progress: what the windows let go.
    pub revocations: Revocations,
    /// The windows in flight per user: a user's events take effect in offset order.
    pub order: Arc<UserOrder>,
}

/// The tasks the intake loop started: joined at shutdown, within the drain timeout.
pub(super) struct Tasks {
    /// What they share.
    pub shared: Arc<Shared>,
    /// The tasks still running.
    pub set: JoinSet<()>,
}

impl Tasks {
    /// No task yet.
    pub fn new(shared: Arc<Shared>) -> Tasks {
        Tasks {
            shared,
            set: JoinSet::new(),
        }
    }

    /// Starts the task of a closed window, counted by why it closed.
    pub fn window(&mut self, window: ClosedWindow) {
        let m = &self.shared.metrics;
        let reason = window.closed_by.as_str();
        m.windows.with_label_values(&[reason]).inc();
        m.window_size.observe(window.ids.len() as f64);
        tracing::debug!(
            ids = window.ids.len(),
            records = window.records.len(),
            closed_by = reason,
            "window closed"
        );
        let (shared, check) = (self.shared.clone(), self.shared.checks.start());
        // Entered here, in the order windows close: the order of their records.
        let turn = shared.order.enter(&window);
        self.set
            .spawn(async move { window_task(&shared, window, check, turn).await });
    }

    /// Starts delivering the dead letter of the record at `pos`, which did not decode.
    pub fn dead_letter(
        &mut self,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        pos: SourcePos,
        err: DecodeError,
    ) {
        let shared = self.shared.clone();
        self.set.spawn(async move {
            let dl = DeadLetter {
                stage: Stage::Decode,
                code: 0,
                reason: err.to_string(),
                class: failure_class::INVALID_INPUT,
                attempts: 0,
            };
            shared.delivery.decode_failure(key, payload, pos, dl).await;
        });
    }

    /// Marks a record that asks nothing done, and counts it by `reason`.
    pub fn skip(&mut self, pos: SourcePos, reason: SkipReason) {
        let shared = self.shared.clone();
        self.set.spawn(async move {
            shared.delivery.skipped(pos, reason).await;
        });
    }

    /// Waits up to `timeout` for every task to end, then abandons the rest: their records stay
    /// undone, so their offsets stay uncommitted and are replayed.
    pub async fn drain(&mut self, timeout: Duration) {
        let drained = tokio::time::timeout(timeout, async {
            while self.set.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(left = self.set.len(), "drain timeout: abandoning in-flight windows (their offsets stay uncommitted and will be replayed)");
            self.set.abort_all();
            while self.set.join_next().await.is_some() {}
        }
    }
}

/// A window's whole life after it closed: wait for its turn (the earlier windows of its users,
/// see [`super::order`]), then for a window slot, resolve, deliver. `check` counts its check as
/// in flight until the check answered. A revocation lets the records of its partitions go
/// wherever the window waits (see [`super::live`]); a window left with none ends, and so does
/// its turn.
pub(super) async fn window_task(
    shared: &Shared,
    window: ClosedWindow,
    check: CheckInFlight,
    mut turn: Turn,
) {
    let records_of = window.records_by_id();
    let tracker = shared.delivery.committable().tracker_handle();
    let live = LiveRecords::new(&window, &records_of, shared.revocations.watch(), tracker);
    loop {
        tokio::select! {
            biased;
            () = live.revoked(None) => {
                live.let_go_revoked();
                if live.waiting_users().is_empty() {
                    return;
                }
            }
            () = turn.ready() => break,
        }
    }
    let _slot = loop {
        tokio::select! {
            biased;
            () = live.revoked(None) => {
                live.let_go_revoked();
                if live.waiting_users().is_empty() {
                    return;
                }
            }
            slot = shared.window_slots.acquire() => {
                break slot.expect("the window semaphore is never closed");
            }
        }
    };
    shared.metrics.windows_in_flight.inc();
    process_window(shared, &window, &live, check).await;
    shared.metrics.windows_in_flight.dec();
}

/// Resolves a window and delivers each user's records as soon as its outcome is decided (see
/// [`Stages::resolve`]); marks the delivered input records done.
async fn process_window(
    shared: &Shared,
    window: &ClosedWindow,
    live: &LiveRecords<'_>,
    check: CheckInFlight,
) {
    let decided = |outcomes: Vec<(usize, Outcome)>| async move {
        let mut records = Vec::with_capacity(outcomes.len());
        for (user, outcome) in &outcomes {
            records.extend(live.decide(&[*user]).into_iter().map(|r| (r, outcome)));
        }
        shared.delivery.outcomes(window, &records).await
    };
    let Some(outcomes) = shared.stages.resolve(window, check, live, decided).await else {
        tracing::info!(
            records = window.records.len(),
            "window abandoned at shutdown during a systemic fault; its undelivered records will be replayed"
        );
        return;
    };
    let count = |s: Option<OutcomeStatus>| {
        let ids = window.id_of_record.iter();
        ids.filter(|&&id| outcomes[id].as_ref().map(|o| o.status) == s)
            .count()
    };
    tracing::debug!(
        records = window.records.len(),
        imported = count(Some(OutcomeStatus::Imported)),
        already_imported = count(Some(OutcomeStatus::AlreadyImported)),
        updated = count(Some(OutcomeStatus::Updated)),
        deleted = count(Some(OutcomeStatus::Deleted)),
        already_absent = count(Some(OutcomeStatus::AlreadyAbsent)),
        failed = count(Some(OutcomeStatus::Failed)),
        let_go = count(None),
        "window resolved"
    );
}
