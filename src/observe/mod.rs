//! What operators see of a worker: [`metrics`] (Prometheus) and the [`admin`] server that serves
//! them with `/healthz` and `/readyz`.

pub mod admin;
mod declare;
pub mod metrics;

pub use declare::{Buckets, Declaration, Kind};
