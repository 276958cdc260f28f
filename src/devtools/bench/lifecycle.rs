//! The lifecycle scenarios: deletions at the vendor's ceiling, and a mixed stream of creates,
//! profile updates and deletes at a steady rate.
//!
//! - `ceiling-delete`: a backlog of deletions of accounts that exist (the emulator's
//!   `--existing-fraction 1`), the emulator enforcing 100 account_delete calls/s: users/s against
//!   100 calls × 100 UserIDs = 10,000/s (target ≥ 99 %), and the 60007 answers (target 0).
//! - `lifecycle-mix`: 5,000 events/s produced once the worker has joined, 80 % creates of new
//!   users, 15 % profile updates, 5 % deletes (half of the users exist, so half of the deletes
//!   find an account), at the vendor's limits: event → outcome read back p99 (target ≤ 200 ms),
//!   the outcomes by status, and the 60007 answers (target 0).

use super::{
    no_frequency_limit_answers, run_in_process, users_per_second_against, BenchArgs, Figures, Run,
    Scenario, VENDOR_DELETE_RATE, WINDOW,
};
use crate::devtools::demo::{self, KindMix};
use crate::shutdown::Shutdown;

/// Events per second of the mixed stream.
const MIX_RATE: f64 = 5_000.0;

/// The mixed stream's kinds.
const MIX: KindMix = KindMix {
    update: 0.15,
    delete: 0.05,
};

pub(super) async fn ceiling_delete(
    a: &BenchArgs,
    f: &mut Figures,
    sd: &Shutdown,
) -> Result<(), String> {
    let s = Scenario::CeilingDelete.name();
    let ceiling = VENDOR_DELETE_RATE * WINDOW;
    let mut run =
        Run::at_vendor_limits(a, a.events_for(Scenario::CeilingDelete, ceiling), 0.0, 1.0);
    run.kinds = Some(KindMix {
        update: 0.0,
        delete: 1.0,
    });
    f.setup(s, format!("{} deletions of existing accounts as a backlog; emulator and worker at 100 account_delete/s (100 UserIDs a call); API latency 50 ± 20 ms; --apply-deletes", run.events));
    let m = run_in_process(&run, sd).await?;
    users_per_second_against(
        f,
        s,
        &m,
        ceiling,
        "share of the 10,000 users/s delete ceiling",
    );
    let calls = m.summary.delete_calls;
    f.add(s, "account_delete calls", calls as f64, "");
    f.add(
        s,
        "users per account_delete call",
        m.summary.deleted as f64 / calls.max(1) as f64,
        "",
    );
    f.add(s, "deleted outcomes", m.summary.deleted as f64, "");
    no_frequency_limit_answers(f, s, &m);
    Ok(())
}

pub(super) async fn mix(a: &BenchArgs, f: &mut Figures, sd: &Shutdown) -> Result<(), String> {
    let s = Scenario::LifecycleMix.name();
    let mut run = Run::at_vendor_limits(
        a,
        a.events_for(Scenario::LifecycleMix, MIX_RATE),
        MIX_RATE,
        0.5,
    );
    run.kinds = Some(MIX);
    // Creates of new users arrive at 2,000/s: the batch import (auto), not single imports at
    // 200/s, keeps up with them.
    run.worker_flags = a.worker_flags.clone();
    f.setup(s, format!("{} events at {MIX_RATE} events/s (80 % creates of new users, 15 % profile updates, 5 % deletes; half the users exist), produced once the worker has joined; emulator and worker at the vendor's limits (100 check/s, 200 import/s, 100 multiaccount_import/s, 100 account_delete/s); API latency 50 ± 20 ms; percentiles over the events after the first 2 s", run.events));
    let m = run_in_process(&run, sd).await?;
    let p99 = demo::percentile(&m.latency_read_ms, 0.99);
    f.target(
        s,
        "event -> outcome read back, p99",
        p99,
        "ms",
        "<= 200 ms",
        p99 <= 200.0,
    );
    f.add(
        s,
        "event -> outcome read back, p50",
        demo::percentile(&m.latency_read_ms, 0.5),
        "ms",
    );
    let sum = &m.summary;
    for (status, n) in [
        ("imported", sum.imported),
        ("already_imported", sum.already_imported),
        ("updated", sum.updated),
        ("deleted", sum.deleted),
        ("already_absent", sum.already_absent),
        ("failed", sum.failed),
    ] {
        f.add(s, &format!("outcomes {status}"), n as f64, "");
    }
    no_frequency_limit_answers(f, s, &m);
    Ok(())
}
