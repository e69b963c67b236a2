//! Visma eAccounting (eEkonomi / Spiris), API v2.
//!
//! Create: `POST /customers` with `CustomerNumber` = Opter customer code. Update: the
//! register's PUT is a full replace, so the current object is read and only our fields
//! are overlaid before it is sent back (fields an accountant set in Visma survive).
//! Find again: `$filter=CustomerNumber eq '...'`.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::auth::TokenProvider;
use super::http::{safe_message, Credentials, Dialect, Http, Reply};
use super::{CustomerPage, Erased, Remote, SinkError, Written, ERASED_NAME};
use crate::mapping::{rule, text, FieldKind, MappedRecord, RegisterRules};
use crate::retry::RetryPolicy;

pub mod probe;
mod settings;
pub use settings::{login_settings, EAccountingConfig, GRANT_FILE};

/// This register's descriptor: see `sink::Register`.
pub static REGISTER: super::Register = super::Register {
    name: "eaccounting",
    rules: RULES,
    mapping: include_str!("../../../mappings/eaccounting.toml"),
    journal_fields: &[
        "CustomerNumber",
        "Name",
        "ContactPersonName",
        "ContactPersonEmail",
        "EmailAddress",
        "IsActive",
        "IsPrivatePerson",
        "InvoiceCity",
        "InvoicePostalCode",
        "TermsOfPaymentId",
    ],
    settings: super::register::settings_of::<EAccountingConfig>,
    processing: super::register::VISMA_TRUST_CENTRE,
};

super::sink_by_inherent_methods!(EAccountingSink, REGISTER);

pub const PRODUCT: &str = "Visma eAccounting";

/// Customers per page of the register index: the largest `$pagesize` eAccounting takes.
const INDEX_PAGE_SIZE: u32 = 1000;

/// The scopes the customer endpoints need: `ea:api` for any eAccounting call and
/// `ea:sales` to write customers (`ea:sales_readonly` only reads). Sources: "Scopes" at
/// https://developer.vismaonline.com/docs/authentication, and each customer operation's
/// "Requires any of the following scopes" in the swagger.
pub const REQUIRED_SCOPES: &[&str] = &["ea:api", "ea:sales"];

/// eAccounting's service id in Visma Online's `acr_values` (`service:<id>`), as Visma's
/// authentication changelog gives it
/// (https://developer.vismaonline.com/changelog/new-user-authentication-recommandations-and-information).
pub const SERVICE_ID: &str = "44643EB1-3F76-4C1C-A672-402AE8085934";

/// eAccounting's error for a token without an endpoint's scope (NoAccessToScopes,
/// https://developer.vismaonline.com/docs/error-codes).
pub const NO_ACCESS_TO_SCOPES: &str = "4006";

/// The CustomerApi fields this connector fills, with the limits Visma publishes in its
/// swagger (`CustomerApi`); a test compares them with the swagger when it is at hand.
pub const RULES: RegisterRules = RegisterRules {
    product: PRODUCT,
    number_field: "CustomerNumber",
    fields: &[
        rule("CustomerNumber", text(16), false, false),
        rule("Name", text(50), true, true),
        rule("ContactPersonName", text(100), false, true),
        rule(
            "ContactPersonEmail",
            FieldKind::Email { max_chars: 255 },
            false,
            true,
        ),
        rule(
            "EmailAddress",
            FieldKind::Email { max_chars: 255 },
            false,
            true,
        ),
        rule("IsActive", FieldKind::Bool, true, false),
        rule("IsPrivatePerson", FieldKind::Bool, true, false),
        rule("InvoiceCity", text(50), true, false),
        rule("InvoicePostalCode", text(10), true, false),
        rule("TermsOfPaymentId", FieldKind::Uuid, true, false),
    ],
};

pub struct EAccountingSink {
    http: Http,
    base: String,
}

impl EAccountingSink {
    pub fn new(
        api_base: &str,
        tokens: TokenProvider,
        requests_per_minute: u32,
        retry: RetryPolicy,
    ) -> anyhow::Result<EAccountingSink> {
        let dialect = Dialect {
            product: PRODUCT,
            error_of,
            special,
            refused_hint: "Check that the login has the scopes ea:api and ea:sales, or run \
                           `opter-visma-sync auth login`.",
            refused_on_first_use: None,
        };
        Ok(EAccountingSink {
            http: Http::new(
                dialect,
                Credentials::Refreshing(tokens),
                requests_per_minute,
                retry,
            )?,
            base: api_base.trim_end_matches('/').to_string(),
        })
    }

    pub async fn find_by_number(&self, number: &str) -> Result<Option<Remote>, SinkError> {
        let filter = format!("CustomerNumber eq '{}'", number.replace('\'', "''"));
        let mut url = url::Url::parse(&format!("{}/customers", self.base)).expect("base is a URL");
        url.query_pairs_mut().append_pair("$filter", &filter);
        let reply = self.http.send(Method::GET, url.as_str(), None).await?;
        let body = reply.json(PRODUCT, "a customer search")?;
        let Some(rows) = body["Data"].as_array() else {
            return Err(SinkError::Failed {
                status: Some(reply.status),
                message: format!(
                    "{PRODUCT} answered a customer search without its Data list, so whether \
                     the customer exists cannot be told"
                ),
            });
        };
        if let Some(found) = rows.iter().find(|c| c["CustomerNumber"] == number) {
            return remote(found.clone()).map(Some);
        }
        // "Not found" must be sure: a register that ignored the filter (Visma does not
        // document it for CustomerNumber) answers with other customers, or more pages.
        let total = body["Meta"]["TotalNumberOfResults"].as_u64();
        if !rows.is_empty() || total.is_some_and(|t| t > 0) {
            return Err(SinkError::Failed {
                status: Some(reply.status),
                message: format!(
                    "{PRODUCT} did not filter by CustomerNumber, so whether the customer \
                     exists cannot be told"
                ),
            });
        }
        Ok(None)
    }

    /// `GET /customers?$page=N&$pagesize=1000` (pages count from 1), read as the
    /// envelope `{Meta: {CurrentPage, TotalNumberOfPages}, Data: [...]}`.
    pub async fn customers_page(&self, page: u32) -> Result<CustomerPage, SinkError> {
        let url = format!(
            "{}/customers?$page={}&$pagesize={INDEX_PAGE_SIZE}",
            self.base,
            page + 1
        );
        let reply = self.http.send(Method::GET, &url, None).await?;
        let body = reply.json(PRODUCT, "the customer list")?;
        let unreadable = || SinkError::Failed {
            status: Some(reply.status),
            message: format!("{PRODUCT} answered the customer list without its Data list"),
        };
        let rows = body["Data"].as_array().ok_or_else(unreadable)?;
        let mut customers = Vec::with_capacity(rows.len());
        for row in rows {
            let number = row["CustomerNumber"].as_str().ok_or_else(unreadable)?;
            customers.push((number.to_string(), listed(row)?));
        }
        let pages = body["Meta"]["TotalNumberOfPages"].as_u64();
        let more = match pages {
            Some(pages) => u64::from(page) + 1 < pages,
            None => rows.len() >= INDEX_PAGE_SIZE as usize,
        };
        Ok(CustomerPage { customers, more })
    }

    /// A list entry holds the whole customer.
    pub async fn complete(&self, listed: Remote) -> Result<Remote, SinkError> {
        Ok(listed)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Remote>, SinkError> {
        match self
            .http
            .send(Method::GET, &format!("{}/customers/{id}", self.base), None)
            .await
        {
            Ok(reply) => remote(reply.json(PRODUCT, "a read")?).map(Some),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// eAccounting has no idempotency keys: exactly-once is the journal's intents plus
    /// `CustomerNumber` being unique (a second create answers 4000).
    pub async fn create(&self, record: &MappedRecord, _key: &str) -> Result<Written, SinkError> {
        let body = create_body(record);
        let url = format!("{}/customers", self.base);
        match self.http.send(Method::POST, &url, Some(&body)).await {
            Ok(reply) => Ok(Written {
                remote_id: created_id(&reply)?,
                status: reply.status,
            }),
            Err(SinkError::Rejected {
                status,
                code: Some(code),
                message,
            }) if code == "4000" => Err(SinkError::NumberTaken { status, message }),
            Err(e) => Err(e),
        }
    }

    /// Overlays our fields on the register's current object and PUTs it back.
    pub async fn update(
        &self,
        id: &str,
        record: &MappedRecord,
        _key: &str,
    ) -> Result<Written, SinkError> {
        let url = format!("{}/customers/{id}", self.base);
        let current = self
            .http
            .send(Method::GET, &url, None)
            .await?
            .json(PRODUCT, "the read before an update")?;
        // The PUT replaces the whole customer: built from anything but the customer as
        // the register holds it, it would wipe the accountant's fields.
        let mut merged = match current {
            Value::Object(fields) if fields.get("Id").is_some_and(Value::is_string) => fields,
            _ => {
                return Err(SinkError::Failed {
                    status: None,
                    message: format!(
                        "{PRODUCT} answered the read before an update with something that is \
                         not a customer; nothing is written from it"
                    ),
                })
            }
        };
        for (field, value) in &record.fields {
            match value {
                Value::Null => merged.remove(field),
                v => merged.insert(field.clone(), v.clone()),
            };
        }
        for (field, value) in record.defaults.iter() {
            let unset = match merged.get(field) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset {
                merged.insert(field.clone(), value.clone());
            }
        }
        let reply = self
            .http
            .send(Method::PUT, &url, Some(&Value::Object(merged)))
            .await?;
        Ok(Written {
            remote_id: id.to_string(),
            status: reply.status,
        })
    }

    /// Deletes the customer (eAccounting answers 200, per its swagger); one with
    /// transactions cannot be deleted (4001), so its personal fields are overwritten and
    /// it is deactivated instead.
    pub async fn erase(&self, id: &str, key: &str) -> Result<Erased, SinkError> {
        let url = format!("{}/customers/{id}", self.base);
        match self.http.send(Method::DELETE, &url, None).await {
            Ok(reply) => Ok(Erased::Deleted {
                status: reply.status,
            }),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(Erased::NotPresent),
            Err(SinkError::Rejected { code: Some(c), .. }) if c == "4001" => {
                let written = self.update(id, &anonymised(id), key).await?;
                Ok(Erased::Anonymised {
                    status: written.status,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Every personal field blanked, the name replaced, the customer deactivated.
///
/// The personal fields are sent as explicit empty strings, never left out or null:
/// eAccounting's PUT "Replace[s] the data in a customer", but whether it clears a
/// property the body omits (or sends as null) is not documented, and an erasure must not
/// depend on it. The swagger allows the empty string for each of them (`CustomerApi`:
/// `ContactPersonName`, `ContactPersonEmail`, `EmailAddress` are strings with
/// `minLength: 0` and are not marked nullable; eaccounting-v2.swagger.json,
/// https://eaccountingapi.vismaonline.com/swagger/docs/v2).
fn anonymised(id: &str) -> MappedRecord {
    let fields = [
        ("Name", Value::from(ERASED_NAME)),
        ("ContactPersonName", Value::from("")),
        ("ContactPersonEmail", Value::from("")),
        ("EmailAddress", Value::from("")),
        ("IsActive", Value::Bool(false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    MappedRecord {
        code: id.to_string(),
        number: id.to_string(),
        fields,
        defaults: Default::default(),
        content_hash: String::new(),
    }
}

/// eAccounting's error body is `{ErrorCode, DeveloperErrorMessage, ErrorId}`.
fn error_of(body: &Value, status: StatusCode) -> (Option<String>, String) {
    let code = match &body["ErrorCode"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    // A body that is not eAccounting's (a proxy's error page) is replaced by the status.
    (
        code,
        safe_message(body["DeveloperErrorMessage"].as_str(), status),
    )
}

/// 4006: the login was not granted a scope the customer endpoints need. Only a new
/// login can grant it, so a person must log in again (exit 4). The register's message
/// does not say which scope; these endpoints need `REQUIRED_SCOPES`.
fn special(_status: StatusCode, code: Option<&str>, _message: &str) -> Option<SinkError> {
    (code == Some(NO_ACCESS_TO_SCOPES)).then(|| {
        SinkError::NeedsLogin(format!(
            "{PRODUCT} refused the request for lack of a scope (error {NO_ACCESS_TO_SCOPES}): \
             the customer endpoints need the scopes {}, and the stored login lacks one of them \
             (ea:sales_readonly only reads). Make sure [sink] scopes lists them, then run \
             `opter-visma-sync auth login` and grant them.",
            REQUIRED_SCOPES.join(" and ")
        ))
    })
}

/// The new customer's `Id`, read without building the rest of the answer.
fn created_id(reply: &Reply) -> Result<String, SinkError> {
    #[derive(serde::Deserialize)]
    struct Created {
        #[serde(rename = "Id")]
        id: String,
    }
    reply
        .part::<Created>()
        .map(|c| c.id)
        .ok_or_else(|| SinkError::Failed {
            status: None,
            message: format!("{PRODUCT} answered without the customer's Id"),
        })
}

fn id_of(body: &Value) -> Result<String, SinkError> {
    body["Id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| SinkError::Failed {
            status: None,
            message: format!("{PRODUCT} answered without the customer's Id"),
        })
}

/// A customer from the list, with only the fields a mapping can name (a register of
/// many customers is held in memory while a run plans against it).
fn listed(row: &Value) -> Result<Remote, SinkError> {
    let fields: Map<String, Value> = RULES
        .fields
        .iter()
        .filter_map(|r| row.get(r.name).map(|v| (r.name.to_string(), v.clone())))
        .collect();
    Ok(Remote {
        id: id_of(row)?,
        fields: Value::Object(fields),
        record: Value::Null,
    })
}

fn remote(body: Value) -> Result<Remote, SinkError> {
    let id = id_of(&body)?;
    Ok(Remote {
        id,
        fields: body.clone(),
        record: body,
    })
}

/// The body of `POST /customers`: constants and our fields, unset ones left out.
pub fn create_body(record: &MappedRecord) -> Value {
    Value::Object(
        record
            .defaults
            .iter()
            .chain(&record.fields)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scope_needs_a_new_login_naming_the_scopes() {
        match special(StatusCode::FORBIDDEN, Some("4006"), "NoAccessToScopes") {
            Some(SinkError::NeedsLogin(m)) => {
                assert!(m.contains("ea:sales") && m.contains("auth login"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(special(StatusCode::FORBIDDEN, Some("4005"), "x"), None);
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let body = serde_json::json!({"ErrorCode": 4000, "DeveloperErrorMessage": "taken", "ErrorId": "x"});
        assert_eq!(
            error_of(&body, StatusCode::BAD_REQUEST),
            (Some("4000".into()), "taken".into())
        );
        // A proxy's page is not eAccounting's body: only the status is kept.
        assert_eq!(
            error_of(&Value::Null, StatusCode::BAD_GATEWAY),
            (None, "Bad Gateway".into())
        );
        // Quoted parts may echo values (the whole object goes back on update).
        let echo = serde_json::json!({"ErrorCode": 2000,
            "DeveloperErrorMessage": "Address 'Storgatan 1' and \"070-123\" are invalid"});
        assert_eq!(
            error_of(&echo, StatusCode::BAD_REQUEST).1,
            "Address '…' and \"…\" are invalid"
        );
    }
}
