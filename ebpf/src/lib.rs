//! berth's kernel programs and the Rust side of their ABI.
//!
//! # Design
//! The programs are C (`ebpf/bpf/*.c`, one file per attach point), compiled
//! once by `build.rs` with clang and embedded here: nodes never compile BPF.
//! Every map key and value is defined once, in `bpf/include/berth/abi.h`;
//! [`abi`] is generated from it by `cargo xtask codegen` and adds the
//! conversions to idiomatic types (the only place byte order is handled).
//!
//! # Limitations
//! IPv4 only: the IPv6 programs will reuse the same layout with 16-byte
//! addresses under new map names.

pub mod abi;

/// The XDP Service load balancer (uplink ingress). Program: `berth_xdp_lb`.
/// Needs Linux 5.9+ for XDP links (tested on 6.18).
pub fn xdp_lb_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_lb.o"))
}

/// Reverse NAT of replies (tc/tcx egress on the uplink). Program:
/// `berth_tc_rnat`. tcx links need Linux 6.6+; older kernels use netlink tc.
pub fn tc_rev_nat_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_rev_nat.o"))
}

/// Socket-level load balancing (cgroup sock_addr hooks). Programs:
/// `berth_connect4`, `berth_sendmsg4`, `berth_recvmsg4`, `berth_getpeer4`.
/// getpeername4 needs Linux 5.8+.
pub fn sock_lb_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"))
}

/// Program names inside the objects, as the loader looks them up.
pub mod programs {
    pub const XDP_LB: &str = "berth_xdp_lb";
    pub const TC_REV_NAT: &str = "berth_tc_rnat";
    pub const CONNECT4: &str = "berth_connect4";
    pub const SENDMSG4: &str = "berth_sendmsg4";
    pub const RECVMSG4: &str = "berth_recvmsg4";
    pub const GETPEERNAME4: &str = "berth_getpeer4";
}

/// Global knobs set with `EbpfLoader::override_global`.
pub mod globals {
    /// `__u32`: 1 = per-CPU traffic counters on, 0 = compiled out by the
    /// verifier (used by benchmarks to price the counters).
    pub const STATS: &str = "berth_cfg_stats";
}
