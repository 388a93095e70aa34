//! A whole cluster end to end: a real `berth serve` (its leader running the
//! controller passes every 100 ms) and simulated agents that play kubelets
//! through the API ([`common::sim_agent`]). Rollouts are checked from a pod
//! watch, event by event, against the Deployment's surge and availability
//! bounds; node loss, graceful deletion and garbage collection against what
//! the API shows. Each test has its own network namespace, data directory
//! and port, and bounded waits that panic with the objects involved.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic so failures carry a backtrace")]

mod common;

use common::objects::{condition, hash, image, name, node, ready, str_at, terminating, text};
use common::serve::{Serve, free_port};
use common::sim_agent::{AgentOptions, SimAgent};
use common::watch::{EventStream, Watcher};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_control::client::{ApiClient, ClientError, Config};
use hyper::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
const REVISIONS: &str = "/apis/apps/v1/namespaces/default/controllerrevisions";
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// web.yaml's image.
const V1: &str = "berth-test:latest";
const V2: &str = "berth-test:v2";
const NEVER_READY: &str = "berth-test:never-ready";
/// Node grace and pod eviction of every test's server, in seconds.
const GRACE_S: u64 = 2;
const EVICTION_S: u64 = 2;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// One line per pod, for panic messages.
fn summary<'a>(pods: impl IntoIterator<Item = &'a Value>) -> String {
    pods.into_iter()
        .map(|p| {
            format!(
                "\n  {} hash={} image={} node={} phase={} ready={} deletionTimestamp={}",
                name(p),
                hash(p),
                image(p),
                node(p),
                str_at(p, "/status/phase"),
                ready(p),
                p.pointer("/metadata/deletionTimestamp").unwrap_or(&Value::Null),
            )
        })
        .collect()
}

/// Polls `check` every 50 ms until it gives `Ok`; panics after `timeout`
/// with `what` and the last `Err` (the state seen).
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => panic!("{what}: not within {timeout:?}; last seen: {state}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster: a server, a client, a CLI configuration.

struct Cluster {
    /// Runs until the cluster is dropped (before its data directory goes).
    serve: Serve,
    config: Config,
    config_file: PathBuf,
    client: ApiClient,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let grace = GRACE_S.to_string();
        let eviction = EVICTION_S.to_string();
        let serve = Serve::start_with(
            &dir.path().join("data"),
            free_port(),
            &["--controller-period-ms", "50", "--node-grace-seconds", &grace, "--pod-eviction-seconds", &eviction],
        );
        let config = serve.admin_config();
        let config_file = dir.path().join("config.yaml");
        std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
        let client = ApiClient::new(config.clone()).unwrap();
        Cluster { serve, config, config_file, client, _dir: dir }
    }

    async fn agent(&self, nodes: &[&str], options: AgentOptions) -> SimAgent {
        SimAgent::start(&self.serve.join_config(), nodes, options).await
    }

    /// The `berth` CLI, off the async workers.
    async fn cli(&self, args: &[&str]) -> Output {
        let config = self.config_file.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(BERTH).env("BERTH_CLIENT_CONFIG", config).args(&args).output().expect("run berth")
        })
        .await
        .unwrap()
    }

    async fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(out.status.success(), "berth {}: {:?}\n{}", args.join(" "), out.status, text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn try_get(&self, path: &str) -> Result<Value, ClientError> {
        self.client.json(Method::GET, path, None).await
    }

    async fn get(&self, path: &str) -> Value {
        self.try_get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The pods of web (label app=web), terminating ones included.
    async fn web_pods(&self) -> Vec<Value> {
        let list = self.get(PODS).await;
        list["items"].as_array().unwrap().iter().filter(|p| p["metadata"]["labels"]["app"] == "web").cloned().collect()
    }

    /// The endpoints of Service web, over all its slices.
    async fn web_endpoints(&self) -> Vec<Value> {
        let list = self.get(SLICES).await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "web")
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// ControllerRevisions named `web-…`: name → `revision`.
    async fn web_revisions(&self) -> BTreeMap<String, Value> {
        let list = self.get(REVISIONS).await;
        list["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a ControllerRevision list: {}", pretty(&list)))
            .iter()
            .filter(|r| name(r).starts_with("web-"))
            .map(|r| (name(r).to_owned(), r.clone()))
            .collect()
    }

    async fn apply_web(&self) {
        let web = example("web.yaml");
        let out = self.cli_ok(&["apply", "-f", web.to_str().unwrap()]).await;
        assert_eq!(out, "deployment.apps/web created\nservice/web created\n");
    }

    /// Sets web's container image (a user's edit), retried on conflicts
    /// with the controllers' status writes.
    async fn set_image(&self, image: &str) {
        for _ in 0..20 {
            let mut d = self.get(DEPLOYMENT).await;
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
            match self.client.json(Method::PUT, DEPLOYMENT, Some(&d)).await {
                Ok(_) => return,
                Err(ClientError::Status { code: 409, .. }) => continue,
                Err(e) => panic!("PUT {DEPLOYMENT} with image {image}: {e}"),
            }
        }
        panic!("PUT {DEPLOYMENT} kept conflicting");
    }

    /// Waits until web has 3 available replicas of `image`, nothing else,
    /// and 3 ready endpoints; returns the pods.
    async fn wait_settled(&self, image_wanted: &str, timeout: Duration) -> Vec<Value> {
        eventually(&format!("web settled on {image_wanted}"), timeout, || async {
            let d = self.get(DEPLOYMENT).await;
            let pods = self.web_pods().await;
            let endpoints = self.web_endpoints().await;
            let st = &d["status"];
            let ready_endpoints = endpoints.iter().filter(|e| e["conditions"]["ready"] == true).count();
            let settled = st["availableReplicas"] == 3
                && st["updatedReplicas"] == 3
                && st["replicas"] == 3
                && pods.len() == 3
                && pods.iter().all(|p| ready(p) && !terminating(p) && image(p) == image_wanted)
                && ready_endpoints == 3;
            if settled {
                Ok(pods)
            } else {
                Err(format!(
                    "deployment status {}; pods:{}; endpoints {}",
                    st,
                    summary(&pods),
                    Value::from(endpoints.clone())
                ))
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// A pod watch: the live pods of web, kept from the events, resumed from the
// last resourceVersion when the server ends the stream.

struct PodWatch {
    watcher: Watcher,
    resource_version: String,
    stream: Option<EventStream>,
    /// web's pods by name, as the last event left them.
    live: BTreeMap<String, Value>,
    /// Every event: (type, pod name, terminating).
    events: Vec<(String, String, bool)>,
}

impl PodWatch {
    /// Lists web's pods, then follows changes from the list's version.
    async fn open(cluster: &Cluster) -> PodWatch {
        let list = cluster.get(PODS).await;
        let live = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "web")
            .map(|p| (name(p).to_owned(), p.clone()))
            .collect();
        PodWatch {
            watcher: Watcher::new(&cluster.config),
            resource_version: list["metadata"]["resourceVersion"].as_str().unwrap().to_owned(),
            stream: None,
            live,
            events: Vec::new(),
        }
    }

    async fn connect(&mut self) {
        let path = format!("{PODS}?watch=true&resourceVersion={}", self.resource_version);
        let (code, stream) = self.watcher.open(&path).await.unwrap();
        assert_eq!(code, 200, "watch {path}");
        self.stream = stream;
    }

    /// The next event (applied to [`PodWatch::live`]), or `None` when none
    /// came by `deadline`.
    async fn next_by(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if self.stream.is_none() {
                self.connect().await;
            }
            let stream = self.stream.as_mut().unwrap();
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(event)) => {
                    self.apply(&event);
                    return Some(event);
                }
                // The server ended the watch: resume after the last event.
                Ok(None) => self.stream = None,
                Err(_) => return None,
            }
        }
    }

    fn apply(&mut self, event: &Value) {
        let kind = event["type"].as_str().unwrap_or_default();
        let object = &event["object"];
        assert_ne!(kind, "ERROR", "the pod watch failed: {}", pretty(event));
        if let Some(rv) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            rv.clone_into(&mut self.resource_version);
        }
        if object["metadata"]["labels"]["app"] != "web" {
            return;
        }
        let pod = name(object).to_owned();
        self.events.push((kind.to_owned(), pod.clone(), terminating(object)));
        match kind {
            "DELETED" => {
                self.live.remove(&pod);
            }
            _ => {
                self.live.insert(pod, object.clone());
            }
        }
    }

    fn describe(&self) -> String {
        summary(self.live.values())
    }

    /// Follows events until `done` says so, checking `bounds` after every
    /// event; panics after `timeout`.
    async fn follow_until<T>(
        &mut self,
        what: &str,
        bounds: &Bounds,
        timeout: Duration,
        mut done: impl FnMut(&BTreeMap<String, Value>) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(result) = done(&self.live) {
                return result;
            }
            let Some(event) = self.next_by(deadline).await else {
                panic!("{what}: not within {timeout:?}; live pods:{}", self.describe());
            };
            if let Err(broken) = bounds.check(&self.live) {
                panic!(
                    "{what}: {broken} after {} {}; live pods:{}",
                    event["type"],
                    name(&event["object"]),
                    self.describe()
                );
            }
        }
    }

    /// Follows events for `period`, checking `bounds` and `also` after every
    /// event.
    async fn follow_for(
        &mut self,
        what: &str,
        bounds: &Bounds,
        period: Duration,
        also: impl Fn(&BTreeMap<String, Value>) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + period;
        while let Some(event) = self.next_by(deadline).await {
            if let Err(broken) = bounds.check(&self.live).and_then(|()| also(&self.live)) {
                panic!(
                    "{what}: {broken} after {} {}; live pods:{}",
                    event["type"],
                    name(&event["object"]),
                    self.describe()
                );
            }
        }
    }
}

/// The rolling update's bounds, from web.yaml.
#[derive(Debug)]
struct Bounds {
    replicas: usize,
    max_surge: usize,
    max_unavailable: usize,
}

impl Bounds {
    fn of_web_yaml() -> Bounds {
        let manifests = berth_control::cli::read_manifests(&example("web.yaml")).unwrap();
        let (_, d) = manifests.iter().find(|(_, m)| m["kind"] == "Deployment").expect("a Deployment in web.yaml");
        let replicas = usize::try_from(d["spec"]["replicas"].as_u64().unwrap_or(1)).unwrap();
        let rolling = &d["spec"]["strategy"]["rollingUpdate"];
        // Kubernetes rounds a percentage of surge up and of unavailability
        // down.
        let resolve = |v: &Value, up: bool| match v {
            Value::Number(n) => usize::try_from(n.as_u64().unwrap()).unwrap(),
            Value::String(s) => {
                let percent: usize = s.trim_end_matches('%').parse().unwrap();
                if up { (replicas * percent).div_ceil(100) } else { replicas * percent / 100 }
            }
            _ => panic!("web.yaml's rollingUpdate: {v}"),
        };
        Bounds {
            replicas,
            max_surge: resolve(&rolling["maxSurge"], true),
            max_unavailable: resolve(&rolling["maxUnavailable"], false),
        }
    }

    /// Not-terminating pods ≤ replicas + maxSurge; ready not-terminating
    /// pods ≥ replicas − maxUnavailable.
    fn check(&self, live: &BTreeMap<String, Value>) -> Result<(), String> {
        let active: Vec<&Value> = live.values().filter(|p| !terminating(p)).collect();
        let ready_active = active.iter().filter(|p| ready(p)).count();
        if active.len() > self.replicas + self.max_surge {
            return Err(format!(
                "{} pods not terminating, more than replicas {} + maxSurge {}",
                active.len(),
                self.replicas,
                self.max_surge
            ));
        }
        if ready_active + self.max_unavailable < self.replicas {
            return Err(format!(
                "{ready_active} ready pods not terminating, fewer than replicas {} - maxUnavailable {}",
                self.replicas, self.max_unavailable
            ));
        }
        Ok(())
    }
}

/// `Some(hash)` once exactly `replicas` pods exist, all of `image_wanted`,
/// ready, not terminating and of one template hash.
fn converged(live: &BTreeMap<String, Value>, image_wanted: &str, replicas: usize) -> Option<String> {
    let pods: Vec<&Value> = live.values().collect();
    let first = pods.first()?;
    let done = pods.len() == replicas
        && pods.iter().all(|p| image(p) == image_wanted && ready(p) && !terminating(p) && hash(p) == hash(first));
    done.then(|| hash(first).to_owned())
}

/// Pods whose `DELETED` event came without a terminating version of them
/// first: deleted at once instead of gracefully.
fn deleted_abruptly(events: &[(String, String, bool)]) -> Vec<String> {
    events
        .iter()
        .filter(|(kind, pod, _)| kind == "DELETED" && !events.iter().any(|(k, p, t)| k == "MODIFIED" && p == pod && *t))
        .map(|(_, pod, _)| pod.clone())
        .collect()
}

/// The revision numbers of `berth rollout history`'s table.
fn history_revisions(out: &str) -> Vec<u64> {
    let mut lines = out.lines();
    assert_eq!(lines.next().map(str::trim_end), Some("deployment.apps/web"), "rollout history:\n{out}");
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("REVISION") && header.contains("CHANGE-CAUSE"), "rollout history:\n{out}");
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap_or_else(|_| panic!("rollout history:\n{out}")))
        .collect()
}

/// The Deployment's `deployment.kubernetes.io/revision`.
fn revision_annotation(d: &Value) -> &str {
    d.pointer("/metadata/annotations").and_then(|a| a.get(REVISION_ANNOTATION)).and_then(Value::as_str).unwrap_or("")
}

/// Waits until web's ControllerRevisions are exactly `want` (template hash
/// → revision), each owned by the Deployment.
async fn wait_revisions(cluster: &Cluster, want: &BTreeMap<String, u64>) {
    let deployment_uid = str_at(&cluster.get(DEPLOYMENT).await, "/metadata/uid").to_owned();
    let want: BTreeMap<String, u64> = want.iter().map(|(h, r)| (format!("web-{h}"), *r)).collect();
    eventually("web's ControllerRevisions", Duration::from_secs(5), || async {
        let revisions = cluster.web_revisions().await;
        let got: BTreeMap<String, u64> =
            revisions.iter().map(|(n, r)| (n.clone(), r["revision"].as_u64().unwrap_or(0))).collect();
        let owned = revisions.values().all(|r| {
            r.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|o| {
                o.iter().any(|o| o["kind"] == "Deployment" && o["name"] == "web" && o["uid"] == deployment_uid.as_str())
            })
        });
        if got == want && owned {
            Ok(())
        } else {
            Err(format!("want {want:?}, got {}", Value::from(revisions.values().cloned().collect::<Vec<_>>())))
        }
    })
    .await;
}

async fn wait_revision_annotation(cluster: &Cluster, want: &str) {
    eventually(&format!("web's revision annotation {want}"), Duration::from_secs(5), || async {
        let d = cluster.get(DEPLOYMENT).await;
        if revision_annotation(&d) == want { Ok(()) } else { Err(pretty(&d["metadata"])) }
    })
    .await;
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn rolling_update_through_the_api_keeps_surge_and_availability() {
    common::run(async {
        let cluster = Cluster::start();
        let _agent = cluster.agent(&["node-a", "node-b"], AgentOptions::default()).await;
        cluster.apply_web().await;
        let first = cluster.wait_settled(V1, Duration::from_secs(10)).await;
        let bounds = Bounds::of_web_yaml();
        assert_eq!((bounds.replicas, bounds.max_surge, bounds.max_unavailable), (3, 1, 0), "web.yaml's strategy");
        let old_hash = hash(&first[0]).to_owned();
        wait_revision_annotation(&cluster, "1").await;

        let mut watch = PodWatch::open(&cluster).await;
        cluster.set_image(V2).await;
        let new_hash = watch
            .follow_until("the rollout to v2", &bounds, Duration::from_secs(15), |live| converged(live, V2, 3))
            .await;
        assert_ne!(new_hash, old_hash, "a new template, a new pod-template-hash");
        let created =
            watch.events.iter().filter(|(kind, pod, _)| kind == "ADDED" && !first.iter().any(|p| name(p) == pod));
        assert_eq!(created.count(), 3, "one new pod per replica: {:?}", watch.events);
        assert_eq!(deleted_abruptly(&watch.events), Vec::<String>::new(), "the rollout deletes gracefully");
        let out = cluster.cli_ok(&["rollout", "status", "deployment/web", "--timeout-seconds", "20"]).await;
        assert!(out.ends_with("deployment \"web\" successfully rolled out\n"), "{out}");

        // History: revisions 1 and 2, as ControllerRevisions owned by web.
        wait_revision_annotation(&cluster, "2").await;
        wait_revisions(&cluster, &BTreeMap::from([(old_hash.clone(), 1), (new_hash.clone(), 2)])).await;
        let out = cluster.cli_ok(&["rollout", "history", "deployment/web"]).await;
        assert_eq!(history_revisions(&out), [1, 2], "rollout history:\n{out}");

        // Undo: the first template again, as revision 3, rolled out within
        // the same bounds.
        let out = cluster.cli_ok(&["rollout", "undo", "deployment/web"]).await;
        assert_eq!(out, "deployment.apps/web rolled back\n");
        let d = cluster.get(DEPLOYMENT).await;
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], V1, "{}", pretty(&d["spec"]));
        let back = watch
            .follow_until("the rollback to v1", &bounds, Duration::from_secs(15), |live| converged(live, V1, 3))
            .await;
        assert_eq!(back, old_hash, "the same template, the same pod-template-hash");
        assert_eq!(deleted_abruptly(&watch.events), Vec::<String>::new(), "the rollback deletes gracefully");
        wait_revision_annotation(&cluster, "3").await;
        wait_revisions(&cluster, &BTreeMap::from([(old_hash, 3), (new_hash, 2)])).await;
        let out = cluster.cli_ok(&["rollout", "history", "deployment/web"]).await;
        assert_eq!(history_revisions(&out), [2, 3], "rollout history:\n{out}");
        cluster.cli_ok(&["rollout", "status", "deployment/web", "--timeout-seconds", "20"]).await;
    });
}

#[test]
fn a_rollout_to_pods_that_never_become_ready_stalls_within_budget() {
    common::run(async {
        let cluster = Cluster::start();
        let _agent = cluster.agent(&["node-a", "node-b"], AgentOptions::default()).await;
        cluster.apply_web().await;
        let first = cluster.wait_settled(V1, Duration::from_secs(10)).await;
        let old_hash = hash(&first[0]).to_owned();
        let bounds = Bounds::of_web_yaml();

        let mut watch = PodWatch::open(&cluster).await;
        cluster.set_image(NEVER_READY).await;
        // The surge pod comes and never gets ready; the old pods stay.
        watch
            .follow_until("the surge pod of the stalled rollout", &bounds, Duration::from_secs(5), |live| {
                live.values().any(|p| image(p) == NEVER_READY && str_at(p, "/status/phase") == "Running").then_some(())
            })
            .await;
        let old_kept = |live: &BTreeMap<String, Value>| {
            let old: Vec<&Value> = live.values().filter(|p| hash(p) == old_hash && !terminating(p)).collect();
            if old.len() == 3 && old.iter().all(|p| ready(p)) {
                Ok(())
            } else {
                Err(format!("{} old pods left, not 3 ready", old.len()))
            }
        };
        watch.follow_for("the stalled rollout", &bounds, Duration::from_secs(3), old_kept).await;
        old_kept(&watch.live).unwrap_or_else(|e| panic!("after 3 s of a stalled rollout: {e}:{}", watch.describe()));
        let new: Vec<&Value> = watch.live.values().filter(|p| image(p) == NEVER_READY).collect();
        assert!(
            new.len() <= bounds.max_surge && new.iter().all(|p| !ready(p)),
            "at most maxSurge unready new pods:{}",
            watch.describe()
        );
        let out = cluster.cli(&["rollout", "status", "deployment/web", "--timeout-seconds", "1"]).await;
        assert!(!out.status.success(), "a stalled rollout is not finished: {}", text(&out));
        let d = cluster.get(DEPLOYMENT).await;
        assert_eq!(d["status"]["availableReplicas"], 3, "{}", pretty(&d["status"]));

        // Undo recovers: back to the first template, the stuck pod goes.
        let out = cluster.cli_ok(&["rollout", "undo", "deployment/web"]).await;
        assert_eq!(out, "deployment.apps/web rolled back\n");
        let back =
            watch.follow_until("the recovery", &bounds, Duration::from_secs(10), |live| converged(live, V1, 3)).await;
        assert_eq!(back, old_hash);
        assert_eq!(deleted_abruptly(&watch.events), Vec::<String>::new(), "the stuck pod was deleted gracefully");
        assert!(
            watch.live.keys().all(|pod| first.iter().any(|p| name(p) == pod)),
            "the old pods were kept throughout:{}",
            watch.describe()
        );
        wait_revision_annotation(&cluster, "3").await;
        cluster.cli_ok(&["rollout", "status", "deployment/web", "--timeout-seconds", "10"]).await;
    });
}

#[test]
fn node_loss_replaces_pods_and_drops_endpoints() {
    common::run(async {
        let cluster = Cluster::start();
        let mut agents = [
            cluster.agent(&["node-a"], AgentOptions::default()).await,
            cluster.agent(&["node-b"], AgentOptions::default()).await,
        ];
        cluster.apply_web().await;
        let pods = cluster.wait_settled(V1, Duration::from_secs(10)).await;
        let per_node = |node_name: &str| pods.iter().filter(|p| node(p) == node_name).count();
        assert!(per_node("node-a") > 0 && per_node("node-b") > 0, "spread over both nodes:{}", summary(&pods));
        // Lose the node with more pods.
        let (lost, survivor) = if per_node("node-a") >= per_node("node-b") { (0, 1) } else { (1, 0) };
        let (lost_node, survivor_node) = (agents[lost].nodes()[0].clone(), agents[survivor].nodes()[0].clone());
        let lost_pods: BTreeSet<String> =
            pods.iter().filter(|p| node(p) == lost_node).map(|p| name(p).to_owned()).collect();
        let stopped = Instant::now();
        agents[lost].stop().await;

        // NotReady after the grace (heartbeats have one-second resolution).
        let lost_path = format!("/api/v1/nodes/{lost_node}");
        eventually(&format!("{lost_node} NotReady"), Duration::from_secs(GRACE_S + 4), || async {
            let n = cluster.get(&lost_path).await;
            match condition(&n, "Ready") {
                Some(c) if c["status"] == "False" && c["reason"] == "NodeLeaseExpired" => Ok(()),
                _ => Err(pretty(&n["status"]["conditions"])),
            }
        })
        .await;
        // The lower bound: the last heartbeat may have come one agent period
        // before the stop and been stored truncated to the second.
        let not_ready_after = stopped.elapsed();
        let earliest = Duration::from_secs(GRACE_S - 1) - AgentOptions::default().heartbeat;
        assert!(not_ready_after >= earliest, "NotReady after {not_ready_after:?}, earlier than {earliest:?}");
        let survivor_path = format!("/api/v1/nodes/{survivor_node}");
        assert!(ready(&cluster.get(&survivor_path).await), "{survivor_node} stays Ready");

        // Its pods stop being ready endpoints (before they are replaced).
        eventually("the lost node's endpoints not ready", Duration::from_secs(2), || async {
            let endpoints = cluster.web_endpoints().await;
            let on_lost: Vec<&Value> = endpoints.iter().filter(|e| e["nodeName"] == lost_node.as_str()).collect();
            if on_lost.iter().all(|e| e["conditions"]["ready"] == false) {
                Ok(())
            } else {
                Err(Value::from(endpoints.clone()).to_string())
            }
        })
        .await;

        // Evicted after the toleration, replaced on the survivor.
        let budget = Duration::from_secs(GRACE_S + EVICTION_S + 8).saturating_sub(stopped.elapsed());
        eventually("3 ready pods on the surviving node", budget, || async {
            let pods = cluster.web_pods().await;
            let d = cluster.get(DEPLOYMENT).await;
            let endpoints = cluster.web_endpoints().await;
            let active: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
            let ready_endpoints: Vec<&Value> = endpoints.iter().filter(|e| e["conditions"]["ready"] == true).collect();
            let done = active.len() == 3
                && active.iter().all(|p| node(p) == survivor_node && ready(p))
                && pods.iter().filter(|p| node(p) == lost_node).all(terminating)
                && ready_endpoints.len() == 3
                && ready_endpoints.iter().all(|e| e["nodeName"] == survivor_node.as_str())
                && d["status"]["availableReplicas"] == 3;
            if done {
                Ok(())
            } else {
                Err(format!(
                    "pods:{}\nendpoints {}\ndeployment status {}",
                    summary(&pods),
                    Value::from(endpoints.clone()),
                    d["status"]
                ))
            }
        })
        .await;
        // The lost node's pods are gone or terminating (the pod GC removes
        // them once their grace ran out; nobody else will).
        let left: Vec<Value> = cluster.web_pods().await.into_iter().filter(|p| lost_pods.contains(name(p))).collect();
        assert!(left.iter().all(terminating), "the lost node's pods:{}", summary(&left));
        let stopped_record = agents[lost].record();
        assert!(
            !stopped_record.iter().any(|a| matches!(a, common::sim_agent::Action::Deleted { .. })),
            "the dead agent did nothing: {stopped_record:?}"
        );
    });
}

#[test]
fn graceful_pod_deletion_is_finished_by_the_agent() {
    common::run(async {
        let cluster = Cluster::start();
        // Slow to stop, so the terminating pod can be seen.
        let options = AgentOptions { terminate_after: Duration::from_millis(2500), ..AgentOptions::default() };
        let agent = cluster.agent(&["node-a", "node-b"], options).await;
        cluster.apply_web().await;
        let pods = cluster.wait_settled(V1, Duration::from_secs(10)).await;
        let victim = name(&pods[0]).to_owned();
        let victim_path = format!("{PODS}/{victim}");

        cluster.cli_ok(&["delete", "pod", &victim]).await;
        let pod = cluster
            .try_get(&victim_path)
            .await
            .unwrap_or_else(|e| panic!("a bound pod stays until its agent stops it: GET {victim_path}: {e}"));
        assert!(terminating(&pod), "deletionTimestamp set: {}", pretty(&pod["metadata"]));
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30, "{}", pretty(&pod["metadata"]));
        assert!(!agent.deleted(&victim));

        // Its endpoint terminates: not ready, still serving (the pod is
        // ready until the agent stops it).
        let endpoint = eventually("the victim's endpoint terminating", Duration::from_secs(2), || async {
            let endpoints = cluster.web_endpoints().await;
            let mine = endpoints.iter().find(|e| e["targetRef"]["name"] == victim.as_str()).cloned();
            match mine {
                Some(e) if e["conditions"]["terminating"] == true => Ok(e),
                _ => Err(Value::from(endpoints).to_string()),
            }
        })
        .await;
        assert_eq!(endpoint["conditions"], json!({"ready": false, "serving": true, "terminating": true}));
        assert!(!agent.deleted(&victim), "seen before the agent's final delete: {:?}", agent.record());

        // The agent's final delete removes it; a replacement took its place.
        eventually("the agent's final delete", Duration::from_secs(5), || async {
            match cluster.try_get(&victim_path).await {
                Err(ClientError::Status { code: 404, .. }) => Ok(()),
                other => Err(format!("{:?}", other.map(|p| p["metadata"].clone()))),
            }
        })
        .await;
        // The GET may see the removal before the agent has its answer.
        eventually("the agent's record of its final delete", Duration::from_secs(2), || async {
            if agent.deleted(&victim) { Ok(()) } else { Err(format!("{:?}", agent.record())) }
        })
        .await;
        eventually("a replacement", Duration::from_secs(5), || async {
            let pods = cluster.web_pods().await;
            let endpoints = cluster.web_endpoints().await;
            let done = pods.len() == 3
                && pods.iter().all(|p| ready(p) && !terminating(p) && name(p) != victim)
                && endpoints.len() == 3
                && endpoints.iter().all(|e| e["conditions"]["ready"] == true);
            if done { Ok(()) } else { Err(format!("{}\nendpoints {}", summary(&pods), Value::from(endpoints))) }
        })
        .await;
    });
}

#[test]
fn deleting_a_deployment_collects_its_pods_and_revisions() {
    common::run(async {
        let cluster = Cluster::start();
        let options = AgentOptions { terminate_after: Duration::from_millis(500), ..AgentOptions::default() };
        let agent = cluster.agent(&["node-a", "node-b"], options).await;
        cluster.apply_web().await;
        let pods = cluster.wait_settled(V1, Duration::from_secs(10)).await;
        wait_revisions(&cluster, &BTreeMap::from([(hash(&pods[0]).to_owned(), 1)])).await;
        let names: BTreeSet<String> = pods.iter().map(|p| name(p).to_owned()).collect();

        let mut watch = PodWatch::open(&cluster).await;
        let out = cluster.cli_ok(&["delete", "deployment", "web"]).await;
        assert_eq!(out, "deployment.apps/web deleted\n");
        watch
            .follow_until(
                "web's pods collected",
                &Bounds { replicas: 0, max_surge: 3, max_unavailable: 0 },
                Duration::from_secs(10),
                |live| live.is_empty().then_some(()),
            )
            .await;
        // Every pod terminated before it went, and no new one came.
        let terminated: BTreeSet<String> = watch
            .events
            .iter()
            .filter(|(kind, _, t)| kind == "MODIFIED" && *t)
            .map(|(_, pod, _)| pod.clone())
            .collect();
        assert_eq!(terminated, names, "every pod was terminating first: {:?}", watch.events);
        assert!(watch.events.iter().all(|(kind, _, _)| kind != "ADDED"), "no new pods: {:?}", watch.events);
        // The watch may see the removal before the agent has its answer.
        eventually("the agents' final deletes", Duration::from_secs(2), || async {
            if names.iter().all(|pod| agent.deleted(pod)) { Ok(()) } else { Err(format!("{:?}", agent.record())) }
        })
        .await;
        eventually("web's ControllerRevisions collected", Duration::from_secs(5), || async {
            let revisions = cluster.web_revisions().await;
            if revisions.is_empty() { Ok(()) } else { Err(format!("{:?}", revisions.keys())) }
        })
        .await;
        match cluster.try_get(DEPLOYMENT).await {
            Err(ClientError::Status { code: 404, .. }) => {}
            other => panic!("the Deployment is gone: {:?}", other.map(|d| d["metadata"].clone())),
        }
        // The Service stays, with no endpoints.
        eventually("web's endpoints gone", Duration::from_secs(2), || async {
            let endpoints = cluster.web_endpoints().await;
            if endpoints.is_empty() { Ok(()) } else { Err(Value::from(endpoints).to_string()) }
        })
        .await;
    });
}
