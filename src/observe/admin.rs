//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::systemic::SystemicGate;

/// What `/readyz` looks at.
pub struct Readiness {
    /// Set once the consumer has joined its group and received an assignment.
    pub assigned: AtomicBool,
    /// Closed while a systemic fault is in force.
    pub gate: Arc<SystemicGate>,
}

impl Readiness {
    /// Ready, or the reason why not.
    pub fn check(&self) -> Result<(), String> {
        if let Some(f) = self.gate.fault() {
            return Err(f.to_string());
        }
        if !self.assigned.load(Ordering::Relaxed) {
            return Err("consumer has not joined its group yet".into());
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The admin router: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AdminState { metrics, readiness })
}

async fn render_metrics(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.readiness.check().is_ok()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    match s.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, admin_router(metrics, readiness))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

/// Binds the admin address, with an error that names the setting.
pub async fn bind_admin(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--admin-listen {addr}: {e}"))
}
