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
//! placement; [`controllers`] the planners of the Deployment, endpoints
//! and node lifecycle loops; [`client`] and [`cli`] the command line.
//!
//! # Limitations
//! Work in progress (issue 6): the controller loops and `berth serve` are
//! not wired together yet; the pieces are tested on their own.
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
