//! Shared harness of the integration tests. Each part lives in its own module so test binaries
//! pull in what they use.

pub mod emulator;
