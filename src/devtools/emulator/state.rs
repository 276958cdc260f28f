//! The counters behind `GET /stats` (the accounts are in [`super::accounts`]).
//!
//! Per-API counters are atomics because every request touches them; the per-code maps sit behind
//! their own small mutexes because only failures touch them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::chat::api::Api;

/// 60007: over the per-API call frequency. Named because the counters single it out.
pub(crate) const CODE_FREQUENCY_LIMIT: i64 = 60007;

/// 71000: account deletion is not switched on for the app (`account_delete` while
/// `--deletion-disabled`; older vendor pages: "only trial apps can delete").
pub(crate) const CODE_DELETION_DISABLED: i64 = 71000;

/// Counters of one emulator run, as served by `GET /stats` and [`super::EmulatorHandle::stats`].
///
/// Tests and benchmarks compare these with what the worker believes it did, so every answer the
/// emulator gives is counted exactly once in one of `accepted`, `rejected_by_code` or `http_502`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Requests per API name that reached the handler, whatever their fate: the load the worker
    /// put on the "vendor". Every API appears, with 0 when unused, so dashboards need no defaults.
    pub calls: BTreeMap<String, u64>,
    /// Requests per API answered with ErrorCode 0: the calls that did useful work.
    pub accepted: BTreeMap<String, u64>,
    /// Requests per API answered 60007: shows whether the worker's limiter stays under the budget.
    pub rate_limited: BTreeMap<String, u64>,
    /// Answers per non-zero ErrorCode (decimal string key), all APIs together, 60007 included:
    /// which failure paths a test actually exercised.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Per-item failures (check/delete `ResultCode`s, `FailAccounts` of multiaccount_import) by
    /// code: these hide inside successful calls, so they need their own tally.
    pub item_failures_by_code: BTreeMap<String, u64>,
    /// Requests answered with HTTP 502 by the fault injector (not in `rejected_by_code`: there is
    /// no ErrorCode).
    pub http_502: u64,
    /// Requests the fault injector held for `hang_ms` (they are processed afterwards).
    pub hung: u64,
    /// Requests answered with a broken answer (`Faults::broken_answer`): streamed or proxy
    /// answers instead of the service's (not in `accepted`), or the service's answer mangled
    /// (also in `accepted` when it was one).
    #[serde(default)]
    pub broken_answers: u64,
    /// Requests answered 70169 / 70500 by the fault injector (also in `rejected_by_code`).
    pub transient_errors: u64,
    /// Accounts imported during this run and still present; preexisting ones are not counted.
    /// This is also the count the edition limit (`max_accounts`) applies to.
    pub imported_accounts: u64,
    /// Existing accounts whose Nick / FaceUrl a `multiaccount_import` overwrote (the vendor's
    /// batch import updates existing accounts): a worker that batch-imports only `NotImported`
    /// users keeps this at 0.
    #[serde(default)]
    pub profile_overwrites: u64,
}

/// Index of an API in the per-API counter arrays.
fn idx(api: Api) -> usize {
    match api {
        Api::AccountCheck => 0,
        Api::AccountImport => 1,
        Api::MultiaccountImport => 2,
        Api::AccountDelete => 3,
    }
}

/// The live counters; [`Counters::snapshot`] turns them into [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: [AtomicU64; 4],
    accepted: [AtomicU64; 4],
    rate_limited: [AtomicU64; 4],
    rejected_by_code: Mutex<HashMap<i64, u64>>,
    item_failures_by_code: Mutex<HashMap<i64, u64>>,
    http_502: AtomicU64,
    hung: AtomicU64,
    broken_answers: AtomicU64,
    transient_errors: AtomicU64,
    profile_overwrites: AtomicU64,
}

/// Bumps a code counter. Poisoning needs a panic inside `+= 1`; recover rather than cascade.
fn bump(map: &Mutex<HashMap<i64, u64>>, code: i64, n: u64) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(code)
        .or_default() += n;
}

fn by_code(map: &Mutex<HashMap<i64, u64>>) -> BTreeMap<String, u64> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.iter().map(|(code, n)| (code.to_string(), *n)).collect()
}

impl Counters {
    pub(crate) fn call(&self, api: Api) {
        self.calls[idx(api)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the ErrorCode a request was answered with.
    pub(crate) fn answered(&self, api: Api, code: i64) {
        if code == 0 {
            self.accepted[idx(api)].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if code == CODE_FREQUENCY_LIMIT {
            self.rate_limited[idx(api)].fetch_add(1, Ordering::Relaxed);
        }
        bump(&self.rejected_by_code, code, 1);
    }

    pub(crate) fn item_failure(&self, code: i64) {
        bump(&self.item_failures_by_code, code, 1);
    }

    pub(crate) fn http_502(&self) {
        self.http_502.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn broken_answer(&self) {
        self.broken_answers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hung(&self) {
        self.hung.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn transient(&self) {
        self.transient_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn profile_overwrite(&self) {
        self.profile_overwrites.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, imported_accounts: u64) -> Stats {
        let per_api = |arr: &[AtomicU64; 4]| {
            Api::ALL
                .iter()
                .map(|api| {
                    (
                        api.name().to_owned(),
                        arr[idx(*api)].load(Ordering::Relaxed),
                    )
                })
                .collect()
        };
        Stats {
            calls: per_api(&self.calls),
            accepted: per_api(&self.accepted),
            rate_limited: per_api(&self.rate_limited),
            rejected_by_code: by_code(&self.rejected_by_code),
            item_failures_by_code: by_code(&self.item_failures_by_code),
            http_502: self.http_502.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            broken_answers: self.broken_answers.load(Ordering::Relaxed),
            transient_errors: self.transient_errors.load(Ordering::Relaxed),
            imported_accounts,
            profile_overwrites: self.profile_overwrites.load(Ordering::Relaxed),
        }
    }
}
