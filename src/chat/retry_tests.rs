//! Retry behaviour, on paused time so backoff delays cost nothing and can be measured exactly.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::*;
use crate::chat::api::Api;
use crate::chat::withdraw::NotWithdrawn;

fn vendor(code: i64) -> ChatError {
    ChatError::Vendor {
        api: Api::AccountImport,
        code,
        info: "test".into(),
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        unknown_code_attempts: 3,
        max_elapsed: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    }
}

/// Runs a call whose attempts fail with `errors` in turn and then succeed.
async fn run(
    policy: &RetryPolicy,
    errors: Vec<ChatError>,
) -> (Attempted<&'static str>, Vec<Attempt>) {
    let seen = Mutex::new(Vec::new());
    let errors = Mutex::new(errors.into_iter());
    let result = with_retries(
        policy,
        || false,
        &NotWithdrawn,
        |a| {
            seen.lock().unwrap().push(a);
            let next = errors.lock().unwrap().next();
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok("done"),
                }
            }
        },
    )
    .await;
    (result, seen.into_inner().unwrap())
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_growing_backoff() {
    let start = Instant::now();
    let (r, seen) = run(
        &policy(),
        vec![
            vendor(70500),
            ChatError::Http {
                api: Api::AccountCheck,
                status: 502,
            },
        ],
    )
    .await;
    assert_eq!(r.result, Ok("done"));
    assert_eq!(r.attempts, 3);
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|a| !a.fresh_usersig));
    // Two delays: 100 ms and 200 ms before jitter; jitter adds at most one delay more each.
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_millis(600), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn frequency_limit_is_retried() {
    let (r, _) = run(&policy(), vec![vendor(60007), vendor(60007)]).await;
    assert_eq!(r.result, Ok("done"));
    assert_eq!(r.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded() {
    let (r, seen) = run(&policy(), vec![vendor(70169); 10]).await;
    assert_eq!(seen.len(), 5);
    assert_eq!(r.attempts, 5);
    let err = r.result.unwrap_err();
    assert!(
        matches!(err, ChatError::Exhausted { attempts: 5, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), FailureClass::Permanent);
    assert_eq!(err.vendor_code(), 70169);
}

#[tokio::test(start_paused = true)]
async fn total_time_is_bounded() {
    let p = RetryPolicy {
        max_attempts: 100,
        max_elapsed: Duration::from_secs(3),
        ..policy()
    };
    let start = Instant::now();
    let (r, seen) = run(&p, vec![vendor(70169); 100]).await;
    assert!(matches!(r.result, Err(ChatError::Exhausted { .. })));
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(seen.len() > 2 && seen.len() < 100, "{}", seen.len());
}

#[tokio::test(start_paused = true)]
async fn unknown_codes_get_a_small_budget() {
    let (r, seen) = run(&policy(), vec![vendor(99999); 10]).await;
    assert_eq!(seen.len(), 3);
    let err = r.result.unwrap_err();
    assert_eq!(err.class(), FailureClass::Permanent);
    assert_eq!(err.vendor_code(), 99999);
}

#[tokio::test(start_paused = true)]
async fn permanent_and_systemic_are_not_retried() {
    for code in [70402, 40601, 60003, 70398, 60010, 70050] {
        let (r, seen) = run(&policy(), vec![vendor(code); 5]).await;
        assert_eq!(seen.len(), 1, "code {code}");
        assert_eq!(r.result.unwrap_err().vendor_code(), code);
    }
}

#[tokio::test(start_paused = true)]
async fn usersig_error_regenerates_once_then_is_systemic() {
    let start = Instant::now();
    // Cured by regeneration.
    let (r, seen) = run(&policy(), vec![vendor(70001)]).await;
    assert_eq!(r.result, Ok("done"));
    assert_eq!(
        seen[1],
        Attempt {
            number: 2,
            fresh_usersig: true
        }
    );
    // Not cured: systemic after exactly one immediate retry.
    let (r, seen) = run(&policy(), vec![vendor(70009), vendor(70009), vendor(70009)]).await;
    assert_eq!(seen.len(), 2);
    let err = r.result.unwrap_err();
    assert_eq!(err.class(), FailureClass::Systemic);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "UserSig retries do not back off"
    );
}

#[tokio::test(start_paused = true)]
async fn usersig_regeneration_is_once_per_call_even_between_transient_errors() {
    let calls = AtomicU32::new(0);
    let r = with_retries(
        &policy(),
        || false,
        &NotWithdrawn,
        |a| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // sig error, transient, sig error again: the second sig error must be final.
                match n {
                    0 => Err(vendor(70052)),
                    1 => {
                        assert!(a.fresh_usersig);
                        Err(vendor(70500))
                    }
                    _ => Err::<(), _>(vendor(70052)),
                }
            }
        },
    )
    .await;
    assert_eq!(r.attempts, 3);
    assert_eq!(r.result.unwrap_err().class(), FailureClass::Systemic);
}

#[test]
fn validation_names_the_setting() {
    let bad = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    assert!(bad.validate().unwrap_err().contains("max attempts"));
    let bad = RetryPolicy {
        initial_backoff: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    assert!(bad.validate().unwrap_err().contains("backoff"));
    assert!(RetryPolicy::default().validate().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_held_api_ends_the_retries_at_once_without_hiding_other_errors() {
    let held = std::sync::atomic::AtomicBool::new(false);
    let calls = AtomicU32::new(0);
    let r = with_retries(
        &policy(),
        || held.load(Ordering::SeqCst),
        &NotWithdrawn,
        |_| {
            // The third failure finds the API held (an outage was declared meanwhile).
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                held.store(true, Ordering::SeqCst);
            }
            async { Err::<(), _>(vendor(70500)) }
        },
    )
    .await;
    assert_eq!(r.attempts, 2, "no retry once held");
    match r.result.unwrap_err() {
        ChatError::Exhausted { attempts: 2, last } => assert_eq!(last.vendor_code(), 70500),
        other => panic!("expected Exhausted, got {other:?}"),
    }
    // A permanent error is what it is, held or not.
    let r = with_retries(
        &policy(),
        || true,
        &NotWithdrawn,
        |_| async { Err::<(), _>(vendor(40601)) },
    )
    .await;
    assert_eq!(r.result.unwrap_err().vendor_code(), 40601);
}

/// A withdrawal ends a call in its backoff, and at once when its attempt says so; the attempts
/// made so far are counted.
#[tokio::test(start_paused = true)]
async fn a_withdrawal_ends_the_call_in_its_backoff() {
    use crate::chat::withdraw::Withdrawal;
    use futures_util::future::{BoxFuture, FutureExt};
    struct AfterFirst(std::sync::atomic::AtomicBool);
    impl Withdrawal for AfterFirst {
        fn sends(&self) -> bool {
            true
        }
        fn withdrawn(&self) -> BoxFuture<'_, ()> {
            async {
                while !self.0.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            .boxed()
        }
    }
    let w = AfterFirst(false.into());
    let started = tokio::time::Instant::now();
    let r = with_retries(
        &policy(),
        || false,
        &w,
        |_| {
            w.0.store(true, Ordering::SeqCst);
            async { Err::<(), _>(vendor(70500)) }
        },
    )
    .await;
    assert_eq!(r.attempts, 1);
    assert!(
        matches!(r.result, Err(ChatError::Withdrawn { .. })),
        "{r:?}"
    );
    assert!(
        started.elapsed() < policy().initial_backoff,
        "not after the backoff"
    );
    // An attempt that was withdrawn before it sent anything counts no attempt.
    let r = with_retries(
        &policy(),
        || false,
        &NotWithdrawn,
        |_| async {
            Err::<(), _>(ChatError::Withdrawn {
                api: Api::AccountCheck,
            })
        },
    )
    .await;
    assert_eq!(r.attempts, 0);
}
