//! Several independent sandboxes on one port (`Sandbox::start_many`), as `sandbox
//! --tenants N` serves them.

use opter_visma_sync::sandbox::*;
use reqwest::Client;
use serde_json::{json, Value};

fn customer(code: &str) -> Value {
    json!({
        "customerCode": code, "name": format!("Kund {code}"), "updated": "2024-01-01T08:00:00Z",
        "references": [{"id": 1, "name": "Anna Berg", "email": "anna@example.se", "isDefault": true}]
    })
}

fn options(code: &str, faults: Faults) -> SandboxOptions {
    SandboxOptions {
        customers: vec![customer(code)],
        faults,
        ..SandboxOptions::default()
    }
}

async fn get(url: String, headers: &[(&str, &str)]) -> Value {
    let mut req = Client::new().get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test]
async fn sandboxes_on_one_port_keep_their_own_customers_faults_and_links() {
    let north_faults = Faults {
        seed: 3,
        fail_rate: 0.5,
        statuses: vec![503],
        ..Faults::default()
    };
    let sandboxes = Sandbox::start_many(
        0,
        vec![
            ("north".to_string(), options("N1", north_faults)),
            ("south".to_string(), options("S1", Faults::default())),
        ],
    )
    .await
    .unwrap();
    let [north, south] = &sandboxes[..] else {
        panic!("two sandboxes")
    };
    assert_eq!(north.addr(), south.addr(), "one port");
    assert_eq!(north.base_url(), format!("http://{}/north", north.addr()));

    for (sb, code) in [(north, "N1"), (south, "S1")] {
        let key = sb.credentials().opter_api_key;
        let page = get(
            format!("{}/Customers", sb.opter_api_base()),
            &[("x-api-key", &key)],
        )
        .await;
        let codes: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["customerCode"].as_str().unwrap())
            .collect();
        assert_eq!(codes, [code], "{page}");
    }
    assert_eq!(north.faults().fail_rate, 0.5);
    assert_eq!(south.faults().fail_rate, 0.0);
    let listed = get(format!("http://{}/_sandbox/sandboxes", north.addr()), &[]).await;
    assert_eq!(listed["sandboxes"], json!(["north", "south"]));

    // e-conomic's links lead back under the sandbox's own path, whatever prefix a
    // client claims.
    let credentials = south.credentials();
    let page = get(
        format!("{}/customers", south.economic_api_base()),
        &[
            ("X-AppSecretToken", &credentials.economic_app_secret_token),
            (
                "X-AgreementGrantToken",
                &credentials.economic_agreement_grant_token,
            ),
            ("x-sandbox-prefix", "/north"),
        ],
    )
    .await;
    let own = page["self"].as_str().unwrap();
    assert!(
        own.starts_with(&format!("{}/customers", south.economic_api_base())),
        "{page}"
    );
}

#[tokio::test]
async fn sandbox_names_must_be_distinct_path_segments() {
    for names in [vec!["a/b"], vec!["Upper"], vec!["twice", "twice"], vec![""]] {
        let many = names
            .into_iter()
            .map(|n| (n.to_string(), SandboxOptions::default()))
            .collect();
        assert!(Sandbox::start_many(0, many).await.is_err());
    }
}
