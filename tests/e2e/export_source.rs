//! Opter's export files as the source, end to end: the same customers read from the
//! Excel or tab-separated exports and from Opter's API give identical registers, and a
//! broken file stops the run with a message naming the file, row and column.

use crate::common;

use std::path::Path;

use common::Setup;
use opter_visma_sync::sandbox::bundled_customers;
use opter_visma_sync::sandbox::SandboxOptions;
use opter_visma_sync::sink::{eaccounting, economic, visma_net};
use serde_json::Value;

fn unlimited() -> SandboxOptions {
    SandboxOptions {
        customers: bundled_customers(),
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    }
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/export")
        .join(name)
        .display()
        .to_string()
}

/// Points the setup's `[source]` at export files instead of Opter's API.
fn use_export(setup: &Setup, customers: &str, references: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let start = text.find("[source]").unwrap();
    let end = text.find("[sink]").unwrap();
    let source = format!(
        "[source]\nkind = \"opter-export\"\ncustomers = {customers:?}\nreferences = {references:?}\n\n"
    );
    std::fs::write(
        &setup.config,
        format!("{}{source}{}", &text[..start], &text[end..]),
    )
    .unwrap();
}

/// The register's customers as JSON text, in number order, without what the register
/// itself makes up per customer (ids, timestamps, links), which differs between any two
/// registers.
fn register_text(setup: &Setup) -> String {
    const MADE_BY_THE_REGISTER: [&str; 11] = [
        "Id",
        "CreatedUtc",
        "ChangedUtc",
        "self",
        "internalId",
        "createdDateTime",
        "lastModifiedDateTime",
        "customerContactNumber",
        "contactNumber",
        "lastUpdated",
        "sortKey",
    ];
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| !MADE_BY_THE_REGISTER.contains(&k.as_str()));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut customers = match setup.kind.name {
        "eaccounting" => setup.sandbox.visma_customers(),
        "visma-net" => setup.sandbox.visma_net_customers(),
        "economic" => setup.sandbox.economic_customers(),
        other => panic!("no register {other}"),
    };
    customers.iter_mut().for_each(strip);
    customers.sort_by_key(|c| c.to_string());
    serde_json::to_string_pretty(&customers).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_files_and_the_api_give_identical_registers() {
    for kind in [
        &eaccounting::REGISTER,
        &visma_net::REGISTER,
        &economic::REGISTER,
    ] {
        let api = Setup::for_sink(kind, unlimited(), 0).await;
        let (_, api_report) = api.sync_json();
        let expected = register_text(&api);
        assert!(expected.len() > 10_000, "the register was filled");
        for (customers, references) in [
            ("customers.xlsx", "references.xlsx"),
            ("customers.txt", "references.txt"),
        ] {
            let files = Setup::for_sink(kind, unlimited(), 0).await;
            use_export(&files, &fixture(customers), &fixture(references));
            let (_, report) = files.sync_json();
            assert_eq!(report["created"], api_report["created"], "{report}");
            assert_eq!(report["rejected"], api_report["rejected"], "{report}");
            assert!(
                files.sandbox.opter_customers().len() == bundled_customers().len()
                    && files
                        .requests()
                        .iter()
                        .all(|r| !r["path"].as_str().unwrap().starts_with("/opter")),
                "Opter's API was not asked"
            );
            let got = register_text(&files);
            let first_difference = got.lines().zip(expected.lines()).position(|(a, b)| a != b);
            assert!(
                got == expected,
                "{}: {customers} differs from the API at line {first_difference:?}",
                kind.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_export_files_stop_the_run_naming_file_row_and_column() {
    let setup = Setup::for_sink(&eaccounting::REGISTER, unlimited(), 0).await;
    let dir = setup.dir.path();

    // A missing file.
    use_export(
        &setup,
        &dir.join("nope.xlsx").display().to_string(),
        &fixture("references.xlsx"),
    );
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.xlsx"), "{stderr}");

    // A required column missing.
    let customers = std::fs::read_to_string(fixture("customers.txt")).unwrap();
    let broken = customers.replacen("Name", "Namn?", 1);
    let path = dir.join("customers.txt");
    std::fs::write(&path, broken).unwrap();
    use_export(
        &setup,
        &path.display().to_string(),
        &fixture("references.txt"),
    );
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("customers.txt") && stderr.contains("Name"),
        "{stderr}"
    );

    // A reference for a customer the customers file does not have.
    let references = std::fs::read_to_string(fixture("references.txt")).unwrap();
    let mut lines: Vec<String> = references.lines().map(str::to_string).collect();
    let first = lines[1].clone();
    let code = first.split('\t').next().unwrap().to_string();
    lines.push(first.replacen(&code, "NOSUCHCODE", 1));
    let path = dir.join("references.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    use_export(
        &setup,
        &fixture("customers.txt"),
        &path.display().to_string(),
    );
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let row = lines.len().to_string();
    assert!(
        stderr.contains("references.txt") && stderr.contains("NOSUCHCODE") && stderr.contains(&row),
        "{stderr}"
    );
    assert!(
        setup.register().is_empty(),
        "nothing was sent from a broken export"
    );
}
