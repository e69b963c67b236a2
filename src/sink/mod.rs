//! Sinks: write permitted customers into a Visma customer register.
//!
//! Architecture invariant: a sink only ever receives a `MappedRecord`, which the mapping
//! layer built from permitted fields and constants; it has no way to reach Opter data.
pub mod auth;
pub mod eaccounting;

pub use eaccounting::EAccountingSink;

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
