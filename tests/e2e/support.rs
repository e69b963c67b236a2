//! Support staff's tools through the binary against the sandbox: purge (delete or
//! anonymise), suppression, restriction, replay, export.

use crate::common;

use common::{all_bytes, code, find_any, Setup};
use opter_visma_sync::sandbox::bundled_customers;
use serde_json::Value;

/// The name and reference names/emails of customer `i`: what an erasure must remove.
fn personal_values(i: usize) -> Vec<String> {
    let c = &bundled_customers()[i];
    let mut values = vec![c["name"].as_str().unwrap().to_string()];
    for r in c["references"].as_array().unwrap() {
        for key in ["name", "email"] {
            values.extend(r[key].as_str().map(str::to_string));
        }
    }
    values
}

fn purge(setup: &Setup, code: &str) -> (i32, Value) {
    let out = setup.run(&[
        "purge",
        "--customer",
        code,
        "--reason",
        "GDPR erasure, ticket 1",
        "--yes",
        "--json",
        "--actor",
        "eva",
    ]);
    let receipt = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), receipt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_erases_the_journal_and_stays_suppressed_until_lifted() {
    let setup = Setup::new(bundled_customers()[..4].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let target = code(1);
    assert!(find_any(&all_bytes(&setup.journal_dir()), &personal_values(1)).is_some());

    let (exit, receipt) = purge(&setup, &target);
    assert_eq!(exit, 0, "{receipt}");
    assert_eq!(receipt["register"], "deleted");
    assert_eq!(receipt["customer"], target.as_str());
    assert_eq!(receipt["actor"], "support:eva");
    assert_eq!(receipt["journal_verified"], true);
    assert!(receipt["events_redacted"].as_u64().unwrap() >= 1);
    assert!(
        setup.register_customer(&target).is_none(),
        "deleted in the register"
    );
    assert_eq!(
        find_any(&all_bytes(&setup.journal_dir()), &personal_values(1)),
        None,
        "no byte left in the journal folder"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(setup.journal_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    // A later sync, even a full one after the customer changed, does not re-create it.
    let mut changed = bundled_customers()[1].clone();
    changed["name"] = "Ändrad Efter Radering AB".into();
    setup.put_opter_customer(&changed).await;
    setup.clear_requests().await;
    let out = setup.run(&["sync", "--full", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["suppressed"], 1);
    assert!(setup.register_customer(&target).is_none());
    let about_it = setup
        .sandbox
        .visma_requests()
        .iter()
        .filter(|r| {
            r["path"].as_str().unwrap_or_default().contains(&target)
                || r["body"].to_string().contains(&target)
        })
        .count();
    assert_eq!(
        about_it, 0,
        "the register receives no request for a suppressed customer"
    );

    let out = setup.run(&[
        "unsuppress",
        "--customer",
        &target,
        "--reason",
        "customer came back",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let (_, report) = setup.sync_json();
    assert_eq!(report["created"], 1, "{report}");
    assert_eq!(
        setup.register_customer(&target).unwrap()["Name"],
        "Ändrad Efter Radering AB"
    );

    let timeline: Vec<Value> = serde_json::from_slice(
        &setup
            .run(&["journal", "log", "--customer", &target, "--json"])
            .stdout,
    )
    .unwrap();
    let ops: Vec<&str> = timeline
        .iter()
        .rev()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["create", "erase", "unsuppress", "create"]);
    let actors: Vec<&str> = timeline
        .iter()
        .rev()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        (actors[0], actors[1], actors[3]),
        ("sync", "support:eva", "sync")
    );
    assert!(actors[2].starts_with("support:"), "{actors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_of_a_customer_with_transactions_anonymises_it() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let target = code(0);
    let mark = format!(
        "{}/_sandbox/visma/customers/{target}/transactions",
        setup.sandbox.base_url()
    );
    reqwest::Client::new()
        .post(mark)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let (exit, receipt) = purge(&setup, &target);
    assert_eq!(
        (exit, receipt["register"].as_str()),
        (0, Some("anonymised")),
        "{receipt}"
    );
    let record = setup
        .register_customer(&target)
        .expect("kept, since it has transactions");
    assert_eq!(record["IsActive"], false);
    assert_eq!(record["Name"], "Erased customer");
    for field in ["ContactPersonName", "ContactPersonEmail", "EmailAddress"] {
        assert_eq!(record[field], "", "{field}: {record}");
    }
    // The PUT names every personal field with an explicit empty value: it does not rely
    // on an omitted or null property being cleared.
    let put = setup
        .sandbox
        .visma_requests()
        .into_iter()
        .rfind(|r| r["method"] == "PUT")
        .expect("the anonymising PUT");
    for field in ["ContactPersonName", "ContactPersonEmail", "EmailAddress"] {
        assert_eq!(put["body"][field], "", "{field}: {put}");
    }
    let text = record.to_string();
    assert_eq!(find_any(&text, &personal_values(0)), None, "{text}");
    assert_eq!(
        find_any(&all_bytes(&setup.journal_dir()), &personal_values(0)),
        None
    );
}

#[test]
fn purge_refuses_to_run_unattended_without_yes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let setup = rt.block_on(Setup::new(bundled_customers()[..1].to_vec()));
    let out = setup
        .command(&["purge", "--customer", &code(0), "--reason", "x"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(
        setup.register_customer(&code(0)).is_none(),
        "never synced, so not there"
    );
    let events = setup.run(&["journal", "log", "--json"]);
    assert!(!events.status.success() || !String::from_utf8_lossy(&events.stdout).contains("erase"));
}

#[test]
fn a_refused_purge_changes_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let setup = rt.block_on(Setup::new(bundled_customers()[..2].to_vec()));
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let out = setup
        .command(&["purge", "--customer", &code(0), "--reason", "x"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(setup.register_customer(&code(0)).is_some());
    let timeline: Vec<Value> = serde_json::from_slice(
        &setup
            .run(&["journal", "log", "--customer", &code(0), "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(timeline.len(), 1, "only the create");
    let (_, report) = setup.sync_json();
    assert_eq!(report["suppressed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_killed_at_any_moment_and_run_again_ends_the_same() {
    use opter_visma_sync::sandbox::Faults;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut landed = 0;
    for round in 0..8 {
        let setup = Setup::new(bundled_customers()[..4].to_vec()).await;
        assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
        // Latency stretches the purge's register calls so kills land between its steps.
        setup.sandbox.set_faults(Faults {
            latency_ms: 60,
            ..Faults::default()
        });
        let target = code(2);
        let mut child = setup
            .command(&[
                "purge",
                "--customer",
                &target,
                "--reason",
                "erasure",
                "--yes",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(rng.gen_range(5..90))).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            landed += 1;
        }
        child.wait().unwrap();

        let (exit, receipt) = purge(&setup, &target);
        assert_eq!(exit, 0, "round {round}: {receipt}");
        assert_eq!(receipt["journal_verified"], true);
        assert!(setup.register_customer(&target).is_none(), "round {round}");
        let journal = all_bytes(&setup.journal_dir());
        assert_eq!(
            find_any(&journal, &personal_values(2)),
            None,
            "round {round}"
        );
        assert!(
            find_any(&journal, &personal_values(1)).is_some(),
            "others are kept"
        );
        let out = setup.run(&["sync", "--full", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["suppressed"], 1, "round {round}");
    }
    eprintln!("{landed} of 8 purges were killed mid-way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_customer_is_not_sent_until_unrestricted() {
    let setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let target = code(2);
    let out = setup.run(&["restrict", "--customer", &target, "--reason", "disputed"]);
    assert_eq!(out.status.code(), Some(0));
    // Edited long ago as far as `updated` goes: only a full read sees it.
    let mut changed = bundled_customers()[2].clone();
    changed["name"] = "Begränsad AB".into();
    setup.put_opter_customer_as_is(&changed).await;
    let mut other = bundled_customers()[0].clone();
    other["name"] = "Andra Kunden AB".into();
    setup.put_opter_customer(&other).await;
    setup.clear_requests().await;
    let out = setup.run(&["sync", "--full", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["restricted"].as_u64(), report["updated"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let writes = setup.writes();
    assert_eq!(
        writes.len(),
        1,
        "only the other customer is sent: {writes:?}"
    );
    assert_eq!(
        setup.register_customer(&code(0)).unwrap()["Name"],
        "Andra Kunden AB"
    );
    assert_ne!(
        setup.register_customer(&target).unwrap()["Name"],
        "Begränsad AB"
    );

    setup.run(&["unrestrict", "--customer", &target, "--reason", "resolved"]);
    // A plain sync: lifting the hold makes it read everything, so the old edit is seen.
    let (_, report) = setup.sync_json();
    assert_eq!(
        (report["updated"].as_u64(), report["read"].as_str()),
        (Some(1), Some("full")),
        "{report}"
    );
    assert_eq!(
        setup.register_customer(&target).unwrap()["Name"],
        "Begränsad AB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_an_unchanged_customer_again() {
    let setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    setup.clear_requests().await;
    let out = setup.run(&[
        "replay",
        "--customer",
        &code(1),
        "--reason",
        "fixed by hand in Visma",
        "--actor",
        "olle",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), report["updated"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );
    let puts: Vec<_> = setup
        .writes()
        .into_iter()
        .filter(|(m, _)| m == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    let events: Vec<Value> = serde_json::from_slice(
        &setup
            .run(&["journal", "log", "--customer", &code(1), "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(
        (events[0]["operation"].as_str(), events[0]["actor"].as_str()),
        (Some("update"), Some("support:olle"))
    );
    assert_eq!(events[1]["operation"], "replay");
    assert_eq!(events[1]["message"], "fixed by hand in Visma");
    // The next plain sync sends nothing again.
    setup.clear_requests().await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    assert_eq!(setup.writes(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_events_with_values_state_holds_and_the_live_record() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    setup.run(&["restrict", "--customer", &code(0), "--reason", "asked"]);
    let out = setup.run(&["export", "--customer", &code(0)]);
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["customer"], code(0).as_str());
    let logged: Vec<Value> = serde_json::from_slice(
        &setup
            .run(&["journal", "log", "--customer", &code(0), "--json"])
            .stdout,
    )
    .unwrap();
    // Every event before the export's own (create, restrict).
    assert_eq!(
        doc["journal_events"].as_array().unwrap().len(),
        logged.len() - 1
    );
    let name = bundled_customers()[0]["name"].as_str().unwrap().to_string();
    assert_eq!(
        doc["journal_events"][0]["values"]["Name"],
        name.as_str(),
        "values unmasked for the data subject"
    );
    assert_eq!(doc["register_record"]["Name"], name.as_str());
    assert!(doc["state"]["remote_id"].is_string());
    assert_eq!(doc["restriction"]["reason"], "asked");
    assert!(doc["suppression"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_failed_sends_every_customer_whose_last_write_failed() {
    use opter_visma_sync::sandbox::Faults;
    let setup = Setup::new(bundled_customers()[..6].to_vec()).await;
    setup.start_outage();
    let (exit, report) = setup.sync_json();
    assert_eq!((exit, report["failed"].as_u64()), (3, Some(6)), "{report}");

    setup.sandbox.set_faults(Faults::default());
    let out = setup.run(&[
        "replay",
        "--failed",
        "--reason",
        "after the outage",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), report["created"].as_u64()),
        (Some(0), Some(6)),
        "{report}"
    );
    assert_eq!(setup.sandbox.visma_customers().len(), 6);
    let again = setup.run(&["replay", "--failed", "--reason", "nothing left"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to replay"));
}
