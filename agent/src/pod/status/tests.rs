#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use proptest::prelude::*;

use super::*;

fn ts(s: &str) -> Timestamp {
    Timestamp(s.to_owned())
}

fn status(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
    ContainerStatus {
        name: name.to_owned(),
        ready: state.is_running(),
        started: state.is_running(),
        state,
        last_state: last,
        restart_count: 0,
        image: "busybox".to_owned(),
        image_id: "sha256:abc".to_owned(),
        container_id: None,
    }
}

fn running(name: &str) -> ContainerStatus {
    status(name, ContainerState::Running { started_at: ts("2024-01-01T00:00:00Z") }, None)
}

fn exited(code: i32) -> ContainerState {
    ContainerState::Terminated {
        exit_code: code,
        signal: None,
        reason: terminated_reason(code, false).to_owned(),
        message: None,
        started_at: Some(ts("2024-01-01T00:00:00Z")),
        finished_at: ts("2024-01-01T00:01:00Z"),
    }
}

fn terminated(name: &str, code: i32) -> ContainerStatus {
    status(name, exited(code), None)
}

fn creating(name: &str) -> ContainerStatus {
    status(name, ContainerState::waiting(REASON_CONTAINER_CREATING, None), None)
}

/// Waiting between crash restarts: the previous run terminated.
fn backing_off(name: &str, code: i32) -> ContainerStatus {
    status(name, ContainerState::waiting(REASON_CRASH_LOOP_BACK_OFF, None), Some(exited(code)))
}

#[test]
fn phase_rules() {
    use PodPhase::*;
    use PodTermination::{Active, Stopped};
    use RestartPolicy::{Always, Never, OnFailure};
    let cases: &[(RestartPolicy, Vec<ContainerStatus>, PodTermination, PodPhase)] = &[
        (Always, vec![], Active, Pending),
        (Always, vec![creating("a")], Active, Pending),
        (Always, vec![running("a"), creating("b")], Active, Pending),
        (Always, vec![running("a"), running("b")], Active, Running),
        (Never, vec![running("a"), terminated("b", 1)], Active, Running),
        // All stopped.
        (Always, vec![terminated("a", 0)], Active, Running),
        (Always, vec![terminated("a", 1)], Active, Running),
        (OnFailure, vec![terminated("a", 0), terminated("b", 0)], Active, Succeeded),
        (OnFailure, vec![terminated("a", 0), terminated("b", 2)], Active, Running),
        (Never, vec![terminated("a", 0)], Active, Succeeded),
        (Never, vec![terminated("a", 0), terminated("b", 137)], Active, Failed),
        // CrashLoopBackOff counts as stopped, not as not-yet-started.
        (Always, vec![backing_off("a", 1)], Active, Running),
        (OnFailure, vec![backing_off("a", 1)], Active, Running),
        (Always, vec![running("a"), backing_off("b", 1)], Active, Running),
        // A stopped pod is terminal whatever its policy.
        (Always, vec![terminated("a", 0)], Stopped, Succeeded),
        (Always, vec![terminated("a", 0), terminated("b", 143)], Stopped, Failed),
        (OnFailure, vec![backing_off("a", 1)], Stopped, Failed),
        (Always, vec![creating("a")], Stopped, Pending),
    ];
    for (policy, statuses, termination, expected) in cases {
        assert_eq!(pod_phase(*policy, statuses, *termination), *expected, "{policy:?} {termination:?} {statuses:#?}");
    }
}

#[test]
fn reasons() {
    assert_eq!(terminated_reason(0, false), "Completed");
    assert_eq!(terminated_reason(1, false), "Error");
    assert_eq!(terminated_reason(137, true), "OOMKilled");
    assert_eq!(terminated_reason(0, true), "OOMKilled", "the OOM killer wins over the exit code");
}

#[test]
fn started_and_ready_follow_the_prober_manager() {
    use ProbeResult::*;
    assert!(!container_started(false, None));
    assert!(container_started(true, None), "no startup probe: started once running");
    assert!(!container_started(true, Some(Unknown)));
    assert!(!container_started(true, Some(Failure)));
    assert!(container_started(true, Some(Success)));
    assert!(container_ready(true, true, None), "no readiness probe: ready once started");
    assert!(!container_ready(true, false, None));
    assert!(!container_ready(true, true, Some(Failure)));
    assert!(container_ready(true, true, Some(Success)));
    assert!(!container_ready(false, true, Some(Success)));
}

#[test]
fn conditions() {
    let t1 = ts("2024-01-01T00:00:00Z");
    let t2 = ts("2024-01-01T00:00:10Z");
    let mut unready = running("b");
    unready.ready = false;
    let statuses = vec![running("a"), unready, creating("c")];
    let first = pod_conditions(PodPhase::Pending, &statuses, &[], &t1);
    let kinds: Vec<_> = first.iter().map(|c| c.kind).collect();
    use PodConditionType::*;
    assert_eq!(kinds, [Initialized, Ready, ContainersReady, PodScheduled]);
    let ready = &first[1];
    assert_eq!(ready.status, ConditionStatus::False);
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(ready.message.as_deref(), Some("containers with unready status: [b c]"));
    assert_eq!(first[2], PodCondition { kind: ContainersReady, ..ready.clone() });

    // Unchanged statuses keep their transition time; changed ones move.
    let all_ready = vec![running("a"), running("b"), running("c")];
    let second = pod_conditions(PodPhase::Running, &all_ready, &first, &t2);
    assert_eq!(second[0].last_transition_time, t1, "Initialized stayed True");
    assert_eq!(second[1].status, ConditionStatus::True);
    assert_eq!(second[1].last_transition_time, t2);
    assert_eq!((second[1].reason.as_ref(), second[1].message.as_ref()), (None, None));
    assert_eq!(second[3].last_transition_time, t1);

    let done = pod_conditions(PodPhase::Succeeded, &[terminated("a", 0)], &second, &t2);
    assert_eq!((done[1].status, done[1].reason.as_deref()), (ConditionStatus::False, Some("PodCompleted")));
    let failed = pod_conditions(PodPhase::Failed, &[terminated("a", 1)], &second, &t2);
    assert_eq!((failed[2].status, failed[2].reason.as_deref()), (ConditionStatus::False, Some("PodFailed")));
}

#[test]
fn serializes_like_kubernetes() {
    let mut c = status(
        "web",
        ContainerState::waiting(REASON_CRASH_LOOP_BACK_OFF, Some("back-off 10s".into())),
        Some(exited(1)),
    );
    c.container_id = Some("berth://0123".into());
    c.restart_count = 2;
    let pod = PodStatus {
        phase: PodPhase::Running,
        conditions: pod_conditions(PodPhase::Running, std::slice::from_ref(&c), &[], &ts("2024-01-01T00:00:00Z")),
        pod_ip: Some(Ipv4Addr::new(10, 244, 0, 5)),
        start_time: Some(ts("2024-01-01T00:00:00Z")),
        container_statuses: vec![c],
    };
    let json = serde_json::to_value(&pod).unwrap();
    assert_eq!(json["phase"], "Running");
    assert_eq!(json["podIP"], "10.244.0.5");
    assert_eq!(json["startTime"], "2024-01-01T00:00:00Z");
    assert_eq!(json["conditions"][1]["type"], "Ready");
    assert_eq!(json["conditions"][1]["status"], "False");
    assert_eq!(json["conditions"][1]["lastTransitionTime"], "2024-01-01T00:00:00Z");
    let c = &json["containerStatuses"][0];
    assert_eq!(c["state"], serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}));
    assert_eq!(
        c["lastState"],
        serde_json::json!({"terminated": {
            "exitCode": 1, "reason": "Error",
            "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:01:00Z",
        }})
    );
    assert_eq!(c["restartCount"], 2);
    assert_eq!(c["containerID"], "berth://0123");
    assert_eq!(c["imageID"], "sha256:abc");
    assert_eq!(c["started"], false);
    // And back.
    assert_eq!(serde_json::from_value::<PodStatus>(json).unwrap(), pod);
}

#[test]
fn timestamps() {
    assert_eq!(Timestamp::from_unix_ms(0).as_str(), "1970-01-01T00:00:00Z");
    assert_eq!(Timestamp::from_unix_ms(999).as_str(), "1970-01-01T00:00:00Z", "milliseconds are truncated");
    assert_eq!(Timestamp::from_unix_ms(1_700_000_000_000).as_str(), "2023-11-14T22:13:20Z");
    assert_eq!(Timestamp::from_unix_ms(951_782_400_000).as_str(), "2000-02-29T00:00:00Z");
    assert_eq!(Timestamp::from_unix_ms(4_107_542_399_000).as_str(), "2100-02-28T23:59:59Z");
    assert_eq!(Timestamp::from_unix_ms(-1).as_str(), "1969-12-31T23:59:59Z");
    assert_eq!(Timestamp::from_unix_ms(253_402_300_799_000).as_str(), "9999-12-31T23:59:59Z");
    let now = Timestamp::now();
    assert!(now.as_str() > "2024" && now.as_str().ends_with('Z'), "{now:?}");
}

/// The inverse of `civil_from_days` (Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

proptest! {
    #[test]
    fn calendar_round_trips(days in -1_000_000i64..1_000_000) {
        let (y, m, d) = civil_from_days(days);
        prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        prop_assert_eq!(days_from_civil(y, m, d), days);
        prop_assert!(civil_from_days(days + 1) > (y, m, d));
    }
}
