//! eAccounting's `[sink]` settings, and how its client is opened from them.

use std::any::Any;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use super::{EAccountingSink, PRODUCT};
use crate::config::values::{check_env_name, check_not_empty, check_url, secret};
use crate::error::Error;
use crate::sink::auth::{OAuthSettings, TokenProvider};
use crate::sink::{Sink, SinkContext, SinkSettings};

/// Where the eAccounting grant is kept, in the journal's credentials folder.
pub const GRANT_FILE: &str = "eaccounting-grant.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EAccountingConfig {
    /// e.g. `https://eaccountingapi.vismaonline.com/v2`
    pub api_base: String,
    /// e.g. `https://identity.vismaonline.com/connect/token`
    pub token_url: String,
    pub client_id: String,
    pub client_secret_env: String,
    /// Read once, to seed the first token exchange; afterwards the rotated token stored
    /// in the journal folder is used.
    pub refresh_token_env: String,
    /// For `auth login`; default: `token_url` with `/token` replaced by `/authorize`.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Loopback redirect registered for this client, for `auth login`.
    #[serde(default = "default_redirect_uri")]
    pub redirect_uri: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_redirect_uri() -> String {
    "http://127.0.0.1:44300/callback".into()
}

fn default_scopes() -> Vec<String> {
    ["ea:api", "offline_access", "ea:sales"]
        .map(String::from)
        .to_vec()
}

impl EAccountingConfig {
    /// The authorize endpoint: configured, or derived from a `.../token` URL.
    pub fn authorize_url(&self) -> Option<String> {
        self.authorize_url.clone().or_else(|| {
            self.token_url
                .strip_suffix("/token")
                .map(|base| format!("{base}/authorize"))
        })
    }

    /// The token provider (and grant store) the sink and `check`'s probes share.
    pub(in crate::sink) fn tokens(
        &self,
        context: &SinkContext<'_>,
    ) -> crate::error::Result<TokenProvider> {
        let client_secret = secret(
            context.file,
            context.env,
            "[sink] client_secret_env",
            &self.client_secret_env,
        )?;
        // Optional once a grant is stored: the stored, rotated token is used then.
        let seed = context
            .env
            .var(&self.refresh_token_env)
            .filter(|v| !v.is_empty())
            .map(SecretString::from);
        let settings = OAuthSettings {
            product: PRODUCT,
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            seed,
            seed_env: self.refresh_token_env.clone(),
        };
        let store = (context.credentials)()?.join(GRANT_FILE);
        TokenProvider::new(settings, store)
            .map_err(|e| Error::config(format!("{}: [sink]: {e}", context.file.display())))
    }
}

impl SinkSettings for EAccountingConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_url(&self.api_base).map_err(|why| ("[sink] api_base", why))?;
        check_url(&self.token_url).map_err(|why| ("[sink] token_url", why))?;
        if let Some(url) = &self.authorize_url {
            check_url(url).map_err(|why| ("[sink] authorize_url", why))?;
        }
        check_url(&self.redirect_uri).map_err(|why| ("[sink] redirect_uri", why))?;
        check_not_empty(&self.client_id).map_err(|why| ("[sink] client_id", why))?;
        check_env_name(&self.client_secret_env).map_err(|why| ("[sink] client_secret_env", why))?;
        check_env_name(&self.refresh_token_env).map_err(|why| ("[sink] refresh_token_env", why))?;
        let missing: Vec<&str> = super::REQUIRED_SCOPES
            .iter()
            .chain(&["offline_access"])
            .copied()
            .filter(|r| !self.scopes.iter().any(|s| s == r))
            .collect();
        if !missing.is_empty() {
            return Err((
                "[sink] scopes",
                format!(
                    "must include {}: the customer endpoints need ea:api and ea:sales, and \
                     offline_access gives the refresh token sync runs on",
                    missing.join(" and ")
                ),
            ));
        }
        Ok(())
    }

    fn open(&self, context: &SinkContext<'_>) -> crate::error::Result<Arc<dyn Sink>> {
        let mut tokens = self.tokens(context)?;
        tokens.require_scopes(super::REQUIRED_SCOPES);
        Ok(Arc::new(EAccountingSink::new(
            &self.api_base,
            tokens,
            context.requests_per_minute,
            context.retry,
        )?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn urls(&self) -> Vec<&str> {
        vec![&self.api_base, &self.token_url]
    }
}

/// What a login to eAccounting for the tenant of `config` needs (its client, endpoints,
/// scopes, the env's refresh token if any), with the redirect the config names;
/// `choose_company` asks Visma which company to connect. Also the grant's file.
pub fn login_settings(
    config: &crate::config::Config,
    sink: &EAccountingConfig,
    env: &dyn crate::config::values::Env,
    choose_company: bool,
) -> Result<(crate::sink::auth::LoginSettings, std::path::PathBuf), Error> {
    let file = config.file.display();
    let store = crate::journal::credentials_dir(&config.journal.path)?.join(GRANT_FILE);
    let settings = crate::sink::auth::LoginSettings {
        product: PRODUCT,
        authorize_url: sink.authorize_url().ok_or_else(|| {
            Error::config(format!(
                "{file}: [sink] authorize_url is needed to log in (token_url does not end in \
                 /token, so it cannot be derived)"
            ))
        })?,
        token_url: sink.token_url.clone(),
        client_id: sink.client_id.clone(),
        client_secret: config.secret(env, "[sink] client_secret_env", &sink.client_secret_env)?,
        redirect_uri: url::Url::parse(&sink.redirect_uri)
            .map_err(|e| Error::config(format!("{file}: [sink] redirect_uri: {e}")))?,
        scopes: sink.scopes.clone(),
        seed: env
            .var(&sink.refresh_token_env)
            .filter(|v| !v.is_empty())
            .map(SecretString::from),
        authorize_params: match choose_company {
            true => crate::sink::auth::choose_company(super::SERVICE_ID),
            false => Vec::new(),
        },
    };
    Ok((settings, store))
}
