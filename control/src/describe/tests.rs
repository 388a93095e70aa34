//! Golden renderings of `berth describe` for realistic objects.
#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use serde_json::json;

use super::*;

const WEB_UID: &str = "6f1c2a3b-0000-4000-8000-000000000001";
/// 2026-01-10T12:05:00Z.
const NOW_MS: u64 = 1_768_046_700_000;

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
}

fn web_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": WEB_UID,
            "generation": 2,
            "creationTimestamp": "2026-01-10T12:00:00Z",
            "labels": {"app": "web"},
            "annotations": {"deployment.kubernetes.io/revision": "2"}
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "frontend"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "128Mi"},
                            "requests": {"cpu": "250m", "memory": "64Mi"}
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
                        },
                        "env": [{"name": "MODE", "value": "prod"}]
                    }]
                }
            }
        },
        "status": {
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2,
            "availableReplicas": 2, "unavailableReplicas": 1
        }
    })
}

/// A pod of `web` as the Deployment controller creates it and an agent
/// reports it.
fn web_pod(name: &str, node: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-01-10T12:00:05Z",
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": WEB_UID, "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m", "memory": "64Mi"}
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                    "initialDelaySeconds": 5, "timeoutSeconds": 1, "periodSeconds": 10,
                    "successThreshold": 1, "failureThreshold": 3
                },
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}
                ]
            }]
        },
        "status": {
            "phase": "Running",
            "hostIP": "192.168.1.10",
            "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}],
            "startTime": "2026-01-10T12:00:06Z",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-10T12:00:05Z"},
                {"type": "Ready", "status": if ready { "True" } else { "False" },
                 "lastTransitionTime": "2026-01-10T12:00:09Z"}
            ],
            "containerStatuses": [{
                "name": "web",
                "ready": ready,
                "restartCount": 1,
                "image": "nginx:1.27",
                "imageID": "sha256:abc123",
                "containerID": "berth://0f3e",
                "state": {"running": {"startedAt": "2026-01-10T12:00:08Z"}},
                "lastState": {"terminated": {
                    "exitCode": 137, "reason": "OOMKilled",
                    "startedAt": "2026-01-10T12:00:06Z", "finishedAt": "2026-01-10T12:00:07Z"
                }}
            }]
        }
    })
}

#[test]
fn deployment_reads_like_kubectl() {
    let mut foreign = web_pod("api-7c4d9-x2x2x", "node-a", true);
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("another-deployment");
    let mut orphan = web_pod("web-debug", "node-a", true);
    orphan["metadata"]["ownerReferences"] = json!([]);
    let mut waiting = web_pod("web-5d8f7c9b-c3p0p", "", false);
    waiting["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
    let pods = [
        web_pod("web-5d8f7c9b-b2x7q", "node-b", false),
        foreign,
        web_pod("web-5d8f7c9b-a1k9z", "node-a", true),
        orphan,
        waiting,
    ];
    let out = deployment(&web_deployment(), &pods);
    let expected = "\
Name:                   web
Namespace:              default
CreationTimestamp:      2026-01-10T12:00:00Z
Labels:                 app=web
Annotations:            deployment.kubernetes.io/revision: 2
Selector:               app=web
Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Pod Template:
  Labels:  app=web
           tier=frontend
  Containers:
   web:
    Image:  nginx:1.27
    Port:   8080/TCP
    Limits:
      cpu:     500m
      memory:  128Mi
    Requests:
      cpu:      250m
      memory:   64Mi
    Readiness:  http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3
    Environment:
      MODE:        prod
  Node-Selectors:  <none>
  Tolerations:     <none>
Revision:          2
Pods:
  Name                Ready  Status             Restarts  Node
  ----                -----  ------             --------  ----
  web-5d8f7c9b-a1k9z  1/1    Running            1         node-a
  web-5d8f7c9b-b2x7q  0/1    Running            1         node-b
  web-5d8f7c9b-c3p0p  0/1    ContainerCreating  1         <none>
Events:  <none>
";
    assert_eq!(out, expected, "got:\n{out}");
}

#[test]
fn deployment_without_pods_or_defaults() {
    let mut d = web_deployment();
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    d["spec"]["selector"] = json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "track", "operator": "NotIn", "values": ["canary", "beta"]},
            {"key": "env", "operator": "Exists"}
        ]
    });
    d["status"] = json!({"conditions": [
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
    ]});
    d["metadata"]["annotations"] = json!({});
    let out = deployment(&d, &[]);
    assert_eq!(line(&out, "Selector:"), "Selector:           app=web,env,track notin (beta,canary)");
    assert_eq!(
        line(&out, "Replicas:"),
        "Replicas:           3 desired | 0 updated | 0 total | 0 available | 0 unavailable"
    );
    assert_eq!(line(&out, "StrategyType:"), "StrategyType:       Recreate");
    assert!(!out.contains("RollingUpdateStrategy"), "{out}");
    assert!(!out.contains("Revision:"), "{out}");
    assert!(
            out.contains(
                "Conditions:\n  Type        Status  Reason\n  ----        ------  ------\n  Available   True    MinimumReplicasAvailable\nPods:         <none>\n"
            ),
            "{out}"
        );
}

#[test]
fn pod_reads_like_kubectl() {
    let out = pod(&web_pod("web-5d8f7c9b-b2x7q", "node-b", false), NOW_MS);
    let expected = "\
Name:         web-5d8f7c9b-b2x7q
Namespace:    default
Node:         node-b/192.168.1.10
Start Time:   2026-01-10T12:00:06Z
Labels:       app=web
              pod-template-hash=5d8f7c9b
Annotations:  <none>
Status:       Running
IP:           10.244.1.5
IPs:
  IP:           10.244.1.5
Controlled By:  Deployment/web
Containers:
  web:
    Container ID:   berth://0f3e
    Image:          nginx:1.27
    Image ID:       sha256:abc123
    Port:           8080/TCP
    State:          Running
      Started:      2026-01-10T12:00:08Z
    Last State:     Terminated
      Reason:       OOMKilled
      Exit Code:    137
      Started:      2026-01-10T12:00:06Z
      Finished:     2026-01-10T12:00:07Z
    Ready:          False
    Restart Count:  1
    Limits:
      cpu:     500m
      memory:  128Mi
    Requests:
      cpu:     250m
      memory:  64Mi
    Liveness:  http-get http://:8080/healthz delay=5s timeout=1s period=10s #success=1 #failure=3
    Environment:
      MODE:      prod
      POD_NAME:  web-5d8f7c9b-b2x7q (v1:metadata.name)
Conditions:
  Type           Status
  PodScheduled   True
  Ready          False
QoS Class:       Burstable
Node-Selectors:  <none>
Tolerations:     <none>
Events:          <none>
";
    assert_eq!(out, expected, "got:\n{out}");
}

#[test]
fn terminating_and_unscheduled_pods() {
    let mut p = web_pod("web-5d8f7c9b-b2x7q", "node-b", true);
    p["metadata"]["deletionTimestamp"] = json!("2026-01-10T12:02:30Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(20);
    let out = pod(&p, NOW_MS);
    assert_eq!(line(&out, "Status:"), "Status:                    Terminating (lasts 2m30s)");
    assert_eq!(line(&out, "Termination Grace Period:"), "Termination Grace Period:  20s");

    // A pod the scheduler has not placed yet: no node, no IP, no
    // container statuses, a tcp probe and an exec probe.
    let p = json!({
        "metadata": {"name": "lone", "namespace": "dev", "creationTimestamp": "2026-01-10T12:00:00Z"},
        "spec": {"containers": [{
            "name": "app", "image": "busybox:1.36", "command": ["sh", "-c"], "args": ["sleep 3600"],
            "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
            "readinessProbe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 1, "periodSeconds": 5,
                               "successThreshold": 1, "failureThreshold": 3},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "timeoutSeconds": 2,
                             "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 30}
        }]},
        "status": {"phase": "Pending"}
    });
    let out = pod(&p, NOW_MS);
    assert_eq!(line(&out, "Node:"), "Node:         <none>");
    assert_eq!(line(&out, "Status:"), "Status:       Pending");
    assert_eq!(line(&out, "IPs:"), "IPs:          <none>");
    assert!(!out.contains("Controlled By"), "{out}");
    assert!(out.contains("\n    Image:  busybox:1.36\n    Ports:  80/TCP, 53/UDP\n"), "{out}");
    assert!(out.contains("\n    Command:\n      sh\n      -c\n    Args:\n      sleep 3600\n"), "{out}");
    assert!(out.contains("Readiness:    tcp-socket :80 delay=0s timeout=1s period=5s #success=1 #failure=3"), "{out}");
    assert!(
        out.contains("Startup:      exec [cat /tmp/ready] delay=0s timeout=2s period=10s #success=1 #failure=30"),
        "{out}"
    );
    assert!(!out.contains("Restart Count"), "no statuses, no state: {out}");
    assert_eq!(line(&out, "QoS Class:"), "QoS Class:        BestEffort");
}

#[test]
fn qos_classes_follow_kube() {
    let spec = |containers: Value| json!({"containers": containers});
    let both = json!({"cpu": "500m", "memory": "128Mi"});
    // Limits only: requests default to them, as the API server does.
    assert_eq!(qos_class(&spec(json!([{"name": "a", "resources": {"limits": both}}]))), "Guaranteed");
    assert_eq!(
        qos_class(&spec(json!([{"name": "a", "resources": {"limits": both, "requests": {"cpu": "0.5"}}}]))),
        "Guaranteed",
        "0.5 and 500m are the same quantity"
    );
    assert_eq!(
        qos_class(&spec(json!([{"name": "a", "resources": {"limits": both, "requests": {"cpu": "250m"}}}]))),
        "Burstable"
    );
    assert_eq!(qos_class(&spec(json!([{"name": "a", "resources": {"limits": {"cpu": "1"}}}]))), "Burstable");
    // One container without limits spoils the pod.
    assert_eq!(qos_class(&spec(json!([{"name": "a", "resources": {"limits": both}}, {"name": "b"}]))), "Burstable");
    assert_eq!(
        qos_class(&spec(json!([{"name": "a", "resources": {"requests": {"cpu": "0", "memory": "0"}}}]))),
        "BestEffort",
        "zero quantities do not count"
    );
    assert_eq!(qos_class(&spec(json!([{"name": "a"}]))), "BestEffort");
}

fn web_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web", "namespace": "default", "creationTimestamp": "2026-01-10T12:00:00Z",
            "labels": {"app": "web"},
            "annotations": {"berth.dev/lb-algorithm": "maglev"}
        },
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web", "tier": "frontend"},
            "clusterIP": "10.96.0.20",
            "clusterIPs": ["10.96.0.20"],
            "ipFamilies": ["IPv4"],
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080},
                {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP", "nodePort": 30090}
            ],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "externalTrafficPolicy": "Cluster"
        }
    })
}

fn slice(name: &str, service: &str, ports: Value, endpoints: &[(&str, bool, &str)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, pod)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": "default", "name": pod},
                "nodeName": "node-a"
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": "default",
            "labels": {"kubernetes.io/service-name": service,
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.berth.dev"}
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports
    })
}

#[test]
fn service_endpoints_come_from_its_slices() {
    let ports = json!([
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9100, "protocol": "TCP"}
    ]);
    let slices = [
        slice(
            "web",
            "web",
            ports.clone(),
            &[("10.0.0.1", true, "web-a"), ("10.0.0.2", true, "web-b"), ("10.0.0.3", false, "web-c")],
        ),
        slice("webapp", "webapp", ports, &[("10.0.9.9", true, "webapp-a")]),
    ];
    let out = service(&web_service(), &slices);
    let expected = "\
Name:                     web
Namespace:                default
Labels:                   app=web
Annotations:              berth.dev/lb-algorithm: maglev
Selector:                 app=web,tier=frontend
Type:                     NodePort
IP Families:              IPv4
IP:                       10.96.0.20
IPs:                      10.96.0.20
Port:                     http  80/TCP
TargetPort:               8080/TCP
NodePort:                 http  30080/TCP
Endpoints:                10.0.0.1:8080,10.0.0.2:8080
Port:                     metrics  9090/TCP
TargetPort:               metrics/TCP
NodePort:                 metrics  30090/TCP
Endpoints:                10.0.0.1:9100,10.0.0.2:9100
Session Affinity:         ClientIP (timeout 600s)
External Traffic Policy:  Cluster
Load Balancing:           maglev
Events:                   <none>
";
    assert_eq!(out, expected, "got:\n{out}");

    // No slices yet, no annotation, a ClusterIP Service with one
    // unnamed port.
    let svc = json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"selector": {"app": "db"}, "clusterIP": "10.96.0.30", "ports": [{"port": 5432}]}
    });
    let out = service(&svc, &[]);
    assert_eq!(line(&out, "Type:"), "Type:              ClusterIP");
    assert_eq!(line(&out, "Port:"), "Port:              <unset>  5432/TCP");
    assert_eq!(line(&out, "TargetPort:"), "TargetPort:        5432/TCP");
    assert_eq!(line(&out, "Endpoints:"), "Endpoints:         <none>");
    assert!(!out.contains("NodePort:"), "{out}");
    assert_eq!(line(&out, "Session Affinity:"), "Session Affinity:  None");
    assert_eq!(line(&out, "Load Balancing:"), "Load Balancing:    wrr");
}

#[test]
fn many_endpoints_are_cut_at_three() {
    let ports = json!([{"name": "", "port": 5432, "protocol": "TCP"}]);
    let ready: Vec<(String, bool, String)> =
        (1..=5).map(|i| (format!("10.0.1.{i}"), true, format!("db-{i}"))).collect();
    let ready: Vec<(&str, bool, &str)> = ready.iter().map(|(a, r, p)| (a.as_str(), *r, p.as_str())).collect();
    let slices = [slice("db", "db", ports, &ready)];
    let own: Vec<&Value> = slices.iter().collect();
    assert_eq!(endpoints_text(&own, ""), "10.0.1.1:5432,10.0.1.2:5432,10.0.1.3:5432 + 2 more...");
    assert_eq!(endpoints_text(&own, "http"), "<none>", "no slice port of that name");
}

#[test]
fn endpoint_slice_lists_conditions_and_targets() {
    let mut s = slice(
        "web",
        "web",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        &[("10.0.0.1", true, "web-abc"), ("10.0.0.3", false, "web-def")],
    );
    s["endpoints"][1]["conditions"]["terminating"] = json!(true);
    let out = endpoint_slice(&s);
    let expected = "\
Name:         web
Namespace:    default
Labels:       endpointslice.kubernetes.io/managed-by=endpointslice-controller.berth.dev
              kubernetes.io/service-name=web
Annotations:  <none>
AddressType:  IPv4
Ports:
  Name  Port  Protocol
  ----  ----  --------
  http  8080  TCP
Endpoints:
  - Addresses:  10.0.0.1
    Conditions:
      Ready:        true
      Serving:      true
      Terminating:  false
    Hostname:       <unset>
    TargetRef:      Pod/web-abc
    NodeName:       node-a
    Zone:           <unset>
  - Addresses:      10.0.0.3
    Conditions:
      Ready:        false
      Serving:      false
      Terminating:  true
    Hostname:       <unset>
    TargetRef:      Pod/web-def
    NodeName:       node-a
    Zone:           <unset>
Events:             <none>
";
    assert_eq!(out, expected, "got:\n{out}");
    let empty = slice("idle", "idle", json!([]), &[]);
    let out = endpoint_slice(&empty);
    assert!(out.contains("\nPorts: <unset>\nEndpoints: <none>\n"), "{out}");
}

fn node_a() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "node-a",
            "creationTimestamp": "2026-01-09T08:00:00Z",
            "labels": {"kubernetes.io/hostname": "node-a", "node-role.kubernetes.io/worker": ""}
        },
        "spec": {"taints": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "addresses": [
                {"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "Hostname", "address": "node-a"}
            ],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "berth agent is posting ready status",
                "lastHeartbeatTime": "2026-01-10T12:04:50Z", "lastTransitionTime": "2026-01-09T08:00:10Z"
            }]
        }
    })
}

fn bound_pod(ns: &str, name: &str, node: &str, phase: &str, resources: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-10T11:00:00Z"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "img:1", "resources": resources}]},
        "status": {"phase": phase}
    })
}

#[test]
fn node_sums_the_requests_of_its_pods() {
    let pods = [
        bound_pod(
            "default",
            "web-a",
            "node-a",
            "Running",
            json!({
                "requests": {"cpu": "250m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "128Mi"}
            }),
        ),
        // Limits only: the requests are the limits.
        bound_pod("batch", "job-b", "node-a", "Running", json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
        bound_pod("batch", "done-c", "node-a", "Succeeded", json!({"requests": {"cpu": "1"}})),
        bound_pod("default", "web-d", "node-b", "Running", json!({"requests": {"cpu": "1"}})),
    ];
    let out = node(&node_a(), &pods, NOW_MS);
    let expected = "\
Name:               node-a
Roles:              worker
Labels:             kubernetes.io/hostname=node-a
                    node-role.kubernetes.io/worker=
Annotations:        <none>
CreationTimestamp:  2026-01-09T08:00:00Z
Taints:             dedicated=web:NoSchedule
Unschedulable:      false
Conditions:
  Type    Status  LastHeartbeatTime      LastTransitionTime     Reason         Message
  ----    ------  -----------------      ------------------     ------         -------
  Ready   True    2026-01-10T12:04:50Z   2026-01-09T08:00:10Z   KubeletReady   berth agent is posting ready status
Addresses:
  InternalIP:  192.168.1.10
  Hostname:    node-a
Capacity:
  cpu:     2
  memory:  4Gi
  pods:    110
Allocatable:
  cpu:                2
  memory:             4Gi
  pods:               110
Non-terminated Pods:  (2 in total)
  Namespace           Name     CPU Requests  CPU Limits  Memory Requests  Memory Limits  Age
  ---------           ----     ------------  ----------  ---------------  -------------  ---
  batch               job-b    1 (50%)       1 (50%)     1Gi (25%)        1Gi (25%)      65m
  default             web-a    250m (12%)    500m (25%)  64Mi (1%)        128Mi (3%)     65m
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource           Requests      Limits
  --------           --------      ------
  cpu                1250m (62%)   1500m (75%)
  memory             1088Mi (26%)  1152Mi (28%)
  ephemeral-storage  0 (0%)        0 (0%)
Events:              <none>
";
    assert_eq!(out, expected, "got:\n{out}");
}

#[test]
fn namespace_shows_its_phase() {
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"kubernetes.io/metadata.name": "prod", "team": "web"}},
        "status": {"phase": "Terminating"}
    });
    let expected = "\
Name:         prod
Labels:       kubernetes.io/metadata.name=prod
              team=web
Annotations:  <none>
Status:       Terminating
";
    assert_eq!(namespace(&ns), expected);
}

#[test]
fn annotations_long_and_multiline_values() {
    let mut w = Out::default();
    let long = "x".repeat(150);
    annotations(
        &mut w,
        "Annotations",
        &json!({
            "a": "short",
            "b": long,
            "c": "line one\nline two\n",
            "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Pod\"}"
        }),
    );
    let out = w.finish();
    let cut = format!("{}...", "x".repeat(138));
    assert_eq!(
        out,
        format!(
            "Annotations:  a: short\n              b:\n                {cut}\n              c:\n                line one\n                line two\n"
        )
    );
}

#[test]
fn control_characters_are_escaped() {
    let mut w = Out::default();
    labels(&mut w, "Labels", &json!({"app": "web\tx\u{1b}[2J"}));
    assert_eq!(w.finish(), "Labels:  app=web\\tx\\u{1b}[2J\n");
}

#[test]
fn tabwriter_blocks_match_go() {
    // Consecutive lines with a cell in a column share its width; a line
    // without a tab ends every block; an empty column is two wide.
    let text = "a:\t1\nlonger:\t2\nbreak\nx:\t3\n  k\t\tv\n";
    assert_eq!(tabbed(text), "a:       1\nlonger:  2\nbreak\nx:   3\n  k    v\n");
    // Nested columns: the second column's block is narrower than the
    // first's.
    assert_eq!(tabbed("a\tbb\tc\nddd\te\n"), "a    bb  c\nddd  e\n");
    assert_eq!(tabbed("no newline\tx"), "no newline  x");
}

#[test]
fn quantities_and_durations_render_like_kube() {
    assert_eq!(cpu(1250), "1250m");
    assert_eq!(cpu(2000), "2");
    assert_eq!(cpu(0), "0");
    assert_eq!(bytes(192 << 20), "192Mi");
    assert_eq!(bytes(1_000_000_000), "1G");
    assert_eq!(bytes(1500), "1500");
    assert_eq!(bytes(0), "0");
    assert_eq!(percent(1, 3), 33);
    assert_eq!(percent(5, 0), 0);
    let at = |s: i64| human_duration(1_000_000_000, 1_000_000_000 - s * 1000);
    assert_eq!(at(59), "59s");
    assert_eq!(at(150), "2m30s");
    assert_eq!(at(600), "10m");
    assert_eq!(at(3 * 3600 + 60), "3h1m");
    assert_eq!(at(30 * 3600), "30h");
    assert_eq!(at(3 * 86_400 + 7200), "3d2h");
    assert_eq!(at(20 * 86_400), "20d");
    assert_eq!(at(-5), "<invalid>");
    assert_eq!(query_escape("kubernetes.io/service-name=web"), "kubernetes.io%2Fservice-name%3Dweb");
}

#[tokio::test]
async fn unknown_kinds_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let client = ApiClient::new(crate::client::Config {
        // Nothing listens there: a request would fail with Connect.
        server: "https://127.0.0.1:9".to_owned(),
        ca_file: ca.display().to_string(),
        namespace: "default".to_owned(),
        ..Default::default()
    })
    .unwrap();
    let err = describe(&client, "widgets", "w", None).await.unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    let known: Vec<&str> = KINDS.iter().map(|k| k.resource).collect();
    assert_eq!(
        err.to_string(),
        format!("configuration: unknown resource type \"widgets\"; one of {}", known.join(", "))
    );
    assert!(err.to_string().contains("pods, deployments, services, endpointslices"), "{err}");
    assert_eq!(err.exit_code(), 64);
    // Kinds `berth get` knows but describe has no renderer for.
    for kind in KINDS.iter().filter(|k| !DESCRIBED.contains(&k.kind)) {
        let err = describe(&client, kind.resource, "x", None).await.unwrap_err();
        assert!(err.to_string().contains("describe does not support"), "{err}");
    }
    for kind in DESCRIBED {
        assert!(KindRef::find(kind).is_some(), "{kind} is a CLI kind");
    }
}
