//! Simulated node agents that play kubelets through the real API: they
//! register Nodes, renew their heartbeats, run the pods bound to them (on
//! paper: a status with an IP, readiness after a delay) and finish graceful
//! deletions with kubelet's final `gracePeriodSeconds: 0` delete.
//!
//! # Design
//! Each node joins as a real agent does: `POST /bootstrap/v1/join` with the
//! server's bootstrap token, then every call for that node is made with the
//! client certificate it got back. So the tests run under the Node
//! authorizer and NodeRestriction: a node writes its own Node and the
//! status of its own pods, and deletes only those pods.
//!
//! One agent is two tokio tasks, a heartbeat loop and a pod loop, each on
//! its own timer, so a test can make nodes and pods as fast or as slow as
//! it needs. Every write is a read-modify-write of the object just read: a
//! 404 or 409 means another writer (the controllers, a user) won a race, and
//! the next round starts again from a fresh read, as kubelet does.
//! [`SimAgent::stop`] ends both tasks at once: the node dies silently.
//!
//! # Limitations
//! Nothing runs: a pod's IP is a string from an address range of the agent
//! (198.18.(100 + agent).0/24), and readiness is a timer. Pods never fail
//! or restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_control::client::{ApiClient, ClientError, Config};
use hyper::Method;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// An image name containing this never becomes ready (a stalled rollout).
pub const NEVER_READY: &str = "never-ready";

/// Numbers agents (and so their address ranges) within the test process.
static AGENTS: AtomicU8 = AtomicU8::new(0);

/// An agent's timers.
#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    /// How often the pods are listed and brought up to date.
    pub tick: Duration,
    /// How often every node's `lastHeartbeatTime` is renewed.
    pub heartbeat: Duration,
    /// From first sight of a pod to its `Ready=True`.
    pub ready_after: Duration,
    /// From first sight of a pod's `deletionTimestamp` to the final delete.
    pub terminate_after: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(50),
            heartbeat: Duration::from_millis(300),
            ready_after: Duration::from_millis(200),
            terminate_after: Duration::from_millis(300),
        }
    }
}

/// What an agent did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The Node was created.
    Registered { node: String },
    /// The pod was reported Running (not ready yet, unless `ready_after` is 0).
    Started { pod: String, node: String, ip: String },
    /// The pod was reported Ready.
    Ready { pod: String },
    /// The final delete of a terminating pod was accepted.
    Deleted { pod: String },
}

/// Joins as `node` through `bootstrap` (the server, its CA and a bootstrap
/// token): a key made here, its signing request signed by the server.
/// Returns a client that authenticates with the node's certificate (the
/// PEM files live in `dir`).
///
/// # Panics
/// When the server refuses the join.
pub async fn join(bootstrap: &Config, node: &str, dir: &std::path::Path) -> ApiClient {
    let joined =
        berth_control::client::join(bootstrap, node).await.unwrap_or_else(|e| panic!("joining as node {node}: {e}"));
    let (cert, key) = (dir.join(format!("{node}.crt")), dir.join(format!("{node}.key")));
    std::fs::write(&cert, &joined.cert_pem).expect("write the node certificate");
    std::fs::write(&key, &joined.key_pem).expect("write the node key");
    let config = Config {
        token: None,
        cert_file: Some(cert.display().to_string()),
        key_file: Some(key.display().to_string()),
        ..bootstrap.clone()
    };
    ApiClient::new(config).expect("a node client")
}

/// A simulated agent for one or more nodes; its tasks end when it is
/// stopped or dropped.
pub struct SimAgent {
    nodes: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
    record: Arc<Mutex<Vec<Action>>>,
}

/// What the agent remembers of a pod it runs.
struct Running {
    ip: String,
    /// When the agent first saw it bound here.
    seen: Instant,
    start_time: String,
    /// When the agent first saw its `deletionTimestamp`.
    terminating: Option<Instant>,
}

struct Agent {
    /// Node name → a client with that node's certificate.
    clients: HashMap<String, ApiClient>,
    name: String,
    /// Node name → its InternalIP.
    nodes: HashMap<String, String>,
    options: AgentOptions,
    record: Arc<Mutex<Vec<Action>>>,
    pods: HashMap<String, Running>,
    pod_subnet: u8,
    next_ip: u8,
}

/// Now, to the second, as Kubernetes writes times (`2026-11-23T10:00:00Z`).
pub fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH).to_string()
}

fn is_race(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { code: 404 | 409, .. })
}

fn condition_true(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

impl SimAgent {
    /// Registers `nodes` (Ready, 4 CPUs, 8Gi, 110 pods) and starts the
    /// agent's loops.
    ///
    /// # Panics
    /// When a Node cannot be registered.
    /// `bootstrap` carries the server, its CA and a bootstrap token.
    pub async fn start(bootstrap: &Config, nodes: &[&str], options: AgentOptions) -> SimAgent {
        let number = AGENTS.fetch_add(1, Ordering::Relaxed) % 100 + 1;
        let record = Arc::new(Mutex::new(Vec::new()));
        let node_ips: HashMap<String, String> =
            nodes.iter().enumerate().map(|(i, n)| ((*n).to_owned(), format!("198.18.{number}.{}", i + 1))).collect();
        // The clients hold the certificates once made; the files can go.
        let pem_dir = tempfile::tempdir().expect("a directory for node certificates");
        let mut clients = HashMap::new();
        for node in nodes {
            clients.insert((*node).to_owned(), join(bootstrap, node, pem_dir.path()).await);
        }
        for node in nodes {
            let body = node_object(node, &node_ips[*node]);
            match clients[*node].json(Method::POST, "/api/v1/nodes", Some(&body)).await {
                Ok(_) => {}
                // Registered before (a restarted agent): the heartbeat
                // brings the node back.
                Err(ClientError::Status { code: 409, .. }) => {}
                Err(e) => panic!("registering node {node}: {e}"),
            }
            record.lock().unwrap_or_else(PoisonError::into_inner).push(Action::Registered { node: (*node).to_owned() });
        }
        let name = nodes.join(",");
        let heartbeat = {
            let (clients, every, name) = (clients.clone(), options.heartbeat, name.clone());
            tokio::spawn(async move {
                let mut timer = tokio::time::interval(every);
                timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    timer.tick().await;
                    for (node, client) in &clients {
                        if let Err(e) = heartbeat(client, node).await
                            && !is_race(&e)
                        {
                            eprintln!("[agent {name}] heartbeat of {node}: {e}");
                        }
                    }
                }
            })
        };
        let mut agent = Agent {
            clients,
            name,
            nodes: node_ips,
            options,
            record: Arc::clone(&record),
            pods: HashMap::new(),
            pod_subnet: 100 + number,
            next_ip: 0,
        };
        let pods = tokio::spawn(async move {
            let mut timer = tokio::time::interval(agent.options.tick);
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                if let Err(e) = agent.sync_pods().await {
                    eprintln!("[agent {}] listing pods: {e}", agent.name);
                }
            }
        });
        SimAgent { nodes: nodes.iter().map(|n| (*n).to_owned()).collect(), tasks: vec![heartbeat, pods], record }
    }

    /// The nodes this agent plays.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// What it did so far.
    pub fn record(&self) -> Vec<Action> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether this agent made the final delete of `pod`.
    pub fn deleted(&self, pod: &str) -> bool {
        self.record().iter().any(|a| matches!(a, Action::Deleted { pod: p } if p == pod))
    }

    /// The node dies silently: no more heartbeats, no more pod updates.
    /// Returns once nothing of the agent runs any more.
    pub async fn stop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn node_object(name: &str, ip: &str) -> Value {
    let now = now_rfc3339();
    let resources = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [ready_condition(&now)],
        },
    })
}

/// The node's `Ready=True` condition, heartbeat and transition at `now`.
fn ready_condition(now: &str) -> Value {
    json!({
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "the simulated agent is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    })
}

/// Renews the node's `lastHeartbeatTime`; the agent considers its node
/// ready, so it reports `Ready=True` (transition now, if it was not).
async fn heartbeat(client: &ApiClient, node: &str) -> Result<(), ClientError> {
    let path = format!("/api/v1/nodes/{node}");
    let mut object = client.json(Method::GET, &path, None).await?;
    let now = now_rfc3339();
    let mut ready = ready_condition(&now);
    let status = object.as_object_mut().expect("a node object").entry("status").or_insert_with(|| json!({}));
    let conditions = status.as_object_mut().expect("a node status").entry("conditions").or_insert_with(|| json!([]));
    let list = conditions.as_array_mut().expect("node conditions");
    match list.iter_mut().find(|c| c["type"] == "Ready") {
        Some(c) => {
            if c["status"] == "True" {
                ready["lastTransitionTime"] = c["lastTransitionTime"].clone();
            }
            *c = ready;
        }
        None => list.push(ready),
    }
    client.json(Method::PUT, &path, Some(&object)).await.map(drop)
}

impl Agent {
    fn note(&self, action: Action) {
        self.record.lock().unwrap_or_else(PoisonError::into_inner).push(action);
    }

    fn allocate_ip(&mut self) -> String {
        self.next_ip = self.next_ip % 254 + 1;
        format!("198.18.{}.{}", self.pod_subnet, self.next_ip)
    }

    /// One round over the pods bound to the agent's nodes.
    async fn sync_pods(&mut self) -> Result<(), ClientError> {
        // Any of its nodes may read every pod.
        let reader = self.clients.values().next().expect("an agent plays at least one node");
        let list = reader.json(Method::GET, "/api/v1/pods", None).await?;
        let mut seen = BTreeSet::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            let node = str_at(pod, "/spec/nodeName");
            if !self.nodes.contains_key(node) || matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed") {
                continue;
            }
            let uid = str_at(pod, "/metadata/uid").to_owned();
            seen.insert(uid.clone());
            if !self.pods.contains_key(&uid) {
                let ip = match str_at(pod, "/status/podIP") {
                    "" => self.allocate_ip(),
                    ip => ip.to_owned(),
                };
                let running = Running { ip, seen: Instant::now(), start_time: now_rfc3339(), terminating: None };
                self.pods.insert(uid.clone(), running);
            }
            if let Err(e) = self.sync_pod(pod, &uid).await
                && !is_race(&e)
            {
                eprintln!("[agent {}] pod {}: {e}", self.name, str_at(pod, "/metadata/name"));
            }
        }
        self.pods.retain(|uid, _| seen.contains(uid));
        Ok(())
    }

    async fn sync_pod(&mut self, pod: &Value, uid: &str) -> Result<(), ClientError> {
        let (ns, name, node) =
            (str_at(pod, "/metadata/namespace"), str_at(pod, "/metadata/name"), str_at(pod, "/spec/nodeName"));
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let terminating = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
        let running = self.pods.get_mut(uid).expect("inserted by the caller");
        let client = &self.clients[node];
        if terminating {
            let since = *running.terminating.get_or_insert_with(Instant::now);
            if since.elapsed() < self.options.terminate_after {
                return Ok(());
            }
            // The containers stopped: not ready any more (best effort, the
            // delete below is what matters), then kubelet's final delete.
            if condition_true(pod, "Ready") {
                let mut object = pod.clone();
                object["status"] = pod_status(pod, running, &self.nodes[node], false);
                let _ = client.json(Method::PUT, &path, Some(&object)).await;
            }
            let options = json!({
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid},
            });
            client.json(Method::DELETE, &path, Some(&options)).await?;
            self.note(Action::Deleted { pod: name.to_owned() });
            return Ok(());
        }
        let image = str_at(pod, "/spec/containers/0/image");
        let ready = !image.contains(NEVER_READY) && running.seen.elapsed() >= self.options.ready_after;
        let is_running = str_at(pod, "/status/phase") == "Running";
        if is_running && condition_true(pod, "Ready") == ready {
            return Ok(());
        }
        let mut object = pod.clone();
        object["status"] = pod_status(pod, running, &self.nodes[node], ready);
        let ip = running.ip.clone();
        client.json(Method::PUT, &path, Some(&object)).await?;
        if !is_running {
            self.note(Action::Started { pod: name.to_owned(), node: node.to_owned(), ip });
        }
        if ready {
            self.note(Action::Ready { pod: name.to_owned() });
        }
        Ok(())
    }
}

/// A running pod's status as kubelet reports it.
fn pod_status(pod: &Value, running: &Running, host_ip: &str, ready: bool) -> Value {
    let now = now_rfc3339();
    let flag = if ready { "True" } else { "False" };
    let started = &running.start_time;
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": format!("sim://{}", str_at(c, "/image")),
                "containerID": format!("sim://{}/{}", str_at(pod, "/metadata/uid"), str_at(c, "/name")),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "podIP": running.ip,
        "podIPs": [{"ip": running.ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    })
}
