//! Differential test: the same unpacked test image, with the same
//! Kubernetes resources, run by berth's runtime and by Debian's runc (the
//! reference OCI runtime), then compared: the cgroup limits each wrote and
//! what the container's PID 1 sees (capabilities, `no_new_privs`, user,
//! hostname, masked and read-only paths).
//!
//! runc gets the `config.json` containerd's CRI plugin would hand it for
//! this container: `linux.resources` with the values kubelet puts in the
//! CRI request (`cpu.shares` from the request, CFS quota and period from
//! the limit, memory limit with memory+swap equal to it on cgroup v1, as
//! kubelet does without swap), containerd's default capabilities (the
//! 14-capability set of containerd 1.x and Docker), `noNewPrivileges`,
//! containerd's masked and read-only paths and default mounts, new
//! pid/ipc/uts/mount/network namespaces, and a `cgroupsPath` under this
//! test's own cgroup root. Its rootfs is an overlay with the image as the
//! read-only lower directory, as a snapshotter would mount it; berth mounts
//! its own overlay of the same directory.
//!
//! Any difference in the compared facts fails the test with a table of
//! both values; the table also lists observed differences that are not
//! enforced (mount points, rlimits, …) for the reader. A missing runc, test
//! image or agent binary fails loudly: never skipped.
//!
//! Cleanup (guards, also on panic): `runc delete -f`, berth's `kill_all` and
//! `remove`, the overlay unmounted, the cgroup root removed from every
//! hierarchy, the temp dir deleted.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use berth_agent::{
    cgroups::{self, Driver, MilliCpu, ResourceSpec, Resources},
    image::{Image, ImageStore},
    runtime::{ContainerSpec, LogConfig, Runtime},
};
use berth_tests::runc::{CONTAINERD_CAPS, CONTAINERD_MASKED, CONTAINERD_READONLY};
use berth_tests::{ChildGuard, agent_bin, require_root};

const MIB: u64 = 1024 * 1024;
/// The container's Kubernetes resources.
const CPU_REQUEST_M: u64 = 250;
const CPU_LIMIT_M: u64 = 500;
const MEMORY_LIMIT: u64 = 64 * MIB;
const PIDS_LIMIT: u64 = 64;
/// What kubelet sends in the CRI request for those (its `helpers_linux.go`
/// formulas), which containerd copies into `linux.resources`.
const KUBELET_CPU_SHARES: u64 = CPU_REQUEST_M * 1024 / 1000;
const KUBELET_CFS_PERIOD: u64 = 100_000;
const KUBELET_CFS_QUOTA: u64 = CPU_LIMIT_M * KUBELET_CFS_PERIOD / 1000;

/// Masked by Docker (moby) and berth, not by containerd: observed, not
/// enforced.
const EXTRA_MASKED: [&str; 1] = ["/proc/interrupts"];

const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Debian's runc; a runc that does not answer `--version` fails the test
/// with why.
fn runc_bin() -> PathBuf {
    berth_tests::runc::runc_bin().unwrap_or_else(|e| {
        panic!("runc is needed for the differential test and does not run here: {e:#}. Refusing to skip.")
    })
}

/// The cgroup mounts of this host: (mount point, fs type, v1 controllers).
fn cgroup_mounts() -> Vec<(PathBuf, String, Vec<String>)> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut right = right.split(' ');
            let (fs_type, _source, opts) = (right.next()?, right.next()?, right.next()?);
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            let controllers = opts.split(',').filter(|o| !["rw", "ro"].contains(o)).map(str::to_owned).collect();
            Some((PathBuf::from(left.split(' ').nth(4)?), fs_type.to_owned(), controllers))
        })
        .collect()
}

/// This test's cgroup root (`berth-test-runc-PID`) in every hierarchy,
/// berth's and runc's containers both below it. On drop: whatever is left
/// inside is killed (only processes of this test live there) and every
/// directory removed, deepest first.
struct CgroupRoot {
    name: String,
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        berth_tests::runc::remove_cgroup_root(&self.name, Duration::from_secs(3));
    }
}

/// An overlay of the image on `target` in this process's mount namespace
/// (what a snapshotter hands runc), detached on drop.
struct Overlay {
    target: PathBuf,
}

impl Overlay {
    fn mount(image_rootfs: &Path, dir: &Path) -> Self {
        let (upper, work, target) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        for d in [&upper, &work, &target] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", image_rootfs.display(), upper.display(), work.display());
        nix::mount::mount(Some("overlay"), &target, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
            .unwrap_or_else(|e| panic!("mounting the overlay for runc on {} ({opts}): {e}", target.display()));
        Self { target }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("berth-tests: unmounting {}: {e}", self.target.display());
        }
    }
}

/// A container run by runc with its own state root; `runc delete -f` on
/// drop.
struct RuncContainer {
    runc: PathBuf,
    state_root: PathBuf,
    id: String,
    bundle: PathBuf,
}

impl RuncContainer {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.runc);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    /// `runc run -d`; the container's stdio go to a file in the bundle, so
    /// nothing waits on pipes the container keeps open.
    fn run(runc: PathBuf, state_root: PathBuf, id: String, bundle: PathBuf) -> Self {
        let c = Self { runc, state_root, id, bundle };
        let out_path = c.bundle.join("runc-run.log");
        let out = fs::File::create(&out_path).expect("runc log file");
        let mut cmd = c.command();
        cmd.arg("run")
            .arg("-d")
            .arg("--bundle")
            .arg(&c.bundle)
            .arg(&c.id)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for runc") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`runc run -d` did not return within 30 s: {}",
                    fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "runc cannot run a container on this host ({status}): {}\nconfig: {}",
            fs::read_to_string(&out_path).unwrap_or_default(),
            c.bundle.join("config.json").display()
        );
        c
    }

    fn pid(&self) -> u32 {
        let mut cmd = self.command();
        cmd.arg("state").arg(&self.id);
        let out = run_ok(cmd);
        let state: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("runc state: {e}: {out}"));
        assert_eq!(state["status"], "running", "runc container state: {out}");
        state["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).expect("pid in runc state")
    }

    fn exec(&self, argv: &[&str]) -> String {
        let mut cmd = self.command();
        cmd.arg("exec").arg(&self.id).args(argv);
        run_ok(cmd)
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let mut cmd = self.command();
        cmd.arg("delete").arg("-f").arg(&self.id);
        match ChildGuard::spawn(cmd, "runc delete -f", None).and_then(|c| c.finish(Duration::from_secs(20))) {
            Ok(f) if f.status.success() => {}
            Ok(f) => eprintln!("berth-tests: runc delete -f {}: {} {}", self.id, f.status, f.stderr.trim()),
            Err(e) => eprintln!("berth-tests: runc delete -f {}: {e:#}", self.id),
        }
    }
}

fn run_ok(cmd: Command) -> String {
    let line = format!("{cmd:?}");
    let finished = ChildGuard::spawn(cmd, line.clone(), None)
        .and_then(|c| c.finish(EXEC_TIMEOUT))
        .unwrap_or_else(|e| panic!("{line}: {e:#}"));
    assert!(finished.status.success(), "{line}: {}: {}", finished.status, finished.stderr.trim());
    finished.stdout
}

/// A container run by berth's runtime; killed and removed on drop.
struct BerthContainer {
    runtime: Runtime,
    spec: ContainerSpec,
    pid: u32,
}

impl BerthContainer {
    fn exec(&self, argv: &[&str]) -> String {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let out = self
            .runtime
            .exec(&self.spec.bundle, &argv, EXEC_TIMEOUT)
            .unwrap_or_else(|e| panic!("berth exec {argv:?}: {e}"));
        assert_eq!(out.exit_code, Some(0), "berth exec {argv:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

impl Drop for BerthContainer {
    fn drop(&mut self) {
        if let Err(e) = self.runtime.kill_all(&self.spec.cgroup) {
            eprintln!("berth-tests: kill_all {}: {e}", self.spec.id);
        }
        if let Err(e) = self.runtime.remove(&self.spec) {
            eprintln!("berth-tests: removing {}: {e}", self.spec.id);
        }
    }
}

/// The OCI config containerd's CRI plugin would write for this container.
fn runc_config(image: &Image, hostname: &str, cgroups_path: &str) -> serde_json::Value {
    let caps: Vec<&str> = CONTAINERD_CAPS.to_vec();
    let mut args = image.config.entrypoint.clone();
    args.extend(image.config.cmd.iter().cloned());
    let mut env = image.config.env.clone();
    env.push(format!("HOSTNAME={hostname}"));
    let cwd = if image.config.working_dir.is_empty() { "/".to_owned() } else { image.config.working_dir.clone() };
    serde_json::json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": hostname,
        // containerd's default mounts minus /run (the CRI plugin removes
        // it), plus the read-only cgroup mount the CRI plugin adds.
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
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "cpu": { "shares": KUBELET_CPU_SHARES, "quota": KUBELET_CFS_QUOTA, "period": KUBELET_CFS_PERIOD },
                // kubelet on cgroup v1 without swap: memory+swap = memory.
                "memory": { "limit": MEMORY_LIMIT, "swap": MEMORY_LIMIT },
                "pids": { "limit": PIDS_LIMIT }
            },
            "cgroupsPath": cgroups_path,
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "network" }
            ],
            "maskedPaths": CONTAINERD_MASKED,
            "readonlyPaths": CONTAINERD_READONLY
        }
    })
}

/// The interface files compared, per cgroup version: (controller, file).
const V1_FILES: [(&str, &str); 6] = [
    ("cpu", "cpu.shares"),
    ("cpu", "cpu.cfs_quota_us"),
    ("cpu", "cpu.cfs_period_us"),
    ("memory", "memory.limit_in_bytes"),
    ("memory", "memory.memsw.limit_in_bytes"),
    ("pids", "pids.max"),
];
const V2_FILES: [&str; 5] = ["cpu.weight", "cpu.max", "memory.max", "memory.swap.max", "pids.max"];

/// The values of the compared cgroup files of `pid`'s cgroups, found from
/// `/proc/<pid>/cgroup` and this host's mounts, independently of either
/// runtime's idea of where they are. Also returns the cgroup paths (for the
/// reader).
fn cgroup_values(pid: u32) -> (BTreeMap<String, String>, Vec<String>) {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("/proc/PID/cgroup");
    let mounts = cgroup_mounts();
    let mut values = BTreeMap::new();
    let mut paths = Vec::new();
    let v1: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers, path))
        })
        .filter(|(c, _)| !c.is_empty())
        .flat_map(|(cs, p)| cs.split(',').map(move |c| (c, p)))
        .collect();
    let read = |path: PathBuf| match fs::read_to_string(&path) {
        Ok(s) => s.trim().to_owned(),
        Err(e) => format!("<{}: {e}>", path.display()),
    };
    if v1.contains_key("cpu") {
        for (controller, file) in V1_FILES {
            let Some(path) = v1.get(controller) else {
                values.insert(format!("cgroup {file}"), format!("<not in a {controller} cgroup>"));
                continue;
            };
            let Some((mount, _, _)) =
                mounts.iter().find(|(_, t, cs)| t == "cgroup" && cs.iter().any(|c| c == controller))
            else {
                values.insert(format!("cgroup {file}"), format!("<no {controller} hierarchy mounted>"));
                continue;
            };
            let dir = mount.join(path.trim_start_matches('/'));
            if controller == "memory" && file.contains("memsw") && !dir.join(file).exists() {
                continue; // no swap accounting on this host
            }
            paths.push(format!("{controller}: {path}"));
            values.insert(format!("cgroup {file}"), read(dir.join(file)));
        }
    } else {
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).expect("a v2 cgroup line");
        let (mount, _, _) = mounts.iter().find(|(_, t, _)| t == "cgroup2").expect("a cgroup2 mount");
        let dir = mount.join(path.trim_start_matches('/'));
        paths.push(format!("unified: {path}"));
        for file in V2_FILES {
            values.insert(format!("cgroup {file}"), read(dir.join(file)));
        }
    }
    paths.dedup();
    (values, paths)
}

/// What the values must be on cgroup v1 (kubelet's numbers), to check that
/// runc applied the config it was given.
fn expected_v1() -> BTreeMap<String, String> {
    [
        ("cpu.shares", KUBELET_CPU_SHARES.to_string()),
        ("cpu.cfs_quota_us", KUBELET_CFS_QUOTA.to_string()),
        ("cpu.cfs_period_us", KUBELET_CFS_PERIOD.to_string()),
        ("memory.limit_in_bytes", MEMORY_LIMIT.to_string()),
        ("memory.memsw.limit_in_bytes", MEMORY_LIMIT.to_string()),
        ("pids.max", PIDS_LIMIT.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("cgroup {k}"), v))
    .collect()
}

/// The shell script run inside both containers; one `key=value` per line.
fn facts_script() -> String {
    let mut masked: Vec<&str> = CONTAINERD_MASKED.to_vec();
    masked.extend(EXTRA_MASKED);
    let mut s = String::from(
        r#"
echo "hostname=$(hostname)"
echo "proc_hostname=$(cat /proc/sys/kernel/hostname)"
echo "etc_hostname=$(cat /etc/hostname 2>/dev/null || echo '<none>')"
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/1/status
echo "sys_write=$(touch /sys/berth-probe 2>&1 && echo ok || true)"
# Writes back the value already there: harmless even if it succeeded.
v=$(cat /proc/sys/kernel/printk_ratelimit)
echo "proc_sys_write=$( (echo "$v" > /proc/sys/kernel/printk_ratelimit) 2>&1 && echo ok || true)"
echo "nofile=$(grep 'Max open files' /proc/1/limits | sed 's/  */ /g')"
echo "oom_score_adj=$(cat /proc/1/oom_score_adj)"
echo "links=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,)"
echo "dev=$(ls /dev | sort | tr '\n' ,)"
"#,
    );
    for p in masked {
        let _ = writeln!(
            s,
            r#"if [ ! -e {p} ]; then echo "masked {p}=absent"; elif [ -c {p} ]; then echo "masked {p}=char $(stat -c %t:%T {p})"; elif [ -d {p} ]; then echo "masked {p}=dir, $(ls -A {p} | wc -l) entries"; else echo "masked {p}=file, visible"; fi"#
        );
    }
    s
}

/// `key=value` (or `/proc/PID/status`'s `Key:\tvalue`) lines, plus the per-mount options of the compared mount
/// points and the set of mount points from `/proc/1/mountinfo`.
fn facts(script_out: &str, mountinfo: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut f: BTreeMap<String, String> = script_out
        .lines()
        .filter_map(|l| l.split_once('=').or_else(|| l.split_once(':')))
        .map(|(k, v)| (k.trim().to_owned(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    // The topmost mount at each mount point: (per-mount options, fs type).
    let mut mounts: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(point), Some(opts)) = (fields.get(4), fields.get(5)) else { continue };
        let fs_type = right.split(' ').next().unwrap_or("?");
        mounts.insert((*point).to_owned(), ((*opts).to_owned(), fs_type.to_owned()));
    }
    let ro = |point: &str| match mounts.get(point) {
        Some((opts, _)) => {
            if opts.split(',').any(|o| o == "ro") { "read-only mount" } else { "read-write mount" }.to_owned()
        }
        None => "not a mount point".to_owned(),
    };
    f.insert("mount /sys".to_owned(), ro("/sys"));
    for p in CONTAINERD_READONLY {
        f.insert(format!("readonly {p}"), ro(p));
    }
    let points = mounts.iter().map(|(p, (_, t))| format!("{p} ({t})")).collect();
    (f, points)
}

/// One compared fact.
struct Row {
    fact: String,
    berth: String,
    runc: String,
    /// A difference fails the test.
    enforced: bool,
}

fn is_enforced(fact: &str) -> bool {
    fact.starts_with("cgroup ")
        || fact.starts_with("readonly ")
        || matches!(
            fact,
            "hostname"
                | "proc_hostname"
                | "Uid"
                | "Gid"
                | "Groups"
                | "CapInh"
                | "CapPrm"
                | "CapEff"
                | "CapBnd"
                | "CapAmb"
                | "NoNewPrivs"
                | "Seccomp"
                | "sys_write"
                | "proc_sys_write"
                | "mount /sys"
                | "links"
        )
        || CONTAINERD_MASKED.iter().any(|p| fact == format!("masked {p}"))
}

fn render(rows: &[Row]) -> String {
    let w0 = rows.iter().map(|r| r.fact.len()).max().unwrap_or(4).max(4);
    let w1 = rows.iter().map(|r| r.berth.len()).max().unwrap_or(5).clamp(5, 60);
    let mut out = format!("| {:w0$} | {:w1$} | runc | verdict |\n", "fact", "berth");
    for r in rows {
        let verdict = match (r.berth == r.runc, r.enforced) {
            (true, _) => "same",
            (false, true) => "DIFFERENT",
            (false, false) => "differs (not enforced)",
        };
        let _ = writeln!(out, "| {:w0$} | {:w1$} | {} | {verdict} |", r.fact, r.berth, r.runc);
    }
    out
}

#[test]
fn berth_and_runc_apply_the_same_limits_and_isolation_to_the_same_bundle() {
    require_root();
    let runc = runc_bin();
    let agent = agent_bin();
    let images = image_dir().join("berth-test");

    // Guards in drop order, last declared first: containers, overlay,
    // cgroup root, temp dir.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = CgroupRoot { name: format!("berth-test-runc-{}", std::process::id()) };
    let store = ImageStore::open(&dir.path().join("images")).expect("image cache");
    let image = store.import(&images, Some("latest")).expect("import the test image");
    let mut args = image.config.entrypoint.clone();
    args.extend(image.config.cmd.iter().cloned());
    assert!(!args.is_empty(), "the test image has an entrypoint: {:?}", image.config);

    // runc: overlay bundle, containerd's config, `runc run -d`.
    let runc_id = format!("berth-diff-{}", std::process::id());
    let runc_bundle = dir.path().join("runc-bundle");
    let overlay = Overlay::mount(&image.rootfs, &runc_bundle);
    let hostname = "differential";
    let config = runc_config(&image, hostname, &format!("/{}/runc/{runc_id}", root.name));
    fs::write(runc_bundle.join("config.json"), serde_json::to_vec_pretty(&config).expect("json")).expect("config.json");
    let state_root = dir.path().join("runc-state");
    let runc_c = RuncContainer::run(runc.clone(), state_root, runc_id, runc_bundle);
    let runc_pid = runc_c.pid();

    // berth: the same image directory, the same resources.
    let driver: Arc<dyn Driver> = Arc::from(cgroups::detect(&root.name).expect("detect the cgroup driver"));
    let runtime = Runtime::new(driver, agent);
    let resources = Resources::from_kubernetes(&ResourceSpec {
        cpu_request: Some(MilliCpu(CPU_REQUEST_M)),
        cpu_limit: Some(MilliCpu(CPU_LIMIT_M)),
        memory_limit_bytes: Some(MEMORY_LIMIT),
        pids_limit: Some(PIDS_LIMIT),
    });
    let id = format!("berth-diff-{}", std::process::id());
    let mut env = image.config.env.clone();
    env.push(format!("HOSTNAME={hostname}"));
    let spec = ContainerSpec {
        bundle: dir.path().join("berth-bundles").join(&id),
        image_rootfs: image.rootfs.clone(),
        args,
        env,
        cwd: if image.config.working_dir.is_empty() { "/".to_owned() } else { image.config.working_dir.clone() },
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        hostname: hostname.to_owned(),
        netns: None,
        cgroup: Path::new("pods").join(&id),
        resources,
        log: LogConfig { path: dir.path().join("logs").join(&id).join("0.log"), max_bytes: 1 << 20, max_files: 2 },
        id,
    };
    let started = match runtime.start(&spec) {
        Ok(s) => s,
        Err(e) => {
            let _ = runtime.remove(&spec);
            panic!("berth could not start the container: {e}");
        }
    };
    let berth_c = BerthContainer { runtime, spec, pid: started.pid };

    // Let both servers reach their listen loop: nothing compared depends
    // on it, but an init still setting up would be caught mid-way.
    std::thread::sleep(Duration::from_millis(200));

    let mut rows = Vec::new();
    let (berth_cg, berth_paths) = cgroup_values(berth_c.pid);
    let (runc_cg, runc_paths) = cgroup_values(runc_pid);
    let script = facts_script();
    let (berth_facts, berth_mounts) =
        facts(&berth_c.exec(&["sh", "-c", &script]), &berth_c.exec(&["cat", "/proc/1/mountinfo"]));
    let (runc_facts, runc_mounts) =
        facts(&runc_c.exec(&["sh", "-c", &script]), &runc_c.exec(&["cat", "/proc/1/mountinfo"]));

    let mut harness_errors = Vec::new();
    if runc_cg.contains_key("cgroup cpu.shares") {
        for (k, want) in expected_v1() {
            if let Some(got) = runc_cg.get(&k)
                && got != &want
            {
                harness_errors.push(format!("runc wrote {k} = {got}, its config asked for {want}"));
            }
        }
    }
    for (source, enforced) in [(&berth_cg, &runc_cg), (&berth_facts, &runc_facts)] {
        let keys: BTreeSet<&String> = source.keys().chain(enforced.keys()).collect();
        for k in keys {
            rows.push(Row {
                fact: k.clone(),
                berth: source.get(k).cloned().unwrap_or_else(|| "<missing>".to_owned()),
                runc: enforced.get(k).cloned().unwrap_or_else(|| "<missing>".to_owned()),
                enforced: is_enforced(k),
            });
        }
    }
    let only_berth: Vec<&String> = berth_mounts.difference(&runc_mounts).collect();
    let only_runc: Vec<&String> = runc_mounts.difference(&berth_mounts).collect();
    rows.push(Row {
        fact: "mount points only one side has".to_owned(),
        berth: format!("{only_berth:?}"),
        runc: format!("{only_runc:?}"),
        enforced: false,
    });

    let table = render(&rows);
    println!("berth cgroups: {berth_paths:?}\nrunc cgroups: {runc_paths:?}\n{table}\n(runc {})", runc.display());
    let different: Vec<&Row> = rows.iter().filter(|r| r.enforced && r.berth != r.runc).collect();
    assert!(
        harness_errors.is_empty(),
        "the runc side is not what kubelet + containerd would run:\n{harness_errors:#?}"
    );
    assert!(
        different.is_empty(),
        "berth and runc differ in {} enforced fact(s):\n{}\nfull table:\n{table}",
        different.len(),
        render(
            &different
                .into_iter()
                .map(|r| Row { fact: r.fact.clone(), berth: r.berth.clone(), runc: r.runc.clone(), enforced: true })
                .collect::<Vec<_>>()
        )
    );
    // Keep the guards alive until here, then drop them in order.
    drop(berth_c);
    drop(runc_c);
    drop(overlay);
    drop(root);
}
