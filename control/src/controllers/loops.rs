//! The store-facing passes of the Deployment controller and the scheduler:
//! what the `berth serve` leader runs on a short period. Each function does
//! one pass, synchronously, and returns a [`Summary`] of what it wrote.
//!
//! # Design
//! - **Level-triggered.** A pass lists everything it needs (Deployments,
//!   pods, nodes), computes what to do with the pure planners
//!   ([`super::deployment::plan`], [`ClusterState::place`]) and writes the
//!   result. Nothing is cached between passes, so a missed event or a
//!   restarted leader costs at most one period.
//! - **Optimistic concurrency.** Every update and delete carries the
//!   revision it was computed from. A [`StoreError::Conflict`] (or a
//!   `NotFound`/`AlreadyExists` from a race) is not an error: it is counted
//!   in [`Summary::conflicts`] and the next pass re-reads and re-plans.
//!   Only backend failures end a pass with [`ControllerError`].
//! - **Pods are created as the API creates them**: the object goes through
//!   [`Admission::admit`] (defaults, validation, uid, generation) and is
//!   committed with admission's extra operations in one [`Store::txn`];
//!   `resourceVersion` is never stored and `creationTimestamp` is the
//!   pass's clock, as the API server pins its own. A pod is named
//!   `<deployment>-<pod-template-hash>-<5 random characters>`, labelled with
//!   the template's labels plus `pod-template-hash`, and carries an
//!   `ownerReference` (controller: true) to the Deployment's uid; ownership
//!   is decided by that uid alone.
//! - **Template hash**: 32-bit FNV-1a over the canonical JSON of
//!   `spec.template` (serde_json's maps are sorted, so the encoding is
//!   canonical), as 8 hex digits. Stable across processes and releases of
//!   berth as long as the stored template's JSON is the same.
//! - **Deletion** is the API's: a pod bound to a node and still running is
//!   marked terminating (`deletionTimestamp`, see
//!   [`crate::resources::pod_deletion`]) for its agent to stop and remove;
//!   others are removed at once. Terminating pods are neither counted nor
//!   touched again. A deleted Deployment's pods are the garbage
//!   collector's ([`super::gc`]).
//! - **Revision history**: see [`super::revisions`]; synced before pods
//!   are created, and the revision number is written with the status.
//! - **Status** (`observedGeneration`, `replicas`, `updatedReplicas`,
//!   `readyReplicas`, `availableReplicas`, `unavailableReplicas`) describes
//!   the pods after this pass's writes, and is written directly to the store
//!   (Kubernetes' `/status` subresource: no admission, no generation bump)
//!   with the Deployment's revision as precondition, only when it changed.
//! - **Scheduling** rebuilds a [`ClusterState`] from the Node objects and
//!   the bound pods each pass, then places unbound pods oldest first
//!   (store creation order). A binding sets `spec.nodeName` and a
//!   `PodScheduled=True` condition in one CAS write; an unschedulable pod
//!   gets `PodScheduled=False`, reason `Unschedulable`, with the scheduler's
//!   message, written only when status, reason or message changed (so a
//!   pending pod does not cause a write per period). Spreading uses the
//!   controller owner's uid as the owner key, so the old and new pods of a
//!   rollout spread together.
//!
//! # Limitations
//! - Full lists each pass: O(objects) per period. Fine for berth's scale;
//!   a watch-fed cache would make it incremental.
//! - No `minReadySeconds`: available means ready. No `paused`,
//!   `progressDeadlineSeconds` or `conditions` in the Deployment status.
//! - `creationTimestamp` has one-second resolution, so the planner's
//!   "newest first" ranking breaks ties within a second by name.
//! - A Deployment whose name is so long that `<name>-<hash>-<suffix>`
//!   exceeds 253 characters gets its pods refused by admission (counted in
//!   [`Summary::rejected`] and logged), as the names are not truncated.
//! - A pod bound to a node that has no Node object is not counted by the
//!   scheduler (there is nothing to count it against).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::deployment::{Desired, IntOrPercent, Observed, Strategy, plan};
use super::revisions;
use crate::api::admission::Admission;
use crate::resources::{
    CONTROLLER_REVISION, DEPLOYMENT, Deletion, NODE, POD, is_terminating, parse_cpu, parse_memory, pod_deletion,
    store_key, store_prefix, uuid_v4,
};
use crate::scheduler::{
    ClusterState, ContainerResources, HostPort, NodeInfo, PlaceError, PodRequest, Protocol, Requests, Resources,
};
use crate::store::{Op, Revision, Store, StoreError};

/// The label carrying the template hash, as ReplicaSets set it.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Kubernetes' alphabet for random name suffixes (no vowels, no 0/1/3, so
/// no words and nothing that reads as another character).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A pass failed on the store itself; nothing about one object.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{operation} {key:?}")]
    Store {
        operation: &'static str,
        key: String,
        #[source]
        source: StoreError,
    },
}

pub(super) fn store_err<'a>(operation: &'static str, key: &'a str) -> impl FnOnce(StoreError) -> ControllerError + 'a {
    move |source| ControllerError::Store { operation, key: key.to_owned(), source }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pods created.
    pub created: u32,
    /// Pods deleted.
    pub deleted: u32,
    /// Deployment statuses written.
    pub status_updates: u32,
    /// Pods bound to a node.
    pub bound: u32,
    /// `PodScheduled=False` conditions written (changed ones only).
    pub unschedulable: u32,
    /// Writes that lost a race (conflict, gone, name taken): retried next
    /// pass.
    pub conflicts: u32,
    /// Pods admission refused (invalid template), and stored objects that
    /// could not be decoded; each is logged.
    pub rejected: u32,
    /// ControllerRevisions created or renumbered.
    pub revisions_written: u32,
    /// ControllerRevisions pruned beyond the history limit.
    pub revisions_deleted: u32,
}

/// Whether a store error is a lost race, to be retried next pass.
pub(super) fn is_race(err: &StoreError) -> bool {
    matches!(err, StoreError::Conflict { .. } | StoreError::NotFound { .. } | StoreError::AlreadyExists { .. })
}

/// One stored object, decoded.
pub(super) struct Stored {
    pub(super) key: String,
    pub(super) revision: Revision,
    pub(super) create_revision: Revision,
    pub(super) object: Value,
}

/// Every object under `prefix`; ones that are not JSON are logged, counted
/// in `rejected` and skipped.
pub(super) fn list(store: &dyn Store, prefix: &str, rejected: &mut u32) -> Result<Vec<Stored>, ControllerError> {
    let (items, _) = store.list(prefix).map_err(store_err("listing", prefix))?;
    let mut out = Vec::with_capacity(items.len());
    for (key, v) in items {
        match serde_json::from_slice(&v.value) {
            Ok(object) => {
                out.push(Stored { key, revision: v.revision, create_revision: v.create_revision, object });
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "stored object is not JSON; skipped");
                *rejected += 1;
            }
        }
    }
    Ok(out)
}

pub(super) fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

pub(super) fn serialise(object: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(object).unwrap_or_default()
}

/// `now_ms` as Kubernetes stores times: RFC 3339, to the second.
pub(super) fn timestamp(now_ms: u64) -> Value {
    let seconds = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    // Out of jiff's range only for a clock beyond year 9999.
    let time = Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH));
    serde_json::to_value(time).unwrap_or(Value::Null)
}

/// What [`delete_pod`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodDeleted {
    /// Removed from the store (unbound or finished).
    Removed,
    /// Marked terminating; its agent removes it once stopped.
    Marked,
    /// Already terminating: nothing written.
    Already,
}

/// Deletes a pod as the API does: gracefully when it is bound to a node
/// and still running (see [`crate::resources::pod_deletion`]), at once
/// otherwise; with the revision it was read at as precondition. Pods hold
/// no allocations, so there is nothing to release.
pub(super) fn delete_pod(store: &dyn Store, pod: &Stored, now_ms: u64) -> Result<PodDeleted, StoreError> {
    match pod_deletion(&pod.object, None, now_ms) {
        Deletion::Now => store.delete(&pod.key, Some(pod.revision)).map(|_| PodDeleted::Removed),
        Deletion::Graceful(marked) => {
            store.update(&pod.key, &serialise(&marked), Some(pod.revision)).map(|_| PodDeleted::Marked)
        }
        // Pods are never refused; nothing written either way.
        Deletion::AlreadyTerminating | Deletion::Refused(_) => Ok(PodDeleted::Already),
    }
}

/// A condition of `status.conditions` with this type has status `True`.
pub(super) fn condition_true(object: &Value, kind: &str) -> bool {
    object.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|conditions| {
        conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(kind)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    })
}

/// The uid of the controller owner reference, if any.
pub(super) fn controller_uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/ownerReferences")?.as_array()?.iter().find_map(|r| {
        (r.get("controller").and_then(Value::as_bool) == Some(true)).then(|| r.get("uid").and_then(Value::as_str))?
    })
}

/// 32-bit FNV-1a of the template's canonical JSON, as 8 hex digits.
pub fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in serialise(template) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// Random name suffixes; uniqueness, not secrecy, is what they need (a
/// collision is an `AlreadyExists`, retried next pass).
struct Suffixes {
    seed: RandomState,
    counter: u64,
}

impl Suffixes {
    fn new() -> Suffixes {
        Suffixes { seed: RandomState::new(), counter: 0 }
    }

    /// A random uid for objects the controller creates without admission.
    fn uid(&mut self) -> String {
        self.counter += 1;
        let high = self.seed.hash_one(self.counter);
        self.counter += 1;
        uuid_v4(high, self.seed.hash_one(self.counter))
    }

    fn next(&mut self) -> String {
        self.counter += 1;
        let mut n = self.seed.hash_one(self.counter);
        let base = SUFFIX_ALPHABET.len() as u64;
        (0..5)
            .map(|_| {
                let c = SUFFIX_ALPHABET[(n % base) as usize];
                n /= base;
                char::from(c)
            })
            .collect()
    }
}

/// `spec.strategy` of a (defaulted) Deployment. Admission has validated
/// and defaulted it, so anything unreadable falls back to the default.
fn strategy(deployment: &Value) -> Strategy {
    if str_at(deployment, "/spec/strategy/type") == Some("Recreate") {
        return Strategy::Recreate;
    }
    let field = |name: &str, default: IntOrPercent| {
        match deployment.pointer(&format!("/spec/strategy/rollingUpdate/{name}")) {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(IntOrPercent::Int),
            Some(Value::String(s)) => s.strip_suffix('%').and_then(|p| p.parse().ok()).map(IntOrPercent::Percent),
            _ => None,
        }
        .unwrap_or(default)
    };
    Strategy::RollingUpdate {
        max_surge: field("maxSurge", IntOrPercent::Percent(25)),
        max_unavailable: field("maxUnavailable", IntOrPercent::Percent(25)),
    }
}

fn replicas(deployment: &Value) -> u32 {
    // Kubernetes' default is 1 replica; admission defaults it too.
    deployment.pointer("/spec/replicas").and_then(Value::as_u64).map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn created_ms(object: &Value) -> u64 {
    str_at(object, "/metadata/creationTimestamp")
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or(0, |t| u64::try_from(t.as_millisecond()).unwrap_or(0))
}

/// What the planner sees of one owned pod.
fn observe(pod: &Stored) -> Observed {
    let o = &pod.object;
    Observed {
        name: str_at(o, "/metadata/name").unwrap_or_default().to_owned(),
        hash: str_at(o, &format!("/metadata/labels/{POD_TEMPLATE_HASH}")).unwrap_or_default().to_owned(),
        ready: condition_true(o, "Ready"),
        terminating: is_terminating(o),
        failed: str_at(o, "/status/phase") == Some("Failed"),
        created_ms: created_ms(o),
    }
}

/// One pass of the Deployment controller over every Deployment; see the
/// module docs.
///
/// # Errors
/// [`ControllerError::Store`] when the store fails; lost races are counted
/// in [`Summary::conflicts`] instead.
pub fn reconcile_deployments(
    store: &dyn Store,
    admission: &dyn Admission,
    now_ms: u64,
) -> Result<Summary, ControllerError> {
    let mut summary = Summary::default();
    let deployments = list(store, &store_prefix(&DEPLOYMENT, None), &mut summary.rejected)?;
    let mut pods_by_ns: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for pod in list(store, &store_prefix(&POD, None), &mut summary.rejected)? {
        let ns = str_at(&pod.object, "/metadata/namespace").unwrap_or_default().to_owned();
        pods_by_ns.entry(ns).or_default().push(pod);
    }
    let mut revisions_by_owner: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for revision in list(store, &store_prefix(&CONTROLLER_REVISION, None), &mut summary.rejected)? {
        if let Some(uid) = controller_uid(&revision.object) {
            revisions_by_owner.entry(uid.to_owned()).or_default().push(revision);
        }
    }
    let mut pass = Pass { store, admission, now_ms, suffixes: Suffixes::new(), summary };
    for deployment in &deployments {
        let ns = str_at(&deployment.object, "/metadata/namespace").unwrap_or_default();
        let pods = pods_by_ns.get(ns).map_or(&[][..], Vec::as_slice);
        let uid = str_at(&deployment.object, "/metadata/uid").unwrap_or_default();
        let revisions = revisions_by_owner.get(uid).map_or(&[][..], Vec::as_slice);
        reconcile_one(&mut pass, deployment, pods, revisions)?;
    }
    Ok(pass.summary)
}

/// What one Deployment pass carries from Deployment to Deployment.
struct Pass<'a> {
    store: &'a dyn Store,
    admission: &'a dyn Admission,
    now_ms: u64,
    suffixes: Suffixes,
    summary: Summary,
}

fn reconcile_one(
    pass: &mut Pass<'_>,
    deployment: &Stored,
    pods: &[Stored],
    revisions: &[Stored],
) -> Result<(), ControllerError> {
    let (store, admission, now_ms) = (pass.store, pass.admission, pass.now_ms);
    let (suffixes, summary) = (&mut pass.suffixes, &mut pass.summary);
    let d = &deployment.object;
    let (Some(name), Some(ns), Some(uid)) =
        (str_at(d, "/metadata/name"), str_at(d, "/metadata/namespace"), str_at(d, "/metadata/uid"))
    else {
        tracing::warn!(key = %deployment.key, "deployment without name, namespace or uid; skipped");
        summary.rejected += 1;
        return Ok(());
    };
    let template = d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
    let hash = template_hash(&template);
    let desired = Desired { replicas: replicas(d), hash: hash.clone(), strategy: strategy(d) };
    let owned: Vec<&Stored> = pods.iter().filter(|p| controller_uid(&p.object) == Some(uid)).collect();
    let mut observed: Vec<Observed> = owned.iter().map(|p| observe(p)).collect();
    let step = plan(&desired, &observed);

    let hashes_with_pods: HashSet<String> =
        observed.iter().filter(|o| !o.terminating).map(|o| o.hash.clone()).collect();
    let revisions: Vec<&Stored> = revisions.iter().collect();
    let owner = revisions::Owner { name, namespace: ns, uid, object: d, hash: &hash };
    let revision =
        revisions::sync(store, &owner, &revisions, &hashes_with_pods, now_ms, &mut || suffixes.uid(), summary)?;

    // Deletions first: they never reduce availability below what the plan
    // allowed, and they make room for the surge.
    let mut deleted = HashSet::new();
    for victim in &step.delete {
        let Some(pod) = owned.iter().find(|p| str_at(&p.object, "/metadata/name") == Some(victim.as_str())) else {
            continue;
        };
        match delete_pod(store, pod, now_ms) {
            Ok(PodDeleted::Removed | PodDeleted::Marked) => {
                summary.deleted += 1;
                deleted.insert(victim.clone());
            }
            Ok(PodDeleted::Already) => {
                deleted.insert(victim.clone());
            }
            Err(e) if is_race(&e) => summary.conflicts += 1,
            Err(e) => return Err(ControllerError::Store { operation: "deleting", key: pod.key.clone(), source: e }),
        }
    }
    observed.retain(|o| !deleted.contains(&o.name));

    for _ in 0..step.create {
        let pod_name = format!("{name}-{hash}-{}", suffixes.next());
        let mut pod = pod_from_template(&template, &pod_name, ns, name, uid, &hash);
        let ops = match admission.admit(&POD, &mut pod, None, store) {
            Ok(ops) => ops,
            Err(rejection) => {
                tracing::warn!(deployment = %deployment.key, ?rejection, "admission refused a pod of the deployment");
                summary.rejected += 1;
                // The same template would be refused again this pass.
                break;
            }
        };
        // The server-set fields, as the API server pins them.
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".to_owned(), Value::String(pod_name.clone()));
            meta.insert("namespace".to_owned(), Value::String(ns.to_owned()));
            meta.insert("creationTimestamp".to_owned(), timestamp(now_ms));
            meta.remove("resourceVersion");
        }
        let key = store_key(&POD, Some(ns), &pod_name);
        let mut txn = vec![Op::Create { key: key.clone(), value: serialise(&pod) }];
        txn.extend(ops);
        match store.txn(&txn) {
            Ok(_) => {
                summary.created += 1;
                observed.push(Observed {
                    name: pod_name,
                    hash: hash.clone(),
                    ready: false,
                    terminating: false,
                    failed: false,
                    created_ms: now_ms,
                });
            }
            Err(e) if is_race(&e) => summary.conflicts += 1,
            Err(e) => return Err(ControllerError::Store { operation: "creating", key, source: e }),
        }
    }

    write_status(store, deployment, &desired, &observed, revision, summary)
}

/// The pod a Deployment creates from its template.
fn pod_from_template(template: &Value, name: &str, ns: &str, owner: &str, uid: &str, hash: &str) -> Value {
    let mut labels = template.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.to_owned(), Value::String(hash.to_owned()));
    let mut metadata = Map::new();
    metadata.insert("name".to_owned(), Value::String(name.to_owned()));
    metadata.insert("namespace".to_owned(), Value::String(ns.to_owned()));
    metadata.insert("labels".to_owned(), Value::Object(labels));
    if let Some(annotations) = template.pointer("/metadata/annotations").filter(|a| a.is_object()) {
        metadata.insert("annotations".to_owned(), annotations.clone());
    }
    metadata.insert(
        "ownerReferences".to_owned(),
        json!([{
            "apiVersion": DEPLOYMENT.api_version,
            "kind": DEPLOYMENT.kind,
            "name": owner,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
    );
    json!({
        "apiVersion": POD.api_version,
        "kind": POD.kind,
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Writes the Deployment's status, and its revision annotation when known,
/// if they differ from the stored ones.
fn write_status(
    store: &dyn Store,
    deployment: &Stored,
    desired: &Desired,
    pods: &[Observed],
    revision: Option<i64>,
    summary: &mut Summary,
) -> Result<(), ControllerError> {
    let live: Vec<&Observed> = pods.iter().filter(|p| !p.terminating).collect();
    let count = |f: &dyn Fn(&Observed) -> bool| live.iter().filter(|p| f(p)).count() as u64;
    let total = count(&|_| true);
    let updated = count(&|p| p.hash == desired.hash);
    let ready = count(&|p| p.ready);
    let generation = deployment.object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
    let status = json!({
        "observedGeneration": generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": u64::from(desired.replicas).saturating_sub(ready),
    });
    let mut object = deployment.object.clone();
    if let Some(map) = object.as_object_mut() {
        map.insert("status".to_owned(), status);
    }
    if let Some(n) = revision
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if !annotations.is_object() {
            *annotations = json!({});
        }
        if let Some(map) = annotations.as_object_mut() {
            map.insert(revisions::REVISION_ANNOTATION.to_owned(), Value::String(n.to_string()));
        }
    }
    if object == deployment.object {
        return Ok(());
    }
    match store.update(&deployment.key, &serialise(&object), Some(deployment.revision)) {
        Ok(_) => summary.status_updates += 1,
        Err(e) if is_race(&e) => summary.conflicts += 1,
        Err(e) => {
            return Err(ControllerError::Store {
                operation: "writing status of",
                key: deployment.key.clone(),
                source: e,
            });
        }
    }
    Ok(())
}

/// A quantity admission has validated; a value that does not parse (only
/// possible for objects written around admission) counts as unset.
fn quantity(
    container: &Value,
    pointer: &str,
    parse: fn(&str) -> Result<u64, crate::resources::QuantityError>,
) -> Option<u64> {
    str_at(container, pointer).and_then(|q| parse(q).ok())
}

fn container_resources(containers: Option<&Value>) -> Vec<ContainerResources> {
    containers
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| ContainerResources {
                    request_milli_cpu: quantity(c, "/resources/requests/cpu", parse_cpu),
                    request_memory_bytes: quantity(c, "/resources/requests/memory", parse_memory),
                    limit_milli_cpu: quantity(c, "/resources/limits/cpu", parse_cpu),
                    limit_memory_bytes: quantity(c, "/resources/limits/memory", parse_memory),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn host_ports(pod: &Value) -> Vec<HostPort> {
    let mut out = Vec::new();
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let Some(port) = p.get("hostPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let protocol = match p.get("protocol").and_then(Value::as_str) {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            };
            out.push(HostPort { protocol, port });
        }
    }
    out
}

/// What the scheduler sees of a pod.
fn pod_request(pod: &Value) -> PodRequest {
    let ns = str_at(pod, "/metadata/namespace").unwrap_or_default();
    let name = str_at(pod, "/metadata/name").unwrap_or_default();
    PodRequest {
        key: format!("{ns}/{name}"),
        owner: controller_uid(pod).map(str::to_owned),
        requests: Requests::from_containers(
            &container_resources(pod.pointer("/spec/containers")),
            &container_resources(pod.pointer("/spec/initContainers")),
        ),
        host_ports: host_ports(pod),
    }
}

/// What the scheduler sees of a node.
fn node_info(node: &Value) -> NodeInfo {
    let alloc = |name: &str| str_at(node, &format!("/status/allocatable/{name}"));
    NodeInfo {
        name: str_at(node, "/metadata/name").unwrap_or_default().to_owned(),
        ready: condition_true(node, "Ready"),
        unschedulable: node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
        allocatable: Resources {
            milli_cpu: alloc("cpu").and_then(|q| parse_cpu(q).ok()).unwrap_or(0),
            memory_bytes: alloc("memory").and_then(|q| parse_memory(q).ok()).unwrap_or(0),
            pods: alloc("pods").and_then(|q| q.parse().ok()).unwrap_or(0),
        },
    }
}

/// Sets a condition in `status.conditions`, keeping `lastTransitionTime`
/// when the status does not change. Returns whether anything changed.
fn set_condition(
    object: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
    now: &Value,
) -> bool {
    let Some(root) = object.as_object_mut() else { return false };
    let status_obj = root.entry("status").or_insert_with(|| json!({}));
    let Some(status_map) = status_obj.as_object_mut() else { return false };
    let conditions = status_map.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else { return false };
    let mut condition = Map::new();
    condition.insert("type".to_owned(), Value::String(kind.to_owned()));
    condition.insert("status".to_owned(), Value::String(status.to_owned()));
    if let Some(reason) = reason {
        condition.insert("reason".to_owned(), Value::String(reason.to_owned()));
    }
    if let Some(message) = message {
        condition.insert("message".to_owned(), Value::String(message.to_owned()));
    }
    match list.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
        Some(existing) => {
            let same = |f: &str| existing.get(f) == condition.get(f);
            if same("status") && same("reason") && same("message") {
                return false;
            }
            let transition = if same("status") { existing.get("lastTransitionTime").cloned() } else { None };
            condition.insert("lastTransitionTime".to_owned(), transition.unwrap_or_else(|| now.clone()));
            *existing = Value::Object(condition);
        }
        None => {
            condition.insert("lastTransitionTime".to_owned(), now.clone());
            list.push(Value::Object(condition));
        }
    }
    true
}

/// A pod that has finished holds no resources.
fn is_terminal(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), Some("Succeeded" | "Failed"))
}

/// One scheduling pass; see the module docs.
///
/// # Errors
/// [`ControllerError::Store`] when the store fails; lost races are counted
/// in [`Summary::conflicts`] instead.
pub fn schedule_pending(store: &dyn Store, now_ms: u64) -> Result<Summary, ControllerError> {
    let mut summary = Summary::default();
    let mut state = ClusterState::new();
    for node in list(store, &store_prefix(&NODE, None), &mut summary.rejected)? {
        if let Err(e) = state.add_node(node_info(&node.object)) {
            tracing::warn!(key = %node.key, error = %e, "node not added to the scheduler's state");
        }
    }
    let mut pending = Vec::new();
    for pod in list(store, &store_prefix(&POD, None), &mut summary.rejected)? {
        if is_terminal(&pod.object) {
            continue;
        }
        match str_at(&pod.object, "/spec/nodeName").filter(|n| !n.is_empty()) {
            Some(node) => {
                if let Err(e) = state.record_bound(&pod_request(&pod.object), node) {
                    tracing::debug!(key = %pod.key, error = %e, "bound pod not counted");
                }
            }
            None if is_terminating(&pod.object) => {}
            None => pending.push(pod),
        }
    }
    // Oldest first: the store's creation order.
    pending.sort_by_key(|p| p.create_revision);
    let now = timestamp(now_ms);
    for pod in pending {
        let request = pod_request(&pod.object);
        let mut object = pod.object.clone();
        let placed = match state.place(&request) {
            Ok(placement) => {
                if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("nodeName".to_owned(), Value::String(placement.node.clone()));
                }
                set_condition(&mut object, "PodScheduled", "True", None, None, &now);
                true
            }
            Err(PlaceError::Unschedulable(why)) => {
                let message = why.to_string();
                if !set_condition(&mut object, "PodScheduled", "False", Some("Unschedulable"), Some(&message), &now) {
                    continue;
                }
                false
            }
            Err(e @ PlaceError::PodExists { .. }) => {
                tracing::warn!(key = %pod.key, error = %e, "pod listed twice");
                continue;
            }
        };
        match store.update(&pod.key, &serialise(&object), Some(pod.revision)) {
            Ok(_) if placed => summary.bound += 1,
            Ok(_) => summary.unschedulable += 1,
            Err(e) if is_race(&e) => {
                summary.conflicts += 1;
                if placed {
                    // The pod changed under us: it is not bound after all.
                    let _ = state.forget(&request.key);
                }
            }
            Err(e) => return Err(ControllerError::Store { operation: "binding", key: pod.key.clone(), source: e }),
        }
    }
    Ok(summary)
}
