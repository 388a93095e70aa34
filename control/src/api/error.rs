//! Request errors and the one place that turns them into Kubernetes
//! `Status` responses.

use std::convert::Infallible;

use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;
use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::admission::{FieldError, KindInfo, Rejection};
use crate::store::{Revision, StoreError};

/// A response body: a whole JSON document or a watch stream.
pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A whole body.
pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// One `StatusCause` of a 422: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `spec.ports[0].port`.
    pub field: String,
    /// `Invalid value: 0: must be between 1 and 65535, inclusive`.
    pub message: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
}

/// Why a request failed. Handlers return it; `response` is the only place
/// that turns it into an HTTP status and a `Status` body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such path or resource type.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// No such object.
    #[error("{} {name:?} not found", qualified(kind))]
    NotFound { kind: KindInfo, name: String },
    /// Admission found something missing (a namespace).
    #[error("{0}")]
    Missing(String),
    #[error("{} {name:?} already exists", qualified(kind))]
    AlreadyExists { kind: KindInfo, name: String },
    /// A stale resourceVersion, a failed precondition or an allocation
    /// another object holds.
    #[error("Operation cannot be fulfilled on {} {name:?}: {reason}", qualified(kind))]
    Conflict { kind: KindInfo, name: String, reason: String },
    /// Admission or the server's own checks refused the object.
    #[error("{} {name:?} is invalid: {}", kind.kind, causes_message(causes))]
    Invalid { kind: KindInfo, name: String, causes: Vec<Cause> },
    /// Malformed JSON/YAML, a name or namespace that does not match the URL.
    #[error("{0}")]
    BadRequest(String),
    /// No credentials or unknown ones.
    #[error("Unauthorized")]
    Unauthorized,
    /// Known caller, not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("Request entity too large: limit is {limit}")]
    TooLarge { limit: usize },
    #[error(
        "the body of the request was in an unknown format ({content_type}) - accepted media types include: {accepted}"
    )]
    UnsupportedMediaType { content_type: String, accepted: &'static str },
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A watch from a revision the history no longer holds.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: Revision, oldest: Revision },
    /// A list or watch from a revision the store has not reached: the
    /// client's resourceVersion came from elsewhere (another cluster, a
    /// restored backup). kube-apiserver answers 504 with the cause
    /// `ResourceVersionTooLarge`.
    #[error("Too large resource version: {requested}, current: {current}")]
    ResourceVersionTooLarge { requested: Revision, current: Revision },
    /// The store failed; the cause is logged, not sent.
    #[error("storage error during {operation}")]
    Store {
        operation: &'static str,
        #[source]
        source: StoreError,
    },
    /// A bug or a corrupt stored object; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The error for an admission [`Rejection`] of `object`.
    pub(super) fn rejected(rejection: Rejection, kind: &KindInfo, name: &str, object: &Value) -> ApiError {
        match rejection {
            Rejection::Invalid(errors) => ApiError::Invalid {
                kind: kind.clone(),
                name: name.to_owned(),
                causes: errors.iter().map(|e| cause(e, object)).collect(),
            },
            Rejection::Conflict(reason) => ApiError::Conflict { kind: kind.clone(), name: name.to_owned(), reason },
            Rejection::NotFound(message) => ApiError::Missing(message),
            Rejection::Forbidden(message) => ApiError::Forbidden(message),
        }
    }

    /// A 422 with one cause found by the server itself.
    pub(super) fn invalid(kind: &KindInfo, name: &str, field: &str, message: String) -> ApiError {
        let (reason, _) = cause_reason(&message);
        ApiError::Invalid {
            kind: kind.clone(),
            name: name.to_owned(),
            causes: vec![Cause { field: field.to_owned(), message, reason }],
        }
    }

    /// The 409 for a write based on an old resourceVersion.
    pub(super) fn modified(kind: &KindInfo, name: &str) -> ApiError {
        ApiError::Conflict {
            kind: kind.clone(),
            name: name.to_owned(),
            reason: "the object has been modified; please apply your changes to the latest version and try again"
                .to_owned(),
        }
    }

    pub(super) fn store(operation: &'static str, source: StoreError) -> ApiError {
        match source {
            StoreError::TooOld { requested, oldest } => ApiError::Expired { requested, oldest },
            source => ApiError::Store { operation, source },
        }
    }

    /// HTTP status and Kubernetes `reason`.
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NoRoute | ApiError::NotFound { .. } | ApiError::Missing(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::UnsupportedMediaType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            // kube-apiserver answers a compacted watch with 410 and reason
            // Expired (`NewResourceExpired`); client-go treats Expired and
            // Gone alike.
            ApiError::Expired { .. } => (StatusCode::GONE, "Expired"),
            ApiError::ResourceVersionTooLarge { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            ApiError::Store { .. } | ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The Kubernetes `Status` object for this error.
    pub(super) fn to_status(&self) -> Value {
        let (code, reason) = self.status();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        let details = match self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name, .. } => {
                Some(json!({ "name": name, "group": group(kind), "kind": kind.resource }))
            }
            ApiError::Invalid { kind, name, causes } => Some(json!({
                "name": name,
                "group": group(kind),
                "kind": kind.kind,
                "causes": causes
                    .iter()
                    .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
                    .collect::<Vec<_>>(),
            })),
            ApiError::ResourceVersionTooLarge { .. } => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

/// The response for `err`: the single mapping from errors to HTTP.
pub(super) fn response(err: &ApiError) -> Response<Body> {
    let (code, _) = err.status();
    match err {
        ApiError::Store { source, .. } => tracing::error!(error = %err, cause = %source, "store failure"),
        ApiError::Internal(_) => tracing::error!(error = %err, "internal error"),
        _ => {}
    }
    let body = serde_json::to_vec(&err.to_status()).unwrap_or_default();
    let mut builder = Response::builder().status(code).header(header::CONTENT_TYPE, "application/json");
    if matches!(err, ApiError::Unauthorized) {
        builder = builder.header(header::WWW_AUTHENTICATE, "Bearer realm=\"berth\"");
    }
    // The builder only fails on invalid header values; ours are constants.
    builder.body(full(body)).unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// `pods`, or `deployments.apps` for a named group, as kube-apiserver's
/// messages name resources.
pub(super) fn qualified(kind: &KindInfo) -> String {
    match group(kind) {
        "" => kind.resource.to_owned(),
        group => format!("{}.{group}", kind.resource),
    }
}

/// The API group of `kind`: `""` for the core group, `apps` for `apps/v1`.
pub(super) fn group(kind: &KindInfo) -> &'static str {
    kind.api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn causes_message(causes: &[Cause]) -> String {
    let one = |c: &Cause| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) };
    match causes {
        [c] => one(c),
        causes => format!("[{}]", causes.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

/// kube-apiserver's error types, by the prefix of their message.
const CAUSE_TYPES: &[(&str, &str)] = &[
    ("Invalid value", "FieldValueInvalid"),
    ("Required value", "FieldValueRequired"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Forbidden", "FieldValueForbidden"),
    ("Too long", "FieldValueTooLong"),
    ("Too many", "FieldValueTooMany"),
    ("Not found", "FieldValueNotFound"),
    ("Internal error", "InternalError"),
    // Strict decoding: the value is the problem's subject, not its cause.
    ("unknown field", "FieldValueInvalid"),
];

/// The cause reason of a message that already names its type, if it does.
fn cause_reason(message: &str) -> (&'static str, bool) {
    CAUSE_TYPES
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map_or(("FieldValueInvalid", false), |(_, reason)| (reason, true))
}

/// Admission's `reason` ("must be between 1 and 65535, inclusive") in
/// kube-apiserver's form: prefixed with the value found at the field path
/// (`Invalid value: 0: …`), or `Required value: …` when the field is absent.
/// A reason that already starts with one of the kube types is kept.
fn cause(error: &FieldError, object: &Value) -> Cause {
    let (reason, typed) = cause_reason(&error.reason);
    if typed {
        return Cause { field: error.field.clone(), message: error.reason.clone(), reason };
    }
    match lookup(object, &error.field) {
        Some(value) if !value.is_null() => Cause {
            field: error.field.clone(),
            message: format!("Invalid value: {value}: {}", error.reason),
            reason: "FieldValueInvalid",
        },
        _ => Cause {
            field: error.field.clone(),
            message: format!("Required value: {}", error.reason),
            reason: "FieldValueRequired",
        },
    }
}

/// The value at a field path like `spec.ports[0].port` or
/// `metadata.labels[app.kubernetes.io/name]`.
pub(super) fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut value = object;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            let index = &inner[..end];
            value = match (value, index.parse::<usize>()) {
                (Value::Array(items), Ok(i)) => items.get(i)?,
                _ => value.get(index)?,
            };
            rest = &inner[end + 1..];
        } else {
            let name = rest.strip_prefix('.').unwrap_or(rest);
            let end = name.find(['.', '[']).unwrap_or(name.len());
            value = value.get(&name[..end])?;
            rest = &name[end..];
        }
    }
    Some(value)
}
