//! Sanity tests of the harness itself, without berth: plain routing through
//! the node namespace must work before any load-balancing test means
//! anything. Privileged: needs root, fails (never skips) without it.

#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use berth_tests::topology::{CLIENT_ADDR, backend_addr};
use berth_tests::{
    BpfPinDir, HoldLoad, HttpLoad, Keepalive, Stream, TestCgroup, Topology, UdpAddressing, UdpLoad, UdpSockets,
    require_root, server_bin,
};

const HTTP_PORT: u16 = 8080;
const UDP_PORT: u16 = 9090;

fn url(addr: std::net::Ipv4Addr, path: &str) -> String {
    format!("http://{addr}:{HTTP_PORT}{path}")
}

fn only(backend: &str, n: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(backend.to_owned(), n)])
}

#[test]
fn client_reaches_each_backend_through_the_node() {
    require_root();
    let bin = server_bin!();
    let topo = Topology::build("bt-route", 2).unwrap();
    let _servers = bin.serve_backends(&topo, HTTP_PORT, Some(UDP_PORT)).unwrap();

    for b in &topo.backends {
        let s = bin.run(&topo.client, &HttpLoad::new(url(b.addr, "/"), 20)).unwrap();
        assert_eq!((s.ok, s.failed), (20, 0), "{s:?}");
        assert_eq!(s.by_backend, only(&b.name, 20));
        // Plain routing: the backend sees the client's own address.
        assert_eq!(s.client_ips, BTreeSet::from([CLIENT_ADDR.to_string()]));
        assert_eq!(s.peer_addrs, BTreeSet::from([format!("{}:{HTTP_PORT}", b.addr)]));

        let udp = bin.run(&topo.client, &UdpLoad::new((b.addr, UDP_PORT).into(), 10)).unwrap();
        assert_eq!((udp.ok, udp.failed), (10, 0), "{udp:?}");
        assert_eq!(udp.by_backend, only(&b.name, 10));
        assert_eq!(udp.peer_addrs, BTreeSet::from([format!("{}:{UDP_PORT}", b.addr)]));
    }

    let connected = UdpLoad {
        sockets: UdpSockets::Shared,
        addressing: UdpAddressing::Connected,
        ..UdpLoad::new((backend_addr(0), UDP_PORT).into(), 5)
    };
    let s = bin.run(&topo.client, &connected).unwrap();
    assert_eq!((s.ok, s.by_backend.clone()), (5, only("b0", 5)), "{s:?}");
}

#[test]
fn keepalive_serves_many_concurrent_connections() {
    require_root();
    let bin = server_bin!();
    let topo = Topology::build("bt-conc", 1).unwrap();
    let _servers = bin.serve_backends(&topo, HTTP_PORT, None).unwrap();
    // 64 requests of 200 ms on 32 connections: two rounds if the server
    // really serves them concurrently, 12.8 s if it serialised them.
    let load = HttpLoad {
        concurrency: 32,
        keepalive: Keepalive::On,
        ..HttpLoad::new(url(backend_addr(0), "/slow?ms=200"), 64)
    };
    let s = bin.run(&topo.client, &load).unwrap();
    assert_eq!((s.ok, s.failed), (64, 0), "{s:?}");
    assert_eq!(s.by_backend, only("b0", 64));
    assert!(s.elapsed_ms < 3000, "took {} ms: requests were not concurrent", s.elapsed_ms);
}

#[test]
fn hold_keeps_one_connection_in_the_background() {
    require_root();
    let bin = server_bin!();
    let topo = Topology::build("bt-hold", 1).unwrap();
    let _servers = bin.serve_backends(&topo, HTTP_PORT, None).unwrap();
    let running =
        bin.start(&topo.client, &HoldLoad::new(url(backend_addr(0), "/"), Duration::from_millis(600))).unwrap();
    let s = running.finish().unwrap();
    assert_eq!(s.failed, 0, "{s:?}");
    assert!((5..=7).contains(&s.ok), "{s:?}");
    assert_eq!(s.backends(), BTreeSet::from(["b0"]));
    assert_eq!(s.peer_addrs.len(), 1);
}

#[test]
fn failures_are_counted_not_fatal() {
    require_root();
    let bin = server_bin!();
    let topo = Topology::build("bt-fail", 1).unwrap();
    let _servers = bin.serve_backends(&topo, HTTP_PORT, Some(UDP_PORT)).unwrap();
    let closed = format!("http://{}:{}/", backend_addr(0), HTTP_PORT + 1);
    let load = HttpLoad { timeout: Duration::from_millis(300), ..HttpLoad::new(closed, 3) };
    let s = bin.run(&topo.client, &load).unwrap();
    assert_eq!((s.ok, s.failed), (0, 3), "{s:?}");
    assert!(s.errors[0].contains("refused"), "{s:?}");

    let s = bin.run(&topo.client, &HttpLoad::new(url(backend_addr(0), "/nope"), 1)).unwrap();
    assert!(s.failed == 1 && s.errors[0].contains("404"), "{s:?}");

    let udp =
        UdpLoad { timeout: Duration::from_millis(200), ..UdpLoad::new((backend_addr(0), UDP_PORT + 1).into(), 2) };
    let s = bin.run(&topo.client, &udp).unwrap();
    assert_eq!((s.ok, s.failed), (0, 2), "{s:?}");
}

#[test]
fn wait_for_tcp_is_bounded() {
    require_root();
    let bin = server_bin!();
    let topo = Topology::build("bt-wait", 1).unwrap();
    let _servers = bin.serve_backends(&topo, HTTP_PORT, None).unwrap();
    let open: SocketAddr = (backend_addr(0), HTTP_PORT).into();
    topo.client.wait_for_tcp(open, Duration::from_secs(5)).unwrap();
    let closed: SocketAddr = (backend_addr(0), HTTP_PORT + 1).into();
    let err = topo.client.wait_for_tcp(closed, Duration::from_millis(300)).unwrap_err();
    assert!(format!("{err:#}").contains("not accepting"), "{err:#}");
}

#[test]
fn cgroup_processes_join_before_exec_and_run_in_the_netns() {
    require_root();
    let bin = server_bin!();
    let topo = Topology::build("bt-cg", 1).unwrap();
    let _servers = bin.serve_backends(&topo, HTTP_PORT, None).unwrap();
    let cg = TestCgroup::create("bt-cg").unwrap();

    let out =
        cg.spawn_in(&topo.client, &["cat", "/proc/self/cgroup"]).unwrap().finish(Duration::from_secs(10)).unwrap();
    let name = cg.path().file_name().unwrap().to_str().unwrap();
    let v2 = out.stdout.lines().find(|l| l.starts_with("0::")).unwrap_or_default();
    assert!(v2.ends_with(&format!("/berth-test/{name}")), "{}", out.stdout);

    let addrs =
        cg.spawn_in(&topo.client, &["ip", "-4", "-o", "addr"]).unwrap().finish(Duration::from_secs(10)).unwrap();
    assert!(addrs.stdout.contains(&CLIENT_ADDR.to_string()), "{}", addrs.stdout);

    let held = cg.spawn_in(&topo.client, &["sleep", "30"]).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![held.pid()]);
    drop(held);

    let s = bin.run(&cg.within(&topo.client), &HttpLoad::new(url(backend_addr(0), "/"), 3)).unwrap();
    assert_eq!(s.by_backend, only("b0", 3), "{s:?}");
}

#[test]
fn nsenter_keeps_host_bpffs_and_cgroup2_visible() {
    require_root();
    let topo = Topology::build("bt-nse", 0).unwrap();
    let mut cmd = topo.node.nsenter_command("stat");
    cmd.args(["-f", "-c", "%T", "/sys/fs/bpf"]);
    let out = topo.node.spawn_command(cmd, "stat").unwrap().finish(Duration::from_secs(10)).unwrap();
    assert_eq!(out.stdout.trim(), "bpf_fs");
    let mut cmd = topo.node.nsenter_command("ip");
    cmd.args(["-o", "link", "show", &topo.uplink]);
    let out = topo.node.spawn_command(cmd, "ip").unwrap().finish(Duration::from_secs(10)).unwrap();
    assert!(out.stdout.contains(&topo.uplink), "{out:?}");
}

#[test]
fn veths_have_tx_checksum_offload_off() {
    require_root();
    let topo = Topology::build("bt-csum", 1).unwrap();
    let ends =
        [(&topo.client, &topo.client_if), (&topo.node, &topo.uplink), (&topo.backend(0).ns, &topo.backend(0).if_name)];
    for (ns, dev) in ends {
        let features = ns.exec(&["ethtool", "-k", dev]).unwrap();
        assert!(features.lines().any(|l| l.trim() == "tx-checksumming: off"), "{dev}: {features}");
    }
}

#[test]
fn bpf_pin_dir_is_removed_with_its_contents() {
    require_root();
    let dir = BpfPinDir::create("bt-pin").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let path = dir.path().to_owned();
    drop(dir);
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn everything_is_cleaned_up_on_panic() {
    require_root();
    let bin = server_bin!();
    let seen: Mutex<(Vec<String>, Vec<u32>, String)> = Mutex::default();
    let result = std::panic::catch_unwind(|| {
        let topo = Topology::build("bt-panic", 1).unwrap();
        let cg = TestCgroup::create("bt-panic").unwrap();
        let server = bin.serve(&topo.backend(0).ns, "b0", (backend_addr(0), HTTP_PORT).into(), None).unwrap();
        let sleeper = cg.spawn_in(&topo.client, &["sleep", "30"]).unwrap();
        server.wait_for_line(Stream::Stdout, "ready", Duration::from_secs(1)).unwrap();
        *seen.lock().unwrap() = (
            topo.namespaces().map(|ns| ns.name().to_owned()).collect(),
            vec![server.pid(), sleeper.pid()],
            cg.path().display().to_string(),
        );
        // Leak nothing even if guards are dropped in an awkward order:
        // namespaces go before the processes in them.
        std::mem::drop(topo);
        panic!("deliberate");
    });
    assert!(result.is_err());
    let (names, pids, cgroup) = seen.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in &names {
        assert!(!listed.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} left behind");
    }
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} left running");
    }
    assert!(!std::path::Path::new(&cgroup).exists(), "{cgroup} left behind");
}
