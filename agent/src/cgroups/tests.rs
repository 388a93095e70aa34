#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::{fs, path::Path};

use super::*;

/// This machine's mountinfo (hybrid: v1 controllers, cpu and cpuacct apart,
/// plus the unified tree).
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn kubelet_formulas() {
    assert_eq!(milli_cpu_to_shares(MilliCpu(0)), 2);
    assert_eq!(milli_cpu_to_shares(MilliCpu(1)), 2);
    assert_eq!(milli_cpu_to_shares(MilliCpu(100)), 102);
    assert_eq!(milli_cpu_to_shares(MilliCpu(1000)), 1024);
    assert_eq!(milli_cpu_to_shares(MilliCpu(1_000_000)), MAX_SHARES);
    assert_eq!(milli_cpu_to_quota(MilliCpu(0), CFS_PERIOD_US), None);
    assert_eq!(milli_cpu_to_quota(MilliCpu(5), CFS_PERIOD_US), Some(MIN_QUOTA_US));
    assert_eq!(milli_cpu_to_quota(MilliCpu(250), CFS_PERIOD_US), Some(25_000));
    assert_eq!(milli_cpu_to_quota(MilliCpu(2000), CFS_PERIOD_US), Some(200_000));

    // A limit alone also sets the request; nothing set = best effort.
    let r = Resources::from_kubernetes(&ResourceSpec { cpu_limit: Some(MilliCpu(500)), ..ResourceSpec::default() });
    assert_eq!((r.cpu_shares, r.cfs_quota_us), (512, Some(50_000)));
    let r = Resources::from_kubernetes(&ResourceSpec::default());
    assert_eq!((r.cpu_shares, r.cfs_quota_us, r.memory_limit_bytes), (2, None, None));
}

#[test]
fn cpu_weight_follows_runc() {
    let w = |cpu_shares| Resources { cpu_shares, ..Resources::from_kubernetes(&ResourceSpec::default()) }.cpu_weight();
    assert_eq!(w(2), 1);
    assert_eq!(w(1024), 39);
    assert_eq!(w(MAX_SHARES), 10_000);
}

#[test]
fn mountinfo_finds_v1_hierarchies_and_the_unified_tree() {
    let v1 = V1Driver::from_mountinfo(HYBRID, Path::new("mountinfo")).unwrap();
    assert_eq!(v1.cpu, Path::new("/sys/fs/cgroup/cpu"));
    assert_eq!(v1.cpuacct, Path::new("/sys/fs/cgroup/cpuacct"));
    assert_eq!(v1.pids, Path::new("/sys/fs/cgroup/pids"));
    let v2 = V2Driver::from_mountinfo(HYBRID, Path::new("mountinfo")).unwrap();
    assert_eq!(v2.root, Path::new("/sys/fs/cgroup/unified"));

    let comounted = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                     35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                     39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
    let v1 = V1Driver::from_mountinfo(comounted, Path::new("mountinfo")).unwrap();
    assert_eq!(v1.cpu, v1.cpuacct);
    assert_eq!(v1.hierarchies().len(), 3, "co-mounted controllers share one directory");

    let err = V1Driver::from_mountinfo("", Path::new("/proc/self/mountinfo")).unwrap_err();
    assert_eq!(err.to_string(), "no cgroup v1 hierarchy with the cpu controller in /proc/self/mountinfo");
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap()
}

/// A v1 driver over a fake cgroupfs: one directory per hierarchy, freezer
/// included.
fn fake_v1(root: &Path, root_name: &str) -> V1Driver {
    V1Driver {
        root_name: root_name.to_owned(),
        cpu: root.join("cpu"),
        cpuacct: root.join("cpuacct"),
        memory: root.join("memory"),
        pids: root.join("pids"),
        freezer: Some(root.join("freezer")),
    }
}

#[test]
fn v1_driver_writes_the_limits_into_each_hierarchy_of_a_fake_cgroupfs() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), DEFAULT_ROOT_NAME);
    let rel = Path::new("pods/uid-1/web");
    v1.create(rel).unwrap();
    let spec = ResourceSpec {
        cpu_request: Some(MilliCpu(250)),
        cpu_limit: Some(MilliCpu(500)),
        memory_limit_bytes: Some(64 << 20),
        pids_limit: Some(100),
    };
    v1.apply(rel, &Resources::from_kubernetes(&spec)).unwrap();
    let cpu = tmp.path().join("cpu/berth/pods/uid-1/web");
    assert_eq!(read(cpu.join("cpu.shares")), "256");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(tmp.path().join("memory/berth/pods/uid-1/web/memory.limit_in_bytes")), "67108864");
    assert_eq!(read(tmp.path().join("pids/berth/pods/uid-1/web/pids.max")), "100");
    assert!(tmp.path().join("cpuacct/berth/pods/uid-1/web").is_dir());

    v1.apply(rel, &Resources::from_kubernetes(&ResourceSpec::default())).unwrap();
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "-1", "no limit");
    assert_eq!(read(tmp.path().join("pids/berth/pods/uid-1/web/pids.max")), "max");

    // A real cgroupfs removes the interface files with the directory; the
    // fake needs them gone first.
    for dir in v1.dirs(rel).unwrap() {
        for f in fs::read_dir(&dir).unwrap() {
            fs::remove_file(f.unwrap().path()).unwrap();
        }
    }
    v1.remove(rel).unwrap();
    v1.remove(rel).unwrap();
    assert!(!cpu.exists());
    assert!(tmp.path().join("cpu/berth/pods/uid-1").is_dir(), "only the named cgroup goes");
}

#[test]
fn v2_driver_enables_controllers_down_the_path_and_writes_unified_files() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = V2Driver { root_name: DEFAULT_ROOT_NAME.to_owned(), root: tmp.path().to_owned() };
    let rel = Path::new("pods/uid-1");
    v2.create(rel).unwrap();
    assert_eq!(read(tmp.path().join("berth/cgroup.subtree_control")), "+cpu +memory +pids");
    assert_eq!(read(tmp.path().join("berth/pods/cgroup.subtree_control")), "+cpu +memory +pids");
    let spec =
        ResourceSpec { cpu_limit: Some(MilliCpu(1500)), memory_limit_bytes: Some(1 << 30), ..ResourceSpec::default() };
    v2.apply(rel, &Resources::from_kubernetes(&spec)).unwrap();
    let dir = tmp.path().join("berth/pods/uid-1");
    assert_eq!(read(dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(dir.join("cpu.weight")), "59");
    assert_eq!(read(dir.join("memory.max")), "1073741824");
    assert_eq!(read(dir.join("pids.max")), "max");
}

#[test]
fn paths_outside_the_berth_root_are_refused_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = V2Driver { root_name: DEFAULT_ROOT_NAME.to_owned(), root: tmp.path().to_owned() };
    for bad in ["../escape", "/abs", "pods/../../x", ""] {
        let err = v2.create(Path::new(bad)).unwrap_err();
        assert!(matches!(err, CgroupError::BadPath(_)), "{bad}: {err}");
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// A unified host: cgroup2 mounted at /sys/fs/cgroup itself.
const UNIFIED: &str = "\
30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn detect_picks_v1_on_hybrid_hosts_and_v2_on_unified_ones() {
    let mi = Path::new("mountinfo");
    let DriverConfig::V1(v1) = detect_from(HYBRID, mi, "berth-test-7", None).unwrap() else {
        panic!("hybrid host must get the v1 driver: its cgroup2 tree has no controllers");
    };
    assert_eq!(v1.root_name, "berth-test-7");
    assert_eq!(v1.freezer, None, "HYBRID mounts no freezer");
    assert_eq!(v1.dirs(Path::new("pods/a")).unwrap()[0], Path::new("/sys/fs/cgroup/cpu/berth-test-7/pods/a"));

    let DriverConfig::V2(v2) = detect_from(UNIFIED, mi, DEFAULT_ROOT_NAME, None).unwrap() else {
        panic!("unified host must get the v2 driver");
    };
    assert_eq!(v2.root, Path::new("/sys/fs/cgroup"));
    assert_eq!(v2.dirs(Path::new("p")).unwrap(), vec![Path::new("/sys/fs/cgroup/berth/p")]);

    let forced = detect_from(HYBRID, mi, "berth", Some(Version::V2)).unwrap();
    assert!(
        matches!(forced, DriverConfig::V2(V2Driver { ref root, .. }) if root == Path::new("/sys/fs/cgroup/unified"))
    );
    let err = detect_from(UNIFIED, mi, "berth", Some(Version::V1)).unwrap_err();
    assert!(matches!(err, CgroupError::MissingController { controller: "cpu", .. }), "{err}");

    for bad in ["", ".", "..", "a/b"] {
        let err = detect_from(HYBRID, mi, bad, None).unwrap_err();
        assert!(matches!(err, CgroupError::BadRootName(_)), "{bad:?}: {err}");
    }
}

#[test]
fn a_driver_round_trips_through_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), "berth-test-1");
    let json = serde_json::to_string(&v1.config()).unwrap();
    assert!(json.contains(r#""version":"v1""#), "{json}");
    let back: DriverConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, DriverConfig::V1(v1.clone()));
    let rebuilt = back.into_driver();
    assert_eq!(rebuilt.dirs(Path::new("x")).unwrap(), v1.dirs(Path::new("x")).unwrap());
}

#[test]
fn a_configured_root_name_is_used_in_every_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), "berth-test-42");
    let rel = Path::new("pods/uid-1/c");
    v1.create(rel).unwrap();
    for h in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        assert!(tmp.path().join(h).join("berth-test-42/pods/uid-1/c").is_dir(), "{h}");
        assert!(!tmp.path().join(h).join(DEFAULT_ROOT_NAME).exists(), "{h}: default root untouched");
    }
    let v2 = V2Driver { root_name: "berth-test-42".to_owned(), root: tmp.path().join("unified") };
    v2.create(Path::new("p")).unwrap();
    assert!(tmp.path().join("unified/berth-test-42/p").is_dir());
}

#[test]
fn add_process_writes_the_pid_into_every_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), "b");
    let rel = Path::new("pods/u/c");
    v1.create(rel).unwrap();
    v1.add_process(rel, 4242).unwrap();
    for dir in v1.dirs(rel).unwrap() {
        assert_eq!(read(dir.join("cgroup.procs")), "4242", "{}", dir.display());
    }
    let v2 = V2Driver { root_name: "b".to_owned(), root: tmp.path().join("unified") };
    v2.create(rel).unwrap();
    v2.add_process(rel, 0).unwrap();
    assert_eq!(read(tmp.path().join("unified/b/pods/u/c/cgroup.procs")), "0");
    assert!(v1.add_process(Path::new("../x"), 1).is_err());
}

#[test]
fn procs_covers_descendants_and_every_hierarchy_and_a_missing_cgroup_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), "b");
    v1.create(Path::new("pod/c1")).unwrap();
    v1.create(Path::new("pod/c2")).unwrap();
    fs::write(tmp.path().join("pids/b/pod/cgroup.procs"), "").unwrap();
    fs::write(tmp.path().join("pids/b/pod/c1/cgroup.procs"), "10\n11\n").unwrap();
    fs::write(tmp.path().join("memory/b/pod/c2/cgroup.procs"), "12\n10\n").unwrap();
    assert_eq!(v1.procs(Path::new("pod")).unwrap(), vec![10, 11, 12]);
    assert_eq!(v1.procs(Path::new("pod/c2")).unwrap(), vec![10, 12]);
    assert_eq!(v1.procs(Path::new("nope")).unwrap(), Vec::<u32>::new());
}

#[test]
fn v1_stats_read_cadvisor_values_from_a_fake_cgroupfs() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), "b");
    let rel = Path::new("c");
    v1.create(rel).unwrap();
    let mem = tmp.path().join("memory/b/c");
    fs::write(tmp.path().join("cpuacct/b/c/cpuacct.usage"), "123456789\n").unwrap();
    fs::write(mem.join("memory.usage_in_bytes"), "10485760\n").unwrap();
    fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
    fs::write(mem.join("memory.stat"), "cache 0\ninactive_file 1\ntotal_inactive_file 4194304\n").unwrap();
    fs::write(mem.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
    fs::write(tmp.path().join("pids/b/c/pids.current"), "3\n").unwrap();
    let s = v1.stats(rel).unwrap();
    assert_eq!(
        s,
        CgroupStats {
            cpu_usage_ns: 123_456_789,
            memory_usage_bytes: 10 << 20,
            memory_working_set_bytes: 6 << 20,
            memory_limit: None,
            oom_kill_count: 2,
            pids_current: 3,
        }
    );
    fs::write(mem.join("memory.limit_in_bytes"), "67108864\n").unwrap();
    fs::write(mem.join("memory.stat"), "total_inactive_file 99999999999\n").unwrap();
    let s = v1.stats(rel).unwrap();
    assert_eq!((s.memory_limit, s.memory_working_set_bytes), (Some(64 << 20), 0), "working set floors at 0");

    fs::write(mem.join("memory.oom_control"), "oom_kill_disable 0\n").unwrap();
    let err = v1.stats(rel).unwrap_err();
    assert!(err.to_string().ends_with("memory.oom_control: no `oom_kill` line"), "{err}");
}

#[test]
fn v2_stats_read_cadvisor_values_from_a_fake_cgroupfs() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = V2Driver { root_name: "b".to_owned(), root: tmp.path().to_owned() };
    let rel = Path::new("c");
    v2.create(rel).unwrap();
    let dir = tmp.path().join("b/c");
    fs::write(dir.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n").unwrap();
    fs::write(dir.join("memory.current"), "8192\n").unwrap();
    fs::write(dir.join("memory.max"), "max\n").unwrap();
    fs::write(dir.join("memory.stat"), "anon 4096\ninactive_file 4096\n").unwrap();
    fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n").unwrap();
    fs::write(dir.join("pids.current"), "1\n").unwrap();
    let s = v2.stats(rel).unwrap();
    assert_eq!(
        s,
        CgroupStats {
            cpu_usage_ns: 2_500_000,
            memory_usage_bytes: 8192,
            memory_working_set_bytes: 4096,
            memory_limit: None,
            oom_kill_count: 1,
            pids_current: 1,
        }
    );
    fs::write(dir.join("memory.max"), "1048576\n").unwrap();
    assert_eq!(v2.stats(rel).unwrap().memory_limit, Some(1 << 20));
}

#[test]
fn v1_kill_all_freezes_kills_and_thaws() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = fake_v1(tmp.path(), "b");
    let rel = Path::new("c");
    v1.create(rel).unwrap();
    let freezer = tmp.path().join("freezer/b/c");
    fs::write(freezer.join("freezer.state"), "THAWED\n").unwrap();
    // Empty: nothing to freeze.
    v1.kill_all(rel).unwrap();
    assert_eq!(read(freezer.join("freezer.state")), "THAWED\n");

    // A real child of this test stands in for a container process; the
    // fake cgroup.procs empties once it has been killed and reaped.
    let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let procs = tmp.path().join("pids/b/c/cgroup.procs");
    fs::write(&procs, format!("{}\n", child.id())).unwrap();
    let reaper = std::thread::spawn(move || {
        let status = child.wait().unwrap();
        fs::write(&procs, "").unwrap();
        status
    });
    v1.kill_all(rel).unwrap();
    let status = reaper.join().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(read(freezer.join("freezer.state")), "THAWED", "thawed after the kill");
}

#[test]
fn v2_kill_all_writes_cgroup_kill_until_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = V2Driver { root_name: "b".to_owned(), root: tmp.path().to_owned() };
    let rel = Path::new("c");
    v2.create(rel).unwrap();
    let dir = tmp.path().join("b/c");
    fs::write(dir.join("cgroup.kill"), "").unwrap();
    // A PID that is only text in a fake file: cgroup.kill means no signal
    // is sent by berth itself.
    fs::write(dir.join("cgroup.procs"), "4000000\n").unwrap();
    let procs = dir.join("cgroup.procs");
    let emptier = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::write(procs, "").unwrap();
    });
    v2.kill_all(rel).unwrap();
    emptier.join().unwrap();
    assert_eq!(read(dir.join("cgroup.kill")), "1");
    v2.kill_all(Path::new("missing")).unwrap();
}

#[test]
fn remove_takes_descendants_deepest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = V2Driver { root_name: "b".to_owned(), root: tmp.path().to_owned() };
    v2.create(Path::new("pod/c1")).unwrap();
    v2.create(Path::new("pod/c2")).unwrap();
    // Fake interface files are plain files; a real cgroupfs drops them
    // with the directory.
    for d in ["b/pod", "b/pod/c1", "b/pod/c2"] {
        let _ = fs::remove_file(tmp.path().join(d).join("cgroup.subtree_control"));
    }
    v2.remove(Path::new("pod")).unwrap();
    assert!(!tmp.path().join("b/pod").exists());
    assert!(tmp.path().join("b").is_dir());
}
