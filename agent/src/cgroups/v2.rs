//! cgroup v2: the unified hierarchy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    CgroupError, CgroupStats, DEFAULT_ROOT_NAME, Driver, DriverConfig, Freezer, KILL_TIMEOUT, Killer, Resources,
    add_to, checked, checked_root_name, keyed_u64, kill_until_empty, mkdir, parse_mountinfo, procs_of, read, read_u64,
    rmdir_tree, working_set, write,
};

/// The unified (v2) hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Driver {
    /// The berth root's directory name below `root`.
    pub root_name: String,
    /// The cgroup2 mount point.
    pub root: PathBuf,
}

impl V2Driver {
    /// Finds the cgroup2 mount in mountinfo text; the berth root is
    /// [`DEFAULT_ROOT_NAME`].
    ///
    /// # Errors
    /// No cgroup2 mount.
    pub fn from_mountinfo(text: &str, mountinfo: &Path) -> Result<Self, CgroupError> {
        parse_mountinfo(text)
            .into_iter()
            .find(|m| m.fs_type == "cgroup2")
            .map(|m| Self { root_name: DEFAULT_ROOT_NAME.to_owned(), root: m.mount_point })
            .ok_or(CgroupError::NoUnified { mountinfo: mountinfo.to_owned() })
    }

    /// The same mount with berth's cgroups under `name`.
    ///
    /// # Errors
    /// `name` is not one plain path component.
    pub fn with_root_name(self, name: &str) -> Result<Self, CgroupError> {
        Ok(Self { root_name: checked_root_name(name)?.to_owned(), ..self })
    }

    fn dir(&self, rel: &Path) -> Result<PathBuf, CgroupError> {
        Ok(self.root.join(&self.root_name).join(checked(rel)?))
    }
}

impl Driver for V2Driver {
    fn create(&self, rel: &Path) -> Result<(), CgroupError> {
        let rel = checked(rel)?;
        // Controllers must be enabled in every parent's subtree_control for
        // the child to get the interface files.
        let mut dir = self.root.join(&self.root_name);
        mkdir(&dir)?;
        for part in rel.components() {
            write(&dir, "cgroup.subtree_control", "+cpu +memory +pids")?;
            dir = dir.join(part);
            mkdir(&dir)?;
        }
        Ok(())
    }

    fn apply(&self, rel: &Path, r: &Resources) -> Result<(), CgroupError> {
        let dir = self.dir(rel)?;
        write(&dir, "cpu.weight", &r.cpu_weight().to_string())?;
        let quota = r.cfs_quota_us.map_or_else(|| "max".to_owned(), |q| q.to_string());
        write(&dir, "cpu.max", &format!("{quota} {}", r.cfs_period_us))?;
        let limit = r.memory_limit_bytes.map_or_else(|| "max".to_owned(), |m| m.to_string());
        write(&dir, "memory.max", &limit)?;
        // Like kubelet without swap: a limited container gets no swap.
        if r.memory_limit_bytes.is_some() && dir.join("memory.swap.max").exists() {
            write(&dir, "memory.swap.max", "0")?;
        }
        write(&dir, "pids.max", &r.pids_limit.map_or_else(|| "max".to_owned(), |p| p.to_string()))
    }

    fn remove(&self, rel: &Path) -> Result<(), CgroupError> {
        rmdir_tree(&self.dir(rel)?)
    }

    fn dirs(&self, rel: &Path) -> Result<Vec<PathBuf>, CgroupError> {
        Ok(vec![self.dir(rel)?])
    }

    fn add_process(&self, rel: &Path, pid: u32) -> Result<(), CgroupError> {
        add_to(&self.dirs(rel)?, pid)
    }

    fn procs(&self, rel: &Path) -> Result<Vec<u32>, CgroupError> {
        procs_of(&self.dirs(rel)?)
    }

    fn kill_all(&self, rel: &Path) -> Result<(), CgroupError> {
        let dir = self.dir(rel)?;
        let kill = dir.join("cgroup.kill");
        // cgroup.kill is Linux 5.14; before it, freeze and signal.
        let freezer = Freezer::V2(dir.clone());
        let killer = if kill.exists() { Killer::KillFile(kill) } else { Killer::Signals(Some(&freezer)) };
        kill_until_empty(&[dir], killer, KILL_TIMEOUT)
    }

    fn stats(&self, rel: &Path) -> Result<CgroupStats, CgroupError> {
        let dir = self.dir(rel)?;
        let usage = read_u64(&dir, "memory.current")?;
        let max = read(&dir, "memory.max")?;
        let memory_limit = match max.trim() {
            "max" => None,
            v => Some(v.parse().map_err(|_| CgroupError::Parse {
                path: dir.join("memory.max"),
                what: format!("{v:?} is neither a number nor `max`"),
            })?),
        };
        Ok(CgroupStats {
            cpu_usage_ns: keyed_u64(&dir, "cpu.stat", "usage_usec")?.saturating_mul(1000),
            memory_usage_bytes: usage,
            memory_working_set_bytes: working_set(usage, keyed_u64(&dir, "memory.stat", "inactive_file")?),
            memory_limit,
            oom_kill_count: keyed_u64(&dir, "memory.events", "oom_kill")?,
            pids_current: read_u64(&dir, "pids.current")?,
        })
    }

    fn config(&self) -> DriverConfig {
        DriverConfig::V2(self.clone())
    }
}
