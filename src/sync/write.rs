//! Writing one customer: the key that names the write, the request, and the journal
//! entry that records its outcome.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::plan::Task;
use super::report::Done;
use super::Engine;
use crate::error::Result;
use crate::journal::{Entry, Event, Intent, Operation, Outcome, State};
use crate::mapping::MappedRecord;
use crate::sink::{SinkError, WriteKind, Written};

impl Task {
    /// The durable promise written before this task's request leaves.
    pub(super) fn intent(&self, sink: &str, run_id: &str) -> (String, Intent) {
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
pub(super) fn write_key(sink: &str, run_id: &str, record: &MappedRecord) -> String {
    crate::hash::lower_hex(&Sha256::digest(format!(
        "{sink}\0{run_id}\0{}\0{}",
        record.code, record.content_hash
    )))
}

/// What writing one customer came to, and the journal entry that records it.
pub(super) struct Finished {
    pub(super) customer: String,
    pub(super) done: Done,
    pub(super) reason: String,
    pub(super) entry: Option<Entry>,
    /// Why the run stops, when this customer was not sent for a reason that stops it
    /// (the register's call budget is used up).
    pub(super) stop: Option<crate::error::Error>,
}

impl Finished {
    fn new(customer: String, done: Done, reason: String, entry: Option<Entry>) -> Self {
        Finished {
            customer,
            done,
            reason,
            entry,
            stop: None,
        }
    }
}

impl Engine {
    /// Writes one customer and returns the outcome, with the journal entry the caller
    /// records for the batch. `Err` only for a run-stopping condition (authorization
    /// lost); `Done::Skipped` when not sent because the run stops.
    pub(super) async fn execute(
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
        // Admitted only when the calls it usually makes fit the register's budget; held
        // until the write ends. Not admitted, nothing is sent: its intent closes, no
        // event is recorded, and the run stops.
        let kind = match operation {
            Operation::Update => WriteKind::Update,
            _ => WriteKind::Create,
        };
        let _admission = match self.sink.admit(kind) {
            Ok(admission) => admission,
            Err(e) => {
                let mut skipped = Finished::new(record.code, Done::Skipped, String::new(), None);
                skipped.stop = Some(e.into());
                return Ok(skipped);
            }
        };
        let mut operation = operation;
        let key = write_key(self.sink_name(), run_id, &record);
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
                // A register whose PUT upserts (e-conomic) answers 201 Created when the
                // customer was deleted between its read and the PUT: it was made anew.
                Ok(written) if written.status == 201 => {
                    operation = Operation::Create;
                    Ok((written, Done::Created))
                }
                other => other.map(|w| (w, Done::Updated)),
            },
        };
        let e = self.event(&record.code, run_id, actor, operation);
        self.finished(record, e, result)
    }

    /// What the answer to one customer's write comes to, with the entry that records
    /// it; `Err` for a run-stopping condition.
    fn finished(
        &self,
        mut record: MappedRecord,
        mut e: Event,
        result: std::result::Result<(Written, Done), SinkError>,
    ) -> Result<Finished> {
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
            // The budget met half-way (a write that needed more calls than it reserved):
            // some of it may have landed, so its intent stays open for settling.
            Err(
                e @ (SinkError::NeedsLogin(_)
                | SinkError::Config(_)
                | SinkError::Fatal(_)
                | SinkError::Budget(_)),
            ) => return Err(e.into()),
            Err(SinkError::Conflict(reason)) => {
                // The hold and its event are recorded already: nothing else to add.
                tracing::info!(customer = %record.code, "not written: conflict");
                return Ok(Finished::new(record.code, Done::Conflict, reason, None));
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
            Err(SinkError::NotSent { status, message }) => {
                e.outcome = Outcome::Failed;
                e.http_status = status;
                e.message = Some(message.clone());
                (
                    Done::Failed,
                    format!("{message} (will be retried next run)"),
                    true,
                )
            }
        };
        // Listed in the report (table or JSON): a log line only with -v.
        tracing::info!(customer = %record.code, outcome = ?e.outcome, "not written: {reason}");
        let entry = Entry {
            event: e,
            state: None,
            close_intent,
        };
        Ok(Finished::new(record.code, done, reason, Some(entry)))
    }
}
