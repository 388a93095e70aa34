//! The standard e2e topology: client → node → N backends.
//!
//! ```text
//!  client ns                node ns (berth runs here)              backend ns i
//!  cl-ID 198.18.100.2/24 ── up-ID 198.18.100.1/24
//!                           n<i>-ID 198.18.<i+1>.1/24 ──────────── b<i>-ID 198.18.<i+1>.2/24
//! ```
//!
//! # Design
//! Addresses come only from 198.18.0.0/15, the benchmarking range, so they
//! never collide with a machine's real networks; Services (VIPs) live in
//! 198.19.0.0/16 and the client routes them to the node. The node forwards
//! (ip_forward=1) and has rp_filter off, because load-balanced flows are
//! asymmetric by design (a reply's source is rewritten back to the VIP).
//!
//! Each veth is created with both ends already inside their namespaces
//! (`ip link add A netns X type veth peer name B netns Y`), so interface
//! names never exist in the root namespace and cannot clash with other
//! tests or with the host. Names still carry a short id and stay within
//! the kernel's 15-byte limit.
//!
//! Transmit checksum offload is turned off on every veth end. On veth, tx
//! offload leaves packets CHECKSUM_PARTIAL: the L4 checksum field holds only
//! the pseudo-header sum and the "hardware" never completes it. XDP sees raw
//! packets without that skb state and updates checksums incrementally, which
//! is only correct on a full checksum, as on a physical wire. Turning it off
//! makes the kernel compute full checksums in software before transmit.
//!
//! # Limitations
//! IPv4 only; at most 99 backends (198.18.1.0/24 … 198.18.99.0/24, since
//! 198.18.100.0/24 is the client link).

use std::net::Ipv4Addr;

use anyhow::{Result, bail};

use crate::netns::Netns;

/// The client's address on the client–node link.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
/// The node's address on the client–node link (the client's gateway).
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// Prefix length of every link in the topology.
pub const LINK_PREFIX_LEN: u8 = 24;
/// Where Service VIPs come from; routed by the client to the node.
pub const VIP_CIDR: &str = "198.19.0.0/16";
/// Most backends a topology can have.
pub const MAX_BACKENDS: usize = 99;

/// A VIP in [`VIP_CIDR`]: `198.19.HI.LO` for `n = HI * 256 + LO`.
pub const fn vip(n: u16) -> Ipv4Addr {
    let [hi, lo] = n.to_be_bytes();
    Ipv4Addr::new(198, 19, hi, lo)
}

/// Backend `i`'s address: `198.18.<i+1>.2`.
///
/// # Panics
/// If `i >= MAX_BACKENDS`.
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, subnet(i), 2)
}

/// The node's address toward backend `i` (its gateway): `198.18.<i+1>.1`.
///
/// # Panics
/// If `i >= MAX_BACKENDS`.
pub fn backend_gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, subnet(i), 1)
}

fn subnet(i: usize) -> u8 {
    assert!(i < MAX_BACKENDS, "backend index {i} out of range (max {MAX_BACKENDS})");
    // In range by the assert: i + 1 <= 99.
    (i + 1) as u8
}

/// One backend namespace and its link to the node.
#[derive(Debug)]
pub struct BackendNet {
    pub index: usize,
    /// `b<i>`: the name [`crate::ServerBin::serve_backends`] gives its
    /// server, so it is what `by_backend` counts.
    pub name: String,
    pub ns: Netns,
    /// [`backend_addr`]`(index)`.
    pub addr: Ipv4Addr,
    /// [`backend_gateway`]`(index)`, on the node.
    pub gateway: Ipv4Addr,
    /// The interface in the backend namespace.
    pub if_name: String,
    /// The node's interface toward this backend.
    pub node_if: String,
}

/// Client, node and backend namespaces, wired up; all deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub client: Netns,
    pub node: Netns,
    pub backends: Vec<BackendNet>,
    /// The node's interface toward the client (where XDP attaches).
    pub uplink: String,
    /// The client's interface toward the node.
    pub client_if: String,
}

impl Topology {
    /// Builds the topology with `backends` backends; namespaces are named
    /// `PREFIX-PID-N-{client,node,b<i>}`.
    ///
    /// # Errors
    /// If any `ip`/`sysctl`/`ethtool` step fails; what was already made is
    /// removed.
    pub fn build(prefix: &str, backends: usize) -> Result<Self> {
        if backends > MAX_BACKENDS {
            bail!("{backends} backends requested, at most {MAX_BACKENDS} fit the address plan");
        }
        let base = crate::unique_name(prefix);
        let id = crate::short_id();
        let client = Netns::create(format!("{base}-client"))?;
        let node = Netns::create(format!("{base}-node"))?;
        // Before any interface exists there: new interfaces copy `default`.
        node.sysctl("net.ipv4.ip_forward", "1")?;
        node.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        node.sysctl("net.ipv4.conf.default.rp_filter", "0")?;

        let uplink = format!("up-{id}");
        let client_if = format!("cl-{id}");
        veth(&client, &client_if, &node, &uplink)?;
        address(&client, &client_if, CLIENT_ADDR)?;
        address(&node, &uplink, NODE_ADDR)?;
        client.ip(&["route", "add", "default", "via", &NODE_ADDR.to_string()])?;
        // Covered by the default route; explicit so `ip route` shows intent
        // and a test replacing the default route keeps reaching VIPs.
        client.ip(&["route", "add", VIP_CIDR, "via", &NODE_ADDR.to_string()])?;

        let mut topo = Self { client, node, backends: Vec::with_capacity(backends), uplink, client_if };
        for index in 0..backends {
            let ns = Netns::create(format!("{base}-b{index}"))?;
            let (addr, gateway) = (backend_addr(index), backend_gateway(index));
            let if_name = format!("b{index}-{id}");
            let node_if = format!("n{index}-{id}");
            veth(&ns, &if_name, &topo.node, &node_if)?;
            address(&ns, &if_name, addr)?;
            address(&topo.node, &node_if, gateway)?;
            ns.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
            topo.backends.push(BackendNet { index, name: format!("b{index}"), ns, addr, gateway, if_name, node_if });
        }
        Ok(topo)
    }

    /// Backend `i`.
    ///
    /// # Panics
    /// If there is no such backend.
    pub fn backend(&self, i: usize) -> &BackendNet {
        &self.backends[i]
    }

    /// Every namespace of the topology.
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        [&self.client, &self.node].into_iter().chain(self.backends.iter().map(|b| &b.ns))
    }
}

/// A veth pair with end `a` in `ns_a` and `b` in `ns_b`, both up, with tx
/// checksum offload off (see the module docs).
fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<()> {
    for name in [a, b] {
        if name.len() > 15 {
            bail!("interface name {name:?} is longer than 15 bytes");
        }
    }
    crate::process::run_argv(
        &["ip", "link", "add", a, "netns", ns_a.name(), "type", "veth", "peer", "name", b, "netns", ns_b.name()],
        crate::process::COMMAND_TIMEOUT,
    )?;
    for (ns, name) in [(ns_a, a), (ns_b, b)] {
        ns.exec(&["ethtool", "-K", name, "tx", "off"])?;
        ns.ip(&["link", "set", name, "up"])?;
    }
    Ok(())
}

fn address(ns: &Netns, dev: &str, addr: Ipv4Addr) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{addr}/{LINK_PREFIX_LEN}"), "dev", dev]).map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        assert_eq!(backend_addr(0), Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(backend_gateway(0), Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(backend_addr(98), Ipv4Addr::new(198, 18, 99, 2));
        assert_eq!(vip(1), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(vip(258), Ipv4Addr::new(198, 19, 1, 2));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn backend_index_is_bounded() {
        backend_addr(MAX_BACKENDS);
    }
}
