use super::*;
use sha2::{Digest, Sha256};

const RULES: RegisterRules = RegisterRules {
    product: "Register X",
    number_field: "No",
    fields: &[
        FieldRule {
            name: "No",
            kind: FieldKind::Text { max_chars: 5 },
            required: false,
            personal: false,
        },
        FieldRule {
            name: "Name",
            kind: FieldKind::Text { max_chars: 10 },
            required: true,
            personal: true,
        },
        FieldRule {
            name: "Mail",
            kind: FieldKind::Email { max_chars: 20 },
            required: false,
            personal: true,
        },
        FieldRule {
            name: "Terms",
            kind: FieldKind::Text { max_chars: 36 },
            required: true,
            personal: false,
        },
    ],
};

const GOOD: &str = r#"
[fields]
No = "customer_code"
Name = "customer_name"
Mail = "contact_email"
[constants]
Terms = "t-1"
"#;

fn mapping(text: &str) -> Result<Mapping> {
    Mapping::parse(text, Path::new("m.toml"), RULES)
}

fn customer() -> PermittedCustomer {
    PermittedCustomer {
        code: "K1".into(),
        number: None,
        name: "Acme".into(),
        is_active: true,
        contact_name: None,
        contact_email: Some("a@acme.se".into()),
    }
}

#[test]
fn maps_fields_and_constants() {
    let r = mapping(GOOD).unwrap().mapped(&customer()).unwrap();
    assert_eq!(r.number, "K1");
    assert_eq!(r.defaults["Terms"], "t-1");
    assert!(
        !r.fields.contains_key("Terms"),
        "constants are defaults, not content"
    );
    assert_eq!(r.fields["Mail"], "a@acme.se");
    assert_eq!(r.content_hash.len(), 64);
}

#[test]
fn the_content_hash_is_sha256_of_the_fields_compact_json() {
    // Stored states hold this hash: a different form would make every customer look
    // changed after an upgrade.
    let m = mapping(GOOD).unwrap();
    for c in [
        customer(),
        PermittedCustomer {
            // Quotes and a backslash, which JSON escapes (control characters are rejected
            // before hashing).
            name: "Å \"N\"\\".into(),
            contact_name: Some("Eva Ek".into()),
            ..customer()
        },
    ] {
        assert_hash_is_of_the_record(&m, &c);
    }
    // Numbers, flags and missing values hash as the `Value`s they become.
    const TYPED: RegisterRules = RegisterRules {
        product: "Register Y",
        number_field: "No",
        fields: &[
            FieldRule {
                name: "No",
                kind: FieldKind::Integer {
                    min: -5,
                    max: 99_999,
                },
                required: true,
                personal: false,
            },
            FieldRule {
                name: "Active",
                kind: FieldKind::Bool,
                required: false,
                personal: false,
            },
            FieldRule {
                name: "Contact",
                kind: FieldKind::Text { max_chars: 10 },
                required: false,
                personal: true,
            },
        ],
    };
    let typed = "[fields]\nNo = \"customer_number\"\nActive = \"is_active\"\n\
                 Contact = \"contact_name\"\n";
    let m = Mapping::parse(typed, Path::new("y.toml"), TYPED).unwrap();
    for (number, active, contact) in [("1001", true, None), (" -3 ", false, Some("Eva"))] {
        let c = PermittedCustomer {
            number: Some(number.into()),
            is_active: active,
            contact_name: contact.map(str::to_string),
            ..customer()
        };
        let record = assert_hash_is_of_the_record(&m, &c);
        assert!(record.fields["No"].is_i64(), "{:?}", record.fields);
    }
}

fn assert_hash_is_of_the_record(m: &Mapping, c: &PermittedCustomer) -> MappedRecord {
    let checked = m.check_and_hash(c).unwrap();
    let hash = checked.content_hash.clone();
    let record = checked.into_record();
    let json = serde_json::to_vec(&record.fields).unwrap();
    assert_eq!(hash, hex::encode(Sha256::digest(json)));
    assert_eq!(record.content_hash, hash);
    assert_eq!(m.mapped(c).unwrap(), record);
    record
}

#[test]
fn a_non_permitted_source_field_is_refused_naming_it_and_the_file() {
    for field in [
        "phone",
        "corporate_id_number",
        "invoice_address",
        "information",
    ] {
        let e = mapping(&GOOD.replace("\"contact_email\"", &format!("\"{field}\"")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(field) && e.contains("m.toml") && e.contains("not a permitted"),
            "{e}"
        );
    }
}

#[test]
fn a_personal_register_field_cannot_be_a_constant() {
    let text = "[fields]\nNo = \"customer_code\"\n[constants]\nName = \"x\"\nTerms = \"t\"\n";
    let e = mapping(text).unwrap_err().to_string();
    assert!(e.contains("[constants] Name holds personal data"), "{e}");
}

#[test]
fn a_required_field_must_be_mapped_or_constant() {
    let e = mapping(&GOOD.replace("Terms = \"t-1\"", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("requires Terms"), "{e}");
}

#[test]
fn too_long_values_are_rejected_with_length_and_limit() {
    let m = mapping(GOOD).unwrap();
    let mut c = customer();
    c.name = "Åkeri Nord AB".into();
    assert_eq!(
        m.mapped(&c).unwrap_err(),
        "Name is 13 characters; Register X accepts at most 10"
    );
    let mut c = customer();
    c.code = "K123456".into();
    assert_eq!(
        m.mapped(&c).unwrap_err(),
        "No is 7 characters; Register X accepts at most 5"
    );
}

#[test]
fn non_ascii_is_counted_in_characters_not_bytes() {
    let mut c = customer();
    c.name = "ÅÄÖåäöØøÆæ".into(); // 10 characters, 20 bytes
    assert!(mapping(GOOD).unwrap().mapped(&c).is_ok());
}

#[test]
fn a_malformed_email_is_rejected_without_printing_it() {
    let mut c = customer();
    c.contact_email = Some("karin(at)acme".into());
    let e = mapping(GOOD).unwrap().mapped(&c).unwrap_err();
    assert!(
        e.contains("Mail is not a well-formed email") && !e.contains("karin"),
        "{e}"
    );
}

#[test]
fn an_empty_required_value_is_rejected() {
    let mut c = customer();
    c.name = "  ".into();
    let e = mapping(GOOD).unwrap().mapped(&c).unwrap_err();
    assert!(e.starts_with("Name is empty"), "{e}");
}

#[test]
fn the_hash_changes_with_content_only() {
    let m = mapping(GOOD).unwrap();
    let a = m.mapped(&customer()).unwrap();
    assert_eq!(a.content_hash, m.mapped(&customer()).unwrap().content_hash);
    let mut c = customer();
    c.contact_email = Some("b@acme.se".into());
    assert_ne!(a.content_hash, m.mapped(&c).unwrap().content_hash);
}

#[test]
fn constants_of_the_wrong_type_are_refused_at_load() {
    let bundled = include_str!("../../mappings/eaccounting.toml");
    let rules = crate::sink::eaccounting::RULES;
    assert!(Mapping::parse(bundled, Path::new("e.toml"), rules).is_ok());
    for (from, to, key) in [
        (
            "IsPrivatePerson = false",
            "IsPrivatePerson = \"no\"",
            "IsPrivatePerson",
        ),
        (
            "TermsOfPaymentId = \"",
            "TermsOfPaymentId = \"30 days ",
            "TermsOfPaymentId",
        ),
        (
            "InvoicePostalCode = \"-\"",
            "InvoicePostalCode = \"12345678901\"",
            "InvoicePostalCode is 11",
        ),
    ] {
        let text = bundled.replace(from, to);
        let e = Mapping::parse(&text, Path::new("e.toml"), rules)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("e.toml"), "{e}");
    }
}

proptest::proptest! {
    // Cheap cases, and the rare shapes (a hyphen ending the last label) need many.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

    #[test]
    fn the_ascii_email_check_agrees_with_the_general_one(
        s in "[ab.@()<>,;:\\\\\"\\[\\]\t\x01\x7f -]{0,12}"
    ) {
        proptest::prop_assert_eq!(
            is_well_formed_ascii_email(s.as_bytes()),
            is_well_formed_any_email(&s),
            "{:?}", s
        );
    }

    #[test]
    fn the_ascii_email_check_agrees_on_near_addresses(
        local in "[ab.+\"( -]{0,5}",
        domain in "[ab0.@ -]{0,7}",
    ) {
        let s = format!("{local}@{domain}");
        proptest::prop_assert_eq!(
            is_well_formed_ascii_email(s.as_bytes()),
            is_well_formed_any_email(&s),
            "{:?}", s
        );
    }
}

#[test]
fn email_shapes() {
    for ok in ["a@b.se", "first.last+tag@sub.example.com", "åsa@exempel.se"] {
        assert!(is_well_formed_email(ok), "{ok}");
    }
    for bad in [
        "",
        "a",
        "a@b",
        "a@@b.se",
        "a b@c.se",
        "a@b..se",
        ".a@b.se",
        "a(at)b.se",
        "<a@b.se>",
    ] {
        assert!(!is_well_formed_email(bad), "{bad}");
    }
}

/// What planning makes of one customer that is written: checked, hashed, mapped.
trait Mapped {
    fn mapped(&self, c: &PermittedCustomer) -> std::result::Result<MappedRecord, String>;
}

impl Mapped for Mapping {
    fn mapped(&self, c: &PermittedCustomer) -> std::result::Result<MappedRecord, String> {
        self.check_and_hash(c).map(Checked::into_record)
    }
}
