//! Child processes owned by a test.
//!
//! # Design
//! [`ChildGuard`] owns one spawned process: its stdout and stderr are
//! drained by two threads into bounded line buffers (so a chatty child never
//! blocks on a full pipe, and a test can wait for a line such as `ready`),
//! and on drop it is sent SIGTERM, then SIGKILL, and reaped. Signals go to
//! the PID we spawned only, and only while it is unreaped, so the PID cannot
//! have been reused by an unrelated process.
//!
//! A guard may be registered with a [`Registry`] (the one of the [`Netns`]
//! it runs in): the namespace kills what is still alive when it is dropped
//! first. Reaping and killing both happen under the registry lock, which
//! keeps the "unreaped, so the PID is ours" invariant across threads.
//!
//! # Limitations
//! Grandchildren are not tracked; a child that forks and exits leaves them
//! behind (the test server and `berth-agent` do not).
//!
//! [`Netns`]: crate::Netns

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait::deadline_after;

/// Lines kept per stream; older lines are dropped first.
const MAX_LINES: usize = 20_000;
/// Lines of stderr printed when a guard is dropped during a panic.
const TAIL_ON_PANIC: usize = 40;
/// How long a child gets between SIGTERM and SIGKILL on drop.
const DROP_GRACE: Duration = Duration::from_secs(2);
/// Default bound for short helper commands (`ip`, `ethtool`, `sysctl`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which output stream of a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// PIDs of unreaped children tied to one owner (a network namespace).
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<BTreeSet<u32>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        // A panic while holding this lock cannot leave the set inconsistent
        // (single insert/remove), so a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// SIGKILLs every registered child that has not been reaped yet.
    /// The guards still reap them when they drop.
    pub fn kill_all(&self, owner: &str) {
        let live = self.lock();
        for &pid in live.iter() {
            if let Err(e) = kill(pid_of(pid), Signal::SIGKILL) {
                eprintln!("berth-tests: {owner}: kill {pid}: {e}");
            }
        }
    }
}

/// Captured lines of one stream.
#[derive(Debug, Default)]
struct Captured {
    state: Mutex<CapturedState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct CapturedState {
    lines: VecDeque<String>,
    dropped: usize,
    closed: bool,
}

impl Captured {
    fn lock(&self) -> MutexGuard<'_, CapturedState> {
        // The drain thread only pushes whole lines; poisoning cannot leave a
        // half-written state behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drain(self: Arc<Self>, pipe: impl Read) {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                    let mut state = self.lock();
                    if state.lines.len() == MAX_LINES {
                        state.lines.pop_front();
                        state.dropped += 1;
                    }
                    state.lines.push_back(line);
                    drop(state);
                    self.changed.notify_all();
                }
            }
        }
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn lines(&self) -> Vec<String> {
        self.lock().lines.iter().cloned().collect()
    }

    fn tail(&self, n: usize) -> String {
        let state = self.lock();
        let skip = state.lines.len().saturating_sub(n);
        state.lines.iter().skip(skip).map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// Waits until the stream is closed (EOF) or `deadline` passes.
    fn wait_closed(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

/// The result of a child that ran to completion.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// One spawned process: output captured, SIGTERM + SIGKILL + reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    /// `None` once reaped.
    child: Option<Child>,
    status: Option<ExitStatus>,
    pid: u32,
    label: String,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    registry: Option<Arc<Registry>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr captured.
    ///
    /// `label` names the child in errors and in the output dumped when a
    /// test panics. `registry` (a namespace's) also kills the child if the
    /// namespace guard is dropped first.
    ///
    /// # Errors
    /// If the program cannot be started.
    pub fn spawn(mut cmd: Command, label: impl Into<String>, registry: Option<Arc<Registry>>) -> Result<Self> {
        let label = label.into();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Hold the registry lock across spawn + insert so a concurrent
        // `kill_all` never sees a half-registered child.
        let mut child = {
            let live = registry.as_ref().map(|r| r.lock());
            let child = cmd.spawn().with_context(|| format!("{label}: spawn {cmd:?}"))?;
            if let Some(mut live) = live {
                live.insert(child.id());
            }
            child
        };
        let pid = child.id();
        let stdout = Arc::new(Captured::default());
        let stderr = Arc::new(Captured::default());
        // Drain threads are detached: they end at EOF, which a grandchild
        // holding the pipe could delay indefinitely; nothing joins them.
        if let Some(pipe) = child.stdout.take() {
            let cap = Arc::clone(&stdout);
            std::thread::spawn(move || cap.drain(pipe));
        }
        if let Some(pipe) = child.stderr.take() {
            let cap = Arc::clone(&stderr);
            std::thread::spawn(move || cap.drain(pipe));
        }
        Ok(Self { child: Some(child), status: None, pid, label, stdout, stderr, registry })
    }

    /// The PID of the spawned program. With `ip netns exec` and `nsenter`
    /// (no `--fork`) it is the PID of the target program itself, since both
    /// exec in place.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn captured(&self, stream: Stream) -> &Captured {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// All lines captured so far from `stream` (the last 20 000 at most).
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.captured(stream).lines()
    }

    /// The last `n` lines of `stream`, joined with newlines.
    pub fn tail(&self, stream: Stream, n: usize) -> String {
        self.captured(stream).tail(n)
    }

    /// Waits until a line of `stream` contains `needle` (lines printed
    /// before the call count too).
    ///
    /// # Errors
    /// On timeout, or when the stream closes (the child exited) first; the
    /// error carries the tail of stderr.
    pub fn wait_for_line(&self, stream: Stream, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = deadline_after(timeout);
        let cap = self.captured(stream);
        let mut state = cap.lock();
        loop {
            if let Some(line) = state.lines.iter().find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                let why = if state.closed { "the child closed it (exited?)" } else { "timed out" };
                drop(state);
                bail!(
                    "{}: no {stream:?} line containing {needle:?} within {timeout:?}: {why}; stderr tail:\n{}",
                    self.label,
                    self.tail(Stream::Stderr, TAIL_ON_PANIC)
                );
            }
            state = cap.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Reaps the child if it has exited, without blocking.
    ///
    /// # Errors
    /// If `waitpid` fails.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(self.status);
        };
        // Reap under the registry lock: once reaped the PID may be reused,
        // so it must leave the registry in the same critical section.
        let live = self.registry.as_ref().map(|r| r.lock());
        let status = child.try_wait().with_context(|| format!("{}: waitpid {}", self.label, self.pid))?;
        if let Some(status) = status {
            if let Some(mut live) = live {
                live.remove(&self.pid);
            }
            self.status = Some(status);
            self.child = None;
        }
        Ok(status)
    }

    /// Waits up to `timeout` for the child to exit by itself.
    ///
    /// # Errors
    /// On timeout (the child is left running; drop or [`Self::terminate`]
    /// it) or if `waitpid` fails.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = deadline_after(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{}: still running after {timeout:?}", self.label);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the child if it has not been reaped yet.
    ///
    /// # Errors
    /// If `kill(2)` fails.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // Not reaped (checked just above, and only this guard reaps it), so
        // the PID still names our child, possibly as a zombie.
        kill(pid_of(self.pid), signal).with_context(|| format!("{}: kill -{signal} {}", self.label, self.pid))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    ///
    /// # Errors
    /// If signalling or reaping fails.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        if let Ok(status) = self.wait(grace) {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL)?;
        self.wait(Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the child to exit, then collects its
    /// output. On timeout the child is killed.
    ///
    /// # Errors
    /// On timeout (with the stderr tail) or if reaping fails.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        let status = match self.wait(timeout) {
            Ok(status) => status,
            Err(e) => {
                let _ = self.terminate(Duration::from_millis(200));
                bail!("{e}; stderr tail:\n{}", self.tail(Stream::Stderr, TAIL_ON_PANIC));
            }
        };
        // The pipes close at exit unless a grandchild inherited them; give
        // the drain threads a short, bounded time to reach EOF.
        let eof_deadline = Instant::now() + Duration::from_secs(2);
        self.stdout.wait_closed(eof_deadline);
        self.stderr.wait_closed(eof_deadline);
        Ok(Finished { status, stdout: join_lines(&self.stdout), stderr: join_lines(&self.stderr) })
    }
}

fn join_lines(cap: &Captured) -> String {
    let mut out = cap.lines().join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none()
            && let Err(e) = self.terminate(DROP_GRACE)
        {
            eprintln!("berth-tests: {}: cleanup: {e:#}", self.label);
        }
        if std::thread::panicking() {
            let tail = self.tail(Stream::Stderr, TAIL_ON_PANIC);
            if !tail.is_empty() {
                eprintln!("berth-tests: --- stderr tail of {} (pid {}) ---\n{tail}\n---", self.label, self.pid);
            }
        }
    }
}

fn pid_of(pid: u32) -> Pid {
    // PIDs fit in pid_t (Linux caps pid_max at 2^22).
    Pid::from_raw(pid as libc::pid_t)
}

/// Runs `cmd` to completion within `timeout`; returns its stdout.
///
/// # Errors
/// If it cannot start, times out, or exits unsuccessfully; the message
/// names the command and carries its stderr.
pub fn run(cmd: Command, timeout: Duration) -> Result<String> {
    let line = format!("{cmd:?}");
    let finished = ChildGuard::spawn(cmd, line.clone(), None)?.finish(timeout)?;
    if !finished.status.success() {
        bail!("`{line}` failed ({}): {}", finished.status, finished.stderr.trim());
    }
    Ok(finished.stdout)
}

/// [`run`] for an argv slice.
///
/// # Errors
/// As [`run`]; also if `argv` is empty.
pub fn run_argv(argv: &[&str], timeout: Duration) -> Result<String> {
    let Some((program, args)) = argv.split_first() else {
        bail!("empty command");
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    run(cmd, timeout)
}
