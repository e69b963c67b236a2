//! Sync speed, memory and journal cost, each next to the limit it is judged against,
//! measured side by side in one run:
//!
//! - B1 no-op sync of unchanged customers (`sync`, incremental, and `sync --full`) vs a
//!   plain client fetching the same Opter pages and discarding them; no register request.
//! - B2 initial sync vs raw POST throughput of the same simulator endpoint at the same
//!   concurrency (minimal client, valid bodies, no journal).
//! - B3 initial sync against a rate-limited register vs the limit; 429s counted.
//! - B4 initial sync with simulated latency per request vs customers × latency / concurrency.
//! - B5 peak resident memory of the sync process during B1, at two sizes.
//! - B6 journal bytes per event after `journal compact`; `journal verify` time.
//! - B7 onboarding onto a populated eAccounting register with a fresh journal (all
//!   present and unchanged; half changed; none present), at a register rate limit:
//!   register calls against the fewest the connector's write protocol allows.
//!
//! `cargo bench --bench sync -- --help` lists the options (sizes, repeats, `--only`,
//! `--json`). Every sync and journal command is the release binary run as a child
//! process against the in-process sandbox, with the config `write_sandbox_config` writes.
//!
//! Peak memory: Linux counts, in a child's `ru_maxrss`, the high-water mark of the image
//! it replaced at exec; a child spawned straight from this process (which holds the
//! sandbox and its customers) would report this process's peak, and `RUSAGE_CHILDREN` is
//! a maximum over every child ever reaped. So each command is started by a fresh, small
//! helper process (this binary re-executed with a hidden first argument) that spawns
//! it, reaps exactly that child with `wait4` and writes its `ru_maxrss`, wall time and
//! exit code to a file; the helper's own high-water mark, the most a child can inherit
//! at exec, is reported beside it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod common;
use common::*;

use opter_visma_sync::sandbox::generate::generate_customers;
use opter_visma_sync::sandbox::write_sandbox_config;
use opter_visma_sync::sandbox::{Faults, Sandbox, SandboxOptions, SANDBOX_TERMS_OF_PAYMENT_ID};

/// First argument that turns this binary into the measuring helper.
const HELPER: &str = "__measure-child";
/// First argument that turns this binary into a sandbox of its own (see `fill_sandbox`).
const SANDBOX: &str = "__fill-sandbox";
const SYNC_EXE: &str = env!("CARGO_BIN_EXE_opter-visma-sync");
const MB: f64 = 1_000_000.0;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sync",
    about = "Sync benchmarks B1-B6, each against its limit, in one run",
    after_help = "Example: cargo bench --bench sync -- --repeats 5 --only b2,b4 --json"
)]
struct Args {
    /// Repeats per measurement; medians are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Which benchmarks to run (b5 and b6 use B1's journals and runs).
    #[arg(long, value_delimiter = ',', default_value = "b1,b2,b3,b4,b5,b6,b7")]
    only: Vec<String>,
    /// Customers for the no-op sync (B1), the large B5 size and B6's journal.
    #[arg(long, default_value_t = 100_000)]
    b1_customers: usize,
    /// The small size of B5.
    #[arg(long, default_value_t = 10_000)]
    b5_small: usize,
    /// Customers for the unlimited initial sync (B2); one row per size. The simulator
    /// checks numbers by a linear scan, so at 20,000 its own time dominates; the small
    /// size shows the connector's overhead next to a fast register.
    #[arg(long, value_delimiter = ',', default_value = "20000,2000")]
    b2_customers: Vec<usize>,
    /// Customers for the rate-limited initial sync (B3).
    #[arg(long, default_value_t = 2_000)]
    b3_customers: usize,
    /// The register's (and the connector's) requests per minute in B3.
    #[arg(long, default_value_t = 1_200)]
    b3_rate: u32,
    /// Customers for the initial sync with latency (B4).
    #[arg(long, default_value_t = 20_000)]
    b4_customers: usize,
    /// Simulated latency per register request in B4.
    #[arg(long, default_value_t = 10)]
    b4_latency_ms: u64,
    /// Customers onboarded in B7.
    #[arg(long, default_value_t = 10_000)]
    b7_customers: usize,
    /// The register's (and the connector's) requests per minute in B7; the time at
    /// eAccounting's 600/min is the calls divided by 600.
    #[arg(long, default_value_t = 6_000)]
    b7_rate: u32,
    /// `[sink] concurrency`, also used by the raw POST client.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// `[source] page_size`, also used by the plain fetch.
    #[arg(long, default_value_t = 500)]
    page_size: usize,
    /// `[journal] flush_every` (customers per group commit); the config's default when
    /// absent.
    #[arg(long)]
    flush_every: Option<usize>,
    /// Seed of the generated customers.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print the results as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn runs(&self, id: &str) -> bool {
        self.only.iter().any(|o| o.eq_ignore_ascii_case(id))
    }
}

/// What the helper reports about one child.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measured {
    wall_s: f64,
    max_rss_kib: u64,
    helper_hwm_kib: u64,
    exit_code: i32,
}

/// One finished child: measurement and output.
struct Child {
    m: Measured,
    stdout: String,
    stderr: String,
}

impl Child {
    fn rss_mb(&self) -> f64 {
        self.m.max_rss_kib as f64 * 1024.0 / MB
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\nstderr: {}",
                self.stdout.trim(),
                self.stderr.trim()
            )
        })
    }
}

/// Runs the binary with `args` through the measuring helper.
fn run_cli(config: &Path, env: &HashMap<String, String>, args: &[&str]) -> Child {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let output = Command::new(std::env::current_exe().expect("own path"))
        .arg(HELPER)
        .arg(out.path())
        .arg(SYNC_EXE)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("helper runs");
    assert!(output.status.success(), "helper failed: {output:?}");
    let text = std::fs::read_to_string(out.path()).expect("helper wrote its measurement");
    Child {
        m: serde_json::from_str(&text).expect("measurement"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The helper: `HELPER OUT PROGRAM ARGS...`. Spawns PROGRAM (stdio inherited), reaps it
/// with `wait4` and writes a `Measured` to OUT.
fn helper(args: &[String]) -> ! {
    let (out, program, rest) = (&args[0], &args[1], &args[2..]);
    let started = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .spawn()
        .expect("child spawns");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is this process's own child, not yet reaped (std's `Child` never
        // waits on drop); both pointers are valid for the duration of the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    let wall_s = started.elapsed().as_secs_f64();
    drop(child);
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let measured = Measured {
        wall_s,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: usage.ru_maxrss as u64,
        helper_hwm_kib: own_hwm_kib(),
        exit_code,
    };
    std::fs::write(out, serde_json::to_vec(&measured).expect("serialises")).expect("writes");
    std::process::exit(0)
}

fn own_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------- sandbox and config ----------

struct Setup {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    config: PathBuf,
    env: HashMap<String, String>,
}

fn sandbox_options(
    customers: Vec<Value>,
    rate: u32,
    record: bool,
    faults: Faults,
) -> SandboxOptions {
    SandboxOptions {
        customers,
        eaccounting_rate_limit_per_minute: rate,
        record_requests: record,
        faults,
        ..SandboxOptions::default()
    }
}

/// Writes the sandbox config (journal `journal/` beside it) with this run's page size and
/// concurrency; returns the secrets it names.
fn configure(
    config: &Path,
    sandbox: &Sandbox,
    rate: u32,
    tuning: Tuning,
) -> HashMap<String, String> {
    let env = write_sandbox_config(config, sandbox, rate).expect("config");
    let text = std::fs::read_to_string(config).expect("config readable");
    let set = |text: String, key: &str, value: usize| {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("the sandbox config has no {key}"))
            .to_string();
        text.replacen(&line, &format!("{key} = {value}"), 1)
    };
    let mut text = set(text, "page_size", tuning.page_size);
    text = set(text, "concurrency", tuning.concurrency);
    if tuning.flush_every > 0 {
        assert!(
            text.trim_end().ends_with("path = \"journal\""),
            "[journal] comes last"
        );
        text.push_str(&format!("flush_every = {}\n", tuning.flush_every));
    }
    std::fs::write(config, text).expect("config written");
    env
}

/// The config values a run may change; `flush_every` 0 keeps the default.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    page_size: usize,
    concurrency: usize,
    flush_every: usize,
}

impl Args {
    fn tuning(&self) -> Tuning {
        Tuning {
            page_size: self.page_size,
            concurrency: self.concurrency,
            flush_every: self.flush_every.unwrap_or(0),
        }
    }
}

fn start(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    customers: Vec<Value>,
    rate: u32,
    record: bool,
    faults: Faults,
) -> Setup {
    let sandbox = rt
        .block_on(Sandbox::start(sandbox_options(
            customers, rate, record, faults,
        )))
        .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sync.toml");
    let env = configure(&config, &sandbox, rate, args.tuning());
    Setup {
        sandbox,
        dir,
        config,
        env,
    }
}

/// The fill sandbox's mode: `SANDBOX CONFIG CUSTOMERS SEED PAGE_SIZE CONCURRENCY
/// FLUSH_EVERY`. Serves
/// the generated customers (no rate limit, no request log), writes CONFIG, prints the
/// secrets as one JSON line, and stops when its stdin closes.
fn fill_sandbox(args: &[String]) -> ! {
    let number = |i: usize| -> usize { args[i].parse().expect("a number") };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let customers = generate_customers(number(1), number(2) as u64);
    let sandbox = rt
        .block_on(Sandbox::start(sandbox_options(
            customers,
            0,
            false,
            Faults::default(),
        )))
        .expect("sandbox starts");
    let tuning = Tuning {
        page_size: number(3),
        concurrency: number(4),
        flush_every: number(5),
    };
    let env = configure(Path::new(&args[0]), &sandbox, 0, tuning);
    println!("{}", serde_json::to_string(&env).expect("serialises"));
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    rt.block_on(sandbox.shutdown());
    std::process::exit(0)
}

impl Setup {
    fn run(&self, args: &[&str]) -> Child {
        run_cli(&self.config, &self.env, args)
    }

    /// A sync that must succeed; its `--json` report.
    fn sync(&self, extra: &[&str]) -> (Child, Value) {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let child = self.run(&args);
        assert_eq!(
            child.m.exit_code,
            0,
            "sync {extra:?} failed: {}\n{}",
            child.stdout.trim(),
            child.stderr.trim()
        );
        let report = child.json();
        (child, report)
    }

    /// Register requests and token requests logged since the last call, and 429s among
    /// the register requests; clears the log.
    fn take_requests(&self, rt: &tokio::runtime::Runtime) -> Requests {
        let log = self.sandbox.visma_requests();
        let register: Vec<&Value> = log
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/visma/v2"))
            })
            .collect();
        let counts = Requests {
            register: register.len(),
            too_many: register.iter().filter(|r| r["status"] == 429).count(),
            token: log
                .iter()
                .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("/token")))
                .count(),
        };
        self.clear_requests(rt);
        counts
    }

    fn clear_requests(&self, rt: &tokio::runtime::Runtime) {
        let url = format!("{}/_sandbox/visma/requests", self.sandbox.base_url());
        rt.block_on(async {
            reqwest::Client::new()
                .delete(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("request log cleared");
        });
    }

    fn stop(self, rt: &tokio::runtime::Runtime) -> tempfile::TempDir {
        rt.block_on(self.sandbox.shutdown());
        self.dir
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Requests {
    register: usize,
    too_many: usize,
    token: usize,
}

fn count(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or(0)
}

/// Runs `f` on its own thread with its own single-threaded runtime: a client process of
/// its own would not share the sandbox's worker threads either.
fn on_own_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("client thread")
}

/// Fetches every page of Opter's customer list, sequentially, and discards them.
fn plain_fetch(sandbox: &Sandbox, customers: usize, page_size: usize, in_flight: usize) -> f64 {
    use futures::StreamExt;
    let url = format!("{}/Customers", sandbox.opter_api_base());
    let key = sandbox.credentials().opter_api_key;
    let pages = customers.div_ceil(page_size).max(1);
    on_own_thread(move || {
        Box::pin(async move {
            let started = Instant::now();
            let client = reqwest::Client::new();
            let fetch = |page: usize| {
                let request = client
                    .get(&url)
                    .query(&[("page", page), ("pageSize", page_size)])
                    .header("x-api-key", &key);
                async move {
                    request
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .expect("page fetched")
                        .bytes()
                        .await
                        .expect("page read")
                }
            };
            let mut bodies = futures::stream::iter(1..=pages)
                .map(fetch)
                .buffered(in_flight);
            while let Some(body) = bodies.next().await {
                drop(body);
            }
            started.elapsed().as_secs_f64()
        })
    })
}

/// The body the connector's bundled mapping sends for a generated customer.
fn register_body(c: &Value) -> Vec<u8> {
    let empty = Vec::new();
    let refs = c["references"].as_array().unwrap_or(&empty);
    let has_email = |r: &&Value| r["email"].as_str().is_some_and(|e| !e.trim().is_empty());
    let contact = refs
        .iter()
        .find(|r| r["isDefault"] == true)
        .or_else(|| refs.iter().find(has_email));
    let mut body = json!({
        "CustomerNumber": c["customerCode"],
        "Name": c["name"].as_str().unwrap_or_default().trim(),
        "IsActive": c["isActive"].as_bool().unwrap_or(true),
        "TermsOfPaymentId": SANDBOX_TERMS_OF_PAYMENT_ID,
        "IsPrivatePerson": false,
        "InvoiceCity": "-",
        "InvoicePostalCode": "-",
    });
    for (field, from) in [
        ("ContactPersonName", "name"),
        ("ContactPersonEmail", "email"),
    ] {
        if let Some(v) = contact
            .and_then(|r| r[from].as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            body[field] = json!(v);
        }
    }
    serde_json::to_vec(&body).expect("serialises")
}

/// A bearer token from the sandbox's token endpoint, with its initial refresh token.
fn access_token(rt: &tokio::runtime::Runtime, sandbox: &Sandbox) -> String {
    let creds = sandbox.credentials();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", &creds.visma_refresh_token)
        .append_pair("client_id", &creds.visma_client_id)
        .append_pair("client_secret", &creds.visma_client_secret)
        .finish();
    let url = sandbox.visma_token_url();
    let answer: Value = rt.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("token")
            .json()
            .await
            .expect("token JSON")
    });
    answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// POSTs every body at `concurrency`; seconds from the first send to the last answer.
fn raw_posts(url: String, token: String, bodies: Vec<Vec<u8>>, concurrency: usize) -> f64 {
    on_own_thread(move || {
        Box::pin(async move {
            let client = reqwest::Client::new();
            let started = Instant::now();
            let mut answers = futures::stream::iter(bodies)
                .map(|body| {
                    client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .header("accept", "application/json")
                        .body(body)
                        .send()
                })
                .buffer_unordered(concurrency);
            while let Some(answer) = answers.next().await {
                let answer = answer.expect("POST answered");
                assert_eq!(answer.status().as_u16(), 201, "raw POST refused");
                answer.bytes().await.expect("answer read");
            }
            started.elapsed().as_secs_f64()
        })
    })
}

// ---------- B1, B5, B6: the no-op sync and its journal ----------

struct NoOp {
    customers: usize,
    pages: usize,
    fill: Child,
    fetch: Vec<f64>,
    /// The same fetch with two pages in flight, as the connector reads.
    fetch_ahead: Vec<f64>,
    incremental: Vec<Child>,
    full: Vec<Child>,
    incremental_requests: Vec<Requests>,
    full_requests: Vec<Requests>,
    incremental_read: Vec<u64>,
    load: String,
    journal: Option<(tempfile::TempDir, PathBuf, HashMap<String, String>)>,
}

/// Fills register and journal with one initial sync, then times no-op syncs (incremental
/// and `--full`) against a plain fetch of every page, interleaved.
///
/// The fill runs against a sandbox in a process of its own; the no-op runs against a
/// fresh in-process sandbox serving the same customers, whose request log shows that they
/// send nothing. A simulator that has just stored 100,000 writes serves Opter's pages
/// about five times slower (its heap is fragmented: most of its time goes to the
/// allocator), which would measure the simulator rather than the connector; what the
/// register holds is irrelevant to a run that sends nothing to it.
fn no_op(rt: &tokio::runtime::Runtime, args: &Args, customers: usize, keep: bool) -> NoOp {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sync.toml");
    progress(format_args!(
        "B1 {customers}: initial sync (fill) against a sandbox process"
    ));
    let mut filler = Command::new(std::env::current_exe().expect("own path"))
        .arg(SANDBOX)
        .arg(&config)
        .args(
            [
                customers,
                args.seed as usize,
                args.page_size,
                args.concurrency,
                args.flush_every.unwrap_or(0),
            ]
            .map(|n| n.to_string()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sandbox process starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(filler.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("sandbox process answers");
    let fill_env: HashMap<String, String> = serde_json::from_str(&line).expect("secrets");
    let fill = run_cli(&config, &fill_env, &["sync", "--json"]);
    drop(filler.stdin.take());
    filler.wait().expect("sandbox process stops");
    assert_eq!(
        fill.m.exit_code, 0,
        "fill: {}\n{}",
        fill.stdout, fill.stderr
    );
    let report = fill.json();
    assert_eq!(count(&report, "created") as usize, customers, "{report}");
    progress(format_args!(
        "B1 {customers}: filled in {:.1} s, peak RSS {:.1} MB",
        fill.m.wall_s,
        fill.rss_mb()
    ));
    let sandbox = rt
        .block_on(Sandbox::start(sandbox_options(
            generate_customers(customers, args.seed),
            0,
            true,
            Faults::default(),
        )))
        .expect("sandbox starts");
    let env = configure(&config, &sandbox, 0, args.tuning());
    let setup = Setup {
        sandbox,
        dir,
        config,
        env,
    };
    let mut out = NoOp {
        customers,
        pages: customers.div_ceil(args.page_size).max(1),
        fill,
        fetch: Vec::new(),
        fetch_ahead: Vec::new(),
        incremental: Vec::new(),
        full: Vec::new(),
        incremental_requests: Vec::new(),
        full_requests: Vec::new(),
        incremental_read: Vec::new(),
        load: String::new(),
        journal: None,
    };
    let before = load();
    for i in 0..args.repeats {
        let fetch = plain_fetch(&setup.sandbox, customers, args.page_size, 1);
        let fetch_ahead = plain_fetch(&setup.sandbox, customers, args.page_size, 2);
        let (incremental, report) = setup.sync(&[]);
        assert_eq!(report["read"], "incremental", "{report}");
        assert_eq!(count(&report, "created") + count(&report, "updated"), 0);
        out.incremental_read.push(count(&report, "unchanged"));
        out.incremental_requests.push(setup.take_requests(rt));
        let (full, report) = setup.sync(&["--full"]);
        assert_eq!(report["read"], "full", "{report}");
        assert_eq!(count(&report, "unchanged") as usize, customers, "{report}");
        out.full_requests.push(setup.take_requests(rt));
        progress(format_args!(
            "B1 {customers} run {i}: fetch {fetch:.3} s (2 in flight {fetch_ahead:.3} s), sync {:.3} s ({:.1} MB), sync --full {:.3} s ({:.1} MB)",
            incremental.m.wall_s,
            incremental.rss_mb(),
            full.m.wall_s,
            full.rss_mb()
        ));
        out.fetch.push(fetch);
        out.fetch_ahead.push(fetch_ahead);
        out.incremental.push(incremental);
        out.full.push(full);
    }
    out.load = load_note(before);
    let (config, env) = (setup.config.clone(), setup.env.clone());
    let dir = setup.stop(rt);
    if keep {
        out.journal = Some((dir, config, env));
    }
    out
}

fn b1_rows(n: &NoOp) -> Vec<Row> {
    let fetch = n.fetch.clone();
    let mut rows = Vec::new();
    for (name, runs, requests) in [
        (
            "sync (incremental)",
            &n.incremental,
            &n.incremental_requests,
        ),
        ("sync --full", &n.full, &n.full_requests),
    ] {
        let walls: Vec<f64> = runs.iter().map(|c| c.m.wall_s).collect();
        let register: usize = requests.iter().map(|r| r.register).sum();
        let token: usize = requests.iter().map(|r| r.token).sum();
        let m = median(&walls);
        let ratio = m / median(&fetch);
        let met = ratio <= 1.5 && m <= 3.0 && register == 0;
        let mut r = row(
            "B1",
            format!("no-op {name}, {} unchanged customers", n.customers),
            "s",
            walls,
        )
        .limit(
            format!("plain fetch of all {} pages", n.pages),
            fetch.clone(),
        )
        .target(
            "<= 1.5x fetch, <= 3 s, 0 register requests",
            Some(ratio),
            met,
        )
        .note(format!(
            "register requests over all runs: {register}; token requests: {token}"
        ))
        .note(format!(
            "plain fetch with 2 pages in flight (as the connector reads): {:?} s, median {:.3} s, ratio {:.3}",
            n.fetch_ahead,
            median(&n.fetch_ahead),
            m / median(&n.fetch_ahead)
        ))
        .note(n.load.clone());
        if name.starts_with("sync (") {
            r = r.note(format!(
                "customers read per incremental run: {:?}",
                n.incremental_read
            ));
        }
        rows.push(r);
    }
    rows.push(
        row(
            "B1",
            format!("initial sync that filled the register ({})", n.customers),
            "s",
            vec![n.fill.m.wall_s],
        )
        .note(format!(
            "{:.0} customers/s, peak RSS {:.1} MB (one run, not a target)",
            n.customers as f64 / n.fill.m.wall_s,
            n.fill.rss_mb()
        )),
    );
    rows
}

fn b5_rows(small: &NoOp, large: &NoOp) -> Vec<Row> {
    fn rss(n: &NoOp, full: bool) -> Vec<f64> {
        let runs = if full { &n.full } else { &n.incremental };
        runs.iter().map(Child::rss_mb).collect()
    }
    let floor = large
        .full
        .iter()
        .chain(&small.full)
        .map(|c| c.m.helper_hwm_kib)
        .max()
        .unwrap_or(0) as f64
        * 1024.0
        / MB;
    let mut rows = Vec::new();
    for (name, full) in [("sync --full", true), ("sync (incremental)", false)] {
        let (s, l) = (rss(small, full), rss(large, full));
        let (ms, ml) = (median(&s), median(&l));
        rows.push(
            row(
                "B5",
                format!("peak RSS, no-op {name}, {} customers", large.customers),
                "MB",
                l,
            )
            .target("<= 100 MB", None, ml <= 100.0)
            .note(format!(
                "helper's own peak (the most a child can inherit at exec): {floor:.1} MB"
            )),
        );
        rows.push(
            row(
                "B5",
                format!("peak RSS, no-op {name}, {} customers", small.customers),
                "MB",
                s,
            )
            .note("the small size; see the growth row".into()),
        );
        rows.push(
            row(
                "B5",
                format!(
                    "RSS growth {}k -> {}k, {name}",
                    small.customers / 1000,
                    large.customers / 1000
                ),
                "x",
                vec![ml / ms],
            )
            .target("<= 2x", Some(ml / ms), ml / ms <= 2.0),
        );
    }
    rows
}

fn folder_bytes(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => {
                let (a, b) = folder_bytes(&entry.path());
                total = (total.0 + a, total.1 + b);
            }
            Ok(m) => total = (total.0 + m.len(), total.1 + m.blocks() * 512),
            Err(_) => {}
        }
    }
    total
}

fn b6_rows(
    args: &Args,
    journal: &(tempfile::TempDir, PathBuf, HashMap<String, String>),
) -> Vec<Row> {
    let (dir, config, env) = journal;
    let sled = dir.path().join("journal").join("sled");
    let (mut per_event, mut on_disk, mut compact, mut verify, mut verify_rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut events = 0;
    let before = load();
    for i in 0..args.repeats {
        let c = run_cli(config, env, &["journal", "compact"]);
        assert_eq!(c.m.exit_code, 0, "compact: {}", c.stderr);
        let (apparent, allocated) = folder_bytes(&sled);
        let v = run_cli(config, env, &["journal", "verify", "--json"]);
        assert_eq!(v.m.exit_code, 0, "verify: {} {}", v.stdout, v.stderr);
        let result = v.json();
        assert_eq!(result["problems"], json!([]), "{result}");
        events = result["events_checked"].as_u64().unwrap_or(0);
        progress(format_args!(
            "B6 run {i}: compact {:.2} s -> {apparent} bytes ({allocated} on disk) for {events} events; verify {:.3} s ({:.1} MB)",
            c.m.wall_s,
            v.m.wall_s,
            v.rss_mb()
        ));
        per_event.push(apparent as f64 / events.max(1) as f64);
        on_disk.push(allocated as f64 / events.max(1) as f64);
        compact.push(c.m.wall_s);
        verify.push(v.m.wall_s);
        verify_rss.push(v.rss_mb());
    }
    let bytes = median(&per_event);
    let secs = median(&verify);
    let load = load_note(before);
    vec![
        row(
            "B6",
            format!("journal bytes per event after compact ({events} events)"),
            "B",
            per_event,
        )
        .target("<= 1024 B/event", None, bytes <= 1024.0)
        .note(format!(
            "apparent file sizes of journal/sled; allocated on disk: {:.0} B/event (median)",
            median(&on_disk)
        ))
        .note(format!(
            "`journal compact` took {:.2} s (median)",
            median(&compact)
        )),
        row(
            "B6",
            format!("journal verify, {events} events"),
            "s",
            verify,
        )
        .target("<= 2 s", None, secs <= 2.0)
        .note(format!(
            "verify peak RSS {:.1} MB (median)",
            median(&verify_rss)
        ))
        .note(load),
    ]
}

// ---------- B2: initial sync vs raw POST throughput ----------

/// Raw POSTs of `bodies` into a fresh sandbox serving `customers`: seconds.
fn raw_run(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    customers: &[Value],
    bodies: &[Vec<u8>],
    faults: Faults,
) -> f64 {
    let setup = start(rt, args, customers.to_vec(), 0, false, faults);
    let token = access_token(rt, &setup.sandbox);
    let url = format!("{}/customers", setup.sandbox.visma_api_base());
    let secs = raw_posts(url, token, bodies.to_vec(), args.concurrency);
    assert_eq!(setup.sandbox.visma_customers().len(), bodies.len());
    setup.stop(rt);
    secs
}

/// An initial sync into a fresh sandbox serving `customers`: the child and its peak.
fn initial_sync(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    customers: &[Value],
    faults: Faults,
) -> Child {
    let setup = start(rt, args, customers.to_vec(), 0, false, faults);
    let (child, report) = setup.sync(&[]);
    assert_eq!(
        count(&report, "created") as usize,
        customers.len(),
        "{report}"
    );
    setup.stop(rt);
    child
}

fn b2(rt: &tokio::runtime::Runtime, args: &Args) -> Vec<Row> {
    args.b2_customers
        .iter()
        .map(|&n| b2_size(rt, args, n))
        .collect()
}

fn b2_size(rt: &tokio::runtime::Runtime, args: &Args, n: usize) -> Row {
    let customers = generate_customers(n, args.seed);
    let bodies: Vec<Vec<u8>> = customers.iter().map(register_body).collect();
    let (mut sync, mut raw, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let before = load();
    for i in 0..args.repeats {
        // Alternate the order, so drift on a shared machine hits both alike.
        for sync_first in [i % 2 == 0, i % 2 != 0] {
            if sync_first {
                let child = initial_sync(rt, args, &customers, Faults::default());
                sync.push(n as f64 / child.m.wall_s);
                rss.push(child.rss_mb());
            } else {
                let secs = raw_run(rt, args, &customers, &bodies, Faults::default());
                raw.push(n as f64 / secs);
            }
        }
        progress(format_args!(
            "B2 {n} run {i}: sync {:.0}/s, raw POST {:.0}/s",
            sync[i], raw[i]
        ));
    }
    let ratio = median(&sync) / median(&raw);
    row(
        "B2",
        format!(
            "initial sync of {n}, no limit or latency, concurrency {}",
            args.concurrency
        ),
        "cust/s",
        sync,
    )
    .limit(
        format!("raw POST, same endpoint, concurrency {}", args.concurrency),
        raw,
    )
    .target(
        ">= 50% of raw POST, journal durable",
        Some(ratio),
        ratio >= 0.5,
    )
    .note(format!(
        "sync wall time includes process start, Opter read and journal; peak RSS {:.1} MB",
        median(&rss)
    ))
    .note(load_note(before))
}

// ---------- B3: against the register's rate limit ----------

fn b3(rt: &tokio::runtime::Runtime, args: &Args) -> Vec<Row> {
    let n = args.b3_customers;
    let limit = f64::from(args.b3_rate);
    let (mut rate, mut customers_rate, mut too_many, mut requests) =
        (Vec::new(), Vec::new(), 0, Vec::new());
    let before = load();
    for i in 0..args.repeats {
        let setup = start(
            rt,
            args,
            generate_customers(n, args.seed),
            args.b3_rate,
            true,
            Faults::default(),
        );
        let (child, report) = setup.sync(&[]);
        assert_eq!(count(&report, "created") as usize, n, "{report}");
        let r = setup.take_requests(rt);
        let per_minute = r.register as f64 / child.m.wall_s * 60.0;
        progress(format_args!(
            "B3 run {i}: {} register requests in {:.1} s = {per_minute:.0}/min, {} x 429",
            r.register, child.m.wall_s, r.too_many
        ));
        rate.push(per_minute);
        customers_rate.push(n as f64 / child.m.wall_s * 60.0);
        too_many += r.too_many;
        requests.push(r.register as f64);
        setup.stop(rt);
    }
    let ratio = median(&rate) / limit;
    vec![row(
        "B3",
        format!("initial sync of {n} against {} requests/min", args.b3_rate),
        "req/min",
        rate,
    )
    .limit(
        "the register's limit".into(),
        vec![limit; args.repeats],
    )
    .target(
        ">= 95% of the limit, zero 429",
        Some(ratio),
        ratio >= 0.95 && too_many == 0,
    )
    .note(format!(
        "429 answers over all runs: {too_many}; register requests per run: {requests:?}; customers/min median {:.0}",
        median(&customers_rate)
    ))
    .note(load_note(before))]
}

// ---------- B7: onboarding onto a populated register ----------

/// Which of B7's registers is measured.
#[derive(Debug, Clone, Copy)]
enum Onboarding {
    AllPresent,
    HalfChanged,
    NonePresent,
}

fn b7(rt: &tokio::runtime::Runtime, args: &Args) -> Vec<Row> {
    let n = args.b7_customers;
    let pages = n.div_ceil(1000).max(1);
    let cases = [
        (Onboarding::AllPresent, "all present, unchanged", pages),
        (
            Onboarding::HalfChanged,
            "all present, half changed",
            // eAccounting's PUT replaces the whole customer: it is built on a fresh read.
            pages + 2 * (n / 2),
        ),
        (Onboarding::NonePresent, "none present", 1 + n),
    ];
    let mut rows = Vec::new();
    for (case, what, fewest) in cases {
        let before = load();
        let (mut calls, mut walls) = (Vec::new(), Vec::new());
        for i in 0..args.repeats {
            let customers = generate_customers(n, args.seed);
            let setup = start(rt, args, customers.clone(), 0, true, Faults::default());
            if !matches!(case, Onboarding::NonePresent) {
                // The register as an earlier installation left it; then the journal is lost.
                setup.sync(&[]);
                std::fs::remove_dir_all(setup.dir.path().join("journal/sled")).expect("rm");
            }
            if matches!(case, Onboarding::HalfChanged) {
                change_half(rt, &setup, &customers);
            }
            setup.sandbox.set_faults(Faults {
                rate_limit_per_minute: Some(args.b7_rate),
                ..Faults::default()
            });
            configure(&setup.config, &setup.sandbox, args.b7_rate, args.tuning());
            setup.clear_requests(rt);
            // The earlier installation's journal is gone: this run starts a new one.
            let (child, report) = setup.sync(&["--new-journal"]);
            let r = setup.take_requests(rt);
            progress(format_args!(
                "B7 {what} run {i}: {} register calls ({} x 429) in {:.1} s; {report}",
                r.register, r.too_many, child.m.wall_s
            ));
            calls.push(r.register as f64);
            walls.push(child.m.wall_s);
            setup.stop(rt);
        }
        let ratio = median(&calls) / fewest as f64;
        rows.push(
            row(
                "B7",
                format!("onboarding {n}, {what}, at {} requests/min", args.b7_rate),
                "calls",
                calls.clone(),
            )
            .limit(
                "the fewest calls".into(),
                vec![fewest as f64; args.repeats],
            )
            .target("within 2% of the fewest calls", Some(ratio), ratio <= 1.02)
            .note(format!(
                "calls per customer {:.4}; wall median {:.1} s at {}/min, {:.1} min at eAccounting's 600/min",
                median(&calls) / n as f64,
                median(&walls),
                args.b7_rate,
                median(&calls) / 600.0
            ))
            .note(load_note(before)),
        );
    }
    rows
}

/// Changes every second customer's name in the simulated Opter.
fn change_half(rt: &tokio::runtime::Runtime, setup: &Setup, customers: &[Value]) {
    let base = setup.sandbox.base_url();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let changed = customers.iter().step_by(2).map(|c| {
            let mut c = c.clone();
            let code = c["customerCode"].as_str().expect("a code").to_string();
            c["name"] = json!(format!("Kund {code}"));
            c["updated"] = json!(chrono::Utc::now().to_rfc3339());
            let request = client
                .put(format!("{base}/_sandbox/opter/customers/{code}"))
                .json(&c);
            async move {
                request
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .expect("customer changed");
            }
        });
        futures::stream::iter(changed)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    });
}

// ---------- B4: against latency ----------

fn b4(rt: &tokio::runtime::Runtime, args: &Args) -> Vec<Row> {
    let n = args.b4_customers;
    let bound = n as f64 * args.b4_latency_ms as f64 / 1000.0 / args.concurrency as f64;
    let customers = generate_customers(n, args.seed);
    let bodies: Vec<Vec<u8>> = customers.iter().map(register_body).collect();
    let faults = || Faults {
        latency_ms: args.b4_latency_ms,
        ..Faults::default()
    };
    let (mut walls, mut raw) = (Vec::new(), Vec::new());
    let before = load();
    for i in 0..args.repeats {
        for sync_first in [i % 2 == 0, i % 2 != 0] {
            if sync_first {
                walls.push(initial_sync(rt, args, &customers, faults()).m.wall_s);
            } else {
                raw.push(raw_run(rt, args, &customers, &bodies, faults()));
            }
        }
        progress(format_args!(
            "B4 run {i}: sync {:.2} s, raw POST {:.2} s (bound {bound:.2} s)",
            walls[i], raw[i]
        ));
    }
    let ratio = median(&walls) / bound;
    let bound_what = format!(
        "{n} x {} ms / concurrency {}",
        args.b4_latency_ms, args.concurrency
    );
    let load = load_note(before);
    vec![
        row(
            "B4",
            format!(
                "initial sync of {n}, {} ms per register request",
                args.b4_latency_ms
            ),
            "s",
            walls.clone(),
        )
        .limit(bound_what.clone(), vec![bound; args.repeats])
        .target("<= 1.3x", Some(ratio), ratio <= 1.3)
        .note(format!(
            "sync / raw POST with the same latency (medians): {:.2}x",
            median(&walls) / median(&raw)
        ))
        .note(load.clone()),
        row(
            "B4",
            format!(
                "reference: raw POST of the same {n}, same latency and concurrency, no journal"
            ),
            "s",
            raw.clone(),
        )
        .limit(bound_what, vec![bound; args.repeats])
        .note(format!(
            "how near the simulator itself comes to the bound: {:.2}x",
            median(&raw) / bound
        ))
        .note(load),
    ]
}

// ---------- output ----------

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    match raw.get(1).map(String::as_str) {
        Some(HELPER) => helper(&raw[2..]),
        Some(SANDBOX) => fill_sandbox(&raw[2..]),
        _ => {}
    }
    let args = Args::parse();
    assert!(args.repeats >= 1, "--repeats must be at least 1");
    elapsed_total();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let machine = machine();
    let mut rows = Vec::new();

    let (b1, b5, b6) = (args.runs("b1"), args.runs("b5"), args.runs("b6"));
    if b1 || b5 || b6 {
        let small = b5.then(|| no_op(&rt, &args, args.b5_small, false));
        let large = no_op(&rt, &args, args.b1_customers, b6);
        if b1 {
            rows.extend(b1_rows(&large));
        }
        if let Some(small) = &small {
            rows.extend(b5_rows(small, &large));
        }
        if let Some(journal) = &large.journal {
            rows.extend(b6_rows(&args, journal));
        }
    }
    if args.runs("b2") {
        rows.extend(b2(&rt, &args));
    }
    if args.runs("b3") {
        rows.extend(b3(&rt, &args));
    }
    if args.runs("b4") {
        rows.extend(b4(&rt, &args));
    }
    if args.runs("b7") {
        rows.extend(b7(&rt, &args));
    }
    let total = elapsed_total();
    if args.json {
        let all = json!({
            "machine": machine,
            "args": format!("{args:?}"),
            "total_wall_s": total,
            "rows": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("serialises")
        );
    } else {
        let title = format!("sync benchmarks: {} repeats, medians", args.repeats);
        print_tables(&title, &rows, &machine, total);
    }
}
