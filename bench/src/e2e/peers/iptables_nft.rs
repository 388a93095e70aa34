//! Peer `iptables-nft`: kube-proxy's iptables mode through the nf_tables
//! backend of iptables (`iptables-nft-restore`), the ruleset of
//! [`super::kube_iptables`] translated rule by rule into nf_tables (still a
//! linear `KUBE-SERVICES` chain). Loading 10k Services this way takes
//! minutes, hence the timeout.

use std::time::Duration;

use super::kube_iptables::{self, Backend};
use crate::e2e::peer::{Installed, Peer, Scene};

pub struct IptablesNft;

impl Peer for IptablesNft {
    fn name(&self) -> &'static str {
        Backend::Nft.peer()
    }

    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed> {
        kube_iptables::install(scene, timeout, Backend::Nft)
    }
}
