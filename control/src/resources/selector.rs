//! Label selectors: matching and validation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::field::{self, Errors};
use super::meta;

const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Whether `labels` satisfy `selector`: every `matchLabels` entry and every
/// `matchExpressions` requirement (`In`, `NotIn`, `Exists`,
/// `DoesNotExist`). An empty selector matches everything, as apimachinery's
/// `LabelSelectorAsSelector` does (an *absent* selector matches nothing;
/// callers holding an `Option` decide that). A requirement with an unknown
/// operator matches nothing: such selectors fail validation and are never
/// stored.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    match_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether the selector selects nothing in particular (no labels, no
/// expressions).
pub(crate) fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// apimachinery's `ValidateLabelSelector`.
pub(crate) fn validate(selector: &LabelSelector, path: &str, errs: &mut Errors) {
    if let Some(labels) = &selector.match_labels {
        meta::validate_labels(labels, &field::child(path, "matchLabels"), errs);
    }
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let path = field::index(&field::child(path, "matchExpressions"), i);
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.required(
                        field::child(&path, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.forbidden(
                        field::child(&path, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            other => errs.unsupported(field::child(&path, "operator"), other, &OPERATORS),
        }
        meta::validate_label_key(&req.key, &field::child(&path, "key"), errs);
        for (j, value) in values.iter().enumerate() {
            errs.invalid_each(
                &field::index(&field::child(&path, "values"), j),
                value,
                super::names::label_value(value),
            );
        }
    }
}

/// A selector as JSON for messages: `{"app":"web"}`.
pub(crate) fn show(selector: &LabelSelector) -> String {
    serde_json::to_string(selector).unwrap_or_default()
}
