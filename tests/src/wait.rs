//! Bounded waiting.
//!
//! # Design
//! Every wait has a deadline. [`wait_for_tcp`] connects from inside a
//! namespace by entering it on a dedicated, short-lived std thread:
//! `setns(CLONE_NEWNET)` changes only the calling thread, so the test thread
//! and any async runtime stay in their namespace, and the thread ends
//! right after.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

/// `now + timeout`, clamped so that huge timeouts mean "a long time"
/// instead of overflowing `Instant`.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Calls `check` every `interval` until it returns `Ok(true)`.
///
/// # Errors
/// When `timeout` passes (with the last error `check` returned, if any) or
/// never; errors from `check` are retried, not returned early.
pub fn poll_until(timeout: Duration, interval: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = deadline_after(timeout);
    let mut last_err = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("condition not met within {timeout:?}")),
                None => anyhow!("condition not met within {timeout:?}"),
            });
        }
        std::thread::sleep(interval);
    }
}

/// Waits until `addr` accepts a TCP connection from inside the network
/// namespace at `netns_path` (e.g. [`crate::Netns::path`]).
///
/// # Errors
/// If the namespace cannot be entered, or on timeout with the last
/// connect error.
pub fn wait_for_tcp(netns_path: &Path, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let ns = File::open(netns_path).with_context(|| format!("open {}", netns_path.display()))?;
    let path = netns_path.display().to_string();
    let worker = std::thread::Builder::new()
        .name("berth-wait-tcp".into())
        .spawn(move || -> Result<()> {
            setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
            let deadline = deadline_after(timeout);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = left.clamp(Duration::from_millis(1), Duration::from_millis(500));
                match TcpStream::connect_timeout(&addr, attempt) {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => {
                        bail!("{addr} not accepting in netns {path} within {timeout:?}: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .context("spawn wait thread")?;
    worker.join().map_err(|_| anyhow!("wait thread panicked"))?
}
