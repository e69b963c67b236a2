//! Support staff's tools for one customer: purge (erasure that sticks), replay
//! (rectification), restrict / unrestrict, unsuppress, export (access).
//!
//! Architecture invariant: every action records one journal event with actor
//! `support:<name>` and the reason, and none of those events carries personal data.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::Connector;
use crate::error::{Error, Result};
use crate::journal::{Event, Hold, HoldKind, Operation, Outcome, State};
use crate::sink::Erased;
use crate::sync::{Report, SyncOptions};

pub use crate::sink::ERASED_NAME;

/// Proof of an erasure, printed by `purge` and kept (without personal data) as an event.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub customer: String,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    /// `deleted`, `anonymised` or `not present`.
    pub register: String,
    pub events_redacted: u64,
    pub receipt_event: u64,
    pub journal_verified: bool,
    /// The exit code of the verification afterwards (0 when verified).
    #[serde(skip)]
    pub verify_exit: u8,
}

fn support_event(
    c: &Connector,
    code: &str,
    actor: &str,
    operation: Operation,
    reason: &str,
) -> Event {
    Event {
        seq: 0,
        time: Utc::now(),
        run_id: format!("support-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")),
        actor: actor.to_string(),
        customer: code.to_string(),
        sink: c.config.sink_name().to_string(),
        operation,
        outcome: Outcome::Succeeded,
        http_status: None,
        error_code: None,
        message: Some(reason.to_string()),
        remote_id: None,
        fields: Vec::new(),
        values: None,
        chain: Default::default(),
    }
}

/// The register's id for the customer: from the journal, else looked up by its code.
async fn remote_id(c: &Connector, code: &str) -> Result<Option<String>> {
    if let Some(state) = c.journal.state(c.config.sink_name(), code)? {
        return Ok(Some(state.remote_id));
    }
    let found = c.sink.find_by_number(code).await?;
    Ok(found.map(|r| r.id))
}

/// Erases the customer everywhere this connector put it. The suppression comes first
/// and is durable, so no sync re-creates the customer meanwhile. Consumes the connector:
/// the journal is rewritten (compacted) at the end so no stale copy survives.
pub async fn purge(c: Connector, code: &str, actor: &str, reason: &str) -> Result<Receipt> {
    let hold = Hold {
        since: Utc::now(),
        actor: actor.into(),
        reason: reason.into(),
        outcome: None,
        remote_id: None,
        number: None,
    };
    c.journal.set_hold(HoldKind::Suppressed, code, &hold)?;
    c.journal.flush().await?;

    let (operation, register, status, id) = match remote_id(&c, code).await? {
        None => (Operation::Erase, "not present", None, None),
        Some(id) => {
            // Names this erasure, for registers that honour idempotency keys.
            let key = format!("purge-{code}-{}", hold.since.timestamp_millis());
            match c.sink.erase(&id, &key).await? {
                Erased::Deleted { status } => (Operation::Erase, "deleted", Some(status), Some(id)),
                Erased::Anonymised { status } => {
                    (Operation::Anonymise, "anonymised", Some(status), Some(id))
                }
                Erased::NotPresent => (Operation::Erase, "not present", None, Some(id)),
            }
        }
    };
    let events_redacted = c.journal.erase_customer(code)?;
    let mut event = support_event(&c, code, actor, operation, &format!("purge: {reason}"));
    event.http_status = status;
    event.remote_id = id;
    let receipt_event = c.journal.record(event, None, true)?;
    let hold = Hold {
        outcome: Some(register.to_string()),
        ..hold
    };
    c.journal.set_hold(HoldKind::Suppressed, code, &hold)?;
    c.journal.flush().await?;

    let dir = c.journal.dir().to_path_buf();
    drop(c);
    crate::journal::compact(&dir)?;
    let verification = crate::journal::Journal::open(&dir)?.verify()?;
    let verified = verification.problems.is_empty();
    Ok(Receipt {
        customer: code.to_string(),
        time: Utc::now(),
        actor: actor.to_string(),
        reason: reason.to_string(),
        register: register.to_string(),
        events_redacted,
        receipt_event,
        journal_verified: verified,
        verify_exit: verification.exit_code(),
    })
}

/// Sets or lifts a hold, recording the action. `Ok(false)` when nothing changed.
pub async fn set_hold(
    c: &Connector,
    code: &str,
    actor: &str,
    reason: &str,
    kind: HoldKind,
    on: bool,
) -> Result<bool> {
    let changed = if on {
        let exists = c.journal.hold(kind, code)?.is_some();
        let hold = Hold {
            since: Utc::now(),
            actor: actor.into(),
            reason: reason.into(),
            outcome: None,
            remote_id: None,
            number: None,
        };
        c.journal.set_hold(kind, code, &hold)?;
        !exists
    } else {
        c.journal.lift_hold(kind, code)?
    };
    let operation = match (kind, on) {
        (HoldKind::Restricted, true) => Operation::Restrict,
        (HoldKind::Restricted, false) => Operation::Unrestrict,
        (HoldKind::Suppressed, false) => Operation::Unsuppress,
        (HoldKind::Suppressed, true) => unreachable!("suppression is set by purge"),
        (HoldKind::Conflict | HoldKind::Skipped, _) => unreachable!("set by `link`"),
    };
    c.journal.record(
        support_event(c, code, actor, operation, reason),
        None,
        false,
    )?;
    c.journal.flush().await?;
    if kind == HoldKind::Suppressed && !on {
        // Last: a crash before this leaves the customer held, and verify says so.
        c.journal.unlist_suppression(code)?;
    }
    Ok(changed)
}

/// A person's decision on a customer in conflict: `accept` links it to the register
/// customer under its number (the next sync updates that customer), else it is never
/// sent. Returns what now happens, for the person.
pub async fn link(
    c: &Connector,
    code: &str,
    accept: bool,
    actor: &str,
    reason: &str,
) -> Result<&'static str> {
    let conflict = c.journal.hold(HoldKind::Conflict, code)?;
    let skipped = c.journal.hold(HoldKind::Skipped, code)?;
    let decided = conflict.clone().or(skipped.clone());
    if accept {
        let Some(hold) = decided else {
            let known = c.journal.state(c.config.sink_name(), code)?.is_some();
            return Err(Error::config(if known {
                format!("customer {code} is linked already: sync keeps it in step")
            } else {
                format!(
                    "customer {code} is not in conflict: `link --accept` decides a conflict \
                     that `sync` reported"
                )
            }));
        };
        let Some(remote_id) = hold.remote_id else {
            // No one register customer to take (several under the number, or a skip
            // decided before any conflict): the next sync decides afresh, as onboarding.
            c.journal.record(
                support_event(c, code, actor, Operation::Link, reason),
                None,
                false,
            )?;
            for kind in [HoldKind::Conflict, HoldKind::Skipped] {
                c.journal.lift_hold(kind, code)?;
            }
            c.journal.flush().await?;
            return Ok(
                "released: the next sync creates it, links it to the same customer, \
                       or reports a conflict again",
            );
        };
        // No content is known to be the register's: the next sync sends Opter's fields.
        let state = State {
            remote_id: remote_id.clone(),
            content_hash: c.mapping.remote_hash(&Value::Null),
            last_seq: 0,
        };
        let mut event = support_event(c, code, actor, Operation::Link, reason);
        event.remote_id = Some(remote_id);
        c.journal.record(event, Some(state), false)?;
        for kind in [HoldKind::Conflict, HoldKind::Skipped] {
            c.journal.lift_hold(kind, code)?;
        }
        c.journal.flush().await?;
        return Ok("linked: the next sync writes Opter's fields to the register's customer");
    }
    let hold = Hold {
        since: Utc::now(),
        actor: actor.into(),
        reason: reason.into(),
        outcome: None,
        remote_id: decided.as_ref().and_then(|h| h.remote_id.clone()),
        number: decided.and_then(|h| h.number),
    };
    c.journal.record(
        support_event(c, code, actor, Operation::Skip, reason),
        None,
        false,
    )?;
    c.journal.set_hold(HoldKind::Skipped, code, &hold)?;
    if conflict.is_some() {
        c.journal.lift_hold(HoldKind::Conflict, code)?;
    }
    c.journal.flush().await?;
    Ok(if skipped.is_some() {
        "skipped (it already was): sync never sends it"
    } else {
        "skipped: sync never sends it; `link --accept` undoes this"
    })
}

/// Sends the customers' current permitted fields again, even if unchanged.
pub async fn replay(
    c: &Connector,
    codes: Vec<String>,
    actor: &str,
    reason: &str,
) -> Result<(Report, Option<Error>)> {
    for code in &codes {
        // A held customer is not sent, so a replay of it would record a send that is not.
        for kind in HoldKind::ALL {
            if c.journal.hold(kind, code)?.is_some() {
                let (what, lift) = match kind {
                    HoldKind::Suppressed => ("suppressed after a purge", "`unsuppress`"),
                    HoldKind::Restricted => ("restricted", "`unrestrict`"),
                    HoldKind::Conflict => (
                        "in conflict with a register customer under its number",
                        "`link --accept` or `link --skip`",
                    ),
                    HoldKind::Skipped => ("skipped by a person's decision", "`link --accept`"),
                };
                return Err(Error::config(format!(
                    "customer {code} is {what}: nothing is sent for it; decide or lift that \
                     first ({lift})"
                )));
            }
        }
        c.journal.record(
            support_event(c, code, actor, Operation::Replay, reason),
            None,
            false,
        )?;
    }
    let options = SyncOptions {
        dry_run: false,
        full: true,
        replay: Some(codes),
        actor: actor.to_string(),
    };
    c.sync(&options).await
}

/// Customers whose last event was rejected or failed.
pub fn failed_customers(c: &Connector) -> Result<Vec<String>> {
    let mut last: std::collections::BTreeMap<String, Outcome> = Default::default();
    for e in c.journal.events(None, None)?.into_iter().rev() {
        if !matches!(
            e.operation,
            Operation::Create
                | Operation::Update
                | Operation::Adopt
                | Operation::Settle
                | Operation::Link
        ) {
            continue;
        }
        last.insert(e.customer, e.outcome);
    }
    let mut failed = Vec::new();
    for (code, outcome) in last {
        let mut held = false;
        for kind in HoldKind::ALL {
            held |= c.journal.hold(kind, &code)?.is_some();
        }
        if outcome != Outcome::Succeeded && !held {
            failed.push(code);
        }
    }
    Ok(failed)
}

/// Everything held about the customer, as one JSON document (GDPR access).
pub async fn export(c: &Connector, code: &str, actor: &str, reason: &str) -> Result<Value> {
    let events: Vec<Value> = c
        .journal
        .events(Some(code), None)?
        .iter()
        .rev()
        .map(|e| crate::output::event_json(e, true))
        .collect();
    let state = c.journal.state(c.config.sink_name(), code)?;
    let register = match &state {
        Some(s) => c.sink.get(&s.remote_id).await?,
        None => c.sink.find_by_number(code).await?,
    }
    .map(|r| r.record);
    let hold = |kind| -> Result<Value> {
        Ok(serde_json::to_value(c.journal.hold(kind, code)?).expect("serialises"))
    };
    let document = json!({
        "customer": code,
        "exported_at": Utc::now().to_rfc3339(),
        "exported_by": actor,
        "sink": c.config.sink_name(),
        "state": state,
        "suppression": hold(HoldKind::Suppressed)?,
        "restriction": hold(HoldKind::Restricted)?,
        "conflict": hold(HoldKind::Conflict)?,
        "skip": hold(HoldKind::Skipped)?,
        "journal_events": events,
        "register_record": register,
    });
    c.journal.record(
        support_event(c, code, actor, Operation::Export, reason),
        None,
        false,
    )?;
    c.journal.flush().await?;
    Ok(document)
}
