//! Delivery: records out → offsets committable → committed, for both delivery modes.
//!
//! - [`offsets`]: per-partition done watermarks and assignment epochs (what may be committed).
//! - [`transaction`]: exactly-once mode: records and offsets in one Kafka transaction.

pub mod offsets;
pub mod transaction;
