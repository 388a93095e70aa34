//! `?watch=1`: a chunked stream of `{"type": …, "object": …}` lines.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch as signal;
use tokio::time::Instant;

use super::admission::KindInfo;
use super::error::{ApiError, Body};
use super::handlers::Query;
use super::objects::{Selectors, random_bytes, with_resource_version};
use super::routes::collection_prefix;
use super::server::{State, stopped};
use crate::store::{Event, EventKind, Revision, Store, StoreError, Versioned, Watch};

/// Events read at once into one chunk, when they are already waiting.
const MAX_BATCH: usize = 256;
/// How often a list-then-watch start is retried when compaction removed
/// the listed revision in between (only under heavy write load).
const LIST_ATTEMPTS: usize = 3;

/// A deadline that never comes in practice.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A random duration in `[max / 2, max]`: watchers started together (after
/// a server restart) then do not all come back at the same moment, as
/// kube-apiserver spreads them too.
fn jitter(max: Duration) -> Duration {
    let random = random_bytes::<2>().map_or(u16::MAX, u16::from_le_bytes);
    let factor = 0.5 + f64::from(random) / f64::from(u16::MAX) / 2.0;
    Duration::try_from_secs_f64(max.as_secs_f64() * factor).unwrap_or(max).min(max)
}

/// How the watch begins.
enum Opened {
    /// From the current state: the listed objects as ADDED, then events
    /// after the list's revision.
    Listed { items: Vec<(String, Versioned)>, watch: Watch },
    /// From a revision: the history after it, then live events.
    /// `complete` when the client holds nothing yet (revision 0).
    Resumed { watch: Watch, complete: bool },
    /// The history after the revision is gone: one ERROR event, 410.
    Expired { requested: Revision, oldest: Revision },
}

fn list_then_watch(store: &dyn Store, prefix: &str) -> Result<Opened, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (items, revision) = store.list(prefix).map_err(|e| ApiError::store("list", e))?;
        match store.watch(prefix, revision) {
            Ok(watch) => return Ok(Opened::Listed { items, watch }),
            Err(StoreError::TooOld { .. }) if attempt < LIST_ATTEMPTS => {}
            Err(e) => return Err(ApiError::store("watch", e)),
        }
    }
}

/// Open the store watch for a request's `resourceVersion`: absent means
/// Kubernetes' "current state, then changes"; `0` ("any version") replays
/// the whole history when it is all still there, which ends in the same
/// state, else behaves as absent; `N` resumes after revision N.
fn open(store: &dyn Store, prefix: &str, resource_version: Option<Revision>) -> Result<Opened, ApiError> {
    // Every server reads the one store, which has no lagging cache: a
    // revision it has not reached will not come by waiting.
    if let Some(requested) = resource_version {
        let current = store.current_revision().map_err(|e| ApiError::store("watch", e))?;
        if requested > current {
            return Err(ApiError::ResourceVersionTooLarge { requested, current });
        }
    }
    match resource_version {
        None => list_then_watch(store, prefix),
        Some(from) => match store.watch(prefix, from) {
            Ok(watch) => Ok(Opened::Resumed { watch, complete: from == 0 }),
            Err(StoreError::TooOld { .. }) if from == 0 => list_then_watch(store, prefix),
            Err(StoreError::TooOld { requested, oldest }) => Ok(Opened::Expired { requested, oldest }),
            Err(e) => Err(ApiError::store("watch", e)),
        },
    }
}

/// Serve a watch request on `kind` in `namespace` (all when `None`).
pub(super) async fn serve(
    state: &State,
    kind: KindInfo,
    namespace: Option<String>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let resource_version = query
        .resource_version
        .as_deref()
        .map(|rv| rv.parse::<Revision>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}"))))
        .transpose()?;
    // timeoutSeconds=0 means "the server's default", as in Kubernetes.
    let timeout = match query.timeout_seconds.filter(|s| *s > 0) {
        Some(seconds) => Duration::from_secs(seconds),
        None => jitter(state.watch_timeout),
    };
    let store = state.store.clone();
    let prefix = collection_prefix(&kind, namespace.as_deref());
    let opened = tokio::task::spawn_blocking(move || open(&*store, &prefix, resource_version))
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))??;
    let mut filter = Filter::new(query.selectors.clone());
    let mut first = Vec::new();
    let watch = match opened {
        Opened::Listed { items, watch } => {
            filter.complete = true;
            for (key, stored) in items {
                let event = Event { kind: EventKind::Added, key, value: stored.value, revision: stored.revision };
                filter.line(&event, &mut first);
            }
            Some(watch)
        }
        Opened::Resumed { watch, complete } => {
            filter.complete = complete;
            Some(watch)
        }
        Opened::Expired { requested, oldest } => {
            // As kube-apiserver: 200, then one ERROR event carrying the
            // 410 Status; the client lists again.
            let status = ApiError::Expired { requested, oldest }.to_status();
            push_line(&mut first, "ERROR", &status);
            None
        }
    };
    let stream = Stream {
        first: Some(first),
        watch,
        filter,
        // A timeout too large for the clock is no timeout (a year).
        deadline: Instant::now().checked_add(timeout).unwrap_or_else(|| Instant::now() + FOREVER),
        shutdown: state.shutdown.clone(),
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), stream))
    });
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(response)
}

fn push_line(buf: &mut Vec<u8>, kind: &str, object: &Value) {
    // Serialising a `Value` cannot fail: its map keys are strings.
    if let Ok(line) = serde_json::to_vec(&json!({ "type": kind, "object": object })) {
        buf.extend_from_slice(&line);
        buf.push(b'\n');
    }
}

/// The selector of a watch, and which objects the client has seen match
/// it: an object that stops matching must reach the client as DELETED, one
/// that starts matching as ADDED, as kube-apiserver does.
struct Filter {
    selectors: Selectors,
    /// Key → whether the client currently holds the object as matching.
    seen: HashMap<String, bool>,
    /// Whether `seen` knows every object the client holds (a watch that
    /// began with a list or from revision 0). A resumed watch does not:
    /// there an object of unknown state that stops matching is sent as
    /// DELETED, which clients ignore for objects they do not hold.
    complete: bool,
}

impl Filter {
    fn new(selectors: Selectors) -> Filter {
        Filter { selectors, seen: HashMap::new(), complete: false }
    }

    /// Append the line for `event`, if the client should see one.
    fn line(&mut self, event: &Event, buf: &mut Vec<u8>) {
        let object: Value = match serde_json::from_slice(&event.value) {
            Ok(object) => object,
            Err(error) => {
                tracing::error!(key = %event.key, %error, "stored object is not JSON; not sent to watchers");
                return;
            }
        };
        let object = with_resource_version(object, event.revision);
        let kind = if self.selectors.is_empty() {
            Some(match event.kind {
                EventKind::Added => "ADDED",
                EventKind::Modified => "MODIFIED",
                EventKind::Deleted => "DELETED",
            })
        } else {
            self.translate(event, &object)
        };
        if let Some(kind) = kind {
            push_line(buf, kind, &object);
        }
    }

    fn translate(&mut self, event: &Event, object: &Value) -> Option<&'static str> {
        let held = match self.seen.get(&event.key) {
            Some(held) => Some(*held),
            None if self.complete => Some(false),
            None => None,
        };
        let matches = event.kind != EventKind::Deleted && self.selectors.matches(object);
        let kind = match (event.kind, matches, held) {
            (EventKind::Deleted, _, Some(false)) => None,
            (EventKind::Deleted, _, _) => Some("DELETED"),
            (_, true, Some(true) | None) if event.kind == EventKind::Modified => Some("MODIFIED"),
            (_, true, _) => Some("ADDED"),
            (_, false, Some(false)) => None,
            (EventKind::Added, false, None) => None,
            (_, false, _) => Some("DELETED"),
        };
        if event.kind == EventKind::Deleted || (self.complete && !matches) {
            // Absent means "not held" in a complete filter: keep it small.
            if self.complete {
                self.seen.remove(&event.key);
            } else {
                self.seen.insert(event.key.clone(), false);
            }
        } else {
            self.seen.insert(event.key.clone(), matches);
        }
        kind
    }
}

/// The body's state between chunks.
struct Stream {
    /// The initial chunk (listed objects or the ERROR event).
    first: Option<Vec<u8>>,
    watch: Option<Watch>,
    filter: Filter,
    deadline: Instant,
    shutdown: signal::Receiver<bool>,
}

impl Stream {
    /// The next chunk of lines; `None` ends the response (timeout, server
    /// shutdown, or the store ended the watch: the client resumes from the
    /// last resourceVersion it saw).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take()
            && !first.is_empty()
        {
            return Some(Bytes::from(first));
        }
        let Stream { watch: slot, filter, deadline, shutdown, .. } = self;
        loop {
            let watch = slot.as_mut()?;
            let event = tokio::select! {
                () = stopped(shutdown) => None,
                () = tokio::time::sleep_until(*deadline) => None,
                event = watch.recv() => match event {
                    Ok(event) => Some(event),
                    Err(error) => {
                        tracing::debug!(prefix = watch.prefix(), %error, "watch ended");
                        None
                    }
                },
            };
            let Some(event) = event else {
                *slot = None;
                return None;
            };
            let mut buf = Vec::new();
            filter.line(&event, &mut buf);
            for _ in 0..MAX_BATCH {
                match watch.try_recv() {
                    Ok(Some(event)) => filter.line(&event, &mut buf),
                    // Nothing waiting, or the end, which the next recv
                    // reports.
                    Ok(None) | Err(_) => break,
                }
            }
            if !buf.is_empty() {
                return Some(Bytes::from(buf));
            }
        }
    }
}
