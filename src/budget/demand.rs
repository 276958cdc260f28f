//! A member's demand for one API: the calls per second it would make if it could.
//!
//! Two observable parts: what it used recently (tokens taken over the last second) and what is
//! waiting now (calls queued at the limiter, which it would make within the next second were the
//! tokens there). A replica with a backlog therefore asks for more than it has; an idle one asks
//! for what it uses. Max-min fairness turns these into shares ([`super::split`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::limiter::Usage;

/// How far back "recent use" looks.
pub const USE_WINDOW: Duration = Duration::from_secs(1);

/// Samples of one limiter's [`Usage`], turned into a demand.
#[derive(Debug, Default)]
pub struct DemandMeter {
    /// (when, tokens taken by then), oldest first, covering [`USE_WINDOW`].
    samples: VecDeque<(Instant, u64)>,
}

impl DemandMeter {
    /// Records `usage` at `now` and returns the demand, calls/s.
    pub fn sample(&mut self, now: Instant, usage: Usage) -> f64 {
        self.samples.push_back((now, usage.taken));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= USE_WINDOW {
            self.samples.pop_front();
        }
        let (t0, taken0) = self.samples[0];
        let span = now.duration_since(t0).as_secs_f64();
        let used = if span > 0.0 {
            usage.taken.saturating_sub(taken0) as f64 / span
        } else {
            0.0
        };
        used + usage.waiting as f64 / USE_WINDOW.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn demand_is_recent_use_plus_what_waits() {
        let mut m = DemandMeter::default();
        let step = Duration::from_millis(250);
        let mut taken = 0;
        let mut last = 0.0;
        for _ in 0..8 {
            last = m.sample(Instant::now(), Usage { taken, waiting: 0 });
            tokio::time::advance(step).await;
            taken += 10; // 40 calls/s
        }
        assert!((last - 40.0).abs() < 1e-9, "{last}");
        let backlog = m.sample(Instant::now(), Usage { taken, waiting: 120 });
        assert!((backlog - 160.0).abs() < 1e-9, "{backlog}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_member_wants_nothing() {
        let mut m = DemandMeter::default();
        for _ in 0..6 {
            assert_eq!(m.sample(Instant::now(), Usage { taken: 7, waiting: 0 }), 0.0);
            tokio::time::advance(Duration::from_millis(250)).await;
        }
    }
}
