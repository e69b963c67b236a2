//! Read-only probes for `check`: a client-credentials token for the tenant, and a
//! customer read in that tenant (a wrong tenant fails there, not at the token).

use super::{error_of, VismaNetConfig, NO_LICENSE_FAULT_CODE, PRODUCT};
use crate::mapping::Mapping;
use crate::sink::http::{nothing_special, Credentials, Dialect, Http, Probed};
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
        let tokens = self.tokens(context)?;
        let dialect = Dialect {
            product: PRODUCT,
            error_of,
            special: nothing_special,
            refused_hint: "",
            refused_on_first_use: None,
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
    match prober.get("/v1/customer?pageNumber=1&pageSize=1").await {
        Ok(answer) => access_verdict(&answer),
        Err(e) => unreachable(PRODUCT, &e),
    }
}

/// What the customer read's answer says about the login.
fn access_verdict(answer: &Probed) -> Verdict {
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
        _ => unexpected(PRODUCT, "the customer read", answer),
    }
}

/// Whether the mapping's `customerClassId` is one of the company's customer classes
/// (`GET /v1/customerclass`, one unpaged list).
pub async fn constants(prober: &Prober, mapping: &Mapping) -> Verdict {
    let Some(wanted) = mapping.constant("customerClassId").and_then(|v| v.as_str()) else {
        return Verdict::Ok("the mapping sets no customerClassId".into());
    };
    let answer = match prober.get("/v1/customerclass").await {
        Ok(a) => a,
        Err(e) => return unreachable(PRODUCT, &e),
    };
    if !(200..300).contains(&answer.status) {
        return unexpected(PRODUCT, "GET /v1/customerclass", &answer);
    }
    let body = answer.body();
    let classes = body.as_array().cloned().unwrap_or_default();
    match classes.iter().any(|c| c["id"].as_str() == Some(wanted)) {
        true => Verdict::Ok("customerClassId is one of the company's customer classes".into()),
        false => Verdict::Fail(format!(
            "[constants] customerClassId in {} is not one of this company's customer classes \
             (GET /v1/customerclass): replace it with an id from there",
            mapping.file.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: Option<&str>) -> Probed {
        Probed {
            status,
            code: code.map(str::to_string),
            message: "refused".into(),
            date: None,
            text: String::new(),
        }
    }

    fn failure(verdict: Verdict) -> String {
        match verdict {
            Verdict::Fail(why) => why,
            ok => panic!("expected a failure, got {ok:?}"),
        }
    }

    #[test]
    fn a_wrong_tenant_names_tenant_id_whichever_way_it_is_refused() {
        // Today's simulator: 403 with fault 12027; Visma's docs: 401 after a token.
        for (status, code) in [(403, Some("12027")), (401, None)] {
            let why = failure(access_verdict(&answer(status, code)));
            assert!(why.contains("[sink] tenant_id"), "{status}: {why}");
        }
        let why = failure(access_verdict(&answer(403, None)));
        assert!(why.contains("vismanet_erp_service_api:read"), "{why}");
        assert!(matches!(access_verdict(&answer(200, None)), Verdict::Ok(_)));
    }
}
