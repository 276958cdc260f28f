//! The `account-sync` binary as a child process: started with its stderr in a log file, stopped
//! with a signal, killed if the test ends first. Shared by the tests that run the binary as users
//! and Kubernetes do.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::emulator::{ADMIN, SDKAPPID};
use super::kafka::{classic_group_flags, Topics};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_account-sync");

/// The classic session `run_args` asks of the mock (other brokers: `Broker::classic_session`).
pub const RUN_ARGS_SESSION: std::time::Duration = std::time::Duration::from_secs(4);

/// A child process that is killed (SIGKILL) if the test ends without stopping it.
pub struct Proc {
    pub child: Child,
    /// Its stderr (the logs).
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    /// Starts the binary with `args` and `env`, stdout piped, stderr to a fresh log file.
    pub fn spawn(name: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        Self::spawn_with(name, args, env, None)
    }

    /// As [`Proc::spawn`], with `input` written to its standard input (then closed).
    pub fn spawn_with_input(
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        input: Vec<u8>,
    ) -> Proc {
        Self::spawn_with(name, args, env, Some(input))
    }

    fn spawn_with(
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        input: Option<Vec<u8>>,
    ) -> Proc {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "proc-{}-{}-{name}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("log file"))
            .env_remove("ACCOUNT_SYNC_SECRET_KEY")
            .env_remove("ACCOUNT_SYNC_SECRET_KEY_FILE")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("binary starts");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin piped");
            // A thread, so that a child that reads slowly cannot block the test.
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut stdin, &input);
            });
        }
        Proc { child, log }
    }

    /// The first line the process prints (dev services print their address).
    pub fn first_line(&mut self) -> String {
        let mut line = String::new();
        BufReader::new(self.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .expect("reads stdout");
        line.trim().to_owned()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig}");
    }

    /// Sends `sig` and waits (at most `within`) for the exit.
    pub fn stop(&mut self, sig: &str, within: Duration) -> std::process::ExitStatus {
        self.signal(sig);
        self.wait(within, &format!("after {sig}"))
    }

    /// Waits (at most `within`, else panics saying `when`) for the process to exit by itself.
    pub fn wait(&mut self, within: Duration, when: &str) -> std::process::ExitStatus {
        self.exited_within(within).unwrap_or_else(|| {
            panic!(
                "no exit within {within:?} {when}; log: {}",
                self.log.display()
            )
        })
    }

    /// Waits (at most `within`) for the process to exit by itself; its status, or None.
    pub fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it printed on stdout (call once it has exited).
    pub fn stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(s) = self.child.stdout.as_mut() {
            std::io::Read::read_to_string(s, &mut out).expect("reads stdout");
        }
        out
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).expect("log file readable")
    }
}

/// `account-sync run` arguments for `topics` on `brokers`, plus `extra` (appended; the worker's
/// clap refuses a single-valued flag twice, so `extra` holds only flags not given here). The
/// classic group protocol's session settings are given unless `extra` asks for
/// `--group-protocol consumer` (see [`classic_group_flags`]).
pub fn run_args(
    brokers: &str,
    topics: &Topics,
    group: &str,
    api: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--brokers",
        brokers,
        "--group-id",
        group,
        "--input-topic",
        &topics.input,
        "--outcome-topic",
        &topics.outcomes,
        "--dlq-topic",
        &topics.dlq,
        "--window-linger",
        "50ms",
        "--commit-interval",
        "200ms",
        "--systemic-probe-interval",
        "100ms",
        "--import-api",
        "single",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The mock cluster waits up to session.timeout.ms − 1 s per rebalance round, and a killed
    // member holds its partitions until its session ends: short, but above the mock's fixed 3 s
    // first-round delay (a shorter session never lets the group form).
    a.extend(classic_group_flags(
        extra,
        RUN_ARGS_SESSION.as_millis() as u32,
        300,
    ));
    a.extend(chat_args(api));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The Chat API flags of the test app at `api` (the emulator's base URL), with retries fast
/// enough for tests: for any subcommand that flattens the worker's Chat settings.
pub fn chat_args(api: &str) -> Vec<String> {
    [
        "--sdkappid",
        &SDKAPPID.to_string(),
        "--identifier",
        ADMIN,
        "--api-base-url",
        api,
        "--request-timeout",
        "3500ms",
        "--retry-initial-backoff",
        "10ms",
        "--retry-max-backoff",
        "100ms",
    ]
    .map(String::from)
    .to_vec()
}
