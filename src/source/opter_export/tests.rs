use super::*;

fn source(dir: &Path, customers: &str, references: &str) -> OpterExportSource {
    std::fs::write(dir.join("c.txt"), customers).unwrap();
    std::fs::write(dir.join("r.txt"), references).unwrap();
    OpterExportSource::new(&OpterExportConfig {
        customers: dir.join("c.txt"),
        references: dir.join("r.txt"),
        columns: ColumnNames::default(),
    })
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
    let got = s.read(None).unwrap();
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
    let got = s.read(None).unwrap();
    assert!(got[0].references.is_empty());
    assert_eq!(got[1].references[0].name.as_deref(), Some("B"));

    let s = source(
        dir.path(),
        customers,
        "Customer code\tName\tE-mail\tDefault\nD\tB\t\tyes\n",
    );
    let got = s.read(None).unwrap();
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
        e.contains("2 columns") && e.contains("[source.columns] name"),
        "{e}"
    );

    let e = OpterExportSource::new(&OpterExportConfig {
        customers: "customers.csv".into(),
        references: "references.txt".into(),
        columns: ColumnNames::default(),
    })
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
