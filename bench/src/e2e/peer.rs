//! The one small interface every e2e peer implements (one file per peer
//! under `peers/`), and the Service set they all program.
//!
//! Every peer serves the same Services: Service `i` (0-based) is
//! `VIP(i):SERVICE_PORT/tcp` with the same [`BACKENDS`] backend servers
//! (`198.18.<k+1>.2:BACKEND_PORT`, equal weights). wrk always targets the
//! last-created Service, the worst case for a rule chain.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use berth_tests::Topology;

/// Backend servers behind every Service.
pub const BACKENDS: usize = 4;
/// The Service port clients connect to.
pub const SERVICE_PORT: u16 = 80;
/// The port the backend servers listen on.
pub const BACKEND_PORT: u16 = 8080;
/// Most Services the address plan gives VIPs to (198.19.0.1 … 198.19.255.254).
pub const MAX_SERVICES: usize = 65_534;

/// Service `i`'s VIP: `198.19.0.1` for i = 0, counting up.
///
/// # Panics
/// If `i >= MAX_SERVICES`.
pub fn service_vip(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SERVICES, "service index {i} out of range (max {MAX_SERVICES})");
    // In range by the assert.
    berth_tests::topology::vip((i + 1) as u16)
}

/// What a peer is asked to program.
pub struct Scene<'a> {
    pub topo: &'a Topology,
    /// How many Services (N).
    pub services: usize,
    /// The backend servers, in order.
    pub backends: Vec<SocketAddrV4>,
    /// A scratch directory for this peer and N (config files, rulesets).
    pub work_dir: &'a Path,
}

impl Scene<'_> {
    /// The Service wrk targets: the last created.
    pub fn target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(service_vip(self.services - 1), SERVICE_PORT)
    }
}

/// A peer programmed and serving; dropping it removes what it installed.
pub struct Installed {
    /// Where wrk connects.
    pub target: SocketAddrV4,
    /// Run the client inside this cgroup2 directory (socket LB).
    pub client_cgroup: Option<PathBuf>,
    /// How long programming N Services took (as the peer's tool reports
    /// it done).
    pub install_time: Duration,
    /// Whatever keeps the peer alive; its drop tears it down.
    pub guard: Box<dyn Send>,
}

/// Installing hit its time bound (reported as such, not as a failure).
#[derive(Debug, thiserror::Error)]
#[error("{what} did not finish within {after:?}")]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
}

/// One way of getting from the client to a backend.
pub trait Peer: Send + Sync {
    /// Stable name used in results: `direct`, `iptables-legacy`,
    /// `iptables-nft`, `nftables`, `haproxy`, `berth-xdp`, `berth-socket`.
    fn name(&self) -> &'static str;

    /// Programs `scene.services` Services on the node within `timeout`.
    ///
    /// # Errors
    /// [`TimedOut`] (downcast) when the bound was hit; anything else is a
    /// broken peer.
    fn install(&self, scene: &Scene<'_>, timeout: Duration) -> anyhow::Result<Installed>;
}
