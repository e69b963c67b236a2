//! The sync journal: a sled database that remembers what was sent to the register, so
//! unchanged customers are skipped and every write can be accounted for.
//!
//! Layout (one folder, owner-only):
//! - `sled/`: trees `state` (sink/code -> what was last sent), `events` (u64 BE seq ->
//!   one event per write), `by_customer` (code/seq index), `runs` (run id -> summary),
//!   `intents` (sink/code -> a write about to be sent), `meta` (next sequence number).
//! - `credentials/`: secrets the sinks must keep (rotated refresh tokens); never in sled.
//! - `suppressions`: the codes of purged customers, beside sled so that erasure survives
//!   a lost database; `journal.marker`: a journal lives here (`folder`).
//!
//! Architecture invariant: sled is used nowhere else; all writes that belong together
//! (event, its index entry, state) go in one sled transaction.

mod backup;
pub mod chain;
mod encoding;
mod folder;
mod holds;
mod lifecycle;
mod lock;
mod positions;
mod reads;
mod recorder;
mod redaction;
mod store;
#[cfg(test)]
mod testing;
mod types;
mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

use lifecycle::{compact_locked, open_sled, recover_compaction};
use lock::lock_journal;

pub use backup::{backup, restore, Restored};
pub use chain::Chain;
pub use lifecycle::compact;
pub use recorder::{IntentBatch, Recorder};
pub use types::{
    name_of, Counts, Entry, Event, Hold, HoldKind, Intent, Operation, Outcome, Rejection, Run,
    Sent, State,
};
pub use verify::{Kind, Problem, Verification};

/// What a command opens the journal for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Opening {
    /// To write: the journal must read whole, and a folder whose database is gone (it
    /// holds the marker or the suppression file) is refused rather than started afresh.
    #[default]
    Write,
    /// To write, starting a new database where the folder's is gone; the suppression
    /// file still holds (`Journal::carry_suppressions`).
    NewJournal,
    /// To read or verify: damage is left for `verify` to report.
    Read,
}

pub struct Journal {
    dir: PathBuf,
    db: sled::Db,
    state: sled::Tree,
    events: sled::Tree,
    by_customer: sled::Tree,
    runs: sled::Tree,
    intents: sled::Tree,
    suppressed: sled::Tree,
    restricted: sled::Tree,
    conflicts: sled::Tree,
    skipped: sled::Tree,
    meta: sled::Tree,
    /// The codes in the suppression file: held even where sled has no suppression.
    listed: Mutex<BTreeSet<String>>,
    /// This open created the database.
    created: bool,
    /// The next event the marker recorded, when the database holds fewer events: its
    /// files were damaged (or an older copy put in its place).
    behind: Option<(u64, u64)>,
    /// The next event the marker records.
    recorded: std::sync::atomic::AtomicU64,
    /// Exclusive lock on `journal.lock`, held while open (dropped last).
    _lock: std::fs::File,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` to write, readable by its owner
    /// only. Holds the journal's lock until dropped: one process at a time.
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        Self::open_as(dir, Opening::Write)
    }

    pub fn open_as(dir: &Path, opening: Opening) -> anyhow::Result<Journal> {
        folder::create_folder(dir)?;
        let lock = lock_journal(dir)?;
        recover_compaction(dir)?;
        let created = !dir.join("sled").exists();
        if created && folder::held_a_journal(dir) && opening != Opening::NewJournal {
            return Err(crate::error::Error::config(lost(dir)).into());
        }
        let mut journal = Self::open_locked(dir, lock, created)?;
        // Values were removed but the files were not rewritten (a crash in between):
        // finish that first, so no copy survives.
        if journal.compaction_owed()? {
            let lock = journal.into_lock()?;
            compact_locked(dir)?;
            journal = Self::open_locked(dir, lock, created)?;
        }
        let recorded = match created || !dir.join(folder::MARKER).exists() {
            // A new database starts its own record; an older journal gets its marker.
            true => {
                let next = journal.next_event();
                folder::write_marker(dir, next)?;
                next
            }
            false => folder::recorded_next_event(dir)?,
        };
        journal.recorded = recorded.into();
        let next = journal.next_event();
        if next < recorded {
            journal.behind = Some((next, recorded));
            if opening != Opening::Read {
                return Err(crate::error::Error::Corrupt(format!(
                    "the journal in {} cannot be read whole: {}. Nothing was written. {}",
                    dir.display(),
                    behind(next, recorded),
                    RESTORE_ADVICE
                ))
                .into());
            }
        }
        let listed = match folder::read_suppressions(dir)? {
            Some(listed) => listed,
            None => {
                // A journal from before the file: it starts as sled's suppressions.
                let listed = journal.sled_suppressions()?;
                folder::write_suppressions(dir, &listed)?;
                listed
            }
        };
        journal.listed = Mutex::new(listed);
        folder::tighten(dir)?;
        if opening != Opening::Read {
            // Nothing is written to a journal that cannot be read whole.
            let started = std::time::Instant::now();
            match journal.read_whole() {
                Ok(entries) => tracing::debug!(
                    entries,
                    ms = started.elapsed().as_millis() as u64,
                    "journal read whole"
                ),
                Err(damage) => return Err(crate::error::Error::Corrupt(damage.refusal(dir)).into()),
            }
        }
        Ok(journal)
    }

    /// The sequence number the next event gets, as stored (0 when unreadable).
    fn next_event(&self) -> u64 {
        let stored = self.meta.get(store::NEXT_SEQ).ok().flatten();
        store::sequence_number(stored.as_deref()).unwrap_or(0)
    }

    /// How many events the journal holds (purged ones included: a purge redacts, it
    /// does not delete), and the bytes its database takes on disk.
    pub fn size(&self) -> (u64, u64) {
        let bytes = self.db.size_on_disk().unwrap_or(0);
        (self.next_event().saturating_sub(1), bytes)
    }

    /// Whether this open created the database (a first run, or `--new-journal`).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Closes the database (every handle, so sled's files are released) but keeps the
    /// lock: a duplicated descriptor shares the lock, which outlives the closed one.
    fn into_lock(self) -> anyhow::Result<std::fs::File> {
        let lock = self._lock.try_clone()?;
        drop(self);
        Ok(lock)
    }

    fn open_locked(dir: &Path, lock: std::fs::File, created: bool) -> anyhow::Result<Journal> {
        let path = dir.join("sled");
        let unopened = |e: sled::Error| match e {
            sled::Error::Io(e) => folder::io_error(&path, &e),
            other => crate::error::Error::Corrupt(format!(
                "the journal in {} cannot be opened, its files are damaged ({}): nothing was \
                 written. {}",
                dir.display(),
                match other {
                    sled::Error::ReportableBug(why) => why,
                    other => other.to_string(),
                },
                RESTORE_ADVICE
            ))
            .into(),
        };
        let db = open_sled(&path).map_err(unopened)?;
        let tree = |name: &str| db.open_tree(name).map_err(unopened);
        Ok(Journal {
            dir: dir.to_path_buf(),
            state: tree("state")?,
            events: tree("events")?,
            by_customer: tree("by_customer")?,
            runs: tree("runs")?,
            intents: tree("intents")?,
            suppressed: tree("suppressed")?,
            restricted: tree("restricted")?,
            conflicts: tree("conflicts")?,
            skipped: tree("skipped")?,
            meta: tree("meta")?,
            db,
            listed: Mutex::default(),
            created,
            behind: None,
            recorded: Default::default(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Folder for secrets a sink must persist; created owner-only.
    pub fn credentials_dir(&self) -> anyhow::Result<PathBuf> {
        credentials_dir(&self.dir)
    }
}

/// Records in the marker how far the database got, once it is durable; never lowers it
/// (a database found behind it stays reported until restored).
impl Drop for Journal {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let next = self.next_event();
        if self.behind.is_some() || next <= self.recorded.load(Ordering::Relaxed) {
            return;
        }
        // Best effort: a marker behind the database only weakens the check.
        if self.db.flush().is_ok() && folder::write_marker(&self.dir, next).is_ok() {
            self.recorded.store(next, Ordering::Relaxed);
        }
    }
}

fn behind(next: u64, recorded: u64) -> String {
    format!(
        "its database holds events 1 to {}, but it had recorded events up to {}: its files \
         were damaged (sled drops what follows a damaged spot of its log) or an older copy \
         was put in their place",
        next.saturating_sub(1),
        recorded.saturating_sub(1)
    )
}

/// How to restore a damaged or lost journal, for messages.
const RESTORE_ADVICE: &str = "Restore it from a backup: move the sled folder away (keep it), \
    then run `opter-visma-sync journal restore FILE` with a file `journal backup` wrote (or \
    put back a copy of the whole journal folder)";

fn lost(dir: &Path) -> String {
    format!(
        "the journal folder {} held a journal, but its database ({}) is gone: nothing was \
         written. Restore it from a backup: `opter-visma-sync journal restore FILE` with a \
         file `journal backup` wrote, or put back a copy of the whole folder. To start a new \
         journal instead, run again with --new-journal (the customers in {} stay \
         suppressed).",
        dir.display(),
        dir.join("sled").display(),
        dir.join(folder::SUPPRESSIONS).display()
    )
}

/// Why the folder `dir` must not start a new journal by itself: it held one whose
/// database is gone. For `check` and the commands that only read.
pub fn lost_database(dir: &Path) -> Option<String> {
    let present = ["sled", "sled.old", "sled.compact"]
        .iter()
        .any(|d| dir.join(d).exists());
    (!present && folder::held_a_journal(dir)).then(|| lost(dir))
}

/// The credentials folder of the journal in `journal_dir`, created owner-only, without
/// opening sled (so `auth` works while a sync holds the journal).
pub fn credentials_dir(journal_dir: &Path) -> anyhow::Result<PathBuf> {
    folder::create_folder(journal_dir)?;
    let dir = journal_dir.join("credentials");
    folder::create_folder(&dir)?;
    folder::tighten(&dir)?;
    Ok(dir)
}

/// Restricts a path to its owner (no-op where permissions are not Unix-style).
pub fn owner_only(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_folder_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let j = Journal::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&j.credentials_dir().unwrap()), 0o700);
    }
}
