//! Privileged tests of berth's container runtime: real namespaces, cgroups
//! (under a `berth-test-PID-N` root in every hierarchy), overlayfs and a
//! busybox image, through `berth-agent shim` and `berth-agent exec`.
//! Network namespaces are named `bB-...`; nothing else on the host is
//! touched. Never skipped: a missing feature fails the test.
//!
//! Needs the agent binary: `cargo build -p berth-agent` first (or set
//! `BERTH_AGENT_BIN`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use berth_agent::{
    cgroups::{self, Driver, MilliCpu, ResourceSpec, Resources},
    runtime::{ContainerSpec, ContainerStatus, ExitInfo, LogConfig, Runtime, RuntimeError, Started},
};
use berth_tests::{ChildGuard, Netns, Stream, agent_bin, poll_until, require_root, rootfs::BusyboxRootfs, unique_name};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

/// A berth cgroup root of this test's own in every hierarchy; everything
/// below it is killed and removed on drop.
struct CgroupRoot {
    name: String,
    driver: Arc<dyn Driver>,
}

impl CgroupRoot {
    fn new() -> Self {
        let name = unique_name("berth-test");
        let driver: Arc<dyn Driver> = Arc::from(cgroups::detect(&name).expect("detect the cgroup driver"));
        Self { name, driver }
    }

    /// `/<root>/pods/<id>`, as `/proc/<pid>/cgroup` shows it.
    fn path_of(&self, spec: &ContainerSpec) -> String {
        format!("/{}/{}", self.name, spec.cgroup.display())
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let pods = Path::new("pods");
        if let Err(e) = self.driver.kill_all(pods) {
            eprintln!("berth-tests: cgroup root {}: {e}", self.name);
        }
        let removed = poll_until(Duration::from_secs(3), Duration::from_millis(20), || {
            self.driver.remove(pods).map(|()| true).map_err(anyhow::Error::from)
        });
        if let Err(e) = removed {
            eprintln!("berth-tests: cgroup root {}: {e:#}", self.name);
        }
        for dir in self.driver.dirs(pods).unwrap_or_default() {
            if let Some(root) = dir.parent()
                && let Err(e) = std::fs::remove_dir(root)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("berth-tests: rmdir {}: {e}", root.display());
            }
        }
    }
}

/// A runtime with its own cgroup root, a busybox image and a directory for
/// bundles and logs.
struct Fixture {
    runtime: Runtime,
    // Dropped in declaration order: the runtime's containers go before the
    // cgroup root, the image and the directory.
    root: CgroupRoot,
    image: BusyboxRootfs,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let root = CgroupRoot::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let image = BusyboxRootfs::create_in(dir.path()).expect("busybox rootfs");
        Self { runtime: Runtime::new(root.driver.clone(), agent_bin()), root, image, dir }
    }

    fn spec(&self, name: &str, args: &[&str]) -> ContainerSpec {
        let id = unique_name(name);
        ContainerSpec {
            bundle: self.dir.path().join("bundles").join(&id),
            image_rootfs: self.image.path().to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: vec!["PATH=/bin".to_owned(), format!("HOSTNAME={name}")],
            cwd: "/".to_owned(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: name.to_owned(),
            netns: None,
            cgroup: Path::new("pods").join(&id),
            resources: Resources::from_kubernetes(&ResourceSpec::default()),
            log: LogConfig {
                path: self.dir.path().join("logs").join(&id).join("0.log"),
                max_bytes: 1 << 20,
                max_files: 2,
            },
            id,
        }
    }

    fn start(&self, spec: ContainerSpec) -> Container<'_> {
        let started = match self.runtime.start(&spec) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.runtime.remove(&spec);
                panic!("starting {}: {e}", spec.id);
            }
        };
        Container { fx: self, spec, started }
    }
}

/// A started container, killed and removed on drop.
struct Container<'a> {
    fx: &'a Fixture,
    spec: ContainerSpec,
    started: Started,
}

impl Container<'_> {
    fn wait(&self) -> ExitInfo {
        self.fx
            .runtime
            .wait_blocking(&self.spec.bundle, self.started.shim_pid, WAIT)
            .unwrap_or_else(|e| panic!("waiting for {}: {e}; log:\n{}", self.spec.id, self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log.path).unwrap_or_default()
    }

    /// The log's text, without the CRI prefixes.
    fn output(&self) -> String {
        self.log().lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or("")).collect::<Vec<_>>().join("\n")
    }

    fn exec(&self, argv: &[&str], timeout: Duration) -> Result<berth_agent::runtime::ExecOutput, RuntimeError> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        self.fx.runtime.exec(&self.spec.bundle, &argv, timeout)
    }

    fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv, Duration::from_secs(10)).unwrap_or_else(|e| panic!("exec {argv:?}: {e}"));
        assert_eq!(out.exit_code, Some(0), "exec {argv:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn wait_for_output(&self, needle: &str) {
        poll_until(Duration::from_secs(10), Duration::from_millis(20), || Ok(self.log().contains(needle)))
            .unwrap_or_else(|e| panic!("{needle:?} not logged by {}: {e:#}; log:\n{}", self.spec.id, self.log()));
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.fx.runtime.remove(&self.spec) {
            eprintln!("berth-tests: removing container {}: {e}", self.spec.id);
        }
    }
}

/// `KEY:\tvalue` lines of `/proc/<pid>/status`, or `key=value` lines.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix([':', '='])))
        .map_or_else(|| panic!("no {key} in:\n{text}"), str::trim)
}

#[test]
fn the_exit_code_and_output_are_recorded_and_remove_keeps_only_the_log() {
    let fx = Fixture::new();
    let spec = fx.spec("exit", &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"]);
    let c = fx.start(spec);
    assert!(c.started.pid > 0 && c.started.shim_pid > 0);
    let exit = c.wait();
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (3, None, false), "{exit:?}");
    assert!(exit.finished_at_unix_ms >= exit.started_at_unix_ms);
    assert_eq!(fx.runtime.status(&c.spec.bundle).unwrap(), ContainerStatus::Exited(exit.clone()));
    let recorded: ExitInfo =
        serde_json::from_slice(&std::fs::read(c.spec.bundle.join("exit.json")).unwrap()).expect("exit.json");
    assert_eq!(recorded, exit);
    let log = c.log();
    assert!(log.contains(" stdout F to-stdout\n") && log.contains(" stderr F to-stderr\n"), "{log}");

    fx.runtime.remove(&c.spec).unwrap();
    assert!(!c.spec.bundle.exists(), "bundle removed");
    for dir in fx.root.driver.dirs(&c.spec.cgroup).unwrap() {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    assert!(c.spec.log.path.exists(), "the log stays");
    assert_eq!(fx.runtime.status(&c.spec.bundle).unwrap(), ContainerStatus::Gone);
}

#[test]
fn a_command_that_cannot_be_executed_is_a_start_error_with_the_reason() {
    let fx = Fixture::new();
    for (args, want) in [
        (&["/bin/nope"][..], "exec /bin/nope: No such file or directory"),
        (&["nope"][..], "exec nope: executable file not found in $PATH"),
        (&["/etc/passwd"][..], "exec /etc/passwd: Permission denied"),
    ] {
        let spec = fx.spec("nope", args);
        let err = fx.runtime.start(&spec).expect_err("must not start");
        match &err {
            RuntimeError::Start { message, .. } => assert_eq!(message, want),
            other => panic!("{args:?}: expected a start error, got {other}"),
        }
        fx.runtime.remove(&spec).unwrap();
        assert!(!spec.bundle.exists());
        assert!(fx.root.driver.procs(&spec.cgroup).unwrap().is_empty());
    }
}

/// What the facts script prints, one `key=value` per line, plus the
/// capability lines of /proc/self/status.
const FACTS: &str = r#"
echo hostname=$(hostname)
echo etc_hostname=$(cat /etc/hostname)
echo pid=$$
echo uid=$(id -u)
grep -E '^(CapEff|CapPrm|CapBnd|CapInh|CapAmb|NoNewPrivs):' /proc/self/status
echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c)
echo timer_list=$(cat /proc/timer_list | wc -c)
echo interrupts=$(cat /proc/interrupts | wc -c)
echo firmware=$(ls /sys/firmware | wc -l)
touch /sys/berth-probe 2>/dev/null && echo sys=rw || echo sys=ro
(echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq=rw || echo sysrq=ro
(echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo procsys=rw || echo procsys=ro
echo acpi=$(ls /proc/acpi 2>/dev/null | wc -l)
echo nofile=$(ulimit -n)
echo procs=$(cd /proc && echo [0-9]*)
echo links=$(ip -o link show | cut -d: -f2 | cut -d@ -f1 | tr -d ' ' | sort | tr '\n' ,)
echo devnull=$(ls -l /dev/null | cut -c1-10)
echo done
"#;

#[test]
fn a_root_container_gets_its_namespaces_and_containerds_restrictions() {
    let fx = Fixture::new();
    let netns = Netns::unique("bB-rt").expect("netns");
    netns.ip(&["link", "add", "bbpod0", "type", "veth", "peer", "name", "bbpod1"]).expect("links in the pod netns");
    let mut spec = fx.spec("facts", &["sh", "-c", FACTS]);
    spec.netns = Some(netns.path());
    let c = fx.start(spec);
    let exit = c.wait();
    let out = c.output();
    assert_eq!(exit.exit_code, 0, "{out}");
    assert_eq!(field(&out, "hostname"), "facts");
    assert_eq!(field(&out, "etc_hostname"), "facts");
    assert_eq!(field(&out, "pid"), "1", "PID 1 of its own PID namespace");
    assert_eq!(field(&out, "uid"), "0");
    assert_eq!(field(&out, "CapEff"), "00000000a80425fb", "containerd's default set");
    assert_eq!(field(&out, "CapPrm"), "00000000a80425fb");
    assert_eq!(field(&out, "CapBnd"), "00000000a80425fb");
    assert_eq!(field(&out, "CapInh"), "0000000000000000");
    assert_eq!(field(&out, "CapAmb"), "0000000000000000");
    assert_eq!(field(&out, "NoNewPrivs"), "1");
    // Masked files read empty; this kernel may lack /proc/kcore, whose
    // absence reads empty too.
    assert!(std::fs::metadata("/proc/timer_list").unwrap().len() == 0, "procfs sizes are 0");
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty(), "the host's /proc/timer_list has content");
    assert_eq!(field(&out, "timer_list"), "0", "/proc/timer_list is masked");
    assert_eq!(field(&out, "interrupts"), "0", "/proc/interrupts is masked");
    assert_eq!(field(&out, "kcore"), "0", "/proc/kcore is masked (or absent)");
    assert_eq!(field(&out, "firmware"), "0", "/sys/firmware is masked");
    assert_eq!(field(&out, "sys"), "ro");
    assert_eq!(field(&out, "sysrq"), "ro");
    assert_eq!(field(&out, "procsys"), "ro");
    assert_eq!(field(&out, "acpi"), "0");
    // containerd's 1048576, or the host's hard limit where raising it is
    // not allowed (no CAP_SYS_RESOURCE).
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_sys_resource = u64::from_str_radix(field(&own, "CapEff"), 16).unwrap() & (1 << 24) != 0;
    let nofile = if cap_sys_resource { 1_048_576 } else { hard.min(1_048_576) };
    assert_eq!(field(&out, "nofile"), nofile.to_string());
    // PID 1 and the short-lived helpers of the script: nothing of the
    // host's.
    let pids: Vec<u32> = field(&out, "procs").split(' ').map(|p| p.parse().unwrap()).collect();
    assert!(pids[0] == 1 && pids.len() <= 5 && pids.iter().all(|&p| p < 100), "its own PID namespace: {pids:?}");
    assert_eq!(field(&out, "links"), "bbpod0,bbpod1,lo,", "the pod's network namespace");
    assert_eq!(field(&out, "devnull"), "crw-rw-rw-");
}

#[test]
fn a_non_root_container_has_no_effective_capabilities_and_its_own_netns_by_default() {
    let fx = Fixture::new();
    let script = format!("{FACTS}\ntouch /root/x 2>/dev/null && echo root=rw || echo root=denied\nexec sleep 600");
    let mut spec = fx.spec("nobody", &["sh", "-c", &script]);
    (spec.uid, spec.gid, spec.additional_gids) = (65534, 65534, vec![5]);
    let c = fx.start(spec);
    c.wait_for_output("stdout F root=");
    let out = c.output();
    assert_eq!(field(&out, "uid"), "65534");
    assert_eq!(field(&out, "CapEff"), "0000000000000000");
    assert_eq!(field(&out, "CapPrm"), "0000000000000000");
    assert_eq!(field(&out, "CapBnd"), "00000000a80425fb");
    assert_eq!(field(&out, "NoNewPrivs"), "1");
    assert_eq!(field(&out, "root"), "denied");
    assert_eq!(field(&out, "links"), "lo,", "a new, empty network namespace");

    // exec runs as the container's user too.
    assert_eq!(c.exec_ok(&["id"]), "uid=65534(nobody) gid=65534(nogroup) groups=5(tty)\n");
    let status = c.exec_ok(&["cat", "/proc/self/status"]);
    assert_eq!(field(&status, "CapEff"), "0000000000000000");
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    fx.runtime.kill_all(&c.spec.cgroup).unwrap();
    assert_eq!(c.wait().exit_code, 137);
}

#[test]
fn exec_joins_the_containers_cgroup_and_namespaces() {
    let fx = Fixture::new();
    let c = fx.start(fx.spec("exec", &["sleep", "600"]));
    let want = fx.root.path_of(&c.spec);
    let ours = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| {
                ["cpu", "cpuacct", "memory", "pids", "freezer", ""].contains(&l.split(':').nth(1).unwrap_or("-"))
            })
            .map(str::to_owned)
            .collect()
    };
    let init = std::fs::read_to_string(format!("/proc/{}/cgroup", c.started.pid)).unwrap();
    let init_ours = ours(&init);
    assert!(!init_ours.is_empty(), "{init}");
    for line in &init_ours {
        if !line.starts_with("0::") {
            assert!(line.ends_with(&format!(":{want}")), "PID 1 in {line}, want {want}");
        }
    }
    assert_eq!(ours(&c.exec_ok(&["cat", "/proc/self/cgroup"])), init_ours, "exec in PID 1's cgroups");
    assert_eq!(c.exec_ok(&["hostname"]), "exec\n");
    assert_eq!(c.exec_ok(&["cat", "/proc/1/cmdline"]), "sleep\x00600\x00", "PID 1 of its PID namespace");
    let status = c.exec_ok(&["cat", "/proc/self/status"]);
    assert_eq!(field(&status, "CapEff"), "00000000a80425fb");
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(c.exec_ok(&["sh", "-c", "echo $HOSTNAME"]), "exec\n", "the container's environment");

    let out = c.exec(&["sh", "-c", "echo partial; echo oops >&2; exit 7"], Duration::from_secs(10)).unwrap();
    assert_eq!((out.exit_code, out.signal, out.timed_out), (Some(7), None, false));
    assert_eq!((&out.stdout[..], &out.stderr[..]), (&b"partial\n"[..], &b"oops\n"[..]));

    let began = Instant::now();
    let out = c.exec(&["sh", "-c", "sleep 30; echo never"], Duration::from_millis(300)).unwrap();
    assert!(out.timed_out && out.signal == Some(9) && out.stdout.is_empty(), "{out:?}");
    assert!(began.elapsed() < Duration::from_secs(5), "killed at the timeout, took {:?}", began.elapsed());

    let out = c.exec(&["sh", "-c", "yes | head -c 200000"], Duration::from_secs(10)).unwrap();
    assert_eq!(out.stdout.len(), berth_agent::runtime::EXEC_OUTPUT_LIMIT, "output is bounded");

    let err = c.exec(&["/bin/nope"], Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().contains("exec /bin/nope: No such file or directory"), "{err}");

    // Only PID 1 is left: the exec'd processes were reaped.
    assert_eq!(fx.root.driver.procs(&c.spec.cgroup).unwrap(), vec![c.started.pid]);
    fx.runtime.kill_all(&c.spec.cgroup).unwrap();
    let exit = c.wait();
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (137, Some(9), false));
    let err = c.exec(&["true"], Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().contains("is not running"), "{err}");
}

#[test]
fn a_memory_limit_ends_in_an_oom_kill() {
    let fx = Fixture::new();
    let mut spec = fx.spec("oom", &["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]);
    spec.resources =
        Resources::from_kubernetes(&ResourceSpec { memory_limit_bytes: Some(32 << 20), ..ResourceSpec::default() });
    let c = fx.start(spec);
    let exit = c.wait();
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (137, Some(9), true), "{exit:?}");
}

#[test]
fn a_pids_limit_stops_a_fork_bomb_but_not_the_container() {
    let fx = Fixture::new();
    // busybox sh gives up at the first failed fork: the bomb ends, PID 1
    // goes on.
    let bomb = "sh -c 'while :; do sleep 600 & done'; echo bomb-ended; exec sleep 600";
    let mut spec = fx.spec("pids", &["sh", "-c", bomb]);
    spec.resources = Resources::from_kubernetes(&ResourceSpec { pids_limit: Some(20), ..ResourceSpec::default() });
    let c = fx.start(spec);
    c.wait_for_output("stdout F bomb-ended");
    let stats = fx.root.driver.stats(&c.spec.cgroup).unwrap();
    // PID 1 and the sleeps; the bomb's shell has exited.
    assert!((18..=20).contains(&stats.pids_current), "{stats:?}");
    assert!(c.log().contains("can't fork"), "forks beyond the limit fail:\n{}", c.log());
    assert!(matches!(fx.runtime.status(&c.spec.bundle).unwrap(), ContainerStatus::Running { .. }));
    assert_eq!(std::fs::read_to_string(format!("/proc/{}/comm", c.started.pid)).unwrap(), "sleep\n");
    fx.runtime.kill_all(&c.spec.cgroup).unwrap();
    assert!(fx.root.driver.procs(&c.spec.cgroup).unwrap().is_empty());
    assert_eq!(c.wait().exit_code, 137);
}

#[test]
fn a_cpu_quota_of_200m_holds_a_busy_loop_to_a_fifth_of_a_cpu() {
    let fx = Fixture::new();
    let mut spec = fx.spec("cpu", &["sh", "-c", "while :; do :; done"]);
    spec.resources =
        Resources::from_kubernetes(&ResourceSpec { cpu_limit: Some(MilliCpu(200)), ..ResourceSpec::default() });
    let c = fx.start(spec);
    std::thread::sleep(Duration::from_millis(300));
    let usage = || fx.root.driver.stats(&c.spec.cgroup).unwrap().cpu_usage_ns;
    let (u0, t0) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (u1, elapsed) = (usage(), t0.elapsed());
    let cpus = (u1 - u0) as f64 / elapsed.as_nanos() as f64;
    assert!((0.17..=0.23).contains(&cpus), "used {cpus:.3} CPUs, want 0.2 ± 15%");
}

#[test]
fn kill_all_leaves_the_cgroup_empty() {
    let fx = Fixture::new();
    let c = fx.start(fx.spec("killall", &["sh", "-c", "sleep 600 & sleep 600 & (sleep 600 &); echo up; sleep 600"]));
    c.wait_for_output("stdout F up");
    // Plus a process exec left behind in the background.
    let out = c.exec(&["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo bg"], Duration::from_secs(5)).unwrap();
    assert_eq!(out.stdout, b"bg\n");
    let procs = fx.root.driver.procs(&c.spec.cgroup).unwrap();
    assert!(procs.len() >= 5, "{procs:?}");
    fx.runtime.kill_all(&c.spec.cgroup).unwrap();
    assert_eq!(fx.root.driver.procs(&c.spec.cgroup).unwrap(), Vec::<u32>::new());
    let exit = c.wait();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    // The freezer (v1) is thawed again.
    if let Some(freezer) =
        fx.root.driver.dirs(&c.spec.cgroup).unwrap().iter().find(|d| d.join("freezer.state").exists())
    {
        assert_eq!(std::fs::read_to_string(freezer.join("freezer.state")).unwrap().trim(), "THAWED");
    }
}

#[test]
fn logs_are_readable_while_running_and_rotate_by_size() {
    let fx = Fixture::new();
    let script = "echo first; echo warn >&2; sleep 1; \
                  i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done; echo last; sleep 600";
    let mut spec = fx.spec("logs", &["sh", "-c", script]);
    spec.log.max_bytes = 4096;
    spec.log.max_files = 3;
    let c = fx.start(spec);
    c.wait_for_output("stdout F first");
    assert!(c.log().contains("stderr F warn"));
    c.wait_for_output("stdout F last");
    assert!(matches!(fx.runtime.status(&c.spec.bundle).unwrap(), ContainerStatus::Running { .. }));
    let file = |n: u32| {
        let mut p = c.spec.log.path.clone().into_os_string();
        if n > 0 {
            p.push(format!(".{n}"));
        }
        std::fs::read_to_string(PathBuf::from(p)).ok()
    };
    let files: Vec<String> = (0..3).map(|n| file(n).unwrap_or_else(|| panic!("log file .{n} missing"))).collect();
    assert_eq!(file(3), None, "at most 3 files");
    let mut numbers = Vec::new();
    for (n, text) in files.iter().enumerate() {
        assert!(text.len() <= 4096, "file {n} has {} bytes", text.len());
        for line in text.lines() {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "{line}");
            assert!(parts[0].len() == 30 && parts[0].ends_with('Z') && parts[0].as_bytes()[10] == b'T', "{line}");
            assert!(["stdout", "stderr"].contains(&parts[1]) && parts[2] == "F", "{line}");
            if let Some(i) = parts[3].strip_prefix("line-") {
                numbers.push((n, i.parse::<u32>().unwrap()));
            }
        }
    }
    // Newest file first: the numbers run on across the files, oldest last.
    numbers.sort_by_key(|&(n, i)| (std::cmp::Reverse(n), i));
    let seq: Vec<u32> = numbers.iter().map(|&(_, i)| i).collect();
    assert_eq!(seq.last(), Some(&399));
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1), "consecutive lines across rotated files");
    assert!(files[0].ends_with(" stdout F last\n"));
}

/// Not a test on its own: the process that starts a container for
/// [`the_shim_survives_the_process_that_started_it`] and is then killed.
#[test]
#[ignore = "helper process of the_shim_survives_the_process_that_started_it"]
fn helper_start_a_container_then_hang() {
    let Some(path) = std::env::var_os("BERTH_TEST_HELPER_SPEC") else { return };
    let (root_name, spec): (String, ContainerSpec) =
        serde_json::from_slice(&std::fs::read(path).unwrap()).expect("helper spec");
    let driver: Arc<dyn Driver> = Arc::from(cgroups::detect(&root_name).unwrap());
    let started = Runtime::new(driver, agent_bin()).start(&spec).unwrap();
    println!("STARTED {}", serde_json::to_string(&started).unwrap());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn the_shim_survives_the_process_that_started_it() {
    let fx = Fixture::new();
    let spec = fx.spec("survivor", &["sleep", "600"]);
    let helper_spec = fx.dir.path().join("helper-spec.json");
    std::fs::write(&helper_spec, serde_json::to_vec(&(&fx.root.name, &spec)).unwrap()).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper_start_a_container_then_hang", "--ignored", "--nocapture", "--test-threads=1"])
        .env("BERTH_TEST_HELPER_SPEC", &helper_spec)
        .env("BERTH_AGENT_BIN", agent_bin());
    let mut starter = ChildGuard::spawn(cmd, "starter", None).unwrap();
    let line = starter.wait_for_line(Stream::Stdout, "STARTED ", Duration::from_secs(20)).unwrap();
    // libtest may have printed the test's name on the same line.
    let json = line.split_once("STARTED ").map_or("", |(_, json)| json);
    let started: Started = serde_json::from_str(json).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let c = Container { fx: &fx, spec, started };
    starter.signal(Signal::SIGKILL).unwrap();
    starter.wait(Duration::from_secs(5)).unwrap();

    // The shim and the container outlive the starter.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", started.shim_pid)).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_ne!(ppid, starter.pid(), "the shim was reparented: {stat}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        fx.runtime.status(&c.spec.bundle).unwrap(),
        ContainerStatus::Running { pid: started.pid, shim_pid: started.shim_pid }
    );
    assert_eq!(c.exec_ok(&["hostname"]), "survivor\n");

    // SIGTERM is ignored by a PID 1 without a handler; SIGKILL is not.
    fx.runtime.signal(&c.spec.bundle, Signal::SIGKILL).unwrap();
    // This process is not the shim's parent: wait() goes through a pidfd.
    let exit = c.wait();
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (137, Some(9), false));
    assert!(c.spec.bundle.join("exit.json").exists());
    assert!(matches!(fx.runtime.signal(&c.spec.bundle, Signal::SIGKILL), Err(RuntimeError::NotRunning { .. })));
}

#[test]
fn v2_kill_all_uses_cgroup_kill_on_the_unified_tree() {
    require_root();
    let unified = berth_tests::mounts::find("cgroup2").expect("a cgroup2 mount");
    let name = unique_name("berth-test");
    let v2 = cgroups::V2Driver { root_name: name.clone(), root: unified.clone() };
    let rel = Path::new("k");
    // This host's cgroup2 tree has no controllers to enable, so the
    // directories are made by hand rather than with `create`.
    let dir = unified.join(&name).join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(dir.join("cgroup.kill").exists(), "cgroup.kill needs Linux 5.14");
    let mut child = Command::new("sleep").arg("600").spawn().unwrap();
    v2.add_process(rel, child.id()).unwrap();
    assert_eq!(v2.procs(rel).unwrap(), vec![child.id()]);
    v2.kill_all(rel).unwrap();
    assert_eq!(v2.procs(rel).unwrap(), Vec::<u32>::new());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    v2.remove(rel).unwrap();
    std::fs::remove_dir(unified.join(&name)).unwrap();
}
