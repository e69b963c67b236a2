//! Single sign-on against a local OpenID Connect provider (npm's oauth2-mock-server, in
//! tests/oidc): the authorization-code flow with PKCE through the console's callback,
//! and every way an answer must be refused: another browser, a replayed callback, an
//! unverified email, an unknown user, a token for another audience or from another
//! issuer, an expired token. Without Node and `npm ci --prefix tests/oidc` the test says
//! so and passes, unless OVS_REQUIRE_OIDC is set (as CI does), when it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::console::{add_user, audit, cookie_value, set_cookie, users_command};
use super::serve::{Folder, Serve};

const SECRET: &str = "oidc-client-secret-never-logged";
const EVA: &str = "eva@carrier.example";

struct Provider {
    child: Child,
    issuer: String,
    claims: PathBuf,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local provider, or `None` (with a message) where Node or its packages are missing.
fn provider(dir: &Path) -> Option<Provider> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    let installed = here.join("node_modules/oauth2-mock-server").is_dir();
    let node = Command::new("node").arg("--version").output().is_ok();
    if !(installed && node) {
        let message = "no local OpenID Connect provider: the sign-on test is skipped. Install \
                       Node.js and run `npm ci --prefix tests/oidc`.";
        assert!(std::env::var_os("OVS_REQUIRE_OIDC").is_none(), "{message}");
        eprintln!("{message}");
        return None;
    }
    let claims = dir.join("claims.json");
    std::fs::write(&claims, "{}").unwrap();
    let mut child = Command::new("node")
        .arg(here.join("provider.mjs"))
        .env("OIDC_CLAIMS_FILE", &claims)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the provider printed no issuer");
    let issuer = line.strip_prefix("issuer ").unwrap().to_string();
    Some(Provider {
        child,
        issuer,
        claims,
    })
}

impl Provider {
    fn says(&self, claims: Value) {
        std::fs::write(&self.claims, claims.to_string()).unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn location(reply: &reqwest::Response) -> String {
    reply
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A sign-on up to the provider's redirect back: the callback URL and the binding cookie.
async fn until_callback(serve: &Serve) -> (String, String) {
    let c = client();
    let start = c
        .get(format!("{}/login/oidc", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303, "{}", start.text().await.unwrap());
    let to_provider = location(&start);
    let binding = set_cookie(&start, "ovs_sso")
        .expect("a binding cookie")
        .to_string();
    assert!(
        binding.contains("SameSite=Lax")
            && binding.contains("Path=/login/oidc/callback")
            && binding.contains("HttpOnly"),
        "{binding}"
    );
    let query: Vec<(String, String)> = url::Url::parse(&to_provider)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let has = |k: &str| query.iter().any(|(key, v)| key == k && !v.is_empty());
    assert!(
        has("code_challenge") && has("nonce") && has("state"),
        "{to_provider}"
    );
    assert!(query.contains(&("code_challenge_method".into(), "S256".into())));
    let back = c.get(&to_provider).send().await.unwrap();
    assert!(back.status().is_redirection(), "{}", back.status());
    (location(&back), cookie_value(&binding))
}

async fn finish(serve: &Serve, callback: &str, binding: Option<&str>) -> reqwest::Response {
    assert!(
        callback.starts_with(&format!("{}/login/oidc/callback?", serve.base)),
        "{callback}"
    );
    let mut request = client().get(callback);
    if let Some(b) = binding {
        request = request.header("cookie", format!("ovs_sso={b}"));
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_lets_in_a_known_user_and_refuses_every_answer_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let Some(idp) = provider(dir.path()) else {
        return;
    };
    let mut folder = Folder::new(&format!(
        "\n[console]\n[console.oidc]\nissuer = \"{}\"\nclient_id = \"ovs-console\"\n\
         client_secret_env = \"OVS_OIDC_SECRET\"\nlabel = \"Sign in with Carrier ID\"\n",
        idp.issuer
    ));
    folder.env.insert("OVS_OIDC_SECRET".into(), SECRET.into());
    let added = users_command(&folder, &["add", EVA, "--role", "support", "--no-password"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    // A user with a password never signs on through the provider.
    add_user(&folder, "ada@carrier.example", "admin", &[]);
    let serve = folder.start();

    // The login page offers it.
    let (status, page) = serve.get("/login").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("href=\"/login/oidc\"") && page.contains("Sign in with Carrier ID"),
        "{page}"
    );

    // A known user with a verified email is let in, with the role the users file gives.
    let eva = json!({ "sub": "u-1", "email": EVA, "email_verified": true });
    idp.says(eva.clone());
    let (callback, binding) = until_callback(&serve).await;
    let done = finish(&serve, &callback, Some(&binding)).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/");
    let session = set_cookie(&done, "ovs_session")
        .expect("a session")
        .to_string();
    assert!(session.contains("SameSite=Strict"), "{session}");
    let home = client()
        .get(format!("{}/", serve.base))
        .header("cookie", format!("ovs_session={}", cookie_value(&session)))
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let home = home.text().await.unwrap();
    assert!(home.contains(EVA) && home.contains("support"), "{home}");
    let logins: Vec<Value> = audit(&folder)
        .into_iter()
        .filter(|e| e["event"] == "login")
        .collect();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(
        (&logins[0]["user"], &logins[0]["via"]),
        (&json!(EVA), &json!("oidc"))
    );

    // The same callback again is refused: a sign-on is used once.
    let again = finish(&serve, &callback, Some(&binding)).await;
    assert_eq!(again.status(), 403);
    assert!(set_cookie(&again, "ovs_session").is_none());

    // Each of these answers is refused, and starts no session.
    let refusals: [(&str, Value, bool); 7] = [
        ("another browser", eva.clone(), false),
        (
            "a user who has a password",
            json!({ "sub": "u-3", "email": "ada@carrier.example", "email_verified": true }),
            true,
        ),
        (
            "an unverified email",
            json!({ "sub": "u-1", "email": EVA, "email_verified": false }),
            true,
        ),
        (
            "an unknown user",
            json!({ "sub": "u-2", "email": "mallory@carrier.example", "email_verified": true }),
            true,
        ),
        (
            "a token for another client",
            json!({ "sub": "u-1", "email": EVA, "email_verified": true, "aud": "someone-else" }),
            true,
        ),
        (
            "a token from another issuer",
            json!({ "sub": "u-1", "email": EVA, "email_verified": true,
                    "iss": "http://127.0.0.1:9/" }),
            true,
        ),
        (
            "an expired token",
            json!({ "sub": "u-1", "email": EVA, "email_verified": true,
                    "exp": 1_000_000_000, "iat": 999_999_000 }),
            true,
        ),
    ];
    for (what, claims, with_binding) in refusals {
        idp.says(claims);
        let (callback, binding) = until_callback(&serve).await;
        let reply = finish(&serve, &callback, with_binding.then_some(binding.as_str())).await;
        assert_eq!(reply.status(), 403, "{what}");
        assert!(set_cookie(&reply, "ovs_session").is_none(), "{what}");
    }
    let failed = audit(&folder)
        .into_iter()
        .filter(|e| e["event"] == "login-failed" && e["via"] == "oidc")
        .count();
    assert_eq!(failed, 8, "the replay and the seven refusals");

    // The SSO-only user has no password to log in with.
    let users = users_command(&folder, &["list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&users.stdout).unwrap();
    let eva_listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == EVA)
        .unwrap();
    assert_eq!(eva_listed["password"], false, "{listed}");

    // The client secret is in no log and no audit entry.
    let logged = std::fs::read_to_string(folder.dir.path().join("console-audit.jsonl")).unwrap();
    assert!(!serve.log().contains(SECRET) && !logged.contains(SECRET));
    drop(serve);
}
