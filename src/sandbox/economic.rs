//! Simulator of Visma e-conomic's REST API (the customer part of
//! `https://restapi.e-conomic.com`), strict where a connector could otherwise pass here
//! and fail there (../shared/docs/visma-apis.md section 3, the draft-03 schemas in
//! `specs/economic/`).
//!
//! What it does, and the choices made where e-conomic documents nothing:
//! - Every API call needs `X-AppSecretToken` = [`SANDBOX_ECONOMIC_APP_SECRET_TOKEN`] and
//!   `X-AgreementGrantToken` = [`SANDBOX_ECONOMIC_AGREEMENT_GRANT_TOKEN`]; otherwise 401.
//! - Errors use the legacy body `{message, errorCode?, developerHint, logId,
//!   httpStatusCode, logTime, errors?}`; a validation error lists the property under
//!   `errors` as `{"<property>": {"errors": [{propertyName, errorMessage, errorCode,
//!   inputValue, developerHint}]}}`, with the codes of e-conomic's OpenAPI
//!   (`CustomerInvalidEmail`, `CustomerContactIsInUse`...) except where the REST API's
//!   own E-code is known. Like e-conomic's, the body echoes the input value: clients
//!   must not log it.
//! - `POST /customers` requires `name` (1-255), `currency` (3), `customerGroup`,
//!   `paymentTerms` and `vatZone` with a known number ([`CUSTOMER_GROUPS`],
//!   [`PAYMENT_TERMS`], [`VAT_ZONES`]); `customerNumber` (1..999999999) is optional, the
//!   highest number plus one otherwise. A number in use: 400 "Validation exception."
//!   (`E04300`) with `errors.customerNumber.errors[0].errorCode` = `E06010`, the REST
//!   API's "already exists" (Opus-EDB/e-conomic, `customer.go`, matches exactly that on
//!   restapi.e-conomic.com).
//!   `null` is refused, as e-conomic refuses it ("to null a property, leave it out");
//!   unknown and read-only properties are ignored; `false` booleans are not stored.
//! - `PUT /customers/{n}` replaces the customer: a missing required property is a 400,
//!   whatever was left out is gone. `attention` / `customerContact` must name one of the
//!   customer's own contacts. To a number no customer has, it creates the customer
//!   there and answers 201 with `Location` (an upsert: "PUT to a non-existing resource
//!   will, depending on support of defining the ID, create a resource at that path",
//!   https://restdocs.e-conomic.com/#http-verbs; seen live for `/customers` by
//!   Pogoe/EConomic.NET, `WriteRoundTripTests.Updating_a_customer_that_does_not_exist_creates_it`).
//! - `DELETE /customers/{n}` deletes the customer with its contacts, unless it has booked
//!   invoices (marked with `POST /_sandbox/economic/customers/{n}/invoices`): 400
//!   `CustomerHasBookedInvoices` (a code of the sandbox's own; e-conomic publishes none
//!   for this). A deleted number is free again, and automatic numbering reuses it when
//!   it was the highest.
//! - Contacts: `name` required (1-255, unique per customer, case-insensitive:
//!   `CustomerContactNameAlreadyExists`), `email` (255, well formed), numbers unique
//!   across the agreement and never reused. A contact that is its customer's
//!   `attention` or `customerContact`, or that was the attention when an invoice was
//!   booked, cannot be deleted: 400 `CustomerContactIsInUse`.
//! - Lists: `skippages` / `pagesize` (default 20, at most 1000), answered as
//!   `{collection, pagination, self}`; `filter=<property>$<op>:<value>` with one
//!   predicate (`$eq $ne $gt $gte $lt $lte $like $in`) on [`FILTERABLE`] properties.
//! - `Idempotency-Key` on a non-GET call: the first answer (status, headers, body) is
//!   kept for an hour; a repeat with the same key gets it again, with
//!   `X-ResultFromCache: true`, and nothing is executed. A failure injected by the fault
//!   layer is never kept (nothing was executed); an answer dropped after commit is.
//! - Fair use: at most `fair_use_calls_per_day` calls (50,000) per agreement in any 24
//!   hours, counted per call past the token check, refused ones too ("Fair use is
//!   defined as 50.000 API calls per 24 hour period per agreement",
//!   https://e-conomic.com/developer/fair-use-policy). e-conomic documents no answer
//!   past it, only that it may restrict access without warning; the sandbox answers 429
//!   with `Retry-After` and the code [`FAIR_USE_CODE`] of its own, and does not count it.
//! - Rate limit: a token bucket of `rate_limit_per_minute` tokens refilled over
//!   `rate_window`, charged per call by its cost (`X-CallCost`), and every answer past
//!   the token check carries `X-RateLimiting: token-limit-{N}-per-{S}-seconds: {used}/{N}`
//!   with the tokens *used* in the window (a live capture reads `147/10000`, climbing as
//!   calls are made; a call refused with a 400 still spends: Pogoe/EConomic.NET,
//!   `src/EConomic.Net/Http/RateLimitStatus.cs` and its `RateLimitOnFailureTests`). A
//!   call can cost more than one token; e-conomic publishes no table of costs, so here
//!   a collection read costs 2 and any other call 1. Too few tokens for the call: 429
//!   with `Retry-After` (seconds until enough are back) and the bucket shown full. The
//!   faults' `rate_limit_per_minute` applies to eAccounting only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::common::{
    self, header_is, looks_like_email, now_utc_secs, number_param, page_of, parse_query,
    RecordSite, RequestLog, MAX_BODY_BYTES,
};
use super::faults::{self, gateway_page, FaultEngine, FaultSite, Faults, Plan};

pub const SANDBOX_ECONOMIC_APP_SECRET_TOKEN: &str = "sandbox-economic-app-secret";
pub const SANDBOX_ECONOMIC_AGREEMENT_GRANT_TOKEN: &str = "sandbox-economic-agreement-grant";

/// The sandbox agreement's base currency.
pub const SANDBOX_ECONOMIC_CURRENCY: &str = "DKK";
/// "Domestic customers": the customer group the bundled mapping sends.
pub const SANDBOX_CUSTOMER_GROUP_NUMBER: i64 = 1;
/// "Net 30 days": the payment terms the bundled mapping sends.
pub const SANDBOX_PAYMENT_TERMS_NUMBER: i64 = 3;
/// "Domestic": the VAT zone the bundled mapping sends.
pub const SANDBOX_VAT_ZONE_NUMBER: i64 = 1;

/// The sandbox agreement's number (`GET /self`).
pub const SANDBOX_ECONOMIC_AGREEMENT_NUMBER: i64 = 1_234_567;
/// `GET /customer-groups` of the sandbox agreement: (number, name).
pub const CUSTOMER_GROUPS: &[(i64, &str)] = &[
    (SANDBOX_CUSTOMER_GROUP_NUMBER, "Domestic customers"),
    (2, "Foreign customers"),
];
/// `GET /payment-terms`: (number, name).
pub const PAYMENT_TERMS: &[(i64, &str)] = &[
    (1, "Net 8 days"),
    (2, "Net 14 days"),
    (SANDBOX_PAYMENT_TERMS_NUMBER, "Net 30 days"),
    (4, "Current month + 30 days"),
];
/// `GET /vat-zones`: (number, name), e-conomic's four zones.
pub const VAT_ZONES: &[(i64, &str)] = &[
    (SANDBOX_VAT_ZONE_NUMBER, "Domestic"),
    (2, "EU"),
    (3, "Abroad"),
    (4, "Domestic exempt"),
];

/// The customer's writable string properties (POST/PUT schemas): (name, minLength,
/// maxLength). Lengths count UTF-16 code units, as .NET's `string.Length` does.
pub const CUSTOMER_STRINGS: &[(&str, usize, usize)] = &[
    ("address", 0, 510),
    ("city", 0, 50),
    ("corporateIdentificationNumber", 0, 40),
    ("country", 0, 50),
    ("currency", 3, 3),
    ("ean", 0, 13),
    ("email", 0, 255),
    ("mobilePhone", 0, 50),
    ("name", 1, 255),
    ("pNumber", 10, 10),
    ("publicEntryNumber", 0, 50),
    ("telephoneAndFaxNumber", 0, 255),
    ("vatNumber", 0, 20),
    ("website", 0, 255),
    ("zip", 0, 30),
];

/// `required: true` in the customer POST/PUT schemas, checked in this order.
pub const CUSTOMER_REQUIRED: &[&str] = &[
    "name",
    "currency",
    "customerGroup",
    "paymentTerms",
    "vatZone",
];

/// The customer's references to other resources: (property, its number property).
pub const CUSTOMER_REFERENCES: &[(&str, &str)] = &[
    ("customerGroup", "customerGroupNumber"),
    ("paymentTerms", "paymentTermsNumber"),
    ("vatZone", "vatZoneNumber"),
    ("layout", "layoutNumber"),
    ("salesPerson", "employeeNumber"),
    ("defaultDeliveryLocation", "deliveryLocationNumber"),
    ("attention", "customerContactNumber"),
    ("customerContact", "customerContactNumber"),
];

/// References that name one of the customer's contacts.
const CONTACT_REFERENCES: &[&str] = &["attention", "customerContact"];

/// References the PUT schema has and the POST schema lacks: ignored on create.
const PUT_ONLY: &[&str] = &["attention", "customerContact", "defaultDeliveryLocation"];

const CUSTOMER_BOOLS: &[&str] = &["barred", "eInvoicingDisabledByDefault"];

/// The schemas' range for `customerNumber`.
pub const CUSTOMER_NUMBER_RANGE: (i64, i64) = (1, 999_999_999);

/// The contact's writable string properties (contact POST/PUT schemas).
pub const CONTACT_STRINGS: &[(&str, usize, usize)] = &[
    ("name", 1, 255),
    ("email", 0, 255),
    ("phone", 0, 50),
    ("eInvoiceId", 0, 50),
    ("notes", 0, 2000),
];

const EMAIL_NOTIFICATIONS: &[&str] = &["invoices", "orders", "quotations", "reminders"];

/// Properties `filter` accepts on `/customers`.
pub const FILTERABLE: &[&str] = &[
    "customerNumber",
    "name",
    "email",
    "currency",
    "city",
    "corporateIdentificationNumber",
];

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 1000;
/// How long an `Idempotency-Key`'s answer is kept.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(3600);

pub struct EconomicConfig {
    /// Requests per window per agreement; 0 means unlimited.
    pub rate_limit_per_minute: u32,
    /// The window the limit counts in: a minute, scaled down by tests.
    pub rate_window: Duration,
    /// Calls per agreement in any 24 hours before the fair-use answer; 0: no cap.
    pub fair_use_calls_per_day: u32,
    pub record_requests: bool,
}

/// The fair-use window.
pub const FAIR_USE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The sandbox's own code for the fair-use answer: e-conomic documents the limit but
/// not what it answers past it.
pub const FAIR_USE_CODE: &str = "FairUseExceeded";

struct StoredCustomer {
    number: i64,
    /// Writable properties as stored (references as `{"<x>Number": n}`).
    data: Map<String, Value>,
    last_updated: String,
    booked_invoices: u32,
}

struct StoredContact {
    number: i64,
    customer: i64,
    /// Writable properties as stored.
    data: Map<String, Value>,
    /// It was the customer's attention when an invoice was booked.
    on_invoice: bool,
}

struct Cached {
    at: Instant,
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct EconomicState {
    pub(super) faults: FaultEngine,
    customers: Vec<StoredCustomer>,
    contacts: Vec<StoredContact>,
    next_contact: i64,
    idempotency: HashMap<String, Cached>,
    bucket: Option<Bucket>,
    /// Per agreement (its grant token): when each call in the last 24 hours came.
    fair_use: HashMap<String, std::collections::VecDeque<Instant>>,
    requests: RequestLog,
    config: EconomicConfig,
}

pub type SharedEconomic = Arc<Mutex<EconomicState>>;

pub fn new_state(config: EconomicConfig) -> SharedEconomic {
    Arc::new(Mutex::new(EconomicState {
        faults: FaultEngine::default(),
        customers: Vec::new(),
        contacts: Vec::new(),
        next_contact: 1,
        idempotency: HashMap::new(),
        bucket: None,
        fair_use: HashMap::new(),
        requests: RequestLog::new(),
        config,
    }))
}

/// A poisoned lock only means a handler panicked; the data is still usable.
pub fn lock(state: &SharedEconomic) -> MutexGuard<'_, EconomicState> {
    common::lock(state)
}

/// Stored customers in insertion order, each with its `contacts` as an array (instead
/// of the link the API serves) and without links.
pub fn customers(state: &SharedEconomic) -> Vec<Value> {
    let st = lock(state);
    st.customers
        .iter()
        .map(|c| {
            let mut out = st.customer_json(c, None);
            let contacts: Vec<Value> = st
                .contacts
                .iter()
                .filter(|k| k.customer == c.number)
                .map(|k| contact_json(k, None))
                .collect();
            out["contacts"] = Value::Array(contacts);
            out
        })
        .collect()
}

/// The request log.
pub fn requests(state: &SharedEconomic) -> Vec<Value> {
    lock(state).requests.entries()
}

pub fn faults(state: &SharedEconomic) -> Faults {
    lock(state).faults.faults().clone()
}

/// Replaces the fault configuration, re-seeding its RNG (the rate limit stays).
pub fn set_faults(state: &SharedEconomic, faults: Faults) -> Result<(), String> {
    faults.validate()?;
    lock(state).faults = FaultEngine::new(faults);
    Ok(())
}

impl EconomicState {
    fn find(&self, number: i64) -> Option<usize> {
        self.customers.iter().position(|c| c.number == number)
    }

    fn find_contact(&self, customer: i64, number: i64) -> Option<usize> {
        self.contacts
            .iter()
            .position(|k| k.customer == customer && k.number == number)
    }

    /// The index of the customer a path's `{customerNumber}` names.
    fn customer_at(&self, number: &str) -> Option<usize> {
        parse_number(number).and_then(|n| self.find(n))
    }

    /// A path's `{customerNumber}` when that customer exists.
    fn existing(&self, number: &str) -> Option<i64> {
        parse_number(number).filter(|n| self.find(*n).is_some())
    }

    /// The contact a path's `{customerNumber}` and `{contactNumber}` name: the two
    /// numbers and the contact's index.
    fn contact_at(&self, number: &str, contact: &str) -> Option<(i64, i64, usize)> {
        let (n, c) = parse_number(number).zip(parse_number(contact))?;
        self.find_contact(n, c).map(|i| (n, c, i))
    }

    /// The customer as served: its data, read-only values and (with a base) links.
    fn customer_json(&self, c: &StoredCustomer, base: Option<&str>) -> Value {
        let mut out = c.data.clone();
        out.insert("customerNumber".into(), json!(c.number));
        out.insert("balance".into(), json!(0.0));
        out.insert("dueAmount".into(), json!(0.0));
        out.insert("lastUpdated".into(), json!(c.last_updated));
        if let Some(base) = base {
            let me = format!("{base}/customers/{}", c.number);
            for (property, key) in CUSTOMER_REFERENCES {
                let Some(Value::Object(r)) = out.get_mut(*property) else {
                    continue;
                };
                let n = r.get(*key).cloned().unwrap_or(Value::Null);
                let link = match *property {
                    "customerGroup" => format!("{base}/customer-groups/{n}"),
                    "paymentTerms" => format!("{base}/payment-terms/{n}"),
                    "vatZone" => format!("{base}/vat-zones/{n}"),
                    "layout" => format!("{base}/layouts/{n}"),
                    "salesPerson" => format!("{base}/employees/{n}"),
                    "defaultDeliveryLocation" => format!("{me}/delivery-locations/{n}"),
                    _ => format!("{me}/contacts/{n}"),
                };
                r.insert("self".into(), json!(link));
            }
            out.insert("contacts".into(), json!(format!("{me}/contacts")));
            out.insert(
                "deliveryLocations".into(),
                json!(format!("{me}/delivery-locations")),
            );
            out.insert(
                "invoices".into(),
                json!({
                    "drafts": format!("{me}/invoices/drafts"),
                    "booked": format!("{me}/invoices/booked"),
                    "self": format!("{me}/invoices"),
                }),
            );
            out.insert(
                "templates".into(),
                json!({
                    "invoice": format!("{me}/templates/invoice"),
                    "invoiceLine": format!("{me}/templates/invoiceline"),
                    "self": format!("{me}/templates"),
                }),
            );
            out.insert("self".into(), json!(me));
        }
        Value::Object(out)
    }

    /// One more than the highest number in use (so a deleted highest number is reused).
    fn next_customer_number(&self) -> i64 {
        self.customers.iter().map(|c| c.number).max().unwrap_or(0) + 1
    }

    /// Counts a call of the agreement `grant` against fair use; `Err(seconds until the
    /// oldest call leaves the window)` when it has made its 24 hours' worth (not counted).
    fn count_call(&mut self, grant: &str, now: Instant) -> Result<(), u64> {
        let cap = self.config.fair_use_calls_per_day as usize;
        if cap == 0 {
            return Ok(());
        }
        let calls = self.fair_use.entry(grant.to_string()).or_default();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAIR_USE_WINDOW)
        {
            calls.pop_front();
        }
        if calls.len() >= cap {
            let oldest = *calls.front().expect("cap > 0");
            let left = FAIR_USE_WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        calls.push_back(now);
        Ok(())
    }

    /// Takes a call's `cost` in tokens: `Ok(Some((used, limit)))` with the tokens used
    /// in the window after it, `Err(seconds until enough are back)` when too few are left.
    fn take_tokens(&mut self, cost: u32) -> Result<Option<(u32, u32)>, u64> {
        let limit = self.config.rate_limit_per_minute;
        if limit == 0 {
            return Ok(None);
        }
        let cost = f64::from(cost.clamp(1, limit));
        let window = self.config.rate_window.max(Duration::from_millis(1));
        let now = Instant::now();
        let per_sec = f64::from(limit) / window.as_secs_f64();
        let b = self.bucket.get_or_insert(Bucket {
            tokens: f64::from(limit),
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(f64::from(limit));
        b.last = now;
        if b.tokens >= cost {
            b.tokens -= cost;
            // Partly refilled tokens count as used until whole.
            let used = (f64::from(limit) - b.tokens).ceil() as u32;
            return Ok(Some((used.min(limit), limit)));
        }
        let wait = (cost - b.tokens) / per_sec;
        // Round up: "Retry-After: 0" would invite an immediate retry.
        Err((wait.ceil() as u64).max(1))
    }
}

fn contact_json(k: &StoredContact, base: Option<&str>) -> Value {
    let mut out = k.data.clone();
    out.insert("customerContactNumber".into(), json!(k.number));
    out.insert("sortKey".into(), json!(k.number));
    let mut customer = json!({ "customerNumber": k.customer });
    if let Some(base) = base {
        let owner = format!("{base}/customers/{}", k.customer);
        customer["self"] = json!(owner);
        out.insert(
            "self".into(),
            json!(format!("{owner}/contacts/{}", k.number)),
        );
    }
    out.insert("customer".into(), customer);
    Value::Object(out)
}

pub fn router(state: SharedEconomic) -> Router {
    let api = Router::new()
        .route(
            "/economic/api/customers",
            get(list_customers).post(create_customer),
        )
        .route(
            "/economic/api/customers/{customerNumber}",
            get(get_customer)
                .put(replace_customer)
                .delete(delete_customer),
        )
        .route(
            "/economic/api/customers/{customerNumber}/contacts",
            get(list_contacts).post(create_contact),
        )
        .route(
            "/economic/api/customers/{customerNumber}/contacts/{contactNumber}",
            get(get_contact).put(replace_contact).delete(delete_contact),
        )
        .route("/economic/api/customer-groups", get(list_groups))
        .route("/economic/api/payment-terms", get(list_terms))
        .route("/economic/api/vat-zones", get(list_vat_zones))
        .route("/economic/api/self", get(self_info))
        // Innermost: a repeated key is answered before any handler runs.
        .route_layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_guard))
        // Outside the token check: injected failures come before authentication.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            faults::fault_guard::<SharedEconomic>,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            common::record::<EconomicState>,
        ));
    let control = Router::new()
        .route("/_sandbox/economic/customers", get(control_customers))
        .route(
            "/_sandbox/economic/requests",
            get(common::control_requests::<EconomicState>)
                .delete(common::control_clear_requests::<EconomicState>),
        )
        .route(
            "/_sandbox/economic/customers/{customerNumber}/invoices",
            post(control_book_invoice),
        );
    api.merge(control).with_state(state)
}

impl FaultSite for SharedEconomic {
    fn plan(&self, customer_write: bool) -> Plan {
        lock(self).faults.plan(customer_write)
    }

    fn is_customer_path(path: &str) -> bool {
        path.starts_with("/economic/api/customers")
    }

    fn injected(status: u16, retry_after_secs: u64) -> Response {
        match status {
            429 => too_many_requests(retry_after_secs),
            500 => economic_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "An unexpected error occurred.",
                "Try again later, or contact api@e-conomic.com with the logId.",
            ),
            _ => gateway_page(status),
        }
    }
}

// ---------- error bodies ----------

fn error_body(status: StatusCode, code: Option<&str>, message: &str, hint: &str) -> Value {
    let mut body = json!({
        "message": message,
        "developerHint": hint,
        "logId": Uuid::new_v4().simple().to_string(),
        "httpStatusCode": status.as_u16(),
        "logTime": now_utc_secs(),
    });
    if let Some(code) = code {
        body["errorCode"] = json!(code);
    }
    body
}

/// e-conomic's legacy error body.
fn economic_error(status: StatusCode, code: Option<&str>, message: &str, hint: &str) -> Response {
    (status, Json(error_body(status, code, message, hint))).into_response()
}

/// A validation error about one property; like e-conomic's, it echoes the input.
#[derive(Debug)]
struct Invalid {
    property: String,
    code: &'static str,
    message: String,
    input: Value,
}

impl Invalid {
    fn new(
        property: &str,
        code: &'static str,
        message: impl Into<String>,
        input: Option<&Value>,
    ) -> Invalid {
        Invalid {
            property: property.to_string(),
            code,
            message: message.into(),
            input: input.cloned().unwrap_or(Value::Null),
        }
    }
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let status = StatusCode::BAD_REQUEST;
        let mut body = error_body(
            status,
            Some("E04300"),
            "Validation exception.",
            "Inspect validation errors and correct your request.",
        );
        body["errorCount"] = json!(1);
        body["errors"] = json!({
            self.property.clone(): { "errors": [{
                "propertyName": self.property,
                "errorMessage": self.message,
                "errorCode": self.code,
                "inputValue": self.input,
                "developerHint": "Correct the property and send the request again.",
            }]}
        });
        (status, Json(body)).into_response()
    }
}

fn unauthorized() -> Response {
    economic_error(
        StatusCode::UNAUTHORIZED,
        None,
        "Unauthorized. The X-AppSecretToken or X-AgreementGrantToken is missing or not valid.",
        "Send both tokens. A revoked grant must be granted again by the agreement.",
    )
}

fn too_many_requests(retry_after_secs: u64) -> Response {
    let mut resp = economic_error(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        "Too many requests. The rate limit of the agreement has been reached.",
        "Wait the number of seconds given in the Retry-After header.",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

/// Past the agreement's fair use. e-conomic documents the cap, "Fair use is defined as
/// 50.000 API calls per 24 hour period per agreement", and that past it e-conomic "is
/// at liberty, without warning, to restrict the integration's access"
/// (https://e-conomic.com/developer/fair-use-policy), but no answer: the sandbox
/// answers like its rate limit, 429 with `Retry-After` (until the oldest call of the
/// 24 hours leaves them), in the legacy error body with a code of its own.
fn fair_use_exceeded(cap: u32, retry_after_secs: u64) -> Response {
    let mut resp = economic_error(
        StatusCode::TOO_MANY_REQUESTS,
        Some(FAIR_USE_CODE),
        &format!(
            "The agreement has made {cap} API calls in the last 24 hours, its fair use;              access is restricted."
        ),
        "Optimise the integration's calls, or contact api@e-conomic.com.",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

fn customer_not_found() -> Response {
    economic_error(
        StatusCode::NOT_FOUND,
        Some("CustomerNotFound"),
        "Customer not found.",
        "Check the customer number.",
    )
}

fn contact_not_found() -> Response {
    economic_error(
        StatusCode::NOT_FOUND,
        Some("CustomerContactNotFound"),
        "Customer contact not found.",
        "Check the customer number and the contact number.",
    )
}

fn bad_request(message: &str) -> Response {
    economic_error(
        StatusCode::BAD_REQUEST,
        None,
        message,
        "See the API documentation of this endpoint.",
    )
}

// ---------- middleware ----------

/// Every /economic/api request is recorded: method, path, query, status, whether it
/// carried the tokens and an `Idempotency-Key` (the key itself, never the tokens),
/// the JSON body, whether the answer came from the idempotency cache, and the fault.
impl RecordSite for EconomicState {
    fn recording(&self) -> bool {
        self.config.record_requests
    }

    fn log(&mut self) -> &mut RequestLog {
        &mut self.requests
    }

    fn too_large() -> Response {
        bad_request("The request body is too large.")
    }

    fn request_fields(req: &Request) -> Map<String, Value> {
        let headers = req.headers();
        let mut fields = common::path_and_query(req);
        fields.insert(
            "tokens".into(),
            json!({
                "X-AppSecretToken": headers.contains_key("x-appsecrettoken"),
                "X-AgreementGrantToken": headers.contains_key("x-agreementgranttoken"),
            }),
        );
        fields.insert("idempotency_key".into(), json!(idempotency_key(headers)));
        fields
    }

    fn response_fields(resp: &Response, entry: &mut Map<String, Value>) {
        let from_cache = resp.headers().contains_key("x-resultfromcache");
        entry.insert("from_cache".into(), json!(from_cache));
    }
}

/// The tokens, then the agreement's token bucket; every answer past it carries the
/// rate headers.
async fn api_guard(State(state): State<SharedEconomic>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if !header_is(
        headers,
        "x-appsecrettoken",
        SANDBOX_ECONOMIC_APP_SECRET_TOKEN,
    ) || !header_is(
        headers,
        "x-agreementgranttoken",
        SANDBOX_ECONOMIC_AGREEMENT_GRANT_TOKEN,
    ) {
        return unauthorized();
    }
    let grant = headers
        .get("x-agreementgranttoken")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let cost = call_cost(req.method(), req.uri().path());
    let (counted, taken, window, cap) = {
        let mut st = lock(&state);
        let counted = st.count_call(&grant, Instant::now());
        let taken = counted.is_ok().then(|| st.take_tokens(cost));
        let cap = st.config.fair_use_calls_per_day;
        (counted, taken, st.config.rate_window, cap)
    };
    if let Err(wait) = counted {
        return fair_use_exceeded(cap, wait);
    }
    let taken = taken.expect("taken when counted");
    let label = window_label(window);
    let mut resp = match taken {
        Err(wait) => {
            let mut resp = too_many_requests(wait);
            let limit = lock(&state).config.rate_limit_per_minute;
            set_header(
                &mut resp,
                "x-ratelimiting",
                &format!("token-limit-{limit}-per-{label}-seconds: {limit}/{limit}"),
            );
            return resp;
        }
        Ok(used) => {
            let mut resp = next.run(req).await;
            if let Some((used, limit)) = used {
                set_header(
                    &mut resp,
                    "x-ratelimiting",
                    &format!("token-limit-{limit}-per-{label}-seconds: {used}/{limit}"),
                );
            }
            resp
        }
    };
    set_header(&mut resp, "x-callcost", &cost.to_string());
    resp
}

/// What a call costs in tokens: a collection read (a list, filtered or not) 2, anything
/// else 1. The sandbox's own choice: e-conomic says calls differ in cost and reports
/// each one's in `X-CallCost`, but publishes no table.
fn call_cost(method: &Method, path: &str) -> u32 {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if method == Method::GET && last.parse::<i64>().is_err() {
        2
    } else {
        1
    }
}

fn window_label(window: Duration) -> String {
    if window.subsec_nanos() == 0 {
        window.as_secs().to_string()
    } else {
        format!("{:.3}", window.as_secs_f64())
    }
}

fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Answers a repeated `Idempotency-Key` from the cache; keeps each first answer.
async fn idempotency(State(state): State<SharedEconomic>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let Some(key) = idempotency_key(req.headers()) else {
        return next.run(req).await;
    };
    {
        let mut st = lock(&state);
        st.idempotency
            .retain(|_, c| c.at.elapsed() < IDEMPOTENCY_TTL);
        if let Some(c) = st.idempotency.get(&key) {
            let mut resp = Response::new(Body::from(c.body.clone()));
            *resp.status_mut() = c.status;
            for (name, value) in &c.headers {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
            set_header(&mut resp, "x-resultfromcache", "true");
            return resp;
        }
    }
    let resp = next.run(req).await;
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let headers = [header::CONTENT_TYPE, header::LOCATION]
        .into_iter()
        .filter_map(|name| parts.headers.get(&name).map(|v| (name, v.clone())))
        .collect();
    lock(&state).idempotency.insert(
        key,
        Cached {
            at: Instant::now(),
            status: parts.status,
            headers,
            body: bytes.clone(),
        },
    );
    Response::from_parts(parts, Body::from(bytes))
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

// ---------- customers ----------

/// The API's own root as the client addressed it, for links.
fn base_of(headers: &HeaderMap) -> String {
    format!("http://{}/economic/api", common::origin(headers))
}

fn parse_number(s: &str) -> Option<i64> {
    s.parse::<i64>().ok()
}

fn paging(q: &HashMap<String, String>) -> Result<(u64, u64), String> {
    let skip = number_param(q.get("skippages").map(String::as_str), 0, 0..=u64::MAX)
        .map_err(|_| "skippages must be a whole number of 0 or more.".to_string())?;
    let size = number_param(
        q.get("pagesize").map(String::as_str),
        DEFAULT_PAGE_SIZE,
        1..=MAX_PAGE_SIZE,
    )
    .map_err(|_| format!("pagesize must be between 1 and {MAX_PAGE_SIZE}."))?;
    Ok((skip, size))
}

/// `{collection, pagination, self}` for one page of `items`.
fn page(items: Vec<Value>, all: usize, skip: u64, size: u64, url: &str, query: &str) -> Response {
    let total = items.len() as u64;
    let collection = page_of(items, skip, size);
    let last = total.div_ceil(size).saturating_sub(1);
    let link = |p: u64| format!("{url}?skippages={p}&pagesize={size}{query}");
    let mut pagination = json!({
        "maxPageSizeAllowed": MAX_PAGE_SIZE,
        "skipPages": skip,
        "pageSize": size,
        "results": total,
        "resultsWithoutFilter": all,
        "firstPage": link(0),
        "lastPage": link(last),
    });
    if skip < last {
        pagination["nextPage"] = json!(link(skip + 1));
    }
    if skip > 0 {
        pagination["previousPage"] = json!(link(skip - 1));
    }
    Json(json!({ "collection": collection, "pagination": pagination, "self": url })).into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    In,
}

#[derive(Debug)]
struct Predicate {
    field: &'static str,
    op: Op,
    values: Vec<String>,
}

/// `<property>$<op>:<value>`: one predicate; `$$ $( $) $* $, $[ $]` are escapes.
fn parse_filter(raw: &str) -> Result<Predicate, String> {
    let bad = || "The filter is not valid or uses a property that cannot be filtered.".to_string();
    let (field, rest) = raw.split_once('$').ok_or_else(bad)?;
    let field = FILTERABLE
        .iter()
        .find(|f| f.eq_ignore_ascii_case(field))
        .ok_or_else(bad)?;
    let (op, value) = rest.split_once(':').ok_or_else(bad)?;
    let op = match op.to_ascii_lowercase().as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "like" => Op::Like,
        "in" => Op::In,
        _ => return Err(bad()),
    };
    // Unescape, refusing a second predicate ($and: / $or:), which the sandbox lacks.
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            match chars.next() {
                Some(e @ ('$' | '(' | ')' | '*' | ',' | '[' | ']')) => {
                    // Keep escaped list punctuation distinguishable from real list syntax.
                    if matches!(e, ',' | '[' | ']') {
                        out.push('\u{0}');
                    }
                    out.push(e);
                }
                _ => return Err(
                    "The sandbox supports one filter predicate ($and and $or are not simulated)."
                        .into(),
                ),
            }
        } else {
            out.push(c);
        }
    }
    let values = if op == Op::In {
        let inner = out
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(bad)?;
        split_unescaped(inner)
    } else {
        vec![out.replace('\u{0}', "")]
    };
    Ok(Predicate { field, op, values })
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        match c {
            '\u{0}' => escaped = true,
            ',' if !escaped => parts.push(String::new()),
            c => {
                escaped = false;
                parts.last_mut().expect("never empty").push(c);
            }
        }
    }
    parts
}

fn matches(p: &Predicate, customer: &Value) -> bool {
    let have = &customer[p.field];
    let cmp = |want: &str| -> Option<std::cmp::Ordering> {
        match have {
            Value::Number(n) => Some(n.as_f64()?.partial_cmp(&want.parse::<f64>().ok()?)?),
            Value::String(s) => Some(s.to_lowercase().cmp(&want.to_lowercase())),
            _ => None,
        }
    };
    use std::cmp::Ordering::*;
    let first = p.values.first().map(String::as_str).unwrap_or_default();
    match p.op {
        Op::Eq => cmp(first) == Some(Equal),
        Op::Ne => cmp(first) != Some(Equal),
        Op::Gt => cmp(first) == Some(Greater),
        Op::Gte => matches!(cmp(first), Some(Greater | Equal)),
        Op::Lt => cmp(first) == Some(Less),
        Op::Lte => matches!(cmp(first), Some(Less | Equal)),
        Op::In => p.values.iter().any(|v| cmp(v) == Some(Equal)),
        Op::Like => {
            let text = match have {
                Value::String(s) => s.to_lowercase(),
                Value::Number(n) => n.to_string(),
                _ => return false,
            };
            let pattern = first.to_lowercase();
            if pattern.contains('*') {
                glob(&pattern, &text)
            } else {
                text.contains(&pattern)
            }
        }
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty() || parts.len() > 1
}

async fn list_customers(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw.as_deref());
    let (skip, size) = match paging(&q) {
        Ok(p) => p,
        Err(message) => return bad_request(&message),
    };
    let filter = match q.get("filter").map(|f| parse_filter(f)) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(message)) => return bad_request(&message),
    };
    let base = base_of(&headers);
    let st = lock(&state);
    let all: Vec<Value> = st
        .customers
        .iter()
        .map(|c| st.customer_json(c, Some(&base)))
        .collect();
    let total = all.len();
    let items = all
        .into_iter()
        .filter(|c| filter.as_ref().is_none_or(|p| matches(p, c)))
        .collect();
    let extra = q
        .get("filter")
        .map(|f| {
            let encoded: String = url::form_urlencoded::byte_serialize(f.as_bytes()).collect();
            format!("&filter={encoded}")
        })
        .unwrap_or_default();
    page(
        items,
        total,
        skip,
        size,
        &format!("{base}/customers"),
        &extra,
    )
}

async fn get_customer(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let st = lock(&state);
    match st.customer_at(&number) {
        Some(i) => {
            Json(st.customer_json(&st.customers[i], Some(&base_of(&headers)))).into_response()
        }
        None => customer_not_found(),
    }
}

/// Why a body is refused: it is not a JSON object, or a property is not valid.
enum Refused {
    NotAnObject,
    Invalid(Invalid),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NotAnObject => bad_request("The request body must be a JSON object."),
            Refused::Invalid(e) => e.into_response(),
        }
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Refused> {
    common::json_object(body).map_err(|_| Refused::NotAnObject)
}

/// The body, a JSON object, as `validate` keeps it.
fn validated(
    body: &[u8],
    validate: impl FnOnce(&Map<String, Value>) -> Result<Map<String, Value>, Invalid>,
) -> Result<Map<String, Value>, Refused> {
    validate(&parse_object(body)?).map_err(Refused::Invalid)
}

/// e-conomic refuses `null` ("to null a property, leave it out").
fn refuse_null(input: &Map<String, Value>) -> Result<(), Invalid> {
    match input.iter().find(|(_, v)| v.is_null()) {
        Some((property, _)) => Err(Invalid::new(
            property,
            "PropertyCannotBeNull",
            "Null is not accepted; leave the property out instead.",
            None,
        )),
        None => Ok(()),
    }
}

/// 201 with the new resource's `Location` and its body.
fn created(location: String, body: Value) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

fn string_code(property: &str) -> &'static str {
    match property {
        "name" => "CustomerInvalidName",
        "email" => "CustomerInvalidEmail",
        "ean" => "CustomerInvalidEAN",
        "pNumber" => "CustomerInvalidPNumber",
        _ => "CustomerInvalidProperty",
    }
}

fn reference_code(property: &str) -> &'static str {
    match property {
        "customerGroup" => "CustomerInvalidGroupId",
        "paymentTerms" => "CustomerInvalidPaymentTerm",
        "vatZone" => "CustomerInvalidVatZone",
        "attention" => "CustomerInvalidDefaultAttention",
        _ => "CustomerInvalidProperty",
    }
}

/// Checks a customer body against the POST (`put` false) or PUT schema and returns the
/// writable properties to store. The error is the first problem found.
fn validate_customer(input: &Map<String, Value>, put: bool) -> Result<Map<String, Value>, Invalid> {
    refuse_null(input)?;
    for &property in CUSTOMER_REQUIRED {
        if !input.contains_key(property) {
            let code = match property {
                "name" => "CustomerMissingName",
                p => reference_code(p),
            };
            return Err(Invalid::new(
                property,
                code,
                "The property is required.",
                None,
            ));
        }
    }
    let mut out = Map::new();
    if let Some(v) = input.get("customerNumber") {
        let (min, max) = CUSTOMER_NUMBER_RANGE;
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => {
                out.insert("customerNumber".into(), json!(n));
            }
            _ => {
                return Err(Invalid::new(
                    "customerNumber",
                    "CustomerInvalidCustomerNumber",
                    format!("The customer number must be a whole number from {min} to {max}."),
                    Some(v),
                ))
            }
        }
    }
    for &(property, min, max) in CUSTOMER_STRINGS {
        let Some(v) = input.get(property) else {
            continue;
        };
        let Value::String(s) = v else {
            return Err(Invalid::new(
                property,
                string_code(property),
                "Must be a string.",
                Some(v),
            ));
        };
        let len = s.encode_utf16().count();
        let blank = s.trim().is_empty();
        if property == "name" && blank {
            return Err(Invalid::new(
                property,
                "CustomerMissingName",
                "The name is required.",
                Some(v),
            ));
        }
        if len > max || len < min {
            let code = string_code(property);
            let message = if min == max {
                format!("Must be exactly {max} characters long.")
            } else {
                format!("Must be from {min} to {max} characters long.")
            };
            return Err(Invalid::new(property, code, message, Some(v)));
        }
        // The customer's email may hold several addresses, separated by spaces.
        if property == "email" && !s.split_whitespace().all(looks_like_email) {
            return Err(Invalid::new(
                property,
                "CustomerInvalidEmail",
                "The email address is not valid.",
                Some(v),
            ));
        }
        out.insert(property.into(), v.clone());
    }
    for &(property, key) in CUSTOMER_REFERENCES {
        if !put && PUT_ONLY.contains(&property) {
            continue;
        }
        let Some(v) = input.get(property) else {
            continue;
        };
        let code = reference_code(property);
        let n = match v.get(key) {
            Some(n) => n,
            None => {
                return Err(Invalid::new(
                    property,
                    code,
                    format!("{property}.{key} is required."),
                    Some(v),
                ))
            }
        };
        let Some(n) = n.as_i64().filter(|n| *n >= 1) else {
            return Err(Invalid::new(
                property,
                code,
                format!("{property}.{key} must be a positive whole number."),
                Some(v),
            ));
        };
        let known = match property {
            "customerGroup" => CUSTOMER_GROUPS.iter().any(|g| g.0 == n),
            "paymentTerms" => PAYMENT_TERMS.iter().any(|t| t.0 == n),
            "vatZone" => VAT_ZONES.iter().any(|z| z.0 == n),
            _ => true,
        };
        if !known {
            return Err(Invalid::new(
                property,
                code,
                format!("No {property} has this number."),
                Some(v),
            ));
        }
        out.insert(property.into(), json!({ key: n }));
    }
    for &property in CUSTOMER_BOOLS {
        match input.get(property) {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                out.insert(property.into(), Value::Bool(true));
            }
            Some(v) => {
                return Err(Invalid::new(
                    property,
                    "CustomerInvalidProperty",
                    "Must be true or false.",
                    Some(v),
                ))
            }
        }
    }
    if let Some(v) = input.get("creditLimit") {
        if !v.is_number() {
            return Err(Invalid::new(
                "creditLimit",
                "CustomerInvalidProperty",
                "Must be a number.",
                Some(v),
            ));
        }
        out.insert("creditLimit".into(), v.clone());
    }
    Ok(out)
}

async fn create_customer(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let data = match validated(&body, |input| validate_customer(input, false)) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let mut st = lock(&state);
    let number = match data.get("customerNumber").and_then(Value::as_i64) {
        Some(n) => n,
        None => st.next_customer_number(),
    };
    if st.find(number).is_some() {
        // The REST API's "already exists" code on the property (see `NUMBER_TAKEN_CODE`
        // in `sink::economic` for the source), in the annotated validation body.
        return Invalid::new(
            "customerNumber",
            crate::sink::economic::NUMBER_TAKEN_CODE,
            "Customer number already exists.",
            Some(&json!(number)),
        )
        .into_response();
    }
    let mut data = data;
    data.remove("customerNumber");
    st.customers.push(StoredCustomer {
        number,
        data,
        last_updated: now_utc_secs(),
        booked_invoices: 0,
    });
    let base = base_of(&headers);
    let stored = st.customer_json(st.customers.last().expect("just pushed"), Some(&base));
    created(format!("{base}/customers/{number}"), stored)
}

/// Full replace: validated like a create, so what was left out is gone.
async fn replace_customer(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    let (min, max) = CUSTOMER_NUMBER_RANGE;
    let Some(n) = parse_number(&number).filter(|n| (min..=max).contains(n)) else {
        return customer_not_found();
    };
    let mut data = match validated(&body, |input| validate_customer(input, true)) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    if let Some(given) = data.remove("customerNumber") {
        if given.as_i64() != Some(n) {
            return Invalid::new(
                "customerNumber",
                "CustomerNumberMismatch",
                "The customer number in the body differs from the one in the URL; a customer's number cannot be changed.",
                Some(&given),
            )
            .into_response();
        }
    }
    for property in CONTACT_REFERENCES {
        if let Some(c) = data
            .get(*property)
            .map(|r| r["customerContactNumber"].as_i64())
        {
            if c.and_then(|c| st.find_contact(n, c)).is_none() {
                return Invalid::new(
                    property,
                    "CustomerInvalidDefaultAttention",
                    "The contact is not one of this customer's contacts.",
                    data.get(*property),
                )
                .into_response();
            }
        }
    }
    let base = base_of(&headers);
    let Some(i) = st.find(n) else {
        // An upsert: PUT to a number no customer has creates it there.
        st.customers.push(StoredCustomer {
            number: n,
            data,
            last_updated: now_utc_secs(),
            booked_invoices: 0,
        });
        let stored = st.customer_json(st.customers.last().expect("just pushed"), Some(&base));
        return created(format!("{base}/customers/{n}"), stored);
    };
    st.customers[i].data = data;
    st.customers[i].last_updated = now_utc_secs();
    Json(st.customer_json(&st.customers[i], Some(&base))).into_response()
}

async fn delete_customer(
    State(state): State<SharedEconomic>,
    Path(number): Path<String>,
) -> Response {
    let mut st = lock(&state);
    let Some(i) = st.customer_at(&number) else {
        return customer_not_found();
    };
    if st.customers[i].booked_invoices > 0 {
        return economic_error(
            StatusCode::BAD_REQUEST,
            Some("CustomerHasBookedInvoices"),
            "The customer has booked invoices and cannot be deleted.",
            "Bar the customer instead (barred = true).",
        );
    }
    let removed = st.customers.remove(i);
    st.contacts.retain(|k| k.customer != removed.number);
    StatusCode::NO_CONTENT.into_response()
}

// ---------- contacts ----------

/// Checks a contact body against the contact POST (`put` false) or PUT schema and
/// returns the writable properties to store.
fn validate_contact(input: &Map<String, Value>, put: bool) -> Result<Map<String, Value>, Invalid> {
    refuse_null(input)?;
    if put
        && !input
            .get("customerContactNumber")
            .is_some_and(Value::is_i64)
    {
        return Err(Invalid::new(
            "customerContactNumber",
            "CustomerContactInvalidNumber",
            "customerContactNumber is required and must be a whole number.",
            input.get("customerContactNumber"),
        ));
    }
    let mut out = Map::new();
    for &(property, min, max) in CONTACT_STRINGS {
        let v = input.get(property);
        if property == "name"
            && v.and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
        {
            return Err(Invalid::new(
                property,
                "CustomerContactNameNullOrEmpty",
                "The contact's name is required.",
                v,
            ));
        }
        let Some(v) = v else {
            continue;
        };
        let Value::String(s) = v else {
            return Err(Invalid::new(
                property,
                "CustomerContactInvalidProperty",
                "Must be a string.",
                Some(v),
            ));
        };
        let len = s.encode_utf16().count();
        if len < min || len > max {
            return Err(Invalid::new(
                property,
                "CustomerContactInvalidProperty",
                format!("Must be from {min} to {max} characters long."),
                Some(v),
            ));
        }
        if property == "email" && !s.is_empty() && !looks_like_email(s) {
            return Err(Invalid::new(
                property,
                "CustomerContactInvalidEmail",
                "The email address is not valid.",
                Some(v),
            ));
        }
        out.insert(property.into(), v.clone());
    }
    if let Some(v) = input.get("emailNotifications") {
        let ok = v.as_array().is_some_and(|items| {
            let mut seen = Vec::new();
            items.iter().all(|i| {
                let fine = i
                    .as_str()
                    .is_some_and(|s| EMAIL_NOTIFICATIONS.contains(&s) && !seen.contains(&s));
                if let Some(s) = i.as_str() {
                    seen.push(s);
                }
                fine
            })
        });
        if !ok {
            return Err(Invalid::new(
                "emailNotifications",
                "CustomerContactInvalidProperty",
                format!("Must be an array of distinct values from {EMAIL_NOTIFICATIONS:?}."),
                Some(v),
            ));
        }
        out.insert("emailNotifications".into(), v.clone());
    }
    Ok(out)
}

fn name_taken(st: &EconomicState, customer: i64, name: &str, except: Option<i64>) -> bool {
    st.contacts.iter().any(|k| {
        k.customer == customer
            && Some(k.number) != except
            && k.data["name"]
                .as_str()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim()))
    })
}

fn name_exists() -> Response {
    Invalid::new(
        "name",
        "CustomerContactNameAlreadyExists",
        "The customer already has a contact with this name.",
        None,
    )
    .into_response()
}

async fn list_contacts(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw.as_deref());
    let (skip, size) = match paging(&q) {
        Ok(p) => p,
        Err(message) => return bad_request(&message),
    };
    let st = lock(&state);
    let Some(n) = st.existing(&number) else {
        return customer_not_found();
    };
    let base = base_of(&headers);
    let items: Vec<Value> = st
        .contacts
        .iter()
        .filter(|k| k.customer == n)
        .map(|k| contact_json(k, Some(&base)))
        .collect();
    let all = items.len();
    page(
        items,
        all,
        skip,
        size,
        &format!("{base}/customers/{n}/contacts"),
        "",
    )
}

async fn create_contact(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    let Some(n) = st.existing(&number) else {
        return economic_error(
            StatusCode::NOT_FOUND,
            Some("CustomerDoesNotExist"),
            "The customer does not exist.",
            "Check the customer number.",
        );
    };
    let data = match validated(&body, |input| validate_contact(input, false)) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    if name_taken(&st, n, data["name"].as_str().unwrap_or_default(), None) {
        return name_exists();
    }
    let number = st.next_contact;
    st.next_contact += 1;
    let contact = StoredContact {
        number,
        customer: n,
        data,
        on_invoice: false,
    };
    let base = base_of(&headers);
    let body = contact_json(&contact, Some(&base));
    st.contacts.push(contact);
    created(format!("{base}/customers/{n}/contacts/{number}"), body)
}

async fn get_contact(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    Path((number, contact)): Path<(String, String)>,
) -> Response {
    let st = lock(&state);
    match st.contact_at(&number, &contact) {
        Some((_, _, i)) => {
            Json(contact_json(&st.contacts[i], Some(&base_of(&headers)))).into_response()
        }
        None => contact_not_found(),
    }
}

async fn replace_contact(
    State(state): State<SharedEconomic>,
    headers: HeaderMap,
    Path((number, contact)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    let Some((n, c, i)) = st.contact_at(&number, &contact) else {
        return contact_not_found();
    };
    let input = match parse_object(&body) {
        Ok(input) => input,
        Err(e) => return e.into_response(),
    };
    let data = match validate_contact(&input, true) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    if input["customerContactNumber"].as_i64() != Some(c) {
        return Invalid::new(
            "customerContactNumber",
            "CustomerContactNumberMismatch",
            "The contact number in the body differs from the one in the URL.",
            input.get("customerContactNumber"),
        )
        .into_response();
    }
    if let Some(owner) = input.get("customer").and_then(|o| o.get("customerNumber")) {
        if owner.as_i64() != Some(n) {
            return Invalid::new(
                "customer",
                "CustomerNumberMismatch",
                "The contact's customer differs from the one in the URL.",
                Some(owner),
            )
            .into_response();
        }
    }
    if name_taken(&st, n, data["name"].as_str().unwrap_or_default(), Some(c)) {
        return name_exists();
    }
    st.contacts[i].data = data;
    Json(contact_json(&st.contacts[i], Some(&base_of(&headers)))).into_response()
}

async fn delete_contact(
    State(state): State<SharedEconomic>,
    Path((number, contact)): Path<(String, String)>,
) -> Response {
    let mut st = lock(&state);
    let Some((n, c, i)) = st.contact_at(&number, &contact) else {
        return contact_not_found();
    };
    let linked = st.find(n).is_some_and(|ci| {
        CONTACT_REFERENCES.iter().any(|r| {
            st.customers[ci]
                .data
                .get(*r)
                .and_then(|v| v["customerContactNumber"].as_i64())
                == Some(c)
        })
    });
    if linked || st.contacts[i].on_invoice {
        return economic_error(
            StatusCode::BAD_REQUEST,
            Some("CustomerContactIsInUse"),
            "The customer contact is in use and cannot be deleted.",
            "A contact that is the customer's attention or contact, or is used on invoices, cannot be deleted.",
        );
    }
    st.contacts.remove(i);
    StatusCode::NO_CONTENT.into_response()
}

// ---------- reference data ----------

fn reference_list(
    headers: &HeaderMap,
    RawQuery(raw): RawQuery,
    path: &str,
    key: &str,
    items: &[(i64, &str)],
) -> Response {
    let q = parse_query(raw.as_deref());
    let (skip, size) = match paging(&q) {
        Ok(p) => p,
        Err(message) => return bad_request(&message),
    };
    let base = base_of(headers);
    let list: Vec<Value> = items
        .iter()
        .map(|(n, name)| json!({ key: n, "name": name, "self": format!("{base}/{path}/{n}") }))
        .collect();
    let all = list.len();
    page(list, all, skip, size, &format!("{base}/{path}"), "")
}

async fn list_groups(headers: HeaderMap, q: RawQuery) -> Response {
    reference_list(
        &headers,
        q,
        "customer-groups",
        "customerGroupNumber",
        CUSTOMER_GROUPS,
    )
}

async fn list_terms(headers: HeaderMap, q: RawQuery) -> Response {
    reference_list(
        &headers,
        q,
        "payment-terms",
        "paymentTermsNumber",
        PAYMENT_TERMS,
    )
}

async fn list_vat_zones(headers: HeaderMap, q: RawQuery) -> Response {
    reference_list(&headers, q, "vat-zones", "vatZoneNumber", VAT_ZONES)
}

/// `GET /self`: the agreement the tokens belong to (a few of e-conomic's fields).
async fn self_info(headers: HeaderMap) -> Response {
    let base = base_of(&headers);
    Json(json!({
        "agreementNumber": SANDBOX_ECONOMIC_AGREEMENT_NUMBER,
        "company": { "name": "Sandbox Åkeri ApS" },
        "application": { "name": "opter-visma-sync sandbox" },
        "self": format!("{base}/self"),
    }))
    .into_response()
}

// ---------- control ----------

async fn control_customers(State(state): State<SharedEconomic>) -> Response {
    Json(customers(&state)).into_response()
}

/// Books an invoice to the customer: it can no longer be deleted, and neither can the
/// contact that is its attention now.
async fn control_book_invoice(
    State(state): State<SharedEconomic>,
    Path(number): Path<String>,
) -> Response {
    let mut st = lock(&state);
    let Some(i) = st.customer_at(&number) else {
        return common::message(StatusCode::NOT_FOUND, "no customer with this number");
    };
    st.customers[i].booked_invoices += 1;
    let n = st.customers[i].number;
    let booked = st.customers[i].booked_invoices;
    let attention = st.customers[i]
        .data
        .get("attention")
        .and_then(|a| a["customerContactNumber"].as_i64());
    if let Some(k) = attention.and_then(|c| st.find_contact(n, c)) {
        st.contacts[k].on_invoice = true;
    }
    Json(json!({ "customerNumber": n, "bookedInvoices": booked, "attention": attention }))
        .into_response()
}

/// What the sandbox serves for this register.
pub static SIMULATOR: super::tenant::Simulator = super::tenant::Simulator {
    register: &crate::sink::economic::REGISTER,
    control: "economic",
    config_section,
    customers: super::Sandbox::economic_customers,
};

/// The e-conomic simulator's part of a tenant config.
fn config_section(
    sandbox: &super::Sandbox,
    secrets: &mut std::collections::HashMap<String, String>,
) -> String {
    let creds = sandbox.credentials();
    secrets.insert(
        "ECONOMIC_APP_SECRET_TOKEN".into(),
        creds.economic_app_secret_token,
    );
    secrets.insert(
        "ECONOMIC_AGREEMENT_GRANT_TOKEN".into(),
        creds.economic_agreement_grant_token,
    );
    format!(
        r#"api_base = "{}"
app_secret_token_env = "ECONOMIC_APP_SECRET_TOKEN"
agreement_grant_token_env = "ECONOMIC_AGREEMENT_GRANT_TOKEN""#,
        sandbox.economic_api_base(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_escapes_and_lists() {
        let p = parse_filter("customerNumber$eq:1001").unwrap();
        assert_eq!(
            (p.field, p.op, p.values.clone()),
            ("customerNumber", Op::Eq, vec!["1001".to_string()])
        );
        let p = parse_filter("name$like:Acme $$ Co").unwrap();
        assert_eq!(p.values, vec!["Acme $ Co".to_string()]);
        let p = parse_filter("customerNumber$in:[1,2,3]").unwrap();
        assert_eq!(p.values, vec!["1", "2", "3"]);
        assert!(parse_filter("name$eq:a$and:city$eq:b").is_err());
        assert!(parse_filter("telephoneAndFaxNumber$eq:1").is_err());
        assert!(parse_filter("name$is:x").is_err());
    }

    #[test]
    fn predicates_match_numbers_strings_and_wildcards() {
        let c = json!({"customerNumber": 1001, "name": "Åkeri Nord AB"});
        let yes = |f: &str| matches(&parse_filter(f).unwrap(), &c);
        assert!(yes("customerNumber$eq:1001"));
        assert!(!yes("customerNumber$eq:100"));
        assert!(yes("customerNumber$gt:1000"));
        assert!(yes("customerNumber$in:[7,1001]"));
        assert!(yes("name$eq:åkeri nord ab"));
        assert!(yes("name$like:nord"));
        assert!(yes("name$like:*AB"));
        assert!(!yes("name$like:Nord*"));
    }

    #[test]
    fn a_valid_customer_keeps_only_writable_properties() {
        let input = json!({
            "name": "Acme", "currency": "DKK", "customerGroup": {"customerGroupNumber": 1},
            "paymentTerms": {"paymentTermsNumber": 3, "self": "x"}, "vatZone": {"vatZoneNumber": 1},
            "balance": 12.5, "unknown": 1, "barred": false, "attention": {"customerContactNumber": 4},
        });
        let out = validate_customer(input.as_object().unwrap(), false).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"name": "Acme", "currency": "DKK", "customerGroup": {"customerGroupNumber": 1},
                   "paymentTerms": {"paymentTermsNumber": 3}, "vatZone": {"vatZoneNumber": 1}})
        );
    }

    #[test]
    fn invalid_customers_name_the_property_and_code() {
        let good = json!({
            "name": "Acme", "currency": "DKK", "customerGroup": {"customerGroupNumber": 1},
            "paymentTerms": {"paymentTermsNumber": 3}, "vatZone": {"vatZoneNumber": 1},
        });
        let with = |k: &str, v: Value| {
            let mut b = good.as_object().unwrap().clone();
            b.insert(k.into(), v);
            validate_customer(&b, false).unwrap_err()
        };
        let without = |k: &str| {
            let mut b = good.as_object().unwrap().clone();
            b.remove(k);
            validate_customer(&b, false).unwrap_err()
        };
        assert_eq!(without("name").code, "CustomerMissingName");
        assert_eq!(without("vatZone").code, "CustomerInvalidVatZone");
        assert_eq!(
            with("name", json!("x".repeat(256))).code,
            "CustomerInvalidName"
        );
        assert_eq!(with("name", json!(" ")).code, "CustomerMissingName");
        assert_eq!(with("currency", json!("DK")).property, "currency");
        assert_eq!(with("email", json!("a@b")).code, "CustomerInvalidEmail");
        assert_eq!(
            with("customerGroup", json!({"customerGroupNumber": 99})).code,
            "CustomerInvalidGroupId"
        );
        assert_eq!(
            with("customerNumber", json!(1_000_000_000)).code,
            "CustomerInvalidCustomerNumber"
        );
        assert_eq!(with("city", Value::Null).code, "PropertyCannotBeNull");
        assert!(validate_customer(
            with_ok(&good, "email", json!("a@b.dk c@d.se"))
                .as_object()
                .unwrap(),
            false
        )
        .is_ok());
    }

    fn with_ok(good: &Value, k: &str, v: Value) -> Value {
        let mut b = good.clone();
        b[k] = v;
        b
    }

    #[test]
    fn the_bucket_refills_over_the_window() {
        let state = new_state(EconomicConfig {
            rate_limit_per_minute: 2,
            rate_window: Duration::from_secs(60),
            fair_use_calls_per_day: 0,
            record_requests: false,
        });
        let mut st = lock(&state);
        // The header counts tokens used, as e-conomic's does.
        assert_eq!(st.take_tokens(1), Ok(Some((1, 2))));
        assert_eq!(st.take_tokens(1), Ok(Some((2, 2))));
        // One token comes back every 30 s.
        assert_eq!(st.take_tokens(1), Err(30));
        st.bucket.as_mut().unwrap().last -= Duration::from_secs(30);
        assert_eq!(st.take_tokens(1), Ok(Some((2, 2))));
        // A call that costs two waits for two.
        assert_eq!(st.take_tokens(2), Err(60));
        st.bucket.as_mut().unwrap().last -= Duration::from_secs(60);
        assert_eq!(st.take_tokens(2), Ok(Some((2, 2))));
    }

    #[test]
    fn fair_use_counts_each_agreements_calls_over_24_hours() {
        let state = new_state(EconomicConfig {
            rate_limit_per_minute: 0,
            rate_window: Duration::from_secs(60),
            fair_use_calls_per_day: 2,
            record_requests: false,
        });
        let mut st = lock(&state);
        let t0 = Instant::now();
        assert_eq!(st.count_call("a", t0), Ok(()));
        assert_eq!(st.count_call("a", t0 + Duration::from_secs(3600)), Ok(()));
        // The third within 24 hours is refused until the first leaves them.
        assert_eq!(
            st.count_call("a", t0 + Duration::from_secs(7200)),
            Err(24 * 3600 - 7200)
        );
        // Another agreement has its own.
        assert_eq!(st.count_call("b", t0 + Duration::from_secs(7200)), Ok(()));
        assert_eq!(st.count_call("a", t0 + FAIR_USE_WINDOW), Ok(()));
        assert!(st.count_call("a", t0 + FAIR_USE_WINDOW).is_err());
    }

    #[test]
    fn collection_reads_cost_two_and_other_calls_one() {
        assert_eq!(call_cost(&Method::GET, "/economic/api/customers"), 2);
        assert_eq!(
            call_cost(&Method::GET, "/economic/api/customers/7/contacts"),
            2
        );
        assert_eq!(call_cost(&Method::GET, "/economic/api/customers/7"), 1);
        assert_eq!(call_cost(&Method::POST, "/economic/api/customers"), 1);
        assert_eq!(call_cost(&Method::PUT, "/economic/api/customers/7"), 1);
    }
}
