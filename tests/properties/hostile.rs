//! Whatever bytes Opter or an export file holds, reading them never panics, stays within
//! its time, and no message repeats a value: every value fed in carries a marker, and no
//! error or rejection reason may hold one.

use std::path::Path;
use std::time::{Duration, Instant};

use opter_visma_sync::source::opter_api::parse_page_at;
use opter_visma_sync::source::{OpterExportConfig, OpterExportSource, Page};
use proptest::prelude::*;
use serde_json::{Map, Value};

const TEXT_MARKER: &str = "LEAKMARK";
const NUMBER_MARKER: u64 = 791_975_311;

/// Every marker as it could appear in a message.
fn markers() -> [String; 3] {
    [
        TEXT_MARKER.to_string(),
        NUMBER_MARKER.to_string(),
        // A fraction prints its digits too.
        "791975311".to_string(),
    ]
}

fn assert_clean(text: &str) -> Result<(), TestCaseError> {
    for m in markers() {
        prop_assert!(!text.contains(&m), "a value in a message: {}", text);
    }
    Ok(())
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        Just(Value::from(NUMBER_MARKER)),
        Just(Value::from(-(NUMBER_MARKER as i64))),
        Just(Value::from(NUMBER_MARKER as f64 + 0.25)),
        "[a-zA-Z ]{0,6}".prop_map(|s| Value::String(format!("{s}{TEXT_MARKER}"))),
        Just(Value::String(format!("2025-01-02T03:04:05Z{TEXT_MARKER}"))),
        Just(Value::String("2025-01-02T03:04:05Z".into())),
    ]
}

/// Keys Opter's parser reads, and others (one of them a marker).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("customerCode"),
        Just("customerNumber"),
        Just("name"),
        Just("isActive"),
        Just("updated"),
        Just("references"),
        Just("email"),
        Just("isDefault"),
        Just("items"),
        Just("totalCount"),
        Just("phone"),
        Just("LEAKMARK-key"),
    ]
    .prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A page as Opter might send it, right or wrong in any field.
fn page() -> impl Strategy<Value = Value> {
    let item = prop_oneof![
        4 => prop::collection::vec((key(), value()), 0..8)
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        1 => value(),
    ];
    (
        prop::option::of(value()),
        prop_oneof![
            4 => prop::collection::vec(item, 0..6).prop_map(Value::Array),
            1 => value(),
        ],
    )
        .prop_map(|(total, items)| {
            let mut page = Map::new();
            if let Some(total) = total {
                page.insert("totalCount".into(), total);
            }
            page.insert("items".into(), items);
            Value::Object(page)
        })
}

/// Spoils the bytes at `at`: a byte changed, the rest cut off, bytes that are not
/// UTF-8, or a text put in (a key given twice, a marker outside any string).
fn spoil(mut bytes: Vec<u8>, how: u8, at: prop::sample::Index, byte: u8) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    let i = at.index(bytes.len());
    match how {
        0 => {}
        1 => bytes[i] = byte,
        2 => bytes.truncate(i),
        3 => {
            bytes.splice(i..i, [0xff, 0xfe]);
        }
        4 => {
            bytes.splice(i..i, *b"\"name\":\"LEAKMARK\",");
        }
        _ => {
            bytes.splice(i..i, *b"LEAKMARK");
        }
    }
    bytes
}

fn check_page(page: &Page) -> Result<(), TestCaseError> {
    for u in &page.unreadable {
        assert_clean(&u.reason)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn opter_pages_never_panic_and_never_repeat_a_value(
        page in page(),
        how in 0u8..6,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let bytes = spoil(serde_json::to_vec(&page).unwrap(), how, at, byte);
        let started = Instant::now();
        match parse_page_at(&bytes, 3) {
            Ok(page) => check_page(&page)?,
            Err(e) => assert_clean(&e)?,
        }
        prop_assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// A cell of an export: anything a person or a program could have typed, with markers.
fn cell() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"yes".to_vec()),
        Just(b"nej".to_vec()),
        Just(b"2025-01-02 03:04:05".to_vec()),
        Just(b"LEAKMARK".to_vec()),
        Just(b"LEAKMARK\xff\xfe".to_vec()),
        Just(NUMBER_MARKER.to_string().into_bytes()),
        Just(b"2025-13-01 LEAKMARK".to_vec()),
        Just(b" LEAKMARK@x.se\r".to_vec()),
    ]
}

/// A customer code: named in messages by design, so it carries no marker.
fn code() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        (1u8..6).prop_map(|n| format!("K{n}").into_bytes()),
        Just(b"K1\xff".to_vec()),
    ]
}

/// A tab-separated export: headings in some order (some of them markers), rows of
/// cells, the customer code first.
fn tsv(headings: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let heading = prop_oneof![
        8 => prop::sample::select(headings).prop_map(|h| h.as_bytes().to_vec()),
        1 => Just(b"LEAKMARK heading".to_vec()),
    ];
    let row = (code(), prop::collection::vec(cell(), 0..7));
    (
        prop::collection::vec(heading, 0..7),
        prop::collection::vec(row, 0..12),
        any::<bool>(),
    )
        .prop_map(|(found, rows, crlf)| {
            let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut out = b"Customer code\t".to_vec();
            out.extend(found.join(&b'\t'));
            out.extend_from_slice(end);
            for (code, cells) in rows {
                out.extend(code);
                for c in cells {
                    out.push(b'\t');
                    out.extend(c);
                }
                out.extend_from_slice(end);
            }
            out
        })
}

const CUSTOMER_HEADINGS: [&str; 6] = [
    "Name",
    "Sales ledger number",
    "Active",
    "Updated",
    "Aktiv",
    "Phone",
];
const REFERENCE_HEADINGS: [&str; 5] = ["Name", "E-mail", "Default", "Sales ledger number", "Phone"];

fn read_export(
    dir: &Path,
    customers: &[u8],
    references: &[u8],
    ext: &str,
) -> Result<(), TestCaseError> {
    let c = dir.join(format!("customers.{ext}"));
    let r = dir.join("references.txt");
    std::fs::write(&c, customers).unwrap();
    std::fs::write(&r, references).unwrap();
    let mut config = OpterExportConfig::files(c, r);
    config.max_rows = 10;
    config.max_unpacked_mb = 8;
    let started = Instant::now();
    match OpterExportSource::new(&config).unwrap().read(None) {
        Ok(page) => check_page(&page)?,
        Err(e) => assert_clean(&e.to_string())?,
    }
    prop_assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tab_separated_exports_never_panic_and_never_repeat_a_value(
        customers in tsv(&CUSTOMER_HEADINGS),
        references in tsv(&REFERENCE_HEADINGS),
    ) {
        let dir = tempfile::tempdir().unwrap();
        read_export(dir.path(), &customers, &references, "txt")?;
    }

    #[test]
    fn any_bytes_as_an_xlsx_file_never_panic_and_never_repeat_a_value(
        how in 0u8..6,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        whole in any::<bool>(),
        head in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A real workbook whose sheet is spoiled (so its checksums still hold), the
        // workbook's bytes spoiled, or a few bytes that only start like one.
        let bytes = match (how, whole) {
            (5, true) => [b"PK\x03\x04".as_slice(), &head].concat(),
            (how, true) => spoil(workbook(|sheet| sheet), how, at, byte),
            (how, false) => workbook(|sheet| spoil(sheet, how, at, byte)),
        };
        let dir = tempfile::tempdir().unwrap();
        let references = b"Customer code\tName\tE-mail\tDefault\n";
        read_export(dir.path(), &bytes, references, "xlsx")?;
    }
}

/// A small workbook whose every text but the headings and codes carries a marker, its
/// sheet's bytes passed through `sheet_bytes`.
fn workbook(sheet_bytes: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    let sheet = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>Customer code</t></is></c><c r="B1" t="inlineStr"><is><t>Name</t></is></c><c r="C1" t="inlineStr"><is><t>Sales ledger number</t></is></c><c r="D1" t="inlineStr"><is><t>Active</t></is></c><c r="E1" t="inlineStr"><is><t>Updated</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>K1</t></is></c><c r="B2" t="s"><v>0</v></c><c r="C2"><v>{NUMBER_MARKER}</v></c><c r="D2" t="inlineStr"><is><t>{TEXT_MARKER}</t></is></c><c r="E2" t="inlineStr"><is><t>{TEXT_MARKER}</t></is></c></row></sheetData></worksheet>"#
    );
    let sheet = sheet_bytes(sheet.into_bytes());
    let parts: [(&str, Vec<u8>); 6] = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#.as_bytes().to_vec(),
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.as_bytes().to_vec(),
        ),
        (
            "xl/workbook.xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Customers" sheetId="1" r:id="rId1"/></sheets></workbook>"#.as_bytes().to_vec(),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#.as_bytes().to_vec(),
        ),
        (
            "xl/sharedStrings.xml",
            format!(r#"<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>{TEXT_MARKER} Åkeri AB</t></si></sst>"#).into_bytes(),
        ),
        ("xl/worksheets/sheet1.xml", sheet),
    ];
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in parts {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}
