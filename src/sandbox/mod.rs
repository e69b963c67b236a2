//! Loopback simulators of Opter and Visma eAccounting, served over real HTTP.
pub mod generate;

pub mod eaccounting;
pub mod faults;
pub mod opter;

use std::net::SocketAddr;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use eaccounting::{
    CUSTOMER_REQUIRED, CUSTOMER_STRING_LIMITS, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET,
    SANDBOX_TERMS_OF_PAYMENT_ID,
};
pub use faults::{Faults, FAULT_STATUSES};
pub use opter::SANDBOX_OPTER_API_KEY;

/// How long `shutdown` waits for open connections before dropping them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub struct SandboxOptions {
    /// Opter customers (full JSON), in order.
    pub customers: Vec<Value>,
    /// 0 picks a free port; the server binds 127.0.0.1 only.
    pub port: u16,
    /// Per client and endpoint; 0 means unlimited.
    pub eaccounting_rate_limit_per_minute: u32,
    /// Window the limit counts in: a minute, like Visma's; tests may scale it down.
    pub rate_limit_window: std::time::Duration,
    pub access_token_ttl_secs: u64,
    pub record_requests: bool,
    /// Faults injected into `/visma/v2` from the start (none by default); they can be
    /// changed later with `Sandbox::set_faults` or `/_sandbox/faults`.
    pub faults: Faults,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            customers: Vec::new(),
            port: 0,
            eaccounting_rate_limit_per_minute: 600,
            rate_limit_window: eaccounting::RATE_WINDOW,
            access_token_ttl_secs: 3600,
            record_requests: true,
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCredentials {
    pub opter_api_key: String,
    pub visma_client_id: String,
    pub visma_client_secret: String,
    /// The initial refresh token; valid once (tokens rotate).
    pub visma_refresh_token: String,
}

/// A running sandbox. Dropping it stops the server, like `shutdown` without waiting.
pub struct Sandbox {
    addr: SocketAddr,
    credentials: SandboxCredentials,
    opter: opter::SharedOpter,
    visma: eaccounting::SharedVisma,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Binds, spawns the server on the current tokio runtime and returns once listening.
    /// Fails, among other reasons, when `opts.faults` is invalid.
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let opter = opter::new_state(opts.customers);
        let (visma, refresh) = eaccounting::new_state(eaccounting::VismaConfig {
            rate_limit_per_minute: opts.eaccounting_rate_limit_per_minute,
            rate_window: opts.rate_limit_window,
            access_token_ttl_secs: opts.access_token_ttl_secs,
            record_requests: opts.record_requests,
        });
        eaccounting::set_faults(&visma, opts.faults)
            .map_err(|e| anyhow::anyhow!("invalid sandbox faults: {e}"))?;
        let app = Router::new()
            .route("/_sandbox/health", get(health))
            .merge(opter::router(opter.clone()))
            .merge(eaccounting::router(visma.clone()))
            .merge(faults::router(visma.clone()))
            .fallback(no_route)
            // Each request carries its connection's abort handle, for dropped writes.
            .into_make_service_with_connect_info::<faults::Conn>();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let listener = faults::FaultListener::new(listener);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // Resolves on `shutdown` and also when the Sandbox is dropped.
            let signal = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!("sandbox server stopped: {e}");
            }
        });
        tracing::info!("sandbox listening on http://{addr}");
        Ok(Sandbox {
            addr,
            credentials: SandboxCredentials {
                opter_api_key: SANDBOX_OPTER_API_KEY.to_string(),
                visma_client_id: SANDBOX_CLIENT_ID.to_string(),
                visma_client_secret: SANDBOX_CLIENT_SECRET.to_string(),
                visma_refresh_token: refresh,
            },
            opter,
            visma,
            stop,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn opter_api_base(&self) -> String {
        format!("{}/opter/api", self.base_url())
    }

    pub fn visma_api_base(&self) -> String {
        format!("{}/visma/v2", self.base_url())
    }

    pub fn visma_token_url(&self) -> String {
        format!("{}/visma/connect/token", self.base_url())
    }

    pub fn visma_authorize_url(&self) -> String {
        format!("{}/visma/connect/authorize", self.base_url())
    }

    pub fn credentials(&self) -> SandboxCredentials {
        self.credentials.clone()
    }

    /// Stored eAccounting customers (`CustomerApi` JSON), in insertion order.
    pub fn visma_customers(&self) -> Vec<Value> {
        eaccounting::customers(&self.visma)
    }

    /// The /visma request log, as served by `GET /_sandbox/visma/requests`.
    pub fn visma_requests(&self) -> Vec<Value> {
        eaccounting::requests(&self.visma)
    }

    /// Replaces the injected faults and re-seeds their RNG, like `POST /_sandbox/faults`.
    ///
    /// # Panics
    ///
    /// When `faults` is invalid (see `Faults::validate`).
    pub fn set_faults(&self, faults: Faults) {
        if let Err(e) = eaccounting::set_faults(&self.visma, faults) {
            panic!("invalid sandbox faults: {e}");
        }
    }

    /// The faults currently injected, as served by `GET /_sandbox/faults`.
    pub fn faults(&self) -> Faults {
        eaccounting::faults(&self.visma)
    }

    /// The Opter customers as currently stored.
    pub fn opter_customers(&self) -> Vec<Value> {
        opter::lock(&self.opter).customers.clone()
    }

    /// Graceful stop; connections still open after a few seconds are dropped.
    pub async fn shutdown(self) {
        let Sandbox { stop, server, .. } = self;
        let _ = stop.send(());
        let abort = server.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
            abort.abort();
        }
    }

    /// Serves until the process is stopped (the `sandbox` CLI command).
    pub async fn wait(self) {
        // Keep `stop` alive: dropping it would stop the server.
        let Sandbox { stop, server, .. } = self;
        let _ = server.await;
        drop(stop);
    }
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn no_route() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(json!({ "message": "no such route in the sandbox" })),
    )
        .into_response()
}
