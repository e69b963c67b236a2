//! The service's HTTP endpoints: health, readiness, metrics, the tenants and run-now.
//! Answers name tenants by id only and hold no personal data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::scheduler::{self, Shared};
use super::tenants::valid_id;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let console = match shared.console {
        Some(_) => super::console::router(),
        None => Router::new(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/tenants", get(tenants))
        .route("/tenants/{tenant}/run", post(run_now))
        .route("/tenants/{tenant}/resume", post(resume))
        .merge(console)
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(shared)
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "error": text }))).into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready once the folder was read and every tenant's config loads and journal opens.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let loaded = shared.loaded.load(Ordering::SeqCst);
    let table = shared.table();
    let mut problems = Vec::new();
    for (id, t) in &table.tenants {
        let problem = match (&t.loaded, &t.journal) {
            (Err(_), _) => Some("config"),
            (Ok(_), None) => Some("journal not looked at yet"),
            (Ok(_), Some(Err(_))) => Some("journal"),
            (Ok(_), Some(Ok(()))) => None,
        };
        if let Some(problem) = problem {
            problems.push(json!({ "tenant": id, "problem": problem }));
        }
    }
    let ready = loaded && problems.is_empty();
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({
        "ready": ready,
        "loaded": loaded,
        "tenants": table.tenants.len(),
        "problems": problems,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn tenants(State(shared): State<Arc<Shared>>) -> Response {
    let table = shared.table();
    let list: Vec<Value> = table
        .tenants
        .iter()
        .map(|(id, t)| {
            json!({
                "tenant": id,
                "register": t.register(),
                "state": t.state(),
                "error": t.loaded.as_ref().err(),
                "journal_error": t.journal.as_ref().and_then(|j| j.as_ref().err()),
                "paused": t.pause,
                "run_requested": t.requested.is_some(),
                "next_run": t.next_run.filter(|_| t.pause.is_none() && t.loaded.is_ok()),
                "last_run": t.last_run,
                "last_success": t.last_success,
                "last_verified": t.last_verified,
                "failures": t.failures,
                "runs": t.runs,
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn run_now(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if !valid_id(&tenant) {
        return message(StatusCode::BAD_REQUEST, "not a tenant id");
    }
    match scheduler::run_now(&shared, &tenant) {
        Ok(newly) => (
            StatusCode::ACCEPTED,
            Json(json!({ "tenant": tenant, "queued": true, "already_queued": !newly })),
        )
            .into_response(),
        Err((status, why)) => message(status_of(status), &why),
    }
}

async fn resume(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if !valid_id(&tenant) {
        return message(StatusCode::BAD_REQUEST, "not a tenant id");
    }
    match scheduler::resume(&shared, &tenant) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "tenant": tenant, "resumed": true, "queued": true })),
        )
            .into_response(),
        Err((status, why)) => message(status_of(status), &why),
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
