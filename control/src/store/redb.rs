//! The embedded backend: one redb file.
//!
//! Tables:
//! - `objects`: key → (mod revision, create revision, value);
//! - `history`: (revision, index within the write) → (kind, key, value);
//! - `meta`: `format` (1), `revision` (of the last write), `compacted` (the
//!   history holds every event above it).
//!
//! All three change in the one write transaction of each write, committed
//! with `Durability::Immediate`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::watch::{Hub, Watch};
use super::{
    Applied, Event, EventKind, Op, Revision, Staging, Store, StoreError, StoreOptions, Versioned, apply, history_floor,
    removed, validate,
};

const OBJECTS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("objects");
const HISTORY: TableDefinition<(u64, u32), (u8, &str, &[u8])> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const FORMAT: &str = "format";
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";
const FORMAT_VERSION: u64 = 1;

/// A [`Store`] in one redb file; see the module docs of `store`.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    options: StoreOptions,
    /// Held from the start of a write transaction until its events are
    /// published, so watchers see revisions in order.
    writer: Mutex<()>,
    hub: Arc<Hub>,
}

impl RedbStore {
    /// Open the store at `path`, creating the file if it does not exist.
    /// After a crash, redb repairs the file here (a full scan of it).
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened or is locked by
    /// another process, [`StoreError::Format`] when it is not a berth store,
    /// [`StoreError::Backend`] when setting up the tables fails.
    pub fn open(path: &Path, options: StoreOptions) -> Result<RedbStore, StoreError> {
        let db = Database::create(path)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source: Box::new(source) })?;
        let mut store = RedbStore {
            db,
            path: path.to_owned(),
            options,
            writer: Mutex::new(()),
            // Replaced below once the revision is known; nothing can
            // subscribe before `open` returns.
            hub: Hub::new(0, 0),
        };
        let revision = store.init()?;
        store.hub = Hub::new(revision, store.options.watch_capacity);
        Ok(store)
    }

    /// Create the tables and meta entries of a new file, check the format
    /// of an existing one; returns the current revision.
    fn init(&self) -> Result<Revision, StoreError> {
        let txn = self.begin_write()?;
        let revision = (|| {
            let mut meta = txn.open_table(META).map_err(self.err("opening table meta"))?;
            let format = meta.get(FORMAT).map_err(self.err("reading format"))?.map(|g| g.value());
            match format {
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(StoreError::Format {
                        path: self.path.clone(),
                        reason: format!("format version {other}, this build reads {FORMAT_VERSION}"),
                    });
                }
                None => {
                    meta.insert(FORMAT, FORMAT_VERSION).map_err(self.err("writing format"))?;
                }
            }
            let revision = meta.get(REVISION).map_err(self.err("reading revision"))?.map_or(0, |g| g.value());
            txn.open_table(OBJECTS).map_err(self.err("opening table objects"))?;
            txn.open_table(HISTORY).map_err(self.err("opening table history"))?;
            Ok(revision)
        })();
        self.finish(txn, revision)
    }

    /// The path of the store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err<E: Into<::redb::Error>>(&self, operation: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| StoreError::Backend { operation, path: self.path.clone(), source: Box::new(e.into()) }
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(self.err("beginning write transaction"))?;
        // The default, spelled out: commit() returns once the data is
        // written and fsynced. With `Durability::None` redb keeps commits
        // in process memory, and kill -9 loses them (the kill -9 test fails
        // that way); the fsync is what covers power loss too.
        txn.set_durability(Durability::Immediate).map_err(self.err("setting durability"))?;
        Ok(txn)
    }

    /// Commit `txn` if `result` is Ok, abort it otherwise.
    fn finish<T>(&self, txn: WriteTransaction, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                txn.commit().map_err(self.err("committing"))?;
                Ok(value)
            }
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(path = %self.path.display(), error = %abort, "aborting store transaction");
                }
                Err(e)
            }
        }
    }

    /// Apply `ops` as one write with the next revision, commit, publish.
    fn write(&self, ops: &[Op]) -> Result<(Revision, Vec<Applied>), StoreError> {
        validate(ops)?;
        // A panic while this was held dropped redb's transaction without
        // committing it, before anything was published: nothing to repair.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if ops.is_empty() {
            return Ok((self.current_revision()?, Vec::new()));
        }
        let txn = self.begin_write()?;
        let result = (|| {
            let mut meta = txn.open_table(META).map_err(self.err("opening table meta"))?;
            let revision = meta.get(REVISION).map_err(self.err("reading revision"))?.map_or(0, |g| g.value()) + 1;
            let applied = {
                let mut objects = txn.open_table(OBJECTS).map_err(self.err("opening table objects"))?;
                apply(&mut RedbStaging { store: self, objects: &mut objects }, ops, revision)?
            };
            let mut history = txn.open_table(HISTORY).map_err(self.err("opening table history"))?;
            for (index, a) in (0u32..).zip(&applied) {
                let e = &a.event;
                history
                    .insert((revision, index), (kind_code(e.kind), e.key.as_str(), e.value.as_slice()))
                    .map_err(self.err("writing history"))?;
            }
            meta.insert(REVISION, revision).map_err(self.err("writing revision"))?;
            let floor = history_floor(revision, self.options.history_limit);
            self.trim(&mut meta, &mut history, floor)?;
            Ok((revision, applied))
        })();
        let (revision, applied) = self.finish(txn, result)?;
        let events: Vec<Event> = applied.iter().map(|a| a.event.clone()).collect();
        self.hub.publish(revision, &events);
        Ok((revision, applied))
    }

    /// Drop history events at or below `floor` unless already done.
    fn trim(
        &self,
        meta: &mut Table<&str, u64>,
        history: &mut Table<(u64, u32), (u8, &str, &[u8])>,
        floor: Revision,
    ) -> Result<(), StoreError> {
        let compacted = meta.get(COMPACTED).map_err(self.err("reading compacted"))?.map_or(0, |g| g.value());
        if floor <= compacted {
            return Ok(());
        }
        history.retain_in((0, 0)..=(floor, u32::MAX), |_, _| false).map_err(self.err("trimming history"))?;
        meta.insert(COMPACTED, floor).map_err(self.err("writing compacted"))?;
        Ok(())
    }
}

/// The objects table of a write in progress.
struct RedbStaging<'s, 't, 'txn> {
    store: &'s RedbStore,
    objects: &'t mut Table<'txn, &'static str, (u64, u64, &'static [u8])>,
}

impl Staging for RedbStaging<'_, '_, '_> {
    fn read(&mut self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let guard = self.objects.get(key).map_err(self.store.err("reading object"))?;
        Ok(guard.map(|g| versioned(g.value())))
    }

    fn put(
        &mut self,
        key: &str,
        value: &[u8],
        revision: Revision,
        create_revision: Revision,
    ) -> Result<(), StoreError> {
        self.objects.insert(key, (revision, create_revision, value)).map_err(self.store.err("writing object"))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.objects.remove(key).map_err(self.store.err("removing object"))?;
        Ok(())
    }
}

fn versioned((revision, create_revision, value): (u64, u64, &[u8])) -> Versioned {
    Versioned { value: value.to_vec(), revision, create_revision }
}

fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Added => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let txn = self.db.begin_read().map_err(self.err("beginning read transaction"))?;
        let objects = txn.open_table(OBJECTS).map_err(self.err("opening table objects"))?;
        let guard = objects.get(key).map_err(self.err("reading object"))?;
        Ok(guard.map(|g| versioned(g.value())))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, Revision), StoreError> {
        let txn = self.db.begin_read().map_err(self.err("beginning read transaction"))?;
        let meta = txn.open_table(META).map_err(self.err("opening table meta"))?;
        let revision = meta.get(REVISION).map_err(self.err("reading revision"))?.map_or(0, |g| g.value());
        let objects = txn.open_table(OBJECTS).map_err(self.err("opening table objects"))?;
        let mut items = Vec::new();
        for entry in objects.range(prefix..).map_err(self.err("listing objects"))? {
            let (key, value) = entry.map_err(self.err("listing objects"))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            items.push((key.to_owned(), versioned(value.value())));
        }
        Ok((items, revision))
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, Versioned), StoreError> {
        let (revision, applied) = self.write(&[Op::Delete { key: key.to_owned(), expected }])?;
        Ok((revision, removed(key, applied)?))
    }

    fn txn(&self, ops: &[Op]) -> Result<Revision, StoreError> {
        Ok(self.write(ops)?.0)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        // Register before reading, so that whatever is published after the
        // read transaction's snapshot reaches the watcher live.
        let (mut watch, start) = self.hub.subscribe(prefix, from);
        let txn = self.db.begin_read().map_err(self.err("beginning read transaction"))?;
        let meta = txn.open_table(META).map_err(self.err("opening table meta"))?;
        let compacted = meta.get(COMPACTED).map_err(self.err("reading compacted"))?.map_or(0, |g| g.value());
        if from < compacted {
            return Err(StoreError::TooOld { requested: from, oldest: compacted });
        }
        if from >= start {
            return Ok(watch);
        }
        let history = txn.open_table(HISTORY).map_err(self.err("opening table history"))?;
        let range = (from + 1, 0)..=(start, u32::MAX);
        for entry in history.range(range).map_err(self.err("reading history"))? {
            let (position, event) = entry.map_err(self.err("reading history"))?;
            let (revision, _) = position.value();
            let (code, key, value) = event.value();
            if !key.starts_with(prefix) {
                continue;
            }
            let kind = match code {
                0 => EventKind::Added,
                1 => EventKind::Modified,
                2 => EventKind::Deleted,
                other => {
                    return Err(StoreError::Format {
                        path: self.path.clone(),
                        reason: format!("history event at revision {revision} has unknown kind {other}"),
                    });
                }
            };
            watch.push_replay(Event { kind, key: key.to_owned(), value: value.to_vec(), revision });
        }
        Ok(watch)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        let txn = self.db.begin_read().map_err(self.err("beginning read transaction"))?;
        let meta = txn.open_table(META).map_err(self.err("opening table meta"))?;
        Ok(meta.get(REVISION).map_err(self.err("reading revision"))?.map_or(0, |g| g.value()))
    }

    fn compact(&self, keep_after: Revision) -> Result<(), StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.begin_write()?;
        let result = (|| {
            let mut meta = txn.open_table(META).map_err(self.err("opening table meta"))?;
            let current = meta.get(REVISION).map_err(self.err("reading revision"))?.map_or(0, |g| g.value());
            if keep_after > current {
                return Err(StoreError::FutureRevision { requested: keep_after, current });
            }
            let mut history = txn.open_table(HISTORY).map_err(self.err("opening table history"))?;
            self.trim(&mut meta, &mut history, keep_after)
        })();
        self.finish(txn, result)
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).field("options", &self.options).finish_non_exhaustive()
    }
}
