//! A cgroup2 directory per test, for socket-LB ("local" mode) tests.
//!
//! # Design
//! [`TestCgroup`] makes `<cgroup2 mount>/berth-test/<PREFIX-PID-N>`; BPF
//! cgroup programs under test attach there, so only processes the test puts
//! in it are affected. [`TestCgroup::command_in`] puts a process in the
//! cgroup before it execs (a `pre_exec` hook writes `0`, meaning "me", to
//! `cgroup.procs` in the forked child), so even its first `connect()` is
//! seen by the programs; it then enters the test's network namespace with
//! `nsenter --net`.
//!
//! # Limitations
//! On drop, processes still inside are moved to the parent (`berth-test`)
//! rather than killed, since they may not be ours to kill; they are reported
//! on stderr. The shared `berth-test` directory is never removed.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::{Launch, Netns};
use crate::process::ChildGuard;

/// Directory under the cgroup2 root holding every test's cgroup.
pub const TEST_ROOT: &str = "berth-test";

/// A cgroup2 directory removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    /// `<path>/cgroup.procs` as a C string, made before any fork so the
    /// `pre_exec` hook does not allocate.
    procs: CString,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/berth-test/PREFIX-PID-N`.
    ///
    /// # Errors
    /// If no cgroup2 filesystem is mounted or the directory cannot be made.
    pub fn create(prefix: &str) -> Result<Self> {
        let root = crate::mounts::find("cgroup2")?;
        Self::create_under(&root.join(TEST_ROOT), prefix)
    }

    /// Creates `PARENT/PREFIX-PID-N` (PARENT is made if missing).
    ///
    /// # Errors
    /// If a directory cannot be made.
    pub fn create_under(parent: &Path, prefix: &str) -> Result<Self> {
        std::fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
        let path = parent.join(crate::unique_name(prefix));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
            .with_context(|| format!("cgroup path {} contains NUL", path.display()))?;
        Ok(Self { path, procs })
    }

    /// The cgroup directory (attach cgroup BPF programs here).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// PIDs currently in the cgroup.
    ///
    /// # Errors
    /// If `cgroup.procs` cannot be read.
    pub fn procs(&self) -> Result<Vec<u32>> {
        let file = self.path.join("cgroup.procs");
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        Ok(text.split_whitespace().filter_map(|p| p.parse().ok()).collect())
    }

    /// A command that runs `program` in this cgroup (joined before exec)
    /// and in `netns` (via `nsenter --net`).
    pub fn command_in(&self, netns: &Netns, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = netns.nsenter_command(program);
        let procs = self.procs.clone();
        // SAFETY: the hook runs in the forked child before exec, where only
        // async-signal-safe work is allowed; `join_cgroup` only calls
        // open/write/close on a string allocated before the fork and reads
        // errno, without allocating or taking locks.
        unsafe {
            cmd.pre_exec(move || join_cgroup(&procs));
        }
        cmd
    }

    /// Spawns `argv` in this cgroup and in `netns`; killed when the guard or
    /// `netns` is dropped.
    ///
    /// # Errors
    /// If it cannot be started (including failing to join the cgroup).
    pub fn spawn_in(&self, netns: &Netns, argv: &[&str]) -> Result<ChildGuard> {
        let Some((program, args)) = argv.split_first() else {
            anyhow::bail!("cgroup {}: empty command", self.path.display());
        };
        let mut cmd = self.command_in(netns, program);
        cmd.args(args);
        netns.spawn_command(cmd, &format!("{}+{}: {}", netns.name(), self.path.display(), argv.join(" ")))
    }

    /// This cgroup plus `netns`, as a place to launch helper processes.
    pub fn within<'a>(&'a self, netns: &'a Netns) -> InCgroup<'a> {
        InCgroup { cgroup: self, netns }
    }
}

/// Writes "0" (the calling process) to a `cgroup.procs` file.
fn join_cgroup(procs: &CStr) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; open has no other
    // preconditions.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open for writing and the buffer is 1 valid byte.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed exactly once.
    unsafe { libc::close(fd) };
    if written != 1 {
        return Err(err);
    }
    Ok(())
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        match self.procs() {
            Ok(pids) if !pids.is_empty() => {
                eprintln!("berth-tests: cgroup {}: moving leftover processes to parent: {pids:?}", self.path.display());
                if let Some(parent) = self.path.parent() {
                    let parent_procs = parent.join("cgroup.procs");
                    for pid in pids {
                        if let Err(e) = std::fs::write(&parent_procs, pid.to_string()) {
                            eprintln!("berth-tests: cgroup: move {pid} to {}: {e}", parent_procs.display());
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("berth-tests: cgroup cleanup: {e:#}"),
        }
        // rmdir fails with EBUSY while exiting tasks are still being
        // released from the cgroup; retry briefly.
        let removed = crate::wait::poll_until(Duration::from_secs(3), Duration::from_millis(20), || {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
                Err(e) => Err(anyhow::Error::new(e).context(format!("rmdir {}", self.path.display()))),
            }
        });
        if let Err(e) = removed {
            eprintln!("berth-tests: cgroup cleanup: {e:#}");
        }
    }
}

/// A cgroup plus a network namespace: helper processes launched here join
/// the cgroup before exec, then enter the namespace.
#[derive(Clone, Copy, Debug)]
pub struct InCgroup<'a> {
    pub cgroup: &'a TestCgroup,
    pub netns: &'a Netns,
}

impl Launch for InCgroup<'_> {
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.cgroup.command_in(self.netns, program)
    }

    fn spawn_command(&self, cmd: Command, label: &str) -> Result<ChildGuard> {
        self.netns.spawn_command(cmd, label)
    }
}
