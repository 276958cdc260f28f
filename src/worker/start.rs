//! Starting a worker's pipeline: the consumer, the producer and delivery, what the window tasks
//! share, and the reader task. What it builds is a [`Running`], which the intake loop runs and
//! [`super::stop`] takes apart.

use std::sync::{Arc, Mutex};

use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::live::Revocations;
use super::order::UserOrder;
use super::pipeline::Stages;
use super::source::{self, Records};
use super::tasks::{Shared, Tasks};
use super::window::ChecksInFlight;
use super::{Worker, WorkerError};
use crate::chat::Api;
use crate::delivery::sink::Sink;
use crate::delivery::transaction::TxnTiming;
use crate::delivery::{Committable, Delivery, DeliveryError, Parts, Started, Transactions};
use crate::kafka::consumer::{
    create_consumer, ConsumerGauges, RebalanceEvent, SourceConsumer, SourceSettings,
};
use crate::kafka::offsets::OffsetTracker;
use crate::kafka::txn_error::TxnFailure;
use crate::kafka::ConsumerLag;
use crate::shutdown::Shutdown;

/// A started pipeline: what reads, what the tasks share, what delivers, and the loop's inputs.
pub(super) struct Running {
    /// The input consumer, polled by the reader task alone; closed (leaving the group) last.
    pub consumer: Arc<SourceConsumer>,
    /// The producer (transactional in exactly-once mode); flushed at the end.
    pub sink: Arc<Sink>,
    /// The input's done watermarks and their commits (on revocation and at the end).
    pub committable: Committable,
    /// The window and decode tasks.
    pub tasks: Tasks,
    /// Exactly-once: the committer task; it ends once delivery (inside `tasks`) is dropped.
    pub committer: Option<JoinHandle<()>>,
    /// The reader task.
    pub reader: JoinHandle<()>,
    /// Records from the reader, one at a time.
    pub records: Records,
    /// Rebalance events from the consumer's callbacks.
    pub rebalances: mpsc::UnboundedReceiver<RebalanceEvent>,
    /// Delivery failures that stop the worker.
    pub failures: mpsc::UnboundedReceiver<DeliveryError>,
}

/// Starts `worker`'s pipeline. `shutdown` is the worker's own: windows waiting at a closed
/// systemic gate give up when it fires.
pub(super) async fn start(worker: &Worker, shutdown: &Shutdown) -> Result<Running, WorkerError> {
    let a = &worker.args;
    // Each client takes the --kafka-property settings of its kind (librdkafka warns about the
    // others and ignores them).
    let consumer_extra = a.kafka.consumer_properties();
    let producer_extra = a.kafka.producer_properties();
    let transactional_id = a.resolved_transactional_id();
    let exactly_once = transactional_id.is_some();
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let (events, rebalances) = mpsc::unbounded_channel();
    let consumer = open_consumer(
        worker,
        &consumer_extra,
        tracker.clone(),
        events,
        exactly_once,
    )?;
    let consumer = Arc::new(consumer);
    let sink = Arc::new(Sink::new(
        &a.kafka.brokers,
        &producer_extra,
        &a.kafka.input_topic,
        &a.outcome_topic,
        &a.kafka.dlq_topic,
        transactional_id.as_deref(),
    )?);
    let delivery = start_delivery(
        worker,
        &producer_extra,
        transactional_id.as_deref(),
        &consumer,
        &sink,
        tracker,
    );
    let Started {
        delivery,
        committable,
        failures,
        committer,
    } = delivery.await?;
    let tasks = Tasks::new(Arc::new(shared(worker, delivery, shutdown)));
    first_gauges(worker);
    // From here on the rebalance callback waits for the intake loop to drain revoked partitions.
    consumer.context().set_drain(Some(a.drain_timeout));
    // The consumer is polled by the reader task alone, so a rebalance callback that waits for
    // the intake loop never waits on itself. One batch of room: see read_records.
    let (records_tx, records) = mpsc::channel(1);
    let reader = tokio::spawn(source::read_records(consumer.clone(), records_tx));
    tracing::info!(topic = %a.kafka.input_topic, group = %a.kafka.group_id, exactly_once, "worker started");
    Ok(Running {
        consumer,
        sink,
        committable,
        tasks,
        committer,
        reader,
        records: Records::new(records),
        rebalances,
        failures,
    })
}

/// Creates the input consumer and subscribes it; its callbacks send `events` and keep the
/// worker's assignment, offset and lag gauges. `extra`: the consumer's `--kafka-property` settings.
fn open_consumer(
    worker: &Worker,
    extra: &[(String, String)],
    tracker: Arc<Mutex<OffsetTracker>>,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    exactly_once: bool,
) -> Result<SourceConsumer, WorkerError> {
    let (a, m) = (&worker.args, &worker.metrics);
    let settings = SourceSettings {
        brokers: &a.kafka.brokers,
        group_id: &a.kafka.group_id,
        topic: &a.kafka.input_topic,
        commit_interval_ms: a.commit_interval.as_millis() as u64,
        extra,
        group_protocol: a.kafka.group_protocol,
        exactly_once,
    };
    let gauges = ConsumerGauges {
        assigned_partitions: m.assigned_partitions.clone(),
        events_in_flight: m.events_in_flight.clone(),
        committed_offset: m.committed_offset.clone(),
        lag: ConsumerLag::new(m.consumer_lag.clone()),
    };
    Ok(create_consumer(&settings, tracker, events, gauges)?)
}

/// Starts delivery over `consumer` and `sink`; with a `transactional_id`, exactly-once: fences
/// an older incarnation of this replica and aborts its open transaction first. `extra`: the
/// producer's `--kafka-property` settings (the transaction timeouts come from them).
async fn start_delivery(
    worker: &Worker,
    extra: &[(String, String)],
    transactional_id: Option<&str>,
    consumer: &Arc<SourceConsumer>,
    sink: &Arc<Sink>,
    tracker: Arc<Mutex<OffsetTracker>>,
) -> Result<Started, TxnFailure> {
    let a = &worker.args;
    let parts = Parts {
        sink: sink.clone(),
        consumer: consumer.clone(),
        tracker,
        topic: a.kafka.input_topic.clone(),
        metrics: worker.metrics.clone(),
    };
    let transactions = transactional_id.map(|_| Transactions {
        linger: a.transaction_linger,
        timing: TxnTiming::from_properties(extra),
        queue: a.max_windows_in_flight * 2,
    });
    let started = Delivery::start(parts, transactions).await?;
    if let Some(id) = transactional_id {
        tracing::info!(transactional_id = %id, "exactly-once delivery: transactions initialised");
    }
    Ok(started)
}

/// What the window and decode tasks share.
fn shared(worker: &Worker, delivery: Arc<Delivery>, shutdown: &Shutdown) -> Shared {
    let a = &worker.args;
    Shared {
        stages: Stages {
            client: worker.client.clone(),
            import: worker.import,
            import_slots: Arc::new(Semaphore::new(a.max_imports_in_flight)),
            gate: worker.gate.clone(),
            // The worker's own shutdown, not `stop_tasks` (fired only after the pipeline
            // ended): windows waiting at a closed systemic gate cannot drain, so they are
            // abandoned as soon as shutdown begins (offsets uncommitted, replayed later)
            // instead of holding every stop during a fault for the whole --drain-timeout.
            shutdown: shutdown.clone(),
            dry_run: a.kinds.dry_run,
        },
        delivery,
        window_slots: Arc::new(Semaphore::new(a.max_windows_in_flight)),
        checks: Arc::new(ChecksInFlight::default()),
        metrics: worker.metrics.clone(),
        revocations: Revocations::new(),
        order: Arc::new(UserOrder::default()),
    }
}

/// The gauges that have a value before the first call: the limiters' ceilings, and the admin
/// UserSig's expiry (generating the UserSig now).
fn first_gauges(worker: &Worker) {
    for api in [Api::AccountCheck, Api::AccountImport] {
        if let Some(l) = worker.client.limiters().for_api(api) {
            let ceiling = l.ceiling().unwrap_or(0.0);
            worker
                .metrics
                .limiter_ceiling
                .with_label_values(&[api.name()])
                .set(ceiling);
        }
    }
    let _ = worker.client.usersig_expires_at();
}
