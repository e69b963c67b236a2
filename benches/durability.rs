//! What durability costs: an initial sync with one journal flush per customer versus
//! group commit (one flush per batch of 64), interleaved in one run.
//!
//! `cargo bench --bench durability [-- CUSTOMERS REPEATS]` (defaults 2000 and 5).
//! Prints customers per second per run, the medians, and their ratio.

use std::time::Instant;

use opter_visma_sync::app::Connector;
use opter_visma_sync::config::Config;
use opter_visma_sync::sandbox::generate::generate_customers;
use opter_visma_sync::sandbox::write_sandbox_config;
use opter_visma_sync::sandbox::{Sandbox, SandboxOptions};
use opter_visma_sync::sync::SyncOptions;

async fn one_run(customers: usize, flush_every: usize) -> f64 {
    let sandbox = Sandbox::start(SandboxOptions {
        customers: generate_customers(customers, 7),
        eaccounting_rate_limit_per_minute: 0,
        record_requests: false,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sync.toml");
    let env = write_sandbox_config(&file, &sandbox, 0).expect("config");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}flush_every = {flush_every}\n")).unwrap();
    let connector = Connector::open(Config::load(&file).unwrap(), &env).unwrap();
    let options = SyncOptions {
        dry_run: false,
        full: false,
        replay: None,
        actor: "bench".into(),
    };
    let started = Instant::now();
    let (report, stopped) = connector.sync(&options).await.expect("sync");
    assert!(stopped.is_none(), "{stopped:?}");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.counts.created as usize, customers);
    sandbox.shutdown().await;
    customers as f64 / elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let customers = args.first().copied().unwrap_or(2000);
    let repeats = args.get(1).copied().unwrap_or(5);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut per_customer, mut batched) = (Vec::new(), Vec::new());
    for i in 0..repeats {
        // Interleaved, so both modes see the same machine noise.
        let a = runtime.block_on(one_run(customers, 1));
        let b = runtime.block_on(one_run(customers, 64));
        println!("run {i}: flush per customer {a:8.0}/s   batched (64) {b:8.0}/s");
        per_customer.push(a);
        batched.push(b);
    }
    let (a, b) = (median(per_customer), median(batched));
    println!("median customers/s over {repeats} runs of {customers}: per customer {a:.0}, batched {b:.0}, ratio {:.2}x", b / a);
}
