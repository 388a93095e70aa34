//! Reading stored objects (as JSON) and command output in end-to-end
//! tests: missing fields read as empty.

use std::process::Output;

use serde_json::Value;

/// The label carrying a pod's template hash.
pub const HASH_LABEL: &str = "pod-template-hash";

/// The string at `pointer`, or "".
pub fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    str_at(object, "/metadata/name")
}

pub fn uid(object: &Value) -> &str {
    str_at(object, "/metadata/uid")
}

/// A pod's `pod-template-hash` label.
pub fn hash(pod: &Value) -> &str {
    pod.pointer("/metadata/labels").and_then(|l| l.get(HASH_LABEL)).and_then(Value::as_str).unwrap_or_default()
}

/// The image of a pod's first container.
pub fn image(pod: &Value) -> &str {
    str_at(pod, "/spec/containers/0/image")
}

pub fn node(pod: &Value) -> &str {
    str_at(pod, "/spec/nodeName")
}

pub fn terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The condition of this type in `status.conditions`.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object.pointer("/status/conditions").and_then(Value::as_array)?.iter().find(|c| c["type"] == kind)
}

/// `Ready` is `True`.
pub fn ready(object: &Value) -> bool {
    condition(object, "Ready").is_some_and(|c| c["status"] == "True")
}

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
