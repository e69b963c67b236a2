//! Settling what a dead run left open, and adopting a customer the register already
//! holds under our number.

use super::index::Linked;
use super::report::Done;
use super::{unreachable, Engine, UNREACHABLE_AFTER};
use crate::error::Result;
use crate::journal::{Operation, State};
use crate::mapping::MappedRecord;
use crate::sink::{SinkError, Written};

impl Engine {
    /// Settles the intents a dead run left open: if the register has the customer, the
    /// write (or an earlier one) landed, so adopt its id and remember what it holds;
    /// the plan then updates it only if its content differs. Otherwise nothing landed.
    pub(super) async fn settle(&self, run_id: &str, actor: &str) -> Result<()> {
        let pending = self.journal.pending_intents(self.sink_name())?;
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
                Err(e) if e.stops_the_run() => return Err(e.into()),
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
                self.journal.close_intent(self.sink_name(), &code)?;
                continue;
            };
            let remote_id = remote.id.clone();
            // An open intent means our write may have landed, in whole or in part (an
            // e-conomic create is three requests), and Opter may have changed since: what
            // is under the number is ours. A create the register refused closes its
            // intent (`SinkError::NotSent`), so an accountant's customer under the number
            // is met here only if a run died between that refusal and its adoption.
            let known = self.journal.state(self.sink_name(), &code)?;
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

    /// Creates the customer; if the register says its number is taken (a lost journal,
    /// or a create whose answer never arrived), adopts it instead of duplicating it.
    /// `operation` ends as the operation the final write was.
    pub(super) async fn create_or_adopt(
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
                match self.adopt(record, key, run_id, actor).await {
                    // The create was refused, so nothing of it landed: the intent closes,
                    // and the next run decides again instead of settling onto whatever is
                    // under the number.
                    Err(SinkError::Failed { status, message }) => {
                        Err(SinkError::NotSent { status, message })
                    }
                    other => other,
                }
            }
            other => other.map(|w| (w, Done::Created)),
        }
    }

    /// The register already has a customer with our number (a lost journal, a create
    /// whose answer never arrived, or the accountant's own): link it if it is the same
    /// customer (then update it if it differs), else hold it as a conflict. The intent
    /// stays open until the update is committed, so a crash in between is settled next run.
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
        let failed = |e: crate::error::Error| SinkError::Failed {
            status: None,
            message: e.to_string(),
        };
        let id = existing.id.clone();
        let unchanged = Written {
            remote_id: id.clone(),
            status: 200,
        };
        match self
            .link(record, &existing, run_id, actor, false)
            .map_err(failed)?
        {
            Linked::Unchanged => Ok((unchanged, Done::Unchanged)),
            Linked::Conflict(reason) => Err(SinkError::Conflict(reason)),
            Linked::Update(_) => {
                let written = self.sink.update(&id, record, key).await?;
                Ok((written, Done::Updated))
            }
        }
    }
}
