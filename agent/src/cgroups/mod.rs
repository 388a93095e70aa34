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
//! Everything lives under one berth root (`<mount>/berth/...`); nothing
//! else is touched.
//!
//! # Limitations
//! Creating, limiting and removing directories only; moving processes in
//! and reading usage come with the container runtime (issue 5).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// kubelet's CFS period (`cpu.cfs_period_us`), in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// kubelet's smallest quota (1 ms): smaller quotas starve the cgroup.
pub const MIN_QUOTA_US: u64 = 1_000;
/// The smallest and largest `cpu.shares` the kernel accepts.
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// The directory under every hierarchy that berth owns.
pub const BERTH_ROOT: &str = "berth";

/// Millicores (`500m` = 500), as Kubernetes counts CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MilliCpu(pub u64);

/// A container's requests and limits, already parsed from the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceSpec {
    pub cpu_request: Option<MilliCpu>,
    pub cpu_limit: Option<MilliCpu>,
    pub memory_limit_bytes: Option<u64>,
    pub pids_limit: Option<u64>,
}

/// What the kernel is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v1 hierarchy with the {controller} controller in {mountinfo}")]
    MissingController { controller: &'static str, mountinfo: PathBuf },
    #[error("no cgroup2 mount in {mountinfo}")]
    NoUnified { mountinfo: PathBuf },
    #[error("cgroup path {0:?} must be relative and must not contain `..`")]
    BadPath(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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

/// Creates, limits and removes cgroups; one implementation per cgroup
/// version.
pub trait Driver {
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
    /// Removes `rel` (empty of processes) and nothing else; missing is fine.
    ///
    /// # Errors
    /// A bad path or a failed rmdir.
    fn remove(&self, rel: &Path) -> Result<(), CgroupError>;
    /// Every directory this cgroup has (one per v1 hierarchy, one for v2).
    ///
    /// # Errors
    /// A bad path.
    fn dirs(&self, rel: &Path) -> Result<Vec<PathBuf>, CgroupError>;
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(io_err("writing", &path))
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

/// cgroup v1: one hierarchy per controller berth uses.
#[derive(Debug, Clone)]
pub struct V1Driver {
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub memory: PathBuf,
    pub pids: PathBuf,
}

impl V1Driver {
    /// Finds the hierarchies in mountinfo text (`mountinfo` names the file
    /// in errors).
    ///
    /// # Errors
    /// A controller berth needs is not mounted.
    pub fn from_mountinfo(text: &str, mountinfo: &Path) -> Result<Self, CgroupError> {
        let mounts = parse_mountinfo(text);
        let find = |controller: &'static str| {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|c| c == controller))
                .map(|m| m.mount_point.clone())
                .ok_or(CgroupError::MissingController { controller, mountinfo: mountinfo.to_owned() })
        };
        Ok(Self { cpu: find("cpu")?, cpuacct: find("cpuacct")?, memory: find("memory")?, pids: find("pids")? })
    }

    fn hierarchies(&self) -> Vec<&Path> {
        let mut all: Vec<&Path> = vec![&self.cpu, &self.cpuacct, &self.memory, &self.pids];
        // Co-mounted controllers (cpu,cpuacct) share one directory.
        all.sort();
        all.dedup();
        all
    }
}

impl Driver for V1Driver {
    fn create(&self, rel: &Path) -> Result<(), CgroupError> {
        self.dirs(rel)?.iter().try_for_each(|d| mkdir(d))
    }

    fn apply(&self, rel: &Path, r: &Resources) -> Result<(), CgroupError> {
        let rel = checked(rel)?;
        let cpu = self.cpu.join(BERTH_ROOT).join(rel);
        write(&cpu, "cpu.shares", &r.cpu_shares.to_string())?;
        write(&cpu, "cpu.cfs_period_us", &r.cfs_period_us.to_string())?;
        write(&cpu, "cpu.cfs_quota_us", &r.cfs_quota_us.map_or_else(|| "-1".to_owned(), |q| q.to_string()))?;
        let memory = self.memory.join(BERTH_ROOT).join(rel);
        write(
            &memory,
            "memory.limit_in_bytes",
            &r.memory_limit_bytes.map_or_else(|| "-1".to_owned(), |m| m.to_string()),
        )?;
        let pids = self.pids.join(BERTH_ROOT).join(rel);
        write(&pids, "pids.max", &r.pids_limit.map_or_else(|| "max".to_owned(), |p| p.to_string()))
    }

    fn remove(&self, rel: &Path) -> Result<(), CgroupError> {
        self.dirs(rel)?.iter().try_for_each(|d| rmdir(d))
    }

    fn dirs(&self, rel: &Path) -> Result<Vec<PathBuf>, CgroupError> {
        let rel = checked(rel)?;
        Ok(self.hierarchies().into_iter().map(|h| h.join(BERTH_ROOT).join(rel)).collect())
    }
}

/// The unified (v2) hierarchy.
#[derive(Debug, Clone)]
pub struct V2Driver {
    pub root: PathBuf,
}

impl V2Driver {
    /// Finds the cgroup2 mount in mountinfo text.
    ///
    /// # Errors
    /// No cgroup2 mount.
    pub fn from_mountinfo(text: &str, mountinfo: &Path) -> Result<Self, CgroupError> {
        parse_mountinfo(text)
            .into_iter()
            .find(|m| m.fs_type == "cgroup2")
            .map(|m| Self { root: m.mount_point })
            .ok_or(CgroupError::NoUnified { mountinfo: mountinfo.to_owned() })
    }
}

impl Driver for V2Driver {
    fn create(&self, rel: &Path) -> Result<(), CgroupError> {
        let rel = checked(rel)?;
        // Controllers must be enabled in every parent's subtree_control for
        // the child to get the interface files.
        let mut dir = self.root.join(BERTH_ROOT);
        mkdir(&dir)?;
        for part in rel.components() {
            write(&dir, "cgroup.subtree_control", "+cpu +memory +pids")?;
            dir = dir.join(part);
            mkdir(&dir)?;
        }
        Ok(())
    }

    fn apply(&self, rel: &Path, r: &Resources) -> Result<(), CgroupError> {
        let dir = self.root.join(BERTH_ROOT).join(checked(rel)?);
        write(&dir, "cpu.weight", &r.cpu_weight().to_string())?;
        let quota = r.cfs_quota_us.map_or_else(|| "max".to_owned(), |q| q.to_string());
        write(&dir, "cpu.max", &format!("{quota} {}", r.cfs_period_us))?;
        write(&dir, "memory.max", &r.memory_limit_bytes.map_or_else(|| "max".to_owned(), |m| m.to_string()))?;
        write(&dir, "pids.max", &r.pids_limit.map_or_else(|| "max".to_owned(), |p| p.to_string()))
    }

    fn remove(&self, rel: &Path) -> Result<(), CgroupError> {
        rmdir(&self.root.join(BERTH_ROOT).join(checked(rel)?))
    }

    fn dirs(&self, rel: &Path) -> Result<Vec<PathBuf>, CgroupError> {
        Ok(vec![self.root.join(BERTH_ROOT).join(checked(rel)?)])
    }
}

#[cfg(test)]
mod tests;
