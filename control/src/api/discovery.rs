//! The discovery documents kubectl reads before anything else: `/version`,
//! `/api`, `/apis`, and the resource list of each group version.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use hyper::Response;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;
use serde_json::{Value, json};

use super::admission::KindInfo;
use super::error::{Body, full};

/// The Kubernetes API version whose types (k8s-openapi `v1_34`) berth
/// serves.
const KUBE_MAJOR: &str = "1";
const KUBE_MINOR: &str = "34";

pub(super) fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+berth-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub(super) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }],
    })
}

/// The versions served in each named group.
fn group_versions(kinds: &[KindInfo]) -> Vec<(&'static str, BTreeSet<&'static str>)> {
    let mut groups: Vec<(&'static str, BTreeSet<&'static str>)> = Vec::new();
    for kind in kinds {
        let Some((group, version)) = kind.api_version.split_once('/') else { continue };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => {
                versions.insert(version);
            }
            None => groups.push((group, BTreeSet::from([version]))),
        }
    }
    groups
}

fn group_document(group: &str, versions: &BTreeSet<&str>) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v })).collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
        "versions": versions,
    })
}

pub(super) fn groups(kinds: &[KindInfo]) -> Value {
    let groups: Vec<Value> = group_versions(kinds).iter().map(|(g, v)| group_document(g, v)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub(super) fn group(kinds: &[KindInfo], group: &str) -> Option<Value> {
    group_versions(kinds).iter().find(|(g, _)| *g == group).map(|(g, v)| group_document(g, v))
}

/// kubectl's abbreviations (`kubectl get svc`), as kube-apiserver lists
/// them for its built-in resources.
fn short_names(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => &["po"],
        "services" => &["svc"],
        "deployments" => &["deploy"],
        "nodes" => &["no"],
        "namespaces" => &["ns"],
        "endpoints" => &["ep"],
        "replicasets" => &["rs"],
        "configmaps" => &["cm"],
        _ => &[],
    }
}

pub(super) fn resources(kinds: &[KindInfo], group_version: &str) -> Value {
    let resources: Vec<Value> = kinds
        .iter()
        .filter(|k| k.api_version == group_version)
        .map(|k| {
            let verbs: &[&str] = if k.read_only {
                &["get", "list", "watch"]
            } else {
                &["create", "delete", "get", "list", "patch", "update", "watch"]
            };
            json!({
                "name": k.resource,
                "shortNames": short_names(k.resource),
                "singularName": k.kind.to_ascii_lowercase(),
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": verbs,
            })
        })
        .collect();
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}

/// kubectl's protobuf media type for the OpenAPI v2 document.
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// An OpenAPI v2 document without schemas. kubectl downloads it to
/// validate manifests before sending them and fails when it is missing;
/// finding no schema for a kind, it leaves validation to the server, which
/// is where berth validates. Protobuf when asked for (an empty message is
/// the empty document), JSON otherwise.
pub(super) fn openapi_v2(parts: &Parts) -> Response<Body> {
    let accept = parts.headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (content_type, body) = if accept.contains(OPENAPI_V2_PROTOBUF) {
        (OPENAPI_V2_PROTOBUF, Vec::new())
    } else {
        let document = json!({
            "swagger": "2.0",
            "info": { "title": "berth", "version": version()["gitVersion"] },
            "paths": {},
            "definitions": {},
        });
        ("application/json", serde_json::to_vec(&document).unwrap_or_default())
    };
    let mut response = Response::new(full(body));
    // Go's MIME parser (kubectl) rejects the '@' of the requested type in a
    // Content-Type; kubectl reads the body raw either way.
    let content_type = if content_type == OPENAPI_V2_PROTOBUF { "application/octet-stream" } else { content_type };
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
