//! Simulator of Visma.net ERP's customer API (v1) and of Visma Connect's
//! client-credentials grant (../shared/docs/visma-apis.md section 2), strict where a connector
//! could otherwise pass here and fail there.
//!
//! What it does, and the choices made where Visma documents nothing:
//! - `POST /visma-net/connect/token`: `grant_type=client_credentials`, the client by HTTP
//!   Basic or form fields, `scope` (known scopes only) and `tenant_id` (required, a
//!   GUID). A token is issued for any well-formed tenant, as Visma Connect does. API calls
//!   with a token whose tenant is not the company's ([`SANDBOX_VISMA_NET_TENANT_ID`]),
//!   e.g. the customer's tenant, answer 401 Unauthorized with the same body as an invalid
//!   token: "Both will let you authenticate through Visma Connect, but using the customer
//!   tenantId will return a 401 Unauthorized when sending requests to the Visma Net
//!   APIs" (https://docs.vismasoftware.no/vismanetapi/how-tos/fix401error/; the page
//!   shows no body, so the body is ASP.NET Web API's usual one). The company tenant
//!   [`SANDBOX_VISMA_NET_UNLICENSED_TENANT_ID`] has no licence for the API: its calls
//!   answer 403 IPPException 12027 "No license for this company." (Visma community KB:
//!   https://community.visma.com/t5/Knowledge-base-in-Developers/tkb-p/DV_CO_Vismanet_knowledgebase).
//! - Bodies are value-wrapped (`{"name": {"value": "Acme"}}`; `overrideWithClassValues`
//!   is a plain boolean); a bare value, an unknown field or a wrong type is a 400.
//!   `GET` answers plain values, the class and country as `{id, description|name}`.
//! - Create requires `number` (no automatic numbering), `name`, a known
//!   `customerClassId` ([`SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID`]) and
//!   `mainAddress.countryId`; lengths are [`CUSTOMER_FIELDS`]. A number in use answers
//!   400 `{"message": "... a customer with number '...' already exists."}`.
//! - `PUT` is partial: omitted fields stay, `{"value": null}` clears (a required field
//!   cannot be cleared), `{"value": null}` for `mainAddress`/`mainContact` clears the
//!   whole group. Unknown customer: 404.
//! - `GET /v1/customer` needs `pageNumber` and `pageSize`; a `pageSize` above
//!   [`MAX_PAGE_SIZE`] is served as that many (clamped, as Visma.net does).
//! - Rate limit per (client, tenant) in fixed windows; with a limit set, every API
//!   response past the token check carries `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//!   `X-RateLimit-Reset` (seconds until the window resets) and `X-RateLimit-Policy`
//!   ([`RATE_LIMIT_POLICY`]); over the limit: 429 with
//!   `Retry-After` and "Rate limit is exceeded. Try again in N seconds.". The faults'
//!   `rate_limit_per_minute` applies to eAccounting only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::common::{
    self, bearer, body_for_log, client_credentials, looks_like_email, now_utc, oauth_error,
    page_of, parse_form, parse_query, random_token, FixedWindows, NotAnObject, RecordSite,
    RequestLog,
};
use super::faults::{self, gateway_page, FaultEngine, FaultSite, Faults, Plan};

pub const SANDBOX_VISMA_NET_CLIENT_ID: &str = "sandbox-visma-net-client";
pub const SANDBOX_VISMA_NET_CLIENT_SECRET: &str = "sandbox-visma-net-secret";
pub const SANDBOX_VISMA_NET_TENANT_ID: &str = "3f1c0b8e-5a2d-4c7e-9b14-6d2e8f0a7c31";
/// A company tenant whose licence does not cover the API (its calls answer 12027).
pub const SANDBOX_VISMA_NET_UNLICENSED_TENANT_ID: &str = "9d4e2f10-7b3a-4c58-a1e6-0c2b5d8f4a97";
/// The sandbox company's customer class for domestic customers (Visma's own example
/// uses class "1"); the bundled mapping sends it.
pub const SANDBOX_VISMA_NET_CUSTOMER_CLASS_ID: &str = "1";

/// The scopes the sandbox's client may ask for.
pub const SANDBOX_VISMA_NET_SCOPES: &[&str] = &[
    "vismanet_erp_service_api:read",
    "vismanet_erp_service_api:create",
    "vismanet_erp_service_api:update",
    "vismanet_erp_service_api:delete",
];

/// Visma.net's rate-limit window.
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// Largest page served: a larger `pageSize` is clamped to it, not refused. Visma.net's
/// maximum is set per endpoint ("the maximum page size is configurable and the value is
/// taken from the web.config file for every GET endpoint", release note 2021-11-29), and
/// a larger one is served as the maximum ("if you try to specify a higher number, you
/// will only get 5000 records", GET Inventory, release note 2022-04-05; both at
/// https://docs.vismasoftware.no/visma-net-erp/release-notes/). The customer endpoint's
/// number is not published: 1000 is the sandbox's choice.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// The policy every rate-limited answer names in `X-RateLimit-Policy`: the standard one
/// per company and client ("4-fixed-window", https://docs.vismasoftware.no/vismanetapi/how-tos/ratelimits).
pub const RATE_LIMIT_POLICY: &str = "4-fixed-window";

/// (id, description, currency, credit terms) of the sandbox company's customer classes.
const CUSTOMER_CLASSES: &[(&str, &str, &str, &str)] = &[
    ("1", "Domestic customers", "SEK", "30"),
    ("2", "Foreign customers", "EUR", "10"),
];
/// (id, description) of the sandbox company's credit terms.
const CREDIT_TERMS: &[(&str, &str)] = &[("30", "30 days net"), ("10", "10 days net")];
/// (id, name) of the countries the sandbox company knows.
const COUNTRIES: &[(&str, &str)] = &[
    ("SE", "Sweden"),
    ("NO", "Norway"),
    ("DK", "Denmark"),
    ("FI", "Finland"),
    ("IS", "Iceland"),
    ("DE", "Germany"),
    ("NL", "Netherlands"),
    ("PL", "Poland"),
    ("EE", "Estonia"),
    ("LV", "Latvia"),
    ("LT", "Lithuania"),
    ("GB", "United Kingdom"),
];
/// Customer status values.
pub const STATUSES: &[&str] = &["Active", "OnHold", "CreditHold", "Inactive", "OneTime"];
/// The company currency, used when a customer gets no class values.
const COMPANY_CURRENCY: &str = "SEK";

/// What a customer field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSpec {
    /// A string of at most this many characters (UTF-16 code units, as .NET counts).
    Text(usize),
    Email(usize),
    /// One of [`STATUSES`].
    Status,
    /// A customer class id the company has.
    Class,
    /// A credit terms id the company has.
    Terms,
    /// A country id (ISO 3166 alpha-2) the company knows.
    Country,
}

/// Every customer field the sandbox accepts (dotted for the `mainAddress` and
/// `mainContact` groups), with what it accepts; any other field is a 400.
pub const CUSTOMER_FIELDS: &[(&str, FieldSpec)] = &[
    ("number", FieldSpec::Text(10)),
    ("name", FieldSpec::Text(255)),
    ("status", FieldSpec::Status),
    ("customerClassId", FieldSpec::Class),
    ("creditTermsId", FieldSpec::Terms),
    ("currencyId", FieldSpec::Text(5)),
    ("vatRegistrationId", FieldSpec::Text(50)),
    ("corporateId", FieldSpec::Text(50)),
    ("mainAddress.addressLine1", FieldSpec::Text(50)),
    ("mainAddress.addressLine2", FieldSpec::Text(50)),
    ("mainAddress.addressLine3", FieldSpec::Text(50)),
    ("mainAddress.postalCode", FieldSpec::Text(20)),
    ("mainAddress.city", FieldSpec::Text(50)),
    ("mainAddress.countryId", FieldSpec::Country),
    ("mainContact.name", FieldSpec::Text(255)),
    ("mainContact.attention", FieldSpec::Text(255)),
    ("mainContact.email", FieldSpec::Email(255)),
    ("mainContact.web", FieldSpec::Text(255)),
    ("mainContact.phone1", FieldSpec::Text(50)),
    ("mainContact.phone2", FieldSpec::Text(50)),
    ("mainContact.fax", FieldSpec::Text(50)),
];

/// Nested groups: `{"mainContact": {"value": {"name": {"value": ...}}}}`.
const GROUPS: &[&str] = &["mainAddress", "mainContact"];
/// The plain boolean that applies the class's values (currency, terms) when set.
const OVERRIDE_WITH_CLASS_VALUES: &str = "overrideWithClassValues";
/// Required on create, and cannot be cleared by a PUT.
pub const CUSTOMER_REQUIRED: &[&str] =
    &["number", "name", "customerClassId", "mainAddress.countryId"];

pub struct VismaNetConfig {
    /// Requests per window per client and tenant; 0 means unlimited.
    pub rate_limit_per_hour: u32,
    /// The window the limit counts in: an hour, scaled down by tests.
    pub rate_window: Duration,
    pub access_token_ttl_secs: u64,
    pub record_requests: bool,
}

struct AccessToken {
    client_id: String,
    tenant_id: String,
    scopes: Vec<String>,
    expires: Instant,
}

/// A stored customer: its fields by dotted name, as validated.
#[derive(Clone)]
struct StoredCustomer {
    internal_id: u64,
    fields: BTreeMap<String, Value>,
    created: String,
    modified: String,
}

pub struct VismaNetState {
    pub(super) faults: FaultEngine,
    config: VismaNetConfig,
    tokens: HashMap<String, AccessToken>,
    /// Fixed windows keyed by (client id, tenant id).
    windows: FixedWindows,
    /// In insertion order.
    customers: Vec<StoredCustomer>,
    next_internal_id: u64,
    requests: RequestLog,
}

pub type SharedVismaNet = Arc<Mutex<VismaNetState>>;

pub fn new_state(config: VismaNetConfig) -> SharedVismaNet {
    Arc::new(Mutex::new(VismaNetState {
        faults: FaultEngine::default(),
        config,
        tokens: HashMap::new(),
        windows: FixedWindows::default(),
        customers: Vec::new(),
        next_internal_id: 1,
        requests: RequestLog::new(),
    }))
}

/// A poisoned lock only means a handler panicked; the data is still usable.
pub fn lock(state: &SharedVismaNet) -> MutexGuard<'_, VismaNetState> {
    common::lock(state)
}

/// Stored customers as `GET /v1/customer/{number}` serves them, in insertion order.
pub fn customers(state: &SharedVismaNet) -> Vec<Value> {
    lock(state).customers.iter().map(customer_json).collect()
}

/// The request log: `seq, method, path, query, status, body` and `fault` when a fault
/// injected the status or dropped the answer. Token requests' secrets are masked.
pub fn requests(state: &SharedVismaNet) -> Vec<Value> {
    lock(state).requests.entries()
}

pub fn faults(state: &SharedVismaNet) -> Faults {
    lock(state).faults.faults().clone()
}

/// Replaces the fault configuration, re-seeding its RNG.
pub fn set_faults(state: &SharedVismaNet, faults: Faults) -> Result<(), String> {
    faults.validate()?;
    lock(state).faults = FaultEngine::new(faults);
    Ok(())
}

pub fn router(state: SharedVismaNet) -> Router {
    let api = Router::new()
        .route(
            "/visma-net/api/v1/customer",
            get(list_customers).post(create_customer),
        )
        .route(
            "/visma-net/api/v1/customer/{customerCd}",
            get(get_customer).put(update_customer),
        )
        .route(
            "/visma-net/api/v1/customerclass",
            get(list_customer_classes),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), api_guard))
        // Outside the token check: injected failures come before authentication.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            faults::fault_guard::<SharedVismaNet>,
        ));
    let connect = Router::new()
        .route("/visma-net/connect/token", post(token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            faults::token_fault_guard::<SharedVismaNet>,
        ));
    let logged = api.merge(connect).layer(middleware::from_fn_with_state(
        state.clone(),
        common::record::<VismaNetState>,
    ));
    let control = Router::new()
        .route("/_sandbox/visma-net/customers", get(control_customers))
        .route(
            "/_sandbox/visma-net/requests",
            get(common::control_requests::<VismaNetState>)
                .delete(common::control_clear_requests::<VismaNetState>),
        )
        .route(
            "/_sandbox/visma-net/expire-tokens",
            post(control_expire_tokens),
        );
    logged.merge(control).with_state(state)
}

impl FaultSite for SharedVismaNet {
    fn plan(&self, customer_write: bool) -> Plan {
        lock(self).faults.plan(customer_write)
    }

    fn is_customer_path(path: &str) -> bool {
        path.starts_with("/visma-net/api/v1/customer")
    }

    fn token_fault(&self) -> faults::TokenFault {
        lock(self).faults.faults().token.clone()
    }

    fn injected(status: u16, retry_after_secs: u64) -> Response {
        match status {
            429 => throttled(retry_after_secs),
            500 => ipp_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "",
                "An error has occurred.",
            ),
            _ => gateway_page(status),
        }
    }
}

// ---------- error bodies ----------

/// `{"ExceptionType": "IPPException", ...}` as Visma.net sends it.
fn ipp_error(status: StatusCode, fault_code: &str, message: &str) -> Response {
    let id = Uuid::new_v4();
    let body = json!({
        "ExceptionType": "IPPException",
        "ExceptionMessage": message,
        "ExceptionFaultCode": fault_code,
        "ExceptionMessageID": format!("{fault_code}_{id}"),
        "ExceptionDetails": "",
    });
    (status, Json(body)).into_response()
}

/// `{"message": "VismaId: <id>. <text>"}`, Visma.net's validation answer.
fn message_error(status: StatusCode, text: impl std::fmt::Display) -> Response {
    common::message(status, format!("VismaId: {}. {text}", Uuid::new_v4()))
}

fn throttled(retry_after_secs: u64) -> Response {
    let mut resp = common::message(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Rate limit is exceeded. Try again in {retry_after_secs} seconds."),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

fn not_found() -> Response {
    message_error(StatusCode::NOT_FOUND, "Customer not found.")
}

/// A missing, expired or unknown token, or one for a tenant that is not a company.
fn unauthorized() -> Response {
    let mut resp = common::message(
        StatusCode::UNAUTHORIZED,
        "Authorization has been denied for this request.",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

// ---------- middleware ----------

/// Every /visma-net request is recorded (token calls included, secrets masked).
impl RecordSite for VismaNetState {
    fn recording(&self) -> bool {
        self.config.record_requests
    }

    fn log(&mut self) -> &mut RequestLog {
        &mut self.requests
    }

    fn too_large() -> Response {
        message_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.")
    }

    fn logged_body(path: &str, bytes: &[u8]) -> Value {
        if path.ends_with("/connect/token") {
            form_for_log(bytes)
        } else {
            body_for_log(bytes)
        }
    }
}

/// A token request's form, with the client secret masked.
fn form_for_log(bytes: &[u8]) -> Value {
    let form: Map<String, Value> = url::form_urlencoded::parse(bytes)
        .map(|(k, v)| {
            let v = if k == "client_secret" {
                "***".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), Value::String(v))
        })
        .collect();
    Value::Object(form)
}

/// What the rate limit says about one call.
struct Quota {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
    exceeded: bool,
}

impl Quota {
    fn headers(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set("x-ratelimit-limit", self.limit.to_string());
        set("x-ratelimit-remaining", self.remaining.to_string());
        set("x-ratelimit-reset", self.reset_secs.to_string());
        set("x-ratelimit-policy", RATE_LIMIT_POLICY.to_string());
    }
}

impl VismaNetState {
    /// Counts one call of (client, tenant); `None` when there is no limit.
    fn take_quota(&mut self, client_id: &str, tenant_id: &str) -> Option<Quota> {
        let limit = self.config.rate_limit_per_hour;
        if limit == 0 {
            return None;
        }
        let (count, reset_secs) = self
            .windows
            .count((client_id, tenant_id), self.config.rate_window);
        Some(Quota {
            limit,
            remaining: limit.saturating_sub(count),
            reset_secs,
            exceeded: count > limit,
        })
    }
}

/// The scope a method needs.
fn scope_for(method: &Method) -> &'static str {
    match *method {
        Method::POST => "vismanet_erp_service_api:create",
        Method::PUT => "vismanet_erp_service_api:update",
        Method::DELETE => "vismanet_erp_service_api:delete",
        _ => "vismanet_erp_service_api:read",
    }
}

/// Bearer token, then the (client, tenant) rate limit, then the tenant's licence, then
/// the scope. Calls without a valid token are not counted (there is no one to count
/// them against) and carry no rate headers; every other answer does.
async fn api_guard(State(state): State<SharedVismaNet>, req: Request, next: Next) -> Response {
    let token = bearer(req.headers());
    let needed = scope_for(req.method());
    let (refused, quota) = {
        let mut st = lock(&state);
        let now = Instant::now();
        let Some((client, tenant, scopes)) = token
            .and_then(|t| st.tokens.get(&t))
            .filter(|t| now < t.expires)
            .map(|t| (t.client_id.clone(), t.tenant_id.clone(), t.scopes.clone()))
            // A token for a tenant that is no company here (the customer's tenant) is
            // refused like an invalid one.
            .filter(|(_, tenant, _)| {
                [
                    SANDBOX_VISMA_NET_TENANT_ID,
                    SANDBOX_VISMA_NET_UNLICENSED_TENANT_ID,
                ]
                .iter()
                .any(|t| tenant.eq_ignore_ascii_case(t))
            })
        else {
            return unauthorized();
        };
        let quota = st.take_quota(&client, &tenant);
        let refused = if let Some(q) = quota.as_ref().filter(|q| q.exceeded) {
            Some(throttled(q.reset_secs))
        } else if !tenant.eq_ignore_ascii_case(SANDBOX_VISMA_NET_TENANT_ID) {
            Some(ipp_error(
                StatusCode::FORBIDDEN,
                "12027",
                "No license for this company.",
            ))
        } else if !scopes.iter().any(|s| s == needed) {
            Some(message_error(
                StatusCode::FORBIDDEN,
                format!("Insufficient scope: {needed} is required."),
            ))
        } else {
            None
        };
        (refused, quota)
    };
    let mut resp = match refused {
        Some(resp) => resp,
        None => next.run(req).await,
    };
    if let Some(q) = quota {
        q.headers(resp.headers_mut());
    }
    resp
}

// ---------- Visma Connect (client credentials) ----------

async fn token(State(state): State<SharedVismaNet>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let client = client_credentials(&headers, &form);
    let known = client.as_ref().is_some_and(|(id, secret)| {
        id == SANDBOX_VISMA_NET_CLIENT_ID && secret == SANDBOX_VISMA_NET_CLIENT_SECRET
    });
    if !known {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("grant_type is required"),
            )
        }
    }
    let tenant_id = match form.get("tenant_id").map(|t| t.trim()) {
        None | Some("") => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("tenant_id is required"),
            )
        }
        Some(t) if Uuid::parse_str(t).is_err() => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("tenant_id must be a GUID"),
            )
        }
        Some(t) => t.to_string(),
    };
    let scopes: Vec<String> = form
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            Some("scope is required"),
        );
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| !SANDBOX_VISMA_NET_SCOPES.contains(&s.as_str()))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            Some(&format!("unknown scope {bad}")),
        );
    }
    let access = random_token(64);
    let mut st = lock(&state);
    let ttl = st.config.access_token_ttl_secs;
    st.tokens.insert(
        access.clone(),
        AccessToken {
            client_id: SANDBOX_VISMA_NET_CLIENT_ID.to_string(),
            tenant_id,
            scopes: scopes.clone(),
            expires: Instant::now() + Duration::from_secs(ttl),
        },
    );
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scopes.join(" "),
    }))
    .into_response()
}

// ---------- customers ----------

/// A customer in the shape `GET` serves: plain values, class, terms and country as
/// objects.
fn customer_json(c: &StoredCustomer) -> Value {
    let f = |name: &str| c.fields.get(name).cloned().unwrap_or(Value::Null);
    let group = |prefix: &str| -> Map<String, Value> {
        CUSTOMER_FIELDS
            .iter()
            .filter_map(|(name, _)| name.strip_prefix(prefix))
            .filter(|sub| *sub != "countryId")
            .map(|sub| (sub.to_string(), f(&format!("{prefix}{sub}"))))
            .collect()
    };
    let mut address = group("mainAddress.");
    address.insert(
        "country".into(),
        lookup(COUNTRIES, &f("mainAddress.countryId"))
            .map(|(id, name)| json!({ "id": id, "name": name }))
            .unwrap_or(Value::Null),
    );
    json!({
        "internalId": c.internal_id,
        "number": f("number"),
        "name": f("name"),
        "status": f("status"),
        "customerClass": CUSTOMER_CLASSES
            .iter()
            .find(|k| Some(k.0) == f("customerClassId").as_str())
            .map(|k| json!({ "id": k.0, "description": k.1 }))
            .unwrap_or(Value::Null),
        "creditTerms": lookup(CREDIT_TERMS, &f("creditTermsId"))
            .map(|(id, d)| json!({ "id": id, "description": d }))
            .unwrap_or(Value::Null),
        "currencyId": f("currencyId"),
        "vatRegistrationId": f("vatRegistrationId"),
        "corporateId": f("corporateId"),
        "mainAddress": address,
        "mainContact": group("mainContact."),
        "createdDateTime": c.created,
        "lastModifiedDateTime": c.modified,
    })
}

fn lookup(
    table: &[(&'static str, &'static str)],
    id: &Value,
) -> Option<(&'static str, &'static str)> {
    let id = id.as_str()?;
    table.iter().copied().find(|(k, _)| *k == id)
}

/// One parsed write: field (dotted) -> new value (`Null` clears); a group name with
/// `Null` clears the whole group.
#[derive(Debug, Default, PartialEq)]
pub struct Patch {
    pub fields: BTreeMap<String, Value>,
    pub override_with_class_values: Option<bool>,
}

fn spec(name: &str) -> Option<FieldSpec> {
    CUSTOMER_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
}

/// `{"value": x}` -> x; anything else is the error Visma.net gives a bare value.
fn unwrap_value<'a>(name: &str, slot: &'a Value) -> Result<&'a Value, String> {
    match slot.as_object() {
        Some(o) if o.len() == 1 && o.contains_key("value") => Ok(&o["value"]),
        _ => Err(format!(
            "{name}: expected a value object {{\"value\": ...}}, got {}",
            kind_of(slot)
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a value-wrapped `CustomerUpdateDto` and checks every value against
/// `CUSTOMER_FIELDS`. The error is the first problem, as "<field>: <what is wrong>".
pub fn parse_customer(body: &Map<String, Value>) -> Result<Patch, String> {
    let mut patch = Patch::default();
    for (key, slot) in body {
        if key == OVERRIDE_WITH_CLASS_VALUES {
            match slot {
                Value::Bool(b) => patch.override_with_class_values = Some(*b),
                Value::Null => {}
                other => {
                    return Err(format!(
                        "{key}: must be true or false, got {}",
                        kind_of(other)
                    ))
                }
            }
        } else if GROUPS.contains(&key.as_str()) {
            match unwrap_value(key, slot)? {
                Value::Null => {
                    patch.fields.insert(key.clone(), Value::Null);
                }
                Value::Object(inner) => {
                    for (sub, sub_slot) in inner {
                        let name = format!("{key}.{sub}");
                        let Some(spec) = spec(&name) else {
                            return Err(format!("{name}: unknown field"));
                        };
                        let value = unwrap_value(&name, sub_slot)?;
                        check(&name, spec, value)?;
                        patch.fields.insert(name, value.clone());
                    }
                }
                other => return Err(format!("{key}: must be an object, got {}", kind_of(other))),
            }
        } else if let Some(spec) = spec(key).filter(|_| !key.contains('.')) {
            let value = unwrap_value(key, slot)?;
            check(key, spec, value)?;
            patch.fields.insert(key.clone(), value.clone());
        } else {
            return Err(format!("{key}: unknown field"));
        }
    }
    Ok(patch)
}

/// One value against its field's rule; `Null` always passes here (required fields are
/// checked on the whole customer).
fn check(name: &str, spec: FieldSpec, value: &Value) -> Result<(), String> {
    let s = match value {
        Value::Null => return Ok(()),
        Value::String(s) => s.as_str(),
        other => return Err(format!("{name}: must be a string, got {}", kind_of(other))),
    };
    let len = s.encode_utf16().count();
    match spec {
        FieldSpec::Text(max) | FieldSpec::Email(max) if len > max => Err(format!(
            "{name}: must be at most {max} characters, got {len}"
        )),
        FieldSpec::Email(_) if !s.is_empty() && !looks_like_email(s) => {
            Err(format!("{name}: is not a valid email address"))
        }
        FieldSpec::Status if !STATUSES.contains(&s) => {
            Err(format!("{name}: must be one of {}", STATUSES.join(", ")))
        }
        FieldSpec::Class if !CUSTOMER_CLASSES.iter().any(|c| c.0 == s) => {
            Err(format!("{name}: unknown customer class '{s}'"))
        }
        FieldSpec::Terms if !CREDIT_TERMS.iter().any(|t| t.0 == s) => {
            Err(format!("{name}: unknown credit terms '{s}'"))
        }
        FieldSpec::Country if !COUNTRIES.iter().any(|c| c.0 == s) => {
            Err(format!("{name}: unknown country '{s}'"))
        }
        _ => Ok(()),
    }
}

/// Applies a patch to a customer's fields, then the class's values when asked to.
fn apply(fields: &mut BTreeMap<String, Value>, patch: &Patch) {
    for (name, value) in &patch.fields {
        if GROUPS.contains(&name.as_str()) {
            let prefix = format!("{name}.");
            fields.retain(|k, _| !k.starts_with(&prefix));
            continue;
        }
        match value {
            Value::Null => fields.remove(name),
            v => fields.insert(name.clone(), v.clone()),
        };
    }
    if patch.override_with_class_values == Some(true) {
        let class = fields.get("customerClassId").and_then(Value::as_str);
        if let Some(&(_, _, currency, terms)) = CUSTOMER_CLASSES.iter().find(|c| Some(c.0) == class)
        {
            fields.insert("currencyId".into(), json!(currency));
            fields.insert("creditTermsId".into(), json!(terms));
        }
    }
}

/// The first required field missing or blank.
fn missing_required(fields: &BTreeMap<String, Value>) -> Option<&'static str> {
    CUSTOMER_REQUIRED.iter().copied().find(|f| {
        fields
            .get(*f)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
    })
}

/// The body as a patch; the error is the 400's message.
fn parse_body(body: &[u8]) -> Result<Patch, String> {
    match common::json_object(body) {
        Ok(map) => parse_customer(&map),
        Err(NotAnObject::Other) => Err("The request body must be a JSON object.".into()),
        Err(NotAnObject::Invalid(e)) => Err(format!("The request body is not valid JSON ({e}).")),
    }
}

fn find(st: &VismaNetState, number: &str) -> Option<usize> {
    st.customers
        .iter()
        .position(|c| c.fields.get("number").and_then(Value::as_str) == Some(number))
}

async fn list_customers(State(state): State<SharedVismaNet>, RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref());
    // The error is the 400's message.
    let positive = |name: &str, max: u64| -> Result<u64, String> {
        match q.get(name).map(|v| v.parse::<u64>()) {
            None => Err(format!(
                "{name} is required: paging parameters pageNumber and pageSize are mandatory."
            )),
            Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(format!("{name} must be a whole number from 1 to {max}.")),
        }
    };
    let (page, size) = match (
        positive("pageNumber", u64::MAX),
        positive("pageSize", u64::MAX),
    ) {
        (Ok(p), Ok(s)) => (p, s.min(MAX_PAGE_SIZE)),
        (Err(m), _) | (_, Err(m)) => return message_error(StatusCode::BAD_REQUEST, m),
    };
    let name = q.get("name");
    let email = q.get("email");
    let st = lock(&state);
    let matching = st
        .customers
        .iter()
        .filter(|c| name.is_none_or(|n| c.fields.get("name").and_then(Value::as_str) == Some(n)))
        .filter(|c| {
            email.is_none_or(|e| {
                c.fields.get("mainContact.email").and_then(Value::as_str) == Some(e)
            })
        });
    let items: Vec<Value> = page_of(matching, page - 1, size)
        .into_iter()
        .map(customer_json)
        .collect();
    Json(items).into_response()
}

async fn get_customer(State(state): State<SharedVismaNet>, Path(number): Path<String>) -> Response {
    let st = lock(&state);
    match find(&st, &number) {
        Some(i) => Json(customer_json(&st.customers[i])).into_response(),
        None => not_found(),
    }
}

async fn create_customer(
    State(state): State<SharedVismaNet>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let patch = match parse_body(&body) {
        Ok(p) => p,
        Err(m) => return message_error(StatusCode::BAD_REQUEST, m),
    };
    let mut fields = BTreeMap::new();
    fields.insert("status".to_string(), json!("Active"));
    fields.insert("currencyId".to_string(), json!(COMPANY_CURRENCY));
    apply(&mut fields, &patch);
    if let Some(f) = missing_required(&fields) {
        return message_error(StatusCode::BAD_REQUEST, format!("{f}: is required."));
    }
    let number = fields["number"].as_str().unwrap_or_default().to_string();
    let mut st = lock(&state);
    if find(&st, &number).is_some() {
        return message_error(
            StatusCode::BAD_REQUEST,
            format!("Error creating customer: a customer with number '{number}' already exists."),
        );
    }
    let now = now_utc();
    let internal_id = st.next_internal_id;
    st.next_internal_id += 1;
    st.customers.push(StoredCustomer {
        internal_id,
        fields,
        created: now.clone(),
        modified: now,
    });
    drop(st);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location(&headers, &number))],
    )
        .into_response()
}

/// `http://{host}/visma-net/api/v1/customer/{number}`, the number path-encoded.
fn location(headers: &HeaderMap, number: &str) -> String {
    let host = common::origin(headers);
    match url::Url::parse(&format!("http://{host}/visma-net/api/v1/customer")) {
        Ok(mut url) => {
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.push(number);
            }
            url.to_string()
        }
        Err(_) => format!("/visma-net/api/v1/customer/{number}"),
    }
}

/// Partial update: omitted fields stay as they are.
async fn update_customer(
    State(state): State<SharedVismaNet>,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    if find(&lock(&state), &number).is_none() {
        return not_found();
    }
    let patch = match parse_body(&body) {
        Ok(p) => p,
        Err(m) => return message_error(StatusCode::BAD_REQUEST, m),
    };
    if let Some(given) = patch.fields.get("number") {
        if given.as_str() != Some(number.as_str()) {
            return message_error(
                StatusCode::BAD_REQUEST,
                "number: a customer's number cannot be changed.",
            );
        }
    }
    let mut st = lock(&state);
    // Gone meanwhile? Say so rather than resurrect it.
    let Some(i) = find(&st, &number) else {
        return not_found();
    };
    let mut fields = st.customers[i].fields.clone();
    apply(&mut fields, &patch);
    if let Some(f) = missing_required(&fields) {
        return message_error(
            StatusCode::BAD_REQUEST,
            format!("{f}: is required and cannot be cleared."),
        );
    }
    let customer = &mut st.customers[i];
    customer.fields = fields;
    customer.modified = now_utc();
    StatusCode::NO_CONTENT.into_response()
}

// ---------- control ----------

/// `GET /v1/customerclass`: the company's customer classes (id and description).
async fn list_customer_classes() -> Response {
    let classes: Vec<Value> = CUSTOMER_CLASSES
        .iter()
        .map(|(id, description, _, _)| json!({ "id": id, "description": description }))
        .collect();
    Json(classes).into_response()
}

async fn control_customers(State(state): State<SharedVismaNet>) -> Response {
    Json(customers(&state)).into_response()
}

async fn control_expire_tokens(State(state): State<SharedVismaNet>) -> Response {
    let mut st = lock(&state);
    common::expire_tokens(st.tokens.values_mut().map(|t| &mut t.expires))
}

/// What the sandbox serves for this register.
pub static SIMULATOR: super::tenant::Simulator = super::tenant::Simulator {
    register: &crate::sink::visma_net::REGISTER,
    control: "visma-net",
    config_section,
    customers: super::Sandbox::visma_net_customers,
};

/// The Visma.net simulator's part of a tenant config.
fn config_section(
    sandbox: &super::Sandbox,
    secrets: &mut std::collections::HashMap<String, String>,
) -> String {
    let creds = sandbox.credentials();
    secrets.insert(
        "VISMA_NET_CLIENT_SECRET".into(),
        creds.visma_net_client_secret,
    );
    format!(
        r#"api_base = "{}"
token_url = "{}"
client_id = "{}"
client_secret_env = "VISMA_NET_CLIENT_SECRET"
tenant_id = "{}""#,
        sandbox.visma_net_api_base(),
        sandbox.visma_net_token_url(),
        creds.visma_net_client_id,
        creds.visma_net_tenant_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::FieldKind;

    fn parse(v: Value) -> Result<Patch, String> {
        parse_customer(v.as_object().unwrap())
    }

    #[test]
    fn bare_values_and_unknown_fields_are_refused() {
        let e = parse(json!({"name": "Acme"})).unwrap_err();
        assert!(e.starts_with("name: expected a value object"), "{e}");
        let e = parse(json!({"mainContact": {"name": {"value": "Ann"}}})).unwrap_err();
        assert!(e.starts_with("mainContact: expected a value object"), "{e}");
        let e = parse(json!({"mainContact": {"value": {"name": "Ann"}}})).unwrap_err();
        assert!(e.starts_with("mainContact.name: expected"), "{e}");
        let e = parse(json!({"phone": {"value": "070"}})).unwrap_err();
        assert_eq!(e, "phone: unknown field");
        let e = parse(json!({"mainContact": {"value": {"mobile": {"value": "070"}}}})).unwrap_err();
        assert_eq!(e, "mainContact.mobile: unknown field");
        let e = parse(json!({"overrideWithClassValues": {"value": true}})).unwrap_err();
        assert!(
            e.starts_with("overrideWithClassValues: must be true or false"),
            "{e}"
        );
    }

    #[test]
    fn values_are_checked_against_the_field_rules() {
        let too_long = "x".repeat(11);
        for (body, want) in [
            (
                json!({"number": {"value": too_long}}),
                "number: must be at most 10 characters, got 11",
            ),
            (
                json!({"status": {"value": "Closed"}}),
                "status: must be one of",
            ),
            (
                json!({"customerClassId": {"value": "9"}}),
                "customerClassId: unknown customer class",
            ),
            (
                json!({"mainAddress": {"value": {"countryId": {"value": "XX"}}}}),
                "mainAddress.countryId: unknown country",
            ),
            (
                json!({"mainContact": {"value": {"email": {"value": "ann(at)acme"}}}}),
                "mainContact.email: is not a valid email",
            ),
            (json!({"name": {"value": 5}}), "name: must be a string"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
        // Lengths count UTF-16 units: 255 'Å' pass, 256 do not.
        assert!(parse(json!({"name": {"value": "Å".repeat(255)}})).is_ok());
        assert!(parse(json!({"name": {"value": "Å".repeat(256)}})).is_err());
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let mut fields = BTreeMap::new();
        let full = parse(json!({
            "number": {"value": "K1"}, "name": {"value": "Acme"},
            "customerClassId": {"value": "1"}, "overrideWithClassValues": true,
            "mainAddress": {"value": {"countryId": {"value": "SE"}, "city": {"value": "Umeå"}}},
            "mainContact": {"value": {"name": {"value": "Ann"}, "phone1": {"value": "070"}}},
        }))
        .unwrap();
        apply(&mut fields, &full);
        assert_eq!(fields["currencyId"], "SEK");
        assert_eq!(fields["creditTermsId"], "30");
        apply(
            &mut fields,
            &parse(json!({"mainContact": {"value": {"name": {"value": null}}}})).unwrap(),
        );
        assert!(!fields.contains_key("mainContact.name"));
        assert_eq!(fields["mainContact.phone1"], "070");
        assert_eq!(fields["mainAddress.city"], "Umeå");
        assert_eq!(missing_required(&fields), None);
        apply(
            &mut fields,
            &parse(json!({"mainContact": {"value": null}})).unwrap(),
        );
        assert!(!fields.contains_key("mainContact.phone1"));
        apply(
            &mut fields,
            &parse(json!({"name": {"value": null}})).unwrap(),
        );
        assert_eq!(missing_required(&fields), Some("name"));
    }

    #[test]
    fn the_sinks_limits_agree_with_the_simulators() {
        for rule in crate::sink::visma_net::RULES.fields {
            if rule.name == OVERRIDE_WITH_CLASS_VALUES {
                assert_eq!(rule.kind, FieldKind::Bool);
                continue;
            }
            let spec = spec(rule.name).unwrap_or_else(|| panic!("{} unknown here", rule.name));
            match (rule.kind, spec) {
                (FieldKind::Text { max_chars }, FieldSpec::Text(max))
                | (FieldKind::Email { max_chars }, FieldSpec::Email(max)) => {
                    assert_eq!(max_chars, max, "{}", rule.name)
                }
                (FieldKind::Text { max_chars }, FieldSpec::Status) => {
                    assert!(STATUSES.iter().all(|s| s.len() <= max_chars))
                }
                (FieldKind::Text { max_chars }, FieldSpec::Class) => {
                    assert!(CUSTOMER_CLASSES.iter().all(|c| c.0.len() <= max_chars))
                }
                (FieldKind::Text { max_chars }, FieldSpec::Country) => assert_eq!(max_chars, 2),
                other => panic!("{}: {other:?}", rule.name),
            }
            assert_eq!(
                rule.required,
                CUSTOMER_REQUIRED.contains(&rule.name) && rule.name != "number",
                "{}",
                rule.name
            );
        }
    }
}
