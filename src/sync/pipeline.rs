//! The batch pipeline: writes tasks in group-committed batches. A batch's intents are
//! written and flushed (one flush for all of them) while the batch before it is
//! sending, and none of its requests leaves before that; requests go out at
//! `concurrency` across batch boundaries, so no batch waits for the last answers of the
//! one before; and each batch's outcomes are committed in batch order, on another
//! thread, once its last request has answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use tokio::task::JoinHandle;

use super::plan::Task;
use super::report::Done;
use super::write::Finished;
use super::{unreachable, Engine, Report, UNREACHABLE_AFTER};
use crate::error::{Error, Result};
use crate::journal::{Entry, IntentBatch};

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

/// What the feeding side and the answering side of the pipeline share.
#[derive(Default)]
struct Shared {
    /// Set when the run stops: no more requests leave.
    stop: AtomicBool,
    in_flight: Mutex<BTreeMap<u64, InFlight>>,
    /// A batch whose intents were written when the run stopped, none of it sent.
    unsent: Mutex<Option<IntentBatch>>,
    /// Why the feeding stopped, if writing intents failed.
    feed_error: Mutex<Option<Error>>,
    /// A batch completed: the feeder may hand out the next.
    completed: tokio::sync::Notify,
}

/// Locks, also after a panic elsewhere: the tables stay consistent between statements.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for a journal write on a blocking thread to be durable.
pub(super) async fn journal_done<T>(write: JoinHandle<anyhow::Result<T>>) -> Result<T> {
    match write.await {
        Ok(result) => result.map_err(Error::Other),
        Err(e) => Err(Error::Other(anyhow::anyhow!("journal write stopped: {e}"))),
    }
}

impl Engine {
    /// Writes the tasks, counting each outcome into `report`. `stopped` receives the
    /// error that stopped the run early, if any; `Err` when the first batch's intents
    /// could not be made durable.
    pub(super) async fn write_all(
        &self,
        tasks: Vec<Task>,
        run_id: &str,
        actor: &str,
        report: &mut Report,
        stopped: &mut Option<Error>,
    ) -> Result<()> {
        let mut tasks = tasks.into_iter();
        let shared = Shared::default();
        let first: Vec<Task> = tasks.by_ref().take(self.settings.flush_every).collect();
        let first_intents = journal_done(self.start_intents(&first, run_id, 0)).await?;
        if !first.is_empty() {
            locked(&shared.in_flight).insert(0, InFlight::new(first_intents, first.len()));
        }
        let following: Vec<Task> = tasks.by_ref().take(self.settings.flush_every).collect();
        let feeder = Feeder {
            next: (!following.is_empty())
                .then(|| (1, self.start_intents(&following, run_id, 1), following)),
            tasks,
            current: first.into_iter(),
            number: 0,
        };
        let (stop, shared_ref) = (&shared.stop, &shared);
        let results =
            self.feed(feeder, shared_ref, run_id)
                .map(|(number, task)| async move {
                    (number, self.execute(task, run_id, actor, stop).await)
                })
                .buffer_unordered(self.settings.concurrency);
        let mut results = std::pin::pin!(results);
        let mut committing = None;
        let mut failed_in_a_row = 0;
        while let Some((number, result)) = results.next().await {
            self.observer.written();
            let ready = {
                let mut batches = locked(&shared.in_flight);
                let batch = batches
                    .get_mut(&number)
                    .expect("a batch is opened before its tasks are handed out");
                batch.answered += 1;
                match result {
                    Ok(mut finished) => {
                        if let Some(e) = finished.stop.take() {
                            stop.store(true, Ordering::SeqCst);
                            stopped.get_or_insert(e);
                        }
                        let failed = self.take(batch, finished, report, &mut failed_in_a_row);
                        if let Some(last) = failed.filter(|_| stopped.is_none()) {
                            stop.store(true, Ordering::SeqCst);
                            *stopped = Some(unreachable(self.product(), &last));
                        }
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
                    shared.completed.notify_one();
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
        if let Some(e) = locked(&shared.feed_error).take() {
            stopped.get_or_insert(e);
        }
        if let Some(last) = committing {
            if let Err(e) = journal_done(last).await {
                stopped.get_or_insert(e);
            }
        }
        // Stopped early: the batch prepared next was never sent, so its intents are
        // dropped rather than left for settling.
        let unsent = locked(&shared.unsent).take();
        if let Some(intents) = unsent {
            if let Err(e) = self.journal.recorder().drop_intents(&intents) {
                stopped.get_or_insert(Error::Other(e));
            }
        }
        Ok(())
    }

    /// Takes one customer's outcome into its batch and the report. Returns the last
    /// reason when this failure completes a streak that means the register is out.
    fn take(
        &self,
        batch: &mut InFlight,
        finished: Finished,
        report: &mut Report,
        failed_in_a_row: &mut usize,
    ) -> Option<String> {
        let Finished {
            customer,
            done,
            reason,
            entry,
            ..
        } = finished;
        if done == Done::Skipped {
            batch.closed.push(customer);
            return None;
        }
        // A customer whose outcome is unknown keeps its intent open.
        if entry.as_ref().is_none_or(|e| e.close_intent) {
            batch.closed.push(customer.clone());
        }
        batch.outcomes.extend(entry);
        // An outage is not many bad customers: stop after a streak of failures with
        // nothing getting through, instead of spending the retry budget on every
        // remaining customer.
        *failed_in_a_row = if done == Done::Failed {
            *failed_in_a_row + 1
        } else {
            0
        };
        let out = (*failed_in_a_row >= UNREACHABLE_AFTER).then(|| reason.clone());
        report.count(customer, done, reason);
        out
    }

    /// The tasks, batch by batch, each batch only once its intents are durable.
    fn feed<'a>(
        &'a self,
        feeder: Feeder<std::vec::IntoIter<Task>>,
        shared: &'a Shared,
        run_id: &'a str,
    ) -> impl Stream<Item = (u64, Task)> + Send + 'a {
        futures::stream::unfold(feeder, move |mut feeder| async move {
            loop {
                if let Some(task) = feeder.current.next() {
                    return Some(((feeder.number, task), feeder));
                }
                let (number, opening, batch) = feeder.next.take()?;
                // A few batches open at a time: one slow answer holds back the commits of
                // the batches after it, and what a crash leaves to settle grows with them.
                loop {
                    let open = locked(&shared.in_flight).len();
                    if open < OPEN_BATCHES {
                        break;
                    }
                    shared.completed.notified().await;
                }
                let intents = match journal_done(opening).await {
                    Ok(intents) if !shared.stop.load(Ordering::SeqCst) => intents,
                    opened => {
                        if let Err(e) = opened {
                            shared.stop.store(true, Ordering::SeqCst);
                            *locked(&shared.feed_error) = Some(e);
                        }
                        // Never sent: its entry, if written, is dropped, not settled.
                        *locked(&shared.unsent) =
                            Some(IntentBatch::new(self.sink_name(), run_id, number));
                        return None;
                    }
                };
                locked(&shared.in_flight).insert(number, InFlight::new(intents, batch.len()));
                let following: Vec<Task> = feeder
                    .tasks
                    .by_ref()
                    .take(self.settings.flush_every)
                    .collect();
                if !following.is_empty() {
                    let opening = self.start_intents(&following, run_id, number + 1);
                    feeder.next = Some((number + 1, opening, following));
                }
                feeder.current = batch.into_iter();
                feeder.number = number;
            }
        })
    }

    /// Starts writing a batch's intents, on another thread like the commits: the
    /// requests in flight go on meanwhile. Await it with `journal_done`.
    fn start_intents(
        &self,
        batch: &[Task],
        run_id: &str,
        number: u64,
    ) -> JoinHandle<anyhow::Result<IntentBatch>> {
        let sink = self.sink_name();
        let mut key = IntentBatch::new(sink, run_id, number);
        let intents: Vec<_> = batch.iter().map(|t| t.intent(sink, run_id)).collect();
        let recorder = self.journal.recorder();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
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
        let span = tracing::Span::current();
        let committing = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            recorder.record_batch(batch.outcomes, &batch.intents, &batch.closed)?;
            recorder.flush()
        });
        (committing, previous)
    }
}
