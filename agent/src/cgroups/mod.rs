//! cgroups for pods and containers: Kubernetes' resource formulas and one
//! driver interface over cgroup v1 (hybrid hosts) and the unified v2 tree.
//!
//! # Design
//! [`Resources::from_kubernetes`] turns a container's requests and limits
//! into kernel values with kubelet's formulas (`pkg/kubelet/cm/
//! helpers_linux.go`): `cpu.shares = max(2, milliCPU × 1024 / 1000)` from the
//! request, CFS quota `= milliCPU × period / 1000` (at least 1 ms) from the
//! limit with kubelet's 100 ms period, the memory limit in bytes, a pids
//! limit. [`Driver`] writes them: [`V1Driver`] into one hierarchy per
//! controller (found in `/proc/self/mountinfo`, so `cpu` and `cpuacct`
//! mounted apart, as on this machine, work), [`V2Driver`] into the unified
//! tree (`cpu.weight` converted from shares as runc does, `cpu.max`,
//! `memory.max`, `pids.max`). Both take their mount points as paths, so the
//! unit tests run against a fake cgroupfs in a temp dir.
//!
//! Everything lives under one berth root directory (`<mount>/berth/...` by
//! default, [`DEFAULT_ROOT_NAME`]; tests use their own name); nothing else is
//! touched. [`detect`] picks the driver the way runc and kubelet do: v2 when
//! `/sys/fs/cgroup` itself is a cgroup2 mount, v1 otherwise — also on hybrid
//! hosts, whose `/sys/fs/cgroup/unified` tree carries no controllers.
//!
//! Processes join with [`Driver::add_process`] (their PID into
//! `cgroup.procs` of every hierarchy). [`Driver::kill_all`] empties a cgroup
//! and its descendants: v2 writes `cgroup.kill` (Linux 5.14); v1 freezes the
//! cgroup with the freezer hierarchy when one is mounted, so the PIDs read
//! from `cgroup.procs` cannot exit, fork or be reused while they are being
//! SIGKILLed, then thaws, and repeats until nothing is left (bounded by
//! [`KILL_TIMEOUT`]). [`Driver::stats`] reads the usage cAdvisor exports,
//! with cAdvisor's working set (usage minus inactive file pages).
//!
//! A driver is plain data ([`DriverConfig`]): the runtime writes it into a
//! container's bundle so that the shim and the exec helper, separate
//! processes, use the very same mounts and root.
//!
//! # Limitations
//! - v1 without a freezer hierarchy kills without freezing: a process that
//!   forks in a tight loop is only caught by repeated rounds, and a PID read
//!   from `cgroup.procs` may be reused before the kill (a narrow window).
//! - v2 needs the `cpu`, `memory` and `pids` controllers enabled at the
//!   cgroup2 root (systemd does); berth enables them below its root only.
//! - No device-access restrictions (v1 `devices`, v2 device BPF programs).

mod v1;
mod v2;

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{errno::Errno, sys::signal::Signal, unistd::Pid};
use serde::{Deserialize, Serialize};

pub use v1::V1Driver;
pub use v2::V2Driver;

/// kubelet's CFS period (`cpu.cfs_period_us`), in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// kubelet's smallest quota (1 ms): smaller quotas starve the cgroup.
pub const MIN_QUOTA_US: u64 = 1_000;
/// The smallest and largest `cpu.shares` the kernel accepts.
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// The directory under every hierarchy that berth owns, unless configured
/// otherwise (see [`detect`]).
pub const DEFAULT_ROOT_NAME: &str = "berth";
/// The default root name under its historical name.
pub const BERTH_ROOT: &str = DEFAULT_ROOT_NAME;
/// How long [`Driver::kill_all`] keeps killing before it gives up.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variable that forces a driver (`v1` or `v2`) in [`detect`].
pub const DRIVER_ENV: &str = "BERTH_CGROUP_DRIVER";
/// v1 reports "no memory limit" as the largest page-aligned `i64`; anything
/// this large is unlimited.
const UNLIMITED_V1: u64 = 1 << 62;

/// Millicores (`500m` = 500), as Kubernetes counts CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MilliCpu(pub u64);

/// A container's requests and limits, already parsed from the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceSpec {
    pub cpu_request: Option<MilliCpu>,
    pub cpu_limit: Option<MilliCpu>,
    pub memory_limit_bytes: Option<u64>,
    pub pids_limit: Option<u64>,
}

/// What the kernel is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_shares: u64,
    /// `None` = no CPU limit.
    pub cfs_quota_us: Option<u64>,
    pub cfs_period_us: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids_limit: Option<u64>,
}

impl Resources {
    /// kubelet's formulas. Like kubelet, a limit without a request gets the
    /// limit as its request (the API server defaults it that way).
    pub fn from_kubernetes(spec: &ResourceSpec) -> Self {
        let request = spec.cpu_request.or(spec.cpu_limit);
        Self {
            cpu_shares: request.map_or(MIN_SHARES, milli_cpu_to_shares),
            cfs_quota_us: spec.cpu_limit.and_then(|l| milli_cpu_to_quota(l, CFS_PERIOD_US)),
            cfs_period_us: CFS_PERIOD_US,
            memory_limit_bytes: spec.memory_limit_bytes,
            pids_limit: spec.pids_limit,
        }
    }

    /// `cpu.weight` (1..=10000) for these shares, runc's conversion.
    pub fn cpu_weight(&self) -> u64 {
        let shares = self.cpu_shares.clamp(MIN_SHARES, MAX_SHARES);
        1 + ((shares - MIN_SHARES) * 9_999) / (MAX_SHARES - MIN_SHARES)
    }
}

/// kubelet's `MilliCPUToShares`.
pub fn milli_cpu_to_shares(m: MilliCpu) -> u64 {
    (m.0.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet's `MilliCPUToQuota`: `None` for 0 (no limit).
pub fn milli_cpu_to_quota(m: MilliCpu, period_us: u64) -> Option<u64> {
    if m.0 == 0 {
        return None;
    }
    Some((m.0.saturating_mul(period_us) / 1000).max(MIN_QUOTA_US))
}

/// Usage of one cgroup (and its descendants), as cAdvisor reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// CPU time consumed, in nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat`
    /// `usage_usec` × 1000).
    pub cpu_usage_ns: u64,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages (v1 `total_inactive_file`, v2
    /// `inactive_file`), floored at 0: cAdvisor's working set, which the
    /// kubelet evicts on.
    pub memory_working_set_bytes: u64,
    /// The memory limit in bytes; `None` = unlimited.
    pub memory_limit: Option<u64>,
    /// How often the OOM killer killed a process of this cgroup (v1
    /// `memory.oom_control` `oom_kill`, v2 `memory.events` `oom_kill`;
    /// Linux 4.13).
    pub oom_kill_count: u64,
    /// `pids.current`.
    pub pids_current: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v1 hierarchy with the {controller} controller in {mountinfo}")]
    MissingController { controller: &'static str, mountinfo: PathBuf },
    #[error("no cgroup2 mount in {mountinfo}")]
    NoUnified { mountinfo: PathBuf },
    #[error("cgroup path {0:?} must be relative and must not contain `..`")]
    BadPath(PathBuf),
    #[error("cgroup root name {0:?} must be one plain path component (like `berth`)")]
    BadRootName(String),
    #[error("{DRIVER_ENV}={0:?}: expected `v1` or `v2`")]
    BadDriverOverride(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: String },
    #[error("SIGKILL to pid {pid} of cgroup {path}: {source}")]
    Kill {
        pid: u32,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cgroup {path} still has processes {remaining:?} after killing for {after:?}")]
    KillTimeout { path: PathBuf, remaining: Vec<u32>, after: Duration },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { op, path: path.to_owned(), source }
}

/// One cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fs_type: String,
    /// v1 controllers (from the super options), empty for v2.
    pub controllers: Vec<String>,
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        // `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS`
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split(' ').nth(4) else { continue };
        let mut right = right.split(' ');
        let (Some(fs_type), Some(_source), Some(super_opts)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        if fs_type != "cgroup" && fs_type != "cgroup2" {
            continue;
        }
        let controllers = if fs_type == "cgroup" {
            super_opts.split(',').filter(|o| !["rw", "ro"].contains(o) && !o.contains('=')).map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        // mountinfo escapes spaces and the like as octal (`\040`).
        let mount_point = mount_point.replace("\\040", " ");
        mounts.push(CgroupMount { mount_point: PathBuf::from(mount_point), fs_type: fs_type.to_owned(), controllers });
    }
    mounts
}

/// A cgroup below the berth root, e.g. `pods/<uid>/<container>`.
fn checked(rel: &Path) -> Result<&Path, CgroupError> {
    let ok = rel.is_relative() && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok && !rel.as_os_str().is_empty() { Ok(rel) } else { Err(CgroupError::BadPath(rel.to_owned())) }
}

/// The berth root's directory name: one plain component.
fn checked_root_name(name: &str) -> Result<&str, CgroupError> {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0');
    if ok { Ok(name) } else { Err(CgroupError::BadRootName(name.to_owned())) }
}

/// Creates, limits, fills, kills, reads and removes cgroups; one
/// implementation per cgroup version. Every path is relative to the berth
/// root, which the implementation owns.
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// Creates `rel` (and its parents) below the berth root; idempotent.
    ///
    /// # Errors
    /// A bad path or a failed mkdir.
    fn create(&self, rel: &Path) -> Result<(), CgroupError>;
    /// Writes `resources` into `rel`.
    ///
    /// # Errors
    /// A bad path or a failed write (the kernel's error names the file).
    fn apply(&self, rel: &Path, resources: &Resources) -> Result<(), CgroupError>;
    /// Removes `rel` and its descendant cgroups (all empty of processes),
    /// deepest first, and nothing else; missing is fine.
    ///
    /// # Errors
    /// A bad path or a failed rmdir (`EBUSY` while processes remain).
    fn remove(&self, rel: &Path) -> Result<(), CgroupError>;
    /// Every directory this cgroup has (one per v1 hierarchy, one for v2).
    ///
    /// # Errors
    /// A bad path.
    fn dirs(&self, rel: &Path) -> Result<Vec<PathBuf>, CgroupError>;
    /// Moves process `pid` (all its threads) into `rel` in every hierarchy;
    /// `0` means the calling process.
    ///
    /// # Errors
    /// A bad path, or the kernel refused the write (no such process, a v2
    /// cgroup with children, a full pids limit).
    fn add_process(&self, rel: &Path, pid: u32) -> Result<(), CgroupError>;
    /// The PIDs in `rel` and its descendants, sorted, without duplicates; a
    /// missing cgroup has none.
    ///
    /// # Errors
    /// A bad path or an unreadable `cgroup.procs`.
    fn procs(&self, rel: &Path) -> Result<Vec<u32>, CgroupError>;
    /// SIGKILLs every process in `rel` and its descendants until none is
    /// left, within [`KILL_TIMEOUT`]. A missing cgroup is already empty.
    ///
    /// # Errors
    /// A bad path, a failed cgroupfs access, or processes still there after
    /// the timeout (e.g. stuck in uninterruptible sleep).
    fn kill_all(&self, rel: &Path) -> Result<(), CgroupError>;
    /// Usage of `rel`, for metrics and OOM detection.
    ///
    /// # Errors
    /// A bad path, or a missing or malformed interface file.
    fn stats(&self, rel: &Path) -> Result<CgroupStats, CgroupError>;
    /// This driver as data, to rebuild it in another process.
    fn config(&self) -> DriverConfig;
}

/// A driver as data ([`Driver::config`], [`DriverConfig::into_driver`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum DriverConfig {
    V1(V1Driver),
    V2(V2Driver),
}

impl DriverConfig {
    pub fn into_driver(self) -> Box<dyn Driver> {
        match self {
            Self::V1(d) => Box::new(d),
            Self::V2(d) => Box::new(d),
        }
    }
}

/// Which cgroup version a driver is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Picks and builds the driver for this host from `/proc/self/mountinfo`,
/// with berth's cgroups under `<hierarchy>/<root_name>`. `BERTH_CGROUP_DRIVER`
/// (`v1` or `v2`) overrides the choice.
///
/// # Errors
/// A bad root name or override, an unreadable mountinfo, or a hierarchy the
/// chosen driver needs is not mounted.
pub fn detect(root_name: &str) -> Result<Box<dyn Driver>, CgroupError> {
    let forced = match std::env::var(DRIVER_ENV) {
        Ok(v) if v == "v1" => Some(Version::V1),
        Ok(v) if v == "v2" => Some(Version::V2),
        Ok(v) if v.is_empty() => None,
        Ok(v) => return Err(CgroupError::BadDriverOverride(v)),
        Err(_) => None,
    };
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(mountinfo).map_err(io_err("reading", mountinfo))?;
    Ok(detect_from(&text, mountinfo, root_name, forced)?.into_driver())
}

/// [`detect`] on mountinfo text: v2 when `/sys/fs/cgroup` is a cgroup2
/// mount (unified), v1 otherwise (legacy and hybrid), unless `forced`.
///
/// # Errors
/// As [`detect`].
pub fn detect_from(
    text: &str,
    mountinfo: &Path,
    root_name: &str,
    forced: Option<Version>,
) -> Result<DriverConfig, CgroupError> {
    let root_name = checked_root_name(root_name)?;
    let unified =
        parse_mountinfo(text).iter().any(|m| m.fs_type == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup"));
    let version = forced.unwrap_or(if unified { Version::V2 } else { Version::V1 });
    Ok(match version {
        Version::V1 => DriverConfig::V1(V1Driver::from_mountinfo(text, mountinfo)?.with_root_name(root_name)?),
        Version::V2 => DriverConfig::V2(V2Driver::from_mountinfo(text, mountinfo)?.with_root_name(root_name)?),
    })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(io_err("writing", &path))
}

fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(io_err("reading", &path))
}

fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let path = dir.join(file);
    let text = read(dir, file)?;
    text.trim().parse().map_err(|_| CgroupError::Parse { path, what: format!("{:?} is not a number", text.trim()) })
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`,
/// `memory.events`, `memory.oom_control`: `key value` per line).
fn keyed_u64(dir: &Path, file: &str, key: &str) -> Result<u64, CgroupError> {
    let path = dir.join(file);
    let text = read(dir, file)?;
    let value = text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' '));
    let Some(value) = value else {
        return Err(CgroupError::Parse { path, what: format!("no `{key}` line") });
    };
    value.trim().parse().map_err(|_| CgroupError::Parse { path, what: format!("`{key}` {value:?} is not a number") })
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))
}

fn rmdir(dir: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io_err("removing", dir)),
    }
}

/// Removes `dir` and its descendant cgroups, deepest first. cgroupfs
/// directories only hold interface files, which go with their directory.
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io_err("listing", dir))?,
    };
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        if entry.file_type().map_err(io_err("listing", dir))?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    rmdir(dir)
}

/// PIDs in `cgroup.procs` of `dir` and every descendant (appended to `out`).
fn procs_tree(dir: &Path, out: &mut Vec<u32>) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    match fs::read_to_string(&file) {
        Ok(text) => out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok())),
        // The cgroup (or this descendant) is gone, or a fake cgroupfs has
        // no such file: no processes here (the listing below tells which).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CgroupError::Io { op: "reading", path: file, source: e }),
    }
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io_err("listing", dir))?,
    };
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        if entry.file_type().map_err(io_err("listing", dir))?.is_dir() {
            procs_tree(&entry.path(), out)?;
        }
    }
    Ok(())
}

fn procs_of(dirs: &[PathBuf]) -> Result<Vec<u32>, CgroupError> {
    let mut pids = Vec::new();
    for dir in dirs {
        procs_tree(dir, &mut pids)?;
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn add_to(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    dirs.iter().try_for_each(|d| write(d, "cgroup.procs", &pid.to_string()))
}

/// A cgroup freezer: v1 `freezer.state` or v2 `cgroup.freeze`.
#[derive(Debug)]
enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

impl Freezer {
    /// Freezes the cgroup (and its descendants) and waits, briefly, until
    /// the kernel reports it frozen. A task in uninterruptible sleep can
    /// keep it "FREEZING"; the caller kills anyway, and the next round
    /// catches what was missed.
    fn freeze(&self) -> Result<Frozen<'_>, CgroupError> {
        let (dir, file, value) = match self {
            Self::V1(dir) => (dir, "freezer.state", "FROZEN"),
            Self::V2(dir) => (dir, "cgroup.freeze", "1"),
        };
        write(dir, file, value)?;
        let frozen = Frozen(self);
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let done = match self {
                Self::V1(dir) => read(dir, "freezer.state")?.trim() == "FROZEN",
                Self::V2(dir) => read(dir, "cgroup.events")?.lines().any(|l| l == "frozen 1"),
            };
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(frozen)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        match self {
            Self::V1(dir) => write(dir, "freezer.state", "THAWED"),
            Self::V2(dir) => write(dir, "cgroup.freeze", "0"),
        }
    }
}

/// Thaws on drop, so an error while frozen never leaves a cgroup frozen.
struct Frozen<'a>(&'a Freezer);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.thaw() {
            tracing::warn!(error = %e, "thawing a cgroup after killing its processes failed");
        }
    }
}

/// How a driver kills a whole cgroup.
enum Killer<'a> {
    /// v2 `cgroup.kill`: the kernel kills the subtree, forks included.
    KillFile(PathBuf),
    /// SIGKILL each PID, with the subtree frozen when a freezer exists.
    Signals(Option<&'a Freezer>),
}

/// Kills until `dirs` (all hierarchies of one cgroup) have no processes.
fn kill_until_empty(dirs: &[PathBuf], killer: Killer<'_>, timeout: Duration) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let pids = procs_of(dirs)?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            let path = dirs.first().cloned().unwrap_or_default();
            return Err(CgroupError::KillTimeout { path, remaining: pids, after: timeout });
        }
        match &killer {
            Killer::KillFile(file) => fs::write(file, "1").map_err(io_err("writing", file))?,
            Killer::Signals(freezer) => {
                let frozen = freezer.map(|f| f.freeze()).transpose()?;
                // Re-read while frozen: these PIDs cannot exit (so cannot be
                // reused) until the thaw.
                let pids = if frozen.is_some() { procs_of(dirs)? } else { pids };
                for pid in pids {
                    match nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(source) => {
                            let path = dirs.first().cloned().unwrap_or_default();
                            return Err(CgroupError::Kill { pid, path, source });
                        }
                    }
                }
                drop(frozen);
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `total - inactive`, floored at 0 (cAdvisor's working set).
fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

#[cfg(test)]
mod tests;
