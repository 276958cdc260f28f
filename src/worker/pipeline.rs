//! The check, import and delete stages: a closed window in, one [`Outcome`] per distinct UserID
//! out. What a window does for a user is its records' net effect ([`super::window::reduce`]):
//!
//! - check stage: one `account_check` for the window's distinct UserIDs to create;
//! - import stage: the users to create that are `NotImported` — and only those, since the
//!   vendor's batch import overwrites the Nick / FaceUrl of accounts that exist — and the users
//!   to update (that overwrite is what an update is), either in one `multiaccount_import` (up to
//!   100 accounts a call, its own 100 calls/s budget) or one `account_import` each, as the
//!   [`ImportPlan`] decides; a call with an update in it is always a batch call, since the single
//!   import leaves an existing account's profile alone. Users the batch call lists in
//!   `FailAccounts` (it gives no reason) are imported again one by one, so each gets its own
//!   vendor code in its outcome. Single imports of a window are all in flight at once (bounded by
//!   a worker-wide semaphore), so that the limiter, not latency, sets the pace;
//! - delete stage: one `account_delete` for the users to delete (its own 100 calls/s budget),
//!   beside the other two; a user without an account (70107) is `already_absent`.
//!
//! In a dry run ([`Stages::dry_run`]) the check stage asks about every user and nothing else is
//! called: the outcomes say what would have been done.
//!
//! Each outcome is handed on as soon as it is decided (see [`Stages::resolve`]), so a user's
//! records are delivered without waiting for the rest of the window.
//!
//! A systemic error never becomes an outcome: the call waits at the [`SystemicGate`] and is made
//! again once the gate reopens. Nor does an outage: a call that gave up on availability errors
//! (its retry budget spent, or cut short because the API was declared unavailable) while no other
//! call of its API succeeded closes the gate as "Chat API unavailable" and waits the same way.
//! Only when other calls succeeded meanwhile is the failure this call's own (a poison account),
//! and its users are dead-lettered with `retries_exhausted`. If the worker shuts down while a
//! window waits, the window is abandoned (`None`) and its offsets stay uncommitted, to be replayed.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::{join, join_all};
use tokio::sync::Semaphore;

use crate::chat::client::{CheckOutcome, DeleteOutcome, ImportAccount};
use crate::chat::health::is_availability_error;
use crate::chat::{Attempted, ChatClient, ChatError, FailureClass, Withdrawal};
use crate::domain::{failure_class, EventKind, Outcome, OutcomeStatus, Stage};
use crate::shutdown::Shutdown;
use crate::systemic::{SystemicGate, Turn};
use crate::worker::live::LiveRecords;
use crate::worker::window::{CheckInFlight, ClosedWindow};

/// Which API imports the users of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportApi {
    /// One `account_import` per user (vendor: 200 calls/s, so 200 users/s).
    Single,
    /// One `multiaccount_import` per window (vendor: 100 calls/s of up to 100: 10,000 users/s).
    Batch,
    /// Batch when a window has at least `--batch-min` users to import, single otherwise.
    Auto,
}

/// How the import stage imports a window's `NotImported` users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportPlan {
    /// Which API.
    pub api: ImportApi,
    /// With [`ImportApi::Auto`]: the fewest users to import for which a batch call is made. A
    /// lone user goes single: it costs one token of the larger single budget and, should it
    /// fail, needs no second call to learn why.
    pub batch_min: usize,
}

impl Default for ImportPlan {
    fn default() -> Self {
        ImportPlan {
            api: ImportApi::Auto,
            batch_min: 2,
        }
    }
}

impl ImportPlan {
    /// Whether `n` users to import go in one batch call.
    pub fn use_batch(&self, n: usize) -> bool {
        n > 0
            && match self.api {
                ImportApi::Single => false,
                ImportApi::Batch => true,
                ImportApi::Auto => n >= self.batch_min,
            }
    }

    /// Whether a window's `creates` users to import go in a batch call, beside `updates` users
    /// to update (which always do: the single import does not overwrite a profile). With
    /// updates the batch call is made anyway, so the creates join it unless the plan says
    /// single.
    pub fn batch_creates(&self, creates: usize, updates: usize) -> bool {
        match self.api {
            ImportApi::Single => false,
            _ if updates > 0 => creates > 0,
            _ => self.use_batch(creates),
        }
    }

    /// Checks the settings; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=crate::chat::api::MAX_IDS_PER_CALL).contains(&self.batch_min) {
            return Err(format!(
                "--batch-min must be between 1 and {}, got {}",
                crate::chat::api::MAX_IDS_PER_CALL,
                self.batch_min
            ));
        }
        Ok(())
    }
}

/// What the stages share.
#[derive(Clone)]
pub struct Stages {
    /// The Chat API client (with the limiters inside).
    pub client: ChatClient,
    /// Single or batch import.
    pub import: ImportPlan,
    /// Bounds import calls (single or batch) in flight across all windows.
    pub import_slots: Arc<Semaphore>,
    /// Closed during systemic faults.
    pub gate: Arc<SystemicGate>,
    /// Abandons waiting windows on shutdown.
    pub shutdown: Shutdown,
    /// Only `account_check` is called (`--dry-run`): outcomes say what would have been done.
    pub dry_run: bool,
}

/// What resolving a window came to, per distinct UserID (indexed like `window.ids`): its
/// outcome, or `None` when a revocation let all its records go before a call of theirs was sent.
pub type Resolved = Vec<Option<Outcome>>;

/// A stage's call as the stages make it: until it is neither systemic nor an outage (waiting at
/// the gate in between), or withdrawn, or `None` on shutdown during a fault.
type Made<T> = Option<Attempted<T>>;

impl Stages {
    /// Resolves every distinct UserID of `window` still waiting in `live`. `None` when the
    /// worker shut down while the window waited out a systemic fault. `check` counts the window's
    /// check as in flight (for the window close rule) until the check call returned.
    ///
    /// Outcomes are handed to `decided` as soon as they are known, `(index in window.ids,
    /// outcome)`: those the check decides (already imported, failed) together once it answered,
    /// each import's as it answers — a user's outcome does not wait for the window's slowest
    /// import. Every UserID is handed over exactly once, unless the window is abandoned or a
    /// revocation lets the user's records go first (see [`super::live`]): a call about to send
    /// for users with records being revoked is withdrawn, those records are let go, and the call
    /// is made again for the users still waiting.
    pub async fn resolve<F, Fut>(
        &self,
        window: &ClosedWindow,
        check: CheckInFlight,
        live: &LiveRecords<'_>,
        decided: F,
    ) -> Option<Resolved>
    where
        F: Fn(Vec<(usize, Outcome)>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let outcomes: Resolved = vec![None; window.ids.len()];
        if self.dry_run {
            let dry = self.dry_run(window, check, live, &decided).await?;
            return Some(fill(outcomes, dry));
        }
        let of_kind = |kind| -> Vec<usize> {
            (0..window.ids.len())
                .filter(|&u| window.net[u].kind == kind)
                .collect()
        };
        let (creates, updates) = (of_kind(EventKind::Create), of_kind(EventKind::Update));
        let deletes = of_kind(EventKind::Delete);
        let written = self.create_and_update(window, check, live, (&creates, &updates), &decided);
        let deleted = self.delete(window, live, &deletes, &decided);
        let (written, deleted) = join(written, deleted).await;
        Some(fill(fill(outcomes, written?), deleted?))
    }

    /// The users to create (checked, then imported when missing) and to update (imported, which
    /// overwrites their profile): their outcomes, each handed to `decided` as it is known.
    async fn create_and_update<F, Fut>(
        &self,
        window: &ClosedWindow,
        check: CheckInFlight,
        live: &LiveRecords<'_>,
        (creates, updates): (&[usize], &[usize]),
        decided: &F,
    ) -> Option<Vec<(usize, Outcome)>>
    where
        F: Fn(Vec<(usize, Outcome)>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let checked = if creates.is_empty() {
            None
        } else {
            self.check(window, live, creates).await?
        };
        drop(check);
        let (by_check, mut to_import) = match checked {
            None => (Vec::new(), Vec::new()),
            Some((users, checked)) => match checked.result {
                // The whole call failed for good: every user of it fails at check.
                Err(err) => {
                    let outcome = failed(Stage::Check, &err, checked.attempts);
                    (
                        users.iter().map(|&u| (u, outcome.clone())).collect(),
                        Vec::new(),
                    )
                }
                Ok(statuses) => {
                    let by_check = users
                        .iter()
                        .zip(&statuses)
                        .filter_map(|(&u, s)| checked_outcome(s, checked.attempts).map(|o| (u, o)))
                        .collect();
                    let missing = users
                        .iter()
                        .zip(&statuses)
                        .filter(|(_, s)| **s == CheckOutcome::NotImported)
                        .map(|(&u, _)| u)
                        .collect();
                    (by_check, missing)
                }
            },
        };
        to_import.extend_from_slice(updates);
        let announce = async {
            if !by_check.is_empty() {
                decided(by_check.clone()).await;
            }
        };
        let imports = self.import(window, live, &to_import, decided);
        let ((), imported) = join(announce, imports).await;
        let mut all = by_check;
        all.extend(imported?);
        Some(all)
    }

    /// A dry run: one `account_check` for every user, and the outcome each would have had.
    async fn dry_run<F, Fut>(
        &self,
        window: &ClosedWindow,
        check: CheckInFlight,
        live: &LiveRecords<'_>,
        decided: &F,
    ) -> Option<Vec<(usize, Outcome)>>
    where
        F: Fn(Vec<(usize, Outcome)>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let all: Vec<usize> = (0..window.ids.len()).collect();
        let checked = self.check(window, live, &all).await?;
        drop(check);
        let Some((users, checked)) = checked else {
            return Some(Vec::new());
        };
        let outcomes: Vec<(usize, Outcome)> = match checked.result {
            Err(err) => {
                let outcome = failed(Stage::Check, &err, checked.attempts);
                users.iter().map(|&u| (u, outcome.clone())).collect()
            }
            Ok(statuses) => users
                .iter()
                .zip(&statuses)
                .map(|(&u, s)| (u, would(window.net[u].kind, s, checked.attempts)))
                .collect(),
        };
        decided(outcomes.clone()).await;
        Some(outcomes)
    }

    /// The delete stage: one `account_delete` for the users `deletes` still waiting, made again
    /// for fewer users when a revocation withdraws it; their outcomes, handed to `decided`.
    async fn delete<F, Fut>(
        &self,
        window: &ClosedWindow,
        live: &LiveRecords<'_>,
        deletes: &[usize],
        decided: &F,
    ) -> Option<Vec<(usize, Outcome)>>
    where
        F: Fn(Vec<(usize, Outcome)>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut users = live.waiting(deletes);
        let mut spent = 0;
        let answer = loop {
            if users.is_empty() {
                return Some(Vec::new());
            }
            let ids: Vec<&str> = users.iter().map(|&u| window.ids[u].as_str()).collect();
            let w = live.call(&users);
            let r = self
                .until_not_systemic(&w, || self.client.account_delete_unless_withdrawn(&ids, &w))
                .await?;
            spent += r.attempts;
            if is_withdrawn(&r) {
                w.let_go();
                users = live.waiting(&users);
                continue;
            }
            break r.result;
        };
        let outcomes: Vec<(usize, Outcome)> = match answer {
            Ok(items) => users
                .iter()
                .zip(items)
                .map(|(&u, item)| (u, deleted_outcome(item, spent)))
                .collect(),
            Err(err) => {
                let outcome = failed(Stage::Delete, &err, spent);
                users.iter().map(|&u| (u, outcome.clone())).collect()
            }
        };
        decided(outcomes.clone()).await;
        Some(outcomes)
    }

    /// The check stage: one `account_check` for the users `of` still waiting, made again for
    /// fewer users when a revocation withdraws it. `Some(None)`: every record was let go.
    async fn check(
        &self,
        window: &ClosedWindow,
        live: &LiveRecords<'_>,
        of: &[usize],
    ) -> Option<Option<(Vec<usize>, Attempted<Vec<CheckOutcome>>)>> {
        let mut users = live.waiting(of);
        let mut spent = 0;
        loop {
            if users.is_empty() {
                return Some(None);
            }
            let ids: Vec<&str> = users.iter().map(|&u| window.ids[u].as_str()).collect();
            let w = live.call(&users);
            let mut r = self
                .until_not_systemic(&w, || self.client.account_check_unless_withdrawn(&ids, &w))
                .await?;
            spent += r.attempts;
            if is_withdrawn(&r) {
                w.let_go();
                users = live.waiting(&users);
                continue;
            }
            r.attempts = spent;
            return Some(Some((users, r)));
        }
    }

    /// The import stage for the users `to_import` (the check's `NotImported` creates, and the
    /// updates): the outcomes of those imported or failed, each handed to `decided` as it is
    /// known.
    async fn import<F, Fut>(
        &self,
        window: &ClosedWindow,
        live: &LiveRecords<'_>,
        to_import: &[usize],
        decided: &F,
    ) -> Option<Vec<(usize, Outcome)>>
    where
        F: Fn(Vec<(usize, Outcome)>) -> Fut,
        Fut: Future<Output = ()>,
    {
        // The record the user's net effect names supplies Nick / FaceUrl.
        let account = |u: usize| {
            let event = &window.records[window.net[u].profile].event;
            ImportAccount {
                user_id: &event.user_id,
                nick: event.nick.as_deref(),
                face_url: event.face_url.as_deref(),
            }
        };
        // (user, attempts already spent on it by a batch call) to import one by one.
        let (batched, singles) = self.import_batch(window, to_import, &account, live).await?;
        if !batched.is_empty() {
            decided(batched.clone()).await;
        }
        let singles = singles.into_iter().map(|(u, spent)| {
            let account = account(u);
            async move {
                let imported = self.import_single(u, account, live).await?;
                let Some(imported) = imported else {
                    return Some(None);
                };
                let attempts = spent + imported.attempts;
                let outcome = match imported.result {
                    Ok(()) => Outcome::success(imported_status(window, u), attempts),
                    Err(err) => failed(Stage::Import, &err, attempts),
                };
                decided(vec![(u, outcome.clone())]).await;
                Some(Some((u, outcome)))
            }
        });
        let mut all = batched;
        for single in join_all(singles).await {
            all.extend(single?);
        }
        Some(all)
    }

    /// One `account_import` for user `u`, made again while a revocation withdraws it and the
    /// user still has records waiting. `Some(None)`: its records were all let go.
    async fn import_single(
        &self,
        u: usize,
        account: ImportAccount<'_>,
        live: &LiveRecords<'_>,
    ) -> Option<Option<Attempted<()>>> {
        let user = [u];
        let w = live.call(&user);
        let mut spent = 0;
        loop {
            if live.waiting(&user).is_empty() {
                return Some(None);
            }
            let mut r = {
                let Some(_slot) = self.import_slot(&w).await else {
                    w.let_go();
                    continue;
                };
                self.until_not_systemic(&w, || {
                    self.client.account_import_unless_withdrawn(account, &w)
                })
                .await?
            };
            spent += r.attempts;
            if is_withdrawn(&r) {
                w.let_go();
                continue;
            }
            r.attempts = spent;
            return Some(Some(r));
        }
    }

    /// A slot of the import calls in flight; `None` when the call is withdrawn meanwhile.
    async fn import_slot(&self, w: &dyn Withdrawal) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::select! {
            biased;
            () = w.withdrawn() => None,
            slot = self.import_slots.acquire() => Some(slot.expect("the import semaphore is never closed")),
        }
    }

    /// One `multiaccount_import` for the users `to_import` still waiting, when the plan batches
    /// them or one of them is an update: the outcomes of those it imported (or updated), and the
    /// others (with the attempts spent) for single imports — the ones in `FailAccounts`, or the
    /// creates when the batch call failed for good (its updates then fail with its error), so
    /// that each failed user gets its own vendor code and reason. Made again for
    /// fewer users when a revocation withdraws it. `None` on shutdown during a systemic fault.
    #[allow(clippy::type_complexity)]
    async fn import_batch<'w>(
        &self,
        window: &ClosedWindow,
        to_import: &[usize],
        account: &impl Fn(usize) -> ImportAccount<'w>,
        live: &LiveRecords<'_>,
    ) -> Option<(Vec<(usize, Outcome)>, Vec<(usize, u32)>)> {
        let is_update = |u: &usize| window.net[*u].kind == EventKind::Update;
        let (updates, creates): (Vec<usize>, Vec<usize>) =
            live.waiting(to_import).into_iter().partition(is_update);
        let (mut users, singles) = if self.import.batch_creates(creates.len(), updates.len()) {
            (live.waiting(to_import), Vec::new())
        } else {
            (updates, creates)
        };
        // Users the plan imports one by one: no attempt spent on them yet.
        let singles: Vec<(usize, u32)> = singles.into_iter().map(|u| (u, 0)).collect();
        let mut spent = 0;
        let batch = loop {
            if users.is_empty() {
                return Some((Vec::new(), singles));
            }
            let accounts: Vec<ImportAccount<'w>> = users.iter().map(|&u| account(u)).collect();
            let w = live.call(&users);
            let r = {
                let Some(_slot) = self.import_slot(&w).await else {
                    w.let_go();
                    users = live.waiting(&users);
                    continue;
                };
                self.until_not_systemic(&w, || {
                    self.client
                        .multiaccount_import_unless_withdrawn(&accounts, &w)
                })
                .await?
            };
            spent += r.attempts;
            if is_withdrawn(&r) {
                w.let_go();
                users = live.waiting(&users);
                continue;
            }
            break r;
        };
        let failed: HashSet<String> = match batch.result {
            Ok(fail_accounts) => fail_accounts.into_iter().collect(),
            Err(err) => {
                tracing::warn!(users = users.len(), error = %err, "multiaccount_import failed; importing the window's users to create one by one");
                // An update cannot be made one by one (the single import leaves an existing
                // account's profile alone): it fails with the batch call's error.
                let (updates, creates): (Vec<usize>, Vec<usize>) =
                    users.iter().partition(|u| is_update(u));
                let failed_updates = updates
                    .into_iter()
                    .map(|u| (u, failed(Stage::Import, &err, spent)))
                    .collect();
                let mut again = singles;
                again.extend(creates.into_iter().map(|u| (u, spent)));
                return Some((failed_updates, again));
            }
        };
        let (mut imported, mut again) = (Vec::new(), singles);
        for &u in &users {
            if failed.contains(account(u).user_id) {
                again.push((u, spent));
            } else {
                imported.push((u, Outcome::success(imported_status(window, u), spent)));
            }
        }
        Some((imported, again))
    }

    /// Runs `call` until its result is neither systemic nor an outage, waiting at the gate in
    /// between — unless `withdrawal` withdraws the call while it waits (the result is then
    /// [`ChatError::Withdrawn`]).
    async fn until_not_systemic<T, F, Fut>(
        &self,
        withdrawal: &dyn Withdrawal,
        mut call: F,
    ) -> Made<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempted<T>>,
    {
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        // The systemic code this call waits for while it is the gate's trial (a fault the probe
        // cannot see, see `systemic`): its result, not the probe's, decides whether the gate
        // reopens.
        let mut trial: Option<i64> = None;
        loop {
            let mut r = call().await;
            attempts += r.attempts;
            let code = match &r.result {
                Err(ChatError::Withdrawn { .. }) => {
                    if trial.is_some() {
                        self.gate.trial_inconclusive();
                    }
                    r.attempts = attempts;
                    return Some(r);
                }
                Err(err) if err.class() == FailureClass::Systemic => {
                    if trial.is_some() {
                        self.gate.trial_result(Some(err));
                    } else {
                        self.gate.report(err);
                    }
                    err.vendor_code()
                }
                Err(err) if self.is_outage(err, started) => {
                    self.client.health().declare_unavailable();
                    match trial {
                        // The trial could not be made: the API is down. The fault stands and
                        // this call stays in line for the next trial.
                        Some(code) => {
                            self.gate.trial_inconclusive();
                            code
                        }
                        None => {
                            self.gate.report_unavailable(err);
                            err.vendor_code()
                        }
                    }
                }
                _ => {
                    if trial.is_some() {
                        self.gate.trial_result(None);
                    }
                    r.attempts = attempts;
                    return Some(r);
                }
            };
            let api = r.result.as_ref().err().map(ChatError::api);
            trial = tokio::select! {
                biased;
                turn = self.gate.wait_turn(code, &self.shutdown) => match turn {
                    Turn::Open => None,
                    Turn::Trial => Some(code),
                    Turn::Shutdown => return None,
                },
                () = withdrawal.withdrawn() => {
                    let api = api.expect("a call that waits at the gate failed");
                    return Some(Attempted { result: Err(ChatError::Withdrawn { api }), attempts });
                }
            };
        }
    }
}

/// The outcome the check alone decides for a user: already imported, or failed (a per-item
/// `ResultCode`); `None` for a user to import.
fn checked_outcome(status: &CheckOutcome, attempts: u32) -> Option<Outcome> {
    match status {
        CheckOutcome::Imported => Some(Outcome::success(OutcomeStatus::AlreadyImported, attempts)),
        CheckOutcome::NotImported => None,
        CheckOutcome::Failed { code, info } => Some(Outcome {
            status: OutcomeStatus::Failed,
            error_code: *code,
            error_info: format!("account_check ResultCode {code}: {info}"),
            attempts,
            failed_stage: Some(Stage::Check),
            failure_class: failure_class::REJECTED,
        }),
    }
}

/// The status of a user an import call succeeded for: created, or (an update) written.
fn imported_status(window: &ClosedWindow, u: usize) -> OutcomeStatus {
    match window.net[u].kind {
        EventKind::Update => OutcomeStatus::Updated,
        _ => OutcomeStatus::Imported,
    }
}

/// The outcome of one user of an `account_delete` answer.
fn deleted_outcome(item: DeleteOutcome, attempts: u32) -> Outcome {
    match item {
        DeleteOutcome::Deleted => Outcome::success(OutcomeStatus::Deleted, attempts),
        DeleteOutcome::Absent => Outcome::success(OutcomeStatus::AlreadyAbsent, attempts),
        DeleteOutcome::Failed { code, info } => Outcome {
            status: OutcomeStatus::Failed,
            error_code: code,
            error_info: format!("account_delete ResultCode {code}: {info}"),
            attempts,
            failed_stage: Some(Stage::Delete),
            failure_class: failure_class::REJECTED,
        },
    }
}

/// A dry run's outcome for a user of `kind` the check answered `status` about: what would have
/// been done.
fn would(kind: EventKind, status: &CheckOutcome, attempts: u32) -> Outcome {
    let exists = match status {
        CheckOutcome::Imported => true,
        CheckOutcome::NotImported => false,
        CheckOutcome::Failed { .. } => {
            return checked_outcome(status, attempts).expect("a failed check is an outcome")
        }
    };
    let status = match (kind, exists) {
        (EventKind::Create, true) => OutcomeStatus::AlreadyImported,
        (EventKind::Create, false) => OutcomeStatus::WouldImport,
        (EventKind::Update, _) => OutcomeStatus::WouldUpdate,
        (EventKind::Delete, true) => OutcomeStatus::WouldDelete,
        (EventKind::Delete, false) => OutcomeStatus::AlreadyAbsent,
    };
    Outcome::success(status, attempts)
}

/// `outcomes` with `decided` filled in.
fn fill(mut outcomes: Resolved, decided: Vec<(usize, Outcome)>) -> Resolved {
    for (u, outcome) in decided {
        outcomes[u] = Some(outcome);
    }
    outcomes
}

fn is_withdrawn<T>(r: &Attempted<T>) -> bool {
    matches!(r.result, Err(ChatError::Withdrawn { .. }))
}

impl Stages {
    /// True when `err` ends a call (first attempt at `since`) because of the API, not the call:
    /// it gave up on availability errors and no real call of its API succeeded meanwhile.
    fn is_outage(&self, err: &ChatError, since: tokio::time::Instant) -> bool {
        matches!(err, ChatError::Exhausted { .. })
            && is_availability_error(err)
            && !self.client.health().succeeded_since(err.api(), since)
    }
}

fn failed(stage: Stage, err: &ChatError, attempts: u32) -> Outcome {
    if err.code_kind() == Some(crate::chat::CodeKind::MalformedRequest) {
        // The vendor says our request is malformed: a bug on our side. Loud, but only for the
        // affected users: the rest of the traffic goes on.
        tracing::error!(code = err.vendor_code(), reason = %err, "the Chat API rejected a request as malformed: this is a bug in account-sync");
    }
    let class = match err {
        ChatError::Exhausted { .. } => failure_class::RETRIES_EXHAUSTED,
        ChatError::InvalidRequest { .. } => failure_class::BUG,
        _ if err.code_kind() == Some(crate::chat::CodeKind::MalformedRequest) => failure_class::BUG,
        _ => failure_class::REJECTED,
    };
    Outcome {
        status: OutcomeStatus::Failed,
        error_code: err.vendor_code(),
        error_info: err.to_string(),
        attempts,
        failed_stage: Some(stage),
        failure_class: class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_always_batch_and_creates_join_them_unless_the_plan_says_single() {
        let plan = |api| ImportPlan { api, batch_min: 2 };
        let auto = plan(ImportApi::Auto);
        assert!(!auto.batch_creates(1, 0), "a lone create goes single");
        assert!(auto.batch_creates(2, 0));
        assert!(auto.batch_creates(1, 3), "the batch call is made anyway");
        assert!(!auto.batch_creates(0, 3), "no creates to batch");
        assert!(!plan(ImportApi::Single).batch_creates(5, 3));
        assert!(plan(ImportApi::Batch).batch_creates(1, 0));
    }
}
