//! The sync journal: a sled database that remembers what was sent to the register, so
//! unchanged customers are skipped and every write can be accounted for.
//!
//! Layout (one folder, owner-only):
//! - `sled/`: trees `state` (sink/code -> what was last sent), `events` (u64 BE seq ->
//!   one event per write), `by_customer` (code/seq index), `runs` (run id -> summary),
//!   `intents` (sink/code -> a write about to be sent), `meta` (next sequence number).
//! - `credentials/`: secrets the sinks must keep (rotated refresh tokens); never in sled.
//!
//! Architecture invariant: sled is used nowhere else; all writes that belong together
//! (event, its index entry, state) go in one sled transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    /// The customer already existed in the register with our number; we took its id.
    Adopt,
    /// An update was interrupted (its outcome unknown); we read what the register holds.
    Settle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    /// The register refused the content (validation, conflict): fix data, retried next run.
    Rejected,
    /// The call did not succeed for a transient reason (after retries): retried next run.
    Failed,
}

/// One write (or attempted write) to a register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub run_id: String,
    pub actor: String,
    pub customer: String,
    pub sink: String,
    pub operation: Operation,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// The register's own error code, e.g. eAccounting's `4000`.
    pub error_code: Option<String>,
    /// The register's message, or ours for failures without a response.
    pub message: Option<String>,
    pub remote_id: Option<String>,
    /// Names of the register fields sent.
    pub fields: Vec<String>,
    /// Values sent, keyed by register field (permitted fields and constants only).
    pub values: Option<BTreeMap<String, Value>>,
}

/// What the journal knows about one customer in one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub remote_id: String,
    /// Hash of what was last sent successfully.
    pub content_hash: String,
    pub last_seq: u64,
}

/// A write about to be sent, made durable before the request leaves. An intent still
/// open at the start of a run means the previous run died not knowing the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub operation: Operation,
    /// SHA-256 of sink, customer code and content hash: names this exact write.
    pub key: String,
    /// The register's number for the customer: how it is found again.
    pub number: String,
    pub content_hash: String,
    pub run_id: String,
    pub started: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub customer: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub sink: String,
    pub started: DateTime<Utc>,
    /// `None` while running, or when the run was cut short.
    pub finished: Option<DateTime<Utc>>,
    pub counts: Counts,
    pub rejections: Vec<Rejection>,
    /// A short reason when the run could not finish.
    pub error: Option<String>,
}

pub struct Journal {
    dir: PathBuf,
    db: sled::Db,
    state: sled::Tree,
    events: sled::Tree,
    by_customer: sled::Tree,
    runs: sled::Tree,
    intents: sled::Tree,
    meta: sled::Tree,
}

const NEXT_SEQ: &[u8] = b"next_seq";

fn state_key(sink: &str, code: &str) -> Vec<u8> {
    format!("{sink}/{code}").into_bytes()
}

fn customer_key(code: &str, seq: u64) -> Vec<u8> {
    let mut key = code.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("journal {what} entry is unreadable"))
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, readable by its owner only.
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create journal folder {}", dir.display()))?;
        owner_only(dir, 0o700)?;
        let db = open_sled(&dir.join("sled")).with_context(|| {
            format!(
                "cannot open the journal in {} (is another opter-visma-sync using it?)",
                dir.display()
            )
        })?;
        let tree = |name: &str| db.open_tree(name).context("cannot open journal tree");
        Ok(Journal {
            dir: dir.to_path_buf(),
            state: tree("state")?,
            events: tree("events")?,
            by_customer: tree("by_customer")?,
            runs: tree("runs")?,
            intents: tree("intents")?,
            meta: tree("meta")?,
            db,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self, sink: &str, code: &str) -> anyhow::Result<Option<State>> {
        self.state
            .get(state_key(sink, code))?
            .map(|v| decode(&v, "state"))
            .transpose()
    }

    /// Appends `event` (its `seq` is assigned here), sets the customer's state when
    /// given, and (with `close_intent`) closes the customer's open intent, atomically. Returns the sequence
    /// number. Durable after `flush`.
    pub fn record(
        &self,
        event: Event,
        state: Option<State>,
        close_intent: bool,
    ) -> anyhow::Result<u64> {
        let trees = (
            &self.events,
            &self.by_customer,
            &self.state,
            &self.intents,
            &self.meta,
        );
        let result = trees.transaction(|(events, by_customer, states, intents, meta)| {
            let seq = match meta.get(NEXT_SEQ)? {
                Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                    ConflictableTransactionError::Abort("corrupt sequence counter")
                })?),
                None => 1,
            };
            meta.insert(NEXT_SEQ, &(seq + 1).to_be_bytes())?;
            let event = Event {
                seq,
                ..event.clone()
            };
            let bytes = serde_json::to_vec(&event).expect("events serialise");
            events.insert(&seq.to_be_bytes(), bytes)?;
            by_customer.insert(customer_key(&event.customer, seq), &[])?;
            let key = state_key(&event.sink, &event.customer);
            if let Some(state) = &state {
                let state = State {
                    last_seq: seq,
                    ..state.clone()
                };
                states.insert(
                    key.as_slice(),
                    serde_json::to_vec(&state).expect("state serialises"),
                )?;
            }
            if close_intent {
                intents.remove(key)?;
            }
            Ok(seq)
        });
        match result {
            Ok(seq) => Ok(seq),
            Err(TransactionError::Abort(why)) => Err(anyhow::anyhow!("journal: {why}")),
            Err(TransactionError::Storage(e)) => Err(e).context("journal write failed"),
        }
    }

    /// Writes intents for a batch of customers; durable after one `flush`.
    pub fn open_intents(&self, sink: &str, intents: &[(String, Intent)]) -> anyhow::Result<()> {
        let mut batch = sled::Batch::default();
        for (code, intent) in intents {
            batch.insert(
                state_key(sink, code),
                serde_json::to_vec(intent).expect("intents serialise"),
            );
        }
        self.intents
            .apply_batch(batch)
            .context("journal write failed")
    }

    /// Intents left open (by a run that died), as (customer code, intent).
    pub fn pending_intents(&self, sink: &str) -> anyhow::Result<Vec<(String, Intent)>> {
        let prefix = format!("{sink}/");
        self.intents
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                let code = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((code, decode(&v, "intent")?))
            })
            .collect()
    }

    /// Closes an intent without an event: the write is known not to have happened.
    pub fn close_intent(&self, sink: &str, code: &str) -> anyhow::Result<()> {
        self.intents.remove(state_key(sink, code))?;
        Ok(())
    }

    pub fn save_run(&self, run: &Run) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(run).expect("runs serialise");
        self.runs.insert(run.id.as_bytes(), bytes)?;
        Ok(())
    }

    /// Makes everything written so far durable (one fsync for a whole batch).
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.db
            .flush_async()
            .await
            .context("journal flush failed")?;
        Ok(())
    }

    /// Runs, oldest first (run ids sort by start time).
    pub fn runs(&self) -> anyhow::Result<Vec<Run>> {
        self.runs.iter().map(|kv| decode(&kv?.1, "run")).collect()
    }

    /// Events, newest first, optionally only one customer's or one run's.
    pub fn events(&self, customer: Option<&str>, run: Option<&str>) -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::new();
        let matches = |e: &Event| run.is_none_or(|r| e.run_id == r);
        if let Some(code) = customer {
            let mut prefix = code.as_bytes().to_vec();
            prefix.push(0);
            for kv in self.by_customer.scan_prefix(prefix).rev() {
                let key = kv?.0;
                let seq = &key[key.len() - 8..];
                if let Some(v) = self.events.get(seq)? {
                    let e: Event = decode(&v, "event")?;
                    if matches(&e) {
                        out.push(e);
                    }
                }
            }
        } else {
            for kv in self.events.iter().rev() {
                let e: Event = decode(&kv?.1, "event")?;
                if matches(&e) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Folder for secrets a sink must persist; created owner-only.
    pub fn credentials_dir(&self) -> anyhow::Result<PathBuf> {
        credentials_dir(&self.dir)
    }
}

/// The credentials folder of the journal in `journal_dir`, created owner-only, without
/// opening sled (so `auth` works while a sync holds the journal).
pub fn credentials_dir(journal_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(journal_dir)?;
    owner_only(journal_dir, 0o700)?;
    let dir = journal_dir.join("credentials");
    std::fs::create_dir_all(&dir)?;
    owner_only(&dir, 0o700)?;
    Ok(dir)
}

/// Opens sled, waiting up to a second for the file lock: a journal closed a moment ago
/// in this process is released by sled's background thread shortly after the drop.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let mut tries = 0;
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if tries < 50 && e.to_string().contains("could not acquire lock") =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Restricts a path to its owner (no-op where permissions are not Unix-style).
pub fn owner_only(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(customer: &str, run: &str) -> Event {
        Event {
            seq: 0,
            time: Utc::now(),
            run_id: run.into(),
            actor: "sync".into(),
            customer: customer.into(),
            sink: "eaccounting".into(),
            operation: Operation::Create,
            outcome: Outcome::Succeeded,
            http_status: Some(201),
            error_code: None,
            message: None,
            remote_id: Some("id-1".into()),
            fields: vec!["Name".into()],
            values: None,
        }
    }

    #[tokio::test]
    async fn events_state_and_indexes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            let state = State {
                remote_id: "id-1".into(),
                content_hash: "h".into(),
                last_seq: 0,
            };
            assert_eq!(j.record(event("K1", "r1"), Some(state), true).unwrap(), 1);
            assert_eq!(j.record(event("K2", "r1"), None, true).unwrap(), 2);
            assert_eq!(j.record(event("K1", "r2"), None, true).unwrap(), 3);
            j.flush().await.unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let s = j.state("eaccounting", "K1").unwrap().unwrap();
        assert_eq!((s.remote_id.as_str(), s.last_seq), ("id-1", 1));
        assert_eq!(j.state("eaccounting", "K2").unwrap(), None);
        let seqs = |v: Vec<Event>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(j.events(None, None).unwrap()), vec![3, 2, 1]);
        assert_eq!(seqs(j.events(Some("K1"), None).unwrap()), vec![3, 1]);
        assert_eq!(seqs(j.events(Some("K1"), Some("r1")).unwrap()), vec![1]);
        assert_eq!(seqs(j.events(Some("K"), None).unwrap()), Vec::<u64>::new());
    }

    #[cfg(unix)]
    #[test]
    fn the_folder_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let j = Journal::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&j.credentials_dir().unwrap()), 0o700);
    }
}
