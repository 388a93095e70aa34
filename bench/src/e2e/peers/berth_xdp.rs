//! Peer `berth-xdp`. Being written.

use std::time::Duration;

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct BerthXdp;

impl Peer for BerthXdp {
    fn name(&self) -> &'static str {
        "berth-xdp"
    }

    fn install(&self, _scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        anyhow::bail!("peer berth-xdp not written yet")
    }
}
