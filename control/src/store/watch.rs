//! Fan-out of committed events to in-process watchers, shared by the
//! backends. See the module docs of `store` for the replay/live hand-over.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use super::{Event, Revision, StoreError};

/// The watchers of one store.
pub(super) struct Hub {
    inner: Mutex<HubInner>,
    capacity: usize,
}

struct HubInner {
    /// The revision of the last write handed to watchers.
    published: Revision,
    next_id: u64,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    id: u64,
    prefix: String,
    /// Only events above this revision are sent.
    from: Revision,
    /// Every matching event up to this revision has been sent.
    delivered: Revision,
    tx: mpsc::Sender<Event>,
    end: Arc<OnceLock<End>>,
}

/// Why the hub dropped a subscriber; read by the [`Watch`] once its channel
/// has drained.
#[derive(Clone, Copy, Debug)]
enum End {
    Lagged { revision: Revision },
}

impl Hub {
    /// A hub whose store is at `revision`.
    pub(super) fn new(revision: Revision, capacity: usize) -> Arc<Hub> {
        Arc::new(Hub {
            inner: Mutex::new(HubInner { published: revision, next_id: 0, subscribers: Vec::new() }),
            // A zero-capacity tokio channel panics; one slot is the least.
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // Every critical section leaves the state consistent at each step
        // (a subscriber is either fully registered or removed), so a panic
        // elsewhere while holding the lock leaves nothing to repair.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hand the events of the write at `revision` to the watchers. Callers
    /// hold their backend's writer lock, so revisions arrive in order.
    pub(super) fn publish(&self, revision: Revision, events: &[Event]) {
        let mut inner = self.lock();
        inner.published = revision;
        let prefix_of = |s: &Subscriber, e: &Event| e.revision > s.from && e.key.starts_with(&s.prefix);
        inner.subscribers.retain_mut(|s| {
            let matching = events.iter().filter(|e| prefix_of(s, e)).count();
            if matching == 0 {
                s.delivered = s.delivered.max(revision);
                return !s.tx.is_closed();
            }
            // Reserve room for the whole revision first, so a watcher is
            // cut off between revisions and can resume from `delivered`
            // without missing half a transaction.
            match s.tx.try_reserve_many(matching) {
                Ok(permits) => {
                    for (permit, event) in permits.zip(events.iter().filter(|e| prefix_of(s, e))) {
                        permit.send(event.clone());
                    }
                    s.delivered = revision;
                    true
                }
                Err(TrySendError::Full(())) => {
                    let _ = s.end.set(End::Lagged { revision: s.delivered });
                    tracing::debug!(prefix = %s.prefix, resume = s.delivered, "watcher fell behind, closing it");
                    false
                }
                Err(TrySendError::Closed(())) => false,
            }
        });
    }

    /// Register a watcher for events under `prefix` above `from`. Returns
    /// it and the last revision published before it was registered: every
    /// event it will receive live is above that revision, so the caller
    /// replays `(from, start]` from the history into it.
    pub(super) fn subscribe(self: &Arc<Self>, prefix: &str, from: Revision) -> (Watch, Revision) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let end = Arc::new(OnceLock::new());
        let mut inner = self.lock();
        let start = inner.published;
        let id = inner.next_id;
        inner.next_id += 1;
        inner.subscribers.push(Subscriber {
            id,
            prefix: prefix.to_owned(),
            from,
            delivered: from.max(start),
            tx,
            end: Arc::clone(&end),
        });
        let watch = Watch {
            prefix: prefix.to_owned(),
            capacity: self.capacity,
            replay: VecDeque::new(),
            live: rx,
            end,
            hub: Arc::downgrade(self),
            id,
        };
        (watch, start)
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|s| s.id != id);
    }
}

/// A stream of [`Event`]s for the keys under one prefix, in revision order,
/// without gaps or duplicates. Dropping it unregisters the watcher.
///
/// The stream ends with an error: [`StoreError::WatchLagged`] when the
/// watcher fell too far behind (watch again from the revision it names),
/// [`StoreError::WatchClosed`] when the store was dropped.
pub struct Watch {
    prefix: String,
    capacity: usize,
    /// Events from the history, delivered before any live event.
    replay: VecDeque<Event>,
    live: mpsc::Receiver<Event>,
    end: Arc<OnceLock<End>>,
    hub: Weak<Hub>,
    id: u64,
}

impl Watch {
    /// Queue history events, to be delivered before the live ones.
    pub(super) fn push_replay(&mut self, event: Event) {
        self.replay.push_back(event);
    }

    /// The prefix this watch follows.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next event, waiting for one if need be.
    ///
    /// # Errors
    /// [`StoreError::WatchLagged`] or [`StoreError::WatchClosed`] once the
    /// stream has ended; every later call returns the same error.
    pub async fn recv(&mut self) -> Result<Event, StoreError> {
        if let Some(event) = self.replay.pop_front() {
            return Ok(event);
        }
        match self.live.recv().await {
            Some(event) => Ok(event),
            None => Err(self.ended()),
        }
    }

    /// As [`Watch::recv`], blocking the thread.
    ///
    /// # Panics
    /// When called from an async context (a tokio worker thread), as
    /// `tokio::sync::mpsc::Receiver::blocking_recv` does.
    ///
    /// # Errors
    /// As [`Watch::recv`].
    pub fn blocking_recv(&mut self) -> Result<Event, StoreError> {
        if let Some(event) = self.replay.pop_front() {
            return Ok(event);
        }
        match self.live.blocking_recv() {
            Some(event) => Ok(event),
            None => Err(self.ended()),
        }
    }

    /// The next event if one is ready, `None` if not.
    ///
    /// # Errors
    /// As [`Watch::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Event>, StoreError> {
        if let Some(event) = self.replay.pop_front() {
            return Ok(Some(event));
        }
        match self.live.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(self.ended()),
        }
    }

    fn ended(&self) -> StoreError {
        let prefix = self.prefix.clone();
        match self.end.get() {
            Some(End::Lagged { revision }) => {
                StoreError::WatchLagged { prefix, revision: *revision, capacity: self.capacity }
            }
            None => StoreError::WatchClosed { prefix },
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("replay", &self.replay.len())
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}
