//! The passes against a [`MemStore`] with the real admission: a Deployment
//! is created, scheduled, run by a simulated agent, rolled and scaled.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{POD_TEMPLATE_HASH, Summary, reconcile_deployments, schedule_pending, template_hash};
use crate::api::admission::{Admission, KindInfo};
use crate::controllers::gc::{GcSummary, collect_garbage};
use crate::controllers::revisions::{CHANGE_CAUSE_ANNOTATION, REVISION_ANNOTATION};
use crate::controllers::test_support::RacingStore;
use crate::resources::{
    CONTROLLER_REVISION, DEPLOYMENT, Deletion, NODE, POD, Resources, ResourcesConfig, pod_deletion, store_key,
    store_prefix,
};
use crate::store::{MemStore, Op, Store, StoreOptions};

const NOW_MS: u64 = 1_700_000_000_000;

struct Cluster {
    store: MemStore,
    admission: Resources,
    now_ms: u64,
}

fn node(name: &str, ready: bool, cpu: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }
    })
}

fn deployment(replicas: u32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }]}
            }
        }
    })
}

impl Cluster {
    /// Three Ready nodes, 2 CPUs and 4Gi each.
    fn new() -> Cluster {
        let cluster = Cluster {
            store: MemStore::new(StoreOptions::default()),
            admission: Resources::new(ResourcesConfig::default()),
            now_ms: NOW_MS,
        };
        for name in ["node-a", "node-b", "node-c"] {
            cluster.put_node(&node(name, true, "2"));
        }
        cluster
    }

    fn put_node(&self, node: &Value) {
        let name = node["metadata"]["name"].as_str().unwrap();
        let key = store_key(&NODE, None, name);
        let bytes = serde_json::to_vec(node).unwrap();
        match self.store.get(&key).unwrap() {
            Some(v) => self.store.update(&key, &bytes, Some(v.revision)).unwrap(),
            None => self.store.create(&key, &bytes).unwrap(),
        };
    }

    /// A create as the API server does it: admission, then one txn.
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

    /// An update as the API server does it: admission with the stored
    /// object, then a CAS txn.
    fn update(&self, kind: &KindInfo, name: &str, change: impl FnOnce(&mut Value)) {
        let key = store_key(kind, Some("default"), name);
        let stored = self.store.get(&key).unwrap().unwrap();
        let old: Value = serde_json::from_slice(&stored.value).unwrap();
        let mut object = old.clone();
        change(&mut object);
        let ops = self.admission.admit(kind, &mut object, Some(&old), &self.store).unwrap();
        let mut txn =
            vec![Op::Update { key, value: serde_json::to_vec(&object).unwrap(), expected: Some(stored.revision) }];
        txn.extend(ops);
        self.store.txn(&txn).unwrap();
    }

    fn get(&self, kind: &KindInfo, name: &str) -> Value {
        let stored = self.store.get(&store_key(kind, Some("default"), name)).unwrap().unwrap();
        serde_json::from_slice(&stored.value).unwrap()
    }

    fn pods(&self) -> Vec<Value> {
        let (items, _) = self.store.list(&store_prefix(&POD, None)).unwrap();
        items.iter().map(|(_, v)| serde_json::from_slice(&v.value).unwrap()).collect()
    }

    fn reconcile(&mut self) -> Summary {
        self.now_ms += 1000;
        reconcile_deployments(&self.store, &self.admission, self.now_ms).unwrap()
    }

    fn schedule(&mut self) -> Summary {
        self.now_ms += 1000;
        schedule_pending(&self.store, self.now_ms).unwrap()
    }

    /// Pods not being deleted.
    fn live_pods(&self) -> Vec<Value> {
        self.pods().into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()
    }

    /// The simulated agent: every bound pod not yet running becomes
    /// Running and Ready; terminating pods are stopped and removed (the
    /// agent's final delete).
    fn agent(&self) -> usize {
        let (items, _) = self.store.list(&store_prefix(&POD, None)).unwrap();
        let mut started = 0;
        for (key, v) in items {
            let mut pod: Value = serde_json::from_slice(&v.value).unwrap();
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                self.store.delete(&key, Some(v.revision)).unwrap();
                continue;
            }
            if pod["spec"]["nodeName"].is_null() || pod["status"]["phase"] == "Running" {
                continue;
            }
            let status = pod["status"].as_object_mut().unwrap();
            status.insert("phase".to_owned(), json!("Running"));
            let conditions = status.entry("conditions").or_insert_with(|| json!([]));
            conditions.as_array_mut().unwrap().push(json!({"type": "Ready", "status": "True"}));
            self.store.update(&key, &serde_json::to_vec(&pod).unwrap(), Some(v.revision)).unwrap();
            started += 1;
        }
        started
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn hash_of(pod: &Value) -> String {
    pod["metadata"]["labels"][POD_TEMPLATE_HASH].as_str().unwrap().to_owned()
}

fn current_hash(cluster: &Cluster) -> String {
    template_hash(&cluster.get(&DEPLOYMENT, "web")["spec"]["template"])
}

/// Create, schedule and run a 3-replica Deployment to readyReplicas 3.
fn running_deployment() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.create(&DEPLOYMENT, deployment(3, "nginx:1.27"));
    let uid = cluster.get(&DEPLOYMENT, "web")["metadata"]["uid"].as_str().unwrap().to_owned();

    let summary = cluster.reconcile();
    assert_eq!(summary.created, 3, "{summary:?}");
    let pods = cluster.pods();
    assert_eq!(pods.len(), 3);
    let hash = current_hash(&cluster);
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_eq!(name.len(), "web-".len() + hash.len() + 6, "{name}");
        assert_eq!(hash_of(pod), hash);
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], uid.as_str());
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["kind"], "Deployment");
        assert!(pod["metadata"]["uid"].is_string());
        assert!(pod["metadata"].get("resourceVersion").is_none());
        assert_eq!(pod["status"]["phase"], "Pending");
    }

    let summary = cluster.schedule();
    assert_eq!(summary.bound, 3, "{summary:?}");
    let nodes: BTreeSet<String> =
        cluster.pods().iter().map(|p| p["spec"]["nodeName"].as_str().unwrap().to_owned()).collect();
    assert_eq!(nodes, BTreeSet::from(["node-a".to_owned(), "node-b".to_owned(), "node-c".to_owned()]));
    for pod in cluster.pods() {
        let conditions = pod["status"]["conditions"].as_array().unwrap();
        assert!(conditions.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "True"));
    }
    // Nothing left to do: a second pass writes nothing.
    assert_eq!(cluster.schedule(), Summary::default());

    assert_eq!(cluster.agent(), 3);
    cluster.reconcile();
    let status = &cluster.get(&DEPLOYMENT, "web")["status"];
    assert_eq!(status["readyReplicas"], 3, "{status}");
    assert_eq!(status["availableReplicas"], 3);
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["unavailableReplicas"], 0);
    assert_eq!(status["observedGeneration"], 1);
    cluster
}

#[test]
fn deployment_is_created_scheduled_and_becomes_ready() {
    let mut cluster = running_deployment();
    // Steady state: no writes at all.
    assert_eq!(cluster.reconcile(), Summary::default());
    assert_eq!(cluster.schedule(), Summary::default());
}

#[test]
fn rolling_update_stays_within_surge_and_availability() {
    let mut cluster = running_deployment();
    let old_hash = current_hash(&cluster);
    cluster
        .update(&DEPLOYMENT, "web", |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28"));
    assert_eq!(cluster.get(&DEPLOYMENT, "web")["metadata"]["generation"], 2);
    let new_hash = current_hash(&cluster);
    assert_ne!(old_hash, new_hash);

    // Default strategy for 3 replicas: maxSurge 1 (25% up), maxUnavailable 0.
    let (replicas, surge, unavailable) = (3, 1, 0);
    let check = |cluster: &Cluster, when: &str| {
        let pods = cluster.live_pods();
        assert!(pods.len() <= replicas + surge, "{when}: {} pods", pods.len());
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        assert!(ready >= replicas - unavailable, "{when}: {ready} ready");
    };
    let mut done = false;
    let mut most = 0;
    for round in 0..20 {
        cluster.reconcile();
        check(&cluster, &format!("round {round} after reconcile"));
        most = most.max(cluster.live_pods().len());
        cluster.schedule();
        check(&cluster, &format!("round {round} after schedule"));
        cluster.agent();
        check(&cluster, &format!("round {round} after agent"));
        let pods = cluster.pods();
        if pods.len() == replicas && pods.iter().all(|p| hash_of(p) == new_hash && is_ready(p)) {
            done = true;
            break;
        }
    }
    assert_eq!(most, replicas + surge, "the rollout used its surge");
    assert!(done, "rollout did not finish: {:?}", cluster.pods().iter().map(hash_of).collect::<Vec<_>>());
    for pod in cluster.pods() {
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.28");
    }
    cluster.reconcile();
    let status = &cluster.get(&DEPLOYMENT, "web")["status"];
    assert_eq!(status["observedGeneration"], 2, "{status}");
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(status["readyReplicas"], 3);
}

#[test]
fn scale_down_deletes_the_extra_pods() {
    let mut cluster = running_deployment();
    cluster.update(&DEPLOYMENT, "web", |d| d["spec"]["replicas"] = json!(1));
    let summary = cluster.reconcile();
    assert_eq!(summary.deleted, 2, "{summary:?}");
    assert_eq!(summary.created, 0);
    // Bound and running: they terminate gracefully, for their agent to stop.
    assert_eq!(cluster.live_pods().len(), 1);
    let terminating: Vec<Value> =
        cluster.pods().into_iter().filter(|p| !p["metadata"]["deletionTimestamp"].is_null()).collect();
    assert_eq!(terminating.len(), 2);
    assert!(terminating.iter().all(|p| p["metadata"]["deletionGracePeriodSeconds"] == 30), "{terminating:?}");
    cluster.agent();
    assert_eq!(cluster.pods().len(), 1);
    let status = &cluster.get(&DEPLOYMENT, "web")["status"];
    assert_eq!(status["replicas"], 1, "{status}");
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(cluster.reconcile(), Summary::default());
}

#[test]
fn a_pod_too_big_for_every_node_stays_pending_with_the_reason() {
    let mut cluster = Cluster::new();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "huge", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "16"}}}]}
    });
    cluster.create(&POD, pod.take());
    let summary = cluster.schedule();
    assert_eq!(summary.unschedulable, 1, "{summary:?}");
    assert_eq!(summary.bound, 0);
    let pod = cluster.get(&POD, "huge");
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    let condition =
        pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").unwrap().clone();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Unschedulable");
    let message = condition["message"].as_str().unwrap();
    assert_eq!(
        message, "0/3 nodes are available: 3 node(s) had insufficient cpu (pod requests 16, largest free 2).",
        "{message}"
    );
    // The same verdict is not written again.
    let revision = cluster.store.get(&store_key(&POD, Some("default"), "huge")).unwrap().unwrap().revision;
    assert_eq!(cluster.schedule(), Summary::default());
    assert_eq!(cluster.store.get(&store_key(&POD, Some("default"), "huge")).unwrap().unwrap().revision, revision);
}

#[test]
fn nothing_is_placed_on_a_node_that_is_not_ready() {
    let mut cluster = Cluster::new();
    cluster.put_node(&node("node-c", false, "2"));
    cluster.create(&DEPLOYMENT, deployment(4, "nginx:1.27"));
    assert_eq!(cluster.reconcile().created, 4);
    assert_eq!(cluster.schedule().bound, 4);
    let pods = cluster.pods();
    for pod in &pods {
        assert_ne!(pod["spec"]["nodeName"], "node-c", "{pod}");
    }
    let on = |n: &str| pods.iter().filter(|p| p["spec"]["nodeName"] == n).count();
    assert_eq!((on("node-a"), on("node-b")), (2, 2));
}

#[test]
fn failed_pods_are_replaced_and_not_counted_by_the_scheduler() {
    let mut cluster = running_deployment();
    let victim = cluster.pods()[0].clone();
    let name = victim["metadata"]["name"].as_str().unwrap().to_owned();
    let key = store_key(&POD, Some("default"), &name);
    let stored = cluster.store.get(&key).unwrap().unwrap();
    let mut failed = victim.clone();
    failed["status"]["phase"] = json!("Failed");
    failed["status"]["conditions"] = json!([]);
    cluster.store.update(&key, &serde_json::to_vec(&failed).unwrap(), Some(stored.revision)).unwrap();
    let summary = cluster.reconcile();
    assert_eq!((summary.deleted, summary.created), (1, 1), "{summary:?}");
    assert!(cluster.store.get(&key).unwrap().is_none());
    assert_eq!(cluster.schedule().bound, 1);
    assert_eq!(cluster.pods().len(), 3);
}

#[test]
fn template_hash_is_stable_and_sensitive() {
    let a = json!({"spec": {"containers": [{"name": "c", "image": "x:1"}]}, "metadata": {"labels": {"a": "b"}}});
    let b = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"image": "x:1", "name": "c"}]}});
    assert_eq!(template_hash(&a), template_hash(&b));
    assert_eq!(template_hash(&a).len(), 8);
    let c = json!({"spec": {"containers": [{"name": "c", "image": "x:2"}]}, "metadata": {"labels": {"a": "b"}}});
    assert_ne!(template_hash(&a), template_hash(&c));
}

#[test]
fn lost_races_are_counted_and_retried_next_pass() {
    let mut cluster = running_deployment();
    cluster.update(&DEPLOYMENT, "web", |d| d["spec"]["replicas"] = json!(4));
    let racing = RacingStore(&cluster.store);

    // The new pod is created (txn) but the status write loses.
    let summary = reconcile_deployments(&racing, &cluster.admission, NOW_MS + 100_000).unwrap();
    assert_eq!((summary.created, summary.status_updates, summary.conflicts), (1, 0, 1), "{summary:?}");
    // The binding loses too, and the pod stays pending.
    let summary = schedule_pending(&racing, NOW_MS + 100_000).unwrap();
    assert_eq!((summary.bound, summary.conflicts), (0, 1), "{summary:?}");
    assert_eq!(cluster.pods().iter().filter(|p| p["spec"]["nodeName"].is_null()).count(), 1);

    // The next passes, without the race, finish the job.
    let summary = cluster.reconcile();
    assert_eq!((summary.created, summary.status_updates), (0, 1), "{summary:?}");
    assert_eq!(cluster.schedule().bound, 1);
    assert_eq!(cluster.get(&DEPLOYMENT, "web")["status"]["replicas"], 4);
}

// ---- Revision history and garbage collection ---------------------------------

impl Cluster {
    /// Passes and the agent until nothing changes (at most 30 rounds).
    fn settle(&mut self) {
        for _ in 0..30 {
            let reconciled = self.reconcile();
            let scheduled = self.schedule();
            let started = self.agent();
            if reconciled == Summary::default() && scheduled == Summary::default() && started == 0 {
                return;
            }
        }
        panic!("the cluster did not settle: {:?}", self.pods());
    }

    /// The Deployment's revisions: (name, number), by number.
    fn revisions(&self) -> Vec<(String, i64)> {
        let (items, _) = self.store.list(&store_prefix(&CONTROLLER_REVISION, None)).unwrap();
        let mut out: Vec<(String, i64)> = items
            .iter()
            .map(|(_, v)| {
                let r: Value = serde_json::from_slice(&v.value).unwrap();
                (r["metadata"]["name"].as_str().unwrap().to_owned(), r["revision"].as_i64().unwrap())
            })
            .collect();
        out.sort_by_key(|r| r.1);
        out
    }

    fn revision_annotation(&self) -> Value {
        self.get(&DEPLOYMENT, "web")["metadata"]["annotations"][REVISION_ANNOTATION].clone()
    }
}

#[test]
fn each_template_gets_a_revision_and_going_back_renumbers_it() {
    let mut cluster = running_deployment();
    let first = current_hash(&cluster);
    assert_eq!(cluster.revisions(), vec![(format!("web-{first}"), 1)]);
    assert_eq!(cluster.revision_annotation(), "1");
    let stored = cluster.get(&CONTROLLER_REVISION, &format!("web-{first}"));
    assert_eq!(stored["data"]["spec"]["template"], cluster.get(&DEPLOYMENT, "web")["spec"]["template"]);
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], cluster.get(&DEPLOYMENT, "web")["metadata"]["uid"]);
    assert_eq!(stored["metadata"]["labels"][POD_TEMPLATE_HASH], first.as_str());

    cluster.update(&DEPLOYMENT, "web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        d["metadata"]["annotations"] = json!({CHANGE_CAUSE_ANNOTATION: "upgrade to 1.28"});
    });
    cluster.settle();
    let second = current_hash(&cluster);
    assert_eq!(cluster.revisions(), vec![(format!("web-{first}"), 1), (format!("web-{second}"), 2)]);
    assert_eq!(cluster.revision_annotation(), "2");
    let stored = cluster.get(&CONTROLLER_REVISION, &format!("web-{second}"));
    assert_eq!(stored["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION], "upgrade to 1.28");

    // A rollback copies revision 1's template back: the same hash, and that
    // revision becomes number 3 (no third object).
    let old = cluster.get(&CONTROLLER_REVISION, &format!("web-{first}"))["data"]["spec"]["template"].clone();
    cluster.update(&DEPLOYMENT, "web", |d| {
        d["spec"]["template"] = old;
        d["metadata"]["annotations"] = json!({});
    });
    assert_eq!(current_hash(&cluster), first, "the stored template round-trips through admission");
    cluster.settle();
    assert_eq!(cluster.revisions(), vec![(format!("web-{second}"), 2), (format!("web-{first}"), 3)]);
    assert_eq!(cluster.revision_annotation(), "3");
    assert!(cluster.live_pods().iter().all(|p| hash_of(p) == first));
    let stored = cluster.get(&CONTROLLER_REVISION, &format!("web-{first}"));
    assert!(stored["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION].is_null(), "{stored}");
    // Steady again.
    assert_eq!(cluster.reconcile(), Summary::default());
}

#[test]
fn history_keeps_the_limit_of_old_revisions() {
    let mut cluster = running_deployment();
    cluster.update(&DEPLOYMENT, "web", |d| d["spec"]["revisionHistoryLimit"] = json!(2));
    for minor in 1..=4 {
        cluster.update(&DEPLOYMENT, "web", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(format!("nginx:2.{minor}"));
        });
        cluster.settle();
    }
    let numbers: Vec<i64> = cluster.revisions().iter().map(|r| r.1).collect();
    assert_eq!(numbers, vec![3, 4, 5], "the current revision and the 2 newest old ones");
    assert_eq!(cluster.revision_annotation(), "5");
}

#[test]
fn deleting_a_deployment_collects_its_pods_and_revisions() {
    let mut cluster = running_deployment();
    let key = store_key(&DEPLOYMENT, Some("default"), "web");
    cluster.store.delete(&key, None).unwrap();
    // The same name again, before the collector runs: a new uid, so the old
    // pods are still garbage and the new Deployment's are not.
    cluster.create(&DEPLOYMENT, deployment(1, "nginx:1.27"));
    let new_uid = cluster.get(&DEPLOYMENT, "web")["metadata"]["uid"].clone();
    // The new owner's revision name is taken by the old owner's until the
    // collector runs: a lost race, retried.
    let summary = cluster.reconcile();
    assert_eq!(summary.created, 1, "{summary:?}");
    assert_eq!(summary.conflicts, 1, "{summary:?}");

    cluster.now_ms += 1000;
    let gc = collect_garbage(&cluster.store, cluster.now_ms).unwrap();
    assert_eq!(gc, GcSummary { orphan_pods: 3, orphan_revisions: 1, ..GcSummary::default() });
    // Bound and running: terminating, for the agent to stop.
    let old: Vec<Value> =
        cluster.pods().into_iter().filter(|p| p["metadata"]["ownerReferences"][0]["uid"] != new_uid).collect();
    assert_eq!(old.len(), 3);
    assert!(old.iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null()));
    assert_eq!(collect_garbage(&cluster.store, cluster.now_ms).unwrap(), GcSummary::default(), "idempotent");
    cluster.settle();
    let pods = cluster.pods();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0]["metadata"]["ownerReferences"][0]["uid"], new_uid);
    assert_eq!(cluster.revisions().len(), 1);
    assert_eq!(cluster.revision_annotation(), "1");
}

#[test]
fn pods_of_missing_nodes_go_and_lost_nodes_terminating_pods_are_removed() {
    let cluster = running_deployment();
    let on_c: Vec<String> = cluster
        .pods()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "node-c")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_c.len(), 1);
    cluster.store.delete(&store_key(&NODE, None, "node-c"), None).unwrap();
    let gc = collect_garbage(&cluster.store, cluster.now_ms).unwrap();
    assert_eq!(gc, GcSummary { pods_without_node: 1, ..GcSummary::default() });
    let pod = cluster.get(&POD, &on_c[0]);
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    // Within the grace nothing more; after it, no agent will finish it.
    assert_eq!(collect_garbage(&cluster.store, cluster.now_ms + 29_000).unwrap(), GcSummary::default());
    let gc = collect_garbage(&cluster.store, cluster.now_ms + 31_000).unwrap();
    assert_eq!(gc, GcSummary { force_deleted: 1, ..GcSummary::default() });
    assert!(cluster.pods().iter().all(|p| p["metadata"]["name"] != on_c[0].as_str()));
    // A terminating pod on a Ready node is its agent's to remove.
    let victim = cluster.live_pods()[0].clone();
    let name = victim["metadata"]["name"].as_str().unwrap();
    let key = store_key(&POD, Some("default"), name);
    let stored = cluster.store.get(&key).unwrap().unwrap();
    let Deletion::Graceful(marked) = pod_deletion(&victim, Some(1), cluster.now_ms) else { panic!("graceful") };
    cluster.store.update(&key, &serde_json::to_vec(&marked).unwrap(), Some(stored.revision)).unwrap();
    assert_eq!(collect_garbage(&cluster.store, cluster.now_ms + 60_000).unwrap(), GcSummary::default());
}
