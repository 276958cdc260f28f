//! Chat API emulator helpers for the integration tests: an emulator on 127.0.0.1:0 with a known
//! app, admin and secret key, and [`ChatClient`]s for it with retry settings fast enough for tests.
//!
//! Self-contained: other parts of `tests/common` (the Kafka helpers) do not depend on it, and a
//! test binary that uses only some of these helpers compiles without dead-code warnings.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use account_sync::chat::client::{parse_base_url, ApiLimiters, CallObserver, NoObserver};
use account_sync::chat::{ChatClient, ChatConfig, RetryPolicy, SecretKey};
use account_sync::devtools::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Stats};

/// SDKAppID of the emulated app (the emulator's default).
pub const SDKAPPID: u64 = 1_400_000_000;
/// The emulated app's admin identifier (the emulator's default).
pub const ADMIN: &str = "administrator";
/// The app's secret key, shared by emulator and clients.
pub const SECRET: &str = "it-secret-key-0123456789abcdef";
/// Seed of the emulator's fault dice, so a failing fault test replays the same decisions.
pub const SEED: u64 = 20_240_601;

/// Client request timeout for tests: the shortest the client's validation accepts (> 3 s) plus a
/// margin. Only the hang test ever waits for it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(3_500);

/// An emulator configuration for the test app: default limits and no faults, seeded dice.
pub fn emulator_config() -> EmulatorConfig {
    EmulatorConfig {
        sdkappid: SDKAPPID,
        identifier: ADMIN.to_owned(),
        secret_key: Some(SecretKey::new(SECRET)),
        seed: Some(SEED),
        ..EmulatorConfig::default()
    }
}

/// Starts an emulator on 127.0.0.1:0 on the current runtime. Fills in [`SECRET`] when `cfg` has
/// no secret key.
pub async fn start_emulator(mut cfg: EmulatorConfig) -> EmulatorHandle {
    if cfg.secret_key.is_none() {
        cfg.secret_key = Some(SecretKey::new(SECRET));
    }
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("static address");
    Emulator::start(cfg, addr)
        .await
        .expect("chat API emulator starts on 127.0.0.1:0")
}

/// Retries tuned for tests: quick backoff (10 ms doubling to 100 ms), 10 attempts, 20 s budget.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        unknown_code_attempts: 3,
        max_elapsed: Duration::from_secs(20),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    }
}

/// A client configuration for the test app at `base_url`, with [`fast_retry`] and
/// [`REQUEST_TIMEOUT`].
pub fn client_config(base_url: &str) -> ChatConfig {
    let url = parse_base_url(base_url, false).expect("emulator base URL is loopback http");
    let mut cfg = ChatConfig::new(SDKAPPID, ADMIN, SecretKey::new(SECRET), url);
    cfg.request_timeout = REQUEST_TIMEOUT;
    cfg.retry = fast_retry();
    cfg
}

/// A client for `base_url` without client-side rate limits; `tweak` adjusts the configuration.
pub fn client(base_url: &str, tweak: impl FnOnce(&mut ChatConfig)) -> ChatClient {
    client_with(
        base_url,
        ApiLimiters::unlimited(),
        Arc::new(NoObserver),
        tweak,
    )
}

/// A client with the given limiters and observer; `tweak` adjusts the configuration.
pub fn client_with(
    base_url: &str,
    limiters: ApiLimiters,
    observer: Arc<dyn CallObserver>,
    tweak: impl FnOnce(&mut ChatConfig),
) -> ChatClient {
    let mut cfg = client_config(base_url);
    tweak(&mut cfg);
    ChatClient::new(cfg, limiters, observer).expect("valid test client configuration")
}

/// Polls the emulator's counters every 5 ms until `pred` holds; panics after `within`.
pub async fn wait_for_stats(
    handle: &EmulatorHandle,
    within: Duration,
    what: &str,
    pred: impl Fn(&Stats) -> bool,
) -> Stats {
    let deadline = Instant::now() + within;
    loop {
        let stats = handle.stats();
        if pred(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; stats: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A counter from one of the emulator's per-API or per-code maps, 0 when absent.
pub fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}
