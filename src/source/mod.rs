//! Source adapters: read customers from Opter, keeping only the permitted fields.
//!
//! Architecture invariant: an adapter's wire types name only the fields the connector
//! may use; every other field of Opter's answer is skipped by the parser, never stored.
//! Reading is bounded (pages, customers, bytes, rows); a bound reached is an error, and
//! an error ends the read before anything is written.
pub mod opter_api;
pub mod opter_export;

pub use opter_api::OpterApiSource;
pub use opter_export::{OpterExportConfig, OpterExportSource};

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::record::SourceCustomer;

/// One page of customers: those read, those that could not be read, and the total the
/// source expects, if it knows.
#[derive(Debug, Default)]
pub struct Page {
    pub customers: Vec<SourceCustomer>,
    pub unreadable: Vec<Unreadable>,
    pub total: Option<u64>,
}

impl Page {
    /// Customers on the page, read or not.
    pub fn len(&self) -> usize {
        self.customers.len() + self.unreadable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A customer the source could not read (a field of the wrong type, text that is not
/// UTF-8, a field given twice): named by its code when that could be read, and by its
/// position in `reason` always. The reason names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unreadable {
    pub code: Option<String>,
    pub reason: String,
}

/// Where a tenant's customers come from.
pub enum Source {
    OpterApi(OpterApiSource),
    OpterExport(OpterExportSource),
}

impl Source {
    /// Sends every customer (with `changed_since`, only those changed after it) to
    /// `pages`, page by page, while the receiver works on the pages already sent. An
    /// error may come after some pages were sent: the read is then incomplete, and the
    /// receiver must not act on what it got.
    pub async fn read_pages(
        &self,
        changed_since: Option<DateTime<Utc>>,
        pages: &tokio::sync::mpsc::Sender<Page>,
    ) -> Result<()> {
        match self {
            Source::OpterApi(s) => s.read_pages(changed_since, pages).await,
            Source::OpterExport(s) => s.read_pages(changed_since, pages).await,
        }
    }
}
