//! Typed decoding with field paths, and strict field validation.
//!
//! k8s-openapi's types ignore fields they do not know and their errors carry
//! no path. Kubernetes' strict field validation (the default since 1.27)
//! rejects unknown fields instead, so a typo (`replica:`) does not silently
//! become the default. Two tricks give both without a second schema:
//! - **Unknown fields**: decode, serialize the typed value again and walk the
//!   input next to it. A key of the input with a non-null value that the
//!   re-serialized object lacks is a field the type does not have.
//! - **Paths of type errors**: when decoding fails, the input is rendered as
//!   JSON with every key and scalar on a line of its own while the path of
//!   each line is noted; decoding that text fails at the same spot, and
//!   serde_json's error names the line. A closing brace carries the path of
//!   its object (errors about a whole object are reported there).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::field::{self, Errors};

/// Decodes `value` as `T`, rejecting unknown fields.
pub(crate) fn strict<T: DeserializeOwned + Serialize>(value: &Value, errs: &mut Errors) -> Option<T> {
    let typed = typed::<T>(value, errs)?;
    match serde_json::to_value(&typed) {
        Ok(again) => unknown_fields(value, &again, "", errs),
        // k8s-openapi's types always serialize; if not, nothing is checked.
        Err(e) => errs.push("", format!("cannot be re-encoded: {e}")),
    }
    errs.is_empty().then_some(typed)
}

/// Decodes `value` as `T`; on failure records the error with its path.
pub(crate) fn typed<T: DeserializeOwned>(value: &Value, errs: &mut Errors) -> Option<T> {
    match T::deserialize(value) {
        Ok(typed) => Some(typed),
        Err(e) => {
            let (path, message) = locate::<T>(value).unwrap_or_else(|| (String::new(), e.to_string()));
            errs.push(path, message);
            None
        }
    }
}

/// Every key of `input` (recursively) that `typed` lacks.
fn unknown_fields(input: &Value, typed: &Value, path: &str, errs: &mut Errors) {
    match (input, typed) {
        (Value::Object(input), Value::Object(typed)) => {
            for (key, value) in input {
                if value.is_null() {
                    // JSON null means absent, as in Kubernetes.
                    continue;
                }
                let child = field::child(path, key);
                match typed.get(key) {
                    Some(typed) => unknown_fields(value, typed, &child, errs),
                    None => errs.push(child.clone(), format!("unknown field {}", field::quote(&child))),
                }
            }
        }
        (Value::Array(input), Value::Array(typed)) => {
            for (i, (input, typed)) in input.iter().zip(typed).enumerate() {
                unknown_fields(input, typed, &field::index(path, i), errs);
            }
        }
        _ => {}
    }
}

/// The path and message of the error decoding `value` as `T`, from a
/// line-per-token rendering (see the module docs).
fn locate<T: DeserializeOwned>(value: &Value) -> Option<(String, String)> {
    let mut text = String::new();
    let mut paths = Vec::new();
    render(value, "", &mut text, &mut paths);
    let err = serde_json::from_str::<T>(&text).err()?;
    let path = paths.get(err.line().checked_sub(1)?)?.clone();
    let message = err.to_string();
    // serde_json appends " at line L column C" to the message.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    Some((path, message))
}

fn line(text: &mut String, paths: &mut Vec<String>, path: &str, token: &str) {
    text.push_str(token);
    text.push('\n');
    paths.push(path.to_owned());
}

fn render(value: &Value, path: &str, text: &mut String, paths: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            line(text, paths, path, "{");
            for (i, (key, value)) in map.iter().enumerate() {
                let child = field::child(path, key);
                // Serializing a string cannot fail.
                let key = serde_json::to_string(key).unwrap_or_default();
                line(text, paths, &child, &format!("{}{key}:", if i > 0 { "," } else { "" }));
                render(value, &child, text, paths);
            }
            line(text, paths, path, "}");
        }
        Value::Array(items) => {
            line(text, paths, path, "[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    line(text, paths, path, ",");
                }
                render(item, &field::index(path, i), text, paths);
            }
            line(text, paths, path, "]");
        }
        scalar => line(text, paths, path, &scalar.to_string()),
    }
}
