#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::thread;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::store::{MemStore, Revision, StoreOptions};

// ---- Helpers ----------------------------------------------------------------

fn rules() -> Resources {
    Resources::new(ResourcesConfig::default())
}

fn mem() -> MemStore {
    MemStore::new(StoreOptions::default())
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"name": "http", "containerPort": 80}]}]}
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

fn node() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "3500m", "memory": "7Gi", "pods": "110"}}
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Sets `value` at a JSON pointer, creating objects on the way.
fn set(mut object: Value, pointer: &str, value: Value) -> Value {
    let mut target = &mut object;
    for part in pointer.trim_start_matches('/').split('/') {
        target = match target {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            other => {
                if !other.is_object() {
                    *other = json!({});
                }
                other.as_object_mut().unwrap().entry(part.to_owned()).or_insert(Value::Null)
            }
        };
    }
    *target = value;
    object
}

/// Removes the value at a JSON pointer.
fn remove(mut object: Value, pointer: &str) -> Value {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() { &mut object } else { object.pointer_mut(parent).unwrap() };
    parent.as_object_mut().unwrap().remove(last);
    object
}

/// Admits a create against `store`.
fn create_in(
    r: &Resources,
    store: &dyn Store,
    kind: &KindInfo,
    mut object: Value,
) -> Result<(Value, Vec<Op>), Rejection> {
    let ops = r.admit(kind, &mut object, None, store)?;
    Ok((object, ops))
}

fn create(kind: &KindInfo, object: Value) -> Result<(Value, Vec<Op>), Rejection> {
    create_in(&rules(), &mem(), kind, object)
}

/// The object a successful create stores.
fn admitted(kind: &KindInfo, object: Value) -> Value {
    match create(kind, object) {
        Ok((object, _)) => object,
        Err(e) => panic!("expected {} to be admitted, got {e:?}", kind.kind),
    }
}

/// Every field error of a refused create.
fn invalid(kind: &KindInfo, object: Value) -> Vec<FieldError> {
    match create(kind, object) {
        Err(Rejection::Invalid(errors)) => errors,
        other => panic!("expected 422, got {other:?}"),
    }
}

/// Asserts that `errors` has one for `field` whose reason contains `reason`.
#[track_caller]
fn assert_error(errors: &[FieldError], field: &str, reason: &str) {
    assert!(
        errors.iter().any(|e| e.field == field && e.reason.contains(reason)),
        "no error {field}: …{reason}… in\n{}",
        errors.iter().map(|e| format!("  {}: {}", e.field, e.reason)).collect::<Vec<_>>().join("\n")
    );
}

#[track_caller]
fn assert_refused(kind: &KindInfo, object: Value, field: &str, reason: &str) {
    assert_error(&invalid(kind, object), field, reason);
}

/// Stores an admitted object with its operations, as the API server does.
fn commit(store: &dyn Store, kind: &KindInfo, object: &Value, mut ops: Vec<Op>) -> Result<Revision, StoreError> {
    let meta = &object["metadata"];
    let key = store_key(kind, meta["namespace"].as_str(), meta["name"].as_str().unwrap());
    ops.insert(0, Op::Create { key, value: serde_json::to_vec(object).unwrap() });
    store.txn(&ops)
}

/// Admits and stores a create; returns the stored object.
fn apply(r: &Resources, store: &dyn Store, kind: &KindInfo, object: Value) -> Value {
    let (object, ops) = create_in(r, store, kind, object).unwrap();
    commit(store, kind, &object, ops).unwrap();
    object
}

/// Admits an update of `old` to `new` against `store`.
fn update_in(
    r: &Resources,
    store: &dyn Store,
    kind: &KindInfo,
    old: &Value,
    mut new: Value,
) -> Result<(Value, Vec<Op>), Rejection> {
    let ops = r.admit(kind, &mut new, Some(old), store)?;
    Ok((new, ops))
}

fn update_invalid(kind: &KindInfo, old: &Value, new: Value) -> Vec<FieldError> {
    match update_in(&rules(), &mem(), kind, old, new) {
        Err(Rejection::Invalid(errors)) => errors,
        other => panic!("expected 422, got {other:?}"),
    }
}

fn records(store: &dyn Store, prefix: &str) -> Vec<String> {
    store.list(prefix).unwrap().0.into_iter().map(|(k, _)| k.strip_prefix(prefix).unwrap().to_owned()).collect()
}

// ---- Kinds, keys and the seam -----------------------------------------------

#[test]
fn kinds_and_store_keys() {
    let kinds = rules().kinds();
    let names: Vec<_> = kinds.iter().map(|k| (k.api_version, k.kind, k.resource, k.namespaced, k.read_only)).collect();
    assert_eq!(
        names,
        vec![
            ("v1", "Namespace", "namespaces", false, false),
            ("v1", "Node", "nodes", false, false),
            ("v1", "Pod", "pods", true, false),
            ("v1", "Service", "services", true, false),
            ("apps/v1", "Deployment", "deployments", true, false),
            ("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", true, true),
            ("apps/v1", "ControllerRevision", "controllerrevisions", true, true),
        ]
    );
    assert_eq!(store_key(&POD, Some("prod"), "web-1"), "/registry/pods/prod/web-1");
    assert_eq!(store_key(&POD, None, "web-1"), "/registry/pods/default/web-1");
    assert_eq!(store_key(&NODE, Some("ignored"), "node-1"), "/registry/nodes/node-1");
    assert_eq!(store_key(&NAMESPACE, None, "prod"), "/registry/namespaces/prod");
    assert_eq!(store_prefix(&DEPLOYMENT, Some("prod")), "/registry/deployments/prod/");
    assert_eq!(store_prefix(&DEPLOYMENT, None), "/registry/deployments/");
    assert_eq!(store_prefix(&NODE, Some("x")), "/registry/nodes/");
}

#[test]
fn unknown_kinds_are_not_found() {
    let kind = KindInfo { api_version: "v1", kind: "Secret", resource: "secrets", namespaced: true, read_only: false };
    let mut object = json!({});
    assert!(matches!(rules().admit(&kind, &mut object, None, &mem()), Err(Rejection::NotFound(_))));
}

#[test]
fn endpoint_slices_are_read_only() {
    let store = mem();
    let mut object = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web", "namespace": "default"}, "addressType": "IPv4", "endpoints": []
    });
    let before = object.clone();
    match rules().admit(&ENDPOINT_SLICE, &mut object, None, &store) {
        Err(Rejection::Invalid(errors)) => assert_error(&errors, "kind", "Forbidden: endpointslices are derived"),
        other => panic!("{other:?}"),
    }
    assert_eq!(object, before);
    assert_eq!(store.current_revision().unwrap(), 0);
}

#[test]
fn api_version_and_kind_must_match_the_url() {
    let errors = invalid(&POD, set(pod(), "/kind", json!("Service")));
    assert_eq!(
        errors,
        vec![FieldError { field: "kind".into(), reason: r#"Invalid value: "Service": must be "Pod""#.into() }]
    );
    assert_refused(
        &DEPLOYMENT,
        set(deployment(), "/apiVersion", json!("apps/v1beta1")),
        "apiVersion",
        "must be \"apps/v1\"",
    );
    // Left out: filled in.
    let object = admitted(&POD, remove(remove(pod(), "/kind"), "/apiVersion"));
    assert_eq!((object["apiVersion"].as_str(), object["kind"].as_str()), (Some("v1"), Some("Pod")));
    assert_refused(&POD, json!([1, 2]), "", "must be a JSON object");
}

// ---- Strict decoding --------------------------------------------------------

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let errors = invalid(&DEPLOYMENT, set(remove(deployment(), "/spec/replicas"), "/spec/replica", json!(3)));
    assert_eq!(
        errors,
        vec![FieldError { field: "spec.replica".into(), reason: r#"unknown field "spec.replica""#.into() }]
    );
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/imagePullPolicyy", json!("Always")),
        "spec.containers[0].imagePullPolicyy",
        r#"unknown field "spec.containers[0].imagePullPolicyy""#,
    );
    assert_refused(&SERVICE, set(service("web"), "/metadata/labelz", json!({})), "metadata.labelz", "unknown field");
    // null means absent; empty lists and maps are known fields.
    admitted(&POD, set(pod(), "/spec/nodeSelector", Value::Null));
    admitted(&POD, set(set(pod(), "/spec/volumes", json!([])), "/metadata/annotations", json!({})));
    // What `kubectl create deployment --dry-run=client -o yaml` writes.
    let generated = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}, "name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "strategy": {},
                 "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                              "spec": {"containers": [{"image": "nginx", "name": "nginx", "resources": {}}]}}},
        "status": {}
    });
    admitted(&DEPLOYMENT, generated);
}

#[test]
fn type_errors_name_their_field() {
    assert_refused(
        &DEPLOYMENT,
        set(deployment(), "/spec/replicas", json!("three")),
        "spec.replicas",
        r#"invalid type: string "three", expected i32"#,
    );
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/ports/0/containerPort", json!("80")),
        "spec.containers[0].ports[0].containerPort",
        "invalid type: string",
    );
    assert_refused(
        &SERVICE,
        set(service("web"), "/spec/ports", json!({"port": 80})),
        "spec.ports",
        "invalid type: map",
    );
    assert_refused(&POD, set(pod(), "/metadata/labels/app", json!(1)), "metadata.labels.app", "invalid type: integer");
}

// ---- Metadata -----------------------------------------------------------------

#[test]
fn names_follow_each_kinds_rule() {
    let subdomain = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    let errors = invalid(&POD, set(pod(), "/metadata/name", json!("Web_1")));
    assert_eq!(
        errors,
        vec![FieldError { field: "metadata.name".into(), reason: format!("Invalid value: \"Web_1\": {subdomain}") }]
    );
    assert_refused(
        &DEPLOYMENT,
        set(deployment(), "/metadata/name", json!("web.")),
        "metadata.name",
        "RFC 1123 subdomain",
    );
    assert_refused(&NODE, set(node(), "/metadata/name", json!("Node1")), "metadata.name", "RFC 1123 subdomain");
    admitted(&POD, set(pod(), "/metadata/name", json!("web.v1")));
    // Services are DNS-1035 labels: no dots, no leading digit.
    assert_refused(&SERVICE, service("1web"), "metadata.name", "a DNS-1035 label must consist of lower case");
    assert_refused(&SERVICE, service("web.v1"), "metadata.name", "a DNS-1035 label");
    assert_refused(&SERVICE, service(&"a".repeat(64)), "metadata.name", "must be no more than 63 characters");
    // Namespaces are DNS-1123 labels.
    assert_refused(&NAMESPACE, namespace("prod.eu"), "metadata.name", "a lowercase RFC 1123 label must consist");
    assert_refused(
        &POD,
        set(pod(), "/metadata/name", json!(format!("{}.b", "a".repeat(253)))),
        "metadata.name",
        "must be no more than 253 characters",
    );
    assert_refused(
        &POD,
        remove(pod(), "/metadata/name"),
        "metadata.name",
        "Required value: name or generateName is required",
    );
}

#[test]
fn generate_name_makes_a_name() {
    let object = admitted(&POD, set(remove(pod(), "/metadata/name"), "/metadata/generateName", json!("web-")));
    let name = object["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_refused(
        &POD,
        set(remove(pod(), "/metadata/name"), "/metadata/generateName", json!("Web-")),
        "metadata.generateName",
        "RFC 1123",
    );
}

#[test]
fn namespaced_objects_need_a_namespace_that_exists() {
    let r = rules();
    let store = mem();
    assert_refused(&POD, remove(pod(), "/metadata/namespace"), "metadata.namespace", "Required value");
    assert_refused(&POD, set(pod(), "/metadata/namespace", json!("Prod")), "metadata.namespace", "RFC 1123 label");
    let in_prod = set(pod(), "/metadata/namespace", json!("prod"));
    match create_in(&r, &store, &POD, in_prod.clone()) {
        Err(Rejection::NotFound(message)) => assert_eq!(message, r#"namespaces "prod" not found"#),
        other => panic!("{other:?}"),
    }
    apply(&r, &store, &NAMESPACE, namespace("prod"));
    create_in(&r, &store, &POD, in_prod.clone()).unwrap();
    // A namespace being deleted takes nothing new.
    let key = store_key(&NAMESPACE, None, "prod");
    let stored = store.get(&key).unwrap().unwrap();
    let terminating = set(serde_json::from_slice(&stored.value).unwrap(), "/status/phase", json!("Terminating"));
    store.update(&key, &serde_json::to_vec(&terminating).unwrap(), None).unwrap();
    match create_in(&r, &store, &POD, in_prod) {
        Err(Rejection::Forbidden(message)) => assert!(message.contains("being terminated"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Cluster-scoped objects lose a namespace they were sent with.
    let object = admitted(&NODE, set(node(), "/metadata/namespace", json!("default")));
    assert!(object["metadata"].get("namespace").is_none());
}

#[test]
fn labels_and_annotations_follow_kubernetes_rules() {
    let errors = invalid(
        &POD,
        set(pod(), "/metadata/labels", json!({"bad key": "x", "app": "-web", "a/b/c": "", "x.io/": "v"})),
    );
    assert_error(
        &errors,
        "metadata.labels",
        "Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
    );
    assert_error(
        &errors,
        "metadata.labels",
        "Invalid value: \"-web\": a valid label must be an empty string or consist of alphanumeric characters",
    );
    assert_error(&errors, "metadata.labels", "Invalid value: \"a/b/c\": a qualified name must consist of");
    assert_error(&errors, "metadata.labels", "Invalid value: \"x.io/\": name part must be non-empty");
    assert_refused(
        &POD,
        set(pod(), "/metadata/labels/app", json!("a".repeat(64))),
        "metadata.labels",
        "must be no more than 63 characters",
    );
    assert_refused(
        &POD,
        set(pod(), "/metadata/labels", json!({format!("{}/x", "a".repeat(254)): "v"})),
        "metadata.labels",
        "prefix part must be no more than 253 characters",
    );
    assert_refused(
        &POD,
        set(pod(), "/metadata/annotations", json!({"Bad Key": "x"})),
        "metadata.annotations",
        "name part must consist",
    );
    assert_refused(
        &POD,
        set(pod(), "/metadata/annotations", json!({"big": "x".repeat(256 * 1024)})),
        "metadata.annotations",
        "Too long: may not be more than 262144 bytes",
    );
    // Anything goes in annotation values, and keys may have a prefix.
    admitted(
        &POD,
        set(pod(), "/metadata/annotations", json!({"example.com/note": "any thing: at all", "kubernetes.io/x": ""})),
    );
}

#[test]
fn berth_annotations_are_checked_per_kind() {
    let ann = |object: Value, key: &str, value: &str| set(object, "/metadata/annotations", json!({key: value}));
    // Services: the algorithm.
    for algorithm in ["wrr", "maglev", "random"] {
        admitted(&SERVICE, ann(service("web"), "berth.dev/lb-algorithm", algorithm));
    }
    assert_refused(
        &SERVICE,
        ann(service("web"), "berth.dev/lb-algorithm", "rr"),
        "metadata.annotations[berth.dev/lb-algorithm]",
        r#"Unsupported value: "rr": supported values: "maglev", "random", "wrr""#,
    );
    assert_refused(
        &SERVICE,
        ann(service("web"), "berth.dev/weight", "5"),
        "metadata.annotations[berth.dev/weight]",
        "Forbidden: belongs on the pods",
    );
    assert_refused(
        &SERVICE,
        ann(service("web"), "berth.dev/algorithm", "wrr"),
        "metadata.annotations[berth.dev/algorithm]",
        "Forbidden: unknown berth annotation (known on this object: berth.dev/lb-algorithm)",
    );
    // Pods and templates: the weight.
    admitted(&POD, ann(pod(), "berth.dev/weight", "65535"));
    admitted(&POD, ann(pod(), "berth.dev/pids-limit", "100"));
    for bad in ["0", "65536", "-1", "1.5", " 5", "x", ""] {
        assert_refused(
            &POD,
            ann(pod(), "berth.dev/weight", bad),
            "metadata.annotations[berth.dev/weight]",
            "must be an integer between 1 and 65535, inclusive",
        );
    }
    assert_refused(
        &POD,
        ann(pod(), "berth.dev/pids-limit", "0"),
        "metadata.annotations[berth.dev/pids-limit]",
        "must be a positive integer",
    );
    assert_refused(
        &POD,
        ann(pod(), "berth.dev/lb-algorithm", "wrr"),
        "metadata.annotations[berth.dev/lb-algorithm]",
        "Forbidden: belongs on a Service",
    );
    let template = set(deployment(), "/spec/template/metadata/annotations", json!({"berth.dev/weight": "3"}));
    admitted(&DEPLOYMENT, template);
    let template = set(deployment(), "/spec/template/metadata/annotations", json!({"berth.dev/weight": "0"}));
    assert_refused(
        &DEPLOYMENT,
        template,
        "spec.template.metadata.annotations[berth.dev/weight]",
        "between 1 and 65535",
    );
    assert_refused(
        &DEPLOYMENT,
        ann(deployment(), "berth.dev/weight", "3"),
        "metadata.annotations[berth.dev/weight]",
        "belongs on the pod template",
    );
    assert_refused(
        &NODE,
        ann(node(), "berth.dev/x", "1"),
        "metadata.annotations[berth.dev/x]",
        "unknown berth annotation",
    );
    assert_eq!(parse_weight("42"), Some(42));
    assert_eq!(parse_weight("+42"), None);
}

#[test]
fn server_set_fields_on_create() {
    let object = admitted(
        &POD,
        set(
            pod(),
            "/metadata",
            json!({"name": "web-1", "namespace": "default", "uid": "mine", "resourceVersion": "42",
                   "creationTimestamp": "2001-01-01T00:00:00Z", "generation": 7, "deletionTimestamp": "2001-01-01T00:00:00Z"}),
        ),
    );
    let meta = &object["metadata"];
    let uid = meta["uid"].as_str().unwrap();
    assert_ne!(uid, "mine");
    assert_eq!(uid.len(), 36);
    assert_eq!(&uid[14..15], "4");
    assert!(meta.get("resourceVersion").is_none());
    assert!(meta.get("deletionTimestamp").is_none());
    assert_eq!(meta["generation"], 1);
    assert_ne!(meta["creationTimestamp"], "2001-01-01T00:00:00Z");
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    // Two creates, two uids.
    assert_ne!(admitted(&POD, pod())["metadata"]["uid"], admitted(&POD, pod())["metadata"]["uid"]);
}

#[test]
fn server_set_fields_on_update() {
    let r = rules();
    let store = mem();
    let old = admitted(&DEPLOYMENT, deployment());
    let uid = old["metadata"]["uid"].clone();
    let created = old["metadata"]["creationTimestamp"].clone();
    // Same spec, no uid, another timestamp: uid and timestamp kept,
    // generation unchanged, resourceVersion left for the server.
    let new = set(
        set(deployment(), "/metadata/creationTimestamp", json!("2001-01-01T00:00:00Z")),
        "/metadata/resourceVersion",
        json!("5"),
    );
    let (same, ops) = update_in(&r, &store, &DEPLOYMENT, &old, new).unwrap();
    assert!(ops.is_empty());
    assert_eq!(same["metadata"]["uid"], uid);
    assert_eq!(same["metadata"]["creationTimestamp"], created);
    assert_eq!(same["metadata"]["generation"], 1);
    assert_eq!(same["metadata"]["resourceVersion"], "5");
    // A spec change bumps the generation; a label change does not.
    let (scaled, _) = update_in(&r, &store, &DEPLOYMENT, &same, set(deployment(), "/spec/replicas", json!(5))).unwrap();
    assert_eq!(scaled["metadata"]["generation"], 2);
    let (labelled, _) = update_in(
        &r,
        &store,
        &DEPLOYMENT,
        &scaled,
        set(set(deployment(), "/spec/replicas", json!(5)), "/metadata/labels", json!({"tier": "front"})),
    )
    .unwrap();
    assert_eq!(labelled["metadata"]["generation"], 2);
    // The uid may not change.
    let errors = update_invalid(&DEPLOYMENT, &old, set(deployment(), "/metadata/uid", json!("other")));
    assert_eq!(
        errors,
        vec![FieldError {
            field: "metadata.uid".into(),
            reason: r#"Invalid value: "other": field is immutable"#.into()
        }]
    );
    assert_error(
        &update_invalid(&DEPLOYMENT, &old, set(deployment(), "/metadata/name", json!("api"))),
        "metadata.name",
        "field is immutable",
    );
}

#[test]
fn status_is_kept_across_updates_without_one() {
    let r = rules();
    let store = mem();
    let old = set(admitted(&POD, pod()), "/status", json!({"phase": "Running", "podIP": "198.18.0.5"}));
    let (new, _) = update_in(&r, &store, &POD, &old, pod()).unwrap();
    assert_eq!(new["status"]["phase"], "Running");
    let (new, _) = update_in(&r, &store, &POD, &old, set(pod(), "/status", json!({"phase": "Succeeded"}))).unwrap();
    assert_eq!(new["status"]["phase"], "Succeeded");
    // A new pod is Pending whatever it says.
    assert_eq!(
        admitted(&POD, set(pod(), "/status", json!({"phase": "Running"})))["status"],
        json!({"phase": "Pending"})
    );
    assert_eq!(admitted(&NAMESPACE, namespace("prod"))["status"], json!({"phase": "Active"}));
    assert!(admitted(&DEPLOYMENT, set(deployment(), "/status", json!({"replicas": 3}))).get("status").is_none());
}

#[test]
fn owner_references_and_finalizers() {
    let owners = json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "", "controller": true},
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "u2", "controller": true}
    ]);
    let errors = invalid(&POD, set(pod(), "/metadata/ownerReferences", owners));
    assert_error(&errors, "metadata.ownerReferences[0].uid", "Invalid value: \"\": uid must not be empty");
    assert_error(&errors, "metadata.ownerReferences", "Only one reference can have Controller set to true");
    assert_refused(
        &POD,
        set(pod(), "/metadata/finalizers", json!(["bad finalizer"])),
        "metadata.finalizers[0]",
        "name part must consist",
    );
}

// ---- Pods -------------------------------------------------------------------

#[test]
fn pod_defaults() {
    let object = admitted(
        &POD,
        set(
            pod(),
            "/spec/containers/0",
            json!({"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                   "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                   "readinessProbe": {"httpGet": {"port": 80}}}),
        ),
    );
    let spec = &object["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["resources"]["requests"], json!({"cpu": "500m", "memory": "64Mi"}));
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    let pull = |image: &str| {
        admitted(&POD, set(pod(), "/spec/containers/0/image", json!(image)))["spec"]["containers"][0]["imagePullPolicy"]
            .clone()
    };
    assert_eq!(pull("nginx:1.27"), "IfNotPresent");
    assert_eq!(pull("nginx:latest"), "Always");
    assert_eq!(pull("registry:5000/nginx"), "Always");
    assert_eq!(pull("nginx@sha256:abc"), "IfNotPresent");
}

#[test]
fn pod_containers() {
    assert_refused(&POD, set(pod(), "/spec/containers", json!([])), "spec.containers", "Required value");
    assert_refused(&POD, remove(pod(), "/spec"), "spec", "Required value");
    let two = json!([{"name": "web", "image": "a"}, {"name": "web", "image": "b"}]);
    assert_refused(&POD, set(pod(), "/spec/containers", two), "spec.containers[1].name", r#"Duplicate value: "web""#);
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/name", json!("Web")),
        "spec.containers[0].name",
        r#"Invalid value: "Web": a lowercase RFC 1123 label"#,
    );
    assert_refused(&POD, set(pod(), "/spec/containers/0/name", json!("")), "spec.containers[0].name", "Required value");
    assert_refused(&POD, remove(pod(), "/spec/containers/0/image"), "spec.containers[0].image", "Required value");
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/image", json!(" nginx")),
        "spec.containers[0].image",
        "must not have leading or trailing whitespace",
    );
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/imagePullPolicy", json!("Sometimes")),
        "spec.containers[0].imagePullPolicy",
        r#"Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never""#,
    );
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/env", json!([{"name": "A=B", "value": "x"}])),
        "spec.containers[0].env[0].name",
        "printable ASCII characters other than '='",
    );
    assert_refused(
        &POD,
        set(pod(), "/spec/containers/0/workingDir", json!("srv")),
        "spec.containers[0].workingDir",
        "must be an absolute path",
    );
}

#[test]
fn pod_ports() {
    let ports = |p: Value| set(pod(), "/spec/containers/0/ports", p);
    let errors = invalid(&POD, ports(json!([{"containerPort": 0}, {"containerPort": 65536}])));
    assert_error(
        &errors,
        "spec.containers[0].ports[0].containerPort",
        "Invalid value: 0: must be between 1 and 65535, inclusive",
    );
    assert_error(
        &errors,
        "spec.containers[0].ports[1].containerPort",
        "Invalid value: 65536: must be between 1 and 65535, inclusive",
    );
    assert_refused(
        &POD,
        ports(json!([{"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81}])),
        "spec.containers[0].ports[1].name",
        r#"Duplicate value: "http""#,
    );
    let errors = invalid(&POD, ports(json!([{"name": "HTTP--x-", "containerPort": 80}])));
    for reason in [
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        "must not contain consecutive hyphens",
        "must not begin or end with a hyphen",
    ] {
        assert_error(&errors, "spec.containers[0].ports[0].name", reason);
    }
    assert_refused(
        &POD,
        ports(json!([{"name": "123", "containerPort": 80}])),
        "spec.containers[0].ports[0].name",
        "must contain at least one letter (a-z)",
    );
    assert_refused(
        &POD,
        ports(json!([{"name": "a-very-long-port-name", "containerPort": 80}])),
        "spec.containers[0].ports[0].name",
        "must be no more than 15 characters",
    );
    assert_refused(
        &POD,
        ports(json!([{"containerPort": 80, "protocol": "HTTP"}])),
        "spec.containers[0].ports[0].protocol",
        r#"Unsupported value: "HTTP": supported values: "TCP", "UDP""#,
    );
    assert_refused(
        &POD,
        ports(json!([{"containerPort": 80, "protocol": "SCTP"}])),
        "spec.containers[0].ports[0].protocol",
        "is not supported by berth (SCTP)",
    );
    assert_refused(
        &POD,
        ports(json!([{"containerPort": 80, "hostPort": 70000}])),
        "spec.containers[0].ports[0].hostPort",
        "must be between 1 and 65535",
    );
    admitted(&POD, ports(json!([{"containerPort": 53, "protocol": "UDP", "hostPort": 53}])));
}

#[test]
fn pod_resources() {
    let resources = |r: Value| set(pod(), "/spec/containers/0/resources", r);
    admitted(
        &POD,
        resources(json!({"requests": {"cpu": "0.5", "memory": "129e6"}, "limits": {"cpu": 1, "memory": "1G"}})),
    );
    let errors = invalid(&POD, resources(json!({"limits": {"cpu": "abc", "memory": "-1Mi"}})));
    assert_error(
        &errors,
        "spec.containers[0].resources.limits[cpu]",
        "Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    );
    assert_error(
        &errors,
        "spec.containers[0].resources.limits[memory]",
        "Invalid value: \"-1Mi\": must be greater than or equal to 0",
    );
    assert_refused(
        &POD,
        resources(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})),
        "spec.containers[0].resources.requests[cpu]",
        r#"Invalid value: "2": must be less than or equal to cpu limit of 1"#,
    );
    assert_refused(
        &POD,
        resources(json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}})),
        "spec.containers[0].resources.requests[memory]",
        "must be less than or equal to memory limit of 1Gi",
    );
    assert_refused(
        &POD,
        resources(json!({"limits": {"nvidia.com/gpu": "1"}})),
        "spec.containers[0].resources.limits[nvidia.com/gpu]",
        "berth manages cpu and memory only",
    );
}

#[test]
fn pod_restart_policy_and_grace() {
    assert_refused(
        &POD,
        set(pod(), "/spec/restartPolicy", json!("Sometimes")),
        "spec.restartPolicy",
        r#"Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#,
    );
    admitted(&POD, set(pod(), "/spec/restartPolicy", json!("Never")));
    assert_refused(
        &POD,
        set(pod(), "/spec/terminationGracePeriodSeconds", json!(-1)),
        "spec.terminationGracePeriodSeconds",
        "must be greater than or equal to 0",
    );
}

#[test]
fn pod_probes() {
    let probe = |kind: &str, p: Value| set(pod(), &format!("/spec/containers/0/{kind}"), p);
    let path = "spec.containers[0].livenessProbe";
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"periodSeconds": 5})),
        path,
        "Required value: must specify a handler type",
    );
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}})),
        &format!("{path}.tcpSocket"),
        "Forbidden: may not specify more than 1 handler type",
    );
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"exec": {}})),
        &format!("{path}.exec.command"),
        "Required value",
    );
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"tcpSocket": {"port": 0}})),
        &format!("{path}.tcpSocket.port"),
        "must be between 1 and 65535",
    );
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"httpGet": {"port": "metrics"}})),
        &format!("{path}.httpGet.port"),
        "does not name a port of this container",
    );
    admitted(&POD, probe("livenessProbe", json!({"httpGet": {"port": "http", "path": "/healthz"}})));
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"tcpSocket": {"port": 80}, "periodSeconds": -1})),
        &format!("{path}.periodSeconds"),
        "Invalid value: -1: must be greater than or equal to 0",
    );
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"tcpSocket": {"port": 80}, "successThreshold": 2})),
        &format!("{path}.successThreshold"),
        "Invalid value: 2: must be 1",
    );
    admitted(&POD, probe("readinessProbe", json!({"tcpSocket": {"port": 80}, "successThreshold": 2})));
    assert_refused(
        &POD,
        probe("readinessProbe", json!({"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 5})),
        "spec.containers[0].readinessProbe.terminationGracePeriodSeconds",
        "must not be set for readinessProbes",
    );
    assert_refused(
        &POD,
        probe("startupProbe", json!({"grpc": {"port": 80}})),
        "spec.containers[0].startupProbe.grpc",
        "is not supported by berth (gRPC probes)",
    );
    assert_refused(
        &POD,
        probe("livenessProbe", json!({"httpGet": {"port": 80, "scheme": "HTTPS"}})),
        &format!("{path}.httpGet.scheme"),
        "is not supported by berth (HTTPS probes)",
    );
}

#[test]
fn pod_features_berth_cannot_run_are_refused() {
    let cases = [
        ("/spec/hostNetwork", json!(true), "spec.hostNetwork"),
        ("/spec/volumes", json!([{"name": "data", "emptyDir": {}}]), "spec.volumes"),
        ("/spec/initContainers", json!([{"name": "init", "image": "busybox"}]), "spec.initContainers"),
        (
            "/spec/containers/0/securityContext",
            json!({"privileged": true}),
            "spec.containers[0].securityContext.privileged",
        ),
        (
            "/spec/containers/0/env",
            json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
            "spec.containers[0].env[0].valueFrom",
        ),
    ];
    for (pointer, value, field) in cases {
        assert_refused(&POD, set(pod(), pointer, value), field, "Forbidden: is not supported by berth");
    }
    assert_refused(
        &POD,
        set(pod(), "/spec/securityContext", json!({"runAsUser": -1})),
        "spec.securityContext.runAsUser",
        "must be between 0 and 2147483647, inclusive",
    );
    assert_refused(
        &POD,
        set(pod(), "/spec/securityContext", json!({"runAsUser": 0, "runAsNonRoot": true})),
        "spec.containers[0].securityContext.runAsUser",
        "breaks the runAsNonRoot policy",
    );
}

#[test]
fn pod_updates_may_only_bind() {
    let r = rules();
    let store = mem();
    let old = admitted(&POD, pod());
    // Binding: nodeName from unset to set.
    let (bound, _) = update_in(&r, &store, &POD, &old, set(pod(), "/spec/nodeName", json!("node-1"))).unwrap();
    assert_eq!(bound["spec"]["nodeName"], "node-1");
    // The original manifest again: the binding stays.
    let (again, _) = update_in(&r, &store, &POD, &bound, pod()).unwrap();
    assert_eq!(again["spec"]["nodeName"], "node-1");
    // Moving a bound pod, or changing anything else, is refused.
    let errors = update_invalid(&POD, &bound, set(pod(), "/spec/nodeName", json!("node-2")));
    assert_error(&errors, "spec", "Forbidden: pod updates may not change fields other than `spec.nodeName`");
    assert_error(
        &update_invalid(&POD, &old, set(pod(), "/spec/containers/0/image", json!("nginx:2"))),
        "spec",
        "pod updates may not change",
    );
    // Labels may change.
    update_in(&r, &store, &POD, &old, set(pod(), "/metadata/labels/tier", json!("front"))).unwrap();
}

#[test]
fn pod_status_updates_have_a_known_phase_and_never_leave_a_terminal_one() {
    let r = rules();
    let store = mem();
    let old = admitted(&POD, set(pod(), "/status/phase", json!("Bogus")));
    assert_eq!(old["status"]["phase"], "Pending", "a create's status is the server's");
    let errors = update_invalid(&POD, &old, set(pod(), "/status/phase", json!("Bogus")));
    assert_error(&errors, "status.phase", "Unsupported value: \"Bogus\"");
    let (failed, _) = update_in(&r, &store, &POD, &old, set(pod(), "/status/phase", json!("Failed"))).unwrap();
    let errors = update_invalid(&POD, &failed, set(pod(), "/status/phase", json!("Running")));
    assert_error(&errors, "status.phase", "Forbidden: cannot transition from terminal phase Failed to Running");
    // The same terminal phase again is fine (agents rewrite their status).
    update_in(&r, &store, &POD, &failed, set(pod(), "/status/phase", json!("Failed"))).unwrap();
}

// ---- Deployments --------------------------------------------------------------

#[test]
fn deployment_defaults() {
    let object = admitted(&DEPLOYMENT, remove(deployment(), "/spec/replicas"));
    let spec = &object["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(spec["template"]["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    let object = admitted(&DEPLOYMENT, set(deployment(), "/spec/strategy", json!({"type": "Recreate"})));
    assert_eq!(object["spec"]["strategy"], json!({"type": "Recreate"}));
    let object = admitted(&DEPLOYMENT, set(deployment(), "/spec/strategy/rollingUpdate", json!({"maxSurge": 1})));
    assert_eq!(object["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": 1, "maxUnavailable": "25%"}));
}

#[test]
fn deployment_rules() {
    let d = deployment;
    let errors = invalid(&DEPLOYMENT, set(d(), "/spec/replicas", json!(-1)));
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.replicas".into(),
            reason: "Invalid value: -1: must be greater than or equal to 0".into()
        }]
    );
    admitted(&DEPLOYMENT, set(d(), "/spec/replicas", json!(0)));
    assert_refused(&DEPLOYMENT, remove(d(), "/spec/selector"), "spec.selector", "Required value");
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/selector", json!({})),
        "spec.selector",
        "empty selector is invalid for deployment",
    );
    assert_refused(&DEPLOYMENT, remove(d(), "/spec"), "spec", "Required value");
    assert_refused(&DEPLOYMENT, remove(d(), "/spec/template/spec"), "spec.template.spec.containers", "Required value");
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/template/spec/restartPolicy", json!("Never")),
        "spec.template.spec.restartPolicy",
        r#"Unsupported value: "Never": supported values: "Always""#,
    );
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/template/spec/containers/0/name", json!("Web")),
        "spec.template.spec.containers[0].name",
        "RFC 1123 label",
    );
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/revisionHistoryLimit", json!(-1)),
        "spec.revisionHistoryLimit",
        "must be greater than or equal to 0",
    );
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/minReadySeconds", json!(700)),
        "spec.progressDeadlineSeconds",
        "must be greater than minReadySeconds",
    );
    let expr = json!({"matchExpressions": [{"key": "app", "operator": "Within", "values": ["web"]}]});
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/selector", expr),
        "spec.selector.matchExpressions[0].operator",
        r#"Unsupported value: "Within": supported values: "In", "NotIn", "Exists", "DoesNotExist""#,
    );
    let expr = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]});
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/selector", expr),
        "spec.selector.matchExpressions[0].values",
        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
    );
    let expr = json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["web"]}]});
    assert_refused(
        &DEPLOYMENT,
        set(d(), "/spec/selector", expr),
        "spec.selector.matchExpressions[0].values",
        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
    );
    let expr = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]});
    admitted(&DEPLOYMENT, set(d(), "/spec/selector", expr));
}

#[test]
fn deployment_selector_must_match_template_labels() {
    let errors = invalid(&DEPLOYMENT, set(deployment(), "/spec/template/metadata/labels", json!({"app": "api"})));
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.template.metadata.labels".into(),
            reason: r#"Invalid value: {"app":"api"}: `selector` does not match template `labels`"#.into(),
        }]
    );
    assert_refused(
        &DEPLOYMENT,
        remove(deployment(), "/spec/template/metadata"),
        "spec.template.metadata.labels",
        "`selector` does not match template `labels`",
    );
}

#[test]
fn deployment_strategy() {
    let strategy = |s: Value| set(deployment(), "/spec/strategy", s);
    assert_refused(
        &DEPLOYMENT,
        strategy(json!({"type": "BlueGreen"})),
        "spec.strategy.type",
        r#"Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate""#,
    );
    assert_refused(
        &DEPLOYMENT,
        strategy(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})),
        "spec.strategy.rollingUpdate",
        "Forbidden: may not be specified when strategy `type` is 'Recreate'",
    );
    let rolling = |surge: Value, unavailable: Value| {
        strategy(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}))
    };
    assert_refused(
        &DEPLOYMENT,
        rolling(json!(0), json!(0)),
        "spec.strategy.rollingUpdate.maxUnavailable",
        "Invalid value: 0: may not be 0 when `maxSurge` is 0",
    );
    assert_refused(
        &DEPLOYMENT,
        rolling(json!("0%"), json!("0%")),
        "spec.strategy.rollingUpdate.maxUnavailable",
        "may not be 0 when `maxSurge` is 0",
    );
    assert_refused(
        &DEPLOYMENT,
        rolling(json!(-1), json!(1)),
        "spec.strategy.rollingUpdate.maxSurge",
        "Invalid value: -1: must be greater than or equal to 0",
    );
    assert_refused(
        &DEPLOYMENT,
        rolling(json!("25"), json!(1)),
        "spec.strategy.rollingUpdate.maxSurge",
        "Invalid value: \"25\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
    );
    assert_refused(
        &DEPLOYMENT,
        rolling(json!(1), json!("101%")),
        "spec.strategy.rollingUpdate.maxUnavailable",
        "must not be greater than 100%",
    );
    admitted(&DEPLOYMENT, rolling(json!("200%"), json!("100%")));
    admitted(&DEPLOYMENT, rolling(json!(0), json!(1)));
}

#[test]
fn deployment_selector_is_immutable() {
    let r = rules();
    let old = admitted(&DEPLOYMENT, deployment());
    let new = set(
        set(deployment(), "/spec/selector/matchLabels", json!({"app": "web", "tier": "front"})),
        "/spec/template/metadata/labels/tier",
        json!("front"),
    );
    let errors = update_invalid(&DEPLOYMENT, &old, new);
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.selector".into(),
            reason: r#"Invalid value: {"matchLabels":{"app":"web","tier":"front"}}: field is immutable"#.into(),
        }]
    );
    update_in(
        &r,
        &mem(),
        &DEPLOYMENT,
        &old,
        set(deployment(), "/spec/template/spec/containers/0/image", json!("nginx:2")),
    )
    .unwrap();
}

// ---- Services -----------------------------------------------------------------

#[test]
fn service_defaults_and_allocation() {
    let r = rules();
    let store = mem();
    let (object, ops) = create_in(&r, &store, &SERVICE, service("web")).unwrap();
    let spec = &object["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 8080}));
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    let ip: Ipv4Addr = spec["clusterIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
    assert!(r.config().service_cidr.contains(ip));
    let uid = object["metadata"]["uid"].as_str().unwrap();
    let [Op::Create { key, value }] = &ops[..] else { panic!("{ops:?}") };
    assert_eq!(key, &format!("/registry/ranges/serviceips/{ip}"));
    let record: Value = serde_json::from_slice(value).unwrap();
    assert_eq!(record, json!({"namespace": "default", "name": "web", "uid": uid}));
    // targetPort defaults to the port.
    let object = admitted(&SERVICE, remove(service("web"), "/spec/ports/0/targetPort"));
    assert_eq!(object["spec"]["ports"][0]["targetPort"], 80);
    // Affinity defaults.
    let object = admitted(&SERVICE, set(service("web"), "/spec/sessionAffinity", json!("ClientIP")));
    assert_eq!(object["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
}

#[test]
fn sequential_creates_get_distinct_addresses() {
    let r = rules();
    let store = mem();
    let mut ips = HashSet::new();
    for i in 0..50 {
        let object = apply(&r, &store, &SERVICE, service(&format!("svc-{i}")));
        assert!(ips.insert(object["spec"]["clusterIP"].as_str().unwrap().to_owned()));
    }
    assert_eq!(records(&store, SERVICE_IPS_PREFIX).len(), 50);
}

#[test]
fn a_given_cluster_ip_must_be_in_range_and_free() {
    let r = rules();
    let store = mem();
    let errors = invalid(&SERVICE, set(service("web"), "/spec/clusterIP", json!("10.0.0.1")));
    assert_eq!(errors, vec![FieldError {
        field: "spec.clusterIPs".into(),
        reason: r#"Invalid value: "10.0.0.1": provided IP is not in the valid range. The range of valid IPs is 198.19.0.0/16"#.into(),
    }]);
    // Network and broadcast addresses are not allocatable.
    assert_refused(
        &SERVICE,
        set(service("web"), "/spec/clusterIP", json!("198.19.0.0")),
        "spec.clusterIPs",
        "not in the valid range",
    );
    assert_refused(
        &SERVICE,
        set(service("web"), "/spec/clusterIP", json!("198.19.255.255")),
        "spec.clusterIPs",
        "not in the valid range",
    );
    assert_refused(
        &SERVICE,
        set(service("web"), "/spec/clusterIP", json!("banana")),
        "spec.clusterIPs[0]",
        "must be a valid IP address",
    );
    assert_refused(&SERVICE, set(service("web"), "/spec/clusterIP", json!("fd00::1")), "spec.clusterIPs[0]", "IPv6");
    assert_refused(
        &SERVICE,
        set(set(service("web"), "/spec/clusterIP", json!("198.19.0.10")), "/spec/clusterIPs", json!(["198.19.0.11"])),
        "spec.clusterIPs[0]",
        "must match `clusterIP` when set",
    );
    let object = apply(&r, &store, &SERVICE, set(service("web"), "/spec/clusterIP", json!("198.19.0.10")));
    assert_eq!(object["spec"]["clusterIPs"], json!(["198.19.0.10"]));
    assert_eq!(records(&store, SERVICE_IPS_PREFIX), vec!["198.19.0.10"]);
    match create_in(&r, &store, &SERVICE, set(service("api"), "/spec/clusterIPs", json!(["198.19.0.10"]))) {
        Err(Rejection::Invalid(errors)) => assert_error(
            &errors,
            "spec.clusterIPs",
            r#"Invalid value: "198.19.0.10": failed to allocate IP 198.19.0.10: provided IP is already allocated"#,
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn headless_services_get_no_address() {
    let (object, ops) =
        create(&SERVICE, set(remove(service("web"), "/spec/ports"), "/spec/clusterIP", json!("None"))).unwrap();
    assert_eq!(object["spec"]["clusterIPs"], json!(["None"]));
    assert!(ops.is_empty());
    let node_port = set(set(service("web"), "/spec/clusterIP", json!("None")), "/spec/type", json!("NodePort"));
    assert_refused(&SERVICE, node_port, "spec.clusterIPs[0]", "may not be set to 'None' for NodePort services");
}

#[test]
fn service_rules() {
    let s = || service("web");
    assert_refused(
        &SERVICE,
        set(s(), "/spec/type", json!("LoadBalancer")),
        "spec.type",
        r#"Unsupported value: "LoadBalancer": supported values: "ClusterIP", "NodePort""#,
    );
    assert_refused(&SERVICE, set(s(), "/spec/type", json!("ExternalName")), "spec.type", "Unsupported value");
    assert_refused(&SERVICE, set(s(), "/spec/ports", json!([])), "spec.ports", "Required value");
    let errors = invalid(&SERVICE, set(s(), "/spec/ports", json!([{"port": 0}, {"name": "b", "port": 65536}])));
    assert_error(&errors, "spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive");
    assert_error(&errors, "spec.ports[1].port", "Invalid value: 65536: must be between 1 and 65535, inclusive");
    assert_error(&errors, "spec.ports[0].name", "Required value");
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ports", json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}])),
        "spec.ports[1].name",
        r#"Duplicate value: "http""#,
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ports", json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}])),
        "spec.ports[1]",
        r#"Duplicate value: "80/TCP""#,
    );
    admitted(
        &SERVICE,
        set(
            s(),
            "/spec/ports",
            json!([{"name": "dns", "port": 53}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
        ),
    );
    assert_refused(&SERVICE, set(s(), "/spec/ports/0/name", json!("HTTP")), "spec.ports[0].name", "RFC 1123 label");
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ports/0/protocol", json!("ICMP")),
        "spec.ports[0].protocol",
        r#"Unsupported value: "ICMP": supported values: "TCP", "UDP""#,
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ports/0/targetPort", json!(70000)),
        "spec.ports[0].targetPort",
        "must be between 1 and 65535, inclusive",
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ports/0/targetPort", json!("Web_Port")),
        "spec.ports[0].targetPort",
        "must contain only alpha-numeric characters",
    );
    admitted(&SERVICE, set(s(), "/spec/ports/0/targetPort", json!("http")));
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ports/0/nodePort", json!(30080)),
        "spec.ports[0].nodePort",
        "Forbidden: may not be used when `type` is 'ClusterIP'",
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/selector", json!({"app": "-web"})),
        "spec.selector",
        "a valid label must be",
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/externalIPs", json!(["1.2.3.4"])),
        "spec.externalIPs",
        "is not supported by berth",
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/loadBalancerIP", json!("1.2.3.4")),
        "spec.loadBalancerIP",
        "may only be used when `type` is 'LoadBalancer'",
    );
    assert_refused(
        &SERVICE,
        set(s(), "/spec/ipFamilyPolicy", json!("RequireDualStack")),
        "spec.ipFamilyPolicy",
        "this cluster is not configured for dual-stack services",
    );
    assert_refused(&SERVICE, set(s(), "/spec/ipFamilies", json!(["IPv6"])), "spec.ipFamilies[0]", "IPv6");
    assert_refused(
        &SERVICE,
        set(s(), "/spec/externalTrafficPolicy", json!("Cluster")),
        "spec.externalTrafficPolicy",
        "may only be set for externally-accessible services",
    );
    assert_refused(
        &SERVICE,
        set(set(s(), "/spec/type", json!("NodePort")), "/spec/externalTrafficPolicy", json!("Local")),
        "spec.externalTrafficPolicy",
        "is not supported by berth",
    );
}

#[test]
fn service_session_affinity() {
    let s = || service("web");
    assert_refused(
        &SERVICE,
        set(s(), "/spec/sessionAffinity", json!("Cookie")),
        "spec.sessionAffinity",
        r#"Unsupported value: "Cookie": supported values: "ClientIP", "None""#,
    );
    let with_timeout = |t: i64| {
        set(
            set(s(), "/spec/sessionAffinity", json!("ClientIP")),
            "/spec/sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": t}}),
        )
    };
    for bad in [0, -5, 86401] {
        assert_refused(
            &SERVICE,
            with_timeout(bad),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "must be greater than 0 and less than 86400",
        );
    }
    admitted(&SERVICE, with_timeout(1));
    admitted(&SERVICE, with_timeout(86400));
    assert_refused(
        &SERVICE,
        set(s(), "/spec/sessionAffinityConfig", json!({"clientIP": {"timeoutSeconds": 60}})),
        "spec.sessionAffinityConfig",
        "must not be set when session affinity is None",
    );
}

#[test]
fn node_ports_are_allocated_in_range() {
    let r = rules();
    let store = mem();
    let svc = set(
        set(service("web"), "/spec/type", json!("NodePort")),
        "/spec/ports",
        json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}]),
    );
    let object = apply(&r, &store, &SERVICE, svc);
    let ports: Vec<i64> =
        object["spec"]["ports"].as_array().unwrap().iter().map(|p| p["nodePort"].as_i64().unwrap()).collect();
    assert!(ports.iter().all(|p| (30000..=32767).contains(p)), "{ports:?}");
    assert_ne!(ports[0], ports[1]);
    // TCP and UDP on one port share a node port, as in Kubernetes.
    assert_eq!(ports[1], ports[2]);
    assert_eq!(object["spec"]["externalTrafficPolicy"], "Cluster");
    let mut held = records(&store, NODE_PORTS_PREFIX);
    held.sort();
    let mut expected: Vec<String> = vec![ports[0].to_string(), ports[1].to_string()];
    expected.sort();
    assert_eq!(held, expected);
}

#[test]
fn given_node_ports_must_be_in_range_and_free() {
    let r = rules();
    let store = mem();
    let node_port = |name: &str, port: i64| {
        set(set(service(name), "/spec/type", json!("NodePort")), "/spec/ports/0/nodePort", json!(port))
    };
    let errors = invalid(&SERVICE, node_port("web", 80));
    assert_eq!(
        errors,
        vec![FieldError {
            field: "spec.ports[0].nodePort".into(),
            reason:
                "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
                    .into(),
        }]
    );
    apply(&r, &store, &SERVICE, node_port("web", 30080));
    assert_eq!(records(&store, NODE_PORTS_PREFIX), vec!["30080"]);
    match create_in(&r, &store, &SERVICE, node_port("api", 30080)) {
        Err(Rejection::Invalid(errors)) => assert_eq!(
            errors,
            vec![FieldError {
                field: "spec.ports[0].nodePort".into(),
                reason: "Invalid value: 30080: provided port is already allocated".into(),
            }]
        ),
        other => panic!("{other:?}"),
    }
    let two = set(
        set(service("dup"), "/spec/type", json!("NodePort")),
        "/spec/ports",
        json!([{"name": "a", "port": 80, "nodePort": 30100}, {"name": "b", "port": 81, "nodePort": 30100}]),
    );
    assert_refused(&SERVICE, two, "spec.ports[1].nodePort", "Duplicate value: 30100");
}

#[test]
fn service_updates_keep_allocations_and_refuse_changing_them() {
    let r = rules();
    let store = mem();
    let manifest = set(service("web"), "/spec/type", json!("NodePort"));
    let old = apply(&r, &store, &SERVICE, manifest.clone());
    let ip = old["spec"]["clusterIP"].clone();
    let node_port = old["spec"]["ports"][0]["nodePort"].clone();
    // The original manifest again: address and port kept, nothing to do.
    let (new, ops) = update_in(&r, &store, &SERVICE, &old, manifest.clone()).unwrap();
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(new["spec"]["clusterIP"], ip);
    assert_eq!(new["spec"]["ports"][0]["nodePort"], node_port);
    assert_eq!(new["metadata"]["generation"], 1);
    // The address is immutable.
    let errors = update_invalid(&SERVICE, &old, set(manifest.clone(), "/spec/clusterIP", json!("198.19.7.7")));
    assert_error(&errors, "spec.clusterIP", r#"Invalid value: "198.19.7.7": field is immutable"#);
    // Back to ClusterIP: the node port is released with the update.
    let (_, ops) = update_in(&r, &store, &SERVICE, &old, set(old.clone(), "/spec/type", json!("ClusterIP"))).unwrap();
    let revision = store.get(&format!("{NODE_PORTS_PREFIX}{node_port}")).unwrap().unwrap().revision;
    assert_eq!(ops, vec![Op::Delete { key: format!("{NODE_PORTS_PREFIX}{node_port}"), expected: Some(revision) }]);
    // A new port on update gets a node port of its own.
    let more = set(manifest, "/spec/ports", json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}]));
    let old_named = set(old.clone(), "/spec/ports/0/name", json!("http"));
    let (new, ops) = update_in(&r, &store, &SERVICE, &old_named, more).unwrap();
    assert_eq!(new["spec"]["ports"][0]["nodePort"], node_port);
    let added = new["spec"]["ports"][1]["nodePort"].as_i64().unwrap();
    assert!(matches!(&ops[..], [Op::Create { key, .. }] if *key == format!("{NODE_PORTS_PREFIX}{added}")), "{ops:?}");
}

#[test]
fn release_frees_what_a_service_held() {
    let r = rules();
    let store = mem();
    let object = apply(&r, &store, &SERVICE, set(service("web"), "/spec/type", json!("NodePort")));
    let ops = r.release(&SERVICE, &object, &store);
    assert_eq!(ops.len(), 2);
    assert!(ops.iter().all(|op| matches!(op, Op::Delete { expected: Some(_), .. })));
    let key = store_key(&SERVICE, Some("default"), "web");
    let mut txn = vec![Op::Delete { key, expected: None }];
    txn.extend(ops);
    store.txn(&txn).unwrap();
    assert!(records(&store, RANGES_PREFIX).is_empty());
    // The address can be given again.
    let ip = object["spec"]["clusterIP"].clone();
    apply(&r, &store, &SERVICE, set(service("api"), "/spec/clusterIP", ip));
    // Records of another owner are not released; other kinds release nothing.
    let ops = r.release(&SERVICE, &object, &store);
    assert!(ops.is_empty(), "{ops:?}");
    assert!(r.release(&POD, &admitted(&POD, pod()), &store).is_empty());
}

#[test]
fn a_full_range_is_a_conflict() {
    let config = ResourcesConfig {
        service_cidr: "198.19.0.0/30".parse().unwrap(),
        node_port_range: NodePortRange::new(30000..=30000).unwrap(),
    };
    let r = Resources::new(config);
    let store = mem();
    apply(&r, &store, &SERVICE, service("a"));
    apply(&r, &store, &SERVICE, service("b"));
    match create_in(&r, &store, &SERVICE, service("c")) {
        Err(Rejection::Conflict(message)) => assert_eq!(message, "failed to allocate a serviceIP: range is full"),
        other => panic!("{other:?}"),
    }
    let store = mem();
    let node_port = |name: &str| set(service(name), "/spec/type", json!("NodePort"));
    apply(&r, &store, &SERVICE, node_port("a"));
    match create_in(&r, &store, &SERVICE, node_port("b")) {
        Err(Rejection::Conflict(message)) => assert_eq!(message, "failed to allocate a nodePort: range is full"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_creates_never_share_an_address() {
    // A small range, so that writers collide often.
    let config = ResourcesConfig {
        service_cidr: "198.19.0.0/27".parse().unwrap(),
        node_port_range: NodePortRange::new(30000..=30039).unwrap(),
    };
    let r = Arc::new(Resources::new(config));
    let store = Arc::new(mem());
    let threads = 6;
    let per_thread = 5;
    let barrier = Arc::new(Barrier::new(threads));
    let races = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (r, store, barrier, races) = (r.clone(), store.clone(), barrier.clone(), races.clone());
            thread::spawn(move || {
                for i in 0..per_thread {
                    // Each round starts together, so admissions overlap.
                    barrier.wait();
                    let svc = set(service(&format!("svc-{t}-{i}")), "/spec/type", json!("NodePort"));
                    loop {
                        let (object, ops) = create_in(r.as_ref(), store.as_ref(), &SERVICE, svc.clone()).unwrap();
                        match commit(store.as_ref(), &SERVICE, &object, ops) {
                            Ok(_) => break,
                            Err(e) if is_allocation_race(&e) => {
                                races.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (services, _) = store.list(&store_prefix(&SERVICE, None)).unwrap();
    assert_eq!(services.len(), threads * per_thread);
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for (_, stored) in &services {
        let object: Value = serde_json::from_slice(&stored.value).unwrap();
        assert!(ips.insert(object["spec"]["clusterIP"].as_str().unwrap().to_owned()), "address handed out twice");
        assert!(ports.insert(object["spec"]["ports"][0]["nodePort"].as_i64().unwrap()), "node port handed out twice");
    }
    assert_eq!(records(store.as_ref(), SERVICE_IPS_PREFIX).len(), threads * per_thread);
    assert_eq!(records(store.as_ref(), NODE_PORTS_PREFIX).len(), threads * per_thread);
    eprintln!("allocation races retried: {}", races.load(std::sync::atomic::Ordering::Relaxed));
}

#[test]
fn a_lost_allocation_race_is_retried_and_sees_the_winner() {
    // One node port: two admissions that read the same state both pick it.
    let config = ResourcesConfig {
        service_cidr: "198.19.0.0/28".parse().unwrap(),
        node_port_range: NodePortRange::new(30000..=30000).unwrap(),
    };
    let r = Resources::new(config);
    let store = mem();
    let node_port = |name: &str| set(service(name), "/spec/type", json!("NodePort"));
    let (a, a_ops) = create_in(&r, &store, &SERVICE, node_port("a")).unwrap();
    let (b, b_ops) = create_in(&r, &store, &SERVICE, node_port("b")).unwrap();
    assert_eq!(a["spec"]["ports"][0]["nodePort"], 30000);
    assert_eq!(b["spec"]["ports"][0]["nodePort"], 30000);
    commit(&store, &SERVICE, &a, a_ops).unwrap();
    let err = commit(&store, &SERVICE, &b, b_ops).unwrap_err();
    assert!(is_allocation_race(&err), "{err}");
    // Nothing of b was stored.
    assert!(store.get(&store_key(&SERVICE, Some("default"), "b")).unwrap().is_none());
    assert_eq!(records(&store, SERVICE_IPS_PREFIX).len(), 1);
    // Admitted again, b sees the port taken.
    match create_in(&r, &store, &SERVICE, node_port("b")) {
        Err(Rejection::Conflict(message)) => assert_eq!(message, "failed to allocate a nodePort: range is full"),
        other => panic!("{other:?}"),
    }
}

// ---- Nodes and namespaces -----------------------------------------------------

#[test]
fn node_rules() {
    let object = admitted(&NODE, node());
    assert_eq!(object["status"]["capacity"]["cpu"], "4");
    let errors =
        invalid(&NODE, set(node(), "/status/allocatable", json!({"cpu": "lots", "memory": "-1", "bad key!": "1"})));
    assert_error(
        &errors,
        "status.allocatable[cpu]",
        "Invalid value: \"lots\": quantities must match the regular expression",
    );
    assert_error(&errors, "status.allocatable[memory]", "Invalid value: \"-1\": must be greater than or equal to 0");
    assert_error(&errors, "status.allocatable[bad key!]", "name part must consist");
    assert_refused(
        &NODE,
        set(node(), "/spec/taints", json!([{"key": "dedicated", "effect": "Sometimes"}])),
        "spec.taints[0].effect",
        "Unsupported value: \"Sometimes\"",
    );
    let status: k8s_openapi::api::core::v1::NodeStatus =
        serde_json::from_value(json!({"capacity": {"cpu": "x"}})).unwrap();
    assert_eq!(validate_node_status(&status).len(), 1);
}

#[test]
fn namespace_rules() {
    admitted(&NAMESPACE, namespace("prod"));
    assert_refused(&NAMESPACE, namespace("Prod"), "metadata.name", "RFC 1123 label");
}

// ---- Quantities ---------------------------------------------------------------

#[test]
fn quantities() {
    let cpu = [
        ("500m", 500),
        ("1", 1000),
        ("0.5", 500),
        (".5", 500),
        ("1.", 1000),
        ("2k", 2_000_000),
        ("0.1m", 1),
        ("100u", 1),
        ("1e3", 1_000_000),
        ("0", 0),
        ("+1", 1000),
        ("-0", 0),
    ];
    for (text, millis) in cpu {
        assert_eq!(parse_cpu(text), Ok(millis), "{text}");
    }
    let memory = [
        ("64Mi", 64 << 20),
        ("1G", 1_000_000_000),
        ("128974848", 128_974_848),
        ("129e6", 129_000_000),
        ("129M", 129_000_000),
        ("123Mi", 123 << 20),
        ("1Ki", 1024),
        ("1.5Gi", 3 << 29),
        ("0.5", 1),
        ("1E", 1_000_000_000_000_000_000),
        ("8Ei", 8 << 60),
    ];
    for (text, bytes) in memory {
        assert_eq!(parse_memory(text), Ok(bytes), "{text}");
    }
    for bad in ["", ".", "+", "1x", "1 Mi", "Mi", "1e", "1e+", "1.2.3", "0x10", "1mi"] {
        assert_eq!(parse_memory(bad), Err(QuantityError::Syntax), "{bad:?}");
    }
    assert_eq!(parse_cpu("-1"), Err(QuantityError::Negative));
    assert_eq!(parse_memory("16Ei"), Err(QuantityError::TooLarge));
    assert_eq!(parse_memory("1e400"), Err(QuantityError::TooLarge));
    assert_eq!(parse_memory(&"1".repeat(39)), Err(QuantityError::TooPrecise));
}

// ---- Selectors ----------------------------------------------------------------

#[test]
fn selectors_match() {
    let labels: BTreeMap<String, String> =
        [("app", "web"), ("tier", "front")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let req = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    };
    let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        match_expressions: Some(exprs),
    };
    assert!(selector_matches(&LabelSelector::default(), &labels));
    assert!(selector_matches(&sel(&[("app", "web")], vec![]), &labels));
    assert!(!selector_matches(&sel(&[("app", "api")], vec![]), &labels));
    assert!(!selector_matches(&sel(&[("app", "web"), ("env", "prod")], vec![]), &labels));
    assert!(selector_matches(&sel(&[], vec![req("app", "In", &["web", "api"])]), &labels));
    assert!(!selector_matches(&sel(&[], vec![req("app", "In", &["api"])]), &labels));
    assert!(!selector_matches(&sel(&[], vec![req("env", "In", &["prod"])]), &labels));
    assert!(selector_matches(&sel(&[], vec![req("app", "NotIn", &["api"])]), &labels));
    assert!(selector_matches(&sel(&[], vec![req("env", "NotIn", &["prod"])]), &labels));
    assert!(!selector_matches(&sel(&[], vec![req("app", "NotIn", &["web"])]), &labels));
    assert!(selector_matches(&sel(&[], vec![req("tier", "Exists", &[])]), &labels));
    assert!(!selector_matches(&sel(&[], vec![req("env", "Exists", &[])]), &labels));
    assert!(selector_matches(&sel(&[], vec![req("env", "DoesNotExist", &[])]), &labels));
    assert!(!selector_matches(&sel(&[], vec![req("app", "DoesNotExist", &[])]), &labels));
    assert!(!selector_matches(&sel(&[], vec![req("app", "Near", &["web"])]), &labels));
    assert!(selector_matches(
        &sel(&[("app", "web")], vec![req("tier", "In", &["front"]), req("env", "DoesNotExist", &[])]),
        &labels
    ));
}

// ---- Config -------------------------------------------------------------------

#[test]
fn ranges_parse() {
    let cidr: ServiceCidr = "198.19.0.0/16".parse().unwrap();
    assert_eq!(cidr, ServiceCidr::default());
    assert_eq!(cidr.to_string(), "198.19.0.0/16");
    assert_eq!(cidr.capacity(), 65534);
    assert!(cidr.contains(Ipv4Addr::new(198, 19, 0, 1)));
    assert!(!cidr.contains(Ipv4Addr::new(198, 19, 0, 0)));
    assert!(!cidr.contains(Ipv4Addr::new(198, 20, 0, 1)));
    for bad in ["198.19.0.1/16", "198.19.0.0/31", "10.0.0.0/8", "198.19.0.0", "fd00::/64", "x/16"] {
        assert!(bad.parse::<ServiceCidr>().is_err(), "{bad}");
    }
    let range: NodePortRange = "30000-32767".parse().unwrap();
    assert_eq!(range, NodePortRange::default());
    assert_eq!(range.to_string(), "30000-32767");
    assert!("32767-30000".parse::<NodePortRange>().is_err());
    assert!("0-10".parse::<NodePortRange>().is_err());
    assert!(NodePortRange::new(30000..=30000).is_ok());
}

#[test]
fn allocation_races_are_recognised() {
    let race = StoreError::AlreadyExists { key: format!("{SERVICE_IPS_PREFIX}198.19.0.1"), revision: 3 };
    assert!(is_allocation_race(&race));
    let object = StoreError::AlreadyExists { key: "/registry/services/default/web".into(), revision: 3 };
    assert!(!is_allocation_race(&object));
}

// ---- Properties -----------------------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "spec",
            "status",
            "name",
            "namespace",
            "labels",
            "annotations",
            "generateName",
            "uid",
            "containers",
            "image",
            "ports",
            "port",
            "containerPort",
            "targetPort",
            "nodePort",
            "protocol",
            "selector",
            "matchLabels",
            "matchExpressions",
            "operator",
            "values",
            "key",
            "template",
            "replicas",
            "strategy",
            "type",
            "rollingUpdate",
            "maxSurge",
            "maxUnavailable",
            "clusterIP",
            "clusterIPs",
            "sessionAffinity",
            "sessionAffinityConfig",
            "clientIP",
            "timeoutSeconds",
            "resources",
            "limits",
            "requests",
            "cpu",
            "memory",
            "capacity",
            "allocatable",
            "livenessProbe",
            "httpGet",
            "exec",
            "command",
            "berth.dev/weight",
            "berth.dev/lb-algorithm",
            "app",
            "env",
            "nodeName",
            "restartPolicy",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z./-]{0,8}",
    ];
    let leaf = arb_leaf();
    leaf.prop_recursive(5, 96, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Scalars, mostly of the kinds the API's fields take.
fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-70000i64..70000).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![
            "v1",
            "apps/v1",
            "Pod",
            "Service",
            "Deployment",
            "NodePort",
            "ClusterIP",
            "None",
            "TCP",
            "UDP",
            "web",
            "198.19.0.10",
            "10.0.0.1",
            "500m",
            "64Mi",
            "25%",
            "In",
            "Exists",
            "ClientIP",
            "RollingUpdate",
            "Recreate",
            "maglev",
            "",
        ])
        .prop_map(Value::from),
        "[a-z0-9.%-]{0,10}".prop_map(Value::from),
    ]
}

/// A valid object of each kind with one place replaced by `value`.
fn mutated(base: Value, pointer_index: usize, value: Value) -> Value {
    let mut pointers = Vec::new();
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                m.iter().for_each(|(k, v)| walk(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
            }
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, format!("{at}/{i}"), out)),
            _ => {}
        }
    }
    walk(&base, String::new(), &mut pointers);
    let pointer = &pointers[pointer_index % pointers.len()];
    if pointer.is_empty() {
        return value;
    }
    let mut base = base;
    *base.pointer_mut(pointer).unwrap() = value;
    base
}

/// A valid object with one scalar replaced by `value`.
fn mutated_leaf(base: Value, index: usize, value: Value) -> Value {
    let mut base = base;
    let mut pointers = Vec::new();
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                m.iter().for_each(|(k, v)| walk(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
            }
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, format!("{at}/{i}"), out)),
            _ => out.push(at),
        }
    }
    walk(&base, String::new(), &mut pointers);
    if let Some(pointer) = pointers.get(index % pointers.len().max(1)) {
        *base.pointer_mut(pointer).unwrap() = value;
    }
    base
}

fn bases() -> Vec<(KindInfo, Value)> {
    vec![
        (POD, pod()),
        (DEPLOYMENT, deployment()),
        (SERVICE, set(service("web"), "/spec/type", json!("NodePort"))),
        (NODE, node()),
        (NAMESPACE, namespace("prod")),
    ]
}

/// Admits `object` as each kind, as a create and as an update of a valid
/// object; nothing panics, and a refusal leaves `object` and the store as
/// they were.
fn admit_everywhere(r: &Resources, store: &dyn Store, object: &Value) {
    let revision = store.current_revision().unwrap();
    for (kind, base) in bases() {
        let old = admitted(&kind, base);
        for old in [None, Some(&old)] {
            let mut candidate = object.clone();
            match r.admit(&kind, &mut candidate, old, store) {
                Ok(_) => {
                    // What was admitted is admitted again as an update.
                    let mut again = candidate.clone();
                    r.admit(&kind, &mut again, Some(&candidate), store).unwrap();
                }
                Err(_) => assert_eq!(&candidate, object, "a refused object was changed"),
            }
            assert_eq!(store.current_revision().unwrap(), revision, "admission wrote to the store");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn admit_never_panics_on_arbitrary_json(value in arb_json()) {
        admit_everywhere(&rules(), &mem(), &value);
    }

    #[test]
    fn admit_never_panics_on_mutated_objects(which in 0usize..5, at in any::<usize>(), value in arb_json()) {
        let (_, base) = bases().swap_remove(which);
        admit_everywhere(&rules(), &mem(), &mutated(base, at, value));
    }

    #[test]
    fn admit_never_panics_on_objects_with_wrong_values(
        which in 0usize..5,
        changes in prop::collection::vec((any::<usize>(), arb_leaf()), 1..4),
    ) {
        let (_, mut object) = bases().swap_remove(which);
        for (at, value) in changes {
            object = mutated_leaf(object, at, value);
        }
        admit_everywhere(&rules(), &mem(), &object);
    }

    #[test]
    fn quantities_are_exact(n in 0u64..1_000_000_000, frac in 0u64..1000) {
        prop_assert_eq!(parse_cpu(&format!("{n}m")), Ok(n));
        prop_assert_eq!(parse_cpu(&format!("{n}")), Ok(n * 1000));
        prop_assert_eq!(parse_cpu(&format!("{n}.{frac:03}")), Ok(n * 1000 + frac));
        prop_assert_eq!(parse_memory(&format!("{n}Ki")), Ok(n * 1024));
        prop_assert_eq!(parse_memory(&format!("{n}k")), Ok(n * 1000));
        prop_assert_eq!(parse_memory(&format!("{n}e3")), Ok(n * 1000));
    }

    #[test]
    fn quantity_parsing_never_panics(text in "[-+0-9.eEimkKMGTPun]{0,12}") {
        let _ = parse_cpu(&text);
        let _ = parse_memory(&text);
    }
}
