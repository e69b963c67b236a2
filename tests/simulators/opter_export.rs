//! The Opter export source: the bundled exports read back to exactly what the API source
//! reads from the same customers, in both languages and formats, and nothing more.

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use chrono::{DateTime, Utc};
use opter_visma_sync::error::Error;
use opter_visma_sync::record::SourceCustomer;
use opter_visma_sync::sandbox::export_files::{
    write_exports, write_exports_in, ExportFormat, Language,
};
use opter_visma_sync::source::opter_api::parse_page;
use opter_visma_sync::source::{OpterExportConfig, OpterExportSource};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn bundled_json() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("customers.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// What the API source makes of these customers.
fn via_api(customers: &[Value]) -> Vec<SourceCustomer> {
    let page = json!({ "page": 1, "pageSize": customers.len(), "totalCount": customers.len(), "items": customers });
    parse_page(&serde_json::to_vec(&page).unwrap())
        .unwrap()
        .customers
}

fn config(customers: PathBuf, references: PathBuf) -> OpterExportConfig {
    OpterExportConfig::files(customers, references)
}

fn read(customers: PathBuf, references: PathBuf) -> Result<Vec<SourceCustomer>, Error> {
    let page = OpterExportSource::new(&config(customers, references))?.read(None)?;
    assert!(page.unreadable.is_empty(), "{:?}", page.unreadable);
    Ok(page.customers)
}

fn bundled(ext: &str) -> (PathBuf, PathBuf) {
    let dir = fixtures().join("export");
    (
        dir.join(format!("customers.{ext}")),
        dir.join(format!("references.{ext}")),
    )
}

/// The bundled TSV pair copied into `dir`, with `edit` applied to each file's text.
fn edited_tsv(dir: &Path, edit: impl Fn(&str, String) -> String) -> (PathBuf, PathBuf) {
    let (c, r) = bundled("txt");
    let out = (dir.join("customers.txt"), dir.join("references.txt"));
    for (from, to, name) in [(&c, &out.0, "customers"), (&r, &out.1, "references")] {
        std::fs::write(to, edit(name, std::fs::read_to_string(from).unwrap())).unwrap();
    }
    out
}

fn error_text(result: Result<Vec<SourceCustomer>, Error>) -> String {
    match result {
        Err(e @ Error::Config(_)) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn xlsx_tsv_and_api_read_the_bundled_customers_identically() {
    let want = via_api(&bundled_json());
    assert_eq!(want.len(), 318);
    for ext in ["xlsx", "txt"] {
        let (c, r) = bundled(ext);
        let source = OpterExportSource::new(&config(c, r)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let reading = async move {
            let read = source.read_pages(None, &tx).await;
            drop(tx);
            read
        };
        let collecting = async {
            let mut got = Vec::new();
            while let Some(page) = rx.recv().await {
                assert!(page.unreadable.is_empty());
                got.extend(page.customers);
            }
            got
        };
        let (read, got) = tokio::join!(reading, collecting);
        read.unwrap();
        assert!(got == want, "{ext} export differs from the API's reading");
    }
}

#[test]
fn swedish_exports_read_the_same() {
    let customers = bundled_json();
    let want = via_api(&customers);
    for format in [ExportFormat::Xlsx, ExportFormat::Tsv] {
        let dir = tempfile::tempdir().unwrap();
        let (c, r) = write_exports_in(&customers, dir.path(), format, Language::Swedish).unwrap();
        let head = match format {
            ExportFormat::Tsv => std::fs::read_to_string(&c).unwrap(),
            ExportFormat::Xlsx => String::new(),
        };
        assert!(format == ExportFormat::Xlsx || head.starts_with("Kundkod\tNamn\t"));
        assert!(read(c, r).unwrap() == want, "{format:?}");
    }
}

#[test]
fn a_heading_override_reads_a_renamed_column() {
    let dir = tempfile::tempdir().unwrap();
    let (c, r) = edited_tsv(dir.path(), |_, text| {
        text.replacen("Customer code", "Kund", 1)
    });

    // The References file is read first (its rows wait for their customers).
    let e = error_text(read(c.clone(), r.clone()));
    assert!(
        e.contains("references.txt") && e.contains("[source.columns] reference_customer_code"),
        "{e}"
    );

    let mut cfg: OpterExportConfig = toml::from_str(
        "customers = \"customers.txt\"\nreferences = \"references.txt\"\n\
         [columns]\ncustomer_code = \"Kund\"\n",
    )
    .unwrap();
    cfg.resolve(dir.path());
    assert_eq!((&cfg.customers, &cfg.references), (&c, &r));
    let got = OpterExportSource::new(&cfg)
        .unwrap()
        .read(None)
        .unwrap()
        .customers;
    assert!(got == via_api(&bundled_json()));
}

#[test]
fn changed_since_keeps_only_customers_updated_after_it() {
    let all = via_api(&bundled_json());
    // An existing Updated: that customer is not "after" it.
    let since: DateTime<Utc> = "2025-10-05T14:30:00Z".parse().unwrap();
    assert!(all.iter().any(|c| c.updated == Some(since)));
    let want: Vec<_> = all
        .iter()
        .filter(|c| c.updated.is_some_and(|t| t > since))
        .cloned()
        .collect();
    assert!(!want.is_empty() && want.len() < all.len());
    for ext in ["xlsx", "txt"] {
        let (c, r) = bundled(ext);
        let got = OpterExportSource::new(&config(c, r))
            .unwrap()
            .read(Some(since))
            .unwrap()
            .customers;
        assert!(got == want, "{ext}");
    }
}

#[test]
fn values_of_other_columns_are_never_read() {
    let customers = bundled_json();
    let mut private: Vec<String> = Vec::new();
    let mut add = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            private.push(s.to_string());
        }
    };
    for c in &customers {
        for key in [
            "phone",
            "corporateIdNumber",
            "vatNumber",
            "email",
            "information",
        ] {
            add(&c[key]);
        }
        for address in ["visitingAddress", "invoiceAddress"] {
            add(&c[address]["street"]);
        }
        for r in c["references"].as_array().unwrap() {
            add(&r["phone"]);
            add(&r["mobilePhone"]);
        }
    }
    assert!(private.len() > 2000);
    let finder = AhoCorasick::new(&private).unwrap();
    for ext in ["xlsx", "txt"] {
        let (c, r) = bundled(ext);
        if ext == "txt" {
            // They are in the files...
            let text = std::fs::read_to_string(&c).unwrap() + &std::fs::read_to_string(&r).unwrap();
            let mut found = vec![false; private.len()];
            for m in finder.find_overlapping_iter(&text) {
                found[m.pattern().as_usize()] = true;
            }
            assert!(
                found.iter().all(|f| *f),
                "the fixture lacks some private values"
            );
        }
        // ...and not in what is read.
        let debug = format!("{:?}", read(c, r).unwrap());
        if let Some(m) = finder.find(&debug) {
            panic!(
                "{} leaked from the {ext} export",
                private[m.pattern().as_usize()]
            );
        }
    }
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = bundled("txt");
    let missing = dir.path().join("references.txt");
    let e = error_text(read(c, missing.clone()));
    assert!(
        e.contains("cannot read") && e.contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn a_missing_column_names_the_headings_expected_and_the_key_never_the_files_own() {
    let dir = tempfile::tempdir().unwrap();
    let (c, r) = edited_tsv(dir.path(), |name, text| match name {
        "customers" => text.replacen("\tUpdated", "\tLEAK Karin Sandström", 1),
        _ => text,
    });
    let e = error_text(read(c.clone(), r));
    assert!(e.starts_with(&format!("{}: ", c.display())), "{e}");
    for part in [
        "\"Updated\" or \"Ändrad\"",
        "the first row heads",
        "[source.columns] updated",
    ] {
        assert!(e.contains(part), "{part} missing in: {e}");
    }
    for never in ["LEAK", "Karin", "Corporate ID number"] {
        assert!(!e.contains(never), "the file's text is repeated: {e}");
    }
}

#[test]
fn a_reference_to_an_unknown_customer_names_file_row_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let (c, r) = edited_tsv(dir.path(), |name, text| match name {
        // Line 3 is the second reference.
        "references" => {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let rest = lines[2].split_once('\t').unwrap().1.to_string();
            lines[2] = format!("NOSUCH1\t{rest}");
            lines.join("\n") + "\n"
        }
        _ => text,
    });
    let e = error_text(read(c.clone(), r.clone()));
    assert!(e.starts_with(&format!("{}: row 3: ", r.display())), "{e}");
    assert!(
        e.contains("\"NOSUCH1\"") && e.contains(&c.display().to_string()),
        "{e}"
    );
    assert!(!e.contains('@'), "no email in messages: {e}");
}

#[test]
fn a_bad_updated_value_rejects_that_customer_naming_file_row_and_column_but_not_the_value() {
    let mut customers = bundled_json();
    customers[4]["updated"] = json!("Karin Sandström");
    let code = customers[4]["customerCode"].as_str().unwrap().to_string();
    for format in [ExportFormat::Xlsx, ExportFormat::Tsv] {
        let dir = tempfile::tempdir().unwrap();
        let (c, r) = write_exports(&customers, dir.path(), format).unwrap();
        let page = OpterExportSource::new(&config(c.clone(), r))
            .unwrap()
            .read(None)
            .unwrap();
        assert_eq!(page.customers.len(), 317, "{format:?}: the others are read");
        assert_eq!(page.unreadable.len(), 1, "{format:?}");
        let u = &page.unreadable[0];
        assert_eq!(u.code.as_deref(), Some(code.as_str()));
        // Headings on row 1: the fifth customer is on row 6.
        let at = format!("{}: row 6, column \"Updated\": ", c.display());
        assert!(u.reason.starts_with(&at), "{format:?}: {}", u.reason);
        assert!(
            !u.reason.contains("Karin"),
            "the value is not repeated: {}",
            u.reason
        );
    }
}

#[test]
fn an_unsupported_file_type_is_a_config_error() {
    let e = OpterExportSource::new(&config("customers.csv".into(), "references.txt".into()))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("[source] customers")),
        "{e}"
    );
}
