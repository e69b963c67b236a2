//! Whatever else Opter sends with a customer, no sink payload carries it.

use std::path::Path;

use opter_visma_sync::mapping::Mapping;
use opter_visma_sync::sink::eaccounting::{create_body, RULES};
use opter_visma_sync::source::opter_api::parse_page;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn mapping() -> Mapping {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/eaccounting.toml");
    Mapping::load(&file, RULES).expect("bundled mapping loads")
}

/// Fields Opter sends that must never leave, each given a value carrying `marker`.
const NON_PERMITTED: [&str; 9] = [
    "corporateIdNumber",
    "vatNumber",
    "phone",
    "email",
    "information",
    "created",
    "invoiceAddress",
    "visitingAddress",
    "someFutureField",
];

prop_compose! {
    fn marker()(n in 0u64..u64::MAX) -> String { format!("SECRET{n:016x}") }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn extra_fields_never_reach_a_payload(
        marker in marker(),
        extra_names in prop::collection::vec("[a-zA-Z][a-zA-Z0-9_]{0,20}", 0..8),
        nested in any::<bool>(),
        reference_count in 0usize..4,
        default_at in 0usize..4,
    ) {
        let value = |i: usize| -> Value {
            if nested { json!({"street": format!("{marker}-{i}"), "deep": [format!("{marker}")]}) }
            else { Value::from(format!("{marker}-{i}")) }
        };
        let mut customer = Map::new();
        customer.insert("customerCode".into(), "K1".into());
        customer.insert("customerNumber".into(), "1001".into());
        customer.insert("name".into(), "Acme Åkeri AB".into());
        customer.insert("isActive".into(), true.into());
        customer.insert("updated".into(), "2025-01-01T00:00:00Z".into());
        for (i, field) in NON_PERMITTED.iter().enumerate() {
            customer.insert((*field).into(), value(i));
        }
        for (i, name) in extra_names.iter().enumerate() {
            let permitted = ["customerCode", "customerNumber", "name", "isActive", "updated", "references"];
            if !permitted.contains(&name.as_str()) {
                customer.insert(name.clone(), value(100 + i));
            }
        }
        let references: Vec<Value> = (0..reference_count)
            .map(|i| json!({
                "id": i, "name": format!("Person {i}"), "email": format!("p{i}@acme.se"),
                "phone": format!("{marker}-phone-{i}"), "mobilePhone": format!("{marker}-mobile-{i}"),
                "title": format!("{marker}-title-{i}"), "isDefault": i == default_at,
            }))
            .collect();
        customer.insert("references".into(), references.into());
        let page = json!({"page": 1, "pageSize": 1, "totalCount": 1, "items": [customer]});

        let parsed = parse_page(page.to_string().as_bytes()).unwrap();
        let source = parsed.customers.into_iter().next().unwrap();
        let debug = format!("{source:?}");
        prop_assert!(!debug.contains(&marker), "{}", debug);
        // The path planning takes: moved into its permitted form, checked, mapped.
        let permitted = source.into_permitted();
        let record = mapping()
            .check_and_hash(&permitted)
            .unwrap()
            .into_record();
        let body = create_body(&record).to_string();
        prop_assert!(!body.contains(&marker), "{}", body);
        prop_assert!(!serde_json::to_string(&record.fields).unwrap().contains(&marker));
    }
}
