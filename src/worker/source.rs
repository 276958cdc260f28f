//! The Kafka source: a consumer in a consumer group (cooperative-sticky), offsets stored by hand.
//!
//! Rebalance callbacks run inside librdkafka's poll, i.e. inside `recv()`, which only the reader
//! task ([`read_records`]) calls. They do the minimum there (Quickwit style): on revocation they
//! send [`RebalanceEvent::Revoking`] to the intake loop and wait for its ack — the loop drains the
//! revoked partitions and commits their offsets meanwhile, bounded by `--drain-timeout` — then
//! update the [`OffsetTracker`] so no offset of a revoked partition is ever stored, and send a
//! [`RebalanceEvent`] saying what changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use crate::delivery::offsets::OffsetTracker;
use crate::observe::metrics::Metrics;

/// A change of this worker's partitions of the input topic.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// Newly assigned partitions (incremental).
    Assigned(Vec<i32>),
    /// About to be revoked (or lost): the rebalance callback waits, before librdkafka releases
    /// them, until the intake loop has drained them and answers on `ack` (or drops it).
    Revoking {
        /// The partitions.
        partitions: Vec<i32>,
        /// Answered (or dropped) once they are drained and their offsets committed.
        ack: std::sync::mpsc::SyncSender<()>,
    },
    /// Revoked (or lost) partitions.
    Revoked(Vec<i32>),
}

/// How much longer than `--drain-timeout` the rebalance callback waits for the intake loop's ack:
/// the loop may be busy with something else first (a metadata request on assignment takes up to
/// 5 s). After it the partitions are released undrained, which is safe: nothing of theirs is
/// stored or committed once the tracker has forgotten them.
pub(crate) const ACK_MARGIN: Duration = Duration::from_secs(10);

/// The consumer's context: rebalance and commit callbacks.
pub struct SourceContext {
    /// Set while the intake loop drains revocations: how long it may take (`--drain-timeout`).
    /// Cleared when it stops, so the final close does not drain again. Behind a lock because it
    /// is set after the consumer exists.
    drain: Mutex<Option<Duration>>,
    /// Input topic; other topics in a callback are ignored.
    topic: String,
    /// Shared with the completion path.
    tracker: Arc<Mutex<OffsetTracker>>,
    /// To the worker loop.
    events: mpsc::UnboundedSender<RebalanceEvent>,
    /// Committed-offset and assignment gauges.
    metrics: Arc<Metrics>,
}

impl SourceContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` (assign or revoke) to each of `parts` in the tracker and updates the
    /// gauges that follow the assignment.
    fn track(&self, parts: &[i32], change: impl Fn(&mut OffsetTracker, i32)) {
        let mut t = self.tracker();
        for &p in parts {
            change(&mut t, p);
        }
        self.metrics
            .assigned_partitions
            .set(t.assigned().len() as i64);
        self.metrics.events_in_flight.set(t.pending() as i64);
    }

    /// With `Some(drain_timeout)`, revocations wait for the intake loop to drain the partitions
    /// ([`RebalanceEvent::Revoking`]); with `None` they go through at once.
    pub fn set_drain(&self, drain_timeout: Option<Duration>) {
        *self.drain.lock().unwrap_or_else(|e| e.into_inner()) = drain_timeout;
    }

    /// Asks the intake loop to drain `parts` and waits for its ack (at most `drain_timeout` plus
    /// [`ACK_MARGIN`]). Runs inside the rebalance callback, on the reader task's thread: the
    /// runtime moves its other tasks (the loop, the window tasks) elsewhere meanwhile.
    fn wait_for_drain(&self, parts: &[i32], drain_timeout: Duration) {
        let (ack, acked) = std::sync::mpsc::sync_channel(1);
        let asked = RebalanceEvent::Revoking {
            partitions: parts.to_vec(),
            ack,
        };
        if self.events.send(asked).is_err() {
            return;
        }
        let wait = || acked.recv_timeout(drain_timeout + ACK_MARGIN);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let answer = if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        if answer == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            tracing::warn!(partitions = ?parts, "the intake loop did not answer the revocation in time; releasing the partitions undrained");
        }
    }
}

impl ClientContext for SourceContext {
    /// librdkafka statistics (every `statistics.interval.ms`): the consumer lag gauges.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let assigned = self.tracker().assigned();
        self.metrics
            .record_consumer_lag(&statistics, &self.topic, &assigned);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = self.partitions(tpl);
            let drain = *self.drain.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(drain_timeout) = drain {
                self.wait_for_drain(&parts, drain_timeout);
            }
            self.track(&parts, OffsetTracker::revoke);
            tracing::info!(partitions = ?parts, "partitions revoked");
            let _ = self.events.send(RebalanceEvent::Revoked(parts));
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = self.partitions(tpl);
                self.track(&parts, |t, p| {
                    t.assign(p);
                });
                tracing::info!(partitions = ?parts, "partitions assigned");
                let _ = self.events.send(RebalanceEvent::Assigned(parts));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for e in offsets
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.topic)
                {
                    if let Offset::Offset(o) = e.offset() {
                        self.metrics
                            .committed_offset
                            .with_label_values(&[&e.partition().to_string()])
                            .set(o);
                    }
                }
            }
            // librdkafka reports "no offset to commit" as an error; it is not one.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; it is retried at the next commit")
            }
        }
    }
}

/// The consumer type of the worker.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Settings the source needs.
pub struct SourceSettings<'a> {
    /// bootstrap.servers
    pub brokers: &'a str,
    /// group.id
    pub group_id: &'a str,
    /// Input topic.
    pub topic: &'a str,
    /// auto.commit.interval.ms: how often stored offsets are committed.
    pub commit_interval_ms: u64,
    /// The user's extra librdkafka properties.
    pub extra: &'a [(String, String)],
    /// Exactly-once mode: offsets are committed in transactions, never by the consumer, and
    /// only committed input is read.
    pub exactly_once: bool,
}

/// Creates the consumer and subscribes it. Offsets are stored only by the worker (after the
/// broker acknowledged the records they produced) and committed by librdkafka's auto-commit.
pub fn create_consumer(
    s: &SourceSettings<'_>,
    tracker: Arc<Mutex<OffsetTracker>>,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    metrics: Arc<Metrics>,
) -> KafkaResult<SourceConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", s.brokers)
        .set("group.id", s.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", s.commit_interval_ms.to_string())
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // librdkafka's default (500 ms) lets a fetch wait that long for data at low rates, which
        // alone would break the latency target (p99 ≤ linger + 300 ms); 25 ms costs at most 40
        // idle fetches/s per broker. --kafka-property can change it.
        .set("fetch.wait.max.ms", "25")
        // The prefetch queue is what the worker reads from at full speed while its in-flight
        // bound holds it back; librdkafka's default (64 MiB) alone would take half the memory
        // budget. 16 MiB still holds well over a second of input at 100,000 events/s.
        .set("queued.max.messages.kbytes", "16384")
        // Feeds the consumer lag gauges (SourceContext::stats); --kafka-property can change it.
        .set("statistics.interval.ms", "5000");
    for (k, v) in s.extra {
        cfg.set(k, v);
    }
    if s.exactly_once {
        cfg.set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    let ctx = SourceContext {
        drain: Mutex::new(None),
        topic: s.topic.to_owned(),
        tracker,
        events,
        metrics,
    };
    let consumer: SourceConsumer = cfg.create_with_context(ctx)?;
    consumer.subscribe(&[s.topic])?;
    Ok(consumer)
}

/// Pauses or resumes every currently assigned partition.
pub fn set_paused(consumer: &SourceConsumer, paused: bool) -> KafkaResult<()> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(());
    }
    if paused {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    }
}

/// Pauses the given partitions of `topic` (newly assigned while intake is paused).
pub fn pause_partitions(
    consumer: &SourceConsumer,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    consumer.pause(&tpl)
}

/// An input record as the intake loop takes it, copied out of librdkafka's buffer.
#[derive(Debug)]
pub struct Polled {
    /// Input partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Original key bytes.
    pub key: Option<Vec<u8>>,
    /// Original payload bytes.
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp (ms since epoch).
    pub timestamp_ms: Option<i64>,
}

/// Most records the reader hands over at once.
const READ_BATCH: usize = 64;

/// The reader task: the one place the consumer is polled, so the rebalance callbacks run here,
/// and the intake loop stays free to drain a revocation while the callback waits for it. Sends
/// the records (or consumer errors) to `out` in batches: the first that arrives, and with it
/// what librdkafka already holds, up to [`READ_BATCH`] — one hand-over between the tasks per
/// batch, not per record (per record it cost 7 % of the throughput of already-imported users).
/// Its capacity of one keeps intake's pace: while the loop does not take records, the reader
/// waits with one batch in hand. Ends when `out` closes.
pub async fn read_records(
    consumer: Arc<SourceConsumer>,
    out: mpsc::Sender<Vec<KafkaResult<Polled>>>,
) {
    let polled = |m: rdkafka::message::BorrowedMessage<'_>| Polled {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
    };
    loop {
        let mut batch = vec![consumer.recv().await.map(polled)];
        // `recv` is cancellation safe: a future not ready at once is dropped without loss.
        while batch.len() < READ_BATCH {
            match consumer.recv().now_or_never() {
                Some(r) => batch.push(r.map(polled)),
                None => break,
            }
        }
        if out.send(batch).await.is_err() {
            return;
        }
    }
}

/// The intake loop's end of [`read_records`]: one record at a time, so that the loop's bounds
/// hold per record whatever the batches.
pub struct Intake {
    batches: mpsc::Receiver<Vec<KafkaResult<Polled>>>,
    /// The rest of the last batch.
    buffered: std::collections::VecDeque<KafkaResult<Polled>>,
}

impl Intake {
    pub fn new(batches: mpsc::Receiver<Vec<KafkaResult<Polled>>>) -> Intake {
        Intake {
            batches,
            buffered: Default::default(),
        }
    }

    /// The next record; `None` once the reader has ended. Cancellation safe: it awaits only the
    /// channel's `recv`.
    pub async fn recv(&mut self) -> Option<KafkaResult<Polled>> {
        if self.buffered.is_empty() {
            self.buffered.extend(self.batches.recv().await?);
        }
        self.buffered.pop_front()
    }
}
