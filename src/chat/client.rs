//! The HTTP client for the Chat REST API.
//!
//! One [`ChatClient`] per worker, cheap to clone. Every attempt of every call:
//! 1. waits for a token from the API's [`Limiter`] (retries spend vendor quota too);
//! 2. takes the cached admin UserSig, regenerated well before expiry or when the previous attempt
//!    got a UserSig error;
//! 3. POSTs JSON to `{base}/v4/im_open_login_svc/{api}?sdkappid=…&identifier=…&usersig=…&random=…&contenttype=json`
//!    with a fresh `random`, on a keep-alive pool;
//! 4. turns whatever happened into `Ok` or a classified [`ChatError`] — with no URL in it, since the
//!    URL carries the UserSig.
//!
//! Retry decisions are not made here but in [`super::retry`]; which domain a call goes to is
//! [`super::endpoint`]'s, and whether the API is up at all [`super::health`]'s — the client only
//! feeds both with the result of every attempt.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use serde::Serialize;

use super::answer::{self};
pub use super::answer::{CheckOutcome, DeleteOutcome};
use super::api::{
    self, Api, CheckRequest, DeleteRequest, ImportRequest, MultiImportRequest, UserIdItem,
};
use super::endpoint::{Domain, Endpoints};
use super::error::{describe_transport_error, ChatError, FailureClass};
use super::health::{ApiHealth, CallToken, OutageRule};
pub use super::retry::Attempted;
use super::retry::{with_retries, Attempt, RetryPolicy};
use super::usersig::{self, SecretKey, UserSig};
use super::withdraw::{NotWithdrawn, Withdrawal};
use crate::http::{read_bounded, BodyError};
use crate::limiter::Limiter;
use crate::shutdown::Shutdown;

/// The vendor's regional API domains and their backups (`docs/chat-api.md`, "Regional domains").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    China,
    Singapore,
    Seoul,
    Tokyo,
    Frankfurt,
    Mumbai,
    SiliconValley,
    Jakarta,
}

impl Region {
    /// Every region, for help texts.
    pub const ALL: [Region; 8] = [
        Region::China,
        Region::Singapore,
        Region::Seoul,
        Region::Tokyo,
        Region::Frankfurt,
        Region::Mumbai,
        Region::SiliconValley,
        Region::Jakarta,
    ];

    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Region::China => "china",
            Region::Singapore => "singapore",
            Region::Seoul => "seoul",
            Region::Tokyo => "tokyo",
            Region::Frankfurt => "frankfurt",
            Region::Mumbai => "mumbai",
            Region::SiliconValley => "silicon-valley",
            Region::Jakarta => "jakarta",
        }
    }

    /// The API domain.
    pub fn domain(self) -> &'static str {
        match self {
            Region::China => "console.tim.qq.com",
            Region::Singapore => "adminapisgp.im.qcloud.com",
            Region::Seoul => "adminapikr.im.qcloud.com",
            Region::Tokyo => "adminapijpn.im.qcloud.com",
            Region::Frankfurt => "adminapiger.im.qcloud.com",
            Region::Mumbai => "adminapiind.im.qcloud.com",
            Region::SiliconValley => "adminapiusa.im.qcloud.com",
            Region::Jakarta => "adminapiidn.im.qcloud.com",
        }
    }

    /// The backup domain the vendor lists for the region (none for Tokyo).
    pub fn backup_domain(self) -> Option<&'static str> {
        match self {
            Region::China => Some("adminapi.my-imcloud.com"),
            Region::Singapore => Some("adminapisgp.my-imcloud.com"),
            Region::Seoul => Some("adminapikr.my-imcloud.com"),
            Region::Tokyo => None,
            Region::Frankfurt => Some("adminapiger.my-imcloud.com"),
            Region::Mumbai => Some("adminapiind.my-imcloud.com"),
            Region::SiliconValley => Some("adminapiusa.my-imcloud.com"),
            Region::Jakarta => Some("adminapiidn.my-imcloud.com"),
        }
    }

    /// `https://{domain}`.
    pub fn base_url(self) -> Url {
        https(self.domain())
    }

    /// `https://{backup domain}`, where the region has one.
    pub fn backup_base_url(self) -> Option<Url> {
        self.backup_domain().map(https)
    }
}

fn https(domain: &str) -> Url {
    Url::parse(&format!("https://{domain}")).expect("static domains are valid URLs")
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Region::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Region::ALL.iter().map(|r| r.name()).collect();
                format!("unknown region {s:?}; expected one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks an explicit API base URL: `https://` anywhere; plain `http://` only on loopback (the
/// emulator) unless `allow_insecure_http`, because the UserSig travels in the query string.
pub fn parse_base_url(raw: &str, allow_insecure_http: bool) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("invalid API base URL {raw:?}: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "API base URL {raw:?} must not have a query string or fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("API base URL must not carry credentials".into());
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = url.host_str().is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if !loopback {
                if !allow_insecure_http {
                    return Err(format!(
                        "API base URL {raw:?} uses plain http:// on a non-loopback host; the UserSig \
                         would travel in clear text. Use https://, or set --allow-insecure-http"
                    ));
                }
                tracing::warn!(
                    base_url = %url,
                    "plain http:// to a non-loopback host: the admin UserSig travels in clear text"
                );
            }
        }
        other => {
            return Err(format!(
                "API base URL scheme must be https (or http on loopback), not {other:?}"
            ))
        }
    }
    Ok(url)
}

/// The default of [`ChatConfig::max_answer_bytes`]: 256 KiB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The smallest answer body limit accepted: room for the largest real answer.
const MIN_MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Everything the client needs. Built from the worker's configuration.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// The app's SDKAppID.
    pub sdkappid: u64,
    /// The app admin's identifier (UserID of an admin account).
    pub identifier: String,
    /// The app's secret key, for generating the UserSig locally.
    pub secret_key: SecretKey,
    /// `https://{regional domain}` or an explicit base (the emulator).
    pub base_url: Url,
    /// Where calls go while `base_url` fails at the transport or HTTP level (the region's backup
    /// domain by default); `None`: nowhere.
    pub backup_base_url: Option<Url>,
    /// When the API counts as unavailable (an outage: the worker pauses).
    pub outage: OutageRule,
    /// Per-request timeout; above the vendor's own ~3 s backend timeout. It covers the whole
    /// exchange, body included, so a body trickled byte by byte ends with it too.
    pub request_timeout: Duration,
    /// The longest answer body read, in bytes; a longer one is the API's fault (retryable, an
    /// availability error) and is never held beyond this. Well above the largest real answer
    /// (a 100-item `account_check` answer is about 15 KB), and small enough that every call in
    /// flight at once holding this much stays a bounded amount of memory.
    pub max_answer_bytes: usize,
    /// Validity written into each generated UserSig.
    pub usersig_validity: Duration,
    /// Regenerate the cached UserSig this long before it expires.
    pub usersig_refresh_margin: Duration,
    /// Retry budget and backoff.
    pub retry: RetryPolicy,
    /// Idle keep-alive connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl ChatConfig {
    /// Defaults for everything but the app's identity and endpoint.
    pub fn new(
        sdkappid: u64,
        identifier: impl Into<String>,
        secret_key: SecretKey,
        base_url: Url,
    ) -> Self {
        ChatConfig {
            sdkappid,
            identifier: identifier.into(),
            secret_key,
            base_url,
            backup_base_url: None,
            outage: OutageRule::default(),
            request_timeout: Duration::from_secs(10),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            usersig_validity: Duration::from_secs(180 * 86_400),
            usersig_refresh_margin: Duration::from_secs(3_600),
            retry: RetryPolicy::default(),
            pool_max_idle_per_host: 256,
        }
    }

    /// Checks the settings; each message names the setting and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.sdkappid == 0 {
            return Err("sdkappid must be set (the app's SDKAppID from the console)".into());
        }
        if self.identifier.is_empty() || !api::is_valid_user_id(&self.identifier) {
            return Err(format!(
                "identifier {:?} is not a valid admin UserID (1-32 characters of A-Z a-z 0-9 _ -)",
                self.identifier
            ));
        }
        if self.secret_key.is_empty() {
            return Err(
                "secret key is empty: set ACCOUNT_SYNC_SECRET_KEY or --secret-key-file".into(),
            );
        }
        if self.request_timeout <= Duration::from_secs(3) {
            return Err(format!(
                "request timeout {:?} must be longer than the vendor's 3 s backend timeout",
                self.request_timeout
            ));
        }
        if self.max_answer_bytes < MIN_MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer body limit {} must be at least {MIN_MAX_ANSWER_BYTES} bytes (a 100-item answer is about 15 KB)",
                self.max_answer_bytes
            ));
        }
        if self.usersig_refresh_margin >= self.usersig_validity {
            return Err("UserSig refresh margin must be shorter than the UserSig validity".into());
        }
        if self.usersig_validity < Duration::from_secs(300) {
            return Err("UserSig validity must be at least 5 minutes".into());
        }
        if self.backup_base_url.as_ref() == Some(&self.base_url) {
            return Err("--backup-api-base-url must differ from the API base URL".into());
        }
        self.outage.validate()?;
        self.retry.validate()
    }
}

/// The rate limiters the client passes every attempt through, one per rate-limited API.
#[derive(Debug, Clone)]
pub struct ApiLimiters {
    /// `account_check` (vendor: 100 calls/s).
    pub check: Arc<Limiter>,
    /// `account_import` (vendor: 200 calls/s).
    pub import: Arc<Limiter>,
    /// `multiaccount_import` (vendor: 100 calls/s).
    pub multi_import: Arc<Limiter>,
    /// `account_delete` (vendor: 100 calls/s).
    pub delete: Arc<Limiter>,
}

impl ApiLimiters {
    /// No limits at all (tests, the limits-off benchmark).
    pub fn unlimited() -> Self {
        ApiLimiters {
            check: Arc::new(Limiter::unlimited()),
            import: Arc::new(Limiter::unlimited()),
            multi_import: Arc::new(Limiter::unlimited()),
            delete: Arc::new(Limiter::unlimited()),
        }
    }

    /// The limiter for `api`; `None` for APIs the worker does not rate-limit.
    pub fn for_api(&self, api: Api) -> Option<&Limiter> {
        match api {
            Api::AccountCheck => Some(&self.check),
            Api::AccountImport => Some(&self.import),
            Api::MultiaccountImport => Some(&self.multi_import),
            Api::AccountDelete => Some(&self.delete),
        }
    }
}

/// Hooks the worker uses to watch calls (metrics); every method has a no-op default.
pub trait CallObserver: Send + Sync + 'static {
    /// One attempt finished: `Ok` or the error's class, and how long the HTTP exchange took.
    fn attempt(&self, _api: Api, _result: Result<(), &ChatError>, _latency: Duration) {}
    /// An attempt after the first (a retry) of a call to `api` is about to start.
    fn retry(&self, _api: Api) {}
    /// An attempt waited this long for a limiter token.
    fn limiter_wait(&self, _api: Api, _waited: Duration) {}
    /// The limiter of `api` runs at this many calls per second now (after each token, and after
    /// a frequency-limit answer slowed it down).
    fn limiter_rate(&self, _api: Api, _rate: f64) {}
    /// A new UserSig was generated; it expires at this Unix time.
    fn usersig_generated(&self, _expires_at: u64) {}
    /// Calls go to `domain` from now on: `switched` from the other one, or (once, at start) the
    /// primary.
    fn domain_in_use(&self, _domain: Domain, _switched: bool) {}
}

/// The default observer: watches nothing.
#[derive(Debug, Default)]
pub struct NoObserver;
impl CallObserver for NoObserver {}

/// An account to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportAccount<'a> {
    /// The UserID (already validated by the decoder).
    pub user_id: &'a str,
    /// Optional nickname.
    pub nick: Option<&'a str>,
    /// Optional avatar URL.
    pub face_url: Option<&'a str>,
}

/// The cached admin UserSig.
struct CachedSig {
    sig: UserSig,
    /// Unix second at which the sig expires.
    expires_at: u64,
}

struct Inner {
    config: ChatConfig,
    http: reqwest::Client,
    endpoints: Endpoints,
    health: ApiHealth,
    limiters: ApiLimiters,
    observer: Arc<dyn CallObserver>,
    sig: Mutex<Option<CachedSig>>,
}

/// The Chat REST client. Clones share one connection pool, one UserSig cache and the limiters.
#[derive(Clone)]
pub struct ChatClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatClient")
            .field("base_url", &self.inner.config.base_url.as_str())
            .field("sdkappid", &self.inner.config.sdkappid)
            .field("identifier", &self.inner.config.identifier)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    /// Builds the client (validates the config, builds the connection pool).
    pub fn new(
        config: ChatConfig,
        limiters: ApiLimiters,
        observer: Arc<dyn CallObserver>,
    ) -> Result<Self, String> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("account-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                format!(
                    "cannot build the HTTP client: {}",
                    describe_transport_error(e)
                )
            })?;
        observer.domain_in_use(Domain::Primary, false);
        Ok(ChatClient {
            inner: Arc::new(Inner {
                endpoints: Endpoints::new(config.base_url.clone(), config.backup_base_url.clone()),
                health: ApiHealth::new(config.outage),
                config,
                http,
                limiters,
                observer,
                sig: Mutex::new(None),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ChatConfig {
        &self.inner.config
    }

    /// The outage detector (the pipeline asks it whether a failed call is the API's fault).
    pub fn health(&self) -> &ApiHealth {
        &self.inner.health
    }

    /// The domain calls go to now.
    pub fn domain(&self) -> Domain {
        self.inner.endpoints.active().0
    }

    /// The limiters in use (the worker adjusts their ceilings on rebalance).
    pub fn limiters(&self) -> &ApiLimiters {
        &self.inner.limiters
    }

    /// Unix time at which the cached UserSig expires (generating one if none is cached yet).
    pub fn usersig_expires_at(&self) -> u64 {
        self.usersig(false).1
    }

    /// The cached UserSig, regenerated when `force`, missing, or within the refresh margin of expiry.
    fn usersig(&self, force: bool) -> (UserSig, u64) {
        let cfg = &self.inner.config;
        let now = usersig::unix_now();
        let mut cache = self.inner.sig.lock().unwrap_or_else(|e| e.into_inner());
        let fresh_enough =
            |c: &CachedSig| now + cfg.usersig_refresh_margin.as_secs() < c.expires_at;
        match cache.as_ref() {
            Some(c) if !force && fresh_enough(c) => (c.sig.clone(), c.expires_at),
            _ => {
                let expire = cfg.usersig_validity.as_secs();
                let sig =
                    usersig::generate(&cfg.secret_key, cfg.sdkappid, &cfg.identifier, now, expire);
                let expires_at = now + expire;
                *cache = Some(CachedSig {
                    sig: sig.clone(),
                    expires_at,
                });
                drop(cache);
                self.inner.observer.usersig_generated(expires_at);
                tracing::debug!(expires_at, "generated a new admin UserSig");
                (sig, expires_at)
            }
        }
    }

    /// The request URL for `api` on `base`. Contains the UserSig: never log it, never let it into
    /// an error.
    fn url(&self, base: &Url, api: Api, sig: &UserSig) -> Url {
        let cfg = &self.inner.config;
        let mut url = base.clone();
        url.set_path(&format!(
            "{}{}",
            base.path().trim_end_matches('/'),
            api.path()
        ));
        url.query_pairs_mut()
            .append_pair("sdkappid", &cfg.sdkappid.to_string())
            .append_pair("identifier", &cfg.identifier)
            .append_pair("usersig", sig.expose())
            .append_pair("random", &fastrand::u32(..).to_string())
            .append_pair("contenttype", "json");
        url
    }

    /// One attempt of `call`: limiter, UserSig, POST to the active domain (or `pin`), read the
    /// answer with `read` (see [`answer`]), classify; then the result goes to the endpoints
    /// (failover) and the outage detector — after `read`, so an answer that does not answer the
    /// request counts as the failure it is.
    async fn attempt<Req, T>(
        &self,
        api: Api,
        body: &Req,
        attempt: Attempt,
        of: OfCall<'_>,
        read: impl Fn(&[u8]) -> Result<T, ChatError>,
    ) -> Result<T, ChatError>
    where
        Req: Serialize + ?Sized,
    {
        let OfCall {
            call,
            pin,
            withdrawal,
        } = of;
        if attempt.number > 1 {
            self.inner.observer.retry(api);
        }
        if let Some(limiter) = self.inner.limiters.for_api(api) {
            let waited = tokio::select! {
                biased;
                () = withdrawal.withdrawn() => return Err(ChatError::Withdrawn { api }),
                waited = limiter.acquire() => waited,
            };
            self.inner.observer.limiter_wait(api, waited);
            self.inner.observer.limiter_rate(api, limiter.rate());
        }
        // From here the exchange is under way: a withdrawal waits for its answer.
        if !withdrawal.sends() {
            return Err(ChatError::Withdrawn { api });
        }
        let (sig, _) = self.usersig(attempt.fresh_usersig);
        let endpoints = &self.inner.endpoints;
        let domain = pin.unwrap_or_else(|| endpoints.active().0);
        let url = self.url(endpoints.url(domain), api, &sig);
        let body = serde_json::to_vec(body).map_err(|e| ChatError::InvalidRequest {
            api,
            detail: e.to_string(),
        })?;
        let started = tokio::time::Instant::now();
        let result = self.send(api, url, body).await;
        let latency = started.elapsed();
        let result = result.and_then(|bytes| read(&bytes));
        let outcome = result.as_ref().map(|_| ());
        self.inner.observer.attempt(api, outcome, latency);
        if let Some(to) = endpoints.record(domain, outcome) {
            tracing::warn!(
                %api,
                backup = %endpoints.url(to),
                error = %outcome.unwrap_err(),
                "Chat API primary domain failing; calls go to the backup domain"
            );
            self.inner.observer.domain_in_use(to, true);
        }
        if self.inner.health.record(api, outcome, call) {
            let rule = self.inner.health.rule();
            tracing::error!(
                %api,
                error = %outcome.unwrap_err(),
                no_success_for = ?rule.after,
                "Chat API unavailable: pausing until a probe succeeds"
            );
        }
        if let Err(err) = &result {
            if err.class() == FailureClass::FrequencyLimited {
                if let Some(limiter) = self.inner.limiters.for_api(api) {
                    let rate = limiter.on_frequency_limited();
                    self.inner.observer.limiter_rate(api, rate);
                    tracing::warn!(%api, code = err.vendor_code(), new_rate = rate, "frequency limit answer; slowing down");
                }
            }
        }
        result
    }

    /// The HTTP exchange: POSTs `body` and returns the answer's body, read with the
    /// `max_answer_bytes` bound, when the status is 200.
    async fn send(&self, api: Api, url: Url, body: Vec<u8>) -> Result<Vec<u8>, ChatError> {
        let timeout_ms = self.inner.config.request_timeout.as_millis() as u64;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ChatError::Timeout { api, timeout_ms }
            } else {
                ChatError::Connect {
                    api,
                    detail: describe_transport_error(e),
                }
            }
        };
        let response = self
            .inner
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(ChatError::Http { api, status });
        }
        match read_bounded(response, self.inner.config.max_answer_bytes).await {
            Ok(bytes) => Ok(bytes),
            Err(BodyError::Transport(e)) => Err(transport(e)),
            Err(too_long @ BodyError::TooLong { .. }) => Err(ChatError::BadResponse {
                api,
                detail: too_long.to_string(),
            }),
        }
    }

    /// `account_check` for up to 100 UserIDs, with retries. The result has one entry per requested
    /// UserID, in request order (duplicates included).
    pub async fn account_check(&self, user_ids: &[&str]) -> Attempted<Vec<CheckOutcome>> {
        self.account_check_unless_withdrawn(user_ids, &NotWithdrawn)
            .await
    }

    /// [`Self::account_check`] that `withdrawal` may give up between its HTTP exchanges (see
    /// [`super::withdraw`]); then it ends with [`ChatError::Withdrawn`].
    pub async fn account_check_unless_withdrawn(
        &self,
        user_ids: &[&str],
        withdrawal: &dyn Withdrawal,
    ) -> Attempted<Vec<CheckOutcome>> {
        let api = Api::AccountCheck;
        if let Some(refused) = refuse_item_count(api, user_ids.len(), "UserIDs") {
            return refused;
        }
        let request = CheckRequest {
            check_item: user_ids
                .iter()
                .map(|id| UserIdItem {
                    user_id: (*id).into(),
                })
                .collect(),
        };
        let read = |body: &[u8]| answer::check(user_ids, body);
        self.call(api, &request, read, withdrawal).await
    }

    /// `account_import` of one account, with retries. Importing an existing account succeeds.
    pub async fn account_import(&self, account: ImportAccount<'_>) -> Attempted<()> {
        self.account_import_unless_withdrawn(account, &NotWithdrawn)
            .await
    }

    /// [`Self::account_import`] that `withdrawal` may give up between its HTTP exchanges.
    pub async fn account_import_unless_withdrawn(
        &self,
        account: ImportAccount<'_>,
        withdrawal: &dyn Withdrawal,
    ) -> Attempted<()> {
        let request = ImportRequest {
            user_id: account.user_id.into(),
            nick: account.nick.map(Into::into),
            face_url: account.face_url.map(Into::into),
        };
        self.call(Api::AccountImport, &request, answer::import, withdrawal)
            .await
    }

    /// `multiaccount_import` of up to 100 accounts, with retries. Returns the UserIDs the vendor
    /// reports in `FailAccounts` (it gives no per-account reason).
    pub async fn multiaccount_import(
        &self,
        accounts: &[ImportAccount<'_>],
    ) -> Attempted<Vec<String>> {
        self.multiaccount_import_unless_withdrawn(accounts, &NotWithdrawn)
            .await
    }

    /// [`Self::multiaccount_import`] that `withdrawal` may give up between its HTTP exchanges.
    pub async fn multiaccount_import_unless_withdrawn(
        &self,
        accounts: &[ImportAccount<'_>],
        withdrawal: &dyn Withdrawal,
    ) -> Attempted<Vec<String>> {
        let api = Api::MultiaccountImport;
        if let Some(refused) = refuse_item_count(api, accounts.len(), "accounts") {
            return refused;
        }
        let request = MultiImportRequest {
            account_list: Some(
                accounts
                    .iter()
                    .map(|a| ImportRequest {
                        user_id: a.user_id.into(),
                        nick: a.nick.map(Into::into),
                        face_url: a.face_url.map(Into::into),
                    })
                    .collect(),
            ),
            accounts: None,
        };
        let sent: Vec<&str> = accounts.iter().map(|a| a.user_id).collect();
        let read = |body: &[u8]| answer::multi_import(&sent, body);
        self.call(api, &request, read, withdrawal).await
    }

    /// `account_delete` for up to 100 UserIDs, with retries. The result has one entry per
    /// requested UserID, in request order. Deleting cannot be undone: only the pipeline's delete
    /// stage calls it, and only with `--apply-deletes`.
    pub async fn account_delete_unless_withdrawn(
        &self,
        user_ids: &[&str],
        withdrawal: &dyn Withdrawal,
    ) -> Attempted<Vec<DeleteOutcome>> {
        let api = Api::AccountDelete;
        if let Some(refused) = refuse_item_count(api, user_ids.len(), "UserIDs") {
            return refused;
        }
        let request = DeleteRequest {
            delete_item: user_ids
                .iter()
                .map(|id| UserIdItem {
                    user_id: (*id).into(),
                })
                .collect(),
        };
        let read = |body: &[u8]| answer::delete(user_ids, body);
        self.call(api, &request, read, withdrawal).await
    }

    /// One logical call with retries: attempts until success or the retry logic gives up (at
    /// once while the API is unavailable); `read` turns an answer's body into the result.
    async fn call<Req, T>(
        &self,
        api: Api,
        request: &Req,
        read: impl Fn(&[u8]) -> Result<T, ChatError>,
        withdrawal: &dyn Withdrawal,
    ) -> Attempted<T>
    where
        Req: Serialize + ?Sized,
    {
        let call = CallToken::default();
        let health = &self.inner.health;
        with_retries(
            &self.inner.config.retry,
            || health.is_unavailable(),
            withdrawal,
            |attempt| {
                let (call, read) = (&call, &read);
                async move {
                    let of = OfCall {
                        call,
                        pin: None,
                        withdrawal,
                    };
                    self.attempt(api, request, attempt, of, read).await
                }
            },
        )
        .await
    }

    /// A single `account_check` attempt without retries: the systemic-fault probe. It still goes
    /// through the limiter and regenerates the UserSig first, since a probe is about "would it work
    /// now".
    pub async fn probe(&self, user_id: &str) -> Result<(), ChatError> {
        self.probe_domain(user_id, None).await
    }

    /// [`Self::probe`] on `domain` (`None`: the one in use).
    async fn probe_domain(&self, user_id: &str, pin: Option<Domain>) -> Result<(), ChatError> {
        let request = CheckRequest {
            check_item: vec![UserIdItem {
                user_id: user_id.into(),
            }],
        };
        self.attempt(
            Api::AccountCheck,
            &request,
            Attempt {
                number: 1,
                fresh_usersig: true,
            },
            OfCall {
                call: &CallToken::probe(),
                pin,
                withdrawal: &NotWithdrawn,
            },
            |body| answer::check(&[user_id], body),
        )
        .await?;
        Ok(())
    }

    /// While calls go to the backup domain, probes the primary every `interval` and sends calls
    /// back to it once a probe succeeds. Runs until `shutdown`; returns at once without a backup.
    pub async fn run_failback(&self, interval: Duration, shutdown: Shutdown) {
        let endpoints = &self.inner.endpoints;
        if !endpoints.has_backup() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait() => return,
            }
            if endpoints.active().0 != Domain::Backup {
                continue;
            }
            let admin = &self.inner.config.identifier;
            match self.probe_domain(admin, Some(Domain::Primary)).await {
                Ok(()) => {
                    if endpoints.fail_back() {
                        tracing::info!(primary = %endpoints.url(Domain::Primary), "Chat API primary domain answers again; calls go back to it");
                        self.inner.observer.domain_in_use(Domain::Primary, true);
                    }
                }
                Err(err) => tracing::debug!(error = %err, "primary domain still failing"),
            }
        }
    }
}

/// What an attempt belongs to.
#[derive(Clone, Copy)]
struct OfCall<'a> {
    /// The call's bookkeeping in the outage detector.
    call: &'a CallToken,
    /// The domain a probe is pinned to; `None`: the one in use.
    pin: Option<Domain>,
    /// Gives the call up between its exchanges.
    withdrawal: &'a dyn Withdrawal,
}

/// A call of `n` items (`what`) that no request may carry: none, or more than one call takes.
/// Refused before any attempt, as a bug of the caller's.
fn refuse_item_count<T>(api: Api, n: usize, what: &str) -> Option<Attempted<T>> {
    (n == 0 || n > api::MAX_IDS_PER_CALL).then(|| Attempted {
        result: Err(ChatError::InvalidRequest {
            api,
            detail: format!("{n} {what}; a call takes 1 to {}", api::MAX_IDS_PER_CALL),
        }),
        attempts: 0,
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
