//! Every register end to end, through the real binary and the loopback sandbox: the
//! bundled customers converge, a re-run sends nothing, one change is one update, purge
//! erases by the product's own rules, and `demo --sink` works.

use crate::common;

use common::Setup;
use opter_visma_sync::sandbox::bundled_customers;
use opter_visma_sync::sandbox::SandboxOptions;
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register, ERASED_NAME};
use serde_json::Value;

const ALL: [&Register; 3] = [
    &eaccounting::REGISTER,
    &visma_net::REGISTER,
    &economic::REGISTER,
];

fn unlimited() -> SandboxOptions {
    SandboxOptions {
        customers: bundled_customers(),
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    }
}

/// Synced once; returns the setup and the first run's report.
async fn synced(kind: &'static Register) -> (Setup, Value) {
    let setup = Setup::for_sink(kind, unlimited(), 0).await;
    let (code, report) = setup.sync_json();
    assert_eq!(
        code, 3,
        "{}: some bundled customers are invalid: {report}",
        kind.name
    );
    (setup, report)
}

fn rejected_codes(report: &Value) -> Vec<String> {
    let mut codes: Vec<String> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["customer"].as_str().unwrap().to_string())
        .collect();
    codes.sort();
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_register_converges_and_a_second_run_sends_nothing() {
    for kind in [&visma_net::REGISTER, &economic::REGISTER] {
        let (setup, report) = synced(kind).await;
        let created = report["created"].as_u64().unwrap() as usize;
        let register = setup.register();
        assert_eq!(register.len(), created, "{}", kind.name);
        assert!(created > 290, "{}: only {created} created", kind.name);
        let mut numbers: Vec<_> = register.iter().map(|(n, _)| n.clone()).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), created, "{}: a number twice", kind.name);

        setup.clear_requests().await;
        let (code, again) = setup.sync_json();
        assert_eq!(code, 3, "{again}");
        assert_eq!(again["created"], 0, "{}: {again}", kind.name);
        assert_eq!(again["updated"], 0, "{}: {again}", kind.name);
        assert_eq!(
            setup.writes(),
            Vec::<(String, String)>::new(),
            "{}: a re-run writes nothing",
            kind.name
        );
        assert_eq!(rejected_codes(&again), rejected_codes(&report));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn economic_rejects_a_customer_without_a_sales_ledger_number_saying_why() {
    let (_setup, report) = synced(&economic::REGISTER).await;
    let without_number: Vec<String> = bundled_customers()
        .iter()
        .filter(|c| c["customerNumber"].is_null())
        .map(|c| c["customerCode"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !without_number.is_empty(),
        "the fixtures have such a customer"
    );
    for code in without_number {
        let rejection = report["rejections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["customer"] == code.as_str())
            .unwrap_or_else(|| panic!("{code} is not rejected: {report}"));
        let reason = rejection["reason"].as_str().unwrap();
        assert!(
            reason.contains("customerNumber") && reason.contains("sales ledger number"),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_in_opter_is_one_write_in_every_register() {
    for kind in [&visma_net::REGISTER, &economic::REGISTER] {
        let (setup, _) = synced(kind).await;
        let mut customer = bundled_customers()[1].clone();
        customer["name"] = "Nytt Namn Åkeri AB".into();
        setup.put_opter_customer(&customer).await;
        setup.clear_requests().await;
        let (_, report) = setup.sync_json();
        assert_eq!(report["updated"], 1, "{}: {report}", kind.name);
        let number = setup.number_of(&customer);
        let writes = setup.writes();
        // Visma.net: one partial PUT. e-conomic: the customer's full-replace PUT only
        // (its contact did not change).
        assert_eq!(writes.len(), 1, "{}: {writes:?}", kind.name);
        assert_eq!(writes[0].0, "PUT");
        assert!(writes[0].1.ends_with(&number), "{writes:?}");
        let name = setup
            .register()
            .into_iter()
            .find(|(n, _)| *n == number)
            .unwrap()
            .1;
        assert_eq!(name, "Nytt Namn Åkeri AB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_erases_by_each_registers_rules() {
    let code = common::code(2);
    let customer = bundled_customers()[2].clone();

    // Visma.net has no delete: the customer stays, anonymised and inactive.
    let (setup, _) = synced(&visma_net::REGISTER).await;
    let number = setup.number_of(&customer);
    let out = setup.run(&[
        "purge",
        "--customer",
        &code,
        "--reason",
        "GDPR erasure",
        "--yes",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["register"], "anonymised", "{receipt}");
    let held = setup
        .sandbox
        .visma_net_customers()
        .into_iter()
        .find(|c| c["number"] == number.as_str())
        .unwrap();
    assert_eq!(held["name"], ERASED_NAME, "{held}");
    assert_eq!(held["status"], "Inactive", "{held}");
    let contact = &held["mainContact"];
    assert!(
        contact.is_null() || (contact["name"].is_null() && contact["email"].is_null()),
        "{held}"
    );

    // e-conomic deletes the customer and its contact.
    let (setup, _) = synced(&economic::REGISTER).await;
    let number = setup.number_of(&customer);
    let out = setup.run(&[
        "purge",
        "--customer",
        &code,
        "--reason",
        "GDPR erasure",
        "--yes",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["register"], "deleted", "{receipt}");
    assert!(
        !setup.register().iter().any(|(n, _)| *n == number),
        "customer {number} is still in e-conomic"
    );
    // And a purged customer is not created again.
    let (_, report) = setup.sync_json();
    assert_eq!(report["created"], 0, "{report}");
    assert!(!setup.register().iter().any(|(n, _)| *n == number));
}

#[test]
fn demo_runs_for_every_register() {
    for kind in ALL {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
            .args(["demo", "--sink", kind.name, "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {stdout}\n{}",
            kind.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("{} register now holds", kind.product())),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_tools_work_for_every_register() {
    for kind in [&visma_net::REGISTER, &economic::REGISTER] {
        let (setup, _) = synced(kind).await;
        let code = common::code(4);
        let mut customer = bundled_customers()[4].clone();
        let number = setup.number_of(&customer);

        // Restricted: a change in Opter is not sent.
        let out = setup.run(&["restrict", "--customer", &code, "--reason", "disputed"]);
        assert_eq!(out.status.code(), Some(0), "{}", kind.name);
        customer["name"] = "Omstridd Kund AB".into();
        setup.put_opter_customer(&customer).await;
        setup.clear_requests().await;
        let (_, report) = setup.sync_json();
        assert_eq!(report["restricted"], 1, "{}: {report}", kind.name);
        assert!(
            setup.writes().is_empty(),
            "{}: {:?}",
            kind.name,
            setup.writes()
        );

        // Lifted: the next run sends it.
        setup.run(&["unrestrict", "--customer", &code, "--reason", "resolved"]);
        let (_, report) = setup.sync_json();
        assert_eq!(report["updated"], 1, "{}: {report}", kind.name);
        let name = |setup: &Setup| {
            setup
                .register()
                .into_iter()
                .find(|(n, _)| *n == number)
                .map(|(_, name)| name)
        };
        assert_eq!(name(&setup).as_deref(), Some("Omstridd Kund AB"));

        // Access: the export holds the live register record.
        let out = setup.run(&["export", "--customer", &code]);
        assert_eq!(out.status.code(), Some(0), "{}", kind.name);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            doc["register_record"]
                .to_string()
                .contains("Omstridd Kund AB"),
            "{}: {doc}",
            kind.name
        );

        // Rectification: replay sends the customer again even though it is unchanged.
        setup.clear_requests().await;
        let out = setup.run(&["replay", "--customer", &code, "--reason", "asked", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", kind.name);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["updated"], 1, "{}: {report}", kind.name);
        assert!(!setup.writes().is_empty(), "{}: replay wrote", kind.name);
    }
}

#[test]
fn demo_reads_opter_export_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
        .args([
            "demo",
            "--sink",
            "economic",
            "--source",
            "opter-export",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("export/customers.xlsx").exists());
    let config = std::fs::read_to_string(dir.path().join("opter-visma-sync.toml")).unwrap();
    assert!(config.contains("kind = \"opter-export\""), "{config}");
    // Step 3 changed one customer in the files: one update.
    assert!(stdout.contains("changed in Opter: one update"), "{stdout}");
    let updated = stdout
        .split("changed in Opter: one update")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.trim_start().starts_with("updated")))
        .unwrap();
    assert!(updated.trim_end().ends_with(" 1"), "{updated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_economic_customer_deleted_there_is_created_again_once_and_journaled_as_a_create() {
    let customers = bundled_customers()[..3].to_vec();
    let options = SandboxOptions {
        customers: customers.clone(),
        ..unlimited()
    };
    let setup = Setup::for_sink(&economic::REGISTER, options, 0).await;
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    let number = setup.number_of(&customers[0]);
    // An accountant deletes it in e-conomic (a PUT there would now create it anew).
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/customers/{number}",
            setup.sandbox.economic_api_base()
        ))
        .header("X-AppSecretToken", &setup.env["ECONOMIC_APP_SECRET_TOKEN"])
        .header(
            "X-AgreementGrantToken",
            &setup.env["ECONOMIC_AGREEMENT_GRANT_TOKEN"],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let mut changed = customers[0].clone();
    changed["name"] = "Tillbaka AB".into();
    setup.put_opter_customer(&changed).await;
    setup.clear_requests().await;
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["updated"].as_u64()),
        (Some(1), Some(0))
    );
    let again: Vec<Value> = setup
        .sandbox
        .economic_customers()
        .into_iter()
        .filter(|c| c["customerNumber"].as_i64().map(|n| n.to_string()) == Some(number.clone()))
        .collect();
    assert_eq!(again.len(), 1, "exactly one customer with the number");
    assert_eq!(again[0]["name"], "Tillbaka AB");
    // Made by a POST, not upserted by the update's PUT, with its contact linked.
    let writes = setup.writes();
    assert!(
        writes.contains(&("POST".to_string(), "/economic/api/customers".to_string())),
        "{writes:?}"
    );
    let contacts = again[0]["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(
        again[0]["attention"]["customerContactNumber"],
        contacts[0]["customerContactNumber"]
    );
    // The journal says what happened: a create.
    let code = customers[0]["customerCode"].as_str().unwrap();
    let out = setup.run(&["journal", "export", "--format", "jsonl", "--customer", code]);
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(
        (last["operation"].as_str(), last["outcome"].as_str()),
        (Some("create"), Some("succeeded")),
        "{events:?}"
    );
    // And the next run has nothing to do.
    let (_, next) = setup.sync_json();
    assert_eq!(
        (next["created"].as_u64(), next["updated"].as_u64()),
        (Some(0), Some(0)),
        "{next}"
    );
}

/// Moves every call counted in e-conomic's budget file back by a day and a minute, as
/// if they had been made yesterday.
fn age_call_count(setup: &Setup) {
    let path = setup.journal_dir().join(economic::CALL_COUNT_FILE);
    let mut counted: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for entry in counted["calls_per_minute"].as_array_mut().unwrap() {
        entry[0] = (entry[0].as_i64().unwrap() - 24 * 60 - 1).into();
    }
    std::fs::write(&path, serde_json::to_vec(&counted).unwrap()).unwrap();
}

fn economic_calls(setup: &Setup) -> usize {
    setup.api_requests().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_call_budget_stops_the_run_cleanly_and_the_next_day_resumes_it() {
    let setup = Setup::for_sink(&economic::REGISTER, unlimited(), 0).await;
    setup.configure("sink", "daily_call_budget = 20");
    let out = setup.run(&["sync", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Stopped before passing the budget, with nothing half-done: every customer it
    // began is written, none failed (an unknown outcome), the rest not sent at all.
    let calls = economic_calls(&setup);
    assert!(calls <= 20, "{calls} calls");
    let created = report["created"].as_u64().unwrap() as usize;
    assert!(created >= 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(setup.register().len(), created);
    assert!(
        setup
            .sandbox
            .economic_customers()
            .iter()
            .all(|c| c["contacts"].as_array().unwrap().len() <= 1
                && (c["contacts"].as_array().unwrap().is_empty() || c["attention"].is_object())),
        "each customer whole: its contact linked"
    );
    assert!(
        stderr.contains("daily call budget is used up")
            && stderr.contains(" calls in the last 24 hours")
            && stderr.contains("[sink] daily_call_budget is 20")
            && stderr.contains("It can run again from "),
        "{stderr}"
    );
    // The count is beside the journal, owner-only, counts and times only.
    let path = setup.journal_dir().join(economic::CALL_COUNT_FILE);
    let counted: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let total: u64 = counted["calls_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, calls, "{counted}");
    assert_eq!(counted.as_object().unwrap().len(), 1, "{counted}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The same day, the next run uses what is left of the budget, no more.
    setup.clear_requests().await;
    let (code, again) = setup.sync_json();
    assert_eq!(code, 6, "{again}");
    assert!(
        calls + economic_calls(&setup) <= 20,
        "nothing sent past the budget"
    );
    let created = created + again["created"].as_u64().unwrap() as usize;
    let (code, _) = setup.sync_json();
    assert_eq!(code, 6);

    // A day later the window has room again: it resumes where it stopped.
    age_call_count(&setup);
    setup.clear_requests().await;
    let (code, second) = setup.sync_json();
    assert_eq!(code, 6, "{second}");
    assert!(economic_calls(&setup) <= 20);
    let more = second["created"].as_u64().unwrap() as usize;
    assert!(more >= 1, "{second}");
    assert_eq!(setup.register().len(), created + more);

    // With room for all of it, the run finishes: every customer once.
    age_call_count(&setup);
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("daily_call_budget = 20", "daily_call_budget = 45000"),
    )
    .unwrap();
    let (code, last) = setup.sync_json();
    assert_eq!(
        code, 3,
        "only the bundled invalid customers are left: {last}"
    );
    assert_eq!(last["failed"], 0, "{last}");
    let register = setup.register();
    let total = created + more + last["created"].as_u64().unwrap() as usize;
    assert_eq!(register.len(), total);
    assert!(total > 290, "{total}");
    let mut numbers: Vec<_> = register.iter().map(|(n, _)| n.clone()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), total, "no customer twice");
    assert_eq!(setup.run(&["journal", "verify"]).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_call_budget_out_of_range_is_a_config_error_naming_the_key() {
    let setup = Setup::for_sink(&economic::REGISTER, unlimited(), 0).await;
    for bad in ["0", "50001", "-1"] {
        let text = std::fs::read_to_string(&setup.config).unwrap();
        let text = match text.contains("daily_call_budget") {
            true => text
                .lines()
                .map(|l| match l.starts_with("daily_call_budget") {
                    true => format!("daily_call_budget = {bad}"),
                    false => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            false => text.replace(
                "[journal]",
                &format!("daily_call_budget = {bad}\n[journal]"),
            ),
        };
        std::fs::write(&setup.config, text).unwrap();
        let out = setup.run(&["sync"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("daily_call_budget"), "{bad}: {stderr}");
        assert_eq!(setup.api_requests().len(), 0);
    }
}
