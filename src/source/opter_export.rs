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

use calamine::{Data, Reader, Xlsx};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

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
}

impl OpterExportConfig {
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
}

impl OpterExportSource {
    /// Checks the file types and the heading overrides; the files are read by `read`.
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
        })
    }

    /// Reads both files (with `changed_since`, only customers whose Updated is later);
    /// `on_page` hears once (customers read, total), like the API source's last page.
    pub async fn read_all(
        &self,
        changed_since: Option<DateTime<Utc>>,
        mut on_page: impl FnMut(usize, Option<u64>),
    ) -> Result<Vec<SourceCustomer>> {
        let this = self.clone();
        let customers = tokio::task::spawn_blocking(move || this.read(changed_since))
            .await
            .map_err(|e| Error::Other(anyhow::anyhow!("reading the Opter export failed: {e}")))??;
        on_page(customers.len(), Some(customers.len() as u64));
        Ok(customers)
    }

    /// `read_all` without the progress report, blocking.
    pub fn read(&self, changed_since: Option<DateTime<Utc>>) -> Result<Vec<SourceCustomer>> {
        let sheet = read_sheet(&self.customers, &CUSTOMER_SHEETS, &self.customer_columns)?;
        let mut customers = sheet
            .rows
            .iter()
            .map(|row| customer(&sheet, row))
            .collect::<Result<Vec<_>>>()?;

        let mut by_code: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in customers.iter().enumerate() {
            by_code.entry(c.code.clone()).or_default().push(i);
        }
        let sheet = read_sheet(&self.references, &REFERENCE_SHEETS, &self.reference_columns)?;
        for row in &sheet.rows {
            let (code, number, reference) = reference(&sheet, row)?;
            let Some(candidates) = by_code.get(&code) else {
                return Err(Error::config(format!(
                    "{}: row {}: customer code {code:?} is not in {}",
                    sheet.file.display(),
                    row.number,
                    self.customers.display()
                )));
            };
            let owners: Vec<usize> = match number {
                Some(n) if candidates.len() > 1 => candidates
                    .iter()
                    .copied()
                    .filter(|&i| customers[i].number.as_deref() == Some(n.as_str()))
                    .collect(),
                _ => candidates.clone(),
            };
            if owners.is_empty() {
                return Err(Error::config(format!(
                    "{}: row {}: no customer with code {code:?} has this sales ledger number in {}",
                    sheet.file.display(),
                    row.number,
                    self.customers.display()
                )));
            }
            for i in owners {
                customers[i].references.push(reference.clone());
            }
        }
        if let Some(since) = changed_since {
            customers.retain(|c| c.updated.is_some_and(|t| t > since));
        }
        Ok(customers)
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
}

impl Cell {
    fn from_data(data: &Data) -> Cell {
        match data {
            Data::Empty => Cell::Empty,
            Data::String(s) | Data::DateTimeIso(s) => text_cell(s),
            Data::Int(i) => Cell::Int(*i),
            // Excel stores every number as a float; whole ones are integers to us.
            Data::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Cell::Int(*f as i64),
            Data::Float(f) => Cell::Float(*f),
            Data::Bool(b) => Cell::Bool(*b),
            Data::DateTime(dt) if dt.is_datetime() => {
                let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
                Cell::Time(
                    NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into()).and_then(|date| {
                        date.and_hms_milli_opt(h.into(), mi.into(), s.into(), ms.into())
                    }),
                )
            }
            Data::DateTime(_) | Data::DurationIso(_) | Data::Error(_) => Cell::Unusable,
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

/// The read columns of one file: the heading found for each (`None` for an absent
/// optional one) and the rows, each with one cell per read column.
struct Sheet {
    file: PathBuf,
    headings: Vec<Option<String>>,
    rows: Vec<Row>,
}

struct Row {
    /// Sheet row or text line, 1-based.
    number: usize,
    cells: Vec<Cell>,
}

impl Sheet {
    fn error(&self, row: &Row, slot: usize, what: &str) -> Error {
        Error::config(format!(
            "{}: row {}, column {:?}: {what}",
            self.file.display(),
            row.number,
            self.headings[slot].as_deref().unwrap_or_default()
        ))
    }

    fn text(&self, row: &Row, slot: usize) -> Result<Option<String>> {
        row.cells[slot]
            .text()
            .map_err(|what| self.error(row, slot, what))
    }

    /// A code or number: trimmed, `None` when blank.
    fn key(&self, row: &Row, slot: usize) -> Result<Option<String>> {
        Ok(self
            .text(row, slot)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn code(&self, row: &Row, slot: usize) -> Result<String> {
        self.key(row, slot)?
            .ok_or_else(|| self.error(row, slot, "has no customer code"))
    }
}

fn customer(sheet: &Sheet, row: &Row) -> Result<SourceCustomer> {
    let code = sheet.code(row, 0)?;
    let at = |slot, what| sheet.error(row, slot, &format!("{what} (customer {code:?})"));
    Ok(SourceCustomer {
        number: sheet.key(row, 1)?,
        name: sheet.text(row, 2)?.unwrap_or_default(),
        is_active: flag(&row.cells[3])
            .map_err(|what| at(3, what))?
            .ok_or_else(|| at(3, "is empty; expected yes or no"))?,
        updated: time(&row.cells[4]).map_err(|what| at(4, what))?,
        references: Vec::new(),
        code,
    })
}

/// A reference row: its customer code, the customer's sales ledger number if given, and
/// the reference.
fn reference(sheet: &Sheet, row: &Row) -> Result<(String, Option<String>, SourceReference)> {
    let code = sheet.code(row, 0)?;
    let reference = SourceReference {
        name: sheet.text(row, 2)?,
        email: sheet.text(row, 3)?,
        is_default: flag(&row.cells[4])
            .map_err(|what| sheet.error(row, 4, what))?
            .unwrap_or(false),
    };
    Ok((code, sheet.key(row, 1)?, reference))
}

fn read_sheet(path: &Path, sheet_names: &[&str], wanted: &[Wanted]) -> Result<Sheet> {
    let file = File::open(path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
    let unreadable = |why: String| Error::config(format!("cannot read {}: {why}", path.display()));
    let (headings, rows) = match format_of(path) {
        Some(Format::Xlsx) => {
            let mut book = Xlsx::new(BufReader::new(file))
                .map_err(|e| unreadable(format!("not an .xlsx workbook ({e})")))?;
            let names = book.sheet_names();
            let name = names
                .iter()
                .find(|n| sheet_names.iter().any(|w| n.trim().eq_ignore_ascii_case(w)))
                .or(names.first())
                .cloned()
                .ok_or_else(|| unreadable("the workbook has no sheet".into()))?;
            let range = book
                .worksheet_range(&name)
                .map_err(|e| unreadable(format!("sheet {name:?}: {e}")))?;
            let first_row = range.start().map_or(0, |(row, _)| row as usize);
            let mut lines = range.rows();
            let found: Vec<String> = lines
                .next()
                .map(|r| r.iter().map(heading_of).collect())
                .unwrap_or_default();
            let (headings, slots) = locate(path, &found, wanted)?;
            let rows = lines
                .enumerate()
                .map(|(i, cells)| Row {
                    // The heading row is `first_row` (0-based); its number is one more.
                    number: first_row + i + 2,
                    cells: slots
                        .iter()
                        .map(|s| {
                            s.and_then(|s| cells.get(s))
                                .map_or(Cell::Empty, Cell::from_data)
                        })
                        .collect(),
                })
                .collect();
            (headings, rows)
        }
        Some(Format::Text) => read_text(path, file, wanted)?,
        None => return Err(unreadable("not an .xlsx, .txt or .tsv file".into())),
    };
    let rows = rows
        .into_iter()
        .filter(|r: &Row| !r.cells.iter().all(Cell::is_empty))
        .collect();
    Ok(Sheet {
        file: path.to_path_buf(),
        headings,
        rows,
    })
}

fn heading_of(cell: &Data) -> String {
    match cell {
        Data::String(s) => s.clone(),
        Data::Empty => String::new(),
        other => other.to_string(),
    }
}

type Located = (Vec<Option<String>>, Vec<Option<usize>>);

fn read_text(
    path: &Path,
    file: File,
    wanted: &[Wanted],
) -> Result<(Vec<Option<String>>, Vec<Row>)> {
    let mut lines = BufReader::new(file).lines();
    let line_error = |n: usize, e: std::io::Error| {
        Error::config(format!("cannot read {}: line {n}: {e}", path.display()))
    };
    let header = match lines.next() {
        Some(line) => line.map_err(|e| line_error(1, e))?,
        None => String::new(),
    };
    let header = header.strip_prefix('\u{feff}').unwrap_or(&header);
    let found: Vec<String> = header
        .trim_end_matches('\r')
        .split('\t')
        .map(str::to_string)
        .collect();
    let (headings, slots) = locate(path, &found, wanted)?;
    // Field position -> slot, so a line's other fields are skipped, never copied.
    let mut slot_at = vec![None; found.len()];
    for (slot, position) in slots.iter().enumerate() {
        if let Some(p) = position {
            slot_at[*p] = Some(slot);
        }
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let number = i + 2;
        let line = line.map_err(|e| line_error(number, e))?;
        let mut cells = vec![Cell::Empty; wanted.len()];
        for (field, slot) in line.trim_end_matches('\r').split('\t').zip(&slot_at) {
            if let Some(slot) = slot {
                cells[*slot] = text_cell(field);
            }
        }
        rows.push(Row { number, cells });
    }
    Ok((headings, rows))
}

/// Finds each wanted column among the file's headings.
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
                let listed = if found.iter().all(|h| h.trim().is_empty()) {
                    "none (is the first row empty?)".to_string()
                } else {
                    quoted(found.iter().filter(|h| !h.trim().is_empty()), ", ")
                };
                return Err(Error::config(format!(
                    "{}: no column headed {}; the headings are {listed}. \
                     Set [source.columns] {} to the heading this export uses.",
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
                headings.push(Some(found[*i].trim().to_string()));
                slots.push(Some(*i));
            }
            _ => {
                return Err(Error::config(format!(
                    "{}: {} columns are headed {}; set [source.columns] {} to the one to read",
                    path.display(),
                    matches.len(),
                    quoted(&w.headings, " or "),
                    w.col.key()
                )));
            }
        }
    }
    Ok((headings, slots))
}

fn quoted<S: AsRef<str>>(items: impl IntoIterator<Item = S>, sep: &str) -> String {
    items
        .into_iter()
        .map(|s| format!("{:?}", s.as_ref().trim()))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests;
