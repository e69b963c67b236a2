//! The HTTP side every sink shares: one keep-alive client, the client-side rate limit,
//! credentials on each request, retries (through `retry`), and the sorting of answers
//! into the failure classes the engine acts on.
//!
//! Architecture invariant: a sink builds URLs and bodies and reads replies; it does not
//! retry, sleep or look at tokens. What differs between products (error bodies, what a
//! refused credential means, product-specific error codes) is a `Dialect`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::auth::{ClientCredentials, TokenProvider};
use super::SinkError;
use crate::retry::{self, Attempt, RetryPolicy};

/// How requests prove who we are.
pub enum Credentials {
    /// OAuth2 bearer token from a rotating refresh token (eAccounting).
    Refreshing(TokenProvider),
    /// OAuth2 bearer token from the client-credentials grant (Visma.net).
    ClientCredentials(ClientCredentials),
    /// Fixed secret headers (e-conomic's `X-AppSecretToken`, `X-AgreementGrantToken`).
    Headers(Vec<(&'static str, SecretString)>),
}

struct Bearer {
    secret: SecretString,
    generation: u64,
}

impl Credentials {
    async fn bearer(&self) -> Result<Option<Bearer>, SinkError> {
        let token = match self {
            Credentials::Refreshing(p) => p.access_token().await?,
            Credentials::ClientCredentials(p) => p.access_token().await?,
            Credentials::Headers(_) => return Ok(None),
        };
        Ok(Some(Bearer {
            secret: token.secret,
            generation: token.generation,
        }))
    }

    async fn invalidate(&self, generation: u64) {
        match self {
            Credentials::Refreshing(p) => p.invalidate(generation).await,
            Credentials::ClientCredentials(p) => p.invalidate(generation).await,
            Credentials::Headers(_) => {}
        }
    }

    /// Token requests keep the register calls' retry budget.
    fn set_retry(&mut self, retry: RetryPolicy) {
        match self {
            Credentials::Refreshing(p) => p.set_retry(retry),
            Credentials::ClientCredentials(p) => p.set_retry(retry),
            Credentials::Headers(_) => {}
        }
    }

    /// A request with a token of `generation` got through.
    fn confirm(&self, generation: u64) {
        match self {
            Credentials::Refreshing(p) => p.confirm(generation),
            Credentials::ClientCredentials(p) => p.confirm(generation),
            Credentials::Headers(_) => {}
        }
    }

    /// Whether no OAuth token has been taken by the register yet: until one is, requests
    /// go one at a time, so a refused grant is presented once, not once per worker.
    fn unproven(&self) -> bool {
        match self {
            Credentials::Refreshing(p) => p.never_taken(),
            Credentials::ClientCredentials(p) => p.never_taken(),
            Credentials::Headers(_) => false,
        }
    }

    /// A client-credentials token refused while none was ever taken: the grant gives
    /// tokens the API does not accept (Visma.net: a token for the customer's tenant).
    fn refused_on_first_use(&self) -> bool {
        matches!(self, Credentials::ClientCredentials(p) if p.never_taken())
    }
}

/// What differs between the registers' HTTP answers.
pub struct Dialect {
    /// Product name for messages, e.g. "Visma eAccounting".
    pub product: &'static str,
    /// Reads an error body: the product's error code and a message safe to log and
    /// journal (quoted parts, which may echo values, removed).
    pub error_of: fn(&Value, StatusCode) -> (Option<String>, String),
    /// Product-specific meanings decided before the common classes (e.g. "no license
    /// for this company" is a configuration problem, not a rejected customer).
    pub special: fn(StatusCode, Option<&str>, &str) -> Option<SinkError>,
    /// What a person must do when the register refuses our credentials.
    pub refused_hint: &'static str,
    /// What it means when a client-credentials token the token endpoint has just issued
    /// is refused (401) before any token was ever taken: a configuration error, with
    /// this message. `None`: handled like any refused token.
    pub refused_on_first_use: Option<&'static str>,
}

/// A successful answer: status, headers and the body's text, parsed when asked for
/// (a create answers with the whole customer, of which the sink may need one field).
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The JSON body, which must be there and readable: what a write is built from or
    /// decided on. An empty, truncated or foreign body (a proxy's page, a byte-order
    /// mark in front) is "cannot tell", so the customer fails and nothing is written.
    pub fn json(&self, product: &str, what: &str) -> Result<Value, SinkError> {
        serde_json::from_str(&self.text).map_err(|_| SinkError::Failed {
            status: Some(self.status),
            message: format!(
                "{product} answered {what} (HTTP {}) with a body that is not readable JSON; \
                 nothing is written from it",
                self.status
            ),
        })
    }

    /// Part of the JSON body, read into `T` without building the rest.
    pub fn part<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(&self.text).ok()
    }
}

pub struct Http {
    client: reqwest::Client,
    credentials: Credentials,
    limiter: DefaultDirectRateLimiter,
    /// Set from the server's rate headers: send nothing before this instant.
    paused_until: Mutex<Option<Instant>>,
    retry: RetryPolicy,
    dialect: Dialect,
    /// Counts every request that leaves; one that would pass it does not leave.
    budget: Option<std::sync::Arc<super::budget::CallBudget>>,
    /// The error that stopped requests (credentials refused, a configuration error the
    /// register pointed at): every later call answers with it without sending anything,
    /// so a refused token is presented once, not once per worker.
    stopped: Mutex<Option<SinkError>>,
    /// Held by the one attempt in flight while no client-credentials token was taken.
    first_use: tokio::sync::Mutex<()>,
}

impl Http {
    pub fn new(
        dialect: Dialect,
        mut credentials: Credentials,
        requests_per_minute: u32,
        retry: RetryPolicy,
    ) -> anyhow::Result<Http> {
        credentials.set_retry(retry);
        let per_minute = NonZeroU32::new(requests_per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst_for(per_minute));
        Ok(Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                // A redirect could carry our credentials to another host.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            credentials,
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            retry,
            dialect,
            budget: None,
            stopped: Mutex::new(None),
            first_use: tokio::sync::Mutex::new(()),
        })
    }

    /// Counts every request against `budget` (e-conomic's daily calls).
    pub fn with_budget(mut self, budget: std::sync::Arc<super::budget::CallBudget>) -> Http {
        self.budget = Some(budget);
        self
    }

    pub fn product(&self) -> &'static str {
        self.dialect.product
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Reply, SinkError> {
        self.send_with(method, url, body, &[]).await
    }

    /// Sends with extra headers (e.g. `Idempotency-Key`), retrying what is transient.
    pub async fn send_with(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, SinkError> {
        if let Some(e) = self.stopped_by() {
            return Err(e);
        }
        let refreshed = AtomicBool::new(false);
        let product = self.dialect.product;
        retry::retry(
            &self.retry,
            || self.attempt(method.clone(), url, body, headers, &refreshed),
            |e, wait| {
                super::counters::retry_wait(wait);
                tracing::info!("{product}: {e}; retrying in {wait:?}")
            },
        )
        .await
    }

    /// The error that stopped this client's requests, if any.
    fn stopped_by(&self) -> Option<SinkError> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One attempt. While no OAuth token has been taken yet, attempts go one at a time,
    /// so that a grant whose tokens the API refuses (a wrong tenant, a missing scope) is
    /// found out by one request, not by one per worker. An error that stops
    /// the run is kept before the next attempt may start.
    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        refreshed: &AtomicBool,
    ) -> Attempt<Reply, SinkError> {
        let _first_use = match self.credentials.unproven() {
            true => Some(self.first_use.lock().await),
            false => None,
        };
        if let Some(e) = self.stopped_by() {
            return Attempt::Final(e);
        }
        let outcome = self
            .attempt_once(method, url, body, headers, refreshed)
            .await;
        if let Attempt::Final(e) = &outcome {
            if e.stops_the_run() {
                let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
                stopped.get_or_insert_with(|| e.clone());
            }
        }
        outcome
    }

    async fn attempt_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        refreshed: &AtomicBool,
    ) -> Attempt<Reply, SinkError> {
        let product = self.dialect.product;
        // The token provider retries its own endpoint within the budget: what it gives
        // up on stops the run.
        let bearer = match self.credentials.bearer().await {
            Ok(b) => b,
            Err(e) => return Attempt::Final(e),
        };
        self.wait_for_allowance().await;
        if let Some(budget) = &self.budget {
            if let Err(message) = budget.spend() {
                return Attempt::Final(SinkError::Budget(message));
            }
        }
        let mut request = self
            .client
            .request(method, url)
            .header("accept", "application/json");
        if let Some(b) = &bearer {
            request = request.bearer_auth(b.secret.expose_secret());
        }
        if let Credentials::Headers(secrets) = &self.credentials {
            for (name, value) in secrets {
                request = request.header(*name, value.expose_secret());
            }
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let sent = request.send().await;
        super::counters::request(sent.as_ref().ok().map(|r| r.status().as_u16()));
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retryable {
                    error: SinkError::Failed {
                        status: None,
                        message: format!("cannot reach {product}: {}", without_url(&e)),
                    },
                    after: None,
                }
            }
        };
        let status = response.status();
        // Taken, not copied: the body is read from what is left.
        let headers = std::mem::take(response.headers_mut());
        self.note_rate_headers(&headers);
        let retry_after = header(&headers, "retry-after").and_then(retry::parse_retry_after);
        // Bytes, then text: valid UTF-8 (the usual case) is taken as it is, without the
        // copy and the slower lossy check of `Response::text`.
        let text = match response.bytes().await {
            Ok(bytes) => String::from_utf8(Vec::from(bytes))
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            // Headers came but the body did not: the outcome is unknown, like a timeout.
            Err(e) => {
                return Attempt::Retryable {
                    error: SinkError::Failed {
                        status: Some(status.as_u16()),
                        message: format!("{product}'s answer broke off: {}", without_url(&e)),
                    },
                    after: None,
                }
            }
        };
        if status.is_redirection() {
            return Attempt::Final(moved(product, status, &headers, url));
        }
        // Past the token check: any answer but a 401 (and a gateway's 5xx) was the API's.
        let past_the_token =
            status.is_success() || (status.is_client_error() && status != StatusCode::UNAUTHORIZED);
        if let Some(b) = bearer.as_ref().filter(|_| past_the_token) {
            self.credentials.confirm(b.generation);
        }
        if status.is_success() {
            return Attempt::Done(Reply {
                status: status.as_u16(),
                headers,
                text,
            });
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let (code, message) = (self.dialect.error_of)(&body, status);
        if let Some(e) = (self.dialect.special)(status, code.as_deref(), &message) {
            return Attempt::Final(e);
        }
        let failed = SinkError::Failed {
            status: Some(status.as_u16()),
            message: message.clone(),
        };
        match classify(status, retry_after, &message) {
            // A token just issued and never taken: the setup is wrong, not the token.
            Class::Unauthorized if bearer.is_some() && self.credentials.refused_on_first_use() => {
                match self.dialect.refused_on_first_use {
                    Some(why) => Attempt::Final(SinkError::Config(format!(
                        "{product} refused the token it had just issued (HTTP {status} on its \
                         first use): {why}"
                    ))),
                    None => Attempt::Final(SinkError::NeedsLogin(format!(
                        "{product} refused our credentials (HTTP {status}: {message}). {}",
                        self.dialect.refused_hint
                    ))),
                }
            }
            // One new token and one retry; a second 401 means the grant itself is bad.
            Class::Unauthorized if bearer.is_some() && !refreshed.swap(true, Ordering::SeqCst) => {
                if let Some(b) = &bearer {
                    self.credentials.invalidate(b.generation).await;
                }
                Attempt::Retryable {
                    error: failed,
                    after: Some(Duration::ZERO),
                }
            }
            Class::Unauthorized | Class::Forbidden => {
                Attempt::Final(SinkError::NeedsLogin(format!(
                    "{product} refused our credentials (HTTP {status}: {message}). {}",
                    self.dialect.refused_hint
                )))
            }
            Class::Retry(after) => Attempt::Retryable {
                error: failed,
                after,
            },
            Class::Reject => Attempt::Final(SinkError::Rejected {
                status: status.as_u16(),
                code,
                message,
            }),
        }
    }

    /// Waits for our own limiter and for any pause the server's rate headers asked for.
    async fn wait_for_allowance(&self) {
        let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = paused {
            tokio::time::sleep_until(until.into()).await;
        }
        self.limiter.until_ready().await;
    }

    /// Holds every request when the server says its allowance is used up, instead of
    /// spending calls on 429s: Visma.net's `X-RateLimit-Remaining: 0` with
    /// `X-RateLimit-Reset: N` (seconds) pauses until the reset; e-conomic's token bucket,
    /// `X-RateLimiting: token-limit-N-per-S-seconds: U/N` with `U` tokens *used*, until
    /// a call costing what this one did (`X-CallCost`) fits again.
    fn note_rate_headers(&self, headers: &HeaderMap) {
        let number = |name| header(headers, name).and_then(|v| v.trim().parse::<u64>().ok());
        match (number("x-ratelimit-remaining"), number("x-ratelimit-limit")) {
            (Some(left), Some(limit)) => super::counters::headroom(left, limit),
            _ => {
                if let Some((used, limit)) = header(headers, "x-ratelimiting").and_then(bucket_use)
                {
                    super::counters::headroom(limit.saturating_sub(used), limit);
                }
            }
        }
        let wait = match (number("x-ratelimit-remaining"), number("x-ratelimit-reset")) {
            (Some(0), Some(reset)) => Some(Duration::from_secs(reset)),
            _ => header(headers, "x-ratelimiting")
                .and_then(|v| bucket_refill_wait(v, number("x-callcost").unwrap_or(1).max(1))),
        };
        let Some(wait) = wait else { return };
        let wait = wait.min(self.retry.max_server_wait);
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|p| p < until) {
            tracing::info!(
                "{}: rate allowance used up; pausing {wait:?}",
                self.dialect.product
            );
            *paused = Some(until);
        }
    }
}

/// One answer to a read-only probe (`check`), as it came: not retried, not sorted into
/// the failure classes, so the caller can tell a missing scope from a wrong tenant.
pub struct Probed {
    pub status: u16,
    /// The register's error code, if its error body has one.
    pub code: Option<String>,
    /// The register's message, quoted parts removed (as journaled messages are).
    pub message: String,
    /// The answer's `Date` header, for comparing clocks.
    pub date: Option<chrono::DateTime<chrono::Utc>>,
    pub text: String,
}

impl Probed {
    /// The JSON body (`Null` when empty or not JSON).
    pub fn body(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Http {
    /// Gets an access token the way every request would (for products that use one),
    /// without sending anything to the register's API.
    pub async fn probe_token(&self) -> Result<(), SinkError> {
        self.credentials.bearer().await.map(|_| ())
    }

    /// One `GET`, with the product's credentials, answered as it came. Nothing is
    /// retried, except that a 401 gets one new token and one more try, as every request
    /// does (a stored access token may have been revoked): a doctor reports, it does not
    /// wait out outages.
    pub async fn probe(&self, url: &str) -> Result<Probed, SinkError> {
        let product = self.dialect.product;
        let mut renewed = false;
        let response = loop {
            let bearer = self.credentials.bearer().await?;
            let mut request = self.client.get(url).header("accept", "application/json");
            if let Some(b) = &bearer {
                request = request.bearer_auth(b.secret.expose_secret());
            }
            if let Credentials::Headers(secrets) = &self.credentials {
                for (name, value) in secrets {
                    request = request.header(*name, value.expose_secret());
                }
            }
            let response = request.send().await.map_err(|e| SinkError::Failed {
                status: None,
                message: format!("cannot reach {product}: {}", without_url(&e)),
            })?;
            match (&bearer, response.status()) {
                (Some(b), StatusCode::UNAUTHORIZED) if !renewed => {
                    self.credentials.invalidate(b.generation).await;
                    renewed = true;
                }
                _ => break response,
            }
        };
        let status = response.status();
        let date = header(response.headers(), "date")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&chrono::Utc));
        let text = response.text().await.map_err(|e| SinkError::Failed {
            status: Some(status.as_u16()),
            message: format!("{product}'s answer broke off: {}", without_url(&e)),
        })?;
        let (code, message) = match status.is_success() {
            true => (None, String::new()),
            false => {
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                (self.dialect.error_of)(&body, status)
            }
        };
        Ok(Probed {
            status: status.as_u16(),
            code,
            message,
            date,
            text,
        })
    }
}

/// A redirect from the register's API: our requests never follow one (it could carry
/// the credentials elsewhere), and every request would meet it, so it is the
/// configuration's `api_base` that is wrong. The message names the Location's host only,
/// never its path or query.
fn moved(product: &str, status: StatusCode, headers: &HeaderMap, url: &str) -> SinkError {
    let target = header(headers, "location")
        .and_then(|l| url::Url::parse(url).ok()?.join(l).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    let from = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    let to = match (target, from) {
        (Some(t), Some(f)) if t == f => format!("another path on {t}"),
        (Some(t), _) => t,
        (None, _) => "a location it did not give".to_string(),
    };
    SinkError::Config(format!(
        "{product} answered HTTP {} with a redirect to {to}: check `api_base` in [sink] of the \
         config (requests are never sent on to a redirect, so nothing was written)",
        status.as_u16()
    ))
}

/// The limiter's burst: one request, or two milliseconds' worth where the rate is higher.
/// With a burst of one at such rates nearly every request waited some microseconds on
/// governor's timer thread, and those wake-ups cost a sixth of an initial sync's CPU. A
/// larger burst would let a server that counts per window see more than its limit inside
/// one window; two milliseconds' worth adds at most that many. Registers allow hundreds
/// a minute, where the burst is one.
fn burst_for(per_minute: NonZeroU32) -> NonZeroU32 {
    NonZeroU32::new(per_minute.get() / 30_000).unwrap_or(NonZeroU32::MIN)
}

/// e-conomic's `X-RateLimiting: token-limit-10000-per-60-seconds: 147/10000`: a bucket
/// of 10,000 tokens refilled over 60 seconds, of which 147 are *used* (it climbs as
/// calls are made; Pogoe/EConomic.NET `src/EConomic.Net/Http/RateLimitStatus.cs`, parsed
/// from a live capture in its `RateLimitStatusTests`), and calls cost `X-CallCost`
/// tokens, possibly more than one. The time until a call of `cost` fits again, when it
/// does not now; `None` while it fits or the header is not that. The window may be
/// fractional (the sandbox scales it down).
fn bucket_refill_wait(value: &str, cost: u64) -> Option<Duration> {
    let (used, limit, seconds) = bucket(value)?;
    // An overdrawn bucket (used above the limit) waits for all of it.
    let short = (used + cost.min(limit))
        .checked_sub(limit)
        .filter(|s| *s > 0)?;
    Some(Duration::from_secs_f64(
        seconds * short as f64 / limit as f64,
    ))
}

/// An `X-RateLimiting` value's tokens used, bucket size and refill seconds.
fn bucket(value: &str) -> Option<(u64, u64, f64)> {
    let (rule, state) = value.split_once(':')?;
    let (used, _) = state.trim().split_once('/')?;
    let used: u64 = used.trim().parse().ok()?;
    let rest = rule.trim().strip_prefix("token-limit-")?;
    let (limit, rest) = rest.split_once("-per-")?;
    let seconds = rest.strip_suffix("-seconds")?;
    let (limit, seconds): (u64, f64) = (limit.parse().ok()?, seconds.parse().ok()?);
    if limit == 0 || !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    Some((used, limit, seconds))
}

/// An `X-RateLimiting` value's tokens used and bucket size.
fn bucket_use(value: &str) -> Option<(u64, u64)> {
    bucket(value).map(|(used, limit, _)| (used, limit))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What an unsuccessful answer means, decided in one place (see ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 401: get a new token once and try again.
    Unauthorized,
    /// 403: the login lacks a scope or permission; a person must act.
    Forbidden,
    /// Transient (429, 408, 5xx): try again, after the server's wait if it gave one.
    Retry(Option<Duration>),
    /// The register refused the content (400, 404, 409...): record and move on.
    Reject,
}

pub fn classify(status: StatusCode, retry_after: Option<Duration>, message: &str) -> Class {
    match status {
        StatusCode::UNAUTHORIZED => Class::Unauthorized,
        StatusCode::FORBIDDEN => Class::Forbidden,
        // eAccounting sends no Retry-After; its wait is in the message.
        StatusCode::TOO_MANY_REQUESTS => {
            Class::Retry(retry_after.or_else(|| retry::parse_try_again_in(message)))
        }
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Class::Retry(retry_after),
        _ => Class::Reject,
    }
}

/// Replaces text between quotes ('…' or "…") with an ellipsis: registers' messages
/// may echo the values sent, and messages are logged and journaled.
pub fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if c == '\'' || c == '"' => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

/// A register's message made safe to keep: quoted parts removed, at most 300 characters;
/// without one (a proxy's page), the status's reason.
pub fn safe_message(message: Option<&str>, status: StatusCode) -> String {
    match message {
        Some(m) => without_quoted(m).chars().take(300).collect(),
        None => status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string(),
    }
}

/// No product-specific meanings.
pub fn nothing_special(_: StatusCode, _: Option<&str>, _: &str) -> Option<SinkError> {
    None
}

/// reqwest errors include the URL; ours never carry values, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers_per_the_failure_classes() {
        let secs = |n| Some(Duration::from_secs(n));
        let quota =
            "API calls quota exceeded! maximum admitted 600 per Minute. Try again in 55 seconds.";
        let cases = [
            (429, None, quota, Class::Retry(secs(55))),
            (429, secs(7), quota, Class::Retry(secs(7))),
            (429, None, "slow down", Class::Retry(None)),
            (500, None, "", Class::Retry(None)),
            (502, None, "", Class::Retry(None)),
            (503, secs(3), "", Class::Retry(secs(3))),
            (504, None, "", Class::Retry(None)),
            (408, None, "", Class::Retry(None)),
            (400, None, "Name: required", Class::Reject),
            (404, None, "", Class::Reject),
            (409, None, "", Class::Reject),
            (401, None, "", Class::Unauthorized),
            (403, None, "", Class::Forbidden),
        ];
        for (status, after, message, want) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(classify(status, after, message), want, "{status}");
        }
    }

    #[test]
    fn a_redirect_names_the_location_host_only() {
        let message = |location: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(l) = location {
                headers.insert("location", l.parse().unwrap());
            }
            match moved(
                "Visma.net ERP",
                StatusCode::MOVED_PERMANENTLY,
                &headers,
                "https://api.finance.visma.net/v1/customer/K1?x=1",
            ) {
                SinkError::Config(m) => m,
                other => panic!("{other:?}"),
            }
        };
        let m = message(Some("https://new.example.com/path/v2?token=s3cr3t"));
        assert!(
            m.contains("HTTP 301") && m.contains("new.example.com"),
            "{m}"
        );
        assert!(m.contains("api_base") && !m.contains("s3cr3t") && !m.contains("/path"));
        let m = message(Some("/elsewhere?token=s3cr3t"));
        assert!(m.contains("another path on api.finance.visma.net"), "{m}");
        assert!(!m.contains("s3cr3t") && !m.contains("elsewhere"), "{m}");
        assert!(message(None).contains("a location it did not give"));
    }

    #[test]
    fn the_limiter_bursts_only_at_rates_no_register_allows() {
        let burst = |n| burst_for(NonZeroU32::new(n).unwrap()).get();
        // The registers' limits (eAccounting 600 a minute): one request at a time.
        assert_eq!(burst(600), 1);
        assert_eq!(burst(59_999), 1);
        // Above one request per two milliseconds: two milliseconds' worth.
        assert_eq!(burst(60_000), 2);
        assert_eq!(burst(1_000_000), 33);
    }

    #[test]
    fn the_token_bucket_header_counts_used_tokens_and_calls_cost_what_they_cost() {
        let wait = |v, cost| bucket_refill_wait(v, cost);
        // A live header: 147 of 10,000 used, plenty left.
        assert_eq!(wait("token-limit-10000-per-60-seconds: 147/10000", 3), None);
        assert_eq!(wait("token-limit-10-per-60-seconds: 0/10", 1), None);
        assert_eq!(wait("token-limit-10-per-60-seconds: 9/10", 1), None);
        // All used: one token back takes 6 s; a call costing 3 needs three.
        assert_eq!(
            wait("token-limit-10-per-60-seconds: 10/10", 1),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            wait("token-limit-10-per-60-seconds: 9/10", 3),
            Some(Duration::from_secs(12))
        );
        // Overdrawn: the excess comes back first.
        assert_eq!(
            wait("token-limit-10-per-60-seconds: 12/10", 1),
            Some(Duration::from_secs(18))
        );
        assert_eq!(
            wait("token-limit-4-per-0.500-seconds: 4/4", 2),
            Some(Duration::from_millis(250))
        );
        assert_eq!(wait("something else", 1), None);
        assert_eq!(wait("token-limit-0-per-60-seconds: 0/0", 1), None);
    }

    #[test]
    fn quoted_parts_are_removed_and_long_messages_cut() {
        assert_eq!(
            safe_message(
                Some("Address 'Storgatan 1' and \"070-123\" are invalid"),
                StatusCode::BAD_REQUEST
            ),
            "Address '…' and \"…\" are invalid"
        );
        assert_eq!(safe_message(Some("'open"), StatusCode::BAD_REQUEST), "'…");
        assert_eq!(
            safe_message(None, StatusCode::BAD_GATEWAY),
            "Bad Gateway".to_string()
        );
        assert_eq!(
            safe_message(Some(&"x".repeat(500)), StatusCode::BAD_REQUEST).len(),
            300
        );
    }
}
