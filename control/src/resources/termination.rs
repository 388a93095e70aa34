//! Graceful pod deletion, as kube-apiserver's pod strategy decides it
//! (`CheckGracefulDelete` and `BeforeDelete`).
//!
//! # Design
//! Deleting a pod that runs somewhere does not remove it: the API server
//! stamps `metadata.deletionTimestamp` (now + grace) and
//! `metadata.deletionGracePeriodSeconds`, the pod's agent stops the
//! containers (StopSignal, then SIGKILL after the grace) and removes the
//! object with a grace of 0. Meanwhile controllers see a terminating pod:
//! the Deployment controller no longer counts it and makes a replacement,
//! the endpoints controller marks its address `terminating` (and not
//! ready). The grace is, in order: the request's `gracePeriodSeconds`, the
//! pod's `spec.terminationGracePeriodSeconds`, 30 s. A pod is removed at
//! once when no agent will ever stop it or it has nothing to stop: not
//! bound to a node, or already `Succeeded`/`Failed`; and when the grace is
//! 0 (the agent's final delete, or `--grace-period 0`).
//!
//! A second delete of a terminating pod only ever shortens its grace (the
//! deadline moves to now + the new grace when that is earlier), as
//! Kubernetes does; a longer one changes nothing.
//!
//! # Limitations
//! - A negative grace is read as 1 s, as kube-apiserver does; no `--force`
//!   semantics beyond grace 0.
//! - Only pods terminate gracefully: every other kind is deleted at once
//!   (berth has no finalizers).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::Deletion;
use super::pod::DEFAULT_TERMINATION_GRACE_SECONDS;

/// How to delete `pod` (its stored JSON) now, with the request's grace.
pub fn pod_deletion(pod: &Value, requested_grace: Option<i64>, now_ms: u64) -> Deletion {
    let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let finished = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    let grace = requested_grace
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS);
    let grace = if grace < 0 { 1 } else { grace };
    if !bound || finished || grace == 0 {
        return Deletion::Now;
    }
    // A grace of centuries is allowed (Kubernetes sets no bound) but the
    // deadline is stored as RFC 3339, so it stops at the end of year 9999.
    let deadline_ms =
        now_ms.saturating_add(u64::try_from(grace).unwrap_or(0).saturating_mul(1000)).min(LATEST_DEADLINE_MS);
    if let Some(current) = deletion_deadline_ms(pod) {
        let current_grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
        // Only ever sooner.
        if deadline_ms >= current || current_grace.is_some_and(|g| grace >= g) {
            return Deletion::AlreadyTerminating;
        }
    }
    let mut marked = pod.clone();
    let Some(meta) = marked.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Deletion::Now;
    };
    meta.insert("deletionTimestamp".to_owned(), rfc3339(deadline_ms));
    meta.insert("deletionGracePeriodSeconds".to_owned(), Value::from(grace));
    Deletion::Graceful(marked)
}

/// How to delete a Namespace: never `default`; otherwise it turns
/// `Terminating` (`deletionTimestamp` now, `status.phase`, the `kubernetes`
/// finalizer) and the namespace controller deletes what it holds, then it.
pub fn namespace_deletion(namespace: &Value, now_ms: u64) -> Deletion {
    let name = namespace.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if name == super::DEFAULT_NAMESPACE {
        return Deletion::Refused(format!("namespaces {name:?} is forbidden: this namespace may not be deleted"));
    }
    if is_terminating(namespace) {
        return Deletion::AlreadyTerminating;
    }
    let mut marked = namespace.clone();
    let Some(object) = marked.as_object_mut() else { return Deletion::Now };
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("deletionTimestamp".to_owned(), rfc3339(now_ms));
        meta.insert("deletionGracePeriodSeconds".to_owned(), Value::from(0));
    }
    object.insert("spec".to_owned(), serde_json::json!({"finalizers": ["kubernetes"]}));
    object.insert("status".to_owned(), serde_json::json!({"phase": "Terminating"}));
    Deletion::Graceful(marked)
}

/// `metadata.deletionTimestamp` in milliseconds, when the object has one.
pub fn deletion_deadline_ms(object: &Value) -> Option<u64> {
    let t = object.pointer("/metadata/deletionTimestamp")?.as_str()?.parse::<Timestamp>().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

/// Whether the object is being deleted gracefully.
pub fn is_terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The latest deadline: jiff's (and so k8s-openapi's) last time,
/// 9999-12-30T22:00:00Z, as whole seconds.
const LATEST_DEADLINE_MS: u64 = 253_402_207_200_000;

/// Kubernetes' stored time format: RFC 3339, to the second (rounded up, so
/// a deadline is never earlier than asked).
fn rfc3339(ms: u64) -> Value {
    let seconds = i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX);
    // Deadlines are clamped to the year 9999, within jiff's range.
    let time = Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::MAX));
    serde_json::to_value(time).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn bound(grace: Option<i64>) -> Value {
        let mut pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"},
        });
        if let Some(g) = grace {
            pod["spec"]["terminationGracePeriodSeconds"] = json!(g);
        }
        pod
    }

    fn marked(deletion: Deletion) -> Value {
        match deletion {
            Deletion::Graceful(v) => v,
            other => panic!("expected a graceful deletion, got {other:?}"),
        }
    }

    #[test]
    fn a_running_pod_is_marked_with_its_grace() {
        let pod = marked(pod_deletion(&bound(Some(5)), None, NOW));
        assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 5);
        assert_eq!(deletion_deadline_ms(&pod), Some(NOW + 5_000));
        assert!(is_terminating(&pod));
        // The default grace is Kubernetes' 30 s; the request's wins.
        assert_eq!(marked(pod_deletion(&bound(None), None, NOW))["metadata"]["deletionGracePeriodSeconds"], 30);
        assert_eq!(marked(pod_deletion(&bound(Some(5)), Some(2), NOW))["metadata"]["deletionGracePeriodSeconds"], 2);
        assert_eq!(marked(pod_deletion(&bound(Some(5)), Some(-3), NOW))["metadata"]["deletionGracePeriodSeconds"], 1);
    }

    #[test]
    fn unbound_finished_and_zero_grace_pods_go_at_once() {
        let mut unbound = bound(None);
        unbound["spec"]["nodeName"] = json!("");
        assert_eq!(pod_deletion(&unbound, None, NOW), Deletion::Now);
        let mut done = bound(None);
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(pod_deletion(&done, None, NOW), Deletion::Now);
        assert_eq!(pod_deletion(&bound(Some(0)), None, NOW), Deletion::Now);
        assert_eq!(pod_deletion(&bound(None), Some(0), NOW), Deletion::Now);
        // The agent's final delete of a terminating pod.
        let terminating = marked(pod_deletion(&bound(None), None, NOW));
        assert_eq!(pod_deletion(&terminating, Some(0), NOW + 1_000), Deletion::Now);
    }

    #[test]
    fn an_enormous_grace_ends_in_the_year_9999_and_can_still_be_shortened() {
        let pod = marked(pod_deletion(&bound(None), Some(i64::MAX), NOW));
        assert_eq!(pod["metadata"]["deletionTimestamp"], "9999-12-30T22:00:00Z");
        assert_eq!(u64::try_from(Timestamp::MAX.as_second()).unwrap() * 1000, LATEST_DEADLINE_MS);
        assert_eq!(deletion_deadline_ms(&pod), Some(LATEST_DEADLINE_MS));
        let shorter = marked(pod_deletion(&pod, Some(5), NOW));
        assert_eq!(deletion_deadline_ms(&shorter), Some(NOW + 5_000));
    }

    #[test]
    fn a_second_delete_only_shortens_the_grace() {
        let terminating = marked(pod_deletion(&bound(Some(30)), None, NOW));
        assert_eq!(pod_deletion(&terminating, None, NOW + 1_000), Deletion::AlreadyTerminating);
        assert_eq!(pod_deletion(&terminating, Some(60), NOW), Deletion::AlreadyTerminating);
        let shorter = marked(pod_deletion(&terminating, Some(5), NOW + 1_000));
        assert_eq!(deletion_deadline_ms(&shorter), Some(NOW + 6_000));
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    }
}
