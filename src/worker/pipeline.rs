//! The check and import stages: a closed window in, one [`Outcome`] per distinct UserID out.
//!
//! - check stage: one `account_check` for the window's distinct UserIDs;
//! - import stage: the window's `NotImported` UserIDs — and only those, since the vendor's batch
//!   import overwrites the Nick / FaceUrl of accounts that exist — either in one
//!   `multiaccount_import` (up to 100 accounts a call, its own 100 calls/s budget) or one
//!   `account_import` each, as the [`ImportPlan`] decides. Users the batch call lists in
//!   `FailAccounts` (it gives no reason) are imported again one by one, so each gets its own
//!   vendor code in its outcome. Single imports of a window are all in flight at once (bounded by
//!   a worker-wide semaphore), so that the limiter, not latency, sets the pace.
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

use crate::chat::client::{CheckOutcome, ImportAccount};
use crate::chat::health::is_availability_error;
use crate::chat::{Attempted, ChatClient, ChatError, FailureClass, Withdrawal};
use crate::domain::{failure_class, Outcome, OutcomeStatus, Stage};
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
        let mut outcomes: Resolved = vec![None; window.ids.len()];
        let checked = self.check(window, live).await;
        drop(check);
        let Some((users, checked)) = checked? else {
            return Some(outcomes);
        };
        let statuses = match checked.result {
            Ok(statuses) => statuses,
            Err(err) => {
                // The whole call failed for good: every user of it fails at check.
                let outcome = failed(Stage::Check, &err, checked.attempts);
                let all: Vec<(usize, Outcome)> =
                    users.iter().map(|&u| (u, outcome.clone())).collect();
                decided(all.clone()).await;
                return Some(fill(outcomes, all));
            }
        };
        let by_check: Vec<(usize, Outcome)> = users
            .iter()
            .zip(&statuses)
            .filter_map(|(&u, s)| checked_outcome(s, checked.attempts).map(|o| (u, o)))
            .collect();
        let to_import: Vec<usize> = users
            .iter()
            .zip(&statuses)
            .filter(|(_, s)| **s == CheckOutcome::NotImported)
            .map(|(&u, _)| u)
            .collect();
        outcomes = fill(outcomes, by_check.clone());
        let by_check = async {
            if !by_check.is_empty() {
                decided(by_check).await;
            }
        };
        let imports = self.import(window, live, &to_import, &decided);
        let ((), imported) = join(by_check, imports).await;
        Some(fill(outcomes, imported?))
    }

    /// The check stage: one `account_check` for the window's users still waiting, made again for
    /// fewer users when a revocation withdraws it. `Some(None)`: every record was let go.
    async fn check(
        &self,
        window: &ClosedWindow,
        live: &LiveRecords<'_>,
    ) -> Option<Option<(Vec<usize>, Attempted<Vec<CheckOutcome>>)>> {
        let mut users = live.waiting_users();
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

    /// The import stage for the users `to_import` (the check's `NotImported`): the outcomes of
    /// those imported or failed, each handed to `decided` as it is known.
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
        // The first record of each UserID supplies Nick / FaceUrl for its import.
        let mut first_record = vec![usize::MAX; window.ids.len()];
        for (rec, &id) in window.id_of_record.iter().enumerate().rev() {
            first_record[id] = rec;
        }
        let account = |u: usize| {
            let event = &window.records[first_record[u]].event;
            ImportAccount {
                user_id: &event.user_id,
                nick: event.nick.as_deref(),
                face_url: event.face_url.as_deref(),
            }
        };
        // (user, attempts already spent on it by a batch call) to import one by one.
        let (batched, singles) = self.import_batch(to_import, &account, live).await?;
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
                    Ok(()) => Outcome::success(OutcomeStatus::Imported, attempts),
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
    /// them: the outcomes of those it imported, and the others (with the attempts spent) for
    /// single imports — the ones in `FailAccounts`, or all of them when the batch call failed
    /// for good, so that each failed user gets its own vendor code and reason. Made again for
    /// fewer users when a revocation withdraws it. `None` on shutdown during a systemic fault.
    #[allow(clippy::type_complexity)]
    async fn import_batch<'w>(
        &self,
        to_import: &[usize],
        account: &impl Fn(usize) -> ImportAccount<'w>,
        live: &LiveRecords<'_>,
    ) -> Option<(Vec<(usize, Outcome)>, Vec<(usize, u32)>)> {
        let mut users = live.waiting(to_import);
        let mut spent = 0;
        let batch = loop {
            if !self.import.use_batch(users.len()) {
                return Some((Vec::new(), users.iter().map(|&u| (u, spent)).collect()));
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
                tracing::warn!(users = users.len(), error = %err, "multiaccount_import failed; importing the window's users one by one");
                return Some((Vec::new(), users.iter().map(|&u| (u, spent)).collect()));
            }
        };
        let (mut imported, mut again) = (Vec::new(), Vec::with_capacity(failed.len()));
        for &u in &users {
            if failed.contains(account(u).user_id) {
                again.push((u, spent));
            } else {
                imported.push((u, Outcome::success(OutcomeStatus::Imported, spent)));
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
