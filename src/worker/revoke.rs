//! Revocation, on the intake loop's side. The rebalance callback only asks
//! ([`RebalanceEvent::Revoking`](crate::kafka::consumer::RebalanceEvent)) and waits; the loop drains: it
//! takes the revoked partitions' records out of the open window and processes them, waits until
//! every in-flight record of those partitions is done (bounded by `--drain-timeout`) and, in
//! at-least-once mode, commits their offsets, all before the callback lets librdkafka release
//! them. In exactly-once mode "done" includes the answer of the transaction holding the records
//! and their offsets: released earlier, the next owner would read from the offsets committed
//! before it and process its records again. Records not done by then are replayed by the
//! partitions' next owner.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::tasks::{window_task, Shared};
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
    if let Some(w) = window.take_partitions(|p| partitions.contains(&p)) {
        let (s, check) = (shared.clone(), shared.checks.start());
        tokio::spawn(async move { window_task(&s, w, check).await });
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
