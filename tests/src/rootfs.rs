//! A busybox root filesystem for container tests.
//!
//! # Design
//! [`BusyboxRootfs`] builds a minimal image root in a fresh directory from
//! the host's static `/bin/busybox` (Debian's `busybox-static`): the binary
//! plus one symlink per applet in `/bin`, `/etc/passwd` and `/etc/group`
//! with `root` and `nobody`, and empty `/proc`, `/sys`, `/dev`, `/tmp`. It
//! is used read-only, as an overlay lower directory, and removed on drop.
//!
//! # Limitations
//! Needs a statically linked busybox at `/bin/busybox` (a dynamic one would
//! find no libc in the container); checked, never skipped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the static busybox is expected.
pub const BUSYBOX: &str = "/bin/busybox";

/// A busybox image root, removed on drop.
#[derive(Debug)]
pub struct BusyboxRootfs {
    path: PathBuf,
}

impl BusyboxRootfs {
    /// Builds the root in `PARENT/busybox-rootfs-PID-N` (PARENT is made if
    /// missing).
    ///
    /// # Errors
    /// No static busybox, or a file cannot be written.
    pub fn create_in(parent: &Path) -> Result<Self> {
        let list = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .with_context(|| format!("running {BUSYBOX} --list (install busybox-static)"))?;
        if !list.status.success() {
            bail!("{BUSYBOX} --list failed: {}", String::from_utf8_lossy(&list.stderr));
        }
        let file = Command::new("file").arg("-L").arg(BUSYBOX).output();
        if let Ok(out) = file
            && out.status.success()
            && !String::from_utf8_lossy(&out.stdout).contains("statically linked")
        {
            bail!("{BUSYBOX} is not statically linked; install busybox-static");
        }
        std::fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
        let rootfs = Self { path: parent.join(crate::unique_name("busybox-rootfs")) };
        let root = &rootfs.path;
        for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
            std::fs::create_dir_all(root.join(dir)).with_context(|| format!("mkdir {dir} in {}", root.display()))?;
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet == "busybox" || applet.contains('/') {
                continue;
            }
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .with_context(|| format!("symlink bin/{applet}"))?;
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")?;
        Ok(rootfs)
    }

    /// The root directory (an overlay lower directory).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BusyboxRootfs {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("berth-tests: rootfs cleanup {}: {e}", self.path.display());
        }
    }
}
