//! The commands: wire config, source, mapping, sink and journal together and run.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use secrecy::SecretString;

use crate::cli::{
    AuthCommand, DemoArgs, DemoSource, ExportCustomerArgs, ExportFormat, JournalArgs,
    JournalCommand, LogArgs, PurgeArgs, ReplayArgs, SandboxArgs, SupportArgs, SyncArgs,
};
use crate::config::{Config, Env, SinkProduct, SourceConfig};
use crate::engine::{Engine, Report, SyncOptions};
use crate::error::{exit, Error, Result};
use crate::journal::{HoldKind, Journal};
use crate::mapping::Mapping;
use crate::output;
use crate::sandbox::{Faults, Sandbox, SandboxOptions};
use crate::sink::auth::{
    login, ClientCredentials, Grant, LoginSettings, OAuthSettings, TokenProvider,
};
use crate::sink::{eaccounting, EAccountingSink, EconomicSink, Sink, SinkKind, VismaNetSink};
use crate::source::{OpterApiSource, OpterExportSource, Source};
use crate::support;

/// The bundled Opter customers (also in `fixtures/customers.json`), embedded so that
/// `demo` and `sandbox` work from any folder.
pub const BUNDLED_CUSTOMERS: &str = include_str!("../fixtures/customers.json");
/// The bundled mappings (also in `mappings/`), one per register product.
pub const BUNDLED_EACCOUNTING_MAPPING: &str = include_str!("../mappings/eaccounting.toml");
pub const BUNDLED_VISMA_NET_MAPPING: &str = include_str!("../mappings/visma-net.toml");
pub const BUNDLED_ECONOMIC_MAPPING: &str = include_str!("../mappings/economic.toml");

pub fn bundled_mapping(kind: SinkKind) -> &'static str {
    match kind {
        SinkKind::EAccounting => BUNDLED_EACCOUNTING_MAPPING,
        SinkKind::VismaNet => BUNDLED_VISMA_NET_MAPPING,
        SinkKind::Economic => BUNDLED_ECONOMIC_MAPPING,
    }
}

/// Everything a sync needs, built from one config.
pub struct Connector {
    pub config: Config,
    pub source: Source,
    pub sink: Sink,
    pub mapping: Mapping,
    pub journal: Journal,
}

impl Connector {
    pub fn open(config: Config, env: &dyn Env) -> Result<Connector> {
        let retry = config.retry_policy();
        let source = match &config.source {
            SourceConfig::OpterApi(source) => {
                let key = config.secret(env, "[source] api_key_env", &source.api_key_env)?;
                Source::OpterApi(OpterApiSource::new(source, key, retry)?)
            }
            SourceConfig::OpterExport(source) => {
                Source::OpterExport(OpterExportSource::new(source)?)
            }
        };
        let mapping = Mapping::load(&config.sink.mapping, config.sink_kind().rules())?;
        let journal = Journal::open(&config.journal.path).map_err(Error::Other)?;
        let sink = open_sink(&config, env, &journal, retry)?;
        Ok(Connector {
            config,
            source,
            sink,
            mapping,
            journal,
        })
    }

    /// Closes the connector; if values were removed (retention), rewrites the journal
    /// so that no copy of them survives in sled's old log segments.
    pub fn finish(self) -> Result<()> {
        if self.journal.compaction_owed()? {
            let dir = self.journal.dir().to_path_buf();
            drop(self);
            crate::journal::compact(&dir)?;
        }
        Ok(())
    }

    pub async fn sync(&self, options: &SyncOptions) -> Result<(Report, Option<Error>)> {
        Engine {
            source: &self.source,
            sink: &self.sink,
            sink_name: self.config.sink_name(),
            mapping: &self.mapping,
            journal: &self.journal,
            concurrency: self.config.sink.concurrency,
            flush_every: self.config.journal.flush_every,
            keep_values_days: self.config.journal.keep_values_days,
        }
        .run(options)
        .await
    }
}

/// The register's client, with the credentials its product uses.
fn open_sink(
    config: &Config,
    env: &dyn Env,
    journal: &Journal,
    retry: crate::retry::RetryPolicy,
) -> Result<Sink> {
    let per_minute = config.sink.requests_per_minute;
    let bad = |e: anyhow::Error| Error::config(format!("{}: [sink]: {e}", config.file.display()));
    Ok(match &config.sink.product {
        SinkProduct::EAccounting(sink) => {
            let client_secret =
                config.secret(env, "[sink] client_secret_env", &sink.client_secret_env)?;
            // Optional once a grant is stored: the stored, rotated token is used then.
            let seed = env
                .var(&sink.refresh_token_env)
                .filter(|v| !v.is_empty())
                .map(SecretString::from);
            let settings = OAuthSettings {
                product: eaccounting::PRODUCT,
                token_url: sink.token_url.clone(),
                client_id: sink.client_id.clone(),
                client_secret,
                seed,
                seed_env: sink.refresh_token_env.clone(),
            };
            let store = journal.credentials_dir()?.join(GRANT_FILE);
            let tokens = TokenProvider::new(settings, store).map_err(bad)?;
            Sink::EAccounting(EAccountingSink::new(
                &sink.api_base,
                tokens,
                per_minute,
                retry,
            )?)
        }
        SinkProduct::VismaNet(sink) => {
            let client_secret =
                config.secret(env, "[sink] client_secret_env", &sink.client_secret_env)?;
            let tokens = ClientCredentials::new(
                crate::sink::visma_net::PRODUCT,
                &sink.token_url,
                &sink.client_id,
                &client_secret,
                sink.scopes.clone(),
                sink.tenant_id.clone(),
            )
            .map_err(bad)?;
            Sink::VismaNet(VismaNetSink::new(
                &sink.api_base,
                tokens,
                per_minute,
                retry,
            )?)
        }
        SinkProduct::Economic(sink) => {
            let app = config.secret(
                env,
                "[sink] app_secret_token_env",
                &sink.app_secret_token_env,
            )?;
            let grant = config.secret(
                env,
                "[sink] agreement_grant_token_env",
                &sink.agreement_grant_token_env,
            )?;
            Sink::Economic(EconomicSink::new(
                &sink.api_base,
                app,
                grant,
                per_minute,
                retry,
            )?)
        }
    })
}

fn actor() -> String {
    "sync".to_string()
}

pub async fn sync(config_file: &Path, args: &SyncArgs) -> Result<ExitCode> {
    let config = Config::load(config_file)?;
    let connector = Connector::open(config, &crate::config::ProcessEnv)?;
    let options = SyncOptions {
        dry_run: args.dry_run,
        full: args.full,
        replay: None,
        actor: actor(),
        progress: !args.json,
    };
    let (report, stopped) = connector.sync(&options).await?;
    output::report(&mut std::io::stdout().lock(), &report, args.json)
        .context("cannot write output")?;
    connector.finish()?;
    match stopped {
        Some(e) => Err(e),
        None => Ok(exit_for(&report)),
    }
}

/// 0 when everything was written, 3 when some customers were rejected or failed.
pub fn exit_for(report: &Report) -> ExitCode {
    if report.counts.rejected + report.counts.failed > 0 {
        ExitCode::from(exit::PARTIAL)
    } else {
        ExitCode::from(exit::OK)
    }
}

fn open_journal(config_file: &Path, args: &JournalArgs) -> Result<Journal> {
    let dir = match &args.journal {
        Some(dir) => dir.clone(),
        None => Config::load(config_file)?.journal.path,
    };
    let present = ["sled", "sled.old", "sled.compact"]
        .iter()
        .any(|d| dir.join(d).exists());
    if !present {
        return Err(Error::config(format!(
            "no journal in {}: run `sync` first, or pass --journal DIR",
            dir.display()
        )));
    }
    Journal::open(&dir).map_err(Error::Other)
}

pub fn journal(config_file: &Path, command: &JournalCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        JournalCommand::Verify(args) => return verify(config_file, args),
        JournalCommand::Show(args) => {
            let journal = open_journal(config_file, &args.common)?;
            let Some(event) = journal.event(args.seq)? else {
                return Err(Error::config(format!(
                    "no event {} in the journal; `journal log` lists them",
                    args.seq
                )));
            };
            output::show(&mut out, &event, args.common.json, args.show_values)
        }
        JournalCommand::Export(args) => {
            let journal = open_journal(config_file, &args.common)?;
            let mut events = journal.events(args.customer.as_deref(), None)?;
            events.reverse();
            events.retain(|e| args.since.is_none_or(|t| e.time >= t));
            output::export(
                &mut out,
                &events,
                args.format == ExportFormat::Csv,
                args.show_values,
            )
        }
        JournalCommand::Compact(args) => {
            let dir = open_journal(config_file, args)?.dir().to_path_buf();
            let bytes = crate::journal::compact(&dir)?;
            writeln!(out, "journal rewritten: {} ({bytes} bytes)", dir.display())
        }
        JournalCommand::Runs(args) => {
            let journal = open_journal(config_file, args)?;
            output::runs(&mut out, &journal.runs()?, args.json)
        }
        JournalCommand::Log(args) => {
            let LogArgs {
                common,
                customer,
                run,
                limit,
                since,
                outcome,
                show_values,
            } = args;
            let journal = open_journal(config_file, common)?;
            let mut events = journal.events(customer.as_deref(), run.as_deref())?;
            events.retain(|e| since.is_none_or(|t| e.time >= t));
            if let Some(wanted) = outcome {
                events.retain(|e| e.outcome == *wanted);
            }
            events.truncate(limit.unwrap_or(usize::MAX));
            output::events(&mut out, &events, common.json, *show_values)
        }
    }
    .context("cannot write output")?;
    Ok(ExitCode::SUCCESS)
}

fn verify(config_file: &Path, args: &JournalArgs) -> Result<ExitCode> {
    let journal = open_journal(config_file, args)?;
    let result = journal.verify()?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&result).expect("serialises")
        )
    } else {
        match result.problems.first() {
            None => writeln!(
                out,
                "journal verified: {} events, chain and indexes intact",
                result.events_checked
            ),
            Some(first) => writeln!(
                out,
                "journal verification FAILED: event {} {}",
                first.seq, first.what
            )
            .and_then(|_| {
                result
                    .problems
                    .iter()
                    .skip(1)
                    .try_for_each(|p| writeln!(out, "  also: event {} {}", p.seq, p.what))
            }),
        }
    };
    written.context("cannot write output")?;
    Ok(match result.problems.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(exit::VERIFY_FAILED),
    })
}

pub async fn auth(config_file: &Path, command: &AuthCommand) -> Result<ExitCode> {
    let config = Config::load(config_file)?;
    let Some(sink) = config.eaccounting() else {
        return Err(Error::config(format!(
            "{}: `auth` manages the eAccounting login; {} ([sink] kind = \"{}\") needs none: \
             its credentials come from the environment variables named in [sink]",
            config.file.display(),
            config.sink_kind().product(),
            config.sink_name()
        )));
    };
    let store = crate::journal::credentials_dir(&config.journal.path)?.join(GRANT_FILE);
    let mut out = std::io::stdout().lock();
    match command {
        AuthCommand::Login(args) => {
            let env = crate::config::ProcessEnv;
            let settings = LoginSettings {
                product: eaccounting::PRODUCT,
                authorize_url: sink.authorize_url().ok_or_else(|| {
                    Error::config(format!(
                        "{}: [sink] authorize_url is needed for auth login (token_url does not \
                         end in /token, so it cannot be derived)",
                        config.file.display()
                    ))
                })?,
                token_url: sink.token_url.clone(),
                client_id: sink.client_id.clone(),
                client_secret: config.secret(
                    &env,
                    "[sink] client_secret_env",
                    &sink.client_secret_env,
                )?,
                redirect_uri: url::Url::parse(&sink.redirect_uri).map_err(|e| {
                    Error::config(format!(
                        "{}: [sink] redirect_uri: {e}",
                        config.file.display()
                    ))
                })?,
                scopes: sink.scopes.clone(),
                seed: env
                    .var(&sink.refresh_token_env)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from),
            };
            let announce = |url: &str| {
                eprintln!(
                    "Open this URL in a browser and log in to {}:",
                    eaccounting::PRODUCT
                );
                println!("{url}");
                eprintln!("Waiting for the redirect on {} ...", sink.redirect_uri);
            };
            let timeout = std::time::Duration::from_secs(args.timeout);
            let grant = login(settings, &store, !args.no_browser, timeout, announce).await?;
            eprintln!(
                "Logged in. Authorization stored in {} (owner-only) at {}.",
                store.display(),
                grant.refreshed_at.to_rfc3339()
            );
        }
        AuthCommand::Status(args) => {
            let grant = Grant::load(&store).map_err(Error::Other)?;
            let status = serde_json::json!({
                "stored": grant.is_some(),
                "origin": grant.as_ref().map(|g| g.origin.clone()),
                "last_refreshed": grant.as_ref().map(|g| g.refreshed_at.to_rfc3339()),
                "file": store.display().to_string(),
                "refresh_token_env_set": std::env::var(&sink.refresh_token_env).is_ok_and(|v| !v.is_empty()),
            });
            let written = if args.json {
                writeln!(out, "{status}")
            } else {
                match &grant {
                    Some(g) => writeln!(
                        out,
                        "authorization stored ({}), last refreshed {}\n  in {}",
                        if g.origin == "login" { "from auth login" } else { "from the refresh token in the environment" },
                        g.refreshed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        store.display()
                    ),
                    None => writeln!(
                        out,
                        "no authorization stored: run `opter-visma-sync auth login`, or set ${} for the first sync",
                        sink.refresh_token_env
                    ),
                }
            };
            written.context("cannot write output")?;
            if grant.is_none() && status["refresh_token_env_set"] == false {
                return Ok(ExitCode::from(exit::NEEDS_LOGIN));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `support:<name>`: the actor recorded for support commands.
fn support_actor(name: &Option<String>) -> String {
    let name = name
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("support:{name}")
}

fn open_connector(config_file: &Path) -> Result<Connector> {
    Connector::open(Config::load(config_file)?, &crate::config::ProcessEnv)
}

pub async fn replay(config_file: &Path, args: &ReplayArgs) -> Result<ExitCode> {
    let connector = open_connector(config_file)?;
    let codes = match &args.customer {
        Some(code) => vec![code.clone()],
        None => support::failed_customers(&connector)?,
    };
    if codes.is_empty() {
        println!("no customer's last outcome was rejected or failed: nothing to replay");
        return Ok(ExitCode::SUCCESS);
    }
    let actor = support_actor(&args.actor);
    let (report, stopped) = support::replay(&connector, codes, &actor, &args.reason).await?;
    output::report(&mut std::io::stdout().lock(), &report, args.json)
        .context("cannot write output")?;
    connector.finish()?;
    match stopped {
        Some(e) => Err(e),
        None => Ok(exit_for(&report)),
    }
}

pub async fn purge(config_file: &Path, args: &PurgeArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let a = &args.support;
    let connector = open_connector(config_file)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::config(
                "purge erases data and cannot be undone: on a non-interactive run, pass --yes",
            ));
        }
        eprintln!(
            "This will erase customer {} from {} (delete it, or anonymise it if Visma refuses), \
             remove its values from the journal, and stop it from being synced again.",
            a.customer,
            connector.sink.product()
        );
        eprint!("Type the customer code to confirm: ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if answer.trim() != a.customer {
            eprintln!("not confirmed; nothing was done");
            return Ok(ExitCode::from(exit::CONFIG));
        }
    }
    let actor = support_actor(&a.actor);
    let receipt = support::purge(connector, &a.customer, &actor, &a.reason).await?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&receipt).expect("serialises")
        )
    } else {
        writeln!(
            out,
            "erasure receipt\n  customer:        {}\n  time:            {}\n  actor:           {}\n  \
             reason:          {}\n  register:        {}\n  events redacted: {}\n  \
             receipt event:   {}\n  journal verified: {}",
            receipt.customer,
            receipt.time.to_rfc3339(),
            receipt.actor,
            receipt.reason,
            receipt.register,
            receipt.events_redacted,
            receipt.receipt_event,
            if receipt.journal_verified { "yes" } else { "NO" }
        )
    };
    written.context("cannot write output")?;
    Ok(match receipt.journal_verified {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(exit::VERIFY_FAILED),
    })
}

pub async fn hold(
    config_file: &Path,
    args: &SupportArgs,
    kind: HoldKind,
    on: bool,
) -> Result<ExitCode> {
    let connector = open_connector(config_file)?;
    let actor = support_actor(&args.actor);
    let changed =
        support::set_hold(&connector, &args.customer, &actor, &args.reason, kind, on).await?;
    let what = match (kind, on) {
        (HoldKind::Restricted, true) => "restricted: sync sends nothing for it",
        (HoldKind::Restricted, false) => {
            "no longer restricted: the next sync sends it if it changed"
        }
        (HoldKind::Suppressed, _) => "no longer suppressed: the next sync sends it",
    };
    let note = if changed { "" } else { " (it already was)" };
    println!("customer {} {what}{note}", args.customer);
    Ok(ExitCode::SUCCESS)
}

pub async fn export_customer(config_file: &Path, args: &ExportCustomerArgs) -> Result<ExitCode> {
    let connector = open_connector(config_file)?;
    let actor = support_actor(&args.actor);
    let document = support::export(&connector, &args.customer, &actor, &args.reason).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document).context("cannot write output")?;
    writeln!(out).context("cannot write output")?;
    Ok(ExitCode::SUCCESS)
}

/// Where the eAccounting grant is kept, in the journal's credentials folder.
const GRANT_FILE: &str = "eaccounting-grant.json";

/// Writes an eAccounting config (and the mapping beside it) pointing at `sandbox`;
/// returns the secrets it names, by env-var name. See `write_sandbox_config_for`.
pub fn write_sandbox_config(
    file: &Path,
    sandbox: &Sandbox,
    rate_limit: u32,
) -> Result<HashMap<String, String>> {
    write_sandbox_config_for(file, sandbox, SinkKind::EAccounting, rate_limit)
}

/// Writes a config for `kind` (and its bundled mapping beside it) pointing at
/// `sandbox`; returns the secrets it names, by env-var name.
///
/// `rate_limit` is the register's requests per minute (0: none), so the client-side
/// limit in the config matches it.
pub fn write_sandbox_config_for(
    file: &Path,
    sandbox: &Sandbox,
    kind: SinkKind,
    rate_limit: u32,
) -> Result<HashMap<String, String>> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mapping_name = format!("{}-mapping.toml", kind.name());
    let mapping = dir.join(&mapping_name);
    std::fs::write(&mapping, bundled_mapping(kind))
        .with_context(|| format!("cannot write {}", mapping.display()))?;
    let creds = sandbox.credentials();
    let mut secrets = HashMap::from([("OPTER_API_KEY".to_string(), creds.opter_api_key)]);
    let product = match kind {
        SinkKind::EAccounting => {
            secrets.insert("VISMA_CLIENT_SECRET".into(), creds.visma_client_secret);
            secrets.insert("VISMA_REFRESH_TOKEN".into(), creds.visma_refresh_token);
            format!(
                r#"api_base = "{}"
token_url = "{}"
client_id = "{}"
client_secret_env = "VISMA_CLIENT_SECRET"
refresh_token_env = "VISMA_REFRESH_TOKEN"
authorize_url = "{}"
redirect_uri = "http://127.0.0.1:0/callback""#,
                sandbox.visma_api_base(),
                sandbox.visma_token_url(),
                creds.visma_client_id,
                sandbox.visma_authorize_url(),
            )
        }
        SinkKind::VismaNet => {
            secrets.insert(
                "VISMA_NET_CLIENT_SECRET".into(),
                creds.visma_net_client_secret,
            );
            format!(
                r#"api_base = "{}"
token_url = "{}"
client_id = "{}"
client_secret_env = "VISMA_NET_CLIENT_SECRET"
tenant_id = "{}""#,
                sandbox.visma_net_api_base(),
                sandbox.visma_net_token_url(),
                creds.visma_net_client_id,
                creds.visma_net_tenant_id,
            )
        }
        SinkKind::Economic => {
            secrets.insert(
                "ECONOMIC_APP_SECRET_TOKEN".into(),
                creds.economic_app_secret_token,
            );
            secrets.insert(
                "ECONOMIC_AGREEMENT_GRANT_TOKEN".into(),
                creds.economic_agreement_grant_token,
            );
            format!(
                r#"api_base = "{}"
app_secret_token_env = "ECONOMIC_APP_SECRET_TOKEN"
agreement_grant_token_env = "ECONOMIC_AGREEMENT_GRANT_TOKEN""#,
                sandbox.economic_api_base(),
            )
        }
    };
    let text = format!(
        r#"# opter-visma-sync config for the local sandbox at {base}
tenant = "Sandbox Åkeri AB"

[source]
kind = "opter-api"
base_url = "{opter_base}"
customers_path = "/Customers"
api_key_env = "OPTER_API_KEY"
page_size = 500

[sink]
kind = "{kind}"
{product}
mapping = "{mapping_name}"
concurrency = 4
requests_per_minute = {requests_per_minute}

[journal]
path = "journal"
"#,
        base = sandbox.base_url(),
        opter_base = sandbox.opter_api_base(),
        kind = kind.name(),
        requests_per_minute = if rate_limit == 0 {
            1_000_000
        } else {
            rate_limit
        },
    );
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(secrets)
}

pub fn bundled_customers() -> Vec<serde_json::Value> {
    serde_json::from_str(BUNDLED_CUSTOMERS).expect("bundled fixtures are valid JSON")
}

fn load_customers(args: &SandboxArgs) -> Result<Vec<serde_json::Value>> {
    if let Some(n) = args.customers {
        return Ok(crate::sandbox::generate::generate_customers(n, args.seed));
    }
    let Some(dir) = &args.fixtures else {
        return Ok(bundled_customers());
    };
    let file = dir.join("customers.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::config(format!("--fixtures: cannot read {}: {e}", file.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::config(format!(
            "--fixtures: {} is not a JSON array of Opter customers: {e}",
            file.display()
        ))
    })
}

pub async fn sandbox(args: &SandboxArgs) -> Result<ExitCode> {
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
    let control = match args.sink {
        SinkKind::EAccounting => "visma",
        other => other.name(),
    };
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
        eprintln!("  opter-visma-sync --config {} sync", file.display());
    }
    eprintln!("press Ctrl-C to stop");
    tokio::select! {
        _ = sandbox.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
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
    let sandbox = Sandbox::start(SandboxOptions {
        customers: bundled_customers(),
        eaccounting_rate_limit_per_minute: DEMO_RATE_LIMIT,
        ..SandboxOptions::default()
    })
    .await?;
    let file = dir.join("opter-visma-sync.toml");
    let env = write_sandbox_config_for(&file, &sandbox, args.sink, DEMO_RATE_LIMIT)?;
    let export = args.source == DemoSource::OpterExport;
    if export {
        read_from_export_files(&file, &sandbox.opter_customers())?;
    }
    let connector = Connector::open(Config::load(&file)?, &env)?;
    let options = SyncOptions {
        dry_run: false,
        full: false,
        replay: None,
        actor: actor(),
        progress: true,
    };
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
    if args.sink == SinkKind::EAccounting {
        println!("(the simulated register allows {DEMO_RATE_LIMIT} requests per minute; Visma's real limit is 600)");
    }

    let complete = |(report, stopped): (Report, Option<Error>)| match stopped {
        Some(e) => Err(e),
        None => Ok(report),
    };
    let first = complete(connector.sync(&options).await?)?;
    step("1. first sync: every valid customer is created", &first)?;
    let second = complete(connector.sync(&options).await?)?;
    step("2. second sync: nothing changed, nothing sent", &second)?;
    let changed = change_one_customer(&sandbox).await?;
    if export {
        // As Opter's next scheduled export would.
        read_from_export_files(&file, &sandbox.opter_customers())?;
    }
    let third = complete(connector.sync(&options).await?)?;
    step(
        &format!("3. customer {changed} changed in Opter: one update"),
        &third,
    )?;

    let register = match args.sink {
        SinkKind::EAccounting => sandbox.visma_customers().len(),
        SinkKind::VismaNet => sandbox.visma_net_customers().len(),
        SinkKind::Economic => sandbox.economic_customers().len(),
    };
    println!(
        "\n{} register now holds {register} customers.",
        args.sink.product()
    );
    println!("journal: {}", connector.journal.dir().display());
    println!(
        "explore it: opter-visma-sync --config {} journal runs",
        file.display()
    );
    connector.finish()?;
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes `customers` as Opter's Excel exports beside the config `file`, and points the
/// config's `[source]` at them.
fn read_from_export_files(file: &Path, customers: &[serde_json::Value]) -> Result<()> {
    use crate::sandbox::export_files::{write_exports, ExportFormat};
    let dir = file.parent().unwrap_or(Path::new("."));
    write_exports(customers, &dir.join("export"), ExportFormat::Xlsx)?;
    let text = std::fs::read_to_string(file).context("cannot read the demo config")?;
    let (Some(start), Some(end)) = (text.find("[source]"), text.find("[sink]")) else {
        return Err(Error::Other(anyhow::anyhow!(
            "the demo config has no [source]"
        )));
    };
    let source = "[source]\nkind = \"opter-export\"\ncustomers = \"export/customers.xlsx\"\n\
                  references = \"export/references.xlsx\"\n\n";
    let text = format!("{}{source}{}", &text[..start], &text[end..]);
    std::fs::write(file, text).context("cannot write the demo config")?;
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
