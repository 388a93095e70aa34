//! A bpffs directory per test for pinned maps, programs and links.
//!
//! # Design
//! `<bpffs mount>/berth-test/<PREFIX-PID-N>`, removed recursively on drop:
//! unlinking a pin drops its reference, so objects the test pinned die with
//! the directory unless something else holds them. bpffs is never assumed
//! to be empty; only this directory is touched.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Directory under the bpffs mount holding every test's pin directory.
pub const TEST_ROOT: &str = "berth-test";

/// A bpffs directory removed (with its pins) on drop.
#[derive(Debug)]
pub struct BpfPinDir {
    path: PathBuf,
}

impl BpfPinDir {
    /// Creates `<bpffs>/berth-test/PREFIX-PID-N`.
    ///
    /// # Errors
    /// If no bpffs is mounted or the directory cannot be made.
    pub fn create(prefix: &str) -> Result<Self> {
        let root = crate::mounts::find("bpf")?;
        let parent = root.join(TEST_ROOT);
        std::fs::create_dir_all(&parent).with_context(|| format!("mkdir {}", parent.display()))?;
        let path = parent.join(crate::unique_name(prefix));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfPinDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("berth-tests: bpffs cleanup: rm -r {}: {e}", self.path.display()),
        }
    }
}
