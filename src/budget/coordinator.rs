//! The coordination loop: publish this member's demand and lease, read everybody's, set this
//! member's limiters to its share.
//!
//! Every `interval`, at the same wall-clock boundaries on every member:
//! 1. publish a [`Lease`] with this member's demand per API (use over the last second plus calls
//!    waiting, [`DemandMeter`]);
//! 2. take the live members as of the cutoff (the boundary minus one interval, [`LeaseTable`]);
//! 3. if this member's own leases come back from the topic, its target per API is its max-min
//!    fair share of the app budget ([`max_min_fair`]) — or almost nothing while it is not in the
//!    table yet (it gets a share only once the others can have seen it); if they do not (the topic
//!    is gone, its leader is down, producing fails), the target is the partition share the worker
//!    hands in (today's rule, which needs nobody else);
//! 4. the limiter's ceiling becomes the [`Grant`]: the target, but increases only after they
//!    settled, so that two members switching at slightly different moments are never over the
//!    budget together.
//!
//! The AIMD backoff on frequency-limit answers works below that ceiling, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use super::demand::DemandMeter;
use super::grant::Grant;
use super::split::max_min_fair;
use super::table::{Demand, Lease, LeaseTable, APIS};
use crate::limiter::Limiter;
use crate::observe::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The ceiling of a member that is not in the table yet, as a fraction of the app budget: the
/// limiter's one-token burst still lets a first call through, nothing more.
const JOINING_FRACTION: f64 = 0.001;

/// What the coordinator needs from the worker.
pub struct CoordinatorSetup {
    /// This member's id: unique per process (see [`super::member_id`]).
    pub member: String,
    /// The coordination topic.
    pub topic: String,
    /// Publishing and recomputing interval.
    pub interval: Duration,
    /// How long a lease holds a share.
    pub lease: Duration,
    /// Create the topic (one partition, compacted) if it does not exist.
    pub create_topic: bool,
    /// The app budget per API of [`APIS`], calls/s (0 = unlimited: not shared).
    pub budget: [f64; APIS.len()],
    /// The limiters of [`APIS`].
    pub limiters: [Arc<Limiter>; APIS.len()],
    /// The fraction of the input partitions this member owns, from the worker (`None` before
    /// its first assignment): the fallback.
    pub partition_share: watch::Receiver<Option<f64>>,
    /// Settings of the lease producer and the admin client that creates the topic: bootstrap
    /// servers and the user's producer properties.
    pub producer_client: ClientConfig,
    /// Settings of the reader: bootstrap servers and the user's consumer properties.
    pub consumer_client: ClientConfig,
    /// Metrics of the worker.
    pub metrics: Arc<Metrics>,
}

/// How the last split was made (the `account_sync_budget_mode` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From the members' demands on the coordination topic.
    Demand,
    /// From the share of input partitions (the topic is not usable).
    PartitionShare,
}

impl Mode {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Demand => "demand",
            Mode::PartitionShare => "partition_share",
        }
    }
}

/// Sets every shared limiter to "joining" (almost nothing) until the first split: a member that
/// starts must not use the whole budget before the others know it exists.
pub fn hold_until_first_split(budget: &[f64; APIS.len()], limiters: &[Arc<Limiter>; APIS.len()]) {
    for (rate, limiter) in budget.iter().zip(limiters) {
        if *rate > 0.0 {
            limiter.set_ceiling(rate * JOINING_FRACTION);
        }
    }
}

/// Runs until `shutdown`, then publishes a tombstone so the share is released at once.
pub async fn run(setup: CoordinatorSetup, shutdown: Shutdown) {
    let s = &setup;
    if s.create_topic {
        // Off the loop and bounded: an admin request to a broker that cannot answer it may wait
        // for a controller, and the loop must publish meanwhile (a broker that creates topics on
        // first use creates it from the first lease).
        let (client, topic) = (s.producer_client.clone(), s.topic.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(
                Duration::from_secs(10),
                super::topic::ensure(&client, &topic),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(%topic, error = %e, "could not create the budget topic (producing to it may create it)")
                }
                Err(_) => {
                    tracing::info!(%topic, "no answer to creating the budget topic within 10 s (producing to it may create it)")
                }
            }
        });
    }
    let producer: Option<FutureProducer> = s
        .producer_client
        .clone()
        .set("message.timeout.ms", s.lease.as_millis().to_string())
        .set("linger.ms", "0")
        // Where the admin API cannot create the topic, a broker that creates topics on first
        // use still can; unless the user said not to create it.
        .set(
            "allow.auto.create.topics",
            if s.create_topic { "true" } else { "false" },
        )
        .create()
        .map_err(|e| tracing::warn!(error = %e, "budget producer could not be created"))
        .ok();
    let mut reader = Reader::new(s);
    let mut table = LeaseTable::default();
    let mut meters: [DemandMeter; APIS.len()] = Default::default();
    // One tick: a member then uses the smaller of its last two targets, and members are at most
    // one split apart, so any two grants add up to at most one split's shares. A little less
    // than the interval, because ticks follow the wall clock and the next one may come a
    // millisecond early by the monotonic clock the grant measures with; a settle of a whole
    // interval would then hold every increase for two ticks.
    let settle = s.interval * 4 / 5;
    let mut grants: [Grant; APIS.len()] = std::array::from_fn(|_| Grant::new(settle));
    let publish_failed_at = Arc::new(AtomicU64::new(0));
    let mut last_mode = None;
    let interval_ms = s.interval.as_millis().max(1) as u64;
    let lease_ms = s.lease.as_millis() as u64;
    loop {
        let now_ms = wall_ms();
        let boundary = (now_ms / interval_ms + 1) * interval_ms;
        let tick = tokio::time::sleep(Duration::from_millis(boundary - now_ms));
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick => {}
        }
        let now = Instant::now();
        let demand: Demand = std::array::from_fn(|k| {
            meters[k].sample(now, s.limiters[k].usage(), grants[k].current())
        });
        if let Some(p) = &producer {
            publish(p, s, boundary, &demand, lease_ms, publish_failed_at.clone());
        }
        if let Some(r) = &mut reader {
            r.ensure_assigned().await;
            r.drain(&mut table);
        }
        let now_ms = wall_ms();
        table.prune(now_ms.saturating_sub(10 * lease_ms));
        let own_back = table
            .last_sent_ms(&s.member)
            .is_some_and(|t| t + lease_ms > now_ms);
        let failed = publish_failed_at.load(Ordering::Relaxed);
        let healthy = own_back && failed + lease_ms <= now_ms;
        let mode = if healthy {
            Mode::Demand
        } else {
            Mode::PartitionShare
        };
        if last_mode != Some(mode) {
            match mode {
                Mode::Demand => tracing::info!(topic = %s.topic, "sharing the budget by demand"),
                Mode::PartitionShare => {
                    tracing::warn!(topic = %s.topic, "the budget topic is not usable (own leases do not come back); sharing the budget by partitions")
                }
            }
            last_mode = Some(mode);
        }
        let live = table.live_at(boundary - interval_ms);
        let me = live.iter().position(|(m, _)| *m == s.member);
        let partition_share = *s.partition_share.borrow();
        for (k, api) in APIS.iter().enumerate() {
            let capacity = s.budget[k];
            if capacity <= 0.0 {
                continue;
            }
            let target = match (mode, me) {
                (Mode::Demand, Some(i)) => {
                    let demands: Vec<f64> = live.iter().map(|(_, d)| d[k]).collect();
                    max_min_fair(capacity, &demands)[i]
                }
                (Mode::Demand, None) => capacity * JOINING_FRACTION,
                (Mode::PartitionShare, _) => {
                    capacity * partition_share.unwrap_or(JOINING_FRACTION).min(1.0)
                }
            };
            let granted = grants[k]
                .update(now, target)
                .max(capacity * JOINING_FRACTION);
            s.limiters[k].set_ceiling(granted);
            let label = [api.name()];
            s.metrics
                .limiter_ceiling
                .with_label_values(&label)
                .set(granted);
            s.metrics
                .budget_demand
                .with_label_values(&label)
                .set(demand[k]);
        }
        s.metrics.budget_members.set(live.len() as i64);
        for m in [Mode::Demand, Mode::PartitionShare] {
            s.metrics
                .budget_mode
                .with_label_values(&[m.label()])
                .set(i64::from(m == mode));
        }
    }
    if let Some(p) = &producer {
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&s.topic).key(&s.member);
        match p.send(record, Timeout::After(Duration::from_secs(2))).await {
            Ok(_) => tracing::debug!("budget lease released"),
            Err((e, _)) => {
                tracing::warn!(error = %e, "could not release the budget lease; it expires by itself")
            }
        }
        let _ = p.flush(Timeout::After(Duration::from_secs(1)));
    }
}

/// Sends this member's lease for the tick at `boundary` without waiting for it; a failed
/// delivery is noted in `failed_at`. The lease is stamped with the boundary, not the moment it is
/// sent, so that at the next tick every member's view as of this boundary holds it (it has had a
/// whole interval to arrive).
fn publish(
    p: &FutureProducer,
    s: &CoordinatorSetup,
    boundary: u64,
    demand: &Demand,
    lease_ms: u64,
    failed_at: Arc<AtomicU64>,
) {
    let lease = Lease {
        member: s.member.clone(),
        sent_at_ms: boundary,
        lease_ms,
        demand: *demand,
    };
    let payload = serde_json::to_vec(&lease).expect("a lease serializes");
    let record = FutureRecord::to(&s.topic).key(&s.member).payload(&payload);
    match p.send_result(record) {
        Ok(delivery) => {
            tokio::spawn(async move {
                if !matches!(delivery.await, Ok(Ok(_))) {
                    failed_at.store(wall_ms(), Ordering::Relaxed);
                }
            });
        }
        Err((e, _)) => {
            tracing::debug!(error = %e, "budget lease not queued");
            failed_at.store(wall_ms(), Ordering::Relaxed);
        }
    }
}

/// Reads the coordination topic from its beginning: every member's leases and tombstones.
struct Reader {
    consumer: Arc<BaseConsumer>,
    topic: String,
    /// Partitions assigned (0 until the topic exists).
    partitions: usize,
    /// When the partitions were last looked up (at most once a second while there are none).
    looked_up: Option<Instant>,
}

impl Reader {
    fn new(s: &CoordinatorSetup) -> Option<Reader> {
        let consumer: BaseConsumer = s
            .consumer_client
            .clone()
            .set("group.id", format!("{}-budget-reader", s.member))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "25")
            .create()
            .map_err(|e| tracing::warn!(error = %e, "budget reader could not be created"))
            .ok()?;
        Some(Reader {
            consumer: Arc::new(consumer),
            topic: s.topic.clone(),
            partitions: 0,
            looked_up: None,
        })
    }

    /// Assigns every partition of the topic from the beginning once it has any. The metadata
    /// request blocks (up to its timeout when the broker is away), so it runs off the async
    /// threads.
    async fn ensure_assigned(&mut self) {
        if self.partitions > 0
            || self
                .looked_up
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.looked_up = Some(Instant::now());
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let assigned = tokio::task::spawn_blocking(move || {
            let md = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(1))
                .ok()?;
            let n = md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if n == 0 {
                return None;
            }
            let mut tpl = TopicPartitionList::new();
            for p in 0..n as i32 {
                let _ = tpl.add_partition_offset(&topic, p, Offset::Beginning);
            }
            consumer.assign(&tpl).ok().map(|()| n)
        })
        .await
        .ok()
        .flatten();
        if let Some(n) = assigned {
            self.partitions = n;
        }
    }

    /// Reads whatever has arrived into `table`, without waiting.
    fn drain(&self, table: &mut LeaseTable) {
        if self.partitions == 0 {
            return;
        }
        for _ in 0..10_000 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "budget topic read error");
                    break;
                }
                Some(Ok(m)) => match (m.key(), m.payload()) {
                    (Some(key), None) => {
                        let at = m.timestamp().to_millis().unwrap_or(0).max(0) as u64;
                        table.remove(&String::from_utf8_lossy(key), at);
                    }
                    (_, Some(payload)) => match serde_json::from_slice::<Lease>(payload) {
                        Ok(lease) => table.insert(lease),
                        Err(e) => tracing::debug!(error = %e, "not a budget lease; ignored"),
                    },
                    (None, None) => {}
                },
            }
        }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock: the clock the members share.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
