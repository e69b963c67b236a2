//! The simulated Visma Connect of eAccounting: a login's scopes reach its tokens and the
//! API checks them (403, error 4006), and the authorize endpoint takes the company-choice
//! parameters Visma documents.

use crate::sandbox_support;

use opter_visma_sync::sandbox::Sandbox;
use reqwest::{Client, Method, StatusCode};
use sandbox_support::*;
use serde_json::Value;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The authorize request with `params` added to the usual ones.
async fn authorize(sb: &Sandbox, params: &[(&str, &str)]) -> reqwest::Response {
    let c = sb.credentials();
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", c.visma_client_id.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    query.extend_from_slice(params);
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(sb.visma_authorize_url())
        .query(&query)
        .send()
        .await
        .unwrap()
}

/// The token answer of a login that asked for `scope`.
async fn login(sb: &Sandbox, scope: &str) -> Value {
    let resp = authorize(sb, &[("scope", scope)]).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{scope}");
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let c = sb.credentials();
    Client::new()
        .post(sb.visma_token_url())
        .basic_auth(&c.visma_client_id, Some(&c.visma_client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn call(sb: &Sandbox, token: &str, method: Method, path: &str) -> (StatusCode, Value) {
    let mut request = Client::new()
        .request(method.clone(), format!("{}{path}", sb.visma_api_base()))
        .bearer_auth(token);
    if method == Method::POST {
        request = request.json(&valid_customer("K1"));
    }
    let resp = request.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A call and the status it should get.
type Call = (Method, &'static str, StatusCode);

#[tokio::test]
async fn the_api_checks_each_endpoints_scopes_and_answers_4006() {
    let sb = start_default().await;
    let cases: &[(&str, &[Call])] = &[
        (
            "ea:api offline_access ea:sales",
            &[
                (Method::GET, "/customers", StatusCode::OK),
                (Method::POST, "/customers", StatusCode::CREATED),
            ],
        ),
        (
            "ea:api offline_access ea:sales_readonly",
            &[
                (Method::GET, "/customers", StatusCode::OK),
                (Method::POST, "/customers", StatusCode::FORBIDDEN),
                (Method::GET, "/termsofpayments", StatusCode::OK),
            ],
        ),
        (
            "ea:api offline_access",
            &[
                (Method::GET, "/customers", StatusCode::FORBIDDEN),
                (Method::GET, "/termsofpayments", StatusCode::FORBIDDEN),
            ],
        ),
        (
            "offline_access ea:sales",
            &[(Method::GET, "/customers", StatusCode::FORBIDDEN)],
        ),
    ];
    for (scope, calls) in cases {
        let tokens = login(&sb, scope).await;
        assert_eq!(tokens["scope"], *scope, "the answer names what was granted");
        let token = tokens["access_token"].as_str().unwrap();
        for (method, path, want) in calls.iter() {
            let (status, body) = call(&sb, token, method.clone(), path).await;
            assert_eq!(status, *want, "{scope}: {method} {path}: {body}");
            if status == StatusCode::FORBIDDEN {
                assert_eq!(body["ErrorCode"], 4006, "{body}");
                assert!(
                    !body["DeveloperErrorMessage"]
                        .as_str()
                        .unwrap()
                        .contains("ea:"),
                    "Visma's message names no scope: {body}"
                );
            }
        }
        // A rotated refresh token keeps the login's scopes.
        let refreshed: Value = refresh(&sb, tokens["refresh_token"].as_str().unwrap())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(refreshed["scope"], *scope);
    }
}

#[tokio::test]
async fn no_offline_access_no_refresh_token_and_unknown_scopes_are_refused() {
    let sb = start_default().await;
    let tokens = login(&sb, "ea:api ea:sales").await;
    assert!(tokens["access_token"].is_string());
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    for scope in ["", "ea:api offline_access ea:everything"] {
        let resp = authorize(&sb, &[("scope", scope)]).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{scope}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_scope"
        );
    }
}

#[tokio::test]
async fn authorize_takes_the_documented_company_choice_parameters() {
    let sb = start_default().await;
    let scope = ("scope", "ea:api offline_access ea:sales");
    let service = "service:44643EB1-3F76-4C1C-A672-402AE8085934";
    let forced = format!("{service} forceselectcompany:true");
    for params in [
        vec![("prompt", "select_account"), ("acr_values", service)],
        vec![("prompt", "login"), ("acr_values", forced.as_str())],
        vec![
            ("prompt", "login select_account"),
            ("acr_values", forced.as_str()),
        ],
        vec![("prompt", "none")],
    ] {
        let mut query = params.clone();
        query.push(scope);
        let resp = authorize(&sb, &query).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{params:?}");
    }
    for params in [
        vec![("prompt", "select_company")],
        vec![("prompt", "none login")],
        vec![("prompt", "")],
        vec![("acr_values", "forceselectcompany:yes")],
        vec![("acr_values", "service:eaccounting")],
        vec![("acr_values", "company:1")],
    ] {
        let mut query = params.clone();
        query.push(scope);
        let resp = authorize(&sb, &query).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_request",
            "{params:?}"
        );
    }
}
