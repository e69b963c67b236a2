//! The web console: server-rendered pages under `/` on `serve`'s listener, for admins
//! and support staff, with local accounts (`users`), server-side sessions and roles.
//!
//! Invariants: every page and action goes through `Console::who` (a live session, the
//! user still in the users file with the role and tenants it gives now, the CSRF token
//! on every POST); a tenant the user may not see answers as if it did not exist; no
//! personal value goes into a URL (customers by code only), a log line or the audit log
//! but the reason a person typed; everything from Opter or the register is escaped by
//! the templates; logins and reveals go to the audit log, support actions to the
//! tenant's journal as the CLI's do.

// Handlers answer a refusal with the page that says so: the error is the response.
#![allow(clippy::result_large_err)]

mod api;
mod pages;
mod sso;
pub mod users;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use super::scheduler::{self, Shared};
use super::tenants::valid_id;
use crate::error::{Error, Result};
use crate::journal::{Journal, Opening};
pub use users::{Role, Users};

const SESSION_COOKIE: &str = "ovs_session";
const LOGIN_COOKIE: &str = "ovs_login";
/// Ties Visma's redirect back to the browser that started Connect to Visma. `Lax`, as
/// the redirect comes from Visma's site, where a `Strict` cookie is not sent.
const CONNECT_COOKIE: &str = "ovs_connect";
const CALLBACK_PATH: &str = "/connect/callback";
/// How long a Connect to Visma may take, from the button to Visma's redirect back.
const CONNECT_WITHIN: Duration = Duration::from_secs(600);
/// The most logins to Visma under way at once.
const MOST_CONNECTS: usize = 64;
/// A form is a few fields: a reason, a code, a token.
const MOST_FORM_BYTES: usize = 16 * 1024;
/// The most customers in conflict a tenant's page lists.
const MOST_CONFLICTS_SHOWN: usize = 200;
/// The longest reason kept.
const MOST_REASON_CHARS: usize = 500;
/// Login attempts per user name: a burst, then one a minute.
const LOGIN_BURST: u32 = 5;
/// Login attempts per client address (an office behind one address has many users): a
/// burst, then this many a minute.
const ADDRESS_BURST: u32 = 30;
const ADDRESS_PER_MINUTE: u32 = 10;

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The users file (`opter-visma-sync users`).
    pub users: PathBuf,
    /// Where logins, failed logins and reveals are appended, one JSON object a line.
    pub audit: PathBuf,
    /// A session not used for this long ends.
    pub session_idle: Duration,
    /// A session ends this long after its login, however used.
    pub session_max: Duration,
    /// Cookies are marked `Secure` (TLS here, or at a proxy before this listener).
    pub secure_cookies: bool,
    /// `serve` terminates TLS itself: the console's own address is https.
    pub tls: bool,
    /// Single sign-on (`[console.oidc]`), beside the users file's passwords.
    pub oidc: Option<sso::OidcConfig>,
    /// Where browsers reach the console (`[console] public_url`), for the redirect of
    /// Connect to Visma; the listen address when unset and on loopback.
    pub public_url: Option<url::Url>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    #[serde(default = "default_users")]
    users: PathBuf,
    #[serde(default = "default_audit")]
    audit: PathBuf,
    #[serde(default = "default_idle")]
    session_idle_secs: u64,
    #[serde(default = "default_max")]
    session_max_secs: u64,
    /// Serve the console on a non-loopback address without TLS of its own: only behind
    /// a proxy that terminates TLS.
    #[serde(default)]
    behind_tls_proxy: bool,
    /// The console's address as browsers reach it, e.g. `https://sync.example.com`.
    public_url: Option<String>,
    oidc: Option<sso::RawOidc>,
}

fn default_users() -> PathBuf {
    "users.toml".into()
}
fn default_audit() -> PathBuf {
    "console-audit.jsonl".into()
}
fn default_idle() -> u64 {
    1800
}
fn default_max() -> u64 {
    43_200
}

impl RawConsole {
    /// `tls`: `serve` terminates TLS itself (`[service] tls_cert`); `env` holds the
    /// identity provider's client secret, if `[console.oidc]` names one.
    pub(super) fn resolve(
        self,
        file: &Path,
        listen: SocketAddr,
        tls: bool,
        env: &dyn crate::config::values::Env,
    ) -> Result<ConsoleConfig> {
        let bad = |key: &str, why: &str| {
            Error::config(format!("{}: [console] {key}: {why}", file.display()))
        };
        let range =
            |key: &str, value: u64, least: u64, most: u64| match (least..=most).contains(&value) {
                true => Ok(value),
                false => Err(bad(key, &format!("is {value}; use {least} to {most}"))),
            };
        let idle = range("session_idle_secs", self.session_idle_secs, 1, 86_400)?;
        let max = range("session_max_secs", self.session_max_secs, idle, 604_800)?;
        if !listen.ip().is_loopback() && !self.behind_tls_proxy && !tls {
            return Err(bad(
                "behind_tls_proxy",
                "the console sends passwords and session cookies, and [service] listen is \
                 not a loopback address: give [service] tls_cert and tls_key, or listen on \
                 127.0.0.1 behind a proxy that terminates TLS, or set behind_tls_proxy = \
                 true if one is in front",
            ));
        }
        let public_url = self
            .public_url
            .map(|text| public_url(&text).map_err(|why| bad("public_url", why)))
            .transpose()?;
        let oidc = self.oidc.map(|o| o.resolve(file, env)).transpose()?;
        let base = file.parent().unwrap_or(Path::new("."));
        Ok(ConsoleConfig {
            oidc,
            public_url,
            users: base.join(self.users),
            audit: base.join(self.audit),
            session_idle: Duration::from_secs(idle),
            session_max: Duration::from_secs(max),
            secure_cookies: self.behind_tls_proxy || tls,
            tls,
        })
    }
}

/// `[console] public_url`: https (or http on loopback), no path, query or fragment.
fn public_url(text: &str) -> std::result::Result<url::Url, &'static str> {
    let url =
        url::Url::parse(text).map_err(|_| "is not a URL such as \"https://sync.example.com\"")?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("must be https (http only on loopback): Visma sends the login back to it"),
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err("is the console's origin only: scheme, host and port, no path");
    }
    Ok(url)
}

/// The console's state: sessions and login throttles (in memory: a restart logs
/// everyone out).
pub(super) struct Console {
    config: ConsoleConfig,
    sessions: Mutex<HashMap<String, Session>>,
    by_user: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    /// API requests with a wrong token, per client address.
    api_refusals: DefaultKeyedRateLimiter<IpAddr>,
    /// The users file as last read, with what it looked like then.
    users_cache: Mutex<Option<(FileStamp, Arc<Users>)>>,
    audit: Mutex<()>,
    /// Logins to Visma under way, by their OAuth `state`.
    connects: Mutex<HashMap<String, Connecting>>,
    /// Where Visma sends a login back: `public_url`, or the listen address on loopback.
    callback: Option<url::Url>,
    /// Where the identity provider sends a sign-on back, on the same base.
    sso_callback: Option<url::Url>,
    /// Sign-ons under way, by their OAuth `state`.
    sign_ons: Mutex<HashMap<String, sso::Pending>>,
    /// The identity provider's metadata and keys, as last read.
    discovered: Mutex<Option<sso::Discovered>>,
}

/// What the users file looked like when read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

struct Connecting {
    tenant: String,
    user: String,
    /// The `ovs_connect` cookie's value in the browser that started it.
    binding: String,
    started: Instant,
    login: crate::sink::auth::PendingLogin,
}

struct Session {
    user: String,
    csrf: String,
    created: Instant,
    seen: Instant,
    /// Erasure receipts this session may download, by id.
    receipts: HashMap<String, serde_json::Value>,
}

/// The user behind a request, as the users file says now.
pub(super) struct Who {
    pub name: String,
    pub role: Role,
    tenants: BTreeSet<String>,
    pub csrf: String,
    session: String,
}

impl Who {
    pub fn may_see(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.contains(tenant)
    }
    fn actor(&self) -> String {
        format!("console:{}", self.name)
    }
}

impl Console {
    /// The console of a service listening on `bound`.
    pub(super) fn new(config: ConsoleConfig, bound: SocketAddr) -> Console {
        let scheme = if config.tls { "https" } else { "http" };
        let base = config.public_url.clone().or_else(|| {
            let loopback = bound.ip().is_loopback();
            loopback
                .then(|| url::Url::parse(&format!("{scheme}://{bound}")).ok())
                .flatten()
        });
        let callback = base.as_ref().and_then(|b| b.join(CALLBACK_PATH).ok());
        let sso_callback = base.and_then(|b| b.join(sso::CALLBACK_PATH).ok());
        let n = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let per_user = Quota::per_minute(NonZeroU32::MIN).allow_burst(n(LOGIN_BURST));
        let per_address = Quota::per_minute(n(ADDRESS_PER_MINUTE)).allow_burst(n(ADDRESS_BURST));
        Console {
            config,
            sessions: Mutex::default(),
            by_user: RateLimiter::keyed(per_user),
            by_address: RateLimiter::keyed(per_address),
            api_refusals: RateLimiter::keyed(per_address),
            users_cache: Mutex::new(None),
            audit: Mutex::new(()),
            connects: Mutex::default(),
            callback,
            sso_callback,
            sign_ons: Mutex::default(),
            discovered: Mutex::new(None),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line to the audit log, flushed to disk; a failure is logged, the
    /// action it records has already happened.
    fn audit(&self, entry: serde_json::Value) {
        use std::io::Write;
        let _one_at_a_time = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = entry;
        line["time"] = chrono::Utc::now().to_rfc3339().into();
        let written = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.append(true).create(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&self.config.audit)?;
            writeln!(file, "{line}")?;
            file.sync_data()
        })();
        if let Err(e) = written {
            tracing::error!(
                "cannot append to the console's audit log {}: {e}",
                self.config.audit.display()
            );
        }
    }

    /// The users file as it is now: read again whenever its size, modification time or
    /// inode changed (`users` replaces it by a rename, so every change is a new inode).
    fn users(&self) -> std::result::Result<Arc<Users>, Response> {
        let stamp = std::fs::metadata(&self.config.users)
            .ok()
            .map(|m| FileStamp {
                len: m.len(),
                modified: m.modified().ok(),
                #[cfg(unix)]
                inode: std::os::unix::fs::MetadataExt::ino(&m),
            });
        let mut cache = self.users_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(stamp), Some((cached, users))) = (&stamp, cache.as_ref()) {
            if stamp == cached {
                return Ok(users.clone());
            }
        }
        let users = Arc::new(Users::load(&self.config.users).map_err(|e| {
            tracing::error!("{e:#}");
            pages::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "The users file cannot be read",
                "The service's log says why.",
            )
        })?);
        *cache = stamp.map(|s| (s, users.clone()));
        Ok(users)
    }

    /// The request's user, if its session is live and the user still exists; POSTs
    /// must carry the session's CSRF token.
    fn who(&self, headers: &HeaderMap, csrf: Option<&str>) -> std::result::Result<Who, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(token) = cookie(headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let (name, session_csrf) = {
            let mut sessions = self.sessions();
            let now = Instant::now();
            let live = sessions.get(&token).is_some_and(|s| {
                now.duration_since(s.seen) < self.config.session_idle
                    && now.duration_since(s.created) < self.config.session_max
            });
            if !live {
                sessions.remove(&token);
                return Err(to_login());
            }
            let session = sessions.get_mut(&token).expect("checked live");
            session.seen = now;
            (session.user.clone(), session.csrf.clone())
        };
        if let Some(given) = csrf.map(str::as_bytes) {
            if !constant_time_eq(given, session_csrf.as_bytes()) {
                return Err(pages::problem(
                    StatusCode::FORBIDDEN,
                    "This form has expired",
                    "Go back, reload the page and send it again.",
                ));
            }
        }
        let users = self.users()?;
        let Some(user) = users.get(&name) else {
            self.sessions().remove(&token);
            return Err(to_login());
        };
        Ok(Who {
            name,
            role: user.role,
            tenants: user.tenants.clone(),
            csrf: session_csrf,
            session: token,
        })
    }

    /// The session's and the login form's cookies: the whole console, `Strict`.
    fn set_cookie(&self, name: &str, value: &str, max_age: Duration) -> HeaderValue {
        self.cookie_header(name, value, "/", "Strict", max_age)
    }

    /// A cookie that ties a redirect back from another site to this browser: sent only
    /// to `path`, and `Lax`, as the redirect comes from the other site.
    fn bound_cookie(&self, name: &str, value: &str, path: &str, max_age: Duration) -> HeaderValue {
        self.cookie_header(name, value, path, "Lax", max_age)
    }

    fn cookie_header(
        &self,
        name: &str,
        value: &str,
        path: &str,
        same_site: &str,
        max_age: Duration,
    ) -> HeaderValue {
        let secure = if self.config.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={}{secure}",
            max_age.as_secs()
        ))
        .expect("cookie values are hex")
    }

    fn sign_ons(&self) -> std::sync::MutexGuard<'_, HashMap<String, sso::Pending>> {
        self.sign_ons.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a login or sign-on from `ip` may be tried now.
    fn address_may_try(&self, ip: IpAddr) -> bool {
        allows(&self.by_address, &throttle_key(ip))
    }

    /// Whether a request with a wrong API token from `ip` is still answered 401 (else 429).
    fn refusal_allowed(&self, ip: IpAddr) -> bool {
        allows(&self.api_refusals, &throttle_key(ip))
    }
}

/// The most keys a throttle keeps; past it, those back at their full allowance go.
const MOST_THROTTLE_KEYS: usize = 4096;

/// Whether `limiter` lets `key` try now (and counts the try).
fn allows<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> bool
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > MOST_THROTTLE_KEYS {
        limiter.retain_recent();
    }
    limiter.check_key(key).is_ok()
}

/// What a client address is throttled as: an IPv6 address by its /64, which one client
/// holds whole; an IPv4 address (also one mapped into IPv6) as itself.
fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_one_key_for_its_slash_64_and_a_mapped_ipv4_is_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(throttle_key(a), throttle_key(b));
        assert_ne!(throttle_key(a), throttle_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let other_mapped: IpAddr = "::ffff:192.0.2.8".parse().unwrap();
        assert_eq!(throttle_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_ne!(throttle_key(mapped), throttle_key(other_mapped));
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The console's routes; `serve` adds them when `[console]` is configured.
pub(super) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/console.css", get(stylesheet))
        .route("/t/{tenant}", get(dashboard))
        .route("/t/{tenant}/runs/{run}", get(run_page))
        .route("/t/{tenant}/customer", get(customer_page))
        .route("/t/{tenant}/customer/{code}/reveal", post(reveal))
        .route("/t/{tenant}/customer/{code}/purge", post(purge))
        .route("/t/{tenant}/customer/{code}/act/{action}", post(act))
        .route("/t/{tenant}/receipts/{id}", get(receipt))
        .route("/t/{tenant}/verify", post(verify))
        .route("/t/{tenant}/run", post(run_now))
        .route("/t/{tenant}/connect", get(connect))
        .route("/t/{tenant}/privacy", get(privacy_page))
        .route(CALLBACK_PATH, get(connected))
        .route(sso::START_PATH, get(sso::start))
        .route(sso::CALLBACK_PATH, get(sso::callback))
        .nest("/api/v1", api::router())
        .layer(DefaultBodyLimit::max(MOST_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
}

/// On every console answer: no inline script or style, no framing, no sniffing, no
/// caching of pages that hold customer data, no referrer leaving the page.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn console(shared: &Shared) -> &Console {
    shared
        .console
        .as_ref()
        .expect("console routes are only added with a console")
}

/// Why a request was refused or could not be answered: a page for a browser, a JSON
/// body for the API.
pub(super) struct Refusal {
    pub status: StatusCode,
    pub title: &'static str,
    pub text: String,
}

impl Refusal {
    pub fn new(status: StatusCode, title: &'static str, text: impl Into<String>) -> Refusal {
        Refusal {
            status,
            title,
            text: text.into(),
        }
    }

    pub fn page(self) -> Response {
        pages::problem(self.status, self.title, &self.text)
    }
}

/// The tenant's journal folder, if the tenant exists, loads and `may_see` it.
fn tenant_dir(
    shared: &Shared,
    may_see: impl Fn(&str) -> bool,
    id: &str,
) -> std::result::Result<PathBuf, Refusal> {
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "No such tenant",
            "The tenants list shows those you may see.",
        )
    };
    if !valid_id(id) || !may_see(id) {
        return Err(not_found());
    }
    let table = shared.table();
    match table.tenants.get(id).map(|t| &t.loaded) {
        Some(Ok(loaded)) => Ok(loaded.journal.clone()),
        Some(Err(_)) => Err(Refusal::new(
            StatusCode::CONFLICT,
            "This tenant's config does not load",
            "GET /tenants names the file and key.",
        )),
        None => Err(not_found()),
    }
}

/// The tenant's journal folder, if the tenant exists, loads and `who` may see it.
fn tenant_journal(shared: &Shared, who: &Who, id: &str) -> std::result::Result<PathBuf, Response> {
    tenant_dir(shared, |t| who.may_see(t), id).map_err(Refusal::page)
}

/// Reads the tenant's journal on a blocking thread, open only for this read.
async fn read_journal<T: Send + 'static>(
    dir: PathBuf,
    read: impl FnOnce(&Journal) -> anyhow::Result<T> + Send + 'static,
) -> std::result::Result<T, Refusal> {
    let done = tokio::task::spawn_blocking(move || {
        let journal = Journal::open_as(&dir, Opening::Read)?;
        read(&journal)
    })
    .await;
    match done {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::warn!("the console could not read a journal: {e:#}");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The journal cannot be read now",
                "A run may hold it: try again in a moment. The service's log says more.",
            ))
        }
        Err(_) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Reading the journal stopped",
            "The service's log says more.",
        )),
    }
}

/// Who asks, on one of their tenants, with at least `role`: the session (and for a form
/// its CSRF token), then the tenant, then the role, so nothing is read or done for a user
/// who may not. Answers the user and the tenant's journal folder.
fn allowed(
    shared: &Shared,
    headers: &HeaderMap,
    csrf: Option<&str>,
    tenant: &str,
    role: Role,
    what: &str,
) -> std::result::Result<(Who, PathBuf), Response> {
    let who = console(shared).who(headers, csrf)?;
    let dir = tenant_journal(shared, &who, tenant)?;
    if who.role < role {
        return Err(forbidden(what));
    }
    Ok((who, dir))
}

fn forbidden(what: &str) -> Response {
    pages::problem(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!("Your role does not allow {what}; ask an admin."),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    login: String,
}

async fn login_page(State(shared): State<Arc<Shared>>) -> Response {
    let c = console(&shared);
    let token = random_token();
    let sso = c.config.oidc.as_ref().map(|o| o.label.as_str());
    let mut page = pages::login(&token, None, sso).into_response();
    page.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(LOGIN_COOKIE, &token, Duration::from_secs(3600)),
    );
    page
}

async fn login(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let c = console(&shared);
    // The login form's own token, against a login forged from another site.
    let pre = cookie(&headers, LOGIN_COOKIE);
    if !pre.is_some_and(|t| constant_time_eq(t.as_bytes(), form.login.as_bytes())) {
        return pages::problem(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Reload the login page and log in again.",
        );
    }
    let name = form.user.trim().to_string();
    let known_name = users::valid_name(&name);
    let address = peer.ip();
    let throttled = !c.address_may_try(address) || (known_name && !allows(&c.by_user, &name));
    if throttled {
        c.audit(serde_json::json!({
            "event": "login-throttled",
            "user": known_name.then_some(&name),
            "address": address.to_string(),
        }));
        return pages::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many logins",
            "Too many attempts for this user or from this address: wait a minute and try \
             again.",
        );
    }
    let users = match c.users() {
        Ok(u) => u,
        Err(r) => return r,
    };
    let checked = {
        let name = name.clone();
        let password = form.password;
        tokio::task::spawn_blocking(move || {
            users
                .check(&name, &password)
                .map(|u| (u.name.clone(), u.role))
        })
        .await
        .ok()
        .flatten()
    };
    let Some((user, role)) = checked else {
        c.audit(serde_json::json!({
            "event": "login-failed",
            "user": known_name.then_some(&name),
            "address": address.to_string(),
        }));
        let token = random_token();
        let mut page = (
            StatusCode::UNAUTHORIZED,
            pages::login(
                &token,
                Some("That user name and password do not match."),
                c.config.oidc.as_ref().map(|o| o.label.as_str()),
            ),
        )
            .into_response();
        page.headers_mut().append(
            header::SET_COOKIE,
            c.set_cookie(LOGIN_COOKIE, &token, Duration::from_secs(3600)),
        );
        return page;
    };
    start_session(c, &user, role, address, "password")
}

/// A new session for `user`, who proved who they are `via` a password or the identity
/// provider: the audit entry, the cookie, and on to the tenants.
fn start_session(c: &Console, user: &str, role: Role, address: IpAddr, via: &str) -> Response {
    let token = random_token();
    let now = Instant::now();
    {
        let mut sessions = c.sessions();
        sessions.retain(|_, s| {
            now.duration_since(s.seen) < c.config.session_idle
                && now.duration_since(s.created) < c.config.session_max
        });
        sessions.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                csrf: random_token(),
                created: now,
                seen: now,
                receipts: HashMap::new(),
            },
        );
    }
    c.audit(serde_json::json!({
        "event": "login",
        "user": user,
        "role": role.name(),
        "via": via,
        "address": address.to_string(),
    }));
    tracing::info!(user = %user, via, "console login");
    let mut to = Redirect::to("/").into_response();
    let h = to.headers_mut();
    h.append(
        header::SET_COOKIE,
        c.set_cookie(SESSION_COOKIE, &token, c.config.session_max),
    );
    h.append(
        header::SET_COOKIE,
        c.set_cookie(LOGIN_COOKIE, "", Duration::ZERO),
    );
    to
}

#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    let c = console(&shared);
    let who = match c.who(&headers, Some(&form.csrf)) {
        Ok(w) => w,
        Err(r) => return r,
    };
    c.sessions().remove(&who.session);
    c.audit(serde_json::json!({ "event": "logout", "user": who.name }));
    let mut to = Redirect::to("/login").into_response();
    to.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(SESSION_COOKIE, "", Duration::ZERO),
    );
    to
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLESHEET,
    )
        .into_response()
}

/// Handlers that refuse with a page answer it as their error: both sides are responses.
type Answer = std::result::Result<Response, Response>;

impl axum::extract::FromRequestParts<Arc<Shared>> for Who {
    type Rejection = Response;

    /// A page's user, from the session cookie (forms check their CSRF token too, so
    /// they call `Console::who` with it).
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> std::result::Result<Who, Response> {
        console(shared).who(&parts.headers, None)
    }
}

async fn overview(State(shared): State<Arc<Shared>>, who: Who) -> Response {
    let rows = scheduler::summaries(&shared, |id| who.may_see(id));
    pages::overview(&who, &rows).into_response()
}

async fn dashboard(
    State(shared): State<Arc<Shared>>,
    who: Who,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    let dir = tenant_journal(&shared, &who, &tenant)?;
    let summary = scheduler::summaries(&shared, |id| id == tenant)
        .into_iter()
        .next();
    let (runs, conflicts) = read_journal(dir, |j| {
        let conflicts = j.held(crate::journal::HoldKind::Conflict, MOST_CONFLICTS_SHOWN)?;
        Ok((j.runs()?, conflicts))
    })
    .await
    .map_err(Refusal::page)?;
    let connection = scheduler::connection(&shared, &tenant).await;
    Ok(pages::dashboard(
        &who,
        &tenant,
        summary.as_ref(),
        &connection,
        &runs,
        &conflicts,
    ))
}

async fn run_page(
    State(shared): State<Arc<Shared>>,
    who: Who,
    UrlPath((tenant, run)): UrlPath<(String, String)>,
) -> Answer {
    let dir = tenant_journal(&shared, &who, &tenant)?;
    let no_run = || {
        pages::problem(
            StatusCode::NOT_FOUND,
            "No such run",
            "The tenant's page lists its runs.",
        )
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
    .map_err(Refusal::page)?;
    let (run, events) = found.ok_or_else(no_run)?;
    Ok(pages::run(&who, &tenant, &run, &events))
}

/// The record of processing (GDPR Art. 30): every role may read it.
async fn privacy_page(
    State(shared): State<Arc<Shared>>,
    who: Who,
    UrlPath(tenant): UrlPath<String>,
) -> Answer {
    tenant_journal(&shared, &who, &tenant)?;
    let record = scheduler::privacy_record(&shared, &tenant)
        .await
        .map_err(|(status, why)| {
            pages::problem(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "The record of processing cannot be made",
                &crate::output::printable(&first_line(&why)),
            )
        })?;
    Ok(pages::privacy(&who, &tenant, &record))
}

#[derive(Deserialize)]
struct Search {
    code: Option<String>,
}

/// A customer code as typed: printable, bounded; what the journal is searched for.
fn customer_code(text: &str) -> Option<String> {
    let code = text.trim();
    ((1..=100).contains(&code.len()) && !code.chars().any(char::is_control))
        .then(|| code.to_string())
}

async fn customer_page(
    State(shared): State<Arc<Shared>>,
    who: Who,
    UrlPath(tenant): UrlPath<String>,
    Query(search): Query<Search>,
) -> Answer {
    let dir = tenant_journal(&shared, &who, &tenant)?;
    let Some(code) = search.code.as_deref().and_then(customer_code) else {
        return Err(pages::problem(
            StatusCode::BAD_REQUEST,
            "Which customer?",
            "Search by a customer's code (up to 100 printable characters).",
        ));
    };
    let found = timeline(dir, &code).await.map_err(Refusal::page)?;
    Ok(pages::customer(&who, &tenant, &code, &found, None, None))
}

/// A customer's events and holds, as the customer page shows them.
pub(super) struct Timeline {
    pub events: Vec<crate::journal::Event>,
    pub holds: Vec<(crate::journal::HoldKind, crate::journal::Hold)>,
}

async fn timeline(dir: PathBuf, code: &str) -> std::result::Result<Timeline, Refusal> {
    let code = code.to_string();
    read_journal(dir, move |j| {
        let events = j.events(Some(&code), None)?;
        let mut holds = Vec::new();
        for kind in crate::journal::HoldKind::ALL {
            if let Some(hold) = j.hold(kind, &code)? {
                holds.push((kind, hold));
            }
        }
        Ok(Timeline { events, holds })
    })
    .await
}

#[derive(Deserialize)]
struct Reason {
    #[serde(default)]
    csrf: String,
    reason: String,
}

/// A reason as typed: required, one line, bounded.
fn reason_of(text: &str) -> Option<String> {
    let reason = text.trim();
    (!reason.is_empty()
        && reason.chars().count() <= MOST_REASON_CHARS
        && !reason.chars().any(char::is_control))
    .then(|| reason.to_string())
}

async fn reveal(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
    Form(form): Form<Reason>,
) -> Response {
    let c = console(&shared);
    let csrf = Some(form.csrf.as_str());
    let (who, dir) = match allowed(
        &shared,
        &headers,
        csrf,
        &tenant,
        Role::Support,
        "revealing values",
    ) {
        Ok(allowed) => allowed,
        Err(r) => return r,
    };
    let (Some(code), Some(reason)) = (customer_code(&code), reason_of(&form.reason)) else {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "A reason is needed",
            "Say why you need to see the values (one line, up to 500 characters).",
        );
    };
    let found = match timeline(dir, &code).await {
        Ok(found) => found,
        Err(r) => return r.page(),
    };
    c.audit(serde_json::json!({
        "event": "reveal",
        "user": who.name,
        "tenant": tenant,
        "customer": code,
        "reason": reason,
    }));
    pages::customer(&who, &tenant, &code, &found, Some(&reason), None)
}

#[derive(Deserialize)]
struct PurgeForm {
    #[serde(default)]
    csrf: String,
    reason: String,
    confirm: String,
}

async fn purge(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath((tenant, code)): UrlPath<(String, String)>,
    Form(form): Form<PurgeForm>,
) -> Response {
    let c = console(&shared);
    let csrf = Some(form.csrf.as_str());
    let who = match allowed(
        &shared,
        &headers,
        csrf,
        &tenant,
        Role::Support,
        "purging customers",
    ) {
        Ok((who, _)) => who,
        Err(r) => return r,
    };
    let Some(code) = customer_code(&code) else {
        return pages::problem(StatusCode::BAD_REQUEST, "Which customer?", "");
    };
    if form.confirm.trim() != code {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "Not confirmed",
            "Type the customer's code exactly to confirm; nothing was done.",
        );
    }
    let Some(reason) = reason_of(&form.reason) else {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "A reason is needed",
            "Say why the customer is erased (one line, up to 500 characters); nothing was \
             done.",
        );
    };
    let receipt = match scheduler::purge(&shared, &tenant, &code, &who.actor(), &reason).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant = %tenant, customer = %code, "a console purge failed: {e}");
            return pages::problem(
                StatusCode::CONFLICT,
                "The purge did not complete",
                &format!(
                    "{}. Run it again; what was done is kept and a second run finishes it.",
                    crate::output::printable(&first_line(&e.to_string()))
                ),
            );
        }
    };
    let value = serde_json::to_value(&receipt).expect("receipts serialise");
    let id = random_token();
    if let Some(s) = c.sessions().get_mut(&who.session) {
        s.receipts.insert(id.clone(), value.clone());
    }
    pages::receipt(&who, &tenant, &value, &id).into_response()
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

async fn receipt(
    State(shared): State<Arc<Shared>>,
    who: Who,
    UrlPath((tenant, id)): UrlPath<(String, String)>,
) -> Response {
    let c = console(&shared);
    let found = c
        .sessions()
        .get(&who.session)
        .and_then(|s| s.receipts.get(&id).cloned())
        .filter(|_| who.may_see(&tenant));
    let Some(receipt) = found else {
        return pages::problem(
            StatusCode::NOT_FOUND,
            "No such receipt",
            "A receipt can be downloaded in the session that purged; the journal keeps the \
             purge event for good.",
        );
    };
    let customer = receipt["customer"].as_str().unwrap_or("customer");
    let file: String = customer
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"erasure-receipt-{tenant}-{file}.json\""),
            ),
        ],
        serde_json::to_string_pretty(&receipt).expect("serialises"),
    )
        .into_response()
}

async fn verify(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    Form(form): Form<Csrf>,
) -> Response {
    let who = match console(&shared).who(&headers, Some(&form.csrf)) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let dir = match tenant_journal(&shared, &who, &tenant) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match read_journal(dir, |j| j.verify()).await {
        Ok(found) => pages::verified(&who, &tenant, &found).into_response(),
        Err(r) => r.page(),
    }
}

async fn run_now(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
    Form(form): Form<Csrf>,
) -> Response {
    let c = console(&shared);
    let csrf = Some(form.csrf.as_str());
    let who = match allowed(
        &shared,
        &headers,
        csrf,
        &tenant,
        Role::Admin,
        "starting runs",
    ) {
        Ok((who, _)) => who,
        Err(r) => return r,
    };
    match scheduler::run_now(&shared, &tenant) {
        Ok(_) => {
            c.audit(serde_json::json!({
                "event": "run-now", "user": who.name, "tenant": tenant,
            }));
            Redirect::to(&format!("/t/{tenant}")).into_response()
        }
        Err((_, why)) => pages::problem(StatusCode::CONFLICT, "Not queued", &why),
    }
}

/// Connect to Visma: starts eAccounting's authorization-code flow with PKCE for the
/// tenant, with the console's own callback as the redirect. A link, not a form: the
/// answer sends the browser to Visma, which `form-action 'self'` would stop.
async fn connect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Response {
    let c = console(&shared);
    let what = "connecting a tenant to Visma";
    let who = match allowed(&shared, &headers, None, &tenant, Role::Admin, what) {
        Ok((who, _)) => who,
        Err(r) => return r,
    };
    let Some(callback) = c.callback.clone() else {
        return pages::problem(
            StatusCode::CONFLICT,
            "The console's address is not known",
            "Set [console] public_url in the service file to the address browsers reach \
             the console at, and register its /connect/callback with Visma as a redirect URI.",
        );
    };
    let settings = match scheduler::login_settings(&shared, &tenant).await {
        Ok((settings, _)) => settings,
        Err((_, why)) => {
            return pages::problem(
                StatusCode::CONFLICT,
                "Cannot connect this tenant",
                &first_line(&why),
            )
        }
    };
    let (authorize, login) = match crate::sink::auth::begin_login(settings, &callback) {
        Ok(started) => started,
        Err(e) => {
            return pages::problem(
                StatusCode::CONFLICT,
                "Cannot connect this tenant",
                &first_line(&format!("{e:#}")),
            )
        }
    };
    let binding = random_token();
    {
        let mut connects = c.connects.lock().unwrap_or_else(|e| e.into_inner());
        connects.retain(|_, p| p.started.elapsed() < CONNECT_WITHIN);
        if connects.len() >= MOST_CONNECTS {
            return pages::problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many logins to Visma under way",
                "Finish or abandon one, or wait ten minutes.",
            );
        }
        connects.insert(
            login.state().to_string(),
            Connecting {
                tenant: tenant.clone(),
                user: who.name.clone(),
                binding: binding.clone(),
                started: Instant::now(),
                login,
            },
        );
    }
    c.audit(serde_json::json!({ "event": "connect-start", "user": who.name, "tenant": tenant }));
    let mut to = Redirect::to(authorize.as_str()).into_response();
    to.headers_mut().append(
        header::SET_COOKIE,
        c.bound_cookie(CONNECT_COOKIE, &binding, CALLBACK_PATH, CONNECT_WITHIN),
    );
    to
}

/// Visma's redirect back: the login it answers (by `state`, in the browser that started
/// it), the code exchanged and the grant stored where `auth login` stores it.
async fn connected(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let c = console(&shared);
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = match query.len() <= 8 * 1024 {
        true => url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        false => Vec::new(),
    };
    let state = pairs
        .iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.as_str());
    let pending = state.and_then(|s| {
        let mut connects = c.connects.lock().unwrap_or_else(|e| e.into_inner());
        connects.remove(s)
    });
    let binding = cookie(&headers, CONNECT_COOKIE);
    let Some(pending) = pending.filter(|p| {
        p.started.elapsed() < CONNECT_WITHIN
            && binding.is_some_and(|b| constant_time_eq(b.as_bytes(), p.binding.as_bytes()))
    }) else {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "This login to Visma is not one under way here",
            "It expired, was used already, or was started in another browser. Start it \
             again with Connect to Visma on the tenant's page.",
        );
    };
    let tenant = pending.tenant.clone();
    let store = match scheduler::login_settings(&shared, &tenant).await {
        Ok((_, store)) => store,
        Err((_, why)) => {
            return pages::problem(
                StatusCode::CONFLICT,
                "Cannot connect this tenant",
                &first_line(&why),
            )
        }
    };
    match crate::sink::auth::finish_login(pending.login, &pairs, &store).await {
        Ok(grant) => {
            c.audit(serde_json::json!({
                "event": "connect", "user": pending.user, "tenant": tenant,
            }));
            tracing::info!(tenant = %tenant, user = %pending.user, "connected to Visma from the console");
            scheduler::logged_in(&shared, &tenant);
            pages::connected(&tenant, grant.refreshed_at)
        }
        Err(e) => {
            c.audit(serde_json::json!({
                "event": "connect-failed", "user": pending.user, "tenant": tenant,
            }));
            tracing::warn!(tenant = %tenant, "a login to Visma from the console failed: {e:#}");
            pages::problem(
                StatusCode::BAD_GATEWAY,
                "Visma did not complete the login",
                &format!(
                    "{}. Start it again with Connect to Visma.",
                    crate::output::printable(&first_line(&format!("{e:#}")))
                ),
            )
        }
    }
}

/// A support action on one customer (restrict, unrestrict, unsuppress, replay, export,
/// accept, skip), with a reason, as the CLI's command of that name.
async fn act(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    UrlPath((tenant, code, action)): UrlPath<(String, String, String)>,
    Form(form): Form<Reason>,
) -> Response {
    let csrf = Some(form.csrf.as_str());
    let what = "acting on customers";
    let (who, dir) = match allowed(&shared, &headers, csrf, &tenant, Role::Support, what) {
        Ok(allowed) => allowed,
        Err(r) => return r,
    };
    let Some(action) = scheduler::Action::parse(&action) else {
        return pages::problem(StatusCode::NOT_FOUND, "No such action", "");
    };
    let (Some(code), Some(reason)) = (customer_code(&code), reason_of(&form.reason)) else {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "A reason is needed",
            "Say why (one line, up to 500 characters); nothing was done.",
        );
    };
    let done =
        scheduler::support_action(&shared, &tenant, &code, action, &who.actor(), &reason).await;
    let said = match done {
        Ok(scheduler::Done::Exported(document)) => {
            let file: String = code
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            return (
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"export-{tenant}-{file}.json\""),
                    ),
                ],
                serde_json::to_string_pretty(&document).expect("serialises"),
            )
                .into_response();
        }
        Ok(scheduler::Done::Said(said)) => said,
        Err(e) => {
            tracing::warn!(tenant = %tenant, customer = %code, action = action.name(), "a console action failed: {e}");
            return pages::problem(
                StatusCode::CONFLICT,
                &format!("The {} did not complete", action.name()),
                &crate::output::printable(&first_line(&e.to_string())),
            );
        }
    };
    match timeline(dir, &code).await {
        Ok(found) => pages::customer(&who, &tenant, &code, &found, None, Some(&said)),
        Err(r) => r.page(),
    }
}
