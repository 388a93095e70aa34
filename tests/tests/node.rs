//! End-to-end tests of `berth-agent node`: real containers from the test
//! image (`cargo xtask test-image`, found through `BERTH_TEST_IMAGE_DIR`),
//! in a node network namespace made per test, with their own cgroup root,
//! state, run and log directories. Each test cleans up through [`Node`]'s
//! drop, also when an assertion fails.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use berth_agent::node::{
    client::{Client, ClientError},
    local_api::{PodDetail, PodView},
};
use berth_agent::pod::status::ContainerState;
use berth_tests::{ChildGuard, Netns, Stream, agent_bin, poll_until};
use nix::sched::{CloneFlags, setns};

/// The test image directory; a missing image fails loudly (never skips).
fn image_dir() -> PathBuf {
    let dir = std::env::var("BERTH_TEST_IMAGE_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("test exe");
        exe.ancestors().nth(3).expect("target dir").join("berth-test-image")
    });
    assert!(
        dir.join("berth-test").join("index.json").exists(),
        "test image missing in {}: run `cargo xtask test-image` (cargo xtask test does)",
        dir.display()
    );
    dir
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// One node: a network namespace with a running agent and its directories.
struct Node {
    ns: Netns,
    dir: tempfile::TempDir,
    agent: Option<ChildGuard>,
    cgroup_root: String,
    cidr: String,
    metrics: SocketAddr,
    client: Client,
    extra_args: Vec<String>,
}

impl Node {
    fn start(prefix: &str, extra_args: &[&str]) -> Node {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = Netns::unique(prefix).expect("node netns");
        ns.sysctl("net.ipv4.ip_forward", "1").expect("ip_forward");
        let dir = tempfile::tempdir().expect("tempdir");
        // One /24 per test in this process, inside 198.18.0.0/15.
        let octet = 100 + (std::process::id() as u32 * 7 + n) % 150;
        let cidr = format!("198.18.{octet}.0/24");
        let cgroup_root = format!("berth-test-{}-{n}", std::process::id());
        let socket = dir.path().join("run").join("agent.sock");
        let mut node = Node {
            ns,
            client: Client::new(&socket),
            dir,
            agent: None,
            cgroup_root,
            cidr,
            metrics: SocketAddr::from(([127, 0, 0, 1], 9464)),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        node.spawn_agent();
        node
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn spawn_agent(&mut self) {
        let socket = self.path("run").join("agent.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = self.ns.nsenter_command(agent_bin());
        cmd.arg("node")
            .args(["--name", "test-node"])
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--run-dir")
            .arg(self.path("run"))
            .arg("--log-dir")
            .arg(self.path("logs"))
            .arg("--image-dir")
            .arg(image_dir())
            .arg("--image-cache")
            .arg(self.path("images"))
            .args(["--pod-cidr", &self.cidr])
            .args(["--cgroup-root", &self.cgroup_root])
            .args(["--metrics-addr", &self.metrics.to_string()])
            .args(&self.extra_args)
            .env("BERTH_LOG", "info,berth_agent=debug");
        let agent = self.ns.spawn_command(cmd, "berth-agent node").expect("start berth-agent node");
        let started = poll_until(Duration::from_secs(20), Duration::from_millis(20), || Ok(socket.exists()));
        if let Err(e) = started {
            panic!("agent socket never appeared: {e:#}\nstderr:\n{}", agent.tail(Stream::Stderr, 60));
        }
        self.agent = Some(agent);
    }

    fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("agent running");
        agent.signal(nix::sys::signal::Signal::SIGKILL).expect("SIGKILL agent");
        agent.wait(Duration::from_secs(5)).expect("agent exits");
    }

    fn agent_log(&self) -> String {
        self.agent.as_ref().map(|a| a.tail(Stream::Stderr, 80)).unwrap_or_default()
    }

    fn run_pod(&self, yaml: &str) -> PodView {
        self.client.run_pod(yaml.as_bytes()).unwrap_or_else(|e| panic!("run-pod: {e}\n{}", self.agent_log()))
    }

    fn status(&self, name: &str) -> PodDetail {
        self.client.status("default", name).unwrap_or_else(|e| panic!("status {name}: {e}\n{}", self.agent_log()))
    }

    /// Polls the pod until `check` holds; the panic shows the last status
    /// and the agent's log.
    fn wait_for(&self, name: &str, timeout: Duration, what: &str, check: impl Fn(&PodDetail) -> bool) -> PodDetail {
        let deadline = Instant::now() + timeout;
        loop {
            let detail = self.status(name);
            if check(&detail) {
                return detail;
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} not reached within {timeout:?}; last status:\n{}\nagent:\n{}",
                    serde_json::to_string_pretty(&detail.view.status).unwrap_or_default(),
                    self.agent_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self, name: &str) -> PodDetail {
        self.wait_for(name, Duration::from_secs(30), "Ready", |d| d.view.status.is_ready())
    }

    /// An HTTP/1.0 GET from inside the node namespace.
    fn http_get(&self, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let path = path.to_owned();
        in_netns(&self.ns.path(), move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            Ok((status, body))
        })
    }

    fn metrics_text(&self) -> String {
        let (status, body) = self.http_get(self.metrics, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// The host PID of a pod's (single) running container, from the shim's
/// state file.
fn container_pid(state_dir: &Path, uid: &str) -> i32 {
    let containers = state_dir.join("pods").join(uid).join("containers");
    for e in std::fs::read_dir(&containers).expect("containers dir").flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else { continue };
        let v: serde_json::Value = serde_json::from_str(&text).expect("state.json");
        if e.path().join("exit.json").exists() {
            continue;
        }
        return v["pid"].as_i64().expect("pid") as i32;
    }
    panic!("no running container under {}", containers.display());
}

fn pod_ip(detail: &PodDetail) -> Ipv4Addr {
    detail.view.status.pod_ip.expect("pod has an IP")
}

fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(path).expect("open netns");
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stop every pod through the agent (grace 0), then make sure: kill
        // whatever is left in the test's cgroups and remove them.
        if self.agent.is_some()
            && let Ok(pods) = self.client.list()
        {
            for p in pods {
                if let Err(e) = self.client.stop(&p.namespace, &p.name, Some(Duration::ZERO), true) {
                    eprintln!("cleanup: stopping {}/{}: {e}", p.namespace, p.name);
                }
            }
        }
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.terminate(Duration::from_secs(3));
        }
        cleanup_cgroups(&self.cgroup_root);
        cleanup_netns_mounts(&self.path("run").join("netns"));
    }
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fs = right.split(' ').next()?;
            if fs != "cgroup" && fs != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(left.split(' ').nth(4)?))
        })
        .collect()
}

fn cleanup_cgroups(root: &str) {
    for mount in cgroup_mounts() {
        let top = mount.join(root);
        if !top.exists() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = walk(&top).into_iter().filter(|p| p.is_dir()).collect();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in &dirs {
            for _ in 0..50 {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                for p in pids {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Err(e) = std::fs::remove_dir(d) {
                eprintln!("cleanup: rmdir {}: {e}", d.display());
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

fn cleanup_netns_mounts(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(e.path());
        }
    }
    // The agent makes the directory a mount point of its own, as
    // `ip netns` does with /run/netns.
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
}

fn server_pod(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: berth-test:latest
    args: ["serve", "--port", "8080"]
    ports:
    - containerPort: 8080
      name: http
    readinessProbe:
      httpGet: {{ path: /readyz, port: http }}
      periodSeconds: 1
      failureThreshold: 1
{extra}"#
    )
}

#[test]
fn server_answers_over_the_pod_address_and_logs_are_readable() {
    let node = Node::start("bn-serve", &[]);
    node.run_pod(&server_pod("web-1", ""));
    let detail = node.wait_ready("web-1");
    let ip = pod_ip(&detail);
    assert!(node.cidr.starts_with(&format!("{}.{}.{}.", ip.octets()[0], ip.octets()[1], ip.octets()[2])));
    let (status, body) = node.http_get(SocketAddr::from((ip, 8080)), "/").expect("GET / over the pod address");
    assert_eq!(status, 200);
    assert!(body.contains("web-1"), "answers its pod name: {body}");
    assert!(body.contains(&ip.to_string()), "answers its address: {body}");
    // Logs are readable while the container runs.
    let logs = node.client.logs("default", "web-1", None, false, None).expect("logs");
    assert!(logs.contains("listening"), "{logs}");
    // exec joins the container: same hostname, same cgroup.
    let out = node.client.exec("default", "web-1", None, &["hostname".into()], Duration::from_secs(5)).expect("exec");
    assert_eq!((out.exit_code, out.stdout.trim()), (Some(0), "web-1"));
    let metrics = node.metrics_text();
    for name in [
        "container_cpu_usage_seconds_total{",
        "container_memory_working_set_bytes{",
        "container_oom_events_total{",
        "container_threads{",
        "container_start_time_seconds{",
        "kube_pod_container_status_restarts_total{",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    assert!(metrics.contains(r#"pod="web-1""#) && metrics.contains(r#"container="web""#));
}

#[test]
fn bad_manifests_are_rejected_with_the_field_and_nothing_is_stored() {
    let node = Node::start("bn-bad", &[]);
    let cases = [
        ("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n", "kind"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: berth-test}]}\n",
            "metadata.name",
        ),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: {containers: []}\n", "spec.containers"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: {containers: [{name: a, image: berth-test, ports: [{containerPort: 70000}]}]}\n",
            "spec.containers[0].ports[0]",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec: {containers: [{name: a, image: berth-test, resources: {limits: {memory: lots}}}]}\n",
            "spec.containers[0].resources.limits",
        ),
    ];
    for (yaml, field) in cases {
        match node.client.run_pod(yaml.as_bytes()) {
            Err(ClientError::Refused { status: 422, message }) => {
                assert!(message.contains(field), "error for {field} names it: {message}")
            }
            other => panic!("expected 422 naming {field}, got {other:?}"),
        }
    }
    assert!(node.client.list().expect("list").is_empty());
    let stored: Vec<_> = std::fs::read_dir(node.path("state").join("pods")).expect("pods dir").collect();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
}

#[test]
fn a_missing_image_waits_in_image_pull_back_off() {
    let node = Node::start("bn-img", &["--backoff-initial-ms", "200", "--backoff-max-ms", "400"]);
    node.run_pod(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec: {containers: [{name: a, image: does-not-exist:1}]}\n",
    );
    node.wait_for("noimage", Duration::from_secs(10), "ImagePullBackOff", |d| {
        let s = serde_json::to_string(&d.view.status).unwrap_or_default();
        s.contains("ImagePullBackOff") || s.contains("ErrImagePull")
    });
}

#[test]
fn memory_limit_ends_in_oom_killed() {
    let node = Node::start("bn-oom", &[]);
    node.run_pod(
        r#"apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: berth-test:latest
    args: ["hog-memory", "256"]
    resources: {limits: {memory: 32Mi}}
"#,
    );
    // The current state, not `lastState`: both change on the exit.
    let detail = node.wait_for("hog", Duration::from_secs(30), "Terminated", |d| {
        d.view.status.container_statuses.first().is_some_and(|c| matches!(c.state, ContainerState::Terminated { .. }))
    });
    let s = serde_json::to_string(&detail.view.status).expect("json");
    assert!(s.contains("OOMKilled") && s.contains("137"), "OOMKilled with exit code 137: {s}");
    assert!(s.contains("Failed"), "restartPolicy Never + error → phase Failed: {s}");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let node = Node::start("bn-pids", &[]);
    node.run_pod(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: bomb
  annotations: {berth.dev/pids-limit: "24"}
spec:
  containers:
  - name: bomb
    image: berth-test:latest
    args: ["fork-bomb"]
"#,
    );
    node.wait_for("bomb", Duration::from_secs(20), "Running", |d| {
        serde_json::to_string(&d.view.status).unwrap_or_default().contains("\"Running\"")
    });
    poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Ok(node.client.logs("default", "bomb", None, false, None)?.contains("fork failed"))
    })
    .unwrap_or_else(|e| panic!("the fork bomb hit the limit: {e:#}"));
    let metrics = node.metrics_text();
    let threads = metrics
        .lines()
        .find(|l| l.starts_with("container_threads{") && l.contains(r#"container="bomb""#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("container_threads for bomb");
    assert!(threads <= 24.0, "pids limit holds: {threads}");
    // The node is still usable: the agent answers and the container lives.
    let d = node.status("bomb");
    assert!(serde_json::to_string(&d.view.status).unwrap_or_default().contains("\"Running\""));
}

fn cpu_seconds(metrics: &str, container: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("container_cpu_usage_seconds_total{") && l.contains(&format!(r#"container="{container}""#))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no cpu usage for {container}:\n{metrics}"))
}

#[test]
fn cpu_quota_caps_a_busy_loop() {
    let node = Node::start("bn-cpu", &[]);
    node.run_pod(
        r#"apiVersion: v1
kind: Pod
metadata: {name: spin}
spec:
  containers:
  - name: spin
    image: berth-test:latest
    args: ["spin", "2"]
    resources: {limits: {cpu: 300m}}
"#,
    );
    node.wait_for("spin", Duration::from_secs(20), "Running", |d| {
        serde_json::to_string(&d.view.status).unwrap_or_default().contains("\"Running\"")
    });
    std::thread::sleep(Duration::from_millis(500));
    let (t0, c0) = (Instant::now(), cpu_seconds(&node.metrics_text(), "spin"));
    std::thread::sleep(Duration::from_secs(3));
    let (t1, c1) = (Instant::now(), cpu_seconds(&node.metrics_text(), "spin"));
    let used = (c1 - c0) / (t1 - t0).as_secs_f64();
    assert!((used - 0.3).abs() <= 0.3 * 0.15, "CPU use {used:.3} within 15% of the 0.3 quota");
}

#[test]
fn readiness_failure_flips_ready_without_a_restart() {
    let node = Node::start("bn-ready", &[]);
    node.run_pod(&server_pod("ready-1", ""));
    let ip = pod_ip(&node.wait_ready("ready-1"));
    node.http_get(SocketAddr::from((ip, 8080)), "/unready").expect("unready");
    let d = node.wait_for("ready-1", Duration::from_secs(10), "not ready", |d| !d.view.status.is_ready());
    assert_eq!(d.view.status.container_statuses[0].restart_count, 0, "readiness never restarts");
    node.http_get(SocketAddr::from((ip, 8080)), "/ready").expect("ready");
    node.wait_ready("ready-1");
    assert_eq!(node.status("ready-1").view.status.container_statuses[0].restart_count, 0);
}

#[test]
fn liveness_failure_restarts_and_crash_loops_back_off_by_the_rule() {
    // Short timers: 1 s initial back-off doubling to 4 s.
    let node = Node::start("bn-live", &["--backoff-initial-ms", "1000", "--backoff-max-ms", "4000"]);
    node.run_pod(&server_pod(
        "live-1",
        "    livenessProbe:\n      httpGet: { path: /healthz, port: 8080 }\n      periodSeconds: 1\n      failureThreshold: 2\n",
    ));
    let ip = pod_ip(&node.wait_ready("live-1"));
    node.http_get(SocketAddr::from((ip, 8080)), "/fail").expect("fail");
    // Two failed probes (~2 s), then a graceful stop and the first restart,
    // which is immediate.
    let d = node.wait_for("live-1", Duration::from_secs(15), "restarted", |d| {
        d.view.status.container_statuses[0].restart_count >= 1 && d.view.status.is_ready()
    });
    let container = &d.view.status.container_statuses[0];
    assert!(matches!(container.last_state, Some(ContainerState::Terminated { .. })), "last state kept: {container:?}");

    // A crash loop: the container exits 1 at once. Gaps between starts:
    // immediate, then 1 s, 2 s, 4 s (cap).
    node.run_pod(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crash}\nspec: {containers: [{name: c, image: berth-test:latest, args: [exit, '1']}]}\n",
    );
    let mut starts: Vec<(u32, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut saw_backoff = false;
    while Instant::now() < deadline && starts.len() < 6 {
        let d = node.status("crash");
        let c = &d.view.status.container_statuses[0];
        if starts.last().map(|(n, _)| *n) != Some(c.restart_count) {
            starts.push((c.restart_count, Instant::now()));
        }
        saw_backoff |= serde_json::to_string(c).unwrap_or_default().contains("CrashLoopBackOff");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw_backoff, "Waiting: CrashLoopBackOff reported");
    assert!(starts.len() >= 6, "restarts seen: {starts:?}");
    // The restart count goes up when an instance exits; the next instance
    // starts after the back-off and exits at once. So the gaps between
    // count changes are the back-off delays: 0 (the first restart is
    // immediate), then 1 s, 2 s, 4 s (the cap).
    let gaps: Vec<f64> = starts.windows(2).map(|w| (w[1].1 - w[0].1).as_secs_f64()).collect();
    let expected = [0.0, 0.0, 1.0, 2.0, 4.0];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!((gap - want).abs() < 0.5, "gaps {gaps:?} follow: immediate, then 1 s doubling to the 4 s cap");
    }
}

#[test]
fn a_process_ignoring_sigterm_is_gone_within_grace_plus_one_second() {
    let node = Node::start("bn-term", &[]);
    node.run_pod(
        r#"apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: s
    image: berth-test:latest
    args: ["ignore-sigterm"]
"#,
    );
    node.wait_for("stubborn", Duration::from_secs(20), "Running", |d| {
        serde_json::to_string(&d.view.status).unwrap_or_default().contains("\"Running\"")
    });
    let t = Instant::now();
    node.client.stop("default", "stubborn", None, true).expect("stop");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1900), "the grace period was honoured: {took:?}");
    assert!(took <= Duration::from_secs(3), "gone within grace + 1 s: {took:?}");
    assert!(node.client.list().expect("list").is_empty());
}

#[test]
fn a_restarted_agent_adopts_running_containers() {
    let mut node = Node::start("bn-adopt", &[]);
    node.run_pod(&server_pod("adopt-1", ""));
    node.run_pod(&server_pod("adopt-2", ""));
    let before1 = node.wait_ready("adopt-1");
    let before2 = node.wait_ready("adopt-2");
    let ipam_before = std::fs::read_to_string(node.path("state").join("ipam.json")).expect("ipam state");
    node.kill_agent();
    // A pod directory without a record (creation cut short) is reaped.
    let orphan = node.path("state").join("pods").join("orphan-uid");
    std::fs::create_dir_all(orphan.join("containers")).expect("orphan dir");
    // The containers keep serving while no agent runs.
    let ip1 = pod_ip(&before1);
    assert_eq!(node.http_get(SocketAddr::from((ip1, 8080)), "/").expect("GET while agent is down").0, 200);
    node.spawn_agent();
    let after1 = node.wait_ready("adopt-1");
    let after2 = node.wait_ready("adopt-2");
    let id = |d: &PodDetail| d.view.status.container_statuses[0].container_id.clone();
    assert_eq!(id(&before1), id(&after1), "same container instance adopted");
    assert_eq!(id(&before2), id(&after2));
    assert_eq!(pod_ip(&before2), pod_ip(&after2));
    let ipam_after = std::fs::read_to_string(node.path("state").join("ipam.json")).expect("ipam state");
    assert_eq!(ipam_before, ipam_after, "IPAM unchanged by the restart");
    assert!(!orphan.exists(), "the record-less pod directory was removed");
    // A third pod gets a fresh address: nothing handed out twice.
    node.run_pod(&server_pod("adopt-3", ""));
    let ip3 = pod_ip(&node.wait_ready("adopt-3"));
    assert!(ip3 != ip1 && ip3 != pod_ip(&after2));
    // Supervision continues: SIGKILL the adopted container's PID 1 from the
    // host; the new agent sees the exit and restarts it.
    let pid = container_pid(&node.path("state"), &after1.view.uid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    node.wait_for("adopt-1", Duration::from_secs(20), "restarted after adoption", |d| {
        d.view.status.container_statuses[0].restart_count >= 1 && d.view.status.is_ready()
    });
}

#[test]
fn an_exec_probe_runs_inside_the_container() {
    let node = Node::start("bn-exec", &[]);
    // /tmp/healthy exists only in the container's own writable layer: the
    // probe sees it only if it joined the container's mount namespace.
    node.run_pod(
        r#"apiVersion: v1
kind: Pod
metadata: {name: exec-1}
spec:
  containers:
  - name: web
    image: berth-test:latest
    readinessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    let ip = pod_ip(&node.wait_ready("exec-1"));
    // /fail removes the file: the exec probe fails, ready flips.
    node.http_get(SocketAddr::from((ip, 8080)), "/fail").expect("fail");
    node.wait_for("exec-1", Duration::from_secs(10), "not ready", |d| !d.view.status.is_ready());
    node.http_get(SocketAddr::from((ip, 8080)), "/recover").expect("recover");
    node.wait_ready("exec-1");
}

#[test]
fn the_run_pod_command_reports_the_field_and_exits_64() {
    let node = Node::start("bn-cli", &[]);
    let socket = node.path("run").join("agent.sock");
    let bad = node.path("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: ''}]}\n",
    )
    .expect("write");
    let out = std::process::Command::new(agent_bin())
        .arg("run-pod")
        .arg(&bad)
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run berth-agent run-pod");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("spec.containers[0].image"), "{stderr}");
    // The README's example pod.
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pod.yaml");
    let out = std::process::Command::new(agent_bin())
        .args(["run-pod", "--wait", "--timeout-seconds", "30"])
        .arg(&good)
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run berth-agent run-pod");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = std::process::Command::new(agent_bin()).arg("list").arg("--socket").arg(&socket).output().expect("list");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("web-1") && text.contains("1/1") && text.contains("Running"), "{text}");
}

#[test]
fn a_stop_begun_by_a_killed_agent_is_finished_by_the_next() {
    let mut node = Node::start("bn-stop", &[]);
    node.run_pod(
        r#"apiVersion: v1
kind: Pod
metadata: {name: half-stopped}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: s
    image: berth-test:latest
    args: ["ignore-sigterm"]
"#,
    );
    node.wait_for("half-stopped", Duration::from_secs(20), "Running", |d| {
        serde_json::to_string(&d.view.status).unwrap_or_default().contains("\"running\"")
    });
    let uid = node.status("half-stopped").view.uid;
    let pid = container_pid(&node.path("state"), &uid);
    node.client.stop("default", "half-stopped", None, false).expect("stop --no-wait");
    node.kill_agent();
    node.spawn_agent();
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || Ok(node.client.list()?.is_empty()))
        .unwrap_or_else(|e| panic!("the new agent finished the stop: {e:#}\n{}", node.agent_log()));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the container process is gone");
}
