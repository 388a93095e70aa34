//! A small packet builder for BPF_PROG_TEST_RUN table tests and the
//! per-packet benchmark: Ethernet (optionally 802.1Q) / IPv4 (optionally with
//! options, fragments) / TCP or UDP, with checksums always computed from
//! scratch, so a program's incremental checksum updates are checked against
//! a full recomputation.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const PSH_ACK: TcpFlags = TcpFlags(0x18);
    pub const FIN_ACK: TcpFlags = TcpFlags(0x11);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Opts {
    None,
    /// RFC 2113 Router Alert: 4 bytes, ihl = 6.
    RouterAlert,
}

#[derive(Debug, Clone)]
pub struct Pkt {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub udp: bool,
    pub flags: TcpFlags,
    pub payload: Vec<u8>,
    pub ip_options: Ipv4Opts,
    pub more_fragments: bool,
    pub fragment_offset: u16,
    pub vlan: Option<u16>,
    pub udp_zero_checksum: bool,
    /// Replace the IP protocol number (the L4 bytes stay TCP-shaped).
    pub proto_override: Option<u8>,
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

impl Pkt {
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: TcpFlags, payload: &[u8]) -> Self {
        Pkt {
            src,
            dst,
            sport,
            dport,
            udp: false,
            flags,
            payload: payload.to_vec(),
            ip_options: Ipv4Opts::None,
            more_fragments: false,
            fragment_offset: 0,
            vlan: None,
            udp_zero_checksum: false,
            proto_override: None,
        }
    }

    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Self {
        Pkt { udp: true, ..Pkt::tcp(src, sport, dst, dport, TcpFlags(0), payload) }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.udp {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        } else {
            l4.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.push(5 << 4); // data offset 5
            l4.push(self.flags.0);
            l4.extend_from_slice(&65535u16.to_be_bytes()); // window
            l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
        }
        l4.extend_from_slice(&self.payload);
        let proto = self.proto_override.unwrap_or(if self.udp { 17 } else { 6 });
        // Pseudo-header checksum over the final addresses.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        let csum = fold(sum16(&pseudo) + sum16(&l4));
        let csum_at = if self.udp { 6 } else { 16 };
        let csum = if self.udp && self.udp_zero_checksum {
            0
        } else if self.udp && csum == 0 {
            0xffff
        } else {
            csum
        };
        l4[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());

        let options: &[u8] = match self.ip_options {
            Ipv4Opts::None => &[],
            Ipv4Opts::RouterAlert => &[0x94, 0x04, 0x00, 0x00],
        };
        let ihl = (20 + options.len()) / 4;
        let mut ip = vec![0x40 | ihl as u8, 0];
        ip.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes()); // id
        let frag = (u16::from(self.more_fragments) << 13) | self.fragment_offset;
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.push(64);
        ip.push(proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(options);
        let hcsum = fold(sum16(&ip));
        ip[10..12].copy_from_slice(&hcsum.to_be_bytes());

        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if let Some(vid) = self.vlan {
            frame.extend_from_slice(&0x8100u16.to_be_bytes());
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 198, 18, 100, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[198, 19, 0, 10]);
    f
}
