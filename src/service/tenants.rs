//! The tenants folder: one `*.toml` tenant config per tenant, its id the file's stem.
//! Read whole on every scan (bounded: file count and size), compared by digest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::config::MOST_FILE_BYTES;
use super::shard::Shard;
use crate::config::schedule::Schedule;
use crate::config::Config;

/// The most tenant files one folder may hold; the rest are left out, with a warning.
pub const MOST_TENANTS: usize = 10_000;

/// A tenant id: the config file's stem, which URLs and metrics name.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One tenant file as read by a scan.
pub struct Found {
    pub file: PathBuf,
    pub digest: [u8; 32],
    /// The config, or why it does not load (naming file and key, never a value).
    pub loaded: Result<Loaded, String>,
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub register: &'static str,
    pub schedule: Schedule,
    pub journal: PathBuf,
}

/// Reads the folder: every `*.toml` file whose stem is a valid id. Files whose content
/// did not change since `known` (by digest) are not parsed again (`loaded` is then
/// `Err` empty and must not be used: `unchanged` says so).
/// With `shard`, only its tenants are read; the other files are left alone.
pub fn scan(
    folder: &Path,
    known: &HashMap<String, [u8; 32]>,
    shard: Option<Shard>,
) -> anyhow::Result<Scan> {
    let mut found = HashMap::new();
    let mut unchanged = Vec::new();
    let entries = std::fs::read_dir(folder)
        .map_err(|e| anyhow::anyhow!("cannot read the tenants folder {}: {e}", folder.display()))?;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !valid_id(id) {
            tracing::warn!(
                file = %crate::output::printable(&path.display().to_string()),
                "left out: a tenant file's name must be letters, digits, '-' or '_' (at most 64) before .toml"
            );
            continue;
        }
        if shard.is_some_and(|shard| !shard.holds(id)) {
            continue;
        }
        if found.len() + unchanged.len() >= MOST_TENANTS {
            tracing::warn!("more than {MOST_TENANTS} tenant files: the rest are left out");
            break;
        }
        let id = id.to_string();
        let bytes = match read_bounded(&path) {
            Ok(bytes) => bytes,
            Err(why) => {
                let digest = Sha256::digest(why.as_bytes()).into();
                found.insert(
                    id,
                    Found {
                        file: path,
                        digest,
                        loaded: Err(why),
                    },
                );
                continue;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if known.get(&id) == Some(&digest) {
            unchanged.push(id);
            continue;
        }
        let loaded = load(&path, bytes);
        found.insert(
            id,
            Found {
                file: path,
                digest,
                loaded,
            },
        );
    }
    Ok(Scan { found, unchanged })
}

pub struct Scan {
    /// New or changed tenant files.
    pub found: HashMap<String, Found>,
    /// Tenants whose file did not change.
    pub unchanged: Vec<String>,
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > MOST_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MOST_FILE_BYTES} bytes; is it a tenant config?",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn load(path: &Path, bytes: Vec<u8>) -> Result<Loaded, String> {
    crate::config::refuse_journal_file(path, "tenant config").map_err(|e| e.to_string())?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    let config = Config::parse(&text, path).map_err(|e| e.to_string())?;
    Ok(Loaded {
        register: config.sink_name(),
        schedule: config.schedule,
        journal: config.journal.path,
    })
}

/// Whether another process holds the journal's lock now (a CLI command, say). A run
/// waits until it is let go rather than failing.
pub fn journal_busy(journal: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(journal.join("journal.lock"))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// What opening a tenant's journal says, for `/readyz` and for when its last run
/// started: `Ok(None)` when there is no journal yet (the first run creates it).
pub fn probe_journal(journal: &Path, sink: &str) -> Result<Option<DateTime<Utc>>, String> {
    let present = ["sled", "sled.old", "sled.compact"]
        .iter()
        .any(|d| journal.join(d).exists());
    if !present {
        return Ok(None);
    }
    let opened = crate::journal::Journal::open(journal).map_err(|e| format!("{e:#}"))?;
    let last = opened
        .last_finished_run(sink)
        .map_err(|e| format!("{e:#}"))?;
    Ok(last.map(|run| run.started))
}
