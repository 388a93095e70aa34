//! Leader election: which of several `berth serve` processes runs the
//! scheduler and controllers.
//!
//! Callers have one shape for both store backends:
//!
//! ```no_run
//! # use berth_control::leader::{ElectionError, Elector};
//! # async fn controllers() {}
//! async fn run(elector: &Elector) -> Result<(), ElectionError> {
//!     loop {
//!         let leadership = elector.campaign().await?;
//!         tokio::select! {
//!             lost = leadership.lost() => tracing::warn!(%lost, "no longer the leader"),
//!             () = controllers() => return leadership.resign().await,
//!         }
//!     }
//! }
//! ```
//!
//! # Design
//! - [`Elector::single`] is for the embedded redb store, which one process
//!   owns: it is always the leader and never loses.
//! - [`Elector::etcd`] is etcd's election recipe (the `concurrency` package's
//!   `Election`, which `etcdctl elect` uses). A candidate grants itself a
//!   lease of the election's TTL, writes `{election}/{lease id}` = identity
//!   attached to the lease (a create-only transaction), and leads once no
//!   key under the election has a lower create revision. It waits for the
//!   deletion of the key just before its own, then looks again, so the
//!   candidates form a queue and a leader's departure wakes one candidate,
//!   not all. A key goes away when its holder resigns (revokes its lease) or
//!   its lease expires (the holder died or lost etcd for a TTL).
//! - **Stepping down in time.** A candidate renews its lease every TTL/3 and
//!   believes it leads only until `deadline` = the moment it *sent* its last
//!   successful renewal + the granted TTL. etcd expires the lease no sooner
//!   than a TTL after it *received* that renewal, and only then can the next
//!   candidate take over, so a leader that cannot renew (etcd unreachable)
//!   has stepped down before anyone else leads; this assumes the clocks of
//!   the two machines run at the same rate, not that they agree. Loss is
//!   sticky: once [`Leadership::is_leader`] or [`Leadership::lost`] have seen
//!   the deadline pass, a late renewal does not revive the leadership.
//! - The leader also watches its key: if it is deleted (an operator, a
//!   revoked lease) or the watch fails, leadership ends at once.
//!
//! # Limitations
//! - A leader whose process stalls (SIGSTOP, a long pause) across its
//!   deadline acts on its stale belief until it next checks
//!   [`Leadership::is_leader`]. What protects the store is fencing, not
//!   this module: `berth serve` writes its controllers' changes through an
//!   [`crate::store::EtcdStore`] fenced with [`Leadership::key`] and
//!   [`Leadership::lease_id`] ([`crate::store::Fence`]), so etcd refuses
//!   them once the lease is gone.
//! - Deleting a leader's key or revoking its lease from outside hands over at
//!   once, with no such guarantee: the old leader learns of it through its
//!   watch, possibly a moment after the new leader did.
//! - etcd leases have whole seconds: the TTL is rounded up, and etcd grants
//!   at least its minimum (1.5 election timeouts, 2 s with etcd's defaults).
//! - Dropping a [`Leadership`], or a [`Elector::campaign`] future before it
//!   finished, stops renewing without revoking: the others take over once the
//!   lease expires, as after a crash. [`Leadership::resign`] hands over at
//!   once.
//! - A leader that lost its etcd connection briefly may lose leadership
//!   (conservatively: a failed watch of its key ends it); campaign again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a candidate waits before retrying a failed lease renewal.
const RENEW_RETRY: Duration = Duration::from_millis(200);

/// Campaigns for leadership; see the module docs.
pub struct Elector {
    inner: ElectorInner,
}

enum ElectorInner {
    Single,
    // Boxed: an etcd client is several KiB.
    Etcd(Box<Candidate>),
}

/// An etcd election and who runs in it.
#[derive(Clone)]
struct Candidate {
    client: Client,
    /// The election's key prefix, ending in `/`.
    prefix: String,
    identity: String,
    ttl: Duration,
}

impl Elector {
    /// The elector of a process that is alone (the embedded store): always
    /// the leader.
    pub fn single() -> Elector {
        Elector { inner: ElectorInner::Single }
    }

    /// An elector for the election under the etcd key prefix `election`
    /// (a `/` is appended if missing), running as `identity` (stored as the
    /// value of its key, shown by [`Elector::leader`]) with leases of
    /// `lease_ttl`. [`crate::store::EtcdStore::elector`] picks the prefix
    /// for a store's cluster.
    pub fn etcd(client: Client, election: &str, identity: &str, lease_ttl: Duration) -> Elector {
        let mut prefix = election.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let candidate = Candidate { client, prefix, identity: identity.to_owned(), ttl: lease_ttl };
        Elector { inner: ElectorInner::Etcd(Box::new(candidate)) }
    }

    /// Wait until this candidate leads. Resolves at once for
    /// [`Elector::single`].
    ///
    /// # Errors
    /// [`ElectionError::Etcd`] when a request fails, [`ElectionError::Lost`]
    /// when the candidate's lease or key is lost while it waits; campaign
    /// again.
    pub async fn campaign(&self) -> Result<Leadership, ElectionError> {
        match &self.inner {
            ElectorInner::Single => Ok(Leadership { inner: LeadershipInner::Single }),
            ElectorInner::Etcd(candidate) => candidate.campaign().await.map(|held| Leadership { inner: held }),
        }
    }

    /// The identity of the current leader, if any. [`Elector::single`]
    /// answers `None`: there is nobody else to name.
    ///
    /// # Errors
    /// [`ElectionError::Etcd`] when the read fails.
    pub async fn leader(&self) -> Result<Option<String>, ElectionError> {
        let ElectorInner::Etcd(candidate) = &self.inner else { return Ok(None) };
        let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let response = candidate
            .client
            .clone()
            .get(candidate.prefix.as_str(), Some(options))
            .await
            .map_err(candidate.err("reading the leader"))?;
        Ok(response.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

impl fmt::Debug for Elector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            ElectorInner::Single => f.write_str("Elector::Single"),
            ElectorInner::Etcd(c) => f
                .debug_struct("Elector")
                .field("election", &c.prefix)
                .field("identity", &c.identity)
                .field("lease_ttl", &c.ttl)
                .finish_non_exhaustive(),
        }
    }
}

/// Why a [`Leadership`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The lease was not renewed before its deadline, or etcd no longer
    /// knows it.
    LeaseExpired,
    /// The leader's key was deleted.
    KeyDeleted,
    /// The watch of the leader's key failed, so a deletion would go unseen.
    WatchFailed { reason: String },
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::LeaseExpired => f.write_str("the lease expired before it could be renewed"),
            Lost::KeyDeleted => f.write_str("the election key was deleted"),
            Lost::WatchFailed { reason } => write!(f, "the watch of the election key failed: {reason}"),
        }
    }
}

/// Why a campaign or resignation failed.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("{operation} in election {election:?} as {identity:?}")]
    Etcd {
        operation: &'static str,
        election: String,
        identity: String,
        #[source]
        source: Box<etcd_client::Error>,
    },
    #[error("candidate {identity:?} in election {election:?} dropped out while waiting: {reason}")]
    Lost { election: String, identity: String, reason: Lost },
}

/// Being the leader, until [`Leadership::lost`] resolves.
pub struct Leadership {
    inner: LeadershipInner,
}

enum LeadershipInner {
    Single,
    Etcd(Box<Held>),
}

/// An etcd leadership: the key, its lease and the tasks keeping them.
struct Held {
    candidate: Candidate,
    key: String,
    lease: i64,
    state: Arc<watch::Sender<State>>,
    /// The lease keeper and the key watcher; aborted on drop.
    _tasks: Tasks,
}

/// What the tasks of a candidate know, shared with its [`Leadership`].
#[derive(Clone, Debug)]
struct State {
    /// Leadership ends here unless a renewal moves it.
    deadline: Instant,
    lost: Option<Lost>,
}

impl Leadership {
    /// Whether this is still the leader: nothing ended the leadership and
    /// its deadline has not passed. Once false, false for good.
    pub fn is_leader(&self) -> bool {
        match &self.inner {
            LeadershipInner::Single => true,
            LeadershipInner::Etcd(held) => check(&held.state).is_none(),
        }
    }

    /// Resolves when the leadership ends, with the reason; never for
    /// [`Elector::single`]. Resolving at the deadline does not need the
    /// renewal task to run.
    pub async fn lost(&self) -> Lost {
        let LeadershipInner::Etcd(held) = &self.inner else { return std::future::pending().await };
        until_lost(&held.state).await
    }

    /// The etcd key this leadership holds (for fencing writes on its
    /// create revision); `None` for [`Elector::single`].
    pub fn key(&self) -> Option<&str> {
        match &self.inner {
            LeadershipInner::Single => None,
            LeadershipInner::Etcd(held) => Some(&held.key),
        }
    }

    /// The etcd lease of this leadership; `None` for [`Elector::single`].
    pub fn lease_id(&self) -> Option<i64> {
        match &self.inner {
            LeadershipInner::Single => None,
            LeadershipInner::Etcd(held) => Some(held.lease),
        }
    }

    /// Step down and let the next candidate lead at once: stop renewing and
    /// revoke the lease, which deletes the key.
    ///
    /// # Errors
    /// [`ElectionError::Etcd`] when the revocation fails; the lease then
    /// expires within its TTL anyway.
    pub async fn resign(self) -> Result<(), ElectionError> {
        let LeadershipInner::Etcd(held) = self.inner else { return Ok(()) };
        let Held { candidate, lease, _tasks: tasks, .. } = *held;
        // Stop renewing first, so no renewal races the revocation.
        drop(tasks);
        match candidate.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            // Expired already: the key is gone too.
            Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("lease not found") => Ok(()),
            Err(e) => Err(candidate.err("revoking the lease")(e)),
        }
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            LeadershipInner::Single => f.write_str("Leadership::Single"),
            LeadershipInner::Etcd(held) => f
                .debug_struct("Leadership")
                .field("key", &held.key)
                .field("identity", &held.candidate.identity)
                .field("state", &*held.state.borrow())
                .finish_non_exhaustive(),
        }
    }
}

/// Record `lost` unless something was recorded first. For
/// `send_if_modified`.
fn mark(state: &mut State, lost: Lost) -> bool {
    if state.lost.is_some() {
        return false;
    }
    state.lost = Some(lost);
    true
}

/// Why the leadership ended, if it did, turning a passed deadline into
/// [`Lost::LeaseExpired`] for good.
fn check(state: &watch::Sender<State>) -> Option<Lost> {
    let now = Instant::now();
    state.send_if_modified(|s| s.lost.is_none() && now >= s.deadline && mark(s, Lost::LeaseExpired));
    state.borrow().lost.clone()
}

async fn until_lost(state: &watch::Sender<State>) -> Lost {
    let mut changes = state.subscribe();
    loop {
        if let Some(lost) = check(state) {
            return lost;
        }
        let deadline = changes.borrow_and_update().deadline;
        tokio::select! {
            // The sender lives in `state`, which outlives this future.
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Tasks that end with their owner.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Candidate {
    fn err(&self, operation: &'static str) -> impl FnOnce(etcd_client::Error) -> ElectionError + '_ {
        move |e| ElectionError::Etcd {
            operation,
            election: self.prefix.clone(),
            identity: self.identity.clone(),
            source: Box::new(e),
        }
    }

    fn lost(&self, reason: Lost) -> ElectionError {
        ElectionError::Lost { election: self.prefix.clone(), identity: self.identity.clone(), reason }
    }

    async fn campaign(&self) -> Result<LeadershipInner, ElectionError> {
        let mut client = self.client.clone();
        let ttl = i64::try_from(self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX).max(1);
        let sent = Instant::now();
        let grant = client.lease_grant(ttl, None).await.map_err(self.err("granting a lease"))?;
        let (lease, granted) = (grant.id(), ttl_of(grant.ttl()));
        let state = Arc::new(watch::Sender::new(State { deadline: sent + granted, lost: None }));
        let mut tasks = Tasks::default();
        tasks.0.push(tokio::spawn(keep_alive(client.clone(), lease, granted, Arc::clone(&state))));

        let key = format!("{}{lease:016x}", self.prefix);
        let put = TxnOp::put(key.as_str(), self.identity.as_str(), Some(PutOptions::new().with_lease(lease)));
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([put])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = client.txn(txn).await.map_err(self.err("writing the candidate key"))?;
        let mine = match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) if !response.succeeded() => get.kvs().first().map(|kv| kv.create_revision()),
            _ => response.header().map(|h| h.revision()),
        };
        let Some(mine) = mine else { return Err(self.lost(Lost::KeyDeleted)) };

        let from = tokio::select! {
            turn = self.wait_turn(&mut client, &key, mine) => turn?,
            lost = until_lost(&state) => return Err(self.lost(lost)),
        };
        tasks.0.push(tokio::spawn(watch_key(client, key.clone(), from, Arc::clone(&state))));
        if let Some(lost) = check(&state) {
            return Err(self.lost(lost));
        }
        Ok(LeadershipInner::Etcd(Box::new(Held { candidate: self.clone(), key, lease, state, _tasks: tasks })))
    }

    /// Wait until no key under the election was created before revision
    /// `mine`, and check that `key` is still ours. Returns the revision to
    /// watch `key` from.
    async fn wait_turn(&self, client: &mut Client, key: &str, mine: i64) -> Result<i64, ElectionError> {
        loop {
            // etcd applies the revision filter before the limit.
            let options = GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_max_create_revision(mine - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let response =
                client.get(self.prefix.as_str(), Some(options)).await.map_err(self.err("reading the candidates"))?;
            let at = response.header().map_or(0, |h| h.revision());
            let Some(previous) = response.kvs().first().map(|kv| kv.key().to_vec()) else {
                let check = client.get(key, None).await.map_err(self.err("reading the candidate key"))?;
                if check.kvs().first().map(|kv| kv.create_revision()) != Some(mine) {
                    return Err(self.lost(Lost::KeyDeleted));
                }
                return Ok(check.header().map_or(at, |h| h.revision()) + 1);
            };
            let options = WatchOptions::new().with_start_revision(at + 1).with_filters([WatchFilterType::NoPut]);
            let mut stream =
                client.watch(previous, Some(options)).await.map_err(self.err("watching the candidates"))?;
            loop {
                let message = stream.message().await.map_err(self.err("watching the candidates"))?;
                let Some(message) = message else {
                    let ended = etcd_client::Error::WatchError("the watch stream ended".into());
                    return Err(self.err("watching the candidates")(ended));
                };
                // Look again also when etcd canceled the watch.
                if message.canceled() || message.events().iter().any(|e| e.event_type() == EventType::Delete) {
                    break;
                }
            }
        }
    }
}

fn ttl_of(seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Renew `lease` every third of its TTL until it is lost. Each successful
/// renewal moves the deadline to its send time + the TTL, unless the
/// deadline passed already.
async fn keep_alive(mut client: Client, lease: i64, granted: Duration, state: Arc<watch::Sender<State>>) {
    let period = granted / 3;
    let mut channel: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    loop {
        let deadline = state.borrow().deadline;
        let sent = Instant::now();
        let next = match tokio::time::timeout_at(deadline, renew(&mut client, lease, granted, &mut channel)).await {
            Ok(Ok(ttl)) if !ttl.is_zero() => {
                let renewed = sent + ttl;
                state.send_if_modified(|s| {
                    // Not after the deadline: the lease may have expired, and
                    // `check` may have told the leader so.
                    if s.lost.is_some() || Instant::now() >= s.deadline || renewed <= s.deadline {
                        return false;
                    }
                    s.deadline = renewed;
                    true
                });
                sent + period
            }
            // etcd no longer knows the lease.
            Ok(Ok(_)) => {
                state.send_if_modified(|s| mark(s, Lost::LeaseExpired));
                return;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(reason))) if reason.contains("lease not found") => {
                state.send_if_modified(|s| mark(s, Lost::LeaseExpired));
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(lease, %error, "renewing an election lease failed; retrying");
                channel = None;
                Instant::now() + RENEW_RETRY
            }
            Err(_) => Instant::now(),
        };
        if check(&state).is_some() {
            return;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// One renewal; the TTL etcd granted (zero when the lease is gone).
async fn renew(
    client: &mut Client,
    lease: i64,
    granted: Duration,
    channel: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Duration, etcd_client::Error> {
    match channel {
        Some((keeper, stream)) => {
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(response) => Ok(ttl_of(response.ttl())),
                None => Err(etcd_client::Error::LeaseKeepAliveError("the keep-alive stream ended".into())),
            }
        }
        None => {
            // Opening the stream renews once and fails with "lease not
            // found" if etcd answers with no TTL; the TTL itself is not
            // passed on, and it is the granted one.
            *channel = Some(client.lease_keep_alive(lease).await?);
            Ok(granted)
        }
    }
}

/// End the leadership when `key` is deleted or its watch fails.
async fn watch_key(mut client: Client, key: String, from: i64, state: Arc<watch::Sender<State>>) {
    let options = WatchOptions::new().with_start_revision(from).with_filters([WatchFilterType::NoPut]);
    let lost = match client.watch(key.as_str(), Some(options)).await {
        Err(error) => Lost::WatchFailed { reason: error.to_string() },
        Ok(mut stream) => loop {
            match stream.message().await {
                Ok(Some(message)) if message.events().iter().any(|e| e.event_type() == EventType::Delete) => {
                    break Lost::KeyDeleted;
                }
                Ok(Some(message)) if message.canceled() => {
                    break Lost::WatchFailed { reason: format!("etcd canceled it: {}", message.cancel_reason()) };
                }
                Ok(Some(_)) => {}
                Ok(None) => break Lost::WatchFailed { reason: "the stream ended".to_owned() },
                Err(error) => break Lost::WatchFailed { reason: error.to_string() },
            }
        },
    };
    tracing::debug!(%key, %lost, "election key lost");
    state.send_if_modified(|s| mark(s, lost));
}
