//! Peer `direct`: the client connects to backend 0 itself, through the same
//! node (plain IP forwarding, nothing installed). No load balancer can beat
//! it, so every other row is a ratio to it.

use std::time::{Duration, Instant};

use crate::e2e::peer::{Installed, Peer, Scene};

pub struct Direct;

impl Peer for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn install(&self, scene: &Scene<'_>, _timeout: Duration) -> anyhow::Result<Installed> {
        let started = Instant::now();
        let target = *scene.backends.first().ok_or_else(|| anyhow::anyhow!("the scene has no backend"))?;
        Ok(Installed { target, client_cgroup: None, install_time: started.elapsed(), guard: Box::new(()) })
    }
}
