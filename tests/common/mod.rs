//! Shared set-up for the end-to-end and register tests: a real sandbox on loopback and
//! the real binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use opter_visma_sync::sandbox::{bundled_customers, write_sandbox_config_for};
use opter_visma_sync::sandbox::{Sandbox, SandboxOptions};
use opter_visma_sync::sink::{eaccounting, Register};
use serde_json::Value;

pub struct Setup {
    pub kind: &'static Register,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub env: HashMap<String, String>,
}

impl Setup {
    /// A sandbox with `customers` (no rate limit) and a config pointing at it.
    pub async fn new(customers: Vec<Value>) -> Setup {
        let options = SandboxOptions {
            customers,
            eaccounting_rate_limit_per_minute: 0,
            visma_net_rate_limit_per_hour: 0,
            economic_rate_limit_per_minute: 0,
            ..SandboxOptions::default()
        };
        Setup::with(options, 0).await
    }

    /// A sandbox with these options, and a config whose client-side limit is
    /// `requests_per_minute` (0: none).
    pub async fn with(options: SandboxOptions, requests_per_minute: u32) -> Setup {
        Setup::for_sink(&eaccounting::REGISTER, options, requests_per_minute).await
    }

    /// Like `with`, for the register `kind`. The sandbox's limits for Visma.net and
    /// e-conomic are left as `options` has them.
    pub async fn for_sink(
        kind: &'static Register,
        options: SandboxOptions,
        requests_per_minute: u32,
    ) -> Setup {
        let sandbox = Sandbox::start(options).await.expect("sandbox starts");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sync.toml");
        let env = write_sandbox_config_for(&config, &sandbox, kind, requests_per_minute).unwrap();
        Setup {
            kind,
            sandbox,
            dir,
            config,
            env,
        }
    }

    pub async fn bundled() -> Setup {
        Setup::new(bundled_customers()).await
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Runs the binary with this setup's config and secrets (and debug logging, so
    /// privacy tests see every log line).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("binary runs")
    }

    /// The binary, set up with this setup's config and secrets, not yet started.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.envs(&self.env)
            .env("RUST_LOG", "debug")
            .env_remove("OPTER_VISMA_SYNC_CONFIG");
        cmd
    }

    /// `sync --json`, returning the exit code and the parsed report.
    pub fn sync_json(&self) -> (i32, Value) {
        let out = self.run(&["sync", "--json"]);
        let code = out.status.code().unwrap_or(-1);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "sync --json printed no JSON ({e}); exit {code}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, report)
    }

    /// The register's request log (this setup's sink).
    pub fn requests(&self) -> Vec<Value> {
        match self.kind.name {
            "eaccounting" => self.sandbox.visma_requests(),
            "visma-net" => self.sandbox.visma_net_requests(),
            "economic" => self.sandbox.economic_requests(),
            other => panic!("no register {other}"),
        }
    }

    /// Register API calls (not token requests) received since the log was cleared.
    pub fn api_requests(&self) -> Vec<Value> {
        let prefix = match self.kind.name {
            "eaccounting" => "/visma/v2/",
            "visma-net" => "/visma-net/api/",
            "economic" => "/economic/api/",
            other => panic!("no register {other}"),
        };
        self.requests()
            .into_iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
            .collect()
    }

    /// The register's customers as (number, name), whatever the product's shape.
    pub fn register(&self) -> Vec<(String, String)> {
        let (customers, number, name) = match self.kind.name {
            "eaccounting" => (self.sandbox.visma_customers(), "CustomerNumber", "Name"),
            "visma-net" => (self.sandbox.visma_net_customers(), "number", "name"),
            "economic" => (self.sandbox.economic_customers(), "customerNumber", "name"),
            other => panic!("no register {other}"),
        };
        customers
            .iter()
            .map(|c| {
                let n = match &c[number] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (n, c[name].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// The register number an Opter customer gets with this sink's bundled mapping.
    pub fn number_of(&self, opter_customer: &Value) -> String {
        let key = match self.kind.name {
            "economic" => "customerNumber",
            _ => "customerCode",
        };
        opter_customer[key].as_str().unwrap_or_default().to_string()
    }

    /// Register writes received since the requests log was last cleared.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.api_requests()
            .into_iter()
            .filter(|r| matches!(r["method"].as_str(), Some("POST" | "PUT" | "DELETE")))
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_string(),
                    r["path"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// A token response of our own (as a person logging in), via the authorize flow, so
    /// the connector's refresh-token chain is left alone.
    pub async fn login_tokens(&self) -> Value {
        login_tokens(&self.sandbox, "ea:api offline_access ea:sales").await
    }

    /// Like `login_tokens`, consenting to `scopes` only.
    pub async fn login_tokens_with_scopes(&self, scopes: &str) -> Value {
        login_tokens(&self.sandbox, scopes).await
    }

    /// A customer the accountant entered in eAccounting before the integration.
    pub async fn accountant_adds(&self, customer: Value) -> Value {
        accountant_adds(&self.sandbox, customer).await
    }

    /// Adds `line` (e.g. `retry_budget_secs = 1`) to the config's `[sink]` or
    /// `[journal]` table (the config ends with `[journal]`).
    pub fn configure(&self, table: &str, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = match table {
            "sink" => text.replace("[journal]", &format!("{line}\n[journal]")),
            "journal" => format!("{text}{line}\n"),
            other => panic!("no table {other} to configure"),
        };
        std::fs::write(&self.config, text).unwrap();
    }

    /// Every Visma API call fails with 503, and each call gives up after a second.
    pub fn start_outage(&self) {
        self.configure("sink", "retry_budget_secs = 1");
        self.sandbox.set_faults(opter_visma_sync::sandbox::Faults {
            fail_rate: 1.0,
            statuses: vec![503],
            ..Default::default()
        });
    }

    /// The register's customer with this CustomerNumber, if any.
    pub fn register_customer(&self, number: &str) -> Option<Value> {
        self.sandbox
            .visma_customers()
            .into_iter()
            .find(|c| c["CustomerNumber"] == number)
    }

    pub async fn clear_requests(&self) {
        let control = match self.kind.name {
            "eaccounting" => "visma",
            other => other,
        };
        let url = format!("{}/_sandbox/{control}/requests", self.sandbox.base_url());
        reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    /// Changes a customer in the simulated Opter, as a person editing it would: its
    /// `updated` time becomes now.
    pub async fn put_opter_customer(&self, customer: &Value) {
        let mut customer = customer.clone();
        customer["updated"] = chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        self.put_opter_customer_as_is(&customer).await;
    }

    /// Changes a customer in the simulated Opter keeping the `updated` it is given (an
    /// edit an incremental read cannot see).
    pub async fn put_opter_customer_as_is(&self, customer: &Value) {
        let code = customer["customerCode"].as_str().unwrap().to_string();
        let url = format!(
            "{}/_sandbox/opter/customers/{code}",
            self.sandbox.base_url()
        );
        reqwest::Client::new()
            .put(url)
            .json(&customer)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
}

/// The customer code of bundled customer `i`.
pub fn code(i: usize) -> String {
    bundled_customers()[i]["customerCode"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every file's bytes below `dir`, concatenated, as text (invalid UTF-8 sequences are
/// replaced; valid ones, like any value we look for, stay intact).
pub fn all_bytes(dir: &Path) -> String {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn contains(haystack: &str, needle: &str) -> bool {
    !needle.is_empty() && haystack.contains(needle)
}

/// The first of `needles` found in `haystack`, in one pass (Aho-Corasick).
pub fn find_any<'a>(haystack: &str, needles: &'a [String]) -> Option<&'a str> {
    let matcher = aho_corasick::AhoCorasick::new(needles).expect("needles build a matcher");
    matcher
        .find(haystack)
        .map(|m| needles[m.pattern().as_usize()].as_str())
}

/// What planning makes of a customer that is written: checked and hashed, then mapped.
pub trait Mapped {
    fn mapped(
        &self,
        customer: &opter_visma_sync::record::PermittedCustomer,
    ) -> Result<opter_visma_sync::mapping::MappedRecord, String>;
}

impl Mapped for opter_visma_sync::mapping::Mapping {
    fn mapped(
        &self,
        customer: &opter_visma_sync::record::PermittedCustomer,
    ) -> Result<opter_visma_sync::mapping::MappedRecord, String> {
        self.check_and_hash(customer).map(|c| c.into_record())
    }
}

/// How a run of the binary ended, with its own peak resident memory.
pub struct Watched {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub peak_kib: u64,
    pub took: std::time::Duration,
}

/// Runs `cmd` to its end, killed after `limit`. Its peak memory is the highest `VmHWM`
/// read from /proc while it runs (every 10 ms): the kernel's own peak of the program
/// after exec (a parent's pages, which `wait4`'s counts include, are not in it).
pub fn watched(mut cmd: std::process::Command, limit: std::time::Duration) -> Watched {
    use std::io::Read;
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            r.read_to_end(&mut text).unwrap();
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Watched {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        peak_kib,
        took: started.elapsed(),
    }
}

/// A token response of a person logging in to the sandbox's eAccounting, consenting to
/// `scopes`, via the authorize flow, so a connector's refresh-token chain is left alone.
pub async fn login_tokens(sandbox: &Sandbox, scopes: &str) -> Value {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let creds = sandbox.credentials();
    let redirect = "http://127.0.0.1:9/callback";
    let authorize = client
        .get(sandbox.visma_authorize_url())
        .query(&[
            ("response_type", "code"),
            ("client_id", creds.visma_client_id.as_str()),
            ("redirect_uri", redirect),
            ("state", "s"),
            ("scope", scopes),
        ])
        .send()
        .await
        .unwrap();
    let location = authorize.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    client
        .post(sandbox.visma_token_url())
        .basic_auth(&creds.visma_client_id, Some(&creds.visma_client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A customer the accountant entered in the sandbox's eAccounting before the
/// integration: POSTed with a login of our own, as the accountant's program would.
/// Answers the register's customer.
pub async fn accountant_adds(sandbox: &Sandbox, customer: Value) -> Value {
    let token = login_tokens(sandbox, "ea:api offline_access ea:sales").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = serde_json::json!({
        "IsPrivatePerson": false,
        "IsActive": true,
        "InvoiceCity": "Borås",
        "InvoicePostalCode": "503 46",
        "TermsOfPaymentId": "8f3c2a61-1b7e-4d2a-9c55-3e0f6a1d2b30",
    });
    for (k, v) in customer.as_object().unwrap() {
        body[k] = v.clone();
    }
    let reply = reqwest::Client::new()
        .post(format!("{}/visma/v2/customers", sandbox.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        reply.status().is_success(),
        "{}",
        reply.text().await.unwrap()
    );
    reply.json().await.unwrap()
}
