//! The store-facing passes of the endpoints controller and the node
//! lifecycle controller, beside [`super::loops`]' Deployment and scheduler
//! passes and in the same style: one synchronous, level-triggered pass per
//! call, returning a [`PassSummary`] of what it wrote.
//!
//! # Design
//! - **Same conventions as [`super::loops`]**: full lists each pass, CAS
//!   writes with the revision an object was read at, lost races
//!   (conflict, gone, name taken) counted in [`PassSummary::conflicts`] and
//!   retried next pass, only backend failures end a pass with
//!   [`ControllerError`].
//! - **Endpoints** ([`reconcile_endpoints`]): for every Service with a
//!   selector, its namespace's pods become [`PodView`]s (labels,
//!   `status.podIP`, `spec.nodeName`, `Ready` condition, `deletionTimestamp`,
//!   container ports with protocol defaulting to TCP, `berth.dev/weight`);
//!   node readiness is the Node's `Ready` condition (a node without a Node
//!   object is not ready). [`endpoints::plan`] gives the addresses, which
//!   are stored as `discovery.k8s.io/v1` EndpointSlices written directly to
//!   the store (the kind is read-only in the API), labelled
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`.
//!   Slice ports are slice-wide in EndpointSlice, so addresses are grouped
//!   by their resolved port set: the first group (in port-set order) is the
//!   slice named after the Service, further groups (pods naming a
//!   `targetPort` differently, e.g. during a rollout) are `<svc>-1`,
//!   `<svc>-2`, ... A Service with no endpoints gets one empty slice named
//!   after it. A slice is created when missing, CAS-updated only when its
//!   labels, endpoints, ports or annotations changed, and deleted when no
//!   longer wanted, which covers deleted Services and Services that lost
//!   their selector: every stored slice labelled as managed by this
//!   controller is accounted for.
//! - **Weights** have no field in EndpointSlice: when any address has a
//!   `berth.dev/weight`, the slice carries the annotation
//!   `berth.dev/weights`, a JSON object from address to weight.
//! - **Node leases** ([`reconcile_nodes`]): the lease is the Node's `Ready`
//!   condition `lastHeartbeatTime` (RFC 3339), which the agent renews, as
//!   kubelets did before `coordination.k8s.io` Leases; a Node with no
//!   heartbeat counts as renewed at its `creationTimestamp`. The stored
//!   readiness is the `Ready` condition, `since` its `lastTransitionTime`
//!   (else `creationTimestamp`). [`node_lifecycle::plan`]'s actions are
//!   written as: `MarkNotReady` → `Ready` status `False`, reason
//!   `NodeLeaseExpired`, `lastTransitionTime` = the lease expiry;
//!   `MarkReady` → status `True`, reason `KubeletReady`, transition now,
//!   but only when the stored `False` is this controller's own
//!   (`NodeLeaseExpired`) or there is no `Ready` condition: a node its
//!   agent reports not ready for another reason stays so while it
//!   heartbeats (it is still evicted after the toleration);
//!   `lastHeartbeatTime` is kept (it is the agent's). `Evict` → every pod
//!   with `spec.nodeName` equal to the node is deleted as the API deletes
//!   it (marked terminating), with its revision as precondition; the
//!   Deployment pass replaces them and the scheduler places the new ones
//!   on Ready nodes.
//! - Node status is written directly to the store (no admission), like
//!   Deployment status in [`super::loops`].
//!
//! # Limitations
//! - No 100-endpoint chunking: one slice per Service and port set.
//! - IPv4 only (`addressType: IPv4`, whatever the address looks like).
//! - Slice names are not hashed: a Service named `web` and another named
//!   `web-1` with differing port sets could fight over `web-1` (the
//!   `kubernetes.io/service-name` label makes the owner of a slice clear,
//!   and the loser counts a conflict each pass).
//! - Slices carry no `ownerReferences` (no garbage collector yet) and no
//!   `uid`; the pass deletes them itself.
//! - Evictions are graceful deletions with the pod's own grace; when no
//!   agent finishes them (the node stays lost), the garbage collector
//!   removes them after the grace ([`super::gc`]).
//! - Nodes' lease times have one-second resolution (RFC 3339 to the
//!   second, as stored).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::endpoints::{self, Endpoint, PodView, ServicePort, ServiceView, TargetPort};
use super::loops::{ControllerError, PodDeleted, Stored, delete_pod, is_race, list, serialise, str_at, timestamp};
use super::node_lifecycle::{self, LifecycleConfig, NodeAction, NodeLease};
use crate::resources::{ENDPOINT_SLICE, NODE, POD, SERVICE, WEIGHT_ANNOTATION, parse_weight, store_key, store_prefix};
use crate::store::Store;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's controller.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.berth.dev";
/// The slice annotation carrying per-address weights.
pub const WEIGHTS_ANNOTATION: &str = "berth.dev/weights";
/// The reason of a `Ready=False` written for an expired lease.
pub const LEASE_EXPIRED: &str = "NodeLeaseExpired";
/// The reason of a `Ready=True` written for a renewed lease.
pub const READY_REASON: &str = "KubeletReady";

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// EndpointSlices created.
    pub created: u32,
    /// EndpointSlices updated.
    pub updated: u32,
    /// EndpointSlices deleted.
    pub deleted: u32,
    /// Nodes marked NotReady.
    pub marked_not_ready: u32,
    /// Nodes marked Ready.
    pub marked_ready: u32,
    /// Pods deleted from lost nodes.
    pub evicted: u32,
    /// Writes that lost a race: retried next pass.
    pub conflicts: u32,
    /// Stored objects that could not be decoded or lack a name; logged.
    pub rejected: u32,
}

fn parse_ms(time: Option<&str>) -> Option<u64> {
    let t = time?.parse::<Timestamp>().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn condition_true(object: &Value, kind: &str) -> bool {
    condition(object, kind).and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

fn protocol(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or("TCP").to_owned()
}

/// What the planner sees of a Service.
fn service_view(service: &Value) -> ServiceView {
    let selector = service.pointer("/spec/selector").filter(|s| s.is_object()).map(|s| string_map(Some(s)));
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p.get("port").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok());
            let target = match p.get("targetPort") {
                Some(Value::Number(n)) => TargetPort::Number(n.as_u64().and_then(|n| u16::try_from(n).ok())?),
                Some(Value::String(s)) => match s.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(s.clone()),
                },
                // Kubernetes' default: the Service port itself.
                _ => TargetPort::Number(port?),
            };
            Some(ServicePort {
                name: p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                protocol: protocol(p.get("protocol")),
                target,
            })
        })
        .collect();
    ServiceView { selector, ports }
}

/// What the planner sees of a pod.
fn pod_view(pod: &Value) -> PodView {
    let ports = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|p| {
            let port = p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok())?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            Some((name, port, protocol(p.get("protocol"))))
        })
        .collect();
    PodView {
        namespace: str_at(pod, "/metadata/namespace").unwrap_or_default().to_owned(),
        name: str_at(pod, "/metadata/name").unwrap_or_default().to_owned(),
        labels: string_map(pod.pointer("/metadata/labels")),
        ip: str_at(pod, "/status/podIP").filter(|ip| !ip.is_empty()).map(str::to_owned),
        node: str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()).map(str::to_owned),
        ready: condition_true(pod, "Ready"),
        terminating: pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()),
        ports,
        weight: pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(WEIGHT_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(parse_weight),
    }
}

/// The slices wanted for one Service: name → slice (without server fields).
fn desired_slices(
    ns: &str,
    svc: &str,
    view: &ServiceView,
    eps: &[Endpoint],
    pod_uids: &BTreeMap<String, String>,
) -> BTreeMap<String, Value> {
    // Resolved port set → its addresses, in port-set order.
    let mut groups: BTreeMap<Vec<(String, u16, String)>, Vec<&Endpoint>> = BTreeMap::new();
    for ep in eps {
        let ports = ep
            .ports
            .iter()
            .map(|(name, port)| {
                let proto = view.ports.iter().find(|sp| &sp.name == name).map_or("TCP", |sp| sp.protocol.as_str());
                (name.clone(), *port, proto.to_owned())
            })
            .collect();
        groups.entry(ports).or_default().push(ep);
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let mut out = BTreeMap::new();
    for (i, (ports, group)) in groups.into_iter().enumerate() {
        let name = if i == 0 { svc.to_owned() } else { format!("{svc}-{i}") };
        let endpoints: Vec<Value> = group
            .iter()
            .map(|ep| {
                let pod_name = ep.pod.split_once('/').map_or(ep.pod.as_str(), |(_, n)| n);
                let mut target = json!({"kind": "Pod", "namespace": ns, "name": pod_name});
                if let Some(uid) = pod_uids.get(pod_name) {
                    target["uid"] = json!(uid);
                }
                let mut e = json!({
                    "addresses": [ep.ip],
                    "conditions": {"ready": ep.ready, "serving": ep.serving, "terminating": ep.terminating},
                    "targetRef": target,
                });
                if let Some(node) = &ep.node_name {
                    e["nodeName"] = json!(node);
                }
                e
            })
            .collect();
        let ports: Vec<Value> =
            ports.iter().map(|(name, port, proto)| json!({"name": name, "port": port, "protocol": proto})).collect();
        let weights: Map<String, Value> =
            group.iter().filter_map(|ep| Some((ep.ip.clone(), json!(ep.weight?)))).collect();
        let mut metadata = json!({
            "name": name,
            "namespace": ns,
            "labels": {SERVICE_NAME_LABEL: svc, MANAGED_BY_LABEL: MANAGED_BY},
        });
        if !weights.is_empty() {
            metadata["annotations"] = json!({WEIGHTS_ANNOTATION: Value::Object(weights).to_string()});
        }
        let slice = json!({
            "apiVersion": ENDPOINT_SLICE.api_version,
            "kind": ENDPOINT_SLICE.kind,
            "metadata": metadata,
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        out.insert(name, slice);
    }
    out
}

/// Whether the stored slice already says what `desired` says.
fn same_slice(stored: &Value, desired: &Value) -> bool {
    ["/metadata/labels", "/metadata/annotations", "/addressType", "/endpoints", "/ports"]
        .iter()
        .all(|p| stored.pointer(p) == desired.pointer(p))
}

/// One pass of the endpoints controller; see the module docs.
///
/// # Errors
/// [`ControllerError::Store`] when the store fails; lost races are counted
/// in [`PassSummary::conflicts`] instead.
pub fn reconcile_endpoints(store: &dyn Store, now_ms: u64) -> Result<PassSummary, ControllerError> {
    let mut summary = PassSummary::default();
    let node_ready: BTreeMap<String, bool> = list(store, &store_prefix(&NODE, None), &mut summary.rejected)?
        .iter()
        .filter_map(|n| Some((str_at(&n.object, "/metadata/name")?.to_owned(), condition_true(&n.object, "Ready"))))
        .collect();
    let mut pods_by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pod in list(store, &store_prefix(&POD, None), &mut summary.rejected)? {
        let ns = str_at(&pod.object, "/metadata/namespace").unwrap_or_default().to_owned();
        pods_by_ns.entry(ns).or_default().push(pod.object);
    }
    let existing: BTreeMap<String, Stored> = list(store, &store_prefix(&ENDPOINT_SLICE, None), &mut summary.rejected)?
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect();

    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for service in list(store, &store_prefix(&SERVICE, None), &mut summary.rejected)? {
        let s = &service.object;
        let (Some(name), Some(ns)) = (str_at(s, "/metadata/name"), str_at(s, "/metadata/namespace")) else {
            tracing::warn!(key = %service.key, "service without name or namespace; skipped");
            summary.rejected += 1;
            continue;
        };
        let view = service_view(s);
        if view.selector.is_none() {
            continue;
        }
        let pods = pods_by_ns.get(ns).map_or(&[][..], Vec::as_slice);
        let views: Vec<PodView> = pods.iter().map(pod_view).collect();
        let pod_uids: BTreeMap<String, String> = pods
            .iter()
            .filter_map(|p| Some((str_at(p, "/metadata/name")?.to_owned(), str_at(p, "/metadata/uid")?.to_owned())))
            .collect();
        let eps = endpoints::plan(&view, &views, |n| node_ready.get(n).copied().unwrap_or(false));
        for (slice_name, mut desired) in desired_slices(ns, name, &view, &eps, &pod_uids) {
            let key = store_key(&ENDPOINT_SLICE, Some(ns), &slice_name);
            wanted.insert(key.clone());
            match existing.get(&key) {
                Some(stored) if same_slice(&stored.object, &desired) => {}
                Some(stored) => {
                    // Keep the server fields the stored slice has.
                    if let Some(created) = stored.object.pointer("/metadata/creationTimestamp") {
                        desired["metadata"]["creationTimestamp"] = created.clone();
                    }
                    match store.update(&key, &serialise(&desired), Some(stored.revision)) {
                        Ok(_) => summary.updated += 1,
                        Err(e) if is_race(&e) => summary.conflicts += 1,
                        Err(source) => return Err(ControllerError::Store { operation: "updating", key, source }),
                    }
                }
                None => {
                    desired["metadata"]["creationTimestamp"] = timestamp(now_ms);
                    match store.create(&key, &serialise(&desired)) {
                        Ok(_) => summary.created += 1,
                        Err(e) if is_race(&e) => summary.conflicts += 1,
                        Err(source) => return Err(ControllerError::Store { operation: "creating", key, source }),
                    }
                }
            }
        }
    }
    for (key, stored) in &existing {
        let ours = str_at(&stored.object, &format!("/metadata/labels/{}", MANAGED_BY_LABEL.replace('/', "~1")))
            == Some(MANAGED_BY);
        if !ours || wanted.contains(key) {
            continue;
        }
        match store.delete(key, Some(stored.revision)) {
            Ok(_) => summary.deleted += 1,
            Err(e) if is_race(&e) => summary.conflicts += 1,
            Err(source) => return Err(ControllerError::Store { operation: "deleting", key: key.clone(), source }),
        }
    }
    Ok(summary)
}

/// What the lifecycle planner sees of a Node.
fn lease(node: &Value) -> Option<NodeLease> {
    let name = str_at(node, "/metadata/name")?.to_owned();
    let created = parse_ms(str_at(node, "/metadata/creationTimestamp")).unwrap_or(0);
    let ready = condition(node, "Ready");
    let at = |field: &str| parse_ms(ready.and_then(|c| c.get(field)).and_then(Value::as_str));
    Some(NodeLease {
        name,
        renewed_ms: at("lastHeartbeatTime").unwrap_or(created),
        ready: condition_true(node, "Ready"),
        since_ms: at("lastTransitionTime").unwrap_or(created),
    })
}

/// Sets the Ready condition, keeping its other fields (the agent's
/// `lastHeartbeatTime`).
fn set_ready(node: &mut Value, status: &str, reason: &str, message: &str, transition: Value) {
    let Some(root) = node.as_object_mut() else { return };
    let status_obj = root.entry("status").or_insert_with(|| json!({}));
    let Some(status_map) = status_obj.as_object_mut() else { return };
    let conditions = status_map.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else { return };
    let index = match list.iter().position(|c| c.get("type").and_then(Value::as_str) == Some("Ready")) {
        Some(i) => i,
        None => {
            list.push(json!({"type": "Ready"}));
            list.len() - 1
        }
    };
    if let Some(c) = list[index].as_object_mut() {
        c.insert("status".to_owned(), json!(status));
        c.insert("reason".to_owned(), json!(reason));
        c.insert("message".to_owned(), json!(message));
        c.insert("lastTransitionTime".to_owned(), transition);
    }
}

/// One pass of the node lifecycle controller; see the module docs.
///
/// # Errors
/// [`ControllerError::Store`] when the store fails; lost races are counted
/// in [`PassSummary::conflicts`] instead.
pub fn reconcile_nodes(
    store: &dyn Store,
    config: &LifecycleConfig,
    now_ms: u64,
) -> Result<PassSummary, ControllerError> {
    let mut summary = PassSummary::default();
    let nodes = list(store, &store_prefix(&NODE, None), &mut summary.rejected)?;
    let leases: Vec<NodeLease> = nodes
        .iter()
        .filter_map(|n| {
            let lease = lease(&n.object);
            if lease.is_none() {
                tracing::warn!(key = %n.key, "node without a name; skipped");
                summary.rejected += 1;
            }
            lease
        })
        .collect();
    let actions = node_lifecycle::plan(config, now_ms, &leases);
    // Only this controller's own verdict is undone: a node whose agent
    // reports it not ready (any other reason) stays so while it heartbeats.
    let ours_to_undo = |name: &str| {
        nodes.iter().find(|n| str_at(&n.object, "/metadata/name") == Some(name)).is_some_and(|n| {
            condition(&n.object, "Ready").is_none_or(|c| c.get("reason").and_then(Value::as_str) == Some(LEASE_EXPIRED))
        })
    };
    let actions = actions.into_iter().filter(|a| match a {
        NodeAction::MarkReady { node } => ours_to_undo(node),
        _ => true,
    });
    let mut pods: Option<Vec<Stored>> = None;
    for action in actions {
        let (node_name, status, reason, message, at_ms) = match &action {
            NodeAction::MarkNotReady { node, at_ms } => {
                (node, "False", LEASE_EXPIRED, "the node's agent stopped renewing its heartbeat", *at_ms)
            }
            NodeAction::MarkReady { node } => {
                (node, "True", READY_REASON, "the node's agent is renewing its heartbeat", now_ms)
            }
            NodeAction::Evict { node } => {
                let pods = match &mut pods {
                    Some(p) => p,
                    None => pods.insert(list(store, &store_prefix(&POD, None), &mut summary.rejected)?),
                };
                for pod in pods.iter().filter(|p| str_at(&p.object, "/spec/nodeName") == Some(node.as_str())) {
                    match delete_pod(store, pod, now_ms) {
                        Ok(PodDeleted::Already) => {}
                        Ok(PodDeleted::Removed | PodDeleted::Marked) => {
                            tracing::info!(key = %pod.key, %node, "evicted from a lost node");
                            summary.evicted += 1;
                        }
                        Err(e) if is_race(&e) => summary.conflicts += 1,
                        Err(source) => {
                            return Err(ControllerError::Store { operation: "evicting", key: pod.key.clone(), source });
                        }
                    }
                }
                continue;
            }
        };
        let Some(stored) = nodes.iter().find(|n| str_at(&n.object, "/metadata/name") == Some(node_name.as_str()))
        else {
            continue;
        };
        let mut object = stored.object.clone();
        set_ready(&mut object, status, reason, message, timestamp(at_ms));
        match store.update(&stored.key, &serialise(&object), Some(stored.revision)) {
            Ok(_) if status == "True" => summary.marked_ready += 1,
            Ok(_) => summary.marked_not_ready += 1,
            Err(e) if is_race(&e) => summary.conflicts += 1,
            Err(source) => {
                return Err(ControllerError::Store { operation: "writing status of", key: stored.key.clone(), source });
            }
        }
    }
    Ok(summary)
}
