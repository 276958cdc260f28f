//! What a replay tells its user: a start line, the progress line and the summary on stderr, and in
//! a dry run one line per matching dead letter on stdout (data, for `| wc -l` or `| grep`).
//! Kafka properties are never printed: they may hold SASL passwords.

use std::io::Write;
use std::time::Instant;

use super::args::Plan;
use super::filter::DeadLetterInfo;
use super::{Stop, Summary};
use crate::progress::{bar, ProgressLine};

/// The replay's output.
pub(crate) struct Report {
    line: ProgressLine,
    started: Instant,
    /// Dead letters between the start positions and the end watermarks.
    total: u64,
}

impl Report {
    /// Prints the start line.
    pub(crate) fn start(plan: &Plan, total: u64, partitions: usize) -> Report {
        let mode = if plan.dry_run {
            " (dry run: nothing is written or committed)"
        } else {
            ""
        };
        eprintln!(
            "dlq replay: {} → {} as group {}{mode}: {total} dead letters to read in {partitions} partitions, up to the end as of now",
            plan.dlq_topic, plan.target_topic, plan.group
        );
        if !plan.filter.is_everything() && !plan.dry_run {
            eprintln!(
                "  note: what the filters skip is passed over for group {} too; replay another subset with another --group",
                plan.group
            );
        }
        Report {
            line: ProgressLine::new(),
            started: Instant::now(),
            total,
        }
    }

    /// Redraws the progress line when it is due.
    pub(crate) fn progress(&mut self, s: &Summary) {
        let text = self.text(s);
        self.line.update(text);
    }

    /// The progress text: a bar on a terminal, a sentence in a log.
    fn text<'a>(&self, s: &'a Summary) -> impl FnOnce() -> String + 'a {
        let (total, elapsed) = (self.total, self.started.elapsed().as_secs_f64());
        let terminal = self.line.is_terminal();
        move || {
            if terminal {
                format!(
                    "  {} {}/{total} read  {} matched  {} replayed  {elapsed:.1}s",
                    bar(s.read, total),
                    s.read,
                    s.matched,
                    s.replayed
                )
            } else {
                format!(
                    "dlq replay: {}/{total} read, {} matched, {} replayed, {} skipped by filter ({elapsed:.0}s)",
                    s.read, s.matched, s.replayed, s.skipped
                )
            }
        }
    }

    /// Lists one dead letter of a dry run.
    pub(crate) fn listed(
        &mut self,
        position: &str,
        key: Option<&[u8]>,
        payload_len: usize,
        d: &DeadLetterInfo,
    ) {
        self.line.clear();
        let text = |v: &Option<String>| v.as_deref().unwrap_or("-").to_owned();
        let failed_at = d
            .failed_at
            .map_or("-".to_owned(), crate::delivery::sink::rfc3339_millis);
        let key = key.map_or("-".to_owned(), |k| {
            format!("{:?}", String::from_utf8_lossy(k))
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{position} stage={} class={} code={} failed-at={failed_at} key={key} payload={payload_len}B reason={:?}",
            text(&d.stage),
            text(&d.class),
            d.code.map_or("-".to_owned(), |c| c.to_string()),
            text(&d.reason)
        );
    }

    /// Ends the progress line and prints the summary.
    pub(crate) fn finish(&mut self, s: &Summary, dry_run: bool) {
        let text = self.text(s);
        self.line.finish(text);
        let elapsed = self.started.elapsed().as_secs_f64();
        let stop = match s.stop {
            Stop::EndOfTopic => "at the end of the topic as of the start",
            Stop::Limit => "at --limit (the next run continues after it)",
            Stop::Interrupted => "by a signal (the next run continues where this one stopped)",
            Stop::Failed => "by a failure (nothing after it is committed)",
        };
        let (replayed, count) = if dry_run {
            ("would replay", s.matched)
        } else {
            ("replayed", s.replayed)
        };
        let committed = if dry_run {
            "nothing (dry run)".to_owned()
        } else if s.committed.is_empty() {
            "nothing new".to_owned()
        } else {
            let parts: Vec<String> = s
                .committed
                .iter()
                .map(|(p, o)| format!("{p}@{o}"))
                .collect();
            format!("partition@offset {}", parts.join(" "))
        };
        eprintln!(
            "dlq replay summary:\n  read               {}\n  matched            {}\n  {replayed:<18} {}\n  skipped by filter  {}\n  committed          {committed}\n  stopped            {stop} after {elapsed:.1}s",
            s.read, s.matched, count, s.skipped
        );
    }
}
