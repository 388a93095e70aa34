//! berth's node agent.
//!
//! # Design
//! Logic lives here; `src/main.rs` only parses arguments and calls
//! [`standalone::run`], [`node::Node`] or the runtime's re-exec'd entry
//! points. Modules own one thing each:
//! - the data plane: [`datapath`] the kernel programs and maps, [`config`]
//!   the standalone services file, [`metrics`] and [`admin`] its Prometheus
//!   endpoint;
//! - pods: [`image`] OCI images, [`runtime`] the shim, init and exec,
//!   [`cgroups`] the cgroup drivers, [`network`] pod networks and IPAM,
//!   [`pod`] manifests, probes, back-off and status, [`node`] supervision,
//!   the admin socket and container metrics.
//!
//! # Limitations
//! The data plane and the pods run as separate commands (`standalone`,
//! `node`); the control-plane client that joins them arrives with the
//! cluster issue.

pub mod admin;
pub mod cgroups;
pub mod config;
pub mod datapath;
pub mod image;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod standalone;
