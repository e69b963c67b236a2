use super::*;

fn source(dir: &Path, customers: &str, references: &str) -> OpterExportSource {
    std::fs::write(dir.join("c.txt"), customers).unwrap();
    std::fs::write(dir.join("r.txt"), references).unwrap();
    OpterExportSource::new(&OpterExportConfig::files(
        dir.join("c.txt"),
        dir.join("r.txt"),
    ))
    .unwrap()
}

#[test]
fn times_without_offset_are_utc_and_offsets_are_honoured() {
    let utc = |s| parse_time(s).map(|t| t.to_rfc3339());
    let want = Some("2025-03-27T15:58:09+00:00".to_string());
    assert_eq!(utc("2025-03-27T15:58:09Z"), want);
    assert_eq!(utc("2025-03-27T16:58:09+01:00"), want);
    assert_eq!(utc("2025-03-27 15:58:09"), want);
    assert_eq!(utc(" 2025-03-27T15:58:09 "), want);
    assert_eq!(
        utc("2025-03-27 15:58"),
        Some("2025-03-27T15:58:00+00:00".into())
    );
    assert_eq!(
        utc("2025-03-27 15:58:09.250"),
        Some("2025-03-27T15:58:09.250+00:00".into())
    );
    for bad in [
        "2025-03-27",
        "27/03/2025 15:58",
        "yesterday",
        "2025-02-30 10:00",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

#[test]
fn flags_accept_english_swedish_and_excel_forms() {
    for yes in ["Yes", "ja", "TRUE", "Sant", "1", "x"] {
        assert_eq!(flag(&Cell::Text(yes.into())), Ok(Some(true)), "{yes}");
    }
    for no in ["No", "NEJ", "false", "Falskt", "0"] {
        assert_eq!(flag(&Cell::Text(no.into())), Ok(Some(false)), "{no}");
    }
    assert_eq!(flag(&Cell::Bool(true)), Ok(Some(true)));
    assert_eq!(flag(&Cell::Empty), Ok(None));
    assert!(flag(&Cell::Text("maybe".into())).is_err());
}

#[test]
fn text_tolerates_bom_crlf_blank_lines_and_short_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = source(
        dir.path(),
        "\u{feff}Customer code\tName\tSales ledger number\tActive\tUpdated\r\n\
         K1\tAcme AB\t 1001 \tYes\t2025-01-02 03:04:05\r\n\
         \r\n\
         K2\tBeta AB\t\tNo\r\n",
        "Customer code\tName\tE-mail\tDefault\r\nK2\tBo\tbo@beta.se\r\n",
    );
    let got = s.read(None).unwrap().customers;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].number.as_deref(), Some("1001"));
    assert_eq!(
        got[0].updated,
        Some("2025-01-02T03:04:05Z".parse().unwrap())
    );
    assert!(got[0].is_active && !got[1].is_active);
    assert_eq!((got[1].number.as_ref(), got[1].updated), (None, None));
    assert_eq!(
        got[1].references,
        vec![SourceReference {
            name: Some("Bo".into()),
            email: Some("bo@beta.se".into()),
            is_default: false,
        }]
    );
}

#[test]
fn duplicate_codes_are_told_apart_by_sales_ledger_number_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let customers = "Customer code\tName\tSales ledger number\tActive\tUpdated\n\
                     D\tOne\t1\tyes\t\nD\tTwo\t2\tyes\t\n";
    let s = source(
        dir.path(),
        customers,
        "Customer code\tSales ledger number\tName\tE-mail\tDefault\nD\t2\tB\t\tyes\n",
    );
    let got = s.read(None).unwrap().customers;
    assert!(got[0].references.is_empty());
    assert_eq!(got[1].references[0].name.as_deref(), Some("B"));

    let s = source(
        dir.path(),
        customers,
        "Customer code\tName\tE-mail\tDefault\nD\tB\t\tyes\n",
    );
    let got = s.read(None).unwrap().customers;
    assert_eq!(got[0].references, got[1].references);
    assert_eq!(got[0].references.len(), 1);

    let s = source(
        dir.path(),
        customers,
        "Customer code\tSales ledger number\tName\tE-mail\tDefault\nD\t3\tB\t\tyes\n",
    );
    let e = s.read(None).unwrap_err().to_string();
    assert!(e.contains("r.txt: row 2") && e.contains("\"D\""), "{e}");
}

#[test]
fn a_column_matching_twice_is_refused_and_unknown_extensions_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = source(
        dir.path(),
        "Customer code\tName\tNamn\tSales ledger number\tActive\tUpdated\n",
        "Customer code\tName\tE-mail\tDefault\n",
    );
    let e = s.read(None).unwrap_err().to_string();
    assert!(
        e.contains("columns 2 and 3") && e.contains("[source.columns] name"),
        "{e}"
    );

    let e = OpterExportSource::new(&OpterExportConfig::files(
        "customers.csv".into(),
        "references.txt".into(),
    ))
    .unwrap_err();
    assert!(matches!(e, Error::Config(_)));
    assert!(e.to_string().contains("customers.csv"), "{e}");
}

#[test]
fn config_accepts_one_heading_or_a_list_and_refuses_unknown_keys() {
    let c: OpterExportConfig = toml::from_str(
        "customers = \"c.xlsx\"\nreferences = \"r.xlsx\"\n[columns]\n\
         customer_code = \"Kund\"\nreference_email = [\"Mejl\", \"E-post\"]\n",
    )
    .unwrap();
    assert_eq!(Col::Code.headings(&c.columns), ["Kund"]);
    assert_eq!(Col::RefCode.headings(&c.columns), ["Kund"]);
    assert_eq!(Col::RefEmail.headings(&c.columns), ["Mejl", "E-post"]);
    assert_eq!(Col::Name.headings(&c.columns), ["Name", "Namn"]);
    let unknown = "customers = \"c.xlsx\"\nreferences = \"r.xlsx\"\n[columns]\nphone = \"Tel\"\n";
    assert!(toml::from_str::<OpterExportConfig>(unknown).is_err());

    let mut c = c;
    c.resolve(Path::new("/etc/sync"));
    assert_eq!(c.customers, Path::new("/etc/sync/c.xlsx"));
}

fn with_limits(
    config: OpterExportConfig,
    edit: impl FnOnce(&mut OpterExportConfig),
) -> OpterExportSource {
    let mut config = config;
    edit(&mut config);
    OpterExportSource::new(&config).unwrap()
}

const TSV_CUSTOMERS: &str = "Customer code\tName\tSales ledger number\tActive\tUpdated\n";
const TSV_REFERENCES: &str = "Customer code\tName\tE-mail\tDefault\n";

/// An `.xlsx` file holding one part, `xl/sharedStrings.xml`, of `repeat` shared texts,
/// deflated; with `declare`, its sizes as written in the file are replaced by that.
fn zip_of_shared_strings(path: &Path, repeat: usize, declare: Option<u32>) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(false);
    zip.start_file("xl/sharedStrings.xml", options).unwrap();
    zip.write_all(b"<sst uniqueCount=\"1\">").unwrap();
    let chunk = b"<si><t>a</t></si>".repeat(4096);
    for _ in 0..repeat / 4096 {
        zip.write_all(&chunk).unwrap();
    }
    zip.write_all(b"</sst>").unwrap();
    let mut bytes = zip.finish().unwrap().into_inner();
    if let Some(size) = declare {
        // The uncompressed size in the local header (offset 22) and in the central
        // directory entry (offset 24).
        for (signature, at) in [
            ([0x50, 0x4b, 0x03, 0x04], 22),
            ([0x50, 0x4b, 0x01, 0x02], 24),
        ] {
            let start = bytes.windows(4).position(|w| w == signature).unwrap();
            bytes[start + at..start + at + 4].copy_from_slice(&size.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_zip_bomb_is_refused_quickly_by_its_declared_and_its_real_size() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("c.xlsx");
    std::fs::write(dir.path().join("r.txt"), TSV_REFERENCES).unwrap();
    let config = OpterExportConfig::files(bomb.clone(), dir.path().join("r.txt"));
    // 1.5 GB declared: refused before anything is unpacked, with the defaults.
    zip_of_shared_strings(&bomb, 4096, Some(1_500_000_000));
    let started = std::time::Instant::now();
    let e = with_limits(config.clone(), |_| {}).read(None).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("c.xlsx") && e.contains("more than 512 MB ([source] max_unpacked_mb)"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // 24 MB declared as 100 bytes: refused as soon as it unpacks past what it declares.
    zip_of_shared_strings(&bomb, 24 << 20 >> 4, Some(100));
    let started = std::time::Instant::now();
    let e = with_limits(config.clone(), |c| c.max_unpacked_mb = 4)
        .read(None)
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("c.xlsx") && e.contains("larger than its declared"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // 24 MB declared as such: refused by the limit before it is unpacked.
    zip_of_shared_strings(&bomb, 24 << 20 >> 4, None);
    let e = with_limits(config.clone(), |c| c.max_unpacked_mb = 4)
        .read(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("more than 4 MB ([source] max_unpacked_mb)"),
        "{e}"
    );
    // Many small texts: refused by their number.
    zip_of_shared_strings(&bomb, 8192, None);
    let e = with_limits(config, |c| c.max_shared_strings = 8000)
        .read(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("more than 8000 shared texts ([source] max_shared_strings)"),
        "{e}"
    );
}

#[test]
fn too_many_rows_and_too_long_a_line_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..11)
        .map(|i| format!("K{i}\tAcme AB\t\tYes\t\n"))
        .collect();
    let s = source(
        dir.path(),
        &format!("{TSV_CUSTOMERS}{rows}"),
        TSV_REFERENCES,
    );
    assert_eq!(s.read(None).unwrap().customers.len(), 11);
    let config = OpterExportConfig::files(dir.path().join("c.txt"), dir.path().join("r.txt"));
    let e = with_limits(config.clone(), |c| c.max_rows = 10)
        .read(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.txt: more than 10 rows ([source] max_rows)"),
        "{e}"
    );
    let long = format!(
        "{TSV_CUSTOMERS}K1\t{}\t\tYes\t\n",
        "a".repeat(MAX_LINE_BYTES)
    );
    std::fs::write(dir.path().join("c.txt"), long).unwrap();
    let e = with_limits(config, |_| {})
        .read(None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.txt: line 2 is longer than 1024 KiB"), "{e}");
}

#[test]
fn a_bad_cell_rejects_its_row_by_code_or_row_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut customers = TSV_CUSTOMERS.as_bytes().to_vec();
    customers.extend_from_slice(b"K1\tAcme AB\t\tYes\t\n");
    customers.extend_from_slice(b"K2\tLEAK\xff\xfe AB\t\tYes\t\n");
    customers.extend_from_slice(b"K3\tBeta AB\t\tLEAK-maybe\t\n");
    customers.extend_from_slice(b"\tGamma LEAK AB\t\tYes\t\n");
    customers.extend_from_slice(b"K5\tDelta AB\t\tYes\t\n");
    std::fs::write(dir.path().join("c.txt"), customers).unwrap();
    std::fs::write(
        dir.path().join("r.txt"),
        format!("{TSV_REFERENCES}K5\tEva\teva@delta.se\tLEAK-perhaps\nK1\tBo\tbo@acme.se\tyes\n"),
    )
    .unwrap();
    let s = OpterExportSource::new(&OpterExportConfig::files(
        dir.path().join("c.txt"),
        dir.path().join("r.txt"),
    ))
    .unwrap();
    let page = s.read(None).unwrap();
    let codes: Vec<&str> = page.customers.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes, ["K1"]);
    assert_eq!(page.customers[0].references.len(), 1);
    let c = dir.path().join("c.txt").display().to_string();
    let r = dir.path().join("r.txt").display().to_string();
    let got: Vec<(Option<&str>, &str)> = page
        .unreadable
        .iter()
        .map(|u| (u.code.as_deref(), u.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Some("K2"),
                &*format!("{c}: row 3, column \"Name\": is not valid UTF-8 text")
            ),
            (
                Some("K3"),
                &*format!("{c}: row 4, column \"Active\": is not yes/no (ja/nej, true/false, 1/0)")
            ),
            (
                None,
                &*format!("{c}: row 5, column \"Customer code\": has no customer code")
            ),
            (
                Some("K5"),
                &*format!(
                    "{r}: row 2, column \"Default\": is not yes/no (ja/nej, true/false, 1/0)"
                )
            ),
        ]
    );
    assert!(!format!("{page:?}").contains("LEAK"));
}

#[test]
fn customers_are_handed_on_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..2500)
        .map(|i| format!("K{i}\tAcme AB\t\tYes\t\n"))
        .collect();
    let s = source(
        dir.path(),
        &format!("{TSV_CUSTOMERS}{rows}"),
        TSV_REFERENCES,
    );
    let mut sizes = Vec::new();
    s.read_into(None, |page| {
        sizes.push(page.len());
        true
    })
    .unwrap();
    assert_eq!(sizes, [PAGE_ROWS, PAGE_ROWS, 500]);
}
