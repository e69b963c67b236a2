//! Read-only probes for `check`: the two tokens are accepted (`GET /self`), the
//! agreement lets the app read customers, and the mapping's customer group, payment
//! terms and VAT zone exist in the agreement (their list endpoints).

use super::body::error_of;
use super::{EconomicConfig, PRODUCT};
use crate::mapping::Mapping;
use crate::sink::http::{nothing_special, Credentials, Dialect, Http};
use crate::sink::probe::{find_in_list, unexpected, unreachable, NamedVar, Prober, Verdict};
use crate::sink::SinkContext;

/// The name of the access line in `check`.
pub const ACCESS_CHECK: &str = "agreement";

/// The mapping constants that name an entry of a list, with that list's path and the
/// entry's number property.
const REFERENCES: &[(&str, &str, &str)] = &[
    (
        "customerGroup.customerGroupNumber",
        "/customer-groups",
        "customerGroupNumber",
    ),
    (
        "paymentTerms.paymentTermsNumber",
        "/payment-terms",
        "paymentTermsNumber",
    ),
    ("vatZone.vatZoneNumber", "/vat-zones", "vatZoneNumber"),
];

impl EconomicConfig {
    /// The environment variables these settings name.
    pub fn named_vars(&self) -> Vec<NamedVar> {
        vec![
            NamedVar {
                key: "[sink] app_secret_token_env",
                var: self.app_secret_token_env.clone(),
                optional: false,
            },
            NamedVar {
                key: "[sink] agreement_grant_token_env",
                var: self.agreement_grant_token_env.clone(),
                optional: false,
            },
        ]
    }

    /// A prober sending the two token headers.
    pub fn prober(&self, context: &SinkContext<'_>) -> crate::error::Result<Prober> {
        let (app, grant) = self.tokens(context)?;
        let dialect = Dialect {
            product: PRODUCT,
            error_of,
            special: nothing_special,
            refused_hint: "",
            refused_on_first_use: None,
        };
        let credentials = Credentials::Headers(vec![
            ("X-AppSecretToken", app),
            ("X-AgreementGrantToken", grant),
        ]);
        let http = Http::new(
            dialect,
            credentials,
            context.requests_per_minute,
            context.retry,
        )?;
        Ok(Prober::new(http, &self.api_base))
    }
}

/// Whether e-conomic accepts the app secret and agreement grant tokens: `GET /self`.
pub async fn token(prober: &Prober) -> Verdict {
    let answer = match prober.get("/self").await {
        Ok(a) => a,
        Err(e) => return unreachable(PRODUCT, &e),
    };
    match answer.status {
        200..=299 => Verdict::Ok("both tokens are accepted".into()),
        401 | 403 => Verdict::Fail(format!(
            "{PRODUCT} refused the tokens (HTTP {}): check the values of the environment \
             variables named by [sink] app_secret_token_env and agreement_grant_token_env; a \
             revoked grant must be granted again by the agreement's administrator",
            answer.status
        )),
        _ => unexpected(PRODUCT, "GET /self", &answer),
    }
}

/// Whether the agreement lets the app read customers: `GET /customers`, one row.
pub async fn access(prober: &Prober) -> Verdict {
    let answer = match prober.get("/customers?skippages=0&pagesize=1").await {
        Ok(a) => a,
        Err(e) => return unreachable(PRODUCT, &e),
    };
    match answer.status {
        200..=299 => Verdict::Ok("the agreement answers a customer read".into()),
        401 | 403 => Verdict::Fail(format!(
            "{PRODUCT} refused the customer read (HTTP {}): the app's role in this agreement \
             does not reach customers; grant the app access again with a role that does",
            answer.status
        )),
        _ => unexpected(PRODUCT, "the customer read", &answer),
    }
}

/// Whether each numbered constant (customer group, payment terms, VAT zone) exists.
pub async fn constants(prober: &Prober, mapping: &Mapping) -> Verdict {
    let mut checked = Vec::new();
    for &(field, path, key) in REFERENCES {
        let Some(wanted) = mapping.constant(field).and_then(|v| v.as_i64()) else {
            continue;
        };
        let found = find_in_list(
            prober,
            |n| format!("{path}?skippages={n}&pagesize=1000"),
            |body| body["collection"].as_array().cloned().unwrap_or_default(),
            |body, _| body["pagination"]["nextPage"].is_string(),
            |entry| entry[key].as_i64() == Some(wanted),
        )
        .await;
        match found {
            Err(e) => return unreachable(PRODUCT, &e),
            Ok(Err(answer)) => return unexpected(PRODUCT, &format!("GET {path}"), &answer),
            Ok(Ok(true)) => checked.push(field),
            Ok(Ok(false)) => {
                return Verdict::Fail(format!(
                    "[constants] \"{field}\" in {} is not in this agreement's GET {path}: \
                     replace it with a number from there",
                    mapping.file.display()
                ))
            }
        }
    }
    match checked.is_empty() {
        true => Verdict::Ok("the mapping sets no numbered constants".into()),
        false => Verdict::Ok(format!("{} exist in the agreement", checked.join(", "))),
    }
}
