//! Text and variants stored as their position in frozen lists (register field names,
//! recurring words, enum variants): one byte each instead of the text. Part of `encoding`,
//! which re-exports the `#[serde(with)]` helpers. The lists are only ever appended to:
//! journals already written name their fields, words and variants by these positions.

use std::sync::LazyLock;

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position that fits the one byte it is stored in; beyond that, the text is stored.
fn position(at: Option<usize>) -> Option<u8> {
    at.and_then(|at| u8::try_from(at).ok())
}

/// Reads text stored as its position in a frozen list, or (not listed) as itself.
struct Listed(&'static [&'static str]);

impl Visitor<'_> for Listed {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("text or its position in a list")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        usize::try_from(v)
            .ok()
            .and_then(|at| self.0.get(at))
            .map(|text| text.to_string())
            .ok_or_else(|| E::custom(format!("unknown position {v}")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Register field names stored as their position in this list: one byte instead of up
/// to 33 characters, in every event. It is each register's `journal_fields` in
/// `sink::REGISTERS` order, and journals already written name their fields by these
/// positions, so a released register's `journal_fields` never changes (a field it gains
/// later is stored by name, as every name not listed is) and registers are only
/// appended. `stored_positions_never_move` pins the list.
static FIELD_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    crate::sink::REGISTERS
        .iter()
        .flat_map(|r| r.journal_fields.iter().copied())
        .collect()
});

/// `#[serde(with = "encoding::field_values")]` for an event's values: keys as positions
/// in `FIELD_NAMES` when stored, the plain map for people.
pub mod field_values {
    use std::collections::BTreeMap;

    use serde::de::MapAccess;
    use serde::ser::SerializeMap;
    use serde_json::Value;

    use super::*;

    type Values = BTreeMap<String, Value>;

    struct Name<'a>(&'a str);

    impl Serialize for Name<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match position(FIELD_NAMES.iter().position(|n| *n == self.0)) {
                Some(at) => s.serialize_u8(at),
                None => s.serialize_str(self.0),
            }
        }
    }

    struct Keyed<'a>(&'a Values);

    impl Serialize for Keyed<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (name, value) in self.0 {
                map.serialize_entry(&Name(name), value)?;
            }
            map.end()
        }
    }

    pub fn serialize<S: Serializer>(values: &Option<Values>, s: S) -> Result<S::Ok, S::Error> {
        match values {
            Some(v) if !s.is_human_readable() => s.serialize_some(&Keyed(v)),
            other => other.serialize(s),
        }
    }

    struct StoredName(String);

    impl<'de> Deserialize<'de> for StoredName {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Listed(&FIELD_NAMES)).map(StoredName)
        }
    }

    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = Values;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of field values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Values, A::Error> {
            let mut values = Values::new();
            while let Some((StoredName(name), value)) = access.next_entry()? {
                values.insert(name, value);
            }
            Ok(values)
        }
    }

    struct Stored(Values);

    impl<'de> Deserialize<'de> for Stored {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(MapVisitor).map(Stored)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Values>, D::Error> {
        if d.is_human_readable() {
            Option::<Values>::deserialize(d)
        } else {
            Ok(Option::<Stored>::deserialize(d)?.map(|s| s.0))
        }
    }
}

/// Words that recur in every event (sink names, the sync's actor), stored as their
/// position in this list. Frozen like `FIELD_NAMES`: the first three registers, the
/// sync's actor (its place when journals were first written this way), then each
/// register appended since.
static WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let names = crate::sink::REGISTERS.iter().map(|r| r.name);
    let mut words: Vec<&str> = names.clone().take(3).collect();
    words.push("sync");
    words.extend(names.skip(3));
    words
});

/// `#[serde(with = "encoding::word")]` for a `String` that is usually one of `WORDS`.
pub mod word {
    use super::*;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        match position(WORDS.iter().position(|w| *w == text)) {
            Some(at) if !s.is_human_readable() => s.serialize_u8(at),
            _ => s.serialize_str(text),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)
        } else {
            d.deserialize_any(Listed(&WORDS))
        }
    }
}

/// An enum whose variants are stored by position. `ALL` is frozen: only ever appended.
pub trait Variants: Sized + Copy + PartialEq + Serialize + DeserializeOwned + 'static {
    const ALL: &'static [Self];
}

/// `#[serde(with = "encoding::variant")]` for a `Variants` enum: its name for people, its
/// position when stored.
pub mod variant {
    use std::marker::PhantomData;

    use serde::de::IntoDeserializer;

    use super::*;

    pub fn serialize<T: Variants, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        match position(T::ALL.iter().position(|v| v == value)) {
            Some(at) if !s.is_human_readable() => s.serialize_u8(at),
            _ => value.serialize(s),
        }
    }

    struct Position<T>(PhantomData<T>);

    impl<T: Variants> Visitor<'_> for Position<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a variant's name or position")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            usize::try_from(v)
                .ok()
                .and_then(|at| T::ALL.get(at).copied())
                .ok_or_else(|| E::custom(format!("unknown variant position {v}")))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            T::deserialize(v.into_deserializer())
        }
    }

    pub fn deserialize<'de, T: Variants, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d)
        } else {
            d.deserialize_any(Position(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::encoding::encode;

    #[test]
    fn stored_positions_never_move() {
        // Journals already written name fields, words and variants by these positions.
        assert_eq!(
            &FIELD_NAMES[..3],
            ["CustomerNumber", "Name", "ContactPersonName"]
        );
        assert_eq!(FIELD_NAMES[10], "number");
        assert_eq!(FIELD_NAMES[19], "customerNumber");
        assert_eq!(FIELD_NAMES[26], "barred");
        assert_eq!(
            FIELD_NAMES[..27],
            [
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
                "number",
                "name",
                "mainContact.name",
                "mainContact.attention",
                "mainContact.email",
                "status",
                "customerClassId",
                "overrideWithClassValues",
                "mainAddress.countryId",
                "customerNumber",
                "contact.name",
                "contact.email",
                "currency",
                "customerGroup.customerGroupNumber",
                "paymentTerms.paymentTermsNumber",
                "vatZone.vatZoneNumber",
                "barred",
            ]
        );
        assert_eq!(WORDS[..4], ["eaccounting", "visma-net", "economic", "sync"]);
        let mut values = std::collections::BTreeMap::new();
        values.insert("Name".to_string(), serde_json::Value::from("x"));
        // fixmap(1) {1: "x"}
        assert_eq!(encode(&Wrap(Some(values))), [0x81, 0x01, 0xa1, b'x']);
    }

    #[derive(Serialize)]
    struct Wrap(
        #[serde(with = "field_values")]
        Option<std::collections::BTreeMap<String, serde_json::Value>>,
    );

    #[test]
    fn every_register_field_has_a_stored_position() {
        // Fields a register gained after its first release: stored by name.
        const STORED_BY_NAME: &[&str] = &[];
        for register in crate::sink::REGISTERS {
            for rule in register.rules.fields {
                if STORED_BY_NAME.contains(&rule.name) {
                    continue;
                }
                assert!(
                    FIELD_NAMES.contains(&rule.name),
                    "{} of {} has no stored position: list it in journal_fields only in \
                     the register's first release (a released register's list never \
                     changes: the positions after it would move); otherwise add it to \
                     STORED_BY_NAME",
                    rule.name,
                    register.name
                );
            }
        }
    }
}
