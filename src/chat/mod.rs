//! The Tencent Cloud Chat (IM) REST client: the admin UserSig, the request/response types, error
//! classification, retries and the HTTP calls themselves.
//!
//! - [`usersig`]: TLSSigAPIv2 generate / verify.
//! - [`api`]: the vendor's JSON bodies and endpoint names.
//! - [`error`]: [`ChatError`] and its [`FailureClass`], from REFERENCE.md's table.
//! - [`retry`]: the one place retry decisions are made.
//! - [`client`]: [`ChatClient`]: URL building, UserSig cache, rate limiting, HTTP.

pub mod api;
pub mod client;
pub mod error;
pub mod retry;
pub mod usersig;

pub use api::{AccountStatus, Api};
pub use client::{Attempted, ChatClient, ChatConfig, CheckOutcome, ImportAccount, Region};
pub use error::{ChatError, CodeKind, FailureClass};
pub use retry::RetryPolicy;
pub use usersig::{SecretKey, UserSig};
