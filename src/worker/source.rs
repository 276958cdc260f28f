//! The Kafka source: a consumer in a consumer group (cooperative-sticky), offsets stored by hand.
//!
//! Rebalance callbacks run inside librdkafka's poll, i.e. inside `recv()`. They do the minimum
//! there — update the [`OffsetTracker`] so no offset of a revoked partition is ever stored, and
//! send a [`RebalanceEvent`] to the worker loop, which does the rest (Quickwit style).

use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use crate::delivery::offsets::OffsetTracker;
use crate::observe::metrics::Metrics;

/// A change of this worker's partitions of the input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Newly assigned partitions (incremental).
    Assigned(Vec<i32>),
    /// Revoked (or lost) partitions.
    Revoked(Vec<i32>),
}

/// Called on revocation, inside librdkafka's rebalance callback and before the tracker forgets
/// the partitions: the worker drains their in-flight records and commits their offsets there.
pub type RevokeHook = Box<dyn Fn(&BaseConsumer<SourceContext>, &[i32]) + Send + Sync>;

/// The consumer's context: rebalance and commit callbacks.
pub struct SourceContext {
    /// Set by the worker once it is running, cleared when it stops (so the final close does
    /// not drain again). Behind a lock because it is installed after the consumer exists.
    on_revoke: Mutex<Option<RevokeHook>>,
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

    /// Installs (or with `None` removes) the revocation hook.
    pub fn set_revoke_hook(&self, hook: Option<RevokeHook>) {
        *self.on_revoke.lock().unwrap_or_else(|e| e.into_inner()) = hook;
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
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = self.partitions(tpl);
            if let Some(hook) = self
                .on_revoke
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                hook(consumer, &parts);
            }
            {
                let mut t = self.tracker();
                for &p in &parts {
                    t.revoke(p);
                }
                self.metrics
                    .assigned_partitions
                    .set(t.assigned().len() as i64);
                self.metrics.events_in_flight.set(t.pending() as i64);
            }
            tracing::info!(partitions = ?parts, "partitions revoked");
            let _ = self.events.send(RebalanceEvent::Revoked(parts));
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = self.partitions(tpl);
                {
                    let mut t = self.tracker();
                    for &p in &parts {
                        t.assign(p);
                    }
                    self.metrics
                        .assigned_partitions
                        .set(t.assigned().len() as i64);
                }
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
        on_revoke: Mutex::new(None),
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
