//! Tools around the worker, not part of it: nothing in production runs them (the binary keeps
//! them as commands for local work, tests and benchmarks).
//!
//! - [`emulator`]: a faithful local Chat API for tests, the demo and benchmarks.
//! - [`registry`]: a local Schema Registry (the Confluent REST subset readers use), with outages.
//! - [`embedded_kafka`]: the embedded Kafka (librdkafka's mock cluster), `account-sync dev kafka`.
//! - [`demo`]: `account-sync demo`, everything in one process, with an independent read-back check.
//! - [`bench`]: `account-sync bench`, the end-to-end performance figures.

pub mod bench;
pub mod demo;
pub mod embedded_kafka;
pub mod emulator;
pub mod registry;
