//! The endpoints planner: a Service's endpoints from the pods its selector
//! matches, with EndpointSlice's three conditions per address.
//!
//! # Design
//! For every pod the selector matches that has an IP (Kubernetes'
//! `endpointslice` controller):
//! - `serving`: the pod is ready — also while it terminates, so a load
//!   balancer may drain to it when nothing else serves (kube-proxy's
//!   ProxyTerminatingEndpoints, which berth's data plane implements);
//! - `terminating`: the pod is being deleted;
//! - `ready`: serving and not terminating, and its node is Ready (a node
//!   that lost its lease stops being an endpoint at once, before its pods
//!   are replaced).
//!
//! A `targetPort` given by name is looked up in each pod's container ports,
//! so pods of different versions may name the same port differently; a pod
//! without the named port is left out for that Service port, as kube does.
//! The pod's `berth.dev/weight` annotation travels with the address for the
//! data plane's weighted round-robin.
//!
//! # Limitations
//! One object per Service (no slicing into 100-endpoint chunks); IPv4 only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Service port's target: a number, or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub protocol: String,
    pub target: TargetPort,
}

/// What the planner needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// `None`: a Service without selector (endpoints managed by hand).
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Vec<ServicePort>,
}

/// What the planner needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Option<String>,
    pub node: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    /// Container ports: (name, port, protocol).
    pub ports: Vec<(String, u16, String)>,
    pub weight: Option<u32>,
}

/// One address of the endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub ip: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Service port name → the port on this pod.
    pub ports: BTreeMap<String, u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Whether every `selector` label is on the pod (a Service's selector is
/// equality-only). An empty selector matches nothing, as for Services.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The endpoints of `service`, sorted by pod; `node_ready` answers for a
/// node name (unknown nodes count as not ready).
pub fn plan(service: &ServiceView, pods: &[PodView], node_ready: impl Fn(&str) -> bool) -> Vec<Endpoint> {
    let Some(selector) = &service.selector else { return Vec::new() };
    let mut out: Vec<Endpoint> = pods
        .iter()
        .filter(|p| selects(selector, &p.labels))
        .filter_map(|p| {
            let ip = p.ip.clone()?;
            let ports: BTreeMap<String, u16> = service
                .ports
                .iter()
                .filter_map(|sp| {
                    let port = match &sp.target {
                        TargetPort::Number(n) => Some(*n),
                        TargetPort::Name(name) => p
                            .ports
                            .iter()
                            .find(|(n, _, proto)| n == name && proto.eq_ignore_ascii_case(&sp.protocol))
                            .map(|(_, port, _)| *port),
                    }?;
                    Some((sp.name.clone(), port))
                })
                .collect();
            if ports.is_empty() {
                return None;
            }
            let node_ok = p.node.as_deref().is_some_and(&node_ready);
            let serving = p.ready;
            Some(Endpoint {
                ip,
                pod: format!("{}/{}", p.namespace, p.name),
                node_name: p.node.clone(),
                ready: serving && !p.terminating && node_ok,
                serving: serving && node_ok,
                terminating: p.terminating,
                ports,
                weight: p.weight,
            })
        })
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn pod(name: &str, app: &str, ready: bool) -> PodView {
        PodView {
            namespace: "default".into(),
            name: name.into(),
            labels: labels(&[("app", app)]),
            ip: Some(format!("198.18.0.{}", name.len())),
            node: Some("n1".into()),
            ready,
            terminating: false,
            ports: vec![("http".into(), 8080, "TCP".into())],
            weight: None,
        }
    }

    fn service(target: TargetPort) -> ServiceView {
        ServiceView {
            selector: Some(labels(&[("app", "web")])),
            ports: vec![ServicePort { name: "http".into(), protocol: "TCP".into(), target }],
        }
    }

    #[test]
    fn conditions_follow_endpointslice() {
        let mut leaving = pod("leaving", "web", true);
        leaving.terminating = true;
        let pods = [pod("a", "web", true), pod("bb", "web", false), pod("other", "db", true), leaving];
        let eps = plan(&service(TargetPort::Name("http".into())), &pods, |_| true);
        let got: Vec<(&str, bool, bool, bool)> =
            eps.iter().map(|e| (e.pod.as_str(), e.ready, e.serving, e.terminating)).collect();
        assert_eq!(
            got,
            vec![
                ("default/a", true, true, false),
                ("default/bb", false, false, false),
                ("default/leaving", false, true, true),
            ]
        );
        assert_eq!(eps[0].ports.get("http"), Some(&8080));
    }

    #[test]
    fn a_lost_node_stops_its_pods_being_ready_at_once() {
        let eps = plan(&service(TargetPort::Number(8080)), &[pod("a", "web", true)], |n| n != "n1");
        assert!(!eps[0].ready && !eps[0].serving);
    }

    #[test]
    fn named_ports_resolve_per_pod_and_unresolvable_pods_are_left_out() {
        let mut renamed = pod("renamed", "web", true);
        renamed.ports = vec![("web".into(), 9090, "TCP".into())];
        let mut numbered = pod("n", "web", true);
        numbered.ports = vec![("http".into(), 9000, "TCP".into())];
        let eps = plan(&service(TargetPort::Name("http".into())), &[renamed, numbered], |_| true);
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ports.get("http"), Some(&9000));
    }

    #[test]
    fn no_selector_or_no_ip_means_no_endpoint() {
        let mut s = service(TargetPort::Number(80));
        let mut pending = pod("p", "web", false);
        pending.ip = None;
        assert!(plan(&s, &[pending], |_| true).is_empty());
        s.selector = None;
        assert!(plan(&s, &[pod("a", "web", true)], |_| true).is_empty());
        assert!(!selects(&BTreeMap::new(), &labels(&[("app", "web")])), "an empty selector selects nothing");
    }
}
