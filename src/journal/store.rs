//! How the trees are keyed, the entries of `meta`, and how one entry is read and written.

use serde::Deserialize;

use super::{encoding, Event};

// The keys of `meta`, together so that no two collide.

/// The sequence number the next event gets.
pub(super) const NEXT_SEQ: &[u8] = b"next_seq";
/// Hash of the newest event: the chain's head.
pub(super) const CHAIN_HEAD: &[u8] = b"chain_head";
/// Set when a hold is lifted: the next sync must read every customer.
pub(super) const FORCE_FULL_READ: &[u8] = b"force_full_read";
/// When the last complete full read started.
pub(super) const LAST_FULL_READ: &[u8] = b"last_full_read";
/// Set in the same flush as any removal of values: the files still hold copies until
/// the journal is rewritten (`compact`), which clears it.
pub(super) const COMPACTION_OWED: &[u8] = b"compaction_owed";
/// Events below this sequence number are past retention already.
pub(super) const RETENTION_WATERMARK: &[u8] = b"retention_watermark";

pub(super) fn state_key(sink: &str, code: &str) -> Vec<u8> {
    format!("{sink}/{code}").into_bytes()
}

/// Calls `f` with `state_key(sink, code)`, built on the stack when it fits: planning looks
/// up every customer read.
pub(super) fn with_state_key<R>(sink: &str, code: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buffer = [0u8; 128];
    let len = sink.len() + 1 + code.len();
    if len > buffer.len() {
        return f(&state_key(sink, code));
    }
    buffer[..sink.len()].copy_from_slice(sink.as_bytes());
    buffer[sink.len()] = b'/';
    buffer[sink.len() + 1..len].copy_from_slice(code.as_bytes());
    f(&buffer[..len])
}

pub(super) fn customer_key(code: &str, seq: u64) -> Vec<u8> {
    let mut key = code.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    encoding::decode(bytes).map_err(|e| anyhow::anyhow!("journal {what} entry is unreadable: {e}"))
}

/// Stores an event. Its field list is left out when it is just the keys of its values
/// (the usual case), and `decode_event` restores it.
pub(super) fn encode_event(event: &mut Event) -> Vec<u8> {
    let implied = event
        .values
        .as_ref()
        .is_some_and(|v| v.keys().eq(event.fields.iter()));
    if !implied {
        return encoding::encode(event);
    }
    let fields = std::mem::take(&mut event.fields);
    let bytes = encoding::encode(event);
    event.fields = fields;
    bytes
}

pub(super) fn decode_event(bytes: &[u8]) -> anyhow::Result<Event> {
    let mut event: Event = decode(bytes, "event")?;
    if event.fields.is_empty() {
        if let Some(values) = &event.values {
            event.fields = values.keys().cloned().collect();
        }
    }
    Ok(event)
}

/// The stored next sequence number (1 in a new journal); `None` when unreadable.
pub(super) fn sequence_number(stored: Option<&[u8]>) -> Option<u64> {
    match stored {
        None => Some(1),
        Some(bytes) => bytes.try_into().ok().map(u64::from_be_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::sample;
    use crate::journal::State;

    #[test]
    fn stored_events_leave_out_field_names_and_hex() {
        let (_dir, j) = sample();
        let raw = j.events.get(1u64.to_be_bytes()).unwrap().unwrap();
        let event = decode_event(&raw).unwrap();
        assert_eq!(event.fields, vec!["ContactPersonEmail", "Name"]);
        let json = serde_json::to_vec(&event).unwrap();
        assert!(
            raw.len() * 2 < json.len(),
            "{} vs {}",
            raw.len(),
            json.len()
        );
        assert!(!raw.windows(4).any(|w| w == b"seq\""));
        assert!(!raw
            .windows(event.chain.hash.len())
            .any(|w| w == event.chain.hash.as_bytes()));
    }

    #[test]
    fn entries_written_as_json_by_older_versions_still_read_and_verify() {
        let (_dir, j) = sample();
        let before = j.events(None, None).unwrap();
        for kv in j.events.iter() {
            let (key, value) = kv.unwrap();
            let json = serde_json::to_vec(&decode_event(&value).unwrap()).unwrap();
            j.events.insert(key, json).unwrap();
        }
        for kv in j.state.iter() {
            let (key, value) = kv.unwrap();
            let state: State = decode(&value, "state").unwrap();
            j.state
                .insert(key, serde_json::to_vec(&state).unwrap())
                .unwrap();
        }
        assert_eq!(j.events(None, None).unwrap(), before);
        assert_eq!(j.verify().unwrap().problems, vec![]);
    }
}
