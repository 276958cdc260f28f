//! The consumer lag gauge, from librdkafka's statistics (every `statistics.interval.ms`): one
//! series per *assigned* input partition.

use std::sync::Mutex;

use prometheus::IntGaugeVec;

/// `account_sync_consumer_lag`, and the partitions that have a series now.
pub struct ConsumerLag {
    /// The gauge, by `partition`.
    gauge: IntGaugeVec,
    /// Partitions that have a series now (to drop those no longer assigned).
    exported: Mutex<Vec<i32>>,
}

impl ConsumerLag {
    /// Keeps `gauge` (labelled by `partition`).
    pub fn new(gauge: IntGaugeVec) -> Self {
        ConsumerLag {
            gauge,
            exported: Mutex::new(Vec::new()),
        }
    }

    /// Exports the consumer lag of `topic`'s `assigned` partitions from librdkafka statistics
    /// (see [`partition_lag`]) and drops the series of partitions that are not assigned any more.
    pub fn record(&self, stats: &rdkafka::Statistics, topic: &str, assigned: &[i32]) {
        let lags: Vec<(i32, i64)> = stats
            .topics
            .get(topic)
            .map(|t| {
                t.partitions
                    .values()
                    .filter_map(|p| Some((p.partition, partition_lag(p)?)))
                    .collect()
            })
            .unwrap_or_default();
        self.set(&lags, assigned);
    }

    /// Sets the gauge for the `assigned` partitions among `lags` and removes the series of
    /// partitions not in `assigned`. An assigned partition without a known lag keeps its last
    /// value.
    fn set(&self, lags: &[(i32, i64)], assigned: &[i32]) {
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        for p in exported.iter().filter(|p| !assigned.contains(p)) {
            let _ = self.gauge.remove_label_values(&[&p.to_string()]);
        }
        exported.retain(|p| assigned.contains(p));
        for &(p, lag) in lags.iter().filter(|(p, _)| assigned.contains(p)) {
            self.gauge.with_label_values(&[&p.to_string()]).set(lag);
            if !exported.contains(&p) {
                exported.push(p);
            }
        }
    }
}

/// A partition's consumer lag from librdkafka statistics: `consumer_lag` (end of the partition −
/// committed offset); while nothing is committed yet, counted from the partition's low watermark
/// (the group starts at the earliest offset). `None` while librdkafka does not know enough.
fn partition_lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    if p.consumer_lag >= 0 {
        Some(p.consumer_lag)
    } else if p.committed_offset < 0 && p.lo_offset >= 0 && p.hi_offset >= p.lo_offset {
        Some(p.hi_offset - p.lo_offset)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use prometheus::core::Collector;
    use prometheus::Opts;

    use super::*;

    fn lags(lag: &ConsumerLag) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = lag
            .gauge
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().to_vec())
            .map(|x| {
                (
                    x.get_label()[0].value().to_owned(),
                    x.get_gauge().get_value() as i64,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn consumer_lag_follows_the_assignment() {
        let gauge = IntGaugeVec::new(Opts::new("lag", "lag"), &["partition"]).unwrap();
        let m = ConsumerLag::new(gauge);
        m.set(&[(0, 5), (1, 7), (2, 9)], &[0, 1]);
        assert_eq!(lags(&m), [("0".into(), 5), ("1".into(), 7)]);
        // Partition 1 revoked, 2 assigned; 0's lag unknown this time: it keeps its value.
        m.set(&[(1, 3), (2, 4)], &[0, 2]);
        assert_eq!(lags(&m), [("0".into(), 5), ("2".into(), 4)]);
        m.set(&[], &[]);
        assert!(lags(&m).is_empty());
    }
}
