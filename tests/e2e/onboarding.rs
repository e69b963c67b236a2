//! The first sync against a register the accountant has filled for years: customers under
//! our numbers are linked only when they are the same customer, everything else is a
//! conflict a person decides with `link`; onboarding reads the register once instead of
//! asking about each customer; nothing is written from a read that cannot be read.

use opter_visma_sync::sandbox::generate::generate_customers;
use opter_visma_sync::sandbox::SandboxOptions;
use opter_visma_sync::sandbox::{bundled_customers, Faults};
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register};
use serde_json::{json, Value};

use crate::common::Setup;

/// Opter's K10001 is Bravo Transport AB; two more customers come after it.
fn bravo_first() -> Vec<Value> {
    let mut customers: Vec<Value> = bundled_customers().into_iter().take(3).collect();
    customers[0]["name"] = json!("Bravo Transport AB");
    customers[0]["email"] = json!("faktura@bravotransport.se");
    customers[0]["references"] = json!([{
        "id": 900001, "name": "Bo Bravo", "email": "bo@bravotransport.se", "isDefault": true
    }]);
    customers
}

/// The accountant's own K10001, with fields the connector never sends.
async fn hakansson_in_the_register(setup: &Setup) -> Value {
    setup
        .accountant_adds(json!({
            "CustomerNumber": "K10001",
            "Name": "Håkansson & Söner Åkeri AB",
            "ContactPersonName": "Östen Lindström",
            "ContactPersonEmail": "osten.lindstrom@hakanssonsonerakeri.se",
            "Telephone": "+46 33 400 69 68",
            "InvoiceAddress1": "Östra Hamngatan 63",
        }))
        .await
}

fn run(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = setup.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes to one register customer (by its id) since the log was cleared.
fn writes_to(setup: &Setup, id: &str) -> Vec<(String, String)> {
    setup
        .writes()
        .into_iter()
        .filter(|(_, path)| path.ends_with(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_customer_under_our_number_is_a_conflict_until_a_person_accepts() {
    let setup = Setup::new(bravo_first()).await;
    let theirs = hakansson_in_the_register(&setup).await;
    let id = theirs["Id"].as_str().unwrap().to_string();
    setup.clear_requests().await;

    let (code, report) = setup.sync_json();
    assert_eq!(code, 3, "a conflict needs a person: {report}");
    assert_eq!(report["conflict"], 1, "{report}");
    assert_eq!(report["conflicts"][0]["customer"], "K10001");
    let reason = report["conflicts"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("link --customer K10001 --accept"),
        "{reason}"
    );
    assert!(
        !reason.contains("Håkansson") && !reason.contains("Bravo"),
        "{reason}"
    );
    assert_eq!(report["created"], 2, "{report}");
    assert_eq!(
        writes_to(&setup, &id),
        [],
        "nothing is sent to their customer"
    );
    let kept = setup.register_customer("K10001").unwrap();
    assert_eq!(kept["Name"], "Håkansson & Söner Åkeri AB");
    assert_eq!(kept["Telephone"], "+46 33 400 69 68");

    // Journaled, and it stays a conflict on the next run.
    let (_, log, _) = run(
        &setup,
        &["journal", "log", "--customer", "K10001", "--json"],
    );
    let log: Value = serde_json::from_str(&log).unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "conflict"),
        "{log}"
    );
    setup.clear_requests().await;
    let (code, report) = setup.sync_json();
    assert_eq!(
        (code, report["conflict"].clone()),
        (3, json!(1)),
        "{report}"
    );
    assert_eq!(setup.writes(), []);

    // A person decides it is the same customer: the next sync updates it.
    let (code, out, err) = run(
        &setup,
        &[
            "link",
            "--customer",
            "K10001",
            "--accept",
            "--reason",
            "renamed",
            "--actor",
            "eva",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["updated"], 1, "{report}");
    let now = setup.register_customer("K10001").unwrap();
    assert_eq!(now["Id"], json!(id), "the same register customer");
    assert_eq!(now["Name"], "Bravo Transport AB");
    assert_eq!(
        now["Telephone"], "+46 33 400 69 68",
        "the accountant's fields stay"
    );
    let (_, log, _) = run(
        &setup,
        &["journal", "log", "--customer", "K10001", "--json"],
    );
    let log: Value = serde_json::from_str(&log).unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "link"
                && e["actor"] == "support:eva"
                && e["outcome"] == "succeeded"),
        "the decision is a support event: {log}"
    );
    let (code, out, err) = run(&setup, &["journal", "verify"]);
    assert_eq!(code, 0, "holds and events agree: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_customer_is_never_sent() {
    let setup = Setup::new(bravo_first()).await;
    hakansson_in_the_register(&setup).await;
    assert_eq!(setup.sync_json().0, 3);
    let (code, out, err) = run(&setup, &["link", "--customer", "K10001", "--skip"]);
    assert_eq!(code, 0, "{out}{err}");
    for _ in 0..2 {
        setup.clear_requests().await;
        let (code, report) = setup.sync_json();
        assert_eq!(code, 0, "{report}");
        assert_eq!(
            (report["skipped"].clone(), report["conflict"].clone()),
            (json!(1), Value::Null)
        );
        assert_eq!(setup.writes(), []);
    }
    let kept = setup.register_customer("K10001").unwrap();
    assert_eq!(kept["Name"], "Håkansson & Söner Åkeri AB");
    // Deciding twice is harmless; accepting a customer in no conflict is refused.
    assert_eq!(
        run(&setup, &["link", "--customer", "K10001", "--skip"]).0,
        0
    );
    assert_eq!(
        run(&setup, &["link", "--customer", "K10002", "--accept"]).0,
        2
    );
    let (code, out, err) = run(&setup, &["journal", "verify"]);
    assert_eq!(code, 0, "holds and events agree: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_written_differently_is_the_same_customer_and_is_linked() {
    let customers: Vec<Value> = bundled_customers().into_iter().take(3).collect();
    let setup = Setup::new(customers).await;
    // Upper case, no diacritics, no legal form, another contact.
    let theirs = setup
        .accountant_adds(json!({
            "CustomerNumber": "K10001",
            "Name": "HAKANSSON & SONER AKERI",
            "ContactPersonName": "Kalle Ek",
            "ContactPersonEmail": "kalle@example.se",
            "Telephone": "+46 33 400 69 68",
        }))
        .await;
    let id = theirs["Id"].as_str().unwrap().to_string();
    // The dry run names what changes against what the register holds.
    let out = setup.run(&["sync", "--dry-run", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned = plan["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["customer"] == "K10001")
        .unwrap()
        .clone();
    assert_eq!(planned["operation"], "update", "{plan}");
    assert_eq!(
        planned["fields"],
        json!(["ContactPersonEmail", "ContactPersonName", "Name"]),
        "{plan}"
    );
    setup.clear_requests().await;
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (report["updated"].clone(), report["created"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(
        writes_to(&setup, &id),
        [("PUT".to_string(), format!("/visma/v2/customers/{id}"))]
    );
    let now = setup.register_customer("K10001").unwrap();
    assert_eq!(now["Name"], "Håkansson & Söner Åkeri AB");
    assert_eq!(now["Telephone"], "+46 33 400 69 68");
    let numbers: Vec<String> = setup.register().into_iter().map(|(n, _)| n).collect();
    assert_eq!(numbers.iter().filter(|n| *n == "K10001").count(), 1);
}

/// Onboarding customers that are already in the register, unchanged, on a fresh
/// journal: the register's list is read once and nothing is written.
async fn onboarding_unchanged_reads_the_register_once(kind: &'static Register) {
    let options = SandboxOptions {
        customers: generate_customers(300, 17),
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    };
    let setup = Setup::for_sink(kind, options, 0).await;
    let (code, first) = setup.sync_json();
    assert!(code == 0 || code == 3, "{first}");
    let created = first["created"].as_u64().unwrap();
    assert!(created > 250, "{first}");
    // A lost journal (or a first install against a register filled by an earlier one).
    std::fs::remove_dir_all(setup.journal_dir().join("sled")).unwrap();
    setup.clear_requests().await;

    // Without --new-journal the folder's lost database is refused.
    let out = setup.run(&["sync", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = setup.run(&["sync", "--dry-run", "--json", "--new-journal"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["onboarding"]["linked_unchanged"], created, "{plan}");
    assert_eq!(plan["onboarding"]["created"], 0, "{plan}");
    assert_eq!(plan["onboarding"]["register_only"], 0, "{plan}");
    assert_eq!(setup.writes(), [], "a dry run writes nothing");

    setup.clear_requests().await;
    let (_, report) = setup.sync_json();
    assert_eq!(report["unchanged"], created, "{report}");
    assert_eq!(
        (report["created"].clone(), report["updated"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(setup.writes(), [], "0 POST/PUT");
    let gets = setup.api_requests().len();
    // One page of up to 1,000 customers; e-conomic lists a customer's contact person
    // by number only, so each linked customer's contact is read once.
    let most = match kind.name {
        "economic" => 1 + created as usize,
        _ => 1,
    };
    assert!(
        gets <= most,
        "{gets} register calls for {created} customers (at most {most})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eaccounting_onboarding_of_unchanged_customers_writes_nothing() {
    onboarding_unchanged_reads_the_register_once(&eaccounting::REGISTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visma_net_onboarding_of_unchanged_customers_writes_nothing() {
    onboarding_unchanged_reads_the_register_once(&visma_net::REGISTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn economic_onboarding_of_unchanged_customers_writes_nothing() {
    onboarding_unchanged_reads_the_register_once(&economic::REGISTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_read_before_an_update_writes_nothing() {
    let mut customers: Vec<Value> = bundled_customers().into_iter().take(3).collect();
    let setup = Setup::new(customers.clone()).await;
    assert_eq!(setup.sync_json().0, 0);
    let before = setup.register_customer("K10001").unwrap();
    customers[0]["name"] = json!("Håkansson Åkeri Nord AB");
    setup.put_opter_customer(&customers[0]).await;
    for seed in 0..3 {
        // Each seed spoils the read its own way (byte-order mark, empty, HTML).
        setup.sandbox.set_faults(Faults {
            seed,
            corrupt_read_rate: 1.0,
            ..Faults::default()
        });
        setup.clear_requests().await;
        let (code, report) = setup.sync_json();
        assert_eq!(code, 3, "{report}");
        assert_eq!(report["failed"], 1, "{report}");
        assert_eq!(setup.writes(), [], "0 PUTs");
        assert_eq!(setup.register_customer("K10001").unwrap(), before);
    }
    setup.sandbox.set_faults(Faults::default());
    let (code, report) = setup.sync_json();
    assert_eq!((code, report["updated"].clone()), (0, json!(1)), "{report}");
    let after = setup.register_customer("K10001").unwrap();
    assert_eq!(after["Name"], "Håkansson Åkeri Nord AB");
}

/// The accountant at work in eAccounting: a request with a login of our own.
async fn accountant(setup: &Setup, method: reqwest::Method, path: &str, body: Option<&Value>) {
    let token = setup.login_tokens().await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/visma/v2/{path}", setup.sandbox.base_url());
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let reply = request.send().await.unwrap();
    assert!(
        reply.status().is_success(),
        "{}",
        reply.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_each_kind_of_drift_and_writes_nothing() {
    let customers: Vec<Value> = bundled_customers().into_iter().take(4).collect();
    let setup = Setup::new(customers.clone()).await;
    assert_eq!(setup.sync_json().0, 0);
    let (code, out, err) = run(&setup, &["reconcile", "--json"]);
    assert_eq!(code, 0, "in step right after a sync: {out}{err}");

    // Deleted, edited and added in the register; added in Opter.
    let second = setup.register_customer("K10002").unwrap();
    let path = format!("customers/{}", second["Id"].as_str().unwrap());
    accountant(&setup, reqwest::Method::DELETE, &path, None).await;
    let mut third = setup.register_customer("K10003").unwrap();
    third["Name"] = json!("Renamed by the accountant AB");
    let path = format!("customers/{}", third["Id"].as_str().unwrap());
    accountant(&setup, reqwest::Method::PUT, &path, Some(&third)).await;
    setup
        .accountant_adds(json!({"CustomerNumber": "K99999", "Name": "Kassakund"}))
        .await;
    let mut new = customers[3].clone();
    new["customerCode"] = json!("K20000");
    new["customerNumber"] = json!("20000");
    setup.put_opter_customer(&new).await;
    let (_, log_before, _) = run(&setup, &["journal", "log", "--json"]);
    setup.clear_requests().await;

    let (code, out, err) = run(&setup, &["reconcile", "--json"]);
    assert_eq!(code, 3, "{out}{err}");
    let drift: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(drift["deleted_in_register"], json!(["K10002"]), "{drift}");
    assert_eq!(drift["edited_in_register"], json!(["K10003"]), "{drift}");
    assert_eq!(drift["only_in_register"], json!(["K99999"]), "{drift}");
    assert_eq!(drift["not_in_register"], json!(["K20000"]), "{drift}");
    assert_eq!(drift["remote_id_gone"], json!([]), "{drift}");
    assert_eq!(
        setup.writes(),
        [],
        "reconcile writes nothing to the register"
    );
    let (_, log_after, _) = run(&setup, &["journal", "log", "--json"]);
    assert_eq!(log_before, log_after, "nor to the journal");
    let (_, table, _) = run(&setup, &["reconcile"]);
    assert!(
        table.contains("deleted in the register") && table.contains("K10002"),
        "{table}"
    );
    assert!(!table.contains("Renamed"), "no names in the table: {table}");
}
