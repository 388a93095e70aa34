//! Kubernetes Pod manifests: parsing, validation with field paths, and the
//! command and environment rules the runtime applies.
//!
//! # Design
//! [`parse_pod`] reads a `v1` `Pod` with k8s-openapi's types, then
//! validates it into berth's [`PodSpec`], collecting *every* problem with
//! its Kubernetes field path (`spec.containers[1].name: "Web" is not a
//! DNS-1123 label …`), so one run lists all of them. Kubernetes' defaults
//! are applied on the way (namespace `default`, `restartPolicy: Always`,
//! `terminationGracePeriodSeconds: 30`, probe timings, `path: /`, protocol
//! `TCP`, a CPU request defaulting to its limit), and quantities follow
//! apimachinery (see [`super::quantity`]).
//!
//! k8s-openapi ignores fields it does not know, so a typo in a field name
//! is silently dropped, as `kubectl apply` without `--validate` would. The
//! fields it *does* know are sorted three ways:
//! - honoured: names, labels, annotations, containers (image, command,
//!   args, env values, workingDir, ports, cpu and memory resources,
//!   probes), restartPolicy, terminationGracePeriodSeconds, hostname,
//!   runAsUser/runAsGroup/runAsNonRoot;
//! - rejected with an "is not supported by berth" problem, because
//!   ignoring them would run something other than what was asked: grants
//!   berth does not give (privileged, added capabilities, host namespaces,
//!   hostPort, unmasked /proc), restrictions it does not enforce (seccomp,
//!   AppArmor, SELinux, read-only root), and features that change what runs
//!   (init containers, volumes, lifecycle hooks, `envFrom`, `valueFrom`,
//!   HTTPS, gRPC and host-targeted probes, activeDeadlineSeconds, …);
//! - ignored because they are advisory or about scheduling: imagePullPolicy,
//!   tty, stdin, terminationMessage*, resizePolicy, nodeName, nodeSelector,
//!   affinity, tolerations, priority, serviceAccountName, dnsPolicy, fsGroup
//!   (no volumes), allowPrivilegeEscalation and capabilities.drop (berth
//!   always sets no_new_privs and drops capabilities).
//!
//! Two berth annotations extend the format:
//! - `berth.dev/pids-limit: "<n>"` (positive integer): the `pids.max` of
//!   *each* container of the pod (Kubernetes sets a node-wide pod pids
//!   limit instead);
//! - `berth.dev/weight: "<n>"` (1..=65535): the pod's weight as a Service
//!   backend, carried through for the data plane.
//!
//! Any other `berth.dev/` annotation is an error, so a typo is caught.
//!
//! # Limitations
//! - One document, one Pod; `generateName` is not supported.
//! - Only `cpu` and `memory` resources; other names are rejected.
//! - `$(VAR)` references expand against the container's own environment
//!   only: berth injects no Service environment variables.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    io::{self, Read as _},
    time::Duration,
};

use k8s_openapi::{api::core::v1 as k8s, apimachinery::pkg::util::intstr::IntOrString};
use serde::{Deserialize, Serialize};

use super::{
    probe::{self, ProbeAction, ProbeKind, ProbeSpec},
    quantity,
};
use crate::cgroups::{MilliCpu, ResourceSpec};

#[cfg(test)]
mod tests;

/// The namespace of a manifest that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(30);
/// Annotation: `pids.max` for each container of the pod.
pub const PIDS_LIMIT_ANNOTATION: &str = "berth.dev/pids-limit";
/// Annotation: the pod's weight as a Service backend.
pub const WEIGHT_ANNOTATION: &str = "berth.dev/weight";
/// The largest `berth.dev/weight` (the data plane's bound).
pub const MAX_WEIGHT: u32 = crate::config::MAX_WEIGHT;
const BERTH_ANNOTATION_PREFIX: &str = "berth.dev/";
/// Kubernetes' bound on all annotations of an object together.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// uids name directories and cgroups: short and path-safe.
const MAX_UID_LEN: usize = 64;
/// Kubernetes' bound on user and group ids.
const MAX_ID: i64 = 2_147_483_647;
/// Linux `HOST_NAME_MAX`, as kubelet truncates pod hostnames.
const MAX_HOSTNAME: usize = 63;

/// A validated Pod, with Kubernetes' defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// `metadata.uid`, or a random UUID (v4) when the manifest has none.
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.hostname`, else the pod name cut to 63 characters (kubelet's
    /// rule).
    pub hostname: String,
    pub restart_policy: RestartPolicy,
    /// SIGTERM → SIGKILL grace when the pod stops. May be zero (kubelet
    /// then still waits its minimum of 2 s).
    pub termination_grace: Duration,
    pub containers: Vec<ContainerSpecDef>,
    /// `berth.dev/weight`.
    pub weight: Option<u32>,
}

impl PodSpec {
    /// kubelet's `name_namespace(uid)` spelling of a pod in messages.
    pub fn display_name(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }
}

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// One container of a [`PodSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpecDef {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (and drops its cmd). `None` when
    /// absent or empty, as Kubernetes treats both.
    pub command: Option<Vec<String>>,
    /// Replaces the image's cmd. `None` when absent or empty.
    pub args: Option<Vec<String>>,
    /// `env` in order, values unexpanded (see [`Self::runtime_env`]).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// The container's `runAsUser`, else the pod's.
    pub run_as_user: Option<u32>,
    /// The container's `runAsGroup`, else the pod's.
    pub run_as_group: Option<u32>,
    /// The container's `runAsNonRoot`, else the pod's; checked against the
    /// image with [`Self::verify_run_as_non_root`].
    pub run_as_non_root: bool,
    pub resources: ResourceSpec,
    pub ports: Vec<ContainerPort>,
    pub liveness: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
    pub startup: Option<ProbeSpec>,
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: PortProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PortProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// One thing wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// Kubernetes field path, e.g. `spec.containers[1].ports[0].name`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML, or not the Pod schema; `message` is serde_yaml's, with the
    /// line and column.
    #[error("not a Pod manifest: {message}")]
    Parse { message: String },
    #[error("{}", wrong_kind(api_version.as_deref(), kind.as_deref()))]
    WrongKind { api_version: Option<String>, kind: Option<String> },
    /// Valid YAML with mistakes; all of them.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<ManifestProblem> },
    #[error("cannot generate a pod uid: reading /dev/urandom")]
    Uid {
        #[source]
        source: io::Error,
    },
}

/// Parses and validates one Pod manifest (YAML or JSON).
///
/// # Errors
/// [`ManifestError::Parse`] for YAML and schema errors (stopping at the
/// first), [`ManifestError::WrongKind`] for anything but a `v1` `Pod`,
/// [`ManifestError::Invalid`] with every validation problem, and
/// [`ManifestError::Uid`] when a uid must be generated and the kernel's
/// random source cannot be read.
pub fn parse_pod(yaml: &str) -> Result<PodSpec, ManifestError> {
    let parse = |e: serde_yaml::Error| ManifestError::Parse { message: e.to_string() };
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(parse)?;
    let serde_yaml::Value::Mapping(map) = &value else {
        return Err(ManifestError::Parse {
            message: "expected a mapping with apiVersion, kind, metadata and spec".into(),
        });
    };
    let text = |key: &str| map.get(key).map(|v| v.as_str().map_or_else(|| format!("{v:?}"), str::to_owned));
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if api_version.as_deref() != Some("v1") || kind.as_deref() != Some("Pod") {
        return Err(ManifestError::WrongKind { api_version, kind });
    }
    // Parsed again from the text so that errors carry a line and column.
    let pod: k8s::Pod = serde_yaml::from_str(yaml).map_err(parse)?;
    let mut v = Validator::default();
    let mut spec = v.pod(pod);
    if !v.problems.is_empty() {
        return Err(ManifestError::Invalid { problems: v.problems });
    }
    if spec.uid.is_empty() {
        spec.uid = random_uid().map_err(|source| ManifestError::Uid { source })?;
    }
    Ok(spec)
}

fn wrong_kind(api_version: Option<&str>, kind: Option<&str>) -> String {
    let show = |v: Option<&str>| v.map_or_else(|| "(missing)".to_owned(), |v| format!("{v:?}"));
    format!("apiVersion {} and kind {}: berth runs only apiVersion \"v1\", kind \"Pod\"", show(api_version), show(kind))
}

/// A random UUID, version 4.
fn random_uid() -> io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

// ---- Command and environment -----------------------------------------------

impl ContainerSpecDef {
    /// The environment kubelet passes to the runtime: `env` in order, each
    /// value with `$(NAME)` references to *earlier* entries expanded.
    pub fn runtime_env(&self) -> Vec<(String, String)> {
        let mut context: HashMap<String, String> = HashMap::new();
        let mut out = Vec::with_capacity(self.env.len());
        for (name, value) in &self.env {
            let value = expand(value, &context);
            context.insert(name.clone(), value.clone());
            out.push((name.clone(), value));
        }
        out
    }

    /// The process's argv: `command` and `args` with `$(NAME)` references
    /// to the container's environment expanded, combined with the image's
    /// entrypoint and cmd by [`resolve_command`]. Empty means there is
    /// nothing to run (the runtime's "no command specified").
    pub fn argv(&self, image_entrypoint: &[String], image_cmd: &[String]) -> Vec<String> {
        let context: HashMap<String, String> = self.runtime_env().into_iter().collect();
        let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, &context)).collect::<Vec<_>>();
        let command = self.command.as_ref().map(expand_all);
        let args = self.args.as_ref().map(expand_all);
        resolve_command(image_entrypoint, image_cmd, command.as_deref(), args.as_deref())
    }

    /// kubelet's `verifyRunAsNonRoot`, given the image's `user` (`uid`,
    /// `uid:gid`, `name` or `name:group`; empty means root).
    ///
    /// # Errors
    /// kubelet's message when the container would run as root, or when the
    /// image names a user that cannot be checked.
    pub fn verify_run_as_non_root(&self, image_user: &str) -> Result<(), String> {
        if !self.run_as_non_root {
            return Ok(());
        }
        if let Some(uid) = self.run_as_user {
            return if uid == 0 { Err("container's runAsUser breaks non-root policy".into()) } else { Ok(()) };
        }
        let user = image_user.split(':').next().unwrap_or_default();
        match user.parse::<u32>() {
            Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
            Ok(_) => Ok(()),
            Err(_) if user.is_empty() => Err("container has runAsNonRoot and image will run as root".into()),
            Err(_) => Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"
            )),
        }
    }
}

/// Kubernetes' command rules (as the CRI runtimes apply them): `command`
/// replaces the image's entrypoint *and* drops its cmd; `args` replaces the
/// cmd; with neither, the image's entrypoint and cmd run. An image
/// entrypoint of `[""]` counts as none.
pub fn resolve_command(
    image_entrypoint: &[String],
    image_cmd: &[String],
    command: Option<&[String]>,
    args: Option<&[String]>,
) -> Vec<String> {
    let command = command.filter(|c| !c.is_empty());
    let args = args.filter(|a| !a.is_empty());
    match command {
        Some(command) => command.iter().chain(args.unwrap_or_default()).cloned().collect(),
        None => {
            let entrypoint = if image_entrypoint == [""] { &[][..] } else { image_entrypoint };
            entrypoint.iter().chain(args.unwrap_or(image_cmd)).cloned().collect()
        }
    }
}

/// The process environment: the image's `NAME=value` entries, then the
/// container's; a container entry replaces the image's entry of the same
/// name in place, and a later container entry wins over an earlier one.
pub fn merge_env(image_env: &[String], container_env: &[(String, String)]) -> Vec<String> {
    let key = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_owned();
    let mut out: Vec<String> = image_env.to_vec();
    for (name, value) in container_env {
        let entry = format!("{name}={value}");
        match out.iter().position(|e| key(e) == *name) {
            Some(i) => out[i] = entry,
            None => out.push(entry),
        }
    }
    out
}

/// Kubernetes' `$(NAME)` expansion (`third_party/forked/golang/expansion`):
/// `$(NAME)` becomes the value of `NAME` if `context` has it and stays as
/// written otherwise; `$$` is a literal `$`; anything else is copied.
pub fn expand(input: &str, context: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.is_empty() {
            // A trailing `$` is literal.
            out.push('$');
            rest = after;
        } else if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match context.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    // Unterminated: copied as written.
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

// ---- Validation ------------------------------------------------------------

#[derive(Default)]
struct Validator {
    problems: Vec<ManifestProblem>,
}

impl Validator {
    fn problem(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(ManifestProblem { path: path.into(), reason: reason.into() });
    }

    fn unsupported(&mut self, path: impl Into<String>, what: &str) {
        self.problem(path, format!("is not supported by berth ({what})"));
    }

    fn pod(&mut self, pod: k8s::Pod) -> PodSpec {
        let meta = pod.metadata;
        let name = match meta.name.filter(|n| !n.is_empty()) {
            Some(name) => {
                if let Err(why) = dns_subdomain(&name) {
                    self.problem("metadata.name", format!("{name:?} {why}"));
                }
                name
            }
            None if meta.generate_name.is_some() => {
                self.problem("metadata.name", "Required value (generateName is not supported)");
                String::new()
            }
            None => {
                self.problem("metadata.name", "Required value");
                String::new()
            }
        };
        let namespace = meta.namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        if let Err(why) = dns_label(&namespace) {
            self.problem("metadata.namespace", format!("{namespace:?} {why}"));
        }
        let uid = meta.uid.unwrap_or_default();
        if !uid.is_empty() && (uid.len() > MAX_UID_LEN || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            self.problem(
                "metadata.uid",
                format!(
                    "{uid:?} must be at most {MAX_UID_LEN} letters, digits and '-' (berth names directories after it)"
                ),
            );
        }
        let labels = meta.labels.unwrap_or_default();
        for (key, value) in &labels {
            if let Err(why) = qualified_name(key) {
                self.problem(format!("metadata.labels[{key}]"), format!("key {key:?} {why}"));
            }
            if let Err(why) = label_value(value) {
                self.problem(format!("metadata.labels[{key}]"), format!("{value:?} {why}"));
            }
        }
        let annotations = meta.annotations.unwrap_or_default();
        let (pids_limit, weight) = self.annotations(&annotations);

        let Some(spec) = pod.spec else {
            self.problem("spec", "Required value");
            return PodSpec {
                name,
                namespace,
                uid,
                labels,
                annotations,
                hostname: String::new(),
                restart_policy: RestartPolicy::Always,
                termination_grace: DEFAULT_TERMINATION_GRACE,
                containers: Vec::new(),
                weight,
            };
        };
        self.pod_features(&spec);

        let hostname = match spec.hostname.as_deref().filter(|h| !h.is_empty()) {
            Some(hostname) => {
                if let Err(why) = dns_label(hostname) {
                    self.problem("spec.hostname", format!("{hostname:?} {why}"));
                }
                hostname.to_owned()
            }
            None => truncate_hostname(&name),
        };
        let restart_policy = match spec.restart_policy.as_deref() {
            None | Some("") | Some("Always") => RestartPolicy::Always,
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            Some(other) => {
                self.problem(
                    "spec.restartPolicy",
                    format!("Unsupported value: {other:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
                );
                RestartPolicy::Always
            }
        };
        let termination_grace = match spec.termination_grace_period_seconds {
            None => DEFAULT_TERMINATION_GRACE,
            Some(s) => match u64::try_from(s) {
                Ok(s) => Duration::from_secs(s),
                Err(_) => {
                    self.problem("spec.terminationGracePeriodSeconds", "must be greater than or equal to 0");
                    DEFAULT_TERMINATION_GRACE
                }
            },
        };

        let pod_identity = self.identity("spec.securityContext", spec.security_context.as_ref().map(PodSc));
        if spec.containers.is_empty() {
            self.problem("spec.containers", "Required value");
        }
        let mut names = HashSet::new();
        let containers = spec
            .containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let path = format!("spec.containers[{i}]");
                if !c.name.is_empty() && !names.insert(c.name.clone()) {
                    self.problem(format!("{path}.name"), format!("Duplicate value: {:?}", c.name));
                }
                self.container(&path, c, pod_identity, pids_limit)
            })
            .collect();

        PodSpec {
            name,
            namespace,
            uid,
            labels,
            annotations,
            hostname,
            restart_policy,
            termination_grace,
            containers,
            weight,
        }
    }

    /// berth's annotations, and Kubernetes' size bound.
    fn annotations(&mut self, annotations: &BTreeMap<String, String>) -> (Option<u64>, Option<u32>) {
        let mut total = 0usize;
        let (mut pids_limit, mut weight) = (None, None);
        for (key, value) in annotations {
            let path = format!("metadata.annotations[{key}]");
            total = total.saturating_add(key.len()).saturating_add(value.len());
            if let Err(why) = qualified_name(key) {
                self.problem(&path, format!("key {key:?} {why}"));
            }
            match key.as_str() {
                PIDS_LIMIT_ANNOTATION => match value.trim().parse::<u64>() {
                    Ok(n) if n >= 1 => pids_limit = Some(n),
                    _ => self.problem(&path, format!("{value:?} is not a positive integer")),
                },
                WEIGHT_ANNOTATION => match value.trim().parse::<u32>() {
                    Ok(n) if (1..=MAX_WEIGHT).contains(&n) => weight = Some(n),
                    _ => self.problem(&path, format!("{value:?} is not an integer between 1 and {MAX_WEIGHT}")),
                },
                k if k.starts_with(BERTH_ANNOTATION_PREFIX) => self.problem(
                    &path,
                    format!("unknown berth annotation (known: {PIDS_LIMIT_ANNOTATION}, {WEIGHT_ANNOTATION})"),
                ),
                _ => {}
            }
        }
        if total > MAX_ANNOTATIONS_BYTES {
            self.problem(
                "metadata.annotations",
                format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes (has {total})"),
            );
        }
        (pids_limit, weight)
    }

    /// Pod-level fields berth cannot honour.
    fn pod_features(&mut self, spec: &k8s::PodSpec) {
        if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported("spec.initContainers", "init containers");
        }
        if spec.ephemeral_containers.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported("spec.ephemeralContainers", "ephemeral containers");
        }
        if spec.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported("spec.volumes", "volumes");
        }
        if spec.readiness_gates.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported("spec.readinessGates", "readiness gates need an API server");
        }
        if spec.resource_claims.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported("spec.resourceClaims", "dynamic resource allocation");
        }
        if spec.resources.is_some() {
            self.unsupported("spec.resources", "pod-level resources; set them per container");
        }
        if spec.host_aliases.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported("spec.hostAliases", "/etc/hosts entries");
        }
        let flags = [
            ("spec.hostNetwork", spec.host_network, "the host's network namespace"),
            ("spec.hostPID", spec.host_pid, "the host's PID namespace"),
            ("spec.hostIPC", spec.host_ipc, "the host's IPC namespace"),
            ("spec.shareProcessNamespace", spec.share_process_namespace, "a shared PID namespace"),
            ("spec.setHostnameAsFQDN", spec.set_hostname_as_fqdn, "FQDN hostnames"),
        ];
        for (path, flag, what) in flags {
            if flag == Some(true) {
                self.unsupported(path, what);
            }
        }
        if spec.host_users == Some(false) {
            self.unsupported("spec.hostUsers", "user namespaces");
        }
        if spec.hostname_override.is_some() {
            self.unsupported("spec.hostnameOverride", "hostname overrides; use spec.hostname");
        }
        if spec.active_deadline_seconds.is_some() {
            self.unsupported("spec.activeDeadlineSeconds", "deadlines");
        }
        if let Some(sc) = &spec.security_context {
            if sc.supplemental_groups.as_ref().is_some_and(|v| !v.is_empty()) {
                self.unsupported("spec.securityContext.supplementalGroups", "supplementary groups");
            }
            if sc.sysctls.as_ref().is_some_and(|v| !v.is_empty()) {
                self.unsupported("spec.securityContext.sysctls", "sysctls");
            }
            self.confinement(
                "spec.securityContext",
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
                sc.se_linux_options.is_some(),
            );
        }
    }

    /// Confinement berth does not apply: only `Unconfined` (what berth
    /// does) is accepted.
    fn confinement(&mut self, path: &str, seccomp: Option<&str>, apparmor: Option<&str>, selinux: bool) {
        if seccomp.is_some_and(|t| t != "Unconfined") {
            self.unsupported(format!("{path}.seccompProfile"), "berth applies no seccomp filter; only Unconfined");
        }
        if apparmor.is_some_and(|t| t != "Unconfined") {
            self.unsupported(format!("{path}.appArmorProfile"), "berth applies no AppArmor profile; only Unconfined");
        }
        if selinux {
            self.unsupported(format!("{path}.seLinuxOptions"), "SELinux labels");
        }
    }

    /// runAsUser, runAsGroup and runAsNonRoot of one security context.
    fn identity(&mut self, path: &str, sc: Option<impl IdentitySource>) -> Identity {
        let Some(sc) = sc else { return Identity::default() };
        let mut id = |field: &str, value: Option<i64>| {
            value.and_then(|v| match u32::try_from(v) {
                Ok(v) if i64::from(v) <= MAX_ID => Some(v),
                _ => {
                    self.problem(format!("{path}.{field}"), format!("must be between 0 and {MAX_ID}, inclusive"));
                    None
                }
            })
        };
        Identity {
            run_as_user: id("runAsUser", sc.run_as_user()),
            run_as_group: id("runAsGroup", sc.run_as_group()),
            run_as_non_root: sc.run_as_non_root(),
        }
    }

    fn container(&mut self, path: &str, c: k8s::Container, pod: Identity, pids_limit: Option<u64>) -> ContainerSpecDef {
        if c.name.is_empty() {
            self.problem(format!("{path}.name"), "Required value");
        } else if let Err(why) = dns_label(&c.name) {
            self.problem(format!("{path}.name"), format!("{:?} {why}", c.name));
        }
        let image = c.image.unwrap_or_default();
        if image.is_empty() {
            self.problem(format!("{path}.image"), "Required value");
        } else if image.trim() != image {
            self.problem(format!("{path}.image"), "must not have leading or trailing whitespace");
        }
        let command = self.argv_list(&format!("{path}.command"), c.command);
        let args = self.argv_list(&format!("{path}.args"), c.args);
        let working_dir = c.working_dir.filter(|w| !w.is_empty());
        if let Some(dir) = &working_dir
            && (!dir.starts_with('/') || dir.contains('\0'))
        {
            self.problem(format!("{path}.workingDir"), format!("{dir:?} must be an absolute path"));
        }
        let env = self.env(path, c.env.unwrap_or_default());
        if c.env_from.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported(format!("{path}.envFrom"), "environment from config maps and secrets");
        }
        let ports = self.ports(path, c.ports.unwrap_or_default());
        let resources = self.resources(path, c.resources, pids_limit);

        if c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some() || l.pre_stop.is_some()) {
            self.unsupported(format!("{path}.lifecycle"), "postStart and preStop hooks");
        }
        if c.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported(format!("{path}.volumeMounts"), "volumes");
        }
        if c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported(format!("{path}.volumeDevices"), "volumes");
        }
        if c.restart_policy.is_some() || c.restart_policy_rules.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported(format!("{path}.restartPolicy"), "per-container restart policies");
        }

        let sc_path = format!("{path}.securityContext");
        let own = self.identity(&sc_path, c.security_context.as_ref().map(ContainerSc));
        if let Some(sc) = &c.security_context {
            if sc.privileged == Some(true) {
                self.unsupported(format!("{sc_path}.privileged"), "privileged containers");
            }
            if sc.capabilities.as_ref().and_then(|caps| caps.add.as_ref()).is_some_and(|add| !add.is_empty()) {
                self.unsupported(format!("{sc_path}.capabilities.add"), "adding capabilities");
            }
            if sc.read_only_root_filesystem == Some(true) {
                self.unsupported(format!("{sc_path}.readOnlyRootFilesystem"), "read-only root filesystems");
            }
            if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
                self.unsupported(format!("{sc_path}.procMount"), "an unmasked /proc");
            }
            self.confinement(
                &sc_path,
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
                sc.se_linux_options.is_some(),
            );
        }
        let run_as_user = own.run_as_user.or(pod.run_as_user);
        let run_as_non_root = own.run_as_non_root.or(pod.run_as_non_root).unwrap_or(false);
        if run_as_non_root && run_as_user == Some(0) {
            self.problem(sc_path, "runAsUser 0 breaks the runAsNonRoot policy");
        }

        let liveness = self.probe(path, ProbeKind::Liveness, c.liveness_probe, &ports);
        let readiness = self.probe(path, ProbeKind::Readiness, c.readiness_probe, &ports);
        let startup = self.probe(path, ProbeKind::Startup, c.startup_probe, &ports);

        ContainerSpecDef {
            name: c.name,
            image,
            command,
            args,
            env,
            working_dir,
            run_as_user,
            run_as_group: own.run_as_group.or(pod.run_as_group),
            run_as_non_root,
            resources,
            ports,
            liveness,
            readiness,
            startup,
        }
    }

    /// `command` or `args`: empty means absent; NUL cannot reach execve.
    fn argv_list(&mut self, path: &str, list: Option<Vec<String>>) -> Option<Vec<String>> {
        let list = list.filter(|l| !l.is_empty())?;
        for (i, arg) in list.iter().enumerate() {
            if arg.contains('\0') {
                self.problem(format!("{path}[{i}]"), "must not contain a NUL byte");
            }
        }
        Some(list)
    }

    fn env(&mut self, path: &str, env: Vec<k8s::EnvVar>) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(env.len());
        for (i, var) in env.into_iter().enumerate() {
            let path = format!("{path}.env[{i}]");
            if var.name.is_empty() {
                self.problem(format!("{path}.name"), "Required value");
            } else if !var.name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'=') {
                self.problem(
                    format!("{path}.name"),
                    format!("{:?} must consist only of printable ASCII characters other than '='", var.name),
                );
            }
            if var.value_from.is_some() {
                self.unsupported(format!("{path}.valueFrom"), "values from secrets, config maps or the downward API");
            }
            let value = var.value.unwrap_or_default();
            if value.contains('\0') {
                self.problem(format!("{path}.value"), "must not contain a NUL byte");
            }
            out.push((var.name, value));
        }
        out
    }

    fn ports(&mut self, path: &str, ports: Vec<k8s::ContainerPort>) -> Vec<ContainerPort> {
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(ports.len());
        for (i, p) in ports.into_iter().enumerate() {
            let path = format!("{path}.ports[{i}]");
            let port = match u16::try_from(p.container_port) {
                Ok(port) if port != 0 => port,
                _ => {
                    self.problem(format!("{path}.containerPort"), "must be between 1 and 65535, inclusive");
                    0
                }
            };
            let name = p.name.filter(|n| !n.is_empty());
            if let Some(name) = &name {
                if let Err(why) = port_name(name) {
                    self.problem(format!("{path}.name"), format!("{name:?} {why}"));
                } else if !names.insert(name.clone()) {
                    self.problem(format!("{path}.name"), format!("Duplicate value: {name:?}"));
                }
            }
            let protocol = match p.protocol.as_deref() {
                None | Some("") | Some("TCP") => PortProtocol::Tcp,
                Some("UDP") => PortProtocol::Udp,
                Some("SCTP") => {
                    self.unsupported(format!("{path}.protocol"), "SCTP");
                    PortProtocol::Tcp
                }
                Some(other) => {
                    self.problem(
                        format!("{path}.protocol"),
                        format!("Unsupported value: {other:?}: supported values: \"TCP\", \"UDP\""),
                    );
                    PortProtocol::Tcp
                }
            };
            if p.host_port.is_some_and(|h| h != 0) {
                self.unsupported(format!("{path}.hostPort"), "host ports");
            }
            if p.host_ip.as_ref().is_some_and(|h| !h.is_empty()) {
                self.unsupported(format!("{path}.hostIP"), "host ports");
            }
            out.push(ContainerPort { name, port, protocol });
        }
        out
    }

    fn resources(
        &mut self,
        path: &str,
        resources: Option<k8s::ResourceRequirements>,
        pids_limit: Option<u64>,
    ) -> ResourceSpec {
        let resources = resources.unwrap_or_default();
        if resources.claims.as_ref().is_some_and(|c| !c.is_empty()) {
            self.unsupported(format!("{path}.resources.claims"), "dynamic resource allocation");
        }
        let mut cpu: [Option<MilliCpu>; 2] = [None, None];
        let mut memory: [Option<u64>; 2] = [None, None];
        for (which, (field, map)) in
            [("limits", resources.limits), ("requests", resources.requests)].into_iter().enumerate()
        {
            for (name, q) in map.unwrap_or_default() {
                let p = format!("{path}.resources.{field}[{name}]");
                match name.as_str() {
                    "cpu" => match quantity::parse_cpu(&q.0) {
                        Ok(v) => cpu[which] = Some(v),
                        Err(e) => self.problem(p, format!("{:?} {e}", q.0)),
                    },
                    "memory" => match quantity::parse_bytes(&q.0) {
                        Ok(v) => memory[which] = Some(v),
                        Err(e) => self.problem(p, format!("{:?} {e}", q.0)),
                    },
                    _ => self.unsupported(p, "berth manages cpu and memory only"),
                }
            }
        }
        let [cpu_limit, cpu_request] = cpu;
        let [memory_limit, memory_request] = memory;
        if let (Some(request), Some(limit)) = (cpu_request, cpu_limit)
            && request > limit
        {
            self.problem(
                format!("{path}.resources.requests[cpu]"),
                format!("must be less than or equal to cpu limit of {}", quantity::format_cpu(limit)),
            );
        }
        if let (Some(request), Some(limit)) = (memory_request, memory_limit)
            && request > limit
        {
            self.problem(
                format!("{path}.resources.requests[memory]"),
                format!("must be less than or equal to memory limit of {}", quantity::format_bytes(limit)),
            );
        }
        ResourceSpec {
            // The API server defaults a missing request to the limit.
            cpu_request: cpu_request.or(cpu_limit),
            cpu_limit,
            // kubelet sets no memory limit for a limit of 0.
            memory_limit_bytes: memory_limit.filter(|&b| b != 0),
            pids_limit,
        }
    }

    fn probe(
        &mut self,
        container: &str,
        kind: ProbeKind,
        probe: Option<k8s::Probe>,
        ports: &[ContainerPort],
    ) -> Option<ProbeSpec> {
        let probe = probe?;
        let path = format!(
            "{container}.{}",
            match kind {
                ProbeKind::Liveness => "livenessProbe",
                ProbeKind::Readiness => "readinessProbe",
                ProbeKind::Startup => "startupProbe",
            }
        );
        let handlers = [
            ("exec", probe.exec.is_some()),
            ("httpGet", probe.http_get.is_some()),
            ("tcpSocket", probe.tcp_socket.is_some()),
            ("grpc", probe.grpc.is_some()),
        ];
        let mut given = handlers.iter().filter(|(_, set)| *set).map(|(name, _)| *name);
        let first = given.next();
        if let Some(second) = given.next() {
            self.problem(format!("{path}.{second}"), "may not specify more than 1 handler type");
        }
        let action = match first {
            None => {
                self.problem(&path, "must specify a handler type (exec, httpGet or tcpSocket)");
                None
            }
            Some("exec") => {
                let command = probe.exec.and_then(|e| e.command).unwrap_or_default();
                if command.is_empty() {
                    self.problem(format!("{path}.exec.command"), "Required value");
                }
                for (i, arg) in command.iter().enumerate() {
                    if arg.contains('\0') {
                        self.problem(format!("{path}.exec.command[{i}]"), "must not contain a NUL byte");
                    }
                }
                Some(ProbeAction::Exec { command })
            }
            Some("httpGet") => probe.http_get.map(|h| self.http_get(&format!("{path}.httpGet"), h, ports)),
            Some("tcpSocket") => probe.tcp_socket.map(|t| {
                let p = format!("{path}.tcpSocket");
                if t.host.as_ref().is_some_and(|h| !h.is_empty()) {
                    self.unsupported(format!("{p}.host"), "probing another host than the pod");
                }
                ProbeAction::TcpSocket { port: self.probe_port(&format!("{p}.port"), &t.port, ports) }
            }),
            Some(_) => {
                self.unsupported(format!("{path}.grpc"), "gRPC probes");
                None
            }
        };

        let mut seconds = |field: &str, value: Option<i32>, default: u32| -> u32 {
            match value {
                None | Some(0) => default,
                Some(v) => u32::try_from(v).unwrap_or_else(|_| {
                    self.problem(format!("{path}.{field}"), "must be greater than or equal to 0");
                    default
                }),
            }
        };
        let initial_delay = seconds("initialDelaySeconds", probe.initial_delay_seconds, 0);
        let timeout = seconds("timeoutSeconds", probe.timeout_seconds, secs(probe::DEFAULT_TIMEOUT));
        let period = seconds("periodSeconds", probe.period_seconds, secs(probe::DEFAULT_PERIOD));
        let success_threshold = seconds("successThreshold", probe.success_threshold, probe::DEFAULT_SUCCESS_THRESHOLD);
        let failure_threshold = seconds("failureThreshold", probe.failure_threshold, probe::DEFAULT_FAILURE_THRESHOLD);
        if kind != ProbeKind::Readiness && success_threshold != 1 {
            self.problem(format!("{path}.successThreshold"), "must be 1");
        }
        let termination_grace = match probe.termination_grace_period_seconds {
            None => None,
            Some(_) if kind == ProbeKind::Readiness => {
                self.problem(format!("{path}.terminationGracePeriodSeconds"), "must not be set for readinessProbes");
                None
            }
            Some(s) if s <= 0 => {
                self.problem(format!("{path}.terminationGracePeriodSeconds"), "must be greater than 0");
                None
            }
            Some(s) => u64::try_from(s).ok().map(Duration::from_secs),
        };
        Some(ProbeSpec {
            action: action?,
            initial_delay: Duration::from_secs(initial_delay.into()),
            timeout: Duration::from_secs(timeout.into()),
            period: Duration::from_secs(period.into()),
            success_threshold,
            failure_threshold,
            termination_grace,
        })
    }

    fn http_get(&mut self, path: &str, h: k8s::HTTPGetAction, ports: &[ContainerPort]) -> ProbeAction {
        if h.host.as_ref().is_some_and(|host| !host.is_empty()) {
            self.unsupported(format!("{path}.host"), "probing another host than the pod");
        }
        match h.scheme.as_deref() {
            None | Some("") | Some("HTTP") => {}
            Some("HTTPS") => self.unsupported(format!("{path}.scheme"), "HTTPS probes"),
            Some(other) => self.problem(
                format!("{path}.scheme"),
                format!("Unsupported value: {other:?}: supported values: \"HTTP\", \"HTTPS\""),
            ),
        }
        let port = self.probe_port(&format!("{path}.port"), &h.port, ports);
        let mut headers = Vec::new();
        for (i, header) in h.http_headers.unwrap_or_default().into_iter().enumerate() {
            if header.name.is_empty() || !header.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                self.problem(
                    format!("{path}.httpHeaders[{i}].name"),
                    format!("{:?} must be a valid HTTP header name (letters, digits and '-')", header.name),
                );
            }
            if header.value.chars().any(|c| c.is_control() && c != '\t') {
                self.problem(format!("{path}.httpHeaders[{i}].value"), "must not contain control characters");
            }
            headers.push((header.name, header.value));
        }
        ProbeAction::HttpGet { port, path: request_target(h.path.as_deref().unwrap_or_default()), headers }
    }

    /// A probe's port: a number, or the name of one of this container's
    /// ports (kubelet resolves it against the same container).
    fn probe_port(&mut self, path: &str, port: &IntOrString, ports: &[ContainerPort]) -> u16 {
        match port {
            IntOrString::Int(n) => match u16::try_from(*n) {
                Ok(p) if p != 0 => p,
                _ => {
                    self.problem(path, "must be between 1 and 65535, inclusive");
                    0
                }
            },
            IntOrString::String(name) => {
                if let Err(why) = port_name(name) {
                    self.problem(path, format!("{name:?} {why}"));
                    return 0;
                }
                match ports.iter().find(|p| p.name.as_deref() == Some(name.as_str())) {
                    Some(p) => p.port,
                    None => {
                        self.problem(path, format!("{name:?} does not name a port of this container"));
                        0
                    }
                }
            }
        }
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, Default)]
struct Identity {
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    run_as_non_root: Option<bool>,
}

/// The identity fields shared by pod and container security contexts.
trait IdentitySource {
    fn run_as_user(&self) -> Option<i64>;
    fn run_as_group(&self) -> Option<i64>;
    fn run_as_non_root(&self) -> Option<bool>;
}

struct PodSc<'a>(&'a k8s::PodSecurityContext);
struct ContainerSc<'a>(&'a k8s::SecurityContext);

impl IdentitySource for PodSc<'_> {
    fn run_as_user(&self) -> Option<i64> {
        self.0.run_as_user
    }
    fn run_as_group(&self) -> Option<i64> {
        self.0.run_as_group
    }
    fn run_as_non_root(&self) -> Option<bool> {
        self.0.run_as_non_root
    }
}

impl IdentitySource for ContainerSc<'_> {
    fn run_as_user(&self) -> Option<i64> {
        self.0.run_as_user
    }
    fn run_as_group(&self) -> Option<i64> {
        self.0.run_as_group
    }
    fn run_as_non_root(&self) -> Option<bool> {
        self.0.run_as_non_root
    }
}

/// kubelet's `path` default and URL handling: `/` when empty, a leading
/// `/` added, the fragment dropped, and bytes that may not appear in a
/// request target percent-encoded (Go's `url.URL.String` does the same).
fn request_target(path: &str) -> String {
    use std::fmt::Write as _;
    let path = path.split('#').next().unwrap_or_default();
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// kubelet's hostname from a pod name: at most 63 characters, without a
/// trailing `-` or `.` after the cut.
fn truncate_hostname(name: &str) -> String {
    if name.len() <= MAX_HOSTNAME {
        return name.to_owned();
    }
    // Pod names are ASCII (validated), so any byte index is a boundary.
    name.get(..MAX_HOSTNAME).unwrap_or(name).trim_end_matches(['-', '.']).to_owned()
}

// ---- Kubernetes name rules (apimachinery/pkg/util/validation) ---------------

const DNS_LABEL_RULE: &str = "is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)";
const DNS_SUBDOMAIN_RULE: &str = "is not a DNS-1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)";

fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.len() <= 63 && is_label_part(s) { Ok(()) } else { Err(DNS_LABEL_RULE) }
}

fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() <= 253 && s.split('.').all(is_label_part) { Ok(()) } else { Err(DNS_SUBDOMAIN_RULE) }
}

/// IANA_SVC_NAME: what a port may be called.
fn port_name(s: &str) -> Result<(), &'static str> {
    let valid = s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if valid {
        Ok(())
    } else {
        Err(
            "is not a valid port name (at most 15 lowercase letters, digits and '-', with a letter, no '--', not starting or ending with '-')",
        )
    }
}

/// A label or annotation key: `[prefix/]name`.
fn qualified_name(s: &str) -> Result<(), &'static str> {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if prefix.is_some_and(|p| dns_subdomain(p).is_err()) {
        return Err("has a prefix that is not a DNS-1123 subdomain");
    }
    if name.is_empty() || label_value(name).is_err() {
        return Err(
            "is not a qualified name (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit, after an optional DNS subdomain prefix and '/')",
        );
    }
    Ok(())
}

fn label_value(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let valid = b.is_empty()
        || (b.len() <= 63
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c)));
    if valid {
        Ok(())
    } else {
        Err(
            "is not a valid label value (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)",
        )
    }
}
