//! Counters of a run's register requests, for the service's metrics. They live in a
//! task-local, so the sinks need no handle on whoever listens: outside a counted task
//! (the CLI) nothing is kept.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct RunCounters {
    /// Requests sent to the register (answered or not), token requests left out.
    pub requests: AtomicU64,
    /// Of those, answered 429.
    pub throttled: AtomicU64,
    /// Time spent waiting before retries, in milliseconds.
    pub retry_wait_ms: AtomicU64,
    /// Access tokens obtained (a refresh-token exchange or a client-credentials grant).
    pub token_refreshes: AtomicU64,
}

tokio::task_local! {
    static COUNTERS: Arc<RunCounters>;
}

/// Runs `work` with its register requests counted into `counters`.
pub async fn counted<F: Future>(counters: Arc<RunCounters>, work: F) -> F::Output {
    COUNTERS.scope(counters, work).await
}

fn add(which: impl FnOnce(&RunCounters) -> &AtomicU64, n: u64) {
    let _ = COUNTERS.try_with(|c| which(c).fetch_add(n, Ordering::Relaxed));
}

pub fn request(status: Option<u16>) {
    add(|c| &c.requests, 1);
    if status == Some(429) {
        add(|c| &c.throttled, 1);
    }
}

pub fn retry_wait(wait: Duration) {
    add(
        |c| &c.retry_wait_ms,
        wait.as_millis().min(u64::MAX as u128) as u64,
    );
}

pub fn token_refresh() {
    add(|c| &c.token_refreshes, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_counted_task_keeps_counts() {
        request(Some(429));
        let counters = Arc::new(RunCounters::default());
        counted(counters.clone(), async {
            request(Some(200));
            request(Some(429));
            request(None);
            retry_wait(Duration::from_millis(1500));
            token_refresh();
        })
        .await;
        assert_eq!(counters.requests.load(Ordering::Relaxed), 3);
        assert_eq!(counters.throttled.load(Ordering::Relaxed), 1);
        assert_eq!(counters.retry_wait_ms.load(Ordering::Relaxed), 1500);
        assert_eq!(counters.token_refreshes.load(Ordering::Relaxed), 1);
    }
}
