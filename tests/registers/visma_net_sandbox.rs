//! The simulated Visma.net ERP over real HTTP, and the Visma.net sink against it: the
//! client-credentials grant with tenant_id, the value-wrapped customer API, partial
//! updates, erasure, the rate limit and its headers.

use crate::common::Mapped;
use std::path::Path;
use std::time::{Duration, Instant};

use opter_visma_sync::mapping::{MappedRecord, Mapping};
use opter_visma_sync::record::PermittedCustomer;
use opter_visma_sync::retry::RetryPolicy;
use opter_visma_sync::sandbox::visma_net::{
    self as visma_net_sim, SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID,
};
use opter_visma_sync::sandbox::{Faults, Sandbox, SandboxOptions};
use opter_visma_sync::sink::auth::ClientCredentials;
use opter_visma_sync::sink::visma_net::{self, VismaNetSink, RULES};
use opter_visma_sync::sink::{Erased, SinkError, ERASED_NAME};
use reqwest::{Client, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

/// A tenant that is no company of the sandbox: the customer tenant, say.
const CUSTOMER_TENANT: &str = "0b6f2a4e-1111-4c2d-8e3f-123456789abc";
use opter_visma_sync::sandbox::SANDBOX_VISMA_NET_UNLICENSED_TENANT_ID as UNLICENSED_TENANT;
const SCOPES: &str =
    "vismanet_erp_service_api:read vismanet_erp_service_api:create vismanet_erp_service_api:update";

async fn start(opts: SandboxOptions) -> Sandbox {
    Sandbox::start(opts).await.expect("sandbox starts")
}

/// No rate limit: the tests that are not about it should not meet it.
async fn start_unlimited() -> Sandbox {
    start(SandboxOptions {
        visma_net_rate_limit_per_hour: 0,
        ..SandboxOptions::default()
    })
    .await
}

fn sink_for_tenant(sb: &Sandbox, tenant: &str) -> VismaNetSink {
    let c = sb.credentials();
    let tokens = ClientCredentials::new(
        visma_net::PRODUCT,
        &sb.visma_net_token_url(),
        &c.visma_net_client_id,
        &SecretString::from(c.visma_net_client_secret),
        SCOPES.split(' ').map(String::from).collect(),
        tenant.to_string(),
    )
    .unwrap();
    let retry = RetryPolicy {
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(100),
        budget: Duration::from_secs(20),
        max_server_wait: Duration::from_secs(10),
    };
    VismaNetSink::new(&sb.visma_net_api_base(), tokens, 1_000_000, retry).unwrap()
}

fn sink(sb: &Sandbox) -> VismaNetSink {
    sink_for_tenant(sb, &sb.credentials().visma_net_tenant_id)
}

fn mapping() -> Mapping {
    Mapping::parse(
        opter_visma_sync::sink::visma_net::REGISTER.mapping,
        Path::new("visma-net.toml"),
        RULES,
    )
    .expect("the bundled mapping loads")
}

fn customer(
    code: &str,
    name: &str,
    contact: Option<&str>,
    email: Option<&str>,
) -> PermittedCustomer {
    PermittedCustomer {
        code: code.into(),
        number: None,
        name: name.into(),
        is_active: true,
        contact_name: contact.map(String::from),
        contact_email: email.map(String::from),
    }
}

fn mapped(c: &PermittedCustomer) -> MappedRecord {
    mapping().mapped(c).expect("a valid customer maps")
}

/// A token asked for as a client would, with the given form (client in HTTP Basic).
async fn token_response(sb: &Sandbox, form: &[(&str, &str)]) -> reqwest::Response {
    let c = sb.credentials();
    Client::new()
        .post(sb.visma_net_token_url())
        .basic_auth(&c.visma_net_client_id, Some(&c.visma_net_client_secret))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn access_token(sb: &Sandbox, tenant: &str) -> String {
    let resp = token_response(
        sb,
        &[
            ("grant_type", "client_credentials"),
            ("scope", SCOPES),
            ("tenant_id", tenant),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// The API as a person with a token would use it (an accountant editing a customer).
struct Api {
    base: String,
    token: String,
}

impl Api {
    async fn new(sb: &Sandbox, tenant: &str) -> Api {
        Api {
            base: sb.visma_net_api_base(),
            token: access_token(sb, tenant).await,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, None).await
    }
}

fn stored(sb: &Sandbox, number: &str) -> Option<Value> {
    sb.visma_net_customers()
        .into_iter()
        .find(|c| c["number"] == number)
}

fn api_calls(sb: &Sandbox) -> Vec<Value> {
    sb.visma_net_requests()
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/visma-net/api/"))
        })
        .collect()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn a_token_needs_the_client_a_tenant_and_known_scopes() {
    let sb = start_unlimited().await;
    let c = sb.credentials();
    let ok = token_response(
        &sb,
        &[
            ("grant_type", "client_credentials"),
            ("scope", SCOPES),
            ("tenant_id", &c.visma_net_tenant_id),
        ],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));

    // The client in the form instead of HTTP Basic.
    let in_form = Client::new()
        .post(sb.visma_net_token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.visma_net_client_id.as_str()),
            ("client_secret", c.visma_net_client_secret.as_str()),
            ("scope", SCOPES),
            ("tenant_id", c.visma_net_tenant_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(in_form.status(), StatusCode::OK);

    let wrong_secret = Client::new()
        .post(sb.visma_net_token_url())
        .basic_auth(&c.visma_net_client_id, Some("not-the-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", SCOPES),
            ("tenant_id", c.visma_net_tenant_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_secret.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let no_tenant = token_response(
        &sb,
        &[("grant_type", "client_credentials"), ("scope", SCOPES)],
    )
    .await;
    assert_eq!(no_tenant.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        no_tenant.json::<Value>().await.unwrap(),
        json!({"error": "invalid_request", "error_description": "tenant_id is required"})
    );

    let bad_scope = token_response(
        &sb,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "vismanet_erp_service_api:everything"),
            ("tenant_id", &c.visma_net_tenant_id),
        ],
    )
    .await;
    assert_eq!(bad_scope.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_scope.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );

    // The secret never reaches the request log.
    let log = serde_json::to_string(&sb.visma_net_requests()).unwrap();
    assert!(!log.contains(&c.visma_net_client_secret), "{log}");
}

#[tokio::test]
async fn the_sink_without_a_tenant_is_told_to_fix_the_config() {
    let sb = start_unlimited().await;
    let e = sink_for_tenant(&sb, "")
        .get("K1")
        .await
        .expect_err("no token without tenant_id");
    match e {
        SinkError::Config(m) => assert!(m.contains("tenant_id is required"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_customer_tenant_gets_a_token_then_401_and_the_sink_says_use_the_company_tenant() {
    let sb = start_unlimited().await;
    // Visma Connect issues the token: the tenant is a tenant, just not the company.
    let api = Api::new(&sb, CUSTOMER_TENANT).await;
    let resp = api.get("/v1/customer?pageNumber=1&pageSize=10").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), None, "not counted");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "Authorization has been denied for this request."})
    );

    let before = api_calls(&sb).len();
    let record = mapped(&customer("K1", "Acme AB", None, None));
    let sink = sink_for_tenant(&sb, CUSTOMER_TENANT);
    let e = sink.create(&record, "key").await.expect_err("wrong tenant");
    match &e {
        SinkError::Config(m) => assert!(
            m.contains("check `tenant_id`")
                && m.contains("Company Tenant ID")
                && !m.contains("client_id"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Decided on the first refusal: one call, no new token, nothing stored.
    assert_eq!(api_calls(&sb).len(), before + 1);
    let tokens = sb
        .visma_net_requests()
        .iter()
        .filter(|r| r["path"] == "/visma-net/connect/token")
        .count();
    assert_eq!(tokens, 2, "the test's own token and the sink's one");
    assert!(sb.visma_net_customers().is_empty());
    // Later calls are answered with the same error, without presenting the token again.
    assert_eq!(sink.get("K1").await.unwrap_err(), e);
    assert_eq!(api_calls(&sb).len(), before + 1);
}

#[tokio::test]
async fn an_unlicensed_company_gets_12027_and_the_sink_says_to_check_tenant_id() {
    let sb = start_unlimited().await;
    let api = Api::new(&sb, UNLICENSED_TENANT).await;
    let resp = api.get("/v1/customer?pageNumber=1&pageSize=10").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ExceptionType"], "IPPException");
    assert_eq!(body["ExceptionFaultCode"], "12027");
    assert_eq!(body["ExceptionMessage"], "No license for this company.");

    let before = api_calls(&sb).len();
    let record = mapped(&customer("K1", "Acme AB", None, None));
    let e = sink_for_tenant(&sb, UNLICENSED_TENANT)
        .create(&record, "key")
        .await
        .expect_err("no licence");
    match e {
        SinkError::Config(m) => assert!(
            m.contains("12027")
                && m.contains("tenant_id in [sink]")
                && m.contains("Visma App Store"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Decided at once: one call, not retried, nothing stored.
    assert_eq!(api_calls(&sb).len(), before + 1);
    assert!(sb.visma_net_customers().is_empty());
}

#[tokio::test]
async fn create_find_update_and_erase_round_trip() {
    let sb = start_unlimited().await;
    let sink = sink(&sb);
    let mapping = mapping();
    let ann = customer(
        "K1",
        "Åkeri Nord AB",
        Some("Ann Berg"),
        Some("ann@akerinord.se"),
    );
    let record = mapped(&ann);

    let written = sink.create(&record, "k1").await.unwrap();
    assert_eq!((written.remote_id.as_str(), written.status), ("K1", 201));
    // What went over the wire: value-wrapped, constants included, plain boolean.
    let post = api_calls(&sb)
        .into_iter()
        .find(|r| r["method"] == "POST")
        .unwrap();
    assert_eq!(
        post["body"],
        json!({
            "number": {"value": "K1"},
            "name": {"value": "Åkeri Nord AB"},
            "mainContact": {"value": {"name": {"value": "Ann Berg"}, "email": {"value": "ann@akerinord.se"}}},
            "customerClassId": {"value": SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID},
            "overrideWithClassValues": true,
            "mainAddress": {"value": {"countryId": {"value": "SE"}}},
            "status": {"value": "Active"},
        })
    );
    let held = stored(&sb, "K1").unwrap();
    assert_eq!(
        held["customerClass"]["id"],
        SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID
    );
    assert_eq!(held["mainAddress"]["country"]["id"], "SE");
    assert_eq!(held["currencyId"], "SEK", "class values applied");

    let found = sink.find_by_number("K1").await.unwrap().expect("found");
    assert_eq!(found.id, "K1");
    assert_eq!(found.record, held);
    assert_eq!(found.fields["mainContact.email"], "ann@akerinord.se");
    assert_eq!(
        mapping.remote_hash(&found.fields),
        record.content_hash,
        "what the register holds hashes like what was sent"
    );

    // A new email, and the contact's name gone in Opter: the name is cleared.
    let changed = mapped(&customer(
        "K1",
        "Åkeri Nord AB",
        None,
        Some("info@akerinord.se"),
    ));
    let written = sink.update("K1", &changed, "k2").await.unwrap();
    assert_eq!((written.remote_id.as_str(), written.status), ("K1", 204));
    let found = sink.get("K1").await.unwrap().unwrap();
    assert_eq!(found.fields["mainContact.email"], "info@akerinord.se");
    assert_eq!(found.fields["mainContact.name"], Value::Null);
    assert_eq!(mapping.remote_hash(&found.fields), changed.content_hash);

    assert_eq!(
        sink.erase("K1", "k3").await.unwrap(),
        Erased::Anonymised { status: 204 }
    );
    let held = stored(&sb, "K1").unwrap();
    assert_eq!(held["name"], ERASED_NAME);
    assert_eq!(held["mainContact"]["name"], Value::Null);
    assert_eq!(held["mainContact"]["email"], Value::Null);
    assert_eq!(held["status"], "Inactive");
    let everything = serde_json::to_string(&held).unwrap();
    for personal in ["Åkeri", "Ann", "akerinord"] {
        assert!(
            !everything.contains(personal),
            "{personal} left in {everything}"
        );
    }

    // Missing customers.
    assert_eq!(sink.find_by_number("K404").await.unwrap(), None);
    assert_eq!(sink.erase("K404", "k4").await.unwrap(), Erased::NotPresent);
    match sink.update("K404", &changed, "k5").await {
        Err(SinkError::Rejected { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(sb.visma_net_customers().len(), 1);
}

#[tokio::test]
async fn a_second_create_with_the_same_number_is_number_taken() {
    let sb = start_unlimited().await;
    let sink = sink(&sb);
    let record = mapped(&customer("K7", "Acme AB", None, None));
    sink.create(&record, "a").await.unwrap();
    let other = mapped(&customer("K7", "Another AB", None, None));
    match sink.create(&other, "b").await {
        Err(SinkError::NumberTaken {
            status: 400,
            message,
        }) => {
            assert!(message.contains("already exists"), "{message}");
            assert!(
                !message.contains("K7"),
                "quoted values are removed: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sb.visma_net_customers().len(), 1);
    assert_eq!(stored(&sb, "K7").unwrap()["name"], "Acme AB");

    // A create refused for its content is not taken for a duplicate.
    let mut bad = mapped(&customer("K8", "Acme AB", None, None));
    std::sync::Arc::make_mut(&mut bad.defaults).insert("customerClassId".into(), json!("nope"));
    match sink.create(&bad, "c").await {
        Err(SinkError::Rejected {
            status: 400,
            message,
            ..
        }) => {
            assert!(message.contains("customerClassId"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_partial_update_leaves_the_accountants_fields_alone() {
    let sb = start_unlimited().await;
    let sink = sink(&sb);
    sink.create(
        &mapped(&customer("K2", "Acme AB", Some("Ann"), Some("ann@acme.se"))),
        "a",
    )
    .await
    .unwrap();
    // The accountant adds a phone, an address and other terms in Visma.net.
    let accountant = Api::new(&sb, &sb.credentials().visma_net_tenant_id).await;
    let resp = accountant
        .send(
            reqwest::Method::PUT,
            "/v1/customer/K2",
            Some(json!({
                "creditTermsId": {"value": "10"},
                "mainAddress": {"value": {"city": {"value": "Umeå"}}},
                "mainContact": {"value": {"phone1": {"value": "090-12 34 56"}}},
            })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let renamed = mapped(&customer(
        "K2",
        "Acme Group AB",
        Some("Ann"),
        Some("ann@acme.se"),
    ));
    sink.update("K2", &renamed, "b").await.unwrap();
    let held = stored(&sb, "K2").unwrap();
    assert_eq!(held["name"], "Acme Group AB");
    assert_eq!(held["creditTerms"]["id"], "10");
    assert_eq!(held["mainAddress"]["city"], "Umeå");
    assert_eq!(held["mainAddress"]["country"]["id"], "SE");
    assert_eq!(held["mainContact"]["phone1"], "090-12 34 56");
    assert_eq!(held["mainContact"]["email"], "ann@acme.se");
    // The PUT named only our fields: no constants, no number.
    let put = api_calls(&sb)
        .into_iter()
        .rfind(|r| r["method"] == "PUT")
        .unwrap();
    assert_eq!(
        put["body"],
        json!({
            "name": {"value": "Acme Group AB"},
            "mainContact": {"value": {"name": {"value": "Ann"}, "email": {"value": "ann@acme.se"}}},
        })
    );
}

#[tokio::test]
async fn the_api_is_strict_about_shapes_paging_and_required_fields() {
    let sb = start_unlimited().await;
    let api = Api::new(&sb, &sb.credentials().visma_net_tenant_id).await;
    let post = |body: Value| api.send(reqwest::Method::POST, "/v1/customer", Some(body));
    let valid = json!({
        "number": {"value": "K3"}, "name": {"value": "Acme AB"},
        "customerClassId": {"value": SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID},
        "mainAddress": {"value": {"countryId": {"value": "SE"}}},
    });
    let message = |v: Value| v["message"].as_str().unwrap_or_default().to_string();
    for (change, want) in [
        (json!({"name": "Acme AB"}), "name: expected a value object"),
        (json!({"name": null}), "name: expected a value object"),
        (json!({"phone": {"value": "070"}}), "phone: unknown field"),
        (
            json!({"customerClassId": {"value": "9"}}),
            "customerClassId: unknown customer class",
        ),
        (
            json!({"number": {"value": "K12345678901"}}),
            "number: must be at most 10",
        ),
        (
            json!({"mainAddress": {"value": {"city": {"value": "Umeå"}}}}),
            "mainAddress.countryId: is required",
        ),
    ] {
        let mut body = valid.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = post(body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{want}");
        let m = message(resp.json().await.unwrap());
        assert!(m.contains(want), "{m}");
    }
    let mut no_name = valid.clone();
    no_name.as_object_mut().unwrap().remove("name");
    let m = message(post(no_name).await.json().await.unwrap());
    assert!(m.contains("name: is required"), "{m}");

    let created = post(valid.clone()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.ends_with("/visma-net/api/v1/customer/K3"),
        "{location}"
    );
    assert_eq!(created.text().await.unwrap(), "");

    // Paging parameters are mandatory.
    for query in [
        "",
        "?pageNumber=1",
        "?pageSize=10",
        "?pageNumber=0&pageSize=10",
    ] {
        let resp = api.get(&format!("/v1/customer{query}")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let page: Value = api
        .get("/v1/customer?pageNumber=1&pageSize=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    assert_eq!(page[0]["number"], "K3");
    let empty: Value = api
        .get("/v1/customer?pageNumber=2&pageSize=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!([]));
    // An oversized page is clamped to the largest, not refused.
    let huge = api
        .get(&format!(
            "/v1/customer?pageNumber=1&pageSize={}",
            visma_net_sim::MAX_PAGE_SIZE * 50
        ))
        .await;
    assert_eq!(huge.status(), StatusCode::OK);
    assert_eq!(huge.json::<Value>().await.unwrap()[0]["number"], "K3");

    // A required field cannot be cleared; the number cannot change.
    let put = |body: Value| api.send(reqwest::Method::PUT, "/v1/customer/K3", Some(body));
    assert_eq!(
        put(json!({"name": {"value": null}})).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(json!({"number": {"value": "K4"}})).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(stored(&sb, "K3").unwrap()["name"], "Acme AB");
    assert_eq!(
        api.get("/v1/customer/K4").await.status(),
        StatusCode::NOT_FOUND
    );
    let unknown = api
        .send(
            reqwest::Method::PUT,
            "/v1/customer/K4",
            Some(json!({"name": {"value": "x"}})),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // No token, no answer.
    let anonymous = Client::new()
        .get(format!("{}/v1/customer/K3", sb.visma_net_api_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_token_is_replaced_once() {
    let sb = start_unlimited().await;
    let sink = sink(&sb);
    sink.create(&mapped(&customer("K5", "Acme AB", None, None)), "a")
        .await
        .unwrap();
    let expire = Client::new()
        .post(format!(
            "{}/_sandbox/visma-net/expire-tokens",
            sb.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(expire.status(), StatusCode::OK);
    assert!(sink.get("K5").await.unwrap().is_some());
    let statuses: Vec<u64> = api_calls(&sb)
        .iter()
        .filter(|r| r["method"] == "GET")
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![401, 200]);
    let tokens = sb
        .visma_net_requests()
        .iter()
        .filter(|r| r["path"] == "/visma-net/connect/token")
        .count();
    assert_eq!(tokens, 2);
}

#[tokio::test]
async fn every_answer_carries_rate_headers_and_over_the_limit_is_429_with_retry_after() {
    // Visma.net's window is 60 times this one: a minute, so nothing resets mid-test.
    let sb = start(SandboxOptions {
        visma_net_rate_limit_per_hour: 3,
        rate_limit_window: Duration::from_secs(1),
        ..SandboxOptions::default()
    })
    .await;
    let api = Api::new(&sb, &sb.credentials().visma_net_tenant_id).await;
    for (i, path) in [
        "/v1/customer?pageNumber=1&pageSize=5",
        "/v1/customer/K1",
        "/v1/customer",
    ]
    .into_iter()
    .enumerate()
    {
        let resp = api.get(path).await;
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some(3), "{path}");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some(2 - i as u64),
            "{path}"
        );
        let reset = header(&resp, "x-ratelimit-reset").unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
        assert_eq!(
            resp.headers()
                .get("x-ratelimit-policy")
                .and_then(|v| v.to_str().ok()),
            Some(visma_net_sim::RATE_LIMIT_POLICY),
            "{path}"
        );
    }
    let over = api.get("/v1/customer/K1").await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&over, "x-ratelimit-remaining"), Some(0));
    let wait = header(&over, "retry-after").expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = over.json().await.unwrap();
    assert_eq!(
        body["message"],
        format!("Rate limit is exceeded. Try again in {wait} seconds.")
    );

    // The limit counts per client and tenant: another tenant has its own allowance.
    let other = Api::new(&sb, UNLICENSED_TENANT).await;
    let resp = other.get("/v1/customer/K1").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some(2));
}

#[tokio::test]
async fn the_sink_pauses_when_the_allowance_is_used_up_instead_of_meeting_429() {
    // 4 calls per 1.5 s window (0.025 s × 60); 10 creates need three windows.
    let sb = start(SandboxOptions {
        visma_net_rate_limit_per_hour: 4,
        rate_limit_window: Duration::from_millis(25),
        ..SandboxOptions::default()
    })
    .await;
    let sink = sink(&sb);
    let started = Instant::now();
    for i in 0..10 {
        let record = mapped(&customer(&format!("K{i}"), "Acme AB", None, None));
        sink.create(&record, "k").await.unwrap();
    }
    let elapsed = started.elapsed();
    let statuses: Vec<u64> = api_calls(&sb)
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert!(
        !statuses.contains(&429),
        "the sink waited for the window to reset: {statuses:?}"
    );
    assert_eq!(statuses, vec![201; 10], "one call per create");
    assert_eq!(sb.visma_net_customers().len(), 10);
    assert!(
        elapsed >= Duration::from_millis(3000),
        "two windows were waited out: {elapsed:?}"
    );
}

#[tokio::test]
async fn injected_faults_answer_like_visma_net() {
    let sb = start_unlimited().await;
    let api = Api::new(&sb, &sb.credentials().visma_net_tenant_id).await;
    sb.set_faults(Faults {
        fail_rate: 1.0,
        statuses: vec![429],
        retry_after_secs: 7,
        ..Faults::default()
    });
    let resp = api.get("/v1/customer/K1").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), Some(7));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Rate limit is exceeded. Try again in 7 seconds."
    );

    sb.set_faults(Faults {
        fail_rate: 1.0,
        statuses: vec![500],
        ..Faults::default()
    });
    let resp = api.get("/v1/customer/K1").await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ExceptionType"], "IPPException");

    sb.set_faults(Faults {
        fail_rate: 1.0,
        statuses: vec![503],
        ..Faults::default()
    });
    let resp = api.get("/v1/customer/K1").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The token endpoint is never faulted.
    let token = token_response(
        &sb,
        &[
            ("grant_type", "client_credentials"),
            ("scope", SCOPES),
            ("tenant_id", &sb.credentials().visma_net_tenant_id),
        ],
    )
    .await;
    assert_eq!(token.status(), StatusCode::OK);
    let marked = sb
        .visma_net_requests()
        .iter()
        .filter(|r| r["fault"] == "injected")
        .count();
    assert_eq!(marked, 3);
}

#[tokio::test]
async fn an_oversized_page_is_clamped_to_the_largest_page() {
    use futures::StreamExt;
    let sb = start(SandboxOptions {
        visma_net_rate_limit_per_hour: 0,
        record_requests: false,
        ..SandboxOptions::default()
    })
    .await;
    let api = Api::new(&sb, &sb.credentials().visma_net_tenant_id).await;
    let max = visma_net_sim::MAX_PAGE_SIZE as usize;
    let api = &api;
    let created = futures::stream::iter(0..=max)
        .map(|i| async move {
            let body = json!({
                "number": {"value": format!("C{i}")},
                "name": {"value": format!("Customer {i}")},
                "customerClassId": {"value": SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID},
                "mainAddress": {"value": {"countryId": {"value": "SE"}}},
            });
            api.send(reqwest::Method::POST, "/v1/customer", Some(body))
                .await
                .status()
        })
        .buffer_unordered(8)
        .filter(|s| futures::future::ready(*s == StatusCode::CREATED))
        .count()
        .await;
    assert_eq!(created, max + 1);
    for (size, want) in [(max + 1, max), (max * 10, max), (max, max), (7, 7)] {
        let page: Value = api
            .get(&format!("/v1/customer?pageNumber=1&pageSize={size}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page.as_array().map(Vec::len), Some(want), "pageSize={size}");
    }
    // The second clamped page holds what the first could not.
    let rest: Value = api
        .get(&format!("/v1/customer?pageNumber=2&pageSize={}", max * 10))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest.as_array().map(Vec::len), Some(1));
}
