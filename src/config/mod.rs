//! The TOML configuration of one tenant.
//!
//! Architecture invariant: the file never holds a secret. It names the environment
//! variables that do, and secrets are read into `SecretString`s, whose `Debug` prints
//! `[REDACTED]`, only when a command needs them.

pub mod schedule;
pub mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{toml_error, without_values, Error, Result};
use crate::sink::{Register, SinkSettings};
pub use crate::source::opter_api::OpterApiConfig;
use values::{check_env_name, check_url};
pub use values::{Env, ProcessEnv};

/// Default name of the config file, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "opter-visma-sync.toml";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for error messages.
    pub file: PathBuf,
    pub tenant: String,
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub journal: JournalConfig,
    /// When `serve` runs this tenant (`[schedule]`, optional).
    pub schedule: schedule::Schedule,
}

/// The `[source]` table, by its `kind`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// `kind = "opter-api"`.
    OpterApi(OpterApiConfig),
    /// `kind = "opter-export"`: Opter's Customers and References export files (xlsx or
    /// tab-separated).
    OpterExport(Box<crate::source::OpterExportConfig>),
}

/// The `[sink]` table: settings every register shares, and the product's own.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Mapping file, relative to the config file's folder.
    pub mapping: PathBuf,
    /// Customers written at once.
    pub concurrency: usize,
    /// Client-side limit, below the register's own (600 per minute for eAccounting).
    pub requests_per_minute: u32,
    /// Longest server-requested wait honoured (`Retry-After`, "Try again in N seconds").
    pub max_retry_wait_secs: u64,
    /// Total time one call may spend on retries before its customer counts as failed.
    pub retry_budget_secs: u64,
    /// The register (`kind`).
    pub register: &'static Register,
    /// The register's own keys, read by its descriptor.
    pub product: Arc<dyn SinkSettings>,
}

/// The `[sink]` keys every register shares; split off before the product's keys are
/// read, so each product's struct can still refuse unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkCommon {
    mapping: PathBuf,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_requests_per_minute")]
    requests_per_minute: u32,
    #[serde(default = "default_max_retry_wait_secs")]
    max_retry_wait_secs: u64,
    #[serde(default = "default_retry_budget_secs")]
    retry_budget_secs: u64,
}

const SINK_COMMON_KEYS: [&str; 5] = [
    "mapping",
    "concurrency",
    "requests_per_minute",
    "max_retry_wait_secs",
    "retry_budget_secs",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal folder, relative to the config file's folder.
    pub path: PathBuf,
    /// Customers per group commit: intents of a batch are flushed once before its
    /// requests, outcomes once after. 1 flushes per customer (slower, same guarantees).
    #[serde(default = "default_flush_every")]
    pub flush_every: usize,
    /// Values sent (names, emails) are kept this long for audit, then removed from the
    /// events at the start of a run; hashes stay, so the chain still verifies.
    #[serde(default = "default_keep_values_days")]
    pub keep_values_days: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tenant: String,
    source: toml::Table,
    sink: toml::Table,
    journal: JournalConfig,
    schedule: Option<toml::Table>,
}

fn default_max_retry_wait_secs() -> u64 {
    120
}
fn default_retry_budget_secs() -> u64 {
    120
}
/// The longest retention a config may name: a hundred years.
const MOST_KEEP_VALUES_DAYS: u32 = 36_500;

/// A day: no register asks for a longer wait, and a run must end.
const MOST_RETRY_WAIT_SECS: u64 = 86_400;
/// A week of retrying one call.
const MOST_RETRY_BUDGET_SECS: u64 = 604_800;
/// Far above any register's limit; the sandbox's "no limit" is a million.
const MOST_REQUESTS_PER_MINUTE: u64 = 10_000_000;

fn default_keep_values_days() -> u32 {
    1095
}
fn default_flush_every() -> usize {
    DEFAULT_FLUSH_EVERY
}
fn default_concurrency() -> usize {
    4
}
fn default_requests_per_minute() -> u32 {
    600
}

/// Customers per group commit by default: durability costs two fsyncs per batch, not
/// per customer.
pub const DEFAULT_FLUSH_EVERY: usize = 64;

pub use crate::source::opter_api::MAX_PAGE_SIZE;

impl Config {
    pub fn load(file: &Path) -> Result<Config> {
        refuse_journal_file(file, "--config")?;
        let text = std::fs::read_to_string(file).map_err(|e| {
            let hint = match cfg!(feature = "sandbox") {
                true => format!(
                    ", or create one with `opter-visma-sync sandbox --write-config {}` to \
                     try the tool",
                    file.display()
                ),
                false => String::new(),
            };
            Error::config(format!(
                "cannot read config file {}: {e}. Pass --config FILE{hint}.",
                file.display(),
            ))
        })?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Config> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| Error::config(toml_error(file, text, &e)))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let source = parse_source(raw.source)
            .map_err(|e| Error::config(format!("{}: [source]: {}", file.display(), e.trim())))?;
        let sink = parse_sink(raw.sink)
            .map_err(|e| Error::config(format!("{}: [sink]: {}", file.display(), e.trim())))?;
        let schedule = schedule::Schedule::parse(raw.schedule, file)?;
        let mut config = Config {
            file: file.to_path_buf(),
            tenant: raw.tenant,
            source,
            sink,
            journal: raw.journal,
            schedule,
        };
        config.journal.path = base.join(&config.journal.path);
        config.sink.mapping = base.join(&config.sink.mapping);
        if let SourceConfig::OpterExport(source) = &mut config.source {
            source.resolve(base);
        }
        config.validate()?;
        refuse_journal_file(&config.sink.mapping, "[sink] mapping")?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::config(format!(
                "{}: {key}: {why}",
                self.file.display()
            )))
        };
        if self.tenant.trim().is_empty() {
            return bad("tenant", "must not be empty".into());
        }
        match &self.source {
            SourceConfig::OpterApi(source) => self.validate_opter_api(source)?,
            SourceConfig::OpterExport(source) => {
                source.check_bounds().or_else(|(key, why)| bad(key, why))?
            }
        }
        if let Err((key, why)) = self.sink.product.validate() {
            return bad(key, why);
        }
        let sink = &self.sink;
        if sink.concurrency == 0 || sink.concurrency > 64 {
            return bad(
                "[sink] concurrency",
                format!("is {}; use 1 to 64", sink.concurrency),
            );
        }
        if self.journal.keep_values_days > MOST_KEEP_VALUES_DAYS {
            return bad(
                "[journal] keep_values_days",
                format!(
                    "is {}; use 0 to {MOST_KEEP_VALUES_DAYS} (a hundred years)",
                    self.journal.keep_values_days
                ),
            );
        }
        if !(1..=10_000).contains(&self.journal.flush_every) {
            return bad(
                "[journal] flush_every",
                format!("is {}; use 1 to 10000", self.journal.flush_every),
            );
        }
        for (key, value, most) in [
            (
                "[sink] max_retry_wait_secs",
                sink.max_retry_wait_secs,
                MOST_RETRY_WAIT_SECS,
            ),
            (
                "[sink] retry_budget_secs",
                sink.retry_budget_secs,
                MOST_RETRY_BUDGET_SECS,
            ),
            (
                "[sink] requests_per_minute",
                u64::from(sink.requests_per_minute),
                MOST_REQUESTS_PER_MINUTE,
            ),
        ] {
            if !(1..=most).contains(&value) {
                return bad(key, format!("is {value}; use 1 to {most}"));
            }
        }
        Ok(())
    }

    fn validate_opter_api(&self, source: &OpterApiConfig) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::config(format!(
                "{}: {key}: {why}",
                self.file.display()
            )))
        };
        check_url(&source.base_url).or_else(|why| bad("[source] base_url", why))?;
        if !source.customers_path.starts_with('/') {
            return bad(
                "[source] customers_path",
                "must start with '/', e.g. \"/Customers\"".into(),
            );
        }
        source.check_bounds().or_else(|(key, why)| bad(key, why))?;
        check_env_name(&source.api_key_env).or_else(|why| bad("[source] api_key_env", why))?;
        Ok(())
    }

    /// Reads the secret named by `key` (a config key holding an env-var name).
    pub fn secret(&self, env: &dyn Env, key: &str, var: &str) -> Result<SecretString> {
        values::secret(&self.file, env, key, var)
    }

    /// The retry policy the config asks for.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        let sink = &self.sink;
        crate::retry::RetryPolicy {
            max_server_wait: std::time::Duration::from_secs(sink.max_retry_wait_secs),
            budget: std::time::Duration::from_secs(sink.retry_budget_secs),
            ..crate::retry::RetryPolicy::default()
        }
    }

    /// The register's own settings, when they are of type `T` (for commands only one
    /// product has, such as `auth` for eAccounting).
    pub fn settings<T: 'static>(&self) -> Option<&T> {
        self.sink.product.as_any().downcast_ref::<T>()
    }

    /// The sink's `kind`, which also keys its state in the journal.
    pub fn sink_name(&self) -> &'static str {
        self.sink.register.name
    }
}

/// Refuses to read settings from inside a journal folder (its database or its
/// `credentials/`): a config or mapping pointed there by mistake would otherwise have
/// its first line (a refresh token, say) read as settings.
pub fn refuse_journal_file(file: &Path, key: &str) -> Result<()> {
    let Ok(full) = std::fs::canonicalize(file) else {
        return Ok(()); // reading it will say what is wrong
    };
    let journal = full
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("journal.lock").is_file() || dir.join("sled").join("conf").is_file());
    match journal {
        Some(dir) => Err(Error::config(format!(
            "{key} {} is inside the journal folder {}, which holds the journal and the \
             register's credentials, never settings; point {key} at the config's own file",
            file.display(),
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Reads the `[source]` table as the source its `kind` names. Read from a value (not
/// as a tagged enum) so that an error names the key it is about.
fn parse_source(mut table: toml::Table) -> std::result::Result<SourceConfig, String> {
    const KINDS: &str = "`opter-api` or `opter-export`";
    let value = |table: toml::Table| toml::Value::Table(table);
    let named = |e: toml::de::Error| without_values(&e.to_string());
    match table.remove("kind") {
        None => Err(format!("missing key `kind`: {KINDS}")),
        Some(toml::Value::String(kind)) => match kind.as_str() {
            "opter-api" => value(table)
                .try_into()
                .map(SourceConfig::OpterApi)
                .map_err(named),
            "opter-export" => value(table)
                .try_into()
                .map(|c| SourceConfig::OpterExport(Box::new(c)))
                .map_err(named),
            _ => Err(format!(
                "`kind` names no source this connector reads; use {KINDS}"
            )),
        },
        Some(_) => Err(format!("`kind` must be {KINDS}")),
    }
}

/// Splits the `[sink]` table into the shared keys and the product's own.
fn parse_sink(mut table: toml::Table) -> std::result::Result<SinkConfig, String> {
    let mut common = toml::Table::new();
    for key in SINK_COMMON_KEYS {
        if let Some(v) = table.remove(key) {
            common.insert(key.to_string(), v);
        }
    }
    let register = match table.remove("kind") {
        None => return Err(format!("missing key `kind`: one of {}", Register::names())),
        Some(toml::Value::String(kind)) => Register::named(&kind).ok_or_else(|| {
            let names: Vec<String> = crate::sink::REGISTERS
                .iter()
                .map(|r| format!("`{}`", r.name))
                .collect();
            format!(
                "`kind` names no register this connector writes to; use one of {}",
                names.join(", ")
            )
        })?,
        Some(_) => return Err(format!("`kind` must be one of {}", Register::names())),
    };
    let product = (register.settings)(table)?;
    let common: SinkCommon = toml::Value::Table(common)
        .try_into()
        .map_err(|e: toml::de::Error| without_values(&e.to_string()))?;
    Ok(SinkConfig {
        mapping: common.mapping,
        concurrency: common.concurrency,
        requests_per_minute: common.requests_per_minute,
        max_retry_wait_secs: common.max_retry_wait_secs,
        retry_budget_secs: common.retry_budget_secs,
        register,
        product,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
tenant = "Demo Åkeri"
[source]
kind = "opter-api"
base_url = "http://127.0.0.1:1/opter/api"
api_key_env = "OPTER_API_KEY"
page_size = 200
[sink]
kind = "eaccounting"
api_base = "http://127.0.0.1:1/visma/v2"
token_url = "http://127.0.0.1:1/visma/connect/token"
client_id = "demo"
client_secret_env = "VISMA_CLIENT_SECRET"
refresh_token_env = "VISMA_REFRESH_TOKEN"
mapping = "eaccounting.toml"
[journal]
path = "journal"
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/ovs/sync.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn retry_waits_are_capped_as_configured() {
        let c = parse(&GOOD.replace("[journal]", "max_retry_wait_secs = 30\n[journal]")).unwrap();
        let policy = c.retry_policy();
        assert_eq!(policy.max_server_wait, std::time::Duration::from_secs(30));
        let default = parse(GOOD).unwrap().retry_policy();
        assert_eq!(default.max_server_wait, std::time::Duration::from_secs(120));
    }

    #[test]
    fn a_secret_with_a_line_break_is_refused_naming_the_variable_not_the_value() {
        let env: std::collections::HashMap<String, String> = [(
            "VISMA_CLIENT_SECRET".to_string(),
            "s3cret-VALUE\r\n".to_string(),
        )]
        .into();
        let e = crate::config::values::secret(
            Path::new("/etc/ovs/sync.toml"),
            &env,
            "client_secret_env",
            "VISMA_CLIENT_SECRET",
        )
        .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "exit 2");
        let e = e.to_string();
        assert!(
            e.contains("VISMA_CLIENT_SECRET") && e.contains("control character"),
            "{e}"
        );
        assert!(!e.contains("s3cret-VALUE"), "{e}");
    }

    #[test]
    fn every_number_in_the_config_is_range_checked_not_a_panic() {
        let keys = [
            ("[sink]", "concurrency"),
            ("[sink]", "requests_per_minute"),
            ("[sink]", "max_retry_wait_secs"),
            ("[sink]", "retry_budget_secs"),
            ("[source]", "page_size"),
            ("[journal]", "keep_values_days"),
            ("[journal]", "flush_every"),
        ];
        for (table, key) in keys {
            let zero_keeps_nothing = key == "keep_values_days";
            let values = ["0", "4294967296", "18446744073709551615", "-1", "1e9"];
            for value in values.into_iter().skip(usize::from(zero_keeps_nothing)) {
                let line = format!("{key} = {value}");
                let text = GOOD
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{key} ")))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .replace(table, &format!("{table}\n{line}"));
                let shown = error(&text);
                assert!(
                    shown.contains(key) && shown.contains("sync.toml"),
                    "{line}: {shown}"
                );
            }
        }
    }

    #[test]
    fn a_retention_past_a_hundred_years_is_refused_by_name() {
        let e = error(&format!("{GOOD}keep_values_days = 100000000\n"));
        assert!(e.contains("keep_values_days") && e.contains("36500"), "{e}");
        let c = parse(&format!("{GOOD}keep_values_days = 36500\n")).unwrap();
        assert_eq!(c.journal.keep_values_days, 36_500);
    }

    #[test]
    fn a_good_config_resolves_paths_against_its_folder() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.journal.path, Path::new("/etc/ovs/journal"));
        assert_eq!(c.sink.mapping, Path::new("/etc/ovs/eaccounting.toml"));
        assert_eq!(c.sink.concurrency, 4);
    }

    #[test]
    fn a_missing_key_is_named_with_the_file() {
        let e = error(&GOOD.replace("client_id = \"demo\"\n", ""));
        assert!(
            e.contains("/etc/ovs/sync.toml") && e.contains("client_id"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let e = error(&GOOD.replace("page_size = 200", "page_size = 200\nclient_secret = \"x\""));
        assert!(
            e.contains("client_secret") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_written_where_an_env_name_belongs_is_refused() {
        let e = error(&GOOD.replace("\"VISMA_CLIENT_SECRET\"", "\"s3cr3t-value!\""));
        assert!(e.contains("[sink] client_secret_env"), "{e}");
    }

    #[test]
    fn wrong_values_name_their_key() {
        for (from, to, key) in [
            ("page_size = 200", "page_size = 0", "[source] page_size"),
            ("http://127.0.0.1:1/visma/v2", "ftp://x", "[sink] api_base"),
            (
                "kind = \"eaccounting\"",
                "kind = \"fortnox\"",
                "[sink]: `kind`",
            ),
        ] {
            let e = error(&GOOD.replace(from, to));
            assert!(e.contains(key) && e.contains("sync.toml"), "{e}");
        }
    }

    #[test]
    fn a_missing_secret_names_the_variable_and_the_key() {
        let c = parse(GOOD).unwrap();
        let env = std::collections::HashMap::new();
        let e = c
            .secret(&env, "[source] api_key_env", "OPTER_API_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OPTER_API_KEY") && e.contains("[source] api_key_env"),
            "{e}"
        );
    }

    #[test]
    fn secrets_do_not_print_in_debug() {
        let c = parse(GOOD).unwrap();
        let env: std::collections::HashMap<_, _> =
            [("OPTER_API_KEY".to_string(), "very-secret-key".to_string())].into();
        let key = c
            .secret(&env, "[source] api_key_env", "OPTER_API_KEY")
            .unwrap();
        assert!(!format!("{key:?}").contains("very-secret-key"));
    }
}
