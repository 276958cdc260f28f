//! Prometheus metrics (one registry per worker, so several workers can live in one test process)
//! and the admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! Label sets are bounded: api names, stages, statuses, failure classes, vendor codes of systemic
//! faults. Never a UserID.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::chat::client::CallObserver;
use crate::chat::{Api, ChatError};
use crate::shutdown::Shutdown;
use crate::systemic::SystemicGate;

/// Every metric of one worker.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Input records read from Kafka.
    pub events_consumed: IntCounter,
    /// Dead-letter records written, by stage (decode/check/import) and failure class.
    pub events_dead_lettered: IntCounterVec,
    /// Outcome records written, by status.
    pub outcomes: IntCounterVec,
    /// Windows closed, by reason (full/linger/flush).
    pub windows: IntCounterVec,
    /// Distinct UserIDs per window.
    pub window_size: Histogram,
    /// API attempts by api and result (ok or failure class).
    pub api_requests: IntCounterVec,
    /// API attempt latency by api.
    pub api_latency: HistogramVec,
    /// Retries (attempts after the first) by api.
    pub api_retries: IntCounterVec,
    /// Frequency-limit answers by api.
    pub frequency_limited: IntCounterVec,
    /// Time spent waiting for limiter tokens, by api.
    pub limiter_wait: HistogramVec,
    /// Current limiter rate (calls/s) by api.
    pub limiter_rate: GaugeVec,
    /// Limiter ceiling (this replica's share of the app budget) by api.
    pub limiter_ceiling: GaugeVec,
    /// Input records read and not yet done.
    pub events_in_flight: IntGauge,
    /// Windows being checked/imported.
    pub windows_in_flight: IntGauge,
    /// 1 while intake is paused (back-pressure or systemic fault).
    pub paused: IntGauge,
    /// 1 for the vendor code of the systemic fault in force (label `code`); absent when none.
    pub systemic_fault: IntGaugeVec,
    /// Unix time the cached admin UserSig expires.
    pub usersig_expiry: Gauge,
    /// Kafka timestamp of an event to its outcome being acknowledged.
    pub end_to_end_latency: Histogram,
    /// Committed position per input partition (the next offset to read).
    pub committed_offset: IntGaugeVec,
    /// Partitions currently assigned.
    pub assigned_partitions: IntGauge,
    /// Kafka consumer errors.
    pub consumer_errors: IntCounter,
}

impl Metrics {
    /// Registers everything in a fresh registry.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let counter = |name: &str, help: &str| reg(&registry, IntCounter::new(name, help).unwrap());
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).unwrap(),
            )
        };
        let hist_vec = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            reg(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).unwrap(),
            )
        };
        let latency_buckets = exponential_buckets(0.001, 2.0, 16).unwrap();
        let m = Metrics {
            events_consumed: counter(
                "account_sync_events_consumed_total",
                "Input records read from Kafka.",
            ),
            events_dead_lettered: counter_vec(
                "account_sync_events_dead_lettered_total",
                "Dead-letter records written, by stage and failure class.",
                &["stage", "class"],
            ),
            outcomes: counter_vec(
                "account_sync_outcomes_total",
                "Outcome records written, by status.",
                &["status"],
            ),
            windows: counter_vec(
                "account_sync_windows_total",
                "Windows closed, by reason.",
                &["closed_by"],
            ),
            window_size: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("account_sync_window_size", "Distinct UserIDs per window.")
                        .buckets(vec![1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 99.0, 100.0]),
                )
                .unwrap(),
            ),
            api_requests: counter_vec(
                "account_sync_api_requests_total",
                "Chat API attempts, by api and result (ok or failure class).",
                &["api", "result"],
            ),
            api_latency: hist_vec(
                "account_sync_api_request_duration_seconds",
                "Chat API attempt latency.",
                &["api"],
                latency_buckets.clone(),
            ),
            api_retries: counter_vec(
                "account_sync_api_retries_total",
                "Chat API retries (attempts after the first).",
                &["api"],
            ),
            frequency_limited: counter_vec(
                "account_sync_frequency_limited_total",
                "Frequency-limit answers from the Chat API.",
                &["api"],
            ),
            limiter_wait: hist_vec(
                "account_sync_limiter_wait_seconds",
                "Time spent waiting for a rate-limiter token.",
                &["api"],
                exponential_buckets(0.0005, 2.0, 16).unwrap(),
            ),
            limiter_rate: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "account_sync_limiter_rate",
                        "Current limiter rate in calls per second.",
                    ),
                    &["api"],
                )
                .unwrap(),
            ),
            limiter_ceiling: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "account_sync_limiter_ceiling",
                        "This replica's share of the app's rate budget, calls per second.",
                    ),
                    &["api"],
                )
                .unwrap(),
            ),
            events_in_flight: reg(
                &registry,
                IntGauge::new(
                    "account_sync_events_in_flight",
                    "Input records read and not yet done.",
                )
                .unwrap(),
            ),
            windows_in_flight: reg(
                &registry,
                IntGauge::new(
                    "account_sync_windows_in_flight",
                    "Windows being checked and imported.",
                )
                .unwrap(),
            ),
            paused: reg(
                &registry,
                IntGauge::new("account_sync_paused", "1 while intake is paused.").unwrap(),
            ),
            systemic_fault: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "account_sync_systemic_fault",
                        "1 while a systemic fault with this vendor code is in force.",
                    ),
                    &["code"],
                )
                .unwrap(),
            ),
            usersig_expiry: reg(
                &registry,
                Gauge::new(
                    "account_sync_usersig_expiry_timestamp_seconds",
                    "Unix time the admin UserSig expires.",
                )
                .unwrap(),
            ),
            end_to_end_latency: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "account_sync_end_to_end_latency_seconds",
                        "From an event's Kafka timestamp to its outcome being acknowledged.",
                    )
                    .buckets(exponential_buckets(0.01, 2.0, 14).unwrap()),
                )
                .unwrap(),
            ),
            committed_offset: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "account_sync_committed_offset",
                        "Last committed position per input partition.",
                    ),
                    &["partition"],
                )
                .unwrap(),
            ),
            assigned_partitions: reg(
                &registry,
                IntGauge::new(
                    "account_sync_assigned_partitions",
                    "Input partitions assigned to this worker.",
                )
                .unwrap(),
            ),
            consumer_errors: counter(
                "account_sync_consumer_errors_total",
                "Errors reported by the Kafka consumer.",
            ),
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new(
                "account_sync_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .unwrap();
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.registry.register(Box::new(build)).unwrap();
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        Arc::new(m)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// Feeds API call events into the metrics.
pub struct MetricsObserver(pub Arc<Metrics>);

impl CallObserver for MetricsObserver {
    fn attempt(&self, api: Api, result: Result<(), &ChatError>, latency: Duration) {
        let m = &self.0;
        let label = match result {
            Ok(()) => "ok",
            Err(e) => e.class().as_str(),
        };
        m.api_requests.with_label_values(&[api.name(), label]).inc();
        m.api_latency
            .with_label_values(&[api.name()])
            .observe(latency.as_secs_f64());
        if matches!(result, Err(e) if e.class() == crate::chat::FailureClass::FrequencyLimited) {
            m.frequency_limited.with_label_values(&[api.name()]).inc();
        }
    }

    fn limiter_wait(&self, api: Api, waited: Duration) {
        self.0
            .limiter_wait
            .with_label_values(&[api.name()])
            .observe(waited.as_secs_f64());
    }

    fn usersig_generated(&self, expires_at: u64) {
        self.0.usersig_expiry.set(expires_at as f64);
    }
}

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
            return Err(format!("systemic fault (code {}): {}", f.code, f.reason));
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
