//! End-to-end tests of `berth-agent standalone` in network namespaces: a
//! client, a node (where berth attaches to the uplink) and backend servers,
//! with real TCP (HTTP) and UDP through the VIP. Addresses: 198.18.0.0/15
//! only. Privileged: root, bpffs, cgroup2; never skipped.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use berth_agent::datapath::PinDir;
use berth_tests::{
    ChildGuard, HoldLoad, HttpLoad, Keepalive, Launch, Netns, Stream, Summary, TestCgroup, Topology, UdpLoad,
    agent_bin, server_bin,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const BPFFS_ROOT: &str = "/sys/fs/bpf/berth-e2e";
const READY: Duration = Duration::from_secs(20);

/// A running `berth-agent standalone` in the node namespace. Dropping it
/// kills the agent and removes its pins.
struct Agent {
    child: Option<ChildGuard>,
    node_name: String,
    config: PathBuf,
    instance: String,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(node: &Netns, config_yaml: &str, instance: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("services.yaml");
        std::fs::write(&config, config_yaml).expect("write config");
        let mut agent =
            Agent { child: None, node_name: node.name().to_owned(), config, instance: instance.to_owned(), _dir: dir };
        agent.spawn(node);
        agent
    }

    fn spawn(&mut self, node: &Netns) {
        let mut cmd = node.nsenter_command(agent_bin());
        cmd.args(["standalone", "--config"])
            .arg(&self.config)
            .args(["--bpffs-root", BPFFS_ROOT, "--poll-interval-ms", "100"])
            .env("BERTH_LOG", "info")
            .env("NO_COLOR", "1");
        let child = node.spawn_command(cmd, "berth-agent").expect("start berth-agent");
        if let Err(e) = child.wait_for_line(Stream::Stderr, "configuration programmed", READY) {
            panic!("berth-agent not ready: {e:#}\nstderr:\n{}", child.tail(Stream::Stderr, 40));
        }
        self.child = Some(child);
    }

    fn child(&self) -> &ChildGuard {
        self.child.as_ref().expect("agent running")
    }

    fn applied(&self) -> usize {
        self.child().lines(Stream::Stderr).iter().filter(|l| l.contains("configuration applied")).count()
    }

    /// Writes a new file and waits until the agent applied it.
    fn reload(&self, config_yaml: &str) {
        let before = self.applied();
        std::fs::write(&self.config, config_yaml).expect("write config");
        berth_tests::poll_until(Duration::from_secs(10), Duration::from_millis(20), || Ok(self.applied() > before))
            .unwrap_or_else(|e| panic!("reload not applied: {e:#}\n{}", self.child().tail(Stream::Stderr, 20)));
    }

    /// Stops the agent (SIGTERM) and waits; pins stay.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal(nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
            child.wait(Duration::from_secs(10)).expect("agent exits on SIGTERM");
        }
    }

    fn restart(&mut self, node: &Netns) {
        self.stop();
        self.spawn(node);
    }

    fn pins(&self) -> PinDir {
        PinDir::new(Path::new(BPFFS_ROOT), &self.instance)
    }

    /// GET a path on the agent's admin endpoint (inside the node netns).
    fn admin_get(&self, path: &str) -> String {
        http_get_in_netns(&self.node_name, SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)), path)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.child.take();
        if let Err(e) = self.pins().remove_all() {
            eprintln!("removing pins of {}: {e}", self.instance);
        }
    }
}

/// A plain HTTP/1.0 GET from a thread that joined `netns` (setns affects
/// only the calling thread).
fn http_get_in_netns(netns: &str, addr: SocketAddr, path: &str) -> String {
    let netns = netns.to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let f = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("open netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect admin");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    })
    .join()
    .expect("admin GET thread")
}

fn instance(prefix: &str) -> String {
    format!("{prefix}-{}", berth_tests::short_id())
}

fn config(topo: &Topology, instance: &str, services: &str) -> String {
    format!("instance: {instance}\nuplink: {}\nmetrics_address: 127.0.0.1:9464\nservices:\n{services}", topo.uplink)
}

fn backend_yaml(topo: &Topology, i: usize, weight: u32, state: &str) -> String {
    format!("      - {{ address: {}, port: 8080, weight: {weight}, state: {state} }}\n", topo.backend(i).addr)
}

fn service_yaml(name: &str, port: u16, protocol: &str, algorithm: &str, backends: &str) -> String {
    format!(
        "  - name: {name}\n    vip: {VIP}\n    port: {port}\n    protocol: {protocol}\n    algorithm: {algorithm}\n    backends:\n{backends}"
    )
}

fn url(port: u16) -> String {
    format!("http://{VIP}:{port}/")
}

/// Runs a client in the client namespace pinned to CPU 0: the WRR cursor is
/// per CPU, and veth delivers a packet on the sender's CPU.
struct PinnedCpu0<'a>(&'a Netns);

impl Launch for PinnedCpu0<'_> {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.0.command("taskset");
        cmd.args(["-c", "0"]).arg(program);
        cmd
    }

    fn spawn_command(&self, cmd: Command, label: &str) -> anyhow::Result<ChildGuard> {
        self.0.spawn_command(cmd, label)
    }
}

/// A process in the socket-LB cgroup on the node, pinned to CPU 0 (the WRR
/// cursor is per CPU and socket LB runs on the caller's CPU).
struct PinnedInCgroup<'a>(&'a TestCgroup, &'a Netns);

impl Launch for PinnedInCgroup<'_> {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.0.command_in(self.1, "taskset");
        cmd.args(["-c", "0"]).arg(program);
        cmd
    }

    fn spawn_command(&self, cmd: Command, label: &str) -> anyhow::Result<ChildGuard> {
        self.1.spawn_command(cmd, label)
    }
}

fn counts(s: &Summary) -> BTreeMap<String, u64> {
    s.by_backend.clone()
}

fn assert_all_ok(what: &str, s: &Summary) {
    assert_eq!(s.failed, 0, "{what}: failures {:?}", s.errors);
}

fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn wrr_split_is_exact_udp_replies_come_from_the_vip_and_other_traffic_is_untouched() {
    berth_tests::require_root();
    let topo = Topology::build("bw", 3).expect("topology");
    let server = server_bin!();
    let _servers = server.serve_backends(&topo, 8080, Some(8080)).expect("servers");
    let inst = instance("wrr");
    let backends = backend_yaml(&topo, 0, 1, "active")
        + &backend_yaml(&topo, 1, 2, "active")
        + &backend_yaml(&topo, 2, 3, "active");
    let services = service_yaml("web", 80, "TCP", "wrr", &backends) + &service_yaml("dns", 53, "UDP", "wrr", &backends);
    let agent = Agent::start(&topo.node, &config(&topo, &inst, &services), &inst);

    let mut load = HttpLoad::new(url(80), 600);
    load.keepalive = Keepalive::Off;
    load.concurrency = 1;
    let s = server.run(&PinnedCpu0(&topo.client), &load).expect("http load");
    assert_all_ok("wrr", &s);
    assert_eq!(
        counts(&s),
        BTreeMap::from([("b0".into(), 100), ("b1".into(), 200), ("b2".into(), 300)]),
        "1:2:3 over 600 flows on one CPU"
    );
    assert_eq!(s.peer_addrs.iter().cloned().collect::<Vec<_>>(), vec![format!("{VIP}:80")], "getpeername is the VIP");

    let udp = server.run(&topo.client, &UdpLoad::new(SocketAddr::from((VIP, 53)), 30)).expect("udp load");
    assert_all_ok("udp", &udp);
    assert_eq!(
        udp.peer_addrs.iter().cloned().collect::<Vec<_>>(),
        vec![format!("{VIP}:53")],
        "UDP replies come from the VIP"
    );

    // Not a Service: a backend's own address and a VIP port with no Service.
    let direct =
        server.run(&topo.client, &HttpLoad::new(format!("http://{}:8080/", topo.backend(1).addr), 20)).expect("direct");
    assert_all_ok("direct", &direct);
    assert_eq!(counts(&direct), BTreeMap::from([("b1".into(), 20)]));

    let m = agent.admin_get("/metrics");
    assert!(m.contains("200 OK"), "{m}");
    assert_eq!(metric(&m, "berth_service_new_flows_total", &["service=\"web\""]), 600, "{m}");
    assert_eq!(
        metric(&m, "berth_backend_new_flows_total", &["service=\"web\"", "backend=\"198.18.3.2:8080\""]),
        300,
        "{m}"
    );
    assert!(agent.admin_get("/readyz").contains("200 OK"));
}

#[test]
fn maglev_and_random_spread_flows_over_all_backends() {
    berth_tests::require_root();
    let topo = Topology::build("bm", 3).expect("topology");
    let server = server_bin!();
    let _servers = server.serve_backends(&topo, 8080, None).expect("servers");
    let inst = instance("mag");
    let weighted = backend_yaml(&topo, 0, 1, "active")
        + &backend_yaml(&topo, 1, 1, "active")
        + &backend_yaml(&topo, 2, 2, "active");
    let services =
        service_yaml("hash", 80, "TCP", "maglev", &weighted) + &service_yaml("rand", 81, "TCP", "random", &weighted);
    let _agent = Agent::start(&topo.node, &config(&topo, &inst, &services), &inst);
    for port in [80, 81] {
        let mut load = HttpLoad::new(url(port), 800);
        load.keepalive = Keepalive::Off;
        load.concurrency = 4;
        let s = server.run(&topo.client, &load).expect("load");
        assert_all_ok("spread", &s);
        let c = counts(&s);
        // Weights 1:1:2 → 25/25/50 %; 800 flows give a standard deviation
        // of about 1.5 points, so ±8 points is > 5 sigma.
        for (b, want) in [("b0", 0.25), ("b1", 0.25), ("b2", 0.5)] {
            let share = *c.get(b).unwrap_or(&0) as f64 / 800.0;
            assert!((share - want).abs() < 0.08, "port {port}: {b} got {share:.3}, want {want} ({c:?})");
        }
    }
}

#[test]
fn long_flow_survives_reloads_and_a_terminating_backend_gets_no_new_flows() {
    berth_tests::require_root();
    let topo = Topology::build("bt", 3).expect("topology");
    let server = server_bin!();
    let _servers = server.serve_backends(&topo, 8080, None).expect("servers");
    let inst = instance("term");
    let only_b0 = service_yaml("web", 80, "TCP", "wrr", &backend_yaml(&topo, 0, 1, "active"));
    let agent = Agent::start(&topo.node, &config(&topo, &inst, &only_b0), &inst);

    // One keep-alive connection, a request every 100 ms, for 4 s: on b0.
    let hold = server.start(&topo.client, &HoldLoad::new(url(80), Duration::from_secs(4))).expect("hold");
    std::thread::sleep(Duration::from_millis(500));
    // b0 starts draining, b1 and b2 join; then b2 leaves again.
    let draining = backend_yaml(&topo, 0, 1, "terminating")
        + &backend_yaml(&topo, 1, 1, "active")
        + &backend_yaml(&topo, 2, 1, "active");
    agent.reload(&config(&topo, &inst, &service_yaml("web", 80, "TCP", "wrr", &draining)));
    let mut fresh = HttpLoad::new(url(80), 200);
    fresh.keepalive = Keepalive::Off;
    let s = server.run(&topo.client, &fresh).expect("new flows");
    assert_all_ok("new flows", &s);
    assert_eq!(s.by_backend.get("b0"), None, "a terminating backend got new flows: {:?}", s.by_backend);
    let fewer = backend_yaml(&topo, 0, 1, "terminating") + &backend_yaml(&topo, 1, 1, "active");
    agent.reload(&config(&topo, &inst, &service_yaml("web", 80, "TCP", "wrr", &fewer)));
    // A broken file is rejected and changes nothing.
    std::fs::write(&agent.config, "services: [ { name: web, port: 0 } ]\n").expect("write bad file");
    std::thread::sleep(Duration::from_millis(400));
    let held = hold.finish().expect("hold");
    assert_all_ok("held connection", &held);
    assert!(held.ok >= 30, "{held:?}");
    assert_eq!(counts(&held), BTreeMap::from([("b0".into(), held.ok)]), "every request of the flow on b0");
    let m = agent.admin_get("/metrics");
    assert!(metric(&m, "berth_config_reloads_total", &["result=\"rejected\""]) >= 1, "{m}");
    let after = server.run(&topo.client, &HttpLoad::new(url(80), 20)).expect("after bad file");
    assert_all_ok("after a rejected file", &after);
}

#[test]
fn reloads_and_agent_restarts_under_load_fail_no_request() {
    berth_tests::require_root();
    let topo = Topology::build("br", 3).expect("topology");
    let server = server_bin!();
    let _servers = server.serve_backends(&topo, 8080, None).expect("servers");
    let inst = instance("load");
    let two = backend_yaml(&topo, 0, 1, "active") + &backend_yaml(&topo, 1, 1, "active");
    let mut agent =
        Agent::start(&topo.node, &config(&topo, &inst, &service_yaml("web", 80, "TCP", "wrr", &two)), &inst);

    let mut load = HttpLoad::new(url(80), 3000);
    load.keepalive = Keepalive::Off;
    load.concurrency = 4;
    let running = server.start(&topo.client, &load).expect("load");
    // Grow, re-weight, drain and shrink while requests flow; then restart
    // the agent twice. A backend is removed only after draining.
    let steps = [
        backend_yaml(&topo, 0, 1, "active")
            + &backend_yaml(&topo, 1, 1, "active")
            + &backend_yaml(&topo, 2, 1, "active"),
        backend_yaml(&topo, 0, 3, "active")
            + &backend_yaml(&topo, 1, 1, "active")
            + &backend_yaml(&topo, 2, 2, "active"),
        backend_yaml(&topo, 0, 1, "active")
            + &backend_yaml(&topo, 1, 1, "active")
            + &backend_yaml(&topo, 2, 1, "terminating"),
    ];
    for step in &steps {
        agent.reload(&config(&topo, &inst, &service_yaml("web", 80, "TCP", "wrr", step)));
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(300));
    agent.reload(&config(&topo, &inst, &service_yaml("web", 80, "TCP", "wrr", &two)));
    for _ in 0..2 {
        agent.restart(&topo.node);
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = running.finish().expect("load finishes");
    assert_eq!(s.ok + s.failed, 3000);
    assert_all_ok("under reloads and restarts", &s);
    assert!(s.by_backend.contains_key("b2"), "the added backend served: {:?}", s.by_backend);
}

#[test]
fn socket_lb_translates_at_connect_and_shows_the_vip() {
    berth_tests::require_root();
    let topo = Topology::build("bs", 2).expect("topology");
    let server = server_bin!();
    let _servers = server.serve_backends(&topo, 8080, Some(8080)).expect("servers");
    let cgroup = TestCgroup::create("sock").expect("cgroup2 dir");
    let inst = instance("sock");
    let backends = backend_yaml(&topo, 0, 1, "active") + &backend_yaml(&topo, 1, 1, "active");
    let services =
        service_yaml("web", 80, "TCP", "wrr", &backends) + &service_yaml("dns", 53, "UDP", "random", &backends);
    let cfg = config(&topo, &inst, &services)
        .replace("services:\n", &format!("socket_lb_cgroup: {}\nservices:\n", cgroup.path().display()));
    let _agent = Agent::start(&topo.node, &cfg, &inst);

    // A process on the node, inside the cgroup: no XDP on its path.
    let mut load = HttpLoad::new(url(80), 100);
    load.keepalive = Keepalive::Off;
    let s = server.run(&PinnedInCgroup(&cgroup, &topo.node), &load).expect("socket LB load");
    assert_all_ok("socket LB", &s);
    assert_eq!(counts(&s), BTreeMap::from([("b0".into(), 50), ("b1".into(), 50)]));
    assert_eq!(s.peer_addrs.iter().cloned().collect::<Vec<_>>(), vec![format!("{VIP}:80")], "getpeername() is the VIP");
    assert!(
        s.client_ips.iter().all(|ip| ip.starts_with("198.18.")),
        "backends saw the node's own address: {:?}",
        s.client_ips
    );

    let udp = server.run(&cgroup.within(&topo.node), &UdpLoad::new(SocketAddr::from((VIP, 53)), 20)).expect("udp");
    assert_all_ok("socket LB UDP", &udp);
    assert_eq!(
        udp.peer_addrs.iter().cloned().collect::<Vec<_>>(),
        vec![format!("{VIP}:53")],
        "UDP replies come from the VIP"
    );

    // Outside the cgroup the node's processes are not balanced by sockets.
    let outside = server.run(&topo.node, &HttpLoad::new(url(80), 3)).expect("outside");
    assert_eq!(outside.ok, 0, "a process outside the cgroup must not reach the VIP on the node: {outside:?}");
}

#[test]
fn bad_files_are_rejected_with_field_and_reason_and_change_nothing() {
    berth_tests::require_root();
    let topo = Topology::build("bc", 1).expect("topology");
    let inst = instance("bad");
    let ok_backend = backend_yaml(&topo, 0, 1, "active");
    let cases = [
        (
            "unknown field",
            service_yaml("web", 80, "TCP", "wrr", &ok_backend)
                .replace("    port: 80\n", "    port: 80\n    wieght: 2\n"),
            "wieght",
        ),
        (
            "bad address",
            service_yaml("web", 80, "TCP", "wrr", &ok_backend).replace(&VIP.to_string(), "198.19.0.300"),
            "vip",
        ),
        ("port 0", service_yaml("web", 0, "TCP", "wrr", &ok_backend), "services[0].port"),
        (
            "weight 0",
            service_yaml("web", 80, "TCP", "wrr", &backend_yaml(&topo, 0, 0, "active")),
            "services[0].backends[0].weight",
        ),
        (
            "duplicate Service",
            service_yaml("web", 80, "TCP", "wrr", &ok_backend) + &service_yaml("web2", 80, "TCP", "wrr", &ok_backend),
            "services[1]",
        ),
    ];
    let run_check = |yaml: &str, check: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, yaml).expect("write");
        let mut cmd = topo.node.nsenter_command(agent_bin());
        cmd.args(["standalone", "--config"]).arg(&file).args(["--bpffs-root", BPFFS_ROOT]);
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().expect("run berth-agent");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let pins = PinDir::new(Path::new(BPFFS_ROOT), &inst);
    for (what, services, needle) in &cases {
        let yaml = config(&topo, &inst, services);
        for check in [true, false] {
            let (code, stderr) = run_check(&yaml, check);
            assert_eq!(code, Some(64), "{what} (check={check}): exit code; stderr: {stderr}");
            assert!(stderr.contains(needle), "{what}: message must name {needle:?}: {stderr}");
            assert!(!pins.path().exists(), "{what}: a rejected file must not touch the kernel");
        }
    }
    let unknown_if =
        config(&topo, &inst, &service_yaml("web", 80, "TCP", "wrr", &ok_backend)).replace(&topo.uplink, "nosuchif0");
    let (code, stderr) = run_check(&unknown_if, false);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("uplink") && stderr.contains("nosuchif0"), "{stderr}");
    assert!(!pins.path().exists());
}
