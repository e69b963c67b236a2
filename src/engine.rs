//! One sync run: read, reduce, plan against the journal, write, record.
//!
//! Architecture invariant: the engine decides *what* to send (content hash vs journal
//! state) and records every register write as exactly one event; *how* to talk to a
//! register (auth, retries, limits) is the sink's business.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::journal::{
    Counts, Entry, Event, HoldKind, Intent, IntentBatch, Journal, Operation, Outcome, Rejection,
    Run, Sent, State,
};
use crate::mapping::{MappedRecord, Mapping};
use crate::record::SourceCustomer;
use crate::sink::{Sink, SinkError, Written};
use crate::source::Source;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// Hours between full reads when incremental reads are possible.
const FULL_READ_EVERY_HOURS: i64 = 24;

/// Writes failing in a row (nothing succeeding between) that mean the register is out.
const UNREACHABLE_AFTER: usize = 12;

fn unreachable(product: &str, last: &str) -> Error {
    Error::Other(anyhow::anyhow!(
        "{product} seems unreachable: {UNREACHABLE_AFTER} writes in a row failed (last: {last}). \
         Stopped; nothing is lost, and the next run picks up where this one ended."
    ))
}

/// Customers per group commit by default: durability costs two fsyncs per batch, not
/// per customer.
pub const DEFAULT_FLUSH_EVERY: usize = 64;

pub struct Engine<'a> {
    pub source: &'a Source,
    pub sink: &'a Sink,
    pub sink_name: &'a str,
    pub mapping: &'a Mapping,
    pub journal: &'a Journal,
    pub concurrency: usize,
    /// Customers per group commit (1 = flush per customer).
    pub flush_every: usize,
    /// Values of events older than this are redacted at the start of each run.
    pub keep_values_days: u32,
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub dry_run: bool,
    /// Read every customer, not only those changed since the last run's source cursor.
    pub full: bool,
    /// Support replay: only these customers, and sent even when unchanged.
    pub replay: Option<Vec<String>>,
    pub actor: String,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
}

/// What the run would do or did for one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub customer: String,
    pub operation: &'static str,
    /// Register fields whose value changes (names only; values stay out of plans).
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub dry_run: bool,
    #[serde(flatten)]
    pub counts: Counts,
    pub rejections: Vec<Rejection>,
    /// Customers whose write failed for a transient reason, with the reason.
    pub failures: Vec<Rejection>,
    /// Why the run stopped before the end, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Only for dry runs: what would be sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Planned>,
    /// How Opter was read: "full" (every customer) or "incremental" (only customers
    /// changed since the last finished run's source cursor).
    pub read: &'static str,
}

/// How a run reads Opter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Full,
    /// Customers changed since `cursor` (the last finished run's), less `READ_OVERLAP`.
    Incremental {
        cursor: DateTime<Utc>,
    },
}

/// How far before the stored cursor an incremental read starts. Opter's `updated` is
/// Opter's own clock, but a customer saved while the last read was paging can carry an
/// `updated` older than one already seen, several customers can share one second, and
/// `changedSince` is sent in whole seconds. Re-reading a few unchanged customers is
/// harmless: their content hash is unchanged, so nothing is sent for them.
const READ_OVERLAP: chrono::Duration = chrono::Duration::minutes(5);

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::Full => "full",
            Read::Incremental { .. } => "incremental",
        }
    }

    fn changed_since(self) -> Option<DateTime<Utc>> {
        match self {
            Read::Full => None,
            Read::Incremental { cursor } => Some(cursor - READ_OVERLAP),
        }
    }
}

enum Task {
    Create(MappedRecord),
    Update {
        record: MappedRecord,
        remote_id: String,
        previous: Option<State>,
    },
}

impl Task {
    /// The durable promise written before this task's request leaves.
    fn intent(&self, sink: &str, run_id: &str) -> (String, Intent) {
        let (record, operation) = match self {
            Task::Create(r) => (r, Operation::Create),
            Task::Update { record, .. } => (record, Operation::Update),
        };
        let intent = Intent {
            operation,
            key: write_key(sink, run_id, record),
            number: record.number.clone(),
            content_hash: record.content_hash.clone(),
            run_id: run_id.to_string(),
            started: Utc::now(),
        };
        (record.code.clone(), intent)
    }
}

/// Names one write: sink, run, customer and content. A register that honours
/// idempotency keys gets it, so a retried request is answered rather than done twice;
/// the run is part of it so that content that changes back later is written again.
fn write_key(sink: &str, run_id: &str, record: &MappedRecord) -> String {
    crate::mapping::lower_hex(&Sha256::digest(format!(
        "{sink}\0{run_id}\0{}\0{}",
        record.code, record.content_hash
    )))
}

impl Engine<'_> {
    /// Makes a batch's intents durable (one entry, one flush) before any of its requests
    /// leaves.
    async fn open_intents(&self, batch: &[Task], run_id: &str, number: u64) -> Result<IntentBatch> {
        journal_done(self.start_intents(batch, run_id, number)).await
    }

    /// Starts writing a batch's intents, on another thread like the commits: the
    /// requests in flight go on meanwhile. Await it with `journal_done`.
    fn start_intents(
        &self,
        batch: &[Task],
        run_id: &str,
        number: u64,
    ) -> JoinHandle<anyhow::Result<IntentBatch>> {
        let mut key = IntentBatch::new(self.sink_name, run_id, number);
        let intents: Vec<_> = batch
            .iter()
            .map(|t| t.intent(self.sink_name, run_id))
            .collect();
        let recorder = self.journal.recorder();
        tokio::task::spawn_blocking(move || {
            if !intents.is_empty() {
                recorder.open_intents(&mut key, &intents)?;
                recorder.flush()?;
            }
            Ok(key)
        })
    }

    /// Commits a batch's outcomes on another thread, once the batch committed before it
    /// is (the order of the chain); a failure of either is returned.
    async fn commit(
        &self,
        batch: InFlight,
        previous: Option<JoinHandle<anyhow::Result<()>>>,
    ) -> (JoinHandle<anyhow::Result<()>>, Result<()>) {
        let previous = match previous {
            Some(previous) => journal_done(previous).await,
            None => Ok(()),
        };
        let recorder = self.journal.recorder();
        let committing = tokio::task::spawn_blocking(move || {
            recorder.record_batch(batch.outcomes, &batch.intents, &batch.closed)?;
            recorder.flush()
        });
        (committing, previous)
    }
}

/// Batches handed out and not yet complete, at most, before the next is handed out.
const OPEN_BATCHES: usize = 4;

/// A batch from the writing of its intents to the commit of its outcomes.
struct InFlight {
    intents: IntentBatch,
    size: usize,
    answered: usize,
    outcomes: Vec<Entry>,
    /// Customers whose intent closes with the commit: written, refused, or never sent.
    /// The others' outcome is unknown: their intents stay open.
    closed: Vec<String>,
}

impl InFlight {
    fn new(intents: IntentBatch, size: usize) -> Self {
        InFlight {
            intents,
            size,
            answered: 0,
            outcomes: Vec::with_capacity(size),
            closed: Vec::with_capacity(size),
        }
    }
}

/// Hands the tasks out batch by batch: a batch's first task only once its intents are
/// durable, and the next batch's intents are being written while it is handed out.
struct Feeder<I> {
    tasks: I,
    current: std::vec::IntoIter<Task>,
    /// The batch `current` belongs to.
    number: u64,
    /// The next batch: its number, the writing of its intents, its tasks.
    next: Option<(u64, JoinHandle<anyhow::Result<IntentBatch>>, Vec<Task>)>,
}

/// Waits for a journal write on a blocking thread to be durable.
async fn journal_done<T>(write: tokio::task::JoinHandle<anyhow::Result<T>>) -> Result<T> {
    match write.await {
        Ok(result) => result.map_err(Error::Other),
        Err(e) => Err(Error::Other(anyhow::anyhow!("journal write stopped: {e}"))),
    }
}

/// A sink error that stops the whole run (nothing more can be sent), if it is one.
fn run_stopping(e: &SinkError) -> Option<Error> {
    match e {
        SinkError::NeedsLogin(m) => Some(Error::NeedsLogin(m.clone())),
        SinkError::Config(m) => Some(Error::Config(m.clone())),
        SinkError::Fatal(m) => Some(Error::Other(anyhow::anyhow!(m.clone()))),
        _ => None,
    }
}

/// What writing one customer came to, and the journal entry that records it.
struct Finished {
    customer: String,
    done: Done,
    reason: String,
    entry: Option<Entry>,
}

impl Finished {
    fn new(customer: String, done: Done, reason: String, entry: Option<Entry>) -> Self {
        Finished {
            customer,
            done,
            reason,
            entry,
        }
    }
}

impl Report {
    fn count(&mut self, customer: String, done: Done, reason: String) {
        match done {
            Done::Created => self.counts.created += 1,
            Done::Updated => self.counts.updated += 1,
            Done::Unchanged => self.counts.unchanged += 1,
            Done::Skipped => {}
            Done::Rejected => {
                self.counts.rejected += 1;
                self.rejections.push(Rejection { customer, reason });
            }
            Done::Failed => {
                self.counts.failed += 1;
                self.failures.push(Rejection { customer, reason });
            }
        }
    }
}

impl Engine<'_> {
    /// Runs one sync. `Err` when nothing could be done (Opter unreadable, journal
    /// unusable); otherwise the report, with the error that stopped the run early, if any
    /// (the report then counts what was done before it stopped).
    pub async fn run(&self, options: &SyncOptions) -> Result<(Report, Option<Error>)> {
        let run_id = new_run_id();
        let started = Utc::now();
        let mapping = self.mapping.fingerprint();
        let read = self.read_plan(options, &mapping)?;
        let bar = progress_bar(options.progress);
        let mut report = Report {
            run_id: run_id.clone(),
            dry_run: options.dry_run,
            counts: Counts::default(),
            rejections: Vec::new(),
            failures: Vec::new(),
            stopped: None,
            plan: Vec::new(),
            read: read.name(),
        };
        if options.dry_run {
            self.read_and_plan(read, options.replay.as_deref(), &bar, &mut report)
                .await?;
            bar.finish_and_clear();
            return Ok((report, None));
        }

        let mut run = Run {
            id: run_id.clone(),
            sink: self.sink_name.to_string(),
            started,
            finished: None,
            counts: Counts::default(),
            rejections: Vec::new(),
            error: None,
            cursor: None,
            mapping: Some(mapping),
            replay: options.replay.is_some(),
        };
        self.journal.save_run(&run)?;
        // Whole days, so retention (and the rewrite it causes) happens once a day; 0 keeps
        // no values beyond the next run.
        let cutoff = match self.keep_values_days {
            0 => Utc::now(),
            days => (Utc::now() - chrono::Duration::days(i64::from(days)))
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc(),
        };
        let redacted = self.journal.redact_values_before(cutoff)?;
        if redacted > 0 {
            tracing::info!(redacted, "values older than the retention period removed");
        }
        self.journal.flush().await?;

        // Settled first, so that planning sees what the register holds.
        let mut stopped = self.settle(&run_id, &options.actor).await.err();
        let tasks = match stopped {
            None => {
                let (tasks, cursor) = self
                    .read_and_plan(read, options.replay.as_deref(), &bar, &mut report)
                    .await?;
                run.cursor = cursor;
                tasks
            }
            Some(_) => Vec::new(),
        };
        // Customers refused before sending are part of the run's row-level log too.
        let mut refused = Vec::with_capacity(report.rejections.len());
        for rejection in &report.rejections {
            let known = self
                .journal
                .state(self.sink_name, &rejection.customer)?
                .is_some();
            let operation = if known {
                Operation::Update
            } else {
                Operation::Create
            };
            let mut event = self.event(&rejection.customer, &run_id, &options.actor, operation);
            event.outcome = Outcome::Rejected;
            event.message = Some(rejection.reason.clone());
            refused.push(Entry {
                event,
                state: None,
                close_intent: false,
            });
        }
        self.journal.record_all(refused)?;
        bar.set_message(format!("writing to {}", self.mapping.rules().product));
        bar.set_length(tasks.len() as u64);
        bar.set_position(0);
        let mut tasks = tasks.into_iter();
        let mut failed_in_a_row = 0;
        // Batches flow through a pipeline. A batch's intents are written and flushed (one
        // flush for all of them) while the batch before it is sending, and none of its
        // requests leaves before that; requests go out at `concurrency` across batch
        // boundaries, so no batch waits for the last answers of the one before; and each
        // batch's outcomes are committed in batch order, on another thread, once its last
        // request has answered (that commit costs about as much CPU as the requests).
        let stop = AtomicBool::new(false);
        let first: Vec<Task> = tasks.by_ref().take(self.flush_every).collect();
        let first_intents = self.open_intents(&first, &run_id, 0).await?;
        let in_flight: RefCell<BTreeMap<u64, InFlight>> = RefCell::default();
        if !first.is_empty() {
            in_flight
                .borrow_mut()
                .insert(0, InFlight::new(first_intents, first.len()));
        }
        let following: Vec<Task> = tasks.by_ref().take(self.flush_every).collect();
        let feeder = Feeder {
            next: (!following.is_empty())
                .then(|| (1, self.start_intents(&following, &run_id, 1), following)),
            tasks,
            current: first.into_iter(),
            number: 0,
        };
        // A batch whose intents were written when the run stopped, none of it sent.
        let unsent = RefCell::new(None);
        let feed_error = RefCell::new(None);
        let mut committing = None;
        let (stop_ref, in_flight_ref, run_ref) = (&stop, &in_flight, run_id.as_str());
        let completed = tokio::sync::Notify::new();
        let (unsent_ref, feed_error_ref, completed_ref) = (&unsent, &feed_error, &completed);
        let feed = futures::stream::unfold(feeder, move |mut feeder| async move {
            loop {
                if let Some(task) = feeder.current.next() {
                    return Some(((feeder.number, task), feeder));
                }
                let (number, opening, batch) = feeder.next.take()?;
                // A few batches open at a time: one slow answer holds back the commits of
                // the batches after it, and what a crash leaves to settle grows with them.
                while in_flight_ref.borrow().len() >= OPEN_BATCHES {
                    completed_ref.notified().await;
                }
                let intents = match journal_done(opening).await {
                    Ok(intents) if !stop_ref.load(Ordering::SeqCst) => intents,
                    opened => {
                        if let Err(e) = opened {
                            stop_ref.store(true, Ordering::SeqCst);
                            *feed_error_ref.borrow_mut() = Some(e);
                        }
                        // Never sent: its entry, if written, is dropped, not settled.
                        *unsent_ref.borrow_mut() =
                            Some(IntentBatch::new(self.sink_name, run_ref, number));
                        return None;
                    }
                };
                in_flight_ref
                    .borrow_mut()
                    .insert(number, InFlight::new(intents, batch.len()));
                let following: Vec<Task> = feeder.tasks.by_ref().take(self.flush_every).collect();
                if !following.is_empty() {
                    let opening = self.start_intents(&following, run_ref, number + 1);
                    feeder.next = Some((number + 1, opening, following));
                }
                feeder.current = batch.into_iter();
                feeder.number = number;
            }
        });
        let actor = options.actor.as_str();
        let results = feed
            .map(|(number, task)| async move {
                (number, self.execute(task, run_ref, actor, stop_ref).await)
            })
            .buffer_unordered(self.concurrency);
        let mut results = std::pin::pin!(results);
        while let Some((number, result)) = results.next().await {
            bar.inc(1);
            let ready = {
                let mut batches = in_flight.borrow_mut();
                let batch = batches
                    .get_mut(&number)
                    .expect("a batch is opened before its tasks are handed out");
                batch.answered += 1;
                match result {
                    Ok(Finished {
                        done: Done::Skipped,
                        customer,
                        ..
                    }) => batch.closed.push(customer),
                    Ok(Finished {
                        customer,
                        done,
                        reason,
                        entry,
                    }) => {
                        // A customer whose outcome is unknown keeps its intent open.
                        if entry.as_ref().is_none_or(|e| e.close_intent) {
                            batch.closed.push(customer.clone());
                        }
                        batch.outcomes.extend(entry);
                        // An outage is not many bad customers: stop after a streak of
                        // failures with nothing getting through, instead of spending
                        // the retry budget on every remaining customer.
                        failed_in_a_row = if done == Done::Failed {
                            failed_in_a_row + 1
                        } else {
                            0
                        };
                        if failed_in_a_row >= UNREACHABLE_AFTER && stopped.is_none() {
                            stop.store(true, Ordering::SeqCst);
                            stopped = Some(unreachable(self.mapping.rules().product, &reason));
                        }
                        report.count(customer, done, reason);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        stopped.get_or_insert(e);
                    }
                }
                // Batches whose last request has answered, in batch order.
                let mut ready = Vec::new();
                while batches
                    .first_key_value()
                    .is_some_and(|(_, b)| b.answered == b.size)
                {
                    ready.extend(batches.pop_first().map(|(_, b)| b));
                }
                if !ready.is_empty() {
                    completed.notify_one();
                }
                ready
            };
            for batch in ready {
                let (started, previous) = self.commit(batch, committing.take()).await;
                committing = Some(started);
                if let Err(e) = previous {
                    stop.store(true, Ordering::SeqCst);
                    stopped.get_or_insert(e);
                }
            }
        }
        if let Some(e) = feed_error.take() {
            stopped.get_or_insert(e);
        }
        if let Some(last) = committing {
            if let Err(e) = journal_done(last).await {
                stopped.get_or_insert(e);
            }
        }
        // Stopped early: the batch prepared next was never sent, so its intents are
        // dropped rather than left for settling.
        if let Some(intents) = unsent.take() {
            if let Err(e) = self.journal.recorder().drop_intents(&intents) {
                stopped.get_or_insert(Error::Other(e));
            }
        }
        bar.finish_and_clear();

        report
            .rejections
            .sort_by(|a, b| a.customer.cmp(&b.customer));
        report.failures.sort_by(|a, b| a.customer.cmp(&b.customer));
        run.counts = report.counts.clone();
        run.rejections = report
            .rejections
            .iter()
            .chain(&report.failures)
            .cloned()
            .collect();
        run.finished = Some(Utc::now()).filter(|_| stopped.is_none());
        run.error = stopped.as_ref().map(|e: &Error| e.to_string());
        report.stopped = stopped.as_ref().map(|e| e.to_string());
        if stopped.is_none() && matches!(read, Read::Full) && options.replay.is_none() {
            self.journal.full_read_done(started)?;
        }
        self.journal.save_run(&run)?;
        self.journal.flush().await?;
        Ok((report, stopped))
    }

    /// Decides whether this run reads every customer or only those changed since the
    /// last finished run's source cursor.
    ///
    /// An incremental read sees only what changed in Opter, so:
    /// - `unchanged` counts only the customers read;
    /// - duplicate codes and numbers are caught only among the customers read (a full
    ///   read, e.g. `sync --full`, checks all of Opter again);
    /// - customers without an `updated` are read only by full reads.
    fn read_plan(&self, options: &SyncOptions, mapping: &str) -> Result<Read> {
        if options.full || options.replay.is_some() || self.journal.full_read_forced()? {
            return Ok(Read::Full);
        }
        // A full read at least daily: an incremental read trusts that every earlier read
        // saw everything up to its cursor, which paging shifts or clock skew can break.
        let due = self
            .journal
            .last_full_read()?
            .is_none_or(|t| Utc::now() - t > chrono::Duration::hours(FULL_READ_EVERY_HOURS));
        if due {
            return Ok(Read::Full);
        }
        let Some(last) = self.journal.last_finished_run(self.sink_name)? else {
            return Ok(Read::Full);
        };
        let Some(cursor) = last.cursor else {
            return Ok(Read::Full);
        };
        // Rejected and failed customers must be tried again, but an incremental read
        // would not read one that has not changed in Opter since (a customer rejected
        // for a register limit, or whose write failed, keeps its `updated`). Open
        // intents need no full read: settling finds each in the register by number and
        // records what it holds, and a run cut short after the last finished one read
        // (incrementally) only customers changed since this same cursor, which this
        // read reads again. (A cut-short `sync --full` is not repeated: run it again.)
        if last.counts.rejected + last.counts.failed > 0 || !last.rejections.is_empty() {
            return Ok(Read::Full);
        }
        // Another mapping (or register rules) can change every customer's content
        // without Opter changing any of them.
        if last.mapping.as_deref() != Some(mapping) {
            return Ok(Read::Full);
        }
        Ok(Read::Incremental { cursor })
    }

    /// Settles the intents a dead run left open: if the register has the customer, the
    /// write (or an earlier one) landed, so adopt its id and remember what it holds;
    /// the plan then updates it only if its content differs. Otherwise nothing landed.
    async fn settle(&self, run_id: &str, actor: &str) -> Result<()> {
        let pending = self.journal.pending_intents(self.sink_name)?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(
            open = pending.len(),
            "settling writes a previous run left open"
        );
        let mut failed_in_a_row = 0;
        for (code, intent) in pending {
            let remote = match self.sink.find_by_number(&intent.number).await {
                Ok(remote) => remote,
                Err(e) if run_stopping(&e).is_some() => {
                    return Err(run_stopping(&e).expect("checked"))
                }
                Err(e) => {
                    // Left open: the next run tries again; a create meanwhile is safe,
                    // since the register refuses a second customer with this number.
                    tracing::warn!(customer = %code, "cannot settle an open write yet: {e}");
                    failed_in_a_row += 1;
                    if failed_in_a_row >= UNREACHABLE_AFTER {
                        return Err(unreachable(self.mapping.rules().product, &e.to_string()));
                    }
                    continue;
                }
            };
            failed_in_a_row = 0;
            let Some(remote) = remote else {
                tracing::info!(customer = %code, "open write never reached the register");
                self.journal.close_intent(self.sink_name, &code)?;
                continue;
            };
            let remote_id = remote.id.clone();
            // Adopt only what the journal did not know as ours already.
            let known = self.journal.state(self.sink_name, &code)?;
            let operation = match known {
                Some(s) if s.remote_id == remote_id => Operation::Settle,
                _ => Operation::Adopt,
            };
            let mut event = self.event(&code, run_id, actor, operation);
            event.remote_id = Some(remote_id.clone());
            event.message = Some(format!(
                "settled a {} interrupted in run {}",
                crate::journal::name_of(&intent.operation),
                intent.run_id
            ));
            let state = State {
                remote_id,
                content_hash: self.mapping.remote_hash(&remote.fields),
                last_seq: 0,
            };
            self.journal.record(event, Some(state), true)?;
        }
        self.journal.flush().await?;
        Ok(())
    }

    /// Reads Opter page by page, planning each page while the next one is fetched; only
    /// a few facts per customer (and the writes to make) are kept, so memory grows little
    /// with the number of customers. Returns the writes and the new source cursor.
    async fn read_and_plan(
        &self,
        read: Read,
        replay: Option<&[String]>,
        bar: &ProgressBar,
        report: &mut Report,
    ) -> Result<(Vec<Task>, Option<DateTime<Utc>>)> {
        bar.set_message("reading Opter");
        let (pages, mut incoming) = tokio::sync::mpsc::channel(2);
        let reading = async move {
            let result = self.source.read_pages(read.changed_since(), &pages).await;
            drop(pages);
            result
        };
        let mut planner = Planner::new(self, replay);
        let planning = async {
            while let Some((customers, total)) = incoming.recv().await {
                if let Some(total) = total {
                    bar.set_length(total);
                    planner.expect(total);
                }
                for customer in customers {
                    planner.add(customer)?;
                }
                bar.set_position(planner.read as u64);
            }
            Ok::<(), Error>(())
        };
        let (read_result, plan_result) = tokio::join!(reading, planning);
        read_result?;
        plan_result?;
        // The cursor only moves forward: an incremental read that saw nothing (or only
        // the overlap) keeps the one it started from.
        let cursor = match read {
            Read::Full => planner.newest,
            Read::Incremental { cursor } => planner.newest.max(Some(cursor)),
        };
        tracing::info!(
            customers = planner.read,
            read = read.name(),
            "read from Opter"
        );
        Ok((planner.finish(report)?, cursor))
    }

    fn planned(&self, task: &Task) -> Result<Planned> {
        Ok(match task {
            Task::Create(r) => Planned {
                customer: r.code.clone(),
                operation: "create",
                fields: r.fields.keys().cloned().collect(),
            },
            Task::Update {
                record, previous, ..
            } => {
                // What was last sent successfully, to name the fields that change.
                let before = match previous {
                    Some(_) => self
                        .journal
                        .events(Some(&record.code), None)?
                        .into_iter()
                        .find(|e| e.outcome == Outcome::Succeeded && e.values.is_some())
                        .and_then(|e| e.values)
                        .unwrap_or_default(),
                    None => Default::default(),
                };
                Planned {
                    customer: record.code.clone(),
                    operation: "update",
                    fields: record
                        .fields
                        .iter()
                        .filter(|(k, v)| before.get(*k) != Some(v))
                        .map(|(k, _)| k.clone())
                        .collect(),
                }
            }
        })
    }

    /// A succeeded event of this run for `code`, to be filled in.
    fn event(&self, code: &str, run_id: &str, actor: &str, operation: Operation) -> Event {
        Event {
            seq: 0,
            time: Utc::now(),
            run_id: run_id.to_string(),
            actor: actor.to_string(),
            customer: code.to_string(),
            sink: self.sink_name.to_string(),
            operation,
            outcome: Outcome::Succeeded,
            http_status: None,
            error_code: None,
            message: None,
            remote_id: None,
            fields: Vec::new(),
            values: None,
            chain: Default::default(),
        }
    }

    /// Writes one customer and returns the outcome, with the journal entry the caller
    /// records for the batch. `Err` only for a run-stopping condition (authorization
    /// lost); `Done::Skipped` when not sent because the run stops.
    async fn execute(
        &self,
        task: Task,
        run_id: &str,
        actor: &str,
        stop: &AtomicBool,
    ) -> Result<Finished> {
        let (record, remote_id) = match task {
            Task::Create(record) => (record, None),
            Task::Update {
                record, remote_id, ..
            } => (record, Some(remote_id)),
        };
        let operation = if remote_id.is_some() {
            Operation::Update
        } else {
            Operation::Create
        };
        if stop.load(Ordering::SeqCst) {
            // Never sent: its intent is closed, not left for settling.
            return Ok(Finished::new(
                record.code,
                Done::Skipped,
                String::new(),
                None,
            ));
        }
        let mut operation = operation;
        let key = write_key(self.sink_name, run_id, &record);
        let result = match &remote_id {
            None => {
                self.create_or_adopt(&record, &key, run_id, actor, &mut operation)
                    .await
            }
            Some(remote_id) => match self.sink.update(remote_id, &record, &key).await {
                // Deleted in Visma since we last wrote it: find it by number, or create it
                // again, rather than report a rejection nobody in Opter can fix.
                Err(SinkError::Rejected { status: 404, .. }) => {
                    tracing::info!(customer = %record.code, "gone from the register; recreating");
                    operation = Operation::Create;
                    self.create_or_adopt(&record, &key, run_id, actor, &mut operation)
                        .await
                }
                other => other.map(|w| (w, Done::Updated)),
            },
        };
        let mut record = record;
        let mut e = self.event(&record.code, run_id, actor, operation);
        e.fields = record.fields.keys().cloned().collect();
        // Sent (or about to be refused): the values move into the event.
        e.values = Some(std::mem::take(&mut record.fields));
        let product = self.mapping.rules().product;
        let (done, reason, close_intent) = match result {
            Ok((written, done)) => {
                e.http_status = Some(written.status);
                e.remote_id = Some(written.remote_id.clone());
                if done == Done::Unchanged {
                    // Adopted, and the register already held our content: nothing sent
                    // (no entry: the intent closes with the batch).
                    return Ok(Finished::new(record.code, done, String::new(), None));
                }
                let state = State {
                    remote_id: written.remote_id,
                    content_hash: record.content_hash.clone(),
                    last_seq: 0,
                };
                tracing::info!(customer = %record.code, ?done, "written");
                let entry = Entry {
                    event: e,
                    state: Some(state),
                    close_intent: true,
                };
                return Ok(Finished::new(record.code, done, String::new(), Some(entry)));
            }
            Err(e @ (SinkError::NeedsLogin(_) | SinkError::Config(_) | SinkError::Fatal(_))) => {
                return Err(run_stopping(&e).expect("a run-stopping error"))
            }
            Err(SinkError::NumberTaken { status, message }) => {
                // Only left over when adopting found nothing to adopt.
                e.outcome = Outcome::Rejected;
                e.http_status = Some(status);
                e.message = Some(message.clone());
                (
                    Done::Rejected,
                    format!("{product} refused it (HTTP {status}): {message}"),
                    true,
                )
            }
            Err(SinkError::Rejected {
                status,
                code,
                message,
            }) => {
                e.outcome = Outcome::Rejected;
                e.http_status = Some(status);
                let reason = match &code {
                    Some(c) => {
                        format!("{product} refused it (HTTP {status}, error {c}): {message}")
                    }
                    None => format!("{product} refused it (HTTP {status}): {message}"),
                };
                e.error_code = code;
                e.message = Some(message);
                (Done::Rejected, reason, true)
            }
            Err(SinkError::Failed { status, message }) => {
                e.outcome = Outcome::Failed;
                e.http_status = status;
                e.message = Some(message.clone());
                // The write may have landed: leave the intent for the next run to settle.
                (
                    Done::Failed,
                    format!("{message} (will be retried next run)"),
                    false,
                )
            }
        };
        tracing::warn!(customer = %record.code, outcome = ?e.outcome, "not written: {reason}");
        let entry = Entry {
            event: e,
            state: None,
            close_intent,
        };
        Ok(Finished::new(record.code, done, reason, Some(entry)))
    }

    /// Creates the customer; if the register says its number is taken (a lost journal,
    /// or a create whose answer never arrived), adopts it instead of duplicating it.
    /// `operation` ends as the operation the final write was.
    async fn create_or_adopt(
        &self,
        record: &MappedRecord,
        key: &str,
        run_id: &str,
        actor: &str,
        operation: &mut Operation,
    ) -> std::result::Result<(Written, Done), SinkError> {
        match self.sink.create(record, key).await {
            Err(SinkError::NumberTaken { .. }) => {
                *operation = Operation::Update;
                self.adopt(record, key, run_id, actor).await
            }
            other => other.map(|w| (w, Done::Created)),
        }
    }

    /// The register already has a customer with our number: take its id and record that
    /// (with what it holds, as state), then update it if it differs. The intent stays
    /// open until the update is committed, so a crash in between is settled next run.
    async fn adopt(
        &self,
        record: &MappedRecord,
        key: &str,
        run_id: &str,
        actor: &str,
    ) -> std::result::Result<(Written, Done), SinkError> {
        let Some(existing) = self.sink.find_by_number(&record.number).await? else {
            return Err(SinkError::Rejected {
                status: 400,
                code: None,
                message: "the register reports this customer number as taken, but no customer \
                          with it can be found"
                    .into(),
            });
        };
        let id = existing.id.clone();
        let mut adopted = self.event(&record.code, run_id, actor, Operation::Adopt);
        adopted.remote_id = Some(id.clone());
        let state = State {
            remote_id: id.clone(),
            content_hash: self.mapping.remote_hash(&existing.fields),
            last_seq: 0,
        };
        let same = state.content_hash == record.content_hash;
        self.journal
            .record(adopted, Some(state), false)
            .map_err(|e| SinkError::Failed {
                status: None,
                message: e.to_string(),
            })?;
        if same {
            return Ok((
                Written {
                    remote_id: id,
                    status: 200,
                },
                Done::Unchanged,
            ));
        }
        let written = self.sink.update(&id, record, key).await?;
        Ok((written, Done::Updated))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Created,
    Updated,
    /// Adopted with the content we would have sent: nothing to write.
    Unchanged,
    /// Not sent: the run was stopping.
    Skipped,
    Rejected,
    Failed,
}

/// What planning keeps of one customer code until the whole read is in: a few fixed-size
/// facts, so a full read of 100,000 customers stays small.
struct Seen {
    /// Digest of the first copy read.
    first: u64,
    /// The register number it maps to: its position in `Planner::numbers`, or `NO_NUMBER`.
    number: u32,
    /// Further distinct copies (identical copies are one customer read twice, e.g.
    /// across a page boundary that moved while paging): 0 for none (the usual case),
    /// else one more than their position in `Planner::other_copies`.
    others: u32,
    verdict: Verdict,
}

const NO_NUMBER: u32 = u32::MAX;

/// Many short strings in one buffer, by position: a few bytes each instead of a heap
/// allocation each.
#[derive(Default)]
struct Texts {
    text: String,
    ends: Vec<u32>,
}

impl Texts {
    fn push(&mut self, s: &str) -> u32 {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u32);
        self.ends.len() as u32 - 1
    }

    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn reserve(&mut self, more: usize) {
        self.ends.reserve(more);
    }
}

/// The planner's table of customer codes: every code read (in `Texts`) with its `Seen`,
/// indexed by a hash table of positions. About 40 bytes per customer, against more than
/// twice that for a map of strings.
#[derive(Default)]
struct SeenTable {
    codes: Texts,
    entries: Vec<Seen>,
    positions: hashbrown::HashTable<u32>,
}

impl SeenTable {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn reserve(&mut self, seed: &foldhash::fast::FixedState, more: usize) {
        self.codes.reserve(more);
        self.entries.reserve(more);
        let codes = &self.codes;
        self.positions
            .reserve(more, |&j| digest_of(seed, &codes.get(j)));
    }

    fn get_mut(&mut self, seed: &foldhash::fast::FixedState, code: &str) -> Option<&mut Seen> {
        let codes = &self.codes;
        let found = self
            .positions
            .find(digest_of(seed, &code), |&i| codes.get(i) == code)
            .copied();
        found.map(|i| &mut self.entries[i as usize])
    }

    /// Adds a code not in the table yet.
    fn insert(&mut self, seed: &foldhash::fast::FixedState, code: &str, seen: Seen) {
        let i = self.codes.push(code);
        self.entries.push(seen);
        let codes = &self.codes;
        self.positions
            .insert_unique(digest_of(seed, &code), i, |&j| {
                digest_of(seed, &codes.get(j))
            });
    }

    /// Every code with its `Seen`, in the order read.
    fn into_entries(self) -> impl Iterator<Item = (String, Seen)> {
        let SeenTable { codes, entries, .. } = self;
        entries
            .into_iter()
            .enumerate()
            .map(move |(i, seen)| (codes.get(i as u32).to_string(), seen))
    }
}

enum Verdict {
    Held(HoldKind),
    /// Index into `Planner::reasons`.
    Rejected(u32),
    Unchanged,
    /// Index into `Planner::tasks`.
    Write(u32),
}

/// Planning tables are sized from Opter's total up front (no rehash peaks), unless the
/// total is implausible.
const MOST_CUSTOMERS_RESERVED: u64 = 2_000_000;

/// A 64-bit digest, stable within one run (the seed is random per `Planner`). Planning
/// hashes every customer read; foldhash is several times faster than SipHash.
fn digest_of(seed: &foldhash::fast::FixedState, value: &impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    seed.hash_one(value)
}

/// Plans customers as they are read. Duplicate codes and register numbers can only be
/// told once everything is read, so verdicts are final only in `finish`.
struct Planner<'e, 'a> {
    engine: &'e Engine<'a>,
    replay: Option<&'e [String]>,
    seen: SeenTable,
    /// The register number of each customer mapped (see `Seen::number`).
    numbers: Texts,
    /// Digests of further distinct copies of a code (see `Seen::others`).
    other_copies: Vec<Vec<u64>>,
    seed: foldhash::fast::FixedState,
    /// Why customers were rejected by the mapping (see `Verdict::Rejected`).
    reasons: Vec<String>,
    /// Whether any customer is suppressed or restricted at all.
    holds: (bool, bool),
    tasks: Vec<Task>,
    read: usize,
    newest: Option<DateTime<Utc>>,
}

impl<'e, 'a> Planner<'e, 'a> {
    fn new(engine: &'e Engine<'a>, replay: Option<&'e [String]>) -> Self {
        Planner {
            engine,
            replay,
            seen: SeenTable::default(),
            numbers: Texts::default(),
            other_copies: Vec::new(),
            seed: foldhash::fast::FixedState::with_seed(rand::random()),
            reasons: Vec::new(),
            holds: (
                engine.journal.any_hold(HoldKind::Suppressed),
                engine.journal.any_hold(HoldKind::Restricted),
            ),
            tasks: Vec::new(),
            read: 0,
            newest: None,
        }
    }

    /// Opter says how many customers are coming.
    fn expect(&mut self, total: u64) {
        let total = total.min(MOST_CUSTOMERS_RESERVED) as usize;
        self.seen
            .reserve(&self.seed, total.saturating_sub(self.seen.len()));
        self.numbers
            .reserve(total.saturating_sub(self.numbers.len()));
    }

    fn add(&mut self, c: SourceCustomer) -> Result<()> {
        self.read += 1;
        self.newest = self.newest.max(c.updated);
        if self.replay.is_some_and(|codes| !codes.contains(&c.code)) {
            return Ok(());
        }
        let digest = digest_of(&self.seed, &c);
        if let Some(seen) = self.seen.get_mut(&self.seed, &c.code) {
            if seen.others == 0 {
                self.other_copies.push(Vec::new());
                seen.others = self.other_copies.len() as u32;
            }
            let others = &mut self.other_copies[seen.others as usize - 1];
            if seen.first != digest && !others.contains(&digest) {
                others.push(digest);
            }
            return Ok(());
        }
        let engine = self.engine;
        let journal = engine.journal;
        let permitted = c.into_permitted();
        let held = |present: bool, kind: HoldKind| -> Result<bool> {
            Ok(present && journal.hold(kind, &permitted.code)?.is_some())
        };
        // First of all: what is suppressed or restricted is not looked at further (not
        // even rejected, which would force full reads forever).
        let mut number = NO_NUMBER;
        let verdict = if held(self.holds.0, HoldKind::Suppressed)? {
            Verdict::Held(HoldKind::Suppressed)
        } else if held(self.holds.1, HoldKind::Restricted)? {
            Verdict::Held(HoldKind::Restricted)
        } else {
            match engine.mapping.check_and_hash(&permitted) {
                Err(reason) => {
                    self.reasons.push(reason);
                    Verdict::Rejected(self.reasons.len() as u32 - 1)
                }
                Ok(record) => {
                    number = self.numbers.push(&record.number);
                    let sent = if self.replay.is_some() {
                        // A replay sends what is unchanged too, from its stored state.
                        match journal.state(engine.sink_name, record.code)? {
                            Some(s) => Sent::Other(s),
                            None => Sent::Never,
                        }
                    } else {
                        journal.state_unless_sent(
                            engine.sink_name,
                            record.code,
                            &record.content_hash,
                        )?
                    };
                    match sent {
                        Sent::Same => Verdict::Unchanged,
                        Sent::Other(s) => {
                            self.tasks.push(Task::Update {
                                remote_id: s.remote_id.clone(),
                                record: record.into_record(),
                                previous: Some(s),
                            });
                            Verdict::Write(self.tasks.len() as u32 - 1)
                        }
                        Sent::Never => {
                            self.tasks.push(Task::Create(record.into_record()));
                            Verdict::Write(self.tasks.len() as u32 - 1)
                        }
                    }
                }
            }
        };
        self.seen.insert(
            &self.seed,
            &permitted.code,
            Seen {
                first: digest,
                others: 0,
                number,
                verdict,
            },
        );
        Ok(())
    }

    /// Rejects duplicates, counts what is held or unchanged, returns what to write.
    fn finish(self, report: &mut Report) -> Result<Vec<Task>> {
        let Planner {
            engine,
            seen,
            numbers,
            other_copies,
            tasks,
            mut reasons,
            ..
        } = self;
        // Register numbers that several customers map to: sort the numbers, count runs.
        let mut by_text: Vec<u32> = (0..numbers.len() as u32).collect();
        by_text.sort_unstable_by(|&a, &b| numbers.get(a).cmp(numbers.get(b)));
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for run in by_text.chunk_by(|&a, &b| numbers.get(a) == numbers.get(b)) {
            if run.len() > 1 {
                shared.extend(run.iter().map(|&i| (i, run.len() as u32)));
            }
        }
        drop(by_text);
        let number_field = engine.mapping.rules().number_field;
        let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let mut rejected = |code: &str, reason: String| {
            tracing::warn!(customer = %code, "rejected: {reason}");
            report.counts.rejected += 1;
            report.rejections.push(Rejection {
                customer: code.to_string(),
                reason,
            });
        };
        let mut held = (0, 0);
        let mut unchanged = 0;
        for (code, seen) in seen.into_entries() {
            let copies = match seen.others {
                0 => 1,
                i => 1 + other_copies[i as usize - 1].len(),
            };
            let duplicate_number = shared.get(&seen.number).copied();
            match seen.verdict {
                Verdict::Held(HoldKind::Suppressed) => held.0 += 1,
                Verdict::Held(HoldKind::Restricted) => held.1 += 1,
                verdict if copies > 1 => {
                    if let Verdict::Write(i) = verdict {
                        tasks[i as usize] = None;
                    }
                    for _ in 0..copies {
                        rejected(
                            &code,
                            format!(
                                "customer code {code} appears {copies} times in Opter's answer; \
                                 sending either copy would be a guess. Make the code unique in \
                                 Opter."
                            ),
                        );
                    }
                }
                Verdict::Rejected(i) => rejected(&code, std::mem::take(&mut reasons[i as usize])),
                verdict if duplicate_number.is_some() => {
                    if let Verdict::Write(i) = verdict {
                        tasks[i as usize] = None;
                    }
                    let n = duplicate_number.unwrap_or_default();
                    let number = numbers.get(seen.number);
                    rejected(
                        &code,
                        format!(
                            "{n} Opter customers map to the same {number_field} {number}; the \
                             register can hold only one. Give each its own number in Opter."
                        ),
                    );
                }
                Verdict::Unchanged => unchanged += 1,
                Verdict::Write(_) => {}
            }
        }
        report.counts.suppressed += held.0;
        report.counts.restricted += held.1;
        report.counts.unchanged += unchanged;
        let tasks: Vec<Task> = tasks.into_iter().flatten().collect();
        if report.dry_run {
            for task in &tasks {
                report.plan.push(engine.planned(task)?);
                match task {
                    Task::Create(_) => report.counts.created += 1,
                    Task::Update { .. } => report.counts.updated += 1,
                }
            }
            return Ok(Vec::new());
        }
        Ok(tasks)
    }
}

/// Run ids sort by start time: `20261123T153012.345Z-3fa2`.
fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // indicatif draws nothing when stderr is not a terminal.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:20} [{bar:40}] {pos}/{len} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}
