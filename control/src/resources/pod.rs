//! Pods and pod templates: defaults and validation.
//!
//! The rules are Kubernetes' (`pkg/apis/core/validation`), plus the features
//! berth's agent refuses to run (`agent/src/pod/manifest.rs`): accepting a
//! pod that no node can run would leave it failing forever, so those are
//! refused here with `Forbidden: is not supported by berth (…)`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec, PodStatus, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::{self, Errors};
use super::meta::{self, BerthAnnotations};
use super::names::{self, PORT_RANGE_MESSAGE};
use super::quantity::{self, QuantityError};

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;
const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const PROTOCOLS: [&str; 2] = ["TCP", "UDP"];
/// Kubernetes' bound on user and group ids.
const MAX_ID: i64 = 2_147_483_647;

/// Where a pod spec sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A Pod object.
    Pod,
    /// The template of a workload (a Deployment): its pods are replaced,
    /// never restarted in place, so only `restartPolicy: Always` makes sense.
    Template,
}

/// The status of a new pod: Pending, until it is scheduled and run.
pub(crate) fn new_status() -> PodStatus {
    PodStatus { phase: Some("Pending".to_owned()), ..PodStatus::default() }
}

/// Defaults and validates a pod template (`path` = `spec.template`).
pub(crate) fn template(template: &mut PodTemplateSpec, path: &str, errs: &mut Errors) {
    let meta_path = field::child(path, "metadata");
    if let Some(meta) = &template.metadata {
        if let Some(labels) = &meta.labels {
            meta::validate_labels(labels, &field::child(&meta_path, "labels"), errs);
        }
        if let Some(annotations) = &meta.annotations {
            meta::validate_annotations(
                annotations,
                &field::child(&meta_path, "annotations"),
                BerthAnnotations::Pod,
                errs,
            );
        }
    }
    let spec_path = field::child(path, "spec");
    match &mut template.spec {
        Some(spec) => pod_spec(spec, &spec_path, Owner::Template, errs),
        None => errs.required(field::child(&spec_path, "containers"), ""),
    }
}

/// Defaults and validates a pod's spec at `path`.
pub(crate) fn pod_spec(spec: &mut PodSpec, path: &str, owner: Owner, errs: &mut Errors) {
    let p = |name: &str| field::child(path, name);
    unsupported_pod_features(spec, path, errs);
    for (name, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            errs.invalid_each(&p(name), value, names::dns1123_label(value));
        }
    }
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        errs.invalid_each(&p("nodeName"), node, names::dns1123_subdomain(node));
    }
    let restart = spec.restart_policy.get_or_insert_with(|| "Always".to_owned());
    match (owner, restart.as_str()) {
        (Owner::Template, "Always") | (Owner::Pod, "Always" | "OnFailure" | "Never") => {}
        (Owner::Template, other) => errs.unsupported(p("restartPolicy"), other, &["Always"]),
        (Owner::Pod, other) => errs.unsupported(p("restartPolicy"), other, &RESTART_POLICIES),
    }
    let grace = *spec.termination_grace_period_seconds.get_or_insert(DEFAULT_TERMINATION_GRACE_SECONDS);
    if grace < 0 {
        errs.invalid(p("terminationGracePeriodSeconds"), grace, "must be greater than or equal to 0");
    }
    if let Some(sc) = &spec.security_context {
        pod_security(sc, &p("securityContext"), errs);
    }
    let containers_path = p("containers");
    if spec.containers.is_empty() {
        errs.required(&containers_path, "");
    }
    let pod_non_root = spec.security_context.as_ref().and_then(|sc| sc.run_as_non_root);
    let pod_user = spec.security_context.as_ref().and_then(|sc| sc.run_as_user);
    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let path = field::index(&containers_path, i);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            errs.duplicate(field::child(&path, "name"), field::quote(&c.name));
        }
        container(c, &path, errs);
        let non_root = c.security_context.as_ref().and_then(|sc| sc.run_as_non_root).or(pod_non_root);
        let user = c.security_context.as_ref().and_then(|sc| sc.run_as_user).or(pod_user);
        if non_root == Some(true) && user == Some(0) {
            errs.forbidden(
                field::child(&path, "securityContext.runAsUser"),
                "runAsUser 0 breaks the runAsNonRoot policy",
            );
        }
    }
}

/// Pod-level fields berth's agent cannot honour.
fn unsupported_pod_features(spec: &PodSpec, path: &str, errs: &mut Errors) {
    let p = |name: &str| field::child(path, name);
    let lists = [
        ("initContainers", spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()), "init containers"),
        (
            "ephemeralContainers",
            spec.ephemeral_containers.as_ref().is_some_and(|v| !v.is_empty()),
            "ephemeral containers",
        ),
        ("volumes", spec.volumes.as_ref().is_some_and(|v| !v.is_empty()), "volumes"),
        ("readinessGates", spec.readiness_gates.as_ref().is_some_and(|v| !v.is_empty()), "readiness gates"),
        ("resourceClaims", spec.resource_claims.as_ref().is_some_and(|v| !v.is_empty()), "dynamic resource allocation"),
        ("resources", spec.resources.is_some(), "pod-level resources; set them per container"),
        ("hostAliases", spec.host_aliases.as_ref().is_some_and(|v| !v.is_empty()), "/etc/hosts entries"),
        ("hostNetwork", spec.host_network == Some(true), "the host's network namespace"),
        ("hostPID", spec.host_pid == Some(true), "the host's PID namespace"),
        ("hostIPC", spec.host_ipc == Some(true), "the host's IPC namespace"),
        ("shareProcessNamespace", spec.share_process_namespace == Some(true), "a shared PID namespace"),
        ("setHostnameAsFQDN", spec.set_hostname_as_fqdn == Some(true), "FQDN hostnames"),
        ("hostUsers", spec.host_users == Some(false), "user namespaces"),
        ("hostnameOverride", spec.hostname_override.is_some(), "hostname overrides; use spec.hostname"),
        ("activeDeadlineSeconds", spec.active_deadline_seconds.is_some(), "deadlines"),
    ];
    for (name, set, what) in lists {
        if set {
            errs.not_supported(p(name), what);
        }
    }
}

fn pod_security(sc: &PodSecurityContext, path: &str, errs: &mut Errors) {
    identity(path, sc.run_as_user, sc.run_as_group, errs);
    if sc.supplemental_groups.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported(field::child(path, "supplementalGroups"), "supplementary groups");
    }
    if sc.sysctls.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported(field::child(path, "sysctls"), "sysctls");
    }
    confinement(
        path,
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
        sc.se_linux_options.is_some(),
        errs,
    );
}

fn container_security(sc: &SecurityContext, path: &str, errs: &mut Errors) {
    identity(path, sc.run_as_user, sc.run_as_group, errs);
    if sc.privileged == Some(true) {
        errs.not_supported(field::child(path, "privileged"), "privileged containers");
    }
    if sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_some_and(|add| !add.is_empty()) {
        errs.not_supported(field::child(path, "capabilities.add"), "adding capabilities");
    }
    if sc.read_only_root_filesystem == Some(true) {
        errs.not_supported(field::child(path, "readOnlyRootFilesystem"), "read-only root filesystems");
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        errs.not_supported(field::child(path, "procMount"), "an unmasked /proc");
    }
    confinement(
        path,
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
        sc.se_linux_options.is_some(),
        errs,
    );
}

/// Confinement berth does not apply: only `Unconfined` (what berth does)
/// is accepted.
fn confinement(path: &str, seccomp: Option<&str>, apparmor: Option<&str>, selinux: bool, errs: &mut Errors) {
    if seccomp.is_some_and(|t| t != "Unconfined") {
        errs.not_supported(field::child(path, "seccompProfile"), "berth applies no seccomp filter; only Unconfined");
    }
    if apparmor.is_some_and(|t| t != "Unconfined") {
        errs.not_supported(field::child(path, "appArmorProfile"), "berth applies no AppArmor profile; only Unconfined");
    }
    if selinux {
        errs.not_supported(field::child(path, "seLinuxOptions"), "SELinux labels");
    }
}

fn identity(path: &str, user: Option<i64>, group: Option<i64>, errs: &mut Errors) {
    for (name, value) in [("runAsUser", user), ("runAsGroup", group)] {
        if let Some(v) = value.filter(|v| !(0..=MAX_ID).contains(v)) {
            errs.invalid(field::child(path, name), v, format!("must be between 0 and {MAX_ID}, inclusive"));
        }
    }
}

fn container(c: &mut Container, path: &str, errs: &mut Errors) {
    let p = |name: &str| field::child(path, name);
    if c.name.is_empty() {
        errs.required(p("name"), "");
    } else {
        errs.invalid_each(&p("name"), &c.name, names::dns1123_label(&c.name));
    }
    match c.image.as_deref().unwrap_or_default() {
        "" => errs.required(p("image"), ""),
        image if image.trim() != image => {
            errs.invalid_str(p("image"), image, "must not have leading or trailing whitespace");
        }
        image => {
            let default = default_pull_policy(image);
            let policy = c.image_pull_policy.get_or_insert_with(|| default.to_owned());
            if !PULL_POLICIES.contains(&policy.as_str()) {
                errs.unsupported(p("imagePullPolicy"), policy, &PULL_POLICIES);
            }
        }
    }
    for (name, list) in [("command", &c.command), ("args", &c.args)] {
        for (i, arg) in list.iter().flatten().enumerate() {
            if arg.contains('\0') {
                errs.invalid_str(field::index(&p(name), i), arg, "must not contain a NUL byte");
            }
        }
    }
    if let Some(dir) = c.working_dir.as_deref().filter(|d| !d.is_empty())
        && (!dir.starts_with('/') || dir.contains('\0'))
    {
        errs.invalid_str(p("workingDir"), dir, "must be an absolute path");
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let path = field::index(&p("env"), i);
        if var.name.is_empty() {
            errs.required(field::child(&path, "name"), "");
        } else if !var.name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'=') {
            errs.invalid_str(
                field::child(&path, "name"),
                &var.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        if var.value_from.is_some() {
            errs.not_supported(
                field::child(&path, "valueFrom"),
                "values from secrets, config maps or the downward API",
            );
        }
        if let Some(value) = var.value.as_deref().filter(|v| v.contains('\0')) {
            errs.invalid_str(field::child(&path, "value"), value, "must not contain a NUL byte");
        }
    }
    if c.env_from.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported(p("envFrom"), "environment from config maps and secrets");
    }
    ports(c.ports.iter_mut().flatten(), path, errs);
    if let Some(resources) = &mut c.resources {
        container_resources(resources, &p("resources"), errs);
    }
    if c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some() || l.pre_stop.is_some()) {
        errs.not_supported(p("lifecycle"), "postStart and preStop hooks");
    }
    if c.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported(p("volumeMounts"), "volumes");
    }
    if c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported(p("volumeDevices"), "volumes");
    }
    if c.restart_policy.is_some() || c.restart_policy_rules.as_ref().is_some_and(|v| !v.is_empty()) {
        errs.not_supported(p("restartPolicy"), "per-container restart policies");
    }
    if let Some(sc) = &c.security_context {
        container_security(sc, &p("securityContext"), errs);
    }
    let port_names: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|port| port.name.clone().filter(|n| !n.is_empty()).map(|n| (n, port.container_port)))
        .collect();
    for (name, probe, kind) in [
        ("livenessProbe", &mut c.liveness_probe, ProbeKind::Liveness),
        ("readinessProbe", &mut c.readiness_probe, ProbeKind::Readiness),
        ("startupProbe", &mut c.startup_probe, ProbeKind::Startup),
    ] {
        if let Some(probe) = probe {
            self::probe(probe, &p(name), kind, &port_names, errs);
        }
    }
}

/// Kubernetes' default: `Always` for `:latest` or an untagged image,
/// `IfNotPresent` for a tag or digest.
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a registry may
    // have a port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn ports<'a>(ports: impl Iterator<Item = &'a mut ContainerPort>, path: &str, errs: &mut Errors) {
    let mut names = HashSet::new();
    for (i, port) in ports.enumerate() {
        let path = field::index(&field::child(path, "ports"), i);
        let p = |name: &str| field::child(&path, name);
        if names::port_number(port.container_port).is_none() {
            errs.invalid(p("containerPort"), port.container_port, PORT_RANGE_MESSAGE);
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let problems = names::port_name(name);
            if !problems.is_empty() {
                errs.invalid_each(&p("name"), name, problems);
            } else if !names.insert(name.to_owned()) {
                errs.duplicate(p("name"), field::quote(name));
            }
        }
        match port.protocol.get_or_insert_with(|| "TCP".to_owned()).as_str() {
            "TCP" | "UDP" => {}
            "SCTP" => errs.not_supported(p("protocol"), "SCTP"),
            other => errs.unsupported(p("protocol"), other, &PROTOCOLS),
        }
        match port.host_port {
            Some(0) => port.host_port = None,
            Some(host) if names::port_number(host).is_none() => errs.invalid(p("hostPort"), host, PORT_RANGE_MESSAGE),
            _ => {}
        }
        if let Some(ip) = port.host_ip.as_deref().filter(|ip| !ip.is_empty())
            && ip.parse::<IpAddr>().is_err()
        {
            errs.invalid_str(p("hostIP"), ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
        }
    }
}

/// The resources a container may name, and how each parses.
fn container_resources(r: &mut ResourceRequirements, path: &str, errs: &mut Errors) {
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        errs.not_supported(field::child(path, "claims"), "dynamic resource allocation");
    }
    let mut parsed: [[Option<u64>; 2]; 2] = [[None; 2]; 2]; // [limits, requests][cpu, memory]
    for (which, (name, map)) in [("limits", &r.limits), ("requests", &r.requests)].into_iter().enumerate() {
        for (resource, q) in map.iter().flatten() {
            let p = field::key(&field::child(path, name), resource);
            let slot = match resource.as_str() {
                "cpu" => 0,
                "memory" => 1,
                _ => {
                    errs.not_supported(p, "berth manages cpu and memory only");
                    continue;
                }
            };
            match parse_resource(resource, &q.0) {
                Ok(v) => parsed[which][slot] = Some(v),
                Err(e) => errs.invalid_str(p, &q.0, e),
            }
        }
    }
    for (slot, resource) in ["cpu", "memory"].into_iter().enumerate() {
        if let (Some(limit), Some(request)) = (parsed[0][slot], parsed[1][slot])
            && request > limit
        {
            let limit_text = r.limits.as_ref().and_then(|l| l.get(resource)).map(|q| q.0.clone()).unwrap_or_default();
            let request_text =
                r.requests.as_ref().and_then(|l| l.get(resource)).map(|q| q.0.clone()).unwrap_or_default();
            errs.invalid_str(
                field::key(&field::child(path, "requests"), resource),
                &request_text,
                format!("must be less than or equal to {resource} limit of {limit_text}"),
            );
        }
    }
    // The API server defaults a missing request to the limit.
    if let Some(limits) = &r.limits {
        let requests = r.requests.get_or_insert_with(BTreeMap::new);
        for (resource, limit) in limits {
            if ["cpu", "memory"].contains(&resource.as_str()) && !requests.contains_key(resource) {
                requests.insert(resource.clone(), Quantity(limit.0.clone()));
            }
        }
    }
}

/// A quantity of `resource`: millicores for `cpu`, whole units otherwise.
pub(crate) fn parse_resource(resource: &str, text: &str) -> Result<u64, QuantityError> {
    if resource == "cpu" { quantity::parse_cpu(text) } else { quantity::parse_memory(text) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn probe(probe: &mut Probe, path: &str, kind: ProbeKind, ports: &BTreeMap<String, i32>, errs: &mut Errors) {
    let p = |name: &str| field::child(path, name);
    let handlers = [
        ("exec", probe.exec.is_some()),
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("grpc", probe.grpc.is_some()),
    ];
    let mut given = handlers.iter().filter(|(_, set)| *set).map(|(name, _)| *name);
    match (given.next(), given.next()) {
        (None, _) => errs.required(path, "must specify a handler type"),
        (Some(_), Some(second)) => errs.forbidden(p(second), "may not specify more than 1 handler type"),
        (Some(_), None) => {}
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.as_deref().unwrap_or_default();
        if command.is_empty() {
            errs.required(p("exec.command"), "");
        }
        for (i, arg) in command.iter().enumerate() {
            if arg.contains('\0') {
                errs.invalid_str(field::index(&p("exec.command"), i), arg, "must not contain a NUL byte");
            }
        }
    }
    if let Some(http) = &mut probe.http_get {
        http_get(http, &p("httpGet"), ports, errs);
    }
    if let Some(tcp) = &probe.tcp_socket {
        if tcp.host.as_ref().is_some_and(|h| !h.is_empty()) {
            errs.not_supported(p("tcpSocket.host"), "probing another host than the pod");
        }
        probe_port(&tcp.port, &p("tcpSocket.port"), ports, errs);
    }
    if probe.grpc.is_some() {
        errs.not_supported(p("grpc"), "gRPC probes");
    }
    let defaults = [
        ("initialDelaySeconds", &mut probe.initial_delay_seconds, None),
        ("timeoutSeconds", &mut probe.timeout_seconds, Some(1)),
        ("periodSeconds", &mut probe.period_seconds, Some(10)),
        ("successThreshold", &mut probe.success_threshold, Some(1)),
        ("failureThreshold", &mut probe.failure_threshold, Some(3)),
    ];
    for (name, value, default) in defaults {
        match *value {
            Some(v) if v < 0 => errs.invalid(p(name), v, "must be greater than or equal to 0"),
            None | Some(0) => {
                if default.is_some() {
                    *value = default;
                }
            }
            Some(_) => {}
        }
    }
    if kind != ProbeKind::Readiness
        && let Some(threshold) = probe.success_threshold.filter(|&t| t != 1 && t >= 0)
    {
        errs.invalid(p("successThreshold"), threshold, "must be 1");
    }
    match probe.termination_grace_period_seconds {
        Some(_) if kind == ProbeKind::Readiness => {
            errs.invalid(
                p("terminationGracePeriodSeconds"),
                probe.termination_grace_period_seconds.unwrap_or_default(),
                "must not be set for readinessProbes",
            );
        }
        Some(s) if s <= 0 => errs.invalid(p("terminationGracePeriodSeconds"), s, "must be greater than 0"),
        _ => {}
    }
}

fn http_get(h: &mut HTTPGetAction, path: &str, ports: &BTreeMap<String, i32>, errs: &mut Errors) {
    let p = |name: &str| field::child(path, name);
    if h.host.as_ref().is_some_and(|host| !host.is_empty()) {
        errs.not_supported(p("host"), "probing another host than the pod");
    }
    match h.scheme.get_or_insert_with(|| "HTTP".to_owned()).as_str() {
        "HTTP" => {}
        "HTTPS" => errs.not_supported(p("scheme"), "HTTPS probes"),
        other => errs.unsupported(p("scheme"), other, &["HTTP", "HTTPS"]),
    }
    if h.path.as_deref().is_none_or(str::is_empty) {
        h.path = Some("/".to_owned());
    }
    probe_port(&h.port, &p("port"), ports, errs);
    for (i, header) in h.http_headers.iter().flatten().enumerate() {
        let path = field::index(&p("httpHeaders"), i);
        if header.name.is_empty() || !header.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            errs.invalid_str(
                field::child(&path, "name"),
                &header.name,
                "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            );
        }
        if header.value.chars().any(|c| c.is_control() && c != '\t') {
            errs.invalid_str(field::child(&path, "value"), &header.value, "must not contain control characters");
        }
    }
}

/// A probe's port: a number, or the name of one of this container's ports
/// (the agent resolves it against the same container).
fn probe_port(port: &IntOrString, path: &str, ports: &BTreeMap<String, i32>, errs: &mut Errors) {
    match port {
        IntOrString::Int(n) => {
            if names::port_number(*n).is_none() {
                errs.invalid(path, n, PORT_RANGE_MESSAGE);
            }
        }
        IntOrString::String(name) => {
            let problems = names::port_name(name);
            if !problems.is_empty() {
                errs.invalid_each(path, name, problems);
            } else if !ports.contains_key(name) {
                errs.invalid_str(path, name, "does not name a port of this container");
            }
        }
    }
}

/// Whether a pod update changes only what may change in place: nothing in
/// the spec but `nodeName` going from unset to set (the scheduler's
/// binding). A `nodeName` left out of the update is taken from `old`, as
/// `kubectl apply` of the original manifest would leave it.
pub(crate) fn update(new: &mut PodSpec, old: &PodSpec, errs: &mut Errors) {
    if new.node_name.as_deref().is_none_or(str::is_empty) {
        new.node_name.clone_from(&old.node_name);
    }
    let binding = old.node_name.as_deref().is_none_or(str::is_empty);
    let mut comparable = new.clone();
    if binding {
        comparable.node_name.clone_from(&old.node_name);
    }
    if comparable != *old {
        errs.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.nodeName` (once, to bind the pod); berth replaces pods rather than changing them, so use a Deployment to roll out changes",
        );
    }
}
