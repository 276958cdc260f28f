//! The replay loop: start positions from the group's committed offsets, read → filter → send,
//! acknowledgements, commits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::args::Plan;
use super::filter::DeadLetterInfo;
use super::report::Report;
use super::{position, ReplayArgs, ReplayError, Stop, Summary, REPLAYED_FROM};
use crate::kafka::offsets::{offset_list, OffsetTracker};
use crate::shutdown::Shutdown;

/// Sends awaiting their acknowledgement at once; bounds memory (each holds a copy of a record).
const MAX_IN_FLIGHT: usize = 1000;
/// How often acknowledged progress is committed; also what a kill may replay again.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Metadata, watermark and committed-offset requests at the start.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Replays the dead letters `args` select; see the [module documentation](super). Prints the
/// progress and the summary on stderr (and a dry run's listing on stdout). Stops at the end of the
/// topic as of the start, at `--limit`, or when `shutdown` fires (after the sends in flight).
pub async fn replay(args: ReplayArgs, shutdown: Shutdown) -> Result<Summary, ReplayError> {
    let plan = args.plan().map_err(ReplayError::Config)?;
    let consumer = Arc::new(create_consumer(&plan)?);
    let ranges = {
        let (c, p) = (consumer.clone(), plan.clone());
        tokio::task::spawn_blocking(move || start_ranges(&c, &p))
            .await
            .expect("metadata requests do not panic")?
    };
    let producer = match plan.dry_run {
        true => None,
        false => Some(
            crate::delivery::sink::producer_config(&plan.brokers, &plan.producer_properties)
                .create::<FutureProducer>()
                .map_err(kafka("creating the producer"))?,
        ),
    };
    let mut r = Replayer::new(&plan, producer, &ranges);
    if !r.open.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for g in ranges.iter().filter(|g| g.start < g.end) {
            tpl.add_partition_offset(&plan.dlq_topic, g.partition, Offset::Offset(g.start))
                .map_err(kafka("assigning the dead-letter partitions"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(kafka("assigning the dead-letter partitions"))?;
    }
    r.run(&consumer, &shutdown).await;
    r.finish(&consumer).await
}

/// Wraps a librdkafka error with what was being done.
fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> ReplayError {
    move |error| ReplayError::Kafka { what, error }
}

/// The dead-letter consumer's context. End-of-partition events still queued when the replay stops
/// reading reach librdkafka's error callback as the consumer closes: they are not errors.
struct ReplayContext;

impl ClientContext for ReplayContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReplayContext {}

type DlqConsumer = StreamConsumer<ReplayContext>;

/// The dead-letter consumer: assigned partitions (no group membership, so no rebalance wait),
/// offsets committed only by the replay.
fn create_consumer(plan: &Plan) -> Result<DlqConsumer, ReplayError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in &plan.consumer_properties {
        cfg.set(k, v);
    }
    // After the user's properties: the guarantees and the end detection rest on these.
    cfg.set("bootstrap.servers", &plan.brokers)
        .set("group.id", &plan.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        // Exactly-once workers write dead letters in transactions: only committed ones are real.
        .set("isolation.level", "read_committed");
    cfg.create_with_context(ReplayContext)
        .map_err(kafka("creating the dead-letter consumer"))
}

/// What one partition of the dead-letter topic holds for this run: `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct Range {
    partition: i32,
    start: i64,
    end: i64,
}

/// The partitions' start (the group's committed offset, or the earliest record) and end (the high
/// watermark now). Also checks that the target topic exists: a producer would create a mistyped
/// one on a broker that auto-creates topics.
fn start_ranges(c: &DlqConsumer, plan: &Plan) -> Result<Vec<Range>, ReplayError> {
    partitions_of(c, &plan.target_topic, plan.target_flag)?;
    let dlq = &plan.dlq_topic;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(c, dlq, "--dlq-topic")? {
        tpl.add_partition(dlq, p);
    }
    let committed = c
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(kafka("reading the replay group's committed offsets"))?;
    committed
        .elements()
        .iter()
        .map(|e| {
            let (low, high) = c
                .fetch_watermarks(dlq, e.partition(), REQUEST_TIMEOUT)
                .map_err(kafka("reading the dead-letter topic's watermarks"))?;
            let start = match e.offset() {
                // Below `low` the records are gone (retention): start at the oldest there is.
                Offset::Offset(o) => o.max(low),
                _ => low,
            };
            Ok(Range {
                partition: e.partition(),
                start,
                end: high,
            })
        })
        .collect()
}

/// The partition ids of `topic`; a missing topic is a bad setting, named by `flag`.
fn partitions_of(c: &DlqConsumer, topic: &str, flag: &str) -> Result<Vec<i32>, ReplayError> {
    let md = c
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(kafka("reading topic metadata"))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => Err(ReplayError::Config(format!(
            "{flag} {topic:?}: no such topic on the brokers"
        ))),
    }
}

/// A matching dead letter, copied out of the consumer's buffer for sending.
struct ToSend {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// The broker's answer for one replayed record.
struct Ack {
    partition: i32,
    offset: i64,
    result: Result<(), KafkaError>,
}

/// The state of one replay.
struct Replayer<'a> {
    plan: &'a Plan,
    /// None in a dry run.
    producer: Option<FutureProducer>,
    report: Report,
    /// Per partition: read offsets not yet done (a send not acknowledged); gives what may be
    /// committed. One epoch per partition: there are no rebalances.
    tracker: OffsetTracker,
    epochs: HashMap<i32, u64>,
    /// End offsets as of the start.
    ends: HashMap<i32, i64>,
    /// Partitions not yet read to their end.
    open: BTreeSet<i32>,
    in_flight: FuturesUnordered<BoxFuture<'static, Ack>>,
    /// Offsets this run committed.
    committed: BTreeMap<i32, i64>,
    summary: Summary,
    limit_reached: bool,
    /// The first failed send; nothing from it on is committed.
    failure: Option<ReplayError>,
}

impl<'a> Replayer<'a> {
    fn new(plan: &'a Plan, producer: Option<FutureProducer>, ranges: &[Range]) -> Self {
        let mut tracker = OffsetTracker::new();
        let open: BTreeSet<i32> = ranges
            .iter()
            .filter(|g| g.start < g.end)
            .map(|g| g.partition)
            .collect();
        let total = ranges.iter().map(|g| (g.end - g.start).max(0) as u64).sum();
        Replayer {
            plan,
            producer,
            report: Report::start(plan, total, ranges.len()),
            epochs: open.iter().map(|&p| (p, tracker.assign(p))).collect(),
            tracker,
            ends: ranges.iter().map(|g| (g.partition, g.end)).collect(),
            open,
            in_flight: FuturesUnordered::new(),
            committed: BTreeMap::new(),
            summary: Summary {
                read: 0,
                matched: 0,
                replayed: 0,
                skipped: 0,
                committed: Vec::new(),
                stop: Stop::EndOfTopic,
            },
            limit_reached: false,
            failure: None,
        }
    }

    /// Whether more records are to be read.
    fn reading(&self) -> bool {
        !self.open.is_empty() && !self.limit_reached && self.failure.is_none()
    }

    /// Reads, sends and commits until there is nothing more to read (or a stop) and every send
    /// has its answer.
    async fn run(&mut self, consumer: &Arc<DlqConsumer>, shutdown: &Shutdown) {
        let mut stopping = false;
        let mut last_commit = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let reading = !stopping && self.reading();
            if !reading && self.in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.wait(), if !stopping => stopping = true,
                Some(ack) = self.in_flight.next(), if !self.in_flight.is_empty() => self.acked(ack),
                m = consumer.recv(), if reading && self.in_flight.len() < MAX_IN_FLIGHT => match m {
                    Ok(m) => {
                        let next = self.take(&m);
                        drop(m);
                        if let Some(rec) = next {
                            self.send(rec).await;
                        }
                    }
                    // At the end of what the partition holds now, which is at or past its end as
                    // of the start: done (under read_committed the end of what is visible, and a
                    // transaction still open is left to the next run, uncommitted).
                    Err(KafkaError::PartitionEOF(p)) => {
                        self.open.remove(&p);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dead-letter consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tick.tick() => {}
            }
            self.report.progress(&self.summary);
            if !self.plan.dry_run && last_commit.elapsed() >= COMMIT_INTERVAL {
                last_commit = Instant::now();
                if let Err(e) = self.commit(consumer).await {
                    tracing::warn!(error = %e, "offset commit failed; retried in a second");
                }
            }
        }
    }

    /// Counts and filters one record; returns it when it is to be sent (a dry run lists it
    /// instead).
    fn take(&mut self, m: &BorrowedMessage<'_>) -> Option<ToSend> {
        let (p, o) = (m.partition(), m.offset());
        let end = *self.ends.get(&p)?;
        if o >= end || !self.open.contains(&p) {
            // Written after the start: the next run's.
            self.open.remove(&p);
            return None;
        }
        if o + 1 >= end {
            self.open.remove(&p);
        }
        let epoch = self.epochs[&p];
        self.tracker.read(p, epoch, o);
        self.summary.read += 1;
        let info = DeadLetterInfo::of(m);
        if !self.plan.filter.matches(&info) {
            self.summary.skipped += 1;
            self.tracker.done(p, epoch, o);
            return None;
        }
        self.summary.matched += 1;
        self.limit_reached = self.plan.limit.is_some_and(|l| self.summary.matched >= l);
        if self.producer.is_none() {
            let pos = position(&self.plan.dlq_topic, p, o);
            let len = m.payload().map_or(0, <[u8]>::len);
            self.report.listed(&pos, m.key(), len, &info);
            self.tracker.done(p, epoch, o);
            return None;
        }
        Some(ToSend {
            partition: p,
            offset: o,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        })
    }

    /// Hands one record to the producer; its acknowledgement arrives through `in_flight`.
    async fn send(&mut self, rec: ToSend) {
        let Some(producer) = &self.producer else {
            return;
        };
        let pos = position(&self.plan.dlq_topic, rec.partition, rec.offset);
        let headers = OwnedHeaders::new().insert(Header {
            key: REPLAYED_FROM,
            value: Some(pos.as_bytes()),
        });
        let delivery: Result<DeliveryFuture, KafkaError> = loop {
            let mut r: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.plan.target_topic).headers(headers.clone());
            if let Some(k) = &rec.key {
                r = r.key(k);
            }
            if let Some(v) = &rec.payload {
                r = r.payload(v);
            }
            match producer.send_result(r) {
                Ok(d) => break Ok(d),
                // librdkafka's queue is full (a --kafka-property smaller than MAX_IN_FLIGHT):
                // its acknowledgements free it.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err((e, _)) => break Err(e),
            }
        };
        let (partition, offset) = (rec.partition, rec.offset);
        match delivery {
            Ok(d) => self.in_flight.push(Box::pin(async move {
                let result = match d.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                };
                Ack {
                    partition,
                    offset,
                    result,
                }
            })),
            Err(error) => self.failed(partition, offset, error),
        }
    }

    fn acked(&mut self, ack: Ack) {
        match ack.result {
            Ok(()) => {
                self.summary.replayed += 1;
                self.tracker
                    .done(ack.partition, self.epochs[&ack.partition], ack.offset);
            }
            Err(error) => self.failed(ack.partition, ack.offset, error),
        }
    }

    /// A send failed for good: stop reading. The record stays pending in the tracker, so no
    /// commit passes it.
    fn failed(&mut self, partition: i32, offset: i64, error: KafkaError) {
        let position = position(&self.plan.dlq_topic, partition, offset);
        tracing::error!(%position, %error, "replaying a dead letter failed");
        if self.failure.is_none() {
            self.failure = Some(ReplayError::Produce { position, error });
        }
    }

    /// Commits, synchronously, every partition's position that moved since the last commit:
    /// below it every record is skipped by the filters or acknowledged.
    async fn commit(&mut self, consumer: &Arc<DlqConsumer>) -> Result<(), KafkaError> {
        let due: Vec<(i32, i64)> = self
            .tracker
            .watermarks()
            .into_iter()
            .filter(|(p, w)| self.committed.get(p) != Some(w))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let tpl = offset_list(&self.plan.dlq_topic, &due)?;
        let c = consumer.clone();
        tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .expect("commit does not panic")?;
        self.committed.extend(due);
        Ok(())
    }

    /// The final commit and the summary.
    async fn finish(mut self, consumer: &Arc<DlqConsumer>) -> Result<Summary, ReplayError> {
        let commit = match self.plan.dry_run {
            true => Ok(()),
            false => self.commit(consumer).await,
        };
        let s = &mut self.summary;
        s.committed = self.committed.iter().map(|(&p, &o)| (p, o)).collect();
        s.stop = if self.failure.is_some() || commit.is_err() {
            Stop::Failed
        } else if self.open.is_empty() {
            Stop::EndOfTopic
        } else if self.limit_reached {
            Stop::Limit
        } else {
            Stop::Interrupted
        };
        self.report.finish(&self.summary, self.plan.dry_run);
        if let Some(f) = self.failure {
            return Err(f);
        }
        commit.map_err(ReplayError::Commit)?;
        Ok(self.summary)
    }
}
