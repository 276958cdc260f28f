//! The `rebalance` scenario: a second replica joins while the first works through a backlog.
//!
//! Replica A (`account-sync run`, a process of its own) reads a backlog of new users imported one
//! by one at a low budget — far more than it can finish within `--drain-timeout` — then replica B
//! joins the group. Figures: how long the group needed from B's start until B owned partitions
//! (the revocation's cost: under the classic protocol every member waits for the slowest
//! revocation), the outcome records written twice, and whether every record got its outcome.
//! `--worker-exe` runs another build's replicas, for before / after figures.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use super::{
    fresh_key, start_broker, start_emulator, topic_records, worker_command, BenchArgs, ChildGuard,
    Figures, Scenario,
};
use crate::chat::SecretKey;
use crate::devtools::demo::{self, Load};
use crate::devtools::emulator::EmulatorConfig;
use crate::shutdown::Shutdown;

const INPUT: &str = "signups-rebalance";
const OUTCOMES: &str = "outcomes-rebalance";
/// The app's single-import budget: slow enough that the backlog outlasts any drain timeout.
const IMPORT_RATE: f64 = 50.0;
/// How long A works alone before B joins.
const ALONE: Duration = Duration::from_secs(10);
/// How long the group gets to finish the backlog after B joined.
const FINISH_LIMIT: Duration = Duration::from_secs(600);

pub(super) async fn rebalance(a: &BenchArgs, f: &mut Figures, sd: &Shutdown) -> Result<(), String> {
    let s = Scenario::Rebalance.name();
    let users = a.events.unwrap_or(6_000);
    let partitions = a.partitions;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let worker_exe = a.worker_exe.clone().unwrap_or_else(|| exe.clone());
    f.setup(s, format!("broker (account-sync dev kafka) and two replicas ({}) in separate processes, emulator in the bench process (50 ± 20 ms); {users} new users waiting on {partitions} partitions, single imports, budget {IMPORT_RATE} imports/s, --drain-timeout 30s; B joins {} s after A started", worker_exe.display(), ALONE.as_secs()));
    let topics = [(INPUT, partitions), (OUTCOMES, partitions), (demo::DLQ, 1)];
    let (mut broker, brokers) = start_broker(&exe, &topics).await?;
    let key = fresh_key();
    let emulator = start_emulator(EmulatorConfig {
        sdkappid: demo::SDKAPPID,
        identifier: demo::ADMIN.into(),
        secret_key: Some(SecretKey::new(key.clone())),
        latency_ms: 50,
        latency_jitter_ms: 20,
        ..EmulatorConfig::default()
    })
    .await?;
    let load = Load {
        topic: INPUT.into(),
        events: users,
        rate: 0.0,
        bad_fraction: 0.0,
        hot: None,
        avro_schema_id: None,
        kinds: None,
    };
    demo::produce_load(&brokers, &load).await?;
    let replica = |name: &str| -> Result<(ChildGuard, u16), String> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("account-sync-bench-rebalance-{name}.log"));
        let log = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = worker_command(
            &worker_exe,
            &brokers,
            "bench-rebalance",
            (INPUT, OUTCOMES),
            &emulator.base_url(),
            &key,
            &format!("127.0.0.1:{port}"),
        );
        cmd.args(["--import-api", "single"])
            .args(["--import-rate", &IMPORT_RATE.to_string()])
            .args(["--drain-timeout", "30s"])
            // The mock broker waits up to the session timeout (less a second) for members to
            // rejoin in every rebalance round, where a real broker goes on once all have: a short
            // session keeps the mock's rounds from hiding the revocation's own cost.
            .args(["--kafka-property", "session.timeout.ms=6000"])
            .args(["--kafka-property", "heartbeat.interval.ms=500"])
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting replica {name}: {e}"))?;
        Ok((
            ChildGuard {
                child,
                name: "worker",
            },
            port,
        ))
    };
    let (mut replica_a, port_a) = replica("a")?;
    wait_for(sd, Duration::from_secs(60), || {
        replica_a.exited().is_some() || assigned(port_a).is_some_and(|n| n > 0.0)
    })
    .await?;
    if let Some(status) = replica_a.exited() {
        return Err(format!(
            "replica A exited ({status}); its log is in {}",
            std::env::temp_dir().display()
        ));
    }
    tokio::time::sleep(ALONE).await;
    let joined = Instant::now();
    let (mut replica_b, port_b) = replica("b")?;
    wait_for(sd, Duration::from_secs(120), || {
        assigned(port_b).is_some_and(|n| n > 0.0)
    })
    .await?;
    let settled = joined.elapsed();
    let revocation = scrape(port_a).map(|text| {
        let fate = |f: &str| {
            metric(
                &text,
                &format!("account_sync_revoked_records_total{{fate=\"{f}\"}}"),
            )
        };
        (
            metric(&text, "account_sync_revocation_drain_seconds_sum"),
            ["let_go", "awaited", "left"].map(|f| (f, fate(f))),
        )
    });
    let counter = outcome_reader(&brokers)?;
    // Done: at least one outcome per input record written, and neither replica holds a record.
    let idle =
        |port| scrape(port).and_then(|t| metric(&t, "account_sync_events_in_flight")) == Some(0.0);
    let finished = wait_for(sd, FINISH_LIMIT, || {
        topic_records(&counter, OUTCOMES, partitions).is_some_and(|n| n >= users)
            && idle(port_a)
            && idle(port_b)
    })
    .await;
    replica_a.terminate(Duration::from_secs(40));
    replica_b.terminate(Duration::from_secs(40));
    let (distinct, written) = distinct_outcomes(&counter, partitions);
    emulator.shutdown().await;
    broker.terminate(Duration::from_secs(10));
    f.add(
        s,
        "from B's start until B owned partitions",
        settled.as_secs_f64(),
        "s",
    );
    // A build without the revocation metrics reports none of these.
    if let Some((Some(took), fates)) = revocation {
        f.add(s, "A's revocation drain (its own metric)", took, "s");
        for (fate, n) in fates {
            if let Some(n) = n {
                f.add(
                    s,
                    &format!("  A's records of revoked partitions: {fate}"),
                    n,
                    "",
                );
            }
        }
    }
    f.add(
        s,
        "outcome records written twice",
        (written - distinct) as f64,
        "",
    );
    f.target(
        s,
        "input records with an outcome",
        distinct as f64,
        "",
        &format!("{users}"),
        finished.is_ok() && distinct == users,
    );
    Ok(())
}

/// A port free now on loopback, for a replica's admin server.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The replica's `/metrics` on `port`, or `None` while it does not answer.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    conn.take(4 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// A metric's value in a scrape: the first series of `name` (a name, or a name with its labels).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn assigned(port: u16) -> Option<f64> {
    metric(&scrape(port)?, "account_sync_assigned_partitions")
}

/// Polls `done` every 100 ms for up to `limit`.
async fn wait_for(
    sd: &Shutdown,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while !done() {
        if sd.is_triggered() {
            return Err("interrupted".into());
        }
        if started.elapsed() >= limit {
            return Err(format!("not within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn outcome_reader(brokers: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-rebalance-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("outcome reader: {e}"))
}

/// (input records with an outcome, outcome records) on the outcome topic, read from the start.
fn distinct_outcomes(reader: &BaseConsumer, partitions: i32) -> (u64, u64) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = tpl.add_partition_offset(OUTCOMES, p, rdkafka::Offset::Beginning);
    }
    if reader.assign(&tpl).is_err() {
        return (0, 0);
    }
    let mut ends: HashMap<i32, i64> = (0..partitions)
        .filter_map(|p| {
            let (_, high) = reader
                .fetch_watermarks(OUTCOMES, p, Duration::from_secs(5))
                .ok()?;
            Some((p, high))
        })
        .collect();
    ends.retain(|_, high| *high > 0);
    let mut sources = std::collections::HashSet::new();
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < deadline {
        let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
            ends.remove(&m.partition());
        }
        written += 1;
        let source = m
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .map(|v| (v["source_partition"].as_i64(), v["source_offset"].as_i64()));
        if let Some(source) = source {
            sources.insert(source);
        }
    }
    (sources.len() as u64, written)
}
