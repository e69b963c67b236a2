//! Visma.net ERP (Financials), API v1 (../shared/docs/visma-apis.md section 2).
//!
//! The customer number (`number`, Visma.net's customer CD) is Opter's customer code and
//! is the register's id: `GET/PUT /v1/customer/{number}`. Bodies are value-wrapped
//! DTOs (`{"name": {"value": "Acme"}}`), answers are plain JSON. Create: `POST
//! /v1/customer` with our fields and the mapping's constants (201, the new number in
//! `Location`). Update: a partial `PUT` with only our fields (204): what is omitted stays
//! as it is, so the class values, addresses and terms an accountant keeps in Visma.net
//! are never touched, and constants are sent on create only. Visma.net has no customer
//! DELETE: erasure overwrites the personal fields and makes the customer `Inactive`.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::auth::ClientCredentials;
use super::http::{safe_message, Credentials, Dialect, Http};
use super::{CustomerPage, Erased, Remote, SinkError, Written, ERASED_NAME};
use crate::mapping::{rule, text, FieldKind, MappedRecord, RegisterRules};
use crate::retry::RetryPolicy;

pub mod probe;
mod settings;
pub use settings::VismaNetConfig;

/// This register's descriptor: see `sink::Register`.
pub static REGISTER: super::Register = super::Register {
    name: "visma-net",
    rules: RULES,
    mapping: include_str!("../../../mappings/visma-net.toml"),
    journal_fields: &[
        "number",
        "name",
        "mainContact.name",
        "mainContact.attention",
        "mainContact.email",
        "status",
        "customerClassId",
        "overrideWithClassValues",
        "mainAddress.countryId",
    ],
    settings: super::register::settings_of::<VismaNetConfig>,
    processing: super::register::VISMA_TRUST_CENTRE,
};

super::sink_by_inherent_methods!(VismaNetSink, REGISTER);

pub const PRODUCT: &str = "Visma.net ERP";

/// The `CustomerUpdateDto` fields this connector may fill, named as the mapping names
/// them (nested ones dotted). Visma.net publishes no lengths in its swagger; these are
/// the ERP's column sizes:
/// - `number`: the customer CD is a segmented key whose default layout (segment
///   CUSTOMER) is 10 characters; a company with a longer layout can only accept more if
///   this limit is raised with it.
/// - `name`, `mainContact.*`: 255, the size of the account name and contact columns.
/// - `customerClassId`: 10 (class ids); `mainAddress.countryId`: 2 (ISO 3166 alpha-2).
/// - `status`: one of Active, OnHold, CreditHold, Inactive, OneTime (at most 10).
///
/// `overrideWithClassValues` is the one field Visma.net takes as a plain boolean.
pub const RULES: RegisterRules = RegisterRules {
    product: PRODUCT,
    number_field: "number",
    fields: &[
        rule("number", text(10), false, false),
        rule("name", text(255), true, true),
        rule("mainContact.name", text(255), false, true),
        rule("mainContact.attention", text(255), false, true),
        rule(
            "mainContact.email",
            FieldKind::Email { max_chars: 255 },
            false,
            true,
        ),
        rule("status", text(10), false, false),
        rule("customerClassId", text(10), true, false),
        rule("overrideWithClassValues", FieldKind::Bool, false, false),
        rule("mainAddress.countryId", text(2), true, false),
    ],
};

/// Fields sent as plain values rather than `{"value": ...}` (as in Visma's own example).
const PLAIN_FIELDS: &[&str] = &["overrideWithClassValues"];

/// Where a mapping field is found in a customer as `GET` serves it, when that differs
/// from its name: the class and the country come back as `{id, description|name}`.
const READ_PATHS: &[(&str, &str)] = &[
    ("customerClassId", "customerClass.id"),
    ("mainAddress.countryId", "mainAddress.country.id"),
];

/// Customers asked for per page of the register index.
const INDEX_PAGE_SIZE: u32 = 1000;

/// Visma.net's fault code "No license for this company": the API user lacks its role,
/// the tenant is the customer's rather than the company's, or the licence has expired
/// (Visma community knowledge base, "No license for this company" 12027:
/// https://community.visma.com/t5/Knowledge-base-in-Developers/tkb-p/DV_CO_Vismanet_knowledgebase).
pub const NO_LICENSE_FAULT_CODE: &str = "12027";

/// A token for the customer's tenant instead of the company's is issued as usual, and
/// then every API call answers 401 Unauthorized (Visma's "Fix 401 Unauthorized errors
/// despite valid token": https://docs.vismasoftware.no/vismanetapi/how-tos/fix401error/).
/// So a token refused on its first use, before any token was ever taken, means this.
pub const WRONG_TENANT: &str = "check `tenant_id` in [sink] of the config: use the Company \
     Tenant ID (Visma Admin > Company > the company > Edit > Configuration > Tenant id, and \
     the same organisation chosen in the Visma App Store), not the Customer Tenant ID: both \
     get a token, but only the company's is let into the API";

pub struct VismaNetSink {
    http: Http,
    base: String,
}

impl VismaNetSink {
    /// `api_base` is the root above `/v1` (e.g. `https://api.finance.visma.net`).
    pub fn new(
        api_base: &str,
        credentials: ClientCredentials,
        requests_per_minute: u32,
        retry: RetryPolicy,
    ) -> anyhow::Result<VismaNetSink> {
        let base = api_base.trim_end_matches('/').to_string();
        url::Url::parse(&base)
            .map_err(|e| anyhow::anyhow!("[sink] api_base {base} is not a URL: {e}"))?;
        let dialect = Dialect {
            product: PRODUCT,
            error_of,
            special,
            refused_hint: "Check [sink] client_id, the client secret's environment variable \
                           and that the client has the scopes vismanet_erp_service_api:read, \
                           :create and :update in the Visma Developer Portal.",
            refused_on_first_use: Some(WRONG_TENANT),
        };
        Ok(VismaNetSink {
            http: Http::new(
                dialect,
                Credentials::ClientCredentials(credentials),
                requests_per_minute,
                retry,
            )?,
            base,
        })
    }

    /// The number is the customer's id in Visma.net, so this is `get`.
    pub async fn find_by_number(&self, number: &str) -> Result<Option<Remote>, SinkError> {
        self.get(number).await
    }

    /// `GET /v1/customer?pageNumber=N&pageSize=S` (pages count from 1): a plain array.
    /// Visma.net may serve fewer per page than asked (its maximum is configured per
    /// installation), and each customer carries `metadata: {totalCount, maxPageSize}`
    /// (https://docs.vismasoftware.no/visma-net-erp/release-notes/2021-02-16-get-customer-no-longer-returns-metadata-maxpagesize-totalcount/),
    /// so "more pages" is read from those, else from a full page.
    pub async fn customers_page(&self, page: u32) -> Result<CustomerPage, SinkError> {
        let mut url = url::Url::parse(&self.customer_url(None)).expect("checked in new");
        url.query_pairs_mut()
            .append_pair("pageNumber", &(page + 1).to_string())
            .append_pair("pageSize", &INDEX_PAGE_SIZE.to_string());
        let reply = self.http.send(Method::GET, url.as_str(), None).await?;
        let body = reply.json(PRODUCT, "the customer list")?;
        let Some(rows) = body.as_array() else {
            return Err(SinkError::Failed {
                status: Some(reply.status),
                message: format!("{PRODUCT} answered the customer list with something else"),
            });
        };
        let mut customers = Vec::with_capacity(rows.len());
        for row in rows {
            let mut remote = remote(row.clone())?;
            remote.record = Value::Null;
            customers.push((remote.id.clone(), remote));
        }
        let meta = rows.first().map(|r| &r["metadata"]);
        let page_size = meta
            .and_then(|m| m["maxPageSize"].as_u64())
            .map_or(u64::from(INDEX_PAGE_SIZE), |max| {
                max.clamp(1, u64::from(INDEX_PAGE_SIZE))
            });
        let more = match meta.and_then(|m| m["totalCount"].as_u64()) {
            Some(total) => (u64::from(page) + 1) * page_size < total && !rows.is_empty(),
            None => rows.len() as u64 >= page_size,
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
            .send(Method::GET, &self.customer_url(Some(id)), None)
            .await
        {
            Ok(reply) => remote(reply.json(PRODUCT, "a read")?).map(Some),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Visma.net has no idempotency keys: exactly-once is the journal's intents plus the
    /// number being unique. A refused create whose number turns out to exist is
    /// `NumberTaken`, whatever the wording of the refusal (Visma.net's bodies are opaque).
    pub async fn create(&self, record: &MappedRecord, _key: &str) -> Result<Written, SinkError> {
        let body = create_body(record);
        match self
            .http
            .send(Method::POST, &self.customer_url(None), Some(&body))
            .await
        {
            Ok(reply) => {
                let remote_id = reply
                    .headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(last_segment)
                    .unwrap_or_else(|| record.number.clone());
                Ok(Written {
                    remote_id,
                    status: reply.status,
                })
            }
            Err(SinkError::Rejected {
                status: status @ (400 | 409),
                code,
                message,
            }) => match self.get(&record.number).await? {
                Some(_) => Err(SinkError::NumberTaken { status, message }),
                None => Err(SinkError::Rejected {
                    status,
                    code,
                    message,
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Partial update: only our fields; `Null` clears a field.
    pub async fn update(
        &self,
        id: &str,
        record: &MappedRecord,
        _key: &str,
    ) -> Result<Written, SinkError> {
        let body = update_body(record);
        let reply = self
            .http
            .send(Method::PUT, &self.customer_url(Some(id)), Some(&body))
            .await?;
        Ok(Written {
            remote_id: id.to_string(),
            status: reply.status,
        })
    }

    /// Overwrites name, contact name, attention and email, and makes the customer
    /// inactive (there is no DELETE).
    pub async fn erase(&self, id: &str, _key: &str) -> Result<Erased, SinkError> {
        let fields = [
            ("name", Value::from(ERASED_NAME)),
            ("mainContact.name", Value::Null),
            ("mainContact.attention", Value::Null),
            ("mainContact.email", Value::Null),
            ("status", Value::from("Inactive")),
        ];
        let body = wrap(fields.iter().map(|(k, v)| (*k, v)));
        match self
            .http
            .send(Method::PUT, &self.customer_url(Some(id)), Some(&body))
            .await
        {
            Ok(reply) => Ok(Erased::Anonymised {
                status: reply.status,
            }),
            Err(SinkError::Rejected { status: 404, .. }) => Ok(Erased::NotPresent),
            Err(e) => Err(e),
        }
    }

    /// `{base}/v1/customer` or `{base}/v1/customer/{id}` (the id path-encoded).
    fn customer_url(&self, id: Option<&str>) -> String {
        let mut url = url::Url::parse(&self.base).expect("checked in new");
        {
            let mut segments = url.path_segments_mut().expect("an http(s) URL");
            segments.pop_if_empty().extend(["v1", "customer"]);
            if let Some(id) = id {
                segments.push(id);
            }
        }
        url.to_string()
    }
}

/// The last path segment of a `Location` (absolute or relative), percent-decoded.
fn last_segment(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?.trim_end_matches('/');
    let segment = path.rsplit('/').next().filter(|s| !s.is_empty())?;
    let decoded =
        url::form_urlencoded::parse(format!("v={}", segment.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
    Some(decoded)
}

/// The body of `POST /v1/customer`: constants, then our fields; unset ones left out.
pub fn create_body(record: &MappedRecord) -> Value {
    wrap(
        record
            .defaults
            .iter()
            .chain(&record.fields)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_str(), v)),
    )
}

/// The body of `PUT /v1/customer/{number}`: our fields only (the number is the path),
/// `Null` sent as `{"value": null}` so that Visma.net clears the field.
pub fn update_body(record: &MappedRecord) -> Value {
    wrap(
        record
            .fields
            .iter()
            .filter(|(k, _)| k.as_str() != RULES.number_field)
            .map(|(k, v)| (k.as_str(), v)),
    )
}

/// Flat, dotted fields as a value-wrapped DTO: `{"a.b": 1}` becomes
/// `{"a": {"value": {"b": {"value": 1}}}}`.
pub fn wrap<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Value {
    let mut out = Map::new();
    for (name, value) in fields {
        let mut parts: Vec<&str> = name.split('.').collect();
        let leaf = parts.pop().unwrap_or(name);
        let mut level = &mut out;
        for part in parts {
            let slot = level
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({ "value": {} }));
            if !slot["value"].is_object() {
                slot["value"] = Value::Object(Map::new());
            }
            level = slot["value"].as_object_mut().expect("made an object above");
        }
        let wrapped = if PLAIN_FIELDS.contains(&name) {
            value.clone()
        } else {
            serde_json::json!({ "value": value })
        };
        level.insert(leaf.to_string(), wrapped);
    }
    Value::Object(out)
}

/// A customer as `GET` serves it (plain values) as the register's `Remote`: its fields
/// keyed by the mapping's names, so `Mapping::remote_hash` compares like with like.
fn remote(body: Value) -> Result<Remote, SinkError> {
    let id = body["number"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| SinkError::Failed {
            status: None,
            message: format!("{PRODUCT} answered without the customer's number"),
        })?;
    Ok(Remote {
        id,
        fields: flat_fields(&body),
        record: body,
    })
}

/// Every field of `RULES`, read from a `GET` body; absent ones are `Null`.
pub fn flat_fields(body: &Value) -> Value {
    let fields = RULES
        .fields
        .iter()
        .map(|r| {
            let path = READ_PATHS
                .iter()
                .find(|(name, _)| *name == r.name)
                .map_or(r.name, |(_, path)| *path);
            let value = path
                .split('.')
                .try_fold(body, |v, part| v.get(part))
                .cloned()
                .unwrap_or(Value::Null);
            (r.name.to_string(), value)
        })
        .collect::<Map<String, Value>>();
    Value::Object(fields)
}

/// Visma.net's error bodies: `{"ExceptionType": "IPPException", "ExceptionMessage",
/// "ExceptionFaultCode", ...}` or `{"message": ...}`; anything else (a gateway's page)
/// is replaced by the status.
fn error_of(body: &Value, status: StatusCode) -> (Option<String>, String) {
    let code = match &body["ExceptionFaultCode"] {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    fn non_empty(v: &Value) -> Option<&str> {
        v.as_str().map(str::trim).filter(|s| !s.is_empty())
    }
    let message = non_empty(&body["ExceptionMessage"])
        .or_else(|| non_empty(&body["message"]))
        .or_else(|| non_empty(&body["Message"]));
    (code, safe_message(message, status))
}

/// 12027 ("No license for this company") means the token's tenant is not the
/// company's: no request can succeed until the configuration is corrected.
fn special(_status: StatusCode, code: Option<&str>, message: &str) -> Option<SinkError> {
    (code == Some(NO_LICENSE_FAULT_CODE)).then(|| {
        SinkError::Config(format!(
            "{PRODUCT} refused the company (error {NO_LICENSE_FAULT_CODE}: {message}): check \
             tenant_id in [sink] of the config: it must be the tenant GUID of the company \
             from the Visma App Store invitation, and the integration must be activated for \
             that company"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The inverse of `wrap`: a value-wrapped DTO as flat dotted fields.
    fn unwrap_dto(dto: &Value) -> BTreeMap<String, Value> {
        fn walk(prefix: &str, map: &Map<String, Value>, out: &mut BTreeMap<String, Value>) {
            for (key, slot) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match slot.get("value") {
                    Some(Value::Object(inner))
                        if slot.as_object().is_some_and(|o| o.len() == 1) =>
                    {
                        walk(&name, inner, out)
                    }
                    Some(v) if slot.as_object().is_some_and(|o| o.len() == 1) => {
                        out.insert(name, v.clone());
                    }
                    _ => {
                        out.insert(name, slot.clone());
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        if let Some(map) = dto.as_object() {
            walk("", map, &mut out);
        }
        out
    }

    fn record(fields: &[(&str, Value)], defaults: &[(&str, Value)]) -> MappedRecord {
        let map = |pairs: &[(&str, Value)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        MappedRecord {
            code: "K1".into(),
            number: "K1".into(),
            fields: map(fields),
            defaults: map(defaults).into(),
            content_hash: String::new(),
        }
    }

    #[test]
    fn flat_fields_are_value_wrapped_and_nested() {
        let r = record(
            &[
                ("number", json!("K1")),
                ("name", json!("Acme")),
                ("mainContact.name", json!("Ann")),
                ("mainContact.email", Value::Null),
            ],
            &[
                ("customerClassId", json!("1")),
                ("overrideWithClassValues", json!(true)),
                ("mainAddress.countryId", json!("SE")),
            ],
        );
        assert_eq!(
            create_body(&r),
            json!({
                "number": {"value": "K1"},
                "name": {"value": "Acme"},
                "mainContact": {"value": {"name": {"value": "Ann"}}},
                "customerClassId": {"value": "1"},
                "overrideWithClassValues": true,
                "mainAddress": {"value": {"countryId": {"value": "SE"}}},
            })
        );
        // Update: our fields only, no number (it is the path), null clears.
        assert_eq!(
            update_body(&r),
            json!({
                "name": {"value": "Acme"},
                "mainContact": {"value": {"name": {"value": "Ann"}, "email": {"value": null}}},
            })
        );
    }

    #[test]
    fn the_bundled_mapping_loads_and_sends_only_permitted_values() {
        let mapping = crate::mapping::Mapping::parse(
            include_str!("../../../mappings/visma-net.toml"),
            std::path::Path::new("visma-net.toml"),
            RULES,
        )
        .unwrap();
        let customer = crate::record::PermittedCustomer {
            code: "K10001".into(),
            number: Some("10001".into()),
            name: "Åkeri Nord AB".into(),
            is_active: false,
            contact_name: Some("Ann Berg".into()),
            contact_email: None,
        };
        let r = mapping
            .check_and_hash(&customer)
            .map(|c| c.into_record())
            .unwrap();
        assert_eq!(r.number, "K10001");
        assert_eq!(
            create_body(&r),
            json!({
                "number": {"value": "K10001"},
                "name": {"value": "Åkeri Nord AB"},
                "mainContact": {"value": {"name": {"value": "Ann Berg"}}},
                "customerClassId": {"value": "1"},
                "overrideWithClassValues": true,
                "mainAddress": {"value": {"countryId": {"value": "SE"}}},
                "status": {"value": "Active"},
            })
        );
        let mut long = customer.clone();
        long.code = "K123456789".repeat(2);
        assert_eq!(
            mapping
                .check_and_hash(&long)
                .map(|c| c.into_record())
                .unwrap_err(),
            "number is 20 characters; Visma.net ERP accepts at most 10"
        );
    }

    #[test]
    fn wrapping_round_trips() {
        let flat: BTreeMap<String, Value> = [
            ("number", json!("K1")),
            ("name", json!("Åkeri Nord AB")),
            ("mainContact.name", json!("Ann")),
            ("mainContact.email", Value::Null),
            ("overrideWithClassValues", json!(false)),
            ("mainAddress.countryId", json!("SE")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let dto = wrap(flat.iter().map(|(k, v)| (k.as_str(), v)));
        assert_eq!(unwrap_dto(&dto), flat);
    }

    #[test]
    fn a_get_body_reads_back_as_the_mapping_names() {
        let body = json!({
            "internalId": 7, "number": "K1", "name": "Acme", "status": "Active",
            "customerClass": {"id": "1", "description": "Domestic"},
            "mainAddress": {"addressLine1": "Storgatan 1", "country": {"id": "SE", "name": "Sweden"}},
            "mainContact": {"name": "Ann", "attention": null, "email": "ann@acme.se", "phone1": "070"},
        });
        let r = remote(body.clone()).unwrap();
        assert_eq!(r.id, "K1");
        assert_eq!(r.record, body);
        assert_eq!(
            r.fields,
            json!({
                "number": "K1", "name": "Acme", "mainContact.name": "Ann",
                "mainContact.attention": null, "mainContact.email": "ann@acme.se",
                "status": "Active", "customerClassId": "1",
                "overrideWithClassValues": null, "mainAddress.countryId": "SE",
            })
        );
        // What we would send for it hashes the same as what the register holds.
        let sent = update_body(&record(
            &[
                ("name", json!("Acme")),
                ("mainContact.name", json!("Ann")),
                ("mainContact.email", json!("ann@acme.se")),
            ],
            &[],
        ));
        for (k, v) in unwrap_dto(&sent) {
            assert_eq!(r.fields[&k], v, "{k}");
        }
        assert!(remote(json!({"name": "no number"})).is_err());
    }

    #[test]
    fn error_bodies_give_fault_code_and_safe_message() {
        let ipp = json!({
            "ExceptionType": "IPPException",
            "ExceptionMessage": "No license for this company.",
            "ExceptionFaultCode": "12027",
            "ExceptionMessageID": "12027_6e2a06a8",
            "ExceptionDetails": "",
        });
        assert_eq!(
            error_of(&ipp, StatusCode::FORBIDDEN),
            (Some("12027".into()), "No license for this company.".into())
        );
        let plain = json!({"message": "VismaId: x. Customer 'Acme AB' is invalid"});
        assert_eq!(
            error_of(&plain, StatusCode::BAD_REQUEST),
            (None, "VismaId: x. Customer '…' is invalid".into())
        );
        assert_eq!(
            error_of(&Value::Null, StatusCode::BAD_GATEWAY),
            (None, "Bad Gateway".into())
        );
        let empty_code = json!({"ExceptionType": "IPPException", "ExceptionFaultCode": "",
            "ExceptionMessage": "An error has occurred."});
        assert_eq!(
            error_of(&empty_code, StatusCode::INTERNAL_SERVER_ERROR).0,
            None
        );
    }

    #[test]
    fn no_license_is_a_configuration_error_naming_tenant_id() {
        let e = special(StatusCode::FORBIDDEN, Some("12027"), "No license").unwrap();
        match e {
            SinkError::Config(m) => assert!(m.contains("tenant_id") && m.contains("[sink]"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(special(StatusCode::FORBIDDEN, Some("12002"), "x"), None);
        assert_eq!(special(StatusCode::BAD_REQUEST, None, "x"), None);
    }

    #[test]
    fn location_gives_the_number() {
        assert_eq!(
            last_segment("http://h/visma-net/api/v1/customer/K1").as_deref(),
            Some("K1")
        );
        assert_eq!(last_segment("/v1/customer/K%201/").as_deref(), Some("K 1"));
        assert_eq!(last_segment("/v1/customer/A+B").as_deref(), Some("A+B"));
        assert_eq!(last_segment(""), None);
    }
}
