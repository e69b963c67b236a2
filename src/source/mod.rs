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

/// One page of customers, with the total the source expects, if it knows.
pub type PageOf = (Vec<SourceCustomer>, Option<u64>);

/// Where a tenant's customers come from.
pub enum Source {
    OpterApi(OpterApiSource),
    OpterExport(OpterExportSource),
}

impl Source {
    /// Sends every customer (with `changed_since`, only those changed after it) to
    /// `pages`, page by page, while the receiver works on the pages already sent.
    pub async fn read_pages(
        &self,
        changed_since: Option<DateTime<Utc>>,
        pages: &tokio::sync::mpsc::Sender<PageOf>,
    ) -> Result<()> {
        match self {
            Source::OpterApi(s) => s.read_pages(changed_since, pages).await,
            Source::OpterExport(s) => {
                let customers = s.read_all(changed_since, |_, _| {}).await?;
                let total = customers.len() as u64;
                let _ = pages.send((customers, Some(total))).await;
                Ok(())
            }
        }
    }
}
