#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use proptest::prelude::*;

use super::*;

const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  uid: 0b1c2d3e-aaaa-4bbb-8ccc-123456789abc
  labels:
    app: web
    app.kubernetes.io/part-of: shop
  annotations:
    berth.dev/pids-limit: "64"
    berth.dev/weight: "3"
    example.com/note: anything
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsUser: 1000
    runAsGroup: 1000
  containers:
  - name: app
    image: berth-test:latest
    command: ["/bin/server"]
    args: ["--port", "$(PORT)"]
    workingDir: /srv
    env:
    - name: PORT
      value: "8080"
    - name: URL
      value: http://localhost:$(PORT)/
    ports:
    - name: http
      containerPort: 8080
    - containerPort: 5353
      protocol: UDP
    securityContext:
      runAsUser: 2000
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
    resources:
      requests:
        cpu: 250m
        memory: 64Mi
      limits:
        cpu: "1"
        memory: 128974848
    livenessProbe:
      httpGet:
        port: http
        path: /healthz
        httpHeaders:
        - name: X-Probe
          value: live
      initialDelaySeconds: 3
      periodSeconds: 5
      terminationGracePeriodSeconds: 2
    readinessProbe:
      tcpSocket:
        port: 8080
      successThreshold: 2
      failureThreshold: 5
      timeoutSeconds: 2
    startupProbe:
      exec:
        command: ["cat", "/tmp/started"]
      failureThreshold: 30
  - name: sidecar
    image: busybox
    resources:
      limits:
        cpu: 0.5
        memory: 1G
"#;

fn minimal(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{spec}")
}

/// The problems of an invalid manifest, as `path: reason` lines.
fn problems(yaml: &str) -> Vec<String> {
    match parse_pod(yaml) {
        Err(ManifestError::Invalid { problems }) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Asserts exactly one problem, at `path`, whose reason contains `reason`.
#[track_caller]
fn one_problem(yaml: &str, path: &str, reason: &str) {
    let found = problems(yaml);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with(&format!("{path}: ")), "expected a problem at {path}, got {found:#?}");
    assert!(found[0].contains(reason), "expected {reason:?} in {found:#?}");
}

#[test]
fn full_manifest() {
    let pod = parse_pod(FULL).unwrap();
    assert_eq!(pod.name, "web");
    assert_eq!(pod.namespace, "shop");
    assert_eq!(pod.uid, "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc");
    assert_eq!(pod.labels.get("app.kubernetes.io/part-of").map(String::as_str), Some("shop"));
    assert_eq!(pod.annotations.len(), 3);
    assert_eq!(pod.hostname, "web");
    assert_eq!(pod.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(pod.termination_grace, Duration::from_secs(5));
    assert_eq!(pod.weight, Some(3));
    assert_eq!(pod.display_name(), "web_shop(0b1c2d3e-aaaa-4bbb-8ccc-123456789abc)");

    let app = &pod.containers[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.image, "berth-test:latest");
    assert_eq!(app.command, Some(vec!["/bin/server".to_owned()]));
    assert_eq!(app.args, Some(vec!["--port".to_owned(), "$(PORT)".to_owned()]));
    assert_eq!(app.working_dir.as_deref(), Some("/srv"));
    assert_eq!(app.run_as_user, Some(2000), "the container's runAsUser wins");
    assert_eq!(app.run_as_group, Some(1000), "the pod's runAsGroup applies");
    assert!(!app.run_as_non_root);
    assert_eq!(
        app.resources,
        ResourceSpec {
            cpu_request: Some(MilliCpu(250)),
            cpu_limit: Some(MilliCpu(1000)),
            memory_limit_bytes: Some(128_974_848),
            pids_limit: Some(64),
        }
    );
    assert_eq!(
        app.ports,
        vec![
            ContainerPort { name: Some("http".into()), port: 8080, protocol: PortProtocol::Tcp },
            ContainerPort { name: None, port: 5353, protocol: PortProtocol::Udp },
        ]
    );
    assert_eq!(
        app.liveness,
        Some(ProbeSpec {
            action: ProbeAction::HttpGet {
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-Probe".into(), "live".into())],
            },
            initial_delay: Duration::from_secs(3),
            timeout: Duration::from_secs(1),
            period: Duration::from_secs(5),
            success_threshold: 1,
            failure_threshold: 3,
            termination_grace: Some(Duration::from_secs(2)),
        })
    );
    let readiness = app.readiness.as_ref().unwrap();
    assert_eq!(readiness.action, ProbeAction::TcpSocket { port: 8080 });
    assert_eq!((readiness.success_threshold, readiness.failure_threshold), (2, 5));
    assert_eq!(readiness.timeout, Duration::from_secs(2));
    assert_eq!(readiness.period, Duration::from_secs(10));
    let startup = app.startup.as_ref().unwrap();
    assert_eq!(startup.action, ProbeAction::Exec { command: vec!["cat".into(), "/tmp/started".into()] });
    assert_eq!(startup.failure_threshold, 30);

    let sidecar = &pod.containers[1];
    assert_eq!(sidecar.command, None);
    assert_eq!(sidecar.run_as_user, Some(1000), "the pod's runAsUser applies");
    assert_eq!(
        sidecar.resources,
        ResourceSpec {
            cpu_request: Some(MilliCpu(500)),
            cpu_limit: Some(MilliCpu(500)),
            memory_limit_bytes: Some(1_000_000_000),
            pids_limit: Some(64),
        },
        "a missing request defaults to the limit; the pids limit applies to every container"
    );
    assert_eq!(sidecar.liveness, None);

    // The spec round-trips through serde (the admin API stores and shows it).
    let json = serde_json::to_string(&pod).unwrap();
    assert_eq!(serde_json::from_str::<PodSpec>(&json).unwrap(), pod);
}

#[test]
fn defaults() {
    let pod = parse_pod(&minimal("  containers:\n  - name: c\n    image: busybox\n")).unwrap();
    assert_eq!(pod.namespace, "default");
    assert_eq!(pod.restart_policy, RestartPolicy::Always);
    assert_eq!(pod.termination_grace, Duration::from_secs(30));
    assert_eq!(pod.weight, None);
    assert!(pod.labels.is_empty());
    let c = &pod.containers[0];
    assert_eq!((c.command.as_ref(), c.args.as_ref(), c.working_dir.as_ref()), (None, None, None));
    assert_eq!(c.resources, ResourceSpec::default());
    assert!(c.env.is_empty() && c.ports.is_empty());

    // A generated uid is a version 4 UUID, and a fresh one each time.
    let uid = &pod.uid;
    assert_eq!(uid.len(), 36);
    let groups: Vec<&str> = uid.split('-').collect();
    assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    assert!(uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(groups[2].starts_with('4'));
    assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    let again = parse_pod(&minimal("  containers:\n  - name: c\n    image: busybox\n")).unwrap();
    assert_ne!(again.uid, pod.uid);

    // Empty command and args mean "not set", as in Kubernetes.
    let pod = parse_pod(&minimal("  containers:\n  - name: c\n    image: i\n    command: []\n    args: []\n")).unwrap();
    assert_eq!((pod.containers[0].command.as_ref(), pod.containers[0].args.as_ref()), (None, None));
}

#[test]
fn json_manifests_parse_too() {
    let json =
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
    assert_eq!(parse_pod(json).unwrap().name, "j");
}

#[test]
fn hostname() {
    let long = "a".repeat(62) + "-b";
    let pod =
        parse_pod(&minimal("  containers:\n  - name: c\n    image: i\n").replace("name: p", &format!("name: {long}")))
            .unwrap();
    assert_eq!(pod.hostname, "a".repeat(62), "cut to 63 characters, trailing '-' dropped");
    let pod = parse_pod(&minimal("  hostname: box\n  containers:\n  - name: c\n    image: i\n")).unwrap();
    assert_eq!(pod.hostname, "box");
    one_problem(
        &minimal("  hostname: Box\n  containers:\n  - name: c\n    image: i\n"),
        "spec.hostname",
        "DNS-1123 label",
    );
}

#[test]
fn wrong_kind() {
    for (yaml, shown) in [
        ("apiVersion: apps/v1\nkind: Deployment\n", "apiVersion \"apps/v1\" and kind \"Deployment\""),
        ("apiVersion: v1\nkind: Service\n", "kind \"Service\""),
        ("kind: Pod\n", "apiVersion (missing)"),
        ("apiVersion: v1\n", "kind (missing)"),
        ("apiVersion: 1\nkind: Pod\n", "apiVersion \"Number(1)\""),
    ] {
        let err = parse_pod(yaml).unwrap_err();
        assert!(matches!(err, ManifestError::WrongKind { .. }), "{yaml}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(shown), "{message}");
        assert!(message.contains("berth runs only apiVersion \"v1\", kind \"Pod\""), "{message}");
    }
}

#[test]
fn parse_errors_say_where() {
    for yaml in ["", "- a\n- b\n", "just text", "apiVersion: v1\nkind: Pod\n  bad: indent\n", "{"] {
        let err = parse_pod(yaml).unwrap_err();
        assert!(matches!(err, ManifestError::Parse { .. }), "{yaml:?}: {err:?}");
    }
    let err = parse_pod(&minimal("  containers: 3\n")).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("containers"), "{message}");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn names() {
    let c = "  containers:\n  - name: c\n    image: i\n";
    one_problem(&minimal(c).replace("name: p", "name: Web"), "metadata.name", "\"Web\" is not a DNS-1123 subdomain");
    one_problem(&minimal(c).replace("  name: p\n", ""), "metadata.name", "Required value");
    one_problem(
        &minimal(c).replace("  name: p\n", "  generateName: p-\n"),
        "metadata.name",
        "generateName is not supported",
    );
    assert_eq!(parse_pod(&minimal(c).replace("name: p", "name: a.b-c.d")).unwrap().name, "a.b-c.d");
    one_problem(
        &minimal(c).replace("name: p", "name: p\n  namespace: my.ns"),
        "metadata.namespace",
        "is not a DNS-1123 label",
    );
    one_problem(&minimal(c).replace("name: p", "name: p\n  uid: ../../etc"), "metadata.uid", "letters, digits and '-'");
    one_problem(
        &minimal("  containers:\n  - name: Web\n    image: i\n"),
        "spec.containers[0].name",
        "\"Web\" is not a DNS-1123 label",
    );
    one_problem(
        &minimal("  containers:\n  - name: a\n    image: i\n  - name: a\n    image: i\n"),
        "spec.containers[1].name",
        "Duplicate value: \"a\"",
    );
    one_problem(&minimal("  containers:\n  - name: ''\n    image: i\n"), "spec.containers[0].name", "Required value");
    one_problem(&minimal("  containers:\n  - name: c\n"), "spec.containers[0].image", "Required value");
    one_problem(&minimal("  containers:\n  - name: c\n    image: ' i'\n"), "spec.containers[0].image", "whitespace");
    one_problem(&minimal("  containers: []\n"), "spec.containers", "Required value");
    one_problem("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n", "spec", "Required value");
    one_problem(
        &minimal(c).replace("name: p", "name: p\n  labels:\n    bad key: x"),
        "metadata.labels[bad key]",
        "is not a qualified name",
    );
    one_problem(
        &minimal(c).replace("name: p", "name: p\n  labels:\n    k: -x"),
        "metadata.labels[k]",
        "not a valid label value",
    );
}

#[test]
fn every_problem_is_reported() {
    let yaml = minimal(
        "  restartPolicy: Sometimes\n  terminationGracePeriodSeconds: -1\n  containers:\n  - name: A\n  - name: b\n    image: i\n    ports:\n    - containerPort: 0\n",
    );
    let found = problems(&yaml);
    assert_eq!(
        found,
        [
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.terminationGracePeriodSeconds: must be greater than or equal to 0",
            "spec.containers[0].name: \"A\" is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)",
            "spec.containers[0].image: Required value",
            "spec.containers[1].ports[0].containerPort: must be between 1 and 65535, inclusive",
        ]
    );
    // The error's message lists them one per line.
    assert_eq!(parse_pod(&yaml).unwrap_err().to_string().lines().count(), 5);
}

#[test]
fn ports() {
    let c = |ports: &str| minimal(&format!("  containers:\n  - name: c\n    image: i\n    ports:\n{ports}"));
    one_problem(&c("    - containerPort: 70000\n"), "spec.containers[0].ports[0].containerPort", "between 1 and 65535");
    one_problem(
        &c("    - containerPort: 80\n      name: http\n    - containerPort: 81\n      name: http\n"),
        "spec.containers[0].ports[1].name",
        "Duplicate value: \"http\"",
    );
    one_problem(
        &c("    - containerPort: 80\n      name: '8080'\n"),
        "spec.containers[0].ports[0].name",
        "valid port name",
    );
    one_problem(
        &c("    - containerPort: 80\n      name: a-very-long-port-name\n"),
        "spec.containers[0].ports[0].name",
        "valid port name",
    );
    one_problem(&c("    - containerPort: 80\n      protocol: SCTP\n"), "spec.containers[0].ports[0].protocol", "SCTP");
    one_problem(
        &c("    - containerPort: 80\n      protocol: tcp\n"),
        "spec.containers[0].ports[0].protocol",
        "Unsupported value",
    );
    one_problem(
        &c("    - containerPort: 80\n      hostPort: 8080\n"),
        "spec.containers[0].ports[0].hostPort",
        "not supported by berth",
    );
    // The same name in two containers is fine (ports are per container).
    let yaml = minimal(
        "  containers:\n  - name: a\n    image: i\n    ports:\n    - containerPort: 80\n      name: http\n  - name: b\n    image: i\n    ports:\n    - containerPort: 81\n      name: http\n",
    );
    assert!(parse_pod(&yaml).is_ok());
}

#[test]
fn resources() {
    let c = |res: &str| minimal(&format!("  containers:\n  - name: c\n    image: i\n    resources:\n{res}"));
    one_problem(
        &c("      limits:\n        memory: 64MB\n"),
        "spec.containers[0].resources.limits[memory]",
        "\"64MB\" has an unknown suffix \"MB\"",
    );
    one_problem(
        &c("      requests:\n        cpu: lots\n"),
        "spec.containers[0].resources.requests[cpu]",
        "\"lots\" has no digits",
    );
    one_problem(
        &c("      limits:\n        cpu: -1\n"),
        "spec.containers[0].resources.limits[cpu]",
        "must be greater than or equal to 0",
    );
    one_problem(
        &c("      requests:\n        cpu: 600m\n      limits:\n        cpu: 500m\n"),
        "spec.containers[0].resources.requests[cpu]",
        "must be less than or equal to cpu limit of 500m",
    );
    one_problem(
        &c("      requests:\n        memory: 2Gi\n      limits:\n        memory: 1Gi\n"),
        "spec.containers[0].resources.requests[memory]",
        "must be less than or equal to memory limit of 1Gi",
    );
    one_problem(
        &c("      limits:\n        nvidia.com/gpu: 1\n"),
        "spec.containers[0].resources.limits[nvidia.com/gpu]",
        "cpu and memory only",
    );
    let pod = parse_pod(&c("      limits:\n        memory: 0\n        cpu: 0\n      requests:\n        memory: 0\n"))
        .unwrap();
    let r = pod.containers[0].resources;
    assert_eq!(r.memory_limit_bytes, None, "kubelet sets no memory limit for 0");
    assert_eq!(r.cpu_limit, Some(MilliCpu(0)), "a zero cpu limit is no quota (cgroups::milli_cpu_to_quota)");
    let pod = parse_pod(&c("      limits:\n        memory: 129e6\n        cpu: 2.5\n")).unwrap();
    assert_eq!(pod.containers[0].resources.memory_limit_bytes, Some(129_000_000));
    assert_eq!(pod.containers[0].resources.cpu_request, Some(MilliCpu(2500)));
}

#[test]
fn annotations() {
    let c = "  containers:\n  - name: a\n    image: i\n  - name: b\n    image: i\n";
    let with = |annotations: &str| minimal(c).replace("name: p", &format!("name: p\n  annotations:\n{annotations}"));
    let pod = parse_pod(&with("    berth.dev/pids-limit: '100'\n")).unwrap();
    assert!(pod.containers.iter().all(|c| c.resources.pids_limit == Some(100)));
    for bad in ["'0'", "'-1'", "abc", "'1.5'"] {
        one_problem(
            &with(&format!("    berth.dev/pids-limit: {bad}\n")),
            "metadata.annotations[berth.dev/pids-limit]",
            "is not a positive integer",
        );
    }
    assert_eq!(parse_pod(&with("    berth.dev/weight: '65535'\n")).unwrap().weight, Some(65_535));
    for bad in ["'0'", "'65536'", "heavy"] {
        one_problem(
            &with(&format!("    berth.dev/weight: {bad}\n")),
            "metadata.annotations[berth.dev/weight]",
            "between 1 and 65535",
        );
    }
    one_problem(
        &with("    berth.dev/wieght: '2'\n"),
        "metadata.annotations[berth.dev/wieght]",
        "unknown berth annotation (known: berth.dev/pids-limit, berth.dev/weight)",
    );
    let big = "x".repeat(300 * 1024);
    one_problem(&with(&format!("    note: {big}\n")), "metadata.annotations", "Too long");
}

#[test]
fn env() {
    let c = |env: &str| minimal(&format!("  containers:\n  - name: c\n    image: i\n    env:\n{env}"));
    one_problem(
        &c("    - name: SECRET\n      valueFrom:\n        secretKeyRef:\n          name: s\n          key: k\n"),
        "spec.containers[0].env[0].valueFrom",
        "is not supported by berth (values from secrets, config maps or the downward API)",
    );
    one_problem(&c("    - name: A=B\n      value: x\n"), "spec.containers[0].env[0].name", "other than '='");
    one_problem(&c("    - name: ''\n      value: x\n"), "spec.containers[0].env[0].name", "Required value");
    one_problem(&c("    - name: A\n      value: \"x\\0y\"\n"), "spec.containers[0].env[0].value", "NUL");
    // Relaxed names (Kubernetes 1.34): any printable ASCII but '='.
    let pod = parse_pod(&c("    - name: my.var-1 x\n      value: v\n    - name: EMPTY\n")).unwrap();
    assert_eq!(pod.containers[0].env, [("my.var-1 x".to_owned(), "v".to_owned()), ("EMPTY".to_owned(), String::new())]);
}

#[test]
fn probes() {
    let c = |probe: &str| {
        minimal(&format!(
            "  containers:\n  - name: c\n    image: i\n    ports:\n    - containerPort: 8080\n      name: http\n{probe}"
        ))
    };
    let parsed = |probe: &str| parse_pod(&c(probe)).unwrap().containers.remove(0);

    // Defaults and a named port.
    let c0 = parsed("    readinessProbe:\n      httpGet:\n        port: http\n");
    let r = c0.readiness.unwrap();
    assert_eq!(r.action, ProbeAction::HttpGet { port: 8080, path: "/".into(), headers: vec![] });
    assert_eq!(
        (r.initial_delay, r.timeout, r.period),
        (Duration::ZERO, Duration::from_secs(1), Duration::from_secs(10))
    );
    assert_eq!((r.success_threshold, r.failure_threshold, r.termination_grace), (1, 3, None));
    // Explicit zeros mean the defaults, as Kubernetes defaulting does.
    let r = parsed("    livenessProbe:\n      tcpSocket:\n        port: 1\n      timeoutSeconds: 0\n      periodSeconds: 0\n      failureThreshold: 0\n")
        .liveness
        .unwrap();
    assert_eq!((r.timeout, r.period, r.failure_threshold), (Duration::from_secs(1), Duration::from_secs(10), 3));
    // Paths: a leading '/', the fragment dropped, unsafe bytes escaped, the query kept.
    // `p` is a YAML scalar, quotes included.
    let path_of =
        |p: &str| match parsed(&format!("    livenessProbe:\n      httpGet:\n        port: 80\n        path: {p}\n"))
            .liveness
            .unwrap()
            .action
        {
            ProbeAction::HttpGet { path, .. } => path,
            other => panic!("{other:?}"),
        };
    assert_eq!(path_of("healthz"), "/healthz");
    assert_eq!(path_of("'/a b?x=1&y=é#frag'"), "/a%20b?x=1&y=%C3%A9");
    assert_eq!(path_of("\"/ok\\r\\nX-Injected: 1\""), "/ok%0D%0AX-Injected:%201", "no header injection");
    // HTTP scheme spelled out is fine.
    assert!(parsed("    livenessProbe:\n      httpGet:\n        port: 80\n        scheme: HTTP\n").liveness.is_some());

    let p = "spec.containers[0]";
    one_problem(
        &c("    livenessProbe:\n      httpGet:\n        port: 443\n        scheme: HTTPS\n"),
        &format!("{p}.livenessProbe.httpGet.scheme"),
        "not supported by berth (HTTPS probes)",
    );
    one_problem(
        &c("    livenessProbe:\n      grpc:\n        port: 9000\n"),
        &format!("{p}.livenessProbe.grpc"),
        "not supported by berth (gRPC probes)",
    );
    one_problem(
        &c("    livenessProbe:\n      httpGet:\n        port: metrics\n"),
        &format!("{p}.livenessProbe.httpGet.port"),
        "\"metrics\" does not name a port of this container",
    );
    one_problem(
        &c("    livenessProbe:\n      tcpSocket:\n        port: 0\n"),
        &format!("{p}.livenessProbe.tcpSocket.port"),
        "between 1 and 65535",
    );
    one_problem(
        &c("    livenessProbe:\n      tcpSocket:\n        port: 80\n        host: 10.0.0.1\n"),
        &format!("{p}.livenessProbe.tcpSocket.host"),
        "not supported by berth",
    );
    one_problem(
        &c("    livenessProbe:\n      exec:\n        command: []\n"),
        &format!("{p}.livenessProbe.exec.command"),
        "Required value",
    );
    one_problem(
        &c("    livenessProbe:\n      periodSeconds: 5\n"),
        &format!("{p}.livenessProbe"),
        "must specify a handler type",
    );
    one_problem(
        &c("    livenessProbe:\n      exec:\n        command: [x]\n      tcpSocket:\n        port: 80\n"),
        &format!("{p}.livenessProbe.tcpSocket"),
        "may not specify more than 1 handler type",
    );
    one_problem(
        &c("    livenessProbe:\n      tcpSocket:\n        port: 80\n      successThreshold: 2\n"),
        &format!("{p}.livenessProbe.successThreshold"),
        "must be 1",
    );
    one_problem(
        &c("    startupProbe:\n      tcpSocket:\n        port: 80\n      successThreshold: 3\n"),
        &format!("{p}.startupProbe.successThreshold"),
        "must be 1",
    );
    one_problem(
        &c("    readinessProbe:\n      tcpSocket:\n        port: 80\n      terminationGracePeriodSeconds: 5\n"),
        &format!("{p}.readinessProbe.terminationGracePeriodSeconds"),
        "must not be set for readinessProbes",
    );
    one_problem(
        &c("    livenessProbe:\n      tcpSocket:\n        port: 80\n      terminationGracePeriodSeconds: 0\n"),
        &format!("{p}.livenessProbe.terminationGracePeriodSeconds"),
        "must be greater than 0",
    );
    one_problem(
        &c("    readinessProbe:\n      tcpSocket:\n        port: 80\n      initialDelaySeconds: -1\n"),
        &format!("{p}.readinessProbe.initialDelaySeconds"),
        "must be greater than or equal to 0",
    );
    one_problem(
        &c(
            "    readinessProbe:\n      httpGet:\n        port: 80\n        httpHeaders:\n        - name: 'Bad Header'\n          value: x\n",
        ),
        &format!("{p}.readinessProbe.httpGet.httpHeaders[0].name"),
        "valid HTTP header name",
    );
    one_problem(
        &c(
            "    readinessProbe:\n      httpGet:\n        port: 80\n        httpHeaders:\n        - name: X\n          value: \"a\\r\\nb\"\n",
        ),
        &format!("{p}.readinessProbe.httpGet.httpHeaders[0].value"),
        "control characters",
    );
}

#[test]
fn unsupported_features_are_named() {
    let c = "  containers:\n  - name: c\n    image: i\n";
    for (spec, path) in [
        ("  initContainers:\n  - name: init\n    image: i\n", "spec.initContainers"),
        ("  volumes:\n  - name: v\n    emptyDir: {}\n", "spec.volumes"),
        ("  hostNetwork: true\n", "spec.hostNetwork"),
        ("  hostPID: true\n", "spec.hostPID"),
        ("  hostUsers: false\n", "spec.hostUsers"),
        ("  activeDeadlineSeconds: 10\n", "spec.activeDeadlineSeconds"),
        (
            "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n",
            "spec.securityContext.seccompProfile",
        ),
        ("  securityContext:\n    sysctls:\n    - name: a\n      value: b\n", "spec.securityContext.sysctls"),
    ] {
        one_problem(&minimal(&format!("{spec}{c}")), path, "is not supported by berth");
    }
    let container = |extra: &str| minimal(&format!("{c}{extra}"));
    for (extra, path) in [
        ("    envFrom:\n    - configMapRef:\n        name: m\n", "spec.containers[0].envFrom"),
        ("    volumeMounts:\n    - name: v\n      mountPath: /v\n", "spec.containers[0].volumeMounts"),
        ("    lifecycle:\n      preStop:\n        exec:\n          command: [x]\n", "spec.containers[0].lifecycle"),
        ("    securityContext:\n      privileged: true\n", "spec.containers[0].securityContext.privileged"),
        (
            "    securityContext:\n      capabilities:\n        add: [NET_ADMIN]\n",
            "spec.containers[0].securityContext.capabilities.add",
        ),
        (
            "    securityContext:\n      readOnlyRootFilesystem: true\n",
            "spec.containers[0].securityContext.readOnlyRootFilesystem",
        ),
        ("    securityContext:\n      procMount: Unmasked\n", "spec.containers[0].securityContext.procMount"),
    ] {
        one_problem(&container(extra), path, "is not supported by berth");
    }
    // Advisory and restrictive-beyond-berth fields are accepted.
    let pod = parse_pod(&container(
        "    imagePullPolicy: Never\n    tty: true\n    securityContext:\n      allowPrivilegeEscalation: false\n      seccompProfile:\n        type: Unconfined\n      capabilities:\n        drop: [ALL]\n",
    ));
    assert!(pod.is_ok(), "{pod:?}");
    let pod = parse_pod(&minimal(&format!(
        "  nodeSelector:\n    a: b\n  tolerations:\n  - operator: Exists\n  serviceAccountName: x\n  dnsPolicy: ClusterFirst\n{c}"
    )));
    assert!(pod.is_ok(), "{pod:?}");
}

#[test]
fn identity() {
    let c = |sc: &str| minimal(&format!("{sc}  containers:\n  - name: c\n    image: i\n"));
    one_problem(
        &c("  securityContext:\n    runAsUser: -1\n"),
        "spec.securityContext.runAsUser",
        "between 0 and 2147483647",
    );
    one_problem(
        &c("  securityContext:\n    runAsNonRoot: true\n    runAsUser: 0\n"),
        "spec.containers[0].securityContext",
        "runAsUser 0 breaks the runAsNonRoot policy",
    );
    let pod = parse_pod(&c("  securityContext:\n    runAsNonRoot: true\n")).unwrap();
    let container = &pod.containers[0];
    assert!(container.run_as_non_root);
    // kubelet's check against the image's user.
    assert_eq!(container.verify_run_as_non_root("1000"), Ok(()));
    assert_eq!(container.verify_run_as_non_root("1000:1000"), Ok(()));
    assert!(container.verify_run_as_non_root("0").unwrap_err().contains("will run as root"));
    assert!(container.verify_run_as_non_root("").unwrap_err().contains("will run as root"));
    assert!(container.verify_run_as_non_root("nobody").unwrap_err().contains("non-numeric user (nobody)"));
    let mut with_uid = container.clone();
    with_uid.run_as_user = Some(10);
    assert_eq!(with_uid.verify_run_as_non_root("0"), Ok(()), "runAsUser wins over the image");
    with_uid.run_as_non_root = false;
    assert_eq!(with_uid.verify_run_as_non_root("root"), Ok(()));
}

#[test]
fn commands_follow_kubernetes() {
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (ep, cmd) = (s(&["/entry"]), s(&["default", "args"]));
    let resolve = |command: Option<&[&str]>, args: Option<&[&str]>| {
        resolve_command(&ep, &cmd, command.map(s).as_deref(), args.map(s).as_deref())
    };
    assert_eq!(resolve(None, None), s(&["/entry", "default", "args"]));
    assert_eq!(resolve(None, Some(&["mine"])), s(&["/entry", "mine"]));
    assert_eq!(resolve(Some(&["/bin/sh"]), None), s(&["/bin/sh"]), "command drops the image's cmd");
    assert_eq!(resolve(Some(&["/bin/sh"]), Some(&["-c", "x"])), s(&["/bin/sh", "-c", "x"]));
    assert_eq!(resolve(Some(&[]), Some(&[])), s(&["/entry", "default", "args"]), "empty means unset");
    assert_eq!(resolve_command(&s(&[""]), &cmd, None, None), s(&["default", "args"]), "entrypoint [\"\"] is none");
    assert!(resolve_command(&[], &[], None, None).is_empty(), "nothing to run");

    assert_eq!(
        merge_env(
            &s(&["PATH=/bin", "HOME=/root", "ODD"]),
            &[("HOME".into(), "/home".into()), ("NEW".into(), "1".into()), ("NEW".into(), "2".into())]
        ),
        s(&["PATH=/bin", "HOME=/home", "ODD", "NEW=2"])
    );
}

#[test]
fn expansion_follows_kubernetes() {
    let context: HashMap<String, String> =
        [("A", "a"), ("B", "$(A)"), ("EMPTY", "")].iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    for (input, expected) in [
        ("$(A)", "a"),
        ("x$(A)y$(A)", "xaya"),
        ("$(B)", "$(A)"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$$$(A)", "$a"),
        ("$", "$"),
        ("a$", "a$"),
        ("$x", "$x"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("$(EMPTY)|", "|"),
        ("é$(A)é", "éaé"),
        ("$é", "$é"),
    ] {
        assert_eq!(expand(input, &context), expected, "{input}");
    }

    let pod = parse_pod(FULL).unwrap();
    let app = &pod.containers[0];
    assert_eq!(app.runtime_env(), [("PORT".into(), "8080".into()), ("URL".into(), "http://localhost:8080/".into())]);
    assert_eq!(app.argv(&[], &[]), ["/bin/server", "--port", "8080"]);
    // Only earlier variables expand in values.
    let mut c = app.clone();
    c.env = vec![("A".into(), "$(B)".into()), ("B".into(), "b".into()), ("C".into(), "$(A)$(B)".into())];
    assert_eq!(c.runtime_env(), [("A".into(), "$(B)".into()), ("B".into(), "b".into()), ("C".into(), "$(B)b".into())]);
    c.command = None;
    c.args = Some(vec!["$(C)".into()]);
    assert_eq!(c.argv(&["/e".into()], &["ignored".into()]), ["/e", "$(B)b"]);
}

/// YAML values built from the Pod schema's own keys, so the generator
/// reaches deep into validation rather than stopping at the first type error.
fn pod_like() -> impl Strategy<Value = serde_yaml::Value> {
    const KEYS: &[&str] = &[
        "name",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "containers",
        "image",
        "command",
        "args",
        "env",
        "value",
        "valueFrom",
        "ports",
        "containerPort",
        "protocol",
        "resources",
        "limits",
        "requests",
        "cpu",
        "memory",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "httpGet",
        "tcpSocket",
        "exec",
        "grpc",
        "port",
        "path",
        "scheme",
        "httpHeaders",
        "periodSeconds",
        "successThreshold",
        "restartPolicy",
        "securityContext",
        "runAsUser",
        "workingDir",
        "berth.dev/weight",
        "berth.dev/pids-limit",
        "terminationGracePeriodSeconds",
        "hostname",
    ];
    let leaf = prop_oneof![
        Just(serde_yaml::Value::Null),
        any::<bool>().prop_map(serde_yaml::Value::Bool),
        any::<i64>().prop_map(|n| serde_yaml::Value::Number(n.into())),
        "[a-zA-Z0-9./:$()-]{0,12}".prop_map(serde_yaml::Value::String),
        prop::sample::select(vec!["500m", "64Mi", "http", "Always", "TCP", "HTTPS", "1e3", "-1"])
            .prop_map(|s| serde_yaml::Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_yaml::Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                serde_yaml::Value::Mapping(
                    entries.into_iter().map(|(k, v)| (serde_yaml::Value::String(k.to_owned()), v)).collect(),
                )
            }),
        ]
    })
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = parse_pod(&text);
    }

    #[test]
    fn never_panics_on_pod_like_yaml(metadata in pod_like(), spec in pod_like()) {
        let mut doc = serde_yaml::Mapping::new();
        doc.insert("apiVersion".into(), "v1".into());
        doc.insert("kind".into(), "Pod".into());
        doc.insert("metadata".into(), metadata);
        doc.insert("spec".into(), spec);
        let text = serde_yaml::to_string(&doc).unwrap();
        let _ = parse_pod(&text);
    }

    #[test]
    fn valid_names_pass_and_invalid_fail(name in "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", bad in "[A-Z_ ]") {
        let yaml = |n: &str| minimal("  containers:\n  - name: c\n    image: i\n").replace("name: p", &format!("name: '{n}'"));
        prop_assert!(parse_pod(&yaml(&name)).is_ok());
        let broken = format!("{name}{bad}");
        prop_assert!(parse_pod(&yaml(&broken)).is_err());
    }
}
