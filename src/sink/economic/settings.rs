//! e-conomic's `[sink]` settings, and how its client is opened from them.

use std::any::Any;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use super::{EconomicSink, PRODUCT};
use crate::config::values::{check_env_name, check_url, secret};
use crate::sink::budget::CallBudget;
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
    /// Calls this connector makes to the agreement in any 24 hours, at most (default
    /// [`DEFAULT_DAILY_CALL_BUDGET`]); e-conomic's fair use is 50,000 per agreement.
    #[serde(default = "default_daily_call_budget")]
    pub daily_call_budget: u32,
}

/// e-conomic's fair use: 50,000 API calls per 24-hour period per agreement
/// (https://e-conomic.com/developer/fair-use-policy).
pub const FAIR_USE_CALLS_PER_DAY: u32 = 50_000;
/// Below the fair-use cap, leaving room for the agreement's other apps and for
/// support commands.
pub const DEFAULT_DAILY_CALL_BUDGET: u32 = 45_000;
/// The file beside the journal that counts the calls.
pub const CALL_COUNT_FILE: &str = "economic-calls.json";
const BUDGET_KEY: &str = "[sink] daily_call_budget";

fn default_daily_call_budget() -> u32 {
    DEFAULT_DAILY_CALL_BUDGET
}

impl EconomicConfig {
    /// The app secret and agreement grant tokens the sink and `check`'s probes send.
    pub(in crate::sink) fn tokens(
        &self,
        context: &SinkContext<'_>,
    ) -> crate::error::Result<(SecretString, SecretString)> {
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
        Ok((app, grant))
    }
}

impl SinkSettings for EconomicConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_url(&self.api_base).map_err(|why| ("[sink] api_base", why))?;
        check_env_name(&self.app_secret_token_env)
            .map_err(|why| ("[sink] app_secret_token_env", why))?;
        check_env_name(&self.agreement_grant_token_env)
            .map_err(|why| ("[sink] agreement_grant_token_env", why))?;
        if !(1..=FAIR_USE_CALLS_PER_DAY).contains(&self.daily_call_budget) {
            return Err((
                BUDGET_KEY,
                format!(
                    "must be from 1 to {FAIR_USE_CALLS_PER_DAY} (e-conomic's fair use per \
                     agreement and 24 hours), not {}",
                    self.daily_call_budget
                ),
            ));
        }
        Ok(())
    }

    fn open(&self, context: &SinkContext<'_>) -> crate::error::Result<Arc<dyn Sink>> {
        let (app, grant) = self.tokens(context)?;
        let count = context.journal.join(CALL_COUNT_FILE);
        let budget = CallBudget::open(&count, self.daily_call_budget, PRODUCT, BUDGET_KEY)
            .map_err(|e| crate::error::Error::config(format!("{e:#}")))?;
        Ok(Arc::new(
            EconomicSink::new(
                &self.api_base,
                app,
                grant,
                context.requests_per_minute,
                context.retry,
            )?
            .with_budget(Arc::new(budget)),
        ))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn urls(&self) -> Vec<&str> {
        vec![&self.api_base]
    }
}
