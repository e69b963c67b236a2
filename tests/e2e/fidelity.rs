//! Visma's real behaviour where it used to surprise the connector: a wrong Visma.net
//! tenant, token endpoints that are slow, failing or refuse the client, and an API that
//! redirects. Each test bounds its run in time and counts the requests sent.

use crate::common;

use std::time::{Duration, Instant};

use common::Setup;
use opter_visma_sync::sandbox::{
    bundled_customers, Faults, Redirect, SandboxOptions, TokenFault, TokenFaultBody,
};
use opter_visma_sync::sink::{eaccounting, visma_net, Register};

/// A sandbox without rate limits and a config for `kind`, with `customers` of the
/// bundled ones.
async fn setup(kind: &'static Register, customers: usize) -> Setup {
    let options = SandboxOptions {
        customers: bundled_customers()[..customers].to_vec(),
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    };
    Setup::for_sink(kind, options, 0).await
}

/// Replaces the config line that starts with `key =`.
fn set_config(setup: &Setup, key: &str, line: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| match l.starts_with(&format!("{key} =")) {
            true => line.to_string(),
            false => l.to_string(),
        })
        .collect();
    std::fs::write(&setup.config, text.join("\n") + "\n").unwrap();
}

fn token_requests(setup: &Setup) -> usize {
    setup
        .requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/connect/token"))
        })
        .count()
}

/// `sync`, timed: exit code, stderr, seconds taken.
fn timed_sync(setup: &Setup) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = setup.run(&["sync"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_tenant_exits_2_saying_use_the_company_tenant_after_one_refusal() {
    let setup = setup(&visma_net::REGISTER, 8).await;
    set_config(&setup, "concurrency", "concurrency = 4");
    set_config(
        &setup,
        "tenant_id",
        r#"tenant_id = "0b6f2a4e-1111-4c2d-8e3f-123456789abc""#,
    );
    let (code, stderr, took) = timed_sync(&setup);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("check `tenant_id`") && stderr.contains("Company Tenant ID"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("client_id"),
        "no advice about the client: {stderr}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let refused = setup
        .requests()
        .iter()
        .filter(|r| r["status"] == 401)
        .count();
    assert_eq!(
        refused, 1,
        "the refused token is presented once, not once per worker"
    );
    assert_eq!(token_requests(&setup), 1);
    assert!(setup.sandbox.visma_net_customers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_stops_the_run_within_the_retry_budget_saying_timed_out() {
    for kind in [&eaccounting::REGISTER, &visma_net::REGISTER] {
        let setup = setup(kind, 6).await;
        setup.configure("sink", "retry_budget_secs = 2");
        setup.sandbox.set_faults(Faults {
            token: TokenFault {
                delay_ms: 35_000,
                ..TokenFault::default()
            },
            ..Faults::default()
        });
        let (code, stderr, took) = timed_sync(&setup);
        assert_eq!(code, Some(1), "{}: {stderr}", kind.name);
        assert!(stderr.contains("timed out"), "{}: {stderr}", kind.name);
        assert!(took < Duration::from_secs(15), "{}: {took:?}", kind.name);
        // The request log records a request once answered: the one that timed out
        // is still sleeping in the sandbox, and no other was sent.
        assert_eq!(token_requests(&setup), 0, "{}", kind.name);
        assert!(setup.writes().is_empty(), "{}", kind.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_stops_the_run_once_naming_the_status() {
    let cases = [
        (500, TokenFaultBody::Html, Some(1)),
        (503, TokenFaultBody::Oauth, Some(1)),
        (400, TokenFaultBody::Text, Some(2)),
    ];
    for kind in [&eaccounting::REGISTER, &visma_net::REGISTER] {
        for (status, body, want) in cases {
            let setup = setup(kind, 6).await;
            setup.configure("sink", "retry_budget_secs = 2");
            setup.sandbox.set_faults(Faults {
                token: TokenFault {
                    status: Some(status),
                    body,
                    ..TokenFault::default()
                },
                ..Faults::default()
            });
            let what = format!("{} {status} {body:?}", kind.name);
            let (code, stderr, took) = timed_sync(&setup);
            assert_eq!(code, want, "{what}: {stderr}");
            assert!(
                stderr.contains(&format!("HTTP {status}")),
                "{what}: {stderr}"
            );
            assert!(
                !stderr.contains("<html>") && !stderr.contains("Bad Request"),
                "{what}: {stderr}"
            );
            assert!(took < Duration::from_secs(15), "{what}: {took:?}");
            // Retried within the budget (a few tries), never once per customer.
            let asked = token_requests(&setup);
            assert!((1..=6).contains(&asked), "{what}: {asked} token requests");
            assert!(setup.writes().is_empty(), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_exits_2_for_every_register() {
    for kind in [&eaccounting::REGISTER, &visma_net::REGISTER] {
        let setup = setup(kind, 3).await;
        setup.sandbox.set_faults(Faults {
            token: TokenFault {
                status: Some(401),
                error: Some("invalid_client".into()),
                ..TokenFault::default()
            },
            ..Faults::default()
        });
        let (code, stderr, _) = timed_sync(&setup);
        assert_eq!(code, Some(2), "{}: {stderr}", kind.name);
        assert!(
            stderr.contains("invalid_client") && stderr.contains("client_id"),
            "{}: {stderr}",
            kind.name
        );
        assert_eq!(token_requests(&setup), 1, "{}", kind.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_api_is_a_configuration_error_naming_api_base_and_the_host_only() {
    for status in [301, 302, 307] {
        for kind in [&eaccounting::REGISTER, &visma_net::REGISTER] {
            let setup = setup(kind, 5).await;
            setup.sandbox.set_faults(Faults {
                redirect: Some(Redirect {
                    status,
                    location: "https://moved.example.com/api/v9/customer?sig=s3cr3t&page=1".into(),
                }),
                ..Faults::default()
            });
            let what = format!("{} {status}", kind.name);
            let out = setup.run(&["sync", "--json"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
            assert!(
                stderr.contains("api_base") && stderr.contains("moved.example.com"),
                "{what}: {stderr}"
            );
            assert!(
                !stderr.contains("s3cr3t") && !stderr.contains("/api/v9"),
                "{what}: only the host: {stderr}"
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!stdout.contains("s3cr3t"), "{what}: {stdout}");
            // The run stopped at the first redirect instead of rejecting every customer.
            let redirected = setup
                .requests()
                .iter()
                .filter(|r| r["status"] == status)
                .count();
            assert!((1..=4).contains(&redirected), "{what}: {redirected}");
        }
    }
}
