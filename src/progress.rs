//! Progress output on stderr, shared by the demo and `dlq replay`: a bar redrawn in place with `\r`
//! on a terminal, plain lines now and then otherwise (a log file or CI must not fill up with
//! carriage returns).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// `[####....]`, `WIDTH` columns filled in proportion to `done / total`.
pub(crate) fn bar(done: u64, total: u64) -> String {
    const WIDTH: usize = 40;
    let filled = ((done as f64 / total.max(1) as f64) * WIDTH as f64) as usize;
    let filled = filled.min(WIDTH);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

/// One progress line on stderr.
pub(crate) struct ProgressLine {
    /// stderr is a terminal: redraw in place.
    terminal: bool,
    /// When the line was last drawn.
    last: Option<Instant>,
    /// Something is drawn on the current terminal line (to be cleared or ended).
    drawn: bool,
}

impl ProgressLine {
    /// Redraw interval on a terminal.
    const TERMINAL_EVERY: Duration = Duration::from_millis(200);
    /// Interval of the plain lines otherwise.
    const PLAIN_EVERY: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        ProgressLine {
            terminal,
            // A log gets its first line after an interval: a short run needs none.
            last: (!terminal).then(Instant::now),
            drawn: false,
        }
    }

    /// Whether the redraw is in place (`text` gets the bar) or a plain line.
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Draws `text()` if the interval has passed since the last draw.
    pub(crate) fn update(&mut self, text: impl FnOnce() -> String) {
        let every = if self.terminal {
            Self::TERMINAL_EVERY
        } else {
            Self::PLAIN_EVERY
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            // \x1b[K: erase what a longer previous line left behind.
            let _ = write!(err, "\r{}\x1b[K", text());
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{}", text());
        }
        let _ = err.flush();
    }

    /// Clears the in-place line, so that other output starts on a clean line (it is redrawn at
    /// the next update).
    pub(crate) fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
            self.last = None;
        }
    }

    /// Draws `text()` a last time and ends the line.
    pub(crate) fn finish(&mut self, text: impl FnOnce() -> String) {
        if self.terminal {
            eprintln!("\r{}\x1b[K", text());
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, 10), format!("[{}]", ".".repeat(40)));
        assert_eq!(
            bar(5, 10),
            format!("[{}{}]", "#".repeat(20), ".".repeat(20))
        );
        assert_eq!(bar(12, 10), format!("[{}]", "#".repeat(40)), "capped");
        assert_eq!(bar(0, 0), format!("[{}]", ".".repeat(40)), "no total");
    }
}
