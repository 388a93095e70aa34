//! Deployments (`apps/v1`): defaults and validation.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, RollingUpdateDeployment};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::{self, Errors};
use super::names;
use super::pod;
use super::selector;

/// Kubernetes' defaults.
pub const DEFAULT_REPLICAS: i32 = 1;
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
pub const DEFAULT_MAX_SURGE: &str = "25%";
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";
const STRATEGIES: [&str; 2] = ["Recreate", "RollingUpdate"];

/// Defaults and validates a Deployment's spec. `selector_given` says
/// whether the request had `spec.selector` at all (k8s-openapi turns an
/// absent one into an empty one).
pub(crate) fn validate(d: &mut Deployment, selector_given: bool, old: Option<&Deployment>, errs: &mut Errors) {
    let Some(spec) = &mut d.spec else {
        errs.required("spec", "");
        return;
    };
    let replicas = *spec.replicas.get_or_insert(DEFAULT_REPLICAS);
    if replicas < 0 {
        errs.invalid("spec.replicas", replicas, "must be greater than or equal to 0");
    }
    selector_and_labels(spec, selector_given, errs);
    pod::template(&mut spec.template, "spec.template", errs);
    strategy(spec, errs);
    let history = *spec.revision_history_limit.get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    if history < 0 {
        errs.invalid("spec.revisionHistoryLimit", history, "must be greater than or equal to 0");
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready < 0 {
        errs.invalid("spec.minReadySeconds", min_ready, "must be greater than or equal to 0");
    }
    let deadline = *spec.progress_deadline_seconds.get_or_insert(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    if deadline < 0 {
        errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than or equal to 0");
    } else if deadline <= min_ready {
        errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds");
    }
    if let Some(old) = old.and_then(|o| o.spec.as_ref())
        && old.selector != spec.selector
    {
        errs.invalid("spec.selector", selector::show(&spec.selector), "field is immutable");
    }
}

fn selector_and_labels(spec: &DeploymentSpec, selector_given: bool, errs: &mut Errors) {
    if !selector_given {
        errs.required("spec.selector", "");
        return;
    }
    if selector::is_empty(&spec.selector) {
        errs.invalid("spec.selector", selector::show(&spec.selector), "empty selector is invalid for deployment");
        return;
    }
    selector::validate(&spec.selector, "spec.selector", errs);
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    if !selector::selector_matches(&spec.selector, &labels) {
        errs.invalid(
            "spec.template.metadata.labels",
            serde_json::to_string(&labels).unwrap_or_default(),
            "`selector` does not match template `labels`",
        );
    }
}

fn strategy(spec: &mut DeploymentSpec, errs: &mut Errors) {
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".to_owned());
    match kind.as_str() {
        "RollingUpdate" => {
            let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
            let surge =
                rolling.max_surge.get_or_insert_with(|| IntOrString::String(DEFAULT_MAX_SURGE.to_owned())).clone();
            let unavailable = rolling
                .max_unavailable
                .get_or_insert_with(|| IntOrString::String(DEFAULT_MAX_UNAVAILABLE.to_owned()))
                .clone();
            let surge_zero = int_or_percent(&surge, "spec.strategy.rollingUpdate.maxSurge", errs) == Some(0);
            let unavailable_path = "spec.strategy.rollingUpdate.maxUnavailable";
            let unavailable_value = int_or_percent(&unavailable, unavailable_path, errs);
            if let (IntOrString::String(text), Some(percent)) = (&unavailable, unavailable_value)
                && percent > 100
            {
                errs.invalid_str(unavailable_path, text, "must not be greater than 100%");
            }
            if surge_zero && unavailable_value == Some(0) {
                errs.invalid(unavailable_path, show(&unavailable), "may not be 0 when `maxSurge` is 0");
            }
        }
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
        }
        other => errs.unsupported("spec.strategy.type", other, &STRATEGIES),
    }
}

/// A non-negative count or percentage (its number), or `None` after
/// recording why not.
fn int_or_percent(value: &IntOrString, path: &str, errs: &mut Errors) -> Option<u64> {
    match value {
        IntOrString::Int(n) => match u64::try_from(*n) {
            Ok(n) => Some(n),
            Err(_) => {
                errs.invalid(path, n, "must be greater than or equal to 0");
                None
            }
        },
        IntOrString::String(s) => match names::percent(s) {
            Ok(p) => Some(p),
            Err(message) => {
                errs.invalid_str(path, s, message);
                None
            }
        },
    }
}

fn show(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => field::quote(s),
    }
}
