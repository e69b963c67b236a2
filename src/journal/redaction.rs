//! Removing values: retention (`redact_values_before`) and erasure (`erase_customer`).
//! Hashes and digests stay, so the chain still verifies; the files keep copies until the
//! journal is compacted (`lifecycle`).

use chrono::{DateTime, Utc};

use super::store::{decode_event, encode_event, COMPACTION_OWED, RETENTION_WATERMARK};
use super::{Chain, Event, Journal};

impl Journal {
    /// Removes the values (and salts) of events older than `cutoff`; hashes and digests
    /// stay, so the chain still verifies. Returns how many events were redacted.
    pub fn redact_values_before(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        // Events below the watermark were redacted (or had nothing) already: each run
        // looks only at what aged since the last one.
        let from = self
            .meta
            .get(RETENTION_WATERMARK)?
            .and_then(|v| v.as_ref().try_into().ok());
        let from = from.map(u64::from_be_bytes).unwrap_or(1);
        let mut redacted = 0;
        let mut watermark = from;
        for kv in self.events.range(from.to_be_bytes()..) {
            let (key, value) = kv?;
            let mut event = decode_event(&value)?;
            if event.time >= cutoff {
                break; // events are in time order
            }
            watermark = event.seq + 1;
            if event.values.is_none() && event.chain.salt.is_none() {
                continue;
            }
            event.values = None;
            event.chain.salt = None;
            self.events.insert(key, encode_event(&mut event))?;
            redacted += 1;
        }
        self.meta
            .insert(RETENTION_WATERMARK, &watermark.to_be_bytes())?;
        if redacted > 0 {
            self.meta.insert(COMPACTION_OWED, &[1])?;
        }
        Ok(redacted)
    }

    /// Erasure in the journal: removes the values and salts of all the customer's events
    /// and its state entries (whose content hash derives from personal values). Hashes
    /// and digests stay, so the chain verifies. Returns the events redacted.
    pub fn erase_customer(&self, code: &str) -> anyhow::Result<u64> {
        let mut redacted = 0;
        for event in self.events(Some(code), None)? {
            if event.values.is_none() && event.chain.salt.is_none() {
                continue;
            }
            let mut event = Event {
                values: None,
                chain: Chain {
                    salt: None,
                    ..event.chain
                },
                ..event
            };
            self.events
                .insert(event.seq.to_be_bytes(), encode_event(&mut event))?;
            redacted += 1;
        }
        for kv in self.state.iter() {
            let key = kv?.0;
            let mine = key.splitn(2, |b| *b == b'/').nth(1) == Some(code.as_bytes());
            if mine {
                self.state.remove(key)?;
            }
        }
        self.meta.insert(COMPACTION_OWED, &[1])?;
        Ok(redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::sample;

    #[test]
    fn redacted_values_keep_the_chain_verifiable() {
        let (_dir, j) = sample();
        let cutoff = j.event(4).unwrap().unwrap().time;
        let redacted = j.redact_values_before(cutoff).unwrap();
        assert!(redacted >= 1);
        for seq in 1..=6 {
            let e = j.event(seq).unwrap().unwrap();
            let gone = e.values.is_none() && e.chain.salt.is_none();
            assert_eq!(gone, e.time < cutoff, "event {seq}");
            assert!(e.chain.values_digest.is_some(), "the digest stays");
        }
        assert_eq!(j.verify().unwrap().problems, vec![]);
        // A later run picks up from where this one stopped and redacts the rest.
        let rest = j
            .redact_values_before(Utc::now() + chrono::Duration::days(1))
            .unwrap();
        assert_eq!(redacted + rest, 6);
        assert!((1..=6).all(|seq| j.event(seq).unwrap().unwrap().values.is_none()));
        assert_eq!(
            j.redact_values_before(Utc::now() + chrono::Duration::days(1))
                .unwrap(),
            0
        );
    }
}
