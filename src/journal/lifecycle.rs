//! The sled folder's life: how it is opened, and compaction: the rewrite into a fresh
//! folder, the swap, and the recovery of a swap that a crash interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::lock::lock_journal;
use super::store::COMPACTION_OWED;
use super::Journal;
use crate::retry::{retry_blocking, Attempt, RetryPolicy};

impl Journal {
    /// Whether removed values may still have copies in the files.
    pub fn compaction_owed(&self) -> anyhow::Result<bool> {
        Ok(self.meta.get(COMPACTION_OWED)?.is_some())
    }
}

/// Rewrites the journal in `dir` into a fresh database and swaps it in, so that removed
/// values leave no stale copy in sled's old log segments. Returns the new size in bytes.
///
/// Crash-safe: the copy is complete (flushed, marked) before the swap, and `Journal::open`
/// finishes or undoes an interrupted swap.
pub fn compact(dir: &Path) -> anyhow::Result<u64> {
    let _lock = lock_journal(dir)?;
    recover_compaction(dir)?;
    compact_locked(dir)
}

pub(super) fn compact_locked(dir: &Path) -> anyhow::Result<u64> {
    let (live, fresh, old, done) = compaction_paths(dir);
    for stale in [&fresh, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)?;
        }
    }
    let _ = std::fs::remove_file(&done);
    {
        let source = open_sled(&live).context("cannot open the journal to compact it")?;
        let target = sled_config(&fresh).open()?;
        target.import(source.export());
        target.open_tree("meta")?.remove(COMPACTION_OWED)?;
        target.flush()?;
        source.flush()?;
    }
    std::fs::File::create(&done)?.sync_all()?;
    std::fs::rename(&live, &old)?;
    std::fs::rename(&fresh, &live)?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::remove_file(&done)?;
    std::fs::remove_dir_all(&old)?;
    super::folder::tighten(dir)?;
    Ok(folder_size(&live))
}

fn compaction_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("sled"),
        dir.join("sled.compact"),
        dir.join("sled.old"),
        dir.join("sled.compact.done"),
    )
}

/// Finishes a swap that a crash interrupted, or rolls it back.
pub(super) fn recover_compaction(dir: &Path) -> anyhow::Result<()> {
    let (live, fresh, old, done) = compaction_paths(dir);
    if !live.exists() && old.exists() {
        let from = if done.exists() && fresh.exists() {
            &fresh
        } else {
            &old
        };
        std::fs::rename(from, &live)?;
    }
    for stale in [&fresh, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)?;
        }
    }
    let _ = std::fs::remove_file(&done);
    Ok(())
}

fn folder_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// sled's page cache defaults to 1 GiB and grows with the journal; a tenant's journal is
/// read mostly by key (state per customer), so a small cache keeps memory flat. sled
/// counts pages by their stored size, and the pages in memory take about twice that: at
/// 100,000 customers a 1 MiB cap kept the peak of `sync --full` 2–3 MB lower than 2 MiB,
/// at the same speed.
const SLED_CACHE_BYTES: u64 = 1024 * 1024;

pub(super) fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES)
}

/// How long to wait for sled's own file lock: a journal closed a moment ago in this
/// process is released by sled's background thread shortly after the drop.
const SLED_RELEASE_WAIT: RetryPolicy = RetryPolicy {
    initial_interval: Duration::from_millis(20),
    max_interval: Duration::from_millis(100),
    budget: Duration::from_secs(1),
    max_server_wait: Duration::ZERO,
};

/// sled panics on some damaged logs while it opens them: that is damage to report, not
/// a crash.
fn open_unwinding(path: &Path) -> sled::Result<sled::Db> {
    let open = std::panic::AssertUnwindSafe(|| sled_config(path).open());
    std::panic::catch_unwind(open).unwrap_or_else(|_| {
        Err(sled::Error::ReportableBug(
            "sled stopped while reading its log".into(),
        ))
    })
}

/// Opens sled, waiting up to a second for its file lock (`SLED_RELEASE_WAIT`).
pub(super) fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let open = || match open_unwinding(path) {
        Ok(db) => Attempt::Done(db),
        Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
            Attempt::Retryable {
                error: sled::Error::Io(e),
                after: None,
            }
        }
        Err(e) => Attempt::Final(e),
    };
    retry_blocking(&SLED_RELEASE_WAIT, open, |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::sample;
    use chrono::Utc;

    fn folder_text(dir: &Path) -> String {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn removed_values_left_in_the_files_by_a_crash_are_compacted_at_the_next_open() {
        let (dir, j) = sample();
        j.flush().await.unwrap();
        assert!(folder_text(dir.path()).contains("anna0@example.se"));
        let n = j
            .redact_values_before(Utc::now() + chrono::Duration::days(1))
            .unwrap();
        j.flush().await.unwrap();
        assert!(n > 0 && j.compaction_owed().unwrap());
        drop(j); // the process dies before compacting
        let j = Journal::open(dir.path()).unwrap();
        assert!(!j.compaction_owed().unwrap());
        assert!(!folder_text(dir.path()).contains("anna0@example.se"));
        assert_eq!(j.verify().unwrap().problems, vec![]);
    }
}
