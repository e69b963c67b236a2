//! `check` and `init` through the real binary: a sandbox setup passes every check for
//! each register, and each broken part fails on its own line; `init` writes configs the
//! loader accepts and never overwrites one without --force.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::Setup;
use opter_visma_sync::config::Config;
use opter_visma_sync::sandbox::{bundled_customers, SandboxOptions};
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register};
use serde_json::Value;

const ALL: [&Register; 3] = [
    &eaccounting::REGISTER,
    &visma_net::REGISTER,
    &economic::REGISTER,
];

fn unlimited() -> SandboxOptions {
    SandboxOptions {
        customers: bundled_customers(),
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    }
}

async fn setup(kind: &'static Register) -> Setup {
    Setup::for_sink(kind, unlimited(), 0).await
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `check --json` with extra environment: the exit code and the lines.
fn check_json(setup: &Setup, env: &[(&str, &str)]) -> (i32, Vec<Value>) {
    let mut cmd = setup.command(&["check", "--json"]);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("binary runs");
    let lines: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON array ({e}): {}", text(&out)));
    (out.status.code().unwrap_or(-1), lines)
}

fn line<'a>(lines: &'a [Value], check: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["check"] == check)
        .unwrap_or_else(|| panic!("no {check} line in {lines:#?}"))
}

fn status(lines: &[Value], check: &str) -> String {
    line(lines, check)["status"].as_str().unwrap().to_string()
}

/// Every line but `failing` is ok, and `failing` failed.
fn fails_only_on(code: i32, lines: &[Value], failing: &str) {
    assert_eq!(code, 2, "{lines:#?}");
    assert_eq!(status(lines, failing), "fail", "{lines:#?}");
    assert_eq!(line(lines, failing)["ok"], false);
    for l in lines.iter().filter(|l| l["check"] != failing) {
        assert!(
            l["status"] == "ok" || l["status"] == "skipped",
            "only {failing} should fail: {lines:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_sandbox_setup_for_every_register() {
    for kind in ALL {
        let setup = setup(kind).await;
        setup.clear_requests().await;
        let out = setup.run(&["check"]);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {shown}", kind.name);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().take_while(|l| !l.is_empty()).collect();
        let access = match kind.name {
            "eaccounting" => "scopes",
            "visma-net" => "tenant",
            _ => "agreement",
        };
        let expected = [
            "config",
            "environment",
            "journal",
            "opter",
            "token",
            access,
            "constants",
            "clock",
        ];
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default())
            .collect();
        for l in &lines {
            assert!(l.starts_with("ok "), "{}: not ok: {l}\n{shown}", kind.name);
        }
        assert_eq!(names, expected, "{}: {shown}", kind.name);

        // Read-only: nothing written to the register, no journal database made.
        assert_eq!(setup.writes(), Vec::new(), "{}: check wrote", kind.name);
        assert!(
            !setup.journal_dir().join("sled").exists(),
            "{}: check made a journal",
            kind.name
        );
        // No secret in the output.
        for secret in setup.env.values() {
            assert!(
                !shown.contains(secret.as_str()),
                "{}: a secret printed",
                kind.name
            );
        }

        // The JSON form says the same, and a sync still works after it.
        let (code, json) = check_json(&setup, &[]);
        assert_eq!(code, 0, "{json:#?}");
        assert_eq!(json.len(), expected.len());
        assert!(json.iter().all(|l| l["ok"] == true), "{json:#?}");
        let (sync, report) = setup.sync_json();
        assert_eq!(sync, 3, "{}: {report}", kind.name);
        assert!(report["created"].as_u64().unwrap() > 290, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_export_files_and_names_a_missing_one() {
    let setup = setup(&economic::REGISTER).await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/export");
    let with_source = |customers: &Path| {
        let text = std::fs::read_to_string(&setup.config).unwrap();
        let (start, end) = (text.find("[source]").unwrap(), text.find("[sink]").unwrap());
        let source = format!(
            "[source]\nkind = \"opter-export\"\ncustomers = {:?}\nreferences = {:?}\n\n",
            customers.display().to_string(),
            fixtures.join("references.xlsx").display().to_string()
        );
        std::fs::write(
            &setup.config,
            format!("{}{source}{}", &text[..start], &text[end..]),
        )
        .unwrap();
    };
    with_source(&fixtures.join("customers.xlsx"));
    let (code, lines) = check_json(&setup, &[("OPTER_API_KEY", "")]);
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(status(&lines, "opter"), "ok");

    with_source(&setup.dir.path().join("gone.xlsx"));
    let (code, lines) = check_json(&setup, &[]);
    fails_only_on(code, &lines, "opter");
    let detail = line(&lines, "opter")["detail"].as_str().unwrap();
    assert!(detail.contains("gone.xlsx"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_renews_a_stored_eaccounting_token_the_register_no_longer_takes() {
    let setup = setup(&eaccounting::REGISTER).await;
    let (code, lines) = check_json(&setup, &[]);
    assert_eq!(code, 0, "{lines:#?}");
    // The access token stored by that check is refused from now on.
    let url = format!("{}/_sandbox/visma/expire-tokens", setup.sandbox.base_url());
    reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let (code, lines) = check_json(&setup, &[]);
    assert_eq!(
        code, 0,
        "a stale stored token is renewed, as sync does: {lines:#?}"
    );
    let (sync, report) = setup.sync_json();
    assert_eq!(sync, 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_wrong_opter_key_fails_on_the_opter_line() {
    let setup = setup(&eaccounting::REGISTER).await;
    let wrong = "not-the-opter-key-4711";
    let (code, lines) = check_json(&setup, &[("OPTER_API_KEY", wrong)]);
    fails_only_on(code, &lines, "opter");
    let detail = line(&lines, "opter")["detail"].as_str().unwrap();
    assert!(detail.contains("OPTER_API_KEY"), "{detail}");
    assert!(!detail.contains(wrong), "the key is printed: {detail}");
    // The register's checks do not depend on Opter.
    assert_eq!(status(&lines, "scopes"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_wrong_terms_of_payment_fails_on_the_constants_line() {
    let setup = setup(&eaccounting::REGISTER).await;
    let mapping = setup.dir.path().join("eaccounting-mapping.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    let wrong = text.replace(
        opter_visma_sync::sandbox::SANDBOX_TERMS_OF_PAYMENT_ID,
        "0b7e5c1d-0000-4000-8000-000000000001",
    );
    assert_ne!(text, wrong, "the mapping names the sandbox's terms");
    std::fs::write(&mapping, wrong).unwrap();
    let (code, lines) = check_json(&setup, &[]);
    fails_only_on(code, &lines, "constants");
    let detail = line(&lines, "constants")["detail"].as_str().unwrap();
    assert!(detail.contains("TermsOfPaymentId"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_an_economic_vat_zone_unknown_fails_on_the_constants_line() {
    let setup = setup(&economic::REGISTER).await;
    let mapping = setup.dir.path().join("economic-mapping.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    let wrong = text.replace(
        "\"vatZone.vatZoneNumber\" = 1",
        "\"vatZone.vatZoneNumber\" = 9",
    );
    assert_ne!(text, wrong);
    std::fs::write(&mapping, wrong).unwrap();
    let (code, lines) = check_json(&setup, &[]);
    fails_only_on(code, &lines, "constants");
    let detail = line(&lines, "constants")["detail"].as_str().unwrap();
    assert!(detail.contains("vatZone.vatZoneNumber"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_an_unknown_visma_net_customer_class_fails_on_the_constants_line() {
    let setup = setup(&visma_net::REGISTER).await;
    let mapping = setup.dir.path().join("visma-net-mapping.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    let wrong = text.replace("customerClassId = \"1\"", "customerClassId = \"77\"");
    assert_ne!(text, wrong);
    std::fs::write(&mapping, wrong).unwrap();
    let (code, lines) = check_json(&setup, &[]);
    fails_only_on(code, &lines, "constants");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_journal_folder_others_can_read_fails_on_the_journal_line() {
    use std::os::unix::fs::PermissionsExt;
    let setup = setup(&visma_net::REGISTER).await;
    let dir = setup.journal_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, lines) = check_json(&setup, &[]);
    fails_only_on(code, &lines, "journal");
    let detail = line(&lines, "journal")["detail"].as_str().unwrap();
    assert!(
        detail.contains("0755") && detail.contains("chmod 700"),
        "{detail}"
    );
    // Read-only: the folder is reported, not repaired.
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_wrong_visma_net_tenant_fails_on_the_tenant_line() {
    let setup = setup(&visma_net::REGISTER).await;
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let wrong = config.replace(
        opter_visma_sync::sandbox::SANDBOX_VISMA_NET_TENANT_ID,
        "7d0c5a4e-1111-4222-8333-944455556666",
    );
    assert_ne!(config, wrong, "the config names the sandbox's tenant");
    std::fs::write(&setup.config, wrong).unwrap();
    let (code, lines) = check_json(&setup, &[]);
    fails_only_on(code, &lines, "tenant");
    // The token is issued for any tenant; the company refuses it.
    assert_eq!(status(&lines, "token"), "ok");
    assert_eq!(status(&lines, "constants"), "skipped");
    let detail = line(&lines, "tenant")["detail"].as_str().unwrap();
    assert!(detail.contains("tenant_id"), "{detail}");
}

/// A login without `ea:sales` (a person who consented to less): the customer list is
/// refused with 403, error 4006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_without_the_sales_scope_fails_on_the_scopes_line() {
    let setup = setup(&eaccounting::REGISTER).await;
    let refresh = login_with_scopes(&setup, "ea:api offline_access").await;
    let (code, lines) = check_json(&setup, &[("VISMA_REFRESH_TOKEN", &refresh)]);
    fails_only_on(code, &lines, "scopes");
    let detail = line(&lines, "scopes")["detail"].as_str().unwrap();
    assert!(detail.contains("ea:sales"), "{detail}");
}

/// A refresh token from the authorize flow, consenting to `scopes` only.
async fn login_with_scopes(setup: &Setup, scopes: &str) -> String {
    setup.login_tokens_with_scopes(scopes).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn init(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
        .current_dir(dir)
        .arg("init")
        .args(args)
        .env_remove("OPTER_VISMA_SYNC_CONFIG")
        .output()
        .expect("binary runs")
}

#[test]
fn init_writes_a_config_the_loader_accepts_for_every_register_and_source() {
    for kind in ALL {
        for source in ["api", "export"] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("tenant").join("sync.toml");
            let out = init(
                dir.path(),
                &[
                    "--register",
                    kind.name,
                    "--source",
                    source,
                    "--out",
                    file.to_str().unwrap(),
                ],
            );
            let shown = text(&out);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{} {source}: {shown}",
                kind.name
            );
            let config = Config::load(&file)
                .unwrap_or_else(|e| panic!("{} {source}: does not load: {e}", kind.name));
            assert_eq!(config.sink.register, kind);
            assert!(
                config.sink.mapping.exists(),
                "{} {source}: no mapping {}: {shown}",
                kind.name,
                config.sink.mapping.display()
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} {source}", kind.name);
            }
            // It says what to set and what to run next.
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(stdout.contains("OPTER_API_KEY"), source == "api", "{shown}");
            assert!(
                stdout.contains(" check") && stdout.contains("sync --dry-run"),
                "{shown}"
            );
            assert_eq!(
                stdout.contains("auth login"),
                kind.name == "eaccounting",
                "{shown}"
            );

            // Never overwritten without --force; with it, written again.
            std::fs::write(&file, "# mine\n").unwrap();
            let refused = init(
                dir.path(),
                &[
                    "--register",
                    kind.name,
                    "--source",
                    source,
                    "--out",
                    file.to_str().unwrap(),
                ],
            );
            assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
            assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
            let forced = init(
                dir.path(),
                &[
                    "--register",
                    kind.name,
                    "--source",
                    source,
                    "--out",
                    file.to_str().unwrap(),
                    "--force",
                ],
            );
            assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
            Config::load(&file).unwrap();
        }
    }
}

#[test]
fn init_writes_the_default_config_file_in_the_working_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = init(
        dir.path(),
        &["--register", "economic", "--source", "export"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Config::load(&dir.path().join("opter-visma-sync.toml")).unwrap();
}

#[test]
fn check_and_init_explain_themselves_with_examples() {
    for command in ["check", "init"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("Example"), "{help}");
    }
}
