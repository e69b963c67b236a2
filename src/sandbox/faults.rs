//! Seeded fault injection for the simulated Visma APIs.
//!
//! Faults apply to each register's API routes only (`/visma/v2`, `/visma-net/api`,
//! `/economic/api`), except [`TokenFault`], which applies to the token endpoints
//! (`/visma/connect/token`, `/visma-net/connect/token`) only; never to Opter or
//! `/_sandbox`. A [`Redirect`] answers every API request with a redirect, before any
//! draw of the RNG (a register that moved, or an `api_base` that points at the wrong
//! place), so it leaves the seeded order of the other faults as it was. Each register has
//! its own `ChaCha8Rng`, seeded from [`Faults::seed`], behind its state's mutex, so a
//! given order of requests meets the same faults. Per API request, in arrival order,
//! the RNG gives:
//!
//! 1. one draw against `fail_rate`, then, when it fails, one draw choosing the status
//!    from `statuses`;
//! 2. for a customer write (POST/PUT/DELETE) that did not fail, one draw against
//!    `drop_after_commit_rate`;
//! 3. only while `corrupt_read_rate` is above 0, for any other request that did not
//!    fail, one draw against it and, when it hits, one draw choosing how the answer's
//!    body is spoiled (applied to a successful GET only).
//!
//! Order within a request: `latency_ms` sleep, then the injected failure (answered
//! before the bearer-token check and the rate limit, as a gateway in front of the API
//! would, so an injected failure uses no quota), then the real handling.
//!
//! A dropped write is committed by the handler as usual; then the connection is
//! closed without a single byte of the response. `FaultListener` wraps every
//! accepted socket in a `FaultStream` whose abort flag reaches the request as the
//! `ConnectInfo<Conn>` extension; setting it makes every later read and write of that
//! socket fail, so hyper gives up on the connection before writing the status line and
//! the socket is closed when the connection task ends.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::common;

/// Statuses `Faults::statuses` may contain.
pub const FAULT_STATUSES: &[u16] = &[429, 500, 502, 503, 504];

/// The fault configuration. `Faults::default()` injects nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seeds the RNG that decides every fault.
    pub seed: u64,
    /// Probability (0..=1) that a `/visma/v2` request is not handled and gets one of
    /// `statuses` instead.
    pub fail_rate: f64,
    /// What an injected failure answers, chosen by the RNG; each one of
    /// [`FAULT_STATUSES`].
    pub statuses: Vec<u16>,
    /// Delay before each `/visma/v2` request is handled.
    pub latency_ms: u64,
    /// Probability (0..=1) that a successful customer POST/PUT/DELETE is committed and
    /// then its connection closed without any response.
    pub drop_after_commit_rate: f64,
    /// When set, replaces the sandbox's eAccounting rate limit (0 = unlimited).
    pub rate_limit_per_minute: Option<u32>,
    /// The N of an injected 429's "Try again in N seconds.".
    pub retry_after_secs: u64,
    /// Probability (0..=1) that a successful GET is answered 200 with a body that is not
    /// readable JSON: the real body behind a UTF-8 byte-order mark, an empty body, or a
    /// proxy's HTML page, as a misbehaving gateway or cache would serve.
    pub corrupt_read_rate: f64,
    /// How the token endpoints misbehave (none by default).
    pub token: TokenFault,
    /// When set, every API request is answered with this redirect.
    pub redirect: Option<Redirect>,
}

/// A fault of the OAuth token endpoints: slow, or answering an error instead of a token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenFault {
    /// Delay before each token request is handled (or answered with `status`).
    pub delay_ms: u64,
    /// When set, every token request is answered with this status (400..=599).
    pub status: Option<u16>,
    /// The body of that answer.
    pub body: TokenFaultBody,
    /// The `error` of an `oauth` body; default `server_error`.
    pub error: Option<String>,
}

/// What a faulty token endpoint answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFaultBody {
    /// `{"error": ...}`, as an OAuth server.
    #[default]
    Oauth,
    /// A gateway's HTML error page.
    Html,
    /// Plain text that is not JSON.
    Text,
}

/// A redirect answered to every API request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// The `Location` sent, as given.
    pub location: String,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 0,
            fail_rate: 0.0,
            statuses: vec![429, 500, 503],
            latency_ms: 0,
            drop_after_commit_rate: 0.0,
            rate_limit_per_minute: None,
            retry_after_secs: 1,
            corrupt_read_rate: 0.0,
            token: TokenFault::default(),
            redirect: None,
        }
    }
}

impl Faults {
    /// The first problem with this configuration, if any.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("drop_after_commit_rate", self.drop_after_commit_rate),
            ("corrupt_read_rate", self.corrupt_read_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name}: must be between 0 and 1, got {rate}"));
            }
        }
        if self.statuses.is_empty() {
            return Err(format!(
                "statuses: must not be empty (choose from {FAULT_STATUSES:?})"
            ));
        }
        if let Some(s) = self.statuses.iter().find(|s| !FAULT_STATUSES.contains(s)) {
            return Err(format!("statuses: {s} is not one of {FAULT_STATUSES:?}"));
        }
        if let Some(s) = self.token.status.filter(|s| !(400..=599).contains(s)) {
            return Err(format!("token.status: {s} is not from 400 to 599"));
        }
        if let Some(r) = &self.redirect {
            if ![301, 302, 303, 307, 308].contains(&r.status) {
                return Err(format!("redirect.status: {} is not a redirect", r.status));
            }
            if axum::http::HeaderValue::from_str(&r.location).is_err() {
                return Err("redirect.location: not a header value".into());
            }
        }
        Ok(())
    }
}

/// The current faults and the RNG seeded from them.
pub(crate) struct FaultEngine {
    faults: Faults,
    rng: ChaCha8Rng,
}

/// What happens to one request, decided when it arrives.
pub(crate) struct Plan {
    redirect: Option<Redirect>,
    latency: Duration,
    inject: Option<u16>,
    drop_after_commit: bool,
    /// How a successful GET's body is spoiled, if it is.
    corrupt_read: Option<Spoiled>,
    retry_after_secs: u64,
}

/// How `corrupt_read_rate` spoils a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoiled {
    ByteOrderMark,
    Empty,
    Html,
}

impl FaultEngine {
    pub(crate) fn new(faults: Faults) -> FaultEngine {
        FaultEngine {
            rng: ChaCha8Rng::seed_from_u64(faults.seed),
            faults,
        }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn plan(&mut self, customer_write: bool) -> Plan {
        let f = &self.faults;
        if let Some(redirect) = &f.redirect {
            return Plan {
                redirect: Some(redirect.clone()),
                latency: Duration::ZERO,
                inject: None,
                drop_after_commit: false,
                corrupt_read: None,
                retry_after_secs: 0,
            };
        }
        // gen::<f64>() is in [0, 1): a rate of 1 always hits, 0 never does.
        let inject = if self.rng.gen::<f64>() < f.fail_rate {
            Some(f.statuses[self.rng.gen_range(0..f.statuses.len())])
        } else {
            None
        };
        let drop_after_commit =
            inject.is_none() && customer_write && self.rng.gen::<f64>() < f.drop_after_commit_rate;
        // No draw at all while off, so seeded runs without it meet the same faults.
        let corrupt_read = (inject.is_none()
            && !customer_write
            && f.corrupt_read_rate > 0.0
            && self.rng.gen::<f64>() < f.corrupt_read_rate)
            .then(|| match self.rng.gen_range(0..3) {
                0 => Spoiled::ByteOrderMark,
                1 => Spoiled::Empty,
                _ => Spoiled::Html,
            });
        Plan {
            redirect: None,
            latency: Duration::from_millis(f.latency_ms),
            inject,
            drop_after_commit,
            corrupt_read,
            retry_after_secs: f.retry_after_secs,
        }
    }
}

impl Default for FaultEngine {
    fn default() -> Self {
        FaultEngine::new(Faults::default())
    }
}

/// Response extension read by the request log: how a fault changed this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultMark {
    /// Answered with an injected status without being handled.
    Injected,
    /// Handled and committed; the connection was then closed without a response.
    Dropped,
    /// Handled; the answer's body was spoiled (see `Faults::corrupt_read_rate`).
    Spoiled,
}

impl FaultMark {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FaultMark::Injected => "injected",
            FaultMark::Dropped => "dropped",
            FaultMark::Spoiled => "spoiled",
        }
    }
}

/// A simulated register that faults can be injected into.
pub(crate) trait FaultSite: Clone + Send + Sync + 'static {
    /// Draws the faults for one request from the site's seeded engine.
    fn plan(&self, customer_write: bool) -> Plan;
    /// Whether a matched route template is a customer resource (writes may be dropped).
    fn is_customer_path(path: &str) -> bool;
    /// What the product (or the gateway in front of it) answers with `status`.
    fn injected(status: u16, retry_after_secs: u64) -> Response;
    /// How the site's token endpoint misbehaves; it has none by default.
    fn token_fault(&self) -> TokenFault {
        TokenFault::default()
    }
}

/// Route layer for a register's token endpoint: `Faults::token`'s delay, then its
/// answer instead of a token, if it has one.
pub(crate) async fn token_fault_guard<S: FaultSite>(
    State(site): State<S>,
    req: Request,
    next: Next,
) -> Response {
    let fault = site.token_fault();
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    let Some(status) = fault.status else {
        return next.run(req).await;
    };
    let mut resp = match fault.body {
        TokenFaultBody::Oauth => {
            let error = fault.error.as_deref().unwrap_or("server_error");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, Json(serde_json::json!({ "error": error }))).into_response()
        }
        TokenFaultBody::Html => gateway_page(status),
        TokenFaultBody::Text => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Bad Request",
        )
            .into_response(),
    };
    resp.extensions_mut().insert(FaultMark::Injected);
    resp
}

/// Route layer for a register's API routes, placed outside its credential check.
pub(crate) async fn fault_guard<S: FaultSite>(
    State(site): State<S>,
    req: Request,
    next: Next,
) -> Response {
    let write = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| S::is_customer_path(p.as_str()))
        && [Method::POST, Method::PUT, Method::DELETE].contains(req.method());
    let plan = site.plan(write);
    if let Some(redirect) = plan.redirect {
        let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
        let mut resp = (status, [(header::LOCATION, redirect.location)]).into_response();
        resp.extensions_mut().insert(FaultMark::Injected);
        return resp;
    }
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    if let Some(status) = plan.inject {
        let mut resp = S::injected(status, plan.retry_after_secs);
        resp.extensions_mut().insert(FaultMark::Injected);
        return resp;
    }
    let conn = req.extensions().get::<ConnectInfo<Conn>>().cloned();
    let read = req.method() == Method::GET;
    let mut resp = next.run(req).await;
    if let Some(spoiled) = plan
        .corrupt_read
        .filter(|_| read && resp.status().is_success())
    {
        let (mut parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let spoiled: Bytes = match spoiled {
            Spoiled::ByteOrderMark => [&b"\xEF\xBB\xBF"[..], &body].concat().into(),
            Spoiled::Empty => Bytes::new(),
            Spoiled::Html => {
                Bytes::from_static(b"<html><body>Service temporarily overloaded</body></html>")
            }
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.extensions.insert(FaultMark::Spoiled);
        return Response::from_parts(parts, axum::body::Body::from(spoiled));
    }
    // Only a write that succeeded has something committed to lose the answer to.
    if plan.drop_after_commit && resp.status().is_success() {
        match conn {
            Some(ConnectInfo(conn)) => {
                conn.abort();
                resp.extensions_mut().insert(FaultMark::Dropped);
            }
            None => tracing::warn!("cannot drop the response: served without FaultListener"),
        }
    }
    resp
}

/// A gateway's HTML error page, as a load balancer in front of any product sends.
pub(crate) fn gateway_page(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

// ---------- control ----------

/// Every simulated register's faults, set together: the same faults (each register
/// with its own RNG seeded from them) apply to every Visma API the sandbox serves.
#[derive(Clone)]
pub(crate) struct AllSites {
    pub(crate) get: Arc<dyn Fn() -> Faults + Send + Sync>,
    pub(crate) set: Arc<dyn Fn(Faults) -> Result<(), String> + Send + Sync>,
}

/// `GET/POST/DELETE /_sandbox/faults`.
pub(crate) fn router(sites: AllSites) -> Router {
    Router::new()
        .route(
            "/_sandbox/faults",
            get(get_faults).post(post_faults).delete(delete_faults),
        )
        .with_state(sites)
}

fn bad_request(message: String) -> Response {
    common::message(StatusCode::BAD_REQUEST, message)
}

async fn get_faults(State(sites): State<AllSites>) -> Response {
    Json((sites.get)()).into_response()
}

/// Replaces the faults (absent fields take their defaults) and re-seeds the RNG.
async fn post_faults(State(sites): State<AllSites>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid fault configuration: {e}")),
    };
    match (sites.set)(faults) {
        Ok(()) => Json((sites.get)()).into_response(),
        Err(e) => bad_request(format!("invalid fault configuration: {e}")),
    }
}

async fn delete_faults(State(sites): State<AllSites>) -> Response {
    match (sites.set)(Faults::default()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad_request(e),
    }
}

// ---------- connections that can be dropped ----------

/// A TCP listener whose connections a request can abort (see `Conn`).
pub(crate) struct FaultListener(TcpListener);

impl FaultListener {
    pub(crate) fn new(listener: TcpListener) -> FaultListener {
        FaultListener(listener)
    }
}

impl Listener for FaultListener {
    type Io = FaultStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultStream, SocketAddr) {
        // axum's accept: retries and backs off on accept errors.
        let (inner, addr) = <TcpListener as Listener>::accept(&mut self.0).await;
        let stream = FaultStream {
            inner,
            aborted: Arc::new(AtomicBool::new(false)),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every read and write once aborted.
pub(crate) struct FaultStream {
    inner: TcpStream,
    aborted: Arc<AtomicBool>,
}

impl FaultStream {
    fn check(&self) -> io::Result<()> {
        if self.aborted.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "sandbox fault: connection dropped after commit",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for FaultStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Aborted: no orderly shutdown; dropping the stream closes the socket.
        this.check()?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Per-connection handle in every request's extensions (as `ConnectInfo<Conn>`).
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    aborted: Arc<AtomicBool>,
}

impl Conn {
    /// From now on the connection neither reads nor writes: the response being
    /// produced is never sent and hyper closes the connection.
    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, FaultListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        Conn {
            aborted: stream.io().aborted.clone(),
        }
    }
}
