//! Restart decisions: `restartPolicy` and kubelet's CrashLoopBackOff.
//!
//! # Design
//! A pure state machine over explicit instants, so the supervisor decides
//! *when* and tests need no clock. It is kubelet's `flowcontrol.Backoff` as
//! `kuberuntime`'s `doBackOff` drives it, one per container:
//! - the first restart after a crash is immediate;
//! - each further restart waits `initial`, then twice the previous wait,
//!   up to `max` (10 s, 20 s, 40 s, … 300 s), counted from the moment the
//!   container exited;
//! - when more than `reset_after` passed between the last restart and the
//!   next exit (the container ran that long), the sequence starts over with
//!   an immediate restart.
//!
//! [`BackoffConfig::KUBELET`] holds kubelet's defaults (10 s, 300 s and
//! twice the maximum, 600 s); tests and privileged end-to-end runs use
//! short timers through the same code.
//!
//! # Limitations
//! kubelet's reset clock starts when it *decides* to restart (`Next`), a
//! little before the new container runs; this model starts it at the
//! returned restart instant, which is when the supervisor restarts.

use std::time::Duration;

use tokio::time::Instant;

use super::manifest::RestartPolicy;

#[cfg(test)]
mod tests;

/// CrashLoopBackOff timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The wait before the second restart.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A container whose last restart was more than this long before its
    /// exit starts the sequence over.
    pub reset_after: Duration,
}

impl BackoffConfig {
    /// kubelet's defaults (`backOffPeriod`, `MaxContainerBackOff`, and
    /// `flowcontrol`'s `2 × max` expiry).
    pub const KUBELET: Self =
        Self { initial: Duration::from_secs(10), max: Duration::from_secs(300), reset_after: Duration::from_secs(600) };

    /// The wait before a restart when `restarts` restarts already happened
    /// in the current sequence: `0` for the first, then `initial × 2^(n−1)`
    /// capped at `max`.
    pub fn delay_for(&self, restarts: u32) -> Duration {
        match restarts {
            0 => Duration::ZERO,
            n => {
                let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
                self.initial.saturating_mul(factor).min(self.max)
            }
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self::KUBELET
    }
}

/// One container's CrashLoopBackOff state.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    config: BackoffConfig,
    entry: Option<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The wait the next restart in this sequence gets.
    backoff: Duration,
    /// When the last restart happened.
    last_restart: Instant,
    /// The wait of the last restart, for messages.
    last_delay: Duration,
}

impl CrashLoop {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, entry: None }
    }

    /// The container exited at `finished_at` and will be restarted: returns
    /// the earliest instant the restart may start, and records that restart.
    pub fn on_exit(&mut self, finished_at: Instant) -> Instant {
        let fresh = |at: Instant| Entry { backoff: self.config.initial, last_restart: at, last_delay: Duration::ZERO };
        match &mut self.entry {
            Some(e) if finished_at.saturating_duration_since(e.last_restart) <= self.config.reset_after => {
                let restart_at = finished_at + e.backoff;
                e.last_delay = e.backoff;
                e.backoff = e.backoff.saturating_mul(2).min(self.config.max);
                e.last_restart = restart_at;
                restart_at
            }
            _ => {
                self.entry = Some(fresh(finished_at));
                finished_at
            }
        }
    }

    /// The wait the last [`on_exit`](Self::on_exit) imposed (kubelet's
    /// `backOff.Get`, shown in the CrashLoopBackOff message).
    pub fn current_delay(&self) -> Duration {
        self.entry.map_or(Duration::ZERO, |e| e.last_delay)
    }

    /// Forgets the sequence (the pod was replaced).
    pub fn reset(&mut self) {
        self.entry = None;
    }
}

/// Whether `restartPolicy` restarts a container that exited with
/// `exit_code` (a liveness or startup failure kill counts as its exit).
pub fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// kubelet's waiting message: `back-off 20s restarting failed
/// container=web pod=web_default(uid)`, `pod` as
/// [`PodSpec::display_name`](super::manifest::PodSpec::display_name).
pub fn crash_loop_message(delay: Duration, container: &str, pod: &str) -> String {
    format!("back-off {} restarting failed container={container} pod={pod}", go_duration(delay))
}

/// Go's `time.Duration.String` for whole seconds and milliseconds:
/// `0s`, `500ms`, `10s`, `2m40s`, `5m0s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let frac = d.subsec_millis();
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}
