//! The exclusive `journal.lock`: one process per journal folder.

use std::fs::TryLockError;
use std::path::Path;
use std::time::Duration;

use crate::retry::{retry_blocking, Attempt, RetryPolicy};

/// How long `Journal::open` and `compact` wait for another process to let go.
const LOCK_WAIT: RetryPolicy = RetryPolicy {
    initial_interval: Duration::from_millis(20),
    max_interval: Duration::from_millis(100),
    budget: Duration::from_secs(5),
    // A lock gives no wait of its own.
    max_server_wait: Duration::ZERO,
};

/// Takes the journal's lock, waiting up to a few seconds for another process.
pub(super) fn lock_journal(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("journal.lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&path)
        .map_err(|e| super::folder::io_error(&path, &e))?;
    let try_lock = || match file.try_lock() {
        Ok(()) => Attempt::Done(()),
        Err(TryLockError::WouldBlock) => Attempt::Retryable {
            error: in_use(dir),
            after: None,
        },
        Err(TryLockError::Error(e)) => Attempt::Final(e.into()),
    };
    retry_blocking(&LOCK_WAIT, try_lock, |_, _| {})?;
    Ok(file)
}

fn in_use(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
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
