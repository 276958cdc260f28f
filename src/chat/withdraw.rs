//! Withdrawing a call between its HTTP exchanges.
//!
//! A caller that no longer needs a call's answer (a revocation took the records it was for)
//! withdraws it through its [`Withdrawal`]. The call then stops before its next HTTP exchange —
//! while it waits for a limiter token or a backoff, or right before it would send — and ends with
//! [`ChatError::Withdrawn`](super::ChatError::Withdrawn). An exchange under way is never cut
//! short: its answer is awaited, since the vendor may already have acted on it (an import), and
//! its result is the caller's to deliver.

use futures_util::future::{self, BoxFuture};
use futures_util::FutureExt;

/// The caller's side of a call that may be withdrawn (see the module docs).
pub trait Withdrawal: Send + Sync {
    /// Called right before each HTTP exchange. `false`: the call is withdrawn, nothing is sent.
    /// `true`: the exchange goes ahead, and its answer is the caller's to handle — the caller,
    /// not the client, decides when its records stop waiting for it.
    fn sends(&self) -> bool;
    /// Resolves once the call is withdrawn; calls wait on it beside their tokens and backoffs.
    fn withdrawn(&self) -> BoxFuture<'_, ()>;
}

/// A call nobody withdraws.
#[derive(Debug, Default, Clone, Copy)]
pub struct NotWithdrawn;

impl Withdrawal for NotWithdrawn {
    fn sends(&self) -> bool {
        true
    }
    fn withdrawn(&self) -> BoxFuture<'_, ()> {
        future::pending().boxed()
    }
}
