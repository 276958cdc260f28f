//! Retry decisions, in one place (the `RetryLogic` of Vector's HTTP sinks).
//!
//! [`with_retries`] runs one logical call as a series of attempts. After each failed attempt,
//! [`RetryPolicy::decide`] says what to do from the error's [`FailureClass`]:
//! - retryable and frequency-limited: back off (exponential with jitter, a [`Backoff`]) and try
//!   again, within an attempt budget and a total time budget;
//! - unknown vendor codes: the same, but only `unknown_code_attempts` times, then give up (the users
//!   are dead-lettered and the code is counted);
//! - a UserSig error: regenerate the UserSig and try once more at once; if it comes back, systemic;
//! - permanent and systemic: give up at once.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{ChatError, CodeKind, FailureClass};
use super::withdraw::Withdrawal;
use crate::backoff::{Backoff, Delays};

/// How hard to try before giving up. Defaults suit a worker that would rather dead-letter a user
/// after a minute of vendor trouble than hold a partition forever.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Attempts for vendor codes the classification table does not know.
    pub unknown_code_attempts: u32,
    /// No new attempt starts once this much time has passed since the first one.
    pub max_elapsed: Duration,
    /// First backoff delay (before jitter).
    pub initial_backoff: Duration,
    /// Backoff delays never exceed this (before jitter).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            unknown_code_attempts: 3,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again after `delay`; `fresh_usersig` asks for a newly generated UserSig.
    Retry {
        delay: Duration,
        fresh_usersig: bool,
    },
    /// Stop; the call fails with this error.
    GiveUp(ChatError),
}

/// What the attempt closure is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// Regenerate the UserSig before sending (the previous attempt got a UserSig error).
    pub fresh_usersig: bool,
}

/// A call's result together with how many attempts it took (outcome records carry it).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempted<T> {
    /// The final result.
    pub result: Result<T, ChatError>,
    /// Attempts made: at least 1, but for a call withdrawn before it sent anything (0).
    pub attempts: u32,
}

impl RetryPolicy {
    /// Checks the settings; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry max attempts must be at least 1".into());
        }
        if self.unknown_code_attempts == 0 {
            return Err("retry attempts for unknown codes must be at least 1".into());
        }
        if self.initial_backoff > self.max_backoff {
            return Err("retry initial backoff must not exceed the max backoff".into());
        }
        Ok(())
    }

    /// The backoff delays, jittered. Built per call; cheap.
    pub fn backoff(&self) -> Delays {
        Backoff::doubling(self.initial_backoff, self.max_backoff)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .delays()
    }

    /// The retry logic. `attempt` is the number of the attempt that just failed, `elapsed` the time
    /// since the first attempt started, `sig_refreshed` whether a fresh UserSig was already tried,
    /// `next_delay` the next backoff delay (None once the backoff is exhausted).
    pub fn decide(
        &self,
        err: ChatError,
        attempt: u32,
        elapsed: Duration,
        sig_refreshed: bool,
        next_delay: Option<Duration>,
    ) -> Decision {
        match err.class() {
            FailureClass::Permanent => Decision::GiveUp(err),
            FailureClass::Systemic => {
                if err.is_usersig_error() && !sig_refreshed {
                    Decision::Retry {
                        delay: Duration::ZERO,
                        fresh_usersig: true,
                    }
                } else {
                    Decision::GiveUp(err)
                }
            }
            FailureClass::Retryable | FailureClass::FrequencyLimited => {
                let budget = if err.code_kind() == Some(CodeKind::Unknown) {
                    self.unknown_code_attempts.min(self.max_attempts)
                } else {
                    self.max_attempts
                };
                match next_delay {
                    Some(delay) if attempt < budget && elapsed + delay <= self.max_elapsed => {
                        Decision::Retry {
                            delay,
                            fresh_usersig: false,
                        }
                    }
                    _ => Decision::GiveUp(ChatError::Exhausted {
                        attempts: attempt,
                        last: Box::new(err),
                    }),
                }
            }
        }
    }
}

/// Runs `attempt_fn` until it succeeds or [`RetryPolicy::decide`] gives up.
///
/// `hold` is asked before each retry of a retryable error: when it says the API is unavailable
/// (see [`super::health`]), the call gives up at once instead of spending its budget against a
/// dead API; the caller waits out the outage at the systemic gate and calls again.
/// `withdrawal` ends the call during a backoff (see [`super::withdraw`]); an attempt that ends
/// [`ChatError::Withdrawn`] ends it too.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    hold: impl Fn() -> bool,
    withdrawal: &dyn Withdrawal,
    mut attempt_fn: F,
) -> Attempted<T>
where
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<T, ChatError>>,
{
    let start = Instant::now();
    let mut backoff = policy.backoff();
    let mut attempt = Attempt {
        number: 1,
        fresh_usersig: false,
    };
    let mut sig_refreshed = false;
    loop {
        match attempt_fn(attempt).await {
            Ok(value) => {
                return Attempted {
                    result: Ok(value),
                    attempts: attempt.number,
                }
            }
            Err(err @ ChatError::Withdrawn { .. }) => {
                return Attempted {
                    result: Err(err),
                    attempts: attempt.number - 1,
                }
            }
            Err(err) => {
                let api = err.api();
                let retryable = matches!(
                    err.class(),
                    FailureClass::Retryable | FailureClass::FrequencyLimited
                );
                if retryable && hold() {
                    return Attempted {
                        result: Err(ChatError::Exhausted {
                            attempts: attempt.number,
                            last: Box::new(err),
                        }),
                        attempts: attempt.number,
                    };
                }
                // A UserSig retry does not consume backoff: it is immediate and happens once.
                let next_delay = if err.is_usersig_error() && !sig_refreshed {
                    Some(Duration::ZERO)
                } else {
                    backoff.next()
                };
                // For the log line; ChatError carries no URL, so no secret.
                let error_text = err.to_string();
                match policy.decide(
                    err,
                    attempt.number,
                    start.elapsed(),
                    sig_refreshed,
                    next_delay,
                ) {
                    Decision::GiveUp(err) => {
                        return Attempted {
                            result: Err(err),
                            attempts: attempt.number,
                        }
                    }
                    Decision::Retry {
                        delay,
                        fresh_usersig,
                    } => {
                        tracing::debug!(
                            attempt = attempt.number,
                            ?delay,
                            fresh_usersig,
                            error = %error_text,
                            "API call failed; retrying"
                        );
                        sig_refreshed |= fresh_usersig;
                        if !delay.is_zero() {
                            tokio::select! {
                                biased;
                                () = withdrawal.withdrawn() => {
                                    return Attempted {
                                        result: Err(ChatError::Withdrawn { api }),
                                        attempts: attempt.number,
                                    }
                                }
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                        attempt = Attempt {
                            number: attempt.number + 1,
                            fresh_usersig,
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
