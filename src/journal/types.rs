//! The journal's records: events, states, intents, runs and holds, and how each is
//! stored (`encoding`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::encoding;
use super::Chain;

/// One event to append, with the state it sets and whether it closes the intent.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event: Event,
    pub state: Option<State>,
    pub close_intent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    /// The customer already existed in the register with our number and is the same
    /// customer (what it holds, its name or its contact email); we took its id. With
    /// outcome `Conflict`: it is another customer, and nothing was written.
    Adopt,
    /// An update was interrupted (its outcome unknown); we read what the register holds.
    Settle,
    /// Support: the customer was deleted from the register (GDPR erasure).
    Erase,
    /// Support: the register refused deletion; personal fields were overwritten instead.
    Anonymise,
    /// Support: a suppression (after a purge) was lifted.
    Unsuppress,
    /// Support: updates stopped for the customer (GDPR restriction).
    Restrict,
    /// Support: updates resumed.
    Unrestrict,
    /// Support: the customer was sent again although unchanged.
    Replay,
    /// Support: everything held about the customer was exported (GDPR access).
    Export,
    /// Support: a person decided that the register customer under this customer's
    /// number is this customer (`link --accept`).
    Link,
    /// Support: a person decided that this customer is never sent (`link --skip`).
    Skip,
    /// A suppression carried from the suppression file into a new journal (the one that
    /// recorded its purge was lost).
    Suppress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    /// The register refused the content (validation, conflict): fix data, retried next run.
    Rejected,
    /// The call did not succeed for a transient reason (after retries): retried next run.
    Failed,
    /// Not written: the register holds another customer under this number. Stays so
    /// until a person decides (`link --accept` or `--skip`).
    Conflict,
}

// Stored by position: append new variants to these lists, never reorder them.
impl encoding::Variants for Operation {
    const ALL: &'static [Self] = &[
        Operation::Create,
        Operation::Update,
        Operation::Adopt,
        Operation::Settle,
        Operation::Erase,
        Operation::Anonymise,
        Operation::Unsuppress,
        Operation::Restrict,
        Operation::Unrestrict,
        Operation::Replay,
        Operation::Export,
        Operation::Link,
        Operation::Skip,
        Operation::Suppress,
    ];
}

impl encoding::Variants for Outcome {
    const ALL: &'static [Self] = &[
        Outcome::Succeeded,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Conflict,
    ];
}

/// The journal's own name for an operation or outcome (`create`, `succeeded`...).
pub fn name_of(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One write (or attempted write) to a register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    #[serde(with = "encoding::time")]
    pub time: DateTime<Utc>,
    #[serde(with = "encoding::run_id")]
    pub run_id: String,
    #[serde(with = "encoding::word")]
    pub actor: String,
    pub customer: String,
    #[serde(with = "encoding::word")]
    pub sink: String,
    #[serde(with = "encoding::variant")]
    pub operation: Operation,
    #[serde(with = "encoding::variant")]
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// The register's own error code, e.g. eAccounting's `4000`.
    pub error_code: Option<String>,
    /// The register's message, or ours for failures without a response.
    pub message: Option<String>,
    #[serde(default, with = "encoding::id_text::opt")]
    pub remote_id: Option<String>,
    /// Names of the register fields sent.
    pub fields: Vec<String>,
    /// Values sent, keyed by register field (permitted fields only). `None` when
    /// nothing was sent, or once redacted (retention, purge).
    #[serde(default, with = "encoding::field_values")]
    pub values: Option<BTreeMap<String, Value>>,
    /// Hash chain and values digest (see `chain`).
    #[serde(default)]
    pub chain: Chain,
}

/// What the journal knows about one customer in one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(with = "encoding::id_text")]
    pub remote_id: String,
    /// Hash of what was last sent successfully.
    #[serde(with = "encoding::hex_digest")]
    pub content_hash: String,
    pub last_seq: u64,
}

/// What the journal holds of a customer compared with what would be sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Nothing was ever sent (or the customer was erased).
    Never,
    /// What was last sent has the same content hash.
    Same,
    /// The stored state, decoded: what was last sent differs (and, for a replay, which
    /// sends whatever was sent before, every stored state).
    Other(State),
}

/// A write about to be sent, made durable before the request leaves. An intent still
/// open at the start of a run means the previous run died not knowing the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    #[serde(with = "encoding::variant")]
    pub operation: Operation,
    /// SHA-256 of sink, run, customer code and content hash: names this exact write
    /// (and, per request, e-conomic's `Idempotency-Key`).
    #[serde(with = "encoding::hex_digest")]
    pub key: String,
    /// The register's number for the customer: how it is found again.
    pub number: String,
    #[serde(with = "encoding::hex_digest")]
    pub content_hash: String,
    #[serde(with = "encoding::run_id")]
    pub run_id: String,
    #[serde(with = "encoding::time")]
    pub started: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Not sent: updates stopped by `restrict`.
    #[serde(default)]
    pub restricted: u64,
    /// Not sent: purged, and suppressed until `unsuppress`.
    #[serde(default)]
    pub suppressed: u64,
    /// Not sent: the register holds another customer under the number (until `link`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conflict: u64,
    /// Not sent: a person decided so with `link --skip`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A support hold on one customer (suppression after a purge, or a restriction). Holds
/// no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub since: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    /// For a purge: what happened in the register (deleted, anonymised, not present).
    #[serde(default)]
    pub outcome: Option<String>,
    /// For a conflict or a skip: the register customer it is about, and its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// Purged: never sent again until lifted.
    Suppressed,
    /// Restricted: kept, but no updates are sent.
    Restricted,
    /// The register holds another customer under this one's number: nothing is sent
    /// until a person decides with `link`.
    Conflict,
    /// A person decided with `link --skip` that this customer is never sent.
    Skipped,
}

impl HoldKind {
    pub const ALL: [HoldKind; 4] = [
        HoldKind::Suppressed,
        HoldKind::Restricted,
        HoldKind::Conflict,
        HoldKind::Skipped,
    ];

    /// The hold's name in JSON answers.
    pub fn name(self) -> &'static str {
        match self {
            HoldKind::Suppressed => "suppressed",
            HoldKind::Restricted => "restricted",
            HoldKind::Conflict => "conflict",
            HoldKind::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub customer: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub sink: String,
    pub started: DateTime<Utc>,
    /// `None` while running, or when the run was cut short.
    pub finished: Option<DateTime<Utc>>,
    pub counts: Counts,
    pub rejections: Vec<Rejection>,
    /// A short reason when the run could not finish.
    pub error: Option<String>,
    /// The source cursor: the highest `updated` of the customers this run read (for an
    /// incremental read, at least the cursor it started from). The next run reads what
    /// changed since then; `None` when nothing read had an `updated`.
    #[serde(default)]
    pub cursor: Option<DateTime<Utc>>,
    /// Fingerprint of the mapping (and register rules) this run used: a run with another
    /// mapping must read everything, since every customer's content may have changed.
    #[serde(default)]
    pub mapping: Option<String>,
    /// A support replay of chosen customers: says nothing about the others, so the next
    /// sync does not take it as the last full picture.
    #[serde(default)]
    pub replay: bool,
}
