//! Planning and settling without HTTP: the run against Opter export files and a register
//! held in memory behind the `Sink` seam.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;

use super::*;
use crate::journal::{HoldKind, Intent, IntentBatch};
use crate::mapping::MappedRecord;
use crate::sink::{eaccounting, CustomerPage, Erased, Register, Remote, SinkError, Written};
use crate::source::{OpterExportConfig, OpterExportSource};

/// A register in memory: customers by number, and every call made to it.
#[derive(Default)]
struct MemorySink {
    customers: Mutex<BTreeMap<String, Value>>,
    calls: Mutex<Vec<String>>,
    /// Lookups by number fail (an outage, an unreadable answer) while set.
    finds_fail: std::sync::atomic::AtomicBool,
}

impl MemorySink {
    fn called(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }

    /// Every call but reads of the customer list (see `lists`).
    fn calls(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| !c.starts_with("list"))
            .cloned()
            .collect()
    }

    /// Pages of the customer list read.
    fn lists(&self) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.starts_with("list")).count()
    }

    fn remote(number: &str, fields: &Value) -> Remote {
        Remote {
            id: number.to_string(),
            fields: fields.clone(),
            record: fields.clone(),
        }
    }
}

impl Sink for MemorySink {
    fn register(&self) -> &'static Register {
        &eaccounting::REGISTER
    }

    fn find_by_number<'a>(
        &'a self,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Option<Remote>, SinkError>> {
        self.called(format!("find {number}"));
        if self.finds_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async {
                Err(SinkError::Failed {
                    status: Some(503),
                    message: "unavailable".into(),
                })
            });
        }
        let found = self.customers.lock().unwrap().get(number).cloned();
        Box::pin(async move { Ok(found.map(|f| MemorySink::remote(number, &f))) })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Remote>, SinkError>> {
        self.find_by_number(id)
    }

    fn create<'a>(
        &'a self,
        record: &'a MappedRecord,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Written, SinkError>> {
        self.called(format!("create {}", record.number));
        let mut customers = self.customers.lock().unwrap();
        let result = match customers.contains_key(&record.number) {
            true => Err(SinkError::NumberTaken {
                status: 400,
                message: "taken".into(),
            }),
            false => {
                let fields = serde_json::to_value(&record.fields).unwrap();
                customers.insert(record.number.clone(), fields);
                Ok(Written {
                    remote_id: record.number.clone(),
                    status: 201,
                })
            }
        };
        Box::pin(async move { result })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        record: &'a MappedRecord,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Written, SinkError>> {
        self.called(format!("update {id}"));
        let fields = serde_json::to_value(&record.fields).unwrap();
        // Like e-conomic's PUT: to an id nobody has, it creates (201).
        let existed = self
            .customers
            .lock()
            .unwrap()
            .insert(id.to_string(), fields)
            .is_some();
        let written = Written {
            remote_id: id.to_string(),
            status: if existed { 200 } else { 201 },
        };
        Box::pin(async move { Ok(written) })
    }

    fn customers_page<'a>(&'a self, page: u32) -> BoxFuture<'a, Result<CustomerPage, SinkError>> {
        self.called(format!("list {page}"));
        let customers = match page {
            0 => self
                .customers
                .lock()
                .unwrap()
                .iter()
                .map(|(n, f)| (n.clone(), MemorySink::remote(n, f)))
                .collect(),
            _ => Vec::new(),
        };
        Box::pin(async move {
            Ok(CustomerPage {
                customers,
                more: false,
            })
        })
    }

    fn complete<'a>(&'a self, listed: Remote) -> BoxFuture<'a, Result<Remote, SinkError>> {
        Box::pin(async move { Ok(listed) })
    }

    fn erase<'a>(&'a self, id: &'a str, _key: &'a str) -> BoxFuture<'a, Result<Erased, SinkError>> {
        self.called(format!("erase {id}"));
        self.customers.lock().unwrap().remove(id);
        Box::pin(async { Ok(Erased::Deleted { status: 204 }) })
    }
}

/// Opter's exports with these customers: (code, name, contact email).
fn write_exports(dir: &Path, customers: &[(&str, &str, &str)]) -> OpterExportConfig {
    let mut c = String::from("Customer code\tName\tSales ledger number\tActive\tUpdated\n");
    let mut r = String::from("Customer code\tSales ledger number\tName\tE-mail\tDefault\n");
    for (i, (code, name, email)) in customers.iter().enumerate() {
        c.push_str(&format!(
            "{code}\t{name}\t{}\tYes\t2026-01-02 03:04:05\n",
            100 + i
        ));
        r.push_str(&format!(
            "{code}\t{}\tAnna Svensson\t{email}\tYes\n",
            100 + i
        ));
    }
    std::fs::write(dir.join("customers.txt"), c).unwrap();
    std::fs::write(dir.join("references.txt"), r).unwrap();
    OpterExportConfig::files(dir.join("customers.txt"), dir.join("references.txt"))
}

struct Fixture {
    _dir: tempfile::TempDir,
    sink: Arc<MemorySink>,
    engine: Engine,
}

fn fixture(customers: &[(&str, &str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let source = OpterExportSource::new(&write_exports(dir.path(), customers)).unwrap();
    let mapping_file = dir.path().join("mapping.toml");
    std::fs::write(&mapping_file, eaccounting::REGISTER.mapping).unwrap();
    let mapping = Mapping::load(&mapping_file, eaccounting::REGISTER.rules).unwrap();
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    let sink = Arc::new(MemorySink::default());
    let engine = Engine {
        source: Arc::new(Source::OpterExport(source)),
        sink: sink.clone(),
        mapping: Arc::new(mapping),
        journal: Arc::new(journal),
        settings: RunSettings {
            concurrency: 2,
            flush_every: 2,
            keep_values_days: 30,
        },
        observer: Arc::new(Quiet),
    };
    Fixture {
        _dir: dir,
        sink,
        engine,
    }
}

fn options() -> SyncOptions {
    SyncOptions {
        actor: "test".into(),
        ..SyncOptions::default()
    }
}

async fn run(engine: &Engine) -> Report {
    let (report, stopped) = engine.clone().run(options()).await.unwrap();
    assert!(stopped.is_none(), "{stopped:?}");
    report
}

const THREE: &[(&str, &str, &str)] = &[
    ("K1", "Alfa Åkeri AB", "anna@alfa.se"),
    ("K2", "Beta Bud AB", "anna@beta.se"),
    ("K3", "Gamma Gods AB", "anna@gamma.se"),
];

#[tokio::test]
async fn an_unchanged_customer_is_planned_as_unchanged_and_not_sent_again() {
    let f = fixture(THREE);
    let first = run(&f.engine).await;
    assert_eq!(first.counts.created, 3);
    assert_eq!(f.sink.calls().len(), 3, "{:?}", f.sink.calls());
    let second = run(&f.engine).await;
    assert_eq!(
        (
            second.counts.unchanged,
            second.counts.created,
            second.counts.updated
        ),
        (3, 0, 0)
    );
    assert_eq!(
        f.sink.calls().len(),
        3,
        "nothing more is sent: {:?}",
        f.sink.calls()
    );
}

#[tokio::test]
async fn a_dry_run_plans_without_writing_or_recording() {
    let f = fixture(THREE);
    let (report, _) = f
        .engine
        .clone()
        .run(SyncOptions {
            dry_run: true,
            ..options()
        })
        .await
        .unwrap();
    assert_eq!(report.counts.created, 3);
    assert_eq!(report.plan.len(), 3);
    // Only the register's customer list is read, to tell creates from links.
    assert!(f.sink.calls().is_empty());
    assert_eq!(f.sink.lists(), 1);
    let onboarding = report.onboarding.expect("the register was read");
    assert_eq!((onboarding.created, onboarding.register_only), (3, Some(0)));
    assert!(f.engine.journal.events(None, None).unwrap().is_empty());
}

#[tokio::test]
async fn a_code_read_twice_with_different_content_is_rejected_and_neither_copy_sent() {
    let f = fixture(&[
        ("K1", "Alfa Åkeri AB", "anna@alfa.se"),
        ("K1", "Alfa Åkeri Nord AB", "anna@alfa.se"),
        ("K2", "Beta Bud AB", "anna@beta.se"),
    ]);
    let (report, _) = f.engine.clone().run(options()).await.unwrap();
    assert_eq!(report.counts.created, 1);
    assert_eq!(report.counts.rejected, 2, "{:?}", report.rejections);
    assert!(report.rejections.iter().all(|r| r.customer == "K1"));
    assert_eq!(f.sink.calls(), ["create K2"]);
}

#[tokio::test]
async fn settling_adopts_what_landed_and_closes_what_did_not() {
    let f = fixture(&THREE[..2]);
    // A dead run left intents open for both: K1's create landed, K2's did not.
    // (A first run puts K1 in the register as the connector writes it.)
    let first = run(&f.engine).await;
    assert_eq!(first.counts.created, 2);
    f.sink
        .customers
        .lock()
        .unwrap()
        .retain(|number, _| number == "K1");
    // Their journal was lost but for the open intents.
    let dir = tempfile::tempdir().unwrap();
    let fresh = Journal::open(&dir.path().join("journal")).unwrap();
    let intent = |code: &str| {
        (
            code.to_string(),
            Intent {
                operation: crate::journal::Operation::Create,
                key: "ab".repeat(32),
                number: code.to_string(),
                content_hash: "cd".repeat(32),
                run_id: "20261203T080000.000Z-0001".into(),
                started: Utc::now(),
            },
        )
    };
    let mut batch = IntentBatch::new("eaccounting", "20261203T080000.000Z-0001", 0);
    fresh
        .recorder()
        .open_intents(&mut batch, &[intent("K1"), intent("K2")])
        .unwrap();
    fresh.recorder().flush().unwrap();
    drop(fresh);
    let engine = Engine {
        journal: Arc::new(Journal::open(&dir.path().join("journal")).unwrap()),
        ..f.engine.clone()
    };
    let before = f.sink.calls().len();
    let report = run(&engine).await;
    let calls = f.sink.calls()[before..].to_vec();
    // Both looked up; K1 adopted as it is (same content), K2 created.
    assert_eq!(calls, ["find K1", "find K2", "create K2"], "{calls:?}");
    assert_eq!((report.counts.unchanged, report.counts.created), (1, 1));
    let events = engine.journal.events(Some("K1"), None).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.operation == crate::journal::Operation::Adopt),
        "{events:?}"
    );
    assert!(engine
        .journal
        .pending_intents("eaccounting")
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_update_the_register_answers_with_201_created_is_journaled_as_a_create() {
    let f = fixture(THREE);
    assert_eq!(run(&f.engine).await.counts.created, 3);
    // Deleted in the register after the run read it; its PUT then made it anew.
    f.sink.customers.lock().unwrap().remove("K1");
    let mut changed = THREE.to_vec();
    changed[0].1 = "Alfa Åkeri Nord AB";
    write_exports(f._dir.path(), &changed);
    let report = run(&f.engine).await;
    assert_eq!(
        (report.counts.created, report.counts.updated),
        (1, 0),
        "{:?}",
        f.sink.calls()
    );
    assert_eq!(f.sink.customers.lock().unwrap().len(), 3, "no duplicate");
    let last = f.engine.journal.events(Some("K1"), None).unwrap();
    let last = last.iter().max_by_key(|e| e.seq).unwrap();
    assert_eq!(last.operation, crate::journal::Operation::Create);
    assert_eq!(last.http_status, Some(201));
    assert_eq!(last.outcome, crate::journal::Outcome::Succeeded);
}

#[tokio::test]
async fn a_run_can_be_spawned_on_a_multi_thread_runtime() {
    let f = fixture(THREE);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = f.engine.clone();
    let handle = runtime.spawn(engine.run(options()));
    let (report, stopped) = tokio::task::spawn_blocking(move || runtime.block_on(handle))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(stopped.is_none());
    assert_eq!(report.counts.created, 3);
}

/// A second engine on the same register with a fresh journal (a first install, or a
/// lost journal).
fn fresh_journal(f: &Fixture) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = f.engine.clone();
    engine.journal = Arc::new(Journal::open(&dir.path().join("journal")).unwrap());
    (dir, engine)
}

#[tokio::test]
async fn another_customer_under_our_number_is_a_conflict_and_is_never_written() {
    let f = fixture(THREE);
    f.sink.customers.lock().unwrap().insert(
        "K1".into(),
        serde_json::json!({"Name": "Håkansson & Söner Åkeri AB", "EmailAddress": "info@hs.se"}),
    );
    let first = run(&f.engine).await;
    assert_eq!((first.counts.conflict, first.counts.created), (1, 2));
    assert_eq!(first.conflicts[0].customer, "K1");
    assert!(
        !first.conflicts[0].reason.contains("Håkansson"),
        "names are masked"
    );
    assert!(f
        .sink
        .calls()
        .iter()
        .all(|c| !c.ends_with(" K1") || c.starts_with("find")));
    let held = f.engine.journal.hold(HoldKind::Conflict, "K1").unwrap();
    assert_eq!(held.and_then(|h| h.remote_id).as_deref(), Some("K1"));
    // It stays a conflict, without asking the register again.
    let calls = f.sink.calls().len();
    let second = run(&f.engine).await;
    assert_eq!((second.counts.conflict, second.counts.unchanged), (1, 2));
    assert_eq!(f.sink.calls().len(), calls, "{:?}", f.sink.calls());
    let name = f.sink.customers.lock().unwrap()["K1"]["Name"].clone();
    assert_eq!(name, "Håkansson & Söner Åkeri AB");
}

#[tokio::test]
async fn the_same_customer_by_name_is_linked_and_updated_not_created() {
    let f = fixture(THREE);
    f.sink.customers.lock().unwrap().insert(
        "K1".into(),
        serde_json::json!({"Name": "ALFA AKERI aktiebolag", "EmailAddress": "old@alfa.se"}),
    );
    let report = run(&f.engine).await;
    assert_eq!((report.counts.updated, report.counts.created), (1, 2));
    assert!(f.sink.calls().contains(&"update K1".to_string()));
    assert!(!f.sink.calls().contains(&"create K1".to_string()));
    let linked = f.engine.journal.events(Some("K1"), None).unwrap();
    assert!(linked.iter().any(|e| e.operation == Operation::Adopt));
}

#[tokio::test]
async fn a_fresh_journal_links_what_the_register_holds_without_writing() {
    let f = fixture(THREE);
    run(&f.engine).await;
    let (_dir, engine) = fresh_journal(&f);
    let before = f.sink.calls().len();
    let report = run(&engine).await;
    assert_eq!((report.counts.unchanged, report.counts.created), (3, 0));
    let calls = &f.sink.calls()[before..];
    assert!(calls.is_empty(), "nothing but the list is read: {calls:?}");
    assert_eq!(f.sink.lists(), 2, "once per fresh journal");
    // Linked: the next run knows them.
    let again = run(&engine).await;
    assert_eq!(again.counts.unchanged, 3);
    assert_eq!(f.sink.calls().len(), before + calls.len());
}

#[tokio::test]
async fn a_new_customer_meeting_another_under_its_number_is_a_conflict_without_the_index() {
    let f = fixture(THREE);
    run(&f.engine).await;
    // The journal knows the register; one new customer is simply created, and the
    // register refuses its number: the accountant's own customer is there.
    let four = [THREE, &[("K4", "Delta Däck AB", "anna@delta.se")]].concat();
    write_exports(f._dir.path(), &four);
    f.sink.customers.lock().unwrap().insert(
        "K4".into(),
        serde_json::json!({"Name": "Håkansson & Söner Åkeri AB", "EmailAddress": "info@hs.se"}),
    );
    let lists = f.sink.lists();
    let report = run(&f.engine).await;
    assert_eq!(f.sink.lists(), lists, "no index for one new customer");
    assert_eq!((report.counts.conflict, report.counts.created), (1, 0));
    assert!(f.sink.calls().contains(&"create K4".to_string()));
    assert!(!f.sink.calls().contains(&"update K4".to_string()));
    let events = f.engine.journal.events(Some("K4"), None).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.operation == Operation::Adopt && e.outcome == Outcome::Conflict),
        "{events:?}"
    );
    assert_eq!(
        f.sink.customers.lock().unwrap()["K4"]["Name"],
        "Håkansson & Söner Åkeri AB"
    );
}

#[tokio::test]
async fn a_refused_create_whose_lookup_fails_is_decided_again_not_settled_onto_another() {
    let f = fixture(THREE);
    run(&f.engine).await;
    let four = [THREE, &[("K4", "Delta Däck AB", "anna@delta.se")]].concat();
    write_exports(f._dir.path(), &four);
    f.sink.customers.lock().unwrap().insert(
        "K4".into(),
        serde_json::json!({"Name": "Håkansson & Söner Åkeri AB", "EmailAddress": "info@hs.se"}),
    );
    // The create is refused (the number is taken) and the lookup after it fails.
    f.sink
        .finds_fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let first = run(&f.engine).await;
    assert_eq!(first.counts.failed, 1, "{first:?}");
    assert!(
        f.engine
            .journal
            .pending_intents("eaccounting")
            .unwrap()
            .is_empty(),
        "nothing of a refused create landed: no intent left to settle"
    );
    f.sink
        .finds_fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let second = run(&f.engine).await;
    assert_eq!(second.counts.conflict, 1, "{second:?}");
    assert!(f
        .engine
        .journal
        .state("eaccounting", "K4")
        .unwrap()
        .is_none());
    assert!(!f.sink.calls().contains(&"update K4".to_string()));
    assert_eq!(
        f.sink.customers.lock().unwrap()["K4"]["Name"],
        "Håkansson & Söner Åkeri AB"
    );
}

#[tokio::test]
async fn a_retention_longer_than_the_calendar_keeps_everything_without_a_panic() {
    let mut f = fixture(THREE);
    f.engine.settings.keep_values_days = u32::MAX;
    let report = run(&f.engine).await;
    assert_eq!(report.counts.created, 3);
    let kept = f.engine.journal.events(None, None).unwrap();
    assert!(
        kept.iter().all(|e| e.values.is_some()),
        "nothing is redacted"
    );
}
