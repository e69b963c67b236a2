//! Simulator of Visma eAccounting's customer API (v2) and of Visma Connect's OAuth2
//! endpoints, strict where the real service is strict (../shared/docs/visma-apis.md section 1,
//! swagger `CustomerApi`), so that a connector that passes here has no surprises there.
//!
//! The validation rules are written out below as tables; a test checks them against
//! Visma's swagger when `../shared` is present.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::common::{
    self, base64url_nopad, bearer, client_credentials, looks_like_email, now_utc, number_param,
    page_of, parse_form, parse_query, random_token, FixedWindows, NotAnObject, RecordSite,
    RequestLog,
};
use super::faults::{self, gateway_page, FaultEngine, FaultSite, Faults, Plan};

pub const SANDBOX_CLIENT_ID: &str = "sandbox-client-id";
pub const SANDBOX_CLIENT_SECRET: &str = "sandbox-client-secret";
/// The scopes of the sandbox's initial refresh token, as Visma grants them to a sales
/// integration. A login gets the scopes its authorize request asked for.
pub const SANDBOX_SCOPE: &str = "ea:api offline_access ea:sales";

/// The scopes Visma's identity server knows for eAccounting ("Scopes",
/// https://developer.vismaonline.com/docs/authentication); any other is refused.
pub const KNOWN_SCOPES: &[&str] = &[
    "ea:api",
    "offline_access",
    "ea:sales",
    "ea:sales_readonly",
    "ea:accounting",
    "ea:accounting_readonly",
    "ea:purchase",
    "ea:purchase_readonly",
    "vls:api",
    "openid",
];

/// Default terms of payment ("30 dagar netto"); the other terms are listed in `TERMS`.
pub const SANDBOX_TERMS_OF_PAYMENT_ID: &str = "8f3c2a61-1b7e-4d2a-9c55-3e0f6a1d2b30";

/// (Id, Name, NameEnglish, NumberOfDays, TermsOfPaymentTypeId, TermsOfPaymentTypeText)
const TERMS: &[(&str, &str, &str, i64, i64, &str)] = &[
    (
        SANDBOX_TERMS_OF_PAYMENT_ID,
        "30 dagar netto",
        "30 days net",
        30,
        0,
        "Normal",
    ),
    (
        "5d0b7c44-8e21-4f6a-a3d9-71c2e8b4f610",
        "10 dagar netto",
        "10 days net",
        10,
        0,
        "Normal",
    ),
    (
        "c1a9e3f7-46b2-4e8d-b0f5-92d7a6c3e851",
        "Kontant",
        "Cash",
        0,
        2,
        "Cash",
    ),
];

/// Every string field of `CustomerApi` with its swagger maxLength.
/// Lengths count UTF-16 code units, as .NET's `string.Length` does.
pub const CUSTOMER_STRING_LIMITS: &[(&str, usize)] = &[
    ("CustomerNumber", 16),
    ("CorporateIdentityNumber", 20),
    ("ContactPersonEmail", 255),
    ("ContactPersonMobile", 50),
    ("ContactPersonName", 100),
    ("ContactPersonPhone", 50),
    ("CurrencyCode", 3),
    ("GLN", 255),
    ("EmailAddress", 255),
    ("InvoiceAddress1", 50),
    ("InvoiceAddress2", 50),
    ("InvoiceCity", 50),
    ("InvoiceCountryCode", 2),
    ("InvoicePostalCode", 10),
    ("DeliveryCustomerName", 100),
    ("DeliveryAddress1", 50),
    ("DeliveryAddress2", 50),
    ("DeliveryCity", 50),
    ("DeliveryCountryCode", 2),
    ("DeliveryPostalCode", 10),
    ("Name", 50),
    ("Note", 4000),
    ("MobilePhone", 50),
    ("Telephone", 50),
    ("VatNumber", 20),
    ("WwwAddress", 255),
    ("EdiGlnNumber", 255),
    ("SalesDocumentLanguage", 2),
    ("ElectronicAddress", 255),
    ("ElectronicReference", 35),
    ("EdiServiceDelivererId", 255),
];

/// `CustomerApi.required`, checked in this order (the first failure is reported).
pub const CUSTOMER_REQUIRED: &[&str] = &[
    "Name",
    "InvoiceCity",
    "InvoicePostalCode",
    "TermsOfPaymentId",
    "IsPrivatePerson",
    "IsActive",
];

/// Server-set fields: ignored on input.
pub const CUSTOMER_READ_ONLY: &[&str] = &[
    "Id",
    "PayToAccountId",
    "TermsOfPayment",
    "LastInvoiceDate",
    "ChangedUtc",
    "IsFutureInvoiceDateAllowed",
];

const UUID_FIELDS: &[&str] = &["TermsOfPaymentId", "DeliveryMethodId", "DeliveryTermId"];
const BOOL_FIELDS: &[&str] = &[
    "ReverseChargeOnConstructionServices",
    "IsPrivatePerson",
    "IsNorthernIreland",
    "IsActive",
    "ForceBookkeepVat",
];
const DATE_FIELDS: &[&str] = &[
    "AutoInvoiceActivationEmailSentDate",
    "AutoInvoiceRegistrationRequestSentDate",
];
const EMAIL_FIELDS: &[&str] = &["ContactPersonEmail", "EmailAddress"];
/// Fields `$filter` accepts (`Field eq 'value'`); the docs see Name and EmailAddress in use.
const FILTERABLE: &[&str] = &["CustomerNumber", "Name", "EmailAddress"];

/// `$pagesize` when absent (Visma's default is undocumented; 50 is what clients see).
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Bigger `$pagesize` is refused with 6000 rather than clamped, so a client that
/// relies on huge pages notices here, not in production.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// Authorization codes live 10 minutes (RFC 6749 4.1.2's recommended maximum).
const AUTH_CODE_TTL: Duration = Duration::from_secs(600);
/// Visma's rate-limit window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

pub struct VismaConfig {
    pub rate_limit_per_minute: u32,
    /// The rate limit's window: a minute, as Visma's; tests scale it down to keep
    /// rate-limit runs short (the limit then counts per shorter window).
    pub rate_window: Duration,
    pub access_token_ttl_secs: u64,
    pub record_requests: bool,
}

struct PendingCode {
    client_id: String,
    scopes: Vec<String>,
    redirect_uri: String,
    code_challenge: Option<String>,
    expires: Instant,
}

struct AccessToken {
    client_id: String,
    scopes: Vec<String>,
    expires: Instant,
}

/// A refresh token's client and the scopes it was granted (kept on rotation).
struct RefreshGrant {
    client_id: String,
    scopes: Vec<String>,
}

pub struct VismaState {
    client_id: String,
    client_secret: String,
    config: VismaConfig,
    /// Unused refresh tokens and their client; a token is removed when used.
    refresh_tokens: HashMap<String, RefreshGrant>,
    access_tokens: HashMap<String, AccessToken>,
    auth_codes: HashMap<String, PendingCode>,
    /// Stored `CustomerApi` objects in insertion order.
    customers: Vec<Value>,
    /// Position of each customer by id, and id by customer number, so one write costs
    /// the same whether the register holds ten customers or a hundred thousand.
    index_by_id: HashMap<String, usize>,
    id_by_number: HashMap<String, String>,
    /// Highest numeric customer number, for the next automatic one.
    highest_number: u64,
    /// Ids of customers marked as having transactions (cannot be deleted).
    with_transactions: HashSet<String>,
    /// Fixed windows keyed by (client id, path template).
    windows: FixedWindows,
    requests: RequestLog,
    /// The rate limit given at start; faults may replace it for a while.
    base_rate_limit: u32,
    /// Fault injection for `/visma/v2` (see `faults.rs`).
    pub(super) faults: FaultEngine,
}

pub type SharedVisma = Arc<Mutex<VismaState>>;

/// New state and its initial refresh token.
pub fn new_state(config: VismaConfig) -> (SharedVisma, String) {
    let refresh = random_token(48);
    let mut refresh_tokens = HashMap::new();
    refresh_tokens.insert(
        refresh.clone(),
        RefreshGrant {
            client_id: SANDBOX_CLIENT_ID.to_string(),
            scopes: SANDBOX_SCOPE.split(' ').map(String::from).collect(),
        },
    );
    let base_rate_limit = config.rate_limit_per_minute;
    let state = VismaState {
        client_id: SANDBOX_CLIENT_ID.to_string(),
        client_secret: SANDBOX_CLIENT_SECRET.to_string(),
        config,
        refresh_tokens,
        access_tokens: HashMap::new(),
        auth_codes: HashMap::new(),
        customers: Vec::new(),
        index_by_id: HashMap::new(),
        id_by_number: HashMap::new(),
        highest_number: 0,
        with_transactions: HashSet::new(),
        windows: FixedWindows::default(),
        requests: RequestLog::new(),
        base_rate_limit,
        faults: FaultEngine::default(),
    };
    (Arc::new(Mutex::new(state)), refresh)
}

/// A poisoned lock only means a handler panicked; the data is still usable.
pub fn lock(state: &SharedVisma) -> MutexGuard<'_, VismaState> {
    common::lock(state)
}

/// Stored customers, in insertion order.
pub fn customers(state: &SharedVisma) -> Vec<Value> {
    lock(state).customers.clone()
}

/// The request log.
pub fn requests(state: &SharedVisma) -> Vec<Value> {
    lock(state).requests.entries()
}

/// The current fault configuration.
pub fn faults(state: &SharedVisma) -> Faults {
    lock(state).faults.faults().clone()
}

/// Replaces the fault configuration, re-seeding its RNG. The rate limit becomes
/// `faults.rate_limit_per_minute`, or the one given at start when that is None; when
/// it changes, the rate windows start afresh.
pub fn set_faults(state: &SharedVisma, faults: Faults) -> Result<(), String> {
    faults.validate()?;
    let mut st = lock(state);
    let limit = faults.rate_limit_per_minute.unwrap_or(st.base_rate_limit);
    if limit != st.config.rate_limit_per_minute {
        st.config.rate_limit_per_minute = limit;
        st.windows.clear();
    }
    st.faults = FaultEngine::new(faults);
    Ok(())
}

impl VismaState {
    /// An access token with these scopes, and a refresh token only with
    /// `offline_access` ("Must be used to be able to receive a refresh token").
    fn issue_tokens(&mut self, client_id: &str, scopes: Vec<String>) -> Value {
        let access = random_token(64);
        let ttl = self.config.access_token_ttl_secs;
        let scope = scopes.join(" ");
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                client_id: client_id.to_string(),
                scopes: scopes.clone(),
                expires: Instant::now() + Duration::from_secs(ttl),
            },
        );
        let mut answer = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        });
        if scopes.iter().any(|s| s == "offline_access") {
            let refresh = random_token(48);
            self.refresh_tokens.insert(
                refresh.clone(),
                RefreshGrant {
                    client_id: client_id.to_string(),
                    scopes,
                },
            );
            answer["refresh_token"] = json!(refresh);
        }
        answer
    }

    /// The client and scopes of a valid access token.
    fn access_token(&self, token: &str) -> Option<(String, Vec<String>)> {
        self.access_tokens
            .get(token)
            .filter(|t| Instant::now() < t.expires)
            .map(|t| (t.client_id.clone(), t.scopes.clone()))
    }

    /// Counts one call; `Err(seconds until the window resets)` when over the limit.
    fn take_quota(&mut self, client_id: &str, endpoint: &str) -> Result<(), u64> {
        let limit = self.config.rate_limit_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let (count, reset_secs) = self
            .windows
            .count((client_id, endpoint), self.config.rate_window);
        if count <= limit {
            Ok(())
        } else {
            Err(reset_secs)
        }
    }

    fn find_customer(&self, id: &str) -> Option<usize> {
        self.index_by_id.get(id).copied()
    }

    fn id_of_number(&self, number: &str) -> Option<&str> {
        self.id_by_number.get(number).map(String::as_str)
    }

    /// Removes a customer and rebuilds the indexes (deletes are rare; writes are not).
    fn remove_customer(&mut self, index: usize) {
        self.customers.remove(index);
        self.index_by_id.clear();
        self.id_by_number.clear();
        self.highest_number = 0;
        for i in 0..self.customers.len() {
            self.index_customer(i);
        }
    }

    fn index_customer(&mut self, index: usize) {
        let c = &self.customers[index];
        let id = c["Id"].as_str().unwrap_or_default().to_string();
        if let Some(number) = c["CustomerNumber"].as_str() {
            if let Ok(n) = number.parse::<u64>() {
                self.highest_number = self.highest_number.max(n);
            }
            self.id_by_number.insert(number.to_string(), id.clone());
        }
        self.index_by_id.insert(id, index);
    }

    /// Stores validated fields as a new customer (`id` None) or as a full replacement.
    fn store_customer(
        &mut self,
        id: Option<String>,
        mut fields: Map<String, Value>,
    ) -> Result<Value, EaError> {
        let index = id.as_deref().and_then(|i| self.find_customer(i));
        let id = id.unwrap_or_else(|| Uuid::new_v4().to_string());
        let given = fields
            .get("CustomerNumber")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        // A customer always has a number: a PUT without one keeps the current one.
        let number = match (given, index) {
            (Some(n), _) => n,
            (None, Some(i)) => self.customers[i]["CustomerNumber"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| self.next_customer_number()),
            (None, None) => self.next_customer_number(),
        };
        let taken = self
            .id_of_number(&number)
            .is_some_and(|holder| holder != id);
        if taken {
            return Err(EaError::new(
                StatusCode::BAD_REQUEST,
                4000,
                format!("CustomerNumber: customer number '{number}' is already in use by another customer"),
            ));
        }
        let terms = fields
            .get("TermsOfPaymentId")
            .and_then(Value::as_str)
            .and_then(terms_json)
            .unwrap_or(Value::Null);
        fields.insert("CustomerNumber".into(), Value::String(number));
        fields.insert("Id".into(), Value::String(id));
        fields.insert("ChangedUtc".into(), Value::String(now_utc()));
        fields.insert("TermsOfPayment".into(), terms);
        fields.insert("PayToAccountId".into(), Value::Null);
        fields.insert("LastInvoiceDate".into(), Value::Null);
        fields.insert("IsFutureInvoiceDateAllowed".into(), Value::Bool(false));
        let stored = Value::Object(fields);
        let index = match index {
            Some(i) => {
                // A PUT may change the number: the old one becomes free.
                let old = self.customers[i]["CustomerNumber"]
                    .as_str()
                    .map(str::to_string);
                self.customers[i] = stored.clone();
                if let Some(old) =
                    old.filter(|o| Some(o.as_str()) != stored["CustomerNumber"].as_str())
                {
                    self.id_by_number.remove(&old);
                    if old.parse::<u64>().ok() == Some(self.highest_number) {
                        self.highest_number = self
                            .customers
                            .iter()
                            .filter_map(|c| c["CustomerNumber"].as_str()?.parse::<u64>().ok())
                            .max()
                            .unwrap_or(0);
                    }
                }
                i
            }
            None => {
                self.customers.push(stored.clone());
                self.customers.len() - 1
            }
        };
        self.index_customer(index);
        Ok(stored)
    }

    /// Like eAccounting: one more than the highest numeric customer number.
    fn next_customer_number(&self) -> String {
        (self.highest_number + 1).to_string()
    }
}

pub fn router(state: SharedVisma) -> Router {
    let api = Router::new()
        .route(
            "/visma/v2/customers",
            get(list_customers).post(create_customer),
        )
        .route(
            "/visma/v2/customers/{customerId}",
            get(get_customer)
                .put(replace_customer)
                .delete(delete_customer),
        )
        .route("/visma/v2/termsofpayments", get(list_terms))
        .route("/visma/v2/termsofpayments/{id}", get(get_terms))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_guard))
        // Outside the token check: injected failures come before authentication.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            faults::fault_guard::<SharedVisma>,
        ));
    let connect = Router::new()
        .route("/visma/connect/token", post(token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            faults::token_fault_guard::<SharedVisma>,
        ))
        .route("/visma/connect/authorize", get(authorize));
    let visma = api.merge(connect).layer(middleware::from_fn_with_state(
        state.clone(),
        common::record::<VismaState>,
    ));
    let control = Router::new()
        .route("/_sandbox/visma/customers", get(control_customers))
        .route(
            "/_sandbox/visma/requests",
            get(common::control_requests::<VismaState>)
                .delete(common::control_clear_requests::<VismaState>),
        )
        .route(
            "/_sandbox/visma/customers/{customerNumber}/transactions",
            post(control_mark_transactions),
        )
        .route("/_sandbox/visma/expire-tokens", post(control_expire_tokens));
    visma.merge(control).with_state(state)
}

// ---------- error bodies ----------

/// eAccounting's error, kept small so `Result<_, EaError>` stays cheap to return.
#[derive(Debug)]
pub struct EaError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl EaError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> EaError {
        EaError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for EaError {
    fn into_response(self) -> Response {
        let body = json!({
            "ErrorCode": self.code,
            "DeveloperErrorMessage": self.message,
            "ErrorId": Uuid::new_v4().to_string(),
        });
        (self.status, Json(body)).into_response()
    }
}

/// eAccounting's error body as a response.
pub fn ea_error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    EaError::new(status, code, message).into_response()
}

/// Visma Connect's (OAuth2) error body.
fn oauth_error(error: &str) -> Response {
    common::oauth_error(StatusCode::BAD_REQUEST, error, None)
}

/// The 429 of a client over its quota of `limit` calls a minute.
fn quota_exceeded(limit: u32, retry_after_secs: u64) -> Response {
    ea_error(
        StatusCode::TOO_MANY_REQUESTS,
        4010,
        format!(
            "API calls quota exceeded! maximum admitted {limit} per Minute. Try again in {retry_after_secs} seconds."
        ),
    )
}

fn unauthorized() -> Response {
    ea_error(
        StatusCode::UNAUTHORIZED,
        4005,
        "Authorization has been denied for this request.",
    )
}

fn not_found() -> Response {
    ea_error(StatusCode::NOT_FOUND, 3000, "customer not found")
}

// ---------- middleware ----------

impl FaultSite for SharedVisma {
    fn plan(&self, customer_write: bool) -> Plan {
        lock(self).faults.plan(customer_write)
    }

    fn is_customer_path(path: &str) -> bool {
        path.starts_with("/visma/v2/customers")
    }

    fn token_fault(&self) -> faults::TokenFault {
        lock(self).faults.faults().token.clone()
    }

    fn injected(status: u16, retry_after_secs: u64) -> Response {
        match status {
            429 => quota_exceeded(600, retry_after_secs),
            500 => ea_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                5000,
                "An error has occurred.",
            ),
            _ => gateway_page(status),
        }
    }
}

/// Every /visma request (token calls included) is recorded with its request body, and
/// with `"fault"` when a fault injected its status or dropped its response.
impl RecordSite for VismaState {
    fn recording(&self) -> bool {
        self.config.record_requests
    }

    fn log(&mut self) -> &mut RequestLog {
        &mut self.requests
    }

    fn too_large() -> Response {
        ea_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            6001,
            "request body too large",
        )
    }

    /// `path` with the query, if any.
    fn request_fields(req: &Request) -> Map<String, Value> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        Map::from_iter([("path".to_string(), Value::String(path))])
    }
}

/// Each endpoint's scopes, as its swagger description lists them ("Requires any of the
/// following scopes"), beside `ea:api`, which every eAccounting call needs ("Must be used
/// to get access to eAccounting API", https://developer.vismaonline.com/docs/authentication):
/// any one of each inner list.
fn scopes_for(endpoint: &str, method: &axum::http::Method) -> &'static [&'static [&'static str]] {
    const READ: &[&str] = &["ea:sales", "ea:sales_readonly"];
    const WRITE: &[&str] = &["ea:sales"];
    const TERMS: &[&str] = &[
        "ea:sales",
        "ea:sales_readonly",
        "ea:purchase",
        "ea:purchase_readonly",
    ];
    if endpoint.starts_with("/visma/v2/termsofpayments") {
        &[&["ea:api"], TERMS]
    } else if method == axum::http::Method::GET {
        &[&["ea:api"], READ]
    } else {
        &[&["ea:api"], WRITE]
    }
}

fn has_scopes(granted: &[String], needed: &[&[&str]]) -> bool {
    needed
        .iter()
        .all(|any| any.iter().any(|s| granted.iter().any(|g| g == s)))
}

/// 403 with error 4006 NoAccessToScopes ("This error is thrown when you try to make
/// requests towards an endpoint ..." without its scope,
/// https://developer.vismaonline.com/docs/error-codes). The message does not say which
/// scope: a connector must know what each endpoint needs.
fn no_access_to_scopes() -> Response {
    ea_error(
        StatusCode::FORBIDDEN,
        4006,
        "NoAccessToScopes: the access token has no access to the scopes this endpoint requires",
    )
}

/// Bearer token check, then the per-client, per-endpoint quota, then the token's
/// scopes. Unauthenticated calls are not counted: there is no client to count them
/// against.
async fn api_guard(State(state): State<SharedVisma>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let token = bearer(req.headers());
    let needed = scopes_for(&endpoint, req.method());
    let refused = {
        let mut st = lock(&state);
        match token.and_then(|t| st.access_token(&t)) {
            None => Some(unauthorized()),
            Some((client, scopes)) => match st.take_quota(&client, &endpoint) {
                Err(wait) => Some(quota_exceeded(st.config.rate_limit_per_minute, wait)),
                Ok(()) if !has_scopes(&scopes, needed) => Some(no_access_to_scopes()),
                Ok(()) => None,
            },
        }
    };
    match refused {
        Some(resp) => resp,
        None => next.run(req).await,
    }
}

// ---------- Visma Connect ----------

async fn token(State(state): State<SharedVisma>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let Some((client_id, secret)) = client_credentials(&headers, &form) else {
        return oauth_error("invalid_client");
    };
    let mut st = lock(&state);
    if client_id != st.client_id || secret != st.client_secret {
        return oauth_error("invalid_client");
    }
    let granted = match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => refresh_grant(&mut st, &client_id, &form),
        Some("authorization_code") => code_grant(&mut st, &client_id, &form),
        Some(_) => Err("unsupported_grant_type"),
        None => Err("invalid_request"),
    };
    match granted {
        Ok(scopes) => Json(st.issue_tokens(&client_id, scopes)).into_response(),
        Err(e) => oauth_error(e),
    }
}

/// Rotation: the used refresh token is gone, whatever happens next.
fn refresh_grant(
    st: &mut VismaState,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<Vec<String>, &'static str> {
    let presented = form.get("refresh_token").ok_or("invalid_request")?;
    match st.refresh_tokens.remove(presented) {
        Some(grant) if grant.client_id == client_id => Ok(grant.scopes),
        _ => Err("invalid_grant"),
    }
}

/// Codes are single-use: removed on the first attempt, even a failed one.
fn code_grant(
    st: &mut VismaState,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<Vec<String>, &'static str> {
    let code = form.get("code").ok_or("invalid_request")?;
    let pending = st.auth_codes.remove(code).ok_or("invalid_grant")?;
    let redirect_ok = form.get("redirect_uri") == Some(&pending.redirect_uri);
    if pending.client_id != client_id || !redirect_ok || Instant::now() >= pending.expires {
        return Err("invalid_grant");
    }
    if let Some(challenge) = pending.code_challenge {
        let verifier = form.get("code_verifier").ok_or("invalid_grant")?;
        if !valid_verifier(verifier) || pkce_s256(verifier) != challenge {
            return Err("invalid_grant");
        }
    }
    Ok(pending.scopes)
}

/// Consents at once and redirects back with a code. Errors are JSON 400s rather than
/// redirects: simpler, and a sandbox user sees them directly.
async fn authorize(State(state): State<SharedVisma>, RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref());
    let mut st = lock(&state);
    if q.get("client_id") != Some(&st.client_id) {
        return oauth_error("invalid_client");
    }
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return oauth_error("invalid_request");
    };
    let Ok(mut location) = url::Url::parse(redirect_uri) else {
        return oauth_error("invalid_request");
    };
    if q.get("response_type").map(String::as_str) != Some("code") {
        return oauth_error("unsupported_response_type");
    }
    if let Err(why) = company_choice(&q) {
        return common::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", Some(why));
    }
    let scopes: Vec<String> = q
        .get("scope")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    if scopes.is_empty() || scopes.iter().any(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return oauth_error("invalid_scope");
    }
    let code_challenge = q.get("code_challenge").cloned();
    // Only S256 is accepted: "plain" (the RFC's default) would defeat PKCE.
    if code_challenge.is_some()
        && q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return oauth_error("invalid_request");
    }
    let code = random_token(40);
    let client_id = st.client_id.clone();
    st.auth_codes.insert(
        code.clone(),
        PendingCode {
            client_id,
            scopes,
            redirect_uri: redirect_uri.clone(),
            code_challenge,
            expires: Instant::now() + AUTH_CODE_TTL,
        },
    );
    {
        let mut pairs = location.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(s) = q.get("state") {
            pairs.append_pair("state", s);
        }
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// The eAccounting service's id in Visma Online's `acr_values`
/// (https://developer.vismaonline.com/changelog/new-user-authentication-recommandations-and-information).
pub const EACCOUNTING_SERVICE_ID: &str = "44643EB1-3F76-4C1C-A672-402AE8085934";

/// Checks the authorize request's `prompt` and `acr_values`, through which a user with
/// several companies is made to choose one: "Use prompt=select_account to always prompt
/// the selection of company"; before it, "acr_values=service:44643EB1-...+forceselectcompany:true
/// in combination with prompt=login"; "prompt=login+select_account" forces both (Visma
/// changelog "New User Authentication recommandations and information", and "Force New
/// Login" in https://developer.vismaonline.com/docs/authentication). `prompt` takes
/// OpenID Connect's values (space-separated; `none` alone); `acr_values` takes
/// `service:<GUID>` and `forceselectcompany:true|false`. Anything else is
/// `invalid_request`, so a misspelt value shows here rather than being ignored there.
fn company_choice(q: &HashMap<String, String>) -> Result<(), &'static str> {
    const PROMPTS: &[&str] = &["none", "login", "consent", "select_account"];
    if let Some(prompt) = q.get("prompt") {
        let values: Vec<&str> = prompt.split_whitespace().collect();
        let known = !values.is_empty() && values.iter().all(|v| PROMPTS.contains(v));
        if !known || (values.contains(&"none") && values.len() > 1) {
            return Err("prompt: none, login, consent or select_account (none alone)");
        }
    }
    if let Some(acr) = q.get("acr_values") {
        let valid = |v: &str| match v.split_once(':') {
            Some(("forceselectcompany", b)) => b == "true" || b == "false",
            Some(("service", id)) => Uuid::parse_str(id).is_ok(),
            _ => false,
        };
        if !acr.split_whitespace().all(valid) {
            return Err("acr_values: service:<GUID> and forceselectcompany:true|false");
        }
    }
    Ok(())
}

// ---------- customers ----------

struct Filter {
    field: &'static str,
    value: String,
}

/// `Field eq 'value'` with OData's doubled quote ('') as the escape.
fn parse_filter(raw: &str) -> Result<Filter, String> {
    let bad = || format!("$filter: bad query parameter: unsupported filter '{raw}'");
    let (field, rest) = raw.trim().split_once(char::is_whitespace).ok_or_else(bad)?;
    let field = FILTERABLE
        .iter()
        .find(|f| f.eq_ignore_ascii_case(field))
        .ok_or_else(bad)?;
    let (op, literal) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(bad)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(bad());
    }
    let inner = literal
        .trim()
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .ok_or_else(bad)?;
    if inner.replace("''", "").contains('\'') {
        return Err(bad());
    }
    Ok(Filter {
        field,
        value: inner.replace("''", "'"),
    })
}

/// `$page` (1-based) and `$pagesize`; option names are case-insensitive as in OData.
fn paging(q: &HashMap<String, String>) -> Result<(u64, u64), EaError> {
    let get = |name: &str| {
        q.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let bad = |msg: String| EaError::new(StatusCode::BAD_REQUEST, 6000, msg);
    let page = number_param(get("$page"), 1, 1..=u64::MAX)
        .map_err(|p| bad(format!("$page: must be a positive integer, got '{p}'")))?;
    let size =
        number_param(get("$pagesize"), DEFAULT_PAGE_SIZE, 1..=MAX_PAGE_SIZE).map_err(|s| {
            bad(format!(
                "$pagesize: must be between 1 and {MAX_PAGE_SIZE}, got '{s}'"
            ))
        })?;
    Ok((page, size))
}

fn page_envelope(items: Vec<Value>, page: u64, size: u64) -> Response {
    let total = items.len() as u64;
    let data = page_of(items, page - 1, size);
    Json(json!({
        "Meta": {
            "CurrentPage": page,
            "PageSize": size,
            "TotalNumberOfPages": total.div_ceil(size),
            "TotalNumberOfResults": total,
            "ServerTimeUtc": now_utc(),
        },
        "Data": data,
    }))
    .into_response()
}

async fn list_customers(State(state): State<SharedVisma>, RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref());
    let filter = match q.iter().find(|(k, _)| k.eq_ignore_ascii_case("$filter")) {
        None => None,
        Some((_, f)) => match parse_filter(f) {
            Ok(f) => Some(f),
            Err(msg) => return ea_error(StatusCode::BAD_REQUEST, 6000, msg),
        },
    };
    let (page, size) = match paging(&q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let st = lock(&state);
    let matching: Vec<Value> = match &filter {
        // Numbers are unique: answer from the index.
        Some(f) if f.field == "CustomerNumber" => st
            .id_of_number(&f.value)
            .and_then(|id| st.find_customer(id))
            .map(|i| st.customers[i].clone())
            .into_iter()
            .collect(),
        _ => st
            .customers
            .iter()
            .filter(|c| {
                filter
                    .as_ref()
                    .is_none_or(|f| c[f.field].as_str() == Some(f.value.as_str()))
            })
            .cloned()
            .collect(),
    };
    drop(st);
    page_envelope(matching, page, size)
}

async fn get_customer(State(state): State<SharedVisma>, Path(id): Path<String>) -> Response {
    let st = lock(&state);
    match st.find_customer(&id) {
        Some(i) => Json(st.customers[i].clone()).into_response(),
        None => not_found(),
    }
}

async fn create_customer(State(state): State<SharedVisma>, body: Bytes) -> Response {
    let fields = match parse_body(&body).and_then(validated) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    match lock(&state).store_customer(None, fields) {
        Ok(stored) => (StatusCode::CREATED, Json(stored)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Full replace ("Replace the data in a customer", swagger): validated like a create, so
/// a field the body omits or sends as null goes back to its default (null for strings),
/// and an explicit empty string is kept as the empty string. Whether Visma's PUT really
/// clears omitted fields is undocumented; the sandbox clears them, as a full replace
/// would, and a connector that must clear a field sends it empty.
async fn replace_customer(
    State(state): State<SharedVisma>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if lock(&state).find_customer(&id).is_none() {
        return not_found();
    }
    let fields = match parse_body(&body).and_then(validated) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let mut st = lock(&state);
    // Deleted meanwhile: report it rather than resurrect it.
    if st.find_customer(&id).is_none() {
        return not_found();
    }
    match st.store_customer(Some(id), fields) {
        Ok(stored) => Json(stored).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_customer(State(state): State<SharedVisma>, Path(id): Path<String>) -> Response {
    let mut st = lock(&state);
    let Some(i) = st.find_customer(&id) else {
        return not_found();
    };
    if st.with_transactions.contains(&id) {
        return ea_error(
            StatusCode::BAD_REQUEST,
            4001,
            "customer has transactions and cannot be deleted",
        );
    }
    st.remove_customer(i);
    // 200, as the swagger documents for `DELETE /v2/customers/{customerId}` (not 204).
    StatusCode::OK.into_response()
}

fn terms_json(id: &str) -> Option<Value> {
    TERMS.iter().find(|t| t.0.eq_ignore_ascii_case(id)).map(
        |&(id, name, name_en, days, type_id, type_text)| {
            json!({
                "Id": id, "Name": name, "NameEnglish": name_en, "NumberOfDays": days,
                "TermsOfPaymentTypeId": type_id, "TermsOfPaymentTypeText": type_text,
                "AvailableForSales": true, "AvailableForPurchase": true,
            })
        },
    )
}

async fn list_terms(RawQuery(raw): RawQuery) -> Response {
    let q = parse_query(raw.as_deref());
    match paging(&q) {
        Ok((page, size)) => {
            let all = TERMS.iter().filter_map(|t| terms_json(t.0)).collect();
            page_envelope(all, page, size)
        }
        Err(e) => e.into_response(),
    }
}

async fn get_terms(Path(id): Path<String>) -> Response {
    match terms_json(&id) {
        Some(t) => Json(t).into_response(),
        None => ea_error(StatusCode::NOT_FOUND, 3000, "terms of payment not found"),
    }
}

// ---------- validation ----------

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, EaError> {
    common::json_object(body).map_err(|e| {
        let message = match e {
            NotAnObject::Other => "Invalid input: the body must be a JSON object".to_string(),
            NotAnObject::Invalid(e) => format!("Invalid input: the body is not valid JSON ({e})"),
        };
        EaError::new(StatusCode::BAD_REQUEST, 6001, message)
    })
}

fn validated(input: Map<String, Value>) -> Result<Map<String, Value>, EaError> {
    validate_customer(&input).map_err(|msg| EaError::new(StatusCode::BAD_REQUEST, 2000, msg))
}

/// Checks a `CustomerApi` body against the rules above and returns every writable
/// field (defaults for the absent ones). Unknown and read-only fields are dropped.
/// The error is the first problem found, as "<field>: <what is wrong>".
pub fn validate_customer(input: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let present = |f: &str| input.get(f).filter(|v| !v.is_null());
    for &f in CUSTOMER_REQUIRED {
        match present(f) {
            None => return Err(format!("{f}: is required")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(format!("{f}: is required"))
            }
            _ => {}
        }
    }
    let mut out = Map::new();
    for &(f, max) in CUSTOMER_STRING_LIMITS {
        let value = match present(f) {
            None => Value::Null,
            Some(Value::String(s)) => {
                let len = s.encode_utf16().count();
                if len > max {
                    return Err(format!("{f}: must be at most {max} characters, got {len}"));
                }
                if EMAIL_FIELDS.contains(&f) && !s.is_empty() && !looks_like_email(s) {
                    return Err(format!("{f}: is not a valid email address"));
                }
                Value::String(s.clone())
            }
            Some(_) => return Err(format!("{f}: must be a string")),
        };
        out.insert(f.into(), value);
    }
    // The sandbox company's currency, which Visma fills in when none is given.
    if out["CurrencyCode"].is_null() {
        out.insert("CurrencyCode".into(), json!("SEK"));
    }
    for &f in UUID_FIELDS {
        let value = match present(f) {
            None => Value::Null,
            Some(Value::String(s)) if Uuid::parse_str(s).is_ok() => Value::String(s.clone()),
            Some(_) => return Err(format!("{f}: must be a uuid")),
        };
        out.insert(f.into(), value);
    }
    if let Some(id) = out["TermsOfPaymentId"].as_str() {
        if terms_json(id).is_none() {
            return Err(format!(
                "TermsOfPaymentId: unknown terms of payment '{id}' (see /v2/termsofpayments)"
            ));
        }
    }
    for &f in BOOL_FIELDS {
        let value = match present(f) {
            None => Value::Bool(false),
            Some(Value::Bool(b)) => Value::Bool(*b),
            Some(_) => return Err(format!("{f}: must be true or false")),
        };
        out.insert(f.into(), value);
    }
    for &f in DATE_FIELDS {
        let value = match present(f) {
            None => Value::Null,
            Some(Value::String(s)) if is_date_time(s) => Value::String(s.clone()),
            Some(_) => return Err(format!("{f}: must be a date-time")),
        };
        out.insert(f.into(), value);
    }
    out.insert("WebshopCustomerNumber".into(), webshop_number(input)?);
    out.insert("DiscountPercentage".into(), discount(input)?);
    out.insert("EmailAddresses".into(), email_addresses(input)?);
    out.insert("CustomerLabels".into(), labels(input)?);
    Ok(out)
}

fn webshop_number(input: &Map<String, Value>) -> Result<Value, String> {
    match input.get("WebshopCustomerNumber") {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(v) => match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Ok(json!(n)),
            None => Err("WebshopCustomerNumber: must be a 32-bit integer".into()),
        },
    }
}

/// A fraction 0..=1 with at most 4 decimals.
fn discount(input: &Map<String, Value>) -> Result<Value, String> {
    match input.get("DiscountPercentage") {
        None | Some(Value::Null) => Ok(json!(0.0)),
        Some(v) => match v.as_f64() {
            Some(x) if !(0.0..=1.0).contains(&x) => Err(format!(
                "DiscountPercentage: must be between 0 and 1, got {x}"
            )),
            Some(x) if ((x * 10_000.0).round() - x * 10_000.0).abs() > 1e-6 => {
                Err(format!("DiscountPercentage: at most 4 decimals, got {x}"))
            }
            Some(x) => Ok(json!(x)),
            None => Err("DiscountPercentage: must be a number".into()),
        },
    }
}

fn email_addresses(input: &Map<String, Value>) -> Result<Value, String> {
    match input.get("EmailAddresses") {
        None | Some(Value::Null) => Ok(json!([])),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok(Value::Array(items.clone()))
        }
        Some(_) => Err("EmailAddresses: must be an array of strings".into()),
    }
}

/// `CustomerLabelApi`: Name required (max 50), Description max 400; Id is server-set.
fn labels(input: &Map<String, Value>) -> Result<Value, String> {
    let items = match input.get("CustomerLabels") {
        None | Some(Value::Null) => return Ok(json!([])),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("CustomerLabels: must be an array".into()),
    };
    let mut out = Vec::new();
    for item in items {
        let name = match item.get("Name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            _ => return Err("CustomerLabels.Name: is required".into()),
        };
        if name.encode_utf16().count() > 50 {
            return Err("CustomerLabels.Name: must be at most 50 characters".into());
        }
        let description = match item.get("Description") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) if s.encode_utf16().count() <= 400 => json!(s),
            Some(_) => {
                return Err(
                    "CustomerLabels.Description: must be a string of at most 400 characters".into(),
                )
            }
        };
        let id = item
            .get("Id")
            .and_then(Value::as_str)
            .filter(|s| Uuid::parse_str(s).is_ok())
            .map(str::to_string)
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        out.push(json!({ "Id": id, "Name": name, "Description": description }));
    }
    Ok(Value::Array(out))
}

/// RFC 3339, or .NET's offset-less "2024-05-01T12:00:00".
fn is_date_time(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
}

// ---------- control ----------

async fn control_customers(State(state): State<SharedVisma>) -> Response {
    Json(customers(&state)).into_response()
}

async fn control_mark_transactions(
    State(state): State<SharedVisma>,
    Path(number): Path<String>,
) -> Response {
    let mut st = lock(&state);
    let found = st.id_of_number(&number).map(str::to_string);
    match found {
        Some(id) => {
            st.with_transactions.insert(id.clone());
            Json(json!({ "Id": id, "CustomerNumber": number, "HasTransactions": true }))
                .into_response()
        }
        None => common::message(
            StatusCode::NOT_FOUND,
            format!("no customer with number '{number}'"),
        ),
    }
}

async fn control_expire_tokens(State(state): State<SharedVisma>) -> Response {
    let mut st = lock(&state);
    common::expire_tokens(st.access_tokens.values_mut().map(|t| &mut t.expires))
}

// ---------- PKCE ----------

/// RFC 7636 4.1: 43 to 128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// PKCE S256 challenge: BASE64URL-NOPAD(SHA256(verifier)).
pub fn pkce_s256(verifier: &str) -> String {
    base64url_nopad(&Sha256::digest(verifier.as_bytes()))
}

/// What the sandbox serves for this register.
pub static SIMULATOR: super::tenant::Simulator = super::tenant::Simulator {
    register: &crate::sink::eaccounting::REGISTER,
    control: "visma",
    config_section,
    customers: super::Sandbox::visma_customers,
};

/// The eAccounting simulator's part of a tenant config.
fn config_section(
    sandbox: &super::Sandbox,
    secrets: &mut std::collections::HashMap<String, String>,
) -> String {
    let creds = sandbox.credentials();
    secrets.insert("VISMA_CLIENT_SECRET".into(), creds.visma_client_secret);
    secrets.insert("VISMA_REFRESH_TOKEN".into(), creds.visma_refresh_token);
    format!(
        r#"api_base = "{}"
token_url = "{}"
client_id = "{}"
client_secret_env = "VISMA_CLIENT_SECRET"
refresh_token_env = "VISMA_REFRESH_TOKEN"
authorize_url = "{}"
redirect_uri = "http://127.0.0.1:0/callback""#,
        sandbox.visma_api_base(),
        sandbox.visma_token_url(),
        creds.visma_client_id,
        sandbox.visma_authorize_url(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn filter_grammar() {
        let f = parse_filter("CustomerNumber eq 'K1001'").unwrap();
        assert_eq!((f.field, f.value.as_str()), ("CustomerNumber", "K1001"));
        assert_eq!(parse_filter("Name eq 'O''Brien'").unwrap().value, "O'Brien");
        assert!(parse_filter("Name ne 'x'").is_err());
        assert!(parse_filter("Telephone eq '1'").is_err());
        assert!(parse_filter("Name eq 'a'b'").is_err());
    }
}
