//! Journals written by version 0.1.0 (commit 334295b), kept in `fixtures/journal-0.1.0/`,
//! still open with this binary: `journal verify` passes with the same event count, every
//! export prints exactly what 0.1.0 printed, and a sync against a fresh sandbox serving
//! the same Opter customers sends the register nothing and keeps the held customers held.
//!
//! The fixtures are copied into a temporary folder first; sled rewrites files on open.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Setup;
use opter_visma_sync::sandbox::SandboxOptions;
use opter_visma_sync::sandbox::{bundled_customers, BUNDLED_CUSTOMERS};
use opter_visma_sync::sink::{eaccounting, economic, visma_net, Register};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of `fixtures/customers.json` when the fixtures were made: the Opter customers
/// the sandbox served then, and must serve now for "unchanged" to mean unchanged.
const CUSTOMERS_SHA256: &str = "4456f9753bde2c4ca841e8994ca3d2f071c1e52c78729d540a6f8c1df93d42c7";
/// Restricted, then purged, with the 0.1.0 binary (see the fixtures' README).
const RESTRICTED: &str = "K10002";
const PURGED: &str = "K10003";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journal-0.1.0")
}

fn stored(name: &str) -> Vec<u8> {
    let file = fixtures().join(name);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn stored_json(name: &str) -> Value {
    serde_json::from_slice(&stored(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every file below `dir` with its bytes, by path relative to `dir`.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), bytes);
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in files(from) {
        let target = to.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

fn unlimited() -> SandboxOptions {
    SandboxOptions {
        customers: bundled_customers(),
        eaccounting_rate_limit_per_minute: 0,
        visma_net_rate_limit_per_hour: 0,
        economic_rate_limit_per_minute: 0,
        ..SandboxOptions::default()
    }
}

/// Runs the binary; asserts exit `code` and returns stdout.
fn run(setup: &Setup, args: &[&str], code: i32) -> Vec<u8> {
    let out = setup.run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{} {args:?}\nstdout: {}\nstderr: {}",
        setup.kind.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// (customer, reason) of each rejection, sorted.
fn rejections(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["customer"].to_string(), r["reason"].to_string()))
        .collect();
    out.sort();
    out
}

/// Asserts that a sync report wrote nothing and held what the fixture's last sync held.
fn assert_no_op(kind: &str, report: &Value, before: &Value) {
    assert_eq!(report["created"], 0, "{kind}: {report}");
    assert_eq!(report["updated"], 0, "{kind}: {report}");
    assert_eq!(report["failed"], 0, "{kind}: {report}");
    assert_eq!(report["restricted"], 1, "{kind}: {report}");
    assert_eq!(report["suppressed"], 1, "{kind}: {report}");
    assert_eq!(report["unchanged"], before["unchanged"], "{kind}: {report}");
    assert_eq!(report["rejected"], before["rejected"], "{kind}: {report}");
    assert_eq!(rejections(report), rejections(before), "{kind}");
    assert!(report.get("stopped").is_none(), "{kind}: {report}");
}

async fn journal_from_0_1_0_opens_verifies_exports_and_syncs_on(kind: &'static Register) {
    let name = kind.name;
    assert_eq!(
        hex::encode(Sha256::digest(BUNDLED_CUSTOMERS.as_bytes())),
        CUSTOMERS_SHA256,
        "fixtures/customers.json changed since the journal fixtures were made; the sync \
         below needs the customers they were made from (see fixtures/journal-0.1.0/README.md)"
    );
    let fixture = fixtures().join(name);
    let pristine = files(&fixture);
    assert!(
        pristine.keys().all(|p| p.starts_with("sled")),
        "{name}: the fixture holds sled data only: {:?}",
        pristine.keys().collect::<Vec<_>>()
    );

    let setup = Setup::for_sink(kind, unlimited(), 0).await;
    // The config's [journal] path is `journal` beside it: the copy.
    copy_dir(&fixture, &setup.journal_dir());

    // Opens and verifies, counting the events 0.1.0 counted.
    let verified = json(&run(&setup, &["journal", "verify", "--json"], 0));
    let before = stored_json(&format!("{name}.verify.json"));
    assert_eq!(verified, before, "{name}: journal verify");
    let events = before["events_checked"].as_u64().unwrap();
    assert!(events > 300, "{name}: only {events} events in the fixture");

    // Every export prints exactly the bytes 0.1.0 printed.
    let export = stored(&format!("{name}.export.jsonl"));
    for (args, file) in [
        (&["--format", "jsonl"][..], format!("{name}.export.jsonl")),
        (
            &["--format", "jsonl", "--show-values"][..],
            format!("{name}.export-values.jsonl"),
        ),
        (&["--format", "csv"][..], format!("{name}.export.csv")),
    ] {
        let printed = run(&setup, &[&["journal", "export"][..], args].concat(), 0);
        assert!(
            printed == stored(&file),
            "{name}: journal export {args:?} differs from {file}"
        );
    }
    assert_eq!(export.split(|b| *b == b'\n').count() as u64, events + 1);
    let runs = run(&setup, &["journal", "runs", "--json"], 0);
    assert!(
        runs == stored(&format!("{name}.runs.json")),
        "{name}: journal runs differs from {name}.runs.json"
    );

    // Sync on, against a fresh, empty register: unchanged customers are not sent (nor
    // looked up), and the held ones are skipped.
    let last = stored_json(&format!("{name}.sync2.json"));
    let (code, report) = setup.sync_json();
    assert_eq!(
        code, 3,
        "{name}: rejected customers stay rejected: {report}"
    );
    assert_no_op(name, &report, &last);
    assert_eq!(report["read"], "full", "{name}: {report}");
    assert_eq!(
        setup.writes(),
        Vec::<(String, String)>::new(),
        "{name}: no write reaches the register"
    );
    assert_eq!(setup.register(), Vec::new(), "{name}: nothing created");
    assert_eq!(
        setup.api_requests(),
        Vec::<Value>::new(),
        "{name}: planning compares content hashes with the journal; the register is not asked"
    );

    // The chain goes on from the fixture's head: the old events as they were, then one
    // rejected event per rejected customer (rejections are journaled every run).
    let verified = json(&run(&setup, &["journal", "verify", "--json"], 0));
    let rejected = report["rejected"].as_u64().unwrap();
    assert_eq!(verified["events_checked"], events + rejected, "{name}");
    assert_eq!(verified["problems"], Value::Array(vec![]), "{name}");
    let after = run(&setup, &["journal", "export", "--format", "jsonl"], 0);
    assert!(
        after.starts_with(&export),
        "{name}: the fixture's events changed after a sync"
    );
    let last_hash = json(
        export
            .trim_ascii_end()
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap(),
    )["hash"]
        .clone();
    let new: Vec<Value> = after[export.len()..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(json)
        .collect();
    assert_eq!(new.len() as u64, rejected, "{name}");
    assert_eq!(new[0]["prev_hash"], last_hash, "{name}");
    for event in &new {
        assert_eq!(event["run_id"], report["run_id"], "{name}: {event}");
        assert_eq!(event["outcome"], "rejected", "{name}: {event}");
        assert_ne!(event["customer"], RESTRICTED, "{name}: {event}");
        assert_ne!(event["customer"], PURGED, "{name}: {event}");
    }

    // The held customers stay held even once they change in Opter.
    for held in [RESTRICTED, PURGED] {
        let mut customer = bundled_customers()
            .into_iter()
            .find(|c| c["customerCode"] == held)
            .unwrap();
        customer["name"] = format!("Ändrad {held} AB").into();
        setup.put_opter_customer(&customer).await;
    }
    let (code, report) = setup.sync_json();
    assert_eq!(code, 3, "{name}: {report}");
    assert_no_op(name, &report, &last);
    assert_eq!(setup.writes(), Vec::<(String, String)>::new(), "{name}");
    assert_eq!(setup.api_requests(), Vec::<Value>::new(), "{name}");
    let verified = json(&run(&setup, &["journal", "verify", "--json"], 0));
    assert_eq!(verified["problems"], Value::Array(vec![]), "{name}");
    assert_eq!(verified["events_checked"], events + 2 * rejected, "{name}");

    assert!(
        files(&fixture) == pristine,
        "{name}: the fixture itself was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eaccounting_journal_from_0_1_0() {
    journal_from_0_1_0_opens_verifies_exports_and_syncs_on(&eaccounting::REGISTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visma_net_journal_from_0_1_0() {
    journal_from_0_1_0_opens_verifies_exports_and_syncs_on(&visma_net::REGISTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn economic_journal_from_0_1_0() {
    journal_from_0_1_0_opens_verifies_exports_and_syncs_on(&economic::REGISTER).await;
}
