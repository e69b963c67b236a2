//! Visma eAccounting (eEkonomi / Spiris), API v2.
//!
//! Create: `POST /customers` with `CustomerNumber` = Opter customer code. Update: the
//! register's PUT is a full replace, so the current object is read and only our fields
//! are overlaid before it is sent back (fields an accountant set in Visma survive).
//! Find again: `$filter=CustomerNumber eq '...'`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::auth::TokenProvider;
use super::{SinkError, Written};
use crate::mapping::{FieldKind, FieldRule, MappedRecord, RegisterRules};
use crate::retry::{self, Attempt, RetryPolicy};

pub const PRODUCT: &str = "Visma eAccounting";

const fn rule(name: &'static str, kind: FieldKind, required: bool, personal: bool) -> FieldRule {
    FieldRule {
        name,
        kind,
        required,
        personal,
    }
}

const fn text(max_chars: usize) -> FieldKind {
    FieldKind::Text { max_chars }
}

/// The CustomerApi fields this connector fills, with the limits Visma publishes in its
/// swagger (`CustomerApi`); a test compares them with the swagger when it is at hand.
pub const RULES: RegisterRules = RegisterRules {
    product: PRODUCT,
    number_field: "CustomerNumber",
    fields: &[
        rule("CustomerNumber", text(16), false, false),
        rule("Name", text(50), true, true),
        rule("ContactPersonName", text(100), false, true),
        rule(
            "ContactPersonEmail",
            FieldKind::Email { max_chars: 255 },
            false,
            true,
        ),
        rule(
            "EmailAddress",
            FieldKind::Email { max_chars: 255 },
            false,
            true,
        ),
        rule("IsActive", FieldKind::Bool, true, false),
        rule("IsPrivatePerson", FieldKind::Bool, true, false),
        rule("InvoiceCity", text(50), true, false),
        rule("InvoicePostalCode", text(10), true, false),
        rule("TermsOfPaymentId", FieldKind::Uuid, true, false),
    ],
};

pub struct EAccountingSink {
    http: reqwest::Client,
    base: String,
    tokens: Arc<TokenProvider>,
    limiter: DefaultDirectRateLimiter,
    retry: RetryPolicy,
}

/// A response the caller wants: status and JSON body (if any).
struct Reply {
    status: u16,
    body: Value,
}

impl EAccountingSink {
    pub fn new(
        api_base: &str,
        tokens: TokenProvider,
        requests_per_minute: u32,
        retry: RetryPolicy,
    ) -> anyhow::Result<EAccountingSink> {
        let per_minute = NonZeroU32::new(requests_per_minute).unwrap_or(NonZeroU32::MIN);
        // Burst of one: with a larger burst, a window-counting server could see more
        // than its limit inside one minute.
        let quota = Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN);
        Ok(EAccountingSink {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build()?,
            base: api_base.trim_end_matches('/').to_string(),
            tokens: Arc::new(tokens),
            limiter: RateLimiter::direct(quota),
            retry,
        })
    }

    /// The register's customer with this number, if any.
    pub async fn find_by_number(&self, number: &str) -> Result<Option<Value>, SinkError> {
        let filter = format!("CustomerNumber eq '{}'", number.replace('\'', "''"));
        let mut url = url::Url::parse(&format!("{}/customers", self.base)).expect("base is a URL");
        url.query_pairs_mut().append_pair("$filter", &filter);
        let reply = self.send(Method::GET, url.as_str(), None).await?;
        let rows = reply.body["Data"].as_array().cloned().unwrap_or_default();
        if let Some(found) = rows.iter().find(|c| c["CustomerNumber"] == number) {
            return Ok(Some(found.clone()));
        }
        // "Not found" must be sure: a register that ignored the filter (Visma does not
        // document it for CustomerNumber) answers with other customers, or more pages.
        let total = reply.body["Meta"]["TotalNumberOfResults"].as_u64();
        if !rows.is_empty() || total.is_some_and(|t| t > 0) {
            return Err(SinkError::Failed {
                status: Some(reply.status),
                message: format!(
                    "{PRODUCT} did not filter by CustomerNumber, so whether the customer \
                     exists cannot be told"
                ),
            });
        }
        Ok(None)
    }

    /// The register's customer by id; `None` when it is not there (404).
    pub async fn get(&self, id: &str) -> Result<Option<Value>, SinkError> {
        match self
            .send(Method::GET, &format!("{}/customers/{id}", self.base), None)
            .await
        {
            Ok(reply) => Ok(Some(reply.body)),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a customer. eAccounting refuses customers with transactions (4001).
    pub async fn delete(&self, id: &str) -> Result<u16, SinkError> {
        let url = format!("{}/customers/{id}", self.base);
        Ok(self.send(Method::DELETE, &url, None).await?.status)
    }

    pub async fn create(&self, record: &MappedRecord) -> Result<Written, SinkError> {
        let body = create_body(record);
        let reply = self
            .send(
                Method::POST,
                &format!("{}/customers", self.base),
                Some(&body),
            )
            .await?;
        Ok(Written {
            remote_id: remote_id(&reply.body)?,
            status: reply.status,
        })
    }

    /// Overlays our fields on the register's current object and PUTs it back.
    pub async fn update(&self, id: &str, record: &MappedRecord) -> Result<Written, SinkError> {
        let url = format!("{}/customers/{id}", self.base);
        let current = self.send(Method::GET, &url, None).await?.body;
        let mut merged = current.as_object().cloned().unwrap_or_default();
        for (field, value) in &record.fields {
            match value {
                Value::Null => merged.remove(field),
                v => merged.insert(field.clone(), v.clone()),
            };
        }
        for (field, value) in &record.defaults {
            let unset = match merged.get(field) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset {
                merged.insert(field.clone(), value.clone());
            }
        }
        let reply = self
            .send(Method::PUT, &url, Some(&Value::Object(merged)))
            .await?;
        Ok(Written {
            remote_id: id.to_string(),
            status: reply.status,
        })
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Reply, SinkError> {
        let refreshed = AtomicBool::new(false);
        retry::retry(
            &self.retry,
            || self.attempt(method.clone(), url, body, &refreshed),
            |e, wait| tracing::info!("{PRODUCT}: {e}; retrying in {wait:?}"),
        )
        .await
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        refreshed: &AtomicBool,
    ) -> Attempt<Reply, SinkError> {
        let token = match self.tokens.access_token().await {
            Ok(t) => t,
            Err(e @ SinkError::Failed { .. }) => {
                return Attempt::Retryable {
                    error: e,
                    after: None,
                }
            }
            Err(e) => return Attempt::Final(e),
        };
        self.limiter.until_ready().await;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.secret.expose_secret())
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let message = format!("cannot reach {PRODUCT}: {}", without_url(&e));
                return Attempt::Retryable {
                    error: SinkError::Failed {
                        status: None,
                        message,
                    },
                    after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let text = match response.text().await {
            Ok(text) => text,
            // Headers came but the body did not: the outcome is unknown, like a timeout.
            Err(e) => {
                let message = format!("{PRODUCT}'s answer broke off: {}", without_url(&e));
                return Attempt::Retryable {
                    error: SinkError::Failed {
                        status: Some(status.as_u16()),
                        message,
                    },
                    after: None,
                };
            }
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Attempt::Done(Reply {
                status: status.as_u16(),
                body,
            });
        }
        let (code, message) = error_of(&body, status);
        let failed = SinkError::Failed {
            status: Some(status.as_u16()),
            message: message.clone(),
        };
        match classify(status, retry_after, &message) {
            // One refresh and one retry; a second 401 means the grant itself is bad.
            Class::Unauthorized if !refreshed.swap(true, Ordering::SeqCst) => {
                self.tokens.invalidate(token.generation).await;
                Attempt::Retryable {
                    error: failed,
                    after: Some(Duration::ZERO),
                }
            }
            Class::Unauthorized | Class::Forbidden => {
                Attempt::Final(SinkError::NeedsLogin(format!(
                "{PRODUCT} refused our access token (HTTP {status}: {message}). Check that the \
                 login has the scopes ea:api and ea:sales, or run `opter-visma-sync auth login`."
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
}

/// What an unsuccessful answer means, decided in one place (see ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 401: refresh the token once and try again.
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

/// eAccounting's error body is `{ErrorCode, DeveloperErrorMessage, ErrorId}`.
fn error_of(body: &Value, status: StatusCode) -> (Option<String>, String) {
    let code = match &body["ErrorCode"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    // Only the register's own message, with quoted parts removed: it may echo values
    // (an address in the object sent back on update), and it is logged and journaled.
    // A body that is not eAccounting's (a proxy's error page) is replaced by the status.
    let message = match body["DeveloperErrorMessage"].as_str() {
        Some(m) => without_quoted(m).chars().take(300).collect(),
        None => status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string(),
    };
    (code, message)
}

/// Replaces text between quotes ('…' or "…") with an ellipsis.
fn without_quoted(message: &str) -> String {
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

fn remote_id(body: &Value) -> Result<String, SinkError> {
    body["Id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| SinkError::Failed {
            status: None,
            message: format!("{PRODUCT} answered without the customer's Id"),
        })
}

/// The body of `POST /customers`: constants and our fields, unset ones left out.
pub fn create_body(record: &MappedRecord) -> Value {
    Value::Object(
        record
            .defaults
            .iter()
            .chain(&record.fields)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<String, Value>>(),
    )
}

/// reqwest errors include the URL; ours never carry query values, but keep messages short.
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
    fn error_bodies_give_code_and_message() {
        let body = serde_json::json!({"ErrorCode": 4000, "DeveloperErrorMessage": "taken", "ErrorId": "x"});
        assert_eq!(
            error_of(&body, StatusCode::BAD_REQUEST),
            (Some("4000".into()), "taken".into())
        );
        // A proxy's page is not eAccounting's body: only the status is kept.
        assert_eq!(
            error_of(&Value::Null, StatusCode::BAD_GATEWAY),
            (None, "Bad Gateway".into())
        );
        // Quoted parts may echo values (the whole object goes back on update).
        let echo = serde_json::json!({"ErrorCode": 2000,
            "DeveloperErrorMessage": "Address 'Storgatan 1' and \"070-123\" are invalid"});
        assert_eq!(
            error_of(&echo, StatusCode::BAD_REQUEST).1,
            "Address '…' and \"…\" are invalid"
        );
    }
}
