//! The consumer group protocol (`--group-protocol`): `classic`, the rebalance protocol every Kafka
//! has, or `consumer`, the next-generation protocol of KIP-848 (Apache Kafka 4.0 and later), where
//! the broker computes the assignment and sends it in heartbeats. See `docs/kafka.md`.
//!
//! Each protocol has consumer properties the other refuses or ignores: librdkafka refuses the
//! classic protocol's own ([`CLASSIC_ONLY`]) with `group.protocol=consumer` (the broker sets them
//! there), and ignores the consumer protocol's own ([`CONSUMER_ONLY`]) with `classic`. Both are
//! refused at start-up instead, by [`GroupProtocol::allows`], naming the property.

use clap::ValueEnum;

/// Consumer group protocol of the worker's input consumer (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum GroupProtocol {
    /// The classic rebalance protocol: the group leader (a member) assigns partitions; the worker
    /// uses the cooperative-sticky assignor.
    #[default]
    Classic,
    /// KIP-848: the broker assigns partitions (group.remote.assignor chooses its assignor).
    /// Needs Apache Kafka 4.0 or later.
    Consumer,
}

/// Consumer properties of the classic protocol only: under `consumer` the broker decides them
/// (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`, the remote
/// assignor), and librdkafka refuses to create a consumer that sets them.
pub const CLASSIC_ONLY: &[&str] = &[
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
];

/// Consumer properties of the `consumer` protocol only (librdkafka ignores them under classic).
pub const CONSUMER_ONLY: &[&str] = &["group.remote.assignor"];

impl GroupProtocol {
    /// librdkafka's value of `group.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }

    /// Whether `--kafka-property key=…` fits this protocol; the error names the property and says
    /// what to do instead.
    pub fn allows(self, key: &str) -> Result<(), String> {
        match self {
            GroupProtocol::Consumer if CLASSIC_ONLY.contains(&key) => Err(format!(
                "--kafka-property {key}: a setting of the classic group protocol, not supported with --group-protocol consumer (KIP-848: the broker sets the session timeout and heartbeat interval, group.consumer.session.timeout.ms and group.consumer.heartbeat.interval.ms, and assigns partitions, with group.remote.assignor to choose how); remove it, or use --group-protocol classic"
            )),
            GroupProtocol::Classic if CONSUMER_ONLY.contains(&key) => Err(format!(
                "--kafka-property {key}: a setting of the consumer group protocol (KIP-848), which librdkafka ignores with --group-protocol classic; remove it, or use --group-protocol consumer"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_refuses_the_others_properties_naming_them() {
        for key in CLASSIC_ONLY {
            GroupProtocol::Classic.allows(key).unwrap();
            let e = GroupProtocol::Consumer.allows(key).unwrap_err();
            assert!(
                e.contains(key) && e.contains("--group-protocol consumer"),
                "{e}"
            );
        }
        GroupProtocol::Consumer
            .allows("group.remote.assignor")
            .unwrap();
        let e = GroupProtocol::Classic
            .allows("group.remote.assignor")
            .unwrap_err();
        assert!(e.contains("group.remote.assignor"), "{e}");
        for p in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            p.allows("fetch.wait.max.ms").unwrap();
            p.allows("max.poll.interval.ms").unwrap();
        }
    }
}
