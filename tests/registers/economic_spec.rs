//! The e-conomic sink and simulator agree with e-conomic's published JSON schemas
//! (draft-03, `../shared/specs/economic/*.schema.json`): the sink's field rules, the
//! simulator's rules, every body the sink sends and what the simulator answers. Skips
//! with a message when `../shared/specs` is absent (a user's clone has no `../shared`).
//!
//! The jsonschema crate has no draft-03, so a small validator for the subset these
//! schemas use is below: `type`, `properties`, `required: true`, `minLength` /
//! `maxLength`, `minimum` / `maximum`, `pattern` (the `\d{n}` subset), `enum`, `items`,
//! `uniqueItems`; `readOnly`, `format` and the documentation keywords are ignored. It
//! is stricter than draft-03 in one way: where a schema lists `properties`, a property
//! it does not name is an error, since nothing undocumented should be sent.

use crate::common::Mapped;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opter_visma_sync::mapping::{FieldKind, MappedRecord, Mapping};
use opter_visma_sync::record::PermittedCustomer;
use opter_visma_sync::retry::RetryPolicy;
use opter_visma_sync::sandbox::economic as sim;
use opter_visma_sync::sandbox::{Sandbox, SandboxOptions};
use opter_visma_sync::sink::economic::{EconomicSink, RULES};
use secrecy::SecretString;
use serde_json::{json, Value};

const SPECS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/specs/economic");

const CUSTOMER_POST: &str = "customers.post.schema.json";
const CUSTOMER_PUT: &str = "customers.customerNo.put.schema.json";
const CUSTOMER_GET: &str = "customers.customerNumber.get.schema.json";
const CUSTOMERS_GET: &str = "customers.get.schema.json";
const CONTACT_POST: &str = "customers.customerNumber.contacts.post.schema.json";
const CONTACT_PUT: &str = "customers.customerNumber.contacts.contactNumber.put.schema.json";
const CONTACT_GET: &str = "customers.customerNumber.contacts.contactNumber.get.schema.json";
const CONTACTS_GET: &str = "customers.customerNumber.contacts.get.schema.json";

/// The schemas, or `None` (with a message) when `../shared/specs` is absent.
struct Specs(PathBuf);

impl Specs {
    fn open() -> Option<Specs> {
        let dir = Path::new(SPECS);
        if !dir.join(CUSTOMER_POST).is_file() {
            eprintln!("SKIPPED: {SPECS} not found; the schema comparison needs ../shared/specs");
            return None;
        }
        Some(Specs(dir.to_path_buf()))
    }

    fn get(&self, name: &str) -> Value {
        let text =
            std::fs::read_to_string(self.0.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
    }
}

// ---------- the draft-03 subset ----------

/// Every keyword the validator knows: it checks the first group and ignores the rest.
const CHECKED: &[&str] = &[
    "type",
    "properties",
    "required",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "pattern",
    "enum",
    "items",
    "uniqueItems",
];
const IGNORED: &[&str] = &[
    "$schema",
    "title",
    "description",
    "restdocs",
    "format",
    "readOnly",
    "readonly",
    "filterable",
    "sortable",
];

/// Properties whose schema in e-conomic's files is malformed (`priceGroup` holds a
/// `self` property schema directly, without `properties`): anything is accepted.
const MALFORMED: &[&str] = &["priceGroup"];

/// Keywords in `schema` the validator does not know, as paths.
fn unknown_keywords(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for (k, v) in map {
        match k.as_str() {
            "properties" => {
                for (name, sub) in v.as_object().into_iter().flatten() {
                    if !MALFORMED.contains(&name.as_str()) {
                        unknown_keywords(sub, &format!("{path}.{name}"), out);
                    }
                }
            }
            "items" => unknown_keywords(v, &format!("{path}[]"), out),
            k if CHECKED.contains(&k) || IGNORED.contains(&k) => {}
            k => out.push(format!("{path}: {k}")),
        }
    }
}

/// Checks `value` against `schema`; problems go to `errors` as "<path>: <what>".
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let mut fail = |what: String| errors.push(format!("{path}: {what}"));
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => panic!("{path}: unsupported type {other}"),
        };
        let fits = types.iter().any(|t| match *t {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            "any" => true,
            other => panic!("{path}: unsupported type {other}"),
        });
        if !fits {
            fail(format!("{value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            fail(format!("{value} is not one of {allowed:?}"));
        }
    }
    if let Value::String(s) = value {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if chars > max {
                fail(format!("{chars} characters, more than maxLength {max}"));
            }
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if chars < min {
                fail(format!("{chars} characters, fewer than minLength {min}"));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if !pattern_matches(pattern, s) {
                fail(format!("does not match the pattern {pattern}"));
            }
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                fail(format!("{n} is above maximum {max}"));
            }
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                fail(format!("{n} is below minimum {min}"));
            }
        }
    }
    if let Value::Object(object) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(properties) = properties {
            for (name, sub) in properties {
                if sub.get("required") == Some(&Value::Bool(true)) && !object.contains_key(name) {
                    errors.push(format!("{path}.{name}: is required"));
                }
            }
        }
        // An object schema without `properties` says nothing about them.
        let Some(properties) = properties else {
            return;
        };
        for (name, v) in object {
            let at = format!("{path}.{name}");
            match properties.get(name) {
                None => errors.push(format!("{at}: not a property the schema names")),
                Some(_) if MALFORMED.contains(&name.as_str()) => {}
                Some(sub) => validate(sub, v, &at, errors),
            }
        }
    }
    if let Value::Array(items) = value {
        if let Some(sub) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(sub, item, &format!("{path}[{i}]"), errors);
            }
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(format!("{path}[{i}]: repeats an earlier item"));
                }
            }
        }
    }
}

/// ECMA `pattern` (unanchored search), for the subset the schemas use: literal
/// characters, `\d`, `\` escapes and `{n}` counts. Anything else panics, so an
/// unsupported pattern cannot pass unnoticed.
fn pattern_matches(pattern: &str, s: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Atom {
        Digit,
        Char(char),
    }
    let mut atoms: Vec<Atom> = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let atom = match c {
            '\\' => match chars.next() {
                Some('d') => Atom::Digit,
                Some(e) if !e.is_alphanumeric() => Atom::Char(e),
                other => panic!("unsupported escape {other:?} in pattern {pattern}"),
            },
            '{' => {
                let n: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let n: usize = n
                    .parse()
                    .unwrap_or_else(|_| panic!("unsupported count in pattern {pattern}"));
                let last = *atoms.last().expect("a count follows an atom");
                atoms.extend(std::iter::repeat_n(last, n - 1));
                continue;
            }
            '[' | ']' | '(' | ')' | '*' | '+' | '?' | '|' | '.' | '^' | '$' => {
                panic!("unsupported pattern syntax {c:?} in {pattern}")
            }
            c => Atom::Char(c),
        };
        atoms.push(atom);
    }
    let text: Vec<char> = s.chars().collect();
    (0..=text.len().saturating_sub(atoms.len())).any(|start| {
        atoms.len() <= text.len() - start
            && atoms.iter().enumerate().all(|(i, a)| match a {
                Atom::Digit => text[start + i].is_ascii_digit(),
                Atom::Char(c) => text[start + i] == *c,
            })
    })
}

fn errors_of(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(schema, value, "$", &mut errors);
    errors
}

// ---------- the validator itself ----------

#[test]
fn the_validator_catches_wrong_types_lengths_ranges_and_missing_properties() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 5, "required": true},
            "n": {"type": "integer", "minimum": 1, "maximum": 9},
            "group": {"type": "object", "required": true,
                      "properties": {"number": {"type": "integer"}}},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true},
            "at": {"type": "string", "pattern": "\\d{4}-\\d{2}Z"},
            "total": {"type": "number", "readOnly": true}
        }
    });
    let good = json!({"name": "Acme", "n": 3, "group": {"number": 1}, "tags": ["a", "b"],
                      "at": "x2024-05Z"});
    assert_eq!(errors_of(&schema, &good), Vec::<String>::new());
    let bad = |change: Value, want: &str| {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let errors = errors_of(&schema, &body);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{body} should fail with {want}: {errors:?}"
        );
    };
    bad(json!({"name": 5}), "$.name: 5 is not of type");
    bad(
        json!({"name": "Acme AB"}),
        "$.name: 7 characters, more than maxLength 5",
    );
    bad(json!({"name": ""}), "fewer than minLength 1");
    bad(json!({"name": null}), "$.name: is required");
    bad(json!({"n": 10}), "above maximum 9");
    bad(json!({"n": 0}), "below minimum 1");
    bad(json!({"n": 1.5}), "is not of type [\"integer\"]");
    bad(json!({"n": "3"}), "is not of type [\"integer\"]");
    bad(
        json!({"group": {"number": "1"}}),
        "$.group.number: \"1\" is not of type",
    );
    bad(json!({"group": 1}), "$.group: 1 is not of type");
    bad(
        json!({"tags": ["a", "c"]}),
        "$.tags[1]: \"c\" is not one of",
    );
    bad(json!({"tags": ["a", "a"]}), "$.tags[1]: repeats");
    bad(json!({"at": "2024-5Z"}), "does not match the pattern");
    bad(
        json!({"phone": "070"}),
        "$.phone: not a property the schema names",
    );
    // readOnly is not checked: a value of the right type passes.
    assert!(errors_of(&schema, &json!({"name": "A", "group": {}, "total": 1.5})).is_empty());
}

#[test]
fn the_validator_catches_bad_customer_bodies_against_the_real_schema() {
    let Some(specs) = Specs::open() else { return };
    let post = specs.get(CUSTOMER_POST);
    let good = json!({"customerNumber": 1001, "name": "Acme AB", "currency": "DKK",
        "customerGroup": {"customerGroupNumber": 1}, "paymentTerms": {"paymentTermsNumber": 3},
        "vatZone": {"vatZoneNumber": 1}});
    assert_eq!(errors_of(&post, &good), Vec::<String>::new());
    for (change, want) in [
        (json!({"name": "x".repeat(256)}), "$.name: 256 characters"),
        (json!({"currency": "DKKR"}), "$.currency: 4 characters"),
        (json!({"customerNumber": 1_000_000_000}), "$.customerNumber"),
        (json!({"customerNumber": "1001"}), "$.customerNumber"),
        (
            json!({"customerGroup": {"customerGroupNumber": "1"}}),
            "$.customerGroup.customerGroupNumber",
        ),
        (json!({"barred": "yes"}), "$.barred"),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let errors = errors_of(&post, &body);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{want}: {errors:?}"
        );
    }
    let mut without = good.clone();
    without.as_object_mut().unwrap().remove("vatZone");
    assert_eq!(errors_of(&post, &without), ["$.vatZone: is required"]);
}

#[test]
fn the_validator_knows_every_keyword_the_schemas_use() {
    let Some(specs) = Specs::open() else { return };
    for name in [
        CUSTOMER_POST,
        CUSTOMER_PUT,
        CUSTOMER_GET,
        CUSTOMERS_GET,
        CONTACT_POST,
        CONTACT_PUT,
        CONTACT_GET,
        CONTACTS_GET,
    ] {
        let mut unknown = Vec::new();
        unknown_keywords(&specs.get(name), "$", &mut unknown);
        assert!(
            unknown.is_empty(),
            "{name} uses keywords the validator does not know: {unknown:?}"
        );
    }
}

// ---------- rules ----------

/// The schema of a dotted property (`customerGroup.customerGroupNumber`) and whether
/// it is required (for a nested one: whether its object is).
fn property<'a>(schema: &'a Value, dotted: &str) -> (&'a Value, bool) {
    let mut at = schema;
    let mut required = None;
    for part in dotted.split('.') {
        at = &at["properties"][part];
        assert!(at.is_object(), "{dotted} is not in the schema");
        required.get_or_insert(at["required"] == true);
    }
    (at, required.unwrap_or(false))
}

fn without_descriptions(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "description")
                .map(|(k, v)| (k.clone(), without_descriptions(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn the_sinks_rules_are_the_schemas() {
    let Some(specs) = Specs::open() else { return };
    let (post, put, contact) = (
        specs.get(CUSTOMER_POST),
        specs.get(CUSTOMER_PUT),
        specs.get(CONTACT_POST),
    );
    for rule in RULES.fields {
        let (schema, required, name) = match rule.name.strip_prefix("contact.") {
            Some(field) => {
                let (s, _) = property(&contact, field);
                // The contact as a whole is optional, so none of its fields is required.
                (s, false, field)
            }
            None => {
                let (s, r) = property(&post, rule.name);
                assert_eq!(
                    without_descriptions(s),
                    without_descriptions(property(&put, rule.name).0),
                    "{}: POST and PUT differ",
                    rule.name
                );
                (s, r, rule.name)
            }
        };
        match rule.kind {
            FieldKind::Text { max_chars } | FieldKind::Email { max_chars } => {
                assert_eq!(schema["type"], "string", "{name}");
                assert_eq!(schema["maxLength"], max_chars as u64, "{name}");
            }
            FieldKind::Integer { min, max } => {
                assert_eq!(schema["type"], "integer", "{name}");
                if let Some(m) = schema["minimum"].as_i64() {
                    assert_eq!(m, min, "{name} minimum");
                }
                match schema["maximum"].as_i64() {
                    Some(m) => assert_eq!(m, max, "{name} maximum"),
                    // No published maximum: e-conomic's ids are 32-bit.
                    None => assert_eq!(max, i64::from(i32::MAX), "{name} maximum"),
                }
            }
            FieldKind::Bool => assert_eq!(schema["type"], "boolean", "{name}"),
            FieldKind::Uuid => panic!("{name}: e-conomic has no uuid fields"),
        }
        assert_eq!(rule.required, required, "{} required?", rule.name);
    }
    // Every required property has a rule (nested ones through their number field).
    for (name, s) in post["properties"].as_object().unwrap() {
        if s["required"] == true {
            assert!(
                RULES
                    .fields
                    .iter()
                    .any(|r| r.name == name || r.name.starts_with(&format!("{name}."))),
                "required {name} has no rule"
            );
        }
    }
}

#[test]
fn the_simulators_rules_are_the_schemas() {
    let Some(specs) = Specs::open() else { return };
    for (schema, table, which) in [
        (
            specs.get(CUSTOMER_POST),
            sim::CUSTOMER_STRINGS,
            "customer POST",
        ),
        (
            specs.get(CUSTOMER_PUT),
            sim::CUSTOMER_STRINGS,
            "customer PUT",
        ),
        (
            specs.get(CONTACT_POST),
            sim::CONTACT_STRINGS,
            "contact POST",
        ),
        (specs.get(CONTACT_PUT), sim::CONTACT_STRINGS, "contact PUT"),
    ] {
        let properties = schema["properties"].as_object().unwrap();
        for &(name, min, max) in table {
            let p = &properties[name];
            assert_eq!(p["type"], "string", "{which} {name}");
            assert_eq!(p["maxLength"].as_u64(), Some(max as u64), "{which} {name}");
            // A required string must not be empty (e-conomic's "NullOrEmpty" codes).
            let want_min = p["minLength"]
                .as_u64()
                .unwrap_or(u64::from(p["required"] == true));
            assert_eq!(min as u64, want_min, "{which} {name} minLength");
        }
        for (name, p) in properties {
            if p["type"] == "string" && p.get("format").is_none() {
                assert!(
                    table.iter().any(|t| t.0 == name),
                    "{which}: the simulator has no rule for {name}"
                );
            }
        }
    }
    for (which, schema) in [
        ("POST", specs.get(CUSTOMER_POST)),
        ("PUT", specs.get(CUSTOMER_PUT)),
    ] {
        let mut required: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, p)| p["required"] == true)
            .map(|(k, _)| k.as_str())
            .collect();
        let mut sim_required = sim::CUSTOMER_REQUIRED.to_vec();
        required.sort_unstable();
        sim_required.sort_unstable();
        assert_eq!(sim_required, required, "customer {which} required");
        let number = &schema["properties"]["customerNumber"];
        assert_eq!(
            (number["minimum"].as_i64(), number["maximum"].as_i64()),
            (
                Some(sim::CUSTOMER_NUMBER_RANGE.0),
                Some(sim::CUSTOMER_NUMBER_RANGE.1)
            )
        );
        for (object, key) in sim::CUSTOMER_REFERENCES {
            let p = &schema["properties"][*object];
            if which == "POST"
                && ["attention", "customerContact", "defaultDeliveryLocation"].contains(object)
            {
                assert!(p.is_null(), "{object} is PUT only");
                continue;
            }
            assert_eq!(
                p["properties"][*key]["type"], "integer",
                "{which} {object}.{key}"
            );
        }
    }
}

// ---------- what goes over the wire ----------

fn mapping() -> Mapping {
    Mapping::parse(
        include_str!("../../mappings/economic.toml"),
        Path::new("economic.toml"),
        RULES,
    )
    .unwrap()
}

fn record(number: &str, name: &str, contact: Option<(&str, &str)>) -> MappedRecord {
    mapping()
        .mapped(&PermittedCustomer {
            code: format!("K{number}"),
            number: Some(number.into()),
            name: name.into(),
            is_active: true,
            contact_name: contact.map(|c| c.0.to_string()),
            contact_email: contact.map(|c| c.1.to_string()),
        })
        .unwrap()
}

/// The schema a request's body must fit, by method and path; `None` for bodiless ones.
fn schema_for(method: &str, path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path
        .strip_prefix("/economic/api/")
        .unwrap_or_else(|| panic!("unexpected path {path}"))
        .split('/')
        .collect();
    match (method, parts.as_slice()) {
        ("POST", ["customers"]) => Some(CUSTOMER_POST),
        ("PUT", ["customers", _]) => Some(CUSTOMER_PUT),
        ("POST", ["customers", _, "contacts"]) => Some(CONTACT_POST),
        ("PUT", ["customers", _, "contacts", _]) => Some(CONTACT_PUT),
        ("DELETE", _) => None,
        other => panic!("the sink sent a request no schema covers: {other:?}"),
    }
}

#[tokio::test]
async fn every_body_the_sink_sends_and_every_answer_fit_the_schemas() {
    let Some(specs) = Specs::open() else { return };
    let sb = Sandbox::start(SandboxOptions {
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let c = sb.credentials();
    let s = EconomicSink::new(
        &sb.economic_api_base(),
        SecretString::from(c.economic_app_secret_token.clone()),
        SecretString::from(c.economic_agreement_grant_token.clone()),
        600_000,
        RetryPolicy {
            initial_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(50),
            budget: Duration::from_secs(10),
            max_server_wait: Duration::from_secs(5),
        },
    )
    .unwrap();

    // Creates, with and without a contact person.
    for i in 0..5u32 {
        let n = (1001 + i).to_string();
        let contact = (i % 2 == 0).then_some(("Anna Berg", "anna@kund.se"));
        s.create(
            &record(&n, &format!("Kund {i} AB"), contact),
            &format!("c{i}"),
        )
        .await
        .unwrap();
    }
    // Updates: the name, the contact's email, the contact gone, a contact added.
    s.update(
        "1001",
        &record(
            "1001",
            "Kund Noll AB",
            Some(("Anna Berg", "anna.b@kund.se")),
        ),
        "u1",
    )
    .await
    .unwrap();
    s.update("1003", &record("1003", "Kund Två AB", None), "u2")
        .await
        .unwrap();
    s.update(
        "1002",
        &record("1002", "Kund Ett AB", Some(("Bo Ek", "bo@kund.se"))),
        "u3",
    )
    .await
    .unwrap();
    // Erasure: one deleted, one kept (booked invoice, its contact in use) and anonymised.
    s.erase("1004", "e1").await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/_sandbox/economic/customers/1005/invoices",
            sb.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    s.erase("1005", "e2").await.unwrap();

    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    let mut errors = Vec::new();
    for request in sb.economic_requests() {
        let method = request["method"].as_str().unwrap();
        let path = request["path"].as_str().unwrap();
        if method == "GET" {
            continue;
        }
        match schema_for(method, path) {
            Some(name) => {
                *checked.entry(name).or_default() += 1;
                for e in errors_of(&specs.get(name), &request["body"]) {
                    errors.push(format!("{method} {path} ({name}): {e}"));
                }
            }
            None => assert!(request["body"].is_null(), "{method} {path} has a body"),
        }
    }
    assert!(
        errors.is_empty(),
        "bodies that do not fit:\n{}",
        errors.join("\n")
    );
    for name in [CUSTOMER_POST, CUSTOMER_PUT, CONTACT_POST, CONTACT_PUT] {
        assert!(
            checked.get(name).is_some_and(|n| *n > 0),
            "no body checked against {name}: {checked:?}"
        );
    }

    // What the simulator serves fits the GET schemas.
    let get = |path: String| {
        let (app, grant) = (
            c.economic_app_secret_token.clone(),
            c.economic_agreement_grant_token.clone(),
        );
        let url = format!("{}{path}", sb.economic_api_base());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("X-AppSecretToken", app)
                .header("X-AgreementGrantToken", grant)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut answers = vec![
        (CUSTOMERS_GET, get("/customers".into()).await),
        (CUSTOMER_GET, get("/customers/1001".into()).await),
        (CUSTOMER_GET, get("/customers/1005".into()).await),
        (CONTACTS_GET, get("/customers/1001/contacts".into()).await),
    ];
    let contacts = get("/customers/1001/contacts".into()).await;
    let first = contacts["collection"][0]["customerContactNumber"].clone();
    answers.push((
        CONTACT_GET,
        get(format!("/customers/1001/contacts/{first}")).await,
    ));
    for (name, answer) in answers {
        let errors = errors_of(&specs.get(name), &answer);
        assert!(errors.is_empty(), "{name}: {errors:?}\n{answer:#}");
    }
}
