use super::*;

const OK: &str = "uplink: eth0
services:
  - name: web
    vip: 198.19.0.10
    port: 80
    backends:
      - { address: 198.18.1.2, port: 8080, weight: 2 }
      - { address: 198.18.2.2, port: 8080, state: terminating }
";

fn parse(text: &str) -> Result<StandaloneConfig, ConfigError> {
    StandaloneConfig::from_yaml("t.yaml", text, &Checks::accept_all())
}

fn error(text: &str) -> String {
    parse(text).expect_err("must be rejected").to_string()
}

#[test]
fn a_valid_file_parses_with_defaults() {
    let c = parse(OK).expect("valid");
    assert_eq!(c.instance, DEFAULT_INSTANCE);
    assert_eq!(c.metrics_address, DEFAULT_METRICS_ADDRESS);
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.desired_services()[0].backends.len(), 2);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = OK.replace("port: 80\n", "port: 0\n").replace("weight: 2", "weight: 0");
    let e = error(&text);
    assert!(e.contains("services[0].port: port 0 is not allowed"), "{e}");
    assert!(e.contains("services[0].backends[0].weight: weight 0"), "{e}");
}

#[test]
fn unknown_fields_name_the_field() {
    let e = error(&OK.replace("port: 80\n", "port: 80\n    wieght: 1\n"));
    assert!(e.contains("wieght") && e.contains("t.yaml"), "{e}");
}

#[test]
fn duplicate_services_are_rejected() {
    let second = "  - name: web2\n    vip: 198.19.0.10\n    port: 80\n    backends: []\n";
    let e = error(&format!("{OK}{second}"));
    assert!(e.contains("services[1]"), "{e}");
}

#[test]
fn unknown_interfaces_are_rejected() {
    let checks = Checks::new(|_: &str| false, |_: &std::path::Path| Ok(()));
    let e = StandaloneConfig::from_yaml("t.yaml", OK, &checks).expect_err("unknown uplink").to_string();
    assert!(e.contains("uplink") && e.contains("eth0"), "{e}");
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../examples/standalone.yaml");
    let c = parse(text).expect("examples/standalone.yaml must stay valid");
    assert_eq!(c.services.len(), 3);
}

// ---- One test per kind of mistake ----------------------------------------

/// Two Services, every optional field exercised once.
const FULL: &str = "instance: demo
uplink: eth0
socket_lb_cgroup: /sys/fs/cgroup/unified/berth
metrics_address: 127.0.0.1:9999
limits:
  services: 16
  backends: 64
  conntrack: 1000
  affinity: 500
  schedule_slots: 40000
  sock_rev: 300
services:
  - name: shop/web
    vip: 198.19.0.10
    port: 80
    protocol: TCP
    algorithm: wrr
    session_affinity: ClientIP
    affinity_timeout_seconds: 60
    backends:
      - address: 198.18.1.2
        port: 8080
        weight: 3
        state: active
      - { address: 198.18.1.3, port: 8080, state: terminating, weight: 0 }
  - name: dns
    vip: 198.19.0.53
    port: 53
    protocol: UDP
    algorithm: maglev
    maglev_table_size: 4093
    session_affinity: None
    backends:
      - { address: 198.18.2.2, port: 5353 }
";

/// The problems of a file that must parse but fail validation.
fn problems_with(text: &str, checks: &Checks) -> Vec<ConfigProblem> {
    match StandaloneConfig::from_yaml("t.yaml", text, checks) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Asserts `text` has exactly one problem, at `path`, whose reason contains
/// `reason`.
#[track_caller]
fn assert_problem(text: &str, path: &str, reason: &str) {
    let problems = problems_with(text, &Checks::accept_all());
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, path, "{problems:#?}");
    assert!(problems[0].reason.contains(reason), "{:?} lacks {reason:?}", problems[0].reason);
}

#[test]
fn the_full_example_parses_to_idiomatic_values() {
    let c = parse(FULL).expect("valid");
    assert_eq!(c.instance, "demo");
    assert_eq!(c.uplink, "eth0");
    assert_eq!(c.socket_lb_cgroup.as_deref(), Some(Path::new("/sys/fs/cgroup/unified/berth")));
    assert_eq!(c.metrics_address, "127.0.0.1:9999".parse().expect("address"));
    assert_eq!(
        c.limits,
        Limits { services: 16, backends: 64, conntrack: 1000, affinity: 500, schedule_slots: 40000, sock_rev: 300 }
    );
    let web = &c.services[0];
    assert_eq!(web.name, "shop/web");
    assert_eq!((web.vip, web.port, web.protocol), (Ipv4Addr::new(198, 19, 0, 10), 80, Protocol::Tcp));
    assert_eq!(web.algorithm, Algorithm::Wrr);
    assert_eq!(web.affinity, Affinity::ClientIp { timeout_s: 60 });
    assert_eq!(
        web.backends,
        vec![
            BackendSpec {
                address: Ipv4Addr::new(198, 18, 1, 2),
                port: 8080,
                weight: Weight::new(3).expect("nonzero"),
                state: BackendState::Active
            },
            BackendSpec {
                address: Ipv4Addr::new(198, 18, 1, 3),
                port: 8080,
                weight: Weight::ONE,
                state: BackendState::Terminating
            },
        ]
    );
    let dns = &c.services[1];
    assert_eq!((dns.protocol, dns.algorithm, dns.affinity), (Protocol::Udp, Algorithm::Maglev, Affinity::None));
    assert_eq!(dns.maglev_table_size.get(), 4093);

    let desired = c.desired_services();
    assert_eq!(desired[0].affinity_timeout_s, Some(60));
    assert_eq!(desired[1].affinity_timeout_s, None);
    assert!(desired[0].backends[1].terminating && !desired[0].backends[0].terminating);
    assert_eq!(desired[1].maglev_table_size.get(), 4093);
    assert_eq!(desired[0].addr(), web.addr());
}

#[test]
fn defaults_follow_kubernetes_and_abi_h() {
    let c = parse(&OK.replace("port: 80\n", "port: 80\n    session_affinity: ClientIP\n")).expect("valid");
    let s = &c.services[0];
    assert_eq!((s.protocol, s.algorithm), (Protocol::Tcp, Algorithm::Wrr));
    assert_eq!(s.affinity, Affinity::ClientIp { timeout_s: 10_800 });
    assert_eq!(s.maglev_table_size, MaglevTableSize::DEFAULT);
    assert_eq!(s.backends[0].state, BackendState::Active);
    assert_eq!(c.socket_lb_cgroup, None);
    let l = c.limits;
    let m = crate::datapath::MapLimits::default();
    assert_eq!(
        (l.services, l.backends, l.conntrack, l.affinity, l.schedule_slots, l.sock_rev),
        (65_536, 262_144, 262_144, 65_536, 1_048_576, 65_536)
    );
    assert_eq!(
        (l.services, l.backends, l.conntrack, l.affinity, l.schedule_slots, l.sock_rev),
        (m.services, m.backends, m.conntrack, m.affinity, m.schedule_slots, m.sock_rev)
    );
    // An empty service list is a valid (idle) data plane.
    assert!(parse("uplink: eth0\n").expect("valid").services.is_empty());
}

#[test]
fn ports_must_be_1_to_65535() {
    assert_problem(&OK.replace("port: 80\n", "port: 0\n"), "services[0].port", "port 0 is not allowed (1-65535)");
    assert_problem(&OK.replace("port: 80\n", "port: 65536\n"), "services[0].port", "port 65536 is out of range");
    assert_problem(&OK.replace("port: 80\n", "port: -1\n"), "services[0].port", "out of range");
    assert_problem(
        &OK.replace("198.18.1.2, port: 8080", "198.18.1.2, port: 0"),
        "services[0].backends[0].port",
        "port 0",
    );
    parse(&OK.replace("port: 80\n", "port: 65535\n")).expect("65535 is a port");
}

#[test]
fn weights_must_be_1_to_65535_on_active_backends() {
    assert_problem(
        &OK.replace("weight: 2", "weight: 0"),
        "services[0].backends[0].weight",
        "weight 0 is not allowed for an active backend",
    );
    assert_problem(
        &OK.replace("weight: 2", "weight: 65536"),
        "services[0].backends[0].weight",
        "out of range (1-65535)",
    );
    assert_problem(&OK.replace("weight: 2", "weight: -3"), "services[0].backends[0].weight", "out of range");
    // A draining backend may say 0.
    parse(&OK.replace("state: terminating", "state: terminating, weight: 0")).expect("valid");
    parse(&OK.replace("weight: 2", "weight: 65535")).expect("valid");
}

#[test]
fn duplicate_names_point_at_the_first_use() {
    let second = "  - name: web\n    vip: 198.19.0.11\n    port: 80\n";
    assert_problem(
        &format!("{OK}{second}"),
        "services[1].name",
        "duplicate Service name \"web\" (first used by services[0])",
    );
}

#[test]
fn duplicate_vip_port_protocol() {
    let second = "  - name: web2\n    vip: 198.19.0.10\n    port: 80\n";
    assert_problem(
        &format!("{OK}{second}"),
        "services[1]",
        "198.19.0.10:80/TCP is already used by services[0] (\"web\")",
    );
    // Same VIP and port over UDP is another Service.
    parse(&format!("{OK}{}", second.replace("port: 80\n", "port: 80\n    protocol: UDP\n"))).expect("valid");
}

#[test]
fn bad_addresses_are_not_also_reported_as_duplicates() {
    let second = "  - name: web2\n    vip: 198.19.0.x\n    port: 0\n";
    let text = format!("{}{second}", OK.replace("198.19.0.10", "198.19.0.x"));
    let paths: Vec<String> = problems_with(&text, &Checks::accept_all()).into_iter().map(|p| p.path).collect();
    assert_eq!(paths, ["services[0].vip", "services[1].vip", "services[1].port"]);
    let text = OK.replace("198.18.1.2", "nope").replace("198.18.2.2", "nope");
    let paths: Vec<String> = problems_with(&text, &Checks::accept_all()).into_iter().map(|p| p.path).collect();
    assert_eq!(paths, ["services[0].backends[0].address", "services[0].backends[1].address"]);
}

#[test]
fn duplicate_backends_within_a_service() {
    let text = OK.replace("198.18.2.2, port: 8080", "198.18.1.2, port: 8080");
    assert_problem(&text, "services[0].backends[1]", "duplicate backend 198.18.1.2:8080 (first listed at backends[0])");
    // The same address on another port is another backend.
    parse(&OK.replace("198.18.2.2, port: 8080", "198.18.1.2, port: 8081")).expect("valid");
}

#[test]
fn vips_must_be_unicast_and_not_loopback() {
    for (vip, kind) in [
        ("0.0.0.0", "unspecified"),
        ("224.0.0.5", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("127.0.0.1", "loopback"),
    ] {
        assert_problem(&OK.replace("198.19.0.10", vip), "services[0].vip", kind);
    }
    assert_problem(&OK.replace("198.19.0.10", "fd00::10"), "services[0].vip", "IPv6 is not supported yet");
    assert_problem(&OK.replace("198.19.0.10", "198.19.0"), "services[0].vip", "is not an IPv4 address");
}

#[test]
fn backend_addresses_must_be_unicast() {
    for (addr, kind) in [("0.0.0.0", "unspecified"), ("239.1.1.1", "multicast"), ("255.255.255.255", "broadcast")] {
        assert_problem(&OK.replace("198.18.1.2", addr), "services[0].backends[0].address", kind);
    }
    assert_problem(
        &OK.replace("198.18.1.2", "\"::1\""),
        "services[0].backends[0].address",
        "IPv6 is not supported yet",
    );
    assert_problem(&OK.replace("198.18.1.2", "backend-1"), "services[0].backends[0].address", "not an IPv4 address");
    // Loopback backends are allowed (socket LB can reach them).
    parse(&OK.replace("198.18.1.2", "127.0.0.1")).expect("valid");
}

#[test]
fn service_names_are_dns_like() {
    assert_problem(&OK.replace("name: web", "name: \"\""), "services[0].name", "must not be empty");
    for bad in ["Web", "-web", "web-", "we_b", "a/b/c", "/web", "web/"] {
        assert_problem(
            &OK.replace("name: web", &format!("name: \"{bad}\"")),
            "services[0].name",
            "is not a valid name",
        );
    }
    let long = "a".repeat(254);
    assert_problem(&OK.replace("name: web", &format!("name: {long}")), "services[0].name", "at most 253");
    for good in ["web", "w", "web-1.example", "default/web", "0abc"] {
        parse(&OK.replace("name: web", &format!("name: {good}"))).expect(good);
    }
}

#[test]
fn maglev_table_size_needs_maglev_and_a_prime() {
    let maglev = OK.replace("port: 80\n", "port: 80\n    algorithm: maglev\n    maglev_table_size: SIZE\n");
    assert_problem(&maglev.replace("SIZE", "1000"), "services[0].maglev_table_size", "not prime");
    assert_problem(&maglev.replace("SIZE", "131101"), "services[0].maglev_table_size", "out of range (251-131071)");
    assert_problem(&maglev.replace("SIZE", "-7"), "services[0].maglev_table_size", "out of range");
    assert_problem(
        &OK.replace("port: 80\n", "port: 80\n    maglev_table_size: 251\n"),
        "services[0].maglev_table_size",
        "only allowed with algorithm: maglev (this Service uses wrr)",
    );
    assert_eq!(parse(&maglev.replace("SIZE", "257")).expect("valid").services[0].maglev_table_size.get(), 257);
}

#[test]
fn maglev_tables_must_hold_every_active_backend() {
    let backends: String =
        (1..=252).map(|i| format!("      - {{ address: 198.18.{}.{}, port: 80 }}\n", i / 200, i % 200 + 1)).collect();
    let text = format!(
        "uplink: eth0\nservices:\n  - name: big\n    vip: 198.19.0.1\n    port: 80\n    algorithm: maglev\n    maglev_table_size: 251\n    backends:\n{backends}"
    );
    assert_problem(&text, "services[0].backends", "252 active backends do not fit a maglev table of 251 slots");
}

#[test]
fn affinity_timeout_range_and_kind() {
    let sticky =
        OK.replace("port: 80\n", "port: 80\n    session_affinity: ClientIP\n    affinity_timeout_seconds: T\n");
    assert_problem(
        &sticky.replace("T\n", "0\n"),
        "services[0].affinity_timeout_seconds",
        "timeout 0 is out of range (1-86400",
    );
    assert_problem(&sticky.replace("T\n", "86401\n"), "services[0].affinity_timeout_seconds", "out of range");
    assert_eq!(
        parse(&sticky.replace("T\n", "86400\n")).expect("valid").services[0].affinity,
        Affinity::ClientIp { timeout_s: 86_400 }
    );
    assert_problem(
        &OK.replace("port: 80\n", "port: 80\n    affinity_timeout_seconds: 10\n"),
        "services[0].affinity_timeout_seconds",
        "only allowed with session_affinity: ClientIP",
    );
}

#[test]
fn limits_must_be_positive_and_large_enough() {
    assert_problem(&format!("{OK}limits:\n  conntrack: 0\n"), "limits.conntrack", "must be at least 1");
    assert_problem(&format!("{OK}limits:\n  sock_rev: 4294967296\n"), "limits.sock_rev", "out of range");
    assert_problem(&format!("{OK}limits:\n  affinity: -1\n"), "limits.affinity", "out of range");
    let two = format!("{OK}  - name: web2\n    vip: 198.19.0.11\n    port: 80\n");
    assert_problem(
        &format!("{two}limits:\n  services: 1\n"),
        "limits.services",
        "limit 1 is smaller than the 2 Services",
    );
    assert_problem(
        &format!("{OK}limits:\n  backends: 1\n"),
        "limits.backends",
        "limit 1 is smaller than the 2 backends",
    );
    // WRR 2:1: 3 slots, 6 with the previous table kept during a swap.
    let wrr = OK.replace("state: terminating", "weight: 1");
    assert_problem(
        &format!("{wrr}limits:\n  schedule_slots: 5\n"),
        "limits.schedule_slots",
        "the 6 slots this file needs",
    );
    parse(&format!("{wrr}limits:\n  schedule_slots: 6\n")).expect("fits exactly");
    // Only active backends are scheduled (weight 2 alone reduces to 1 slot).
    assert_problem(&format!("{OK}limits:\n  schedule_slots: 1\n"), "limits.schedule_slots", "the 2 slots");
    // A Maglev Service always takes its whole table.
    let maglev = OK.replace("port: 80\n", "port: 80\n    algorithm: maglev\n");
    assert_problem(&format!("{maglev}limits:\n  schedule_slots: 32761\n"), "limits.schedule_slots", "32762 slots");
}

#[test]
fn uplink_must_name_an_existing_interface() {
    assert_problem(&OK.replace("uplink: eth0", "uplink: \"\""), "uplink", "must name the interface");
    assert_problem(&OK.replace("uplink: eth0", "uplink: a-very-long-interface"), "uplink", "at most 15 bytes");
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = asked.clone();
    let checks = Checks::new(
        move |name: &str| {
            record.lock().expect("not poisoned").push(name.to_owned());
            name == "lo"
        },
        |_: &Path| Ok(()),
    );
    let problems = problems_with(OK, &checks);
    assert_eq!(
        problems,
        vec![ConfigProblem { path: "uplink".into(), reason: "interface \"eth0\" does not exist".into() }]
    );
    assert_eq!(*asked.lock().expect("not poisoned"), vec!["eth0".to_owned()]);
    StandaloneConfig::from_yaml("t.yaml", &OK.replace("eth0", "lo"), &checks).expect("lo exists");
}

#[test]
fn socket_lb_cgroup_must_be_an_absolute_cgroup2_dir() {
    assert_problem(&format!("{OK}socket_lb_cgroup: sys/fs/cgroup\n"), "socket_lb_cgroup", "must be an absolute path");
    let checks = Checks::new(
        |_: &str| true,
        |p: &Path| {
            if p == Path::new("/cg2") { Ok(()) } else { Err(format!("{} is not on a cgroup2 filesystem", p.display())) }
        },
    );
    let problems = problems_with(&format!("{OK}socket_lb_cgroup: /sys/fs/cgroup/cpu\n"), &checks);
    assert_eq!(
        problems,
        vec![ConfigProblem {
            path: "socket_lb_cgroup".into(),
            reason: "/sys/fs/cgroup/cpu is not on a cgroup2 filesystem".into()
        }]
    );
    StandaloneConfig::from_yaml("t.yaml", &format!("{OK}socket_lb_cgroup: /cg2\n"), &checks).expect("valid");
}

#[test]
fn instance_and_metrics_address() {
    assert_problem(&format!("{OK}instance: Demo\n"), "instance", "not a valid instance name");
    assert_problem(&format!("{OK}instance: {}\n", "a".repeat(33)), "instance", "1-32 characters");
    assert_problem(&format!("{OK}metrics_address: localhost\n"), "metrics_address", "not an address:port");
    let c = parse(&format!("{OK}metrics_address: \"[::1]:9000\"\n")).expect("valid");
    assert_eq!(c.metrics_address, "[::1]:9000".parse().expect("address"));
}

#[test]
fn all_problems_are_listed_one_per_line() {
    let text = FULL
        .replace("port: 80\n", "port: 0\n")
        .replace("weight: 3", "weight: 0")
        .replace("name: dns", "name: shop/web")
        .replace("affinity_timeout_seconds: 60", "affinity_timeout_seconds: 0");
    let e = parse(&text).expect_err("invalid");
    let ConfigError::Invalid { problems, .. } = &e else { panic!("{e:?}") };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "services[0].port",
            "services[0].affinity_timeout_seconds",
            "services[0].backends[0].weight",
            "services[1].name"
        ]
    );
    let lines: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], "t.yaml: services[0].port: port 0 is not allowed (1-65535)");
    assert!(lines.iter().all(|l| l.starts_with("t.yaml: services[")), "{lines:?}");
}

#[test]
fn schema_errors_name_file_path_field_and_line() {
    let e = error(&OK.replace("weight: 2", "weight: 2, colour: red"));
    assert!(e.starts_with("t.yaml: services[0].backends[0]: unknown field `colour`"), "{e}");
    assert!(e.contains("line 7 column"), "{e}");
    let e = error(&format!("{OK}limit:\n  services: 1\n"));
    assert!(e.contains("unknown field `limit`") && e.contains("`limits`"), "{e}");
    let e = error(&OK.replace("port: 80\n", "port: 80\n    protocol: tcp\n"));
    assert!(e.contains("services[0].protocol: unknown variant `tcp`, expected `TCP` or `UDP`"), "{e}");
    let e = error(&OK.replace("port: 80\n", "port: 80\n    session_affinity: clientip\n"));
    assert!(e.contains("services[0].session_affinity") && e.contains("`ClientIP`"), "{e}");
    let e = error(&OK.replace("port: 80\n", "port: 80\n    algorithm: Maglev\n"));
    assert!(e.contains("services[0].algorithm: unknown variant `Maglev`"), "{e}");
    let e = error(&OK.replace("    port: 80\n", ""));
    assert!(e.contains("services[0]: missing field `port`"), "{e}");
    assert!(error("").contains("missing field `uplink`"));
    let e = error("- eth0\n");
    assert!(e.contains("expected a mapping of standalone settings"), "{e}");
    assert!(matches!(parse("uplink: [").expect_err("not YAML"), ConfigError::Parse { .. }));
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, OK.replace("port: 80\n", "port: 0\n")).expect("write");
    let e = StandaloneConfig::load(&path, &Checks::accept_all()).expect_err("invalid");
    assert!(e.to_string().starts_with(&format!("{}: services[0].port:", path.display())), "{e}");
    std::fs::write(&path, OK).expect("write");
    StandaloneConfig::load(&path, &Checks::accept_all()).expect("valid");
    let missing = dir.path().join("missing.yaml");
    let e = StandaloneConfig::load(&missing, &Checks::accept_all()).expect_err("missing");
    assert!(matches!(&e, ConfigError::Read { path, .. } if *path == missing), "{e:?}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn system_checks_see_this_machine() {
    // Every Linux network namespace has a loopback interface.
    assert!(system_interface_exists("lo"));
    assert!(!system_interface_exists("berth-no-such0"));
    let dir = tempfile::tempdir().expect("temp dir");
    let reason = system_cgroup2_dir(dir.path()).expect_err("a temp dir is not cgroup2");
    assert!(reason.contains("not on a cgroup2 filesystem"), "{reason}");
    assert!(system_cgroup2_dir(&dir.path().join("missing")).is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A port or weight value, sometimes out of range.
    fn number() -> impl Strategy<Value = i64> {
        prop_oneof![4 => 1i64..=65_535, 1 => Just(0i64), 1 => 65_536i64..100_000, 1 => -5i64..0]
    }

    proptest! {
        /// Exactly the out-of-range numbers are reported, each at its path.
        #[test]
        fn every_bad_number_is_reported_at_its_path(
            services in prop::collection::vec((number(), prop::collection::vec((number(), number()), 0..4)), 1..4)
        ) {
            let mut text = String::from("uplink: eth0\nservices:\n");
            let mut want = Vec::new();
            for (i, (port, backends)) in services.iter().enumerate() {
                text += &format!("  - name: s{i}\n    vip: 198.19.0.{}\n    port: {port}\n    backends:\n", i + 1);
                if !(1..=65_535).contains(port) {
                    want.push(format!("services[{i}].port"));
                }
                for (j, (bport, weight)) in backends.iter().enumerate() {
                    text += &format!("      - {{ address: 198.18.{i}.{}, port: {bport}, weight: {weight} }}\n", j + 1);
                    if !(1..=65_535).contains(bport) {
                        want.push(format!("services[{i}].backends[{j}].port"));
                    }
                    if !(1..=65_535).contains(weight) {
                        want.push(format!("services[{i}].backends[{j}].weight"));
                    }
                }
            }
            match StandaloneConfig::from_yaml("p.yaml", &text, &Checks::accept_all()) {
                Ok(c) => {
                    prop_assert!(want.is_empty(), "accepted with problems {:?}", want);
                    for (spec, (port, backends)) in c.services.iter().zip(&services) {
                        prop_assert_eq!(i64::from(spec.port), *port);
                        let got: Vec<(i64, i64)> =
                            spec.backends.iter().map(|b| (i64::from(b.port), i64::from(b.weight.get()))).collect();
                        prop_assert_eq!(&got, backends);
                    }
                }
                Err(ConfigError::Invalid { problems, .. }) => {
                    let got: Vec<String> = problems.into_iter().map(|p| p.path).collect();
                    prop_assert_eq!(got, want);
                }
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }
    }
}
