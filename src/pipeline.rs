//! The check and import stages: a closed window in, one [`Outcome`] per distinct UserID out.
//!
//! - check stage: one `account_check` for the window's distinct UserIDs;
//! - import stage: one `account_import` per `NotImported` UserID, all of them in flight at once
//!   (bounded by a worker-wide semaphore), so that the limiter, not latency, sets the pace.
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

use std::future::Future;
use std::sync::Arc;

use futures_util::future::{join, join_all};
use tokio::sync::Semaphore;

use crate::chat::client::{CheckOutcome, ImportAccount};
use crate::chat::health::is_availability_error;
use crate::chat::{Attempted, ChatClient, ChatError, FailureClass};
use crate::shutdown::Shutdown;
use crate::sink::{failure_class, Outcome, OutcomeStatus, Stage};
use crate::systemic::{SystemicGate, Turn};
use crate::window::{CheckInFlight, ClosedWindow};

/// What the stages share.
#[derive(Clone)]
pub struct Stages {
    /// The Chat API client (with the limiters inside).
    pub client: ChatClient,
    /// Bounds `account_import` calls in flight across all windows.
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
        let decided = &decided;
        let imports = statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == CheckOutcome::NotImported)
            .map(|(i, _)| {
                let event = &window.records[first_record[i]].event;
                let account = ImportAccount {
                    user_id: &event.user_id,
                    nick: event.nick.as_deref(),
                    face_url: event.face_url.as_deref(),
                };
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
                    let outcome = match imported.result {
                        Ok(()) => Outcome::success(OutcomeStatus::Imported, imported.attempts),
                        Err(err) => failed(Stage::Import, &err, imported.attempts),
                    };
                    decided(vec![(i, outcome.clone())]).await;
                    Some((i, outcome))
                }
            });
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
        let ((), imported) = join(by_check, join_all(imports)).await;
        for r in imported {
            let (i, outcome) = r?;
            outcomes[i] = outcome;
        }
        Some(outcomes)
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
