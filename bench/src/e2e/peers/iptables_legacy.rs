//! Peer `iptables-legacy`: kube-proxy's iptables mode through the legacy
//! x_tables backend (`iptables-legacy-restore`), the ruleset of
//! [`super::kube_iptables`]. Every new connection walks `KUBE-SERVICES`
//! rule by rule; the target Service is the last one.

use std::time::Duration;

use super::kube_iptables::{self, Backend};
use crate::e2e::peer::{Installed, Peer, Scene};

pub struct IptablesLegacy;

impl Peer for IptablesLegacy {
    fn name(&self) -> &'static str {
        Backend::Legacy.peer()
    }

    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed> {
        kube_iptables::install(scene, timeout, Backend::Legacy)
    }
}
