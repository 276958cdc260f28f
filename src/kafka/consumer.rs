//! The input consumer: a consumer in a consumer group (classic protocol with the cooperative-sticky
//! assignor, or KIP-848's consumer protocol, `--group-protocol`), offsets stored by hand. The worker reads through it ([`crate::worker::source`]); delivery stores and commits
//! offsets through it and puts its group metadata into transactions.
//!
//! Rebalance callbacks run inside librdkafka's poll, i.e. inside `recv()`, which only the worker's
//! reader task calls. They do the minimum there (Quickwit style): on revocation they send
//! [`RebalanceEvent::Revoking`] to the intake loop and wait for its ack — the loop drains the
//! revoked partitions and commits their offsets meanwhile, bounded by `--drain-timeout` — then
//! update the [`OffsetTracker`] so no offset of a revoked partition is ever stored, and send a
//! [`RebalanceEvent`] saying what changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntGauge, IntGaugeVec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use super::group_protocol::GroupProtocol;
use super::lag::ConsumerLag;
use super::offsets::OffsetTracker;

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
/// stored or committed once the tracker has forgotten them. `config` checks the sum against
/// `max.poll.interval.ms`.
pub const REVOKE_ACK_MARGIN: Duration = Duration::from_secs(10);

/// The worker's gauges that follow the consumer's callbacks: handles to series of its metrics
/// registry, so that the consumer needs nothing of the metrics module.
pub struct ConsumerGauges {
    /// `account_sync_assigned_partitions`: set on every assignment and revocation.
    pub assigned_partitions: IntGauge,
    /// `account_sync_events_in_flight`: a revocation forgets the revoked partitions' records.
    pub events_in_flight: IntGauge,
    /// `account_sync_committed_offset`: set by the commit callback.
    pub committed_offset: IntGaugeVec,
    /// `account_sync_consumer_lag`: from librdkafka's statistics.
    pub lag: ConsumerLag,
}

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
    /// Assignment, committed-offset and lag gauges.
    gauges: ConsumerGauges,
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
        let g = &self.gauges;
        g.assigned_partitions.set(t.assigned().len() as i64);
        g.events_in_flight.set(t.pending() as i64);
    }

    /// With `Some(drain_timeout)`, revocations wait for the intake loop to drain the partitions
    /// ([`RebalanceEvent::Revoking`]); with `None` they go through at once.
    pub fn set_drain(&self, drain_timeout: Option<Duration>) {
        *self.drain.lock().unwrap_or_else(|e| e.into_inner()) = drain_timeout;
    }

    /// Asks the intake loop to drain `parts` and waits for its ack (at most `drain_timeout` plus
    /// [`REVOKE_ACK_MARGIN`]). Runs inside the rebalance callback, on the reader task's thread: the
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
        let wait = || acked.recv_timeout(drain_timeout + REVOKE_ACK_MARGIN);
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
        self.gauges.lag.record(&statistics, &self.topic, &assigned);
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
                        self.gauges
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
    /// The user's extra librdkafka properties for consumers.
    pub extra: &'a [(String, String)],
    /// `--group-protocol`.
    pub group_protocol: GroupProtocol,
    /// Exactly-once mode: offsets are committed in transactions, never by the consumer, and
    /// only committed input is read.
    pub exactly_once: bool,
}

/// Creates the consumer and subscribes it. Offsets are stored only by the worker (after the
/// broker acknowledged the records they produced) and committed by librdkafka's auto-commit.
///
/// The group protocol is always set, so that librdkafka's default (classic, "will change to
/// consumer in next releases") never changes it under the worker. With the classic protocol the
/// assignor is cooperative-sticky; with `consumer` (KIP-848) the broker assigns, and librdkafka
/// refuses the classic protocol's properties, so none is set (config validation refused the
/// user's). Either way rebalances are incremental, which the callbacks above expect.
pub fn create_consumer(
    s: &SourceSettings<'_>,
    tracker: Arc<Mutex<OffsetTracker>>,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    gauges: ConsumerGauges,
) -> KafkaResult<SourceConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", s.brokers)
        .set("group.id", s.group_id)
        .set("group.protocol", s.group_protocol.as_str())
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
    if s.group_protocol == GroupProtocol::Classic {
        cfg.set("partition.assignment.strategy", "cooperative-sticky");
    }
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
        gauges,
    };
    let consumer: SourceConsumer = cfg.create_with_context(ctx)?;
    consumer.subscribe(&[s.topic])?;
    Ok(consumer)
}
