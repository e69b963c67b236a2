//! Whether a register customer found under an Opter customer's number is that customer.
//!
//! Architecture invariant: a register customer the journal does not know as ours is
//! written to only when it is shown to be the same customer (it holds what we would
//! send, or its name or contact email matches); anything else is a conflict for a
//! person to decide, and nothing is written.

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::mapping::{MappedRecord, Mapping};
use crate::output::mask_name;
use crate::record::PermittedField;
use crate::sink::Remote;

/// What the register's customer under our number is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// It holds exactly what we would send (our own earlier write, or the same data).
    Unchanged,
    /// The same customer (name or contact email match), holding other values.
    Same,
    /// Another customer: why, with names masked.
    Conflict(String),
}

/// Words of a company name that say its legal form, not which company it is.
const LEGAL_FORMS: &[&str] = &[
    "ab",
    "abp",
    "aktiebolag",
    "aktiebolaget",
    "hb",
    "handelsbolag",
    "handelsbolaget",
    "kb",
    "kommanditbolag",
    "kommanditbolaget",
    "as",
    "asa",
    "aps",
    "ivs",
    "oy",
    "oyj",
];

/// A name as compared: letters without diacritics, lower case, punctuation dropped,
/// legal-form words left out. "Håkansson & Söner Åkeri AB" and "HAKANSSON SONER
/// AKERI" compare equal.
pub fn normalised_name(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    for c in name.nfkd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        // Letters NFKD does not take apart.
        match c {
            'ø' | 'Ø' => plain.push('o'),
            'æ' | 'Æ' => plain.push_str("ae"),
            'ß' => plain.push_str("ss"),
            'đ' | 'Đ' => plain.push('d'),
            'ł' | 'Ł' => plain.push('l'),
            // Inside a word: "A/S", "K.B.", "O'Neil".
            '/' | '.' | '\'' | '’' => {}
            c if c.is_alphanumeric() => plain.extend(c.to_lowercase()),
            _ => plain.push(' '),
        }
    }
    plain
        .split_whitespace()
        .filter(|w| !LEGAL_FORMS.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn text<'v>(fields: &'v Value, name: &str) -> Option<&'v str> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Decides what the register's customer under `record`'s number is to us.
pub(super) fn compare(mapping: &Mapping, record: &MappedRecord, remote: &Remote) -> Found {
    if mapping.remote_hash(&remote.fields) == record.content_hash {
        return Found::Unchanged;
    }
    let ours = |name: &str| {
        record
            .fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
    };
    let names: Vec<&str> = mapping.fields_from(PermittedField::CustomerName).collect();
    let same_name = names
        .iter()
        .any(|f| match (ours(f), text(&remote.fields, f)) {
            (Some(a), Some(b)) => {
                let a = normalised_name(a);
                !a.is_empty() && a == normalised_name(b)
            }
            _ => false,
        });
    let same_email = mapping.fields_from(PermittedField::ContactEmail).any(|f| {
        match (ours(f).filter(|s| !s.is_empty()), text(&remote.fields, f)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    });
    if same_name || same_email {
        return Found::Same;
    }
    let rules = mapping.rules();
    let shown = |fields: Option<&str>| fields.map(mask_name).unwrap_or_else(|| "(no name)".into());
    let theirs = names.first().and_then(|f| text(&remote.fields, f));
    let opter = names.first().and_then(|f| ours(f));
    Found::Conflict(format!(
        "{} already has {} {} for another customer (\"{}\"; Opter's is \"{}\"): neither the \
         name nor the contact email match, so nothing was written. If it is the same customer, \
         run `opter-visma-sync link --customer {} --accept`; to never send this one, `--skip`; \
         or give it another number in Opter.",
        rules.product,
        rules.number_field,
        record.number,
        shown(theirs),
        shown(opter),
        record.code,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_diacritics_punctuation_or_legal_form() {
        let same = |a: &str, b: &str| normalised_name(a) == normalised_name(b);
        assert!(same("Håkansson & Söner Åkeri AB", "HAKANSSON SONER AKERI"));
        assert!(same("Bravo Transport AB", "bravo transport aktiebolag"));
        assert!(same("Nordfragt A/S", "Nordfragt"));
        assert!(same("Nordfragt ApS", "NORDFRAGT  aps."));
        assert!(same("Kuljetus Oy", "Kuljetus"));
        assert!(same("Sørensen Transport AS", "Sorensen transport"));
        assert!(same("Åkeri-Bolaget HB", "akeri bolaget"));
        assert!(!same("Bravo Transport AB", "Håkansson & Söner Åkeri AB"));
        assert!(!same("Bravo Transport AB", "Bravo Logistik AB"));
        // A name of legal forms only says nothing: never a match on it.
        assert_eq!(normalised_name("AB"), "");
    }
}
