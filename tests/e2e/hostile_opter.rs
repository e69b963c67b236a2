//! Opter's answers are hostile input: a redirect never carries the API key elsewhere, and
//! an error page's body never reaches a message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;

use crate::common::Setup;

/// Serves `router` on a free loopback port; answers its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// Points the tenant's `[source] base_url` at `base`.
fn opter_at(setup: &Setup, base: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("base_url"))
        .expect("the sandbox config names Opter's base_url")
        .to_string();
    let text = text.replacen(&line, &format!("base_url = \"{base}/opter/api\""), 1);
    std::fs::write(&setup.config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_opter_is_never_followed_and_names_only_the_host() {
    // Where the redirect points: counts what reaches it, and any API key.
    let reached = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(AtomicUsize::new(0));
    let (r, k) = (reached.clone(), keys.clone());
    let elsewhere = serve(Router::new().fallback(move |headers: HeaderMap| {
        let (r, k) = (r.clone(), k.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            if headers.contains_key("x-api-key") {
                k.fetch_add(1, Ordering::SeqCst);
            }
            StatusCode::OK
        }
    }))
    .await;
    let target = format!("{elsewhere}/steal?token=SECRET-QUERY-42");
    let redirector = serve(Router::new().fallback(move || {
        let target = target.clone();
        async move { (StatusCode::FOUND, [("location", target)]).into_response() }
    }))
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &redirector);
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a setting to fix: {stderr}");
    assert!(stderr.contains("[source] base_url"), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1"),
        "the Location's host is named: {stderr}"
    );
    assert!(
        !stderr.contains("SECRET-QUERY-42") && !stderr.contains("/steal"),
        "{stderr}"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "nothing reaches the redirect's target"
    );
    assert_eq!(keys.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_page_from_opter_is_not_echoed() {
    let opter = serve(Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            "no such customer list for LEAK-19850101-1234 (key abc)",
        )
    }))
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(!stderr.contains("LEAK-19850101-1234"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_stamped_in_the_future_does_not_hide_later_changes() {
    let mut customers: Vec<serde_json::Value> = opter_visma_sync::sandbox::bundled_customers()
        .into_iter()
        .take(3)
        .collect();
    let setup = Setup::new(customers.clone()).await;
    assert_eq!(setup.sync_json().0, 0);
    customers[0]["name"] = "Håkansson Åkeri Framtid AB".into();
    customers[0]["updated"] = "9999-12-31T00:00:00Z".into();
    setup.put_opter_customer_as_is(&customers[0]).await;
    let out = setup.run(&["sync", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["updated"], 1, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in the future") && stderr.contains("K10001"),
        "{stderr}"
    );

    // A change made now, after the one stamped in the year 9999.
    customers[1]["name"] = "Ströms Flytt Nord AB".into();
    setup.put_opter_customer(&customers[1]).await;
    let (code, report) = setup.sync_json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["read"], "incremental", "{report}");
    assert_eq!(report["updated"], 1, "the later change is seen: {report}");
    let now = setup.register_customer("K10002").unwrap();
    assert_eq!(now["Name"], "Ströms Flytt Nord AB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_direction_overrides_are_rejected_and_never_printed_raw() {
    let mut customers: Vec<serde_json::Value> = opter_visma_sync::sandbox::bundled_customers()
        .into_iter()
        .take(3)
        .collect();
    // A code that would set the terminal's title, a name that forges a log line, a name
    // that reverses what follows it on screen.
    customers[0]["customerCode"] = "K1\u{1b}]0;pwned\u{7}".into();
    customers[1]["name"] = "Ströms Flytt AB\r\nERROR all customers deleted".into();
    customers[2]["name"] = "Larsen \u{202e}BA tkarF".into();
    let setup = Setup::new(customers).await;
    let out = setup.run(&["sync"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert_eq!(setup.writes(), [], "nothing of them is sent");
    let (code, report) = setup.sync_json();
    assert_eq!(
        (code, report["rejected"].clone()),
        (3, 3.into()),
        "{report}"
    );
    let reasons = report["rejections"].to_string();
    assert!(
        !reasons.contains("ERROR all customers deleted"),
        "{reasons}"
    );
    assert!(
        stdout.contains("K1\\u{1b}]0;pwned\\u{7}"),
        "the code is shown escaped: {stdout}"
    );
    assert!(stdout.contains("control character"), "{stdout}");
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
            "{what} carries a raw control character"
        );
        assert!(
            !text.contains("ERROR all customers deleted"),
            "{what} echoes the value"
        );
    }
    let log = setup.run(&["journal", "log"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log}");
}
