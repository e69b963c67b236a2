//! Visma e-conomic, REST API (`https://restapi.e-conomic.com`).
//!
//! Credentials are two fixed headers (`X-AppSecretToken`, `X-AgreementGrantToken`): no
//! refresh, so a 401 stops the run until a person issues a new grant.
//!
//! The mapping is flat with dotted names for nested properties
//! (`customerGroup.customerGroupNumber`). The `contact.*` fields are not customer
//! properties: the contact person is a customer contact
//! (`/customers/{n}/contacts/{c}`) linked as the customer's `attention`.
//!
//! Create: `POST /customers` with `customerNumber` from Opter's sales ledger number,
//! then, with a contact person, `POST .../contacts` and a PUT linking it as attention.
//! Update: PUT is a full replace, so the customer (and its attention contact) is read
//! and only our fields are overlaid before it goes back. Find again:
//! `filter=customerNumber$eq:N`.
//!
//! Every non-GET request carries an `Idempotency-Key` made of the write's key and the
//! request's purpose: a retried request is answered from e-conomic's cache (an hour)
//! instead of being executed again, and two requests of one write never share a key.
//!
//! Every request counts against the agreement's daily call budget (`sink::budget`,
//! `[sink] daily_call_budget`), and a write starts only when the calls it usually
//! makes fit (`admit`).

use reqwest::header::HeaderMap;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::budget::CallBudget;
use super::http::{nothing_special, safe_message, Credentials, Dialect, Http, Reply};
use super::{Admission, CustomerPage, Erased, Remote, SinkError, WriteKind, Written, ERASED_NAME};
use crate::mapping::{rule, text, FieldKind, MappedRecord, RegisterRules};
use crate::retry::RetryPolicy;

mod body;
pub mod probe;
mod settings;
use body::*;
pub use settings::{
    EconomicConfig, CALL_COUNT_FILE, DEFAULT_DAILY_CALL_BUDGET, FAIR_USE_CALLS_PER_DAY,
};

/// This register's descriptor: see `sink::Register`.
pub static REGISTER: super::Register = super::Register {
    name: "economic",
    rules: RULES,
    mapping: include_str!("../../../mappings/economic.toml"),
    journal_fields: &[
        "customerNumber",
        "contact.name",
        "contact.email",
        "currency",
        "customerGroup.customerGroupNumber",
        "paymentTerms.paymentTermsNumber",
        "vatZone.vatZoneNumber",
        "barred",
    ],
    settings: super::register::settings_of::<EconomicConfig>,
    processing: super::register::Processing {
        statement: None,
        source: None,
    },
};

super::sink_by_inherent_methods!(EconomicSink, REGISTER, admit);

pub const PRODUCT: &str = "Visma e-conomic";

/// The REST API's error code for a customer number in use: `POST /customers` answers
/// 400 with a validation body whose `errors.customerNumber.errors[]` entry carries
/// `"errorCode": "E06010"` (published client Opus-EDB/e-conomic, `customer.go`,
/// `entityAlreadyInEconomic`, which creates customers on restapi.e-conomic.com and
/// retries with another number on exactly this code; e-conomic's annotated errors
/// are described at https://restdocs.e-conomic.com/#annotated-errors). The code means
/// "already exists" for any property, so it counts only on `customerNumber`.
pub const NUMBER_TAKEN_CODE: &str = "E06010";
/// The newer Customers API's code for the same (`apis.e-conomic.com`, the OpenAPI in
/// `specs/economic/openapi-Customers.json`). Accepted too, in case the REST API
/// answers with it: either way the customer is looked up and adopted, never duplicated.
pub const NUMBER_TAKEN_CODE_CUSTOMERS_API: &str = "CustomerAlreadyExists";
/// A contact of that name already exists on the customer.
const CONTACT_NAME_TAKEN_CODE: &str = "CustomerContactNameAlreadyExists";

/// Numbers of customer groups, payment terms and VAT zones: positive 32-bit integers
/// (the schemas give no range).
const REFERENCE_NUMBER: FieldKind = FieldKind::Integer {
    min: 1,
    max: i32::MAX as i64,
};

/// The fields this connector fills, with the limits of e-conomic's customer POST/PUT
/// and contact POST schemas (JSON Schema draft-03); a test compares them with the
/// schemas when they are at hand.
pub const RULES: RegisterRules = RegisterRules {
    product: PRODUCT,
    number_field: "customerNumber",
    fields: &[
        rule(
            "customerNumber",
            FieldKind::Integer {
                min: 1,
                max: 999_999_999,
            },
            false,
            false,
        ),
        rule("name", text(255), true, true),
        rule("contact.name", text(255), false, true),
        rule(
            "contact.email",
            FieldKind::Email { max_chars: 255 },
            false,
            true,
        ),
        rule("currency", text(3), true, false),
        rule(
            "customerGroup.customerGroupNumber",
            REFERENCE_NUMBER,
            true,
            false,
        ),
        rule(
            "paymentTerms.paymentTermsNumber",
            REFERENCE_NUMBER,
            true,
            false,
        ),
        rule("vatZone.vatZoneNumber", REFERENCE_NUMBER, true, false),
        rule("barred", FieldKind::Bool, false, false),
    ],
};

/// Mapping fields with this prefix belong to the attention contact, not the customer.
const CONTACT_PREFIX: &str = "contact.";

/// What e-conomic serves but does not take back: left out of PUT bodies.
/// A read before an update that is not a customer: an update built from it would
/// replace the accountant's fields with nothing.
fn unreadable_customer() -> SinkError {
    SinkError::Failed {
        status: None,
        message: format!(
            "{PRODUCT} answered the read before an update with something that is not a \
             customer; nothing is written from it"
        ),
    }
}

const CUSTOMER_READ_ONLY: &[&str] = &[
    "balance",
    "dueAmount",
    "lastUpdated",
    "self",
    "contacts",
    "deliveryLocations",
    "invoices",
    "templates",
    "totals",
    "metaData",
];
const CONTACT_READ_ONLY: &[&str] = &["deleted", "sortKey"];

/// Contacts read per page (e-conomic's maximum page size).
const PAGE_SIZE: usize = 1000;

const REFUSED_HINT: &str = "Check the values of the environment variables named by [sink] \
    app_secret_token_env and agreement_grant_token_env. A revoked agreement grant needs a \
    new X-AgreementGrantToken: an administrator of the e-conomic agreement grants the app \
    access again at https://secure.e-conomic.com/secure/api1/requestaccess.aspx?appPublicToken=\
    <the app's public token>, and the new token goes into the environment variable.";

pub struct EconomicSink {
    http: Http,
    base: String,
    /// The agreement's daily calls (every request counts; see `sink::budget`).
    budget: Option<std::sync::Arc<CallBudget>>,
}

/// Calls a create usually makes: the customer, its contact, the attention link.
const CREATE_CALLS: u32 = 3;
/// Calls an update usually makes: read the customer and its attention contact, write
/// the contact (or create one), write the customer, delete a contact Opter dropped.
const UPDATE_CALLS: u32 = 5;

/// What the record says about the contact person.
enum ContactWish {
    /// The mapping maps no `contact.*` field: contacts are left alone.
    Unmapped,
    /// Opter has no contact person (any more).
    Gone,
    Person {
        name: String,
        email: Option<String>,
    },
}

impl EconomicSink {
    pub fn new(
        api_base: &str,
        app_secret_token: SecretString,
        agreement_grant_token: SecretString,
        requests_per_minute: u32,
        retry: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let dialect = Dialect {
            product: PRODUCT,
            error_of,
            special: nothing_special,
            refused_hint: REFUSED_HINT,
            refused_on_first_use: None,
        };
        let credentials = Credentials::Headers(vec![
            ("X-AppSecretToken", app_secret_token),
            ("X-AgreementGrantToken", agreement_grant_token),
        ]);
        Ok(EconomicSink {
            http: Http::new(dialect, credentials, requests_per_minute, retry)?,
            base: api_base.trim_end_matches('/').to_string(),
            budget: None,
        })
    }

    /// Counts every request against the agreement's daily call budget, and admits a
    /// write only when the calls it usually makes still fit.
    pub fn with_budget(mut self, budget: std::sync::Arc<CallBudget>) -> Self {
        self.http = self.http.with_budget(budget.clone());
        self.budget = Some(budget);
        self
    }

    /// Reserves the calls a write of this kind usually makes, so that the budget does
    /// not stop it half-way; `SinkError::Budget` when they do not fit.
    pub fn admit(&self, kind: WriteKind) -> Result<Admission, SinkError> {
        let Some(budget) = &self.budget else {
            return Ok(Admission::default());
        };
        let calls = match kind {
            WriteKind::Create => CREATE_CALLS,
            WriteKind::Update => UPDATE_CALLS,
        };
        budget
            .reserve(calls)
            .map(Admission::holding)
            .map_err(SinkError::Budget)
    }

    fn customer_url(&self, n: i64) -> String {
        format!("{}/customers/{n}", self.base)
    }

    fn contacts_url(&self, n: i64) -> String {
        format!("{}/customers/{n}/contacts", self.base)
    }

    fn contact_url(&self, n: i64, c: i64) -> String {
        format!("{}/customers/{n}/contacts/{c}", self.base)
    }

    /// A write with its `Idempotency-Key`.
    async fn write(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        key: &str,
    ) -> Result<Reply, SinkError> {
        self.http
            .send_with(method, url, body, &[("Idempotency-Key", key)])
            .await
    }

    /// GET that answers `None` on 404.
    async fn fetch(&self, url: &str) -> Result<Option<Value>, SinkError> {
        match self.http.send(Method::GET, url, None).await {
            Ok(reply) => Ok(Some(reply.json(PRODUCT, "a read")?)),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn find_by_number(&self, number: &str) -> Result<Option<Remote>, SinkError> {
        // A number e-conomic cannot hold (a customer code, say) is not there.
        let Some(n) = customer_number(number) else {
            return Ok(None);
        };
        let mut url = url::Url::parse(&format!("{}/customers", self.base))
            .map_err(|e| SinkError::Config(format!("{PRODUCT}: api_base is not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("filter", &format!("customerNumber$eq:{n}"));
        let reply = self.http.send(Method::GET, url.as_str(), None).await?;
        let body = reply.json(PRODUCT, "a customer search")?;
        let Some(rows) = body["collection"].as_array() else {
            return Err(SinkError::Failed {
                status: Some(reply.status),
                message: format!(
                    "{PRODUCT} answered a customer search without a collection, so whether \
                     the customer exists cannot be told"
                ),
            });
        };
        if let Some(found) = rows
            .iter()
            .find(|c| c["customerNumber"].as_i64() == Some(n))
        {
            return self.remote(found.clone()).await.map(Some);
        }
        // "Not found" must be sure: a register that ignored the filter answers with
        // other customers, or counts results on other pages.
        let total = body["pagination"]["results"].as_u64();
        if !rows.is_empty() || total.is_some_and(|t| t > 0) {
            return Err(SinkError::Failed {
                status: Some(reply.status),
                message: format!(
                    "{PRODUCT} did not filter by customerNumber, so whether the customer \
                     exists cannot be told"
                ),
            });
        }
        Ok(None)
    }

    /// `GET /customers?skippages=N&pagesize=1000`: `{collection, pagination}`, where
    /// `pagination.nextPage` is there while more pages follow. A list entry names its
    /// attention contact without its name and email: `complete` reads them.
    pub async fn customers_page(&self, page: u32) -> Result<CustomerPage, SinkError> {
        let url = format!(
            "{}/customers?skippages={page}&pagesize={PAGE_SIZE}",
            self.base
        );
        let reply = self.http.send(Method::GET, &url, None).await?;
        let body = reply.json(PRODUCT, "the customer list")?;
        let unreadable = || SinkError::Failed {
            status: Some(reply.status),
            message: format!("{PRODUCT} answered the customer list without its collection"),
        };
        let rows = body["collection"].as_array().ok_or_else(unreadable)?;
        let mut customers = Vec::with_capacity(rows.len());
        for row in rows {
            let n = row["customerNumber"].as_i64().ok_or_else(unreadable)?;
            let remote = Remote {
                id: n.to_string(),
                fields: flat_fields(row, None),
                // Kept for `complete`: the attention contact's number.
                record: json!({ "attention": row["attention"].clone() }),
            };
            customers.push((n.to_string(), remote));
        }
        let more = body["pagination"]["nextPage"].is_string() && !rows.is_empty();
        Ok(CustomerPage { customers, more })
    }

    /// Adds the attention contact's fields to a listed customer.
    pub async fn complete(&self, listed: Remote) -> Result<Remote, SinkError> {
        let Some(c) = attention_of(&listed.record) else {
            return Ok(Remote {
                record: Value::Null,
                ..listed
            });
        };
        let Some(n) = customer_number(&listed.id) else {
            return Ok(listed);
        };
        let contact = self.fetch(&self.contact_url(n, c)).await?;
        let mut fields = listed.fields;
        if let (Some(contact), Value::Object(out)) = (&contact, &mut fields) {
            for rule in RULES.fields {
                if let Some(field) = rule.name.strip_prefix(CONTACT_PREFIX) {
                    if let Some(v) = contact.get(field).filter(|v| !v.is_null()) {
                        out.insert(rule.name.to_string(), v.clone());
                    }
                }
            }
        }
        Ok(Remote {
            id: listed.id,
            fields,
            record: Value::Null,
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Remote>, SinkError> {
        let Some(n) = customer_number(id) else {
            return Ok(None);
        };
        match self.fetch(&self.customer_url(n)).await? {
            Some(customer) => self.remote(customer).await.map(Some),
            None => Ok(None),
        }
    }

    /// The customer with its contacts; `fields` flat, in the mapping's names.
    async fn remote(&self, customer: Value) -> Result<Remote, SinkError> {
        let n = customer["customerNumber"]
            .as_i64()
            .ok_or_else(|| SinkError::Failed {
                status: None,
                message: format!("{PRODUCT} answered without the customer's customerNumber"),
            })?;
        let contacts = self.contacts(n).await?;
        let attention = match attention_of(&customer) {
            None => None,
            Some(c) => match contacts
                .iter()
                .find(|k| k["customerContactNumber"].as_i64() == Some(c))
            {
                Some(k) => Some(k.clone()),
                None => self.fetch(&self.contact_url(n, c)).await?,
            },
        };
        Ok(Remote {
            id: n.to_string(),
            fields: flat_fields(&customer, attention.as_ref()),
            record: json!({ "customer": customer, "contacts": contacts }),
        })
    }

    /// Every contact of customer `n` (all pages).
    async fn contacts(&self, n: i64) -> Result<Vec<Value>, SinkError> {
        let mut all = Vec::new();
        for skip in 0.. {
            let url = format!(
                "{}?skippages={skip}&pagesize={PAGE_SIZE}",
                self.contacts_url(n)
            );
            let reply = self.http.send(Method::GET, &url, None).await?;
            let body = reply.json(PRODUCT, "a contact list")?;
            let Some(rows) = body["collection"].as_array() else {
                return Err(SinkError::Failed {
                    status: Some(reply.status),
                    message: format!("{PRODUCT} answered a contact list without a collection"),
                });
            };
            let full = rows.len() >= PAGE_SIZE;
            all.extend(rows.iter().cloned());
            // A server that ignores paging would repeat one page forever: stop there.
            if !full || !body["pagination"]["nextPage"].is_string() || skip >= 100 {
                break;
            }
        }
        Ok(all)
    }

    /// Creates the customer; with a contact person, creates the contact and links it
    /// as the customer's attention.
    pub async fn create(&self, record: &MappedRecord, key: &str) -> Result<Written, SinkError> {
        let wish = contact_wish(record)?;
        let body = customer_body(record);
        let url = format!("{}/customers", self.base);
        let reply = match self
            .write(Method::POST, &url, Some(&body), &format!("{key}-create"))
            .await
        {
            Ok(reply) => reply,
            Err(SinkError::Rejected {
                status,
                code: Some(code),
                message,
            }) if number_taken(&code, &message) => {
                return Err(SinkError::NumberTaken { status, message })
            }
            Err(e) => return Err(e),
        };
        let customer = reply.json(PRODUCT, "the create")?;
        let n = customer["customerNumber"]
            .as_i64()
            .ok_or_else(|| SinkError::Failed {
                status: Some(reply.status),
                message: format!("{PRODUCT} answered the create without a customerNumber"),
            })?;
        if let ContactWish::Person { name, email } = wish {
            let c = self
                .add_contact(n, &name, email.as_deref(), &format!("{key}-create-contact"))
                .await?;
            let mut linked = writable(&customer, CUSTOMER_READ_ONLY);
            linked.insert("attention".into(), json!({ "customerContactNumber": c }));
            self.write(
                Method::PUT,
                &self.customer_url(n),
                Some(&Value::Object(linked)),
                &format!("{key}-create-attention"),
            )
            .await?;
        }
        Ok(Written {
            remote_id: n.to_string(),
            status: reply.status,
        })
    }

    /// Overlays our fields on the register's customer and PUTs it back; the attention
    /// contact likewise (created and linked if there is none, unlinked and deleted when
    /// Opter's contact person is gone). A customer gone is `Rejected { status: 404 }`;
    /// one deleted between the read and the PUT is created by the PUT (201), which the
    /// run records as a create.
    pub async fn update(
        &self,
        id: &str,
        record: &MappedRecord,
        key: &str,
    ) -> Result<Written, SinkError> {
        let wish = contact_wish(record)?;
        let Some(n) = customer_number(id) else {
            return Err(SinkError::Rejected {
                status: 404,
                code: None,
                message: format!("{PRODUCT} has no customer with this id (not a customer number)"),
            });
        };
        let url = self.customer_url(n);
        // Read first, and a 404 here is the answer: e-conomic's PUT to a number no
        // customer has creates one (an upsert, answered 201:
        // https://restdocs.e-conomic.com/#http-verbs), so a blind PUT would recreate a
        // customer an accountant deleted, without its contact, and report an update.
        // Gone, the run finds it by number or creates it anew, and journals a create.
        let current = self
            .http
            .send(Method::GET, &url, None)
            .await?
            .json(PRODUCT, "the read before an update")?;
        if !current["customerNumber"].is_i64() {
            return Err(unreadable_customer());
        }
        let mut merged = writable(&current, CUSTOMER_READ_ONLY);
        overlay(&mut merged, record);
        let attention = attention_of(&current);
        let mut unlinked = None;
        match wish {
            ContactWish::Unmapped => {}
            ContactWish::Gone => {
                if let Some(c) = attention {
                    merged.remove("attention");
                    unlinked = Some(c);
                }
            }
            ContactWish::Person { name, email } => {
                let existing = match attention {
                    Some(c) => self.fetch(&self.contact_url(n, c)).await?,
                    None => None,
                };
                match existing {
                    Some(contact) => {
                        self.replace_contact(
                            n,
                            contact,
                            &name,
                            email.as_deref(),
                            &format!("{key}-update-contact"),
                        )
                        .await?
                    }
                    None => {
                        let c = self
                            .add_contact(
                                n,
                                &name,
                                email.as_deref(),
                                &format!("{key}-update-new-contact"),
                            )
                            .await?;
                        merged.insert("attention".into(), json!({ "customerContactNumber": c }));
                    }
                }
            }
        }
        let reply = self
            .write(
                Method::PUT,
                &url,
                Some(&Value::Object(merged)),
                &format!("{key}-update"),
            )
            .await?;
        if let Some(c) = unlinked {
            self.delete_unlinked_contact(n, c, &format!("{key}-update-delete-contact"))
                .await?;
        }
        Ok(Written {
            remote_id: n.to_string(),
            status: reply.status,
        })
    }

    /// Creates a contact; when the customer already has one of that name (an earlier
    /// write whose link was lost, or an accountant's), that one is used instead.
    async fn add_contact(
        &self,
        n: i64,
        name: &str,
        email: Option<&str>,
        key: &str,
    ) -> Result<i64, SinkError> {
        let mut body = json!({ "name": name });
        if let Some(email) = email {
            body["email"] = json!(email);
        }
        match self
            .write(Method::POST, &self.contacts_url(n), Some(&body), key)
            .await
        {
            Ok(reply) => contact_number(&reply.json(PRODUCT, "the contact's create")?),
            Err(SinkError::Rejected {
                code: Some(code), ..
            }) if code == CONTACT_NAME_TAKEN_CODE => {
                let same_name = |k: &Value| {
                    k["name"]
                        .as_str()
                        .is_some_and(|s| s.trim().eq_ignore_ascii_case(name.trim()))
                };
                let Some(existing) = self.contacts(n).await?.into_iter().find(same_name) else {
                    return Err(SinkError::Failed {
                        status: None,
                        message: format!(
                            "{PRODUCT} reports a contact of this name, but none can be found"
                        ),
                    });
                };
                let c = contact_number(&existing)?;
                self.replace_contact(n, existing, name, email, &format!("{key}-existing"))
                    .await?;
                Ok(c)
            }
            Err(e) => Err(e),
        }
    }

    /// PUTs the contact back with our name and email (a full replace: its other
    /// properties are sent back as they were); nothing is sent when they already match.
    async fn replace_contact(
        &self,
        n: i64,
        contact: Value,
        name: &str,
        email: Option<&str>,
        key: &str,
    ) -> Result<(), SinkError> {
        let c = contact_number(&contact)?;
        if contact["name"].as_str() == Some(name) && contact["email"].as_str() == email {
            return Ok(());
        }
        let mut body = writable(&contact, CONTACT_READ_ONLY);
        body.insert("customerContactNumber".into(), json!(c));
        body.insert("name".into(), json!(name));
        match email {
            Some(email) => body.insert("email".into(), json!(email)),
            None => body.remove("email"),
        };
        self.write(
            Method::PUT,
            &self.contact_url(n, c),
            Some(&Value::Object(body)),
            key,
        )
        .await?;
        Ok(())
    }

    /// Deletes the contact that was the attention; one still in use elsewhere (on
    /// invoices) is kept, as booked history.
    async fn delete_unlinked_contact(&self, n: i64, c: i64, key: &str) -> Result<(), SinkError> {
        match self
            .write(Method::DELETE, &self.contact_url(n, c), None, key)
            .await
        {
            Ok(_) | Err(SinkError::Rejected { status: 404, .. }) => Ok(()),
            Err(SinkError::Rejected { code, .. }) => {
                tracing::info!(
                    customer = n,
                    code = code.as_deref().unwrap_or("-"),
                    "the former contact person is still in use in {PRODUCT}; it was unlinked \
                     and kept"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the customer's personal data. First its personal fields are
    /// overwritten (name, attention link) and it is barred, so that whatever fails
    /// later, nothing personal is left in it; then its contacts are deleted (or, when
    /// in use, overwritten), then the customer. e-conomic refuses to delete a customer
    /// with booked invoices: it stays, anonymised and barred.
    ///
    /// e-conomic reuses customer numbers after deletion, so a DELETE is never sent
    /// twice blindly: every request carries an `Idempotency-Key` derived from `key`, so
    /// a repeated erase within the hour is answered from e-conomic's cache; when the
    /// first write of this erase comes from the cache, the erase already ran, and the
    /// contacts found now may belong to a new customer with the same number: they are
    /// only touched if the customer turns out not to be deleted. A DELETE whose answer
    /// is lost is checked with a GET, not repeated.
    pub async fn erase(&self, id: &str, key: &str) -> Result<Erased, SinkError> {
        let Some(n) = customer_number(id) else {
            return Ok(Erased::NotPresent);
        };
        let url = self.customer_url(n);
        let Some(current) = self.fetch(&url).await? else {
            return Ok(Erased::NotPresent);
        };
        let mut anonymised = writable(&current, CUSTOMER_READ_ONLY);
        anonymised.insert("name".into(), json!(ERASED_NAME));
        anonymised.insert("barred".into(), json!(true));
        anonymised.remove("attention");
        anonymised.remove("customerContact");
        let overwritten = match self
            .write(
                Method::PUT,
                &url,
                Some(&Value::Object(anonymised)),
                &format!("{key}-erase-anonymise"),
            )
            .await
        {
            Ok(reply) => reply,
            Err(SinkError::Rejected { status: 404, .. }) => return Ok(Erased::NotPresent),
            Err(e) => return Err(e),
        };
        let repeated = from_cache(&overwritten.headers);
        if !repeated {
            self.erase_contacts(n, key).await?;
        }
        match self
            .write(Method::DELETE, &url, None, &format!("{key}-erase-delete"))
            .await
        {
            Ok(reply) => Ok(Erased::Deleted {
                status: reply.status,
            }),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(Erased::NotPresent),
            Err(SinkError::Rejected { .. }) => {
                // Not deleted, so the customer at this number is still ours.
                if repeated {
                    self.erase_contacts(n, key).await?;
                }
                Ok(Erased::Anonymised {
                    status: overwritten.status,
                })
            }
            Err(SinkError::Failed { status, message }) => {
                // The DELETE may have happened: look, never repeat it.
                match self.http.send(Method::GET, &url, None).await {
                    Err(SinkError::Rejected { status: 404, .. }) => {
                        Ok(Erased::Deleted { status: 404 })
                    }
                    Ok(_) => Err(SinkError::Failed {
                        status,
                        message: format!(
                            "{message}; the customer is still in {PRODUCT}, anonymised and \
                             barred, and the DELETE was not repeated"
                        ),
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every contact of customer `n`; one e-conomic keeps (in use) is
    /// overwritten instead: a neutral name, nothing else.
    async fn erase_contacts(&self, n: i64, key: &str) -> Result<(), SinkError> {
        for contact in self.contacts(n).await? {
            let c = contact_number(&contact)?;
            let url = self.contact_url(n, c);
            match self
                .write(
                    Method::DELETE,
                    &url,
                    None,
                    &format!("{key}-erase-contact-{c}"),
                )
                .await
            {
                Ok(_) | Err(SinkError::Rejected { status: 404, .. }) => {}
                Err(SinkError::Rejected { .. }) => {
                    let body = json!({
                        "customerContactNumber": c,
                        "name": format!("{ERASED_CONTACT_NAME} {c}"),
                    });
                    self.write(
                        Method::PUT,
                        &url,
                        Some(&body),
                        &format!("{key}-erase-contact-{c}-anonymise"),
                    )
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The name an erased contact that e-conomic keeps gets (with its number: names are
/// unique per customer).
pub const ERASED_CONTACT_NAME: &str = "Erased contact";

/// A customer number e-conomic can hold, from our text form of it.
fn customer_number(s: &str) -> Option<i64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (1..=999_999_999).contains(n))
}

/// Whether a refused create says the customer number is in use: E06010 on the
/// `customerNumber` property (`error_of` names the property before its message), or
/// the Customers API's `CustomerAlreadyExists`.
fn number_taken(code: &str, message: &str) -> bool {
    code == NUMBER_TAKEN_CODE_CUSTOMERS_API
        || (code == NUMBER_TAKEN_CODE && message.contains("customerNumber:"))
}

fn contact_number(contact: &Value) -> Result<i64, SinkError> {
    contact["customerContactNumber"]
        .as_i64()
        .ok_or_else(|| SinkError::Failed {
            status: None,
            message: format!("{PRODUCT} answered without the contact's customerContactNumber"),
        })
}

fn attention_of(customer: &Value) -> Option<i64> {
    customer["attention"]["customerContactNumber"].as_i64()
}

fn from_cache(headers: &HeaderMap) -> bool {
    headers
        .get("x-resultfromcache")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn contact_wish(record: &MappedRecord) -> Result<ContactWish, SinkError> {
    if !record.fields.keys().any(|k| k.starts_with(CONTACT_PREFIX)) {
        return Ok(ContactWish::Unmapped);
    }
    let get = |f: &str| {
        record
            .fields
            .get(f)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match (get("contact.name"), get("contact.email")) {
        (None, None) => Ok(ContactWish::Gone),
        (Some(name), email) => Ok(ContactWish::Person { name, email }),
        (None, Some(_)) => Err(SinkError::Rejected {
            status: 400,
            code: None,
            message: format!(
                "contact.email is set but contact.name is empty: {PRODUCT} requires a name \
                 for a customer contact; add the contact person's name in Opter (nothing \
                 was sent)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests;
