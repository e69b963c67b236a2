//! Read-only probes for `check`: a client-credentials token for the tenant, and a
//! customer read in that tenant (a wrong tenant fails there, not at the token).

use super::{error_of, VismaNetConfig, NO_LICENSE_FAULT_CODE, PRODUCT};
use crate::config::values::secret;
use crate::error::Error;
use crate::mapping::Mapping;
use crate::sink::auth::ClientCredentials;
use crate::sink::http::{nothing_special, Credentials, Dialect, Http};
use crate::sink::probe::{unexpected, unreachable, NamedVar, Prober, Verdict};
use crate::sink::SinkContext;

/// The name of the access line in `check`.
pub const ACCESS_CHECK: &str = "tenant";

impl VismaNetConfig {
    /// The environment variables these settings name.
    pub fn named_vars(&self) -> Vec<NamedVar> {
        vec![NamedVar {
            key: "[sink] client_secret_env",
            var: self.client_secret_env.clone(),
            optional: false,
        }]
    }

    /// A prober with the sink's client-credentials grant.
    pub fn prober(&self, context: &SinkContext<'_>) -> crate::error::Result<Prober> {
        let client_secret = secret(
            context.file,
            context.env,
            "[sink] client_secret_env",
            &self.client_secret_env,
        )?;
        let tokens = ClientCredentials::new(
            PRODUCT,
            &self.token_url,
            &self.client_id,
            &client_secret,
            self.scopes.clone(),
            self.tenant_id.clone(),
        )
        .map_err(|e| Error::config(format!("{}: [sink]: {e}", context.file.display())))?;
        let dialect = Dialect {
            product: PRODUCT,
            error_of,
            special: nothing_special,
            refused_hint: "",
        };
        let http = Http::new(
            dialect,
            Credentials::ClientCredentials(tokens),
            context.requests_per_minute,
            context.retry,
        )?;
        Ok(Prober::new(http, &self.api_base))
    }
}

/// Whether Visma Connect issues a token for the client, secret, scopes and tenant.
pub async fn token(prober: &Prober) -> Verdict {
    prober.token_verdict().await
}

/// Whether the token may read customers of the company: `GET /v1/customer`, one row.
/// A token for the wrong tenant is issued all the same; the API then answers 401 (the
/// customer tenant instead of the company's) or 403 with fault 12027 (no licence for
/// the company).
pub async fn access(prober: &Prober) -> Verdict {
    let answer = match prober.get("/v1/customer?pageNumber=1&pageSize=1").await {
        Ok(a) => a,
        Err(e) => return unreachable(PRODUCT, &e),
    };
    match (answer.status, answer.code.as_deref()) {
        (200..=299, _) => Verdict::Ok("the tenant's company answers a customer read".into()),
        (401, _) => Verdict::Fail(format!(
            "{PRODUCT} issued a token but refused it for the API (HTTP 401): [sink] tenant_id \
             is most likely not the company's. Use the Company Tenant ID from the Visma App \
             Store invitation, not the customer's tenant"
        )),
        (403, Some(NO_LICENSE_FAULT_CODE)) => Verdict::Fail(format!(
            "{PRODUCT} has no licence for this company (HTTP 403, error \
             {NO_LICENSE_FAULT_CODE}): check [sink] tenant_id (the company's tenant GUID from \
             the Visma App Store invitation) and that the integration and its API user are \
             activated for that company"
        )),
        (403, _) => Verdict::Fail(format!(
            "{PRODUCT} refused the customer read (HTTP 403: {}): the client lacks the scope \
             vismanet_erp_service_api:read; check [sink] scopes and the client's scopes in \
             the Visma Developer Portal",
            answer.message
        )),
        _ => unexpected(PRODUCT, "the customer read", &answer),
    }
}

/// Visma.net's customer classes are not read yet: the class shows on the first create.
pub async fn constants(_prober: &Prober, mapping: &Mapping) -> Verdict {
    match mapping.constant("customerClassId") {
        None => Verdict::Ok("the mapping sets no customerClassId".into()),
        Some(_) => Verdict::Skip(
            "customerClassId is not checked against the company's customer classes; a \
             wrong one is refused on the first create"
                .into(),
        ),
    }
}
