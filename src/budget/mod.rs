//! Sharing the app's rate budget among the replicas, by demand.
//!
//! The vendor's limits are per app, so the replicas of one deployment must share them. Splitting
//! by the input partitions each owns needs nobody else but wastes the budget under skew: the
//! replica with the hot partition may use only its partitions' share while the others idle. So
//! each replica publishes its demand per API and a lease to a small coordination topic
//! (`--budget-topic`, keyed by member, a few times a second), reads everybody's, and computes the
//! same max-min fair split over the live members — no infrastructure beyond Kafka, no leader.
//! While the topic is not usable, each replica falls back to its partition share (safe: the
//! shares add up to the budget without anybody's help). See `docs/ARCHITECTURE.md`, "Budget".
//!
//! - [`split`]: max-min fair shares of one API's budget;
//! - [`demand`]: a replica's demand from its limiter's use and waiting calls;
//! - [`table`]: the leases as read, and the view as of a cutoff every member agrees on;
//! - [`grant`]: from a target share to the ceiling used (increases settle first);
//! - [`coordinator`]: the loop that publishes, reads and sets the limiters; [`topic`] creates
//!   the topic.

use std::time::Duration;

use clap::{Args, ValueEnum};

pub mod coordinator;
pub mod demand;
pub mod grant;
pub mod split;
pub mod table;
pub mod topic;

/// How the replicas of a group share the app's rate budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BudgetSplit {
    /// By demand, through the coordination topic (falls back to `partitions` while the topic is
    /// not usable).
    Demand,
    /// By the fraction of the input partitions each replica owns.
    Partitions,
}

/// `--budget-*`: how replicas share the app's rate budget.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// How replicas share the app's rate budget: demand (each gets a max-min fair share of what
    /// they want, agreed through --budget-topic) or partitions (each gets the fraction of the
    /// input partitions it owns).
    #[arg(
        long = "budget-split",
        env = "ACCOUNT_SYNC_BUDGET_SPLIT",
        value_enum,
        default_value = "demand"
    )]
    pub split: BudgetSplit,
    /// Compacted topic the replicas publish their demand and lease to (default: GROUP-budget).
    #[arg(long = "budget-topic", env = "ACCOUNT_SYNC_BUDGET_TOPIC")]
    pub topic: Option<String>,
    /// Do not create the budget topic when it is missing (create it yourself: one partition,
    /// cleanup.policy=compact).
    #[arg(
        long = "no-budget-topic-create",
        env = "ACCOUNT_SYNC_NO_BUDGET_TOPIC_CREATE",
        action = clap::ArgAction::SetTrue
    )]
    pub no_create: bool,
    /// How often a replica publishes its demand and recomputes its share.
    #[arg(long = "budget-interval", env = "ACCOUNT_SYNC_BUDGET_INTERVAL", default_value = "250ms", value_parser = crate::parse::parse_duration)]
    pub interval: Duration,
    /// How long a published demand holds its share: a replica that vanished without a word
    /// releases its share this long after its last lease.
    #[arg(long = "budget-lease", env = "ACCOUNT_SYNC_BUDGET_LEASE", default_value = "2s", value_parser = crate::parse::parse_duration)]
    pub lease: Duration,
}

impl BudgetArgs {
    /// Checks the interval and the lease; errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(50) || self.interval > Duration::from_secs(5) {
            return Err(format!(
                "--budget-interval must be between 50ms and 5s, got {:?}",
                self.interval
            ));
        }
        if self.lease < self.interval * 4 {
            return Err(format!(
                "--budget-lease ({:?}) must be at least 4 × --budget-interval ({:?}): a lease must outlive a few missed publications",
                self.lease, self.interval
            ));
        }
        if let Some(t) = &self.topic {
            crate::parse::validate_topic("--budget-topic", t)?;
        }
        Ok(())
    }

    /// The coordination topic for consumer group `group`.
    pub fn topic_for(&self, group: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{group}-budget"))
    }
}

/// A member id unique to this process: the host, the process id and the start time, so that a
/// restarted replica is a new member (its predecessor's lease simply expires).
pub fn member_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    // Several workers in one process (the tests, the demo) still differ by the random part.
    format!(
        "{host}-{}-{started:x}-{:04x}",
        std::process::id(),
        fastrand::u16(..)
    )
}
