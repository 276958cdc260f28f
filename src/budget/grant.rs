//! From the share a member computed to the rate it may use: decreases at once, increases only once
//! the others have had time to make room.
//!
//! Members switch from one split to the next at slightly different moments (each reads the topic
//! on its own), and from the demand split to the partition share (or back) one after the other.
//! If a member took a larger share the moment it computed it, it could be using its new share
//! while another still used its old one: together over the budget. So the grant is the *smallest*
//! target of the last `settle` period: a decrease applies at once, an increase only after it has
//! been the target for `settle`, by which time every member has moved to the same split (or the
//! same fallback) and shrunk its own share. Any two members' grants then add up to at most one
//! split's shares.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The smallest target over the last `settle`.
#[derive(Debug)]
pub struct Grant {
    settle: Duration,
    /// Targets set within the last `settle` (and the newest before it), oldest first.
    targets: VecDeque<(Instant, f64)>,
}

impl Grant {
    /// A grant that lets increases through after `settle`.
    pub fn new(settle: Duration) -> Self {
        Grant {
            settle,
            targets: VecDeque::new(),
        }
    }

    /// A new target (calls/s) at `now`; returns the rate that may be used from now on.
    pub fn update(&mut self, now: Instant, target: f64) -> f64 {
        self.targets.push_back((now, target));
        // Keep the targets of the last `settle`, plus the one that was in force at its start.
        while self.targets.len() > 1 && now.duration_since(self.targets[1].0) >= self.settle {
            self.targets.pop_front();
        }
        self.current()
    }

    /// The rate that may be used now (0 before the first target).
    pub fn current(&self) -> f64 {
        self.targets
            .iter()
            .map(|&(_, t)| t)
            .reduce(f64::min)
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_decrease_applies_at_once_an_increase_after_settling() {
        let mut g = Grant::new(Duration::from_millis(1_000));
        assert_eq!(g.update(Instant::now(), 100.0), 100.0);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(g.update(Instant::now(), 40.0), 40.0, "down at once");
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(g.update(Instant::now(), 150.0), 40.0, "up: not yet");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(g.update(Instant::now(), 150.0), 40.0);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(
            g.update(Instant::now(), 150.0),
            40.0,
            "40 was in force 1 s ago"
        );
        // 40 stopped being the target 1 s ago: it has settled out.
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(g.update(Instant::now(), 150.0), 150.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_that_keeps_moving_is_held_at_its_recent_low() {
        let mut g = Grant::new(Duration::from_millis(600));
        let mut seen = Vec::new();
        for t in [50.0, 60.0, 55.0, 70.0, 65.0, 80.0] {
            seen.push(g.update(Instant::now(), t));
            tokio::time::advance(Duration::from_millis(250)).await;
        }
        assert_eq!(seen, vec![50.0, 50.0, 50.0, 50.0, 55.0, 55.0]);
    }

    #[test]
    fn nothing_before_the_first_target() {
        assert_eq!(Grant::new(Duration::from_secs(1)).current(), 0.0);
    }
}
