//! `privacy record` through the real binary: the record of processing follows the
//! mapping file and the config (categories, recipients' hosts, retention), states
//! transfers only with the vendor's source, and prints no secret.

use crate::common;

use common::Setup;
use opter_visma_sync::config::Config;
use opter_visma_sync::sandbox::{bundled_customers, SandboxOptions};
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register};
use serde_json::Value;

async fn setup(kind: &'static Register) -> Setup {
    let options = SandboxOptions {
        customers: bundled_customers(),
        ..SandboxOptions::default()
    };
    Setup::for_sink(kind, options, 0).await
}

fn record(setup: &Setup) -> Value {
    let out = setup.run(&["privacy", "record", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("privacy record --json prints JSON")
}

fn fields(record: &Value) -> Vec<(String, String, Vec<String>)> {
    record["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["personal"].as_str().unwrap().to_string(),
                c["register_fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// The port the sandbox's register listens on, from the config the setup wrote.
fn register_host(setup: &Setup) -> String {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("api_base"))
        .expect("the config names api_base");
    let url = line.split('"').nth(1).unwrap();
    let url = url::Url::parse(url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
}

#[tokio::test]
async fn the_record_follows_the_mapping_and_the_config() {
    let setup = setup(&eaccounting::REGISTER).await;
    let first = record(&setup);
    let tenant = Config::load(&setup.config).unwrap().tenant;
    assert_eq!(first["tenant"], tenant.as_str(), "{first:#}");
    let got = fields(&first);
    let expect = |field: &str, personal: &str, register: &str| {
        assert!(
            got.iter()
                .any(|(f, p, r)| f == field && p == personal && r == &[register]),
            "{field} as {personal} into {register}, in {got:?}"
        )
    };
    expect("contact_email", "yes", "ContactPersonEmail");
    expect("contact_name", "yes", "ContactPersonName");
    expect("customer_name", "when_sole_trader", "Name");
    expect("customer_code", "no", "CustomerNumber");
    assert!(
        first["constants"]
            .as_array()
            .unwrap()
            .contains(&Value::from("TermsOfPaymentId")),
        "{first:#}"
    );
    assert_eq!(first["recipients"][0]["name"], "Visma eAccounting");
    let hosts = first["recipients"][0]["hosts"].as_array().unwrap();
    assert!(
        hosts.contains(&Value::from(register_host(&setup))),
        "the register's host among {hosts:?}"
    );
    assert_eq!(first["retention"]["journal_values_days"], 1095);
    assert_eq!(
        first["transfers"]["register_source"],
        "https://www.visma.com/trust-centre/transparency/"
    );

    // The mapping sends no email any more, and values are kept 30 days: the record says so.
    let mapping = setup.dir.path().join("eaccounting-mapping.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("ContactPersonEmail"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&mapping, text).unwrap();
    setup.configure("journal", "keep_values_days = 30");
    let second = record(&setup);
    assert!(
        !fields(&second).iter().any(|(f, _, _)| f == "contact_email"),
        "{second:#}"
    );
    assert_eq!(second["retention"]["journal_values_days"], 30);
    assert!(
        second["retention"]["journal"]
            .as_str()
            .unwrap()
            .contains("30 days"),
        "{second:#}"
    );
}

#[tokio::test]
async fn each_register_names_its_product_and_transfers_only_from_a_cited_source() {
    for kind in [
        &eaccounting::REGISTER,
        &visma_net::REGISTER,
        &economic::REGISTER,
    ] {
        let setup = setup(kind).await;
        let record = record(&setup);
        assert_eq!(
            record["recipients"][0]["name"],
            kind.product(),
            "{record:#}"
        );
        let statement = &record["transfers"]["register"];
        let source = &record["transfers"]["register_source"];
        let to_complete = record["to_complete"].to_string();
        match kind.processing.source {
            Some(url) => {
                assert_eq!(source, url, "{}", kind.name);
                assert!(statement.is_string(), "{}", kind.name);
            }
            None => {
                assert!(statement.is_null() && source.is_null(), "{record:#}");
                assert!(
                    to_complete.contains("data processing agreement"),
                    "{}: the controller is asked to complete the transfers: {to_complete}",
                    kind.name
                );
            }
        }

        // The text form has every section, and neither form has a secret in it.
        let out = setup.run(&["privacy", "record"]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        for section in [
            "Purpose",
            "Data subjects",
            "Categories of data",
            "Recipients",
            "Transfers",
            "Retention",
            "To complete by the controller",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(section)),
                "{}: no {section} in\n{text}",
                kind.name
            );
        }
        let all = format!("{text}{record}");
        for secret in setup.env.values() {
            assert!(
                !all.contains(secret.as_str()),
                "{}: a secret in the record",
                kind.name
            );
        }
    }
}

#[tokio::test]
async fn a_broken_mapping_is_named_and_nothing_is_printed() {
    let setup = setup(&eaccounting::REGISTER).await;
    let mapping = setup.dir.path().join("eaccounting-mapping.toml");
    std::fs::write(&mapping, "[fields]\nPhone = \"phone\"\n").unwrap();
    let out = setup.run(&["privacy", "record", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("eaccounting-mapping.toml"), "{stderr}");
}
