//! End-to-end tests of the agent's pod network (`berth_agent::network`):
//! in a node namespace the test makes, pods get namespaces, routed veths
//! and addresses from 198.18.0.0/15; real TCP between pods, node and
//! gateway; teardown, restart (reopen), garbage collection and rollback.
//!
//! `PodNetwork::open` runs on a thread that entered the node namespace;
//! everything after runs on the test thread, which stays in the root
//! namespace, so the tests also check that berth works in the namespace it
//! was opened in and leaves the root namespace alone. Privileged: needs
//! root, fails (never skips) without it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic so failures carry a backtrace")]

use std::{
    collections::HashSet,
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};
use berth_agent::network::{
    HOST_VETH_ALIAS_PREFIX, Ipv4Net, NetworkError, POD_IF, PodNet, PodNetwork, PodNetworkConfig, host_veth_name,
    ipam::Ipam,
};
use berth_tests::{Netns, process, require_root};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns},
};

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A node namespace plus a temp dir holding the state and netns
/// directories. On drop (also when unwinding) `netns_dir`, which berth
/// made a mount point, is unmounted lazily with every pod namespace file
/// under it; then the temp dir and the node namespace (with the host
/// veths) go.
struct Fixture {
    node: Netns,
    cidr: Ipv4Net,
    state_dir: PathBuf,
    netns_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(cidr: &str, ip_forward: bool) -> Self {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let node = Netns::unique("bC-pn").unwrap();
        node.sysctl("net.ipv4.ip_forward", if ip_forward { "1" } else { "0" }).unwrap();
        Self {
            node,
            cidr: cidr.parse().unwrap(),
            state_dir: tmp.path().join("state"),
            netns_dir: tmp.path().join("netns"),
            _tmp: tmp,
        }
    }

    /// `PodNetwork::open` from inside the node namespace.
    fn open(&self) -> PodNetwork {
        let config = PodNetworkConfig {
            state_dir: self.state_dir.clone(),
            pod_cidr: self.cidr,
            netns_dir: self.netns_dir.clone(),
        };
        in_ns(&self.node.path(), || PodNetwork::open(config)).unwrap()
    }

    /// `ip -o ARGS` in the node namespace.
    fn node_ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["-o"];
        argv.extend_from_slice(args);
        self.node.ip(&argv).unwrap()
    }

    fn node_has_link(&self, name: &str) -> bool {
        self.node_ip(&["link", "show"]).lines().any(|l| link_name(l) == Some(name))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        match umount2(&self.netns_dir, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => eprintln!("pod_network: unmounting {}: {e}", self.netns_dir.display()),
        }
    }
}

/// The interface name in a line of `ip -o link show` (`3: name@peer: <...`).
fn link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

/// Runs `f` on a std thread inside the network namespace at `path` (the
/// test thread never changes namespace).
fn in_ns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    let ns = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        });
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `ip -o ARGS` inside the namespace file `netns` (pods have no name that
/// `ip -n` knows).
fn ip_in(netns: &Path, args: &[&str]) -> String {
    let mut net = std::ffi::OsString::from("--net=");
    net.push(netns);
    let mut cmd = Command::new("nsenter");
    cmd.arg(net).args(["--", "ip", "-o"]).args(args);
    process::run(cmd, process::COMMAND_TIMEOUT).unwrap()
}

/// Connects from `client_ns` to `target` (a listener made in `server_ns`
/// on `listen`), exchanges a line each way; returns the client address
/// the server saw.
fn tcp(server_ns: &Path, listen: Ipv4Addr, client_ns: &Path, target: Ipv4Addr) -> Result<Ipv4Addr> {
    // A socket stays in the namespace it was made in, so both are made on
    // threads inside their namespaces and used from here.
    let listener = in_ns(server_ns, || TcpListener::bind((listen, 0))).with_context(|| format!("bind {listen}"))?;
    let addr = SocketAddr::from((target, listener.local_addr()?.port()));
    let mut client = in_ns(client_ns, || TcpStream::connect_timeout(&addr, IO_TIMEOUT))
        .with_context(|| format!("connect {addr} from {}", client_ns.display()))?;
    // Connected, so the connection waits in the accept queue.
    let (mut server, peer) = listener.accept()?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
    }
    client.write_all(b"ping\n")?;
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf)?;
    anyhow::ensure!(&buf == b"ping\n", "server got {buf:?}");
    server.write_all(b"pong\n")?;
    client.read_exact(&mut buf)?;
    anyhow::ensure!(&buf == b"pong\n", "client got {buf:?}");
    match peer.ip() {
        std::net::IpAddr::V4(ip) => Ok(ip),
        other => anyhow::bail!("IPv6 peer {other}"),
    }
}

/// The pod's interfaces and routes are as designed.
fn assert_pod_configured(fx: &Fixture, net: &PodNet) {
    let addrs = ip_in(&net.netns, &["-4", "addr", "show", "dev", POD_IF]);
    assert!(addrs.contains(&format!("inet {}/32", net.ip)), "{addrs}");
    let lo = ip_in(&net.netns, &["link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let routes = ip_in(&net.netns, &["-4", "route", "show"]);
    assert!(has_route(&routes, &format!("default via {} dev {POD_IF}", net.gateway), ""), "{routes}");
    assert!(has_route(&routes, &format!("{} dev {POD_IF}", net.gateway), "scope link"), "{routes}");
    let host_link = fx.node_ip(&["link", "show", "dev", &net.host_veth]);
    assert!(host_link.contains(&format!("alias {HOST_VETH_ALIAS_PREFIX}")), "{host_link}");
    let host_addrs = fx.node_ip(&["-4", "addr", "show", "dev", &net.host_veth]);
    assert!(host_addrs.contains(&format!("inet {}/32", net.gateway)), "{host_addrs}");
    let host_routes = fx.node_ip(&["-4", "route", "show"]);
    assert!(has_route(&host_routes, &format!("{} dev {}", net.ip, net.host_veth), "scope link"), "{host_routes}");
}

/// Whether a line of `ip route show` starts with `start` and contains
/// `also` (`proto ...` sits between them).
fn has_route(routes: &str, start: &str, also: &str) -> bool {
    routes.lines().any(|l| l.starts_with(&format!("{start} ")) && l.contains(also))
}

fn assert_torn_down(fx: &Fixture, pn: &PodNetwork, uid: &str, net: &PodNet) {
    assert!(!fx.node_has_link(&net.host_veth), "veth {} left", net.host_veth);
    assert!(!net.netns.exists(), "netns file {} left", net.netns.display());
    assert!(!pn.allocations().iter().any(|(_, u)| u == uid), "{uid} still allocated: {:?}", pn.allocations());
    let host_routes = fx.node_ip(&["-4", "route", "show"]);
    assert!(!has_route(&host_routes, &format!("{} dev", net.ip), ""), "{host_routes}");
}

fn keep(uids: &[&str]) -> HashSet<String> {
    uids.iter().map(|u| (*u).to_owned()).collect()
}

#[test]
fn pods_get_routed_veths_and_survive_restart_teardown_and_gc() {
    let fx = Fixture::new("198.18.0.0/24", true);
    let node_ns = fx.node.path();
    let gateway = Ipv4Addr::new(198, 18, 0, 1);
    let uids = ["pod-a", "pod-b", "pod-c"];

    let pn = fx.open();
    assert!(pn.ip_forward(), "ip_forward was set in the node netns (the root netns has its own value)");
    assert_eq!(pn.gateway(), gateway);
    let nets: Vec<PodNet> = uids.iter().map(|u| pn.setup(u).unwrap()).collect();
    for (i, (uid, net)) in uids.iter().zip(&nets).enumerate() {
        assert_eq!(net.ip, Ipv4Addr::new(198, 18, 0, 2 + i as u8), "{net:?}");
        assert_eq!(net.gateway, gateway);
        assert_eq!(net.host_veth, host_veth_name(uid));
        assert_eq!(net.netns, fx.netns_dir.join(uid));
        assert_pod_configured(&fx, net);
        let host_link = fx.node_ip(&["link", "show", "dev", &net.host_veth]);
        assert!(host_link.contains(&format!("alias berth pod {uid}")), "{host_link}");
    }
    // Nothing landed in the root namespace, though the test thread is there.
    let root_links = process::run_argv(&["ip", "-o", "link", "show"], process::COMMAND_TIMEOUT).unwrap();
    for net in &nets {
        assert!(!root_links.lines().any(|l| link_name(l) == Some(&net.host_veth)), "{root_links}");
    }

    // Pod → pod through the node (forwarding), unNATed.
    assert_eq!(tcp(&nets[1].netns, nets[1].ip, &nets[0].netns, nets[1].ip).unwrap(), nets[0].ip);
    assert_eq!(tcp(&nets[0].netns, nets[0].ip, &nets[2].netns, nets[0].ip).unwrap(), nets[2].ip);
    // Node → pod: the node's source is the gateway address of that veth.
    assert_eq!(tcp(&nets[2].netns, nets[2].ip, &node_ns, nets[2].ip).unwrap(), gateway);
    // Pod → gateway (a listener in the node namespace).
    assert_eq!(tcp(&node_ns, gateway, &nets[1].netns, gateway).unwrap(), nets[1].ip);

    // Setup is idempotent.
    assert_eq!(pn.setup("pod-a").unwrap(), nets[0]);
    assert_eq!(pn.allocations().len(), 3);

    // Restart: a new PodNetwork sees the same allocations and networks.
    drop(pn);
    let pn = fx.open();
    let expected: Vec<(Ipv4Addr, String)> = nets.iter().zip(uids).map(|(n, u)| (n.ip, u.to_owned())).collect();
    assert_eq!(pn.allocations(), expected);
    assert_eq!(pn.setup("pod-b").unwrap(), nets[1]);
    assert_pod_configured(&fx, &nets[1]);
    assert_eq!(tcp(&nets[1].netns, nets[1].ip, &nets[0].netns, nets[1].ip).unwrap(), nets[0].ip);

    // Teardown of pod-a; idempotent; the others keep working, including
    // the gateway address that pod-a's veth carried too.
    pn.teardown("pod-a").unwrap();
    assert_torn_down(&fx, &pn, "pod-a", &nets[0]);
    pn.teardown("pod-a").unwrap();
    pn.teardown("never-existed").unwrap();
    assert_eq!(tcp(&nets[2].netns, nets[2].ip, &nets[1].netns, nets[2].ip).unwrap(), nets[1].ip);
    assert_eq!(tcp(&node_ns, gateway, &nets[2].netns, gateway).unwrap(), nets[2].ip);
    assert_eq!(tcp(&nets[1].netns, nets[1].ip, &node_ns, nets[1].ip).unwrap(), gateway);

    // Round-robin: a new pod gets .5, not pod-a's just-released .2.
    let d = pn.setup("pod-d").unwrap();
    assert_eq!(d.ip, Ipv4Addr::new(198, 18, 0, 5));
    assert_eq!(tcp(&d.netns, d.ip, &nets[1].netns, d.ip).unwrap(), nets[1].ip);

    // Garbage: a stray netns file, an allocation without a network (from a
    // second IPAM handle, as another process would), a veth whose alias
    // names a pod nothing else knows, a veth named like berth's without
    // an alias. Not garbage: a veth named like berth's that is not a
    // veth, and an alias-less veth with a kept pod's name.
    std::fs::write(fx.netns_dir.join("stray-file"), b"").unwrap();
    Ipam::open(&fx.state_dir, fx.cidr).unwrap().allocate("ipam-only").unwrap();
    let ghost_veth = host_veth_name("ghost");
    fx.node.ip(&["link", "add", &ghost_veth, "type", "veth", "peer", "name", "bC-ghost"]).unwrap();
    fx.node.ip(&["link", "set", &ghost_veth, "alias", "berth pod ghost"]).unwrap();
    let orphan_veth = "bth0123456789";
    fx.node.ip(&["link", "add", orphan_veth, "type", "veth", "peer", "name", "bC-orphan"]).unwrap();
    let bridge = "bth0123456780";
    fx.node.ip(&["link", "add", bridge, "type", "bridge"]).unwrap();
    let kept_name = host_veth_name("pod-kept-later");
    fx.node.ip(&["link", "add", &kept_name, "type", "veth", "peer", "name", "bC-kept"]).unwrap();

    let removed = pn.garbage_collect(&keep(&["pod-b", "pod-kept-later"])).unwrap();
    assert_eq!(removed, ["ghost", "ipam-only", "pod-c", "pod-d", "stray-file"]);
    assert_torn_down(&fx, &pn, "pod-c", &nets[2]);
    assert_torn_down(&fx, &pn, "pod-d", &d);
    assert!(!fx.node_has_link(&ghost_veth));
    assert!(!fx.node_has_link(orphan_veth));
    assert!(fx.node_has_link(bridge), "not a veth: not berth's");
    assert!(fx.node_has_link(&kept_name), "may be a kept pod's veth before it got its alias");
    fx.node.ip(&["link", "del", bridge]).unwrap();
    fx.node.ip(&["link", "del", &kept_name]).unwrap();
    assert!(!fx.netns_dir.join("stray-file").exists());
    assert_eq!(pn.allocations(), [(nets[1].ip, "pod-b".to_owned())]);
    // The kept pod is untouched and still reachable.
    assert_pod_configured(&fx, &nets[1]);
    assert_eq!(tcp(&nets[1].netns, nets[1].ip, &node_ns, nets[1].ip).unwrap(), gateway);
    assert_eq!(pn.garbage_collect(&keep(&["pod-b"])).unwrap(), Vec::<String>::new());

    pn.teardown("pod-b").unwrap();
    assert_torn_down(&fx, &pn, "pod-b", &nets[1]);
    assert!(pn.allocations().is_empty());
    assert_eq!(std::fs::read_dir(&fx.netns_dir).unwrap().count(), 0);
}

#[test]
fn failed_setup_rolls_back_everything() {
    let fx = Fixture::new("198.18.1.0/29", true);
    let pn = fx.open();
    let uid = "pod-collides";
    let name = host_veth_name(uid);
    let nothing_left = |what: &str| {
        assert!(pn.allocations().is_empty(), "{what}: {:?}", pn.allocations());
        assert!(!fx.netns_dir.join(uid).exists(), "{what}: netns file left");
    };

    // The host veth name is taken by a non-veth (a bridge: this kernel has
    // no dummy driver): refused before any change to it; the new netns
    // and the address are undone.
    fx.node.ip(&["link", "add", &name, "type", "bridge"]).unwrap();
    let e = pn.setup(uid).unwrap_err();
    assert!(matches!(e, NetworkError::HostVethNameTaken { .. }), "{e}");
    nothing_left("dummy collision");
    assert!(fx.node_ip(&["-d", "link", "show", &name]).contains("bridge"), "the bridge must stay");
    fx.node.ip(&["link", "del", &name]).unwrap();

    // ... by another pod's veth (a uid hash collision: the alias names the
    // owner), and by a veth without an alias that is not paired with this
    // pod's eth0. Neither is touched, by setup nor by teardown.
    fx.node.ip(&["link", "add", &name, "type", "veth", "peer", "name", "bC-peer"]).unwrap();
    fx.node.ip(&["link", "set", &name, "alias", "berth pod other-pod"]).unwrap();
    let e = pn.setup(uid).unwrap_err();
    assert!(matches!(&e, NetworkError::HostVethInUse { owner: Some(o), .. } if o == "other-pod"), "{e}");
    nothing_left("veth collision");
    pn.teardown(uid).unwrap();
    assert!(fx.node_has_link(&name), "another pod's veth must stay");
    fx.node.ip(&["link", "set", &name, "alias", ""]).unwrap();
    let e = pn.setup(uid).unwrap_err();
    assert!(matches!(&e, NetworkError::HostVethInUse { owner: None, .. }), "{e}");
    nothing_left("unnamed veth");
    pn.teardown(uid).unwrap();
    assert!(fx.node_has_link(&name), "a veth berth cannot tell is its own must stay");
    fx.node.ip(&["link", "del", &name]).unwrap();

    // The netns path is a directory.
    std::fs::create_dir(fx.netns_dir.join(uid)).unwrap();
    let e = pn.setup(uid).unwrap_err();
    assert!(matches!(e, NetworkError::NetnsPathInUse { .. }), "{e}");
    assert!(pn.allocations().is_empty());
    std::fs::remove_dir(fx.netns_dir.join(uid)).unwrap();

    // A failure in the very last step, after the veth exists: the pod
    // namespace is one the test made (bind-mounted where setup looks for
    // it) with a policy rule that prohibits the gateway, so the pod's
    // default route is refused. The veth made by this call is deleted
    // again (with the node-side address and route on it), the address is
    // released, and the namespace file, which setup did not make, stays.
    let pod_ns = Netns::unique("bC-pnpod").unwrap();
    pod_ns.ip(&["rule", "add", "pref", "10", "to", &pn.gateway().to_string(), "prohibit"]).unwrap();
    let ns_file = fx.netns_dir.join(uid);
    std::fs::write(&ns_file, b"").unwrap();
    mount(Some(&pod_ns.path()), &ns_file, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    let e = pn.setup(uid).unwrap_err();
    assert!(matches!(e, NetworkError::Netlink { .. }), "{e}");
    assert!(e.to_string().contains("0.0.0.0/0 via"), "{e}");
    assert!(!fx.node_has_link(&name), "rollback must delete the veth it made");
    assert!(!pod_ns.ip(&["-o", "link", "show"]).unwrap().contains(POD_IF), "the pod end goes with it");
    let host_routes = fx.node_ip(&["-4", "route", "show"]);
    assert!(!host_routes.contains("198.18.1."), "{host_routes}");
    assert!(pn.allocations().is_empty());
    assert!(ns_file.exists(), "a namespace file setup did not make must stay");
    umount2(&ns_file, MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_file(&ns_file).unwrap();
    drop(pod_ns);

    // A stale veth of this very pod (its alias says so) that is paired
    // elsewhere is replaced; then the uid sets up fine.
    fx.node.ip(&["link", "add", &name, "type", "veth", "peer", "name", "bC-stale"]).unwrap();
    fx.node.ip(&["link", "set", &name, "alias", &format!("berth pod {uid}")]).unwrap();
    let net = pn.setup(uid).unwrap();
    assert!(!fx.node_has_link("bC-stale"), "the stale pair was replaced");
    assert!(fx.cidr.contains(net.ip) && net.ip != pn.gateway(), "{net:?}");
    assert_pod_configured(&fx, &net);
    pn.teardown(uid).unwrap();
    assert_torn_down(&fx, &pn, uid, &net);
}

#[test]
fn ip_forward_is_reported_for_the_node_namespace_not_changed() {
    let fx = Fixture::new("198.18.2.0/29", false);
    let pn = fx.open();
    assert!(!pn.ip_forward());
    assert_eq!(fx.node.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]).unwrap().trim(), "0");
    // Node ↔ pod needs no forwarding; pod ↔ pod does.
    let a = pn.setup("pod-a").unwrap();
    let b = pn.setup("pod-b").unwrap();
    assert_eq!(tcp(&a.netns, a.ip, &fx.node.path(), a.ip).unwrap(), pn.gateway());
    let err = tcp(&b.netns, b.ip, &a.netns, b.ip).unwrap_err();
    assert!(format!("{err:#}").contains("connect"), "{err:#}");
    for uid in ["pod-a", "pod-b"] {
        pn.teardown(uid).unwrap();
    }
}
