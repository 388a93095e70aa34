//! The namespace controller pass: empties a terminating Namespace, then
//! removes it, as Kubernetes' namespace controller does.
//!
//! # Design
//! Deleting a Namespace through the API marks it (`deletionTimestamp`,
//! `status.phase: Terminating`, the `kubernetes` finalizer; see
//! [`crate::resources::namespace_deletion`]), and admission refuses new
//! objects in it from then on. Each pass, for every terminating Namespace:
//! every object of every namespaced kind in it is deleted — pods as the API
//! deletes them (gracefully when running on a node: their agents finish
//! them, or the garbage collector once their node is lost), Services with
//! admission's release operations (their ClusterIPs and NodePorts go back
//! to the ranges), everything else at once. Only when a pass finds the
//! namespace already empty is the Namespace itself removed, with its
//! revision as precondition. Same conventions as [`super::loops`]: lost
//! races are counted and retried next pass.
//!
//! # Limitations
//! Only the kinds berth serves are collected; no `NamespaceDeletionContentFailure`
//! conditions are written.

use super::loops::{ControllerError, PodDeleted, delete_pod, is_race, list, str_at};
use crate::api::admission::Admission;
use crate::resources::{KINDS, NAMESPACE, POD, is_terminating, store_prefix};
use crate::store::{Op, Store};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSummary {
    /// Objects in terminating namespaces deleted (or pods marked).
    pub deleted: u32,
    /// Terminating namespaces removed, being empty.
    pub removed: u32,
    /// Writes that lost a race: retried next pass.
    pub conflicts: u32,
    /// Stored objects that could not be decoded; logged.
    pub rejected: u32,
}

/// One pass; see the module docs.
///
/// # Errors
/// [`ControllerError::Store`] when the store fails.
pub fn finalize_namespaces(
    store: &dyn Store,
    admission: &dyn Admission,
    now_ms: u64,
) -> Result<NamespaceSummary, ControllerError> {
    let mut summary = NamespaceSummary::default();
    for namespace in list(store, &store_prefix(&NAMESPACE, None), &mut summary.rejected)? {
        if !is_terminating(&namespace.object) {
            continue;
        }
        let Some(name) = str_at(&namespace.object, "/metadata/name") else { continue };
        let mut held = 0usize;
        for kind in KINDS.iter().filter(|k| k.namespaced) {
            for object in list(store, &store_prefix(kind, Some(name)), &mut summary.rejected)? {
                held += 1;
                let result = if kind.kind == POD.kind {
                    delete_pod(store, &object, now_ms).map(|done| done != PodDeleted::Already)
                } else {
                    let mut txn = vec![Op::Delete { key: object.key.clone(), expected: Some(object.revision) }];
                    txn.extend(admission.release(kind, &object.object, store));
                    store.txn(&txn).map(|_| true)
                };
                match result {
                    Ok(true) => summary.deleted += 1,
                    Ok(false) => {}
                    Err(e) if is_race(&e) => summary.conflicts += 1,
                    Err(source) => {
                        return Err(ControllerError::Store { operation: "deleting", key: object.key.clone(), source });
                    }
                }
            }
        }
        if held == 0 {
            match store.delete(&namespace.key, Some(namespace.revision)) {
                Ok(_) => {
                    tracing::info!(namespace = name, "namespace emptied and removed");
                    summary.removed += 1;
                }
                Err(e) if is_race(&e) => summary.conflicts += 1,
                Err(source) => {
                    return Err(ControllerError::Store { operation: "removing", key: namespace.key.clone(), source });
                }
            }
        }
    }
    Ok(summary)
}
