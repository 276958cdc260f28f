//! The chart's monitoring files (the Grafana dashboard, the alert rules) and the Prometheus
//! tools (`promtool`, the `prometheus` server, both from the Debian package `prometheus`) that
//! the observability tests check them with.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The Grafana dashboard the chart ships.
pub const DASHBOARD: &str = "helm/account-sync/files/dashboard.json";
/// The alert rules the chart ships (a plain Prometheus rule file).
pub const ALERTS: &str = "helm/account-sync/files/alerts.yaml";

/// `rel` inside the crate.
pub fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The dashboard, parsed.
pub fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(crate_path(DASHBOARD)).expect("dashboard file");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// The alert rule file's text.
pub fn alerts() -> String {
    std::fs::read_to_string(crate_path(ALERTS)).expect("alerts file")
}

/// One query of a dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The panel's title.
    pub panel: String,
    /// The target's refId (A, B, ...).
    pub ref_id: String,
    /// The PromQL, template variables unsubstituted.
    pub expr: String,
}

/// Every target of every panel, rows' nested panels included.
pub fn panel_queries(dashboard: &serde_json::Value) -> Vec<PanelQuery> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<PanelQuery>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    panel: p["title"].as_str().unwrap_or_default().to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
            if let Some(nested) = p["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"].as_array().expect("dashboard panels"),
        &mut out,
    );
    out
}

/// True when the tests run in CI (`CI` set to anything but `false`/`0`, as `.ci/run`'s runner
/// sets `CI=true`): tools a developer's machine may lack are then required.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The path of Prometheus tool `name` (on PATH, or in /usr/bin where the Debian package puts
/// it). Missing: a panic naming the package in CI, else `None` after a note that `what` is
/// skipped.
pub fn prometheus_tool(name: &str, what: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is required in CI (CI is set): install the Debian package `prometheus` \
             (.ci/run does); it is needed for {what}"
        );
        eprintln!("note: {name} is not installed (Debian package `prometheus`); skipping {what}");
    }
    found
}
