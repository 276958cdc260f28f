//! Kafka, as the worker, delivery and the other commands share it: below all of them.
//!
//! - [`consumer`]: the input consumer — its group, its rebalance and commit callbacks (which send
//!   [`consumer::RebalanceEvent`]s to the intake loop), the gauges they keep;
//! - [`group_protocol`]: `--group-protocol`, classic or consumer (KIP-848), and the properties each
//!   refuses;
//! - [`properties`]: `--kafka-property` as librdkafka knows it: each property's scope (consumer,
//!   producer, both), its aliases, and whether librdkafka takes it;
//! - [`offsets`]: the per-partition done watermarks and assignment epochs, and the one helper that
//!   builds every list of offsets stored, committed or sent to a transaction;
//! - [`txn_error`]: librdkafka's transaction contract: the class of an error of a transactional
//!   call, and why exactly-once delivery stops.

pub mod consumer;
pub mod group_protocol;
mod lag;

pub use lag::ConsumerLag;
pub mod offsets;
pub mod properties;
pub mod txn_error;
