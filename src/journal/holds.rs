//! Support holds (suppressions after a purge, restrictions) and the full read that lifting
//! one forces on the next sync.

use chrono::{DateTime, Utc};

use super::store::{decode, FORCE_FULL_READ, LAST_FULL_READ};
use super::{Hold, HoldKind, Journal};

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
        !self.holds(kind).is_empty()
    }

    pub fn hold(&self, kind: HoldKind, code: &str) -> anyhow::Result<Option<Hold>> {
        self.holds(kind)
            .get(code.as_bytes())?
            .map(|v| decode(&v, "hold"))
            .transpose()
    }

    pub fn set_hold(&self, kind: HoldKind, code: &str, hold: &Hold) -> anyhow::Result<()> {
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
