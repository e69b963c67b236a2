//! Opter's REST API (header `x-api-key`).
//!
//! No public spec exists for Opter's customer register endpoint, so this is the contract
//! the adapter expects (paths and page size come from the config):
//!
//! `GET {base_url}{customers_path}?page=P&pageSize=S[&changedSince=RFC3339]`, answering
//! `{"page","pageSize","totalCount","items":[customer...]}` where a customer has
//! `customerCode`, `customerNumber` (optional), `name`, `isActive`, `updated` and
//! `references: [{name, email, isDefault, ...}]`, next to fields the adapter never reads
//! (`corporateIdNumber`, `vatNumber`, addresses, `phone`, `email`, `information`,
//! `created`, reference phones and ids).
//!
//! `changedSince` (sent in whole seconds, rounded down) keeps the customers whose
//! `updated` is strictly later; a customer without `updated` is only in full reads.
//! `updated` is Opter's own clock, and the highest one read is the run's source cursor.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::record::{SourceCustomer, SourceReference};
use crate::retry::{self, Attempt, RetryPolicy};

/// Pages requested ahead of the one being planned: Opter works on the next ones while
/// the connector parses and plans, without flooding it.
const PAGES_IN_FLIGHT: usize = 2;

/// The fields read from a page; serde skips every other field without storing it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePage {
    #[serde(default)]
    total_count: Option<u64>,
    items: Vec<WireCustomer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCustomer {
    customer_code: String,
    #[serde(default)]
    customer_number: Option<WireNumber>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "yes")]
    is_active: bool,
    #[serde(default, deserialize_with = "opter_time")]
    updated: Option<DateTime<Utc>>,
    #[serde(default)]
    references: Vec<WireReference>,
}

/// Opter's `updated`, as chrono's `DateTime<Utc>` reads it, trying the strict RFC 3339
/// parser first: it is several times faster than the relaxed one `FromStr` uses, and
/// every customer read has a time.
fn opter_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match DateTime::parse_from_rfc3339(v) {
                Ok(t) => Ok(Some(t.with_timezone(&Utc))),
                Err(_) => v.parse().map(Some).map_err(E::custom),
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Visitor)
}

/// Opter may send the sales ledger number as digits in a string or as a number. A
/// visitor rather than an untagged enum: serde buffers an untagged value before trying
/// each variant, for every customer read.
struct WireNumber(String);

impl<'de> Deserialize<'de> for WireNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WireNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a customer number as text or as a whole number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WireNumber, E> {
                Ok(WireNumber(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<WireNumber, E> {
                Ok(WireNumber(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WireNumber, E> {
                Ok(WireNumber(v.to_string()))
            }
            // serde's own message would quote the value; these name only its kind.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<WireNumber, E> {
                Err(E::custom("a customer number is negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<WireNumber, E> {
                Err(E::custom("a customer number is not a whole number"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<WireNumber, E> {
                Err(E::custom("a customer number is a flag, not a number"))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReference {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    is_default: bool,
}

fn yes() -> bool {
    true
}

/// Largest page the Opter adapter asks for; larger pages only cost memory.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// `[source] kind = "opter-api"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpterApiConfig {
    /// The customer web's URL plus `/api`, e.g. `https://acme.opter.cloud/api`.
    pub base_url: String,
    /// Path of the customer register endpoint below `base_url`.
    #[serde(default = "default_customers_path")]
    pub customers_path: String,
    /// Name of the environment variable that holds the `x-api-key`.
    pub api_key_env: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

fn default_customers_path() -> String {
    "/Customers".into()
}

fn default_page_size() -> u32 {
    500
}

impl From<WireCustomer> for SourceCustomer {
    fn from(w: WireCustomer) -> Self {
        SourceCustomer {
            code: w.customer_code,
            number: w.customer_number.map(|n| n.0),
            name: w.name.unwrap_or_default(),
            is_active: w.is_active,
            updated: w.updated,
            references: w
                .references
                .into_iter()
                .map(|r| SourceReference {
                    name: r.name,
                    email: r.email,
                    is_default: r.is_default,
                })
                .collect(),
        }
    }
}

pub struct OpterApiSource {
    client: reqwest::Client,
    url: url::Url,
    api_key: SecretString,
    api_key_env: String,
    page_size: u32,
    retry: RetryPolicy,
}

/// One page as the engine sees it.
pub struct Page {
    pub customers: Vec<SourceCustomer>,
    pub total_count: Option<u64>,
}

/// Parses one page of Opter's answer, reading only the permitted fields.
pub fn parse_page(bytes: &[u8]) -> serde_json::Result<Page> {
    // One check of the whole body is cheaper than serde_json's check of every string.
    // A body that fails it is still read from bytes: serde_json checks only the strings
    // it keeps, so bad bytes in a field never read do not refuse the page.
    let page: WirePage = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text)?,
        Err(_) => serde_json::from_slice(bytes)?,
    };
    Ok(Page {
        customers: page.items.into_iter().map(SourceCustomer::from).collect(),
        total_count: page.total_count,
    })
}

impl OpterApiSource {
    pub fn new(config: &OpterApiConfig, api_key: SecretString, retry: RetryPolicy) -> Result<Self> {
        let joined = format!(
            "{}{}",
            config.base_url.trim_end_matches('/'),
            config.customers_path
        );
        let url = url::Url::parse(&joined).map_err(|e| {
            Error::config(format!(
                "[source] base_url + customers_path {joined:?}: {e}"
            ))
        })?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // A redirect would carry the API key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(anyhow::Error::from)?;
        Ok(OpterApiSource {
            client,
            url,
            api_key,
            api_key_env: config.api_key_env.clone(),
            page_size: config.page_size,
            retry,
        })
    }

    /// Fetches one page (1-based), retrying transient failures.
    pub async fn page(&self, page: u32, changed_since: Option<DateTime<Utc>>) -> Result<Page> {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("pageSize", &self.page_size.to_string());
        if let Some(since) = changed_since {
            url.query_pairs_mut().append_pair(
                "changedSince",
                &since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
        retry::retry(
            &self.retry,
            || self.attempt(url.clone()),
            |e, wait| tracing::warn!(page, "Opter read failed ({e}); retrying in {wait:?}"),
        )
        .await
    }

    async fn attempt(&self, url: url::Url) -> Attempt<Page, Error> {
        let sent = self
            .client
            .get(url)
            .header("x-api-key", self.api_key.expose_secret())
            .header("accept", "application/json")
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retryable {
                    error: Error::Other(anyhow::anyhow!("cannot reach Opter at {}: {e}", self.url)),
                    after: None,
                }
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Attempt::Final(Error::config(format!(
                "Opter refused the API key (HTTP {status}). Check the key in ${} and that the \
                 key's Access tab in Opter grants the customer register.",
                self.api_key_env
            )));
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(retry::parse_retry_after);
            return Attempt::Retryable {
                error: Error::Other(anyhow::anyhow!("Opter answered HTTP {status}")),
                after,
            };
        }
        if status.is_redirection() {
            // Never followed: every page would meet it, so the setting is what is wrong.
            // Only the Location's host is named, never its path or query.
            let host = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| self.url.join(l).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "a location it did not give".into());
            return Attempt::Final(Error::config(format!(
                "Opter answered HTTP {} with a redirect to {host}: check [source] base_url \
                 (the API key is never sent on to a redirect)",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            // The body is left out: it may echo what was asked, or hold anything at all.
            return Attempt::Final(Error::Other(anyhow::anyhow!(
                "Opter answered HTTP {status} for {}",
                self.url
            )));
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retryable {
                    error: Error::Other(anyhow::anyhow!("reading Opter's answer failed: {e}")),
                    after: None,
                }
            }
        };
        match parse_page(&bytes) {
            Ok(page) => Attempt::Done(page),
            Err(e) => Attempt::Final(Error::Other(anyhow::anyhow!(
                "Opter's answer from {} is not the expected customer page: {e}",
                self.url
            ))),
        }
    }

    /// Reads every page (with `changed_since`, only customers changed after it) and
    /// hands each to `pages` with the total, if known, as soon as it arrives; the channel's
    /// room decides how far reading runs ahead of whoever plans the pages.
    pub async fn read_pages(
        &self,
        changed_since: Option<DateTime<Utc>>,
        pages: &tokio::sync::mpsc::Sender<super::PageOf>,
    ) -> Result<()> {
        let mut paging = Paging {
            page_size: u64::from(self.page_size.max(1)),
            next: 1,
            read: 0,
            total: None,
            more: true,
        };
        let first = self.page(1, changed_since).await?;
        if pages.send(paging.took(first)).await.is_err() {
            return Ok(()); // the planner stopped
        }
        // The page count is known: keep the next pages in flight while this one is parsed
        // and planned, in order.
        if let Some(expected) = paging.total.filter(|_| paging.more) {
            let last = u32::try_from(expected.div_ceil(paging.page_size)).unwrap_or(u32::MAX);
            let mut ahead = futures::stream::iter(paging.next..=last)
                .map(|number| self.page(number, changed_since))
                .buffered(PAGES_IN_FLIGHT);
            while let Some(page) = ahead.next().await {
                if pages.send(paging.took(page?)).await.is_err() || !paging.more {
                    return Ok(());
                }
            }
        }
        // Then one page at a time, for as long as there may be more: Opter sent no total,
        // or customers were added while paging.
        while !paging.finished() {
            let page = self.page(paging.next, changed_since).await?;
            if pages.send(paging.took(page)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Where reading the pages stands.
struct Paging {
    page_size: u64,
    /// The next page to ask for.
    next: u32,
    read: u64,
    /// Opter's latest `totalCount`.
    total: Option<u64>,
    /// Whether the last page had customers.
    more: bool,
}

impl Paging {
    /// Counts a page in; returns what to hand on.
    fn took(&mut self, page: Page) -> super::PageOf {
        self.next += 1;
        self.read += page.customers.len() as u64;
        self.total = page.total_count.or(self.total);
        self.more = !page.customers.is_empty();
        (page.customers, self.total)
    }

    /// Whether everything has been read: Opter's total reached, an empty page, or
    /// (without a total) a short page.
    fn finished(&self) -> bool {
        match self.total {
            Some(total) => self.read >= total || !self.more,
            None => !self.more || !self.read.is_multiple_of(self.page_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Serves `total` customers in pages of one. Page 2 answers only once page 3 has been
    /// asked for, or after five seconds; the returned flag says whether page 3 was asked
    /// for while page 2 was still unanswered.
    async fn paged_opter(total: usize) -> (String, Arc<AtomicBool>) {
        use axum::extract::{Query, State};
        #[derive(Clone, Default)]
        struct Flags {
            third_asked: Arc<AtomicBool>,
            overlapped: Arc<AtomicBool>,
        }
        let page =
            move |State(flags): State<Flags>,
                  Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let n: usize = q["page"].parse().unwrap();
                if n == 3 {
                    flags.third_asked.store(true, Ordering::SeqCst);
                }
                if n == 2 {
                    for _ in 0..500 {
                        if flags.third_asked.load(Ordering::SeqCst) {
                            flags.overlapped.store(true, Ordering::SeqCst);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                let items: Vec<_> = (n <= total)
                    .then(
                        || serde_json::json!({"customerCode": format!("K{n}"), "name": "Acme AB"}),
                    )
                    .into_iter()
                    .collect();
                axum::Json(serde_json::json!({"totalCount": total, "items": items}))
            };
        let flags = Flags::default();
        let overlapped = flags.overlapped.clone();
        let app = axum::Router::new()
            .route("/api/customers", axum::routing::get(page))
            .with_state(flags);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, overlapped)
    }

    #[tokio::test]
    async fn the_next_pages_are_asked_for_before_the_current_one_is_in_and_arrive_in_order() {
        let (base_url, overlapped) = paged_opter(4).await;
        let config = OpterApiConfig {
            base_url,
            customers_path: "/customers".into(),
            api_key_env: "OPTER_API_KEY".into(),
            page_size: 1,
        };
        let source =
            OpterApiSource::new(&config, SecretString::from("k"), RetryPolicy::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        source.read_pages(None, &tx).await.unwrap();
        drop(tx);
        let mut codes = Vec::new();
        while let Some((customers, _)) = rx.recv().await {
            codes.extend(customers.into_iter().map(|c| c.code));
        }
        assert_eq!(codes, ["K1", "K2", "K3", "K4"]);
        assert!(
            overlapped.load(Ordering::SeqCst),
            "page 3 was not asked for until page 2 was in"
        );
    }

    #[test]
    fn only_permitted_fields_are_parsed_and_the_rest_is_skipped() {
        let json = r#"{"page":1,"pageSize":2,"totalCount":1,"items":[{
            "customerCode":"K1","customerNumber":1001,"name":"Acme AB",
            "corporateIdNumber":"19800101-1234","vatNumber":"SE1","phone":"+46 8 1",
            "visitingAddress":{"street":"Gatan 1"},"information":"gate 4711",
            "isActive":false,"created":"2020-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z",
            "references":[{"id":7,"name":"Ann","email":"ann@acme.se","phone":"070","mobilePhone":"071","isDefault":true}]}]}"#;
        let c = parse_page(json.as_bytes()).unwrap().customers.remove(0);
        assert_eq!(c.number.as_deref(), Some("1001"));
        assert!(!c.is_active);
        let debug = format!("{c:?}");
        for never in [
            "19800101",
            "SE1",
            "+46",
            "Gatan",
            "4711",
            "070",
            "071",
            "2020-01-01",
        ] {
            assert!(!debug.contains(never), "{never} leaked into {debug}");
        }
    }

    #[test]
    fn numbers_and_times_read_in_every_form_opter_may_send() {
        let page = |number: &str, updated: &str| {
            let json = format!(
                r#"{{"items":[{{"customerCode":"K1","customerNumber":{number},"updated":{updated}}}]}}"#
            );
            parse_page(json.as_bytes()).map(|mut p| p.customers.remove(0))
        };
        for (number, read) in [
            (r#""0042""#, Some("0042")),
            ("42", Some("42")),
            ("null", None),
        ] {
            assert_eq!(page(number, "null").unwrap().number.as_deref(), read);
        }
        for (bad, value) in [("-17", "17"), ("4.25", "4.25"), ("true", "true")] {
            let e = page(bad, "null").unwrap_err().to_string();
            assert!(e.contains("customer number") && !e.contains(value), "{e}");
        }
        // Strict RFC 3339 and what chrono's relaxed reading accepts read the same.
        for (text, utc) in [
            ("2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            ("2025-06-30T23:59:59.250+02:00", "2025-06-30T21:59:59.250Z"),
            ("2025-06-30 21:59:59.25 +00:00", "2025-06-30T21:59:59.250Z"),
            ("2025-06-30t21:59:59z", "2025-06-30T21:59:59Z"),
        ] {
            let expected: DateTime<Utc> = utc.parse().unwrap();
            let c = page("1", &format!("{text:?}")).unwrap();
            assert_eq!(c.updated, Some(expected), "{text}");
            assert_eq!(text.parse::<DateTime<Utc>>().ok(), Some(expected), "{text}");
        }
        assert_eq!(page("1", "null").unwrap().updated, None);
        let missing = r#"{"items":[{"customerCode":"K1"}]}"#;
        let c = parse_page(missing.as_bytes()).unwrap().customers.remove(0);
        assert_eq!((c.updated, c.number), (None, None));
        for bad in [r#""yesterday""#, "20250101", r#""2025-13-01T00:00:00Z""#] {
            assert!(page("1", bad).is_err(), "{bad}");
        }
    }
}
