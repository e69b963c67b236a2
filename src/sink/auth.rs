//! OAuth2 access tokens from a rotating refresh token (the `oauth2` crate).
//!
//! Visma's refresh tokens work once. The rotated token is written to the journal's
//! `credentials/` folder (owner-only, atomic rename, fsync) BEFORE the new access token
//! is handed out, so a crash can never leave us holding only a spent token.
//!
//! Architecture invariant: tokens live in `SecretString` or oauth2's secret types, whose
//! `Debug` does not print them; nothing here logs or journals a token.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::SinkError;

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The stored grant. `seed_sha256` remembers which env-var token it grew from, so a
/// new token put in the env var (after a person logged in again) is noticed and used.
#[derive(Serialize, Deserialize)]
struct StoredGrant {
    refresh_token: String,
    seed_sha256: String,
    refreshed_at: DateTime<Utc>,
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
}

/// What a token provider needs to know about the register's OAuth client.
pub struct OAuthSettings {
    /// Product name for messages, e.g. "Visma eAccounting".
    pub product: &'static str,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The refresh token from the environment, used until it has been rotated.
    pub seed: SecretString,
    /// The env var it came from, named in "log in again" messages.
    pub seed_env: String,
}

pub struct TokenProvider {
    product: &'static str,
    oauth: OAuthClient,
    http: reqwest::Client,
    store: PathBuf,
    seed: SecretString,
    seed_env: String,
    current: Mutex<Current>,
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
        // No redirects on token calls: a redirect could carry the secret elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(TokenProvider {
            product,
            oauth,
            http,
            store,
            seed,
            seed_env,
            current: Mutex::new(Current {
                token: None,
                generation: 0,
            }),
        })
    }

    /// A valid access token; refreshes (once, for all concurrent callers) when needed.
    pub async fn access_token(&self) -> Result<AccessToken, SinkError> {
        let mut current = self.current.lock().await;
        if let Some((secret, expires)) = &current.token {
            if Instant::now() < *expires {
                return Ok(AccessToken {
                    secret: secret.clone(),
                    generation: current.generation,
                });
            }
        }
        let (secret, lifetime) = self.refresh().await?;
        current.generation += 1;
        // Renew a minute early so a token never expires in flight.
        let expires = Instant::now()
            + lifetime
                .saturating_sub(Duration::from_secs(60))
                .max(Duration::from_secs(1));
        current.token = Some((secret.clone(), expires));
        Ok(AccessToken {
            secret,
            generation: current.generation,
        })
    }

    /// The register said 401 to a token of `generation`: drop it unless a newer one
    /// already replaced it, so many concurrent 401s cause a single refresh.
    pub async fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.generation == generation {
            current.token = None;
        }
    }

    async fn refresh(&self) -> Result<(SecretString, Duration), SinkError> {
        let seed_hash = hex::encode(Sha256::digest(self.seed.expose_secret().as_bytes()));
        let stored = self.load().map_err(|e| SinkError::Failed {
            status: None,
            message: e.to_string(),
        })?;
        let refresh_token = match stored {
            Some(s) if s.seed_sha256 == seed_hash => s.refresh_token,
            _ => self.seed.expose_secret().to_string(),
        };
        let response = self
            .oauth
            .exchange_refresh_token(&RefreshToken::new(refresh_token))
            .request_async(&self.http)
            .await;
        let token = match response {
            Ok(t) => t,
            Err(RequestTokenError::ServerResponse(r))
                if matches!(r.error(), BasicErrorResponseType::InvalidGrant) =>
            {
                return Err(SinkError::NeedsLogin(format!(
                    "{} refused the stored refresh token (invalid_grant): its authorization is \
                     gone and a person must log in again. Log in to {} for this company, put the \
                     new refresh token in ${}, and run sync again.",
                    self.product, self.product, self.seed_env
                )))
            }
            Err(RequestTokenError::ServerResponse(r)) => {
                return Err(SinkError::NeedsLogin(format!(
                    "{} refused the token request ({}); check client_id and the client secret",
                    self.product,
                    r.error()
                )))
            }
            Err(e) => {
                return Err(SinkError::Failed {
                    status: None,
                    message: format!("token request to {} failed: {e}", self.product),
                })
            }
        };
        match token.refresh_token() {
            Some(rotated) => self
                .save(&StoredGrant {
                    refresh_token: rotated.secret().clone(),
                    seed_sha256: seed_hash,
                    refreshed_at: Utc::now(),
                })
                .map_err(|e| SinkError::Failed {
                    status: None,
                    message: format!("cannot store the rotated refresh token: {e}"),
                })?,
            None => tracing::debug!(
                "token response carried no new refresh token; keeping the stored one"
            ),
        }
        let lifetime = token.expires_in().unwrap_or(Duration::from_secs(3600));
        Ok((
            SecretString::from(token.access_token().secret().clone()),
            lifetime,
        ))
    }

    fn load(&self) -> anyhow::Result<Option<StoredGrant>> {
        match std::fs::read(&self.store) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write to a temporary file (owner-only), fsync, rename over the old one, fsync
    /// the folder: after a crash there is either the old or the new token, whole.
    fn save(&self, grant: &StoredGrant) -> anyhow::Result<()> {
        use std::io::Write;
        let tmp = self.store.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&serde_json::to_vec(grant)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.store)?;
        if let Some(dir) = self.store.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
