//! `serve`: the real binary runs a folder of tenants, each against its own sandbox, and
//! is driven and watched over its HTTP endpoints.

use std::collections::HashMap;
use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opter_visma_sync::sandbox::{
    bundled_customers, simulator, write_sandbox_config_for, Faults, Sandbox, SandboxOptions,
};
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_opter-visma-sync");

/// A folder with `service.toml` and `tenants/`, and each tenant's home (mapping,
/// journal) outside `tenants/`.
pub(crate) struct Folder {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: HashMap<String, String>,
}

pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) kind: &'static Register,
    pub(crate) sandbox: Sandbox,
    pub(crate) file: PathBuf,
    pub(crate) env: HashMap<String, String>,
}

impl Folder {
    pub(crate) fn new(service: &str) -> Folder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tenants")).unwrap();
        std::fs::write(
            dir.path().join("service.toml"),
            format!("[service]\nlisten = \"127.0.0.1:0\"\ntenants = \"tenants\"\n{service}\n"),
        )
        .unwrap();
        Folder {
            dir,
            env: HashMap::new(),
        }
    }

    pub(crate) fn service_file(&self) -> PathBuf {
        self.dir.path().join("service.toml")
    }

    /// The service listens on `address` instead of a loopback port of its choosing.
    pub(crate) fn listen_on(&self, address: &str) {
        let service = self.service_file();
        let text = std::fs::read_to_string(&service)
            .unwrap()
            .replace("\"127.0.0.1:0\"", &format!("\"{address}\""));
        std::fs::write(&service, text).unwrap();
    }

    /// `serve` run to its end, as when it refuses to start: its exit code and output.
    pub(crate) fn serve_output(&self) -> std::process::Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.service_file())
            .arg("serve")
            .env_remove("OPTER_VISMA_SYNC_CONFIG")
            .output()
            .unwrap()
    }

    /// A sandbox of its own with `customers`, and the tenant's config written to a
    /// staging file (`tenant_file` puts it in the folder).
    pub(crate) async fn tenant(
        &mut self,
        id: &str,
        kind: &'static Register,
        options: SandboxOptions,
        extra_sink: &str,
        schedule: &str,
    ) -> Tenant {
        let unlimited = SandboxOptions {
            eaccounting_rate_limit_per_minute: 0,
            visma_net_rate_limit_per_hour: 0,
            economic_rate_limit_per_minute: 0,
            ..options
        };
        self.tenant_limited(id, kind, unlimited, extra_sink, schedule)
            .await
    }

    /// Like `tenant`, with the register's rate limits as `options` gives them.
    async fn tenant_limited(
        &mut self,
        id: &str,
        kind: &'static Register,
        options: SandboxOptions,
        extra_sink: &str,
        schedule: &str,
    ) -> Tenant {
        let sandbox = Sandbox::start(options).await.unwrap();
        let home = self.dir.path().join("homes").join(id);
        let staged = home.join("sync.toml");
        let env = write_sandbox_config_for(&staged, &sandbox, kind, 0).unwrap();
        let text = std::fs::read_to_string(&staged).unwrap();
        let mapping = format!("{}-mapping.toml", kind.name);
        let text = text
            .replace(
                &format!("mapping = \"{mapping}\""),
                &format!("mapping = \"{}\"", home.join(&mapping).display()),
            )
            .replace(
                "path = \"journal\"",
                &format!("path = \"{}\"", home.join("journal").display()),
            )
            .replace("[journal]", &format!("{extra_sink}\n[journal]"));
        let text = format!("{text}\n[schedule]\n{schedule}\n");
        std::fs::write(&staged, &text).unwrap();
        self.env.extend(env.clone());
        Tenant {
            id: id.to_string(),
            kind,
            sandbox,
            file: staged,
            env,
        }
    }

    /// Puts the tenant's config in the tenants folder.
    pub(crate) fn add(&self, tenant: &Tenant) -> PathBuf {
        let file = self.tenant_file(&tenant.id);
        std::fs::copy(&tenant.file, &file).unwrap();
        file
    }

    pub(crate) fn tenant_file(&self, id: &str) -> PathBuf {
        self.dir.path().join("tenants").join(format!("{id}.toml"))
    }

    pub(crate) fn start(&self) -> Serve {
        Serve::start(&self.service_file(), &self.env, self.dir.path())
    }
}

impl Tenant {
    /// The register's customer numbers, whatever the product's shape.
    pub(crate) fn numbers(&self) -> Vec<String> {
        let key = match self.kind.name {
            "eaccounting" => "CustomerNumber",
            "visma-net" => "number",
            _ => "customerNumber",
        };
        (simulator(self.kind).customers)(&self.sandbox)
            .iter()
            .map(|c| match &c[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// The binary with this tenant's config (in the folder) and secrets.
    pub(crate) fn cli(&self, folder: &Folder, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(folder.tenant_file(&self.id))
            .args(args)
            .envs(&self.env)
            .env_remove("OPTER_VISMA_SYNC_CONFIG");
        cmd
    }
}

/// A running `serve`.
pub(crate) struct Serve {
    child: Child,
    pub(crate) base: String,
    log: PathBuf,
    pub(crate) client: reqwest::Client,
    started: DateTime<Utc>,
}

impl Serve {
    fn start(service: &Path, env: &HashMap<String, String>, dir: &Path) -> Serve {
        Serve::start_with(service, env, dir, &[])
    }

    /// With `args` after the command.
    fn start_with(
        service: &Path,
        env: &HashMap<String, String>,
        dir: &Path,
        args: &[&str],
    ) -> Serve {
        let log = dir.join(format!("serve-{}.log", Utc::now().timestamp_micros()));
        let started = Utc::now();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(service)
            .arg("serve")
            .args(args)
            .envs(env)
            .env("RUST_LOG", "opter_visma_sync=info")
            .env_remove("OPTER_VISMA_SYNC_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("serve printed no address: {}", read(&log)));
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Serve {
            child,
            base,
            log,
            client: reqwest::Client::new(),
            started,
        }
    }

    pub(crate) fn log(&self) -> String {
        read(&self.log)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let reply = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (reply.status().as_u16(), reply.text().await.unwrap())
    }

    pub(crate) async fn post(&self, path: &str) -> (u16, Value) {
        let reply = self
            .client
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn tenants(&self) -> Vec<Value> {
        let (status, body) = self.get("/tenants").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) async fn tenant(&self, id: &str) -> Value {
        self.tenants()
            .await
            .into_iter()
            .find(|t| t["tenant"] == id)
            .unwrap_or(Value::Null)
    }

    pub(crate) fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the process to exit, at most `secs`.
    fn exit_within(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {secs} s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `check` until it gives a value, failing after `secs`.
pub(crate) async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A metric's value, by its name and labels as printed.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn runs_metric(tenant: &Tenant, outcome: &str) -> String {
    format!(
        "opter_visma_sync_runs_total{{tenant=\"{}\",register=\"{}\",outcome=\"{outcome}\"}}",
        tenant.id, tenant.kind.name
    )
}

pub(crate) fn customers(n: usize) -> SandboxOptions {
    SandboxOptions {
        customers: bundled_customers()[..n].to_vec(),
        ..SandboxOptions::default()
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .with_timezone(&Utc)
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_three_tenants_reports_them_and_lets_the_cli_purge_meanwhile() {
    let mut folder = Folder::new("rescan_secs = 1");
    let every = "every = \"1s\"\njitter = \"0s\"";
    let mut tenants = Vec::new();
    for (id, kind) in [
        ("alpha", &eaccounting::REGISTER),
        ("beta", &visma_net::REGISTER),
        ("gamma", &economic::REGISTER),
    ] {
        let t = folder.tenant(id, kind, customers(6), "", every).await;
        folder.add(&t);
        tenants.push(t);
    }
    let serve = folder.start();
    for t in &tenants {
        until(
            &format!("{}'s register to hold 6 customers", t.id),
            60,
            || async { (t.numbers().len() == 6).then_some(()) },
        )
        .await;
    }
    let (status, body) = until("/readyz", 30, || async {
        let (status, body) = serve.get("/readyz").await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, health) = serve.get("/healthz").await;
    assert_eq!(status, 200, "{health}");

    // Every tenant has runs in the metrics, its customers counted by outcome.
    let text = until("two runs of each tenant in /metrics", 30, || async {
        let (_, text) = serve.get("/metrics").await;
        tenants
            .iter()
            .all(|t| metric(&text, &runs_metric(t, "succeeded")).is_some_and(|n| n >= 2.0))
            .then_some(text)
    })
    .await;
    for t in &tenants {
        let created = format!(
            "opter_visma_sync_customers_total{{tenant=\"{}\",register=\"{}\",outcome=\"created\"}}",
            t.id, t.kind.name
        );
        assert_eq!(metric(&text, &created), Some(6.0), "{text}");
        let next = format!(
            "opter_visma_sync_next_run_timestamp_seconds{{tenant=\"{}\",register=\"{}\"}}",
            t.id, t.kind.name
        );
        assert!(metric(&text, &next).is_some_and(|n| n > 0.0), "{text}");
        let login = format!(
            "opter_visma_sync_needs_login{{tenant=\"{}\",register=\"{}\"}}",
            t.id, t.kind.name
        );
        assert_eq!(metric(&text, &login), Some(0.0), "{text}");
        // Six creates at least; tokens from the token endpoint where the register
        // has one (e-conomic takes fixed headers).
        let series = |name: &str| {
            format!(
                "opter_visma_sync_{name}_total{{tenant=\"{}\",register=\"{}\"}}",
                t.id, t.kind.name
            )
        };
        let requests = metric(&text, &series("register_requests"));
        assert!(requests.is_some_and(|n| n >= 6.0), "{text}");
        assert_eq!(metric(&text, &series("register_throttled")), Some(0.0));
        let tokens = metric(&text, &series("token_refreshes")).unwrap();
        match t.kind.name {
            "economic" => assert_eq!(tokens, 0.0, "{text}"),
            _ => assert!(tokens >= 1.0, "{text}"),
        }
    }

    // GET /tenants names no customer.
    let listing = serve.get("/tenants").await.1;
    for c in &bundled_customers()[..6] {
        assert!(!listing.contains(c["name"].as_str().unwrap()), "{listing}");
        assert!(
            !listing.contains(c["customerCode"].as_str().unwrap()),
            "{listing}"
        );
    }
    let beta = serve.tenant("beta").await;
    assert_eq!(beta["register"], "visma-net");
    assert_eq!(beta["last_run"]["outcome"], "succeeded", "{beta}");

    // A support command on a tenant while serve keeps running it every second
    // (eAccounting's erasure deletes the customer).
    let beta = &tenants[0];
    let code = bundled_customers()[2]["customerCode"]
        .as_str()
        .unwrap()
        .to_string();
    let begun = Instant::now();
    let out = beta
        .cli(
            &folder,
            &[
                "purge",
                "--customer",
                &code,
                "--reason",
                "ticket 1",
                "--yes",
                "--json",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "purge: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.log()
    );
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(beta.numbers().len(), 5, "deleted in the register");
    // Runs go on after it, and the purged customer stays away.
    let runs = serve.tenant("alpha").await["runs"].as_u64().unwrap();
    until("a run of alpha after the purge", 30, || async {
        let t = serve.tenant("alpha").await;
        (t["runs"].as_u64().unwrap() >= runs + 2 && t["last_run"]["outcome"] == "succeeded")
            .then_some(())
    })
    .await;
    assert_eq!(beta.numbers().len(), 5, "not created again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tenant_backs_off_and_recovers_and_a_login_needed_pauses_without_holding_others()
{
    let mut folder =
        Folder::new("workers = 1\nbackoff_secs = 1\nmax_backoff_secs = 4\nrescan_secs = 1");
    let every = "every = \"1s\"\njitter = \"0s\"";
    let good = folder
        .tenant("good", &visma_net::REGISTER, customers(3), "", every)
        .await;
    folder.add(&good);
    // Its sandbox is stopped after the config is written, and comes back later.
    let port = closed_port();
    let down = folder
        .tenant(
            "down",
            &visma_net::REGISTER,
            SandboxOptions {
                port,
                ..customers(4)
            },
            "retry_budget_secs = 1",
            every,
        )
        .await;
    folder.add(&down);
    let Tenant { sandbox, .. } = down;
    sandbox.shutdown().await;
    let login = folder
        .tenant("login", &eaccounting::REGISTER, customers(2), "", every)
        .await;
    folder.add(&login);
    folder
        .env
        .insert("VISMA_REFRESH_TOKEN".into(), "not-a-grant".into());
    let serve = folder.start();

    let down_state = until("three failed runs of down", 60, || async {
        let t = serve.tenant("down").await;
        (t["failures"].as_u64() >= Some(3)).then_some(t)
    })
    .await;
    assert_eq!(down_state["last_run"]["outcome"], "failed", "{down_state}");
    // Backing off: the wait after n failures is 1, 2, 4 s (capped at 4), not `every`.
    let failures = down_state["failures"].as_u64().unwrap() as u32;
    let wait = 2i64.pow(failures - 1).min(4);
    let gap = time(&down_state["next_run"]) - time(&down_state["last_run"]["finished"]);
    assert!(
        gap >= chrono::TimeDelta::milliseconds(wait * 1000 - 50),
        "{gap} after {failures} failures: {down_state}"
    );
    let login_state = until("login to pause", 30, || async {
        let t = serve.tenant("login").await;
        (t["state"] == "paused").then_some(t)
    })
    .await;
    assert_eq!(
        login_state["paused"]["reason"], "needs-login",
        "{login_state}"
    );
    assert_eq!(login_state["next_run"], Value::Null);
    let (_, text) = serve.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "opter_visma_sync_needs_login{tenant=\"login\",register=\"eaccounting\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let (status, body) = serve.post("/tenants/login/run").await;
    assert_eq!(status, 409, "a paused tenant is resumed, not run: {body}");

    // One worker, and still the good tenant runs on every second.
    let good_runs = until("the good tenant to keep running", 30, || async {
        let t = serve.tenant("good").await;
        (t["runs"].as_u64() >= Some(4)).then_some(t)
    })
    .await;
    assert_eq!(good_runs["last_run"]["outcome"], "succeeded", "{good_runs}");
    assert_eq!(good.numbers().len(), 3);
    let (_, text) = serve.get("/metrics").await;
    let failed = metric(&text, &runs_metric(&good, "failed")).unwrap_or(0.0);
    assert_eq!(failed, 0.0, "{text}");

    // Opter and the register come back: the failing tenant recovers by itself.
    let back = Sandbox::start(SandboxOptions {
        port,
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..customers(4)
    })
    .await
    .unwrap();
    until("down to recover", 30, || async {
        let t = serve.tenant("down").await;
        (t["last_run"]["outcome"] == "succeeded" && t["failures"] == 0).then_some(())
    })
    .await;
    assert_eq!(back.visma_net_customers().len(), 4);

    // A resume request runs the paused tenant again (still no login: paused again).
    let paused_runs = serve.tenant("login").await["runs"].as_u64().unwrap();
    let (status, body) = serve.post("/tenants/login/resume").await;
    assert_eq!(status, 202, "{body}");
    let paused_runs = until("login to run and pause again", 30, || async {
        let t = serve.tenant("login").await;
        let runs = t["runs"].as_u64().unwrap();
        (runs > paused_runs && t["state"] == "paused").then_some(runs)
    })
    .await;
    // So does a change to its config file.
    let file = folder.tenant_file("login");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}# login renewed\n")).unwrap();
    until("login to run after its file changed", 30, || async {
        let t = serve.tenant("login").await;
        (t["runs"].as_u64().unwrap() > paused_runs && t["state"] == "paused").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_0_in_bounded_time_and_a_restart_writes_nothing_twice() {
    let mut folder = Folder::new("shutdown_grace_secs = 1");
    let t = folder
        .tenant(
            "slow",
            &visma_net::REGISTER,
            SandboxOptions {
                faults: Faults {
                    latency_ms: 60,
                    ..Faults::default()
                },
                ..customers(150)
            },
            "",
            "every = \"1h\"\njitter = \"0s\"",
        )
        .await;
    folder.add(&t);
    let mut serve = folder.start();
    until("the first creates", 60, || async {
        (t.numbers().len() >= 8).then_some(())
    })
    .await;
    let begun = Instant::now();
    serve.signal(libc::SIGTERM);
    let status = serve.exit_within(15);
    assert_eq!(status.code(), Some(0), "{}", serve.log());
    assert!(
        begun.elapsed() < Duration::from_secs(8),
        "grace 1 s: {:?}",
        begun.elapsed()
    );
    let written = t.numbers().len();
    assert!(written < 150, "stopped mid-run: {written}");

    t.sandbox.set_faults(Faults::default());
    let serve = folder.start();
    until("the restarted run to finish", 60, || async {
        let s = serve.tenant("slow").await;
        (s["last_run"]["outcome"] == "succeeded").then_some(())
    })
    .await;
    let mut numbers = t.numbers();
    numbers.sort();
    let total = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), total, "a customer created twice");
    assert_eq!(total, 150);
    drop(serve);
    let out = t.cli(&folder, &["journal", "verify"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_run_under_way_finish_and_commit_within_the_grace() {
    let mut folder = Folder::new("shutdown_grace_secs = 30");
    let t = folder
        .tenant(
            "steady",
            &visma_net::REGISTER,
            SandboxOptions {
                faults: Faults {
                    latency_ms: 40,
                    ..Faults::default()
                },
                ..customers(60)
            },
            "",
            "every = \"1h\"\njitter = \"0s\"",
        )
        .await;
    folder.add(&t);
    let mut serve = folder.start();
    until("the first creates", 60, || async {
        (!t.numbers().is_empty()).then_some(())
    })
    .await;
    serve.signal(libc::SIGTERM);
    let status = serve.exit_within(30);
    assert_eq!(status.code(), Some(0), "{}", serve.log());
    assert_eq!(t.numbers().len(), 60, "the run went on to its end");
    let out = t
        .cli(&folder, &["journal", "runs", "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "no new run started after SIGTERM: {runs:?}");
    assert!(runs[0]["finished"].is_string(), "committed: {runs:?}");
    assert_eq!(runs[0]["counts"]["created"], 60, "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_missed_while_the_service_was_down_is_made_once() {
    let mut folder = Folder::new("");
    let t = folder
        .tenant(
            "missed",
            &visma_net::REGISTER,
            customers(3),
            "",
            "every = \"2s\"\njitter = \"0s\"",
        )
        .await;
    folder.add(&t);
    let out = t.cli(&folder, &["sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The service is down for more than two runs' time.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let serve = folder.start();
    let state = until("the catch-up run", 60, || async {
        let s = serve.tenant("missed").await;
        (s["runs"] == 1 && s["state"] == "idle").then_some(s)
    })
    .await;
    let started = time(&state["last_run"]["started"]);
    assert!(
        started - serve.started < chrono::TimeDelta::seconds(5),
        "at once, not a whole interval later: {state}"
    );
    // One run made up for all that were missed: the next is a whole interval after it.
    assert_eq!(
        time(&state["next_run"]) - started,
        chrono::TimeDelta::seconds(2),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_queues_exactly_one_run() {
    let mut folder = Folder::new("");
    let t = folder
        .tenant(
            "busy",
            &visma_net::REGISTER,
            SandboxOptions {
                faults: Faults {
                    latency_ms: 60,
                    ..Faults::default()
                },
                ..customers(80)
            },
            "",
            "every = \"1h\"\njitter = \"0s\"",
        )
        .await;
    folder.add(&t);
    let serve = folder.start();
    until("the first run to be under way", 60, || async {
        (serve.tenant("busy").await["state"] == "running").then_some(())
    })
    .await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(serve.post("/tenants/busy/run").await);
    }
    for (status, body) in &replies {
        assert_eq!(*status, 202, "{body}");
    }
    assert_eq!(replies[0].1["already_queued"], false, "{replies:?}");
    assert_eq!(replies[1].1["already_queued"], true, "{replies:?}");
    assert_eq!(replies[2].1["already_queued"], true, "{replies:?}");
    let state = until("the queued run to end", 60, || async {
        let s = serve.tenant("busy").await;
        (s["runs"].as_u64() >= Some(2) && s["state"] == "idle").then_some(s)
    })
    .await;
    assert_eq!(state["runs"], 2, "{state}");
    assert_eq!(state["run_requested"], false, "{state}");
    assert!(
        time(&state["next_run"]) - time(&state["last_run"]["started"])
            >= chrono::TimeDelta::minutes(59),
        "{state}"
    );
    assert_eq!(serve.post("/tenants/nobody/run").await.0, 404);
    assert_eq!(serve.post("/tenants/bad.id/run").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_files_added_changed_or_removed_are_picked_up_on_sighup() {
    // No rescan for an hour: only SIGHUP reads the folder again.
    let mut folder = Folder::new("rescan_secs = 3600");
    let t = folder
        .tenant(
            "late",
            &visma_net::REGISTER,
            customers(3),
            "",
            "every = \"1s\"\njitter = \"0s\"",
        )
        .await;
    let serve = folder.start();
    let (status, body) = until("/readyz with no tenants", 30, || async {
        let (status, body) = serve.get("/readyz").await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert!(body.contains("\"tenants\":0"), "{status} {body}");
    assert_eq!(serve.post("/tenants/late/run").await.0, 404);

    let file = folder.add(&t);
    serve.signal(libc::SIGHUP);
    until("the added tenant's customers", 60, || async {
        (t.numbers().len() == 3).then_some(())
    })
    .await;

    // A config made invalid shows as such, naming the key, and stops its runs.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("every = \"1s\"", "every = \"0s\"")).unwrap();
    serve.signal(libc::SIGHUP);
    let state = until("the tenant to be invalid", 30, || async {
        let s = serve.tenant("late").await;
        (s["state"] == "invalid").then_some(s)
    })
    .await;
    let error = state["error"].as_str().unwrap();
    assert!(
        error.contains("[schedule] every") && error.contains("late.toml"),
        "{error}"
    );
    assert_eq!(serve.get("/readyz").await.0, 503);

    std::fs::remove_file(&file).unwrap();
    serve.signal(libc::SIGHUP);
    until("the tenant to be gone", 30, || async {
        serve.tenants().await.is_empty().then_some(())
    })
    .await;
    let (_, text) = serve.get("/metrics").await;
    assert!(!text.contains("tenant=\"late\""), "{text}");
}

#[test]
fn a_bad_service_file_is_refused_with_exit_2_naming_file_and_key() {
    let folder = Folder::new("workers = 0");
    let out = folder.serve_output();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("service.toml") && stderr.contains("[service] workers"),
        "{stderr}"
    );
    std::fs::write(
        folder.service_file(),
        "[service]\ntenants = \"tenants\"\nlisten = \"LEAK-secret\"\n",
    )
    .unwrap();
    let out = folder.serve_output();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[service] listen"), "{stderr}");
    assert!(!stderr.contains("LEAK"), "{stderr}");
}

/// A webhook receiver: answers 503 to the first request (so the alert must be
/// retried), then 200, keeping what it accepted.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::http::StatusCode;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook/secret-path",
        axum::routing::post({
            let accepted = accepted.clone();
            move |axum::Json(body): axum::Json<Value>| async move {
                if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                accepted.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/secret-path", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, accepted)
}

/// An SMTP server that takes every message (RFC 5321's happy path, no TLS), keeping
/// each message's data.
async fn smtp_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let kept = messages.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 localhost ESMTP test\r\n").await?;
                while let Some(line) = lines.next_line().await? {
                    let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 localhost\r\n",
                        "DATA" => {
                            write.write_all(b"354 go ahead\r\n").await?;
                            let mut data = String::new();
                            while let Some(line) = lines.next_line().await? {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            kept.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await?;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, messages)
}

/// The values of `keys` in the first `n` bundled customers.
fn values_of(n: usize, keys: &[&str]) -> Vec<String> {
    fn walk(value: &Value, keys: &[&str], out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        Value::String(s) if keys.contains(&key.as_str()) => out.push(s.clone()),
                        _ => walk(value, keys, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, keys, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    bundled_customers()[..n]
        .iter()
        .for_each(|c| walk(c, keys, &mut out));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_going_down_and_coming_back_is_alerted_once_each_way_on_every_channel() {
    let (hook, accepted) = webhook_receiver().await;
    let (smtp, mails) = smtp_server().await;
    let mut folder = Folder::new(&format!(
        "backoff_secs = 1\nmax_backoff_secs = 1\n\n[alerts]\n\
         [[alerts.webhook]]\nurl_env = \"ALERT_HOOK\"\nformat = \"json\"\n\
         [[alerts.email]]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\n\
         from = \"sync@carrier.example\"\nto = [\"ops@carrier.example\"]\n"
    ));
    folder.env.insert("ALERT_HOOK".into(), hook.clone());
    let every = "every = \"1s\"\njitter = \"0s\"";
    let port = closed_port();
    let tenant = folder
        .tenant(
            "flaky",
            &visma_net::REGISTER,
            SandboxOptions {
                port,
                ..customers(3)
            },
            "retry_budget_secs = 1",
            every,
        )
        .await;
    folder.add(&tenant);
    let Tenant { sandbox, .. } = tenant;
    let mut serve = folder.start();
    until("a first good run", 60, || async {
        let t = serve.tenant("flaky").await;
        (t["last_run"]["outcome"] == "succeeded").then_some(())
    })
    .await;
    sandbox.shutdown().await;
    // Several failed runs: the change is told once, not once per run.
    until("three failed runs", 60, || async {
        let t = serve.tenant("flaky").await;
        (t["failures"].as_u64() >= Some(3)).then_some(())
    })
    .await;
    let back = Sandbox::start(SandboxOptions {
        port,
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..customers(3)
    })
    .await
    .unwrap();
    let runs = until("a good run after it came back", 60, || async {
        let t = serve.tenant("flaky").await;
        (t["last_run"]["outcome"] == "succeeded" && t["failures"] == 0)
            .then(|| t["runs"].as_u64().unwrap())
    })
    .await;
    until("two more good runs", 30, || async {
        let t = serve.tenant("flaky").await;
        (t["runs"].as_u64().unwrap() >= runs + 2).then_some(())
    })
    .await;
    // The webhook's first answer was a 503: the down alert is retried, and both are
    // delivered before SIGTERM's exit.
    until("both alerts on the webhook", 30, || async {
        (accepted.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    serve.signal(libc::SIGTERM);
    assert!(serve.exit_within(30).success(), "{}", serve.log());
    drop(back);

    let hooks = accepted.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    let (down, up) = (&hooks[0], &hooks[1]);
    assert_eq!(down["tenant"], "flaky");
    assert_eq!(down["register"], "visma-net");
    assert_eq!(down["state"], "unreachable", "{down}");
    assert_eq!(down["recovered"], false, "{down}");
    assert_eq!(up["state"], "ok", "{up}");
    assert_eq!(up["previous"], down["state"], "{up}");
    assert_eq!(up["recovered"], true, "{up}");
    assert!(
        up["text"].as_str().unwrap().contains("syncing again"),
        "{up}"
    );

    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(
        mails[0].contains("Subject: opter-visma-sync: tenant flaky (visma-net)")
            && !mails[0].contains("recovered"),
        "{}",
        mails[0]
    );
    assert!(mails[1].contains("recovered"), "{}", mails[1]);

    // Alerts name no customer at all; the log names them by code at most.
    let alerts = format!("{hooks:?}{mails:?}");
    let told = format!("{alerts}{}", serve.log());
    for value in values_of(
        3,
        &["name", "email", "phone", "street", "corporateIdNumber"],
    ) {
        assert!(!told.contains(&value), "a personal value was told: {value}");
    }
    for code in values_of(3, &["customerCode"]) {
        assert!(!alerts.contains(&code), "an alert names customer {code}");
    }
    assert!(!told.contains("secret-path"), "the webhook URL was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_the_tenants_folder_as_shard_of_says() {
    let folder = Folder::new("");
    let ids: Vec<String> = (0..8).map(|n| format!("carrier-{n}")).collect();
    for id in &ids {
        // Configs that do not load still show in /tenants: enough to see who has them.
        std::fs::write(folder.tenant_file(id), "[source]\n").unwrap();
    }
    let shard_of = |id: &str| -> u64 {
        let out = Command::new(BIN)
            .args(["shard-of", id, "--count", "2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let serve_shard = |index: u64| {
        let log = folder.dir.path().join(format!("shard-{index}.log"));
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(folder.service_file())
            .args(["serve", "--shard", &format!("{index}/2")])
            .env_remove("OPTER_VISMA_SYNC_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains(&format!("shard {index} of 0..1")), "{line}");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap()
            .to_string();
        Serve {
            child,
            base,
            log,
            client: reqwest::Client::new(),
            started: Utc::now(),
        }
    };
    let shards = [serve_shard(0), serve_shard(1)];
    let mut seen = Vec::new();
    for (index, serve) in shards.iter().enumerate() {
        let expected: Vec<String> = ids
            .iter()
            .filter(|id| shard_of(id) == index as u64)
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "these ids fall in both shards");
        // The address is printed before the folder's first scan ends.
        let held: Vec<String> = until("the first scan", 10, || async {
            let held: Vec<String> = serve
                .tenants()
                .await
                .iter()
                .map(|t| t["tenant"].as_str().unwrap().to_string())
                .collect();
            (held.len() >= expected.len()).then_some(held)
        })
        .await;
        assert_eq!(held, expected, "shard {index}");
        seen.extend(held);
    }
    seen.sort();
    assert_eq!(seen, ids, "every tenant in exactly one shard");

    let out = Command::new(BIN)
        .arg("--config")
        .arg(folder.service_file())
        .args(["serve", "--shard", "2/2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shard"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_and_a_run_s_lines_name_its_tenant() {
    let mut folder = Folder::new("");
    let every = "every = \"1s\"\njitter = \"0s\"";
    let tenant = folder
        .tenant("nordfrakt", &economic::REGISTER, customers(2), "", every)
        .await;
    folder.add(&tenant);
    let mut serve = Serve::start_with(
        &folder.service_file(),
        &folder.env,
        folder.dir.path(),
        &["--log-format", "json"],
    );
    until("two runs", 60, || async {
        let t = serve.tenant("nordfrakt").await;
        (t["runs"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    serve.signal(libc::SIGTERM);
    assert!(serve.exit_within(30).success(), "{}", serve.log());
    let log = serve.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"))
        })
        .collect();
    let done: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "run done")
        .collect();
    assert!(done.len() >= 2, "{log}");
    for line in &done {
        assert_eq!(line["span"]["tenant"], "nordfrakt", "{line}");
        assert_eq!(line["outcome"], "succeeded", "{line}");
        assert!(
            line["timestamp"].is_string() && line["level"] == "INFO",
            "{line}"
        );
    }
    for value in values_of(
        2,
        &["name", "email", "phone", "street", "corporateIdNumber"],
    ) {
        assert!(
            !log.contains(&value),
            "a personal value was logged: {value}"
        );
    }
}

/// The register holds exactly one customer per Opter customer, with Opter's current
/// name; the tenant's journal has no open intent and one create-or-adopt per customer.
fn assert_tenant_converged(folder: &Folder, tenant: &Tenant) {
    use opter_visma_sync::journal::{Journal, Operation, Outcome};
    let (number_key, name_key) = match tenant.kind.name {
        "eaccounting" => ("CustomerNumber", "Name"),
        "visma-net" => ("number", "name"),
        _ => ("customerNumber", "name"),
    };
    let opter_number = match tenant.kind.name {
        "economic" => "customerNumber",
        _ => "customerCode",
    };
    let opter_customers = tenant.sandbox.opter_customers();
    let opter: std::collections::BTreeMap<String, String> = opter_customers
        .iter()
        .map(|c| {
            (
                c[opter_number].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for c in (simulator(tenant.kind).customers)(&tenant.sandbox) {
        let number = match &c[number_key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert!(
            seen.insert(number.clone()),
            "{}: customer {number} exists twice in the register",
            tenant.id
        );
        assert_eq!(
            c[name_key].as_str(),
            opter.get(&number).map(String::as_str),
            "{}: {number} is stale",
            tenant.id
        );
    }
    assert_eq!(
        seen,
        opter.keys().cloned().collect(),
        "{}: lost or extra customers",
        tenant.id
    );
    let journal = Journal::open(
        &folder
            .dir
            .path()
            .join("homes")
            .join(&tenant.id)
            .join("journal"),
    )
    .unwrap();
    assert_eq!(
        journal.pending_intents(tenant.kind.name).unwrap(),
        vec![],
        "{}: open intents",
        tenant.id
    );
    for code in opter_customers
        .iter()
        .map(|c| c["customerCode"].as_str().unwrap())
    {
        let arrivals = journal
            .events(Some(code), None)
            .unwrap()
            .iter()
            .filter(|e| e.outcome == Outcome::Succeeded)
            .filter(|e| matches!(e.operation, Operation::Create | Operation::Adopt))
            .count();
        assert_eq!(
            arrivals, 1,
            "{}: {code} arrived {arrivals} times",
            tenant.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_at_random_moments_over_three_tenants_loses_and_duplicates_nothing() {
    use opter_visma_sync::sandbox::generate::generate_customers;
    use rand::{Rng, SeedableRng};
    let seed = 20261204u64;
    let mut folder =
        Folder::new("workers = 3\nbackoff_secs = 1\nmax_backoff_secs = 2\nrescan_secs = 1");
    let every = "every = \"1s\"\njitter = \"0s\"";
    let mut tenants = Vec::new();
    for (i, (id, kind)) in [
        ("north", &visma_net::REGISTER),
        ("south", &economic::REGISTER),
        ("west", &visma_net::REGISTER),
    ]
    .into_iter()
    .enumerate()
    {
        // e-conomic rejects customers without a sales ledger number: left out.
        let customers: Vec<Value> = generate_customers(150, seed + i as u64)
            .into_iter()
            .filter(|c| kind != &economic::REGISTER || c["customerNumber"].is_string())
            .collect();
        let options = SandboxOptions {
            customers,
            ..SandboxOptions::default()
        };
        let tenant = folder.tenant(id, kind, options, "", every).await;
        // Latency keeps runs long enough for kills to land mid-write.
        tenant.sandbox.set_faults(Faults {
            seed: seed + i as u64,
            latency_ms: 4,
            drop_after_commit_rate: 0.02,
            ..Faults::default()
        });
        folder.add(&tenant);
        tenants.push(tenant);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut kills = 0;
    while kills < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{kills} kills so far"
        );
        // Work keeps coming: a few customers change in each Opter before each start.
        for tenant in &tenants {
            let customers = tenant.sandbox.opter_customers();
            for _ in 0..5 {
                let mut c = customers[rng.gen_range(0..customers.len())].clone();
                let code = c["customerCode"].as_str().unwrap().to_string();
                c["name"] = format!("Kund {code} v{kills}").into();
                c["updated"] = Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into();
                client
                    .put(format!(
                        "{}/_sandbox/opter/customers/{code}",
                        tenant.sandbox.base_url()
                    ))
                    .json(&c)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
            }
        }
        let mut serve = folder.start();
        until("a run under way", 30, || async {
            let running = serve
                .tenants()
                .await
                .iter()
                .any(|t| t["state"] == "running");
            running.then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        serve.child.kill().unwrap(); // SIGKILL: no cleanup, no flush
        serve.child.wait().unwrap();
        kills += 1;
    }
    // Started once more, each tenant settles what the kills left open.
    let mut serve = folder.start();
    for tenant in &tenants {
        until("a clean run of each tenant", 120, || async {
            let t = serve.tenant(&tenant.id).await;
            let clean = t["last_run"]["outcome"] == "succeeded"
                && time(&t["last_run"]["started"]) > serve.started;
            clean.then_some(())
        })
        .await;
    }
    serve.signal(libc::SIGTERM);
    assert!(serve.exit_within(30).success(), "{}", serve.log());
    for tenant in &tenants {
        assert_tenant_converged(&folder, tenant);
    }
    eprintln!(
        "{kills} kills of serve over 3 tenants in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_requests_and_retry_waits_are_counted_per_tenant() {
    let mut folder = Folder::new("");
    let every = "every = \"1s\"\njitter = \"0s\"";
    let tenant = folder
        .tenant_limited("busy", &visma_net::REGISTER, customers(6), "", every)
        .await;
    tenant.sandbox.set_faults(Faults {
        seed: 7,
        fail_rate: 0.4,
        statuses: vec![429],
        retry_after_secs: 0,
        ..Faults::default()
    });
    folder.add(&tenant);
    let serve = folder.start();
    let series = |name: &str| {
        format!("opter_visma_sync_{name}_total{{tenant=\"busy\",register=\"visma-net\"}}")
    };
    let text = until("a 429 counted", 60, || async {
        let (_, text) = serve.get("/metrics").await;
        metric(&text, &series("register_throttled"))
            .is_some_and(|n| n >= 1.0)
            .then_some(text)
    })
    .await;
    let requests = metric(&text, &series("register_requests")).unwrap();
    let throttled = metric(&text, &series("register_throttled")).unwrap();
    assert!(requests > throttled, "{text}");
    let waited = metric(
        &text,
        "opter_visma_sync_retry_wait_seconds_total{tenant=\"busy\",register=\"visma-net\"}",
    );
    assert!(waited.is_some_and(|s| s > 0.0), "{text}");
    // Visma.net says what is left of its allowance; the run used some of it.
    let gauge = |name: &str| {
        metric(
            &text,
            &format!("opter_visma_sync_{name}{{tenant=\"busy\",register=\"visma-net\"}}"),
        )
    };
    let headroom = gauge("rate_limit_headroom_ratio").unwrap_or_else(|| panic!("{text}"));
    assert!(headroom > 0.0 && headroom < 1.0, "{headroom}: {text}");
    // Six creates at least, each an event, in a database of some size.
    assert!(gauge("journal_events").is_some_and(|n| n >= 6.0), "{text}");
    assert!(gauge("journal_bytes").is_some_and(|n| n > 0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_tenants_writes_a_folder_that_serve_runs_as_a_user_would() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("service");
    let mut sandbox = Command::new(BIN)
        .arg("sandbox")
        .args(["--tenants", "3", "--customers", "12", "--rate-limit", "0"])
        .args(["--every", "1s", "--write-config"])
        .arg(&folder)
        .env_remove("OPTER_VISMA_SYNC_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = sandbox.stdout.take().unwrap();
    let sandbox = Killed(sandbox);
    let mut env = HashMap::new();
    let mut then = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(export) = line.strip_prefix("export ") {
            let (name, value) = export.split_once('=').unwrap();
            env.insert(name.to_string(), value.to_string());
        } else if let Some(command) = line.strip_prefix("# then: ") {
            then = Some(command.to_string());
            break;
        }
    }
    let then = then.expect("the sandbox says what to run");
    assert!(then.contains("serve"), "{then}");
    // Each tenant's secrets by its own names, so one process can hold them all.
    for id in ["CARRIER_1", "CARRIER_2", "CARRIER_3"] {
        assert!(
            env.keys().any(|k| k.starts_with(&format!("{id}_"))),
            "{env:?}"
        );
    }
    // On a free port rather than 8787, which another test run may hold.
    let service = folder.join("service.toml");
    let text = std::fs::read_to_string(&service).unwrap();
    std::fs::write(&service, text.replace("127.0.0.1:8787", "127.0.0.1:0")).unwrap();
    let serve = Serve::start(&service, &env, dir.path());
    let tenants = until("each tenant to sync", 60, || async {
        let tenants = serve.tenants().await;
        let synced = tenants.len() == 3
            && tenants
                .iter()
                .all(|t| t["last_run"]["counts"]["created"].as_u64() >= Some(1));
        synced.then_some(tenants)
    })
    .await;
    let registers: Vec<&str> = tenants
        .iter()
        .map(|t| t["register"].as_str().unwrap())
        .collect();
    assert_eq!(registers, ["eaccounting", "visma-net", "economic"]);
    let mut origins = Vec::new();
    for id in ["carrier-1", "carrier-2", "carrier-3"] {
        assert!(
            folder.join("homes").join(id).join("journal").is_dir(),
            "{id} has its own journal"
        );
        // One port, each tenant under its own path.
        let config = read(&folder.join("tenants").join(format!("{id}.toml")));
        let base = config
            .lines()
            .find_map(|l| l.strip_prefix("base_url = \""))
            .unwrap_or_else(|| panic!("{config}"));
        let (origin, path) = base["http://".len()..].split_once('/').unwrap();
        assert!(path.starts_with(&format!("{id}/")), "{base}");
        origins.push(origin.to_string());
    }
    assert!(origins.windows(2).all(|w| w[0] == w[1]), "{origins:?}");
    drop(sandbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_shows_three_tenants_syncing_one_with_faults() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let mut child = Command::new(BIN)
        .args(["demo", "--serve", "--dir"])
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "opter_visma_sync=info")
        .env_remove("OPTER_VISMA_SYNC_CONFIG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}: {}", read(&log)))
        .to_string();
    let mut serve = Serve {
        child,
        base,
        log,
        client: reqwest::Client::new(),
        started: Utc::now(),
    };
    let said = serve.log();
    assert!(
        said.contains("/metrics") && said.contains("/tenants"),
        "{said}"
    );
    // The two healthy tenants finish their first runs; the faulty one's register
    // is seen failing and retried, under its own tenant's name.
    until("the healthy demo tenants to sync", 60, || async {
        let tenants = serve.tenants().await;
        let synced = tenants.len() == 3
            && tenants[..2]
                .iter()
                .all(|t| t["last_run"]["counts"]["created"].as_u64() >= Some(1));
        synced.then_some(())
    })
    .await;
    until("the faulty tenant's retries", 60, || async {
        serve
            .log()
            .lines()
            .any(|l| l.contains("tenant{tenant=carrier-3}") && l.contains("retrying"))
            .then_some(())
    })
    .await;
    // The demo's own webhook prints what serve tells it: the fixtures hold customers
    // the registers refuse, so each healthy tenant's first run is told as rejections.
    until("the demo's alerts", 60, || async {
        let log = serve.log();
        ["carrier-1", "carrier-2"]
            .iter()
            .all(|t| {
                log.lines().any(|l| {
                    l.starts_with(&format!("alert received: Tenant {t} "))
                        && l.contains("not written")
                })
            })
            .then_some(())
    })
    .await;
    serve.signal(libc::SIGTERM);
    assert!(serve.exit_within(30).success(), "{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_fails_verify_pauses_its_tenant_alerts_once_and_resumes_on_request() {
    let (hook, accepted) = webhook_receiver().await;
    let mut folder = Folder::new(
        "verify_every_secs = 3600\n\n[alerts]\n\
         [[alerts.webhook]]\nurl_env = \"ALERT_HOOK\"\nformat = \"json\"\n",
    );
    folder.env.insert("ALERT_HOOK".into(), hook);
    let every = "every = \"1h\"\njitter = \"0s\"";
    let audited = folder
        .tenant("audited", &eaccounting::REGISTER, customers(4), "", every)
        .await;
    let other = folder
        .tenant("other", &economic::REGISTER, customers(2), "", every)
        .await;
    folder.add(&audited);
    folder.add(&other);

    // The first run after the service starts ends with `journal verify`.
    let mut serve = folder.start();
    for id in ["audited", "other"] {
        until("a first good, verified run", 60, || async {
            let t = serve.tenant(id).await;
            (t["last_run"]["outcome"] == "succeeded" && t["last_verified"].is_string())
                .then_some(())
        })
        .await;
    }
    serve.signal(libc::SIGTERM);
    assert!(serve.exit_within(30).success(), "{}", serve.log());

    // An event taken out of the journal while the service was down.
    let sled = folder.dir.path().join("homes/audited/journal/sled");
    {
        let db = sled::open(&sled).unwrap();
        let events = db.open_tree("events").unwrap();
        assert!(events.remove(2u64.to_be_bytes()).unwrap().is_some());
        db.flush().unwrap();
    }
    let cli = audited
        .cli(&folder, &["journal", "verify"])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(5), "the CLI sees the removal too");

    // Its next run is an hour away: one is asked for.
    let serve = folder.start();
    until("the tenants loaded", 30, || async {
        (serve.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    for id in ["audited", "other"] {
        let (status, body) = serve.post(&format!("/tenants/{id}/run")).await;
        assert_eq!(status, 202, "{body}");
    }
    let paused = until("the tenant paused for its journal", 60, || async {
        let t = serve.tenant("audited").await;
        (t["paused"]["reason"] == "journal-verify").then_some(t)
    })
    .await;
    assert_eq!(paused["state"], "paused", "{paused}");
    assert!(paused["next_run"].is_null(), "{paused}");
    let why = paused["paused"]["message"].as_str().unwrap();
    assert!(why.contains("event 2") && why.contains("changed"), "{why}");
    // The other tenant is not held by it.
    until("the other tenant's verified run", 60, || async {
        let t = serve.tenant("other").await;
        (t["last_run"]["outcome"] == "succeeded" && t["last_verified"].is_string()).then_some(())
    })
    .await;
    // Within verify_every_secs, a run does not verify again.
    let first = serve.tenant("other").await;
    let (status, body) = serve.post("/tenants/other/run").await;
    assert_eq!(status, 202, "{body}");
    until("the other tenant's second run", 60, || async {
        let t = serve.tenant("other").await;
        (t["runs"].as_u64() > first["runs"].as_u64() && t["state"] == "idle").then_some(t)
    })
    .await;
    let again = serve.tenant("other").await;
    assert_eq!(again["last_verified"], first["last_verified"], "{again}");
    // Paused means paused: a run request is refused with what to do.
    let (status, body) = serve.post("/tenants/audited/run").await;
    assert_eq!(status, 409, "{body}");
    until("the alert", 30, || async {
        (!accepted.lock().unwrap().is_empty()).then_some(())
    })
    .await;

    // A person looked and resumes it: it syncs again without pausing at once.
    let runs = paused["runs"].as_u64().unwrap();
    let (status, body) = serve.post("/tenants/audited/resume").await;
    assert_eq!(status, 202, "{body}");
    until("a good run after the resume", 60, || async {
        let t = serve.tenant("audited").await;
        (t["runs"].as_u64().unwrap() > runs && t["last_run"]["outcome"] == "succeeded")
            .then_some(())
    })
    .await;
    until("the recovery alert", 30, || async {
        (accepted.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    let t = serve.tenant("audited").await;
    assert!(t["paused"].is_null(), "{t}");
    let mut serve = serve;
    serve.signal(libc::SIGTERM);
    assert!(serve.exit_within(30).success(), "{}", serve.log());

    let hooks = accepted.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[0]["tenant"], "audited", "{}", hooks[0]);
    assert_eq!(hooks[0]["state"], "journal-verify", "{}", hooks[0]);
    assert_eq!(hooks[0]["recovered"], false, "{}", hooks[0]);
    assert_eq!(hooks[1]["state"], "ok", "{}", hooks[1]);
    assert_eq!(hooks[1]["recovered"], true, "{}", hooks[1]);
    // The alert names the event, never a customer.
    for code in values_of(4, &["customerCode"]) {
        assert!(!format!("{hooks:?}").contains(&code), "{code} in an alert");
    }
}
