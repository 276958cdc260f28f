//! `account-sync doctor`: "will this deployment work?", asked before the first real run.
//!
//! Takes the very settings of `account-sync run` ([`WorkerArgs`]: flags, `ACCOUNT_SYNC_*`
//! variables, the secret key file) and checks, one line each:
//!
//! - `config`: the settings validate as `run` would validate them;
//! - `brokers`, `input-topic`, `outcome-topic`, `dlq-topic`, `group`, `group-protocol`,
//!   `transactions`: Kafka, with the `--kafka-property` settings (SASL, TLS) as given ([`kafka`]);
//!   `group-protocol` says which consumer group protocols the brokers serve, from their
//!   ApiVersions answers ([`protocols`]);
//! - `chat-api`: one `account_check` of the admin's own identifier, with a systemic answer
//!   explained ([`chat`]);
//! - `schema-registry` (registry input formats only): the registry answers with the configured
//!   credentials ([`registry`]);
//! - `usersig`, `rates`, `replicas`: settings that validate but would misbehave ([`limits`]);
//! - `deletion` (with `--apply-deletes`): not checked — trying it would delete an account — but
//!   says where the app's switch is ([`limits`]).
//!
//! A check that cannot run because another one failed (no topic without brokers) is reported as
//! not checked rather than failed, so every ✗ names its own cause. Nothing here ever prints the
//! secret key or a UserSig: the Chat client's errors carry no URL, and no check reads the key
//! except to sign.
//!
//! Exit code 0 when no check failed, 1 otherwise (2, clap's, for unparsable flags).

mod chat;
mod kafka;
mod limits;
mod protocols;
mod registry;
mod report;

use std::sync::Arc;
use std::time::Duration;

use crate::chat::client::{ApiLimiters, NoObserver};
use crate::chat::ChatClient;
use crate::config::{DeliveryArg, WorkerArgs};
use crate::parse::parse_duration;

pub use report::{Check, Report, Status};

/// Settings of `account-sync doctor`: the worker's own, plus what only the doctor needs.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Replicas the deployment will run (e.g. the chart's replicaCount or the autoscaler's
    /// maximum), checked against the input topic's partition count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: Option<u32>,
    /// How long each Kafka step (metadata, committed offsets, transactions) may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub kafka_timeout: Duration,
    /// Print one JSON object (for machines) instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

/// Runs every check; Kafka and the Chat API are asked at the same time.
pub async fn run(args: &DoctorArgs) -> Report {
    let w = &args.worker;
    let (config, client) = config_check(w);
    let kafka = {
        let (w, timeout) = (w.clone(), args.kafka_timeout);
        tokio::task::spawn_blocking(move || kafka::check(&w, timeout))
    };
    let chat = async {
        match &client {
            Some(c) => chat::check(c).await,
            None => Check::skip("chat-api", "the Chat API settings are invalid (see config)"),
        }
    };
    let (kafka, chat, registry) = tokio::join!(kafka, chat, registry::check(w));
    let kafka = kafka.unwrap_or_else(|e| kafka::Findings::crashed(&e.to_string()));
    let mut checks = vec![config];
    checks.extend(kafka.checks);
    checks.push(chat);
    checks.extend(registry);
    checks.push(limits::usersig(
        w.chat.usersig_validity,
        w.chat.usersig_refresh_margin,
    ));
    checks.push(limits::rates(&w.chat));
    checks.extend(limits::deletion(w.kinds.apply_deletes));
    checks.push(limits::replicas(args.replicas, kafka.input_partitions));
    Report { checks }
}

/// The `config` check, as `run` validates (settings, secret key, the Chat client), and the
/// client for the `chat-api` check when the Chat settings allow one.
fn config_check(w: &WorkerArgs) -> (Check, Option<ChatClient>) {
    let client = w
        .chat
        .chat_config()
        .and_then(|c| ChatClient::new(c, ApiLimiters::unlimited(), Arc::new(NoObserver)));
    let outcome = w
        .validate()
        .and(client.as_ref().map(|_| ()).map_err(Clone::clone));
    let check = match outcome {
        Ok(()) => Check::pass(
            "config",
            format!(
                "valid: {} delivery, group {}, {} → {} (outcomes) and {} (dead letters)",
                match w.delivery {
                    DeliveryArg::ExactlyOnce => "exactly-once",
                    DeliveryArg::AtLeastOnce => "at-least-once",
                },
                w.kafka.group_id,
                w.kafka.input_topic,
                w.outcome_topic,
                w.kafka.dlq_topic,
            ),
        ),
        Err(e) => Check::fail(
            "config",
            e,
            "fix the setting the message names (`account-sync run --help` lists every flag and its ACCOUNT_SYNC_* variable)",
        ),
    };
    (check, client.ok())
}
