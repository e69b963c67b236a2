//! Seeded fault injection in the simulated eAccounting API, over real HTTP: each test
//! fails if its point breaks.

use crate::sandbox_support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use opter_visma_sync::sandbox::*;
use reqwest::{Client, Method, StatusCode};
use sandbox_support::*;
use serde_json::{json, Value};

async fn post_faults(sb: &Sandbox, body: &Value) -> (StatusCode, Value) {
    let resp = Client::new()
        .post(format!("{}/_sandbox/faults", sb.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GET of a sandbox inspection endpoint, over HTTP like a person exploring it.
async fn sandbox_json<T: serde::de::DeserializeOwned>(sb: &Sandbox, path: &str) -> T {
    Client::new()
        .get(format!("{}{path}", sb.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get_faults(sb: &Sandbox) -> Value {
    sandbox_json(sb, "/_sandbox/faults").await
}

async fn delete_faults(sb: &Sandbox) -> StatusCode {
    Client::new()
        .delete(format!("{}/_sandbox/faults", sb.base_url()))
        .send()
        .await
        .unwrap()
        .status()
}

async fn register(sb: &Sandbox) -> Vec<Value> {
    sandbox_json(sb, "/_sandbox/visma/customers").await
}

async fn request_log(sb: &Sandbox) -> Vec<Value> {
    sandbox_json(sb, "/_sandbox/visma/requests").await
}

/// The statuses of `n` sequential GETs cycling over two endpoints.
async fn status_sequence(api: &Api, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let path = if i % 2 == 0 {
            "/customers"
        } else {
            "/termsofpayments"
        };
        out.push(api.status(Method::GET, path).await.as_u16());
    }
    out
}

#[tokio::test]
async fn fail_rate_one_fails_every_v2_call_but_not_token_opter_or_control() {
    let sb = start_default().await;
    let (status, body) = post_faults(&sb, &json!({"fail_rate": 1.0, "statuses": [503]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["fail_rate"], 1.0);
    assert_eq!(body["statuses"], json!([503]));

    // The token endpoint is never faulted.
    let api = Api::new(&sb).await;
    for path in [
        "/customers",
        "/termsofpayments",
        &format!("/termsofpayments/{SANDBOX_TERMS_OF_PAYMENT_ID}"),
    ] {
        let resp = api.send(Method::GET, path, None).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let ctype = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(resp.text().await.unwrap().contains("503"));
    }
    // Not handled: nothing is stored.
    let resp = api
        .send(Method::POST, "/customers", Some(&valid_customer("K1")))
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(register(&sb).await.is_empty());
    // Even without a token: the failure comes before authentication.
    let resp = Client::new()
        .get(format!("{}/customers", sb.visma_api_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Opter and the control endpoints are never faulted.
    let resp = Client::new()
        .get(format!("{}/Customers", sb.opter_api_base()))
        .header("x-api-key", sb.credentials().opter_api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = Client::new()
        .get(format!("{}/_sandbox/health", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Logged with the answered status and "fault": "injected"; the token call is not.
    let log = request_log(&sb).await;
    assert_eq!(log[0]["path"], "/visma/connect/token");
    assert_eq!(log[0]["status"], 200);
    assert!(log[0].get("fault").is_none(), "{}", log[0]);
    let v2: Vec<&Value> = log.iter().skip(1).collect();
    assert_eq!(v2.len(), 5, "{log:?}");
    for entry in v2 {
        assert_eq!(entry["status"], 503, "{entry}");
        assert_eq!(entry["fault"], "injected", "{entry}");
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn same_seed_and_request_order_give_the_same_statuses() {
    let faults = Faults {
        seed: 42,
        fail_rate: 0.5,
        statuses: vec![429, 500, 502, 503, 504],
        ..Faults::default()
    };
    let a = start(SandboxOptions {
        faults: faults.clone(),
        ..SandboxOptions::default()
    })
    .await;
    let api_a = Api::new(&a).await;
    let first = status_sequence(&api_a, 40).await;
    // Not trivially constant: successes and several failure statuses.
    assert!(first.contains(&200), "{first:?}");
    let failures: std::collections::BTreeSet<u16> =
        first.iter().copied().filter(|&s| s != 200).collect();
    assert!(failures.len() >= 3, "{first:?}");

    // POSTing the same faults re-seeds: the same sequence again.
    let (status, _) = post_faults(&a, &serde_json::to_value(&faults).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(status_sequence(&api_a, 40).await, first);

    // Another sandbox with the same seed, configured through set_faults.
    let b = start_default().await;
    b.set_faults(faults.clone());
    assert_eq!(b.faults(), faults);
    let api_b = Api::new(&b).await;
    assert_eq!(status_sequence(&api_b, 40).await, first);

    // Another seed, another sequence.
    b.set_faults(Faults {
        seed: 43,
        ..faults.clone()
    });
    assert_ne!(status_sequence(&api_b, 40).await, first);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn fail_rate_half_fails_roughly_half() {
    let sb = start(SandboxOptions {
        faults: Faults {
            seed: 7,
            fail_rate: 0.5,
            statuses: vec![500],
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    let api = Api::new(&sb).await;
    let statuses = status_sequence(&api, 100).await;
    let failed = statuses.iter().filter(|&&s| s == 500).count();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(failed + ok, 100, "{statuses:?}");
    eprintln!("seed 7, fail_rate 0.5: {failed} of 100 failed");
    assert!((30..=70).contains(&failed), "{failed} of 100 failed");
    sb.shutdown().await;
}

#[tokio::test]
async fn injected_bodies_are_eaccountings_own() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;

    sb.set_faults(Faults {
        fail_rate: 1.0,
        statuses: vec![429],
        ..Faults::default()
    });
    let resp = api.send(Method::GET, "/customers", None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_ea_error_message(
        &body,
        4010,
        "API calls quota exceeded! maximum admitted 600 per Minute. Try again in 1 seconds.",
    );

    sb.set_faults(Faults {
        fail_rate: 1.0,
        statuses: vec![429],
        retry_after_secs: 17,
        ..Faults::default()
    });
    let (status, body) = api.get("/customers").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_ea_error_message(
        &body,
        4010,
        "API calls quota exceeded! maximum admitted 600 per Minute. Try again in 17 seconds.",
    );

    sb.set_faults(Faults {
        fail_rate: 1.0,
        statuses: vec![500],
        ..Faults::default()
    });
    let (status, body) = api.get("/customers").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_ea_error_message(&body, 5000, "An error has occurred.");

    for code in [502u16, 504] {
        sb.set_faults(Faults {
            fail_rate: 1.0,
            statuses: vec![code],
            ..Faults::default()
        });
        let resp = api.send(Method::GET, "/customers", None).await;
        assert_eq!(resp.status().as_u16(), code);
        let ctype = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ctype.starts_with("text/html"), "{ctype}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(&format!("<h1>{code} ")), "{html}");
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn dropped_write_is_committed_but_gets_no_response() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let (status, _) = post_faults(&sb, &json!({"drop_after_commit_rate": 1.0})).await;
    assert_eq!(status, StatusCode::OK);

    // The client sees a connection error, not a status.
    let result = api
        .request(Method::POST, "/customers")
        .json(&valid_customer("K1001"))
        .send()
        .await;
    let err = result.expect_err("a dropped write must not produce a response");
    assert!(err.status().is_none(), "{err:?}");
    assert!(!err.is_timeout(), "{err:?}");

    // Yet the customer is stored.
    let stored = register(&sb).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["CustomerNumber"], "K1001");
    let id = stored[0]["Id"].as_str().unwrap().to_string();

    // Logged with the handler's status and "fault": "dropped".
    let log = request_log(&sb).await;
    let post = log
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/visma/v2/customers")
        .unwrap();
    assert_eq!(post["status"], 201, "{post}");
    assert_eq!(post["fault"], "dropped", "{post}");

    // Reads are never dropped; a fresh client works at once.
    let (status, body) = api.get("/customers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Data"][0]["Id"], id);

    // PUT and DELETE: also committed without a response.
    let mut changed = valid_customer("K1001");
    changed["Name"] = json!("Nytt Namn AB");
    let err = api
        .request(Method::PUT, &format!("/customers/{id}"))
        .json(&changed)
        .send()
        .await
        .expect_err("dropped PUT");
    assert!(err.status().is_none());
    assert_eq!(register(&sb).await[0]["Name"], "Nytt Namn AB");
    let err = api
        .request(Method::DELETE, &format!("/customers/{id}"))
        .send()
        .await
        .expect_err("dropped DELETE");
    assert!(err.status().is_none());
    assert!(register(&sb).await.is_empty());

    // A write that fails is not committed, so its answer is not dropped.
    let resp = api
        .send(Method::POST, "/customers", Some(&json!({"Name": "x"})))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let log = request_log(&sb).await;
    let dropped: Vec<(&str, u64)> = log
        .iter()
        .filter(|r| r["fault"] == "dropped")
        .map(|r| (r["method"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(dropped, [("POST", 201), ("PUT", 200), ("DELETE", 200)]);
    assert!(log.last().unwrap().get("fault").is_none());

    // Back to normal: the next write is answered.
    assert_eq!(delete_faults(&sb).await, StatusCode::NO_CONTENT);
    let resp = api
        .send(Method::POST, "/customers", Some(&valid_customer("K1002")))
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    sb.shutdown().await;
}

/// Raw HTTP/1.1 on one socket: `requests` written one after another, each answer read
/// up to the end of its body (Content-Length), then whatever is left until EOF.
fn raw_exchange(addr: std::net::SocketAddr, requests: &[String]) -> (Vec<String>, Vec<u8>) {
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answers = Vec::new();
    let mut buf = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        sock.write_all(req.as_bytes()).unwrap();
        if i + 1 == requests.len() {
            break;
        }
        // Read one complete response before sending the next request.
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    answers.push(String::from_utf8_lossy(&buf[..end + 4 + len]).to_string());
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed before response {i}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    // The last request: everything until the server closes (a reset counts as closed).
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the last answer: {e}"),
        }
    }
    (answers, buf)
}

#[tokio::test]
async fn dropped_write_sends_not_a_single_byte_and_keep_alive_still_works() {
    let sb = start_default().await;
    let token = access_token(&sb).await;
    sb.set_faults(Faults {
        drop_after_commit_rate: 1.0,
        ..Faults::default()
    });
    let addr = sb.addr();
    let body = valid_customer("K2001").to_string();
    let get = format!(
        "GET /visma/v2/customers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let post = format!(
        "POST /visma/v2/customers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Two reads answered on one kept-alive connection, then a write that is dropped.
    let requests = vec![get.clone(), get, post];
    let (answers, rest) = tokio::task::spawn_blocking(move || raw_exchange(addr, &requests))
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    }
    assert!(
        rest.is_empty(),
        "the dropped write got bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(register(&sb).await.len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn latency_delays_v2_calls() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    sb.set_faults(Faults {
        latency_ms: 200,
        ..Faults::default()
    });
    let started = Instant::now();
    let (status, _) = api.get("/customers").await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    sb.shutdown().await;
}

#[tokio::test]
async fn rate_limit_override_is_live_and_cleared_with_the_faults() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    let (status, _) = post_faults(&sb, &json!({"rate_limit_per_minute": 3})).await;
    assert_eq!(status, StatusCode::OK);
    for i in 1..=3 {
        assert_eq!(api.get("/customers").await.0, StatusCode::OK, "call {i}");
    }
    let resp = api.send(Method::GET, "/customers", None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ErrorCode"], 4010, "{body}");
    let msg = body["DeveloperErrorMessage"].as_str().unwrap();
    let seconds: u64 = msg
        .strip_prefix("API calls quota exceeded! maximum admitted 3 per Minute. Try again in ")
        .and_then(|rest| rest.strip_suffix(" seconds."))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message: {msg}"));
    assert!((1..=60).contains(&seconds), "{seconds}");
    // Not an injected fault: the real limiter answered.
    let log = request_log(&sb).await;
    assert_eq!(log.last().unwrap()["status"], 429);
    assert!(log.last().unwrap().get("fault").is_none());

    // Clearing the faults restores the configured limit (600).
    assert_eq!(delete_faults(&sb).await, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/customers").await.0, StatusCode::OK);
    sb.shutdown().await;
}

#[tokio::test]
async fn delete_faults_restores_normal_behaviour() {
    let sb = start_default().await;
    let api = Api::new(&sb).await;
    post_faults(
        &sb,
        &json!({"fail_rate": 1.0, "statuses": [500], "latency_ms": 1}),
    )
    .await;
    assert_eq!(get_faults(&sb).await["fail_rate"], 1.0);
    assert_eq!(
        api.status(Method::GET, "/customers").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    assert_eq!(delete_faults(&sb).await, StatusCode::NO_CONTENT);
    assert_eq!(
        get_faults(&sb).await,
        serde_json::to_value(Faults::default()).unwrap()
    );
    assert_eq!(sb.faults(), Faults::default());
    for _ in 0..10 {
        assert_eq!(api.status(Method::GET, "/customers").await, StatusCode::OK);
    }
    let resp = api
        .send(Method::POST, "/customers", Some(&valid_customer("K1")))
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let log = request_log(&sb).await;
    assert!(
        log.iter().skip(2).all(|r| r.get("fault").is_none()),
        "{log:?}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn invalid_fault_configuration_is_400_and_changes_nothing() {
    let sb = start_default().await;
    let (status, _) = post_faults(&sb, &json!({"latency_ms": 5, "seed": 9})).await;
    assert_eq!(status, StatusCode::OK);
    let before = get_faults(&sb).await;
    // Absent fields take their defaults.
    assert_eq!(before["statuses"], json!([429, 500, 503]));
    assert_eq!(before["retry_after_secs"], 1);
    assert_eq!(before["rate_limit_per_minute"], Value::Null);

    for bad in [
        json!({"fail_rate": 1.5}),
        json!({"fail_rate": -0.1}),
        json!({"drop_after_commit_rate": 2}),
        json!({"statuses": [404]}),
        json!({"statuses": [503, 200]}),
        json!({"statuses": []}),
        json!({"fail_rate": "half"}),
        json!({"failRate": 0.5}),
        json!([1, 2]),
    ] {
        let (status, body) = post_faults(&sb, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["message"].is_string(), "{bad}: {body}");
    }
    let resp = Client::new()
        .post(format!("{}/_sandbox/faults", sb.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].is_string(), "{body}");

    assert_eq!(get_faults(&sb).await, before);
    sb.shutdown().await;

    // At start, too.
    let refused = Sandbox::start(SandboxOptions {
        faults: Faults {
            statuses: vec![418],
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    assert!(refused.is_err());
}
