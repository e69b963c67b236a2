//! OAuth2 access tokens from a rotating refresh token (the `oauth2` crate).
//!
//! Visma's refresh tokens work once. The rotated token is written to the journal's
//! `credentials/` folder (owner-only, atomic rename, fsync) BEFORE the new access token
//! is handed out, so a crash can never leave us holding only a spent token.
//!
//! Architecture invariant: tokens live in `SecretString` or oauth2's secret types, whose
//! `Debug` does not print them; nothing here logs or journals a token.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AsyncHttpClient, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpClientError,
    RefreshToken, RequestTokenError, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::SinkError;
use crate::retry::{self, Attempt, RetryPolicy};

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The stored grant. `seed_sha256` remembers the env-var token present when it was
/// stored, so only a *different* token put in the env var later (a new login) replaces it.
#[derive(Serialize, Deserialize)]
pub struct Grant {
    refresh_token: String,
    #[serde(default)]
    seed_sha256: Option<String>,
    /// `login` (auth login) or `env` (grew from the env var's refresh token).
    pub origin: String,
    pub refreshed_at: DateTime<Utc>,
    /// The access token, kept so a new process does not refresh (and rotate) every time.
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    access_expires_at: Option<DateTime<Utc>>,
    /// The scopes the token endpoint said it granted, when it said.
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl Grant {
    /// Reads the grant stored at `path`, if any.
    pub fn load(path: &Path) -> anyhow::Result<Option<Grant>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the stored grant {}: {}. Log in again to replace it",
                    path.display(),
                    crate::error::without_values(&e.to_string())
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write to a temporary file (owner-only), fsync, rename over the old one, fsync
    /// the folder: after a crash there is either the old or the new token, whole.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        // Unique per writer: `serve`'s runs and its console may save in one process.
        let tmp = path.with_extension(format!(
            "tmp.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&serde_json::to_vec(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn sha256_hex(secret: &SecretString) -> String {
    hex::encode(Sha256::digest(secret.expose_secret().as_bytes()))
}

/// A valid access token and the generation it belongs to (for single-flight refresh).
#[derive(Clone)]
pub struct AccessToken {
    pub secret: SecretString,
    pub generation: u64,
}

struct Current {
    token: Option<(SecretString, Instant)>,
    generation: u64,
    /// The last token request's failure, shared with every caller that asks within the
    /// retry budget after it: one failing token endpoint is asked once per run, not once
    /// per worker and customer.
    failure: Option<(SinkError, Instant)>,
}

impl Current {
    fn new() -> Current {
        Current {
            token: None,
            generation: 0,
            failure: None,
        }
    }

    /// The failure of a token request made less than `within` ago.
    fn recent_failure(&self, within: Duration) -> Option<SinkError> {
        self.failure
            .as_ref()
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(e, _)| e.clone())
    }

    /// Remembers how a token request ended.
    fn note<T>(&mut self, outcome: &Result<T, SinkError>) {
        self.failure = outcome.as_ref().err().map(|e| (e.clone(), Instant::now()));
    }

    /// The held token, if it has not expired.
    fn valid(&self) -> Option<AccessToken> {
        match &self.token {
            Some((secret, expires)) if Instant::now() < *expires => Some(AccessToken {
                secret: secret.clone(),
                generation: self.generation,
            }),
            _ => None,
        }
    }

    /// Holds a new token as the next generation; renewed a minute early so it never
    /// expires in flight.
    fn replace(&mut self, secret: SecretString, lifetime: Duration) -> AccessToken {
        self.generation += 1;
        let expires = Instant::now()
            + lifetime
                .saturating_sub(Duration::from_secs(60))
                .max(Duration::from_secs(1));
        self.token = Some((secret.clone(), expires));
        AccessToken {
            secret,
            generation: self.generation,
        }
    }

    /// The register refused a token of `generation`: drop it unless already replaced.
    fn invalidate(&mut self, generation: u64) {
        if self.generation == generation {
            self.token = None;
        }
    }
}

/// What a token provider needs to know about the register's OAuth client.
pub struct OAuthSettings {
    /// Product name for messages, e.g. "Visma eAccounting".
    pub product: &'static str,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The refresh token from the environment, if set: used until it has been rotated,
    /// and again whenever a different one is put there.
    pub seed: Option<SecretString>,
    /// The env var it came from, named in "log in again" messages.
    pub seed_env: String,
}

pub struct TokenProvider {
    product: &'static str,
    oauth: OAuthClient,
    http: TokenHttp,
    store: PathBuf,
    seed: Option<SecretString>,
    seed_env: String,
    current: Mutex<Current>,
    retry: RetryPolicy,
    /// Scopes the register's calls need: a grant without one of them is refused here,
    /// naming it, before any call is refused for it.
    required_scopes: &'static [&'static str],
    /// The newest token generation a request succeeded with (0: none yet).
    proven: AtomicU64,
}

impl TokenProvider {
    /// `store` is the file that keeps the rotated grant (in the journal's credentials).
    pub fn new(settings: OAuthSettings, store: PathBuf) -> anyhow::Result<TokenProvider> {
        let OAuthSettings {
            product,
            token_url,
            client_id,
            client_secret,
            seed,
            seed_env,
        } = settings;
        let oauth = BasicClient::new(ClientId::new(client_id))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_string()))
            .set_token_uri(TokenUrl::new(token_url)?);
        let http = token_http()?;
        Ok(TokenProvider {
            product,
            oauth,
            http,
            store,
            seed,
            seed_env,
            current: Mutex::new(Current::new()),
            retry: RetryPolicy::default(),
            required_scopes: &[],
            proven: AtomicU64::new(0),
        })
    }

    /// A request with a token of `generation` got past the register's token check.
    pub fn confirm(&self, generation: u64) {
        self.proven.fetch_max(generation, Ordering::Relaxed);
    }

    /// Whether no token of this provider has been taken by the register yet.
    pub fn never_taken(&self) -> bool {
        self.proven.load(Ordering::Relaxed) == 0
    }

    /// The scopes every token must have been granted for the register's calls.
    pub fn require_scopes(&mut self, scopes: &'static [&'static str]) {
        self.required_scopes = scopes;
    }

    /// The scopes of `required_scopes` that `granted` lacks, as a person must be told.
    fn lacking(&self, granted: Option<&[String]>) -> Result<(), SinkError> {
        let Some(granted) = granted else {
            return Ok(());
        };
        let missing: Vec<&str> = self
            .required_scopes
            .iter()
            .copied()
            .filter(|r| !granted.iter().any(|g| g == r))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(SinkError::NeedsLogin(format!(
            "the {} authorization lacks the scope {} (granted: {}), which the customer \
             endpoints need: run `opter-visma-sync auth login` and grant it ([sink] scopes \
             are what the login asks for)",
            self.product,
            missing.join(" and "),
            if granted.is_empty() {
                "none".to_string()
            } else {
                granted.join(" ")
            },
        )))
    }

    /// The retry policy of the register's calls, which token requests keep too.
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// A valid access token; refreshes (once, for all concurrent callers) when needed.
    pub async fn access_token(&self) -> Result<AccessToken, SinkError> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.valid() {
            return Ok(token);
        }
        if let Some(e) = current.recent_failure(self.retry.budget) {
            return Err(e);
        }
        let stored = match current.generation {
            0 => self.stored_access_token(),
            _ => None,
        };
        let (secret, lifetime, scopes) = match stored {
            Some(found) => found,
            None => {
                let refreshed = self.refresh().await;
                current.note(&refreshed);
                let refreshed = refreshed?;
                super::counters::token_refresh();
                refreshed
            }
        };
        let lacking = self.lacking(scopes.as_deref());
        current.note(&lacking);
        lacking?;
        Ok(current.replace(secret, lifetime))
    }

    /// The access token a previous process stored, if it belongs to the grant in use and
    /// has more than a minute left.
    fn stored_access_token(&self) -> Option<(SecretString, Duration, Option<Vec<String>>)> {
        let grant = Grant::load(&self.store).ok()??;
        if self.seed.is_some() && grant.seed_sha256 != self.seed.as_ref().map(sha256_hex) {
            return None;
        }
        let left = (grant.access_expires_at? - Utc::now()).to_std().ok()?;
        let token = grant.access_token?;
        (left > Duration::from_secs(120)).then(|| (SecretString::from(token), left, grant.scopes))
    }

    /// The register said 401 to a token of `generation`: drop it unless a newer one
    /// already replaced it, so many concurrent 401s cause a single refresh.
    pub async fn invalidate(&self, generation: u64) {
        self.current.lock().await.invalidate(generation);
    }

    async fn refresh(&self) -> Result<(SecretString, Duration, Option<Vec<String>>), SinkError> {
        let seed_hash = self.seed.as_ref().map(sha256_hex);
        let stored = Grant::load(&self.store)
            .map_err(|e| SinkError::Fatal(format!("cannot read {}: {e}", self.store.display())))?;
        // Candidates in order: a new token in the env var (one not seen when the grant
        // was stored), then the stored grant.
        let mut candidates = Vec::new();
        match (&stored, &self.seed) {
            (Some(g), Some(_)) if g.seed_sha256 == seed_hash => {}
            (_, Some(seed)) => {
                candidates.push((seed.expose_secret().to_string(), "env".to_string()))
            }
            _ => {}
        }
        if let Some(g) = &stored {
            candidates.push((g.refresh_token.clone(), g.origin.clone()));
        }
        if candidates.is_empty() {
            return Err(SinkError::NeedsLogin(format!(
                "no {} authorization is stored yet: run `opter-visma-sync auth login`, or put \
                 a refresh token in ${}",
                self.product, self.seed_env
            )));
        }
        let mut refused = None;
        for (refresh_token, origin) in candidates {
            match self.exchange(&refresh_token).await {
                Ok(token) => {
                    let rotated = token.refresh_token().map(|t| t.secret().clone());
                    let lifetime = token.expires_in().unwrap_or(Duration::from_secs(3600));
                    let access = token.access_token().secret().clone();
                    let scopes = granted_scopes(&token);
                    Grant {
                        refresh_token: rotated.unwrap_or(refresh_token),
                        seed_sha256: seed_hash,
                        origin,
                        refreshed_at: Utc::now(),
                        access_token: Some(access.clone()),
                        access_expires_at: Some(Utc::now() + lifetime),
                        scopes: scopes.clone(),
                    }
                    .save(&self.store)
                    .map_err(|e| {
                        SinkError::Fatal(format!(
                            "cannot store the rotated refresh token in {} ({e}); the previous one \
                         is spent, so fix the disk and run `opter-visma-sync auth login`",
                            self.store.display()
                        ))
                    })?;
                    return Ok((SecretString::from(access), lifetime, scopes));
                }
                // An old token left in the env var: the stored grant may still work.
                Err(SinkError::NeedsLogin(message)) => refused = Some(message),
                Err(other) => return Err(other),
            }
        }
        Err(SinkError::NeedsLogin(refused.unwrap_or_default()))
    }

    /// One refresh-token exchange (retried within the budget while the token endpoint
    /// is unreachable or failing), its errors sorted into the failure classes.
    async fn exchange(&self, refresh_token: &str) -> Result<BasicTokenResponse, SinkError> {
        let (product, seed_env) = (self.product, self.seed_env.as_str());
        let refused = |r: &BasicErrorResponse| match r.error() {
            BasicErrorResponseType::InvalidGrant => SinkError::NeedsLogin(format!(
                "{product} refused the stored refresh token (invalid_grant): the authorization \
                 is gone and a person must log in again. Run `opter-visma-sync auth login` (or \
                 put a new refresh token in ${seed_env}), then run sync again."
            )),
            other => SinkError::NeedsLogin(format!(
                "{product} refused the token request ({other}); run `opter-visma-sync auth login`"
            )),
        };
        let token = RefreshToken::new(refresh_token.to_string());
        request_token(product, &self.http, &self.retry, &refused, || {
            Box::pin(
                self.oauth
                    .exchange_refresh_token(&token)
                    .request_async(&self.http),
            )
        })
        .await
    }
}

/// The scopes a token response says were granted (`scope`), if it says.
fn granted_scopes(token: &BasicTokenResponse) -> Option<Vec<String>> {
    token
        .scopes()
        .map(|scopes| scopes.iter().map(|s| s.to_string()).collect())
}

/// A token request's future, as `request_token` makes it for each attempt.
type TokenFuture<'a> = BoxFuture<
    'a,
    Result<
        BasicTokenResponse,
        RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
    >,
>;

/// The client oauth2 sends token requests through: reqwest, noting each answer's status
/// (oauth2's errors do not carry it, and a message should). A provider sends one token
/// request at a time (under its lock), so one status slot is enough.
pub struct TokenHttp {
    http: reqwest::Client,
    status: AtomicU16,
}

impl<'c> AsyncHttpClient<'c> for TokenHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future = BoxFuture<'c, Result<oauth2::HttpResponse, Self::Error>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = bounded_call(&self.http, request).await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            Ok(response)
        })
    }
}

/// The most bytes read of an OAuth or OpenID Connect provider's answer (a token, a
/// discovery document, its keys): a larger one is an error, not read on.
pub const MOST_PROVIDER_ANSWER_BYTES: usize = 1 << 20;

/// reqwest for oauth2 and openidconnect, reading at most `MOST_PROVIDER_ANSWER_BYTES` of
/// an answer.
pub struct BoundedHttp(pub reqwest::Client);

impl<'c> AsyncHttpClient<'c> for BoundedHttp {
    type Error = HttpClientError<reqwest::Error>;
    type Future = BoxFuture<'c, Result<oauth2::HttpResponse, Self::Error>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(bounded_call(&self.0, request))
    }
}

async fn bounded_call(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>> {
    let mut response = http
        .execute(request.try_into().map_err(Box::new)?)
        .await
        .map_err(Box::new)?;
    let mut builder = oauth2::http::Response::builder()
        .status(response.status())
        .version(response.version());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Box::new)? {
        if body.len() + chunk.len() > MOST_PROVIDER_ANSWER_BYTES {
            return Err(HttpClientError::Other(format!(
                "the answer is larger than {MOST_PROVIDER_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    builder.body(body).map_err(HttpClientError::Http)
}

/// The longest one token request may take; never longer than the retry budget.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a token request, retrying (within the policy's budget) what is transient: no
/// answer in time, a connection that fails, 5xx, 429. When the budget is spent the
/// error stops the run (`Fatal`), since nothing can be sent without a token; an answer
/// that cannot be a token endpoint's (a non-JSON 4xx) is a configuration error at once.
/// `refused` sorts the grant's own refusals (`invalid_grant` and the like).
async fn request_token<'a>(
    product: &'static str,
    http: &'a TokenHttp,
    policy: &RetryPolicy,
    refused: &(dyn Fn(&BasicErrorResponse) -> SinkError + Sync),
    send: impl Fn() -> TokenFuture<'a>,
) -> Result<BasicTokenResponse, SinkError> {
    let timeout = TOKEN_TIMEOUT
        .min(policy.budget)
        .max(Duration::from_millis(100));
    let outcome = retry::retry(
        policy,
        || {
            http.status.store(0, Ordering::Relaxed);
            let request = send();
            async move {
                let answer = tokio::time::timeout(timeout, request).await;
                let status = http.status.load(Ordering::Relaxed);
                sort_token_answer(product, answer, status, timeout, refused)
            }
        },
        |e, wait| tracing::info!("{product}: {e}; retrying in {wait:?}"),
    )
    .await;
    outcome.map_err(|e| match e {
        SinkError::Failed { message, .. } => SinkError::Fatal(format!(
            "{message}, and went on failing for the whole retry budget \
             ({}s, [sink] retry_budget_secs): no request can be sent without a token, so \
             the run stops here; run sync again once the token endpoint answers",
            policy.budget.as_secs()
        )),
        other => other,
    })
}

/// One token request's outcome in the failure classes. Messages carry the HTTP status,
/// never the body (it may echo what was sent).
fn sort_token_answer(
    product: &str,
    answer: Result<
        Result<
            BasicTokenResponse,
            RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
        >,
        tokio::time::error::Elapsed,
    >,
    status: u16,
    timeout: Duration,
    refused: &(dyn Fn(&BasicErrorResponse) -> SinkError + Sync),
) -> Attempt<BasicTokenResponse, SinkError> {
    let transient = |message: String| Attempt::Retryable {
        error: SinkError::Failed {
            status: (status != 0).then_some(status),
            message,
        },
        after: None,
    };
    let failing_status = status >= 500 || status == 429 || status == 408;
    let error = match answer {
        Err(_) => {
            return transient(format!(
                "{product}'s token endpoint timed out (no answer within {}s)",
                timeout.as_secs_f32()
            ))
        }
        Ok(Ok(token)) => return Attempt::Done(token),
        Ok(Err(e)) => e,
    };
    match error {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidClient | BasicErrorResponseType::UnauthorizedClient => {
                Attempt::Final(SinkError::Config(format!(
                    "{product} refused this client ({}, HTTP {status}): check [sink] client_id and \
                     the client secret in the environment variable [sink] client_secret_env names",
                    r.error()
                )))
            }
            BasicErrorResponseType::Extension(e)
                if e == "temporarily_unavailable" || e == "server_error" =>
            {
                transient(format!(
                    "{product}'s token endpoint answered HTTP {status} ({e})"
                ))
            }
            _ if failing_status => {
                transient(format!("{product}'s token endpoint answered HTTP {status}"))
            }
            _ => Attempt::Final(refused(&r)),
        },
        RequestTokenError::Request(e) => {
            let why = if std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<reqwest::Error>())
                .is_some_and(reqwest::Error::is_timeout)
            {
                "timed out"
            } else {
                "connection failed"
            };
            transient(format!("cannot reach {product}'s token endpoint: {why}"))
        }
        // Not an OAuth answer: an HTML page, plain text, an empty body.
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) if failing_status => transient(
            format!("{product}'s token endpoint answered HTTP {status} (not an OAuth answer)"),
        ),
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) if status == 200 => {
            Attempt::Final(SinkError::Fatal(format!(
                "{product}'s token endpoint answered HTTP 200 without a usable token: check \
                 [sink] token_url"
            )))
        }
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
            Attempt::Final(SinkError::Config(format!(
                "{product}'s token endpoint answered HTTP {status}, which is not an OAuth answer: \
                 check [sink] token_url"
            )))
        }
    }
}

/// Bearer tokens from Visma Connect's `client_credentials` grant with the extra
/// `tenant_id` parameter (Visma.net ERP). Nothing to store: a new token is asked for
/// whenever the current one is about to expire or the register refuses it.
pub struct ClientCredentials {
    product: &'static str,
    oauth: OAuthClient,
    http: TokenHttp,
    scopes: Vec<String>,
    tenant_id: String,
    current: Mutex<Current>,
    retry: RetryPolicy,
    /// The newest token generation a request succeeded with (0: none yet).
    proven: AtomicU64,
}

impl ClientCredentials {
    pub fn new(
        product: &'static str,
        token_url: &str,
        client_id: &str,
        client_secret: &SecretString,
        scopes: Vec<String>,
        tenant_id: String,
    ) -> anyhow::Result<ClientCredentials> {
        let oauth = BasicClient::new(ClientId::new(client_id.to_string()))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_string()))
            .set_token_uri(TokenUrl::new(token_url.to_string())?);
        Ok(ClientCredentials {
            product,
            oauth,
            http: token_http()?,
            scopes,
            tenant_id,
            current: Mutex::new(Current::new()),
            retry: RetryPolicy::default(),
            proven: AtomicU64::new(0),
        })
    }

    /// The retry policy of the register's calls, which token requests keep too.
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// A valid access token; asks for one (once, for all concurrent callers) when needed.
    pub async fn access_token(&self) -> Result<AccessToken, SinkError> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.valid() {
            return Ok(token);
        }
        if let Some(e) = current.recent_failure(self.retry.budget) {
            return Err(e);
        }
        let product = self.product;
        let refused = |r: &BasicErrorResponse| {
            // The server's words, quoted parts removed: they can echo what was sent.
            let why = r
                .error_description()
                .map(|d| super::http::without_quoted(d))
                .unwrap_or_default();
            SinkError::Config(format!(
                "{product} refused the client-credentials token request ({}{}{why}): check \
                 [sink] client_id, tenant_id, scopes and the client secret's environment variable",
                r.error(),
                if why.is_empty() { "" } else { ": " },
            ))
        };
        let requested = request_token(product, &self.http, &self.retry, &refused, || {
            let mut request = self
                .oauth
                .exchange_client_credentials()
                .add_extra_param("tenant_id", self.tenant_id.clone());
            for scope in &self.scopes {
                request = request.add_scope(oauth2::Scope::new(scope.clone()));
            }
            Box::pin(request.request_async(&self.http))
        })
        .await;
        current.note(&requested);
        let token = requested?;
        super::counters::token_refresh();
        let lifetime = token.expires_in().unwrap_or(Duration::from_secs(3600));
        let secret = SecretString::from(token.access_token().secret().clone());
        Ok(current.replace(secret, lifetime))
    }

    /// The register refused a token of `generation`: drop it unless already replaced.
    pub async fn invalidate(&self, generation: u64) {
        self.current.lock().await.invalidate(generation);
    }

    /// A request with a token of `generation` succeeded: the register takes our tokens.
    pub fn confirm(&self, generation: u64) {
        self.proven.fetch_max(generation, Ordering::Relaxed);
    }

    /// Whether no token this provider got has ever been taken by the register: then a
    /// refusal is of the setup (a token for the wrong tenant), not of an expired token.
    pub fn never_taken(&self) -> bool {
        self.proven.load(Ordering::Relaxed) == 0
    }
}

/// No redirects on token calls: a redirect could carry the secret elsewhere.
fn token_http() -> anyhow::Result<TokenHttp> {
    Ok(TokenHttp {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TOKEN_TIMEOUT)
            .build()?,
        status: AtomicU16::new(0),
    })
}

/// What `auth login` needs: the register's OAuth endpoints and client, and where to
/// listen for the browser's redirect.
pub struct LoginSettings {
    pub product: &'static str,
    pub authorize_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Loopback URI registered with the register; port 0 picks a free port.
    pub redirect_uri: url::Url,
    pub scopes: Vec<String>,
    /// The env var's refresh token at login time, so it is not taken for a new one later.
    pub seed: Option<SecretString>,
    /// Extra authorize parameters (e.g. `prompt`, `acr_values`), see `choose_company`.
    pub authorize_params: Vec<(&'static str, String)>,
}

/// The authorize parameters that make Visma Online ask which company to connect, for a
/// user with several (a token is bound to one user and one company). Visma recommends
/// `prompt=select_account` with `acr_values=service:<eAccounting's id>`, and documents
/// the older `acr_values=...+forceselectcompany:true` with `prompt=login`; `select_account`
/// "does not work in Sandbox" (Visma changelog "New User Authentication recommandations
/// and information", https://developer.vismaonline.com/changelog/new-user-authentication-recommandations-and-information;
/// "Force New Login", https://developer.vismaonline.com/docs/authentication). Both are
/// sent, so the choice is offered in production and in Visma's sandbox alike; the user
/// logs in again (`prompt=login`) on the way.
pub fn choose_company(service_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("prompt", "login select_account".to_string()),
        (
            "acr_values",
            format!("service:{service_id} forceselectcompany:true"),
        ),
    ]
}

/// The authorization-code flow with PKCE: announce the authorize URL (and open it on a
/// desktop), wait for the redirect on loopback, exchange the code, store the grant.
pub async fn login(
    settings: LoginSettings,
    store: &Path,
    open_browser: bool,
    timeout: Duration,
    announce: impl FnOnce(&str),
) -> anyhow::Result<Grant> {
    use anyhow::{bail, Context};

    let mut redirect = settings.redirect_uri.clone();
    let host = redirect.host_str().unwrap_or("127.0.0.1").to_string();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        bail!("redirect_uri {redirect} must point at this machine (127.0.0.1 or localhost)");
    }
    let port = redirect.port_or_known_default().unwrap_or(0);
    let listener =
        tokio::net::TcpListener::bind((if host == "[::1]" { "::1" } else { "127.0.0.1" }, port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port} for the login redirect"))?;
    let bound = listener.local_addr()?.port();
    redirect.set_port(Some(bound)).ok();

    let (authorize, pending) = begin_login(settings, &redirect)?;
    announce(authorize.as_str());
    if open_browser {
        open_in_browser(authorize.as_str());
    }

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<(String, String)>>(1);
    let app = axum::Router::new().route(
        redirect.path(),
        axum::routing::get(
            move |axum::extract::RawQuery(query): axum::extract::RawQuery| {
                let sender = sender.clone();
                async move {
                    let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                        .into_owned()
                        .collect();
                    let _ = sender.send(pairs).await;
                    axum::response::Html(
                    "<h1>opter-visma-sync</h1><p>Login received. You can close this window.</p>",
                )
                }
            },
        ),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let received = tokio::time::timeout(timeout, receiver.recv()).await;
    server.abort();
    let pairs = match received {
        Ok(Some(pairs)) => pairs,
        _ => bail!(
            "no login arrived within {}s; run `auth login` again",
            timeout.as_secs()
        ),
    };
    finish_login(pending, &pairs, store).await
}

/// The client `begin_login` builds: authorize and token endpoints set.
type LoginClient = BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// A login under way, between the authorize URL and the redirect back: what the
/// redirect is checked against and the code exchanged with.
pub struct PendingLogin {
    product: &'static str,
    client: LoginClient,
    verifier: oauth2::PkceCodeVerifier,
    state: oauth2::CsrfToken,
    seed_sha256: Option<String>,
}

impl PendingLogin {
    /// The `state` the redirect must carry back.
    pub fn state(&self) -> &str {
        self.state.secret()
    }
}

/// The authorize URL for a login whose redirect arrives at `redirect` (registered with
/// the register), and what to finish it with.
pub fn begin_login(
    settings: LoginSettings,
    redirect: &url::Url,
) -> anyhow::Result<(url::Url, PendingLogin)> {
    use oauth2::{AuthUrl, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};

    let client = BasicClient::new(ClientId::new(settings.client_id))
        .set_client_secret(ClientSecret::new(
            settings.client_secret.expose_secret().to_string(),
        ))
        .set_auth_uri(AuthUrl::new(settings.authorize_url)?)
        .set_token_uri(TokenUrl::new(settings.token_url)?)
        .set_redirect_uri(RedirectUrl::new(redirect.to_string())?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(settings.scopes.into_iter().map(Scope::new))
        .set_pkce_challenge(challenge);
    for (name, value) in settings.authorize_params {
        request = request.add_extra_param(name, value);
    }
    let (authorize, state) = request.url();
    let pending = PendingLogin {
        product: settings.product,
        client,
        verifier,
        state,
        seed_sha256: settings.seed.as_ref().map(sha256_hex),
    };
    Ok((authorize, pending))
}

/// Checks the redirect's query (`pairs`) against the login it answers, exchanges the
/// code and stores the grant in `store`.
pub async fn finish_login(
    pending: PendingLogin,
    pairs: &[(String, String)],
    store: &Path,
) -> anyhow::Result<Grant> {
    use anyhow::{bail, Context};
    use oauth2::AuthorizationCode;

    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let product = pending.product;
    if let Some(error) = get("error") {
        bail!(
            "{product} refused the login: {} {}",
            super::http::without_quoted(&error),
            super::http::without_quoted(&get("error_description").unwrap_or_default())
        );
    }
    let state = get("state").unwrap_or_default();
    let expected = pending.state.secret().as_bytes();
    let same = state.len() == expected.len()
        && state
            .bytes()
            .zip(expected)
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0;
    if !same {
        bail!("the login redirect carried a wrong state; log in again");
    }
    let code = get("code").context("the login redirect carried no code")?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = pending
        .client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(pending.verifier)
        .request_async(&http)
        .await
        .map_err(|e| anyhow::anyhow!("{product} refused the code exchange: {e}"))?;
    let refresh = token.refresh_token().with_context(|| {
        format!("{product} returned no refresh token: include offline_access in the scopes")
    })?;
    let grant = Grant {
        refresh_token: refresh.secret().clone(),
        seed_sha256: pending.seed_sha256,
        origin: "login".into(),
        refreshed_at: Utc::now(),
        access_token: Some(token.access_token().secret().clone()),
        access_expires_at: token.expires_in().map(|d| Utc::now() + d),
        scopes: granted_scopes(&token),
    };
    grant.save(store)?;
    Ok(grant)
}

/// Best effort, and only where a desktop is likely: the URL is printed either way.
fn open_in_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(opener) = opener {
        let _ = std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_provider_answer_past_the_bound_is_an_error_and_one_within_it_is_read() {
        let app = axum::Router::new()
            .route("/small", axum::routing::get(|| async { "{}" }))
            .route(
                "/huge",
                axum::routing::get(|| async { "x".repeat(MOST_PROVIDER_ANSWER_BYTES + 1) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = BoundedHttp(reqwest::Client::new());
        let get = |path: &str| {
            oauth2::http::Request::get(format!("http://{at}{path}"))
                .body(Vec::new())
                .unwrap()
        };
        let small = http.call(get("/small")).await.unwrap();
        assert_eq!(small.body(), b"{}");
        let huge = http.call(get("/huge")).await.unwrap_err();
        assert!(huge.to_string().contains("larger than"), "{huge}");
    }
}
