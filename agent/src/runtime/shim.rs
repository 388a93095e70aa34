//! The shim: `berth-agent shim --bundle DIR`, one per container, in its own
//! session. Starts the container, tells the agent once, then on its own
//! copies the output into the log, reaps the container and records how it
//! ended. Single-threaded and without a tokio runtime, so it may clone
//! into new namespaces.

use std::{
    fs,
    io::Read,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sched::CloneFlags,
    sys::{
        signal::{Signal, kill},
        wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid},
    },
    unistd::Pid,
};

use super::{
    BundleSpec, ContainerSpec, EXIT_FILE, ExitInfo, STATE_FILE, ShimReport, ShimState,
    init::{self, InitIo},
    log::{LogWriter, Stream},
    now_ms, read_bundle_spec, sys,
};
use crate::cgroups::Driver;

/// The cloned init's stack. Untouched pages cost nothing.
const STACK_SIZE: usize = 8 << 20;
/// How long output is still drained after the container exited (a process
/// that escaped the PID namespace could hold the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// `berth-agent shim` (hidden): started by [`super::Runtime::start`].
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The container's bundle directory (with `spec.json`).
    #[arg(long)]
    pub bundle: PathBuf,
    /// An inherited pipe for the one report to the agent (PID or error).
    #[arg(long)]
    pub report_fd: Option<i32>,
}

/// The shim's entry point. Must run before any thread or async runtime
/// exists: it clones into new namespaces.
pub fn shim_main(args: ShimArgs) -> ExitCode {
    let report = args.report_fd.and_then(sys::adopt_fd);
    let mut reporter = Reporter(report);
    match run(&args.bundle, &mut reporter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            reporter.send(&ShimReport::Failed { message: message.clone() });
            note(&args.bundle, &message);
            ExitCode::FAILURE
        }
    }
}

/// A line in `shim.log` (the shim's stderr).
fn note(bundle: &Path, message: &str) {
    eprintln!("{} berth-shim {}: {message}", super::log::rfc3339_nano(std::time::SystemTime::now()), bundle.display());
}

/// The pipe to the agent; one message, then closed.
struct Reporter(Option<OwnedFd>);

impl Reporter {
    fn send(&mut self, report: &ShimReport) {
        let Some(fd) = self.0.take() else { return };
        let Ok(bytes) = serde_json::to_vec(report) else { return };
        // The agent may be gone (EPIPE, SIGPIPE is ignored): the container
        // runs on regardless.
        let mut file = fs::File::from(fd);
        let _ = std::io::Write::write_all(&mut file, &bytes);
    }
}

/// A started container, as the shim holds it.
struct Container {
    pid: Pid,
    pidfd: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    started_at_unix_ms: u64,
}

fn run(bundle: &Path, reporter: &mut Reporter) -> Result<(), String> {
    let _ = std::env::set_current_dir("/");
    let BundleSpec { spec, cgroup_driver } = read_bundle_spec(bundle).map_err(|e| e.to_string())?;
    let driver = cgroup_driver.into_driver();
    let mut log = LogWriter::open(&spec.log).map_err(|e| format!("opening log {}: {e}", spec.log.path.display()))?;
    let container = start(&spec, driver.as_ref())?;
    let state = ShimState {
        shim_pid: std::process::id(),
        shim_start_time: sys::start_time(std::process::id()).unwrap_or(0),
        pid: container.pid.as_raw() as u32,
        pid_start_time: sys::start_time(container.pid.as_raw() as u32).unwrap_or(0),
        started_at_unix_ms: container.started_at_unix_ms,
    };
    let recorded = serde_json::to_vec(&state)
        .map_err(|e| format!("encoding state: {e}"))
        .and_then(|json| sys::write_atomic(&bundle.join(STATE_FILE), &json).map_err(|e| e.to_string()));
    if let Err(e) = recorded {
        let _ = kill(container.pid, Signal::SIGKILL);
        let _ = waitpid(container.pid, None);
        return Err(e);
    }
    reporter.send(&ShimReport::Started { pid: state.pid, started_at_unix_ms: state.started_at_unix_ms });

    let status = supervise(&container, &mut log, bundle);
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        other => {
            note(bundle, &format!("unexpected wait status {other:?}"));
            (255, None)
        }
    };
    let oom_kills = match driver.stats(&spec.cgroup) {
        Ok(stats) => stats.oom_kill_count,
        Err(e) => {
            note(bundle, &format!("reading the OOM kill count: {e}"));
            0
        }
    };
    let info = ExitInfo {
        exit_code,
        signal,
        // PID 1 itself OOM-killed (SIGKILL), or a shell PID 1 reporting
        // its OOM-killed child the usual way (137).
        oom_killed: oom_kills > 0 && (signal == Some(libc::SIGKILL) || exit_code == 128 + libc::SIGKILL),
        started_at_unix_ms: container.started_at_unix_ms,
        finished_at_unix_ms: now_ms(),
    };
    let json = serde_json::to_vec(&info).map_err(|e| format!("encoding exit record: {e}"))?;
    sys::write_atomic(&bundle.join(EXIT_FILE), &json).map_err(|e| e.to_string())
}

/// Clones the init into its namespaces, puts it into the cgroup, lets it
/// run and waits for its exec (or its failure message).
fn start(spec: &ContainerSpec, driver: &dyn Driver) -> Result<Container, String> {
    let netns = match &spec.netns {
        Some(path) => Some(OwnedFd::from(
            fs::File::open(path).map_err(|e| format!("opening network namespace {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let devnull = OwnedFd::from(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("opening /dev/null: {e}"))?,
    );
    let pipe = |what: &str| sys::pipe().map_err(|e| format!("pipe for {what}: {}", e.desc()));
    let (out_r, out_w) = pipe("stdout")?;
    let (err_r, err_w) = pipe("stderr")?;
    let (go_r, go_w) = pipe("synchronisation")?;
    let (fail_r, fail_w) = pipe("start errors")?;

    let mut flags =
        CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if netns.is_none() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let io = InitIo {
        go: &go_r,
        go_w: go_w.as_raw_fd(),
        fail: &fail_w,
        stdin: &devnull,
        stdout: &out_w,
        stderr: &err_w,
        netns: netns.as_ref(),
    };
    let mut stack = vec![0u8; STACK_SIZE];
    // SAFETY: the shim is single-threaded, so the child (a copy of this
    // address space, without CLONE_VM) has no lock held by a vanished
    // thread. It runs `container_init` on `stack`, which is large enough
    // for it, and ends in execve or exit without returning here.
    let pid = unsafe {
        nix::sched::clone(Box::new(|| init::container_init(spec, &io)), &mut stack, flags, Some(libc::SIGCHLD))
    }
    .map_err(|e| format!("clone into new namespaces ({flags:?}): {}", e.desc()))?;
    drop(stack);
    drop((go_r, fail_w, out_w, err_w, devnull, netns));

    let kill_child = |why: String| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        why
    };
    let pidfd = sys::pidfd_open(pid.as_raw() as u32).map_err(|e| kill_child(format!("pidfd_open: {}", e.desc())))?;
    driver
        .add_process(&spec.cgroup, pid.as_raw() as u32)
        .map_err(|e| kill_child(format!("joining cgroup {}: {e}", spec.cgroup.display())))?;
    nix::unistd::write(&go_w, &[1]).map_err(|e| kill_child(format!("releasing the init: {}", e.desc())))?;
    drop(go_w);

    // EOF without a message: the exec worked (the pipe is close-on-exec).
    let mut message = Vec::new();
    let read = fs::File::from(fail_r).read_to_end(&mut message);
    let started_at_unix_ms = now_ms();
    if let Err(e) = read {
        return Err(kill_child(format!("reading the init's start report: {e}")));
    }
    if !message.is_empty() {
        let _ = waitpid(pid, None);
        return Err(String::from_utf8_lossy(&message).into_owned());
    }
    Ok(Container { pid, pidfd, stdout: out_r, stderr: err_r, started_at_unix_ms })
}

/// Copies output into the log until the container has exited and its
/// output is drained; returns its wait status.
fn supervise(c: &Container, log: &mut LogWriter, bundle: &Path) -> WaitStatus {
    let mut open = [true, true];
    let mut status = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut log_failed = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_some() && !open.contains(&true) {
            break;
        }
        let timeout = match drain_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                PollTimeout::from(u16::try_from(left.as_millis()).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        let streams = [(&c.stdout, Stream::Stdout), (&c.stderr, Stream::Stderr)];
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        for (i, (fd, _)) in streams.iter().enumerate() {
            if open[i] {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(Some(i));
            }
        }
        if status.is_none() {
            fds.push(PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN));
            which.push(None);
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                note(bundle, &format!("poll: {}", e.desc()));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let ready: Vec<Option<usize>> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(fds);
        for w in ready {
            match w {
                Some(i) => {
                    let (fd, stream) = streams[i];
                    match nix::unistd::read(fd, &mut buf) {
                        Ok(0) => open[i] = false,
                        Ok(n) => {
                            if let Err(e) = log.write(stream, &buf[..n])
                                && !log_failed
                            {
                                // Keep draining (a blocked writer would
                                // stall the container); say it once.
                                log_failed = true;
                                note(bundle, &format!("writing the container log: {e}"));
                            }
                        }
                        Err(Errno::EINTR | Errno::EAGAIN) => {}
                        Err(e) => {
                            note(bundle, &format!("reading {}: {}", stream_name(stream), e.desc()));
                            open[i] = false;
                        }
                    }
                }
                None => match waitid(Id::PIDFd(c.pidfd.as_fd()), WaitPidFlag::WEXITED) {
                    Ok(s) => {
                        status = Some(s);
                        drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        note(bundle, &format!("waiting for the container: {}", e.desc()));
                        status = Some(WaitStatus::StillAlive);
                        drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                },
            }
        }
    }
    if let Err(e) = log.finish() {
        note(bundle, &format!("flushing the container log: {e}"));
    }
    status.unwrap_or(WaitStatus::StillAlive)
}

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}
