//! Alerts: a message to each configured channel (webhooks, email) when a tenant's
//! condition changes, and one when it recovers.
//!
//! Invariants: an alert names the tenant by id and the register, and says what is wrong
//! in the words of the run's error (which carries no values) or in counts; never a
//! customer's name, email or code. Sending never blocks a run: each channel has its own
//! bounded queue and task, retries through `retry`, and drops (with a warning) only
//! when its queue is full or its retry budget is spent.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::values::{check_env_name, check_url, secret, Env};
use crate::error::{Error, Result};
use crate::journal::Counts;
use crate::retry::{retry, Attempt, RetryPolicy};

/// Alerts waiting per channel; past this, new ones are dropped with a warning.
const QUEUE: usize = 256;
/// The longest part of a run's error an alert quotes.
const MOST_DETAIL_CHARS: usize = 300;

/// What a tenant's last run says about it, for alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    Ok,
    /// The run failed for a reason other than those below.
    Failing,
    /// Opter or the register could not be reached.
    Unreachable,
    NeedsLogin,
    Budget,
    /// The tenant's config does not load or a run refused it.
    Config,
    JournalDamaged,
    /// `journal verify`, at the end of a run, found the journal changed after it was
    /// written or a support action cut off.
    VerifyFailed,
    /// Customers rejected, failed or in conflict, at least `rejections_at` of them.
    Rejections,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::Ok => "ok",
            Condition::Failing => "failing",
            Condition::Unreachable => "unreachable",
            Condition::NeedsLogin => "needs-login",
            Condition::Budget => "budget",
            Condition::Config => "config",
            Condition::JournalDamaged => "journal-damaged",
            Condition::VerifyFailed => "journal-verify",
            Condition::Rejections => "rejections",
        }
    }

    fn says(self) -> &'static str {
        match self {
            Condition::Ok => "is syncing again",
            Condition::Failing => "failed to run",
            Condition::Unreachable => "cannot reach Opter or the register",
            Condition::NeedsLogin => "needs a new Visma login",
            Condition::Budget => "used up the register's daily call budget and is paused",
            Condition::Config => "has a config that does not load",
            Condition::JournalDamaged => "has a journal that cannot be read whole",
            Condition::VerifyFailed => "failed `journal verify` and is paused",
            Condition::Rejections => "has customers that were not written",
        }
    }

    /// The condition a run's end puts a tenant in.
    pub fn of_run(error: Option<&Error>, counts: Option<&Counts>, rejections_at: u64) -> Self {
        match error {
            Some(Error::NeedsLogin(_)) => Condition::NeedsLogin,
            Some(Error::Budget(_)) => Condition::Budget,
            Some(Error::Config(_)) => Condition::Config,
            Some(Error::Corrupt(_)) => Condition::JournalDamaged,
            Some(Error::Other(e)) if unreachable(e) => Condition::Unreachable,
            Some(Error::Other(_)) => Condition::Failing,
            None => match counts.map_or(0, not_written) {
                n if n >= rejections_at => Condition::Rejections,
                _ => Condition::Ok,
            },
        }
    }
}

/// Customers a run did not write: rejected, failed or in conflict.
pub fn not_written(counts: &Counts) -> u64 {
    counts.rejected + counts.failed + counts.conflict
}

/// Whether an error comes from a connection that could not be made or timed out. The
/// clients say "cannot reach ..." for those, since their errors keep no source that
/// could carry a URL's query.
fn unreachable(error: &anyhow::Error) -> bool {
    error.to_string().starts_with("cannot reach ")
        || error.chain().any(|cause| {
            cause
                .downcast_ref::<reqwest::Error>()
                .is_some_and(|e| e.is_connect() || e.is_timeout())
                || cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                    )
                })
        })
}

/// What a tenant was last alerted about, so each change is told once.
#[derive(Debug, Clone, Copy)]
pub struct Alerted {
    pub condition: Condition,
    /// For `Rejections`: the count last told; told again once it has doubled.
    pub count: u64,
}

impl Default for Alerted {
    fn default() -> Self {
        Alerted {
            condition: Condition::Ok,
            count: 0,
        }
    }
}

impl Alerted {
    /// The alert this change calls for, if any, and what is now told.
    pub fn next(self, now: Condition, count: u64) -> Option<(Alerted, Condition)> {
        let told = Alerted {
            condition: now,
            count,
        };
        match (self.condition, now) {
            (before, now) if before != now => Some((told, before)),
            (Condition::Rejections, Condition::Rejections) if count >= self.count * 2 => {
                Some((told, Condition::Rejections))
            }
            _ => None,
        }
    }
}

/// One alert, as sent to every channel.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub tenant: String,
    pub register: String,
    pub state: &'static str,
    pub previous: &'static str,
    pub recovered: bool,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// What is wrong: the run's error (which names files, keys and hosts, never values)
    /// or counts of customers.
    pub detail: String,
}

impl Alert {
    pub fn new(
        tenant: &str,
        register: &str,
        now: Condition,
        before: Condition,
        run_id: Option<String>,
        detail: &str,
    ) -> Alert {
        let first_line = detail.lines().next().unwrap_or_default();
        let mut detail: String = crate::output::printable(first_line)
            .chars()
            .take(MOST_DETAIL_CHARS)
            .collect();
        if first_line.chars().count() > MOST_DETAIL_CHARS {
            detail.push('…');
        }
        Alert {
            tenant: tenant.to_string(),
            register: register.to_string(),
            state: now.name(),
            previous: before.name(),
            recovered: now == Condition::Ok,
            at: Utc::now(),
            run_id,
            detail,
        }
    }

    pub fn subject(&self) -> String {
        let now = condition_named(self.state);
        match self.recovered {
            true => format!(
                "opter-visma-sync: tenant {} ({}) recovered",
                self.tenant, self.register
            ),
            false => format!(
                "opter-visma-sync: tenant {} ({}) {}",
                self.tenant,
                self.register,
                now.says()
            ),
        }
    }

    pub fn text(&self) -> String {
        let mut text = match self.recovered {
            true => format!(
                "Tenant {} ({}) is syncing again (it was {}).",
                self.tenant, self.register, self.previous
            ),
            false => format!(
                "Tenant {} ({}) {}.",
                self.tenant,
                self.register,
                condition_named(self.state).says()
            ),
        };
        if !self.detail.is_empty() {
            text.push(' ');
            text.push_str(&self.detail);
        }
        if let Some(run) = &self.run_id {
            text.push_str(&format!(" (run {run})"));
        }
        text
    }

    fn payload(&self, format: WebhookFormat) -> Value {
        match format {
            WebhookFormat::Json => {
                let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
                value["text"] = Value::String(self.text());
                value
            }
            WebhookFormat::Slack => json!({ "text": self.text() }),
            WebhookFormat::Teams => json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": self.subject(),
                "title": self.subject(),
                "text": self.text(),
                "themeColor": if self.recovered { "2EB886" } else { "D00000" },
            }),
        }
    }
}

fn condition_named(name: &str) -> Condition {
    [
        Condition::Ok,
        Condition::Failing,
        Condition::Unreachable,
        Condition::NeedsLogin,
        Condition::Budget,
        Condition::Config,
        Condition::JournalDamaged,
        Condition::VerifyFailed,
        Condition::Rejections,
    ]
    .into_iter()
    .find(|c| c.name() == name)
    .unwrap_or(Condition::Failing)
}

/// `[alerts]` of `service.toml`.
#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {
    pub rejections_at: u64,
    pub webhooks: Vec<Webhook>,
    pub emails: Vec<Email>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    Json,
    Slack,
    Teams,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    /// Slack's and Teams' webhook URLs are secrets: whoever has one can post.
    url: SecretString,
    format: WebhookFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a server on this machine.
    None,
}

#[derive(Debug, Clone)]
pub struct Email {
    host: String,
    port: u16,
    security: Security,
    from: Mailbox,
    to: Vec<Mailbox>,
    login: Option<(SecretString, SecretString)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    #[serde(default = "default_rejections_at")]
    rejections_at: u64,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
    #[serde(default)]
    email: Vec<RawEmail>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            rejections_at: default_rejections_at(),
            webhook: Vec::new(),
            email: Vec::new(),
        }
    }
}

fn default_rejections_at() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url_env: String,
    #[serde(default = "default_format")]
    format: WebhookFormat,
}

fn default_format() -> WebhookFormat {
    WebhookFormat::Json
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_security")]
    security: Security,
    from: String,
    to: Vec<String>,
    username_env: Option<String>,
    password_env: Option<String>,
}

fn default_security() -> Security {
    Security::Starttls
}

impl RawAlerts {
    pub(super) fn resolve(self, file: &Path, env: &dyn Env) -> Result<AlertsConfig> {
        let bad = |key: String, why: &str| {
            Error::config(format!("{}: [alerts] {key}: {why}", file.display()))
        };
        if !(1..=1_000_000).contains(&self.rejections_at) {
            return Err(bad(
                "rejections_at".into(),
                &format!("is {}; use 1 to 1,000,000", self.rejections_at),
            ));
        }
        let mut webhooks = Vec::new();
        for (i, raw) in self.webhook.into_iter().enumerate() {
            let key = format!("webhook[{i}].url_env");
            check_env_name(&raw.url_env).map_err(|why| bad(key.clone(), &why))?;
            let url = secret(file, env, &format!("[alerts] {key}"), &raw.url_env)?;
            // Checked without echoing it: the URL is the secret.
            check_url(url.expose_secret()).map_err(|_| {
                Error::config(format!(
                    "environment variable {} ({}: [alerts] {key} names it) is not an \
                     http(s) URL",
                    raw.url_env,
                    file.display()
                ))
            })?;
            webhooks.push(Webhook {
                url,
                format: raw.format,
            });
        }
        let mut emails = Vec::new();
        for (i, raw) in self.email.into_iter().enumerate() {
            let key = |k: &str| format!("email[{i}].{k}");
            let host = raw.host.trim().to_string();
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(key("host"), "is not a host name"));
            }
            if raw.security == Security::None && !is_loopback(&host) {
                return Err(bad(
                    key("security"),
                    "\"none\" sends mail unencrypted: only to a server on this machine \
                     (localhost, 127.0.0.1, ::1); use \"starttls\" or \"tls\"",
                ));
            }
            let port = raw.port.unwrap_or(match raw.security {
                Security::Starttls => 587,
                Security::Tls => 465,
                Security::None => 25,
            });
            let from: Mailbox = raw
                .from
                .parse()
                .map_err(|_| bad(key("from"), "is not an email address"))?;
            if raw.to.is_empty() {
                return Err(bad(key("to"), "names no one; give at least one address"));
            }
            let to = raw
                .to
                .iter()
                .enumerate()
                .map(|(j, to)| {
                    to.parse::<Mailbox>()
                        .map_err(|_| bad(key(&format!("to[{j}]")), "is not an email address"))
                })
                .collect::<Result<Vec<_>>>()?;
            let login = match (raw.username_env, raw.password_env) {
                (None, None) => None,
                (Some(user), Some(password)) => {
                    for (k, var) in [("username_env", &user), ("password_env", &password)] {
                        check_env_name(var).map_err(|why| bad(key(k), &why))?;
                    }
                    Some((
                        secret(
                            file,
                            env,
                            &format!("[alerts] {}", key("username_env")),
                            &user,
                        )?,
                        secret(
                            file,
                            env,
                            &format!("[alerts] {}", key("password_env")),
                            &password,
                        )?,
                    ))
                }
                _ => {
                    return Err(bad(
                        key("username_env"),
                        "give both username_env and password_env, or neither",
                    ))
                }
            };
            emails.push(Email {
                host,
                port,
                security: raw.security,
                from,
                to,
                login,
            });
        }
        Ok(AlertsConfig {
            rejections_at: self.rejections_at,
            webhooks,
            emails,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The channels' queues and their tasks.
pub struct Alerter {
    queues: std::sync::Mutex<Vec<(String, mpsc::Sender<Alert>)>>,
    tasks: std::sync::Mutex<Option<JoinSet<()>>>,
}

impl Alerter {
    /// Starts one task per channel; `policy` says how long each alert is retried.
    pub fn start(config: &AlertsConfig, policy: RetryPolicy) -> Result<Alerter> {
        let mut queues = Vec::new();
        let mut tasks = JoinSet::new();
        if !config.webhooks.is_empty() {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .map_err(|e| Error::Other(e.into()))?;
            for (i, hook) in config.webhooks.iter().enumerate() {
                let (tx, rx) = mpsc::channel(QUEUE);
                let name = format!("webhook[{i}]");
                queues.push((name.clone(), tx));
                tasks.spawn(deliver_webhooks(
                    name,
                    client.clone(),
                    hook.clone(),
                    rx,
                    policy,
                ));
            }
        }
        for (i, email) in config.emails.iter().enumerate() {
            let transport = email.transport()?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let name = format!("email[{i}]");
            queues.push((name.clone(), tx));
            tasks.spawn(deliver_emails(name, transport, email.clone(), rx, policy));
        }
        Ok(Alerter {
            queues: std::sync::Mutex::new(queues),
            tasks: std::sync::Mutex::new(Some(tasks)),
        })
    }

    /// Queues `alert` on every channel; never waits.
    pub fn send(&self, alert: Alert) {
        tracing::warn!(
            tenant = %alert.tenant,
            state = alert.state,
            previous = alert.previous,
            "alert: {}",
            alert.subject()
        );
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for (name, queue) in queues.iter() {
            if queue.try_send(alert.clone()).is_err() {
                tracing::warn!(
                    tenant = %alert.tenant,
                    "alert channel {name}: its queue is full; this alert is dropped"
                );
            }
        }
    }

    /// Takes no more alerts, lets queued ones go out for at most `wait`, then stops.
    pub async fn finish(&self, wait: Duration) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut tasks) = tasks else { return };
        let drained =
            tokio::time::timeout(wait, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("alerts still unsent at shutdown are dropped");
            tasks.abort_all();
        }
    }
}

async fn deliver_webhooks(
    name: String,
    client: reqwest::Client,
    hook: Webhook,
    mut queue: mpsc::Receiver<Alert>,
    policy: RetryPolicy,
) {
    while let Some(alert) = queue.recv().await {
        let body = alert.payload(hook.format);
        let sent = retry(
            &policy,
            || {
                let request = client.post(hook.url.expose_secret()).json(&body);
                async move {
                    match request.send().await {
                        Ok(reply) if reply.status().is_success() => Attempt::Done(()),
                        Ok(reply) => {
                            let status = reply.status();
                            let after = reply
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(crate::retry::parse_retry_after);
                            let error = format!("answered {status}");
                            match status.is_server_error() || status.as_u16() == 429 {
                                true => Attempt::Retryable { error, after },
                                false => Attempt::Final(error),
                            }
                        }
                        // Without the URL: it is the secret.
                        Err(e) => Attempt::Retryable {
                            error: describe_send_error(&e),
                            after: None,
                        },
                    }
                }
            },
            |error, wait| {
                tracing::info!(
                    "alert channel {name}: {error}; trying again in {}",
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                )
            },
        )
        .await;
        if let Err(error) = sent {
            tracing::warn!(
                tenant = %alert.tenant,
                "alert channel {name}: not delivered ({error}); this alert is dropped"
            );
        }
    }
}

fn describe_send_error(e: &reqwest::Error) -> String {
    match () {
        _ if e.is_connect() => "cannot connect".into(),
        _ if e.is_timeout() => "no answer in time".into(),
        _ => "the request failed".into(),
    }
}

impl Email {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
        let builder = match self.security {
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host),
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host),
            Security::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &self.host,
            )),
        }
        .map_err(|e| Error::config(format!("an [alerts] email host cannot be used: {e}")))?;
        let mut builder = builder
            .port(self.port)
            .timeout(Some(Duration::from_secs(20)));
        if let Some((user, password)) = &self.login {
            builder = builder.credentials(Credentials::new(
                user.expose_secret().to_string(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }

    fn message(&self, alert: &Alert) -> std::result::Result<Message, String> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        message
            .body(format!(
                "{}\n\nAt {}.\n",
                alert.text(),
                alert.at.to_rfc3339()
            ))
            .map_err(|e| format!("the message cannot be built: {e}"))
    }
}

async fn deliver_emails(
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    email: Email,
    mut queue: mpsc::Receiver<Alert>,
    policy: RetryPolicy,
) {
    while let Some(alert) = queue.recv().await {
        let message = match email.message(&alert) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!("alert channel {name}: {error}; this alert is dropped");
                continue;
            }
        };
        let sent = retry(
            &policy,
            || {
                let (transport, message) = (&transport, message.clone());
                async move {
                    match transport.send(message).await {
                        Ok(_) => Attempt::Done(()),
                        Err(e) if e.is_permanent() => Attempt::Final(e.to_string()),
                        Err(e) => Attempt::Retryable {
                            error: e.to_string(),
                            after: None,
                        },
                    }
                }
            },
            |error, wait| {
                tracing::info!(
                    "alert channel {name}: {error}; trying again in {}",
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                )
            },
        )
        .await;
        if let Err(error) = sent {
            tracing::warn!(
                tenant = %alert.tenant,
                "alert channel {name}: not delivered ({error}); this alert is dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_told_once_and_growing_rejections_again_when_doubled() {
        let start = Alerted::default();
        assert!(start.next(Condition::Ok, 0).is_none());
        let (down, before) = start.next(Condition::Unreachable, 0).unwrap();
        assert_eq!(before, Condition::Ok);
        assert!(down.next(Condition::Unreachable, 0).is_none());
        let (up, before) = down.next(Condition::Ok, 0).unwrap();
        assert_eq!(before, Condition::Unreachable);
        let (some, _) = up.next(Condition::Rejections, 3).unwrap();
        assert!(some.next(Condition::Rejections, 5).is_none());
        assert!(some.next(Condition::Rejections, 6).is_some());
    }

    #[test]
    fn an_alert_quotes_one_line_of_the_error_escaped_and_short() {
        let detail = format!("\u{1b}]0;title\u{7}{}\nsecond line", "x".repeat(400));
        let alert = Alert::new(
            "t1",
            "eaccounting",
            Condition::Failing,
            Condition::Ok,
            None,
            &detail,
        );
        assert!(!alert.detail.contains('\u{1b}') && !alert.detail.contains("second"));
        assert!(alert.detail.chars().count() <= MOST_DETAIL_CHARS + 1);
        let teams = alert.payload(WebhookFormat::Teams);
        assert_eq!(teams["@type"], "MessageCard");
        assert!(teams["text"]
            .as_str()
            .unwrap()
            .starts_with("Tenant t1 (eaccounting) failed"));
        let json = alert.payload(WebhookFormat::Json);
        assert_eq!(json["state"], "failing");
        assert_eq!(json["recovered"], false);
    }

    #[test]
    fn unencrypted_mail_goes_only_to_this_machine() {
        let file = Path::new("service.toml");
        let env = std::collections::HashMap::<String, String>::new();
        let raw = |host: &str| RawAlerts {
            rejections_at: 1,
            webhook: Vec::new(),
            email: vec![RawEmail {
                host: host.into(),
                port: Some(2525),
                security: Security::None,
                from: "sync@example.com".into(),
                to: vec!["admin@example.com".into()],
                username_env: None,
                password_env: None,
            }],
        };
        assert!(raw("127.0.0.1").resolve(file, &env).is_ok());
        assert!(raw("localhost").resolve(file, &env).is_ok());
        let e = raw("mail.example.com")
            .resolve(file, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[alerts] email[0].security"), "{e}");
    }

    #[test]
    fn a_webhook_url_that_is_no_url_is_refused_without_being_shown() {
        let file = Path::new("service.toml");
        let env: std::collections::HashMap<String, String> =
            [("HOOK".to_string(), "LEAK-not-a-url".to_string())].into();
        let raw = RawAlerts {
            rejections_at: 1,
            webhook: vec![RawWebhook {
                url_env: "HOOK".into(),
                format: WebhookFormat::Slack,
            }],
            email: Vec::new(),
        };
        let e = raw.resolve(file, &env).unwrap_err().to_string();
        assert!(e.contains("HOOK") && !e.contains("LEAK"), "{e}");
    }
}
