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

#[test]
fn v1_driver_writes_the_limits_into_each_hierarchy_of_a_fake_cgroupfs() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = V1Driver {
        cpu: tmp.path().join("cpu"),
        cpuacct: tmp.path().join("cpuacct"),
        memory: tmp.path().join("memory"),
        pids: tmp.path().join("pids"),
    };
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
    let v2 = V2Driver { root: tmp.path().to_owned() };
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
    let v2 = V2Driver { root: tmp.path().to_owned() };
    for bad in ["../escape", "/abs", "pods/../../x", ""] {
        let err = v2.create(Path::new(bad)).unwrap_err();
        assert!(matches!(err, CgroupError::BadPath(_)), "{bad}: {err}");
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}
