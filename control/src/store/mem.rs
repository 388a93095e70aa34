//! The in-memory backend, for tests of the scheduler and controllers. Same
//! semantics and watch logic as the redb backend, nothing on disk.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::watch::{Hub, Watch};
use super::{
    Applied, Event, Op, Revision, Staging, Store, StoreError, StoreOptions, Versioned, apply, history_floor, removed,
    validate,
};

/// A [`Store`] in memory; see the module docs of `store`.
pub struct MemStore {
    state: Mutex<MemState>,
    options: StoreOptions,
    hub: Arc<Hub>,
}

struct MemState {
    objects: BTreeMap<String, Versioned>,
    /// Events in revision order; every event above `compacted`.
    history: VecDeque<Event>,
    revision: Revision,
    compacted: Revision,
}

impl MemState {
    fn trim(&mut self, floor: Revision) {
        if floor <= self.compacted {
            return;
        }
        while self.history.front().is_some_and(|e| e.revision <= floor) {
            self.history.pop_front();
        }
        self.compacted = floor;
    }
}

impl MemStore {
    /// An empty store at revision 0.
    pub fn new(options: StoreOptions) -> MemStore {
        let hub = Hub::new(0, options.watch_capacity);
        let state = MemState { objects: BTreeMap::new(), history: VecDeque::new(), revision: 0, compacted: 0 };
        MemStore { state: Mutex::new(state), options, hub }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // Writes stage their changes and apply them only once every check
        // passed, with nothing that can panic half-way; a poisoned lock
        // guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, ops: &[Op]) -> Result<(Revision, Vec<Applied>), StoreError> {
        validate(ops)?;
        let mut state = self.lock();
        if ops.is_empty() {
            return Ok((state.revision, Vec::new()));
        }
        let revision = state.revision + 1;
        let mut staging = MemStaging { objects: &state.objects, changes: BTreeMap::new() };
        let applied = apply(&mut staging, ops, revision)?;
        let changes = staging.changes;
        for (key, value) in changes {
            match value {
                Some(value) => state.objects.insert(key, value),
                None => state.objects.remove(&key),
            };
        }
        state.revision = revision;
        state.history.extend(applied.iter().map(|a| a.event.clone()));
        state.trim(history_floor(revision, self.options.history_limit));
        // Published under the state lock, so revisions reach watchers in
        // order.
        let events: Vec<Event> = applied.iter().map(|a| a.event.clone()).collect();
        self.hub.publish(revision, &events);
        Ok((revision, applied))
    }
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new(StoreOptions::default())
    }
}

/// Changes of a write in progress, over the committed objects.
struct MemStaging<'a> {
    objects: &'a BTreeMap<String, Versioned>,
    /// `None` marks a removal.
    changes: BTreeMap<String, Option<Versioned>>,
}

impl Staging for MemStaging<'_> {
    fn read(&mut self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(match self.changes.get(key) {
            Some(change) => change.clone(),
            None => self.objects.get(key).cloned(),
        })
    }

    fn put(
        &mut self,
        key: &str,
        value: &[u8],
        revision: Revision,
        create_revision: Revision,
    ) -> Result<(), StoreError> {
        let value = Versioned { value: value.to_vec(), revision, create_revision };
        self.changes.insert(key.to_owned(), Some(value));
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.changes.insert(key.to_owned(), None);
        Ok(())
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().objects.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, Revision), StoreError> {
        let state = self.lock();
        let items = state
            .objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok((items, state.revision))
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, Versioned), StoreError> {
        let (revision, applied) = self.write(&[Op::Delete { key: key.to_owned(), expected }])?;
        Ok((revision, removed(key, applied)?))
    }

    fn txn(&self, ops: &[Op]) -> Result<Revision, StoreError> {
        Ok(self.write(ops)?.0)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        // Register first, then read the history: the same hand-over as the
        // redb backend (the hub lock is never held while taking the state
        // lock, nor the other way round here, so no lock-order cycle with
        // `write`).
        let (mut watch, start) = self.hub.subscribe(prefix, from);
        let state = self.lock();
        if from < state.compacted {
            return Err(StoreError::TooOld { requested: from, oldest: state.compacted });
        }
        let replay = state.history.iter().skip_while(|e| e.revision <= from).take_while(|e| e.revision <= start);
        for event in replay.filter(|e| e.key.starts_with(prefix)) {
            watch.push_replay(event.clone());
        }
        Ok(watch)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }

    fn compact(&self, keep_after: Revision) -> Result<(), StoreError> {
        let mut state = self.lock();
        if keep_after > state.revision {
            return Err(StoreError::FutureRevision { requested: keep_after, current: state.revision });
        }
        state.trim(keep_after);
        Ok(())
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore").field("options", &self.options).finish_non_exhaustive()
    }
}
