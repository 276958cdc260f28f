//! Per-partition "done watermark" tracking.
//!
//! Windows finish out of order, so an offset may only be committed once every offset before it is
//! done. For each assigned partition the tracker keeps the offsets that were read but are not done
//! yet; the committable position is the lowest of them or, when none is pending, one past the
//! highest offset read. Offsets that were never read (compacted away, transaction markers) are
//! skipped naturally because only read offsets are tracked.
//!
//! Each assignment of a partition gets a fresh epoch. A completion carrying an older epoch belongs
//! to a revoked assignment and is ignored, so an offset of a partition that is no longer ours is
//! never stored.

use std::collections::{BTreeSet, HashMap};

use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Offsets of one assigned partition.
#[derive(Debug)]
struct PartitionState {
    /// Epoch of the current assignment.
    epoch: u64,
    /// Read, not yet done.
    pending: BTreeSet<i64>,
    /// Read and let go undone: a revocation took them before any API call of theirs was sent.
    /// Their next owner processes them, so the watermark never passes them; nothing waits for
    /// them either.
    let_go: BTreeSet<i64>,
    /// One past the highest offset read; `None` until the first read.
    next: Option<i64>,
    /// The last position handed out for storing, so the same position is not stored twice.
    stored: Option<i64>,
    /// Exactly-once: records done whose transaction has not answered yet. The partition must not
    /// be released before it does: its next owner would read from the offsets committed before
    /// that transaction and process its records again.
    in_transaction: usize,
}

impl PartitionState {
    fn watermark(&self) -> Option<i64> {
        let undone = [self.pending.first(), self.let_go.first()];
        undone.into_iter().flatten().min().copied().or(self.next)
    }
}

/// The tracker for all partitions of the input topic this worker owns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Assigned partitions.
    partitions: HashMap<i32, PartitionState>,
    /// Source of epochs; never reused.
    last_epoch: u64,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A partition was assigned: returns its new epoch.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.last_epoch += 1;
        let epoch = self.last_epoch;
        self.partitions.insert(
            partition,
            PartitionState {
                epoch,
                pending: BTreeSet::new(),
                let_go: BTreeSet::new(),
                next: None,
                stored: None,
                in_transaction: 0,
            },
        );
        epoch
    }

    /// A partition was revoked: forget it; later completions of its records are ignored.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The epoch of an assigned partition.
    pub fn epoch(&self, partition: i32) -> Option<u64> {
        self.partitions.get(&partition).map(|p| p.epoch)
    }

    /// Partitions currently assigned.
    pub fn assigned(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.partitions.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A record was read. Returns false (and tracks nothing) when the partition is not assigned
    /// in that epoch.
    pub fn read(&mut self, partition: i32, epoch: u64, offset: i64) -> bool {
        match self.partitions.get_mut(&partition) {
            Some(p) if p.epoch == epoch => {
                if p.next.is_none() {
                    // The position we started from is already committed (that is why we read
                    // from here): nothing to store until it moves.
                    p.stored = Some(offset);
                }
                p.pending.insert(offset);
                p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
                true
            }
            _ => false,
        }
    }

    /// A record is done (all records it produced are acknowledged). Returns the new committable
    /// position of its partition when it moved, for storing.
    pub fn done(&mut self, partition: i32, epoch: u64, offset: i64) -> Option<i64> {
        let p = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)?;
        if !p.pending.remove(&offset) {
            return None;
        }
        let w = p.watermark()?;
        if p.stored == Some(w) {
            return None;
        }
        p.stored = Some(w);
        Some(w)
    }

    /// A record of a partition being revoked is let go undone (no API call of its was sent): its
    /// next owner processes it. It is no longer pending (nothing waits for it), and the
    /// partition's watermark stays below it.
    pub fn let_go(&mut self, partition: i32, epoch: u64, offset: i64) {
        if let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        {
            if p.pending.remove(&offset) {
                p.let_go.insert(offset);
            }
        }
    }

    /// Whether `partition` is still assigned in `epoch`: records of an older assignment are no
    /// longer this worker's to deliver.
    pub fn is_current(&self, partition: i32, epoch: u64) -> bool {
        self.epoch(partition) == Some(epoch)
    }

    /// Exactly-once: a record of `partition` marked done is in a transaction that has not
    /// answered yet (see [`OffsetTracker::pending_in`]).
    pub fn hold(&mut self, partition: i32, epoch: u64) {
        if let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        {
            p.in_transaction += 1;
        }
    }

    /// Its transaction answered (committed, or failed for good).
    pub fn release(&mut self, partition: i32, epoch: u64) {
        if let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        {
            p.in_transaction = p.in_transaction.saturating_sub(1);
        }
    }

    /// Records read and not done, over all partitions.
    pub fn pending(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }

    /// Records of one partition read and not done, or done in a transaction that has not
    /// answered yet: what a revocation waits for.
    pub fn pending_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |p| p.pending.len() + p.in_transaction)
    }

    /// Records of one partition let go (see [`OffsetTracker::let_go`]).
    pub fn let_go_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |p| p.let_go.len())
    }

    /// The committable position of every partition that has one.
    pub fn watermarks(&self) -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&k, p)| p.watermark().map(|w| (k, w)))
            .collect();
        v.sort_unstable();
        v
    }
}

/// `(partition, next offset)` positions of `topic` as the list librdkafka takes: the one place
/// done watermarks become offsets to store, to commit or to send to a transaction.
pub fn offset_list(topic: &str, positions: &[(i32, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in positions {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    Ok(tpl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_waits_for_the_lowest_pending_offset() {
        let mut t = OffsetTracker::new();
        let e = t.assign(0);
        for o in 10..15 {
            assert!(t.read(0, e, o));
        }
        assert_eq!(t.done(0, e, 12), None, "10 and 11 still pending");
        assert_eq!(t.done(0, e, 11), None);
        assert_eq!(
            t.done(0, e, 10),
            Some(13),
            "10, 11, 12 done: commit position 13"
        );
        assert_eq!(t.done(0, e, 14), None, "13 still pending");
        assert_eq!(t.done(0, e, 13), Some(15));
        assert_eq!(t.pending(), 0);
        assert_eq!(t.watermarks(), [(0, 15)]);
    }

    #[test]
    fn gaps_in_offsets_are_skipped() {
        let mut t = OffsetTracker::new();
        let e = t.assign(3);
        t.read(3, e, 5);
        t.read(3, e, 9); // 6..8 compacted away
        assert_eq!(t.done(3, e, 5), Some(9));
        assert_eq!(t.done(3, e, 9), Some(10));
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        let (e0, e1) = (t.assign(0), t.assign(1));
        t.read(0, e0, 0);
        t.read(1, e1, 0);
        t.read(1, e1, 1);
        assert_eq!(t.done(1, e1, 1), None);
        assert_eq!(t.done(0, e0, 0), Some(1));
        assert_eq!(t.pending_in(1), 1);
        assert_eq!(t.assigned(), [0, 1]);
    }

    #[test]
    fn a_record_let_go_is_not_waited_for_and_never_passed() {
        let mut t = OffsetTracker::new();
        let e = t.assign(0);
        for o in 0..4 {
            t.read(0, e, o);
        }
        t.let_go(0, e, 1);
        assert_eq!(t.pending_in(0), 3, "nothing waits for 1");
        assert_eq!(t.done(0, e, 0), Some(1), "0 done: the watermark stops at 1");
        assert_eq!(t.done(0, e, 2), None);
        assert_eq!(t.done(0, e, 3), None);
        assert_eq!((t.pending_in(0), t.pending()), (0, 0));
        assert_eq!(t.watermarks(), [(0, 1)], "never past the record let go");
        // A stale epoch changes nothing.
        t.let_go(0, e + 1, 3);
        assert!(t.is_current(0, e) && !t.is_current(0, e + 1));
    }

    #[test]
    fn completions_from_a_revoked_assignment_are_ignored() {
        let mut t = OffsetTracker::new();
        let old = t.assign(0);
        t.read(0, old, 100);
        t.revoke(0);
        assert_eq!(t.done(0, old, 100), None, "not ours any more");
        assert!(!t.read(0, old, 101));
        // Reassigned: a new epoch; the old completion still does not count.
        let new = t.assign(0);
        assert_ne!(old, new);
        t.read(0, new, 100);
        assert_eq!(t.done(0, old, 100), None);
        assert_eq!(t.done(0, new, 100), Some(101));
    }

    #[test]
    fn double_completion_is_harmless() {
        let mut t = OffsetTracker::new();
        let e = t.assign(0);
        t.read(0, e, 0);
        assert_eq!(t.done(0, e, 0), Some(1));
        assert_eq!(t.done(0, e, 0), None);
    }

    #[test]
    fn a_record_held_by_its_transaction_counts_for_the_revocation_not_for_intake() {
        let mut t = OffsetTracker::new();
        let e = t.assign(0);
        assert!(t.read(0, e, 7) && t.done(0, e, 7) == Some(8));
        t.hold(0, e);
        assert_eq!(t.pending(), 0, "done: the transaction's offsets cover it");
        assert_eq!(t.watermarks(), [(0, 8)]);
        assert_eq!(
            t.pending_in(0),
            1,
            "but the partition waits for the transaction"
        );
        t.release(0, e);
        assert_eq!(t.pending_in(0), 0);
        // A release after the partition was revoked and assigned again touches nothing.
        t.hold(0, e);
        let again = t.assign(0);
        t.release(0, e);
        assert_eq!(t.pending_in(0), 0);
        assert_ne!(again, e);
    }
}
