//! Lifecycle events fanned out to every subscriber of the daemon, whatever
//! API it came through (the JSON-lines socket, libvirt's RPC): each
//! subscriber has a bounded queue, and [`EventHub::broadcast`] never
//! waits: a subscriber whose queue is full is dropped (its receiver then
//! reports the channel disconnected, and its connection closes).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::proto::Event;

/// Called after an event is queued for a subscriber (or the subscriber is
/// dropped), to wake a thread waiting on something else than the queue.
pub type Notify = Box<dyn Fn() + Send + Sync>;

struct Subscriber {
    id: u64,
    tx: SyncSender<Event>,
    notify: Option<Notify>,
}

#[derive(Default)]
struct Inner {
    subs: Vec<Subscriber>,
    next_id: u64,
}

/// The daemon's subscribers; clones share them.
#[derive(Clone, Default)]
pub struct EventHub(Arc<Mutex<Inner>>);

impl EventHub {
    /// An empty hub.
    pub fn new() -> EventHub {
        EventHub::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a subscriber with a queue of `queue` events; returns its id
    /// (for [`EventHub::unsubscribe`]) and the queue's receiving end.
    pub fn subscribe(&self, queue: usize, notify: Option<Notify>) -> (u64, Receiver<Event>) {
        let (tx, rx) = mpsc::sync_channel(queue);
        let mut inner = self.inner();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.subs.push(Subscriber { id, tx, notify });
        (id, rx)
    }

    /// Removes subscriber `id` (if still there).
    pub fn unsubscribe(&self, id: u64) {
        self.inner().subs.retain(|s| s.id != id);
    }

    /// The number of subscribers.
    pub fn len(&self) -> usize {
        self.inner().subs.len()
    }

    /// Whether nobody subscribes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `events` for every subscriber without ever blocking.
    pub fn broadcast(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.inner();
        inner.subs.retain(|s| {
            let kept = events.iter().all(|ev| match s.tx.try_send(ev.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        "event subscriber {} does not read its events: dropping it",
                        s.id
                    );
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
            if let Some(n) = &s.notify {
                n();
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EventKind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ev(n: &str) -> Event {
        Event {
            network: n.into(),
            uuid: String::new(),
            kind: EventKind::Started,
        }
    }

    #[test]
    fn a_full_queue_drops_only_its_subscriber() {
        let hub = EventHub::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let (_, slow) = hub.subscribe(
            1,
            Some(Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let (_, fast) = hub.subscribe(8, None);
        hub.broadcast(&[ev("a")]);
        hub.broadcast(&[ev("b")]);
        assert_eq!(hub.len(), 1);
        assert_eq!(
            woken.load(Ordering::SeqCst),
            2,
            "woken for the event and the drop"
        );
        assert_eq!(slow.recv().unwrap().network, "a");
        assert!(slow.recv().is_err(), "disconnected once dropped");
        assert_eq!(fast.try_iter().count(), 2);
    }
}
