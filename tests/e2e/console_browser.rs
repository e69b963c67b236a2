//! The console in a real browser: Debian's chromium, driven through chromedriver
//! (WebDriver) with fantoccini. Without a browser installed the test says so and
//! passes, unless OVS_REQUIRE_BROWSER is set (as CI does), when it fails.
//! Screenshots of the main pages go to target/console-screenshots/.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::console::{console_with_two_tenants, Session, PASSWORD, SCRIPT_NAME};

/// chromedriver on a port of its own, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// chromedriver, if installed and it starts; `None` (with a message) otherwise.
fn driver() -> Option<Driver> {
    let Some(program) = installed("chromedriver") else {
        let message = "no chromedriver on PATH: the browser test is skipped. Install it \
                       with `apt-get install -y chromium chromium-driver` (as root).";
        assert!(
            std::env::var_os("OVS_REQUIRE_BROWSER").is_none(),
            "{message}"
        );
        eprintln!("{message}");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Driver { child, port })
}

async fn browser(driver: &Driver, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        }),
    );
    // chromedriver is on loopback over plain HTTP: no TLS is needed to reach it.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("chromedriver gave no session")
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

/// Waits (bounded) for an element the page should show.
async fn wait(b: &Client, css: &str) {
    let found = b
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await;
    if let Err(e) = found {
        shot(b, "failed").await;
        let url = b
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = b.source().await.unwrap_or_default();
        panic!("no {css} on {url}: {e}\n{source}");
    }
}

async fn text_of(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn fill(b: &Client, css: &str, text: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn log_in(b: &Client, base: &str, user: &str) {
    b.goto(&format!("{base}/login")).await.unwrap();
    fill(b, "input[name=user]", user).await;
    fill(b, "input[name=password]", PASSWORD).await;
    click(b, "section.login button[type=submit]").await;
    wait(b, "table.tenants").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_support_finds_reveals_and_purges_a_customer_and_a_viewer_cannot() {
    let Some(driver) = driver() else { return };
    let (folder, alpha, _beta, serve) = console_with_two_tenants("").await;
    let downloads = tempfile::tempdir().unwrap();
    let b = browser(&driver, downloads.path()).await;
    let base = serve.base.clone();

    log_in(&b, &base, "sara").await;
    assert_eq!(text_of(&b, "h1").await, "Tenants");
    assert!(text_of(&b, "table.tenants").await.contains("alpha"));
    shot(&b, "tenants").await;

    click(&b, "a[href='/t/alpha']").await;
    wait(&b, "figure.chart svg").await;
    let bars = b
        .find_all(Locator::Css("figure.chart svg rect"))
        .await
        .unwrap();
    assert!(!bars.is_empty(), "the chart draws no bar");
    shot(&b, "dashboard").await;

    // The record of processing, one click from the dashboard.
    click(&b, "a[href='/t/alpha/privacy']").await;
    wait(&b, "table.categories").await;
    assert!(text_of(&b, "table.categories")
        .await
        .contains("ContactPersonEmail"));
    shot(&b, "privacy-record").await;
    click(&b, "nav.crumbs a[href='/t/alpha']").await;
    wait(&b, "figure.chart svg").await;

    // Find a customer by code; its values are masked until revealed with a reason.
    fill(&b, "input[name=code]", "K10002").await;
    click(&b, "div.actions form[method=get] button").await;
    wait(&b, "table.events").await;
    let masked = text_of(&b, "table.events").await;
    assert!(!masked.contains("alert(\"x\")"), "{masked}");
    shot(&b, "customer-masked").await;
    fill(
        &b,
        "form[action$='/reveal'] input[name=reason]",
        "the customer asked",
    )
    .await;
    click(&b, "form[action$='/reveal'] button").await;
    wait(&b, "p.revealed").await;
    // The hostile name is shown as text: the script is neither run nor parsed.
    let revealed = text_of(&b, "table.events").await;
    assert!(revealed.contains(SCRIPT_NAME), "{revealed}");
    let scripts = b.find_all(Locator::Css("script")).await.unwrap();
    assert!(scripts.is_empty(), "a script element reached the page");
    shot(&b, "customer-revealed").await;

    // Purge another with the typed confirmation, and download the receipt.
    let code = "K10001";
    b.goto(&format!("{base}/t/alpha/customer?code={code}"))
        .await
        .unwrap();
    fill(
        &b,
        "form.danger input[name=reason]",
        "erasure request 2026-12",
    )
    .await;
    fill(&b, "form.danger input[name=confirm]", code).await;
    shot(&b, "purge").await;
    click(&b, "form.danger button").await;
    wait(&b, "dl.receipt").await;
    assert!(text_of(&b, "h1").await.contains("erased"));
    shot(&b, "receipt").await;
    click(&b, "a[download]").await;
    let receipt = wait_for_file(downloads.path(), Duration::from_secs(20));
    let receipt: Value = serde_json::from_str(&std::fs::read_to_string(receipt).unwrap()).unwrap();
    assert_eq!(receipt["customer"], code);
    assert_eq!(receipt["actor"], "console:sara");
    assert_eq!(receipt["register"], "deleted");
    assert_eq!(receipt["journal_verified"], true);

    // Erased from the register, and from the journal's values.
    assert!(!alpha.numbers().contains(&code.to_string()));
    b.goto(&format!("{base}/t/alpha/customer?code={code}"))
        .await
        .unwrap();
    let timeline = text_of(&b, "table.events").await;
    assert!(
        timeline.contains("erase") && timeline.contains("erased"),
        "{timeline}"
    );
    let log = alpha
        .cli(
            &folder,
            &[
                "journal",
                "log",
                "--customer",
                code,
                "--show-values",
                "--json",
            ],
        )
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        !log.contains("hakansson"),
        "values survived the purge: {log}"
    );

    // A viewer sees no purge button, and a purge sent anyway is refused.
    click(&b, "header.top form button").await;
    wait(&b, "section.login").await;
    log_in(&b, &base, "vera").await;
    b.goto(&format!("{base}/t/alpha/customer?code=K10006"))
        .await
        .unwrap();
    wait(&b, "table.events").await;
    assert!(b
        .find_all(Locator::Css("form.danger"))
        .await
        .unwrap()
        .is_empty());
    assert!(b
        .find_all(Locator::Css("form[action$='/reveal']"))
        .await
        .unwrap()
        .is_empty());
    shot(&b, "customer-viewer").await;
    let vera = Session::login(&serve, "vera", PASSWORD).await.ok().unwrap();
    let refused = vera
        .post(
            "/t/alpha/customer/K10006/purge",
            &[("reason", "x"), ("confirm", "K10006")],
        )
        .await;
    assert_eq!(refused.status, 403);
    assert!(alpha.numbers().contains(&"K10006".to_string()));

    // An admin connects the tenant to Visma through the sandbox's Visma Connect.
    click(&b, "header.top form button").await;
    wait(&b, "section.login").await;
    log_in(&b, &base, "adam").await;
    b.goto(&format!("{base}/t/alpha")).await.unwrap();
    wait(&b, "a.connect").await;
    let before = text_of(&b, "dd.connection").await;
    click(&b, "a.connect").await;
    wait(&b, "p.ok").await;
    assert_eq!(text_of(&b, "h1").await, "Connected to Visma");
    shot(&b, "connected").await;
    click(&b, "a.button").await;
    wait(&b, "dd.connection").await;
    let after = text_of(&b, "dd.connection").await;
    assert!(
        after.contains("login stored (login)"),
        "{before} -> {after}"
    );
    assert_ne!(before, after);

    b.close().await.unwrap();
    if std::env::var_os("OVS_UPDATE_SCREENSHOTS").is_some() {
        let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots");
        std::fs::create_dir_all(&keep).unwrap();
        for name in ["tenants", "dashboard", "customer-revealed", "receipt"] {
            std::fs::copy(
                shots().join(format!("{name}.png")),
                keep.join(format!("{name}.png")),
            )
            .unwrap();
        }
    }
}

/// The one finished file in `dir` (Chrome writes `.crdownload` until done).
fn wait_for_file(dir: &Path, within: Duration) -> PathBuf {
    let deadline = Instant::now() + within;
    loop {
        let done: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        if let [one] = done.as_slice() {
            return one.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no download in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
