//! Support holds (suppressions after a purge, restrictions) and the full read that lifting
//! one forces on the next sync. A suppression is also listed in the suppression file
//! (`folder`), written before sled, and held from either.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::folder;
use super::store::{decode, FORCE_FULL_READ, LAST_FULL_READ};
use super::{Event, Hold, HoldKind, Journal, Operation, Outcome};

/// The actor of the events that carry the suppression file into a new journal.
const CARRIED_BY: &str = "journal";

impl Journal {
    pub(super) fn holds_tree(&self, kind: HoldKind) -> &sled::Tree {
        self.holds(kind)
    }

    fn holds(&self, kind: HoldKind) -> &sled::Tree {
        match kind {
            HoldKind::Suppressed => &self.suppressed,
            HoldKind::Restricted => &self.restricted,
            HoldKind::Conflict => &self.conflicts,
            HoldKind::Skipped => &self.skipped,
        }
    }

    /// Whether any customer is held this way: planning skips the per-customer lookup
    /// when none is, which is the usual case.
    pub fn any_hold(&self, kind: HoldKind) -> bool {
        !self.holds(kind).is_empty() || (kind == HoldKind::Suppressed && !self.listed().is_empty())
    }

    pub fn hold(&self, kind: HoldKind, code: &str) -> anyhow::Result<Option<Hold>> {
        let held = self
            .holds(kind)
            .get(code.as_bytes())?
            .map(|v| decode(&v, "hold"))
            .transpose()?;
        if held.is_none() && kind == HoldKind::Suppressed && self.listed().contains(code) {
            // Only the file has it (a purge cut off, or a restored older database).
            return Ok(Some(Hold {
                since: Utc::now(),
                actor: CARRIED_BY.into(),
                reason: "listed in the suppression file".into(),
                outcome: None,
                remote_id: None,
                number: None,
            }));
        }
        Ok(held)
    }

    /// The customers held this way, by code, at most `most` of them.
    pub fn held(&self, kind: HoldKind, most: usize) -> anyhow::Result<Vec<(String, Hold)>> {
        let mut out = Vec::new();
        for entry in self.holds(kind).iter().take(most) {
            let (key, value) = entry?;
            out.push((
                String::from_utf8_lossy(&key).into_owned(),
                decode(&value, "hold")?,
            ));
        }
        Ok(out)
    }

    fn listed(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.listed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a hold. A suppression is written to the suppression file first (atomically,
    /// durably), so a crash never leaves it in sled alone.
    pub fn set_hold(&self, kind: HoldKind, code: &str, hold: &Hold) -> anyhow::Result<()> {
        if kind == HoldKind::Suppressed {
            folder::check_code(code)?;
            let mut listed = self.listed();
            if !listed.contains(code) {
                let mut with = listed.clone();
                with.insert(code.to_string());
                folder::write_suppressions(&self.dir, &with)?;
                *listed = with;
            }
        }
        self.holds(kind).insert(
            code.as_bytes(),
            serde_json::to_vec(hold).expect("serialises"),
        )?;
        Ok(())
    }

    /// Lifts a hold; `false` when there was none. The next sync reads every customer,
    /// since an incremental read would not see one that did not change meanwhile.
    pub fn lift_hold(&self, kind: HoldKind, code: &str) -> anyhow::Result<bool> {
        self.meta.insert(FORCE_FULL_READ, &[1])?;
        Ok(self.holds(kind).remove(code.as_bytes())?.is_some())
    }

    /// Removes a lifted suppression from the suppression file; called once the
    /// `unsuppress` event is durable, so a crash in between leaves the customer held.
    pub fn unlist_suppression(&self, code: &str) -> anyhow::Result<()> {
        let mut listed = self.listed();
        if listed.contains(code) && self.suppressed.get(code.as_bytes())?.is_none() {
            let mut without = listed.clone();
            without.remove(code);
            folder::write_suppressions(&self.dir, &without)?;
            *listed = without;
        }
        Ok(())
    }

    /// The codes sled holds suppressed.
    pub(super) fn sled_suppressions(&self) -> anyhow::Result<BTreeSet<String>> {
        self.suppressed
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    /// Adds sled's suppressions to the suppression file (after a restore: the file never
    /// holds fewer than the database).
    pub(super) fn list_sled_suppressions(&self) -> anyhow::Result<()> {
        let mut listed = self.listed();
        let mut union = listed.clone();
        union.extend(self.sled_suppressions()?);
        if union != *listed {
            folder::write_suppressions(&self.dir, &union)?;
            *listed = union;
        }
        Ok(())
    }

    /// The codes the suppression file holds that sled does not.
    pub fn listed_only(&self) -> anyhow::Result<Vec<String>> {
        let listed = self.listed().clone();
        let mut only = Vec::new();
        for code in listed {
            if self.suppressed.get(code.as_bytes())?.is_none() {
                only.push(code);
            }
        }
        Ok(only)
    }

    /// In a database this open created (`--new-journal`), records each suppression of
    /// the suppression file as a `suppress` event with its hold, so the new journal
    /// holds and verifies them. Returns how many were carried.
    pub fn carry_suppressions(&self, sink: &str) -> anyhow::Result<usize> {
        if !self.created {
            return Ok(0);
        }
        let codes = self.listed_only()?;
        for code in &codes {
            let now = Utc::now();
            let hold = Hold {
                since: now,
                actor: CARRIED_BY.into(),
                reason: "carried from the suppression file into a new journal".into(),
                outcome: None,
                remote_id: None,
                number: None,
            };
            let event = Event {
                seq: 0,
                time: now,
                run_id: format!("journal-{}", now.format("%Y%m%dT%H%M%S%.3fZ")),
                actor: CARRIED_BY.into(),
                customer: code.clone(),
                sink: sink.to_string(),
                operation: Operation::Suppress,
                outcome: Outcome::Succeeded,
                http_status: None,
                error_code: None,
                message: Some(hold.reason.clone()),
                remote_id: None,
                fields: Vec::new(),
                values: None,
                chain: Default::default(),
            };
            self.set_hold(HoldKind::Suppressed, code, &hold)?;
            self.record(event, None, false)?;
        }
        self.recorder().flush()?;
        Ok(codes.len())
    }

    /// Whether the next sync must read every customer (a hold was lifted).
    pub fn full_read_forced(&self) -> anyhow::Result<bool> {
        Ok(self.meta.get(FORCE_FULL_READ)?.is_some())
    }

    /// When the last complete full read started, if any.
    pub fn last_full_read(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(self
            .meta
            .get(LAST_FULL_READ)?
            .and_then(|v| DateTime::parse_from_rfc3339(&String::from_utf8_lossy(&v)).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Records a complete full read that started at `started`.
    pub fn full_read_done(&self, started: DateTime<Utc>) -> anyhow::Result<()> {
        self.meta
            .insert(LAST_FULL_READ, started.to_rfc3339().as_bytes())?;
        self.meta.remove(FORCE_FULL_READ)?;
        Ok(())
    }
}
