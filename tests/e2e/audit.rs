//! The journal as an audit trail, through the binary: timelines, show, export, masking,
//! retention with compaction.

use crate::common;

use common::{all_bytes, code, find_any, Setup};
use opter_visma_sync::output::CSV_COLUMNS;
use opter_visma_sync::sandbox::bundled_customers;
use serde_json::Value;

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn contact_emails(customers: &[Value]) -> Vec<String> {
    customers
        .iter()
        .flat_map(|c| c["references"].as_array().unwrap().clone())
        .filter_map(|r| r["email"].as_str().map(str::to_string))
        .collect()
}

async fn rename(setup: &Setup, index: usize, name: &str) {
    let mut c = bundled_customers()[index].clone();
    c["name"] = name.into();
    setup.put_opter_customer(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_timeline_shows_create_two_updates_and_a_rejection_in_order() {
    let setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    let code = code(0);
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    rename(&setup, 0, "Första Namnet AB").await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    rename(&setup, 0, "Andra Namnet AB").await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    rename(
        &setup,
        0,
        &"Ett Alldeles För Långt Namn För Visma ".repeat(2),
    )
    .await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(3));

    let out = setup.run(&["journal", "log", "--customer", &code, "--json"]);
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let timeline: Vec<(&str, &str)> = events
        .iter()
        .rev()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        timeline,
        [
            ("create", "succeeded"),
            ("update", "succeeded"),
            ("update", "succeeded"),
            ("update", "rejected")
        ]
    );
    assert!(events[0]["message"]
        .as_str()
        .unwrap()
        .contains("Visma eAccounting accepts at most 50"));

    let rejected = setup.run(&["journal", "log", "--outcome", "rejected", "--json"]);
    let rejected: Vec<Value> = serde_json::from_slice(&rejected.stdout).unwrap();
    assert_eq!(rejected.len(), 1);
    let future = setup.run(&["journal", "log", "--since", "2999-01-01", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&future.stdout).unwrap(),
        Vec::<Value>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_listings_mask_values_unless_asked() {
    let customers = bundled_customers()[..20].to_vec();
    let setup = Setup::new(customers.clone()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let emails = contact_emails(&customers);
    let all: Vec<Value> =
        serde_json::from_slice(&setup.run(&["journal", "log", "--json"]).stdout).unwrap();

    let jsonl = setup.run(&["journal", "export", "--format", "jsonl"]);
    let records = json_lines(&jsonl);
    assert_eq!(records.len(), all.len(), "one line per event");
    assert_eq!(records[0]["seq"], 1, "oldest first");
    let text = String::from_utf8_lossy(&jsonl.stdout).to_string();
    assert_eq!(
        find_any(&text, &emails),
        None,
        "masked export shows no full email"
    );
    assert!(text.contains("***@"), "emails are masked, not dropped");

    let csv = setup.run(&["journal", "export", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    assert_eq!(csv.lines().next().unwrap(), CSV_COLUMNS.join(","));
    assert_eq!(csv.lines().count(), all.len() + 1);
    assert_eq!(find_any(&csv, &emails), None);
    for listing in [
        setup.run(&["journal", "log", "--json"]),
        setup.run(&["journal", "show", "1"]),
        setup.run(&["journal", "show", "1", "--json"]),
    ] {
        let text = String::from_utf8_lossy(&listing.stdout).to_string();
        assert_eq!(find_any(&text, &emails), None, "{text}");
    }

    let shown = setup.run(&["journal", "export", "--format", "jsonl", "--show-values"]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        find_any(&shown, &emails).is_some(),
        "--show-values shows them"
    );
    let one = setup.run(&["journal", "show", "1", "--show-values"]);
    assert!(find_any(&String::from_utf8_lossy(&one.stdout), &emails).is_some());

    let code = customers[3]["customerCode"].as_str().unwrap();
    let mine =
        json_lines(&setup.run(&["journal", "export", "--format", "jsonl", "--customer", code]));
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["customer"], code);
    let missing = setup.run(&["journal", "show", "999"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_values_from_the_raw_journal_and_verify_still_passes() {
    let customers = bundled_customers()[..5].to_vec();
    let setup = Setup::new(customers.clone()).await;
    setup.configure("journal", "keep_values_days = 0");
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    // Customer 0 changes next run and is sent again, with its email; the others are not.
    let emails = contact_emails(&customers[1..]);
    let before = all_bytes(&setup.journal_dir());
    assert!(
        find_any(&before, &emails).is_some(),
        "the first run's values are journaled"
    );

    rename(&setup, 0, "Nytt Namn AB").await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let after = all_bytes(&setup.journal_dir());
    assert_eq!(
        find_any(&after, &emails),
        None,
        "no copy of a removed value is left"
    );
    assert!(
        after.contains("Nytt Namn AB"),
        "values within the retention period stay"
    );
    let verify = setup.run(&["journal", "verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The journal still works after the swap: nothing is sent again.
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["updated"].as_u64()),
        (Some(0), Some(0))
    );
}
