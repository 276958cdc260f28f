//! Token bucket tests on paused time: exact, fast, and independent of machine load.

use std::sync::Arc;

use super::*;

#[tokio::test(start_paused = true)]
async fn burst_then_steady_rate() {
    let l = Limiter::new(10.0, 5);
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(l.acquire().await, Duration::ZERO);
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    for i in 1..=10u64 {
        l.acquire().await;
        let expected = Duration::from_millis(100 * i);
        let got = start.elapsed();
        assert!(
            got >= expected && got < expected + Duration::from_millis(2),
            "token {i}: {got:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn sustained_rate_never_exceeds_rate_plus_burst() {
    let l = Arc::new(Limiter::new(100.0, 10));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(10) {
        l.acquire().await;
        n += 1;
    }
    // 10 s × 100/s plus the initial burst, plus the one that crossed the line.
    assert!((1009..=1011).contains(&n), "{n}");
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let l = Arc::new(Limiter::new(10.0, 1));
    l.acquire().await; // empty the bucket
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (l, order) = (l.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            l.acquire().await;
            order.lock().unwrap().push(i);
        }));
        // Make arrival order deterministic.
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn raising_the_rate_wakes_a_waiter_early() {
    let l = Arc::new(Limiter::new(1.0, 1));
    l.acquire().await;
    let start = Instant::now();
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move { l.acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    l.set_ceiling(100.0);
    waiter.await.unwrap();
    // At 1/s it would take 1 s; after the change at 100 ms only ~10 ms more are needed.
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(l.rate(), 100.0);
}

#[tokio::test(start_paused = true)]
async fn lowering_the_ceiling_takes_effect_at_once() {
    let l = Limiter::new(100.0, 1);
    l.set_ceiling(10.0);
    assert_eq!(l.rate(), 10.0);
    assert_eq!(l.ceiling(), Some(10.0));
    l.acquire().await;
    let start = Instant::now();
    l.acquire().await;
    assert!(
        start.elapsed() >= Duration::from_millis(99),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_share_of_the_rate_is_a_share_of_the_burst() {
    // Three replicas with the app's budget of 40/s and burst 20 each take a third of both: together
    // they never hold more than the app's burst.
    let l = Limiter::new(40.0, 20);
    l.set_ceiling(40.0 / 3.0);
    let start = Instant::now();
    let mut immediate = 0;
    while l.try_acquire() {
        immediate += 1;
    }
    assert_eq!(immediate, 6, "a third of 20 tokens, whole ones");
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Idle time refills only up to the shared burst.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut refilled = 0;
    while l.try_acquire() {
        refilled += 1;
    }
    assert_eq!(refilled, 6);
    // The whole budget back (the other replicas left): the whole burst again, at least 1 token
    // however small the share.
    l.set_ceiling(40.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut full = 0;
    while l.try_acquire() {
        full += 1;
    }
    assert_eq!(full, 20);
    l.set_ceiling(0.5);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(l.try_acquire());
    assert!(!l.try_acquire());
}

#[tokio::test(start_paused = true)]
async fn frequency_limit_halves_then_recovers_additively() {
    let l = Limiter::new(200.0, 10);
    assert_eq!(l.on_frequency_limited(), 100.0);
    // Within the cooldown, a burst of answers from the same episode does not halve again.
    assert_eq!(l.on_frequency_limited(), 100.0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // 1.1 s of recovery at 5 % of the ceiling per second = +11.
    let r = l.rate();
    assert!((110.0..=111.1).contains(&r), "{r}");
    assert!((l.on_frequency_limited() - r / 2.0).abs() < 0.1);
    // Never below 5 % of the ceiling.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1001)).await;
        l.on_frequency_limited();
    }
    assert!(l.rate() >= 10.0 && l.rate() < 12.0, "{}", l.rate());
    // Full recovery takes ≤ 20 s and stops at the ceiling.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(l.rate(), 200.0);
}

#[tokio::test(start_paused = true)]
async fn slowed_limiter_really_hands_out_fewer_tokens() {
    let l = Limiter::new(100.0, 1);
    l.on_frequency_limited();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(1) {
        l.acquire().await;
        n += 1;
    }
    // 50/s recovering by 5/s: about 52 in the first second, far from 100.
    assert!((48..=56).contains(&n), "{n}");
}

#[tokio::test(start_paused = true)]
async fn try_acquire_does_not_wait() {
    let l = Limiter::new(2.0, 2);
    assert!(l.try_acquire());
    assert!(l.try_acquire());
    assert!(!l.try_acquire());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(l.try_acquire());
    assert!(!l.try_acquire());
}

#[tokio::test(start_paused = true)]
async fn unlimited_never_waits() {
    let l = Limiter::unlimited();
    for _ in 0..10_000 {
        assert_eq!(l.acquire().await, Duration::ZERO);
        assert!(l.try_acquire());
    }
    assert_eq!(l.ceiling(), None);
    assert!(l.on_frequency_limited().is_infinite());
}

#[tokio::test(start_paused = true)]
async fn time_to_token_takes_nothing_and_counts_the_waiters_ahead() {
    let l = Arc::new(Limiter::new(10.0, 2));
    assert!(l.has_token());
    assert_eq!(l.time_to_token(), Duration::ZERO);
    // Asking takes nothing: both tokens of the burst are still there.
    assert_eq!(l.acquire().await, Duration::ZERO);
    assert_eq!(l.acquire().await, Duration::ZERO);
    assert!(!l.has_token());
    assert_near(l.time_to_token(), 100);
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_near(l.time_to_token(), 60);
    // Two callers queue up: a new one would get the third token from now.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.acquire().await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_near(l.time_to_token(), 260);
    for w in waiters {
        w.await.unwrap();
    }
    assert_near(l.time_to_token(), 100);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(l.has_token());
    // Cancelled waiters do not stay counted.
    l.acquire().await;
    let cancelled = tokio::time::timeout(Duration::from_millis(10), l.acquire()).await;
    assert!(cancelled.is_err());
    assert_near(l.time_to_token(), 90);
    assert!(Limiter::unlimited().has_token());
}

/// `d` is `ms` milliseconds, give or take float rounding.
#[track_caller]
fn assert_near(d: Duration, ms: u64) {
    let want = Duration::from_millis(ms);
    let diff = d.abs_diff(want);
    assert!(diff < Duration::from_micros(10), "{d:?}, want {want:?}");
}
