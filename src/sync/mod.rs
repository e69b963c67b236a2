//! One sync run: settle what a dead run left open, read and plan, write in
//! group-committed batches, record the run.
//!
//! Architecture invariant: the run decides *what* to send (content hash vs journal
//! state) and records every register write as exactly one event; *how* to talk to a
//! register (auth, retries, limits) is the sink's business. A run owns what it uses
//! (`Arc`s), so its future is `Send + 'static` and a service can spawn one per tenant.

mod index;
mod link;
mod observer;
mod pipeline;
mod plan;
mod read;
mod reconcile;
mod report;
mod settle;
mod write;

use std::sync::Arc;

use chrono::Utc;

pub use observer::{Observer, Quiet};
pub use reconcile::Drift;
pub use report::{Planned, Report};

use crate::error::{Error, Result};
use crate::journal::{Counts, Entry, Event, Journal, Operation, Outcome, Run};
use crate::mapping::Mapping;
use crate::sink::Sink;
use crate::source::Source;

/// Writes failing in a row (nothing succeeding between) that mean the register is out.
const UNREACHABLE_AFTER: usize = 12;

fn unreachable(product: &str, last: &str) -> Error {
    Error::Other(anyhow::anyhow!(
        "{product} seems unreachable: {UNREACHABLE_AFTER} writes in a row failed (last: {last}). \
         Stopped; nothing is lost, and the next run picks up where this one ended."
    ))
}

/// How a tenant's runs write: from its config.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Customers written at once.
    pub concurrency: usize,
    /// Customers per group commit (1 = flush per customer).
    pub flush_every: usize,
    /// Values of events older than this are redacted at the start of each run.
    pub keep_values_days: u32,
}

/// Everything one run uses, owned (shared handles), so a run can be spawned.
#[derive(Clone)]
pub struct Engine {
    pub source: Arc<Source>,
    pub sink: Arc<dyn Sink>,
    pub mapping: Arc<Mapping>,
    pub journal: Arc<Journal>,
    pub settings: RunSettings,
    pub observer: Arc<dyn Observer>,
}

/// The actor recorded for scheduled and command-line syncs.
pub const SYNC_ACTOR: &str = "sync";

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub dry_run: bool,
    /// Read every customer, not only those changed since the last run's source cursor.
    pub full: bool,
    /// Support replay: only these customers, and sent even when unchanged.
    pub replay: Option<Vec<String>>,
    pub actor: String,
}

impl Engine {
    /// Runs one sync. `Err` when nothing could be done (Opter unreadable, journal
    /// unusable); otherwise the report, with the error that stopped the run early, if any
    /// (the report then counts what was done before it stopped).
    pub async fn run(self, options: SyncOptions) -> Result<(Report, Option<Error>)> {
        let result = self.run_once(&options).await;
        self.observer.done();
        result
    }

    async fn run_once(&self, options: &SyncOptions) -> Result<(Report, Option<Error>)> {
        let run_id = new_run_id();
        let started = Utc::now();
        let mapping = self.mapping.fingerprint();
        let read = self.read_plan(options, &mapping)?;
        let mut report = Report::new(run_id.clone(), options.dry_run, read.name());
        let replay = options.replay.as_deref();
        if options.dry_run {
            let (tasks, numbers, _) = self.read_and_plan(read, replay, &mut report).await?;
            let numbers = (read.is_full() && plan::creates_any(&tasks)).then(|| numbers.to_set());
            let tasks = self
                .onboard(tasks, numbers, &run_id, &options.actor, &mut report, true)
                .await?;
            self.plan_dry(tasks, &mut report)?;
            report.sort();
            return Ok((report, None));
        }
        let mut run = Run {
            id: run_id.clone(),
            sink: self.sink_name().to_string(),
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
        self.apply_retention().await?;
        // Settled first, so that planning sees what the register holds.
        let mut stopped = self.settle(&run_id, &options.actor).await.err();
        let tasks = match stopped {
            None => {
                let (tasks, numbers, cursor) =
                    self.read_and_plan(read, replay, &mut report).await?;
                run.cursor = cursor;
                let numbers =
                    (read.is_full() && plan::creates_any(&tasks)).then(|| numbers.to_set());
                // Before the first create: what the register already holds.
                match self
                    .onboard(tasks, numbers, &run_id, &options.actor, &mut report, false)
                    .await
                {
                    Ok(tasks) => tasks,
                    Err(e) => {
                        stopped = Some(e);
                        Vec::new()
                    }
                }
            }
            Some(_) => Vec::new(),
        };
        self.record_refused(&report, &run_id, &options.actor)?;
        self.observer.writing(self.product(), tasks.len() as u64);
        self.write_all(tasks, &run_id, &options.actor, &mut report, &mut stopped)
            .await?;
        report.sort();
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
        if stopped.is_none() && read.is_full() && options.replay.is_none() {
            self.journal.full_read_done(started)?;
        }
        self.journal.save_run(&run)?;
        self.journal.flush().await?;
        Ok((report, stopped))
    }

    /// Removes values past the retention period, in whole days, so retention (and the
    /// rewrite it causes) happens once a day; 0 keeps no values beyond the next run.
    async fn apply_retention(&self) -> Result<()> {
        let cutoff = match self.settings.keep_values_days {
            0 => Utc::now(),
            // Saturating: a retention past the calendar keeps everything.
            days => chrono::TimeDelta::try_days(i64::from(days))
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
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
        Ok(())
    }

    /// Customers refused before sending are part of the run's row-level log too.
    fn record_refused(&self, report: &Report, run_id: &str, actor: &str) -> Result<()> {
        let mut refused = Vec::with_capacity(report.rejections.len());
        // A customer whose code could not be read has no journal timeline to join: it is
        // in the report and the run's summary only.
        for rejection in report.rejections.iter().filter(|r| !r.customer.is_empty()) {
            let known = self
                .journal
                .state(self.sink_name(), &rejection.customer)?
                .is_some();
            let operation = if known {
                Operation::Update
            } else {
                Operation::Create
            };
            let mut event = self.event(&rejection.customer, run_id, actor, operation);
            event.outcome = Outcome::Rejected;
            event.message = Some(rejection.reason.clone());
            refused.push(Entry {
                event,
                state: None,
                close_intent: false,
            });
        }
        self.journal.record_all(refused)?;
        Ok(())
    }

    /// The sink's name, which keys its state and intents in the journal.
    fn sink_name(&self) -> &'static str {
        self.sink.name()
    }

    /// The register's product name, for messages.
    fn product(&self) -> &'static str {
        self.mapping.rules().product
    }

    /// A succeeded event of this run for `code`, to be filled in.
    fn event(&self, code: &str, run_id: &str, actor: &str, operation: Operation) -> Event {
        Event {
            seq: 0,
            time: Utc::now(),
            run_id: run_id.to_string(),
            actor: actor.to_string(),
            customer: code.to_string(),
            sink: self.sink_name().to_string(),
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
}

/// Run ids sort by start time: `20261123T153012.345Z-3fa2`.
fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

/// Compiles only while a run's future can be handed to `tokio::spawn` on a multi-thread
/// runtime: owned (`'static`) and `Send`.
#[allow(dead_code)]
fn a_run_is_send_and_static(engine: Engine) {
    fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
    spawnable(&engine.run(SyncOptions::default()));
}

#[cfg(test)]
mod tests;
