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
//! Errors follow librdkafka's transaction contract (`rd_kafka_commit_transaction` and
//! `rd_kafka_abort_transaction` in `rdkafka.h`), one [`ErrorClass`] per error:
//! - retriable (the call timed out while the coordinator was loading or moving, ...): the *same*
//!   call is made again: the operation goes on in the background and a new call resumes it;
//! - abortable: the transaction is aborted (the abort itself made again until it succeeds) and the
//!   batch redone (its records are owned and can be produced again);
//! - fatal (this producer was fenced by a newer one with the same `transactional.id`, ...): the
//!   producer is unusable. The worker stops without committing further; the next start
//!   re-initialises the same `transactional.id` and resumes from the last committed offsets.
//!   Rebuilding the producer in place instead would fence the newer producer in turn;
//! - unsupported (the brokers lack transactions, or deny this `transactional.id`): fatal, with a
//!   message that says so and what to run instead.
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
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backoff::{Backoff, Delays};
use crate::delivery::offsets::{offset_list, OffsetTracker};
use crate::delivery::sink::{OutRecord, Sink};
use crate::domain::SourcePos;
use crate::observe::metrics::Metrics;
use crate::worker::source::SourceConsumer;

/// One window's (or one dead-lettered record's) contribution to a transaction.
pub struct TxnItem {
    /// Records to produce.
    pub records: Vec<OutRecord>,
    /// Input records they complete.
    pub positions: Vec<SourcePos>,
    /// Told the result once the transaction committed (or failed for good).
    pub done: oneshot::Sender<Result<(), TxnFailure>>,
}

/// The step of a transaction a call belongs to (the `stage` label of
/// `account_sync_transaction_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `init_transactions` at start-up.
    Init,
    /// `begin_transaction`.
    Begin,
    /// Producing the batch's records (their delivery).
    Produce,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

impl Stage {
    /// Every stage, for the metric's series.
    pub const ALL: [Stage; 6] = [
        Stage::Init,
        Stage::Begin,
        Stage::Produce,
        Stage::SendOffsets,
        Stage::Commit,
        Stage::Abort,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Begin => "begin",
            Stage::Produce => "produce",
            Stage::SendOffsets => "send_offsets",
            Stage::Commit => "commit",
            Stage::Abort => "abort",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What librdkafka says about an error of a transactional call: the flags of its
/// `rd_kafka_error_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// `rd_kafka_error_is_fatal`.
    pub fatal: bool,
    /// `rd_kafka_error_txn_requires_abort`.
    pub abortable: bool,
    /// `rd_kafka_error_is_retriable`.
    pub retriable: bool,
}

/// What to do about an error (the `kind` label, see [`ErrorClass::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Make the same call again.
    Retriable,
    /// Abort the transaction and redo the batch.
    Abortable,
    /// The producer is unusable: stop.
    Fatal,
    /// The cluster cannot do transactions for this producer: stop, and say so.
    Unsupported,
}

/// Codes that mean the cluster cannot do transactions for this producer at all, whatever flag
/// librdkafka gives them: retrying or aborting cannot help. librdkafka reports a broker without the
/// transactional requests as `_UNSUPPORTED_FEATURE` ("EndTxnRequest (KIP-98) not supported by
/// broker") and calls that *retriable* at commit and send-offsets time, so following its flag
/// alone would retry forever.
const UNSUPPORTED: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::UnsupportedFeature,
    RDKafkaErrorCode::UnsupportedVersion,
    RDKafkaErrorCode::UnsupportedForMessageFormat,
    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
];

impl ErrorClass {
    /// The `kind` label values (unsupported counts as fatal).
    pub const LABELS: [&'static str; 3] = ["retriable", "abortable", "fatal"];

    /// The class of an error with `code` and librdkafka's `flags`.
    pub fn of(code: RDKafkaErrorCode, flags: Flags) -> ErrorClass {
        if UNSUPPORTED.contains(&code) {
            ErrorClass::Unsupported
        } else if flags.fatal {
            ErrorClass::Fatal
        } else if flags.abortable {
            ErrorClass::Abortable
        } else if flags.retriable {
            ErrorClass::Retriable
        } else {
            // No hint how to go on (an invalid state, a bad argument): librdkafka's own tests
            // treat this as a failure too.
            ErrorClass::Fatal
        }
    }

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Retriable => "retriable",
            ErrorClass::Abortable => "abortable",
            ErrorClass::Fatal | ErrorClass::Unsupported => "fatal",
        }
    }
}

/// A failed transactional call, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {reason}")]
pub struct CallError {
    /// The call.
    pub stage: Stage,
    /// What to do about it.
    pub class: ErrorClass,
    /// librdkafka's error.
    pub reason: String,
}

impl CallError {
    /// Classifies `e`, an error of a transactional call at `stage`.
    pub fn classify(stage: Stage, e: &KafkaError) -> CallError {
        let (class, reason) = match e {
            KafkaError::Transaction(rd) => {
                let flags = Flags {
                    fatal: rd.is_fatal(),
                    abortable: rd.txn_requires_abort(),
                    retriable: rd.is_retriable(),
                };
                let reason = format!("{} ({})", rd.string(), rd.name());
                (ErrorClass::of(rd.code(), flags), reason)
            }
            // Not librdkafka's transactional API (building the offsets to send): no flags.
            other => {
                let code = other.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                (ErrorClass::of(code, Flags::default()), other.to_string())
            }
        };
        CallError {
            stage,
            class,
            reason,
        }
    }

    /// Classifies `e`, a record of the transaction that was not delivered. The transaction is then
    /// incomplete and must be aborted (librdkafka has already purged its other records), unless
    /// the producer itself failed (`fatal`, its fatal error: fenced while producing, ...).
    pub fn undelivered(e: &KafkaError, fatal: Option<(RDKafkaErrorCode, String)>) -> CallError {
        let (class, reason) = match fatal {
            Some((code, why)) => {
                let flags = Flags {
                    fatal: true,
                    ..Flags::default()
                };
                (
                    ErrorClass::of(code, flags),
                    format!("{e}: {why} ({code:?})"),
                )
            }
            None => (ErrorClass::Abortable, e.to_string()),
        };
        CallError {
            stage: Stage::Produce,
            class,
            reason,
        }
    }

    /// What the committer does about it, for the log.
    fn action(&self) -> &'static str {
        match (self.class, self.stage) {
            (ErrorClass::Retriable, _) | (ErrorClass::Abortable, Stage::Abort) => {
                "calling it again"
            }
            (ErrorClass::Abortable, _) => "aborting the transaction and redoing the batch",
            (ErrorClass::Fatal | ErrorClass::Unsupported, _) => {
                "stopping: no further transaction is attempted"
            }
        }
    }

    /// The failure that stops the worker, for a fatal or unsupported error.
    fn stop(self) -> TxnFailure {
        match self.class {
            ErrorClass::Unsupported => TxnFailure::Unsupported(self),
            _ => TxnFailure::Fatal(self),
        }
    }
}

/// Why exactly-once delivery stopped: nothing further is committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnFailure {
    /// The cluster cannot do transactions for this producer.
    #[error(
        "the Kafka broker does not support transactions for this producer ({0}). \
         --delivery exactly-once needs Kafka transactions: brokers that implement them (Apache \
         Kafka 0.11 or later) and, with ACLs, WRITE and DESCRIBE on the transactional.id. Run \
         with --delivery at-least-once against this broker"
    )]
    Unsupported(CallError),
    /// The producer is unusable (for example fenced by a newer producer with the same
    /// `transactional.id`).
    #[error(
        "fatal transaction error, the producer cannot go on ({0}); the next start \
         re-initialises the transactional.id and resumes from the last committed offsets"
    )]
    Fatal(CallError),
    /// Retriable or abortable errors outlasted the budget.
    #[error(
        "transaction not committed within {budget:?} (transaction.timeout.ms); last error: {last}"
    )]
    OutOfTime {
        /// The budget.
        budget: Duration,
        /// The last error.
        last: CallError,
    },
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
