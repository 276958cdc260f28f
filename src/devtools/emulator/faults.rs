//! Fault injection: the ways the real service misbehaves that the worker must survive.
//!
//! Every decision draws from one seeded [`fastrand::Rng`], so a single-threaded sequence of requests
//! sees the same faults on every run with the same `--seed`. A rate is only drawn for when it is
//! non-zero, so switching one fault on does not reshuffle the others' decisions.
//!
//! [`Hold`] is the one knob that is not a fault of the vendor's: it stops the API's progress
//! where a test says, so that "the worker still has work in flight when X happens" holds by
//! construction instead of by a race against the machine's speed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::broken::BrokenAnswer;
use crate::chat::api::Api;

/// The fault knobs that can change while the emulator runs (see
/// [`super::EmulatorHandle::set_faults`]), so a test can script "outage, then recovery".
///
/// Rates are probabilities per request; values at or above 1 always fire, values at or below 0
/// (and NaN) never do, so no value can make the emulator panic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Base delay of every API request, to model the network and the vendor's processing time.
    pub latency_ms: u64,
    /// Uniform ± spread around `latency_ms` (the result is never negative), so concurrent
    /// requests finish out of order as they do against the real service.
    pub latency_jitter_ms: u64,
    /// Share of requests answered 70169 or 70500 (HTTP 200): the vendor's "retry later" errors.
    pub transient_error_rate: f64,
    /// Share of requests answered HTTP 502 before any checking, like a gateway in front of the
    /// service: exercises the worker's handling of non-JSON, non-200 answers.
    pub http_502_rate: f64,
    /// Share of requests held for `hang_ms` before being processed: exercises client timeouts,
    /// including "the import happened although the client gave up".
    pub hang_rate: f64,
    /// How long a hung request is held.
    pub hang_ms: u64,
    /// UserIDs whose import always fails with the transient code 70500 while everything else
    /// works: a poison record, the one case where retries running out is the record's fault.
    pub poison_user_ids: Vec<String>,
    /// Every request answered HTTP 200 with something that is not an answer to it (see
    /// [`BrokenAnswer`]): a broken API or a proxy in the way.
    pub broken_answer: Option<BrokenAnswer>,
}

/// Holding API requests ([`super::EmulatorHandle::hold`]): while it is on, every API request that
/// arrives waits — it is held, not failed — until [`super::EmulatorHandle::release`], then goes
/// on as usual (latency, faults, checks). A request already past this point when the hold starts
/// is not stopped. A held request waits in a task of its own, like a hung one, so a client that
/// gives up meanwhile does not cancel it: the vendor would still carry it out.
#[derive(Debug)]
pub(crate) struct Hold {
    on: watch::Sender<bool>,
    /// The APIs held while it is on; `None`: all of them.
    only: Mutex<Option<Vec<Api>>>,
    /// Requests waiting for the release now.
    held: AtomicU64,
}

impl Hold {
    pub(crate) fn new() -> Self {
        Hold {
            on: watch::Sender::new(false),
            only: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// Starts (`true`) or ends (`false`) holding; while on, only requests to `only` (every API
    /// with `None`).
    pub(crate) fn set(&self, on: bool, only: Option<Vec<Api>>) {
        *self.only.lock().unwrap_or_else(|e| e.into_inner()) = only;
        self.on.send_replace(on);
    }

    /// Whether requests to `api` are held now.
    pub(crate) fn holds(&self, api: Api) -> bool {
        *self.on.borrow()
            && self
                .only
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(|apis| apis.contains(&api))
    }

    /// Requests waiting for the release now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits until the hold is off (at once if it is), counted in [`Self::held`] meanwhile.
    pub(crate) async fn pass(&self) {
        let mut rx = self.on.subscribe();
        if !*rx.borrow_and_update() {
            return;
        }
        /// Uncounts the request however the wait ends (released, or the server shut down).
        struct Counted<'a>(&'a AtomicU64);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.held);
        // The sender lives as long as `self`: an error cannot happen while we borrow it.
        let _ = rx.wait_for(|on| !*on).await;
    }
}

/// The seeded random source behind every fault decision.
#[derive(Debug)]
pub(crate) struct Dice {
    rng: Mutex<fastrand::Rng>,
}

impl Dice {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Dice {
            rng: Mutex::new(rng),
        }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, fastrand::Rng> {
        // Poisoning needs a panic inside fastrand; recover rather than take the server down.
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True with probability `rate`; no draw at all for a rate of 0 (or less, or NaN).
    pub(crate) fn roll(&self, rate: f64) -> bool {
        if rate.is_nan() || rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        self.rng().f64() < rate
    }

    /// `latency ± jitter`, clamped at zero.
    pub(crate) fn latency(&self, faults: &Faults) -> Duration {
        let base = i128::from(faults.latency_ms);
        let jitter = i128::from(faults.latency_jitter_ms);
        let ms = if jitter == 0 {
            base
        } else {
            let j = i64::try_from(jitter).unwrap_or(i64::MAX);
            base + i128::from(self.rng().i64(-j..=j))
        };
        Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(u64::MAX))
    }

    /// One of the two transient codes, at random, so the worker sees both.
    pub(crate) fn transient_code(&self) -> i64 {
        if self.rng().bool() {
            70169
        } else {
            70500
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_decisions_repeat() {
        let draw = |seed| {
            let dice = Dice::new(Some(seed));
            (0..64).map(|_| dice.roll(0.3)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|b| **b).count();
        assert!((5..=35).contains(&hits), "{hits} of 64 at 30 %");
    }

    #[test]
    fn extreme_rates_never_draw_wrong() {
        let dice = Dice::new(Some(1));
        assert!((0..100).all(|_| dice.roll(1.0)));
        assert!((0..100).all(|_| !dice.roll(0.0)));
        assert!(!dice.roll(f64::NAN));
        assert!(dice.roll(2.0));
    }

    #[test]
    fn latency_stays_in_range_and_non_negative() {
        let dice = Dice::new(Some(3));
        let f = Faults {
            latency_ms: 10,
            latency_jitter_ms: 30,
            ..Faults::default()
        };
        for _ in 0..200 {
            assert!(dice.latency(&f) <= Duration::from_millis(40));
        }
        assert!(
            (0..200).any(|_| dice.latency(&f).is_zero()),
            "negative draws clamp to zero"
        );
        let fixed = Faults {
            latency_ms: 25,
            ..Faults::default()
        };
        assert_eq!(dice.latency(&fixed), Duration::from_millis(25));
        assert!((0..50).all(|_| [70169, 70500].contains(&dice.transient_code())));
    }
}
