//! What a node may change with its own credentials, after Kubernetes'
//! NodeRestriction admission plugin (and the Node authorizer behind it).
//!
//! The API server lets a node write only its own Node object and the pods
//! bound to it; these rules bound *what* it may change there, so that a
//! compromised node cannot steer workloads to itself or rewrite other
//! people's pods:
//! - **Its Node:** no labels under `node-restriction.kubernetes.io/`, and
//!   of the `kubernetes.io`/`k8s.io` labels only those kubelet sets itself
//!   (`kubernetes.io/hostname`, `…/os`, `…/arch`, the topology and
//!   instance-type labels, and the `kubelet.kubernetes.io/` and
//!   `node.kubernetes.io/` namespaces). So `node-role.kubernetes.io/…`
//!   stays the administrator's. Registration may not carry a forbidden
//!   label, an update may not add, change or remove one, and an update may
//!   not change the taints.
//! - **Its pods:** only `status`, as the `pods/status` subresource a kubelet
//!   writes through allows: metadata (labels, annotations, owners) and spec
//!   stay as stored. A node cannot create pods (berth has no mirror pods).
//!
//! Deleting is not restricted further: a node may delete its Node and the
//! pods bound to it, which is how an agent finishes a graceful deletion.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Kind;

/// The forbidden label namespace (and its subdomains).
const NODE_RESTRICTION: &str = "node-restriction.kubernetes.io";

/// `kubernetes.io` and `k8s.io` labels kubelet sets on its own Node
/// (k8s.io/kubelet's `kubeletLabels`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces kubelet may set anything in (and their subdomains).
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Why node `node` may not write `object` (`old` = the stored version,
/// None on create), or Ok. The message reads after `<kind> "<name>" is
/// forbidden: `.
pub(super) fn check(node: &str, kind: Kind, object: &Value, old: Option<&Value>) -> Result<(), String> {
    match kind {
        Kind::Node => check_node(node, object, old),
        Kind::Pod => check_pod(node, object, old),
        // The authorizer lets nodes write nothing else; refuse here too in
        // case it ever does.
        _ => Err(format!("node {node:?} may only write its own Node and the pods bound to it")),
    }
}

fn check_node(node: &str, object: &Value, old: Option<&Value>) -> Result<(), String> {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if name != node {
        return Err(format!("node {node:?} is not allowed to modify node {name:?}"));
    }
    let labels = |o: &Value| o.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
    let new_labels = labels(object);
    let Some(old) = old else {
        let forbidden = forbidden_labels(&modified_labels(&new_labels, &Value::Null));
        return if forbidden.is_empty() {
            Ok(())
        } else {
            Err(format!("node {node:?} is not allowed to set the following labels: {}", join(&forbidden)))
        };
    };
    let taints = |o: &Value| o.pointer("/spec/taints").cloned().filter(|t| !is_empty(t));
    if taints(object) != taints(old) {
        return Err(format!("node {node:?} is not allowed to modify taints"));
    }
    let forbidden = forbidden_labels(&modified_labels(&new_labels, &labels(old)));
    if forbidden.is_empty() {
        Ok(())
    } else {
        Err(format!("node {node:?} is not allowed to modify labels: {}", join(&forbidden)))
    }
}

fn check_pod(node: &str, object: &Value, old: Option<&Value>) -> Result<(), String> {
    let Some(old) = old else {
        return Err(format!("node {node:?} can not create pods: berth has no mirror pods"));
    };
    let bound_to = old.pointer("/spec/nodeName").and_then(Value::as_str);
    if bound_to != Some(node) {
        return Err(format!("node {node:?} can only update pods with spec.nodeName set to itself"));
    }
    let changed = changed_outside_status(object, old);
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!("node {node:?} can only update the status of a pod, not {}", join(&changed)))
    }
}

/// Fields other than `status` (and the server's own metadata) that differ,
/// as `metadata.labels`, `spec`, ….
fn changed_outside_status(object: &Value, old: &Value) -> BTreeSet<String> {
    // Set by the API server on every write, not by the caller.
    const SERVER_SET: [&str; 3] = ["resourceVersion", "generation", "managedFields"];
    let empty = serde_json::Map::new();
    let map = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let (new, old) = (map(object), map(old));
    let mut changed = BTreeSet::new();
    let keys: BTreeSet<&String> = new.keys().chain(old.keys()).collect();
    for key in keys {
        match key.as_str() {
            "status" | "apiVersion" | "kind" => {}
            "metadata" => {
                let meta = |m: Option<&Value>| m.and_then(Value::as_object).unwrap_or(&empty).clone();
                let (new_meta, old_meta) = (meta(new.get(key)), meta(old.get(key)));
                let fields: BTreeSet<&String> = new_meta.keys().chain(old_meta.keys()).collect();
                for field in fields {
                    if SERVER_SET.contains(&field.as_str()) {
                        continue;
                    }
                    let (a, b) =
                        (new_meta.get(field).filter(|v| !is_empty(v)), old_meta.get(field).filter(|v| !is_empty(v)));
                    if a != b {
                        changed.insert(format!("metadata.{field}"));
                    }
                }
            }
            _ => {
                if new.get(key).filter(|v| !is_empty(v)) != old.get(key).filter(|v| !is_empty(v)) {
                    changed.insert(key.clone());
                }
            }
        }
    }
    changed
}

/// `null`, `{}` and `[]` are all "not set".
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Label keys added, removed or changed between two `metadata.labels`.
fn modified_labels(new: &Value, old: &Value) -> BTreeSet<String> {
    let empty = serde_json::Map::new();
    let (new, old) = (new.as_object().unwrap_or(&empty), old.as_object().unwrap_or(&empty));
    new.iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .chain(old.iter().filter(|(k, v)| new.get(*k) != Some(v)))
        .map(|(k, _)| k.clone())
        .collect()
}

fn forbidden_labels(modified: &BTreeSet<String>) -> BTreeSet<String> {
    modified.iter().filter(|label| is_forbidden(label)).cloned().collect()
}

fn is_forbidden(label: &str) -> bool {
    let Some((namespace, _)) = label.split_once('/') else { return false };
    if in_namespace(namespace, NODE_RESTRICTION) {
        return true;
    }
    let kubernetes = in_namespace(namespace, "kubernetes.io") || in_namespace(namespace, "k8s.io");
    kubernetes && !is_kubelet_label(label, namespace)
}

fn is_kubelet_label(label: &str, namespace: &str) -> bool {
    KUBELET_LABELS.contains(&label) || KUBELET_LABEL_NAMESPACES.iter().any(|ns| in_namespace(namespace, ns))
}

/// `namespace` is `domain` or one of its subdomains.
fn in_namespace(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

fn join(keys: &BTreeSet<String>) -> String {
    keys.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(labels: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {}})
    }

    #[test]
    fn a_node_registers_with_kubelet_labels_but_not_roles() {
        let kubelet = json!({
            "kubernetes.io/hostname": "n1",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": "z1",
            "node.kubernetes.io/exclude-from-external-load-balancers": "",
            "x.kubelet.kubernetes.io/anything": "1",
            "team.example.com/gpu": "yes",
            "plain": "ok",
        });
        assert_eq!(check("n1", Kind::Node, &node(kubelet), None), Ok(()));
        let err = check(
            "n1",
            Kind::Node,
            &node(json!({"node-role.kubernetes.io/control-plane": "", "node-restriction.kubernetes.io/pci": "1"})),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "node \"n1\" is not allowed to set the following labels: node-restriction.kubernetes.io/pci, \
             node-role.kubernetes.io/control-plane"
        );
        // Look-alike domains are not kubernetes.io.
        assert_eq!(check("n1", Kind::Node, &node(json!({"evilkubernetes.io/x": "1"})), None), Ok(()));
        assert!(check("n1", Kind::Node, &node(json!({"sub.k8s.io/x": "1"})), None).is_err());
    }

    #[test]
    fn a_node_keeps_admin_labels_and_taints_as_they_are() {
        let old = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": "", "kubernetes.io/os": "linux"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
        });
        // Heartbeats, kubelet labels and its own labels are fine; an
        // admin label it merely keeps is fine.
        let mut renewed = old.clone();
        renewed["metadata"]["labels"]["kubernetes.io/os"] = json!("linux2");
        renewed["metadata"]["labels"]["mine"] = json!("1");
        renewed["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(check("n1", Kind::Node, &renewed, Some(&old)), Ok(()));

        let mut dropped = old.clone();
        dropped["metadata"]["labels"].as_object_mut().unwrap().remove("node-role.kubernetes.io/worker");
        assert_eq!(
            check("n1", Kind::Node, &dropped, Some(&old)),
            Err("node \"n1\" is not allowed to modify labels: node-role.kubernetes.io/worker".to_owned())
        );
        let mut untainted = old.clone();
        untainted["spec"] = json!({});
        assert_eq!(
            check("n1", Kind::Node, &untainted, Some(&old)),
            Err("node \"n1\" is not allowed to modify taints".to_owned())
        );
        assert!(check("n2", Kind::Node, &old, Some(&old)).is_err(), "another node's object");
    }

    #[test]
    fn a_node_changes_only_the_status_of_its_own_pods() {
        let old = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}, "resourceVersion": "7"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"},
        });
        let mut running = old.clone();
        running["status"] = json!({"phase": "Running", "podIP": "198.18.0.5"});
        running["metadata"]["resourceVersion"] = json!("8");
        running["metadata"]["annotations"] = json!({});
        assert_eq!(check("n1", Kind::Pod, &running, Some(&old)), Ok(()));
        assert!(check("n2", Kind::Pod, &running, Some(&old)).unwrap_err().contains("spec.nodeName set to itself"));

        let mut relabelled = running.clone();
        relabelled["metadata"]["labels"] = json!({"app": "db"});
        relabelled["spec"]["containers"][0]["image"] = json!("evil");
        assert_eq!(
            check("n1", Kind::Pod, &relabelled, Some(&old)),
            Err("node \"n1\" can only update the status of a pod, not metadata.labels, spec".to_owned())
        );
        assert!(check("n1", Kind::Pod, &old, None).is_err(), "no pod creation");
        assert!(check("n1", Kind::Deployment, &old, None).is_err());
    }
}
