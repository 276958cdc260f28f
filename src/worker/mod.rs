//! The worker: source → decode → windower → check/import stages → sink → offsets, wired together.
//!
//! One loop (the intake loop) reads records, decodes them, fills the open window, closes it when
//! the [`CloseRule`] says (full, idle, or its linger; see [`crate::worker::window`]) and dispatches
//! closed windows as tasks; the number of windows in flight is bounded by a semaphore and the
//! number of records held by `max_events_in_flight`, at which intake stops reading until a
//! window's worth of room is free (if that lasts 5 s every assigned partition is paused; the loop
//! keeps polling, so the consumer stays in its group). Each window task resolves its users and,
//! as soon as a user's outcome is decided, hands its records to [`Delivery`], which delivers them
//! and makes their offsets committable in either delivery mode (see [`crate::delivery`]).
//!
//! Rebalances arrive as messages. The consumer is polled by a reader task alone, so the
//! rebalance callback runs there; on revocation it sends [`RebalanceEvent::Revoking`] and waits.
//! The loop then takes the revoked partitions' records out of the open window and processes them
//! at once, waits (up to `--drain-timeout`) until every in-flight record of those partitions is
//! done, commits their offsets and acks; only then are the partitions released (see
//! [`revoke`]).

pub mod event;
pub(crate) mod pipeline;
mod revoke;
pub(crate) mod source;
pub mod window;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

use crate::chat::client::CallObserver;
use crate::chat::ChatClient;
use crate::config::WorkerArgs;
use crate::delivery::sink::{DeadLetter, Sink};
use crate::delivery::transaction::TxnTiming;
use crate::delivery::{Delivery, DeliveryError, Parts, Started, Transactions};
use crate::domain::{failure_class, InputRecord, Outcome, OutcomeStatus, SourcePos, Stage};
use crate::kafka::consumer::{
    self, ConsumerGauges, RebalanceEvent, SourceConsumer, SourceSettings,
};
use crate::kafka::offsets::OffsetTracker;
use crate::kafka::txn_error::TxnFailure;
use crate::kafka::ConsumerLag;
use crate::observe::admin::Readiness;
use crate::observe::metrics::{Metrics, MetricsObserver};
use crate::shutdown::Shutdown;
use crate::systemic::{self, SystemicGate};
use event::Decoder;
use pipeline::{ImportPlan, Stages};
use source::Polled;
use window::{CheckInFlight, ChecksInFlight, CloseReason, CloseRule, ClosedWindow, Intake, Window};

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

impl From<DeliveryError> for WorkerError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Undelivered(reason) => WorkerError::Delivery(reason),
            DeliveryError::Transaction(f) => WorkerError::Transaction(f),
        }
    }
}

/// Everything the window and decode tasks share.
struct Shared {
    /// The check and import stages.
    stages: Stages,
    /// Where their records go.
    delivery: Arc<Delivery>,
    /// Bounds the windows in flight.
    window_slots: Arc<Semaphore>,
    /// Windows closed whose account_check has not answered yet (the window close rule).
    checks: Arc<ChecksInFlight>,
    /// Metrics of this worker.
    metrics: Arc<Metrics>,
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
    /// The fraction of the input partitions this worker owns, for the budget coordinator (its
    /// fallback); `None` before the first assignment.
    partition_share: watch::Sender<Option<f64>>,
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
            partition_share: watch::channel(None).0,
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
            tokio::spawn(async move { crate::observe::admin::serve_admin(l, m, r, s).await })
        });
        let probers = tokio::spawn(systemic::run_probers(
            self.gate.clone(),
            self.client.clone(),
            self.args.systemic_probe_interval,
            stop_tasks.clone(),
        ));
        // Not a task of its own: a worker dropped without stopping (a test's stand-in for a
        // killed process) must fall silent on the budget topic too, so that its lease expires.
        let coordinator = self.budget_coordinator();
        let stop_coordinator = stop_tasks.clone();
        let coordinate = async move {
            if let Some(setup) = coordinator {
                crate::budget::coordinator::run(setup, stop_coordinator).await;
            }
        };
        let pipeline = async {
            let result = self.run_pipeline(shutdown).await;
            stop_trigger.trigger();
            result
        };
        let (result, ()) = tokio::join!(pipeline, coordinate);
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

    /// The budget coordinator's setup when replicas share the budget by demand (`None` with
    /// `--budget-split partitions`, or when no API is limited). Holds the limiters at almost
    /// nothing until its first split.
    fn budget_coordinator(&self) -> Option<crate::budget::coordinator::CoordinatorSetup> {
        use crate::budget::{coordinator, BudgetSplit};
        let b = &self.args.budget;
        let budget = self.args.chat.budget().map(|(_, rate)| rate);
        if b.split != BudgetSplit::Demand || budget.iter().all(|&r| r <= 0.0) {
            return None;
        }
        let l = self.client.limiters();
        let limiters = [l.check.clone(), l.import.clone(), l.multi_import.clone()];
        coordinator::hold_until_first_split(&budget, &limiters);
        let mut client = rdkafka::ClientConfig::new();
        for (k, v) in self.args.kafka.properties() {
            client.set(k, v);
        }
        client.set("bootstrap.servers", &self.args.kafka.brokers);
        Some(coordinator::CoordinatorSetup {
            member: crate::budget::member_id(),
            topic: b.topic_for(&self.args.kafka.group_id),
            interval: b.interval,
            lease: b.lease,
            create_topic: !b.no_create,
            budget,
            limiters,
            partition_share: self.partition_share.subscribe(),
            client,
            metrics: self.metrics.clone(),
        })
    }

    async fn run_pipeline(self, shutdown: Shutdown) -> Result<(), WorkerError> {
        let a = &self.args;
        let extra = a.kafka.properties();
        let transactional_id = a.resolved_transactional_id();
        let exactly_once = transactional_id.is_some();
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let consumer = Arc::new(consumer::create_consumer(
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
            ConsumerGauges {
                assigned_partitions: self.metrics.assigned_partitions.clone(),
                events_in_flight: self.metrics.events_in_flight.clone(),
                committed_offset: self.metrics.committed_offset.clone(),
                lag: ConsumerLag::new(self.metrics.consumer_lag.clone()),
            },
        )?);
        let sink = Arc::new(Sink::new(
            &a.kafka.brokers,
            &extra,
            &a.kafka.input_topic,
            &a.outcome_topic,
            &a.kafka.dlq_topic,
            transactional_id.as_deref(),
        )?);
        let transactions = exactly_once.then(|| Transactions {
            linger: a.transaction_linger,
            timing: TxnTiming::from_properties(&extra),
            queue: a.max_windows_in_flight * 2,
        });
        let parts = Parts {
            sink: sink.clone(),
            consumer: consumer.clone(),
            tracker: tracker.clone(),
            topic: a.kafka.input_topic.clone(),
            metrics: self.metrics.clone(),
        };
        // Exactly-once: fences an older incarnation of this replica and aborts its open
        // transaction first.
        let Started {
            delivery,
            committable,
            failures: mut fatal_rx,
            committer,
        } = Delivery::start(parts, transactions).await?;
        if let Some(id) = &transactional_id {
            tracing::info!(transactional_id = %id, "exactly-once delivery: transactions initialised");
        }
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
            delivery,
            window_slots: Arc::new(Semaphore::new(a.max_windows_in_flight)),
            checks: Arc::new(ChecksInFlight::default()),
            metrics: self.metrics.clone(),
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

        let mut window = Window::new(a.window_size, a.window_linger);
        // From here on the rebalance callback waits for this loop to drain revoked partitions.
        consumer.context().set_drain(Some(a.drain_timeout));
        // The consumer is polled by the reader task alone, so a rebalance callback that waits for
        // this loop never waits on itself. One batch of room: see read_records.
        let (records_tx, records_rx) = mpsc::channel(1);
        let mut records_rx = source::Records::new(records_rx);
        let reader = tokio::spawn(source::read_records(consumer.clone(), records_tx));
        // Partitions drained for a revocation that has not gone through yet: a record of theirs
        // read meanwhile is no longer ours to process.
        let mut revoking: Vec<i32> = Vec::new();
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
                &window,
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
                    failure = Some(reason.into());
                    break;
                }
                Some(ev) = events_rx.recv() => match ev {
                    RebalanceEvent::Assigned(parts) => {
                        revoking.retain(|p| !parts.contains(p));
                        self.readiness.assigned.store(true, Ordering::Relaxed);
                        self.update_rate_share(&consumer, &a.kafka.input_topic, &mut partition_total);
                        if paused {
                            if let Err(e) = source::pause_partitions(&consumer, &a.kafka.input_topic, &parts) {
                                tracing::warn!(error = %e, "could not pause newly assigned partitions");
                            }
                        }
                    }
                    RebalanceEvent::Revoking { partitions, ack } => {
                        revoke::drain(&shared, &mut window, &committable, &consumer, &partitions, a.drain_timeout).await;
                        revoking.extend(&partitions);
                        let _ = ack.try_send(());
                    }
                    RebalanceEvent::Revoked(parts) => {
                        revoking.retain(|p| !parts.contains(p));
                        // The drain already took the revoked partitions' records out of the
                        // window; this catches records of a revocation it did not see (one that
                        // came before the loop ran).
                        let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                        window.retain_partitions(|p| t.epoch(p).is_some());
                        drop(t);
                        self.update_rate_share(&consumer, &a.kafka.input_topic, &mut partition_total);
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    let closed = window.take(CloseReason::Linger);
                    if let Some(w) = closed {
                        dispatch(&shared, &mut tasks, w);
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shared.delivery.progressed(), if paused || full_since.is_some() => {}
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
                Some(msg) = records_rx.recv(), if full_since.is_none() || paused => match msg {
                    Ok(m) => {
                        self.metrics.events_consumed.inc();
                        let Polled { partition: p, offset, key, payload, timestamp_ms } = m;
                        if revoking.contains(&p) {
                            tracing::debug!(partition = p, offset, "record of a partition being revoked; skipped");
                            continue;
                        }
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
                        match self.decoder.decode(payload.as_deref()) {
                            Ok(event) => {
                                let rec = InputRecord { pos, event, key, payload, timestamp_ms };
                                let closed = window.push(rec);
                                if let Some(w) = closed {
                                    dispatch(&shared, &mut tasks, w);
                                }
                            }
                            Err(err) => {
                                tracing::warn!(topic = %a.kafka.input_topic, partition = p, offset, reason = %err, "record does not decode; dead-lettering it");
                                let shared = shared.clone();
                                tasks.spawn(async move {
                                    let dl = DeadLetter { stage: Stage::Decode, code: 0, reason: err.to_string(), class: failure_class::INVALID_INPUT, attempts: 0 };
                                    shared.delivery.decode_failure(key, payload, pos, dl).await;
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
                    let closed = window.take(CloseReason::Idle);
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

        // No more intake: revocations go through at once from here on (the shutdown drains
        // everything anyway), one that already asked is drained, and the reader stops polling.
        consumer.context().set_drain(None);
        while let Ok(ev) = events_rx.try_recv() {
            if let RebalanceEvent::Revoking { partitions, ack } = ev {
                revoke::drain(
                    &shared,
                    &mut window,
                    &committable,
                    &consumer,
                    &partitions,
                    a.drain_timeout,
                )
                .await;
                let _ = ack.try_send(());
            }
        }
        // Dropping the events answers a revocation that asked after all: it goes through.
        drop(events_rx);
        reader.abort();
        let _ = reader.await;
        drop(records_rx);

        // Shutdown: finish what is in flight (bounded), flush, commit, leave.
        tracing::info!("stopping: draining in-flight windows");
        let closed = window.take(CloseReason::Flush);
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
            failure = Some(reason.into());
        }
        // The last sender of the committer's channel goes with `shared` (its delivery): it then
        // finishes its last transaction and ends.
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
        let (closed_tx, closed) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("account-sync-close".into())
            .spawn(move || {
                // At-least-once only: in exactly-once mode the transactions committed them.
                committable.commit_final(&*consumer);
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
        if total > 0 {
            let share = (assigned as f64 / total as f64).min(1.0);
            self.partition_share.send_replace(Some(share));
        }
        if assigned == 0 || total == 0 {
            return;
        }
        let share = (assigned as f64 / total as f64).min(1.0);
        if self.args.budget.split == crate::budget::BudgetSplit::Demand {
            // The budget coordinator sets the limiters; the partition share is its fallback.
            tracing::info!(
                assigned,
                total,
                share,
                "partition share updated (the budget fallback)"
            );
            return;
        }
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

/// Longest the final commit plus leaving the group may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

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
/// [`Stages::resolve`](crate::worker::pipeline::Stages::resolve)); marks the delivered input records done.
async fn process_window(shared: &Shared, window: ClosedWindow, check: CheckInFlight) {
    let records_of = window.records_by_id();
    let decided =
        |outcomes: Vec<(usize, Outcome)>| shared.delivery.outcomes(&window, &records_of, outcomes);
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
