//! Network namespace files and running code inside a namespace.
//!
//! # Design
//! A pod's network namespace is kept alive by a bind mount of its nsfs
//! inode onto `<netns_dir>/<uid>`, exactly like `ip netns add`: a
//! short-lived std thread `unshare(CLONE_NEWNET)`s (only that thread moves)
//! and bind-mounts `/proc/thread-self/ns/net` onto an empty file. Like
//! iproute2 does for `/run/netns`, `netns_dir` is first made a mount point
//! of itself with shared propagation, so that unmounting a namespace file
//! here also unmounts the copies other mount namespaces (containers) got,
//! and the namespace can be freed.
//!
//! [`in_netns`] runs a closure on a scoped std thread that first `setns`es
//! into a namespace: a netns change affects only the calling thread, and a
//! netlink socket stays bound to the namespace it was created in, so every
//! socket is made on that thread. Neither ever happens on a tokio worker.
//!
//! # Limitations
//! `netns_dir` stays a mount point after the agent exits (like
//! `/run/netns`); tests that use a temp dir must unmount it themselves.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::statfs::{NSFS_MAGIC, statfs},
};

use super::NetworkError;

/// The calling thread's network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Opens the calling thread's network namespace (to enter it again later
/// from other threads).
///
/// # Errors
/// If `/proc/thread-self/ns/net` cannot be opened (no procfs, Linux < 3.17).
pub fn current() -> Result<File, NetworkError> {
    File::open(THREAD_NETNS).map_err(|cause| NetworkError::Io { op: "opening", path: THREAD_NETNS.into(), cause })
}

/// Runs `f` on a new std thread inside the network namespace `ns` and
/// returns its result; `label` names the namespace in errors.
///
/// # Errors
/// If the thread cannot be started or cannot enter `ns`, or what `f`
/// returns.
pub fn in_netns<T: Send>(
    ns: &File,
    label: &str,
    f: impl FnOnce() -> Result<T, NetworkError> + Send,
) -> Result<T, NetworkError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn_scoped(scope, || {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(|cause| NetworkError::Sys {
                    op: "setns into",
                    what: label.to_owned(),
                    cause,
                })?;
                f()
            })
            .map_err(|cause| NetworkError::Io { op: "spawning a thread for", path: label.into(), cause })?;
        worker.join().map_err(|_| NetworkError::ThreadPanicked { what: label.to_owned() })?
    })
}

/// Makes `dir` (created if needed) a mount point with shared propagation,
/// as `ip netns add` does for `/run/netns`: try `--make-rshared`; if `dir`
/// is not a mount point yet (`EINVAL`), bind-mount it onto itself and try
/// again.
///
/// # Errors
/// If the directory cannot be created or a mount call fails.
pub fn prepare_dir(dir: &Path) -> Result<(), NetworkError> {
    fs::create_dir_all(dir).map_err(|cause| NetworkError::Io {
        op: "creating directory",
        path: dir.to_owned(),
        cause,
    })?;
    let make_shared = || mount(None::<&str>, dir, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match make_shared() {
        Ok(()) => return Ok(()),
        Err(Errno::EINVAL) => {}
        Err(cause) => return Err(sys_err("mount --make-rshared", dir, cause)),
    }
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|cause| sys_err("mount --rbind onto itself", dir, cause))?;
    make_shared().map_err(|cause| sys_err("mount --make-rshared", dir, cause))
}

/// Whether `path` is a mounted network namespace (a bind mount of an nsfs
/// inode); `false` if it does not exist.
///
/// # Errors
/// If `statfs` fails for another reason than a missing file.
pub fn is_mounted(path: &Path) -> Result<bool, NetworkError> {
    match statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type() == NSFS_MAGIC),
        Err(Errno::ENOENT) => Ok(false),
        Err(cause) => Err(sys_err("statfs", path, cause)),
    }
}

/// Creates a new, empty network namespace kept alive by a bind mount on
/// `path` (which must not exist). Removes the file again on failure.
///
/// # Errors
/// If the file exists or cannot be created, or `unshare`/`mount` fails.
pub fn create(path: &Path) -> Result<(), NetworkError> {
    // Mode 0 like iproute2: once mounted, the nsfs inode's mode shows.
    File::options().write(true).create_new(true).mode(0o000).open(path).map_err(|cause| NetworkError::Io {
        op: "creating netns file",
        path: path.to_owned(),
        cause,
    })?;
    let made = std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("berth-netns-new".into())
            .spawn_scoped(scope, || {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|cause| sys_err("unshare(CLONE_NEWNET) for", path, cause))?;
                mount(Some(THREAD_NETNS), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(|cause| sys_err("bind-mounting a new netns onto", path, cause))
            })
            .map_err(|cause| NetworkError::Io { op: "spawning a thread for", path: path.to_owned(), cause })?;
        // The thread ends here; the bind mount keeps its namespace alive.
        worker.join().map_err(|_| NetworkError::ThreadPanicked { what: path.display().to_string() })?
    });
    if made.is_err()
        && let Err(e) = remove(path)
    {
        tracing::error!(path = %path.display(), error = %e, "removing a half-made netns file failed");
    }
    made
}

/// Unmounts (lazily) and deletes a namespace file; returns whether there
/// was one. The namespace itself goes once nothing else uses it.
///
/// # Errors
/// If unmounting or unlinking fails for another reason than the file
/// being absent or not mounted.
pub fn remove(path: &Path) -> Result<bool, NetworkError> {
    // Loop: a racing `create` could have stacked two mounts on one file.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(cause) => return Err(sys_err("umount", path, cause)),
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(cause) => Err(NetworkError::Io { op: "removing netns file", path: path.to_owned(), cause }),
    }
}

fn sys_err(op: &'static str, path: &Path, cause: Errno) -> NetworkError {
    NetworkError::Sys { op, what: path.display().to_string(), cause }
}
