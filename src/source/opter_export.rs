//! Opter's Excel export as a source: the "Customers" and "References" registers (File >
//! Export to Excel), as `.xlsx` files or as tab-separated text, joined by customer code.
//!
//! # Columns
//!
//! Columns are found by heading (case and surrounding spaces ignored). The defaults accept
//! both the English and the Swedish export; `[source.columns]` replaces the headings of
//! any column with one heading or a list (`customer_code = "Kund"`).
//!
//! | File | Config key | Default headings | |
//! |---|---|---|---|
//! | Customers | `customer_code` | "Customer code", "Kundkod" | required |
//! | Customers | `sales_ledger_number` | "Sales ledger number", "Reskontranummer" | required |
//! | Customers | `name` | "Name", "Namn" | required |
//! | Customers | `active` | "Active", "Aktiv" | required |
//! | Customers | `updated` | "Updated", "Ändrad" | required |
//! | References | `reference_customer_code` | as `customer_code` | required |
//! | References | `reference_sales_ledger_number` | as `sales_ledger_number` | optional |
//! | References | `reference_name` | "Name", "Namn" | required |
//! | References | `reference_email` | "E-mail", "E-post" | required |
//! | References | `reference_default` | "Default", "Standard" | required |
//!
//! Architecture invariant: no other column is parsed or stored. Rows are copied out of
//! the file cell by cell, for these columns only; the rest of the sheet or line is
//! dropped when the file is closed. (An `.xlsx` keeps all text in one shared table that
//! the Excel reader loads with the sheet; it is dropped with it.)
//!
//! # Values
//!
//! - Updated: an Excel date cell, RFC 3339 (`2025-03-27T15:58:09Z`, `...+01:00`) or
//!   `YYYY-MM-DD HH:MM[:SS[.fff]]` (also with `T`). Times without an offset, and Excel
//!   date cells, which carry none, are taken as UTC. Empty means unknown: such a
//!   customer is read only by full reads, as with the API.
//! - Active and Default: Excel booleans, yes/no, ja/nej, true/false, sant/falskt, 1/0
//!   or x. An empty Default means no; an empty Active is an error (guessing either way
//!   would change the register).
//! - Sales ledger number: text or a whole number; empty means none.
//! - Codes and numbers are trimmed; names and emails are kept as written.
//! - Rows whose read cells are all empty are skipped.
//!
//! # Joining
//!
//! A reference belongs to the customer with its customer code; a code the Customers file
//! does not have is an error. Several customers sharing a code is an Opter data error
//! that the engine rejects; to keep their references apart, the References file may
//! carry the customer's sales ledger number, which then picks among them. Without one,
//! such a reference goes to each of them.
//!
//! # Files
//!
//! - `.xlsx`: the sheet named Customers or Kunder (References or Referenser), else the
//!   first sheet; headings in the sheet's first used row.
//! - `.txt` / `.tsv`: UTF-8, headings on the first line, one row per line, fields
//!   separated by tabs and not quoted (a value holds no tab or line break). A leading
//!   byte order mark and CRLF line ends are accepted.
//!
//! Errors name the file, the row (sheet row or text line, headings being row 1 when
//! they are on the first line), the column heading and at most a customer code: never a
//! cell's value, which could be a name or an email.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use calamine::{DataRef, Reader, Xlsx};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

use super::{Page, Unreadable};
use crate::error::{Error, Result};
use crate::record::{SourceCustomer, SourceReference};

/// `[source]` with `kind = "opter-export"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpterExportConfig {
    /// The Customers export (`.xlsx`, `.txt` or `.tsv`), relative to the config file's
    /// folder.
    pub customers: PathBuf,
    /// The References export, relative to the config file's folder.
    pub references: PathBuf,
    /// Headings that differ from the defaults.
    #[serde(default)]
    pub columns: ColumnNames,
    /// Rows read from each file at most (headings not counted).
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// What an `.xlsx` file may unpack to, in megabytes (10^6 bytes), all its parts
    /// together; it is also the largest `.xlsx` file read.
    #[serde(default = "default_max_unpacked_mb")]
    pub max_unpacked_mb: u64,
    /// Texts in an `.xlsx` file's shared table at most.
    #[serde(default = "default_max_shared_strings")]
    pub max_shared_strings: u64,
}

pub const DEFAULT_MAX_ROWS: u64 = 2_000_000;
pub const DEFAULT_MAX_UNPACKED_MB: u64 = 512;
pub const DEFAULT_MAX_SHARED_STRINGS: u64 = 10_000_000;
const MOST_MAX_ROWS: u64 = 50_000_000;
const MOST_MAX_UNPACKED_MB: u64 = 16_000;
const MOST_MAX_SHARED_STRINGS: u64 = 200_000_000;

fn default_max_rows() -> u64 {
    DEFAULT_MAX_ROWS
}
fn default_max_unpacked_mb() -> u64 {
    DEFAULT_MAX_UNPACKED_MB
}
fn default_max_shared_strings() -> u64 {
    DEFAULT_MAX_SHARED_STRINGS
}

/// The longest line of a tab-separated export: far more than a row of Opter's columns.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Parts of an `.xlsx` file at most: a workbook of two sheets has about a dozen.
const MAX_ZIP_ENTRIES: usize = 1000;

/// Customers handed on at a time.
const PAGE_ROWS: usize = 1000;

/// The limits a read keeps to.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rows: u64,
    unpacked_bytes: u64,
    shared_strings: u64,
}

impl OpterExportConfig {
    /// These two files, with the default headings and limits.
    pub fn files(customers: PathBuf, references: PathBuf) -> Self {
        OpterExportConfig {
            customers,
            references,
            columns: ColumnNames::default(),
            max_rows: DEFAULT_MAX_ROWS,
            max_unpacked_mb: DEFAULT_MAX_UNPACKED_MB,
            max_shared_strings: DEFAULT_MAX_SHARED_STRINGS,
        }
    }

    /// Checks the limits; answers the key and why.
    pub fn check_bounds(&self) -> std::result::Result<(), (&'static str, String)> {
        for (key, value, most) in [
            ("[source] max_rows", self.max_rows, MOST_MAX_ROWS),
            (
                "[source] max_unpacked_mb",
                self.max_unpacked_mb,
                MOST_MAX_UNPACKED_MB,
            ),
            (
                "[source] max_shared_strings",
                self.max_shared_strings,
                MOST_MAX_SHARED_STRINGS,
            ),
        ] {
            if !(1..=most).contains(&value) {
                return Err((key, format!("is {value}; use 1 to {most}")));
            }
        }
        Ok(())
    }

    /// Makes relative paths relative to `base_dir` (the config file's folder).
    pub fn resolve(&mut self, base_dir: &Path) {
        self.customers = base_dir.join(&self.customers);
        self.references = base_dir.join(&self.references);
    }
}

/// `[source.columns]`: heading overrides; an unset key keeps the default headings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnNames {
    pub customer_code: Option<Headings>,
    pub sales_ledger_number: Option<Headings>,
    pub name: Option<Headings>,
    pub active: Option<Headings>,
    pub updated: Option<Headings>,
    /// Default: `customer_code`'s headings.
    pub reference_customer_code: Option<Headings>,
    /// Default: `sales_ledger_number`'s headings.
    pub reference_sales_ledger_number: Option<Headings>,
    pub reference_name: Option<Headings>,
    pub reference_email: Option<Headings>,
    pub reference_default: Option<Headings>,
}

/// One heading, or several of which the file has one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Headings {
    One(String),
    Any(Vec<String>),
}

impl Headings {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Headings::One(h) => vec![h.clone()],
            Headings::Any(hs) => hs.clone(),
        }
    }
}

/// The columns read, in the order of a row's cells.
#[derive(Debug, Clone, Copy)]
enum Col {
    Code,
    Number,
    Name,
    Active,
    Updated,
    RefCode,
    RefNumber,
    RefName,
    RefEmail,
    RefDefault,
}

const CUSTOMER_COLUMNS: [Col; 5] = [Col::Code, Col::Number, Col::Name, Col::Active, Col::Updated];
const REFERENCE_COLUMNS: [Col; 5] = [
    Col::RefCode,
    Col::RefNumber,
    Col::RefName,
    Col::RefEmail,
    Col::RefDefault,
];
const CUSTOMER_SHEETS: [&str; 2] = ["Customers", "Kunder"];
const REFERENCE_SHEETS: [&str; 2] = ["References", "Referenser"];

impl Col {
    fn key(self) -> &'static str {
        match self {
            Col::Code => "customer_code",
            Col::Number => "sales_ledger_number",
            Col::Name => "name",
            Col::Active => "active",
            Col::Updated => "updated",
            Col::RefCode => "reference_customer_code",
            Col::RefNumber => "reference_sales_ledger_number",
            Col::RefName => "reference_name",
            Col::RefEmail => "reference_email",
            Col::RefDefault => "reference_default",
        }
    }

    fn defaults(self) -> &'static [&'static str] {
        match self {
            Col::Code | Col::RefCode => &["Customer code", "Kundkod"],
            Col::Number | Col::RefNumber => &["Sales ledger number", "Reskontranummer"],
            Col::Name | Col::RefName => &["Name", "Namn"],
            Col::Active => &["Active", "Aktiv"],
            Col::Updated => &["Updated", "Ändrad"],
            Col::RefEmail => &["E-mail", "E-post"],
            Col::RefDefault => &["Default", "Standard"],
        }
    }

    fn required(self) -> bool {
        !matches!(self, Col::RefNumber)
    }

    fn headings(self, c: &ColumnNames) -> Vec<String> {
        let set = match self {
            Col::Code => c.customer_code.as_ref(),
            Col::Number => c.sales_ledger_number.as_ref(),
            Col::Name => c.name.as_ref(),
            Col::Active => c.active.as_ref(),
            Col::Updated => c.updated.as_ref(),
            Col::RefCode => c
                .reference_customer_code
                .as_ref()
                .or(c.customer_code.as_ref()),
            Col::RefNumber => c
                .reference_sales_ledger_number
                .as_ref()
                .or(c.sales_ledger_number.as_ref()),
            Col::RefName => c.reference_name.as_ref(),
            Col::RefEmail => c.reference_email.as_ref(),
            Col::RefDefault => c.reference_default.as_ref(),
        };
        match set {
            Some(h) => h.to_vec(),
            None => self.defaults().iter().map(|h| h.to_string()).collect(),
        }
    }
}

/// A column to find, with the headings it may have.
#[derive(Debug, Clone)]
struct Wanted {
    col: Col,
    headings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Xlsx,
    Text,
}

fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "xlsx" => Some(Format::Xlsx),
        "txt" | "tsv" => Some(Format::Text),
        _ => None,
    }
}

/// Reads customers from a Customers and a References export.
#[derive(Debug, Clone)]
pub struct OpterExportSource {
    customers: PathBuf,
    references: PathBuf,
    customer_columns: Vec<Wanted>,
    reference_columns: Vec<Wanted>,
    limits: Limits,
}

/// A reference row kept until its customer's row is read.
struct Kept {
    row: usize,
    /// The customer's sales ledger number, when the References file gives it.
    number: Option<String>,
    reference: SourceReference,
    used: bool,
}

/// The references of one customer code.
#[derive(Default)]
struct KeptFor {
    rows: Vec<Kept>,
    /// Why a reference row of this code could not be read: its customer is rejected.
    unreadable: Option<String>,
    /// Whether the Customers file has this code.
    seen: bool,
}

impl OpterExportSource {
    /// Checks the file types, the limits and the heading overrides; the files are read
    /// by `read_pages`.
    pub fn new(config: &OpterExportConfig) -> Result<Self> {
        for (key, path) in [
            ("customers", &config.customers),
            ("references", &config.references),
        ] {
            if format_of(path).is_none() {
                return Err(Error::config(format!(
                    "[source] {key}: {} is not an .xlsx, .txt or .tsv file",
                    path.display()
                )));
            }
        }
        config
            .check_bounds()
            .map_err(|(key, why)| Error::config(format!("{key}: {why}")))?;
        let wanted = |cols: &[Col]| -> Result<Vec<Wanted>> {
            cols.iter()
                .map(|&col| {
                    let headings = col.headings(&config.columns);
                    if headings.is_empty() || headings.iter().any(|h| h.trim().is_empty()) {
                        return Err(Error::config(format!(
                            "[source.columns] {}: a heading is empty",
                            col.key()
                        )));
                    }
                    Ok(Wanted { col, headings })
                })
                .collect()
        };
        Ok(OpterExportSource {
            customers: config.customers.clone(),
            references: config.references.clone(),
            customer_columns: wanted(&CUSTOMER_COLUMNS)?,
            reference_columns: wanted(&REFERENCE_COLUMNS)?,
            limits: Limits {
                rows: config.max_rows,
                unpacked_bytes: config.max_unpacked_mb.saturating_mul(1_000_000),
                shared_strings: config.max_shared_strings,
            },
        })
    }

    /// Sends the customers (with `changed_since`, only those whose Updated is later) to
    /// `pages` as the Customers file is read, a page at a time; the References file is
    /// read first. An error may come after pages were sent (a reference whose customer
    /// never came): the read is then incomplete.
    pub async fn read_pages(
        &self,
        changed_since: Option<DateTime<Utc>>,
        pages: &tokio::sync::mpsc::Sender<Page>,
    ) -> Result<()> {
        let this = self.clone();
        let pages = pages.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                this.read_into(changed_since, |page| pages.blocking_send(page).is_ok())
            })
        })
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("reading the Opter export failed: {e}")))?
    }

    /// Every customer in one page, blocking (`check` and tests).
    pub fn read(&self, changed_since: Option<DateTime<Utc>>) -> Result<Page> {
        let mut all = Page::default();
        self.read_into(changed_since, |page| {
            all.customers.extend(page.customers);
            all.unreadable.extend(page.unreadable);
            true
        })?;
        all.total = Some(all.len() as u64);
        Ok(all)
    }

    /// Reads both files, handing customers to `hand_on` a page at a time until it
    /// answers false; blocking.
    pub fn read_into(
        &self,
        changed_since: Option<DateTime<Utc>>,
        mut hand_on: impl FnMut(Page) -> bool,
    ) -> Result<()> {
        let mut page = Page::default();
        let mut kept: HashMap<String, KeptFor> = HashMap::new();
        read_sheet(
            &self.references,
            &REFERENCE_SHEETS,
            &self.reference_columns,
            self.limits,
            |sheet, row| {
                match reference(sheet, &row) {
                    Ok((code, number, reference)) => {
                        kept.entry(code).or_default().rows.push(Kept {
                            row: row.number,
                            number,
                            reference,
                            used: false,
                        })
                    }
                    Err((Some(code), reason)) => {
                        kept.entry(code)
                            .or_default()
                            .unreadable
                            .get_or_insert(reason);
                    }
                    Err((None, reason)) => page.unreadable.push(Unreadable { code: None, reason }),
                }
                Ok(true)
            },
        )?;
        let mut open = true;
        read_sheet(
            &self.customers,
            &CUSTOMER_SHEETS,
            &self.customer_columns,
            self.limits,
            |sheet, row| {
                match customer(sheet, &row) {
                    Ok(mut c) => {
                        let mut unreadable = None;
                        if let Some(refs) = kept.get_mut(&c.code) {
                            refs.seen = true;
                            for r in refs
                                .rows
                                .iter_mut()
                                .filter(|r| r.number.is_none() || r.number == c.number)
                            {
                                r.used = true;
                                c.references.push(r.reference.clone());
                            }
                            unreadable = refs.unreadable.clone();
                        }
                        let changed =
                            changed_since.is_none_or(|since| c.updated.is_some_and(|t| t > since));
                        match unreadable {
                            Some(reason) => page.unreadable.push(Unreadable {
                                code: Some(c.code),
                                reason,
                            }),
                            None if changed => page.customers.push(c),
                            None => {}
                        }
                    }
                    Err((code, reason)) => {
                        if let Some(refs) = code.as_ref().and_then(|c| kept.get_mut(c)) {
                            refs.seen = true;
                            refs.rows.iter_mut().for_each(|r| r.used = true);
                        }
                        page.unreadable.push(Unreadable { code, reason });
                    }
                }
                if page.len() >= PAGE_ROWS {
                    open = hand_on(std::mem::take(&mut page));
                }
                Ok(open)
            },
        )?;
        if !open {
            return Ok(());
        }
        // A reference no customer took: its code, or the number it names, is not there.
        let stray = kept
            .iter()
            .flat_map(|(code, refs)| {
                refs.rows
                    .iter()
                    .filter(|r| !r.used)
                    .map(move |r| (r.row, code, refs.seen))
            })
            .min_by_key(|(row, ..)| *row);
        if let Some((row, code, seen)) = stray {
            let why = match seen {
                false => format!("customer code {code:?} is not in"),
                true => format!("no customer with code {code:?} has this sales ledger number in"),
            };
            return Err(Error::config(format!(
                "{}: row {row}: {why} {}",
                self.references.display(),
                self.customers.display()
            )));
        }
        if !page.is_empty() {
            hand_on(page);
        }
        Ok(())
    }
}

/// A cell of a read column, copied out of the file.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Empty,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An Excel date cell; `None` when it names no real time (Excel's 1900-02-29).
    Time(Option<NaiveDateTime>),
    /// An Excel error value (`#N/A`) or a duration.
    Unusable,
    /// Text that is not UTF-8 (a tab-separated file).
    NotUtf8,
}

impl Cell {
    fn from_data(data: &DataRef) -> Cell {
        match data {
            DataRef::Empty => Cell::Empty,
            DataRef::String(s) | DataRef::DateTimeIso(s) => text_cell(s),
            DataRef::SharedString(s) => text_cell(s),
            DataRef::Int(i) => Cell::Int(*i),
            // Excel stores every number as a float; whole ones are integers to us.
            DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Cell::Int(*f as i64),
            DataRef::Float(f) => Cell::Float(*f),
            DataRef::Bool(b) => Cell::Bool(*b),
            DataRef::DateTime(dt) if dt.is_datetime() => {
                let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
                Cell::Time(
                    NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into()).and_then(|date| {
                        date.and_hms_milli_opt(h.into(), mi.into(), s.into(), ms.into())
                    }),
                )
            }
            DataRef::DateTime(_) | DataRef::DurationIso(_) | DataRef::Error(_) => Cell::Unusable,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// The cell as text; `None` when empty.
    fn text(&self) -> Result<Option<String>, &'static str> {
        Ok(match self {
            Cell::Empty => None,
            Cell::Text(s) => Some(s.clone()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Float(f) => Some(f.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::Time(_) => return Err("is a date, not text"),
            Cell::Unusable => return Err("holds an Excel error or duration, not text"),
            Cell::NotUtf8 => return Err("is not valid UTF-8 text"),
        })
    }
}

fn text_cell(s: &str) -> Cell {
    if s.is_empty() {
        Cell::Empty
    } else {
        Cell::Text(s.to_string())
    }
}

/// Opter's checkbox columns as exported, or as typed by a person.
fn flag(cell: &Cell) -> Result<Option<bool>, &'static str> {
    const EXPECTED: &str = "is not yes/no (ja/nej, true/false, 1/0)";
    match cell {
        Cell::Bool(b) => Ok(Some(*b)),
        Cell::Int(1) => Ok(Some(true)),
        Cell::Int(0) => Ok(Some(false)),
        Cell::Text(s) => match s.trim().to_lowercase().as_str() {
            "" => Ok(None),
            "yes" | "true" | "ja" | "sant" | "1" | "x" => Ok(Some(true)),
            "no" | "false" | "nej" | "falskt" | "0" => Ok(Some(false)),
            _ => Err(EXPECTED),
        },
        Cell::Empty => Ok(None),
        _ => Err(EXPECTED),
    }
}

fn time(cell: &Cell) -> Result<Option<DateTime<Utc>>, &'static str> {
    const EXPECTED: &str = "is not a date and time (an Excel date cell, \
        RFC 3339 or YYYY-MM-DD HH:MM:SS, taken as UTC)";
    match cell {
        Cell::Empty => Ok(None),
        Cell::Time(Some(t)) => Ok(Some(t.and_utc())),
        Cell::Text(s) if s.trim().is_empty() => Ok(None),
        Cell::Text(s) => parse_time(s).map(Some).ok_or(EXPECTED),
        _ => Err(EXPECTED),
    }
}

/// RFC 3339, or a date and time without an offset, which is taken as UTC.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .map(|t| t.and_utc())
}

/// One file's read columns: the heading found for each (`None` for an absent optional
/// one).
struct Sheet {
    file: PathBuf,
    headings: Vec<Option<String>>,
}

struct Row {
    /// Sheet row or text line, 1-based.
    number: usize,
    cells: Vec<Cell>,
}

/// Why a row cannot be read, and the customer code, if that could be read.
type RowError = (Option<String>, String);

impl Sheet {
    /// Where a cell is and what is wrong with it; never its value.
    fn reason(&self, row: &Row, slot: usize, what: &str) -> String {
        format!(
            "{}: row {}, column {:?}: {what}",
            self.file.display(),
            row.number,
            self.headings[slot].as_deref().unwrap_or_default()
        )
    }

    fn text(&self, row: &Row, slot: usize) -> Result<Option<String>, String> {
        row.cells[slot]
            .text()
            .map_err(|what| self.reason(row, slot, what))
    }

    /// A code or number: trimmed, `None` when blank.
    fn key(&self, row: &Row, slot: usize) -> Result<Option<String>, String> {
        Ok(self
            .text(row, slot)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn code(&self, row: &Row, slot: usize) -> Result<String, RowError> {
        match self.key(row, slot) {
            Ok(Some(code)) => Ok(code),
            Ok(None) => Err((None, self.reason(row, slot, "has no customer code"))),
            Err(why) => Err((None, why)),
        }
    }
}

fn customer(sheet: &Sheet, row: &Row) -> Result<SourceCustomer, RowError> {
    let code = sheet.code(row, 0)?;
    let fields = || -> Result<_, String> {
        let at = |slot, what| sheet.reason(row, slot, what);
        Ok((
            sheet.key(row, 1)?,
            sheet.text(row, 2)?.unwrap_or_default(),
            flag(&row.cells[3])
                .map_err(|what| at(3, what))?
                .ok_or_else(|| at(3, "is empty; expected yes or no"))?,
            time(&row.cells[4]).map_err(|what| at(4, what))?,
        ))
    };
    match fields() {
        Ok((number, name, is_active, updated)) => Ok(SourceCustomer {
            number,
            name,
            is_active,
            updated,
            references: Vec::new(),
            code,
        }),
        Err(why) => Err((Some(code), why)),
    }
}

/// A reference row: its customer code, the customer's sales ledger number if given, and
/// the reference.
fn reference(
    sheet: &Sheet,
    row: &Row,
) -> Result<(String, Option<String>, SourceReference), RowError> {
    let code = sheet.code(row, 0)?;
    let fields = || -> Result<_, String> {
        let reference = SourceReference {
            name: sheet.text(row, 2)?,
            email: sheet.text(row, 3)?,
            is_default: flag(&row.cells[4])
                .map_err(|what| sheet.reason(row, 4, what))?
                .unwrap_or(false),
        };
        Ok((sheet.key(row, 1)?, reference))
    };
    match fields() {
        Ok((number, reference)) => Ok((code, number, reference)),
        Err(why) => Err((Some(code), why)),
    }
}

/// Reads one file's rows (those with a read cell that is not empty) into `on_row`, one at
/// a time, until it answers false; at most `limits.rows` of them.
fn read_sheet(
    path: &Path,
    sheet_names: &[&str],
    wanted: &[Wanted],
    limits: Limits,
    mut on_row: impl FnMut(&Sheet, Row) -> Result<bool>,
) -> Result<()> {
    let file = File::open(path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
    let mut rows = 0u64;
    let mut counted = |sheet: &Sheet, row: Row| -> Result<bool> {
        rows += 1;
        if rows > limits.rows {
            return Err(Error::config(format!(
                "{}: more than {} rows ([source] max_rows); raise it if the export really \
                 has that many",
                path.display(),
                limits.rows
            )));
        }
        if row.cells.iter().all(Cell::is_empty) {
            return Ok(true);
        }
        on_row(sheet, row)
    };
    match format_of(path) {
        Some(Format::Xlsx) => read_xlsx(path, file, sheet_names, wanted, limits, &mut counted),
        Some(Format::Text) => read_text(path, file, wanted, &mut counted),
        None => Err(Error::config(format!(
            "cannot read {}: not an .xlsx, .txt or .tsv file",
            path.display()
        ))),
    }
}

/// Refuses an `.xlsx` file that unpacks to more than the limits allow, by what its parts
/// declare and by what they really hold, before the Excel reader (which loads the shared
/// texts whole) opens it.
fn check_xlsx(path: &Path, file: &mut File, limits: Limits) -> Result<()> {
    use std::io::{Read, Seek};
    let too_large = || {
        Error::config(format!(
            "{}: the workbook unpacks to more than {} MB ([source] max_unpacked_mb); refused \
             unread",
            path.display(),
            limits.unpacked_bytes / 1_000_000
        ))
    };
    let unreadable = |why: String| Error::config(format!("cannot read {}: {why}", path.display()));
    let size = file
        .metadata()
        .map_err(|e| unreadable(e.to_string()))?
        .len();
    if size > limits.unpacked_bytes {
        return Err(too_large());
    }
    // The number of parts, from the end of the file, before the zip reader reads a table
    // of them all.
    let tail_len = size.min(65_557);
    let mut tail = vec![0; tail_len as usize];
    file.seek(std::io::SeekFrom::End(-(tail_len as i64)))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| unreadable(e.to_string()))?;
    let end = tail
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x05, 0x06])
        .filter(|&i| i + 22 <= tail.len())
        .ok_or_else(|| unreadable("not an .xlsx workbook (no zip directory)".into()))?;
    let entries = u16::from_le_bytes([tail[end + 10], tail[end + 11]]);
    if usize::from(entries) > MAX_ZIP_ENTRIES {
        return Err(unreadable(format!(
            "the workbook has more than {MAX_ZIP_ENTRIES} parts"
        )));
    }
    file.rewind().map_err(|e| unreadable(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(&mut *file))
        .map_err(|e| unreadable(format!("not an .xlsx workbook ({e})")))?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(unreadable(format!(
            "the workbook has more than {MAX_ZIP_ENTRIES} parts"
        )));
    }
    let declared = (0..zip.len()).try_fold(0u64, |sum, i| {
        let part = zip
            .by_index_raw(i)
            .map_err(|e| unreadable(format!("part {}: {e}", i + 1)))?;
        Ok::<u64, Error>(sum.saturating_add(part.size()))
    })?;
    if declared > limits.unpacked_bytes {
        return Err(too_large());
    }
    // What the parts really unpack to: read through, never kept.
    let mut left = limits.unpacked_bytes;
    for i in 0..zip.len() {
        let mut part = zip
            .by_index(i)
            .map_err(|e| unreadable(format!("part {}: {e}", i + 1)))?;
        let shared = part
            .name()
            .is_ok_and(|name| name.ends_with("sharedStrings.xml"));
        let mut counter = Counter {
            shared_strings: 0,
            carry: [0; 3],
            count_strings: shared,
            bytes: 0,
        };
        std::io::copy(&mut (&mut part).take(left + 1), &mut counter)
            .map_err(|e| unreadable(format!("part {}: {e}", i + 1)))?;
        if counter.bytes > left {
            return Err(too_large());
        }
        left -= counter.bytes;
        if counter.shared_strings > limits.shared_strings {
            return Err(Error::config(format!(
                "{}: the workbook holds more than {} shared texts ([source] \
                 max_shared_strings); refused unread",
                path.display(),
                limits.shared_strings
            )));
        }
    }
    drop(zip);
    file.rewind().map_err(|e| unreadable(e.to_string()))?;
    Ok(())
}

/// Counts bytes written, and the shared texts (`<si>` or `<si ...>`) among them.
struct Counter {
    bytes: u64,
    count_strings: bool,
    shared_strings: u64,
    /// The last bytes of the previous write, for a tag split between two.
    carry: [u8; 3],
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.count_strings {
            let mut joined = Vec::with_capacity(buf.len() + 3);
            joined.extend_from_slice(&self.carry);
            joined.extend_from_slice(buf);
            self.shared_strings += joined
                .windows(4)
                .filter(|w| {
                    &w[..3] == b"<si" && matches!(w[3], b'>' | b' ' | b'\t' | b'\r' | b'\n')
                })
                .count() as u64;
            let n = joined.len();
            self.carry.copy_from_slice(&joined[n - 3..]);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_xlsx(
    path: &Path,
    mut file: File,
    sheet_names: &[&str],
    wanted: &[Wanted],
    limits: Limits,
    on_row: &mut dyn FnMut(&Sheet, Row) -> Result<bool>,
) -> Result<()> {
    check_xlsx(path, &mut file, limits)?;
    // The Excel reader is not written for hostile files (a cell reference past its
    // arithmetic panics in a debug build): a panic in it is this file's error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_workbook(path, file, sheet_names, wanted, on_row)
    }))
    .unwrap_or_else(|_| {
        Err(Error::config(format!(
            "cannot read {}: the Excel reader failed on it; is it an .xlsx workbook?",
            path.display()
        )))
    })
}

fn read_workbook(
    path: &Path,
    file: File,
    sheet_names: &[&str],
    wanted: &[Wanted],
    on_row: &mut dyn FnMut(&Sheet, Row) -> Result<bool>,
) -> Result<()> {
    let unreadable = |why: String| Error::config(format!("cannot read {}: {why}", path.display()));
    let mut book = Xlsx::new(BufReader::new(file))
        .map_err(|e| unreadable(format!("not an .xlsx workbook ({})", kind_of(&e))))?;
    let names = book.sheet_names();
    let name = names
        .iter()
        .find(|n| sheet_names.iter().any(|w| n.trim().eq_ignore_ascii_case(w)))
        .or(names.first())
        .cloned()
        .ok_or_else(|| unreadable("the workbook has no sheet".into()))?;
    let mut cells = book
        .worksheet_cells_reader(&name)
        .map_err(|e| unreadable(format!("its sheet cannot be read ({})", kind_of(&e))))?;
    let bad_cell =
        |e: calamine::XlsxError| unreadable(format!("its sheet cannot be read ({})", kind_of(&e)));
    // The headings: the first row with a cell that is not empty.
    let mut found: Vec<String> = Vec::new();
    let mut heading_row = None;
    let mut next = None;
    while let Some(cell) = cells.next_cell().map_err(bad_cell)? {
        let (r, c) = cell.get_position();
        if matches!(cell.get_value(), DataRef::Empty) {
            continue;
        }
        match heading_row {
            None => heading_row = Some(r),
            Some(h) if h != r => {
                next = Some(cell);
                break;
            }
            Some(_) => {}
        }
        let c = c as usize;
        if c >= found.len() {
            found.resize(c + 1, String::new());
        }
        found[c] = heading_of(cell.get_value());
    }
    let (headings, slots) = locate(path, &found, wanted)?;
    let sheet = Sheet {
        file: path.to_path_buf(),
        headings,
    };
    let mut slot_at = vec![None; found.len()];
    for (slot, position) in slots.iter().enumerate() {
        if let Some(p) = position {
            slot_at[*p] = Some(slot);
        }
    }
    drop(found);
    let mut row: Option<Row> = None;
    let mut cell = next;
    while let Some(c) = cell.take() {
        let (r, col) = c.get_position();
        let number = r as usize + 1;
        if row.as_ref().is_some_and(|row| row.number != number) {
            if let Some(done) = row.take() {
                if !on_row(&sheet, done)? {
                    return Ok(());
                }
            }
        }
        let current = row.get_or_insert_with(|| Row {
            number,
            cells: vec![Cell::Empty; wanted.len()],
        });
        if let Some(Some(slot)) = slot_at.get(col as usize) {
            current.cells[*slot] = Cell::from_data(c.get_value());
        }
        cell = cells.next_cell().map_err(bad_cell)?;
    }
    if let Some(done) = row {
        on_row(&sheet, done)?;
    }
    Ok(())
}

/// What kind of problem the Excel reader met, by the name of its error: its messages
/// quote the file's text.
fn kind_of(e: &calamine::XlsxError) -> String {
    let debug = format!("{e:?}");
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    format!("Excel reader: {name}")
}

fn heading_of(cell: &DataRef) -> String {
    match cell {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::SharedString(s) => s.to_string(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn read_text(
    path: &Path,
    file: File,
    wanted: &[Wanted],
    on_row: &mut dyn FnMut(&Sheet, Row) -> Result<bool>,
) -> Result<()> {
    use std::io::Read;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    // One line, cut off (as an error) past `MAX_LINE_BYTES`, so a file without line
    // breaks is never read whole; `false` at the end of the file.
    let mut next_line = |line: &mut Vec<u8>, number: usize| -> Result<bool> {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', line)
            .map_err(|e| {
                Error::config(format!(
                    "cannot read {}: line {number}: {e}",
                    path.display()
                ))
            })?;
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::config(format!(
                "{}: line {number} is longer than {} KiB; is this a tab-separated export?",
                path.display(),
                MAX_LINE_BYTES / 1024
            )));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(n > 0)
    };
    next_line(&mut line, 1)?;
    let header = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&line);
    let found: Vec<String> = header
        .split(|&b| b == b'\t')
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    let (headings, slots) = locate(path, &found, wanted)?;
    let sheet = Sheet {
        file: path.to_path_buf(),
        headings,
    };
    // Field position -> slot, so a line's other fields are skipped, never copied.
    let mut slot_at = vec![None; found.len()];
    for (slot, position) in slots.iter().enumerate() {
        if let Some(p) = position {
            slot_at[*p] = Some(slot);
        }
    }
    drop(found);
    let mut number = 1;
    loop {
        number += 1;
        if !next_line(&mut line, number)? {
            return Ok(());
        }
        let mut cells = vec![Cell::Empty; wanted.len()];
        for (field, slot) in line.split(|&b| b == b'\t').zip(&slot_at) {
            if let Some(slot) = slot {
                cells[*slot] = match std::str::from_utf8(field) {
                    Ok(text) => text_cell(text),
                    Err(_) => Cell::NotUtf8,
                };
            }
        }
        if !on_row(&sheet, Row { number, cells })? {
            return Ok(());
        }
    }
}

/// Finds each wanted column among the file's headings. Messages name the headings
/// expected and column positions, never the file's own text.
fn locate(path: &Path, found: &[String], wanted: &[Wanted]) -> Result<Located> {
    let same = |a: &str, b: &str| a.trim().to_lowercase() == b.trim().to_lowercase();
    let mut headings = Vec::with_capacity(wanted.len());
    let mut slots = Vec::with_capacity(wanted.len());
    for w in wanted {
        let matches: Vec<usize> = (0..found.len())
            .filter(|&i| w.headings.iter().any(|h| same(h, &found[i])))
            .collect();
        match matches.as_slice() {
            [] if w.col.required() => {
                let headed = found.iter().filter(|h| !h.trim().is_empty()).count();
                let has = match headed {
                    0 => "the first row is empty".to_string(),
                    n => format!("the first row heads {n} columns"),
                };
                return Err(Error::config(format!(
                    "{}: no column headed {} ({has}). Set [source.columns] {} to the heading \
                     this export uses.",
                    path.display(),
                    quoted(&w.headings, " or "),
                    w.col.key()
                )));
            }
            [] => {
                headings.push(None);
                slots.push(None);
            }
            [i] => {
                // One of the expected headings, as configured: the file's own spelling
                // is not repeated.
                let h = w.headings.iter().find(|h| same(h, &found[*i]));
                headings.push(h.map(|h| h.trim().to_string()));
                slots.push(Some(*i));
            }
            _ => {
                let columns: Vec<String> = matches.iter().map(|i| (i + 1).to_string()).collect();
                return Err(Error::config(format!(
                    "{}: columns {} are headed {}; set [source.columns] {} to the one to read",
                    path.display(),
                    columns.join(" and "),
                    quoted(&w.headings, " or "),
                    w.col.key()
                )));
            }
        }
    }
    Ok((headings, slots))
}

type Located = (Vec<Option<String>>, Vec<Option<usize>>);

fn quoted<S: AsRef<str>>(items: impl IntoIterator<Item = S>, sep: &str) -> String {
    items
        .into_iter()
        .map(|s| format!("{:?}", s.as_ref().trim()))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests;
