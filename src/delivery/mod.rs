//! Delivery: records out → offsets committable → committed, for both delivery modes.
//!
//! The window and decode tasks hand each input record's output records (its outcome, and its
//! dead letter if it failed) to [`Delivery`]; how they reach the broker and how the input offsets
//! then get committed is decided here and nowhere else:
//!
//! - at-least-once: produce, wait for the broker's acknowledgements, mark the input records done
//!   and store the positions that moved ([`Committable::complete`]); librdkafka's auto-commit
//!   commits them, and [`Committable::commit_revoked`] / [`Committable::commit_final`] commit them
//!   on revocation and at shutdown;
//! - exactly-once: hand them to the [`transaction::Committer`], which produces them and commits
//!   the offsets in the same transaction.
//!
//! Parts: [`sink`] (the record formats and the producer), [`commit`] (storing and committing the
//! done watermarks of [`crate::kafka::offsets`]), [`outcomes`] (outcomes → records, and their
//! counters), [`transaction`] (exactly-once).

pub mod commit;
mod outcomes;
pub mod sink;
pub mod transaction;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

pub use commit::Committable;

use crate::delivery::sink::{OutRecord, Sink, SinkError};
use crate::domain::SourcePos;
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::offsets::OffsetTracker;
use crate::kafka::txn_error::TxnFailure;
use crate::observe::metrics::Metrics;
use transaction::{Committer, TxnItem, TxnTiming};

/// Why delivery cannot go on: the worker stops without committing past it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// A record could not be delivered even after librdkafka's retries (or the transaction
    /// committer ended before answering).
    #[error("{0}")]
    Undelivered(String),
    /// Exactly-once: transactions cannot go on.
    #[error(transparent)]
    Transaction(#[from] TxnFailure),
}

/// What delivery is built from.
pub struct Parts {
    /// The producer (transactional in exactly-once mode).
    pub sink: Arc<Sink>,
    /// The consumer: offsets are stored through it, and its group metadata goes into transactions.
    pub consumer: Arc<SourceConsumer>,
    /// Done watermarks, shared with the source.
    pub tracker: Arc<Mutex<OffsetTracker>>,
    /// Input topic.
    pub topic: String,
    /// Metrics of this worker.
    pub metrics: Arc<Metrics>,
}

/// Exactly-once settings.
pub struct Transactions {
    /// `--transaction-linger`.
    pub linger: Duration,
    /// Budget and call timeout of the transactional calls.
    pub timing: TxnTiming,
    /// Items the committer's channel holds.
    pub queue: usize,
}

/// A started delivery.
pub struct Started {
    /// For the window and decode tasks.
    pub delivery: Arc<Delivery>,
    /// The watermarks, for the commits on revocation and at shutdown.
    pub committable: Committable,
    /// Failures that stop the worker.
    pub failures: mpsc::UnboundedReceiver<DeliveryError>,
    /// Exactly-once: the committer task. It finishes its last transaction and ends once the
    /// [`Delivery`] (every clone of it) is dropped.
    pub committer: Option<JoinHandle<()>>,
}

/// How records reach the broker.
enum Mode {
    /// Produce, wait for the acknowledgements, store the offsets (auto-committed).
    AtLeastOnce,
    /// Hand them to the transaction committer.
    ExactlyOnce(mpsc::Sender<TxnItem>),
}

/// Delivers output records and makes their input offsets committable.
pub struct Delivery {
    mode: Mode,
    sink: Arc<Sink>,
    consumer: Arc<SourceConsumer>,
    committable: Committable,
    /// Woken whenever records complete (the intake loop may resume).
    progress: Notify,
    metrics: Arc<Metrics>,
    /// Failures that stop the worker.
    failures: mpsc::UnboundedSender<DeliveryError>,
}

impl Delivery {
    /// Starts delivery; with `transactions`, exactly-once: initialises the transactions (fencing
    /// an older incarnation of this replica and aborting its open transaction) and starts the
    /// committer.
    pub async fn start(
        parts: Parts,
        transactions: Option<Transactions>,
    ) -> Result<Started, TxnFailure> {
        let exactly_once = transactions.is_some();
        let committable = Committable::new(&parts.topic, parts.tracker.clone(), exactly_once);
        let (mode, committer) = match transactions {
            None => (Mode::AtLeastOnce, None),
            Some(t) => {
                let committer = Committer {
                    sink: parts.sink.clone(),
                    consumer: parts.consumer.clone(),
                    tracker: parts.tracker.clone(),
                    topic: parts.topic.clone(),
                    linger: t.linger,
                    timing: t.timing,
                    metrics: parts.metrics.clone(),
                };
                committer.init().await?;
                let (tx, rx) = mpsc::channel(t.queue);
                (Mode::ExactlyOnce(tx), Some(tokio::spawn(committer.run(rx))))
            }
        };
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let delivery = Arc::new(Delivery {
            mode,
            sink: parts.sink,
            consumer: parts.consumer,
            committable: committable.clone(),
            progress: Notify::new(),
            metrics: parts.metrics,
            failures: failures_tx,
        });
        Ok(Started {
            delivery,
            committable,
            failures,
            committer,
        })
    }

    /// The watermarks this delivery moves.
    pub fn committable(&self) -> &Committable {
        &self.committable
    }

    /// Resolves once records complete after it was created (or a completion is pending).
    pub fn progressed(&self) -> Notified<'_> {
        self.progress.notified()
    }

    /// Delivers each input record's group of output records and marks the input records whose
    /// records were all delivered done. Returns, per group, whether it was delivered. A final
    /// delivery failure is reported on the failures channel: the worker stops without committing
    /// past it.
    pub async fn deliver(&self, groups: Vec<(SourcePos, Vec<OutRecord>)>) -> Vec<bool> {
        match &self.mode {
            Mode::AtLeastOnce => self.produce_and_store(groups).await,
            Mode::ExactlyOnce(committer) => self.commit_in_transaction(committer, groups).await,
        }
    }

    /// At-least-once: produce, wait for the acknowledgements, store the offsets.
    async fn produce_and_store(&self, groups: Vec<(SourcePos, Vec<OutRecord>)>) -> Vec<bool> {
        let sends = groups.iter().map(|(_, records)| async move {
            for r in records {
                self.sink.send(r).await?;
            }
            Ok::<(), SinkError>(())
        });
        let results = join_all(sends).await;
        let mut done = Vec::with_capacity(groups.len());
        let mut ok = Vec::with_capacity(groups.len());
        for ((pos, _), r) in groups.iter().zip(results) {
            match r {
                Ok(()) => {
                    done.push(*pos);
                    ok.push(true);
                }
                Err(e) => {
                    tracing::error!(partition = pos.partition, offset = pos.offset, error = %e, "record delivery failed");
                    let _ = self
                        .failures
                        .send(DeliveryError::Undelivered(e.to_string()));
                    ok.push(false);
                }
            }
        }
        let in_flight = &self.metrics.events_in_flight;
        self.committable.complete(&*self.consumer, &done, in_flight);
        self.progress.notify_one();
        ok
    }

    /// Exactly-once: hand the records to the committer and wait for its transaction.
    async fn commit_in_transaction(
        &self,
        committer: &mpsc::Sender<TxnItem>,
        groups: Vec<(SourcePos, Vec<OutRecord>)>,
    ) -> Vec<bool> {
        let n = groups.len();
        let (positions, records): (Vec<SourcePos>, Vec<Vec<OutRecord>>) =
            groups.into_iter().unzip();
        let (done_tx, done_rx) = oneshot::channel();
        let item = TxnItem {
            records: records.into_iter().flatten().collect(),
            positions,
            done: done_tx,
        };
        let result = match committer.send(item).await {
            Ok(()) => done_rx
                .await
                .map_err(|_| committer_stopped())
                .and_then(|r| r.map_err(DeliveryError::from)),
            Err(_) => Err(committer_stopped()),
        };
        let committed = match result {
            Ok(()) => true,
            Err(e) => {
                let _ = self.failures.send(e);
                false
            }
        };
        // The committer marked the records done in the tracker when it committed them.
        let in_flight = &self.metrics.events_in_flight;
        self.committable.count_pending(in_flight);
        self.progress.notify_one();
        vec![committed; n]
    }
}

/// The committer ended before answering (it only does when the worker is stopping anyway).
fn committer_stopped() -> DeliveryError {
    DeliveryError::Undelivered("transaction committer stopped".into())
}
