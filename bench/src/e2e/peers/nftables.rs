//! Peer `nftables`. Being written.

use std::time::Duration;

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct Nftables;

impl Peer for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn install(&self, _scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        anyhow::bail!("peer nftables not written yet")
    }
}
