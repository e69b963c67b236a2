//! `init`: writes a commented config for a new tenant (and the register's bundled
//! mapping beside it), then says which environment variables to set and what to run
//! next. The file holds no secret, only the names of the variables that do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{InitArgs, InitSource};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sink::Register;

/// A secret the written config names: its variable and where its value comes from.
struct Secret {
    var: &'static str,
    what: &'static str,
}

pub fn init(config_file: &Path, args: &InitArgs) -> Result<ExitCode> {
    let file = args
        .out
        .clone()
        .unwrap_or_else(|| config_file.to_path_buf());
    let written = write(&file, args.register, args.source, args.force)?;
    let mut out = std::io::stdout().lock();
    next_steps(&mut out, &file, args.register, args.source, &written)
        .context("cannot write output")?;
    Ok(ExitCode::SUCCESS)
}

/// What `write` did with the mapping file.
pub enum MappingFile {
    Written(PathBuf),
    Kept(PathBuf),
}

/// Writes the config (0600) and, unless one is there, the mapping beside it; checks
/// that the config loads as written.
pub fn write(
    file: &Path,
    register: &'static Register,
    source: InitSource,
    force: bool,
) -> Result<MappingFile> {
    if file.exists() && !force {
        return Err(Error::config(format!(
            "{} already exists; init never overwrites a config without --force (or choose \
             another file with --out)",
            file.display()
        )));
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Error::Other)?;
    let mapping_name = format!("{}-mapping.toml", register.name);
    let text = config_text(register, source, &mapping_name)?;
    // Written to memory first: a template that does not load is a bug, not a file.
    Config::parse(&text, file)?;
    write_private(file, &text)?;
    let mapping = file.with_file_name(&mapping_name);
    if mapping.exists() {
        return Ok(MappingFile::Kept(mapping));
    }
    write_private(&mapping, register.mapping)?;
    Ok(MappingFile::Written(mapping))
}

/// Writes `text` to `file`, readable and writable by its owner only.
fn write_private(file: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()));
    written
        .with_context(|| format!("cannot write {}", file.display()))
        .map_err(Error::Other)?;
    // An existing file (--force) keeps its old mode through `open`.
    crate::journal::owner_only(file, 0o600).map_err(Error::Other)
}

fn secrets(register: &Register, source: InitSource) -> Vec<Secret> {
    let mut secrets = Vec::new();
    if source == InitSource::Api {
        secrets.push(Secret {
            var: "OPTER_API_KEY",
            what: "an Opter API key (Settings > API access) granted the customer register",
        });
    }
    match register.name {
        "eaccounting" => {
            secrets.push(Secret {
                var: "VISMA_CLIENT_SECRET",
                what: "your client's secret from the Visma Developer Portal",
            });
            secrets.push(Secret {
                var: "VISMA_REFRESH_TOKEN",
                what: "optional: `auth login` stores a login instead",
            });
        }
        "visma-net" => secrets.push(Secret {
            var: "VISMA_NET_CLIENT_SECRET",
            what: "your client's secret from the Visma Developer Portal",
        }),
        _ => {
            secrets.push(Secret {
                var: "ECONOMIC_APP_SECRET_TOKEN",
                what: "your app's X-AppSecretToken (e-conomic developer site)",
            });
            secrets.push(Secret {
                var: "ECONOMIC_AGREEMENT_GRANT_TOKEN",
                what: "the agreement's X-AgreementGrantToken, given when it granted access",
            });
        }
    }
    secrets
}

fn next_steps(
    out: &mut impl Write,
    file: &Path,
    register: &Register,
    source: InitSource,
    mapping: &MappingFile,
) -> std::io::Result<()> {
    let shown = file.display();
    let (mapping_path, mapping_note) = match mapping {
        MappingFile::Written(p) => (p, "written"),
        MappingFile::Kept(p) => (p, "kept as it was"),
    };
    writeln!(
        out,
        "Wrote {shown} ({}, {}), readable by you only; mapping {} {mapping_note}.",
        register.product(),
        match source {
            InitSource::Api => "from Opter's API",
            InitSource::Export => "from Opter's export files",
        },
        mapping_path.display()
    )?;
    writeln!(
        out,
        "\nSet these environment variables where sync runs (the config names them; their \
         values never go in a file):"
    )?;
    let secrets = secrets(register, source);
    let width = secrets.iter().map(|s| s.var.len()).max().unwrap_or(0) + 4;
    for s in &secrets {
        let export = format!("export {}=...", s.var);
        writeln!(out, "  {export:<w$}  # {}", s.what, w = width + 11)?;
    }
    let config = shell_word(&shown.to_string());
    writeln!(out, "\nNext:")?;
    let mut steps = vec![
        format!("Edit {shown}: every line marked CHANGE."),
        format!(
            "Edit {}: the constants, from your company's register.",
            mapping_path.display()
        ),
    ];
    if register.name == "eaccounting" {
        steps.push(format!(
            "opter-visma-sync --config {config} auth login    # log in to Visma once"
        ));
    }
    steps.push(format!(
        "opter-visma-sync --config {config} check         # every line should say ok"
    ));
    steps.push(format!(
        "opter-visma-sync --config {config} sync --dry-run  # what would be sent; nothing is"
    ));
    for (n, step) in steps.iter().enumerate() {
        writeln!(out, "  {}. {step}", n + 1)?;
    }
    Ok(())
}

/// A path as one shell word.
fn shell_word(text: &str) -> String {
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| text.to_string())
}

fn config_text(register: &Register, source: InitSource, mapping: &str) -> Result<String> {
    let sink = match register.name {
        "eaccounting" => EACCOUNTING,
        "visma-net" => VISMA_NET,
        "economic" => ECONOMIC,
        other => {
            return Err(Error::config(format!(
                "init has no template for {other} yet; start from the README's [sink] example"
            )))
        }
    };
    let source = match source {
        InitSource::Api => SOURCE_API,
        InitSource::Export => SOURCE_EXPORT,
    };
    Ok(format!(
        "{HEADER}\n{source}\n{}\n{JOURNAL}",
        sink.replace("{common}", SINK_COMMON)
            .replace("{mapping}", mapping)
    ))
}

const HEADER: &str = r#"# opter-visma-sync: one tenant's config.
#
# Secrets are never written here. Keys ending in _env hold the NAME of an environment
# variable, and the secret is that variable's value. Relative paths are relative to this
# file's folder. Lines marked CHANGE need your values; `check` tells what is still wrong.

# A label for people (messages, the journal's runs). CHANGE
tenant = "Your Company AB"
"#;

const SOURCE_API: &str = r#"# Where customers come from: Opter's REST API.
[source]
kind = "opter-api"
# Your Opter customer web's URL plus /api. CHANGE
base_url = "https://your-company.opter.cloud/api"
customers_path = "/Customers"          # the customer register endpoint below base_url
# The variable holding the x-api-key. Make the key in Opter under Settings > API access
# and grant it the customer register on its Access tab.
api_key_env = "OPTER_API_KEY"
page_size = 500                        # customers per request, 1 to 1000
# max_customers = 1000000              # a read past this stops and writes nothing
"#;

const SOURCE_EXPORT: &str = r#"# Where customers come from: Opter's exports (File > Export to Excel, the "Customers"
# and "References" registers), as .xlsx or tab-separated .txt, refreshed before each sync.
[source]
kind = "opter-export"
customers = "export/customers.xlsx"    # CHANGE to where the exports are dropped
references = "export/references.xlsx"  # CHANGE
# A file past these stops the read and writes nothing (defaults shown):
# max_rows = 2000000                   # rows per file
# max_unpacked_mb = 512                # what an .xlsx may unpack to
# max_shared_strings = 10000000        # texts in an .xlsx's shared table
# Only where your headings differ; English and Swedish exports are recognised as they
# are:
# [source.columns]
# customer_code = "Kund"
"#;

const SINK_COMMON: &str = r#"# What every register shares (defaults shown):
mapping = "{mapping}"   # which Opter field goes where, and the register's constants
concurrency = 4                        # requests in flight
# requests_per_minute = 600            # client-side limit (eAccounting allows 600)
# max_retry_wait_secs = 120            # cap on a wait the register asks for (Retry-After)
# retry_budget_secs = 120              # time one call may spend retrying before it fails"#;

const EACCOUNTING: &str = r#"# Where customers go: Visma eAccounting (eEkonomi / Spiris).
[sink]
kind = "eaccounting"
api_base = "https://eaccountingapi.vismaonline.com/v2"
token_url = "https://identity.vismaonline.com/connect/token"
# Your integration's client from the Visma Developer Portal. CHANGE
client_id = "your-client-id"
client_secret_env = "VISMA_CLIENT_SECRET"
# Used once, to seed the login, if set; `auth login` stores one instead. Visma's refresh
# tokens work once: the rotated one is kept in the journal folder's credentials/.
refresh_token_env = "VISMA_REFRESH_TOKEN"
# For `auth login`: the loopback redirect registered for the client, and the scopes
# (customers need ea:api and ea:sales; offline_access gives the refresh token).
# redirect_uri = "http://127.0.0.1:44300/callback"
# scopes = ["ea:api", "offline_access", "ea:sales"]
{common}
"#;

const VISMA_NET: &str = r#"# Where customers go: Visma.net ERP (Financials), machine to machine.
[sink]
kind = "visma-net"
api_base = "https://api.finance.visma.net"             # /v1/customer below it
token_url = "https://connect.visma.com/connect/token"
# Your integration's client from the Visma Developer Portal. CHANGE
client_id = "your-client-id"
client_secret_env = "VISMA_NET_CLIENT_SECRET"
# The COMPANY's tenant id (a GUID) from the Visma App Store invitation; not a secret.
# With the customer's tenant instead, tokens are issued but every call is refused. CHANGE
tenant_id = "00000000-0000-0000-0000-000000000000"
# scopes = ["vismanet_erp_service_api:read", "vismanet_erp_service_api:create",
#           "vismanet_erp_service_api:update"]
{common}
"#;

const ECONOMIC: &str = r#"# Where customers go: Visma e-conomic (REST API); two tokens, no login.
[sink]
kind = "economic"
api_base = "https://restapi.e-conomic.com"
# Your app's X-AppSecretToken, and the agreement's X-AgreementGrantToken (given when the
# agreement's administrator grants the app access).
app_secret_token_env = "ECONOMIC_APP_SECRET_TOKEN"
agreement_grant_token_env = "ECONOMIC_AGREEMENT_GRANT_TOKEN"
{common}
"#;

const JOURNAL: &str = r#"# The local journal: every write to the register, owner-only (0700).
[journal]
path = "journal"
# flush_every = 64                     # customers per group commit
# keep_values_days = 1095              # how long the values sent are kept for audit
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::REGISTERS;

    #[test]
    fn every_template_loads_with_the_config_loader() {
        for register in REGISTERS {
            for source in [InitSource::Api, InitSource::Export] {
                let text = config_text(register, source, "m.toml").unwrap();
                let config = Config::parse(&text, Path::new("/etc/ovs/sync.toml"))
                    .unwrap_or_else(|e| panic!("{} {source:?}: {e}\n{text}", register.name));
                assert_eq!(config.sink.register, *register);
                assert!(!text.contains("{common}") && !text.contains("{mapping}"));
            }
        }
    }
}
