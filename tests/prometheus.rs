//! The dashboard and the alerts against a real Prometheus (`/usr/bin/prometheus`, Debian package
//! `prometheus`) scraping running workers every second, with the chart's alert rules (a copy
//! made here with every `for:` shortened to [`FOR`]).
//!
//! Three workers run at once, each with its own embedded Kafka and emulator, each a scrape job:
//! - `healthy`: signups and one malformed event. Every query of every dashboard panel, with the
//!   template variables substituted, returns data (at least one finite sample over the run)
//!   from `/api/v1/query_range`, except the few in [`FAULT_ONLY`], which must return data for
//!   the `wrong-key` job instead.
//! - `wrong-key`: the emulator knows another key. `AccountSyncSystemicFault` and
//!   `AccountSyncNotReady` reach `firing` in `/api/v1/alerts`; the emulator is given the right key
//!   and both resolve.
//! - `outage`: the emulator answers every call HTTP 502. `AccountSyncChatApiUnavailable` fires
//!   (and `AccountSyncSystemicFault`, which is about vendor codes, does not); the 502s stop and it
//!   resolves.
//!
//! Without the prometheus binary the test is skipped with a note, except in CI, where it fails.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use account_sync::chat::SecretKey;
use account_sync::devtools::emulator::Faults;
use common::emulator::{emulator_config, SECRET};
use common::kafka::{poll_until, produce, RunningWorker, WorkerEnv};
use common::monitoring::{alerts, dashboard, panel_queries, prometheus_tool, PanelQuery};
use serde_json::Value;

/// Scrape and rule evaluation interval.
const INTERVAL: &str = "1s";
/// What every `for:` of the alert rules becomes: long enough to see `pending` first.
const FOR: &str = "2s";
/// `$__rate_interval` as Grafana computes it for a 1 s scrape: 4 × the scrape interval.
const RATE_INTERVAL: &str = "4s";
/// The `namespace` label the scrape config gives every target (the chart's queries filter on it).
const NAMESPACE: &str = "prometheus-test";
/// Dashboard queries (panel title, refId) that are empty while no fault is in force: the
/// systemic-fault gauge has no series then. They must return data for the `wrong-key` job.
const FAULT_ONLY: &[(&str, &str)] = &[
    ("Systemic fault", "A"),
    ("Readiness, pauses and faults", "C"),
];
/// How long an alert may take to fire or resolve.
const ALERT_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Prometheus

/// A Prometheus server on 127.0.0.1, killed (and its data removed) when dropped.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The alert rules with every `for:` set to [`FOR`], everything else as the chart ships it.
fn fast_rules() -> String {
    let text = alerts();
    let mut shortened = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let body = line.trim_start();
            match body.strip_prefix("for: ") {
                Some(_) => {
                    shortened += 1;
                    format!("{}for: {FOR}", &line[..line.len() - body.len()])
                }
                None => line.to_owned(),
            }
        })
        .collect();
    let alerts = text.matches("- alert: ").count();
    assert_eq!(shortened, alerts, "every alert has a `for:` to shorten");
    lines.join("\n") + "\n"
}

/// The scrape config: one job per worker, the namespace label on every target.
fn config(jobs: &[(&str, SocketAddr)]) -> String {
    let mut c = format!(
        "global:\n  scrape_interval: {INTERVAL}\n  scrape_timeout: {INTERVAL}\n  \
         evaluation_interval: {INTERVAL}\nrule_files:\n  - alerts.yaml\nscrape_configs:\n"
    );
    for (job, addr) in jobs {
        c.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n        \
             labels:\n          namespace: {NAMESPACE}\n"
        ));
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

impl Prometheus {
    /// Starts `bin` scraping `jobs` and waits until it is ready.
    async fn start(bin: &Path, jobs: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        std::fs::write(dir.join("prometheus.yml"), config(jobs)).expect("config written");
        std::fs::write(dir.join("alerts.yaml"), fast_rules()).expect("rules written");
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let mut p = Prometheus {
            child,
            url: format!("http://{listen}"),
            dir,
            http: reqwest::Client::new(),
        };
        p.wait_ready().await;
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            let ready = self.http.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET an API path; its `data`.
    async fn api(&self, path: &str, query: &[(&str, String)]) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = r.bytes().await.expect("body");
        let v: Value = serde_json::from_slice(&body).expect("API answers JSON");
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    }

    /// The series of a range query from `start` to now, every second.
    async fn query_range(&self, expr: &str, start: f64) -> Vec<Value> {
        let q = [
            ("query", expr.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{:.3}", now())),
            ("step", "1".to_owned()),
        ];
        let data = self.api("/api/v1/query_range", &q).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until Prometheus has scraped `job` (its `up` is 1).
    async fn wait_up(&self, job: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let query = [("query", format!("up{{job=\"{job}\"}} == 1"))];
        while self.api("/api/v1/query", &query).await["result"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            assert!(
                Instant::now() < deadline,
                "{job} not scraped:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The state (`pending`, `firing`) of alert `name` for `job`; `None` when not active.
    async fn alert_state(&self, name: &str, job: &str) -> Option<String> {
        let data = self.api("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"]["job"] == job)
            .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits until alert `name` of `job` is in `state` (`None`: resolved, no longer active).
    async fn wait_alert(&self, name: &str, job: &str, state: Option<&str>) {
        let every = Duration::from_millis(250);
        let probe = || self.alert_state(name, job);
        let (now, reached) =
            poll_until(ALERT_WAIT, every, probe, |now| now.as_deref() == state).await;
        assert!(
            reached,
            "{name}{{job={job:?}}} is {now:?}, not {state:?}, after {ALERT_WAIT:?}"
        );
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// The dashboard

/// `q` for one job: the chart's template variables as Grafana would fill them in.
fn substituted(q: &PanelQuery, job: &str) -> String {
    let expr = q
        .expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", NAMESPACE)
        .replace("$job", job);
    assert!(
        !expr.contains('$'),
        "{}/{}: a template variable this test does not know: {expr}",
        q.panel,
        q.ref_id
    );
    expr
}

/// True when some series has a finite sample (NaN is what a ratio of no traffic gives).
fn has_data(series: &[Value]) -> bool {
    series.iter().any(|s| {
        s["values"].as_array().into_iter().flatten().any(|pair| {
            pair[1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        })
    })
}

/// The queries among `queries` without data for `job` since `start`.
async fn empty_queries(
    prom: &Prometheus,
    queries: &[PanelQuery],
    job: &str,
    start: f64,
) -> Vec<String> {
    let mut empty = Vec::new();
    for q in queries {
        let expr = substituted(q, job);
        if !has_data(&prom.query_range(&expr, start).await) {
            empty.push(format!("{} ({}): {expr}", q.panel, q.ref_id));
        }
    }
    empty
}

/// Polls until every query among `queries` has data for `job` (the last ones need a commit or a
/// statistics round first); panics with the empty ones after 20 s.
async fn every_query_has_data(prom: &Prometheus, queries: &[PanelQuery], job: &str, start: f64) {
    let (empty, all_have_data) = poll_until(
        Duration::from_secs(20),
        Duration::from_secs(1),
        || empty_queries(prom, queries, job, start),
        |empty: &Vec<String>| empty.is_empty(),
    )
    .await;
    assert!(
        all_have_data,
        "dashboard queries without data for job {job}:\n{}",
        empty.join("\n")
    );
}

fn is_fault_only(q: &PanelQuery) -> bool {
    FAULT_ONLY.contains(&(q.panel.as_str(), q.ref_id.as_str()))
}

// ---------------------------------------------------------------------------------------------
// The three workers

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Lag gauges come from librdkafka statistics: every 500 ms instead of 5 s.
const STATS: [&str; 2] = ["--kafka-property", "statistics.interval.ms=500"];

/// Healthy: a worker waiting for its stream ([`healthy_stream`]).
async fn healthy() -> (WorkerEnv, RunningWorker, SocketAddr) {
    let mut cfg = emulator_config();
    cfg.existing_fraction = 0.3;
    let env = WorkerEnv::start(2, cfg).await;
    let (worker, addr) = RunningWorker::start_with_admin(env.args(&STATS)).await;
    (env, worker, addr)
}

/// Signups (30 % already imported) and one event that does not decode, in four batches over
/// about three seconds: rates over a 4 s window need traffic while Prometheus scrapes.
async fn healthy_stream(env: &WorkerEnv) {
    let producer = env.kafka.producer();
    for batch in 0..4 {
        env.produce_users(&users(&format!("prom-ok-{batch}"), 15))
            .await;
        if batch == 1 {
            let bad: &[u8] = b"not json";
            produce(
                &producer,
                &env.topics.input,
                Some(0),
                &[(Some("bad"), Some(bad))],
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
}

/// The emulator knows another key: a systemic fault (70009).
async fn wrong_key() -> (WorkerEnv, RunningWorker, SocketAddr) {
    let mut cfg = emulator_config();
    cfg.secret_key = Some(SecretKey::new("the-emulator-has-another-key"));
    let env = WorkerEnv::start(1, cfg).await;
    env.produce_users(&users("prom-key", 10)).await;
    let (worker, addr) = RunningWorker::start_with_admin(env.args(&STATS)).await;
    (env, worker, addr)
}

/// Every call answered HTTP 502; the outage rule declares it after 1 s and one failed call.
async fn outage() -> (WorkerEnv, RunningWorker, SocketAddr) {
    let mut cfg = emulator_config();
    cfg.http_502_rate = 1.0;
    let env = WorkerEnv::start(1, cfg).await;
    env.produce_users(&users("prom-502", 10)).await;
    let flags = [
        "--outage-after",
        "1s",
        "--outage-min-failed-calls",
        "1",
        "--retry-max-elapsed",
        "1s",
        STATS[0],
        STATS[1],
    ];
    let (worker, addr) = RunningWorker::start_with_admin(env.args(&flags)).await;
    (env, worker, addr)
}

async fn dashboard_on_a_healthy_stream(prom: &Prometheus, env: &WorkerEnv, start: f64) {
    prom.wait_up("healthy").await;
    healthy_stream(env).await;
    assert_eq!(env.wait_outcomes(60, Duration::from_secs(30)).await, 60);
    let queries: Vec<PanelQuery> = panel_queries(&dashboard())
        .into_iter()
        .filter(|q| !is_fault_only(q))
        .collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    every_query_has_data(prom, &queries, "healthy", start).await;
    assert_eq!(env.dead_letter_count(), 1, "the malformed event");
}

async fn alerts_on_a_wrong_key(prom: &Prometheus, env: &WorkerEnv, start: f64) {
    for alert in ["AccountSyncSystemicFault", "AccountSyncNotReady"] {
        prom.wait_alert(alert, "wrong-key", Some("firing")).await;
    }
    // What the healthy stream cannot show.
    let fault_only: Vec<PanelQuery> = panel_queries(&dashboard())
        .into_iter()
        .filter(is_fault_only)
        .collect();
    assert_eq!(
        fault_only.len(),
        FAULT_ONLY.len(),
        "FAULT_ONLY names real queries"
    );
    every_query_has_data(prom, &fault_only, "wrong-key", start).await;
    env.emu.set_secret_key(SecretKey::new(SECRET));
    for alert in ["AccountSyncSystemicFault", "AccountSyncNotReady"] {
        prom.wait_alert(alert, "wrong-key", None).await;
    }
    assert_eq!(env.wait_outcomes(10, Duration::from_secs(30)).await, 10);
}

async fn alerts_on_an_outage(prom: &Prometheus, env: &WorkerEnv) {
    prom.wait_alert("AccountSyncChatApiUnavailable", "outage", Some("firing"))
        .await;
    assert_eq!(
        prom.alert_state("AccountSyncSystemicFault", "outage").await,
        None,
        "an outage is not a systemic fault"
    );
    env.emu.set_faults(Faults::default());
    prom.wait_alert("AccountSyncChatApiUnavailable", "outage", None)
        .await;
    assert_eq!(env.wait_outcomes(10, Duration::from_secs(30)).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_the_dashboard_and_the_alerts() {
    let Some(bin) = prometheus_tool("prometheus", "the real-Prometheus test") else {
        return;
    };
    let started = Instant::now();
    let start = now();
    let ((h_env, h_worker, h_addr), (k_env, k_worker, k_addr), (o_env, o_worker, o_addr)) =
        tokio::join!(healthy(), wrong_key(), outage());
    let jobs = [
        ("healthy", h_addr),
        ("wrong-key", k_addr),
        ("outage", o_addr),
    ];
    let prom = Prometheus::start(&bin, &jobs).await;
    tokio::join!(
        dashboard_on_a_healthy_stream(&prom, &h_env, start),
        alerts_on_a_wrong_key(&prom, &k_env, start),
        alerts_on_an_outage(&prom, &o_env),
    );
    for worker in [h_worker, k_worker, o_worker] {
        worker.stop().await.expect("clean stop");
    }
    eprintln!("real-Prometheus test: {:?}", started.elapsed());
}

#[test]
fn the_rule_copy_shortens_every_for_and_nothing_else() {
    let fast = fast_rules();
    let original = alerts();
    assert!(!fast
        .lines()
        .any(|l| l.trim_start().starts_with("for: ") && l.trim_start() != format!("for: {FOR}")));
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("for: "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(strip(&fast), strip(&original));
    assert!(config(&[("j", "127.0.0.1:9".parse().unwrap())]).contains("namespace: prometheus-test"));
}
