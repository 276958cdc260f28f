//! The embedded Kafka: librdkafka's mock cluster, which speaks the real Kafka protocol on loopback
//! (consumer groups, transactions, fault injection). Used by `account-sync dev kafka`, the demo
//! and the tests.
//!
//! The mock cluster is not `Send` (it is a raw librdkafka handle), so it lives on a thread of its
//! own and [`EmbeddedKafka`] talks to it through a channel: the handle can then be shared freely
//! across async tasks.
//!
//! The cluster is driven through librdkafka's mock API directly ([`Cluster`]), not rdkafka's
//! `MockCluster`, which hides the handle: the settings of KIP-848 consumer groups (their session
//! timeout and heartbeat interval, which the broker decides under that protocol) have no wrapper
//! there.

use std::ffi::{CStr, CString};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;
use rdkafka::bindings as rdsys;
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr, RDKafkaType};

/// ApiKey of `ConsumerGroupHeartbeat`, the consumer group protocol's (KIP-848) one request, which
/// rdkafka's [`RDKafkaApiKey`] does not list.
pub const CONSUMER_GROUP_HEARTBEAT: i16 = 68;

/// `account-sync dev kafka` settings.
#[derive(Debug, Clone, Args)]
pub struct DevKafkaArgs {
    /// Number of mock brokers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub brokers: i32,
    /// Topic to create, NAME:PARTITIONS (repeatable), e.g. --topic signups:6.
    #[arg(long = "topic", value_parser = parse_topic_spec)]
    pub topics: Vec<(String, i32)>,
    /// Session timeout of consumer-protocol (KIP-848) groups, which the broker decides under that
    /// protocol (a real one: group.consumer.session.timeout.ms). The mock's default is 30s; tests
    /// that kill members shorten it.
    #[arg(long, value_parser = crate::parse::parse_duration, requires = "consumer_group_heartbeat_interval")]
    pub consumer_group_session_timeout: Option<Duration>,
    /// Heartbeat interval of consumer-protocol groups (group.consumer.heartbeat.interval.ms); the
    /// mock's default is 3s.
    #[arg(long, value_parser = crate::parse::parse_duration, requires = "consumer_group_session_timeout")]
    pub consumer_group_heartbeat_interval: Option<Duration>,
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
    RequestErrors(i16, Vec<RDKafkaRespErr>, std_mpsc::Sender<KafkaResult<()>>),
    ClearRequestErrors(RDKafkaApiKey, std_mpsc::Sender<KafkaResult<()>>),
    ApiVersion(i16, Option<(i16, i16)>, std_mpsc::Sender<KafkaResult<()>>),
    ConsumerGroupTimings(Duration, Duration, std_mpsc::Sender<KafkaResult<()>>),
}

/// A librdkafka mock cluster, owned: created on a client of its own (which must outlive it, as in
/// rdkafka's `MockCluster`), destroyed on drop. Not `Send`: it stays on the cluster's thread.
struct Cluster {
    raw: *mut rdsys::rd_kafka_mock_cluster_t,
    /// The client the cluster was created on; dropped after the cluster.
    _client: Client<DefaultClientContext>,
}

/// A mock API result as a `KafkaResult`.
fn mock_result(err: RDKafkaRespErr) -> KafkaResult<()> {
    match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        err => Err(KafkaError::MockCluster(err.into())),
    }
}

fn c_string(s: &str) -> KafkaResult<CString> {
    CString::new(s).map_err(|_| KafkaError::MockCluster(RDKafkaErrorCode::InvalidArgument))
}

// SAFETY (every `unsafe` block below): `raw` is a live mock cluster from `Cluster::new` until
// `drop`, only used on the thread that created it; strings passed are NUL-terminated and live
// for the call; the error array is valid for its length.
impl Cluster {
    fn new(brokers: i32) -> KafkaResult<Cluster> {
        let config = ClientConfig::new();
        let client = Client::new(
            &config,
            config.create_native_config()?,
            RDKafkaType::RD_KAFKA_PRODUCER,
            DefaultClientContext,
        )?;
        let raw = unsafe { rdsys::rd_kafka_mock_cluster_new(client.native_ptr(), brokers) };
        if raw.is_null() {
            return Err(KafkaError::MockCluster(RDKafkaErrorCode::Fail));
        }
        Ok(Cluster {
            raw,
            _client: client,
        })
    }

    fn bootstrap_servers(&self) -> String {
        unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(self.raw)) }
            .to_string_lossy()
            .into_owned()
    }

    fn create_topic(&self, name: &str, partitions: i32, replication: i32) -> KafkaResult<()> {
        let name = c_string(name)?;
        mock_result(unsafe {
            rdsys::rd_kafka_mock_topic_create(self.raw, name.as_ptr(), partitions, replication)
        })
    }

    fn broker_down(&self, id: i32) -> KafkaResult<()> {
        mock_result(unsafe { rdsys::rd_kafka_mock_broker_set_down(self.raw, id) })
    }

    fn broker_up(&self, id: i32) -> KafkaResult<()> {
        mock_result(unsafe { rdsys::rd_kafka_mock_broker_set_up(self.raw, id) })
    }

    fn partition_leader(&self, topic: &str, partition: i32, broker: i32) -> KafkaResult<()> {
        let topic = c_string(topic)?;
        mock_result(unsafe {
            rdsys::rd_kafka_mock_partition_set_leader(self.raw, topic.as_ptr(), partition, broker)
        })
    }

    fn group_coordinator(&self, group: &str, broker: i32) -> KafkaResult<()> {
        let (kind, key) = (c_string("group")?, c_string(group)?);
        mock_result(unsafe {
            rdsys::rd_kafka_mock_coordinator_set(self.raw, kind.as_ptr(), key.as_ptr(), broker)
        })
    }

    fn request_errors(&self, api: i16, errors: &[RDKafkaRespErr]) {
        unsafe {
            rdsys::rd_kafka_mock_push_request_errors_array(
                self.raw,
                api,
                errors.len(),
                errors.as_ptr(),
            )
        }
    }

    fn clear_request_errors(&self, api: RDKafkaApiKey) {
        unsafe { rdsys::rd_kafka_mock_clear_request_errors(self.raw, api.into()) }
    }

    fn api_version(&self, api: i16, range: Option<(i16, i16)>) -> KafkaResult<()> {
        let (min, max) = range.unwrap_or((-1, -1));
        mock_result(unsafe { rdsys::rd_kafka_mock_set_apiversion(self.raw, api, min, max) })
    }

    fn consumer_group_timings(&self, session: Duration, heartbeat: Duration) -> KafkaResult<()> {
        let ms = |d: Duration| {
            i32::try_from(d.as_millis())
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or(KafkaError::MockCluster(RDKafkaErrorCode::InvalidArgument))
        };
        let (session, heartbeat) = (ms(session)?, ms(heartbeat)?);
        unsafe {
            rdsys::rd_kafka_mock_set_group_consumer_session_timeout_ms(self.raw, session);
            rdsys::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(self.raw, heartbeat);
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.raw) }
    }
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
                let cluster = match Cluster::new(brokers) {
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
                            let _ = r.send(cluster.partition_leader(&topic, partition, leader));
                        }
                        Command::GroupCoordinator(group, broker, r) => {
                            let _ = r.send(cluster.group_coordinator(&group, broker));
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
                            let _ = r.send(cluster.api_version(key, range));
                        }
                        Command::ConsumerGroupTimings(session, heartbeat, r) => {
                            let _ = r.send(cluster.consumer_group_timings(session, heartbeat));
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

    /// Makes the next requests of `api` (an [`RDKafkaApiKey`], or a key it lacks, such as
    /// [`CONSUMER_GROUP_HEARTBEAT`]) fail with `errors`, in order.
    pub fn request_errors(
        &self,
        api: impl Into<i16>,
        errors: &[RDKafkaRespErr],
    ) -> KafkaResult<()> {
        let api = api.into();
        self.call(|r| Command::RequestErrors(api, errors.to_vec(), r))
    }

    /// Clears injected request errors of `api`.
    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> KafkaResult<()> {
        self.call(|r| Command::ClearRequestErrors(api, r))
    }

    /// The session timeout and heartbeat interval of consumer groups of the consumer protocol
    /// (KIP-848), which the broker decides under that protocol (a real one by
    /// `group.consumer.session.timeout.ms` and `group.consumer.heartbeat.interval.ms`; the mock's
    /// defaults are 30 s and 3 s). Applies to members that join afterwards.
    pub fn set_consumer_group_timings(
        &self,
        session_timeout: Duration,
        heartbeat_interval: Duration,
    ) -> KafkaResult<()> {
        self.call(|r| Command::ConsumerGroupTimings(session_timeout, heartbeat_interval, r))
    }

    /// Sets the versions of `api` (an [`RDKafkaApiKey`], or a key it lacks, such as
    /// [`CONSUMER_GROUP_HEARTBEAT`]) the brokers advertise (ApiVersions): `Some((min, max))`, or
    /// `None` for a broker that does not implement it at all (clients connecting afterwards see
    /// it missing).
    pub fn set_api_versions(
        &self,
        api: impl Into<i16>,
        range: Option<(i16, i16)>,
    ) -> KafkaResult<()> {
        let api = api.into();
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
        k.partition_leader("t1", 0, 1).unwrap();
        k.group_coordinator("g", 1).unwrap();
        k.set_consumer_group_timings(Duration::from_secs(4), Duration::from_millis(300))
            .unwrap();
        assert!(k
            .set_consumer_group_timings(Duration::ZERO, Duration::from_millis(300))
            .is_err());
        k.set_api_versions(CONSUMER_GROUP_HEARTBEAT, None).unwrap();
        k.set_api_versions(RDKafkaApiKey::EndTxn, Some((0, 3)))
            .unwrap();
        assert!(k.broker_down(99).is_err(), "no broker 99");
        drop(k);
    }
}
