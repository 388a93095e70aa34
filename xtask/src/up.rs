//! `cargo xtask up`: the data plane's demo on the embedded defaults.
//!
//! Network namespaces with three backend servers and a client (198.18.0.0/15
//! only), `berth-agent standalone` on the node with a VIP weighted 1:1:2,
//! a few hundred requests through the VIP, the split per backend and where to
//! scrape the metrics. Everything it made is removed on Ctrl-C or exit: the
//! namespaces and processes by their guards, the pins by `berth-agent
//! cleanup`.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use berth_tests::{HttpLoad, Keepalive, ServerBin, Stream, Topology};

use crate::process::{cargo, run};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const INSTANCE: &str = "demo";
const BPFFS_ROOT: &str = "/sys/fs/bpf/berth";
const METRICS: &str = "127.0.0.1:9464";

/// Removes the demo's pins on drop, whatever happened before.
struct Pins {
    agent: PathBuf,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let status = std::process::Command::new(&self.agent)
            .args(["cleanup", "--instance", INSTANCE, "--bpffs-root", BPFFS_ROOT])
            .stdout(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "[up] cleanup of pins under {BPFFS_ROOT}/{INSTANCE} failed; run `berth-agent cleanup --instance {INSTANCE}`"
            );
        }
    }
}

pub fn run_demo(root: &Path, requests: u64, exit: bool) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !crate::process::is_root() {
        bail!("cargo xtask up needs root: it creates network namespaces and attaches BPF programs");
    }
    run(cargo().args(["build", "--release", "-p", "berth-agent", "-p", "berth-tests", "--bins"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let agent_bin = target.join("release").join("berth-agent");
    let server = ServerBin::new(target.join("release").join("berth-test-server"));

    println!("[up] creating namespaces: client, node, 3 backends (198.18.0.0/15)");
    let topo = Topology::build("up", 3).context("building the demo topology")?;
    let _servers = server.serve_backends(&topo, 8080, None).context("starting backend servers")?;
    let mut backends = String::new();
    for (i, weight) in [(0, 1), (1, 1), (2, 2)] {
        backends.push_str(&format!("      - {{ address: {}, port: 8080, weight: {weight} }}\n", topo.backend(i).addr));
    }
    let config = format!(
        "instance: {INSTANCE}\nuplink: {}\nmetrics_address: {METRICS}\nservices:\n  - name: demo-web\n    vip: {VIP}\n    port: 80\n    algorithm: wrr\n    backends:\n{backends}",
        topo.uplink
    );
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("services.yaml");
    std::fs::write(&config_path, &config)?;

    let _pins = Pins { agent: agent_bin.clone() };
    let mut cmd = topo.node.nsenter_command(&agent_bin);
    cmd.args(["standalone", "--config"]).arg(&config_path).args(["--bpffs-root", BPFFS_ROOT]).env("NO_COLOR", "1");
    let agent = topo.node.spawn_command(cmd, "berth-agent")?;
    agent
        .wait_for_line(Stream::Stderr, "configuration programmed", Duration::from_secs(30))
        .with_context(|| format!("berth-agent did not start:\n{}", agent.tail(Stream::Stderr, 30)))?;
    println!("[up] berth-agent standalone is running in namespace {} on uplink {}", topo.node.name(), topo.uplink);
    println!("[up] services file:\n{config}");

    let mut load = HttpLoad::new(format!("http://{VIP}:80/"), requests);
    load.keepalive = Keepalive::Off;
    let summary = server.run(&topo.client, &load).context("sending requests through the VIP")?;
    println!(
        "[up] {requests} requests from the client to {VIP}:80 (a new connection each): {} ok, {} failed",
        summary.ok, summary.failed
    );
    let weights: BTreeMap<&str, u32> = BTreeMap::from([("b0", 1), ("b1", 1), ("b2", 2)]);
    for (i, b) in topo.backends.iter().enumerate() {
        let name = format!("b{i}");
        let n = summary.by_backend.get(&name).copied().unwrap_or(0);
        println!(
            "    {name} {}:8080  weight {}  {n:>4} requests  {:>5.1}%",
            b.addr,
            weights[name.as_str()],
            100.0 * n as f64 / summary.ok.max(1) as f64
        );
    }
    let metrics = fetch_in_netns(topo.node.name(), METRICS.parse()?, "/metrics")?;
    println!("[up] from http://{METRICS}/metrics (inside the node namespace):");
    for line in
        metrics.lines().filter(|l| l.starts_with("berth_backend_new_flows_total") || l.starts_with("berth_drops_total"))
    {
        println!("    {line}");
    }
    println!(
        "[up] scrape it yourself: nsenter --net=/var/run/netns/{} curl -s http://{METRICS}/metrics\n\
         [up] try: edit {} (weights, states) and watch the agent apply it; see docs/dataplane.md",
        topo.node.name(),
        config_path.display()
    );
    if exit {
        println!("[up] --exit: removing everything");
        return Ok(());
    }
    println!("[up] Ctrl-C to stop and remove everything");
    wait_for_ctrl_c()?;
    println!("[up] removing namespaces, processes and pins");
    Ok(())
}

/// Blocks until SIGINT or SIGTERM. The signals are blocked first and then
/// waited for, so the guards above still run their cleanup.
fn wait_for_ctrl_c() -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("blocking SIGINT")?;
    set.wait().context("waiting for SIGINT")?;
    Ok(())
}

/// GET from a thread that joined the node's netns (setns is per thread).
fn fetch_in_netns(netns: &str, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let netns = netns.to_owned();
    let path = path.to_owned();
    std::thread::spawn(move || -> anyhow::Result<String> {
        let f = std::fs::File::open(format!("/var/run/netns/{netns}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: berth\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("metrics fetch thread panicked"))?
}
