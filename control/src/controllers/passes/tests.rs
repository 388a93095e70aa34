//! The endpoints and node lifecycle passes against a [`MemStore`] with the
//! real admission, together with the Deployment and scheduler passes of
//! [`super::super::loops`] and a simulated agent.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{LEASE_EXPIRED, MANAGED_BY, PassSummary, READY_REASON, reconcile_endpoints, reconcile_nodes};
use crate::api::admission::{Admission, KindInfo};
use crate::controllers::gc::{GcSummary, collect_garbage};
use crate::controllers::loops::{reconcile_deployments, schedule_pending};
use crate::controllers::node_lifecycle::LifecycleConfig;
use crate::controllers::test_support::RacingStore;
use crate::resources::{
    DEPLOYMENT, ENDPOINT_SLICE, NODE, POD, Resources, ResourcesConfig, SERVICE, store_key, store_prefix,
};
use crate::store::{MemStore, Op, Store, StoreOptions};

/// A whole second, so stored (second-resolution) times are exact.
const T0: u64 = 1_700_000_000_000;

fn rfc3339(ms: u64) -> String {
    Timestamp::from_millisecond(i64::try_from(ms).unwrap()).unwrap().to_string()
}

fn config() -> LifecycleConfig {
    LifecycleConfig { grace: Duration::from_secs(1), toleration: Duration::from_secs(2) }
}

struct Cluster {
    store: MemStore,
    admission: Resources,
    next_ip: u8,
}

fn node(name: &str, heartbeat_ms: u64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": rfc3339(T0)},
        "status": {
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "lastHeartbeatTime": rfc3339(heartbeat_ms),
                "lastTransitionTime": rfc3339(T0),
            }],
        }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"berth.dev/weight": "2"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }]}
            }
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    })
}

impl Cluster {
    /// Three Ready nodes with a heartbeat at `T0`.
    fn new() -> Cluster {
        let cluster = Cluster {
            store: MemStore::new(StoreOptions::default()),
            admission: Resources::new(ResourcesConfig::default()),
            next_ip: 10,
        };
        for name in ["node-a", "node-b", "node-c"] {
            let bytes = serde_json::to_vec(&node(name, T0)).unwrap();
            cluster.store.create(&store_key(&NODE, None, name), &bytes).unwrap();
        }
        cluster
    }

    fn create(&self, kind: &KindInfo, mut object: Value) {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let ops = self.admission.admit(kind, &mut object, None, &self.store).unwrap();
        let mut txn = vec![Op::Create {
            key: store_key(kind, Some("default"), &name),
            value: serde_json::to_vec(&object).unwrap(),
        }];
        txn.extend(ops);
        self.store.txn(&txn).unwrap();
    }

    /// Changes a stored object directly (as an agent writes status).
    fn modify(&self, key: &str, change: impl FnOnce(&mut Value)) {
        let stored = self.store.get(key).unwrap().unwrap();
        let mut object: Value = serde_json::from_slice(&stored.value).unwrap();
        change(&mut object);
        self.store.update(key, &serde_json::to_vec(&object).unwrap(), Some(stored.revision)).unwrap();
    }

    /// The agent of `name` renews its heartbeat.
    fn heartbeat(&self, name: &str, at_ms: u64) {
        self.modify(&store_key(&NODE, None, name), |n| {
            n["status"]["conditions"][0]["lastHeartbeatTime"] = json!(rfc3339(at_ms));
        });
    }

    fn node(&self, name: &str) -> Value {
        serde_json::from_slice(&self.store.get(&store_key(&NODE, None, name)).unwrap().unwrap().value).unwrap()
    }

    fn pods(&self) -> Vec<(String, Value)> {
        let (items, _) = self.store.list(&store_prefix(&POD, None)).unwrap();
        items.into_iter().map(|(k, v)| (k, serde_json::from_slice(&v.value).unwrap())).collect()
    }

    fn slice(&self, name: &str) -> Option<Value> {
        let stored = self.store.get(&store_key(&ENDPOINT_SLICE, Some("default"), name)).unwrap()?;
        Some(serde_json::from_slice(&stored.value).unwrap())
    }

    fn slice_count(&self) -> usize {
        self.store.list(&store_prefix(&ENDPOINT_SLICE, None)).unwrap().0.len()
    }

    /// The simulated agent: every bound pod not yet running gets an IP and
    /// becomes Running and Ready.
    fn agent(&mut self) -> usize {
        let mut started = 0;
        for (key, pod) in self.pods() {
            if pod["spec"]["nodeName"].is_null() || pod["status"]["phase"] == "Running" {
                continue;
            }
            self.next_ip += 1;
            let ip = format!("198.18.0.{}", self.next_ip);
            self.modify(&key, |pod| {
                let status = pod["status"].as_object_mut().unwrap();
                status.insert("phase".to_owned(), json!("Running"));
                status.insert("podIP".to_owned(), json!(ip));
                let conditions = status.entry("conditions").or_insert_with(|| json!([]));
                conditions.as_array_mut().unwrap().push(json!({"type": "Ready", "status": "True"}));
            });
            started += 1;
        }
        started
    }

    /// Deployment pass, scheduler pass, agent.
    fn converge(&mut self, now_ms: u64) {
        reconcile_deployments(&self.store, &self.admission, now_ms).unwrap();
        schedule_pending(&self.store, now_ms).unwrap();
        self.agent();
        reconcile_deployments(&self.store, &self.admission, now_ms).unwrap();
    }
}

/// (pod name, node, ready, serving, terminating) of each endpoint.
fn conditions(slice: &Value) -> Vec<(String, String, bool, bool, bool)> {
    slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let c = &e["conditions"];
            (
                e["targetRef"]["name"].as_str().unwrap().to_owned(),
                e["nodeName"].as_str().unwrap().to_owned(),
                c["ready"].as_bool().unwrap(),
                c["serving"].as_bool().unwrap(),
                c["terminating"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A Deployment of 3 running pods, one per node, a Service selecting them,
/// and its slice.
fn serving() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.create(&DEPLOYMENT, deployment());
    cluster.create(&SERVICE, service());
    cluster.converge(T0);
    assert_eq!(cluster.pods().len(), 3);
    let summary = reconcile_endpoints(&cluster.store, T0).unwrap();
    assert_eq!(summary, PassSummary { created: 1, ..PassSummary::default() });
    cluster
}

#[test]
fn ready_pods_become_ready_endpoints_with_the_named_port_resolved() {
    let cluster = serving();
    let slice = cluster.slice("web").unwrap();
    assert_eq!(slice["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(slice["kind"], "EndpointSlice");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "web");
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    let eps = conditions(&slice);
    assert_eq!(eps.len(), 3);
    assert!(eps.iter().all(|(_, _, ready, serving, terminating)| *ready && *serving && !*terminating), "{eps:?}");
    let nodes: BTreeSet<&str> = eps.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node-a", "node-b", "node-c"]));
    let pods = cluster.pods();
    for e in slice["endpoints"].as_array().unwrap() {
        let (_, pod) = pods.iter().find(|(_, p)| p["metadata"]["name"] == e["targetRef"]["name"]).unwrap();
        assert_eq!(e["addresses"], json!([pod["status"]["podIP"]]));
        assert_eq!(e["targetRef"]["uid"], pod["metadata"]["uid"]);
        assert_eq!(e["targetRef"]["kind"], "Pod");
    }
    let weights: Value =
        serde_json::from_str(slice["metadata"]["annotations"]["berth.dev/weights"].as_str().unwrap()).unwrap();
    assert_eq!(weights.as_object().unwrap().len(), 3);
    assert!(weights.as_object().unwrap().values().all(|w| w == 2));
    // Steady state: nothing written.
    let revision = cluster.store.get(&store_key(&ENDPOINT_SLICE, Some("default"), "web")).unwrap().unwrap().revision;
    assert_eq!(reconcile_endpoints(&cluster.store, T0 + 1000).unwrap(), PassSummary::default());
    let after = cluster.store.get(&store_key(&ENDPOINT_SLICE, Some("default"), "web")).unwrap().unwrap().revision;
    assert_eq!(after, revision);
}

#[test]
fn an_unready_pod_is_neither_ready_nor_serving() {
    let cluster = serving();
    let (key, pod) = cluster.pods().remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    cluster.modify(&key, |p| {
        for c in p["status"]["conditions"].as_array_mut().unwrap() {
            if c["type"] == "Ready" {
                c["status"] = json!("False");
            }
        }
    });
    assert_eq!(reconcile_endpoints(&cluster.store, T0 + 1000).unwrap().updated, 1);
    let eps = conditions(&cluster.slice("web").unwrap());
    let flags: Vec<(bool, bool, bool)> = eps.iter().map(|e| (e.2, e.3, e.4)).collect();
    let mine = eps.iter().find(|e| e.0 == name).unwrap();
    assert_eq!((mine.2, mine.3, mine.4), (false, false, false), "{flags:?}");
    assert_eq!(eps.iter().filter(|e| e.2).count(), 2);
}

#[test]
fn a_terminating_ready_pod_serves_but_is_not_ready() {
    let cluster = serving();
    let (key, pod) = cluster.pods().remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    cluster.modify(&key, |p| p["metadata"]["deletionTimestamp"] = json!(rfc3339(T0 + 1000)));
    assert_eq!(reconcile_endpoints(&cluster.store, T0 + 1000).unwrap().updated, 1);
    let eps = conditions(&cluster.slice("web").unwrap());
    let mine = eps.iter().find(|e| e.0 == name).unwrap();
    assert_eq!((mine.2, mine.3, mine.4), (false, true, true), "{eps:?}");
}

#[test]
fn a_deleted_service_loses_its_slice() {
    let cluster = serving();
    cluster.store.delete(&store_key(&SERVICE, Some("default"), "web"), None).unwrap();
    let summary = reconcile_endpoints(&cluster.store, T0 + 1000).unwrap();
    assert_eq!(summary, PassSummary { deleted: 1, ..PassSummary::default() });
    assert!(cluster.slice("web").is_none());
    assert_eq!(cluster.slice_count(), 0);
    assert_eq!(reconcile_endpoints(&cluster.store, T0 + 2000).unwrap(), PassSummary::default());
}

#[test]
fn pods_naming_the_port_differently_get_their_own_slice() {
    let mut cluster = serving();
    let mut other = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "canary", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.28", "ports": [{"name": "http", "containerPort": 9090}]}]}
    });
    cluster.create(&POD, other.take());
    schedule_pending(&cluster.store, T0 + 1000).unwrap();
    cluster.agent();
    let summary = reconcile_endpoints(&cluster.store, T0 + 1000).unwrap();
    assert_eq!(cluster.slice_count(), 2, "{summary:?}");
    let first = cluster.slice("web").unwrap();
    let second = cluster.slice("web-1").unwrap();
    assert_eq!(first["ports"][0]["port"], 8080);
    assert_eq!(conditions(&first).len(), 3);
    assert_eq!(second["ports"][0]["port"], 9090);
    assert_eq!(second["metadata"]["labels"]["kubernetes.io/service-name"], "web");
    assert_eq!(conditions(&second)[0].0, "canary");
    // The canary goes: its slice goes with it.
    cluster.store.delete(&store_key(&POD, Some("default"), "canary"), None).unwrap();
    assert_eq!(reconcile_endpoints(&cluster.store, T0 + 2000).unwrap().deleted, 1);
    assert_eq!(cluster.slice_count(), 1);
}

#[test]
fn a_lost_node_goes_not_ready_its_pods_are_replaced_and_it_comes_back() {
    let mut cluster = serving();
    let config = config();
    let t = T0 + 10_000;
    // node-a and node-b renew; node-c's agent last renewed 2 s ago.
    cluster.heartbeat("node-a", t);
    cluster.heartbeat("node-b", t);
    cluster.heartbeat("node-c", t - 2000);
    let lost: Vec<String> = cluster
        .pods()
        .iter()
        .filter(|(_, p)| p["spec"]["nodeName"] == "node-c")
        .map(|(_, p)| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(lost.len(), 1);

    let summary = reconcile_nodes(&cluster.store, &config, t).unwrap();
    assert_eq!(summary, PassSummary { marked_not_ready: 1, ..PassSummary::default() });
    let ready = cluster.node("node-c")["status"]["conditions"][0].clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], LEASE_EXPIRED);
    assert_eq!(ready["lastTransitionTime"], rfc3339(t - 1000), "NotReady from the lease's expiry");
    assert_eq!(ready["lastHeartbeatTime"], rfc3339(t - 2000), "the agent's heartbeat is kept");
    assert_eq!(reconcile_nodes(&cluster.store, &config, t).unwrap(), PassSummary::default());

    // Its pod stops being a ready endpoint at once.
    assert_eq!(reconcile_endpoints(&cluster.store, t).unwrap().updated, 1);
    let eps = conditions(&cluster.slice("web").unwrap());
    let on_c = eps.iter().find(|e| e.1 == "node-c").unwrap();
    assert_eq!((on_c.2, on_c.3), (false, false), "{eps:?}");
    assert_eq!(eps.iter().filter(|e| e.2).count(), 2);

    // Within the toleration (NotReady for 1.5 s of 2 s): nothing evicted.
    cluster.heartbeat("node-a", t + 500);
    cluster.heartbeat("node-b", t + 500);
    assert_eq!(reconcile_nodes(&cluster.store, &config, t + 500).unwrap(), PassSummary::default());
    assert_eq!(cluster.pods().len(), 3);

    // After it: the pod on node-c is evicted.
    cluster.heartbeat("node-a", t + 1000);
    cluster.heartbeat("node-b", t + 1000);
    let summary = reconcile_nodes(&cluster.store, &config, t + 1000).unwrap();
    assert_eq!(summary, PassSummary { evicted: 1, ..PassSummary::default() });
    // Evicted gracefully: terminating, with the default 30 s grace.
    let pods = cluster.pods();
    let evicted = pods.iter().find(|(_, p)| p["metadata"]["name"] == lost[0].as_str()).unwrap();
    assert_eq!(evicted.1["metadata"]["deletionGracePeriodSeconds"], 30, "{}", evicted.1);
    assert_eq!(reconcile_nodes(&cluster.store, &config, t + 1000).unwrap(), PassSummary::default(), "evicted once");

    // The Deployment replaces it, the scheduler places it on a Ready node.
    cluster.converge(t + 1000);
    // No agent will finish node-c's pod: the garbage collector removes it
    // once its grace is over, not before.
    assert_eq!(collect_garbage(&cluster.store, t + 1000).unwrap(), GcSummary::default());
    let gc = collect_garbage(&cluster.store, t + 31_000).unwrap();
    assert_eq!(gc, GcSummary { force_deleted: 1, ..GcSummary::default() });
    assert!(cluster.pods().iter().all(|(_, p)| p["metadata"]["name"] != lost[0].as_str()));
    let pods = cluster.pods();
    assert_eq!(pods.len(), 3);
    for (_, pod) in &pods {
        assert_ne!(pod["spec"]["nodeName"], "node-c", "{pod}");
        assert_eq!(pod["status"]["phase"], "Running");
    }
    let status = serde_json::from_slice::<Value>(
        &cluster.store.get(&store_key(&DEPLOYMENT, Some("default"), "web")).unwrap().unwrap().value,
    )
    .unwrap()["status"]
        .clone();
    assert_eq!(status["readyReplicas"], 3, "{status}");

    // And the slice has three ready endpoints again, none on node-c.
    reconcile_endpoints(&cluster.store, t + 1000).unwrap();
    let eps = conditions(&cluster.slice("web").unwrap());
    assert_eq!(eps.len(), 3, "{eps:?}");
    assert!(eps.iter().all(|e| e.2 && e.3 && !e.4 && e.1 != "node-c"), "{eps:?}");

    // node-c's agent comes back: Ready again, at once.
    cluster.heartbeat("node-a", t + 2000);
    cluster.heartbeat("node-b", t + 2000);
    cluster.heartbeat("node-c", t + 2000);
    let summary = reconcile_nodes(&cluster.store, &config, t + 2000).unwrap();
    assert_eq!(summary, PassSummary { marked_ready: 1, ..PassSummary::default() });
    let ready = cluster.node("node-c")["status"]["conditions"][0].clone();
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], READY_REASON);
    assert_eq!(ready["lastTransitionTime"], rfc3339(t + 2000));
    assert_eq!(reconcile_nodes(&cluster.store, &config, t + 2000).unwrap(), PassSummary::default());
}

#[test]
fn a_node_without_heartbeat_counts_from_its_creation() {
    let cluster = Cluster::new();
    let mut bare = node("node-d", T0);
    bare["status"]["conditions"][0].as_object_mut().unwrap().remove("lastHeartbeatTime");
    cluster.store.create(&store_key(&NODE, None, "node-d"), &serde_json::to_vec(&bare).unwrap()).unwrap();
    for n in ["node-a", "node-b", "node-c"] {
        cluster.heartbeat(n, T0 + 1500);
    }
    assert_eq!(reconcile_nodes(&cluster.store, &config(), T0 + 1000).unwrap(), PassSummary::default());
    let summary = reconcile_nodes(&cluster.store, &config(), T0 + 1500).unwrap();
    assert_eq!(summary.marked_not_ready, 1, "{summary:?}");
    assert_eq!(cluster.node("node-d")["status"]["conditions"][0]["status"], "False");
}

#[test]
fn a_node_its_agent_reports_not_ready_is_not_marked_ready() {
    let cluster = Cluster::new();
    cluster.modify(&store_key(&NODE, None, "node-c"), |n| {
        n["status"]["conditions"][0]["status"] = json!("False");
        n["status"]["conditions"][0]["reason"] = json!("KubeletNotReady");
    });
    for n in ["node-a", "node-b", "node-c"] {
        cluster.heartbeat(n, T0 + 1000);
    }
    assert_eq!(reconcile_nodes(&cluster.store, &config(), T0 + 1000).unwrap(), PassSummary::default());
    assert_eq!(cluster.node("node-c")["status"]["conditions"][0]["reason"], "KubeletNotReady");
}

#[test]
fn lost_races_are_counted_and_retried_next_pass() {
    let cluster = serving();
    let t = T0 + 10_000;
    cluster.heartbeat("node-a", t);
    cluster.heartbeat("node-b", t);
    let racing = RacingStore(&cluster.store);
    let summary = reconcile_nodes(&racing, &config(), t).unwrap();
    assert_eq!(summary, PassSummary { conflicts: 1, ..PassSummary::default() });
    assert_eq!(cluster.node("node-c")["status"]["conditions"][0]["status"], "True");
    assert_eq!(reconcile_nodes(&cluster.store, &config(), t).unwrap().marked_not_ready, 1);

    let summary = reconcile_endpoints(&racing, t).unwrap();
    assert_eq!(summary, PassSummary { conflicts: 1, ..PassSummary::default() });
    assert!(conditions(&cluster.slice("web").unwrap()).iter().all(|e| e.2));
    assert_eq!(reconcile_endpoints(&cluster.store, t).unwrap().updated, 1);
    assert_eq!(conditions(&cluster.slice("web").unwrap()).iter().filter(|e| e.2).count(), 2);
}
