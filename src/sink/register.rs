//! One descriptor per register product: everything the rest of the connector needs to
//! know about a register, so that adding one is one folder and one line in `REGISTERS`.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Sink;
use crate::config::values::Env;
use crate::mapping::RegisterRules;
use crate::retry::RetryPolicy;

/// A register product.
pub struct Register {
    /// The one name of the register: `[sink] kind` in the config, `--sink`, the `sink` of
    /// journal events and states, output, and the sandbox's routes (`/_sandbox/{name}`).
    pub name: &'static str,
    /// The fields the product accepts from us, with its published limits; its product
    /// name for messages is `rules.product`.
    pub rules: RegisterRules,
    /// The bundled mapping file (`mappings/{name}.toml`).
    pub mapping: &'static str,
    /// Register field names the journal stores by position (see `journal::positions`):
    /// set in the register's first release and never changed after, since the positions
    /// of every register after it follow from it; a field added later is stored by name.
    pub journal_fields: &'static [&'static str],
    /// Reads the product's own keys of `[sink]` (the shared keys removed).
    pub settings: fn(toml::Table) -> Result<Arc<dyn SinkSettings>, String>,
    /// Where the vendor says the product processes data, for the record of processing.
    pub processing: Processing,
}

/// What the register's vendor publishes about where it processes its customers' data.
/// Only a statement the vendor made, with its address; `None` where none was found, so
/// the record of processing asks the controller to take it from their agreement instead.
#[derive(Debug, Clone, Copy)]
pub struct Processing {
    pub statement: Option<&'static str>,
    pub source: Option<&'static str>,
}

/// Visma's Trust Centre on the products its transparency site covers (among them
/// eAccounting and Visma.net ERP).
pub const VISMA_TRUST_CENTRE: Processing = Processing {
    statement: Some(
        "Visma's Trust Centre states that data processing takes place in Europe and follows \
         European data protection rules, with separate data storage in Norway and Sweden \
         where national law requires it; its hosting and other third-party processors are \
         registered with their processing location.",
    ),
    source: Some("https://www.visma.com/trust-centre/transparency/"),
};

impl Register {
    /// The register named `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static Register> {
        super::REGISTERS.iter().copied().find(|r| r.name == name)
    }

    /// The names of all registers, quoted, for messages: `"eaccounting", "visma-net"`.
    pub fn names() -> String {
        super::REGISTERS
            .iter()
            .map(|r| format!("{:?}", r.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The product's name, for messages.
    pub fn product(&self) -> &'static str {
        self.rules.product
    }
}

impl PartialEq for Register {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Register {}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// What opening a sink needs besides its settings.
pub struct SinkContext<'a> {
    /// The config file, for messages.
    pub file: &'a Path,
    pub env: &'a dyn Env,
    /// The journal's `credentials/` folder (created owner-only on the first call), for
    /// grants a register rotates.
    pub credentials: &'a dyn Fn() -> crate::error::Result<PathBuf>,
    /// The journal's folder (it exists, owner-only), for small files a register keeps
    /// beside the journal (e-conomic's call count).
    pub journal: &'a Path,
    pub requests_per_minute: u32,
    pub retry: RetryPolicy,
}

/// A register's own `[sink]` settings, read by its descriptor.
pub trait SinkSettings: std::fmt::Debug + Send + Sync {
    /// Checks what serde cannot (URLs, variable names): `Err((key, why))`, where `key`
    /// is written as in messages (`[sink] api_base`).
    fn validate(&self) -> Result<(), (&'static str, String)>;

    /// The register's client, with the credentials its product uses.
    fn open(&self, context: &SinkContext<'_>) -> crate::error::Result<Arc<dyn Sink>>;

    /// For commands that only one product has (`auth` for eAccounting).
    fn as_any(&self) -> &dyn Any;

    /// Every URL the connector sends data or credentials to, for the record of processing.
    fn urls(&self) -> Vec<&str>;
}

/// Reads a product's settings struct from its `[sink]` keys.
pub fn settings_of<T>(table: toml::Table) -> Result<Arc<dyn SinkSettings>, String>
where
    T: SinkSettings + serde::de::DeserializeOwned + 'static,
{
    let settings: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| crate::error::without_values(&e.to_string()))?;
    Ok(Arc::new(settings))
}
