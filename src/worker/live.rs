//! What a revocation takes from the windows in flight: the records of the revoked partitions that
//! no API call of theirs is answering yet.
//!
//! While a revocation drains ([`super::revoke`]), [`Revocations`] names the partitions (with their
//! assignment epochs) being revoked. Every window task watches it through its [`LiveRecords`]. A
//! record of a revoked partition is *let go* — no outcome, no commit, its partition's next owner
//! processes it from the committed offset — unless a call of its user was sent and its answer
//! is not handled yet: that answer is awaited and delivered. So a revocation costs at most one API round trip. The window
//! task lets records go wherever it waits: for a window slot, a limiter token, a backoff, the
//! systemic gate, or right before a call would send (through the call's [`Withdrawal`]); the call
//! then goes on for the users still waiting, if any.

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::watch;

use super::window::{ClosedWindow, RecordsById};
use crate::chat::Withdrawal;
use crate::domain::SourcePos;
use crate::kafka::offsets::OffsetTracker;

/// The partitions being revoked now, each with the epoch of the assignment that ends.
#[derive(Debug, Default, Clone)]
pub(crate) struct Revoking(Arc<Vec<(i32, u64)>>);

impl Revoking {
    fn contains(&self, pos: SourcePos) -> bool {
        self.0.contains(&(pos.partition, pos.epoch))
    }
}

/// The revocations in progress, for the window tasks to watch.
#[derive(Debug)]
pub(crate) struct Revocations(watch::Sender<Revoking>);

impl Revocations {
    /// None in progress.
    pub fn new() -> Revocations {
        Revocations(watch::Sender::new(Revoking::default()))
    }

    /// What window tasks watch.
    pub fn watch(&self) -> watch::Receiver<Revoking> {
        self.0.subscribe()
    }

    /// `partitions` (with their epochs) are being revoked: their waiting records are let go.
    pub fn begin(&self, partitions: &[(i32, u64)]) {
        self.0.send_modify(|r| {
            let mut v = (*r.0).clone();
            v.extend_from_slice(partitions);
            r.0 = Arc::new(v);
        });
    }

    /// `partitions` are gone (their assignment has ended, nothing of theirs is delivered any
    /// more): no need to watch them.
    pub fn end(&self, partitions: &[i32]) {
        self.0.send_if_modified(|r| {
            let v: Vec<(i32, u64)> =
                r.0.iter()
                    .copied()
                    .filter(|(p, _)| !partitions.contains(p))
                    .collect();
            let changed = v.len() != r.0.len();
            r.0 = Arc::new(v);
            changed
        });
    }
}

/// Where a record of a window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No outcome yet.
    Waiting,
    /// Its outcome is decided and handed to delivery.
    Decided,
    /// Let go by a revocation: no outcome, its next owner processes it.
    LetGo,
}

#[derive(Debug)]
struct Inner {
    /// Per record of the window.
    states: Vec<State>,
    /// Per user of the window: a call of its was sent and its answer is not handled yet (the
    /// user's outcome decided, or the next call withdrawn). Its records are not let go meanwhile.
    answer_due: Vec<bool>,
}

/// A window's records, as revocations see them (see the module docs).
pub(crate) struct LiveRecords<'w> {
    window: &'w ClosedWindow,
    records_of: &'w RecordsById,
    revoking: watch::Receiver<Revoking>,
    /// Records let go are no longer pending there; `None` where nothing is ever revoked (a
    /// backfill).
    tracker: Option<Arc<Mutex<OffsetTracker>>>,
    inner: Mutex<Inner>,
}

impl<'w> LiveRecords<'w> {
    /// The records of `window`, watching `revoking`, letting go through `tracker`.
    pub fn new(
        window: &'w ClosedWindow,
        records_of: &'w RecordsById,
        revoking: watch::Receiver<Revoking>,
        tracker: Arc<Mutex<OffsetTracker>>,
    ) -> Self {
        Self::with(window, records_of, revoking, Some(tracker))
    }

    /// The records of a window nothing revokes (a backfill's).
    pub fn unrevoked(window: &'w ClosedWindow, records_of: &'w RecordsById) -> Self {
        Self::with(window, records_of, Revocations::new().watch(), None)
    }

    fn with(
        window: &'w ClosedWindow,
        records_of: &'w RecordsById,
        revoking: watch::Receiver<Revoking>,
        tracker: Option<Arc<Mutex<OffsetTracker>>>,
    ) -> Self {
        LiveRecords {
            window,
            records_of,
            revoking,
            tracker,
            inner: Mutex::new(Inner {
                states: vec![State::Waiting; window.records.len()],
                answer_due: vec![false; window.ids.len()],
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The users of `among` (indices into the window's UserIDs) that still have a record
    /// waiting for its outcome.
    pub fn waiting(&self, among: &[usize]) -> Vec<usize> {
        let inner = self.inner();
        among
            .iter()
            .copied()
            .filter(|&u| {
                self.records_of
                    .of(u)
                    .iter()
                    .any(|&r| inner.states[r] == State::Waiting)
            })
            .collect()
    }

    /// Every user of the window that still has a record waiting.
    pub fn waiting_users(&self) -> Vec<usize> {
        let all: Vec<usize> = (0..self.window.ids.len()).collect();
        self.waiting(&all)
    }

    /// Lets go the waiting records of the partitions being revoked whose users have no answer
    /// due. Returns how many it let go.
    pub fn let_go_revoked(&self) -> usize {
        let revoking = self.revoking.borrow().clone();
        let mut inner = self.inner();
        let mut let_go = Vec::new();
        for (r, record) in self.window.records.iter().enumerate() {
            let user = self.window.id_of_record[r];
            if inner.states[r] == State::Waiting
                && !inner.answer_due[user]
                && revoking.contains(record.pos)
            {
                inner.states[r] = State::LetGo;
                let_go.push(record.pos);
            }
        }
        drop(inner);
        if let Some(tracker) = &self.tracker {
            let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            for pos in &let_go {
                t.let_go(pos.partition, pos.epoch, pos.offset);
            }
        }
        if !let_go.is_empty() {
            tracing::debug!(
                records = let_go.len(),
                "records of revoked partitions let go before any call of theirs was sent"
            );
        }
        let_go.len()
    }

    /// The records to deliver now that the outcomes of `users` are decided: their waiting
    /// records, marked decided. A record whose partition is no longer this worker's (its
    /// revocation went through, undrained) is let go instead: nothing of a revoked partition is
    /// delivered after its revocation.
    pub fn decide(&self, users: &[usize]) -> Vec<usize> {
        let current = |pos: SourcePos| {
            self.tracker.as_ref().is_none_or(|t| {
                let t = t.lock().unwrap_or_else(|e| e.into_inner());
                t.is_current(pos.partition, pos.epoch)
            })
        };
        let mut inner = self.inner();
        let mut records = Vec::new();
        for &u in users {
            inner.answer_due[u] = false;
            for &r in self.records_of.of(u) {
                if inner.states[r] != State::Waiting {
                    continue;
                }
                if current(self.window.records[r].pos) {
                    inner.states[r] = State::Decided;
                    records.push(r);
                } else {
                    inner.states[r] = State::LetGo;
                }
            }
        }
        records
    }

    /// Whether a call for `users` is to be withdrawn before it sends: a waiting record of theirs
    /// is being revoked, or one of them has no record waiting any more (all let go meanwhile).
    fn withdraws(&self, inner: &Inner, revoking: &Revoking, users: &[usize]) -> bool {
        users.iter().any(|&u| {
            let mut waiting = self
                .records_of
                .of(u)
                .iter()
                .filter(|&&r| inner.states[r] == State::Waiting)
                .peekable();
            waiting.peek().is_none()
                || waiting.any(|&r| revoking.contains(self.window.records[r].pos))
        })
    }

    /// Whether a waiting record of the window is being revoked while its user has no answer
    /// due: the moment to let it go.
    fn to_let_go(&self) -> bool {
        let revoking = self.revoking.borrow().clone();
        if revoking.0.is_empty() {
            return false;
        }
        let inner = self.inner();
        (0..self.window.records.len()).any(|r| {
            let user = self.window.id_of_record[r];
            inner.states[r] == State::Waiting
                && !inner.answer_due[user]
                && revoking.contains(self.window.records[r].pos)
        })
    }

    /// Resolves once a call for `users` is to be withdrawn (`Some`), or once a waiting record
    /// of the window is to be let go (`None`).
    pub async fn revoked(&self, users: Option<&[usize]>) {
        let mut rx = self.revoking.clone();
        loop {
            let now = match users {
                Some(users) => {
                    let revoking = self.revoking.borrow().clone();
                    self.withdraws(&self.inner(), &revoking, users)
                }
                None => self.to_let_go(),
            };
            if now {
                return;
            }
            if rx.changed().await.is_err() {
                // Nothing revokes any more (the worker is stopping): never.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The [`Withdrawal`] of a call for `users`.
    pub fn call<'a>(&'a self, users: &'a [usize]) -> CallWithdrawal<'a, 'w> {
        CallWithdrawal { live: self, users }
    }
}

/// A call for some users of a window: withdrawn when a waiting record of theirs is being revoked
/// before the call sends (see the module docs).
pub(crate) struct CallWithdrawal<'a, 'w> {
    live: &'a LiveRecords<'w>,
    users: &'a [usize],
}

impl CallWithdrawal<'_, '_> {
    /// The call was withdrawn: the answer of its last exchange (if any) is handled, and the
    /// window's waiting records of the partitions being revoked are let go (see
    /// [`LiveRecords::let_go_revoked`]).
    pub fn let_go(&self) -> usize {
        let mut inner = self.live.inner();
        for &u in self.users {
            inner.answer_due[u] = false;
        }
        drop(inner);
        self.live.let_go_revoked()
    }
}

impl Withdrawal for CallWithdrawal<'_, '_> {
    fn sends(&self) -> bool {
        // Under the lock: a revocation that begins now finds the answer due.
        let revoking = self.live.revoking.borrow().clone();
        let mut inner = self.live.inner();
        if self.live.withdraws(&inner, &revoking, self.users) {
            return false;
        }
        for &u in self.users {
            inner.answer_due[u] = true;
        }
        true
    }

    fn withdrawn(&self) -> BoxFuture<'_, ()> {
        self.live.revoked(Some(self.users)).boxed()
    }
}
