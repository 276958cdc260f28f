//! Flow control of the intake loop: reading, held at the in-flight bound, or paused. Decided in
//! one place, [`Flow::next`], after every event the loop reacts to (Vector's Kafka source keeps
//! its consuming → draining → complete the same way: one explicit state, one transition).
//!
//! The worker counts the records read and not yet done. At `--max-events-in-flight` intake stops
//! reading (held): librdkafka keeps its prefetched queue, and reading resumes at once when there
//! is room. Only if that lasts [`PAUSE_AFTER`] are the assigned partitions paused, which keeps
//! the consumer polling (group membership) but drops the prefetched queue and costs up to a
//! second before fetching resumes. A closed systemic gate pauses them at once.

use std::time::Duration;

use tokio::time::Instant;

/// How long intake may be held at the in-flight bound before the partitions are paused.
pub(super) const PAUSE_AFTER: Duration = Duration::from_secs(5);

/// Where intake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Reading records.
    Reading,
    /// At the in-flight bound since `since`: not reading.
    Held {
        /// When the bound was reached.
        since: Instant,
    },
    /// Every assigned partition paused: the gate is closed, or intake was held for
    /// [`PAUSE_AFTER`]. The loop takes what still arrives (the batch the reader holds), so the
    /// reader keeps polling: the consumer serves rebalances and stays in its group.
    Paused {
        /// When the bound was reached, while it still is: a gate that reopens then does not
        /// start the count again.
        held_since: Option<Instant>,
    },
}

/// What the flow depends on, as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Load {
    /// Records read and not yet done.
    pub pending: usize,
    /// `--max-events-in-flight`.
    pub bound: usize,
    /// `--window-size`: held intake resumes once this much room is free.
    pub window_size: usize,
    /// The systemic gate is open.
    pub gate_open: bool,
}

impl Flow {
    /// The flow after an event, with `load` at `now`.
    pub fn next(self, load: &Load, now: Instant) -> Flow {
        let held_since = self.held_after(load, now);
        let held_too_long =
            held_since.is_some_and(|t| now.saturating_duration_since(t) >= PAUSE_AFTER);
        Flow::of(held_since, !load.gate_open || held_too_long)
    }

    /// Since when intake is held at the bound after an event; `None`: it is not.
    fn held_after(self, load: &Load, now: Instant) -> Option<Instant> {
        // Held at the bound, intake resumes once a window's worth of room is free: records
        // complete one user at a time, and reading them back one at a time would fill windows
        // only at the pace of completions (by linger, half full at 200 imports/s).
        let held = match self.held_since() {
            Some(_) => load.pending + load.window_size > load.bound,
            None => load.pending >= load.bound,
        };
        held.then(|| self.held_since().unwrap_or(now))
    }

    /// The flow with the partitions `paused` or not, held since `held_since`.
    pub fn of(held_since: Option<Instant>, paused: bool) -> Flow {
        match (paused, held_since) {
            (true, held_since) => Flow::Paused { held_since },
            (false, Some(since)) => Flow::Held { since },
            (false, None) => Flow::Reading,
        }
    }

    /// Since when intake is held at the bound; `None` while below it.
    pub fn held_since(self) -> Option<Instant> {
        match self {
            Flow::Reading => None,
            Flow::Held { since } => Some(since),
            Flow::Paused { held_since } => held_since,
        }
    }

    /// Whether the partitions are paused.
    pub fn paused(self) -> bool {
        matches!(self, Flow::Paused { .. })
    }

    /// Whether the loop takes records from the reader: not while held (see [`Flow::Paused`]).
    pub fn takes_records(self) -> bool {
        !matches!(self, Flow::Held { .. })
    }

    /// When held intake pauses if it is still held then; `None` unless held.
    pub fn pause_at(self) -> Option<Instant> {
        match self {
            Flow::Held { since } => Some(since + PAUSE_AFTER),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pending: usize, gate_open: bool) -> Load {
        Load {
            pending,
            bound: 1_000,
            window_size: 100,
            gate_open,
        }
    }

    #[test]
    fn held_at_the_bound_until_a_windows_worth_of_room_is_free() {
        let t0 = Instant::now();
        assert_eq!(Flow::Reading.next(&load(999, true), t0), Flow::Reading);
        let held = Flow::Reading.next(&load(1_000, true), t0);
        assert_eq!(held, Flow::Held { since: t0 });
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            held.next(&load(901, true), later),
            held,
            "less than a window free"
        );
        assert_eq!(held.next(&load(900, true), later), Flow::Reading);
    }

    #[test]
    fn held_for_pause_after_pauses_and_a_window_of_room_resumes() {
        let t0 = Instant::now();
        let held = Flow::Held { since: t0 };
        let before = t0 + PAUSE_AFTER - Duration::from_millis(1);
        assert_eq!(held.next(&load(1_000, true), before), held);
        assert_eq!(held.pause_at(), Some(t0 + PAUSE_AFTER));
        let paused = held.next(&load(1_000, true), t0 + PAUSE_AFTER);
        assert_eq!(
            paused,
            Flow::Paused {
                held_since: Some(t0)
            }
        );
        assert!(
            paused.takes_records(),
            "paused, the reader must keep polling"
        );
        assert!(!held.takes_records());
        let resumed = paused.next(&load(900, true), t0 + PAUSE_AFTER * 2);
        assert_eq!(resumed, Flow::Reading);
    }

    #[test]
    fn a_closed_gate_pauses_at_once_and_keeps_the_held_time() {
        let t0 = Instant::now();
        let paused = Flow::Reading.next(&load(0, false), t0);
        assert_eq!(paused, Flow::Paused { held_since: None });
        assert_eq!(paused.next(&load(0, true), t0), Flow::Reading);
        // Held when the gate closed: reopening it 5 s later does not restart the count.
        let held_then_closed = Flow::Held { since: t0 }.next(&load(1_000, false), t0);
        assert_eq!(
            held_then_closed,
            Flow::Paused {
                held_since: Some(t0)
            }
        );
        let reopened = held_then_closed.next(&load(1_000, true), t0 + PAUSE_AFTER);
        assert_eq!(
            reopened,
            Flow::Paused {
                held_since: Some(t0)
            }
        );
    }
}
