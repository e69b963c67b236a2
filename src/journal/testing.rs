//! Test fixtures shared by the journal's modules.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::Value;

use super::{Chain, Event, Journal, Operation, Outcome, State};

pub(super) fn event(customer: &str, run: &str) -> Event {
    Event {
        seq: 0,
        time: Utc::now(),
        run_id: run.into(),
        actor: "sync".into(),
        customer: customer.into(),
        sink: "eaccounting".into(),
        operation: Operation::Create,
        outcome: Outcome::Succeeded,
        http_status: Some(201),
        error_code: None,
        message: None,
        remote_id: Some("id-1".into()),
        fields: vec!["Name".into()],
        values: None,
        chain: Chain::default(),
    }
}

/// Six events for three customers, with values and state, as a sync writes them.
pub(super) fn sample() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    for (i, code) in ["K1", "K2", "K3", "K1", "K2", "K3"].into_iter().enumerate() {
        let values: BTreeMap<String, Value> = [
            ("Name".to_string(), Value::from(format!("Kund {code} v{i}"))),
            (
                "ContactPersonEmail".to_string(),
                Value::from(format!("anna{i}@example.se")),
            ),
        ]
        .into();
        let state = State {
            remote_id: format!("id-{code}"),
            content_hash: crate::hash::content_hash(&values),
            last_seq: 0,
        };
        let mut e = event(code, "r1");
        e.remote_id = Some(format!("id-{code}"));
        e.fields = values.keys().cloned().collect();
        e.values = Some(values);
        j.record(e, Some(state), true).unwrap();
    }
    (dir, j)
}
