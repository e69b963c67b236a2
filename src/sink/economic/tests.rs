use super::*;
use reqwest::StatusCode;
use std::collections::BTreeMap;

fn record(fields: Value, defaults: Value) -> MappedRecord {
    let map = |v: Value| -> BTreeMap<String, Value> {
        v.as_object().unwrap().clone().into_iter().collect()
    };
    MappedRecord {
        code: "K1".into(),
        number: "1001".into(),
        fields: map(fields),
        defaults: map(defaults).into(),
        content_hash: String::new(),
    }
}

#[test]
fn error_bodies_give_the_first_property_code_and_no_values() {
    let body = json!({
        "message": "Validation exception.", "errorCode": "E04300",
        "developerHint": "Inspect validation errors and correct your request.",
        "logId": "x", "httpStatusCode": 400,
        "errors": {"customerNumber": {"errors": [{
            "propertyName": "customerNumber", "errorMessage": "Customer number 'K7' is in use.",
            "errorCode": "CustomerAlreadyExists", "inputValue": "secret-value-1001",
        }]}}
    });
    let (code, message) = error_of(&body, StatusCode::BAD_REQUEST);
    assert_eq!(code.as_deref(), Some("CustomerAlreadyExists"));
    assert_eq!(
        message,
        "Validation exception. customerNumber: Customer number '…' is in use."
    );
    assert!(!message.contains("secret"));
    // Without property errors, the body's own code.
    let body = json!({"message": "Customer not found.", "errorCode": "CustomerNotFound",
                      "httpStatusCode": 404});
    assert_eq!(
        error_of(&body, StatusCode::NOT_FOUND),
        (
            Some("CustomerNotFound".into()),
            "Customer not found.".into()
        )
    );
    // A proxy's page is not e-conomic's body: only the status is kept.
    assert_eq!(
        error_of(&Value::Null, StatusCode::BAD_GATEWAY),
        (None, "Bad Gateway".into())
    );
}

#[test]
fn a_taken_number_is_the_rest_apis_e06010_on_customer_number_or_the_customers_apis_code() {
    let body = |property: &str, code: &str| {
        json!({"message": "Validation exception.", "errorCode": "E04300",
               "httpStatusCode": 400, "logId": "x",
               "errors": {property: {"errors": [{"propertyName": property,
                   "errorMessage": "Customer number already exists.", "errorCode": code,
                   "inputValue": 1001}]}}})
    };
    let taken = |b: &Value| {
        let (code, message) = error_of(b, StatusCode::BAD_REQUEST);
        number_taken(&code.unwrap(), &message)
    };
    assert!(taken(&body("customerNumber", "E06010")));
    assert!(taken(&body("customerNumber", "CustomerAlreadyExists")));
    // "Already exists" about anything else is not our number.
    assert!(!taken(&body("name", "E06010")));
    assert!(!taken(&body("customerNumber", "E04300")));
    // e-conomic's documented form of a property error (`message`, `value`).
    let documented = json!({"message": "Validation error.", "httpStatusCode": 400,
        "errors": {"customerNumber": {"errors": [{"errorCode": "E06010",
            "message": "Customer '1001' already exists.", "value": 1001}]}}});
    let (code, message) = error_of(&documented, StatusCode::BAD_REQUEST);
    assert_eq!(code.as_deref(), Some("E06010"));
    assert_eq!(
        message,
        "Validation error. customerNumber: Customer '…' already exists."
    );
    assert!(number_taken("E06010", &message));
}

#[test]
fn bodies_nest_dotted_names_and_leave_contacts_and_nulls_out() {
    let r = record(
        json!({"customerNumber": 1001, "name": "Acme", "contact.name": "Ann",
               "contact.email": null}),
        json!({"currency": "DKK", "customerGroup.customerGroupNumber": 1,
               "paymentTerms.paymentTermsNumber": 3, "vatZone.vatZoneNumber": 1}),
    );
    assert_eq!(
        customer_body(&r),
        json!({"customerNumber": 1001, "name": "Acme", "currency": "DKK",
               "customerGroup": {"customerGroupNumber": 1},
               "paymentTerms": {"paymentTermsNumber": 3}, "vatZone": {"vatZoneNumber": 1}})
    );
}

#[test]
fn overlay_keeps_the_registers_values_and_sets_constants_only_where_unset() {
    let mut current = json!({
        "customerNumber": 1001, "name": "Old", "currency": "EUR", "address": "Street 1",
        "paymentTerms": {"paymentTermsNumber": 2, "self": "http://x/payment-terms/2"},
        "customerGroup": {"customerGroupNumber": 1, "self": "http://x/customer-groups/1"},
    })
    .as_object()
    .unwrap()
    .clone();
    let r = record(
        json!({"customerNumber": 1001, "name": "New"}),
        json!({"currency": "DKK", "customerGroup.customerGroupNumber": 2,
               "paymentTerms.paymentTermsNumber": 3, "vatZone.vatZoneNumber": 1}),
    );
    overlay(&mut current, &r);
    assert_eq!(
        Value::Object(current),
        json!({
            "customerNumber": 1001, "name": "New", "currency": "EUR", "address": "Street 1",
            "paymentTerms": {"paymentTermsNumber": 2, "self": "http://x/payment-terms/2"},
            "customerGroup": {"customerGroupNumber": 1, "self": "http://x/customer-groups/1"},
            "vatZone": {"vatZoneNumber": 1},
        })
    );
    // A changed reference number drops the stale link.
    let mut m = json!({"customerGroup": {"customerGroupNumber": 1, "self": "s"}})
        .as_object()
        .unwrap()
        .clone();
    set_path(&mut m, "customerGroup.customerGroupNumber", json!(2));
    assert_eq!(
        Value::Object(m),
        json!({"customerGroup": {"customerGroupNumber": 2}})
    );
}

#[test]
fn remote_fields_are_flat_in_the_mappings_names() {
    let customer = json!({"customerNumber": 1001, "name": "Acme", "currency": "DKK",
        "customerGroup": {"customerGroupNumber": 1, "self": "s"},
        "attention": {"customerContactNumber": 5}});
    let contact = json!({"customerContactNumber": 5, "name": "Ann"});
    assert_eq!(
        flat_fields(&customer, Some(&contact)),
        json!({"customerNumber": 1001, "name": "Acme", "currency": "DKK",
               "customerGroup.customerGroupNumber": 1, "contact.name": "Ann",
               "barred": false})
    );
}

#[test]
fn a_contact_email_without_a_name_is_rejected_before_sending() {
    let r = record(
        json!({"customerNumber": 1, "name": "A", "contact.name": null,
               "contact.email": "a@b.dk"}),
        json!({}),
    );
    let Err(SinkError::Rejected { message, .. }) = contact_wish(&r) else {
        panic!("rejected")
    };
    assert!(message.contains("contact.name") && !message.contains("a@b.dk"));
    let r = record(json!({"customerNumber": 1, "name": "A"}), json!({}));
    assert!(matches!(contact_wish(&r), Ok(ContactWish::Unmapped)));
}

#[test]
fn customer_numbers_are_whole_numbers_in_economics_range() {
    assert_eq!(customer_number("1001"), Some(1001));
    assert_eq!(customer_number(" 7 "), Some(7));
    for bad in ["K1001", "0", "-3", "1000000000", ""] {
        assert_eq!(customer_number(bad), None, "{bad}");
    }
}
