//! The TOML configuration of one tenant.
//!
//! Architecture invariant: the file never holds a secret. It names the environment
//! variables that do, and secrets are read into `SecretString`s, whose `Debug` prints
//! `[REDACTED]`, only when a command needs them.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sink::SinkKind;

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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum SourceConfig {
    #[serde(rename = "opter-api")]
    OpterApi(OpterApiConfig),
    /// Opter's Customers and References export files (xlsx or tab-separated).
    #[serde(rename = "opter-export")]
    OpterExport(Box<crate::source::OpterExportConfig>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpterApiConfig {
    /// The customer web's URL plus `/api`, e.g. `https://acme.opter.cloud/api`.
    pub base_url: String,
    /// Path of the customer register endpoint below `base_url`.
    #[serde(default = "default_customers_path")]
    pub customers_path: String,
    /// Name of the environment variable that holds the `x-api-key`.
    pub api_key_env: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
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
    pub product: SinkProduct,
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
#[serde(tag = "kind", deny_unknown_fields)]
pub enum SinkProduct {
    #[serde(rename = "eaccounting")]
    EAccounting(EAccountingConfig),
    #[serde(rename = "visma-net")]
    VismaNet(VismaNetConfig),
    #[serde(rename = "economic")]
    Economic(EconomicConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EAccountingConfig {
    /// e.g. `https://eaccountingapi.vismaonline.com/v2`
    pub api_base: String,
    /// e.g. `https://identity.vismaonline.com/connect/token`
    pub token_url: String,
    pub client_id: String,
    pub client_secret_env: String,
    /// Read once, to seed the first token exchange; afterwards the rotated token stored
    /// in the journal folder is used.
    pub refresh_token_env: String,
    /// For `auth login`; default: `token_url` with `/token` replaced by `/authorize`.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Loopback redirect registered for this client, for `auth login`.
    #[serde(default = "default_redirect_uri")]
    pub redirect_uri: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VismaNetConfig {
    /// e.g. `https://api.finance.visma.net` (`/v1/customer` below it).
    pub api_base: String,
    /// e.g. `https://connect.visma.com/connect/token`
    pub token_url: String,
    pub client_id: String,
    pub client_secret_env: String,
    /// The company's tenant GUID, from the Visma App Store invitation (not a secret).
    pub tenant_id: String,
    #[serde(default = "default_visma_net_scopes")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomicConfig {
    /// e.g. `https://restapi.e-conomic.com`
    pub api_base: String,
    /// Env var holding the app's `X-AppSecretToken`.
    pub app_secret_token_env: String,
    /// Env var holding the agreement's `X-AgreementGrantToken`.
    pub agreement_grant_token_env: String,
}

impl EAccountingConfig {
    /// The authorize endpoint: configured, or derived from a `.../token` URL.
    pub fn authorize_url(&self) -> Option<String> {
        self.authorize_url.clone().or_else(|| {
            self.token_url
                .strip_suffix("/token")
                .map(|base| format!("{base}/authorize"))
        })
    }
}

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
    source: SourceConfig,
    sink: toml::Table,
    journal: JournalConfig,
}

fn default_customers_path() -> String {
    "/Customers".into()
}
fn default_page_size() -> u32 {
    500
}
fn default_redirect_uri() -> String {
    "http://127.0.0.1:44300/callback".into()
}
fn default_scopes() -> Vec<String> {
    ["ea:api", "offline_access", "ea:sales"]
        .map(String::from)
        .to_vec()
}
fn default_visma_net_scopes() -> Vec<String> {
    [
        "vismanet_erp_service_api:read",
        "vismanet_erp_service_api:create",
        "vismanet_erp_service_api:update",
    ]
    .map(String::from)
    .to_vec()
}
fn default_max_retry_wait_secs() -> u64 {
    120
}
fn default_retry_budget_secs() -> u64 {
    120
}
fn default_keep_values_days() -> u32 {
    1095
}
fn default_flush_every() -> usize {
    crate::engine::DEFAULT_FLUSH_EVERY
}
fn default_concurrency() -> usize {
    4
}
fn default_requests_per_minute() -> u32 {
    600
}

/// Largest page the Opter adapter asks for; larger pages only cost memory.
pub const MAX_PAGE_SIZE: u32 = 1000;

impl Config {
    pub fn load(file: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::config(format!(
                "cannot read config file {}: {e}. Pass --config FILE, or create one with \
                 `opter-visma-sync sandbox --write-config {}` to try the tool.",
                file.display(),
                file.display()
            ))
        })?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| Error::config(format!("{}: {}", file.display(), e.to_string().trim())))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let sink = parse_sink(raw.sink)
            .map_err(|e| Error::config(format!("{}: [sink]: {}", file.display(), e.trim())))?;
        let mut config = Config {
            file: file.to_path_buf(),
            tenant: raw.tenant,
            source: raw.source,
            sink,
            journal: raw.journal,
        };
        config.journal.path = base.join(&config.journal.path);
        config.sink.mapping = base.join(&config.sink.mapping);
        if let SourceConfig::OpterExport(source) = &mut config.source {
            source.resolve(base);
        }
        config.validate()?;
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
        if let SourceConfig::OpterApi(source) = &self.source {
            self.validate_opter_api(source)?;
        }
        match &self.sink.product {
            SinkProduct::EAccounting(sink) => {
                check_url(&sink.api_base).or_else(|why| bad("[sink] api_base", why))?;
                check_url(&sink.token_url).or_else(|why| bad("[sink] token_url", why))?;
                if let Some(url) = &sink.authorize_url {
                    check_url(url).or_else(|why| bad("[sink] authorize_url", why))?;
                }
                check_url(&sink.redirect_uri).or_else(|why| bad("[sink] redirect_uri", why))?;
                if sink.client_id.trim().is_empty() {
                    return bad("[sink] client_id", "must not be empty".into());
                }
                check_env_name(&sink.client_secret_env)
                    .or_else(|why| bad("[sink] client_secret_env", why))?;
                check_env_name(&sink.refresh_token_env)
                    .or_else(|why| bad("[sink] refresh_token_env", why))?;
            }
            SinkProduct::VismaNet(sink) => {
                check_url(&sink.api_base).or_else(|why| bad("[sink] api_base", why))?;
                check_url(&sink.token_url).or_else(|why| bad("[sink] token_url", why))?;
                if sink.client_id.trim().is_empty() {
                    return bad("[sink] client_id", "must not be empty".into());
                }
                check_env_name(&sink.client_secret_env)
                    .or_else(|why| bad("[sink] client_secret_env", why))?;
                if uuid::Uuid::parse_str(&sink.tenant_id).is_err() {
                    return bad(
                        "[sink] tenant_id",
                        "must be the company's tenant GUID from the Visma App Store \
                         invitation, e.g. \"3f1c0b8e-5a2d-4c7e-9b14-6d2e8f0a7c31\""
                            .into(),
                    );
                }
            }
            SinkProduct::Economic(sink) => {
                check_url(&sink.api_base).or_else(|why| bad("[sink] api_base", why))?;
                check_env_name(&sink.app_secret_token_env)
                    .or_else(|why| bad("[sink] app_secret_token_env", why))?;
                check_env_name(&sink.agreement_grant_token_env)
                    .or_else(|why| bad("[sink] agreement_grant_token_env", why))?;
            }
        }
        let sink = &self.sink;
        if sink.concurrency == 0 || sink.concurrency > 64 {
            return bad(
                "[sink] concurrency",
                format!("is {}; use 1 to 64", sink.concurrency),
            );
        }
        if !(1..=10_000).contains(&self.journal.flush_every) {
            return bad(
                "[journal] flush_every",
                format!("is {}; use 1 to 10000", self.journal.flush_every),
            );
        }
        if sink.max_retry_wait_secs == 0 {
            return bad("[sink] max_retry_wait_secs", "must be at least 1".into());
        }
        if sink.retry_budget_secs == 0 {
            return bad("[sink] retry_budget_secs", "must be at least 1".into());
        }
        if sink.requests_per_minute == 0 {
            return bad("[sink] requests_per_minute", "must be at least 1".into());
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
        if !(1..=MAX_PAGE_SIZE).contains(&source.page_size) {
            return bad(
                "[source] page_size",
                format!("is {}; use 1 to {MAX_PAGE_SIZE}", source.page_size),
            );
        }
        check_env_name(&source.api_key_env).or_else(|why| bad("[source] api_key_env", why))?;
        Ok(())
    }

    /// Reads the secret named by `key` (a config key holding an env-var name).
    pub fn secret(&self, env: &dyn Env, key: &str, var: &str) -> Result<SecretString> {
        match env.var(var) {
            Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
            _ => Err(Error::config(format!(
                "environment variable {var} is not set ({}: {key} names it). Export it \
                 before running, e.g. `export {var}=...`.",
                self.file.display()
            ))),
        }
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

    /// The eAccounting settings, for `auth` (which only eAccounting needs).
    pub fn eaccounting(&self) -> Option<&EAccountingConfig> {
        match &self.sink.product {
            SinkProduct::EAccounting(s) => Some(s),
            _ => None,
        }
    }

    pub fn sink_kind(&self) -> SinkKind {
        match self.sink.product {
            SinkProduct::EAccounting(_) => SinkKind::EAccounting,
            SinkProduct::VismaNet(_) => SinkKind::VismaNet,
            SinkProduct::Economic(_) => SinkKind::Economic,
        }
    }

    /// The sink's `kind`, which also keys its state in the journal.
    pub fn sink_name(&self) -> &'static str {
        self.sink_kind().name()
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
    if !table.contains_key("kind") {
        return Err(
            "missing key `kind`: one of \"eaccounting\", \"visma-net\", \"economic\"".into(),
        );
    }
    let product: SinkProduct = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let common: SinkCommon = toml::Value::Table(common)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    Ok(SinkConfig {
        mapping: common.mapping,
        concurrency: common.concurrency,
        requests_per_minute: common.requests_per_minute,
        max_retry_wait_secs: common.max_retry_wait_secs,
        retry_budget_secs: common.retry_budget_secs,
        product,
    })
}

fn check_url(value: &str) -> std::result::Result<(), String> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(_) => Err(format!("{value:?} is not an http(s) URL")),
        Err(e) => Err(format!("{value:?} is not a URL ({e})")),
    }
}

fn check_env_name(value: &str) -> std::result::Result<(), String> {
    let ok = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not an environment variable name; put the NAME of the variable \
             that holds the secret here (e.g. \"VISMA_CLIENT_SECRET\"), never the secret itself"
        ))
    }
}

/// Where secrets come from: the process environment, or a map in tests and the demo.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
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
            ("kind = \"eaccounting\"", "kind = \"fortnox\"", "fortnox"),
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
