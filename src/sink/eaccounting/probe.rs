//! Read-only probes for `check`: the stored grant refreshes, the login may read
//! customers (scopes `ea:api ea:sales`), and the mapping's `TermsOfPaymentId` is one of
//! the company's terms of payment.

use super::{error_of, EAccountingConfig, PRODUCT};
use crate::mapping::Mapping;
use crate::sink::http::{nothing_special, Credentials, Dialect, Http, Probed};
use crate::sink::probe::{find_in_list, unexpected, unreachable, NamedVar, Prober, Verdict};
use crate::sink::SinkContext;

/// The error code eAccounting gives a token without a scope the endpoint needs.
const MISSING_SCOPE: &str = "4006";
/// The error code for a user without permission to the resource.
const NO_PERMISSION: &str = "4007";

impl EAccountingConfig {
    /// The environment variables these settings name.
    pub fn named_vars(&self) -> Vec<NamedVar> {
        vec![
            NamedVar {
                key: "[sink] client_secret_env",
                var: self.client_secret_env.clone(),
                optional: false,
            },
            NamedVar {
                key: "[sink] refresh_token_env",
                var: self.refresh_token_env.clone(),
                optional: true,
            },
        ]
    }

    /// A prober with the same token provider (and grant store) as the sink's.
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
            Credentials::Refreshing(tokens),
            context.requests_per_minute,
            context.retry,
        )?;
        Ok(Prober::new(http, &self.api_base))
    }
}

/// Whether the login may read customers: `GET /customers` with a page of one.
pub async fn access(prober: &Prober) -> Verdict {
    match prober.get("/customers?$page=1&$pagesize=1").await {
        Ok(answer) => access_verdict(&answer),
        Err(e) => unreachable(PRODUCT, &e),
    }
}

/// What the customer read's answer says about the login.
fn access_verdict(answer: &Probed) -> Verdict {
    match (answer.status, answer.code.as_deref()) {
        (200..=299, _) => Verdict::Ok("the login may read customers (ea:api, ea:sales)".into()),
        (403, Some(NO_PERMISSION)) => Verdict::Fail(format!(
            "{PRODUCT} refused the customer list (HTTP 403, error {NO_PERMISSION}): the Visma \
             user who logged in lacks permission to customers in this company; log in as a \
             user who has it (`auth login`)"
        )),
        // 4006 is the documented answer to a missing scope; another 403 is most likely
        // the same (the customer endpoints need nothing else of a token).
        (403, code) => Verdict::Fail(format!(
            "{PRODUCT} refused the customer list (HTTP 403{}): the login lacks the scope \
             ea:sales (customers need ea:api and ea:sales). Keep both in [sink] scopes (the \
             default has them) and run `auth login` again",
            match code {
                Some(MISSING_SCOPE) => format!(", error {MISSING_SCOPE}: scope missing"),
                Some(c) => format!(", error {c}"),
                None => String::new(),
            }
        )),
        (401, _) => Verdict::Fail(format!(
            "{PRODUCT} refused a fresh access token (HTTP 401): the login is not valid for \
             this API; check [sink] api_base and token_url, then run `auth login`"
        )),
        _ => unexpected(PRODUCT, "the customer list", answer),
    }
}

/// Whether the mapping's `TermsOfPaymentId` is in `GET /termsofpayments`.
pub async fn constants(prober: &Prober, mapping: &Mapping) -> Verdict {
    let Some(wanted) = mapping.constant("TermsOfPaymentId") else {
        return Verdict::Ok("the mapping sets no TermsOfPaymentId".into());
    };
    let wanted = wanted.as_str().unwrap_or_default().to_ascii_lowercase();
    let page_size = 100;
    let found = find_in_list(
        prober,
        |n| format!("/termsofpayments?$page={}&$pagesize={page_size}", n + 1),
        |body| body["Data"].as_array().cloned().unwrap_or_default(),
        |body, n| {
            body["Meta"]["TotalNumberOfPages"]
                .as_u64()
                .is_some_and(|pages| n + 1 < pages)
        },
        |terms| terms["Id"].as_str().map(str::to_ascii_lowercase) == Some(wanted.clone()),
    )
    .await;
    match found {
        Err(e) => unreachable(PRODUCT, &e),
        Ok(Err(answer)) => unexpected(PRODUCT, "the terms of payment", &answer),
        Ok(Ok(true)) => Verdict::Ok("TermsOfPaymentId is one of the company's terms".into()),
        Ok(Ok(false)) => Verdict::Fail(format!(
            "[constants] TermsOfPaymentId in {} is not one of this company's terms of \
             payment: replace it with an Id from GET /v2/termsofpayments",
            mapping.file.display()
        )),
    }
}

/// The name of the access line in `check`.
pub const ACCESS_CHECK: &str = "scopes";

/// Whether the stored grant (or the refresh token in the env var) gives an access
/// token. A refresh rotates the refresh token; the new one is stored, as a sync does.
pub async fn token(prober: &Prober) -> Verdict {
    prober.token_verdict().await
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
    fn a_missing_scope_names_the_scope_and_what_to_run() {
        // What eAccounting documents for a token without ea:sales, and a bare 403.
        for code in [Some("4006"), None] {
            let why = failure(access_verdict(&answer(403, code)));
            assert!(
                why.contains("ea:sales") && why.contains("auth login"),
                "{why}"
            );
        }
        let why = failure(access_verdict(&answer(403, Some("4007"))));
        assert!(why.contains("permission"), "{why}");
        assert!(matches!(access_verdict(&answer(200, None)), Verdict::Ok(_)));
    }
}
