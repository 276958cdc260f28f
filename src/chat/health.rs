//! Is the Chat API available? The outage detector, fed by every attempt of every call.
//!
//! A single failing call says little: one account can be poison (the vendor answers 70500 for it
//! every time) while everybody else's calls go through. An outage is the API failing for
//! everybody, so the rule looks at *different* calls and at time:
//!
//! > the API is **unavailable** once no attempt has succeeded for [`OutageRule::after`] while at
//! > least [`OutageRule::min_failed_calls`] different calls failed with an availability error
//! > (transport error, HTTP 5xx, a transient vendor code, a frequency-limit answer) in that time.
//!
//! It stays unavailable until an attempt succeeds (in practice the systemic prober's probe), and
//! trips again only after another full `after` with no success: that is the hysteresis that keeps
//! a flaky API (30 % 502 answers) retried, never paused, and a recovering one from flapping.
//!
//! The detector only observes; the pipeline turns "unavailable" into a closed
//! [`SystemicGate`](crate::systemic::SystemicGate), the one pause mechanism of the worker.
//!
//! Any answer the vendor gives itself (a per-account rejection, a systemic code) shows the API is
//! up, so it counts as a success here; only availability errors count as failures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::api::Api;
use super::error::{ChatError, CodeKind, FailureClass};

/// When the API counts as unavailable (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageRule {
    /// No successful attempt for this long...
    pub after: Duration,
    /// ...while at least this many different calls failed with an availability error.
    pub min_failed_calls: u32,
}

impl Default for OutageRule {
    fn default() -> Self {
        // 10 s: long enough that a blip or a slow gateway restart does not pause the worker,
        // short enough that an outage does not burn through the retry budgets (60 s) of every
        // call in flight. 5 calls: one poison account cannot trip it alone.
        OutageRule {
            after: Duration::from_secs(10),
            min_failed_calls: 5,
        }
    }
}

impl OutageRule {
    /// Checks the settings; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.after.is_zero() {
            return Err("--outage-after must be longer than 0".into());
        }
        if self.min_failed_calls == 0 {
            return Err("--outage-min-failed-calls must be at least 1".into());
        }
        Ok(())
    }
}

/// True for errors that say "the API is not answering properly" rather than anything about the
/// request: the errors an outage is made of. Unknown vendor codes are left out (they are more
/// likely about the account than about the service).
pub fn is_availability_error(err: &ChatError) -> bool {
    match err {
        ChatError::Exhausted { last, .. } => is_availability_error(last),
        ChatError::Vendor { .. } => matches!(
            err.code_kind(),
            Some(CodeKind::Transient | CodeKind::FrequencyLimit)
        ),
        ChatError::Http { .. } => matches!(
            err.class(),
            FailureClass::Retryable | FailureClass::FrequencyLimited
        ),
        ChatError::Timeout { .. } | ChatError::Connect { .. } | ChatError::BadResponse { .. } => {
            true
        }
        ChatError::InvalidRequest { .. } | ChatError::Withdrawn { .. } => false,
    }
}

/// One call's bookkeeping: makes a call that fails many times count once.
#[derive(Debug)]
pub struct CallToken {
    /// The failure epoch in which this call was last counted (`u64::MAX`: never).
    counted_in: AtomicU64,
    /// A probe: its success ends an outage, but is no evidence that the API serves real calls
    /// (see [`ApiHealth::succeeded_since`]).
    probe: bool,
}

impl Default for CallToken {
    fn default() -> Self {
        CallToken {
            counted_in: AtomicU64::new(u64::MAX),
            probe: false,
        }
    }
}

impl CallToken {
    /// The token of a probe.
    pub fn probe() -> Self {
        CallToken {
            probe: true,
            ..CallToken::default()
        }
    }
}

#[derive(Debug)]
struct State {
    /// Last successful attempt of each API family (index: [`family`]).
    last_success: [Option<Instant>; 3],
    /// Start of the current run of failures: the first failure after the last success.
    failing_since: Option<Instant>,
    /// Different calls that failed since `failing_since`.
    failed_calls: u32,
    /// Bumped on every success, so a call counted before it counts again after it.
    epoch: u64,
    /// The rule tripped and nothing succeeded since.
    unavailable: bool,
}

/// The detector. One per client, shared by its clones.
#[derive(Debug)]
pub struct ApiHealth {
    rule: OutageRule,
    state: Mutex<State>,
}

/// The single and the batch import are one family: both create accounts on the same backend,
/// and in batch mode the single import only serves the batch's `FailAccounts`, so a poison
/// account retried singly must count the batch calls' successes as "the API is up".
fn family(api: Api) -> usize {
    match api {
        Api::AccountCheck => 0,
        Api::AccountImport | Api::MultiaccountImport => 1,
        Api::AccountDelete => 2,
    }
}

impl ApiHealth {
    /// A detector that has seen nothing yet (available).
    pub fn new(rule: OutageRule) -> Self {
        ApiHealth {
            rule,
            state: Mutex::new(State {
                last_success: [None; 3],
                failing_since: None,
                failed_calls: 0,
                epoch: 0,
                unavailable: false,
            }),
        }
    }

    /// The rule in force.
    pub fn rule(&self) -> OutageRule {
        self.rule
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one attempt of `call` to `api`. Returns true when this attempt made the API
    /// unavailable (the rule tripped just now).
    pub fn record(&self, api: Api, result: Result<(), &ChatError>, call: &CallToken) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        match result {
            Err(err) if is_availability_error(err) => {
                let since = *s.failing_since.get_or_insert(now);
                if call.counted_in.swap(s.epoch, Ordering::Relaxed) != s.epoch {
                    s.failed_calls += 1;
                }
                // `failing_since` is the first failure after the last success, so the time
                // since it is the time without a success.
                let trip = !s.unavailable
                    && s.failed_calls >= self.rule.min_failed_calls
                    && now.duration_since(since) >= self.rule.after;
                if trip {
                    s.unavailable = true;
                }
                trip
            }
            // Systemic answers say nothing about availability; the gate handles them.
            Err(err) if err.class() == FailureClass::Systemic => false,
            // Success, or an answer of the vendor about the request: the API is up.
            _ => {
                if !call.probe {
                    s.last_success[family(api)] = Some(now);
                }
                s.failing_since = None;
                s.failed_calls = 0;
                s.epoch += 1;
                s.unavailable = false;
                false
            }
        }
    }

    /// True once the rule tripped (or [`Self::declare_unavailable`] was called), until the next
    /// success.
    pub fn is_unavailable(&self) -> bool {
        self.state().unavailable
    }

    /// Marks the API unavailable without waiting for the rule: a call spent its whole retry
    /// budget and no call of its API succeeded meanwhile.
    pub fn declare_unavailable(&self) {
        self.state().unavailable = true;
    }

    /// Whether a real call (not a probe) of `api`'s family succeeded at or after `t`: the evidence
    /// that a call which spent its retry budget meanwhile failed for its own reasons (a poison
    /// account), not the API's. A probe is left out: the one `account_check` of the admin succeeding says
    /// little about the calls that keep failing.
    pub fn succeeded_since(&self, api: Api, t: Instant) -> bool {
        self.state().last_success[family(api)].is_some_and(|s| s >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: OutageRule = OutageRule {
        after: Duration::from_secs(10),
        min_failed_calls: 3,
    };

    fn bad_gateway() -> ChatError {
        ChatError::Http {
            api: Api::AccountImport,
            status: 502,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_only_after_quiet_time_and_enough_different_calls() {
        let h = ApiHealth::new(RULE);
        let one = CallToken::default();
        // One call failing for a long time is not an outage: it may be a poison account.
        for _ in 0..20 {
            assert!(!h.record(Api::AccountImport, Err(&bad_gateway()), &one));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(!h.is_unavailable());
        let (two, three) = (CallToken::default(), CallToken::default());
        assert!(!h.record(Api::AccountImport, Err(&bad_gateway()), &two));
        assert!(h.record(Api::AccountCheck, Err(&bad_gateway()), &three));
        assert!(h.is_unavailable());
        // Tripped once; further failures do not trip again.
        assert!(!h.record(Api::AccountCheck, Err(&bad_gateway()), &three));
        // A success ends it.
        h.record(Api::AccountCheck, Ok(()), &CallToken::default());
        assert!(!h.is_unavailable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flaky_api_never_trips() {
        let h = ApiHealth::new(RULE);
        for i in 0..1_000u32 {
            let call = CallToken::default();
            // 70 % failures, but something succeeds every few hundred ms.
            let result = if i % 10 < 7 {
                Err(bad_gateway())
            } else {
                Ok(())
            };
            assert!(!h.record(Api::AccountImport, result.as_ref().map(|_| ()), &call));
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(!h.is_unavailable());
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_success_the_full_quiet_time_is_needed_again() {
        let h = ApiHealth::new(RULE);
        let calls: Vec<CallToken> = (0..3).map(|_| CallToken::default()).collect();
        for c in &calls {
            h.record(Api::AccountCheck, Err(&bad_gateway()), c);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(h.record(Api::AccountCheck, Err(&bad_gateway()), &calls[0]));
        h.record(Api::AccountCheck, Ok(()), &CallToken::default());
        tokio::time::advance(Duration::from_secs(5)).await;
        // The same calls fail again: they count again (new epoch), but 5 s is not 10 s.
        for c in &calls {
            assert!(!h.record(Api::AccountCheck, Err(&bad_gateway()), c));
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!h.record(Api::AccountCheck, Err(&bad_gateway()), &calls[0]));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(h.record(Api::AccountCheck, Err(&bad_gateway()), &calls[0]));
    }

    #[tokio::test(start_paused = true)]
    async fn vendor_answers_are_signs_of_life_and_systemic_ones_neutral() {
        let h = ApiHealth::new(OutageRule {
            after: Duration::from_secs(1),
            min_failed_calls: 1,
        });
        let t0 = Instant::now();
        let rejected = ChatError::Vendor {
            api: Api::AccountImport,
            code: 40601,
            info: "Nick too long".into(),
        };
        h.record(Api::AccountImport, Err(&rejected), &CallToken::default());
        assert!(h.succeeded_since(Api::AccountImport, t0));
        assert!(h.succeeded_since(Api::MultiaccountImport, t0), "one family");
        assert!(!h.succeeded_since(Api::AccountCheck, t0));
        let wrong_key = ChatError::Vendor {
            api: Api::AccountCheck,
            code: 70009,
            info: "bad sig".into(),
        };
        tokio::time::advance(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        assert!(!h.record(Api::AccountCheck, Err(&wrong_key), &CallToken::default()));
        assert!(!h.succeeded_since(Api::AccountCheck, t1));
        assert!(!h.is_unavailable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_ends_the_outage_but_is_no_evidence_for_real_calls() {
        let h = ApiHealth::new(RULE);
        h.declare_unavailable();
        let t0 = Instant::now();
        h.record(Api::AccountCheck, Ok(()), &CallToken::probe());
        assert!(!h.is_unavailable());
        assert!(!h.succeeded_since(Api::AccountCheck, t0));
        h.record(Api::AccountCheck, Ok(()), &CallToken::default());
        assert!(h.succeeded_since(Api::AccountCheck, t0));
    }

    #[test]
    fn availability_errors() {
        let api = Api::AccountCheck;
        let vendor = |code| ChatError::Vendor {
            api,
            code,
            info: String::new(),
        };
        assert!(is_availability_error(&ChatError::Http { api, status: 503 }));
        assert!(is_availability_error(&ChatError::Http { api, status: 429 }));
        assert!(!is_availability_error(&ChatError::Http {
            api,
            status: 404
        }));
        assert!(is_availability_error(&ChatError::Timeout {
            api,
            timeout_ms: 1
        }));
        assert!(is_availability_error(&vendor(70500)));
        assert!(is_availability_error(&vendor(60007)));
        assert!(!is_availability_error(&vendor(12345)), "unknown code");
        assert!(!is_availability_error(&vendor(40601)));
        assert!(is_availability_error(&ChatError::Exhausted {
            attempts: 3,
            last: Box::new(vendor(70169)),
        }));
    }

    #[test]
    fn rule_validation_names_the_setting() {
        let zero = OutageRule {
            after: Duration::ZERO,
            ..OutageRule::default()
        };
        assert!(zero.validate().unwrap_err().contains("--outage-after"));
        let none = OutageRule {
            min_failed_calls: 0,
            ..OutageRule::default()
        };
        assert!(none
            .validate()
            .unwrap_err()
            .contains("--outage-min-failed-calls"));
    }
}
