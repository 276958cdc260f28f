//! Outcomes → output records: one outcome record per input record, plus a dead letter per failed
//! one; delivered, then counted.

use std::time::SystemTime;

use super::Delivery;
use crate::delivery::sink::{rfc3339_millis, DeadLetter, OutRecord};
use crate::domain::{failure_class, InputRecord, Outcome, SkipReason, SourcePos};
use crate::worker::window::ClosedWindow;

impl Delivery {
    /// Delivers the records whose outcomes were just decided (`(index in window.records,
    /// outcome)`): one outcome per record, and a dead letter per failed one; counts the delivered
    /// ones.
    pub async fn outcomes(&self, window: &ClosedWindow, decided: &[(usize, &Outcome)]) {
        let stamp = rfc3339_millis(SystemTime::now());
        let records: Vec<(&InputRecord, &Outcome)> = decided
            .iter()
            .map(|&(r, outcome)| (&window.records[r], outcome))
            .collect();
        // One group of records per input record: its outcome, and its dead letter if it failed.
        let groups: Vec<(SourcePos, Vec<OutRecord>)> = records
            .iter()
            .map(|&(rec, outcome)| {
                let mut out =
                    vec![self
                        .sink
                        .outcome_record(&rec.event.user_id, outcome, rec.pos, &stamp)];
                if let Some(stage) = outcome.failed_stage {
                    let dl = DeadLetter {
                        stage,
                        code: outcome.error_code,
                        reason: outcome.error_info.clone(),
                        class: outcome.failure_class,
                        attempts: outcome.attempts,
                    };
                    out.push(self.sink.dead_letter_record(
                        rec.key.as_deref(),
                        rec.payload.as_deref(),
                        rec.pos,
                        &dl,
                        &stamp,
                    ));
                }
                (rec.pos, out)
            })
            .collect();
        let delivered = self.deliver(groups).await;
        let acknowledged_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (&(rec, outcome), ok) in records.iter().zip(&delivered) {
            if *ok {
                self.count(rec, outcome, acknowledged_ms);
            }
        }
    }

    /// Counts (and logs, if it failed) one delivered outcome.
    fn count(&self, rec: &InputRecord, outcome: &Outcome, acknowledged_ms: i64) {
        let m = &self.metrics;
        m.outcomes
            .with_label_values(&[outcome.status.as_str()])
            .inc();
        if let Some(stage) = outcome.failed_stage {
            m.events_dead_lettered
                .with_label_values(&[stage.as_str(), outcome.failure_class])
                .inc();
            tracing::warn!(
                topic = %self.committable.topic(),
                partition = rec.pos.partition,
                offset = rec.pos.offset,
                stage = stage.as_str(),
                code = outcome.error_code,
                reason = %outcome.error_info,
                "account failed; dead-lettered"
            );
        }
        if let Some(ts) = rec.timestamp_ms {
            // To the acknowledgement (in exactly-once mode, the commit), as the metric says.
            let age_ms = acknowledged_ms - ts;
            if age_ms >= 0 {
                m.end_to_end_latency.observe(age_ms as f64 / 1000.0);
            }
        }
    }

    /// Marks done a record that asks nothing of the worker (a change event that is not a
    /// signup): no record goes out, and in exactly-once mode its offset is committed in a
    /// transaction like any other.
    pub async fn skipped(&self, pos: SourcePos, reason: SkipReason) {
        if self.deliver(vec![(pos, Vec::new())]).await[0] {
            self.metrics
                .events_skipped
                .with_label_values(&[reason.as_str()])
                .inc();
        }
    }

    /// Dead-letters a record that did not decode, then marks it done.
    pub async fn decode_failure(
        &self,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        pos: SourcePos,
        dl: DeadLetter,
    ) {
        let stamp = rfc3339_millis(SystemTime::now());
        let record =
            self.sink
                .dead_letter_record(key.as_deref(), payload.as_deref(), pos, &dl, &stamp);
        if self.deliver(vec![(pos, vec![record])]).await[0] {
            self.metrics
                .events_dead_lettered
                .with_label_values(&["decode", failure_class::INVALID_INPUT])
                .inc();
        }
    }
}
