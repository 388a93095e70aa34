//! The scheduler's cache of nodes and placed pods, and the filter and score
//! that run over it. See the module doc of [`crate::scheduler`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::unschedulable::{Shortfall, Unschedulable};
use super::{
    DEFAULT_SCORING_MEMORY_BYTES, DEFAULT_SCORING_MILLI_CPU, HostPort, NodeInfo, PodRequest, RESOURCE_SCORE_MAX,
    Requests, Resources, SPREAD_SCORE_MAX,
};

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The chosen node.
    pub node: String,
    /// Its score: resources (`0..=RESOURCE_SCORE_MAX`) plus spread
    /// (`0..=SPREAD_SCORE_MAX`); the highest among the feasible nodes.
    pub score: u64,
}

/// Why one node cannot take one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NodeRejection {
    /// The node is not Ready.
    #[error("node is not ready")]
    NotReady,
    /// The node is cordoned (`spec.unschedulable`).
    #[error("node is unschedulable (cordoned)")]
    Cordoned,
    /// A pod on the node already binds this host port.
    #[error("host port {port} is in use")]
    HostPortInUse {
        /// The conflicting port.
        port: HostPort,
    },
    /// The node already runs `allocatable` pods.
    #[error("too many pods (allocatable {allocatable})")]
    TooManyPods {
        /// The node's pod capacity.
        allocatable: u32,
    },
    /// Not enough unrequested CPU.
    #[error("insufficient cpu (pod requests {requested}m, free {free}m)")]
    InsufficientCpu {
        /// The pod's request, millicores.
        requested: u64,
        /// Allocatable minus the requests of the node's pods, millicores.
        free: u64,
    },
    /// Not enough unrequested memory.
    #[error("insufficient memory (pod requests {requested} bytes, free {free} bytes)")]
    InsufficientMemory {
        /// The pod's request, bytes.
        requested: u64,
        /// Allocatable minus the requests of the node's pods, bytes.
        free: u64,
    },
}

/// An update to [`ClusterState`] that was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// `add_node` with a name already present.
    #[error("node {node} already exists")]
    NodeExists {
        /// The node's name.
        node: String,
    },
    /// The named node is not in the state.
    #[error("node {node} is not known")]
    UnknownNode {
        /// The node's name.
        node: String,
    },
    /// The pod is already placed; forget it first to move it.
    #[error("pod {pod} is already placed on node {node}")]
    PodExists {
        /// The pod's key.
        pod: String,
        /// Where it is.
        node: String,
    },
    /// The pod is not placed anywhere.
    #[error("pod {pod} is not known")]
    UnknownPod {
        /// The pod's key.
        pod: String,
    },
    /// `assume` on a node that fails the filter.
    #[error("pod {pod} does not fit on node {node}: {reason}")]
    DoesNotFit {
        /// The pod's key.
        pod: String,
        /// The node's name.
        node: String,
        /// The first filter the node failed.
        reason: NodeRejection,
    },
}

/// [`ClusterState::place`] failed; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The pod is already placed; forget it first to move it.
    #[error("pod {pod} is already placed on node {node}")]
    PodExists {
        /// The pod's key.
        pod: String,
        /// Where it is.
        node: String,
    },
    /// No node passes the filter.
    #[error(transparent)]
    Unschedulable(#[from] Unschedulable),
}

/// A node with what its pods use, as [`ClusterState::node`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// The node as last added or updated.
    pub info: NodeInfo,
    /// Sum of the requests of the pods placed on it (saturating at `u64::MAX`).
    pub requested: Requests,
    /// Number of pods placed on it.
    pub pods: u32,
    /// Host ports in use, sorted.
    pub host_ports: Vec<HostPort>,
}

/// A node in its slot. Sums are `u128` so that adding and removing pods is
/// exact whatever the requests (no saturation to undo).
#[derive(Debug)]
struct NodeSlot {
    name: String,
    ready: bool,
    cordoned: bool,
    allocatable: Resources,
    /// Real requests: what the filter checks.
    requested_cpu: u128,
    requested_memory: u128,
    /// Requests with the non-zero defaults: what the score uses.
    scoring_cpu: u128,
    scoring_memory: u128,
    pods: u32,
    /// Host port → number of pods binding it (more than one only through
    /// [`ClusterState::record_bound`]).
    host_ports: HashMap<HostPort, u32>,
}

#[derive(Debug)]
struct PlacedPod {
    slot: u32,
    requests: Requests,
    /// Normalized: sorted, no duplicates, no port 0.
    host_ports: Vec<HostPort>,
    owner: Option<String>,
}

/// One feasible node during a scheduling pass.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    slot: u32,
    resources: u64,
    replicas: u32,
}

/// Nodes, the pods placed on them, and the scheduling decisions over them.
///
/// See the module doc for the filter and score. All methods leave the state
/// unchanged when they return an error.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Stable slots; a removed node's slot is reused by the next added one.
    slots: Vec<Option<NodeSlot>>,
    free_slots: Vec<u32>,
    by_name: BTreeMap<String, u32>,
    /// Live slots in name order: the scheduling loop's iteration order, which
    /// makes "first maximum" mean "lowest name among the best".
    order: Vec<u32>,
    pods: HashMap<String, PlacedPod>,
    /// Owner → slot → replicas there (no zero entries, no empty owners).
    owners: HashMap<String, HashMap<u32, u32>>,
}

impl ClusterState {
    /// An empty cluster.
    pub fn new() -> ClusterState {
        ClusterState::default()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.by_name.len()
    }

    /// Number of placed pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// A node and what its pods use.
    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        let slot = *self.by_name.get(name)?;
        self.slot(slot).map(NodeSlot::usage)
    }

    /// All nodes in name order, with what their pods use.
    pub fn nodes(&self) -> impl Iterator<Item = NodeUsage> + '_ {
        self.order.iter().filter_map(|&slot| self.slot(slot)).map(NodeSlot::usage)
    }

    /// The node a pod is placed on.
    pub fn pod_node(&self, pod: &str) -> Option<&str> {
        let placed = self.pods.get(pod)?;
        self.slot(placed.slot).map(|n| n.name.as_str())
    }

    /// Adds a node with no pods.
    ///
    /// # Errors
    /// [`UpdateError::NodeExists`] if the name is taken.
    pub fn add_node(&mut self, info: NodeInfo) -> Result<(), UpdateError> {
        if self.by_name.contains_key(&info.name) {
            return Err(UpdateError::NodeExists { node: info.name });
        }
        let node = NodeSlot {
            name: info.name.clone(),
            ready: info.ready,
            cordoned: info.unschedulable,
            allocatable: info.allocatable,
            requested_cpu: 0,
            requested_memory: 0,
            scoring_cpu: 0,
            scoring_memory: 0,
            pods: 0,
            host_ports: HashMap::new(),
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                // Free slots are indices into `slots`, which never shrinks.
                self.slots[slot as usize] = Some(node);
                slot
            }
            None => {
                // More than 2^32 nodes is far outside what this scheduler is for.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(node));
                slot
            }
        };
        self.by_name.insert(info.name, slot);
        self.rebuild_order();
        Ok(())
    }

    /// Replaces a node's readiness, cordon and allocatable resources, keeping
    /// its pods. Shrinking allocatable below what is placed is allowed (the
    /// node then takes no more pods until enough are forgotten).
    ///
    /// # Errors
    /// [`UpdateError::UnknownNode`] if there is no such node.
    pub fn update_node(&mut self, info: NodeInfo) -> Result<(), UpdateError> {
        let node = self.node_mut(&info.name)?;
        node.ready = info.ready;
        node.cordoned = info.unschedulable;
        node.allocatable = info.allocatable;
        Ok(())
    }

    /// Sets a node's Ready condition.
    ///
    /// # Errors
    /// [`UpdateError::UnknownNode`] if there is no such node.
    pub fn set_node_ready(&mut self, name: &str, readiness: Readiness) -> Result<(), UpdateError> {
        self.node_mut(name)?.ready = readiness == Readiness::Ready;
        Ok(())
    }

    /// Cordons or uncordons a node.
    ///
    /// # Errors
    /// [`UpdateError::UnknownNode`] if there is no such node.
    pub fn set_node_schedulable(&mut self, name: &str, schedulability: Schedulability) -> Result<(), UpdateError> {
        self.node_mut(name)?.cordoned = schedulability == Schedulability::Cordoned;
        Ok(())
    }

    /// Removes a node and forgets the pods placed on it, returning their keys
    /// (sorted) so the caller can reschedule or delete them.
    ///
    /// # Errors
    /// [`UpdateError::UnknownNode`] if there is no such node.
    pub fn remove_node(&mut self, name: &str) -> Result<Vec<String>, UpdateError> {
        let Some(slot) = self.by_name.get(name).copied() else {
            return Err(UpdateError::UnknownNode { node: name.to_owned() });
        };
        let mut orphans: Vec<String> =
            self.pods.iter().filter(|(_, p)| p.slot == slot).map(|(key, _)| key.clone()).collect();
        orphans.sort_unstable();
        for key in &orphans {
            if let Some(placed) = self.pods.remove(key) {
                self.unaccount(placed);
            }
        }
        self.by_name.remove(name);
        // `by_name` only holds indices into `slots`, which never shrinks.
        self.slots[slot as usize] = None;
        self.free_slots.push(slot);
        self.rebuild_order();
        Ok(orphans)
    }

    /// Picks a node for `pod`, without changing the state: the feasible node
    /// with the highest score, the lowest name among equals. Follow with
    /// [`ClusterState::assume`] (or use [`ClusterState::place`]).
    ///
    /// # Errors
    /// [`Unschedulable`] when no node passes the filter, counting per filter
    /// the nodes that failed it.
    pub fn schedule(&self, pod: &PodRequest) -> Result<Placement, Unschedulable> {
        let (slot, score) = self.pick(pod)?;
        let node = self.slot(slot).map(|n| n.name.clone()).unwrap_or_default();
        Ok(Placement { node, score })
    }

    /// [`ClusterState::schedule`] then [`ClusterState::assume`] on the chosen node.
    ///
    /// # Errors
    /// [`PlaceError::PodExists`] if the pod is already placed,
    /// [`PlaceError::Unschedulable`] if no node passes the filter.
    pub fn place(&mut self, pod: &PodRequest) -> Result<Placement, PlaceError> {
        if let Some(node) = self.pod_node(&pod.key) {
            return Err(PlaceError::PodExists { pod: pod.key.clone(), node: node.to_owned() });
        }
        let (slot, score) = self.pick(pod)?;
        self.account(pod, slot);
        let node = self.slot(slot).map(|n| n.name.clone()).unwrap_or_default();
        Ok(Placement { node, score })
    }

    /// Records the scheduler's decision to put `pod` on `node` (before the
    /// binding is stored, as kube's scheduler cache does), after checking
    /// that the node passes the filter.
    ///
    /// # Errors
    /// [`UpdateError::UnknownNode`], [`UpdateError::PodExists`], or
    /// [`UpdateError::DoesNotFit`] with the first filter the node fails.
    pub fn assume(&mut self, pod: &PodRequest, node: &str) -> Result<(), UpdateError> {
        let slot = self.slot_for_new_pod(pod, node)?;
        if let Some(n) = self.slot(slot) {
            let mut first = None;
            if !check(n, pod.requests, &normalized_ports(&pod.host_ports), |r| {
                first.get_or_insert(r);
            }) {
                // `check` reports at least one rejection whenever it fails.
                let reason = first.unwrap_or(NodeRejection::NotReady);
                return Err(UpdateError::DoesNotFit { pod: pod.key.clone(), node: node.to_owned(), reason });
            }
        }
        self.account(pod, slot);
        Ok(())
    }

    /// Records a pod that is bound to `node` already, whether or not it fits:
    /// what the store says runs there must be counted even when it
    /// over-commits the node (loaded at start-up, bound by hand with
    /// `nodeName`, or left over after the node shrank). A node over-committed
    /// on CPU, memory or pod count takes no further pods; a host port bound
    /// twice stays unavailable until both pods are forgotten.
    ///
    /// # Errors
    /// [`UpdateError::UnknownNode`] or [`UpdateError::PodExists`].
    pub fn record_bound(&mut self, pod: &PodRequest, node: &str) -> Result<(), UpdateError> {
        let slot = self.slot_for_new_pod(pod, node)?;
        self.account(pod, slot);
        Ok(())
    }

    /// Forgets a placed pod (deleted, or its binding failed), returning the
    /// node it was on.
    ///
    /// # Errors
    /// [`UpdateError::UnknownPod`] if the pod is not placed.
    pub fn forget(&mut self, pod: &str) -> Result<String, UpdateError> {
        let Some(placed) = self.pods.remove(pod) else {
            return Err(UpdateError::UnknownPod { pod: pod.to_owned() });
        };
        let node = self.slot(placed.slot).map(|n| n.name.clone()).unwrap_or_default();
        self.unaccount(placed);
        Ok(node)
    }

    fn slot(&self, slot: u32) -> Option<&NodeSlot> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut NodeSlot, UpdateError> {
        self.by_name
            .get(name)
            .and_then(|&slot| self.slots.get_mut(slot as usize))
            .and_then(Option::as_mut)
            .ok_or_else(|| UpdateError::UnknownNode { node: name.to_owned() })
    }

    fn slot_for_new_pod(&self, pod: &PodRequest, node: &str) -> Result<u32, UpdateError> {
        if let Some(on) = self.pod_node(&pod.key) {
            return Err(UpdateError::PodExists { pod: pod.key.clone(), node: on.to_owned() });
        }
        self.by_name.get(node).copied().ok_or_else(|| UpdateError::UnknownNode { node: node.to_owned() })
    }

    fn rebuild_order(&mut self) {
        self.order.clear();
        self.order.extend(self.by_name.values().copied());
    }

    /// Adds a pod's usage to a live slot. The caller checked that the pod is
    /// not placed yet.
    fn account(&mut self, pod: &PodRequest, slot: u32) {
        let Some(node) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else { return };
        let host_ports = normalized_ports(&pod.host_ports);
        let scoring = scoring_requests(pod.requests);
        node.requested_cpu += u128::from(pod.requests.milli_cpu);
        node.requested_memory += u128::from(pod.requests.memory_bytes);
        node.scoring_cpu += u128::from(scoring.milli_cpu);
        node.scoring_memory += u128::from(scoring.memory_bytes);
        node.pods = node.pods.saturating_add(1);
        for &port in &host_ports {
            *node.host_ports.entry(port).or_insert(0) += 1;
        }
        if let Some(owner) = &pod.owner {
            *self.owners.entry(owner.clone()).or_default().entry(slot).or_insert(0) += 1;
        }
        self.pods
            .insert(pod.key.clone(), PlacedPod { slot, requests: pod.requests, host_ports, owner: pod.owner.clone() });
    }

    /// Removes a pod's usage from its slot; the pod is already out of `pods`.
    fn unaccount(&mut self, placed: PlacedPod) {
        if let Some(node) = self.slots.get_mut(placed.slot as usize).and_then(Option::as_mut) {
            let scoring = scoring_requests(placed.requests);
            node.requested_cpu -= u128::from(placed.requests.milli_cpu);
            node.requested_memory -= u128::from(placed.requests.memory_bytes);
            node.scoring_cpu -= u128::from(scoring.milli_cpu);
            node.scoring_memory -= u128::from(scoring.memory_bytes);
            node.pods -= 1;
            for port in &placed.host_ports {
                if let Some(n) = node.host_ports.get_mut(port) {
                    *n -= 1;
                    if *n == 0 {
                        node.host_ports.remove(port);
                    }
                }
            }
        }
        if let Some(owner) = &placed.owner
            && let Some(per_node) = self.owners.get_mut(owner)
        {
            if let Some(n) = per_node.get_mut(&placed.slot) {
                *n -= 1;
                if *n == 0 {
                    per_node.remove(&placed.slot);
                }
            }
            if per_node.is_empty() {
                self.owners.remove(owner);
            }
        }
    }

    /// Filter and score: the best feasible slot and its score.
    fn pick(&self, pod: &PodRequest) -> Result<(u32, u64), Unschedulable> {
        let ports = normalized_ports(&pod.host_ports);
        let scoring = scoring_requests(pod.requests);
        // Dense owner counts, so the loop indexes instead of hashing.
        let replicas: Option<Vec<u32>> = pod.owner.as_ref().and_then(|o| self.owners.get(o)).map(|per_node| {
            let mut dense = vec![0u32; self.slots.len()];
            for (&slot, &count) in per_node {
                if let Some(d) = dense.get_mut(slot as usize) {
                    *d = count;
                }
            }
            dense
        });

        let mut candidates = Vec::with_capacity(self.order.len());
        let mut max_replicas = 0u32;
        for &slot in &self.order {
            let Some(node) = self.slot(slot) else { continue };
            if !check(node, pod.requests, &ports, |_| {}) {
                continue;
            }
            let count = replicas.as_ref().and_then(|r| r.get(slot as usize).copied()).unwrap_or(0);
            max_replicas = max_replicas.max(count);
            candidates.push(Candidate { slot, resources: node.least_allocated(scoring), replicas: count });
        }

        let spread = |replicas: u32| -> u64 {
            match (&pod.owner, max_replicas) {
                (None, _) => 0,
                (Some(_), 0) => SPREAD_SCORE_MAX,
                (Some(_), max) => SPREAD_SCORE_MAX * u64::from(max - replicas) / u64::from(max),
            }
        };
        let mut best: Option<(u32, u64)> = None;
        for c in &candidates {
            let score = c.resources + spread(c.replicas);
            // Strictly greater: the first (lowest-named) node keeps a tie.
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((c.slot, score));
            }
        }
        best.ok_or_else(|| self.diagnose(pod, &ports))
    }

    /// The slow path after no node passed: which filter each node failed.
    fn diagnose(&self, pod: &PodRequest, ports: &[HostPort]) -> Unschedulable {
        // Node counts fit in u32: slots are numbered with u32.
        let nodes = u32::try_from(self.order.len()).unwrap_or(u32::MAX);
        let mut u = Unschedulable { nodes, ..Unschedulable::default() };
        let mut cpu = Shortfall { nodes: 0, requested: pod.requests.milli_cpu, largest_free: 0 };
        let mut memory = Shortfall { nodes: 0, requested: pod.requests.memory_bytes, largest_free: 0 };
        for node in self.order.iter().filter_map(|&slot| self.slot(slot)) {
            let (mut ports_in_use, mut too_many, mut short_cpu, mut short_memory) = (false, false, false, false);
            check(node, pod.requests, ports, |reason| match reason {
                NodeRejection::NotReady => u.not_ready += 1,
                NodeRejection::Cordoned => u.cordoned += 1,
                NodeRejection::HostPortInUse { port } => {
                    ports_in_use = true;
                    if !u.ports_in_use.contains(&port) {
                        u.ports_in_use.push(port);
                    }
                }
                NodeRejection::TooManyPods { .. } => too_many = true,
                NodeRejection::InsufficientCpu { free, .. } => {
                    short_cpu = true;
                    cpu.largest_free = cpu.largest_free.max(free);
                }
                NodeRejection::InsufficientMemory { free, .. } => {
                    short_memory = true;
                    memory.largest_free = memory.largest_free.max(free);
                }
            });
            u.host_port_conflict += u32::from(ports_in_use);
            u.too_many_pods += u32::from(too_many);
            cpu.nodes += u32::from(short_cpu);
            memory.nodes += u32::from(short_memory);
        }
        u.ports_in_use.sort_unstable();
        u.insufficient_cpu = (cpu.nodes > 0).then_some(cpu);
        u.insufficient_memory = (memory.nodes > 0).then_some(memory);
        u
    }
}

/// A node's Ready condition, for [`ClusterState::set_node_ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// Ready=True: the agent renews its lease.
    Ready,
    /// Ready=False or Unknown.
    NotReady,
}

/// Whether a node takes new pods, for [`ClusterState::set_node_schedulable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedulability {
    /// Takes new pods.
    Schedulable,
    /// `spec.unschedulable: true` (`kubectl cordon`).
    Cordoned,
}

impl NodeSlot {
    fn usage(&self) -> NodeUsage {
        let mut host_ports: Vec<HostPort> = self.host_ports.keys().copied().collect();
        host_ports.sort_unstable();
        NodeUsage {
            info: NodeInfo {
                name: self.name.clone(),
                ready: self.ready,
                unschedulable: self.cordoned,
                allocatable: self.allocatable,
            },
            requested: Requests {
                milli_cpu: u64::try_from(self.requested_cpu).unwrap_or(u64::MAX),
                memory_bytes: u64::try_from(self.requested_memory).unwrap_or(u64::MAX),
            },
            pods: self.pods,
            host_ports,
        }
    }

    /// NodeResourcesLeastAllocated with the pod added: `0..=RESOURCE_SCORE_MAX`.
    fn least_allocated(&self, pod: Requests) -> u64 {
        let cpu = free_score(self.allocatable.milli_cpu, self.scoring_cpu + u128::from(pod.milli_cpu));
        let memory = free_score(self.allocatable.memory_bytes, self.scoring_memory + u128::from(pod.memory_bytes));
        (cpu + memory) / 2
    }
}

/// The filter. Returns whether `node` can take a pod with these requests and
/// (normalized) host ports, calling `reject` for each reason it cannot:
/// stages run in order and stop at the first that fails, but within a stage
/// every failure is reported (each port in use; pods, CPU and memory).
/// The scheduling loop passes a no-op `reject`, which compiles away.
#[inline]
fn check(node: &NodeSlot, requests: Requests, ports: &[HostPort], mut reject: impl FnMut(NodeRejection)) -> bool {
    if !node.ready {
        reject(NodeRejection::NotReady);
        return false;
    }
    if node.cordoned {
        reject(NodeRejection::Cordoned);
        return false;
    }
    let mut fits = true;
    for &port in ports {
        if node.host_ports.contains_key(&port) {
            reject(NodeRejection::HostPortInUse { port });
            fits = false;
        }
    }
    if !fits {
        return false;
    }
    if node.pods >= node.allocatable.pods {
        reject(NodeRejection::TooManyPods { allocatable: node.allocatable.pods });
        fits = false;
    }
    if node.requested_cpu + u128::from(requests.milli_cpu) > u128::from(node.allocatable.milli_cpu) {
        let free = free_of(node.allocatable.milli_cpu, node.requested_cpu);
        reject(NodeRejection::InsufficientCpu { requested: requests.milli_cpu, free });
        fits = false;
    }
    if node.requested_memory + u128::from(requests.memory_bytes) > u128::from(node.allocatable.memory_bytes) {
        let free = free_of(node.allocatable.memory_bytes, node.requested_memory);
        reject(NodeRejection::InsufficientMemory { requested: requests.memory_bytes, free });
        fits = false;
    }
    fits
}

/// `allocatable − used`, 0 when over-committed.
fn free_of(allocatable: u64, used: u128) -> u64 {
    // The difference is at most `allocatable`, so it fits in u64.
    u64::try_from(u128::from(allocatable).saturating_sub(used)).unwrap_or(0)
}

/// `(allocatable − used) × RESOURCE_SCORE_MAX / allocatable`, 0 for a
/// resource the node has none of.
fn free_score(allocatable: u64, used: u128) -> u64 {
    if allocatable == 0 {
        return 0;
    }
    let free = free_of(allocatable, used);
    match free.checked_mul(RESOURCE_SCORE_MAX) {
        Some(scaled) => scaled / allocatable,
        // Only for exabyte-sized resources; the quotient is ≤ RESOURCE_SCORE_MAX.
        None => u64::try_from(u128::from(free) * u128::from(RESOURCE_SCORE_MAX) / u128::from(allocatable))
            .unwrap_or(RESOURCE_SCORE_MAX),
    }
}

/// The requests the score counts: kube's non-zero defaults for unset ones.
fn scoring_requests(r: Requests) -> Requests {
    Requests {
        milli_cpu: if r.milli_cpu == 0 { DEFAULT_SCORING_MILLI_CPU } else { r.milli_cpu },
        memory_bytes: if r.memory_bytes == 0 { DEFAULT_SCORING_MEMORY_BYTES } else { r.memory_bytes },
    }
}

/// Sorted, deduplicated, without port 0 ("no host port" in kube).
fn normalized_ports(ports: &[HostPort]) -> Vec<HostPort> {
    if ports.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<HostPort> = ports.iter().copied().filter(|p| p.port != 0).collect();
    v.sort_unstable();
    v.dedup();
    v
}
