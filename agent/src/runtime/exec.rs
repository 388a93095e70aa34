//! `exec`: a command inside a running container, for exec probes and
//! operators. The agent side ([`run`]) spawns `berth-agent exec` and
//! captures its output; the helper ([`exec_main`]) joins the container's
//! cgroup and namespaces and forks the command with the container's
//! credentials.

use std::{
    io::Read,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sched::{CloneFlags, setns},
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork, setpgid},
};
use serde::{Deserialize, Serialize};

use super::{
    BundleSpec, EXEC_OUTPUT_LIMIT, REPORT_FD, RuntimeError,
    init::{self, InitError, ParentDeath},
    read_bundle_spec, read_exit, read_state, sys,
};

/// How long past its timeout the agent gives the helper to report before
/// killing it.
const HELPER_GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after the helper reported (a background
/// process of the command may keep the pipes open).
const DRAIN_AFTER_REPORT: Duration = Duration::from_millis(200);

/// What an exec produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// The exit status, when the command exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// It ran past the timeout and was killed.
    pub timed_out: bool,
    /// At most [`EXEC_OUTPUT_LIMIT`] bytes each.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// `berth-agent exec` (hidden): runs a command in a running container.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The container's bundle directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Kill the command's process group after this many milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// An inherited pipe for the result (used by the agent).
    #[arg(long)]
    pub report_fd: Option<i32>,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<String>,
}

/// The helper's one message to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExecReport {
    Exited { exit_code: Option<i32>, signal: Option<i32>, timed_out: bool },
    Failed { message: String },
}

/// The helper's entry point. Must run single-threaded, before any async
/// runtime exists (it calls setns and fork). Exits with the command's
/// status (128 + signal when killed), 126 when it could not run it.
pub fn exec_main(args: ExecArgs) -> ExitCode {
    let report = args.report_fd.and_then(sys::adopt_fd);
    let result = run_helper(&args);
    let (message, code) = match &result {
        Ok(ExecReport::Exited { exit_code: Some(c), .. }) => (None, *c),
        Ok(ExecReport::Exited { signal: Some(s), .. }) => (None, 128 + s),
        Ok(_) => (None, 255),
        Err(e) => (Some(e.to_string()), 126),
    };
    let report_msg = match result {
        Ok(r) => r,
        Err(e) => ExecReport::Failed { message: e.0 },
    };
    if let Some(fd) = report
        && let Ok(bytes) = serde_json::to_vec(&report_msg)
    {
        let _ = std::io::Write::write_all(&mut std::fs::File::from(fd), &bytes);
    }
    if let Some(message) = message {
        eprintln!("berth-agent exec: {message}");
    }
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(255))
}

fn run_helper(args: &ExecArgs) -> Result<ExecReport, InitError> {
    let err = |e: RuntimeError| InitError(e.to_string());
    let BundleSpec { mut spec, cgroup_driver } = read_bundle_spec(&args.bundle).map_err(err)?;
    let not_running = || InitError(format!("container {} is not running", spec.id));
    if read_exit(&args.bundle).map_err(err)?.is_some() {
        return Err(not_running());
    }
    let state = read_state(&args.bundle).map_err(err)?.ok_or_else(not_running)?;
    let pidfd = sys::pidfd_open(state.pid).map_err(|_| not_running())?;
    if sys::start_time(state.pid) != Some(state.pid_start_time) {
        return Err(not_running());
    }
    // The cgroup first, while the host's /sys/fs/cgroup is still visible;
    // the forked command inherits it, so it counts against the limits.
    cgroup_driver
        .into_driver()
        .add_process(&spec.cgroup, 0)
        .map_err(|e| InitError(format!("joining cgroup {}: {e}", spec.cgroup.display())))?;
    // One setns on a pidfd enters all of them atomically (Linux 5.8).
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID;
    setns(pidfd.as_fd(), namespaces)
        .map_err(|e| InitError(format!("joining the namespaces of pid {}: {}", state.pid, e.desc())))?;
    spec.args.clone_from(&args.argv);
    let (fail_r, fail_w) = sys::pipe().map_err(|e| InitError(format!("pipe: {}", e.desc())))?;

    // SAFETY: the helper is single-threaded (no tokio, no other threads),
    // so the child may allocate; it ends in exec or _exit.
    match unsafe { fork() }.map_err(|e| InitError(format!("fork: {}", e.desc())))? {
        ForkResult::Child => {
            drop(fail_r);
            // Its own process group, so a timeout kills its children too.
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let e = match init::resolve_program(&spec.args[0], &spec.env) {
                Ok(program) => init::enter_and_exec(&spec, &program, None, ParentDeath::Kill),
                Err(e) => e,
            };
            init::report_failure(&fail_w, &e);
            // SAFETY: leaves the forked child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(fail_w);
            // Both sides set the group, so it exists before any kill.
            let _ = setpgid(child, child);
            let mut message = Vec::new();
            let _ = std::fs::File::from(fail_r).read_to_end(&mut message);
            if !message.is_empty() {
                let _ = waitpid(child, None);
                return Err(InitError(String::from_utf8_lossy(&message).into_owned()));
            }
            wait_with_timeout(child, args.timeout_ms.map(Duration::from_millis))
        }
    }
}

/// Waits for the command; after `timeout` kills its process group.
fn wait_with_timeout(child: Pid, timeout: Option<Duration>) -> Result<ExecReport, InitError> {
    let pidfd = sys::pidfd_open(child.as_raw() as u32).map_err(|e| InitError(format!("pidfd_open: {}", e.desc())))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    loop {
        let poll_timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    timed_out = true;
                    let _ = killpg(child, Signal::SIGKILL);
                    let _ = kill(child, Signal::SIGKILL);
                    break;
                }
                PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(InitError(format!("poll: {}", e.desc()))),
        }
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Ok(ExecReport::Exited { exit_code: Some(code), signal: None, timed_out });
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ok(ExecReport::Exited { exit_code: None, signal: Some(sig as i32), timed_out });
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(InitError(format!("waitpid: {}", e.desc()))),
        }
    }
}

/// The agent side of [`super::Runtime::exec`].
pub(super) fn run(exe: &Path, bundle: &Path, argv: &[String], timeout: Duration) -> Result<ExecOutput, RuntimeError> {
    let fail = |message: String| RuntimeError::Exec { bundle: bundle.to_owned(), message };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(fail("empty command".to_owned()));
    }
    let (report_r, report_w) =
        sys::pipe().map_err(|source| RuntimeError::Sys { op: "pipe for the exec report".to_owned(), source })?;
    let mut cmd = Command::new(exe);
    cmd.arg("exec-helper")
        .arg("--bundle")
        .arg(bundle)
        .arg("--timeout-ms")
        .arg(timeout.as_millis().to_string())
        .arg("--report-fd")
        .arg(REPORT_FD.to_string())
        .arg("--")
        .args(argv)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let report_w_raw = report_w.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec and only calls
    // dup2/fcntl on integers: async-signal-safe, no allocation.
    unsafe {
        cmd.pre_exec(move || sys::inherit_as(report_w_raw, REPORT_FD));
    }
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn { exe: exe.to_owned(), role: "exec", source })?;
    drop(report_w);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = sys::wait_child_bounded(&mut child, Duration::ZERO);
        return Err(fail("the exec helper's output pipes are missing".to_owned()));
    };
    let (stdout, stderr) = (OwnedFd::from(stdout), OwnedFd::from(stderr));
    let deadline = Instant::now() + timeout + HELPER_GRACE;
    let mut out = Capture::default();
    let mut err = Capture::default();
    let mut report = Capture::default();
    let mut open = [true, true, true];
    let mut drain_until: Option<Instant> = None;
    let mut helper_timed_out = false;
    while open.contains(&true) {
        let now = Instant::now();
        let until = drain_until.unwrap_or(deadline);
        if now >= until {
            if drain_until.is_none() {
                helper_timed_out = true;
            }
            break;
        }
        let ms = u16::try_from((until - now).as_millis().max(1)).unwrap_or(u16::MAX);
        let fds_all = [&stdout, &stderr, &report_r];
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut idx = Vec::new();
        for (i, fd) in fds_all.iter().enumerate() {
            if open[i] {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                idx.push(i);
            }
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(source) => return Err(RuntimeError::Sys { op: "poll on exec output".to_owned(), source }),
        }
        let ready: Vec<usize> =
            fds.iter().zip(&idx).filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty())).map(|(_, &i)| i).collect();
        drop(fds);
        for i in ready {
            let target = [&mut out, &mut err, &mut report];
            if !target[i].read_from(fds_all[i]) {
                open[i] = false;
                if i == 2 && drain_until.is_none() {
                    drain_until = Some(Instant::now() + DRAIN_AFTER_REPORT);
                }
            }
        }
    }
    if helper_timed_out {
        // SIGKILL to the helper; its command dies with it (parent-death
        // signal).
        let _ = child.kill();
    }
    let status = sys::wait_child_bounded(&mut child, Duration::from_secs(5));
    let mut output = ExecOutput { stdout: out.bytes, stderr: err.bytes, ..ExecOutput::default() };
    match serde_json::from_slice::<ExecReport>(&report.bytes) {
        Ok(ExecReport::Exited { exit_code, signal, timed_out }) => {
            output.exit_code = exit_code;
            output.signal = signal;
            output.timed_out = timed_out;
            Ok(output)
        }
        Ok(ExecReport::Failed { message }) => Err(fail(message)),
        Err(_) if helper_timed_out => {
            output.signal = Some(libc::SIGKILL);
            output.timed_out = true;
            Ok(output)
        }
        Err(_) => {
            let status = status.map_or_else(|| "killed".to_owned(), |s| s.to_string());
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            Err(fail(format!("the exec helper ended without a report ({status}): {stderr}")))
        }
    }
}

/// Bytes read from one pipe, kept up to [`EXEC_OUTPUT_LIMIT`].
#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
}

impl Capture {
    /// Reads what is available; false at EOF or on an error.
    fn read_from(&mut self, fd: &OwnedFd) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(self.bytes.len());
                self.bytes.extend_from_slice(&buf[..n.min(room)]);
                true
            }
            Err(Errno::EINTR | Errno::EAGAIN) => true,
            Err(_) => false,
        }
    }
}
