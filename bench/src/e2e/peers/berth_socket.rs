//! Peer `berth-socket`. Being written.

use std::time::Duration;

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct BerthSocket;

impl Peer for BerthSocket {
    fn name(&self) -> &'static str {
        "berth-socket"
    }

    fn install(&self, _scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        anyhow::bail!("peer berth-socket not written yet")
    }
}
