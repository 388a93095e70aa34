//! Requests: authentication, routing to a verb, and the verbs themselves.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::admission::{Admission, Deletion, KindInfo};
use super::auth::{Access, Caller, Verb, authorize, bearer};
use super::body;
use super::discovery;
use super::error::{self, ApiError, Body, full, qualified};
use super::objects::{
    FieldSelector, LabelSelector, Selectors, merge_patch, meta_str, metadata_mut, name_suffix, new_uid,
    path_segment_problem, query_pairs, rfc3339, unix_now, with_resource_version,
};
use super::pki::JoinError;
use super::routes::{Route, collection_prefix, object_key, route};
use super::server::{Connection, State};
use super::watch;
use crate::store::{Op, Revision, Store, StoreError};

/// How many times a write is admitted again when its admission operations
/// (allocations) lost a race with another write.
const ADMISSION_ATTEMPTS: usize = 5;
/// How often an update without a precondition is redone when another
/// write got in between: it has no reason to fail, so it tries hard (each
/// attempt is one read and one conditional write).
const UNCONDITIONAL_ATTEMPTS: usize = 64;

/// Answer one request. Every error becomes a `Status` here, in
/// [`error::response`].
pub(super) async fn handle(state: &State, conn: &Connection, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match dispatch(state, conn, request).await {
        Ok(response) => response,
        Err(err) => error::response(&err),
    };
    tracing::debug!(
        peer = %conn.peer,
        %method,
        %path,
        status = response.status().as_u16(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// A JSON response.
pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    // Serialising a `Value` cannot fail: its map keys are strings.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// Run blocking store work (and admission, which reads the store) off the
/// async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?
}

/// Query parameters the server reads; others (`limit`, `pretty`,
/// `fieldManager`, `allowWatchBookmarks`, …) are accepted and ignored.
#[derive(Debug, Default)]
pub(super) struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub selectors: Selectors,
    pub timeout_seconds: Option<u64>,
    pub dry_run: bool,
    /// DELETE's `gracePeriodSeconds` (also read from the DeleteOptions
    /// body, which wins).
    pub grace_period_seconds: Option<i64>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut parsed = Query::default();
        for (key, value) in query_pairs(query) {
            match key.as_str() {
                "watch" => parsed.watch = matches!(value.as_str(), "1" | "true" | "True"),
                "resourceVersion" => parsed.resource_version = Some(value).filter(|v| !v.is_empty()),
                "labelSelector" => {
                    parsed.selectors.labels = LabelSelector::parse(&value).map_err(ApiError::BadRequest)?;
                }
                "fieldSelector" => {
                    parsed.selectors.fields = FieldSelector::parse(&value).map_err(ApiError::BadRequest)?;
                }
                "timeoutSeconds" => {
                    let seconds =
                        value.parse().map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {value:?}")))?;
                    parsed.timeout_seconds = Some(seconds);
                }
                "dryRun" => parsed.dry_run = !value.is_empty(),
                "gracePeriodSeconds" => {
                    let seconds = value
                        .parse()
                        .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds {value:?}")))?;
                    parsed.grace_period_seconds = Some(seconds);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn authenticate(state: &State, conn: &Connection, parts: &Parts) -> Result<Caller, ApiError> {
    if let Some(caller) = &conn.certificate {
        return Ok(caller.clone());
    }
    let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    bearer(header).and_then(|token| state.auth.user(token)).ok_or(ApiError::Unauthorized)
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({method})"))
}

async fn dispatch(state: &State, conn: &Connection, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let route = route(request.uri().path(), &state.kinds);
    let (parts, body) = request.into_parts();
    // Public: health, version (as kube-apiserver's system:public-info-viewer
    // allows) and join, which authenticates with its bootstrap token.
    match &route {
        Some(Route::Health) => {
            let mut response = Response::new(full("ok"));
            response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        Some(Route::Version) => return Ok(json_response(StatusCode::OK, &discovery::version())),
        Some(Route::Join) => return join(state, conn, &parts, body).await,
        _ => {}
    }
    let caller = authenticate(state, conn, &parts)?;
    let query = Query::parse(parts.uri.query())?;
    let route = route.ok_or(ApiError::NoRoute)?;
    let read_only = parts.method == Method::GET;
    if !read_only && query.dry_run {
        return Err(ApiError::BadRequest("dryRun is not supported".to_owned()));
    }
    match route {
        Route::CoreVersions => Ok(json_response(StatusCode::OK, &discovery::core_versions(state.local_addr))),
        Route::Groups => Ok(json_response(StatusCode::OK, &discovery::groups(&state.kinds))),
        Route::Group(group) => {
            discovery::group(&state.kinds, &group).map(|v| json_response(StatusCode::OK, &v)).ok_or(ApiError::NoRoute)
        }
        Route::Resources(group_version) => {
            Ok(json_response(StatusCode::OK, &discovery::resources(&state.kinds, &group_version)))
        }
        Route::OpenApiV2 => Ok(discovery::openapi_v2(&parts)),
        Route::Collection { kind, namespace } => {
            let ns = namespace.as_deref();
            if parts.method == Method::GET {
                query.selectors.fields.check(&kind).map_err(ApiError::BadRequest)?;
            }
            match parts.method {
                Method::GET if query.watch => {
                    authorize(&caller, Verb::Watch, &kind, ns, None)?;
                    watch::serve(state, kind, namespace, &query).await
                }
                Method::GET => {
                    authorize(&caller, Verb::List, &kind, ns, None)?;
                    list(state, kind, namespace, &query).await
                }
                Method::POST => {
                    if kind.namespaced && namespace.is_none() {
                        return Err(ApiError::MethodNotAllowed(format!(
                            "create {} under /namespaces/{{namespace}}/{}",
                            kind.resource, kind.resource
                        )));
                    }
                    writable(&kind)?;
                    authorize(&caller, Verb::Create, &kind, ns, None)?;
                    create(state, &caller, kind, namespace, &parts, body).await
                }
                ref method => Err(method_not_allowed(method)),
            }
        }
        Route::Object { kind, namespace, name } => {
            let ns = namespace.as_deref();
            let verb = match parts.method {
                Method::GET => Verb::Get,
                Method::PUT => Verb::Update,
                Method::PATCH => Verb::Patch,
                Method::DELETE => Verb::Delete,
                ref method => return Err(method_not_allowed(method)),
            };
            if verb != Verb::Get {
                writable(&kind)?;
            }
            let key = object_key(&kind, ns, &name);
            if let Err(denied) = authorize(&caller, verb, &kind, ns, Some(&name)) {
                // Kubernetes' Node authorizer: a node also updates and
                // deletes the pods bound to it (status, the final delete
                // of a terminating pod). A pod's node never changes once
                // bound, so reading it first is enough.
                if !node_owns_pod(state, &caller, &kind, &key).await? {
                    return Err(denied);
                }
            }
            let target = Target { key, kind, namespace, name };
            match verb {
                Verb::Get => get(state, target).await,
                Verb::Update => update(state, &caller, target, &parts, body).await,
                Verb::Patch => patch(state, &caller, target, &parts, body).await,
                _ => delete(state, target, &parts, body, query.grace_period_seconds).await,
            }
        }
        Route::Health | Route::Version | Route::Join => Err(ApiError::NoRoute),
    }
}

/// Whether `caller` is the node the stored pod at `key` is bound to.
async fn node_owns_pod(state: &State, caller: &Caller, kind: &KindInfo, key: &str) -> Result<bool, ApiError> {
    let Access::Node(node) = &caller.access else { return Ok(false) };
    if kind.resource != "pods" {
        return Ok(false);
    }
    let (store, key) = (state.store.clone(), key.to_owned());
    let stored = blocking(move || store.get(&key).map_err(|e| ApiError::store("get", e))).await?;
    Ok(stored
        .and_then(|v| serde_json::from_slice::<Value>(&v.value).ok())
        .is_some_and(|pod| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str())))
}

/// Kinds controllers derive (endpoints) are not written through the API.
fn writable(kind: &KindInfo) -> Result<(), ApiError> {
    if kind.read_only {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} are derived by controllers and cannot be written through the API",
            kind.resource
        )));
    }
    Ok(())
}

/// One object addressed by URL.
#[derive(Debug, Clone)]
struct Target {
    kind: KindInfo,
    namespace: Option<String>,
    name: String,
    key: String,
}

/// Parse a stored value. Stored objects were serialised by this server, so
/// a failure is corruption.
fn parse_stored(key: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("stored object {key} is not JSON: {e}")))
}

async fn get(state: &State, target: Target) -> Result<Response<Body>, ApiError> {
    let store = state.store.clone();
    let key = target.key.clone();
    let stored = blocking(move || store.get(&key).map_err(|e| ApiError::store("get", e))).await?;
    let stored = stored.ok_or_else(|| ApiError::NotFound { kind: target.kind.clone(), name: target.name.clone() })?;
    let object = parse_stored(&target.key, &stored.value)?;
    Ok(json_response(StatusCode::OK, &with_resource_version(object, stored.revision)))
}

async fn list(
    state: &State,
    kind: KindInfo,
    namespace: Option<String>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    // A list is always the latest snapshot (any resourceVersion means "at
    // least this recent", which the latest is), but a malformed one is
    // still the client's mistake.
    let at_least = query.resource_version.as_deref().map(parse_revision).transpose()?;
    let store = state.store.clone();
    let prefix = collection_prefix(&kind, namespace.as_deref());
    let (items, revision) = blocking(move || store.list(&prefix).map_err(|e| ApiError::store("list", e))).await?;
    if let Some(requested) = at_least.filter(|r| *r > revision) {
        return Err(ApiError::ResourceVersionTooLarge { requested, current: revision });
    }
    let mut objects = Vec::with_capacity(items.len());
    for (key, stored) in items {
        let object = parse_stored(&key, &stored.value)?;
        if query.selectors.matches(&object) {
            objects.push(with_resource_version(object, stored.revision));
        }
    }
    let list = json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version,
        "metadata": { "resourceVersion": revision.to_string() },
        "items": objects,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// Read and decode a write's body, and check or fill in its `apiVersion`
/// and `kind`.
async fn read_object(state: &State, kind: &KindInfo, parts: &Parts, body: Incoming) -> Result<Value, ApiError> {
    let bytes = body::read(parts, body, state.body_limit).await?;
    let mut object = body::decode(&body::media_type(parts), &bytes)?;
    check_type(&mut object, kind)?;
    Ok(object)
}

fn check_type(object: &mut Value, kind: &KindInfo) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::BadRequest("the request body must be an object".to_owned()));
    };
    for (field, expected) in [("apiVersion", kind.api_version), ("kind", kind.kind)] {
        match map.get(field) {
            None => {
                map.insert(field.to_owned(), Value::String(expected.to_owned()));
            }
            Some(Value::String(s)) if s.is_empty() => {
                map.insert(field.to_owned(), Value::String(expected.to_owned()));
            }
            Some(Value::String(s)) if s == expected => {}
            Some(other) => {
                let field_name = if field == "kind" { "kind" } else { "API version" };
                return Err(ApiError::BadRequest(format!(
                    "the {field_name} in the data ({}) does not match the expected {field_name} ({expected})",
                    other.as_str().unwrap_or("?"),
                )));
            }
        }
    }
    if !matches!(map.get("metadata"), None | Some(Value::Object(_))) {
        return Err(ApiError::BadRequest("metadata must be an object".to_owned()));
    }
    Ok(())
}

/// The metadata the server owns, pinned across admission: whatever an
/// admission does to these, the stored object carries the server's values,
/// except a uid admission stamped on create (see `write_create`).
#[derive(Debug, Clone)]
struct Pinned {
    name: String,
    namespace: Option<String>,
    uid: Value,
    creation_timestamp: Value,
}

impl Pinned {
    fn apply(&self, object: &mut Value) {
        let Some(meta) = metadata_mut(object) else { return };
        meta.insert("name".to_owned(), Value::String(self.name.clone()));
        match &self.namespace {
            Some(namespace) => meta.insert("namespace".to_owned(), Value::String(namespace.clone())),
            None => meta.remove("namespace"),
        };
        for (field, value) in [("uid", &self.uid), ("creationTimestamp", &self.creation_timestamp)] {
            match value {
                Value::Null => meta.remove(field),
                value => meta.insert(field.to_owned(), value.clone()),
            };
        }
        // resourceVersion is the revision of the write, known only once it
        // commits: it is never stored, and set on every object read.
        meta.remove("resourceVersion");
    }
}

fn generation(object: &Value) -> i64 {
    object.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(0)
}

fn set_generation(object: &mut Value, generation: i64) {
    if let Some(meta) = metadata_mut(object) {
        meta.insert("generation".to_owned(), Value::from(generation));
    }
}

/// Check the name and namespace of a body against the URL (a missing
/// namespace is taken from the URL).
fn check_identity(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let name = meta_str(object, "name").map(str::to_owned);
    if name.as_deref() != Some(target.name.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            name.unwrap_or_default(),
            target.name
        )));
    }
    check_namespace(object, &target.kind, target.namespace.as_deref())
}

fn check_namespace(object: &mut Value, kind: &KindInfo, namespace: Option<&str>) -> Result<(), ApiError> {
    let body_namespace = meta_str(object, "namespace").map(str::to_owned);
    let meta = metadata_mut(object).ok_or_else(|| ApiError::BadRequest("metadata must be an object".to_owned()))?;
    match namespace {
        Some(namespace) if kind.namespaced => {
            if body_namespace.as_deref().is_some_and(|b| b != namespace) {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".to_owned(),
                ));
            }
            meta.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
        }
        // Cluster-scoped objects have no namespace; kube-apiserver drops one
        // sent anyway.
        _ => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

fn random_failed(_: rustls::crypto::GetRandomFailed) -> ApiError {
    ApiError::Internal("the system random number generator failed".to_owned())
}

async fn create(
    state: &State,
    caller: &Caller,
    kind: KindInfo,
    namespace: Option<String>,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let mut object = read_object(state, &kind, parts, body).await?;
    check_meta_strings(&object)?;
    let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => {
            // kube-apiserver's SimpleNameGenerator: the prefix is cut to
            // 58 characters so that the name with its suffix fits 63.
            let prefix: String = prefix.chars().take(MAX_GENERATE_NAME_PREFIX).collect();
            format!("{prefix}{}", name_suffix().map_err(random_failed)?)
        }
        (None, None) => {
            return Err(ApiError::invalid(
                &kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required".to_owned(),
            ));
        }
    };
    if let Some(problem) = path_segment_problem(&name) {
        return Err(ApiError::invalid(&kind, &name, "metadata.name", format!("Invalid value: {name:?}: {problem}")));
    }
    if meta_str(&object, "resourceVersion").is_some() {
        return Err(ApiError::BadRequest("resourceVersion should not be set on objects to be created".to_owned()));
    }
    check_namespace(&mut object, &kind, namespace.as_deref())?;
    authorize(caller, Verb::Create, &kind, namespace.as_deref(), Some(&name))?;
    let pinned = Pinned {
        name: name.clone(),
        namespace: namespace.clone().filter(|_| kind.namespaced),
        uid: Value::String(new_uid().map_err(random_failed)?),
        creation_timestamp: Value::String(rfc3339(unix_now())),
    };
    pinned.apply(&mut object);
    set_generation(&mut object, 1);
    let target = Target { key: object_key(&kind, namespace.as_deref(), &name), kind, namespace, name };
    let (store, admission) = (state.store.clone(), state.admission.clone());
    let node = caller.node().map(str::to_owned);
    let (object, revision) =
        blocking(move || write_create(&*store, &*admission, node.as_deref(), &target, &pinned, object)).await?;
    Ok(json_response(StatusCode::CREATED, &with_resource_version(object, revision)))
}

/// The longest `generateName` prefix kept (63 − 5 random characters).
const MAX_GENERATE_NAME_PREFIX: usize = 58;

/// Metadata fields the server reads as strings must be strings (or absent):
/// a number is a decoding error, not a missing value.
fn check_meta_strings(object: &Value) -> Result<(), ApiError> {
    let Some(meta) = object.get("metadata").and_then(Value::as_object) else { return Ok(()) };
    for field in ["name", "generateName", "namespace", "resourceVersion", "uid"] {
        match meta.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!("metadata.{field}: expected a string, got {other}")));
            }
        }
    }
    Ok(())
}

/// What to do with a failed write transaction that did not fail on the
/// object's own key: admission's operations lost a race (another write
/// took the address first), so admit again, up to [`ADMISSION_ATTEMPTS`].
fn retry_admission(err: StoreError, attempt: usize, target: &Target) -> Result<(), ApiError> {
    match err {
        StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } | StoreError::NotFound { .. }
            if attempt < ADMISSION_ATTEMPTS =>
        {
            tracing::debug!(key = %target.key, attempt, error = %err, "admission raced with another write; admitting again");
            Ok(())
        }
        StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } | StoreError::NotFound { .. } => {
            Err(ApiError::Conflict {
                kind: target.kind.clone(),
                name: target.name.clone(),
                reason: format!("concurrent writes kept changing what this write depends on ({err}); please try again"),
            })
        }
        StoreError::DuplicateKey { key } => {
            Err(ApiError::Internal(format!("admission of {} wrote {key} twice", target.key)))
        }
        err => Err(ApiError::store("write", err)),
    }
}

fn serialise(object: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(object).unwrap_or_default()
}

fn write_create(
    store: &dyn Store,
    admission: &dyn Admission,
    node: Option<&str>,
    target: &Target,
    pinned: &Pinned,
    object: Value,
) -> Result<(Value, Revision), ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut candidate = object.clone();
        let ops = admission
            .admit(&target.kind, &mut candidate, None, store)
            .map_err(|r| ApiError::rejected(r, &target.kind, &target.name, &candidate))?;
        // An admission that stamps its own uid may have written it into
        // its operations (allocation records name their owner by uid, and
        // a delete releases only what its uid holds): that uid is kept.
        let admitted_uid =
            candidate.pointer("/metadata/uid").filter(|uid| uid.as_str().is_some_and(|u| !u.is_empty())).cloned();
        pinned.apply(&mut candidate);
        if let (Some(uid), Some(meta)) = (admitted_uid, metadata_mut(&mut candidate)) {
            meta.insert("uid".to_owned(), uid);
        }
        restrict_node(admission, node, target, &candidate, None)?;
        let mut txn = Vec::with_capacity(1 + ops.len());
        txn.push(Op::Create { key: target.key.clone(), value: serialise(&candidate) });
        txn.extend(ops);
        match store.txn(&txn) {
            Ok(revision) => return Ok((candidate, revision)),
            Err(StoreError::AlreadyExists { key, .. }) if key == target.key => {
                return Err(ApiError::AlreadyExists { kind: target.kind.clone(), name: target.name.clone() });
            }
            Err(err) => retry_admission(err, attempt, target)?,
        }
    }
}

/// Kubernetes' NodeRestriction, for writes made with a node's credentials
/// (`node`): a 403 worded as kube-apiserver's admission denials.
fn restrict_node(
    admission: &dyn Admission,
    node: Option<&str>,
    target: &Target,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = node else { return Ok(()) };
    admission.restrict_node(node, &target.kind, object, old).map_err(|reason| {
        ApiError::Forbidden(format!("{} {:?} is forbidden: {reason}", qualified(&target.kind), target.name))
    })
}

/// How an update computes the new object from the stored one.
enum Change {
    /// PUT: the body replaces the object.
    Replace(Value),
    /// PATCH with a JSON merge patch.
    MergePatch(Value),
}

async fn update(
    state: &State,
    caller: &Caller,
    target: Target,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let mut object = read_object(state, &target.kind, parts, body).await?;
    check_meta_strings(&object)?;
    check_identity(&mut object, &target)?;
    // Without a resourceVersion the update is unconditional, as Kubernetes
    // allows for every kind berth serves (`kubectl replace`).
    let expected = meta_str(&object, "resourceVersion").map(parse_revision).transpose()?;
    write_update(state, caller, target, Change::Replace(object), expected).await
}

fn parse_revision(rv: &str) -> Result<Revision, ApiError> {
    rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}: not a number")))
}

async fn patch(
    state: &State,
    caller: &Caller,
    target: Target,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let media_type = body::media_type(parts);
    if media_type != "application/merge-patch+json" {
        return Err(ApiError::UnsupportedMediaType {
            content_type: media_type,
            accepted: "application/merge-patch+json",
        });
    }
    let bytes = body::read(parts, body, state.body_limit).await?;
    let patch = body::decode("application/json", &bytes)?;
    // A resourceVersion in the patch is a precondition, as in Kubernetes.
    let expected = meta_str(&patch, "resourceVersion").map(parse_revision).transpose()?;
    write_update(state, caller, target, Change::MergePatch(patch), expected).await
}

async fn write_update(
    state: &State,
    caller: &Caller,
    target: Target,
    change: Change,
    expected: Option<Revision>,
) -> Result<Response<Body>, ApiError> {
    let (store, admission) = (state.store.clone(), state.admission.clone());
    let node = caller.node().map(str::to_owned);
    let (object, revision) =
        blocking(move || update_blocking(&*store, &*admission, node.as_deref(), &target, &change, expected)).await?;
    Ok(json_response(StatusCode::OK, &with_resource_version(object, revision)))
}

fn update_blocking(
    store: &dyn Store,
    admission: &dyn Admission,
    node: Option<&str>,
    target: &Target,
    change: &Change,
    expected: Option<Revision>,
) -> Result<(Value, Revision), ApiError> {
    let not_found = || ApiError::NotFound { kind: target.kind.clone(), name: target.name.clone() };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = store.get(&target.key).map_err(|e| ApiError::store("get", e))?.ok_or_else(not_found)?;
        if expected.is_some_and(|e| e != current.revision) {
            return Err(ApiError::modified(&target.kind, &target.name));
        }
        let old = parse_stored(&target.key, &current.value)?;
        // A uid in the body must be the object's: on PUT a different one
        // is an attempt to change an immutable field (422), in a patch it
        // is a precondition (409), as in Kubernetes.
        let old_uid = meta_str(&old, "uid").unwrap_or_default();
        match change {
            Change::Replace(object) => {
                if let Some(uid) = meta_str(object, "uid").filter(|u| *u != old_uid) {
                    return Err(ApiError::invalid(
                        &target.kind,
                        &target.name,
                        "metadata.uid",
                        format!("Invalid value: {uid:?}: field is immutable"),
                    ));
                }
            }
            Change::MergePatch(patch) => {
                if let Some(uid) = meta_str(patch, "uid").filter(|u| *u != old_uid) {
                    return Err(ApiError::Conflict {
                        kind: target.kind.clone(),
                        name: target.name.clone(),
                        reason: format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                        ),
                    });
                }
            }
        }
        let mut candidate = match change {
            Change::Replace(object) => object.clone(),
            Change::MergePatch(patch) => {
                let mut patched = old.clone();
                merge_patch(&mut patched, patch);
                check_type(&mut patched, &target.kind)?;
                check_identity(&mut patched, target)?;
                patched
            }
        };
        let pinned = Pinned {
            name: target.name.clone(),
            namespace: target.namespace.clone().filter(|_| target.kind.namespaced),
            uid: old.get("metadata").and_then(|m| m.get("uid")).cloned().unwrap_or(Value::Null),
            creation_timestamp: old
                .get("metadata")
                .and_then(|m| m.get("creationTimestamp"))
                .cloned()
                .unwrap_or(Value::Null),
        };
        pinned.apply(&mut candidate);
        set_generation(&mut candidate, generation(&old));
        let ops = admission
            .admit(&target.kind, &mut candidate, Some(&old), store)
            .map_err(|r| ApiError::rejected(r, &target.kind, &target.name, &candidate))?;
        pinned.apply(&mut candidate);
        restrict_node(admission, node, target, &candidate, Some(&old))?;
        // The generation counts changes of the desired state.
        let spec_changed = candidate.get("spec") != old.get("spec");
        set_generation(&mut candidate, generation(&old).max(1) + i64::from(spec_changed));
        if ops.is_empty() && candidate == old {
            // Nothing changed: no write, no new resourceVersion, no event.
            return Ok((old, current.revision));
        }
        let mut txn = Vec::with_capacity(1 + ops.len());
        txn.push(Op::Update {
            key: target.key.clone(),
            value: serialise(&candidate),
            expected: Some(current.revision),
        });
        txn.extend(ops);
        match store.txn(&txn) {
            Ok(revision) => return Ok((candidate, revision)),
            Err(StoreError::Conflict { key, .. }) if key == target.key => {
                // Changed since we read it: the client's precondition is
                // stale, or (without one) read again and redo the change.
                if expected.is_some() || attempt >= UNCONDITIONAL_ATTEMPTS {
                    return Err(ApiError::modified(&target.kind, &target.name));
                }
            }
            Err(StoreError::NotFound { key }) if key == target.key => return Err(not_found()),
            Err(err) => retry_admission(err, attempt, target)?,
        }
    }
}

async fn delete(
    state: &State,
    target: Target,
    parts: &Parts,
    body: Incoming,
    query_grace: Option<i64>,
) -> Result<Response<Body>, ApiError> {
    let bytes = body::read(parts, body, state.body_limit).await?;
    let options = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        body::decode(&body::media_type(parts), &bytes)?
    };
    check_delete_options(&options, &target)?;
    let preconditions = options.get("preconditions");
    let precondition =
        |field| preconditions.and_then(|p| p.get(field)).and_then(Value::as_str).filter(|s| !s.is_empty());
    let expected = precondition("resourceVersion").map(parse_revision).transpose()?;
    let uid = precondition("uid").map(str::to_owned);
    let grace = match options.get("gracePeriodSeconds") {
        None | Some(Value::Null) => query_grace,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::BadRequest(format!("DeleteOptions.gracePeriodSeconds must be an integer, not {v}"))
        })?),
    };
    let (store, admission) = (state.store.clone(), state.admission.clone());
    let (object, revision) =
        blocking(move || delete_blocking(&*store, &*admission, &target, expected, uid.as_deref(), grace)).await?;
    Ok(json_response(StatusCode::OK, &with_resource_version(object, revision)))
}

/// DeleteOptions as kube-apiserver decodes them: known fields only, and
/// only the propagation berth does (background: the garbage collector
/// deletes dependents after their owner).
fn check_delete_options(options: &Value, target: &Target) -> Result<(), ApiError> {
    const FIELDS: [&str; 7] = [
        "apiVersion",
        "kind",
        "gracePeriodSeconds",
        "preconditions",
        "propagationPolicy",
        "orphanDependents",
        "dryRun",
    ];
    let Some(map) = options.as_object() else {
        return Err(ApiError::BadRequest("DeleteOptions must be a JSON object".to_owned()));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!("DeleteOptions: unknown field {unknown:?}")));
    }
    if map.get("dryRun").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::BadRequest("dryRun is not supported".to_owned()));
    }
    let orphan = map.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    match map.get("propagationPolicy") {
        None | Some(Value::Null) if !orphan => Ok(()),
        Some(Value::String(p)) if p == "Background" && !orphan => Ok(()),
        Some(Value::String(p)) if !matches!(p.as_str(), "Background" | "Foreground" | "Orphan") => Err(ApiError::invalid(
            &target.kind,
            &target.name,
            "propagationPolicy",
            format!("Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""),
        )),
        _ => Err(ApiError::invalid(
            &target.kind,
            &target.name,
            "propagationPolicy",
            "Forbidden: only Background propagation is supported by berth (dependents are deleted by the garbage collector after their owner)".to_owned(),
        )),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Removes the object, or (a pod on a node) marks it terminating, which
/// answers with the marked object as Kubernetes does.
fn delete_blocking(
    store: &dyn Store,
    admission: &dyn Admission,
    target: &Target,
    expected: Option<Revision>,
    uid: Option<&str>,
    grace: Option<i64>,
) -> Result<(Value, Revision), ApiError> {
    let not_found = || ApiError::NotFound { kind: target.kind.clone(), name: target.name.clone() };
    let precondition_failed = |what: &str, wanted: &str, actual: &str| ApiError::Conflict {
        kind: target.kind.clone(),
        name: target.name.clone(),
        reason: format!("Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}"),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = store.get(&target.key).map_err(|e| ApiError::store("get", e))?.ok_or_else(not_found)?;
        if let Some(expected) = expected
            && expected != current.revision
        {
            return Err(precondition_failed("ResourceVersion", &expected.to_string(), &current.revision.to_string()));
        }
        let old = parse_stored(&target.key, &current.value)?;
        let old_uid = meta_str(&old, "uid").unwrap_or_default();
        if let Some(uid) = uid
            && uid != old_uid
        {
            return Err(precondition_failed("UID", uid, old_uid));
        }
        let result = match admission.deletion(&target.kind, &old, grace, now_ms()) {
            Deletion::AlreadyTerminating => return Ok((old, current.revision)),
            Deletion::Refused(message) => return Err(ApiError::Forbidden(message)),
            Deletion::Graceful(marked) => store
                .update(&target.key, &serialise(&marked), Some(current.revision))
                .map(|revision| (marked, revision)),
            Deletion::Now => {
                let mut txn = vec![Op::Delete { key: target.key.clone(), expected: Some(current.revision) }];
                txn.extend(admission.release(&target.kind, &old, store));
                store.txn(&txn).map(|revision| (old, revision))
            }
        };
        match result {
            Ok(done) => return Ok(done),
            Err(StoreError::NotFound { key }) if key == target.key => return Err(not_found()),
            // Changed between our read and the write: check the
            // preconditions, the grace and the releases against the new
            // version.
            Err(StoreError::Conflict { key, .. }) if key == target.key && attempt < ADMISSION_ATTEMPTS => {}
            Err(StoreError::Conflict { key, .. }) if key == target.key => {
                return Err(ApiError::modified(&target.kind, &target.name));
            }
            Err(err) => retry_admission(err, attempt, target)?,
        }
    }
}

/// The join request: `{"nodeName": "node-1", "certificateSigningRequest":
/// "<PEM>"}` with `Authorization: Bearer <bootstrap token>`.
const JOIN_KIND: KindInfo = KindInfo {
    api_version: "bootstrap.berth.dev/v1",
    kind: "JoinRequest",
    resource: "joins",
    namespaced: false,
    read_only: false,
};

async fn join(state: &State, conn: &Connection, parts: &Parts, body: Incoming) -> Result<Response<Body>, ApiError> {
    if parts.method != Method::POST {
        return Err(method_not_allowed(&parts.method));
    }
    let ca = state.auth.node_ca.clone().ok_or(ApiError::NoRoute)?;
    // A bootstrap token joins any node; a node's own certificate renews
    // that node's (kubelet's certificate rotation), nothing else.
    let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let renewing = conn.certificate.as_ref().and_then(Caller::node).map(str::to_owned);
    if renewing.is_none() && !bearer(header).is_some_and(|token| state.auth.is_bootstrap_token(token)) {
        return Err(ApiError::Unauthorized);
    }
    let bytes = body::read(parts, body, state.body_limit).await?;
    let request = body::decode(&body::media_type(parts), &bytes)?;
    let name = request.get("nodeName").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(node) = renewing.as_deref().filter(|node| *node != name) {
        return Err(ApiError::Forbidden(format!(
            "{} {name:?} is forbidden: node {node:?} may only renew its own certificate",
            qualified(&JOIN_KIND)
        )));
    }
    if let Some(problem) = dns_subdomain_problem(&name) {
        let message = if name.is_empty() {
            format!("Required value: {problem}")
        } else {
            format!("Invalid value: {name:?}: {problem}")
        };
        return Err(ApiError::invalid(&JOIN_KIND, &name, "nodeName", message));
    }
    const CSR_FIELD: &str = "certificateSigningRequest";
    let Some(csr) = request.get(CSR_FIELD).and_then(Value::as_str).map(str::to_owned) else {
        let message = "Required value: a PEM certificate signing request for the node's own key".to_owned();
        return Err(ApiError::invalid(&JOIN_KIND, &name, CSR_FIELD, message));
    };
    let node = name.clone();
    let certificate = blocking(move || {
        ca.sign_node_request(&node, &csr).map_err(|e| match e {
            JoinError::Refused(why) => ApiError::invalid(&JOIN_KIND, &node, CSR_FIELD, format!("Invalid value: {why}")),
            JoinError::Pki(e) => ApiError::Internal(format!("signing node {node}'s certificate: {e}")),
        })
    })
    .await?;
    tracing::info!(node = %name, "node joined: issued its client certificate");
    let ca_pem = state.auth.node_ca.as_ref().map(|ca| ca.cert_pem().to_owned()).unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": "JoinResponse",
            "apiVersion": JOIN_KIND.api_version,
            "nodeName": name,
            "certificate": certificate,
            "ca": ca_pem,
        }),
    ))
}

/// Why `name` is not a DNS subdomain (RFC 1123), as Node names must be.
pub(super) fn dns_subdomain_problem(name: &str) -> Option<&'static str> {
    const RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or \
                        '.', and must start and end with an alphanumeric character";
    if name.is_empty() {
        return Some("a node name is required");
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.split('.').all(label_ok) { None } else { Some(RULE) }
}
