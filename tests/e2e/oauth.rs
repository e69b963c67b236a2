//! The OAuth lifecycle against the simulated Visma Connect: single-flight refresh,
//! `auth login` with PKCE, `auth status`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::Setup;
use opter_visma_sync::app::Connector;
use opter_visma_sync::config::Config;
use opter_visma_sync::sandbox::bundled_customers;
use opter_visma_sync::sink::auth::{OAuthSettings, TokenProvider};
use secrecy::SecretString;
use serde_json::Value;

fn token_calls(setup: &Setup) -> usize {
    setup
        .sandbox
        .visma_requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/visma/connect/token"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_cause_exactly_one_refresh() {
    let setup = Setup::new(bundled_customers()[..1].to_vec()).await;
    let connector = Connector::open(Config::load(&setup.config).unwrap(), &setup.env).unwrap();
    connector.sink.find_by_number("nobody").await.unwrap();
    assert_eq!(token_calls(&setup), 1);

    let expire = format!("{}/_sandbox/visma/expire-tokens", setup.sandbox.base_url());
    reqwest::Client::new()
        .post(expire)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let (a, b, c, d) = tokio::join!(
        connector.sink.find_by_number("a"),
        connector.sink.find_by_number("b"),
        connector.sink.find_by_number("c"),
        connector.sink.find_by_number("d"),
    );
    for result in [a, b, c, d] {
        assert_eq!(result.unwrap(), None);
    }
    let unauthorized = setup
        .sandbox
        .visma_requests()
        .iter()
        .filter(|r| r["status"] == 401)
        .count();
    assert!(unauthorized >= 1, "the expired token was refused");
    assert_eq!(token_calls(&setup), 2, "one refresh for all of them");
}

/// The token generations four concurrent callers get.
async fn four_concurrent_tokens(tokens: &TokenProvider) -> Vec<u64> {
    let (a, b, c, d) = tokio::join!(
        tokens.access_token(),
        tokens.access_token(),
        tokens.access_token(),
        tokens.access_token()
    );
    [a, b, c, d]
        .into_iter()
        .map(|t| t.unwrap().generation)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_an_empty_or_invalidated_provider_share_one_refresh() {
    let setup = Setup::new(Vec::new()).await;
    let store = setup.dir.path().join("grant.json");
    let settings = OAuthSettings {
        product: "Visma eAccounting",
        token_url: setup.sandbox.visma_token_url(),
        client_id: setup.sandbox.credentials().visma_client_id,
        client_secret: SecretString::from(setup.env["VISMA_CLIENT_SECRET"].clone()),
        seed: Some(SecretString::from(setup.env["VISMA_REFRESH_TOKEN"].clone())),
        seed_env: "VISMA_REFRESH_TOKEN".into(),
    };
    let tokens = TokenProvider::new(settings, store).unwrap();
    let generations = four_concurrent_tokens(&tokens).await;
    assert_eq!(generations, vec![1, 1, 1, 1]);
    assert_eq!(token_calls(&setup), 1);

    // Four requests all saw a 401 for generation 1.
    tokio::join!(
        tokens.invalidate(1),
        tokens.invalidate(1),
        tokens.invalidate(1),
        tokens.invalidate(1)
    );
    let generations = four_concurrent_tokens(&tokens).await;
    assert_eq!(generations, vec![2, 2, 2, 2]);
    assert_eq!(token_calls(&setup), 2, "one refresh for all four");
    // A late 401 for the old generation does not throw the new token away.
    tokens.invalidate(1).await;
    assert_eq!(tokens.access_token().await.unwrap().generation, 2);
    assert_eq!(token_calls(&setup), 2);
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Kills the child however the test ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_stores_a_working_grant_and_status_reports_it_without_the_token() {
    let mut setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    setup.env.remove("VISMA_REFRESH_TOKEN");

    let status = setup.run(&["auth", "status", "--json"]);
    assert_eq!(status.status.code(), Some(4), "nothing stored yet");
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("auth login"), "{stderr}");

    let mut login = Child(
        Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
            .arg("--config")
            .arg(&setup.config)
            .args(["auth", "login", "--no-browser", "--timeout", "60"])
            .envs(&setup.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = login.0.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().next().unwrap().unwrap()
    })
    .await
    .unwrap();
    assert!(
        url.contains("code_challenge=") && url.contains("code_challenge_method=S256"),
        "{url}"
    );
    // A user with several companies is asked which one (the simulator checks the values).
    let query = query_of(&url);
    assert_eq!(
        query.get("prompt").map(String::as_str),
        Some("login select_account"),
        "{url}"
    );
    assert_eq!(
        query.get("acr_values").map(String::as_str),
        Some("service:44643EB1-3F76-4C1C-A672-402AE8085934 forceselectcompany:true"),
        "{url}"
    );
    // The "browser": follows the simulator's consent redirect to the loopback listener.
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success());
    assert!(page.text().await.unwrap().contains("Login received"));
    let status = tokio::task::spawn_blocking(move || login.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());

    let out = setup.run(&["auth", "status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (status["stored"].as_bool(), status["origin"].as_str()),
        (Some(true), Some("login"))
    );
    let grant = std::fs::read_to_string(
        setup
            .journal_dir()
            .join("credentials/eaccounting-grant.json"),
    )
    .unwrap();
    let token: Value = serde_json::from_str(&grant).unwrap();
    let token = token["refresh_token"].as_str().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(token),
        "status never prints the token"
    );

    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["created"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_within_the_access_tokens_lifetime_does_not_rotate_the_grant() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Second Process AB".into();
    setup.put_opter_customer(&changed).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    assert_eq!(token_calls(&setup), 1, "the stored access token was reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_token_left_in_the_env_does_not_shadow_a_working_stored_grant() {
    let mut setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    // A person logged in again elsewhere; the old env token is spent, and a different
    // spent token is exported by a stale cron environment.
    let tokens = setup.login_tokens().await;
    let fresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let spent = setup.env["VISMA_REFRESH_TOKEN"].clone();
    setup.env.insert("VISMA_REFRESH_TOKEN".into(), fresh);
    let expire = format!("{}/_sandbox/visma/expire-tokens", setup.sandbox.base_url());
    reqwest::Client::new().post(&expire).send().await.unwrap();
    assert_eq!(
        setup.run(&["sync"]).status.code(),
        Some(0),
        "the new env token is taken"
    );

    setup
        .env
        .insert("VISMA_REFRESH_TOKEN".into(), format!("{spent}-stale"));
    reqwest::Client::new().post(&expire).send().await.unwrap();
    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Still Works AB".into();
    setup.put_opter_customer(&changed).await;
    let out = setup.run(&["sync"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_with_default_company_does_not_ask_for_a_company() {
    let setup = Setup::new(Vec::new()).await;
    let mut login = Child(
        setup
            .command(&[
                "auth",
                "login",
                "--no-browser",
                "--default-company",
                "--timeout",
                "20",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = login.0.stdout.take().unwrap();
    let url = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            BufReader::new(stdout).lines().next().unwrap().unwrap()
        }),
    )
    .await
    .expect("the URL is printed at once")
    .unwrap();
    let query = query_of(&url);
    assert!(query.contains_key("code_challenge"), "{url}");
    assert!(
        !query.contains_key("prompt") && !query.contains_key("acr_values"),
        "{url}"
    );
}

/// A refresh token granted `scope` by a login of our own, for the connector's env.
async fn refresh_token_with_scope(setup: &Setup, scope: &str) -> String {
    setup.login_tokens_with_scopes(scope).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_ea_sales_exits_4_naming_the_missing_scope_before_any_call() {
    let mut setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    let token = refresh_token_with_scope(&setup, "ea:api offline_access ea:sales_readonly").await;
    setup.env.insert("VISMA_REFRESH_TOKEN".into(), token);
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("lacks the scope ea:sales") && stderr.contains("auth login"),
        "{stderr}"
    );
    let api_calls = setup
        .sandbox
        .visma_requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/visma/v2"))
        })
        .count();
    assert_eq!(api_calls, 0, "refused before any call is refused for it");
    assert_eq!(
        token_calls(&setup),
        2,
        "our login's exchange and the connector's one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_access_token_without_the_scope_meets_4006_and_exits_4() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    // The token endpoint does not say which scopes it granted: the API refuses instead.
    let grant_dir = setup.journal_dir().join("credentials");
    std::fs::create_dir_all(&grant_dir).unwrap();
    let readonly = {
        let token =
            refresh_token_with_scope(&setup, "ea:api offline_access ea:sales_readonly").await;
        let creds = setup.sandbox.credentials();
        let body: Value = reqwest::Client::new()
            .post(setup.sandbox.visma_token_url())
            .basic_auth(&creds.visma_client_id, Some(&creds.visma_client_secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body
    };
    let grant = serde_json::json!({
        "refresh_token": readonly["refresh_token"],
        "origin": "login",
        "refreshed_at": chrono::Utc::now().to_rfc3339(),
        "access_token": readonly["access_token"],
        "access_expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
    });
    std::fs::write(grant_dir.join("eaccounting-grant.json"), grant.to_string()).unwrap();
    let mut setup = setup;
    setup.env.remove("VISMA_REFRESH_TOKEN");
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("error 4006")
            && stderr.contains("ea:sales")
            && stderr.contains("auth login"),
        "{stderr}"
    );
    let refused = setup
        .sandbox
        .visma_requests()
        .iter()
        .filter(|r| r["status"] == 403)
        .count();
    // The read-only login reads the register's list; the writes then in flight (both
    // customers' creates) are refused, and nothing after them is sent.
    assert!(
        (1..=2).contains(&refused),
        "the refusal stops the run at once: {:?}",
        setup.sandbox.visma_requests()
    );
}

#[test]
fn scopes_without_ea_sales_are_a_configuration_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let setup = rt.block_on(Setup::new(Vec::new()));
    setup.configure(
        "sink",
        r#"scopes = ["ea:api", "offline_access", "ea:sales_readonly"]"#,
    );
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[sink] scopes") && stderr.contains("ea:sales"),
        "{stderr}"
    );
}
