//! `berth describe KIND NAME`: kubectl's `describe` output for berth's
//! kinds, from the objects as the API stores them.
//!
//! # Design
//! - **Fetch, then render.** [`describe`] does the I/O: it GETs the object
//!   and lists what kubectl shows beside it (a Deployment's pods, a
//!   Service's EndpointSlices, a Node's pods). The renderers ([`pod`],
//!   [`deployment`], [`service`], [`endpoint_slice`], [`node`],
//!   [`namespace`]) are pure functions of `serde_json::Value`s and the
//!   clock, so they are tested on literal objects. Each renderer filters
//!   the related objects itself (owner uid, `kubernetes.io/service-name`,
//!   `spec.nodeName`), so a caller may hand it a whole namespace.
//! - **Layout is kubectl's.** kubectl writes lines whose cells are
//!   separated by tabs and aligns them with Go's `text/tabwriter`
//!   (min width 0, padding 2, spaces): a column block is a run of
//!   consecutive lines having a cell in that column, and each block is as
//!   wide as its widest cell plus two. `tabbed` reimplements that
//!   algorithm, so the section strings below are kubectl's format strings
//!   and the output lines up exactly as kubectl's does, including its
//!   quirks (a new block starts after every line without a tab). Trailing
//!   spaces are trimmed from each line.
//! - **Quantities.** Per-container limits and requests and node capacity
//!   are printed as stored. Sums (a node's pods) use
//!   [`crate::resources::parse_cpu`] and [`crate::resources::parse_memory`]
//!   and print CPU as `250m` or whole cores and bytes with the largest
//!   exact binary suffix (`192Mi`), else decimal (`1G`), else plain bytes.
//!   Percentages of allocatable are truncated, as kubectl's `int64(float)`.
//!   Container requests default to limits (as the API server defaults
//!   them) before QoS classes and sums are computed.
//! - **Untrusted text.** Control characters in object fields (an escape
//!   sequence in an annotation, a tab in a label value) are printed
//!   escaped (`\u{1b}`), so describing an object cannot drive the terminal
//!   or break the alignment.
//!
//! # Limitations
//! - No Events: berth records none, so every kind that kubectl shows events
//!   for ends with `Events: <none>`.
//! - Times are printed as stored (RFC 3339, UTC) rather than kubectl's
//!   localized RFC 1123 dates; durations (`Terminating (lasts 2m)`, pod
//!   ages on a node) follow apimachinery's `HumanDuration`.
//! - Sections for features berth refuses (volumes and mounts, init and
//!   ephemeral containers, readiness gates, leases, ReplicaSets) are left
//!   out. A Deployment lists its pods and `Revision:` instead of
//!   `OldReplicaSets`/`NewReplicaSet`.
//! - `resourceFieldRef` environment values print the raw quantity (the
//!   `divisor` is ignored); `fieldRef` values resolve the common paths only.
//! - Only Pod, Deployment, Service, EndpointSlice, Node and Namespace are
//!   rendered; another kind the CLI knows is refused with a pointer to
//!   `berth get … -o yaml` (kubectl would fall back to a generic dump).
//! - A failed list of related objects (say, no permission to list pods)
//!   fails the whole command, where kubectl degrades to `not authorized`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::Method;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::cli::{KINDS, KindRef};
use crate::client::{ApiClient, ClientError};
use crate::resources::{LB_ALGORITHM_ANNOTATION, parse_cpu, parse_memory};

/// kubectl's cut-off for printing an annotation on one line.
const MAX_ANNOTATION_LEN: usize = 140;
/// kubectl shows at most this many addresses per Service port.
const MAX_ENDPOINTS_SHOWN: usize = 3;
/// Never shown: it repeats the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// `berth describe KIND NAME`: the object and what kubectl shows with it.
///
/// # Errors
/// [`ClientError::Config`] for an unknown kind; otherwise the server's
/// error for the object or for a list of related objects (404 included).
pub async fn describe(
    client: &ApiClient,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Result<String, ClientError> {
    let kind_ref = KindRef::find(kind).ok_or_else(|| unknown_kind(kind))?;
    if !DESCRIBED.contains(&kind_ref.kind) {
        return Err(not_described(kind_ref));
    }
    let ns = namespace.unwrap_or(client.namespace());
    let path =
        if kind_ref.namespaced { kind_ref.item(ns, name) } else { format!("{}/{name}", kind_ref.collection(None)) };
    let object = client.json(Method::GET, &path, None).await?;
    let now = now_ms();
    let text = match kind_ref.kind {
        "Pod" => pod(&object, now),
        "Deployment" => deployment(&object, &list(client, "pods", Some(ns), None).await?),
        "Service" => {
            let selector = format!("labelSelector={}", query_escape(&format!("{SERVICE_NAME_LABEL}={name}")));
            service(&object, &list(client, "endpointslices", Some(ns), Some(&selector)).await?)
        }
        "EndpointSlice" => endpoint_slice(&object),
        "Node" => {
            // kubectl's field selector; pods of every namespace run on a node.
            let fields = format!("spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed");
            let selector = format!("fieldSelector={}", query_escape(&fields));
            node(&object, &list(client, "pods", None, Some(&selector)).await?, now)
        }
        "Namespace" => self::namespace(&object),
        _ => return Err(not_described(kind_ref)),
    };
    Ok(text)
}

/// The kinds [`describe`] renders.
const DESCRIBED: [&str; 6] = ["Pod", "Deployment", "Service", "EndpointSlice", "Node", "Namespace"];

/// A kind the CLI knows but `describe` has no renderer for.
fn not_described(kind: &KindRef) -> ClientError {
    let resources: Vec<&str> = KINDS.iter().filter(|k| DESCRIBED.contains(&k.kind)).map(|k| k.resource).collect();
    ClientError::Config(format!(
        "describe does not support {}; use `berth get {} NAME -o yaml` (describe knows {})",
        kind.resource,
        kind.resource,
        resources.join(", ")
    ))
}

/// The same message as `berth get` gives for a kind it does not know.
fn unknown_kind(name: &str) -> ClientError {
    let known: Vec<&str> = KINDS.iter().map(|k| k.resource).collect();
    ClientError::Config(format!("unknown resource type {name:?}; one of {}", known.join(", ")))
}

/// The items of a collection (`namespace` None = all namespaces), with an
/// optional query (`labelSelector=…`). The renderers filter again, so the
/// selector only saves transfer.
async fn list(
    client: &ApiClient,
    resource: &str,
    namespace: Option<&str>,
    query: Option<&str>,
) -> Result<Vec<Value>, ClientError> {
    let kind = KindRef::find(resource).ok_or_else(|| unknown_kind(resource))?;
    let mut path = kind.collection(namespace);
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    let list = client.json(Method::GET, &path, None).await?;
    Ok(match list {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    })
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved
/// characters).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------- Pod

/// kubectl's `describe pod`. `now_ms` (unix milliseconds) dates
/// `Terminating (lasts …)`.
pub fn pod(pod: &Value, now_ms: u64) -> String {
    let mut w = Out::default();
    let (m, spec, st) = (&pod["metadata"], &pod["spec"], &pod["status"]);
    w.line(0, format!("Name:\t{}", txt(&m["name"])));
    w.line(0, format!("Namespace:\t{}", txt(&m["namespace"])));
    if let Some(sa) = non_empty(&spec["serviceAccountName"]) {
        w.line(0, format!("Service Account:\t{sa}"));
    }
    let node = match (non_empty(&spec["nodeName"]), non_empty(&st["hostIP"])) {
        (None, _) => "<none>".to_owned(),
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n,
    };
    w.line(0, format!("Node:\t{node}"));
    if let Some(start) = non_empty(&st["startTime"]) {
        w.line(0, format!("Start Time:\t{start}"));
    }
    labels(&mut w, "Labels", &m["labels"]);
    annotations(&mut w, "Annotations", &m["annotations"]);
    let phase = non_empty(&st["phase"]).unwrap_or_else(|| "Pending".to_owned());
    if is_set(&m["deletionTimestamp"]) && phase != "Failed" && phase != "Succeeded" {
        match timestamp_ms(&m["deletionTimestamp"]) {
            Some(t) => w.line(0, format!("Status:\tTerminating (lasts {})", human_duration(now_ms, t))),
            None => w.line(0, "Status:\tTerminating"),
        }
        let grace = m["deletionGracePeriodSeconds"]
            .as_i64()
            .or_else(|| spec["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        w.line(0, format!("Termination Grace Period:\t{grace}s"));
    } else {
        w.line(0, format!("Status:\t{phase}"));
    }
    if let Some(reason) = non_empty(&st["reason"]) {
        w.line(0, format!("Reason:\t{reason}"));
    }
    if let Some(message) = non_empty(&st["message"]) {
        w.line(0, format!("Message:\t{message}"));
    }
    w.line(0, format!("IP:\t{}", txt(&st["podIP"])));
    match st["podIPs"].as_array().filter(|ips| !ips.is_empty()) {
        None => w.line(0, "IPs:\t<none>"),
        Some(ips) => {
            w.line(0, "IPs:");
            for ip in ips {
                w.line(1, format!("IP:\t{}", txt(&ip["ip"])));
            }
        }
    }
    if let Some(owner) = controller(pod) {
        w.line(0, format!("Controlled By:\t{}/{}", txt(&owner["kind"]), txt(&owner["name"])));
    }
    containers(&mut w, "", &spec["containers"], &st["containerStatuses"], Some(pod));
    if let Some(conditions) = st["conditions"].as_array().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:\n  Type\tStatus");
        for c in conditions {
            w.line(1, format!("{} \t{} ", txt(&c["type"]), txt(&c["status"])));
        }
    }
    w.line(0, format!("QoS Class:\t{}", qos_class(spec)));
    labels(&mut w, "Node-Selectors", &spec["nodeSelector"]);
    tolerations(&mut w, "Tolerations", &spec["tolerations"]);
    w.line(0, "Events:\t<none>");
    w.finish()
}

/// The containers of a pod (`pod` given: statuses and `fieldRef`s
/// resolve) or of a template (`space` = `"  "`, as kubectl indents it).
fn containers(w: &mut Out, space: &str, containers: &Value, statuses: &Value, pod: Option<&Value>) {
    let list = containers.as_array().map(Vec::as_slice).unwrap_or_default();
    let none = if list.is_empty() { " <none>" } else { "" };
    w.line(0, format!("{space}Containers:{none}"));
    let name_indent = if space.is_empty() { "" } else { " " };
    for c in list {
        let status =
            statuses.as_array().and_then(|all| all.iter().find(|s| s["name"] == c["name"] && c["name"].is_string()));
        w.line(1, format!("{name_indent}{}:", txt(&c["name"])));
        if let Some(s) = status {
            w.line(2, format!("Container ID:\t{}", txt(&s["containerID"])));
        }
        w.line(2, format!("Image:\t{}", txt(&c["image"])));
        if let Some(s) = status {
            w.line(2, format!("Image ID:\t{}", txt(&s["imageID"])));
        }
        let ports = c["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
        let port_list = |field: &str| -> Vec<String> {
            ports.iter().map(|p| format!("{}/{}", p[field].as_i64().unwrap_or(0), protocol(p))).collect()
        };
        match port_list("containerPort").as_slice() {
            [] => w.line(2, "Port:\t<none>"),
            [one] => w.line(2, format!("Port:\t{one}")),
            many => w.line(2, format!("Ports:\t{}", many.join(", "))),
        }
        // kubectl prints `Host Port: 0/TCP` for every container; berth
        // shows host ports only when one is set.
        if ports.iter().any(|p| p["hostPort"].as_i64().unwrap_or(0) != 0) {
            match port_list("hostPort").as_slice() {
                [one] => w.line(2, format!("Host Port:\t{one}")),
                many => w.line(2, format!("Host Ports:\t{}", many.join(", "))),
            }
        }
        for (title, field) in [("Command", "command"), ("Args", "args")] {
            if let Some(items) = c[field].as_array().filter(|a| !a.is_empty()) {
                w.line(2, format!("{title}:"));
                for item in items {
                    for line in item.as_str().unwrap_or_default().split('\n') {
                        w.line(3, esc(line));
                    }
                }
            }
        }
        if let Some(s) = status {
            container_state(w, "State", &s["state"]);
            if s["lastState"]["terminated"].is_object() {
                container_state(w, "Last State", &s["lastState"]);
            }
            w.line(2, format!("Ready:\t{}", if s["ready"] == Value::Bool(true) { "True" } else { "False" }));
            w.line(2, format!("Restart Count:\t{}", s["restartCount"].as_i64().unwrap_or(0)));
        }
        for (title, field) in [("Limits", "limits"), ("Requests", "requests")] {
            let map = string_map(&c["resources"][field]);
            if !map.is_empty() {
                w.line(2, format!("{title}:"));
                for (name, quantity) in map {
                    w.line(3, format!("{name}:\t{quantity}"));
                }
            }
        }
        for (title, field) in
            [("Liveness", "livenessProbe"), ("Readiness", "readinessProbe"), ("Startup", "startupProbe")]
        {
            if c[field].is_object() {
                w.line(2, format!("{title}:\t{}", probe(&c[field])));
            }
        }
        environment(w, c, pod);
    }
}

fn container_state(w: &mut Out, title: &str, state: &Value) {
    if state["running"].is_object() {
        w.line(2, format!("{title}:\tRunning"));
        w.line(3, format!("Started:\t{}", txt(&state["running"]["startedAt"])));
    } else if state["terminated"].is_object() {
        let t = &state["terminated"];
        w.line(2, format!("{title}:\tTerminated"));
        if let Some(reason) = non_empty(&t["reason"]) {
            w.line(3, format!("Reason:\t{reason}"));
        }
        if let Some(message) = non_empty(&t["message"]) {
            w.line(3, format!("Message:\t{message}"));
        }
        w.line(3, format!("Exit Code:\t{}", t["exitCode"].as_i64().unwrap_or(0)));
        if let Some(signal) = t["signal"].as_i64().filter(|&s| s > 0) {
            w.line(3, format!("Signal:\t{signal}"));
        }
        w.line(3, format!("Started:\t{}", txt(&t["startedAt"])));
        w.line(3, format!("Finished:\t{}", txt(&t["finishedAt"])));
    } else {
        w.line(2, format!("{title}:\tWaiting"));
        if let Some(reason) = non_empty(&state["waiting"]["reason"]) {
            w.line(3, format!("Reason:\t{reason}"));
        }
    }
}

/// kubectl's one-line probe summary (`DescribeProbe`).
fn probe(p: &Value) -> String {
    let n = |field: &str| p[field].as_i64().unwrap_or(0);
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        n("initialDelaySeconds"),
        n("timeoutSeconds"),
        n("periodSeconds"),
        n("successThreshold"),
        n("failureThreshold"),
    );
    if p["exec"].is_object() {
        let command: Vec<String> =
            p["exec"]["command"].as_array().map(|c| c.iter().map(txt).collect()).unwrap_or_default();
        format!("exec [{}] {attrs}", command.join(" "))
    } else if p["httpGet"].is_object() {
        let h = &p["httpGet"];
        // Go's url.URL.String(): scheme://host:port/path.
        let scheme = non_empty(&h["scheme"]).unwrap_or_else(|| "HTTP".to_owned()).to_ascii_lowercase();
        let host = join_host_port(&txt(&h["host"]), &txt(&h["port"]));
        let path = txt(&h["path"]);
        let slash = if path.is_empty() || path.starts_with('/') { "" } else { "/" };
        format!("http-get {scheme}://{host}{slash}{path} {attrs}")
    } else if p["tcpSocket"].is_object() {
        format!("tcp-socket {}:{} {attrs}", txt(&p["tcpSocket"]["host"]), txt(&p["tcpSocket"]["port"]))
    } else if p["grpc"].is_object() {
        format!("grpc <pod>:{} {} {attrs}", txt(&p["grpc"]["port"]), txt(&p["grpc"]["service"]))
    } else {
        format!("unknown {attrs}")
    }
}

/// Go's `net.JoinHostPort`: IPv6 hosts in brackets.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn environment(w: &mut Out, c: &Value, pod: Option<&Value>) {
    if let Some(from) = c["envFrom"].as_array().filter(|f| !f.is_empty()) {
        w.line(2, "Environment Variables from:");
        for e in from {
            let (source, r) = if e["configMapRef"].is_object() {
                ("ConfigMap", &e["configMapRef"])
            } else {
                ("Secret", &e["secretRef"])
            };
            let optional = r["optional"] == Value::Bool(true);
            match non_empty(&e["prefix"]) {
                None => w.line(3, format!("{}\t{source}\tOptional: {optional}", txt(&r["name"]))),
                Some(prefix) => {
                    w.line(3, format!("{}\t{source} with prefix '{prefix}'\tOptional: {optional}", txt(&r["name"])));
                }
            }
        }
    }
    let Some(env) = c["env"].as_array().filter(|e| !e.is_empty()) else {
        w.line(2, "Environment:\t<none>");
        return;
    };
    w.line(2, "Environment:");
    for e in env {
        let name = txt(&e["name"]);
        let from = &e["valueFrom"];
        if !from.is_object() {
            for (i, line) in e["value"].as_str().unwrap_or_default().split('\n').enumerate() {
                if i == 0 {
                    w.line(3, format!("{name}:\t{}", esc(line)));
                } else {
                    w.line(3, format!("\t{}", esc(line)));
                }
            }
        } else if from["fieldRef"].is_object() {
            let r = &from["fieldRef"];
            let value = pod.map(|p| field_path(p, r["fieldPath"].as_str().unwrap_or_default())).unwrap_or_default();
            let api = non_empty(&r["apiVersion"]).unwrap_or_else(|| "v1".to_owned());
            w.line(3, format!("{name}:\t{value} ({api}:{})", txt(&r["fieldPath"])));
        } else if from["resourceFieldRef"].is_object() {
            let resource = from["resourceFieldRef"]["resource"].as_str().unwrap_or_default();
            let (section, key) = resource.split_once('.').unwrap_or(("", resource));
            let value = match qty(&c["resources"][section][key]) {
                Some(q) => q,
                None if section == "limits" => "node allocatable".to_owned(),
                None => "0".to_owned(),
            };
            w.line(3, format!("{name}:\t{value} ({})", esc(resource)));
        } else {
            let (what, r) = if from["secretKeyRef"].is_object() {
                ("in secret", &from["secretKeyRef"])
            } else {
                ("of config map", &from["configMapKeyRef"])
            };
            let optional = r["optional"] == Value::Bool(true);
            w.line(
                3,
                format!(
                    "{name}:\t<set to the key '{}' {what} '{}'>\tOptional: {optional}",
                    txt(&r["key"]),
                    txt(&r["name"])
                ),
            );
        }
    }
}

/// The downward API paths an environment variable may name.
fn field_path(pod: &Value, path: &str) -> String {
    let indexed = |prefix: &str, map: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(txt(&pod["metadata"][map][key]))
    };
    let pointer = match path {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "metadata.uid" => "/metadata/uid",
        "spec.nodeName" => "/spec/nodeName",
        "spec.serviceAccountName" => "/spec/serviceAccountName",
        "status.hostIP" => "/status/hostIP",
        "status.podIP" => "/status/podIP",
        _ => {
            return indexed("metadata.labels['", "labels")
                .or_else(|| indexed("metadata.annotations['", "annotations"))
                .unwrap_or_default();
        }
    };
    pod.pointer(pointer).map(txt).unwrap_or_default()
}

/// Kubernetes' `GetPodQOS`: Guaranteed when every container limits both
/// CPU and memory and the pod's requests equal its limits; BestEffort when
/// nothing is requested or limited; Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<&str, u64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, u64> = BTreeMap::new();
    let mut guaranteed = true;
    let all = ["containers", "initContainers"].into_iter().flat_map(|f| spec[f].as_array().into_iter().flatten());
    for c in all {
        let (req, lim) = container_resources(c);
        for (name, value) in qos_quantities(&req) {
            *requests.entry(name).or_default() += value;
        }
        let found = qos_quantities(&lim);
        if !(found.iter().any(|(n, _)| *n == "cpu") && found.iter().any(|(n, _)| *n == "memory")) {
            guaranteed = false;
        }
        for (name, value) in found {
            *limits.entry(name).or_default() += value;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if guaranteed && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The non-zero CPU (millicores) and memory (bytes) of a resource map.
fn qos_quantities(map: &BTreeMap<String, String>) -> Vec<(&'static str, u64)> {
    let cpu = map.get("cpu").and_then(|q| parse_cpu(q).ok()).filter(|&v| v > 0).map(|v| ("cpu", v));
    let memory = map.get("memory").and_then(|q| parse_memory(q).ok()).filter(|&v| v > 0).map(|v| ("memory", v));
    cpu.into_iter().chain(memory).collect()
}

/// A container's (requests, limits), requests defaulted from limits as the
/// API server defaults them.
fn container_resources(c: &Value) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut requests = string_map(&c["resources"]["requests"]);
    let limits = string_map(&c["resources"]["limits"]);
    for (name, value) in &limits {
        requests.entry(name.clone()).or_insert_with(|| value.clone());
    }
    (requests, limits)
}

fn tolerations(w: &mut Out, title: &str, list: &Value) {
    let mut items: Vec<&Value> = list.as_array().map(|l| l.iter().collect()).unwrap_or_default();
    if items.is_empty() {
        w.line(0, format!("{title}:\t<none>"));
        return;
    }
    items.sort_by_key(|t| t["key"].as_str().unwrap_or_default());
    for (i, t) in items.into_iter().enumerate() {
        let mut text = txt(&t["key"]);
        let value = txt(&t["value"]);
        if !value.is_empty() {
            text.push('=');
            text.push_str(&value);
        }
        if let Some(effect) = non_empty(&t["effect"]) {
            text.push(':');
            text.push_str(&effect);
        }
        if t["operator"] == "Exists" && value.is_empty() {
            text.push_str(if text.is_empty() { "op=Exists" } else { " op=Exists" });
        }
        if let Some(seconds) = t["tolerationSeconds"].as_i64() {
            text.push_str(&format!(" for {seconds}s"));
        }
        let head = if i == 0 { format!("{title}:") } else { String::new() };
        w.line(0, format!("{head}\t{text}"));
    }
}

// ---------------------------------------------------------------- Deployment

/// kubectl's `describe deployment`. berth has no ReplicaSets: the pods the
/// Deployment controls (by owner uid, among `pods`) are listed instead,
/// with the `deployment.kubernetes.io/revision` annotation.
pub fn deployment(deployment: &Value, pods: &[Value]) -> String {
    let mut w = Out::default();
    let (m, spec, st) = (&deployment["metadata"], &deployment["spec"], &deployment["status"]);
    w.line(0, format!("Name:\t{}", txt(&m["name"])));
    w.line(0, format!("Namespace:\t{}", txt(&m["namespace"])));
    w.line(0, format!("CreationTimestamp:\t{}", txt(&m["creationTimestamp"])));
    labels(&mut w, "Labels", &m["labels"]);
    annotations(&mut w, "Annotations", &m["annotations"]);
    w.line(0, format!("Selector:\t{}", label_selector(&spec["selector"])));
    let count = |v: &Value| v.as_i64().unwrap_or(0);
    w.line(
        0,
        format!(
            "Replicas:\t{} desired | {} updated | {} total | {} available | {} unavailable",
            spec["replicas"].as_i64().unwrap_or(1),
            count(&st["updatedReplicas"]),
            count(&st["replicas"]),
            count(&st["availableReplicas"]),
            count(&st["unavailableReplicas"]),
        ),
    );
    let strategy = non_empty(&spec["strategy"]["type"]).unwrap_or_else(|| "RollingUpdate".to_owned());
    w.line(0, format!("StrategyType:\t{strategy}"));
    w.line(0, format!("MinReadySeconds:\t{}", count(&spec["minReadySeconds"])));
    if strategy == "RollingUpdate" {
        let ru = &spec["strategy"]["rollingUpdate"];
        let or_default = |v: &Value| if v.is_null() { "25%".to_owned() } else { txt(v) };
        w.line(
            0,
            format!(
                "RollingUpdateStrategy:\t{} max unavailable, {} max surge",
                or_default(&ru["maxUnavailable"]),
                or_default(&ru["maxSurge"])
            ),
        );
    }
    pod_template(&mut w, &spec["template"]);
    if let Some(conditions) = st["conditions"].as_array().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:\n  Type\tStatus\tReason");
        w.line(1, "----\t------\t------");
        for c in conditions {
            w.line(1, format!("{} \t{}\t{}", txt(&c["type"]), txt(&c["status"]), txt(&c["reason"])));
        }
    }
    if let Some(revision) = non_empty(&m["annotations"][REVISION_ANNOTATION]) {
        w.line(0, format!("Revision:\t{revision}"));
    }
    let uid = m["uid"].as_str().filter(|u| !u.is_empty());
    let mut owned: Vec<&Value> =
        pods.iter().filter(|p| uid.is_some() && controller(p).and_then(|o| o["uid"].as_str()) == uid).collect();
    owned.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or_default());
    if owned.is_empty() {
        w.line(0, "Pods:\t<none>");
    } else {
        w.line(0, "Pods:");
        w.line(1, "Name\tReady\tStatus\tRestarts\tNode");
        w.line(1, "----\t-----\t------\t--------\t----");
        for p in owned {
            let (ready, total, restarts) = readiness(p);
            let node = non_empty(&p["spec"]["nodeName"]).unwrap_or_else(|| "<none>".to_owned());
            w.line(
                1,
                format!("{}\t{ready}/{total}\t{}\t{restarts}\t{node}", txt(&p["metadata"]["name"]), pod_status(p)),
            );
        }
        w.flush();
    }
    w.line(0, "Events:\t<none>");
    w.finish()
}

/// kubectl's `DescribePodTemplate`.
fn pod_template(w: &mut Out, template: &Value) {
    w.line(0, "Pod Template:");
    if !template.is_object() {
        w.line(1, "<unset>");
        return;
    }
    let (m, spec) = (&template["metadata"], &template["spec"]);
    labels(w, "  Labels", &m["labels"]);
    if m["annotations"].as_object().is_some_and(|a| !a.is_empty()) {
        annotations(w, "  Annotations", &m["annotations"]);
    }
    if let Some(sa) = non_empty(&spec["serviceAccountName"]) {
        w.line(1, format!("Service Account:\t{sa}"));
    }
    containers(w, "  ", &spec["containers"], &Value::Null, None);
    labels(w, "  Node-Selectors", &spec["nodeSelector"]);
    tolerations(w, "  Tolerations", &spec["tolerations"]);
}

/// (ready containers, containers, restarts), as `berth get pods` counts.
fn readiness(p: &Value) -> (usize, usize, i64) {
    let statuses = p["status"]["containerStatuses"].as_array().map(Vec::as_slice).unwrap_or_default();
    let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|c| c["ready"] == Value::Bool(true)).count();
    let restarts = statuses.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
    (ready, total, restarts)
}

/// The STATUS column of `berth get pods`.
fn pod_status(p: &Value) -> String {
    if is_set(&p["metadata"]["deletionTimestamp"]) {
        return "Terminating".to_owned();
    }
    let statuses = p["status"]["containerStatuses"].as_array().map(Vec::as_slice).unwrap_or_default();
    statuses
        .iter()
        .rev()
        .find_map(|c| non_empty(&c["state"]["waiting"]["reason"]))
        .or_else(|| non_empty(&p["status"]["phase"]))
        .unwrap_or_else(|| "Pending".to_owned())
}

/// apimachinery's `LabelSelectorAsSelector(...).String()`: requirements
/// sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
fn label_selector(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = string_map(&selector["matchLabels"])
        .into_iter()
        .map(|(k, v)| {
            let text = format!("{}={}", esc(&k), esc(&v));
            (k, text)
        })
        .collect();
    for e in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default().to_owned();
        let mut values: Vec<String> = e["values"].as_array().map(|v| v.iter().map(txt).collect()).unwrap_or_default();
        values.sort();
        let k = esc(&key);
        let text = match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k,
            "DoesNotExist" => format!("!{k}"),
            other => format!("{k} {} ({})", esc(other), values.join(",")),
        };
        requirements.push((key, text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    if requirements.is_empty() {
        return "<none>".to_owned();
    }
    requirements.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------- Service

/// kubectl's `describe service`, with berth's load-balancing algorithm.
/// `slices` may hold every EndpointSlice of the namespace: those labelled
/// `kubernetes.io/service-name` with the Service's name are used.
pub fn service(service: &Value, slices: &[Value]) -> String {
    let mut w = Out::default();
    let (m, spec) = (&service["metadata"], &service["spec"]);
    let name = m["name"].as_str().unwrap_or_default();
    let own: Vec<&Value> =
        slices.iter().filter(|s| s["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() == Some(name)).collect();
    w.line(0, format!("Name:\t{}", esc(name)));
    w.line(0, format!("Namespace:\t{}", txt(&m["namespace"])));
    labels(&mut w, "Labels", &m["labels"]);
    annotations(&mut w, "Annotations", &m["annotations"]);
    let selector = string_map(&spec["selector"]);
    let selector = if selector.is_empty() {
        "<none>".to_owned()
    } else {
        selector.iter().map(|(k, v)| format!("{}={}", esc(k), esc(v))).collect::<Vec<_>>().join(",")
    };
    w.line(0, format!("Selector:\t{selector}"));
    let kind = non_empty(&spec["type"]).unwrap_or_else(|| "ClusterIP".to_owned());
    w.line(0, format!("Type:\t{kind}"));
    if let Some(families) = spec["ipFamilies"].as_array().filter(|f| !f.is_empty()) {
        w.line(0, format!("IP Families:\t{}", families.iter().map(txt).collect::<Vec<_>>().join(",")));
    }
    w.line(0, format!("IP:\t{}", txt(&spec["clusterIP"])));
    match spec["clusterIPs"].as_array().filter(|ips| !ips.is_empty()) {
        Some(ips) => w.line(0, format!("IPs:\t{}", ips.iter().map(txt).collect::<Vec<_>>().join(","))),
        None => w.line(0, "IPs:\t<none>"),
    }
    if let Some(ips) = spec["externalIPs"].as_array().filter(|ips| !ips.is_empty()) {
        w.line(0, format!("External IPs:\t{}", ips.iter().map(txt).collect::<Vec<_>>().join(",")));
    }
    for p in spec["ports"].as_array().into_iter().flatten() {
        let port_name = p["name"].as_str().unwrap_or_default();
        let shown = if port_name.is_empty() { "<unset>".to_owned() } else { esc(port_name) };
        let proto = protocol(p);
        w.line(0, format!("Port:\t{shown}\t{}/{proto}", txt(&p["port"])));
        // The API server defaults targetPort to port.
        let target = if p["targetPort"].is_null() { &p["port"] } else { &p["targetPort"] };
        w.line(0, format!("TargetPort:\t{}/{proto}", txt(target)));
        if let Some(node_port) = p["nodePort"].as_i64().filter(|&n| n != 0) {
            w.line(0, format!("NodePort:\t{shown}\t{node_port}/{proto}"));
        }
        w.line(0, format!("Endpoints:\t{}", endpoints_text(&own, port_name)));
    }
    let affinity = non_empty(&spec["sessionAffinity"]).unwrap_or_else(|| "None".to_owned());
    if affinity == "ClientIP" {
        let timeout = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].as_i64().unwrap_or(10_800);
        w.line(0, format!("Session Affinity:\tClientIP (timeout {timeout}s)"));
    } else {
        w.line(0, format!("Session Affinity:\t{affinity}"));
    }
    if let Some(policy) = non_empty(&spec["externalTrafficPolicy"]) {
        w.line(0, format!("External Traffic Policy:\t{policy}"));
    }
    if let Some(policy) = non_empty(&spec["internalTrafficPolicy"]) {
        w.line(0, format!("Internal Traffic Policy:\t{policy}"));
    }
    let algorithm = non_empty(&m["annotations"][LB_ALGORITHM_ANNOTATION]).unwrap_or_else(|| "wrr".to_owned());
    w.line(0, format!("Load Balancing:\t{algorithm}"));
    w.line(0, "Events:\t<none>");
    w.finish()
}

/// kubectl's `formatEndpointSlices` for one Service port: the ready
/// addresses with the slice's port of that name, at most three and
/// `+ N more...`.
fn endpoints_text(slices: &[&Value], port_name: &str) -> String {
    let mut shown = Vec::new();
    let mut count = 0;
    for slice in slices {
        let ready: Vec<String> = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"] == Value::Bool(true))
            .filter_map(|e| e["addresses"][0].as_str().map(esc))
            .collect();
        let ports = slice["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut entries: Vec<String> = Vec::new();
        if ports.is_empty() {
            // A headless Service's slice may have no ports: addresses only.
            entries.extend(ready.iter().cloned());
        }
        for port in ports.iter().filter(|p| p["name"].as_str().unwrap_or_default() == port_name) {
            let number = txt(&port["port"]);
            entries.extend(ready.iter().map(|address| join_host_port(address, &number)));
        }
        for entry in entries {
            if shown.len() < MAX_ENDPOINTS_SHOWN {
                shown.push(entry);
            }
            count += 1;
        }
    }
    match count {
        0 => "<none>".to_owned(),
        n if n > MAX_ENDPOINTS_SHOWN => format!("{} + {} more...", shown.join(","), n - MAX_ENDPOINTS_SHOWN),
        _ => shown.join(","),
    }
}

// ---------------------------------------------------------------- EndpointSlice

/// kubectl's `describe endpointslice`, with all three conditions of each
/// endpoint (kubectl shows only `Ready`).
pub fn endpoint_slice(slice: &Value) -> String {
    let mut w = Out::default();
    let m = &slice["metadata"];
    w.line(0, format!("Name:\t{}", txt(&m["name"])));
    w.line(0, format!("Namespace:\t{}", txt(&m["namespace"])));
    labels(&mut w, "Labels", &m["labels"]);
    annotations(&mut w, "Annotations", &m["annotations"]);
    w.line(0, format!("AddressType:\t{}", txt(&slice["addressType"])));
    match slice["ports"].as_array().filter(|p| !p.is_empty()) {
        None => w.line(0, "Ports: <unset>"),
        Some(ports) => {
            w.line(0, "Ports:");
            w.line(1, "Name\tPort\tProtocol");
            w.line(1, "----\t----\t--------");
            for p in ports {
                let name = non_empty(&p["name"]).unwrap_or_else(|| "<unset>".to_owned());
                let port = if p["port"].is_null() { "<unset>".to_owned() } else { txt(&p["port"]) };
                w.line(1, format!("{name}\t{port}\t{}", protocol(p)));
            }
        }
    }
    match slice["endpoints"].as_array().filter(|e| !e.is_empty()) {
        None => w.line(0, "Endpoints: <none>"),
        Some(endpoints) => {
            w.line(0, "Endpoints:");
            for e in endpoints {
                let addresses: Vec<String> = e["addresses"].as_array().into_iter().flatten().map(txt).collect();
                let addresses = if addresses.is_empty() { "<none>".to_owned() } else { addresses.join(", ") };
                w.line(1, format!("- Addresses:\t{addresses}"));
                w.line(2, "Conditions:");
                for (title, field) in [("Ready", "ready"), ("Serving", "serving"), ("Terminating", "terminating")] {
                    let value =
                        e["conditions"][field].as_bool().map_or_else(|| "<unset>".to_owned(), |b| b.to_string());
                    w.line(3, format!("{title}:\t{value}"));
                }
                w.line(2, format!("Hostname:\t{}", non_empty(&e["hostname"]).unwrap_or_else(|| "<unset>".to_owned())));
                if e["targetRef"].is_object() {
                    w.line(2, format!("TargetRef:\t{}/{}", txt(&e["targetRef"]["kind"]), txt(&e["targetRef"]["name"])));
                }
                w.line(2, format!("NodeName:\t{}", non_empty(&e["nodeName"]).unwrap_or_else(|| "<unset>".to_owned())));
                w.line(2, format!("Zone:\t{}", non_empty(&e["zone"]).unwrap_or_else(|| "<unset>".to_owned())));
            }
        }
    }
    w.line(0, "Events:\t<none>");
    w.finish()
}

// ---------------------------------------------------------------- Node

/// kubectl's `describe node`. `pods` may hold every pod of the cluster:
/// those bound to the node and neither `Succeeded` nor `Failed` are
/// counted. `now_ms` dates their ages.
pub fn node(node: &Value, pods: &[Value], now_ms: u64) -> String {
    let mut w = Out::default();
    let (m, spec, st) = (&node["metadata"], &node["spec"], &node["status"]);
    let name = m["name"].as_str().unwrap_or_default();
    w.line(0, format!("Name:\t{}", esc(name)));
    let roles = node_roles(&m["labels"]);
    w.line(0, format!("Roles:\t{}", if roles.is_empty() { "<none>".to_owned() } else { roles.join(",") }));
    labels(&mut w, "Labels", &m["labels"]);
    annotations(&mut w, "Annotations", &m["annotations"]);
    w.line(0, format!("CreationTimestamp:\t{}", txt(&m["creationTimestamp"])));
    taints(&mut w, &spec["taints"]);
    w.line(0, format!("Unschedulable:\t{}", spec["unschedulable"] == Value::Bool(true)));
    if let Some(conditions) = st["conditions"].as_array().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:\n  Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage");
        w.line(1, "----\t------\t-----------------\t------------------\t------\t-------");
        for c in conditions {
            w.line(
                1,
                format!(
                    "{} \t{} \t{} \t{} \t{} \t{}",
                    txt(&c["type"]),
                    txt(&c["status"]),
                    txt(&c["lastHeartbeatTime"]),
                    txt(&c["lastTransitionTime"]),
                    txt(&c["reason"]),
                    txt(&c["message"]),
                ),
            );
        }
    }
    w.line(0, "Addresses:");
    for a in st["addresses"].as_array().into_iter().flatten() {
        w.line(1, format!("{}:\t{}", txt(&a["type"]), txt(&a["address"])));
    }
    for (title, field) in [("Capacity", "capacity"), ("Allocatable", "allocatable")] {
        let map = string_map(&st[field]);
        if !map.is_empty() {
            w.line(0, format!("{title}:"));
            for (resource, value) in map {
                w.line(1, format!("{resource}:\t{value}"));
            }
        }
    }
    let info = &st["nodeInfo"];
    if info.is_object() {
        w.line(0, "System Info:");
        for (title, field) in [
            ("Machine ID", "machineID"),
            ("System UUID", "systemUUID"),
            ("Boot ID", "bootID"),
            ("Kernel Version", "kernelVersion"),
            ("OS Image", "osImage"),
            ("Operating System", "operatingSystem"),
            ("Architecture", "architecture"),
            ("Container Runtime Version", "containerRuntimeVersion"),
            ("Kubelet Version", "kubeletVersion"),
            ("Kube-Proxy Version", "kubeProxyVersion"),
        ] {
            w.line(1, format!("{title}:\t{}", txt(&info[field])));
        }
    }
    if let Some(cidr) = non_empty(&spec["podCIDR"]) {
        w.line(0, format!("PodCIDR:\t{cidr}"));
    }
    if let Some(cidrs) = spec["podCIDRs"].as_array().filter(|c| !c.is_empty()) {
        w.line(0, format!("PodCIDRs:\t{}", cidrs.iter().map(txt).collect::<Vec<_>>().join(",")));
    }
    let mut on_node: Vec<&Value> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(name) && !name.is_empty())
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    on_node.sort_by_key(|p| (p["metadata"]["namespace"].as_str(), p["metadata"]["name"].as_str()));
    node_resources(&mut w, st, &on_node, now_ms);
    w.line(0, "Events:\t<none>");
    w.finish()
}

/// `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>`.
fn node_roles(labels: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    for (key, value) in string_map(labels) {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/").filter(|r| !r.is_empty()) {
            roles.insert(esc(role));
        } else if key == "kubernetes.io/role" && !value.is_empty() {
            roles.insert(esc(&value));
        }
    }
    roles.into_iter().collect()
}

fn taints(w: &mut Out, list: &Value) {
    let mut items: Vec<(String, String)> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let value = non_empty(&t["value"]).map(|v| format!("={v}")).unwrap_or_default();
            let effect = txt(&t["effect"]);
            (format!("{effect},{}", txt(&t["key"])), format!("{}{value}:{effect}", txt(&t["key"])))
        })
        .collect();
    if items.is_empty() {
        w.line(0, "Taints:\t<none>");
        return;
    }
    items.sort();
    for (i, (_, text)) in items.into_iter().enumerate() {
        w.line(0, format!("{}\t{text}", if i == 0 { "Taints:" } else { "" }));
    }
}

/// `Non-terminated Pods` and `Allocated resources`, as kubectl's
/// `describeNodeResource`.
fn node_resources(w: &mut Out, st: &Value, pods: &[&Value], now_ms: u64) {
    let capacity = if string_map(&st["allocatable"]).is_empty() { &st["capacity"] } else { &st["allocatable"] };
    let allocatable = |resource: &str| qty(&capacity[resource]).and_then(|q| parse(resource, &q)).unwrap_or(0);
    let (cpu_total, memory_total, storage_total) =
        (allocatable("cpu"), allocatable("memory"), allocatable("ephemeral-storage"));
    w.line(0, format!("Non-terminated Pods:\t({} in total)", pods.len()));
    w.line(1, "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge");
    w.line(1, "---------\t----\t\t------------\t----------\t---------------\t-------------\t---");
    let mut requests: BTreeMap<String, u64> = BTreeMap::new();
    let mut limits: BTreeMap<String, u64> = BTreeMap::new();
    for p in pods {
        let (req, lim) = pod_requests_and_limits(p);
        let get = |map: &BTreeMap<String, u64>, r: &str| map.get(r).copied().unwrap_or(0);
        let age = timestamp_ms(&p["metadata"]["creationTimestamp"])
            .map_or_else(|| "<unknown>".to_owned(), |t| human_duration(now_ms, t));
        w.line(
            1,
            format!(
                "{}\t{}\t\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{} ({}%)\t{age}",
                txt(&p["metadata"]["namespace"]),
                txt(&p["metadata"]["name"]),
                cpu(get(&req, "cpu")),
                percent(get(&req, "cpu"), cpu_total),
                cpu(get(&lim, "cpu")),
                percent(get(&lim, "cpu"), cpu_total),
                bytes(get(&req, "memory")),
                percent(get(&req, "memory"), memory_total),
                bytes(get(&lim, "memory")),
                percent(get(&lim, "memory"), memory_total),
            ),
        );
        for (total, map) in [(&mut requests, req), (&mut limits, lim)] {
            for (resource, value) in map {
                let sum = total.entry(resource).or_default();
                *sum = sum.saturating_add(value);
            }
        }
    }
    w.line(0, "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)");
    w.line(1, "Resource\tRequests\tLimits");
    w.line(1, "--------\t--------\t------");
    for (resource, total, show) in [
        ("cpu", cpu_total, cpu as fn(u64) -> String),
        ("memory", memory_total, bytes),
        ("ephemeral-storage", storage_total, bytes),
    ] {
        let req = requests.get(resource).copied().unwrap_or(0);
        let lim = limits.get(resource).copied().unwrap_or(0);
        w.line(
            1,
            format!("{resource}\t{} ({}%)\t{} ({}%)", show(req), percent(req, total), show(lim), percent(lim, total)),
        );
    }
}

/// A pod's (requests, limits) per resource, in millicores for `cpu` and
/// units (bytes) otherwise: the sum over its containers, at least the
/// largest init container (resourcehelper's `PodRequestsAndLimits`).
fn pod_requests_and_limits(p: &Value) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut requests: BTreeMap<String, u64> = BTreeMap::new();
    let mut limits: BTreeMap<String, u64> = BTreeMap::new();
    let parsed = |map: BTreeMap<String, String>| -> Vec<(String, u64)> {
        map.into_iter().filter_map(|(r, q)| parse(&r, &q).map(|v| (r, v))).collect()
    };
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        let (req, lim) = container_resources(c);
        for (total, map) in [(&mut requests, req), (&mut limits, lim)] {
            for (resource, value) in parsed(map) {
                let sum = total.entry(resource).or_default();
                *sum = sum.saturating_add(value);
            }
        }
    }
    for c in p["spec"]["initContainers"].as_array().into_iter().flatten() {
        let (req, lim) = container_resources(c);
        for (total, map) in [(&mut requests, req), (&mut limits, lim)] {
            for (resource, value) in parsed(map) {
                let max = total.entry(resource).or_default();
                *max = (*max).max(value);
            }
        }
    }
    (requests, limits)
}

/// A quantity in millicores for `cpu`, in units (bytes) for the rest.
fn parse(resource: &str, quantity: &str) -> Option<u64> {
    if resource == "cpu" { parse_cpu(quantity).ok() } else { parse_memory(quantity).ok() }
}

/// kubectl's `int64(float64(x) / float64(total) * 100)`; 0 when there is
/// no total.
fn percent(x: u64, total: u64) -> u128 {
    if total == 0 { 0 } else { u128::from(x) * 100 / u128::from(total) }
}

/// Millicores as kubectl prints a CPU quantity: `250m`, `2`.
fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) { (millis / 1000).to_string() } else { format!("{millis}m") }
}

/// Bytes with the largest exact suffix: binary first (`192Mi`), then
/// decimal (`1G`), else plain.
fn bytes(n: u64) -> String {
    if n == 0 {
        return "0".to_owned();
    }
    for (shift, suffix) in [(60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if n.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    for (unit, suffix) in [
        (1_000_000_000_000_000_000, "E"),
        (1_000_000_000_000_000, "P"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ] {
        if n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

// ---------------------------------------------------------------- Namespace

/// kubectl's `describe namespace` (berth has no quotas or limit ranges).
pub fn namespace(namespace: &Value) -> String {
    let mut w = Out::default();
    let m = &namespace["metadata"];
    w.line(0, format!("Name:\t{}", txt(&m["name"])));
    labels(&mut w, "Labels", &m["labels"]);
    annotations(&mut w, "Annotations", &m["annotations"]);
    w.line(0, format!("Status:\t{}", txt(&namespace["status"]["phase"])));
    if let Some(conditions) = namespace["status"]["conditions"].as_array().filter(|c| !c.is_empty()) {
        w.line(0, "Conditions:");
        w.line(1, "Type\tStatus\tLastTransitionTime\tReason\tMessage");
        w.line(1, "----\t------\t------------------\t------\t-------");
        for c in conditions {
            w.line(
                1,
                format!(
                    "{}\t{}\t{}\t{}\t{}",
                    txt(&c["type"]),
                    txt(&c["status"]),
                    txt(&c["lastTransitionTime"]),
                    txt(&c["reason"]),
                    txt(&c["message"]),
                ),
            );
        }
    }
    w.finish()
}

// ---------------------------------------------------------------- shared

/// kubectl's `printLabelsMultiline`: sorted `k=v`, one per line.
fn labels(w: &mut Out, title: &str, map: &Value) {
    let map = string_map(map);
    if map.is_empty() {
        w.line(0, format!("{title}:\t<none>"));
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let head = if i == 0 { format!("{title}:") } else { String::new() };
        w.line(0, format!("{head}\t{}={}", esc(k), esc(v)));
    }
}

/// kubectl's `printAnnotationsMultiline`: `k: v`, long or multi-line
/// values on lines of their own, cut at 140 characters.
fn annotations(w: &mut Out, title: &str, map: &Value) {
    let mut map = string_map(map);
    map.remove(LAST_APPLIED_ANNOTATION);
    if map.is_empty() {
        w.line(0, format!("{title}:\t<none>"));
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let head = if i == 0 { format!("{title}:") } else { String::new() };
        let value = v.strip_suffix('\n').unwrap_or(v);
        if value.len() + k.len() + 2 > MAX_ANNOTATION_LEN || value.contains('\n') {
            w.line(0, format!("{head}\t{}:", esc(k)));
            for line in value.split('\n') {
                w.line(0, format!("\t  {}", esc(shorten(line, MAX_ANNOTATION_LEN - 2).as_ref())));
            }
        } else {
            w.line(0, format!("{head}\t{}: {}", esc(k), esc(value)));
        }
    }
}

/// At most `max` bytes (on a character boundary), then `...`.
fn shorten(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}

/// The controller owner reference, if any.
fn controller(object: &Value) -> Option<&Value> {
    object["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == Value::Bool(true))
}

fn protocol(port: &Value) -> String {
    non_empty(&port["protocol"]).unwrap_or_else(|| "TCP".to_owned())
}

/// A map of strings (labels, resource lists), sorted; numbers (a quantity
/// written as `2`) as text.
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object().map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), qty(v)?))).collect()).unwrap_or_default()
}

/// A quantity or other scalar as text, unescaped.
fn qty(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A scalar as display text (escaped); null and containers are empty.
fn txt(v: &Value) -> String {
    qty(v).map(|s| esc(&s)).unwrap_or_default()
}

/// A non-empty scalar as display text.
fn non_empty(v: &Value) -> Option<String> {
    Some(txt(v)).filter(|s| !s.is_empty())
}

fn is_set(v: &Value) -> bool {
    !v.is_null() && v != ""
}

/// Control characters escaped (`\t`, `\u{1b}`): object fields are user
/// input and must neither break the columns nor reach the terminal raw.
fn esc(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// An RFC 3339 time in unix milliseconds.
fn timestamp_ms(v: &Value) -> Option<i64> {
    v.as_str()?.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

/// apimachinery's `HumanDuration` of `now - then` (kubectl's ages).
fn human_duration(now_ms: u64, then_ms: i64) -> String {
    let now = i128::from(now_ms);
    let seconds = (now - i128::from(then_ms)) / 1000;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// Lines being written: cells separated by `\t`, aligned by [`tabbed`].
#[derive(Default)]
struct Out {
    done: String,
    pending: String,
}

impl Out {
    /// One line, indented two spaces per `level` (kubectl's PrefixWriter).
    fn line(&mut self, level: usize, text: impl AsRef<str>) {
        for _ in 0..level {
            self.pending.push_str("  ");
        }
        self.pending.push_str(text.as_ref());
        self.pending.push('\n');
    }

    /// Ends every column block (tabwriter's `Flush`), so that a table's
    /// columns do not widen the lines after it.
    fn flush(&mut self) {
        self.done.push_str(&tabbed(&self.pending));
        self.pending.clear();
    }

    fn finish(mut self) -> String {
        self.flush();
        self.done
    }
}

/// Go's `text/tabwriter` as kubectl configures it (min width 0, padding 2,
/// padded with spaces, left-aligned): each tab-terminated cell is padded
/// to the width of its column block, a block being the consecutive lines
/// that have a cell in that column. Trailing spaces are trimmed.
fn tabbed(text: &str) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<Vec<&str>> = body.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format_block(&lines, &mut widths, 0, lines.len(), &mut out);
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Go's `Writer.format`: `widths` holds the widths of the columns left of
/// the current one for lines `line0..line1`.
fn format_block(lines: &[Vec<&str>], widths: &mut Vec<usize>, mut line0: usize, line1: usize, out: &mut String) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        // A block of cells in `column` starts here.
        write_lines(lines, widths, line0, this, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + 2);
            this += 1;
        }
        widths.push(width);
        format_block(lines, widths, line0, this, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, widths, line0, line1, out);
}

fn write_lines(lines: &[Vec<&str>], widths: &[usize], line0: usize, line1: usize, out: &mut String) {
    for (i, cells) in lines.iter().enumerate().take(line1).skip(line0) {
        let start = out.len();
        for (j, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if let Some(&w) = widths.get(j).filter(|_| j + 1 < cells.len()) {
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
            }
        }
        let kept = out[start..].trim_end_matches(' ').len();
        out.truncate(start + kept);
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests;
