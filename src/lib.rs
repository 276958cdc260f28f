//! account-sync: makes sure every signed-up user has a Tencent Cloud Chat account.
//!
//! Upstream services publish one event per signup to Kafka. The worker groups UserIDs into
//! windows of up to 100, asks `account_check` which are imported, calls `account_import` for the
//! others — all under token-bucket limits — and writes one outcome record per event, plus a
//! dead-letter record for every failure. The design is in `docs/ARCHITECTURE.md`, and the vendor
//! facts it relies on (endpoints, limits, error codes, UserSig) in `docs/chat-api.md`.
//!
//! # Module map, in the order data flows
//!
//! - [`domain`]: the vocabulary every stage shares: source positions, input records, outcomes,
//!   stages and failure classes.
//! - [`source`]: the Kafka consumer (consumer group, rebalance events, pause/resume).
//! - [`event`]: payload → [`event::SignupEvent`], or a decode error that becomes a dead letter.
//! - [`window`]: up to 100 distinct UserIDs; closed when full, when waiting buys nothing
//!   ([`window::CloseRule`]), or at the linger time.
//! - [`pipeline`]: the check and import stages, for one window.
//! - [`limiter`]: token buckets with a changeable rate (AIMD on frequency-limit answers).
//! - [`backoff`]: the one backoff policy of the API retries, the prober and the transactions.
//! - [`chat`]: the Chat REST client: UserSig, API types, error classes, retries, the outage
//!   detector, primary/backup domains, HTTP.
//! - [`sink`]: outcome and dead-letter record formats, and producing them.
//! - [`delivery`]: records out → offsets committable → committed, in either delivery mode: the
//!   done watermarks ([`delivery::offsets`]) and exactly-once transactions
//!   ([`delivery::transaction`]).
//! - [`systemic`]: the gate that pauses everything during a systemic fault or an outage, and its
//!   prober.
//! - [`worker`]: all of the above wired together; `account-sync run`.
//! - [`metrics`]: Prometheus metrics and the admin endpoints (`/metrics`, `/healthz`, `/readyz`).
//! - [`config`]: every setting, with `ACCOUNT_SYNC_*` environment variables and validation.
//! - [`shutdown`]: the shutdown signal the worker takes from its caller.
//! - [`emulator`]: a faithful local Chat API for tests, the demo and benchmarks.
//! - [`dev`]: the embedded Kafka (librdkafka's mock cluster) for local work and tests.
//! - [`dlq`]: `account-sync dlq replay`, dead letters back to the input topic.
//! - [`backfill`]: `account-sync backfill FILE`, a one-off migration from a file through the same
//!   stages, without Kafka.
//! - [`doctor`]: `account-sync doctor`, checks a deployment's settings, Kafka and the Chat API.
//! - [`demo`]: `account-sync demo`, everything in one process.
//! - [`bench`]: `account-sync bench`, the end-to-end performance figures.

pub mod backfill;
pub mod backoff;
pub mod bench;
pub mod chat;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod dev;
pub mod dlq;
pub mod doctor;
pub mod domain;
pub mod emulator;
pub mod event;
pub mod limiter;
pub mod metrics;
pub mod pipeline;
mod progress;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod systemic;
pub mod window;
pub mod worker;
