//! End to end: wrk through network namespaces, berth side by side with a
//! direct connection (the limit), kube-proxy-style iptables and nftables
//! rules and HAProxy.
//!
//! # Design
//! For every N (Services), every peer gets its own fresh [`Topology`]
//! (client → node → [`BACKENDS`] backends, 198.18.0.0/15 only) with the same
//! `berth-bench-server` listening in every backend namespace (one process,
//! two threads, for all four: `direct` sending every connection to one
//! backend and a load balancer spreading them over four meet the same
//! server threads with the same batching), then programs N Services on the
//! node ([`Peer::install`], timed). All peers of one N stay installed
//! together and the runs are interleaved: repetition, then mode, then peer.
//! So slow drift on the machine (another build, thermal) hits every peer
//! alike, and each ratio compares runs minutes apart at most.
//!
//! A run is `wrk -t1 -c32 --latency` against the last-created Service (the
//! worst case for a rule chain), keep-alive and connection-per-request
//! (`-H "Connection: close"`), pinned to one CPU, the same for every peer.
//! A short warm-up run per peer first checks that the path works.
//! Reported per (mode, N, peer): median rps, p50 and p99 over the
//! repetitions, each as a ratio to `direct`; failed requests (socket errors
//! plus non-2xx); install time. A second table says where the CPU time goes
//! (user, system and softirq CPU-µs per request, from `/proc/stat` around
//! each run), which is what a missed goal is explained with.
//!
//! The harness is shared with the `apply` bench's churn-under-load part
//! ([`prepare`], [`run_wrk`]).
//!
//! # Limitations
//! Two cores: wrk, the kernel's forwarding, the proxy (HAProxy) and the
//! backends share them, so these are ratios on one busy machine, not
//! capacity figures. `/proc/stat` is machine-wide: other load during a run
//! shows up in every peer's CPU split alike, not in one.

pub mod peer;
pub mod peers;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use berth_tests::{ChildGuard, Netns, Stream, Topology};

use crate::{
    plot,
    report::{Outcome, Record, Sink, median},
};
use peer::{BACKEND_PORT, BACKENDS, Installed, Peer, Scene, TimedOut};

/// Parent of the bench's bpffs pin directories (one instance per data
/// plane it starts, removed when done).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/berth-bench";
/// wrk connections (one thread).
pub const CONNECTIONS: u32 = 32;
/// wrk's own per-request timeout.
const WRK_TIMEOUT: &str = "2s";
/// Time for wrk to start and report beyond its run time.
const WRK_SLACK: Duration = Duration::from_secs(30);
/// Bound on a backend server's start.
const SERVER_READY: Duration = Duration::from_secs(10);
/// Ephemeral ports for the client and the node (HAProxy's server side), so
/// connection-per-request reuses a 4-tuple less often. Same for every peer.
const PORT_RANGE: &str = "1024 65535";

/// How wrk uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Mode {
    /// Each of the 32 connections carries requests back to back.
    KeepAlive,
    /// `Connection: close`: every request is a new connection (a new flow
    /// for the load balancer).
    Close,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::KeepAlive, Mode::Close];

    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "connection-per-request",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// N = 1 and 1k, one repetition, 2 s runs: checks that every peer
    /// produced a figure, not a speed.
    #[arg(long)]
    pub quick: bool,
    /// Service counts N [default: 1,1000,10000; quick: 1,1000].
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<usize>,
    /// Repetitions per case; the median is reported [default: 3; quick: 1].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Seconds per wrk run [default: 10; quick: 2].
    #[arg(long)]
    pub duration: Option<u64>,
    /// Only these peers (`direct`, the reference, always runs).
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Only these modes [default: both].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Vec<Mode>,
    /// Bound on one peer's install, seconds [default: 600; quick: 120].
    #[arg(long)]
    pub install_timeout: Option<u64>,
    /// CPU wrk is pinned to, the same for every peer [default: 0].
    #[arg(long)]
    pub wrk_cpu: Option<usize>,
    /// Do not pin wrk.
    #[arg(long)]
    pub no_pin: bool,
}

impl Options {
    pub fn quick() -> Self {
        Self {
            quick: true,
            services: Vec::new(),
            reps: None,
            duration: None,
            peers: Vec::new(),
            modes: Vec::new(),
            install_timeout: None,
            wrk_cpu: None,
            no_pin: false,
        }
    }

    fn service_counts(&self) -> Vec<usize> {
        if !self.services.is_empty() {
            self.services.clone()
        } else if self.quick {
            vec![1, 1000]
        } else {
            vec![1, 1000, 10_000]
        }
    }

    fn reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 1 } else { 3 }).max(1)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.duration.unwrap_or(if self.quick { 2 } else { 10 }).max(1))
    }

    fn modes(&self) -> Vec<Mode> {
        if self.modes.is_empty() { Mode::ALL.to_vec() } else { self.modes.clone() }
    }

    fn install_timeout(&self) -> Duration {
        Duration::from_secs(self.install_timeout.unwrap_or(if self.quick { 120 } else { 600 }))
    }

    /// The CPU wrk runs on, `None` for unpinned.
    pub fn wrk_cpu(&self) -> Option<usize> {
        if self.no_pin { None } else { Some(self.wrk_cpu.unwrap_or(0)) }
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// Where wrk runs: the client namespace, inside a cgroup2 directory for
/// socket LB.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub netns: &'a Netns,
    pub cgroup: Option<&'a Path>,
}

/// One wrk run's load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub mode: Mode,
    pub duration: Duration,
    pub cpu: Option<usize>,
}

/// Machine-wide CPU time during a run (from `/proc/stat`), in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
    /// hardirq + softirq (packet processing, XDP, netfilter).
    pub softirq: f64,
    pub idle: f64,
}

impl CpuTime {
    /// Cumulative CPU time since boot.
    fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat has no cpu line")?;
        let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 7 {
            bail!("/proc/stat cpu line too short: {line}");
        }
        // USER_HZ is 100 on every Linux ABI.
        let s = |x: f64| x / 100.0;
        Ok(Self { user: s(v[0] + v[1]), system: s(v[2]), idle: s(v[3] + v[4]), softirq: s(v[5] + v[6]) })
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            softirq: self.softirq - earlier.softirq,
            idle: self.idle - earlier.idle,
        }
    }
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    /// Responses other than 2xx/3xx.
    pub non_2xx: u64,
    pub cpu: CpuTime,
}

impl WrkResult {
    /// Requests that did not get a good answer.
    pub fn failed(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }

    /// CPU-µs per request, (user, system, softirq).
    pub fn cpu_us_per_request(&self) -> (f64, f64, f64) {
        let per = |s: f64| if self.requests == 0 { 0.0 } else { s * 1e6 / self.requests as f64 };
        (per(self.cpu.user), per(self.cpu.system), per(self.cpu.softirq))
    }
}

/// Runs wrk from `client` against `target`; bounded by the run time plus
/// a margin.
///
/// # Errors
/// If wrk cannot start, fails, times out or prints no figures.
pub fn run_wrk(client: Client<'_>, target: SocketAddrV4, load: Load) -> anyhow::Result<WrkResult> {
    let secs = load.duration.as_secs().max(1);
    let mut argv: Vec<String> = Vec::new();
    if let Some(cgroup) = client.cgroup {
        // Join the cgroup (writing 0 moves the writer, the shell), then exec:
        // wrk's first connect() already runs under the socket-LB hooks.
        argv.extend(["sh".into(), "-c".into(), r#"echo 0 > "$0/cgroup.procs" && exec "$@""#.into()]);
        argv.push(cgroup.display().to_string());
    }
    if let Some(cpu) = load.cpu {
        argv.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
    }
    argv.extend(
        ["wrk", "-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s"), "--latency", "--timeout", WRK_TIMEOUT]
            .map(str::to_owned),
    );
    if load.mode == Mode::Close {
        argv.extend(["-H".into(), "Connection: close".into()]);
    }
    argv.push(format!("http://{target}/"));
    let (program, args) = argv.split_first().context("empty wrk command")?;
    let mut cmd = client.netns.nsenter_command(program);
    cmd.args(args);
    let label = format!("{}: {}", client.netns.name(), argv.join(" "));
    let before = CpuTime::now()?;
    let child = client.netns.spawn_command(cmd, &label)?;
    let finished = child.finish(load.duration + WRK_SLACK)?;
    let cpu = CpuTime::now()?.since(before);
    if !finished.status.success() {
        bail!("`{label}` failed ({}): {}{}", finished.status, finished.stderr.trim(), finished.stdout.trim());
    }
    let mut result = parse_wrk(&finished.stdout).with_context(|| format!("parsing the output of `{label}`"))?;
    result.cpu = cpu;
    Ok(result)
}

/// Parses wrk's `--latency` report.
///
/// # Errors
/// If a figure is missing or malformed.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut rps, mut p50, mut p99, mut requests) = (None, None, None, None);
    let mut in_distribution = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution && let Some((pct, value)) = line.split_once(char::is_whitespace) {
            match pct {
                "50%" => p50 = Some(duration_ms(value.trim())?),
                "99%" => {
                    p99 = Some(duration_ms(value.trim())?);
                    in_distribution = false;
                }
                _ => {}
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().with_context(|| format!("Requests/sec {v:?}"))?);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                let n = part.split_whitespace().nth(1).context("socket error count")?;
                r.socket_errors += n.parse::<u64>().with_context(|| format!("socket errors {part:?}"))?;
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().with_context(|| format!("non-2xx {v:?}"))?;
        } else if line.contains(" requests in ") {
            let n = line.split_whitespace().next().context("request count")?;
            requests = Some(n.parse::<u64>().with_context(|| format!("request count {n:?}"))?);
        }
    }
    r.rps = rps.context("no Requests/sec line")?;
    r.p50_ms = p50.context("no 50% latency line (--latency)")?;
    r.p99_ms = p99.context("no 99% latency line (--latency)")?;
    r.requests = requests.context("no `N requests in` line")?;
    Ok(r)
}

/// `1.23ms`, `456.00us`, `1.50s`, `2.00m` → milliseconds.
fn duration_ms(s: &str) -> anyhow::Result<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("latency {s:?}"))?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        other => bail!("unknown latency unit {other:?} in {s:?}"),
    };
    Ok(v * scale)
}

/// A topology with the backend servers running; the servers stop before
/// the namespaces go (field order).
pub struct Testbed {
    pub servers: Vec<ChildGuard>,
    pub topo: Topology,
}

impl Testbed {
    /// The backend servers, in order.
    pub fn backends(&self) -> Vec<SocketAddrV4> {
        self.topo.backends.iter().map(|b| SocketAddrV4::new(b.addr, BACKEND_PORT)).collect()
    }
}

/// Builds client → node → [`BACKENDS`] backends with namespaces named
/// `PREFIX-…`, starts `server` listening in every backend namespace (one
/// process, see `berth-bench-server`) and checks the client reaches
/// backend 0 directly.
///
/// # Errors
/// If a step fails; what was made is removed.
pub fn prepare(prefix: &str, server: &Path) -> anyhow::Result<Testbed> {
    let topo = Topology::build(prefix, BACKENDS).context("building the topology")?;
    for ns in [&topo.client, &topo.node] {
        ns.sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)?;
    }
    // One server process for every backend namespace (see
    // berth-bench-server's docs): the LB's spreading does not change how
    // the server side batches. It binds nothing outside those namespaces;
    // the node's registry kills it if the topology goes first.
    let mut cmd = std::process::Command::new(server);
    cmd.args(["--listen", &format!("0.0.0.0:{BACKEND_PORT}"), "--name", "backends"]);
    for b in &topo.backends {
        cmd.arg("--netns").arg(b.ns.path());
    }
    let child = topo.node.spawn_command(cmd, &format!("{}: berth-bench-server", topo.node.name()))?;
    child.wait_for_line(Stream::Stdout, "ready", SERVER_READY)?;
    let servers = vec![child];
    let bed = Testbed { servers, topo };
    let first = bed.backends()[0];
    bed.topo.client.wait_for_tcp(SocketAddr::V4(first), SERVER_READY).context("client → backend 0")?;
    Ok(bed)
}

/// One peer installed at one N, on its own testbed. Field order is drop
/// order: the peer's state goes first, then servers and namespaces.
struct Setup<'p> {
    peer: &'p dyn Peer,
    installed: Installed,
    bed: Testbed,
    _work: tempfile::TempDir,
}

impl<'p> Setup<'p> {
    fn new(peer: &'p dyn Peer, services: usize, server: &Path, opts: &Options) -> Result<Self, Outcome> {
        let work = tempfile::Builder::new()
            .prefix(&format!("be2e-{}-", peer.name()))
            .tempdir()
            .map_err(|e| failed(format!("scratch dir: {e}")))?;
        let bed = prepare("be2e", server).map_err(|e| failed(format!("{e:#}")))?;
        let scene = Scene { topo: &bed.topo, services, backends: bed.backends(), work_dir: work.path() };
        let installed =
            peer.install(&scene, opts.install_timeout()).map_err(|e| match e.downcast_ref::<TimedOut>() {
                Some(t) => Outcome::TimedOut(t.to_string()),
                None => failed(format!("install: {e:#}")),
            })?;
        let setup = Self { peer, installed, bed, _work: work };
        // Warm-up: ARP, caches, conntrack; also the check that the path works.
        let warm = setup
            .run(Load { mode: Mode::Close, duration: opts.warmup(), cpu: opts.wrk_cpu() })
            .map_err(|e| failed(format!("warm-up: {e:#}")))?;
        if warm.requests == 0 {
            return Err(failed(format!("warm-up: no request answered through {}", setup.installed.target)));
        }
        Ok(setup)
    }

    fn run(&self, load: Load) -> anyhow::Result<WrkResult> {
        let client = Client { netns: &self.bed.topo.client, cgroup: self.installed.client_cgroup.as_deref() };
        let r = run_wrk(client, self.installed.target, load)?;
        if r.requests == 0 {
            bail!("no request answered through {}", self.installed.target);
        }
        Ok(r)
    }
}

/// A `Failed` outcome on one line (it becomes a markdown table cell), cut
/// to a readable length; stderr tails arrive with newlines.
fn failed(why: String) -> Outcome {
    const MAX: usize = 600;
    let mut line = why.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX {
        let cut = (0..=MAX).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    Outcome::Failed(line.replace('|', "/"))
}

/// `1`, `1k`, `10k`, `65534`.
pub fn n_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

/// The peers to run: `direct` first, always, then those selected.
fn selected_peers(opts: &Options) -> anyhow::Result<Vec<Box<dyn Peer>>> {
    let all = peers::all();
    for name in &opts.peers {
        if !all.iter().any(|p| p.name() == name) {
            let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
            bail!("unknown peer {name:?} (known: {})", known.join(", "));
        }
    }
    Ok(all
        .into_iter()
        .filter(|p| p.name() == "direct" || opts.peers.is_empty() || opts.peers.iter().any(|n| n == p.name()))
        .collect())
}

/// A peer's runs in one mode at one N, or why there are none.
#[derive(Debug, Default)]
struct Cell {
    runs: Vec<WrkResult>,
    broken: Option<Outcome>,
    install: Option<Duration>,
}

impl Cell {
    fn med(&self, f: impl Fn(&WrkResult) -> f64) -> Option<f64> {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
}

/// Goals (issue 4): berth's rps and p99 against the direct connection.
fn goal_rps(peer: &str) -> Option<f64> {
    match peer {
        "berth-xdp" => Some(0.95),
        "berth-socket" => Some(0.98),
        _ => None,
    }
}
const GOAL_P99: f64 = 1.15;

/// Runs the benchmark; see the module docs.
///
/// # Errors
/// If the harness itself cannot run (no wrk, no server binary, results not
/// writable). A peer that cannot be measured is a `Failed` row, not an error.
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    let server = crate::sibling_bin("berth-bench-server", "BERTH_BENCH_SERVER_BIN")?;
    which("wrk")?;
    let peers = selected_peers(opts)?;
    let counts = opts.service_counts();
    let modes = opts.modes();
    let (reps, duration) = (opts.reps(), opts.duration());
    let mut cells: BTreeMap<(Mode, usize, &'static str), Cell> = BTreeMap::new();

    for &n in &counts {
        let mut setups: Vec<Setup<'_>> = Vec::new();
        for peer in &peers {
            let started = Instant::now();
            eprintln!("[e2e] N={}: installing {}", n_label(n), peer.name());
            match Setup::new(peer.as_ref(), n, &server, opts) {
                Ok(s) => {
                    eprintln!(
                        "[e2e] N={}: {} installed in {:?} (ready after {:.1?})",
                        n_label(n),
                        peer.name(),
                        s.installed.install_time,
                        started.elapsed()
                    );
                    for &mode in &modes {
                        cells.entry((mode, n, peer.name())).or_default().install = Some(s.installed.install_time);
                    }
                    setups.push(s);
                }
                Err(outcome) => {
                    eprintln!("[e2e] N={}: {}: {outcome:?}", n_label(n), peer.name());
                    for &mode in &modes {
                        cells.entry((mode, n, peer.name())).or_default().broken = Some(outcome.clone());
                    }
                }
            }
        }
        for rep in 0..reps {
            for &mode in &modes {
                for s in &setups {
                    let cell = cells.entry((mode, n, s.peer.name())).or_default();
                    if cell.broken.is_some() {
                        continue;
                    }
                    match s.run(Load { mode, duration, cpu: opts.wrk_cpu() }) {
                        Ok(r) => {
                            eprintln!(
                                "[e2e] N={} {} rep {}/{reps} {}: {:.0} rps p50 {:.3} ms p99 {:.3} ms, {} failed",
                                n_label(n),
                                mode.as_str(),
                                rep + 1,
                                s.peer.name(),
                                r.rps,
                                r.p50_ms,
                                r.p99_ms,
                                r.failed()
                            );
                            cell.runs.push(r);
                        }
                        Err(e) => cell.broken = Some(failed(format!("wrk: {e:#}"))),
                    }
                }
            }
        }
        for &mode in &modes {
            record_rows(sink, opts, &peers, &cells, mode, n)?;
        }
        // Tear down this N's peers (in reverse) before building the next.
        while let Some(s) = setups.pop() {
            drop(s);
        }
    }
    for &mode in &modes {
        for &n in &counts {
            record_cpu_rows(sink, &peers, &cells, mode, n)?;
        }
    }
    let charts: Vec<plot::LineChart> = modes
        .iter()
        .map(|&mode| plot::LineChart {
            title: format!("wrk rps, {}", mode.as_str()),
            x_label: "Services (N)".into(),
            y_label: "requests/s (median)".into(),
            categories: counts.iter().map(|&n| n_label(n)).collect(),
            series: peers
                .iter()
                .map(|p| plot::Series {
                    name: p.name().into(),
                    points: counts
                        .iter()
                        .map(|&n| cells.get(&(mode, n, p.name())).and_then(|c| c.med(|r| r.rps)))
                        .collect(),
                })
                .collect(),
        })
        .collect();
    sink.artifact("e2e-rps.svg", plot::render(&charts).as_bytes())?;
    Ok(())
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found in PATH (apt-get install {program}, or `cargo xtask setup`)"))
}

fn record_rows(
    sink: &mut Sink,
    opts: &Options,
    peers: &[Box<dyn Peer>],
    cells: &BTreeMap<(Mode, usize, &'static str), Cell>,
    mode: Mode,
    n: usize,
) -> anyhow::Result<()> {
    let empty = Cell::default();
    let reference = cells.get(&(mode, n, "direct")).unwrap_or(&empty);
    let (d_rps, d_p50, d_p99) = (reference.med(|r| r.rps), reference.med(|r| r.p50_ms), reference.med(|r| r.p99_ms));
    let d_cpu = cpu_per_request(reference);
    for peer in peers {
        let name = peer.name();
        let cell = cells.get(&(mode, n, name)).unwrap_or(&empty);
        let mut rec = Record::new(format!("e2e {}", mode.as_str()), format!("N={}", n_label(n)), name)
            .param("services", n)
            .param("reps", cell.runs.len());
        if let Some(outcome) = &cell.broken {
            let mut rec = rec.outcome(outcome.clone());
            if let Some(t) = cell.install {
                rec = rec.figure("install", ms(t), "ms");
            }
            sink.record(rec)?;
            continue;
        }
        let (Some(rps), Some(p50), Some(p99)) = (cell.med(|r| r.rps), cell.med(|r| r.p50_ms), cell.med(|r| r.p99_ms))
        else {
            sink.record(rec.outcome(Outcome::Failed("no run".into())))?;
            continue;
        };
        rec = rec.figure("rps", rps, "rps").figure("p50", p50, "ms").figure("p99", p99, "ms");
        let ratio = |v: f64, d: Option<f64>| d.filter(|d| *d > 0.0).map(|d| v / d);
        let (r_rps, r_p50, r_p99) = (ratio(rps, d_rps), ratio(p50, d_p50), ratio(p99, d_p99));
        for (label, r) in [("rps/direct", r_rps), ("p50/direct", r_p50), ("p99/direct", r_p99)] {
            if let Some(r) = r {
                rec = rec.figure(label, r, "x");
            }
        }
        let failed: u64 = cell.runs.iter().map(WrkResult::failed).sum();
        rec = rec.figure("failed", failed as f64, "");
        if let Some(t) = cell.install {
            rec = rec.figure("install", ms(t), "ms");
        }
        if let (false, Some(min_rps), Some(r_rps), Some(r_p99)) = (opts.quick, goal_rps(name), r_rps, r_p99) {
            let met = r_rps >= min_rps && r_p99 <= GOAL_P99;
            let mut text = format!("rps ≥ {min_rps}×, p99 ≤ {GOAL_P99}× direct");
            if !met {
                text.push_str(&format!(" (got {r_rps:.3}×, {r_p99:.2}×; {})", where_time_goes(cell, d_cpu)));
            }
            rec = rec.goal(text, met);
        }
        sink.record(rec)?;
    }
    Ok(())
}

/// Median CPU-µs per request (user, system, softirq) over a cell's runs.
fn cpu_per_request(cell: &Cell) -> Option<(f64, f64, f64)> {
    Some((
        cell.med(|r| r.cpu_us_per_request().0)?,
        cell.med(|r| r.cpu_us_per_request().1)?,
        cell.med(|r| r.cpu_us_per_request().2)?,
    ))
}

/// "CPU per request vs direct: +3.1 µs softirq, …" for a missed goal.
fn where_time_goes(cell: &Cell, direct: Option<(f64, f64, f64)>) -> String {
    let (Some((u, s, q)), Some((du, ds, dq))) = (cpu_per_request(cell), direct) else {
        return "no CPU figures".into();
    };
    let idle = cell.med(|r| r.cpu.idle / (r.cpu.user + r.cpu.system + r.cpu.softirq + r.cpu.idle)).unwrap_or(0.0);
    format!(
        "CPU-µs/request vs direct: user {:+.1}, system {:+.1}, softirq {:+.1}; idle {:.0}%",
        u - du,
        s - ds,
        q - dq,
        idle * 100.0
    )
}

fn record_cpu_rows(
    sink: &mut Sink,
    peers: &[Box<dyn Peer>],
    cells: &BTreeMap<(Mode, usize, &'static str), Cell>,
    mode: Mode,
    n: usize,
) -> anyhow::Result<()> {
    for peer in peers {
        let Some(cell) = cells.get(&(mode, n, peer.name())) else { continue };
        let Some((u, s, q)) = cpu_per_request(cell) else { continue };
        let idle = cell.med(|r| r.cpu.idle / (r.cpu.user + r.cpu.system + r.cpu.softirq + r.cpu.idle)).unwrap_or(0.0);
        sink.record(
            Record::new("e2e CPU per request (machine-wide, median run)", format!("N={}", n_label(n)), peer.name())
                .param("mode", mode.as_str())
                .figure("user", u, "µs")
                .figure("system", s, "µs")
                .figure("softirq", q, "µs")
                .figure("total", u + s + q, "µs")
                .figure("idle", idle * 100.0, "%"),
        )?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    const WRK_OUT: &str = "Running 2s test @ http://198.19.0.1:80/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.06ms  312.45us   9.81ms   84.00%
    Req/Sec    30.41k     1.20k   32.00k    71.00%
  Latency Distribution
     50%  998.00us
     75%    1.20ms
     90%    1.40ms
     99%    2.01ms
  60520 requests in 2.00s, 6.12MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  30260.12
Transfer/sec:      3.06MB
";

    #[test]
    fn parses_wrk_latency_report() {
        let r = parse_wrk(WRK_OUT).unwrap();
        assert_eq!(r.rps, 30260.12);
        assert!((r.p50_ms - 0.998).abs() < 1e-9, "{}", r.p50_ms);
        assert_eq!(r.p99_ms, 2.01);
        assert_eq!(r.requests, 60520);
        assert_eq!((r.socket_errors, r.non_2xx, r.failed()), (4, 2, 6));
    }

    #[test]
    fn wrk_without_errors_and_units() {
        let out = WRK_OUT
            .replace("  Socket errors: connect 0, read 3, write 0, timeout 1\n", "")
            .replace("  Non-2xx or 3xx responses: 2\n", "");
        let r = parse_wrk(&out).unwrap();
        assert_eq!(r.failed(), 0);
        assert_eq!(duration_ms("1.50s").unwrap(), 1500.0);
        assert!(duration_ms("12").is_err());
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(
            (n_label(1), n_label(1000), n_label(10_000), n_label(1500)),
            ("1".into(), "1k".into(), "10k".into(), "1500".into())
        );
    }
}
