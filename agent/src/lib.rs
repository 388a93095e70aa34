//! berth's node agent.
//!
//! # Design
//! Logic lives here; `src/main.rs` only parses arguments and calls
//! [`standalone::run`] or [`standalone::cleanup`]. Modules own one thing each:
//! [`datapath`] the kernel programs and maps, [`config`] the standalone
//! services file, [`metrics`] and [`admin`] the Prometheus endpoint.
//!
//! # Limitations
//! This release runs the data plane only (standalone mode); containers and
//! the control-plane client arrive with their issues.

pub mod admin;
pub mod cgroups;
pub mod config;
pub mod datapath;
pub mod image;
pub mod metrics;
pub mod node;
pub mod network;
pub mod pod;
pub mod runtime;
pub mod standalone;
