//! Revocation, on the intake loop's side. The rebalance callback only asks
//! ([`RebalanceEvent::Revoking`](crate::kafka::consumer::RebalanceEvent)) and waits; the loop drains,
//! at the cost of at most one API round trip: the revoked partitions' records in the open window
//! are let go at once, untouched; the window tasks let go those of their records that no API
//! call is answering yet (see [`super::live`]); the loop waits (bounded by `--drain-timeout`)
//! until the rest — records whose call was already sent — are done, and in at-least-once mode
//! commits the contiguous done offsets, all before the callback lets librdkafka release the
//! partitions. Records let go get no outcome and no commit: the partitions' next owner processes
//! them from the committed offset. In exactly-once mode "done" includes the answer of the
//! transaction holding the records and their offsets: released earlier, the next owner would read
//! from the offsets committed before it and process its records again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::tasks::Shared;
use super::window::Window;
use crate::delivery::Committable;
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::offsets::OffsetTracker;

/// How often the drain looks at what is left. Polled rather than woken by completions: in
/// exactly-once mode a record is marked done when the committer takes it and held until its
/// transaction answers, which wakes nothing here.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Drains the revoked `partitions` (see the module docs).
pub(super) async fn drain(
    shared: &Arc<Shared>,
    window: &mut Window,
    committable: &Committable,
    consumer: &SourceConsumer,
    partitions: &[i32],
    drain_timeout: Duration,
) {
    let started = Instant::now();
    let (epochs, before) = {
        let t = committable.tracker();
        let epochs: Vec<(i32, u64)> = partitions
            .iter()
            .filter_map(|&p| t.epoch(p).map(|e| (p, e)))
            .collect();
        (epochs, Fates::of(&t, partitions))
    };
    shared.revocations.begin(&epochs);
    if let Some(w) = window.take_partitions(|p| partitions.contains(&p)) {
        let mut t = committable.tracker();
        for r in &w.records {
            t.let_go(r.pos.partition, r.pos.epoch, r.pos.offset);
        }
        tracing::debug!(
            records = w.records.len(),
            "the open window's records of revoked partitions let go"
        );
    }
    let in_flight = &shared.metrics.events_in_flight;
    while committable.pending_in(partitions) > 0 && started.elapsed() < drain_timeout {
        // Records let go are no longer in flight.
        committable.count_pending(in_flight);
        tokio::time::sleep(DRAIN_POLL).await;
    }
    committable.count_pending(in_flight);
    let after = Fates::of(&committable.tracker(), partitions);
    committable.commit_revoked(consumer, partitions);
    let took = started.elapsed();
    let (let_go, left) = (after.let_go - before.let_go, after.pending);
    // Pending at the start, neither let go nor left: their calls were under way, and they are done.
    let awaited = before.pending.saturating_sub(let_go + left);
    let m = &shared.metrics;
    m.revocation_drain.observe(took.as_secs_f64());
    for (fate, n) in [("let_go", let_go), ("awaited", awaited), ("left", left)] {
        m.revoked_records
            .with_label_values(&[fate])
            .inc_by(n as u64);
    }
    if left > 0 {
        tracing::warn!(partitions = ?partitions, let_go, awaited, left, ?took, "revocation drain timed out; the records left will be replayed by the next owner");
    } else {
        tracing::info!(partitions = ?partitions, let_go, awaited, ?took, "revoked partitions drained");
    }
}

/// What the tracker holds of the partitions being revoked.
struct Fates {
    /// Records read and not done (in exactly-once mode also done, in an open transaction).
    pending: usize,
    /// Records let go.
    let_go: usize,
}

impl Fates {
    fn of(t: &OffsetTracker, partitions: &[i32]) -> Fates {
        Fates {
            pending: partitions.iter().map(|&p| t.pending_in(p)).sum(),
            let_go: partitions.iter().map(|&p| t.let_go_in(p)).sum(),
        }
    }
}
