//! The seam between the API server and the resource rules: the server
//! knows HTTP, authentication, the store and watches; an [`Admission`]
//! knows what a kind is, its defaults, its validation and what else a
//! write must change (ClusterIP and NodePort allocations).

use crate::store::{Op, Store};

/// A resource kind as the API serves it (`pods`, `deployments`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindInfo {
    /// `v1` or `apps/v1`.
    pub api_version: &'static str,
    /// `Pod`.
    pub kind: &'static str,
    /// The plural in URLs and store keys: `pods`.
    pub resource: &'static str,
    /// Namespaced, or cluster-scoped (Node, Namespace).
    pub namespaced: bool,
    /// Derived by controllers (endpoints): users cannot write it.
    pub read_only: bool,
}

/// One validation failure, Kubernetes' `StatusCause` shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// `spec.ports[1].port`.
    pub field: String,
    /// `must be between 1 and 65535, inclusive`.
    pub reason: String,
}

/// Why a write is refused before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 422 with every cause.
    Invalid(Vec<FieldError>),
    /// 409, e.g. an address or port another Service holds.
    Conflict(String),
    /// 404 (unknown kind, missing namespace).
    NotFound(String),
    /// 403 (new objects in a terminating namespace).
    Forbidden(String),
}

/// How a DELETE of one object proceeds.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// Remove it now.
    Now,
    /// Keep it, terminating: store this version of it (with
    /// `metadata.deletionTimestamp` and `deletionGracePeriodSeconds`); its
    /// agent removes it once stopped.
    Graceful(serde_json::Value),
    /// It is already terminating, no later than this delete would ask:
    /// nothing to write.
    AlreadyTerminating,
    /// It may not be deleted (the `default` namespace): 403 with this
    /// message.
    Refused(String),
}

/// What happens to an object before it is stored.
pub trait Admission: Send + Sync {
    /// Every kind served, for routing and discovery.
    fn kinds(&self) -> Vec<KindInfo>;

    /// Defaults, validates and completes `object` (its JSON as sent, with
    /// `metadata.name`/`namespace` already checked against the URL) for a
    /// create (`old` = None) or an update (`old` = the stored object).
    /// Returns extra store operations that must commit in the same
    /// transaction as the object itself (allocation bookkeeping), or why
    /// the write is refused — in which case nothing is written.
    ///
    /// # Errors
    /// The rejection, with field paths for invalid objects.
    fn admit(
        &self,
        kind: &KindInfo,
        object: &mut serde_json::Value,
        old: Option<&serde_json::Value>,
        store: &dyn Store,
    ) -> Result<Vec<Op>, Rejection>;

    /// Store operations that release what a deleted object held.
    fn release(&self, kind: &KindInfo, object: &serde_json::Value, store: &dyn Store) -> Vec<Op>;

    /// Why node `node`, writing with its own credentials, may not store
    /// `object` (after [`Admission::admit`]; `old` = the stored version,
    /// None on create): Kubernetes' NodeRestriction. The message follows
    /// `<kind> "<name>" is forbidden: `. By default nodes are not
    /// restricted beyond the authorizer.
    ///
    /// # Errors
    /// The reason, for a 403.
    fn restrict_node(
        &self,
        node: &str,
        kind: &KindInfo,
        object: &serde_json::Value,
        old: Option<&serde_json::Value>,
    ) -> Result<(), String> {
        let _ = (node, kind, object, old);
        Ok(())
    }

    /// How to delete `object` (as stored) at `now_ms`, with the request's
    /// `gracePeriodSeconds`. Objects are removed at once unless the kind
    /// terminates gracefully (pods).
    fn deletion(
        &self,
        kind: &KindInfo,
        object: &serde_json::Value,
        grace_seconds: Option<i64>,
        now_ms: u64,
    ) -> Deletion {
        let _ = (kind, object, grace_seconds, now_ms);
        Deletion::Now
    }
}
