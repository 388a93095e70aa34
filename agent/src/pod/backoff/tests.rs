#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use proptest::prelude::*;

use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

/// Crashes after running `ran` each time; returns the waits.
fn crash_loop(config: BackoffConfig, runs: &[Duration]) -> Vec<Duration> {
    let mut loop_ = CrashLoop::new(config);
    let mut started = Instant::now();
    runs.iter()
        .map(|ran| {
            let finished = started + *ran;
            let restart = loop_.on_exit(finished);
            started = restart;
            restart - finished
        })
        .collect()
}

#[test]
fn kubelet_sequence() {
    let waits = crash_loop(BackoffConfig::KUBELET, &[S(1); 9]);
    let expected = [0, 10, 20, 40, 80, 160, 300, 300, 300].map(S);
    assert_eq!(waits, expected);
    for (i, wait) in waits.iter().enumerate() {
        assert_eq!(*wait, BackoffConfig::KUBELET.delay_for(u32::try_from(i).unwrap_or(u32::MAX)));
    }
}

#[test]
fn a_long_run_starts_over() {
    // 10 minutes exactly is not "more than" kubelet's 2 × max.
    let waits = crash_loop(BackoffConfig::KUBELET, &[S(1), S(1), S(1), S(600), S(601), S(1)]);
    assert_eq!(waits, [0, 10, 20, 40, 0, 10].map(S));
}

#[test]
fn short_timers_for_tests() {
    let config = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(1),
    };
    let waits = crash_loop(config, &[Duration::from_millis(10); 5]);
    assert_eq!(waits, [0, 100, 200, 400, 400].map(Duration::from_millis));
}

#[test]
fn restart_policy() {
    use RestartPolicy::*;
    assert!(should_restart(Always, 0));
    assert!(should_restart(Always, 1));
    assert!(!should_restart(OnFailure, 0));
    assert!(should_restart(OnFailure, 137));
    assert!(should_restart(OnFailure, -1));
    assert!(!should_restart(Never, 0));
    assert!(!should_restart(Never, 1));
}

#[test]
fn messages_read_like_kubelet() {
    assert_eq!(go_duration(S(0)), "0s");
    assert_eq!(go_duration(S(10)), "10s");
    assert_eq!(go_duration(S(160)), "2m40s");
    assert_eq!(go_duration(S(300)), "5m0s");
    assert_eq!(go_duration(S(3600)), "1h0m0s");
    assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(
        crash_loop_message(S(20), "web", "web_default(1234)"),
        "back-off 20s restarting failed container=web pod=web_default(1234)"
    );
    let mut loop_ = CrashLoop::new(BackoffConfig::KUBELET);
    let t = Instant::now();
    loop_.on_exit(t);
    assert_eq!(loop_.current_delay(), S(0));
    loop_.on_exit(t + S(1));
    assert_eq!(loop_.current_delay(), S(10));
    loop_.reset();
    assert_eq!(loop_.on_exit(t + S(12)), t + S(12));
}

proptest! {
    #[test]
    fn delays_are_non_decreasing_and_capped(
        initial_ms in 1u64..100_000,
        extra_ms in 0u64..1_000_000,
        n in 0u32..200,
    ) {
        let config = BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(initial_ms + extra_ms),
            reset_after: Duration::from_secs(600),
        };
        prop_assert!(config.delay_for(n) <= config.delay_for(n + 1));
        prop_assert!(config.delay_for(n + 1) <= config.max);
        prop_assert!(config.delay_for(n + 1) >= config.initial.min(config.max));
    }

    #[test]
    fn crash_loop_follows_delay_for(runs in proptest::collection::vec(0u64..2_000, 1..40)) {
        // Runs under reset_after never reset: the waits are delay_for(0..).
        let config = BackoffConfig::KUBELET;
        let waits = crash_loop(config, &runs.iter().map(|&ms| Duration::from_millis(ms)).collect::<Vec<_>>());
        for (i, wait) in waits.iter().enumerate() {
            prop_assert_eq!(*wait, config.delay_for(u32::try_from(i).unwrap_or(u32::MAX)));
        }
    }
}
