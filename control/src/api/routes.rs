//! URL paths, Kubernetes style.

use super::admission::KindInfo;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/version`.
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`: the resources of one version.
    Resources(String),
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/bootstrap/v1/join`.
    Join,
    /// A collection: all namespaces (or cluster-scoped) when `namespace` is
    /// `None`.
    Collection { kind: KindInfo, namespace: Option<String> },
    /// One object.
    Object { kind: KindInfo, namespace: Option<String>, name: String },
}

/// Route `path` against the served `kinds`; `None` is a 404.
pub(super) fn route(path: &str, kinds: &[KindInfo]) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (api_version, rest): (String, &[&str]) = match segments.as_slice() {
        ["healthz" | "readyz" | "livez"] => return Some(Route::Health),
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group((*group).to_owned())),
        ["bootstrap", "v1", "join"] => return Some(Route::Join),
        ["openapi", "v2"] => return Some(Route::OpenApiV2),
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let find = |resource: &str| kinds.iter().find(|k| k.api_version == api_version && k.resource == resource).cloned();
    let non_empty = |s: &&str| !s.is_empty();
    match rest {
        [] => kinds.iter().any(|k| k.api_version == api_version).then_some(Route::Resources(api_version)),
        // `/api/v1/namespaces/{ns}` is the Namespace object itself when
        // namespaces are served; `/api/v1/namespaces/{ns}/{resource}…`
        // below is a namespaced collection.
        ["namespaces", namespace, resource] if non_empty(namespace) => {
            let kind = find(resource).filter(|k| k.namespaced)?;
            Some(Route::Collection { kind, namespace: Some((*namespace).to_owned()) })
        }
        ["namespaces", namespace, resource, name] if non_empty(namespace) && non_empty(name) => {
            let kind = find(resource).filter(|k| k.namespaced)?;
            Some(Route::Object { kind, namespace: Some((*namespace).to_owned()), name: (*name).to_owned() })
        }
        [resource] => Some(Route::Collection { kind: find(resource)?, namespace: None }),
        [resource, name] if non_empty(name) => {
            let kind = find(resource).filter(|k| !k.namespaced)?;
            Some(Route::Object { kind, namespace: None, name: (*name).to_owned() })
        }
        _ => None,
    }
}

/// The store key of an object.
pub(super) fn object_key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) if kind.namespaced => format!("/registry/{}/{namespace}/{name}", kind.resource),
        _ => format!("/registry/{}/{name}", kind.resource),
    }
}

/// The store prefix of a collection (with its trailing slash, so that
/// namespace `a` does not also match namespace `ab`).
pub(super) fn collection_prefix(kind: &KindInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if kind.namespaced => format!("/registry/{}/{namespace}/", kind.resource),
        _ => format!("/registry/{}/", kind.resource),
    }
}
