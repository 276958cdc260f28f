//! Prometheus metrics: one registry per worker, so several workers can live in one test process.
//! The admin HTTP server that serves them is [`super::admin`].
//!
//! Label sets are bounded: api names, stages, statuses, failure classes, vendor codes of systemic
//! faults. Never a UserID.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Registry, TextEncoder,
};

use super::declare::{declare_metrics, Buckets};
use crate::chat::client::CallObserver;
use crate::chat::{Api, ChatError, Domain};

/// Distinct UserIDs per window: the sizes that matter for the check budget.
const WINDOW_BUCKETS: Buckets = Buckets::List(&[1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 99.0, 100.0]);
/// An API attempt: 1 ms to about 33 s.
const API_LATENCY_BUCKETS: Buckets = Buckets::Exponential {
    start: 0.001,
    factor: 2.0,
    count: 16,
};
/// A wait for a limiter token: 0.5 ms to about 16 s.
const LIMITER_WAIT_BUCKETS: Buckets = Buckets::Exponential {
    start: 0.0005,
    factor: 2.0,
    count: 16,
};
/// An event to its outcome: 10 ms to about 82 s.
const END_TO_END_BUCKETS: Buckets = Buckets::Exponential {
    start: 0.01,
    factor: 2.0,
    count: 14,
};

/// A revocation's drain: 1 ms to about 65 s (`--drain-timeout` is 30 s by default).
const DRAIN_BUCKETS: Buckets = Buckets::Exponential {
    start: 0.001,
    factor: 2.0,
    count: 17,
};

// The metrics table: one row per metric (a new metric is one row and its doc). The README's
// metrics table lists the same names, types and labels; tests/metrics.rs holds one against the other.
declare_metrics! {
    /// Input records read from Kafka.
    events_consumed: IntCounter("account_sync_events_consumed_total", "Input records read from Kafka.");
    /// Dead-letter records written, by stage (decode/check/import) and failure class.
    events_dead_lettered: IntCounterVec("account_sync_events_dead_lettered_total", "Dead-letter records written, by stage and failure class.", ["stage", "class"]);
    /// Input records that asked nothing of the worker (change events that are not signups), by reason.
    events_skipped: IntCounterVec("account_sync_events_skipped_total", "Input records that asked nothing, by reason: unchanged (an update of other columns), delete (deletes not applied), truncate, message, tombstone, other_type.", ["reason"]);
    /// Decoded events, by kind (create, update, delete): what was asked of the accounts.
    events_by_kind: IntCounterVec("account_sync_events_total", "Decoded events, by kind: create, update, delete.", ["kind"]);
    /// Outcome records written, by status.
    outcomes: IntCounterVec("account_sync_outcomes_total", "Outcome records written, by status.", ["status"]);
    /// Windows closed, by reason (full/idle/linger/flush).
    windows: IntCounterVec("account_sync_windows_total", "Windows closed, by reason: full, idle (waiting bought nothing), linger, flush, order (a delete made before the account comes back).", ["closed_by"]);
    /// Distinct UserIDs per window (exported as `account_sync_window_user_ids`).
    window_size: Histogram("account_sync_window_user_ids", "Distinct UserIDs per window.", [], WINDOW_BUCKETS);
    /// API attempts by api and result (ok or failure class).
    api_requests: IntCounterVec("account_sync_api_requests_total", "Chat API attempts, by api and result (ok or failure class).", ["api", "result"]);
    /// API attempt latency by api.
    api_latency: HistogramVec("account_sync_api_request_duration_seconds", "Chat API attempt latency.", ["api"], API_LATENCY_BUCKETS);
    /// Retries (attempts after the first) by api.
    api_retries: IntCounterVec("account_sync_api_retries_total", "Chat API retries (attempts after the first).", ["api"]);
    /// Frequency-limit answers by api.
    frequency_limited: IntCounterVec("account_sync_frequency_limited_total", "Frequency-limit answers from the Chat API.", ["api"]);
    /// Time spent waiting for limiter tokens, by api.
    limiter_wait: HistogramVec("account_sync_limiter_wait_seconds", "Time spent waiting for a rate-limiter token.", ["api"], LIMITER_WAIT_BUCKETS);
    /// Current limiter rate (calls/s) by api.
    limiter_rate: GaugeVec("account_sync_limiter_rate_calls_per_second", "Current limiter rate in calls per second (lowered after frequency-limit answers).", ["api"]);
    /// Limiter ceiling (this replica's share of the app budget, calls/s) by api.
    limiter_ceiling: GaugeVec("account_sync_limiter_ceiling_calls_per_second", "This replica's share of the app's rate budget, calls per second.", ["api"]);
    /// This replica's demand per api, calls/s, as it publishes it to the budget topic.
    budget_demand: GaugeVec("account_sync_budget_demand_calls_per_second", "This replica's demand, calls per second (recent use plus calls waiting), as published to the budget topic.", ["api"]);
    /// Members of the group seen live on the budget topic (this one included).
    budget_members: IntGauge("account_sync_budget_members", "Replicas seen live on the budget topic, this one included (0 while the budget is split by partitions).");
    /// 1 for how the budget is split now: `demand` or `partition_share` (the fallback).
    budget_mode: IntGaugeVec("account_sync_budget_mode", "1 for how the app budget is split now: demand (through the budget topic) or partition_share (the fallback).", ["mode"]);
    /// Input records read and not yet done.
    events_in_flight: IntGauge("account_sync_events_in_flight", "Input records read and not yet done.");
    /// Windows being checked/imported.
    windows_in_flight: IntGauge("account_sync_windows_in_flight", "Windows being checked and imported.");
    /// 1 while intake is paused (back-pressure or systemic fault).
    paused: IntGauge("account_sync_paused", "1 while intake is paused.");
    /// How long revocations took: from the rebalance's request to the partitions' release.
    revocation_drain: Histogram("account_sync_revocation_drain_seconds", "How long a revocation took to drain, from the request to the release of the partitions.", [], DRAIN_BUCKETS);
    /// Records of revoked partitions by fate: let go untouched, awaited (their call was under way), left by a drain that timed out.
    revoked_records: IntCounterVec("account_sync_revoked_records_total", "Records of revoked partitions, by fate: let_go (no call of theirs sent; their next owner processes them), awaited (their call was under way; delivered before the release), left (the drain timed out; replayed by the next owner).", ["fate"]);
    /// 1 while `/readyz` answers 200. Set from [`Readiness`](super::admin::Readiness) at every scrape of `/metrics`.
    ready: IntGauge("account_sync_ready", "1 while /readyz answers 200 (partitions assigned, no systemic fault).");
    /// 1 for the vendor code of the systemic fault in force (label `code`; `unavailable` for an
    /// outage); absent when none.
    systemic_fault: IntGaugeVec("account_sync_systemic_fault", "1 while a systemic fault with this vendor code (or `unavailable`: an outage; `schema_registry`: the Schema Registry does not answer) is in force.", ["code"]);
    /// Times the gate closed, by the same `code` label: an alert on flapping needs the count,
    /// since a gauge misses a fault shorter than the scrape interval.
    systemic_faults: IntCounterVec("account_sync_systemic_faults_total", "Times intake paused for a systemic fault or an outage, by code (`unavailable`: an outage).", ["code"]);
    /// 1 for the Chat API domain calls go to (`primary` or `backup`).
    chat_api_domain: IntGaugeVec("account_sync_chat_api_domain", "1 for the Chat API domain calls go to (primary or backup).", ["domain"]);
    /// Switches between the domains, by the domain switched to.
    chat_api_domain_switches: IntCounterVec("account_sync_chat_api_domain_switches_total", "Switches between the Chat API's primary and backup domain, by the domain switched to.", ["to"]);
    /// Unix time the cached admin UserSig expires (0 until the first one is generated).
    usersig_expiry: Gauge("account_sync_usersig_expiry_timestamp_seconds", "Unix time the admin UserSig expires.");
    /// Seconds until that UserSig expires; computed at every [`Metrics::render`].
    usersig_time_to_expiry: Gauge("account_sync_usersig_time_to_expiry_seconds", "Seconds until the admin UserSig expires (negative once expired).");
    /// Kafka timestamp of an event to its outcome being acknowledged.
    end_to_end_latency: Histogram("account_sync_end_to_end_latency_seconds", "From an event's Kafka timestamp to its outcome being acknowledged.", [], END_TO_END_BUCKETS);
    /// Committed position per input partition (the next offset to read).
    committed_offset: IntGaugeVec("account_sync_committed_offset", "Last committed position per input partition.", ["partition"]);
    /// Consumer lag per assigned input partition, from librdkafka statistics.
    consumer_lag: IntGaugeVec("account_sync_consumer_lag", "Records between the committed offset and the end of an assigned input partition.", ["partition"]);
    /// Partitions currently assigned.
    assigned_partitions: IntGauge("account_sync_assigned_partitions", "Input partitions assigned to this worker.");
    /// Kafka consumer errors.
    consumer_errors: IntCounter("account_sync_consumer_errors_total", "Errors reported by the Kafka consumer.");
    /// Exactly-once: errors of transactional calls, by stage and librdkafka's class (see
    /// [`crate::kafka::txn_error::Stage`] and [`crate::kafka::txn_error::ErrorClass`]).
    transaction_errors: IntCounterVec("account_sync_transaction_errors_total", "Exactly-once: errors of transactional calls, by stage and class (retriable: the same call again; abortable: abort and redo the batch; fatal: the worker stops).", ["stage", "kind"]);
    /// The version and git revision this binary was built from; always 1.
    build_info: IntGaugeVec("account_sync_build_info", "Build information; the value is always 1.", ["version", "revision"]);
}

impl Metrics {
    /// Registers every metric of the table, and the process collector, in a fresh registry.
    pub fn new() -> Arc<Self> {
        let m = Metrics::register_declared(Registry::new());
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("ACCOUNT_SYNC_GIT_SHA")])
            .set(1);
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
        use crate::domain::{failure_class, EventKind, OutcomeStatus, SkipReason};
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
        for status in OutcomeStatus::ALL {
            self.outcomes.with_label_values(&[status.as_str()]);
        }
        for kind in EventKind::ALL {
            self.events_by_kind.with_label_values(&[kind.as_str()]);
        }
        for reason in SkipReason::ALL {
            self.events_skipped.with_label_values(&[reason.as_str()]);
        }
        // The (stage, class) pairs that can occur.
        self.events_dead_lettered
            .with_label_values(&["decode", failure_class::INVALID_INPUT]);
        for stage in ["check", "import", "delete"] {
            for class in [
                failure_class::REJECTED,
                failure_class::RETRIES_EXHAUSTED,
                failure_class::BUG,
            ] {
                self.events_dead_lettered.with_label_values(&[stage, class]);
            }
        }
        for closed_by in ["full", "idle", "linger", "flush", "order"] {
            self.windows.with_label_values(&[closed_by]);
        }
        for fate in ["let_go", "awaited", "left"] {
            self.revoked_records.with_label_values(&[fate]);
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
