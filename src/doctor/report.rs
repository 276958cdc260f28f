//! The doctor's findings: one [`Check`] per line, and how they are printed (text or JSON).

use std::fmt::Display;

use serde::Serialize;
use serde_json::{Map, Value};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// ✓: it works.
    Pass,
    /// ✗: it will not work; `fix` says what to do.
    Fail,
    /// Not checked, because a check it depends on failed (or, for `replicas`, nothing to check
    /// against). Does not fail the run by itself: its cause is a ✗ of its own.
    Skip,
}

impl Status {
    fn symbol(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skip => "-",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name (`brokers`, `chat-api`, ...), for machines and for the eye.
    pub check: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Figures behind the message (partition counts, latency), for `--json`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
}

impl Check {
    /// A passed check.
    pub fn pass(check: &'static str, message: impl Into<String>) -> Check {
        Check::new(check, Status::Pass, message.into(), None)
    }

    /// A failed check and what to do about it.
    pub fn fail(check: &'static str, message: impl Display, fix: impl Into<String>) -> Check {
        Check::new(check, Status::Fail, message.to_string(), Some(fix.into()))
    }

    /// A check not made because of `why`.
    pub fn skip(check: &'static str, why: impl Display) -> Check {
        Check::new(check, Status::Skip, format!("not checked: {why}"), None)
    }

    /// The check for `result`: passed with its message, or failed with the problem's own fix.
    pub fn of<P: Problem>(check: &'static str, result: Result<String, P>) -> Check {
        match result {
            Ok(message) => Check::pass(check, message),
            Err(p) => {
                let fix = p.fix();
                Check::fail(check, p, fix)
            }
        }
    }

    /// Adds a figure to `data`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Check {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    fn new(check: &'static str, status: Status, message: String, fix: Option<String>) -> Check {
        Check {
            check,
            status,
            message,
            fix,
            data: Map::new(),
        }
    }

    /// `✓ name: message`, with ` → fix` on a failure: one line.
    fn line(&self) -> String {
        let mut line = format!("{} {}: {}", self.status.symbol(), self.check, self.message);
        if let Some(fix) = &self.fix {
            line.push_str(" → ");
            line.push_str(fix);
        }
        line
    }
}

/// `1 partition`, `6 partitions`.
pub(super) fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// A problem a check found: its `Display` says what is wrong, [`Problem::fix`] what to do.
pub trait Problem: Display {
    /// What the user should do about it.
    fn fix(&self) -> String;
}

/// Every check of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// In the order they are printed.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// 0 when every check passed (or was not needed), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.ok())
    }

    /// One line per check and a closing line.
    pub fn text(&self) -> String {
        let mut out: String = self.checks.iter().map(|c| c.line() + "\n").collect();
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.check)
            .collect();
        let skipped = match count(Status::Skip) {
            0 => String::new(),
            n => format!(", {n} not checked"),
        };
        if failed.is_empty() {
            out.push_str(&format!(
                "doctor: every check passed ({} passed{skipped})\n",
                count(Status::Pass)
            ));
        } else {
            out.push_str(&format!(
                "doctor: {} of {} checks failed ({}){skipped}\n",
                failed.len(),
                self.checks.len(),
                failed.join(", ")
            ));
        }
        out
    }

    /// `{"ok": bool, "checks": [...]}` on one line.
    pub fn json(&self) -> String {
        serde_json::json!({ "ok": self.ok(), "checks": self.checks }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            checks: vec![
                Check::pass("brokers", "1 broker").with("brokers", 1),
                Check::fail("rates", "too fast", "slow down"),
                Check::skip("replicas", "no --replicas"),
            ],
        }
    }

    #[test]
    fn a_failure_fails_the_run_and_a_skip_does_not() {
        assert_eq!(report().exit_code(), 1);
        let mut r = report();
        r.checks.remove(1);
        assert_eq!(r.exit_code(), 0);
        assert!(
            r.text().ends_with("(1 passed, 1 not checked)\n"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn one_line_per_check_with_the_fix() {
        let text = report().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "✓ brokers: 1 broker");
        assert_eq!(lines[1], "✗ rates: too fast → slow down");
        assert_eq!(lines[2], "- replicas: not checked: no --replicas");
        assert_eq!(
            lines[3],
            "doctor: 1 of 3 checks failed (rates), 1 not checked"
        );
    }

    #[test]
    fn json_has_status_fix_and_data() {
        let v: Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][0]["status"], "pass");
        assert_eq!(v["checks"][0]["data"]["brokers"], 1);
        assert!(v["checks"][0].get("fix").is_none());
        assert_eq!(v["checks"][1]["fix"], "slow down");
        assert_eq!(v["checks"][2]["status"], "skip");
    }
}
