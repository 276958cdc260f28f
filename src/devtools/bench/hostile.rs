//! The `hostile-api` scenario: the worker in a process of its own against an API that answers
//! HTTP 200 with things that are not answers — a body without end, a body trickled byte by byte,
//! answers about users nobody asked about — one phase after the other, then heals. Figures: the
//! worker's peak RSS after each phase, the records dead-lettered (the target is 0: none of it is
//! the records' fault) and the users imported once the API healed (the target is all of them).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use super::{
    fresh_key, proc_status_kib, start_broker, start_emulator, topic_records, worker_command,
    BenchArgs, ChildGuard, Figures, Scenario,
};
use crate::chat::SecretKey;
use crate::devtools::demo::{self, Load};
use crate::devtools::emulator::{BrokenAnswer, EmulatorConfig, EmulatorHandle, Faults};
use crate::shutdown::Shutdown;

/// The broken phases without `--broken-answer`, in order.
const PHASES: [BrokenAnswer; 3] = [
    BrokenAnswer::EndlessBody,
    BrokenAnswer::TrickledBody,
    BrokenAnswer::ForeignUsers,
];

/// What a phase's answers are, for the table.
fn described(kind: BrokenAnswer) -> &'static str {
    match kind {
        BrokenAnswer::EndlessBody => "a body without end",
        BrokenAnswer::HugeBody => "a body declaring 1 GiB",
        BrokenAnswer::TrickledBody => "a body trickled a byte per 50 ms",
        BrokenAnswer::ForeignUsers => "answers about users not asked about",
        BrokenAnswer::MissingItems => "answers missing users",
        BrokenAnswer::DuplicateItems => "answers naming users twice",
        BrokenAnswer::UnknownStatus => "an unknown AccountStatus",
        BrokenAnswer::HtmlPage => "a proxy's HTML page",
        BrokenAnswer::WrongTypes => "JSON of the wrong types",
    }
}

/// A worker past this much resident memory is stopped: the figure is then "at least".
const RSS_CEILING_KIB: u64 = 6 * 1024 * 1024;

/// How long the healed API gets to finish the backlog.
const HEAL_LIMIT: Duration = Duration::from_secs(180);

pub(super) async fn hostile_api(
    a: &BenchArgs,
    f: &mut Figures,
    sd: &Shutdown,
) -> Result<(), String> {
    let s = Scenario::HostileApi.name();
    let users = a.events.unwrap_or(2_000);
    let phase = Duration::from_secs_f64(a.duration(Scenario::HostileApi));
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let worker_exe = a.worker_exe.clone().unwrap_or_else(|| exe.clone());
    let partitions = a.partitions;
    let phases = if a.broken_answers.is_empty() {
        PHASES.to_vec()
    } else {
        a.broken_answers.clone()
    };
    let whats: Vec<&str> = phases.iter().map(|k| described(*k)).collect();
    f.setup(s, format!("broker (account-sync dev kafka) and worker ({}) in separate processes, emulator in the bench process at the vendor's limits; {users} new users waiting on {partitions} partitions; the API answers HTTP 200 with {} for {:.0} s each, then heals", worker_exe.display(), whats.join(", then "), phase.as_secs_f64()));
    let topics = [
        ("signups-hostile", partitions),
        ("outcomes-hostile", partitions),
        (demo::DLQ, 1),
    ];
    let (mut broker, brokers) = start_broker(&exe, &topics).await?;
    let key = fresh_key();
    let emulator = start_emulator(EmulatorConfig {
        sdkappid: demo::SDKAPPID,
        identifier: demo::ADMIN.into(),
        secret_key: Some(SecretKey::new(key.clone())),
        latency_ms: 50,
        latency_jitter_ms: 20,
        broken_answer: Some(phases[0]),
        ..EmulatorConfig::default()
    })
    .await?;
    demo::produce_load(
        &brokers,
        &Load {
            topic: "signups-hostile".into(),
            events: users,
            rate: 0.0,
            bad_fraction: 0.0,
            hot: None,
            avro_schema_id: None,
            kinds: None,
        },
    )
    .await?;
    let log = std::env::temp_dir().join("account-sync-bench-hostile-api.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    eprintln!("  worker log in {}", log.display());
    let mut cmd = worker_command(
        &worker_exe,
        &brokers,
        "bench-hostile-api",
        ("signups-hostile", "outcomes-hostile"),
        &emulator.base_url(),
        &key,
        "127.0.0.1:0",
    );
    cmd.stderr(Stdio::from(log_file));
    let mut worker = ChildGuard {
        child: cmd
            .spawn()
            .map_err(|e| format!("starting the worker: {e}"))?,
        name: "worker",
    };
    let counter: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .map_err(|e| format!("counting consumer: {e}"))?;
    let counter = Arc::new(counter);
    let watch = Watch {
        pid: worker.pid(),
        counter,
        partitions,
        shutdown: sd.clone(),
        peak_kib: AtomicU64::new(0),
    };

    for (i, kind) in phases.into_iter().enumerate() {
        let what = described(kind);
        if i > 0 {
            set_broken(&emulator, Some(kind));
        }
        let seen = watch.for_time(phase, &mut worker).await?;
        let over = if seen.capped { " (at least)" } else { "" };
        f.add(
            s,
            &format!("worker peak RSS after {what}{over}"),
            seen.peak_kib as f64 / 1024.0,
            "MiB",
        );
        if seen.capped {
            eprintln!("  the worker passed {RSS_CEILING_KIB} KiB and was stopped");
            return report_stopped(f, s, &seen, users);
        }
    }
    set_broken(&emulator, None);
    let healed = Instant::now();
    let seen = watch.until_outcomes(users, HEAL_LIMIT, &mut worker).await?;
    let took = healed.elapsed().as_secs_f64();
    worker.terminate(Duration::from_secs(40));
    let stats = emulator.stats();
    emulator.shutdown().await;
    broker.terminate(Duration::from_secs(10));
    report(f, s, &seen, users, stats.imported_accounts, took);
    Ok(())
}

fn set_broken(emulator: &EmulatorHandle, kind: Option<BrokenAnswer>) {
    emulator.set_faults(Faults {
        latency_ms: 50,
        latency_jitter_ms: 20,
        broken_answer: kind,
        ..Faults::default()
    });
}

fn report(f: &mut Figures, s: &str, seen: &Seen, users: u64, imported: u64, took: f64) {
    f.target(
        s,
        "worker peak RSS over the whole run",
        seen.peak_kib as f64 / 1024.0,
        "MiB",
        "<= 128 MiB",
        seen.peak_kib <= 128 * 1024,
    );
    f.target(
        s,
        "records dead-lettered",
        seen.dead_letters as f64,
        "",
        "0",
        seen.dead_letters == 0,
    );
    f.target(
        s,
        "users imported after the API healed",
        imported as f64,
        "",
        &format!("{users}"),
        imported == users,
    );
    f.add(s, "outcome records", seen.outcomes as f64, "");
    f.add(s, "seconds from healing to the last outcome", took, "s");
}

fn report_stopped(f: &mut Figures, s: &str, seen: &Seen, users: u64) -> Result<(), String> {
    f.target(
        s,
        "worker peak RSS over the whole run (at least; stopped)",
        seen.peak_kib as f64 / 1024.0,
        "MiB",
        "<= 128 MiB",
        false,
    );
    f.add(s, "records dead-lettered", seen.dead_letters as f64, "");
    f.add(
        s,
        "outcome records of the users",
        seen.outcomes as f64 / users as f64,
        "",
    );
    Ok(())
}

/// What the watch saw of the worker.
struct Seen {
    peak_kib: u64,
    outcomes: u64,
    dead_letters: u64,
    /// The worker went past [`RSS_CEILING_KIB`] and was killed.
    capped: bool,
}

/// Samples the worker process and the output topics.
struct Watch {
    pid: u32,
    counter: Arc<BaseConsumer>,
    partitions: i32,
    shutdown: Shutdown,
    /// The highest VmHWM read so far: a failed read (0) must not lower the figure.
    peak_kib: AtomicU64,
}

impl Watch {
    async fn for_time(&self, d: Duration, worker: &mut ChildGuard) -> Result<Seen, String> {
        self.sample_until(worker, |_, t| t >= d).await
    }

    async fn until_outcomes(
        &self,
        n: u64,
        limit: Duration,
        worker: &mut ChildGuard,
    ) -> Result<Seen, String> {
        self.sample_until(worker, |seen, t| seen.outcomes >= n || t >= limit)
            .await
    }

    /// Samples every 100 ms until `done(seen, elapsed)` or the worker passes the RSS ceiling.
    async fn sample_until(
        &self,
        worker: &mut ChildGuard,
        done: impl Fn(&Seen, Duration) -> bool,
    ) -> Result<Seen, String> {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(status) = worker.exited() {
                return Err(format!("the worker exited early ({status})"));
            }
            if self.shutdown.is_triggered() {
                worker.terminate(Duration::from_secs(10));
                return Err("interrupted".into());
            }
            let mut seen = self.sample().await;
            self.peak_kib.fetch_max(seen.peak_kib, Ordering::Relaxed);
            seen.peak_kib = self.peak_kib.load(Ordering::Relaxed);
            if seen.peak_kib > RSS_CEILING_KIB {
                let _ = worker.child.kill();
                return Ok(Seen {
                    capped: true,
                    ..seen
                });
            }
            if done(&seen, started.elapsed()) {
                return Ok(seen);
            }
        }
    }

    async fn sample(&self) -> Seen {
        let (counter, pid, partitions) = (self.counter.clone(), self.pid, self.partitions);
        tokio::task::spawn_blocking(move || Seen {
            peak_kib: proc_status_kib(pid, "VmHWM").unwrap_or(0),
            outcomes: topic_records(&counter, "outcomes-hostile", partitions).unwrap_or(0),
            dead_letters: topic_records(&counter, demo::DLQ, 1).unwrap_or(0),
            capped: false,
        })
        .await
        .unwrap_or(Seen {
            peak_kib: 0,
            outcomes: 0,
            dead_letters: 0,
            capped: false,
        })
    }
}
