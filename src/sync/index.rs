//! The register index: the register's customers by number, read once, page by page,
//! before customers the journal does not know are created; and onboarding, which links
//! each such customer to the register customer under its number, or reports a conflict.
//!
//! Architecture invariant: a customer with no journal state is created only when the
//! register has nothing under its number (by the index, a lookup, or the register's own
//! refusal of a second customer); else it is linked only as `link::compare` allows.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use serde_json::Value;

use super::link::{compare, Found};
use super::plan::Task;
use super::report::Onboarding;
use super::{Engine, Planned, Report};
use crate::error::Result;
use crate::journal::{Hold, HoldKind, Operation, Outcome, State};
use crate::mapping::MappedRecord;
use crate::sink::{Remote, SinkError};

/// Pages read at most: far more than any register holds, so a register that never says
/// "last page" cannot keep a run reading.
const MOST_PAGES: u32 = 10_000;

/// Customers listed at most.
const MOST_CUSTOMERS: usize = 2_000_000;

/// Up to this many new customers, once the journal knows the register, are simply
/// created: the register refuses a number in use, and `adopt` then decides as the index
/// would, for a request or two instead of every page of the register.
const CREATES_WITHOUT_INDEX: usize = 10;

/// The register's customers by number.
#[derive(Default)]
pub(super) struct RegisterIndex {
    customers: HashMap<String, Listed>,
}

enum Listed {
    One(Remote),
    /// The register lists several customers under one number.
    Many(usize),
}

impl RegisterIndex {
    pub(super) fn len(&self) -> usize {
        self.customers.len()
    }

    pub(super) fn numbers(&self) -> impl Iterator<Item = &str> {
        self.customers.keys().map(String::as_str)
    }

    pub(super) fn contains(&self, number: &str) -> bool {
        self.customers.contains_key(number)
    }

    /// The one customer listed under `number`, if exactly one is.
    pub(super) fn get(&self, number: &str) -> Option<&Remote> {
        match self.customers.get(number) {
            Some(Listed::One(remote)) => Some(remote),
            _ => None,
        }
    }

    /// Register id -> number, for customers listed once under their number.
    pub(super) fn by_id(&self) -> impl Iterator<Item = (&str, &str)> {
        self.customers.iter().filter_map(|(n, l)| match l {
            Listed::One(remote) => Some((remote.id.as_str(), n.as_str())),
            Listed::Many(_) => None,
        })
    }
}

impl Engine {
    /// Reads the register's whole customer list.
    pub(super) async fn register_index(&self) -> std::result::Result<RegisterIndex, SinkError> {
        let mut index = RegisterIndex::default();
        let mut ids: HashSet<String> = HashSet::new();
        let unreadable = |page: u32, what: &str| SinkError::Failed {
            status: None,
            message: format!(
                "{} answered page {} of its customer list {what}; the list cannot be read",
                self.product(),
                page + 1
            ),
        };
        for page in 0..MOST_PAGES {
            let listed = self.sink.customers_page(page).await?;
            let empty = listed.customers.is_empty();
            let mut new = 0;
            for (number, remote) in listed.customers {
                // Paging by offset shows a customer twice when one is added meanwhile:
                // one customer, listed again.
                if !ids.insert(remote.id.clone()) {
                    continue;
                }
                new += 1;
                match index.customers.get_mut(&number) {
                    None => {
                        index.customers.insert(number, Listed::One(remote));
                    }
                    Some(Listed::One(_)) => {
                        index.customers.insert(number, Listed::Many(2));
                    }
                    Some(Listed::Many(n)) => *n += 1,
                }
            }
            if !empty && new == 0 {
                return Err(unreadable(page, "with customers it had listed already"));
            }
            if ids.len() > MOST_CUSTOMERS {
                return Err(unreadable(page, "past the most customers a register holds"));
            }
            if !listed.more || empty {
                tracing::info!(
                    customers = index.len(),
                    pages = page + 1,
                    "read the register's customer list"
                );
                return Ok(index);
            }
        }
        Err(SinkError::Failed {
            status: None,
            message: format!(
                "{} kept answering its customer list after {MOST_PAGES} pages; stopped \
                 reading it",
                self.product()
            ),
        })
    }

    /// Decides, for each customer the journal has no state for, whether it is created,
    /// linked (unchanged or to be updated) or a conflict; records links and conflicts
    /// (unless `dry_run`) and returns the writes left to make. `numbers` is every
    /// register number the read mapped to, for counting register-only customers after a
    /// full read.
    pub(super) async fn onboard(
        &self,
        tasks: Vec<Task>,
        numbers: Option<HashSet<String>>,
        run_id: &str,
        actor: &str,
        report: &mut Report,
        dry_run: bool,
    ) -> Result<Vec<Task>> {
        let creates = tasks
            .iter()
            .filter(|t| matches!(t, Task::Create(_)))
            .count();
        if creates == 0 {
            return Ok(tasks);
        }
        let first_writes = !self.journal.knows_any(self.sink_name())?;
        if !(dry_run || first_writes || creates > CREATES_WITHOUT_INDEX) {
            return Ok(tasks);
        }
        let index = match self.register_index().await {
            Ok(index) => index,
            Err(e) if e.stops_the_run() => return Err(e.into()),
            // Creating stays safe without it: the register refuses a number in use, and
            // `adopt` then decides as the index would.
            Err(e) => {
                tracing::warn!(
                    "cannot read the register's customer list, creating without it: {e}"
                );
                return Ok(tasks);
            }
        };
        let mut onboarding = Onboarding {
            register_customers: index.len() as u64,
            ..Onboarding::default()
        };
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let record = match task {
                Task::Create(record) => record,
                other => {
                    out.push(other);
                    continue;
                }
            };
            let found = match index.customers.get(&record.number) {
                None => None,
                Some(Listed::One(remote)) => match self.sink.complete(remote.clone()).await {
                    Ok(remote) => Some(remote),
                    Err(e) if e.stops_the_run() => return Err(e.into()),
                    // Left to the create, which the register refuses, and `adopt`.
                    Err(e) => {
                        tracing::info!(customer = %record.code, "cannot read it whole: {e}");
                        out.push(Task::Create(record));
                        continue;
                    }
                },
                Some(Listed::Many(n)) => {
                    let reason = format!(
                        "{} lists {n} customers with {} {}; linking one of them would be a \
                         guess. Make the number unique in {}, then sync again.",
                        self.product(),
                        self.mapping.rules().number_field,
                        record.number,
                        self.product(),
                    );
                    onboarding.conflict += 1;
                    if !dry_run {
                        self.record_conflict(&record, None, run_id, actor)?;
                    }
                    report.conflict(record.code.clone(), reason);
                    continue;
                }
            };
            let Some(remote) = found else {
                onboarding.created += 1;
                out.push(Task::Create(record));
                continue;
            };
            match self.link(&record, &remote, run_id, actor, dry_run)? {
                Linked::Unchanged => {
                    onboarding.linked_unchanged += 1;
                    report.counts.unchanged += 1;
                }
                Linked::Update(_) if dry_run => {
                    // What changes is what the register holds now, not what was sent.
                    onboarding.linked_updated += 1;
                    report.counts.updated += 1;
                    let holds = |k: &str| remote.fields.get(k).unwrap_or(&Value::Null);
                    report.plan.push(Planned {
                        customer: record.code.clone(),
                        operation: "update",
                        fields: record
                            .fields
                            .iter()
                            .filter(|(k, v)| holds(k) != *v)
                            .map(|(k, _)| k.clone())
                            .collect(),
                    });
                }
                Linked::Update(state) => {
                    onboarding.linked_updated += 1;
                    out.push(Task::Update {
                        remote_id: remote.id.clone(),
                        record,
                        previous: Some(state),
                    });
                }
                Linked::Conflict(reason) => {
                    onboarding.conflict += 1;
                    report.conflict(record.code.clone(), reason);
                }
            }
        }
        onboarding.register_only =
            numbers.map(|numbers| index.numbers().filter(|n| !numbers.contains(*n)).count() as u64);
        report.onboarding = Some(onboarding);
        Ok(out)
    }

    /// Links `record` to the register's customer under its number if `compare` allows:
    /// records the link (with what the register holds, as state), or the conflict.
    pub(super) fn link(
        &self,
        record: &MappedRecord,
        remote: &Remote,
        run_id: &str,
        actor: &str,
        dry_run: bool,
    ) -> Result<Linked> {
        let state = State {
            remote_id: remote.id.clone(),
            content_hash: self.mapping.remote_hash(&remote.fields),
            last_seq: 0,
        };
        let found = compare(&self.mapping, record, remote);
        if dry_run {
            return Ok(match found {
                Found::Unchanged => Linked::Unchanged,
                Found::Same => Linked::Update(state),
                Found::Conflict(reason) => Linked::Conflict(reason),
            });
        }
        match found {
            Found::Conflict(reason) => {
                self.record_conflict(record, Some(&remote.id), run_id, actor)?;
                Ok(Linked::Conflict(reason))
            }
            found => {
                let mut event = self.event(&record.code, run_id, actor, Operation::Adopt);
                event.remote_id = Some(remote.id.clone());
                event.message = Some(
                    match found {
                        Found::Unchanged => "linked: the register holds what Opter has",
                        _ => "linked: the same customer by name or contact email",
                    }
                    .into(),
                );
                self.journal.record(event, Some(state.clone()), false)?;
                tracing::info!(customer = %record.code, "linked to the register's customer");
                Ok(match found {
                    Found::Unchanged => Linked::Unchanged,
                    _ => Linked::Update(state),
                })
            }
        }
    }

    /// Holds the customer as a conflict (nothing is sent until a person decides) and
    /// records it.
    fn record_conflict(
        &self,
        record: &MappedRecord,
        remote_id: Option<&str>,
        run_id: &str,
        actor: &str,
    ) -> Result<()> {
        tracing::info!(customer = %record.code, "conflict with the register: not written");
        // Kept without names (the report shows them masked): holds carry no personal data.
        let rules = self.mapping.rules();
        let reason = format!(
            "{} holds another customer under {} {}; nothing is written until a person \
             decides: `opter-visma-sync link --customer {} --accept` (it is this customer) or \
             `--skip` (never send it)",
            rules.product, rules.number_field, record.number, record.code
        );
        let hold = Hold {
            since: Utc::now(),
            actor: actor.to_string(),
            reason: reason.clone(),
            outcome: None,
            remote_id: remote_id.map(str::to_string),
            number: Some(record.number.clone()),
        };
        let mut event = self.event(&record.code, run_id, actor, Operation::Adopt);
        event.outcome = Outcome::Conflict;
        event.remote_id = remote_id.map(str::to_string);
        event.message = Some(reason);
        // The event first: cut off before the hold, the next sync decides again.
        self.journal.record(event, None, false)?;
        self.journal
            .set_hold(HoldKind::Conflict, &record.code, &hold)?;
        Ok(())
    }
}

/// What linking came to.
pub(super) enum Linked {
    Unchanged,
    /// Linked; the update to send starts from this state.
    Update(State),
    Conflict(String),
}
