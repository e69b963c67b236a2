//! Source adapters: read customers from Opter, keeping only the permitted fields.
//!
//! Architecture invariant: an adapter's wire types name only the fields the connector
//! may use; every other field of Opter's answer is skipped by the parser, never stored.
pub mod opter_api;
pub mod opter_export;

pub use opter_api::OpterApiSource;
pub use opter_export::{OpterExportConfig, OpterExportSource};

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::record::SourceCustomer;

/// Where a tenant's customers come from.
pub enum Source {
    OpterApi(OpterApiSource),
    OpterExport(OpterExportSource),
}

impl Source {
    /// Every customer (with `changed_since`, only those changed after it); `on_page`
    /// hears (customers so far, total if known).
    pub async fn read_all(
        &self,
        changed_since: Option<DateTime<Utc>>,
        on_page: impl FnMut(usize, Option<u64>),
    ) -> Result<Vec<SourceCustomer>> {
        match self {
            Source::OpterApi(s) => s.read_all(changed_since, on_page).await,
            Source::OpterExport(s) => s.read_all(changed_since, on_page).await,
        }
    }
}
