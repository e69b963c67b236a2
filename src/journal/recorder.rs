//! Writing: events with their state and index entries (one sled transaction per batch),
//! intents, and run summaries.

use anyhow::Context;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::folder::sled_error;
use super::store::{
    customer_key, decode, encode_event, sequence_number, state_key, CHAIN_HEAD, NEXT_SEQ,
};
use super::{chain, encoding, Entry, Event, Intent, Journal, Run, State};

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
    /// The journal folder, for errors.
    dir: std::sync::Arc<std::path::Path>,
    db: sled::Db,
    events: sled::Tree,
    by_customer: sled::Tree,
    state: sled::Tree,
    intents: sled::Tree,
    meta: sled::Tree,
}

/// Why a commit starts over: another event was appended after it was sealed.
const CHAIN_MOVED: &str = "the chain moved on while a batch was sealed";
/// How often a commit seals again before giving up: one writer besides the commits
/// (adoptions, one at a time) moves the chain rarely; endless moves are a fault.
const SEAL_ATTEMPTS: usize = 1000;

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
                Err(TransactionError::Storage(e)) => return Err(sled_error(&self.dir, &e)),
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
            .map_err(|e| sled_error(&self.dir, &e))?;
        Ok(())
    }

    /// Removes a batch's intents entry: none of its requests was sent.
    pub fn drop_intents(&self, batch: &IntentBatch) -> anyhow::Result<()> {
        self.intents
            .remove(batch.key.as_bytes())
            .map_err(|e| sled_error(&self.dir, &e))?;
        Ok(())
    }

    /// Makes everything written so far durable, blocking the calling thread.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.db.flush().map_err(|e| sled_error(&self.dir, &e))?;
        Ok(())
    }
}

impl Journal {
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
            dir: self.dir.as_path().into(),
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
                .map_err(|e| sled_error(&self.dir, &e))?;
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
            .map_err(|e| sled_error(&self.dir, &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{event, sample};
    use crate::journal::Operation;
    use chrono::Utc;

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
}
