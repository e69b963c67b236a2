//! Writes Opter customers (the JSON the Opter simulator serves, as in
//! fixtures/customers.json) as Opter's "Customers" and "References" Excel exports, in
//! `.xlsx` or tab-separated text.
//!
//! Like real exports, the files carry columns the connector must never read (corporate
//! ID and VAT numbers, addresses, phones, the customer's mailbox, information, created),
//! so tests can show the export source leaves them alone. Customers and references keep
//! the JSON's order; values are written as they are, edge cases included.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `customers.xlsx` and `references.xlsx`.
    Xlsx,
    /// `customers.txt` and `references.txt`: UTF-8, LF, headings on the first line.
    Tsv,
}

/// The language of the headings, sheet names and yes/no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    Swedish,
}

/// A cell to write.
enum Cell {
    Empty,
    Text(String),
    /// A sales ledger number that Excel would store as a number.
    Number(u64),
    Bool(bool),
    Time(DateTime<Utc>),
}

type CustomerColumn = (&'static str, &'static str, fn(&Value) -> Cell);
/// Reference columns see the customer too, for its code and number.
type ReferenceColumn = (&'static str, &'static str, fn(&Value, &Value) -> Cell);

/// English heading, Swedish heading, value; permitted and other columns mixed, as in
/// Opter's export.
const CUSTOMER_COLUMNS: [CustomerColumn; 19] = [
    ("Customer code", "Kundkod", |c| text(&c["customerCode"])),
    ("Name", "Namn", |c| text(&c["name"])),
    ("Corporate ID number", "Organisationsnummer", |c| {
        text(&c["corporateIdNumber"])
    }),
    ("Sales ledger number", "Reskontranummer", |c| {
        number(&c["customerNumber"])
    }),
    ("VAT number", "Momsregistreringsnummer", |c| {
        text(&c["vatNumber"])
    }),
    ("Visiting address", "Besöksadress", |c| {
        text(&c["visitingAddress"]["street"])
    }),
    ("Postal code", "Postnummer", |c| {
        text(&c["visitingAddress"]["postalCode"])
    }),
    ("City", "Ort", |c| text(&c["visitingAddress"]["city"])),
    ("Country", "Land", |c| {
        text(&c["visitingAddress"]["country"])
    }),
    ("Invoice address", "Fakturaadress", |c| {
        text(&c["invoiceAddress"]["street"])
    }),
    ("Invoice postal code", "Fakturapostnummer", |c| {
        text(&c["invoiceAddress"]["postalCode"])
    }),
    ("Invoice city", "Fakturaort", |c| {
        text(&c["invoiceAddress"]["city"])
    }),
    ("Invoice country", "Fakturaland", |c| {
        text(&c["invoiceAddress"]["country"])
    }),
    ("Phone", "Telefon", |c| text(&c["phone"])),
    ("E-mail", "E-post", |c| text(&c["email"])),
    ("Information", "Information", |c| text(&c["information"])),
    // The API's contract: a customer without `isActive` is active.
    ("Active", "Aktiv", |c| flag(&c["isActive"], true)),
    ("Created", "Skapad", |c| time(&c["created"])),
    ("Updated", "Ändrad", |c| time(&c["updated"])),
];

const REFERENCE_COLUMNS: [ReferenceColumn; 7] = [
    ("Customer code", "Kundkod", |c, _| text(&c["customerCode"])),
    ("Sales ledger number", "Reskontranummer", |c, _| {
        number(&c["customerNumber"])
    }),
    ("Name", "Namn", |_, r| text(&r["name"])),
    ("Phone", "Telefon", |_, r| text(&r["phone"])),
    ("Mobile phone", "Mobiltelefon", |_, r| {
        text(&r["mobilePhone"])
    }),
    ("E-mail", "E-post", |_, r| text(&r["email"])),
    ("Default", "Standard", |_, r| flag(&r["isDefault"], false)),
];

fn text(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Empty,
        Value::String(s) if s.is_empty() => Cell::Empty,
        Value::String(s) => Cell::Text(s.clone()),
        other => Cell::Text(other.to_string()),
    }
}

/// Digits Excel would keep as a number are written as one; anything else as text.
fn number(v: &Value) -> Cell {
    let digits = match v {
        Value::String(s) => s.parse::<u64>().ok().filter(|n| n.to_string() == *s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    digits.map_or_else(|| text(v), Cell::Number)
}

fn flag(v: &Value, missing: bool) -> Cell {
    match v {
        Value::Bool(b) => Cell::Bool(*b),
        Value::Null => Cell::Bool(missing),
        other => text(other),
    }
}

fn time(v: &Value) -> Cell {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or_else(|| text(v), |t| Cell::Time(t.with_timezone(&Utc)))
}

/// Writes the Customers and References exports of `customers` into `dir` (created if
/// needed) with English headings; returns their paths.
pub fn write_exports(
    customers: &[Value],
    dir: &Path,
    format: ExportFormat,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    write_exports_in(customers, dir, format, Language::English)
}

/// `write_exports` with the headings, sheet names and yes/no of `language`.
pub fn write_exports_in(
    customers: &[Value],
    dir: &Path,
    format: ExportFormat,
    language: Language,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pick = |en: &'static str, sv: &'static str| match language {
        Language::English => en,
        Language::Swedish => sv,
    };
    let customer_table = Table {
        sheet: pick("Customers", "Kunder"),
        headings: CUSTOMER_COLUMNS.iter().map(|c| pick(c.0, c.1)).collect(),
        rows: customers
            .iter()
            .map(|c| CUSTOMER_COLUMNS.iter().map(|col| (col.2)(c)).collect())
            .collect(),
    };
    let reference_table = Table {
        sheet: pick("References", "Referenser"),
        headings: REFERENCE_COLUMNS.iter().map(|c| pick(c.0, c.1)).collect(),
        rows: customers
            .iter()
            .flat_map(|c| {
                let references = c["references"].as_array().map_or(&[][..], Vec::as_slice);
                references
                    .iter()
                    .map(move |r| REFERENCE_COLUMNS.iter().map(|col| (col.2)(c, r)).collect())
            })
            .collect(),
    };
    std::fs::create_dir_all(dir)?;
    let ext = match format {
        ExportFormat::Xlsx => "xlsx",
        ExportFormat::Tsv => "txt",
    };
    let customers_path = dir.join(format!("customers.{ext}"));
    let references_path = dir.join(format!("references.{ext}"));
    for (table, path) in [
        (&customer_table, &customers_path),
        (&reference_table, &references_path),
    ] {
        match format {
            ExportFormat::Xlsx => table.write_xlsx(path)?,
            ExportFormat::Tsv => std::fs::write(path, table.tsv(language)?)?,
        }
    }
    Ok((customers_path, references_path))
}

struct Table {
    sheet: &'static str,
    headings: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn write_xlsx(&self, path: &Path) -> anyhow::Result<()> {
        let mut book = Workbook::new();
        // A fixed creation time (the only clock in the file) keeps the bytes stable.
        let created = ExcelDateTime::from_ymd(2025, 1, 1)?.and_hms(0, 0, 0)?;
        book.set_properties(&DocProperties::new().set_creation_datetime(&created));
        let bold = Format::new().set_bold();
        let when = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        let sheet = book.add_worksheet();
        sheet.set_name(self.sheet)?;
        for (col, heading) in (0u16..).zip(&self.headings) {
            sheet.write_string_with_format(0, col, *heading, &bold)?;
        }
        for (row, cells) in (1u32..).zip(&self.rows) {
            for (col, cell) in (0u16..).zip(cells) {
                match cell {
                    Cell::Empty => {}
                    Cell::Text(s) => {
                        sheet.write_string(row, col, s)?;
                    }
                    Cell::Number(n) => {
                        sheet.write_number(row, col, *n as f64)?;
                    }
                    Cell::Bool(b) => {
                        sheet.write_boolean(row, col, *b)?;
                    }
                    Cell::Time(t) => {
                        let serial = 25_569.0 + t.timestamp_millis() as f64 / 86_400_000.0;
                        let t = ExcelDateTime::from_serial_datetime(serial)?;
                        sheet.write_datetime_with_format(row, col, &t, &when)?;
                    }
                }
            }
        }
        book.save(path)?;
        Ok(())
    }

    fn tsv(&self, language: Language) -> anyhow::Result<String> {
        let mut out = self.headings.join("\t");
        out.push('\n');
        for cells in &self.rows {
            let fields = cells
                .iter()
                .zip(&self.headings)
                .map(|(cell, heading)| {
                    let field = match cell {
                        Cell::Empty => String::new(),
                        Cell::Text(s) => s.clone(),
                        Cell::Number(n) => n.to_string(),
                        Cell::Bool(b) => match (language, b) {
                            (Language::English, true) => "Yes".into(),
                            (Language::English, false) => "No".into(),
                            (Language::Swedish, true) => "Ja".into(),
                            (Language::Swedish, false) => "Nej".into(),
                        },
                        Cell::Time(t) if t.timestamp_subsec_nanos() == 0 => {
                            t.format("%Y-%m-%d %H:%M:%S").to_string()
                        }
                        Cell::Time(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    };
                    // Unquoted TSV has no way to hold these.
                    anyhow::ensure!(
                        !field.contains(['\t', '\r', '\n']),
                        "column {heading:?} of a row in {} holds a tab or line break",
                        self.sheet
                    );
                    Ok(field)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            out.push_str(&fields.join("\t"));
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
    }

    fn bundled() -> Vec<Value> {
        let text = std::fs::read_to_string(fixtures().join("customers.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Every sheet's name and cells, to compare workbooks by content.
    fn cells(path: &Path) -> Vec<(String, Vec<Vec<calamine::Data>>)> {
        use calamine::Reader;
        let mut book: calamine::Xlsx<_> = calamine::open_workbook(path).unwrap();
        book.sheet_names()
            .into_iter()
            .map(|name| {
                let range = book.worksheet_range(&name).unwrap();
                (name, range.rows().map(<[_]>::to_vec).collect())
            })
            .collect()
    }

    /// Regenerates fixtures/export/ from fixtures/customers.json:
    /// `cargo test --lib write_export_fixtures -- --ignored`.
    #[test]
    #[ignore]
    fn write_export_fixtures() {
        let dir = fixtures().join("export");
        write_exports(&bundled(), &dir, ExportFormat::Xlsx).unwrap();
        write_exports(&bundled(), &dir, ExportFormat::Tsv).unwrap();
    }

    #[test]
    fn bundled_exports_are_what_the_generator_writes() {
        let committed = fixtures().join("export");
        let fresh = tempfile::tempdir().unwrap();
        let (c, r) = write_exports(&bundled(), fresh.path(), ExportFormat::Tsv).unwrap();
        for path in [c, r] {
            let name = path.file_name().unwrap();
            assert!(
                std::fs::read(committed.join(name)).unwrap() == std::fs::read(&path).unwrap(),
                "{name:?} is stale: regenerate with write_export_fixtures"
            );
        }
        let (c, r) = write_exports(&bundled(), fresh.path(), ExportFormat::Xlsx).unwrap();
        for path in [c, r] {
            let name = path.file_name().unwrap();
            assert!(
                cells(&committed.join(name)) == cells(&path),
                "{name:?} is stale: regenerate with write_export_fixtures"
            );
        }
    }

    #[test]
    fn xlsx_output_is_byte_for_byte_repeatable() {
        let customers = &bundled()[..5];
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = write_exports(customers, a.path(), ExportFormat::Xlsx).unwrap();
        let second = write_exports(customers, b.path(), ExportFormat::Xlsx).unwrap();
        assert_eq!(
            std::fs::read(first.0).unwrap(),
            std::fs::read(second.0).unwrap()
        );
        assert_eq!(
            std::fs::read(first.1).unwrap(),
            std::fs::read(second.1).unwrap()
        );
    }

    #[test]
    fn tsv_refuses_values_it_cannot_hold() {
        let customer = serde_json::json!({"customerCode": "K1", "information": "two\nlines"});
        let dir = tempfile::tempdir().unwrap();
        let e = write_exports(&[customer], dir.path(), ExportFormat::Tsv).unwrap_err();
        assert!(e.to_string().contains("\"Information\""), "{e}");
    }

    #[test]
    fn references_follow_their_customers_in_order() {
        let customers = serde_json::json!([
            {"customerCode": "A", "customerNumber": "1", "references": [
                {"name": "A1", "isDefault": true}, {"name": "A2", "email": "a2@a.se"}]},
            {"customerCode": "B", "customerNumber": "007", "isActive": false}
        ]);
        let dir = tempfile::tempdir().unwrap();
        let (c, r) = write_exports_in(
            customers.as_array().unwrap(),
            dir.path(),
            ExportFormat::Tsv,
            Language::Swedish,
        )
        .unwrap();
        let c = std::fs::read_to_string(c).unwrap();
        let lines: Vec<&str> = c.lines().collect();
        assert!(lines[0].starts_with("Kundkod\tNamn\t"));
        assert!(lines[2].starts_with("B\t\t\t007\t"), "{}", lines[2]);
        assert!(lines[2].contains("\tNej\t"), "{}", lines[2]);
        let r = std::fs::read_to_string(r).unwrap();
        assert_eq!(
            r,
            "Kundkod\tReskontranummer\tNamn\tTelefon\tMobiltelefon\tE-post\tStandard\n\
             A\t1\tA1\t\t\t\tJa\n\
             A\t1\tA2\t\t\ta2@a.se\tNej\n"
        );
    }
}
