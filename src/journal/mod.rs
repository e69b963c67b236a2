//! The sync journal: a sled database that remembers what was sent to the register, so
//! unchanged customers are skipped and every write can be accounted for.
//!
//! Layout (one folder, owner-only):
//! - `sled/`: trees `state` (sink/code -> what was last sent), `events` (u64 BE seq ->
//!   one event per write), `by_customer` (code/seq index), `runs` (run id -> summary),
//!   `intents` (sink/code -> a write about to be sent), `meta` (next sequence number).
//! - `credentials/`: secrets the sinks must keep (rotated refresh tokens); never in sled.
//!
//! Architecture invariant: sled is used nowhere else; all writes that belong together
//! (event, its index entry, state) go in one sled transaction.

pub mod chain;
mod encoding;
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

use std::path::{Path, PathBuf};

use anyhow::Context;

use lifecycle::{compact_locked, open_sled, recover_compaction};
use lock::lock_journal;

pub use chain::Chain;
pub use lifecycle::compact;
pub use recorder::{IntentBatch, Recorder};
pub use types::{
    name_of, Counts, Entry, Event, Hold, HoldKind, Intent, Operation, Outcome, Rejection, Run,
    Sent, State,
};
pub use verify::{Problem, Verification};

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
    /// Exclusive lock on `journal.lock`, held while open (dropped last).
    _lock: std::fs::File,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, readable by its owner only.
    /// Holds the journal's lock until dropped: one process at a time.
    pub fn open(dir: &Path) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create journal folder {}", dir.display()))?;
        owner_only(dir, 0o700)?;
        let lock = lock_journal(dir)?;
        recover_compaction(dir)?;
        let journal = Self::open_locked(dir, lock)?;
        // Values were removed but the files were not rewritten (a crash in between):
        // finish that first, so no copy survives.
        if journal.compaction_owed()? {
            let lock = journal.into_lock()?;
            compact_locked(dir)?;
            return Self::open_locked(dir, lock);
        }
        Ok(journal)
    }

    /// Closes the database (every handle, so sled's files are released) but keeps the
    /// lock: a duplicated descriptor shares the lock, which outlives the closed one.
    fn into_lock(self) -> anyhow::Result<std::fs::File> {
        let lock = self._lock.try_clone()?;
        drop(self);
        Ok(lock)
    }

    fn open_locked(dir: &Path, lock: std::fs::File) -> anyhow::Result<Journal> {
        let db = open_sled(&dir.join("sled"))
            .with_context(|| format!("cannot open the journal in {}", dir.display()))?;
        let tree = |name: &str| db.open_tree(name).context("cannot open journal tree");
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

/// The credentials folder of the journal in `journal_dir`, created owner-only, without
/// opening sled (so `auth` works while a sync holds the journal).
pub fn credentials_dir(journal_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(journal_dir)?;
    owner_only(journal_dir, 0o700)?;
    let dir = journal_dir.join("credentials");
    std::fs::create_dir_all(&dir)?;
    owner_only(&dir, 0o700)?;
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
