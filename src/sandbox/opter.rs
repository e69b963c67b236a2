//! Simulator of the Opter customer API the connector expects (../shared/docs/opter.md: the
//! endpoint is not publicly documented, so this is the contract written down as code).
//!
//! Customers are kept exactly as given (serde_json values, duplicates and unknown
//! fields included) because the real export sends everything and the connector is the
//! one that must filter.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use super::common::{self, header_is, number_param, page_of, NotAnObject};

/// The only API key the simulator accepts.
pub const SANDBOX_OPTER_API_KEY: &str = "sandbox-opter-key";
/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// Largest page size accepted; bigger is a 400, not silently clamped.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The simulator's whole state.
#[derive(Debug)]
pub struct OpterState {
    /// Customers in insertion order, exactly as stored.
    pub customers: Vec<Value>,
    pub api_key: String,
}

pub type SharedOpter = Arc<Mutex<OpterState>>;

pub fn new_state(customers: Vec<Value>) -> SharedOpter {
    Arc::new(Mutex::new(OpterState {
        customers,
        api_key: SANDBOX_OPTER_API_KEY.to_string(),
    }))
}

/// A poisoned lock only means a handler panicked; the data is still usable.
pub fn lock(state: &SharedOpter) -> MutexGuard<'_, OpterState> {
    common::lock(state)
}

pub fn router(state: SharedOpter) -> Router {
    Router::new()
        .route("/opter/api/Customers", get(list_customers))
        .route("/_sandbox/opter/customers", get(all_customers))
        .route("/_sandbox/opter/customers/{code}", put(put_customer))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    common::message(status, message)
}

/// The query's pairs in order: a repeated name is read at its first value.
fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// RFC 3339; a '+' in an unencoded query arrives as a space, so put it back.
fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc3339(&s.replace(' ', "+")))
        .ok()
}

struct ListParams {
    page: u64,
    page_size: u64,
    changed_since: Option<DateTime<FixedOffset>>,
}

fn list_params(query: &[(String, String)]) -> Result<ListParams, String> {
    let page = number_param(param(query, "page"), 1, 1..=u64::MAX)
        .map_err(|p| format!("page must be a positive integer, got '{p}'"))?;
    let page_size = number_param(
        param(query, "pageSize"),
        DEFAULT_PAGE_SIZE,
        1..=MAX_PAGE_SIZE,
    )
    .map_err(|_| format!("pageSize must be between 1 and {MAX_PAGE_SIZE}"))?;
    let changed_since = match param(query, "changedSince") {
        None => None,
        Some(s) => Some(
            parse_time(s)
                .ok_or_else(|| format!("changedSince must be an RFC 3339 timestamp, got '{s}'"))?,
        ),
    };
    Ok(ListParams {
        page,
        page_size,
        changed_since,
    })
}

/// A customer without a readable `updated` cannot be shown to be later, so
/// `changedSince` leaves it out.
fn changed_after(customer: &Value, since: &DateTime<FixedOffset>) -> bool {
    customer
        .get("updated")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .is_some_and(|t| t > *since)
}

/// One page of the customer list, as Opter answers it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListPage<'a> {
    page: u64,
    page_size: u64,
    total_count: usize,
    items: Vec<&'a Value>,
}

async fn list_customers(
    State(state): State<SharedOpter>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let st = lock(&state);
    if !header_is(&headers, "x-api-key", &st.api_key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key (x-api-key header)",
        );
    }
    let query = parse_query(raw.as_deref());
    let p = match list_params(&query) {
        Ok(p) => p,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let matches = |c: &&Value| p.changed_since.as_ref().is_none_or(|s| changed_after(c, s));
    let total = match p.changed_since {
        None => st.customers.len(),
        Some(_) => st.customers.iter().filter(matches).count(),
    };
    // Serialised from the stored customers, not from copies: a simulator that spends
    // more per customer than Opter's answer costs to read would be measured as the
    // connector's own time.
    let items: Vec<&Value> = page_of(st.customers.iter().filter(matches), p.page - 1, p.page_size);
    Json(ListPage {
        page: p.page,
        page_size: p.page_size,
        total_count: total,
        items,
    })
    .into_response()
}

async fn all_customers(State(state): State<SharedOpter>) -> Response {
    Json(Value::Array(lock(&state).customers.clone())).into_response()
}

/// Replace the first customer with this code, or append: 200 or 201.
async fn put_customer(
    State(state): State<SharedOpter>,
    Path(code): Path<String>,
    body: Bytes,
) -> Response {
    let mut customer = match common::json_object(&body) {
        Ok(map) => map,
        Err(NotAnObject::Other) => {
            return error(StatusCode::BAD_REQUEST, "body must be a JSON object")
        }
        Err(NotAnObject::Invalid(e)) => {
            return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}"))
        }
    };
    match customer.get("customerCode") {
        None | Some(Value::Null) => {
            customer.insert("customerCode".into(), Value::String(code.clone()));
        }
        Some(Value::String(c)) if *c == code => {}
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body customerCode {other} differs from the path's '{code}'"),
            )
        }
    }
    let customer = Value::Object(customer);
    let mut st = lock(&state);
    let existing = st
        .customers
        .iter_mut()
        .find(|c| c.get("customerCode").and_then(Value::as_str) == Some(code.as_str()));
    let status = match existing {
        Some(slot) => {
            *slot = customer.clone();
            StatusCode::OK
        }
        None => {
            st.customers.push(customer.clone());
            StatusCode::CREATED
        }
    };
    (status, Json(customer)).into_response()
}
