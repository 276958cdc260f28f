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
    let epochs: Vec<(i32, u64)> = {
        let t = committable.tracker();
        partitions
            .iter()
            .filter_map(|&p| t.epoch(p).map(|e| (p, e)))
            .collect()
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
    while committable.pending_in(partitions) > 0 && started.elapsed() < drain_timeout {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let left = committable.pending_in(partitions);
    committable.commit_revoked(consumer, partitions);
    if left > 0 {
        tracing::warn!(partitions = ?partitions, left, "revocation drain timed out; those records will be replayed by the next owner");
    } else {
        tracing::info!(partitions = ?partitions, took = ?started.elapsed(), "revoked partitions drained");
    }
}
