//! Incremental reads: a finished run records the source cursor (the highest `updated`
//! it read), and the next run reads only what changed in Opter since then, unless it
//! must read everything (`sync --full`, a first run, rejections or failures last time,
//! another mapping).

use crate::common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::Setup;
use opter_visma_sync::sandbox::generate::{edge_cases, generate_customers};
use serde_json::Value;

/// The overlap the engine reads before the cursor (`READ_OVERLAP`).
const OVERLAP: Duration = Duration::minutes(5);

fn updated(customer: &Value) -> Option<DateTime<Utc>> {
    customer["updated"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The highest `updated` among `customers`: the cursor a full read of them records.
fn cursor_of(customers: &[Value]) -> DateTime<Utc> {
    customers.iter().filter_map(updated).max().unwrap()
}

/// How many of `customers` an incremental read from `cursor` reads again (the overlap).
fn in_overlap(customers: &[Value], cursor: DateTime<Utc>) -> u64 {
    customers
        .iter()
        .filter_map(updated)
        .filter(|t| *t > cursor - OVERLAP)
        .count() as u64
}

/// Runs the binary with `args` (which include `--json`) and parses its report.
fn json(setup: &Setup, args: &[&str]) -> (i32, Value) {
    let out = setup.run(args);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}); exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn counts(report: &Value) -> [u64; 5] {
    ["created", "updated", "unchanged", "rejected", "failed"].map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    })
}

fn runs(setup: &Setup) -> Vec<Value> {
    let out = setup.run(&["journal", "runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_cursor(run: &Value) -> DateTime<Utc> {
    let text = run["cursor"].as_str().unwrap_or_else(|| panic!("{run}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Changes a customer in Opter as a person would: `updated` becomes now, strictly later
/// than any generated customer's (`Setup::put_opter_customer` stamps it too).
async fn edit(setup: &Setup, customer: &Value) {
    let mut customer = customer.clone();
    customer["updated"] = Utc::now()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
        .into();
    setup.put_opter_customer(&customer).await;
}

/// Replaces a customer in Opter exactly as given, `updated` included (an import that
/// keeps timestamps), bypassing `Setup::put_opter_customer`, which stamps `updated`.
async fn replace_keeping_updated(setup: &Setup, customer: &Value) {
    let code = customer["customerCode"].as_str().unwrap();
    let url = format!(
        "{}/_sandbox/opter/customers/{code}",
        setup.sandbox.base_url()
    );
    reqwest::Client::new()
        .put(url)
        .json(customer)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

/// The `updated` Opter now holds for `code`.
fn opter_updated(setup: &Setup, code: &str) -> DateTime<Utc> {
    let customers = setup.sandbox.opter_customers();
    let customer = customers
        .iter()
        .find(|c| c["customerCode"] == code)
        .unwrap();
    updated(customer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_run_only_what_changed_in_opter_is_read_and_written() {
    let customers = generate_customers(40, 11);
    let n = customers.len() as u64;
    let cursor = cursor_of(&customers);
    let overlap = in_overlap(&customers, cursor);
    assert!(overlap >= 1 && overlap < n / 4, "{overlap} in the overlap");
    let setup = Setup::new(customers.clone()).await;

    let (code, first) = setup.sync_json();
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["read"], "full");
    assert_eq!(counts(&first), [n, 0, 0, 0, 0]);

    // Nothing changed: only the customers within the overlap before the cursor are
    // read again, and nothing is sent.
    setup.clear_requests().await;
    let (code, second) = setup.sync_json();
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["read"], "incremental");
    assert_eq!(counts(&second), [0, 0, overlap, 0, 0], "{second}");
    assert_eq!(setup.writes(), vec![]);

    // One customer changes in Opter (a newer `updated`): it alone is read and updated.
    let mut changed = customers[7].clone();
    let code = changed["customerCode"].as_str().unwrap().to_string();
    changed["name"] = "Ändrat Namn Åkeri AB".into();
    edit(&setup, &changed).await;
    // A dry run reads incrementally too, and plans just that one update.
    let (_, plan) = json(&setup, &["sync", "--dry-run", "--json"]);
    assert_eq!(plan["read"], "incremental");
    assert_eq!(counts(&plan), [0, 1, overlap, 0, 0], "{plan}");
    assert_eq!(setup.writes(), vec![], "a dry run sends nothing");

    let (code_exit, third) = setup.sync_json();
    assert_eq!(code_exit, 0, "{third}");
    assert_eq!(third["read"], "incremental");
    assert_eq!(counts(&third), [0, 1, overlap, 0, 0], "{third}");
    let writes = setup.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].0, "PUT");
    assert_eq!(
        setup.register_customer(&code).unwrap()["Name"],
        "Ändrat Namn Åkeri AB"
    );

    // The cursor moved to the changed customer: the next read starts just before it.
    setup.clear_requests().await;
    let (_, fourth) = setup.sync_json();
    assert_eq!(fourth["read"], "incremental");
    assert_eq!(counts(&fourth), [0, 0, 1, 0, 0], "{fourth}");
    assert_eq!(setup.writes(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_full_reads_every_customer_again() {
    let customers = generate_customers(25, 12);
    let n = customers.len() as u64;
    let setup = Setup::new(customers).await;
    assert_eq!(setup.sync_json().1["read"], "full");
    assert_eq!(setup.sync_json().1["read"], "incremental");

    setup.clear_requests().await;
    let (code, full) = json(&setup, &["sync", "--full", "--json"]);
    assert_eq!(code, 0, "{full}");
    assert_eq!(full["read"], "full");
    assert_eq!(counts(&full), [0, 0, n, 0, 0], "{full}");
    assert_eq!(setup.writes(), vec![]);
    // A full run records a cursor too, so the next plain sync is incremental again.
    assert_eq!(setup.sync_json().1["read"], "incremental");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_rejections_the_next_run_reads_everything() {
    let setup = Setup::bundled().await;
    let (code, first) = setup.sync_json();
    assert_eq!(code, 3, "{first}");
    assert_eq!(first["read"], "full");
    let [created, _, _, rejected, _] = counts(&first);
    assert!(rejected > 0, "the bundled fixtures hold invalid edge cases");

    // The rejected customers have not changed in Opter, so only a full read finds them.
    let (_, second) = setup.sync_json();
    assert_eq!(second["read"], "full");
    assert_eq!(counts(&second), [0, 0, created, rejected, 0], "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_customer_fixed_without_a_newer_updated_is_still_sent() {
    let mut customers = generate_customers(20, 13);
    // EDGE06's name is longer than the register's 50 characters.
    let edge = edge_cases()
        .into_iter()
        .find(|c| c["customerCode"] == "EDGE06")
        .unwrap();
    customers.push(edge.clone());
    let n = customers.len() as u64;
    let setup = Setup::new(customers).await;
    let (_, first) = setup.sync_json();
    assert_eq!(counts(&first), [n - 1, 0, 0, 1, 0], "{first}");

    // Fixed in Opter, but with an `updated` older than the cursor (an import that
    // keeps timestamps): the run after a rejection reads everything, so the fix is found.
    let mut fixed = edge;
    fixed["name"] = "Norrbottens Åkeri AB".into();
    let old = updated(&fixed).unwrap() - Duration::days(1);
    fixed["updated"] = old.to_rfc3339_opts(SecondsFormat::Secs, true).into();
    replace_keeping_updated(&setup, &fixed).await;
    assert_eq!(opter_updated(&setup, "EDGE06"), old);
    let (code, second) = setup.sync_json();
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["read"], "full");
    assert_eq!(counts(&second), [1, 0, n - 1, 0, 0], "{second}");

    assert_eq!(setup.sync_json().1["read"], "incremental");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_mapping_reads_everything() {
    let customers = generate_customers(15, 14);
    let n = customers.len() as u64;
    let setup = Setup::new(customers).await;
    assert_eq!(setup.sync_json().0, 0);
    assert_eq!(setup.sync_json().1["read"], "incremental");

    // Contact names no longer mapped: every customer's content changes, none in Opter.
    let file = setup.dir.path().join("eaccounting-mapping.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("ContactPersonName"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without);
    std::fs::write(&file, without).unwrap();
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["read"], "full");
    assert_eq!(report["updated"], n, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_summaries_carry_the_source_cursor() {
    let customers = generate_customers(30, 15);
    let cursor = cursor_of(&customers);
    let setup = Setup::new(customers.clone()).await;
    let (_, first) = setup.sync_json();
    let runs1 = runs(&setup);
    assert_eq!(runs1.len(), 1);
    assert_eq!(runs1[0]["id"], first["run_id"]);
    assert_eq!(run_cursor(&runs1[0]), cursor);

    // An incremental run that sees nothing newer keeps the cursor.
    let (_, second) = setup.sync_json();
    assert_eq!(second["read"], "incremental");
    let runs2 = runs(&setup);
    assert_eq!(runs2.len(), 2);
    assert_eq!(runs2[1]["id"], second["run_id"]);
    assert_eq!(run_cursor(&runs2[1]), cursor);

    // One that reads a newer change moves it there.
    let mut changed = customers[0].clone();
    let code = changed["customerCode"].as_str().unwrap().to_string();
    changed["name"] = "Flyttad Markör AB".into();
    edit(&setup, &changed).await;
    let stamp = opter_updated(&setup, &code);
    assert!(stamp > cursor);
    let (_, third) = setup.sync_json();
    assert_eq!(third["updated"], 1, "{third}");
    let runs3 = runs(&setup);
    assert_eq!(runs3[2]["id"], third["run_id"]);
    assert_eq!(run_cursor(&runs3[2]), stamp);

    // Dry runs record no run.
    let (_, plan) = json(&setup, &["sync", "--dry-run", "--json"]);
    assert_eq!(plan["read"], "incremental");
    assert_eq!(runs(&setup).len(), 3);
}
