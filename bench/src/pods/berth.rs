//! berth's side: a `berth-agent node` in a node namespace of its own, pods
//! submitted through its admin socket.
//!
//! # Design
//! The agent runs with the flags `tests/tests/node.rs` uses (own state,
//! run, log directories and cgroup root; the shared image cache), started
//! with `nsenter --net` so it keeps the host's mounts. A batch submits its
//! pods with [`Client::run_pod`] one after the other; per pod, a poller
//! thread in the node namespace waits for the pod's address (read from the
//! agent's `ipam.json` every [`POLL`] by one resolver thread) and for its
//! network to come up (see [`super::spawn_accept_poller`]), then for a TCP
//! accept on it; one more thread polls the pod list every 10 ms for
//! the Ready condition. After the batch, every pod is stopped with grace 0
//! and the bench waits until the agent has removed them all.
//!
//! Cleanup on drop (also on error): every pod stopped, the agent ended
//! (SIGTERM: it leaves containers running, so they were stopped first),
//! whatever is left in its cgroup root killed and the root removed, the
//! pod namespace mounts detached.
//!
//! # Limitations
//! The pods' IP is taken from the IPAM file, so a change of its format
//! shows up here as pods that never accept.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use berth_agent::node::client::Client;
use berth_tests::{ChildGuard, Netns, Stream};

use super::{
    BATCH_TIMEOUT, BatchResult, CPU_LIMIT_M, CPU_REQUEST_M, Env, MEMORY_LIMIT, PIDS_LIMIT, POLL, PodAddr, PodTiming,
    SERVER_PORT, ShimMemory, remove_cgroup_root, rss_mib, spawn_accept_poller,
};

/// The berth side's pod CIDR.
const POD_CIDR: &str = "198.18.240.0/24";
const NAMESPACE: &str = "default";
/// How often the Ready poller lists the pods.
const READY_POLL: Duration = Duration::from_millis(10);
/// Bound on the agent's start-up and on removing a batch.
const AGENT_START: Duration = Duration::from_secs(30);
const TEARDOWN: Duration = Duration::from_secs(120);

/// A running `berth-agent node`; see the module docs.
pub struct Node {
    client: Client,
    socket: PathBuf,
    state_dir: PathBuf,
    run_dir: PathBuf,
    cgroup_root: String,
    agent: Option<ChildGuard>,
    agent_pid: u32,
    // Dropped last: the agent runs inside it.
    ns: Netns,
}

impl Node {
    /// Starts the agent and waits for its admin socket.
    ///
    /// # Errors
    /// No agent binary, the namespace cannot be made, or the agent does
    /// not come up (its stderr tail is in the message).
    pub fn start(env: &Env) -> anyhow::Result<Self> {
        let agent_bin = crate::sibling_bin("berth-agent", "BERTH_AGENT_BIN")?;
        let ns = Netns::unique("bE-pods-b").context("node netns for berth")?;
        let dir = env.dir.path().join("berth");
        let (state_dir, run_dir, log_dir) = (dir.join("state"), dir.join("run"), dir.join("logs"));
        let socket = run_dir.join("agent.sock");
        let cgroup_root = format!("berth-bench-pods-{}-b", std::process::id());
        let mut cmd = ns.nsenter_command(&agent_bin);
        cmd.arg("node")
            .args(["--name", "bench-node"])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--log-dir")
            .arg(&log_dir)
            .arg("--image-dir")
            .arg(&env.image_dir)
            .arg("--image-cache")
            .arg(&env.image_cache)
            .args(["--pod-cidr", POD_CIDR])
            .args(["--cgroup-root", &cgroup_root])
            .args(["--metrics-addr", "127.0.0.1:9464"]);
        let agent = ns.spawn_command(cmd, "berth-agent node").context("starting berth-agent node")?;
        let agent_pid = agent.pid();
        let mut node = Self {
            client: Client::new(&socket),
            socket,
            state_dir,
            run_dir,
            cgroup_root,
            agent: Some(agent),
            agent_pid,
            ns,
        };
        let deadline = Instant::now() + AGENT_START;
        while !node.socket.exists() {
            let exited = match node.agent.as_mut() {
                Some(a) => a.try_wait()?,
                None => None,
            };
            if exited.is_some() || Instant::now() > deadline {
                let tail = node.agent.as_ref().map(|a| a.tail(Stream::Stderr, 30)).unwrap_or_default();
                let why =
                    exited.map_or_else(|| format!("no admin socket after {AGENT_START:?}"), |s| format!("exited {s}"));
                bail!("berth-agent node did not come up ({why}); stderr:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // `nsenter` without --fork execs the agent in place: the PID is the
        // agent's own, which its memory figures depend on.
        let comm = std::fs::read_to_string(format!("/proc/{agent_pid}/comm")).unwrap_or_default();
        if comm.trim() != "berth-agent" {
            bail!("pid {agent_pid} is {:?}, not berth-agent: cannot measure the agent's memory", comm.trim());
        }
        Ok(node)
    }

    /// The agent's VmRSS and VmHWM, in MiB.
    ///
    /// # Errors
    /// The agent is gone.
    pub fn agent_memory(&self) -> anyhow::Result<(f64, f64)> {
        rss_mib(self.agent_pid)
    }

    /// The memory of every shim of this agent's containers.
    pub fn shim_memory(&self) -> Vec<ShimMemory> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else { return out };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_ours = args.get(1).is_some_and(|a| *a == b"shim")
                && args.windows(2).any(|w| {
                    w[0] == b"--bundle" && Path::new(std::ffi::OsStr::from_bytes(w[1])).starts_with(&self.state_dir)
                });
            if is_ours && let Ok(memory) = ShimMemory::of(pid) {
                out.push(memory);
            }
        }
        out
    }

    /// Submits `pods` pods back to back, measures each one's start, calls
    /// `during` while they all run, then stops and removes them.
    ///
    /// # Errors
    /// The agent refused a pod, a pod did not accept or become Ready within
    /// the bound, or the pods could not be removed.
    pub fn run_batch(&self, pods: usize, seq: usize, during: impl FnOnce(&Self)) -> anyhow::Result<BatchResult> {
        let names: Vec<String> = (0..pods).map(|i| format!("pods-{seq}-{i}")).collect();
        let measured = self.measure(&names, during);
        let removed = self.remove(&names);
        let result = measured?;
        removed?;
        Ok(result)
    }

    fn measure(&self, names: &[String], during: impl FnOnce(&Self)) -> anyhow::Result<BatchResult> {
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_return = StopOnDrop(stop.clone());
        let ips = Arc::new(Mutex::new(HashMap::<String, Ipv4Addr>::new()));
        let resolver = spawn_ip_resolver(self.state_dir.join("ipam.json"), ips.clone(), stop.clone())?;
        let ready = Arc::new(Mutex::new(HashMap::<String, Instant>::new()));
        let ready_poller = spawn_ready_poller(&self.socket, names.to_vec(), ready.clone(), stop.clone())?;

        let start = Instant::now();
        let deadline = start + BATCH_TIMEOUT;
        let mut submitted = Vec::with_capacity(names.len());
        for name in names {
            let t0 = Instant::now();
            let view = self.client.run_pod(manifest(name).as_bytes()).with_context(|| format!("run_pod {name}"))?;
            let netns = self.run_dir.join("netns").join(&view.uid);
            let host_veth = berth_agent::network::host_veth_name(&view.uid);
            let uid = view.uid;
            let ips = ips.clone();
            let poller = spawn_accept_poller(
                &self.ns.path(),
                move || {
                    let ip = ips.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&uid).copied()?;
                    Some(PodAddr { ip, netns: netns.clone(), host_veth: host_veth.clone() })
                },
                deadline,
            )?;
            submitted.push((name.clone(), t0, poller));
        }
        let mut timings = Vec::with_capacity(names.len());
        for (name, t0, poller) in submitted {
            let accept = poller
                .join()
                .map_err(|_| anyhow::anyhow!("the poller of {name} panicked"))?
                .with_context(|| format!("pod {name}: {}", self.pod_summary(&name)))?;
            timings.push((name, t0, accept));
        }
        // Ready comes after accept (the probe connects like the poller).
        while ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() < names.len() {
            if Instant::now() > deadline {
                let missing: Vec<&String> = {
                    let ready = ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    names.iter().filter(|n| !ready.contains_key(*n)).collect()
                };
                let first = missing.first().map(|n| self.pod_summary(n)).unwrap_or_default();
                bail!("{} pod(s) not Ready within {BATCH_TIMEOUT:?}, e.g. {first}", missing.len());
            }
            if ready_poller.is_finished() {
                bail!("the Ready poller stopped: the agent's admin socket failed");
            }
            std::thread::sleep(READY_POLL);
        }
        during(self);
        stop.store(true, Ordering::Relaxed);
        let _ = resolver.join();
        let _ = ready_poller.join();
        let ready = ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pods = timings
            .into_iter()
            .map(|(name, t0, accept)| PodTiming { t0, accept, run: None, ready: ready.get(&name).copied() })
            .collect();
        Ok(BatchResult { start, pods })
    }

    /// One pod's status, for error messages.
    fn pod_summary(&self, name: &str) -> String {
        match self.client.status(NAMESPACE, name) {
            Ok(d) => serde_json::to_string(&d.view.status).unwrap_or_default(),
            Err(e) => format!("status unavailable: {e}"),
        }
    }

    /// Stops `names` with grace 0 and waits until the agent lists none.
    fn remove(&self, names: &[String]) -> anyhow::Result<()> {
        for name in names {
            // A pod that was never accepted is not there to stop.
            let _ = self.client.stop(NAMESPACE, name, Some(Duration::ZERO), false);
        }
        let deadline = Instant::now() + TEARDOWN;
        loop {
            let left = self.client.list().context("listing pods")?;
            let ours = left.iter().filter(|p| names.contains(&p.name)).count();
            if ours == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{ours} pod(s) still listed {TEARDOWN:?} after stopping them");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(pods) = self.client.list() {
            for p in pods {
                if let Err(e) = self.client.stop(&p.namespace, &p.name, Some(Duration::ZERO), true) {
                    eprintln!("[bench] pods/berth cleanup: stopping {}/{}: {e}", p.namespace, p.name);
                }
            }
        }
        if let Some(mut agent) = self.agent.take()
            && let Err(e) = agent.terminate(Duration::from_secs(5))
        {
            eprintln!("[bench] pods/berth cleanup: ending the agent: {e:#}");
        }
        remove_cgroup_root(&self.cgroup_root);
        // The agent bind-mounts pod namespaces under run/netns, a mount
        // point of its own (like `ip netns`).
        let netns_dir = self.run_dir.join("netns");
        if let Ok(entries) = std::fs::read_dir(&netns_dir) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = nix::mount::umount2(&netns_dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Sets the flag when dropped, so helper threads end on every return path.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The bench pod: the test server with the bench's resources and a
/// `tcpSocket` readiness probe.
fn manifest(name: &str) -> String {
    let memory_mi = MEMORY_LIMIT / (1024 * 1024);
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{berth.dev/pids-limit: "{PIDS_LIMIT}"}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: berth-test:latest
    resources:
      requests: {{cpu: {CPU_REQUEST_M}m}}
      limits: {{cpu: {CPU_LIMIT_M}m, memory: {memory_mi}Mi}}
    readinessProbe:
      tcpSocket: {{port: {SERVER_PORT}}}
      periodSeconds: 1
"#
    )
}

/// Reads `ipam.json` every [`POLL`] into `ips` (pod uid → address) until
/// `stop`.
fn spawn_ip_resolver(
    path: PathBuf,
    ips: Arc<Mutex<HashMap<String, Ipv4Addr>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pods-ipam".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = std::fs::read(&path)
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
                {
                    let found: Vec<(String, Ipv4Addr)> = v["allocations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| Some((a["pod_uid"].as_str()?.to_owned(), a["ip"].as_str()?.parse().ok()?)))
                        .collect();
                    ips.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(found);
                }
                std::thread::sleep(POLL);
            }
        })
        .context("spawning the IPAM reader")
}

/// Lists the pods every [`READY_POLL`] and records when each of `names`
/// is first reported Ready, until `stop` or all are.
fn spawn_ready_poller(
    socket: &Path,
    names: Vec<String>,
    ready: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let client = Client::new(socket);
    std::thread::Builder::new()
        .name("pods-ready".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let pods = client.list().context("listing pods")?;
                let now = Instant::now();
                let mut ready = ready.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for p in pods {
                    if names.contains(&p.name) && !ready.contains_key(&p.name) && is_ready(&p.status) {
                        ready.insert(p.name.clone(), now);
                    }
                }
                if ready.len() == names.len() {
                    return Ok(());
                }
                drop(ready);
                std::thread::sleep(READY_POLL);
            }
            Ok(())
        })
        .context("spawning the Ready poller")
}

/// The Ready condition is True, read from the status as Kubernetes writes
/// it.
fn is_ready(status: &impl serde::Serialize) -> bool {
    let Ok(v) = serde_json::to_value(status) else { return false };
    v["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}
