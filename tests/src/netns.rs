//! Named network namespaces owned by a test.
//!
//! # Design
//! [`Netns`] wraps `ip netns add/del`, so namespaces are visible to
//! `ip netns list` and to people debugging a hung test. Commands run inside
//! with `ip netns exec` ([`Netns::exec`], [`Netns::spawn`]), except
//! programs that need the host's `/sys`: `ip netns exec` also unshares the
//! mount namespace and remounts `/sys`, hiding bpffs and cgroup2, so the
//! BPF loader (`berth-agent`) is started with [`Netns::nsenter_command`]
//! (`nsenter --net=...`), which switches only the network namespace.
//!
//! [`Launch`] abstracts "where a helper process runs" (a namespace, or a
//! namespace plus a cgroup, see [`crate::InCgroup`]) for the client driver.
//!
//! # Limitations
//! Processes a test starts in the namespace by other means than
//! [`Netns::spawn`] / [`Netns::spawn_command`] are not killed on drop; they
//! are reported on stderr and keep the (already unnamed) namespace alive.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::{self, COMMAND_TIMEOUT, ChildGuard, Registry};

/// Where `ip netns` keeps its namespace bind mounts.
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Something a helper process can be launched in.
pub trait Launch {
    /// A command that runs `program` there (add arguments to it).
    fn command(&self, program: impl AsRef<OsStr>) -> Command;

    /// Spawns a command made by [`Launch::command`] and ties the child to
    /// the place's lifetime.
    ///
    /// # Errors
    /// If the program cannot be started.
    fn spawn_command(&self, cmd: Command, label: &str) -> Result<ChildGuard>;
}

/// A named network namespace, deleted on drop along with the processes
/// spawned in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    registry: Arc<Registry>,
}

impl Netns {
    /// Creates the namespace `name` (`ip netns add`) with `lo` up.
    /// Prefer [`Netns::unique`].
    ///
    /// # Errors
    /// If `ip` fails, e.g. because the name is taken.
    pub fn create(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.contains('/') {
            bail!("invalid netns name {name:?}");
        }
        process::run_argv(&["ip", "netns", "add", &name], COMMAND_TIMEOUT)?;
        // The guard exists from here on, so a failure below still deletes
        // the namespace.
        let ns = Self { name, registry: Arc::default() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a namespace named `PREFIX-PID-N`, unique per process and
    /// call.
    ///
    /// # Errors
    /// As [`Netns::create`].
    pub fn unique(prefix: &str) -> Result<Self> {
        Self::create(crate::unique_name(prefix))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount `ip netns` made, e.g. for `setns(2)` or
    /// `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `argv` inside with `ip netns exec`, bounded by 30 s; returns
    /// stdout.
    ///
    /// # Errors
    /// If the command fails or times out; the error names the command and
    /// carries its stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let Some((program, args)) = argv.split_first() else {
            bail!("netns {}: empty command", self.name);
        };
        let mut cmd = self.command(program);
        cmd.args(args);
        process::run(cmd, COMMAND_TIMEOUT)
    }

    /// Runs `ip -n NAME ARGS...` (cheaper than `exec` for `ip` itself).
    ///
    /// # Errors
    /// As [`Netns::exec`].
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        process::run(cmd, COMMAND_TIMEOUT)
    }

    /// Sets a sysctl inside the namespace (`sysctl -w KEY=VALUE`).
    ///
    /// # Errors
    /// As [`Netns::exec`].
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]).map(drop)
    }

    /// `ip netns exec NAME PROGRAM`, for helpers that do not need the
    /// host's `/sys` (everything but the BPF loader).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `nsenter --net=/var/run/netns/NAME -- PROGRAM`: only the network
    /// namespace changes, so `/sys/fs/bpf` and the cgroup2 mount stay
    /// visible. Use this for `berth-agent`, then [`Netns::spawn_command`].
    pub fn nsenter_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(self.path());
        let mut cmd = Command::new("nsenter");
        cmd.arg(net).arg("--").arg(program);
        cmd
    }

    /// Spawns `argv` inside with `ip netns exec`; killed when the guard or
    /// this namespace is dropped.
    ///
    /// # Errors
    /// If it cannot be started.
    pub fn spawn(&self, argv: &[&str]) -> Result<ChildGuard> {
        let Some((program, args)) = argv.split_first() else {
            bail!("netns {}: empty command", self.name);
        };
        let mut cmd = self.command(program);
        cmd.args(args);
        self.spawn_command(cmd, &format!("{}: {}", self.name, argv.join(" ")))
    }

    /// Spawns a prepared command (e.g. from [`Netns::nsenter_command`]) and
    /// registers it with this namespace, which kills it if dropped first.
    ///
    /// # Errors
    /// If it cannot be started.
    pub fn spawn_command(&self, cmd: Command, label: &str) -> Result<ChildGuard> {
        ChildGuard::spawn(cmd, label, Some(Arc::clone(&self.registry)))
    }

    /// Waits until `addr` accepts TCP connections from inside this
    /// namespace.
    ///
    /// # Errors
    /// On timeout, with the last connect error.
    pub fn wait_for_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        crate::wait::wait_for_tcp(&self.path(), addr, timeout)
    }

    /// PIDs of every process in the namespace (`ip netns pids`).
    ///
    /// # Errors
    /// If `ip` fails.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = process::run_argv(&["ip", "netns", "pids", &self.name], COMMAND_TIMEOUT)?;
        Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
    }
}

impl Launch for Netns {
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Netns::command(self, program)
    }

    fn spawn_command(&self, cmd: Command, label: &str) -> Result<ChildGuard> {
        Netns::spawn_command(self, cmd, label)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.registry.kill_all(&self.name);
        // Killed children may take a moment to leave; report only what is
        // still there after a short, bounded wait.
        let leftover =
            crate::wait::poll_until(Duration::from_secs(2), Duration::from_millis(20), || Ok(self.pids()?.is_empty()));
        if leftover.is_err()
            && let Ok(pids) = self.pids()
        {
            eprintln!("berth-tests: netns {}: processes still inside at cleanup: {pids:?}", self.name);
        }
        if let Err(e) = process::run_argv(&["ip", "netns", "del", &self.name], COMMAND_TIMEOUT) {
            eprintln!("berth-tests: netns {}: cleanup: {e:#}", self.name);
        }
    }
}
