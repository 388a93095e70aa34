//! berth's control plane: the API server, its store, the scheduler, the
//! controllers and the `berth` CLI.
//!
//! # Design
//! See `../shared/DESIGN.md` section 5 and `docs/control.md`. Modules own
//! one thing each: [`store`] versioned objects and watches (redb, etcd,
//! memory) and [`leader`] election over etcd; [`resources`] the rules of
//! each kind (validation with field paths, defaults, ClusterIP/NodePort
//! allocation) behind [`api::admission::Admission`]; [`api`] HTTPS,
//! authentication, Kubernetes REST paths and watches; [`scheduler`]
//! placement; [`controllers`] the Deployment (with revision history),
//! endpoints, node lifecycle and garbage collection passes; [`client`],
//! [`cli`] and [`describe`] the command line.
//!
//! # Limitations
//! The node agents do not join yet (the cluster issue): until they do, pods
//! are placed and tracked but nothing runs them, and `logs`/`top` are not
//! offered. The tests play the agents through the API.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod controllers;
pub mod describe;
pub mod leader;
pub mod resources;
pub mod scheduler;
pub mod serve;
pub mod store;
