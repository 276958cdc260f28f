//! The retry budget of the transactional calls, on paused time, and when a batch commits.

use super::*;
use crate::kafka::txn_error::{CallError, ErrorClass, Stage, TxnFailure};

#[test]
fn the_budget_is_the_transaction_timeout() {
    let props = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let default = TxnTiming::from_properties(&[]);
    assert_eq!(default.budget, Duration::from_secs(60));
    assert_eq!(default.call_timeout, Duration::from_secs(6));
    // The last occurrence wins, as in librdkafka.
    let set = TxnTiming::from_properties(&props(&[
        ("transaction.timeout.ms", "30000"),
        ("linger.ms", "1"),
        ("transaction.timeout.ms", "10000"),
    ]));
    assert_eq!(set.budget, Duration::from_secs(10));
    assert_eq!(set.call_timeout, Duration::from_secs(1));
}

fn error(class: ErrorClass) -> CallError {
    CallError {
        stage: Stage::Commit,
        class,
        reason: "x".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_within_the_budget() {
    let timing = TxnTiming {
        budget: Duration::from_secs(10),
        call_timeout: Duration::from_secs(1),
    };
    let start = Instant::now();
    let mut retry = Retry::start(timing);
    let mut pauses = Vec::new();
    let failure = loop {
        let before = Instant::now();
        match retry.pause(error(ErrorClass::Retriable)).await {
            Ok(()) => pauses.push(before.elapsed()),
            Err(f) => break f,
        }
    };
    // 100 ms doubling to 2 s, each with up to 100% jitter: a delay d in [base, 2 × base) (backon
    // computes it in f32, so either end can be off by some ns). What the test sees is the sleep,
    // and tokio's timer fires on whole milliseconds: d rounded up to the next one. A d within a
    // millisecond of 2 × base (about one draw in 100 for the first pause) sleeps 2 × base
    // exactly, so the upper end is inclusive, plus one tick for backon's f32 error; the
    // assertion used to be `< 2 × base` and failed about 3 runs in 200.
    const TICK: Duration = Duration::from_millis(1);
    for (i, p) in pauses.iter().enumerate() {
        let base = (BACKOFF.initial * 2u32.pow(i as u32)).min(BACKOFF.max);
        assert!(
            *p >= base && *p <= base * 2 + TICK,
            "pause {i}: {p:?} from {base:?}"
        );
    }
    assert!(pauses.len() >= 4, "{pauses:?}");
    // It never sleeps past the deadline. A pause starts only if it ends before the deadline;
    // rounded up to the timer's millisecond it can end on the deadline itself (the deadline is
    // a whole number of milliseconds after the start here), never after it.
    assert!(start.elapsed() <= timing.budget, "{:?}", start.elapsed());
    assert_eq!(
        failure,
        TxnFailure::OutOfTime {
            budget: timing.budget,
            last: error(ErrorClass::Retriable)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn calls_get_a_share_of_the_budget_and_never_more_than_is_left() {
    let timing = TxnTiming {
        budget: Duration::from_secs(10),
        call_timeout: Duration::from_secs(1),
    };
    let retry = Retry::start(timing);
    assert_eq!(retry.call_timeout(), Duration::from_secs(1));
    tokio::time::advance(Duration::from_millis(9_600)).await;
    assert_eq!(retry.call_timeout(), Duration::from_millis(400));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(retry.call_timeout(), Duration::from_millis(1));
}

#[test]
fn a_batch_commits_at_once_only_when_it_holds_every_pending_record() {
    // A trickle: the window that just finished is all there is.
    assert!(commit_now(3, 3));
    // Records of a partition revoked meanwhile are in the batch but no longer pending.
    assert!(commit_now(1, 3));
    // Other windows (or the open one) still hold records: gather until the linger.
    assert!(!commit_now(250, 100));
    assert!(!commit_now(4, 3));
}
