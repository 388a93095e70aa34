//! The store: versioned objects, watches, durability.
//!
//! A key-value store with etcd's semantics, which the API server keeps its
//! objects in: every write gets the next cluster-wide [`Revision`], every key
//! remembers the revision of its last write (an object's `resourceVersion`),
//! writes can be conditional on that revision (compare-and-swap), several
//! writes can commit atomically ([`Store::txn`]), and a [`Watch`] streams the
//! changes under a key prefix from any revision still in the history.
//!
//! Three backends implement [`Store`]: [`RedbStore`] (embedded, one durable
//! file, the default), [`EtcdStore`] (a real etcd, for several `berth serve`
//! processes with leader election, see [`crate::leader`]) and [`MemStore`]
//! (in memory, for scheduler and controller tests).
//!
//! # Design
//! - **Blocking trait.** [`Store`] is synchronous and object safe
//!   (`Arc<dyn Store>`): redb is a blocking library and a durable write is an
//!   `fsync`, so async callers run store calls under
//!   `tokio::task::spawn_blocking`, as the house style asks for any blocking
//!   work. [`Watch`] is the exception: it is a channel, with an async
//!   [`Watch::recv`] for the API server and [`Watch::blocking_recv`] for
//!   threads. An etcd backend can keep its async client on a runtime of its
//!   own and block on replies.
//! - **Revisions** ([`Revision`]): a counter in the backend, read and bumped
//!   in the same transaction as the objects, so a revision is never reused or
//!   skipped, also across restarts and crashes. A fresh store is at revision
//!   0; the first write is revision 1. Each write, and each [`Store::txn`] as
//!   a whole, takes exactly one revision: all the events of a transaction
//!   carry the same revision, as in etcd. An unconditional update of a value
//!   with itself is still a write with a new revision; skipping no-op updates
//!   is the API server's business.
//! - **Conditions.** `create` requires the key to be absent; `update` and
//!   `delete` require it to be present and, given `expected`, its mod
//!   revision to equal it. Each maps onto one etcd transaction comparing
//!   `create_revision` or `mod_revision`. A transaction may not name a key
//!   twice (etcd refuses that too), so every operation is checked against the
//!   state before the transaction.
//! - **History.** Every write also records its events (key, kind, value; for
//!   a delete the last value) under its revision. Watches replay from there,
//!   so a client that lost its connection resumes from the last revision it
//!   saw. The history keeps the events of the last
//!   [`StoreOptions::history_limit`] revisions; [`Store::compact`] drops more.
//!   A watch from a revision whose events are gone gets
//!   [`StoreError::TooOld`], which the API turns into 410 Gone, as Kubernetes
//!   does. `from = 0` means the start of the history, not Kubernetes'
//!   "any version": the API serves a watch without a resourceVersion as a
//!   list followed by a watch from the list's revision.
//! - **Watches** (`watch.rs`). Writes are serialised by a writer lock held
//!   from the start of the transaction until its events have been handed to
//!   the in-process watchers, so watchers see revisions in order. A new watch
//!   registers first, noting the last revision handed out at that moment
//!   (`start`), then reads `(from, start]` from the history in a read
//!   transaction begun after registering; every live event it then receives
//!   is newer than `start`. Replay and live events therefore neither overlap
//!   nor leave a gap. The replay is buffered in the [`Watch`], the live events
//!   in a bounded channel of [`StoreOptions::watch_capacity`]; a watcher that
//!   lets the channel fill up is cut off ([`StoreError::WatchLagged`], naming
//!   the revision to resume from) rather than slowing down writers. The cut
//!   happens between revisions, never inside one transaction's events.
//! - **Durability** (`redb.rs`). Commits use redb's
//!   [`Durability::Immediate`](::redb::Durability::Immediate): when a write
//!   method returns `Ok`, the commit is on disk and survives `kill -9` (and,
//!   as far as the disk honours `fsync`, power loss). The objects, history
//!   and revision counter change in one redb transaction.
//!
//! # Limitations
//! - One process per redb file: redb locks it, and a second [`RedbStore::open`]
//!   fails with [`StoreError::Open`]. Running several API servers needs the
//!   etcd backend.
//! - Watches only see writes made through the same [`Store`] value, as they
//!   are fanned out in process.
//! - A write that fails inside redb's commit (an I/O error during `fsync`) has
//!   an unknown outcome, as with any database; redb then refuses further
//!   writes until the store is reopened, and the reopened store reports the
//!   truth.
//! - The history stores a full copy of each written value, so its size is
//!   about `history_limit` times the average object size, and a watch from
//!   far back holds its whole replay in memory until it is read.
//! - No size limit on keys or values here (redb's is 3 GiB); the API server
//!   limits request bodies. etcd's default request limit is 1.5 MiB.
//! - Per-key version counts, leases and range deletes, which etcd has, are
//!   not part of the trait: nothing needs them yet.

mod etcd;
pub use self::etcd::{EtcdOptions, EtcdStore, Fence};
mod mem;
mod redb;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;

pub use self::mem::MemStore;
pub use self::redb::RedbStore;
pub use self::watch::Watch;

/// A position in the store's history. It increases by one per write (one
/// per [`Store::txn`]); an object's `resourceVersion` is the revision of its
/// last write. 0 is the revision of an empty store.
pub type Revision = u64;

/// A stored value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value as written (JSON, for API objects).
    pub value: Vec<u8>,
    /// The revision of the last write of this key (etcd's `mod_revision`).
    pub revision: Revision,
    /// The revision that created this key (etcd's `create_revision`).
    pub create_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as a [`Watch`] delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The new value; for [`EventKind::Deleted`] the last value before the
    /// delete.
    pub value: Vec<u8>,
    /// The revision of the write. All events of one [`Store::txn`] share it.
    pub revision: Revision,
}

/// One write in a [`Store::txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `value` under `key`, which must not exist.
    Create { key: String, value: Vec<u8> },
    /// Overwrite `key`, which must exist and, given `expected`, have been
    /// last written at that revision.
    Update { key: String, value: Vec<u8>, expected: Option<Revision> },
    /// Remove `key`, which must exist and, given `expected`, have been last
    /// written at that revision.
    Delete { key: String, expected: Option<Revision> },
}

impl Op {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// Tuning shared by the backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many of the most recent revisions keep their events for watches
    /// to resume from. Older events are dropped as new writes arrive; a watch
    /// from before them gets [`StoreError::TooOld`].
    pub history_limit: usize,
    /// How many live events a watcher may have waiting before it is cut off
    /// with [`StoreError::WatchLagged`].
    pub watch_capacity: usize,
}

impl Default for StoreOptions {
    /// 10,000 revisions of history and 1,024 queued events per watcher.
    /// Kubernetes compacts etcd every five minutes; a small cluster writes
    /// far fewer than 10,000 times in that, while a disk doing ~1,000
    /// durable writes per second could fill it in ten seconds of saturation.
    fn default() -> Self {
        StoreOptions { history_limit: 10_000, watch_capacity: 1024 }
    }
}

/// The store interface the API server, scheduler and controllers use.
///
/// Every method blocks (see the module docs); call it from
/// `tokio::task::spawn_blocking` in async code.
pub trait Store: Send + Sync {
    /// The value under `key`, if any.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Every key starting with `prefix` (in key order) and the store's
    /// revision at the moment of the read. The list is a consistent
    /// snapshot: a watch from the returned revision continues it with no gap.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, Revision), StoreError>;

    /// Write `value` under `key`, which must not exist. Returns the write's
    /// revision.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`], [`StoreError::InvalidKey`],
    /// [`StoreError::Backend`].
    fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.txn(&[Op::Create { key: key.to_owned(), value: value.to_vec() }])
    }

    /// Overwrite `key`, which must exist and, if `expected` is given, have
    /// been last written at revision `expected`. Returns the write's revision.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Conflict`] (with both
    /// revisions) when `expected` is stale, [`StoreError::InvalidKey`],
    /// [`StoreError::Backend`].
    fn update(&self, key: &str, value: &[u8], expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.txn(&[Op::Update { key: key.to_owned(), value: value.to_vec(), expected }])
    }

    /// Remove `key`, which must exist and, if `expected` is given, have been
    /// last written at revision `expected`. Returns the delete's revision and
    /// the value it removed.
    ///
    /// # Errors
    /// As [`Store::update`].
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, Versioned), StoreError>;

    /// Apply several writes atomically: all of them or, if any fails its
    /// condition, none. They share one revision, which is returned; their
    /// events reach watchers in the order of `ops`. An empty `ops` writes
    /// nothing and returns the current revision.
    ///
    /// # Errors
    /// The first failing operation's error ([`StoreError::AlreadyExists`],
    /// [`StoreError::NotFound`], [`StoreError::Conflict`]), or
    /// [`StoreError::DuplicateKey`] when two operations name one key,
    /// [`StoreError::InvalidKey`], [`StoreError::Backend`].
    fn txn(&self, ops: &[Op]) -> Result<Revision, StoreError>;

    /// The events for keys starting with `prefix` with a revision above
    /// `from`, from the history, then live ones as they are written. To
    /// follow a [`Store::list`], pass the revision it returned.
    ///
    /// # Errors
    /// [`StoreError::TooOld`] when events after `from` have been compacted,
    /// [`StoreError::Backend`].
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError>;

    /// The revision of the last write.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Drop the history up to and including `keep_after`: a watch from a
    /// revision below `keep_after` then gets [`StoreError::TooOld`]. Objects
    /// are not affected. Compacting to a revision that is already compacted
    /// does nothing.
    ///
    /// # Errors
    /// [`StoreError::FutureRevision`] when `keep_after` is above the current
    /// revision, [`StoreError::Backend`].
    fn compact(&self, keep_after: Revision) -> Result<(), StoreError>;
}

/// Why a store operation failed.
///
/// redb's errors are boxed: they are large and rare, and `StoreError` is
/// returned on every path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<::redb::DatabaseError>,
    },
    #[error("store {} is not a berth store or has an unknown format: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{operation} in store {}", path.display())]
    Backend {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: Box<::redb::Error>,
    },
    #[error("{key:?} already exists (revision {revision})")]
    AlreadyExists { key: String, revision: Revision },
    #[error("{key:?} not found")]
    NotFound { key: String },
    #[error("{key:?} was modified: expected revision {expected}, current {current}")]
    Conflict { key: String, expected: Revision, current: Revision },
    #[error("transaction writes {key:?} more than once")]
    DuplicateKey { key: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("too old resource version: {requested} (oldest is {oldest})")]
    TooOld { requested: Revision, oldest: Revision },
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("watch on {prefix:?} fell {capacity} events behind and was closed; resume from revision {revision}")]
    WatchLagged { prefix: String, revision: Revision, capacity: usize },
    #[error("watch on {prefix:?} ended: the store was closed")]
    WatchClosed { prefix: String },
    /// An etcd request failed (`location` names the endpoints and key).
    #[error("{operation} at {location}")]
    Etcd {
        operation: &'static str,
        location: String,
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// A fenced write (see `EtcdStore::fence`) was refused: this process's
    /// leadership key is gone or belongs to another lease, so another
    /// process may lead.
    #[error("write refused: {key:?} no longer holds lease {lease:x}, so this process no longer leads")]
    Fenced { key: String, lease: i64 },
}

/// One applied operation: its event and, for updates and deletes, the value
/// it replaced.
struct Applied {
    event: Event,
    previous: Option<Versioned>,
}

/// A backend's view of a write transaction in progress, for [`apply`].
trait Staging {
    fn read(&mut self, key: &str) -> Result<Option<Versioned>, StoreError>;
    fn put(&mut self, key: &str, value: &[u8], revision: Revision, create_revision: Revision)
    -> Result<(), StoreError>;
    fn remove(&mut self, key: &str) -> Result<(), StoreError>;
}

/// Check what can be checked without reading: keys are non-empty and named
/// once.
fn validate(ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = BTreeSet::new();
    for op in ops {
        let key = op.key();
        if key.is_empty() {
            return Err(StoreError::InvalidKey { key: key.to_owned(), reason: "empty" });
        }
        if !seen.insert(key) {
            return Err(StoreError::DuplicateKey { key: key.to_owned() });
        }
    }
    Ok(())
}

/// Apply `ops` at `revision`, checking each condition. The semantics of
/// every backend live here; on error the caller discards the transaction.
fn apply(staging: &mut impl Staging, ops: &[Op], revision: Revision) -> Result<Vec<Applied>, StoreError> {
    let check = |key: &str, current: Option<&Versioned>, expected: Option<Revision>| match (current, expected) {
        (None, _) => Err(StoreError::NotFound { key: key.to_owned() }),
        (Some(current), Some(expected)) if current.revision != expected => {
            Err(StoreError::Conflict { key: key.to_owned(), expected, current: current.revision })
        }
        (Some(_), _) => Ok(()),
    };
    let mut applied = Vec::with_capacity(ops.len());
    for op in ops {
        let (kind, key, value, previous) = match op {
            Op::Create { key, value } => {
                if let Some(current) = staging.read(key)? {
                    return Err(StoreError::AlreadyExists { key: key.clone(), revision: current.revision });
                }
                staging.put(key, value, revision, revision)?;
                (EventKind::Added, key, value.clone(), None)
            }
            Op::Update { key, value, expected } => {
                let current = staging.read(key)?;
                check(key, current.as_ref(), *expected)?;
                let create_revision = current.as_ref().map_or(revision, |c| c.create_revision);
                staging.put(key, value, revision, create_revision)?;
                (EventKind::Modified, key, value.clone(), current)
            }
            Op::Delete { key, expected } => {
                let current = staging.read(key)?;
                check(key, current.as_ref(), *expected)?;
                staging.remove(key)?;
                let last = current.as_ref().map(|c| c.value.clone()).unwrap_or_default();
                (EventKind::Deleted, key, last, current)
            }
        };
        applied.push(Applied { event: Event { kind, key: key.clone(), value, revision }, previous });
    }
    Ok(applied)
}

/// The oldest revision a watch may start from once the history ends at
/// `revision`: events of the last `history_limit` revisions are kept.
fn history_floor(revision: Revision, history_limit: usize) -> Revision {
    revision.saturating_sub(u64::try_from(history_limit).unwrap_or(u64::MAX))
}

/// The value a single delete removed.
fn removed(key: &str, mut applied: Vec<Applied>) -> Result<Versioned, StoreError> {
    // `apply` fails with NotFound before it returns a delete without a
    // previous value, so the error below is unreachable.
    applied.pop().and_then(|a| a.previous).ok_or_else(|| StoreError::NotFound { key: key.to_owned() })
}
