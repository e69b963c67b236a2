//! The console's JSON API under `/api/v1`, for scripts: the reads and actions of the
//! pages, authorised by a bearer token issued to a user (`users token add`) instead of
//! a session. Described by `openapi.json`, served at `/api/v1/openapi.json`.
//!
//! Invariants, as the pages': who before what (the token, then the tenant, then the
//! role), so nothing is read or done for a caller who may not; a tenant the token may
//! not reach answers 404 as if it did not exist; no personal value in a URL, a log line
//! or the audit log; values only from `reveal` and `export`, each with a reason. No
//! cookie is read, so a page elsewhere cannot make a browser call it (no CSRF).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    console, customer_code, first_line, read_journal, reason_of, tenant_dir, timeline, Refusal,
    Role, Timeline, MOST_CONFLICTS_SHOWN,
};
use crate::output::event_json;
use crate::service::scheduler::{self, Connection, Shared};

const OPENAPI: &str = include_str!("openapi.json");
/// The most characters of an `Authorization` header looked at.
const MOST_AUTHORIZATION_BYTES: usize = 200;

/// The API's routes, nested under `/api/v1` by the console's router.
pub(super) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/tenants", get(tenants))
        .route("/tenants/{tenant}", get(tenant))
        .route("/tenants/{tenant}/runs", get(runs))
        .route("/tenants/{tenant}/runs/{run}", get(run))
        .route("/tenants/{tenant}/privacy", get(privacy))
        .route("/tenants/{tenant}/verify", post(verify))
        .route("/tenants/{tenant}/run", post(run_now))
        .route("/tenants/{tenant}/customers/{code}", get(customer))
        .route("/tenants/{tenant}/customers/{code}/reveal", post(reveal))
        .route("/tenants/{tenant}/customers/{code}/purge", post(purge))
        .route("/tenants/{tenant}/customers/{code}/{action}", post(act))
        .fallback(|| async {
            refused(Refusal::new(
                StatusCode::NOT_FOUND,
                "No such endpoint",
                "GET /api/v1/openapi.json lists them.",
            ))
        })
}

/// A refusal as the API's error body: `{"error", "message"}` with its status.
fn refused(r: Refusal) -> Response {
    (
        r.status,
        Json(json!({ "error": r.title, "message": r.text })),
    )
        .into_response()
}

/// The caller, as the users file says now: the token's user, within the token's bounds.
struct Caller {
    user: String,
    token: String,
    role: Role,
    user_tenants: BTreeSet<String>,
    token_tenants: BTreeSet<String>,
}

impl Caller {
    fn may_see(&self, tenant: &str) -> bool {
        let within = |set: &BTreeSet<String>| set.is_empty() || set.contains(tenant);
        within(&self.user_tenants) && within(&self.token_tenants)
    }
    fn actor(&self) -> String {
        format!("api:{}", self.user)
    }
}

/// The bearer token's caller; a missing, malformed, unknown, revoked or expired token is
/// 401, and too many refused tokens from one address are 429.
fn caller(shared: &Shared, headers: &HeaderMap, address: IpAddr) -> Result<Caller, Response> {
    let c = console(shared);
    let presented = headers
        .get(header::AUTHORIZATION)
        .filter(|v| v.len() <= MOST_AUTHORIZATION_BYTES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorised = |text: &str| {
        let mut r = refused(Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized", text));
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"opter-visma-sync\""),
        );
        r
    };
    let Some(presented) = presented else {
        return Err(unauthorised(
            "Send a token as `Authorization: Bearer TOKEN`; `opter-visma-sync users token add` \
             issues one.",
        ));
    };
    let wrong = || {
        if !c.refusal_allowed(address) {
            return refused(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many refused tokens",
                "Too many requests with a wrong token from this address: wait a minute.",
            ));
        }
        c.audit(json!({ "event": "api-token-refused", "address": address.to_string() }));
        unauthorised(
            "The token is not valid: unknown, revoked or expired. `users token list NAME` \
             shows a user's tokens.",
        )
    };
    // A text that is no token is refused before the users file is read.
    if !super::users::looks_like_token(presented) {
        return Err(wrong());
    }
    let users = c.users().map_err(|_| {
        refused(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The users file cannot be read",
            "The service's log says why.",
        ))
    })?;
    let Some(bearer) = users.bearer(presented, chrono::Utc::now()) else {
        return Err(wrong());
    };
    Ok(Caller {
        user: bearer.user.name.clone(),
        token: bearer.token.id.clone(),
        role: bearer.role(),
        user_tenants: bearer.user.tenants.clone(),
        token_tenants: bearer.token.tenants.clone(),
    })
}

/// The caller, on one of its tenants, with at least `role`; and the tenant's journal.
fn allowed(
    shared: &Shared,
    headers: &HeaderMap,
    peer: SocketAddr,
    tenant: &str,
    role: Role,
    what: &str,
) -> Result<(Caller, PathBuf), Response> {
    let caller = caller(shared, headers, peer.ip())?;
    let dir = tenant_dir(shared, |t| caller.may_see(t), tenant).map_err(refused)?;
    if caller.role < role {
        return Err(refused(Refusal::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!(
                "This token acts as {}, which does not allow {what}; it needs {}.",
                caller.role.name(),
                role.name()
            ),
        )));
    }
    Ok((caller, dir))
}

/// A JSON body that did not parse: 400, saying what is expected, never quoting it.
fn body<T>(given: Result<Json<T>, JsonRejection>, expected: &str) -> Result<T, Response> {
    given.map(|Json(t)| t).map_err(|_| {
        refused(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Bad body",
            format!("Send a JSON object {expected} with Content-Type: application/json."),
        ))
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn tenants(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let caller = match caller(&shared, &headers, peer.ip()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rows = scheduler::summaries(&shared, |id| caller.may_see(id));
    Json(json!({ "tenants": rows })).into_response()
}

async fn tenant(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let dir = match allowed(&shared, &headers, peer, &tenant, Role::Viewer, "reading") {
        Ok((_, dir)) => dir,
        Err(r) => return r,
    };
    let summary = scheduler::summaries(&shared, |id| id == tenant)
        .into_iter()
        .next();
    let conflicts = read_journal(dir, |j| {
        j.held(crate::journal::HoldKind::Conflict, MOST_CONFLICTS_SHOWN)
    });
    let conflicts = match conflicts.await {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let connection = match scheduler::connection(&shared, &tenant).await {
        Connection::FromEnv => json!({ "kind": "environment" }),
        Connection::Login(Some((origin, at))) => {
            json!({ "kind": "login", "stored": true, "origin": origin, "refreshed": at })
        }
        Connection::Login(None) => json!({ "kind": "login", "stored": false }),
        Connection::Unknown(why) => json!({ "kind": "unknown", "why": first_line(&why) }),
    };
    let conflicts: Vec<Value> = conflicts
        .iter()
        .map(|(code, hold)| json!({ "customer": code, "hold": hold }))
        .collect();
    Json(json!({
        "tenant": summary,
        "connection": connection,
        "conflicts": conflicts,
    }))
    .into_response()
}

async fn runs(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let dir = match allowed(&shared, &headers, peer, &tenant, Role::Viewer, "reading") {
        Ok((_, dir)) => dir,
        Err(r) => return r,
    };
    match read_journal(dir, |j| j.runs()).await {
        Ok(mut runs) => {
            runs.sort_by_key(|r| std::cmp::Reverse(r.started));
            Json(json!({ "runs": runs })).into_response()
        }
        Err(r) => refused(r),
    }
}

async fn run(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath((tenant, run)): UrlPath<(String, String)>,
) -> Response {
    let dir = match allowed(&shared, &headers, peer, &tenant, Role::Viewer, "reading") {
        Ok((_, dir)) => dir,
        Err(r) => return r,
    };
    let no_run = || {
        refused(Refusal::new(
            StatusCode::NOT_FOUND,
            "No such run",
            "GET /api/v1/tenants/{tenant}/runs lists them.",
        ))
    };
    if run.len() > 100 {
        return no_run();
    }
    let found = read_journal(dir, move |j| {
        let Some(found) = j.runs()?.into_iter().find(|r| r.id == run) else {
            return Ok(None);
        };
        let events = j.events(None, Some(&run))?;
        Ok(Some((found, events)))
    });
    match found.await {
        Ok(Some((run, events))) => {
            let events: Vec<Value> = events.iter().map(|e| event_json(e, false)).collect();
            Json(json!({ "run": run, "events": events })).into_response()
        }
        Ok(None) => no_run(),
        Err(r) => refused(r),
    }
}

async fn privacy(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    if let Err(r) = allowed(&shared, &headers, peer, &tenant, Role::Viewer, "reading") {
        return r;
    }
    match scheduler::privacy_record(&shared, &tenant).await {
        Ok(record) => Json(record).into_response(),
        Err((status, why)) => refused(Refusal::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "The record of processing cannot be made",
            first_line(&why),
        )),
    }
}

async fn verify(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let what = "verifying the journal";
    let dir = match allowed(&shared, &headers, peer, &tenant, Role::Viewer, what) {
        Ok((_, dir)) => dir,
        Err(r) => return r,
    };
    match read_journal(dir, |j| j.verify()).await {
        Ok(found) => Json(found).into_response(),
        Err(r) => refused(r),
    }
}

async fn run_now(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let what = "starting runs";
    let caller = match allowed(&shared, &headers, peer, &tenant, Role::Admin, what) {
        Ok((caller, _)) => caller,
        Err(r) => return r,
    };
    match scheduler::run_now(&shared, &tenant) {
        Ok(newly) => {
            console(&shared).audit(json!({
                "event": "run-now", "user": caller.user, "token": caller.token,
                "tenant": tenant,
            }));
            let body = json!({ "queued": true, "already_queued": !newly });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err((status, why)) => refused(Refusal::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT),
            "Not queued",
            why,
        )),
    }
}

fn timeline_json(code: &str, found: &Timeline, revealed: bool) -> Value {
    let events: Vec<Value> = found
        .events
        .iter()
        .map(|e| event_json(e, revealed))
        .collect();
    let holds: Vec<Value> = found
        .holds
        .iter()
        .map(|(kind, hold)| json!({ "kind": kind.name(), "hold": hold }))
        .collect();
    json!({ "customer": code, "events": events, "holds": holds })
}

fn no_customer() -> Response {
    refused(Refusal::new(
        StatusCode::BAD_REQUEST,
        "Which customer?",
        "A customer's code is 1 to 100 printable characters, percent-encoded in the path.",
    ))
}

async fn customer(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
) -> Response {
    let dir = match allowed(&shared, &headers, peer, &tenant, Role::Viewer, "reading") {
        Ok((_, dir)) => dir,
        Err(r) => return r,
    };
    let Some(code) = customer_code(&code) else {
        return no_customer();
    };
    match timeline(dir, &code).await {
        Ok(found) => Json(timeline_json(&code, &found, false)).into_response(),
        Err(r) => refused(r),
    }
}

#[derive(Deserialize)]
struct ReasonBody {
    reason: String,
}

fn no_reason() -> Response {
    refused(Refusal::new(
        StatusCode::BAD_REQUEST,
        "A reason is needed",
        "Give \"reason\": one line, up to 500 characters; nothing was done.",
    ))
}

async fn reveal(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
    given: Result<Json<ReasonBody>, JsonRejection>,
) -> Response {
    let what = "revealing values";
    let (caller, dir) = match allowed(&shared, &headers, peer, &tenant, Role::Support, what) {
        Ok(allowed) => allowed,
        Err(r) => return r,
    };
    let given = match body(given, "{\"reason\"}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(code) = customer_code(&code) else {
        return no_customer();
    };
    let Some(reason) = reason_of(&given.reason) else {
        return no_reason();
    };
    let found = match timeline(dir, &code).await {
        Ok(found) => found,
        Err(r) => return refused(r),
    };
    console(&shared).audit(json!({
        "event": "reveal", "user": caller.user, "token": caller.token, "tenant": tenant,
        "customer": code, "reason": reason,
    }));
    Json(timeline_json(&code, &found, true)).into_response()
}

#[derive(Deserialize)]
struct PurgeBody {
    reason: String,
    confirm: String,
}

async fn purge(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
    given: Result<Json<PurgeBody>, JsonRejection>,
) -> Response {
    let what = "purging customers";
    let caller = match allowed(&shared, &headers, peer, &tenant, Role::Support, what) {
        Ok((caller, _)) => caller,
        Err(r) => return r,
    };
    let given = match body(given, "{\"reason\", \"confirm\"}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(code) = customer_code(&code) else {
        return no_customer();
    };
    if given.confirm.trim() != code {
        return refused(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Not confirmed",
            "Give \"confirm\": the customer's code exactly; nothing was done.",
        ));
    }
    let Some(reason) = reason_of(&given.reason) else {
        return no_reason();
    };
    match scheduler::purge(&shared, &tenant, &code, &caller.actor(), &reason).await {
        Ok(receipt) => Json(receipt).into_response(),
        Err(e) => {
            tracing::warn!(tenant = %tenant, customer = %code, "a purge through the API failed: {e}");
            refused(Refusal::new(
                StatusCode::CONFLICT,
                "The purge did not complete",
                format!(
                    "{}. Send it again; what was done is kept and a second purge finishes it.",
                    crate::output::printable(&first_line(&e.to_string()))
                ),
            ))
        }
    }
}

async fn act(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath((tenant, code, action)): UrlPath<(String, String, String)>,
    given: Result<Json<ReasonBody>, JsonRejection>,
) -> Response {
    let what = "acting on customers";
    let caller = match allowed(&shared, &headers, peer, &tenant, Role::Support, what) {
        Ok((caller, _)) => caller,
        Err(r) => return r,
    };
    let Some(action) = scheduler::Action::parse(&action) else {
        return refused(Refusal::new(
            StatusCode::NOT_FOUND,
            "No such action",
            "The actions are accept, skip, replay, restrict, unrestrict, unsuppress, export, \
             reveal and purge.",
        ));
    };
    let given = match body(given, "{\"reason\"}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(code) = customer_code(&code) else {
        return no_customer();
    };
    let Some(reason) = reason_of(&given.reason) else {
        return no_reason();
    };
    let done =
        scheduler::support_action(&shared, &tenant, &code, action, &caller.actor(), &reason).await;
    match done {
        Ok(scheduler::Done::Exported(document)) => Json(document).into_response(),
        Ok(scheduler::Done::Said(said)) => {
            Json(json!({ "action": action.name(), "customer": code, "done": said })).into_response()
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant, customer = %code, action = action.name(), "an action through the API failed: {e}");
            refused(Refusal::new(
                StatusCode::CONFLICT,
                "The action did not complete",
                crate::output::printable(&first_line(&e.to_string())),
            ))
        }
    }
}
