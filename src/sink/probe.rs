//! Read-only probes of a register for `check`: a token, and single `GET`s answered as
//! they came (`http::Probed`). Each product's `probe.rs` opens a `Prober` from its
//! settings and says what its answers mean.
//!
//! Architecture invariant: a probe never writes to the register and retries nothing but
//! a 401 (with one new token, as every request does); the only thing it may store is a
//! rotated refresh token, exactly as a sync would.

use std::sync::Mutex;

use super::http::{Http, Probed};
use super::SinkError;

/// What a probe found: fine (with a short note), or what a person must fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok(String),
    Fail(String),
}

/// The register's shared HTTP client and API base, for probes.
pub struct Prober {
    http: Http,
    base: String,
    /// Local clock minus the register's `Date`, from the first answer that had one.
    skew: Mutex<Option<chrono::Duration>>,
}

impl Prober {
    pub fn new(http: Http, api_base: &str) -> Prober {
        Prober {
            http,
            base: api_base.trim_end_matches('/').to_string(),
            skew: Mutex::new(None),
        }
    }

    pub fn product(&self) -> &'static str {
        self.http.product()
    }

    /// Gets an access token (a no-op for products with fixed credentials).
    pub async fn token(&self) -> Result<(), SinkError> {
        self.http.probe_token().await
    }

    /// `GET {api_base}{path}` once.
    pub async fn get(&self, path: &str) -> Result<Probed, SinkError> {
        let answer = self.http.probe(&format!("{}{path}", self.base)).await?;
        if let Some(date) = answer.date {
            let mut skew = self.skew.lock().unwrap_or_else(|e| e.into_inner());
            skew.get_or_insert(chrono::Utc::now() - date);
        }
        Ok(answer)
    }

    /// Local clock minus the register's, if an answer carried a `Date` header.
    pub fn skew(&self) -> Option<chrono::Duration> {
        *self.skew.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an access token can be got.
    pub async fn token_verdict(&self) -> Verdict {
        match self.token().await {
            Ok(()) => Verdict::Ok("an access token was issued".into()),
            Err(e) => Verdict::Fail(e.to_string()),
        }
    }
}

/// A failed probe request (no answer, or no token) as a verdict.
pub fn unreachable(product: &str, e: &SinkError) -> Verdict {
    Verdict::Fail(format!("{product} could not be asked: {e}"))
}

/// An environment variable the register's settings name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedVar {
    /// The config key that names it, as in messages (`[sink] client_secret_env`).
    pub key: &'static str,
    pub var: String,
    /// Needed only until something else takes its place (a stored grant).
    pub optional: bool,
}

/// Pages of a list endpoint until `found` says yes or the pages run out; `page` builds
/// the path of page `n` (0-based), `items` reads one page's rows, `more` whether there
/// is another page after it.
pub async fn find_in_list(
    prober: &Prober,
    page: impl Fn(u64) -> String,
    items: impl Fn(&serde_json::Value) -> Vec<serde_json::Value>,
    more: impl Fn(&serde_json::Value, u64) -> bool,
    found: impl Fn(&serde_json::Value) -> bool,
) -> Result<Result<bool, Probed>, SinkError> {
    // A few hundred entries at most in practice; the bound keeps a register that
    // ignores paging from keeping us here.
    for n in 0..50 {
        let answer = prober.get(&page(n)).await?;
        if !(200..300).contains(&answer.status) {
            return Ok(Err(answer));
        }
        let body = answer.body();
        if items(&body).iter().any(&found) {
            return Ok(Ok(true));
        }
        if !more(&body, n) {
            break;
        }
    }
    Ok(Ok(false))
}

/// An unexpected answer as a verdict: status and the register's code and message.
pub fn unexpected(product: &str, what: &str, answer: &Probed) -> Verdict {
    let code = answer
        .code
        .as_deref()
        .map(|c| format!(", error {c}"))
        .unwrap_or_default();
    Verdict::Fail(format!(
        "{product} answered {what} with HTTP {}{code}: {}",
        answer.status, answer.message
    ))
}
