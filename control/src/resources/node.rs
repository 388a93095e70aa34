//! Nodes and Namespaces: the cluster-scoped kinds.

use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus, Node, NodeStatus};

use super::field::{self, Errors};
use super::names;
use super::pod;
use crate::api::admission::FieldError;

const TAINT_EFFECTS: [&str; 3] = ["NoExecute", "NoSchedule", "PreferNoSchedule"];

/// Validates a Node's spec and status.
pub(crate) fn validate(node: &Node, errs: &mut Errors) {
    if let Some(spec) = &node.spec {
        for (i, taint) in spec.taints.iter().flatten().enumerate() {
            let path = field::index("spec.taints", i);
            errs.invalid_each(&field::child(&path, "key"), &taint.key, names::qualified_name(&taint.key));
            if let Some(value) = taint.value.as_deref() {
                errs.invalid_each(&field::child(&path, "value"), value, names::label_value(value));
            }
            if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
                errs.unsupported(field::child(&path, "effect"), &taint.effect, &TAINT_EFFECTS);
            }
        }
    }
    if let Some(status) = &node.status {
        status_into(status, errs);
    }
}

/// Validates what an agent reports about its node: resource names and
/// quantities of `status.capacity` and `status.allocatable`. For writers
/// that store a Node's status without going through admission.
pub fn validate_node_status(status: &NodeStatus) -> Vec<FieldError> {
    let mut errs = Errors::default();
    status_into(status, &mut errs);
    errs.into_vec()
}

fn status_into(status: &NodeStatus, errs: &mut Errors) {
    for (name, map) in [("capacity", &status.capacity), ("allocatable", &status.allocatable)] {
        let path = field::child("status", name);
        for (resource, quantity) in map.iter().flatten() {
            let p = field::key(&path, resource);
            errs.invalid_each(&p, resource, names::qualified_name(resource));
            if let Err(e) = pod::parse_resource(resource, &quantity.0) {
                errs.invalid_str(p, &quantity.0, e);
            }
        }
    }
}

/// A new Namespace is `Active`.
pub(crate) fn namespace_status(ns: &mut Namespace) {
    ns.status = Some(NamespaceStatus { phase: Some("Active".to_owned()), ..NamespaceStatus::default() });
}
