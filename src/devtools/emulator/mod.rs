//! A faithful local Tencent Cloud Chat REST API, served over real HTTP on a real socket.
//!
//! The worker's tests, the demo and the benchmarks talk to this instead of the vendor, so it must
//! fail the way the vendor fails: it verifies the admin UserSig (TLSSigAPIv2), enforces the per-API
//! call limits with token buckets (answering 60007), validates bodies with the vendor's codes and
//! injects faults (latency, hangs, HTTP 502, transient codes) on demand.
//!
//! - `mod.rs`: [`EmulatorConfig`], [`is_preexisting`], [`Emulator`] and its [`EmulatorHandle`].
//! - `state.rs`: the accounts and the counters behind `GET /stats` ([`Stats`]).
//! - `faults.rs`: [`Faults`] and the seeded dice that decide them, and the hold
//!   ([`EmulatorHandle::hold`]): API requests held, not failed, until the test releases them.
//! - `broken.rs`: [`BrokenAnswer`]s: HTTP 200 answers that do not answer the request.
//! - `handlers.rs`: routing, request checking in the vendor's order, and the four APIs.
//!
//! Where the vendor's documentation (`docs/chat-api.md`) is silent, the choice made is documented
//! where it is made and listed in `docs/chat-api.md`, "The emulator's own choices".

mod accounts;
mod broken;
mod faults;
mod handlers;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::chat::api::Api;
use crate::chat::usersig::{self, SecretKey, UserSigError};
use crate::limiter::Limiter;

pub use accounts::{Profile, UserCall};
pub use broken::BrokenAnswer;
pub use faults::Faults;
pub use state::Stats;

use accounts::{AccountRules, Accounts};
use faults::{Dice, Hold};
use state::Counters;

/// Everything the emulator can be told, with defaults that behave like a healthy vendor.
///
/// Flattened into `account-sync dev chat-api` (and the demo), hence `clap::Args`. Knobs without
/// a vendor counterpart read `ACCOUNT_SYNC_EMULATOR_*` so they can never collide with the
/// worker's own `ACCOUNT_SYNC_*` variables when both run in one process.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorConfig {
    /// SDKAppID the emulated app has; requests for any other get 60006, like a wrong app would.
    #[arg(long, env = "ACCOUNT_SYNC_SDKAPPID", default_value_t = 1_400_000_000)]
    pub sdkappid: u64,

    /// The app admin's identifier; a valid UserSig of any other identifier gets 60010.
    #[arg(long, env = "ACCOUNT_SYNC_IDENTIFIER", default_value = "administrator")]
    pub identifier: String,

    /// Key that UserSigs are verified with. Never a flag (it would show in `ps`) and never printed
    /// (`SecretKey`'s Debug is redacted): the binary fills it from the environment or a file.
    #[arg(skip)]
    pub secret_key: Option<SecretKey>,

    /// account_check calls per second the app may make (vendor: 100); 0 = unlimited.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_CHECK_RATE",
        default_value_t = 100.0
    )]
    pub check_rate: f64,

    /// account_import calls per second (vendor: 200); 0 = unlimited.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_IMPORT_RATE",
        default_value_t = 200.0
    )]
    pub import_rate: f64,

    /// multiaccount_import calls per second (vendor: 100); 0 = unlimited.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_MULTI_IMPORT_RATE",
        default_value_t = 100.0
    )]
    pub multi_import_rate: f64,

    /// account_delete calls per second (vendor: 100); 0 = unlimited.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_DELETE_RATE",
        default_value_t = 100.0
    )]
    pub delete_rate: f64,

    /// Token-bucket capacity of every limited API: how big a burst is tolerated. Default: one
    /// second's worth of calls (the API's rate), which is how a per-second limit reads.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_RATE_BURST")]
    pub rate_burst: Option<u32>,

    /// Delay of every API request in ms, to model network and processing time.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Uniform ± spread of the delay in ms (never below zero), so answers come out of order.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_LATENCY_JITTER_MS",
        default_value_t = 0
    )]
    pub latency_jitter_ms: u64,

    /// Share (0..=1) of requests answered 70169 or 70500 with HTTP 200: transient vendor trouble.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_TRANSIENT_ERROR_RATE",
        default_value_t = 0.0
    )]
    pub transient_error_rate: f64,

    /// Share (0..=1) of requests answered HTTP 502 before any checking, like a failing gateway.
    #[arg(
        long = "http-502-rate",
        env = "ACCOUNT_SYNC_EMULATOR_HTTP_502_RATE",
        default_value_t = 0.0
    )]
    pub http_502_rate: f64,

    /// Share (0..=1) of requests held for --hang-ms before being processed: client timeouts.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_HANG_RATE", default_value_t = 0.0)]
    pub hang_rate: f64,

    /// How long a hung request is held, in ms (default longer than any sane client timeout).
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_HANG_MS", default_value_t = 30_000)]
    pub hang_ms: u64,

    /// A UserID whose import always fails with 70500 (transient) while everything else works: a
    /// poison record. Repeatable; the environment variable takes a comma-separated list.
    #[arg(
        long = "poison-user-id",
        env = "ACCOUNT_SYNC_EMULATOR_POISON_USER_IDS",
        value_delimiter = ','
    )]
    pub poison_user_id: Vec<String>,

    /// Answer every request HTTP 200 with something that is not an answer to it: a body without
    /// end, a trickled body, users nobody asked about, a proxy's page (see [`BrokenAnswer`]).
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_BROKEN_ANSWER", value_enum)]
    pub broken_answer: Option<BrokenAnswer>,

    /// Share (0..=1) of all UserIDs that exist before anyone imports them, so account_check has
    /// something to find; decided by [`is_preexisting`], so load generators can predict it.
    #[arg(
        long,
        env = "ACCOUNT_SYNC_EMULATOR_EXISTING_FRACTION",
        default_value_t = 0.0
    )]
    pub existing_fraction: f64,

    /// The edition's account limit: importing a new account once this many were imported in
    /// this run answers 70398 (a systemic fault the worker must pause on).
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_MAX_ACCOUNTS")]
    pub max_accounts: Option<u64>,

    /// Account deletion switched off for the app (a paid edition that has not switched it on in
    /// the console): every account_delete is answered 71000 and deletes nothing. Changed at run
    /// time with `EmulatorHandle::set_deletion_enabled`.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_DELETION_DISABLED")]
    pub deletion_disabled: bool,

    /// A paid edition: a UserID deleted during the run cannot be imported again (70399; the
    /// vendor's 3 months are longer than any run). Trial editions import it again at once.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_PAID_EDITION")]
    pub paid_edition: bool,

    /// Keep each account's profile and each user's log of calls (`EmulatorHandle::profile`,
    /// `user_log`), for tests of order and profiles. Off by default: memory then does not grow
    /// with the users a benchmark touches.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_USER_LOG")]
    pub user_log: bool,

    /// A word that makes a Nick containing it (case-sensitive substring) fail with 40005.
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(
        long = "sensitive-word",
        env = "ACCOUNT_SYNC_EMULATOR_SENSITIVE_WORDS",
        value_delimiter = ','
    )]
    pub sensitive_word: Vec<String>,

    /// Seed of the fault dice, so a failing fault scenario can be replayed.
    #[arg(long, env = "ACCOUNT_SYNC_EMULATOR_SEED")]
    pub seed: Option<u64>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            sdkappid: 1_400_000_000,
            identifier: "administrator".to_owned(),
            secret_key: None,
            check_rate: 100.0,
            import_rate: 200.0,
            multi_import_rate: 100.0,
            delete_rate: 100.0,
            rate_burst: None,
            latency_ms: 0,
            latency_jitter_ms: 0,
            transient_error_rate: 0.0,
            http_502_rate: 0.0,
            hang_rate: 0.0,
            hang_ms: 30_000,
            poison_user_id: Vec::new(),
            broken_answer: None,
            existing_fraction: 0.0,
            max_accounts: None,
            deletion_disabled: false,
            paid_edition: false,
            user_log: false,
            sensitive_word: Vec::new(),
            seed: None,
        }
    }
}

impl EmulatorConfig {
    /// Checks ranges, naming the offending flag. The secret key is checked by [`Emulator::start`]
    /// (it is not a flag).
    pub fn validate(&self) -> Result<(), String> {
        for (flag, rate) in [
            ("--check-rate", self.check_rate),
            ("--import-rate", self.import_rate),
            ("--multi-import-rate", self.multi_import_rate),
            ("--delete-rate", self.delete_rate),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!(
                    "{flag} must be a finite number >= 0 (0 = unlimited), got {rate}"
                ));
            }
        }
        for (flag, fraction) in [
            ("--transient-error-rate", self.transient_error_rate),
            ("--http-502-rate", self.http_502_rate),
            ("--hang-rate", self.hang_rate),
            ("--existing-fraction", self.existing_fraction),
        ] {
            if !(0.0..=1.0).contains(&fraction) {
                return Err(format!("{flag} must be between 0 and 1, got {fraction}"));
            }
        }
        if self.rate_burst == Some(0) {
            return Err("--rate-burst must be at least 1".to_owned());
        }
        if self.identifier.is_empty() {
            return Err("--identifier must not be empty".to_owned());
        }
        if self.sensitive_word.iter().any(String::is_empty) {
            // An empty word is contained in every Nick: every import would fail.
            return Err("--sensitive-word must not be empty".to_owned());
        }
        Ok(())
    }

    /// The run-time-changeable part of the configuration.
    pub fn faults(&self) -> Faults {
        Faults {
            latency_ms: self.latency_ms,
            latency_jitter_ms: self.latency_jitter_ms,
            transient_error_rate: self.transient_error_rate,
            http_502_rate: self.http_502_rate,
            hang_rate: self.hang_rate,
            hang_ms: self.hang_ms,
            poison_user_ids: self.poison_user_id.clone(),
            broken_answer: self.broken_answer,
        }
    }
}

/// Whether `user_id` counts as imported before the run, for an `existing_fraction` of `fraction`.
///
/// FNV-1a 64 of the UserID's bytes, its top 53 bits mapped to [0, 1), compared with `fraction`:
/// deterministic across runs and processes, so the demo's load generator and tests can predict
/// which events end `already_imported`.
pub fn is_preexisting(user_id: &str, fraction: f64) -> bool {
    if fraction <= 0.0 || fraction.is_nan() {
        return false;
    }
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = user_id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // FNV-1a barely moves its top bits when only the last bytes differ (sequential IDs such as
    // user-000001, user-000002 would all land on the same side); murmur3's fmix64 spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    unit < fraction
}

/// The emulator's entry points.
pub struct Emulator;

impl Emulator {
    /// Serves on an already-bound listener until `shutdown` resolves. The caller owns the socket
    /// and the signal, so a test or the CLI decides both.
    pub async fn serve(
        listener: TcpListener,
        config: EmulatorConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = Arc::new(Shared::new(&config)?);
        handlers::serve(listener, shared, shutdown).await
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`), spawns the server on the current tokio runtime and
    /// returns a handle to inspect and steer it.
    pub async fn start(
        config: EmulatorConfig,
        addr: SocketAddr,
    ) -> std::io::Result<EmulatorHandle> {
        let shared = Arc::new(Shared::new(&config)?);
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        // A dropped handle drops `tx`, which also resolves `rx`: a forgotten handle stops the server.
        let signal = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(handlers::serve(listener, Arc::clone(&shared), signal));
        tracing::info!(addr = %local_addr, sdkappid = config.sdkappid, "chat API emulator listening");
        Ok(EmulatorHandle {
            local_addr,
            shared,
            shutdown_tx: Some(tx),
            task,
        })
    }
}

/// A running emulator (from [`Emulator::start`]): its address, its counters, and the knobs a test
/// turns while it runs.
pub struct EmulatorHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// How long [`EmulatorHandle::shutdown`] waits for in-flight requests (a hung one may sleep for
/// `hang_ms`) before it cuts the server off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl EmulatorHandle {
    /// `http://IP:PORT`, the base URL to give the Chat client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The same counters `GET /stats` serves.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Replaces the fault knobs; requests already past a decision keep it.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Holds every API request that arrives from now on until [`Self::release`]: held, not
    /// failed — a held request is then processed as usual (latency, faults, checks), even if its
    /// client gave up meanwhile, as a hung one is. Requests already past the entrance go on.
    /// `GET /stats` is never held. For tests whose premise is "work is still in flight when
    /// something happens": holding makes it so, whatever the machine's speed.
    pub fn hold(&self) {
        self.shared.hold.set(true, None);
    }

    /// [`Self::hold`] for the requests to `apis` only; the others go on.
    pub fn hold_only(&self, apis: &[Api]) {
        self.shared.hold.set(true, Some(apis.to_vec()));
    }

    /// Ends [`Self::hold`]: the held requests go on, and new ones are no longer held.
    pub fn release(&self) {
        self.shared.hold.set(false, None);
    }

    /// API requests waiting for [`Self::release`] now.
    pub fn held(&self) -> u64 {
        self.shared.hold.held()
    }

    /// Replaces the key UserSigs are verified with (a systemic fault, then its fix).
    pub fn set_secret_key(&self, key: SecretKey) {
        let mut auth = self.shared.auth();
        auth.key = key;
        auth.verified = None;
    }

    /// Replaces the account_check and account_import limits (0, negative or NaN = unlimited).
    /// The new buckets start full, as after a quiet second.
    pub fn set_rates(&self, check: f64, import: f64) {
        let burst = self.shared.rate_burst;
        let mut limiters = self
            .shared
            .limiters
            .write()
            .unwrap_or_else(|e| e.into_inner());
        limiters[0] = limiter(check, burst);
        limiters[1] = limiter(import, burst);
    }

    /// Whether the account exists now: imported in this run or preexisting, and not deleted.
    pub fn imported(&self, user_id: &str) -> bool {
        self.shared.accounts().exists(user_id)
    }

    /// The account's profile now; `None` when it does not exist. Its fields are known only with
    /// `user_log` (else, and for an account the run never wrote, they are `None`).
    pub fn profile(&self, user_id: &str) -> Option<Profile> {
        self.shared.accounts().profile(user_id)
    }

    /// What each call did to `user_id`, in the order they were applied (with `user_log`).
    pub fn user_log(&self, user_id: &str) -> Vec<UserCall> {
        self.shared.accounts().log(user_id)
    }

    /// Switches account deletion on or off for the app (off: account_delete answers 71000).
    pub fn set_deletion_enabled(&self, enabled: bool) {
        self.shared
            .deletion_enabled
            .store(enabled, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops accepting, releases held requests, lets in-flight requests finish (at most
    /// [`SHUTDOWN_GRACE`]) and waits for the server task.
    pub async fn shutdown(mut self) {
        self.release();
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(%err, "chat API emulator stopped with an error"),
            Ok(Err(err)) => tracing::warn!(%err, "chat API emulator task failed"),
            Err(_) => {
                tracing::warn!("chat API emulator did not drain in time; aborting it");
                self.task.abort();
            }
        }
    }
}

/// A token bucket for `rate` calls/s; unlimited for 0 (and for values `Limiter::new` refuses).
fn limiter(rate: f64, burst: Option<u32>) -> Limiter {
    if rate > 0.0 && rate.is_finite() {
        // One second's worth by default; `as` saturates, and Limiter raises 0 to 1.
        let burst = burst.unwrap_or(rate.ceil() as u32);
        Limiter::new(rate, burst)
    } else {
        Limiter::unlimited()
    }
}

/// The limiter slot of an API.
fn limiter_slot(api: Api) -> usize {
    match api {
        Api::AccountCheck => 0,
        Api::AccountImport => 1,
        Api::MultiaccountImport => 2,
        Api::AccountDelete => 3,
    }
}

/// The key and a one-entry cache of the last UserSig that verified.
struct Auth {
    key: SecretKey,
    /// A client reuses one UserSig for hours, and inflating + HMAC on every call would dominate
    /// the benchmark's hot path. Cleared when the key changes; expiry is still checked per call.
    verified: Option<VerifiedSig>,
}

struct VerifiedSig {
    sig: String,
    sdkappid: u64,
    identifier: String,
    expires_at: u64,
}

impl Auth {
    /// [`usersig::verify`] with the cache in front; same answers.
    fn verify(
        &mut self,
        sig: &str,
        sdkappid: u64,
        identifier: &str,
        now: u64,
    ) -> Result<(), UserSigError> {
        if let Some(v) = &self.verified {
            if v.sig == sig && v.sdkappid == sdkappid && v.identifier == identifier {
                if now > v.expires_at {
                    return Err(UserSigError::Expired {
                        expired_at: v.expires_at,
                    });
                }
                return Ok(());
            }
        }
        let doc = usersig::verify(&self.key, sig, sdkappid, identifier, now)?;
        self.verified = Some(VerifiedSig {
            sig: sig.to_owned(),
            sdkappid,
            identifier: identifier.to_owned(),
            expires_at: doc.expires_at(),
        });
        Ok(())
    }
}

/// Everything the handlers share.
pub(crate) struct Shared {
    sdkappid: u64,
    identifier: String,
    sensitive_words: Vec<String>,
    rate_burst: Option<u32>,
    /// Key and verification cache under one lock, so a key change can never race a stale cache
    /// entry back in.
    auth: Mutex<Auth>,
    faults: RwLock<Faults>,
    /// Holding API requests (a test's knob, not a fault of the vendor's).
    hold: Hold,
    /// check, import, multiaccount_import, delete; `set_rates` replaces the first two.
    limiters: RwLock<[Limiter; 4]>,
    /// Off: account_delete answers 71000 (`set_deletion_enabled`).
    deletion_enabled: std::sync::atomic::AtomicBool,
    dice: Dice,
    accounts: Mutex<Accounts>,
    counters: Counters,
}

impl Shared {
    fn new(config: &EmulatorConfig) -> std::io::Result<Self> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        config.validate().map_err(invalid)?;
        let key = match &config.secret_key {
            Some(key) if !key.is_empty() => key.clone(),
            _ => {
                return Err(invalid(
                    "emulator needs a secret key: set ACCOUNT_SYNC_SECRET_KEY".to_owned(),
                ))
            }
        };
        Ok(Shared {
            sdkappid: config.sdkappid,
            identifier: config.identifier.clone(),
            sensitive_words: config.sensitive_word.clone(),
            rate_burst: config.rate_burst,
            auth: Mutex::new(Auth {
                key,
                verified: None,
            }),
            faults: RwLock::new(config.faults()),
            hold: Hold::new(),
            limiters: RwLock::new([
                limiter(config.check_rate, config.rate_burst),
                limiter(config.import_rate, config.rate_burst),
                limiter(config.multi_import_rate, config.rate_burst),
                limiter(config.delete_rate, config.rate_burst),
            ]),
            deletion_enabled: std::sync::atomic::AtomicBool::new(!config.deletion_disabled),
            dice: Dice::new(config.seed),
            accounts: Mutex::new(Accounts::new(AccountRules {
                existing_fraction: config.existing_fraction,
                max_accounts: config.max_accounts,
                paid_edition: config.paid_edition,
                user_log: config.user_log,
            })),
            counters: Counters::default(),
        })
    }

    // The locks below guard plain data that no panic can leave inconsistent; recover from
    // poisoning instead of turning one panicking request into a dead server.

    fn auth(&self) -> MutexGuard<'_, Auth> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accounts(&self) -> MutexGuard<'_, Accounts> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn deletion_enabled(&self) -> bool {
        self.deletion_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes a call token for `api`; false = over the limit.
    fn admit(&self, api: Api) -> bool {
        self.limiters.read().unwrap_or_else(|e| e.into_inner())[limiter_slot(api)].try_acquire()
    }

    fn stats(&self) -> Stats {
        let imported = self.accounts().imported_count();
        self.counters.snapshot(imported)
    }
}

#[cfg(test)]
mod tests;
