//! A member's demand for one API: the calls per second it would make if it could.
//!
//! Two observable parts: what it used recently (tokens taken over the last second) and what is
//! waiting now (calls queued at the limiter, which it would make within the next second were the
//! tokens there). A replica with a backlog therefore asks for more than it has; an idle one asks
//! for what it uses. And a replica that uses (nearly) all it was granted asks for half as much
//! again: at a low rate a second holds few calls, and a busy replica whose calls happened not to
//! be waiting at the sample must not look as if it wanted less than it has — it would lose its
//! share to members that want nothing. Max-min fairness turns these into shares
//! ([`super::split`]).
//!
//! Recent use lags when a backlog runs out: a second of history says the member still wants what
//! it had, and the members with work would wait that second for its share. So a member that has
//! gone quiet — nothing waiting and no token taken for twice its usual gap between calls, at
//! least one sample — keeps only a quarter of its last demand at every sample instead: its share
//! flows to the others within a sample or two, while a member whose next call comes soon keeps
//! some of it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::limiter::Usage;

/// How far back "recent use" looks.
pub const USE_WINDOW: Duration = Duration::from_secs(1);
/// A member using at least this share of its grant counts as busy...
const BUSY_FRACTION: f64 = 0.8;
/// ...and asks for this much of its grant at least.
const BUSY_HEADROOM: f64 = 1.5;

/// What a quiet member keeps of its last demand at each sample: a quarter, so that most of its
/// share moves to the others at the first sample, and a call that comes soon after still finds
/// some of it.
const QUIET_DECAY: f64 = 0.25;

/// Samples of one limiter's [`Usage`], turned into a demand.
#[derive(Debug, Default)]
pub struct DemandMeter {
    /// (when, tokens taken by then), oldest first, covering [`USE_WINDOW`].
    samples: VecDeque<(Instant, u64)>,
    /// The last sample at which the member had taken more tokens than at the one before.
    last_taken_at: Option<Instant>,
    /// The demand returned last.
    last: f64,
}

impl DemandMeter {
    /// Records `usage` at `now` and returns the demand, calls/s, of a member granted `granted`
    /// calls/s.
    pub fn sample(&mut self, now: Instant, usage: Usage, granted: f64) -> f64 {
        let previous = self.samples.back().copied();
        if previous.is_some_and(|(_, taken)| usage.taken > taken) {
            self.last_taken_at = Some(now);
        }
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
        let quiet_for = self
            .last_taken_at
            .map(|t| now.duration_since(t).as_secs_f64());
        let since_previous = previous.map_or(0.0, |(t, _)| now.duration_since(t).as_secs_f64());
        let usual_gap = if used > 0.0 { 1.0 / used } else { 0.0 };
        let quiet = usage.waiting == 0
            && quiet_for.is_some_and(|q| q > 0.0 && q >= since_previous.max(2.0 * usual_gap));
        let wanted = if quiet {
            (self.last * QUIET_DECAY).min(used)
        } else {
            let wanted = used + usage.waiting as f64 / USE_WINDOW.as_secs_f64();
            if granted > 0.0 && used >= BUSY_FRACTION * granted {
                wanted.max(BUSY_HEADROOM * granted)
            } else {
                wanted
            }
        };
        self.last = wanted;
        wanted
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
            last = m.sample(Instant::now(), Usage { taken, waiting: 0 }, 100.0);
            tokio::time::advance(step).await;
            taken += 10; // 40 calls/s
        }
        assert!((last - 40.0).abs() < 1e-9, "{last}");
        let backlog = m.sample(
            Instant::now(),
            Usage {
                taken,
                waiting: 120,
            },
            100.0,
        );
        assert!((backlog - 160.0).abs() < 1e-9, "{backlog}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_that_uses_its_grant_asks_for_more() {
        let mut m = DemandMeter::default();
        let mut taken = 0;
        let mut last = 0.0;
        for i in 0..8 {
            // 3.2 calls/s of a 3.33 grant, nothing waiting at the samples.
            last = m.sample(Instant::now(), Usage { taken, waiting: 0 }, 10.0 / 3.0);
            tokio::time::advance(Duration::from_millis(250)).await;
            taken += if i % 5 == 4 { 0 } else { 1 };
        }
        assert!((last - 5.0).abs() < 1e-9, "{last}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_member_wants_nothing() {
        let mut m = DemandMeter::default();
        for _ in 0..6 {
            assert_eq!(
                m.sample(
                    Instant::now(),
                    Usage {
                        taken: 7,
                        waiting: 0
                    },
                    50.0
                ),
                0.0
            );
            tokio::time::advance(Duration::from_millis(250)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_whose_backlog_ran_out_gives_its_share_up_within_samples() {
        let mut m = DemandMeter::default();
        let step = Duration::from_millis(250);
        let mut taken = 0;
        for _ in 0..8 {
            // Busy at its whole grant of 13.3 calls/s, with a backlog.
            m.sample(Instant::now(), Usage { taken, waiting: 30 }, 13.3);
            tokio::time::advance(step).await;
            taken += 3;
        }
        // The backlog is gone: the last calls went out, then nothing.
        let draining = m.sample(Instant::now(), Usage { taken, waiting: 0 }, 13.3);
        assert!(draining >= 13.3, "still busy at this sample: {draining}");
        let mut after = Vec::new();
        for _ in 0..3 {
            tokio::time::advance(step).await;
            after.push(m.sample(Instant::now(), Usage { taken, waiting: 0 }, 13.3));
        }
        // Recent use alone would still say 9-10 calls/s a quarter second on; a quiet member
        // keeps a quarter of its last demand at each sample.
        assert!(after[0] <= draining / 4.0 + 1e-9, "{after:?}");
        assert!(
            after[1] <= after[0] / 4.0 + 1e-9 && after[2] <= after[1] / 4.0 + 1e-9,
            "{after:?}"
        );
        // A call waits again: its demand is back at once.
        let back = m.sample(Instant::now(), Usage { taken, waiting: 5 }, 13.3);
        assert!(back >= 5.0, "{back}");
    }
}
