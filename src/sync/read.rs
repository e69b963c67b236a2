//! How a run reads Opter: every customer, or only those changed since the last finished
//! run's source cursor; and reading page by page into the planner.

use chrono::{DateTime, Utc};

use super::plan::{Planner, Task, Texts};
use super::{Engine, Report, SyncOptions};
use crate::error::{Error, Result};

/// Hours between full reads when incremental reads are possible.
const FULL_READ_EVERY_HOURS: i64 = 24;

/// How far before the stored cursor an incremental read starts. Opter's `updated` is
/// Opter's own clock, but a customer saved while the last read was paging can carry an
/// `updated` older than one already seen, several customers can share one second, and
/// `changedSince` is sent in whole seconds. Re-reading a few unchanged customers is
/// harmless: their content hash is unchanged, so nothing is sent for them.
const READ_OVERLAP: chrono::Duration = chrono::Duration::minutes(5);

/// How far past the start of a read the cursor may go: Opter's clock and ours may differ
/// a little. A customer stamped later than that (a typo'd date, a clock gone wrong) does
/// not move the cursor past the read, so changes made after it are still seen.
const CLOCK_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// How a run reads Opter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    Full,
    /// Customers changed since `cursor` (the last finished run's), less `READ_OVERLAP`.
    Incremental {
        cursor: DateTime<Utc>,
    },
}

impl Read {
    pub(super) fn name(self) -> &'static str {
        match self {
            Read::Full => "full",
            Read::Incremental { .. } => "incremental",
        }
    }

    pub(super) fn is_full(self) -> bool {
        self == Read::Full
    }

    fn changed_since(self) -> Option<DateTime<Utc>> {
        match self {
            Read::Full => None,
            Read::Incremental { cursor } => Some(cursor - READ_OVERLAP),
        }
    }
}

impl Engine {
    /// Decides whether this run reads every customer or only those changed since the
    /// last finished run's source cursor.
    ///
    /// An incremental read sees only what changed in Opter, so:
    /// - `unchanged` counts only the customers read;
    /// - duplicate codes and numbers are caught only among the customers read (a full
    ///   read, e.g. `sync --full`, checks all of Opter again);
    /// - customers without an `updated` are read only by full reads.
    pub(super) fn read_plan(&self, options: &SyncOptions, mapping: &str) -> Result<Read> {
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
        let Some(last) = self.journal.last_finished_run(self.sink_name())? else {
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

    /// Reads Opter page by page, planning each page while the next one is fetched; only
    /// a few facts per customer (and the writes to make) are kept, so memory grows little
    /// with the number of customers. Returns the writes and the new source cursor.
    pub(super) async fn read_and_plan(
        &self,
        read: Read,
        replay: Option<&[String]>,
        report: &mut Report,
    ) -> Result<(Vec<Task>, Texts, Option<DateTime<Utc>>)> {
        self.observer.reading();
        let latest = Utc::now() + CLOCK_TOLERANCE;
        let (pages, incoming) = tokio::sync::mpsc::channel(2);
        let reading = async move {
            let result = self.source.read_pages(read.changed_since(), &pages).await;
            drop(pages);
            result
        };
        let mut planner = Planner::new(self, replay);
        planner.latest = latest;
        let planning = async {
            // Owned here, so that a planner that stops drops the channel, and a reader
            // waiting to hand on a page stops too instead of waiting for ever.
            let mut incoming = incoming;
            while let Some(page) = incoming.recv().await {
                if let Some(total) = page.total {
                    self.observer.read_total(total);
                    planner.expect(total);
                }
                for customer in page.customers {
                    planner.add(customer)?;
                }
                for unreadable in page.unreadable {
                    planner.add_unreadable(unreadable)?;
                }
                self.observer.read_so_far(planner.read as u64);
            }
            Ok::<(), Error>(())
        };
        // Nothing is written before both are done: a read that stopped part-way (a bound
        // reached, a page that cannot be read) ends the run here, whatever pages the
        // planner already saw.
        let (read_result, plan_result) = tokio::join!(reading, planning);
        read_result?;
        plan_result?;
        // The cursor only moves forward: an incremental read that saw nothing (or only
        // the overlap) keeps the one it started from.
        if planner.future > 0 {
            tracing::warn!(
                customers = planner.future,
                first = %crate::output::printable(planner.first_future.as_deref().unwrap_or_default()),
                "customers stamped as changed in the future: the cursor stays at the time of \
                 this read, and they are read again each run until Opter's date is corrected"
            );
        }
        let newest = planner.newest.map(|t| t.min(latest));
        let cursor = match read {
            Read::Full => newest,
            Read::Incremental { cursor } => newest.max(Some(cursor.min(latest))),
        };
        tracing::info!(
            customers = planner.read,
            read = read.name(),
            "read from Opter"
        );
        let (tasks, numbers) = planner.finish(report)?;
        Ok((tasks, numbers, cursor))
    }
}
