//! Visma.net's `[sink]` settings, and how its client is opened from them.

use std::any::Any;
use std::sync::Arc;

use serde::Deserialize;

use super::{VismaNetSink, PRODUCT};
use crate::config::values::{check_env_name, check_not_empty, check_url, secret};
use crate::error::Error;
use crate::sink::auth::ClientCredentials;
use crate::sink::{Sink, SinkContext, SinkSettings};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VismaNetConfig {
    /// e.g. `https://api.finance.visma.net` (`/v1/customer` below it).
    pub api_base: String,
    /// e.g. `https://connect.visma.com/connect/token`
    pub token_url: String,
    pub client_id: String,
    pub client_secret_env: String,
    /// The company's tenant GUID, from the Visma App Store invitation (not a secret).
    pub tenant_id: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    [
        "vismanet_erp_service_api:read",
        "vismanet_erp_service_api:create",
        "vismanet_erp_service_api:update",
    ]
    .map(String::from)
    .to_vec()
}

impl VismaNetConfig {
    /// The client-credentials grant the sink and `check`'s probes share.
    pub(in crate::sink) fn tokens(
        &self,
        context: &SinkContext<'_>,
    ) -> crate::error::Result<ClientCredentials> {
        let client_secret = secret(
            context.file,
            context.env,
            "[sink] client_secret_env",
            &self.client_secret_env,
        )?;
        ClientCredentials::new(
            PRODUCT,
            &self.token_url,
            &self.client_id,
            &client_secret,
            self.scopes.clone(),
            self.tenant_id.clone(),
        )
        .map_err(|e| Error::config(format!("{}: [sink]: {e}", context.file.display())))
    }
}

impl SinkSettings for VismaNetConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_url(&self.api_base).map_err(|why| ("[sink] api_base", why))?;
        check_url(&self.token_url).map_err(|why| ("[sink] token_url", why))?;
        check_not_empty(&self.client_id).map_err(|why| ("[sink] client_id", why))?;
        check_env_name(&self.client_secret_env).map_err(|why| ("[sink] client_secret_env", why))?;
        if uuid::Uuid::parse_str(&self.tenant_id).is_err() {
            return Err((
                "[sink] tenant_id",
                "must be the company's tenant GUID from the Visma App Store invitation, \
                 e.g. \"3f1c0b8e-5a2d-4c7e-9b14-6d2e8f0a7c31\""
                    .into(),
            ));
        }
        Ok(())
    }

    fn open(&self, context: &SinkContext<'_>) -> crate::error::Result<Arc<dyn Sink>> {
        Ok(Arc::new(VismaNetSink::new(
            &self.api_base,
            self.tokens(context)?,
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
