//! Pod start latency and agent memory: `berth-agent node` side by side with
//! runc on the same unpacked bundle, in one run, interleaved.
//!
//! # Design
//! Two sides, each in a node network namespace of its own (`bE-pods-*`,
//! pod CIDRs 198.18.240.0/24 and 198.18.241.0/24), with its own cgroup
//! root (`berth-bench-pods-PID-*`) and temp directories, sharing one image
//! cache (the test image, `cargo xtask test-image`, unpacked once: both
//! sides run the very same rootfs directory as the overlay lower dir):
//!
//! - [`berth`]: a `berth-agent node` (the flags of `tests/tests/node.rs`);
//!   pods go in through the admin socket (`Client::run_pod`). Start
//!   latency runs from just before `run_pod` (so the API round trip is
//!   berth's) to the container's server accepting TCP on `podIP:8080` from
//!   the node namespace, polled every [`POLL`]; the pod IP is read from
//!   the agent's `ipam.json` (a file read, so that finding it costs the
//!   agent nothing). Also to Ready as the agent reports it (a `tcpSocket`
//!   readiness probe with `periodSeconds: 1`, the list polled every 10 ms).
//! - [`runc`]: per container, the work a CRI runtime does for a pod: a pod
//!   network from berth's own `PodNetwork::setup` (the same netns, veth
//!   and IPAM work, so both sides include the sandbox), the overlay mount a
//!   snapshotter would make, `config.json` with the same resources as
//!   kubelet would send them, `runc run -d`; latency from the start of that
//!   work to TCP accept, polled the same way. `runc run -d` → accept alone
//!   is reported as a floor.
//!
//! Every container gets the same Kubernetes resources: cpu request 250m,
//! limit 500m, memory limit 64Mi, pids 64.
//!
//! Cases: one pod at a time (repeated, the sides alternating which goes
//! first), then a batch of [`Options::batch`] pods submitted back to back
//! (berth: `run_pod` calls in a row; runc: all queued at once and started
//! by as many workers as the machine has CPUs, as a CRI runtime starts
//! pods concurrently), each pod's latency from its own submission (berth)
//! or the batch start (runc, so queueing counts on both sides), plus the
//! time until all accept (and, for berth, all are Ready).
//!
//! Memory: VmRSS and VmHWM of the `berth-agent node` process with 0 pods
//! (idle after start-up), 1 pod and the batch running, and the memory of
//! each shim (berth's per-container supervisor, the conmon equivalent):
//! RSS, and from `smaps_rollup` its PSS (shared pages split among the
//! processes mapping them; the sum over shims is their real joint cost) and
//! its private pages (what one more shim costs). runc
//! leaves no process but the container after `runc run -d`; containerd runs
//! one `containerd-shim-runc-v2` per pod, which this bench does not start.
//!
//! Goals (issue 5): berth's p50 start latency no worse than runc's (ratio
//! ≤ 1.0, one pod, and all of the batch accepting), agent RSS under 30 MiB
//! with 50 pods.
//!
//! # Limitations
//! Two cores: the pollers, both sides and the containers share them, so
//! the batch figures are contention figures. The runc side has no
//! supervisor, probes or state files: it is the floor of what starting a
//! pod costs, not a CRI runtime. Quick mode (1 and 5 pods, few
//! repetitions) checks that every side produces a figure, not the speed.

pub mod berth;
pub mod runc;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use berth_agent::image::{Image, ImageStore};

use crate::report::{Outcome, Record, Sink, Stats, median};

/// How often a side's poller tries to connect.
pub const POLL: Duration = Duration::from_millis(2);
/// The port the test server listens on.
pub const SERVER_PORT: u16 = 8080;
/// The Kubernetes resources of every container.
pub const CPU_REQUEST_M: u64 = 250;
pub const CPU_LIMIT_M: u64 = 500;
pub const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
pub const PIDS_LIMIT: u64 = 64;
/// Bound on one batch, start to all accepting (and Ready).
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// The batch size the memory goal is about.
const GOAL_PODS: usize = 50;
const GOAL_RSS_MIB: f64 = 30.0;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// 1 and 5 pods, two repetitions of one pod, one batch: checks that
    /// both sides produce figures, not the speed.
    #[arg(long)]
    pub quick: bool,
    /// Pods in the batch case [default: 50; quick: 5].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Repetitions of the one-pod case [default: 10; quick: 2].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Repetitions of the batch case [default: 3; quick: 1].
    #[arg(long)]
    pub batch_reps: Option<usize>,
}

impl Options {
    pub fn quick() -> Self {
        Self { quick: true, batch: None, reps: None, batch_reps: None }
    }

    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(if self.quick { 5 } else { GOAL_PODS }).max(1)
    }

    fn reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 2 } else { 10 }).max(1)
    }

    fn batch_reps(&self) -> usize {
        self.batch_reps.unwrap_or(if self.quick { 1 } else { 3 }).max(1)
    }
}

/// What both sides share: the image and a temp dir.
pub struct Env {
    /// Holds `berth-test/` (the OCI layout), for the agent's `--image-dir`.
    pub image_dir: PathBuf,
    /// The image cache both sides use (the agent's `--image-cache`).
    pub image_cache: PathBuf,
    pub image: Image,
    /// Parent of both sides' directories; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Finds the test image and unpacks it into a fresh cache.
    ///
    /// # Errors
    /// A missing test image, or an import failure.
    pub fn discover() -> anyhow::Result<Self> {
        let image_dir = image_dir()?;
        let dir = tempfile::Builder::new().prefix("berth-bench-pods-").tempdir().context("creating a temp dir")?;
        let image_cache = dir.path().join("images");
        let store = ImageStore::open(&image_cache).context("opening the image cache")?;
        let image = store
            .import(&image_dir.join("berth-test"), Some("latest"))
            .with_context(|| format!("importing the test image from {}", image_dir.display()))?;
        Ok(Self { image_dir, image_cache, image, dir })
    }

    /// The test image's argv (entrypoint + cmd).
    pub fn args(&self) -> Vec<String> {
        let mut args = self.image.config.entrypoint.clone();
        args.extend(self.image.config.cmd.iter().cloned());
        args
    }
}

/// The test image directory: `BERTH_TEST_IMAGE_DIR`, else
/// `target/berth-test-image` next to this binary's profile directory.
fn image_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("BERTH_TEST_IMAGE_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("locating berth-bench")?;
            exe.ancestors().nth(2).context("berth-bench is not in target/<profile>/")?.join("berth-test-image")
        }
    };
    if !dir.join("berth-test").join("index.json").exists() {
        bail!("test image missing in {}: run `cargo xtask test-image` (or set BERTH_TEST_IMAGE_DIR)", dir.display());
    }
    Ok(dir)
}

/// One pod's timings, relative to its `t0` (its submission, or the batch
/// start for queued runc pods).
#[derive(Debug, Clone, Copy)]
pub struct PodTiming {
    pub t0: Instant,
    /// The server accepted a TCP connection from the node namespace.
    pub accept: Instant,
    /// runc only: `runc run -d` began.
    pub run: Option<Instant>,
    /// berth only: the agent reported the pod Ready.
    pub ready: Option<Instant>,
}

/// One batch on one side.
#[derive(Debug, Clone)]
pub struct BatchResult {
    pub start: Instant,
    pub pods: Vec<PodTiming>,
}

impl BatchResult {
    fn per_pod_ms(&self, f: impl Fn(&PodTiming) -> Option<f64>) -> Vec<f64> {
        self.pods.iter().filter_map(f).collect()
    }

    pub fn accept_ms(&self) -> Vec<f64> {
        self.per_pod_ms(|p| Some(ms(p.accept - p.t0)))
    }

    pub fn ready_ms(&self) -> Vec<f64> {
        self.per_pod_ms(|p| Some(ms(p.ready? - p.t0)))
    }

    pub fn run_to_accept_ms(&self) -> Vec<f64> {
        self.per_pod_ms(|p| Some(ms(p.accept.checked_duration_since(p.run?)?)))
    }

    pub fn all_accepting_ms(&self) -> f64 {
        self.pods.iter().map(|p| ms(p.accept - self.start)).fold(0.0, f64::max)
    }

    pub fn all_ready_ms(&self) -> Option<f64> {
        self.pods.iter().map(|p| p.ready.map(|r| ms(r - self.start))).try_fold(0.0, |a, r| r.map(|r| f64::max(a, r)))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Where a pod answers, and how to tell that its network passes traffic.
#[derive(Debug, Clone)]
pub struct PodAddr {
    pub ip: Ipv4Addr,
    /// The pod's network namespace file.
    pub netns: PathBuf,
    /// The pod's veth end in the node namespace.
    pub host_veth: String,
}

/// Polls the pod at `addr()` (once known) from inside the node network
/// namespace `ns` every [`POLL`] until a TCP connection is accepted;
/// returns when. Runs on a thread of its own (it enters namespaces).
///
/// The first connect waits until the pod's network is up
/// ([`pod_network_up`]): a SYN sent earlier leaves the node's neighbour
/// entry for the pod unresolved, and the kernel solicits again only after
/// `retrans_time` (1 s). That second would be the poller's doing, on
/// whichever side polls earliest (berth's poller learns the address when it
/// is allocated, runc's only after `runc run -d`), and it also delays
/// berth's own readiness probe, which shares the neighbour entry. Both
/// sides use this same gate.
///
/// # Errors
/// The namespace cannot be entered, or `deadline` passes.
pub fn spawn_accept_poller(
    ns: &Path,
    mut addr: impl FnMut() -> Option<PodAddr> + Send + 'static,
    deadline: Instant,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<Instant>>> {
    let ns_file = fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
    let label = ns.display().to_string();
    std::thread::Builder::new()
        .name("pods-accept".into())
        .spawn(move || {
            nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {label}"))?;
            let mut ip = None;
            let mut last_err = None;
            while Instant::now() < deadline {
                if ip.is_none() {
                    ip = addr().filter(|a| pod_network_up(&ns_file, a)).map(|a| a.ip);
                }
                if let Some(ip) = ip {
                    let target = SocketAddr::V4(SocketAddrV4::new(ip, SERVER_PORT));
                    match TcpStream::connect_timeout(&target, Duration::from_millis(20)) {
                        Ok(_) => return Ok(Instant::now()),
                        Err(e) => last_err = Some(e),
                    }
                }
                std::thread::sleep(POLL);
            }
            bail!("no TCP accept on {ip:?}:{SERVER_PORT} in {label} before the deadline (last error: {last_err:?})")
        })
        .context("spawning a poller thread")
}

/// Whether the pod's network passes traffic: its namespace has a default
/// route (pod network setup adds it last) and both veth ends are
/// operationally up (`IFF_RUNNING`: the kernel's link watcher has seen the
/// carrier and activated the queues; packets sent before are dropped).
/// Called on a thread in the node namespace `node_ns`; it enters the pod's
/// namespace and comes back. Reads files and interface flags only: no
/// packet, no request to the agent.
pub fn pod_network_up(node_ns: &fs::File, pod: &PodAddr) -> bool {
    let Ok(pod_ns) = fs::File::open(&pod.netns) else { return false };
    if nix::sched::setns(&pod_ns, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
        return false;
    }
    let routes = fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
    let eth0 = iff_running(berth_agent::network::POD_IF);
    let back = nix::sched::setns(node_ns, nix::sched::CloneFlags::CLONE_NEWNET);
    // Without a way back the poller would connect from the wrong
    // namespace: it cannot go on.
    assert!(back.is_ok(), "returning to the node netns: {back:?}");
    let default_route = routes.lines().skip(1).any(|l| l.split('\t').nth(1) == Some("00000000"));
    default_route && eth0 && iff_running(&pod.host_veth)
}

/// `IFF_RUNNING` of `ifname` in the calling thread's network namespace.
fn iff_running(ifname: &str) -> bool {
    use std::os::fd::AsRawFd as _;
    if ifname.len() >= libc::IFNAMSIZ {
        return false;
    }
    let Ok(sock) = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    // SAFETY: `ifreq` is plain data (a name and a union of integers and a
    // pointer); all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads `ifr_name` (NUL-terminated: the name is
    // shorter than IFNAMSIZ and the rest is zero) and writes `ifru_flags`
    // of the `ifreq` this function owns.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    // SAFETY: on success the kernel has written `ifru_flags`.
    rc == 0 && i32::from(unsafe { req.ifr_ifru.ifru_flags }) & libc::IFF_RUNNING != 0
}

/// Removes the bench's cgroup root `name` (see
/// [`berth_tests::runc::remove_cgroup_root`]).
pub fn remove_cgroup_root(name: &str) {
    berth_tests::runc::remove_cgroup_root(name, Duration::from_secs(5));
}

/// One shim's memory, in MiB: resident, proportional (shared pages divided
/// among the processes that map them, so the sum over shims is what they
/// cost together) and private (what this one shim alone costs).
#[derive(Debug, Clone, Copy)]
pub struct ShimMemory {
    pub rss: f64,
    pub pss: f64,
    pub private: f64,
}

impl ShimMemory {
    /// From `/proc/<pid>/smaps_rollup`.
    ///
    /// # Errors
    /// The process is gone or its rollup is unreadable.
    pub fn of(pid: u32) -> anyhow::Result<ShimMemory> {
        let path = format!("/proc/{pid}/smaps_rollup");
        let rollup = fs::read_to_string(&path).with_context(|| path.clone())?;
        let kib = |key: &str| -> anyhow::Result<f64> {
            let line = rollup.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} in {path}"))?;
            let n: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).context("malformed rollup")?;
            Ok(n / 1024.0)
        };
        Ok(ShimMemory {
            rss: kib("Rss:")?,
            pss: kib("Pss:")?,
            private: kib("Private_Clean:")? + kib("Private_Dirty:")?,
        })
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
///
/// # Errors
/// The process is gone or its status is unreadable.
pub fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} for pid {pid}"))?;
        let n: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).context("malformed status")?;
        Ok(n / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// The number of CPUs (the runc side's worker count).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Latency samples of one (case, side) over every repetition.
#[derive(Debug, Default)]
struct Samples {
    accept: Vec<f64>,
    ready: Vec<f64>,
    run_to_accept: Vec<f64>,
    all_accepting: Vec<f64>,
    all_ready: Vec<f64>,
}

impl Samples {
    fn add(&mut self, r: &BatchResult) {
        self.accept.extend(r.accept_ms());
        self.ready.extend(r.ready_ms());
        self.run_to_accept.extend(r.run_to_accept_ms());
        self.all_accepting.push(r.all_accepting_ms());
        if let Some(t) = r.all_ready_ms() {
            self.all_ready.push(t);
        }
    }
}

/// A latency row: p50, p99, mean, n.
fn latency_row(table: &str, case: &str, peer: &str, pods: usize, sample: &[f64]) -> Option<(Record, Stats)> {
    let mut v = sample.to_vec();
    let s = Stats::of(&mut v)?;
    let row = Record::new(table, case, peer)
        .param("pods", pods)
        .figure("p50", s.median, "ms")
        .figure("p99", s.p99, "ms")
        .figure("mean", s.mean, "ms")
        .figure("n", s.n as f64, "");
    Some((row, s))
}

const BERTH: &str = "berth (run_pod → accept)";
const RUNC: &str = "runc (sandbox + run -d → accept)";
const RUNC_FLOOR: &str = "runc run -d → accept (floor)";

/// Records one case's rows (both sides, the floor, ratios and goals), or a
/// failed row for a side that produced nothing.
fn record_case(
    sink: &mut Sink,
    pods: usize,
    berth: &Samples,
    runc: &Samples,
    failures: &Failures,
) -> anyhow::Result<()> {
    let table =
        if pods == 1 { "start latency, 1 pod".to_owned() } else { format!("start latency, {pods} pods back to back") };
    let per_pod = if pods == 1 { "to TCP accept" } else { "per pod, to TCP accept" };
    // A side that failed during this case keeps the figures it has, marked
    // failed: a partial sample is not a result.
    let mark = |row: Record, why: Option<&String>| match why {
        Some(why) => row.outcome(Outcome::Failed(why.clone())),
        None => row,
    };
    let runc_row = latency_row(&table, per_pod, RUNC, pods, &runc.accept);
    match latency_row(&table, per_pod, BERTH, pods, &berth.accept) {
        Some((mut row, s)) => {
            if let Some((_, r)) = &runc_row {
                let ratio = s.median / r.median;
                row = row.figure("ratio", ratio, "x").goal("≤ 1.0× runc p50", ratio <= 1.0);
            }
            sink.record(mark(row, failures.berth.as_ref()))?;
        }
        None => sink.record(failed(&table, per_pod, BERTH, pods, failures.berth.as_deref()))?,
    }
    match runc_row {
        Some((row, _)) => sink.record(mark(row, failures.runc.as_ref()))?,
        None => sink.record(failed(&table, per_pod, RUNC, pods, failures.runc.as_deref()))?,
    }
    if let Some((row, _)) = latency_row(&table, per_pod, RUNC_FLOOR, pods, &runc.run_to_accept) {
        sink.record(row)?;
    }
    let ready_case = if pods == 1 { "to Ready (agent's status)" } else { "per pod, to Ready (agent's status)" };
    if let Some((row, _)) = latency_row(&table, ready_case, "berth (tcpSocket probe, period 1 s)", pods, &berth.ready) {
        sink.record(row)?;
    }
    if pods > 1 {
        let all = format!("all {pods} accepting");
        let (b, r) = (median(&berth.all_accepting), median(&runc.all_accepting));
        if let Some(b) = b {
            let mut row = Record::new(&table, &all, BERTH).param("pods", pods).figure("median", b, "ms");
            if let Some(r) = r {
                row = row.figure("ratio", b / r, "x").goal("≤ 1.0× runc", b / r <= 1.0);
            }
            row = row.figure("n", berth.all_accepting.len() as f64, "");
            sink.record(row)?;
        }
        if let Some(r) = r {
            let row = Record::new(&table, &all, RUNC)
                .param("pods", pods)
                .param("runc_workers", cpus())
                .figure("median", r, "ms")
                .figure("n", runc.all_accepting.len() as f64, "");
            sink.record(row)?;
        }
        if let Some(b) = median(&berth.all_ready) {
            let row = Record::new(&table, format!("all {pods} Ready"), "berth (tcpSocket probe, period 1 s)")
                .param("pods", pods)
                .figure("median", b, "ms")
                .figure("n", berth.all_ready.len() as f64, "");
            sink.record(row)?;
        }
    }
    Ok(())
}

fn failed(table: &str, case: &str, peer: &str, pods: usize, why: Option<&str>) -> Record {
    Record::new(table, case, peer)
        .param("pods", pods)
        .outcome(Outcome::Failed(why.unwrap_or("no sample was taken").to_owned()))
}

/// The first failure of each side; a side that failed is not used again.
#[derive(Debug, Default)]
struct Failures {
    berth: Option<String>,
    runc: Option<String>,
}

/// Agent memory at one point.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: f64,
    hwm: f64,
}

/// Runs the benchmark; see the module docs. A side that fails is recorded
/// as failed rows and the other side goes on.
///
/// # Errors
/// The shared set-up (binaries, image) fails, or a row cannot be recorded.
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    let env = Env::discover()?;
    let mut failures = Failures::default();
    let mut berth = match berth::Node::start(&env) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("[bench] pods/berth: {e:#}");
            failures.berth = Some(format!("{e:#}"));
            None
        }
    };
    let mut runc = match runc::Side::start(&env) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("[bench] pods/runc: {e:#}");
            failures.runc = Some(format!("{e:#}"));
            None
        }
    };
    let mut memory: Vec<(String, Memory)> = Vec::new();
    let mut shims: Option<(usize, Vec<ShimMemory>)> = None;
    if let Some(node) = &berth {
        // Idle after start-up, before any pod.
        std::thread::sleep(Duration::from_millis(500));
        match node.agent_memory() {
            Ok((rss, hwm)) => memory.push(("0 pods".to_owned(), Memory { rss, hwm })),
            Err(e) => eprintln!("[bench] pods/berth: agent memory: {e:#}"),
        }
    }

    // Warm-up, not recorded: the first start pays for page cache and lazy
    // initialisation on either side.
    warm_up(&mut berth, &mut runc, &mut failures);

    let cases = [(1, opts.reps()), (opts.batch(), opts.batch_reps())];
    let mut seq = 0;
    for (i, (pods, reps)) in cases.into_iter().enumerate() {
        if i > 0 && pods == 1 {
            continue;
        }
        let (mut b_samples, mut r_samples) = (Samples::default(), Samples::default());
        for rep in 0..reps {
            // Alternate which side goes first.
            let berth_first = rep % 2 == 0;
            for side in if berth_first { [0, 1] } else { [1, 0] } {
                seq += 1;
                if side == 0 {
                    let Some(node) = &berth else { continue };
                    let measured = node.run_batch(pods, seq, |node| {
                        // While the pods run: the agent's and the shims'
                        // memory.
                        let label = if pods == 1 { "1 pod".to_owned() } else { format!("{pods} pods") };
                        if let Ok((rss, hwm)) = node.agent_memory() {
                            match memory.iter_mut().find(|(l, _)| *l == label) {
                                Some((_, m)) => {
                                    m.rss = m.rss.max(rss);
                                    m.hwm = m.hwm.max(hwm);
                                }
                                None => memory.push((label, Memory { rss, hwm })),
                            }
                        }
                        if pods > 1 {
                            shims = Some((pods, node.shim_memory()));
                        }
                    });
                    match measured {
                        Ok(r) => b_samples.add(&r),
                        Err(e) => {
                            eprintln!("[bench] pods/berth: {pods} pods: {e:#}");
                            failures.berth.get_or_insert(format!("{pods} pods: {e:#}"));
                            berth = None;
                        }
                    }
                } else {
                    let Some(side) = &runc else { continue };
                    match side.run_batch(pods, seq) {
                        Ok(r) => r_samples.add(&r),
                        Err(e) => {
                            eprintln!("[bench] pods/runc: {pods} pods: {e:#}");
                            failures.runc.get_or_insert(format!("{pods} pods: {e:#}"));
                            runc = None;
                        }
                    }
                }
            }
        }
        record_case(sink, pods, &b_samples, &r_samples, &failures)?;
    }

    record_memory(sink, &memory, shims.as_ref(), berth.is_some() || !memory.is_empty(), &failures)?;
    drop(berth);
    drop(runc);
    Ok(())
}

fn warm_up(berth: &mut Option<berth::Node>, runc: &mut Option<runc::Side>, failures: &mut Failures) {
    if let Some(node) = berth.as_ref()
        && let Err(e) = node.run_batch(1, 0, |_| {})
    {
        eprintln!("[bench] pods/berth: warm-up: {e:#}");
        failures.berth = Some(format!("warm-up: {e:#}"));
        *berth = None;
    }
    if let Some(side) = runc.as_ref()
        && let Err(e) = side.warm_up()
    {
        eprintln!("[bench] pods/runc: warm-up: {e:#}");
        failures.runc = Some(format!("warm-up: {e:#}"));
        *runc = None;
    }
}

fn record_memory(
    sink: &mut Sink,
    memory: &[(String, Memory)],
    shims: Option<&(usize, Vec<ShimMemory>)>,
    ran: bool,
    failures: &Failures,
) -> anyhow::Result<()> {
    const TABLE: &str = "agent memory";
    const PEER: &str = "berth-agent node";
    if memory.is_empty() {
        let why = failures.berth.as_deref().unwrap_or(if ran { "no measurement" } else { "the agent did not run" });
        return sink.record(Record::new(TABLE, "pods running", PEER).outcome(Outcome::Failed(why.to_owned())));
    }
    for (label, m) in memory {
        let mut row = Record::new(TABLE, label, PEER).figure("VmRSS", m.rss, "MiB").figure("VmHWM", m.hwm, "MiB");
        if label == &format!("{GOAL_PODS} pods") {
            row = row.goal(format!("RSS < {GOAL_RSS_MIB} MiB"), m.rss < GOAL_RSS_MIB);
        }
        sink.record(row)?;
    }
    const SHIMS: &str = "per-container supervisor memory";
    if let Some((pods, memory)) = shims {
        let mut rss: Vec<f64> = memory.iter().map(|m| m.rss).collect();
        let mut pss: Vec<f64> = memory.iter().map(|m| m.pss).collect();
        let mut private: Vec<f64> = memory.iter().map(|m| m.private).collect();
        let total_pss: f64 = pss.iter().sum();
        if let (Some(r), Some(p), Some(x)) = (Stats::of(&mut rss), Stats::of(&mut pss), Stats::of(&mut private)) {
            sink.record(
                Record::new(SHIMS, format!("{pods} pods running"), "berth shim (one per container)")
                    .figure("RSS mean", r.mean, "MiB")
                    .figure("PSS mean", p.mean, "MiB")
                    .figure("private mean", x.mean, "MiB")
                    .figure("PSS total", total_pss, "MiB")
                    .figure("shims", r.n as f64, ""),
            )?;
        }
    }
    sink.record(
        Record::new(
            SHIMS,
            "after start",
            "runc (none after `run -d`; containerd adds a containerd-shim-runc-v2 per pod)",
        )
        .figure("shims", 0.0, ""),
    )
}
