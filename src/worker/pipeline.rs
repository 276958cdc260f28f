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
use crate::chat::{Attempted, ChatClient, ChatError, FailureClass};
use crate::domain::{failure_class, Outcome, OutcomeStatus, Stage};
use crate::shutdown::Shutdown;
use crate::systemic::{SystemicGate, Turn};
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

impl Stages {
    /// Resolves every distinct UserID of `window` (indexed like `window.ids`). `None` when the
    /// worker shut down while the window waited out a systemic fault. `check` counts the window's
    /// check as in flight (for the window close rule) until the check call returned.
    ///
    /// Outcomes are handed to `decided` as soon as they are known, `(index in window.ids,
    /// outcome)`: those the check decides (already imported, failed) together once it answered,
    /// each import's as it answers — a user's outcome does not wait for the window's slowest
    /// import. Every UserID is handed over exactly once, unless the window is abandoned.
    pub async fn resolve<F, Fut>(
        &self,
        window: &ClosedWindow,
        check: CheckInFlight,
        decided: F,
    ) -> Option<Vec<Outcome>>
    where
        F: Fn(Vec<(usize, Outcome)>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let ids: Vec<&str> = window.ids.iter().map(String::as_str).collect();
        let checked = self
            .until_not_systemic(|| self.client.account_check(&ids))
            .await;
        drop(check);
        let checked = checked?;
        let check_attempts = checked.attempts;
        let statuses = match checked.result {
            Ok(statuses) => statuses,
            Err(err) => {
                // The whole call failed for good: every user of the window fails at check.
                let outcome = failed(Stage::Check, &err, check_attempts);
                decided((0..ids.len()).map(|i| (i, outcome.clone())).collect()).await;
                return Some(vec![outcome; ids.len()]);
            }
        };

        // The first record of each UserID supplies Nick / FaceUrl for its import.
        let mut first_record = vec![usize::MAX; ids.len()];
        for (rec, &id) in window.id_of_record.iter().enumerate() {
            if first_record[id] == usize::MAX {
                first_record[id] = rec;
            }
        }
        let account = |i: usize| {
            let event = &window.records[first_record[i]].event;
            ImportAccount {
                user_id: &event.user_id,
                nick: event.nick.as_deref(),
                face_url: event.face_url.as_deref(),
            }
        };
        let mut outcomes: Vec<Outcome> = statuses
            .iter()
            .map(|s| match s {
                CheckOutcome::Imported => {
                    Outcome::success(OutcomeStatus::AlreadyImported, check_attempts)
                }
                // Filled in below from the import result.
                CheckOutcome::NotImported => Outcome::success(OutcomeStatus::Imported, 0),
                CheckOutcome::Failed { code, info } => Outcome {
                    status: OutcomeStatus::Failed,
                    error_code: *code,
                    error_info: format!("account_check ResultCode {code}: {info}"),
                    attempts: check_attempts,
                    failed_stage: Some(Stage::Check),
                    failure_class: failure_class::REJECTED,
                },
            })
            .collect();
        let decided = &decided;
        let by_check: Vec<(usize, Outcome)> = statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != CheckOutcome::NotImported)
            .map(|(i, _)| (i, outcomes[i].clone()))
            .collect();
        let by_check = async {
            if !by_check.is_empty() {
                decided(by_check).await;
            }
        };
        let to_import: Vec<usize> = statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == CheckOutcome::NotImported)
            .map(|(i, _)| i)
            .collect();
        let imports = async {
            // (user, attempts already spent on it by a batch call) to import one by one.
            let (batched, singles) = if self.import.use_batch(to_import.len()) {
                let (batched, again) = self.import_batch(&to_import, &account).await?;
                if !batched.is_empty() {
                    decided(batched.clone()).await;
                }
                (batched, again)
            } else {
                (Vec::new(), to_import.iter().map(|&i| (i, 0)).collect())
            };
            let singles = singles.into_iter().map(|(i, spent)| {
                let account = account(i);
                async move {
                    let imported = {
                        let _slot = self
                            .import_slots
                            .acquire()
                            .await
                            .expect("the import semaphore is never closed");
                        self.until_not_systemic(|| self.client.account_import(account))
                            .await?
                    };
                    let attempts = spent + imported.attempts;
                    let outcome = match imported.result {
                        Ok(()) => Outcome::success(OutcomeStatus::Imported, attempts),
                        Err(err) => failed(Stage::Import, &err, attempts),
                    };
                    decided(vec![(i, outcome.clone())]).await;
                    Some((i, outcome))
                }
            });
            let singles = join_all(singles).await;
            Some((batched, singles))
        };
        let ((), imported) = join(by_check, imports).await;
        let (batched, singles) = imported?;
        for (i, outcome) in batched {
            outcomes[i] = outcome;
        }
        for r in singles {
            let (i, outcome) = r?;
            outcomes[i] = outcome;
        }
        Some(outcomes)
    }

    /// One `multiaccount_import` for the users `to_import`: the outcomes of those it imported,
    /// and the others (with the attempts spent) for single imports — the ones in `FailAccounts`,
    /// or all of them when the batch call failed for good, so that each failed user gets its own
    /// vendor code and reason. `None` on shutdown during a systemic fault.
    #[allow(clippy::type_complexity)]
    async fn import_batch<'w>(
        &self,
        to_import: &[usize],
        account: &impl Fn(usize) -> ImportAccount<'w>,
    ) -> Option<(Vec<(usize, Outcome)>, Vec<(usize, u32)>)> {
        let accounts: Vec<ImportAccount<'w>> = to_import.iter().map(|&i| account(i)).collect();
        let _slot = self
            .import_slots
            .acquire()
            .await
            .expect("the import semaphore is never closed");
        let batch = self
            .until_not_systemic(|| self.client.multiaccount_import(&accounts))
            .await?;
        let spent = batch.attempts;
        let failed: HashSet<String> = match batch.result {
            Ok(fail_accounts) => fail_accounts.into_iter().collect(),
            Err(err) => {
                tracing::warn!(users = accounts.len(), error = %err, "multiaccount_import failed; importing the window's users one by one");
                return Some((Vec::new(), to_import.iter().map(|&i| (i, spent)).collect()));
            }
        };
        let (mut imported, mut again) = (Vec::new(), Vec::with_capacity(failed.len()));
        for (&i, a) in to_import.iter().zip(&accounts) {
            if failed.contains(a.user_id) {
                again.push((i, spent));
            } else {
                imported.push((i, Outcome::success(OutcomeStatus::Imported, spent)));
            }
        }
        Some((imported, again))
    }

    /// Runs `call` until its result is neither systemic nor an outage, waiting at the gate in
    /// between.
    async fn until_not_systemic<T, F, Fut>(&self, mut call: F) -> Option<Attempted<T>>
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
            trial = match self.gate.wait_turn(code, &self.shutdown).await {
                Turn::Open => None,
                Turn::Trial => Some(code),
                Turn::Shutdown => return None,
            };
        }
    }
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
