//! B8: `serve` with many tenants, measured side by side in one run:
//!
//! - one no-op cycle over 1,000 tenants of 100 customers (every tenant asked to run
//!   now, each run incremental with nothing changed): its wall time and the CPU time
//!   `serve` spent, against 1,000 `sync` processes doing the same runs one after another;
//! - `serve`'s peak resident memory with those tenants (its `VmHWM`, which counts this
//!   process only: a child's high-water mark starts afresh at exec);
//! - 20 tenants, all busy creating customers in registers limited to the same rate:
//!   each tenant's writes in a window against its own limit, and the spread between the
//!   fastest and the slowest.
//!
//! The tenants are those `sandbox --tenants N` serves: one in-process sandbox per tenant,
//! all on one port, and the folder `write_service_folder` writes, with the registers in
//! turn (eAccounting, Visma.net, e-conomic) for the cycle and eAccounting for the busy
//! tenants. `serve` and `sync` are the release binary, run as child processes.
//! `cargo bench --bench serve -- --help` lists the sizes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

mod common;
use common::*;

use opter_visma_sync::sandbox::generate::generate_customers;
use opter_visma_sync::sandbox::tenant::{tenant_id, write_service_folder};
use opter_visma_sync::sandbox::{Sandbox, SandboxOptions};
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register};

const EXE: &str = env!("CARGO_BIN_EXE_opter-visma-sync");
const MB: f64 = 1_000_000.0;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "serve",
    about = "B8: serve with many tenants against as many sync processes, in one run",
    after_help = "Example: cargo bench --bench serve -- --tenants 1000 --cycles 3"
)]
struct Args {
    /// Tenants in the no-op cycle.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Customers per tenant in the no-op cycle.
    #[arg(long, default_value_t = 100)]
    customers: usize,
    /// No-op cycles of serve measured (the median is reported).
    #[arg(long, default_value_t = 3)]
    cycles: usize,
    /// Tenants busy at their rate limits.
    #[arg(long, default_value_t = 20)]
    busy: usize,
    /// Each busy tenant's register limit (and its connector's), requests per minute.
    #[arg(long, default_value_t = 600)]
    busy_rate: u32,
    /// The window the busy tenants' writes are counted over.
    #[arg(long, default_value_t = 30)]
    busy_secs: u64,
    /// `[service] workers`: runs at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seed of the generated customers (tenant i uses seed + i).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print the results as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Independent sandboxes on one port, one per tenant, and the folder `serve` runs.
struct Tenants {
    dir: tempfile::TempDir,
    sandboxes: Vec<Sandbox>,
    env: HashMap<String, String>,
}

fn tenants(
    rt: &tokio::runtime::Runtime,
    n: usize,
    customers: usize,
    seed: u64,
    registers: &[&'static Register],
    rate: u32,
    service: &str,
) -> Tenants {
    let options = (0..n)
        .map(|i| {
            let opts = SandboxOptions {
                customers: generate_customers(customers, seed + i as u64),
                eaccounting_rate_limit_per_minute: rate,
                visma_net_rate_limit_per_hour: 0,
                economic_rate_limit_per_minute: 0,
                record_requests: false,
                ..SandboxOptions::default()
            };
            (tenant_id(i), opts)
        })
        .collect();
    let sandboxes = rt
        .block_on(Sandbox::start_many(0, options))
        .expect("sandboxes start");
    let dir = tempfile::tempdir().expect("temp dir");
    let pairs: Vec<_> = sandboxes
        .iter()
        .enumerate()
        .map(|(i, s)| (s, registers[i % registers.len()]))
        .collect();
    let env = write_service_folder(dir.path(), &pairs, "24h", rate).expect("folder written");
    // Any free port; every run on request only (no jitter); this run's service keys.
    let file = dir.path().join("service.toml");
    let text = std::fs::read_to_string(&file).expect("service.toml");
    let text = text.replace("127.0.0.1:8787", "127.0.0.1:0") + service;
    std::fs::write(&file, text).expect("service.toml");
    for i in 0..n {
        let file = dir
            .path()
            .join("tenants")
            .join(format!("{}.toml", tenant_id(i)));
        let text = std::fs::read_to_string(&file).expect("tenant file");
        std::fs::write(&file, text + "jitter = \"0s\"\n").expect("tenant file");
    }
    Tenants {
        dir,
        sandboxes,
        env,
    }
}

/// A `serve` child and its address.
struct Serve {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Serve {
    fn start(t: &Tenants) -> Serve {
        let log = std::fs::File::create(t.dir.path().join("serve.log")).expect("log");
        let mut child = Command::new(EXE)
            .arg("--config")
            .arg(t.dir.path().join("service.toml"))
            .arg("serve")
            .envs(&t.env)
            .env_remove("OPTER_VISMA_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("serve says where it listens");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Serve {
            child,
            base,
            client: reqwest::Client::new(),
        }
    }

    fn tenants(&self, rt: &tokio::runtime::Runtime) -> Vec<Value> {
        rt.block_on(async {
            let resp = self
                .client
                .get(format!("{}/tenants", self.base))
                .send()
                .await
                .expect("GET /tenants");
            resp.json::<Vec<Value>>().await.expect("tenants JSON")
        })
    }

    /// Waits until every one of `n` tenants has finished `runs` runs.
    fn until_runs(&self, rt: &tokio::runtime::Runtime, n: usize, runs: u64, limit: Duration) {
        let start = Instant::now();
        loop {
            let tenants = self.tenants(rt);
            let done = tenants
                .iter()
                .filter(|t| t["runs"].as_u64() >= Some(runs) && t["run_requested"] == false)
                .count();
            if tenants.len() == n && done == n {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{done} of {n} tenants have {runs} runs after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run_all(&self, rt: &tokio::runtime::Runtime, n: usize) {
        rt.block_on(async {
            for i in 0..n {
                let resp = self
                    .client
                    .post(format!("{}/tenants/{}/run", self.base, tenant_id(i)))
                    .send()
                    .await
                    .expect("run now");
                assert_eq!(resp.status().as_u16(), 202, "run now");
            }
        });
    }

    /// CPU seconds (user + system) the process has used.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/PID/stat");
        // After the command's closing parenthesis: fields 3.. ; utime and stime are 14, 15.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks()
    }

    /// The process's peak and current resident memory, in bytes.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .expect("VmHWM and VmRSS")
                * 1024.0
        };
        (kib("VmHWM:"), kib("VmRSS:"))
    }

    fn stop(mut self) {
        // SIGTERM, as an operator stops it; it exits 0 within its grace.
        // SAFETY: kill has no memory effects; the pid is our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().expect("serve exits");
        assert!(status.success(), "serve exited {status}");
    }
}

/// A measurement that panics leaves no `serve` behind.
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines `serve` wrote, for a failed measurement.
fn log_tail(t: &Tenants) -> String {
    let log = std::fs::read_to_string(t.dir.path().join("serve.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds of the reaped children so far.
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn no_op_counts(tenants: &[Value]) -> (u64, u64) {
    tenants.iter().fold((0, 0), |(c, u), t| {
        let counts = &t["last_run"]["counts"];
        (
            c + counts["created"].as_u64().unwrap_or(0),
            u + counts["updated"].as_u64().unwrap_or(0),
        )
    })
}

fn b8_cycle(rt: &tokio::runtime::Runtime, args: &Args) -> Vec<Row> {
    let n = args.tenants;
    progress(format_args!(
        "B8: {n} tenants of {} customers: sandboxes and the folder",
        args.customers
    ));
    let registers = [
        &eaccounting::REGISTER,
        &visma_net::REGISTER,
        &economic::REGISTER,
    ];
    let t = tenants(
        rt,
        n,
        args.customers,
        args.seed,
        &registers,
        0,
        &format!("workers = {}\n", args.workers),
    );
    let serve = Serve::start(&t);
    progress(format_args!(
        "B8: serve's first cycle (every customer created)"
    ));
    let first = Instant::now();
    serve.until_runs(rt, n, 1, Duration::from_secs(1800));
    let first_wall = first.elapsed().as_secs_f64();
    let created = t
        .sandboxes
        .iter()
        .enumerate()
        .map(|(i, s)| match i % 3 {
            0 => s.visma_customers().len(),
            1 => s.visma_net_customers().len(),
            _ => s.economic_customers().len(),
        })
        .sum::<usize>();
    progress(format_args!(
        "B8: first cycle {first_wall:.1} s, {created} register customers"
    ));
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for cycle in 0..args.cycles {
        let before = serve.cpu_secs();
        let start = Instant::now();
        serve.run_all(rt, n);
        serve.until_runs(rt, n, 2 + cycle as u64, Duration::from_secs(1800));
        walls.push(start.elapsed().as_secs_f64());
        cpus.push(serve.cpu_secs() - before);
        let (c, u) = no_op_counts(&serve.tenants(rt));
        assert_eq!((c, u), (0, 0), "a no-op cycle writes nothing");
        progress(format_args!(
            "B8: serve no-op cycle {}: {:.2} s wall, {:.2} s CPU",
            cycle + 1,
            walls[cycle],
            cpus[cycle]
        ));
    }
    let (hwm, rss) = serve.memory();
    serve.stop();

    progress(format_args!(
        "B8: {n} sync processes, one after another, the same no-op runs"
    ));
    let before = children_cpu_secs();
    let start = Instant::now();
    for i in 0..n {
        let file = t
            .dir
            .path()
            .join("tenants")
            .join(format!("{}.toml", tenant_id(i)));
        let out = Command::new(EXE)
            .arg("--config")
            .arg(&file)
            .args(["sync", "--json"])
            .envs(&t.env)
            .env_remove("RUST_LOG")
            .output()
            .expect("sync runs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            report["created"] == 0 && report["updated"] == 0,
            "{}: a no-op sync: {report} {}",
            tenant_id(i),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sync_wall = start.elapsed().as_secs_f64();
    let sync_cpu = children_cpu_secs() - before;
    progress(format_args!(
        "B8: {n} syncs: {sync_wall:.1} s wall, {sync_cpu:.1} s CPU"
    ));
    let cpu = median(&cpus);
    let wall = median(&walls);
    vec![
        row(
            "B8",
            format!("no-op cycle, {n} tenants: serve CPU"),
            "s",
            cpus,
        )
        .limit(format!("{n} sync processes' CPU"), vec![sync_cpu])
        .target("<= 0.5x", Some(cpu / sync_cpu), cpu <= 0.5 * sync_cpu),
        row("B8", format!("no-op cycle, {n} tenants: wall"), "s", walls)
            .limit(
                format!("{n} sync processes, one at a time"),
                vec![sync_wall],
            )
            .target("-", Some(wall / sync_wall), true)
            .note(format!(
                "serve: workers = {}; first cycle (creating {created} customers) {first_wall:.1} s",
                args.workers
            )),
        row(
            "B8",
            format!("serve peak RSS, {n} tenants"),
            "MB",
            vec![hwm / MB],
        )
        .limit("300 MB".into(), vec![300.0])
        .target("<= 300 MB", Some(hwm / MB / 300.0), hwm / MB <= 300.0)
        .note(format!(
            "VmHWM over the first cycle and the no-op cycles; VmRSS at the end {:.1} MB",
            rss / MB
        )),
    ]
}

fn b8_busy(rt: &tokio::runtime::Runtime, args: &Args) -> Vec<Row> {
    let n = args.busy;
    let rate = args.busy_rate;
    let per_sec = f64::from(rate) / 60.0;
    // More customers than the window can take, so every tenant stays busy in it.
    let customers = (per_sec * (args.busy_secs as f64 + 30.0)) as usize + 100;
    progress(format_args!(
        "B8: {n} busy tenants, {customers} customers each, registers at {rate}/min"
    ));
    let t = tenants(
        rt,
        n,
        customers,
        args.seed + 10_000,
        &[&eaccounting::REGISTER],
        rate,
        // The runs are cut off when the window closes: no need to wait for them.
        &format!("workers = {n}\nshutdown_grace_secs = 1\n"),
    );
    let serve = Serve::start(&t);
    let counts = || -> Vec<usize> {
        t.sandboxes
            .iter()
            .map(|s| s.visma_customers().len())
            .collect()
    };
    // The window opens once every tenant has written (its index read and token are behind).
    let opened = Instant::now();
    let at_start = loop {
        let c = counts();
        if c.iter().all(|n| *n > 0) {
            break c;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(120),
            "not every busy tenant writes: {c:?}; serve's log ends:\n{}\ntenants: {:#}",
            log_tail(&t),
            Value::Array(serve.tenants(rt))
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(args.busy_secs));
    let at_end = counts();
    let window = start.elapsed().as_secs_f64();
    serve.stop();

    let shares: Vec<f64> = at_start
        .iter()
        .zip(&at_end)
        .map(|(a, b)| (b - a) as f64 / (per_sec * window))
        .collect();
    assert!(
        at_end.iter().all(|c| *c < customers),
        "a busy tenant finished inside the window: {at_end:?}"
    );
    let least = shares.iter().copied().fold(f64::INFINITY, f64::min);
    let most = shares.iter().copied().fold(0.0, f64::max);
    progress(format_args!(
        "B8: shares of each tenant's limit over {window:.1} s: {:.3} to {:.3}",
        least, most
    ));
    vec![
        row(
            "B8",
            format!("{n} busy tenants: least share of its own limit"),
            "",
            vec![least],
        )
        .target(">= 0.95", None, least >= 0.95)
        .note(format!(
            "writes per tenant in {window:.1} s against {rate}/min each; all shares: {}",
            shares
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        row(
            "B8",
            format!("{n} busy tenants: fastest / slowest"),
            "x",
            vec![most / least],
        ),
    ]
}

fn main() {
    let args = Args::parse();
    assert!(args.cycles >= 1, "--cycles must be at least 1");
    elapsed_total();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let machine = machine();
    let mut rows = b8_cycle(&rt, &args);
    rows.extend(b8_busy(&rt, &args));
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
        let title = format!(
            "B8, serve with many tenants: {} no-op cycles, medians",
            args.cycles
        );
        print_tables(&title, &rows, &machine, total);
    }
}
