//! Settings of `account-sync backfill`, and their validation into a [`Plan`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::input::{CsvColumns, FileFormat};
use crate::chat::client::ApiLimiters;
use crate::chat::ChatConfig;
use crate::config::{validate_window_size, ChatArgs, KindArgs, PointerArgs};
use crate::domain::EventKind;
use crate::parse::parse_duration;
use crate::worker::kinds::KindRule;

/// Settings of `account-sync backfill`. The Chat API settings (`--sdkappid`, the key, the rates…)
/// and the JSON pointers are the worker's own flags and `ACCOUNT_SYNC_*` variables.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// The file to migrate, or - for standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Layout of FILE: jsonl (one JSON object a line, fields found by --user-id-pointer,
    /// --nick-pointer, --face-url-pointer), csv (a header line, then one row a line), or plain
    /// (one UserID a line). Default: from the extension (.jsonl, .ndjson, .json: jsonl; .csv:
    /// csv; anything else: plain); plain for standard input.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FileFormat>,
    #[command(flatten)]
    pub pointers: PointerArgs,
    #[command(flatten)]
    pub kinds: KindArgs,
    /// What every line asks, unless --event-type-pointer reads it from the line: create
    /// (import the missing accounts), update (write the profile, creating missing accounts) or
    /// delete (with --apply-deletes: a list of users to delete is one command).
    #[arg(long, value_enum, value_name = "KIND", default_value = "create")]
    pub event_kind: EventKindArg,
    /// CSV: the header's name of the UserID column.
    #[arg(long, value_name = "NAME", default_value = "UserID")]
    pub csv_user_id_column: String,
    /// CSV: the column of the optional nickname (default: Nick, when the header has it).
    #[arg(long, value_name = "NAME")]
    pub csv_nick_column: Option<String>,
    /// CSV: the column of the optional avatar URL (default: FaceUrl, when the header has it).
    #[arg(long, value_name = "NAME")]
    pub csv_face_url_column: Option<String>,
    /// Where bad lines are reported, one JSON object a line with the line number and the
    /// reason; the run goes on. Default: FILE.rejects.jsonl beside FILE; standard error for
    /// standard input.
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<PathBuf>,
    /// Write one JSON outcome record per user here (the worker's outcome record, with "line"
    /// instead of the Kafka source fields). Without it, failed users are listed on standard
    /// error.
    #[arg(long, value_name = "PATH")]
    pub outcomes: Option<PathBuf>,
    /// Make the run resumable: the line up to which everything is done is written here (every
    /// --checkpoint-interval and at the end), and the same command run again continues after
    /// it. The checkpoint names FILE (path, size, first KiB): another file is refused.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// How often the checkpoint is written (outcomes and rejects are synced to disk first).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Most distinct UserIDs per window, i.e. per account_check call (1-100).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub window_size: usize,
    /// Windows being checked and imported at once (more lines are read only as they finish).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_windows_in_flight: usize,
    /// account_import calls in flight at once, across windows.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_imports_in_flight: usize,
    /// First delay before probing the API again after a systemic fault or during an outage
    /// (doubling); also how often the primary domain is probed while calls use the backup.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub systemic_probe_interval: Duration,
    /// On Ctrl-C / SIGTERM, how long the calls in flight may take to finish; lines not finished
    /// by then are left for the next run.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub chat: ChatArgs,
}

/// `--event-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventKindArg {
    Create,
    Update,
    Delete,
}

impl From<EventKindArg> for EventKind {
    fn from(arg: EventKindArg) -> EventKind {
        match arg {
            EventKindArg::Create => EventKind::Create,
            EventKindArg::Update => EventKind::Update,
            EventKindArg::Delete => EventKind::Delete,
        }
    }
}

/// Where the lines come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// A file.
    File(PathBuf),
}

/// A validated backfill.
#[derive(Debug)]
pub struct Plan {
    /// The input.
    pub source: Source,
    /// Its format.
    pub format: FileFormat,
    /// The JSON pointers (jsonl) or the plain decoder's (plain).
    pub decoder: crate::worker::event::Decoder,
    /// The CSV columns asked for.
    pub csv: CsvColumns,
    /// Rejects file; `None` = standard error.
    pub rejects: Option<PathBuf>,
    /// Outcomes file.
    pub outcomes: Option<PathBuf>,
    /// Checkpoint file.
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    pub window_size: usize,
    pub max_windows_in_flight: usize,
    pub max_imports_in_flight: usize,
    pub systemic_probe_interval: Duration,
    pub drain_timeout: Duration,
    /// The Chat client's settings (holds the key: never printed).
    pub chat: ChatConfig,
    /// The limiters of the rates given.
    pub limiters: ApiLimiters,
    /// Single or batch import (`--import-api`, as the worker's).
    pub import: crate::worker::pipeline::ImportPlan,
    /// Only `account_check` is called (`--dry-run`).
    pub dry_run: bool,
}

impl BackfillArgs {
    /// Checks every setting that can be checked before reading the file; errors name the
    /// setting.
    pub fn plan(&self) -> Result<Plan, String> {
        let source = if self.file.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(self.file.clone())
        };
        let format = self.format.unwrap_or(match &source {
            Source::Stdin => FileFormat::Plain,
            Source::File(p) => FileFormat::from_extension(p),
        });
        let kinds = KindRule {
            default: self.event_kind.into(),
            ..self.kinds.rule()
        };
        if kinds.pointer.is_some() && format != FileFormat::Jsonl {
            return Err("--event-type-pointer needs --format jsonl".into());
        }
        let decoder = self
            .pointers
            .decoder(match format {
                FileFormat::Plain => crate::worker::event::InputFormat::Plain,
                _ => crate::worker::event::InputFormat::Json,
            })?
            .with_kinds(kinds)?;
        validate_window_size(self.window_size)?;
        if self.max_windows_in_flight == 0 || self.max_imports_in_flight == 0 {
            return Err(
                "--max-windows-in-flight and --max-imports-in-flight must be at least 1".into(),
            );
        }
        if self.checkpoint_interval.is_zero() {
            return Err("--checkpoint-interval must be greater than 0".into());
        }
        if self.csv_user_id_column.trim().is_empty() {
            return Err("--csv-user-id-column is empty".into());
        }
        if source == Source::Stdin && self.checkpoint.is_some() {
            return Err("--checkpoint needs a FILE: standard input can be neither identified nor read again, so a run from it cannot be resumed".into());
        }
        let rejects = match (&self.rejects, &source) {
            (Some(p), _) => Some(p.clone()),
            (None, Source::Stdin) => None,
            (None, Source::File(f)) => Some(with_suffix(f, ".rejects.jsonl")),
        };
        // Two settings naming one file would overwrite each other (or the input).
        let mut named: Vec<(&str, &Path)> = Vec::new();
        if let Source::File(f) = &source {
            named.push(("FILE", f));
        }
        for (flag, p) in [
            ("--rejects", &rejects),
            ("--outcomes", &self.outcomes),
            ("--checkpoint", &self.checkpoint),
        ] {
            if let Some(p) = p {
                if let Some((other, _)) = named.iter().find(|(_, q)| same_file(q, p)) {
                    return Err(format!(
                        "{flag} {} is also {other}: give each its own file",
                        p.display()
                    ));
                }
                named.push((flag, p));
            }
        }
        let chat = self.chat.chat_config()?;
        let limiters = self.chat.limiters()?;
        let import = self.chat.import_plan()?;
        Ok(Plan {
            source,
            format,
            decoder,
            csv: CsvColumns {
                user_id: self.csv_user_id_column.clone(),
                nick: column(&self.csv_nick_column, "Nick"),
                face_url: column(&self.csv_face_url_column, "FaceUrl"),
                kind: self.event_kind.into(),
            },
            rejects,
            outcomes: self.outcomes.clone(),
            checkpoint: self.checkpoint.clone(),
            checkpoint_interval: self.checkpoint_interval,
            window_size: self.window_size,
            max_windows_in_flight: self.max_windows_in_flight,
            max_imports_in_flight: self.max_imports_in_flight,
            systemic_probe_interval: self.systemic_probe_interval,
            drain_timeout: self.drain_timeout,
            chat,
            limiters,
            import,
            dry_run: self.kinds.dry_run,
        })
    }
}

/// `(name, given)`: the flag's value, or the default name (used only if the header has it).
fn column(flag: &Option<String>, default: &str) -> (String, bool) {
    match flag {
        Some(name) => (name.clone(), true),
        None => (default.to_owned(), false),
    }
}

/// `users.csv` → `users.csv.rejects.jsonl`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether two paths name one file (as far as can be told before they all exist).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        backfill: BackfillArgs,
    }

    fn parse(args: &[&str]) -> Result<BackfillArgs, String> {
        let all = ["test", "--sdkappid", "1400000000"].iter().chain(args);
        Cli::try_parse_from(all)
            .map(|c| c.backfill)
            .map_err(|e| e.to_string())
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut a = parse(args)?;
        a.chat.secret.secret_key = Some(crate::chat::SecretKey::new("k"));
        a.plan()
    }

    #[test]
    fn formats_and_rejects_follow_the_file() {
        let p = plan(&["users.csv"]).unwrap();
        assert_eq!(p.format, FileFormat::Csv);
        assert_eq!(p.rejects, Some(PathBuf::from("users.csv.rejects.jsonl")));
        assert_eq!(p.csv.nick, ("Nick".into(), false));
        assert_eq!(plan(&["a.NDJSON"]).unwrap().format, FileFormat::Jsonl);
        assert_eq!(plan(&["ids.txt"]).unwrap().format, FileFormat::Plain);
        let p = plan(&["-"]).unwrap();
        assert_eq!(
            (p.source, p.format, p.rejects),
            (Source::Stdin, FileFormat::Plain, None)
        );
        let p = plan(&["x.txt", "--format", "jsonl", "--csv-nick-column", "Name"]).unwrap();
        assert_eq!(p.format, FileFormat::Jsonl);
        assert_eq!(p.csv.nick, ("Name".into(), true));
        assert_eq!(p.chat.retry.max_attempts, 8, "the worker's defaults");
    }

    #[test]
    fn bad_settings_name_themselves() {
        for (args, name) in [
            (&["-", "--checkpoint", "cp"][..], "--checkpoint"),
            (&["f.txt", "--window-size", "0"], "--window-size"),
            (&["f.txt", "--window-size", "101"], "--window-size"),
            (
                &["f.txt", "--max-windows-in-flight", "0"],
                "--max-windows-in-flight",
            ),
            (
                &["f.txt", "--checkpoint-interval", "0s"],
                "--checkpoint-interval",
            ),
            (
                &["f.txt", "--user-id-pointer", "UserID"],
                "--user-id-pointer",
            ),
            (&["f.txt", "--outcomes", "f.txt"], "--outcomes"),
            (
                &["f.txt", "--outcomes", "o", "--checkpoint", "o"],
                "--checkpoint",
            ),
            (&["f.txt", "--check-rate=-1"], "--check-rate"),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(name), "{args:?}: {e}");
        }
        assert!(parse(&["f.txt", "--format", "xml"])
            .unwrap_err()
            .contains("xml"));
        assert!(parse(&[]).unwrap_err().contains("FILE"));
    }
}
