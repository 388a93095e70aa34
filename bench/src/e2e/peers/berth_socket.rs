//! Peer `berth-socket`: berth's socket LB. The client (wrk) runs in the
//! cgroup2 directory the agent attached its connect/sendmsg hooks to, so
//! the VIP becomes a backend address at `connect()` and packets leave the
//! client already addressed to the backend: no per-packet translation.
//!
//! # Design
//! The same agent and services file as `berth-xdp` plus
//! `socket_lb_cgroup`, a fresh directory under the cgroup2 test root; wrk
//! joins it before exec and runs in the client namespace (cgroup hooks do
//! not care about network namespaces). XDP stays attached on the uplink as
//! in production; these flows are not Services there and pass.
//!
//! # Limitations
//! Needs a cgroup2 mount.

use std::time::Duration;

use anyhow::Context;
use berth_tests::TestCgroup;

use super::berth_xdp::Agent;
use crate::e2e::peer::{Installed, Peer, Scene};

pub struct BerthSocket;

/// The agent first (detach), then the cgroup directory (rmdir).
struct Guard {
    _agent: Agent,
    _cgroup: TestCgroup,
}

impl Peer for BerthSocket {
    fn name(&self) -> &'static str {
        "berth-socket"
    }

    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed> {
        let cgroup = TestCgroup::create("be2e").context("creating the socket-LB cgroup2 directory")?;
        let (agent, install_time) = Agent::start(scene, "be2e-sock", Some(cgroup.path()), timeout)?;
        Ok(Installed {
            target: scene.target(),
            client_cgroup: Some(cgroup.path().to_owned()),
            install_time,
            guard: Box::new(Guard { _agent: agent, _cgroup: cgroup }),
        })
    }
}
