//! Peer `berth-xdp`: `berth-agent standalone` on the node, Services
//! translated by berth's XDP program on the uplink (replies reverse-NATed
//! at tc egress). Also home of [`Agent`], which `berth-socket` shares.
//!
//! # Design
//! The agent runs as users run it: a services file with N Services (WRR
//! over the same 4 backends), started with `nsenter --net` into the node
//! namespace (never `ip netns exec`, which remounts `/sys` and hides
//! bpffs), pins under [`BPFFS_ROOT`] in an instance of its own. Install
//! time is from spawning the agent to its `configuration programmed` log
//! line: load, verify, attach and program N Services, what a node pays at
//! start.
//!
//! # Limitations
//! Map sizes are the agent's defaults (65536 Services), ample for the
//! N this bench uses.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use berth_agent::datapath::PinDir;
use berth_tests::{ChildGuard, Stream};

use crate::e2e::{
    BPFFS_ROOT,
    peer::{Installed, Peer, SERVICE_PORT, Scene, TimedOut, service_vip},
};

pub struct BerthXdp;

impl Peer for BerthXdp {
    fn name(&self) -> &'static str {
        "berth-xdp"
    }

    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed> {
        let (agent, install_time) = Agent::start(scene, "be2e-xdp", None, timeout)?;
        Ok(Installed { target: scene.target(), client_cgroup: None, install_time, guard: Box::new(agent) })
    }
}

/// A running `berth-agent standalone`; dropping it stops the agent and
/// removes its pins (detaching every program).
pub struct Agent {
    child: Option<ChildGuard>,
    pins: PinDir,
}

impl Agent {
    /// Writes the services file for `scene` and starts the agent; returns
    /// once it has programmed every Service, with the time that took.
    ///
    /// # Errors
    /// [`TimedOut`] past `timeout`; the agent's stderr tail if it exits.
    pub fn start(
        scene: &Scene<'_>,
        instance_prefix: &str,
        socket_lb_cgroup: Option<&Path>,
        timeout: Duration,
    ) -> anyhow::Result<(Self, Duration)> {
        let bin = crate::sibling_bin("berth-agent", "BERTH_AGENT_BIN")?;
        let instance = format!("{instance_prefix}-{}", berth_tests::short_id());
        let config = scene.work_dir.join("services.yaml");
        std::fs::write(&config, services_file(scene, &instance, socket_lb_cgroup))
            .with_context(|| format!("writing {}", config.display()))?;
        let node = &scene.topo.node;
        let started = Instant::now();
        let mut cmd = node.nsenter_command(&bin);
        cmd.args(["standalone", "--config"])
            .arg(&config)
            .args(["--bpffs-root", BPFFS_ROOT])
            .env("BERTH_LOG", "info")
            .env("NO_COLOR", "1");
        let child = node.spawn_command(cmd, &format!("{}: berth-agent {instance}", node.name()))?;
        // The guard exists before the wait, so a failed start still cleans up.
        let agent = Self { child: Some(child), pins: PinDir::new(Path::new(BPFFS_ROOT), &instance) };
        if let Some(child) = &agent.child
            && let Err(e) = child.wait_for_line(Stream::Stderr, "configuration programmed", timeout)
        {
            if started.elapsed() >= timeout {
                return Err(TimedOut {
                    what: format!("berth-agent programming {} Services", scene.services),
                    after: timeout,
                }
                .into());
            }
            return Err(e);
        }
        Ok((agent, started.elapsed()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Stop the agent first (SIGTERM; its programs stay pinned), then
        // unpin: the links go and the programs detach.
        self.child.take();
        if let Err(e) = self.pins.remove_all() {
            eprintln!("berth-bench: removing pins {}: {e}", self.pins.path().display());
        }
    }
}

fn services_file(scene: &Scene<'_>, instance: &str, socket_lb_cgroup: Option<&Path>) -> String {
    let mut out = format!("instance: {instance}\nuplink: {}\nmetrics_address: 127.0.0.1:9464\n", scene.topo.uplink);
    if let Some(cgroup) = socket_lb_cgroup {
        let _ = writeln!(out, "socket_lb_cgroup: {}", cgroup.display());
    }
    out.push_str("services:\n");
    let backends: String = scene
        .backends
        .iter()
        .map(|b| format!("      - {{ address: {}, port: {}, weight: 1 }}\n", b.ip(), b.port()))
        .collect();
    for i in 0..scene.services {
        let _ = write!(
            out,
            "  - name: svc-{i}\n    vip: {}\n    port: {SERVICE_PORT}\n    protocol: TCP\n    algorithm: wrr\n    backends:\n{backends}",
            service_vip(i)
        );
    }
    out
}
