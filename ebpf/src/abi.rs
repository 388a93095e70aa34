//! The kernel/userspace ABI: types generated from `abi.h`, plus conversions.
//!
//! # Design
//! [`generated`] is bindgen output, checked in and verified by `cargo xtask
//! codegen --check`. Fields named `__be*` in C are network byte order; the
//! constructors and accessors below are the only code that converts them.

use std::net::Ipv4Addr;

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, clippy::all)]
mod generated;

pub use generated::*;

// SAFETY: every ABI struct is `#[repr(C)]`, made only of fixed-width integers
// with explicit padding (abi.h's rules, checked by its _Static_asserts), so
// any bit pattern is a valid value and there are no hidden padding bytes.
unsafe impl aya::Pod for berth_service_key {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_service_value {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_schedule_key {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_backend {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_ct_key {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_ct_value {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_affinity_key {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_affinity_value {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_sock_rev_key {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_sock_rev_value {}
// SAFETY: as above.
unsafe impl aya::Pod for berth_traffic_stats {}

/// Index of a Service in the per-service maps (stats, WRR cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u32);

/// Index of a backend in `berth_backends_v1` and the per-backend stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u32);

/// L4 protocol of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => BERTH_PROTO_TCP as u8,
            Protocol::Udp => BERTH_PROTO_UDP as u8,
        }
    }

    pub const fn from_number(n: u8) -> Option<Self> {
        match n as u32 {
            BERTH_PROTO_TCP => Some(Protocol::Tcp),
            BERTH_PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// How a Service picks the backend of a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlgorithmCode {
    Wrr,
    Maglev,
    Random,
}

impl AlgorithmCode {
    pub const fn code(self) -> u8 {
        match self {
            AlgorithmCode::Wrr => BERTH_ALG_WRR as u8,
            AlgorithmCode::Maglev => BERTH_ALG_MAGLEV as u8,
            AlgorithmCode::Random => BERTH_ALG_RANDOM as u8,
        }
    }
}

/// Lifecycle of a backend slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    Free,
    Active,
    Terminating,
    Removed,
}

impl BackendState {
    pub const fn code(self) -> u8 {
        match self {
            BackendState::Free => BERTH_BACKEND_FREE as u8,
            BackendState::Active => BERTH_BACKEND_ACTIVE as u8,
            BackendState::Terminating => BERTH_BACKEND_TERMINATING as u8,
            BackendState::Removed => BERTH_BACKEND_REMOVED as u8,
        }
    }

    /// Unknown codes read back from a pinned map are treated as removed: a
    /// slot we cannot interpret must never receive traffic.
    pub const fn from_code(code: u8) -> Self {
        match code as u32 {
            BERTH_BACKEND_FREE => BackendState::Free,
            BERTH_BACKEND_ACTIVE => BackendState::Active,
            BERTH_BACKEND_TERMINATING => BackendState::Terminating,
            _ => BackendState::Removed,
        }
    }
}

impl berth_service_key {
    pub fn new(vip: Ipv4Addr, port: u16, proto: Protocol) -> Self {
        Self { vip: u32::from(vip).to_be(), port: port.to_be(), proto: proto.number(), pad: 0 }
    }

    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.vip))
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }

    pub fn protocol(&self) -> Option<Protocol> {
        Protocol::from_number(self.proto)
    }
}

impl berth_backend {
    pub fn new(addr: Ipv4Addr, port: u16, state: BackendState, generation: u32, svc: ServiceId) -> Self {
        Self {
            addr: u32::from(addr).to_be(),
            port: port.to_be(),
            state: state.code(),
            pad: 0,
            generation,
            svc_id: svc.0,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.addr))
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }

    pub fn backend_state(&self) -> BackendState {
        BackendState::from_code(self.state)
    }
}

impl berth_ct_key {
    pub fn new(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16, proto: Protocol) -> Self {
        Self {
            saddr: u32::from(saddr).to_be(),
            daddr: u32::from(daddr).to_be(),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto: proto.number(),
            pad: [0; 3],
        }
    }

    pub fn saddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.saddr))
    }

    pub fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.daddr))
    }

    pub fn sport(&self) -> u16 {
        u16::from_be(self.sport)
    }

    pub fn dport(&self) -> u16 {
        u16::from_be(self.dport)
    }
}

impl berth_ct_value {
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.vip))
    }

    pub fn vport(&self) -> u16 {
        u16::from_be(self.vport)
    }
}

/// A reason code (index into `berth_reasons_v1`) with its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason {
    pub code: u32,
    pub label: &'static str,
}

impl Reason {
    /// Drops are below `BERTH_REASON_FIRST_EVENT`; the rest are passes and
    /// flow events.
    pub const fn is_drop(&self) -> bool {
        self.code < BERTH_REASON_FIRST_EVENT
    }
}

/// Every reason code abi.h defines, with the label used in metrics.
pub const REASONS: &[Reason] = &[
    Reason { code: BERTH_DROP_NO_BACKEND, label: "no_backend" },
    Reason { code: BERTH_DROP_SCHEDULE_MISS, label: "schedule_miss" },
    Reason { code: BERTH_DROP_BACKEND_MISS, label: "backend_miss" },
    Reason { code: BERTH_DROP_CT_FULL, label: "conntrack_full" },
    Reason { code: BERTH_PASS_FRAGMENT, label: "fragment" },
    Reason { code: BERTH_PASS_MALFORMED, label: "malformed" },
    Reason { code: BERTH_EV_BACKEND_GONE, label: "backend_gone" },
    Reason { code: BERTH_EV_MIDFLOW_MISS, label: "midflow_miss" },
    Reason { code: BERTH_EV_AFFINITY_HIT, label: "affinity_hit" },
    Reason { code: BERTH_EV_SOCK_CONNECT, label: "socket_lb_connect" },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_is_network_order() {
        let k = berth_service_key::new(Ipv4Addr::new(198, 19, 0, 10), 80, Protocol::Tcp);
        // The in-memory bytes must read as on the wire.
        assert_eq!(k.vip.to_ne_bytes(), [198, 19, 0, 10]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
        assert_eq!(k.vip(), Ipv4Addr::new(198, 19, 0, 10));
        assert_eq!(k.port(), 80);
    }

    #[test]
    fn sizes_match_abi_h() {
        assert_eq!(size_of::<berth_service_key>(), 8);
        assert_eq!(size_of::<berth_service_value>(), 24);
        assert_eq!(size_of::<berth_schedule_key>(), 12);
        assert_eq!(size_of::<berth_backend>(), 16);
        assert_eq!(size_of::<berth_ct_key>(), 16);
        assert_eq!(size_of::<berth_ct_value>(), 32);
        assert_eq!(size_of::<berth_affinity_key>(), 16);
        assert_eq!(size_of::<berth_traffic_stats>(), 24);
    }

    #[test]
    fn reason_labels_are_unique() {
        let mut labels: Vec<_> = REASONS.iter().map(|r| r.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), REASONS.len());
    }
}
