//! How events and states are stored: MessagePack with fields by position, hex digests as
//! raw bytes and times as nanoseconds. Readers (exports, the hash chain's canonical form)
//! keep seeing the JSON form: each helper below writes the compact form only for a
//! non-human-readable format, so `serde_json` output is unchanged. Field names, words and
//! variants are stored as positions in frozen lists (`positions`).
//!
//! Entries written as JSON by older versions start with `{` and are still read.

use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use super::positions::{field_values, variant, word, Variants};

/// Encodes a stored entry.
pub fn encode(value: &impl Serialize) -> Vec<u8> {
    // Room for a typical event up front rather than growing into it.
    let mut bytes = Vec::with_capacity(256);
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut bytes))
        .expect("journal entries serialise");
    bytes
}

/// Decodes a stored entry, compact or (from older versions) JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| crate::error::without_values(&e.to_string()))
    } else {
        rmp_serde::from_slice(bytes).map_err(|e| crate::error::without_values(&e.to_string()))
    }
}

/// Whether a stored `State` has `content_hash` (lowercase hex), read from the entry
/// without decoding the rest of it. An entry in another form (JSON from older versions)
/// answers `false`: the caller then decodes the whole state and compares that.
pub fn state_hash_is(stored: &[u8], content_hash: &str) -> bool {
    /// The fields of a compact `State`, by position; only the hash is kept, borrowed.
    /// The others are skipped unread: a damage there is `journal verify`'s to report.
    #[derive(Deserialize)]
    struct StateHash<'a>(
        serde::de::IgnoredAny,
        #[serde(borrow)] DigestBytes<'a>,
        serde::de::IgnoredAny,
    );
    if stored.first() == Some(&b'{') {
        return false;
    }
    match rmp_serde::from_slice::<StateHash>(stored) {
        // The hash's bytes, decoded as a stored digest is: equal only if it is their
        // lowercase hex.
        Ok(StateHash(_, DigestBytes(digest), _)) => {
            hex_bytes(content_hash, &mut [0u8; 64]) == Some(digest)
        }
        Err(_) => false,
    }
}

/// A digest stored as bytes, borrowed from the entry. Unlike `&[u8]`, text is refused:
/// a hash stored as text is compared as text, by decoding the whole state.
struct DigestBytes<'a>(&'a [u8]);

impl<'de: 'a, 'a> Deserialize<'de> for DigestBytes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("digest bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<&'de [u8], E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Bytes).map(DigestBytes)
    }
}

/// The bytes of lowercase hex text, if it is that (so encoding them back gives the text),
/// written to `out`; `None` also when `out` is too short.
fn hex_bytes<'b>(text: &str, out: &'b mut [u8]) -> Option<&'b [u8]> {
    let lower = text.len().is_multiple_of(2)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let out = out.get_mut(..text.len() / 2)?;
    (lower && hex::decode_to_slice(text, out).is_ok()).then_some(&*out)
}

/// Serialises lowercase hex text as its bytes (a digest in half the room), other text
/// as text. Every event and intent holds a few digests, so short ones are decoded on
/// the stack.
fn serialize_hex<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    let mut short = [0u8; 64];
    let mut long = Vec::new();
    let out = if text.len() / 2 <= short.len() {
        &mut short[..]
    } else {
        long.resize(text.len() / 2, 0);
        &mut long[..]
    };
    match hex_bytes(text, out) {
        Some(bytes) => s.serialize_bytes(bytes),
        None => s.serialize_str(text),
    }
}

/// Text stored as bytes when it is lowercase hex, as text otherwise.
struct HexText;

impl Visitor<'_> for HexText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("hex digest bytes or text")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<String, E> {
        Ok(crate::hash::lower_hex(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// `#[serde(with = "encoding::hex_digest")]` for a `String` holding a hex digest.
pub mod hex_digest {
    use super::*;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        // Readable output (exports, the hash's canonical form) never needs the bytes.
        if s.is_human_readable() {
            s.serialize_str(text)
        } else {
            serialize_hex(text, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)
        } else {
            d.deserialize_any(HexText)
        }
    }
}

/// How one text field is stored; `optional` applies the same inside an `Option`.
trait TextForm {
    fn store<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error>;
    fn load<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error>;
}

/// `Option<String>` in a `TextForm`: the helpers `opt_hex` and `id_text::opt` are this.
mod optional {
    use std::marker::PhantomData;

    use super::*;

    struct Wrapped<'a, F>(&'a str, PhantomData<F>);

    impl<F: TextForm> Serialize for Wrapped<'_, F> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            F::store(self.0, s)
        }
    }

    struct Unwrapped<F>(String, PhantomData<F>);

    impl<'de, F: TextForm> Deserialize<'de> for Unwrapped<F> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            F::load(d).map(|text| Unwrapped(text, PhantomData))
        }
    }

    pub fn serialize<F: TextForm, S: Serializer>(
        text: &Option<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match text {
            Some(t) => s.serialize_some(&Wrapped::<F>(t, PhantomData)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, F: TextForm, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<String>, D::Error> {
        Ok(Option::<Unwrapped<F>>::deserialize(d)?.map(|u| u.0))
    }
}

/// A hex digest's form (`hex_digest`).
struct HexForm;

impl TextForm for HexForm {
    fn store<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        hex_digest::serialize(text, s)
    }

    fn load<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        hex_digest::deserialize(d)
    }
}

/// `#[serde(with = "encoding::opt_hex")]` for an `Option<String>` holding a hex digest.
pub mod opt_hex {
    use super::*;

    pub fn serialize<S: Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        optional::serialize::<HexForm, S>(text, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional::deserialize::<HexForm, D>(d)
    }
}

/// `#[serde(with = "encoding::id_text")]` for a register's id: a lowercase UUID (as
/// eAccounting gives) stored as its 16 bytes, any other id as text.
pub mod id_text {
    use super::*;

    fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
        let id = uuid::Uuid::try_parse(text).ok()?;
        (id.hyphenated().to_string() == text).then(|| *id.as_bytes())
    }

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        match (!s.is_human_readable()).then(|| uuid_bytes(text)).flatten() {
            Some(bytes) => s.serialize_bytes(&bytes),
            None => s.serialize_str(text),
        }
    }

    struct IdText;

    impl Visitor<'_> for IdText {
        type Value = String;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an id as UUID bytes or text")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<String, E> {
            uuid::Uuid::from_slice(v)
                .map(|id| id.hyphenated().to_string())
                .map_err(E::custom)
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)
        } else {
            d.deserialize_any(IdText)
        }
    }

    /// A register id's form, for `opt`.
    struct IdForm;

    impl TextForm for IdForm {
        fn store<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
            serialize(text, s)
        }

        fn load<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            deserialize(d)
        }
    }

    /// The same for an `Option<String>`.
    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
            optional::serialize::<IdForm, S>(text, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            optional::deserialize::<IdForm, D>(d)
        }
    }
}

/// `#[serde(with = "encoding::run_id")]`: a run id (`20261124T000149.210Z-f20c`) stored as
/// its time in milliseconds and its random suffix, when it reads back exactly.
pub mod run_id {
    use chrono::TimeZone;

    use super::*;

    const FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

    /// An id and its parts, if it has them.
    type Parsed = (String, Option<(i64, u16)>);

    thread_local! {
        /// The last id parsed and its parts: a run stores hundreds of thousands of
        /// entries under one id, and parsing a time costs more than the rest of an entry.
        static LAST: std::cell::RefCell<Option<Parsed>> = const { std::cell::RefCell::new(None) };
        /// The same the other way: the last parts read and their id.
        static LAST_READ: std::cell::RefCell<Option<((i64, u16), String)>> =
            const { std::cell::RefCell::new(None) };
    }

    fn parts(id: &str) -> Option<(i64, u16)> {
        LAST.with_borrow_mut(|last| match last {
            Some((known, parts)) if known == id => *parts,
            _ => {
                let parts = parse(id);
                *last = Some((id.to_string(), parts));
                parts
            }
        })
    }

    fn parse(id: &str) -> Option<(i64, u16)> {
        let (time, suffix) = id.rsplit_once('-')?;
        let time = chrono::NaiveDateTime::parse_from_str(time, FORMAT).ok()?;
        let millis = Utc.from_utc_datetime(&time).timestamp_millis();
        let random = u16::from_str_radix(suffix, 16).ok()?;
        (format_parts(millis, random)? == id).then_some((millis, random))
    }

    fn format_parts(millis: i64, random: u16) -> Option<String> {
        let time = DateTime::from_timestamp_millis(millis)?;
        Some(format!("{}-{random:04x}", time.format(FORMAT)))
    }

    pub fn serialize<S: Serializer>(id: &str, s: S) -> Result<S::Ok, S::Error> {
        match (!s.is_human_readable()).then(|| parts(id)).flatten() {
            Some(parts) => parts.serialize(s),
            None => s.serialize_str(id),
        }
    }

    struct RunId;

    impl<'de> Visitor<'de> for RunId {
        type Value = String;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a run id or its parts")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            use serde::de::Error;
            let millis: i64 = seq
                .next_element()?
                .ok_or_else(|| A::Error::custom("no time"))?;
            let random: u16 = seq
                .next_element()?
                .ok_or_else(|| A::Error::custom("no suffix"))?;
            LAST_READ.with_borrow_mut(|last| match last {
                Some((parts, id)) if *parts == (millis, random) => Ok(id.clone()),
                _ => {
                    let id = format_parts(millis, random)
                        .ok_or_else(|| A::Error::custom("run time out of range"))?;
                    *last = Some(((millis, random), id.clone()));
                    Ok(id)
                }
            })
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        if d.is_human_readable() {
            String::deserialize(d)
        } else {
            d.deserialize_any(RunId)
        }
    }
}

/// `#[serde(with = "encoding::time")]`: RFC 3339 text for people, nanoseconds when stored.
pub mod time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        match t.timestamp_nanos_opt().filter(|_| !s.is_human_readable()) {
            Some(nanos) => s.serialize_i64(nanos),
            None => t.serialize(s),
        }
    }

    struct Nanos;

    impl Visitor<'_> for Nanos {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("nanoseconds since 1970 or an RFC 3339 time")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(DateTime::from_timestamp_nanos(v))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(DateTime::from_timestamp_nanos)
                .map_err(|_| E::custom("time out of range"))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            DateTime::deserialize(d)
        } else {
            d.deserialize_any(Nanos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "time")]
        time: DateTime<Utc>,
        #[serde(with = "hex_digest")]
        digest: String,
        #[serde(with = "opt_hex")]
        salt: Option<String>,
        #[serde(with = "opt_hex")]
        none: Option<String>,
        #[serde(with = "hex_digest")]
        not_hex: String,
    }

    fn sample() -> Sample {
        Sample {
            time: "2026-11-23T21:30:00.123456789Z".parse().unwrap(),
            digest: "00ff".repeat(16),
            salt: Some("ab".repeat(16)),
            none: None,
            not_hex: "ABC-not hex".into(),
        }
    }

    #[test]
    fn the_compact_form_reads_back_exactly_and_is_smaller() {
        let s = sample();
        let compact = encode(&s);
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(decode::<Sample>(&compact).unwrap(), s);
        assert_eq!(decode::<Sample>(&json).unwrap(), s);
        // 32 + 16 digest bytes instead of 96 hex characters, no field names.
        assert!(
            compact.len() * 2 < json.len(),
            "{} vs {}",
            compact.len(),
            json.len()
        );
    }

    #[test]
    fn lowercase_hex_of_any_length_is_stored_as_bytes_and_other_text_as_text() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Hex(#[serde(with = "hex_digest")] String);
        let bytes = |text: &str| {
            let mut b = vec![(text.len() / 2) as u8];
            b.extend(hex::decode(text).unwrap_or_default());
            b
        };
        for (text, stored_as_bytes) in [
            ("00ff".repeat(16), true),
            ("0123456789abcdef".into(), true),
            ("ab".repeat(100), true),
            (String::new(), true),
            ("00FF".repeat(16), false),
            ("abc".into(), false),
            ("0g".into(), false),
            ("K1".into(), false),
        ] {
            let stored = encode(&Hex(text.clone()));
            assert_eq!(decode::<Hex>(&stored).unwrap().0, text);
            // MessagePack bin 8: 0xc4, the length, the bytes.
            let as_bytes = stored[0] == 0xc4 && stored[1..] == bytes(&text)[..];
            assert_eq!(as_bytes, stored_as_bytes, "{text}: {stored:?}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Words {
        #[serde(with = "word")]
        sink: String,
        #[serde(with = "word")]
        actor: String,
        #[serde(with = "run_id")]
        run: String,
        #[serde(with = "run_id")]
        odd_run: String,
        #[serde(with = "id_text")]
        uuid: String,
        #[serde(with = "id_text")]
        upper_uuid: String,
        #[serde(with = "id_text::opt")]
        number_id: Option<String>,
        #[serde(with = "field_values")]
        values: Option<std::collections::BTreeMap<String, serde_json::Value>>,
        #[serde(with = "field_values")]
        no_values: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    }

    fn words() -> Words {
        let values = serde_json::json!({
            "CustomerNumber": "K1", "Name": "Åkeri AB", "contact.email": "a@b.se",
            "someNewField": 3, "barred": false,
        });
        Words {
            sink: "visma-net".into(),
            actor: "support:anna".into(),
            run: "20261124T000149.210Z-f20c".into(),
            odd_run: "imported-run-F20C".into(),
            uuid: "8d92f20f-c81c-4c02-bd5a-85d7b87760e0".into(),
            upper_uuid: "8D92F20F-C81C-4C02-BD5A-85D7B87760E0".into(),
            number_id: Some("10042".into()),
            values: serde_json::from_value(values).unwrap(),
            no_values: None,
        }
    }

    #[test]
    fn words_ids_run_ids_and_field_names_read_back_exactly() {
        let w = words();
        let compact = encode(&w);
        assert_eq!(decode::<Words>(&compact).unwrap(), w);
        let json = serde_json::to_vec(&w).unwrap();
        assert_eq!(decode::<Words>(&json).unwrap(), w);
        // The JSON form (exports, the hash chain) is the plain one.
        let plain = serde_json::to_value(&w).unwrap();
        assert_eq!(plain["sink"], "visma-net");
        assert_eq!(plain["run"], "20261124T000149.210Z-f20c");
        assert_eq!(plain["uuid"], "8d92f20f-c81c-4c02-bd5a-85d7b87760e0");
        assert_eq!(plain["values"]["Name"], "Åkeri AB");
        // Known words, UUIDs and field names are not stored as text; the rest is.
        let text = String::from_utf8_lossy(&compact);
        for absent in [
            "visma-net",
            "20261124",
            "8d92f20f",
            "CustomerNumber",
            "contact.email",
        ] {
            assert!(!text.contains(absent), "{absent} stored as text");
        }
        for kept in [
            "support:anna",
            "imported-run-F20C",
            "8D92F20F",
            "someNewField",
            "10042",
        ] {
            assert!(text.contains(kept), "{kept} not stored as text");
        }
    }

    #[test]
    fn run_ids_read_back_exactly_whatever_was_stored_before() {
        // The last id parsed and the last parts read are kept: alternating ids, including
        // ones stored as text, must each read back as themselves.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Id(#[serde(with = "run_id")] String);
        let ids = [
            "20261124T000149.210Z-f20c",
            "20261124T000149.210Z-f20d",
            "imported-run-F20C",
            "20261125T101010.001Z-0001",
            "20261124T000149.210Z-f20c",
        ];
        let stored: Vec<Vec<u8>> = ids.iter().map(|id| encode(&Id(id.to_string()))).collect();
        for _ in 0..2 {
            for (id, bytes) in ids.iter().zip(&stored) {
                assert_eq!(decode::<Id>(bytes).unwrap().0, *id);
            }
        }
        assert_ne!(stored[0], stored[1]);
        assert_eq!(stored[0], stored[4]);
    }

    #[test]
    fn json_keeps_hex_text_and_rfc3339_times() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["digest"], "00ff".repeat(16));
        assert_eq!(json["time"], "2026-11-23T21:30:00.123456789Z");
        assert_eq!(json["not_hex"], "ABC-not hex");
    }
}
