//! The etcd backend: the store's keys in a real etcd cluster, for several
//! `berth serve` processes sharing one store.
//!
//! # Design
//! - **Keys.** A store key `/pods/default/web` lives at etcd key
//!   `{root}/pods/default/web` ([`EtcdOptions::root`], default `/berth`), so
//!   several clusters can share one etcd. Store keys must start with `/`
//!   here (anything else is [`StoreError::InvalidKey`]): that keeps the
//!   prefix `""` (everything) at `{root}/`, which no other root's keys share.
//! - **Revisions** are etcd's: the `mod_revision` and `create_revision` of a
//!   key, the header revision of a response. They are cluster-wide and count
//!   every write to the etcd, including other roots' and other programs':
//!   with nothing else writing, each write (each [`Store::txn`]) takes exactly
//!   one revision, as in the other backends, but a fresh etcd is at revision
//!   1, not 0, and with neighbours the revisions of one root have gaps.
//!   Nothing in berth may assume consecutive revisions from this backend.
//! - **Conditions** map onto one etcd transaction per write: `create`
//!   compares `create_revision == 0`, `update` and `delete` compare
//!   `mod_revision == expected` (which implies that the key exists) or,
//!   without `expected`, `version > 0`. The else branch reads every key
//!   of the transaction, and the first operation whose condition fails in
//!   that snapshot names the error, so the errors are those of the other
//!   backends, [`StoreError::Conflict`] with both revisions included.
//! - **Lists** are linearizable range reads, paginated ([`LIST_PAGE`] keys
//!   per request) at the revision of the first page, so a list is one
//!   snapshot and its revision is the first page's header revision.
//! - **Watches** are etcd watches with previous values (for the last value
//!   of a deleted key). Each watch is one gRPC stream, pumped by a task into
//!   a [`Hub`] of its own, so the [`Watch`] type, its bounded channel and its
//!   lag cut-off between revisions are those of the other backends.
//! - **Compaction.** After etcd's `compact(C)` the events above `C` are all
//!   there, but those *of* `C` may not be: etcd accepts a watch from `C`,
//!   yet a deletion made at `C` is not replayed (the compaction removes a
//!   tombstone at `C` together with its key; the model-based test found
//!   this with etcd 3.4). So the store's "history holds every event above `R`" is
//!   `R = C`: [`Store::compact`]`(keep_after)` compacts etcd at `keep_after`,
//!   and a watch from `from` starts etcd's watch at `from` itself (not
//!   `from + 1`; the hub drops the events of `from`), which etcd refuses
//!   exactly when `from < C`, naming `C`: [`StoreError::TooOld`] with
//!   `oldest: C`. etcd tells a watcher about the compaction only once it has
//!   caught up, so [`Store::watch`] finds it out first with a read at
//!   revision `from`, made after the watch is registered (a compaction cannot
//!   slip in between unnoticed), and then waits for etcd's cancellation.
//! - **Fencing** ([`EtcdStore::set_fence`]): every write of a fenced store
//!   also compares the lease of a leadership key, so a stale leader's
//!   writes fail with [`StoreError::Fenced`] in etcd itself.
//! - **Blocking.** [`Store`] is synchronous and etcd-client is async, so the
//!   store owns a small tokio runtime (one worker thread, named
//!   `berth-etcd`) that drives the gRPC connection and the watch pumps; each
//!   store method blocks the calling thread on that runtime with
//!   [`Runtime::block_on`]. Call the store methods, [`EtcdStore::connect`]
//!   included, from plain threads or `tokio::task::spawn_blocking`, never
//!   directly on an async worker thread: `block_on` panics there ("Cannot
//!   start a runtime from within a runtime"). Dropping the store is fine
//!   anywhere: it shuts the runtime down in the background.
//!
//! # Limitations
//! - The events of a watch arrive asynchronously, also the replayed ones:
//!   right after [`Store::watch`] returns, [`Watch::try_recv`] may still say
//!   `None` although there is history to replay. Use [`Watch::recv`].
//! - A watch whose stream fails (etcd restarts, the connection breaks) or
//!   that etcd cancels ends with [`StoreError::WatchClosed`]; watch again
//!   from the last revision seen (that answers [`StoreError::TooOld`] if the
//!   history is gone). etcd cancels a watcher that a compaction overtakes
//!   before it has caught up with the history, which for a new watch takes
//!   until etcd's next background sync (every 100 ms), so a compaction right
//!   after [`Store::watch`] can end it this way. New watches also see their
//!   first events up to those 100 ms late.
//! - There is no history limit here ([`super::StoreOptions::history_limit`]
//!   is not used): etcd keeps everything until someone compacts it, with
//!   [`Store::compact`] or etcd's `--auto-compaction-*` (whose compactions
//!   make watches from before them [`StoreError::TooOld`] just the same).
//! - etcd's limits apply: 1.5 MiB per request (`--max-request-bytes`), 128
//!   operations per transaction (`--max-txn-ops`). Larger writes fail with
//!   [`StoreError::Etcd`].
//! - A write that times out ([`EtcdOptions::request_timeout`]) or loses its
//!   connection has an unknown outcome, as with any remote database.
//! - etcd errors are [`StoreError::Etcd`] with the etcd-client error as
//!   source and the endpoints and etcd key as the location.
//! - Plain HTTP only, no etcd authentication: TLS and users need etcd-client's
//!   `tls` feature and options here.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue, KvClient,
    ResponseHeader, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use tokio::runtime::Runtime;

use super::watch::{Hub, Watch};
use super::{Event, EventKind, Op, Revision, Store, StoreError, Versioned, validate};
use crate::leader::Elector;

/// Keys per range request of [`Store::list`].
pub const LIST_PAGE: i64 = 500;

/// The largest gRPC message accepted from etcd (tonic's default is 4 MiB; a
/// page of large objects or a watch response with many events exceeds it).
const MAX_MESSAGE: usize = 64 << 20;

/// How often an idle watch pump checks whether its [`Watch`] was dropped.
const PUMP_IDLE_CHECK: Duration = Duration::from_millis(500);

/// How often [`Store::list`] restarts when etcd compacts the revision it is
/// paginating at.
const LIST_ATTEMPTS: usize = 3;

/// Where and how to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs (`http://host:port`) of the etcd members.
    pub endpoints: Vec<String>,
    /// The etcd key prefix of this cluster's keys, without a trailing `/`
    /// (one is removed); `""` uses the whole keyspace.
    pub root: String,
    /// How long one etcd request may take, and the connect timeout.
    pub request_timeout: Duration,
    /// How many events a watcher may have waiting before it is cut off with
    /// [`StoreError::WatchLagged`].
    pub watch_capacity: usize,
}

impl EtcdOptions {
    /// The defaults with these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdOptions {
        EtcdOptions { endpoints: endpoints.into_iter().map(Into::into).collect(), ..EtcdOptions::default() }
    }
}

impl Default for EtcdOptions {
    /// A local etcd (`http://127.0.0.1:2379`), root `/berth`, 10 s per
    /// request, 1,024 queued events per watcher.
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            root: "/berth".to_owned(),
            request_timeout: Duration::from_secs(10),
            watch_capacity: 1024,
        }
    }
}

/// A [`Store`] in etcd; see the module docs of `store::etcd`.
pub struct EtcdStore {
    /// Always `Some` until `drop`, which shuts it down in the background.
    runtime: Option<Runtime>,
    client: Client,
    kv: KvClient,
    root: String,
    options: EtcdOptions,
    /// The endpoints, for error messages.
    location: String,
    /// Every write also requires this; see [`EtcdStore::set_fence`].
    fence: RwLock<Option<Fence>>,
}

/// A condition every write of a fenced store carries: the etcd key `key`
/// (raw, not under the store's root) exists and is attached to `lease`.
/// A leader fences its controllers' store with its election key and lease
/// ([`crate::leader::Leadership::key`], [`crate::leader::Leadership::lease_id`]):
/// once the lease expires (the process stalled or lost etcd) its writes
/// fail with [`StoreError::Fenced`], even those it was in the middle of,
/// so a stale leader cannot write after another one took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: String,
    pub lease: i64,
}

impl EtcdStore {
    /// Connect to etcd and check that it answers (one read).
    ///
    /// # Panics
    /// When called on an async worker thread (see the module docs).
    ///
    /// # Errors
    /// [`StoreError::Etcd`] when the endpoints are malformed or etcd does
    /// not answer within [`EtcdOptions::request_timeout`].
    pub fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let location = options.endpoints.join(",");
        let root = options.root.trim_end_matches('/').to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-etcd")
            .enable_all()
            .build()
            .map_err(|e| {
                backend_error("starting the etcd client runtime", &location, etcd_client::Error::IoError(e))
            })?;
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.request_timeout)
            // HTTP/2 pings find a dead connection under an idle watch. etcd
            // refuses pings more often than every 5 s, and any ping on a
            // connection without streams (keep_alive_while_idle stays off).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        // The channel is created on the store's runtime, which then drives
        // its connections for every user of the client.
        let client = runtime
            .block_on(Client::connect(&options.endpoints, Some(connect)))
            .map_err(|e| backend_error("connecting to etcd", &location, e))?;
        let kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let store = EtcdStore { runtime: Some(runtime), client, kv, root, options, location, fence: RwLock::new(None) };
        // etcd-client connects lazily: ask once, so a wrong address fails here.
        store.current_revision()?;
        Ok(store)
    }

    /// The etcd key prefix of this store's keys (the root without its
    /// trailing `/`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The etcd client this store uses, for etcd features outside the
    /// [`Store`] trait. Its connection is driven by the store's runtime: it
    /// works from any runtime, but only while the store is alive.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An [`Elector`] for the election `name` of this cluster, on this
    /// store's connection (see [`EtcdStore::client`]). Its keys live under
    /// `{root}.elections/{name}/`, outside the store's keys, so lists and
    /// watches of the store do not see them.
    pub fn elector(&self, name: &str, identity: &str, lease_ttl: Duration) -> Elector {
        Elector::etcd(self.client(), &format!("{}.elections/{name}", self.root), identity, lease_ttl)
    }

    /// Fences (or, with None, unfences) every later write of this store:
    /// see [`Fence`]. Reads and watches are not affected.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fence;
    }

    fn runtime(&self) -> &Runtime {
        // Only `drop` takes the runtime out, and nothing runs after it.
        self.runtime.as_ref().expect("the runtime lives until the store is dropped")
    }

    /// Run one request on the store's runtime, blocking this thread, with
    /// the request timeout.
    fn request<T, F, Fut>(&self, call: F) -> Result<T, etcd_client::Error>
    where
        F: FnOnce(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.options.request_timeout;
        let kv = self.kv.clone();
        self.runtime().block_on(async move { tokio::time::timeout(timeout, call(kv)).await.unwrap_or_else(timed_out) })
    }

    /// The etcd key of a store key.
    fn etcd_key(&self, key: &str) -> Result<String, StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey { key: key.to_owned(), reason: "empty" });
        }
        self.etcd_prefix(key)
    }

    /// The etcd key prefix of a store key prefix.
    fn etcd_prefix(&self, prefix: &str) -> Result<String, StoreError> {
        if prefix.is_empty() {
            return Ok(format!("{}/", self.root));
        }
        if !prefix.starts_with('/') {
            return Err(StoreError::InvalidKey { key: prefix.to_owned(), reason: "etcd store keys start with '/'" });
        }
        Ok(format!("{}{prefix}", self.root))
    }

    /// Turn an etcd error into a [`StoreError`] naming the operation and
    /// the etcd key (or root) it was about.
    fn err<'a>(&'a self, operation: &'static str, key: &'a str) -> impl FnOnce(etcd_client::Error) -> StoreError + 'a {
        move |e| backend_error(operation, &format!("{}{key}", self.location), e)
    }

    /// Apply `ops` as one etcd transaction. Returns the revision and the
    /// responses of the success branch.
    fn write(&self, ops: &[Op]) -> Result<(Revision, Vec<TxnOpResponse>), StoreError> {
        validate(ops)?;
        let keys = ops.iter().map(|op| self.etcd_key(op.key())).collect::<Result<Vec<_>, _>>()?;
        if ops.is_empty() {
            return Ok((self.current_revision()?, Vec::new()));
        }
        let mut compares = Vec::with_capacity(ops.len());
        let mut success = Vec::with_capacity(ops.len());
        let mut failure = Vec::with_capacity(ops.len());
        for (op, key) in ops.iter().zip(&keys) {
            match op {
                Op::Create { value, .. } => {
                    compares.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
                    success.push(TxnOp::put(key.as_str(), value.as_slice(), None));
                }
                Op::Update { value, expected, .. } => {
                    compares.extend(exists(key, *expected));
                    success.push(TxnOp::put(key.as_str(), value.as_slice(), None));
                }
                Op::Delete { expected, .. } => {
                    compares.extend(exists(key, *expected));
                    success.push(TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key())));
                }
            }
            // The revisions are enough to name the failing condition.
            failure.push(TxnOp::get(key.as_str(), Some(GetOptions::new().with_keys_only())));
        }
        let fence = self.fence.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(fence) = &fence {
            compares.push(Compare::lease(fence.key.as_str(), CompareOp::Equal, fence.lease));
        }
        let txn = Txn::new().when(compares).and_then(success).or_else(failure);
        let context = match keys.as_slice() {
            [key] => key.as_str(),
            _ => self.root.as_str(),
        };
        let response = self.request(|mut kv| async move { kv.txn(txn).await }).map_err(self.err("writing", context))?;
        let revision = header_revision(response.header()).map_err(self.err("writing", context))?;
        let responses = response.op_responses();
        if response.succeeded() {
            return Ok((revision, responses));
        }
        // The else branch read every key in the snapshot the conditions were
        // evaluated in; report the first failing one, as `apply` does.
        for (op, read) in ops.iter().zip(&responses) {
            let current = match read {
                TxnOpResponse::Get(get) => get.kvs().first().map(versioned),
                _ => None,
            };
            let key = op.key().to_owned();
            match (op, current) {
                (Op::Create { .. }, Some(current)) => {
                    return Err(StoreError::AlreadyExists { key, revision: current.revision });
                }
                (Op::Create { .. }, None) => {}
                (Op::Update { .. } | Op::Delete { .. }, None) => return Err(StoreError::NotFound { key }),
                (Op::Update { expected, .. } | Op::Delete { expected, .. }, Some(current)) => {
                    if let Some(expected) = *expected
                        && expected != current.revision
                    {
                        return Err(StoreError::Conflict { key, expected, current: current.revision });
                    }
                }
            }
        }
        // Every operation's condition held: the fence failed.
        if let Some(fence) = fence {
            return Err(StoreError::Fenced { key: fence.key, lease: fence.lease });
        }
        let why = "etcd refused the transaction's conditions, but they all hold in its answer";
        Err(backend_error("writing", &format!("{}{context}", self.location), etcd_client::Error::Internal(why.into())))
    }

    /// Open an etcd watch from revision `start` and wait for etcd to confirm
    /// it. Returns the stream and the revision etcd was at when it
    /// registered the watcher.
    fn open_watch(&self, key: &str, start: Revision) -> Result<(WatchStream, Revision), etcd_client::Error> {
        let mut client = self.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(etcd_revision(start));
        let key = key.to_owned();
        let timeout = self.options.request_timeout;
        self.runtime().block_on(async move {
            let open = async {
                let mut stream = client.watch(key, Some(options)).await?;
                let first = stream.message().await?.ok_or_else(|| {
                    etcd_client::Error::WatchError("the watch stream ended before etcd confirmed the watch".into())
                })?;
                if !first.created() || first.canceled() {
                    let reason = format!("etcd did not create the watch: {}", first.cancel_reason());
                    return Err(etcd_client::Error::WatchError(reason));
                }
                Ok((stream, header_revision(first.header())?))
            };
            tokio::time::timeout(timeout, open).await.unwrap_or_else(timed_out)
        })
    }

    /// After a read at a watch's start found it compacted: the compaction
    /// revision, from the cancellation etcd sends the watch (the first thing
    /// it sends a watcher from a compacted revision).
    fn compaction_of(&self, stream: &mut WatchStream) -> Result<Revision, etcd_client::Error> {
        let timeout = self.options.request_timeout;
        self.runtime().block_on(async {
            let wait = async {
                loop {
                    let Some(response) = stream.message().await? else {
                        return Err(etcd_client::Error::WatchError("the watch stream ended".into()));
                    };
                    if response.compact_revision() > 0 {
                        return Ok(revision(response.compact_revision()));
                    }
                    if response.canceled() {
                        let reason = format!("etcd canceled the watch: {}", response.cancel_reason());
                        return Err(etcd_client::Error::WatchError(reason));
                    }
                }
            };
            tokio::time::timeout(timeout, wait).await.unwrap_or_else(timed_out)
        })
    }
}

/// The compares that make an update or delete of `key` conditional.
fn exists(key: &str, expected: Option<Revision>) -> Vec<Compare> {
    match expected {
        None => vec![Compare::version(key, CompareOp::Greater, 0)],
        // A missing key has mod_revision 0, so `== expected` alone would let
        // an update of a missing key with `expected: 0` create it. The two
        // compares never both hold: the answer is NotFound or Conflict.
        Some(0) => vec![Compare::version(key, CompareOp::Greater, 0), Compare::mod_revision(key, CompareOp::Equal, 0)],
        Some(expected) => vec![Compare::mod_revision(key, CompareOp::Equal, etcd_revision(expected))],
    }
}

/// The store error for a failed etcd request.
fn backend_error(operation: &'static str, location: &str, source: etcd_client::Error) -> StoreError {
    StoreError::Etcd { operation, location: location.to_owned(), source: Box::new(source) }
}

fn timed_out<T>(_: tokio::time::error::Elapsed) -> Result<T, etcd_client::Error> {
    Err(etcd_client::Error::IoError(io::Error::new(io::ErrorKind::TimedOut, "etcd did not answer in time")))
}

/// Whether etcd refused a read or compaction because the revision is
/// compacted already.
fn is_compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("required revision has been compacted"))
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision, etcd_client::Error> {
    header
        .map(|h| revision(h.revision()))
        .ok_or_else(|| etcd_client::Error::Internal("etcd answered without a response header".into()))
}

/// etcd revisions are positive; a negative one would be a protocol error,
/// read as 0.
fn revision(etcd: i64) -> Revision {
    Revision::try_from(etcd).unwrap_or(0)
}

/// A store revision as etcd's `int64`; beyond it no etcd revision matches.
fn etcd_revision(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn versioned(kv: &KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        revision: revision(kv.mod_revision()),
        create_revision: revision(kv.create_revision()),
    }
}

/// The end of the range of keys starting with `prefix`, as etcd computes it
/// for `--prefix`: the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes (or nothing): every key from the prefix on.
    vec![0]
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let k = self.etcd_key(key)?;
        let request = k.clone();
        let response =
            self.request(|mut kv| async move { kv.get(request, None).await }).map_err(self.err("reading", &k))?;
        Ok(response.kvs().first().map(versioned))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, Revision), StoreError> {
        let start = self.etcd_prefix(prefix)?;
        let end = prefix_end(start.as_bytes());
        let mut attempt = 0;
        'attempts: loop {
            attempt += 1;
            let mut items = Vec::new();
            // The revision of the first page, which the others are read at.
            let mut at: Option<i64> = None;
            let mut from = start.clone().into_bytes();
            loop {
                let mut options = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
                if let Some(at) = at {
                    options = options.with_revision(at);
                }
                let key = from.clone();
                let page = match self.request(|mut kv| async move { kv.get(key, Some(options)).await }) {
                    Ok(page) => page,
                    // The snapshot of the first page was compacted away
                    // while paginating: start over at the new revision.
                    Err(e) if at.is_some() && is_compacted(&e) && attempt < LIST_ATTEMPTS => continue 'attempts,
                    Err(e) => return Err(self.err("listing", &start)(e)),
                };
                let snapshot = match at {
                    Some(at) => at,
                    None => {
                        let header = header_revision(page.header()).map_err(self.err("listing", &start))?;
                        etcd_revision(header)
                    }
                };
                at = Some(snapshot);
                for kv in page.kvs() {
                    let key = kv.key().get(self.root.len()..).unwrap_or_default();
                    items.push((String::from_utf8_lossy(key).into_owned(), versioned(kv)));
                }
                match page.kvs().last() {
                    Some(last) if page.more() => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => return Ok((items, revision(snapshot))),
                }
            }
        }
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, Versioned), StoreError> {
        let (revision, responses) = self.write(&[Op::Delete { key: key.to_owned(), expected }])?;
        let removed = match responses.first() {
            Some(TxnOpResponse::Delete(delete)) => delete.prev_kvs().first().map(versioned),
            _ => None,
        };
        // The delete succeeded under `version > 0` (or a matching
        // mod_revision), so etcd returned the previous value.
        removed
            .ok_or_else(|| {
                let why = "etcd deleted the key without returning its previous value";
                backend_error("deleting", &format!("{}{key}", self.location), etcd_client::Error::Internal(why.into()))
            })
            .map(|removed| (revision, removed))
    }

    fn txn(&self, ops: &[Op]) -> Result<Revision, StoreError> {
        Ok(self.write(ops)?.0)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let start = self.etcd_prefix(prefix)?;
        // From `from`, not `from + 1`: see "Compaction" in the module docs.
        // etcd reads a start revision of 0 as "now"; its revision 1 is the
        // empty store, which has no events to lose.
        let begin = from.max(1);
        let (mut stream, created) = self.open_watch(&start, begin).map_err(self.err("starting a watch", &start))?;
        if begin <= created {
            // Is `begin` compacted? A read at that revision says so at once;
            // etcd's answer to the watch comes once it has caught up.
            let key = start.clone();
            let options = GetOptions::new().with_count_only().with_revision(etcd_revision(begin));
            match self.request(|mut kv| async move { kv.get(key, Some(options)).await }) {
                Ok(_) => {}
                Err(e) if is_compacted(&e) => {
                    let compacted =
                        self.compaction_of(&mut stream).map_err(self.err("reading a watch's compaction", &start))?;
                    return Err(StoreError::TooOld { requested: from, oldest: compacted });
                }
                Err(e) => return Err(self.err("starting a watch", &start)(e)),
            }
        }
        let hub = Hub::new(from, self.options.watch_capacity);
        let (watch, _) = hub.subscribe(prefix, from);
        self.runtime().spawn(pump(stream, hub, self.root.len(), start));
        Ok(watch)
    }

    fn current_revision(&self) -> Result<Revision, StoreError> {
        let key = format!("{}/", self.root);
        let request = key.clone();
        let options = GetOptions::new().with_count_only();
        let response = self
            .request(|mut kv| async move { kv.get(request, Some(options)).await })
            .map_err(self.err("reading the revision", &key))?;
        header_revision(response.header()).map_err(self.err("reading the revision", &key))
    }

    fn compact(&self, keep_after: Revision) -> Result<(), StoreError> {
        let current = self.current_revision()?;
        if keep_after > current {
            return Err(StoreError::FutureRevision { requested: keep_after, current });
        }
        if keep_after == 0 {
            return Ok(());
        }
        let at = etcd_revision(keep_after);
        match self.request(|mut kv| async move { kv.compact(at, None).await }) {
            Ok(_) => Ok(()),
            // Compacting backwards does nothing, as in the other backends.
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) => Err(self.err("compacting", &self.root)(e)),
        }
    }
}

/// Move the events of one etcd watch into its hub until the stream ends or
/// the [`Watch`] is dropped. Dropping the stream cancels the etcd watch.
async fn pump(mut stream: WatchStream, hub: Arc<Hub>, root_len: usize, key: String) {
    let mut idle = tokio::time::interval(PUMP_IDLE_CHECK);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    if response.canceled() {
                        tracing::debug!(
                            %key,
                            compact_revision = response.compact_revision(),
                            reason = response.cancel_reason(),
                            "etcd canceled a watch"
                        );
                        return;
                    }
                    publish(&hub, &response, root_len);
                }
                Ok(None) => {
                    tracing::debug!(%key, "etcd ended a watch stream");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "etcd watch stream failed");
                    return;
                }
            },
            _ = idle.tick() => {}
        }
        // The Watch holds the only weak references to its hub.
        if Arc::weak_count(&hub) == 0 {
            return;
        }
    }
}

/// Hand the events of one watch response to the hub, one call per
/// revision. etcd never splits a revision across responses (without the
/// `fragment` option, which is not used).
fn publish(hub: &Hub, response: &WatchResponse, root_len: usize) {
    let mut batch: Vec<Event> = Vec::new();
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let key = String::from_utf8_lossy(kv.key().get(root_len..).unwrap_or_default()).into_owned();
        let revision = revision(kv.mod_revision());
        let event = match event.event_type() {
            EventType::Put => {
                // version counts the writes since the key was (re)created.
                let kind = if kv.version() == 1 { EventKind::Added } else { EventKind::Modified };
                Event { kind, key, value: kv.value().to_vec(), revision }
            }
            EventType::Delete => {
                // etcd omits the previous value if its revision is compacted.
                let value = event.prev_kv().map(|prev| prev.value().to_vec()).unwrap_or_default();
                Event { kind: EventKind::Deleted, key, value, revision }
            }
        };
        if let Some(first) = batch.first()
            && first.revision != event.revision
        {
            hub.publish(first.revision, &batch);
            batch.clear();
        }
        batch.push(event);
    }
    if let Some(first) = batch.first() {
        hub.publish(first.revision, &batch);
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Not `Runtime::drop`, which blocks and panics on an async worker
        // thread. The watch pumps stop with the runtime, which ends their
        // watches with WatchClosed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore").field("options", &self.options).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/berth/"), b"/berth0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn updates_of_a_missing_key_never_match() {
        // `expected: Some(0)` must not turn into "create if missing".
        assert_eq!(exists("/k", Some(0)).len(), 2);
        assert_eq!(exists("/k", Some(7)).len(), 1);
    }
}
