//! Why a pod fits nowhere, and kube-scheduler's message for it.

use std::fmt;

use super::HostPort;

/// No node passes the filter. Counts how many nodes failed each filter; a
/// node is counted under the first filter stage it fails (not ready,
/// cordoned, host ports, resources), and within the resource stage under
/// every resource it lacks, so the counts can add up to more than `nodes`,
/// as in kube. `Display` gives kube-scheduler's message, for the pod's
/// `PodScheduled=False` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered (all nodes in the state).
    pub nodes: u32,
    /// Nodes that were not Ready.
    pub not_ready: u32,
    /// Nodes that were cordoned.
    pub cordoned: u32,
    /// Nodes where one of the pod's host ports was in use.
    pub host_port_conflict: u32,
    /// The pod's host ports that were in use on some node, sorted.
    pub ports_in_use: Vec<HostPort>,
    /// Nodes that already ran their allocatable number of pods.
    pub too_many_pods: u32,
    /// Nodes without enough unrequested CPU (millicores).
    pub insufficient_cpu: Option<Shortfall>,
    /// Nodes without enough unrequested memory (bytes).
    pub insufficient_memory: Option<Shortfall>,
}

/// Nodes short of one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shortfall {
    /// How many nodes lacked it.
    pub nodes: u32,
    /// What the pod requests.
    pub requested: u64,
    /// The most any of those nodes had free (allocatable minus requested).
    pub largest_free: u64,
}

impl fmt::Display for Unschedulable {
    /// `0/3 nodes are available: 1 node(s) were not ready, 2 node(s) had
    /// insufficient memory (pod requests 2Gi, largest free 1.5Gi).`
    /// The request is rounded up and the free amount down, so the one shown
    /// as larger really is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available: ", self.nodes)?;
        if self.nodes == 0 {
            return f.write_str("no nodes are registered.");
        }
        let mut parts: Vec<String> = Vec::new();
        if self.not_ready > 0 {
            parts.push(format!("{} node(s) were not ready", self.not_ready));
        }
        if self.cordoned > 0 {
            parts.push(format!("{} node(s) were unschedulable", self.cordoned));
        }
        if self.host_port_conflict > 0 {
            let ports: Vec<String> = self.ports_in_use.iter().map(HostPort::to_string).collect();
            parts.push(format!(
                "{} node(s) didn't have free ports for the requested pod ports ({})",
                self.host_port_conflict,
                ports.join(", ")
            ));
        }
        if self.too_many_pods > 0 {
            parts.push(format!("{} node(s) had too many pods", self.too_many_pods));
        }
        if let Some(s) = &self.insufficient_cpu {
            parts.push(format!(
                "{} node(s) had insufficient cpu (pod requests {}, largest free {})",
                s.nodes,
                format_milli_cpu(s.requested),
                format_milli_cpu(s.largest_free)
            ));
        }
        if let Some(s) = &self.insufficient_memory {
            parts.push(format!(
                "{} node(s) had insufficient memory (pod requests {}, largest free {})",
                s.nodes,
                format_bytes(s.requested, Rounding::Up),
                format_bytes(s.largest_free, Rounding::Down)
            ));
        }
        if parts.is_empty() {
            // Unreachable through `ClusterState::schedule`, which only builds
            // this when some filter failed; say so rather than print nothing.
            parts.push("no node failed a filter".to_owned());
        }
        write!(f, "{}.", parts.join(", "))
    }
}

impl std::error::Error for Unschedulable {}

/// Kubernetes quantity notation for CPU: `2` for whole cores, else `1500m`.
pub(super) fn format_milli_cpu(milli: u64) -> String {
    if milli.is_multiple_of(1000) { (milli / 1000).to_string() } else { format!("{milli}m") }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rounding {
    Up,
    Down,
}

/// Binary-suffixed bytes, at most two decimals: `1.5Gi`, `512Mi`, `100`.
/// Exact values print exactly; others round as asked.
pub(super) fn format_bytes(bytes: u64, rounding: Rounding) -> String {
    const UNITS: [(&str, u32); 6] = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    let Some(&(suffix, shift)) = UNITS.iter().find(|(_, shift)| bytes >> shift > 0) else {
        return bytes.to_string();
    };
    let unit = 1u128 << shift;
    let scaled = u128::from(bytes) * 100;
    let hundredths = match rounding {
        Rounding::Down => scaled / unit,
        Rounding::Up => scaled.div_ceil(unit),
    };
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => format!("{whole}{suffix}"),
        f if f % 10 == 0 => format!("{whole}.{}{suffix}", f / 10),
        f => format!("{whole}.{f:02}{suffix}"),
    }
}
