//! Reading: what was last sent to each customer (planning asks this of every customer
//! read), events, and run summaries.

use super::store::{decode, decode_event, state_key, with_state_key};
use super::{encoding, Event, Journal, Run, Sent, State};

impl Journal {
    pub fn state(&self, sink: &str, code: &str) -> anyhow::Result<Option<State>> {
        self.state
            .get(state_key(sink, code))?
            .map(|v| decode(&v, "state"))
            .transpose()
    }

    /// Every customer's state in `sink`, by customer code.
    pub fn states(&self, sink: &str) -> anyhow::Result<Vec<(String, State)>> {
        let prefix = format!("{sink}/");
        let mut out = Vec::new();
        for kv in self.state.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            let code = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((code, decode(&v, "state")?));
        }
        Ok(out)
    }

    /// Whether any customer has a state in `sink`: a journal that knows none has not
    /// written to that register yet (a first install, or a lost journal).
    pub fn knows_any(&self, sink: &str) -> anyhow::Result<bool> {
        Ok(self
            .state
            .scan_prefix(format!("{sink}/").as_bytes())
            .next()
            .transpose()?
            .is_some())
    }

    /// The customer's state, unless what was last sent has `content_hash`: planning asks
    /// this of every customer read, and most are unchanged, so only their stored hash is
    /// read (compared as stored, without decoding the rest).
    pub fn state_unless_sent(
        &self,
        sink: &str,
        code: &str,
        content_hash: &str,
    ) -> anyhow::Result<Sent> {
        let Some(stored) = with_state_key(sink, code, |key| self.state.get(key))? else {
            return Ok(Sent::Never);
        };
        if encoding::state_hash_is(&stored, content_hash) {
            return Ok(Sent::Same);
        }
        let state: State = decode(&stored, "state")?;
        Ok(if state.content_hash == content_hash {
            Sent::Same
        } else {
            Sent::Other(state)
        })
    }

    /// Runs, oldest first (run ids sort by start time).
    pub fn runs(&self) -> anyhow::Result<Vec<Run>> {
        self.runs.iter().map(|kv| decode(&kv?.1, "run")).collect()
    }

    /// The newest run for `sink` that finished (was not cut short or killed), if any.
    pub fn last_finished_run(&self, sink: &str) -> anyhow::Result<Option<Run>> {
        for kv in self.runs.iter().rev() {
            let run: Run = decode(&kv?.1, "run")?;
            if run.sink == sink && run.finished.is_some() && !run.replay {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// Events, newest first, optionally only one customer's or one run's.
    pub fn events(&self, customer: Option<&str>, run: Option<&str>) -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::new();
        let matches = |e: &Event| run.is_none_or(|r| e.run_id == r);
        if let Some(code) = customer {
            let mut prefix = code.as_bytes().to_vec();
            prefix.push(0);
            for kv in self.by_customer.scan_prefix(prefix).rev() {
                let key = kv?.0;
                let seq = &key[key.len() - 8..];
                if let Some(v) = self.events.get(seq)? {
                    let e = decode_event(&v)?;
                    if matches(&e) {
                        out.push(e);
                    }
                }
            }
        } else {
            for kv in self.events.iter().rev() {
                let e = decode_event(&kv?.1)?;
                if matches(&e) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// One event by sequence number.
    pub fn event(&self, seq: u64) -> anyhow::Result<Option<Event>> {
        self.events
            .get(seq.to_be_bytes())?
            .map(|v| decode_event(&v))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Counts;
    use chrono::Utc;

    #[test]
    fn planning_reads_whether_the_same_hash_was_sent_from_any_stored_form() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let hash = crate::hash::lower_hex(&[0xa7; 32]);
        let other = crate::hash::lower_hex(&[0x7a; 32]);
        let state = |content_hash: &str| State {
            remote_id: "6f1c2a52-8a4e-4d5e-9a43-2b1f0c9d7e11".into(),
            content_hash: content_hash.into(),
            last_seq: 9,
        };
        // As written now (the digest as bytes), as older versions wrote it (JSON), and a
        // hash that is not hex text at all.
        let compact = encoding::encode(&state(&hash));
        let json = serde_json::to_vec(&state(&hash)).unwrap();
        let text = encoding::encode(&state("not-hex"));
        for (code, bytes) in [("K1", &compact), ("K2", &json), ("K3", &text)] {
            j.state
                .insert(state_key("eaccounting", code), &bytes[..])
                .unwrap();
        }
        assert!(encoding::state_hash_is(&compact, &hash));
        assert!(!encoding::state_hash_is(&compact, &other));
        assert!(!encoding::state_hash_is(&compact, &hash[..62]));
        for code in ["K1", "K2"] {
            assert_eq!(
                j.state_unless_sent("eaccounting", code, &hash).unwrap(),
                Sent::Same
            );
            assert_eq!(
                j.state_unless_sent("eaccounting", code, &other).unwrap(),
                Sent::Other(state(&hash)),
                "{code}"
            );
        }
        assert_eq!(
            j.state_unless_sent("eaccounting", "K3", "not-hex").unwrap(),
            Sent::Same
        );
        assert_eq!(
            j.state_unless_sent("eaccounting", "K3", &hash).unwrap(),
            Sent::Other(state("not-hex"))
        );
        // Text is never read as the bytes it spells: "not-hex" in hex is not its hash.
        let spelled = crate::hash::lower_hex(b"not-hex");
        assert!(!encoding::state_hash_is(&text, &spelled));
        assert_eq!(
            j.state_unless_sent("eaccounting", "K3", &spelled).unwrap(),
            Sent::Other(state("not-hex"))
        );
        assert_eq!(
            j.state_unless_sent("eaccounting", "K4", &hash).unwrap(),
            Sent::Never
        );
        // A key too long for the stack buffer is found all the same.
        let long = "K".repeat(200);
        j.state
            .insert(state_key("eaccounting", &long), &compact[..])
            .unwrap();
        assert_eq!(
            j.state_unless_sent("eaccounting", &long, &hash).unwrap(),
            Sent::Same
        );
        with_state_key("eaccounting", "K1", |key| {
            assert_eq!(key, b"eaccounting/K1")
        });
        assert_eq!(
            j.state_unless_sent("visma-net", "K1", &hash).unwrap(),
            Sent::Never
        );
    }

    #[test]
    fn the_last_finished_run_skips_cut_short_runs_and_other_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.last_finished_run("eaccounting").unwrap(), None);
        let run = |id: &str, sink: &str, finished: bool| Run {
            id: id.into(),
            sink: sink.into(),
            started: Utc::now(),
            finished: finished.then(Utc::now),
            counts: Counts::default(),
            rejections: Vec::new(),
            error: None,
            cursor: Some(Utc::now()),
            mapping: None,
            replay: false,
        };
        j.save_run(&run("20260101T000000.000Z-0001", "eaccounting", true))
            .unwrap();
        j.save_run(&run("20260102T000000.000Z-0001", "eaccounting", true))
            .unwrap();
        j.save_run(&run("20260103T000000.000Z-0001", "eaccounting", false))
            .unwrap();
        j.save_run(&run("20260104T000000.000Z-0001", "visma-net", true))
            .unwrap();
        let last = j.last_finished_run("eaccounting").unwrap().unwrap();
        assert_eq!(last.id, "20260102T000000.000Z-0001");
        // Summaries written before the cursor existed still read.
        let old = br#"{"id":"20260105T000000.000Z-0001","sink":"eaccounting",
            "started":"2026-01-05T00:00:00Z","finished":"2026-01-05T00:01:00Z",
            "counts":{"created":0,"updated":0,"unchanged":0,"rejected":0,"failed":0},
            "rejections":[],"error":null}"#;
        j.runs
            .insert("20260105T000000.000Z-0001", &old[..])
            .unwrap();
        let last = j.last_finished_run("eaccounting").unwrap().unwrap();
        assert_eq!((last.cursor, last.mapping), (None, None));
    }
}
