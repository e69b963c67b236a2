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

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{IgnoredAny, MapAccess, SeqAccess};
use serde::Deserialize;
use sha2::Digest;

use super::{Page, Unreadable};
use crate::error::{Error, Result};
use crate::record::{SourceCustomer, SourceReference};
use crate::retry::{self, Attempt, RetryPolicy};

/// Pages requested ahead of the one being planned: Opter works on the next ones while
/// the connector parses and plans, without flooding it.
const PAGES_IN_FLIGHT: usize = 2;

/// The largest answer read for one page is this much per customer of `page_size`, and
/// at least `MIN_PAGE_BYTES`: a customer with its references and the fields never read
/// fits many times over, and a page that never ends cannot fill memory.
pub const PAGE_BYTES_PER_CUSTOMER: usize = 8 * 1024;
pub const MIN_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Pages read past the last one Opter's `totalCount` leaves room for: customers added
/// while paging move the last ones onto the next page.
const PAGES_PAST_TOTAL: u32 = 1;

/// What a permitted field holds, as far as reading it needs: text is kept, anything
/// nested is skipped without being stored, and the rest is known by its kind only, so a
/// message can say what the field is without repeating it.
enum Loose {
    Null,
    Bool(bool),
    Whole(u64),
    /// Negative or with a fraction.
    OtherNumber,
    Text(String),
    List,
    Object,
}

impl Loose {
    fn kind(&self) -> &'static str {
        match self {
            Loose::Null => "null",
            Loose::Bool(_) => "a boolean",
            Loose::Whole(_) | Loose::OtherNumber => "a number",
            Loose::Text(_) => "text",
            Loose::List => "a list",
            Loose::Object => "an object",
        }
    }
}

/// A visitor that takes any JSON value into `T` through `scalar`, `list` and `object`.
/// serde's own messages for a value of the wrong type would quote it, so no visit falls
/// back to them.
macro_rules! loose_visits {
    () => {
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::Null))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::Null))
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::Bool(v)))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::Whole(v)))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(self.scalar(match u64::try_from(v) {
                Ok(v) => Loose::Whole(v),
                Err(_) => Loose::OtherNumber,
            }))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::OtherNumber))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::Text(v.to_string())))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(self.scalar(Loose::Text(v)))
        }
    };
}

/// Skips the rest of a list without storing it.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Skips the rest of an object without storing it.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl Visitor {
            fn scalar(self, v: Loose) -> Loose {
                v
            }
        }
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            loose_visits!();
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose, A::Error> {
                skip_seq(seq).map(|()| Loose::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose, A::Error> {
                skip_map(map).map(|()| Loose::Object)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A list of `T` (each read leniently), or the kind of what stood there instead.
enum ListOr<T> {
    List(Vec<T>),
    Wrong(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T> Visitor<T> {
            fn scalar(self, v: Loose) -> ListOr<T> {
                match v {
                    Loose::Null => ListOr::List(Vec::new()),
                    other => ListOr::Wrong(other.kind()),
                }
            }
        }
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = ListOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list")
            }
            loose_visits!();
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The hint is the answer's to give: it only sizes what one page holds.
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ListOr::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| ListOr::Wrong(Loose::Object.kind()))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// An object read leniently: its permitted fields, the first thing wrong with them,
/// or the kind of what stood there instead of an object.
enum ObjectOr<T> {
    Object(T),
    Wrong(&'static str),
}

/// The fields of one kind of object, read one key at a time.
trait Fields: Default {
    /// Reads the value of `key` (skipping it when not permitted); a value of the
    /// wrong type, or a key given twice, is noted in `self`, never an error.
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl<'de, T: Fields> Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T> Visitor<T> {
            fn scalar(self, v: Loose) -> ObjectOr<T> {
                ObjectOr::Wrong(v.kind())
            }
        }
        impl<'de, T: Fields> serde::de::Visitor<'de> for Visitor<T> {
            type Value = ObjectOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            loose_visits!();
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| ObjectOr::Wrong(Loose::List.kind()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = T::default();
                while let Some(key) = map.next_key::<Key>()? {
                    fields.field(&key.0, &mut map)?;
                }
                Ok(ObjectOr::Object(fields))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// An object's key; borrowed from the answer where JSON allows.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Reads a permitted field's value into `slot`; a second one notes `twice`.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    twice: &mut Option<&'static str>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        map.next_value::<IgnoredAny>()?;
        twice.get_or_insert(name);
    } else {
        *slot = Some(map.next_value()?);
    }
    Ok(())
}

/// A customer's permitted fields as they stood in the answer.
#[derive(Default)]
struct WireCustomer {
    customer_code: Option<Loose>,
    customer_number: Option<Loose>,
    name: Option<Loose>,
    is_active: Option<Loose>,
    updated: Option<Loose>,
    references: Option<ListOr<ObjectOr<WireReference>>>,
    /// The first permitted field given twice.
    twice: Option<&'static str>,
}

impl Fields for WireCustomer {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let t = &mut self.twice;
        match key {
            "customerCode" => once(&mut self.customer_code, t, "customerCode", map),
            "customerNumber" => once(&mut self.customer_number, t, "customerNumber", map),
            "name" => once(&mut self.name, t, "name", map),
            "isActive" => once(&mut self.is_active, t, "isActive", map),
            "updated" => once(&mut self.updated, t, "updated", map),
            "references" => once(&mut self.references, t, "references", map),
            _ => map.next_value::<IgnoredAny>().map(drop),
        }
    }
}

#[derive(Default)]
struct WireReference {
    name: Option<Loose>,
    email: Option<Loose>,
    is_default: Option<Loose>,
    twice: Option<&'static str>,
}

impl Fields for WireReference {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let t = &mut self.twice;
        match key {
            "name" => once(&mut self.name, t, "name", map),
            "email" => once(&mut self.email, t, "email", map),
            "isDefault" => once(&mut self.is_default, t, "isDefault", map),
            _ => map.next_value::<IgnoredAny>().map(drop),
        }
    }
}

/// A page's fields: `totalCount` and `items`; every other field is skipped.
#[derive(Default)]
struct WirePage {
    total_count: Option<Loose>,
    items: Option<ListOr<ObjectOr<WireCustomer>>>,
    twice: Option<&'static str>,
}

impl Fields for WirePage {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let t = &mut self.twice;
        match key {
            "totalCount" => once(&mut self.total_count, t, "totalCount", map),
            "items" => once(&mut self.items, t, "items", map),
            _ => map.next_value::<IgnoredAny>().map(drop),
        }
    }
}

/// Why a field cannot be read: it names the field and what it holds, never the value.
fn wrong(field: &str, is: &str, expected: &str) -> String {
    format!("`{field}` is {is}, expected {expected}")
}

/// Text, or `None` for null or absent.
fn text(value: Option<Loose>, field: &str, lossy: bool) -> Result<Option<String>, String> {
    match value {
        None | Some(Loose::Null) => Ok(None),
        // Bytes that were not UTF-8 became U+FFFD when the answer was read.
        Some(Loose::Text(s)) if lossy && s.contains(char::REPLACEMENT_CHARACTER) => {
            Err(format!("`{field}` is not valid UTF-8 text"))
        }
        Some(Loose::Text(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(field, other.kind(), "text")),
    }
}

fn flag(value: Option<Loose>, field: &str, default: bool) -> Result<bool, String> {
    match value {
        None | Some(Loose::Null) => Ok(default),
        Some(Loose::Bool(b)) => Ok(b),
        Some(other) => Err(wrong(field, other.kind(), "a boolean")),
    }
}

/// Opter may send the sales ledger number as digits in a string or as a number.
fn ledger_number(value: Option<Loose>, lossy: bool) -> Result<Option<String>, String> {
    const EXPECTED: &str = "a customer number as text or as a whole number";
    match value {
        Some(Loose::Whole(n)) => Ok(Some(n.to_string())),
        Some(Loose::OtherNumber) => Err(format!(
            "`customerNumber` is a negative or fractional number, expected {EXPECTED}"
        )),
        Some(Loose::Bool(_)) => Err(wrong("customerNumber", "a boolean", EXPECTED)),
        other => text(other, "customerNumber", lossy),
    }
}

/// Opter's `updated`, trying the strict RFC 3339 parser first: it is several times
/// faster than the relaxed one `FromStr` uses, and every customer read has a time.
fn opter_time(value: Option<Loose>, lossy: bool) -> Result<Option<DateTime<Utc>>, String> {
    const EXPECTED: &str = "an RFC 3339 time or null";
    match text(value, "updated", lossy) {
        Ok(Some(v)) => match DateTime::parse_from_rfc3339(&v) {
            Ok(t) => Ok(Some(t.with_timezone(&Utc))),
            Err(_) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("`updated` is text that is not a time, expected {EXPECTED}")),
        },
        Ok(None) => Ok(None),
        Err(e) if e.contains("UTF-8") => Err(e),
        Err(_) => Err(format!("`updated` is not text, expected {EXPECTED}")),
    }
}

impl WireCustomer {
    /// The customer, or why it cannot be read; `at` says where it stood ("page 3, item 7").
    fn read(mut self, at: &str, lossy: bool) -> Result<SourceCustomer, Unreadable> {
        let code = match text(self.customer_code.take(), "customerCode", lossy) {
            Ok(Some(code)) if !code.trim().is_empty() => code,
            Ok(_) => {
                return Err(Unreadable {
                    code: None,
                    reason: format!("{at}: the customer has no `customerCode`"),
                })
            }
            Err(why) => {
                return Err(Unreadable {
                    code: None,
                    reason: format!("{at}: {why}"),
                })
            }
        };
        match self.fields(lossy) {
            Ok((number, name, is_active, updated, references)) => Ok(SourceCustomer {
                code,
                number,
                name,
                is_active,
                updated,
                references,
            }),
            Err(why) => Err(Unreadable {
                code: Some(code),
                reason: format!("{at}: {why}"),
            }),
        }
    }

    #[allow(clippy::type_complexity)]
    fn fields(
        self,
        lossy: bool,
    ) -> Result<
        (
            Option<String>,
            String,
            bool,
            Option<DateTime<Utc>>,
            Vec<SourceReference>,
        ),
        String,
    > {
        if let Some(field) = self.twice {
            return Err(format!("`{field}` is given twice"));
        }
        let number = ledger_number(self.customer_number, lossy)?;
        let name = text(self.name, "name", lossy)?.unwrap_or_default();
        let is_active = flag(self.is_active, "isActive", true)?;
        let updated = opter_time(self.updated, lossy)?;
        let references = match self.references {
            None => Vec::new(),
            Some(ListOr::Wrong(is)) => return Err(wrong("references", is, "a list")),
            Some(ListOr::List(items)) => {
                let mut references = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let at = |why: String| format!("references[{i}]: {why}");
                    let r = match item {
                        ObjectOr::Object(r) => r,
                        ObjectOr::Wrong(is) => {
                            return Err(at(format!("is {is}, expected an object")))
                        }
                    };
                    if let Some(field) = r.twice {
                        return Err(at(format!("`{field}` is given twice")));
                    }
                    references.push(SourceReference {
                        name: text(r.name, "name", lossy).map_err(at)?,
                        email: text(r.email, "email", lossy).map_err(at)?,
                        is_default: flag(r.is_default, "isDefault", false).map_err(at)?,
                    });
                }
                references
            }
        };
        Ok((number, name, is_active, updated, references))
    }
}

/// Largest page the Opter adapter asks for; larger pages only cost memory.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// `[source] max_customers` by default, and the most it may be set to.
pub const DEFAULT_MAX_CUSTOMERS: u64 = 1_000_000;
pub const MOST_MAX_CUSTOMERS: u64 = 50_000_000;

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
    /// A read that brings more customers than this stops, and nothing is written.
    #[serde(default = "default_max_customers")]
    pub max_customers: u64,
}

fn default_customers_path() -> String {
    "/Customers".into()
}

fn default_page_size() -> u32 {
    500
}

fn default_max_customers() -> u64 {
    DEFAULT_MAX_CUSTOMERS
}

impl OpterApiConfig {
    /// Checks the bounds; answers the key and why.
    pub fn check_bounds(&self) -> std::result::Result<(), (&'static str, String)> {
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err((
                "[source] page_size",
                format!("is {}; use 1 to {MAX_PAGE_SIZE}", self.page_size),
            ));
        }
        if !(1..=MOST_MAX_CUSTOMERS).contains(&self.max_customers) {
            return Err((
                "[source] max_customers",
                format!("is {}; use 1 to {MOST_MAX_CUSTOMERS}", self.max_customers),
            ));
        }
        Ok(())
    }
}

pub struct OpterApiSource {
    client: reqwest::Client,
    url: url::Url,
    base_url: String,
    api_key: SecretString,
    api_key_env: String,
    page_size: u32,
    max_customers: u64,
    retry: RetryPolicy,
}

/// Parses one page of Opter's answer, reading only the permitted fields, as page 1.
pub fn parse_page(bytes: &[u8]) -> Result<Page, String> {
    parse_page_at(bytes, 1)
}

/// Parses page `number` of Opter's answer, reading only the permitted fields. A customer
/// that cannot be read is `Unreadable`, by its position on the page; an answer that is
/// not a page of customers is an error. Neither message holds a value from the answer.
pub fn parse_page_at(bytes: &[u8], number: u32) -> Result<Page, String> {
    // Bytes that are not UTF-8 become U+FFFD: in a field never read they do no harm,
    // and a customer whose permitted text holds one is unreadable.
    let text = String::from_utf8_lossy(bytes);
    let lossy = matches!(text, Cow::Owned(_));
    let page = match serde_json::from_str::<ObjectOr<WirePage>>(&text) {
        Ok(ObjectOr::Object(page)) => page,
        Ok(ObjectOr::Wrong(is)) => return Err(format!("the answer is {is}, not a page object")),
        Err(e) => return Err(json_error(&e)),
    };
    drop(text);
    if let Some(field) = page.twice {
        return Err(format!("`{field}` is given twice"));
    }
    let total = match page.total_count {
        None | Some(Loose::Null) => None,
        Some(Loose::Whole(n)) => Some(n),
        Some(other) => return Err(wrong("totalCount", other.kind(), "a whole number")),
    };
    let items = match page.items {
        Some(ListOr::List(items)) => items,
        Some(ListOr::Wrong(is)) => return Err(wrong("items", is, "a list of customers")),
        None => return Err("the answer has no `items`".into()),
    };
    let mut out = Page {
        customers: Vec::with_capacity(items.len()),
        unreadable: Vec::new(),
        total,
    };
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("Opter's page {number}, item {}", i + 1);
        let read = match item {
            ObjectOr::Object(c) => c.read(&at, lossy),
            ObjectOr::Wrong(is) => Err(Unreadable {
                code: None,
                reason: format!("{at}: is {is}, not a customer object"),
            }),
        };
        match read {
            Ok(c) => out.customers.push(c),
            Err(u) => out.unreadable.push(u),
        }
    }
    Ok(out)
}

/// What serde_json says is wrong with the answer's structure, and where. Every value the
/// parser meets goes through `Loose`, so these messages are serde_json's syntax errors
/// (which name no value) and this module's own.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Data => {
            format!("not a JSON page of customers ({e})")
        }
        Category::Io => format!("cannot be read ({e})"),
    }
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
            base_url: config.base_url.clone(),
            api_key,
            api_key_env: config.api_key_env.clone(),
            page_size: config.page_size,
            max_customers: config.max_customers,
            retry,
        })
    }

    /// The largest answer read for one page.
    fn most_page_bytes(&self) -> usize {
        (self.page_size as usize)
            .saturating_mul(PAGE_BYTES_PER_CUSTOMER)
            .max(MIN_PAGE_BYTES)
    }

    /// An error about page `page` that stops the read.
    fn stop(&self, page: u32, why: impl std::fmt::Display) -> Error {
        Error::Other(anyhow::anyhow!(self.stop_message(page, why)))
    }

    fn stop_message(&self, page: u32, why: impl std::fmt::Display) -> String {
        format!(
            "Opter's page {page} from [source] base_url {}: {why}. The read stopped before \
             anything read was written, and the source cursor did not move",
            self.base_url
        )
    }

    /// Why paging stopped at page `page`, as the error it is: past `max_customers` is
    /// the setting's to change (exit 2), anything else is Opter's answer.
    fn stopped(&self, page: u32, stop: Stop) -> Error {
        match stop {
            Stop::Setting(why) => Error::config(self.stop_message(page, why)),
            Stop::Answer(why) => self.stop(page, why),
        }
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
            || self.attempt(url.clone(), page),
            |e, wait| tracing::warn!(page, "Opter read failed ({e}); retrying in {wait:?}"),
        )
        .await
    }

    async fn attempt(&self, url: url::Url, page: u32) -> Attempt<Page, Error> {
        let sent = self
            .client
            .get(url)
            .header("x-api-key", self.api_key.expose_secret())
            .header("accept", "application/json")
            .send()
            .await;
        let mut response = match sent {
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
        let most = self.most_page_bytes();
        let too_large = || {
            Attempt::Final(self.stop(
                page,
                format!(
                    "the answer is larger than {} KiB, the most read for a page of {} \
                     customers ([source] page_size)",
                    most / 1024,
                    self.page_size
                ),
            ))
        };
        if response.content_length().is_some_and(|n| n > most as u64) {
            return too_large();
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > most {
                        return too_large();
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Attempt::Retryable {
                        error: Error::Other(anyhow::anyhow!("reading Opter's answer failed: {e}")),
                        after: None,
                    }
                }
            }
        }
        match parse_page_at(&bytes, page) {
            Ok(page) => Attempt::Done(page),
            Err(why) => Attempt::Final(self.stop(page, why)),
        }
    }

    /// Reads every page (with `changed_since`, only customers changed after it) and
    /// hands each to `pages` with the total, if known, as soon as it arrives; the channel's
    /// room decides how far reading runs ahead of whoever plans the pages. Stops with an
    /// error on a page that repeats the one before it, on pages past what `totalCount`
    /// leaves room for, and past `max_customers`.
    pub async fn read_pages(
        &self,
        changed_since: Option<DateTime<Utc>>,
        pages: &tokio::sync::mpsc::Sender<Page>,
    ) -> Result<()> {
        let mut paging = Paging {
            page_size: u64::from(self.page_size.max(1)),
            max_customers: self.max_customers,
            next: 1,
            read: 0,
            total: None,
            more: true,
            last_codes: None,
        };
        let first = self.page(1, changed_since).await?;
        let first = paging.took(first).map_err(|stop| self.stopped(1, stop))?;
        if pages.send(first).await.is_err() {
            return Ok(()); // the planner stopped
        }
        // The page count is known: keep the next pages in flight while this one is parsed
        // and planned, in order.
        if let Some(last) = paging.last_expected().filter(|_| paging.more) {
            let mut ahead = futures::stream::iter(paging.next..=last)
                .map(|number| self.page(number, changed_since))
                .buffered(PAGES_IN_FLIGHT);
            while let Some(page) = ahead.next().await {
                let number = paging.next;
                let page = paging
                    .took(page?)
                    .map_err(|stop| self.stopped(number, stop))?;
                if pages.send(page).await.is_err() || !paging.more {
                    return Ok(());
                }
            }
        }
        // Then one page at a time, for as long as there may be more: Opter sent no total,
        // or customers were added while paging.
        while !paging.finished() {
            let number = paging.next;
            paging.may_read().map_err(|why| self.stop(number, why))?;
            let page = self.page(number, changed_since).await?;
            let page = paging
                .took(page)
                .map_err(|stop| self.stopped(number, stop))?;
            if pages.send(page).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Why paging stops.
enum Stop {
    /// A bound the config sets.
    Setting(String),
    /// Opter's answers do not add up.
    Answer(String),
}

/// Where reading the pages stands.
struct Paging {
    page_size: u64,
    max_customers: u64,
    /// The next page to ask for.
    next: u32,
    /// Customers read so far, readable or not.
    read: u64,
    /// Opter's latest `totalCount`.
    total: Option<u64>,
    /// Whether the last page had customers.
    more: bool,
    /// A digest of the last page's codes in order, to tell a page served again.
    last_codes: Option<[u8; 32]>,
}

impl Paging {
    /// Counts a page in, or says why the read must stop; returns what to hand on.
    fn took(&mut self, mut page: Page) -> std::result::Result<Page, Stop> {
        self.read += page.len() as u64;
        self.total = page.total.or(self.total);
        self.more = !page.is_empty();
        if let Some(total) = self.total.filter(|&t| t > self.max_customers) {
            return Err(Stop::Setting(format!(
                "Opter says it has {total} customers, more than [source] max_customers ({}); \
                 raise it if Opter really has that many",
                self.max_customers
            )));
        }
        if self.read > self.max_customers {
            return Err(Stop::Setting(format!(
                "more than [source] max_customers ({}) customers read; raise it if Opter \
                 really has that many",
                self.max_customers
            )));
        }
        if self.more {
            let codes = codes_digest(&page);
            if self.last_codes == Some(codes) {
                return Err(Stop::Answer(format!(
                    "it holds the same customers in the same order as page {} (does Opter \
                     ignore `page`?)",
                    self.next - 1
                )));
            }
            self.last_codes = Some(codes);
        }
        self.next += 1;
        page.total = self.total;
        Ok(page)
    }

    /// The last page Opter's total leaves room for, if it gave one, and never more than
    /// `max_customers` can fill.
    fn last_expected(&self) -> Option<u32> {
        let pages = |n: u64| u32::try_from(n.div_ceil(self.page_size)).unwrap_or(u32::MAX);
        self.total
            .map(|t| pages(t).min(pages(self.max_customers).saturating_add(PAGES_PAST_TOTAL)))
    }

    /// Whether page `next` may be asked for: not past the slack after Opter's total.
    fn may_read(&self) -> std::result::Result<(), String> {
        match (self.total, self.last_expected()) {
            (Some(total), Some(last)) if self.next > last.saturating_add(PAGES_PAST_TOTAL) => {
                Err(format!(
                    "Opter's totalCount ({total}) leaves room for {last} pages of {}, and {} \
                     pages were read without reaching it",
                    self.page_size,
                    self.next - 1
                ))
            }
            _ => Ok(()),
        }
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

/// A digest of a page's customer codes in order (unreadable ones by their place).
fn codes_digest(page: &Page) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for c in &page.customers {
        hasher.update(c.code.as_bytes());
        hasher.update([0]);
    }
    for u in &page.unreadable {
        hasher.update(u.code.as_deref().unwrap_or("\u{1}").as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
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
            max_customers: DEFAULT_MAX_CUSTOMERS,
        };
        let source =
            OpterApiSource::new(&config, SecretString::from("k"), RetryPolicy::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        source.read_pages(None, &tx).await.unwrap();
        drop(tx);
        let mut codes = Vec::new();
        while let Some(page) = rx.recv().await {
            codes.extend(page.customers.into_iter().map(|c| c.code));
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
            let mut p = parse_page(json.as_bytes()).unwrap();
            match p.unreadable.pop() {
                Some(u) => Err(u.reason),
                None => Ok(p.customers.remove(0)),
            }
        };
        for (number, read) in [
            (r#""0042""#, Some("0042")),
            ("42", Some("42")),
            ("null", None),
        ] {
            assert_eq!(page(number, "null").unwrap().number.as_deref(), read);
        }
        for (bad, value) in [("-17", "17"), ("4.25", "4.25"), ("true", "true")] {
            let e = page(bad, "null").unwrap_err();
            assert!(e.contains("customerNumber") && !e.contains(value), "{e}");
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
