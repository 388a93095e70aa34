//! berth's privileged end-to-end test harness.
//!
//! # Design
//! Every piece of kernel state a test makes is owned by an RAII guard that
//! undoes it on drop, also while unwinding from a failed assertion:
//! [`Netns`] (a named network namespace and the processes spawned in it),
//! [`Topology`] (client, node and backend namespaces wired with veths),
//! [`TestCgroup`] (a cgroup2 directory for socket-LB tests), [`BpfPinDir`]
//! (a bpffs directory for pinned objects) and [`ChildGuard`] (one process,
//! ended by PID only). Cleanup failures are printed to stderr, never panic.
//!
//! Traffic comes from the `berth-test-server` binary of this crate: `serve`
//! runs in backends, `client ...` runs wherever the test needs a client
//! (a namespace, or a namespace plus a cgroup, see [`Launch`]) and prints a
//! JSON [`Summary`]. [`ServerBin`] drives both from a test; the
//! [`server_bin!`] macro finds the binary Cargo built for the test.
//!
//! Names are unique per process and per call (`prefix-PID-N`), so tests run
//! in parallel threads and parallel processes without clashing. Addresses
//! come only from 198.18.0.0/15 (see [`topology`]); nothing in the root
//! namespace is changed.
//!
//! # Limitations
//! Needs root, iproute2 (`ip`), `nsenter`, `ethtool` and a cgroup2 mount
//! (for [`TestCgroup`]). IPv4 only for now. The load balancer under test is
//! not started here: tests start `berth-agent` themselves with
//! [`Netns::nsenter_command`], never under `ip netns exec` (which remounts
//! `/sys` and hides bpffs and cgroup2 from the agent).

pub mod bpffs;
pub mod cgroup;
pub mod client;
pub mod driver;
mod flags;
pub mod mounts;
pub mod netns;
pub mod packet;
pub mod process;
pub mod rootfs;
pub mod runc;
pub mod server;
pub mod summary;
pub mod topology;
pub mod wait;

use std::sync::atomic::{AtomicU64, Ordering};

pub use bpffs::BpfPinDir;
pub use cgroup::{InCgroup, TestCgroup};
pub use client::{ClientSpec, HoldLoad, HttpLoad, Keepalive, UdpAddressing, UdpLoad, UdpSockets};
pub use driver::{RunningClient, ServerBin};
pub use netns::{Launch, Netns};
pub use process::{ChildGuard, Finished, Stream};
pub use summary::Summary;
pub use topology::{BackendNet, Topology};
pub use wait::{poll_until, wait_for_tcp};

/// Builds a [`ServerBin`] for the `berth-test-server` binary Cargo built
/// alongside the calling integration test.
///
/// A macro because `CARGO_BIN_EXE_*` is only set while compiling
/// integration tests, so `env!` must expand in the test crate.
#[macro_export]
macro_rules! server_bin {
    () => {
        $crate::ServerBin::new(env!("CARGO_BIN_EXE_berth-test-server"))
    };
}

/// Panics with a clear message unless running as root.
///
/// Privileged tests must fail loudly when they cannot run: a skipped
/// privileged test looks like a passing one in CI.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "berth privileged test needs root (netns, veth, cgroup2, BPF); \
             run `sudo -E cargo test -p berth-tests` or as root in CI. Refusing to skip."
        );
    }
}

/// A name unique to this process and call: `PREFIX-PID-N`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next_id())
}

/// A short id (6 lowercase hex digits) for kernel names limited to 15
/// bytes, like interface names. Unique within this process for 2^24 calls;
/// the PID is mixed in so that concurrent processes rarely collide, which
/// only matters for names that share a namespace.
pub fn short_id() -> String {
    let n = next_id();
    let mixed = (u64::from(std::process::id()).wrapping_mul(0x9e37_79b9) ^ n) & 0xff_ffff;
    format!("{mixed:06x}")
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The `berth-agent` binary Cargo built beside the running test
/// (`target/<profile>/berth-agent`), or `BERTH_AGENT_BIN`. Panics with how
/// to build it when missing: privileged tests never skip.
pub fn agent_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("BERTH_AGENT_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<this test> → target/<profile>/berth-agent
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe.parent().and_then(std::path::Path::parent).expect("target dir").join("berth-agent");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p berth-agent) or set BERTH_AGENT_BIN",
        bin.display()
    );
    bin
}
