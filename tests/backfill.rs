//! `account-sync backfill` as users run it (the binary as a child process) against the Chat API
//! emulator: JSON Lines, CSV and plain files; bad lines reported with their numbers; resumes
//! after SIGKILL and SIGINT that neither lose nor repeat what they must not; exit codes; the key
//! never in any output.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use account_sync::devtools::emulator::{is_preexisting, EmulatorConfig, EmulatorHandle};
use common::emulator::{count, emulator_config, start_emulator, SECRET};
use common::process::{chat_args, Proc};
use serde_json::Value;

/// An emulator on a runtime of its own (the tests block on child processes) and a directory for
/// the files of one test.
struct Setup {
    rt: tokio::runtime::Runtime,
    emu: Option<EmulatorHandle>,
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str, cfg: EmulatorConfig) -> Setup {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(start_emulator(cfg));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "backfill-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Setup {
            rt,
            emu: Some(emu),
            dir,
        }
    }

    fn emu(&self) -> &EmulatorHandle {
        self.emu.as_ref().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// `backfill FILE` against the emulator, fast retries, plus `extra`.
    fn args(&self, file: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = ["backfill", file, "--systemic-probe-interval", "100ms"]
            .map(String::from)
            .to_vec();
        a.extend(chat_args(&self.emu().base_url()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn spawn(&self, name: &str, file: &str, extra: &[&str]) -> Proc {
        Proc::spawn(
            name,
            &self.args(file, extra),
            &[("ACCOUNT_SYNC_SECRET_KEY", SECRET)],
        )
    }

    /// Runs a backfill to its end.
    fn run(&self, name: &str, file: &str, extra: &[&str]) -> Ran {
        finish(self.spawn(name, file, extra), name)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(emu) = self.emu.take() {
            self.rt.block_on(emu.shutdown());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a run ended.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn finish(mut p: Proc, name: &str) -> Ran {
    let status = p.wait(Duration::from_secs(120), &format!("of backfill {name}"));
    Ran {
        status,
        stdout: p.stdout(),
        stderr: p.logs(),
    }
}

fn code(status: ExitStatus) -> Option<i32> {
    status.code()
}

/// Every JSON line of a file.
fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Outcomes by line number (a line may have more than one after a kill).
fn outcomes_by_line(path: &Path) -> BTreeMap<u64, Vec<Value>> {
    let mut m: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for o in json_lines(path) {
        m.entry(o["line"].as_u64().expect("line number"))
            .or_default()
            .push(o);
    }
    m
}

/// The checkpoint's `done_through_line`, if the file is there.
fn checkpoint_line(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["done_through_line"].as_u64()
}

/// Neither the key nor a UserSig query parameter appears anywhere.
fn assert_no_secret(texts: &[&str]) {
    for t in texts {
        assert!(!t.contains(SECRET), "the secret key leaked:\n{t}");
        assert!(!t.contains("usersig="), "a UserSig leaked:\n{t}");
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn jsonl_file_is_imported_with_one_outcome_per_user_line_and_bad_lines_rejected() {
    let cfg = EmulatorConfig {
        existing_fraction: 0.3,
        ..emulator_config()
    };
    let s = Setup::new("jsonl", cfg);
    // Nested pointers, as the worker's --user-id-pointer takes them.
    let mut text = String::new();
    let mut users = BTreeMap::new();
    for line in 1..=300u64 {
        let l = match line {
            5 => "{\"user\": {\"id\": \"bad id\"}}".to_owned(),
            17 => "not json at all".to_owned(),
            18 => "   ".to_owned(),
            40 => "{\"user\": {\"name\": \"no id\"}}".to_owned(),
            _ => {
                let id = format!("j-{line:04}");
                users.insert(line, id.clone());
                format!("{{\"user\": {{\"id\": \"{id}\", \"name\": \"Name {line}\"}}, \"plan\": \"pro\"}}")
            }
        };
        text.push_str(&l);
        text.push('\n');
    }
    let file = s.write("users.jsonl", &text);
    let outcomes = s.path("outcomes.jsonl");
    let ran = s.run(
        "jsonl",
        &file,
        &[
            "--user-id-pointer",
            "/user/id",
            "--nick-pointer",
            "/user/name",
            "--outcomes",
            outcomes.to_str().unwrap(),
        ],
    );
    assert_eq!(code(ran.status), Some(0), "{}", ran.stderr);

    let by_line = outcomes_by_line(&outcomes);
    assert_eq!(
        by_line.keys().copied().collect::<Vec<_>>(),
        users.keys().copied().collect::<Vec<_>>(),
        "one outcome per user line, none for bad or blank lines"
    );
    for (line, id) in &users {
        let o = &by_line[line];
        assert_eq!(o.len(), 1);
        assert_eq!(o[0]["user_id"], id.as_str());
        let want = if is_preexisting(id, 0.3) {
            "already_imported"
        } else {
            "imported"
        };
        assert_eq!(o[0]["status"], want, "line {line}");
        assert!(o[0].get("source_topic").is_none(), "no Kafka fields");
        assert!(s.emu().imported(id), "{id} exists in the emulator");
    }
    let rejects = json_lines(&s.path("users.jsonl.rejects.jsonl"));
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [5, 17, 40], "blank line 18 is no reject");
    let reason = |i: usize| rejects[i]["reason"].as_str().unwrap().to_owned();
    assert!(reason(0).contains("characters outside"), "{}", reason(0));
    assert!(reason(1).contains("not valid JSON"), "{}", reason(1));
    assert!(
        reason(2).contains("no UserID at JSON pointer /user/id"),
        "{}",
        reason(2)
    );
    assert_eq!(rejects[1]["text"], "not json at all");

    let stats = s.emu().stats();
    let new = users.values().filter(|u| !is_preexisting(u, 0.3)).count() as u64;
    assert_eq!(stats.imported_accounts, new);
    assert_eq!(
        count(&stats.calls, "account_check"),
        3,
        "296 users, windows of 100"
    );
    assert_eq!(count(&stats.rate_limited, "account_import"), 0);
    for want in [
        "users                    296",
        "rejected lines           3",
        &format!("imported               {new}"),
        "at the end of the file",
    ] {
        assert!(
            ran.stderr.contains(want),
            "summary lacks {want:?}:\n{}",
            ran.stderr
        );
    }
    assert_no_secret(&[&ran.stderr, &ran.stdout, &read(&outcomes)]);
}

#[test]
fn csv_with_quoted_fields_and_a_rejected_nick_exits_1() {
    let cfg = EmulatorConfig {
        // A word with a comma: only a Nick read whole from its quoted field contains it.
        sensitive_word: vec!["Smith, John".into()],
        ..emulator_config()
    };
    let s = Setup::new("csv", cfg);
    let file = s.write(
        "people.csv",
        "Email,UserID,Nick,FaceUrl\r\n\
         a@x,c-1,\"Smith, John\",\r\n\
         b@x,c-2,\"O\"\"Brien, Pat\",https://x/2.png\r\n\
         c@x,c-3,Plain Nick,\r\n\
         d@x,c-4,too,few,fields,here\r\n\
         e@x,c-5,\"never closed,\r\n\
         f@x, c-6 ,,\r\n",
    );
    let outcomes = s.path("out.jsonl");
    let ran = s.run("csv", &file, &["--outcomes", outcomes.to_str().unwrap()]);
    assert_eq!(code(ran.status), Some(1), "a user failed: {}", ran.stderr);
    let by_line = outcomes_by_line(&outcomes);
    assert_eq!(by_line.keys().copied().collect::<Vec<_>>(), [2, 3, 4, 7]);
    let failed = &by_line[&2][0];
    assert_eq!(failed["user_id"], "c-1");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error_code"], 40005);
    for (line, id) in [(3, "c-2"), (4, "c-3"), (7, "c-6")] {
        assert_eq!(by_line[&line][0]["status"], "imported", "line {line}");
        assert!(s.emu().imported(id), "{id}");
    }
    assert!(!s.emu().imported("c-1"));
    let rejects = json_lines(&s.path("people.csv.rejects.jsonl"));
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [5, 6]);
    assert!(rejects[0]["reason"]
        .as_str()
        .unwrap()
        .contains("6 fields, the header has 4"));
    assert!(rejects[1]["reason"]
        .as_str()
        .unwrap()
        .contains("no closing one"));
    assert!(
        ran.stderr.contains("failed                 1"),
        "{}",
        ran.stderr
    );
    assert_no_secret(&[&ran.stderr, &read(&outcomes)]);
}

#[test]
fn plain_lines_from_stdin_report_rejects_on_stderr() {
    let s = Setup::new("stdin", emulator_config());
    let mut input = String::new();
    for i in 1..=150 {
        let line = match i {
            3 => "has space".to_owned(),
            100 => "x".repeat(40),
            _ => format!("p-{i}"),
        };
        input.push_str(&line);
        input.push('\n');
    }
    let p = Proc::spawn_with_input(
        "stdin",
        &s.args("-", &[]),
        &[("ACCOUNT_SYNC_SECRET_KEY", SECRET)],
        input.into_bytes(),
    );
    let ran = finish(p, "stdin");
    assert_eq!(code(ran.status), Some(0), "{}", ran.stderr);
    let rejects: Vec<Value> = ran
        .stderr
        .lines()
        .filter(|l| l.starts_with("{\"line\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 100], "{}", ran.stderr);
    assert!(rejects[1]["reason"]
        .as_str()
        .unwrap()
        .contains("over the 32-byte limit"));
    assert!(ran.stderr.contains("standard input"), "{}", ran.stderr);
    assert_eq!(s.emu().stats().imported_accounts, 148);
    assert!(s.emu().imported("p-150"));
    assert_no_secret(&[&ran.stderr]);
}

/// A file of `n` new users, one a line.
fn plain_users(s: &Setup, name: &str, n: u64) -> String {
    let text: String = (1..=n).map(|i| format!("r-{i:05}\n")).collect();
    s.write(name, &text)
}

/// Emulator and backfill both at 1000 imports/s: quick, and still paced by the limiter.
fn fast_limits() -> EmulatorConfig {
    EmulatorConfig {
        check_rate: 1000.0,
        import_rate: 1000.0,
        ..emulator_config()
    }
}

/// A resumable run of `n` new users at 1000 calls/s, windows of 50, 4 in flight: its files and
/// flags.
struct Resumable {
    n: u64,
    file: String,
    outcomes: PathBuf,
    cp: PathBuf,
    extra: Vec<String>,
}

impl Resumable {
    fn new(s: &Setup, n: u64, more: &[&str]) -> Resumable {
        let file = plain_users(s, "users.txt", n);
        let (outcomes, cp) = (s.path("out.jsonl"), s.path("cp.json"));
        let mut extra: Vec<String> = [
            "--outcomes",
            outcomes.to_str().unwrap(),
            "--checkpoint",
            cp.to_str().unwrap(),
            "--window-size",
            "50",
            "--max-windows-in-flight",
            "4",
            "--check-rate",
            "1000",
            "--import-rate",
            "1000",
            // One account_import per user: the pace (about 3 s for 3,000 users) leaves time to
            // interrupt the run mid-way.
            "--import-api",
            "single",
        ]
        .map(String::from)
        .to_vec();
        extra.extend(more.iter().map(|m| m.to_string()));
        Resumable {
            n,
            file,
            outcomes,
            cp,
            extra,
        }
    }

    fn flags(&self) -> Vec<&str> {
        self.extra.iter().map(String::as_str).collect()
    }

    /// Starts a run and waits until its checkpoint passes `line`.
    fn spawn_until(&self, s: &Setup, name: &str, line: u64) -> Proc {
        let mut p = s.spawn(name, &self.file, &self.flags());
        let started = Instant::now();
        while checkpoint_line(&self.cp).unwrap_or(0) < line {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no progress: {}",
                p.logs()
            );
            assert!(p.running(), "ended early: {}", p.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// Runs to the end, which must be exit 0.
    fn finish(&self, s: &Setup, name: &str) -> Ran {
        let ran = s.run(name, &self.file, &self.flags());
        assert_eq!(code(ran.status), Some(0), "{}", ran.stderr);
        ran
    }
}

#[test]
fn a_killed_run_resumes_without_losing_or_redoing_checkpointed_lines() {
    let s = Setup::new("kill", fast_limits());
    let r = Resumable::new(&s, 3000, &["--checkpoint-interval", "100ms"]);
    let (n, outcomes, cp) = (r.n, &r.outcomes, &r.cp);
    let mut first = r.spawn_until(&s, "kill-1", 1000);
    // At any moment between two checkpoints.
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
    first.signal("-KILL");
    first.wait(Duration::from_secs(10), "after SIGKILL");
    let at_kill = checkpoint_line(cp).unwrap();
    assert!(at_kill < n, "killed before the end ({at_kill})");
    let written_at_kill = outcomes_by_line(outcomes);

    let ran = r.finish(&s, "kill-2");
    assert!(
        ran.stderr
            .contains(&format!("resuming after line {at_kill}")),
        "{}",
        ran.stderr
    );
    let by_line = outcomes_by_line(outcomes);
    // Nothing lost: every line has an outcome, and every account exists.
    assert_eq!(by_line.len() as u64, n, "every line has an outcome");
    assert_eq!(by_line.keys().next(), Some(&1));
    assert_eq!(s.emu().stats().imported_accounts, n);
    assert!(s.emu().imported("r-00001") && s.emu().imported("r-03000"));
    // Nothing at or below the checkpoint redone; repeats only above it, bounded by the windows
    // in flight (4 × 50) plus the lines finished since the last checkpoint (≤ ~0.4 s at 1000/s).
    let repeated: Vec<u64> = by_line
        .iter()
        .filter(|(_, o)| o.len() > 1)
        .map(|(&l, _)| l)
        .collect();
    // Redone work: lines the rerun found imported already (no account existed before), i.e.
    // lines above the checkpoint that the killed run had finished.
    let redone: Vec<u64> = by_line
        .iter()
        .filter(|(_, o)| o.iter().any(|o| o["status"] == "already_imported"))
        .map(|(&l, _)| l)
        .collect();
    eprintln!(
        "killed with the checkpoint at line {at_kill} and {} lines written; {} outcomes repeated, {} users redone",
        written_at_kill.len(),
        repeated.len(),
        redone.len()
    );
    assert!(
        redone.iter().all(|&l| l > at_kill) && redone.len() <= 600,
        "redone beyond the bound: {redone:?}"
    );
    assert!(
        repeated.iter().all(|&l| l > at_kill),
        "a line at or below the checkpoint {at_kill} was redone: {repeated:?}"
    );
    assert!(
        repeated.len() <= 600,
        "{} lines repeated beyond the in-flight bound",
        repeated.len()
    );
    for l in &repeated {
        assert_eq!(by_line[l].len(), 2);
        assert!(written_at_kill.contains_key(l));
    }
    for (l, o) in &written_at_kill {
        if *l <= at_kill {
            assert_eq!(by_line[l], *o, "line {l} kept its single outcome");
        }
    }
    let state: Value = serde_json::from_str(&read(cp)).unwrap();
    assert_eq!(state["done_through_line"], n);
    assert_eq!(state["complete"], true);
    assert_no_secret(&[&ran.stderr, &first.logs(), &read(cp), &read(outcomes)]);
}

#[test]
fn ctrl_c_finishes_the_calls_in_flight_writes_the_checkpoint_and_a_rerun_finishes() {
    let s = Setup::new("sigint", fast_limits());
    let r = Resumable::new(&s, 3000, &[]);
    let (n, outcomes, cp) = (r.n, &r.outcomes, &r.cp);
    let mut first = r.spawn_until(&s, "sigint-1", 500);
    let status = first.stop("-INT", Duration::from_secs(30));
    assert_eq!(code(status), Some(3), "interrupted: {}", first.logs());
    let at_stop = checkpoint_line(cp).unwrap();
    assert!((500..n).contains(&at_stop), "{at_stop}");
    let by_line = outcomes_by_line(outcomes);
    assert_eq!(
        by_line.keys().copied().collect::<Vec<_>>(),
        (1..=at_stop).collect::<Vec<_>>(),
        "the windows in flight finished: everything written is checkpointed"
    );
    assert!(first
        .logs()
        .contains("run the same command again to continue"));

    r.finish(&s, "sigint-2");
    let by_line = outcomes_by_line(outcomes);
    assert_eq!(by_line.len() as u64, n);
    assert!(
        by_line.values().all(|o| o.len() == 1),
        "a clean stop repeats nothing"
    );
    let stats = s.emu().stats();
    assert_eq!(stats.imported_accounts, n);
    // Reading waited for window slots all along (4 in flight), yet every window was full: one
    // account_check per 50 users, none wasted on a window closed short.
    assert_eq!(count(&stats.calls, "account_check"), n / 50);

    // Done: a third run has nothing left to do and makes no call.
    let calls = s.emu().stats().calls;
    let ran = r.finish(&s, "sigint-3");
    assert!(
        ran.stderr.contains("lines are done already"),
        "{}",
        ran.stderr
    );
    assert_eq!(s.emu().stats().calls, calls);
}

#[test]
fn a_systemic_fault_pauses_without_failing_anyone_and_the_key_stays_secret() {
    let s = Setup::new("wrong-key", emulator_config());
    let file = plain_users(&s, "users.txt", 200);
    let outcomes = s.path("out.jsonl");
    let wrong = "wrong-key-0123456789";
    let mut p = Proc::spawn(
        "wrong-key",
        &s.args(&file, &["--outcomes", outcomes.to_str().unwrap()]),
        &[("ACCOUNT_SYNC_SECRET_KEY", wrong)],
    );
    let started = Instant::now();
    while !p.logs().contains("intake paused") {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", p.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Probes go on (waited for, not slept on: a fixed 500 ms assumed a probe would come within
    // it on a loaded machine); nobody is failed or written while the gate is closed.
    let started = Instant::now();
    while count(&s.emu().stats().rejected_by_code, "70009") < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", p.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = p.stop("-TERM", Duration::from_secs(30));
    assert_eq!(code(status), Some(3), "{}", p.logs());
    assert_eq!(read(&outcomes), "", "no outcome during a systemic fault");
    assert!(count(&s.emu().stats().rejected_by_code, "70009") >= 2);
    let logs = p.logs();
    assert!(logs.contains("70009"), "{logs}");
    assert!(!logs.contains(wrong), "the key leaked:\n{logs}");
    assert_no_secret(&[&logs]);
}

#[test]
fn bad_settings_and_unreadable_files_exit_2_naming_the_setting() {
    let s = Setup::new("bad", emulator_config());
    let file = plain_users(&s, "users.txt", 3);
    let cp = s.path("cp.json");
    let csv = s.write("people.csv", "Email,Name\na,b\n");
    let empty_csv = s.write("empty.csv", "");
    let missing = s.path("missing.txt");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (s.args(missing.to_str().unwrap(), &[]), "FILE"),
        (s.args(&s.dir.to_string_lossy(), &[]), "directory"),
        (s.args("-", &["--checkpoint", "cp.json"]), "--checkpoint"),
        (s.args(&file, &["--window-size", "101"]), "--window-size"),
        (s.args(&file, &["--outcomes", &file]), "--outcomes"),
        (s.args(&csv, &[]), "--csv-user-id-column"),
        (s.args(&empty_csv, &[]), "header"),
        (s.args(&file, &["--format", "xml"]), "--format"),
        (
            s.args(&file, &["--event-kind", "delete"]),
            "--event-kind delete needs --apply-deletes",
        ),
        (
            s.args(&file, &["--event-type-pointer", "/type"]),
            "--event-type-pointer needs --format jsonl",
        ),
        (
            s.args(&file, &["--outcomes", "/no/such/dir/o.jsonl"]),
            "--outcomes",
        ),
    ];
    for (args, name) in cases {
        let ran = finish(
            Proc::spawn("bad", &args, &[("ACCOUNT_SYNC_SECRET_KEY", SECRET)]),
            "bad",
        );
        assert_eq!(code(ran.status), Some(2), "{args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains(name),
            "{args:?} should name {name}: {}",
            ran.stderr
        );
    }
    // No key at all.
    let ran = finish(Proc::spawn("no-key", &s.args(&file, &[]), &[]), "no-key");
    assert_eq!(code(ran.status), Some(2));
    assert!(
        ran.stderr.contains("ACCOUNT_SYNC_SECRET_KEY"),
        "{}",
        ran.stderr
    );

    // A checkpoint of the file before it changed is refused.
    let cp_arg = ["--checkpoint", cp.to_str().unwrap()];
    let ran = s.run("first", &file, &cp_arg);
    assert_eq!(code(ran.status), Some(0), "{}", ran.stderr);
    std::fs::write(&file, "r-00001\nr-00002\nr-00003\nr-00004\n").unwrap();
    let ran = s.run("changed", &file, &cp_arg);
    assert_eq!(code(ran.status), Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("--checkpoint") && ran.stderr.contains("another file"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        s.emu().stats().imported_accounts,
        3,
        "nothing done after the refusal"
    );
}

/// A list of users to delete is one command; a JSON Lines file says each line's kind by its type,
/// and a user's lines take effect in line order.
#[test]
fn a_list_of_users_to_delete_and_a_file_of_typed_events() {
    let s = Setup::new(
        "kinds",
        EmulatorConfig {
            existing_fraction: 0.5,
            user_log: true,
            ..emulator_config()
        },
    );
    let users: Vec<String> = (0..200).map(|i| format!("gone-{i:04}")).collect();
    let file = s.write("gone.txt", &(users.join("\n") + "\n"));
    let outcomes = s.path("gone.outcomes.jsonl");
    let ran = s.run(
        "delete",
        &file,
        &[
            "--event-kind",
            "delete",
            "--apply-deletes",
            "--outcomes",
            outcomes.to_str().unwrap(),
        ],
    );
    assert_eq!(code(ran.status), Some(0), "{}", ran.stderr);
    let existed = users.iter().filter(|u| is_preexisting(u, 0.5)).count();
    assert!(
        users.iter().all(|u| !s.emu().imported(u)),
        "every account is gone"
    );
    let statuses: Vec<String> = json_lines(&outcomes)
        .iter()
        .map(|o| o["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses.len(), 200);
    assert_eq!(statuses.iter().filter(|s| *s == "deleted").count(), existed);
    assert_eq!(
        statuses.iter().filter(|s| *s == "already_absent").count(),
        200 - existed
    );
    assert!(
        ran.stderr.contains("deleted"),
        "the summary counts them: {}",
        ran.stderr
    );
    // At most 100 UserIDs a call.
    assert_eq!(count(&s.emu().stats().calls, "account_delete"), 2);

    // Typed lines: a user created, renamed, deleted and created again, in line order.
    let lines = [
        r#"{"type":"signup","UserID":"t-1","Nick":"a"}"#,
        r#"{"type":"renamed","UserID":"t-1","Nick":"b"}"#,
        r#"{"type":"gone","UserID":"t-1"}"#,
        r#"{"type":"signup","UserID":"t-1","Nick":"c"}"#,
        r#"{"type":"renamed","UserID":"t-2","Nick":"x"}"#,
    ];
    let typed = s.write("typed.jsonl", &(lines.join("\n") + "\n"));
    let ran = s.run(
        "typed",
        &typed,
        &[
            "--event-type-pointer",
            "/type",
            "--update-types",
            "renamed",
            "--delete-types",
            "gone",
            "--apply-deletes",
        ],
    );
    assert_eq!(code(ran.status), Some(0), "{}", ran.stderr);
    let nick = |u: &str| s.emu().profile(u).and_then(|p| p.nick);
    assert_eq!(nick("t-1").as_deref(), Some("c"));
    assert_eq!(
        nick("t-2").as_deref(),
        Some("x"),
        "an update creates a missing account"
    );
}
