//! Every way a Chat API call can fail, classified once, here.
//!
//! The table is the code table of `docs/chat-api.md` ("Error codes"). Code elsewhere asks a [`ChatError`] for its [`FailureClass`] and never looks at numbers itself.

use std::fmt;

use super::api::Api;

/// What the worker does about a failure (`docs/ARCHITECTURE.md`, "Failure classes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Transient server trouble: retry with backoff.
    Retryable,
    /// Over the vendor's call frequency: retry with backoff and slow the limiter down.
    FrequencyLimited,
    /// This one account's data (or this one request) is bad: dead-letter it, the rest goes on.
    Permanent,
    /// Every further call would fail the same way: stop consuming, keep offsets, probe later.
    Systemic,
}

impl FailureClass {
    /// Metric / log label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Retryable => "retryable",
            FailureClass::FrequencyLimited => "frequency_limited",
            FailureClass::Permanent => "permanent",
            FailureClass::Systemic => "systemic",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Finer grouping of vendor codes: the retry logic needs more than the class (a UserSig error is
/// systemic only after one regeneration; an unknown code is retried only a few times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeKind {
    /// 70169, 70202, 70500, 40006 (server timeout, internal error).
    Transient,
    /// 60007, 60011, 60018, 60019.
    FrequencyLimit,
    /// 70050: too many UserSig attempts; wait a minute.
    AuthThrottled,
    /// UserSig / identity problems: regenerate once, then systemic.
    UserSig,
    /// App invalid / disabled / expired, not an admin, edition limit, account deletion not
    /// switched on for the app (71000).
    App,
    /// This account cannot be imported: its data is invalid (70402, 40005, 40601), or it was
    /// deleted less than 3 months ago (70399).
    InvalidAccount,
    /// Our request is malformed: a bug on our side (60002, 60003, 60008, 60009, 60012, 60015).
    MalformedRequest,
    /// A code the table does not know.
    Unknown,
}

impl CodeKind {
    /// The kind of a vendor `ErrorCode` (or per-item `ResultCode`). 0 is not an error and is not
    /// classified.
    pub fn of(code: i64) -> CodeKind {
        match code {
            70169 | 70202 | 70500 | 40006 => CodeKind::Transient,
            60007 | 60011 | 60018 | 60019 => CodeKind::FrequencyLimit,
            70050 => CodeKind::AuthThrottled,
            60004 | 60005 | 70001 | 70052 | 70002 | 70003 | 70005 | 70009 | 70013 | 70014
            | 70016 => CodeKind::UserSig,
            60006 | 60016 | 60017 | 60020 | 70020 | 60010 | 70403 | 70398 | 71000 => CodeKind::App,
            70402 | 40005 | 40601 | 70399 => CodeKind::InvalidAccount,
            60002 | 60003 | 60008 | 60009 | 60012 | 60015 => CodeKind::MalformedRequest,
            _ => CodeKind::Unknown,
        }
    }

    /// The failure class of this kind. `Unknown` starts out retryable; the retry logic turns it
    /// permanent once its small attempt budget is spent.
    pub fn class(self) -> FailureClass {
        match self {
            CodeKind::Transient | CodeKind::Unknown => FailureClass::Retryable,
            CodeKind::FrequencyLimit => FailureClass::FrequencyLimited,
            CodeKind::AuthThrottled | CodeKind::UserSig | CodeKind::App => FailureClass::Systemic,
            CodeKind::InvalidAccount | CodeKind::MalformedRequest => FailureClass::Permanent,
        }
    }
}

/// A failed Chat API call. Never carries the UserSig or the secret key: URLs are stripped of their
/// query string before they can get here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The vendor answered with a non-zero `ErrorCode` (or a per-item `ResultCode`).
    #[error("{api} failed with ErrorCode {code}: {info}")]
    Vendor { api: Api, code: i64, info: String },
    /// The HTTP status was not 200 (the vendor uses 200 for everything it answers itself).
    #[error("{api} answered HTTP {status}")]
    Http { api: Api, status: u16 },
    /// No answer within the client timeout.
    #[error("{api} timed out after {timeout_ms} ms")]
    Timeout { api: Api, timeout_ms: u64 },
    /// Could not connect or the connection broke. `detail` has no URL.
    #[error("{api} connection failed: {detail}")]
    Connect { api: Api, detail: String },
    /// HTTP 200 but not a response body we understand (a proxy's page, a truncated body).
    #[error("{api} returned an unreadable body: {detail}")]
    BadResponse { api: Api, detail: String },
    /// The caller broke a precondition (over 100 ids, empty list): a bug, never retried.
    #[error("{api} request rejected before sending: {detail}")]
    InvalidRequest { api: Api, detail: String },
    /// The caller withdrew the call before its next HTTP exchange (see
    /// [`super::withdraw`]): a revocation took its records. Never an outcome: the records are
    /// let go, to be processed by their partitions' next owner.
    #[error("{api} call withdrawn before it was sent: its records were revoked")]
    Withdrawn { api: Api },
    /// The retry budget ran out on an error that alone would be retryable.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: Box<ChatError> },
}

impl ChatError {
    /// The class that decides what the worker does.
    pub fn class(&self) -> FailureClass {
        match self {
            ChatError::Vendor { code, .. } => CodeKind::of(*code).class(),
            ChatError::Http { status, .. } => match status {
                429 => FailureClass::FrequencyLimited,
                500..=599 => FailureClass::Retryable,
                // A 4xx from "the vendor" is a wrong base URL or a proxy in the way: every call
                // will get it, so dead-lettering the traffic would be wrong.
                _ => FailureClass::Systemic,
            },
            ChatError::Timeout { .. }
            | ChatError::Connect { .. }
            | ChatError::BadResponse { .. } => FailureClass::Retryable,
            ChatError::InvalidRequest { .. } => FailureClass::Permanent,
            // Not a failure of the API or the record; the pipeline never makes an outcome of it.
            ChatError::Withdrawn { .. } => FailureClass::Permanent,
            // Retries are spent: the affected users are dead-lettered. (A frequency limit that
            // outlasts the budget ends the same way.)
            ChatError::Exhausted { .. } => FailureClass::Permanent,
        }
    }

    /// The code kind for vendor errors; `None` for transport errors.
    pub fn code_kind(&self) -> Option<CodeKind> {
        match self {
            ChatError::Vendor { code, .. } => Some(CodeKind::of(*code)),
            ChatError::Exhausted { last, .. } => last.code_kind(),
            _ => None,
        }
    }

    /// The API the failed call was made to.
    pub fn api(&self) -> Api {
        match self {
            ChatError::Vendor { api, .. }
            | ChatError::Http { api, .. }
            | ChatError::Timeout { api, .. }
            | ChatError::Connect { api, .. }
            | ChatError::BadResponse { api, .. }
            | ChatError::InvalidRequest { api, .. }
            | ChatError::Withdrawn { api } => *api,
            ChatError::Exhausted { last, .. } => last.api(),
        }
    }

    /// The vendor code to put into outcome and dead-letter records; 0 where there is none.
    pub fn vendor_code(&self) -> i64 {
        match self {
            ChatError::Vendor { code, .. } => *code,
            ChatError::Exhausted { last, .. } => last.vendor_code(),
            _ => 0,
        }
    }

    /// True when the error means "the UserSig is not accepted": regenerate before going systemic.
    pub fn is_usersig_error(&self) -> bool {
        self.code_kind() == Some(CodeKind::UserSig)
    }
}

/// Describes a reqwest error without its URL (which carries the UserSig), walking the source chain
/// so that "connection refused" and the like survive.
pub(crate) fn describe_transport_error(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    strip_query_strings(&text)
}

/// Removes anything that looks like a query string from free text, in case a URL slipped into a
/// nested error message: `...?sdkappid=1&usersig=SECRET` becomes `...?<redacted>`.
pub(crate) fn strip_query_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('?') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + 1..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == ')' || c == '"')
            .unwrap_or(tail.len());
        if tail[..end].contains('=') {
            out.push_str("?<redacted>");
        } else {
            out.push('?');
            out.push_str(&tail[..end]);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(code: i64) -> FailureClass {
        ChatError::Vendor {
            api: Api::AccountImport,
            code,
            info: String::new(),
        }
        .class()
    }

    #[test]
    fn every_row_of_the_reference_table() {
        for code in [70169, 70202, 70500, 40006] {
            assert_eq!(class_of(code), FailureClass::Retryable, "{code}");
            assert_eq!(CodeKind::of(code), CodeKind::Transient);
        }
        for code in [60007, 60011, 60018, 60019] {
            assert_eq!(class_of(code), FailureClass::FrequencyLimited, "{code}");
        }
        assert_eq!(class_of(70050), FailureClass::Systemic);
        assert_eq!(CodeKind::of(70050), CodeKind::AuthThrottled);
        for code in [
            60004, 60005, 70001, 70052, 70002, 70003, 70005, 70009, 70013, 70014, 70016,
        ] {
            assert_eq!(class_of(code), FailureClass::Systemic, "{code}");
            assert_eq!(CodeKind::of(code), CodeKind::UserSig, "{code}");
        }
        for code in [
            60006, 60016, 60017, 60020, 70020, 60010, 70403, 70398, 71000,
        ] {
            assert_eq!(class_of(code), FailureClass::Systemic, "{code}");
            assert_eq!(CodeKind::of(code), CodeKind::App, "{code}");
        }
        for code in [70402, 40005, 40601, 70399] {
            assert_eq!(class_of(code), FailureClass::Permanent, "{code}");
            assert_eq!(CodeKind::of(code), CodeKind::InvalidAccount);
        }
        for code in [60002, 60003, 60008, 60009, 60012, 60015] {
            assert_eq!(class_of(code), FailureClass::Permanent, "{code}");
            assert_eq!(CodeKind::of(code), CodeKind::MalformedRequest);
        }
        assert_eq!(CodeKind::of(12345), CodeKind::Unknown);
        assert_eq!(class_of(12345), FailureClass::Retryable);
    }

    #[test]
    fn transport_errors() {
        let api = Api::AccountCheck;
        assert_eq!(
            ChatError::Http { api, status: 502 }.class(),
            FailureClass::Retryable
        );
        assert_eq!(
            ChatError::Http { api, status: 503 }.class(),
            FailureClass::Retryable
        );
        assert_eq!(
            ChatError::Http { api, status: 429 }.class(),
            FailureClass::FrequencyLimited
        );
        assert_eq!(
            ChatError::Http { api, status: 404 }.class(),
            FailureClass::Systemic
        );
        assert_eq!(
            ChatError::Timeout { api, timeout_ms: 1 }.class(),
            FailureClass::Retryable
        );
        assert_eq!(
            ChatError::Connect {
                api,
                detail: "refused".into()
            }
            .class(),
            FailureClass::Retryable
        );
        let exhausted = ChatError::Exhausted {
            attempts: 5,
            last: Box::new(ChatError::Vendor {
                api,
                code: 70500,
                info: String::new(),
            }),
        };
        assert_eq!(exhausted.class(), FailureClass::Permanent);
        assert_eq!(exhausted.vendor_code(), 70500);
    }

    #[test]
    fn query_strings_are_stripped() {
        let text = "error sending request for url (https://h/v4/x?sdkappid=1&usersig=SECRET&random=2): boom";
        let clean = strip_query_strings(text);
        assert!(!clean.contains("SECRET"), "{clean}");
        assert!(clean.contains("https://h/v4/x?<redacted>"), "{clean}");
        assert!(clean.ends_with(": boom"));
        assert_eq!(strip_query_strings("why? because"), "why? because");
    }
}
