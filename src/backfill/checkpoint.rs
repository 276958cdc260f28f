//! The resumable checkpoint of a backfill: which file, and the line up to which every line is
//! done (its outcome written and flushed, or its reject reported). Written atomically (a
//! temporary file beside it, synced, then renamed over it), so a kill at any moment leaves either
//! the previous checkpoint or the new one, never a torn one.
//!
//! ```json
//! {"version":1,"file":"/data/users.jsonl","size":52428800,"head_sha256":"9f86…","format":"jsonl",
//!  "done_through_line":500000,"complete":false,"updated_at":"2026-11-22T12:00:00.123Z"}
//! ```
//!
//! The file is identified by its canonical path, its size and the SHA-256 of its first KiB: a
//! checkpoint of another file (or of this one after it changed) is refused, since its line
//! numbers would mean other users.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The checkpoint format's version.
const VERSION: u32 = 1;
/// Bytes of the file's start that identify it with its path and size.
const HEAD_BYTES: u64 = 1024;

/// What identifies the input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// Canonical path.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the first KiB, hex.
    pub head_sha256: String,
    /// The format it is read as (`jsonl`, `csv`, `plain`): line numbers mean other things in
    /// another format.
    pub format: String,
}

impl FileId {
    /// Identifies the file at `path`, read as `format`.
    pub fn of(path: &Path, format: &str) -> std::io::Result<FileId> {
        let canonical = std::fs::canonicalize(path)?;
        let mut file = std::fs::File::open(&canonical)?;
        let size = file.metadata()?.len();
        let mut head = Vec::with_capacity(HEAD_BYTES as usize);
        (&mut file).take(HEAD_BYTES).read_to_end(&mut head)?;
        let digest = Sha256::digest(&head);
        Ok(FileId {
            file: canonical.to_string_lossy().into_owned(),
            size,
            head_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            format: format.to_owned(),
        })
    }
}

/// The checkpoint file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The file it belongs to.
    #[serde(flatten)]
    pub id: FileId,
    /// Every line up to and including this one (from 1) is done; 0 = none.
    pub done_through_line: u64,
    /// The whole file is done.
    pub complete: bool,
    /// When it was written (RFC 3339).
    pub updated_at: String,
}

/// A checkpoint file and what was last written to it.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    id: FileId,
    /// The last line written as done (or loaded).
    written: u64,
    /// Whether `complete` was last written true.
    complete: bool,
    /// How often it is written while the run goes on.
    every: Duration,
    /// When it was last written (or opened).
    last: Instant,
}

impl Checkpoint {
    /// Opens the checkpoint at `path` for the file `id`: the line to resume after (0 when
    /// there is no checkpoint yet). Errors (a checkpoint of another file, an unreadable or
    /// foreign file) name the setting and say what to do.
    pub fn open(path: &Path, id: FileId, every: Duration) -> Result<(Checkpoint, u64), String> {
        let flag = format!("--checkpoint {}", path.display());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let c = Checkpoint {
                    path: path.to_owned(),
                    id,
                    written: 0,
                    complete: false,
                    every,
                    last: Instant::now(),
                };
                // Fail now, not after the first second of work, if it cannot be written.
                c.write(0, false)
                    .map_err(|e| format!("{flag}: cannot be written: {e}"))?;
                return Ok((c, 0));
            }
            Err(e) => return Err(format!("{flag}: {e}")),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| {
            format!("{flag} is not a checkpoint of account-sync backfill ({e}); remove it to start over")
        })?;
        if state.version != VERSION {
            return Err(format!(
                "{flag} has version {}, this account-sync writes version {VERSION}; remove it to start over",
                state.version
            ));
        }
        if state.id != id {
            return Err(format!(
                "{flag} belongs to another file: {} ({} bytes, first KiB {}, read as {}), not {} ({} bytes, first KiB {}, read as {}). \
                 Resume with the file it was made for, or remove the checkpoint to start over",
                state.id.file, state.id.size, short(&state.id.head_sha256), state.id.format,
                id.file, id.size, short(&id.head_sha256), id.format
            ));
        }
        let resume = state.done_through_line;
        Ok((
            Checkpoint {
                path: path.to_owned(),
                id,
                written: resume,
                complete: state.complete,
                every,
                last: Instant::now(),
            },
            resume,
        ))
    }

    /// The line last written as done.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Every `every` since the last write: when `done_through_line` moved, calls `flush` (which
    /// makes the outcomes and rejects of those lines durable) and then writes it. Returns whether
    /// it wrote.
    pub fn update_if_due(
        &mut self,
        done_through_line: u64,
        flush: impl FnOnce() -> std::io::Result<()>,
    ) -> std::io::Result<bool> {
        if self.last.elapsed() < self.every || done_through_line == self.written {
            return Ok(false);
        }
        flush()?;
        self.update(done_through_line, false)?;
        Ok(true)
    }

    /// Writes `done_through_line` now if it moved (or `complete` changed): temporary file, sync,
    /// rename. The caller has made the lines' outcomes durable first.
    pub fn update(&mut self, done_through_line: u64, complete: bool) -> std::io::Result<()> {
        if done_through_line == self.written && complete == self.complete {
            return Ok(());
        }
        self.write(done_through_line, complete)?;
        self.written = done_through_line;
        self.complete = complete;
        self.last = Instant::now();
        Ok(())
    }

    fn write(&self, done_through_line: u64, complete: bool) -> std::io::Result<()> {
        let state = State {
            version: VERSION,
            id: self.id.clone(),
            done_through_line,
            complete,
            updated_at: crate::delivery::sink::rfc3339_millis(SystemTime::now()),
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&state).expect("a plain struct serialises"))?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// A fresh directory holding `users.txt` with `content`: (directory, file, its id).
    fn fixture(name: &str, content: &str) -> (PathBuf, PathBuf, FileId) {
        let d = std::env::temp_dir().join(format!(
            "as-checkpoint-{}-{name}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        let data = d.join("users.txt");
        std::fs::write(&data, content).unwrap();
        let id = FileId::of(&data, "plain").unwrap();
        (d, data, id)
    }

    #[test]
    fn a_checkpoint_resumes_its_own_file_only() {
        let (d, data, id) = fixture("own", "u1\nu2\nu3\n");
        assert_eq!(id.size, 9);
        assert_eq!(id.head_sha256.len(), 64);
        let cp = d.join("cp.json");

        let (mut c, resume) = Checkpoint::open(&cp, id.clone(), SEC).unwrap();
        assert_eq!(resume, 0);
        assert!(
            cp.exists(),
            "written at once, so that a bad path fails at the start"
        );
        c.update(2, false).unwrap();
        let state: State = serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
        assert_eq!((state.done_through_line, state.complete), (2, false));
        assert!(!d.join("cp.json.tmp").exists(), "renamed into place");

        let (c2, resume) = Checkpoint::open(&cp, id.clone(), SEC).unwrap();
        assert_eq!((resume, c2.written()), (2, 2));

        // The same path, changed: refused.
        std::fs::write(&data, "u1\nu2\nu3\nu4\n").unwrap();
        let e = Checkpoint::open(&cp, FileId::of(&data, "plain").unwrap(), SEC).unwrap_err();
        assert!(
            e.contains("--checkpoint") && e.contains("another file"),
            "{e}"
        );
        // Another format: refused.
        std::fs::write(&data, "u1\nu2\nu3\n").unwrap();
        let e = Checkpoint::open(&cp, FileId::of(&data, "csv").unwrap(), SEC).unwrap_err();
        assert!(e.contains("read as plain"), "{e}");
        // Not a checkpoint.
        std::fs::write(&cp, "hello").unwrap();
        let e = Checkpoint::open(&cp, id, SEC).unwrap_err();
        assert!(e.contains("not a checkpoint"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_unwritable_checkpoint_fails_at_the_start() {
        let (d, _, id) = fixture("unwritable", "u1\n");
        let e = Checkpoint::open(&d.join("no-such-dir/cp.json"), id, SEC).unwrap_err();
        assert!(
            e.contains("--checkpoint") && e.contains("cannot be written"),
            "{e}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn written_every_interval_when_it_moved_after_the_flush() {
        let (d, _, id) = fixture("clock", "u1\n");
        let cp = d.join("cp.json");
        let (mut c, _) = Checkpoint::open(&cp, id, SEC).unwrap();
        let read = || {
            let s: State = serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
            (s.done_through_line, s.complete)
        };
        let flushes = std::cell::Cell::new(0);
        let flush = || {
            flushes.set(flushes.get() + 1);
            Ok(())
        };
        let step = |ms| tokio::time::advance(Duration::from_millis(ms));

        step(500).await;
        assert!(!c.update_if_due(10, flush).unwrap(), "not due yet");
        step(500).await;
        assert!(c.update_if_due(10, flush).unwrap(), "due after a second");
        assert_eq!((read(), flushes.get()), ((10, false), 1));
        step(999).await;
        assert!(
            !c.update_if_due(20, flush).unwrap(),
            "a second since the last write"
        );
        step(1).await;
        assert!(c.update_if_due(20, flush).unwrap());
        step(5_000).await;
        assert!(
            !c.update_if_due(20, flush).unwrap(),
            "nothing moved: no write, no flush"
        );
        assert_eq!(flushes.get(), 2);
        assert!(c.update_if_due(25, flush).unwrap(), "long due: at once");
        // The end: written whatever the time.
        c.update(30, true).unwrap();
        assert_eq!(read(), (30, true));
        std::fs::remove_dir_all(d).unwrap();
    }
}
