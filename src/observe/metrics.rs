//! Prometheus metrics: one registry per worker, so several workers can live in one test process.
//! The admin HTTP server that serves them is [`super::admin`].
//!
//! Label sets are bounded: api names, stages, statuses, failure classes, vendor codes of systemic
//! faults. Never a UserID.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::chat::client::CallObserver;
use crate::chat::{Api, ChatError, Domain};

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
    /// Distinct UserIDs per window (exported as `account_sync_window_user_ids`).
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
    /// Limiter ceiling (this replica's share of the app budget, calls/s) by api.
    pub limiter_ceiling: GaugeVec,
    /// This replica's demand per api, calls/s, as it publishes it to the budget topic.
    pub budget_demand: GaugeVec,
    /// Members of the group seen live on the budget topic (this one included).
    pub budget_members: IntGauge,
    /// 1 for how the budget is split now: `demand` or `partition_share` (the fallback).
    pub budget_mode: IntGaugeVec,
    /// Input records read and not yet done.
    pub events_in_flight: IntGauge,
    /// Windows being checked/imported.
    pub windows_in_flight: IntGauge,
    /// 1 while intake is paused (back-pressure or systemic fault).
    pub paused: IntGauge,
    /// 1 while `/readyz` answers 200. Set from [`Readiness`](super::admin::Readiness) at every scrape of `/metrics`.
    pub ready: IntGauge,
    /// 1 for the vendor code of the systemic fault in force (label `code`; `unavailable` for an
    /// outage); absent when none.
    pub systemic_fault: IntGaugeVec,
    /// Times the gate closed, by the same `code` label: an alert on flapping needs the count,
    /// since a gauge misses a fault shorter than the scrape interval.
    pub systemic_faults: IntCounterVec,
    /// 1 for the Chat API domain calls go to (`primary` or `backup`).
    pub chat_api_domain: IntGaugeVec,
    /// Switches between the domains, by the domain switched to.
    pub chat_api_domain_switches: IntCounterVec,
    /// Unix time the cached admin UserSig expires (0 until the first one is generated).
    pub usersig_expiry: Gauge,
    /// Seconds until that UserSig expires; computed at every [`Metrics::render`].
    pub usersig_time_to_expiry: Gauge,
    /// Kafka timestamp of an event to its outcome being acknowledged.
    pub end_to_end_latency: Histogram,
    /// Committed position per input partition (the next offset to read).
    pub committed_offset: IntGaugeVec,
    /// Consumer lag per assigned input partition, from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
    /// Partitions currently assigned.
    pub assigned_partitions: IntGauge,
    /// Kafka consumer errors.
    pub consumer_errors: IntCounter,
    /// Exactly-once: errors of transactional calls, by stage and librdkafka's class (see
    /// [`crate::kafka::txn_error::Stage`] and [`crate::kafka::txn_error::ErrorClass`]).
    pub transaction_errors: IntCounterVec,
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
                "Windows closed, by reason: full, idle (waiting bought nothing), linger, flush.",
                &["closed_by"],
            ),
            window_size: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "account_sync_window_user_ids",
                        "Distinct UserIDs per window.",
                    )
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
                        "account_sync_limiter_rate_calls_per_second",
                        "Current limiter rate in calls per second (lowered after frequency-limit answers).",
                    ),
                    &["api"],
                )
                .unwrap(),
            ),
            limiter_ceiling: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "account_sync_limiter_ceiling_calls_per_second",
                        "This replica's share of the app's rate budget, calls per second.",
                    ),
                    &["api"],
                )
                .unwrap(),
            ),
            budget_demand: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "account_sync_budget_demand_calls_per_second",
                        "This replica's demand, calls per second (recent use plus calls waiting), as published to the budget topic.",
                    ),
                    &["api"],
                )
                .unwrap(),
            ),
            budget_members: reg(
                &registry,
                IntGauge::new(
                    "account_sync_budget_members",
                    "Replicas seen live on the budget topic, this one included (0 while the budget is split by partitions).",
                )
                .unwrap(),
            ),
            budget_mode: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "account_sync_budget_mode",
                        "1 for how the app budget is split now: demand (through the budget topic) or partition_share (the fallback).",
                    ),
                    &["mode"],
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
            ready: reg(
                &registry,
                IntGauge::new(
                    "account_sync_ready",
                    "1 while /readyz answers 200 (partitions assigned, no systemic fault).",
                )
                .unwrap(),
            ),
            systemic_fault: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "account_sync_systemic_fault",
                        "1 while a systemic fault with this vendor code (or `unavailable`: an outage) is in force.",
                    ),
                    &["code"],
                )
                .unwrap(),
            ),
            systemic_faults: counter_vec(
                "account_sync_systemic_faults_total",
                "Times intake paused for a systemic fault or an outage, by code (`unavailable`: an outage).",
                &["code"],
            ),
            chat_api_domain: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "account_sync_chat_api_domain",
                        "1 for the Chat API domain calls go to (primary or backup).",
                    ),
                    &["domain"],
                )
                .unwrap(),
            ),
            chat_api_domain_switches: counter_vec(
                "account_sync_chat_api_domain_switches_total",
                "Switches between the Chat API's primary and backup domain, by the domain switched to.",
                &["to"],
            ),
            usersig_expiry: reg(
                &registry,
                Gauge::new(
                    "account_sync_usersig_expiry_timestamp_seconds",
                    "Unix time the admin UserSig expires.",
                )
                .unwrap(),
            ),
            usersig_time_to_expiry: reg(
                &registry,
                Gauge::new(
                    "account_sync_usersig_time_to_expiry_seconds",
                    "Seconds until the admin UserSig expires (negative once expired).",
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
            consumer_lag: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "account_sync_consumer_lag",
                        "Records between the committed offset and the end of an assigned input partition.",
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
            transaction_errors: counter_vec(
                "account_sync_transaction_errors_total",
                "Exactly-once: errors of transactional calls, by stage and class (retriable: the same call again; abortable: abort and redo the batch; fatal: the worker stops).",
                &["stage", "kind"],
            ),
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new(
                "account_sync_build_info",
                "Build information; the value is always 1.",
            ),
            &["version", "revision"],
        )
        .unwrap();
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("ACCOUNT_SYNC_GIT_SHA")])
            .set(1);
        m.registry.register(Box::new(build)).unwrap();
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        m.initialise_series();
        Arc::new(m)
    }

    /// Creates every series of the bounded label sets at zero, so that rates and alerts see a
    /// series from the start (a counter that appears only at its first increment loses that
    /// increment to `rate()`), and so that every name is in the scrape.
    fn initialise_series(&self) {
        use crate::chat::{Api, FailureClass};
        use crate::domain::{failure_class, OutcomeStatus};
        for api in [Api::AccountCheck, Api::AccountImport] {
            let a = api.name();
            self.api_requests.with_label_values(&[a, "ok"]);
            for class in [
                FailureClass::Retryable,
                FailureClass::FrequencyLimited,
                FailureClass::Permanent,
                FailureClass::Systemic,
            ] {
                self.api_requests.with_label_values(&[a, class.as_str()]);
            }
            self.api_latency.with_label_values(&[a]);
            self.api_retries.with_label_values(&[a]);
            self.frequency_limited.with_label_values(&[a]);
            self.limiter_wait.with_label_values(&[a]);
        }
        for status in [
            OutcomeStatus::Imported,
            OutcomeStatus::AlreadyImported,
            OutcomeStatus::Failed,
        ] {
            self.outcomes.with_label_values(&[status.as_str()]);
        }
        // The (stage, class) pairs that can occur.
        self.events_dead_lettered
            .with_label_values(&["decode", failure_class::INVALID_INPUT]);
        for stage in ["check", "import"] {
            for class in [
                failure_class::REJECTED,
                failure_class::RETRIES_EXHAUSTED,
                failure_class::BUG,
            ] {
                self.events_dead_lettered.with_label_values(&[stage, class]);
            }
        }
        for closed_by in ["full", "idle", "linger", "flush"] {
            self.windows.with_label_values(&[closed_by]);
        }
        for mode in ["demand", "partition_share"] {
            self.budget_mode.with_label_values(&[mode]);
        }
        // Outages are the fault an alert most needs a zero for (`increase()` over a new series).
        self.systemic_faults.with_label_values(&["unavailable"]);
        for to in ["primary", "backup"] {
            self.chat_api_domain_switches.with_label_values(&[to]);
        }
        for stage in crate::kafka::txn_error::Stage::ALL {
            for kind in crate::kafka::txn_error::ErrorClass::LABELS {
                self.transaction_errors
                    .with_label_values(&[stage.as_str(), kind]);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let expiry = self.usersig_expiry.get();
        if expiry > 0.0 {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.usersig_time_to_expiry.set((expiry - now).round());
        }
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

    fn retry(&self, api: Api) {
        self.0.api_retries.with_label_values(&[api.name()]).inc();
    }

    fn limiter_wait(&self, api: Api, waited: Duration) {
        self.0
            .limiter_wait
            .with_label_values(&[api.name()])
            .observe(waited.as_secs_f64());
    }

    fn limiter_rate(&self, api: Api, rate: f64) {
        self.0
            .limiter_rate
            .with_label_values(&[api.name()])
            .set(rate);
    }

    fn usersig_generated(&self, expires_at: u64) {
        self.0.usersig_expiry.set(expires_at as f64);
    }

    fn domain_in_use(&self, domain: Domain, switched: bool) {
        let m = &self.0;
        let other = match domain {
            Domain::Primary => Domain::Backup,
            Domain::Backup => Domain::Primary,
        };
        m.chat_api_domain
            .with_label_values(&[domain.as_str()])
            .set(1);
        m.chat_api_domain
            .with_label_values(&[other.as_str()])
            .set(0);
        if switched {
            m.chat_api_domain_switches
                .with_label_values(&[domain.as_str()])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bounded_series_exists_from_the_start() {
        let text = Metrics::new().render();
        for line in [
            r#"account_sync_api_retries_total{api="account_import"} 0"#,
            r#"account_sync_outcomes_total{status="failed"} 0"#,
            r#"account_sync_events_dead_lettered_total{class="invalid_input",stage="decode"} 0"#,
            r#"account_sync_frequency_limited_total{api="account_check"} 0"#,
            r#"account_sync_windows_total{closed_by="linger"} 0"#,
            r#"account_sync_windows_total{closed_by="idle"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
