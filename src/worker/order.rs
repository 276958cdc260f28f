//! Order per user across windows in flight: a user's events take effect in offset order, also
//! when they fall into different windows resolved at the same time (ARCHITECTURE, "Event kinds
//! and order per user").
//!
//! Windows enter [`UserOrder`] in the order they close, which is the order of their records.
//! Each gets a [`Turn`]: the earlier windows it must wait for, per user, before it makes a call.
//! A window that only creates a user waits for the last earlier window that updated or deleted
//! that user; a window that updates or deletes a user waits for every earlier window of the
//! user still in flight. Creates of one user do not wait for each other: a create is an import
//! of a missing account, and two of them in either order leave the same account behind — so a
//! stream of signups (the worker's traffic before event kinds) is never held back.
//!
//! Turns wait only for earlier windows, so nothing waits in a circle, and a window waits before
//! it takes a window slot, so a later window can never hold the slot an earlier one needs. A
//! window's turn ends when its task ends (resolved, abandoned or let go): whatever it did reached
//! the vendor by then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::window::ClosedWindow;
use crate::domain::EventKind;

/// The windows in flight, per user. Shared by the intake loop (which enters windows as they
/// close) and the window tasks (whose turns end when they do).
#[derive(Debug, Default)]
pub struct UserOrder {
    users: Mutex<HashMap<String, Chain>>,
}

/// The windows in flight of one user that a later window may have to wait for.
#[derive(Debug, Default)]
struct Chain {
    /// The last window that updated or deleted the user.
    barrier: Option<Ended>,
    /// The windows since then that created the user.
    creates: Vec<Ended>,
}

/// Resolves when a window's turn ended (its sender dropped).
#[derive(Debug, Clone)]
struct Ended(watch::Receiver<()>);

impl Ended {
    fn is_over(&self) -> bool {
        self.0.has_changed().is_err()
    }

    async fn wait(mut self) {
        // Nothing is ever sent: the only change is the sender going away.
        while self.0.changed().await.is_ok() {}
    }
}

impl Chain {
    fn prune(&mut self) {
        if self.barrier.as_ref().is_some_and(Ended::is_over) {
            self.barrier = None;
        }
        self.creates.retain(|e| !e.is_over());
    }

    fn is_empty(&self) -> bool {
        self.barrier.is_none() && self.creates.is_empty()
    }
}

/// A window's place in the order: what it waits for, and (until dropped) what later windows of
/// its users wait for.
#[derive(Debug)]
pub struct Turn {
    /// The earlier windows it waits for.
    waits: Vec<Ended>,
    /// Dropped when the window's task ends: later windows waiting for it go on.
    own: Option<watch::Sender<()>>,
    /// Its users, to clear their chains when it ends.
    users: Vec<String>,
    order: Arc<UserOrder>,
}

impl UserOrder {
    /// Enters `window` (windows must enter in the order they closed): its turn.
    pub fn enter(self: &Arc<Self>, window: &ClosedWindow) -> Turn {
        let (own, ended) = watch::channel(());
        let ended = Ended(ended);
        let mut waits = Vec::new();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        for (user, net) in window.ids.iter().zip(&window.net) {
            let chain = users.entry(user.clone()).or_default();
            chain.prune();
            waits.extend(chain.barrier.clone());
            if net.kind == EventKind::Create {
                chain.creates.push(ended.clone());
            } else {
                waits.append(&mut chain.creates);
                chain.barrier = Some(ended.clone());
            }
        }
        Turn {
            waits,
            own: Some(own),
            users: window.ids.clone(),
            order: self.clone(),
        }
    }

    /// Users with windows in flight (the table is emptied as windows end).
    #[cfg(test)]
    pub fn users_in_flight(&self) -> usize {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Turn {
    /// Waits until every earlier window this one must follow has ended. Cancel-safe: a wait
    /// is forgotten only once it is over.
    pub async fn ready(&mut self) {
        while let Some(ended) = self.waits.last() {
            ended.clone().wait().await;
            self.waits.pop();
        }
    }

    /// Whether the window may go on now without waiting.
    #[cfg(test)]
    pub fn is_ready(&self) -> bool {
        self.waits.iter().all(Ended::is_over)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.own.take());
        let mut users = self.order.users.lock().unwrap_or_else(|e| e.into_inner());
        for user in &self.users {
            if let Some(chain) = users.get_mut(user) {
                chain.prune();
                if chain.is_empty() {
                    users.remove(user);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{AccountEvent, InputRecord, SourcePos};
    use crate::worker::window::Window;

    fn window(events: &[(&str, EventKind)]) -> ClosedWindow {
        let mut w = Window::new(100, Duration::from_secs(1));
        for (i, (user, kind)) in events.iter().enumerate() {
            let record = InputRecord {
                pos: SourcePos {
                    partition: 0,
                    offset: i as i64,
                    epoch: 0,
                },
                event: AccountEvent {
                    user_id: user.to_string(),
                    nick: None,
                    face_url: None,
                    kind: *kind,
                },
                key: None,
                payload: None,
                timestamp_ms: None,
            };
            assert!(w.push(record).is_none());
        }
        w.take(crate::worker::window::CloseReason::Flush).unwrap()
    }

    use EventKind::*;

    #[test]
    fn creates_of_a_user_do_not_wait_for_each_other() {
        let order = Arc::new(UserOrder::default());
        let a = order.enter(&window(&[("u", Create), ("v", Create)]));
        let b = order.enter(&window(&[("u", Create)]));
        assert!(a.is_ready() && b.is_ready());
        drop((a, b));
        assert_eq!(order.users_in_flight(), 0, "the table empties");
    }

    #[test]
    fn an_update_or_delete_waits_for_every_earlier_window_of_its_user() {
        let order = Arc::new(UserOrder::default());
        let a = order.enter(&window(&[("u", Create)]));
        let b = order.enter(&window(&[("u", Create), ("w", Create)]));
        let c = order.enter(&window(&[("u", Delete)]));
        let other = order.enter(&window(&[("w", Update)]));
        assert!(!c.is_ready());
        drop(a);
        assert!(!c.is_ready(), "b is still in flight");
        assert!(!other.is_ready(), "w's create in b is in flight");
        drop(b);
        assert!(c.is_ready() && other.is_ready());
        // A create after the delete waits for it, and only for it.
        let d = order.enter(&window(&[("u", Create)]));
        assert!(!d.is_ready());
        drop(c);
        assert!(d.is_ready());
        drop((d, other));
        assert_eq!(order.users_in_flight(), 0);
    }

    #[tokio::test]
    async fn ready_returns_when_the_earlier_window_ends() {
        let order = Arc::new(UserOrder::default());
        let a = order.enter(&window(&[("u", Update)]));
        let mut b = order.enter(&window(&[("u", Delete)]));
        let waiting = tokio::spawn(async move {
            b.ready().await;
            b
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        let b = waiting.await.unwrap();
        assert!(b.is_ready());
    }
}
