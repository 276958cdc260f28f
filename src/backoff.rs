//! One backoff policy for every loop that waits before trying again: the Chat API call retries
//! ([`crate::chat::retry`]), the systemic prober ([`crate::systemic`]) and the transaction calls
//! ([`crate::delivery::transaction`]). Each keeps its own numbers; [`Backoff`] says how numbers become
//! delays, so the three cannot drift apart in how they grow, cap or jitter.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays that start at `initial` and grow by `factor` each time, never above `max` (before
/// jitter); with jitter, each delay gets a random extra of up to itself (backon's jitter: a delay
/// `d` becomes `d..2d`), so retries of many calls that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// No delay exceeds this (before jitter).
    pub max: Duration,
    /// Each delay is the previous one times this.
    pub factor: u32,
    /// Whether delays are jittered.
    pub jitter: bool,
    /// How many delays there are; `None` for no end.
    pub max_times: Option<usize>,
}

impl Backoff {
    /// Delays from `initial`, doubling up to `max`, without jitter and without end.
    pub const fn doubling(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            factor: 2,
            jitter: false,
            max_times: None,
        }
    }

    /// The same delays, jittered.
    pub const fn with_jitter(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// The same delays, but only the first `n` of them.
    pub const fn with_max_times(self, n: usize) -> Backoff {
        Backoff {
            max_times: Some(n),
            ..self
        }
    }

    /// The same growth with another cap.
    pub const fn with_max(self, max: Duration) -> Backoff {
        Backoff { max, ..self }
    }

    /// The delays, in order, for one series of attempts. Built per series; cheap.
    pub fn delays(&self) -> Delays {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.factor as f32);
        let builder = if self.jitter {
            builder.with_jitter()
        } else {
            builder
        };
        let builder = match self.max_times {
            Some(n) => builder.with_max_times(n),
            None => builder.without_max_times(),
        };
        Delays(builder.build())
    }

    /// The delay after `delay`, without jitter: `delay` times the factor, at most `max`. For a
    /// loop that keeps its delay itself because its cap depends on what happened (the prober
    /// backs off less during an outage than during a systemic fault).
    pub fn after(&self, delay: Duration) -> Duration {
        delay.saturating_mul(self.factor).min(self.max)
    }
}

/// The delays of one [`Backoff`], in order.
#[derive(Debug)]
pub struct Delays(ExponentialBackoff);

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// backon multiplies in `f32`: a grown delay can be off by a few nanoseconds.
    fn about(got: Duration, want: Duration) -> bool {
        got.abs_diff(want) < Duration::from_micros(1)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::doubling(100 * MS, 500 * MS).with_max_times(5);
        let got: Vec<Duration> = b.delays().collect();
        let want = [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS];
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert!(got.iter().zip(want).all(|(&g, w)| about(g, w)), "{got:?}");
    }

    #[test]
    fn without_max_times_the_delays_do_not_end() {
        let b = Backoff::doubling(MS, 2 * MS);
        assert_eq!(b.delays().take(1000).count(), 1000);
        assert_eq!(b.delays().nth(999), Some(2 * MS));
    }

    #[test]
    fn jitter_adds_up_to_one_delay_more() {
        let b = Backoff::doubling(100 * MS, 400 * MS)
            .with_jitter()
            .with_max_times(4);
        for _ in 0..100 {
            let got: Vec<Duration> = b.delays().collect();
            assert_eq!(got.len(), 4);
            for (&d, base) in got.iter().zip([100, 200, 400, 400]) {
                let (low, high) = (base * MS, 2 * base * MS);
                assert!(
                    (d >= low || about(d, low)) && (d <= high || about(d, high)),
                    "{d:?} for {base} ms"
                );
            }
        }
    }

    #[test]
    fn after_multiplies_and_caps() {
        let b = Backoff::doubling(5 * MS, 300 * MS);
        assert_eq!(b.after(5 * MS), 10 * MS);
        assert_eq!(b.after(200 * MS), 300 * MS);
        assert_eq!(b.with_max(30 * MS).after(200 * MS), 30 * MS);
        assert_eq!(b.after(Duration::MAX), 300 * MS);
    }

    /// On paused time, sleeping a series' delays takes their sum: what a caller that sleeps them
    /// waits (tokio's timer rounds each sleep up to the next millisecond).
    #[tokio::test(start_paused = true)]
    async fn sleeping_the_delays_takes_their_sum() {
        let b = Backoff::doubling(100 * MS, 2000 * MS).with_max_times(6);
        let start = tokio::time::Instant::now();
        for d in b.delays() {
            tokio::time::sleep(d).await;
        }
        let want = (100 + 200 + 400 + 800 + 1600 + 2000) * MS;
        let waited = start.elapsed();
        assert!(waited >= want && waited <= want + 6 * MS, "{waited:?}");
    }
}
