//! The Deployment planner: from a Deployment's desired replicas, template
//! revision and strategy, and the pods it owns, which pods to create and
//! which to delete — one step of Kubernetes' deployment controller
//! (`pkg/controller/deployment/rolling.go`, `recreate.go`) folded with the
//! ReplicaSet controller's pod ranking (`controller_utils.go`).
//!
//! # Design
//! Pods carry the template's hash (`pod-template-hash`); pods with the
//! current hash are "new", the rest "old". One step of a rolling update:
//! 1. scale up new pods while the total stays ≤ replicas + maxSurge;
//! 2. scale down old pods while the pods that count as available stay ≥
//!    replicas − maxUnavailable: unready old pods go first (they give no
//!    availability), then ready ones, oldest revision first;
//!
//! exactly as kube's `reconcileNewReplicaSet` then
//! `reconcileOldReplicaSets` (with `cleanupUnhealthyReplicas`) do, where the
//! scale-down already counts the pods the scale-up just asked for. The
//! loop calls [`plan`] again whenever a pod changes (created, ready,
//! deleted), so the rollout advances as readiness allows, never faster.
//! Failed pods are deleted and replaced. Scaling down removes the least
//! useful pods first: not ready, then the most recently created (kube's
//! `ActivePods` ranking without the node-level criteria).
//!
//! `maxSurge` rounds up and `maxUnavailable` down from percentages, and if
//! both come out 0, maxUnavailable becomes 1 (kube's `ResolveFenceposts`).
//!
//! # Limitations
//! No `minReadySeconds` (a pod is available as soon as it is ready), no
//! `progressDeadlineSeconds`, no pausing.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

/// An absolute number or a percentage of the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntOrPercent {
    Int(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// The value for `replicas`, rounding a percentage up or down.
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Int(n) => n,
            IntOrPercent::Percent(p) => {
                let scaled = u64::from(replicas) * u64::from(p);
                let v = if round_up { scaled.div_ceil(100) } else { scaled / 100 };
                u32::try_from(v).unwrap_or(u32::MAX)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    RollingUpdate {
        max_surge: IntOrPercent,
        max_unavailable: IntOrPercent,
    },
    /// Delete every old pod, then create the new ones.
    Recreate,
}

impl Default for Strategy {
    /// Kubernetes' default: RollingUpdate 25% / 25%.
    fn default() -> Self {
        Strategy::RollingUpdate { max_surge: IntOrPercent::Percent(25), max_unavailable: IntOrPercent::Percent(25) }
    }
}

/// kube's `ResolveFenceposts`: (maxSurge, maxUnavailable) in pods.
pub fn fenceposts(max_surge: IntOrPercent, max_unavailable: IntOrPercent, replicas: u32) -> (u32, u32) {
    let surge = max_surge.resolve(replicas, true);
    let unavailable = max_unavailable.resolve(replicas, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// What the planner needs of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub replicas: u32,
    /// The current template's hash.
    pub hash: String,
    pub strategy: Strategy,
}

/// What the planner needs of one owned pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub name: String,
    /// Its `pod-template-hash`.
    pub hash: String,
    pub ready: bool,
    /// Being deleted (graceful termination): neither counted nor touched.
    pub terminating: bool,
    /// Phase Failed: deleted and replaced.
    pub failed: bool,
    /// For the ranking: newer pods go first on scale-down.
    pub created_ms: u64,
}

/// One step: how many new pods to create (with the current hash) and
/// which pods to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: u32,
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create == 0 && self.delete.is_empty()
    }
}

/// Least useful first: not ready, then most recently created (then by
/// name, so plans are deterministic).
fn rank_for_deletion(pods: &mut [&Observed]) {
    pods.sort_by_key(|p| (p.ready, Reverse(p.created_ms), p.name.clone()));
}

/// One step of the controller; see the module docs.
pub fn plan(desired: &Desired, pods: &[Observed]) -> Plan {
    let mut out = Plan::default();
    let live: Vec<&Observed> = pods.iter().filter(|p| !p.terminating).collect();
    for p in live.iter().filter(|p| p.failed) {
        out.delete.push(p.name.clone());
    }
    let active: Vec<&Observed> = live.into_iter().filter(|p| !p.failed).collect();
    let (mut new, mut old): (Vec<&Observed>, Vec<&Observed>) = active.iter().partition(|p| p.hash == desired.hash);
    let replicas = desired.replicas;

    match desired.strategy {
        Strategy::Recreate => {
            if !old.is_empty() {
                // Down first; new pods only once every old one is gone
                // (terminating ones included).
                out.delete.extend(old.iter().map(|p| p.name.clone()));
            } else if !pods.iter().any(|p| p.terminating && p.hash != desired.hash) {
                scale(&mut out, &mut new, replicas);
            }
        }
        Strategy::RollingUpdate { max_surge, max_unavailable } => {
            if old.is_empty() {
                scale(&mut out, &mut new, replicas);
                return out;
            }
            let (surge, unavailable) = fenceposts(max_surge, max_unavailable, replicas);
            let new_count = new.len() as u32;
            // More new pods than wanted (scaled down mid-rollout).
            if new_count > replicas {
                scale(&mut out, &mut new, replicas);
            }
            let new_count = new_count.min(replicas);
            // 1. Scale up new pods within the surge.
            let max_total = replicas.saturating_add(surge);
            let total = active.len() as u32;
            if total < max_total {
                out.create = (max_total - total).min(replicas - new_count);
            }
            // 2. Scale down old pods within the availability budget,
            //    counting the pods just asked for (not yet available).
            let min_available = replicas.saturating_sub(unavailable);
            let all = old.len() as u32 + new_count + out.create;
            // Only the new pods that stay: a scale-down just chose some
            // (maybe ready ones) for deletion.
            let new_ready = new.iter().filter(|p| p.ready && !out.delete.contains(&p.name)).count() as u32;
            let new_unavailable = new_count + out.create - new_ready;
            let mut budget = i64::from(all) - i64::from(min_available) - i64::from(new_unavailable);
            if budget <= 0 {
                return out;
            }
            // Unready old pods first: deleting them costs no availability.
            rank_for_deletion(&mut old);
            let mut old_ready = old.iter().filter(|p| p.ready).count() as u32;
            let mut i = 0;
            while budget > 0 && i < old.len() && !old[i].ready {
                out.delete.push(old[i].name.clone());
                budget -= 1;
                i += 1;
            }
            // Then ready old pods, while enough stay available.
            while budget > 0 && i < old.len() && old_ready + new_ready > min_available {
                out.delete.push(old[i].name.clone());
                old_ready -= 1;
                budget -= 1;
                i += 1;
            }
        }
    }
    out
}

/// Plain scaling of one set of pods to `replicas`.
fn scale(out: &mut Plan, pods: &mut [&Observed], replicas: u32) {
    let have = pods.len() as u32;
    if have < replicas {
        out.create = replicas - have;
    } else if have > replicas {
        rank_for_deletion(pods);
        out.delete.extend(pods.iter().take((have - replicas) as usize).map(|p| p.name.clone()));
    }
}

#[cfg(test)]
mod tests;
