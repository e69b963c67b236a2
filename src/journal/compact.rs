//! How events and states are stored: MessagePack with fields by position, hex digests as
//! raw bytes and times as nanoseconds. Readers (exports, the hash chain's canonical form)
//! keep seeing the JSON form: each helper below writes the compact form only for a
//! non-human-readable format, so `serde_json` output is unchanged.
//!
//! Entries written as JSON by older versions start with `{` and are still read.

use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Encodes a stored entry.
pub fn encode(value: &impl Serialize) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("journal entries serialise")
}

/// Decodes a stored entry, compact or (from older versions) JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// The bytes of lowercase hex text, if it is that (so encoding them back gives the text).
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let lower = text.len().is_multiple_of(2)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    lower.then(|| hex::decode(text).ok()).flatten()
}

/// Text stored as bytes when it is lowercase hex, as text otherwise.
struct HexText;

impl Visitor<'_> for HexText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("hex digest bytes or text")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<String, E> {
        Ok(hex::encode(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// `#[serde(with = "compact::hex_digest")]` for a `String` holding a hex digest.
pub mod hex_digest {
    use super::*;

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        match hex_bytes(text).filter(|_| !s.is_human_readable()) {
            Some(bytes) => s.serialize_bytes(&bytes),
            None => s.serialize_str(text),
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

/// `#[serde(with = "compact::opt_hex")]` for an `Option<String>` holding a hex digest.
pub mod opt_hex {
    use super::*;

    struct Wrapped<'a>(&'a String);

    impl Serialize for Wrapped<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::hex_digest::serialize(self.0, s)
        }
    }

    struct Unwrapped(String);

    impl<'de> Deserialize<'de> for Unwrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::hex_digest::deserialize(d).map(Unwrapped)
        }
    }

    pub fn serialize<S: Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match text {
            Some(t) => s.serialize_some(&Wrapped(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Unwrapped>::deserialize(d)?.map(|u| u.0))
    }
}

/// `#[serde(with = "compact::time")]`: RFC 3339 text for people, nanoseconds when stored.
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
    fn json_keeps_hex_text_and_rfc3339_times() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["digest"], "00ff".repeat(16));
        assert_eq!(json["time"], "2026-11-23T21:30:00.123456789Z");
        assert_eq!(json["not_hex"], "ABC-not hex");
    }
}
