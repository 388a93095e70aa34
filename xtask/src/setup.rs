//! `cargo xtask setup`: the system packages and kernel state berth needs.
//!
//! # Design
//! A fresh CI machine has none of the packages, a developer's machine usually
//! has all of them: check with dpkg-query first and touch the network
//! (`apt-get update`, `apt-get install`) only for what is missing, so the
//! common case is fast and offline.
//!
//! # Limitations
//! Debian/Ubuntu only (apt-get, dpkg-query). Does not mount cgroup2: a host
//! without one needs its init system changed, which is not ours to do.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::process::{self, is_root, show};

/// Every Debian package a build, the tests, `up` or the benchmarks use.
const PACKAGES: &[&str] = &[
    // BPF objects (build.rs) and bindgen's libclang (codegen).
    "clang-19",
    "llvm-19",
    "libclang-19-dev",
    "libbpf-dev",
    // <linux/types.h>, <asm/types.h> for abi.h and the programs.
    "linux-libc-dev",
    // Inspecting loaded programs and maps when a test fails.
    "bpftool",
    // Namespaces, veths, routes and offloads in tests and the pod network.
    "iproute2",
    "ethtool",
    // Comparison peers (kube-proxy's iptables/nftables modes, haproxy) and
    // load generation for benchmarks.
    "iptables",
    "nftables",
    "wrk",
    "haproxy",
    "tcpdump",
    // ps, sysctl (procps) and fuser (psmisc): process and socket checks in
    // tests.
    "procps",
    "psmisc",
    // The control plane: protoc for etcd-client's generated gRPC code
    // (build.rs), and a real etcd server for the etcd store's tests.
    "protobuf-compiler",
    "etcd-server",
    // The test image: its /bin/busybox is the statically linked one from
    // busybox-static (`cargo xtask test-image`). runc: the reference runtime
    // for differential tests of berth's own (never a dependency).
    "busybox-static",
    "runc",
];

const BPFFS: &str = "/sys/fs/bpf";

pub fn run() -> anyhow::Result<()> {
    install_packages()?;
    check_kernel()?;
    Ok(())
}

fn install_packages() -> anyhow::Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        eprintln!("[xtask] setup: all {} system packages installed", PACKAGES.len());
        return Ok(());
    }
    let install_line = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing system packages: {}\n\
             run `sudo cargo xtask setup`, or as root:\n    \
             apt-get update && DEBIAN_FRONTEND=noninteractive {install_line}",
            missing.join(" ")
        );
    }
    eprintln!("[xtask] setup: installing {}", missing.join(" "));
    // The package lists are stale or absent on a fresh machine; update only
    // here, when something is missing, so the fast path needs no network.
    process::run(apt_get().args(["-q", "update"]))?;
    process::run(apt_get().args(["install", "-y", "--no-install-recommends"]).args(&missing))?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!("apt-get install returned success but these are still not installed: {}", still.join(" "));
    }
    Ok(())
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    // No debconf prompts: CI has no stdin.
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Packages from [`PACKAGES`] whose dpkg status is not "install ok installed".
fn missing_packages() -> anyhow::Result<Vec<&'static str>> {
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["-W", "-f=${Package} ${Status}\\n"]).args(PACKAGES);
    let output = cmd.output().with_context(|| {
        format!(
            "running `{}`: setup supports Debian/Ubuntu only; elsewhere install the equivalents of: {}",
            show(&cmd),
            PACKAGES.join(" ")
        )
    })?;
    // dpkg-query exits 1 when any name is unknown to it, which is exactly
    // "missing": read stdout whatever the exit code.
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(PACKAGES.iter().copied().filter(|pkg| !is_installed(&stdout, pkg)).collect())
}

fn is_installed(dpkg_output: &str, pkg: &str) -> bool {
    dpkg_output.lines().any(|line| {
        line.split_once(' ').is_some_and(|(name, status)| name == pkg && status.trim() == "install ok installed")
    })
}

fn check_kernel() -> anyhow::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = parse_mountinfo(&mountinfo);

    if mounts.iter().any(|m| m.fstype == "bpf" && m.point == Path::new(BPFFS)) {
        eprintln!("[xtask] setup: bpffs mounted at {BPFFS}");
    } else {
        if !is_root() {
            bail!(
                "bpffs is not mounted at {BPFFS} (berth pins its maps and links there).\n\
                 run `sudo cargo xtask setup`, or as root: mount -t bpf bpf {BPFFS}"
            );
        }
        eprintln!("[xtask] setup: mounting bpffs at {BPFFS}");
        std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
        process::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])).with_context(|| {
            format!("bpffs is not mounted at {BPFFS} and mounting it failed (kernel without CONFIG_BPF_SYSCALL?)")
        })?;
    }

    match mounts.iter().find(|m| m.fstype == "cgroup2") {
        Some(m) => eprintln!("[xtask] setup: cgroup2 mounted at {}", m.point.display()),
        None => bail!(
            "no cgroup2 mount in /proc/self/mountinfo: berth's socket load balancer attaches to a \
             cgroup2 directory. Boot with a cgroup2 hierarchy (systemd does this by default, unified \
             or hybrid), or mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`"
        ),
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    fstype: String,
}

/// Mount points and filesystem types from /proc/self/mountinfo (see proc(5)):
/// `id parent maj:min root point options [optional...] - fstype source super`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some(Mount { point: PathBuf::from(unescape_octal(point)), fstype: fstype.to_owned() })
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount points as
/// `\ooo` octal escapes.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escaped {
            Some(d) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bpffs_and_cgroup2() {
        let text = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev shared:10 - cgroup2 cgroup2 rw,nsdelegate
40 25 0:35 / /sys/fs/bpf rw,nosuid master:1 - bpf bpf rw,mode=700
41 30 0:36 / /mnt/with\\040space rw - tmpfs tmpfs rw
";
        let mounts = parse_mountinfo(text);
        assert!(mounts.contains(&Mount { point: "/sys/fs/bpf".into(), fstype: "bpf".into() }));
        assert!(mounts.contains(&Mount { point: "/sys/fs/cgroup/unified".into(), fstype: "cgroup2".into() }));
        assert!(mounts.contains(&Mount { point: "/mnt/with space".into(), fstype: "tmpfs".into() }));
    }

    #[test]
    fn reads_dpkg_status() {
        let out = "clang-19 install ok installed\nwrk deinstall ok config-files\n";
        assert!(is_installed(out, "clang-19"));
        assert!(!is_installed(out, "wrk"));
        assert!(!is_installed(out, "haproxy"));
    }
}
