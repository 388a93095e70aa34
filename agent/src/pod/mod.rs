//! Pods: manifests, probes, restart backoff, container states, supervision.
//!
//! # Design
//! The agent runs Kubernetes Pods itself with kubelet's lifecycle
//! semantics. The pieces here are pure logic, each a small model of the
//! kubelet code it follows, so the supervisor composes them and tests drive
//! them without containers:
//! - [`manifest`]: a `v1` Pod manifest → a validated [`manifest::PodSpec`]
//!   with Kubernetes' defaults, every problem reported with its field path;
//!   kubelet's command, argument and environment rules;
//! - [`quantity`]: Kubernetes resource quantities (`500m`, `64Mi`);
//! - [`probe`]: httpGet, tcpSocket and exec probes and kubelet's per-probe
//!   worker (initial delay, period, thresholds, startup gating);
//! - [`backoff`]: `restartPolicy` and CrashLoopBackOff over explicit
//!   instants;
//! - [`status`]: container states, pod phase and conditions in kubelet's
//!   shapes for the admin API.
//!
//! # Limitations
//! Each module lists the Kubernetes features it leaves out; the manifest
//! parser rejects the ones that would change what runs rather than
//! ignoring them.

pub mod backoff;
pub mod manifest;
pub mod probe;
pub mod quantity;
pub mod status;
