//! berth's control plane.
//!
//! # Design
//! The control plane (API, store, scheduler, controllers, CLI) is built in its
//! own issue; see `../shared/DESIGN.md` section 5. Until then the data plane
//! runs standalone (`berth-agent standalone`), driven by a services file.
//!
//! # Limitations
//! Nothing here yet: this crate only fixes the workspace layout so the agent's
//! dependency on control's resource types has a place to point to.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod controllers;
pub mod leader;
pub mod resources;
pub mod scheduler;
pub mod store;
