//! Settings of `account-sync dlq replay`, and their validation into a [`Plan`].

use std::time::SystemTime;

use clap::builder::PossibleValuesParser;
use clap::Args;

use super::filter::{parse_time, Filter};
use crate::config::KafkaArgs;
use crate::domain::{failure_class, Stage};
use crate::parse::validate_topic;

/// Settings of `account-sync dlq replay`. The Kafka connection, the worker's group and its topics
/// are the worker's own flags and `ACCOUNT_SYNC_*` variables, so a replay run next to a
/// deployment needs no settings of its own.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the replay itself: its committed offsets are where the next run resumes.
    /// Default: the worker's --group-id followed by -dlq-replay.
    #[arg(long, env = "ACCOUNT_SYNC_DLQ_REPLAY_GROUP", value_name = "GROUP")]
    pub group: Option<String>,
    /// Topic to replay to. Default: --input-topic.
    #[arg(long, value_name = "TOPIC")]
    pub to: Option<String>,
    /// Only dead letters that failed at this stage (repeatable: any of them).
    #[arg(long, value_name = "STAGE", value_parser = PossibleValuesParser::new(Stage::ALL.map(Stage::as_str)))]
    pub stage: Vec<String>,
    /// Only dead letters of this failure class (repeatable: any of them).
    #[arg(long, value_name = "CLASS", value_parser = PossibleValuesParser::new(failure_class::ALL))]
    pub class: Vec<String>,
    /// Only dead letters with this vendor error code, e.g. 40005; 0 = none (repeatable: any of them).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub code: Vec<i64>,
    /// Only dead letters that failed at or after this time: RFC 3339 (2026-11-22T12:00:00Z) or a
    /// time ago (2h, 30m, 7days). Compared with the failed-at header (else the record timestamp).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<SystemTime>,
    /// Only dead letters that failed before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<SystemTime>,
    /// Count and list (on stdout) what would be replayed; write nothing, commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replay at most N matching dead letters, then stop (the next run continues after them).
    #[arg(long, value_name = "N", value_parser = parse_limit)]
    pub limit: Option<u64>,
}

fn parse_limit(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A validated replay.
#[derive(Debug, Clone)]
pub struct Plan {
    /// bootstrap.servers
    pub brokers: String,
    /// `--kafka-property` pairs for the dead-letter consumer.
    pub consumer_properties: Vec<(String, String)>,
    /// `--kafka-property` pairs for the producer.
    pub producer_properties: Vec<(String, String)>,
    /// Where the dead letters are read.
    pub dlq_topic: String,
    /// Where they are replayed to.
    pub target_topic: String,
    /// The setting that named it (`--to` or `--input-topic`), for errors.
    pub target_flag: &'static str,
    /// The replay's consumer group.
    pub group: String,
    /// Which dead letters are replayed.
    pub filter: Filter,
    /// List only.
    pub dry_run: bool,
    /// At most this many matching dead letters.
    pub limit: Option<u64>,
}

impl ReplayArgs {
    /// Checks every setting that can be checked without a broker; errors name the setting.
    pub fn plan(&self) -> Result<Plan, String> {
        let k = &self.kafka;
        k.validate()?;
        let target = self.to.clone().unwrap_or_else(|| k.input_topic.clone());
        if self.to.is_some() {
            validate_topic("--to", &target)?;
        }
        if target == k.dlq_topic {
            return Err(format!(
                "--to {target:?} is the dead-letter topic --dlq-topic: replay to the input topic"
            ));
        }
        let group = self
            .group
            .clone()
            .unwrap_or_else(|| format!("{}-dlq-replay", k.group_id));
        if group.trim().is_empty() {
            return Err("--group is empty".into());
        }
        if group == k.group_id {
            // The worker's members own that group: the broker refuses commits from outside it,
            // and the worker would see offsets of a topic it does not read.
            return Err(format!(
                "--group {group:?} is the worker's --group-id: the replay needs a group of its own"
            ));
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err("--since must be before --until".into());
            }
        }
        Ok(Plan {
            brokers: k.brokers.clone(),
            consumer_properties: k.consumer_properties(),
            producer_properties: k.producer_properties(),
            dlq_topic: k.dlq_topic.clone(),
            target_topic: target,
            target_flag: if self.to.is_some() {
                "--to"
            } else {
                "--input-topic"
            },
            group,
            filter: Filter {
                stages: self.stage.clone(),
                classes: self.class.clone(),
                codes: self.code.clone(),
                since: self.since,
                until: self.until,
            },
            dry_run: self.dry_run,
            limit: self.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        replay: ReplayArgs,
    }

    fn parse(args: &[&str]) -> Result<ReplayArgs, String> {
        let all = ["test", "--brokers", "localhost:9092"].iter().chain(args);
        Cli::try_parse_from(all)
            .map(|c| c.replay)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_worker() {
        let p = parse(&[]).unwrap().plan().unwrap();
        assert_eq!(p.dlq_topic, "account-dlq");
        assert_eq!(p.target_topic, "signups");
        assert_eq!(p.group, "account-sync-dlq-replay");
        assert!(p.filter.is_everything() && !p.dry_run && p.limit.is_none());
        let p = parse(&["--group-id", "prod", "--input-topic", "in", "--to", "other"])
            .unwrap()
            .plan()
            .unwrap();
        assert_eq!(
            (p.group.as_str(), p.target_topic.as_str()),
            ("prod-dlq-replay", "other")
        );
    }

    #[test]
    fn filters_are_repeatable() {
        let a = parse(&[
            "--stage", "decode", "--stage", "import", "--class", "rejected", "--code", "40005",
            "--code", "-1", "--since", "2h", "--limit", "5",
        ])
        .unwrap();
        let p = a.plan().unwrap();
        assert_eq!(p.filter.stages, ["decode", "import"]);
        assert_eq!(p.filter.classes, ["rejected"]);
        assert_eq!(p.filter.codes, [40005, -1]);
        assert!(p.filter.since.is_some() && p.filter.until.is_none());
        assert_eq!(p.limit, Some(5));
    }

    #[test]
    fn bad_settings_name_themselves() {
        for (args, name) in [
            (&["--stage", "send"][..], "--stage"),
            (&["--class", "flaky"], "--class"),
            (&["--code", "x"], "--code"),
            (&["--since", "yesterday"], "--since"),
            (&["--limit", "0"], "--limit"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(name), "{args:?}: {e}");
        }
        for (args, name) in [
            (&["--to", "account-dlq"][..], "--to"),
            (&["--to", "bad topic"], "--to"),
            (&["--group", "account-sync"], "--group"),
            (&["--dlq-topic", "signups"], "--input-topic"),
            (&["--since", "1h", "--until", "2h"], "--since"),
            (
                &["--kafka-property", "enable.auto.commit=true"],
                "enable.auto.commit",
            ),
        ] {
            let e = parse(args).unwrap().plan().unwrap_err();
            assert!(e.contains(name), "{args:?}: {e}");
        }
    }
}
