//! Observability end to end: a worker with its admin server on 127.0.0.1:0, against the mock
//! cluster and the emulator. The `/metrics` scrape must match what happened (outcome and
//! dead-letter topics, emulator counters), pass `promtool check metrics`, and contain every metric
//! the Grafana dashboard and the alert rules query.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use account_sync::chat::SecretKey;
use account_sync::delivery::sink::headers;
use account_sync::devtools::emulator::is_preexisting;
use account_sync::observe::metrics::DECLARED;
use common::emulator::{count, emulator_config};
use common::kafka::{admin_get, ends, event_json, poll_until, produce, RunningWorker, WorkerEnv};
use common::monitoring::{alerts, crate_path, dashboard, prometheus_tool};

/// Metrics that exist only while a systemic fault is in force: the fault test checks them.
const FAULT_ONLY: &[&str] = &["account_sync_systemic_fault"];

// ---------------------------------------------------------------------------------------------
// The scrape

/// One sample line of the text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable sample line {l:?}")))
            .collect();
        Scrape { text, samples }
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The one sample named `name` with `labels`; panics when there is none or several.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one sample {name}{labels:?} expected, found {found:?}"
        );
        found[0].value
    }

    /// The sum over every sample named `name` with `labels` (0 when there is none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// `name`'s samples by the value of `label`.
    fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.matching(name, &[])
            .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
            .collect()
    }

    /// Every sample name (histograms contribute their `_bucket`, `_sum` and `_count`).
    fn names(&self) -> BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }
}

/// `name{k="v",...} value` (no timestamps: the prometheus crate writes none).
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // key
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if key.is_empty() => {
                        end = Some(i);
                        break;
                    }
                    ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            if end.is_some() {
                break;
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            match chars.next()? {
                (_, ',') => {}
                (i, '}') => {
                    end = Some(i);
                    break;
                }
                _ => return None,
            }
            if let Some(&(i, '}')) = chars.peek() {
                end = Some(i);
                break;
            }
        }
        rest = &body[end? + 1..];
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = admin_get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics: {body}");
    Scrape::parse(body)
}

/// Scrapes until `done` holds or `within` passes; returns the last scrape and whether it held.
async fn scrape_until(
    addr: SocketAddr,
    within: Duration,
    done: impl Fn(&Scrape) -> bool,
) -> (Scrape, bool) {
    poll_until(within, Duration::from_millis(100), || scrape(addr), done).await
}

// ---------------------------------------------------------------------------------------------
// Files and tools

/// Writes a scrape under `target/` for a human (and CI artefacts) to look at.
fn save(scrape: &Scrape, file: &str) -> PathBuf {
    let dir = crate_path("target");
    std::fs::create_dir_all(&dir).expect("target/ exists");
    let path = dir.join(file);
    std::fs::write(&path, &scrape.text).expect("scrape written");
    path
}

/// `promtool check metrics < path`: no errors and no lint warnings. Skipped (with a note) when
/// promtool is not installed, unless in CI.
fn promtool_check_metrics(path: &Path) {
    let Some(promtool) = prometheus_tool("promtool", "`promtool check metrics`") else {
        return;
    };
    let input = std::fs::File::open(path).expect("scrape file");
    let out = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .output()
        .expect("promtool runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics {}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        path.display(),
        out.status
    );
}

/// Every `account_sync_*` token in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "account_sync_";
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(PREFIX) {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let len = text[i..]
            .find(|c: char| !is_name_char(c))
            .unwrap_or(text.len() - i);
        out.insert(text[i..i + len].to_owned());
    }
    out
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Every metric name the dashboard (any string: queries, variables, descriptions) and the alert
/// rules (every line but comments: exprs and annotations) mention.
fn queried_metric_names() -> BTreeSet<String> {
    let mut strings = Vec::new();
    collect_strings(&dashboard(), &mut strings);
    let mut names: BTreeSet<String> = strings.iter().flat_map(|s| metric_names_in(s)).collect();
    assert!(names.len() >= 15, "the dashboard queries {names:?}");
    let rules: String = alerts()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let in_alerts = metric_names_in(&rules);
    assert!(in_alerts.len() >= 6, "the alerts query {in_alerts:?}");
    names.extend(in_alerts);
    names
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// New users, existing users, malformed records and a sensitive-word failure, with transient
/// vendor errors thrown in: every counter matches what the topics and the emulator saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_matches_what_happened() {
    const PARTITIONS: i32 = 3;
    let mut cfg = emulator_config();
    cfg.existing_fraction = 0.3;
    cfg.sensitive_word = vec!["forbidden".to_owned()];
    cfg.transient_error_rate = 0.05;
    let env = WorkerEnv::start(PARTITIONS, cfg).await;

    let users: Vec<String> = (0..120).map(|i| format!("metrics-user-{i:04}")).collect();
    let mut offsets = env.produce_users(&users).await;
    let producer = env.kafka.producer();
    let sensitive = event_json("metrics-sensitive", "a forbidden nick");
    offsets.extend(
        produce(
            &producer,
            &env.topics.input,
            Some(1),
            &[(Some("metrics-sensitive"), Some(sensitive.as_slice()))],
        )
        .await,
    );
    let malformed: [&[u8]; 3] = [b"not json", br#"{"Nick":"no user id"}"#, b""];
    for (i, m) in malformed.iter().enumerate() {
        offsets.extend(
            produce(
                &producer,
                &env.topics.input,
                Some(i as i32 % PARTITIONS),
                &[(Some("bad"), Some(*m))],
            )
            .await,
        );
    }
    let produced = offsets.len();
    let decoded = users.len() + 1;
    let ends = ends(&offsets);

    let (worker, admin) = RunningWorker::start_with_admin(
        env.args(&["--kafka-property", "statistics.interval.ms=200"]),
    )
    .await;

    let (status, body) = admin_get(admin, "/healthz").await;
    assert_eq!(status, 200, "/healthz: {body}");
    assert_eq!(
        env.wait_outcomes(decoded, Duration::from_secs(60)).await,
        decoded
    );

    // Counters move after the broker acknowledged the records; lag and committed offsets follow
    // the next commit and the next statistics.
    let (s, settled) = scrape_until(admin, Duration::from_secs(30), |s| {
        let lags = s.by("account_sync_consumer_lag", "partition");
        let committed = s.by("account_sync_committed_offset", "partition");
        s.sum("account_sync_outcomes_total", &[]) == decoded as f64
            && s.sum("account_sync_events_dead_lettered_total", &[]) == 4.0
            && s.value("account_sync_events_in_flight", &[]) == 0.0
            && lags.len() == PARTITIONS as usize
            && lags.values().all(|&l| l == 0.0)
            && ends
                .iter()
                .all(|(p, e)| committed.get(&p.to_string()) == Some(&(*e as f64)))
    })
    .await;
    let path = save(&s, "metrics-scrape.txt");
    assert!(
        settled,
        "metrics did not settle; last scrape in {}",
        path.display()
    );
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let stats = env.emu.stats();
    worker.stop().await.expect("clean stop");

    // Outcomes by status = the outcome topic = the emulator's idea of who existed.
    let outcomes = env.outcomes();
    assert_eq!(outcomes.len(), decoded);
    let mut by_status: BTreeMap<String, f64> = BTreeMap::new();
    for r in &outcomes {
        *by_status
            .entry(r.json()["status"].as_str().unwrap().to_owned())
            .or_default() += 1.0;
    }
    let existing = users.iter().filter(|u| is_preexisting(u, 0.3)).count() as f64;
    assert_eq!(by_status["already_imported"], existing);
    assert_eq!(by_status["failed"], 1.0);
    assert_eq!(
        by_status["imported"],
        (users.len() + 1) as f64 - existing - 1.0
    );
    for (status, n) in &by_status {
        assert_eq!(
            s.value("account_sync_outcomes_total", &[("status", status)]),
            *n,
            "{status}"
        );
    }

    // Dead letters by stage = the dead-letter topic's stage headers.
    let mut by_stage: BTreeMap<String, f64> = BTreeMap::new();
    for r in env.dead_letters() {
        *by_stage
            .entry(r.header(headers::STAGE).to_owned())
            .or_default() += 1.0;
    }
    assert_eq!(
        by_stage,
        BTreeMap::from([("decode".to_owned(), 3.0), ("import".to_owned(), 1.0)])
    );
    for stage in ["decode", "check", "import"] {
        assert_eq!(
            s.sum(
                "account_sync_events_dead_lettered_total",
                &[("stage", stage)]
            ),
            by_stage.get(stage).copied().unwrap_or(0.0),
            "{stage}"
        );
    }

    // Intake.
    assert_eq!(
        s.value("account_sync_events_consumed_total", &[]),
        produced as f64
    );
    assert_eq!(s.value("account_sync_assigned_partitions", &[]), 3.0);
    assert_eq!(s.value("account_sync_consumer_errors_total", &[]), 0.0);

    // Windows: one histogram observation and one successful account_check per window.
    let windows = s.sum("account_sync_windows_total", &[]);
    assert!(windows >= 2.0, "{windows} windows");
    assert_eq!(s.value("account_sync_window_user_ids_count", &[]), windows);
    assert_eq!(
        s.value("account_sync_window_user_ids_sum", &[]),
        decoded as f64
    );

    // API calls against what the emulator received.
    for api in ["account_check", "account_import"] {
        let req = |result: &str| {
            s.value(
                "account_sync_api_requests_total",
                &[("api", api), ("result", result)],
            )
        };
        assert_eq!(
            s.sum("account_sync_api_requests_total", &[("api", api)]),
            count(&stats.calls, api) as f64,
            "{api}: attempts = requests the emulator received"
        );
        assert_eq!(
            req("ok"),
            count(&stats.accepted, api) as f64,
            "{api}: ok = accepted"
        );
        assert_eq!(
            req("frequency_limited"),
            count(&stats.rate_limited, api) as f64,
            "{api}: frequency limited"
        );
        assert_eq!(
            s.value("account_sync_frequency_limited_total", &[("api", api)]),
            req("frequency_limited")
        );
        // Every retryable answer was retried (the budget is far from spent).
        assert_eq!(
            s.value("account_sync_api_retries_total", &[("api", api)]),
            req("retryable") + req("frequency_limited"),
            "{api}: retries"
        );
        assert_eq!(req("systemic"), 0.0, "{api}");
        assert_eq!(
            s.value(
                "account_sync_api_request_duration_seconds_count",
                &[("api", api)]
            ),
            s.sum("account_sync_api_requests_total", &[("api", api)])
        );
        assert_eq!(
            s.value("account_sync_limiter_wait_seconds_count", &[("api", api)]),
            s.sum("account_sync_api_requests_total", &[("api", api)])
        );
    }
    assert_eq!(
        s.value(
            "account_sync_api_requests_total",
            &[("api", "account_check"), ("result", "ok")]
        ),
        windows,
        "one successful account_check per window"
    );
    assert_eq!(
        s.value(
            "account_sync_api_requests_total",
            &[("api", "account_import"), ("result", "ok")]
        ),
        by_status["imported"],
        "one successful account_import per imported user"
    );
    assert_eq!(
        s.value(
            "account_sync_api_requests_total",
            &[("api", "account_import"), ("result", "permanent")]
        ),
        1.0,
        "the sensitive-word answer"
    );
    assert_eq!(
        s.sum(
            "account_sync_api_requests_total",
            &[("result", "retryable")]
        ),
        stats.transient_errors as f64,
        "retryable answers = injected transient errors"
    );
    assert!(
        stats.transient_errors > 0,
        "the seeded dice injected no transient error; the retry counter went untested"
    );

    // Limiter: one replica owns every partition, so its share is the whole budget.
    assert_eq!(
        s.value(
            "account_sync_limiter_ceiling_calls_per_second",
            &[("api", "account_check")]
        ),
        100.0
    );
    assert_eq!(
        s.value(
            "account_sync_limiter_ceiling_calls_per_second",
            &[("api", "account_import")]
        ),
        200.0
    );
    for api in ["account_check", "account_import"] {
        let rate = s.value(
            "account_sync_limiter_rate_calls_per_second",
            &[("api", api)],
        );
        assert!(rate > 0.0 && rate.is_finite(), "{api} limiter rate {rate}");
    }

    // Health and state.
    assert_eq!(s.value("account_sync_ready", &[]), 1.0);
    assert_eq!(s.value("account_sync_paused", &[]), 0.0);
    assert_eq!(s.value("account_sync_windows_in_flight", &[]), 0.0);
    assert_eq!(s.matching("account_sync_systemic_fault", &[]).count(), 0);
    let expiry = s.value("account_sync_usersig_expiry_timestamp_seconds", &[]);
    let left = s.value("account_sync_usersig_time_to_expiry_seconds", &[]);
    assert!((expiry - now_secs() - left).abs() < 60.0, "{expiry} {left}");
    assert!(
        (179.0 * 86_400.0..=180.0 * 86_400.0).contains(&left),
        "UserSig valid for 180 days, {left} s left"
    );

    // End-to-end latency: one observation per outcome.
    assert_eq!(
        s.value("account_sync_end_to_end_latency_seconds_count", &[]),
        decoded as f64
    );

    // Build info and process metrics.
    let build = s
        .matching("account_sync_build_info", &[])
        .next()
        .expect("build info");
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build.labels["revision"].is_empty());
    #[cfg(target_os = "linux")]
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(s.names().contains(name), "{name} missing");
    }

    // Real Prometheus tooling agrees with the exposition.
    promtool_check_metrics(&path);

    // The dashboard and the alerts query only metrics that exist.
    let names = s.names();
    let missing: Vec<String> = queried_metric_names()
        .into_iter()
        .filter(|n| !names.contains(n) && !FAULT_ONLY.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts query metrics that are not in the scrape: {missing:?}"
    );
}

/// A wrong secret key is a systemic fault: `/readyz` answers 503 with the reason, the fault and
/// the pause show in the metrics, nothing is dead-lettered, `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_key_makes_the_worker_not_ready() {
    let mut cfg = emulator_config();
    cfg.secret_key = Some(SecretKey::new("the-emulator-has-another-key"));
    let env = WorkerEnv::start(2, cfg).await;
    let users: Vec<String> = (0..10).map(|i| format!("fault-user-{i}")).collect();
    env.produce_users(&users).await;
    // Windows waiting out the fault keep waiting during the drain: keep the drain short.
    let args = env.args(&[
        "--kafka-property",
        "statistics.interval.ms=200",
        "--drain-timeout",
        "1s",
    ]);
    let (worker, admin) = RunningWorker::start_with_admin(args).await;

    let ((status, body), _) = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || admin_get(admin, "/readyz"),
        |(status, body)| *status == 503 && body.contains("systemic fault"),
    )
    .await;
    assert_eq!(status, 503, "/readyz: {body}");
    assert!(
        body.starts_with("not ready: systemic fault (code 70009)"),
        "/readyz body: {body}"
    );
    let (status, _) = admin_get(admin, "/healthz").await;
    assert_eq!(status, 200);

    let (s, settled) = scrape_until(admin, Duration::from_secs(30), |s| {
        let lags = s.by("account_sync_consumer_lag", "partition");
        s.value("account_sync_paused", &[]) == 1.0
            && lags.len() == 2
            && lags.values().all(|&l| l > 0.0)
    })
    .await;
    let path = save(&s, "metrics-scrape-systemic.txt");
    assert!(
        settled,
        "intake not paused, or no lag; last scrape in {}",
        path.display()
    );
    worker
        .stop()
        .await
        .expect("clean stop during a systemic fault");

    assert_eq!(s.value("account_sync_ready", &[]), 0.0);
    assert_eq!(
        s.value("account_sync_systemic_fault", &[("code", "70009")]),
        1.0
    );
    assert_eq!(s.matching("account_sync_systemic_fault", &[]).count(), 1);
    assert!(s.sum("account_sync_api_requests_total", &[("result", "systemic")]) >= 1.0);
    assert_eq!(s.sum("account_sync_outcomes_total", &[]), 0.0);
    assert_eq!(s.sum("account_sync_events_dead_lettered_total", &[]), 0.0);
    assert_eq!(env.dead_letter_count(), 0);
    assert_eq!(
        s.sum("account_sync_consumer_lag", &[]),
        users.len() as f64,
        "nothing committed: the whole topic lags"
    );

    promtool_check_metrics(&path);

    // What only a fault scrape shows is queried correctly too.
    let names = s.names();
    for name in FAULT_ONLY {
        assert!(names.contains(*name), "{name} missing during a fault");
        assert!(
            queried_metric_names().contains(*name),
            "{name} is in FAULT_ONLY but nothing queries it"
        );
    }
}

/// The dashboard is a Grafana dashboard model the chart can ship as is, and the alert file has
/// every alert the issue asks for.
#[test]
fn the_dashboard_and_the_alerts_are_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "account-sync");
    assert!(d["schemaVersion"].as_i64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().expect("variables");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a ${{datasource}} variable of Prometheus data sources"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_i64(), "gridPos.{k} of {}", p["title"]);
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");

    let alerts = alerts();
    for name in [
        "AccountSyncNotReady",
        "AccountSyncDeadLetterRateHigh",
        "AccountSyncConsumerLagGrowing",
        "AccountSyncUserSigExpiringSoon",
        "AccountSyncFrequencyLimited",
        "AccountSyncStalled",
    ] {
        assert!(
            alerts.contains(&format!("alert: {name}\n")),
            "{name} missing"
        );
    }
}

/// The README's metrics table lists exactly the metrics the code declares, with their types and
/// label names in order (`process_*`, the process collector's, is listed but not declared).
#[test]
fn the_readme_lists_every_declared_metric() {
    let readme = std::fs::read_to_string(crate_path("README.md")).expect("README.md");
    let listed = readme_metrics(&readme);
    let declared: BTreeMap<String, (String, Vec<String>)> = DECLARED
        .iter()
        .map(|d| {
            let labels = d.labels.iter().map(|l| l.to_string()).collect();
            (d.name.to_owned(), (d.kind.as_str().to_owned(), labels))
        })
        .collect();
    let names: BTreeSet<&String> = listed.keys().chain(declared.keys()).collect();
    let differ: Vec<String> = names
        .into_iter()
        .filter(|n| listed.get(*n) != declared.get(*n))
        .map(|n| {
            let (r, d) = (listed.get(n), declared.get(n));
            format!("{n}: README {r:?}, declared {d:?}")
        })
        .collect();
    assert!(
        differ.is_empty(),
        "README.md's metrics table against DECLARED (type, labels):\n{}",
        differ.join("\n")
    );
}

/// The rows of the README's "### Metrics" table: name → (type, label names in order). A label
/// name is a backticked word of the labels column outside parentheses (which hold its values).
fn readme_metrics(readme: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let section = readme
        .split("\n### ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("a \"### Metrics\" section");
    section
        .lines()
        .filter(|l| l.starts_with("| `account_sync_"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            (name, (cells[2].to_owned(), label_names(cells[3])))
        })
        .collect()
}

/// The backticked words of `cell` outside parentheses.
fn label_names(cell: &str) -> Vec<String> {
    let mut depth = 0;
    let outside: String = cell
        .chars()
        .filter(|&c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => return depth == 0,
            }
            false
        })
        .collect();
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_sample_parser_reads_labels_and_special_values() {
    let s = parse_sample(r#"a_total{x="1",y="q\"uo\\te"} 3"#).unwrap();
    assert_eq!(s.name, "a_total");
    assert_eq!(s.labels["x"], "1");
    assert_eq!(s.labels["y"], r#"q"uo\te"#);
    assert_eq!(s.value, 3.0);
    let s = parse_sample("b_bucket{le=\"+Inf\"} +Inf").unwrap();
    assert_eq!(s.labels["le"], "+Inf");
    assert!(s.value.is_infinite());
    let s = parse_sample("c 1.5e-3").unwrap();
    assert!(s.labels.is_empty());
    assert_eq!(s.value, 0.0015);
    assert_eq!(
        metric_names_in("rate(account_sync_a_total[5m]) / xaccount_sync_b + account_sync_c_bucket"),
        BTreeSet::from([
            "account_sync_a_total".to_owned(),
            "account_sync_c_bucket".to_owned()
        ])
    );
}
