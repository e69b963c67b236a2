//! The events' hash chain, built so that it survives erasure:
//!
//! - `values_digest = HMAC-SHA256(per-event random salt, canonical values)`
//! - `hash = SHA-256(prev_hash ‖ canonical event without values, salt and hash ‖ values_digest)`
//!
//! Removing an event's values and salt (retention, or a purge) leaves its hash and the
//! chain verifiable, and the digest can no longer be tested against guessed values.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Event;
use crate::hash::lower_hex;

/// Version of the event record: a compatibility boundary for readers and exports.
pub const EVENT_SCHEMA: u32 = 1;

/// The chain fields of an event; filled in by `Journal::record`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub schema: u32,
    /// Hex of 16 random bytes; removed together with the values.
    #[serde(with = "super::encoding::opt_hex")]
    pub salt: Option<String>,
    /// HMAC of the values under the salt; kept after the values are removed.
    #[serde(with = "super::encoding::opt_hex")]
    pub values_digest: Option<String>,
    #[serde(with = "super::encoding::hex_digest")]
    pub prev_hash: String,
    #[serde(with = "super::encoding::hex_digest")]
    pub hash: String,
}

/// Fills in `event.chain` after `prev_hash`.
pub fn seal(event: &mut Event, prev_hash: &str) {
    let (salt, digest) = match &event.values {
        Some(values) => {
            let salt: [u8; 16] = rand::random();
            let salt = lower_hex(&salt);
            let digest = values_digest(&salt, values);
            (Some(salt), Some(digest))
        }
        None => (None, None),
    };
    event.chain = Chain {
        schema: EVENT_SCHEMA,
        salt,
        values_digest: digest,
        prev_hash: prev_hash.to_string(),
        hash: String::new(),
    };
    event.chain.hash = event_hash(event);
}

pub fn values_digest(salt: &str, values: &impl Serialize) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes any key");
    // Streamed into the MAC, not collected first: every event written is sealed.
    serde_json::to_writer(&mut mac, values).expect("values serialise");
    lower_hex(&mac.finalize().into_bytes())
}

/// The hash an event should have, from its non-erasable content: the event is
/// serialised without its values, salt and hash, which are set aside meanwhile and put
/// back (no copy of the event per hash: sealing and verifying hash every event).
pub fn event_hash(event: &mut Event) -> String {
    let values = event.values.take();
    let salt = event.chain.salt.take();
    let hash = std::mem::take(&mut event.chain.hash);
    let mut sha = Sha256::new();
    sha.update(event.chain.prev_hash.as_bytes());
    serde_json::to_writer(&mut sha, &*event).expect("events serialise");
    event.values = values;
    event.chain.salt = salt;
    event.chain.hash = hash;
    sha.update(
        event
            .chain
            .values_digest
            .as_deref()
            .unwrap_or("")
            .as_bytes(),
    );
    lower_hex(&sha.finalize())
}

/// What is wrong with one event, if anything, given the hash before it.
pub fn check(event: &mut Event, prev_hash: &str) -> Option<String> {
    if event.chain.prev_hash != prev_hash {
        return Some(
            "does not follow the event before it (an event was removed or reordered)".into(),
        );
    }
    if event_hash(event) != event.chain.hash {
        return Some("was changed after it was written".into());
    }
    match (&event.values, &event.chain.salt, &event.chain.values_digest) {
        (Some(values), Some(salt), Some(digest)) if &values_digest(salt, values) != digest => {
            Some("its values were changed after they were written".into())
        }
        (Some(_), None, _) | (Some(_), _, None) => Some("has values but no digest for them".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Operation, Outcome};

    fn event() -> Event {
        Event {
            seq: 7,
            time: "2026-11-24T08:00:00.123Z".parse().unwrap(),
            run_id: "20261124T080000.123Z-ab12".into(),
            actor: "sync".into(),
            customer: "K1".into(),
            sink: "eaccounting".into(),
            operation: Operation::Create,
            outcome: Outcome::Succeeded,
            http_status: Some(201),
            error_code: None,
            message: Some("Å \"quoted\"".into()),
            remote_id: Some("8d92f20f-c81c-4c02-bd5a-85d7b87760e0".into()),
            fields: vec!["Name".into(), "EmailAddress".into()],
            values: Some(
                serde_json::from_str(r#"{"Name":"Åkeri AB","EmailAddress":"a@b.se"}"#).unwrap(),
            ),
            chain: Chain {
                schema: EVENT_SCHEMA,
                salt: Some("ab".repeat(16)),
                values_digest: None,
                prev_hash: "cd".repeat(32),
                hash: String::new(),
            },
        }
    }

    #[test]
    fn hashes_are_those_every_stored_chain_was_built_with() {
        // Stored chains are verified against these functions: their bytes never change.
        let mut e = event();
        let digest = values_digest("salt", e.values.as_ref().unwrap());
        assert_eq!(
            digest,
            "e8620c63e5b59a08b4c7e91d423f87603b0822eab5ecd6c7761933f5b86a461f"
        );
        e.chain.values_digest = Some(digest);
        assert_eq!(
            event_hash(&mut e),
            "abda35d68f3662f29173e2b4f5aee59c69ad3ac82fa41fa3c232b29a39671dc1"
        );
        assert_eq!(e, {
            let mut same = event();
            same.chain.values_digest = e.chain.values_digest.clone();
            same
        });
    }
}
