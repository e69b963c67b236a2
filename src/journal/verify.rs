//! `journal verify`: that the files read whole, the hash chain, the sequence, the
//! customer index, and that states, holds and the suppression file match the events that
//! set them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::store::{decode_event, CHAIN_HEAD, NEXT_SEQ};
use super::{chain, encoding, folder, HoldKind, Journal, Operation, Outcome, State};
use crate::error::exit;

/// What a problem means, and so what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The files cannot be read (or an entry decoded): restore from a backup.
    Corrupt,
    /// Something was changed, removed or reordered after it was written.
    Tampered,
    /// A support action was cut off half-way: run it again.
    Unfinished,
}

/// One thing `verify` found wrong, at the sequence number where it starts (0: none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub seq: u64,
    pub kind: Kind,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub events_checked: u64,
    pub problems: Vec<Problem>,
}

impl Verification {
    /// 0 when nothing is wrong; else the exit code of the gravest kind found.
    pub fn exit_code(&self) -> u8 {
        match self.problems.iter().map(|p| p.kind).min() {
            None => exit::OK,
            Some(Kind::Corrupt) => exit::CORRUPT,
            Some(Kind::Tampered) => exit::VERIFY_FAILED,
            Some(Kind::Unfinished) => exit::UNFINISHED,
        }
    }
}

/// Where reading the journal whole stopped.
#[derive(Debug)]
pub(super) struct Unreadable {
    /// The nearest event that read fine, if the damage is among the events.
    after_event: Option<u64>,
    /// The tree and the last key in it that read fine.
    tree: String,
    after_key: Option<String>,
    error: String,
}

impl Unreadable {
    fn what(&self) -> String {
        let place = match (&self.after_event, &self.after_key) {
            (Some(seq), _) => format!("the events after event {seq}"),
            (None, Some(key)) if self.tree == "events" => format!("the events after {key}"),
            (None, Some(key)) => format!("the {} entries after {key}", self.tree),
            (None, None) => format!("the {} entries from the first", self.tree),
        };
        format!(
            "{place} cannot be read: the journal's files are damaged ({})",
            self.error
        )
    }

    fn seq(&self) -> u64 {
        match (&self.after_event, self.tree.as_str()) {
            (Some(seq), _) => seq + 1,
            (None, "events") => 1,
            _ => 0,
        }
    }

    /// Why a writing command refuses the journal in `dir`.
    pub(super) fn refusal(&self, dir: &Path) -> String {
        format!(
            "the journal in {} cannot be read whole: {}. Nothing was written. {}",
            dir.display(),
            self.what(),
            super::RESTORE_ADVICE
        )
    }
}

/// A key as a message may show it: sequence numbers as numbers, text escaped.
fn describe_key(tree: &str, key: &[u8]) -> String {
    match (tree, <[u8; 8]>::try_from(key)) {
        ("events", Ok(seq)) => format!("event {}", u64::from_be_bytes(seq)),
        _ => format!("{:?}", String::from_utf8_lossy(key)),
    }
}

/// The holds an event sets (`true`) or lifts (`false`).
fn hold_changes(operation: Operation, outcome: Outcome) -> &'static [(HoldKind, bool)] {
    match (operation, outcome) {
        (Operation::Erase | Operation::Anonymise | Operation::Suppress, _) => {
            &[(HoldKind::Suppressed, true)]
        }
        (Operation::Unsuppress, _) => &[(HoldKind::Suppressed, false)],
        (Operation::Restrict, _) => &[(HoldKind::Restricted, true)],
        (Operation::Unrestrict, _) => &[(HoldKind::Restricted, false)],
        (Operation::Adopt, Outcome::Conflict) => &[(HoldKind::Conflict, true)],
        (Operation::Skip, _) => &[(HoldKind::Skipped, true), (HoldKind::Conflict, false)],
        (Operation::Link, _) => &[(HoldKind::Conflict, false), (HoldKind::Skipped, false)],
        _ => &[],
    }
}

impl Journal {
    /// Walks the hash chain and the indexes; returns what is wrong, first problem first.
    ///
    /// Streams the events once, keeping only each event's customer code and the few
    /// events that set or lift holds, so memory stays small however long the journal.
    pub fn verify(&self) -> anyhow::Result<Verification> {
        if let Err(damage) = self.read_whole() {
            // What follows would read the same damage as removals and edits.
            return Ok(Verification {
                events_checked: damage.after_event.unwrap_or(0),
                problems: vec![Problem {
                    seq: damage.seq(),
                    kind: Kind::Corrupt,
                    what: format!("{}: restore the journal from a backup", damage.what()),
                }],
            });
        }
        if let Some((next, recorded)) = self.behind {
            return Ok(Verification {
                events_checked: next.saturating_sub(1),
                problems: vec![Problem {
                    seq: next,
                    kind: Kind::Corrupt,
                    what: format!(
                        "and the events after it are gone: {}; restore the journal from a \
                         backup",
                        super::behind(next, recorded)
                    ),
                }],
            });
        }
        let mut problems = Vec::new();
        let mut problem =
            |kind: Kind, seq: u64, what: String| problems.push(Problem { seq, kind, what });
        // States first (one small entry per customer): each must match the event it names.
        let mut states = self.states_by_seq(&mut problem)?;
        let state_problem = |key: &str| {
            format!("does not match the state recorded for {key} (the state was edited)")
        };
        let (mut expected, mut prev_hash, mut checked) = (1u64, String::new(), 0u64);
        // (sequence number, customer code) of each event, in key order: ascending.
        let mut owners: Vec<(u64, Box<str>)> = Vec::new();
        let mut holds = Vec::new();
        for kv in self.events.iter() {
            let (key, value) = kv?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap_or_default());
            if seq > expected {
                problem(
                    Kind::Tampered,
                    expected,
                    format!("is missing (events {expected} to {} were removed)", seq - 1),
                );
            }
            expected = seq.saturating_add(1);
            checked += 1;
            let mut event = match decode_event(&value) {
                Ok(e) => e,
                Err(_) => {
                    problem(Kind::Corrupt, seq, "is unreadable".into());
                    continue;
                }
            };
            if event.seq != seq {
                problem(
                    Kind::Tampered,
                    seq,
                    format!("holds event {} (events were reordered)", event.seq),
                );
            } else if let Some(what) = chain::check(&mut event, &prev_hash) {
                problem(Kind::Tampered, seq, what);
            }
            for (key, state) in states.remove(&seq).unwrap_or_default() {
                let matches = format!("{}/{}", event.sink, event.customer) == key
                    && event.outcome == Outcome::Succeeded
                    && event.remote_id.as_deref() == Some(state.remote_id.as_str())
                    && event
                        .values
                        .as_ref()
                        .is_none_or(|v| crate::hash::content_hash(v) == state.content_hash);
                if !matches {
                    problem(Kind::Tampered, seq, state_problem(&key));
                }
            }
            if !hold_changes(event.operation, event.outcome).is_empty() {
                holds.push((seq, event.customer.clone(), event.operation, event.outcome));
            }
            prev_hash = event.chain.hash;
            owners.push((seq, event.customer.into_boxed_str()));
        }
        for (seq, entries) in states {
            for (key, _) in entries {
                problem(Kind::Tampered, seq, state_problem(&key));
            }
        }
        let next = self
            .meta
            .get(NEXT_SEQ)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes);
        if next.unwrap_or(1) != expected {
            problem(
                Kind::Tampered,
                expected,
                "is missing: the newest events were removed".into(),
            );
        }
        self.verify_holds(&holds, &mut problem)?;
        let head = self
            .meta
            .get(CHAIN_HEAD)?
            .map(|h| String::from_utf8_lossy(&h).into_owned());
        if head.unwrap_or_default() != prev_hash {
            problem(
                Kind::Tampered,
                expected,
                "is missing: the newest events were removed".into(),
            );
        }
        self.verify_index(&owners, &mut problem)?;
        problems.sort_by_key(|p| (p.kind, p.seq));
        Ok(Verification {
            events_checked: checked,
            problems,
        })
    }

    /// The stored states by the sequence number of the event each names; an unreadable
    /// one is a problem.
    fn states_by_seq(
        &self,
        problem: &mut impl FnMut(Kind, u64, String),
    ) -> anyhow::Result<HashMap<u64, Vec<(String, State)>>> {
        let mut states: HashMap<u64, Vec<(String, State)>> = Default::default();
        for kv in self.state.iter() {
            let (key, value) = kv?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match encoding::decode::<State>(&value) {
                Ok(state) => states.entry(state.last_seq).or_default().push((key, state)),
                Err(_) => problem(Kind::Corrupt, 0, format!("state {key} is unreadable")),
            }
        }
        Ok(states)
    }

    /// Every event is in its customer's timeline, and nothing else is. `owners` are the
    /// (sequence number, customer code) of the events, ascending.
    fn verify_index(
        &self,
        owners: &[(u64, Box<str>)],
        problem: &mut impl FnMut(Kind, u64, String),
    ) -> anyhow::Result<()> {
        let mut indexed = vec![false; owners.len()];
        for kv in self.by_customer.iter() {
            let key = kv?.0;
            if key.len() < 9 {
                problem(
                    Kind::Tampered,
                    0,
                    "the customer index holds a malformed entry".into(),
                );
                continue;
            }
            let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or_default());
            let code = String::from_utf8_lossy(&key[..key.len() - 9]);
            let at = owners.binary_search_by_key(&seq, |(s, _)| *s);
            match at {
                Ok(at) if *owners[at].1 == *code => indexed[at] = true,
                _ => problem(
                    Kind::Tampered,
                    seq,
                    format!("is in customer {code}'s timeline but is not theirs"),
                ),
            }
        }
        for ((seq, owner), indexed) in owners.iter().zip(indexed) {
            if !indexed {
                problem(
                    Kind::Tampered,
                    *seq,
                    format!("is missing from customer {owner}'s timeline"),
                );
            }
        }
        Ok(())
    }

    /// Holds must match the events that set and lifted them: a removed suppression would
    /// let a purged customer be created again. `changes` are (seq, customer, operation)
    /// of the events that set or lift a hold, in order.
    fn verify_holds(
        &self,
        changes: &[(u64, String, Operation, Outcome)],
        problem: &mut impl FnMut(Kind, u64, String),
    ) -> anyhow::Result<()> {
        let mut expected: BTreeMap<(&str, usize), u64> = Default::default();
        // The last event that set or lifted each customer's suppression.
        let mut last_suppression: HashMap<&str, Operation> = Default::default();
        let position = |kind: HoldKind| HoldKind::ALL.iter().position(|k| *k == kind);
        for (seq, customer, operation, outcome) in changes {
            for &(kind, on) in hold_changes(*operation, *outcome) {
                if kind == HoldKind::Suppressed {
                    last_suppression.insert(customer, *operation);
                }
                let key = (customer.as_str(), position(kind).unwrap_or_default());
                if on {
                    expected.insert(key, *seq);
                } else {
                    expected.remove(&key);
                }
            }
        }
        for (i, kind) in HoldKind::ALL.into_iter().enumerate() {
            let name = match kind {
                HoldKind::Suppressed => "suppression",
                HoldKind::Restricted => "restriction",
                HoldKind::Conflict => "conflict",
                HoldKind::Skipped => "skip",
            };
            for ((code, k), seq) in &expected {
                if *k == i && self.holds_tree(kind).get(code.as_bytes())?.is_none() {
                    problem(
                        Kind::Tampered,
                        *seq,
                        format!("set a {name} for {code} that has been removed"),
                    );
                }
            }
            for kv in self.holds_tree(kind).iter() {
                let code = String::from_utf8_lossy(&kv?.0).into_owned();
                if !expected.contains_key(&(code.as_str(), i)) {
                    let what = match kind {
                        HoldKind::Suppressed => {
                            format!("an unfinished purge of {code}: run purge again")
                        }
                        HoldKind::Restricted => {
                            format!("an unfinished restrict of {code}: run restrict again")
                        }
                        HoldKind::Conflict => format!(
                            "the conflict of {code} has no event yet (an interrupted sync): \
                             the next sync decides"
                        ),
                        HoldKind::Skipped => {
                            format!("an unfinished `link --skip` of {code}: run it again")
                        }
                    };
                    problem(Kind::Unfinished, 0, what);
                }
            }
        }
        self.verify_suppression_file(&last_suppression, problem)
    }

    /// The suppression file and sled's suppressions must agree: the file is what keeps
    /// an erasure when the database is lost.
    fn verify_suppression_file(
        &self,
        last: &HashMap<&str, Operation>,
        problem: &mut impl FnMut(Kind, u64, String),
    ) -> anyhow::Result<()> {
        let path = self.dir.join(folder::SUPPRESSIONS);
        let listed = folder::read_suppressions(&self.dir)?.unwrap_or_default();
        let held = self.sled_suppressions()?;
        for code in held.difference(&listed) {
            problem(
                Kind::Tampered,
                0,
                format!(
                    "the suppression of {code} is missing from {} (the file was edited): run \
                     `purge --customer {code}` again to list it",
                    path.display()
                ),
            );
        }
        for code in listed.difference(&held) {
            let what = match last.get(code.as_str()) {
                Some(Operation::Unsuppress) => {
                    format!("an unfinished unsuppress of {code}: run unsuppress again")
                }
                _ => format!(
                    "an unfinished purge of {code}: run purge again (it is listed in {} but \
                     not suppressed in the database; sync holds it meanwhile)",
                    path.display()
                ),
            };
            problem(Kind::Unfinished, 0, what);
        }
        Ok(())
    }

    /// Reads every entry of every tree, so damage anywhere in the files shows before
    /// anything is written. Stops at the first entry that cannot be read.
    pub(super) fn read_whole(&self) -> Result<u64, Unreadable> {
        let unreadable = |tree: &str, after: Option<&[u8]>, e: sled::Error| Unreadable {
            after_event: match (tree, after.map(<[u8; 8]>::try_from)) {
                ("events", Some(Ok(seq))) => Some(u64::from_be_bytes(seq)),
                _ => None,
            },
            tree: tree.to_string(),
            after_key: after.map(|k| describe_key(tree, k)),
            error: e.to_string(),
        };
        let names = self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned());
        let mut entries = 0u64;
        for name in names {
            let tree = self
                .db
                .open_tree(&name)
                .map_err(|e| unreadable(&name, None, e))?;
            let mut last: Option<sled::IVec> = None;
            for kv in tree.iter() {
                match kv {
                    Ok((key, _)) => last = Some(key),
                    Err(e) => return Err(unreadable(&name, last.as_deref(), e)),
                }
                entries += 1;
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::store::{customer_key, encode_event};
    use crate::journal::testing::{event, sample};
    use crate::journal::{Hold, HoldKind};
    use chrono::Utc;

    fn first_problem(j: &Journal) -> Option<(u64, String)> {
        let v = j.verify().unwrap();
        v.problems.first().map(|p| (p.seq, p.what.clone()))
    }

    #[test]
    fn an_untouched_journal_verifies() {
        let (_dir, j) = sample();
        let v = j.verify().unwrap();
        assert_eq!((v.events_checked, v.problems), (6, vec![]));
    }

    #[test]
    fn one_changed_byte_of_a_value_is_found_at_its_event() {
        let (_dir, j) = sample();
        let mut raw = j.events.get(3u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let at = raw
            .windows(6)
            .position(|w| w == b"anna2@")
            .expect("the value is stored as text");
        raw[at + 4] = b'3';
        j.events.insert(3u64.to_be_bytes(), raw).unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 3);
        assert!(what.contains("values were changed"), "{what}");
    }

    #[test]
    fn a_changed_field_outside_the_values_is_found() {
        let (_dir, j) = sample();
        let raw = j.events.get(4u64.to_be_bytes()).unwrap().unwrap();
        let mut event = decode_event(&raw).unwrap();
        assert_eq!(event.http_status, Some(201));
        event.http_status = Some(200);
        j.events
            .insert(4u64.to_be_bytes(), encode_event(&mut event))
            .unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 4);
    }

    #[test]
    fn a_deleted_event_is_found_at_its_number() {
        let (_dir, j) = sample();
        j.events.remove(2u64.to_be_bytes()).unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 2);
        assert!(what.contains("missing"), "{what}");
        // The newest one too.
        let (_dir, j) = sample();
        j.events.remove(6u64.to_be_bytes()).unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 6);
    }

    #[test]
    fn an_event_under_a_huge_sequence_number_is_reported_not_allocated_for() {
        let (_dir, j) = sample();
        let last = j.events.get(6u64.to_be_bytes()).unwrap().unwrap();
        j.events.insert(u64::MAX.to_be_bytes(), last).unwrap();
        let v = j.verify().unwrap();
        assert_eq!(v.events_checked, 7);
        assert!(
            v.problems
                .iter()
                .any(|p| p.seq == 7 && p.what.contains("missing")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn two_swapped_events_are_found_at_the_first() {
        let (_dir, j) = sample();
        let a = j.events.get(4u64.to_be_bytes()).unwrap().unwrap();
        let b = j.events.get(5u64.to_be_bytes()).unwrap().unwrap();
        j.events.insert(4u64.to_be_bytes(), b).unwrap();
        j.events.insert(5u64.to_be_bytes(), a).unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 4);
        assert!(what.contains("reordered"), "{what}");
    }

    #[test]
    fn an_edited_state_entry_is_found_at_its_event() {
        let (_dir, j) = sample();
        let mut state = j.state("eaccounting", "K2").unwrap().unwrap();
        assert_eq!(state.last_seq, 5);
        state.remote_id = "someone-else".into();
        j.state
            .insert("eaccounting/K2", serde_json::to_vec(&state).unwrap())
            .unwrap();
        let (seq, what) = first_problem(&j).unwrap();
        assert_eq!(seq, 5);
        assert!(what.contains("eaccounting/K2"), "{what}");
        // A changed content hash is an edit too.
        let (_dir, j) = sample();
        let mut state = j.state("eaccounting", "K3").unwrap().unwrap();
        state.content_hash = "0".repeat(64);
        j.state
            .insert("eaccounting/K3", serde_json::to_vec(&state).unwrap())
            .unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 6);
    }

    #[test]
    fn a_removed_skip_or_a_conflict_without_its_event_is_found() {
        let (_dir, j) = sample();
        let hold = Hold {
            since: Utc::now(),
            actor: "support:eva".into(),
            reason: "r".into(),
            outcome: None,
            remote_id: Some("id-1".into()),
            number: Some("K2".into()),
        };
        let mut skip = event("K2", "s1");
        skip.operation = Operation::Skip;
        let seq = j.record(skip, None, false).unwrap();
        j.set_hold(HoldKind::Skipped, "K2", &hold).unwrap();
        assert_eq!(j.verify().unwrap().problems, vec![]);
        j.skipped.remove("K2").unwrap();
        let (at, what) = first_problem(&j).unwrap();
        assert_eq!(at, seq);
        assert!(what.contains("skip for K2"), "{what}");

        let (_dir, j) = sample();
        j.set_hold(HoldKind::Conflict, "K3", &hold).unwrap();
        let (_, what) = first_problem(&j).unwrap();
        assert!(what.contains("conflict of K3 has no event"), "{what}");
        let mut conflict = event("K3", "s1");
        conflict.operation = Operation::Adopt;
        conflict.outcome = Outcome::Conflict;
        j.record(conflict, None, false).unwrap();
        assert_eq!(j.verify().unwrap().problems, vec![]);
        let mut link = event("K3", "s2");
        link.operation = Operation::Link;
        j.record(link, None, false).unwrap();
        j.lift_hold(HoldKind::Conflict, "K3").unwrap();
        assert_eq!(j.verify().unwrap().problems, vec![]);
    }

    #[test]
    fn a_removed_suppression_or_a_trimmed_tail_is_found() {
        let (_dir, j) = sample();
        let hold = Hold {
            since: Utc::now(),
            actor: "support:eva".into(),
            reason: "r".into(),
            outcome: None,
            remote_id: None,
            number: None,
        };
        j.set_hold(HoldKind::Suppressed, "K2", &hold).unwrap();
        let mut erase = event("K2", "s1");
        erase.operation = Operation::Erase;
        let seq = j.record(erase, None, true).unwrap();
        assert_eq!(j.verify().unwrap().problems, vec![]);
        j.suppressed.remove("K2").unwrap();
        let (at, what) = first_problem(&j).unwrap();
        assert_eq!(at, seq);
        assert!(what.contains("suppression for K2"), "{what}");

        // The newest event removed and the head rewound to the one before: the sequence
        // counter still tells.
        let (_dir, j) = sample();
        let fifth = j.event(5).unwrap().unwrap();
        j.events.remove(6u64.to_be_bytes()).unwrap();
        j.by_customer.remove(customer_key("K3", 6)).unwrap();
        j.meta
            .insert(CHAIN_HEAD, fifth.chain.hash.as_bytes())
            .unwrap();
        let mut state = j.state("eaccounting", "K3").unwrap().unwrap();
        state.last_seq = 3;
        let third = j.event(3).unwrap().unwrap();
        state.content_hash = crate::hash::content_hash(third.values.as_ref().unwrap());
        j.state
            .insert("eaccounting/K3", serde_json::to_vec(&state).unwrap())
            .unwrap();
        assert_eq!(first_problem(&j).unwrap().0, 6);
    }
}

#[cfg(test)]
mod suppression_file {
    use super::*;
    use crate::journal::testing::{event, sample};
    use crate::journal::{Hold, HoldKind};

    fn hold() -> Hold {
        Hold {
            since: chrono::Utc::now(),
            actor: "support:eva".into(),
            reason: "r".into(),
            outcome: None,
            remote_id: None,
            number: None,
        }
    }

    fn kinds(j: &Journal) -> Vec<(Kind, String)> {
        let v = j.verify().unwrap();
        v.problems.into_iter().map(|p| (p.kind, p.what)).collect()
    }

    #[test]
    fn the_file_and_sled_must_agree_and_a_cut_off_unsuppress_is_unfinished() {
        let (dir, j) = sample();
        j.set_hold(HoldKind::Suppressed, "K2", &hold()).unwrap();
        let mut erase = event("K2", "s1");
        erase.operation = Operation::Erase;
        j.record(erase, None, true).unwrap();
        assert_eq!(kinds(&j), vec![]);

        // Unsuppressed in sled, its event recorded, cut off before the file.
        j.lift_hold(HoldKind::Suppressed, "K2").unwrap();
        let mut lift = event("K2", "s2");
        lift.operation = Operation::Unsuppress;
        j.record(lift, None, false).unwrap();
        let found = kinds(&j);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Kind::Unfinished);
        assert!(
            found[0].1.contains("unfinished unsuppress of K2"),
            "{found:?}"
        );
        assert!(
            j.hold(HoldKind::Suppressed, "K2").unwrap().is_some(),
            "held"
        );
        j.unlist_suppression("K2").unwrap();
        assert_eq!(kinds(&j), vec![]);
        assert!(j.hold(HoldKind::Suppressed, "K2").unwrap().is_none());

        // A suppression edited out of the file is a change, not an unfinished action.
        j.set_hold(HoldKind::Suppressed, "K3", &hold()).unwrap();
        let mut erase = event("K3", "s3");
        erase.operation = Operation::Erase;
        j.record(erase, None, true).unwrap();
        folder::write_suppressions(dir.path(), &Default::default()).unwrap();
        let found = kinds(&j);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Kind::Tampered);
        assert!(found[0].1.contains("K3 is missing from"), "{found:?}");
        assert_eq!(j.verify().unwrap().exit_code(), exit::VERIFY_FAILED);
    }
}

#[cfg(test)]
mod damage {
    use super::*;
    use crate::journal::Opening;

    #[test]
    fn a_log_sled_cannot_open_is_damage_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path().join("sled"))
                .open()
                .unwrap();
            let runs = db.open_tree("runs").unwrap();
            for i in 0..2000u32 {
                let value = format!("value-{i:05}-{}", "x".repeat(200));
                runs.insert(format!("run-{i:05}"), value.as_bytes())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let path = dir.path().join("sled/db");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(11).position(|w| w == b"value-00010").unwrap();
        bytes[at + 3] ^= 0x5a;
        std::fs::write(&path, bytes).unwrap();

        // sled panics on this log as it opens it; every opening reports damage instead.
        for opening in [Opening::Read, Opening::Write] {
            let e = Journal::open_as(dir.path(), opening).err().unwrap();
            let message = e.to_string();
            assert!(
                matches!(e.downcast_ref(), Some(crate::error::Error::Corrupt(_))),
                "{message}"
            );
            assert!(message.contains("journal restore FILE"), "{message}");
        }
    }
}
