//! The worker, `account-sync run`: source → decode → window → check/import → delivery, wired
//! together, in three parts of its life:
//!
//! - [`start`]: the consumer, the producer and delivery, what the window tasks share, the reader
//!   task;
//! - [`intake`]: the intake loop, until shutdown. It reads records, decodes them ([`event`]; a
//!   change event's kind and row are found by [`envelope`], a plain event's kind by [`kinds`],
//!   and a record that asks nothing is only marked done), fills the open window, closes it when
//!   the [`CloseRule`](window::CloseRule) says (full, idle, its linger, or a deleted account
//!   coming back) and lets closed windows go as tasks ([`tasks`]), each after the earlier windows
//!   of its users ([`order`]), at most `--max-windows-in-flight` resolved at once. Its flow ([`flow`]): reading; held at `--max-events-in-flight` records read and not yet
//!   done, until a window's worth of room is free; paused (every assigned partition) after 5 s
//!   held or while the systemic gate is closed, the consumer still polled so that it stays in its
//!   group. Each window task resolves its users and, as soon as a user's outcome is decided, hands
//!   its records to [`Delivery`](crate::delivery::Delivery), which delivers them and makes their
//!   offsets committable in either delivery mode;
//! - [`stop`]: no more intake, the windows in flight finished (bounded), delivery flushed, the
//!   final commit, leaving the group.
//!
//! Rebalances arrive as messages. The consumer is polled by a reader task alone ([`source`]), so
//! the rebalance callback runs there; on revocation it sends
//! [`RebalanceEvent::Revoking`](crate::kafka::consumer::RebalanceEvent) and waits. The loop then
//! takes the revoked partitions' records out of the open window and processes them at once, waits
//! (up to `--drain-timeout`) until every in-flight record of those partitions is done, commits
//! their offsets and acks; only then are the partitions released (see [`revoke`]).
//!
//! Here: [`Worker`] (settings → a worker; run) and the rate share it takes on every rebalance.

pub mod envelope;
pub mod event;
mod flow;
mod intake;
pub mod kinds;
pub(crate) mod live;
pub(crate) mod order;
pub(crate) mod pipeline;
mod revoke;
pub mod schemas;
pub(crate) mod source;
mod start;
mod stop;
mod tasks;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::sync::watch;

use crate::chat::client::CallObserver;
use crate::chat::ChatClient;
use crate::config::WorkerArgs;
use crate::delivery::DeliveryError;
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::txn_error::TxnFailure;
use crate::observe::admin::Readiness;
use crate::observe::metrics::{Metrics, MetricsObserver};
use crate::registry::{RegistryClient, SchemaKind};
use crate::shutdown::Shutdown;
use crate::systemic::{self, SystemicGate};
use event::{Decoder, InputFormat};
use intake::Intake;
use pipeline::ImportPlan;
use schemas::{SchemaCache, SchemaLookups};

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

/// A worker built from its settings, ready to run.
pub struct Worker {
    /// The settings of `run`, validated.
    args: WorkerArgs,
    /// Payload → AccountEvent or a skip (built here, so a bad pointer fails at start).
    decoder: Decoder,
    /// Single or batch import (validated here, so a bad --batch-min fails at start).
    import: ImportPlan,
    /// The registry formats' schema lookups: the registry, and the cache the decoder reads.
    schemas: Option<SchemaLookups>,
    /// The Chat API client, with the limiters inside.
    client: ChatClient,
    /// This worker's metrics, in a registry of its own (several workers can share a process).
    metrics: Arc<Metrics>,
    /// Closed during a systemic fault or an outage: intake pauses, windows wait at it.
    gate: Arc<SystemicGate>,
    /// What `/readyz` answers from: partitions assigned, and the gate.
    readiness: Arc<Readiness>,
    /// The fraction of the input partitions this worker owns, for the budget coordinator (its
    /// fallback); `None` before the first assignment.
    partition_share: watch::Sender<Option<f64>>,
}

impl Worker {
    /// Validates the settings and builds the API client. Fails with a message naming the setting.
    pub fn new(args: WorkerArgs) -> Result<Self, WorkerError> {
        args.validate().map_err(WorkerError::Config)?;
        let mut decoder = args.decoder().map_err(WorkerError::Config)?;
        let schemas = match args.registry_config().map_err(WorkerError::Config)? {
            Some(config) => {
                let kind = match args.decoder_format() {
                    InputFormat::JsonSchema => SchemaKind::Json,
                    InputFormat::Protobuf => SchemaKind::Protobuf,
                    _ => SchemaKind::Avro,
                };
                let cache = Arc::new(SchemaCache::new(kind));
                decoder = decoder.with_schemas(cache.clone());
                let client = RegistryClient::new(&config).map_err(WorkerError::Config)?;
                Some(SchemaLookups { client, cache })
            }
            None => None,
        };
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
            schemas,
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
        let limiters = [
            l.check.clone(),
            l.import.clone(),
            l.multi_import.clone(),
            l.delete.clone(),
        ];
        coordinator::hold_until_first_split(&budget, &limiters);
        // Its producer (and admin client) and its reader each take the --kafka-property
        // settings of their kind.
        let kafka = &self.args.kafka;
        let config = |props: Vec<(String, String)>| {
            let mut client = rdkafka::ClientConfig::new();
            for (k, v) in props {
                client.set(k, v);
            }
            client.set("bootstrap.servers", &kafka.brokers);
            client
        };
        Some(coordinator::CoordinatorSetup {
            member: crate::budget::member_id(),
            topic: b.topic_for(&self.args.kafka.group_id),
            interval: b.interval,
            lease: b.lease,
            create_topic: !b.no_create,
            budget,
            limiters,
            partition_share: self.partition_share.subscribe(),
            producer_client: config(kafka.producer_properties()),
            consumer_client: config(kafka.consumer_properties()),
            metrics: self.metrics.clone(),
        })
    }

    /// The pipeline's life: start it, run the intake loop until `shutdown` (or a delivery
    /// failure), stop it.
    async fn run_pipeline(&self, shutdown: Shutdown) -> Result<(), WorkerError> {
        let running = start::start(self, &shutdown).await?;
        let stopping = Intake::new(self, running).run(&shutdown).await;
        stopping.stop(self.args.drain_timeout).await
    }

    /// Takes this replica's share of the app's rate budget: assigned / total partitions of the
    /// input topic (`docs/ARCHITECTURE.md`, "Rate limits across replicas").
    /// `known_total` is the topic's partition count from the last metadata answer: a rebalance
    /// during a broker outage still recomputes the share from it instead of keeping a share that
    /// no longer matches the assignment.
    fn update_rate_share(&self, consumer: &SourceConsumer, topic: &str, known_total: &mut usize) {
        let assigned = consumer.assignment().map(|t| t.count()).unwrap_or(0);
        let total = partition_count(consumer, topic, known_total);
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
        self.set_ceilings(share);
        tracing::info!(assigned, total, share, "rate budget share updated");
    }

    /// Sets each limited API's ceiling to `share` of its budget (`--budget-split partitions`).
    fn set_ceilings(&self, share: f64) {
        for (api, rate) in self.args.chat.budget() {
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
    }
}

/// The input topic's partition count from a metadata request, kept in `known_total`; the last
/// known count when the request fails.
fn partition_count(consumer: &SourceConsumer, topic: &str, known_total: &mut usize) -> usize {
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
    match fetched {
        Ok(n) => *known_total = n,
        Err(e) => tracing::warn!(
            error = %e,
            known_total = *known_total,
            "could not read the input topic's partition count; rate share uses the last known one"
        ),
    }
    *known_total
}
