//! account-sync: makes sure every signed-up user has a Tencent Cloud Chat account.
//!
//! Upstream services publish one event per signup to Kafka. The worker groups UserIDs into
//! windows of up to 100, asks `account_check` which are imported, calls `account_import` for the
//! others — all under token-bucket limits — and writes one outcome record per event, plus a
//! dead-letter record for every failure. Profile updates and deletions of the same accounts can
//! come on the same topic (event kinds), each user's in order. The design is in `docs/ARCHITECTURE.md`, and the vendor
//! facts it relies on (endpoints, limits, error codes, UserSig) in `docs/chat-api.md`.
//!
//! # Layout
//!
//! ```text
//! worker/      account-sync run: Worker (mod.rs); its life: start.rs, intake.rs (the loop, one
//!              method per event), flow.rs (reading / held / paused), stop.rs; tasks.rs (window
//!              tasks), revoke.rs; then the stages in the order data flows: source.rs (the reader
//!              task), event.rs (decode; envelope.rs the Debezium change events, kinds.rs event
//!              kinds, schemas.rs the registry formats' schemas), window.rs, order.rs (order per
//!              user across windows), pipeline.rs (check, import and delete)
//! delivery/    records out → offsets committable → committed: sink.rs (record formats, producer),
//!              outcomes.rs, commit.rs, transaction.rs (exactly-once)
//! kafka/       below the worker and delivery: consumer.rs (the input consumer, its callbacks),
//!              offsets.rs (done watermarks), txn_error.rs (librdkafka's transaction errors)
//! chat/        the Chat REST client: UserSig, API types, answers read and matched to the request,
//!              error classes, retries, outages, domains
//! http.rs      HTTP response bodies read with a bound (every body the worker fetches)
//! registry/    the Schema Registry client: wire.rs (the framing), config.rs, client.rs (schemas
//!              by id, references resolved)
//! observe/     metrics.rs (the metrics table), declare.rs, admin.rs (/metrics, /healthz, /readyz)
//! domain.rs    the vocabulary every stage shares: positions, records, outcomes, stages, classes
//! config.rs    the settings of `run`    limiter.rs  token buckets    systemic.rs  the gate, prober
//! budget/      the replicas' shares of the app's rate budget, by demand, through a coordination topic
//! backoff.rs   the one backoff policy   shutdown.rs the stop signal  progress.rs  progress output
//! parse.rs     durations and topic names, as every command's settings read them
//! dlq/ backfill/ doctor/                the other production commands
//! devtools/    not for production: the Chat API emulator, the embedded Kafka, demo and bench
//! ```
//!
//! No import circles: from the bottom up, domain, limiter, backoff, shutdown, parse and kafka;
//! chat and registry; systemic; observe; delivery and budget; worker; config; the commands (see
//! `docs/ARCHITECTURE.md`, "Code layout").
//!
//! # Modules
//!
//! - [`worker`]: [`worker::Worker`], `account-sync run`: started, run by the intake loop, stopped;
//!   its stages [`worker::source`] (the reader task, the one poller of the consumer, and
//!   pause/resume), [`worker::event`] (payload → [`worker::event::AccountEvent`], or a decode
//!   error that becomes a dead letter), [`worker::window`] (up to 100 distinct UserIDs; closed
//!   when full, when waiting buys nothing ([`worker::window::CloseRule`]), or at the linger time)
//!   and the check and import stages.
//! - [`delivery`]: records out → offsets committable → committed, in either delivery mode: the
//!   record formats and the producer ([`delivery::sink`]) and exactly-once transactions
//!   ([`delivery::transaction`]).
//! - [`kafka`]: what the worker, delivery and the commands share about Kafka: the input consumer
//!   and its rebalance events ([`kafka::consumer`]), the done watermarks ([`kafka::offsets`]),
//!   librdkafka's transaction error contract ([`kafka::txn_error`]).
//! - [`domain`]: the vocabulary every stage shares: source positions, input records, outcomes,
//!   stages and failure classes.
//! - [`chat`]: the Chat REST client: UserSig, API types, error classes, retries, the outage
//!   detector, primary/backup domains, HTTP.
//! - [`registry`]: the Schema Registry client: the Confluent wire format, writer schemas by id
//!   with their references, the registry's failure classes.
//! - [`limiter`]: token buckets with a changeable rate (AIMD on frequency-limit answers).
//! - [`budget`]: the replicas' shares of the app's rate budget, by demand, agreed through a
//!   compacted coordination topic (the partition share as the fallback).
//! - [`backoff`]: the one backoff policy of the API retries, the prober and the transactions.
//! - [`systemic`]: the gate that pauses everything during a systemic fault or an outage, and its
//!   prober.
//! - [`observe`]: Prometheus metrics, declared in one table ([`observe::metrics::DECLARED`]),
//!   and the admin endpoints (`/metrics`, `/healthz`, `/readyz`).
//! - [`config`]: every setting, with `ACCOUNT_SYNC_*` environment variables and validation.
//! - [`shutdown`]: the shutdown signal the worker takes from its caller.
//! - [`dlq`]: `account-sync dlq replay`, dead letters back to the input topic.
//! - [`backfill`]: `account-sync backfill FILE`, a one-off migration from a file through the same
//!   stages, without Kafka.
//! - [`doctor`]: `account-sync doctor`, checks a deployment's settings, Kafka and the Chat API.
//! - `devtools`: the tools around the worker, not part of it: the Chat API emulator, the
//!   embedded Kafka, `account-sync demo` and `account-sync bench` (cargo feature `devtools`, on by
//!   default: the binary, the integration tests and the benches use it).

pub mod backfill;
pub(crate) mod backoff;
pub mod budget;
pub mod chat;
pub mod config;
pub mod delivery;
#[cfg(feature = "devtools")]
pub mod devtools;
pub mod dlq;
pub mod doctor;
pub mod domain;
mod http;
pub mod kafka;
pub mod limiter;
pub mod observe;
pub(crate) mod parse;
mod progress;
pub mod registry;
pub mod shutdown;
pub(crate) mod systemic;
pub mod worker;
