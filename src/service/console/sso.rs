//! Single sign-on with OpenID Connect (`[console.oidc]`): the authorization-code flow
//! with PKCE and a nonce, through the console's own `/login/oidc/callback`.
//!
//! The identity provider says who someone is; the users file says what they may do. A
//! person is let in only if the ID token verifies (signature from the provider's keys,
//! issuer, audience, expiry, the nonce of this login) and the claim `user_claim` names
//! names a user of the users file added for sign-on (`users add --no-password`); an
//! email counts only when the provider says it is verified. A user with a password is
//! never signed on this way, so an account at the provider cannot become `admin`. The pending login is bound to the browser that started it by a cookie,
//! used once, and expires, as Connect to Visma's is.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{console, constant_time_eq, cookie, pages, random_token, start_session, Shared, Users};
use crate::config::values::Env;
use crate::error::{Error, Result};
use crate::sink::auth::BoundedHttp;

pub(super) const START_PATH: &str = "/login/oidc";
pub(super) const CALLBACK_PATH: &str = "/login/oidc/callback";
/// Ties the provider's redirect back to the browser that started the login. `Lax`, as
/// the redirect comes from the provider's site.
const SSO_COOKIE: &str = "ovs_sso";
/// How long a sign-on may take, from the button to the provider's redirect back.
const SIGN_ON_WITHIN: Duration = Duration::from_secs(600);
/// The most sign-ons under way at once.
const MOST_PENDING: usize = 256;
/// How long the provider's discovery document and keys are used before they are read
/// again (keys rotate).
const DISCOVERY_FOR: Duration = Duration::from_secs(3600);
/// The longest wait for the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: IssuerUrl,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub scopes: Vec<String>,
    pub user_claim: UserClaim,
    /// The login page's button.
    pub label: String,
}

/// The ID token claim that names the user in the users file. Not `preferred_username`:
/// OpenID Connect Core (5.7) warns it is neither unique nor stable, and many providers
/// let the user change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserClaim {
    /// Only when `email_verified` is true.
    Email,
    Subject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: String,
    client_id: String,
    client_secret_env: Option<String>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_user_claim")]
    user_claim: String,
    #[serde(default = "default_label")]
    label: String,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into()]
}
fn default_user_claim() -> String {
    "email".into()
}
fn default_label() -> String {
    "Sign in with single sign-on".into()
}

impl RawOidc {
    pub(super) fn resolve(self, file: &Path, env: &dyn Env) -> Result<OidcConfig> {
        let bad = |key: &str, why: &str| {
            Error::config(format!("{}: [console.oidc] {key}: {why}", file.display()))
        };
        let url = url::Url::parse(&self.issuer).map_err(|_| {
            bad(
                "issuer",
                "is not a URL such as \"https://login.example.com\"",
            )
        })?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
            return Err(bad("issuer", "must be https (http only on loopback)"));
        }
        let issuer =
            IssuerUrl::new(self.issuer.clone()).map_err(|_| bad("issuer", "is not a URL"))?;
        let printable =
            |s: &str| !s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control);
        if !printable(&self.client_id) {
            return Err(bad("client_id", "is 1 to 200 printable characters"));
        }
        let client_secret = self
            .client_secret_env
            .as_deref()
            .map(|var| {
                crate::config::values::check_env_name(var)
                    .map_err(|why| bad("client_secret_env", &why))?;
                crate::config::values::secret(file, env, "[console.oidc] client_secret_env", var)
            })
            .transpose()?;
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(bad("scopes", "must include \"openid\""));
        }
        if self.scopes.len() > 20 || !self.scopes.iter().all(|s| printable(s) && !s.contains(' ')) {
            return Err(bad("scopes", "are at most 20 words without spaces"));
        }
        let user_claim = match self.user_claim.as_str() {
            "email" => UserClaim::Email,
            "sub" => UserClaim::Subject,
            _ => return Err(bad("user_claim", "is email or sub")),
        };
        if user_claim == UserClaim::Email && !self.scopes.iter().any(|s| s == "email") {
            return Err(bad(
                "scopes",
                "must include \"email\" when user_claim is email",
            ));
        }
        if !printable(&self.label) {
            return Err(bad("label", "is 1 to 200 printable characters"));
        }
        Ok(OidcConfig {
            issuer,
            client_id: self.client_id,
            client_secret,
            scopes: self.scopes,
            user_claim,
            label: self.label,
        })
    }
}

/// The provider's metadata, as last discovered.
pub(super) struct Discovered {
    at: Instant,
    metadata: CoreProviderMetadata,
}

pub(super) struct Pending {
    binding: String,
    started: Instant,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
}

fn http_client() -> std::result::Result<BoundedHttp, reqwest::Error> {
    // No redirects: the provider's endpoints are taken as discovered (and SSRF stays out).
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROVIDER_TIMEOUT)
        .build()
        .map(BoundedHttp)
}

/// The provider's metadata and keys: cached for `DISCOVERY_FOR`.
async fn metadata(
    shared: &Shared,
    oidc: &OidcConfig,
) -> std::result::Result<CoreProviderMetadata, String> {
    let c = console(shared);
    if let Some(d) = c
        .discovered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        if d.at.elapsed() < DISCOVERY_FOR {
            return Ok(d.metadata.clone());
        }
    }
    let http = http_client().map_err(|e| e.to_string())?;
    let metadata = CoreProviderMetadata::discover_async(oidc.issuer.clone(), &http)
        .await
        .map_err(|e| format!("discovery at {} failed: {e}", oidc.issuer.as_str()))?;
    *c.discovered.lock().unwrap_or_else(|e| e.into_inner()) = Some(Discovered {
        at: Instant::now(),
        metadata: metadata.clone(),
    });
    Ok(metadata)
}

fn unavailable(why: &str) -> Response {
    tracing::warn!("single sign-on: {why}");
    pages::problem(
        StatusCode::BAD_GATEWAY,
        "Single sign-on is not available",
        "The identity provider could not be reached or answered wrongly; the service's log \
         says why. Log in with a password, or try again later.",
    )
}

/// The client as discovered: its authorization endpoint set, its token endpoint if the
/// provider has one.
type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

async fn client(
    shared: &Shared,
    oidc: &OidcConfig,
    redirect: url::Url,
) -> std::result::Result<ProviderClient, String> {
    let metadata = metadata(shared, oidc).await?;
    let secret = oidc
        .client_secret
        .as_ref()
        .map(|s| ClientSecret::new(s.expose_secret().to_string()));
    Ok(
        CoreClient::from_provider_metadata(metadata, ClientId::new(oidc.client_id.clone()), secret)
            .set_redirect_uri(RedirectUrl::from_url(redirect)),
    )
}

/// Starts a sign-on: to the provider's authorization endpoint, with PKCE and a nonce.
/// Throttled per address as password logins are.
pub(super) async fn start(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    let c = console(&shared);
    if !c.address_may_try(peer.ip()) {
        return pages::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many logins",
            "Too many attempts from this address: wait a minute and try again.",
        );
    }
    let (Some(oidc), Some(redirect)) = (c.config.oidc.as_ref(), c.sso_callback.clone()) else {
        return pages::problem(
            StatusCode::NOT_FOUND,
            "Single sign-on is not set up",
            "Log in with your user name and password.",
        );
    };
    let client = match client(&shared, oidc, redirect).await {
        Ok(c) => c,
        Err(why) => return unavailable(&why),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in oidc.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
    let binding = random_token();
    {
        let mut pending = c.sign_ons();
        pending.retain(|_, p| p.started.elapsed() < SIGN_ON_WITHIN);
        // Full: the oldest gives way, so sign-ons begun and dropped cannot lock others out.
        while pending.len() >= MOST_PENDING {
            let oldest = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => pending.remove(&k),
                None => break,
            };
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                binding: binding.clone(),
                started: Instant::now(),
                nonce,
                verifier,
            },
        );
    }
    let mut to = Redirect::to(url.as_str()).into_response();
    to.headers_mut().append(
        header::SET_COOKIE,
        c.bound_cookie(SSO_COOKIE, &binding, CALLBACK_PATH, SIGN_ON_WITHIN),
    );
    to
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The provider's redirect back: the code exchanged, the ID token verified, the user
/// found in the users file, a session started.
pub(super) async fn callback(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Response {
    let c = console(&shared);
    let refused = |why: &str, audit: &str| {
        c.audit(serde_json::json!({
            "event": "login-failed", "via": "oidc", "why": audit,
            "address": peer.ip().to_string(),
        }));
        pages::problem(StatusCode::FORBIDDEN, "Not signed in", why)
    };
    let Some(oidc) = c.config.oidc.as_ref() else {
        return pages::problem(StatusCode::NOT_FOUND, "Single sign-on is not set up", "");
    };
    let state = back.state.unwrap_or_default();
    let binding = cookie(&headers, SSO_COOKIE);
    // Taken only by the browser that started it: anyone else who learns the state can
    // neither use nor cancel it.
    let pending = {
        let mut pending = c.sign_ons();
        let found = pending
            .iter()
            .find(|(k, p)| {
                constant_time_eq(k.as_bytes(), state.as_bytes())
                    && binding
                        .as_ref()
                        .is_some_and(|b| constant_time_eq(b.as_bytes(), p.binding.as_bytes()))
            })
            .map(|(k, _)| k.clone());
        found.and_then(|k| pending.remove(&k))
    };
    let Some(pending) = pending.filter(|p| p.started.elapsed() < SIGN_ON_WITHIN) else {
        return refused(
            "This sign-on is unknown, used, expired or was started in another browser. \
             Start again from the login page.",
            "unknown state or browser",
        );
    };
    if back.error.is_some() {
        return refused(
            "The identity provider did not sign you in. Start again from the login page.",
            "provider refused",
        );
    }
    let Some(code) = back.code.filter(|c| !c.is_empty() && c.len() <= 2048) else {
        return refused("The identity provider sent no code.", "no code");
    };
    let user_claim = match verified_claim(&shared, oidc, code, pending).await {
        Ok(v) => v,
        Err(why) => {
            tracing::warn!("single sign-on refused: {why}");
            // The provider may have rotated its keys: the next sign-on reads them again.
            *c.discovered.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return refused(
                "The identity provider's answer did not verify; the service's log says why.",
                "token did not verify",
            );
        }
    };
    let users = match c.users() {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(user) = users.get(&user_claim).filter(|u| !Users::has_password(u)) else {
        c.audit(serde_json::json!({
            "event": "login-failed", "via": "oidc", "why": "no such user",
            "address": peer.ip().to_string(),
        }));
        return pages::problem(
            StatusCode::FORBIDDEN,
            "No account here",
            "You are signed in at the identity provider, but this console has no user of \
             that name for single sign-on: ask an admin to add you with `users add NAME \
             --no-password`.",
        );
    };
    let (name, role) = (user.name.clone(), user.role);
    let mut to = start_session(c, &name, role, peer.ip(), "oidc");
    to.headers_mut().append(
        header::SET_COOKIE,
        c.bound_cookie(SSO_COOKIE, "", CALLBACK_PATH, Duration::ZERO),
    );
    to
}

/// Exchanges the code and verifies the ID token; answers the claim that names the user.
async fn verified_claim(
    shared: &Shared,
    oidc: &OidcConfig,
    code: String,
    pending: Pending,
) -> std::result::Result<String, String> {
    let c = console(shared);
    let redirect = c.sso_callback.clone().ok_or("no callback address")?;
    let client = client(shared, oidc, redirect).await?;
    let http = http_client().map_err(|e| e.to_string())?;
    let answer = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| format!("the provider has no token endpoint: {e}"))?
        .set_pkce_verifier(pending.verifier)
        .request_async(&http)
        .await
        .map_err(|e| format!("the code exchange failed: {e}"))?;
    let token = answer.id_token().ok_or("the answer holds no ID token")?;
    let claims = token
        .claims(&client.id_token_verifier(), &pending.nonce)
        .map_err(|e| format!("the ID token does not verify: {e}"))?;
    let value = match oidc.user_claim {
        UserClaim::Email => {
            if claims.email_verified() != Some(true) {
                return Err("the email is not verified by the provider".into());
            }
            claims.email().map(|e| e.as_str().to_string())
        }
        UserClaim::Subject => Some(claims.subject().as_str().to_string()),
    };
    let value = value.ok_or("the ID token lacks the user claim")?;
    if !super::users::valid_name(&value) {
        return Err("the user claim is not a user name this console can hold".into());
    }
    Ok(value)
}
