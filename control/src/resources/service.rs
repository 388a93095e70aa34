//! Services (`v1`, ClusterIP and NodePort): defaults, validation, and
//! ClusterIP and NodePort allocation (records in [`super::ranges`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{ClientIPConfig, Service, ServiceSpec, SessionAffinityConfig};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::{self, Errors};
use super::meta;
use super::names::{self, PORT_RANGE_MESSAGE};
use super::ranges::{self, NodePortRange, Owner, ServiceCidr};
use crate::api::admission::{FieldError, Rejection};
use crate::store::{Op, Store, StoreError};

/// Kubernetes' default ClientIP affinity timeout: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: i32 = 10_800;
/// The longest ClientIP affinity timeout: a day.
pub const MAX_AFFINITY_TIMEOUT_SECONDS: i32 = 86_400;
/// `clusterIP: None`: a headless Service, which gets no address.
pub const HEADLESS: &str = "None";
const TYPES: [&str; 2] = ["ClusterIP", "NodePort"];
const PROTOCOLS: [&str; 2] = ["TCP", "UDP"];
const AFFINITIES: [&str; 2] = ["ClientIP", "None"];
const IP_MESSAGE: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// The Service's `clusterIP` (or first `clusterIPs` entry), if set.
fn cluster_ip(spec: &ServiceSpec) -> Option<&str> {
    spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()).or_else(|| {
        spec.cluster_ips.as_ref().and_then(|ips| ips.first()).map(String::as_str).filter(|ip| !ip.is_empty())
    })
}

fn is_node_port(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("NodePort")
}

/// The node ports a Service holds.
fn node_ports(spec: &ServiceSpec) -> HashSet<u16> {
    if !is_node_port(spec) {
        return HashSet::new();
    }
    spec.ports.iter().flatten().filter_map(|p| p.node_port.and_then(|n| u16::try_from(n).ok())).collect()
}

/// Defaults and validates a Service's spec; on update, fills in the
/// allocated values a client left out (as Kubernetes does, so `apply` of the
/// original manifest keeps the address and ports) and refuses changes to
/// the ClusterIP.
pub(crate) fn validate(
    svc: &mut Service,
    old: Option<&Service>,
    cidr: &ServiceCidr,
    range: &NodePortRange,
    errs: &mut Errors,
) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    let old = old.and_then(|o| o.spec.as_ref());
    let kind = spec.type_.get_or_insert_with(|| "ClusterIP".to_owned());
    if !TYPES.contains(&kind.as_str()) {
        errs.unsupported("spec.type", kind, &TYPES);
    }
    if let Some(old) = old {
        patch_allocated(spec, old);
    }
    let node_port = is_node_port(spec);
    cluster_ips(spec, old, node_port, cidr, errs);
    families(spec, errs);
    ports(spec, old, node_port, range, errs);
    affinity(spec, errs);
    if let Some(selector) = &spec.selector {
        meta::validate_labels(selector, "spec.selector", errs);
    }
    traffic_policies(spec, old, node_port, errs);
    if spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported("spec.externalIPs", "external IPs");
    }
    if spec.external_name.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.forbidden("spec.externalName", "may only be used when `type` is 'ExternalName'");
    }
    let load_balancer = [
        ("loadBalancerIP", spec.load_balancer_ip.as_ref().is_some_and(|v| !v.is_empty())),
        ("loadBalancerSourceRanges", spec.load_balancer_source_ranges.as_ref().is_some_and(|v| !v.is_empty())),
        ("loadBalancerClass", spec.load_balancer_class.is_some()),
        ("allocateLoadBalancerNodePorts", spec.allocate_load_balancer_node_ports.is_some()),
        ("healthCheckNodePort", spec.health_check_node_port.is_some_and(|p| p != 0)),
    ];
    for (name, set) in load_balancer {
        if set {
            errs.forbidden(field::child("spec", name), "may only be used when `type` is 'LoadBalancer'");
        }
    }
}

/// Kubernetes' `patchAllocatedValues`: the ClusterIP, and NodePorts by
/// port name, from the stored Service when the update leaves them out.
fn patch_allocated(spec: &mut ServiceSpec, old: &ServiceSpec) {
    if cluster_ip(spec).is_none() {
        spec.cluster_ip.clone_from(&old.cluster_ip);
        spec.cluster_ips.clone_from(&old.cluster_ips);
    }
    if is_node_port(spec) && is_node_port(old) {
        let used: HashSet<i32> = spec.ports.iter().flatten().filter_map(|p| p.node_port).collect();
        let by_name: HashMap<Option<&str>, i32> = old
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.as_deref().filter(|n| !n.is_empty()), p.node_port?)))
            .collect();
        for port in spec.ports.iter_mut().flatten() {
            if port.node_port.is_none_or(|n| n == 0)
                && let Some(&n) = by_name.get(&port.name.as_deref().filter(|n| !n.is_empty()))
                && !used.contains(&n)
            {
                port.node_port = Some(n);
            }
        }
    }
}

fn cluster_ips(
    spec: &mut ServiceSpec,
    old: Option<&ServiceSpec>,
    node_port: bool,
    cidr: &ServiceCidr,
    errs: &mut Errors,
) {
    let ips = spec.cluster_ips.clone().unwrap_or_default();
    if let (Some(ip), Some(first)) = (spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()), ips.first())
        && ip != first
    {
        errs.invalid_str("spec.clusterIPs[0]", first, "must match `clusterIP` when set");
    }
    if ips.len() > 1 {
        errs.not_supported("spec.clusterIPs[1]", "dual-stack Services; berth serves IPv4 single-stack Services");
    }
    let Some(ip) = cluster_ip(spec).map(str::to_owned) else {
        // Allocated after validation.
        return;
    };
    spec.cluster_ip = Some(ip.clone());
    spec.cluster_ips = Some(vec![ip.clone()]);
    match old.and_then(cluster_ip) {
        Some(old) if old == ip => {}
        Some(_) => errs.invalid_str("spec.clusterIP", &ip, "field is immutable"),
        None if ip == HEADLESS => {
            if node_port {
                errs.invalid_str("spec.clusterIPs[0]", &ip, "may not be set to 'None' for NodePort services");
            }
        }
        None => match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                if !cidr.contains(v4) {
                    errs.invalid_str(
                        "spec.clusterIPs",
                        &ip,
                        format!("provided IP is not in the valid range. The range of valid IPs is {cidr}"),
                    );
                }
            }
            Ok(IpAddr::V6(_)) => errs.not_supported("spec.clusterIPs[0]", "IPv6 Services"),
            Err(_) => errs.invalid_str("spec.clusterIPs[0]", &ip, IP_MESSAGE),
        },
    }
}

fn families(spec: &mut ServiceSpec, errs: &mut Errors) {
    let families = spec.ip_families.get_or_insert_with(Vec::new);
    if families.is_empty() {
        families.push("IPv4".to_owned());
    }
    for (i, family) in families.iter().enumerate() {
        let path = field::index("spec.ipFamilies", i);
        match family.as_str() {
            "IPv4" if i == 0 => {}
            "IPv4" => errs.duplicate(path, field::quote(family)),
            "IPv6" => errs.not_supported(path, "IPv6 Services"),
            other => errs.unsupported(path, other, &["IPv4", "IPv6"]),
        }
    }
    let policy = spec.ip_family_policy.get_or_insert_with(|| "SingleStack".to_owned());
    match policy.as_str() {
        "SingleStack" | "PreferDualStack" => {}
        "RequireDualStack" => {
            errs.invalid_str("spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services");
        }
        other => {
            errs.unsupported("spec.ipFamilyPolicy", other, &["SingleStack", "PreferDualStack", "RequireDualStack"])
        }
    }
}

fn ports(spec: &mut ServiceSpec, old: Option<&ServiceSpec>, node_port: bool, range: &NodePortRange, errs: &mut Errors) {
    let headless = cluster_ip(spec) == Some(HEADLESS);
    let old_node_ports = old.map(node_ports).unwrap_or_default();
    let ports = spec.ports.get_or_insert_with(Vec::new);
    if ports.is_empty() && !headless {
        errs.required("spec.ports", "");
    }
    let multiple = ports.len() > 1;
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    let mut node_port_pairs = HashSet::new();
    for (i, port) in ports.iter_mut().enumerate() {
        let path = field::index("spec.ports", i);
        let p = |name: &str| field::child(&path, name);
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None if multiple => errs.required(p("name"), ""),
            None => {}
            Some(name) => {
                let problems = names::dns1123_label(name);
                if !problems.is_empty() {
                    errs.invalid_each(&p("name"), name, problems);
                } else if !names.insert(name.to_owned()) {
                    errs.duplicate(p("name"), field::quote(name));
                }
            }
        }
        if names::port_number(port.port).is_none() {
            errs.invalid(p("port"), port.port, PORT_RANGE_MESSAGE);
        }
        let protocol = port.protocol.get_or_insert_with(|| "TCP".to_owned()).clone();
        match protocol.as_str() {
            "TCP" | "UDP" => {
                if !pairs.insert((port.port, protocol.clone())) {
                    errs.duplicate(path.clone(), field::quote(&format!("{}/{protocol}", port.port)));
                }
            }
            "SCTP" => errs.not_supported(p("protocol"), "SCTP"),
            other => errs.unsupported(p("protocol"), other, &PROTOCOLS),
        }
        match &port.target_port {
            None | Some(IntOrString::Int(0)) => port.target_port = Some(IntOrString::Int(port.port)),
            Some(IntOrString::String(s)) if s.is_empty() => port.target_port = Some(IntOrString::Int(port.port)),
            Some(IntOrString::Int(n)) => {
                if names::port_number(*n).is_none() {
                    errs.invalid(p("targetPort"), n, PORT_RANGE_MESSAGE);
                }
            }
            Some(IntOrString::String(name)) => errs.invalid_each(&p("targetPort"), name, names::port_name(name)),
        }
        match port.node_port {
            None => {}
            Some(0) => port.node_port = None,
            Some(n) if !node_port => {
                // Switching a NodePort Service to ClusterIP drops the ports
                // it held, as Kubernetes does.
                if u16::try_from(n).is_ok_and(|n| old_node_ports.contains(&n)) {
                    port.node_port = None;
                } else {
                    errs.forbidden(p("nodePort"), "may not be used when `type` is 'ClusterIP'");
                }
            }
            Some(n) => {
                let held = u16::try_from(n).is_ok_and(|n| old_node_ports.contains(&n));
                if !held && !u16::try_from(n).is_ok_and(|n| range.contains(n)) {
                    errs.invalid(
                        p("nodePort"),
                        n,
                        format!("provided port is not in the valid range. The range of valid ports is {range}"),
                    );
                } else if !node_port_pairs.insert((n, protocol.clone())) {
                    errs.duplicate(p("nodePort"), n);
                }
            }
        }
    }
}

fn affinity(spec: &mut ServiceSpec, errs: &mut Errors) {
    let affinity = spec.session_affinity.get_or_insert_with(|| "None".to_owned());
    match affinity.as_str() {
        "None" => {
            if spec.session_affinity_config.is_some() {
                errs.invalid(
                    "spec.sessionAffinityConfig",
                    serde_json::to_string(&spec.session_affinity_config).unwrap_or_default(),
                    "must not be set when session affinity is None",
                );
            }
        }
        "ClientIP" => {
            let config = spec.session_affinity_config.get_or_insert_with(SessionAffinityConfig::default);
            let client = config.client_ip.get_or_insert_with(ClientIPConfig::default);
            let timeout = *client.timeout_seconds.get_or_insert(DEFAULT_AFFINITY_TIMEOUT_SECONDS);
            if !(1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(&timeout) {
                errs.invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    timeout,
                    format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT_SECONDS}"),
                );
            }
        }
        other => errs.unsupported("spec.sessionAffinity", other, &AFFINITIES),
    }
}

/// berth's data plane spreads traffic over every backend of a Service, so
/// only the `Cluster` policies are honoured.
fn traffic_policies(spec: &mut ServiceSpec, old: Option<&ServiceSpec>, node_port: bool, errs: &mut Errors) {
    let internal = spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".to_owned());
    match internal.as_str() {
        "Cluster" => {}
        "Local" => errs.not_supported("spec.internalTrafficPolicy", "node-local routing"),
        other => errs.unsupported("spec.internalTrafficPolicy", other, &["Cluster", "Local"]),
    }
    if node_port {
        let external = spec.external_traffic_policy.get_or_insert_with(|| "Cluster".to_owned());
        match external.as_str() {
            "Cluster" => {}
            "Local" => errs.not_supported("spec.externalTrafficPolicy", "node-local routing"),
            other => errs.unsupported("spec.externalTrafficPolicy", other, &["Cluster", "Local"]),
        }
    } else if let Some(external) = spec.external_traffic_policy.clone().filter(|p| !p.is_empty()) {
        if old.and_then(|o| o.external_traffic_policy.as_deref()) == Some(external.as_str()) {
            // Left over from a NodePort Service turned ClusterIP.
            spec.external_traffic_policy = None;
        } else {
            errs.invalid_str(
                "spec.externalTrafficPolicy",
                &external,
                "may only be set for externally-accessible services",
            );
        }
    }
}

fn store_error(e: StoreError) -> Rejection {
    Rejection::Conflict(format!("reading the allocation records: {e}"))
}

/// Allocates what the (validated) Service needs and the old one did not
/// have, and releases what the old one held and the new one does not.
/// Returns the record operations for the API server's transaction.
pub(crate) fn allocate(
    svc: &mut Service,
    old: Option<&Service>,
    owner: &Owner,
    cidr: &ServiceCidr,
    range: &NodePortRange,
    store: &dyn Store,
    random: &mut dyn FnMut() -> u64,
) -> Result<Vec<Op>, Rejection> {
    let mut ops = Vec::new();
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    let old = old.and_then(|o| o.spec.as_ref());
    let record = || owner.to_bytes();

    match cluster_ip(spec).map(str::to_owned) {
        None => {
            let taken = ranges::taken_ips(store).map_err(store_error)?;
            let ip = ranges::pick_ip(cidr, &taken, random())
                .ok_or_else(|| Rejection::Conflict("failed to allocate a serviceIP: range is full".to_owned()))?;
            spec.cluster_ip = Some(ip.to_string());
            spec.cluster_ips = Some(vec![ip.to_string()]);
            ops.push(Op::Create { key: ranges::ip_key(ip), value: record() });
        }
        Some(ip) if ip == HEADLESS || old.and_then(cluster_ip) == Some(ip.as_str()) => {}
        Some(ip) => {
            // Validation accepted it, so it parses.
            let v4: Ipv4Addr =
                ip.parse().map_err(|_| invalid("spec.clusterIPs[0]", format!("{ip:?}: {IP_MESSAGE}")))?;
            if store.get(&ranges::ip_key(v4)).map_err(store_error)?.is_some() {
                return Err(invalid(
                    "spec.clusterIPs",
                    format!("{ip:?}: failed to allocate IP {ip}: provided IP is already allocated"),
                ));
            }
            ops.push(Op::Create { key: ranges::ip_key(v4), value: record() });
        }
    }

    let old_ports = old.map(node_ports).unwrap_or_default();
    let mut new_ports = HashSet::new();
    if is_node_port(spec) {
        let ports = spec.ports.get_or_insert_with(Vec::new);
        let mut errs = Errors::default();
        // By Service port number: TCP and UDP on one port share a node port.
        let mut by_port: BTreeMap<i32, i32> = BTreeMap::new();
        for (i, port) in ports.iter().enumerate() {
            let Some(n) = port.node_port.and_then(|n| u16::try_from(n).ok()) else { continue };
            by_port.insert(port.port, i32::from(n));
            if !new_ports.insert(n) || old_ports.contains(&n) {
                continue;
            }
            if store.get(&ranges::port_key(n)).map_err(store_error)?.is_some() {
                errs.invalid(
                    field::child(&field::index("spec.ports", i), "nodePort"),
                    n,
                    "provided port is already allocated",
                );
            } else {
                ops.push(Op::Create { key: ranges::port_key(n), value: record() });
            }
        }
        errs.into_result()?;
        let mut taken: Option<HashSet<u16>> = None;
        for port in ports.iter_mut().filter(|p| p.node_port.is_none()) {
            if let Some(&n) = by_port.get(&port.port) {
                port.node_port = Some(n);
                continue;
            }
            let taken = match &mut taken {
                Some(taken) => taken,
                None => {
                    let mut listed = ranges::taken_ports(store).map_err(store_error)?;
                    listed.extend(&old_ports);
                    listed.extend(&new_ports);
                    taken.insert(listed)
                }
            };
            let n = ranges::pick_port(range, taken, random())
                .ok_or_else(|| Rejection::Conflict("failed to allocate a nodePort: range is full".to_owned()))?;
            taken.insert(n);
            new_ports.insert(n);
            by_port.insert(port.port, i32::from(n));
            port.node_port = Some(i32::from(n));
            ops.push(Op::Create { key: ranges::port_key(n), value: record() });
        }
    }
    let mut released: Vec<u16> = old_ports.difference(&new_ports).copied().collect();
    released.sort_unstable();
    ops.extend(released.into_iter().filter_map(|n| ranges::release(store, ranges::port_key(n), owner)));
    Ok(ops)
}

fn invalid(field: &str, rest: String) -> Rejection {
    Rejection::Invalid(vec![FieldError { field: field.to_owned(), reason: format!("Invalid value: {rest}") }])
}

/// The deletes of every record the Service holds.
pub(crate) fn release(svc: &Service, owner: &Owner, store: &dyn Store) -> Vec<Op> {
    let Some(spec) = &svc.spec else { return Vec::new() };
    let mut ops = Vec::new();
    if let Some(ip) = cluster_ip(spec).and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
        ops.extend(ranges::release(store, ranges::ip_key(ip), owner));
    }
    let mut ports: Vec<u16> = node_ports(spec).into_iter().collect();
    ports.sort_unstable();
    ops.extend(ports.into_iter().filter_map(|n| ranges::release(store, ranges::port_key(n), owner)));
    ops
}
