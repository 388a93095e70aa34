use std::collections::BTreeMap;

use proptest::prelude::*;

use super::unschedulable::{Rounding, format_bytes, format_milli_cpu};
use super::*;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

fn node(name: &str, milli_cpu: u64, memory_bytes: u64) -> NodeInfo {
    NodeInfo {
        name: name.to_owned(),
        ready: true,
        unschedulable: false,
        allocatable: Resources { milli_cpu, memory_bytes, pods: 110 },
    }
}

fn pod(key: &str, owner: Option<&str>, milli_cpu: u64, memory_bytes: u64) -> PodRequest {
    PodRequest {
        key: key.to_owned(),
        owner: owner.map(str::to_owned),
        requests: Requests { milli_cpu, memory_bytes },
        host_ports: Vec::new(),
    }
}

fn tcp(port: u16) -> HostPort {
    HostPort { protocol: Protocol::Tcp, port }
}

fn cluster(nodes: &[NodeInfo]) -> ClusterState {
    let mut state = ClusterState::new();
    for n in nodes {
        state.add_node(n.clone()).unwrap();
    }
    state
}

fn unschedulable(state: &ClusterState, p: &PodRequest) -> Unschedulable {
    state.schedule(p).expect_err("pod should not fit anywhere")
}

// ---- filters and the message ----

#[test]
fn no_nodes() {
    let u = unschedulable(&ClusterState::new(), &pod("ns/a", None, 0, 0));
    assert_eq!(u.to_string(), "0/0 nodes are available: no nodes are registered.");
}

#[test]
fn not_ready_node_is_filtered() {
    let mut state = cluster(&[node("n1", 4000, 8 * GI)]);
    state.set_node_ready("n1", Readiness::NotReady).unwrap();
    let u = unschedulable(&state, &pod("ns/a", None, 100, MI));
    assert_eq!(u.not_ready, 1);
    assert_eq!(u.to_string(), "0/1 nodes are available: 1 node(s) were not ready.");
    state.set_node_ready("n1", Readiness::Ready).unwrap();
    assert_eq!(state.schedule(&pod("ns/a", None, 100, MI)).unwrap().node, "n1");
}

#[test]
fn cordoned_node_is_filtered() {
    let mut state = cluster(&[node("n1", 4000, 8 * GI)]);
    state.set_node_schedulable("n1", Schedulability::Cordoned).unwrap();
    let u = unschedulable(&state, &pod("ns/a", None, 100, MI));
    assert_eq!(u.cordoned, 1);
    assert_eq!(u.to_string(), "0/1 nodes are available: 1 node(s) were unschedulable.");
    state.set_node_schedulable("n1", Schedulability::Schedulable).unwrap();
    assert!(state.schedule(&pod("ns/a", None, 100, MI)).is_ok());
}

#[test]
fn pod_count_is_filtered() {
    let mut n = node("n1", 4000, 8 * GI);
    n.allocatable.pods = 2;
    let mut state = cluster(&[n]);
    state.place(&pod("ns/a", None, 0, 0)).unwrap();
    state.place(&pod("ns/b", None, 0, 0)).unwrap();
    let u = unschedulable(&state, &pod("ns/c", None, 0, 0));
    assert_eq!(u.too_many_pods, 1);
    assert_eq!(u.to_string(), "0/1 nodes are available: 1 node(s) had too many pods.");
}

#[test]
fn cpu_is_filtered_with_shortfall() {
    let mut state = cluster(&[node("n1", 4000, 8 * GI), node("n2", 2000, 8 * GI)]);
    state.assume(&pod("ns/a", None, 3000, GI), "n1").unwrap();
    state.assume(&pod("ns/b", None, 1500, GI), "n2").unwrap();
    let u = unschedulable(&state, &pod("ns/c", None, 1500, GI));
    assert_eq!(u.insufficient_cpu, Some(Shortfall { nodes: 2, requested: 1500, largest_free: 1000 }));
    assert_eq!(u.insufficient_memory, None);
    assert_eq!(
        u.to_string(),
        "0/2 nodes are available: 2 node(s) had insufficient cpu (pod requests 1500m, largest free 1)."
    );
}

#[test]
fn memory_is_filtered_with_the_issue_message() {
    let mut down = node("n1", 4000, 8 * GI);
    down.ready = false;
    let mut state = cluster(&[down, node("n2", 4000, 2 * GI), node("n3", 4000, 4 * GI)]);
    state.assume(&pod("ns/a", None, 100, GI), "n2").unwrap();
    state.assume(&pod("ns/b", None, 100, 2 * GI + 512 * MI), "n3").unwrap();
    let u = unschedulable(&state, &pod("ns/c", None, 100, 2 * GI));
    assert_eq!(
        u.to_string(),
        "0/3 nodes are available: 1 node(s) were not ready, \
         2 node(s) had insufficient memory (pod requests 2Gi, largest free 1.5Gi)."
    );
}

#[test]
fn exact_fit_is_allowed() {
    let mut n = node("n1", 1000, GI);
    n.allocatable.pods = 1;
    let mut state = cluster(&[n]);
    assert_eq!(state.place(&pod("ns/a", None, 1000, GI)).unwrap().node, "n1");
    let u = unschedulable(&state, &pod("ns/b", None, 0, 0));
    assert_eq!(u.too_many_pods, 1);
    assert_eq!(u.insufficient_cpu, None, "a zero request fits a full node's cpu");
}

#[test]
fn one_node_counts_under_every_resource_it_lacks() {
    let mut n = node("n1", 1000, GI);
    n.allocatable.pods = 1;
    let mut state = cluster(&[n]);
    state.place(&pod("ns/a", None, 600, 600 * MI)).unwrap();
    let u = unschedulable(&state, &pod("ns/b", None, 600, 600 * MI));
    assert_eq!((u.nodes, u.too_many_pods), (1, 1));
    assert_eq!(u.insufficient_cpu.map(|s| s.nodes), Some(1));
    assert_eq!(u.insufficient_memory.map(|s| s.largest_free), Some(424 * MI));
    assert_eq!(
        u.to_string(),
        "0/1 nodes are available: 1 node(s) had too many pods, \
         1 node(s) had insufficient cpu (pod requests 600m, largest free 400m), \
         1 node(s) had insufficient memory (pod requests 600Mi, largest free 424Mi)."
    );
}

#[test]
fn host_ports_are_filtered_per_protocol() {
    let mut state = cluster(&[node("n1", 4000, 8 * GI), node("n2", 4000, 8 * GI)]);
    let mut web = pod("ns/web-1", None, 100, MI);
    web.host_ports = vec![tcp(80)];
    state.assume(&web, "n1").unwrap();
    web.key = "ns/web-2".into();
    state.assume(&web, "n2").unwrap();

    web.key = "ns/web-3".into();
    web.host_ports = vec![tcp(443), tcp(80)];
    let u = unschedulable(&state, &web);
    assert_eq!(u.host_port_conflict, 2);
    assert_eq!(u.ports_in_use, vec![tcp(80)]);
    assert_eq!(
        u.to_string(),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports (TCP/80)."
    );

    web.host_ports = vec![HostPort { protocol: Protocol::Udp, port: 80 }];
    assert!(state.schedule(&web).is_ok(), "UDP/80 does not conflict with TCP/80");

    assert_eq!(
        state.assume(&pod("ns/x", None, 0, 0), "n1").map(|()| state.node("n1").unwrap().host_ports),
        Ok(vec![tcp(80)])
    );
    state.forget("ns/web-1").unwrap();
    web.host_ports = vec![tcp(80)];
    assert_eq!(state.schedule(&web).unwrap().node, "n1");
}

#[test]
fn duplicate_and_zero_host_ports_are_ignored() {
    let mut state = cluster(&[node("n1", 4000, 8 * GI)]);
    let mut p = pod("ns/a", None, 100, MI);
    p.host_ports = vec![tcp(80), tcp(80), tcp(0)];
    state.place(&p).unwrap();
    assert_eq!(state.node("n1").unwrap().host_ports, vec![tcp(80)]);
    let mut q = pod("ns/b", None, 100, MI);
    q.host_ports = vec![tcp(0)];
    assert!(state.schedule(&q).is_ok());
    state.forget("ns/a").unwrap();
    assert!(state.node("n1").unwrap().host_ports.is_empty());
}

#[test]
fn assume_checks_the_filter() {
    let mut state = cluster(&[node("n1", 1000, GI)]);
    state.assume(&pod("ns/a", None, 800, MI), "n1").unwrap();
    assert_eq!(
        state.assume(&pod("ns/b", None, 300, MI), "n1"),
        Err(UpdateError::DoesNotFit {
            pod: "ns/b".into(),
            node: "n1".into(),
            reason: NodeRejection::InsufficientCpu { requested: 300, free: 200 },
        })
    );
    assert_eq!(
        state.assume(&pod("ns/a", None, 0, 0), "n1"),
        Err(UpdateError::PodExists { pod: "ns/a".into(), node: "n1".into() })
    );
    assert_eq!(state.assume(&pod("ns/c", None, 0, 0), "n9"), Err(UpdateError::UnknownNode { node: "n9".into() }));
    assert_eq!(state.forget("ns/zz"), Err(UpdateError::UnknownPod { pod: "ns/zz".into() }));
    assert_eq!(state.forget("ns/a"), Ok("n1".into()));
    assert_eq!(state.pod_count(), 0);
    assert_eq!(state.node("n1").unwrap().requested, Requests::default());
}

#[test]
fn node_updates_are_checked() {
    let mut state = cluster(&[node("n1", 1000, GI)]);
    assert_eq!(state.add_node(node("n1", 1, 1)), Err(UpdateError::NodeExists { node: "n1".into() }));
    assert_eq!(state.node("n1").unwrap().info.allocatable.milli_cpu, 1000, "refused add changed nothing");
    let unknown = Err(UpdateError::UnknownNode { node: "n9".into() });
    assert_eq!(state.set_node_ready("n9", Readiness::Ready), unknown);
    assert_eq!(state.set_node_schedulable("n9", Schedulability::Cordoned), unknown);
    assert_eq!(state.update_node(node("n9", 1, 1)), unknown);
    assert_eq!(state.remove_node("n9").map(|_| ()), unknown);
}

#[test]
fn place_refuses_a_placed_pod() {
    let mut state = cluster(&[node("n1", 1000, GI)]);
    state.place(&pod("ns/a", None, 0, 0)).unwrap();
    assert_eq!(
        state.place(&pod("ns/a", None, 0, 0)),
        Err(PlaceError::PodExists { pod: "ns/a".into(), node: "n1".into() })
    );
    assert_eq!(state.pod_count(), 1);
}

#[test]
fn record_bound_may_over_commit_and_then_blocks_the_node() {
    let mut state = cluster(&[node("n1", 1000, GI), node("n2", 1000, GI)]);
    state.record_bound(&pod("ns/a", None, 1500, MI), "n1").unwrap();
    assert_eq!(state.node("n1").unwrap().requested.milli_cpu, 1500);
    assert_eq!(state.schedule(&pod("ns/b", None, 0, 0)).unwrap().node, "n2");
    state.remove_node("n2").unwrap();
    let u = unschedulable(&state, &pod("ns/b", None, 0, 0));
    assert_eq!(u.insufficient_cpu, Some(Shortfall { nodes: 1, requested: 0, largest_free: 0 }));
}

#[test]
fn shrinking_a_node_keeps_its_pods() {
    let mut state = cluster(&[node("n1", 4000, 4 * GI)]);
    state.place(&pod("ns/a", None, 2000, GI)).unwrap();
    state.update_node(node("n1", 1000, 4 * GI)).unwrap();
    assert_eq!(state.pod_node("ns/a"), Some("n1"));
    assert!(state.schedule(&pod("ns/b", None, 0, 0)).is_err());
    state.forget("ns/a").unwrap();
    assert!(state.schedule(&pod("ns/b", None, 0, 0)).is_ok());
}

#[test]
fn removing_a_node_returns_its_pods_and_frees_everything() {
    let mut state = cluster(&[node("n1", 4000, 4 * GI), node("n2", 4000, 4 * GI)]);
    for key in ["ns/c", "ns/a", "ns/b"] {
        let mut p = pod(key, Some("ns/web"), 100, MI);
        p.host_ports = vec![tcp(80)];
        state.record_bound(&p, "n1").unwrap();
    }
    state.assume(&pod("ns/d", Some("ns/web"), 100, MI), "n2").unwrap();
    assert_eq!(state.remove_node("n1").unwrap(), vec!["ns/a", "ns/b", "ns/c"]);
    assert_eq!((state.node_count(), state.pod_count()), (1, 1));
    assert_eq!(state.pod_node("ns/a"), None);
    // The slot is reused; nothing of the old node's pods remains on it.
    state.add_node(node("n0", 4000, 4 * GI)).unwrap();
    let usage = state.node("n0").unwrap();
    assert_eq!((usage.pods, usage.requested, usage.host_ports.len()), (0, Requests::default(), 0));
    // Spreading sees ns/web's replica on n2 only: the new replica goes to n0.
    assert_eq!(state.place(&pod("ns/e", Some("ns/web"), 100, MI)).unwrap().node, "n0");
    assert_eq!(state.nodes().map(|n| n.info.name).collect::<Vec<_>>(), vec!["n0", "n2"]);
}

// ---- score ----

#[test]
fn least_allocated_wins_and_the_score_is_the_formula() {
    let mut state = cluster(&[node("a", 4000, 8 * GI), node("b", 4000, 8 * GI)]);
    state.assume(&pod("ns/busy", None, 2000, 2 * GI), "a").unwrap();
    let placement = state.schedule(&pod("ns/p", None, 1000, 2 * GI)).unwrap();
    // b: cpu (4000−1000)/4000 = 75 %, memory (8−2)/8 = 75 % → 7500; no owner, no spread.
    assert_eq!(placement, Placement { node: "b".into(), score: 7500 });
}

#[test]
fn ties_go_to_the_lowest_name() {
    let state = cluster(&[node("b", 4000, 8 * GI), node("c", 4000, 8 * GI), node("a", 4000, 8 * GI)]);
    assert_eq!(state.schedule(&pod("ns/p", None, 100, MI)).unwrap().node, "a");
    assert_eq!(state.schedule(&pod("ns/p", Some("ns/web"), 100, MI)).unwrap().node, "a");
}

#[test]
fn pods_without_requests_still_spread() {
    let mut state = cluster(&[node("a", 4000, 8 * GI), node("b", 4000, 8 * GI), node("c", 4000, 8 * GI)]);
    for i in 0..6 {
        state.place(&pod(&format!("ns/be-{i}"), None, 0, 0)).unwrap();
    }
    for n in state.nodes() {
        assert_eq!(n.pods, 2, "{}", n.info.name);
    }
}

#[test]
fn three_replicas_on_three_equal_nodes_land_one_each() {
    let mut state = cluster(&[node("a", 8000, 16 * GI), node("b", 8000, 16 * GI), node("c", 8000, 16 * GI)]);
    let nodes: Vec<String> =
        (0..3).map(|i| state.place(&pod(&format!("ns/web-{i}"), Some("ns/web"), 500, GI)).unwrap().node).collect();
    assert_eq!(nodes, vec!["a", "b", "c"]);
}

#[test]
fn spreading_beats_a_large_resource_advantage_for_few_replicas() {
    // a is much bigger and emptier, yet the three replicas still go one per node.
    let mut state = cluster(&[node("a", 64_000, 256 * GI), node("b", 4000, 8 * GI), node("c", 4000, 8 * GI)]);
    state.assume(&pod("ns/other-b", None, 2000, 4 * GI), "b").unwrap();
    state.assume(&pod("ns/other-c", None, 2000, 4 * GI), "c").unwrap();
    let mut nodes: Vec<String> =
        (0..3).map(|i| state.place(&pod(&format!("ns/web-{i}"), Some("ns/web"), 500, GI)).unwrap().node).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["a", "b", "c"]);
}

/// With m = 10 replicas on the busiest node, one fewer is worth
/// SPREAD_SCORE_MAX / 10 = 2000 points, i.e. 20 % of free capacity.
#[test]
fn at_ten_replicas_per_node_a_skew_of_one_is_worth_twenty_percent() {
    for (filler_percent, expected) in [(10, "b"), (50, "a")] {
        let mut state = cluster(&[node("a", 100_000, 100 * GI), node("b", 100_000, 100 * GI)]);
        for i in 0..19 {
            let on = if i < 10 { "a" } else { "b" };
            state.assume(&pod(&format!("ns/web-{i}"), Some("ns/web"), 1, 1), on).unwrap();
        }
        let filler = pod("ns/filler", None, filler_percent * 1000, filler_percent * GI);
        state.assume(&filler, "b").unwrap();
        let placement = state.schedule(&pod("ns/web-19", Some("ns/web"), 1, 1)).unwrap();
        assert_eq!(placement.node, expected, "filler {filler_percent}%: {placement:?}");
    }
}

// ---- inputs and formatting ----

#[test]
fn requests_follow_kube_rules() {
    let only_limit =
        ContainerResources { limit_milli_cpu: Some(500), limit_memory_bytes: Some(GI), ..Default::default() };
    let both = ContainerResources {
        request_milli_cpu: Some(100),
        limit_milli_cpu: Some(900),
        request_memory_bytes: Some(MI),
        limit_memory_bytes: None,
    };
    let init =
        ContainerResources { request_milli_cpu: Some(2000), request_memory_bytes: Some(MI), ..Default::default() };
    assert_eq!(only_limit.effective_requests(), Requests { milli_cpu: 500, memory_bytes: GI });
    assert_eq!(
        Requests::from_containers(&[only_limit, both, ContainerResources::default()], &[init]),
        Requests { milli_cpu: 2000, memory_bytes: GI + MI },
        "cpu from the largest init container, memory summed over the regular ones"
    );
    let huge = ContainerResources { request_milli_cpu: Some(u64::MAX), ..Default::default() };
    assert_eq!(Requests::from_containers(&[huge, huge], &[]).milli_cpu, u64::MAX);
}

#[test]
fn quantities_format_like_kubernetes() {
    assert_eq!(format_milli_cpu(1500), "1500m");
    assert_eq!(format_milli_cpu(2000), "2");
    assert_eq!(format_milli_cpu(0), "0");
    assert_eq!(format_bytes(1536 * MI, Rounding::Down), "1.5Gi");
    assert_eq!(format_bytes(2 * GI, Rounding::Up), "2Gi");
    assert_eq!(format_bytes(512 * MI, Rounding::Up), "512Mi");
    assert_eq!(format_bytes(1000, Rounding::Up), "1000");
    assert_eq!(format_bytes(GI + 1, Rounding::Down), "1Gi");
    assert_eq!(format_bytes(GI + 1, Rounding::Up), "1.01Gi");
    assert_eq!(format_bytes(GI + GI / 3, Rounding::Down), "1.33Gi");
    assert_eq!(format_bytes(u64::MAX, Rounding::Down), "15.99Ei");
}

#[test]
fn bench_workload_is_deterministic() {
    let (a, b) = (bench_place(20, 300, 7), bench_place(20, 300, 7));
    assert_eq!((a.placed, a.unschedulable), (b.placed, b.unschedulable));
    assert_eq!(a.placed + a.unschedulable, 300);
    assert!(a.placed > 0);
}

// ---- properties, against a brute-force model ----

/// The test's own account of the cluster, kept by brute force.
#[derive(Debug, Default)]
struct Model {
    nodes: BTreeMap<String, NodeInfo>,
    /// Pod key → (pod, node).
    pods: BTreeMap<String, (PodRequest, String)>,
}

#[derive(Debug, Default)]
struct Used {
    cpu: u128,
    memory: u128,
    scoring_cpu: u128,
    scoring_memory: u128,
    pods: u32,
    ports: Vec<HostPort>,
}

fn clean_ports(ports: &[HostPort]) -> Vec<HostPort> {
    let mut v: Vec<HostPort> = ports.iter().copied().filter(|p| p.port != 0).collect();
    v.sort();
    v.dedup();
    v
}

impl Model {
    fn used(&self, node: &str) -> Used {
        let mut u = Used::default();
        for (p, _) in self.pods.values().filter(|(_, n)| n == node) {
            u.cpu += u128::from(p.requests.milli_cpu);
            u.memory += u128::from(p.requests.memory_bytes);
            u.scoring_cpu += u128::from(if p.requests.milli_cpu == 0 { 100 } else { p.requests.milli_cpu });
            u.scoring_memory +=
                u128::from(if p.requests.memory_bytes == 0 { 200 * MI } else { p.requests.memory_bytes });
            u.pods += 1;
            u.ports.extend(clean_ports(&p.host_ports));
        }
        u.ports.sort();
        u
    }

    /// Every reason of the first failing filter stage; empty if the pod fits.
    fn reasons(&self, n: &NodeInfo, p: &PodRequest) -> Vec<NodeRejection> {
        if !n.ready {
            return vec![NodeRejection::NotReady];
        }
        if n.unschedulable {
            return vec![NodeRejection::Cordoned];
        }
        let used = self.used(&n.name);
        let in_use: Vec<NodeRejection> = clean_ports(&p.host_ports)
            .into_iter()
            .filter(|port| used.ports.contains(port))
            .map(|port| NodeRejection::HostPortInUse { port })
            .collect();
        if !in_use.is_empty() {
            return in_use;
        }
        let a = n.allocatable;
        let mut r = Vec::new();
        if used.pods >= a.pods {
            r.push(NodeRejection::TooManyPods { allocatable: a.pods });
        }
        if used.cpu + u128::from(p.requests.milli_cpu) > u128::from(a.milli_cpu) {
            let free = u128::from(a.milli_cpu).saturating_sub(used.cpu) as u64;
            r.push(NodeRejection::InsufficientCpu { requested: p.requests.milli_cpu, free });
        }
        if used.memory + u128::from(p.requests.memory_bytes) > u128::from(a.memory_bytes) {
            let free = u128::from(a.memory_bytes).saturating_sub(used.memory) as u64;
            r.push(NodeRejection::InsufficientMemory { requested: p.requests.memory_bytes, free });
        }
        r
    }

    fn replicas(&self, owner: &str, node: &str) -> u32 {
        self.pods.values().filter(|(p, n)| n == node && p.owner.as_deref() == Some(owner)).count() as u32
    }

    /// The documented formula, written out independently.
    fn expected_schedule(&self, p: &PodRequest) -> Result<Placement, Unschedulable> {
        let feasible: Vec<&NodeInfo> = self.nodes.values().filter(|n| self.reasons(n, p).is_empty()).collect();
        if feasible.is_empty() {
            return Err(self.expected_diagnosis(p));
        }
        let free_score = |alloc: u64, used: u128| -> u64 {
            if alloc == 0 { 0 } else { (u128::from(alloc).saturating_sub(used) * 10_000 / u128::from(alloc)) as u64 }
        };
        let pod_cpu = u128::from(if p.requests.milli_cpu == 0 { 100 } else { p.requests.milli_cpu });
        let pod_memory = u128::from(if p.requests.memory_bytes == 0 { 200 * MI } else { p.requests.memory_bytes });
        let max = match &p.owner {
            Some(o) => feasible.iter().map(|n| self.replicas(o, &n.name)).max().unwrap_or(0),
            None => 0,
        };
        let mut best: Option<Placement> = None;
        for n in feasible {
            let used = self.used(&n.name);
            let resources = (free_score(n.allocatable.milli_cpu, used.scoring_cpu + pod_cpu)
                + free_score(n.allocatable.memory_bytes, used.scoring_memory + pod_memory))
                / 2;
            let spread = match &p.owner {
                None => 0,
                Some(_) if max == 0 => 20_000,
                Some(o) => 20_000 * u64::from(max - self.replicas(o, &n.name)) / u64::from(max),
            };
            let score = resources + spread;
            if best.as_ref().is_none_or(|b| score > b.score) {
                best = Some(Placement { node: n.name.clone(), score });
            }
        }
        Ok(best.unwrap())
    }

    fn expected_diagnosis(&self, p: &PodRequest) -> Unschedulable {
        let mut u = Unschedulable { nodes: self.nodes.len() as u32, ..Default::default() };
        let mut cpu = Shortfall { requested: p.requests.milli_cpu, ..Default::default() };
        let mut memory = Shortfall { requested: p.requests.memory_bytes, ..Default::default() };
        for n in self.nodes.values() {
            let reasons = self.reasons(n, p);
            assert!(!reasons.is_empty());
            let mut port_counted = false;
            for r in reasons {
                match r {
                    NodeRejection::NotReady => u.not_ready += 1,
                    NodeRejection::Cordoned => u.cordoned += 1,
                    NodeRejection::HostPortInUse { port } => {
                        if !port_counted {
                            u.host_port_conflict += 1;
                            port_counted = true;
                        }
                        if !u.ports_in_use.contains(&port) {
                            u.ports_in_use.push(port);
                        }
                    }
                    NodeRejection::TooManyPods { .. } => u.too_many_pods += 1,
                    NodeRejection::InsufficientCpu { free, .. } => {
                        cpu.nodes += 1;
                        cpu.largest_free = cpu.largest_free.max(free);
                    }
                    NodeRejection::InsufficientMemory { free, .. } => {
                        memory.nodes += 1;
                        memory.largest_free = memory.largest_free.max(free);
                    }
                }
            }
        }
        u.ports_in_use.sort();
        u.insufficient_cpu = (cpu.nodes > 0).then_some(cpu);
        u.insufficient_memory = (memory.nodes > 0).then_some(memory);
        u
    }

    /// The implementation's view of every node matches the model's.
    fn check_usage(&self, state: &ClusterState) {
        assert_eq!(state.node_count(), self.nodes.len());
        assert_eq!(state.pod_count(), self.pods.len());
        for (name, info) in &self.nodes {
            let usage = state.node(name).unwrap();
            let used = self.used(name);
            assert_eq!(&usage.info, info);
            assert_eq!(u128::from(usage.requested.milli_cpu), used.cpu);
            assert_eq!(u128::from(usage.requested.memory_bytes), used.memory);
            assert_eq!(usage.pods, used.pods);
            let mut ports = used.ports.clone();
            ports.dedup();
            assert_eq!(usage.host_ports, ports, "{name}");
        }
        for (key, (_, node)) in &self.pods {
            assert_eq!(state.pod_node(key), Some(node.as_str()));
        }
    }

    /// No node holds more than it offers, and no host port is bound twice.
    fn check_not_over_committed(&self, name: &str) {
        let n = &self.nodes[name];
        let used = self.used(name);
        assert!(used.cpu <= u128::from(n.allocatable.milli_cpu), "{name} cpu over-committed: {used:?}");
        assert!(used.memory <= u128::from(n.allocatable.memory_bytes), "{name} memory over-committed");
        assert!(used.pods <= n.allocatable.pods, "{name} has too many pods");
        let mut ports = used.ports.clone();
        ports.dedup();
        assert_eq!(ports.len(), used.ports.len(), "{name} binds a host port twice");
    }
}

impl Model {
    /// A pod just placed on `name` keeps the node within its resources, and
    /// none of its host ports is bound by another pod there. (Other pods may
    /// share ports among themselves on a node that `record_bound` over-committed.)
    fn check_placement_fits(&self, name: &str, key: &str) {
        let n = &self.nodes[name];
        let used = self.used(name);
        assert!(used.cpu <= u128::from(n.allocatable.milli_cpu), "{name} cpu over-committed by {key}");
        assert!(used.memory <= u128::from(n.allocatable.memory_bytes), "{name} memory over-committed by {key}");
        assert!(used.pods <= n.allocatable.pods, "{name} has too many pods after {key}");
        let (pod, _) = &self.pods[key];
        for port in clean_ports(&pod.host_ports) {
            let others = self
                .pods
                .iter()
                .filter(|(k, (p, on))| *k != key && on == name && clean_ports(&p.host_ports).contains(&port))
                .count();
            assert_eq!(others, 0, "{key} binds {port} already in use on {name}");
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    AddNode(NodeInfo),
    UpdateNode(NodeInfo),
    RemoveNode(String),
    SetReady(String, Readiness),
    SetSchedulable(String, Schedulability),
    Place(PodRequest),
    Assume(PodRequest, String),
    RecordBound(PodRequest, String),
    Forget(String),
}

fn node_name() -> impl Strategy<Value = String> {
    (0..5u8).prop_map(|i| format!("n{i}"))
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (
        node_name(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
        prop::sample::select(vec![0u64, 1000, 4000, 8000, 16_000]),
        prop::sample::select(vec![0u64, GI, 4 * GI, 8 * GI, 16 * GI]),
        prop_oneof![1 => Just(0u32), 4 => 1..8u32],
    )
        .prop_map(|(name, ready, unschedulable, milli_cpu, memory_bytes, pods)| NodeInfo {
            name,
            ready,
            unschedulable,
            allocatable: Resources { milli_cpu, memory_bytes, pods },
        })
}

fn pod_request() -> impl Strategy<Value = PodRequest> {
    let port = (prop::sample::select(vec![Protocol::Tcp, Protocol::Udp]), prop::sample::select(vec![0u16, 80, 443]))
        .prop_map(|(protocol, port)| HostPort { protocol, port });
    (
        0..40u8,
        prop::option::weighted(0.7, 0..3u8),
        prop::sample::select(vec![0u64, 100, 500, 1000, 2000, 4000]),
        prop::sample::select(vec![0u64, 128 * MI, 512 * MI, GI, 3 * GI]),
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(port, 1..=2)],
    )
        .prop_map(|(key, owner, milli_cpu, memory_bytes, host_ports)| PodRequest {
            key: format!("ns/p{key}"),
            owner: owner.map(|o| format!("ns/deploy-{o}")),
            requests: Requests { milli_cpu, memory_bytes },
            host_ports,
        })
}

fn pod_key() -> impl Strategy<Value = String> {
    (0..40u8).prop_map(|k| format!("ns/p{k}"))
}

/// Operations that can never over-commit a node.
fn checked_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => node_info().prop_map(Op::AddNode),
        1 => node_name().prop_map(Op::RemoveNode),
        1 => (node_name(), prop::sample::select(vec![Readiness::Ready, Readiness::NotReady]))
            .prop_map(|(n, r)| Op::SetReady(n, r)),
        1 => (node_name(), prop::sample::select(vec![Schedulability::Schedulable, Schedulability::Cordoned]))
            .prop_map(|(n, s)| Op::SetSchedulable(n, s)),
        6 => pod_request().prop_map(Op::Place),
        2 => (pod_request(), node_name()).prop_map(|(p, n)| Op::Assume(p, n)),
        3 => pod_key().prop_map(Op::Forget),
    ]
}

/// Adds the operations that may over-commit: bound pods and shrinking nodes.
fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => checked_op(),
        1 => node_info().prop_map(Op::UpdateNode),
        1 => (pod_request(), node_name()).prop_map(|(p, n)| Op::RecordBound(p, n)),
    ]
}

/// Applies `op` to both and checks the implementation's answer against the
/// model's. Returns the node and key of a pod just placed by a filtered path
/// (place or assume).
fn apply(state: &mut ClusterState, model: &mut Model, op: Op) -> Option<(String, String)> {
    let unknown = |n: &str| UpdateError::UnknownNode { node: n.to_owned() };
    match op {
        Op::AddNode(info) => {
            let expected = if model.nodes.contains_key(&info.name) {
                Err(UpdateError::NodeExists { node: info.name.clone() })
            } else {
                Ok(())
            };
            assert_eq!(state.add_node(info.clone()), expected);
            model.nodes.entry(info.name.clone()).or_insert(info);
        }
        Op::UpdateNode(info) => {
            let expected = if model.nodes.contains_key(&info.name) { Ok(()) } else { Err(unknown(&info.name)) };
            assert_eq!(state.update_node(info.clone()), expected);
            if let Some(n) = model.nodes.get_mut(&info.name) {
                *n = info;
            }
        }
        Op::RemoveNode(name) => {
            let result = state.remove_node(&name);
            if model.nodes.remove(&name).is_some() {
                let orphans: Vec<String> =
                    model.pods.iter().filter(|(_, (_, n))| *n == name).map(|(k, _)| k.clone()).collect();
                model.pods.retain(|_, (_, n)| *n != name);
                assert_eq!(result, Ok(orphans));
            } else {
                assert_eq!(result, Err(unknown(&name)));
            }
        }
        Op::SetReady(name, readiness) => {
            let result = state.set_node_ready(&name, readiness);
            match model.nodes.get_mut(&name) {
                Some(n) => {
                    assert_eq!(result, Ok(()));
                    n.ready = readiness == Readiness::Ready;
                }
                None => assert_eq!(result, Err(unknown(&name))),
            }
        }
        Op::SetSchedulable(name, s) => {
            let result = state.set_node_schedulable(&name, s);
            match model.nodes.get_mut(&name) {
                Some(n) => {
                    assert_eq!(result, Ok(()));
                    n.unschedulable = s == Schedulability::Cordoned;
                }
                None => assert_eq!(result, Err(unknown(&name))),
            }
        }
        Op::Place(p) => {
            let scheduled = state.schedule(&p);
            let result = state.place(&p);
            if let Some((_, on)) = model.pods.get(&p.key) {
                assert_eq!(result, Err(PlaceError::PodExists { pod: p.key.clone(), node: on.clone() }));
                return None;
            }
            let expected = model.expected_schedule(&p);
            // `schedule` (pure) and `place` agree, and both match the oracle.
            assert_eq!(scheduled, expected);
            assert_eq!(result, expected.clone().map_err(PlaceError::Unschedulable));
            if let Ok(placement) = expected {
                model.pods.insert(p.key.clone(), (p.clone(), placement.node.clone()));
                return Some((placement.node, p.key));
            }
        }
        Op::Assume(p, name) => {
            let result = state.assume(&p, &name);
            let expected = match (model.nodes.get(&name), model.pods.get(&p.key)) {
                (_, Some((_, on))) => Err(UpdateError::PodExists { pod: p.key.clone(), node: on.clone() }),
                (None, None) => Err(unknown(&name)),
                (Some(n), None) => match model.reasons(n, &p).first() {
                    Some(&reason) => Err(UpdateError::DoesNotFit { pod: p.key.clone(), node: name.clone(), reason }),
                    None => Ok(()),
                },
            };
            assert_eq!(result, expected);
            if result.is_ok() {
                model.pods.insert(p.key.clone(), (p.clone(), name.clone()));
                return Some((name, p.key));
            }
        }
        Op::RecordBound(p, name) => {
            let result = state.record_bound(&p, &name);
            let expected = match (model.nodes.contains_key(&name), model.pods.get(&p.key)) {
                (_, Some((_, on))) => Err(UpdateError::PodExists { pod: p.key.clone(), node: on.clone() }),
                (false, None) => Err(unknown(&name)),
                (true, None) => Ok(()),
            };
            assert_eq!(result, expected);
            if result.is_ok() {
                model.pods.insert(p.key.clone(), (p, name));
            }
        }
        Op::Forget(key) => {
            let result = state.forget(&key);
            match model.pods.remove(&key) {
                Some((_, node)) => assert_eq!(result, Ok(node)),
                None => assert_eq!(result, Err(UpdateError::UnknownPod { pod: key })),
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// After any sequence of schedule/assume/forget/node changes, no node is
    /// over-committed (cpu, memory, pods, host ports); every decision matches
    /// the brute-force oracle, so a pod is Unschedulable exactly when no node
    /// passes the filter, with the oracle's counts.
    #[test]
    fn no_node_is_ever_over_committed(ops in prop::collection::vec(checked_op(), 1..80)) {
        let (mut state, mut model) = (ClusterState::new(), Model::default());
        for op in ops {
            apply(&mut state, &mut model, op);
            model.check_usage(&state);
            for name in model.nodes.keys() {
                model.check_not_over_committed(name);
            }
        }
    }

    /// With bound pods and shrinking nodes, nodes may be over-committed, but
    /// the scheduler never adds to that: a node it picks is within its limits
    /// afterwards, and the oracle still agrees with every decision.
    #[test]
    fn scheduling_never_over_commits_even_beside_over_committed_nodes(
        ops in prop::collection::vec(any_op(), 1..80)
    ) {
        let (mut state, mut model) = (ClusterState::new(), Model::default());
        for op in ops {
            if let Some((node, key)) = apply(&mut state, &mut model, op) {
                model.check_placement_fits(&node, &key);
            }
            model.check_usage(&state);
        }
    }

    /// Replicas of one owner on equal nodes: while at most two per node are
    /// needed, spreading beats any request mix, so the counts differ by at
    /// most one.
    #[test]
    fn one_owner_spreads_evenly_whatever_the_requests(
        nodes in 1..8usize,
        requests in prop::collection::vec((0..=4000u64, 0..=8 * GI), 1..16),
    ) {
        let mut state = ClusterState::new();
        for i in 0..nodes {
            state.add_node(node(&format!("n{i}"), 64_000, 256 * GI)).unwrap();
        }
        for (i, (cpu, memory)) in requests.iter().take(2 * nodes).enumerate() {
            state.place(&pod(&format!("ns/web-{i}"), Some("ns/web"), *cpu, *memory)).unwrap();
        }
        let counts: Vec<u32> = state.nodes().map(|n| n.pods).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        prop_assert!(max - min <= 1, "{counts:?}");
    }

    /// Replicas of one owner (one template, so equal requests) on equal
    /// nodes: the counts differ by at most one, however many there are, until
    /// the nodes are full.
    #[test]
    fn one_owner_spreads_evenly_until_full(
        nodes in 1..8usize,
        replicas in 1..120usize,
        cpu in 0..=3000u64,
        memory in 0..=4 * GI,
    ) {
        let mut state = ClusterState::new();
        for i in 0..nodes {
            let mut n = node(&format!("n{i}"), 32_000, 64 * GI);
            n.allocatable.pods = 20;
            state.add_node(n).unwrap();
        }
        for i in 0..replicas {
            if state.place(&pod(&format!("ns/web-{i}"), Some("ns/web"), cpu, memory)).is_err() {
                break;
            }
        }
        let counts: Vec<u32> = state.nodes().map(|n| n.pods).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        prop_assert!(max - min <= 1, "{counts:?}");
    }
}
