//! `check`: a doctor for a new installation. Reads, never writes: nothing is sent to
//! the register or to Opter and no journal is created. The one thing it may store is
//! eAccounting's rotated refresh token, as every sync does when it refreshes.
//!
//! One line per check, in the order a person fixes things; a check that depends on one
//! that failed is shown as skipped, with why.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::config::{Config, Env, ProcessEnv, SourceConfig};
use crate::error::{exit, Error, Result};
use crate::mapping::Mapping;
use crate::retry::RetryPolicy;
use crate::sink::eaccounting::{self, EAccountingConfig, GRANT_FILE};
use crate::sink::economic::{self, EconomicConfig};
use crate::sink::probe::{NamedVar, Prober, Verdict};
use crate::sink::visma_net::{self, VismaNetConfig};
use crate::sink::SinkContext;
use crate::source::{OpterApiSource, OpterExportSource};

/// A clock further off than this is worth a warning: access tokens are renewed a
/// minute before they expire.
const CLOCK_WARN: chrono::Duration = chrono::Duration::minutes(2);
/// Further off than this fails: incremental reads overlap the last cursor by five
/// minutes, and stored tokens' expiry is judged by this clock.
const CLOCK_FAIL: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub check: &'static str,
    /// Whether nothing needs fixing (true for ok and warn).
    pub ok: bool,
    pub status: Status,
    pub detail: String,
}

#[derive(Default)]
struct Report {
    lines: Vec<Line>,
}

impl Report {
    fn push(&mut self, check: &'static str, status: Status, detail: impl Into<String>) -> bool {
        self.lines.push(Line {
            check,
            ok: matches!(status, Status::Ok | Status::Warn),
            status,
            detail: detail.into(),
        });
        matches!(status, Status::Ok | Status::Warn)
    }

    fn verdict(&mut self, check: &'static str, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Ok(d) => self.push(check, Status::Ok, d),
            Verdict::Fail(d) => self.push(check, Status::Fail, d),
        }
    }

    fn skip(&mut self, check: &'static str, why: impl Into<String>) {
        self.push(check, Status::Skipped, why);
    }
}

/// The register's probes, chosen by its settings' type.
struct Register {
    access_check: &'static str,
    named: Vec<NamedVar>,
    /// Whether the register keeps a grant in the journal folder (eAccounting).
    grant_in_journal: bool,
}

fn register_of(config: &Config) -> Option<Register> {
    if let Some(s) = config.settings::<EAccountingConfig>() {
        return Some(Register {
            access_check: eaccounting::probe::ACCESS_CHECK,
            named: s.named_vars(),
            grant_in_journal: true,
        });
    }
    if let Some(s) = config.settings::<VismaNetConfig>() {
        return Some(Register {
            access_check: visma_net::probe::ACCESS_CHECK,
            named: s.named_vars(),
            grant_in_journal: false,
        });
    }
    config.settings::<EconomicConfig>().map(|s| Register {
        access_check: economic::probe::ACCESS_CHECK,
        named: s.named_vars(),
        grant_in_journal: false,
    })
}

fn prober(config: &Config, context: &SinkContext<'_>) -> Result<Prober> {
    if let Some(s) = config.settings::<EAccountingConfig>() {
        return s.prober(context);
    }
    if let Some(s) = config.settings::<VismaNetConfig>() {
        return s.prober(context);
    }
    match config.settings::<EconomicConfig>() {
        Some(s) => s.prober(context),
        None => Err(Error::config("check knows no probes for this register")),
    }
}

async fn token(config: &Config, prober: &Prober) -> Verdict {
    match config.sink_name() {
        "eaccounting" => eaccounting::probe::token(prober).await,
        "visma-net" => visma_net::probe::token(prober).await,
        _ => economic::probe::token(prober).await,
    }
}

async fn access(config: &Config, prober: &Prober) -> Verdict {
    match config.sink_name() {
        "eaccounting" => eaccounting::probe::access(prober).await,
        "visma-net" => visma_net::probe::access(prober).await,
        _ => economic::probe::access(prober).await,
    }
}

async fn constants(config: &Config, prober: &Prober, mapping: &Mapping) -> Verdict {
    match config.sink_name() {
        "eaccounting" => eaccounting::probe::constants(prober, mapping).await,
        "visma-net" => visma_net::probe::constants(prober, mapping).await,
        _ => economic::probe::constants(prober, mapping).await,
    }
}

pub async fn check(config_file: &Path, args: &CheckArgs) -> Result<ExitCode> {
    let lines = run(config_file, &ProcessEnv).await;
    let mut out = std::io::stdout().lock();
    print(&mut out, &lines, args.json).context("cannot write output")?;
    let failed = lines.iter().any(|l| l.status == Status::Fail);
    Ok(ExitCode::from(match failed {
        true => exit::CONFIG,
        false => exit::OK,
    }))
}

fn print(out: &mut impl Write, lines: &[Line], json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(lines).expect("serialises")
        );
    }
    let width = lines.iter().map(|l| l.check.len()).max().unwrap_or(0);
    for line in lines {
        writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            line.status.word(),
            line.check,
            line.detail
        )?;
    }
    let failed = lines.iter().filter(|l| l.status == Status::Fail).count();
    match failed {
        0 => writeln!(
            out,
            "\nEverything checked is in order. Next: `sync --dry-run` shows what a sync would send."
        ),
        n => writeln!(
            out,
            "\n{n} check{} failed: fix {} and run `check` again.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them, top first," }
        ),
    }
}

/// Runs every check, in order, with secrets from `env`.
pub async fn run(config_file: &Path, env: &dyn Env) -> Vec<Line> {
    let mut report = Report::default();
    checks(&mut report, config_file, env).await;
    report.lines
}

async fn checks(report: &mut Report, config_file: &Path, env: &dyn Env) {
    let later = [
        "environment",
        "journal",
        "opter",
        "token",
        "access",
        "constants",
        "clock",
    ];

    // 1. The config and its mapping load.
    let loaded = Config::load(config_file).and_then(|config| {
        let mapping = Mapping::load(&config.sink.mapping, config.sink.register.rules)?;
        Ok((config, mapping))
    });
    let (config, mapping) = match loaded {
        Ok(both) => both,
        Err(e) => {
            report.push("config", Status::Fail, e.to_string());
            for check in later {
                report.skip(check, "needs a config that loads");
            }
            return;
        }
    };
    let Some(register) = register_of(&config) else {
        report.push(
            "config",
            Status::Fail,
            format!(
                "check has no probes for [sink] kind = {:?}",
                config.sink_name()
            ),
        );
        return;
    };
    let source_kind = match &config.source {
        SourceConfig::OpterApi(_) => "Opter API",
        SourceConfig::OpterExport(_) => "Opter export files",
    };
    report.push(
        "config",
        Status::Ok,
        format!(
            "{} loads: {} from the {source_kind}, mapping {}",
            config.file.display(),
            config.sink.register.product(),
            file_name(&config.sink.mapping)
        ),
    );

    // 2. The environment variables it names are set.
    let grant_file = config.journal.path.join("credentials").join(GRANT_FILE);
    let (source_env, sink_env) = environment(report, &config, &register, env, &grant_file);

    // 3. The journal folder.
    let journal_ok = journal(report, &config.journal.path);

    // 4. Opter answers.
    if source_env {
        opter(report, &config, env).await;
    } else {
        report.skip("opter", "needs the Opter API key's environment variable");
    }

    // 5-7. The register: a token, the company and scopes, the mapping's constants.
    let access_check = register.access_check;
    let mut skew = None;
    if !sink_env {
        for check in ["token", access_check, "constants"] {
            report.skip(check, "needs the register's environment variables");
        }
    } else if register.grant_in_journal && !journal_ok {
        for check in ["token", access_check, "constants"] {
            report.skip(
                check,
                "the login is stored in the journal folder: fix that folder first",
            );
        }
    } else {
        let journal_dir = config.journal.path.clone();
        let credentials =
            move || crate::journal::credentials_dir(&journal_dir).map_err(Error::Other);
        let context = SinkContext {
            file: &config.file,
            env,
            credentials: &credentials,
            journal: &config.journal.path,
            requests_per_minute: config.sink.requests_per_minute,
            retry: config.retry_policy(),
        };
        match prober(&config, &context) {
            Err(e) => {
                report.push("token", Status::Fail, e.to_string());
                report.skip(access_check, "needs a token");
                report.skip("constants", "needs a token");
            }
            Ok(prober) => {
                if !report.verdict("token", token(&config, &prober).await) {
                    report.skip(access_check, "needs a token");
                    report.skip("constants", "needs a token");
                } else if !report.verdict(access_check, access(&config, &prober).await) {
                    report.skip(
                        "constants",
                        format!("needs the {access_check} check to pass"),
                    );
                } else {
                    report.verdict("constants", constants(&config, &prober, &mapping).await);
                }
                skew = prober.skew();
            }
        }
    }

    // 8. The clock, against the register's.
    clock(report, skew);
}

/// Source and sink variables set: (source's all set, sink's all set).
fn environment(
    report: &mut Report,
    config: &Config,
    register: &Register,
    env: &dyn Env,
    grant_file: &Path,
) -> (bool, bool) {
    let set = |var: &str| env.var(var).is_some_and(|v| !v.is_empty());
    let mut missing = Vec::new();
    let mut names = Vec::new();
    let source_ok = match &config.source {
        SourceConfig::OpterApi(source) => {
            names.push(source.api_key_env.clone());
            let ok = set(&source.api_key_env);
            if !ok {
                missing.push(format!("{} ([source] api_key_env)", source.api_key_env));
            }
            ok
        }
        SourceConfig::OpterExport(_) => true,
    };
    let mut sink_ok = true;
    for named in &register.named {
        if set(&named.var) {
            names.push(named.var.clone());
        } else if named.optional && grant_file.exists() {
            // A stored login takes the seed's place.
        } else if named.optional {
            sink_ok = false;
            missing.push(format!(
                "{} ({}; or run `auth login`, which stores a login instead)",
                named.var, named.key
            ));
        } else {
            sink_ok = false;
            missing.push(format!("{} ({})", named.var, named.key));
        }
    }
    if missing.is_empty() {
        let detail = match names.is_empty() {
            true => "the config names no secrets".to_string(),
            false => format!("set: {}", names.join(", ")),
        };
        report.push("environment", Status::Ok, detail);
    } else {
        report.push(
            "environment",
            Status::Fail,
            format!(
                "not set: {}. Export each before running (`export NAME=...`)",
                missing.join(", ")
            ),
        );
    }
    (source_ok, sink_ok)
}

/// The journal folder (and its credentials folder) exist owner-only and take files;
/// a folder not made yet is fine where its parent exists.
fn journal(report: &mut Report, dir: &Path) -> bool {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            match parent.map(|p| p.is_dir()) {
                Some(false) => report.push(
                    "journal",
                    Status::Fail,
                    format!(
                        "{shown} cannot be created: its parent folder does not exist; create it \
                         or change [journal] path"
                    ),
                ),
                _ => report.push(
                    "journal",
                    Status::Ok,
                    format!("{shown} does not exist yet; the first sync creates it owner-only"),
                ),
            }
        }
        Err(e) => report.push(
            "journal",
            Status::Fail,
            format!("cannot read {shown}: {e}; check [journal] path"),
        ),
        Ok(meta) if !meta.is_dir() => report.push(
            "journal",
            Status::Fail,
            format!("{shown} is not a folder; change [journal] path"),
        ),
        Ok(meta) => {
            if let Some(why) = not_owner_only(dir, &meta) {
                return report.push("journal", Status::Fail, why);
            }
            if let Some(lost) = crate::journal::lost_database(dir) {
                return report.push("journal", Status::Fail, lost);
            }
            let credentials = dir.join("credentials");
            if let Ok(meta) = std::fs::metadata(&credentials) {
                if let Some(why) = not_owner_only(&credentials, &meta) {
                    return report.push("journal", Status::Fail, why);
                }
            }
            let probe = dir.join(format!(".check-{}", std::process::id()));
            let written = std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe));
            match written {
                Ok(()) => report.push(
                    "journal",
                    Status::Ok,
                    format!("{shown} is writable and owner-only"),
                ),
                Err(e) => report.push(
                    "journal",
                    Status::Fail,
                    format!("cannot write in {shown} ({e}): the user running sync must own it"),
                ),
            }
        }
    }
}

#[cfg(unix)]
fn not_owner_only(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode != 0o700).then(|| {
        format!(
            "{} has mode {mode:04o}, not 0700: the journal holds names and emails sent, so \
             only its owner may read it. Run `chmod 700 {}`",
            path.display(),
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn not_owner_only(_: &Path, _: &std::fs::Metadata) -> Option<String> {
    None
}

/// One small read from Opter: a page of one customer, or the export files.
async fn opter(report: &mut Report, config: &Config, env: &dyn Env) {
    match &config.source {
        SourceConfig::OpterApi(source) => {
            let key = match config.secret(env, "[source] api_key_env", &source.api_key_env) {
                Ok(k) => k,
                Err(e) => {
                    report.push("opter", Status::Fail, e.to_string());
                    return;
                }
            };
            let mut one = source.clone();
            one.page_size = 1;
            // A doctor answers within seconds: a short budget for transient failures.
            let retry = RetryPolicy {
                budget: Duration::from_secs(10),
                max_server_wait: Duration::from_secs(5),
                ..RetryPolicy::default()
            };
            let read = match OpterApiSource::new(&one, key, retry) {
                Ok(api) => api.page(1, None).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(page) => report.push(
                    "opter",
                    Status::Ok,
                    match page.total {
                        Some(n) => {
                            format!("the API key reads the customer register ({n} customers)")
                        }
                        None => "the API key reads the customer register".to_string(),
                    },
                ),
                Err(Error::Config(m)) => report.push(
                    "opter",
                    Status::Fail,
                    format!("{m} ([source] api_key_env names {})", source.api_key_env),
                ),
                Err(e) => report.push(
                    "opter",
                    Status::Fail,
                    format!(
                        "{e}; check [source] base_url and customers_path, and that Opter is \
                         reachable from here"
                    ),
                ),
            };
        }
        SourceConfig::OpterExport(source) => {
            let read = match OpterExportSource::new(source) {
                // Counted page by page, never kept.
                Ok(files) => tokio::task::spawn_blocking(move || {
                    let mut customers = 0;
                    files
                        .read_into(None, |page| {
                            customers += page.len();
                            true
                        })
                        .map(|()| customers)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(Error::Other(anyhow::anyhow!(
                        "reading the export failed: {e}"
                    )))
                }),
                Err(e) => Err(e),
            };
            match read {
                Ok(customers) => report.push(
                    "opter",
                    Status::Ok,
                    format!(
                        "the export files read: {} customers ({}, {})",
                        customers,
                        file_name(&source.customers),
                        file_name(&source.references)
                    ),
                ),
                Err(e) => report.push("opter", Status::Fail, e.to_string()),
            };
        }
    }
}

/// The local clock against the register's `Date` header.
fn clock(report: &mut Report, skew: Option<chrono::Duration>) {
    let Some(skew) = skew else {
        return report.skip(
            "clock",
            "needs an answer from the register (its Date header)",
        );
    };
    let off = skew.abs();
    let how = match skew > chrono::Duration::zero() {
        true => "ahead of",
        false => "behind",
    };
    let seconds = off.num_seconds();
    if off > CLOCK_FAIL {
        report.push(
            "clock",
            Status::Fail,
            format!(
                "this machine's clock is {seconds} s {how} the register's: set it right (NTP); \
                 token expiry and the incremental read's five-minute overlap rely on it"
            ),
        );
    } else if off > CLOCK_WARN {
        report.push(
            "clock",
            Status::Warn,
            format!(
                "this machine's clock is {seconds} s {how} the register's; keep it in step \
                 (NTP), as token expiry relies on it"
            ),
        );
    } else {
        report.push(
            "clock",
            Status::Ok,
            format!("within {seconds} s of the register's"),
        );
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_status(seconds: i64) -> Status {
        let mut report = Report::default();
        clock(&mut report, Some(chrono::Duration::seconds(seconds)));
        report.lines[0].status
    }

    #[test]
    fn the_clock_warns_past_two_minutes_and_fails_past_five() {
        assert_eq!(clock_status(0), Status::Ok);
        assert_eq!(clock_status(-120), Status::Ok);
        assert_eq!(clock_status(121), Status::Warn);
        assert_eq!(clock_status(-300), Status::Warn);
        assert_eq!(clock_status(301), Status::Fail);
        assert_eq!(clock_status(-3600), Status::Fail);
        let mut report = Report::default();
        clock(&mut report, None);
        assert_eq!(report.lines[0].status, Status::Skipped);
    }
}
