//! Reconciling: register, journal and Opter compared, drift reported, nothing written.
//!
//! Architecture invariant: `reconcile` only reads (Opter, the register's customer list,
//! the journal's states); it records nothing, not even a run.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Engine;
use crate::error::{Error, Result};

/// What differs between the register, the journal and Opter, by customer code (or, for
/// register customers Opter does not have, by register number).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drift {
    pub opter_customers: u64,
    pub register_customers: u64,
    pub journal_states: u64,
    /// The journal knows the customer, but the register has neither its id nor any
    /// customer under its number: deleted in the register. The next sync creates it.
    pub deleted_in_register: Vec<String>,
    /// The journal's id is gone, but another register customer holds the number: the
    /// next sync finds it under the number and decides as onboarding does.
    pub remote_id_gone: Vec<String>,
    /// The register holds other values in our fields than we last sent: edited in
    /// the register (the next sync overwrites them if Opter changes).
    pub edited_in_register: Vec<String>,
    /// Register numbers no Opter customer maps to: left alone, never deleted.
    pub only_in_register: Vec<String>,
    /// Opter customers neither in the journal nor in the register: the next sync
    /// creates them.
    pub not_in_register: Vec<String>,
    /// Opter customers the mapping rejects, or that cannot be read (the next sync
    /// reports why).
    pub rejected_by_mapping: u64,
}

impl Drift {
    /// Whether anything differs.
    pub fn any(&self) -> bool {
        !(self.deleted_in_register.is_empty()
            && self.remote_id_gone.is_empty()
            && self.edited_in_register.is_empty()
            && self.only_in_register.is_empty()
            && self.not_in_register.is_empty())
    }
}

impl Engine {
    /// Reads all of Opter, the register's customer list and the journal's states, and
    /// compares them.
    pub async fn reconcile(&self) -> Result<Drift> {
        // Opter: code -> register number, for every customer the mapping accepts.
        let (pages, mut incoming) = tokio::sync::mpsc::channel(2);
        let reading = async move {
            let result = self.source.read_pages(None, &pages).await;
            drop(pages);
            result
        };
        let mut opter: HashMap<String, String> = HashMap::new();
        let mut rejected = 0;
        let mapping = &self.mapping;
        let collecting = async {
            while let Some(page) = incoming.recv().await {
                rejected += page.unreadable.len() as u64;
                for c in page.customers {
                    let permitted = c.into_permitted();
                    match mapping.check_and_hash(&permitted) {
                        Ok(checked) => {
                            opter.insert(checked.code.to_string(), checked.number.clone());
                        }
                        Err(_) => rejected += 1,
                    }
                }
            }
        };
        let (read, ()) = tokio::join!(reading, collecting);
        read?;
        let index = self.register_index().await.map_err(Error::from)?;
        let by_id: HashMap<&str, &str> = index.by_id().collect();
        let states = self.journal.states(self.sink_name())?;
        let mut drift = Drift {
            opter_customers: opter.len() as u64,
            register_customers: index.len() as u64,
            journal_states: states.len() as u64,
            rejected_by_mapping: rejected,
            ..Drift::default()
        };
        let mut known_numbers: HashSet<&str> = HashSet::new();
        for (code, state) in &states {
            match by_id.get(state.remote_id.as_str()) {
                Some(number) => {
                    known_numbers.insert(number);
                    let Some(remote) = index.get(number) else {
                        continue;
                    };
                    let remote = self.sink.complete(remote.clone()).await?;
                    if self.mapping.remote_hash(&remote.fields) != state.content_hash {
                        drift.edited_in_register.push(code.clone());
                    }
                }
                None => {
                    let number = opter.get(code).map(String::as_str);
                    match number.filter(|n| index.contains(n)) {
                        Some(_) => drift.remote_id_gone.push(code.clone()),
                        None => drift.deleted_in_register.push(code.clone()),
                    }
                }
            }
        }
        let opter_numbers: HashSet<&str> = opter.values().map(String::as_str).collect();
        drift.only_in_register = index
            .numbers()
            .filter(|n| !opter_numbers.contains(n))
            .map(str::to_string)
            .collect();
        let journal_codes: HashSet<&str> = states.iter().map(|(c, _)| c.as_str()).collect();
        drift.not_in_register = opter
            .iter()
            .filter(|(code, number)| {
                !journal_codes.contains(code.as_str()) && !index.contains(number)
            })
            .map(|(code, _)| code.clone())
            .collect();
        for list in [
            &mut drift.deleted_in_register,
            &mut drift.remote_id_gone,
            &mut drift.edited_in_register,
            &mut drift.only_in_register,
            &mut drift.not_in_register,
        ] {
            list.sort();
        }
        Ok(drift)
    }
}
