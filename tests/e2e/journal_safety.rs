//! The journal's safety against loss and damage: a lost database refused (and started
//! over only when asked, erasures kept), backup and restore, damaged files reported and
//! never written to, an interrupted purge told as such, owner-only files, and I/O
//! errors that name the path.

use std::path::{Path, PathBuf};

use crate::common;

use common::{all_bytes, code, find_any, Setup};
use opter_visma_sync::sandbox::{bundled_customers, Faults};
use serde_json::Value;

fn purge(setup: &Setup, code: &str) -> std::process::Output {
    setup.run(&[
        "purge",
        "--customer",
        code,
        "--reason",
        "erasure",
        "--yes",
        "--json",
    ])
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The name and reference emails of bundled customer `i`.
fn personal_values(i: usize) -> Vec<String> {
    let c = &bundled_customers()[i];
    let mut values = vec![c["name"].as_str().unwrap().to_string()];
    for r in c["references"].as_array().unwrap() {
        values.extend(r["email"].as_str().map(str::to_string));
    }
    values
}

/// Requests the register received that name the customer.
fn about(setup: &Setup, code: &str) -> usize {
    setup
        .api_requests()
        .iter()
        .filter(|r| {
            r["path"].as_str().unwrap_or_default().contains(code)
                || r["body"].to_string().contains(code)
        })
        .count()
}

fn report_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_refused_and_a_new_journal_keeps_the_erasures() {
    let setup = Setup::new(bundled_customers()[..4].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let target = code(1);
    assert_eq!(purge(&setup, &target).status.code(), Some(0));
    std::fs::remove_dir_all(setup.journal_dir().join("sled")).unwrap();
    setup.clear_requests().await;

    let out = setup.run(&["sync", "--full"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    for hint in ["its database", "journal restore FILE", "--new-journal"] {
        assert!(said.contains(hint), "{hint}: {said}");
    }
    assert_eq!(setup.api_requests(), Vec::<Value>::new(), "nothing sent");
    assert!(
        !setup.journal_dir().join("sled").exists(),
        "nothing started"
    );
    // Every command that would start a journal refuses it alike; those that read say
    // so too, and `check` fails on it.
    for command in [
        &["restrict", "--customer", &code(0), "--reason", "r"][..],
        &["journal", "log"],
        &["check"],
    ] {
        let out = setup.run(command);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {}", text(&out));
        assert!(
            text(&out).contains("--new-journal"),
            "{command:?}: {}",
            text(&out)
        );
    }
    assert!(
        !setup.journal_dir().join("sled").exists(),
        "nothing started"
    );

    let out = setup.run(&["sync", "--full", "--new-journal", "--json"]);
    let report = report_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["suppressed"], 1, "{report}");
    assert_eq!(report["created"], 0, "{report}");
    assert!(setup.register_customer(&target).is_none(), "not re-created");
    assert_eq!(
        about(&setup, &target),
        0,
        "nothing sent for the purged customer"
    );

    let out = setup.run(&["journal", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let timeline: Vec<Value> = serde_json::from_slice(
        &setup
            .run(&["journal", "log", "--customer", &target, "--json"])
            .stdout,
    )
    .unwrap();
    let ops: Vec<&str> = timeline
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["suppress"],
        "the new journal records the carried suppression"
    );
    let file = std::fs::read_to_string(setup.journal_dir().join("suppressions")).unwrap();
    assert!(file.lines().any(|l| l == target), "{file}");
    assert_eq!(find_any(&file, &personal_values(1)), None, "codes only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_a_lost_journal_and_an_older_one_keeps_later_erasures() {
    let setup = Setup::new(bundled_customers()[..4].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let backups = tempfile::tempdir().unwrap();
    let before_purge = backups.path().join("before.ovs");
    let out = setup.run(&["journal", "backup", before_purge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (early, late) = (code(1), code(2));
    assert_eq!(purge(&setup, &early).status.code(), Some(0));
    let after_purge = backups.path().join("after.ovs");
    let out = setup.run(&["journal", "backup", after_purge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(purge(&setup, &late).status.code(), Some(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&after_purge)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The database is lost; the latest backup predates the second purge.
    std::fs::remove_dir_all(setup.journal_dir().join("sled")).unwrap();
    let out = setup.run(&["journal", "restore", after_purge.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(8), "{said}");
    assert!(
        said.contains(&format!("customer {late} was purged after this backup")),
        "{said}"
    );
    assert!(
        said.contains(&format!("an unfinished purge of {late}: run purge again")),
        "{said}"
    );
    setup.clear_requests().await;
    let out = setup.run(&["sync", "--full", "--json"]);
    let report = report_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["updated"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(report["suppressed"], 2, "{report}");
    assert_eq!(setup.writes(), Vec::<(String, String)>::new());
    assert!(setup.register_customer(&early).is_none());
    assert!(setup.register_customer(&late).is_none());
    // The second purge again: its values, back with the backup, go.
    assert!(find_any(&all_bytes(&setup.journal_dir()), &personal_values(2)).is_some());
    assert_eq!(purge(&setup, &late).status.code(), Some(0));
    assert_eq!(
        find_any(&all_bytes(&setup.journal_dir()), &personal_values(2)),
        None
    );
    let out = setup.run(&["journal", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A restore never overwrites a database, and a damaged backup restores nothing.
    let out = setup.run(&["journal", "restore", before_purge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let mut bytes = std::fs::read(&before_purge).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    std::fs::write(&before_purge, bytes).unwrap();
    std::fs::remove_dir_all(setup.journal_dir().join("sled")).unwrap();
    let out = setup.run(&["journal", "restore", before_purge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(!setup.journal_dir().join("sled").exists());
}

/// Flips bytes of sled's log inside the newest copy of `value` (so in a page the
/// journal reads), at seeded offsets within it.
fn damage(sled: &Path, value: &str, seed: u64) -> PathBuf {
    use rand::{Rng, SeedableRng};
    let db = sled.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes
        .windows(value.len())
        .rposition(|w| w == value.as_bytes())
        .expect("the value is in the log");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..4 {
        bytes[at + rng.gen_range(0..value.len())] ^= 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_reported_as_damage_and_never_written_to() {
    let setup = Setup::bundled().await;
    let (code_, first) = setup.sync_json();
    assert!(code_ == 0 || code_ == 3, "{first}");
    damage(&setup.journal_dir().join("sled"), &personal_values(5)[1], 7);

    let out = setup.run(&["journal", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let verification = report_of(&out);
    let problem = &verification["problems"][0];
    assert_eq!(problem["kind"], "corrupt", "{verification}");
    // sled drops what follows a damaged spot of its log when it opens: the marker's
    // record of how far the journal had got tells.
    let what = problem["what"].as_str().unwrap();
    assert!(
        what.contains("are gone") && what.contains("backup"),
        "{verification}"
    );
    assert!(problem["seq"].as_u64().unwrap() < 318, "{verification}");
    // And it stays told: opening the damaged files did not make them look whole.
    assert_eq!(setup.run(&["journal", "verify"]).status.code(), Some(7));

    // Opter changes, so a sync would write; it refuses before sending anything.
    let mut changed = bundled_customers()[0].clone();
    changed["name"] = "Ändrad Medan Skadad AB".into();
    setup.put_opter_customer(&changed).await;
    let customers = setup.register().len();
    setup.clear_requests().await;
    for command in [
        &["sync", "--full"][..],
        &["replay", "--failed", "--reason", "r"],
    ] {
        let out = setup.run(command);
        assert_eq!(out.status.code(), Some(7), "{command:?}: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("cannot be read whole") && said.contains("journal restore"),
            "{said}"
        );
    }
    let out = purge(&setup, &code(3));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(setup.api_requests(), Vec::<Value>::new(), "nothing sent");
    assert_eq!(setup.register().len(), customers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_off_is_told_as_unfinished_and_running_it_again_completes_it() {
    let setup = Setup::new(bundled_customers()[..3].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    // The register takes its time over the erasure, so the purge is killed after its
    // suppression and before the register's answer.
    setup.sandbox.set_faults(Faults {
        latency_ms: 30_000,
        ..Faults::default()
    });
    let target = code(1);
    let mut child = setup
        .command(&[
            "purge",
            "--customer",
            &target,
            "--reason",
            "erasure",
            "--yes",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let file = setup.journal_dir().join("suppressions");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .any(|l| l == target)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the purge never suppressed"
        );
        assert!(child.try_wait().unwrap().is_none(), "the purge ended early");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    setup.sandbox.set_faults(Faults::default());

    let out = setup.run(&["journal", "verify"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("an unfinished purge of {target}: run purge again")),
        "{said}"
    );
    let verification = report_of(&setup.run(&["journal", "verify", "--json"]));
    assert!(
        verification["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["kind"] == "unfinished"),
        "{verification}"
    );
    // Meanwhile it is held.
    let mut changed = bundled_customers()[1].clone();
    changed["name"] = "Ändrad Under Radering AB".into();
    setup.put_opter_customer(&changed).await;
    setup.clear_requests().await;
    let report = report_of(&setup.run(&["sync", "--full", "--json"]));
    assert_eq!(report["suppressed"], 1, "{report}");
    assert_eq!(about(&setup, &target), 0);

    let out = purge(&setup, &target);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(setup.register_customer(&target).is_none());
    let out = setup.run(&["journal", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[cfg(unix)]
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, meta.permissions().mode() & 0o777));
        }
    }
    out
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_files_are_owner_only_and_loose_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    let dir = setup.journal_dir();
    let owner_only = |what: &str| {
        let all = modes(&dir);
        for name in [
            "sled/db",
            "journal.lock",
            "suppressions",
            "journal.marker",
            "credentials",
        ] {
            assert!(
                all.iter().any(|(p, _)| p.ends_with(name)),
                "{what}: no {name}"
            );
        }
        for (path, mode) in all {
            let wanted = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, wanted, "{what}: {} is {mode:o}", path.display());
        }
    };
    owner_only("as created");
    // A grant file copied in at 0644, and files an older version left readable.
    let grant = std::fs::read_dir(dir.join("credentials"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("the login is stored");
    for loose in [
        grant,
        dir.join("sled/db"),
        dir.join("journal.lock"),
        dir.join("suppressions"),
    ] {
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir.join("sled"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    owner_only("after the next open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_where_a_journal_folder_belongs_is_named_with_what_to_do() {
    let setup = Setup::new(bundled_customers()[..2].to_vec()).await;
    let dir = setup.journal_dir();
    std::fs::write(&dir, "not a folder").unwrap();
    let out = setup.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    let wanted = format!(
        "journal folder {}: a file stands where a folder belongs; move it away, or set \
         [journal] path to a folder",
        dir.display()
    );
    assert!(said.contains(&wanted), "{said}");
    assert_eq!(setup.api_requests(), Vec::<Value>::new(), "nothing sent");

    // Inside it: a file where sled's folder belongs.
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(setup.run(&["sync"]).status.code(), Some(0));
    std::fs::remove_dir_all(dir.join("sled")).unwrap();
    std::fs::write(dir.join("sled"), "not a folder").unwrap();
    setup.clear_requests().await;
    let out = setup.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    let wanted = format!(
        "journal folder {}: a file stands where a folder belongs",
        dir.join("sled").display()
    );
    assert!(said.contains(&wanted), "{said}");
    assert_eq!(setup.api_requests(), Vec::<Value>::new(), "nothing sent");
}
