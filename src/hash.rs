//! Hashing helpers shared by the mapping (content hashes decide unchanged / update) and
//! the journal (stored states and digests are compared with them).

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 (hex) of the canonical JSON of register fields (a BTreeMap: sorted keys).
pub fn content_hash(fields: &BTreeMap<String, Value>) -> String {
    hash_of(fields)
}

/// SHA-256 (hex) of the compact JSON of `value`, written straight into the hasher
/// (`Sha256` is an `io::Write`).
pub fn hash_of(value: &impl serde::Serialize) -> String {
    let mut sha = Sha256::new();
    serde_json::to_writer(&mut sha, value).expect("JSON values serialise");
    lower_hex(&sha.finalize())
}

/// Lowercase hex of `bytes`, as `hex::encode` gives it, in one pass over a buffer (every
/// customer read and every event written needs a few of these).
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_is_the_hex_crates_encoding() {
        for bytes in [&[][..], &[0], &[0xab, 0x01, 0xff], &[7; 32]] {
            assert_eq!(lower_hex(bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn the_content_hash_is_sha256_of_the_compact_json() {
        let fields: BTreeMap<String, Value> = [
            ("Name".to_string(), Value::from("Åkeri AB")),
            ("No".to_string(), Value::from(7)),
        ]
        .into();
        let json = serde_json::to_vec(&fields).unwrap();
        assert_eq!(content_hash(&fields), hex::encode(Sha256::digest(json)));
    }
}
