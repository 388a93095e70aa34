//! cgroup v1: one hierarchy per controller (legacy and hybrid hosts).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    CgroupError, CgroupStats, DEFAULT_ROOT_NAME, Driver, DriverConfig, Freezer, KILL_TIMEOUT, Killer, Resources,
    UNLIMITED_V1, add_to, checked, checked_root_name, keyed_u64, kill_until_empty, mkdir, parse_mountinfo, procs_of,
    read_u64, rmdir_tree, working_set, write,
};

/// cgroup v1: one hierarchy per controller berth uses, plus the freezer
/// when mounted (for [`Driver::kill_all`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Driver {
    /// The berth root's directory name in every hierarchy.
    pub root_name: String,
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub memory: PathBuf,
    pub pids: PathBuf,
    pub freezer: Option<PathBuf>,
}

impl V1Driver {
    /// Finds the hierarchies in mountinfo text (`mountinfo` names the file
    /// in errors); the root is [`DEFAULT_ROOT_NAME`].
    ///
    /// # Errors
    /// A controller berth needs is not mounted (the freezer is optional).
    pub fn from_mountinfo(text: &str, mountinfo: &Path) -> Result<Self, CgroupError> {
        let mounts = parse_mountinfo(text);
        let find = |controller: &'static str| {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|c| c == controller))
                .map(|m| m.mount_point.clone())
        };
        let need = |controller: &'static str| {
            find(controller).ok_or(CgroupError::MissingController { controller, mountinfo: mountinfo.to_owned() })
        };
        Ok(Self {
            root_name: DEFAULT_ROOT_NAME.to_owned(),
            cpu: need("cpu")?,
            cpuacct: need("cpuacct")?,
            memory: need("memory")?,
            pids: need("pids")?,
            freezer: find("freezer"),
        })
    }

    /// The same hierarchies with berth's cgroups under `name`.
    ///
    /// # Errors
    /// `name` is not one plain path component.
    pub fn with_root_name(self, name: &str) -> Result<Self, CgroupError> {
        Ok(Self { root_name: checked_root_name(name)?.to_owned(), ..self })
    }

    pub(super) fn hierarchies(&self) -> Vec<&Path> {
        let mut all: Vec<&Path> = vec![&self.cpu, &self.cpuacct, &self.memory, &self.pids];
        all.extend(self.freezer.as_deref());
        // Co-mounted controllers (cpu,cpuacct) share one directory.
        all.sort();
        all.dedup();
        all
    }

    fn dir(&self, hierarchy: &Path, rel: &Path) -> Result<PathBuf, CgroupError> {
        Ok(hierarchy.join(&self.root_name).join(checked(rel)?))
    }
}

impl Driver for V1Driver {
    fn create(&self, rel: &Path) -> Result<(), CgroupError> {
        self.dirs(rel)?.iter().try_for_each(|d| mkdir(d))
    }

    fn apply(&self, rel: &Path, r: &Resources) -> Result<(), CgroupError> {
        let cpu = self.dir(&self.cpu, rel)?;
        write(&cpu, "cpu.shares", &r.cpu_shares.to_string())?;
        write(&cpu, "cpu.cfs_period_us", &r.cfs_period_us.to_string())?;
        write(&cpu, "cpu.cfs_quota_us", &r.cfs_quota_us.map_or_else(|| "-1".to_owned(), |q| q.to_string()))?;
        let memory = self.dir(&self.memory, rel)?;
        let limit = r.memory_limit_bytes.map_or_else(|| "-1".to_owned(), |m| m.to_string());
        // With swap accounting, memory+swap must be limited too, or the
        // limit only moves pages to swap (kubelet runs without swap). The
        // kernel keeps memsw >= memory at every step, so the order depends
        // on the direction: lowering writes memory first, raising memsw.
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            if write(&memory, "memory.memsw.limit_in_bytes", &limit).is_err() {
                write(&memory, "memory.limit_in_bytes", &limit)?;
                write(&memory, "memory.memsw.limit_in_bytes", &limit)?;
            } else {
                write(&memory, "memory.limit_in_bytes", &limit)?;
            }
        } else {
            write(&memory, "memory.limit_in_bytes", &limit)?;
        }
        let pids = self.dir(&self.pids, rel)?;
        write(&pids, "pids.max", &r.pids_limit.map_or_else(|| "max".to_owned(), |p| p.to_string()))
    }

    fn remove(&self, rel: &Path) -> Result<(), CgroupError> {
        self.dirs(rel)?.iter().try_for_each(|d| rmdir_tree(d))
    }

    fn dirs(&self, rel: &Path) -> Result<Vec<PathBuf>, CgroupError> {
        let rel = checked(rel)?;
        Ok(self.hierarchies().into_iter().map(|h| h.join(&self.root_name).join(rel)).collect())
    }

    fn add_process(&self, rel: &Path, pid: u32) -> Result<(), CgroupError> {
        add_to(&self.dirs(rel)?, pid)
    }

    fn procs(&self, rel: &Path) -> Result<Vec<u32>, CgroupError> {
        procs_of(&self.dirs(rel)?)
    }

    fn kill_all(&self, rel: &Path) -> Result<(), CgroupError> {
        let dirs = self.dirs(rel)?;
        // A freezer directory made by an older berth may be missing: kill
        // without freezing then.
        let freezer = match &self.freezer {
            Some(h) => Some(self.dir(h, rel)?).filter(|d| d.join("freezer.state").exists()).map(Freezer::V1),
            None => None,
        };
        kill_until_empty(&dirs, Killer::Signals(freezer.as_ref()), KILL_TIMEOUT)
    }

    fn stats(&self, rel: &Path) -> Result<CgroupStats, CgroupError> {
        let memory = self.dir(&self.memory, rel)?;
        let usage = read_u64(&memory, "memory.usage_in_bytes")?;
        let limit = read_u64(&memory, "memory.limit_in_bytes")?;
        Ok(CgroupStats {
            cpu_usage_ns: read_u64(&self.dir(&self.cpuacct, rel)?, "cpuacct.usage")?,
            memory_usage_bytes: usage,
            memory_working_set_bytes: working_set(usage, keyed_u64(&memory, "memory.stat", "total_inactive_file")?),
            memory_limit: (limit < UNLIMITED_V1).then_some(limit),
            oom_kill_count: keyed_u64(&memory, "memory.oom_control", "oom_kill")?,
            pids_current: read_u64(&self.dir(&self.pids, rel)?, "pids.current")?,
        })
    }

    fn config(&self) -> DriverConfig {
        DriverConfig::V1(self.clone())
    }
}
