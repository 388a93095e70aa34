//! Addresses, Services and packets of the per-packet benchmark.
//!
//! Nothing leaves the process (BPF_PROG_TEST_RUN), so the plan mirrors a
//! Kubernetes cluster for readability: VIPs in 10.96.0.0/12 (the default
//! Service CIDR), backends in 10.128.0.0/9, clients in 198.18.128.0/17.

use std::net::Ipv4Addr;

use berth_agent::datapath::{
    DesiredBackend, DesiredService,
    schedule::{Algorithm, MaglevTableSize, Weight},
};
use berth_ebpf::abi::{Protocol, berth_ct_key, berth_service_key};
use berth_tests::packet::{Pkt, TcpFlags};

/// The Service every measured packet is sent to.
pub const TARGET_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
pub const BACKEND_PORT: u16 = 8080;
/// Backends per Service (WRR, weight 1 each).
pub const BACKENDS_PER_SERVICE: u32 = 4;

/// Where the non-Service packet goes: the node's own address, port 22.
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const NODE_PORT: u16 = 22;
const NON_SERVICE_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

const CLIENT_BASE: u32 = u32::from_be_bytes([198, 18, 128, 0]);
const CLIENT_ADDRS: u32 = 1 << 15;
const CLIENT_PORT_MIN: u32 = 1024;
/// A UDP payload of a small DNS query's size.
const UDP_PAYLOAD: [u8; 32] = [0x5a; 32];

fn offset(base: [u8; 4], by: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be_bytes(base).wrapping_add(by))
}

/// The L4 protocol of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn protocol(self) -> Protocol {
        match self {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        }
    }

    pub fn target_port(self) -> u16 {
        match self {
            Proto::Tcp => TCP_PORT,
            Proto::Udp => UDP_PORT,
        }
    }
}

/// The desired state for `n` Services: the target Service (`proto`) plus
/// `n - 1` TCP fillers on VIPs of their own, each with
/// [`BACKENDS_PER_SERVICE`] backends.
pub fn services(n: u32, proto: Proto) -> Vec<DesiredService> {
    let service = |i: u32, vip: Ipv4Addr, port: u16, protocol: Protocol| DesiredService {
        name: format!("bench-{i}"),
        vip,
        port,
        protocol,
        algorithm: Algorithm::Wrr,
        maglev_table_size: MaglevTableSize::DEFAULT,
        affinity_timeout_s: None,
        backends: (0..BACKENDS_PER_SERVICE)
            .map(|k| DesiredBackend {
                addr: offset([10, 128, 0, 1], i * BACKENDS_PER_SERVICE + k),
                port: BACKEND_PORT,
                weight: Weight::ONE,
                terminating: false,
            })
            .collect(),
    };
    let mut all = Vec::with_capacity(n as usize);
    all.push(service(0, TARGET_VIP, proto.target_port(), proto.protocol()));
    all.extend((1..n).map(|i| service(i, offset([10, 96, 0, 1], i), TCP_PORT, Protocol::Tcp)));
    all
}

/// The Service keys of [`services`], for the floors' Service map.
pub fn service_keys(services: &[DesiredService]) -> Vec<berth_service_key> {
    services.iter().map(|s| berth_service_key::new(s.vip, s.port, s.protocol)).collect()
}

/// A client endpoint of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// Hands out client endpoints never used before in this run, so every flow
/// (prefilled, established or new) has its own 5-tuple.
#[derive(Debug, Default)]
pub struct Clients {
    next: u32,
}

impl Clients {
    pub fn next(&mut self) -> Client {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        Client {
            addr: Ipv4Addr::from(CLIENT_BASE + n % CLIENT_ADDRS),
            // 2^15 addresses × 64512 ports: never wraps in a run.
            port: (CLIENT_PORT_MIN + n / CLIENT_ADDRS) as u16,
        }
    }
}

/// The first packet of a flow to the target Service: a TCP SYN or a UDP
/// datagram.
pub fn first_packet(proto: Proto, c: Client) -> Vec<u8> {
    match proto {
        Proto::Tcp => Pkt::tcp(c.addr, c.port, TARGET_VIP, TCP_PORT, TcpFlags::SYN, b"").build(),
        Proto::Udp => Pkt::udp(c.addr, c.port, TARGET_VIP, UDP_PORT, &UDP_PAYLOAD).build(),
    }
}

/// A later packet of an established flow: a TCP ACK or another datagram.
pub fn later_packet(proto: Proto, c: Client) -> Vec<u8> {
    match proto {
        Proto::Tcp => Pkt::tcp(c.addr, c.port, TARGET_VIP, TCP_PORT, TcpFlags::ACK, b"").build(),
        Proto::Udp => first_packet(Proto::Udp, c),
    }
}

/// A TCP ACK to the node itself (ssh): parsed, looked up, passed.
pub fn non_service_packet() -> Vec<u8> {
    Pkt::tcp(NON_SERVICE_CLIENT, 40000, NODE, NODE_PORT, TcpFlags::ACK, b"").build()
}

/// The conntrack key of a flow as it arrives (berth's forward entry, the
/// floors' only entry).
pub fn forward_key(proto: Proto, c: Client) -> berth_ct_key {
    berth_ct_key::new(c.addr, c.port, TARGET_VIP, proto.target_port(), proto.protocol())
}

/// The destination of a translated packet (`None` if too short).
pub fn destination(frame: &[u8]) -> Option<(Ipv4Addr, u16)> {
    // Ethernet 14 + IPv4 without options 20; the L4 destination port
    // follows the source port.
    let addr: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
    let port: [u8; 2] = frame.get(36..38)?.try_into().ok()?;
    Some((Ipv4Addr::from(addr), u16::from_be_bytes(port)))
}

/// berth's reverse entry of a flow translated to `backend`: as the reply
/// will look.
pub fn reverse_key(proto: Proto, c: Client, backend: (Ipv4Addr, u16)) -> berth_ct_key {
    berth_ct_key::new(backend.0, backend.1, c.addr, c.port, proto.protocol())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_unique_and_in_range() {
        let mut c = Clients::default();
        let a: Vec<Client> = (0..(CLIENT_ADDRS + 2)).map(|_| c.next()).collect();
        assert_eq!(a[0], Client { addr: Ipv4Addr::new(198, 18, 128, 0), port: 1024 });
        assert_eq!(a[CLIENT_ADDRS as usize], Client { addr: Ipv4Addr::new(198, 18, 128, 0), port: 1025 });
        assert_eq!(a[CLIENT_ADDRS as usize - 1].addr, Ipv4Addr::new(198, 18, 255, 255));
    }

    #[test]
    fn services_put_the_target_first_and_fillers_on_their_own_vips() {
        let s = services(3, Proto::Udp);
        assert_eq!((s[0].vip, s[0].port, s[0].protocol), (TARGET_VIP, UDP_PORT, Protocol::Udp));
        assert_eq!((s[2].vip, s[2].port), (Ipv4Addr::new(10, 96, 0, 3), TCP_PORT));
        assert_eq!(s[2].backends[3].addr, Ipv4Addr::new(10, 128, 0, 12));
    }

    #[test]
    fn destination_reads_the_translated_address_and_port() {
        let p = first_packet(Proto::Tcp, Client { addr: Ipv4Addr::new(198, 18, 128, 1), port: 4000 });
        assert_eq!(destination(&p), Some((TARGET_VIP, TCP_PORT)));
    }
}
