//! The e-conomic sink against the simulated e-conomic, over real HTTP: credentials,
//! create with a linked contact, find, update by full replace, a taken number,
//! idempotency keys, erasure (and customer numbers reused after it), filtering and the
//! token-bucket rate limit.

use crate::common::Mapped;
use std::path::Path;
use std::time::Duration;

use opter_visma_sync::mapping::{MappedRecord, Mapping};
use opter_visma_sync::record::PermittedCustomer;
use opter_visma_sync::retry::RetryPolicy;
use opter_visma_sync::sandbox::{Faults, Sandbox, SandboxOptions};
use opter_visma_sync::sink::economic::{self, EconomicSink, ERASED_CONTACT_NAME};
use opter_visma_sync::sink::{Erased, SinkError, ERASED_NAME};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

const MAPPING: &str = include_str!("../../mappings/economic.toml");

fn mapping() -> Mapping {
    Mapping::parse(MAPPING, Path::new("economic.toml"), economic::RULES)
        .expect("the bundled mapping loads")
}

fn customer(number: &str, name: &str, contact: Option<(&str, &str)>) -> PermittedCustomer {
    PermittedCustomer {
        code: format!("K{number}"),
        number: Some(number.to_string()),
        name: name.to_string(),
        is_active: true,
        contact_name: contact.map(|c| c.0.to_string()),
        contact_email: contact.map(|c| c.1.to_string()),
    }
}

fn mapped(number: &str, name: &str, contact: Option<(&str, &str)>) -> MappedRecord {
    mapping()
        .check_and_hash(&customer(number, name, contact))
        .map(|c| c.into_record())
        .expect("maps")
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(50),
        budget: Duration::from_secs(10),
        max_server_wait: Duration::from_secs(5),
    }
}

async fn start_with(limit: u32, window: Duration) -> Sandbox {
    Sandbox::start(SandboxOptions {
        economic_rate_limit_per_minute: limit,
        rate_limit_window: window,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

async fn start() -> Sandbox {
    start_with(0, Duration::from_secs(60)).await
}

fn sink_with(sb: &Sandbox, app: &str, grant: &str) -> EconomicSink {
    EconomicSink::new(
        &sb.economic_api_base(),
        SecretString::from(app.to_string()),
        SecretString::from(grant.to_string()),
        600_000,
        retry(),
    )
    .expect("sink")
}

fn sink(sb: &Sandbox) -> EconomicSink {
    let c = sb.credentials();
    sink_with(
        sb,
        &c.economic_app_secret_token,
        &c.economic_agreement_grant_token,
    )
}

/// Plain HTTP against the simulated API, as an accountant's tool would call it.
struct Raw {
    client: reqwest::Client,
    base: String,
    app: String,
    grant: String,
}

impl Raw {
    fn new(sb: &Sandbox) -> Raw {
        let c = sb.credentials();
        Raw {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: sb.economic_api_base(),
            app: c.economic_app_secret_token,
            grant: c.economic_agreement_grant_token,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-AppSecretToken", &self.app)
            .header("X-AgreementGrantToken", &self.grant);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.send(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

fn one(sb: &Sandbox, number: i64) -> Value {
    sb.economic_customers()
        .into_iter()
        .find(|c| c["customerNumber"] == number)
        .unwrap_or_else(|| panic!("customer {number} is stored"))
}

fn contacts(c: &Value) -> Vec<Value> {
    c["contacts"].as_array().cloned().unwrap_or_default()
}

fn contact_named<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["contacts"].as_array()?.iter().find(|k| k["name"] == name)
}

/// Requests logged since `from` (index into the log), API calls only.
fn writes_since(sb: &Sandbox, from: usize) -> Vec<Value> {
    sb.economic_requests()
        .into_iter()
        .skip(from)
        .filter(|r| r["method"] != "GET")
        .collect()
}

/// Each request of one write has its own key, and every write request has one.
fn assert_distinct_keys(writes: &[Value]) {
    let mut keys: Vec<&str> = writes
        .iter()
        .map(|r| {
            r["idempotency_key"]
                .as_str()
                .unwrap_or_else(|| panic!("no Idempotency-Key on {r}"))
        })
        .collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "keys shared between requests: {writes:#?}");
}

#[tokio::test]
async fn a_refused_token_is_needs_login_and_is_not_retried() {
    let sb = start().await;
    let resp = reqwest::Client::new()
        .get(format!("{}/customers", sb.economic_api_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["httpStatusCode"], 401);
    assert!(
        body["message"].is_string() && body["logId"].is_string(),
        "{body}"
    );

    let c = sb.credentials();
    let wrong = "revoked-grant-token-4711";
    let s = sink_with(&sb, &c.economic_app_secret_token, wrong);
    let before = sb.economic_requests().len();
    let Err(SinkError::NeedsLogin(message)) = s.find_by_number("1001").await else {
        panic!("a 401 means a person must act");
    };
    assert!(
        message.contains("requestaccess.aspx") && message.contains("agreement_grant_token_env"),
        "{message}"
    );
    assert!(!message.contains(wrong), "{message}");
    let Err(SinkError::NeedsLogin(_)) = s.create(&mapped("1001", "Acme", None), "k").await else {
        panic!("create is refused too");
    };
    // One request in all: no retry with the same refused tokens, and the create is
    // answered with the refusal without presenting them again.
    assert_eq!(sb.economic_requests().len() - before, 1);
    assert!(sb.economic_customers().is_empty());
    // The log says whether tokens came, never what they were.
    let log = serde_json::to_string(&sb.economic_requests()).unwrap();
    for secret in [
        wrong,
        c.economic_app_secret_token.as_str(),
        c.economic_agreement_grant_token.as_str(),
    ] {
        assert!(!log.contains(secret), "a token value is in the request log");
    }
}

#[tokio::test]
async fn create_links_the_contact_as_attention_and_find_sees_what_was_sent() {
    let sb = start().await;
    let s = sink(&sb);
    let m = mapping();
    let with_contact = mapped(
        "1001",
        "Åkeri Nord AB",
        Some(("Anna Berg", "anna@akerinord.se")),
    );
    let written = s.create(&with_contact, "w1").await.unwrap();
    assert_eq!((written.remote_id.as_str(), written.status), ("1001", 201));

    let stored = one(&sb, 1001);
    assert_eq!(stored["name"], "Åkeri Nord AB");
    assert_eq!(stored["currency"], "DKK");
    assert_eq!(stored["paymentTerms"]["paymentTermsNumber"], 3);
    let ks = contacts(&stored);
    assert_eq!(ks.len(), 1, "{stored}");
    assert_eq!(
        (&ks[0]["name"], &ks[0]["email"]),
        (&json!("Anna Berg"), &json!("anna@akerinord.se"))
    );
    assert_eq!(
        stored["attention"]["customerContactNumber"], ks[0]["customerContactNumber"],
        "the contact is the customer's attention"
    );
    let writes = writes_since(&sb, 0);
    let purposes: Vec<(&str, &str)> = writes
        .iter()
        .map(|r| (r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        purposes,
        [
            ("POST", "/economic/api/customers"),
            ("POST", "/economic/api/customers/1001/contacts"),
            ("PUT", "/economic/api/customers/1001"),
        ]
    );
    assert_distinct_keys(&writes);
    assert!(writes
        .iter()
        .all(|r| r["idempotency_key"].as_str().unwrap().starts_with("w1-")));

    let found = s.find_by_number("1001").await.unwrap().expect("found");
    assert_eq!(found.id, "1001");
    assert_eq!(found.fields["customerNumber"], 1001);
    assert_eq!(found.fields["contact.email"], "anna@akerinord.se");
    assert_eq!(m.remote_hash(&found.fields), with_contact.content_hash);
    assert_eq!(found.record["customer"]["customerNumber"], 1001);
    assert_eq!(found.record["contacts"].as_array().unwrap().len(), 1);
    let got = s.get("1001").await.unwrap().expect("got");
    assert_eq!(m.remote_hash(&got.fields), with_contact.content_hash);

    // Without a contact person: the customer alone, and still the same hash.
    let before = sb.economic_requests().len();
    let alone = mapped("1002", "Bara Kund AB", None);
    s.create(&alone, "w2").await.unwrap();
    let writes = writes_since(&sb, before);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(contacts(&one(&sb, 1002)).is_empty());
    let found = s.find_by_number("1002").await.unwrap().expect("found");
    assert_eq!(m.remote_hash(&found.fields), alone.content_hash);
    assert_ne!(m.remote_hash(&found.fields), with_contact.content_hash);
}

#[test]
fn a_customer_without_a_usable_sales_ledger_number_is_rejected_with_a_reason() {
    let m = mapping();
    let mut c = customer("1", "Acme", None);
    c.number = None;
    let reason = m.mapped(&c).unwrap_err();
    assert!(
        reason.contains("customerNumber")
            && reason.contains("sales ledger number (customer_number) is missing"),
        "{reason}"
    );
    for bad in ["K1001", "0", "1000000000"] {
        c.number = Some(bad.to_string());
        let reason = m.mapped(&c).unwrap_err();
        assert!(
            reason.contains("whole number from 1 to 999999999") && !reason.contains(bad),
            "{reason}"
        );
    }
    c.number = Some("0042".into());
    let r = m.mapped(&c).unwrap();
    assert_eq!(
        (r.number.as_str(), &r.fields["customerNumber"]),
        ("42", &json!(42))
    );
}

#[tokio::test]
async fn update_overlays_our_fields_and_keeps_the_accountants() {
    let sb = start().await;
    let s = sink(&sb);
    let raw = Raw::new(&sb);
    let m = mapping();
    s.create(
        &mapped("1001", "Acme AB", Some(("Anna Berg", "anna@acme.se"))),
        "w1",
    )
    .await
    .unwrap();
    let anna = one(&sb, 1001)["attention"]["customerContactNumber"].clone();

    // An accountant adds an address, changes the payment terms and adds a contact.
    let mut c = raw.get("/customers/1001").await;
    c["address"] = json!("Storgatan 1");
    c["city"] = json!("Umeå");
    c["paymentTerms"] = json!({"paymentTermsNumber": 2});
    let (status, _, body) = raw
        .send(Method::PUT, "/customers/1001", Some(c), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = raw
        .send(
            Method::POST,
            "/customers/1001/contacts",
            Some(json!({"name": "Bo Ek", "phone": "+46 70 000 00 00"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Opter changes the name and the contact's email.
    let changed = mapped(
        "1001",
        "Acme Nord AB",
        Some(("Anna Berg", "anna.berg@acme.se")),
    );
    let before = sb.economic_requests().len();
    let written = s.update("1001", &changed, "w2").await.unwrap();
    assert_eq!((written.remote_id.as_str(), written.status), ("1001", 200));
    assert_distinct_keys(&writes_since(&sb, before));
    let stored = one(&sb, 1001);
    assert_eq!(stored["name"], "Acme Nord AB");
    assert_eq!(
        stored["address"], "Storgatan 1",
        "the full-replace PUT kept it"
    );
    assert_eq!(stored["city"], "Umeå");
    assert_eq!(
        stored["paymentTerms"]["paymentTermsNumber"], 2,
        "a constant does not overwrite the accountant's value"
    );
    assert_eq!(
        stored["attention"]["customerContactNumber"], anna,
        "same contact"
    );
    let a = contact_named(&stored, "Anna Berg").unwrap();
    assert_eq!(a["email"], "anna.berg@acme.se");
    assert_eq!(
        contact_named(&stored, "Bo Ek").unwrap()["phone"],
        "+46 70 000 00 00"
    );
    let found = s.find_by_number("1001").await.unwrap().unwrap();
    assert_eq!(m.remote_hash(&found.fields), changed.content_hash);

    // Opter's contact person is gone: unlinked and deleted; the accountant's stays.
    let gone = mapped("1001", "Acme Nord AB", None);
    s.update("1001", &gone, "w3").await.unwrap();
    let stored = one(&sb, 1001);
    assert!(stored.get("attention").is_none(), "{stored}");
    assert!(contact_named(&stored, "Anna Berg").is_none(), "{stored}");
    assert!(contact_named(&stored, "Bo Ek").is_some());
    assert_eq!(stored["address"], "Storgatan 1");
    let found = s.find_by_number("1001").await.unwrap().unwrap();
    assert_eq!(m.remote_hash(&found.fields), gone.content_hash);

    // A new contact person: created and linked.
    let back = mapped(
        "1001",
        "Acme Nord AB",
        Some(("Cecilia Dahl", "cecilia@acme.se")),
    );
    s.update("1001", &back, "w4").await.unwrap();
    let stored = one(&sb, 1001);
    let cecilia = contact_named(&stored, "Cecilia Dahl").expect("created");
    assert_eq!(
        stored["attention"]["customerContactNumber"],
        cecilia["customerContactNumber"]
    );
    let found = s.find_by_number("1001").await.unwrap().unwrap();
    assert_eq!(m.remote_hash(&found.fields), back.content_hash);

    // A customer deleted in e-conomic: 404, for the engine to create it again.
    let err = s
        .update("4242", &mapped("4242", "X", None), "w5")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SinkError::Rejected { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_existing_contact_of_the_same_name_is_linked_not_duplicated() {
    let sb = start().await;
    let s = sink(&sb);
    let raw = Raw::new(&sb);
    s.create(&mapped("1001", "Acme AB", None), "w1")
        .await
        .unwrap();
    // e.g. an earlier write created the contact but its link never landed.
    let (status, _, _) = raw
        .send(
            Method::POST,
            "/customers/1001/contacts",
            Some(json!({"name": "Anna Berg", "notes": "kept"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let record = mapped("1001", "Acme AB", Some(("Anna Berg", "anna@acme.se")));
    s.update("1001", &record, "w2").await.unwrap();
    let stored = one(&sb, 1001);
    assert_eq!(contacts(&stored).len(), 1, "{stored}");
    let anna = contact_named(&stored, "Anna Berg").unwrap();
    assert_eq!(anna["email"], "anna@acme.se");
    assert_eq!(
        anna["notes"], "kept",
        "the contact's other properties were sent back"
    );
    assert_eq!(
        stored["attention"]["customerContactNumber"],
        anna["customerContactNumber"]
    );
    let found = s.find_by_number("1001").await.unwrap().unwrap();
    assert_eq!(mapping().remote_hash(&found.fields), record.content_hash);
}

#[tokio::test]
async fn a_taken_number_is_number_taken_and_nothing_is_duplicated() {
    let sb = start().await;
    let s = sink(&sb);
    s.create(
        &mapped("1001", "Acme AB", Some(("Anna Berg", "anna@acme.se"))),
        "w1",
    )
    .await
    .unwrap();
    let err = s
        .create(
            &mapped("1001", "Hemlig Kund AB", Some(("Bo Ek", "bo@x.se"))),
            "w2",
        )
        .await
        .unwrap_err();
    let SinkError::NumberTaken { status, message } = err else {
        panic!("{err:?}");
    };
    assert_eq!(status, 400);
    assert!(
        !message.contains("1001") && !message.contains("Hemlig"),
        "{message}"
    );
    let all = sb.economic_customers();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "Acme AB");
    assert_eq!(contacts(&all[0]).len(), 1);
    // What the simulator answered: the REST API's annotated validation body, the
    // number's E-code on the property, the input echoed (which the sink never keeps).
    let raw = Raw::new(&sb);
    let body = json!({"customerNumber": 1001, "name": "Hemlig Kund AB", "currency": "DKK",
        "customerGroup": {"customerGroupNumber": 1}, "paymentTerms": {"paymentTermsNumber": 3},
        "vatZone": {"vatZoneNumber": 1}});
    let (status, _, answer) = raw.send(Method::POST, "/customers", Some(body), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errorCode"], "E04300", "{answer}");
    assert_eq!(answer["httpStatusCode"], 400);
    assert!(answer["logId"].is_string() && answer["developerHint"].is_string());
    let property = &answer["errors"]["customerNumber"]["errors"][0];
    assert_eq!(property["errorCode"], "E06010", "{answer}");
    assert_eq!(property["propertyName"], "customerNumber");
    assert_eq!(property["inputValue"], 1001);
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_answered_from_the_cache() {
    let sb = start().await;
    let raw = Raw::new(&sb);
    // No customerNumber: e-conomic numbers it, so a second execution would be a
    // second customer.
    let body = json!({"name": "Acme AB", "currency": "DKK",
        "customerGroup": {"customerGroupNumber": 1}, "paymentTerms": {"paymentTermsNumber": 3},
        "vatZone": {"vatZoneNumber": 1}});
    let (s1, h1, b1) = raw
        .send(
            Method::POST,
            "/customers",
            Some(body.clone()),
            Some("key-1"),
        )
        .await;
    let (s2, h2, b2) = raw
        .send(
            Method::POST,
            "/customers",
            Some(body.clone()),
            Some("key-1"),
        )
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(h1.get("x-resultfromcache").is_none());
    assert_eq!(h2.get("x-resultfromcache").unwrap(), "true");
    assert_eq!(b1, b2);
    assert_eq!(h1.get("location"), h2.get("location"));
    assert_eq!(sb.economic_customers().len(), 1);
    let (s3, h3, _) = raw
        .send(Method::POST, "/customers", Some(body), Some("key-2"))
        .await;
    assert_eq!(s3, StatusCode::CREATED);
    assert!(h3.get("x-resultfromcache").is_none());
    assert_eq!(sb.economic_customers().len(), 2);

    // The sink through answers lost after commit: each retry is answered from the
    // cache, so nothing is created twice and no create ends in "number taken".
    let sb = Sandbox::start(SandboxOptions {
        economic_rate_limit_per_minute: 0,
        faults: Faults {
            seed: 7,
            drop_after_commit_rate: 0.5,
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let s = sink(&sb);
    for i in 0..6 {
        let number = (2001 + i).to_string();
        let name = format!("Kund {i} AB");
        let contact = format!("Kontakt {i}");
        let record = mapped(&number, &name, Some((&contact, "k@kund.se")));
        s.create(&record, &format!("w{i}"))
            .await
            .unwrap_or_else(|e| panic!("create {number}: {e:?}"));
    }
    let log = sb.economic_requests();
    assert!(
        log.iter().any(|r| r["fault"] == "dropped"),
        "the seed drops some answers"
    );
    assert!(log.iter().any(|r| r["from_cache"] == true));
    let all = sb.economic_customers();
    assert_eq!(all.len(), 6);
    for c in &all {
        let ks = contacts(c);
        assert_eq!(ks.len(), 1, "one contact each: {c}");
        assert_eq!(
            c["attention"]["customerContactNumber"],
            ks[0]["customerContactNumber"]
        );
    }
}

#[tokio::test]
async fn erase_deletes_and_a_repeated_erase_spares_a_new_customer_with_the_number() {
    let sb = start().await;
    let s = sink(&sb);
    s.create(
        &mapped("1001", "Acme AB", Some(("Anna Berg", "anna@acme.se"))),
        "w1",
    )
    .await
    .unwrap();
    assert_eq!(
        s.erase("1001", "purge-1").await.unwrap(),
        Erased::Deleted { status: 204 }
    );
    assert!(sb.economic_customers().is_empty());

    // e-conomic hands the number out again.
    s.create(
        &mapped("1001", "Ny Kund AB", Some(("Cecilia Dahl", "c@ny.se"))),
        "w2",
    )
    .await
    .unwrap();
    let before = sb.economic_requests().len();
    // The same erase again (a retried purge): answered from the cache, not executed.
    assert_eq!(
        s.erase("1001", "purge-1").await.unwrap(),
        Erased::Deleted { status: 204 }
    );
    let stored = one(&sb, 1001);
    assert_eq!(stored["name"], "Ny Kund AB");
    assert!(stored.get("barred").is_none());
    let cecilia = contact_named(&stored, "Cecilia Dahl").expect("the new contact is kept");
    assert_eq!(cecilia["email"], "c@ny.se");
    assert_eq!(
        stored["attention"]["customerContactNumber"],
        cecilia["customerContactNumber"]
    );
    let repeated = writes_since(&sb, before);
    assert!(
        repeated.iter().all(|r| r["from_cache"] == true),
        "nothing was executed again: {repeated:#?}"
    );
    assert_eq!(
        repeated.iter().filter(|r| r["method"] == "DELETE").count(),
        1,
        "{repeated:#?}"
    );

    // A new erasure of the new customer does delete it.
    assert_eq!(
        s.erase("1001", "purge-2").await.unwrap(),
        Erased::Deleted { status: 204 }
    );
    assert!(sb.economic_customers().is_empty());
    assert_eq!(
        s.erase("1001", "purge-3").await.unwrap(),
        Erased::NotPresent
    );
    assert_eq!(
        s.erase("K1001", "purge-4").await.unwrap(),
        Erased::NotPresent
    );
}

#[tokio::test]
async fn erase_of_a_customer_with_booked_invoices_anonymises_and_bars_it() {
    let sb = start().await;
    let s = sink(&sb);
    let raw = Raw::new(&sb);
    s.create(
        &mapped("1001", "Acme AB", Some(("Anna Berg", "anna@acme.se"))),
        "w1",
    )
    .await
    .unwrap();
    let (status, _, _) = raw
        .send(
            Method::POST,
            "/customers/1001/contacts",
            Some(json!({"name": "Bo Ek", "email": "bo@acme.se"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // An invoice is booked with Anna as attention: neither can be deleted any more.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/_sandbox/economic/customers/1001/invoices",
            sb.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    assert_eq!(
        s.erase("1001", "purge-1").await.unwrap(),
        Erased::Anonymised { status: 200 }
    );
    let stored = one(&sb, 1001);
    assert_eq!(stored["name"], ERASED_NAME);
    assert_eq!(stored["barred"], true);
    assert!(stored.get("attention").is_none());
    let ks = contacts(&stored);
    assert_eq!(ks.len(), 1, "Bo deleted, Anna kept (in use): {stored}");
    assert!(ks[0]["name"]
        .as_str()
        .unwrap()
        .starts_with(ERASED_CONTACT_NAME));
    assert!(ks[0].get("email").is_none());
    let text = stored.to_string();
    for personal in ["Acme", "Anna", "anna@", "Bo Ek", "bo@"] {
        assert!(!text.contains(personal), "{personal} left in {text}");
    }
    let deletes = sb
        .economic_requests()
        .into_iter()
        .filter(|r| r["method"] == "DELETE" && r["path"] == "/economic/api/customers/1001")
        .count();
    assert_eq!(deletes, 1, "the refused DELETE is not repeated");
}

#[tokio::test]
async fn find_honours_the_filter_and_refuses_an_unfiltered_answer() {
    let sb = start().await;
    let s = sink(&sb);
    let raw = Raw::new(&sb);
    for n in ["1001", "1002", "1003"] {
        s.create(&mapped(n, &format!("Kund {n}"), None), &format!("w{n}"))
            .await
            .unwrap();
    }
    assert_eq!(s.find_by_number("1002").await.unwrap().unwrap().id, "1002");
    assert!(s.find_by_number("1004").await.unwrap().is_none());
    let before = sb.economic_requests().len();
    assert!(s.find_by_number("K1002").await.unwrap().is_none());
    assert_eq!(
        sb.economic_requests().len(),
        before,
        "no request for a number e-conomic cannot hold"
    );
    let page = raw.get("/customers?filter=customerNumber$eq:1002").await;
    assert_eq!(page["collection"].as_array().unwrap().len(), 1);
    assert_eq!(page["pagination"]["results"], 1);
    assert_eq!(page["pagination"]["resultsWithoutFilter"], 3);
    let page = raw.get("/customers?pagesize=2").await;
    assert_eq!(page["collection"].as_array().unwrap().len(), 2);
    assert!(page["pagination"]["nextPage"].is_string());
    let page = raw.get("/customers?pagesize=2&skippages=1").await;
    assert_eq!(page["collection"][0]["customerNumber"], 1003);
    assert!(page["pagination"].get("nextPage").is_none());
    let (status, _, _) = raw
        .send(Method::GET, "/customers?pagesize=1001", None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A server that ignores the filter: the answer cannot say "not there".
    let fake = FakeRegister::start(json!({
        "collection": [{"customerNumber": 1, "name": "Someone else"}],
        "pagination": {"results": 1}
    }))
    .await;
    let s = EconomicSink::new(
        &fake.base,
        SecretString::from("a".to_string()),
        SecretString::from("b".to_string()),
        600_000,
        retry(),
    )
    .unwrap();
    let err = s.find_by_number("5").await.unwrap_err();
    assert!(
        matches!(&err, SinkError::Failed { message, .. } if message.contains("did not filter")),
        "{err:?}"
    );
    let empty = FakeRegister::start(json!({"collection": [], "pagination": {"results": 0}})).await;
    let s = EconomicSink::new(
        &empty.base,
        SecretString::from("a".to_string()),
        SecretString::from("b".to_string()),
        600_000,
        retry(),
    )
    .unwrap();
    assert!(s.find_by_number("5").await.unwrap().is_none());
}

/// A register that answers every customer search with the same body.
struct FakeRegister {
    base: String,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeRegister {
    async fn start(answer: Value) -> FakeRegister {
        let app = axum::Router::new().route(
            "/customers",
            axum::routing::get(move || {
                let answer = answer.clone();
                async move { axum::Json(answer) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeRegister {
            base,
            _server: server,
        }
    }
}

#[tokio::test]
async fn the_bucket_header_counts_tokens_used_and_the_sink_waits_before_a_429() {
    // Two tokens, refilled over two seconds: one comes back each second.
    let sb = start_with(2, Duration::from_secs(2)).await;
    let raw = Raw::new(&sb);
    let limit = |h: &HeaderMap| {
        h.get("x-ratelimiting")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let cost = |h: &HeaderMap| h.get("x-callcost").unwrap().to_str().unwrap().to_string();
    // Single-resource reads cost one token; the header says how many are used.
    let (s1, h1, _) = raw.send(Method::GET, "/customers/1", None, None).await;
    let (s2, h2, _) = raw.send(Method::GET, "/customers/2", None, None).await;
    let (s3, h3, body) = raw.send(Method::GET, "/customers/3", None, None).await;
    assert_eq!(
        (s1, s2, s3),
        (
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS
        )
    );
    assert_eq!(
        limit(&h1).as_deref(),
        Some("token-limit-2-per-2-seconds: 1/2")
    );
    assert_eq!(
        limit(&h2).as_deref(),
        Some("token-limit-2-per-2-seconds: 2/2")
    );
    assert_eq!(
        limit(&h3).as_deref(),
        Some("token-limit-2-per-2-seconds: 2/2")
    );
    assert_eq!(cost(&h1), "1");
    assert_eq!(body["httpStatusCode"], 429);
    let wait: u64 = h3
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // A collection read costs two: it waits for a full bucket, then uses it all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s4, h4, _) = raw.send(Method::GET, "/customers", None, None).await;
    assert_eq!(s4, StatusCode::OK);
    assert_eq!(cost(&h4), "2");
    assert_eq!(
        limit(&h4).as_deref(),
        Some("token-limit-2-per-2-seconds: 2/2")
    );
    // A refused call spends tokens too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s5, h5, _) = raw
        .send(Method::GET, "/customers?filter=bogus$eq:1", None, None)
        .await;
    assert_eq!(s5, StatusCode::BAD_REQUEST);
    assert_eq!(
        limit(&h5).as_deref(),
        Some("token-limit-2-per-2-seconds: 2/2")
    );

    // The sink reads the header as tokens used: three searches (two tokens each) from
    // a bucket of three refilled at one a second wait their turn and never meet a 429.
    let sb = start_with(3, Duration::from_secs(3)).await;
    let s = sink(&sb);
    let started = std::time::Instant::now();
    for n in ["1", "2", "3"] {
        assert!(s.find_by_number(n).await.unwrap().is_none());
    }
    let statuses: Vec<u64> = sb
        .economic_requests()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 200], "no call refused");
    // 2 + 2 + 2 tokens from 3: at least three must come back, a second each.
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );

    // And one that meets a 429 anyway (another client on the agreement spent the
    // bucket) waits as told instead of failing.
    let sb = start_with(2, Duration::from_secs(2)).await;
    let raw = Raw::new(&sb);
    raw.send(Method::GET, "/customers/1", None, None).await;
    raw.send(Method::GET, "/customers/1", None, None).await;
    let s = sink(&sb);
    let before = sb.economic_requests().len();
    assert!(s.get("1").await.unwrap().is_none());
    let statuses: Vec<u64> = sb.economic_requests()[before..]
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 404], "waited, then got through");
}

#[tokio::test]
async fn a_put_to_an_unknown_number_creates_the_customer_and_the_sinks_update_does_not() {
    let sb = start().await;
    let raw = Raw::new(&sb);
    let body = json!({"name": "Acme AB", "currency": "DKK",
        "customerGroup": {"customerGroupNumber": 1}, "paymentTerms": {"paymentTermsNumber": 3},
        "vatZone": {"vatZoneNumber": 1}});
    // e-conomic's PUT upserts: 201 Created, with Location, at the number in the path.
    let (status, headers, created) = raw
        .send(Method::PUT, "/customers/4242", Some(body.clone()), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(headers["location"]
        .to_str()
        .unwrap()
        .ends_with("/customers/4242"));
    assert_eq!(created["customerNumber"], 4242);
    assert_eq!(one(&sb, 4242)["name"], "Acme AB");
    // Again: now an ordinary replace.
    let (status, _, _) = raw
        .send(Method::PUT, "/customers/4242", Some(body.clone()), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Still validated like a replace: a number in the body must be the path's, an
    // attention must be one of its own contacts, and the path must be a number.
    let mut other = body.clone();
    other["customerNumber"] = json!(7);
    let (status, _, _) = raw
        .send(Method::PUT, "/customers/4343", Some(other), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut linked = body.clone();
    linked["attention"] = json!({"customerContactNumber": 1});
    let (status, _, _) = raw
        .send(Method::PUT, "/customers/4343", Some(linked), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = raw
        .send(Method::PUT, "/customers/0", Some(body), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(sb.economic_customers().len(), 1);

    // The sink's update of a customer deleted in e-conomic reads first and answers
    // 404 (the run then finds or creates it, and journals that), never upserting it.
    let s = sink(&sb);
    let record = mapped("1001", "Acme AB", Some(("Anna Berg", "anna@acme.se")));
    s.create(&record, "w1").await.unwrap();
    let (status, _, _) = raw
        .send(Method::DELETE, "/customers/1001", None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let err = s
        .update("1001", &mapped("1001", "Acme Nord AB", None), "w2")
        .await
        .unwrap_err();
    assert!(
        matches!(err, SinkError::Rejected { status: 404, .. }),
        "{err:?}"
    );
    assert!(sb
        .economic_customers()
        .iter()
        .all(|c| c["customerNumber"] != 1001));
}

#[tokio::test]
async fn past_fair_use_the_agreement_is_refused_with_429_until_its_oldest_call_is_a_day_old() {
    let sb = Sandbox::start(SandboxOptions {
        economic_rate_limit_per_minute: 0,
        economic_fair_use_calls_per_day: 3,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let raw = Raw::new(&sb);
    // A call with a wrong token is not the agreement's.
    let stranger = Raw {
        grant: "someone-else".into(),
        ..Raw::new(&sb)
    };
    let (status, _, _) = stranger.send(Method::GET, "/customers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Three calls, a refused one among them, are its 24 hours' worth.
    let (s1, _, _) = raw.send(Method::GET, "/customers", None, None).await;
    let (s2, _, _) = raw.send(Method::GET, "/customers/9", None, None).await;
    let (s3, _, _) = raw
        .send(Method::POST, "/customers", Some(json!({"name": "x"})), None)
        .await;
    assert_eq!(
        (s1, s2, s3),
        (
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST
        )
    );
    let (status, headers, body) = raw.send(Method::GET, "/customers", None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errorCode"], "FairUseExceeded");
    assert_eq!(body["httpStatusCode"], 429);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("3 API calls in the last 24 hours"));
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((86_390..=86_400).contains(&wait), "{wait}");
    // And it stays refused (a refused call is not counted, nor let through).
    let (status, _, _) = raw.send(Method::GET, "/customers/9", None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_simulator_refuses_what_e_conomic_refuses() {
    let sb = start().await;
    let raw = Raw::new(&sb);
    let valid = json!({"customerNumber": 1001, "name": "Acme AB", "currency": "DKK",
        "customerGroup": {"customerGroupNumber": 1}, "paymentTerms": {"paymentTermsNumber": 3},
        "vatZone": {"vatZoneNumber": 1}});
    let code = |body: &Value| {
        body["errors"]
            .as_object()
            .and_then(|m| m.values().next())
            .map(|e| e["errors"][0]["errorCode"].clone())
            .unwrap_or_else(|| body["errorCode"].clone())
    };
    let (status, _, _) = raw
        .send(Method::POST, "/customers", Some(valid.clone()), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for (change, want) in [
        (json!({"currency": null}), "PropertyCannotBeNull"),
        (json!({"email": "not-an-address"}), "CustomerInvalidEmail"),
        (
            json!({"vatZone": {"vatZoneNumber": 9}}),
            "CustomerInvalidVatZone",
        ),
        (json!({"name": "x".repeat(256)}), "CustomerInvalidName"),
        (json!({"customerNumber": 1001}), "E06010"),
    ] {
        let mut body = valid.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        if want != "E06010" {
            body["customerNumber"] = json!(1002);
        }
        let (status, _, body) = raw.send(Method::POST, "/customers", Some(body), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{want}");
        assert_eq!(code(&body), want, "{body}");
    }
    // PUT is a full replace: leaving out a required property is an error.
    let mut put = valid.clone();
    put.as_object_mut().unwrap().remove("currency");
    let (status, _, body) = raw
        .send(Method::PUT, "/customers/1001", Some(put), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A contact's name is required and unique per customer; the attention is in use.
    let (status, _, body) = raw
        .send(
            Method::POST,
            "/customers/1001/contacts",
            Some(json!({"email": "a@b.dk"})),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (
            StatusCode::BAD_REQUEST,
            json!("CustomerContactNameNullOrEmpty")
        )
    );
    let (_, _, ann) = raw
        .send(
            Method::POST,
            "/customers/1001/contacts",
            Some(json!({"name": "Ann"})),
            None,
        )
        .await;
    let (status, _, body) = raw
        .send(
            Method::POST,
            "/customers/1001/contacts",
            Some(json!({"name": "ann"})),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (
            StatusCode::BAD_REQUEST,
            json!("CustomerContactNameAlreadyExists")
        )
    );
    let c = ann["customerContactNumber"].as_i64().unwrap();
    let mut linked = valid.clone();
    linked["attention"] = json!({"customerContactNumber": c});
    let (status, _, _) = raw
        .send(Method::PUT, "/customers/1001", Some(linked), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = raw
        .send(
            Method::DELETE,
            &format!("/customers/1001/contacts/{c}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, json!("CustomerContactIsInUse"))
    );
    let mut foreign = valid.clone();
    foreign["attention"] = json!({"customerContactNumber": c + 100});
    let (status, _, body) = raw
        .send(Method::PUT, "/customers/1001", Some(foreign), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (
            StatusCode::BAD_REQUEST,
            json!("CustomerInvalidDefaultAttention")
        )
    );
    // The customer goes with its contacts; the number is free again.
    let (status, _, _) = raw
        .send(Method::DELETE, "/customers/1001", None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = raw
        .send(
            Method::GET,
            &format!("/customers/1001/contacts/{c}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = raw
        .send(Method::POST, "/customers", Some(valid), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
}
