//! Shared by the control plane's integration tests: every test runs in a
//! network namespace of its own, on an address from the benchmarking range,
//! so nothing touches the root namespace (not even its loopback).

use std::{future::Future, process::Command};

use nix::sched::{CloneFlags, unshare};

/// The test's own address, on `lo` of its private namespace.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub const TEST_IP: &str = "198.18.255.1";

/// Moves the calling thread into a new network namespace with `lo` up and
/// [`TEST_IP`] on it. Threads and processes started afterwards from this
/// thread (runtimes, etcd) inherit it. Fails loudly without root.
pub fn isolate() {
    unshare(CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): the control plane's integration tests need root (cargo xtask test)");
    for args in [["link", "set", "lo", "up"].as_slice(), &["addr", "add", &format!("{TEST_IP}/32"), "dev", "lo"]] {
        let status = Command::new("ip").args(args).status().expect("running ip (iproute2; cargo xtask setup)");
        assert!(status.success(), "ip {args:?} failed in the test namespace");
    }
}

/// [`isolate`], then a two-worker tokio runtime inside the namespace,
/// running `future` to completion.
#[allow(dead_code, reason = "not every test file uses every helper")]
pub fn run<F: Future>(future: F) -> F::Output {
    isolate();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

#[allow(dead_code, reason = "not every test file uses every helper")]
pub mod serve;

#[allow(dead_code, reason = "not every test file uses every helper")]
pub mod etcd;

#[allow(dead_code, reason = "not every test file uses every helper")]
pub mod sim_agent;

#[allow(dead_code, reason = "not every test file uses every helper")]
pub mod watch;

#[allow(dead_code, reason = "not every test file uses every helper")]
pub mod objects;
