//! Sinks: write permitted customers into a Visma customer register.
//!
//! Architecture invariant: a sink only ever receives a `MappedRecord`, which the mapping
//! layer built from permitted fields and constants; it has no way to reach Opter data.
pub mod auth;
pub mod eaccounting;
pub mod economic;
pub mod http;
pub mod visma_net;

pub use eaccounting::EAccountingSink;
pub use economic::EconomicSink;
pub use visma_net::VismaNetSink;

use serde_json::Value;

use crate::mapping::MappedRecord;

/// Why a write did not happen, in the classes the engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The register refused the content (400/404/409...): recorded, retried next run.
    #[error("rejected by the register (HTTP {status}{}): {message}", code.as_deref().map(|c| format!(", error {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Transient trouble that outlasted the retry budget: recorded, retried next run.
    #[error("failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Failed {
        status: Option<u16>,
        message: String,
    },
    /// Creating failed because the register already has a customer with this number
    /// (a lost journal, or a create whose answer never arrived): find it and adopt it.
    #[error("the register already has a customer with this number (HTTP {status}): {message}")]
    NumberTaken { status: u16, message: String },
    /// The register refused the setup itself (wrong tenant, unknown client): a person
    /// must fix the configuration; nothing is sent until then.
    #[error("{0}")]
    Config(String),
    /// The stored authorization is gone; nothing more can be sent until a person logs in.
    #[error("{0}")]
    NeedsLogin(String),
    /// Nothing more can be sent until the setup is repaired (client refused, disk full).
    #[error("{0}")]
    Fatal(String),
}

/// A successful write: the register's id of the customer and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub remote_id: String,
    pub status: u16,
}

/// A customer as the register holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The register's id: what `get`, `update` and `erase` take.
    pub id: String,
    /// The register's values for the fields a mapping can name, keyed by the mapping's
    /// register field names (dotted for nested ones, e.g. `mainContact.name`): compared
    /// with what we would send, so an adopted customer is only updated if it differs.
    pub fields: Value,
    /// The register's own record(s) as served, for a data subject's access export.
    pub record: Value,
}

/// What `erase` did to the customer in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    Deleted {
        status: u16,
    },
    /// The register refuses to delete it (it has transactions, or has no delete):
    /// personal fields were overwritten and the customer deactivated.
    Anonymised {
        status: u16,
    },
    NotPresent,
}

/// The register products, as named by `[sink] kind` and `--sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// Visma eAccounting (eEkonomi / Spiris).
    #[value(name = "eaccounting")]
    EAccounting,
    /// Visma.net ERP (Financials).
    #[value(name = "visma-net")]
    VismaNet,
    /// Visma e-conomic.
    #[value(name = "economic")]
    Economic,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::EAccounting => "eaccounting",
            SinkKind::VismaNet => "visma-net",
            SinkKind::Economic => "economic",
        }
    }

    pub fn product(self) -> &'static str {
        match self {
            SinkKind::EAccounting => eaccounting::PRODUCT,
            SinkKind::VismaNet => visma_net::PRODUCT,
            SinkKind::Economic => economic::PRODUCT,
        }
    }

    /// The fields the product accepts from us, with its published limits.
    pub fn rules(self) -> crate::mapping::RegisterRules {
        match self {
            SinkKind::EAccounting => eaccounting::RULES,
            SinkKind::VismaNet => visma_net::RULES,
            SinkKind::Economic => economic::RULES,
        }
    }
}

/// The name a customer gets when its personal fields are overwritten.
pub const ERASED_NAME: &str = "Erased customer";

/// The register a tenant syncs to. Every variant keeps the same contract:
/// - `create` answers `NumberTaken` when the number is in use, never a second customer;
/// - `update` answers `Rejected { status: 404 }` when the customer is gone;
/// - `key` names this exact write (the journal's intent key): a register that honours
///   idempotency keys gets it, so a repeated request is answered, not redone.
pub enum Sink {
    EAccounting(EAccountingSink),
    VismaNet(VismaNetSink),
    Economic(EconomicSink),
}

macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Sink::EAccounting($s) => $call,
            Sink::VismaNet($s) => $call,
            Sink::Economic($s) => $call,
        }
    };
}

impl Sink {
    pub fn product(&self) -> &'static str {
        match self {
            Sink::EAccounting(_) => eaccounting::PRODUCT,
            Sink::VismaNet(_) => visma_net::PRODUCT,
            Sink::Economic(_) => economic::PRODUCT,
        }
    }

    /// The register's customer with this number, if any. `Err` when that cannot be
    /// told for sure (a register that ignored the filter): never guess "not there".
    pub async fn find_by_number(&self, number: &str) -> Result<Option<Remote>, SinkError> {
        each!(self, s => s.find_by_number(number).await)
    }

    /// The register's customer by id; `None` when it is not there.
    pub async fn get(&self, id: &str) -> Result<Option<Remote>, SinkError> {
        each!(self, s => s.get(id).await)
    }

    pub async fn create(&self, record: &MappedRecord, key: &str) -> Result<Written, SinkError> {
        each!(self, s => s.create(record, key).await)
    }

    pub async fn update(
        &self,
        id: &str,
        record: &MappedRecord,
        key: &str,
    ) -> Result<Written, SinkError> {
        each!(self, s => s.update(id, record, key).await)
    }

    /// Removes the customer's personal data from the register: deletes it where the
    /// register allows, else overwrites the personal fields and deactivates it.
    pub async fn erase(&self, id: &str, key: &str) -> Result<Erased, SinkError> {
        each!(self, s => s.erase(id, key).await)
    }
}
