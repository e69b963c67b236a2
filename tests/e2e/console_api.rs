//! The console's JSON API under /api/v1 with tokens from `users token add`: every route
//! against no token, a bad one, each role, another tenant's user and narrowed tokens,
//! with refused actions changing nothing; and the OpenAPI description covering every
//! route the test calls.

use serde_json::{json, Value};

use super::console::{
    audit, console_with_two_tenants, journal_log, register_customer, users_command,
};
use super::serve::{until, Folder, Serve};

/// Issues a token through the CLI and returns it.
fn issue(folder: &Folder, user: &str, extra: &[&str]) -> String {
    let out = users_command(folder, &["token", "add", user, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    shown["token"].as_str().unwrap().to_string()
}

fn users_cli(folder: &Folder, args: &[&str]) -> std::process::Output {
    users_command(folder, args).output().unwrap()
}

struct Api {
    base: String,
    client: reqwest::Client,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Api {
    fn new(serve: &Serve) -> Api {
        Api {
            base: format!("{}/api/v1", serve.base),
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, token: Option<&str>) -> Answer {
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer { status, body }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)), token)
            .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        let request = self.client.post(format!("{}{path}", self.base)).json(&body);
        self.send(request, token).await
    }
}

/// Posts `body` to `path` as each caller without support on alpha (`callers` in the
/// test's order), expecting each refusal's status.
async fn refused_below_support(
    api: &Api,
    callers: &[(&str, Option<&str>); 8],
    path: &str,
    body: &Value,
) {
    for (i, expected) in [(0, 401), (1, 401), (2, 403), (5, 404), (6, 403), (7, 404)] {
        let (name, token) = callers[i];
        let a = api.post(path, token, body.clone()).await;
        assert_eq!(a.status, expected, "POST {path} as {name}: {}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_answers_each_token_as_it_may_and_refused_actions_change_nothing() {
    let (folder, alpha, _beta, serve) = console_with_two_tenants("").await;
    let api = Api::new(&serve);
    let vera = issue(&folder, "vera", &["--label", "report"]);
    let sara = issue(&folder, "sara", &[]);
    let adam = issue(&folder, "adam", &[]);
    let bob = issue(&folder, "bob", &[]);
    // Narrowed: an admin's viewer token, and a support token for beta only.
    let adam_viewing = issue(&folder, "adam", &["--role", "viewer"]);
    let sara_beta = issue(&folder, "sara", &["--tenant", "beta"]);
    // A token may not do more than its user.
    let out = users_cli(&folder, &["token", "add", "vera", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let wrong = format!("{}0", &vera[..vera.len() - 1]);
    let wrong = if wrong == vera {
        format!("{}1", &vera[..vera.len() - 1])
    } else {
        wrong
    };

    let callers: [(&str, Option<&str>); 8] = [
        ("no token", None),
        ("a wrong token", Some(&wrong)),
        ("viewer", Some(&vera)),
        ("support", Some(&sara)),
        ("admin", Some(&adam)),
        ("another tenant's support", Some(&bob)),
        ("an admin's viewer token", Some(&adam_viewing)),
        ("support's token for beta", Some(&sara_beta)),
    ];

    let runs = api.get("/tenants/alpha/runs", Some(&vera)).await;
    assert_eq!(runs.status, 200, "{}", runs.body);
    let run = runs.body["runs"][0]["id"].as_str().unwrap().to_string();

    // Reads, and verify, which any who sees the tenant may ask for.
    let reads: [(String, [u16; 8]); 8] = [
        ("/tenants".into(), [401, 401, 200, 200, 200, 200, 200, 200]),
        (
            "/tenants/alpha".into(),
            [401, 401, 200, 200, 200, 404, 200, 404],
        ),
        (
            "/tenants/alpha/runs".into(),
            [401, 401, 200, 200, 200, 404, 200, 404],
        ),
        (
            format!("/tenants/alpha/runs/{run}"),
            [401, 401, 200, 200, 200, 404, 200, 404],
        ),
        (
            "/tenants/alpha/privacy".into(),
            [401, 401, 200, 200, 200, 404, 200, 404],
        ),
        (
            "/tenants/alpha/customers/K10001".into(),
            [401, 401, 200, 200, 200, 404, 200, 404],
        ),
        (
            "/tenants/beta".into(),
            [401, 401, 200, 200, 200, 200, 200, 200],
        ),
        (
            "/tenants/nobody".into(),
            [401, 401, 404, 404, 404, 404, 404, 404],
        ),
    ];
    for (path, expected) in &reads {
        for (i, (name, token)) in callers.iter().enumerate() {
            let a = api.get(path, *token).await;
            assert_eq!(a.status, expected[i], "GET {path} as {name}: {}", a.body);
            assert!(a.body["error"].is_string() || a.status == 200, "{}", a.body);
        }
    }
    for (i, (name, token)) in callers.iter().enumerate() {
        let a = api.post("/tenants/alpha/verify", *token, json!({})).await;
        let expected = [401, 401, 200, 200, 200, 404, 200, 404][i];
        assert_eq!(a.status, expected, "verify as {name}: {}", a.body);
    }
    // What a token sees is its own: bob's list holds beta only, and no value is masked
    // away from a timeline but shown.
    let listed = api.get("/tenants", Some(&bob)).await.body;
    let ids: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["beta"]);
    let masked = api
        .get("/tenants/alpha/customers/K10002", Some(&vera))
        .await
        .body;
    let sent = register_customer(&alpha, "K10002");
    let email = sent["ContactPersonEmail"].as_str().unwrap().to_string();
    assert!(!masked.to_string().contains(&email), "{masked}");

    // Reveal: support and up, with a reason; audited with the token's id.
    let before = audit(&folder).len();
    let reason = json!({ "reason": "the customer asked for a copy" });
    for (i, (name, token)) in callers.iter().enumerate() {
        let a = api
            .post(
                "/tenants/alpha/customers/K10002/reveal",
                *token,
                reason.clone(),
            )
            .await;
        let expected = [401, 401, 403, 200, 200, 404, 403, 404][i];
        assert_eq!(a.status, expected, "reveal as {name}: {}", a.body);
        if a.status == 200 {
            assert!(a.body.to_string().contains(&email), "{}", a.body);
        }
    }
    let reveals: Vec<(String, String)> = audit(&folder)[before..]
        .iter()
        .filter(|e| e["event"] == "reveal")
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_string(),
                e["token"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reveals.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
        ["sara", "adam"]
    );
    assert!(reveals.iter().all(|(_, t)| t.len() == 12), "{reveals:?}");
    let logged = std::fs::read_to_string(folder.dir.path().join("console-audit.jsonl")).unwrap();
    for token in [&vera, &sara, &adam, &bob] {
        assert!(
            !logged.contains(&token[token.len() - 64..]),
            "a secret in the audit log"
        );
    }
    let blank = api
        .post(
            "/tenants/alpha/customers/K10002/reveal",
            Some(&sara),
            json!({ "reason": " " }),
        )
        .await;
    assert_eq!(blank.status, 400, "{}", blank.body);
    let not_json = api
        .send(
            api.client
                .post(format!(
                    "{}/tenants/alpha/customers/K10002/reveal",
                    api.base
                ))
                .body("reason=x"),
            Some(&sara),
        )
        .await;
    assert_eq!(not_json.status, 400, "{}", not_json.body);

    // Run now: admin only; the refused queue nothing.
    let runs_before = serve.tenant("alpha").await["runs"].clone();
    for (i, (name, token)) in callers.iter().enumerate() {
        if i == 4 {
            continue;
        }
        let a = api.post("/tenants/alpha/run", *token, json!({})).await;
        let expected = [401, 401, 403, 403, 0, 404, 403, 404][i];
        assert_eq!(a.status, expected, "run as {name}: {}", a.body);
    }
    let t = serve.tenant("alpha").await;
    assert_eq!(
        (t["runs"].clone(), t["run_requested"].clone()),
        (runs_before.clone(), Value::Bool(false)),
        "{t}"
    );
    let a = api.post("/tenants/alpha/run", Some(&adam), json!({})).await;
    assert_eq!((a.status, &a.body["queued"]), (202, &Value::Bool(true)));
    until("the admin's run", 60, || async {
        let t = serve.tenant("alpha").await;
        (t["runs"].as_u64() > runs_before.as_u64() && t["state"] == "idle").then_some(())
    })
    .await;

    // A support action: the refused write no journal event; support's is journaled with
    // the API user as the actor.
    let code = "K10003";
    let events_before = journal_log(&alpha, &folder, code).len();
    let restrict = json!({ "reason": "disputed, ticket 12" });
    let path = format!("/tenants/alpha/customers/{code}/restrict");
    refused_below_support(&api, &callers, &path, &restrict).await;
    assert_eq!(journal_log(&alpha, &folder, code).len(), events_before);
    let unknown = api
        .post(
            &format!("/tenants/alpha/customers/{code}/frobnicate"),
            Some(&sara),
            restrict.clone(),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let a = api
        .post(
            &format!("/tenants/alpha/customers/{code}/restrict"),
            Some(&sara),
            restrict,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let held = api
        .get(&format!("/tenants/alpha/customers/{code}"), Some(&vera))
        .await
        .body;
    assert_eq!(held["holds"][0]["kind"], "restricted", "{held}");
    let log = journal_log(&alpha, &folder, code);
    let newest = &log[0];
    assert_eq!(
        (newest["actor"].as_str(), newest["message"].as_str()),
        (Some("api:sara"), Some("disputed, ticket 12")),
        "{newest}"
    );
    let export = api
        .post(
            &format!("/tenants/alpha/customers/{code}/export"),
            Some(&adam),
            json!({ "reason": "access request" }),
        )
        .await;
    assert_eq!(export.status, 200, "{}", export.body);
    let sent3 = register_customer(&alpha, code);
    assert!(
        export
            .body
            .to_string()
            .contains(sent3["Name"].as_str().unwrap()),
        "the export holds the values sent: {}",
        export.body
    );

    // Purge: support, with the code typed as confirmation; the refused leave the customer.
    let code = "K10006";
    let purge = |confirm: &str| json!({ "reason": "erasure, ticket 34", "confirm": confirm });
    let path = format!("/tenants/alpha/customers/{code}/purge");
    refused_below_support(&api, &callers, &path, &purge(code)).await;
    let unconfirmed = api
        .post(
            &format!("/tenants/alpha/customers/{code}/purge"),
            Some(&sara),
            purge("K1000"),
        )
        .await;
    assert_eq!(unconfirmed.status, 400, "{}", unconfirmed.body);
    register_customer(&alpha, code);
    let receipt = api
        .post(
            &format!("/tenants/alpha/customers/{code}/purge"),
            Some(&sara),
            purge(code),
        )
        .await;
    assert_eq!(receipt.status, 200, "{}", receipt.body);
    assert_eq!(receipt.body["customer"], code, "{}", receipt.body);
    assert!(
        !alpha
            .sandbox
            .visma_customers()
            .iter()
            .any(|c| c["CustomerNumber"] == code),
        "the register still holds {code}"
    );

    // Revoking a token refuses it from the next request; other tokens keep working.
    let listed: Value =
        serde_json::from_slice(&users_cli(&folder, &["token", "list", "vera", "--json"]).stdout)
            .unwrap();
    assert_eq!(listed[0]["label"], "report", "{listed}");
    assert!(!listed.to_string().contains(&vera[vera.len() - 64..]));
    let id = listed[0]["id"].as_str().unwrap();
    let out = users_cli(&folder, &["token", "revoke", "vera", id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(api.get("/tenants", Some(&vera)).await.status, 401);
    assert_eq!(api.get("/tenants", Some(&sara)).await.status, 200);
    // Removing the user ends all of their tokens.
    assert!(users_cli(&folder, &["remove", "bob"]).status.success());
    assert_eq!(api.get("/tenants", Some(&bob)).await.status, 401);

    // An unknown endpoint is JSON too; the description is public and lists every route.
    let nope = api.get("/nope", Some(&sara)).await;
    assert_eq!(nope.status, 404, "{}", nope.body);
    let described = api.get("/openapi.json", None).await;
    assert_eq!(described.status, 200);
    let paths = described.body["paths"].as_object().unwrap();
    for path in [
        "/tenants",
        "/tenants/{tenant}",
        "/tenants/{tenant}/runs",
        "/tenants/{tenant}/runs/{run}",
        "/tenants/{tenant}/privacy",
        "/tenants/{tenant}/verify",
        "/tenants/{tenant}/run",
        "/tenants/{tenant}/customers/{code}",
        "/tenants/{tenant}/customers/{code}/reveal",
        "/tenants/{tenant}/customers/{code}/purge",
        "/tenants/{tenant}/customers/{code}/{action}",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    assert_eq!(paths.len(), 12, "described: {:?}", paths.keys());

    // Wrong tokens from one address are throttled.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(api.get("/tenants", Some(&wrong)).await.status);
    }
    assert!(
        statuses.contains(&429) && statuses[0] == 401,
        "{statuses:?}"
    );
    drop(serve);
}
