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
    /// Called right before an HTTP exchange. `false`: the call is withdrawn, nothing is sent.
    /// `true`: the exchange is under way until [`Withdrawal::exchange_ended`].
    fn exchange_starts(&self) -> bool;
    /// The exchange that `exchange_starts` let go has ended (answered, failed, or dropped).
    fn exchange_ended(&self);
    /// Resolves once the call is withdrawn; calls wait on it beside their tokens and backoffs.
    fn withdrawn(&self) -> BoxFuture<'_, ()>;
}

/// A call nobody withdraws.
#[derive(Debug, Default, Clone, Copy)]
pub struct NotWithdrawn;

impl Withdrawal for NotWithdrawn {
    fn exchange_starts(&self) -> bool {
        true
    }
    fn exchange_ended(&self) {}
    fn withdrawn(&self) -> BoxFuture<'_, ()> {
        future::pending().boxed()
    }
}

/// Marks an exchange as under way until dropped, also when the call's future is dropped
/// mid-exchange (a shutdown).
pub(crate) struct Exchange<'a>(&'a dyn Withdrawal);

impl<'a> Exchange<'a> {
    /// `None` when the call is withdrawn.
    pub(crate) fn start(w: &'a dyn Withdrawal) -> Option<Exchange<'a>> {
        w.exchange_starts().then_some(Exchange(w))
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        self.0.exchange_ended();
    }
}
