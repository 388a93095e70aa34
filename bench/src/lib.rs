//! berth's benchmarks: every figure side by side with what users would run
//! instead, in one run, on one machine, reported as ratios.
//!
//! # Design
//! Five benchmarks, one module each, each behind `berth-bench <name>`
//! (`cargo xtask bench <name>` builds and runs it):
//! - [`packet`]: per-packet cost through BPF_PROG_TEST_RUN, berth's XDP
//!   program against floor programs (`bpf/floors.c`) measured the same way;
//! - [`e2e`]: wrk through network namespaces, berth against a direct
//!   connection, kube-proxy-style iptables and nftables rules and HAProxy,
//!   one file per peer under `e2e/peers/`;
//! - [`apply`]: programming time, berth's reconciler against
//!   iptables-restore and nft;
//! - [`pods`]: pod start latency and agent memory, `berth-agent node`
//!   against `runc run` on the same unpacked bundle;
//! - [`control`]: the control plane: scheduler throughput, API apply
//!   latency over MemStore and RedbStore, and watch fan-out.
//!
//! Every result goes through a [`report::Sink`] (JSON lines and markdown
//! under `bench/results/`). See docs/performance.md for the method and the
//! baseline.
//!
//! # Limitations
//! Needs root, the Debian packages `cargo xtask setup` installs, and a quiet
//! machine for figures worth comparing across runs; within one run the
//! peers share the same noise.

pub mod apply;
pub mod control;
pub mod e2e;
pub mod packet;
pub mod plot;
pub mod pods;
pub mod report;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Fails unless running as root: every benchmark needs namespaces or BPF.
///
/// # Errors
/// When not root.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("berth-bench needs root (network namespaces, BPF, iptables in namespaces)");
    }
    Ok(())
}

/// A binary built next to this one (`berth-agent`, `berth-bench-server`),
/// or the path in `env_var` when set.
///
/// # Errors
/// If neither exists.
pub fn sibling_bin(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating berth-bench")?;
    let dir = exe.parent().context("berth-bench has no parent directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found next to berth-bench; build the workspace (`cargo xtask bench` does) or set {env_var}",
            path.display()
        );
    }
    Ok(path)
}
