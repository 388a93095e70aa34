//! The `berth` command line: kubectl's everyday verbs against berth's API,
//! taking the Kubernetes YAML users already have.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hyper::Method;
use serde_json::Value;

use crate::client::{ApiClient, ClientError};

/// A kind as the CLI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindRef {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub resource: &'static str,
    pub namespaced: bool,
    aliases: &'static [&'static str],
}

pub const KINDS: &[KindRef] = &[
    KindRef { kind: "Pod", api_version: "v1", resource: "pods", namespaced: true, aliases: &["pod", "po"] },
    KindRef {
        kind: "Deployment",
        api_version: "apps/v1",
        resource: "deployments",
        namespaced: true,
        aliases: &["deployment", "deploy"],
    },
    KindRef {
        kind: "Service",
        api_version: "v1",
        resource: "services",
        namespaced: true,
        aliases: &["service", "svc"],
    },
    KindRef {
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        resource: "endpointslices",
        namespaced: true,
        aliases: &["endpointslice", "endpoints", "ep"],
    },
    KindRef {
        kind: "ControllerRevision",
        api_version: "apps/v1",
        resource: "controllerrevisions",
        namespaced: true,
        aliases: &["controllerrevision"],
    },
    KindRef { kind: "Node", api_version: "v1", resource: "nodes", namespaced: false, aliases: &["node", "no"] },
    KindRef {
        kind: "Namespace",
        api_version: "v1",
        resource: "namespaces",
        namespaced: false,
        aliases: &["namespace", "ns"],
    },
];

impl KindRef {
    /// `pods`, `pod`, `po`, `Pod`, `deployment.apps` …
    pub fn find(name: &str) -> Option<&'static KindRef> {
        let n = name.to_ascii_lowercase();
        let n = n.strip_suffix(".apps").unwrap_or(&n);
        KINDS.iter().find(|k| k.resource == n || k.kind.eq_ignore_ascii_case(n) || k.aliases.contains(&n))
    }

    pub fn for_object(api_version: &str, kind: &str) -> Option<&'static KindRef> {
        KINDS.iter().find(|k| k.kind == kind && k.api_version == api_version)
    }

    fn prefix(&self) -> String {
        if self.api_version.contains('/') { format!("/apis/{}", self.api_version) } else { "/api/v1".to_owned() }
    }

    /// The collection path (`namespace` None = all namespaces).
    pub fn collection(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/namespaces/{ns}/{}", self.prefix(), self.resource),
            _ => format!("{}/{}", self.prefix(), self.resource),
        }
    }

    pub fn item(&self, namespace: &str, name: &str) -> String {
        format!("{}/{name}", self.collection(Some(namespace)))
    }

    /// kubectl's `deployment.apps/web`.
    pub fn display(&self, name: &str) -> String {
        let group = self.api_version.split_once('/').map(|(g, _)| format!(".{g}")).unwrap_or_default();
        format!("{}{group}/{name}", self.kind.to_ascii_lowercase())
    }
}

fn unknown_kind(name: &str) -> ClientError {
    let known: Vec<&str> = KINDS.iter().map(|k| k.resource).collect();
    ClientError::Config(format!("unknown resource type {name:?}; one of {}", known.join(", ")))
}

/// Every YAML document of a file, a directory (`*.yaml`, `*.yml`,
/// `*.json`, sorted) or `-` (stdin).
///
/// # Errors
/// Unreadable files or YAML that does not parse (file and document named).
pub fn read_manifests(path: &Path) -> Result<Vec<(String, Value)>, ClientError> {
    let mut files = Vec::new();
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| ClientError::Config(format!("reading stdin: {e}")))?;
        files.push(("-".to_owned(), text));
    } else if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
            .collect();
        entries.sort();
        for p in entries {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| ClientError::Config(format!("reading {}: {e}", p.display())))?;
            files.push((p.display().to_string(), text));
        }
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))?;
        files.push((path.display().to_string(), text));
    }
    let mut out = Vec::new();
    for (name, text) in files {
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| ClientError::Config(format!("{name}: document {}: {e}", i + 1)))?;
            if !value.is_null() {
                out.push((format!("{name}#{}", i + 1), value));
            }
        }
    }
    Ok(out)
}

/// Fields the server owns: never part of a comparison or an update.
fn strip_server_fields(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"] {
            meta.remove(f);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
}

/// Whether everything `desired` says is already so in `live` (the server
/// adds defaults, so `live` may say more).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv))),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b)),
        // 80 and "80" are the same port to the server's defaulting.
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => a.to_string() == *b,
        _ => desired == live,
    }
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

/// `berth apply -f`: create what is missing, update what differs, leave
/// the rest; one line per object, like kubectl.
///
/// # Errors
/// The first object the server refuses (with its field path); objects
/// before it stay applied, as with kubectl.
pub async fn apply(client: &ApiClient, path: &Path, namespace: Option<&str>) -> Result<Vec<String>, ClientError> {
    let mut lines = Vec::new();
    for (origin, mut object) in read_manifests(path)? {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind_name = object["kind"].as_str().unwrap_or_default().to_owned();
        let kind = KindRef::for_object(&api_version, &kind_name).ok_or_else(|| {
            ClientError::Config(format!("{origin}: unsupported apiVersion/kind {api_version:?}/{kind_name:?}"))
        })?;
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| ClientError::Config(format!("{origin}: metadata.name is required")))?
            .to_owned();
        let ns = object["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| namespace.map(str::to_owned))
            .unwrap_or_else(|| client.namespace().to_owned());
        if kind.namespaced {
            object["metadata"]["namespace"] = Value::String(ns.clone());
        }
        strip_server_fields(&mut object);
        let item = if kind.namespaced { kind.item(&ns, &name) } else { format!("{}/{name}", kind.collection(None)) };
        let outcome = loop {
            let live = match client.json(Method::GET, &item, None).await {
                Ok(v) => Some(v),
                Err(ClientError::Status { code: 404, .. }) => None,
                Err(e) => return Err(e),
            };
            let Some(mut live) = live else {
                match client.json(Method::POST, &kind.collection(Some(&ns)), Some(&object)).await {
                    Ok(_) => break Applied::Created,
                    // Created meanwhile by someone else: compare again.
                    Err(ClientError::Status { code: 409, .. }) => continue,
                    Err(e) => return Err(with_origin(e, &origin)),
                }
            };
            let version = live["metadata"]["resourceVersion"].clone();
            let status = live.get("status").cloned();
            strip_server_fields(&mut live);
            if is_subset(&object, &live) {
                break Applied::Unchanged;
            }
            let mut update = object.clone();
            update["metadata"]["resourceVersion"] = version;
            if let Some(s) = status {
                update["status"] = s;
            }
            match client.json(Method::PUT, &item, Some(&update)).await {
                Ok(_) => break Applied::Configured,
                // Changed between our read and write: read again.
                Err(ClientError::Status { code: 409, reason, .. }) if reason == "Conflict" => continue,
                Err(e) => return Err(with_origin(e, &origin)),
            }
        };
        let word = match outcome {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        };
        lines.push(format!("{} {word}", kind.display(&name)));
    }
    Ok(lines)
}

fn with_origin(e: ClientError, origin: &str) -> ClientError {
    match e {
        ClientError::Status { code, reason, message, causes } => {
            ClientError::Status { code, reason, message: format!("{origin}: {message}"), causes }
        }
        other => other,
    }
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
    Yaml,
    Wide,
}

/// `berth get KIND [NAME]`.
///
/// # Errors
/// Unknown kind, or the server's error.
pub async fn get(
    client: &ApiClient,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Option<Output>,
) -> Result<String, ClientError> {
    let kind = KindRef::find(kind).ok_or_else(|| unknown_kind(kind))?;
    let ns = namespace.unwrap_or(client.namespace());
    let items: Vec<Value> = match name {
        Some(n) => {
            let path = if kind.namespaced { kind.item(ns, n) } else { format!("{}/{n}", kind.collection(None)) };
            vec![client.json(Method::GET, &path, None).await?]
        }
        None => {
            let path = kind.collection(if all_namespaces { None } else { Some(ns) });
            let list = client.json(Method::GET, &path, None).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    Ok(match output {
        Some(Output::Json) if name.is_some() => serde_json::to_string_pretty(&items[0]).unwrap_or_default(),
        Some(Output::Json) => {
            serde_json::to_string_pretty(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
                .unwrap_or_default()
        }
        Some(Output::Yaml) if name.is_some() => serde_yaml::to_string(&items[0]).unwrap_or_default(),
        Some(Output::Yaml) => {
            serde_yaml::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
                .unwrap_or_default()
        }
        wide => table(kind, &items, all_namespaces, wide == Some(Output::Wide)),
    })
}

fn age(created: &Value) -> String {
    let Some(text) = created.as_str() else { return "<unknown>".into() };
    let Some(then) = parse_rfc3339(text) else { return "<unknown>".into() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(then);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `2026-11-23T14:00:00Z` → unix seconds.
fn parse_rfc3339(t: &str) -> Option<u64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let time = time.split(['.', '+']).next()?;
    let mut hms = time.split(':').map(|x| x.parse::<i64>());
    let (h, mi, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + h * 3600 + mi * 60 + s).ok()
}

fn table(kind: &KindRef, items: &[Value], with_ns: bool, wide: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<&str> = match kind.kind {
        "Pod" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "Deployment" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "Service" => vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"],
        "Node" => vec!["NAME", "STATUS", "AGE"],
        "EndpointSlice" => vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "ControllerRevision" => vec!["NAME", "CONTROLLER", "REVISION", "AGE"],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        match kind.kind {
            "Pod" => header.extend(["IP", "NODE"]),
            "Deployment" => header.extend(["SELECTOR"]),
            "Service" => header.extend(["SELECTOR"]),
            _ => {}
        }
    }
    if with_ns && kind.namespaced {
        header.insert(0, "NAMESPACE");
    }
    for o in items {
        let m = &o["metadata"];
        let name = m["name"].as_str().unwrap_or("").to_owned();
        let a = age(&m["creationTimestamp"]);
        let mut row = match kind.kind {
            "Pod" => {
                let cs = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = cs.iter().filter(|c| c["ready"] == Value::Bool(true)).count();
                let restarts: u64 = cs.iter().filter_map(|c| c["restartCount"].as_u64()).sum();
                let mut status = o["status"]["phase"].as_str().unwrap_or("Pending").to_owned();
                for c in &cs {
                    if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                        status = r.to_owned();
                    }
                }
                if m.get("deletionTimestamp").is_some_and(|d| !d.is_null()) {
                    status = "Terminating".into();
                }
                vec![name, format!("{ready}/{total}"), status, restarts.to_string(), a]
            }
            "Deployment" => {
                let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
                let st = &o["status"];
                vec![
                    name,
                    format!("{}/{want}", st["readyReplicas"].as_u64().unwrap_or(0)),
                    st["updatedReplicas"].as_u64().unwrap_or(0).to_string(),
                    st["availableReplicas"].as_u64().unwrap_or(0).to_string(),
                    a,
                ]
            }
            "Service" => {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                let proto = p["protocol"].as_str().unwrap_or("TCP");
                                match p["nodePort"].as_u64() {
                                    Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                    None => format!("{}/{proto}", p["port"]),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    name,
                    o["spec"]["type"].as_str().unwrap_or("ClusterIP").to_owned(),
                    o["spec"]["clusterIP"].as_str().unwrap_or("<none>").to_owned(),
                    ports.join(","),
                    a,
                ]
            }
            "Node" => {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
                    .unwrap_or("Unknown");
                vec![name, ready.to_owned(), a]
            }
            "EndpointSlice" => {
                let ready: Vec<String> = o["endpoints"]
                    .as_array()
                    .map(|es| {
                        es.iter()
                            .filter(|e| e["conditions"]["ready"] == Value::Bool(true))
                            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let ports: Vec<String> = o["ports"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p["port"].as_u64()).map(|p| p.to_string()).collect())
                    .unwrap_or_default();
                vec![
                    name,
                    o["addressType"].as_str().unwrap_or("IPv4").to_owned(),
                    if ports.is_empty() { "<unset>".into() } else { ports.join(",") },
                    if ready.is_empty() { "<none>".into() } else { ready.join(",") },
                    a,
                ]
            }
            "ControllerRevision" => {
                let owner = o["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|rs| rs.iter().find(|r| r["controller"] == Value::Bool(true)))
                    .map_or_else(
                        || "<none>".to_owned(),
                        |r| {
                            let group = r["apiVersion"].as_str().and_then(|v| v.split_once('/')).map(|(g, _)| g);
                            let kind = r["kind"].as_str().unwrap_or("").to_ascii_lowercase();
                            let kind = group.map_or(kind.clone(), |g| format!("{kind}.{g}"));
                            format!("{kind}/{}", r["name"].as_str().unwrap_or(""))
                        },
                    );
                vec![name, owner, o["revision"].as_i64().unwrap_or(0).to_string(), a]
            }
            _ => vec![name, a],
        };
        if wide {
            match kind.kind {
                "Pod" => {
                    row.push(o["status"]["podIP"].as_str().unwrap_or("<none>").to_owned());
                    row.push(o["spec"]["nodeName"].as_str().unwrap_or("<none>").to_owned());
                }
                "Deployment" => row.push(selector_text(&o["spec"]["selector"]["matchLabels"])),
                "Service" => row.push(selector_text(&o["spec"]["selector"])),
                _ => {}
            }
        }
        if with_ns && kind.namespaced {
            row.insert(0, m["namespace"].as_str().unwrap_or("").to_owned());
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return "No resources found.\n".to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s: String = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}   ", w = widths[i])).collect();
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn selector_text(v: &Value) -> String {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

/// `berth delete KIND NAME`.
///
/// # Errors
/// Unknown kind, or the server's error (404 included).
pub async fn delete(
    client: &ApiClient,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    grace_period_seconds: Option<i64>,
) -> Result<String, ClientError> {
    let kind = KindRef::find(kind).ok_or_else(|| unknown_kind(kind))?;
    let ns = namespace.unwrap_or(client.namespace());
    let path = if kind.namespaced { kind.item(ns, name) } else { format!("{}/{name}", kind.collection(None)) };
    let options = grace_period_seconds
        .map(|g| serde_json::json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": g}));
    client.json(Method::DELETE, &path, options.as_ref()).await?;
    Ok(format!("{} deleted", kind.display(name)))
}

/// `berth scale deployment NAME --replicas N`, retried on conflicts.
///
/// # Errors
/// Not a Deployment, or the server's error.
pub async fn scale(
    client: &ApiClient,
    kind: &str,
    name: &str,
    replicas: u32,
    namespace: Option<&str>,
) -> Result<String, ClientError> {
    let kind = KindRef::find(kind).ok_or_else(|| unknown_kind(kind))?;
    if kind.kind != "Deployment" {
        return Err(ClientError::Config(format!("cannot scale {}: only deployments scale", kind.resource)));
    }
    let path = kind.item(namespace.unwrap_or(client.namespace()), name);
    for _ in 0..5 {
        let mut d = client.json(Method::GET, &path, None).await?;
        d["spec"]["replicas"] = Value::from(replicas);
        match client.json(Method::PUT, &path, Some(&d)).await {
            Ok(_) => return Ok(format!("{} scaled", kind.display(name))),
            Err(ClientError::Status { code: 409, .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Config(format!("{}: kept conflicting with other writers; try again", kind.display(name))))
}

/// `berth rollout status deployment NAME`: waits, printing progress like
/// kubectl, until every replica runs the current template and is
/// available.
///
/// # Errors
/// The timeout, or the server's error.
pub async fn rollout_status(
    client: &ApiClient,
    name: &str,
    namespace: Option<&str>,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<String, ClientError> {
    let kind = KindRef::find("deployments").ok_or_else(|| unknown_kind("deployments"))?;
    let path = kind.item(namespace.unwrap_or(client.namespace()), name);
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let d = client.json(Method::GET, &path, None).await?;
        let (msg, done) = rollout_message(name, &d);
        if done {
            return Ok(msg);
        }
        if msg != last {
            progress(&msg);
            last = msg;
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Config(format!("timed out waiting for the rollout: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Deployment and its revisions (ControllerRevisions it controls),
/// oldest first.
async fn deployment_history(
    client: &ApiClient,
    name: &str,
    namespace: Option<&str>,
) -> Result<(Value, Vec<Value>), ClientError> {
    let ns = namespace.unwrap_or(client.namespace());
    let deployments = KindRef::find("deployments").ok_or_else(|| unknown_kind("deployments"))?;
    let revisions = KindRef::find("controllerrevisions").ok_or_else(|| unknown_kind("controllerrevisions"))?;
    let d = client.json(Method::GET, &deployments.item(ns, name), None).await?;
    let uid = d["metadata"]["uid"].clone();
    let list = client.json(Method::GET, &revisions.collection(Some(ns)), None).await?;
    let mut owned: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|o| o["controller"] == Value::Bool(true) && o["uid"] == uid))
        })
        .cloned()
        .collect();
    owned.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    Ok((d, owned))
}

/// `berth rollout history deployment/NAME [--revision N]`, as kubectl
/// prints it.
///
/// # Errors
/// No such Deployment or revision, or the server's error.
pub async fn rollout_history(
    client: &ApiClient,
    name: &str,
    namespace: Option<&str>,
    revision: Option<i64>,
) -> Result<String, ClientError> {
    let (_, revisions) = deployment_history(client, name, namespace).await?;
    let display = format!("deployment.apps/{name}");
    if let Some(n) = revision {
        let r = revisions
            .iter()
            .find(|r| r["revision"].as_i64() == Some(n))
            .ok_or_else(|| ClientError::Config(format!("unable to find the specified revision {n}")))?;
        let template = serde_yaml::to_string(&r["data"]["spec"]["template"]).unwrap_or_default();
        let indented: String = template.lines().map(|l| format!("  {l}\n")).collect();
        return Ok(format!("{display} with revision #{n}\nPod Template:\n{indented}"));
    }
    let mut out = format!("{display}\nREVISION  CHANGE-CAUSE\n");
    for r in &revisions {
        let cause = r["metadata"]["annotations"][CHANGE_CAUSE].as_str().unwrap_or("<none>");
        out.push_str(&format!("{:<10}{cause}\n", r["revision"].as_i64().unwrap_or(0)));
    }
    Ok(out)
}

/// kubectl's change-cause annotation.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The Deployment annotation with its current revision.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// `berth rollout undo deployment/NAME [--to-revision N]`: copies the
/// revision's pod template back into the Deployment (as kubectl does,
/// client side, with the Deployment's resourceVersion as precondition).
/// Without `--to-revision`, the revision before the current one.
///
/// # Errors
/// No history, no such revision, or the server's error (409 when the
/// Deployment changed meanwhile).
pub async fn rollout_undo(
    client: &ApiClient,
    name: &str,
    namespace: Option<&str>,
    to_revision: Option<i64>,
) -> Result<String, ClientError> {
    let (mut d, revisions) = deployment_history(client, name, namespace).await?;
    let display = format!("deployment.apps/{name}");
    let current = d["metadata"]["annotations"][REVISION].as_str().and_then(|r| r.parse::<i64>().ok());
    let target = match to_revision.filter(|n| *n != 0) {
        Some(n) => revisions
            .iter()
            .find(|r| r["revision"].as_i64() == Some(n))
            .ok_or_else(|| ClientError::Config(format!("unable to find specified revision {n} in history")))?,
        None => {
            let current = current.or_else(|| revisions.last().and_then(|r| r["revision"].as_i64())).unwrap_or(0);
            revisions
                .iter()
                .rev()
                .find(|r| r["revision"].as_i64().is_some_and(|n| n < current))
                .ok_or_else(|| ClientError::Config(format!("no rollout history found for deployment {name:?}")))?
        }
    };
    let n = target["revision"].as_i64().unwrap_or(0);
    let template = target["data"]["spec"]["template"].clone();
    if template.is_null() {
        return Err(ClientError::Protocol(format!("revision {n} of {display} has no pod template")));
    }
    if d["spec"]["template"] == template {
        return Ok(format!("{display} skipped rollback (current template already matches revision {n})"));
    }
    d["spec"]["template"] = template;
    let ns = namespace.unwrap_or(client.namespace());
    let path = KindRef::find("deployments").ok_or_else(|| unknown_kind("deployments"))?.item(ns, name);
    client.json(Method::PUT, &path, Some(&d)).await?;
    Ok(format!("{display} rolled back"))
}

/// kubectl's rollout status messages (`DeploymentStatusViewer`).
pub fn rollout_message(name: &str, d: &Value) -> (String, bool) {
    let generation = d["metadata"]["generation"].as_u64().unwrap_or(0);
    let observed = d["status"]["observedGeneration"].as_u64().unwrap_or(0);
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let st = &d["status"];
    let updated = st["updatedReplicas"].as_u64().unwrap_or(0);
    let total = st["replicas"].as_u64().unwrap_or(0);
    let available = st["availableReplicas"].as_u64().unwrap_or(0);
    if observed < generation {
        return ("Waiting for deployment spec update to be observed...\n".to_owned(), false);
    }
    if updated < want {
        return (
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated...\n"
            ),
            false,
        );
    }
    if total > updated {
        return (
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...\n",
                total - updated
            ),
            false,
        );
    }
    if available < updated {
        return (
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available...\n"
            ),
            false,
        );
    }
    (format!("deployment \"{name}\" successfully rolled out\n"), true)
}

/// Labels as `k=v,k=v` for selectors in URLs.
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_like_kubectl() {
        for (name, kind) in [
            ("po", "Pod"),
            ("pods", "Pod"),
            ("deploy", "Deployment"),
            ("deployment.apps", "Deployment"),
            ("svc", "Service"),
        ] {
            assert_eq!(KindRef::find(name).map(|k| k.kind), Some(kind), "{name}");
        }
        assert!(KindRef::find("widgets").is_none());
        let d = KindRef::find("deploy").unwrap();
        assert_eq!(d.item("prod", "web"), "/apis/apps/v1/namespaces/prod/deployments/web");
        assert_eq!(d.display("web"), "deployment.apps/web");
        let n = KindRef::find("nodes").unwrap();
        assert_eq!(n.collection(Some("x")), "/api/v1/nodes");
    }

    #[test]
    fn subset_comparison_ignores_server_defaults() {
        let desired = serde_json::json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}});
        let live = serde_json::json!({"spec": {"replicas": 3, "ports": [{"port": 80, "protocol": "TCP"}], "x": 1}});
        assert!(is_subset(&desired, &live));
        let changed = serde_json::json!({"spec": {"replicas": 4}});
        assert!(!is_subset(&changed, &live));
    }

    #[test]
    fn multi_document_yaml_is_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n").unwrap();
        let docs = read_manifests(&f).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].1["kind"], "Deployment");
        std::fs::write(dir.path().join("b.yml"), "kind: [unclosed\n").unwrap();
        let err = read_manifests(dir.path()).unwrap_err().to_string();
        assert!(err.contains("b.yml") && err.contains("document 1"), "{err}");
    }

    #[test]
    fn rollout_messages_follow_kubectl() {
        let d = serde_json::json!({
            "metadata": {"generation": 2},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}
        });
        let (msg, done) = rollout_message("web", &d);
        assert!(!done && msg.contains("2 of 3 updated replicas are available"), "{msg}");
        let mut d = d;
        d["status"]["availableReplicas"] = 3.into();
        assert_eq!(rollout_message("web", &d), ("deployment \"web\" successfully rolled out\n".to_owned(), true));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86401));
    }
}
