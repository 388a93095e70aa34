//! runc's side: what a CRI runtime does to start a pod, with runc and
//! berth's own pod network code, on the same unpacked image.
//!
//! # Design
//! Per container, timed from the start of the work: [`PodNetwork::setup`]
//! (netns, veth pair, address from the side's own IPAM, routes: exactly
//! berth's sandbox work), an overlay of the shared image rootfs on the
//! bundle's `rootfs` (a snapshotter's mount), `config.json` (containerd's
//! defaults: capabilities, `noNewPrivileges`, masked and read-only paths,
//! mounts; the bench's resources as kubelet sends them; the pod's network
//! namespace; a cgroup under the side's root), then `runc run -d` with the
//! container's output to a file. A poller in the node namespace waits for
//! the server to accept TCP, as on berth's side.
//!
//! A batch queues every pod at once and starts them with one worker per
//! CPU, so each pod's latency counts from the batch start, queueing
//! included (berth's agent also starts a batch's pods concurrently).
//!
//! Cleanup per container (on drop, also on error): `runc delete -f`, the
//! overlay unmounted, the bundle removed, the pod network torn down; then
//! the side's cgroup root and namespace mount directory.
//!
//! # Limitations
//! No `/sys/fs/cgroup` mount in the container (containerd's CRI plugin
//! adds one; berth has none, so neither side pays for it).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use berth_agent::network::{PodNetwork, PodNetworkConfig};
use berth_tests::Netns;
use berth_tests::runc::{CONTAINERD_CAPS, CONTAINERD_MASKED, CONTAINERD_READONLY};

use super::{
    BATCH_TIMEOUT, BatchResult, CPU_LIMIT_M, CPU_REQUEST_M, Env, MEMORY_LIMIT, PIDS_LIMIT, PodAddr, PodTiming, cpus,
    remove_cgroup_root, spawn_accept_poller,
};

/// The runc side's pod CIDR.
const POD_CIDR: &str = "198.18.241.0/24";
/// kubelet's CFS period.
const CFS_PERIOD_US: u64 = 100_000;
/// Bound on one `runc run -d` and `runc delete`.
const RUNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The runc side: a node namespace, a pod network, a runc state root.
pub struct Side {
    runc: PathBuf,
    state_root: PathBuf,
    bundles: PathBuf,
    netns_dir: PathBuf,
    cgroup_root: String,
    image_rootfs: PathBuf,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    network: PodNetwork,
    // Dropped last: the pod networks live in it.
    ns: Netns,
}

impl Side {
    /// Makes the node namespace and opens a pod network in it.
    ///
    /// # Errors
    /// No runc, or the namespace or the pod network cannot be made.
    pub fn start(env: &Env) -> anyhow::Result<Self> {
        let runc = berth_tests::runc::runc_bin()?;
        let ns = Netns::unique("bE-pods-r").context("node netns for runc")?;
        let dir = env.dir.path().join("runc");
        let netns_dir = dir.join("netns");
        let config = PodNetworkConfig {
            state_dir: dir.join("net"),
            pod_cidr: POD_CIDR.parse().context("pod CIDR")?,
            netns_dir: netns_dir.clone(),
        };
        // PodNetwork takes the calling thread's namespace as the node's:
        // open it from a thread that entered the side's namespace.
        let ns_file = fs::File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
        let network = std::thread::spawn(move || -> anyhow::Result<PodNetwork> {
            nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).context("entering the node netns")?;
            Ok(PodNetwork::open(config)?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("opening the pod network panicked"))??;
        let image = &env.image;
        Ok(Self {
            runc,
            state_root: dir.join("runc-state"),
            bundles: dir.join("bundles"),
            netns_dir,
            cgroup_root: format!("berth-bench-pods-{}-r", std::process::id()),
            image_rootfs: image.rootfs.clone(),
            args: env.args(),
            env: image.config.env.clone(),
            cwd: if image.config.working_dir.is_empty() { "/".to_owned() } else { image.config.working_dir.clone() },
            network,
            ns,
        })
    }

    /// One container, not measured.
    ///
    /// # Errors
    /// As [`Side::run_batch`].
    pub fn warm_up(&self) -> anyhow::Result<()> {
        self.run_batch(1, 0).map(drop)
    }

    /// Starts `pods` containers (see the module docs) and removes them.
    ///
    /// # Errors
    /// A step of a container's start failed or it never accepted.
    pub fn run_batch(&self, pods: usize, seq: usize) -> anyhow::Result<BatchResult> {
        // Containers are removed when this goes, on every return path.
        let started: Mutex<Vec<Container<'_>>> = Mutex::new(Vec::with_capacity(pods));
        let start = Instant::now();
        let deadline = start + BATCH_TIMEOUT;
        let next = AtomicUsize::new(0);
        let worker = || -> anyhow::Result<Vec<(Instant, Instant, Poller)>> {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pods {
                    return Ok(mine);
                }
                let t_work = Instant::now();
                let mut c = Container::new(self, format!("runc-{seq}-{i}"));
                let result = c.start(deadline);
                started.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
                let (t_run, poller) = result?;
                mine.push((t_work, t_run, poller));
            }
        };
        let launched: Vec<(Instant, Instant, Poller)> = if pods == 1 {
            worker()?
        } else {
            let workers = cpus().min(pods);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers).map(|_| s.spawn(worker)).collect();
                let mut all = Vec::new();
                for h in handles {
                    all.extend(h.join().map_err(|_| anyhow::anyhow!("a runc worker panicked"))??);
                }
                Ok::<_, anyhow::Error>(all)
            })?
        };
        let mut timings = Vec::with_capacity(pods);
        for (t_work, t_run, poller) in launched {
            let accept = poller.join().map_err(|_| anyhow::anyhow!("a poller panicked"))??;
            // One pod: from its own work's start; a batch: from the batch
            // start (all were queued then).
            let t0 = if pods == 1 { t_work } else { start };
            timings.push(PodTiming { t0, accept, run: Some(t_run), ready: None });
        }
        drop(started);
        Ok(BatchResult { start, pods: timings })
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        remove_cgroup_root(&self.cgroup_root);
        // PodNetwork made the namespace directory a mount point of itself.
        let _ = nix::mount::umount2(&self.netns_dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

type Poller = std::thread::JoinHandle<anyhow::Result<Instant>>;

/// One runc container and its pod network; see the module docs.
struct Container<'a> {
    side: &'a Side,
    /// The pod uid (network) and runc container id.
    id: String,
    bundle: PathBuf,
    net: bool,
    mounted: bool,
    created: bool,
}

impl<'a> Container<'a> {
    fn new(side: &'a Side, id: String) -> Self {
        let bundle = side.bundles.join(&id);
        Self { side, id, bundle, net: false, mounted: false, created: false }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.side.runc);
        cmd.arg("--root").arg(&self.side.state_root);
        cmd
    }

    /// The timed work up to `runc run -d` returning; returns when `run`
    /// began and the accept poller.
    fn start(&mut self, deadline: Instant) -> anyhow::Result<(Instant, Poller)> {
        let side = self.side;
        self.net = true;
        let net = side.network.setup(&self.id).with_context(|| format!("pod network for {}", self.id))?;
        let (upper, work, rootfs) = (self.bundle.join("upper"), self.bundle.join("work"), self.bundle.join("rootfs"));
        for d in [&upper, &work, &rootfs] {
            fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", side.image_rootfs.display(), upper.display(), work.display());
        nix::mount::mount(Some("overlay"), &rootfs, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
            .with_context(|| format!("mounting the overlay on {}", rootfs.display()))?;
        self.mounted = true;
        let config = self.config(&net.netns);
        fs::write(self.bundle.join("config.json"), serde_json::to_vec(&config)?).context("writing config.json")?;
        let log = fs::File::create(self.bundle.join("output.log")).context("creating the output log")?;

        let t_run = Instant::now();
        let mut cmd = self.runc();
        cmd.arg("run")
            .arg("-d")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup")?)
            .stderr(log);
        self.created = true;
        let mut child = cmd.spawn().context("spawning runc run -d")?;
        let status = wait_bounded(&mut child, RUNC_TIMEOUT)?;
        if !status.success() {
            let out = fs::read_to_string(self.bundle.join("output.log")).unwrap_or_default();
            bail!("runc run -d {}: {status}: {}", self.id, out.trim());
        }
        let addr = PodAddr { ip: net.ip, netns: net.netns.clone(), host_veth: net.host_veth.clone() };
        let poller = spawn_accept_poller(&side.ns.path(), move || Some(addr.clone()), deadline)?;
        Ok((t_run, poller))
    }

    /// The OCI config containerd would write for the bench pod.
    fn config(&self, netns: &Path) -> serde_json::Value {
        let side = self.side;
        let mut env = side.env.clone();
        env.push(format!("HOSTNAME={}", self.id));
        serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": side.args,
                "env": env,
                "cwd": side.cwd,
                "capabilities": { "bounding": CONTAINERD_CAPS, "effective": CONTAINERD_CAPS, "permitted": CONTAINERD_CAPS },
                "noNewPrivileges": true
            },
            "root": { "path": "rootfs", "readonly": false },
            "hostname": self.id,
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                  "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
                { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] }
            ],
            "linux": {
                "resources": {
                    "devices": [{ "allow": false, "access": "rwm" }],
                    "cpu": {
                        "shares": (CPU_REQUEST_M * 1024 / 1000).max(2),
                        "quota": CPU_LIMIT_M * CFS_PERIOD_US / 1000,
                        "period": CFS_PERIOD_US
                    },
                    "memory": { "limit": MEMORY_LIMIT, "swap": MEMORY_LIMIT },
                    "pids": { "limit": PIDS_LIMIT }
                },
                "cgroupsPath": format!("/{}/{}", side.cgroup_root, self.id),
                "namespaces": [
                    { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                    { "type": "network", "path": netns }
                ],
                "maskedPaths": CONTAINERD_MASKED,
                "readonlyPaths": CONTAINERD_READONLY
            }
        })
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.created {
            let mut cmd = self.runc();
            cmd.arg("delete").arg("-f").arg(&self.id).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            match cmd.spawn().map_err(anyhow::Error::from).and_then(|mut c| wait_bounded(&mut c, RUNC_TIMEOUT)) {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("[bench] pods/runc cleanup: runc delete -f {}: {s}", self.id),
                Err(e) => eprintln!("[bench] pods/runc cleanup: runc delete -f {}: {e:#}", self.id),
            }
        }
        if self.mounted
            && let Err(e) = nix::mount::umount2(&self.bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH)
        {
            eprintln!("[bench] pods/runc cleanup: unmounting {}: {e}", self.bundle.display());
        }
        if let Err(e) = fs::remove_dir_all(&self.bundle)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("[bench] pods/runc cleanup: removing {}: {e}", self.bundle.display());
        }
        if self.net
            && let Err(e) = self.side.network.teardown(&self.id)
        {
            eprintln!("[bench] pods/runc cleanup: pod network {}: {e}", self.id);
        }
    }
}

/// Waits for `child`, killing it after `timeout`.
fn wait_bounded(child: &mut std::process::Child, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for runc")? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("runc did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
