//! The record of processing (GDPR Art. 30) for one tenant, built from its config and its
//! mapping file, never from customers: what the connector processes, for whom, where it
//! sends it, how long it keeps it. `privacy record` prints it; the console shows it.
//!
//! Architecture invariant: every statement is derived from the config, the mapping or
//! the code (the permitted fields), or is a vendor's published statement with its
//! address. What the connector cannot know (the controller's name, the legal basis) is
//! listed under `to_complete`, never guessed.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, SourceConfig};
use crate::error::Result;
use crate::mapping::Mapping;
use crate::record::PermittedField;

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub tenant: String,
    pub generated: DateTime<Utc>,
    pub purpose: &'static str,
    pub controller: &'static str,
    pub data_subjects: Vec<&'static str>,
    /// One entry per permitted Opter field the mapping sends.
    pub categories: Vec<Category>,
    /// Register fields filled with the mapping's constants (never personal data).
    pub constants: Vec<String>,
    pub never_processed: &'static str,
    pub source: Source,
    pub recipients: Vec<Recipient>,
    pub storage: Vec<Storage>,
    pub retention: Retention,
    pub transfers: Transfers,
    pub security: Vec<&'static str>,
    pub to_complete: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    /// The permitted field's name (`contact_email`).
    pub field: &'static str,
    pub describe: &'static str,
    pub personal: Personal,
    /// The register fields it fills.
    pub register_fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Personal {
    Yes,
    /// A customer's name is a person's name when the customer is a sole trader.
    WhenSoleTrader,
    No,
}

impl Personal {
    pub fn word(self) -> &'static str {
        match self {
            Personal::Yes => "personal data",
            Personal::WhenSoleTrader => "personal data when the customer is a sole trader",
            Personal::No => "not personal data",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub kind: &'static str,
    /// The API's host, or the export files.
    pub from: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recipient {
    pub name: &'static str,
    pub role: &'static str,
    /// Hosts the connector sends data or credentials to.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub place: String,
    pub holds: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Retention {
    /// `[journal] keep_values_days`.
    pub journal_values_days: u32,
    pub journal: String,
    pub register: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transfers {
    pub connector: String,
    /// The register vendor's published statement, if one is known.
    pub register: Option<&'static str>,
    pub register_source: Option<&'static str>,
}

const PURPOSE: &str = "Keeping the customer register of the accounting system in step with \
     the transport management system, so that customers and their contact persons are the \
     same in both (invoicing and customer contact).";
const CONTROLLER: &str = "The carrier that runs this tenant. The connector processes on its \
     behalf; the register's vendor is its processor.";
const NEVER: &str = "Phones, addresses, corporate ID numbers (a sole trader's is a personal ID \
     number), notes and every other Opter field: not read from Opter, and a mapping file \
     naming one does not load.";

/// The record for one tenant's config.
pub fn record(config: &Config) -> Result<Record> {
    let register = config.sink.register;
    let mapping = Mapping::load(&config.sink.mapping, register.rules)?;
    let categories = PermittedField::ALL
        .into_iter()
        .filter_map(|field| {
            let register_fields: Vec<String> =
                mapping.fields_from(field).map(str::to_string).collect();
            (!register_fields.is_empty()).then(|| Category {
                field: field.name(),
                describe: field.describe(),
                personal: personal(field),
                register_fields,
            })
        })
        .collect();
    let source = match &config.source {
        SourceConfig::OpterApi(api) => Source {
            kind: "Opter REST API",
            from: hosts([api.base_url.as_str()]),
        },
        SourceConfig::OpterExport(files) => Source {
            kind: "Opter export files",
            from: [&files.customers, &files.references]
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        },
    };
    let sent_to = hosts(config.sink.product.urls());
    let days = config.journal.keep_values_days;
    let journal_retention = if days == 0 {
        "Values sent are not kept: the next run removes them from the journal's events.".to_string()
    } else {
        format!(
            "Values sent (names, emails) are kept in the journal for {days} days for audit, \
             then removed at the start of a run. Their hashes stay, so the chain still \
             verifies. `purge` removes one customer's values at once."
        )
    };
    let processing = register.processing;
    let mut to_complete = vec![
        "The controller's name and contact details, and its data protection officer's, if \
         it has one (Art. 30(1)(a)).",
        "The legal basis of the processing (usually the contract with the customer, or a \
         legitimate interest).",
    ];
    if processing.statement.is_none() {
        to_complete.push(
            "Where the register's vendor processes the data, and any transfer outside the \
             EU/EEA: no vendor statement is recorded for this product; take it from the \
             data processing agreement with the vendor.",
        );
    }
    Ok(Record {
        tenant: config.tenant.clone(),
        generated: Utc::now(),
        purpose: PURPOSE,
        controller: CONTROLLER,
        data_subjects: vec![
            "Contact persons at the carrier's customers (Opter's references).",
            "Customers that are sole traders, whose customer name is a person's name.",
        ],
        categories,
        constants: mapping.constant_fields().map(str::to_string).collect(),
        never_processed: NEVER,
        source,
        recipients: vec![Recipient {
            name: register.product(),
            role: "processor of the controller (the customer register)",
            hosts: sent_to.clone(),
        }],
        storage: vec![
            Storage {
                place: config.journal.path.display().to_string(),
                holds: "The journal: for every write, the values sent and their hashes, \
                        the register's id, and support actions with who and why. Owner-only \
                        files.",
            },
            Storage {
                place: "journal backups made with `journal backup`".to_string(),
                holds: "A copy of the journal, as of the backup; removed values stay \
                        removed only in backups made after.",
            },
        ],
        retention: Retention {
            journal_values_days: days,
            journal: journal_retention,
            register: "In the register the controller's own retention applies (for \
                       example bookkeeping law); `purge` erases a customer there as well.",
        },
        transfers: Transfers {
            connector: format!(
                "The connector sends personal data only to {}, over HTTP(S) as \
                 configured. Its alerts, logs and metrics name customers by code only.",
                if sent_to.is_empty() {
                    "the register".to_string()
                } else {
                    sent_to.join(", ")
                }
            ),
            register: processing.statement,
            register_source: processing.source,
        },
        security: vec![
            "Only the permitted fields are read and sent (fixed in code).",
            "Journal, credentials and users files are readable by their owner only.",
            "Secrets come from environment variables and are never written to the journal or \
             printed.",
            "The journal is a hash chain: `journal verify` shows any change to it.",
            "Logs, metrics and URLs name customers by code only; the console shows values \
             masked, revealed only to support staff who give a reason, which is recorded.",
        ],
        to_complete,
    })
}

fn personal(field: PermittedField) -> Personal {
    match field {
        PermittedField::ContactName | PermittedField::ContactEmail => Personal::Yes,
        PermittedField::CustomerName => Personal::WhenSoleTrader,
        PermittedField::CustomerCode | PermittedField::CustomerNumber => Personal::No,
        PermittedField::IsActive => Personal::No,
    }
}

/// The distinct hosts (with a port if one is given) of some URLs, in order.
fn hosts<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in urls {
        let Ok(url) = url::Url::parse(url) else {
            continue;
        };
        let Some(host) = url.host_str() else {
            continue;
        };
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        if !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// The record as text, section by section, in the order of Art. 30(1).
pub fn print(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    writeln!(
        out,
        "Record of processing (GDPR Art. 30), tenant {}, {}",
        record.tenant,
        record.generated.format("%Y-%m-%d %H:%M UTC")
    )?;
    section(out, "Purpose")?;
    writeln!(out, "  {}", record.purpose)?;
    section(out, "Controller")?;
    writeln!(out, "  {}", record.controller)?;
    section(out, "Data subjects")?;
    for subject in &record.data_subjects {
        writeln!(out, "  - {subject}")?;
    }
    section(out, "Categories of data (from the mapping)")?;
    for c in &record.categories {
        writeln!(
            out,
            "  - {} ({}): {}; sent as {}",
            c.field,
            c.describe,
            c.personal.word(),
            c.register_fields.join(", ")
        )?;
    }
    if !record.constants.is_empty() {
        writeln!(
            out,
            "  - constants, not personal data: {}",
            record.constants.join(", ")
        )?;
    }
    writeln!(out, "  Never processed: {}", record.never_processed)?;
    section(out, "Source")?;
    writeln!(
        out,
        "  {}: {}",
        record.source.kind,
        record.source.from.join(", ")
    )?;
    section(out, "Recipients")?;
    for r in &record.recipients {
        writeln!(out, "  - {}, {}: {}", r.name, r.role, r.hosts.join(", "))?;
    }
    section(out, "Transfers")?;
    writeln!(out, "  {}", record.transfers.connector)?;
    match (record.transfers.register, record.transfers.register_source) {
        (Some(statement), Some(source)) => writeln!(out, "  {statement} ({source})")?,
        (Some(statement), None) => writeln!(out, "  {statement}")?,
        _ => writeln!(
            out,
            "  Where the register's vendor processes the data: see its data processing \
             agreement (below, to complete)."
        )?,
    }
    section(out, "Retention")?;
    writeln!(out, "  {}", record.retention.journal)?;
    writeln!(out, "  {}", record.retention.register)?;
    section(out, "Where it is stored")?;
    for s in &record.storage {
        writeln!(out, "  - {}: {}", s.place, s.holds)?;
    }
    section(out, "Security measures")?;
    for m in &record.security {
        writeln!(out, "  - {m}")?;
    }
    section(out, "To complete by the controller")?;
    for t in &record.to_complete {
        writeln!(out, "  - {t}")?;
    }
    Ok(())
}

fn section(out: &mut impl Write, title: &str) -> std::io::Result<()> {
    writeln!(out, "\n{title}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_distinct_with_ports_and_skip_what_is_not_a_url() {
        let got = hosts([
            "https://eaccountingapi.vismaonline.com/v2",
            "https://identity.vismaonline.com/connect/token",
            "https://eaccountingapi.vismaonline.com/other",
            "http://127.0.0.1:8080/x",
            "not a url",
        ]);
        assert_eq!(
            got,
            [
                "eaccountingapi.vismaonline.com",
                "identity.vismaonline.com",
                "127.0.0.1:8080"
            ]
        );
    }
}
