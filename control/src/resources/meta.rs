//! `metadata`: names, labels, annotations (berth's included), owner
//! references, and the fields the server sets.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::field::{self, Errors};
use super::names;

/// Kubernetes' bound on all annotations of an object together.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Kubernetes keeps generated names within a DNS label: the prefix is cut
/// to 58 characters before 5 random ones are added.
const MAX_GENERATE_NAME_PREFIX: usize = 58;
/// The characters of a generated name suffix (apimachinery's: no vowels,
/// no look-alikes).
const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Annotation: which load-balancing algorithm a Service uses.
pub const LB_ALGORITHM_ANNOTATION: &str = "berth.dev/lb-algorithm";
/// The values of [`LB_ALGORITHM_ANNOTATION`].
pub const LB_ALGORITHMS: [&str; 3] = ["maglev", "random", "wrr"];
/// Annotation on a pod or pod template: the pod's weight as a Service
/// backend.
pub const WEIGHT_ANNOTATION: &str = "berth.dev/weight";
/// The largest [`WEIGHT_ANNOTATION`] (the data plane's bound).
pub const MAX_WEIGHT: u32 = 65_535;
/// Annotation on a pod or pod template: `pids.max` of each container (the
/// agent applies it).
pub const PIDS_LIMIT_ANNOTATION: &str = "berth.dev/pids-limit";
const BERTH_PREFIX: &str = "berth.dev/";

/// How an object's name is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// Pods, Deployments, Nodes.
    Dns1123Subdomain,
    /// Namespaces.
    Dns1123Label,
    /// Services.
    Dns1035Label,
}

impl NameRule {
    fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Dns1123Subdomain => names::dns1123_subdomain(name),
            NameRule::Dns1123Label => names::dns1123_label(name),
            NameRule::Dns1035Label => names::dns1035_label(name),
        }
    }
}

/// Which `berth.dev/` annotations an object may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BerthAnnotations {
    /// A Service: `berth.dev/lb-algorithm`.
    Service,
    /// A Pod or a pod template: `berth.dev/weight`, `berth.dev/pids-limit`.
    Pod,
    /// A Deployment's own metadata: none, but a pointer to the template.
    Deployment,
    /// Anything else: none.
    None,
}

/// The metadata rules of one kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaRules {
    pub(crate) name: NameRule,
    pub(crate) namespaced: bool,
    pub(crate) annotations: BerthAnnotations,
}

/// Validates `meta` of an object being created (`old` = None) or updated,
/// generating a name from `generateName` on create. `random` feeds name
/// generation.
pub(crate) fn validate(
    meta: &mut ObjectMeta,
    old: Option<&ObjectMeta>,
    rules: MetaRules,
    random: &mut dyn FnMut() -> u64,
    errs: &mut Errors,
) {
    let name = meta.name.clone().filter(|n| !n.is_empty());
    match (name, old) {
        (Some(name), _) => errs.invalid_each("metadata.name", &name, rules.name.check(&name)),
        (None, None) => match meta.generate_name.clone().filter(|g| !g.is_empty()) {
            Some(prefix) => {
                // apimachinery validates the prefix with its trailing dash
                // masked, as the random suffix follows it.
                let masked = prefix.strip_suffix('-').map_or_else(|| prefix.clone(), |p| format!("{p}a"));
                let problems = rules.name.check(&masked);
                if problems.is_empty() {
                    meta.name = Some(generate_name(&prefix, random));
                } else {
                    errs.invalid_each("metadata.generateName", &prefix, problems);
                }
            }
            None => errs.required("metadata.name", "name or generateName is required"),
        },
        (None, Some(_)) => errs.required("metadata.name", ""),
    }
    if rules.namespaced {
        match meta.namespace.as_deref().filter(|n| !n.is_empty()) {
            // The API server fills the namespace from the URL before
            // admission; a body without one reached here by mistake.
            None => errs.required("metadata.namespace", ""),
            Some(ns) => errs.invalid_each("metadata.namespace", ns, names::dns1123_label(ns)),
        }
    } else {
        // apimachinery clears it on cluster-scoped objects.
        meta.namespace = None;
    }
    if let Some(old) = old {
        if meta.name != old.name {
            errs.invalid_str("metadata.name", meta.name.as_deref().unwrap_or_default(), "field is immutable");
        }
        if rules.namespaced && meta.namespace != old.namespace {
            errs.invalid_str("metadata.namespace", meta.namespace.as_deref().unwrap_or_default(), "field is immutable");
        }
        match meta.uid.as_deref().filter(|u| !u.is_empty()) {
            Some(uid) if Some(uid) != old.uid.as_deref() => errs.invalid_str("metadata.uid", uid, "field is immutable"),
            _ => {}
        }
    }
    if let Some(labels) = &meta.labels {
        validate_labels(labels, "metadata.labels", errs);
    }
    if let Some(annotations) = &meta.annotations {
        validate_annotations(annotations, "metadata.annotations", rules.annotations, errs);
    }
    owner_references(meta, errs);
    for (i, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        errs.invalid_each(&field::index("metadata.finalizers", i), finalizer, names::qualified_name(finalizer));
    }
}

fn owner_references(meta: &ObjectMeta, errs: &mut Errors) {
    let mut controllers = Vec::new();
    for (i, owner) in meta.owner_references.iter().flatten().enumerate() {
        let path = field::index("metadata.ownerReferences", i);
        for (name, value, what) in [
            ("apiVersion", &owner.api_version, "version"),
            ("kind", &owner.kind, "kind"),
            ("name", &owner.name, "name"),
            ("uid", &owner.uid, "uid"),
        ] {
            if value.is_empty() {
                errs.invalid_str(field::child(&path, name), value, format!("{what} must not be empty"));
            }
        }
        if owner.controller == Some(true) {
            controllers.push(format!("{}/{}", owner.kind, owner.name));
        }
    }
    if controllers.len() > 1 {
        errs.invalid(
            "metadata.ownerReferences",
            serde_json::to_string(&controllers).unwrap_or_default(),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        );
    }
}

/// `prefix` (cut to 58 characters) and 5 random characters.
fn generate_name(prefix: &str, random: &mut dyn FnMut() -> u64) -> String {
    // Names are checked ASCII before this is called (the prefix passed the
    // name rule), so any byte index is a character boundary.
    let prefix = prefix.get(..MAX_GENERATE_NAME_PREFIX.min(prefix.len())).unwrap_or(prefix);
    let mut bits = random();
    let mut name = prefix.to_owned();
    for _ in 0..5 {
        let len = GENERATE_ALPHABET.len() as u64;
        // `bits % len` < 27, so the index is in bounds.
        name.push(char::from(GENERATE_ALPHABET[usize::try_from(bits % len).unwrap_or(0)]));
        bits /= len;
    }
    name
}

/// apimachinery's `ValidateLabels`.
pub(crate) fn validate_labels(labels: &BTreeMap<String, String>, path: &str, errs: &mut Errors) {
    for (key, value) in labels {
        validate_label_key(key, path, errs);
        errs.invalid_each(path, value, names::label_value(value));
    }
}

/// apimachinery's `ValidateLabelName`.
pub(crate) fn validate_label_key(key: &str, path: &str, errs: &mut Errors) {
    errs.invalid_each(path, key, names::qualified_name(key));
}

/// apimachinery's `ValidateAnnotations`, then berth's annotations.
pub(crate) fn validate_annotations(
    annotations: &BTreeMap<String, String>,
    path: &str,
    berth: BerthAnnotations,
    errs: &mut Errors,
) {
    let mut total = 0usize;
    for (key, value) in annotations {
        total = total.saturating_add(key.len()).saturating_add(value.len());
        errs.invalid_each(path, key, names::qualified_name(&key.to_ascii_lowercase()));
        if key.starts_with(BERTH_PREFIX) {
            berth_annotation(key, value, &field::key(path, key), berth, errs);
        }
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(path, format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"));
    }
}

fn berth_annotation(key: &str, value: &str, path: &str, berth: BerthAnnotations, errs: &mut Errors) {
    match (key, berth) {
        (LB_ALGORITHM_ANNOTATION, BerthAnnotations::Service) => {
            if !LB_ALGORITHMS.contains(&value) {
                errs.unsupported(path, value, &LB_ALGORITHMS);
            }
        }
        (WEIGHT_ANNOTATION, BerthAnnotations::Pod) => {
            if parse_weight(value).is_none() {
                errs.invalid_str(path, value, format!("must be an integer between 1 and {MAX_WEIGHT}, inclusive"));
            }
        }
        (PIDS_LIMIT_ANNOTATION, BerthAnnotations::Pod) => {
            if !value.bytes().all(|b| b.is_ascii_digit()) || value.parse::<u64>().map_or(true, |n| n == 0) {
                errs.invalid_str(path, value, "must be a positive integer");
            }
        }
        (WEIGHT_ANNOTATION | PIDS_LIMIT_ANNOTATION, BerthAnnotations::Service) => {
            errs.forbidden(path, "belongs on the pods (or the pod template) behind the Service, not on the Service")
        }
        (WEIGHT_ANNOTATION | PIDS_LIMIT_ANNOTATION, BerthAnnotations::Deployment) => {
            errs.forbidden(path, "belongs on the pod template: spec.template.metadata.annotations")
        }
        (LB_ALGORITHM_ANNOTATION, _) => errs.forbidden(path, "belongs on a Service"),
        _ => {
            let known = match berth {
                BerthAnnotations::Service => LB_ALGORITHM_ANNOTATION.to_owned(),
                BerthAnnotations::Pod => format!("{WEIGHT_ANNOTATION}, {PIDS_LIMIT_ANNOTATION}"),
                BerthAnnotations::Deployment | BerthAnnotations::None => "none".to_owned(),
            };
            errs.forbidden(path, format!("unknown berth annotation (known on this object: {known})"));
        }
    }
}

/// A valid `berth.dev/weight` value: digits only, 1..=65535.
pub fn parse_weight(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u32>().ok().filter(|w| (1..=MAX_WEIGHT).contains(w))
}

/// The server-set fields of a new object: a fresh uid, the creation time,
/// generation 1, and nothing of what the client sent for them.
pub(crate) fn stamp_new(meta: &mut ObjectMeta, uid: String, now: Time) {
    meta.uid = Some(uid);
    meta.creation_timestamp = Some(now);
    meta.generation = Some(1);
    meta.resource_version = None;
    meta.self_link = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
}

/// The server-set fields of an updated object, from the stored one; the
/// generation goes up when the spec changed. `resourceVersion` is left as
/// sent: the API server compares it with the store's.
pub(crate) fn carry_over(meta: &mut ObjectMeta, old: &ObjectMeta, spec_changed: bool) {
    meta.uid.clone_from(&old.uid);
    meta.creation_timestamp.clone_from(&old.creation_timestamp);
    meta.deletion_timestamp.clone_from(&old.deletion_timestamp);
    meta.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
    meta.self_link = None;
    let generation = old.generation.unwrap_or(1);
    meta.generation = Some(if spec_changed { generation.saturating_add(1) } else { generation });
}
