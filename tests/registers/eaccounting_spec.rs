//! The eAccounting sink agrees with Visma's own swagger (`CustomerApi`): its field limits,
//! and every body it sends. Skips with a message when `../shared/specs` is absent (a
//! user's clone has no `../shared`).

use crate::common;

use common::Setup;
use opter_visma_sync::mapping::FieldKind;
use opter_visma_sync::sandbox::bundled_customers;
use opter_visma_sync::sink::eaccounting::RULES;
use serde_json::Value;

const SWAGGER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/specs/eaccounting/eaccounting-v2.swagger.json"
);

fn customer_api() -> Option<Value> {
    let Ok(text) = std::fs::read_to_string(SWAGGER) else {
        eprintln!("SKIPPED: {SWAGGER} not found; the spec comparison needs ../shared/specs");
        return None;
    };
    let swagger: Value = serde_json::from_str(&text).expect("the swagger is JSON");
    Some(swagger["definitions"]["CustomerApi"].clone())
}

#[test]
fn the_sinks_limits_are_the_swaggers() {
    let Some(api) = customer_api() else { return };
    let required: Vec<&str> = api["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for rule in RULES.fields {
        let property = &api["properties"][rule.name];
        assert!(
            property.is_object(),
            "{} is not a CustomerApi property",
            rule.name
        );
        match rule.kind {
            FieldKind::Text { max_chars } | FieldKind::Email { max_chars } => {
                assert_eq!(property["type"], "string", "{}", rule.name);
                assert_eq!(property["maxLength"], max_chars as u64, "{}", rule.name);
            }
            FieldKind::Bool => assert_eq!(property["type"], "boolean", "{}", rule.name),
            FieldKind::Uuid => assert_eq!(property["format"], "uuid", "{}", rule.name),
            FieldKind::Integer { .. } => {
                assert_eq!(property["type"], "integer", "{}", rule.name)
            }
        }
        assert_eq!(
            rule.required,
            required.contains(&rule.name),
            "{} required?",
            rule.name
        );
    }
    for name in required {
        assert!(
            RULES.fields.iter().any(|r| r.name == name),
            "required {name} has no rule"
        );
    }
}

/// Checks one body against CustomerApi: known properties, types, string lengths, and
/// (for creates) the required fields.
fn check_body(api: &Value, body: &Value, create: bool) {
    let body = body.as_object().expect("bodies are objects");
    for (name, value) in body {
        let property = &api["properties"][name];
        assert!(property.is_object(), "{name} is not in CustomerApi");
        match (property["type"].as_str(), value) {
            (_, Value::Null) => {}
            (Some("string"), Value::String(s)) => {
                if let Some(max) = property["maxLength"].as_u64() {
                    assert!(s.chars().count() as u64 <= max, "{name} longer than {max}");
                }
                if property["format"] == "uuid" {
                    assert!(uuid::Uuid::parse_str(s).is_ok(), "{name} is not a uuid");
                }
            }
            (Some("boolean"), Value::Bool(_)) => {}
            (Some("integer" | "number"), Value::Number(_)) => {}
            (Some("array"), Value::Array(_)) => {}
            (None, Value::Object(_)) => {}
            (t, v) => panic!("{name}: {v} does not fit type {t:?}"),
        }
    }
    if create {
        for required in api["required"].as_array().unwrap() {
            assert!(
                body.contains_key(required.as_str().unwrap()),
                "create without {required}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_the_sink_sends_fits_customer_api() {
    let Some(api) = customer_api() else { return };
    let setup = Setup::bundled().await;
    assert!(setup.run(&["sync"]).status.code().is_some());
    for (i, c) in bundled_customers().iter().take(20).enumerate() {
        let mut changed = c.clone();
        changed["name"] = format!("Ändrad Kund {i} AB").into();
        setup.put_opter_customer(&changed).await;
    }
    assert!(setup.run(&["sync"]).status.code().is_some());
    let mut checked = (0, 0);
    for request in setup.sandbox.visma_requests() {
        let path = request["path"].as_str().unwrap_or_default();
        if !path.starts_with("/visma/v2/customers") {
            continue;
        }
        match request["method"].as_str() {
            Some("POST") => {
                check_body(&api, &request["body"], true);
                checked.0 += 1;
            }
            Some("PUT") => {
                check_body(&api, &request["body"], false);
                checked.1 += 1;
            }
            _ => {}
        }
    }
    assert!(
        checked.0 > 300 && checked.1 >= 19,
        "creates and updates were checked: {checked:?}"
    );
}
