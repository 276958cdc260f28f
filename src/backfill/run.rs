//! The backfill loop: lines in from the reader thread, windows out to the stages, outcomes and
//! rejects written, the done watermark moved and checkpointed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args::{Plan, Source};
use super::checkpoint::{Checkpoint, FileId};
use super::input::{self, FileFormat, LineItem, LineParser, OpenInput, Parsed, ReadEnd};
use super::report::{CallCounter, Report, Snapshot};
use super::{BackfillError, Stop, Summary};
use crate::chat::{Api, ChatClient};
use crate::delivery::sink::{encode_outcome_from, rfc3339_millis};
use crate::domain::{InputRecord, Outcome, OutcomeStatus, SourcePos};
use crate::kafka::offsets::OffsetTracker;
use crate::shutdown::Shutdown;
use crate::systemic::{self, SystemicGate};
use crate::worker::event::MAX_PAYLOAD_BYTES;
use crate::worker::live::LiveRecords;
use crate::worker::order::UserOrder;
use crate::worker::pipeline::Stages;
use crate::worker::window::{CloseReason, ClosedWindow, Window};

/// How long an open window waits for the reader's next lines (only a slow standard input ever
/// makes it wait).
const LINGER: Duration = Duration::from_millis(250);
/// Batches of lines the reader may have ready ahead of the loop.
const READ_AHEAD: usize = 4;
/// How often the progress line and the checkpoint clock are looked at.
const TICK: Duration = Duration::from_millis(200);
/// Output buffer of the outcomes and rejects files.
const OUT_BUFFER: usize = 64 * 1024;

/// The check and import stages of the worker, for the backfill's windows. Built here and only
/// here, so that new settings of the stages are one line away.
fn stages(
    plan: &Plan,
    client: &ChatClient,
    gate: &Arc<SystemicGate>,
    shutdown: &Shutdown,
) -> Stages {
    Stages {
        client: client.clone(),
        import: plan.import,
        import_slots: Arc::new(Semaphore::new(plan.max_imports_in_flight)),
        gate: gate.clone(),
        // Windows waiting at a closed gate are abandoned as soon as the stop begins (their lines
        // stay below the checkpoint), as in the worker.
        shutdown: shutdown.clone(),
        dry_run: plan.dry_run,
    }
}

/// An output file (outcomes or rejects).
struct Out {
    what: &'static str,
    path: PathBuf,
    w: BufWriter<File>,
}

impl Out {
    /// Creates (or, when resuming, appends to) the file; a failure is a bad setting. When
    /// resuming, a last line cut short by a kill is removed first: it was written after the last
    /// checkpoint, so its line is done again.
    fn open(what: &'static str, path: &Path, append: bool) -> Result<Out, BackfillError> {
        let bad =
            |e: std::io::Error| BackfillError::Config(format!("{what} {}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(bad)?;
        if append {
            trim_partial_line(path, &file).map_err(bad)?;
        }
        Ok(Out {
            what,
            path: path.to_owned(),
            w: BufWriter::with_capacity(OUT_BUFFER, file),
        })
    }

    fn error(&self, error: std::io::Error) -> BackfillError {
        BackfillError::Io {
            what: self.what,
            path: self.path.display().to_string(),
            error,
        }
    }

    fn line(&mut self, bytes: &[u8]) -> Result<(), BackfillError> {
        self.w
            .write_all(bytes)
            .and_then(|()| self.w.write_all(b"\n"))
            .map_err(|e| self.error(e))
    }

    /// Flushes and syncs: what was written survives a kill and a crash.
    fn sync(&mut self) -> std::io::Result<()> {
        self.w.flush()?;
        self.w.get_ref().sync_data()
    }
}

/// Cuts `file` (open for appending) after its last line break, if anything follows it.
fn trim_partial_line(path: &Path, file: &File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut reader = File::open(path)?;
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                tracing::info!(path = %path.display(), bytes = len - keep, "removing a last line cut short by a kill");
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    // No line break at all: nothing whole was written.
    file.set_len(0)
}

/// Where an outcome's user was: its line (instead of the Kafka source fields).
#[derive(Serialize)]
struct LineSource {
    line: u64,
}

/// A reject record.
#[derive(Serialize)]
struct RejectJson<'a> {
    line: u64,
    reason: &'a str,
    text: &'a str,
}

/// A resolved window, or `None` when it was abandoned at a stop during a fault.
type Resolved = (ClosedWindow, Option<Vec<Outcome>>);

/// A backfill ready to run.
pub(super) struct Backfill {
    plan: Plan,
    shutdown: Shutdown,
    client: ChatClient,
    calls: Arc<CallCounter>,
    gate: Arc<SystemicGate>,
    input: Option<OpenInput>,
    checkpoint: Option<Checkpoint>,
    /// The line an earlier run got to (0 = none).
    resumed: u64,
    outcomes: Option<Out>,
    /// `None`: standard error.
    rejects: Option<Out>,
    report: Report,
}

/// What the run loop keeps.
struct State {
    tracker: OffsetTracker,
    epoch: u64,
    window: Window,
    /// Closed windows waiting for a slot (or for the gate to open).
    ready: VecDeque<ClosedWindow>,
    tasks: JoinSet<Resolved>,
    /// Lines done by this run.
    lines_done: u64,
    summary: Summary,
}

impl Backfill {
    /// Opens the input (for CSV, reads its header), the checkpoint and the outputs, and builds
    /// the client. Everything that can be wrong with the settings or the file fails here.
    pub(super) async fn start(plan: Plan, shutdown: Shutdown) -> Result<Backfill, BackfillError> {
        let (source, format, decoder, csv) = (
            plan.source.clone(),
            plan.format,
            plan.decoder.clone(),
            plan.csv.clone(),
        );
        let (input, total, id) =
            tokio::task::spawn_blocking(move || open_input(&source, format, decoder, &csv))
                .await
                .expect("opening the input does not panic")?;
        let (checkpoint, resumed) = match (&plan.checkpoint, id) {
            (Some(path), Some(id)) => {
                let (c, line) = Checkpoint::open(path, id, plan.checkpoint_interval)
                    .map_err(BackfillError::Config)?;
                (Some(c), line)
            }
            (Some(_), None) => {
                return Err(BackfillError::Config(
                    "--checkpoint needs FILE to be a regular file: a pipe or a device can be neither identified nor read again".into(),
                ))
            }
            (None, _) => (None, 0),
        };
        let append = resumed > 0;
        let outcomes = match &plan.outcomes {
            Some(p) => Some(Out::open("--outcomes", p, append)?),
            None => None,
        };
        let rejects = match &plan.rejects {
            Some(p) => Some(Out::open("--rejects", p, append)?),
            None => None,
        };
        let calls = Arc::new(CallCounter::default());
        let client = ChatClient::new(plan.chat.clone(), plan.limiters.clone(), calls.clone())
            .map_err(BackfillError::Config)?;
        let what = match &plan.source {
            Source::Stdin => format!("standard input as {}", plan.format.name()),
            Source::File(p) => format!("{} as {}", p.display(), plan.format.name()),
        };
        let report = Report::start(&what, total, resumed, &plan.limiters);
        Ok(Backfill {
            plan,
            shutdown,
            client,
            calls,
            gate: Arc::new(SystemicGate::new()),
            input: Some(input),
            checkpoint,
            resumed,
            outcomes,
            rejects,
            report,
        })
    }

    /// Runs to the end of the file or the stop, then writes the last checkpoint and the summary.
    pub(super) async fn run(mut self) -> Result<Summary, BackfillError> {
        let stages = stages(&self.plan, &self.client, &self.gate, &self.shutdown);
        let (stop_tasks, stop_trigger) = Shutdown::new();
        let probers = tokio::spawn(systemic::run_probers(
            self.gate.clone(),
            self.client.clone(),
            self.plan.systemic_probe_interval,
            stop_tasks,
        ));
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let input = self.input.take().expect("run once");
        let resumed = self.resumed;
        // A thread of its own, not the runtime's blocking pool: a read of standard input that
        // never returns must not hold up the exit.
        let (end_tx, reader) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("backfill-reader".into())
            .spawn(move || {
                let _ = end_tx.send(input::read_lines(input, resumed, tx));
            })
            .map_err(|e| BackfillError::Config(format!("cannot start the reader thread: {e}")))?;
        let mut tracker = OffsetTracker::new();
        let epoch = tracker.assign(0);
        let mut st = State {
            tracker,
            epoch,
            window: Window::new(self.plan.window_size, LINGER),
            ready: VecDeque::new(),
            tasks: JoinSet::new(),
            lines_done: 0,
            summary: Summary {
                lines_read: 0,
                skipped_done: resumed,
                users: 0,
                imported: 0,
                already_imported: 0,
                updated: 0,
                deleted: 0,
                already_absent: 0,
                would: 0,
                failed: 0,
                rejected: 0,
                calls: Vec::new(),
                frequency_limited: 0,
                done_through_line: resumed,
                stop: Stop::Complete,
            },
        };
        let result = self.run_loop(&mut st, &stages, rx, reader).await;
        stop_trigger.trigger();
        let _ = probers.await;
        let stop = result?;
        // The last checkpoint: only after everything written is synced.
        let done = self.done_through(&st);
        st.summary.done_through_line = done;
        st.summary.stop = stop;
        self.sync_outputs()?;
        if let Some(c) = &mut self.checkpoint {
            c.update(done, stop == Stop::Complete)
                .map_err(|e| checkpoint_error(&self.plan, e))?;
        }
        st.summary.calls = Api::ALL
            .into_iter()
            .map(|a| (a.name(), self.calls.calls(a)))
            .collect();
        st.summary.frequency_limited = self.calls.frequency_limited();
        let snapshot = self.snapshot(&st);
        let rejects = self
            .rejects
            .as_ref()
            .map_or("on standard error".to_owned(), |r| {
                format!("in {}", r.path.display())
            });
        self.report.finish(&st.summary, snapshot, &rejects);
        Ok(st.summary)
    }

    async fn run_loop(
        &mut self,
        st: &mut State,
        stages: &Stages,
        mut rx: mpsc::Receiver<Vec<LineItem>>,
        reader: tokio::sync::oneshot::Receiver<std::io::Result<ReadEnd>>,
    ) -> Result<Stop, BackfillError> {
        let mut reader = Some(reader);
        let result = self.drive(st, stages, &mut rx, &mut reader).await;
        // A stop that came when every line was in flight already is no stop at all.
        if let (Ok(Stop::Interrupted), Some(r)) = (&result, &mut reader) {
            if let Ok(Ok(ReadEnd::Eof(lines))) = r.try_recv() {
                if self.done_through(st) >= lines {
                    return Ok(Stop::Complete);
                }
            }
        }
        result
    }

    async fn drive(
        &mut self,
        st: &mut State,
        stages: &Stages,
        rx: &mut mpsc::Receiver<Vec<LineItem>>,
        reader: &mut Option<tokio::sync::oneshot::Receiver<std::io::Result<ReadEnd>>>,
    ) -> Result<Stop, BackfillError> {
        let mut eof = false;
        let mut stop_by: Option<Instant> = None;
        // Since when the loop has been waiting for the reader with a window open.
        let mut waiting_since = Instant::now();
        let mut gate_rx = self.gate.subscribe();
        // The worker's window close rule reads these; the backfill closes its windows by itself.
        let checks = Arc::new(crate::worker::window::ChecksInFlight::default());
        // A user's lines take effect in line order, also across windows in flight.
        let order = Arc::new(UserOrder::default());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Dispatch what is ready, within the bound and while the API works.
            while st.tasks.len() < self.plan.max_windows_in_flight && self.gate.is_open() {
                let Some(w) = st.ready.pop_front() else {
                    break;
                };
                let (stages, check) = (stages.clone(), checks.start());
                let mut turn = order.enter(&w);
                st.tasks.spawn(async move {
                    turn.ready().await;
                    // The outcomes are written per window, in line order, once it is resolved:
                    // nothing to hand on earlier.
                    let records_of = w.records_by_id();
                    let live = LiveRecords::unrevoked(&w, &records_of);
                    let outcomes = stages.resolve(&w, check, &live, |_| async {}).await;
                    let outcomes = outcomes.map(|o| {
                        o.into_iter()
                            .map(|o| o.expect("nothing lets a backfill's records go"))
                            .collect()
                    });
                    drop(turn);
                    (w, outcomes)
                });
            }
            if stop_by.is_some() && st.tasks.is_empty() {
                return Ok(Stop::Interrupted);
            }
            if eof && st.ready.is_empty() && st.window.is_empty() && st.tasks.is_empty() {
                return Ok(Stop::Complete);
            }
            let reading = stop_by.is_none() && !eof && st.ready.is_empty();
            // The open window closes early only when the reader keeps it waiting (a slow standard
            // input), never because the loop stopped reading to wait for a window slot: a window
            // closed short costs an account_check call like a full one.
            if !reading {
                waiting_since = Instant::now();
            }
            let lingering = reading && !st.window.is_empty();
            tokio::select! {
                biased;
                _ = self.shutdown.wait(), if stop_by.is_none() => {
                    // Stop reading; the lines read and not dispatched stay below the checkpoint.
                    stop_by = Some(Instant::now() + self.plan.drain_timeout);
                    st.ready.clear();
                    st.window = Window::new(self.plan.window_size, LINGER);
                    rx.close();
                }
                _ = tokio::time::sleep_until(stop_by.unwrap_or_else(Instant::now)), if stop_by.is_some() => {
                    tracing::warn!(windows = st.tasks.len(), "drain timeout: the lines of the windows still in flight are left for the next run");
                    st.tasks.abort_all();
                    return Ok(Stop::Interrupted);
                }
                Some(done) = st.tasks.join_next(), if !st.tasks.is_empty() => {
                    if let Ok((w, outcomes)) = done {
                        self.resolved(st, &w, outcomes)?;
                    }
                }
                batch = rx.recv(), if reading => match batch {
                    Some(items) => {
                        waiting_since = Instant::now();
                        for item in items {
                            self.line(st, item)?;
                        }
                    }
                    None => {
                        eof = true;
                        if let Some(w) = st.window.take(CloseReason::Flush) {
                            st.ready.push_back(w);
                        }
                        if let Some(r) = reader.take() {
                            let end = r.await.unwrap_or_else(|_| {
                                Err(std::io::Error::other("the reader thread ended without a word"))
                            });
                            self.reader_ended(end)?;
                        }
                    }
                },
                _ = tokio::time::sleep_until(waiting_since + LINGER), if lingering => {
                    if let Some(w) = st.window.take(CloseReason::Linger) {
                        st.ready.push_back(w);
                    }
                }
                _ = gate_rx.changed() => {}
                _ = tick.tick() => {
                    let snapshot = self.snapshot(st);
                    self.report.progress(snapshot, &self.calls);
                    let done = self.done_through(st);
                    if let Some(mut c) = self.checkpoint.take() {
                        let wrote = c.update_if_due(done, || self.sync_outputs_io());
                        self.checkpoint = Some(c);
                        wrote.map_err(|e| checkpoint_error(&self.plan, e))?;
                    }
                }
            }
        }
    }

    /// A line from the reader.
    fn line(&mut self, st: &mut State, item: LineItem) -> Result<(), BackfillError> {
        let line = item.line;
        st.summary.lines_read += 1;
        st.tracker.read(0, st.epoch, line as i64);
        match item.parsed {
            Parsed::User(event) => {
                let record = InputRecord {
                    pos: SourcePos {
                        partition: 0,
                        offset: line as i64,
                        epoch: st.epoch,
                    },
                    event,
                    key: None,
                    payload: None,
                    timestamp_ms: None,
                };
                if let Some(w) = st.window.push(record) {
                    st.ready.push_back(w);
                }
                return Ok(());
            }
            Parsed::Skip => {}
            Parsed::Reject { reason, text } => {
                st.summary.rejected += 1;
                let json = serde_json::to_vec(&RejectJson {
                    line,
                    reason: &reason,
                    text: &text,
                })
                .expect("a plain struct serialises");
                match &mut self.rejects {
                    Some(out) => out.line(&json)?,
                    None => {
                        self.report.clear();
                        eprintln!("{}", String::from_utf8_lossy(&json));
                    }
                }
            }
        }
        st.tracker.done(0, st.epoch, line as i64);
        st.lines_done += 1;
        Ok(())
    }

    /// A window came back from the stages: its outcomes written, its lines done.
    fn resolved(
        &mut self,
        st: &mut State,
        w: &ClosedWindow,
        outcomes: Option<Vec<Outcome>>,
    ) -> Result<(), BackfillError> {
        let Some(outcomes) = outcomes else {
            // Abandoned at the stop during a fault: the lines stay below the checkpoint.
            return Ok(());
        };
        let stamp = rfc3339_millis(SystemTime::now());
        for (rec, &id) in w.records.iter().zip(&w.id_of_record) {
            let outcome = &outcomes[id];
            let line = rec.pos.offset as u64;
            let s = &mut st.summary;
            s.users += 1;
            match outcome.status {
                OutcomeStatus::Imported => s.imported += 1,
                OutcomeStatus::AlreadyImported => s.already_imported += 1,
                OutcomeStatus::Updated => s.updated += 1,
                OutcomeStatus::Deleted => s.deleted += 1,
                OutcomeStatus::AlreadyAbsent => s.already_absent += 1,
                OutcomeStatus::WouldImport
                | OutcomeStatus::WouldUpdate
                | OutcomeStatus::WouldDelete => s.would += 1,
                OutcomeStatus::Failed => s.failed += 1,
            }
            match &mut self.outcomes {
                Some(out) => {
                    let source = LineSource { line };
                    out.line(&encode_outcome_from(
                        &rec.event.user_id,
                        outcome,
                        source,
                        &stamp,
                    ))?;
                }
                None if outcome.status == OutcomeStatus::Failed => {
                    self.report.clear();
                    let stage = outcome.failed_stage.map_or("-", |s| s.as_str());
                    eprintln!(
                        "backfill: line {line}: user {} failed at {stage} (code {}): {}",
                        rec.event.user_id, outcome.error_code, outcome.error_info
                    );
                }
                None => {}
            }
            st.tracker.done(0, st.epoch, rec.pos.offset);
            st.lines_done += 1;
        }
        Ok(())
    }

    /// The reader thread ended (after the channel closed).
    fn reader_ended(&mut self, end: std::io::Result<ReadEnd>) -> Result<(), BackfillError> {
        match end {
            Ok(_) => Ok(()),
            Err(error) => Err(BackfillError::Io {
                what: "FILE",
                path: match &self.plan.source {
                    Source::Stdin => "-".into(),
                    Source::File(p) => p.display().to_string(),
                },
                error,
            }),
        }
    }

    /// Every line up to this one is done.
    fn done_through(&self, st: &State) -> u64 {
        st.tracker
            .watermarks()
            .first()
            .map_or(self.resumed, |&(_, w)| (w as u64).saturating_sub(1))
            .max(self.resumed)
    }

    fn snapshot(&self, st: &State) -> Snapshot {
        Snapshot {
            lines_done: self.resumed + st.lines_done,
            users: st.summary.users,
            paused: !self.gate.is_open(),
        }
    }

    fn sync_outputs_io(&mut self) -> std::io::Result<()> {
        for out in [&mut self.outcomes, &mut self.rejects]
            .into_iter()
            .flatten()
        {
            out.sync()?;
        }
        Ok(())
    }

    fn sync_outputs(&mut self) -> Result<(), BackfillError> {
        for out in [&mut self.outcomes, &mut self.rejects]
            .into_iter()
            .flatten()
        {
            out.sync().map_err(|e| out.error(e))?;
        }
        Ok(())
    }
}

fn checkpoint_error(plan: &Plan, error: std::io::Error) -> BackfillError {
    BackfillError::Io {
        what: "--checkpoint",
        path: plan
            .checkpoint
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string()),
        error,
    }
}

/// Opens the input: the file (or standard input), for CSV its header, its line count and its
/// identity (for the checkpoint) when it is a regular file.
fn open_input(
    source: &Source,
    format: FileFormat,
    decoder: crate::worker::event::Decoder,
    csv: &super::input::CsvColumns,
) -> Result<(OpenInput, Option<u64>, Option<FileId>), BackfillError> {
    let config = |e: String| BackfillError::Config(e);
    let (mut reader, total, id): (Box<dyn BufRead + Send>, _, _) = match source {
        Source::Stdin => (
            Box::new(BufReader::with_capacity(OUT_BUFFER, std::io::stdin())),
            None,
            None,
        ),
        Source::File(path) => {
            let name = path.display();
            let file = File::open(path).map_err(|e| config(format!("FILE {name}: {e}")))?;
            let meta = file
                .metadata()
                .map_err(|e| config(format!("FILE {name}: {e}")))?;
            if meta.is_dir() {
                return Err(config(format!("FILE {name} is a directory")));
            }
            let (total, id) = if meta.is_file() {
                let count = File::open(path).and_then(input::count_lines);
                let total = count.map_err(|e| config(format!("FILE {name}: {e}")))?;
                let id = FileId::of(path, format.name())
                    .map_err(|e| config(format!("FILE {name}: {e}")))?;
                (Some(total), Some(id))
            } else {
                // A pipe or a device: read once, not counted, not resumable.
                (None, None)
            };
            (
                Box::new(BufReader::with_capacity(OUT_BUFFER, file)),
                total,
                id,
            )
        }
    };
    let (parser, next_line) = match format {
        FileFormat::Jsonl | FileFormat::Plain => (LineParser::Decoder(Box::new(decoder)), 1),
        FileFormat::Csv => {
            let mut header = Vec::new();
            let read = input::next_line(&mut reader, &mut header, MAX_PAYLOAD_BYTES)
                .map_err(|e| config(format!("FILE: reading the CSV header: {e}")))?;
            match read {
                None => {
                    return Err(config(
                        "FILE is empty: a CSV file starts with its header line".into(),
                    ))
                }
                Some(true) => return Err(config("FILE: the CSV header line is too long".into())),
                Some(false) => {}
            }
            input::strip_bom(&mut header);
            let header = std::str::from_utf8(&header)
                .map_err(|_| config("FILE: the CSV header is not valid UTF-8".into()))?;
            (LineParser::Csv(csv.index(header).map_err(config)?), 2)
        }
    };
    Ok((
        OpenInput {
            reader,
            parser,
            next_line,
        },
        total,
        id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_output_loses_only_its_torn_last_line() {
        let path = std::env::temp_dir().join(format!(
            "as-backfill-out-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let long = "x".repeat(5000);
        for (before, after) in [
            ("a\nb\n".to_owned(), "a\nb\n".to_owned()),
            ("a\nb\n{\"user".to_owned(), "a\nb\n".to_owned()),
            (format!("{long}\n{long}"), format!("{long}\n")),
            ("no line break".to_owned(), String::new()),
            (String::new(), String::new()),
        ] {
            std::fs::write(&path, &before).unwrap();
            let mut out = Out::open("--outcomes", &path, true).unwrap();
            out.line(b"c").unwrap();
            out.sync().unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{after}c\n")
            );
        }
        // Not resuming: a fresh file.
        Out::open("--outcomes", &path, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::remove_file(&path).unwrap();
    }
}
