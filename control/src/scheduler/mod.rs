//! The scheduler: picks a node for each pending pod, filter then score.
//!
//! This is kube-scheduler's model, kept small and pure: no I/O, no clock, no
//! threads. The API layer converts Node and Pod objects into [`NodeInfo`] and
//! [`PodRequest`], keeps a [`ClusterState`] current from its watches, asks
//! [`ClusterState::schedule`] (or [`ClusterState::place`]) for a node and
//! stores the answer: the binding, or the [`Unschedulable`] message as the
//! pod's `PodScheduled=False` condition.
//!
//! # Design
//!
//! **State.** [`ClusterState`] is the scheduler's cache: per node its
//! allocatable resources, the requests of the pods already placed on it (the
//! real sums for filtering, and sums with kube's non-zero defaults for
//! scoring), the number of pods, the host ports in use and, per owner, how
//! many of its replicas run there. Pod updates are incremental and O(1);
//! adding or removing a node rebuilds the name-ordered node list, and
//! removing one also scans the pods for the ones it ran (nodes change rarely;
//! pods change all the time).
//! Nodes live in stable slots; names and owners are looked up once per call,
//! never inside the per-node loop.
//!
//! **Decisions and facts.** [`ClusterState::assume`] records a decision
//! and refuses a node that fails the filter; [`ClusterState::record_bound`]
//! records a fact (a pod the store says is bound, e.g. at start-up or set by
//! hand with `nodeName`) and accepts it even if it over-commits the node,
//! because what runs there must be counted; [`ClusterState::forget`] undoes
//! either. [`ClusterState::remove_node`] forgets the node's pods and returns
//! their keys for the caller to replace.
//!
//! **Filter.** A node is feasible for a pod when, in this order:
//! 1. it is Ready ([`NodeInfo::ready`]);
//! 2. it is not cordoned ([`NodeInfo::unschedulable`]);
//! 3. none of the pod's host ports (protocol, port) is in use on it;
//! 4. it runs fewer pods than `allocatable.pods`, and for CPU and memory
//!    `requested + pod ≤ allocatable` (kube's NodeResourcesFit; all three
//!    are checked together and every shortfall is reported).
//!
//! When no node passes, a second, slower pass records for every node the
//! first stage that rejected it (all resource shortfalls within stage 4) and
//! builds [`Unschedulable`], whose `Display` is kube-scheduler's message:
//! `0/3 nodes are available: 1 node(s) were not ready, 2 node(s) had
//! insufficient memory (pod requests 2Gi, largest free 1.5Gi).` Keeping the
//! diagnosis out of the hot loop keeps the common, successful case cheap.
//!
//! **Score.** Each feasible node gets `resources + spread`, both integers:
//! - `resources` is NodeResourcesLeastAllocated: the mean over CPU and memory
//!   of `(allocatable − requested − pod) × RESOURCE_SCORE_MAX / allocatable`,
//!   in `0..=`[`RESOURCE_SCORE_MAX`] (10 000, i.e. hundredths of a percent of
//!   free capacity, so large nodes do not collapse into ties). As in kube,
//!   scoring uses each pod's requests with a zero CPU request counted as
//!   [`DEFAULT_SCORING_MILLI_CPU`] and a zero memory request as
//!   [`DEFAULT_SCORING_MEMORY_BYTES`], so pods without requests still
//!   spread out; filtering uses the real requests. A resource a node has none
//!   of scores 0.
//! - `spread` is kube's SelectorSpread idea for pods with an owner:
//!   `SPREAD_SCORE_MAX × (m − c) / m`, where `c` is the number of the owner's
//!   replicas on the node and `m` the largest such count on any feasible
//!   node ([`SPREAD_SCORE_MAX`] = 2 × [`RESOURCE_SCORE_MAX`], kube's weight 2
//!   for spreading against 1 for resources). If `m = 0`, or the pod has no
//!   owner, every node gets the same spread score (full, resp. zero).
//!
//! So one replica fewer on a node is worth `2 × RESOURCE_SCORE_MAX / m`:
//! while the owner has at most two replicas on any feasible node, spreading
//! beats any resource difference (three replicas on three nodes land one per
//! node even if one node is much emptier); with ten replicas per node, a
//! resource advantage above 20 % of a node's capacity wins over a skew of
//! one. Spreading always wins a resource tie.
//!
//! **Ties.** Among equal scores the node whose name sorts first (bytewise)
//! wins: placement is a pure function of the state and the pod, so tests and
//! replays are reproducible. kube picks randomly among the best to keep
//! several schedulers from colliding; berth runs exactly one scheduler (the
//! leader), so determinism costs nothing. The loop walks nodes in name order
//! and keeps the first maximum, so no names are compared per node.
//!
//! **Cost.** Every feasible node is scored (no sampling): per pod one pass
//! over the nodes doing a handful of comparisons and three integer
//! divisions, with at most three scratch allocations per pod (candidates,
//! the owner's dense replica counts, the pod's host ports) and none per
//! node. kube's `percentageOfNodesToScore` trades optimality for speed on clusters of
//! thousands of nodes; at berth's scale the exact answer is cheap enough, and
//! exactness is what lets the tests check every decision against a brute
//! force oracle. [`bench_place`] measures the throughput.
//!
//! # Limitations
//! - Only the filters and scores above: no taints and tolerations, node
//!   affinity, pod (anti-)affinity, topology zones, extended resources,
//!   ephemeral storage, volumes, preemption or priorities. A cordoned node is
//!   never used (kube's tolerations could override that).
//! - Host ports ignore `hostIP`: a port is in use if any pod on the node uses
//!   it, whatever address it binds (conservative). Port 0 means "no host
//!   port", as in kube, and is ignored.
//! - [`Requests::from_containers`] models regular and init containers;
//!   restartable (sidecar) init containers and pod overhead are not modelled.
//! - Spreading is per owner key only (the caller passes the Deployment, so
//!   old and new ReplicaSets spread together); it does not look at Services
//!   or labels.
//! - Exact ties always go to the lowest name, a small bias towards
//!   low-named nodes that kube's random tie-break avoids.
//! - The state is not shared: callers wrap it in their own lock, and a
//!   scheduling decision must be followed by [`ClusterState::assume`] (or use
//!   [`ClusterState::place`]) before the next one, as kube's scheduler cache
//!   does.

use serde::{Deserialize, Serialize};

mod bench;
mod state;
mod unschedulable;

#[cfg(test)]
mod tests;

pub use bench::{PlacementStats, bench_place};
pub use state::{
    ClusterState, NodeRejection, NodeUsage, PlaceError, Placement, Readiness, Schedulability, UpdateError,
};
pub use unschedulable::{Shortfall, Unschedulable};

/// Top of the resource (least allocated) score: a node with everything free.
pub const RESOURCE_SCORE_MAX: u64 = 10_000;
/// Top of the spreading score: a node with none of the owner's replicas.
pub const SPREAD_SCORE_MAX: u64 = 2 * RESOURCE_SCORE_MAX;
/// CPU counted for scoring when a pod requests none (kube's `DefaultMilliCPURequest`).
pub const DEFAULT_SCORING_MILLI_CPU: u64 = 100;
/// Memory counted for scoring when a pod requests none (kube's `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_SCORING_MEMORY_BYTES: u64 = 200 * 1024 * 1024;

/// What a node offers to pods: kube's `status.allocatable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core (`"1500m"` is 1500).
    pub milli_cpu: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// How many pods the node accepts (kubelet's `maxPods`, 110 by default).
    pub pods: u32,
}

/// What a pod asks for: CPU and memory requests, summed over its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requests {
    /// CPU in thousandths of a core.
    pub milli_cpu: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// One container's resource requests and limits, as far as scheduling cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResources {
    /// `resources.requests.cpu` in millicores, if set.
    pub request_milli_cpu: Option<u64>,
    /// `resources.requests.memory` in bytes, if set.
    pub request_memory_bytes: Option<u64>,
    /// `resources.limits.cpu` in millicores, if set.
    pub limit_milli_cpu: Option<u64>,
    /// `resources.limits.memory` in bytes, if set.
    pub limit_memory_bytes: Option<u64>,
}

impl ContainerResources {
    /// The container's effective requests. kube's defaulting rule, per
    /// resource: a container with a limit but no request requests its limit;
    /// with neither it requests zero.
    pub fn effective_requests(&self) -> Requests {
        Requests {
            milli_cpu: self.request_milli_cpu.or(self.limit_milli_cpu).unwrap_or(0),
            memory_bytes: self.request_memory_bytes.or(self.limit_memory_bytes).unwrap_or(0),
        }
    }
}

impl Requests {
    /// A pod's requests from its containers, as kube computes them: per
    /// resource, the larger of the sum over regular containers and the
    /// largest init container (init containers run one at a time, before the
    /// others). Sums saturate instead of overflowing; a saturated request
    /// fits no node.
    pub fn from_containers(containers: &[ContainerResources], init_containers: &[ContainerResources]) -> Requests {
        let mut sum = Requests::default();
        for c in containers {
            let r = c.effective_requests();
            sum.milli_cpu = sum.milli_cpu.saturating_add(r.milli_cpu);
            sum.memory_bytes = sum.memory_bytes.saturating_add(r.memory_bytes);
        }
        for c in init_containers {
            let r = c.effective_requests();
            sum.milli_cpu = sum.milli_cpu.max(r.milli_cpu);
            sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
        }
        sum
    }
}

/// Transport protocol of a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (kube's default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A port a pod binds on its node (a container port's `hostPort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPort {
    /// The protocol; TCP/80 and UDP/80 do not conflict.
    pub protocol: Protocol,
    /// The port number, host byte order; 0 means "none" and is ignored.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// The Ready condition is True (the agent renews its lease).
    pub ready: bool,
    /// `spec.unschedulable`: the node is cordoned.
    pub unschedulable: bool,
    /// What the node offers to pods.
    pub allocatable: Resources,
}

/// A pod to place, or already placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRequest {
    /// `namespace/name`, unique in the cluster.
    pub key: String,
    /// The workload the pod is a replica of, for spreading: a cluster-unique
    /// key such as `namespace/deployment`. Pass the Deployment rather than
    /// the ReplicaSet so that a rolling update's old and new replicas spread
    /// together. `None` for a bare pod.
    pub owner: Option<String>,
    /// CPU and memory requests, see [`Requests::from_containers`].
    pub requests: Requests,
    /// Host ports the pod binds; duplicates and port 0 are ignored.
    pub host_ports: Vec<HostPort>,
}
