//! Object plumbing the server owns whatever the kind: metadata it sets
//! (uid, creationTimestamp, resourceVersion, generation), selectors,
//! merge patches, query strings, time and randomness.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use super::admission::KindInfo;
use serde_json::{Map, Value};

use super::error::lookup;
use crate::store::Revision;

/// Seconds since the Unix epoch, UTC.
pub(super) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is in 1..=31 and month in 1..=12 by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// `2025-01-02T03:04:05Z`, the form of `metav1.Time`.
pub(super) fn rfc3339(unix: i64) -> String {
    let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Random bytes from the TLS library's CSPRNG.
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], rustls::crypto::GetRandomFailed> {
    let mut bytes = [0; N];
    super::pki::crypto().secure_random.fill(&mut bytes)?;
    Ok(bytes)
}

/// A random (version 4) UUID, as Kubernetes' `metadata.uid`.
pub(super) fn new_uid() -> Result<String, rustls::crypto::GetRandomFailed> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// Five characters for `metadata.generateName`, from the alphabet
/// kube-apiserver uses (no vowels, no look-alikes).
pub(super) fn name_suffix() -> Result<String, rustls::crypto::GetRandomFailed> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = random_bytes::<5>()?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect())
}

/// `metadata`, created if absent. `None` if the object is not a JSON object
/// or its metadata is not one.
pub(super) fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let object = object.as_object_mut()?;
    object.entry("metadata").or_insert_with(|| Value::Object(Map::new())).as_object_mut()
}

/// A string field of `metadata`; empty strings count as absent.
pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str().filter(|s| !s.is_empty())
}

/// Set `metadata.resourceVersion` for a response or an event.
pub(super) fn with_resource_version(mut object: Value, revision: Revision) -> Value {
    if let Some(meta) = metadata_mut(&mut object) {
        meta.insert("resourceVersion".to_owned(), Value::String(revision.to_string()));
    }
    object
}

/// Why a name cannot be a path segment (and so a store key part), as
/// kube-apiserver's `IsValidPathSegmentName` says.
pub(super) fn path_segment_problem(name: &str) -> Option<&'static str> {
    match name {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        _ if name.contains('/') => Some("may not contain '/'"),
        _ if name.contains('%') => Some("may not contain '%'"),
        _ => None,
    }
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Decode a query string into pairs (`+` is a space, `%XX` a byte).
pub(super) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` query parameter: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// Parse kube's selector syntax: `a=b,c!=d,e,!f,g in (h,i),j notin (k)`.
    pub(super) fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_requirements(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).ok_or_else(|| format!("unable to parse requirement: {part:?}"))?);
        }
        Ok(LabelSelector(requirements))
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = object.get("metadata").and_then(|m| m.get("labels"));
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.contains(l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Split on the commas that separate requirements, not those inside a set.
fn split_requirements(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn is_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn parse_requirement(part: &str) -> Option<LabelRequirement> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return is_key(key).then(|| LabelRequirement::NotExists(key.to_owned()));
    }
    for (op, make) in [
        ("!=", LabelRequirement::NotEquals as fn(String, String) -> LabelRequirement),
        ("==", LabelRequirement::Equals),
        ("=", LabelRequirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            return (is_key(key) && (value.is_empty() || is_key(value)))
                .then(|| make(key.to_owned(), value.to_owned()));
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next()?.trim();
    let Some(rest) = words.next().map(str::trim) else {
        return is_key(key).then(|| LabelRequirement::Exists(key.to_owned()));
    };
    let (negated, set) =
        if let Some(set) = rest.strip_prefix("notin") { (true, set) } else { (false, rest.strip_prefix("in")?) };
    let values = set.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: BTreeSet<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
    if !is_key(key) || values.iter().any(|v| !v.is_empty() && !is_key(v)) {
        return None;
    }
    Some(if negated {
        LabelRequirement::NotIn(key.to_owned(), values)
    } else {
        LabelRequirement::In(key.to_owned(), values)
    })
}

/// A parsed `fieldSelector`: `metadata.name=web,spec.nodeName!=n1`. Only
/// the fields Kubernetes supports for the kind may be named ([`FieldSelector::check`]),
/// so a typo is an error rather than an empty list; a missing field reads
/// as the empty string, and numbers and booleans compare by their JSON
/// text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    pub(super) fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!("invalid selector: {part:?}; can't understand {part:?}"));
            };
            terms.push((path.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// Refuses a field the kind does not support, with kube-apiserver's
    /// message.
    pub(super) fn check(&self, kind: &KindInfo) -> Result<(), String> {
        const POD: &[&str] = &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ];
        let extra: &[&str] = match kind.kind {
            "Pod" => POD,
            "Node" => &["spec.unschedulable"],
            "Namespace" => &["status.phase"],
            "Service" => &["spec.clusterIP", "spec.type"],
            "EndpointSlice" => &["addressType"],
            _ => &[],
        };
        for (path, _, _) in &self.0 {
            let general = path == "metadata.name" || (kind.namespaced && path == "metadata.namespace");
            if !general && !extra.contains(&path.as_str()) {
                return Err(format!("field label not supported: {path}"));
            }
        }
        Ok(())
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let actual = match lookup(object, path) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub(super) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub(super) fn is_empty(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}
