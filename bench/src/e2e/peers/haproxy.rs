//! Peer `haproxy`: HAProxy (the Debian package) in TCP mode on the node,
//! the userspace-proxy way of serving Services.
//!
//! # Design
//! The node accepts every VIP locally (`local 198.19.0.0/16 dev lo`), one
//! frontend listens on `:80` and picks the Service's backend from the
//! destination address through an IP map (`dst,map_ip`), so N Services cost
//! one listener and one tree lookup, not N listeners. Each Service is a
//! `backend` of the same 4 servers, round-robin, no health checks (nothing
//! else in the comparison checks health either). `nbthread` is the number
//! of CPUs and `maxconn` (4096) is far above wrk's 32 connections while fitting
//! the default 20k file-descriptor limit; no logging. Installing
//! is done when the target VIP accepts connections from the client.
//!
//! # Limitations
//! The proxy opens its own connection to the backend, so backends see the
//! node's address, not the client's (as with any L4 proxy without
//! TPROXY).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use berth_tests::{ChildGuard, Netns, Stream};

use crate::e2e::peer::{Installed, Peer, SERVICE_PORT, Scene, TimedOut, service_vip};

pub struct Haproxy;

/// What the node routes locally so HAProxy's wildcard listener gets every VIP.
const LOCAL_VIPS: &str = "198.19.0.0/16";

impl Peer for Haproxy {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed> {
        let started = Instant::now();
        let node = &scene.topo.node;
        let cfg = scene.work_dir.join("haproxy.cfg");
        let map = scene.work_dir.join("services.map");
        std::fs::write(&map, map_file(scene.services)).with_context(|| format!("writing {}", map.display()))?;
        std::fs::write(&cfg, config(scene, &map)).with_context(|| format!("writing {}", cfg.display()))?;
        node.ip(&["route", "add", "local", LOCAL_VIPS, "dev", "lo", "table", "local"])?;
        let route = LocalRoute { node: node.path() };
        let mut cmd = node.command("haproxy");
        cmd.arg("-db").arg("-f").arg(&cfg);
        let child = node.spawn_command(cmd, &format!("{}: haproxy", node.name()))?;
        let target = scene.target();
        wait_accepting(&scene.topo.client, &child, SocketAddr::V4(target), timeout, started)?;
        Ok(Installed {
            target,
            client_cgroup: None,
            install_time: started.elapsed(),
            guard: Box::new(Guard { _child: child, _route: route }),
        })
    }
}

/// HAProxy first, then the local route.
struct Guard {
    _child: ChildGuard,
    _route: LocalRoute,
}

/// Removes the local VIP route (the namespace goes soon after anyway; this
/// keeps a reused node clean).
struct LocalRoute {
    node: std::path::PathBuf,
}

impl Drop for LocalRoute {
    fn drop(&mut self) {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(&self.node);
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(net).args(["--", "ip", "route", "del", "local", LOCAL_VIPS, "dev", "lo", "table", "local"]);
        if let Err(e) = berth_tests::process::run(cmd, Duration::from_secs(10)) {
            eprintln!("berth-bench: haproxy: removing the local VIP route: {e:#}");
        }
    }
}

fn wait_accepting(
    client: &Netns,
    child: &ChildGuard,
    target: SocketAddr,
    timeout: Duration,
    started: Instant,
) -> anyhow::Result<()> {
    // Short slices, so a HAProxy that exits on a bad config is reported at
    // once with its stderr instead of after the whole bound.
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(TimedOut { what: format!("haproxy accepting on {target}"), after: timeout }.into());
        }
        match client.wait_for_tcp(target, left.min(Duration::from_millis(500))) {
            Ok(()) => return Ok(()),
            Err(e) if child.lines(Stream::Stderr).iter().any(|l| l.contains("[ALERT]")) => {
                anyhow::bail!("haproxy failed to start: {e:#}\n{}", child.tail(Stream::Stderr, 20));
            }
            Err(_) => {}
        }
    }
}

fn map_file(services: usize) -> String {
    let mut out = String::with_capacity(services * 24);
    for i in 0..services {
        let _ = writeln!(out, "{} svc-{i}", service_vip(i));
    }
    out
}

fn config(scene: &Scene<'_>, map: &Path) -> String {
    let map = map.display();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut out = format!(
        "global
    nbthread {threads}
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend services
    bind 0.0.0.0:{SERVICE_PORT}
    use_backend %[dst,map_ip({map})]
"
    );
    for i in 0..scene.services {
        let _ = writeln!(out, "\nbackend svc-{i}\n    balance roundrobin");
        for (k, b) in scene.backends.iter().enumerate() {
            let _ = writeln!(out, "    server b{k} {b}");
        }
    }
    out
}
