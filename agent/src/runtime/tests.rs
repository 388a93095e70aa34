#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    log::{LogWriter, MAX_LINE, Stream, rfc3339_nano},
    *,
};
use crate::cgroups::{Resources, V2Driver};

fn spec(dir: &Path) -> ContainerSpec {
    ContainerSpec {
        id: "c1".to_owned(),
        bundle: dir.join("bundle"),
        image_rootfs: dir.join("image"),
        args: vec!["sh".to_owned()],
        env: vec!["PATH=/bin".to_owned()],
        cwd: "/".to_owned(),
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        hostname: "web-0".to_owned(),
        netns: None,
        cgroup: PathBuf::from("pods/u/c1"),
        resources: Resources::from_kubernetes(&crate::cgroups::ResourceSpec::default()),
        log: LogConfig { path: dir.join("logs/0.log"), max_bytes: 4096, max_files: 3 },
    }
}

fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
}

#[test]
fn timestamps_are_rfc3339_with_nanoseconds_in_utc() {
    assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(rfc3339_nano(fixed_clock()), "2023-11-14T22:13:20.123456789Z");
    // A leap day.
    assert_eq!(rfc3339_nano(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000000Z");
}

fn log_config(dir: &Path, max_bytes: u64, max_files: u32) -> LogConfig {
    LogConfig { path: dir.join("c/0.log"), max_bytes, max_files }
}

#[test]
fn log_lines_are_cri_formatted_and_partial_lines_wait_for_their_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = log_config(tmp.path(), 0, 1);
    let mut log = LogWriter::open_with_clock(&cfg, fixed_clock).unwrap();
    log.write(Stream::Stdout, b"hello\nwor").unwrap();
    log.write(Stream::Stderr, b"oops\n").unwrap();
    log.write(Stream::Stdout, b"ld\n\n").unwrap();
    log.write(Stream::Stdout, b"no newline").unwrap();
    log.finish().unwrap();
    let ts = "2023-11-14T22:13:20.123456789Z";
    assert_eq!(
        fs::read_to_string(&cfg.path).unwrap(),
        format!(
            "{ts} stdout F hello\n{ts} stderr F oops\n{ts} stdout F world\n{ts} stdout F \n{ts} stdout F no newline\n"
        )
    );
}

#[test]
fn long_lines_are_split_into_partial_records() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = log_config(tmp.path(), 0, 1);
    let mut log = LogWriter::open_with_clock(&cfg, fixed_clock).unwrap();
    let mut long = vec![b'x'; MAX_LINE * 2 + 10];
    long.push(b'\n');
    // In two chunks, so the partial buffer fills up too.
    log.write(Stream::Stdout, &long[..MAX_LINE + 5]).unwrap();
    log.write(Stream::Stdout, &long[MAX_LINE + 5..]).unwrap();
    let text = fs::read_to_string(&cfg.path).unwrap();
    let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(tags, ["P", "P", "F"]);
    let total: usize = text.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap().len()).sum();
    assert_eq!(total, MAX_LINE * 2 + 10);
}

#[test]
fn logs_rotate_by_size_keeping_max_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = log_config(tmp.path(), 200, 3);
    let mut log = LogWriter::open_with_clock(&cfg, fixed_clock).unwrap();
    // Each record: 30-byte time + " stdout F " + "line-NN" + "\n" = 48 bytes;
    // four fit in 200.
    for i in 0..20 {
        log.write(Stream::Stdout, format!("line-{i:02}\n").as_bytes()).unwrap();
    }
    let read = |suffix: &str| {
        let mut p = cfg.path.as_os_str().to_owned();
        p.push(suffix);
        fs::read_to_string(PathBuf::from(p)).ok()
    };
    let current = read("").unwrap();
    assert!(current.len() <= 200);
    assert!(current.ends_with("stdout F line-19\n"), "{current}");
    assert!(read(".1").unwrap().ends_with("line-15\n"));
    assert!(read(".2").unwrap().ends_with("line-11\n"));
    assert_eq!(read(".3"), None, "max_files counts the current file");

    // Reopening appends and keeps counting the existing size.
    drop(log);
    let mut log = LogWriter::open_with_clock(&cfg, fixed_clock).unwrap();
    log.write(Stream::Stderr, b"again\n").unwrap();
    assert!(read("").unwrap().ends_with("stderr F again\n"));

    // One file: rotation starts over.
    let one = log_config(&tmp.path().join("one"), 100, 1);
    let mut log = LogWriter::open_with_clock(&one, fixed_clock).unwrap();
    for i in 0..5 {
        log.write(Stream::Stdout, format!("l{i}\n").as_bytes()).unwrap();
    }
    let text = fs::read_to_string(&one.path).unwrap();
    assert!(text.len() <= 100 && text.ends_with("l4\n"), "{text}");
    assert_eq!(fs::read_dir(one.path.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn proc_stat_is_parsed_after_the_last_parenthesis() {
    let line = "4242 (we (ird) na me) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
    assert_eq!(sys::parse_stat(line), Some(('S', 987_654)));
    assert_eq!(sys::parse_stat("garbage"), None);
    let own = sys::proc_stat(std::process::id()).unwrap();
    assert!(sys::alive(std::process::id(), own.1));
    assert!(!sys::alive(std::process::id(), own.1 + 1), "another start time is another process");
}

#[test]
fn mounts_below_a_bundle_are_found_deepest_first_with_escapes_decoded() {
    let mountinfo = "\
22 1 0:21 / /proc rw - proc proc rw
90 22 0:50 / /b/my\\040bundle/rootfs rw - overlay overlay rw
91 90 0:51 / /b/my\\040bundle/rootfs/proc rw - proc proc rw
92 22 0:52 / /b/other rw - tmpfs tmpfs rw
";
    assert_eq!(
        sys::mounts_below(mountinfo, Path::new("/b/my bundle")),
        [PathBuf::from("/b/my bundle/rootfs/proc"), PathBuf::from("/b/my bundle/rootfs")]
    );
}

#[test]
fn validation_rejects_what_the_kernel_or_overlayfs_cannot_take() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(validate(&spec(tmp.path())).is_ok());
    type Mutation = fn(&mut ContainerSpec);
    let cases: [(&str, Mutation); 8] = [
        ("id", |s| s.id = "a/b".to_owned()),
        ("no command", |s| s.args.clear()),
        ("must be absolute", |s| s.image_rootfs = PathBuf::from("rel")),
        ("overlayfs", |s| s.image_rootfs = PathBuf::from("/a,b")),
        ("NUL", |s| s.env.push("A=\0".to_owned())),
        ("KEY=VALUE", |s| s.env.push("NOEQUALS".to_owned())),
        ("cwd", |s| s.cwd = "rel".to_owned()),
        ("hostname", |s| s.hostname = "h".repeat(65)),
    ];
    for (needle, mutate) in cases {
        let mut s = spec(tmp.path());
        mutate(&mut s);
        let err = validate(&s).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn status_reads_the_bundle_and_checks_the_shim_by_start_time() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = Arc::new(V2Driver { root_name: "b".to_owned(), root: tmp.path().join("cg") });
    let rt = Runtime::new(driver, PathBuf::from("/nonexistent"));
    let bundle = tmp.path().join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    assert_eq!(rt.status(&bundle).unwrap(), ContainerStatus::Gone);

    // This test process stands in for a live shim.
    let me = std::process::id();
    let start = sys::start_time(me).unwrap();
    let state =
        ShimState { shim_pid: me, shim_start_time: start, pid: me, pid_start_time: start, started_at_unix_ms: 1 };
    fs::write(bundle.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(rt.status(&bundle).unwrap(), ContainerStatus::Running { pid: me, shim_pid: me });

    // Same PID, other start time: a recycled PID, not our shim.
    let reused = ShimState { shim_start_time: start + 1, ..state };
    fs::write(bundle.join(STATE_FILE), serde_json::to_vec(&reused).unwrap()).unwrap();
    assert_eq!(rt.status(&bundle).unwrap(), ContainerStatus::Gone);
    assert!(matches!(rt.signal(&bundle, Signal::SIGCONT), Ok(())), "the container PID still matches");
    let reused_init = ShimState { pid_start_time: start + 1, ..state };
    fs::write(bundle.join(STATE_FILE), serde_json::to_vec(&reused_init).unwrap()).unwrap();
    assert!(matches!(rt.signal(&bundle, Signal::SIGCONT), Err(RuntimeError::NotRunning { .. })));

    let exit =
        ExitInfo { exit_code: 137, signal: Some(9), oom_killed: true, started_at_unix_ms: 1, finished_at_unix_ms: 2 };
    fs::write(bundle.join(EXIT_FILE), serde_json::to_vec(&exit).unwrap()).unwrap();
    assert_eq!(rt.status(&bundle).unwrap(), ContainerStatus::Exited(exit));

    fs::write(bundle.join(STATE_FILE), "{").unwrap();
    fs::remove_file(bundle.join(EXIT_FILE)).unwrap();
    let err = rt.status(&bundle).unwrap_err();
    assert!(matches!(err, RuntimeError::Json { .. }), "{err}");
}

#[test]
fn program_lookup_follows_the_container_path() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
    fs::write(bin.join("data"), "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let env = [format!("PATH=/nonexistent:{}", bin.display())];
    let found = init::resolve_program("tool", &env).unwrap();
    assert_eq!(found.to_str().unwrap(), bin.join("tool").to_str().unwrap());
    let err = init::resolve_program("data", &env).unwrap_err();
    assert_eq!(err.0, "exec data: executable file not found in $PATH");
    assert_eq!(init::resolve_program("/x/y", &env).unwrap().to_str().unwrap(), "/x/y");
}

#[test]
fn the_default_capabilities_are_containerds() {
    let mask = init::DEFAULT_CAPS.iter().fold(0u64, |m, c| m | c.bitmask());
    assert_eq!(format!("{mask:016x}"), "00000000a80425fb");
}
