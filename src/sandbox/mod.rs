//! Loopback simulators of Opter and the three Visma registers (eAccounting, Visma.net
//! ERP, e-conomic), served together over real HTTP on one port.
pub mod generate;

mod common;
pub mod eaccounting;
pub mod economic;
pub mod export_files;
pub mod faults;
pub mod opter;
pub mod tenant;
pub mod visma_net;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
pub use economic::{SANDBOX_ECONOMIC_AGREEMENT_GRANT_TOKEN, SANDBOX_ECONOMIC_APP_SECRET_TOKEN};
pub use faults::{Faults, Redirect, TokenFault, TokenFaultBody, FAULT_STATUSES};
pub use opter::SANDBOX_OPTER_API_KEY;
pub use tenant::{
    bundled_customers, simulator, write_sandbox_config, write_sandbox_config_for,
    write_tenant_config, TenantSource, BUNDLED_CUSTOMERS,
};
pub use visma_net::{
    SANDBOX_VISMA_NET_CLIENT_ID, SANDBOX_VISMA_NET_CLIENT_SECRET, SANDBOX_VISMA_NET_TENANT_ID,
    SANDBOX_VISMA_NET_UNLICENSED_TENANT_ID,
};

/// How long `shutdown` waits for open connections before dropping them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub struct SandboxOptions {
    /// Opter customers (full JSON), in order.
    pub customers: Vec<Value>,
    /// 0 picks a free port; the server binds 127.0.0.1 only.
    pub port: u16,
    /// Per client and endpoint; 0 means unlimited.
    pub eaccounting_rate_limit_per_minute: u32,
    /// Visma.net's limit per client and company per hour (Visma publishes no number);
    /// 0 means unlimited.
    pub visma_net_rate_limit_per_hour: u32,
    /// e-conomic's token bucket per agreement per minute; 0 means unlimited.
    pub economic_rate_limit_per_minute: u32,
    /// e-conomic's fair use: calls per agreement in any 24 hours (50,000); 0: no cap.
    pub economic_fair_use_calls_per_day: u32,
    /// eAccounting's and e-conomic's limits count per this window (a minute, like
    /// Visma's), Visma.net's per 60 times it (an hour); tests may scale it down.
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
            visma_net_rate_limit_per_hour: 36_000,
            economic_rate_limit_per_minute: 10_000,
            economic_fair_use_calls_per_day: crate::sink::economic::FAIR_USE_CALLS_PER_DAY,
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
    pub visma_net_client_id: String,
    pub visma_net_client_secret: String,
    pub visma_net_tenant_id: String,
    pub economic_app_secret_token: String,
    pub economic_agreement_grant_token: String,
}

/// A running sandbox. Dropping it (the last of them, for `start_many`) stops the server,
/// like `shutdown` without waiting.
pub struct Sandbox {
    addr: SocketAddr,
    /// The path its routes sit under: empty alone, `/NAME` beside others on one port.
    prefix: String,
    credentials: SandboxCredentials,
    opter: opter::SharedOpter,
    visma: eaccounting::SharedVisma,
    visma_net: visma_net::SharedVismaNet,
    economic: economic::SharedEconomic,
    server: Arc<Server>,
}

/// The one server behind one or more sandboxes.
struct Server {
    /// Dropping it (with the last sandbox) stops the server too.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A sandbox's state and routes, before it is served.
struct Built {
    credentials: SandboxCredentials,
    opter: opter::SharedOpter,
    visma: eaccounting::SharedVisma,
    visma_net: visma_net::SharedVismaNet,
    economic: economic::SharedEconomic,
}

/// The request header that tells the simulators the prefix they are served under, so
/// the URLs they answer with (e-conomic's `self`, Visma.net's `Location`) lead back.
pub(crate) const PREFIX_HEADER: &str = "x-sandbox-prefix";

impl Built {
    fn new(opts: SandboxOptions) -> anyhow::Result<(Built, Router)> {
        let opter = opter::new_state(opts.customers);
        let (visma, refresh) = eaccounting::new_state(eaccounting::VismaConfig {
            rate_limit_per_minute: opts.eaccounting_rate_limit_per_minute,
            rate_window: opts.rate_limit_window,
            access_token_ttl_secs: opts.access_token_ttl_secs,
            record_requests: opts.record_requests,
        });
        let visma_net = visma_net::new_state(visma_net::VismaNetConfig {
            rate_limit_per_hour: opts.visma_net_rate_limit_per_hour,
            rate_window: opts.rate_limit_window * 60,
            access_token_ttl_secs: opts.access_token_ttl_secs,
            record_requests: opts.record_requests,
        });
        let economic = economic::new_state(economic::EconomicConfig {
            rate_limit_per_minute: opts.economic_rate_limit_per_minute,
            rate_window: opts.rate_limit_window,
            fair_use_calls_per_day: opts.economic_fair_use_calls_per_day,
            record_requests: opts.record_requests,
        });
        let sites = all_sites(&visma, &visma_net, &economic);
        (sites.set)(opts.faults).map_err(|e| anyhow::anyhow!("invalid sandbox faults: {e}"))?;
        let router = Router::new()
            .route("/_sandbox/health", get(health))
            .merge(opter::router(opter.clone()))
            .merge(eaccounting::router(visma.clone()))
            .merge(visma_net::router(visma_net.clone()))
            .merge(economic::router(economic.clone()))
            .merge(faults::router(sites))
            .fallback(no_route);
        let built = Built {
            credentials: SandboxCredentials {
                opter_api_key: SANDBOX_OPTER_API_KEY.to_string(),
                visma_client_id: SANDBOX_CLIENT_ID.to_string(),
                visma_client_secret: SANDBOX_CLIENT_SECRET.to_string(),
                visma_refresh_token: refresh,
                visma_net_client_id: SANDBOX_VISMA_NET_CLIENT_ID.to_string(),
                visma_net_client_secret: SANDBOX_VISMA_NET_CLIENT_SECRET.to_string(),
                visma_net_tenant_id: SANDBOX_VISMA_NET_TENANT_ID.to_string(),
                economic_app_secret_token: SANDBOX_ECONOMIC_APP_SECRET_TOKEN.to_string(),
                economic_agreement_grant_token: SANDBOX_ECONOMIC_AGREEMENT_GRANT_TOKEN.to_string(),
            },
            opter,
            visma,
            visma_net,
            economic,
        };
        Ok((built, router))
    }
}

/// `router`, telling the simulators the prefix they sit under (any such header a client
/// sent is replaced).
fn under(router: Router, prefix: &str) -> Router {
    let value = axum::http::HeaderValue::from_str(prefix).expect("prefixes are checked");
    router.layer(axum::middleware::from_fn(
        move |mut req: axum::extract::Request, next: axum::middleware::Next| {
            req.headers_mut().insert(PREFIX_HEADER, value.clone());
            next.run(req)
        },
    ))
}

/// A name a sandbox can be served under beside others: lower-case letters, digits and
/// `-`, starting with a letter, as a tenant id is.
fn is_sandbox_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Sandbox {
    /// Binds, spawns the server on the current tokio runtime and returns once listening.
    /// Fails, among other reasons, when `opts.faults` is invalid.
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let port = opts.port;
        let (built, router) = Built::new(opts)?;
        let (addr, server) = serve(under(router, ""), port).await?;
        Ok(Sandbox::from_built(built, addr, String::new(), server))
    }

    /// Independent sandboxes on one port, each under `/NAME`: their own customers,
    /// credentials, rate limits and faults (each `opts.port` is ignored). `/_sandbox/sandboxes`
    /// lists the names.
    pub async fn start_many(
        port: u16,
        sandboxes: Vec<(String, SandboxOptions)>,
    ) -> anyhow::Result<Vec<Sandbox>> {
        let mut app = Router::new();
        let mut built = Vec::new();
        let mut names = Vec::new();
        for (name, opts) in sandboxes {
            anyhow::ensure!(
                is_sandbox_name(&name) && !names.contains(&name),
                "sandbox names are distinct, of lower-case letters, digits and '-'"
            );
            let prefix = format!("/{name}");
            let (b, router) = Built::new(opts)?;
            app = app.nest(&prefix, under(router, &prefix));
            built.push((prefix, b));
            names.push(name);
        }
        let app = app
            .route("/_sandbox/health", get(health))
            .route(
                "/_sandbox/sandboxes",
                get(move || async move { Json(json!({ "sandboxes": names })) }),
            )
            .fallback(no_route);
        let (addr, server) = serve(app, port).await?;
        Ok(built
            .into_iter()
            .map(|(prefix, b)| Sandbox::from_built(b, addr, prefix, server.clone()))
            .collect())
    }

    fn from_built(built: Built, addr: SocketAddr, prefix: String, server: Arc<Server>) -> Sandbox {
        Sandbox {
            addr,
            prefix,
            credentials: built.credentials,
            opter: built.opter,
            visma: built.visma,
            visma_net: built.visma_net,
            economic: built.economic,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its routes start: `http://ADDR`, or `http://ADDR/NAME` beside others.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.prefix)
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

    /// Visma.net ERP's API root (`.../v1/customer` below it).
    pub fn visma_net_api_base(&self) -> String {
        format!("{}/visma-net/api", self.base_url())
    }

    /// Visma Connect's token endpoint for Visma.net (client credentials + tenant_id).
    pub fn visma_net_token_url(&self) -> String {
        format!("{}/visma-net/connect/token", self.base_url())
    }

    /// e-conomic's REST root (`.../customers` below it).
    pub fn economic_api_base(&self) -> String {
        format!("{}/economic/api", self.base_url())
    }

    /// Stored Visma.net customers, in insertion order.
    pub fn visma_net_customers(&self) -> Vec<Value> {
        visma_net::customers(&self.visma_net)
    }

    /// The /visma-net request log.
    pub fn visma_net_requests(&self) -> Vec<Value> {
        visma_net::requests(&self.visma_net)
    }

    /// Stored e-conomic customers, each with its `contacts`, in insertion order.
    pub fn economic_customers(&self) -> Vec<Value> {
        economic::customers(&self.economic)
    }

    /// The /economic request log.
    pub fn economic_requests(&self) -> Vec<Value> {
        economic::requests(&self.economic)
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
        let sites = all_sites(&self.visma, &self.visma_net, &self.economic);
        if let Err(e) = (sites.set)(faults) {
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

    /// Graceful stop of the server (of every sandbox on its port); connections still
    /// open after a few seconds are dropped.
    pub async fn shutdown(self) {
        if let Some(stop) = lock(&self.server.stop).take() {
            let _ = stop.send(());
        }
        let task = lock(&self.server.task).take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Serves until the process is stopped (the `sandbox` CLI command).
    pub async fn wait(self) {
        // `self` keeps `stop` alive: dropping it would stop the server.
        let task = lock(&self.server.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds 127.0.0.1:`port` (0: any free one) and serves `app` on the current runtime.
async fn serve(app: Router, port: u16) -> anyhow::Result<(SocketAddr, Arc<Server>)> {
    // Each request carries its connection's abort handle, for dropped writes.
    let app = app.into_make_service_with_connect_info::<faults::Conn>();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let listener = faults::FaultListener::new(listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Resolves on `shutdown` and also when the last Sandbox is dropped.
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
    Ok((
        addr,
        Arc::new(Server {
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        }),
    ))
}

/// The three registers' faults, set and read together.
fn all_sites(
    visma: &eaccounting::SharedVisma,
    visma_net: &visma_net::SharedVismaNet,
    economic: &economic::SharedEconomic,
) -> faults::AllSites {
    let (a, b, c) = (visma.clone(), visma_net.clone(), economic.clone());
    let get = visma.clone();
    faults::AllSites {
        get: std::sync::Arc::new(move || eaccounting::faults(&get)),
        set: std::sync::Arc::new(move |f: Faults| {
            f.validate()?;
            eaccounting::set_faults(&a, f.clone())?;
            visma_net::set_faults(&b, f.clone())?;
            economic::set_faults(&c, f)
        }),
    }
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn no_route() -> Response {
    common::message(
        axum::http::StatusCode::NOT_FOUND,
        "no such route in the sandbox",
    )
}
