//! Committable → committed: the done watermarks of the input topic, stored as records complete
//! (at-least-once; librdkafka's auto-commit then commits them), committed on revocation and at
//! shutdown. In exactly-once mode the offsets go into transactions instead
//! ([`super::transaction::Committer`]), and these commits do nothing.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;
use rdkafka::consumer::{CommitMode, Consumer};

use crate::domain::SourcePos;
use crate::kafka::consumer::SourceContext;
use crate::kafka::offsets::{offset_list, OffsetTracker};

/// The input topic's done watermarks and how they are committed. Cheap to clone.
#[derive(Clone)]
pub struct Committable {
    /// Input topic.
    topic: Arc<str>,
    /// Done-watermark tracking, shared with the source (which assigns and revokes partitions).
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Exactly-once mode: the transactions commit the offsets, never the consumer.
    exactly_once: bool,
}

impl Committable {
    /// The watermarks of `tracker`'s partitions of `topic`.
    pub fn new(topic: &str, tracker: Arc<Mutex<OffsetTracker>>, exactly_once: bool) -> Self {
        Committable {
            topic: topic.into(),
            tracker,
            exactly_once,
        }
    }

    /// The input topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The tracker, locked (briefly: never across an await).
    pub fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracker itself, shared (a window's records let go through it).
    pub fn tracker_handle(&self) -> Arc<Mutex<OffsetTracker>> {
        self.tracker.clone()
    }

    /// Input records read and not yet done.
    pub fn pending(&self) -> usize {
        self.tracker().pending()
    }

    /// Input records of `partitions` read and not yet done.
    pub fn pending_in(&self, partitions: &[i32]) -> usize {
        let t = self.tracker();
        partitions.iter().map(|&p| t.pending_in(p)).sum()
    }

    /// Sets `in_flight` to the records pending, under the tracker's lock: concurrent completions
    /// then set it in the order they happened, and the last value is the true one.
    pub fn count_pending(&self, in_flight: &IntGauge) {
        in_flight.set(self.tracker().pending() as i64);
    }

    /// At-least-once: marks records done, stores the positions that moved and sets `in_flight`
    /// (as [`Self::count_pending`]). The tracker lock is held while storing, so a concurrent
    /// revocation cannot slip in between (no offset of a partition that is not ours is ever
    /// stored).
    pub fn complete(
        &self,
        consumer: &impl Consumer<SourceContext>,
        done: &[SourcePos],
        in_flight: &IntGauge,
    ) {
        let mut t = self.tracker();
        let mut moved: Vec<(i32, i64)> = Vec::new();
        for pos in done {
            if let Some(w) = t.done(pos.partition, pos.epoch, pos.offset) {
                match moved.iter_mut().find(|(p, _)| *p == pos.partition) {
                    Some(entry) => entry.1 = entry.1.max(w),
                    None => moved.push((pos.partition, w)),
                }
            }
        }
        if !moved.is_empty() {
            let stored =
                offset_list(&self.topic, &moved).and_then(|tpl| consumer.store_offsets(&tpl));
            if let Err(e) = stored {
                tracing::debug!(error = %e, "storing offsets failed (partition revoked meanwhile?)");
            }
        }
        in_flight.set(t.pending() as i64);
    }

    /// On revocation, before the partitions are released (at-least-once): commits the done
    /// watermarks of `partitions`, asynchronously — a synchronous commit has no timeout and would
    /// hold the rebalance forever if the coordinator vanished. librdkafka sends it before the
    /// partitions are released, and auto-commit commits them on unassign too.
    pub fn commit_revoked(&self, consumer: &impl Consumer<SourceContext>, partitions: &[i32]) {
        if self.exactly_once {
            return;
        }
        let positions: Vec<(i32, i64)> = self
            .tracker()
            .watermarks()
            .into_iter()
            .filter(|(p, _)| partitions.contains(p))
            .collect();
        if positions.is_empty() {
            return;
        }
        let committed = offset_list(&self.topic, &positions)
            .and_then(|tpl| consumer.commit(&tpl, CommitMode::Async));
        if let Err(e) = committed {
            tracing::warn!(error = %e, "offset commit on revocation failed");
        }
    }

    /// At shutdown (at-least-once): commits the done watermarks of every assigned partition,
    /// synchronously. Blocks inside librdkafka without a timeout of its own: the caller bounds it.
    pub fn commit_final(&self, consumer: &impl Consumer<SourceContext>) {
        if self.exactly_once {
            return;
        }
        let positions = self.tracker().watermarks();
        if positions.is_empty() {
            return;
        }
        let committed = offset_list(&self.topic, &positions)
            .and_then(|tpl| consumer.commit(&tpl, CommitMode::Sync));
        match committed {
            Ok(()) => tracing::info!(?positions, "final offsets committed"),
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
        }
    }
}
