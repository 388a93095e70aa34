//! The node lifecycle planner: node leases into node readiness, and pods on
//! lost nodes into evictions (Kubernetes' node lifecycle controller with
//! taint-based eviction folded in).
//!
//! # Design
//! An agent renews its node's lease; a node whose last renewal is older
//! than the grace period (kube-controller-manager's
//! `--node-monitor-grace-period`, 40 s by default) becomes NotReady (kube
//! reports `Unknown`; berth says NotReady with reason `NodeLeaseExpired`).
//! Its pods stop being ready endpoints at once (the endpoints planner looks
//! at node readiness). After a further toleration period (kube's
//! `not-ready`/`unreachable` tolerations, 300 s by default) its pods are
//! evicted: deleted, so their controllers create replacements that the
//! scheduler places on Ready nodes. A node that renews again becomes Ready
//! at once; pods already evicted stay evicted.
//!
//! Time is passed in (milliseconds), so the planner is tested without
//! clocks; the loop around it uses short periods in tests.
//!
//! # Limitations
//! One toleration period for every pod (no per-pod `tolerationSeconds`),
//! no rate limiting of evictions across zones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    /// A lease older than this makes the node NotReady (default 40 s).
    pub grace: Duration,
    /// NotReady this long → its pods are evicted (default 300 s).
    pub toleration: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self { grace: Duration::from_secs(40), toleration: Duration::from_secs(300) }
    }
}

/// A node as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    pub name: String,
    /// Last lease renewal (unix ms).
    pub renewed_ms: u64,
    /// The readiness currently stored, and since when (unix ms).
    pub ready: bool,
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// Store the node as NotReady (lease expired) from `at_ms`.
    MarkNotReady { node: String, at_ms: u64 },
    /// Store the node as Ready again.
    MarkReady { node: String },
    /// Delete every pod bound to the node: it has been NotReady longer than
    /// the toleration.
    Evict { node: String },
}

/// What to do now for every node.
pub fn plan(config: &LifecycleConfig, now_ms: u64, nodes: &[NodeLease]) -> Vec<NodeAction> {
    let grace = config.grace.as_millis() as u64;
    let toleration = config.toleration.as_millis() as u64;
    let mut out = Vec::new();
    for n in nodes {
        let fresh = now_ms.saturating_sub(n.renewed_ms) <= grace;
        match (n.ready, fresh) {
            (true, false) => out.push(NodeAction::MarkNotReady {
                node: n.name.clone(),
                // NotReady from when the lease ran out, not from when we
                // noticed: the toleration counts from the real loss.
                at_ms: n.renewed_ms.saturating_add(grace),
            }),
            (false, true) => out.push(NodeAction::MarkReady { node: n.name.clone() }),
            (false, false) if now_ms.saturating_sub(n.since_ms) >= toleration => {
                out.push(NodeAction::Evict { node: n.name.clone() });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn cfg() -> LifecycleConfig {
        LifecycleConfig { grace: Duration::from_secs(40), toleration: Duration::from_secs(300) }
    }

    fn node(renewed: u64, ready: bool, since: u64) -> NodeLease {
        NodeLease { name: "n1".into(), renewed_ms: renewed * S, ready, since_ms: since * S }
    }

    #[test]
    fn a_missed_lease_makes_the_node_not_ready_after_the_grace_period() {
        assert!(plan(&cfg(), 140 * S, &[node(100, true, 0)]).is_empty(), "40 s is still within grace");
        assert_eq!(
            plan(&cfg(), 141 * S, &[node(100, true, 0)]),
            vec![NodeAction::MarkNotReady { node: "n1".into(), at_ms: 140 * S }]
        );
    }

    #[test]
    fn pods_are_evicted_after_the_toleration_and_not_before() {
        assert!(plan(&cfg(), 439 * S, &[node(100, false, 140)]).is_empty());
        assert_eq!(plan(&cfg(), 440 * S, &[node(100, false, 140)]), vec![NodeAction::Evict { node: "n1".into() }]);
    }

    #[test]
    fn a_renewed_lease_makes_the_node_ready_again() {
        assert_eq!(plan(&cfg(), 500 * S, &[node(499, false, 140)]), vec![NodeAction::MarkReady { node: "n1".into() }]);
        assert!(plan(&cfg(), 500 * S, &[node(499, true, 0)]).is_empty());
    }
}
