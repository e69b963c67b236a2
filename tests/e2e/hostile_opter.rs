//! Opter's answers are hostile input: a redirect never carries the API key elsewhere, and
//! an error page's body never reaches a message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;

use crate::common::{watched, Setup};

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

/// Sets `[source]` keys (after `base_url`), replacing the sandbox's page size.
fn source_keys(setup: &Setup, keys: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text.replacen("page_size = 500\n", &format!("{keys}\n"), 1);
    assert!(
        text.contains(keys),
        "the sandbox config sets page_size = 500"
    );
    std::fs::write(&setup.config, text).unwrap();
}

/// An Opter that answers every request for `page` with `body(page)`.
async fn opter_serving(body: impl Fn(u64) -> Vec<u8> + Clone + Send + Sync + 'static) -> String {
    serve(Router::new().fallback(
        move |axum::extract::Query(q): axum::extract::Query<
            std::collections::HashMap<String, String>,
        >| {
            let body = body.clone();
            async move {
                let page = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                ([("content-type", "application/json")], body(page))
            }
        },
    ))
    .await
}

/// A minimal customer Opter could send.
fn customer_json(code: &str) -> serde_json::Value {
    serde_json::json!({
        "customerCode": code,
        "customerNumber": code.trim_start_matches(|c: char| !c.is_ascii_digit()),
        "name": "Åkeri Exempel AB",
        "isActive": true,
        "updated": "2025-01-02T03:04:05Z",
        "references": [{"name": "Anna Berg", "email": "anna@exempel.se", "isDefault": true}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_never_end_stop_at_max_customers_quickly_and_in_little_memory() {
    // No totalCount, and every page full of customers never seen before.
    let opter = opter_serving(|page| {
        let items: Vec<_> = (0..1000)
            .map(|i| customer_json(&format!("N{}", page * 1000 + i)))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap()
    })
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    source_keys(&setup, "page_size = 1000\nmax_customers = 20000");
    let mut cmd = setup.command(&["sync", "--dry-run"]);
    cmd.env("RUST_LOG", "warn");
    let run = watched(cmd, std::time::Duration::from_secs(30));
    eprintln!(
        "never-ending pages: peak {} KiB, {:?}",
        run.peak_kib, run.took
    );
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("[source] max_customers")
            && run.stderr.contains("page 21")
            && run.stderr.contains("[source] base_url"),
        "{}",
        run.stderr
    );
    assert!(
        run.took < std::time::Duration::from_secs(30),
        "{:?}",
        run.took
    );
    assert!(
        run.peak_kib < 200 * 1024,
        "peak resident memory {} KiB",
        run.peak_kib
    );
    assert_eq!(setup.writes(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_served_again_stops_the_read_and_nothing_read_is_written() {
    let first: Vec<serde_json::Value> = opter_visma_sync::sandbox::bundled_customers()
        .into_iter()
        .take(3)
        .collect();
    // Every page is the first one, whatever is asked: Opter ignores `page`.
    let page = serde_json::to_vec(&serde_json::json!({ "items": first })).unwrap();
    let opter = opter_serving(move |_| page.clone()).await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    source_keys(&setup, "page_size = 3");
    let run = watched(setup.command(&["sync"]), std::time::Duration::from_secs(30));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("page 2")
            && run
                .stderr
                .contains("same customers in the same order as page 1")
            && run.stderr.contains("[source] base_url"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Håkansson"), "{}", run.stderr);
    // Page 1 was planned, and still nothing of it was sent or recorded as done.
    assert_eq!(
        setup.writes(),
        [],
        "nothing is written from an incomplete read"
    );
    let runs = setup.run(&["journal", "runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let last = runs.as_array().unwrap().last().unwrap().clone();
    assert!(
        last["finished"].is_null() && last["cursor"].is_null(),
        "the run is unfinished and moved no cursor: {last}"
    );
    let log = setup.run(&["journal", "log", "--json"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        !log.contains("K10001"),
        "no event for a customer read: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_past_what_total_count_allows_stop_the_read() {
    // totalCount 10 in pages of 5, but one new customer a page, for ever.
    let opter = opter_serving(|page| {
        serde_json::to_vec(&serde_json::json!({
            "totalCount": 10,
            "items": [customer_json(&format!("T{page}"))],
        }))
        .unwrap()
    })
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    source_keys(&setup, "page_size = 5");
    let run = watched(setup.command(&["sync"]), std::time::Duration::from_secs(30));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("page 4") && run.stderr.contains("totalCount (10)"),
        "{}",
        run.stderr
    );
    assert_eq!(setup.writes(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_past_max_customers_stops_at_the_first_page() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let opter = opter_serving(move |page| {
        counter.fetch_add(1, Ordering::SeqCst);
        let items: Vec<_> = (0..5)
            .map(|i| customer_json(&format!("M{}", page * 5 + i)))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "totalCount": 500, "items": items })).unwrap()
    })
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    source_keys(&setup, "page_size = 5\nmax_customers = 100");
    let out = setup.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("500 customers") && stderr.contains("[source] max_customers (100)"),
        "{stderr}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1, "no page after the first");
    assert_eq!(setup.writes(), []);

    for bad in ["0", "50000001"] {
        source_keys_replace(
            &setup,
            "max_customers = 100",
            &format!("max_customers = {bad}"),
        );
        let out = setup.run(&["sync"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("[source] max_customers"), "{stderr}");
        source_keys_replace(
            &setup,
            &format!("max_customers = {bad}"),
            "max_customers = 100",
        );
    }
}

fn source_keys_replace(setup: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    assert!(text.contains(from));
    std::fs::write(&setup.config, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_a_page_can_be_is_refused_unread() {
    // A page that streams for ever, with no Content-Length.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let opter = serve(Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let head = futures::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
                    br#"{"items":[],"padding":""#,
                ))
            });
            let rest = futures::stream::repeat_with(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(axum::body::Bytes::from(vec![b'x'; 64 * 1024]))
            });
            axum::body::Body::from_stream(futures::StreamExt::chain(head, rest))
        }
    }))
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    source_keys(&setup, "page_size = 1");
    let run = watched(setup.command(&["sync"]), std::time::Duration::from_secs(30));
    eprintln!("endless body: peak {} KiB, {:?}", run.peak_kib, run.took);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("page 1") && run.stderr.contains("larger than 2048 KiB"),
        "{}",
        run.stderr
    );
    assert!(run.peak_kib < 200 * 1024, "{} KiB", run.peak_kib);
    // Read up to the cap and what loopback's socket buffers held in flight (they
    // grow to several MiB under load), not on and on: unread, the stream would run
    // to gigabytes within the watch.
    assert!(
        sent.load(Ordering::SeqCst) < 64 * 1024 / 64,
        "{}",
        sent.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_opter_sends_unreadable_are_rejected_by_code_or_place_and_the_rest_synced() {
    let bundled = opter_visma_sync::sandbox::bundled_customers();
    let text = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
    let mut wrong_type = bundled[2].clone();
    wrong_type["name"] = 987_651_234.into();
    let code = |i: usize| bundled[i]["customerCode"].as_str().unwrap().to_string();
    // A name given twice: the object's first key is followed by a second name.
    let twice = {
        let body = text(&bundled[3]);
        let mut out = b"{\"name\":\"LEAK-TWICE-A\",".to_vec();
        out.extend_from_slice(&body[1..]);
        out
    };
    let not_utf8 = {
        let mut c = bundled[4].clone();
        c["name"] = "LEAK-UTF8-@@".into();
        let body = text(&c);
        let at = body.windows(2).position(|w| w == b"@@").unwrap();
        let mut out = body.clone();
        out[at] = 0xff;
        out[at + 1] = 0xfe;
        out
    };
    let mut refs_wrong = bundled[5].clone();
    refs_wrong["references"] = "LEAK-REFS-TEXT".into();
    let items: Vec<Vec<u8>> = vec![
        text(&bundled[0]),
        text(&bundled[1]),
        text(&wrong_type),
        twice,
        not_utf8,
        br#"{"customerCode":987654329,"name":"LEAK-NO-CODE"}"#.to_vec(),
        br#""LEAK-AN-ITEM-OF-TEXT""#.to_vec(),
        text(&refs_wrong),
    ];
    let mut page = b"{\"totalCount\":8,\"items\":[".to_vec();
    page.extend(items.join(&b","[..]));
    page.extend_from_slice(b"]}");
    let opter = opter_serving(move |n| match n {
        1 => page.clone(),
        _ => br#"{"totalCount":8,"items":[]}"#.to_vec(),
    })
    .await;
    let setup = Setup::new(Vec::new()).await;
    opter_at(&setup, &opter);
    let out = setup.run(&["sync", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["created"].clone(), report["rejected"].clone()),
        (2.into(), 6.into()),
        "{report}"
    );
    let mut created: Vec<String> = setup.register().into_iter().map(|(n, _)| n).collect();
    created.sort();
    assert_eq!(created, [code(0), code(1)]);
    let reasons: Vec<(String, String)> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["customer"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let reason_of = |customer: &str, part: &str| {
        reasons
            .iter()
            .any(|(c, r)| c == customer && r.contains(part))
    };
    assert!(
        reason_of(
            &code(2),
            "page 1, item 3: `name` is a number, expected text"
        ),
        "{reasons:?}"
    );
    assert!(
        reason_of(&code(3), "item 4: `name` is given twice"),
        "{reasons:?}"
    );
    assert!(
        reason_of(&code(4), "item 5: `name` is not valid UTF-8"),
        "{reasons:?}"
    );
    assert!(
        reason_of("", "item 6: `customerCode` is a number"),
        "{reasons:?}"
    );
    assert!(
        reason_of("", "item 7: is text, not a customer object"),
        "{reasons:?}"
    );
    assert!(
        reason_of(&code(5), "item 8: `references` is text, expected a list"),
        "{reasons:?}"
    );
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        for leak in ["LEAK", "987651234", "987654329"] {
            assert!(
                !text.contains(leak),
                "{what} repeats a value ({leak}): {text}"
            );
        }
    }
    // Rejections by code join the customer's timeline; one without a code joins none.
    let log = setup.run(&["journal", "log", "--outcome", "rejected", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let mut logged: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["customer"].as_str().unwrap())
        .collect();
    logged.sort();
    assert_eq!(logged, [code(2), code(3), code(4), code(5)]);
    // Read again, in full, on the next run: none of them is taken as unchanged.
    let (code_again, again) = setup.sync_json();
    assert_eq!(code_again, 3, "{again}");
    assert_eq!(again["read"], "full", "{again}");
    assert_eq!(again["rejected"], 6, "{again}");
    assert_eq!(again["unchanged"], 2, "{again}");
}
