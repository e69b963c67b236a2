//! The command line as a person meets it: help texts, the `sandbox` command and the
//! config it writes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_opter-visma-sync");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help fails");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_command_explains_itself_with_an_example() {
    for command in [
        &["demo"][..],
        &["sandbox"],
        &["sync"],
        &["journal", "runs"],
        &["journal", "log"],
    ] {
        let text = help(command);
        assert!(
            text.contains("Example"),
            "{command:?} --help has no example:\n{text}"
        );
    }
    let top = help(&[]);
    for word in ["demo", "sandbox", "sync", "journal", "Exit codes"] {
        assert!(top.contains(word), "top-level help lacks {word}");
    }
}

#[test]
fn a_usage_error_exits_2() {
    let out = Command::new(BIN)
        .args(["sync", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Kills the sandbox process however the test ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_sandbox_command_writes_a_config_that_sync_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    let mut sandbox = Child(
        Command::new(BIN)
            .args([
                "sandbox",
                "--customers",
                "25",
                "--seed",
                "7",
                "--write-config",
            ])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The export lines are printed once the config is written and the server listens.
    let mut env = Vec::new();
    let mut lines = BufReader::new(sandbox.0.stdout.take().unwrap()).lines();
    while env.len() < 3 {
        let line = lines
            .next()
            .expect("sandbox printed its export lines")
            .unwrap();
        let (name, value) = line
            .strip_prefix("export ")
            .unwrap()
            .split_once('=')
            .unwrap();
        env.push((name.to_string(), value.to_string()));
    }
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "OPTER_API_KEY",
            "VISMA_CLIENT_SECRET",
            "VISMA_REFRESH_TOKEN"
        ]
    );
    let text = std::fs::read_to_string(&config).unwrap();
    for (_, value) in &env {
        assert!(!text.contains(value.as_str()), "the config holds no secret");
    }

    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["sync", "--json"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["created"], 25);
}
