//! A bounded, seeded soak: one real `berth serve` (controller period
//! 50 ms, node grace 2 s, eviction 2 s), three simulated agents with one
//! node each, two or three Deployments (RollingUpdate with various
//! maxSurge/maxUnavailable, one Recreate) with a Service each, and a loop of
//! random actions every 100–300 ms: scale (to 0 too), image changes,
//! `rollout undo` (the CLI, or a ControllerRevision's template copied
//! back), graceful pod deletion, Deployment delete + re-create under the
//! same name, node loss and return, Service delete + re-create.
//!
//! Invariants are checked from a pod watch (event by event) and from
//! periodic lists of everything; eventual ones (endpoints, bindings) only
//! count once a discrepancy persisted for [`PERSIST`]. After the churn the
//! lost nodes come back, and every Deployment must converge with exact
//! endpoints, revision history and no orphans.
//!
//! `BERTH_SOAK_SEED` picks the seed (printed at start), `BERTH_SOAK_SECONDS`
//! the churn's length (default 25 s, so the whole test stays under a
//! minute). A violation fails the test with the seed, every violation with
//! its time, the action log and the state.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic so failures carry a backtrace")]

mod common;

use common::objects::{hash, image, name, node, ready, str_at, terminating, text, uid};
use common::serve::{Serve, free_port};
use common::sim_agent::{AgentOptions, SimAgent};
use common::watch::{EventStream, Watcher};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_control::client::{ApiClient, ClientError, Config};
use berth_control::controllers::loops::template_hash;
use hyper::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const NODES: &str = "/api/v1/nodes";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
const REVISIONS: &str = "/apis/apps/v1/namespaces/default/controllerrevisions";
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
const IMAGES: [&str; 4] = ["soak:v1", "soak:v2", "soak:v3", "soak:v4"];
const NODE_NAMES: [&str; 3] = ["node-0", "node-1", "node-2"];
/// How long an eventual invariant may be broken before it counts.
const PERSIST: Duration = Duration::from_millis(1200);
/// After a scale-down, how long before the surge bound is armed again (once
/// the pods are back within it).
const SCALE_SETTLE: Duration = Duration::from_secs(1);
const DEFAULT_SEED: u64 = 0x5eed_b347;
const DEFAULT_SECONDS: u64 = 25;

// ---------------------------------------------------------------------------
// Small helpers.

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn owner_uid(o: &Value) -> &str {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
        .map_or("", |r| str_at(r, "/uid"))
}

fn rv(o: &Value) -> u64 {
    str_at(o, "/metadata/resourceVersion").parse().unwrap_or(0)
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pod_line(p: &Value) -> String {
    format!(
        "\n    {} owner={} hash={} image={} node={} phase={} ready={} ip={} deletionTimestamp={}",
        name(p),
        owner_uid(p),
        hash(p),
        image(p),
        node(p),
        str_at(p, "/status/phase"),
        ready(p),
        str_at(p, "/status/podIP"),
        p.pointer("/metadata/deletionTimestamp").unwrap_or(&Value::Null),
    )
}

// ---------------------------------------------------------------------------
// The Deployments under test.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Amount {
    Int(u32),
    Percent(u32),
}

impl Amount {
    fn json(self) -> Value {
        match self {
            Amount::Int(n) => json!(n),
            Amount::Percent(p) => json!(format!("{p}%")),
        }
    }

    fn resolve(self, replicas: u32, up: bool) -> u32 {
        match self {
            Amount::Int(n) => n,
            Amount::Percent(p) if up => (replicas * p).div_ceil(100),
            Amount::Percent(p) => replicas * p / 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Rolling { surge: Amount, unavailable: Amount },
    Recreate,
}

impl Strategy {
    fn json(self) -> Value {
        match self {
            Strategy::Rolling { surge, unavailable } => json!({
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge.json(), "maxUnavailable": unavailable.json()},
            }),
            Strategy::Recreate => json!({"type": "Recreate"}),
        }
    }

    /// The most non-terminating pods Kubernetes allows while rolling.
    fn max_live(self, replicas: u32) -> u32 {
        match self {
            Strategy::Rolling { surge, unavailable } => {
                let (s, u) = (surge.resolve(replicas, true), unavailable.resolve(replicas, false));
                // ResolveFenceposts: both 0 → maxUnavailable 1.
                let s = if s == 0 && u == 0 { 0 } else { s };
                replicas + s
            }
            Strategy::Recreate => replicas,
        }
    }
}

fn deployment_object(name: &str, replicas: u32, image: &str, strategy: Strategy) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy.json(),
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "main",
                        "image": image,
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }],
                },
            },
        },
    })
}

fn service_name(deployment: &str) -> String {
    format!("svc-{deployment}")
}

fn service_object(deployment: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(deployment)},
        "spec": {"selector": {"app": deployment}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
}

// ---------------------------------------------------------------------------
// Shared state: what the actions did, what the checkers found.

/// What the test knows of one Deployment it manages.
#[derive(Debug)]
struct Tracked {
    strategy: Strategy,
    /// The live Deployment's uid; None while deleted.
    uid: Option<String>,
    /// `spec.replicas` as last written by the test.
    replicas: u32,
    /// Whether the surge bound is checked (off right after a scale-down).
    armed: bool,
    /// The resourceVersion of the scale-down and when it was answered.
    disarmed_rv: u64,
    disarmed_at: Instant,
    /// Most non-terminating pods seen at once, for the report.
    peak: u32,
}

struct Shared {
    start: Instant,
    violations: Vec<String>,
    actions: Vec<String>,
    deployments: BTreeMap<String, Tracked>,
    /// Pod uid → the node it was first seen bound to.
    bindings: HashMap<String, String>,
    /// Watch events processed.
    events: u64,
    /// Periodic snapshots checked.
    snapshots: u64,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> std::sync::MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stamp(&self) -> String {
        format!("{:>7.3}s", self.start.elapsed().as_secs_f64())
    }

    fn violation(&mut self, what: String) {
        let line = format!("[{}] {what}", self.stamp());
        eprintln!("SOAK VIOLATION {line}");
        self.violations.push(line);
    }

    fn action(&mut self, what: String) {
        let line = format!("[{}] {what}", self.stamp());
        eprintln!("soak: {line}");
        self.actions.push(line);
    }
}

// ---------------------------------------------------------------------------
// The API, with every 5xx and transport failure recorded.

#[derive(Clone)]
struct Api {
    client: Arc<ApiClient>,
    state: State,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let result = self.client.json(method.clone(), path, body).await;
        match &result {
            Err(ClientError::Status { code, message, .. }) if *code >= 500 => {
                lock(&self.state).violation(format!("{method} {path} answered {code}: {message}"));
            }
            Err(e @ (ClientError::Connect { .. } | ClientError::Protocol(_))) => {
                lock(&self.state).violation(format!("{method} {path} failed: {e}"));
            }
            _ => {}
        }
        result
    }

    async fn list(&self, path: &str) -> Option<Vec<Value>> {
        self.call(Method::GET, path, None).await.ok().map(|l| items(&l))
    }
}

// ---------------------------------------------------------------------------
// A watch of every pod of the namespace, checked event by event.

struct PodWatch {
    watcher: Watcher,
    resource_version: String,
    stream: Option<EventStream>,
    /// Pods by uid.
    live: BTreeMap<String, Value>,
}

impl PodWatch {
    async fn open(config: &Config, api: &Api) -> PodWatch {
        let mut watch = PodWatch {
            watcher: Watcher::new(config),
            resource_version: String::new(),
            stream: None,
            live: BTreeMap::new(),
        };
        watch.relist(api).await;
        watch
    }

    async fn relist(&mut self, api: &Api) {
        loop {
            if let Ok(list) = api.call(Method::GET, PODS, None).await {
                self.live = items(&list).into_iter().map(|p| (uid(&p).to_owned(), p)).collect();
                self.resource_version = str_at(&list, "/metadata/resourceVersion").to_owned();
                self.stream = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connects; false when the version is too old (relist).
    async fn connect(&mut self, state: &State) -> bool {
        let path = format!("{PODS}?watch=true&resourceVersion={}", self.resource_version);
        let Ok((code, stream)) = self.watcher.open(&path).await else {
            lock(state).violation("the pod watch could not connect".into());
            return true;
        };
        if code == 410 {
            return false;
        }
        if code != 200 {
            lock(state).violation(format!("watch {path} answered {code}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            return true;
        }
        self.stream = stream;
        true
    }

    /// The next event, applied; None when the watch had to relist.
    async fn next(&mut self, api: &Api) -> Option<Value> {
        loop {
            if self.stream.is_none() && !self.connect(&api.state).await {
                self.relist(api).await;
                return None;
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            let Some(event) = stream.next().await else {
                self.stream = None;
                continue;
            };
            if event["type"] == "ERROR" {
                if event["object"]["code"] != 410 {
                    lock(&api.state).violation(format!("pod watch error: {event}"));
                }
                self.relist(api).await;
                return None;
            }
            let object = &event["object"];
            if let Some(rv) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                rv.clone_into(&mut self.resource_version);
            }
            match event["type"].as_str() {
                Some("DELETED") => {
                    self.live.remove(uid(object));
                }
                Some("BOOKMARK") => return None,
                _ => {
                    self.live.insert(uid(object).to_owned(), object.clone());
                }
            }
            return Some(event);
        }
    }
}

/// Checks one watch event: bindings never change, the surge bound holds
/// while armed, a Recreate never runs two templates at once.
fn check_event(shared: &mut Shared, live: &BTreeMap<String, Value>, event: &Value) {
    shared.events += 1;
    let pod = &event["object"];
    let (pod_uid, pod_node) = (uid(pod).to_owned(), node(pod).to_owned());
    match shared.bindings.get(&pod_uid) {
        Some(bound) if *bound != pod_node => {
            let bound = bound.clone();
            shared.violation(format!(
                "pod {} was bound to {bound}, now to {pod_node:?} ({} event){}",
                name(pod),
                event["type"],
                pod_line(pod)
            ));
        }
        None if !pod_node.is_empty() => {
            shared.bindings.insert(pod_uid, pod_node);
        }
        _ => {}
    }
    let event_rv = rv(pod);
    let mut found = Vec::new();
    for (dname, t) in &mut shared.deployments {
        let Some(duid) = &t.uid else { continue };
        let mine: Vec<&Value> = live.values().filter(|p| owner_uid(p) == duid && !terminating(p)).collect();
        let count = u32::try_from(mine.len()).unwrap();
        t.peak = t.peak.max(count);
        let bound = t.strategy.max_live(t.replicas);
        if !t.armed {
            if count <= bound && event_rv > t.disarmed_rv && t.disarmed_at.elapsed() >= SCALE_SETTLE {
                t.armed = true;
            }
        } else if count > bound {
            found.push(format!(
                "deployment {dname} ({:?}, replicas {}): {count} pods not terminating, more than {bound}, after {} {}:{}",
                t.strategy,
                t.replicas,
                event["type"],
                name(pod),
                mine.iter().map(|p| pod_line(p)).collect::<String>()
            ));
            // Reported once per excursion.
            t.armed = false;
            t.disarmed_rv = event_rv;
        }
        if t.strategy == Strategy::Recreate {
            let hashes: BTreeSet<&str> = mine.iter().map(|p| hash(p)).collect();
            if hashes.len() > 1 {
                found.push(format!(
                    "Recreate deployment {dname}: pods of {} templates at once, after {} {}:{}",
                    hashes.len(),
                    event["type"],
                    name(pod),
                    mine.iter().map(|p| pod_line(p)).collect::<String>()
                ));
            }
        }
    }
    for v in found {
        shared.violation(v);
    }
}

// ---------------------------------------------------------------------------
// Periodic lists: everything at once, checked for the invariants that must
// hold at any time (ClusterIPs, slice conditions) or eventually (endpoints,
// bindings to existing nodes).

#[derive(Default)]
struct Snapshot {
    deployments: Vec<Value>,
    pods: Vec<Value>,
    services: Vec<Value>,
    slices: Vec<Value>,
    nodes: Vec<Value>,
    revisions: Vec<Value>,
}

impl Snapshot {
    async fn take(api: &Api) -> Option<Snapshot> {
        Some(Snapshot {
            deployments: api.list(DEPLOYMENTS).await?,
            pods: api.list(PODS).await?,
            services: api.list(SERVICES).await?,
            slices: api.list(SLICES).await?,
            nodes: api.list(NODES).await?,
            revisions: api.list(REVISIONS).await?,
        })
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for d in &self.deployments {
            let _ = write!(
                out,
                "\n  deployment {} uid={} replicas={} image={} hash={} revision={} status={}",
                name(d),
                uid(d),
                d["spec"]["replicas"],
                str_at(d, "/spec/template/spec/containers/0/image"),
                template_hash(&d["spec"]["template"]),
                d["metadata"]["annotations"][REVISION_ANNOTATION],
                d["status"]
            );
        }
        for r in &self.revisions {
            let _ = write!(out, "\n  revision {} owner={} revision={}", name(r), owner_uid(r), r["revision"]);
        }
        for n in &self.nodes {
            let _ = write!(out, "\n  node {} ready={}", name(n), ready(n));
        }
        for s in &self.services {
            let _ = write!(out, "\n  service {} clusterIP={}", name(s), str_at(s, "/spec/clusterIP"));
        }
        for s in &self.slices {
            let eps: Vec<String> = s["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{}:{}", str_at(e, "/targetRef/name"), e["conditions"]))
                .collect();
            let _ = write!(out, "\n  slice {} endpoints {eps:?}", name(s));
        }
        out.push_str("\n  pods:");
        for p in &self.pods {
            out.push_str(&pod_line(p));
        }
        out
    }

    /// Discrepancies that must not last: each a stable key with details.
    fn eventual(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let node_ready: BTreeMap<&str, bool> = self.nodes.iter().map(|n| (name(n), ready(n))).collect();
        let pods_by_name: BTreeMap<&str, &Value> = self.pods.iter().map(|p| (name(p), p)).collect();
        for p in &self.pods {
            if !node(p).is_empty() && !node_ready.contains_key(node(p)) {
                out.insert(format!("pod {} bound to missing node {}", name(p), node(p)), pod_line(p));
            }
        }
        let services: BTreeSet<&str> = self.services.iter().map(name).collect();
        for slice in &self.slices {
            let owner = str_at(slice, "/metadata/labels/kubernetes.io~1service-name");
            if !services.contains(owner) {
                out.insert(format!("slice {} of missing service {owner}", name(slice)), String::new());
            }
        }
        for svc in &self.services {
            let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else { continue };
            let sname = name(svc);
            let expected: BTreeSet<&str> = self
                .pods
                .iter()
                .filter(|p| {
                    selector.iter().all(|(k, v)| p.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
                        && !terminating(p)
                        && ready(p)
                        && !str_at(p, "/status/podIP").is_empty()
                        && node_ready.get(node(p)).copied().unwrap_or(false)
                })
                .map(name)
                .collect();
            let endpoints: Vec<&Value> = self
                .slices
                .iter()
                .filter(|s| str_at(s, "/metadata/labels/kubernetes.io~1service-name") == sname)
                .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
                .collect();
            let got: BTreeSet<&str> = endpoints
                .iter()
                .filter(|e| e["conditions"]["ready"] == true)
                .map(|e| str_at(e, "/targetRef/name"))
                .collect();
            for missing in expected.difference(&got) {
                out.insert(format!("service {sname}: ready pod {missing} not a ready endpoint"), String::new());
            }
            for extra in got.difference(&expected) {
                let pod = pods_by_name.get(extra).map_or_else(|| " (pod gone)".to_owned(), |p| pod_line(p));
                out.insert(format!("service {sname}: endpoint {extra} ready but should not be"), pod);
            }
            for e in &endpoints {
                let pod = str_at(e, "/targetRef/name");
                if !pods_by_name.contains_key(pod) {
                    out.insert(format!("service {sname}: endpoint for deleted pod {pod}"), e.to_string());
                }
            }
        }
        out
    }

    /// Broken at any moment: shared ClusterIPs, terminating endpoints that
    /// claim to be ready.
    fn always(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut ips: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &self.services {
            let ip = str_at(s, "/spec/clusterIP");
            if ip.is_empty() || ip == "None" {
                continue;
            }
            if let Some(other) = ips.insert(ip, name(s)) {
                out.push(format!("services {other} and {} share ClusterIP {ip}", name(s)));
            }
        }
        for slice in &self.slices {
            for e in slice["endpoints"].as_array().into_iter().flatten() {
                if e["conditions"]["terminating"] == true && e["conditions"]["ready"] == true {
                    out.push(format!("slice {}: terminating endpoint is ready: {e}", name(slice)));
                }
            }
        }
        out
    }

    /// The converged state after the churn; Err with what is still off.
    fn converged(&self) -> Result<(), String> {
        let mut off = Vec::new();
        let uids: BTreeSet<&str> = self.deployments.iter().map(uid).collect();
        for d in &self.deployments {
            let (dname, duid) = (name(d), uid(d));
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
            let want_hash = template_hash(&d["spec"]["template"]);
            let live: Vec<&Value> = self.pods.iter().filter(|p| owner_uid(p) == duid && !terminating(p)).collect();
            if live.len() as u64 != replicas {
                off.push(format!("{dname}: {} live pods, want {replicas}", live.len()));
            }
            if let Some(p) = live.iter().find(|p| hash(p) != want_hash) {
                off.push(format!("{dname}: pod {} of template {}, want {want_hash}", name(p), hash(p)));
            }
            if let Some(p) = live.iter().find(|p| !ready(p)) {
                off.push(format!("{dname}: pod {} not ready", name(p)));
            }
            let st = &d["status"];
            for field in ["replicas", "readyReplicas", "updatedReplicas", "availableReplicas"] {
                if st[field].as_u64().unwrap_or(0) != replicas {
                    off.push(format!("{dname}: status.{field} {}, want {replicas}", st[field]));
                }
            }
            if st["observedGeneration"] != d["metadata"]["generation"] {
                off.push(format!("{dname}: observedGeneration {} of {}", st["observedGeneration"], d["metadata"]));
            }
            let revisions: Vec<&Value> = self.revisions.iter().filter(|r| owner_uid(r) == duid).collect();
            let max = revisions.iter().filter_map(|r| r["revision"].as_i64()).max().unwrap_or(0);
            let annotation = str_at(d, &format!("/metadata/annotations/{}", REVISION_ANNOTATION.replace('/', "~1")));
            if annotation != max.to_string() {
                off.push(format!("{dname}: revision annotation {annotation:?}, max revision {max}"));
            }
            let current = revisions.iter().find(|r| name(r) == format!("{dname}-{want_hash}"));
            if current.and_then(|r| r["revision"].as_i64()) != Some(max) {
                off.push(format!("{dname}: the current template's revision is not the newest ({max})"));
            }
        }
        for p in &self.pods {
            if !uids.contains(owner_uid(p)) {
                off.push(format!("pod {} owned by missing deployment {}", name(p), owner_uid(p)));
            }
        }
        for r in &self.revisions {
            if !uids.contains(owner_uid(r)) {
                off.push(format!("revision {} owned by missing deployment {}", name(r), owner_uid(r)));
            }
        }
        for n in &self.nodes {
            if !ready(n) {
                off.push(format!("node {} not Ready", name(n)));
            }
        }
        off.extend(self.eventual().into_keys());
        off.extend(self.always());
        if off.is_empty() { Ok(()) } else { Err(off.join("\n  ")) }
    }
}

/// Whether `berth serve` still runs (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Server log lines that betray a 5xx or a failing controller pass.
const BAD_LOG: [&str; 4] = ["store failure", "internal error", "controller pass failed", "controller pass panicked"];

// ---------------------------------------------------------------------------
// The actions.

struct Churn {
    api: Api,
    config_file: PathBuf,
    join: Config,
    rng: Rng,
    /// Per node: its agent, None while the node is lost.
    agents: Vec<Option<SimAgent>>,
    lost_at: Vec<Option<Instant>>,
    names: Vec<String>,
}

impl Churn {
    fn note(&self, what: String) {
        lock(&self.api.state).action(what);
    }

    async fn cli(&self, args: &[&str]) -> Output {
        let config = self.config_file.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(BERTH).env("BERTH_CLIENT_CONFIG", config).args(&args).output().expect("run berth")
        })
        .await
        .unwrap()
    }

    async fn create_deployment(&mut self, dname: &str, replicas: u32) {
        let strategy = lock(&self.api.state).deployments[dname].strategy;
        let image = IMAGES[self.rng.below(IMAGES.len())];
        let body = deployment_object(dname, replicas, image, strategy);
        match self.api.call(Method::POST, DEPLOYMENTS, Some(&body)).await {
            Ok(d) => {
                let mut s = lock(&self.api.state);
                let t = s.deployments.get_mut(dname).unwrap();
                t.uid = Some(uid(&d).to_owned());
                t.replicas = replicas;
                t.armed = true;
                s.action(format!("created deployment {dname} uid={} replicas={replicas} image={image}", uid(&d)));
            }
            Err(e) => self.note(format!("create deployment {dname}: {e}")),
        }
    }

    async fn create_service(&self, dname: &str) {
        match self.api.call(Method::POST, SERVICES, Some(&service_object(dname))).await {
            Ok(s) => self.note(format!("created service {} clusterIP={}", name(&s), str_at(&s, "/spec/clusterIP"))),
            Err(e) => self.note(format!("create service for {dname}: {e}")),
        }
    }

    /// Read-modify-write of a Deployment's spec, retried on conflicts.
    async fn edit(&self, dname: &str, change: impl Fn(&mut Value)) -> Result<Value, ClientError> {
        let path = format!("{DEPLOYMENTS}/{dname}");
        let mut last = None;
        for _ in 0..10 {
            let mut d = self.api.call(Method::GET, &path, None).await?;
            change(&mut d);
            match self.api.call(Method::PUT, &path, Some(&d)).await {
                Err(e @ ClientError::Status { code: 409, .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap())
    }

    async fn scale(&mut self, dname: &str) {
        let replicas = u32::try_from(self.rng.range(0, 5)).unwrap();
        {
            let mut s = lock(&self.api.state);
            let t = s.deployments.get_mut(dname).unwrap();
            t.armed = false;
            t.disarmed_rv = u64::MAX;
        }
        let result = self.edit(dname, |d| d["spec"]["replicas"] = json!(replicas)).await;
        let mut s = lock(&self.api.state);
        let t = s.deployments.get_mut(dname).unwrap();
        t.disarmed_at = Instant::now();
        match result {
            Ok(d) => {
                t.replicas = replicas;
                t.disarmed_rv = rv(&d);
                s.action(format!("scaled {dname} to {replicas} (rv {})", rv(&d)));
            }
            Err(e) => {
                t.disarmed_rv = 0;
                s.action(format!("scale {dname} to {replicas}: {e}"));
            }
        }
    }

    async fn set_image(&mut self, dname: &str) {
        let image = IMAGES[self.rng.below(IMAGES.len())];
        let result = self.edit(dname, |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)).await;
        match result {
            Ok(d) => {
                self.note(format!("set image of {dname} to {image} (hash {})", template_hash(&d["spec"]["template"])))
            }
            Err(e) => self.note(format!("set image of {dname} to {image}: {e}")),
        }
    }

    async fn undo(&mut self, dname: &str) {
        if self.rng.below(2) == 0 {
            let out = self.cli(&["rollout", "undo", &format!("deployment/{dname}")]).await;
            let said = text(&out);
            if said.contains("50") && said.contains("Internal") {
                lock(&self.api.state).violation(format!("rollout undo {dname}: {said}"));
            }
            self.note(format!("rollout undo {dname} (CLI): {:?} {}", out.status.code(), said.trim()));
            return;
        }
        // By hand: a random revision's template copied back.
        let Some(d) = self.api.call(Method::GET, &format!("{DEPLOYMENTS}/{dname}"), None).await.ok() else {
            self.note(format!("undo {dname} by hand: no deployment"));
            return;
        };
        let Some(revisions) = self.api.list(REVISIONS).await else { return };
        let mine: Vec<&Value> = revisions.iter().filter(|r| owner_uid(r) == uid(&d)).collect();
        if mine.is_empty() {
            self.note(format!("undo {dname} by hand: no revisions"));
            return;
        }
        let r = mine[self.rng.below(mine.len())];
        let mut edited = d.clone();
        edited["spec"]["template"] = r["data"]["spec"]["template"].clone();
        let result = self.api.call(Method::PUT, &format!("{DEPLOYMENTS}/{dname}"), Some(&edited)).await;
        self.note(format!(
            "undo {dname} by hand to {} (revision {}): {}",
            name(r),
            r["revision"],
            result.map_or_else(|e| e.to_string(), |_| "ok".into())
        ));
    }

    async fn delete_pod(&mut self) {
        let Some(pods) = self.api.list(PODS).await else { return };
        let candidates: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
        if candidates.is_empty() {
            return;
        }
        let p = candidates[self.rng.below(candidates.len())];
        let result = self.api.call(Method::DELETE, &format!("{PODS}/{}", name(p)), None).await;
        self.note(format!(
            "deleted pod {} on {:?}: {}",
            name(p),
            node(p),
            result.map_or_else(|e| e.to_string(), |p| format!("terminating={}", terminating(&p)))
        ));
    }

    async fn recreate_deployment(&mut self, dname: &str) {
        {
            let mut s = lock(&self.api.state);
            s.deployments.get_mut(dname).unwrap().uid = None;
        }
        let result = self.api.call(Method::DELETE, &format!("{DEPLOYMENTS}/{dname}"), None).await;
        self.note(format!("deleted deployment {dname}: {}", result.map_or_else(|e| e.to_string(), |_| "ok".into())));
        tokio::time::sleep(Duration::from_millis(self.rng.range(0, 400))).await;
        let replicas = u32::try_from(self.rng.range(1, 5)).unwrap();
        self.create_deployment(dname, replicas).await;
    }

    async fn recreate_service(&mut self, dname: &str) {
        let sname = service_name(dname);
        let result = self.api.call(Method::DELETE, &format!("{SERVICES}/{sname}"), None).await;
        self.note(format!("deleted service {sname}: {}", result.map_or_else(|e| e.to_string(), |_| "ok".into())));
        tokio::time::sleep(Duration::from_millis(self.rng.range(0, 300))).await;
        self.create_service(dname).await;
    }

    async fn lose_node(&mut self) {
        let up: Vec<usize> = (0..self.agents.len()).filter(|i| self.agents[*i].is_some()).collect();
        if up.len() <= 1 {
            return;
        }
        let i = up[self.rng.below(up.len())];
        let mut agent = self.agents[i].take().unwrap();
        agent.stop().await;
        self.lost_at[i] = Some(Instant::now());
        self.note(format!("lost node {}", NODE_NAMES[i]));
    }

    async fn return_node(&mut self, min_down: Duration) {
        let down: Vec<usize> =
            (0..self.agents.len()).filter(|i| self.lost_at[*i].is_some_and(|t| t.elapsed() >= min_down)).collect();
        if down.is_empty() {
            return;
        }
        let i = down[self.rng.below(down.len())];
        self.start_agent(i).await;
        let down_for = self.lost_at[i].take().map(|t| t.elapsed());
        self.note(format!("node {} back after {down_for:?}", NODE_NAMES[i]));
    }

    async fn start_agent(&mut self, i: usize) {
        self.agents[i] = Some(SimAgent::start(&self.join, &[NODE_NAMES[i]], AgentOptions::default()).await);
    }

    async fn step(&mut self) {
        let dname = self.names[self.rng.below(self.names.len())].clone();
        let exists = lock(&self.api.state).deployments[&dname].uid.is_some();
        match self.rng.below(100) {
            0..25 if exists => self.scale(&dname).await,
            25..45 if exists => self.set_image(&dname).await,
            45..55 if exists => self.undo(&dname).await,
            55..70 => self.delete_pod().await,
            70..76 => self.recreate_deployment(&dname).await,
            76..83 => self.lose_node().await,
            83..92 => {
                let min_down = Duration::from_millis(self.rng.range(500, 5000));
                self.return_node(min_down).await;
            }
            92..100 => self.recreate_service(&dname).await,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    v.strip_prefix("0x").map_or_else(|| v.parse().ok(), |hex| u64::from_str_radix(hex, 16).ok())
}

#[test]
fn random_churn_keeps_the_invariants() {
    let seed = env_u64("BERTH_SOAK_SEED").unwrap_or(DEFAULT_SEED);
    let seconds = env_u64("BERTH_SOAK_SECONDS").unwrap_or(DEFAULT_SECONDS);
    eprintln!(
        "soak: BERTH_SOAK_SEED={seed} BERTH_SOAK_SECONDS={seconds} (t=0 at {})",
        common::sim_agent::now_rfc3339()
    );
    common::run(soak(seed, Duration::from_secs(seconds)));
}

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn soak(seed: u64, churn_for: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        &dir.path().join("data"),
        free_port(),
        &["--controller-period-ms", "50", "--node-grace-seconds", "2", "--pod-eviction-seconds", "2"],
    );
    let config = serve.admin_config();
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let state: State = Arc::new(Mutex::new(Shared {
        start: Instant::now(),
        violations: Vec::new(),
        actions: Vec::new(),
        deployments: BTreeMap::new(),
        bindings: HashMap::new(),
        events: 0,
        snapshots: 0,
    }));
    let api = Api { client: Arc::new(ApiClient::new(config.clone()).unwrap()), state: Arc::clone(&state) };
    let mut rng = Rng(seed);

    // The Deployments: one Recreate, one or two RollingUpdate.
    let rolling = [
        Strategy::Rolling { surge: Amount::Int(1), unavailable: Amount::Int(0) },
        Strategy::Rolling { surge: Amount::Int(0), unavailable: Amount::Int(1) },
        Strategy::Rolling { surge: Amount::Percent(50), unavailable: Amount::Percent(25) },
        Strategy::Rolling { surge: Amount::Int(2), unavailable: Amount::Percent(50) },
        Strategy::Rolling { surge: Amount::Percent(25), unavailable: Amount::Percent(25) },
    ];
    let mut strategies = vec![Strategy::Recreate, rolling[rng.below(rolling.len())]];
    if rng.below(2) == 0 {
        strategies.push(rolling[rng.below(rolling.len())]);
    }
    let names: Vec<String> =
        ["alpha", "beta", "gamma"].iter().take(strategies.len()).map(|n| (*n).to_owned()).collect();
    for (n, s) in names.iter().zip(&strategies) {
        lock(&state).deployments.insert(
            n.clone(),
            Tracked {
                strategy: *s,
                uid: None,
                replicas: 0,
                armed: true,
                disarmed_rv: 0,
                disarmed_at: Instant::now(),
                peak: 0,
            },
        );
    }
    eprintln!("soak: deployments {:?}", names.iter().zip(&strategies).collect::<Vec<_>>());

    let mut churn = Churn {
        api: api.clone(),
        config_file,
        join: serve.join_config(),
        rng: Rng(seed ^ 0xa5a5_a5a5),
        agents: Vec::new(),
        lost_at: vec![None; NODE_NAMES.len()],
        names: names.clone(),
    };
    for i in 0..NODE_NAMES.len() {
        churn.agents.push(None);
        churn.start_agent(i).await;
    }

    // The watcher, from before the first Deployment.
    let mut watch = PodWatch::open(&config, &api).await;
    let watcher = {
        let (api, state) = (api.clone(), Arc::clone(&state));
        tokio::spawn(async move {
            loop {
                if let Some(event) = watch.next(&api).await {
                    check_event(&mut lock(&state), &watch.live, &event);
                }
            }
        })
    };
    // The lister: every 300 ms, always-invariants at once, eventual ones
    // once they lasted.
    let lister = {
        let (api, state, pid) = (api.clone(), Arc::clone(&state), serve.pid());
        tokio::spawn(async move {
            let mut since: BTreeMap<String, (Instant, bool)> = BTreeMap::new();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if !alive(pid) {
                    lock(&state).violation("berth serve exited".into());
                    return;
                }
                let Some(snap) = Snapshot::take(&api).await else { continue };
                let now = Instant::now();
                let current = snap.eventual();
                since.retain(|k, _| current.contains_key(k));
                let mut s = lock(&state);
                s.snapshots += 1;
                for v in snap.always() {
                    s.violation(format!("{v}; state:{}", snap.describe()));
                }
                for (k, detail) in current {
                    let entry = since.entry(k.clone()).or_insert((now, false));
                    if !entry.1 && now.duration_since(entry.0) >= PERSIST {
                        entry.1 = true;
                        s.violation(format!("for {PERSIST:?}: {k}{detail}; state:{}", snap.describe()));
                    }
                }
            }
        })
    };

    // Setup: Deployments and Services.
    for n in &names {
        let replicas = u32::try_from(rng.range(1, 5)).unwrap();
        churn.create_deployment(n, replicas).await;
        churn.create_service(n).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The churn.
    let started = Instant::now();
    let mut steps = 0u32;
    while started.elapsed() < churn_for {
        churn.step().await;
        steps += 1;
        tokio::time::sleep(Duration::from_millis(churn.rng.range(100, 300))).await;
    }
    churn.note(format!("churn over after {steps} actions; bringing every node back"));

    // Quiesce: every node back, missing objects re-created, then
    // convergence within 15 s.
    for i in 0..NODE_NAMES.len() {
        if churn.agents[i].is_none() {
            churn.start_agent(i).await;
            churn.lost_at[i] = None;
        }
    }
    let quiesced = Instant::now();
    let mut last = String::new();
    let mut converged_after = None;
    while quiesced.elapsed() < Duration::from_secs(15) {
        if let Some(snap) = Snapshot::take(&api).await {
            match snap.converged() {
                Ok(()) => {
                    converged_after = Some(quiesced.elapsed());
                    break;
                }
                Err(off) => last = format!("{off}\nstate:{}", snap.describe()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match converged_after {
        Some(after) => churn.note(format!("converged {after:?} after the churn")),
        None => lock(&state).violation(format!("not converged within 15 s of the churn: {last}")),
    }
    // Converged stays converged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if converged_after.is_some()
        && let Some(snap) = Snapshot::take(&api).await
        && let Err(off) = snap.converged()
    {
        lock(&state).violation(format!("converged, then not: {off}\nstate:{}", snap.describe()));
    }
    watcher.abort();
    lister.abort();
    let _ = watcher.await;
    let _ = lister.await;
    if !alive(serve.pid()) {
        lock(&state).violation("berth serve exited".into());
    }
    for needle in BAD_LOG {
        if serve.logged(needle) {
            lock(&state).violation(format!("berth serve logged {needle:?} (see its output above)"));
        }
    }

    let s = lock(&state);
    let peaks: Vec<String> = s.deployments.iter().map(|(n, t)| format!("{n}: peak {} live", t.peak)).collect();
    eprintln!(
        "soak: seed {seed}: {steps} actions in {:?}, {} pod events, {} snapshots, {peaks:?}, {} violations",
        churn_for,
        s.events,
        s.snapshots,
        s.violations.len()
    );
    if !s.violations.is_empty() {
        panic!(
            "BERTH_SOAK_SEED={seed}: {} invariant violations:\n{}\n\nactions:\n{}",
            s.violations.len(),
            s.violations.join("\n"),
            s.actions.join("\n")
        );
    }
}
