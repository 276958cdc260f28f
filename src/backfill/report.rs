//! What a backfill tells its user on stderr: a start line, the progress (a bar on a terminal, a
//! line every 5 s otherwise) with lines done / total, users/s, the ETA and how much of each API's
//! ceiling the calls use, and the summary. Nothing here prints a setting that could hold a
//! secret.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Stop, Summary};
use crate::chat::client::{ApiLimiters, CallObserver};
use crate::chat::{Api, ChatError, FailureClass};
use crate::progress::{bar, ProgressLine};

/// Counts the client's attempts per API (retries and probes included) and its frequency-limit
/// answers.
#[derive(Debug, Default)]
pub struct CallCounter {
    calls: [AtomicU64; 4],
    frequency_limited: [AtomicU64; 4],
}

fn slot(api: Api) -> usize {
    Api::ALL
        .iter()
        .position(|&a| a == api)
        .expect("every API is in Api::ALL")
}

impl CallCounter {
    /// Attempts of `api` so far.
    pub fn calls(&self, api: Api) -> u64 {
        self.calls[slot(api)].load(Ordering::Relaxed)
    }

    /// Frequency-limit answers of every API so far.
    pub fn frequency_limited(&self) -> u64 {
        self.frequency_limited
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl CallObserver for CallCounter {
    fn attempt(&self, api: Api, result: Result<(), &ChatError>, _latency: Duration) {
        self.calls[slot(api)].fetch_add(1, Ordering::Relaxed);
        if matches!(result, Err(e) if e.class() == FailureClass::FrequencyLimited) {
            self.frequency_limited[slot(api)].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How far the run is, as the progress line shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Lines done (by this run, plus those an earlier run did).
    pub lines_done: u64,
    /// Users resolved by this run.
    pub users: u64,
    /// The API is unavailable or a systemic fault is in force: nothing moves.
    pub paused: bool,
}

/// The rates are measured over this much recent time.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The backfill's output on stderr.
pub struct Report {
    line: ProgressLine,
    started: Instant,
    /// Lines in the file (`None` for standard input).
    total: Option<u64>,
    /// Lines an earlier run did.
    resumed: u64,
    /// Recent samples: when, users resolved, calls per API.
    samples: VecDeque<(Instant, u64, [u64; 4])>,
    /// The ceilings of the rate-limited APIs, calls/s.
    ceilings: Vec<(Api, f64)>,
}

impl Report {
    /// Prints the start line.
    pub fn start(what: &str, total: Option<u64>, resumed: u64, limiters: &ApiLimiters) -> Report {
        let total_text = total.map_or("lines not counted (standard input)".to_owned(), |t| {
            format!("{t} lines")
        });
        let resume = match total {
            Some(t) if resumed >= t && t > 0 => {
                format!("; the checkpoint says all {resumed} lines are done already")
            }
            _ if resumed > 0 => format!("; resuming after line {resumed} (the checkpoint)"),
            _ => String::new(),
        };
        let ceilings: Vec<(Api, f64)> = Api::ALL
            .into_iter()
            .filter_map(|api| Some((api, limiters.for_api(api)?.ceiling()?)))
            .collect();
        let rates: Vec<String> = ceilings
            .iter()
            .map(|(api, c)| format!("{} {c}/s", api.name()))
            .collect();
        let rates = if rates.is_empty() {
            "no rate limits".to_owned()
        } else {
            format!("rates {}", rates.join(", "))
        };
        eprintln!("backfill: {what}: {total_text}{resume}; {rates}");
        Report {
            line: ProgressLine::new(),
            started: Instant::now(),
            total,
            resumed,
            samples: VecDeque::new(),
            ceilings,
        }
    }

    /// Takes a sample and redraws the progress line when it is due.
    pub fn progress(&mut self, s: Snapshot, calls: &CallCounter) {
        let now = Instant::now();
        self.samples
            .push_back((now, s.users, Api::ALL.map(|a| calls.calls(a))));
        while self
            .samples
            .front()
            .is_some_and(|(t, ..)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let text = self.text(s);
        self.line.update(text);
    }

    /// Clears the progress line before other output (a reject or a failure on stderr).
    pub fn clear(&mut self) {
        self.line.clear();
    }

    /// Users/s and calls/s per API over the recent samples.
    fn rates(&self) -> (f64, [f64; 4]) {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = b.0.duration_since(a.0).as_secs_f64();
                let calls = std::array::from_fn(|i| (b.2[i] - a.2[i]) as f64 / dt);
                ((b.1 - a.1) as f64 / dt, calls)
            }
            _ => (0.0, [0.0; 4]),
        }
    }

    fn text(&self, s: Snapshot) -> impl FnOnce() -> String {
        let terminal = self.line.is_terminal();
        let (users_per_s, calls_per_s) = self.rates();
        let done = s.lines_done;
        let count = match self.total {
            Some(t) => format!("{done}/{t} lines"),
            None => format!("{done} lines"),
        };
        let eta = match self.total {
            _ if s.paused => {
                "paused: the Chat API is unavailable or refuses the app (see the log)".to_owned()
            }
            Some(t) if users_per_s > 0.0 => {
                let secs = (t.saturating_sub(done)) as f64 / users_per_s;
                format!(
                    "ETA {}",
                    humantime::format_duration(Duration::from_secs(secs.ceil() as u64))
                )
            }
            Some(_) => "ETA -".to_owned(),
            None => String::new(),
        };
        let used = |api: Api| self.samples.back().is_some_and(|b| b.2[slot(api)] > 0);
        let shares: Vec<String> = self
            .ceilings
            .iter()
            .filter(|(api, _)| used(*api))
            .map(|(api, c)| {
                let share = calls_per_s[slot(*api)] / c * 100.0;
                format!("{} {share:.0} %", api.name())
            })
            .collect();
        let shares = if shares.is_empty() {
            String::new()
        } else {
            format!("; of the ceilings: {}", shares.join(", "))
        };
        let total = self.total;
        move || {
            let bar = match total {
                Some(t) if terminal => format!("{} ", bar(done, t)),
                _ => String::new(),
            };
            let prefix = if terminal { "  " } else { "backfill: " };
            format!("{prefix}{bar}{count}, {users_per_s:.0} users/s, {eta}{shares}")
        }
    }

    /// Ends the progress line and prints the summary.
    pub fn finish(&mut self, s: &Summary, done: Snapshot, rejects: &str) {
        let text = self.text(done);
        self.line.finish(text);
        let elapsed = self.started.elapsed().as_secs_f64();
        let skipped = if self.resumed > 0 {
            format!(" (and {} done by an earlier run)", self.resumed)
        } else {
            String::new()
        };
        let calls: Vec<String> = s
            .calls
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(api, n)| format!("\n  {:<24} {n}", format!("{api} calls")))
            .collect();
        let stop = match s.stop {
            Stop::Complete => "at the end of the file".to_owned(),
            Stop::Interrupted => format!(
                "by a signal after line {}: run the same command again to continue",
                s.done_through_line
            ),
        };
        let lifecycle: String = [
            ("updated", s.updated),
            ("deleted", s.deleted),
            ("already absent", s.already_absent),
            ("would be done (dry run)", s.would),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("\n    {what:<23}{n}"))
        .collect();
        eprintln!(
            "backfill summary:\n  lines read               {}{skipped}\n  users                    {}\n    imported               {}\n    already imported       {}{lifecycle}\n    failed                 {}\n  rejected lines           {}{}{}\n  frequency-limit answers  {}\n  elapsed                  {elapsed:.1} s ({:.0} users/s)\n  stopped                  {stop}",
            s.lines_read,
            s.users,
            s.imported,
            s.already_imported,
            s.failed,
            s.rejected,
            if s.rejected > 0 { format!(" ({rejects})") } else { String::new() },
            calls.concat(),
            s.frequency_limited,
            s.users as f64 / elapsed.max(1e-3),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_frequency_limits_are_counted_per_api() {
        let c = CallCounter::default();
        let limited = ChatError::Vendor {
            api: Api::AccountImport,
            code: 60007,
            info: "slow down".into(),
        };
        c.attempt(Api::AccountCheck, Ok(()), Duration::ZERO);
        c.attempt(Api::AccountImport, Err(&limited), Duration::ZERO);
        c.attempt(Api::AccountImport, Ok(()), Duration::ZERO);
        assert_eq!(c.calls(Api::AccountCheck), 1);
        assert_eq!(c.calls(Api::AccountImport), 2);
        assert_eq!(c.calls(Api::MultiaccountImport), 0);
        assert_eq!(c.frequency_limited(), 1);
    }
}
