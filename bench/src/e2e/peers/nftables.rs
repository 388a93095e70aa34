//! Peer `nftables`: kube-proxy's nftables mode, the ruleset of
//! [`super::kube_nftables`] loaded with one `nft -f` (kube-proxy's first
//! sync). New connections find their Service with one verdict-map lookup on
//! `ip daddr . meta l4proto . th dport`, then `numgen random mod 4 vmap`
//! picks the endpoint chain that DNATs.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

use super::{
    kube_iptables::{bench_services, netns_command, run_bounded},
    kube_nftables,
};
use crate::e2e::peer::{Installed, Peer, Scene};

pub struct Nftables;

/// Bound on deleting the table.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// Deletes kube-proxy's table when dropped (also after a failed install).
struct NftTeardown {
    netns: String,
    cleanup_file: PathBuf,
}

impl Drop for NftTeardown {
    fn drop(&mut self) {
        let args = ["-f".to_owned(), self.cleanup_file.display().to_string()];
        if let Err(e) = run_bounded(netns_command(&self.netns, "nft", &args), "nft cleanup", TEARDOWN_TIMEOUT) {
            eprintln!("berth-bench: nftables teardown in {}: {e:#}", self.netns);
        }
    }
}

impl Peer for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed> {
        let netns = scene.topo.node.name().to_owned();
        let services = bench_services(scene.services, &scene.backends);
        let rules_file = scene.work_dir.join("kube-proxy.nft");
        let cleanup_file = scene.work_dir.join("kube-proxy-cleanup.nft");
        for (path, text) in [(&rules_file, kube_nftables::full(&services)), (&cleanup_file, kube_nftables::cleanup())] {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        // Made before the first change, so a failed install is undone too.
        let teardown = NftTeardown { netns: netns.clone(), cleanup_file };
        let what = format!("nft -f ({} Services)", scene.services);
        let args = ["-f".to_owned(), rules_file.display().to_string()];
        let install_time = run_bounded(netns_command(&netns, "nft", &args), &what, timeout)?;
        Ok(Installed { target: scene.target(), client_cgroup: None, install_time, guard: Box::new(teardown) })
    }
}
