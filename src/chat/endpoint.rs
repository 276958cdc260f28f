//! Which domain the calls go to: the region's primary domain, or its backup.
//!
//! The vendor serves the same API for the same app on a backup domain per region
//! (`docs/chat-api.md`, "Regional domains"). When the primary fails *at the transport or HTTP
//! level* (no connection, DNS, TLS, timeouts, non-200 answers) [`FAILOVER_AFTER`] times in a row,
//! calls go to the backup; an answer of the vendor itself (any `ErrorCode`) never causes a switch,
//! since the backup would give the same answer. Calls return to the primary when a probe of it
//! succeeds ([`super::ChatClient::run_failback`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use reqwest::Url;

use super::error::ChatError;

/// Consecutive transport-level failures of the primary before calls go to the backup: one
/// broken keep-alive connection is not a failing domain.
pub const FAILOVER_AFTER: u32 = 2;

/// One of the two domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The region's domain or `--api-base-url`.
    Primary,
    /// The region's backup domain or `--backup-api-base-url`.
    Backup,
}

impl Domain {
    /// Metric / log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Primary => "primary",
            Domain::Backup => "backup",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True for failures that say "this domain is not serving": the ones a backup can cure.
pub fn is_domain_failure(err: &ChatError) -> bool {
    matches!(
        err,
        ChatError::Http { .. }
            | ChatError::Timeout { .. }
            | ChatError::Connect { .. }
            | ChatError::BadResponse { .. }
    )
}

/// The two base URLs and which one is in use.
#[derive(Debug)]
pub struct Endpoints {
    primary: Url,
    backup: Option<Url>,
    on_backup: AtomicBool,
    /// Consecutive domain failures of the primary.
    primary_failures: AtomicU32,
}

impl Endpoints {
    /// Starts on the primary.
    pub fn new(primary: Url, backup: Option<Url>) -> Self {
        Endpoints {
            primary,
            backup,
            on_backup: AtomicBool::new(false),
            primary_failures: AtomicU32::new(0),
        }
    }

    /// The domain in use and its base URL.
    pub fn active(&self) -> (Domain, &Url) {
        match &self.backup {
            Some(b) if self.on_backup.load(Ordering::Relaxed) => (Domain::Backup, b),
            _ => (Domain::Primary, &self.primary),
        }
    }

    /// The base URL of `domain` (the primary's when there is no backup).
    pub fn url(&self, domain: Domain) -> &Url {
        match (domain, &self.backup) {
            (Domain::Backup, Some(b)) => b,
            _ => &self.primary,
        }
    }

    /// Whether a backup is configured.
    pub fn has_backup(&self) -> bool {
        self.backup.is_some()
    }

    /// Records an attempt's result on `domain`; returns the new domain when this switched.
    pub fn record(&self, domain: Domain, result: Result<(), &ChatError>) -> Option<Domain> {
        if domain != Domain::Primary {
            return None;
        }
        match result {
            Err(err) if is_domain_failure(err) => {
                let n = self.primary_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= FAILOVER_AFTER
                    && self.backup.is_some()
                    && !self.on_backup.swap(true, Ordering::Relaxed)
                {
                    return Some(Domain::Backup);
                }
                None
            }
            _ => {
                self.primary_failures.store(0, Ordering::Relaxed);
                None
            }
        }
    }

    /// Back to the primary (a probe of it succeeded); true when this switched.
    pub fn fail_back(&self) -> bool {
        self.primary_failures.store(0, Ordering::Relaxed);
        self.on_backup.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::api::Api;

    fn urls() -> (Url, Url) {
        (
            Url::parse("https://primary.example").unwrap(),
            Url::parse("https://backup.example").unwrap(),
        )
    }

    #[test]
    fn switches_after_consecutive_domain_failures_and_back_on_fail_back() {
        let (p, b) = urls();
        let e = Endpoints::new(p.clone(), Some(b.clone()));
        let refused = ChatError::Connect {
            api: Api::AccountCheck,
            detail: "refused".into(),
        };
        assert_eq!(e.active(), (Domain::Primary, &p));
        assert_eq!(e.record(Domain::Primary, Err(&refused)), None);
        // A success in between resets the count.
        assert_eq!(e.record(Domain::Primary, Ok(())), None);
        assert_eq!(e.record(Domain::Primary, Err(&refused)), None);
        assert_eq!(
            e.record(Domain::Primary, Err(&refused)),
            Some(Domain::Backup)
        );
        assert_eq!(e.active(), (Domain::Backup, &b));
        // Failures on the backup, or late failures of the primary, switch nothing.
        assert_eq!(e.record(Domain::Backup, Err(&refused)), None);
        assert_eq!(e.record(Domain::Primary, Err(&refused)), None);
        assert!(e.fail_back());
        assert!(!e.fail_back());
        assert_eq!(e.active(), (Domain::Primary, &p));
    }

    #[test]
    fn vendor_answers_never_switch_and_no_backup_means_no_switch() {
        let (p, b) = urls();
        let e = Endpoints::new(p.clone(), Some(b));
        let vendor = ChatError::Vendor {
            api: Api::AccountCheck,
            code: 70500,
            info: String::new(),
        };
        for _ in 0..5 {
            assert_eq!(e.record(Domain::Primary, Err(&vendor)), None);
        }
        assert_eq!(e.active().0, Domain::Primary);
        let alone = Endpoints::new(p, None);
        let bad = ChatError::Http {
            api: Api::AccountCheck,
            status: 502,
        };
        for _ in 0..5 {
            assert_eq!(alone.record(Domain::Primary, Err(&bad)), None);
        }
        assert_eq!(alone.active().0, Domain::Primary);
        assert!(!alone.has_backup());
    }
}
