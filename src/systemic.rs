//! Systemic faults: "every further call would fail the same way" (wrong key, not an admin, app
//! disabled, edition limit, a UserSig that regeneration does not cure).
//!
//! Dead-lettering traffic during such a fault would empty the input topic into the dead-letter
//! topic, so instead the [`SystemicGate`] closes: windows that hit the fault wait at the gate with
//! their records (offsets stay uncommitted), the source pauses intake, `/readyz` reports the reason,
//! and [`run_prober`] probes the API with backoff until a probe succeeds and reopens the gate.

use std::time::Duration;

use tokio::sync::watch;

use crate::chat::{ChatClient, ChatError, FailureClass};
use crate::shutdown::Shutdown;

/// Longest delay between probes.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// The fault that closed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Vendor code (0 for transport-level faults such as HTTP 404).
    pub code: i64,
    /// The error text (never contains a secret: ChatError carries no URL).
    pub reason: String,
}

impl Fault {
    fn from_error(err: &ChatError) -> Self {
        Fault {
            code: err.vendor_code(),
            reason: err.to_string(),
        }
    }
}

/// Open (no fault) or closed (a fault is in force). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SystemicGate {
    /// `None` = open.
    state: watch::Sender<Option<Fault>>,
}

impl Default for SystemicGate {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemicGate {
    /// An open gate.
    pub fn new() -> Self {
        SystemicGate {
            state: watch::Sender::new(None),
        }
    }

    /// Closes the gate with `err` (if not closed already). Logs at error level once per fault.
    pub fn report(&self, err: &ChatError) {
        debug_assert_eq!(err.class(), FailureClass::Systemic);
        self.state.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            let fault = Fault::from_error(err);
            tracing::error!(
                code = fault.code,
                reason = %fault.reason,
                "systemic fault: intake paused, offsets kept, probing the API until it recovers"
            );
            *s = Some(fault);
            true
        });
    }

    /// Reopens the gate.
    pub fn clear(&self) {
        self.state.send_if_modified(|s| {
            if let Some(f) = s.take() {
                tracing::info!(code = f.code, "systemic fault cleared: resuming");
                true
            } else {
                false
            }
        });
    }

    /// The fault in force, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.state.borrow().clone()
    }

    /// True when no fault is in force.
    pub fn is_open(&self) -> bool {
        self.state.borrow().is_none()
    }

    /// Waits until the gate is open. Returns false if `shutdown` fired first.
    pub async fn wait_open(&self, shutdown: &Shutdown) -> bool {
        let mut rx = self.state.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| s.is_none()) => r.is_ok(),
            _ = shutdown.wait() => false,
        }
    }

    /// A receiver that sees every change (the source watches it to pause and resume).
    pub fn subscribe(&self) -> watch::Receiver<Option<Fault>> {
        self.state.subscribe()
    }
}

/// Probes while the gate is closed: a single `account_check` of the admin account, after
/// `initial` and then doubling delays (at most [`MAX_PROBE_INTERVAL`]). Runs until `shutdown`.
pub async fn run_prober(
    gate: &SystemicGate,
    client: &ChatClient,
    initial: Duration,
    shutdown: Shutdown,
) {
    let mut rx = gate.subscribe();
    loop {
        tokio::select! {
            r = rx.wait_for(|s| s.is_some()) => if r.is_err() { return },
            _ = shutdown.wait() => return,
        }
        let mut delay = initial;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return,
            }
            match client.probe(&client.config().identifier).await {
                Ok(()) => {
                    gate.clear();
                    break;
                }
                Err(err) if err.class() == FailureClass::Systemic => {
                    tracing::error!(code = err.vendor_code(), reason = %err, next_probe_in = ?(delay * 2).min(MAX_PROBE_INTERVAL), "systemic fault persists");
                    gate.state.send_replace(Some(Fault::from_error(&err)));
                    delay = (delay * 2).min(MAX_PROBE_INTERVAL);
                }
                Err(err) => {
                    // Transient trouble says nothing about the fault; probe again at the same pace.
                    tracing::warn!(reason = %err, "probe inconclusive");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::api::Api;

    fn fault(code: i64) -> ChatError {
        ChatError::Vendor {
            api: Api::AccountCheck,
            code,
            info: "no".into(),
        }
    }

    #[tokio::test]
    async fn first_report_wins_and_clear_reopens() {
        let gate = SystemicGate::new();
        assert!(gate.is_open());
        gate.report(&fault(70009));
        gate.report(&fault(60010));
        assert_eq!(gate.fault().unwrap().code, 70009);
        let (shutdown, _trigger) = Shutdown::new();
        let waiter = {
            let gate = std::sync::Arc::new(gate);
            let g = gate.clone();
            let s = shutdown.clone();
            let h = tokio::spawn(async move { g.wait_open(&s).await });
            tokio::task::yield_now().await;
            assert!(!h.is_finished());
            gate.clear();
            h
        };
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn wait_open_gives_up_on_shutdown() {
        let gate = SystemicGate::new();
        gate.report(&fault(70398));
        let (shutdown, trigger) = Shutdown::new();
        trigger.trigger();
        assert!(!gate.wait_open(&shutdown).await);
    }
}
