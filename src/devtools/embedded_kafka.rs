//! The embedded Kafka: librdkafka's mock cluster, which speaks the real Kafka protocol on loopback
//! (consumer groups, transactions, fault injection). Used by `account-sync dev kafka`, the demo
//! and the tests.
//!
//! The mock cluster is not `Send` (it is a raw librdkafka handle), so it lives on a thread of its
//! own and [`EmbeddedKafka`] talks to it through a channel: the handle can then be shared freely
//! across async tasks.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use clap::Args;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// `account-sync dev kafka` settings.
#[derive(Debug, Clone, Args)]
pub struct DevKafkaArgs {
    /// Number of mock brokers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub brokers: i32,
    /// Topic to create, NAME:PARTITIONS (repeatable), e.g. --topic signups:6.
    #[arg(long = "topic", value_parser = parse_topic_spec)]
    pub topics: Vec<(String, i32)>,
}

/// Parses `NAME:PARTITIONS` (partitions default to 1 when omitted).
pub fn parse_topic_spec(s: &str) -> Result<(String, i32), String> {
    let (name, parts) = match s.rsplit_once(':') {
        Some((n, p)) => (
            n,
            p.parse::<i32>()
                .map_err(|_| format!("topic {s:?}: partitions must be a number"))?,
        ),
        None => (s, 1),
    };
    if name.is_empty() || !(1..=1000).contains(&parts) {
        return Err(format!(
            "topic {s:?} must be NAME:PARTITIONS with 1-1000 partitions"
        ));
    }
    Ok((name.to_owned(), parts))
}

enum Command {
    CreateTopic(String, i32, std_mpsc::Sender<KafkaResult<()>>),
    BrokerDown(i32, std_mpsc::Sender<KafkaResult<()>>),
    BrokerUp(i32, std_mpsc::Sender<KafkaResult<()>>),
    PartitionLeader(String, i32, i32, std_mpsc::Sender<KafkaResult<()>>),
    GroupCoordinator(String, i32, std_mpsc::Sender<KafkaResult<()>>),
    RequestErrors(
        RDKafkaApiKey,
        Vec<RDKafkaRespErr>,
        std_mpsc::Sender<KafkaResult<()>>,
    ),
    ClearRequestErrors(RDKafkaApiKey, std_mpsc::Sender<KafkaResult<()>>),
    ApiVersion(
        RDKafkaApiKey,
        Option<(i16, i16)>,
        std_mpsc::Sender<KafkaResult<()>>,
    ),
}

/// A running mock cluster. Dropping it stops the cluster.
pub struct EmbeddedKafka {
    /// `bootstrap.servers` for clients.
    bootstrap: String,
    /// Commands to the cluster's thread; dropping it ends the thread.
    commands: Option<std_mpsc::Sender<Command>>,
    /// The cluster's thread.
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` mock brokers and creates `topics` (name, partitions).
    pub fn start(brokers: i32, topics: &[(String, i32)]) -> KafkaResult<Self> {
        let (cmd_tx, cmd_rx) = std_mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<KafkaResult<String>>();
        let thread = std::thread::Builder::new()
            .name("mock-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serve commands until every handle is gone.
                for cmd in cmd_rx {
                    match cmd {
                        Command::CreateTopic(name, parts, r) => {
                            let _ = r.send(cluster.create_topic(&name, parts, brokers.min(3)));
                        }
                        Command::BrokerDown(id, r) => {
                            let _ = r.send(cluster.broker_down(id));
                        }
                        Command::BrokerUp(id, r) => {
                            let _ = r.send(cluster.broker_up(id));
                        }
                        Command::PartitionLeader(topic, partition, leader, r) => {
                            let _ =
                                r.send(cluster.partition_leader(&topic, partition, Some(leader)));
                        }
                        Command::GroupCoordinator(group, broker, r) => {
                            let _ =
                                r.send(cluster.coordinator(MockCoordinator::Group(group), broker));
                        }
                        Command::RequestErrors(key, errs, r) => {
                            cluster.request_errors(key, &errs);
                            let _ = r.send(Ok(()));
                        }
                        Command::ClearRequestErrors(key, r) => {
                            cluster.clear_request_errors(key);
                            let _ = r.send(Ok(()));
                        }
                        Command::ApiVersion(key, range, r) => {
                            let (min, max) = range.unzip();
                            let _ = r.send(cluster.apiversion(key, min, max));
                        }
                    }
                }
            })
            .map_err(|_| KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail))??;
        let kafka = EmbeddedKafka {
            bootstrap,
            commands: Some(cmd_tx),
            thread: Some(thread),
        };
        for (name, parts) in topics {
            kafka.create_topic(name, *parts)?;
        }
        Ok(kafka)
    }

    /// `bootstrap.servers` of the cluster.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(
        &self,
        make: impl FnOnce(std_mpsc::Sender<KafkaResult<()>>) -> Command,
    ) -> KafkaResult<()> {
        let (tx, rx) = std_mpsc::channel();
        let fail = || KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail);
        self.commands
            .as_ref()
            .ok_or_else(fail)?
            .send(make(tx))
            .map_err(|_| fail())?;
        rx.recv().map_err(|_| fail())?
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: i32) -> KafkaResult<()> {
        self.call(|r| Command::CreateTopic(name.to_owned(), partitions, r))
    }

    /// Takes a broker down (its connections are closed and it refuses new ones).
    pub fn broker_down(&self, broker_id: i32) -> KafkaResult<()> {
        self.call(|r| Command::BrokerDown(broker_id, r))
    }

    /// Brings a broker back up.
    pub fn broker_up(&self, broker_id: i32) -> KafkaResult<()> {
        self.call(|r| Command::BrokerUp(broker_id, r))
    }

    /// Moves the leadership of a partition to `broker`. (Not to none: the mock's Fetch handler
    /// dereferences the leader of a partition without one and crashes the process.)
    pub fn partition_leader(&self, topic: &str, partition: i32, broker: i32) -> KafkaResult<()> {
        self.call(|r| Command::PartitionLeader(topic.to_owned(), partition, broker, r))
    }

    /// Makes `broker` the coordinator of consumer group `group`.
    pub fn group_coordinator(&self, group: &str, broker: i32) -> KafkaResult<()> {
        self.call(|r| Command::GroupCoordinator(group.to_owned(), broker, r))
    }

    /// Makes the next requests of `api` fail with `errors`, in order.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) -> KafkaResult<()> {
        self.call(|r| Command::RequestErrors(api, errors.to_vec(), r))
    }

    /// Clears injected request errors of `api`.
    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> KafkaResult<()> {
        self.call(|r| Command::ClearRequestErrors(api, r))
    }

    /// Sets the versions of `api` the brokers advertise (ApiVersions): `Some((min, max))`, or
    /// `None` for a broker that does not implement it at all (clients connecting afterwards see
    /// it missing).
    pub fn set_api_versions(
        &self,
        api: RDKafkaApiKey,
        range: Option<(i16, i16)>,
    ) -> KafkaResult<()> {
        self.call(|r| Command::ApiVersion(api, range, r))
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs() {
        assert_eq!(
            parse_topic_spec("signups:6").unwrap(),
            ("signups".into(), 6)
        );
        assert_eq!(parse_topic_spec("dlq").unwrap(), ("dlq".into(), 1));
        assert!(parse_topic_spec("x:0").is_err());
        assert!(parse_topic_spec(":3").is_err());
        assert!(parse_topic_spec("x:many").is_err());
    }

    #[test]
    fn starts_creates_topics_and_stops() {
        let k = EmbeddedKafka::start(1, &[("t1".into(), 3)]).unwrap();
        assert!(
            k.bootstrap_servers().contains("127.0.0.1")
                || k.bootstrap_servers().contains("localhost")
        );
        k.create_topic("t2", 2).unwrap();
        k.broker_down(1).unwrap();
        k.broker_up(1).unwrap();
        drop(k);
    }
}
