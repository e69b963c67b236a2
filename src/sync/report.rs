//! What a run reports: counts, rejections, failures and (for dry runs) the plan.

use serde::Serialize;

use crate::journal::{Counts, Rejection};

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
    /// Customers not written because the register holds another customer under their
    /// number, with why: they wait for a person's `link --accept` or `--skip`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Rejection>,
    /// What the first sync against a populated register does (or would do): only when
    /// the register's customer list was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboarding: Option<Onboarding>,
    /// Why the run stopped before the end, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Only for dry runs: what would be sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Planned>,
    /// How Opter was read: "full" (every customer) or "incremental" (only customers
    /// changed since the last finished run's source cursor).
    pub read: &'static str,
}

/// What writing one customer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Created,
    Updated,
    /// Adopted with the content we would have sent: nothing to write.
    Unchanged,
    /// Not sent: the run was stopping.
    Skipped,
    Rejected,
    Failed,
    /// Not written: the register holds another customer under this number.
    Conflict,
}

/// How the customers Opter has and the register's customers come together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Onboarding {
    /// Customers the register's customer list was read for (the register index).
    pub register_customers: u64,
    /// Found in the register under their number, holding what we would send.
    pub linked_unchanged: u64,
    /// Found in the register under their number as the same customer, and updated.
    pub linked_updated: u64,
    /// Not in the register: created.
    pub created: u64,
    /// The register holds another customer under the number: not written.
    pub conflict: u64,
    /// Register customers with no Opter counterpart among the customers read: left
    /// alone, never deleted. Only counted when every Opter customer was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_only: Option<u64>,
}

impl Report {
    pub(super) fn new(run_id: String, dry_run: bool, read: &'static str) -> Report {
        Report {
            run_id,
            dry_run,
            counts: Counts::default(),
            rejections: Vec::new(),
            failures: Vec::new(),
            conflicts: Vec::new(),
            onboarding: None,
            stopped: None,
            plan: Vec::new(),
            read,
        }
    }

    pub(super) fn count(&mut self, customer: String, done: Done, reason: String) {
        match done {
            Done::Created => self.counts.created += 1,
            Done::Updated => self.counts.updated += 1,
            Done::Unchanged => self.counts.unchanged += 1,
            Done::Skipped => {}
            Done::Rejected => {
                self.counts.rejected += 1;
                self.rejections.push(Rejection { customer, reason });
            }
            Done::Failed => {
                self.counts.failed += 1;
                self.failures.push(Rejection { customer, reason });
            }
            Done::Conflict => self.conflict(customer, reason),
        }
    }

    /// A customer not written for a conflict with the register.
    pub(super) fn conflict(&mut self, customer: String, reason: String) {
        self.counts.conflict += 1;
        self.conflicts.push(Rejection { customer, reason });
    }

    /// Rejections and failures in customer order, as printed and stored.
    pub(super) fn sort(&mut self) {
        self.rejections.sort_by(|a, b| a.customer.cmp(&b.customer));
        self.failures.sort_by(|a, b| a.customer.cmp(&b.customer));
        self.conflicts.sort_by(|a, b| a.customer.cmp(&b.customer));
    }
}
