//! The garbage collector pass: what Kubernetes' garbage collector and pod
//! GC controller do for the objects berth's controllers own.
//!
//! # Design
//! One synchronous, level-triggered pass per call, in the style of
//! [`super::loops`] (full lists, CAS writes, lost races counted and retried
//! next pass). It removes:
//! - **Dependents of a deleted Deployment** (background propagation,
//!   kubectl's default): pods and ControllerRevisions whose controller
//!   `ownerReference` names a Deployment that no longer exists, or exists
//!   with another uid (deleted and created again). Pods are deleted as the
//!   API deletes them (`delete_pod`: gracefully when
//!   running on a node), revisions at once. Before deleting, the owner is
//!   read again from the store, so a Deployment created after this pass
//!   listed them never loses its pods.
//! - **Pods bound to a node that has no Node object** (the pod GC's
//!   `gcOrphaned`): deleted gracefully, after the same fresh read of the
//!   Node.
//! - **Terminating pods no agent will finish**: a pod whose
//!   `deletionTimestamp` has passed and whose node is missing or not
//!   `Ready` is removed at once (Kubernetes does this for nodes tainted
//!   out-of-service; berth does it for every lost node, since an agent that
//!   comes back adopts or reaps what it finds). A terminating pod on a
//!   Ready node is its agent's to remove.
//!
//! # Limitations
//! - Only Deployment ownership is followed (berth's only owner kind);
//!   foreground and orphan propagation are not offered.
//! - No quarantine before collecting pods of a missing node (kube waits
//!   40 s): a pod created with `spec.nodeName` of a node that registers a
//!   moment later is deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::loops::{ControllerError, PodDeleted, Stored, condition_true, delete_pod, is_race, list, store_err, str_at};
use crate::resources::{
    CONTROLLER_REVISION, DEPLOYMENT, NODE, POD, deletion_deadline_ms, is_terminating, store_key, store_prefix,
};
use crate::store::Store;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    /// Pods of deleted Deployments, deleted (or marked terminating).
    pub orphan_pods: u32,
    /// ControllerRevisions of deleted Deployments, deleted.
    pub orphan_revisions: u32,
    /// Pods bound to nodes that do not exist, deleted (or marked).
    pub pods_without_node: u32,
    /// Terminating pods on lost nodes, removed after their grace.
    pub force_deleted: u32,
    /// Writes that lost a race: retried next pass.
    pub conflicts: u32,
    /// Stored objects that could not be decoded; logged.
    pub rejected: u32,
}

/// The Deployment a dependent's controller `ownerReference` names:
/// (name, uid).
fn deployment_owner(object: &Value) -> Option<(&str, &str)> {
    object.pointer("/metadata/ownerReferences")?.as_array()?.iter().find_map(|r| {
        let controller = r.get("controller").and_then(Value::as_bool) == Some(true);
        let deployment = r.get("kind").and_then(Value::as_str) == Some(DEPLOYMENT.kind)
            && r.get("apiVersion").and_then(Value::as_str) == Some(DEPLOYMENT.api_version);
        if !(controller && deployment) {
            return None;
        }
        Some((r.get("name")?.as_str()?, r.get("uid")?.as_str()?))
    })
}

/// Whether the Deployment `ns/name` exists now with this uid: the fresh
/// read that keeps a pass from collecting a new owner's dependents.
fn owner_exists(store: &dyn Store, ns: &str, name: &str, uid: &str) -> Result<bool, ControllerError> {
    let key = store_key(&DEPLOYMENT, Some(ns), name);
    let stored = store.get(&key).map_err(store_err("reading", &key))?;
    Ok(stored
        .and_then(|v| serde_json::from_slice::<Value>(&v.value).ok())
        .is_some_and(|d| str_at(&d, "/metadata/uid") == Some(uid)))
}

/// One garbage collection pass; see the module docs.
///
/// # Errors
/// [`ControllerError::Store`] when the store fails; lost races are counted
/// in [`GcSummary::conflicts`] instead.
pub fn collect_garbage(store: &dyn Store, now_ms: u64) -> Result<GcSummary, ControllerError> {
    let mut summary = GcSummary::default();
    // Owners first, then dependents: a dependent listed after its owner was
    // listed is checked against a list at least as old as itself, and a
    // miss is confirmed by a fresh read.
    let deployments: BTreeSet<(String, String, String)> =
        list(store, &store_prefix(&DEPLOYMENT, None), &mut summary.rejected)?
            .iter()
            .filter_map(|d| {
                let o = &d.object;
                Some((
                    str_at(o, "/metadata/namespace")?.to_owned(),
                    str_at(o, "/metadata/name")?.to_owned(),
                    str_at(o, "/metadata/uid")?.to_owned(),
                ))
            })
            .collect();
    let nodes: BTreeMap<String, bool> = list(store, &store_prefix(&NODE, None), &mut summary.rejected)?
        .iter()
        .filter_map(|n| Some((str_at(&n.object, "/metadata/name")?.to_owned(), condition_true(&n.object, "Ready"))))
        .collect();
    let orphaned = |store: &dyn Store, object: &Value| -> Result<bool, ControllerError> {
        let Some((owner, uid)) = deployment_owner(object) else { return Ok(false) };
        let ns = str_at(object, "/metadata/namespace").unwrap_or_default();
        if deployments.contains(&(ns.to_owned(), owner.to_owned(), uid.to_owned())) {
            return Ok(false);
        }
        Ok(!owner_exists(store, ns, owner, uid)?)
    };

    for pod in list(store, &store_prefix(&POD, None), &mut summary.rejected)? {
        let node = str_at(&pod.object, "/spec/nodeName").filter(|n| !n.is_empty());
        if is_terminating(&pod.object) {
            let expired = deletion_deadline_ms(&pod.object).is_some_and(|deadline| deadline <= now_ms);
            let node_lost = node.is_none_or(|n| nodes.get(n) != Some(&true));
            if expired && node_lost {
                match store.delete(&pod.key, Some(pod.revision)) {
                    Ok(_) => {
                        tracing::info!(key = %pod.key, node = node.unwrap_or(""), "removed a terminating pod of a lost node");
                        summary.force_deleted += 1;
                    }
                    Err(e) if is_race(&e) => summary.conflicts += 1,
                    Err(source) => {
                        return Err(ControllerError::Store { operation: "removing", key: pod.key.clone(), source });
                    }
                }
            }
            continue;
        }
        if orphaned(store, &pod.object)? {
            count_deletion(store, &pod, now_ms, &mut summary.orphan_pods, &mut summary.conflicts)?;
            continue;
        }
        if let Some(node) = node
            && !nodes.contains_key(node)
        {
            let key = store_key(&NODE, None, node);
            if store.get(&key).map_err(store_err("reading", &key))?.is_none() {
                count_deletion(store, &pod, now_ms, &mut summary.pods_without_node, &mut summary.conflicts)?;
            }
        }
    }

    for revision in list(store, &store_prefix(&CONTROLLER_REVISION, None), &mut summary.rejected)? {
        if orphaned(store, &revision.object)? {
            match store.delete(&revision.key, Some(revision.revision)) {
                Ok(_) => summary.orphan_revisions += 1,
                Err(e) if is_race(&e) => summary.conflicts += 1,
                Err(source) => {
                    return Err(ControllerError::Store { operation: "deleting", key: revision.key.clone(), source });
                }
            }
        }
    }
    Ok(summary)
}

fn count_deletion(
    store: &dyn Store,
    pod: &Stored,
    now_ms: u64,
    counter: &mut u32,
    conflicts: &mut u32,
) -> Result<(), ControllerError> {
    match delete_pod(store, pod, now_ms) {
        Ok(PodDeleted::Removed | PodDeleted::Marked) => *counter += 1,
        Ok(PodDeleted::Already) => {}
        Err(e) if is_race(&e) => *conflicts += 1,
        Err(source) => return Err(ControllerError::Store { operation: "deleting", key: pod.key.clone(), source }),
    }
    Ok(())
}
