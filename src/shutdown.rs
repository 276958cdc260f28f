//! A shutdown signal that many tasks can wait on, fired once by its [`Trigger`].
//!
//! The worker takes its shutdown signal from the caller (mini-redis style), so tests can stop it
//! without sending signals to their own process.

use tokio::sync::watch;

/// The waiting side. Clone freely.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The firing side.
#[derive(Debug, Clone)]
pub struct Trigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (Shutdown, Trigger) {
        let (tx, rx) = watch::channel(false);
        (
            Shutdown { rx },
            Trigger {
                tx: std::sync::Arc::new(tx),
            },
        )
    }

    /// A signal that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so `wait` pends rather than seeing a closed channel.
        std::mem::forget(tx);
        Shutdown { rx }
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when fired (or when the trigger is dropped without firing: nobody can stop us
    /// any more, so treat it as a stop to avoid hanging forever).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

impl Trigger {
    /// Fires the signal.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when the future
/// is first polled: a signal that comes between the two is kept, instead of ending the process
/// by its default action (a command that prints its address and is stopped right after).
#[cfg(unix)]
pub fn os_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn os_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
