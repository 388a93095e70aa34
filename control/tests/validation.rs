//! Every validation rule of the issue through a real `berth serve` (TLS,
//! the generated admin token, the redb store): each bad object gets 422
//! (or 404, 413) with its field path and Kubernetes' wording, and nothing
//! is stored — the store's revision does not move.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic so failures carry a backtrace")]

mod common;

use berth_control::client::{ApiClient, ClientError};
use common::serve::{Serve, free_port};
use hyper::Method;
use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "berth-test:latest", "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    let target = object.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    match (target, field.parse::<usize>()) {
        (Value::Array(a), Ok(i)) => a[i] = value,
        (t, _) => {
            t[field] = value;
        }
    }
    object
}

/// The store's current revision, as a list answers it.
async fn revision(client: &ApiClient) -> u64 {
    let list = client.json(Method::GET, "/api/v1/namespaces", None).await.unwrap();
    list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

#[test]
fn every_validation_rule_is_refused_with_its_field_and_nothing_is_stored() {
    common::run(async {
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(&dir.path().join("data"), free_port());
        let client = ApiClient::new(serve.admin_config()).unwrap();
        // Something stored first, so "nothing stored" is checked against a
        // live revision.
        // No selector: the endpoints controller leaves it alone, so only a
        // refused write could move the revision.
        let seed = with(with(service(), "/metadata/name", json!("seed")), "/spec/selector", Value::Null);
        let first = client.json(Method::POST, SERVICES, Some(&seed)).await.unwrap();
        let mut second = first.clone();
        second["metadata"]["labels"] = json!({"version": "2"});
        client.json(Method::PUT, &format!("{SERVICES}/seed"), Some(&second)).await.unwrap();
        let before = revision(&client).await;

        // (what, path, object, field, reason in the message)
        let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
            (
                "replicas < 0",
                DEPLOYMENTS,
                with(deployment(), "/spec/replicas", json!(-1)),
                "spec.replicas",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                "selector not matching the template",
                DEPLOYMENTS,
                with(deployment(), "/spec/selector/matchLabels", json!({"app": "other"})),
                "spec.template.metadata.labels",
                "`selector` does not match template `labels`",
            ),
            (
                "missing selector",
                DEPLOYMENTS,
                with(deployment(), "/spec/selector", Value::Null),
                "spec.selector",
                "Required value",
            ),
            (
                "unknown field",
                DEPLOYMENTS,
                with(deployment(), "/spec/replica", json!(3)),
                "spec.replica",
                "unknown field \"spec.replica\"",
            ),
            ("malformed field", DEPLOYMENTS, with(deployment(), "/spec/replicas", json!("three")), "spec.replicas", ""),
            (
                "port 0",
                SERVICES,
                with(service(), "/spec/ports/0/port", json!(0)),
                "spec.ports[0].port",
                "Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            (
                "port 65536",
                SERVICES,
                with(service(), "/spec/ports/0/port", json!(65536)),
                "spec.ports[0].port",
                "must be between 1 and 65535, inclusive",
            ),
            (
                "duplicate port names",
                SERVICES,
                with(service(), "/spec/ports", json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}])),
                "spec.ports[1].name",
                "Duplicate value: \"http\"",
            ),
            (
                "ClusterIP outside the range",
                SERVICES,
                with(service(), "/spec/clusterIP", json!("10.0.0.1")),
                "spec.clusterIPs",
                "provided IP is not in the valid range. The range of valid IPs is 198.19.0.0/16",
            ),
            (
                "bad lb algorithm",
                SERVICES,
                with(service(), "/metadata/annotations", json!({"berth.dev/lb-algorithm": "fastest"})),
                "metadata.annotations[berth.dev/lb-algorithm]",
                "Unsupported value: \"fastest\": supported values: \"maglev\", \"random\", \"wrr\"",
            ),
            (
                "name not a DNS label",
                SERVICES,
                with(service(), "/metadata/name", json!("Web_1")),
                "metadata.name",
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-'",
            ),
            (
                "container without image",
                PODS,
                json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
                "spec.containers[0].image",
                "Required value",
            ),
            (
                "targetPort out of range",
                SERVICES,
                with(service(), "/spec/ports/0/targetPort", json!(70000)),
                "spec.ports[0].targetPort",
                "must be between 1 and 65535, inclusive",
            ),
        ];
        let mut failures = Vec::new();
        for (what, path, object, field, reason) in &cases {
            match client.json(Method::POST, path, Some(object)).await {
                Err(ClientError::Status { code: 422, message, causes, .. }) => {
                    let named = causes.iter().any(|(f, m)| f == field && m.contains(reason));
                    if !named || !message.contains(field) {
                        failures.push(format!("{what}: wanted {field}: {reason}; got {message} {causes:?}"));
                    }
                }
                other => failures.push(format!("{what}: wanted 422, got {:?}", other.map(|v| v.to_string()))),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // An unknown kind: 404, as kube-apiserver answers it.
        let replicasets = "/apis/apps/v1/namespaces/default/replicasets";
        match client.json(Method::POST, replicasets, Some(&json!({"metadata": {"name": "x"}}))).await {
            Err(ClientError::Status { code: 404, .. }) => {}
            other => panic!("unknown kind: wanted 404, got {other:?}"),
        }
        // A body over the limit: 413.
        let huge = with(service(), "/metadata/annotations", json!({"big": "x".repeat(4 << 20)}));
        match client.json(Method::POST, SERVICES, Some(&huge)).await {
            Err(ClientError::Status { code: 413, .. }) => {}
            other => panic!("oversized body: wanted 413, got {:?}", other.map(|_| ())),
        }
        // A stale update: 409, nothing changed.
        let mut stale = first.clone();
        stale["metadata"]["labels"] = json!({"changed": "yes"});
        match client.json(Method::PUT, &format!("{SERVICES}/seed"), Some(&stale)).await {
            Err(ClientError::Status { code: 409, .. }) => {}
            other => panic!("stale update: wanted 409, got {other:?}"),
        }

        assert_eq!(revision(&client).await, before, "a refused write stored something");
        for (path, name) in [(DEPLOYMENTS, "web"), (SERVICES, "web"), (PODS, "p")] {
            match client.json(Method::GET, &format!("{path}/{name}"), None).await {
                Err(ClientError::Status { code: 404, .. }) => {}
                other => panic!("{path}/{name} should not exist: {other:?}"),
            }
        }
        // And the valid objects are accepted, so the cases above were refused
        // for their one fault.
        client.json(Method::POST, DEPLOYMENTS, Some(&deployment())).await.unwrap();
        client.json(Method::POST, SERVICES, Some(&service())).await.unwrap();
    });
}

async fn wait_gone(client: &ApiClient, path: &str) {
    for _ in 0..100 {
        if let Err(ClientError::Status { code: 404, .. }) = client.json(Method::GET, path, None).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} still there after 5 s");
}

fn node_port_service(name: &str, cluster_ip: Option<&str>, node_port: u16) -> Value {
    let mut svc = json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80, "nodePort": node_port}]}
    });
    if let Some(ip) = cluster_ip {
        svc["spec"]["clusterIP"] = json!(ip);
    }
    svc
}

#[test]
fn deleted_services_free_their_addresses_and_namespaces_empty_before_they_go() {
    common::run(async {
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(&dir.path().join("data"), free_port());
        let client = ApiClient::new(serve.admin_config()).unwrap();

        // The default namespace exists as an object, and may not be deleted.
        let default = client.json(Method::GET, "/api/v1/namespaces/default", None).await.unwrap();
        assert_eq!(default["status"]["phase"], "Active");
        match client.json(Method::DELETE, "/api/v1/namespaces/default", None).await {
            Err(ClientError::Status { code: 403, message, .. }) => assert!(message.contains("may not be deleted")),
            other => panic!("deleting default: wanted 403, got {other:?}"),
        }

        // A deleted Service's ClusterIP and NodePort can be asked for again.
        let svc = node_port_service("a", Some("198.19.5.5"), 30080);
        client.json(Method::POST, SERVICES, Some(&svc)).await.unwrap();
        client.json(Method::DELETE, &format!("{SERVICES}/a"), None).await.unwrap();
        let again = node_port_service("b", Some("198.19.5.5"), 30080);
        client.json(Method::POST, SERVICES, Some(&again)).await.unwrap();
        // A Service that stops being a NodePort gives its port back.
        let mut b = client.json(Method::GET, &format!("{SERVICES}/b"), None).await.unwrap();
        b["spec"]["type"] = json!("ClusterIP");
        b["spec"]["ports"] = json!([{"port": 80}]);
        client.json(Method::PUT, &format!("{SERVICES}/b"), Some(&b)).await.unwrap();
        client.json(Method::POST, SERVICES, Some(&node_port_service("c", None, 30080))).await.unwrap();

        // A namespace with objects: terminating, closed to new objects,
        // emptied by the controller, then gone; its NodePort is free again.
        client.json(Method::POST, "/api/v1/namespaces", Some(&json!({"metadata": {"name": "ns1"}}))).await.unwrap();
        let ns1 = |kind: &str| format!("/api/v1/namespaces/ns1/{kind}");
        let deployments = "/apis/apps/v1/namespaces/ns1/deployments";
        client.json(Method::POST, &ns1("services"), Some(&node_port_service("s", None, 30500))).await.unwrap();
        client.json(Method::POST, deployments, Some(&deployment())).await.unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        client.json(Method::POST, &ns1("pods"), Some(&pod)).await.unwrap();
        let deleted = client.json(Method::DELETE, "/api/v1/namespaces/ns1", None).await.unwrap();
        assert_eq!(deleted["status"]["phase"], "Terminating", "{deleted}");
        let other = json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        match client.json(Method::POST, &ns1("pods"), Some(&other)).await {
            Err(ClientError::Status { code: 403, message, .. }) => assert!(message.contains("being terminated")),
            Ok(_) => {} // The controller may already have removed it: then 404 below covers it.
            Err(e) => assert!(matches!(e, ClientError::Status { code: 404, .. }), "{e:?}"),
        }
        wait_gone(&client, "/api/v1/namespaces/ns1").await;
        for path in [ns1("pods"), ns1("services"), deployments.to_owned()] {
            let list = client.json(Method::GET, &path, None).await.unwrap();
            assert_eq!(list["items"], json!([]), "{path}");
        }
        client.json(Method::POST, SERVICES, Some(&node_port_service("d", None, 30500))).await.unwrap();
    });
}

/// The refusal of a write, as (code, message).
fn refused(result: Result<Value, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Status { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Kubernetes' NodeRestriction through the real server: a node that joined
/// with the bootstrap token may not label itself into a role, drop the
/// administrator's labels or taints, or change more than the status of its
/// pods; every refusal stores nothing.
#[test]
fn a_node_changes_only_what_node_restriction_allows() {
    common::run(async {
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(&dir.path().join("data"), free_port());
        let admin = ApiClient::new(serve.admin_config()).unwrap();
        let node = common::sim_agent::join(&serve.join_config(), "n1", dir.path()).await;
        const NODE: &str = "/api/v1/nodes/n1";

        let role = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}}});
        let before = revision(&admin).await;
        assert_eq!(
            refused(node.json(Method::POST, "/api/v1/nodes", Some(&role)).await),
            (
                403,
                "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: \
                 node-role.kubernetes.io/control-plane"
                    .to_owned()
            )
        );
        assert_eq!(revision(&admin).await, before);
        let kubelet = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux"}}});
        node.json(Method::POST, "/api/v1/nodes", Some(&kubelet)).await.unwrap();
        let other = json!({"metadata": {"name": "n2"}});
        assert_eq!(refused(node.json(Method::POST, "/api/v1/nodes", Some(&other)).await).0, 403);

        // The administrator gives it a role and a taint; the node renews its
        // status and keeps both.
        let patch = json!({
            "metadata": {"labels": {"node-role.kubernetes.io/worker": ""}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
        });
        admin.merge_patch(NODE, &patch).await.unwrap();
        let mut heartbeat = node.json(Method::GET, NODE, None).await.unwrap();
        heartbeat["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        node.json(Method::PUT, NODE, Some(&heartbeat)).await.unwrap();
        let before = revision(&admin).await;
        let unlabel = json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": null}}});
        assert_eq!(
            refused(node.merge_patch(NODE, &unlabel).await),
            (
                403,
                "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify labels: node-role.kubernetes.io/worker"
                    .to_owned()
            )
        );
        let (code, message) = refused(node.merge_patch(NODE, &json!({"spec": {"taints": null}})).await);
        assert_eq!(
            (code, message.as_str()),
            (403, "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints")
        );
        assert_eq!(revision(&admin).await, before, "refused node writes store nothing");

        // Its pods: the status only.
        let pod = json!({"metadata": {"name": "mine", "labels": {"app": "web"}},
                         "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
        admin.json(Method::POST, PODS, Some(&pod)).await.unwrap();
        let path = format!("{PODS}/mine");
        let running = node.merge_patch(&path, &json!({"status": {"phase": "Running"}})).await.unwrap();
        let before = revision(&admin).await;
        let mut relabelled = running.clone();
        relabelled["metadata"]["labels"] = json!({"app": "payments"});
        assert_eq!(
            refused(node.json(Method::PUT, &path, Some(&relabelled)).await),
            (
                403,
                "pods \"mine\" is forbidden: node \"n1\" can only update the status of a pod, not metadata.labels"
                    .to_owned()
            )
        );
        let weight = json!({"metadata": {"annotations": {"berth.dev/weight": "900"}}});
        assert_eq!(refused(node.merge_patch(&path, &weight).await).0, 403);
        assert_eq!(revision(&admin).await, before, "refused pod writes store nothing");
        let stored = admin.json(Method::GET, &path, None).await.unwrap();
        assert_eq!(
            (stored["metadata"]["labels"].clone(), stored["status"]["phase"].clone()),
            (json!({"app": "web"}), json!("Running"))
        );
        // And it finishes the pod's deletion, as an agent does.
        node.json(Method::DELETE, &path, Some(&json!({"gracePeriodSeconds": 0}))).await.unwrap();
        wait_gone(&admin, &path).await;
    });
}
