//! The real [`ChatClient`] against the Chat API emulator over real HTTP on 127.0.0.1:0: results,
//! error classification, retries, rate limiting and secret hygiene, as the worker will see them.
//!
//! Real time throughout; the slowest tests are the client-side limiter test (~3 s) and the one
//! hang test (one request held past the 3.5 s client timeout).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use account_sync::chat::client::{ApiLimiters, CallObserver};
use account_sync::chat::health::is_availability_error;
use account_sync::chat::{
    usersig, Api, ChatClient, ChatError, CheckOutcome, CodeKind, FailureClass, ImportAccount,
    SecretKey,
};
use account_sync::devtools::emulator::{is_preexisting, BrokenAnswer, EmulatorConfig, Faults};
use account_sync::limiter::Limiter;
use futures_util::future::join_all;

use common::emulator::{
    client, client_with, count, emulator_config, start_emulator, wait_for_stats, ADMIN,
    REQUEST_TIMEOUT, SDKAPPID, SECRET,
};

/// Records what the client reports about each attempt.
#[derive(Default)]
struct Recorder {
    attempts: Mutex<Vec<(Api, Result<(), ChatError>)>>,
    usersigs: AtomicU32,
}

impl Recorder {
    fn results(&self) -> Vec<Result<(), ChatError>> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
}

impl CallObserver for Recorder {
    fn attempt(&self, api: Api, result: Result<(), &ChatError>, _latency: Duration) {
        self.attempts
            .lock()
            .unwrap()
            .push((api, result.map_err(Clone::clone)));
    }
    fn usersig_generated(&self, _expires_at: u64) {
        self.usersigs.fetch_add(1, Ordering::SeqCst);
    }
}

fn account(user_id: &str) -> ImportAccount<'_> {
    ImportAccount {
        user_id,
        nick: None,
        face_url: None,
    }
}

fn with_nick<'a>(user_id: &'a str, nick: &'a str) -> ImportAccount<'a> {
    ImportAccount {
        user_id,
        nick: Some(nick),
        face_url: None,
    }
}

/// The first `prefix{i}` for which `is_preexisting(.., fraction) == want`.
fn find_id(prefix: &str, fraction: f64, want: bool) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| is_preexisting(id, fraction) == want)
        .expect("an id of each kind among 10000")
}

/// Every text form of an error, for secret checks.
fn all_text(err: &ChatError) -> String {
    format!("{err} {err:?}")
}

// ---------------------------------------------------------------------------------------------
// account_check / account_import results
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_each_item_in_request_order() {
    let emu = start_emulator(EmulatorConfig {
        existing_fraction: 0.5,
        ..emulator_config()
    })
    .await;
    let c = client(&emu.base_url(), |_| {});
    let known = find_id("known-", 0.5, true);
    let unknown = find_id("unknown-", 0.5, false);
    let fresh = find_id("fresh-", 0.5, false);

    let imp = c.account_import(account(&fresh)).await;
    assert_eq!(imp.result, Ok(()));
    assert_eq!(imp.attempts, 1);

    // Duplicates included: one answer per requested item, in request order.
    let ids = [
        unknown.as_str(),
        known.as_str(),
        fresh.as_str(),
        unknown.as_str(),
        known.as_str(),
        fresh.as_str(),
    ];
    let got = c.account_check(&ids).await;
    assert_eq!(got.attempts, 1);
    use CheckOutcome::{Imported, NotImported};
    assert_eq!(
        got.result.unwrap(),
        vec![
            NotImported,
            Imported,
            Imported,
            NotImported,
            Imported,
            Imported
        ]
    );

    // A full call of 100 ids matches the emulator's deterministic preexisting set exactly.
    // (The ids vary at the front: `is_preexisting`'s FNV-1a top bits barely move when only the
    // last bytes differ, so `bulk-0..bulk-99` would all be preexisting at 0.5.)
    let many: Vec<String> = (0..100).map(|i| format!("{i}-bulk")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let got = c.account_check(&refs).await.result.unwrap();
    let expected: Vec<CheckOutcome> = many
        .iter()
        .map(|id| {
            if is_preexisting(id, 0.5) {
                Imported
            } else {
                NotImported
            }
        })
        .collect();
    assert_eq!(got, expected);
    let n_known = got.iter().filter(|o| **o == Imported).count();
    assert!(
        (20..=80).contains(&n_known),
        "about half preexisting, got {n_known}"
    );

    // A per-item failure (UserID over 32 bytes) stays on its item; the call succeeds.
    let long = "x".repeat(33);
    let got = c.account_check(&[known.as_str(), long.as_str()]).await;
    assert_eq!(got.attempts, 1);
    let got = got.result.unwrap();
    assert_eq!(got[0], Imported);
    match &got[1] {
        CheckOutcome::Failed { code, info } => {
            assert_eq!(*code, 70402);
            assert!(info.contains("33"), "{info}");
        }
        other => panic!("expected a failed item, got {other:?}"),
    }

    // Preconditions are refused before anything is sent.
    let before = emu.stats();
    let empty = c.account_check(&[]).await;
    assert_eq!(empty.attempts, 0);
    assert!(matches!(
        empty.result,
        Err(ChatError::InvalidRequest {
            api: Api::AccountCheck,
            ..
        })
    ));
    let too_many: Vec<&str> = (0..101).map(|_| known.as_str()).collect();
    let over = c.account_check(&too_many).await;
    assert_eq!(over.attempts, 0);
    assert_eq!(
        over.result.unwrap_err().class(),
        FailureClass::Permanent,
        "a broken precondition is never retried"
    );
    let after = emu.stats();
    assert_eq!(after.calls, before.calls, "nothing reached the emulator");
    assert_eq!(count(&after.accepted, "account_check"), 3);
    assert_eq!(count(&after.accepted, "account_import"), 1);
    assert_eq!(count(&after.item_failures_by_code, "70402"), 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_then_check_and_idempotent_reimport() {
    let emu = start_emulator(emulator_config()).await;
    let c = client(&emu.base_url(), |_| {});

    let before = c.account_check(&["alice"]).await;
    assert_eq!(before.result.unwrap(), vec![CheckOutcome::NotImported]);
    assert!(!emu.imported("alice"));

    let first = c
        .account_import(ImportAccount {
            user_id: "alice",
            nick: Some("Alice"),
            face_url: Some("https://example.com/a.png"),
        })
        .await;
    assert_eq!(first.result, Ok(()));
    assert_eq!(first.attempts, 1);
    assert!(emu.imported("alice"));

    let after = c.account_check(&["alice"]).await;
    assert_eq!(after.result.unwrap(), vec![CheckOutcome::Imported]);

    // The same account again (even with another profile): success, still one account.
    let again = c.account_import(with_nick("alice", "Alice 2")).await;
    assert_eq!(again.result, Ok(()));
    assert_eq!(again.attempts, 1);
    let stats = emu.stats();
    assert_eq!(stats.imported_accounts, 1);
    assert_eq!(count(&stats.accepted, "account_import"), 2);
    assert_eq!(count(&stats.calls, "account_import"), 2);
    assert!(stats.rejected_by_code.is_empty(), "{stats:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiaccount_import_reports_fail_accounts() {
    let emu = start_emulator(emulator_config()).await;
    let c = client(&emu.base_url(), |_| {});
    let big = "n".repeat(501);
    let accounts = [
        with_nick("m-ok-1", "fine"),
        with_nick("m-big", &big),
        account("m-ok-2"),
    ];
    let got = c.multiaccount_import(&accounts).await;
    assert_eq!(got.attempts, 1);
    assert_eq!(got.result.unwrap(), vec!["m-big".to_owned()]);
    assert!(emu.imported("m-ok-1"));
    assert!(emu.imported("m-ok-2"));
    assert!(!emu.imported("m-big"));
    let stats = emu.stats();
    assert_eq!(stats.imported_accounts, 2);
    assert_eq!(count(&stats.item_failures_by_code, "40601"), 1);
    assert_eq!(count(&stats.accepted, "multiaccount_import"), 1);

    // Empty batches are refused locally.
    let none = c.multiaccount_import(&[]).await;
    assert_eq!(none.attempts, 0);
    assert!(matches!(none.result, Err(ChatError::InvalidRequest { .. })));
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequency_limit_is_classified_and_slows_the_limiter() {
    let emu = start_emulator(EmulatorConfig {
        check_rate: 2.0,
        rate_burst: Some(2),
        ..emulator_config()
    })
    .await;

    // No client-side limit, no retries: the emulator's 60007 comes straight back.
    let c = client(&emu.base_url(), |cfg| cfg.retry.max_attempts = 1);
    let calls = (0..5).map(|i| {
        let c = c.clone();
        async move {
            let id = format!("rl-{i}");
            c.account_check(&[id.as_str()]).await
        }
    });
    let results = join_all(calls).await;
    let mut limited = 0;
    for r in &results {
        assert_eq!(r.attempts, 1);
        match &r.result {
            Ok(items) => assert_eq!(items, &vec![CheckOutcome::NotImported]),
            Err(err) => {
                limited += 1;
                assert_eq!(err.vendor_code(), 60007, "{err}");
                assert_eq!(err.code_kind(), Some(CodeKind::FrequencyLimit));
                // The budget of one attempt is spent: the error is wrapped, the inner one is the
                // frequency-limited vendor answer.
                let ChatError::Exhausted { attempts, last } = err else {
                    panic!("expected Exhausted, got {err:?}");
                };
                assert_eq!(*attempts, 1);
                assert_eq!(last.class(), FailureClass::FrequencyLimited);
                assert!(matches!(
                    **last,
                    ChatError::Vendor {
                        api: Api::AccountCheck,
                        code: 60007,
                        ..
                    }
                ));
            }
        }
    }
    // Burst of 2 at 2/s: at most 3 get through in the few ms the five calls take.
    assert!(
        (2..=3).contains(&(5 - limited)),
        "{limited} of 5 limited: {results:?}"
    );
    let stats = emu.stats();
    assert_eq!(count(&stats.rate_limited, "account_check"), limited as u64);
    assert_eq!(count(&stats.rejected_by_code, "60007"), limited as u64);

    // With a client-side limiter, a 60007 answer halves its rate.
    emu.set_rates(2.0, 200.0); // fresh, full buckets of 2
    let limiters = ApiLimiters {
        check: Arc::new(Limiter::new(100.0, 100)),
        ..ApiLimiters::unlimited()
    };
    let lc = client_with(
        &emu.base_url(),
        limiters,
        Arc::new(Recorder::default()),
        |cfg| cfg.retry.max_attempts = 1,
    );
    assert_eq!(lc.limiters().check.rate(), 100.0);
    let calls = (0..5).map(|i| {
        let lc = lc.clone();
        async move {
            let id = format!("rl2-{i}");
            lc.account_check(&[id.as_str()]).await
        }
    });
    let results = join_all(calls).await;
    let limited2 = results
        .iter()
        .filter(|r| r.result.as_ref().is_err_and(|e| e.vendor_code() == 60007))
        .count();
    assert!(limited2 >= 2, "{results:?}");
    let rate = lc.limiters().check.rate();
    // One decrease per second at most: 100 → 50, plus at most a little additive recovery.
    assert!(
        (50.0..55.0).contains(&rate),
        "limiter should have halved, rate = {rate}"
    );
    assert_eq!(lc.limiters().check.ceiling(), Some(100.0));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limiter_keeps_under_the_emulator_limit() {
    let emu = start_emulator(EmulatorConfig {
        check_rate: 20.0, // burst 20: one second's worth
        ..emulator_config()
    })
    .await;
    let limiters = ApiLimiters {
        check: Arc::new(Limiter::new(20.0, 2)),
        ..ApiLimiters::unlimited()
    };
    let c = client_with(
        &emu.base_url(),
        limiters,
        Arc::new(Recorder::default()),
        |_| {},
    );
    let started = Instant::now();
    let calls = (0..60).map(|i| {
        let c = c.clone();
        async move {
            let id = format!("lim-{i}");
            c.account_check(&[id.as_str()]).await
        }
    });
    let results = join_all(calls).await;
    let took = started.elapsed();
    for r in &results {
        assert_eq!(r.attempts, 1, "{r:?}");
        assert_eq!(r.result, Ok(vec![CheckOutcome::NotImported]));
    }
    // 2 at once, then 58 at 20/s: 2.9 s.
    assert!(took >= Duration::from_millis(2_500), "took only {took:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let stats = emu.stats();
    assert_eq!(count(&stats.rate_limited, "account_check"), 0, "{stats:?}");
    assert_eq!(count(&stats.accepted, "account_check"), 60);
    assert_eq!(c.limiters().check.rate(), 20.0, "never slowed down");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Systemic faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_is_systemic_after_one_regeneration() {
    let emu = start_emulator(emulator_config()).await;
    let rec = Arc::new(Recorder::default());
    let c = client_with(
        &emu.base_url(),
        ApiLimiters::unlimited(),
        rec.clone(),
        |cfg| cfg.secret_key = SecretKey::new("not-the-app-key"),
    );
    let got = c.account_check(&["someone"]).await;
    assert_eq!(got.attempts, 2, "one regeneration, then give up");
    let err = got.result.unwrap_err();
    assert_eq!(err.class(), FailureClass::Systemic);
    assert_eq!(err.vendor_code(), 70009);
    assert_eq!(err.code_kind(), Some(CodeKind::UserSig));
    assert!(err.is_usersig_error());
    assert!(
        matches!(err, ChatError::Vendor { .. }),
        "not wrapped: {err:?}"
    );
    assert_eq!(
        rec.usersigs.load(Ordering::SeqCst),
        2,
        "the second attempt used a newly generated UserSig"
    );
    assert_eq!(rec.results().len(), 2);
    let stats = emu.stats();
    assert_eq!(count(&stats.rejected_by_code, "70009"), 2);
    assert_eq!(count(&stats.accepted, "account_check"), 0);

    // Imports fail the same way and import nothing.
    let imp = c.account_import(account("someone")).await;
    assert_eq!(imp.attempts, 2);
    assert_eq!(imp.result.unwrap_err().class(), FailureClass::Systemic);
    assert!(!emu.imported("someone"));
    assert_eq!(count(&emu.stats().rejected_by_code, "70009"), 4);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admin_identifier_is_systemic_without_retry() {
    let emu = start_emulator(emulator_config()).await;
    // A valid UserSig (right key) for an identifier that is not the app admin.
    let c = client(&emu.base_url(), |cfg| cfg.identifier = "not_admin".into());
    let got = c.account_check(&["someone"]).await;
    assert_eq!(got.attempts, 1);
    let err = got.result.unwrap_err();
    assert_eq!(err.class(), FailureClass::Systemic);
    assert_eq!(err.vendor_code(), 60010);
    assert_eq!(err.code_kind(), Some(CodeKind::App));
    assert_eq!(count(&emu.stats().rejected_by_code, "60010"), 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edition_limit_is_systemic() {
    let emu = start_emulator(EmulatorConfig {
        max_accounts: Some(2),
        ..emulator_config()
    })
    .await;
    let c = client(&emu.base_url(), |_| {});
    assert_eq!(c.account_import(account("ed-1")).await.result, Ok(()));
    assert_eq!(c.account_import(account("ed-2")).await.result, Ok(()));
    let third = c.account_import(account("ed-3")).await;
    assert_eq!(third.attempts, 1);
    let err = third.result.unwrap_err();
    assert_eq!(err.vendor_code(), 70398);
    assert_eq!(err.class(), FailureClass::Systemic);
    assert!(!emu.imported("ed-3"));
    // Re-importing an existing account at the limit still succeeds (idempotent, nothing new).
    assert_eq!(c.account_import(account("ed-1")).await.result, Ok(()));
    let stats = emu.stats();
    assert_eq!(stats.imported_accounts, 2);
    assert_eq!(count(&stats.rejected_by_code, "70398"), 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_health_and_recovery() {
    let emu = start_emulator(emulator_config()).await;
    let c = client(&emu.base_url(), |_| {});
    assert_eq!(c.probe("probe-user").await, Ok(()));

    // The app's key is rotated under us: systemic, one attempt only (no retries in a probe).
    emu.set_secret_key(SecretKey::new("rotated-key"));
    let err = c.probe("probe-user").await.unwrap_err();
    assert_eq!(err.class(), FailureClass::Systemic);
    assert_eq!(err.vendor_code(), 70009);
    assert_eq!(count(&emu.stats().rejected_by_code, "70009"), 1);

    // Fixed again: the next probe succeeds.
    emu.set_secret_key(SecretKey::new(SECRET));
    assert_eq!(c.probe("probe-user").await, Ok(()));

    // A client with the wrong key fails its probe the same way.
    let bad = client(&emu.base_url(), |cfg| {
        cfg.secret_key = SecretKey::new("wrong")
    });
    let err = bad.probe("probe-user").await.unwrap_err();
    assert_eq!(err.class(), FailureClass::Systemic);
    assert!(err.is_usersig_error());
    let stats = emu.stats();
    assert_eq!(count(&stats.rejected_by_code, "70009"), 2);
    assert_eq!(count(&stats.accepted, "account_check"), 2);
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Permanent per-account faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_profile_fields_are_permanent() {
    let emu = start_emulator(emulator_config()).await;
    let c = client(&emu.base_url(), |_| {});

    let nick_501 = "n".repeat(501);
    let got = c.account_import(with_nick("big-nick", &nick_501)).await;
    assert_eq!(got.attempts, 1);
    let err = got.result.unwrap_err();
    assert_eq!(err.vendor_code(), 40601);
    assert_eq!(err.class(), FailureClass::Permanent);
    assert_eq!(err.code_kind(), Some(CodeKind::InvalidAccount));
    assert!(!emu.imported("big-nick"));

    // The limit is in bytes: 250 two-byte characters pass, one more byte does not.
    let nick_500 = "é".repeat(250);
    assert_eq!(nick_500.len(), 500);
    let ok = c.account_import(with_nick("nick-500", &nick_500)).await;
    assert_eq!(ok.result, Ok(()));
    let nick_501b = format!("{nick_500}x");
    let got = c.account_import(with_nick("nick-501b", &nick_501b)).await;
    assert_eq!(got.result.unwrap_err().vendor_code(), 40601);

    let face_501 = format!("https://example.com/{}", "f".repeat(481));
    assert_eq!(face_501.len(), 501);
    let got = c
        .account_import(ImportAccount {
            user_id: "big-face",
            nick: None,
            face_url: Some(&face_501),
        })
        .await;
    assert_eq!(got.attempts, 1);
    assert_eq!(got.result.unwrap_err().vendor_code(), 40601);

    let stats = emu.stats();
    assert_eq!(count(&stats.rejected_by_code, "40601"), 3);
    assert_eq!(stats.imported_accounts, 1);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_word_is_permanent() {
    let emu = start_emulator(EmulatorConfig {
        sensitive_word: vec!["forbidden".into()],
        ..emulator_config()
    })
    .await;
    let c = client(&emu.base_url(), |_| {});
    let got = c
        .account_import(with_nick("sw-1", "a forbidden nick"))
        .await;
    assert_eq!(got.attempts, 1);
    let err = got.result.unwrap_err();
    assert_eq!(err.vendor_code(), 40005);
    assert_eq!(err.class(), FailureClass::Permanent);
    assert!(!emu.imported("sw-1"));
    // Case-sensitive substring: a harmless variant goes through.
    let ok = c.account_import(with_nick("sw-2", "Forbidden")).await;
    assert_eq!(ok.result, Ok(()));
    assert_eq!(count(&emu.stats().rejected_by_code, "40005"), 1);
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Transient faults are retried
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_502_is_retried_until_it_clears() {
    let emu = start_emulator(EmulatorConfig {
        http_502_rate: 1.0,
        ..emulator_config()
    })
    .await;
    let rec = Arc::new(Recorder::default());
    let c = client_with(
        &emu.base_url(),
        ApiLimiters::unlimited(),
        rec.clone(),
        |_| {},
    );
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.account_import(account("gw-user")).await }
    });
    wait_for_stats(&emu, Duration::from_secs(3), "two 502 answers", |s| {
        s.http_502 >= 2
    })
    .await;
    emu.set_faults(Faults::default());
    let got = call.await.unwrap();
    assert_eq!(got.result, Ok(()));
    let stats = emu.stats();
    assert!(got.attempts >= 3, "attempts {}", got.attempts);
    assert_eq!(u64::from(got.attempts), stats.http_502 + 1);
    assert!(emu.imported("gw-user"));
    let results = rec.results();
    assert_eq!(results.len(), got.attempts as usize);
    assert!(results[..results.len() - 1].iter().all(|r| matches!(
        r,
        Err(ChatError::Http {
            api: Api::AccountImport,
            status: 502
        })
    )));
    assert_eq!(results.last(), Some(&Ok(())));
    emu.shutdown().await;
}

/// One attempt of each call against an emulator whose answers are broken as `kind` says: what
/// each attempt reported to the observer (so to the outage detector) and each call's last error.
async fn calls_against(kind: BrokenAnswer) -> (Vec<Result<(), ChatError>>, Vec<ChatError>) {
    let emu = start_emulator(EmulatorConfig {
        broken_answer: Some(kind),
        ..emulator_config()
    })
    .await;
    let rec = Arc::new(Recorder::default());
    let c = client_with(
        &emu.base_url(),
        ApiLimiters::unlimited(),
        rec.clone(),
        |c| {
            c.retry.max_attempts = 1;
        },
    );
    let last = |err: ChatError| match err {
        ChatError::Exhausted { last, .. } => *last,
        other => other,
    };
    let mut errors = Vec::new();
    let checked = c.account_check(&["u-1", "u-2", "u-3"]).await;
    errors.push(last(
        checked
            .result
            .expect_err("no check result from a broken answer"),
    ));
    let batch = [account("u-4"), account("u-5")];
    if let Err(e) = c.multiaccount_import(&batch).await.result {
        errors.push(last(e));
    }
    if let Err(e) = c.account_import(account("u-6")).await.result {
        errors.push(last(e));
    }
    emu.shutdown().await;
    (rec.results(), errors)
}

/// Every way an HTTP 200 can fail to answer the request is the API's failure: a retryable
/// availability error, reported to the outage detector as a failed attempt (never a success),
/// and never anybody's verdict. Answers that carry no items (a single import's) pass through the
/// mangling kinds unchanged and succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_does_not_answer_the_request_is_the_apis_failure() {
    use BrokenAnswer::*;
    for kind in [
        EndlessBody,
        HugeBody,
        ForeignUsers,
        MissingItems,
        DuplicateItems,
        UnknownStatus,
        HtmlPage,
        WrongTypes,
    ] {
        let (attempts, errors) = calls_against(kind).await;
        // Check, batch import and single import fail alike, but for the mangled kinds: their
        // single import's answer has no items to change.
        let failing = match kind {
            ForeignUsers => 2,
            MissingItems | DuplicateItems | UnknownStatus => 1,
            _ => 3,
        };
        assert_eq!(errors.len(), failing, "{kind:?}: {errors:?}");
        for err in &errors {
            assert!(
                matches!(err, ChatError::BadResponse { .. }),
                "{kind:?}: {err:?}"
            );
            assert_eq!(err.class(), FailureClass::Retryable, "{kind:?}");
            assert!(is_availability_error(err), "{kind:?}");
        }
        let failed = attempts.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, failing, "{kind:?}: the observer saw {attempts:?}");
        if matches!(kind, EndlessBody | HugeBody) {
            let text = errors[0].to_string();
            assert!(
                text.contains("account_check") && text.contains("limit of 262144 bytes"),
                "names the API and the limit: {text}"
            );
        }
    }
}

/// A body trickled without end is cut off by the request timeout, which covers the body too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_answer_ends_with_the_request_timeout() {
    let started = Instant::now();
    let (attempts, errors) = calls_against(BrokenAnswer::TrickledBody).await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, ChatError::Timeout { .. })),
        "{errors:?}"
    );
    assert!(attempts.iter().all(|r| r.is_err()));
    // Three calls, each ended by the 3.5 s timeout and not earlier.
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_codes_are_retried_until_they_clear() {
    let emu = start_emulator(EmulatorConfig {
        transient_error_rate: 1.0,
        ..emulator_config()
    })
    .await;
    let rec = Arc::new(Recorder::default());
    let c = client_with(
        &emu.base_url(),
        ApiLimiters::unlimited(),
        rec.clone(),
        |_| {},
    );
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.account_check(&["tr-user"]).await }
    });
    wait_for_stats(&emu, Duration::from_secs(3), "two transient answers", |s| {
        s.transient_errors >= 2
    })
    .await;
    emu.set_faults(Faults::default());
    let got = call.await.unwrap();
    assert_eq!(got.result, Ok(vec![CheckOutcome::NotImported]));
    let stats = emu.stats();
    assert!(got.attempts >= 3, "attempts {}", got.attempts);
    assert_eq!(u64::from(got.attempts), stats.transient_errors + 1);
    let codes = count(&stats.rejected_by_code, "70169") + count(&stats.rejected_by_code, "70500");
    assert_eq!(codes, stats.transient_errors, "{stats:?}");
    for r in &rec.results()[..got.attempts as usize - 1] {
        let err = r.as_ref().unwrap_err();
        assert_eq!(err.class(), FailureClass::Retryable);
        assert_eq!(err.code_kind(), Some(CodeKind::Transient));
        assert!([70169, 70500].contains(&err.vendor_code()), "{err}");
    }

    // An outage that outlasts the budget ends Exhausted, carrying the last transient code.
    emu.set_faults(Faults {
        transient_error_rate: 1.0,
        ..Faults::default()
    });
    let short = client(&emu.base_url(), |cfg| cfg.retry.max_attempts = 3);
    let got = short.account_check(&["tr-user"]).await;
    assert_eq!(got.attempts, 3);
    let err = got.result.unwrap_err();
    assert!(
        matches!(err, ChatError::Exhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), FailureClass::Permanent);
    assert_eq!(err.code_kind(), Some(CodeKind::Transient));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_retried_and_the_late_import_is_harmless() {
    let emu = start_emulator(EmulatorConfig {
        hang_rate: 1.0,
        hang_ms: 5_000,
        ..emulator_config()
    })
    .await;
    let rec = Arc::new(Recorder::default());
    let c = client_with(
        &emu.base_url(),
        ApiLimiters::unlimited(),
        rec.clone(),
        |_| {},
    );
    assert_eq!(c.config().request_timeout, Duration::from_millis(3_500));
    let started = Instant::now();
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.account_import(account("slow-user")).await }
    });
    // Only the first request hangs.
    wait_for_stats(&emu, Duration::from_secs(3), "one hung request", |s| {
        s.hung >= 1
    })
    .await;
    emu.set_faults(Faults::default());
    let got = call.await.unwrap();
    let took = started.elapsed();
    assert_eq!(got.result, Ok(()));
    assert_eq!(got.attempts, 2);
    // One timeout (3.5 s), then a success: two attempts say so. The upper end only has to tell
    // a second timeout apart (past 7 s), so it leaves the retry seconds, not the 1.4 s it used
    // to, which a loaded machine could take.
    assert!(
        took >= Duration::from_millis(3_400) && took < 2 * REQUEST_TIMEOUT,
        "one client timeout, then a quick success: {took:?}"
    );
    let results = rec.results();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0],
        Err(ChatError::Timeout {
            api: Api::AccountImport,
            timeout_ms: 3_500
        })
    );
    assert_eq!(
        results[0].as_ref().unwrap_err().class(),
        FailureClass::Retryable
    );
    assert_eq!(results[1], Ok(()));
    assert!(emu.imported("slow-user"));
    let stats = emu.stats();
    assert_eq!(stats.hung, 1);
    assert_eq!(stats.imported_accounts, 1);
    // Not shut down gracefully: the held request would keep shutdown waiting; dropping the handle
    // stops the server.
    drop(emu);
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// The UserSig `c` has cached (deterministic for the same issue time).
fn cached_sig(c: &ChatClient) -> String {
    let cfg = c.config();
    let validity = cfg.usersig_validity.as_secs();
    let issued = c.usersig_expires_at() - validity;
    let sig = usersig::generate(
        &cfg.secret_key,
        cfg.sdkappid,
        &cfg.identifier,
        issued,
        validity,
    );
    usersig::verify(
        &SecretKey::new(SECRET),
        sig.expose(),
        SDKAPPID,
        ADMIN,
        usersig::unix_now(),
    )
    .expect("the reconstructed sig is a valid one");
    sig.expose().to_owned()
}

fn assert_no_secrets(text: &str, sig: &str) {
    assert!(!text.contains(sig), "UserSig leaked: {text}");
    assert!(!text.contains(SECRET), "secret key leaked: {text}");
    let lower = text.to_ascii_lowercase();
    for needle in ["usersig=", "sdkappid=", "random="] {
        assert!(
            !lower.contains(needle),
            "query string leaked ({needle}): {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_carry_the_usersig_or_the_key() {
    // Connection refused: a port that was just released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = client(&format!("http://{closed}"), |cfg| {
        cfg.retry.max_attempts = 2
    });
    let got = c.account_check(&["someone"]).await;
    assert_eq!(got.attempts, 2);
    let err = got.result.unwrap_err();
    let ChatError::Exhausted { last, .. } = &err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert!(matches!(**last, ChatError::Connect { .. }), "{last:?}");
    assert_eq!(last.class(), FailureClass::Retryable);
    let text = all_text(&err);
    assert!(
        text.to_ascii_lowercase().contains("connect"),
        "the cause survives: {text}"
    );
    assert_no_secrets(&text, &cached_sig(&c));
    assert_no_secrets(&format!("{c:?} {:?}", c.config()), &cached_sig(&c));

    // HTTP 502 with an HTML body.
    let emu = start_emulator(EmulatorConfig {
        http_502_rate: 1.0,
        ..emulator_config()
    })
    .await;
    let c = client(&emu.base_url(), |cfg| cfg.retry.max_attempts = 2);
    let got = c.account_import(account("someone")).await;
    assert_eq!(got.attempts, 2);
    let err = got.result.unwrap_err();
    assert_eq!(err.vendor_code(), 0);
    let ChatError::Exhausted { last, .. } = &err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert_eq!(
        **last,
        ChatError::Http {
            api: Api::AccountImport,
            status: 502
        }
    );
    assert_no_secrets(&all_text(&err), &cached_sig(&c));
    assert_eq!(emu.stats().http_502, 2);

    // A vendor rejection of a wrong key: the emulator's info text, still no secrets.
    let bad = client(&emu.base_url(), |cfg| {
        cfg.secret_key = SecretKey::new("wrong-key-value")
    });
    emu.set_faults(Faults::default());
    let err = bad.account_check(&["someone"]).await.result.unwrap_err();
    assert_eq!(err.vendor_code(), 70009);
    let text = all_text(&err);
    assert!(!text.contains("wrong-key-value"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("usersig="), "{text}");
    emu.shutdown().await;
}
