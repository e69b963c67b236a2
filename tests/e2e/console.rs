//! The web console on `serve`'s listener: who may do what, CSRF, sessions, escaping and
//! headers, driven over HTTP against the real binary and sandboxes.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use opter_visma_sync::sandbox::SandboxOptions;
use opter_visma_sync::sink::{eaccounting, economic};
use serde_json::Value;

use super::serve::{customers, until, Folder, Serve, Tenant};

const BIN: &str = env!("CARGO_BIN_EXE_opter-visma-sync");
pub(crate) const PASSWORD: &str = "a long enough password";

/// Names and codes that try to break out of the page.
pub(crate) const SCRIPT_NAME: &str = "<script>alert(\"x\")</script> & 'Co'";
pub(crate) const IMG_CONTACT: &str = "Eve \"<img src=x onerror=alert(1)>\"";
pub(crate) const BIDI_NAME: &str = "Evil\u{202e}txt.exe AB";
pub(crate) const MARKUP_CODE: &str = "K<b>9</b>";

/// Customers of which some carry markup and direction characters.
pub(crate) fn hostile(n: usize) -> SandboxOptions {
    let mut options = customers(n);
    let c = &mut options.customers;
    c[1]["name"] = SCRIPT_NAME.into();
    c[2]["references"][0]["name"] = IMG_CONTACT.into();
    c[3]["name"] = BIDI_NAME.into();
    c[4]["customerCode"] = MARKUP_CODE.into();
    options
}

/// `users ARGS` on the folder's service file, with the folder's environment.
pub(crate) fn users_command(folder: &Folder, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(folder.service_file())
        .arg("users")
        .args(args)
        .envs(&folder.env)
        .env_remove("OPTER_VISMA_SYNC_CONFIG");
    cmd
}

/// Adds a console user through the CLI, the password on stdin.
pub(crate) fn add_user(folder: &Folder, name: &str, role: &str, tenants: &[&str]) {
    let mut cmd = users_command(folder, &["add", name, "--role", role]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for t in tenants {
        cmd.args(["--tenant", t]);
    }
    let mut child = cmd.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A client that does not follow redirects, so a refusal's 303 is seen as such.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A logged-in user (or nobody, with no cookie).
pub(crate) struct Session {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
    pub(crate) csrf: String,
}

/// The value of a `Set-Cookie` for `name`.
pub(crate) fn set_cookie<'a>(reply: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    reply
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

pub(crate) fn cookie_value(header: &str) -> String {
    header
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap()
}

/// The value of the first hidden input called `name`.
pub(crate) fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Session {
    pub(crate) fn anonymous(serve: &Serve) -> Session {
        Session {
            base: serve.base.clone(),
            client: client(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// Logs in as a person would: the login page's token, then the form.
    pub(crate) async fn login(serve: &Serve, user: &str, password: &str) -> Result<Session, Reply> {
        let mut s = Session::anonymous(serve);
        let page = s
            .client
            .get(format!("{}/login", s.base))
            .send()
            .await
            .unwrap();
        let login_cookie = cookie_value(set_cookie(&page, "ovs_login").unwrap());
        let token = hidden(&page.text().await.unwrap(), "login").unwrap();
        let reply = s
            .client
            .post(format!("{}/login", s.base))
            .header("cookie", format!("ovs_login={login_cookie}"))
            .form(&[("user", user), ("password", password), ("login", &token)])
            .send()
            .await
            .unwrap();
        let Some(session) = set_cookie(&reply, "ovs_session").map(cookie_value) else {
            return Err(Reply::of(reply).await);
        };
        assert_eq!(reply.status(), 303);
        s.cookie = Some(format!("ovs_session={session}"));
        let home = s.get("/").await;
        assert_eq!(home.status, 200, "{}", home.body);
        s.csrf = hidden(&home.body, "csrf").unwrap();
        Ok(s)
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            request = request.header("cookie", c);
        }
        Reply::of(request.send().await.unwrap()).await
    }

    /// Posts the form, with this session's CSRF token unless `fields` has one.
    pub(crate) async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            form.push(("csrf", &self.csrf));
        }
        form.retain(|(k, v)| !(*k == "csrf" && *v == "<none>"));
        let mut request = self.client.post(format!("{}{path}", self.base)).form(&form);
        if let Some(c) = &self.cookie {
            request = request.header("cookie", c);
        }
        Reply::of(request.send().await.unwrap()).await
    }
}

impl Reply {
    async fn of(reply: reqwest::Response) -> Reply {
        Reply {
            status: reply.status().as_u16(),
            headers: reply.headers().clone(),
            body: reply.text().await.unwrap(),
        }
    }
}

/// Two tenants (one with hostile customers), four users, a console; each tenant's first
/// run done.
pub(crate) async fn console_with_two_tenants(console: &str) -> (Folder, Tenant, Tenant, Serve) {
    let mut folder = Folder::new(&format!("rescan_secs = 1\n\n[console]\n{console}"));
    let once = "every = \"1h\"\njitter = \"0s\"";
    let alpha = folder
        .tenant("alpha", &eaccounting::REGISTER, hostile(8), "", once)
        .await;
    let beta = folder
        .tenant("beta", &economic::REGISTER, customers(3), "", once)
        .await;
    folder.add(&alpha);
    folder.add(&beta);
    add_user(&folder, "vera", "viewer", &[]);
    add_user(&folder, "sara", "support", &[]);
    add_user(&folder, "adam", "admin", &[]);
    add_user(&folder, "bob", "support", &["beta"]);
    let serve = folder.start();
    for id in ["alpha", "beta"] {
        until("the first runs", 90, || async {
            let t = serve.tenant(id).await;
            (t["runs"].as_u64() >= Some(1) && t["state"] == "idle").then_some(())
        })
        .await;
    }
    (folder, alpha, beta, serve)
}

pub(crate) fn audit(folder: &Folder) -> Vec<Value> {
    std::fs::read_to_string(folder.dir.path().join("console-audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn first_run_id(page: &str, tenant: &str) -> String {
    let prefix = format!("href=\"/t/{tenant}/runs/");
    let at = page
        .find(&prefix)
        .unwrap_or_else(|| panic!("no run link: {page}"));
    let rest = &page[at + prefix.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_it_may_and_refused_actions_change_nothing() {
    let (folder, alpha, _beta, serve) = console_with_two_tenants("").await;
    let nobody = Session::anonymous(&serve);
    let vera = Session::login(&serve, "vera", PASSWORD).await.ok().unwrap();
    let sara = Session::login(&serve, "sara", PASSWORD).await.ok().unwrap();
    let adam = Session::login(&serve, "adam", PASSWORD).await.ok().unwrap();
    let bob = Session::login(&serve, "bob", PASSWORD).await.ok().unwrap();
    let run = first_run_id(&sara.get("/t/alpha").await.body, "alpha");
    let who = [&nobody, &vera, &sara, &adam, &bob];
    let names = ["anonymous", "viewer", "support", "admin", "other tenant's"];

    // Reads.
    let reads: [(String, [u16; 5]); 7] = [
        ("/".into(), [303, 200, 200, 200, 200]),
        ("/t/alpha".into(), [303, 200, 200, 200, 404]),
        (format!("/t/alpha/runs/{run}"), [303, 200, 200, 200, 404]),
        (
            "/t/alpha/customer?code=K10001".into(),
            [303, 200, 200, 200, 404],
        ),
        ("/t/alpha/privacy".into(), [303, 200, 200, 200, 404]),
        ("/t/beta".into(), [303, 200, 200, 200, 200]),
        ("/t/nobody".into(), [303, 404, 404, 404, 404]),
    ];
    for (path, expected) in &reads {
        for (i, s) in who.iter().enumerate() {
            let r = s.get(path).await;
            assert_eq!(
                r.status, expected[i],
                "GET {path} as {}: {}",
                names[i], r.body
            );
            if r.status == 303 {
                assert_eq!(r.location(), "/login", "GET {path}");
            }
        }
    }
    // The record of processing is the tenant's own, from its mapping and config.
    let record = who[1].get("/t/alpha/privacy").await.body;
    assert!(
        record.contains("ContactPersonEmail")
            && record.contains("href=\"https://www.visma.com/trust-centre/transparency/\"")
            && record.contains("1095 days"),
        "{record}"
    );
    let bobs = bob.get("/").await.body;
    assert!(
        bobs.contains("href=\"/t/beta\"") && !bobs.contains("/t/alpha"),
        "{bobs}"
    );
    // A read-only check anyone who sees the tenant may ask for.
    for (i, s) in who.iter().enumerate() {
        let r = s.post("/t/alpha/verify", &[]).await;
        assert_eq!(
            r.status,
            [303, 200, 200, 200, 404][i],
            "verify as {}",
            names[i]
        );
    }

    // Reveal: support and admin, with a reason; the refused leave no audit entry.
    let reason = [("reason", "customer asked what we hold")];
    for (i, s) in who.iter().enumerate() {
        let r = s.post("/t/alpha/customer/K10001/reveal", &reason).await;
        assert_eq!(
            r.status,
            [303, 403, 200, 200, 404][i],
            "reveal as {}",
            names[i]
        );
    }
    let reveals: Vec<String> = audit(&folder)
        .iter()
        .filter(|e| e["event"] == "reveal")
        .map(|e| e["user"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reveals, ["sara", "adam"]);

    // Run now: admin only; the refused queue nothing.
    let runs_before = serve.tenant("alpha").await["runs"].clone();
    for (i, s) in [&nobody, &vera, &sara, &bob].iter().enumerate() {
        let r = s.post("/t/alpha/run", &[]).await;
        assert_eq!(r.status, [303, 403, 403, 404][i], "run as {i}: {}", r.body);
    }
    let t = serve.tenant("alpha").await;
    assert_eq!(
        (t["runs"].clone(), t["run_requested"].clone()),
        (runs_before.clone(), Value::Bool(false)),
        "{t}"
    );
    let r = adam.post("/t/alpha/run", &[]).await;
    assert_eq!((r.status, r.location()), (303, "/t/alpha"), "{}", r.body);
    until("the admin's run", 60, || async {
        let t = serve.tenant("alpha").await;
        (t["runs"].as_u64() > runs_before.as_u64() && t["state"] == "idle").then_some(())
    })
    .await;

    // Purge: the refused leave the customer in the register and the journal.
    let held = |code: &str| alpha.numbers().contains(&code.to_string());
    let code = "K10003";
    assert!(held(code));
    let form = [("reason", "asked to be forgotten"), ("confirm", code)];
    for (i, s) in [&nobody, &vera, &bob].iter().enumerate() {
        let r = s
            .post(&format!("/t/alpha/customer/{code}/purge"), &form)
            .await;
        assert_eq!(r.status, [303, 403, 404][i], "purge as {i}: {}", r.body);
    }
    assert!(held(code), "a refused purge erased the customer");
    let timeline = sara
        .get(&format!("/t/alpha/customer?code={code}"))
        .await
        .body;
    assert!(!timeline.contains(">erase<"), "{timeline}");
    // A viewer's page has no purge or reveal form at all.
    let viewed = vera
        .get(&format!("/t/alpha/customer?code={code}"))
        .await
        .body;
    assert!(
        !viewed.contains("/purge") && !viewed.contains("/reveal"),
        "{viewed}"
    );
    assert!(sara
        .get(&format!("/t/alpha/customer?code={code}"))
        .await
        .body
        .contains("/purge"));

    let done = sara
        .post(&format!("/t/alpha/customer/{code}/purge"), &form)
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(!held(code), "the purge left the customer in the register");
    let receipt_path = done
        .body
        .split("href=\"")
        .find_map(|s| s.strip_prefix("/t/alpha/receipts/"))
        .map(|s| format!("/t/alpha/receipts/{}", &s[..s.find('"').unwrap()]))
        .unwrap_or_else(|| panic!("no receipt link: {}", done.body));
    for (i, s) in who.iter().enumerate() {
        let r = s.get(&receipt_path).await;
        // Only the session that purged holds its receipt.
        assert_eq!(
            r.status,
            [303, 404, 200, 404, 404][i],
            "receipt as {}",
            names[i]
        );
        if r.status == 200 {
            let receipt: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(receipt["customer"], code);
            assert_eq!(receipt["actor"], "console:sara");
            assert_eq!(receipt["journal_verified"], true);
            let disposition = r.headers["content-disposition"].to_str().unwrap();
            assert!(disposition.starts_with("attachment;"), "{disposition}");
        }
    }
    let after = sara
        .get(&format!("/t/alpha/customer?code={code}"))
        .await
        .body;
    assert!(
        after.contains(">erase<") && after.contains("console:sara"),
        "{after}"
    );
    assert!(
        after.contains(">erased<"),
        "values still shown after the purge: {after}"
    );
    let verify = alpha.cli(&folder, &["journal", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // Admin may purge too; a typed confirmation that differs does nothing.
    let r = adam
        .post(
            "/t/alpha/customer/K10006/purge",
            &[("reason", "test"), ("confirm", "K1000")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(held("K10006"));
    let r = adam
        .post(
            "/t/alpha/customer/K10006/purge",
            &[("reason", "test"), ("confirm", "K10006")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!held("K10006"));

    // Logging out ends the session for good.
    assert_eq!(vera.post("/logout", &[]).await.status, 303);
    assert_eq!(vera.get("/").await.status, 303);
    drop(serve);
}

/// Every page a support user can reach about the tenant's customers.
async fn every_customer_page(s: &Session, codes: &[&str]) -> Vec<(String, String)> {
    let mut pages = Vec::new();
    for path in ["/", "/t/alpha"] {
        pages.push((path.to_string(), s.get(path).await.body));
    }
    let dashboard = &pages[1].1;
    let run = first_run_id(dashboard, "alpha");
    let path = format!("/t/alpha/runs/{run}");
    pages.push((path.clone(), s.get(&path).await.body));
    for code in codes {
        let query: String = url::form_urlencoded::byte_serialize(code.as_bytes()).collect();
        let path = format!("/t/alpha/customer?code={query}");
        pages.push((path.clone(), s.get(&path).await.body));
        let segment: String = percent(code);
        let path = format!("/t/alpha/customer/{segment}/reveal");
        let r = s.post(&path, &[("reason", "checking escaping")]).await;
        pages.push((path, r.body));
    }
    pages
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b.is_ascii_alphanumeric() {
            true => (b as char).to_string(),
            false => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_their_token_hostile_text_is_escaped_and_headers_protect_every_page() {
    let (folder, alpha, _beta, serve) = console_with_two_tenants("").await;
    let sara = Session::login(&serve, "sara", PASSWORD).await.ok().unwrap();

    // A missing or wrong CSRF token is refused and nothing happens.
    let code = "K10001";
    let purge = format!("/t/alpha/customer/{code}/purge");
    let form = [("reason", "forged"), ("confirm", code)];
    for token in [
        "<none>",
        "",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let mut fields = form.to_vec();
        fields.push(("csrf", token));
        let r = sara.post(&purge, &fields).await;
        assert_eq!(r.status, 403, "purge with csrf {token:?}: {}", r.body);
        let r = sara
            .post(
                "/t/alpha/customer/K10001/reveal",
                &[("reason", "x"), ("csrf", token)],
            )
            .await;
        assert_eq!(r.status, 403, "reveal with csrf {token:?}");
        assert_eq!(sara.post("/logout", &[("csrf", token)]).await.status, 403);
    }
    assert!(alpha.numbers().contains(&code.to_string()));
    assert!(!audit(&folder).iter().any(|e| e["event"] == "reveal"));
    assert_eq!(
        sara.get("/").await.status,
        200,
        "a forged logout ended the session"
    );

    // Hostile names and codes come out escaped wherever they are shown.
    let codes = ["K10002", "K10003", "K10004", MARKUP_CODE];
    let pages = every_customer_page(&sara, &codes).await;
    for (path, body) in &pages {
        for raw in ["<script", "<img", "<b>", "\u{202e}", "onerror=alert"] {
            if raw == "onerror=alert" {
                // Escaped text may hold the words, never as an attribute of a tag.
                assert!(!body.contains("<img src=x onerror"), "{path}");
                continue;
            }
            assert!(!body.contains(raw), "{path} shows {raw:?} raw:\n{body}");
        }
    }
    let revealed = &pages
        .iter()
        .find(|(p, _)| p == "/t/alpha/customer/K10002/reveal")
        .unwrap()
        .1;
    assert!(
        revealed.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'Co'"),
        "{revealed}"
    );
    let contact = &pages
        .iter()
        .find(|(p, _)| p == "/t/alpha/customer/K10003/reveal")
        .unwrap()
        .1;
    assert!(
        contact.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{contact}"
    );
    // The direction override never reached the register, and the run page says why.
    let run_page = &pages[2].1;
    assert!(run_page.contains("K10004"), "{run_page}");
    let dashboard = &pages[1].1;
    assert!(
        dashboard.contains("<svg") && dashboard.contains("class=\"created\""),
        "{dashboard}"
    );

    // Headers on pages, problems and the login page.
    let anonymous = Session::anonymous(&serve);
    for reply in [
        sara.get("/").await,
        sara.get("/t/alpha/customer?code=K10001").await,
        sara.get("/t/nobody").await,
        anonymous.get("/login").await,
    ] {
        let h = |name: &str| {
            reply
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let csp = h("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("script-src"),
            "{csp}"
        );
        assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(h("cache-control").as_deref(), Some("no-store"));
        assert!(h("content-type")
            .unwrap_or_default()
            .starts_with("text/html"));
    }
    let page = reqwest::get(format!("{}/login", serve.base)).await.unwrap();
    let login_cookie = set_cookie(&page, "ovs_login").unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(login_cookie.contains(flag), "{login_cookie}");
    }
    assert!(
        !login_cookie.contains("Secure"),
        "loopback without a TLS proxy: {login_cookie}"
    );

    // Logins: a wrong password is refused and recorded, then throttled.
    for attempt in 1..=6 {
        let r = Session::login(&serve, "mallory", "not the password at all")
            .await
            .err()
            .unwrap();
        let expected = if attempt <= 5 { 401 } else { 429 };
        assert_eq!(r.status, expected, "attempt {attempt}");
    }
    let entries = audit(&folder);
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"login")
            && events.contains(&"login-failed")
            && events.contains(&"login-throttled"),
        "{events:?}"
    );
    assert!(entries.iter().any(|e| e["event"] == "reveal"
        && e["reason"] == "checking escaping"
        && e["user"] == "sara"));
    let text = std::fs::read_to_string(folder.dir.path().join("console-audit.jsonl")).unwrap();
    assert!(
        !text.contains(PASSWORD) && !text.contains("not the password"),
        "{text}"
    );
    assert_mode_600(&folder.dir.path().join("console-audit.jsonl"));
    assert_mode_600(&folder.dir.path().join("users.toml"));
    // A log line never holds a revealed value.
    assert!(!serve.log().contains("alert("), "{}", serve.log());
}

fn assert_mode_600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_cookies_are_secure_behind_a_tls_proxy_and_an_open_listen_is_refused(
) {
    let mut folder = Folder::new("\n[console]\nsession_idle_secs = 2\nbehind_tls_proxy = true");
    let t = folder
        .tenant(
            "solo",
            &eaccounting::REGISTER,
            customers(2),
            "",
            "every = \"1h\"\njitter = \"0s\"",
        )
        .await;
    folder.add(&t);
    add_user(&folder, "vera", "viewer", &[]);
    let serve = folder.start();
    let vera = Session::login(&serve, "vera", PASSWORD).await.ok().unwrap();
    let page = reqwest::get(format!("{}/login", serve.base)).await.unwrap();
    assert!(set_cookie(&page, "ovs_login").unwrap().contains("; Secure"));
    // Used within the idle time, the session lives on...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(vera.get("/").await.status, 200);
    }
    // ...left idle past it, it is gone: a page sends to the login, a form is refused.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = vera.get("/").await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    assert_eq!(vera.post("/t/solo/verify", &[]).await.status, 303);

    // Removing a user ends their sessions at once.
    let vera = Session::login(&serve, "vera", PASSWORD).await.ok().unwrap();
    let out = users_command(&folder, &["remove", "vera"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vera.get("/").await.status, 303);
    drop(serve);

    // A console on an open address with no TLS in front is refused, naming the key.
    let open = Folder::new("\n[console]\n");
    open.listen_on("0.0.0.0:0");
    let out = open.serve_output();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[console] behind_tls_proxy"), "{stderr}");
}

#[test]
fn users_are_managed_from_the_cli_and_the_file_never_shows_a_password() {
    let folder = Folder::new("\n[console]\n");
    let users = |args: &[&str], stdin: &str| {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(folder.service_file())
            .arg("users")
            .args(args)
            .env_remove("OPTER_VISMA_SYNC_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = users(&["list"], "");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("add the first admin"),
        "{out:?}"
    );
    let short = users(&["add", "eva", "--role", "admin"], "short\n");
    assert_eq!(short.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 12"),
        "{short:?}"
    );
    assert!(
        users(&["add", "eva", "--role", "admin"], &format!("{PASSWORD}\n"))
            .status
            .success()
    );
    let bad = users(&["add", "ola", "--role", "owner"], "");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let again = users(
        &["add", "eva", "--role", "viewer"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(users(
        &["add", "ola", "--role", "support", "--tenant", "beta"],
        &format!("{PASSWORD}\n")
    )
    .status
    .success());
    let list = users(&["list", "--json"], "");
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            { "name": "eva", "role": "admin", "tenants": [], "password": true, "tokens": 0 },
            {
                "name": "ola", "role": "support", "tenants": ["beta"], "password": true,
                "tokens": 0,
            },
        ])
    );
    assert!(users(&["passwd", "ola"], "another long password\n")
        .status
        .success());
    assert_eq!(users(&["remove", "nobody"], "").status.code(), Some(2));
    assert!(users(&["remove", "ola"], "").status.success());
    let file = std::fs::read_to_string(folder.dir.path().join("users.toml")).unwrap();
    assert!(
        file.contains("$argon2id$") && !file.contains(PASSWORD) && !file.contains("ola"),
        "{file}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_visma_stores_the_login_where_auth_login_does_and_the_paused_tenant_runs() {
    let mut folder = Folder::new("rescan_secs = 1\n\n[console]\n");
    let once = "every = \"1h\"\njitter = \"0s\"";
    let login = folder
        .tenant("login", &eaccounting::REGISTER, customers(3), "", once)
        .await;
    let econ = folder
        .tenant("econ", &economic::REGISTER, customers(2), "", once)
        .await;
    folder.add(&login);
    folder.add(&econ);
    folder
        .env
        .insert("VISMA_REFRESH_TOKEN".into(), "not-a-grant".into());
    add_user(&folder, "adam", "admin", &[]);
    add_user(&folder, "sara", "support", &[]);
    let serve = folder.start();
    until("the tenant to need a login", 60, || async {
        let t = serve.tenant("login").await;
        (t["paused"]["reason"] == "needs-login").then_some(())
    })
    .await;
    let adam = Session::login(&serve, "adam", PASSWORD).await.ok().unwrap();
    let sara = Session::login(&serve, "sara", PASSWORD).await.ok().unwrap();
    let page = adam.get("/t/login").await.body;
    assert!(
        page.contains("no login stored") && page.contains("href=\"/t/login/connect\""),
        "{page}"
    );
    assert!(!sara.get("/t/login").await.body.contains("/connect\""));
    assert_eq!(sara.get("/t/login/connect").await.status, 403);
    assert_eq!(
        Session::anonymous(&serve)
            .get("/t/login/connect")
            .await
            .status,
        303
    );
    let other = adam.get("/t/econ/connect").await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert!(other.body.contains("needs no login"), "{}", other.body);

    // Start: off to Visma's authorize endpoint with PKCE and the console's callback.
    let start = adam.get("/t/login/connect").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = url::Url::parse(start.location()).unwrap();
    let query: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(
        query["redirect_uri"],
        format!("{}/connect/callback", serve.base)
    );
    let bound = start
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("ovs_connect="))
        .unwrap();
    assert!(
        bound.contains("SameSite=Lax") && bound.contains("HttpOnly"),
        "{bound}"
    );
    let binding = bound.split(';').next().unwrap().to_string();

    // Visma answers with a redirect back to the console's callback.
    let visma = client().get(authorize.as_str()).send().await.unwrap();
    assert_eq!(visma.status(), 302);
    let back = visma.headers()["location"].to_str().unwrap().to_string();
    assert!(
        back.starts_with(&format!("{}/connect/callback?", serve.base)),
        "{back}"
    );
    // Not from another browser: the callback needs the cookie of the one that started.
    let elsewhere = client().get(&back).send().await.unwrap();
    assert_eq!(elsewhere.status(), 400);
    // That refusal used the login up (one use only): start again, this time to the end.
    let start = adam.get("/t/login/connect").await;
    let binding_now = start
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("ovs_connect="))
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap();
    assert_ne!(binding_now, binding);
    let visma = client().get(start.location()).send().await.unwrap();
    let back = visma.headers()["location"].to_str().unwrap().to_string();
    let done = client()
        .get(&back)
        .header("cookie", &binding_now)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Connected to Visma"));
    let again = client()
        .get(&back)
        .header("cookie", &binding_now)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "a callback is used once");

    // Stored where `auth login` keeps it, owner-only, and the paused tenant runs.
    let grant = folder
        .dir
        .path()
        .join("homes/login/journal/credentials/eaccounting-grant.json");
    assert_mode_600(&grant);
    let status = login
        .cli(&folder, &["auth", "status", "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (status["stored"].clone(), status["origin"].clone()),
        (Value::Bool(true), "login".into())
    );
    let t = until("the tenant to run with the new login", 60, || async {
        let t = serve.tenant("login").await;
        (t["last_run"]["outcome"] != Value::Null && t["state"] == "idle" && t["paused"].is_null())
            .then_some(t)
    })
    .await;
    assert_ne!(t["last_run"]["outcome"], "failed", "{t}");
    assert_eq!(login.numbers().len(), 3, "{t}");
    assert!(adam
        .get("/t/login")
        .await
        .body
        .contains("login stored (login)"));
    let events: Vec<Value> = audit(&folder);
    assert!(events
        .iter()
        .any(|e| e["event"] == "connect" && e["user"] == "adam" && e["tenant"] == "login"));
    let text = std::fs::read_to_string(&grant).unwrap();
    let grant: Value = serde_json::from_str(&text).unwrap();
    let token = grant["refresh_token"].as_str().unwrap();
    let audit_text =
        std::fs::read_to_string(folder.dir.path().join("console-audit.jsonl")).unwrap();
    assert!(!audit_text.contains(token) && !serve.log().contains(token));
}

/// The `journal log` events of one customer.
pub(crate) fn journal_log(tenant: &Tenant, folder: &Folder, code: &str) -> Vec<Value> {
    let out = tenant
        .cli(folder, &["journal", "log", "--customer", code, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The register's eAccounting customer under `number`.
pub(crate) fn register_customer(tenant: &Tenant, number: &str) -> Value {
    tenant
        .sandbox
        .visma_customers()
        .into_iter()
        .find(|c| c["CustomerNumber"] == number)
        .unwrap_or_else(|| panic!("{number} is not in the register"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_decides_conflicts_and_acts_on_one_customer_and_the_journal_names_them() {
    let mut folder = Folder::new("rescan_secs = 1\n\n[console]\n");
    let once = "every = \"1h\"\njitter = \"0s\"";
    let gamma = folder
        .tenant("gamma", &eaccounting::REGISTER, customers(4), "", once)
        .await;
    // The accountant's own customers under two of our numbers: conflicts.
    for number in ["K10001", "K10002"] {
        crate::common::accountant_adds(
            &gamma.sandbox,
            serde_json::json!({
                "CustomerNumber": number,
                "Name": "Annan Kund AB",
                "ContactPersonName": "Other Person",
                "ContactPersonEmail": "other@annankund.se",
            }),
        )
        .await;
    }
    folder.add(&gamma);
    add_user(&folder, "vera", "viewer", &[]);
    add_user(&folder, "sara", "support", &[]);
    add_user(&folder, "bob", "support", &["beta"]);
    let serve = folder.start();
    let first = until("the first run", 90, || async {
        let t = serve.tenant("gamma").await;
        (t["runs"].as_u64() >= Some(1) && t["state"] == "idle").then_some(t)
    })
    .await;
    assert_eq!(first["last_run"]["counts"]["conflict"], 2, "{first}");
    let vera = Session::login(&serve, "vera", PASSWORD).await.ok().unwrap();
    let sara = Session::login(&serve, "sara", PASSWORD).await.ok().unwrap();
    let bob = Session::login(&serve, "bob", PASSWORD).await.ok().unwrap();

    // Both see what waits for a decision; only support may decide.
    let dashboard = vera.get("/t/gamma").await.body;
    assert!(
        dashboard.contains("Waiting for a decision")
            && dashboard.contains("href=\"/t/gamma/customer?code=K10001\"")
            && dashboard.contains("href=\"/t/gamma/customer?code=K10002\""),
        "{dashboard}"
    );
    let viewed = vera.get("/t/gamma/customer?code=K10001").await.body;
    assert!(!viewed.contains("/act/"), "{viewed}");
    let page = sara.get("/t/gamma/customer?code=K10001").await.body;
    let offers = |page: &str, code: &str, action: &str| {
        page.contains(&format!(
            "formaction=\"/t/gamma/customer/{code}/act/{action}\""
        ))
    };
    for action in ["accept", "skip", "restrict", "export"] {
        assert!(offers(&page, "K10001", action), "{action}: {page}");
    }
    // In conflict nothing is sent, so sending again is not offered.
    assert!(!offers(&page, "K10001", "replay"), "{page}");
    let reason = [("reason", "same company, renamed")];
    for action in ["accept", "skip", "restrict", "replay", "export"] {
        let path = format!("/t/gamma/customer/K10001/act/{action}");
        assert_eq!(vera.post(&path, &reason).await.status, 403, "{action}");
        assert_eq!(bob.post(&path, &reason).await.status, 404, "{action}");
        let anonymous = Session::anonymous(&serve).post(&path, &reason).await;
        assert_eq!(anonymous.status, 303, "{action}");
        assert_eq!(
            sara.post(&path, &[("reason", "same"), ("csrf", "<none>")])
                .await
                .status,
            403,
            "{action} without a token"
        );
    }
    let blank = sara
        .post("/t/gamma/customer/K10001/act/accept", &[("reason", " ")])
        .await;
    assert_eq!(blank.status, 400, "{}", blank.body);
    let unknown = sara
        .post("/t/gamma/customer/K10001/act/delete", &reason)
        .await;
    assert_eq!(unknown.status, 404);
    // Sending again is refused while a decision is owed, even when asked directly.
    let held = sara
        .post("/t/gamma/customer/K10001/act/replay", &reason)
        .await;
    assert_eq!(held.status, 409, "{}", held.body);
    assert!(held.body.contains("in conflict"), "{}", held.body);
    let untouched = journal_log(&gamma, &folder, "K10001");
    assert!(
        untouched
            .iter()
            .all(|e| !e["actor"].as_str().unwrap_or("").starts_with("console:")),
        "a refused action was journaled: {untouched:?}"
    );

    // Accept one, skip the other; the next run updates the accepted one only.
    let accepted = sara
        .post("/t/gamma/customer/K10001/act/accept", &reason)
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert!(accepted.body.contains("Decided"), "{}", accepted.body);
    let skipped = sara
        .post(
            "/t/gamma/customer/K10002/act/skip",
            &[("reason", "the accountant's own customer")],
        )
        .await;
    assert_eq!(skipped.status, 200, "{}", skipped.body);
    // A skipped customer can be accepted later, and is not sent again until then.
    let page = sara.get("/t/gamma/customer?code=K10002").await.body;
    assert!(offers(&page, "K10002", "accept") && !offers(&page, "K10002", "skip"));
    assert!(!offers(&page, "K10002", "replay"), "{page}");
    assert!(
        !sara
            .get("/t/gamma")
            .await
            .body
            .contains("Waiting for a decision"),
        "decided conflicts still wait"
    );
    let runs = serve.tenant("gamma").await["runs"].as_u64().unwrap();
    assert_eq!(serve.post("/tenants/gamma/run").await.0, 202);
    let t = until("the run after the decisions", 60, || async {
        let t = serve.tenant("gamma").await;
        (t["runs"].as_u64() > Some(runs) && t["state"] == "idle").then_some(t)
    })
    .await;
    let counts = &t["last_run"]["counts"];
    assert_eq!(
        (counts["updated"].clone(), counts["skipped"].clone()),
        (serde_json::json!(1), serde_json::json!(1)),
        "{t}"
    );
    assert!(counts["conflict"].as_u64().unwrap_or(0) == 0, "{t}");
    let opter_name = gamma.sandbox.opter_customers()[0]["name"].clone();
    assert_eq!(register_customer(&gamma, "K10001")["Name"], opter_name);
    assert_eq!(register_customer(&gamma, "K10002")["Name"], "Annan Kund AB");
    let decided: Vec<Value> = journal_log(&gamma, &folder, "K10001")
        .into_iter()
        .filter(|e| e["actor"] == "console:sara")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["message"], "same company, renamed");

    // Restrict shows as a hold and is lifted again; each is journaled with its reason.
    let restricted = sara
        .post(
            "/t/gamma/customer/K10003/act/restrict",
            &[("reason", "disputed data")],
        )
        .await;
    assert_eq!(restricted.status, 200, "{}", restricted.body);
    assert!(
        restricted.body.contains("Restricted: no update is sent")
            && restricted.body.contains("/act/unrestrict"),
        "{}",
        restricted.body
    );
    let again = sara
        .post(
            "/t/gamma/customer/K10003/act/restrict",
            &[("reason", "disputed data")],
        )
        .await;
    assert!(again.body.contains("restricted already"), "{}", again.body);
    let lifted = sara
        .post(
            "/t/gamma/customer/K10003/act/unrestrict",
            &[("reason", "resolved")],
        )
        .await;
    assert!(
        lifted.body.contains("Restriction lifted"),
        "{}",
        lifted.body
    );
    assert!(lifted.body.contains("/act/restrict"), "{}", lifted.body);
    let reasons: Vec<Value> = journal_log(&gamma, &folder, "K10003")
        .into_iter()
        .filter(|e| e["actor"] == "console:sara")
        .map(|e| e["message"].clone())
        .collect();
    assert_eq!(
        reasons,
        ["resolved", "disputed data", "disputed data"],
        "newest first: unrestrict, restrict, restrict"
    );
    let none = sara
        .post(
            "/t/gamma/customer/K10003/act/unsuppress",
            &[("reason", "returned")],
        )
        .await;
    assert!(none.body.contains("was not suppressed"), "{}", none.body);

    // Replay sends it again though unchanged; export is a download of what is held.
    let before = gamma.sandbox.visma_requests().len();
    let replayed = sara
        .post(
            "/t/gamma/customer/K10004/act/replay",
            &[("reason", "edited by hand in Visma")],
        )
        .await;
    assert!(
        replayed.body.contains("Sent again: 0 created, 1 updated"),
        "{}",
        replayed.body
    );
    assert!(
        gamma.sandbox.visma_requests()[before..]
            .iter()
            .any(|r| r["method"] == "PUT"),
        "the replay wrote nothing"
    );
    let export = sara
        .post(
            "/t/gamma/customer/K10004/act/export",
            &[("reason", "access request")],
        )
        .await;
    assert_eq!(export.status, 200, "{}", export.body);
    let disposition = export.headers["content-disposition"].to_str().unwrap();
    assert_eq!(
        disposition,
        "attachment; filename=\"export-gamma-K10004.json\""
    );
    let document: Value = serde_json::from_str(&export.body).unwrap();
    let name = gamma.sandbox.opter_customers()[3]["name"].clone();
    assert!(export.body.contains(name.as_str().unwrap()), "{document}");
    let journaled: Vec<Value> = journal_log(&gamma, &folder, "K10004")
        .into_iter()
        .filter(|e| e["actor"] == "console:sara")
        .map(|e| e["operation"].clone())
        .collect();
    assert_eq!(journaled, ["export", "update", "replay"], "newest first");
    let verify = gamma.cli(&folder, &["journal", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{verify:?}");
    drop(serve);
}
