//! The sandbox's rules, exercised over real HTTP: each test fails if its rule breaks.

use crate::sandbox_support;

use std::collections::BTreeMap;

use opter_visma_sync::sandbox::*;
use reqwest::{Client, StatusCode};
use sandbox_support::*;
use serde_json::{json, Value};

const SWAGGER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/specs/eaccounting/eaccounting-v2.swagger.json"
);

fn opter_customer(code: &str, name: &str, updated: &str) -> Value {
    json!({
        "customerCode": code,
        "customerNumber": "1001",
        "name": name,
        "corporateIdNumber": "556677-8899",
        "vatNumber": "SE556677889901",
        "visitingAddress": {"street": "Storgatan 1", "postalCode": "111 22", "city": "Stockholm", "country": "SE"},
        "invoiceAddress": {"street": "Box 1", "postalCode": "111 22", "city": "Stockholm", "country": "SE"},
        "phone": "+46 8 123 456",
        "email": "info@example.se",
        "information": "Ring innan leverans",
        "isActive": true,
        "created": "2024-01-01T08:00:00Z",
        "updated": updated,
        "references": [{"id": 1, "name": "Anna Berg", "email": "anna@example.se",
                        "phone": "+46 8 1", "mobilePhone": "+46 70 1", "isDefault": true}],
        "someFutureField": {"x": 1}
    })
}

async fn opter_get(sb: &Sandbox, query: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = Client::new().get(format!("{}/Customers{query}", sb.opter_api_base()));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

fn message(body: &Value) -> &str {
    body["DeveloperErrorMessage"].as_str().unwrap_or("")
}

// ---------- Opter ----------

#[tokio::test]
async fn opter_pages_in_insertion_order_with_total_count() {
    let customers: Vec<Value> = (1..=5)
        .map(|i| {
            opter_customer(
                &format!("C{i}"),
                &format!("Kund {i}"),
                "2024-02-01T00:00:00Z",
            )
        })
        .collect();
    let sb = start(SandboxOptions {
        customers: customers.clone(),
        ..Default::default()
    })
    .await;
    let key = sb.credentials().opter_api_key;
    let mut seen = Vec::new();
    for (page, want) in [(1, 2), (2, 2), (3, 1), (4, 0)] {
        let (status, body) = opter_get(&sb, &format!("?page={page}&pageSize=2"), Some(&key)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["page"], page);
        assert_eq!(body["pageSize"], 2);
        assert_eq!(body["totalCount"], 5);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), want, "page {page}");
        seen.extend(items.iter().cloned());
    }
    // Unfiltered and in order: every field, unknown ones included.
    assert_eq!(seen, customers);
    let (_, body) = opter_get(&sb, "", Some(&key)).await;
    assert_eq!(
        (body["page"].as_u64(), body["pageSize"].as_u64()),
        (Some(1), Some(100))
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn opter_changed_since_is_strictly_later() {
    let customers = vec![
        opter_customer("A", "A", "2024-03-01T10:00:00Z"),
        opter_customer("B", "B", "2024-03-02T10:00:00Z"),
        opter_customer("C", "C", "2024-03-03T12:00:00+02:00"),
    ];
    let sb = start(SandboxOptions {
        customers,
        ..Default::default()
    })
    .await;
    let key = sb.credentials().opter_api_key;
    let (status, body) = opter_get(&sb, "?changedSince=2024-03-02T10:00:00Z", Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalCount"], 1);
    assert_eq!(body["items"][0]["customerCode"], "C");
    // Offsets count: 2024-03-02T11:00:00+01:00 is the same instant as B's update.
    let (_, body) = opter_get(&sb, "?changedSince=2024-03-02T11:00:00%2B01:00", Some(&key)).await;
    assert_eq!(body["totalCount"], 1);
    let (status, body) = opter_get(&sb, "?changedSince=yesterday", Some(&key)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("changedSince"));
    sb.shutdown().await;
}

#[tokio::test]
async fn opter_refuses_missing_or_wrong_api_key() {
    let sb = start(SandboxOptions {
        customers: vec![opter_customer("A", "A", "2024-03-01T10:00:00Z")],
        ..Default::default()
    })
    .await;
    for key in [None, Some("wrong-key")] {
        let (status, body) = opter_get(&sb, "", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["message"].is_string(), "{body}");
        assert!(body.get("items").is_none());
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn opter_page_size_and_page_limits() {
    let sb = start_default().await;
    let key = sb.credentials().opter_api_key;
    for bad in ["1001", "0", "many"] {
        let (status, body) = opter_get(&sb, &format!("?pageSize={bad}"), Some(&key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"message": "pageSize must be between 1 and 1000"})
        );
    }
    let (status, _) = opter_get(&sb, "?pageSize=1000", Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    for bad in ["0", "-1", "x"] {
        let (status, body) = opter_get(&sb, &format!("?page={bad}"), Some(&key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().contains("page"));
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn opter_keeps_duplicates_and_control_put_replaces_first_or_appends() {
    let customers = vec![
        opter_customer("D", "First D", "2024-03-01T10:00:00Z"),
        opter_customer("D", "Second D", "2024-03-01T10:00:00Z"),
    ];
    let sb = start(SandboxOptions {
        customers,
        ..Default::default()
    })
    .await;
    let key = sb.credentials().opter_api_key;
    let (_, body) = opter_get(&sb, "", Some(&key)).await;
    assert_eq!(body["totalCount"], 2);

    let client = Client::new();
    let url = |code: &str| format!("{}/_sandbox/opter/customers/{code}", sb.base_url());
    let replaced = opter_customer("D", "Renamed D", "2024-04-01T00:00:00Z");
    let resp = client.put(url("D")).json(&replaced).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let added = opter_customer("E", "New E", "2024-04-01T00:00:00Z");
    let resp = client.put(url("E")).json(&added).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let all: Value = client
        .get(format!("{}/_sandbox/opter/customers", sb.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Renamed D", "Second D", "New E"]);
    assert_eq!(sb.opter_customers().len(), 3);
    sb.shutdown().await;
}

// ---------- Visma Connect ----------

#[tokio::test]
async fn refresh_token_works_once_then_invalid_grant() {
    let sb = start(SandboxOptions {
        access_token_ttl_secs: 1234,
        ..Default::default()
    })
    .await;
    let first = sb.credentials().visma_refresh_token;
    let resp = refresh(&sb, &first).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1234);
    assert_eq!(body["scope"], "ea:api offline_access ea:sales");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    let second = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);

    let reused = refresh(&sb, &first).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );
    let unknown = refresh(&sb, "never-issued").await;
    assert_eq!(
        unknown.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );

    // The rotated token works (client auth in the form this time), once.
    let c = sb.credentials();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", second.as_str()),
        ("client_id", c.visma_client_id.as_str()),
        ("client_secret", c.visma_client_secret.as_str()),
    ];
    let resp = Client::new()
        .post(sb.visma_token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = Client::new()
        .post(sb.visma_token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    sb.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_refuses_wrong_client() {
    let sb = start_default().await;
    let c = sb.credentials();
    let resp = Client::new()
        .post(sb.visma_token_url())
        .basic_auth(&c.visma_client_id, Some("not-the-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", c.visma_refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "invalid_client"})
    );
    // A refused client did not consume the refresh token.
    assert_eq!(
        refresh(&sb, &c.visma_refresh_token).await.status(),
        StatusCode::OK
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn api_requires_valid_unexpired_access_token() {
    let sb = start(SandboxOptions {
        access_token_ttl_secs: 1,
        ..Default::default()
    })
    .await;
    let url = format!("{}/customers", sb.visma_api_base());
    let client = Client::new();
    let check_401 = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: Value = resp.json().await.unwrap();
        assert_ea_error(
            StatusCode::UNAUTHORIZED,
            &body,
            StatusCode::UNAUTHORIZED,
            4005,
        );
        assert_eq!(
            body["DeveloperErrorMessage"],
            "Authorization has been denied for this request."
        );
    };
    check_401(client.get(&url).send().await.unwrap()).await;
    check_401(client.get(&url).bearer_auth("forged").send().await.unwrap()).await;

    let body: Value = refresh(&sb, &sb.credentials().visma_refresh_token)
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Expiry by TTL...
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    check_401(client.get(&url).bearer_auth(token).send().await.unwrap()).await;

    // ...and on demand; a refresh then gives a working token again.
    let next = body["refresh_token"].as_str().unwrap();
    let body: Value = refresh(&sb, next).await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let resp = client
        .post(format!("{}/_sandbox/visma/expire-tokens", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    check_401(client.get(&url).bearer_auth(token).send().await.unwrap()).await;
    sb.shutdown().await;
}

#[tokio::test]
async fn authorize_then_pkce_code_exchange() {
    let sb = start_default().await;
    let c = sb.credentials();
    let no_redirect = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // RFC 7636 appendix B's pair.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let redirect_uri = "http://127.0.0.1:9/callback";
    let authorize = || async {
        let resp = no_redirect
            .get(sb.visma_authorize_url())
            .query(&[
                ("response_type", "code"),
                ("client_id", c.visma_client_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("scope", "ea:api offline_access ea:sales"),
                ("state", "xyz 1"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(redirect_uri));
        let q: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "xyz 1");
        q["code"].clone()
    };
    let exchange = |code: String, verifier: &'static str| {
        let c = c.clone();
        let client = Client::new();
        let url = sb.visma_token_url();
        async move {
            client
                .post(url)
                .basic_auth(&c.visma_client_id, Some(&c.visma_client_secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let wrong = "wrongwrongwrongwrongwrongwrongwrongwrongwrong";
    let resp = exchange(authorize().await, wrong).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );

    let code = authorize().await;
    let resp = exchange(code.clone(), verifier).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let resp = Client::new()
        .get(format!("{}/customers", sb.visma_api_base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Codes are single-use.
    let again = exchange(code, verifier).await;
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );
    sb.shutdown().await;
}

// ---------- customers ----------

#[tokio::test]
async fn each_required_field_missing_is_error_2000_naming_it() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    assert_eq!(CUSTOMER_REQUIRED.len(), 6);
    for &field in CUSTOMER_REQUIRED {
        for blank in [None, Some(Value::Null)] {
            let mut body = valid_customer("R1");
            match &blank {
                None => {
                    body.as_object_mut().unwrap().remove(field);
                }
                Some(v) => body[field] = v.clone(),
            }
            let (status, err) = api.post("/customers", &body).await;
            assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 2000);
            assert!(
                message(&err).starts_with(&format!("{field}:")),
                "{field}: {err}"
            );
        }
    }
    let mut body = valid_customer("R1");
    body["Name"] = json!("   ");
    let (status, err) = api.post("/customers", &body).await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 2000);
    assert!(message(&err).starts_with("Name:"));
    assert!(sb.visma_customers().is_empty());
    sb.shutdown().await;
}

#[tokio::test]
async fn string_limits_types_email_and_terms_are_enforced() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let mut body = valid_customer("L1");
    body["Name"] = json!("N".repeat(51));
    let (status, err) = api.post("/customers", &body).await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 2000);
    assert!(message(&err).starts_with("Name:"), "{err}");

    let cases = [
        ("InvoicePostalCode", json!("12345678901")),
        ("CustomerNumber", json!("X".repeat(17))),
        ("ContactPersonName", json!("x".repeat(101))),
        ("ContactPersonEmail", json!("not-an-email")),
        ("EmailAddress", json!("a@b")),
        ("TermsOfPaymentId", json!(uuid::Uuid::new_v4().to_string())),
        ("TermsOfPaymentId", json!("not-a-uuid")),
        ("IsActive", json!("yes")),
        ("Name", json!(42)),
    ];
    for (field, value) in cases {
        let mut body = valid_customer("L1");
        body[field] = value.clone();
        let (status, err) = api.post("/customers", &body).await;
        assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 2000);
        assert!(
            message(&err).starts_with(&format!("{field}:")),
            "{field}={value}: {err}"
        );
    }
    // Exactly at the limit is fine, counted in characters, not bytes.
    let mut body = valid_customer("L1");
    body["Name"] = json!("Å".repeat(50));
    body["ContactPersonEmail"] = json!("");
    let (status, stored) = api.post("/customers", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(sb.visma_customers().len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn create_sets_server_fields_and_ignores_read_only_input() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let mut body = valid_customer("");
    body.as_object_mut().unwrap().remove("CustomerNumber");
    body["Id"] = json!("00000000-0000-0000-0000-000000000001");
    body["ChangedUtc"] = json!("1999-01-01T00:00:00Z");
    body["NotAField"] = json!("dropped");
    let (status, stored) = api.post("/customers", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_ne!(stored["Id"], body["Id"]);
    assert!(uuid::Uuid::parse_str(stored["Id"].as_str().unwrap()).is_ok());
    assert_ne!(stored["ChangedUtc"], body["ChangedUtc"]);
    assert_eq!(stored["CustomerNumber"], "1");
    assert!(stored.get("NotAField").is_none());
    assert_eq!(stored["TermsOfPayment"]["Id"], SANDBOX_TERMS_OF_PAYMENT_ID);
    let (status, fetched) = api
        .get(&format!("/customers/{}", stored["Id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, stored);
    sb.shutdown().await;
}

#[tokio::test]
async fn non_json_body_is_6001() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let resp = api
        .client
        .post(format!("{}/customers", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 6001);
    sb.shutdown().await;
}

#[tokio::test]
async fn duplicate_customer_number_is_4000_naming_it() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let (status, _) = api.post("/customers", &valid_customer("K1001")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = api.post("/customers", &valid_customer("K1001")).await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 4000);
    assert!(message(&err).contains("K1001"), "{err}");
    // Also when a PUT would take another customer's number.
    let (_, other) = api.post("/customers", &valid_customer("K1002")).await;
    let id = other["Id"].as_str().unwrap();
    let (status, err) = api
        .put(&format!("/customers/{id}"), &valid_customer("K1001"))
        .await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 4000);
    // Keeping its own number is not a conflict.
    let (status, _) = api
        .put(&format!("/customers/{id}"), &valid_customer("K1002"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sb.visma_customers().len(), 2);
    sb.shutdown().await;
}

#[tokio::test]
async fn filter_by_customer_number_or_name_and_paging() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    for n in ["K1001", "K1002", "K1003"] {
        let mut c = valid_customer(n);
        c["Name"] = json!(format!("Kund {n}"));
        assert_eq!(api.post("/customers", &c).await.0, StatusCode::CREATED);
    }
    let (status, page) = api
        .get("/customers?$filter=CustomerNumber%20eq%20'K1002'")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["Meta"]["TotalNumberOfResults"], 1);
    assert_eq!(page["Data"][0]["CustomerNumber"], "K1002");
    let (_, page) = api.get("/customers?$filter=Name eq 'Kund K1003'").await;
    assert_eq!(page["Data"][0]["CustomerNumber"], "K1003");
    let (_, page) = api
        .get("/customers?$filter=CustomerNumber eq 'K9999'")
        .await;
    assert_eq!(page["Data"], json!([]));

    let (status, err) = api.get("/customers?$filter=Telephone eq '1'").await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 6000);
    let (status, err) = api.get("/customers?$pagesize=1001").await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 6000);

    let (_, page) = api.get("/customers?$page=2&$pagesize=2").await;
    let meta = &page["Meta"];
    assert_eq!(
        (meta["CurrentPage"].as_u64(), meta["PageSize"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (
            meta["TotalNumberOfPages"].as_u64(),
            meta["TotalNumberOfResults"].as_u64()
        ),
        (Some(2), Some(3))
    );
    assert!(meta["ServerTimeUtc"].is_string());
    assert_eq!(page["Data"].as_array().unwrap().len(), 1);
    assert_eq!(page["Data"][0]["CustomerNumber"], "K1003");
    let (_, page) = api.get("/customers").await;
    assert_eq!(page["Meta"]["PageSize"], 50);
    sb.shutdown().await;
}

#[tokio::test]
async fn put_is_a_full_replace_clearing_omitted_fields() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let (_, created) = api.post("/customers", &valid_customer("K1001")).await;
    assert_eq!(created["ContactPersonEmail"], "anna@akerinord.se");
    let id = created["Id"].as_str().unwrap();

    let mut replacement = valid_customer("K1001");
    let obj = replacement.as_object_mut().unwrap();
    obj.remove("ContactPersonName");
    obj.remove("ContactPersonEmail");
    obj.insert("Name".into(), json!("Renamed AB"));
    let (status, stored) = api.put(&format!("/customers/{id}"), &replacement).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["Id"], id);
    assert_eq!(stored["Name"], "Renamed AB");
    assert_eq!(stored["ContactPersonName"], Value::Null);
    assert_eq!(stored["ContactPersonEmail"], Value::Null);
    assert_eq!(sb.visma_customers(), vec![stored.clone()]);
    // Explicit empty strings are what the swagger allows (minLength 0): kept as sent.
    let obj = replacement.as_object_mut().unwrap();
    for field in ["ContactPersonName", "ContactPersonEmail", "EmailAddress"] {
        obj.insert(field.into(), json!(""));
    }
    let (status, stored) = api.put(&format!("/customers/{id}"), &replacement).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    for field in ["ContactPersonName", "ContactPersonEmail", "EmailAddress"] {
        assert_eq!(stored[field], "", "{field}");
    }

    // A PUT is validated like a create.
    replacement.as_object_mut().unwrap().remove("InvoiceCity");
    let (status, err) = api.put(&format!("/customers/{id}"), &replacement).await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 2000);
    let missing = uuid::Uuid::new_v4();
    let (status, err) = api
        .put(&format!("/customers/{missing}"), &valid_customer("K7"))
        .await;
    assert_ea_error(status, &err, StatusCode::NOT_FOUND, 3000);
    sb.shutdown().await;
}

#[tokio::test]
async fn delete_refused_with_4001_when_customer_has_transactions() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let (_, booked) = api.post("/customers", &valid_customer("K1001")).await;
    let (_, free) = api.post("/customers", &valid_customer("K1002")).await;
    let resp = Client::new()
        .post(format!(
            "{}/_sandbox/visma/customers/K1001/transactions",
            sb.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let booked_path = format!("/customers/{}", booked["Id"].as_str().unwrap());
    let (status, err) = api.delete(&booked_path).await;
    assert_ea_error(status, &err, StatusCode::BAD_REQUEST, 4001);
    assert_eq!(api.get(&booked_path).await.0, StatusCode::OK);

    let free_path = format!("/customers/{}", free["Id"].as_str().unwrap());
    // 200, as the swagger says, not 204.
    assert_eq!(api.delete(&free_path).await.0, StatusCode::OK);
    let (status, err) = api.get(&free_path).await;
    assert_ea_error(status, &err, StatusCode::NOT_FOUND, 3000);
    let (status, err) = api.delete(&free_path).await;
    assert_ea_error(status, &err, StatusCode::NOT_FOUND, 3000);
    sb.shutdown().await;
}

#[tokio::test]
async fn terms_of_payments_lists_the_default() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let (status, page) = api.get("/termsofpayments").await;
    assert_eq!(status, StatusCode::OK);
    let data = page["Data"].as_array().unwrap();
    assert!(data.len() >= 2);
    assert!(data.iter().any(|t| t["Id"] == SANDBOX_TERMS_OF_PAYMENT_ID));
    sb.shutdown().await;
}

#[tokio::test]
async fn rate_limit_per_client_and_endpoint_gives_4010_without_retry_after() {
    let sb = start(SandboxOptions {
        eaccounting_rate_limit_per_minute: 5,
        ..Default::default()
    })
    .await;
    let api = Api::new(&sb).await;
    for i in 1..=5 {
        assert_eq!(api.get("/customers").await.0, StatusCode::OK, "call {i}");
    }
    let resp = api
        .client
        .get(format!("{}/customers?$page=1", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    let err: Value = resp.json().await.unwrap();
    assert_ea_error(
        StatusCode::TOO_MANY_REQUESTS,
        &err,
        StatusCode::TOO_MANY_REQUESTS,
        4010,
    );
    let msg = message(&err);
    let prefix = "API calls quota exceeded! maximum admitted 5 per Minute. Try again in ";
    let seconds: u64 = msg
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(" seconds."))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message: {msg}"));
    assert!((1..=60).contains(&seconds), "{seconds}");
    // Another endpoint has its own quota.
    assert_eq!(api.get("/termsofpayments").await.0, StatusCode::OK);
    sb.shutdown().await;
}

#[tokio::test]
async fn request_log_records_every_visma_call_with_body() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let sent = valid_customer("K1001");
    api.post("/customers", &sent).await;
    api.get("/customers?$filter=CustomerNumber%20eq%20'K1001'")
        .await;

    let log: Value = Client::new()
        .get(format!("{}/_sandbox/visma/requests", sb.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap().clone();
    assert_eq!(log, sb.visma_requests());
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0]["path"], "/visma/connect/token");
    assert!(log[0]["body"]
        .as_str()
        .unwrap()
        .contains("grant_type=refresh_token"));
    assert_eq!(log[1]["method"], "POST");
    assert_eq!(log[1]["path"], "/visma/v2/customers");
    assert_eq!(log[1]["status"], 201);
    assert_eq!(log[1]["body"], sent);
    // The query as the client sent it (reqwest percent-encodes the quotes).
    let path = log[2]["path"].as_str().unwrap();
    assert!(path.starts_with("/visma/v2/customers?$filter=CustomerNumber%20eq%20"));
    assert!(path.contains("K1001"), "{path}");
    assert_eq!(log[2]["body"], Value::Null);
    let seqs: Vec<u64> = log.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let resp = Client::new()
        .delete(format!("{}/_sandbox/visma/requests", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert!(sb.visma_requests().is_empty());
    sb.shutdown().await;

    let quiet = start(SandboxOptions {
        record_requests: false,
        ..Default::default()
    })
    .await;
    Api::new(&quiet).await.get("/customers").await;
    assert!(quiet.visma_requests().is_empty());
    quiet.shutdown().await;
}

#[tokio::test]
async fn health_and_shutdown() {
    let sb = start_default().await;
    assert!(sb.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(sb.opter_api_base(), format!("{}/opter/api", sb.base_url()));
    let resp = Client::new()
        .get(format!("{}/_sandbox/health", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let url = sb.base_url();
    sb.shutdown().await;
    assert!(Client::new()
        .get(format!("{url}/_sandbox/health"))
        .send()
        .await
        .is_err());
}

// ---------- the rules agree with Visma's swagger ----------

#[test]
fn rules_agree_with_the_eaccounting_swagger() {
    let path = std::path::Path::new(SWAGGER);
    if !path.exists() {
        eprintln!("SKIPPED: {} is absent (no ../shared next to the crate); rules not compared with the swagger", path.display());
        return;
    }
    let swagger: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api = &swagger["definitions"]["CustomerApi"];
    let mut from_swagger = BTreeMap::new();
    for (name, prop) in api["properties"].as_object().unwrap() {
        if prop["type"] == "string" {
            if let Some(max) = prop["maxLength"].as_u64() {
                from_swagger.insert(name.clone(), max as usize);
            }
        }
    }
    let ours: BTreeMap<String, usize> = CUSTOMER_STRING_LIMITS
        .iter()
        .map(|&(f, n)| (f.to_string(), n))
        .collect();
    assert_eq!(
        ours.len(),
        CUSTOMER_STRING_LIMITS.len(),
        "duplicate entries in CUSTOMER_STRING_LIMITS"
    );
    assert_eq!(
        ours, from_swagger,
        "CUSTOMER_STRING_LIMITS differs from the swagger"
    );

    let mut required: Vec<String> = api["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut ours: Vec<String> = CUSTOMER_REQUIRED.iter().map(|s| s.to_string()).collect();
    required.sort();
    ours.sort();
    assert_eq!(ours, required, "CUSTOMER_REQUIRED differs from the swagger");
}
