//! Stopping the pipeline once the intake loop has ended: no more intake, finish what is in
//! flight (bounded), flush, commit, leave the group. Each step is one function, in that order.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::revoke;
use super::source::Records;
use super::start::Running;
use super::tasks::{Shared, Tasks};
use super::window::{CloseReason, Window};
use super::WorkerError;
use crate::delivery::sink::Sink;
use crate::delivery::Committable;
use crate::kafka::consumer::{RebalanceEvent, SourceConsumer};

/// Longest the final commit plus leaving the group may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the intake loop leaves behind.
pub(super) struct Stopping {
    /// The pipeline it ran.
    pub run: Running,
    /// The open window, flushed first.
    pub window: Window,
    /// Why the loop ended, when a failure ended it.
    pub failure: Option<WorkerError>,
}

impl Stopping {
    /// Drains (each wait bounded by `drain_timeout`), flushes, commits and leaves the group.
    /// Returns the failure that ended the loop, or one delivery reported meanwhile.
    pub async fn stop(self, drain_timeout: Duration) -> Result<(), WorkerError> {
        let Stopping {
            run,
            mut window,
            failure,
        } = self;
        let Running {
            consumer,
            sink,
            committable,
            mut tasks,
            committer,
            reader,
            records,
            rebalances,
            mut failures,
        } = run;
        let inputs = Inputs {
            rebalances,
            reader,
            records,
        };
        inputs
            .close(
                &consumer,
                &tasks.shared,
                &mut window,
                &committable,
                drain_timeout,
            )
            .await;
        finish_windows(&mut tasks, &mut window, drain_timeout).await;
        let failure = failure.or_else(|| failures.try_recv().ok().map(WorkerError::from));
        finish_delivery(tasks, committer, sink).await;
        leave_group(committable, consumer).await;
        tracing::info!("worker stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// The intake loop's inputs, to be closed.
struct Inputs {
    /// Rebalance events from the consumer's callbacks.
    rebalances: mpsc::UnboundedReceiver<RebalanceEvent>,
    /// The reader task, which polls the consumer.
    reader: JoinHandle<()>,
    /// Records from the reader.
    records: Records,
}

impl Inputs {
    /// No more intake: revocations go through at once from here on (the shutdown drains
    /// everything anyway), one that already asked is drained, and the reader stops polling.
    async fn close(
        mut self,
        consumer: &SourceConsumer,
        shared: &Arc<Shared>,
        window: &mut Window,
        committable: &Committable,
        drain_timeout: Duration,
    ) {
        consumer.context().set_drain(None);
        while let Ok(event) = self.rebalances.try_recv() {
            if let RebalanceEvent::Revoking { partitions, ack } = event {
                revoke::drain(
                    shared,
                    window,
                    committable,
                    consumer,
                    &partitions,
                    drain_timeout,
                )
                .await;
                let _ = ack.try_send(());
            }
        }
        // Dropping the events answers a revocation that asked after all: it goes through.
        drop(self.rebalances);
        self.reader.abort();
        let _ = self.reader.await;
        drop(self.records);
    }
}

/// Closes the open window and waits for the windows in flight, at most `drain_timeout`.
async fn finish_windows(tasks: &mut Tasks, window: &mut Window, drain_timeout: Duration) {
    tracing::info!("stopping: draining in-flight windows");
    if let Some(closed) = window.take(CloseReason::Flush) {
        tasks.window(closed);
    }
    tasks.drain(drain_timeout).await;
}

/// Lets delivery finish: the committer its last transaction, the producer its sends (10 s).
async fn finish_delivery(tasks: Tasks, committer: Option<JoinHandle<()>>, sink: Arc<Sink>) {
    // The last sender of the committer's channel goes with the tasks' shared parts (its
    // delivery): it then finishes its last transaction and ends.
    drop(tasks);
    if let Some(c) = committer {
        let _ = c.await;
    }
    if let Err(e) = sink.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
}

/// The final commit (at-least-once; in exactly-once mode the transactions committed the
/// offsets) and leaving the group, by closing the consumer.
///
/// Both block inside librdkafka, without a timeout of their own: with the group coordinator gone
/// they would never return, and closing can hang in the rebalance callback (librdkafka issue
/// 4041: `rd_kafka_rebalance_protocol` called after the close began). Bounded here; on timeout
/// the thread is left behind and the process goes on to exit (the offsets then come from the last
/// periodic commit, and the group notices the session expire). A thread of its own, not
/// `spawn_blocking`: the runtime waits for its blocking tasks when it shuts down, so a hung close
/// would hold the caller's runtime (a test's, an embedding program's) forever.
async fn leave_group(committable: Committable, consumer: Arc<SourceConsumer>) {
    let (closed_tx, closed) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("account-sync-close".into())
        .spawn(move || {
            committable.commit_final(&*consumer);
            // Closing the consumer leaves the group.
            drop(Arc::try_unwrap(consumer).ok());
            let _ = closed_tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the closing thread; leaving the group by the session timeout");
    } else if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
        tracing::warn!(timeout = ?CLOSE_TIMEOUT, "final commit / leaving the group did not finish in time; exiting anyway");
    }
}
