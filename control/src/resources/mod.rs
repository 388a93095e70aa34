//! Kubernetes resources berth serves: kinds, validation with field paths,
//! defaults, ClusterIP and NodePort allocation.
//!
//! [`Resources`] is the API server's [`Admission`]: every write of a Node,
//! Namespace, Pod, Deployment or Service passes through
//! [`Admission::admit`] before anything is stored, and every delete asks
//! [`Admission::release`] what else it frees.
//!
//! # Design
//! - **Types.** Objects are decoded into k8s-openapi's types (`v1_34`), so
//!   the YAML of kubectl tutorials applies unchanged, and written back
//!   re-encoded from them, defaults included. Decoding is strict, as
//!   Kubernetes' field validation is: a field the type does not have is
//!   refused (`spec.replica: unknown field "spec.replica"`) instead of
//!   silently dropped, and a value of the wrong type names its field (see
//!   `decode.rs`). `apiVersion` and `kind` may be left out; when given they
//!   must match the URL's kind.
//! - **Errors.** Every rule records a [`FieldError`] and checking goes on,
//!   so one answer lists every problem; reasons use apimachinery's wording
//!   (`Invalid value: -1: must be greater than or equal to 0`,
//!   `Required value`, `Unsupported value: …: supported values: …`,
//!   `Duplicate value: …`, `Forbidden: …`). A rejected write returns no
//!   operations, and admission itself never writes.
//! - **Order**, as in the Kubernetes API server: decode → validate and
//!   default (422 for all problems) → namespace exists (404,
//!   `namespaces "x" not found`; `default` always exists; a namespace being
//!   deleted refuses new objects with 403) → server-set fields →
//!   allocation.
//! - **Server-set metadata.** On create `uid` (a random UUID),
//!   `creationTimestamp` and `generation: 1` are set and any client value
//!   of them, of `resourceVersion`, `selfLink` and the deletion fields is
//!   dropped; `generateName` is honoured. On update `uid` may be left out
//!   but not changed, `creationTimestamp` and the deletion fields keep their
//!   stored values, and `generation` goes up when `spec` changed.
//!   `resourceVersion` is the API server's: it compares it with the store's
//!   and sets it.
//! - **Status.** A create ignores the client's status (a Pod starts
//!   `Pending`, a Namespace `Active`) except for a Node, which its agent
//!   registers with its capacity. An update without `status` keeps the
//!   stored one, so `berth apply` of a manifest never wipes it; an update
//!   with one replaces it (agents and controllers write status this way;
//!   Kubernetes' separate `/status` subresource is not modelled).
//! - **Endpoints** are served as `discovery.k8s.io/v1` `EndpointSlice`s
//!   ([`ENDPOINT_SLICE`]): unlike `v1` `Endpoints` (deprecated since
//!   Kubernetes 1.33), a slice carries the `ready`, `serving` and
//!   `terminating` conditions of each address. The endpoints controller
//!   keeps one slice per Service, named after it and labelled
//!   `kubernetes.io/service-name`. The kind is read-only: [`Resources`]
//!   refuses every write of it, and the controller stores slices through the
//!   store directly, without admission.
//! - **Allocation** (`ranges.rs`): one store key per ClusterIP or NodePort,
//!   created with [`Op::Create`] in the same transaction as the Service, so
//!   two concurrent creates can never hold the same address: the loser's
//!   transaction fails with [`StoreError::AlreadyExists`] on the record
//!   ([`is_allocation_race`]) and the API server runs admission again.
//!   A free address is found by listing the records and probing from a
//!   random start. Updates keep the ClusterIP (immutable) and the node
//!   ports a client leaves out, as Kubernetes does; node ports that are
//!   dropped are released in the same transaction.
//! - **berth annotations** (`berth.dev/`): `lb-algorithm` (`wrr`,
//!   `maglev`, `random`) on a Service; `weight` (1..=65535) and
//!   `pids-limit` on a Pod or pod template. Any other `berth.dev/` key, or
//!   one on the wrong kind, is refused so that a typo is caught.
//!
//! # Limitations
//! - One address family: IPv4 Services only; ClusterIP and NodePort types
//!   (LoadBalancer and ExternalName are refused), and only the `Cluster`
//!   traffic policies.
//! - Pod specs are immutable except for binding `nodeName` once: berth
//!   replaces pods rather than changing them (Kubernetes also allows image
//!   changes in place).
//! - Features the agent cannot run (volumes, init containers, host
//!   namespaces, privileged containers, …) are refused here, so the list
//!   must follow the agent's (`agent/src/pod/manifest.rs`).
//! - Allocation records of Services deleted outside the API (by hand in the
//!   store) are not repaired; Kubernetes runs a repair loop for that.
//! - A store failure during admission is reported as
//!   [`Rejection::Conflict`], as the seam has no variant for internal
//!   errors.
//! - Duplicate JSON keys cannot be reported: the body is already a
//!   [`serde_json::Value`] (the last key wins).

mod decode;
mod deployment;
mod field;
mod meta;
mod names;
mod node;
mod node_restriction;
mod pod;
mod quantity;
mod ranges;
mod selector;
mod service;
mod termination;

#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::Metadata;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::field::Errors;
use self::meta::{BerthAnnotations, MetaRules, NameRule};
pub use self::meta::{
    LB_ALGORITHM_ANNOTATION, LB_ALGORITHMS, MAX_WEIGHT, PIDS_LIMIT_ANNOTATION, WEIGHT_ANNOTATION, parse_weight,
};
pub use self::node::validate_node_status;
pub use self::quantity::{QuantityError, parse_cpu, parse_memory};
pub use self::ranges::{NODE_PORTS_PREFIX, NodePortRange, Owner, RangeError, SERVICE_IPS_PREFIX, ServiceCidr};
pub use self::selector::selector_matches;
pub use self::termination::{deletion_deadline_ms, is_terminating, namespace_deletion, pod_deletion};
pub use crate::api::admission::{Admission, Deletion, FieldError, KindInfo, Rejection};
use crate::store::{Op, Store, StoreError};

/// The namespace that always exists.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Where allocation records live (see `ranges.rs`).
pub const RANGES_PREFIX: &str = "/registry/ranges/";

pub const NAMESPACE: KindInfo =
    KindInfo { api_version: "v1", kind: "Namespace", resource: "namespaces", namespaced: false, read_only: false };
pub const NODE: KindInfo =
    KindInfo { api_version: "v1", kind: "Node", resource: "nodes", namespaced: false, read_only: false };
pub const POD: KindInfo =
    KindInfo { api_version: "v1", kind: "Pod", resource: "pods", namespaced: true, read_only: false };
pub const SERVICE: KindInfo =
    KindInfo { api_version: "v1", kind: "Service", resource: "services", namespaced: true, read_only: false };
pub const DEPLOYMENT: KindInfo = KindInfo {
    api_version: "apps/v1",
    kind: "Deployment",
    resource: "deployments",
    namespaced: true,
    read_only: false,
};
/// Derived endpoints, one slice per Service (see the module docs).
pub const ENDPOINT_SLICE: KindInfo = KindInfo {
    api_version: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    resource: "endpointslices",
    namespaced: true,
    read_only: true,
};
/// A Deployment's revision history: one per distinct pod template, written
/// by the Deployment controller (berth has no ReplicaSets to carry it).
pub const CONTROLLER_REVISION: KindInfo = KindInfo {
    api_version: "apps/v1",
    kind: "ControllerRevision",
    resource: "controllerrevisions",
    namespaced: true,
    read_only: true,
};
/// Every kind served.
pub const KINDS: [KindInfo; 7] = [NAMESPACE, NODE, POD, SERVICE, DEPLOYMENT, ENDPOINT_SLICE, CONTROLLER_REVISION];

/// The store key of an object: `/registry/<resource>/<namespace>/<name>`,
/// or `/registry/<resource>/<name>` for a cluster-scoped kind (whose
/// `namespace` is ignored). A namespaced kind without a namespace is in
/// [`DEFAULT_NAMESPACE`].
pub fn store_key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", store_prefix(kind, namespace.or(Some(DEFAULT_NAMESPACE))))
}

/// The key prefix of a kind's objects: in one namespace, or in all of them
/// (`namespace` = None, or a cluster-scoped kind). Ends with `/`.
pub fn store_prefix(kind: &KindInfo, namespace: Option<&str>) -> String {
    match namespace.filter(|_| kind.namespaced) {
        Some(ns) => format!("/registry/{}/{ns}/", kind.resource),
        None => format!("/registry/{}/", kind.resource),
    }
}

/// Whether a failed transaction lost an allocation race: another writer
/// created or changed an allocation record first. The API server then runs
/// admission again, which sees the record and picks another address.
pub fn is_allocation_race(err: &StoreError) -> bool {
    match err {
        StoreError::AlreadyExists { key, .. } | StoreError::Conflict { key, .. } | StoreError::NotFound { key } => {
            key.starts_with(RANGES_PREFIX)
        }
        _ => false,
    }
}

/// A version 4 UUID from 128 random bits, as `metadata.uid` is written.
pub fn uuid_v4(high: u64, low: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&high.to_le_bytes());
    b[8..].copy_from_slice(&low.to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Where Services get their addresses and ports from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourcesConfig {
    /// `198.19.0.0/16` by default.
    pub service_cidr: ServiceCidr,
    /// `30000-32767` by default.
    pub node_port_range: NodePortRange,
}

/// berth's resource rules; see the module docs.
pub struct Resources {
    config: ResourcesConfig,
    /// Keys the random numbers: uids, generated names, allocation starts.
    /// Uniqueness, not secrecy, is what they need.
    seed: RandomState,
    counter: AtomicU64,
}

impl Resources {
    pub fn new(config: ResourcesConfig) -> Resources {
        Resources { config, seed: RandomState::new(), counter: AtomicU64::new(0) }
    }

    pub fn config(&self) -> &ResourcesConfig {
        &self.config
    }

    fn random(&self) -> u64 {
        self.seed.hash_one(self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// A random (version 4) UUID.
    fn uid(&self) -> String {
        uuid_v4(self.random(), self.random())
    }

    fn check_namespace(&self, store: &dyn Store, namespace: &str) -> Result<(), Rejection> {
        if namespace == DEFAULT_NAMESPACE {
            return Ok(());
        }
        let stored = store.get(&store_key(&NAMESPACE, None, namespace)).map_err(store_error)?;
        let Some(stored) = stored else {
            return Err(Rejection::NotFound(format!("namespaces {namespace:?} not found")));
        };
        let ns: Value = serde_json::from_slice(&stored.value).unwrap_or(Value::Null);
        let deleting = ns.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
            || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        if deleting {
            return Err(Rejection::Forbidden(format!(
                "namespaces {namespace:?} is forbidden: unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    fn admit_as<T: Rules>(
        &self,
        info: &KindInfo,
        object: &mut Value,
        old: Option<&Value>,
        store: &dyn Store,
    ) -> Result<Vec<Op>, Rejection> {
        let mut errs = Errors::default();
        let Some(mut new) = decode::strict::<T>(object, &mut errs) else {
            return Err(Rejection::Invalid(errs.into_vec()));
        };
        let old = match old {
            None => None,
            Some(old) => Some(
                T::deserialize(old)
                    .map_err(|e| Rejection::Conflict(format!("the stored {} cannot be decoded: {e}", info.kind)))?,
            ),
        };
        let mut random = || self.random();
        meta::validate(new.metadata_mut(), old.as_ref().map(Metadata::metadata), T::META, &mut random, &mut errs);
        new.validate(object, old.as_ref(), &self.config, &mut errs);
        errs.into_result()?;

        match &old {
            None => {
                if info.namespaced {
                    self.check_namespace(store, new.metadata().namespace.as_deref().unwrap_or_default())?;
                }
                meta::stamp_new(new.metadata_mut(), self.uid(), now());
            }
            Some(old) => meta::carry_over(new.metadata_mut(), old.metadata(), false),
        }
        new.status(old.as_ref());
        let owner = owner(new.metadata());
        let ops = new.allocate(old.as_ref(), &owner, self, store)?;
        if let Some(old) = &old {
            let changed = new.spec_json() != old.spec_json();
            meta::carry_over(new.metadata_mut(), old.metadata(), changed);
        }
        // k8s-openapi's types always encode (string-keyed maps only).
        *object = serde_json::to_value(&new)
            .map_err(|e| Rejection::Conflict(format!("the {} cannot be encoded: {e}", info.kind)))?;
        Ok(ops)
    }
}

/// The current time, to the second (as Kubernetes stores it).
fn now() -> Time {
    use k8s_openapi::jiff::Timestamp;
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    // Out of jiff's range only with a clock beyond year 9999.
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn owner(meta: &ObjectMeta) -> Owner {
    Owner {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    }
}

fn store_error(e: StoreError) -> Rejection {
    Rejection::Conflict(format!("reading the store: {e}"))
}

/// The served kinds, by what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    Deployment,
    EndpointSlice,
    ControllerRevision,
}

fn kind_of(info: &KindInfo) -> Option<Kind> {
    let kind = match (info.api_version, info.kind) {
        ("v1", "Namespace") => Kind::Namespace,
        ("v1", "Node") => Kind::Node,
        ("v1", "Pod") => Kind::Pod,
        ("v1", "Service") => Kind::Service,
        ("apps/v1", "Deployment") => Kind::Deployment,
        ("discovery.k8s.io/v1", "EndpointSlice") => Kind::EndpointSlice,
        ("apps/v1", "ControllerRevision") => Kind::ControllerRevision,
        _ => return None,
    };
    Some(kind)
}

/// `apiVersion` and `kind`, when the body has them, must be the URL's.
fn check_type_meta(info: &KindInfo, object: &Value) -> Result<(), Rejection> {
    let Some(map) = object.as_object() else {
        return Err(Rejection::Invalid(vec![FieldError {
            field: String::new(),
            reason: "Invalid value: must be a JSON object with apiVersion, kind, metadata and spec".to_owned(),
        }]));
    };
    let mut errs = Errors::default();
    for (name, expected) in [("apiVersion", info.api_version), ("kind", info.kind)] {
        match map.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == expected => {}
            Some(other) => errs.invalid(name, other, format!("must be {expected:?}")),
        }
    }
    errs.into_result()
}

impl Admission for Resources {
    fn kinds(&self) -> Vec<KindInfo> {
        KINDS.to_vec()
    }

    fn admit(
        &self,
        kind: &KindInfo,
        object: &mut Value,
        old: Option<&Value>,
        store: &dyn Store,
    ) -> Result<Vec<Op>, Rejection> {
        let Some(which) = kind_of(kind) else {
            return Err(Rejection::NotFound("the server could not find the requested resource".to_owned()));
        };
        if kind.read_only || matches!(which, Kind::EndpointSlice | Kind::ControllerRevision) {
            let by = if which == Kind::ControllerRevision {
                "from Deployments by berth's Deployment controller"
            } else {
                "from Services and Pods by berth's endpoints controller"
            };
            return Err(Rejection::Invalid(vec![FieldError {
                field: "kind".to_owned(),
                reason: format!("Forbidden: {} are derived {by} and cannot be written through the API", kind.resource),
            }]));
        }
        check_type_meta(kind, object)?;
        match which {
            Kind::Namespace => self.admit_as::<Namespace>(kind, object, old, store),
            Kind::Node => self.admit_as::<Node>(kind, object, old, store),
            Kind::Pod => self.admit_as::<Pod>(kind, object, old, store),
            Kind::Service => self.admit_as::<Service>(kind, object, old, store),
            Kind::Deployment => self.admit_as::<Deployment>(kind, object, old, store),
            Kind::EndpointSlice | Kind::ControllerRevision => Ok(Vec::new()),
        }
    }

    fn deletion(&self, kind: &KindInfo, object: &Value, grace_seconds: Option<i64>, now_ms: u64) -> Deletion {
        match kind_of(kind) {
            Some(Kind::Pod) => pod_deletion(object, grace_seconds, now_ms),
            Some(Kind::Namespace) => namespace_deletion(object, now_ms),
            _ => Deletion::Now,
        }
    }

    fn restrict_node(&self, node: &str, kind: &KindInfo, object: &Value, old: Option<&Value>) -> Result<(), String> {
        match kind_of(kind) {
            Some(which) => node_restriction::check(node, which, object, old),
            None => Err(format!("node {node:?} may only write its own Node and the pods bound to it")),
        }
    }

    fn release(&self, kind: &KindInfo, object: &Value, store: &dyn Store) -> Vec<Op> {
        if kind_of(kind) != Some(Kind::Service) {
            return Vec::new();
        }
        match Service::deserialize(object) {
            Ok(svc) => service::release(&svc, &owner(&svc.metadata), store),
            Err(_) => Vec::new(),
        }
    }
}

/// What differs between kinds in [`Resources::admit_as`].
trait Rules: Serialize + DeserializeOwned + Metadata<Ty = ObjectMeta> {
    const META: MetaRules;

    /// Defaults and validates everything but `metadata`. `raw` is the
    /// request body.
    fn validate(&mut self, raw: &Value, old: Option<&Self>, config: &ResourcesConfig, errs: &mut Errors);

    /// Sets the status of a new object, or keeps the stored one when an
    /// update has none.
    fn status(&mut self, old: Option<&Self>);

    /// The spec, to tell whether `generation` goes up.
    fn spec_json(&self) -> Value;

    /// Store operations to commit with the object.
    fn allocate(
        &mut self,
        _old: Option<&Self>,
        _owner: &Owner,
        _resources: &Resources,
        _store: &dyn Store,
    ) -> Result<Vec<Op>, Rejection> {
        Ok(Vec::new())
    }
}

fn json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// An update without a status keeps the stored one.
fn keep_status<S: Clone>(status: &mut Option<S>, old: Option<&Option<S>>) {
    if status.is_none()
        && let Some(old) = old
    {
        status.clone_from(old);
    }
}

impl Rules for Namespace {
    const META: MetaRules =
        MetaRules { name: NameRule::Dns1123Label, namespaced: false, annotations: BerthAnnotations::None };

    fn validate(&mut self, _raw: &Value, _old: Option<&Self>, _config: &ResourcesConfig, _errs: &mut Errors) {}

    fn status(&mut self, old: Option<&Self>) {
        match old {
            None => node::namespace_status(self),
            Some(old) => keep_status(&mut self.status, Some(&old.status)),
        }
    }

    fn spec_json(&self) -> Value {
        json(&self.spec)
    }
}

impl Rules for Node {
    const META: MetaRules =
        MetaRules { name: NameRule::Dns1123Subdomain, namespaced: false, annotations: BerthAnnotations::None };

    fn validate(&mut self, _raw: &Value, _old: Option<&Self>, _config: &ResourcesConfig, errs: &mut Errors) {
        node::validate(self, errs);
    }

    fn status(&mut self, old: Option<&Self>) {
        keep_status(&mut self.status, old.map(|o| &o.status));
    }

    fn spec_json(&self) -> Value {
        json(&self.spec)
    }
}

impl Rules for Pod {
    const META: MetaRules =
        MetaRules { name: NameRule::Dns1123Subdomain, namespaced: true, annotations: BerthAnnotations::Pod };

    fn validate(&mut self, _raw: &Value, old: Option<&Self>, _config: &ResourcesConfig, errs: &mut Errors) {
        let Some(spec) = &mut self.spec else {
            errs.required("spec", "");
            return;
        };
        pod::pod_spec(spec, "spec", pod::Owner::Pod, errs);
        if let Some(old) = old.and_then(|o| o.spec.as_ref())
            && errs.is_empty()
        {
            pod::update(spec, old, errs);
        }
        // The status agents write (a create's status is ignored): a known
        // phase, and never out of a terminal one (kube's
        // ValidatePodStatusUpdate).
        let phase = |p: Option<&Pod>| p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase.clone());
        if let Some(new) = phase(Some(self)).filter(|_| old.is_some()) {
            const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
            if !PHASES.contains(&new.as_str()) {
                errs.unsupported("status.phase", &new, &PHASES);
            } else if let Some(was) = phase(old).filter(|w| matches!(w.as_str(), "Succeeded" | "Failed"))
                && new != was
            {
                errs.forbidden("status.phase", format!("cannot transition from terminal phase {was} to {new}"));
            }
        }
    }

    fn status(&mut self, old: Option<&Self>) {
        match old {
            None => self.status = Some(pod::new_status()),
            Some(old) => keep_status(&mut self.status, Some(&old.status)),
        }
    }

    fn spec_json(&self) -> Value {
        json(&self.spec)
    }
}

impl Rules for Deployment {
    const META: MetaRules =
        MetaRules { name: NameRule::Dns1123Subdomain, namespaced: true, annotations: BerthAnnotations::Deployment };

    fn validate(&mut self, raw: &Value, old: Option<&Self>, _config: &ResourcesConfig, errs: &mut Errors) {
        let selector_given = raw.pointer("/spec/selector").is_some_and(|s| !s.is_null());
        deployment::validate(self, selector_given, old, errs);
    }

    fn status(&mut self, old: Option<&Self>) {
        match old {
            None => self.status = None,
            Some(old) => keep_status(&mut self.status, Some(&old.status)),
        }
    }

    fn spec_json(&self) -> Value {
        json(&self.spec)
    }
}

impl Rules for Service {
    const META: MetaRules =
        MetaRules { name: NameRule::Dns1035Label, namespaced: true, annotations: BerthAnnotations::Service };

    fn validate(&mut self, _raw: &Value, old: Option<&Self>, config: &ResourcesConfig, errs: &mut Errors) {
        service::validate(self, old, &config.service_cidr, &config.node_port_range, errs);
    }

    fn status(&mut self, old: Option<&Self>) {
        match old {
            None => self.status = None,
            Some(old) => keep_status(&mut self.status, Some(&old.status)),
        }
    }

    fn spec_json(&self) -> Value {
        json(&self.spec)
    }

    fn allocate(
        &mut self,
        old: Option<&Self>,
        owner: &Owner,
        resources: &Resources,
        store: &dyn Store,
    ) -> Result<Vec<Op>, Rejection> {
        let config = &resources.config;
        let mut random = || resources.random();
        service::allocate(self, old, owner, &config.service_cidr, &config.node_port_range, store, &mut random)
    }
}
