//! The `chat-api` check: one `account_check` of the admin's own identifier (the systemic prober's
//! call), with the configured endpoint, SDKAppID, identifier and key. A systemic answer is turned
//! into what it means and what to do; neither the key nor the UserSig is ever part of it
//! ([`ChatError`] carries no URL, and the UserSig travels only in the URL).

use std::time::Instant;

use super::report::{Check, Problem};
use crate::chat::{ChatClient, ChatError, CodeKind, FailureClass};

/// Why the Chat API check failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatProblem {
    /// The key does not sign UserSigs this app accepts.
    #[error("the API rejects the UserSig signed with the secret key: the key is not SDKAppID {sdkappid}'s ({error})")]
    WrongKey { sdkappid: u64, error: ChatError },
    /// A fresh UserSig arrives expired: the clock.
    #[error(
        "the API finds a UserSig made just now expired: this machine's clock is off ({error})"
    )]
    Clock { error: ChatError },
    /// Another UserSig / identity problem.
    #[error("the API rejects the admin UserSig ({error})")]
    UserSig { error: ChatError },
    /// The identifier is not an admin of the app.
    #[error("identifier {identifier:?} is not an app administrator ({error})")]
    NotAdmin {
        identifier: String,
        error: ChatError,
    },
    /// The app itself cannot be used.
    #[error("SDKAppID {sdkappid} is invalid, disabled or expired ({error})")]
    App { sdkappid: u64, error: ChatError },
    /// Too many failed UserSig attempts lately.
    #[error("the API refuses UserSig attempts for a while after too many failures ({error})")]
    Throttled { error: ChatError },
    /// No answer, or a server error.
    #[error("the Chat API at {base} does not answer ({error})")]
    Unreachable { base: String, error: ChatError },
    /// Something answers that is not the Chat API.
    #[error("{base} does not answer like the Chat API ({error})")]
    NotTheApi { base: String, error: ChatError },
    /// Anything else (a request the vendor calls malformed, an unknown code).
    #[error("unexpected answer ({error})")]
    Other { error: ChatError },
}

impl Problem for ChatProblem {
    fn fix(&self) -> String {
        match self {
            ChatProblem::WrongKey { .. } => "put the app's key (Tencent Cloud console → Chat → the app → Basic configuration → Key) in the file of --secret-key-file or in ACCOUNT_SYNC_SECRET_KEY, and check --sdkappid".into(),
            ChatProblem::Clock { .. } => "sync this machine's clock (NTP): UserSigs are signed with the local time".into(),
            ChatProblem::UserSig { .. } => "check that --sdkappid, --identifier and the secret key belong to the same app".into(),
            ChatProblem::NotAdmin { .. } => "set --identifier to an admin account of the app (console → Chat → the app → Admin accounts), or make this one an admin".into(),
            ChatProblem::App { .. } => "check --sdkappid, and the app's status and edition in the Tencent Cloud console".into(),
            ChatProblem::Throttled { .. } => "wait a minute, then run the doctor again; fix the key or identifier first if other runs failed".into(),
            ChatProblem::Unreachable { .. } => "check --region / --api-base-url and the way out from here to the API (DNS, proxy, firewall, NetworkPolicy egress on 443)".into(),
            ChatProblem::NotTheApi { .. } => "check --api-base-url (a proxy or a wrong host answers instead of the API)".into(),
            ChatProblem::Other { .. } => "look the code up in the Chat REST API error codes; a malformed request is a bug in account-sync".into(),
        }
    }
}

/// Probes the API once and reports what the answer means.
pub(super) async fn check(client: &ChatClient) -> Check {
    let cfg = client.config();
    let started = Instant::now();
    let result = client.probe(&cfg.identifier).await;
    let ms = started.elapsed().as_millis() as u64;
    let base = cfg.base_url.as_str().trim_end_matches('/').to_owned();
    let answered = format!(
        "{base} accepts SDKAppID {} with admin {:?} (account_check of the admin, {ms} ms)",
        cfg.sdkappid, cfg.identifier
    );
    let outcome = match result {
        Ok(()) => Ok(answered),
        // A frequency limit is counted after authentication: the credentials work, the app's
        // budget is being spent by someone right now.
        Err(e) if e.class() == FailureClass::FrequencyLimited => Ok(format!(
            "{answered}; it answered with a frequency limit ({e}): something else uses the app's budget now"
        )),
        Err(e) => Err(explain(client, e)),
    };
    Check::of("chat-api", outcome)
        .with("base_url", base)
        .with("latency_ms", ms)
}

/// What a failed probe means, by the error's code kind (see [`CodeKind`]).
fn explain(client: &ChatClient, error: ChatError) -> ChatProblem {
    let cfg = client.config();
    let base = cfg.base_url.as_str().trim_end_matches('/').to_owned();
    let code = error.vendor_code();
    match error.code_kind() {
        Some(CodeKind::UserSig) => match code {
            70009 => ChatProblem::WrongKey {
                sdkappid: cfg.sdkappid,
                error,
            },
            70001 | 70052 => ChatProblem::Clock { error },
            _ => ChatProblem::UserSig { error },
        },
        Some(CodeKind::App) => match code {
            60010 | 70403 => ChatProblem::NotAdmin {
                identifier: cfg.identifier.clone(),
                error,
            },
            _ => ChatProblem::App {
                sdkappid: cfg.sdkappid,
                error,
            },
        },
        Some(CodeKind::AuthThrottled) => ChatProblem::Throttled { error },
        Some(CodeKind::Transient) => ChatProblem::Unreachable { base, error },
        Some(_) => ChatProblem::Other { error },
        None => match &error {
            ChatError::Http { status, .. } if *status < 500 => {
                ChatProblem::NotTheApi { base, error }
            }
            ChatError::BadResponse { .. } => ChatProblem::NotTheApi { base, error },
            ChatError::InvalidRequest { .. } => ChatProblem::Other { error },
            _ => ChatProblem::Unreachable { base, error },
        },
    }
}
