//! Planning: every customer read is checked, mapped and hashed, and compared with the
//! journal's state; duplicates are told once the whole read is in. The plan is the
//! list of writes (`Task`s) and the report's counts for everything else.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Engine, Planned, Report};
use crate::error::Result;
use crate::journal::{HoldKind, Outcome, Rejection, Sent, State};
use crate::mapping::MappedRecord;
use crate::record::SourceCustomer;
use crate::source::Unreadable;

/// One write the plan asks for.
pub(super) enum Task {
    Create(MappedRecord),
    Update {
        record: MappedRecord,
        remote_id: String,
        previous: Option<State>,
    },
}

/// Whether any of the writes creates a customer.
pub(super) fn creates_any(tasks: &[Task]) -> bool {
    tasks.iter().any(|t| matches!(t, Task::Create(_)))
}

/// What planning keeps of one customer code until the whole read is in: a few fixed-size
/// facts, so a full read of 100,000 customers stays small.
struct Seen {
    /// Digest of the first copy read.
    first: u64,
    /// The register number it maps to: its position in `Planner::numbers`, or `NO_NUMBER`.
    number: u32,
    /// Further distinct copies (identical copies are one customer read twice, e.g.
    /// across a page boundary that moved while paging): 0 for none (the usual case),
    /// else one more than their position in `Planner::other_copies`.
    others: u32,
    verdict: Verdict,
}

const NO_NUMBER: u32 = u32::MAX;

/// Many short strings in one buffer, by position: a few bytes each instead of a heap
/// allocation each.
#[derive(Default)]
pub(super) struct Texts {
    text: String,
    ends: Vec<u32>,
}

impl Texts {
    fn push(&mut self, s: &str) -> u32 {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u32);
        self.ends.len() as u32 - 1
    }

    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn reserve(&mut self, more: usize) {
        self.ends.reserve(more);
    }

    /// Every distinct text.
    pub(super) fn to_set(&self) -> std::collections::HashSet<String> {
        (0..self.len() as u32)
            .map(|i| self.get(i).to_string())
            .collect()
    }
}

/// The planner's table of customer codes: every code read (in `Texts`) with its `Seen`,
/// indexed by a hash table of positions. About 40 bytes per customer, against more than
/// twice that for a map of strings.
#[derive(Default)]
struct SeenTable {
    codes: Texts,
    entries: Vec<Seen>,
    positions: hashbrown::HashTable<u32>,
}

impl SeenTable {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn reserve(&mut self, seed: &foldhash::fast::FixedState, more: usize) {
        self.codes.reserve(more);
        self.entries.reserve(more);
        let codes = &self.codes;
        self.positions
            .reserve(more, |&j| digest_of(seed, &codes.get(j)));
    }

    fn get_mut(&mut self, seed: &foldhash::fast::FixedState, code: &str) -> Option<&mut Seen> {
        let codes = &self.codes;
        let found = self
            .positions
            .find(digest_of(seed, &code), |&i| codes.get(i) == code)
            .copied();
        found.map(|i| &mut self.entries[i as usize])
    }

    /// Adds a code not in the table yet.
    fn insert(&mut self, seed: &foldhash::fast::FixedState, code: &str, seen: Seen) {
        let i = self.codes.push(code);
        self.entries.push(seen);
        let codes = &self.codes;
        self.positions
            .insert_unique(digest_of(seed, &code), i, |&j| {
                digest_of(seed, &codes.get(j))
            });
    }

    /// Every code with its `Seen`, in the order read.
    fn into_entries(self) -> impl Iterator<Item = (String, Seen)> {
        let SeenTable { codes, entries, .. } = self;
        entries
            .into_iter()
            .enumerate()
            .map(move |(i, seen)| (codes.get(i as u32).to_string(), seen))
    }
}

enum Verdict {
    Held(HoldKind),
    /// Held as a conflict until a person decides; index into `Planner::reasons`.
    Conflict(u32),
    /// Index into `Planner::reasons`.
    Rejected(u32),
    Unchanged,
    /// Index into `Planner::tasks`.
    Write(u32),
}

/// Planning tables are sized from Opter's total up front (no rehash peaks), unless the
/// total is implausible.
const MOST_CUSTOMERS_RESERVED: u64 = 2_000_000;

/// A 64-bit digest, stable within one run (the seed is random per `Planner`). Planning
/// hashes every customer read; foldhash is several times faster than SipHash.
fn digest_of(seed: &foldhash::fast::FixedState, value: &impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    seed.hash_one(value)
}

/// Plans customers as they are read. Duplicate codes and register numbers can only be
/// told once everything is read, so verdicts are final only in `finish`.
pub(super) struct Planner<'e> {
    engine: &'e Engine,
    replay: Option<&'e [String]>,
    seen: SeenTable,
    /// The register number of each customer mapped (see `Seen::number`).
    numbers: Texts,
    /// Digests of further distinct copies of a code (see `Seen::others`).
    other_copies: Vec<Vec<u64>>,
    seed: foldhash::fast::FixedState,
    /// Why customers were rejected by the mapping or could not be read (see
    /// `Verdict::Rejected`).
    reasons: Vec<String>,
    /// Why customers whose code could not be read were rejected; each names where the
    /// customer stood.
    unplaced: Vec<String>,
    /// Whether any customer is held at all, per `HoldKind::ALL`.
    holds: [bool; 4],
    tasks: Vec<Task>,
    pub(super) read: usize,
    pub(super) newest: Option<DateTime<Utc>>,
    /// Customers stamped later than the read allows, and the first one's code.
    pub(super) future: usize,
    pub(super) first_future: Option<String>,
    /// The latest `updated` taken as the present.
    pub(super) latest: DateTime<Utc>,
}

impl<'e> Planner<'e> {
    pub(super) fn new(engine: &'e Engine, replay: Option<&'e [String]>) -> Self {
        Planner {
            engine,
            replay,
            seen: SeenTable::default(),
            numbers: Texts::default(),
            other_copies: Vec::new(),
            seed: foldhash::fast::FixedState::with_seed(rand::random()),
            reasons: Vec::new(),
            unplaced: Vec::new(),
            holds: HoldKind::ALL.map(|kind| engine.journal.any_hold(kind)),
            tasks: Vec::new(),
            read: 0,
            newest: None,
            future: 0,
            first_future: None,
            latest: DateTime::<Utc>::MAX_UTC,
        }
    }

    /// Opter says how many customers are coming.
    pub(super) fn expect(&mut self, total: u64) {
        let total = total.min(MOST_CUSTOMERS_RESERVED) as usize;
        self.seen
            .reserve(&self.seed, total.saturating_sub(self.seen.len()));
        self.numbers
            .reserve(total.saturating_sub(self.numbers.len()));
    }

    pub(super) fn add(&mut self, c: SourceCustomer) -> Result<()> {
        self.read += 1;
        self.newest = self.newest.max(c.updated);
        if c.updated.is_some_and(|t| t > self.latest) {
            self.future += 1;
            if self.first_future.is_none() {
                self.first_future = Some(c.code.clone());
            }
        }
        if self.replay.is_some_and(|codes| !codes.contains(&c.code)) {
            return Ok(());
        }
        let digest = digest_of(&self.seed, &c);
        if self.again(&c.code, digest) {
            return Ok(());
        }
        let engine = self.engine;
        let journal = &engine.journal;
        let permitted = c.into_permitted();
        // First of all: what is held is not looked at further (not even rejected, which
        // would force full reads forever).
        let mut hold = self.hold_of(&permitted.code)?;
        // A conflict is about the number it was found under: renumbered in Opter, the
        // customer is planned afresh.
        if let Some((HoldKind::Conflict, h)) = &hold {
            let now = engine
                .mapping
                .check_and_hash(&permitted)
                .ok()
                .map(|r| r.number);
            if h.number.is_some() && now.is_some() && h.number != now {
                hold = None;
            }
        }
        let mut number = NO_NUMBER;
        let verdict = if let Some((kind, h)) = hold {
            match kind {
                HoldKind::Conflict => {
                    self.reasons.push(h.reason);
                    Verdict::Conflict(self.reasons.len() as u32 - 1)
                }
                kind => Verdict::Held(kind),
            }
        } else {
            match engine.mapping.check_and_hash(&permitted) {
                Err(reason) => {
                    self.reasons.push(reason);
                    Verdict::Rejected(self.reasons.len() as u32 - 1)
                }
                Ok(record) => {
                    number = self.numbers.push(&record.number);
                    let sent = if self.replay.is_some() {
                        // A replay sends what is unchanged too, from its stored state.
                        match journal.state(engine.sink_name(), record.code)? {
                            Some(s) => Sent::Other(s),
                            None => Sent::Never,
                        }
                    } else {
                        journal.state_unless_sent(
                            engine.sink_name(),
                            record.code,
                            &record.content_hash,
                        )?
                    };
                    match sent {
                        Sent::Same => Verdict::Unchanged,
                        Sent::Other(s) => {
                            self.tasks.push(Task::Update {
                                remote_id: s.remote_id.clone(),
                                record: record.into_record(),
                                previous: Some(s),
                            });
                            Verdict::Write(self.tasks.len() as u32 - 1)
                        }
                        Sent::Never => {
                            self.tasks.push(Task::Create(record.into_record()));
                            Verdict::Write(self.tasks.len() as u32 - 1)
                        }
                    }
                }
            }
        };
        self.seen.insert(
            &self.seed,
            &permitted.code,
            Seen {
                first: digest,
                others: 0,
                number,
                verdict,
            },
        );
        Ok(())
    }

    /// A customer the source could not read: rejected with the source's reason (unless
    /// held), by code when it has one. It is never unchanged, so the next run reads it
    /// again (a run with rejections is followed by a full read).
    pub(super) fn add_unreadable(&mut self, u: Unreadable) -> Result<()> {
        self.read += 1;
        let Some(code) = u.code else {
            self.unplaced.push(u.reason);
            return Ok(());
        };
        if self.replay.is_some_and(|codes| !codes.contains(&code)) {
            return Ok(());
        }
        let digest = digest_of(&self.seed, &(&code, &u.reason));
        if self.again(&code, digest) {
            return Ok(());
        }
        let verdict = match self.hold_of(&code)? {
            Some((HoldKind::Conflict, h)) => {
                self.reasons.push(h.reason);
                Verdict::Conflict(self.reasons.len() as u32 - 1)
            }
            Some((kind, _)) => Verdict::Held(kind),
            None => {
                self.reasons.push(u.reason);
                Verdict::Rejected(self.reasons.len() as u32 - 1)
            }
        };
        self.seen.insert(
            &self.seed,
            &code,
            Seen {
                first: digest,
                others: 0,
                number: NO_NUMBER,
                verdict,
            },
        );
        Ok(())
    }

    /// Whether `code` was read before; a further distinct copy is noted for `finish`.
    fn again(&mut self, code: &str, digest: u64) -> bool {
        let Some(seen) = self.seen.get_mut(&self.seed, code) else {
            return false;
        };
        if seen.others == 0 {
            self.other_copies.push(Vec::new());
            seen.others = self.other_copies.len() as u32;
        }
        let others = &mut self.other_copies[seen.others as usize - 1];
        if seen.first != digest && !others.contains(&digest) {
            others.push(digest);
        }
        true
    }

    /// The first hold on `code`, looked up only for the kinds anything is held for.
    fn hold_of(&self, code: &str) -> Result<Option<(HoldKind, crate::journal::Hold)>> {
        for (kind, present) in HoldKind::ALL.into_iter().zip(self.holds) {
            if present {
                if let Some(h) = self.engine.journal.hold(kind, code)? {
                    return Ok(Some((kind, h)));
                }
            }
        }
        Ok(None)
    }

    /// Rejects duplicates, counts what is held or unchanged, returns what to write and
    /// the register number of every customer mapped.
    pub(super) fn finish(self, report: &mut Report) -> Result<(Vec<Task>, Texts)> {
        let Planner {
            engine,
            seen,
            numbers,
            other_copies,
            tasks,
            mut reasons,
            unplaced,
            ..
        } = self;
        // Register numbers that several customers map to: sort the numbers, count runs.
        let mut by_text: Vec<u32> = (0..numbers.len() as u32).collect();
        by_text.sort_unstable_by(|&a, &b| numbers.get(a).cmp(numbers.get(b)));
        let mut shared: HashMap<u32, u32> = HashMap::new();
        for run in by_text.chunk_by(|&a, &b| numbers.get(a) == numbers.get(b)) {
            if run.len() > 1 {
                shared.extend(run.iter().map(|&i| (i, run.len() as u32)));
            }
        }
        drop(by_text);
        let number_field = engine.mapping.rules().number_field;
        let mut tasks: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        let mut rejected = |code: &str, reason: String| {
            // Listed in the report (table or JSON): a log line only with -v.
            tracing::info!(customer = %crate::output::printable(code), "rejected: {}", crate::output::printable(&reason));
            report.counts.rejected += 1;
            report.rejections.push(Rejection {
                customer: code.to_string(),
                reason,
            });
        };
        let mut held = (0, 0, 0);
        let mut conflicts = Vec::new();
        let mut unchanged = 0;
        for (code, seen) in seen.into_entries() {
            let copies = match seen.others {
                0 => 1,
                i => 1 + other_copies[i as usize - 1].len(),
            };
            let duplicate_number = shared.get(&seen.number).copied();
            match seen.verdict {
                Verdict::Held(HoldKind::Suppressed) => held.0 += 1,
                Verdict::Held(HoldKind::Restricted) => held.1 += 1,
                Verdict::Held(_) => held.2 += 1,
                Verdict::Conflict(i) => {
                    conflicts.push((code, std::mem::take(&mut reasons[i as usize])));
                }
                verdict if copies > 1 => {
                    if let Verdict::Write(i) = verdict {
                        tasks[i as usize] = None;
                    }
                    for _ in 0..copies {
                        rejected(
                            &code,
                            format!(
                                "customer code {code} appears {copies} times in Opter's answer; \
                                 sending either copy would be a guess. Make the code unique in \
                                 Opter."
                            ),
                        );
                    }
                }
                Verdict::Rejected(i) => rejected(&code, std::mem::take(&mut reasons[i as usize])),
                verdict if duplicate_number.is_some() => {
                    if let Verdict::Write(i) = verdict {
                        tasks[i as usize] = None;
                    }
                    let n = duplicate_number.unwrap_or_default();
                    let number = numbers.get(seen.number);
                    rejected(
                        &code,
                        format!(
                            "{n} Opter customers map to the same {number_field} {number}; the \
                             register can hold only one. Give each its own number in Opter."
                        ),
                    );
                }
                Verdict::Unchanged => unchanged += 1,
                Verdict::Write(_) => {}
            }
        }
        // No code to name them by: listed by position, with no customer code.
        for reason in unplaced {
            rejected("", reason);
        }
        report.counts.suppressed += held.0;
        report.counts.restricted += held.1;
        report.counts.skipped += held.2;
        for (code, reason) in conflicts {
            report.conflict(code, reason);
        }
        report.counts.unchanged += unchanged;
        let tasks: Vec<Task> = tasks.into_iter().flatten().collect();
        Ok((tasks, numbers))
    }
}

impl Engine {
    /// What a dry run shows and counts of the writes it would make.
    /// Each write is dropped once described, so that the writes and their descriptions
    /// are not all held at once.
    pub(super) fn plan_dry(&self, tasks: Vec<Task>, report: &mut Report) -> Result<()> {
        report.plan.reserve(tasks.len());
        for task in tasks {
            report.plan.push(self.planned(&task)?);
            match &task {
                Task::Create(_) => report.counts.created += 1,
                Task::Update { .. } => report.counts.updated += 1,
            }
        }
        Ok(())
    }

    /// What a dry run shows of one write: its operation and the fields that change.
    pub(super) fn planned(&self, task: &Task) -> Result<Planned> {
        Ok(match task {
            Task::Create(r) => Planned {
                customer: r.code.clone(),
                operation: "create",
                fields: r.fields.keys().cloned().collect(),
            },
            Task::Update {
                record, previous, ..
            } => {
                // What was last sent successfully, to name the fields that change.
                let before = match previous {
                    Some(_) => self
                        .journal
                        .events(Some(&record.code), None)?
                        .into_iter()
                        .find(|e| e.outcome == Outcome::Succeeded && e.values.is_some())
                        .and_then(|e| e.values)
                        .unwrap_or_default(),
                    None => Default::default(),
                };
                Planned {
                    customer: record.code.clone(),
                    operation: "update",
                    fields: record
                        .fields
                        .iter()
                        .filter(|(k, v)| before.get(*k) != Some(v))
                        .map(|(k, _)| k.clone())
                        .collect(),
                }
            }
        })
    }
}
