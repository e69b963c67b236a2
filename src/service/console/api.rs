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
    console, customer_code, first_line, read_journal, reason_of, tenant_dir, timeline, Answer,
    Refusal, Role, Timeline, MOST_CONFLICTS_SHOWN,
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

impl axum::extract::FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = Response;

    /// Every API route but the description starts here: the token first.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> Result<Caller, Response> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        caller(shared, &parts.headers, peer)
    }
}

impl Caller {
    /// The tenant's journal, if the token reaches the tenant (else 404) with at least
    /// `role` (else 403): checked before anything is read or done.
    fn on(
        &self,
        shared: &Shared,
        tenant: &str,
        role: Role,
        what: &str,
    ) -> Result<PathBuf, Response> {
        let dir = tenant_dir(shared, |t| self.may_see(t), tenant).map_err(refused)?;
        if self.role < role {
            return Err(refused(Refusal::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!(
                    "This token acts as {}, which does not allow {what}; it needs {}.",
                    self.role.name(),
                    role.name()
                ),
            )));
        }
        Ok(dir)
    }
}

/// What a support request on one customer sends. `confirm` is for purge only.
#[derive(Deserialize)]
struct SupportBody {
    reason: String,
    #[serde(default)]
    confirm: String,
}

/// A support request on one customer, checked in order: the caller's right to it, the
/// body, the code, the reason.
struct Support {
    dir: PathBuf,
    code: String,
    reason: String,
    confirm: String,
}

impl Caller {
    fn support(
        &self,
        shared: &Shared,
        tenant: &str,
        code: &str,
        what: &str,
        given: Result<Json<SupportBody>, JsonRejection>,
    ) -> Result<Support, Response> {
        let dir = self.on(shared, tenant, Role::Support, what)?;
        let Ok(Json(given)) = given else {
            return Err(bad_request(
                "Bad body",
                "Send a JSON object {\"reason\"} (and for purge \"confirm\") with \
                 Content-Type: application/json.",
            ));
        };
        let code = customer_code(code).ok_or_else(no_customer)?;
        let reason = reason_of(&given.reason).ok_or_else(|| {
            bad_request(
                "A reason is needed",
                "Give \"reason\": one line, up to 500 characters; nothing was done.",
            )
        })?;
        Ok(Support {
            dir,
            code,
            reason,
            confirm: given.confirm,
        })
    }
}

fn bad_request(title: &'static str, text: &str) -> Response {
    refused(Refusal::new(StatusCode::BAD_REQUEST, title, text))
}

fn no_customer() -> Response {
    bad_request(
        "Which customer?",
        "A customer's code is 1 to 100 printable characters, percent-encoded in the path.",
    )
}

/// A failure of the service's own (a status and why) as the API's error.
fn failed(status: u16, title: &'static str, why: &str) -> Response {
    refused(Refusal::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT),
        title,
        crate::output::printable(&first_line(why)),
    ))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn tenants(State(shared): State<Arc<Shared>>, caller: Caller) -> Response {
    let rows = scheduler::summaries(&shared, |id| caller.may_see(id));
    Json(json!({ "tenants": rows })).into_response()
}

async fn tenant(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    let dir = caller.on(&shared, &tenant, Role::Viewer, "reading")?;
    let summary = scheduler::summaries(&shared, |id| id == tenant)
        .into_iter()
        .next();
    let conflicts = read_journal(dir, |j| {
        j.held(crate::journal::HoldKind::Conflict, MOST_CONFLICTS_SHOWN)
    })
    .await
    .map_err(refused)?;
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
    Ok(Json(json!({
        "tenant": summary,
        "connection": connection,
        "conflicts": conflicts,
    }))
    .into_response())
}

async fn runs(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    let dir = caller.on(&shared, &tenant, Role::Viewer, "reading")?;
    let mut runs = read_journal(dir, |j| j.runs()).await.map_err(refused)?;
    runs.sort_by_key(|r| std::cmp::Reverse(r.started));
    Ok(Json(json!({ "runs": runs })).into_response())
}

async fn run(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath((tenant, run)): UrlPath<(String, String)>,
) -> Answer {
    let dir = caller.on(&shared, &tenant, Role::Viewer, "reading")?;
    let no_run = || {
        refused(Refusal::new(
            StatusCode::NOT_FOUND,
            "No such run",
            "GET /api/v1/tenants/{tenant}/runs lists them.",
        ))
    };
    if run.len() > 100 {
        return Err(no_run());
    }
    let found = read_journal(dir, move |j| {
        let Some(found) = j.runs()?.into_iter().find(|r| r.id == run) else {
            return Ok(None);
        };
        let events = j.events(None, Some(&run))?;
        Ok(Some((found, events)))
    })
    .await
    .map_err(refused)?;
    let (run, events) = found.ok_or_else(no_run)?;
    let events: Vec<Value> = events.iter().map(|e| event_json(e, false)).collect();
    Ok(Json(json!({ "run": run, "events": events })).into_response())
}

async fn privacy(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    caller.on(&shared, &tenant, Role::Viewer, "reading")?;
    let record = scheduler::privacy_record(&shared, &tenant)
        .await
        .map_err(|(status, why)| failed(status, "The record of processing cannot be made", &why))?;
    Ok(Json(record).into_response())
}

async fn verify(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    let dir = caller.on(&shared, &tenant, Role::Viewer, "verifying the journal")?;
    let found = read_journal(dir, |j| j.verify()).await.map_err(refused)?;
    Ok(Json(found).into_response())
}

async fn run_now(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    caller.on(&shared, &tenant, Role::Admin, "starting runs")?;
    let newly = scheduler::run_now(&shared, &tenant)
        .map_err(|(status, why)| failed(status, "Not queued", &why))?;
    console(&shared).audit(json!({
        "event": "run-now", "user": caller.user, "token": caller.token, "tenant": tenant,
    }));
    let body = json!({ "queued": true, "already_queued": !newly });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
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

async fn customer(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
) -> Answer {
    let dir = caller.on(&shared, &tenant, Role::Viewer, "reading")?;
    let code = customer_code(&code).ok_or_else(no_customer)?;
    let found = timeline(dir, &code).await.map_err(refused)?;
    Ok(Json(timeline_json(&code, &found, false)).into_response())
}

async fn reveal(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
    given: Result<Json<SupportBody>, JsonRejection>,
) -> Answer {
    let asked = caller.support(&shared, &tenant, &code, "revealing values", given)?;
    let found = timeline(asked.dir, &asked.code).await.map_err(refused)?;
    console(&shared).audit(json!({
        "event": "reveal", "user": caller.user, "token": caller.token, "tenant": tenant,
        "customer": asked.code, "reason": asked.reason,
    }));
    Ok(Json(timeline_json(&asked.code, &found, true)).into_response())
}

async fn purge(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
    given: Result<Json<SupportBody>, JsonRejection>,
) -> Answer {
    let asked = caller.support(&shared, &tenant, &code, "purging customers", given)?;
    if asked.confirm.trim() != asked.code {
        return Err(bad_request(
            "Not confirmed",
            "Give \"confirm\": the customer's code exactly; nothing was done.",
        ));
    }
    let code = &asked.code;
    let receipt = scheduler::purge(&shared, &tenant, code, &caller.actor(), &asked.reason)
        .await
        .map_err(|e| {
            tracing::warn!(tenant = %tenant, customer = %code, "a purge through the API failed: {e}");
            failed(
                409,
                "The purge did not complete",
                &format!(
                    "{}. Send it again; what was done is kept and a second purge finishes it.",
                    first_line(&e.to_string())
                ),
            )
        })?;
    Ok(Json(receipt).into_response())
}

async fn act(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    UrlPath((tenant, code, action)): UrlPath<(String, String, String)>,
    given: Result<Json<SupportBody>, JsonRejection>,
) -> Answer {
    let asked = caller.support(&shared, &tenant, &code, "acting on customers", given)?;
    let action = scheduler::Action::parse(&action).ok_or_else(|| {
        refused(Refusal::new(
            StatusCode::NOT_FOUND,
            "No such action",
            "The actions are accept, skip, replay, restrict, unrestrict, unsuppress, export, \
             reveal and purge.",
        ))
    })?;
    let code = &asked.code;
    let done = scheduler::support_action(&shared, &tenant, code, action, &caller.actor(), &asked.reason)
        .await
        .map_err(|e| {
            tracing::warn!(tenant = %tenant, customer = %code, action = action.name(), "an action through the API failed: {e}");
            failed(409, "The action did not complete", &e.to_string())
        })?;
    Ok(match done {
        scheduler::Done::Exported(document) => Json(document).into_response(),
        scheduler::Done::Said(said) => {
            Json(json!({ "action": action.name(), "customer": code, "done": said })).into_response()
        }
    })
}
