//! The one place that retries: exponential backoff with jitter (the `backoff` crate), a
//! total time budget per call, and server-given waits honoured but capped.
//!
//! Architecture invariant: no other module sleeps-and-retries; they classify an outcome
//! as `Retryable` and this module decides whether and when to try again.

use std::future::Future;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First wait; later waits grow exponentially with ±50 % jitter.
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Total time one call may spend, waits included, before it counts as failed.
    pub budget: Duration,
    /// Upper bound on a server-given wait (`Retry-After`, "Try again in N seconds"),
    /// so a hostile or mistaken header cannot stall the connector for a day.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(30),
            budget: Duration::from_secs(120),
            max_server_wait: Duration::from_secs(120),
        }
    }
}

/// What one attempt says about trying again.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Done(T),
    /// Worth another try; `after` is the server's own wait, if it gave one.
    Retryable {
        error: E,
        after: Option<Duration>,
    },
    /// Trying again cannot help.
    Final(E),
}

/// Runs `attempt` until it is done, final, or the budget is spent; returns the last
/// error in the latter cases. `on_retry` hears about each wait (for logs and counters).
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut waits = Waits::new(policy);
    loop {
        let (error, server_wait) = match attempt().await {
            Attempt::Done(value) => return Ok(value),
            Attempt::Final(error) => return Err(error),
            Attempt::Retryable { error, after } => (error, after),
        };
        let Some(wait) = waits.next(server_wait) else {
            return Err(error);
        };
        on_retry(&error, wait);
        tokio::time::sleep(wait).await;
    }
}

/// `retry` for blocking code outside the runtime's control (waiting for a file lock):
/// the same waits and budget, slept on the calling thread.
pub fn retry_blocking<T, E>(
    policy: &RetryPolicy,
    mut attempt: impl FnMut() -> Attempt<T, E>,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E> {
    let mut waits = Waits::new(policy);
    loop {
        let (error, server_wait) = match attempt() {
            Attempt::Done(value) => return Ok(value),
            Attempt::Final(error) => return Err(error),
            Attempt::Retryable { error, after } => (error, after),
        };
        let Some(wait) = waits.next(server_wait) else {
            return Err(error);
        };
        on_retry(&error, wait);
        std::thread::sleep(wait);
    }
}

/// The waits of one call: backoff with jitter, server waits honoured, within the budget.
struct Waits {
    policy: RetryPolicy,
    started: Instant,
    backoff: ExponentialBackoff,
}

impl Waits {
    fn new(policy: &RetryPolicy) -> Waits {
        Waits {
            policy: *policy,
            started: Instant::now(),
            backoff: ExponentialBackoffBuilder::new()
                .with_initial_interval(policy.initial_interval)
                .with_max_interval(policy.max_interval)
                .with_randomization_factor(0.5)
                .with_max_elapsed_time(None)
                .build(),
        }
    }

    /// The wait before the next attempt; `None` when it would overrun the budget.
    fn next(&mut self, server_wait: Option<Duration>) -> Option<Duration> {
        let policy = &self.policy;
        let own_wait = self.backoff.next_backoff().unwrap_or(policy.max_interval);
        // A server's wait is honoured (capped); never shorter than our own backoff, so a
        // `Retry-After: 0` cannot turn retries into a busy loop.
        let wait = match server_wait {
            Some(w) => w.min(policy.max_server_wait).max(own_wait),
            None => own_wait,
        };
        // Checked: a wait from a hostile `Retry-After` may be near `Duration::MAX`.
        let until = self.started.elapsed().checked_add(wait)?;
        (until <= policy.budget).then_some(wait)
    }
}

/// Reads a wait from a `Retry-After` header value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // An HTTP-date in any of RFC 9110's three forms (IMF-fixdate, RFC 850, asctime).
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Reads eAccounting's "... Try again in 55 seconds." from a 429 message.
pub fn parse_try_again_in(message: &str) -> Option<Duration> {
    let rest = &message[message.find("Try again in ")? + "Try again in ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let secs: u64 = digits.parse().ok()?;
    rest[digits.len()..]
        .trim_start()
        .starts_with("second")
        .then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
            budget: Duration::from_secs(5),
            max_server_wait: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn retries_until_done() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, &str> = retry(
            &fast(),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Attempt::Retryable {
                        error: "busy",
                        after: None,
                    },
                    n => Attempt::Done(n),
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn a_final_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), &str> = retry(
            &fast(),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Attempt::Final("bad request")
            },
            |_, _| {},
        )
        .await;
        assert_eq!(
            (result, calls.load(Ordering::SeqCst)),
            (Err("bad request"), 1)
        );
    }

    #[tokio::test]
    async fn a_huge_server_wait_is_capped() {
        let mut waits = vec![];
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let _: Result<(), &str> = retry(
            &fast(),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Attempt::Retryable {
                        error: "429",
                        after: Some(Duration::from_secs(86_400)),
                    },
                    _ => Attempt::Done(()),
                }
            },
            |_, wait| waits.push(wait),
        )
        .await;
        assert_eq!(waits, vec![Duration::from_millis(20)]);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_longest_wait_a_server_can_ask_for_ends_the_retries_without_a_panic() {
        let policy = RetryPolicy {
            max_server_wait: Duration::MAX,
            budget: Duration::MAX,
            ..fast()
        };
        let mut waits = Waits::new(&policy);
        let asked = parse_retry_after("18446744073709551615");
        assert_eq!(asked, Some(Duration::from_secs(u64::MAX)));
        assert_eq!(waits.next(Some(Duration::MAX)), None);
    }

    #[tokio::test]
    async fn the_budget_ends_endless_retries() {
        let policy = RetryPolicy {
            budget: Duration::from_millis(50),
            ..fast()
        };
        let result: Result<(), &str> = retry(
            &policy,
            || async {
                Attempt::Retryable {
                    error: "503",
                    after: None,
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err("503"));
    }

    #[test]
    fn blocking_retries_wait_like_async_ones() {
        let mut calls = 0;
        let mut waits = vec![];
        let result: Result<u32, &str> = retry_blocking(
            &fast(),
            || {
                calls += 1;
                match calls {
                    1..=3 => Attempt::Retryable {
                        error: "busy",
                        after: None,
                    },
                    n => Attempt::Done(n),
                }
            },
            |_, wait| waits.push(wait),
        );
        assert_eq!(result, Ok(4));
        assert_eq!(waits.len(), 3);
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(5) * 3 / 2));
        let final_error: Result<(), &str> =
            retry_blocking(&fast(), || Attempt::Final("denied"), |_, _| {});
        assert_eq!(final_error, Err("denied"));
    }

    #[test]
    fn blocking_retries_end_with_the_budget() {
        let policy = RetryPolicy {
            budget: Duration::from_millis(50),
            ..fast()
        };
        let started = Instant::now();
        let result: Result<(), &str> = retry_blocking(
            &policy,
            || Attempt::Retryable {
                error: "locked",
                after: None,
            },
            |_, _| {},
        );
        assert_eq!(result, Err("locked"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn parses_server_waits() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        // Every HTTP-date form of RFC 9110, in the future: a wait of about that long.
        let later = std::time::SystemTime::now() + Duration::from_secs(90);
        let fixdate = httpdate::fmt_http_date(later);
        let when: chrono::DateTime<chrono::Utc> = later.into();
        let rfc850 = when.format("%A, %d-%b-%y %H:%M:%S GMT").to_string();
        let asctime = when.format("%a %b %e %H:%M:%S %Y").to_string();
        for form in [fixdate, rfc850, asctime] {
            let wait = parse_retry_after(&form).unwrap_or_else(|| panic!("{form} unread"));
            assert!(
                (Duration::from_secs(85)..=Duration::from_secs(90)).contains(&wait),
                "{form}: {wait:?}"
            );
        }
        let msg =
            "API calls quota exceeded! maximum admitted 600 per Minute. Try again in 55 seconds.";
        assert_eq!(parse_try_again_in(msg), Some(Duration::from_secs(55)));
        assert_eq!(
            parse_try_again_in("Try again in 1 second."),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_try_again_in("Try again later"), None);
    }
}
