//! Small system helpers: pidfds, `/proc/<pid>/stat`, pipes, atomic files.

use std::{
    fs,
    io::{self, Write},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        signal::Signal,
        wait::{Id, WaitPidFlag, waitid},
    },
};

use super::{RuntimeError, ShimState};

/// A close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
}

/// In a `pre_exec` hook: makes `fd` available as `target` across exec.
/// Async-signal-safe (no allocation).
pub(super) fn inherit_as(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: plain fd syscalls on integers; `fd` is open (the parent keeps
    // it open until after spawn) and `target` is a small fd number.
    let rc = unsafe {
        if fd == target {
            // dup2 onto itself would keep FD_CLOEXEC set.
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Takes ownership of an inherited descriptor named on the command line
/// (`--report-fd`), if it is open and not a standard stream.
pub(super) fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    let open = fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    // SAFETY: the descriptor is open, was inherited for this purpose, and
    // nothing else in this process refers to it.
    open.then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads `fd` until EOF or `deadline`, keeping at most `limit` bytes.
/// Returns the bytes and whether EOF was reached.
pub(super) fn read_all_until(fd: &OwnedFd, deadline: Instant, limit: usize) -> Result<(Vec<u8>, bool), Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((out, false));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Ok((out, true)),
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The last `max` bytes of a text file (for error messages), lossy.
pub(super) fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Waits up to `timeout` for our child; kills and reaps it after that.
pub(super) fn wait_child_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// `pidfd_open(2)` (Linux 5.3): a handle on the process that has `pid` now.
pub(super) fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: the syscall takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)` (Linux 5.1): signals exactly the pidfd's process.
pub(super) fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> Result<(), Errno> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (the kernel
    // fills in a SI_USER one) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Reaps the exited process behind `pidfd` if it is our child; otherwise
/// (not our child, not exited) does nothing.
pub(super) fn reap_pidfd(pidfd: &OwnedFd) {
    let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG);
}

/// Reaps the shim of `state` if it has exited and is our child. Checked by
/// start time, so another child that got the PID is never reaped.
pub(super) fn reap_shim(state: &ShimState) {
    if let Ok(fd) = pidfd_open(state.shim_pid)
        && start_time(state.shim_pid) == Some(state.shim_start_time)
    {
        reap_pidfd(&fd);
    }
}

/// The state letter and start time (field 22, clock ticks after boot) from
/// `/proc/<pid>/stat`; `None` when there is no such process.
pub(super) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`; `comm` may contain spaces and parentheses,
/// so fields are counted after the last `)`.
pub(super) fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `state` is field 3; starttime is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

pub(super) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// The process `pid` exists, has not exited (zombies count as exited) and
/// is the one that started at `start`.
pub(super) fn alive(pid: u32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |op: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| RuntimeError::Io { op, path, source }
    };
    let mut file = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming into place", path))
}

/// Mount points at or below `dir` in this mount namespace, from mountinfo
/// text (octal escapes decoded), deepest first.
pub(super) fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_octal(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or below `dir` (deepest first). The container's
/// own mounts live in its mount namespace; this only finds what a crash or
/// an operator left in the agent's.
pub(super) fn unmount_below(dir: &Path) -> Result<(), RuntimeError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(mountinfo).map_err(|source| RuntimeError::Io {
        op: "reading",
        path: mountinfo.to_owned(),
        source,
    })?;
    for m in mounts_below(&text, dir) {
        match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(source) => return Err(RuntimeError::Sys { op: format!("umount {}", m.display()), source }),
        }
    }
    Ok(())
}
