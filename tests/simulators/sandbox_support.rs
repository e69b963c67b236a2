//! Helpers shared by the simulator tests (`http`, `faults`), over real HTTP.

#![allow(dead_code)]

use opter_visma_sync::sandbox::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

pub async fn start(opts: SandboxOptions) -> Sandbox {
    Sandbox::start(opts).await.expect("sandbox starts")
}

pub async fn start_default() -> Sandbox {
    start(SandboxOptions::default()).await
}

/// A refresh-token grant at Visma Connect, client credentials in HTTP Basic.
pub async fn refresh(sb: &Sandbox, token: &str) -> reqwest::Response {
    let c = sb.credentials();
    Client::new()
        .post(sb.visma_token_url())
        .basic_auth(&c.visma_client_id, Some(&c.visma_client_secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap()
}

/// A fresh access token, obtained with the initial refresh token.
pub async fn access_token(sb: &Sandbox) -> String {
    let resp = refresh(sb, &sb.credentials().visma_refresh_token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// A customer that passes every eAccounting rule.
pub fn valid_customer(number: &str) -> Value {
    json!({
        "CustomerNumber": number,
        "Name": "Åkeri Nord AB",
        "InvoiceCity": "Umeå",
        "InvoicePostalCode": "903 25",
        "TermsOfPaymentId": SANDBOX_TERMS_OF_PAYMENT_ID,
        "IsPrivatePerson": false,
        "IsActive": true,
        "ContactPersonName": "Anna Berg",
        "ContactPersonEmail": "anna@akerinord.se"
    })
}

/// The eAccounting v2 API with a bearer token.
pub struct Api {
    /// Keeps no idle connections: each call opens its own, so a connection the
    /// sandbox dropped cannot affect the next call.
    pub client: Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn new(sb: &Sandbox) -> Api {
        Api {
            client: Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            base: sb.visma_api_base(),
            token: access_token(sb).await,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.unwrap()
    }

    pub async fn status(&self, method: Method, path: &str) -> StatusCode {
        self.send(method, path, None).await.status()
    }

    /// The status and the body as JSON (`Null` when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let resp = self.send(method, path, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

/// An eAccounting error body: the code, a message, and a uuid `ErrorId`.
fn assert_ea_error_body(body: &Value, code: u64) {
    assert_eq!(body["ErrorCode"], code, "body: {body}");
    assert!(body["DeveloperErrorMessage"].is_string(), "body: {body}");
    let id = body["ErrorId"].as_str().expect("ErrorId");
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "ErrorId not a uuid: {id}"
    );
}

/// An eAccounting error answered with `want_status` and `code`.
pub fn assert_ea_error(status: StatusCode, body: &Value, want_status: StatusCode, code: u64) {
    assert_eq!(status, want_status, "body: {body}");
    assert_ea_error_body(body, code);
}

/// An eAccounting error body with `code` and exactly `message`.
pub fn assert_ea_error_message(body: &Value, code: u64, message: &str) {
    assert_ea_error_body(body, code);
    assert_eq!(body["DeveloperErrorMessage"], message, "body: {body}");
}
