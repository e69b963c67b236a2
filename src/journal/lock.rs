//! The exclusive `journal.lock`: one process per journal folder.

use std::path::Path;

use anyhow::Context;

/// Takes the journal's lock, waiting up to a few seconds for another process.
pub(super) fn lock_journal(dir: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("journal.lock"))
        .with_context(|| format!("cannot create the lock file in {}", dir.display()))?;
    for _ in 0..250 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "the journal in {} is in use by another opter-visma-sync; try again when it is done",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use crate::journal::testing::sample;
    use crate::journal::Journal;

    #[test]
    fn a_second_process_waits_for_the_journal() {
        let (dir, j) = sample();
        let second = std::thread::spawn({
            let path = dir.path().to_path_buf();
            move || Journal::open(&path).map(|j| j.verify().unwrap().events_checked)
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!second.is_finished(), "the second open waits for the lock");
        drop(j);
        assert_eq!(second.join().unwrap().unwrap(), 6);
    }
}
