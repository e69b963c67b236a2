//! Mapping files: which permitted Opter field goes to which register field, plus the
//! non-personal constants the register requires. Checked at load and per record.
//!
//! Architecture invariant: a mapping can only name the fields in `PermittedField`; a
//! file that names anything else does not load. Records that break the register's
//! published limits are rejected with a reason, never truncated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::hash::{content_hash, hash_of};
use crate::record::{PermittedCustomer, PermittedField};

/// What a register accepts for one field it receives from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text {
        max_chars: usize,
    },
    Email {
        max_chars: usize,
    },
    Bool,
    /// A whole number within the register's range (e-conomic's customer number, group
    /// numbers). A text source value is converted; one that is not a number is rejected.
    Integer {
        min: i64,
        max: i64,
    },
    /// An id the register hands out (e.g. terms of payment); only ever a constant.
    Uuid,
}

/// A register field this connector may fill, with the register's own published limit.
#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    pub name: &'static str,
    pub kind: FieldKind,
    /// The register refuses a customer without it.
    pub required: bool,
    /// Holds personal data: may only come from a permitted field, never a constant.
    pub personal: bool,
}

/// Shorthand for the rule tables the sinks declare.
pub const fn rule(
    name: &'static str,
    kind: FieldKind,
    required: bool,
    personal: bool,
) -> FieldRule {
    FieldRule {
        name,
        kind,
        required,
        personal,
    }
}

pub const fn text(max_chars: usize) -> FieldKind {
    FieldKind::Text { max_chars }
}

/// The rules of one register product, as its sink declares them.
#[derive(Debug, Clone, Copy)]
pub struct RegisterRules {
    /// Product name used in messages, e.g. "Visma eAccounting".
    pub product: &'static str,
    /// The register field that holds our identifier, used to find a customer again.
    pub number_field: &'static str,
    pub fields: &'static [FieldRule],
}

impl RegisterRules {
    fn rule(&self, name: &str) -> Option<&FieldRule> {
        self.fields.iter().find(|r| r.name == name)
    }
}

/// A loaded, checked mapping file.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub file: PathBuf,
    rules: RegisterRules,
    /// register field -> permitted source field
    fields: BTreeMap<String, PermittedField>,
    /// Shared by every record mapped (one copy, however many customers are planned).
    constants: std::sync::Arc<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    fields: BTreeMap<String, String>,
    #[serde(default)]
    constants: BTreeMap<String, toml::Value>,
}

/// Characters never sent: C0 and C1 controls, DEL, and the Unicode controls that
/// reorder text on screen (bidi embeddings, overrides, isolates and marks).
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A customer in the register's vocabulary, ready to send, with its content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedRecord {
    pub code: String,
    /// Value of the register's number field: how the customer is found again.
    pub number: String,
    /// Mapped register field -> value; `Null` clears the field in the register.
    pub fields: BTreeMap<String, Value>,
    /// The mapping's constants: sent on create, and on update only where the register
    /// has no value, so what an accountant set in Visma (terms, address) survives.
    pub defaults: std::sync::Arc<BTreeMap<String, Value>>,
    /// SHA-256 (hex) of the canonical mapped fields: decides unchanged / update.
    pub content_hash: String,
}

impl Mapping {
    pub fn load(file: &Path, rules: RegisterRules) -> Result<Mapping> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::config(format!("cannot read mapping file {}: {e}", file.display()))
        })?;
        Self::parse(&text, file, rules)
    }

    pub fn parse(text: &str, file: &Path, rules: RegisterRules) -> Result<Mapping> {
        let bad = |why: String| Error::config(format!("mapping file {}: {why}", file.display()));
        let raw: MappingFile = toml::from_str(text).map_err(|e| {
            Error::config(format!(
                "mapping file {}",
                crate::error::toml_error(file, text, &e)
            ))
        })?;
        let allowed = PermittedField::ALL.map(|f| f.name()).join(", ");
        let mut fields = BTreeMap::new();
        for (target, source) in raw.fields {
            let Some(field) = PermittedField::from_name(&source) else {
                return Err(bad(format!(
                    "[fields] {target} = \"{source}\": \"{source}\" is not a permitted Opter \
                     field. Only these may leave Opter: {allowed}"
                )));
            };
            if rules.rule(&target).is_none() {
                return Err(bad(format!(
                    "[fields] {target}: {} has no field {target} that this connector fills; \
                     known fields: {}",
                    rules.product,
                    rules
                        .fields
                        .iter()
                        .map(|r| r.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            fields.insert(target, field);
        }
        if !fields.contains_key(rules.number_field) {
            return Err(bad(format!(
                "[fields] must map {} (the register's customer number, used to find a \
                 customer again), e.g. {} = \"customer_code\"",
                rules.number_field, rules.number_field
            )));
        }
        let mut constants = BTreeMap::new();
        for (target, value) in raw.constants {
            if fields.contains_key(&target) {
                return Err(bad(format!(
                    "{target} is both in [fields] and [constants]; keep one"
                )));
            }
            if rules.rule(&target).is_some_and(|r| r.personal) {
                return Err(bad(format!(
                    "[constants] {target} holds personal data and may only be mapped from a \
                     permitted field in [fields]"
                )));
            }
            let value = serde_json::to_value(&value).map_err(|e| bad(e.to_string()))?;
            if let Some(rule) = rules.rule(&target) {
                check_constant(rule, &value, rules.product)
                    .map_err(|why| bad(format!("[constants] {why}")))?;
            }
            constants.insert(target, value);
        }
        for rule in rules.fields.iter().filter(|r| r.required) {
            if !fields.contains_key(rule.name) && !constants.contains_key(rule.name) {
                return Err(bad(format!(
                    "{} requires {}: map it in [fields] or set it in [constants]",
                    rules.product, rule.name
                )));
            }
        }
        Ok(Mapping {
            file: file.to_path_buf(),
            rules,
            fields,
            constants: std::sync::Arc::new(constants),
        })
    }

    /// Identifies what the mapping sends (fields and constants, not the file's path): a
    /// run whose mapping differs from the last one's must read every customer.
    pub fn fingerprint(&self) -> String {
        let fields: BTreeMap<String, Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.name())))
            .collect();
        content_hash(&BTreeMap::from([
            (
                "fields".to_string(),
                serde_json::to_value(fields).expect("serialises"),
            ),
            (
                "constants".to_string(),
                serde_json::to_value(&*self.constants).expect("serialises"),
            ),
        ]))
    }

    /// The register fields filled from one permitted Opter field.
    pub fn fields_from(&self, source: PermittedField) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |(_, s)| **s == source)
            .map(|(name, _)| name.as_str())
    }

    pub fn rules(&self) -> &RegisterRules {
        &self.rules
    }

    /// The register fields the mapping fills with constants.
    pub fn constant_fields(&self) -> impl Iterator<Item = &str> {
        self.constants.keys().map(String::as_str)
    }

    /// The constant the mapping sets for register field `field`, if any.
    pub fn constant(&self, field: &str) -> Option<&Value> {
        self.constants.get(field)
    }

    /// Maps, checks and hashes one customer, without building the register's field map
    /// yet: planning needs only the number and the hash of every customer read, and the
    /// map (`Checked::into_record`) only for those that changed. `Err` is a rejection
    /// reason a person can act on; it names fields and lengths, never the values.
    pub fn check_and_hash<'m, 'c>(
        &'m self,
        customer: &'c PermittedCustomer,
    ) -> std::result::Result<Checked<'m, 'c>, String> {
        let mut values = Vec::with_capacity(self.fields.len());
        let mut number = None;
        if customer.code.chars().any(unsafe_char) {
            return Err(format!(
                "the customer code holds a control character or a text-direction override, \
                 which {} must not receive and no screen shows faithfully; correct it in Opter",
                self.rules.product
            ));
        }
        for (target, source) in &self.fields {
            let mut value = FieldValue::of(*source, customer);
            if let FieldValue::Text(s) = &value {
                if s.chars().any(unsafe_char) {
                    return Err(format!(
                        "{target}: the Opter {} holds a control character (a line break, a \
                         tab, an escape) or a text-direction override, which {} must not \
                         receive; correct it in Opter",
                        source.describe(),
                        self.rules.product
                    ));
                }
            }
            if let Some(rule) = self.rules.rule(target) {
                self.check(rule, *source, &value)?;
                if let FieldKind::Integer { min, max } = rule.kind {
                    value = self.integer(rule.name, *source, value, min, max)?;
                }
            }
            if target == self.rules.number_field {
                number = Some(match value {
                    FieldValue::Text(s) => s.to_string(),
                    FieldValue::Integer(n) => n.to_string(),
                    _ => unreachable!(
                        "load() ensures the number field is mapped and check() that it is set"
                    ),
                });
            }
            values.push(value);
        }
        let number = number.expect("load() ensures the number field is mapped");
        // The same bytes as `content_hash` of the map: the keys are the same and sorted,
        // and each value serialises as its `Value` does.
        let content_hash = hash_of(&FieldsOf {
            names: &self.fields,
            values: &values,
        });
        Ok(Checked {
            mapping: self,
            code: &customer.code,
            number,
            values,
            content_hash,
        })
    }

    /// The content hash of what the register holds for our fields, so that an adopted
    /// customer is updated only when it differs from what we would send.
    pub fn remote_hash(&self, remote: &Value) -> String {
        let ours: BTreeMap<String, Value> = self
            .fields
            .keys()
            .map(|k| (k.clone(), remote.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        content_hash(&ours)
    }

    /// A text value as the whole number the register wants; `Null` stays `Null`.
    fn integer(
        &self,
        name: &str,
        source: PermittedField,
        value: FieldValue<'_>,
        min: i64,
        max: i64,
    ) -> std::result::Result<FieldValue<'static>, String> {
        let product = self.rules.product;
        let parsed = match value {
            FieldValue::Null => return Ok(FieldValue::Null),
            FieldValue::Integer(n) => Some(n),
            FieldValue::Text(s) => s.trim().parse::<i64>().ok(),
            FieldValue::Bool(_) => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Ok(FieldValue::Integer(n)),
            _ => Err(format!(
                "{name} must be a whole number from {min} to {max} for {product}, and the \
                 Opter {} is not; correct it in Opter",
                source.describe()
            )),
        }
    }

    fn check(
        &self,
        rule: &FieldRule,
        source: PermittedField,
        value: &FieldValue<'_>,
    ) -> std::result::Result<(), String> {
        let product = self.rules.product;
        let name = rule.name;
        let text = match *value {
            FieldValue::Null | FieldValue::Text(_)
                if rule.required || name == self.rules.number_field =>
            {
                match value.as_str().map(str::trim) {
                    Some(s) if !s.is_empty() => s,
                    _ => {
                        return Err(format!(
                            "{name} is empty: the Opter {} is missing, and {product} requires it",
                            source.describe()
                        ))
                    }
                }
            }
            FieldValue::Text(s) => s,
            _ => return Ok(()),
        };
        let (FieldKind::Text { max_chars } | FieldKind::Email { max_chars }) = rule.kind else {
            return Ok(());
        };
        let chars = text.chars().count();
        if chars > max_chars {
            return Err(format!(
                "{name} is {chars} characters; {product} accepts at most {max_chars}"
            ));
        }
        if matches!(rule.kind, FieldKind::Email { .. }) && !is_well_formed_email(text) {
            return Err(format!(
                "{name} is not a well-formed email address (expected name@domain.tld); \
                 correct the contact's email in Opter"
            ));
        }
        Ok(())
    }
}

/// A customer mapped and checked, with its number and content hash; its register
/// fields are still a list in the mapping's field order, borrowing the customer's texts.
#[derive(Debug)]
pub struct Checked<'m, 'c> {
    mapping: &'m Mapping,
    pub code: &'c str,
    pub number: String,
    values: Vec<FieldValue<'c>>,
    pub content_hash: String,
}

impl Checked<'_, '_> {
    /// The record to send.
    pub fn into_record(self) -> MappedRecord {
        MappedRecord {
            code: self.code.to_string(),
            number: self.number,
            fields: self
                .mapping
                .fields
                .keys()
                .cloned()
                .zip(self.values.into_iter().map(FieldValue::into_value))
                .collect(),
            defaults: self.mapping.constants.clone(),
            content_hash: self.content_hash,
        }
    }
}

/// One register field's value while a customer is checked: the customer's text borrowed,
/// not copied (planning checks every customer read and sends few). Serialises exactly as
/// the `Value` it becomes, so the content hash does not depend on which one is hashed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldValue<'c> {
    Null,
    Text(&'c str),
    Bool(bool),
    Integer(i64),
}

impl<'c> FieldValue<'c> {
    fn of(field: PermittedField, c: &'c PermittedCustomer) -> Self {
        let text = |t: Option<&'c str>| t.map_or(FieldValue::Null, FieldValue::Text);
        match field {
            PermittedField::CustomerCode => FieldValue::Text(&c.code),
            PermittedField::CustomerNumber => text(c.number.as_deref()),
            PermittedField::CustomerName => FieldValue::Text(&c.name),
            PermittedField::ContactName => text(c.contact_name.as_deref()),
            PermittedField::ContactEmail => text(c.contact_email.as_deref()),
            PermittedField::IsActive => FieldValue::Bool(c.is_active),
        }
    }

    fn as_str(&self) -> Option<&'c str> {
        match *self {
            FieldValue::Text(s) => Some(s),
            _ => None,
        }
    }

    fn into_value(self) -> Value {
        match self {
            FieldValue::Null => Value::Null,
            FieldValue::Text(s) => Value::from(s),
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Integer(n) => Value::from(n),
        }
    }
}

impl serde::Serialize for FieldValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match *self {
            FieldValue::Null => s.serialize_unit(),
            FieldValue::Text(t) => s.serialize_str(t),
            FieldValue::Bool(b) => s.serialize_bool(b),
            FieldValue::Integer(n) => s.serialize_i64(n),
        }
    }
}

/// Register field names with their values, serialised as the JSON object they form.
struct FieldsOf<'a> {
    names: &'a BTreeMap<String, PermittedField>,
    values: &'a [FieldValue<'a>],
}

impl serde::Serialize for FieldsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.names.keys().zip(self.values))
    }
}

/// A constant must have the register's type: checked once, at load.
fn check_constant(
    rule: &FieldRule,
    value: &Value,
    product: &str,
) -> std::result::Result<(), String> {
    let name = rule.name;
    match (rule.kind, value) {
        (FieldKind::Bool, Value::Bool(_)) => Ok(()),
        (FieldKind::Integer { min, max }, Value::Number(n))
            if n.as_i64().is_some_and(|n| (min..=max).contains(&n)) =>
        {
            Ok(())
        }
        (FieldKind::Uuid, Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => Ok(()),
        (FieldKind::Text { max_chars } | FieldKind::Email { max_chars }, Value::String(s)) => {
            let chars = s.chars().count();
            if chars > max_chars {
                Err(format!(
                    "{name} is {chars} characters; {product} accepts at most {max_chars}"
                ))
            } else {
                Ok(())
            }
        }
        (kind, value) => Err(format!(
            "{name} = {value} does not fit {product}'s {kind:?} field"
        )),
    }
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted domain, no
/// spaces. Registers refuse worse; we only want to catch what they would refuse.
pub fn is_well_formed_email(s: &str) -> bool {
    if s.is_ascii() {
        is_well_formed_ascii_email(s.as_bytes())
    } else {
        is_well_formed_any_email(s)
    }
}

/// `is_well_formed_any_email` for ASCII, in one pass over the bytes: every customer
/// read has its contact's address checked.
fn is_well_formed_ascii_email(s: &[u8]) -> bool {
    let Some(at) = s.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    // The local part: not empty, no dot first, last or twice in a row, nothing that
    // would need quoting, no white space or control characters.
    let mut previous = b'.';
    for &b in local {
        if NOT_IN_LOCAL_PART[usize::from(b)] || (b == b'.' && previous == b'.') {
            return false;
        }
        previous = b;
    }
    if previous == b'.' {
        return false;
    }
    // The domain: two or more labels of letters, digits and inner hyphens.
    let (mut labels, mut label_len, mut previous) = (1, 0, b'.');
    for &b in domain {
        if b == b'.' {
            if label_len == 0 || previous == b'-' {
                return false;
            }
            (labels, label_len) = (labels + 1, 0);
        } else if b.is_ascii_alphanumeric() || (b == b'-' && label_len > 0) {
            label_len += 1;
        } else {
            return false;
        }
        previous = b;
    }
    label_len > 0 && previous != b'-' && labels >= 2
}

/// ASCII bytes an unquoted local part may not hold.
const NOT_IN_LOCAL_PART: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b <= b' ' as usize || b == 0x7f;
        b += 1;
    }
    let special = b"()<>,;:\\\"[]";
    let mut i = 0;
    while i < special.len() {
        table[special[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_well_formed_any_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let labels_ok = domain.split('.').count() >= 2
        && domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains(['(', ')', '<', '>', ',', ';', ':', '\\', '"', '[', ']'])
        && labels_ok
}

#[cfg(test)]
mod tests;
