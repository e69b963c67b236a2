//! One sync run: read, reduce, plan against the journal, write, record.
//!
//! Architecture invariant: the engine decides *what* to send (content hash vs journal
//! state) and records every register write as exactly one event; *how* to talk to a
//! register (auth, retries, limits) is the sink's business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::journal::{Counts, Event, Journal, Operation, Outcome, Rejection, Run, State};
use crate::mapping::{MappedRecord, Mapping};
use crate::record::SourceCustomer;
use crate::sink::{EAccountingSink, SinkError, Written};
use crate::source::OpterApiSource;

/// Commits between two journal flushes: durability costs one fsync per batch, not per
/// customer.
const FLUSH_EVERY: usize = 64;

pub struct Engine<'a> {
    pub source: &'a OpterApiSource,
    pub sink: &'a EAccountingSink,
    pub sink_name: &'a str,
    pub mapping: &'a Mapping,
    pub journal: &'a Journal,
    pub concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub dry_run: bool,
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
    /// Only for dry runs: what would be sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Planned>,
}

enum Task {
    Create(MappedRecord),
    Update {
        record: MappedRecord,
        remote_id: String,
        previous: Option<State>,
    },
}

impl Engine<'_> {
    pub async fn run(&self, options: &SyncOptions) -> Result<Report> {
        let run_id = new_run_id();
        let started = Utc::now();
        let bar = progress_bar(options.progress);
        bar.set_message("reading Opter");
        let customers = self
            .source
            .read_all(None, |read, total| {
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(read as u64);
            })
            .await?;
        tracing::info!(run = %run_id, customers = customers.len(), "read from Opter");

        let mut report = Report {
            run_id: run_id.clone(),
            dry_run: options.dry_run,
            counts: Counts::default(),
            rejections: Vec::new(),
            failures: Vec::new(),
            plan: Vec::new(),
        };
        let tasks = self.plan(&customers, &mut report)?;
        if options.dry_run {
            bar.finish_and_clear();
            return Ok(report);
        }

        let mut run = Run {
            id: run_id.clone(),
            sink: self.sink_name.to_string(),
            started,
            finished: None,
            counts: Counts::default(),
            rejections: Vec::new(),
            error: None,
        };
        self.journal.save_run(&run)?;
        self.journal.flush().await?;

        bar.set_message(format!("writing to {}", self.mapping.rules().product));
        bar.set_length(tasks.len() as u64);
        bar.set_position(0);
        let stop = AtomicBool::new(false);
        let mut needs_login = None;
        let mut since_flush = 0;
        let mut results = futures::stream::iter(tasks)
            .map(|task| self.execute(task, &run_id, &options.actor, &stop))
            .buffer_unordered(self.concurrency);
        while let Some(result) = results.next().await {
            bar.inc(1);
            match result {
                Ok(Some((code, outcome, message))) => {
                    match outcome {
                        Done::Created => report.counts.created += 1,
                        Done::Updated => report.counts.updated += 1,
                        Done::Rejected => {
                            report.counts.rejected += 1;
                            report.rejections.push(Rejection {
                                customer: code,
                                reason: message,
                            });
                        }
                        Done::Failed => {
                            report.counts.failed += 1;
                            report.failures.push(Rejection {
                                customer: code,
                                reason: message,
                            });
                        }
                    }
                    since_flush += 1;
                    if since_flush >= FLUSH_EVERY {
                        self.journal.flush().await?;
                        since_flush = 0;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    needs_login.get_or_insert(e);
                }
            }
        }
        drop(results);
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
        run.finished = Some(Utc::now()).filter(|_| needs_login.is_none());
        run.error = needs_login.as_ref().map(|e: &Error| e.to_string());
        self.journal.save_run(&run)?;
        self.journal.flush().await?;
        match needs_login {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Rejects what cannot be sent, counts what is unchanged, returns what to write.
    fn plan(&self, customers: &[SourceCustomer], report: &mut Report) -> Result<Vec<Task>> {
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for c in customers {
            *copies.entry(c.code.as_str()).or_default() += 1;
        }
        let mut tasks = Vec::new();
        for customer in customers {
            let code = customer.code.clone();
            let reject = |reason: String| {
                tracing::warn!(customer = %code, "rejected: {reason}");
                Rejection {
                    customer: code.clone(),
                    reason,
                }
            };
            let n = copies[customer.code.as_str()];
            if n > 1 {
                report.counts.rejected += 1;
                report.rejections.push(reject(format!(
                    "customer code {} appears {n} times in Opter's answer; sending either \
                     copy would be a guess. Make the code unique in Opter.",
                    customer.code
                )));
                continue;
            }
            let record = match self.mapping.apply(&customer.to_permitted()) {
                Ok(r) => r,
                Err(reason) => {
                    report.counts.rejected += 1;
                    report.rejections.push(reject(reason));
                    continue;
                }
            };
            let state = self.journal.state(self.sink_name, &customer.code)?;
            let task = match state {
                Some(s) if s.content_hash == record.content_hash => {
                    report.counts.unchanged += 1;
                    continue;
                }
                Some(s) => Task::Update {
                    remote_id: s.remote_id.clone(),
                    record,
                    previous: Some(s),
                },
                None => Task::Create(record),
            };
            if report.dry_run {
                report.plan.push(self.planned(&task)?);
                match task {
                    Task::Create(_) => report.counts.created += 1,
                    Task::Update { .. } => report.counts.updated += 1,
                }
            } else {
                tasks.push(task);
            }
        }
        Ok(tasks)
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

    /// Writes one customer and records the outcome. `Err` only for a run-stopping
    /// condition (authorization lost); `Ok(None)` when skipped because the run stops.
    async fn execute(
        &self,
        task: Task,
        run_id: &str,
        actor: &str,
        stop: &AtomicBool,
    ) -> Result<Option<(String, Done, String)>> {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let event = |record: &MappedRecord, operation| Event {
            seq: 0,
            time: Utc::now(),
            run_id: run_id.to_string(),
            actor: actor.to_string(),
            customer: record.code.clone(),
            sink: self.sink_name.to_string(),
            operation,
            outcome: Outcome::Succeeded,
            http_status: None,
            error_code: None,
            message: None,
            remote_id: None,
            fields: record.fields.keys().cloned().collect(),
            values: Some(record.fields.clone()),
        };
        let (record, operation, result) = match task {
            Task::Create(record) => {
                let result = match self.sink.create(&record).await {
                    Err(SinkError::Rejected {
                        code: Some(code), ..
                    }) if code == "4000" => self.adopt(&record, &event).await,
                    other => other.map(|w| (w, Done::Created)),
                };
                (record, Operation::Create, result)
            }
            Task::Update {
                record, remote_id, ..
            } => {
                let result = self
                    .sink
                    .update(&remote_id, &record)
                    .await
                    .map(|w| (w, Done::Updated));
                (record, Operation::Update, result)
            }
        };
        let mut e = event(&record, operation);
        let (done, message) = match result {
            Ok((written, done)) => {
                e.http_status = Some(written.status);
                e.remote_id = Some(written.remote_id.clone());
                let state = State {
                    remote_id: written.remote_id,
                    content_hash: record.content_hash.clone(),
                    last_seq: 0,
                };
                if done == Done::Updated {
                    e.operation = Operation::Update;
                }
                self.journal.record(e, Some(state))?;
                tracing::info!(customer = %record.code, ?done, "written");
                return Ok(Some((record.code, done, String::new())));
            }
            Err(SinkError::NeedsLogin(message)) => return Err(Error::NeedsLogin(message)),
            Err(SinkError::Rejected {
                status,
                code,
                message,
            }) => {
                e.outcome = Outcome::Rejected;
                e.http_status = Some(status);
                e.error_code = code.clone();
                let reason = match code {
                    Some(c) => format!(
                        "{} refused it (HTTP {status}, error {c}): {message}",
                        self.mapping.rules().product
                    ),
                    None => format!(
                        "{} refused it (HTTP {status}): {message}",
                        self.mapping.rules().product
                    ),
                };
                e.message = Some(message);
                (Done::Rejected, reason)
            }
            Err(SinkError::Failed { status, message }) => {
                e.outcome = Outcome::Failed;
                e.http_status = status;
                e.message = Some(message.clone());
                (
                    Done::Failed,
                    format!("{message} (will be retried next run)"),
                )
            }
        };
        tracing::warn!(customer = %record.code, outcome = ?e.outcome, "not written: {message}");
        self.journal.record(e, None)?;
        Ok(Some((record.code, done, message)))
    }

    /// The register already has a customer with our number (a lost journal, or a write
    /// whose answer never arrived): take its id, record that, and update it.
    async fn adopt(
        &self,
        record: &MappedRecord,
        event: &impl Fn(&MappedRecord, Operation) -> Event,
    ) -> std::result::Result<(Written, Done), SinkError> {
        let Some(existing) = self.sink.find_by_number(&record.number).await? else {
            return Err(SinkError::Rejected {
                status: 400,
                code: Some("4000".into()),
                message: "the register reports this customer number as taken, but no customer \
                          with it can be found"
                    .into(),
            });
        };
        let id = existing["Id"].as_str().unwrap_or_default().to_string();
        let mut adopted = event(record, Operation::Adopt);
        adopted.remote_id = Some(id.clone());
        adopted.fields = Vec::new();
        adopted.values = None;
        self.journal
            .record(adopted, None)
            .map_err(|e| SinkError::Failed {
                status: None,
                message: e.to_string(),
            })?;
        let written = self.sink.update(&id, record).await?;
        Ok((written, Done::Updated))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Created,
    Updated,
    Rejected,
    Failed,
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
