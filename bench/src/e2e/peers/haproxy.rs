//! Peer `haproxy`. Being written.

use std::time::Duration;

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct Haproxy;

impl Peer for Haproxy {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn install(&self, _scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        anyhow::bail!("peer haproxy not written yet")
    }
}
