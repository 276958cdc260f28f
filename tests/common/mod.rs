//! Shared harness of the integration tests: the Chat API emulator on 127.0.0.1:0 and Kafka (the
//! embedded mock cluster, or an external broker named by `ACCOUNT_SYNC_TEST_BROKERS`). Each part
//! lives in its own module so test binaries pull in what they use.

pub mod emulator;
pub mod events;
pub mod kafka;
pub mod monitoring;
pub mod process;
