//! Every e2e peer, one file each. Adding a peer is one file plus one line in
//! [`all`].

mod berth_socket;
mod berth_xdp;
mod direct;
mod haproxy;
mod iptables_legacy;
mod iptables_nft;
pub mod kube_iptables;
pub mod kube_nftables;
mod nftables;

use super::peer::Peer;

/// Every peer, the limit (`direct`) first.
pub fn all() -> Vec<Box<dyn Peer>> {
    vec![
        Box::new(direct::Direct),
        Box::new(iptables_legacy::IptablesLegacy),
        Box::new(iptables_nft::IptablesNft),
        Box::new(nftables::Nftables),
        Box::new(haproxy::Haproxy),
        Box::new(berth_xdp::BerthXdp),
        Box::new(berth_socket::BerthSocket),
    ]
}
