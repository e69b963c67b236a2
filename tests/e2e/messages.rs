//! Messages carry no values: a marker value fed through each error path never reaches
//! stdout or stderr, while the message still names where the problem is. And what is
//! printed for a person or a spreadsheet cannot be turned against them.

use std::process::Output;

use opter_visma_sync::sandbox::bundled_customers;
use serde_json::Value;

use crate::common::Setup;

const MARKER: &str = "LEAK-19850101-1234";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the binary with `config` in place of the setup's, answering its exit code and
/// everything it printed.
fn run_with(setup: &Setup, config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opter-visma-sync"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(&setup.env)
        .env("RUST_LOG", "trace")
        .env_remove("OPTER_VISMA_SYNC_CONFIG");
    let out = command.output().unwrap();
    (out.status.code(), text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_path_of_the_config_prints_the_value_it_refuses() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let grant = setup
        .journal_dir()
        .join("credentials/eaccounting-grant.json");
    let stored: Value = serde_json::from_slice(&std::fs::read(&grant).unwrap()).unwrap();
    let refresh_token = stored["refresh_token"].as_str().unwrap().to_string();
    let good = std::fs::read_to_string(&setup.config).unwrap();
    let variant = |name: &str, text: String| {
        let file = setup.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    };
    let mapping_line = good
        .lines()
        .find(|l| l.starts_with("mapping"))
        .expect("the sandbox config names its mapping")
        .to_string();
    let page_size = good
        .lines()
        .find(|l| l.starts_with("page_size"))
        .expect("the sandbox config sets page_size")
        .to_string();
    let secret_env = good
        .lines()
        .find(|l| l.starts_with("client_secret_env"))
        .expect("the sandbox config names the client secret's variable")
        .to_string();
    let cases = [
        // The credentials themselves, given as the config.
        (
            "the grant as --config",
            grant.clone(),
            vec![&refresh_token[..]],
            "journal folder",
        ),
        (
            "the grant as the mapping",
            variant(
                "mapping-grant.toml",
                good.replace(
                    &mapping_line,
                    &format!("mapping = {:?}", grant.display().to_string()),
                ),
            ),
            vec![&refresh_token[..]],
            "[sink] mapping",
        ),
        (
            "a TOML syntax error on a line holding a value",
            variant(
                "syntax.toml",
                good.replace(
                    "[journal]",
                    &format!("{{\"token\": \"{MARKER}\"}}\n[journal]"),
                ),
            ),
            vec![MARKER],
            "line ",
        ),
        (
            "a string where a number belongs",
            variant(
                "type.toml",
                good.replace(&page_size, &format!("page_size = \"{MARKER}\"")),
            ),
            vec![MARKER],
            "invalid type: string",
        ),
        (
            "a secret where an env var's name belongs",
            variant(
                "secret.toml",
                good.replace(&secret_env, &format!("client_secret_env = \"{MARKER}\"")),
            ),
            vec![MARKER],
            "[sink] client_secret_env",
        ),
        (
            "a secret as the register kind",
            variant(
                "kind.toml",
                good.replace("kind = \"eaccounting\"", &format!("kind = \"{MARKER}\"")),
            ),
            vec![MARKER],
            "`kind`",
        ),
        (
            "a URL holding a password",
            variant(
                "url.toml",
                good.replacen(
                    "base_url = \"",
                    &format!("base_url = \"ftp://user:{MARKER}@"),
                    1,
                ),
            ),
            vec![MARKER],
            "[source] base_url",
        ),
    ];
    for (case, config, values, names) in cases {
        let (code, printed) = run_with(&setup, &config, &["sync"]);
        assert_eq!(code, Some(2), "{case}: a config error\n{printed}");
        assert!(printed.contains(names), "{case}: names {names}\n{printed}");
        for value in values {
            assert!(
                !printed.contains(value),
                "{case}: printed the value\n{printed}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_cells_cannot_start_a_formula_and_masking_goes_by_field() {
    let mut customers = bundled_customers()[..2].to_vec();
    customers[0]["name"] = "=HYPERLINK(\"http://x.example\",\"Open\")".into();
    // A code is printed in its own column, as it is: it must not run either.
    customers[0]["customerCode"] = "=1+K10001".into();
    customers[1]["name"] = "Anders Berg @ Cargo Hansson".into();
    let setup = Setup::new(customers).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));

    let out = setup.run(&["journal", "export", "--format", "csv", "--show-values"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut rows = csv::Reader::from_reader(&out.stdout[..]);
    let headers = rows.headers().unwrap().clone();
    let mut cells = 0;
    for row in rows.records() {
        for (column, cell) in headers.iter().zip(row.unwrap().iter()) {
            cells += 1;
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "column {column} starts like a formula: {cell}"
            );
        }
    }
    assert!(cells > 0, "the export has rows");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(",'=1+K10001,"),
        "the code is kept, neutralised"
    );

    // Masked names show no word whole, even after an `@`.
    let out = setup.run(&["journal", "export", "--format", "jsonl"]);
    let printed = text(&out);
    for word in ["Anders", "Berg", "Cargo", "Hansson", "HYPERLINK"] {
        assert!(!printed.contains(word), "{word} shown unmasked:\n{printed}");
    }
    assert!(printed.contains("A*** B*** @*** C*** H***"), "{printed}");
}
