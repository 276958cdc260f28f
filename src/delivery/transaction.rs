//! Exactly-once outcomes: outcome and dead-letter records and the input offsets, committed in one
//! Kafka transaction.
//!
//! Window tasks hand their finished records to the [`Committer`] instead of producing them. The
//! committer gathers what arrives within the transaction linger — or less: as soon as every
//! input record read so far is in the batch, nothing else can come before the next record is
//! read and has gone through a check (at least an API round trip), so waiting buys nothing and
//! the batch commits at once ([`commit_now`]). Under load windows are always in flight and the
//! batch gathers for the whole linger, as before. Then: begin → produce every
//! record → mark the batch's input records done → send the partitions' done watermarks with the
//! consumer's group metadata (`send_offsets_to_transaction`) → commit. A `read_committed` reader
//! sees the records exactly when the offsets that produced them are committed, so across crashes
//! it sees exactly one outcome per input record.
//!
//! Errors follow librdkafka's transaction contract, one [`ErrorClass`] per error (see
//! [`crate::kafka::txn_error`]): a retriable call is made again, an abortable error aborts the
//! transaction and redoes the batch, a fatal or unsupported one stops the worker.
//!
//! A batch (and `init_transactions`) has one time budget, librdkafka's `transaction.timeout.ms`
//! (after it the coordinator aborts an open transaction anyway); retries wait the delays of one
//! exponential backoff. A batch still not committed when the budget is spent stops the worker like
//! a fatal error. After any such failure the committer attempts nothing more: every later batch
//! fails with the same error at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::try_join_all;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backoff::{Backoff, Delays};
use crate::delivery::sink::{OutRecord, Sink};
use crate::domain::SourcePos;
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::offsets::{offset_list, OffsetTracker};
use crate::kafka::txn_error::{CallError, ErrorClass, Stage, TxnFailure};
use crate::observe::metrics::Metrics;

/// One window's (or one dead-lettered record's) contribution to a transaction.
pub struct TxnItem {
    /// Records to produce.
    pub records: Vec<OutRecord>,
    /// Input records they complete.
    pub positions: Vec<SourcePos>,
    /// Told the result once the transaction committed (or failed for good).
    pub done: oneshot::Sender<Result<(), TxnFailure>>,
}

/// librdkafka's default `transaction.timeout.ms`.
const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The budget is split into calls of this many parts: a call that times out returns (retriable)
/// and is made again, so a slow coordinator shows in the log and the metrics long before the
/// budget is spent.
const CALLS_PER_BUDGET: u32 = 10;
/// Retry delays: from 100 ms doubling up to 2 s (before jitter), with jitter, for as long as the
/// budget lasts.
const BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(100), Duration::from_secs(2)).with_jitter();

/// How long transactional calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnTiming {
    /// A batch (all its attempts), and `init_transactions`, must succeed within this.
    pub budget: Duration,
    /// One blocking call returns after at most this.
    pub call_timeout: Duration,
}

impl TxnTiming {
    /// From the producer's librdkafka properties (`--kafka-property`; the last one wins, as in
    /// librdkafka): the budget is `transaction.timeout.ms`, librdkafka's default when unset (an
    /// invalid value is refused by librdkafka when the producer is created).
    pub fn from_properties(props: &[(String, String)]) -> TxnTiming {
        let budget = props
            .iter()
            .rev()
            .find(|(k, _)| k == "transaction.timeout.ms")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_TRANSACTION_TIMEOUT, Duration::from_millis);
        TxnTiming {
            budget,
            call_timeout: budget / CALLS_PER_BUDGET,
        }
    }
}

/// The retry state of one batch (or of `init_transactions`): its deadline and its backoff.
struct Retry {
    timing: TxnTiming,
    deadline: Instant,
    backoff: Delays,
}

impl Retry {
    fn start(timing: TxnTiming) -> Retry {
        Retry {
            timing,
            deadline: Instant::now() + timing.budget,
            backoff: BACKOFF.delays(),
        }
    }

    /// The timeout of the next blocking call: its share of the budget, never past the deadline.
    fn call_timeout(&self) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.timing
            .call_timeout
            .min(left)
            .max(Duration::from_millis(1))
    }

    /// Waits the next backoff delay after `last`; gives up when that would pass the deadline.
    async fn pause(&mut self, last: CallError) -> Result<(), TxnFailure> {
        let delay = self.backoff.next().unwrap_or(BACKOFF.max);
        if Instant::now() + delay >= self.deadline {
            return Err(TxnFailure::OutOfTime {
                budget: self.timing.budget,
                last,
            });
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Why an attempt at a batch ended without a commit.
enum Interrupted {
    /// Abort the transaction and redo the batch.
    Abort(CallError),
    /// Stop: nothing further can be committed.
    Stop(TxnFailure),
}

impl From<TxnFailure> for Interrupted {
    fn from(f: TxnFailure) -> Self {
        Interrupted::Stop(f)
    }
}

/// One blocking transactional call, given its timeout; `Fn` because a retriable error makes it
/// again.
type TxnCall = Arc<dyn Fn(Timeout) -> KafkaResult<()> + Send + Sync>;

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
    /// Longest a transaction gathers items after its first one (it commits sooner when nothing
    /// else can come, see [`commit_now`]).
    pub linger: Duration,
    /// Budget and call timeout (see [`TxnTiming::from_properties`]).
    pub timing: TxnTiming,
    /// Committed-offset gauges (the consumer's commit callback does not see transactional
    /// commits) and transaction error counters.
    pub metrics: Arc<Metrics>,
}

impl Committer {
    /// Registers the transactional id with the broker (`init_transactions`), fencing any older
    /// producer with the same id (a previous incarnation of this pod) and aborting its open
    /// transaction. Made again while retriable, within the budget.
    pub async fn init(&self) -> Result<(), TxnFailure> {
        let p = self.producer();
        let call: TxnCall = Arc::new(move |t| p.init_transactions(t));
        match self
            .call(Stage::Init, &mut Retry::start(self.timing), call)
            .await
        {
            Ok(()) => Ok(()),
            Err(Interrupted::Stop(f)) => Err(f),
            // No transaction is open yet, so there is nothing to abort: not in the contract.
            Err(Interrupted::Abort(e)) => Err(TxnFailure::Fatal(e)),
        }
    }

    /// Runs until the channel closes (all senders dropped).
    pub async fn run(self, mut rx: mpsc::Receiver<TxnItem>) {
        let mut failed: Option<TxnFailure> = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = Instant::now() + self.linger;
            while !self.nothing_else_coming(&batch) {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(i) => batch.push(i),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let result = match &failed {
                Some(f) => Err(f.clone()),
                None => self.commit(&batch).await,
            };
            if let (Err(e), None) = (&result, &failed) {
                tracing::error!(error = %e, "transaction failed for good; committing nothing further");
                failed = Some(e.clone());
            }
            for item in batch {
                let _ = item.done.send(result.clone());
            }
        }
    }

    /// Whether every input record read and not yet done is in `batch` (see [`commit_now`]).
    fn nothing_else_coming(&self, batch: &[TxnItem]) -> bool {
        let in_batch = batch.iter().map(|i| i.positions.len()).sum();
        let pending = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending();
        commit_now(pending, in_batch)
    }

    /// Commits a batch: aborts and redoes it on abortable errors, within the budget.
    async fn commit(&self, batch: &[TxnItem]) -> Result<(), TxnFailure> {
        let positions = || batch.iter().flat_map(|i| &i.positions);
        {
            // Marking done before the commit is safe: if the commit never succeeds the worker
            // stops without committing anything further, and the tracker dies with it. Held
            // until the transaction answers, so that a revocation waits for it.
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            for pos in positions() {
                t.done(pos.partition, pos.epoch, pos.offset);
                t.hold(pos.partition, pos.epoch);
            }
        }
        let result = self.commit_held(batch).await;
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        for pos in positions() {
            t.release(pos.partition, pos.epoch);
        }
        result
    }

    /// [`Committer::commit`] once the batch is marked done and held.
    async fn commit_held(&self, batch: &[TxnItem]) -> Result<(), TxnFailure> {
        let mut retry = Retry::start(self.timing);
        loop {
            match self.attempt(batch, &mut retry).await {
                Ok(()) => return Ok(()),
                Err(Interrupted::Stop(f)) => return Err(f),
                Err(Interrupted::Abort(e)) => {
                    self.abort(&mut retry).await?;
                    retry.pause(e).await?;
                }
            }
        }
    }

    /// One transaction for the batch: begin, produce, send the offsets, commit.
    async fn attempt(&self, batch: &[TxnItem], retry: &mut Retry) -> Result<(), Interrupted> {
        let p = self.producer();
        let begin: TxnCall = Arc::new(move |_| p.begin_transaction());
        self.call(Stage::Begin, retry, begin).await?;
        self.produce(batch, retry.call_timeout()).await?;
        let positions = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watermarks();
        if !positions.is_empty() {
            let send = self.send_offsets_call(&positions)?;
            self.call(Stage::SendOffsets, retry, send).await?;
        }
        let p = self.producer();
        let commit: TxnCall = Arc::new(move |t| p.commit_transaction(t));
        self.call(Stage::Commit, retry, commit).await?;
        for (p, o) in positions {
            self.metrics
                .committed_offset
                .with_label_values(&[&p.to_string()])
                .set(o);
        }
        Ok(())
    }

    /// Produces the batch's records and waits for their acknowledgements, for at most `timeout`
    /// (a blocking call's share of the budget). The first record that fails ends the wait: the
    /// transaction is lost, and aborting it purges whatever librdkafka still holds. An abortable
    /// error makes librdkafka purge its queues by itself, but not a record held back before them
    /// (one waiting for its topic's metadata, after an authorization error): that one waits for
    /// `message.timeout.ms` — for a transactional producer the whole transaction timeout — so a
    /// wait past `timeout` aborts and redoes the batch too.
    async fn produce(&self, batch: &[TxnItem], timeout: Duration) -> Result<(), Interrupted> {
        let sends = batch
            .iter()
            .flat_map(|i| &i.records)
            .map(|r| self.sink.send(r));
        match tokio::time::timeout(timeout, try_join_all(sends)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let fatal = self.sink.producer().client().fatal_error();
                Err(self.failed(CallError::undelivered(&e.error, fatal)))
            }
            Err(_) => Err(self.failed(CallError {
                stage: Stage::Produce,
                class: ErrorClass::Abortable,
                reason: format!("records not acknowledged within {timeout:?}"),
            })),
        }
    }

    /// The `send_offsets_to_transaction` call for the done watermarks `positions`.
    fn send_offsets_call(&self, positions: &[(i32, i64)]) -> Result<TxnCall, Interrupted> {
        let tpl = match offset_list(&self.topic, positions) {
            Ok(tpl) => tpl,
            Err(e) => return Err(self.failed(CallError::classify(Stage::SendOffsets, &e))),
        };
        let Some(cgm) = self.consumer.group_metadata() else {
            let e = CallError {
                stage: Stage::SendOffsets,
                class: ErrorClass::Fatal,
                reason: "the consumer has no group metadata".into(),
            };
            return Err(self.failed(e));
        };
        let p = self.producer();
        Ok(Arc::new(move |t| {
            p.send_offsets_to_transaction(&tpl, &cgm, t)
        }))
    }

    /// Aborts the open transaction, making the call again while it fails (retriable, or abortable:
    /// librdkafka then resets the abort so that it can be made again), within the budget.
    async fn abort(&self, retry: &mut Retry) -> Result<(), TxnFailure> {
        let p = self.producer();
        let abort: TxnCall = Arc::new(move |t| p.abort_transaction(t));
        loop {
            match self.call(Stage::Abort, retry, abort.clone()).await {
                Ok(()) => return Ok(()),
                Err(Interrupted::Stop(f)) => return Err(f),
                Err(Interrupted::Abort(e)) => retry.pause(e).await?,
            }
        }
    }

    /// Makes `call` until it succeeds, making it again after each retriable error (after the next
    /// backoff delay, within the budget); any other error ends it.
    async fn call(
        &self,
        stage: Stage,
        retry: &mut Retry,
        call: TxnCall,
    ) -> Result<(), Interrupted> {
        loop {
            let (c, timeout) = (call.clone(), Timeout::After(retry.call_timeout()));
            let Err(e) = blocking(move || c(timeout)).await else {
                return Ok(());
            };
            let e = CallError::classify(stage, &e);
            if e.class != ErrorClass::Retriable {
                return Err(self.failed(e));
            }
            self.observe(&e);
            retry.pause(e).await?;
        }
    }

    /// Counts and logs a non-retriable error and says what it interrupts.
    fn failed(&self, e: CallError) -> Interrupted {
        self.observe(&e);
        match e.class {
            ErrorClass::Abortable => Interrupted::Abort(e),
            _ => Interrupted::Stop(e.stop()),
        }
    }

    /// Counts and logs an error.
    fn observe(&self, e: &CallError) {
        self.metrics
            .transaction_errors
            .with_label_values(&[e.stage.as_str(), e.class.label()])
            .inc();
        let (stage, kind, action) = (e.stage.as_str(), e.class.label(), e.action());
        match e.class {
            ErrorClass::Retriable | ErrorClass::Abortable => {
                tracing::warn!(stage, kind, error = %e.reason, "transaction call failed; {action}");
            }
            ErrorClass::Fatal | ErrorClass::Unsupported => {
                tracing::error!(stage, kind, error = %e.reason, "transaction call failed; {action}");
            }
        }
    }

    fn producer(&self) -> FutureProducer {
        self.sink.producer().clone()
    }
}

/// Whether a gathering transaction commits before its linger: when the input records read and not
/// yet done (`pending`, the offset tracker's count: records in windows being resolved, in the open
/// window, or dead-lettered at decode) are all among the `in_batch` records of the batch. A batch
/// may hold more than `pending` (records of a partition revoked meanwhile are no longer pending).
pub fn commit_now(pending: usize, in_batch: usize) -> bool {
    pending <= in_batch
}

/// Runs a blocking librdkafka transaction call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("transaction call does not panic")
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
