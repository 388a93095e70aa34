//! The container's PID 1 between clone and exec, and the last step it
//! shares with `exec`: rlimits, user, capabilities, `no_new_privs`, exec.
//!
//! Runs in a freshly cloned, single-threaded child: it may allocate and
//! must never return into the shim's code; every failure becomes a message
//! for the shim.

use std::{
    convert::Infallible,
    ffi::CString,
    fs,
    io::{self, Write},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd, RawFd},
        unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::Path,
};

use caps::{CapSet, Capability, CapsHashSet};
use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns},
    sys::{
        resource::{Resource, getrlimit, setrlimit},
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
        stat::{Mode, SFlag, mknod, umask},
    },
    unistd::{Gid, Uid, chdir, execve, pivot_root, setgroups, sethostname, setresgid, setresuid},
};

use super::ContainerSpec;

/// containerd's (and Docker's) default capabilities: `CapEff` of a root
/// container is `00000000a80425fb`.
pub(super) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// runc's and containerd's default masked paths: a file gets `/dev/null`
/// bound over it, a directory an empty read-only tmpfs.
pub(super) const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's and containerd's default read-only paths.
pub(super) const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `RLIMIT_NOFILE` in containers, as containerd sets it.
pub(super) const NOFILE: u64 = 1_048_576;

/// `PATH` when the container's environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the container (or an exec) could not start; the text goes to the
/// agent verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InitError(pub String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn sys(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> InitError {
    move |e| InitError(format!("{what}: {}", e.desc()))
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> InitError {
    move |e| {
        let why = e.raw_os_error().map_or_else(|| e.to_string(), |n| Errno::from_raw(n).desc().to_owned());
        InitError(format!("{what}: {why}"))
    }
}

/// The descriptors the cloned init works with; all but stdio are
/// close-on-exec.
pub(super) struct InitIo<'a> {
    /// Read end of the "go" pipe: one byte once the shim has put the init
    /// into the cgroup.
    pub go: &'a OwnedFd,
    /// The shim's write end of the same pipe, which the child must close:
    /// its copy would keep the pipe open if the shim died.
    pub go_w: RawFd,
    /// Write end of the failure pipe (close-on-exec: EOF = exec worked).
    pub fail: &'a OwnedFd,
    pub stdin: &'a OwnedFd,
    pub stdout: &'a OwnedFd,
    pub stderr: &'a OwnedFd,
    /// The pod's network namespace, when joining one.
    pub netns: Option<&'a OwnedFd>,
}

/// The cloned child's body: sets up the container and execs. Returns only
/// on failure, after sending the message down the failure pipe; the return
/// value is the child's exit status.
pub(super) fn container_init(spec: &ContainerSpec, fds: &InitIo<'_>) -> isize {
    let Err(e) = setup_and_exec(spec, fds);
    report_failure(fds.fail, &e);
    1
}

/// Writes `e` to the failure pipe (best effort: there is nobody else to
/// tell). Messages are far below PIPE_BUF, so one write suffices.
pub(super) fn report_failure(fail: &OwnedFd, e: &InitError) {
    let _ = nix::unistd::write(fail, e.0.as_bytes());
}

fn setup_and_exec(spec: &ContainerSpec, fds: &InitIo<'_>) -> Result<Infallible, InitError> {
    // SAFETY: `go_w` is this child's copy of the shim's write end (the fd
    // table was copied by clone); the `OwnedFd` in the copied memory is
    // never dropped here, since this process ends in exec or exit.
    unsafe { libc::close(fds.go_w) };
    // Until the exec, die with the shim rather than linger half set up.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("prctl(PR_SET_PDEATHSIG)"))?;
    let mut byte = [0u8; 1];
    match nix::unistd::read(fds.go, &mut byte) {
        Ok(1) => {}
        _ => return Err(InitError("the shim went away before the container could join its cgroup".to_owned())),
    }
    if let Some(netns) = fds.netns {
        let path = spec.netns.as_deref().unwrap_or(Path::new("?")).display().to_string();
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(sys(format!("joining network namespace {path}")))?;
    }
    sethostname(&spec.hostname).map_err(sys(format!("sethostname {:?}", spec.hostname)))?;
    umask(Mode::from_bits_truncate(0o022));
    pivot_into_rootfs(spec)?;
    write_hostname(&spec.hostname)?;
    mount_api_filesystems()?;
    mask_paths()?;
    if !Path::new(&spec.cwd).is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&spec.cwd)
            .map_err(io(format!("creating cwd {}", spec.cwd)))?;
    }
    let program = resolve_program(&spec.args[0], &spec.env)?;
    let stdio = [fds.stdin.as_raw_fd(), fds.stdout.as_raw_fd(), fds.stderr.as_raw_fd()];
    Err(enter_and_exec(spec, &program, Some(stdio), ParentDeath::Keep))
}

/// Mounts the overlay on `bundle/rootfs` and makes it `/`.
fn pivot_into_rootfs(spec: &ContainerSpec) -> Result<(), InitError> {
    let none: Option<&str> = None;
    // Nothing mounted from here on propagates to the host, and pivot_root
    // needs a private parent mount.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(sys("making / rprivate"))?;
    let rootfs = spec.bundle.join("rootfs");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.image_rootfs.display(),
        spec.bundle.join("upper").display(),
        spec.bundle.join("work").display()
    );
    mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::empty(), Some(opts.as_str())).map_err(|e| {
        let hint = if e == Errno::ENODEV { " (overlayfs is not available in this kernel)" } else { "" };
        InitError(format!("mounting overlay on {} ({opts}): {}{hint}", rootfs.display(), e.desc()))
    })?;
    chdir(&rootfs).map_err(sys(format!("chdir {}", rootfs.display())))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one and
    // is detached right away; no directory for it is needed in the image.
    pivot_root(".", ".").map_err(sys(format!("pivot_root into {}", rootfs.display())))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    chdir("/").map_err(sys("chdir /"))
}

/// `/etc/hostname` in the container's own filesystem, written before
/// `/proc` and `/sys` exist so that no symlink can point the write at them.
fn write_hostname(hostname: &str) -> Result<(), InitError> {
    mkdir_p("/etc")?;
    let path = Path::new("/etc/hostname");
    if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
        fs::remove_file(path).map_err(io("replacing /etc/hostname"))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{hostname}\n").as_bytes()))
        .map_err(io("writing /etc/hostname"))
}

fn mkdir_p(path: &str) -> Result<(), InitError> {
    fs::DirBuilder::new().recursive(true).mode(0o755).create(path).map_err(io(format!("creating {path}")))
}

fn mount_fs(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), InitError> {
    mkdir_p(target)?;
    mount(Some(source), target, Some(fstype), flags, data).map_err(sys(format!("mounting {fstype} on {target}")))
}

/// `/proc`, `/dev` (with its nodes, `pts`, `shm`, `mqueue`) and a read-only
/// `/sys`, all fresh instances: nothing comes from the host.
fn mount_api_filesystems() -> Result<(), InitError> {
    let (nosuid, nodev, noexec) = (MsFlags::MS_NOSUID, MsFlags::MS_NODEV, MsFlags::MS_NOEXEC);
    mount_fs("proc", "/proc", "proc", nosuid | nodev | noexec, None)?;
    mount_fs("tmpfs", "/dev", "tmpfs", nosuid | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k"))?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let path = format!("/dev/{name}");
        mknod(path.as_str(), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), libc::makedev(major, minor))
            .map_err(sys(format!("mknod {path}")))?;
        // mknod's mode is filtered by the umask.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(io(format!("chmod {path}")))?;
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, link).map_err(io(format!("symlink {link}")))?;
    }
    mount_fs("devpts", "/dev/pts", "devpts", nosuid | noexec, Some("newinstance,ptmxmode=0666,mode=0620,gid=5"))?;
    mount_fs("shm", "/dev/shm", "tmpfs", nosuid | nodev | noexec, Some("mode=1777,size=65536k"))?;
    mount_fs("mqueue", "/dev/mqueue", "mqueue", nosuid | nodev | noexec, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid | nodev | noexec | MsFlags::MS_RDONLY, None)
}

/// containerd's masked and read-only paths.
fn mask_paths() -> Result<(), InitError> {
    let none: Option<&str> = None;
    for path in MASKED_PATHS {
        let Ok(meta) = fs::metadata(path) else { continue };
        let done = if meta.is_dir() {
            mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, none)
        } else {
            mount(Some("/dev/null"), path, none, MsFlags::MS_BIND, none)
        };
        done.map_err(sys(format!("masking {path}")))?;
    }
    for path in READONLY_PATHS {
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(Some(path), path, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
            .map_err(sys(format!("bind-mounting {path}")))?;
        // A bind remount changes only the per-mount flags; /proc's nosuid,
        // nodev and noexec are kept by repeating them.
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(none, path, none, flags, none).map_err(sys(format!("remounting {path} read-only")))?;
    }
    Ok(())
}

/// `args[0]` as execve wants it: as is when it has a `/`, else the first
/// executable regular file of that name in the container's `PATH`.
pub(super) fn resolve_program(arg0: &str, env: &[String]) -> Result<CString, InitError> {
    let found = if arg0.contains('/') {
        Some(arg0.to_owned())
    } else {
        let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{arg0}", d.trim_end_matches('/')))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    };
    let Some(found) = found else {
        return Err(InitError(format!("exec {arg0}: executable file not found in $PATH")));
    };
    CString::new(found).map_err(|_| InitError(format!("exec {arg0}: the path contains NUL")))
}

/// Whether the exec'd process keeps a parent-death signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParentDeath {
    /// Clear it: the container outlives its shim.
    Keep,
    /// SIGKILL when the parent (the exec helper) dies.
    Kill,
}

/// The last steps before the exec, shared by the init and `exec`: rlimits,
/// groups, gid, uid, capabilities, `no_new_privs`, cwd, stdio, signal
/// state, then `execve`. Returns only on failure.
pub(super) fn enter_and_exec(
    spec: &ContainerSpec,
    program: &CString,
    stdio: Option<[RawFd; 3]>,
    parent_death: ParentDeath,
) -> InitError {
    let Err(e) = drop_privileges_and_exec(spec, program, stdio, parent_death);
    e
}

fn drop_privileges_and_exec(
    spec: &ContainerSpec,
    program: &CString,
    stdio: Option<[RawFd; 3]>,
    parent_death: ParentDeath,
) -> Result<Infallible, InitError> {
    let cstrings = |v: &[String]| -> Result<Vec<CString>, InitError> {
        v.iter().map(|s| CString::new(s.as_str()).map_err(|_| InitError(format!("{s:?} contains NUL")))).collect()
    };
    let args = cstrings(&spec.args)?;
    let env = cstrings(&spec.env)?;
    set_nofile()?;
    set_capabilities_and_user(spec)?;
    chdir(spec.cwd.as_str()).map_err(sys(format!("chdir {}", spec.cwd)))?;
    // Credential changes clear the parent-death signal, so it is set (or
    // cleared) only now.
    let pdeath = match parent_death {
        ParentDeath::Keep => None,
        ParentDeath::Kill => Some(Signal::SIGKILL),
    };
    nix::sys::prctl::set_pdeathsig(pdeath).map_err(sys("prctl(PR_SET_PDEATHSIG)"))?;
    nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    if let Some([stdin, stdout, stderr]) = stdio {
        for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
            // SAFETY: dup2 on descriptors this process owns; the targets
            // are the standard streams, replaced on purpose.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(sys(format!("dup2 onto fd {target}"))(Errno::last()));
            }
        }
    }
    reset_signals()?;
    // SAFETY: marks every descriptor from 3 up close-on-exec; nothing here
    // uses them after the exec, and the failure pipe is close-on-exec
    // already.
    unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    let Err(e) = execve(program, &args, &env);
    Err(InitError(format!("exec {}: {}", program.to_string_lossy(), e.desc())))
}

/// `RLIMIT_NOFILE` = [`NOFILE`]; without `CAP_SYS_RESOURCE` (some
/// sandboxes drop it) the hard limit cannot be raised, and the container
/// gets the current hard limit instead.
fn set_nofile() -> Result<(), InitError> {
    match setrlimit(Resource::RLIMIT_NOFILE, NOFILE, NOFILE) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => {
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(sys("getrlimit NOFILE"))?;
            let limit = hard.min(NOFILE);
            setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(sys(format!("setrlimit NOFILE {limit}")))
        }
        Err(e) => Err(sys(format!("setrlimit NOFILE {NOFILE}"))(e)),
    }
}

/// Bounding set, user and group, then the effective, permitted, inheritable
/// and ambient sets (runc's order: the bounding set needs CAP_SETPCAP, the
/// uid change needs CAP_SETUID, and KEEPCAPS keeps the permitted set across
/// it).
fn set_capabilities_and_user(spec: &ContainerSpec) -> Result<(), InitError> {
    let keep: CapsHashSet = DEFAULT_CAPS.into_iter().collect();
    let caps_err = |what: &'static str| move |e: caps::errors::CapsError| InitError(format!("{what}: {e}"));
    // Capabilities the caps crate may not know yet are dropped too: walk
    // the numbers until the kernel says there are no more.
    for cap in 0..64 {
        if keep.iter().any(|c| c.index() == cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number; no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc < 0 {
            match Errno::last() {
                Errno::EINVAL => break,
                e => return Err(sys(format!("dropping capability {cap} from the bounding set"))(e)),
            }
        }
    }
    caps::securebits::set_keepcaps(true).map_err(caps_err("prctl(PR_SET_KEEPCAPS)"))?;
    let groups: Vec<Gid> = spec.additional_gids.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(sys(format!("setgroups {:?}", spec.additional_gids)))?;
    let (gid, uid) = (Gid::from_raw(spec.gid), Uid::from_raw(spec.uid));
    setresgid(gid, gid, gid).map_err(sys(format!("setgid {}", spec.gid)))?;
    setresuid(uid, uid, uid).map_err(sys(format!("setuid {}", spec.uid)))?;
    caps::securebits::set_keepcaps(false).map_err(caps_err("prctl(PR_SET_KEEPCAPS)"))?;
    // Effective first: it must stay a subset of permitted at every step.
    let effective = if spec.uid == 0 { keep.clone() } else { CapsHashSet::new() };
    caps::set(None, CapSet::Effective, &effective).map_err(caps_err("setting effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("setting permitted capabilities"))?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(caps_err("clearing inheritable capabilities"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing ambient capabilities"))
}

/// Default dispositions and an empty mask: the shim's Rust runtime ignores
/// SIGPIPE, and ignored signals survive exec.
fn reset_signals() -> Result<(), InitError> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installs the default disposition; no handler code runs.
        // glibc-reserved real-time signals fail with EINVAL, harmlessly.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(sys("sigprocmask"))
}
