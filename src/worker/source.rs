//! The worker's end of the input consumer ([`crate::kafka::consumer`]): the reader task, the one
//! place the consumer is polled, and pausing and resuming the assigned partitions.

use std::sync::Arc;

use futures_util::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc;

use crate::kafka::consumer::SourceConsumer;

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
pub struct Records {
    batches: mpsc::Receiver<Vec<KafkaResult<Polled>>>,
    /// The rest of the last batch.
    buffered: std::collections::VecDeque<KafkaResult<Polled>>,
}

impl Records {
    /// The receiving end of [`read_records`]' channel.
    pub fn new(batches: mpsc::Receiver<Vec<KafkaResult<Polled>>>) -> Records {
        Records {
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
