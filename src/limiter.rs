//! Token buckets: the worker's guard against the vendor's per-app call limits, and the emulator's
//! enforcement of them.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per second. [`Limiter::acquire`]
//! waits for a token; waiters are served strictly in arrival order (they queue on a FIFO
//! `tokio::sync::Mutex`, and only the head of the queue sleeps on the clock), so a burst of imports
//! cannot starve a window's check call.
//!
//! The rate can change at run time, for two reasons:
//! - [`Limiter::set_ceiling`]: the replica's share of the app budget changed on a rebalance (the
//!   burst is shared in the same proportion: N replicas each holding the app's whole burst could
//!   together send N bursts at once);
//! - [`Limiter::on_frequency_limited`]: the vendor answered "too frequent", so the rate drops
//!   multiplicatively and then recovers additively (AIMD) back up to the ceiling.
//!
//! Time is `tokio::time::Instant`, so tests drive it with `tokio::time::pause()`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex as SyncMutex;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// Lowest rate AIMD may fall to, as a fraction of the ceiling: never stall completely.
const MIN_RATE_FRACTION: f64 = 0.05;
/// Multiplicative decrease on a frequency-limit answer.
const DECREASE_FACTOR: f64 = 0.5;
/// Additive increase per second without frequency-limit answers, as a fraction of the ceiling.
const RECOVERY_PER_SECOND: f64 = 0.05;
/// Answers that arrive within this time of a decrease belong to the same overload episode (many
/// requests were in flight together) and do not decrease the rate again.
const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);

/// A token bucket with an async, fair `acquire`. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Limiter {
    /// Queue of waiters: whoever holds it is the next to get a token.
    queue: Mutex<()>,
    /// Bucket state; a plain mutex, held only for arithmetic, never across an await.
    state: SyncMutex<Bucket>,
    /// Wakes the head waiter when the rate changes, so it recomputes its wait.
    rate_changed: Notify,
    /// Calls inside [`Limiter::acquire`]: they get the next tokens before a new caller.
    waiting: AtomicUsize,
    /// Tokens handed out so far (by `acquire` and `try_acquire`): what the replica used, for its
    /// demand ([`Limiter::usage`]).
    taken: AtomicU64,
}

/// What a limiter's callers have asked of it: the input of a replica's demand for the app
/// budget (see [`crate::budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Tokens handed out since the limiter was made.
    pub taken: u64,
    /// Calls waiting for a token now.
    pub waiting: usize,
}

#[derive(Debug)]
struct Bucket {
    /// None = unlimited: acquire never waits.
    ceiling: Option<f64>,
    /// Current refill rate (≤ ceiling), tokens per second.
    rate: f64,
    /// Capacity.
    burst: f64,
    /// Capacity per call/s of ceiling: `burst / rate` as configured, so that a share of the
    /// rate ([`Limiter::set_ceiling`]) is also a share of the burst.
    burst_per_rate: f64,
    /// Tokens available at `updated`.
    tokens: f64,
    /// Last time `tokens` and `rate` were brought up to date.
    updated: Instant,
    /// When the rate was last decreased (for the cooldown).
    last_decrease: Option<Instant>,
}

impl Bucket {
    /// Brings tokens and rate up to `now`: refill, and AIMD recovery.
    fn advance(&mut self, now: Instant) {
        let Some(ceiling) = self.ceiling else { return };
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        // Refill at the rate in force over the interval (recovery is applied after, a negligible
        // under-estimate that errs on the safe side).
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.rate < ceiling {
            self.rate = (self.rate + dt * RECOVERY_PER_SECOND * ceiling).min(ceiling);
        }
        self.updated = now;
    }

    /// Time until one token is available, after `advance(now)`.
    fn wait_for_token(&self) -> Duration {
        if self.ceiling.is_none() || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

impl Limiter {
    /// A bucket refilling at `rate` per second, holding at most `burst` tokens (at least 1), full at
    /// the start.
    pub fn new(rate: f64, burst: u32) -> Self {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "limiter rate must be positive, got {rate}"
        );
        let burst = f64::from(burst.max(1));
        Self::with_bucket(Bucket {
            ceiling: Some(rate),
            rate,
            burst,
            burst_per_rate: burst / rate,
            tokens: burst,
            updated: Instant::now(),
            last_decrease: None,
        })
    }

    /// A limiter that never waits (limits switched off).
    pub fn unlimited() -> Self {
        Self::with_bucket(Bucket {
            ceiling: None,
            rate: f64::INFINITY,
            burst: f64::INFINITY,
            burst_per_rate: 1.0,
            tokens: f64::INFINITY,
            updated: Instant::now(),
            last_decrease: None,
        })
    }

    fn with_bucket(bucket: Bucket) -> Self {
        Limiter {
            queue: Mutex::new(()),
            state: SyncMutex::new(bucket),
            rate_changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // Poisoning needs a panic while holding the lock, which only arithmetic does; recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for one token. Waiters are served in the order they called.
    ///
    /// Returns how long the call waited (for the limiter-wait histogram).
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        if self.bucket().ceiling.is_none() {
            return Duration::ZERO;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let _head = self.queue.lock().await;
        loop {
            let wait = {
                let mut b = self.bucket();
                b.advance(Instant::now());
                let wait = b.wait_for_token();
                if wait.is_zero() {
                    b.tokens -= 1.0;
                    self.taken.fetch_add(1, Ordering::Relaxed);
                    return start.elapsed();
                }
                wait
            };
            // Register for rate changes before sleeping so a change between the computation and
            // the sleep is not missed.
            let changed = self.rate_changed.notified();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }

    /// How long a call to [`Limiter::acquire`] made now would wait for its token at the current
    /// rate, taking nothing: zero when a token is available now and nobody is waiting ahead
    /// (always zero when unlimited). The window close rule ([`crate::worker::window::CloseRule`]) asks
    /// this before it closes a window early.
    pub fn time_to_token(&self) -> Duration {
        let ahead = self.waiting.load(Ordering::Relaxed) as f64;
        let mut b = self.bucket();
        if b.ceiling.is_none() {
            return Duration::ZERO;
        }
        b.advance(Instant::now());
        let missing = ahead + 1.0 - b.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / b.rate)
        }
    }

    /// Whether a token is available now for a new caller (nobody waiting ahead); takes nothing.
    pub fn has_token(&self) -> bool {
        self.time_to_token().is_zero()
    }

    /// Takes a token if one is available now, without waiting. The emulator's admission check.
    pub fn try_acquire(&self) -> bool {
        let mut b = self.bucket();
        if b.ceiling.is_none() {
            return true;
        }
        b.advance(Instant::now());
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            self.taken.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The vendor said "too frequent": halve the rate (not below 5 % of the ceiling), at most once
    /// per second. Returns the new rate.
    pub fn on_frequency_limited(&self) -> f64 {
        let mut b = self.bucket();
        let Some(ceiling) = b.ceiling else {
            return f64::INFINITY;
        };
        let now = Instant::now();
        b.advance(now);
        let recent = b
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < DECREASE_COOLDOWN);
        if !recent {
            b.rate = (b.rate * DECREASE_FACTOR).max(ceiling * MIN_RATE_FRACTION);
            b.last_decrease = Some(now);
            // Drop saved-up tokens too: the vendor just told us we are over.
            b.tokens = b.tokens.min(1.0);
        }
        let rate = b.rate;
        drop(b);
        self.rate_changed.notify_waiters();
        rate
    }

    /// Sets the ceiling (the configured rate, or this replica's share of it). The current rate
    /// follows it down at once, and recovers towards it if it went up. The burst takes the same
    /// share of the configured burst (at least 1 token); saved-up tokens above it are dropped.
    pub fn set_ceiling(&self, ceiling: f64) {
        assert!(
            ceiling > 0.0 && ceiling.is_finite(),
            "limiter rate must be positive"
        );
        let mut b = self.bucket();
        if b.ceiling.is_none() {
            return;
        }
        b.advance(Instant::now());
        let was_at_ceiling = b.ceiling.is_some_and(|c| b.rate >= c);
        b.ceiling = Some(ceiling);
        if was_at_ceiling || b.rate > ceiling {
            b.rate = ceiling;
        }
        b.burst = (ceiling * b.burst_per_rate).max(1.0);
        // Once it has made calls, stored tokens follow the new ceiling without the one-token
        // floor of the capacity: a replica whose share of the app's budget fell to almost
        // nothing must not keep a whole token to spend while the others use the rest of the
        // budget. Before its first call it keeps its first token, as it did (a new replica's
        // first call goes at once; the others' shares already left room for it joining).
        let kept = if self.taken.load(Ordering::Relaxed) > 0 {
            ceiling * b.burst_per_rate
        } else {
            b.burst
        };
        b.tokens = b.tokens.min(kept);
        drop(b);
        self.rate_changed.notify_waiters();
    }

    /// The current rate in calls per second (infinite when unlimited).
    pub fn rate(&self) -> f64 {
        let mut b = self.bucket();
        b.advance(Instant::now());
        b.rate
    }

    /// Tokens handed out so far and calls waiting now.
    pub fn usage(&self) -> Usage {
        Usage {
            taken: self.taken.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// The ceiling in calls per second; `None` when unlimited.
    pub fn ceiling(&self) -> Option<f64> {
        self.bucket().ceiling
    }
}

/// Counts a caller of [`Limiter::acquire`] until it returns or is cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
