//! Controllers: the passes that make stored state true — Deployments into
//! pods and revision history, pod readiness into Service endpoints, node
//! leases into node readiness and pod replacement, deleted owners and lost
//! nodes into garbage collection.
//!
//! # Design
//! Each controller is a pure planner (desired + observed → actions), unit-
//! and property-tested without a store, and a thin pass that lists what it
//! needs from the store each period and writes its actions with
//! resourceVersion preconditions (a conflict means someone else changed the
//! object: the next pass re-reads and re-plans, as Kubernetes controllers
//! do). `berth serve`'s leader runs the passes in order: [`passes`] (node
//! lifecycle), [`loops`] (Deployments with [`revisions`], then the
//! scheduler), [`passes`] (endpoints), [`namespaces`], [`gc`].
//!
//! # Limitations
//! - No ReplicaSets: a Deployment owns its pods directly, labelled with
//!   `pod-template-hash` as ReplicaSets would label them, and its revision
//!   history is kept in ControllerRevisions. See [`deployment`].
//! - Full lists each period, not watch-fed caches: O(objects) per pass.

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod loops;
pub mod namespaces;
pub mod node_lifecycle;
pub mod passes;
pub mod revisions;
#[cfg(test)]
mod test_support;
