//! Peer `iptables-nft`. Being written.

use std::time::Duration;

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct IptablesNft;

impl Peer for IptablesNft {
    fn name(&self) -> &'static str {
        "iptables-nft"
    }

    fn install(&self, _scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        anyhow::bail!("peer iptables-nft not written yet")
    }
}
