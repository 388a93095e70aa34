//! Controllers: the loops that make stored state true — Deployments into
//! pods, pod readiness into Service endpoints, node leases into node
//! readiness and pod replacement.
//!
//! # Design
//! Each controller is a pure planner (desired + observed → actions), unit-
//! and property-tested without a store, and a thin loop that feeds it from
//! watches and writes its actions through the store with resourceVersion
//! preconditions (a conflict means someone else changed the object: the
//! loop re-reads and re-plans, as Kubernetes controllers do).
//!
//! # Limitations
//! No ReplicaSets: a Deployment owns its pods directly, labelled with
//! `pod-template-hash` as ReplicaSets would label them, and its revision
//! history is kept beside it. See [`deployment`].

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod loops;
pub mod node_lifecycle;
pub mod passes;
pub mod revisions;
