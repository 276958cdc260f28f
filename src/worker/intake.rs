//! The intake loop: reads records, decodes them, fills the open window and lets closed windows go
//! as tasks; drains revoked partitions while the rebalance callback waits; keeps the flow
//! (reading, held at the in-flight bound, paused; see [`super::flow`]).
//!
//! Its state is [`Intake`]. [`Intake::next_event`] only waits for what comes first and says what
//! it was; each event then has one method, and after every one the flow is decided again, in one
//! place ([`Intake::decide_flow`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult};
use tokio::sync::watch;
use tokio::time::Instant;

use super::event::Decoded;
use super::flow::{Flow, Load};
use super::revoke;
use super::schemas::HeldForSchema;
use super::source::{self, Polled};
use super::start::Running;
use super::stop::Stopping;
use super::window::{CloseReason, CloseRule, Conditions, Plan, Window};
use super::{Worker, WorkerError};
use crate::chat::Api;
use crate::delivery::DeliveryError;
use crate::domain::{InputRecord, SourcePos};
use crate::kafka::consumer::RebalanceEvent;
use crate::limiter::Limiter;
use crate::shutdown::Shutdown;
use crate::systemic::Fault;

/// The intake loop's state.
pub(super) struct Intake<'w> {
    /// Settings, decoder, gate, metrics and rate share of the worker this loop runs for.
    worker: &'w Worker,
    /// The started pipeline: consumer, tasks, delivery, and the loop's inputs.
    run: Running,
    /// The open window.
    window: Window,
    /// When the open window closes before its linger.
    close_rule: CloseRule,
    /// The check limiter, whose next token the close rule waits for.
    check_limiter: Option<&'w Limiter>,
    /// Reading, held at the bound, or paused.
    flow: Flow,
    /// Partitions drained for a revocation that has not gone through yet: a record of theirs
    /// read meanwhile is no longer ours to process.
    revoking: Vec<i32>,
    /// Partition count of the input topic, as last read; see `Worker::update_rate_share`.
    partition_total: usize,
    /// The systemic gate's changes.
    gate: watch::Receiver<Option<Fault>>,
    /// Whether the gate is closed as far as the metrics know: a closing counts once.
    fault_in_force: bool,
    /// A record whose writer schema is being looked up: no other record is taken meanwhile.
    held_for_schema: Option<HeldForSchema>,
}

/// What woke the loop.
enum Event {
    /// The worker is asked to stop.
    Shutdown,
    /// Delivery cannot go on.
    Failure(DeliveryError),
    /// The consumer's partitions change.
    Rebalance(RebalanceEvent),
    /// The open window's linger passed, or waiting buys it nothing more.
    WindowDue(CloseReason),
    /// A record (or a consumer error) from the reader.
    Record(KafkaResult<Polled>),
    /// The systemic gate opened or closed.
    GateChanged,
    /// A window or decode task ended.
    TaskEnded,
    /// Records completed: held or paused intake may go on.
    DeliveryProgressed,
    /// A check answered: the open window may close now.
    CheckAnswered,
    /// Intake has been held for `PAUSE_AFTER`.
    PauseDue,
    /// The schema a held record names was looked up.
    SchemaLookedUp,
}

impl<'w> Intake<'w> {
    /// The loop of `worker` over its started pipeline, reading, with an empty window.
    pub fn new(worker: &'w Worker, run: Running) -> Intake<'w> {
        let a = &worker.args;
        Intake {
            worker,
            run,
            window: Window::new(a.window_size, a.window_linger),
            close_rule: CloseRule::default(),
            check_limiter: worker.client.limiters().for_api(Api::AccountCheck),
            flow: Flow::Reading,
            revoking: Vec::new(),
            partition_total: 0,
            gate: worker.gate.subscribe(),
            fault_in_force: false,
            held_for_schema: None,
        }
    }

    /// Runs until `shutdown` or a delivery failure; hands over what is left to stop.
    pub async fn run(mut self, shutdown: &Shutdown) -> Stopping {
        let failure = loop {
            match self.next_event(shutdown).await {
                Event::Shutdown => break None,
                Event::Failure(e) => break Some(e.into()),
                Event::Record(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    break Some(self.fatal_consumer_error(e))
                }
                Event::Record(record) => self.on_record(record).await,
                Event::Rebalance(event) => self.on_rebalance(event).await,
                Event::WindowDue(reason) => self.on_window_due(reason),
                Event::GateChanged => self.on_gate_changed(),
                Event::SchemaLookedUp => self.on_schema_looked_up(),
                // Nothing to do but decide the flow, and the close plan, again.
                Event::TaskEnded
                | Event::DeliveryProgressed
                | Event::CheckAnswered
                | Event::PauseDue => {}
            }
            self.decide_flow();
        };
        Stopping {
            run: self.run,
            window: self.window,
            failure,
        }
    }

    /// Waits for whatever comes first, in this order of precedence.
    async fn next_event(&mut self, shutdown: &Shutdown) -> Event {
        let plan = self.close_plan();
        let linger_at = plan.map(|p| p.linger_at);
        let idle_at = plan.and_then(|p| p.idle_at);
        let pause_at = self.flow.pause_at();
        // Checks at the close rule's bound: the open window may close when one answers.
        let check_may_close = plan.is_some() && idle_at.is_none() && self.flow == Flow::Reading;
        let takes_records = self.flow.takes_records() && self.held_for_schema.is_none();
        let held = self.held_for_schema.as_mut();
        let holding = held.is_some();
        let (run, flow) = (&mut self.run, self.flow);
        let (tasks, shared) = (&mut run.tasks.set, &run.tasks.shared);
        let at = |t: Option<Instant>| tokio::time::sleep_until(t.unwrap_or_else(Instant::now));
        tokio::select! {
            biased;
            _ = shutdown.wait() => Event::Shutdown,
            Some(e) = run.failures.recv() => Event::Failure(e),
            Some(event) = run.rebalances.recv() => Event::Rebalance(event),
            _ = at(linger_at), if linger_at.is_some() => Event::WindowDue(CloseReason::Linger),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => Event::TaskEnded,
            _ = shared.delivery.progressed(), if flow != Flow::Reading => Event::DeliveryProgressed,
            _ = at(pause_at), if pause_at.is_some() => Event::PauseDue,
            _ = self.gate.changed() => Event::GateChanged,
            () = schema_answered(held), if holding => Event::SchemaLookedUp,
            Some(record) = run.records.recv(), if takes_records => Event::Record(record),
            // After records (biased): a record that is ready joins the window instead.
            _ = at(idle_at), if idle_at.is_some() => Event::WindowDue(CloseReason::Idle),
            _ = shared.checks.answered(), if check_may_close => Event::CheckAnswered,
        }
    }

    /// When the open window closes if nothing else happens first (`None` while it is empty).
    fn close_plan(&self) -> Option<Plan> {
        let conditions = Conditions {
            reading: self.flow == Flow::Reading,
            checks_in_flight: self.run.tasks.shared.checks.get(),
        };
        let limiter = self.check_limiter;
        let token_wait = || limiter.map_or(Duration::ZERO, |l| l.time_to_token());
        self.close_rule.plan(&self.window, conditions, token_wait)
    }

    /// A record, or a consumer error.
    async fn on_record(&mut self, record: KafkaResult<Polled>) {
        match record {
            Ok(record) => {
                self.worker.metrics.events_consumed.inc();
                self.take(record);
            }
            Err(e) => {
                self.worker.metrics.consumer_errors.inc();
                tracing::warn!(error = %e, "consumer error");
                // Errors can repeat quickly while a broker is down; don't spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The consumer's fatal error (librdkafka raises one, for instance, for a consumer-protocol
    /// member whose group the coordinator no longer knows: `GROUP_ID_NOT_FOUND`): the consumer
    /// cannot go on, so neither can the worker. It stops with the error, committing nothing
    /// further; a restart joins as a new member from the committed offsets.
    fn fatal_consumer_error(&self, e: KafkaError) -> WorkerError {
        self.worker.metrics.consumer_errors.inc();
        let reason = self.run.consumer.client().fatal_error();
        let reason = reason.map_or_else(String::new, |(_, r)| r);
        tracing::error!(error = %e, %reason, "fatal consumer error: the consumer cannot go on; stopping");
        WorkerError::Kafka(e)
    }

    /// A record read: into the open window, only marked done when it asks nothing (a change that
    /// changes nothing the worker keeps in sync), or to the dead-letter topic when it does not decode; held while the
    /// schema it names is looked up.
    fn take(&mut self, record: Polled) {
        let decoded = self.worker.decoder.decode_record(record.payload.as_deref());
        if let Ok(Decoded::AwaitsSchema(id)) = decoded {
            self.hold_for_schema(record, id);
            return;
        }
        let Polled {
            partition,
            offset,
            key,
            payload,
            timestamp_ms,
        } = record;
        let Some(pos) = self.position(partition, offset) else {
            return;
        };
        match decoded {
            Ok(Decoded::AwaitsSchema(_)) => unreachable!("held above"),
            Ok(Decoded::Skipped(reason)) => {
                tracing::debug!(
                    partition,
                    offset,
                    reason = reason.as_str(),
                    "record skipped"
                );
                self.run.tasks.skip(pos, reason);
            }
            Ok(Decoded::Event(event)) => {
                self.worker
                    .metrics
                    .events_by_kind
                    .with_label_values(&[event.kind.as_str()])
                    .inc();
                let record = InputRecord {
                    pos,
                    event,
                    key,
                    payload,
                    timestamp_ms,
                };
                if let Some(closed) = self.window.push(record) {
                    self.run.tasks.window(closed);
                }
            }
            Err(err) => {
                let topic = &self.worker.args.kafka.input_topic;
                tracing::warn!(topic = %topic, partition, offset, reason = %err, "record does not decode; dead-lettering it");
                self.run.tasks.dead_letter(key, payload, pos, err);
            }
        }
    }

    /// Holds `record` until schema `id` is looked up (a registry format's first record naming it).
    fn hold_for_schema(&mut self, record: Polled, id: u32) {
        let w = self.worker;
        let lookups = w
            .schemas
            .as_ref()
            .expect("a decoder that awaits schemas has lookups");
        tracing::debug!(schema_id = id, "looking up a writer schema");
        let initial = w.args.systemic_probe_interval;
        self.held_for_schema = Some(lookups.hold(record, id, w.gate.clone(), initial));
    }

    /// The held record's schema is in the cache: the record is taken as if just read.
    fn on_schema_looked_up(&mut self) {
        if let Some(held) = self.held_for_schema.take() {
            self.take(held.record);
        }
    }

    /// The position of a record just read, with its partition's assignment epoch, counted as
    /// read; `None` (skipped) when its partition is being revoked or no longer assigned.
    fn position(&mut self, partition: i32, offset: i64) -> Option<SourcePos> {
        if self.revoking.contains(&partition) {
            tracing::debug!(
                partition,
                offset,
                "record of a partition being revoked; skipped"
            );
            return None;
        }
        let mut t = self.run.committable.tracker();
        match t.epoch(partition) {
            Some(epoch) if t.read(partition, epoch, offset) => {
                self.worker.metrics.events_in_flight.set(t.pending() as i64);
                Some(SourcePos {
                    partition,
                    offset,
                    epoch,
                })
            }
            _ => {
                tracing::debug!(
                    partition,
                    offset,
                    "record of a partition not assigned any more; skipped"
                );
                None
            }
        }
    }

    /// Partitions assigned, asked to drain before they are revoked, or revoked.
    async fn on_rebalance(&mut self, event: RebalanceEvent) {
        match event {
            RebalanceEvent::Assigned(partitions) => self.on_assigned(&partitions),
            RebalanceEvent::Revoking { partitions, ack } => {
                let run = &self.run;
                let timeout = self.worker.args.drain_timeout;
                let (shared, window) = (&run.tasks.shared, &mut self.window);
                revoke::drain(
                    shared,
                    window,
                    &run.committable,
                    &run.consumer,
                    &partitions,
                    timeout,
                )
                .await;
                self.revoking.extend(&partitions);
                let _ = ack.try_send(());
            }
            RebalanceEvent::Revoked(partitions) => self.on_revoked(&partitions),
        }
    }

    /// Newly assigned `partitions`: ready, a new rate share, and paused if intake is.
    fn on_assigned(&mut self, partitions: &[i32]) {
        self.revoking.retain(|p| !partitions.contains(p));
        self.worker
            .readiness
            .assigned
            .store(true, Ordering::Relaxed);
        self.update_rate_share();
        if self.flow.paused() {
            let topic = &self.worker.args.kafka.input_topic;
            if let Err(e) = source::pause_partitions(&self.run.consumer, topic, partitions) {
                tracing::warn!(error = %e, "could not pause newly assigned partitions");
            }
        }
    }

    /// Revoked `partitions`: their records leave the open window; a new rate share.
    fn on_revoked(&mut self, partitions: &[i32]) {
        self.revoking.retain(|p| !partitions.contains(p));
        self.run.tasks.shared.revocations.end(partitions);
        // The drain already took the revoked partitions' records out of the window; this catches
        // records of a revocation it did not see (one that came before the loop ran).
        let t = self.run.committable.tracker();
        self.window.retain_partitions(|p| t.epoch(p).is_some());
        drop(t);
        self.update_rate_share();
    }

    fn update_rate_share(&mut self) {
        let topic = &self.worker.args.kafka.input_topic;
        let total = &mut self.partition_total;
        self.worker
            .update_rate_share(&self.run.consumer, topic, total);
    }

    /// The open window's linger passed, or it is idle (see [`CloseRule`]).
    fn on_window_due(&mut self, reason: CloseReason) {
        if let Some(closed) = self.window.take(reason) {
            self.run.tasks.window(closed);
        }
    }

    /// The gate opened or closed: the systemic-fault metrics (a closing counts once).
    fn on_gate_changed(&mut self) {
        let fault = self.gate.borrow_and_update().clone();
        let m = &self.worker.metrics;
        m.systemic_fault.reset();
        match fault {
            Some(f) => {
                let label = f.label();
                m.systemic_fault.with_label_values(&[&label]).set(1);
                if !self.fault_in_force {
                    m.systemic_faults.with_label_values(&[&label]).inc();
                }
                self.fault_in_force = true;
            }
            None => self.fault_in_force = false,
        }
    }

    /// Decides the flow after an event ([`Flow::next`]) and applies it.
    fn decide_flow(&mut self) {
        let a = &self.worker.args;
        let load = Load {
            pending: self.run.committable.pending(),
            bound: a.max_events_in_flight,
            window_size: a.window_size,
            gate_open: self.worker.gate.is_open(),
        };
        let wanted = self.flow.next(&load, Instant::now());
        self.flow = self.apply(wanted);
        // Intake is held either way: by not reading, or by pausing.
        let held = self.flow != Flow::Reading;
        self.worker.metrics.paused.set(i64::from(held));
    }

    /// Pauses or resumes the partitions when `wanted` differs from the flow in that. Returns the
    /// flow as it now stands: `wanted`, or, when pausing or resuming failed, `wanted` with the
    /// partitions as they were (tried again after the next event).
    fn apply(&self, wanted: Flow) -> Flow {
        let paused = wanted.paused();
        if paused == self.flow.paused() {
            return wanted;
        }
        match source::set_paused(&self.run.consumer, paused) {
            Ok(()) => {
                let what = if paused { "paused" } else { "resumed" };
                tracing::debug!(paused, "intake {what}");
                wanted
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not pause/resume partitions");
                Flow::of(wanted.held_since(), !paused)
            }
        }
    }
}

/// Waits for the held record's schema lookup (never, without one: the branch is disabled then).
async fn schema_answered(held: Option<&mut HeldForSchema>) {
    match held {
        Some(h) => h.answered().await,
        None => std::future::pending().await,
    }
}
