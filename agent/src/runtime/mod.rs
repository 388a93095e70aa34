//! The container runtime: the re-exec'd shim and init, exec, logs.
//!
//! # Design
//! berth runs containers itself, in the roles runc, conmon and
//! containerd-shim play elsewhere, without shelling out to any of them.
//! Namespaces are only ever entered by single-threaded processes the agent
//! re-executes from its own binary, never on a tokio thread:
//!
//! ```text
//! agent ── Runtime::start ──▶ berth-agent shim --bundle DIR   (own session)
//!                               └─ clone(NEWPID|NEWNS|NEWUTS|NEWIPC[|NEWNET])
//!                                    └─ container init → execve(args)
//! agent ── Runtime::exec ───▶ berth-agent exec-helper --bundle DIR -- argv
//!                               └─ setns(pidfd of PID 1) + cgroup → fork → execve(argv)
//! ```
//!
//! [`Runtime::start`] creates the cgroup, writes `spec.json` (the
//! [`ContainerSpec`] plus the cgroup driver as data) into the bundle and
//! spawns the shim in a new session with its stdio on `shim.log`; the shim
//! reports the container's PID or why it could not start through an
//! inherited pipe. The shim ([`shim_main`]) outlives the agent: it copies
//! the container's stdout and stderr into the CRI-format log file (rotated
//! by size), reaps the container, and writes `exit.json` atomically; it
//! never talks to the agent after the start. A new agent adopts it from
//! `state.json` (PIDs plus their start times, which defeat PID reuse) with
//! [`Runtime::status`] and [`Runtime::wait`] (a pidfd, so the shim need not
//! be its child).
//!
//! The container init joins the pod's network namespace, waits until the
//! shim has put it into the cgroup (so everything it allocates is
//! accounted), makes the mount tree private, mounts the overlay
//! (`image_rootfs` read-only below `bundle/upper`), pivots into it, and only
//! then mounts `/proc`, `/dev` (tmpfs with device nodes, `pts`, `shm`,
//! `mqueue`) and a read-only `/sys` — after the pivot, so a symlink in the
//! image cannot redirect a mount or a write to the host. It masks and
//! write-protects `/proc` paths like containerd's defaults, sets rlimits,
//! groups, gid and uid, reduces capabilities to containerd's default set
//! (bounding set too; a non-root user keeps none effective), sets
//! `no_new_privs` and execs. Any failure before the exec travels back over a
//! close-on-exec pipe as a message (`exec /bin/nope: No such file or
//! directory`).
//!
//! Bundle layout: `spec.json`, `state.json`, `exit.json`, `shim.log`,
//! `upper/`, `work/`, `rootfs/` (the mount point, only mounted inside the
//! container's mount namespace). Logs live outside, at [`LogConfig::path`].
//!
//! # Limitations
//! - Root on the host only (no user namespaces), no seccomp or LSM profile,
//!   no device cgroup: the default capability set includes `CAP_MKNOD`, so
//!   a root container can create device nodes it can then open.
//! - No cgroup namespace and no `/sys/fs/cgroup` inside the container.
//! - No volumes, `/etc/hosts` or `/etc/resolv.conf` management; the
//!   hostname is written into the container's own `/etc/hostname`.
//! - `exec` has no stdin and no TTY; its output is captured up to
//!   [`EXEC_OUTPUT_LIMIT`] bytes per stream.
//! - Signals to PID 1 follow the kernel's rule for namespace inits: only
//!   signals it has a handler for arrive, except SIGKILL.

mod exec;
mod init;
mod log;
mod shim;
mod sys;

use std::{
    fs, io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use nix::{errno::Errno, sys::signal::Signal};
use serde::{Deserialize, Serialize};

pub use exec::{ExecArgs, ExecOutput, exec_main};
pub use shim::{ShimArgs, shim_main};

use crate::cgroups::{CgroupError, Driver, DriverConfig};

/// How long [`Runtime::start`] waits for the shim's report.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of each of stdout and stderr [`Runtime::exec`] keeps.
pub const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;
/// The bundle's files.
pub const SPEC_FILE: &str = "spec.json";
pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit.json";
pub const SHIM_LOG_FILE: &str = "shim.log";

/// One container instance, as the agent asks for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique per container instance (a restart is a new id).
    pub id: String,
    /// Directory owned by this instance: `spec.json`, `upper/`, `work/`,
    /// `rootfs/` (mount point), `state.json`, `exit.json`.
    pub bundle: PathBuf,
    /// Read-only lower directory, shared between containers; never written.
    pub image_rootfs: PathBuf,
    /// argv; `args[0]` is looked up in the container's `PATH` if it has no
    /// `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// The pod's network namespace (a bind-mounted nsfs file) to join;
    /// `None` = a new, empty one.
    pub netns: Option<PathBuf>,
    /// Relative to the cgroup driver's berth root, e.g. `pods/<uid>/<id>`.
    pub cgroup: PathBuf,
    pub resources: crate::cgroups::Resources,
    pub log: LogConfig,
}

/// Where and how much the container's output is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The current file; rotated ones get `.1`, `.2`, … appended.
    pub path: PathBuf,
    /// Rotate when the current file would grow past this (0 = never).
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub max_files: u32,
}

/// What [`Runtime::start`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub shim_pid: u32,
    /// Host PID of the container's PID 1.
    pub pid: u32,
    pub started_at_unix_ms: u64,
}

/// How a container ended (the shim's `exit.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitInfo {
    /// The exit status, or 128 + signal when killed by a signal, as
    /// kubelet reports it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The cgroup's OOM killer fired and PID 1 died of SIGKILL (or exited
    /// with 137 after its child was OOM-killed).
    pub oom_killed: bool,
    pub started_at_unix_ms: u64,
    pub finished_at_unix_ms: u64,
}

/// What [`Runtime::status`] finds.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerStatus {
    Running {
        pid: u32,
        shim_pid: u32,
    },
    Exited(ExitInfo),
    /// No live shim and no exit record (never started, or the shim was
    /// killed).
    Gone,
}

/// `spec.json`: the spec plus the cgroup driver, so that the shim and the
/// exec helper use the agent's mounts and root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BundleSpec {
    pub spec: ContainerSpec,
    pub cgroup_driver: DriverConfig,
}

/// `state.json`, written by the shim once the container runs. Start times
/// are `/proc/<pid>/stat` field 22 (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShimState {
    pub shim_pid: u32,
    pub shim_start_time: u64,
    pub pid: u32,
    pub pid_start_time: u64,
    pub started_at_unix_ms: u64,
}

/// The shim's one message to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShimReport {
    Started { pid: u32, started_at_unix_ms: u64 },
    Failed { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {id:?}: invalid spec: {why}")]
    InvalidSpec { id: String, why: String },
    #[error("container {id}: cgroup {}: {source}", cgroup.display())]
    Cgroup {
        id: String,
        cgroup: PathBuf,
        #[source]
        source: CgroupError,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("spawning `{} {role}`: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        role: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("starting container {id}: {message}")]
    Start { id: String, message: String },
    #[error("starting container {id}: the shim reported nothing within {after:?}; shim log: {log}")]
    StartTimeout { id: String, after: Duration, log: String },
    #[error("starting container {id}: the shim exited without a report ({status}); shim log: {log}")]
    ShimDied { id: String, status: String, log: String },
    #[error("container in {}: not running", bundle.display())]
    NotRunning { bundle: PathBuf },
    #[error("container in {}: the shim is gone and left no {EXIT_FILE}", bundle.display())]
    NoExitRecord { bundle: PathBuf },
    #[error("container in {}: still running after {after:?}", bundle.display())]
    WaitTimeout { bundle: PathBuf, after: Duration },
    #[error("exec in container {}: {message}", bundle.display())]
    Exec { bundle: PathBuf, message: String },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: Errno,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io { op, path: path.to_owned(), source }
}

fn sys_err(op: impl Into<String>) -> impl FnOnce(Errno) -> RuntimeError {
    let op = op.into();
    move |source| RuntimeError::Sys { op, source }
}

/// Reads a JSON file; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| RuntimeError::Json { path: path.to_owned(), source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::Io { op: "reading", path: path.to_owned(), source: e }),
    }
}

pub(crate) fn read_exit(bundle: &Path) -> Result<Option<ExitInfo>, RuntimeError> {
    read_json(&bundle.join(EXIT_FILE))
}

pub(crate) fn read_state(bundle: &Path) -> Result<Option<ShimState>, RuntimeError> {
    read_json(&bundle.join(STATE_FILE))
}

pub(crate) fn read_bundle_spec(bundle: &Path) -> Result<BundleSpec, RuntimeError> {
    let path = bundle.join(SPEC_FILE);
    let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::Json { path, source })
}

/// Checks what the kernel and the overlay mount options cannot express.
fn validate(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let bad = |why: String| Err(RuntimeError::InvalidSpec { id: spec.id.clone(), why });
    if spec.id.is_empty() || spec.id.contains('/') || spec.id.contains('\0') {
        return bad("the id must be non-empty, without `/`".to_owned());
    }
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return bad("no command (args is empty)".to_owned());
    }
    for (what, p) in [("bundle", &spec.bundle), ("image_rootfs", &spec.image_rootfs), ("log.path", &spec.log.path)] {
        if !p.is_absolute() {
            return bad(format!("{what} {} must be absolute", p.display()));
        }
    }
    // overlayfs options are comma-separated and `:` separates lower dirs.
    for p in [&spec.bundle, &spec.image_rootfs] {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\n', '\\']) {
            return bad(format!("{} contains a character overlayfs options cannot carry (, : \\)", p.display()));
        }
    }
    let strings = spec.args.iter().chain(&spec.env).chain([&spec.cwd, &spec.hostname]);
    if strings.clone().any(|s| s.contains('\0')) {
        return bad("args, env, cwd and hostname must not contain NUL".to_owned());
    }
    if spec.env.iter().any(|e| !e.contains('=')) {
        return bad("every env entry must be KEY=VALUE".to_owned());
    }
    if !spec.cwd.starts_with('/') {
        return bad(format!("cwd {:?} must be absolute", spec.cwd));
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return bad(format!("hostname {:?} must have 1 to 64 bytes", spec.hostname));
    }
    Ok(())
}

/// Starts, watches, signals, enters and removes containers. Cheap to share
/// (`Arc`); every method but [`Runtime::wait`] blocks, so call them from
/// `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct Runtime {
    driver: Arc<dyn Driver>,
    /// The `berth-agent` binary, re-executed as `shim` and `exec`.
    exe: PathBuf,
}

impl Runtime {
    pub fn new(driver: Arc<dyn Driver>, exe: PathBuf) -> Self {
        Self { driver, exe }
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Creates the cgroup and the bundle, spawns the shim and waits (at
    /// most [`START_TIMEOUT`]) until it reports the container's PID.
    ///
    /// # Errors
    /// An invalid spec, a cgroup or bundle failure, or the container could
    /// not start ([`RuntimeError::Start`] carries the init's message, e.g.
    /// `exec /bin/nope: No such file or directory`). After an error the
    /// caller should [`Runtime::remove`] the instance.
    pub fn start(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        validate(spec)?;
        let cgroup_err = |source| RuntimeError::Cgroup { id: spec.id.clone(), cgroup: spec.cgroup.clone(), source };
        let bundle = &spec.bundle;
        if bundle.join(STATE_FILE).exists() || bundle.join(EXIT_FILE).exists() {
            return Err(RuntimeError::InvalidSpec {
                id: spec.id.clone(),
                why: format!("bundle {} was already used; every instance needs a new one", bundle.display()),
            });
        }
        for dir in [bundle.clone(), bundle.join("upper"), bundle.join("work"), bundle.join("rootfs")] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        if let Some(parent) = spec.log.path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        self.driver.create(&spec.cgroup).map_err(cgroup_err)?;
        self.driver.apply(&spec.cgroup, &spec.resources).map_err(cgroup_err)?;
        let bundle_spec = BundleSpec { spec: spec.clone(), cgroup_driver: self.driver.config() };
        let json = serde_json::to_vec_pretty(&bundle_spec)
            .map_err(|source| RuntimeError::Json { path: bundle.join(SPEC_FILE), source })?;
        sys::write_atomic(&bundle.join(SPEC_FILE), &json)?;

        let shim_log_path = bundle.join(SHIM_LOG_FILE);
        let shim_log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log_path)
            .map_err(io_err("opening", &shim_log_path))?;
        let shim_log2 = shim_log.try_clone().map_err(io_err("duplicating", &shim_log_path))?;
        let (report_r, report_w) = sys::pipe().map_err(sys_err("pipe for the shim's report"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("shim")
            .arg("--bundle")
            .arg(bundle)
            .arg("--report-fd")
            .arg(REPORT_FD.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(shim_log)
            .stderr(shim_log2);
        let report_w_raw = report_w.as_raw_fd();
        // SAFETY: the hook runs in the forked child before exec and only
        // makes async-signal-safe calls (setsid, dup2, fcntl) on integers;
        // it neither allocates nor takes locks.
        unsafe {
            cmd.pre_exec(move || {
                // A new session: the shim survives the agent and its
                // terminal, and no signal for the agent's group reaches it.
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                sys::inherit_as(report_w_raw, REPORT_FD)
            });
        }
        let mut child =
            cmd.spawn().map_err(|source| RuntimeError::Spawn { exe: self.exe.clone(), role: "shim", source })?;
        drop(report_w);
        let shim_pid = child.id();
        let report = sys::read_all_until(&report_r, Instant::now() + START_TIMEOUT, 64 * 1024);
        let shim_log_tail = || sys::tail(&shim_log_path, 2048);
        let report = match report {
            Ok((bytes, true)) => bytes,
            Ok((_, false)) => {
                // Timed out: end the shim (ours, unreaped, so the PID is
                // still its) and whatever it already started.
                let _ = child.kill();
                let _ = child.wait();
                let _ = self.driver.kill_all(&spec.cgroup);
                return Err(RuntimeError::StartTimeout {
                    id: spec.id.clone(),
                    after: START_TIMEOUT,
                    log: shim_log_tail(),
                });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(sys_err("reading the shim's report")(e));
            }
        };
        match serde_json::from_slice::<ShimReport>(&report) {
            Ok(ShimReport::Started { pid, started_at_unix_ms }) => {
                // The shim is left unreaped on purpose: `wait` reaps it.
                drop(child);
                Ok(Started { shim_pid, pid, started_at_unix_ms })
            }
            Ok(ShimReport::Failed { message }) => {
                // The shim exits right after reporting.
                let _ = sys::wait_child_bounded(&mut child, Duration::from_secs(5));
                Err(RuntimeError::Start { id: spec.id.clone(), message })
            }
            Err(_) => {
                let status = match sys::wait_child_bounded(&mut child, Duration::from_secs(5)) {
                    Some(s) => s.to_string(),
                    None => "still running; killed".to_owned(),
                };
                Err(RuntimeError::ShimDied { id: spec.id.clone(), status, log: shim_log_tail() })
            }
        }
    }

    /// Resolves when the container has exited, with the shim's
    /// `exit.json`. Works for a shim that is not this process's child (a
    /// previous agent started it): it polls a pidfd (Linux 5.3) with tokio,
    /// and reaps the shim only when it is our child.
    ///
    /// # Errors
    /// The shim died without an exit record (it was killed), or a file or
    /// pidfd could not be read.
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O enabled (`enable_io`/`enable_all`).
    pub async fn wait(&self, bundle: &Path, shim_pid: u32) -> Result<ExitInfo, RuntimeError> {
        let no_record = || RuntimeError::NoExitRecord { bundle: bundle.to_owned() };
        let pidfd = match sys::pidfd_open(shim_pid) {
            Ok(fd) => fd,
            Err(Errno::ESRCH) => return read_exit(bundle)?.ok_or_else(no_record),
            Err(e) => return Err(sys_err(format!("pidfd_open({shim_pid})"))(e)),
        };
        // The pidfd pins whatever process has the PID now; it is our shim
        // only if its start time is the one the shim recorded.
        let ours = match read_state(bundle)? {
            Some(s) => s.shim_pid == shim_pid && sys::start_time(shim_pid) == Some(s.shim_start_time),
            // No state yet (a start still in progress): trust the PID.
            None => true,
        };
        if ours {
            let poll_err = io_err("polling the shim's pidfd for", bundle);
            // SAFETY: the AsyncFd owns the `OwnedFd`, so the descriptor stays
            // open and the same until the AsyncFd is dropped.
            let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| poll_err(io::Error::from(e)))?;
            // A pidfd becomes readable once the process has exited and
            // stays so; one readiness event is enough.
            let guard = fd.readable().await.map_err(io_err("polling the shim's pidfd for", bundle))?;
            drop(guard);
            sys::reap_pidfd(fd.get_ref());
        }
        read_exit(bundle)?.ok_or_else(no_record)
    }

    /// [`Runtime::wait`] for callers outside any async runtime (tools,
    /// tests): runs it on a private current-thread tokio runtime.
    ///
    /// # Errors
    /// As [`Runtime::wait`], or [`RuntimeError::WaitTimeout`]. Panics if
    /// called from inside a tokio runtime.
    pub fn wait_blocking(&self, bundle: &Path, shim_pid: u32, timeout: Duration) -> Result<ExitInfo, RuntimeError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(io_err("building a runtime to wait for", bundle))?;
        rt.block_on(async {
            tokio::time::timeout(timeout, self.wait(bundle, shim_pid))
                .await
                .map_err(|_| RuntimeError::WaitTimeout { bundle: bundle.to_owned(), after: timeout })?
        })
    }

    /// The container's state from its bundle, without blocking: running
    /// while its shim (the very process that wrote `state.json`, checked by
    /// start time) lives; exited once `exit.json` exists; otherwise gone.
    ///
    /// # Errors
    /// A malformed or unreadable state file.
    pub fn status(&self, bundle: &Path) -> Result<ContainerStatus, RuntimeError> {
        if let Some(exit) = read_exit(bundle)? {
            return Ok(ContainerStatus::Exited(exit));
        }
        let Some(state) = read_state(bundle)? else { return Ok(ContainerStatus::Gone) };
        if sys::alive(state.shim_pid, state.shim_start_time) {
            return Ok(ContainerStatus::Running { pid: state.pid, shim_pid: state.shim_pid });
        }
        // The shim may have finished between the two reads.
        Ok(read_exit(bundle)?.map_or(ContainerStatus::Gone, ContainerStatus::Exited))
    }

    /// Sends `signal` to the container's PID 1, through a pidfd checked
    /// against the recorded start time (never to a recycled PID). PID 1 of
    /// a PID namespace only receives signals it handles, and SIGKILL.
    ///
    /// # Errors
    /// [`RuntimeError::NotRunning`] when PID 1 has exited.
    pub fn signal(&self, bundle: &Path, signal: Signal) -> Result<(), RuntimeError> {
        let not_running = || RuntimeError::NotRunning { bundle: bundle.to_owned() };
        let state = read_state(bundle)?.ok_or_else(not_running)?;
        let pidfd = match sys::pidfd_open(state.pid) {
            Ok(fd) => fd,
            Err(Errno::ESRCH) => return Err(not_running()),
            Err(e) => return Err(sys_err(format!("pidfd_open({})", state.pid))(e)),
        };
        if sys::start_time(state.pid) != Some(state.pid_start_time) {
            return Err(not_running());
        }
        match sys::pidfd_send_signal(&pidfd, signal) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(not_running()),
            Err(e) => Err(sys_err(format!("pidfd_send_signal({}, {signal})", state.pid))(e)),
        }
    }

    /// SIGKILLs every process of the cgroup `cgroup` (relative to the
    /// berth root), including those `exec` started, until it is empty.
    ///
    /// # Errors
    /// As [`Driver::kill_all`].
    pub fn kill_all(&self, cgroup: &Path) -> Result<(), RuntimeError> {
        self.driver.kill_all(cgroup).map_err(|source| RuntimeError::Cgroup {
            id: cgroup.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            cgroup: cgroup.to_owned(),
            source,
        })
    }

    /// Runs `argv` inside the running container: its mount, UTS, IPC,
    /// network and PID namespaces and its cgroup, as its user with its
    /// capabilities, `no_new_privs`, environment and working directory.
    /// Output is captured (at most [`EXEC_OUTPUT_LIMIT`] bytes per stream);
    /// the process group is killed after `timeout`.
    ///
    /// # Errors
    /// The container is not running, or `argv[0]` could not be executed
    /// (the message says why, e.g. not found).
    pub fn exec(&self, bundle: &Path, argv: &[String], timeout: Duration) -> Result<ExecOutput, RuntimeError> {
        exec::run(&self.exe, bundle, argv, timeout)
    }

    /// Removes an instance after it exited: see [`Runtime::remove_instance`].
    ///
    /// # Errors
    /// As [`Runtime::remove_instance`].
    pub fn remove(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.remove_instance(&spec.bundle, &spec.cgroup)
    }

    /// Kills what is left in the cgroup and removes it, waits (briefly) for
    /// the shim to finish, detaches any mount left below the bundle and
    /// deletes the bundle. Logs (outside the bundle) stay. Idempotent.
    ///
    /// # Errors
    /// The cgroup cannot be emptied or removed, or the bundle cannot be
    /// deleted (also when its `rootfs` is still mounted).
    pub fn remove_instance(&self, bundle: &Path, cgroup: &Path) -> Result<(), RuntimeError> {
        let cgroup_err = |source| RuntimeError::Cgroup {
            id: bundle.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            cgroup: cgroup.to_owned(),
            source,
        };
        self.driver.kill_all(cgroup).map_err(cgroup_err)?;
        if let Ok(Some(state)) = read_state(bundle) {
            // The shim writes exit.json and exits once PID 1 is gone; let it
            // finish before its bundle goes.
            let deadline = Instant::now() + Duration::from_secs(5);
            while sys::alive(state.shim_pid, state.shim_start_time) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            sys::reap_shim(&state);
        }
        // rmdir fails with EBUSY while killed tasks are still being
        // released from the cgroup.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.driver.remove(cgroup) {
                Ok(()) => break,
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(cgroup_err(e)),
            }
        }
        sys::unmount_below(bundle)?;
        match fs::remove_dir_all(bundle) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io { op: "removing", path: bundle.to_owned(), source: e }),
        }
    }
}

/// The fd number the shim and exec helper find their report pipe at.
const REPORT_FD: i32 = 3;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
