//! Peer `iptables-legacy`. Being written.

use std::time::Duration;

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct IptablesLegacy;

impl Peer for IptablesLegacy {
    fn name(&self) -> &'static str {
        "iptables-legacy"
    }

    fn install(&self, _scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        anyhow::bail!("peer iptables-legacy not written yet")
    }
}
