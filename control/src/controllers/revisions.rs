//! A Deployment's revision history, kept as `apps/v1` ControllerRevisions
//! (berth has no ReplicaSets, which carry it in Kubernetes).
//!
//! # Design
//! - **One revision per distinct pod template**, named
//!   `<deployment>-<pod-template-hash>`, owned by the Deployment
//!   (`ownerReferences`, controller), labelled with the template's labels
//!   plus `pod-template-hash`, holding the template as stored in the
//!   Deployment under `data.spec.template` and its number in `revision`.
//!   Storing the Deployment's own template (no hash label) makes a rollback
//!   an exact copy back, so the template hash (and the revision) is found
//!   again.
//! - **Numbering** follows Kubernetes' ReplicaSet annotations: a new
//!   template gets max + 1; going back to an older template (rollback, or
//!   re-applying an old manifest) moves that revision to max + 1 instead of
//!   creating another. The Deployment is annotated
//!   `deployment.kubernetes.io/revision: "N"` with its current revision
//!   (written with the status, see [`super::loops`]), and the current
//!   revision carries the Deployment's `kubernetes.io/change-cause`.
//! - **Pruning** keeps `spec.revisionHistoryLimit` (default 10) old
//!   revisions; the oldest beyond it go, but never one that still has pods
//!   (mid-rollout), as Kubernetes only cleans up ReplicaSets scaled to 0.
//! - Revisions are written straight to the store: the kind is read-only in
//!   the API. A deleted Deployment's revisions are collected by the garbage
//!   collector ([`super::gc`]).
//!
//! # Limitations
//! - A revision whose name is taken by another Deployment's (a deleted one
//!   not yet collected) is a lost race, retried next pass.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::loops::{ControllerError, Stored, Summary, is_race, serialise, str_at, timestamp};
use crate::resources::{CONTROLLER_REVISION, DEPLOYMENT, store_key};
use crate::store::Store;

/// The Deployment annotation with its current revision number.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// kubectl's change cause, copied to the current revision.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// Kubernetes' default `spec.revisionHistoryLimit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 10;

/// The revision number of a stored ControllerRevision.
pub fn number(revision: &Value) -> i64 {
    revision.get("revision").and_then(Value::as_i64).unwrap_or(0)
}

/// The name of a Deployment's revision for a template hash.
pub fn revision_name(deployment: &str, hash: &str) -> String {
    format!("{deployment}-{hash}")
}

/// What [`sync`] needs to know of one Deployment.
pub(super) struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub object: &'a Value,
    /// The current template's hash.
    pub hash: &'a str,
}

/// Makes the current template's revision exist and be the newest, prunes
/// old ones, and returns the current revision number (None when the write
/// lost a race: retried next pass).
///
/// `revisions` are the Deployment's (by owner uid), `hashes_with_pods` the
/// template hashes its live pods carry, `new_uid` makes a uid.
pub(super) fn sync(
    store: &dyn Store,
    owner: &Owner<'_>,
    revisions: &[&Stored],
    hashes_with_pods: &HashSet<String>,
    now_ms: u64,
    new_uid: &mut dyn FnMut() -> String,
    summary: &mut Summary,
) -> Result<Option<i64>, ControllerError> {
    let (hash, name) = (owner.hash, revision_name(owner.name, owner.hash));
    let max = revisions.iter().map(|r| number(&r.object)).max().unwrap_or(0);
    let change_cause = str_at(owner.object, &format!("/metadata/annotations/{}", escape(CHANGE_CAUSE_ANNOTATION)));
    let current = revisions.iter().find(|r| str_at(&r.object, "/metadata/name") == Some(name.as_str()));
    let number = match current {
        Some(r) => {
            let mut wanted = r.object.clone();
            let mut n = number(&r.object);
            if n < max {
                // Back to an older template: it becomes the newest.
                n = max + 1;
                wanted["revision"] = json!(n);
            }
            set_change_cause(&mut wanted, change_cause);
            if wanted != r.object {
                match store.update(&r.key, &serialise(&wanted), Some(r.revision)) {
                    Ok(_) => summary.revisions_written += 1,
                    Err(e) if is_race(&e) => {
                        summary.conflicts += 1;
                        return Ok(None);
                    }
                    Err(source) => {
                        return Err(ControllerError::Store { operation: "updating", key: r.key.clone(), source });
                    }
                }
            }
            n
        }
        None => {
            let n = max + 1;
            let template = owner.object.pointer("/spec/template").cloned().unwrap_or(Value::Null);
            let mut revision = new_revision(owner, &name, hash, &template, n, now_ms, new_uid());
            set_change_cause(&mut revision, change_cause);
            let key = store_key(&CONTROLLER_REVISION, Some(owner.namespace), &name);
            match store.create(&key, &serialise(&revision)) {
                Ok(_) => summary.revisions_written += 1,
                Err(e) if is_race(&e) => {
                    summary.conflicts += 1;
                    return Ok(None);
                }
                Err(source) => return Err(ControllerError::Store { operation: "creating", key, source }),
            }
            n
        }
    };
    prune(store, owner, &name, revisions, hashes_with_pods, summary)?;
    Ok(Some(number))
}

/// A JSON pointer token (`/` in annotation keys is `~1`).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn set_change_cause(revision: &mut Value, cause: Option<&str>) {
    let Some(meta) = revision.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    let Some(map) = annotations.as_object_mut() else { return };
    match cause {
        Some(c) => {
            map.insert(CHANGE_CAUSE_ANNOTATION.to_owned(), Value::String(c.to_owned()));
        }
        None => {
            map.remove(CHANGE_CAUSE_ANNOTATION);
        }
    }
    if map.is_empty() {
        meta.remove("annotations");
    }
}

fn new_revision(
    owner: &Owner<'_>,
    name: &str,
    hash: &str,
    template: &Value,
    number: i64,
    now_ms: u64,
    uid: String,
) -> Value {
    let mut labels = template.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    labels.insert(super::loops::POD_TEMPLATE_HASH.to_owned(), Value::String(hash.to_owned()));
    let mut metadata = Map::new();
    metadata.insert("name".to_owned(), Value::String(name.to_owned()));
    metadata.insert("namespace".to_owned(), Value::String(owner.namespace.to_owned()));
    metadata.insert("uid".to_owned(), Value::String(uid));
    metadata.insert("creationTimestamp".to_owned(), timestamp(now_ms));
    metadata.insert("labels".to_owned(), Value::Object(labels));
    metadata.insert(
        "ownerReferences".to_owned(),
        json!([{
            "apiVersion": DEPLOYMENT.api_version,
            "kind": DEPLOYMENT.kind,
            "name": owner.name,
            "uid": owner.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
    );
    json!({
        "apiVersion": CONTROLLER_REVISION.api_version,
        "kind": CONTROLLER_REVISION.kind,
        "metadata": metadata,
        "data": {"spec": {"template": template}},
        "revision": number,
    })
}

/// Deletes the oldest old revisions beyond the history limit, sparing any
/// that still has pods.
fn prune(
    store: &dyn Store,
    owner: &Owner<'_>,
    current: &str,
    revisions: &[&Stored],
    hashes_with_pods: &HashSet<String>,
    summary: &mut Summary,
) -> Result<(), ControllerError> {
    let limit = owner
        .object
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_HISTORY_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut old: Vec<&&Stored> =
        revisions.iter().filter(|r| str_at(&r.object, "/metadata/name") != Some(current)).collect();
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| number(&r.object));
    let mut excess = old.len() - limit;
    for r in old {
        if excess == 0 {
            break;
        }
        let hash = str_at(&r.object, &format!("/metadata/labels/{}", super::loops::POD_TEMPLATE_HASH));
        if hash.is_some_and(|h| hashes_with_pods.contains(h)) {
            continue;
        }
        match store.delete(&r.key, Some(r.revision)) {
            Ok(_) => summary.revisions_deleted += 1,
            Err(e) if is_race(&e) => summary.conflicts += 1,
            Err(source) => return Err(ControllerError::Store { operation: "pruning", key: r.key.clone(), source }),
        }
        excess -= 1;
    }
    Ok(())
}
