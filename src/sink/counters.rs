//! Counters of a run's register requests, for the service's metrics. They live in a
//! task-local, so the sinks need no handle on whoever listens: outside a counted task
//! (the CLI) nothing is kept.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct RunCounters {
    /// Requests sent to the register (answered or not), token requests left out.
    pub requests: AtomicU64,
    /// Of those, answered 429.
    pub throttled: AtomicU64,
    /// Time spent waiting before retries, in milliseconds.
    pub retry_wait_ms: AtomicU64,
    /// Access tokens obtained (a refresh-token exchange or a client-credentials grant).
    pub token_refreshes: AtomicU64,
    /// The least of the register's allowance left that its rate headers reported, in
    /// millionths (`u64::MAX`: none reported).
    pub headroom_millionths: AtomicU64,
}

impl Default for RunCounters {
    fn default() -> Self {
        RunCounters {
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retry_wait_ms: AtomicU64::new(0),
            token_refreshes: AtomicU64::new(0),
            headroom_millionths: AtomicU64::new(u64::MAX),
        }
    }
}

impl RunCounters {
    /// The least share (0 to 1) of its allowance the register said was left, if it said.
    pub fn headroom(&self) -> Option<f64> {
        match self.headroom_millionths.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n as f64 / 1e6),
        }
    }
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

/// The register reported `left` of `limit` of its allowance still to use.
pub fn headroom(left: u64, limit: u64) {
    if limit == 0 {
        return;
    }
    let millionths = (left.min(limit) as u128 * 1_000_000 / limit as u128) as u64;
    let _ = COUNTERS.try_with(|c| {
        c.headroom_millionths
            .fetch_min(millionths, Ordering::Relaxed)
    });
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
            assert_eq!(COUNTERS.with(|c| c.headroom()), None);
            headroom(300, 400);
            headroom(100, 400);
            headroom(900, 0);
            headroom(500, 400);
        })
        .await;
        assert_eq!(counters.headroom(), Some(0.25));
        assert_eq!(counters.requests.load(Ordering::Relaxed), 3);
        assert_eq!(counters.throttled.load(Ordering::Relaxed), 1);
        assert_eq!(counters.retry_wait_ms.load(Ordering::Relaxed), 1500);
        assert_eq!(counters.token_refreshes.load(Ordering::Relaxed), 1);
    }
}
