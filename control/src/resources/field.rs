//! Collecting validation failures in Kubernetes' wording.
//!
//! apimachinery's `field.Error` prints as `<path>: <type>: <value>: <detail>`
//! (`spec.replicas: Invalid value: -1: must be greater than or equal to 0`);
//! a [`FieldError`] keeps the path apart and the rest as its `reason`, so
//! the API server can show both the way `kubectl` does.

use std::fmt::Display;

use crate::api::admission::{FieldError, Rejection};

/// Every failure found so far, in the order found.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), reason: reason.into() });
    }

    /// `Required value`, with an optional detail.
    pub(crate) fn required(&mut self, field: impl Into<String>, detail: &str) {
        let reason = if detail.is_empty() { "Required value".to_owned() } else { format!("Required value: {detail}") };
        self.push(field, reason);
    }

    /// `Invalid value: <shown>: <detail>`; `shown` is already formatted
    /// (use [`quote`] for strings).
    pub(crate) fn invalid(&mut self, field: impl Into<String>, shown: impl Display, detail: impl Display) {
        self.push(field, format!("Invalid value: {shown}: {detail}"));
    }

    /// `Invalid value: "<value>": <detail>`.
    pub(crate) fn invalid_str(&mut self, field: impl Into<String>, value: &str, detail: impl Display) {
        self.invalid(field, quote(value), detail);
    }

    /// `Unsupported value: "<value>": supported values: "A", "B"`.
    pub(crate) fn unsupported(&mut self, field: impl Into<String>, value: &str, supported: &[&str]) {
        let list = supported.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
        self.push(field, format!("Unsupported value: {}: supported values: {list}", quote(value)));
    }

    /// `Duplicate value: <shown>`.
    pub(crate) fn duplicate(&mut self, field: impl Into<String>, shown: impl Display) {
        self.push(field, format!("Duplicate value: {shown}"));
    }

    /// `Forbidden: <detail>`.
    pub(crate) fn forbidden(&mut self, field: impl Into<String>, detail: impl Display) {
        self.push(field, format!("Forbidden: {detail}"));
    }

    /// A Kubernetes field berth cannot honour: ignoring it would run
    /// something other than what was asked.
    pub(crate) fn not_supported(&mut self, field: impl Into<String>, what: &str) {
        self.forbidden(field, format!("is not supported by berth ({what})"));
    }

    /// `Invalid value: "<value>": <message>` for each message of a name
    /// check ([`super::names`]).
    pub(crate) fn invalid_each(&mut self, field: &str, value: &str, messages: Vec<String>) {
        for message in messages {
            self.invalid_str(field, value, message);
        }
    }

    /// `Ok` when nothing was found, else 422 with every failure.
    pub(crate) fn into_result(self) -> Result<(), Rejection> {
        if self.0.is_empty() { Ok(()) } else { Err(Rejection::Invalid(self.0)) }
    }

    pub(crate) fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// A string as Go's `%q` shows it (close enough: Rust's `{:?}`).
pub(crate) fn quote(value: &str) -> String {
    format!("{value:?}")
}

/// `a.b` or `b` at the root.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// `path[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `path[key]`, apimachinery's spelling of a map entry.
pub(crate) fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}
