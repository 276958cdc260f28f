//! account-sync
pub mod chat;
pub mod config;
pub mod emulator;
pub mod event;
pub mod limiter;
pub mod offsets;
pub mod sink;
pub mod window;
