//! What the admin API reports about a pod, in kubelet's shapes.
//!
//! # Design
//! The types serialize like `core/v1` `PodStatus` (camelCase, `podIP`,
//! `containerID`, a container state as `{"running": {…}}`), so tools that
//! read `kubectl get pod -o json` read them too. Timestamps are RFC 3339
//! strings with whole seconds, as `metav1.Time` writes them, made by a
//! small civil-calendar formatter (no date library).
//!
//! The rules are kubelet's and pure:
//! - [`pod_phase`] is `getPhase` (`pkg/kubelet/kubelet_pods.go`);
//! - [`pod_conditions`] is `pkg/kubelet/status/generate.go` plus the status
//!   manager's rule that a condition keeps its `lastTransitionTime` while
//!   its status does not change;
//! - [`container_started`] and [`container_ready`] are the prober
//!   manager's `UpdatePodStatus`;
//! - [`terminated_reason`] is what the CRI runtime reports for an exit.
//!
//! # Limitations
//! No init containers, readiness gates or `PodReadyToStartContainers`
//! condition; `pod_ip` is IPv4 only.

use std::{
    net::Ipv4Addr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{manifest::RestartPolicy, probe::ProbeResult};

#[cfg(test)]
mod tests;

/// Reason: the container exited 0.
pub const REASON_COMPLETED: &str = "Completed";
/// Reason: the container exited non-zero.
pub const REASON_ERROR: &str = "Error";
/// Reason: the kernel's OOM killer ended the container.
pub const REASON_OOM_KILLED: &str = "OOMKilled";
/// Reason: the runtime could not start the process (exec failed). Docker's
/// spelling; containerd reports `StartError`.
pub const REASON_CONTAINER_CANNOT_RUN: &str = "ContainerCannotRun";
/// Waiting: being created (image, cgroups, network).
pub const REASON_CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting: between crash restarts.
pub const REASON_CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// Waiting: the container could not be created from its spec.
pub const REASON_CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
/// Waiting: the container's configuration is unusable (e.g. runAsNonRoot).
pub const REASON_CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// Waiting: the image cannot be found or unpacked.
pub const REASON_ERR_IMAGE_PULL: &str = "ErrImagePull";

/// An RFC 3339 UTC timestamp with whole seconds: `2024-05-01T12:00:00Z`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// From milliseconds since the Unix epoch (negative: before it); the
    /// milliseconds are truncated, as `metav1.Time` does.
    pub fn from_unix_ms(ms: i64) -> Self {
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self(format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60))
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        };
        Self::from_unix_ms(ms)
    }

    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of the day
/// `days` after 1970-01-01 in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// A container's state, one of three as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ContainerState {
    Waiting {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// [`terminated_reason`], or [`REASON_CONTAINER_CANNOT_RUN`].
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// `None` when the process never started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

impl ContainerState {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting { reason: reason.to_owned(), message }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    /// The previous run's end, once there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: u32,
    pub image: String,
    #[serde(rename = "imageID")]
    pub image_id: String,
    #[serde(rename = "containerID", default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodConditionType {
    PodScheduled,
    Initialized,
    ContainersReady,
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub kind: PodConditionType,
    pub status: ConditionStatus,
    pub last_transition_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: PodPhase,
    pub conditions: Vec<PodCondition>,
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    pub container_statuses: Vec<ContainerStatus>,
}

impl PodStatus {
    /// The Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.conditions.iter().any(|c| c.kind == PodConditionType::Ready && c.status == ConditionStatus::True)
    }

    /// kubectl's STATUS column: a waiting or terminated container's reason
    /// wins over the phase.
    pub fn display_status(&self) -> String {
        for c in &self.container_statuses {
            match &c.state {
                ContainerState::Waiting { reason, .. } => return reason.clone(),
                ContainerState::Terminated { reason, .. } if self.phase == PodPhase::Running => return reason.clone(),
                _ => {}
            }
        }
        format!("{:?}", self.phase)
    }
}

/// Whether the pod's containers may still be restarted. kubelet's
/// `podIsTerminal`: once the pod has been stopped for good (deleted), its
/// phase is final whatever the restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodTermination {
    /// The pod runs (or waits to run) under its restart policy.
    Active,
    /// The agent stopped the pod; nothing will be restarted.
    Stopped,
}

/// kubelet's `getPhase`. `statuses` must hold one entry per container of
/// the spec: like kubelet, report a container that does not exist yet as
/// Waiting (`ContainerCreating`).
pub fn pod_phase(restart_policy: RestartPolicy, statuses: &[ContainerStatus], termination: PodTermination) -> PodPhase {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0usize, 0usize, 0usize, 0usize);
    for status in statuses {
        match &status.state {
            ContainerState::Running { .. } => running += 1,
            ContainerState::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting after a previous run (CrashLoopBackOff) counts as
            // stopped, not as never started.
            ContainerState::Waiting { .. } if matches!(status.last_state, Some(ContainerState::Terminated { .. })) => {
                stopped += 1;
            }
            ContainerState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        // One or more containers has not been started.
        return PodPhase::Pending;
    }
    if running > 0 {
        return PodPhase::Running;
    }
    if stopped > 0 {
        if termination == PodTermination::Stopped {
            return if stopped == succeeded { PodPhase::Succeeded } else { PodPhase::Failed };
        }
        return match restart_policy {
            // All containers are in the process of restarting.
            RestartPolicy::Always => PodPhase::Running,
            _ if stopped == succeeded => PodPhase::Succeeded,
            RestartPolicy::Never => PodPhase::Failed,
            // OnFailure: at least one failed and is being restarted.
            RestartPolicy::OnFailure => PodPhase::Running,
        };
    }
    PodPhase::Pending
}

/// The reason of a terminated state: `OOMKilled` first, then `Completed`
/// for exit 0, else `Error`.
pub fn terminated_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        REASON_OOM_KILLED
    } else if exit_code == 0 {
        REASON_COMPLETED
    } else {
        REASON_ERROR
    }
}

/// kubelet's `started`: running, and the startup probe (if any) succeeded.
pub fn container_started(running: bool, startup: Option<ProbeResult>) -> bool {
    running && startup.is_none_or(|r| r == ProbeResult::Success)
}

/// kubelet's `ready`: started, and the readiness probe (if any) succeeded.
pub fn container_ready(running: bool, started: bool, readiness: Option<ProbeResult>) -> bool {
    running && started && readiness.is_none_or(|r| r == ProbeResult::Success)
}

/// The pod's conditions as kubelet generates them, in kubelet's order
/// (Initialized, Ready, ContainersReady, PodScheduled). A condition whose
/// status equals the one in `previous` keeps its `lastTransitionTime`;
/// others get `now`. `statuses` is as in [`pod_phase`].
pub fn pod_conditions(
    phase: PodPhase,
    statuses: &[ContainerStatus],
    previous: &[PodCondition],
    now: &Timestamp,
) -> Vec<PodCondition> {
    let condition = |kind, status, reason: Option<&str>, message: Option<String>| {
        let last_transition_time = previous
            .iter()
            .find(|c| c.kind == kind && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        PodCondition { kind, status, last_transition_time, reason: reason.map(str::to_owned), message }
    };
    let (status, reason, message) = containers_ready(phase, statuses);
    vec![
        condition(PodConditionType::Initialized, ConditionStatus::True, None, None),
        condition(PodConditionType::Ready, status, reason, message.clone()),
        condition(PodConditionType::ContainersReady, status, reason, message),
        condition(PodConditionType::PodScheduled, ConditionStatus::True, None, None),
    ]
}

/// `GenerateContainersReadyCondition` (Ready is the same without
/// readiness gates).
fn containers_ready(
    phase: PodPhase,
    statuses: &[ContainerStatus],
) -> (ConditionStatus, Option<&'static str>, Option<String>) {
    match phase {
        PodPhase::Succeeded => return (ConditionStatus::False, Some("PodCompleted"), None),
        PodPhase::Failed => return (ConditionStatus::False, Some("PodFailed"), None),
        _ => {}
    }
    let unready: Vec<&str> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    if unready.is_empty() {
        (ConditionStatus::True, None, None)
    } else {
        // Go's %s of a []string: [a b].
        (
            ConditionStatus::False,
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: [{}]", unready.join(" "))),
        )
    }
}
