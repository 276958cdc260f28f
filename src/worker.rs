//! The worker: source → decode → windower → check/import stages → sink → offsets, wired together.
//!
//! One loop (the intake loop) reads records, decodes them, fills the open window, closes it when
//! the [`CloseRule`] says (full, idle, or its linger; see [`crate::window`]) and dispatches
//! closed windows as tasks; the number of windows in flight is bounded by a semaphore and the
//! number of records held by `max_events_in_flight`, at which intake stops reading until a
//! window's worth of room is free (if that lasts 5 s every assigned partition is paused; the loop
//! keeps polling, so the consumer stays in its group). Each window task resolves
//! its users and, as soon as a user's outcome is decided, produces one outcome per record of that
//! user (and a dead-letter record per failure), waits for the broker's acknowledgements, and only
//! then marks those records done, which may move the partition's committable position (see
//! [`crate::delivery::offsets`]).
//!
//! In exactly-once mode the window tasks hand their records to the transaction
//! [`Committer`](crate::delivery::transaction::Committer) instead, which produces them and commits the
//! offsets in one transaction.
//!
//! On revocation, the revoked partitions' records are taken out of the open window and
//! processed at once, and the rebalance waits (up to `--drain-timeout`) until every in-flight
//! record of those partitions is done and its offset committed; only then are the partitions
//! released.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::chat::client::CallObserver;
use crate::chat::ChatClient;
use crate::config::WorkerArgs;
use crate::delivery::offsets::OffsetTracker;
use crate::delivery::transaction::{Committer, TxnFailure, TxnItem, TxnTiming};
use crate::domain::{failure_class, InputRecord, Outcome, OutcomeStatus, SourcePos, Stage};
use crate::event::Decoder;
use crate::metrics::{Metrics, MetricsObserver, Readiness};
use crate::pipeline::{ImportPlan, Stages};
use crate::shutdown::Shutdown;
use crate::sink::{rfc3339_millis, DeadLetter, OutRecord, Sink};
use crate::source::{
    self, RebalanceEvent, RevokeHook, SourceConsumer, SourceContext, SourceSettings,
};
use crate::systemic::{self, SystemicGate};
use crate::window::{
    CheckInFlight, ChecksInFlight, CloseReason, CloseRule, ClosedWindow, Intake, RecordsById,
    Window,
};

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is wrong; the message names it.
    #[error("configuration: {0}")]
    Config(String),
    /// Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A record could not be delivered even after librdkafka's retries: its offset is not
    /// committed, and the worker stops rather than skip it.
    #[error("delivery failed, stopping without committing past it: {0}")]
    Delivery(String),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(String),
    /// Exactly-once: transactions cannot go on (see [`TxnFailure`]); nothing further is committed.
    #[error("exactly-once delivery stopped: {0}")]
    Transaction(#[from] TxnFailure),
}

/// Everything the window and decode tasks share.
struct Shared {
    /// The check and import stages.
    stages: Stages,
    /// The producer.
    sink: Arc<Sink>,
    /// How records reach the broker: directly, or through transactions.
    delivery: Delivery,
    /// Bounds the windows in flight.
    window_slots: Arc<Semaphore>,
    /// The consumer (for storing offsets).
    consumer: Arc<SourceConsumer>,
    /// Input topic.
    topic: String,
    /// Done-watermark tracking.
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Woken whenever records complete (the loop may resume intake).
    progress: Notify,
    /// Windows closed whose account_check has not answered yet (the window close rule).
    checks: Arc<ChecksInFlight>,
    /// Metrics of this worker.
    metrics: Arc<Metrics>,
    /// Fatal errors from tasks (a final delivery failure, a failed transaction).
    fatal: mpsc::UnboundedSender<WorkerError>,
}

/// How a window's records are delivered.
enum Delivery {
    /// Produce, wait for the acknowledgements, store the offsets (auto-committed).
    AtLeastOnce,
    /// Hand them to the transaction committer.
    ExactlyOnce(mpsc::Sender<TxnItem>),
}

/// A worker built from its settings, ready to run.
pub struct Worker {
    args: WorkerArgs,
    decoder: Decoder,
    /// Single or batch import (validated here, so a bad --batch-min fails at start).
    import: ImportPlan,
    client: ChatClient,
    metrics: Arc<Metrics>,
    gate: Arc<SystemicGate>,
    readiness: Arc<Readiness>,
}

impl Worker {
    /// Validates the settings and builds the API client. Fails with a message naming the setting.
    pub fn new(args: WorkerArgs) -> Result<Self, WorkerError> {
        args.validate().map_err(WorkerError::Config)?;
        let decoder = args.decoder().map_err(WorkerError::Config)?;
        let import = args.chat.import_plan().map_err(WorkerError::Config)?;
        let metrics = Metrics::new();
        let limiters = args.chat.limiters().map_err(WorkerError::Config)?;
        let observer: Arc<dyn CallObserver> = Arc::new(MetricsObserver(metrics.clone()));
        let client = ChatClient::new(
            args.chat.chat_config().map_err(WorkerError::Config)?,
            limiters,
            observer,
        )
        .map_err(WorkerError::Config)?;
        let gate = Arc::new(SystemicGate::new());
        let readiness = Arc::new(Readiness {
            assigned: false.into(),
            gate: gate.clone(),
        });
        Ok(Worker {
            args,
            decoder,
            import,
            client,
            metrics,
            gate,
            readiness,
        })
    }

    /// This worker's metrics (tests and the demo read them).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// This worker's readiness (for `/readyz`).
    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    /// Runs until `shutdown`, then drains, flushes, commits and leaves the group. With
    /// `admin`, also serves `/metrics`, `/healthz` and `/readyz` on that listener.
    pub async fn run(
        self,
        admin: Option<tokio::net::TcpListener>,
        shutdown: Shutdown,
    ) -> Result<(), WorkerError> {
        let (stop_tasks, stop_trigger) = Shutdown::new();
        let admin_task = admin.map(|l| {
            let (m, r, s) = (
                self.metrics.clone(),
                self.readiness.clone(),
                stop_tasks.clone(),
            );
            tokio::spawn(async move { crate::metrics::serve_admin(l, m, r, s).await })
        });
        let probers = tokio::spawn(systemic::run_probers(
            self.gate.clone(),
            self.client.clone(),
            self.args.systemic_probe_interval,
            stop_tasks.clone(),
        ));
        let result = self.run_pipeline(shutdown).await;
        stop_trigger.trigger();
        let _ = probers.await;
        if let Some(t) = admin_task {
            match t.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "admin server stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "admin server task failed"),
                Ok(Ok(())) => {}
            }
        }
        result
    }

    async fn run_pipeline(self, shutdown: Shutdown) -> Result<(), WorkerError> {
        let a = &self.args;
        let extra = a.kafka.properties();
        let transactional_id = a.resolved_transactional_id();
        let exactly_once = transactional_id.is_some();
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let consumer = Arc::new(source::create_consumer(
            &SourceSettings {
                brokers: &a.kafka.brokers,
                group_id: &a.kafka.group_id,
                topic: &a.kafka.input_topic,
                commit_interval_ms: a.commit_interval.as_millis() as u64,
                extra: &extra,
                exactly_once,
            },
            tracker.clone(),
            events_tx,
            self.metrics.clone(),
        )?);
        let sink = Arc::new(Sink::new(
            &a.kafka.brokers,
            &extra,
            &a.kafka.input_topic,
            &a.outcome_topic,
            &a.kafka.dlq_topic,
            transactional_id.as_deref(),
        )?);
        let (delivery, committer) = match &transactional_id {
            None => (Delivery::AtLeastOnce, None),
            Some(id) => {
                let committer = Committer {
                    sink: sink.clone(),
                    consumer: consumer.clone(),
                    tracker: tracker.clone(),
                    topic: a.kafka.input_topic.clone(),
                    linger: a.transaction_linger,
                    timing: TxnTiming::from_properties(&extra),
                    metrics: self.metrics.clone(),
                };
                // Fences an older incarnation of this replica and aborts its open transaction.
                committer.init().await?;
                tracing::info!(transactional_id = %id, "exactly-once delivery: transactions initialised");
                let (tx, rx) = mpsc::channel(a.max_windows_in_flight * 2);
                (
                    Delivery::ExactlyOnce(tx),
                    Some(tokio::spawn(committer.run(rx))),
                )
            }
        };
        let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stages: Stages {
                client: self.client.clone(),
                import: self.import,
                import_slots: Arc::new(Semaphore::new(a.max_imports_in_flight)),
                gate: self.gate.clone(),
                // The worker's own shutdown, not `stop_tasks` (fired only after the pipeline
                // ended): windows waiting at a closed systemic gate cannot drain, so they are
                // abandoned as soon as shutdown begins (offsets uncommitted, replayed later)
                // instead of holding every stop during a fault for the whole --drain-timeout.
                shutdown: shutdown.clone(),
            },
            sink,
            delivery,
            window_slots: Arc::new(Semaphore::new(a.max_windows_in_flight)),
            consumer: consumer.clone(),
            topic: a.kafka.input_topic.clone(),
            tracker: tracker.clone(),
            progress: Notify::new(),
            checks: Arc::new(ChecksInFlight::default()),
            metrics: self.metrics.clone(),
            fatal: fatal_tx,
        });
        for api in [
            crate::chat::Api::AccountCheck,
            crate::chat::Api::AccountImport,
        ] {
            if let Some(l) = self.client.limiters().for_api(api) {
                let ceiling = l.ceiling().unwrap_or(0.0);
                self.metrics
                    .limiter_ceiling
                    .with_label_values(&[api.name()])
                    .set(ceiling);
            }
        }
        let _ = self.client.usersig_expires_at();

        // The open window is shared with the revocation hook, which takes the revoked
        // partitions' records out of it. Locked only briefly, never across an await.
        let window = Arc::new(Mutex::new(Window::new(a.window_size, a.window_linger)));
        consumer.context().set_revoke_hook(Some(revoke_hook(
            Arc::downgrade(&shared),
            window.clone(),
            a.drain_timeout,
        )));
        let lock_window = || window.lock().unwrap_or_else(|e| e.into_inner());
        let close_rule = CloseRule::default();
        let check_limiter = self
            .client
            .limiters()
            .for_api(crate::chat::Api::AccountCheck);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut paused = false;
        // Set while the in-flight bound is reached: intake stops by not reading (librdkafka keeps
        // its prefetched queue); only if that lasts PAUSE_AFTER are the partitions paused, which
        // keeps the consumer polling (group membership) but drops the prefetched queue and costs
        // up to a second before fetching resumes.
        let mut full_since: Option<tokio::time::Instant> = None;
        const PAUSE_AFTER: Duration = Duration::from_secs(5);
        // Partition count of the input topic, as last read; see update_rate_share.
        let mut partition_total = 0usize;
        let mut gate_rx = self.gate.subscribe();
        // Whether the gate is closed as far as the metrics know: a closing counts once.
        let mut fault_in_force = false;
        let mut failure: Option<WorkerError> = None;
        tracing::info!(topic = %a.kafka.input_topic, group = %a.kafka.group_id, exactly_once, "worker started");

        loop {
            // Intake is reading: neither held back by the in-flight bound nor paused.
            let reading = full_since.is_none() && !paused;
            let plan = close_rule.plan(
                &lock_window(),
                Intake {
                    reading,
                    checks_in_flight: shared.checks.get(),
                },
                || check_limiter.map_or(Duration::ZERO, |l| l.time_to_token()),
            );
            let deadline = plan.map(|p| p.linger_at);
            let idle_at = plan.and_then(|p| p.idle_at);
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(reason) = fatal_rx.recv() => {
                    failure = Some(reason);
                    break;
                }
                Some(ev) = events_rx.recv() => match ev {
                    RebalanceEvent::Assigned(parts) => {
                        self.readiness.assigned.store(true, Ordering::Relaxed);
                        self.update_rate_share(&consumer, &a.kafka.input_topic, &mut partition_total);
                        if paused {
                            if let Err(e) = source::pause_partitions(&consumer, &a.kafka.input_topic, &parts) {
                                tracing::warn!(error = %e, "could not pause newly assigned partitions");
                            }
                        }
                    }
                    RebalanceEvent::Revoked(_) => {
                        // The hook already took the revoked partitions' records out of the
                        // window; this catches records of a revocation it did not see (lost
                        // partitions, a hook that was not installed yet).
                        let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                        lock_window().retain_partitions(|p| t.epoch(p).is_some());
                        drop(t);
                        self.update_rate_share(&consumer, &a.kafka.input_topic, &mut partition_total);
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    let closed = lock_window().take(CloseReason::Linger);
                    if let Some(w) = closed {
                        dispatch(&shared, &mut tasks, w);
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shared.progress.notified(), if paused || full_since.is_some() => {}
                _ = tokio::time::sleep_until(full_since.map_or_else(tokio::time::Instant::now, |t| t + PAUSE_AFTER)), if full_since.is_some() && !paused => {}
                _ = gate_rx.changed() => {
                    let fault = gate_rx.borrow_and_update().clone();
                    self.metrics.systemic_fault.reset();
                    if let Some(f) = fault {
                        let label = f.label();
                        self.metrics.systemic_fault.with_label_values(&[&label]).set(1);
                        if !fault_in_force {
                            self.metrics.systemic_faults.with_label_values(&[&label]).inc();
                        }
                        fault_in_force = true;
                    } else {
                        fault_in_force = false;
                    }
                }
                msg = consumer.recv(), if full_since.is_none() || paused => match msg {
                    Ok(m) => {
                        self.metrics.events_consumed.inc();
                        let (p, offset) = (m.partition(), m.offset());
                        let epoch = {
                            let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                            match t.epoch(p) {
                                Some(e) if t.read(p, e, offset) => {
                                    self.metrics.events_in_flight.set(t.pending() as i64);
                                    e
                                }
                                _ => {
                                    tracing::debug!(partition = p, offset, "record of a partition not assigned any more; skipped");
                                    continue;
                                }
                            }
                        };
                        let pos = SourcePos { partition: p, offset, epoch };
                        let key = m.key().map(<[u8]>::to_vec);
                        let payload = m.payload().map(<[u8]>::to_vec);
                        let timestamp_ms = m.timestamp().to_millis();
                        match self.decoder.decode(payload.as_deref()) {
                            Ok(event) => {
                                let rec = InputRecord { pos, event, key, payload, timestamp_ms };
                                let closed = lock_window().push(rec);
                                if let Some(w) = closed {
                                    dispatch(&shared, &mut tasks, w);
                                }
                            }
                            Err(err) => {
                                tracing::warn!(topic = %a.kafka.input_topic, partition = p, offset, reason = %err, "record does not decode; dead-lettering it");
                                let shared = shared.clone();
                                tasks.spawn(async move {
                                    let dl = DeadLetter { stage: Stage::Decode, code: 0, reason: err.to_string(), class: failure_class::INVALID_INPUT, attempts: 0 };
                                    dead_letter_decode(&shared, key, payload, pos, dl).await;
                                });
                            }
                        }
                    }
                    Err(e) => {
                        self.metrics.consumer_errors.inc();
                        tracing::warn!(error = %e, "consumer error");
                        // Errors can repeat quickly while a broker is down; don't spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // After recv (biased): a record that is ready joins the window instead.
                _ = tokio::time::sleep_until(idle_at.unwrap_or_else(tokio::time::Instant::now)), if idle_at.is_some() => {
                    let closed = lock_window().take(CloseReason::Idle);
                    if let Some(w) = closed {
                        dispatch(&shared, &mut tasks, w);
                    }
                }
                // Checks at the close rule's bound: the open window may close when one answers.
                _ = shared.checks.answered(), if plan.is_some() && idle_at.is_none() && reading => {}
            }
            let full = {
                let pending = tracker.lock().unwrap_or_else(|e| e.into_inner()).pending();
                // Held at the bound, intake resumes once a window's worth of room is free:
                // records complete one user at a time, and reading them back one at a time
                // would fill windows only at the pace of completions (by linger, half full at
                // 200 imports/s).
                match full_since {
                    Some(_) => pending + a.window_size > a.max_events_in_flight,
                    None => pending >= a.max_events_in_flight,
                }
            };
            full_since = full.then(|| full_since.unwrap_or_else(tokio::time::Instant::now));
            let want_pause =
                !self.gate.is_open() || full_since.is_some_and(|t| t.elapsed() >= PAUSE_AFTER);
            if want_pause != paused {
                match source::set_paused(&consumer, want_pause) {
                    Ok(()) => {
                        paused = want_pause;
                        tracing::debug!(
                            paused,
                            "intake {}",
                            if paused { "paused" } else { "resumed" }
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "could not pause/resume partitions"),
                }
            }
            // Intake is held either way: by not reading, or by pausing.
            self.metrics
                .paused
                .set(i64::from(paused || full_since.is_some()));
        }

        // Shutdown: no more intake. Finish what is in flight (bounded), flush, commit, leave.
        tracing::info!("stopping: draining in-flight windows");
        let closed = lock_window().take(CloseReason::Flush);
        if let Some(w) = closed {
            dispatch(&shared, &mut tasks, w);
        }
        let drained = tokio::time::timeout(a.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(left = tasks.len(), "drain timeout: abandoning in-flight windows (their offsets stay uncommitted and will be replayed)");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if let Some(reason) = fatal_rx.try_recv().ok().filter(|_| failure.is_none()) {
            failure = Some(reason);
        }
        // Everything is drained: the final close must not drain again.
        consumer.context().set_revoke_hook(None);
        let sink = shared.sink.clone();
        // The last sender of the committer's channel goes with `shared`: it then finishes its
        // last transaction and ends.
        drop(shared);
        if let Some(c) = committer {
            let _ = c.await;
        }
        if let Err(e) = sink.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
        drop(sink);
        // The final commit and leaving the group block inside librdkafka, without a timeout
        // of their own: with the group coordinator gone they would never return, and closing can
        // hang in the rebalance callback (librdkafka issue 4041: `rd_kafka_rebalance_protocol`
        // called after the close began). Bounded here; on timeout the thread is left behind and
        // the process goes on to exit (the offsets then come from the last periodic commit, and
        // the group notices the session expire). A thread of its own, not `spawn_blocking`: the
        // runtime waits for its blocking tasks when it shuts down, so a hung close would hold
        // the caller's runtime (a test's, an embedding program's) forever.
        let (tracker, topic) = (tracker.clone(), a.kafka.input_topic.clone());
        let (closed_tx, closed) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("account-sync-close".into())
            .spawn(move || {
                if !exactly_once {
                    commit_final(&consumer, &tracker, &topic);
                }
                // Closing the consumer leaves the group.
                drop(Arc::try_unwrap(consumer).ok());
                let _ = closed_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the closing thread; leaving the group by the session timeout");
        } else if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
            tracing::warn!(timeout = ?CLOSE_TIMEOUT, "final commit / leaving the group did not finish in time; exiting anyway");
        }
        tracing::info!("worker stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Takes this replica's share of the app's rate budget: assigned / total partitions of the
    /// input topic (`docs/ARCHITECTURE.md`, "Rate limits across replicas").
    /// `known_total` is the topic's partition count from the last metadata answer: a rebalance
    /// during a broker outage still recomputes the share from it instead of keeping a share that
    /// no longer matches the assignment.
    fn update_rate_share(&self, consumer: &SourceConsumer, topic: &str, known_total: &mut usize) {
        let assigned = consumer.assignment().map(|t| t.count()).unwrap_or(0);
        let fetched = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| e.to_string())
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| t.partitions().len())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| "topic not in the metadata".to_string())
            });
        let total = match fetched {
            Ok(n) => {
                *known_total = n;
                n
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    known_total = *known_total,
                    "could not read the input topic's partition count; rate share uses the last known one"
                );
                *known_total
            }
        };
        if assigned == 0 || total == 0 {
            return;
        }
        let share = (assigned as f64 / total as f64).min(1.0);
        let chat = &self.args.chat;
        for (api, rate) in chat.budget() {
            if rate <= 0.0 {
                continue;
            }
            if let Some(l) = self.client.limiters().for_api(api) {
                l.set_ceiling(rate * share);
                self.metrics
                    .limiter_ceiling
                    .with_label_values(&[api.name()])
                    .set(rate * share);
                self.metrics
                    .limiter_rate
                    .with_label_values(&[api.name()])
                    .set(l.rate());
            }
        }
        tracing::info!(assigned, total, share, "rate budget share updated");
    }
}

/// Commits the done watermarks of every assigned partition, synchronously (at-least-once mode,
/// at shutdown).
fn commit_final(consumer: &SourceConsumer, tracker: &Mutex<OffsetTracker>, topic: &str) {
    let positions = tracker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .watermarks();
    if positions.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &positions {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => tracing::info!(?positions, "final offsets committed"),
        Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
    }
}

/// Longest the final commit plus leaving the group may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// The revocation hook: runs inside the rebalance callback, before the partitions are released.
/// It takes the revoked partitions' records out of the open window and processes them, waits
/// until every in-flight record of those partitions is done (bounded by `drain_timeout`), and in
/// at-least-once mode commits their offsets synchronously. Records not done by then are replayed
/// by the partitions' next owner.
fn revoke_hook(
    shared: Weak<Shared>,
    window: Arc<Mutex<Window>>,
    drain_timeout: Duration,
) -> RevokeHook {
    let runtime = tokio::runtime::Handle::current();
    Box::new(
        move |consumer: &rdkafka::consumer::BaseConsumer<SourceContext>, parts: &[i32]| {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let started = std::time::Instant::now();
            let taken = window
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_partitions(|p| parts.contains(&p));
            if let Some(w) = taken {
                let (s, check) = (shared.clone(), shared.checks.start());
                runtime.spawn(async move { window_task(&s, w, check).await });
            }
            let pending = || {
                let t = shared.tracker.lock().unwrap_or_else(|e| e.into_inner());
                parts.iter().map(|&p| t.pending_in(p)).sum::<usize>()
            };
            let wait = || {
                while pending() > 0 && started.elapsed() < drain_timeout {
                    std::thread::sleep(Duration::from_millis(5));
                }
                pending()
            };
            // This runs on the thread polling the consumer; let the runtime move its other tasks
            // (the window tasks being waited for) elsewhere meanwhile.
            let left = if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                tokio::task::block_in_place(wait)
            } else {
                wait()
            };
            if matches!(shared.delivery, Delivery::AtLeastOnce) {
                let positions: Vec<(i32, i64)> = {
                    let t = shared.tracker.lock().unwrap_or_else(|e| e.into_inner());
                    t.watermarks()
                        .into_iter()
                        .filter(|(p, _)| parts.contains(p))
                        .collect()
                };
                let mut tpl = TopicPartitionList::new();
                for (p, o) in &positions {
                    let _ = tpl.add_partition_offset(&shared.topic, *p, Offset::Offset(*o));
                }
                if tpl.count() > 0 {
                    // Async: a synchronous commit has no timeout and would hold the rebalance
                    // forever if the coordinator vanished. librdkafka sends it before the
                    // partitions are released, and auto-commit commits them on unassign too.
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        tracing::warn!(error = %e, "offset commit on revocation failed");
                    }
                }
            }
            if left > 0 {
                tracing::warn!(partitions = ?parts, left, "revocation drain timed out; those records will be replayed by the next owner");
            } else {
                tracing::info!(partitions = ?parts, took = ?started.elapsed(), "revoked partitions drained");
            }
        },
    )
}

/// Spawns a window task.
fn dispatch(shared: &Arc<Shared>, tasks: &mut JoinSet<()>, window: ClosedWindow) {
    let m = &shared.metrics;
    let reason = match window.closed_by {
        CloseReason::Full => "full",
        CloseReason::Linger => "linger",
        CloseReason::Idle => "idle",
        CloseReason::Flush => "flush",
    };
    m.windows.with_label_values(&[reason]).inc();
    m.window_size.observe(window.ids.len() as f64);
    tracing::debug!(
        ids = window.ids.len(),
        records = window.records.len(),
        closed_by = reason,
        "window closed"
    );
    let (shared, check) = (shared.clone(), shared.checks.start());
    tasks.spawn(async move { window_task(&shared, window, check).await });
}

/// A window's whole life after it closed: wait for a window slot, resolve, deliver. `check`
/// counts its check as in flight until the check answered.
async fn window_task(shared: &Shared, window: ClosedWindow, check: CheckInFlight) {
    let _slot = shared
        .window_slots
        .acquire()
        .await
        .expect("the window semaphore is never closed");
    shared.metrics.windows_in_flight.inc();
    process_window(shared, window, check).await;
    shared.metrics.windows_in_flight.dec();
}

/// Resolves a window and delivers each user's records as soon as its outcome is decided (see
/// [`Stages::resolve`](crate::pipeline::Stages::resolve)); marks the delivered input records done.
async fn process_window(shared: &Shared, window: ClosedWindow, check: CheckInFlight) {
    let records_of = window.records_by_id();
    let decided =
        |outcomes: Vec<(usize, Outcome)>| deliver_outcomes(shared, &window, &records_of, outcomes);
    let Some(outcomes) = shared.stages.resolve(&window, check, decided).await else {
        tracing::info!(
            records = window.records.len(),
            "window abandoned at shutdown during a systemic fault; its undelivered records will be replayed"
        );
        return;
    };
    let count = |s: OutcomeStatus| {
        let ids = window.id_of_record.iter();
        ids.filter(|&&id| outcomes[id].status == s).count()
    };
    tracing::debug!(
        records = window.records.len(),
        imported = count(OutcomeStatus::Imported),
        already_imported = count(OutcomeStatus::AlreadyImported),
        failed = count(OutcomeStatus::Failed),
        "window resolved"
    );
}

/// Delivers the records of the users whose outcomes were just decided (`(index in window.ids,
/// outcome)`): one outcome per record, and a dead letter per failed one; counts and marks done
/// the delivered ones.
async fn deliver_outcomes(
    shared: &Shared,
    window: &ClosedWindow,
    records_of: &RecordsById,
    decided: Vec<(usize, Outcome)>,
) {
    let stamp = rfc3339_millis(SystemTime::now());
    let records: Vec<(&InputRecord, &Outcome)> = decided
        .iter()
        .flat_map(|(id, outcome)| {
            records_of
                .of(*id)
                .iter()
                .map(move |&r| (&window.records[r], outcome))
        })
        .collect();
    // One group of records per input record: its outcome, and its dead letter if it failed.
    let groups: Vec<(SourcePos, Vec<OutRecord>)> = records
        .iter()
        .map(|&(rec, outcome)| {
            let mut out =
                vec![shared
                    .sink
                    .outcome_record(&rec.event.user_id, outcome, rec.pos, &stamp)];
            if let Some(stage) = outcome.failed_stage {
                let dl = DeadLetter {
                    stage,
                    code: outcome.error_code,
                    reason: outcome.error_info.clone(),
                    class: outcome.failure_class,
                    attempts: outcome.attempts,
                };
                out.push(shared.sink.dead_letter_record(
                    rec.key.as_deref(),
                    rec.payload.as_deref(),
                    rec.pos,
                    &dl,
                    &stamp,
                ));
            }
            (rec.pos, out)
        })
        .collect();
    let delivered = deliver(shared, groups).await;
    let acknowledged_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (&(rec, outcome), ok) in records.iter().zip(&delivered) {
        if !ok {
            continue;
        }
        shared
            .metrics
            .outcomes
            .with_label_values(&[outcome.status.as_str()])
            .inc();
        if let Some(stage) = outcome.failed_stage {
            shared
                .metrics
                .events_dead_lettered
                .with_label_values(&[stage.as_str(), outcome.failure_class])
                .inc();
            tracing::warn!(
                topic = %shared.topic,
                partition = rec.pos.partition,
                offset = rec.pos.offset,
                stage = stage.as_str(),
                code = outcome.error_code,
                reason = %outcome.error_info,
                "account failed; dead-lettered"
            );
        }
        if let Some(ts) = rec.timestamp_ms {
            // To the acknowledgement (in exactly-once mode, the commit), as the metric says.
            let age_ms = acknowledged_ms - ts;
            if age_ms >= 0 {
                shared
                    .metrics
                    .end_to_end_latency
                    .observe(age_ms as f64 / 1000.0);
            }
        }
    }
}

/// Dead-letters a record that did not decode, then marks it done.
async fn dead_letter_decode(
    shared: &Shared,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    pos: SourcePos,
    dl: DeadLetter,
) {
    let stamp = rfc3339_millis(SystemTime::now());
    let record =
        shared
            .sink
            .dead_letter_record(key.as_deref(), payload.as_deref(), pos, &dl, &stamp);
    if deliver(shared, vec![(pos, vec![record])]).await[0] {
        shared
            .metrics
            .events_dead_lettered
            .with_label_values(&["decode", failure_class::INVALID_INPUT])
            .inc();
    }
}

/// Delivers each input record's group of output records and marks the input records whose
/// records were all delivered done. Returns, per group, whether it was delivered. A final
/// delivery failure is fatal: the worker stops without committing past it.
async fn deliver(shared: &Shared, groups: Vec<(SourcePos, Vec<OutRecord>)>) -> Vec<bool> {
    match &shared.delivery {
        Delivery::AtLeastOnce => {
            let sends = groups.iter().map(|(_, records)| async move {
                for r in records {
                    shared.sink.send(r).await?;
                }
                Ok::<(), crate::sink::SinkError>(())
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
                        let _ = shared.fatal.send(WorkerError::Delivery(e.to_string()));
                        ok.push(false);
                    }
                }
            }
            complete(shared, &done);
            ok
        }
        Delivery::ExactlyOnce(committer) => {
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
                    .and_then(|r| r.map_err(WorkerError::from)),
                Err(_) => Err(committer_stopped()),
            };
            let committed = match result {
                Ok(()) => true,
                Err(e) => {
                    let _ = shared.fatal.send(e);
                    false
                }
            };
            // The committer marked the records done in the tracker when it committed them.
            let t = shared.tracker.lock().unwrap_or_else(|e| e.into_inner());
            shared.metrics.events_in_flight.set(t.pending() as i64);
            drop(t);
            shared.progress.notify_one();
            vec![committed; n]
        }
    }
}

/// The committer ended before answering (it only does when the worker is stopping anyway).
fn committer_stopped() -> WorkerError {
    WorkerError::Delivery("transaction committer stopped".into())
}

/// Marks records done and stores the positions that moved. The tracker lock is held while
/// storing, so a concurrent revocation cannot slip in between (no offset of a partition that is
/// not ours is ever stored).
fn complete(shared: &Shared, done: &[SourcePos]) {
    let mut t = shared.tracker.lock().unwrap_or_else(|e| e.into_inner());
    let mut moved: Vec<(i32, i64)> = Vec::new();
    for pos in done {
        if let Some(w) = t.done(pos.partition, pos.epoch, pos.offset) {
            match moved.iter_mut().find(|(p, _)| *p == pos.partition) {
                Some(entry) => entry.1 = entry.1.max(w),
                None => moved.push((pos.partition, w)),
            }
        }
    }
    if !moved.is_empty() {
        if let Err(e) = source::store_positions(&shared.consumer, &shared.topic, &moved) {
            tracing::debug!(error = %e, "storing offsets failed (partition revoked meanwhile?)");
        }
    }
    shared.metrics.events_in_flight.set(t.pending() as i64);
    drop(t);
    shared.progress.notify_one();
}
