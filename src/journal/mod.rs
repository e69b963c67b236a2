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

pub mod chain;
mod encoding;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use chain::Chain;

/// One event to append, with the state it sets and whether it closes the intent.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event: Event,
    pub state: Option<State>,
    pub close_intent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    /// The customer already existed in the register with our number; we took its id.
    Adopt,
    /// An update was interrupted (its outcome unknown); we read what the register holds.
    Settle,
    /// Support: the customer was deleted from the register (GDPR erasure).
    Erase,
    /// Support: the register refused deletion; personal fields were overwritten instead.
    Anonymise,
    /// Support: a suppression (after a purge) was lifted.
    Unsuppress,
    /// Support: updates stopped for the customer (GDPR restriction).
    Restrict,
    /// Support: updates resumed.
    Unrestrict,
    /// Support: the customer was sent again although unchanged.
    Replay,
    /// Support: everything held about the customer was exported (GDPR access).
    Export,
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

// Stored by position: append new variants to these lists, never reorder them.
impl encoding::Variants for Operation {
    const ALL: &'static [Self] = &[
        Operation::Create,
        Operation::Update,
        Operation::Adopt,
        Operation::Settle,
        Operation::Erase,
        Operation::Anonymise,
        Operation::Unsuppress,
        Operation::Restrict,
        Operation::Unrestrict,
        Operation::Replay,
        Operation::Export,
    ];
}

impl encoding::Variants for Outcome {
    const ALL: &'static [Self] = &[Outcome::Succeeded, Outcome::Rejected, Outcome::Failed];
}

/// The journal's own name for an operation or outcome (`create`, `succeeded`...).
pub fn name_of(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One write (or attempted write) to a register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    #[serde(with = "encoding::time")]
    pub time: DateTime<Utc>,
    #[serde(with = "encoding::run_id")]
    pub run_id: String,
    #[serde(with = "encoding::word")]
    pub actor: String,
    pub customer: String,
    #[serde(with = "encoding::word")]
    pub sink: String,
    #[serde(with = "encoding::variant")]
    pub operation: Operation,
    #[serde(with = "encoding::variant")]
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// The register's own error code, e.g. eAccounting's `4000`.
    pub error_code: Option<String>,
    /// The register's message, or ours for failures without a response.
    pub message: Option<String>,
    #[serde(default, with = "encoding::id_text::opt")]
    pub remote_id: Option<String>,
    /// Names of the register fields sent.
    pub fields: Vec<String>,
    /// Values sent, keyed by register field (permitted fields only). `None` when
    /// nothing was sent, or once redacted (retention, purge).
    #[serde(default, with = "encoding::field_values")]
    pub values: Option<BTreeMap<String, Value>>,
    /// Hash chain and values digest (see `chain`).
    #[serde(default)]
    pub chain: Chain,
}

/// One thing `verify` found wrong, at the sequence number where it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub seq: u64,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub events_checked: u64,
    pub problems: Vec<Problem>,
}

/// What the journal knows about one customer in one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(with = "encoding::id_text")]
    pub remote_id: String,
    /// Hash of what was last sent successfully.
    #[serde(with = "encoding::hex_digest")]
    pub content_hash: String,
    pub last_seq: u64,
}

/// What the journal holds of a customer compared with what would be sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Nothing was ever sent (or the customer was erased).
    Never,
    /// What was last sent has the same content hash.
    Same,
    /// The stored state, decoded: what was last sent differs (and, for a replay, which
    /// sends whatever was sent before, every stored state).
    Other(State),
}

/// A write about to be sent, made durable before the request leaves. An intent still
/// open at the start of a run means the previous run died not knowing the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    #[serde(with = "encoding::variant")]
    pub operation: Operation,
    /// SHA-256 of sink, run, customer code and content hash: names this exact write
    /// (and, per request, e-conomic's `Idempotency-Key`).
    #[serde(with = "encoding::hex_digest")]
    pub key: String,
    /// The register's number for the customer: how it is found again.
    pub number: String,
    #[serde(with = "encoding::hex_digest")]
    pub content_hash: String,
    #[serde(with = "encoding::run_id")]
    pub run_id: String,
    #[serde(with = "encoding::time")]
    pub started: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Not sent: updates stopped by `restrict`.
    #[serde(default)]
    pub restricted: u64,
    /// Not sent: purged, and suppressed until `unsuppress`.
    #[serde(default)]
    pub suppressed: u64,
}

/// A support hold on one customer (suppression after a purge, or a restriction). Holds
/// no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub since: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    /// For a purge: what happened in the register (deleted, anonymised, not present).
    #[serde(default)]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// Purged: never sent again until lifted.
    Suppressed,
    /// Restricted: kept, but no updates are sent.
    Restricted,
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
    /// The source cursor: the highest `updated` of the customers this run read (for an
    /// incremental read, at least the cursor it started from). The next run reads what
    /// changed since then; `None` when nothing read had an `updated`.
    #[serde(default)]
    pub cursor: Option<DateTime<Utc>>,
    /// Fingerprint of the mapping (and register rules) this run used: a run with another
    /// mapping must read everything, since every customer's content may have changed.
    #[serde(default)]
    pub mapping: Option<String>,
    /// A support replay of chosen customers: says nothing about the others, so the next
    /// sync does not take it as the last full picture.
    #[serde(default)]
    pub replay: bool,
}

pub struct Journal {
    dir: PathBuf,
    db: sled::Db,
    state: sled::Tree,
    events: sled::Tree,
    by_customer: sled::Tree,
    runs: sled::Tree,
    intents: sled::Tree,
    suppressed: sled::Tree,
    restricted: sled::Tree,
    meta: sled::Tree,
    /// Exclusive lock on `journal.lock`, held while open (dropped last).
    _lock: std::fs::File,
}

/// Names the one entry that holds a batch's intents: `{sink}#{run}#{n}`, apart from
/// single intents (`{sink}/{code}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentBatch {
    sink: String,
    key: String,
    /// How many intents the entry holds (set by `open_intents`).
    len: usize,
}

impl IntentBatch {
    pub fn new(sink: &str, run_id: &str, number: u64) -> IntentBatch {
        IntentBatch {
            sink: sink.to_string(),
            key: format!("{sink}#{run_id}#{number:08}"),
            len: 0,
        }
    }
}

/// The part of the journal that appends events. Cheap to clone (sled's handles are), so
/// a batch's outcomes can be committed on another thread while the next batch's
/// requests are in flight. Only valid while its `Journal` is open.
#[derive(Clone)]
pub struct Recorder {
    db: sled::Db,
    events: sled::Tree,
    by_customer: sled::Tree,
    state: sled::Tree,
    intents: sled::Tree,
    meta: sled::Tree,
}

const NEXT_SEQ: &[u8] = b"next_seq";
/// Why a commit starts over: another event was appended after it was sealed.
const CHAIN_MOVED: &str = "the chain moved on while a batch was sealed";
/// How often a commit seals again before giving up: one writer besides the commits
/// (adoptions, one at a time) moves the chain rarely; endless moves are a fault.
const SEAL_ATTEMPTS: usize = 1000;
/// Hash of the newest event: the chain's head.
const CHAIN_HEAD: &[u8] = b"chain_head";
/// Set when a hold is lifted: the next sync must read every customer.
const FORCE_FULL_READ: &[u8] = b"force_full_read";
/// When the last complete full read started.
const LAST_FULL_READ: &[u8] = b"last_full_read";
/// Set in the same flush as any removal of values: the files still hold copies until
/// the journal is rewritten (`compact`), which clears it.
const COMPACTION_OWED: &[u8] = b"compaction_owed";
/// Events below this sequence number are past retention already.
const RETENTION_WATERMARK: &[u8] = b"retention_watermark";

fn state_key(sink: &str, code: &str) -> Vec<u8> {
    format!("{sink}/{code}").into_bytes()
}

/// Calls `f` with `state_key(sink, code)`, built on the stack when it fits: planning looks
/// up every customer read.
fn with_state_key<R>(sink: &str, code: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buffer = [0u8; 128];
    let len = sink.len() + 1 + code.len();
    if len > buffer.len() {
        return f(&state_key(sink, code));
    }
    buffer[..sink.len()].copy_from_slice(sink.as_bytes());
    buffer[sink.len()] = b'/';
    buffer[sink.len() + 1..len].copy_from_slice(code.as_bytes());
    f(&buffer[..len])
}

fn customer_key(code: &str, seq: u64) -> Vec<u8> {
    let mut key = code.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    encoding::decode(bytes).map_err(|e| anyhow::anyhow!("journal {what} entry is unreadable: {e}"))
}

/// Whether an operation sets or lifts a hold: (is it a suppression, does it set it).
fn hold_change(operation: Operation) -> Option<(bool, bool)> {
    match operation {
        Operation::Erase | Operation::Anonymise => Some((true, true)),
        Operation::Unsuppress => Some((true, false)),
        Operation::Restrict => Some((false, true)),
        Operation::Unrestrict => Some((false, false)),
        _ => None,
    }
}

/// Stores an event. Its field list is left out when it is just the keys of its values
/// (the usual case), and `decode_event` restores it.
fn encode_event(event: &mut Event) -> Vec<u8> {
    let implied = event
        .values
        .as_ref()
        .is_some_and(|v| v.keys().eq(event.fields.iter()));
    if !implied {
        return encoding::encode(event);
    }
    let fields = std::mem::take(&mut event.fields);
    let bytes = encoding::encode(event);
    event.fields = fields;
    bytes
}

fn decode_event(bytes: &[u8]) -> anyhow::Result<Event> {
    let mut event: Event = decode(bytes, "event")?;
    if event.fields.is_empty() {
        if let Some(values) = &event.values {
            event.fields = values.keys().cloned().collect();
        }
    }
    Ok(event)
}

/// The stored next sequence number (1 in a new journal); `None` when unreadable.
fn sequence_number(stored: Option<&[u8]>) -> Option<u64> {
    match stored {
        None => Some(1),
        Some(bytes) => bytes.try_into().ok().map(u64::from_be_bytes),
    }
}

/// One sealed event, encoded for the transaction that appends it.
struct Row {
    seq: u64,
    event: Vec<u8>,
    /// `{code}\0{seq}` in the customer index.
    index: Vec<u8>,
    /// `{sink}/{code}`: the state's key, and the customer's own intent's.
    key: Vec<u8>,
    state: Option<Vec<u8>>,
    close: bool,
}

impl Recorder {
    /// Records several entries, in order, in one sled transaction: a batch of outcomes
    /// costs one log write instead of one per customer. Durable after `flush`.
    pub fn record_all(&self, entries: Vec<Entry>) -> anyhow::Result<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.transaction(entries, None)
    }

    /// Records a batch's outcomes and retires its intents entry (see `open_intents`), in
    /// one transaction: the intents of the `closed` customers are closed; the others
    /// (their outcome unknown) stay open, each under its own key, for the next run to
    /// settle.
    pub fn record_batch(
        &self,
        entries: Vec<Entry>,
        batch: &IntentBatch,
        closed: &[String],
    ) -> anyhow::Result<Vec<u64>> {
        self.transaction(entries, Some((batch, closed)))
    }

    fn transaction(
        &self,
        mut entries: Vec<Entry>,
        batch: Option<(&IntentBatch, &[String])>,
    ) -> anyhow::Result<Vec<u64>> {
        // A batch's intents live in its batch entry; only customers with an intent of
        // their own (left by an earlier run, or a batch whose outcome was unknown) need a
        // removal, and looking up the others would cost a read each. Read before the
        // transaction: such intents are written only by commits, which run one at a time.
        let own_intents: std::collections::HashSet<Vec<u8>> = match batch {
            Some((batch, _)) => self
                .intents
                .scan_prefix(state_key(&batch.sink, ""))
                .keys()
                .map(|k| k.map(|k| k.to_vec()))
                .collect::<sled::Result<_>>()
                .context("journal read failed")?,
            None => Default::default(),
        };
        let trees = (
            &self.events,
            &self.by_customer,
            &self.state,
            &self.intents,
            &self.meta,
        );
        for _ in 0..SEAL_ATTEMPTS {
            // Sealed and encoded before the transaction, which sled may run more than
            // once, so no entry is copied for it. Another writer (an adoption recorded
            // while a batch commits) can move the chain on meanwhile: the transaction
            // then aborts and the entries are sealed again after the new head.
            let (first, head) = self.chain_position()?;
            let mut tip = String::from_utf8_lossy(&head).into_owned();
            let mut rows = Vec::with_capacity(entries.len());
            for (seq, entry) in (first..).zip(entries.iter_mut()) {
                let event = &mut entry.event;
                event.seq = seq;
                chain::seal(event, &tip);
                tip.clone_from(&event.chain.hash);
                let key = state_key(&event.sink, &event.customer);
                rows.push(Row {
                    seq,
                    index: customer_key(&event.customer, seq),
                    event: encode_event(event),
                    state: entry.state.as_mut().map(|state| {
                        state.last_seq = seq;
                        encoding::encode(state)
                    }),
                    close: entry.close_intent && (batch.is_none() || own_intents.contains(&key)),
                    key,
                });
            }
            let result = trees.transaction(|(events, by_customer, states, intents, meta)| {
                if let Some((batch, closed)) = batch {
                    let stored = intents.remove(batch.key.as_bytes())?;
                    // Usually every intent closes, and the entry need not be read.
                    let all_closed = closed.len() >= batch.len;
                    if stored.is_none() && !all_closed {
                        // Open intents would be lost without a trace.
                        return Err(ConflictableTransactionError::Abort(
                            "a batch's intents entry is missing",
                        ));
                    }
                    if let Some(stored) = stored.filter(|_| !all_closed) {
                        let open: Vec<(String, Intent)> =
                            encoding::decode(&stored).map_err(|_| {
                                ConflictableTransactionError::Abort("unreadable intents entry")
                            })?;
                        for (code, intent) in open.iter().filter(|(c, _)| !closed.contains(c)) {
                            intents
                                .insert(state_key(&batch.sink, code), encoding::encode(intent))?;
                        }
                    }
                }
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let next = meta.get(NEXT_SEQ)?;
                let moved = sequence_number(next.as_deref()) != Some(first)
                    || meta.get(CHAIN_HEAD)?.as_deref().unwrap_or_default() != head.as_slice();
                if moved {
                    return Err(ConflictableTransactionError::Abort(CHAIN_MOVED));
                }
                for row in &rows {
                    by_customer.insert(row.index.as_slice(), &[])?;
                    events.insert(&row.seq.to_be_bytes(), row.event.as_slice())?;
                    if let Some(state) = &row.state {
                        states.insert(row.key.as_slice(), state.as_slice())?;
                    }
                    if row.close {
                        intents.remove(row.key.as_slice())?;
                    }
                }
                meta.insert(NEXT_SEQ, &(first + rows.len() as u64).to_be_bytes())?;
                meta.insert(CHAIN_HEAD, tip.as_bytes())?;
                Ok(rows.iter().map(|r| r.seq).collect())
            });
            match result {
                Ok(seqs) => return Ok(seqs),
                Err(TransactionError::Abort(why)) if why == CHAIN_MOVED => continue,
                Err(TransactionError::Abort(why)) => return Err(anyhow::anyhow!("journal: {why}")),
                Err(TransactionError::Storage(e)) => return Err(e).context("journal write failed"),
            }
        }
        Err(anyhow::anyhow!(
            "journal: other writes kept moving the chain on while a batch was committed"
        ))
    }

    /// The next sequence number and the chain's head hash, as stored.
    fn chain_position(&self) -> anyhow::Result<(u64, Vec<u8>)> {
        let next = self.meta.get(NEXT_SEQ)?;
        let first = sequence_number(next.as_deref())
            .ok_or_else(|| anyhow::anyhow!("journal: corrupt sequence counter"))?;
        let head = self.meta.get(CHAIN_HEAD)?.map(|h| h.to_vec());
        Ok((first, head.unwrap_or_default()))
    }

    /// Writes a batch's intents as one entry (one log write, where one per customer
    /// cost as much as the rest of the batch's journal work); durable after one `flush`.
    pub fn open_intents(
        &self,
        batch: &mut IntentBatch,
        intents: &[(String, Intent)],
    ) -> anyhow::Result<()> {
        batch.len = intents.len();
        self.intents
            .insert(batch.key.as_bytes(), encoding::encode(&intents))
            .context("journal write failed")?;
        Ok(())
    }

    /// Removes a batch's intents entry: none of its requests was sent.
    pub fn drop_intents(&self, batch: &IntentBatch) -> anyhow::Result<()> {
        self.intents
            .remove(batch.key.as_bytes())
            .context("journal write failed")?;
        Ok(())
    }

    /// Makes everything written so far durable, blocking the calling thread.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.db.flush().context("journal flush failed")?;
        Ok(())
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, readable by its owner only.
    /// Holds the journal's lock until dropped: one process at a time.
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create journal folder {}", dir.display()))?;
        owner_only(dir, 0o700)?;
        let lock = lock_journal(dir)?;
        recover_compaction(dir)?;
        let journal = Self::open_locked(dir, lock)?;
        // Values were removed but the files were not rewritten (a crash in between):
        // finish that first, so no copy survives.
        if journal.compaction_owed()? {
            let lock = journal.into_lock()?;
            compact_locked(dir)?;
            return Self::open_locked(dir, lock);
        }
        Ok(journal)
    }

    /// Closes the database (every handle, so sled's files are released) but keeps the
    /// lock: a duplicated descriptor shares the lock, which outlives the closed one.
    fn into_lock(self) -> anyhow::Result<std::fs::File> {
        let lock = self._lock.try_clone()?;
        drop(self);
        Ok(lock)
    }

    fn open_locked(dir: &Path, lock: std::fs::File) -> anyhow::Result<Journal> {
        let db = open_sled(&dir.join("sled"))
            .with_context(|| format!("cannot open the journal in {}", dir.display()))?;
        let tree = |name: &str| db.open_tree(name).context("cannot open journal tree");
        Ok(Journal {
            dir: dir.to_path_buf(),
            state: tree("state")?,
            events: tree("events")?,
            by_customer: tree("by_customer")?,
            runs: tree("runs")?,
            intents: tree("intents")?,
            suppressed: tree("suppressed")?,
            restricted: tree("restricted")?,
            meta: tree("meta")?,
            db,
            _lock: lock,
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

    /// The customer's state, unless what was last sent has `content_hash`: planning asks
    /// this of every customer read, and most are unchanged, so only their stored hash is
    /// read (compared as stored, without decoding the rest).
    pub fn state_unless_sent(
        &self,
        sink: &str,
        code: &str,
        content_hash: &str,
    ) -> anyhow::Result<Sent> {
        let Some(stored) = with_state_key(sink, code, |key| self.state.get(key))? else {
            return Ok(Sent::Never);
        };
        if encoding::state_hash_is(&stored, content_hash) {
            return Ok(Sent::Same);
        }
        let state: State = decode(&stored, "state")?;
        Ok(if state.content_hash == content_hash {
            Sent::Same
        } else {
            Sent::Other(state)
        })
    }

    /// Appends `event` (its `seq` is assigned here), sets the customer's state when
    /// given, and (with `close_intent`) closes the customer's open intent, atomically.
    /// Returns the sequence number. Durable after `flush`.
    pub fn record(
        &self,
        event: Event,
        state: Option<State>,
        close_intent: bool,
    ) -> anyhow::Result<u64> {
        let seqs = self.record_all(vec![Entry {
            event,
            state,
            close_intent,
        }])?;
        Ok(seqs
            .into_iter()
            .next()
            .expect("one entry, one sequence number"))
    }

    /// Records several entries, in order, in one sled transaction: a batch of outcomes
    /// costs one log write instead of one per customer. Durable after `flush`.
    pub fn record_all(&self, entries: Vec<Entry>) -> anyhow::Result<Vec<u64>> {
        self.recorder().record_all(entries)
    }

    /// A handle that records events, for another thread.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            db: self.db.clone(),
            events: self.events.clone(),
            by_customer: self.by_customer.clone(),
            state: self.state.clone(),
            intents: self.intents.clone(),
            meta: self.meta.clone(),
        }
    }

    /// Intents left open (by a run that died), as (customer code, intent).
    pub fn pending_intents(&self, sink: &str) -> anyhow::Result<Vec<(String, Intent)>> {
        self.split_intent_batches(sink)?;
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

    /// Rewrites the batch entries a dead run left as one entry per customer (one sled
    /// batch, atomic), so that each can be settled and closed on its own.
    fn split_intent_batches(&self, sink: &str) -> anyhow::Result<()> {
        let mut split = sled::Batch::default();
        let mut any = false;
        for kv in self.intents.scan_prefix(format!("{sink}#").as_bytes()) {
            let (key, value) = kv?;
            let open: Vec<(String, Intent)> = decode(&value, "intents")?;
            for (code, intent) in open {
                split.insert(state_key(sink, &code), encoding::encode(&intent));
            }
            split.remove(key);
            any = true;
        }
        if any {
            self.intents
                .apply_batch(split)
                .context("journal write failed")?;
        }
        Ok(())
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

    /// The newest run for `sink` that finished (was not cut short or killed), if any.
    pub fn last_finished_run(&self, sink: &str) -> anyhow::Result<Option<Run>> {
        for kv in self.runs.iter().rev() {
            let run: Run = decode(&kv?.1, "run")?;
            if run.sink == sink && run.finished.is_some() && !run.replay {
                return Ok(Some(run));
            }
        }
        Ok(None)
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
                    let e = decode_event(&v)?;
                    if matches(&e) {
                        out.push(e);
                    }
                }
            }
        } else {
            for kv in self.events.iter().rev() {
                let e = decode_event(&kv?.1)?;
                if matches(&e) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Walks the hash chain and the indexes; returns what is wrong, first problem first.
    ///
    /// Streams the events once, keeping only each event's customer code and the few
    /// events that set or lift holds, so memory stays small however long the journal.
    pub fn verify(&self) -> anyhow::Result<Verification> {
        let mut problems = Vec::new();
        let mut problem = |seq: u64, what: String| problems.push(Problem { seq, what });
        // States first (one small entry per customer): each must match the event it names.
        let mut states: std::collections::HashMap<u64, Vec<(String, State)>> = Default::default();
        for kv in self.state.iter() {
            let (key, value) = kv?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match encoding::decode::<State>(&value) {
                Ok(state) => states.entry(state.last_seq).or_default().push((key, state)),
                Err(_) => problem(0, format!("state {key} is unreadable")),
            }
        }
        let state_problem = |key: &str| {
            format!("does not match the state recorded for {key} (the state was edited)")
        };
        let (mut expected, mut prev_hash, mut checked) = (1u64, String::new(), 0u64);
        // (sequence number, customer code) of each event, in key order: ascending.
        let mut owners: Vec<(u64, Box<str>)> = Vec::new();
        let mut holds = Vec::new();
        for kv in self.events.iter() {
            let (key, value) = kv?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap_or_default());
            if seq > expected {
                problem(
                    expected,
                    format!("is missing (events {expected} to {} were removed)", seq - 1),
                );
            }
            expected = seq.saturating_add(1);
            checked += 1;
            let mut event = match decode_event(&value) {
                Ok(e) => e,
                Err(_) => {
                    problem(seq, "is unreadable".into());
                    continue;
                }
            };
            if event.seq != seq {
                problem(
                    seq,
                    format!("holds event {} (events were reordered)", event.seq),
                );
            } else if let Some(what) = chain::check(&mut event, &prev_hash) {
                problem(seq, what);
            }
            for (key, state) in states.remove(&seq).unwrap_or_default() {
                let matches = format!("{}/{}", event.sink, event.customer) == key
                    && event.outcome == Outcome::Succeeded
                    && event.remote_id.as_deref() == Some(state.remote_id.as_str())
                    && event
                        .values
                        .as_ref()
                        .is_none_or(|v| crate::hash::content_hash(v) == state.content_hash);
                if !matches {
                    problem(seq, state_problem(&key));
                }
            }
            if hold_change(event.operation).is_some() {
                holds.push((seq, event.customer.clone(), event.operation));
            }
            prev_hash = event.chain.hash;
            owners.push((seq, event.customer.into_boxed_str()));
        }
        for (seq, entries) in states {
            for (key, _) in entries {
                problem(seq, state_problem(&key));
            }
        }
        let next = self
            .meta
            .get(NEXT_SEQ)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes);
        if next.unwrap_or(1) != expected {
            problem(
                expected,
                "is missing: the newest events were removed".into(),
            );
        }
        self.verify_holds(&holds, &mut problem)?;
        let head = self
            .meta
            .get(CHAIN_HEAD)?
            .map(|h| String::from_utf8_lossy(&h).into_owned());
        if head.unwrap_or_default() != prev_hash {
            problem(
                expected,
                "is missing: the newest events were removed".into(),
            );
        }
        // Every event is in its customer's timeline, and nothing else is.
        let mut indexed = vec![false; owners.len()];
        for kv in self.by_customer.iter() {
            let key = kv?.0;
            if key.len() < 9 {
                problem(0, "the customer index holds a malformed entry".into());
                continue;
            }
            let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or_default());
            let code = String::from_utf8_lossy(&key[..key.len() - 9]);
            let at = owners.binary_search_by_key(&seq, |(s, _)| *s);
            match at {
                Ok(at) if *owners[at].1 == *code => indexed[at] = true,
                _ => problem(
                    seq,
                    format!("is in customer {code}'s timeline but is not theirs"),
                ),
            }
        }
        for ((seq, owner), indexed) in owners.iter().zip(indexed) {
            if !indexed {
                problem(*seq, format!("is missing from customer {owner}'s timeline"));
            }
        }
        problems.sort_by_key(|p| p.seq);
        Ok(Verification {
            events_checked: checked,
            problems,
        })
    }

    /// Holds must match the events that set and lifted them: a removed suppression would
    /// let a purged customer be created again. `changes` are (seq, customer, operation)
    /// of the events that set or lift a hold, in order.
    fn verify_holds(
        &self,
        changes: &[(u64, String, Operation)],
        problem: &mut impl FnMut(u64, String),
    ) -> anyhow::Result<()> {
        let mut expected: std::collections::BTreeMap<(&str, bool), u64> = Default::default();
        for (seq, customer, operation) in changes {
            let Some((suppression, on)) = hold_change(*operation) else {
                continue;
            };
            if on {
                expected.insert((customer.as_str(), suppression), *seq);
            } else {
                expected.remove(&(customer.as_str(), suppression));
            }
        }
        for (tree, suppression, name) in [
            (&self.suppressed, true, "suppression"),
            (&self.restricted, false, "restriction"),
        ] {
            for ((code, kind), seq) in &expected {
                if *kind == suppression && tree.get(code.as_bytes())?.is_none() {
                    problem(
                        *seq,
                        format!("set a {name} for {code} that has been removed"),
                    );
                }
            }
            for kv in tree.iter() {
                let code = String::from_utf8_lossy(&kv?.0).into_owned();
                if !expected.contains_key(&(code.as_str(), suppression)) {
                    problem(0, format!(
                        "the {name} of {code} has no event that set it (an interrupted purge: run it again)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Removes the values (and salts) of events older than `cutoff`; hashes and digests
    /// stay, so the chain still verifies. Returns how many events were redacted.
    pub fn redact_values_before(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        // Events below the watermark were redacted (or had nothing) already: each run
        // looks only at what aged since the last one.
        let from = self
            .meta
            .get(RETENTION_WATERMARK)?
            .and_then(|v| v.as_ref().try_into().ok());
        let from = from.map(u64::from_be_bytes).unwrap_or(1);
        let mut redacted = 0;
        let mut watermark = from;
        for kv in self.events.range(from.to_be_bytes()..) {
            let (key, value) = kv?;
            let mut event = decode_event(&value)?;
            if event.time >= cutoff {
                break; // events are in time order
            }
            watermark = event.seq + 1;
            if event.values.is_none() && event.chain.salt.is_none() {
                continue;
            }
            event.values = None;
            event.chain.salt = None;
            self.events.insert(key, encode_event(&mut event))?;
            redacted += 1;
        }
        self.meta
            .insert(RETENTION_WATERMARK, &watermark.to_be_bytes())?;
        if redacted > 0 {
            self.meta.insert(COMPACTION_OWED, &[1])?;
        }
        Ok(redacted)
    }

    fn holds(&self, kind: HoldKind) -> &sled::Tree {
        match kind {
            HoldKind::Suppressed => &self.suppressed,
            HoldKind::Restricted => &self.restricted,
        }
    }

    /// Whether any customer is held this way: planning skips the per-customer lookup
    /// when none is, which is the usual case.
    pub fn any_hold(&self, kind: HoldKind) -> bool {
        !self.holds(kind).is_empty()
    }

    pub fn hold(&self, kind: HoldKind, code: &str) -> anyhow::Result<Option<Hold>> {
        self.holds(kind)
            .get(code.as_bytes())?
            .map(|v| decode(&v, "hold"))
            .transpose()
    }

    pub fn set_hold(&self, kind: HoldKind, code: &str, hold: &Hold) -> anyhow::Result<()> {
        self.holds(kind).insert(
            code.as_bytes(),
            serde_json::to_vec(hold).expect("serialises"),
        )?;
        Ok(())
    }

    /// Lifts a hold; `false` when there was none. The next sync reads every customer,
    /// since an incremental read would not see one that did not change meanwhile.
    pub fn lift_hold(&self, kind: HoldKind, code: &str) -> anyhow::Result<bool> {
        self.meta.insert(FORCE_FULL_READ, &[1])?;
        Ok(self.holds(kind).remove(code.as_bytes())?.is_some())
    }

    /// Whether the next sync must read every customer (a hold was lifted).
    pub fn full_read_forced(&self) -> anyhow::Result<bool> {
        Ok(self.meta.get(FORCE_FULL_READ)?.is_some())
    }

    /// When the last complete full read started, if any.
    pub fn last_full_read(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(self
            .meta
            .get(LAST_FULL_READ)?
            .and_then(|v| DateTime::parse_from_rfc3339(&String::from_utf8_lossy(&v)).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Records a complete full read that started at `started`.
    pub fn full_read_done(&self, started: DateTime<Utc>) -> anyhow::Result<()> {
        self.meta
            .insert(LAST_FULL_READ, started.to_rfc3339().as_bytes())?;
        self.meta.remove(FORCE_FULL_READ)?;
        Ok(())
    }

    /// Whether removed values may still have copies in the files.
    pub fn compaction_owed(&self) -> anyhow::Result<bool> {
        Ok(self.meta.get(COMPACTION_OWED)?.is_some())
    }

    /// Erasure in the journal: removes the values and salts of all the customer's events
    /// and its state entries (whose content hash derives from personal values). Hashes
    /// and digests stay, so the chain verifies. Returns the events redacted.
    pub fn erase_customer(&self, code: &str) -> anyhow::Result<u64> {
        let mut redacted = 0;
        for event in self.events(Some(code), None)? {
            if event.values.is_none() && event.chain.salt.is_none() {
                continue;
            }
            let mut event = Event {
                values: None,
                chain: Chain {
                    salt: None,
                    ..event.chain
                },
                ..event
            };
            self.events
                .insert(event.seq.to_be_bytes(), encode_event(&mut event))?;
            redacted += 1;
        }
        for kv in self.state.iter() {
            let key = kv?.0;
            let mine = key.splitn(2, |b| *b == b'/').nth(1) == Some(code.as_bytes());
            if mine {
                self.state.remove(key)?;
            }
        }
        self.meta.insert(COMPACTION_OWED, &[1])?;
        Ok(redacted)
    }

    /// One event by sequence number.
    pub fn event(&self, seq: u64) -> anyhow::Result<Option<Event>> {
        self.events
            .get(seq.to_be_bytes())?
            .map(|v| decode_event(&v))
            .transpose()
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

/// Rewrites the journal in `dir` into a fresh database and swaps it in, so that removed
/// values leave no stale copy in sled's old log segments. Returns the new size in bytes.
///
/// Crash-safe: the copy is complete (flushed, marked) before the swap, and `Journal::open`
/// finishes or undoes an interrupted swap.
pub fn compact(dir: &Path) -> anyhow::Result<u64> {
    let _lock = lock_journal(dir)?;
    recover_compaction(dir)?;
    compact_locked(dir)
}

/// Takes the journal's lock, waiting up to a few seconds for another process.
fn lock_journal(dir: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("journal.lock"))
        .with_context(|| format!("cannot create the lock file in {}", dir.display()))?;
    for _ in 0..250 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "the journal in {} is in use by another opter-visma-sync; try again when it is done",
        dir.display()
    )
}

fn compact_locked(dir: &Path) -> anyhow::Result<u64> {
    let (live, fresh, old, done) = compaction_paths(dir);
    for stale in [&fresh, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)?;
        }
    }
    let _ = std::fs::remove_file(&done);
    {
        let source = open_sled(&live).context("cannot open the journal to compact it")?;
        let target = sled_config(&fresh).open()?;
        target.import(source.export());
        target.open_tree("meta")?.remove(COMPACTION_OWED)?;
        target.flush()?;
        source.flush()?;
    }
    std::fs::File::create(&done)?.sync_all()?;
    std::fs::rename(&live, &old)?;
    std::fs::rename(&fresh, &live)?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::remove_file(&done)?;
    std::fs::remove_dir_all(&old)?;
    Ok(folder_size(&live))
}

fn compaction_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("sled"),
        dir.join("sled.compact"),
        dir.join("sled.old"),
        dir.join("sled.compact.done"),
    )
}

/// Finishes a swap that a crash interrupted, or rolls it back.
fn recover_compaction(dir: &Path) -> anyhow::Result<()> {
    let (live, fresh, old, done) = compaction_paths(dir);
    if !live.exists() && old.exists() {
        let from = if done.exists() && fresh.exists() {
            &fresh
        } else {
            &old
        };
        std::fs::rename(from, &live)?;
    }
    for stale in [&fresh, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)?;
        }
    }
    let _ = std::fs::remove_file(&done);
    Ok(())
}

fn folder_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// sled's page cache defaults to 1 GiB and grows with the journal; a tenant's journal is
/// read mostly by key (state per customer), so a small cache keeps memory flat. sled
/// counts pages by their stored size, and the pages in memory take about twice that: at
/// 100,000 customers a 1 MiB cap kept the peak of `sync --full` 2–3 MB lower than 2 MiB,
/// at the same speed.
const SLED_CACHE_BYTES: u64 = 1024 * 1024;

fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES)
}

/// Opens sled, waiting up to a second for the file lock: a journal closed a moment ago
/// in this process is released by sled's background thread shortly after the drop.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let mut tries = 0;
    loop {
        match sled_config(path).open() {
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
            chain: Chain::default(),
        }
    }

    fn intent(code: &str) -> (String, Intent) {
        let intent = Intent {
            operation: Operation::Create,
            key: "ab".repeat(32),
            number: code.into(),
            content_hash: "cd".repeat(32),
            run_id: "20261124T000149.210Z-f20c".into(),
            started: Utc::now(),
        };
        (code.to_string(), intent)
    }

    fn pending_codes(j: &Journal) -> Vec<String> {
        let pending = j.pending_intents("eaccounting").unwrap();
        pending.into_iter().map(|(code, _)| code).collect()
    }

    #[test]
    fn planning_reads_whether_the_same_hash_was_sent_from_any_stored_form() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let hash = crate::hash::lower_hex(&[0xa7; 32]);
        let other = crate::hash::lower_hex(&[0x7a; 32]);
        let state = |content_hash: &str| State {
            remote_id: "6f1c2a52-8a4e-4d5e-9a43-2b1f0c9d7e11".into(),
            content_hash: content_hash.into(),
            last_seq: 9,
        };
        // As written now (the digest as bytes), as older versions wrote it (JSON), and a
        // hash that is not hex text at all.
        let compact = encoding::encode(&state(&hash));
        let json = serde_json::to_vec(&state(&hash)).unwrap();
        let text = encoding::encode(&state("not-hex"));
        for (code, bytes) in [("K1", &compact), ("K2", &json), ("K3", &text)] {
            j.state
                .insert(state_key("eaccounting", code), &bytes[..])
                .unwrap();
        }
        assert!(encoding::state_hash_is(&compact, &hash));
        assert!(!encoding::state_hash_is(&compact, &other));
        assert!(!encoding::state_hash_is(&compact, &hash[..62]));
        for code in ["K1", "K2"] {
            assert_eq!(
                j.state_unless_sent("eaccounting", code, &hash).unwrap(),
                Sent::Same
            );
            assert_eq!(
                j.state_unless_sent("eaccounting", code, &other).unwrap(),
                Sent::Other(state(&hash)),
                "{code}"
            );
        }
        assert_eq!(
            j.state_unless_sent("eaccounting", "K3", "not-hex").unwrap(),
            Sent::Same
        );
        assert_eq!(
            j.state_unless_sent("eaccounting", "K3", &hash).unwrap(),
            Sent::Other(state("not-hex"))
        );
        // Text is never read as the bytes it spells: "not-hex" in hex is not its hash.
        let spelled = crate::hash::lower_hex(b"not-hex");
        assert!(!encoding::state_hash_is(&text, &spelled));
        assert_eq!(
            j.state_unless_sent("eaccounting", "K3", &spelled).unwrap(),
            Sent::Other(state("not-hex"))
        );
        assert_eq!(
            j.state_unless_sent("eaccounting", "K4", &hash).unwrap(),
            Sent::Never
        );
        // A key too long for the stack buffer is found all the same.
        let long = "K".repeat(200);
        j.state
            .insert(state_key("eaccounting", &long), &compact[..])
            .unwrap();
        assert_eq!(
            j.state_unless_sent("eaccounting", &long, &hash).unwrap(),
            Sent::Same
        );
        with_state_key("eaccounting", "K1", |key| {
            assert_eq!(key, b"eaccounting/K1")
        });
        assert_eq!(
            j.state_unless_sent("visma-net", "K1", &hash).unwrap(),
            Sent::Never
        );
    }

    #[test]
    fn a_batch_of_intents_is_one_entry_and_only_unknown_outcomes_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut batch = IntentBatch::new("eaccounting", "r1", 1);
        let intents: Vec<_> = ["K1", "K2", "K3"].into_iter().map(intent).collect();
        j.recorder().open_intents(&mut batch, &intents).unwrap();
        assert_eq!(j.intents.len(), 1, "one entry for the batch");
        // K1 written, K3 never sent; K2's answer never came.
        let written = Entry {
            event: event("K1", "r1"),
            state: None,
            close_intent: true,
        };
        let closed = ["K1".to_string(), "K3".to_string()];
        j.recorder()
            .record_batch(vec![written], &batch, &closed)
            .unwrap();
        assert_eq!(pending_codes(&j), ["K2"]);
        assert_eq!(j.pending_intents("eaccounting").unwrap()[0].1, intents[1].1);
        j.close_intent("eaccounting", "K2").unwrap();
        assert_eq!(pending_codes(&j), Vec::<String>::new());
        assert_eq!(j.intents.len(), 0);
    }

    #[test]
    fn a_batch_left_by_a_dead_run_is_settled_one_customer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut batch = IntentBatch::new("eaccounting", "r1", 7);
        let intents: Vec<_> = ["K1", "K2"].into_iter().map(intent).collect();
        j.recorder().open_intents(&mut batch, &intents).unwrap();
        let mut other_sink = IntentBatch::new("economic", "r1", 1);
        j.recorder()
            .open_intents(&mut other_sink, &[intent("K9")])
            .unwrap();
        // The run died here. The next one sees each intent on its own.
        assert_eq!(j.pending_intents("eaccounting").unwrap(), intents);
        j.close_intent("eaccounting", "K1").unwrap();
        assert_eq!(pending_codes(&j), ["K2"]);
        let economic = j.pending_intents("economic").unwrap();
        assert_eq!(economic.len(), 1);
        assert_eq!(
            economic[0].1.number, "K9",
            "another sink's batch is its own"
        );
        // A batch never sent is dropped whole.
        let mut unsent = IntentBatch::new("eaccounting", "r2", 1);
        j.recorder()
            .open_intents(&mut unsent, &[intent("K5")])
            .unwrap();
        j.recorder().drop_intents(&unsent).unwrap();
        assert_eq!(pending_codes(&j), ["K2"]);
    }

    /// Six events for three customers, with values and state, as a sync writes them.
    fn sample() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        for (i, code) in ["K1", "K2", "K3", "K1", "K2", "K3"].into_iter().enumerate() {
            let values: BTreeMap<String, Value> = [
                ("Name".to_string(), Value::from(format!("Kund {code} v{i}"))),
                (
                    "ContactPersonEmail".to_string(),
                    Value::from(format!("anna{i}@example.se")),
                ),
            ]
            .into();
            let state = State {
                remote_id: format!("id-{code}"),
                content_hash: crate::hash::content_hash(&values),
                last_seq: 0,
            };
            let mut e = event(code, "r1");
            e.remote_id = Some(format!("id-{code}"));
            e.fields = values.keys().cloned().collect();
            e.values = Some(values);
            j.record(e, Some(state), true).unwrap();
        }
        (dir, j)
    }

    fn first_problem(j: &Journal) -> Option<(u64, String)> {
        let v = j.verify().unwrap();
        v.problems.first().map(|p| (p.seq, p.what.clone()))
    }

    #[test]
    fn an_untouched_journal_verifies() {
        let (_dir, j) = sample();
        let v = j.verify().unwrap();
        assert_eq!((v.events_checked, v.problems), (6, vec![]));
    }

    #[test]
    fn events_appended_while_a_batch_commits_keep_the_chain_whole() {
        // Commits seal their events before sled's transaction: one that finds the chain
        // moved on by another writer (an adoption recorded mid-run) must seal again.
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let recorder = j.recorder();
                std::thread::spawn(move || {
                    let mut seqs = Vec::new();
                    for i in 0..150 {
                        let entries = (0..3)
                            .map(|k| Entry {
                                event: event(&format!("K{w}-{i}-{k}"), "r1"),
                                state: None,
                                close_intent: false,
                            })
                            .collect();
                        seqs.extend(recorder.record_all(entries).unwrap());
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs: Vec<u64> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=900).collect::<Vec<u64>>());
        let v = j.verify().unwrap();
        assert_eq!((v.events_checked, v.problems), (900, vec![]));
    }

    #[test]
    fn a_chain_head_that_is_not_text_is_reported_not_retried_forever() {
        let (_dir, j) = sample();
        j.meta.insert(CHAIN_HEAD, &[0xff, 0xfe][..]).unwrap();
        // The commit compares the stored bytes, so it goes through instead of looping.
        j.record(event("K9", "r3"), None, true).unwrap();
        let problems = j.verify().unwrap().problems;
        assert_eq!(problems.first().map(|p| p.seq), Some(7), "{problems:?}");
    }

    #[test]
    fn entries_written_as_json_by_older_versions_still_read_and_verify() {
        let (_dir, j) = sample();
        let before = j.events(None, None).unwrap();
        for kv in j.events.iter() {
            let (key, value) = kv.unwrap();
            let json = serde_json::to_vec(&decode_event(&value).unwrap()).unwrap();
            j.events.insert(key, json).unwrap();
        }
        for kv in j.state.iter() {
            let (key, value) = kv.unwrap();
            let state: State = decode(&value, "state").unwrap();
            j.state
                .insert(key, serde_json::to_vec(&state).unwrap())
                .unwrap();
        }
        assert_eq!(j.events(None, None).unwrap(), before);
        assert_eq!(j.verify().unwrap().problems, vec![]);
    }

    #[test]
    fn stored_events_leave_out_field_names_and_hex() {
        let (_dir, j) = sample();
        let raw = j.events.get(1u64.to_be_bytes()).unwrap().unwrap();
        let event = decode_event(&raw).unwrap();
        assert_eq!(event.fields, vec!["ContactPersonEmail", "Name"]);
        let json = serde_json::to_vec(&event).unwrap();
        assert!(
            raw.len() * 2 < json.len(),
            "{} vs {}",
            raw.len(),
            json.len()
        );
        assert!(!raw.windows(4).any(|w| w == b"seq\""));
        assert!(!raw
            .windows(event.chain.hash.len())
            .any(|w| w == event.chain.hash.as_bytes()));
    }

    #[test]
    fn one_changed_byte_of_a_value_is_found_at_its_event() {
        let (_dir, j) = sample();
        let mut raw = j.events.get(3u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let at = raw
            .windows(6)
            .position(|w| w == b"anna2@")
            .expect("the value is stored as text");
        raw[at + 4] = b'3';
        j.events.insert(3u64.to_be_bytes(), raw).unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 3);
        assert!(what.contains("values were changed"), "{what}");
    }

    #[test]
    fn a_changed_field_outside_the_values_is_found() {
        let (_dir, j) = sample();
        let raw = j.events.get(4u64.to_be_bytes()).unwrap().unwrap();
        let mut event = decode_event(&raw).unwrap();
        assert_eq!(event.http_status, Some(201));
        event.http_status = Some(200);
        j.events
            .insert(4u64.to_be_bytes(), encode_event(&mut event))
            .unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 4);
    }

    #[test]
    fn a_deleted_event_is_found_at_its_number() {
        let (_dir, j) = sample();
        j.events.remove(2u64.to_be_bytes()).unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 2);
        assert!(what.contains("missing"), "{what}");
        // The newest one too.
        let (_dir, j) = sample();
        j.events.remove(6u64.to_be_bytes()).unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 6);
    }

    #[test]
    fn an_event_under_a_huge_sequence_number_is_reported_not_allocated_for() {
        let (_dir, j) = sample();
        let last = j.events.get(6u64.to_be_bytes()).unwrap().unwrap();
        j.events.insert(u64::MAX.to_be_bytes(), last).unwrap();
        let v = j.verify().unwrap();
        assert_eq!(v.events_checked, 7);
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 7 && p.what.contains("missing")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn two_swapped_events_are_found_at_the_first() {
        let (_dir, j) = sample();
        let a = j.events.get(4u64.to_be_bytes()).unwrap().unwrap();
        let b = j.events.get(5u64.to_be_bytes()).unwrap().unwrap();
        j.events.insert(4u64.to_be_bytes(), b).unwrap();
        j.events.insert(5u64.to_be_bytes(), a).unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 4);
        assert!(what.contains("reordered"), "{what}");
    }

    #[test]
    fn an_edited_state_entry_is_found_at_its_event() {
        let (_dir, j) = sample();
        let mut state = j.state("eaccounting", "K2").unwrap().unwrap();
        assert_eq!(state.last_seq, 5);
        state.remote_id = "someone-else".into();
        j.state
            .insert("eaccounting/K2", serde_json::to_vec(&state).unwrap())
            .unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 5);
        assert!(what.contains("eaccounting/K2"), "{what}");
        // A changed content hash is an edit too.
        let (_dir, j) = sample();
        let mut state = j.state("eaccounting", "K3").unwrap().unwrap();
        state.content_hash = "0".repeat(64);
        j.state
            .insert("eaccounting/K3", serde_json::to_vec(&state).unwrap())
            .unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 6);
    }

    fn folder_text(dir: &Path) -> String {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn removed_values_left_in_the_files_by_a_crash_are_compacted_at_the_next_open() {
        let (dir, j) = sample();
        j.flush().await.unwrap();
        assert!(folder_text(dir.path()).contains("anna0@example.se"));
        let n = j
            .redact_values_before(Utc::now() + chrono::Duration::days(1))
            .unwrap();
        j.flush().await.unwrap();
        assert!(n > 0 && j.compaction_owed().unwrap());
        drop(j); // the process dies before compacting
        let j = Journal::open(dir.path()).unwrap();
        assert!(!j.compaction_owed().unwrap());
        assert!(!folder_text(dir.path()).contains("anna0@example.se"));
        assert_eq!(j.verify().unwrap().problems, vec![]);
    }

    #[test]
    fn a_removed_suppression_or_a_trimmed_tail_is_found() {
        let (_dir, j) = sample();
        let hold = Hold {
            since: Utc::now(),
            actor: "support:eva".into(),
            reason: "r".into(),
            outcome: None,
        };
        j.set_hold(HoldKind::Suppressed, "K2", &hold).unwrap();
        let mut erase = event("K2", "s1");
        erase.operation = Operation::Erase;
        let seq = j.record(erase, None, true).unwrap();
        assert_eq!(j.verify().unwrap().problems, vec![]);
        j.suppressed.remove("K2").unwrap();
        let (at, what) = first_problem(&j).unwrap();
        assert_eq!(at, seq);
        assert!(what.contains("suppression for K2"), "{what}");

        // The newest event removed and the head rewound to the one before: the sequence
        // counter still tells.
        let (_dir, j) = sample();
        let fifth = j.event(5).unwrap().unwrap();
        j.events.remove(6u64.to_be_bytes()).unwrap();
        j.by_customer.remove(customer_key("K3", 6)).unwrap();
        j.meta
            .insert(CHAIN_HEAD, fifth.chain.hash.as_bytes())
            .unwrap();
        let mut state = j.state("eaccounting", "K3").unwrap().unwrap();
        state.last_seq = 3;
        let third = j.event(3).unwrap().unwrap();
        state.content_hash = crate::hash::content_hash(third.values.as_ref().unwrap());
        j.state
            .insert("eaccounting/K3", serde_json::to_vec(&state).unwrap())
            .unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 6);
    }

    #[test]
    fn a_second_process_waits_for_the_journal() {
        let (dir, j) = sample();
        let second = std::thread::spawn({
            let path = dir.path().to_path_buf();
            move || Journal::open(&path).map(|j| j.verify().unwrap().events_checked)
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!second.is_finished(), "the second open waits for the lock");
        drop(j);
        assert_eq!(second.join().unwrap().unwrap(), 6);
    }

    #[test]
    fn redacted_values_keep_the_chain_verifiable() {
        let (_dir, j) = sample();
        let cutoff = j.event(4).unwrap().unwrap().time;
        let redacted = j.redact_values_before(cutoff).unwrap();
        assert!(redacted >= 1);
        for seq in 1..=6 {
            let e = j.event(seq).unwrap().unwrap();
            let gone = e.values.is_none() && e.chain.salt.is_none();
            assert_eq!(gone, e.time < cutoff, "event {seq}");
            assert!(e.chain.values_digest.is_some(), "the digest stays");
        }
        assert_eq!(j.verify().unwrap().problems, vec![]);
        // A later run picks up from where this one stopped and redacts the rest.
        let rest = j
            .redact_values_before(Utc::now() + chrono::Duration::days(1))
            .unwrap();
        assert_eq!(redacted + rest, 6);
        assert!((1..=6).all(|seq| j.event(seq).unwrap().unwrap().values.is_none()));
        assert_eq!(
            j.redact_values_before(Utc::now() + chrono::Duration::days(1))
                .unwrap(),
            0
        );
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

    #[test]
    fn the_last_finished_run_skips_cut_short_runs_and_other_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.last_finished_run("eaccounting").unwrap(), None);
        let run = |id: &str, sink: &str, finished: bool| Run {
            id: id.into(),
            sink: sink.into(),
            started: Utc::now(),
            finished: finished.then(Utc::now),
            counts: Counts::default(),
            rejections: Vec::new(),
            error: None,
            cursor: Some(Utc::now()),
            mapping: None,
            replay: false,
        };
        j.save_run(&run("20260101T000000.000Z-0001", "eaccounting", true))
            .unwrap();
        j.save_run(&run("20260102T000000.000Z-0001", "eaccounting", true))
            .unwrap();
        j.save_run(&run("20260103T000000.000Z-0001", "eaccounting", false))
            .unwrap();
        j.save_run(&run("20260104T000000.000Z-0001", "visma-net", true))
            .unwrap();
        let last = j.last_finished_run("eaccounting").unwrap().unwrap();
        assert_eq!(last.id, "20260102T000000.000Z-0001");
        // Summaries written before the cursor existed still read.
        let old = br#"{"id":"20260105T000000.000Z-0001","sink":"eaccounting",
            "started":"2026-01-05T00:00:00Z","finished":"2026-01-05T00:01:00Z",
            "counts":{"created":0,"updated":0,"unchanged":0,"rejected":0,"failed":0},
            "rejections":[],"error":null}"#;
        j.runs
            .insert("20260105T000000.000Z-0001", &old[..])
            .unwrap();
        let last = j.last_finished_run("eaccounting").unwrap().unwrap();
        assert_eq!((last.cursor, last.mapping), (None, None));
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
