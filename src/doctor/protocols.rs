//! Which consumer group protocols the brokers serve: the `group-protocol` check.
//!
//! The consumer protocol (KIP-848) needs the `ConsumerGroupHeartbeat` API (key 68) in the version
//! librdkafka speaks ([`HEARTBEAT_VERSION`]); every broker that speaks Kafka serves the classic
//! protocol. A broker says which APIs it serves in its answer to `ApiVersions`, the first request
//! on every connection. librdkafka has no public API for that answer, but it logs it with
//! `debug=feature` ("Broker API support:", then one `ApiKey NAME (KEY) Versions MIN..MAX` line per
//! API), over whatever security protocol the settings name (TLS, SASL), where a request of our own
//! would need a second Kafka client. So the doctor's consumer runs with that debug context
//! ([`debug_with_feature`]), its context hands each log line to [`ApiLog::observe`], and the check
//! judges every broker it connected to: the bootstrap broker and the group's coordinator, the one
//! that would serve the heartbeats.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::report::{Check, Problem};
use crate::kafka::group_protocol::GroupProtocol;

/// ApiKey of `ConsumerGroupHeartbeat`.
const CONSUMER_GROUP_HEARTBEAT: i16 = 68;

/// The version of `ConsumerGroupHeartbeat` librdkafka 2.12 sends (it asks for 1..1): a broker that
/// serves only v0 (Kafka 3.7's early access) cannot serve this build.
const HEARTBEAT_VERSION: i16 = 1;

/// The `debug` property the doctor's consumer runs with: the user's, plus `feature`, the context
/// in which librdkafka logs each broker's ApiVersions answer.
pub(super) fn debug_with_feature(user: Option<&str>) -> String {
    match user.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => format!("{d},feature"),
        None => "feature".into(),
    }
}

/// What the brokers said about `ConsumerGroupHeartbeat`, per broker connection, from librdkafka's
/// log.
#[derive(Debug, Default)]
pub(super) struct ApiLog {
    brokers: Mutex<BTreeMap<String, Answer>>,
}

/// One connection's ApiVersions answer as far as the heartbeat goes: `Some(range)` when it is
/// served, `None` when the answer lacked it.
#[derive(Debug, Default, Clone, Copy)]
struct Answer {
    /// The last complete answer (its feature lines, which follow the API lines, were seen).
    done: Option<Option<(i16, i16)>>,
    /// An answer whose lines are still coming.
    pending: Option<Option<(i16, i16)>>,
}

impl ApiLog {
    /// Takes one librdkafka log line (facility, message).
    pub fn observe(&self, fac: &str, message: &str) {
        if fac != "APIVERSION" {
            return;
        }
        // "[thrd:NAME]: BROKER: text" (the thread part unless log.thread.name=false).
        let message = match message.strip_prefix("[thrd:") {
            Some(rest) => rest.split_once("]: ").map_or(rest, |(_, m)| m),
            None => message,
        };
        let Some((broker, text)) = message.split_once(": ") else {
            return;
        };
        let text = text.trim();
        let mut brokers = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let answer = brokers.entry(broker.to_owned()).or_default();
        if text == "Broker API support:" {
            answer.pending = Some(None);
        } else if let Some(range) = text
            .strip_prefix("ApiKey ")
            .and_then(|t| t.split_once(&format!("({CONSUMER_GROUP_HEARTBEAT}) Versions ")))
            .and_then(|(_, range)| range.split_once(".."))
            .and_then(|(min, max)| Some((min.parse().ok()?, max.parse().ok()?)))
        {
            if answer.pending.is_some() {
                answer.pending = Some(Some(range));
            }
        } else if text.starts_with("Feature ") {
            // The features librdkafka derives from the answer: the API lines are complete.
            if let Some(p) = answer.pending.take() {
                answer.done = Some(p);
            }
        }
    }

    /// Per broker (`host:port`, its connections taken together): the range of
    /// `ConsumerGroupHeartbeat` versions, `None` where a connection's answer lacked it.
    fn by_broker(&self) -> BTreeMap<String, Option<(i16, i16)>> {
        let brokers = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, Option<(i16, i16)>> = BTreeMap::new();
        for (name, answer) in brokers.iter() {
            let Some(range) = answer.done else { continue };
            // "host:port/1", "host:port/bootstrap", "sasl_ssl://host:port/2", or the consumer's
            // logical broker of the group's coordinator, "GroupCoordinator".
            let host = match name.rsplit_once('/').map_or(name.as_str(), |(h, _)| h) {
                "GroupCoordinator" => "the group coordinator",
                host => host,
            };
            out.entry(host.to_owned())
                .and_modify(|r| *r = r.and(range))
                .or_insert(range);
        }
        out
    }
}

/// `--group-protocol consumer` against brokers that cannot serve it.
#[derive(Debug)]
struct Unsupported {
    /// What each broker lacks.
    lacking: Vec<String>,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--group-protocol consumer needs ConsumerGroupHeartbeat v{HEARTBEAT_VERSION} (KIP-848, Apache Kafka 4.0 or later), and {}; with it the worker would start but never be given a partition",
            self.lacking.join(", ")
        )
    }
}

impl Problem for Unsupported {
    fn fix(&self) -> String {
        "use --group-protocol classic (ACCOUNT_SYNC_GROUP_PROTOCOL, the chart's kafka.groupProtocol), or upgrade the brokers to Apache Kafka 4.0 or later with the consumer rebalance protocol enabled (group.coordinator.rebalance.protocols includes consumer, the default since 4.0)".into()
    }
}

/// The `group-protocol` check: the protocols the brokers asked serve, against `want`.
pub(super) fn check(log: &ApiLog, want: GroupProtocol) -> Check {
    let brokers = log.by_broker();
    if brokers.is_empty() {
        return Check::skip(
            "group-protocol",
            "librdkafka reported no broker's API versions, so the group protocols they serve are unknown",
        );
    }
    let serves = |r: &Option<(i16, i16)>| {
        r.is_some_and(|(min, max)| (min..=max).contains(&HEARTBEAT_VERSION))
    };
    let lacking: Vec<String> = brokers
        .iter()
        .filter(|(_, r)| !serves(r))
        .map(|(b, r)| match r {
            None => format!("broker {b} does not serve it"),
            Some((min, max)) => format!("broker {b} serves only v{min}..{max}"),
        })
        .collect();
    let asked = brokers.keys().cloned().collect::<Vec<_>>().join(", ");
    let protocols: &[&str] = match lacking.is_empty() {
        true => &["classic", "consumer"],
        false => &["classic"],
    };
    let check = match (lacking.is_empty(), want) {
        (true, _) => {
            let ranges: std::collections::BTreeSet<String> = brokers
                .values()
                .flatten()
                .map(|(min, max)| format!("v{min}..{max}"))
                .collect();
            Check::pass(
                "group-protocol",
                format!(
                    "the brokers ({asked}) serve both group protocols, classic and consumer (KIP-848: ConsumerGroupHeartbeat {}); the worker uses {}",
                    ranges.into_iter().collect::<Vec<_>>().join(", "),
                    want.as_str()
                ),
            )
        }
        (false, GroupProtocol::Classic) => Check::pass(
            "group-protocol",
            format!(
                "the brokers ({asked}) serve the classic group protocol, which the worker uses; not the consumer protocol (KIP-848, Apache Kafka 4.0 or later): {}",
                lacking.join(", ")
            ),
        ),
        (false, GroupProtocol::Consumer) => {
            Check::of::<Unsupported>("group-protocol", Err(Unsupported { lacking }))
        }
    };
    check
        .with("protocols", protocols.to_vec())
        .with("group_protocol", want.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    /// The lines of one broker connection's answer: the API lines, then a feature line.
    fn answer(broker: &str, heartbeat: Option<&str>) -> Vec<(&'static str, String)> {
        let mut lines = vec![
            (
                "APIVERSION",
                format!("[thrd:{broker}]: {broker}: Broker API support:"),
            ),
            (
                "APIVERSION",
                format!("[thrd:{broker}]: {broker}:   ApiKey Produce (0) Versions 0..11"),
            ),
        ];
        if let Some(range) = heartbeat {
            lines.push((
                "APIVERSION",
                format!("[thrd:{broker}]: {broker}:   ApiKey ConsumerGroupHeartbeat (68) Versions {range}"),
            ));
        }
        lines.push((
            "APIVERSION",
            format!(
                "[thrd:{broker}]: {broker}:  Feature MsgVer1: Produce (2..2) supported by broker"
            ),
        ));
        lines
    }

    fn log_of(answers: &[Vec<(&'static str, String)>]) -> ApiLog {
        let log = ApiLog::default();
        for (fac, line) in answers.iter().flatten() {
            log.observe(fac, line);
        }
        log
    }

    fn kafka_4() -> ApiLog {
        let l = log_of(&[
            answer("127.0.0.1:9092/bootstrap", Some("0..1")),
            answer("127.0.0.1:9092/1", Some("0..1")),
            answer("GroupCoordinator", Some("0..1")),
        ]);
        // Not the ApiVersions facility: ignored.
        l.observe(
            "FEATURE",
            "127.0.0.1:9092/1:   ApiKey ConsumerGroupHeartbeat (68) Versions 0..0",
        );
        l
    }

    #[test]
    fn brokers_that_serve_the_heartbeat_serve_both_protocols() {
        let l = kafka_4();
        for want in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            let c = check(&l, want);
            assert_eq!(c.status, Status::Pass, "{}", c.message);
            assert!(
                c.message.contains("both group protocols")
                    && c.message
                        .contains("(127.0.0.1:9092, the group coordinator)")
                    && c.message.contains("v0..1"),
                "{}",
                c.message
            );
            assert_eq!(
                c.data["protocols"],
                serde_json::json!(["classic", "consumer"])
            );
        }
    }

    #[test]
    fn the_consumer_protocol_fails_on_a_broker_without_the_heartbeat() {
        let l = log_of(&[
            answer("b1:9092/1", Some("1..1")),
            answer("b2:9092/2", None),
            answer("b3:9092/3", Some("0..0")),
        ]);
        let c = check(&l, GroupProtocol::Classic);
        assert_eq!(c.status, Status::Pass, "{}", c.message);
        assert_eq!(c.data["protocols"], serde_json::json!(["classic"]));
        let c = check(&l, GroupProtocol::Consumer);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.message.contains("broker b2:9092 does not serve it")
                && c.message.contains("broker b3:9092 serves only v0..0")
                && !c.message.contains("b1:9092"),
            "{}",
            c.message
        );
        assert!(c.fix.unwrap().contains("--group-protocol classic"));
    }

    #[test]
    fn one_connection_without_it_counts_for_its_broker() {
        let l = kafka_4();
        for (fac, line) in answer("127.0.0.1:9092/bootstrap", None) {
            l.observe(fac, &line);
        }
        let c = check(&l, GroupProtocol::Consumer);
        assert_eq!(c.status, Status::Fail, "{}", c.message);
    }

    #[test]
    fn an_answer_counts_once_complete() {
        let l = kafka_4();
        // A reconnection whose answer is still being logged: the last complete one stands.
        let partial = answer("127.0.0.1:9092/1", None);
        for (fac, line) in &partial[..2] {
            l.observe(fac, line);
        }
        assert_eq!(check(&l, GroupProtocol::Consumer).status, Status::Pass);
        let l = log_of(&[]);
        for (fac, line) in &partial[..2] {
            l.observe(fac, line);
        }
        assert_eq!(check(&l, GroupProtocol::Consumer).status, Status::Skip);
    }

    #[test]
    fn nothing_seen_is_not_checked() {
        let c = check(&ApiLog::default(), GroupProtocol::Consumer);
        assert_eq!(c.status, Status::Skip);
    }

    #[test]
    fn the_users_debug_contexts_are_kept() {
        assert_eq!(debug_with_feature(None), "feature");
        assert_eq!(debug_with_feature(Some(" ")), "feature");
        assert_eq!(
            debug_with_feature(Some("broker,cgrp")),
            "broker,cgrp,feature"
        );
    }
}
