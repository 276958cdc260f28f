//! Exactly-once outcomes: outcome and dead-letter records and the input offsets, committed in one
//! Kafka transaction.
//!
//! Window tasks hand their finished records to the [`Committer`] instead of producing them. The
//! committer gathers whatever arrives within the transaction linger, then: begin → produce every
//! record → mark the batch's input records done → send the partitions' done watermarks with the
//! consumer's group metadata (`send_offsets_to_transaction`) → commit. A `read_committed` reader
//! sees the records exactly when the offsets that produced them are committed, so across crashes
//! it sees exactly one outcome per input record.
//!
//! An abortable error aborts the transaction and retries the same batch (the records are owned and
//! can be produced again); a fatal error (for example this producer was fenced by a newer
//! incarnation with the same `transactional.id`) or a batch that keeps failing is reported to the
//! worker, which stops without committing: the next start resumes from the last committed
//! offsets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;
use crate::sink::{OutRecord, Sink};
use crate::source::SourceConsumer;
use crate::window::SourcePos;

/// Attempts per batch before the committer gives up and the worker stops.
const MAX_ATTEMPTS: u32 = 5;

/// One window's (or one dead-lettered record's) contribution to a transaction.
pub struct TxnItem {
    /// Records to produce.
    pub records: Vec<OutRecord>,
    /// Input records they complete.
    pub positions: Vec<SourcePos>,
    /// Told the result once the transaction committed (or failed for good).
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Drives the transactions of one worker.
pub struct Committer {
    /// The transactional producer (inside the sink).
    pub sink: Arc<Sink>,
    /// For the group metadata that fences offset commits of a stale generation.
    pub consumer: Arc<SourceConsumer>,
    /// Done watermarks.
    pub tracker: Arc<Mutex<OffsetTracker>>,
    /// Input topic.
    pub topic: String,
    /// How long a transaction gathers items after its first one.
    pub linger: Duration,
    /// Timeout of each blocking transaction call.
    pub timeout: Duration,
    /// Committed-offset gauges (the consumer's commit callback does not see transactional
    /// commits).
    pub metrics: Arc<Metrics>,
}

/// Why a transaction attempt failed.
enum TxnFailure {
    /// Abort and try the batch again.
    Abortable(String),
    /// The producer is unusable; stop.
    Fatal(String),
}

fn classify(stage: &str, e: KafkaError) -> TxnFailure {
    let text = format!("{stage}: {e}");
    match &e {
        KafkaError::Transaction(rd) if rd.is_fatal() => TxnFailure::Fatal(text),
        _ => TxnFailure::Abortable(text),
    }
}

impl Committer {
    /// Runs until the channel closes (all senders dropped).
    pub async fn run(self, mut rx: mpsc::Receiver<TxnItem>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = Instant::now() + self.linger;
            loop {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(i) => batch.push(i),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let result = self.commit(&batch).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "transaction failed for good");
            }
            for item in batch {
                let _ = item.done.send(result.clone());
            }
        }
    }

    /// Commits a batch, retrying abortable failures.
    async fn commit(&self, batch: &[TxnItem]) -> Result<(), String> {
        {
            // Marking done before the commit is safe: if the commit never succeeds the worker
            // stops without committing anything further, and the tracker dies with it.
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            for pos in batch.iter().flat_map(|i| &i.positions) {
                t.done(pos.partition, pos.epoch, pos.offset);
            }
        }
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(batch).await {
                Ok(()) => return Ok(()),
                Err(TxnFailure::Fatal(e)) => return Err(e),
                Err(TxnFailure::Abortable(e)) => {
                    tracing::warn!(attempt, error = %e, "transaction failed; aborting and retrying the batch");
                    let producer = self.sink.producer().clone();
                    let timeout = self.timeout;
                    let aborted =
                        blocking(move || producer.abort_transaction(Timeout::After(timeout))).await;
                    if let Err(err) = aborted {
                        if let TxnFailure::Fatal(f) = classify("abort", err) {
                            return Err(f);
                        }
                    }
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        Err(format!("transaction failed {MAX_ATTEMPTS} times: {last}"))
    }

    async fn attempt(&self, batch: &[TxnItem]) -> Result<(), TxnFailure> {
        let producer = self.sink.producer().clone();
        blocking(move || producer.begin_transaction())
            .await
            .map_err(|e| classify("begin", e))?;
        let sends = batch
            .iter()
            .flat_map(|i| &i.records)
            .map(|r| self.sink.send(r));
        for r in join_all(sends).await {
            r.map_err(|e| TxnFailure::Abortable(e.to_string()))?;
        }
        let positions = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watermarks();
        if !positions.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &positions {
                tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))
                    .map_err(|e| classify("offsets", e))?;
            }
            let cgm = self.consumer.group_metadata().ok_or_else(|| {
                TxnFailure::Abortable("consumer has no group metadata yet".into())
            })?;
            let (producer, timeout) = (self.sink.producer().clone(), self.timeout);
            blocking(move || {
                producer.send_offsets_to_transaction(&tpl, &cgm, Timeout::After(timeout))
            })
            .await
            .map_err(|e| classify("send offsets", e))?;
        }
        let (producer, timeout) = (self.sink.producer().clone(), self.timeout);
        blocking(move || producer.commit_transaction(Timeout::After(timeout)))
            .await
            .map_err(|e| classify("commit", e))?;
        for (p, o) in positions {
            self.metrics
                .committed_offset
                .with_label_values(&[&p.to_string()])
                .set(o);
        }
        Ok(())
    }
}

/// Runs a blocking librdkafka transaction call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("transaction call does not panic")
}
