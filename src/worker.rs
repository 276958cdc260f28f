//! The worker: source → decode → windower → check/import stages → sink → offsets, wired together.
//!
//! One loop (the source task) reads records, decodes them, fills the open window and dispatches
//! closed windows as tasks; the number of windows in flight is bounded by a semaphore and the
//! number of records held by `max_events_in_flight`, above which every assigned partition is
//! paused (the loop keeps polling, so the consumer stays in its group). Each window task resolves
//! its users, produces one outcome per record (and a dead-letter record per failure), waits for
//! the broker's acknowledgements, and only then marks the records done, which may move the
//! partition's committable position (see [`crate::offsets`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::chat::client::CallObserver;
use crate::chat::{ChatClient, FailureClass};
use crate::config::WorkerArgs;
use crate::event::Decoder;
use crate::metrics::{Metrics, MetricsObserver, Readiness};
use crate::offsets::OffsetTracker;
use crate::pipeline::Stages;
use crate::shutdown::Shutdown;
use crate::sink::{rfc3339_millis, DeadLetter, OutcomeStatus, Sink, Stage};
use crate::source::{self, RebalanceEvent, SourceConsumer, SourceSettings};
use crate::systemic::{self, SystemicGate};
use crate::window::{CloseReason, ClosedWindow, InputRecord, SourcePos, Window};

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
}

/// Everything the window and decode tasks share.
struct Shared {
    /// The check and import stages.
    stages: Stages,
    /// The producer.
    sink: Sink,
    /// The consumer (for storing offsets).
    consumer: Arc<SourceConsumer>,
    /// Input topic.
    topic: String,
    /// Done-watermark tracking.
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Woken whenever records complete (the loop may resume intake).
    progress: Notify,
    /// Metrics of this worker.
    metrics: Arc<Metrics>,
    /// Fatal errors from tasks (a final delivery failure).
    fatal: mpsc::UnboundedSender<String>,
}

/// A worker built from its settings, ready to run.
pub struct Worker {
    args: WorkerArgs,
    decoder: Decoder,
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
        let prober = {
            let (gate, client, s) = (self.gate.clone(), self.client.clone(), stop_tasks.clone());
            let initial = self.args.systemic_probe_interval;
            tokio::spawn(async move { systemic::run_prober(&gate, &client, initial, s).await })
        };
        let result = self.run_pipeline(shutdown, stop_tasks).await;
        stop_trigger.trigger();
        let _ = prober.await;
        if let Some(t) = admin_task {
            match t.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "admin server stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "admin server task failed"),
                Ok(Ok(())) => {}
            }
        }
        result
    }

    async fn run_pipeline(
        self,
        shutdown: Shutdown,
        stop_tasks: Shutdown,
    ) -> Result<(), WorkerError> {
        let a = &self.args;
        let extra: Vec<(String, String)> = a
            .kafka_properties
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let consumer = Arc::new(source::create_consumer(
            &SourceSettings {
                brokers: &a.brokers,
                group_id: &a.group_id,
                topic: &a.input_topic,
                commit_interval_ms: a.commit_interval.as_millis() as u64,
                extra: &extra,
            },
            tracker.clone(),
            events_tx,
            self.metrics.clone(),
        )?);
        let sink = Sink::new(
            &a.brokers,
            &extra,
            &a.input_topic,
            &a.outcome_topic,
            &a.dlq_topic,
        )?;
        let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stages: Stages {
                client: self.client.clone(),
                import_slots: Arc::new(Semaphore::new(a.max_imports_in_flight)),
                gate: self.gate.clone(),
                shutdown: stop_tasks,
            },
            sink,
            consumer: consumer.clone(),
            topic: a.input_topic.clone(),
            tracker: tracker.clone(),
            progress: Notify::new(),
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

        let window_slots = Arc::new(Semaphore::new(a.max_windows_in_flight));
        let mut window = Window::new(a.window_size, a.window_linger);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut paused = false;
        let mut gate_rx = self.gate.subscribe();
        let mut failure: Option<WorkerError> = None;
        tracing::info!(topic = %a.input_topic, group = %a.group_id, "worker started");

        loop {
            let deadline = window.deadline();
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(reason) = fatal_rx.recv() => {
                    failure = Some(WorkerError::Delivery(reason));
                    break;
                }
                Some(ev) = events_rx.recv() => match ev {
                    RebalanceEvent::Assigned(parts) => {
                        self.readiness.assigned.store(true, Ordering::Relaxed);
                        self.update_rate_share(&consumer, &a.input_topic);
                        if paused {
                            if let Err(e) = source::pause_partitions(&consumer, &a.input_topic, &parts) {
                                tracing::warn!(error = %e, "could not pause newly assigned partitions");
                            }
                        }
                    }
                    RebalanceEvent::Revoked(_) => {
                        let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                        window.retain_partitions(|p| t.epoch(p).is_some());
                        drop(t);
                        self.update_rate_share(&consumer, &a.input_topic);
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    if let Some(w) = window.take(CloseReason::Linger) {
                        dispatch(&shared, &window_slots, &mut tasks, w);
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shared.progress.notified(), if paused => {}
                _ = gate_rx.changed() => {
                    let fault = gate_rx.borrow_and_update().clone();
                    self.metrics.systemic_fault.reset();
                    if let Some(f) = fault {
                        self.metrics.systemic_fault.with_label_values(&[&f.code.to_string()]).set(1);
                    }
                }
                msg = consumer.recv() => match msg {
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
                                if let Some(w) = window.push(rec) {
                                    dispatch(&shared, &window_slots, &mut tasks, w);
                                }
                            }
                            Err(err) => {
                                tracing::warn!(partition = p, offset, reason = %err, "record does not decode; dead-lettering it");
                                let shared = shared.clone();
                                tasks.spawn(async move {
                                    let dl = DeadLetter { stage: Stage::Decode, code: 0, reason: err.to_string(), attempts: 0 };
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
            }
            let want_pause = {
                let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                t.pending() >= a.max_events_in_flight
            } || !self.gate.is_open();
            if want_pause != paused {
                match source::set_paused(&consumer, want_pause) {
                    Ok(()) => {
                        paused = want_pause;
                        self.metrics.paused.set(i64::from(paused));
                        tracing::debug!(
                            paused,
                            "intake {}",
                            if paused { "paused" } else { "resumed" }
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "could not pause/resume partitions"),
                }
            }
        }

        // Shutdown: no more intake. Finish what is in flight (bounded), flush, commit, leave.
        tracing::info!("stopping: draining in-flight windows");
        if let Some(w) = window.take(CloseReason::Flush) {
            dispatch(&shared, &window_slots, &mut tasks, w);
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
            failure = Some(WorkerError::Delivery(reason));
        }
        if let Err(e) = shared.sink.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
        let positions = tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watermarks();
        if !positions.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &positions {
                tpl.add_partition_offset(&a.input_topic, *p, Offset::Offset(*o))?;
            }
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => tracing::info!(?positions, "final offsets committed"),
                Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
            }
        }
        drop(shared);
        // Closing the consumer leaves the group; it blocks while librdkafka does so.
        let consumer = Arc::try_unwrap(consumer).ok();
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!("worker stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Takes this replica's share of the app's rate budget: assigned / total partitions of the
    /// input topic (ARCHITECTURE.md, "Rate limits across replicas").
    fn update_rate_share(&self, consumer: &SourceConsumer, topic: &str) {
        let assigned = consumer.assignment().map(|t| t.count()).unwrap_or(0);
        let total = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        if assigned == 0 || total == 0 {
            return;
        }
        let share = (assigned as f64 / total as f64).min(1.0);
        let chat = &self.args.chat;
        for (api, rate) in [
            (crate::chat::Api::AccountCheck, chat.check_rate),
            (crate::chat::Api::AccountImport, chat.import_rate),
        ] {
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

/// Spawns a window task; it waits for a window slot first.
fn dispatch(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    window: ClosedWindow,
) {
    let m = &shared.metrics;
    let reason = match window.closed_by {
        CloseReason::Full => "full",
        CloseReason::Linger => "linger",
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
    let (shared, slots) = (shared.clone(), slots.clone());
    tasks.spawn(async move {
        let _slot = slots
            .acquire_owned()
            .await
            .expect("the window semaphore is never closed");
        shared.metrics.windows_in_flight.inc();
        process_window(&shared, window).await;
        shared.metrics.windows_in_flight.dec();
    });
}

/// Resolves a window, produces its records, and marks the acknowledged ones done.
async fn process_window(shared: &Shared, window: ClosedWindow) {
    let Some(outcomes) = shared.stages.resolve(&window).await else {
        tracing::info!(
            records = window.records.len(),
            "window abandoned at shutdown during a systemic fault; it will be replayed"
        );
        return;
    };
    let now = SystemTime::now();
    let stamp = rfc3339_millis(now);
    let sends = window
        .records
        .iter()
        .zip(&window.id_of_record)
        .map(|(rec, &id)| {
            let outcome = &outcomes[id];
            let stamp = &stamp;
            async move {
                let sent = shared
                    .sink
                    .send_outcome(&rec.event.user_id, outcome, rec.pos, stamp)
                    .await;
                let dead = match (sent.is_ok(), outcome.failed_stage) {
                    (true, Some(stage)) => {
                        let dl = DeadLetter {
                            stage,
                            code: outcome.error_code,
                            reason: outcome.error_info.clone(),
                            attempts: outcome.attempts,
                        };
                        Some(
                            shared
                                .sink
                                .send_dead_letter(
                                    rec.key.as_deref(),
                                    rec.payload.as_deref(),
                                    rec.pos,
                                    &dl,
                                    stamp,
                                )
                                .await,
                        )
                    }
                    _ => None,
                };
                (sent, dead)
            }
        });
    let results = join_all(sends).await;
    let mut done = Vec::with_capacity(window.records.len());
    for ((rec, &id), (sent, dead)) in window.records.iter().zip(&window.id_of_record).zip(results) {
        let outcome = &outcomes[id];
        match (sent, dead) {
            (Ok(()), None | Some(Ok(()))) => {
                shared
                    .metrics
                    .outcomes
                    .with_label_values(&[outcome.status.as_str()])
                    .inc();
                if let Some(stage) = outcome.failed_stage {
                    let class = if outcome.status == OutcomeStatus::Failed {
                        FailureClass::Permanent
                    } else {
                        FailureClass::Retryable
                    };
                    shared
                        .metrics
                        .events_dead_lettered
                        .with_label_values(&[stage.as_str(), class.as_str()])
                        .inc();
                    tracing::warn!(
                        partition = rec.pos.partition,
                        offset = rec.pos.offset,
                        stage = stage.as_str(),
                        code = outcome.error_code,
                        reason = %outcome.error_info,
                        "account failed; dead-lettered"
                    );
                }
                if let Some(ts) = rec.timestamp_ms {
                    let age_ms = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                        - ts;
                    if age_ms >= 0 {
                        shared
                            .metrics
                            .end_to_end_latency
                            .observe(age_ms as f64 / 1000.0);
                    }
                }
                done.push(rec.pos);
            }
            (Err(e), _) | (_, Some(Err(e))) => {
                tracing::error!(partition = rec.pos.partition, offset = rec.pos.offset, error = %e, "record delivery failed");
                let _ = shared.fatal.send(e.to_string());
            }
        }
    }
    complete(shared, &done);
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
    match shared
        .sink
        .send_dead_letter(key.as_deref(), payload.as_deref(), pos, &dl, &stamp)
        .await
    {
        Ok(()) => {
            shared
                .metrics
                .events_dead_lettered
                .with_label_values(&["decode", FailureClass::Permanent.as_str()])
                .inc();
            complete(shared, &[pos]);
        }
        Err(e) => {
            tracing::error!(partition = pos.partition, offset = pos.offset, error = %e, "dead-letter delivery failed");
            let _ = shared.fatal.send(e.to_string());
        }
    }
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
