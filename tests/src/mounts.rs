//! Finding filesystem mounts (cgroup2, bpffs) from `/proc/self/mountinfo`.
//!
//! # Design
//! Machines differ: cgroup2 may be at `/sys/fs/cgroup` (unified) or
//! `/sys/fs/cgroup/unified` (hybrid), so the mount point is looked up by
//! filesystem type instead of being hard-coded.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

/// The first mount point of filesystem type `fstype` (e.g. `cgroup2`,
/// `bpf`).
///
/// # Errors
/// If mountinfo cannot be read or has no such mount.
pub fn find(fstype: &str) -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    find_in(&info, fstype).ok_or_else(|| anyhow!("no {fstype} filesystem mounted (see /proc/self/mountinfo)"))
}

/// Parses mountinfo text; see proc(5): `ID PARENT MAJ:MIN ROOT MOUNTPOINT
/// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
pub fn find_in(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let ty = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (ty == fstype).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for space, etc.).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && let Some(v) = std::str::from_utf8(oct).ok().and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
40 25 0:35 / /sys/fs/bpf rw shared:14 - bpf bpf rw,mode=700
41 25 0:36 / /mnt/with\\040space rw - bpf bpf rw
";

    #[test]
    fn finds_by_type() {
        assert_eq!(find_in(SAMPLE, "cgroup2"), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(find_in(SAMPLE, "bpf"), Some(PathBuf::from("/sys/fs/bpf")));
        assert_eq!(find_in(SAMPLE, "xfs"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
