//! The Tencent Cloud Chat (IM) REST client: the admin UserSig, the request/response types, error
//! classification, retries and the HTTP calls themselves.
//!
//! - [`usersig`]: TLSSigAPIv2 generate / verify.
//! - [`api`]: the vendor's JSON bodies and endpoint names.
//! - [`error`]: [`ChatError`] and its [`FailureClass`], from the code table of `docs/chat-api.md`.
//! - [`answer`]: reading an answer's body: its status, and whether it answers the request.
//! - [`retry`]: the one place retry decisions are made.
//! - [`health`]: the outage detector: is the API available at all?
//! - [`endpoint`]: the primary and backup domains, and failing over between them.
//! - [`withdraw`]: giving a call up between its HTTP exchanges (a revocation took its records).
//! - [`client`]: [`ChatClient`]: URL building, UserSig cache, rate limiting, HTTP.

pub mod answer;
pub mod api;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod retry;
pub mod usersig;
pub mod withdraw;

pub use api::{AccountStatus, Api};
pub use client::{
    Attempted, ChatClient, ChatConfig, CheckOutcome, DeleteOutcome, ImportAccount, Region,
};
pub use endpoint::Domain;
pub use error::{ChatError, CodeKind, FailureClass};
pub use health::OutageRule;
pub use retry::RetryPolicy;
pub use usersig::{SecretKey, UserSig};
pub use withdraw::{NotWithdrawn, Withdrawal};
