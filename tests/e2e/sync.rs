//! End to end through the real binary against the real sandbox over loopback HTTP.

use crate::common;

use std::collections::BTreeSet;

use common::{all_bytes, code, contains, find_any, Setup};
use opter_visma_sync::sandbox::bundled_customers;
use serde_json::Value;

/// The bundled edge cases the connector must refuse, with a piece of each reason.
const EXPECTED_REJECTIONS: [(&str, &str); 7] = [
    (
        "EDGE05",
        "ContactPersonEmail is not a well-formed email address",
    ),
    (
        "EDGE06",
        "Name is 63 characters; Visma eAccounting accepts at most 50",
    ),
    (
        "EDGE07LONGCODE12345",
        "CustomerNumber is 19 characters; Visma eAccounting accepts at most 16",
    ),
    ("EDGE10", "customer code EDGE10 appears 2 times"),
    ("EDGE10", "customer code EDGE10 appears 2 times"),
    ("EDGE11", "ContactPersonName is"),
    ("EDGE12", "ContactPersonEmail is"),
];

fn codes(customers: &[Value]) -> Vec<String> {
    customers
        .iter()
        .map(|c| c["customerCode"].as_str().unwrap().to_string())
        .collect()
}

fn register_numbers(setup: &Setup) -> BTreeSet<String> {
    setup
        .sandbox
        .visma_customers()
        .iter()
        .map(|c| c["CustomerNumber"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_every_valid_customer_once_then_sends_nothing_then_one_update() {
    let setup = Setup::bundled().await;
    let fixtures = bundled_customers();

    let (code, first) = setup.sync_json();
    assert_eq!(code, 3, "rejections make exit code 3: {first}");
    let rejected: Vec<(String, String)> = first["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["customer"].as_str().unwrap().into(),
                r["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(rejected.len(), EXPECTED_REJECTIONS.len(), "{rejected:#?}");
    for ((code, reason), (want_code, want_reason)) in rejected.iter().zip(EXPECTED_REJECTIONS) {
        assert_eq!(code, want_code);
        assert!(reason.contains(want_reason), "{code}: {reason}");
    }
    let rejected_codes: BTreeSet<&str> = EXPECTED_REJECTIONS.iter().map(|(c, _)| *c).collect();
    let expected: BTreeSet<String> = codes(&fixtures)
        .into_iter()
        .filter(|c| !rejected_codes.contains(c.as_str()))
        .collect();
    assert_eq!(first["created"], expected.len() as u64);
    assert_eq!(first["rejected"], EXPECTED_REJECTIONS.len() as u64);
    assert_eq!(
        (first["updated"].as_u64(), first["failed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        register_numbers(&setup),
        expected,
        "the register holds exactly the valid customers"
    );
    assert_eq!(
        setup.sandbox.visma_customers().len(),
        expected.len(),
        "no duplicates"
    );

    setup.clear_requests().await;
    let (_, second) = setup.sync_json();
    assert_eq!(setup.writes(), vec![], "an unchanged Opter sends nothing");
    assert_eq!(second["unchanged"], expected.len() as u64);
    assert_eq!(
        (second["created"].as_u64(), second["updated"].as_u64()),
        (Some(0), Some(0))
    );

    let mut changed = fixtures[0].clone();
    let code = changed["customerCode"].as_str().unwrap().to_string();
    changed["name"] = "Renamed Åkeri AB".into();
    setup.put_opter_customer(&changed).await;
    let (_, third) = setup.sync_json();
    let writes = setup.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].0, "PUT");
    assert_eq!(third["updated"], 1);
    let stored = setup.register_customer(&code).unwrap();
    assert_eq!(stored["Name"], "Renamed Åkeri AB");
}

/// Values of non-permitted Opter fields that could only reach an output by leaking:
/// those that do not also occur inside a permitted value (a city can be part of a name).
fn forbidden_values(customers: &[Value]) -> BTreeSet<String> {
    let mut permitted = Vec::new();
    let mut other = BTreeSet::new();
    fn strings(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::String(s) if s.chars().count() >= 4 => {
                out.insert(s.clone());
            }
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    for c in customers {
        for (k, v) in c.as_object().unwrap() {
            match k.as_str() {
                "customerCode" | "customerNumber" | "name" | "isActive" | "updated" => {
                    permitted.extend(v.as_str().map(str::to_string))
                }
                "references" => {
                    for r in v.as_array().unwrap() {
                        for (rk, rv) in r.as_object().unwrap() {
                            match rk.as_str() {
                                "name" | "email" => {
                                    permitted.extend(rv.as_str().map(str::to_string))
                                }
                                _ => strings(rv, &mut other),
                            }
                        }
                    }
                }
                _ => strings(v, &mut other),
            }
        }
    }
    other.retain(|o| !permitted.iter().any(|p| p.contains(o.as_str())));
    // Short all-digit values (postal codes) occur by chance in hashes and timestamps.
    other.retain(|o| o.len() >= 8 || !o.chars().all(|c| c.is_ascii_digit() || c == ' '));
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_non_permitted_value_reaches_the_register_the_journal_or_the_logs() {
    let setup = Setup::bundled().await;
    let forbidden = forbidden_values(&bundled_customers());
    assert!(
        forbidden.len() > 1000,
        "the fixtures fill every Opter field ({})",
        forbidden.len()
    );

    let first = setup.run(&["sync"]);
    let mut changed = bundled_customers()[1].clone();
    changed["name"] = "Changed Name AB".into();
    setup.put_opter_customer(&changed).await;
    let second = setup.run(&["-vv", "sync", "--json"]);
    let logs = setup.run(&["journal", "log", "--json"]);

    let bodies = serde_json::to_string(&setup.sandbox.visma_requests()).unwrap();
    let journal = all_bytes(&setup.journal_dir());
    let mut printed = String::new();
    for out in [&first, &second, &logs] {
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        contains(&journal, "Changed Name AB"),
        "the scan reads the journal's values"
    );
    assert!(
        contains(&bodies, "Changed Name AB"),
        "the scan reads request bodies"
    );
    let forbidden: Vec<String> = forbidden.into_iter().collect();
    let fixtures = opter_visma_sync::sandbox::BUNDLED_CUSTOMERS;
    assert!(
        find_any(fixtures, &forbidden).is_some(),
        "the scan finds the values where they are"
    );
    for (what, text) in [
        ("request bodies", &bodies),
        ("journal", &journal),
        ("output", &printed),
    ] {
        let found = find_any(text, &forbidden);
        assert_eq!(found, None, "a non-permitted value was found in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_errors_name_customers_by_code_only() {
    let setup = Setup::bundled().await;
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("EDGE05"),
        "rejections are logged by code: {stderr}"
    );
    for c in bundled_customers() {
        let names = std::iter::once(c["name"].as_str().unwrap_or_default().to_string()).chain(
            c["references"].as_array().unwrap().iter().flat_map(|r| {
                [r["name"].as_str(), r["email"].as_str()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
            }),
        );
        for value in names.filter(|v| v.len() >= 6) {
            assert!(
                !stderr.contains(&value),
                "log names a person or customer: {value}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotated_refresh_token_is_stored_used_after_a_restart_and_the_old_one_refused() {
    let setup = Setup::new(bundled_customers()[..5].to_vec()).await;
    let seed = setup.env["VISMA_REFRESH_TOKEN"].clone();
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));

    let grant = setup
        .journal_dir()
        .join("credentials/eaccounting-grant.json");
    let stored: Value = serde_json::from_slice(&std::fs::read(&grant).unwrap()).unwrap();
    let rotated = stored["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, seed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&grant).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // A new process (a restart) with the same, already spent, seed in the env, after the
    // stored access token expired: it must refresh with the stored, rotated token.
    let expire = format!("{}/_sandbox/visma/expire-tokens", setup.sandbox.base_url());
    reqwest::Client::new().post(expire).send().await.unwrap();
    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "After Restart AB".into();
    setup.put_opter_customer(&changed).await;
    let restart = setup.run(&["sync"]);
    assert_eq!(
        restart.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );

    let token = |refresh: &str| {
        let url = setup.sandbox.visma_token_url();
        let secret = setup.env["VISMA_CLIENT_SECRET"].clone();
        let id = setup.sandbox.credentials().visma_client_id;
        let refresh = refresh.to_string();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    for spent in [&seed, &rotated] {
        let (status, body) = token(spent).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
    // Secrets never reach the sled journal.
    let sled = all_bytes(&setup.journal_dir().join("sled"));
    for secret in [
        &seed,
        &rotated,
        &setup.env["VISMA_CLIENT_SECRET"],
        &setup.env["OPTER_API_KEY"],
    ] {
        assert!(!contains(&sled, secret), "a secret is in the journal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_grant_stops_the_run_with_exit_4_and_says_what_to_do() {
    let setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    // Lose the stored grant: the env seed was spent by the first run.
    std::fs::remove_file(
        setup
            .journal_dir()
            .join("credentials/eaccounting-grant.json"),
    )
    .unwrap();
    setup.clear_requests().await;
    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Needs Login AB".into();
    setup.put_opter_customer(&changed).await;
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("log in again") && stderr.contains("auth login"),
        "{stderr}"
    );
    assert_eq!(setup.writes(), vec![], "nothing else is attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_without_touching_the_register_or_the_journal_state() {
    let setup = Setup::new(bundled_customers()[..10].to_vec()).await;
    let out = setup.run(&["sync", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would be create") && stdout.contains("dry run"),
        "{stdout}"
    );
    assert_eq!(setup.writes(), vec![]);
    let (_, report) = setup.sync_json();
    assert_eq!(report["created"], 10, "the dry run recorded no state");

    let mut changed = bundled_customers()[2].clone();
    changed["name"] = "Planned Change AB".into();
    setup.put_opter_customer(&changed).await;
    setup.clear_requests().await;
    let out = setup.run(&["sync", "--dry-run", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["updated"], 1);
    assert_eq!(plan["plan"][0]["operation"], "update");
    assert_eq!(plan["plan"][0]["fields"], serde_json::json!(["Name"]));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Planned Change"),
        "plans name fields, not values"
    );
    assert_eq!(setup.writes(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_has_integer_counts_run_id_and_rejections() {
    let setup = Setup::bundled().await;
    let (_, report) = setup.sync_json();
    for key in ["created", "updated", "unchanged", "rejected", "failed"] {
        assert!(report[key].is_u64(), "{key} is an integer: {report}");
    }
    assert!(report["run_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(report["rejections"][0]["customer"].is_string());
    assert!(report["rejections"][0]["reason"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_commands_show_runs_and_a_customer_timeline() {
    let setup = Setup::new(bundled_customers()[..4].to_vec()).await;
    let (_, report) = setup.sync_json();
    let runs: Value =
        serde_json::from_slice(&setup.run(&["journal", "runs", "--json"]).stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], report["run_id"]);
    assert_eq!(runs[0]["counts"]["created"], 4);
    assert!(runs[0]["finished"].is_string());

    let code = code(0);
    let out = setup.run(&["journal", "log", "--customer", &code, "--json"]);
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0]["operation"].as_str(),
            events[0]["outcome"].as_str()
        ),
        (Some("create"), Some("succeeded"))
    );
    assert_eq!(events[0]["http_status"], 201);
    let name = events[0]["values"]["Name"].as_str().unwrap();
    assert!(name.contains("***"), "listings mask values: {name}");

    let table = String::from_utf8_lossy(&setup.run(&["journal", "runs"]).stdout).to_string();
    assert!(
        table.contains(report["run_id"].as_str().unwrap()) && table.contains("yes"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_already_in_the_register_is_adopted_not_duplicated() {
    let customers = bundled_customers()[..3].to_vec();
    let setup = Setup::new(customers.clone()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    // The journal is lost (deleted, or restored from an old backup), and meanwhile one
    // customer changed in Opter.
    std::fs::remove_dir_all(setup.journal_dir().join("sled")).unwrap();
    let mut changed = customers[0].clone();
    changed["name"] = "Changed While Lost AB".into();
    setup.put_opter_customer(&changed).await;
    setup.clear_requests().await;

    let out = setup.run(&["sync", "--json", "--new-journal"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        (report["updated"].as_u64(), report["unchanged"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        setup.sandbox.visma_customers().len(),
        3,
        "no duplicate customers"
    );
    let puts = setup.writes().iter().filter(|(m, _)| m == "PUT").count();
    assert_eq!(puts, 1, "only the changed customer is written");
    let ops = |code: &str| -> Vec<String> {
        let out = setup.run(&["journal", "log", "--customer", code, "--json"]);
        let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        events
            .iter()
            .map(|e| e["operation"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ops(customers[0]["customerCode"].as_str().unwrap()),
        ["update", "adopt"]
    );
    assert_eq!(
        ops(customers[1]["customerCode"].as_str().unwrap()),
        ["adopt"]
    );
}

#[test]
fn config_errors_name_the_key_and_the_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let run = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
            .arg("--config")
            .arg(&file)
            .arg("sync")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("bad.toml"), "{stderr}");
        stderr
    };
    let stderr =
        run("tenant = \"x\"\n[source]\nkind = \"opter-api\"\n[sink]\n[journal]\npath = \"j\"\n");
    assert!(
        stderr.contains("[source]") && stderr.contains("base_url"),
        "{stderr}"
    );
    // A table missing from the top level is named, with no line that would mislead.
    let stderr = run("tenant = \"x\"\n[source]\nkind = \"opter-api\"\n");
    assert!(
        stderr.contains("`sink`") && !stderr.contains("line 1"),
        "{stderr}"
    );

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
        .args(["--config", "/nonexistent/sync.toml", "sync"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/sync.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_names_the_variable_and_exits_2() {
    let mut setup = Setup::new(bundled_customers()[..1].to_vec()).await;
    setup
        .env
        .insert("VISMA_CLIENT_SECRET".into(), String::new());
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("VISMA_CLIENT_SECRET") && stderr.contains("client_secret_env"),
        "{stderr}"
    );
}

#[test]
fn a_mapping_naming_a_non_permitted_field_stops_the_sync_with_exit_2() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let setup = rt.block_on(Setup::new(bundled_customers()[..1].to_vec()));
    let mapping = setup.dir.path().join("eaccounting-mapping.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(&mapping, text.replace("\"contact_email\"", "\"phone\"")).unwrap();
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"phone\" is not a permitted Opter field")
            && stderr.contains("eaccounting-mapping.toml"),
        "{stderr}"
    );
    assert_eq!(setup.writes(), vec![]);
}

#[test]
fn demo_runs_the_whole_job_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
        .arg("demo")
        .arg("--dir")
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
    for step in ["1. first sync", "2. second sync", "3. customer", "journal:"] {
        assert!(stdout.contains(step), "{step} missing from:\n{stdout}");
    }
    let third = stdout.split("== 3.").nth(1).unwrap();
    let updated = third.lines().find_map(|l| {
        l.trim()
            .strip_prefix("updated")
            .map(|n| n.trim().to_string())
    });
    assert_eq!(updated.as_deref(), Some("1"), "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_what_an_accountant_set_in_visma() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let code = code(0);
    let stored = setup.register_customer(&code).unwrap();
    let id = stored["Id"].as_str().unwrap().to_string();

    // The accountant fills in the real address and other terms in Visma.
    let token = setup.login_tokens().await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let api = setup.sandbox.visma_api_base();
    let http = reqwest::Client::new();
    let terms: Value = http
        .get(format!("{api}/termsofpayments"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_terms = terms["Data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["Id"].as_str().unwrap().to_string())
        .find(|t| stored["TermsOfPaymentId"] != t.as_str())
        .unwrap();
    let mut edited = stored.clone();
    edited["InvoiceCity"] = "Umeå".into();
    edited["InvoicePostalCode"] = "903 25".into();
    edited["TermsOfPaymentId"] = other_terms.clone().into();
    let put = http
        .put(format!("{api}/customers/{id}"))
        .bearer_auth(&token)
        .json(&edited)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Omdöpt Åkeri AB".into();
    setup.put_opter_customer(&changed).await;
    let (code_exit, report) = setup.sync_json();
    assert_eq!(
        (code_exit, report["updated"].as_u64()),
        (0, Some(1)),
        "{report}"
    );
    let after = setup
        .sandbox
        .visma_customers()
        .into_iter()
        .find(|c| c["Id"] == id.as_str())
        .unwrap();
    assert_eq!(after["Name"], "Omdöpt Åkeri AB");
    assert_eq!(after["InvoiceCity"], "Umeå");
    assert_eq!(after["InvoicePostalCode"], "903 25");
    assert_eq!(after["TermsOfPaymentId"], other_terms.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customers_with_one_register_number_are_both_rejected() {
    let mut customers = bundled_customers()[..3].to_vec();
    customers[0]["customerNumber"] = "5000".into();
    customers[1]["customerNumber"] = "5000".into();
    customers[2]["customerNumber"] = "5001".into();
    let setup = Setup::new(customers.clone()).await;
    let mapping = setup.dir.path().join("eaccounting-mapping.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace(
            "CustomerNumber = \"customer_code\"",
            "CustomerNumber = \"customer_number\"",
        ),
    )
    .unwrap();
    let (code, report) = setup.sync_json();
    assert_eq!(code, 3, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["rejected"].as_u64()),
        (Some(1), Some(2))
    );
    let rejected: Vec<&str> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["customer"].as_str().unwrap())
        .collect();
    let codes: Vec<&str> = customers[..2]
        .iter()
        .map(|c| c["customerCode"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, codes);
    assert!(report["rejections"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("same CustomerNumber 5000"));
    assert_eq!(setup.sandbox.visma_customers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_copy_read_twice_is_one_customer() {
    let mut customers = bundled_customers()[..3].to_vec();
    customers.push(customers[1].clone()); // the same record on two pages
    let setup = Setup::new(customers).await;
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["created"], 3);
    assert_eq!(setup.sandbox.visma_customers().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_deleted_in_visma_is_created_again_when_it_changes() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let code = code(0);
    let id = setup.register_customer(&code).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = setup.login_tokens().await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/customers/{id}", setup.sandbox.visma_api_base());
    let deleted = reqwest::Client::new()
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());

    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Tillbaka AB".into();
    setup.put_opter_customer(&changed).await;
    let (exit, report) = setup.sync_json();
    assert_eq!(exit, 0, "{report}");
    let again: Vec<Value> = setup
        .sandbox
        .visma_customers()
        .into_iter()
        .filter(|c| c["CustomerNumber"] == code.as_str())
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["Name"], "Tillbaka AB");
    // And the journal follows the new id: the next run has nothing to do.
    let (_, next) = setup.sync_json();
    assert_eq!(
        (next["created"].as_u64(), next["updated"].as_u64()),
        (Some(0), Some(0)),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_verify_passes_after_syncs_and_retention_redacts_old_values() {
    let setup = Setup::new(bundled_customers()[..5].to_vec()).await;
    setup.configure("journal", "keep_values_days = 0");
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Efter Gallring AB".into();
    setup.put_opter_customer(&changed).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));

    let out = setup.run(&["journal", "verify", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified["events_checked"], 6);
    assert_eq!(verified["problems"], serde_json::json!([]));

    // With a retention of 0 days, the second run removed the first run's values; the
    // update it wrote keeps its own until the next run.
    let log = String::from_utf8_lossy(&setup.run(&["journal", "log"]).stdout).to_string();
    assert_eq!(log.matches("(values redacted)").count(), 5, "{log}");
    let human = String::from_utf8_lossy(&setup.run(&["journal", "verify"]).stdout).to_string();
    assert!(human.contains("journal verified: 6 events"), "{human}");
}
