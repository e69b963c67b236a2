//! e-conomic's bodies: how our flat, dotted field names become its nested customer
//! object and back, what it does not take back, and its error bodies.

use reqwest::StatusCode;
use serde_json::{Map, Value};

use super::*;

/// A copy of `object` without the properties the register does not take back.
pub(super) fn writable(object: &Value, read_only: &[&str]) -> Map<String, Value> {
    let mut out = object.as_object().cloned().unwrap_or_default();
    for property in read_only {
        out.remove(*property);
    }
    out
}

/// The value at a dotted path.
pub(super) fn lookup<'a>(object: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(object, |v, part| v.as_object()?.get(part))
}

/// Sets the value at a dotted path, creating objects on the way. A changed number in a
/// reference object (`customerGroup.customerGroupNumber`) drops its `self` link, which
/// would name the old one.
pub(super) fn set_path(map: &mut Map<String, Value>, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            map.insert(dotted.to_string(), value);
        }
        Some((head, rest)) => {
            let child = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            let child = child.as_object_mut().expect("made an object above");
            if !rest.contains('.') && child.get(rest) != Some(&value) {
                child.remove("self");
            }
            set_path(child, rest, value);
        }
    }
}

/// Removes the value at a dotted path (e-conomic takes no nulls: a property is cleared
/// by leaving it out), and objects left empty.
pub(super) fn remove_path(map: &mut Map<String, Value>, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            map.remove(dotted);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(child)) = map.get_mut(head) {
                remove_path(child, rest);
                child.remove("self");
                if child.is_empty() {
                    map.remove(head);
                }
            }
        }
    }
}

/// The body of `POST /customers`: constants and our customer fields, nested, unset
/// ones left out.
pub fn customer_body(record: &MappedRecord) -> Value {
    let mut body = Map::new();
    for (field, value) in record.defaults.iter().chain(&record.fields) {
        if !field.starts_with(CONTACT_PREFIX) && !value.is_null() {
            set_path(&mut body, field, value.clone());
        }
    }
    Value::Object(body)
}

/// Our customer fields over the register's; constants only where it has no value.
pub(super) fn overlay(merged: &mut Map<String, Value>, record: &MappedRecord) {
    for (field, value) in &record.fields {
        if field.starts_with(CONTACT_PREFIX) {
            continue;
        }
        match value {
            Value::Null => remove_path(merged, field),
            v => set_path(merged, field, v.clone()),
        }
    }
    let current = Value::Object(merged.clone());
    for (field, value) in record.defaults.iter() {
        let unset = match lookup(&current, field) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset && !field.starts_with(CONTACT_PREFIX) {
            set_path(merged, field, value.clone());
        }
    }
}

/// The register's values for every field a mapping can name, flat and keyed by the
/// mapping's names, so `Mapping::remote_hash` equals the hash of what we would send
/// when the content is the same. Absent values are left out (they compare as `null`).
pub(super) fn flat_fields(customer: &Value, attention: Option<&Value>) -> Value {
    let mut out = Map::new();
    for rule in RULES.fields {
        let value = match rule.name.strip_prefix(CONTACT_PREFIX) {
            Some(field) => attention.and_then(|c| c.get(field)),
            None => lookup(customer, rule.name),
        };
        if let Some(v) = value.filter(|v| !v.is_null()) {
            out.insert(rule.name.to_string(), v.clone());
        }
    }
    // e-conomic leaves out false booleans.
    out.entry("barred").or_insert(Value::Bool(false));
    Value::Object(out)
}

/// e-conomic's legacy error body is `{message, errorCode?, developerHint, logId,
/// httpStatusCode, errors?}`, where `errors` holds, per property,
/// `{"errors": [{propertyName, errorMessage, errorCode, inputValue}]}` (the form e-conomic
/// documents, https://restdocs.e-conomic.com/#annotated-errors, names them `errorCode,
/// message, value, developerHint`: both are read). The code is the first property's
/// error code, else the body's; the message is the body's message and the first
/// property's error message, with quoted parts removed. `inputValue`, `value` and
/// `developerHint` are never read: they can echo what was sent.
pub(super) fn error_of(body: &Value, status: StatusCode) -> (Option<String>, String) {
    let detail = first_error(&body["errors"], None);
    let code = detail
        .as_ref()
        .and_then(|d| d.code.clone())
        .or_else(|| body["errorCode"].as_str().map(str::to_string));
    let top = body["message"].as_str();
    let message = match (top, &detail) {
        (Some(m), Some(d)) => Some(format!("{m} {}: {}", d.property, d.message)),
        (None, Some(d)) => Some(format!("{}: {}", d.property, d.message)),
        (Some(m), None) => Some(m.to_string()),
        (None, None) => None,
    };
    (code, safe_message(message.as_deref(), status))
}

pub(super) struct ErrorDetail {
    property: String,
    code: Option<String>,
    message: String,
}

/// The first `{errorCode | errorMessage}` object under `errors`, depth first.
pub(super) fn first_error(errors: &Value, property: Option<&str>) -> Option<ErrorDetail> {
    match errors {
        Value::Object(map) => {
            if map.contains_key("errorCode") || map.contains_key("errorMessage") {
                // `Map`'s index panics on a missing key: `get` it.
                let text = |key: &str| map.get(key).and_then(Value::as_str);
                return Some(ErrorDetail {
                    property: text("propertyName")
                        .or(property)
                        .unwrap_or("request")
                        .to_string(),
                    code: text("errorCode").map(str::to_string),
                    message: text("errorMessage")
                        .or(text("message"))
                        .unwrap_or("invalid")
                        .to_string(),
                });
            }
            map.iter().find_map(|(k, v)| {
                let name = if k == "errors" {
                    property
                } else {
                    Some(k.as_str())
                };
                first_error(v, name)
            })
        }
        Value::Array(items) => items.iter().find_map(|v| first_error(v, property)),
        _ => None,
    }
}
