//! Windowing: decoded records are grouped until a window holds `max_ids` distinct UserIDs or its
//! linger time has passed since its first record, whichever comes first.
//!
//! A UserID seen twice in one window is checked (and imported) once, but every record keeps its
//! place: the closed window remembers, for each record, which distinct UserID it maps to, so each
//! gets its own outcome.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::SignupEvent;

/// Where an input record came from: enough to dead-letter it, report it, and mark its offset done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourcePos {
    /// Input partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Assignment epoch of the partition when the record was read; completions from an older
    /// epoch (the partition was revoked meanwhile) are ignored by the offset tracker.
    pub epoch: u64,
}

/// A decoded input record waiting for its outcome.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Source position.
    pub pos: SourcePos,
    /// The decoded event.
    pub event: SignupEvent,
    /// Original key bytes, dead-lettered unchanged.
    pub key: Option<Vec<u8>>,
    /// Original payload bytes, dead-lettered unchanged.
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp of the record (ms since epoch), for end-to-end latency.
    pub timestamp_ms: Option<i64>,
}

/// A window being filled.
#[derive(Debug)]
pub struct Window {
    /// Most distinct UserIDs (≤ 100).
    max_ids: usize,
    /// How long the window waits for more records after its first one.
    linger: Duration,
    /// Records in arrival order.
    records: Vec<InputRecord>,
    /// For each record, the index of its UserID among the distinct ones.
    id_of_record: Vec<usize>,
    /// Distinct UserID → its index in first-seen order; turned into `ClosedWindow::ids` when the
    /// window closes (one copy of each distinct UserID, not two).
    index: HashMap<String, usize>,
    /// When the first record arrived; `None` while empty.
    opened_at: Option<Instant>,
}

/// A window ready to be checked.
#[derive(Debug)]
pub struct ClosedWindow {
    /// Records in arrival order.
    pub records: Vec<InputRecord>,
    /// For each record, the index of its UserID in `ids`.
    pub id_of_record: Vec<usize>,
    /// Distinct UserIDs, the `account_check` request.
    pub ids: Vec<String>,
    /// When the window opened (its first record arrived).
    pub opened_at: Instant,
    /// Why it closed.
    pub closed_by: CloseReason,
}

/// Why a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// It reached its maximum of distinct UserIDs.
    Full,
    /// Its linger time passed.
    Linger,
    /// The worker is draining (shutdown or revocation).
    Flush,
}

impl Window {
    /// An empty window.
    pub fn new(max_ids: usize, linger: Duration) -> Self {
        assert!((1..=100).contains(&max_ids), "window size must be 1..=100");
        Window {
            max_ids,
            linger,
            records: Vec::new(),
            id_of_record: Vec::new(),
            index: HashMap::with_capacity(max_ids),
            opened_at: None,
        }
    }

    /// Adds a record. Returns the closed window when this record made it full.
    pub fn push(&mut self, record: InputRecord) -> Option<ClosedWindow> {
        if self.opened_at.is_none() {
            self.opened_at = Some(Instant::now());
        }
        let idx = match self.index.get(record.event.user_id.as_str()) {
            Some(&i) => i,
            None => {
                let i = self.index.len();
                self.index.insert(record.event.user_id.clone(), i);
                i
            }
        };
        self.id_of_record.push(idx);
        self.records.push(record);
        (self.index.len() >= self.max_ids).then(|| self.close(CloseReason::Full))
    }

    /// When the window must close by linger; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.linger)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Closes the window now (linger passed, or draining). `None` when empty.
    pub fn take(&mut self, reason: CloseReason) -> Option<ClosedWindow> {
        (!self.is_empty()).then(|| self.close(reason))
    }

    /// Takes the records of the partitions `take` selects out of the open window, as a window
    /// closed by [`CloseReason::Flush`] (their partitions are being revoked: they are processed
    /// now, before the partitions are released). The other records stay.
    pub fn take_partitions(&mut self, take: impl Fn(i32) -> bool) -> Option<ClosedWindow> {
        if !self.records.iter().any(|r| take(r.pos.partition)) {
            return None;
        }
        let records = std::mem::take(&mut self.records);
        let opened_at = self.opened_at;
        *self = Window::new(self.max_ids, self.linger);
        let mut taken = Window::new(self.max_ids, self.linger);
        for r in records {
            // Subsets of a window that was not full are not full: push never closes here.
            if take(r.pos.partition) {
                taken.push(r);
            } else {
                self.push(r);
            }
        }
        if !self.is_empty() {
            self.opened_at = opened_at;
        }
        taken.opened_at = opened_at;
        taken.take(CloseReason::Flush)
    }

    /// Drops the records of partitions that are no longer ours (revoked before the window
    /// closed and not drained): their offsets will be replayed by the new owner.
    pub fn retain_partitions(&mut self, keep: impl Fn(i32) -> bool) {
        drop(self.take_partitions(|p| !keep(p)));
    }

    fn close(&mut self, closed_by: CloseReason) -> ClosedWindow {
        let opened_at = self.opened_at.take().unwrap_or_else(Instant::now);
        let mut ids = vec![String::new(); self.index.len()];
        for (id, i) in self.index.drain() {
            ids[i] = id;
        }
        ClosedWindow {
            records: std::mem::take(&mut self.records),
            id_of_record: std::mem::take(&mut self.id_of_record),
            ids,
            opened_at,
            closed_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, offset: i64) -> InputRecord {
        InputRecord {
            pos: SourcePos {
                partition: (offset % 3) as i32,
                offset,
                epoch: 1,
            },
            event: SignupEvent {
                user_id: user.into(),
                nick: None,
                face_url: None,
            },
            key: None,
            payload: None,
            timestamp_ms: None,
        }
    }

    #[test]
    fn closes_at_max_distinct_ids_and_keeps_duplicates() {
        let mut w = Window::new(3, Duration::from_millis(250));
        assert!(w.push(rec("a", 0)).is_none());
        assert!(w.push(rec("b", 1)).is_none());
        assert!(w.push(rec("a", 2)).is_none(), "a duplicate does not count");
        let closed = w.push(rec("c", 3)).expect("third distinct id closes it");
        assert_eq!(closed.ids, ["a", "b", "c"]);
        assert_eq!(closed.records.len(), 4);
        assert_eq!(closed.id_of_record, [0, 1, 0, 2]);
        assert_eq!(closed.closed_by, CloseReason::Full);
        assert!(w.is_empty());
        assert_eq!(w.deadline(), None);
        // The next window starts fresh.
        assert!(w.push(rec("a", 4)).is_none());
        assert_eq!(w.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn linger_deadline_counts_from_the_first_record() {
        let mut w = Window::new(100, Duration::from_millis(250));
        let t0 = Instant::now();
        w.push(rec("a", 0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.push(rec("b", 1));
        assert_eq!(w.deadline(), Some(t0 + Duration::from_millis(250)));
        let closed = w.take(CloseReason::Linger).unwrap();
        assert_eq!(closed.opened_at, t0);
        assert_eq!(closed.closed_by, CloseReason::Linger);
        assert!(w.take(CloseReason::Linger).is_none());
    }

    #[test]
    fn window_of_one() {
        let mut w = Window::new(1, Duration::from_secs(1));
        assert_eq!(w.push(rec("a", 0)).unwrap().ids, ["a"]);
    }

    #[test]
    fn revoked_partitions_can_be_taken_out_as_their_own_window() {
        let mut w = Window::new(100, Duration::from_secs(1));
        for (i, u) in ["a", "b", "c", "d", "a"].iter().enumerate() {
            w.push(rec(u, i as i64));
        }
        let taken = w.take_partitions(|p| p == 1).unwrap(); // offsets 1 and 4
        assert_eq!(
            taken
                .records
                .iter()
                .map(|r| r.pos.offset)
                .collect::<Vec<_>>(),
            [1, 4]
        );
        assert_eq!(taken.ids, ["b", "a"]);
        assert_eq!(taken.closed_by, CloseReason::Flush);
        assert_eq!(w.len(), 3);
        assert!(w.take_partitions(|p| p == 1).is_none());
    }

    #[test]
    fn revoked_partitions_are_dropped_from_the_open_window() {
        let mut w = Window::new(100, Duration::from_secs(1));
        for (i, u) in ["a", "b", "c", "d", "a"].iter().enumerate() {
            w.push(rec(u, i as i64));
        }
        w.retain_partitions(|p| p != 1); // offsets 1 and 4 are on partition 1
        let closed = w.take(CloseReason::Flush).unwrap();
        let offsets: Vec<_> = closed.records.iter().map(|r| r.pos.offset).collect();
        assert_eq!(offsets, [0, 2, 3]);
        assert_eq!(closed.ids, ["a", "c", "d"]);
        assert_eq!(closed.id_of_record, [0, 1, 2]);
    }
}
