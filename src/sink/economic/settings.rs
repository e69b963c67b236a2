//! e-conomic's `[sink]` settings, and how its client is opened from them.

use std::any::Any;
use std::sync::Arc;

use serde::Deserialize;

use super::EconomicSink;
use crate::config::values::{check_env_name, check_url, secret};
use crate::sink::{Sink, SinkContext, SinkSettings};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomicConfig {
    /// e.g. `https://restapi.e-conomic.com`
    pub api_base: String,
    /// Env var holding the app's `X-AppSecretToken`.
    pub app_secret_token_env: String,
    /// Env var holding the agreement's `X-AgreementGrantToken`.
    pub agreement_grant_token_env: String,
}

impl SinkSettings for EconomicConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_url(&self.api_base).map_err(|why| ("[sink] api_base", why))?;
        check_env_name(&self.app_secret_token_env)
            .map_err(|why| ("[sink] app_secret_token_env", why))?;
        check_env_name(&self.agreement_grant_token_env)
            .map_err(|why| ("[sink] agreement_grant_token_env", why))?;
        Ok(())
    }

    fn open(&self, context: &SinkContext<'_>) -> crate::error::Result<Arc<dyn Sink>> {
        let (file, env) = (context.file, context.env);
        let app = secret(
            file,
            env,
            "[sink] app_secret_token_env",
            &self.app_secret_token_env,
        )?;
        let grant = secret(
            file,
            env,
            "[sink] agreement_grant_token_env",
            &self.agreement_grant_token_env,
        )?;
        Ok(Arc::new(EconomicSink::new(
            &self.api_base,
            app,
            grant,
            context.requests_per_minute,
            context.retry,
        )?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
