//! Windowing: decoded records are grouped into windows of up to `max_ids` distinct UserIDs, one
//! `account_check` each.
//!
//! # When a window closes
//!
//! A window closes at the first of (the `closed_by` label of `account_sync_windows_total`):
//!
//! - `full`: it holds `max_ids` distinct UserIDs;
//! - `idle`: waiting cannot make it fuller in time to matter ([`CloseRule`]): intake has had
//!   nothing more for it for [`IDLE_GRACE`] (the consumer has no record buffered for the moment),
//!   *and* fewer than [`MAX_CHECKS_IN_FLIGHT`] earlier windows still wait for their
//!   `account_check` answer, *and* the check limiter has a token for it now (if the token is a few
//!   ms away, the window stays open until then: closing earlier would not send the check sooner);
//! - `linger`: `--window-linger` has passed since its first record — the ceiling, whatever the
//!   rest says;
//! - `flush`: the worker is draining (shutdown or revocation).
//!
//! At low rates every window closes `idle`, a grace after its records arrived: one fetch, one
//! check, one import. Under load the rule holds windows back by itself, without a rate estimate:
//! windows close faster than checks answer, so checks in flight reach the bound (or the tokens run
//! out) and the open window fills meanwhile — the check budget is not spent on tiny windows. The
//! bound of checks in flight is Nagle's rule (send a small segment only while nothing is
//! unacknowledged) for account_check, with room for one more. While intake is held back (the
//! in-flight record bound, a pause) it is not idle: more records are waiting, so the window waits
//! for them.
//!
//! - `order`: a record would bring back an account whose delete the window holds (a delete, then
//!   a create or update of the same user): the delete is made first, by this window, and the
//!   record opens the next one (see [`reduce`]).
//!
//! A UserID seen twice in one window is checked (and imported) once, but every record keeps its
//! place: the closed window remembers, for each record, which distinct UserID it maps to, so each
//! gets its own outcome. A user's records in one window come to their net effect ([`reduce`]):
//! that is what the window does for the user, and every record of the user gets its outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::domain::{EventKind, InputRecord};

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
    /// What the window does for each distinct UserID (indexed like `index`'s values).
    net: Vec<NetEffect>,
    /// When the first record arrived; `None` while empty.
    opened_at: Option<Instant>,
    /// When the last record arrived; `None` while empty.
    last_at: Option<Instant>,
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
    /// What the window does for each of `ids`: its records' net effect.
    pub net: Vec<NetEffect>,
    /// When the window opened (its first record arrived).
    pub opened_at: Instant,
    /// Why it closed.
    pub closed_by: CloseReason,
}

impl ClosedWindow {
    /// The records of each distinct UserID (indices into `records`), for delivering a user's
    /// records as soon as its outcome is decided.
    pub fn records_by_id(&self) -> RecordsById {
        let mut start = vec![0; self.ids.len() + 1];
        for &id in &self.id_of_record {
            start[id + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut next = start.clone();
        let mut order = vec![0; self.records.len()];
        for (rec, &id) in self.id_of_record.iter().enumerate() {
            order[next[id]] = rec;
            next[id] += 1;
        }
        RecordsById { order, start }
    }
}

/// The records of each distinct UserID of a [`ClosedWindow`] (two allocations per window).
#[derive(Debug)]
pub struct RecordsById {
    /// Record indices, grouped by UserID, in arrival order within a group.
    order: Vec<usize>,
    /// Where each UserID's group starts in `order` (one more entry than UserIDs).
    start: Vec<usize>,
}

impl RecordsById {
    /// The records (indices into `ClosedWindow::records`) of the UserID at `id` in `ids`.
    pub fn of(&self, id: usize) -> &[usize] {
        &self.order[self.start[id]..self.start[id + 1]]
    }
}

/// What a window does for one user: the net effect of the user's records in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEffect {
    /// Create (check, import if missing), update (import, overwriting the profile) or delete.
    pub kind: EventKind,
    /// The record (index into the records) whose Nick / FaceUrl are written: a create's first
    /// record (a later create of the same user is a replay), an update's last.
    pub profile: usize,
}

/// The net effect of `net` followed by a record of `kind` (at `record`), or `None` when the two
/// do not come to one call: a delete followed by a create or update, which must reach the vendor
/// as a delete and then an import (the window closes between them, [`CloseReason::Order`]).
///
/// - create, create → create (the first record's profile);
/// - create or update, update → update (the last update's profile);
/// - update, create → update (the account exists: the create has nothing to add);
/// - anything, delete → delete.
pub fn reduce(net: NetEffect, kind: EventKind, record: usize) -> Option<NetEffect> {
    use EventKind::*;
    let kind_after = match (net.kind, kind) {
        (Delete, Create | Update) => return None,
        (_, Delete) => Delete,
        (Create, Create) => Create,
        (_, Update) | (Update, Create) => Update,
    };
    let profile = match kind {
        Update => record,
        _ if kind_after == net.kind => net.profile,
        _ => record,
    };
    Some(NetEffect {
        kind: kind_after,
        profile,
    })
}

/// Why a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// It reached its maximum of distinct UserIDs.
    Full,
    /// Its linger time passed.
    Linger,
    /// Waiting could not make it fuller in time to matter ([`CloseRule`]).
    Idle,
    /// The worker is draining (shutdown or revocation).
    Flush,
    /// A record would bring back an account the window deletes ([`reduce`]).
    Order,
}

impl CloseReason {
    /// The `closed_by` label of `account_sync_windows_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Full => "full",
            CloseReason::Linger => "linger",
            CloseReason::Idle => "idle",
            CloseReason::Flush => "flush",
            CloseReason::Order => "order",
        }
    }
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
            net: Vec::with_capacity(max_ids),
            opened_at: None,
            last_at: None,
        }
    }

    /// Adds a record. Returns the closed window when this record made it full, or when the
    /// window had to close before it ([`CloseReason::Order`]; the record then opens the next
    /// window, which it cannot fill: a window closed by order holds the record's user, so
    /// `max_ids` is at least 2 there).
    pub fn push(&mut self, record: InputRecord) -> Option<ClosedWindow> {
        let kind = record.event.kind;
        let at = self.records.len();
        let user = match self.index.get(record.event.user_id.as_str()) {
            Some(&i) => match reduce(self.net[i], kind, at) {
                Some(net) => {
                    self.net[i] = net;
                    Some(i)
                }
                None => {
                    let closed = self.close(CloseReason::Order);
                    let full = self.push(record);
                    debug_assert!(full.is_none(), "one record cannot fill a window of 2+");
                    return Some(closed);
                }
            },
            None => None,
        };
        let now = Instant::now();
        if self.opened_at.is_none() {
            self.opened_at = Some(now);
        }
        self.last_at = Some(now);
        let idx = user.unwrap_or_else(|| {
            let i = self.index.len();
            self.index.insert(record.event.user_id.clone(), i);
            self.net.push(NetEffect { kind, profile: at });
            i
        });
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
        let (opened_at, last_at) = (self.opened_at, self.last_at);
        *self = Window::new(self.max_ids, self.linger);
        let mut taken = Window::new(self.max_ids, self.linger);
        for r in records {
            // Subsets of a window that was not full are not full, and the records of a user
            // came to one net effect, so they still do: push never closes here.
            let closed = if take(r.pos.partition) {
                taken.push(r)
            } else {
                self.push(r)
            };
            debug_assert!(closed.is_none(), "a subset of an open window closed");
        }
        if !self.is_empty() {
            self.opened_at = opened_at;
            self.last_at = last_at;
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
        self.last_at = None;
        let mut ids = vec![String::new(); self.index.len()];
        for (id, i) in self.index.drain() {
            ids[i] = id;
        }
        ClosedWindow {
            records: std::mem::take(&mut self.records),
            id_of_record: std::mem::take(&mut self.id_of_record),
            ids,
            net: std::mem::take(&mut self.net),
            opened_at,
            closed_by,
        }
    }
}

/// How long intake must have had nothing for the open window before it counts as idle. Records
/// of one fetch response reach the worker microseconds apart; this only keeps a fetch from being
/// split over two windows when a thread is descheduled mid-way. It is the whole price of the
/// early close in latency.
pub const IDLE_GRACE: Duration = Duration::from_millis(2);

/// Early close only while fewer windows than this wait for their `account_check` answer. With 1
/// (Nagle proper) a window at 100 events/s often waits out the previous check, up to a check's
/// latency: `bench --scenario latency` p99 215 ms instead of 178 ms. With 2, 5,000 known users/s
/// still make windows of 93 UserIDs on average (1.07 checks per 100 users, `latency-known`).
pub const MAX_CHECKS_IN_FLIGHT: usize = 2;

/// The rule that closes a window before its linger when waiting buys nothing (see the module
/// documentation). The one home of that decision: the intake loop asks [`CloseRule::plan`] each
/// time round and sleeps until the plan's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRule {
    /// See [`IDLE_GRACE`].
    pub idle_grace: Duration,
    /// See [`MAX_CHECKS_IN_FLIGHT`].
    pub max_checks_in_flight: usize,
}

impl Default for CloseRule {
    fn default() -> Self {
        CloseRule {
            idle_grace: IDLE_GRACE,
            max_checks_in_flight: MAX_CHECKS_IN_FLIGHT,
        }
    }
}

/// What the rule needs to know about intake and the check stage, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// Intake is reading records (not held back by the in-flight bound, not paused).
    pub reading: bool,
    /// Windows closed whose `account_check` has not answered yet ([`ChecksInFlight`]).
    pub checks_in_flight: usize,
}

/// When the open window closes if nothing else happens meanwhile (no record arrives, no check
/// answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The linger deadline: the window closes then whatever the rest says.
    pub linger_at: Instant,
    /// When it closes as [`CloseReason::Idle`]; `None` while waiting may still buy something
    /// (intake held back, or too many checks in flight: the loop asks again when that changes).
    pub idle_at: Option<Instant>,
}

impl Plan {
    /// Why the window closes if the loop wakes at `now` with no record ready; `None`: not yet.
    pub fn due(&self, now: Instant) -> Option<CloseReason> {
        if now >= self.linger_at {
            Some(CloseReason::Linger)
        } else if self.idle_at.is_some_and(|t| now >= t) {
            Some(CloseReason::Idle)
        } else {
            None
        }
    }
}

impl CloseRule {
    /// The plan for `window` (`None` while it is empty). `token_wait` is the check limiter's
    /// [`time_to_token`](crate::limiter::Limiter::time_to_token); it is asked only when the
    /// rest allows an early close.
    pub fn plan(
        &self,
        window: &Window,
        conditions: Conditions,
        token_wait: impl FnOnce() -> Duration,
    ) -> Option<Plan> {
        let linger_at = window.deadline()?;
        let idle_at = match window.last_at {
            Some(last)
                if conditions.reading
                    && conditions.checks_in_flight < self.max_checks_in_flight =>
            {
                let quiet = last + self.idle_grace;
                let token = Instant::now() + token_wait();
                Some(quiet.max(token)).filter(|&t| t < linger_at)
            }
            _ => None,
        };
        Some(Plan { linger_at, idle_at })
    }
}

/// Windows closed whose `account_check` has not answered yet: counted from the moment a window
/// closes (waiting for a window slot included) until its check call returns. Read by the
/// [`CloseRule`]; the intake loop is woken when one answers.
#[derive(Debug, Default)]
pub struct ChecksInFlight {
    n: AtomicUsize,
    answered: Notify,
}

impl ChecksInFlight {
    /// Counts one more check in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> CheckInFlight {
        self.n.fetch_add(1, Ordering::Relaxed);
        CheckInFlight(self.clone())
    }

    /// Checks in flight now.
    pub fn get(&self) -> usize {
        self.n.load(Ordering::Relaxed)
    }

    /// Completes when a check answers (one waiter; an answer while nobody waits is kept for the
    /// next call).
    pub fn answered(&self) -> Notified<'_> {
        self.answered.notified()
    }
}

/// One check in flight (see [`ChecksInFlight`]); dropping it counts the check as answered.
#[derive(Debug)]
pub struct CheckInFlight(Arc<ChecksInFlight>);

impl Drop for CheckInFlight {
    fn drop(&mut self) {
        self.0.n.fetch_sub(1, Ordering::Relaxed);
        self.0.answered.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SourcePos;
    use crate::worker::event::AccountEvent;

    fn rec(user: &str, offset: i64) -> InputRecord {
        InputRecord {
            pos: SourcePos {
                partition: (offset % 3) as i32,
                offset,
                epoch: 1,
            },
            event: AccountEvent {
                user_id: user.into(),
                nick: None,
                face_url: None,
                kind: EventKind::Create,
            },
            key: None,
            payload: None,
            timestamp_ms: None,
        }
    }

    fn kinded(user: &str, offset: i64, kind: EventKind) -> InputRecord {
        let mut r = rec(user, offset);
        r.event.kind = kind;
        r
    }

    #[test]
    fn a_user_s_records_come_to_their_net_effect() {
        use EventKind::*;
        let net = |kind, profile| NetEffect { kind, profile };
        for (events, want) in [
            (&[Create, Create][..], net(Create, 0)),
            (&[Create, Update][..], net(Update, 1)),
            (&[Update, Create][..], net(Update, 0)),
            (&[Update, Update, Create][..], net(Update, 1)),
            (&[Create, Update, Delete][..], net(Delete, 2)),
            (&[Delete, Delete][..], net(Delete, 0)),
        ] {
            let mut w = Window::new(100, Duration::from_millis(250));
            for (i, &kind) in events.iter().enumerate() {
                assert!(w.push(kinded("a", i as i64, kind)).is_none(), "{events:?}");
            }
            let closed = w.take(CloseReason::Flush).unwrap();
            assert_eq!(closed.net, vec![want], "{events:?}");
            assert_eq!(
                closed.records.len(),
                events.len(),
                "every record keeps its place"
            );
        }
    }

    #[test]
    fn an_account_that_comes_back_after_its_delete_starts_the_next_window() {
        let mut w = Window::new(100, Duration::from_millis(250));
        assert!(w.push(kinded("a", 0, EventKind::Create)).is_none());
        assert!(w.push(kinded("b", 1, EventKind::Create)).is_none());
        assert!(w.push(kinded("a", 2, EventKind::Delete)).is_none());
        let closed = w
            .push(kinded("a", 3, EventKind::Create))
            .expect("closed by order");
        assert_eq!(closed.closed_by, CloseReason::Order);
        assert_eq!(closed.ids, vec!["a", "b"]);
        assert_eq!(closed.net[0].kind, EventKind::Delete);
        assert_eq!(closed.records.len(), 3);
        let next = w.take(CloseReason::Flush).unwrap();
        assert_eq!(next.ids, vec!["a"]);
        assert_eq!(next.net[0].kind, EventKind::Create);
        assert_eq!(next.records[0].pos.offset, 3);
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
        let by_id = closed.records_by_id();
        assert_eq!(
            (by_id.of(0), by_id.of(1), by_id.of(2)),
            (&[0, 2][..], &[1][..], &[3][..])
        );
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

    const LINGER: Duration = Duration::from_millis(250);
    const MS: Duration = Duration::from_millis(1);

    fn reading(checks_in_flight: usize) -> Conditions {
        Conditions {
            reading: true,
            checks_in_flight,
        }
    }

    /// The plan with a check token available now.
    fn plan_now(w: &Window, conditions: Conditions) -> Plan {
        CloseRule::default()
            .plan(w, conditions, || Duration::ZERO)
            .expect("window not empty")
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_closes_a_grace_after_each_record() {
        let mut w = Window::new(100, LINGER);
        assert_eq!(
            CloseRule::default().plan(&w, reading(0), || Duration::ZERO),
            None
        );
        for i in 0..3 {
            let t = Instant::now();
            w.push(rec(&format!("u{i}"), i));
            let plan = plan_now(&w, reading(0));
            assert_eq!(plan.linger_at, t + LINGER);
            assert_eq!(plan.idle_at, Some(t + IDLE_GRACE));
            assert_eq!(plan.due(t + IDLE_GRACE - MS / 2), None);
            assert_eq!(plan.due(t + IDLE_GRACE), Some(CloseReason::Idle));
            tokio::time::sleep(IDLE_GRACE).await;
            let closed = w.take(CloseReason::Idle).unwrap();
            assert_eq!(closed.ids.len(), 1, "one event, one window, no linger");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_stays_in_one_window_until_intake_goes_quiet() {
        let mut w = Window::new(100, LINGER);
        let t0 = Instant::now();
        // 40 records, each arriving within the grace of the one before.
        for i in 0..40 {
            w.push(rec(&format!("u{i}"), i));
            let plan = plan_now(&w, reading(1));
            assert_eq!(
                plan.due(Instant::now() + IDLE_GRACE / 2),
                None,
                "record {i}"
            );
            tokio::time::sleep(IDLE_GRACE / 2).await;
        }
        let last = t0 + IDLE_GRACE / 2 * 39;
        let plan = plan_now(&w, reading(1));
        assert_eq!(plan.idle_at, Some(last + IDLE_GRACE));
        assert_eq!(plan.linger_at, t0 + LINGER);
        assert_eq!(plan.due(last + IDLE_GRACE), Some(CloseReason::Idle));
        assert_eq!(w.take(CloseReason::Idle).unwrap().ids.len(), 40);
        // A burst larger than a window: full windows, by push.
        let full = (0..150)
            .filter_map(|i| w.push(rec(&format!("v{i}"), i)))
            .collect::<Vec<_>>();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].closed_by, CloseReason::Full);
        assert_eq!(w.len(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_or_busy_checks_leave_only_the_linger() {
        let mut w = Window::new(100, LINGER);
        let t0 = Instant::now();
        w.push(rec("a", 0));
        // Intake held back by the in-flight bound: more records are waiting, not idle.
        let held = Conditions {
            reading: false,
            checks_in_flight: 0,
        };
        let plan = CloseRule::default()
            .plan(&w, held, || panic!("no token asked for"))
            .unwrap();
        assert_eq!(plan.idle_at, None);
        assert_eq!(plan.due(t0 + LINGER - MS), None);
        assert_eq!(plan.due(t0 + LINGER), Some(CloseReason::Linger));

        // Checks in flight at the bound: the window fills while they are answered.
        let checks = Arc::new(ChecksInFlight::default());
        let mut guards: Vec<_> = (0..MAX_CHECKS_IN_FLIGHT).map(|_| checks.start()).collect();
        let busy = reading(checks.get());
        let plan = CloseRule::default()
            .plan(&w, busy, || panic!("no token asked for"))
            .unwrap();
        assert_eq!(plan.idle_at, None);
        // One answers 30 ms later: the intake loop is woken, and the window may close now.
        tokio::time::sleep(Duration::from_millis(30)).await;
        guards.pop();
        tokio::time::timeout(Duration::ZERO, checks.answered())
            .await
            .expect("an answer wakes the intake loop");
        assert_eq!(checks.get(), MAX_CHECKS_IN_FLIGHT - 1);
        let plan = plan_now(&w, reading(checks.get()));
        assert_eq!(plan.due(Instant::now()), Some(CloseReason::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_check_token_the_window_waits_for_it_or_for_its_linger() {
        let rule = CloseRule::default();
        let mut w = Window::new(100, LINGER);
        // 10 checks/s, the one token taken: the next is 100 ms away.
        let limiter = crate::limiter::Limiter::new(10.0, 1);
        limiter.acquire().await;
        let t0 = Instant::now();
        w.push(rec("a", 0));
        let plan = rule
            .plan(&w, reading(0), || limiter.time_to_token())
            .unwrap();
        let idle_at = plan.idle_at.expect("the token comes before the linger");
        assert!(
            idle_at >= t0 + Duration::from_millis(100) - MS / 10,
            "{:?}",
            idle_at - t0
        );
        assert!(
            idle_at <= t0 + Duration::from_millis(100) + MS / 10,
            "{:?}",
            idle_at - t0
        );
        // Records that arrive meanwhile join the window.
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.push(rec("b", 1));
        assert_eq!(plan.due(Instant::now()), None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let plan = rule
            .plan(&w, reading(0), || limiter.time_to_token())
            .unwrap();
        assert_eq!(plan.due(Instant::now()), Some(CloseReason::Idle));
        assert_eq!(w.take(CloseReason::Idle).unwrap().ids.len(), 2);

        // Tokens exhausted for longer than the linger: the linger closes it.
        let slow = crate::limiter::Limiter::new(1.0, 1);
        slow.acquire().await;
        let t1 = Instant::now();
        w.push(rec("c", 2));
        let plan = rule.plan(&w, reading(0), || slow.time_to_token()).unwrap();
        assert_eq!(plan.idle_at, None);
        assert_eq!(plan.due(t1 + LINGER - MS), None);
        assert_eq!(plan.due(t1 + LINGER), Some(CloseReason::Linger));
    }

    #[test]
    fn idle_windows_keep_their_timing_when_revoked_partitions_are_taken_out() {
        let mut w = Window::new(100, LINGER);
        w.push(rec("a", 0));
        w.push(rec("b", 1));
        let (opened, last) = (w.opened_at, w.last_at);
        w.take_partitions(|p| p == 1);
        assert_eq!((w.opened_at, w.last_at), (opened, last));
        w.take(CloseReason::Flush);
        assert_eq!((w.opened_at, w.last_at), (None, None));
    }
}
