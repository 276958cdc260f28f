//! Systemic faults: "every further call would fail the same way" (wrong key, not an admin, app
//! disabled, edition limit, a UserSig that regeneration does not cure) — and outages, where the
//! API does not answer properly at all (see [`crate::chat::health`] for when that is decided).
//!
//! Dead-lettering traffic during such a fault would empty the input topic into the dead-letter
//! topic, so instead the [`SystemicGate`] closes: windows that hit the fault wait at the gate with
//! their records (offsets stay uncommitted), the worker's intake loop pauses every assigned
//! partition (it watches the gate, see [`SystemicGate::subscribe`]), `/readyz` reports the reason,
//! and [`run_prober`] probes the API with backoff until a probe succeeds and reopens the gate.
//!
//! The probe is one `account_check`, which sees every fault of the key, the UserSig, the admin and
//! the app, but not the edition's account limit (70398): only importing a *new* account hits that;
//! nor account deletion switched off for the app (71000): only a deletion hits that. For such a
//! fault the prober instead lets one waiting call through as a trial (a half-open
//! gate): its success reopens the gate, its failure keeps it closed and the backoff going.
//!
//! During an outage the probe's availability errors are the outage going on: the prober backs
//! off (up to [`MAX_OUTAGE_PROBE_INTERVAL`]) and the first successful probe reopens the gate.
//!
//! The schema registry (registry input formats) closes the same gate when it does not answer
//! ([`SystemicGate::report_registry`]): intake pauses and `/readyz` says why. The API prober
//! leaves such a fault alone; the schema lookup that met it is its probe, asks again with
//! backoff, and reopens the gate when the registry answers ([`SystemicGate::clear_registry`]).

use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use crate::backoff::Backoff;
use crate::chat::{ChatClient, ChatError, FailureClass};
use crate::shutdown::Shutdown;

/// Longest delay between probes of a systemic fault (it takes a person to fix).
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// Longest delay between probes during an outage: it ends on the vendor's side, by itself, and
/// every second of delay after that is a second of signups waiting.
pub const MAX_OUTAGE_PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// The fault that closed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Vendor code (0 for transport-level faults such as HTTP 404, for outages and for the
    /// registry).
    pub code: i64,
    /// The error text (never contains a secret: ChatError carries no URL, the registry's URL
    /// holds no credentials).
    pub reason: String,
    /// What failed, which decides who probes it.
    pub kind: FaultKind,
}

/// What a fault is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A systemic answer of the Chat API.
    Systemic,
    /// A Chat API outage ("Chat API unavailable").
    Unavailable,
    /// The schema registry does not answer usably.
    Registry,
}

impl Fault {
    fn from_error(err: &ChatError) -> Self {
        Fault {
            code: err.vendor_code(),
            reason: err.to_string(),
            kind: FaultKind::Systemic,
        }
    }

    fn unavailable(err: &ChatError) -> Self {
        Fault {
            code: 0,
            reason: format!("Chat API unavailable: {err}"),
            kind: FaultKind::Unavailable,
        }
    }

    /// The bounded `code` label of `account_sync_systemic_fault`: the vendor code, `unavailable`
    /// for an outage, `schema_registry` for the registry.
    pub fn label(&self) -> String {
        match self.kind {
            FaultKind::Systemic => self.code.to_string(),
            FaultKind::Unavailable => "unavailable".into(),
            FaultKind::Registry => "schema_registry".into(),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FaultKind::Systemic => {
                write!(f, "systemic fault (code {}): {}", self.code, self.reason)
            }
            FaultKind::Unavailable | FaultKind::Registry => f.write_str(&self.reason),
        }
    }
}

/// Vendor codes of systemic faults that the probe (`account_check`) cannot observe: for these the
/// probe would succeed while the fault persists, so the gate reopening on it would flap (every
/// waiting import failing again at once, `/readyz` toggling). Probed by a trial call instead.
/// 70398: the edition's account limit (only a new account's import hits it); 71000: account
/// deletion not switched on for the app (only a deletion hits it).
const NOT_SEEN_BY_PROBE: &[i64] = &[70398, 71000];

/// Open (no fault) or closed (a fault is in force). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SystemicGate {
    /// `None` = open.
    state: watch::Sender<Option<Fault>>,
    /// One permit while a trial call may go through a closed gate (see [`Self::wait_turn`]).
    trial: Semaphore,
    /// Woken when a trial call failed with the fault again.
    trial_failed: Notify,
}

/// What a caller waiting at the gate may do (see [`SystemicGate::wait_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The gate is open.
    Open,
    /// The gate is still closed, but this caller makes the one trial call: it must report the
    /// result with [`SystemicGate::trial_result`].
    Trial,
    /// Shutdown came first.
    Shutdown,
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
            trial: Semaphore::new(0),
            trial_failed: Notify::new(),
        }
    }

    /// Closes the gate with systemic `err` (if not closed already). Logs at error level once per
    /// fault.
    pub fn report(&self, err: &ChatError) {
        debug_assert_eq!(err.class(), FailureClass::Systemic);
        self.close(Fault::from_error(err));
    }

    /// Closes the gate for an outage, `err` being the last failure seen (if not closed already).
    pub fn report_unavailable(&self, err: &ChatError) {
        self.close(Fault::unavailable(err));
    }

    /// Closes the gate because the schema registry did not answer usably (if not closed
    /// already); `reason` starts with "schema registry unavailable".
    pub fn report_registry(&self, reason: String) {
        self.close(Fault {
            code: 0,
            reason,
            kind: FaultKind::Registry,
        });
    }

    /// Reopens the gate if the registry closed it (a Chat API fault stays: its prober owns it).
    pub fn clear_registry(&self) {
        if self.fault().is_some_and(|f| f.kind == FaultKind::Registry) {
            self.clear();
        }
    }

    fn close(&self, fault: Fault) {
        self.state.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            let probing = match fault.kind {
                FaultKind::Registry => "asking the registry again until it answers",
                _ => "probing the API until it recovers",
            };
            tracing::error!(
                code = %fault.label(),
                reason = %fault.reason,
                "intake paused, offsets kept, {probing}"
            );
            *s = Some(fault);
            true
        });
    }

    /// Reopens the gate.
    pub fn clear(&self) {
        // A trial permit nobody took must not let a call through the next closed gate unprobed.
        while let Ok(p) = self.trial.try_acquire() {
            p.forget();
        }
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

    /// Like [`Self::wait_open`], for a caller whose call failed with systemic `code`: while the
    /// gate is closed with that same code, the caller may instead be picked for the prober's
    /// trial call ([`Turn::Trial`]).
    pub async fn wait_turn(&self, code: i64, shutdown: &Shutdown) -> Turn {
        let mut rx = self.state.subscribe();
        let may_trial = self.fault().is_some_and(|f| f.code == code);
        tokio::select! {
            biased;
            r = rx.wait_for(|s| s.is_none()) => if r.is_ok() { Turn::Open } else { Turn::Shutdown },
            p = self.trial.acquire(), if may_trial => match p {
                Ok(p) => {
                    p.forget();
                    Turn::Trial
                }
                Err(_) => Turn::Shutdown,
            },
            _ = shutdown.wait() => Turn::Shutdown,
        }
    }

    /// The result of a trial call: `None` when it was not systemic (the gate reopens), else the
    /// error (the gate stays closed and the prober backs off).
    pub fn trial_result(&self, err: Option<&ChatError>) {
        match err {
            None => self.clear(),
            Some(err) => {
                self.state.send_replace(Some(Fault::from_error(err)));
                self.trial_failed.notify_one();
            }
        }
    }

    /// A trial call could not be made (the API did not answer): the fault stands, and the prober
    /// tries again after its backoff.
    pub fn trial_inconclusive(&self) {
        self.trial_failed.notify_one();
    }

    /// Lets one waiting call through as a trial and waits for its result: true when the gate
    /// reopened, false when the fault persists. `None` on shutdown.
    async fn run_trial(&self, shutdown: &Shutdown) -> Option<bool> {
        let mut rx = self.state.subscribe();
        self.trial.add_permits(1);
        tokio::select! {
            r = rx.wait_for(|s| s.is_none()) => r.ok().map(|_| true),
            _ = self.trial_failed.notified() => Some(false),
            _ = shutdown.wait() => None,
        }
    }

    /// A receiver that sees every change (the intake loop watches it to pause and resume).
    pub fn subscribe(&self) -> watch::Receiver<Option<Fault>> {
        self.state.subscribe()
    }
}

/// Probes while the gate is closed: a single `account_check` of the admin account, after
/// `initial` and then doubling delays (at most [`MAX_PROBE_INTERVAL`], or
/// [`MAX_OUTAGE_PROBE_INTERVAL`] during an outage). Runs until `shutdown`.
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
        // The cap depends on the answer: a person fixes a systemic fault, an outage ends by
        // itself (see the constants).
        let systemic = Backoff::doubling(initial, MAX_PROBE_INTERVAL);
        let outage = systemic.with_max(MAX_OUTAGE_PROBE_INTERVAL);
        let mut delay = initial;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return,
            }
            let Some(fault) = gate.fault() else {
                break;
            };
            if fault.kind == FaultKind::Registry {
                // Not the API's: the schema lookup that met it asks again, and reopens the gate.
                // Probe again once the gate changes (a Chat API fault may replace it).
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = shutdown.wait() => return,
                }
                continue;
            }
            if NOT_SEEN_BY_PROBE.contains(&fault.code) {
                match gate.run_trial(&shutdown).await {
                    None => return,
                    Some(true) => break,
                    Some(false) => {
                        delay = systemic.after(delay);
                        tracing::error!(code = fault.code, reason = %fault.reason, next_trial_in = ?delay, "systemic fault persists (trial call failed)");
                        continue;
                    }
                }
            }
            match client.probe(&client.config().identifier).await {
                Ok(()) => {
                    gate.clear();
                    break;
                }
                Err(err) if err.class() == FailureClass::Systemic => {
                    delay = systemic.after(delay);
                    tracing::error!(code = err.vendor_code(), reason = %err, next_probe_in = ?delay, "systemic fault persists");
                    gate.state.send_replace(Some(Fault::from_error(&err)));
                }
                Err(err) if fault.kind == FaultKind::Unavailable => {
                    delay = outage.after(delay);
                    tracing::warn!(reason = %err, next_probe_in = ?delay, "Chat API still unavailable");
                }
                Err(err) => {
                    // Transient trouble says nothing about the fault; probe again at the same pace.
                    tracing::warn!(reason = %err, "probe inconclusive");
                }
            }
        }
    }
}

/// The background work every user of the [`crate::worker::pipeline::Stages`] runs beside them, until
/// `stop`: [`run_prober`] while the gate is closed, and the primary domain's failback probe while
/// calls go to the backup domain, both from `interval` (the `--systemic-probe-interval`).
pub async fn run_probers(
    gate: std::sync::Arc<SystemicGate>,
    client: ChatClient,
    interval: Duration,
    stop: Shutdown,
) {
    // The primary domain is probed at the systemic probes' first pace: a failover is not a
    // fault, and coming back soon keeps the backup for when it is needed.
    tokio::join!(
        run_prober(&gate, &client, interval, stop.clone()),
        client.run_failback(interval, stop)
    );
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
    async fn a_trial_call_decides_for_a_fault_the_probe_cannot_see() {
        let gate = std::sync::Arc::new(SystemicGate::new());
        gate.report(&fault(70398));
        let (shutdown, _trigger) = Shutdown::new();
        let wait = |code: i64| {
            let (g, s) = (gate.clone(), shutdown.clone());
            tokio::spawn(async move { g.wait_turn(code, &s).await })
        };
        let trial = || {
            let (g, s) = (gate.clone(), shutdown.clone());
            tokio::spawn(async move { g.run_trial(&s).await })
        };
        let other = wait(70009);
        let waiter = wait(70398);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no trial granted yet");
        let t = trial();
        assert_eq!(waiter.await.unwrap(), Turn::Trial);
        assert!(!gate.is_open(), "closed while the trial runs");
        gate.trial_result(Some(&fault(70398)));
        assert_eq!(t.await.unwrap(), Some(false), "the fault persists");
        assert!(!gate.is_open());

        let waiter = wait(70398);
        let t = trial();
        assert_eq!(waiter.await.unwrap(), Turn::Trial);
        gate.trial_result(None);
        assert_eq!(t.await.unwrap(), Some(true));
        assert!(gate.is_open());
        assert_eq!(
            other.await.unwrap(),
            Turn::Open,
            "a caller with another code never takes the trial; it goes on once open"
        );
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
