//! `demo` and `sandbox`: the connector against the simulators (only with the
//! `sandbox` feature).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::progress::ProgressBar;
use crate::app::Connector;
use crate::cli::{DemoArgs, DemoSource, SandboxArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::output;
use crate::sandbox::tenant::{customers_file, tenant_id};
use crate::sandbox::{
    bundled_customers, simulator, write_sandbox_config_for, write_tenant_config, Faults, Sandbox,
    SandboxOptions, TenantSource,
};
use crate::sink::eaccounting;
use crate::sync::{Report, SyncOptions};

fn load_customers(args: &SandboxArgs) -> Result<Vec<serde_json::Value>> {
    if let Some(n) = args.customers {
        return Ok(crate::sandbox::generate::generate_customers(n, args.seed));
    }
    match &args.fixtures {
        Some(dir) => customers_file(dir),
        None => Ok(bundled_customers()),
    }
}

pub async fn sandbox(args: &SandboxArgs) -> Result<ExitCode> {
    if args.tenants > 1 {
        return sandbox_tenants(args).await;
    }
    let customers = load_customers(args)?;
    let count = customers.len();
    let faults = Faults {
        seed: args.fault_seed,
        fail_rate: args.fail_rate,
        statuses: args.fail_statuses.clone(),
        latency_ms: args.latency_ms,
        drop_after_commit_rate: args.drop_after_commit_rate,
        ..Faults::default()
    };
    faults
        .validate()
        .map_err(|e| Error::config(format!("sandbox fault options: {e}")))?;
    let sandbox = Sandbox::start(SandboxOptions {
        customers,
        port: args.port,
        eaccounting_rate_limit_per_minute: args.rate_limit,
        faults,
        ..SandboxOptions::default()
    })
    .await?;
    eprintln!(
        "sandbox listening on {} with {count} Opter customers",
        sandbox.base_url()
    );
    eprintln!(
        "  Opter API:          {}/Customers",
        sandbox.opter_api_base()
    );
    eprintln!(
        "  Visma eAccounting:  {}/customers",
        sandbox.visma_api_base()
    );
    eprintln!(
        "  Visma.net ERP:      {}/v1/customer",
        sandbox.visma_net_api_base()
    );
    eprintln!(
        "  Visma e-conomic:    {}/customers",
        sandbox.economic_api_base()
    );
    let control = simulator(args.sink).control;
    eprintln!(
        "  register content:   {}/_sandbox/{control}/customers",
        sandbox.base_url()
    );
    eprintln!(
        "  requests received:  {}/_sandbox/{control}/requests",
        sandbox.base_url()
    );
    if let Some(file) = &args.write_config {
        let secrets = write_sandbox_config_for(file, &sandbox, args.sink, args.rate_limit)?;
        let mut out = std::io::stdout().lock();
        let mut names: Vec<_> = secrets.keys().collect();
        names.sort();
        for name in names {
            writeln!(out, "export {name}={}", secrets[name]).context("cannot write output")?;
        }
        out.flush().context("cannot write output")?;
        eprintln!(
            "wrote {}; run the export lines above, then:",
            file.display()
        );
        eprintln!(
            "  {}",
            this_program(&["--config", &file.to_string_lossy(), "sync"])
        );
    }
    eprintln!("press Ctrl-C to stop");
    tokio::select! {
        _ = sandbox.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `demo --serve`: three tenants under `serve`, one of them with a register that fails
/// a fifth of its calls, until Ctrl-C or SIGTERM.
async fn demo_serve(dir: &Path) -> Result<ExitCode> {
    use crate::sink::{economic, visma_net};
    let faulty = Faults {
        seed: 1,
        fail_rate: 0.2,
        statuses: vec![429, 503],
        ..Faults::default()
    };
    let tenants = [
        (&eaccounting::REGISTER, Faults::default()),
        (&visma_net::REGISTER, Faults::default()),
        (&economic::REGISTER, faulty),
    ];
    let options = tenants
        .iter()
        .enumerate()
        .map(|(i, (_, faults))| {
            let opts = SandboxOptions {
                customers: bundled_customers(),
                eaccounting_rate_limit_per_minute: DEMO_RATE_LIMIT,
                faults: faults.clone(),
                ..SandboxOptions::default()
            };
            (tenant_id(i), opts)
        })
        .collect();
    let sandboxes: Vec<_> = Sandbox::start_many(0, options)
        .await?
        .into_iter()
        .zip(tenants.iter().map(|(r, _)| *r))
        .collect();
    let pairs: Vec<_> = sandboxes.iter().map(|(s, r)| (s, *r)).collect();
    let env = crate::sandbox::tenant::write_service_folder(dir, &pairs, "10s", DEMO_RATE_LIMIT)?;
    let mut env = env;
    let alerts = alert_receiver().await?;
    env.insert(DEMO_ALERTS_ENV.to_string(), alerts.clone());
    let file = dir.join("service.toml");
    // Any free port: the address is printed when serve listens. Ctrl-C should not
    // wait long for the faulty tenant's run.
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .replace("127.0.0.1:8787", "127.0.0.1:0")
        + "shutdown_grace_secs = 3\n\n[alerts]\n[[alerts.webhook]]\n"
        + &format!("url_env = \"{DEMO_ALERTS_ENV}\"\nformat = \"json\"\n");
    std::fs::write(&file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    let config = crate::service::ServiceConfig::parse(&text, &file, &env)?;
    eprintln!(
        "Three tenants in {}: carrier-1 (eAccounting), carrier-2 (Visma.net) and carrier-3 \
         (e-conomic, whose register answers a fifth of its calls with 429 or 503), each \
         syncing every 10 seconds.",
        dir.join("tenants").display()
    );
    eprintln!(
        "Where to look, at the address below: /tenants (each tenant's state, last and next \
         run), /metrics (Prometheus), /readyz; the alerts serve sends to a webhook \
         ({alerts}) are printed below as they arrive. Register contents: {}. Ctrl-C to stop.",
        sandboxes
            .iter()
            .map(|(s, r)| format!(
                "{}/_sandbox/{}/customers",
                s.base_url(),
                simulator(r).control
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::service::serve_with(config, Arc::new(env)).await?;
    Ok(ExitCode::SUCCESS)
}

/// The env var `demo --serve`'s service config names for its alert webhook.
const DEMO_ALERTS_ENV: &str = "DEMO_ALERTS_URL";

/// A webhook on a free loopback port that prints each alert `serve` posts to it (the
/// `json` format's `text`); returns its URL.
async fn alert_receiver() -> Result<String> {
    use axum::routing::post;
    async fn received(axum::Json(alert): axum::Json<serde_json::Value>) -> &'static str {
        let text = alert["text"].as_str().unwrap_or("(an alert without text)");
        eprintln!("alert received: {}", output::printable(text));
        "ok"
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen for the demo's alerts")?;
    let url = format!(
        "http://{}/alerts",
        listener
            .local_addr()
            .context("cannot listen for the demo's alerts")?
    );
    let app = axum::Router::new().route("/alerts", post(received));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the demo's alert webhook stopped: {e}");
        }
    });
    Ok(url)
}

/// `sandbox --tenants N`: N sandboxes on one port, one per tenant, and a folder for
/// `serve`.
async fn sandbox_tenants(args: &SandboxArgs) -> Result<ExitCode> {
    use crate::sink::{economic, visma_net};
    let Some(dir) = &args.write_config else {
        return Err(Error::config(
            "--tenants: give --write-config DIR, the folder to write service.toml and the \
             tenant configs in"
                .to_string(),
        ));
    };
    humantime::parse_duration(&args.every)
        .map_err(|_| Error::config("--every: a duration such as 30s or 15m".to_string()))?;
    let faults = Faults {
        seed: args.fault_seed,
        fail_rate: args.fail_rate,
        statuses: args.fail_statuses.clone(),
        latency_ms: args.latency_ms,
        drop_after_commit_rate: args.drop_after_commit_rate,
        ..Faults::default()
    };
    faults
        .validate()
        .map_err(|e| Error::config(format!("sandbox fault options: {e}")))?;
    let registers = [
        &eaccounting::REGISTER,
        &visma_net::REGISTER,
        &economic::REGISTER,
    ];
    let mut options = Vec::new();
    for i in 0..args.tenants {
        // Each tenant its own customers: generated with its own seed, or the fixtures.
        let customers = match args.customers {
            Some(n) => crate::sandbox::generate::generate_customers(n, args.seed + u64::from(i)),
            None => load_customers(args)?,
        };
        options.push((
            tenant_id(usize::from(i)),
            SandboxOptions {
                customers,
                eaccounting_rate_limit_per_minute: args.rate_limit,
                faults: Faults {
                    seed: args.fault_seed + u64::from(i),
                    ..faults.clone()
                },
                ..SandboxOptions::default()
            },
        ));
    }
    let started = Sandbox::start_many(args.port, options).await?;
    eprintln!(
        "{} sandboxes listening on http://{}, each under /carrier-N",
        started.len(),
        started[0].addr()
    );
    let mut sandboxes = Vec::new();
    for (i, sandbox) in started.into_iter().enumerate() {
        let register = registers[i % registers.len()];
        eprintln!(
            "tenant {} ({}): {}, register content at {}/_sandbox/{}/customers",
            tenant_id(i),
            register.name,
            sandbox.base_url(),
            sandbox.base_url(),
            simulator(register).control
        );
        sandboxes.push((sandbox, register));
    }
    let pairs: Vec<_> = sandboxes.iter().map(|(s, r)| (s, *r)).collect();
    let secrets =
        crate::sandbox::tenant::write_service_folder(dir, &pairs, &args.every, args.rate_limit)?;
    let mut out = std::io::stdout().lock();
    let mut names: Vec<_> = secrets.keys().collect();
    names.sort();
    for name in names {
        writeln!(out, "export {name}={}", secrets[name]).context("cannot write output")?;
    }
    let service = dir.join("service.toml");
    writeln!(
        out,
        "# then: {}",
        this_program(&["--config", &service.to_string_lossy(), "serve"])
    )
    .context("cannot write output")?;
    out.flush().context("cannot write output")?;
    drop(out);
    eprintln!(
        "wrote {} and {} tenant configs in {}; run the export lines above, then serve \
         (its /tenants and /metrics on 127.0.0.1:8787)",
        service.display(),
        args.tenants,
        dir.join("tenants").display()
    );
    eprintln!("press Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's register accepts ten times Visma's 600 requests per minute, so the demo
/// takes seconds; the connector's limiter is set to match, as with the real one.
const DEMO_RATE_LIMIT: u32 = 6000;

pub async fn demo(args: &DemoArgs) -> Result<ExitCode> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "opter-visma-sync-demo-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
        )),
    };
    if args.serve {
        return demo_serve(&dir).await;
    }
    let sandbox = Sandbox::start(SandboxOptions {
        customers: bundled_customers(),
        eaccounting_rate_limit_per_minute: DEMO_RATE_LIMIT,
        ..SandboxOptions::default()
    })
    .await?;
    let file = dir.join("opter-visma-sync.toml");
    let export = args.source == DemoSource::OpterExport;
    let source = match export {
        true => TenantSource::OpterExport,
        false => TenantSource::OpterApi,
    };
    let env = write_tenant_config(&file, &sandbox, args.sink, DEMO_RATE_LIMIT, source)?;
    if export {
        write_export_files(&file, &sandbox.opter_customers())?;
    }
    let connector = Connector::open(Config::load(&file)?, &env)?;
    let options = SyncOptions {
        dry_run: false,
        full: false,
        replay: None,
        actor: crate::sync::SYNC_ACTOR.to_string(),
    };
    let sync = || connector.sync_observed(&options, Arc::new(ProgressBar::on_stderr()));
    let mut out = std::io::stdout().lock();
    let mut step = |title: &str, report: &Report| -> Result<()> {
        writeln!(out, "\n== {title}")
            .and_then(|_| output::report(&mut out, report, false))
            .context("cannot write output")?;
        Ok(())
    };
    println!(
        "sandbox at {}; journal and config in {}",
        sandbox.base_url(),
        dir.display()
    );
    if args.sink == &eaccounting::REGISTER {
        println!("(the simulated register allows {DEMO_RATE_LIMIT} requests per minute; Visma's real limit is 600)");
    }

    let complete = |(report, stopped): (Report, Option<Error>)| match stopped {
        Some(e) => Err(e),
        None => Ok(report),
    };
    let first = complete(sync().await?)?;
    step("1. first sync: every valid customer is created", &first)?;
    let second = complete(sync().await?)?;
    step("2. second sync: nothing changed, nothing sent", &second)?;
    let changed = change_one_customer(&sandbox).await?;
    if export {
        // As Opter's next scheduled export would.
        write_export_files(&file, &sandbox.opter_customers())?;
    }
    let third = complete(sync().await?)?;
    step(
        &format!("3. customer {changed} changed in Opter: one update"),
        &third,
    )?;

    let register = (simulator(args.sink).customers)(&sandbox).len();
    println!(
        "\n{} register now holds {register} customers.",
        args.sink.product()
    );
    println!("journal: {}", connector.journal.dir().display());
    println!(
        "explore it: {}",
        this_program(&["--config", &file.to_string_lossy(), "journal", "runs"])
    );
    connector.finish()?;
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// A command line that runs this very program with `args`, to be pasted into a shell
/// as printed: after `cargo run` the program is not on the PATH, so it is named by its
/// path.
fn this_program(args: &[&str]) -> String {
    let program = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "opter-visma-sync".into());
    let words = std::iter::once(program.as_str()).chain(args.iter().copied());
    shlex::try_join(words).unwrap_or_else(|_| format!("{program} {}", args.join(" ")))
}

/// Writes `customers` as Opter's Excel exports into `export/` beside the config `file`,
/// as Opter's scheduled export would.
fn write_export_files(file: &Path, customers: &[serde_json::Value]) -> Result<()> {
    use crate::sandbox::export_files::{write_exports, ExportFormat};
    let dir = file.parent().unwrap_or(Path::new("."));
    write_exports(customers, &dir.join("export"), ExportFormat::Xlsx)?;
    Ok(())
}

/// Gives the first bundled customer a new contact email, through the sandbox's HTTP
/// control endpoint (as a person editing it in Opter would).
async fn change_one_customer(sandbox: &Sandbox) -> Result<String> {
    let mut customer = bundled_customers()
        .into_iter()
        .next()
        .context("no bundled customers")?;
    let code = customer["customerCode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(references) = customer["references"].as_array_mut() {
        let contact = references
            .iter()
            .position(|r| r["isDefault"] == true)
            .unwrap_or(0);
        if let Some(reference) = references.get_mut(contact) {
            reference["email"] = "new.contact@example.se".into();
        }
    }
    customer["updated"] = chrono::Utc::now().to_rfc3339().into();
    let url = format!("{}/_sandbox/opter/customers/{code}", sandbox.base_url());
    reqwest::Client::new()
        .put(url)
        .json(&customer)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("cannot change the customer in the sandbox")?;
    Ok(code)
}
