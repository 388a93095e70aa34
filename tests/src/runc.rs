//! Running Debian's runc beside berth (the differential test, the pods
//! benchmark): containerd's defaults for a runc bundle, finding runc, and
//! removing a cgroup root both runtimes' containers lived under.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

/// containerd 1.x's (and Docker's) default capabilities.
pub const CONTAINERD_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
/// containerd's default `maskedPaths` (`pkg/oci/spec.go`).
pub const CONTAINERD_MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];
/// containerd's default `readonlyPaths`.
pub const CONTAINERD_READONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Debian's runc: `BERTH_RUNC`, else `/usr/sbin/runc`, else `runc` in PATH.
///
/// # Errors
/// None of them answers `--version`; the error says what each answered.
pub fn runc_bin() -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("BERTH_RUNC") {
        Some(p) => vec![p.into()],
        None => vec!["/usr/sbin/runc".into(), "runc".into()],
    };
    let mut tried = Vec::new();
    for bin in candidates {
        match Command::new(&bin).arg("--version").output() {
            Ok(out) if out.status.success() => return Ok(bin),
            Ok(out) => {
                tried.push(format!("{}: {} {}", bin.display(), out.status, String::from_utf8_lossy(&out.stderr)))
            }
            Err(e) => tried.push(format!("{}: {e}", bin.display())),
        }
    }
    bail!("runc not found ({}); `cargo xtask setup` installs Debian's runc, or set BERTH_RUNC", tried.join("; "))
}

/// Kills whatever is left in the cgroup root `name` (only the caller's
/// containers live there) and removes it from every hierarchy, deepest
/// directory first, giving each directory up to `patience`. Failures are
/// printed, not returned: this is cleanup.
pub fn remove_cgroup_root(name: &str, patience: Duration) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let mounts = mountinfo.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fs_type = right.split(' ').next()?;
        let point = left.split(' ').nth(4)?;
        (fs_type == "cgroup" || fs_type == "cgroup2").then(|| PathBuf::from(point))
    });
    for mount in mounts {
        let top = mount.join(name);
        if !top.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        walk_dirs(&top, &mut dirs);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for dir in &dirs {
            let deadline = Instant::now() + patience;
            loop {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.split_whitespace().filter_map(|p| p.parse().ok()).collect();
                if pids.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in pids {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let deadline = Instant::now() + patience;
            while let Err(e) = fs::remove_dir(dir) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("cgroup cleanup: rmdir {}: {e}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_dirs(&e.path(), out);
            }
        }
    }
}
