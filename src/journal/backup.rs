//! `journal backup FILE` and `journal restore FILE`: a consistent copy of every tree,
//! taken under the journal's lock from sled itself, and a restore that starts a journal
//! folder's database from it.
//!
//! The file: a header line, then records (`T` a tree's name, `E` one key and value of
//! it), then `Z` and the SHA-256 of everything before it. Lengths are u32 big-endian.
//! A restore checks the whole file before it writes anything.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::folder::{self, io_error};
use super::lifecycle::{recover_compaction, sled_config};
use super::lock::lock_journal;
use super::store::{sequence_number, NEXT_SEQ};
use super::{Journal, Opening};
use crate::error::Error;

const HEADER: &[u8] = b"opter-visma-sync journal backup 1\n";
/// Bounds on what a restore reads, well above what the journal stores.
const MOST_NAME_BYTES: usize = 1024;
const MOST_KEY_BYTES: usize = 1024 * 1024;
const MOST_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// Writes a backup of the journal in `dir` to `file` (owner-only, whole or not at all).
/// The journal must read whole. Returns the entries written.
pub fn backup(dir: &Path, file: &Path) -> anyhow::Result<u64> {
    let journal = Journal::open_as(dir, Opening::Write)?;
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = (|| -> anyhow::Result<u64> {
        let out = folder::owner_only_file(&temporary).map_err(|e| io_error(&temporary, &e))?;
        let mut out = Hashing::new(BufWriter::new(out));
        let fail = |e: std::io::Error| io_error(file, &e);
        out.write_all(HEADER).map_err(fail)?;
        let mut entries = 0;
        for name in journal.db.tree_names() {
            let tree = journal.db.open_tree(&name)?;
            out.record(b'T', &[&name]).map_err(fail)?;
            for kv in tree.iter() {
                let (key, value) = kv?;
                out.record(b'E', &[&key, &value]).map_err(fail)?;
                entries += 1;
            }
        }
        let digest = out.hasher.clone().finalize();
        let mut out = out.inner;
        out.write_all(b"Z").map_err(fail)?;
        out.write_all(&digest).map_err(fail)?;
        let out = out.into_inner().map_err(|e| fail(e.into_error()))?;
        out.sync_all().map_err(fail)?;
        std::fs::rename(&temporary, file).map_err(fail)?;
        folder::sync_folder(
            file.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(fail)?;
        Ok(entries)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// What a restore found.
#[derive(Debug)]
pub struct Restored {
    pub entries: u64,
    /// Customers the suppression file holds that the backup does not: purged after it
    /// was taken, so their values are back in the journal until purged again.
    pub purged_since: Vec<String>,
}

/// Starts the database of the journal folder `dir` from the backup `file`. Refuses a
/// folder that holds a database; checks the whole file before writing.
pub fn restore(dir: &Path, file: &Path) -> anyhow::Result<(Journal, Restored)> {
    // The file first: a damaged one changes nothing.
    let entries = read_backup(file, |_| Ok(()))?;
    folder::create_folder(dir)?;
    let next_event;
    {
        let _lock = lock_journal(dir)?;
        recover_compaction(dir)?;
        let live = dir.join("sled");
        if live.exists() {
            return Err(Error::config(format!(
                "{} holds a journal: a restore writes only into a folder without one. Move \
                 it away first (keep it until the restored journal verifies)",
                live.display()
            ))
            .into());
        }
        let staged = dir.join("sled.restore");
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(|e| io_error(&staged, &e))?;
        }
        {
            let db = sled_config(&staged)
                .open()
                .map_err(|e| folder::sled_error(&staged, &e))?;
            let mut tree: Option<sled::Tree> = None;
            let mut batch = sled::Batch::default();
            let mut pending = 0usize;
            read_backup(file, |record| {
                match record {
                    Record::Tree(name) => {
                        if let Some(tree) = tree.take() {
                            tree.apply_batch(std::mem::take(&mut batch))?;
                        }
                        pending = 0;
                        tree = Some(db.open_tree(name)?);
                    }
                    Record::Entry(key, value) => {
                        batch.insert(key, value);
                        pending += 1;
                        if pending == 10_000 {
                            if let Some(tree) = &tree {
                                tree.apply_batch(std::mem::take(&mut batch))?;
                            }
                            pending = 0;
                        }
                    }
                }
                Ok(())
            })?;
            if let Some(tree) = tree {
                tree.apply_batch(batch)?;
            }
            db.flush().map_err(|e| folder::sled_error(&staged, &e))?;
            let stored = db.open_tree("meta")?.get(NEXT_SEQ)?;
            next_event = sequence_number(stored.as_deref()).unwrap_or(0);
        }
        std::fs::rename(&staged, &live).map_err(|e| io_error(&live, &e))?;
        folder::sync_folder(dir).map_err(|e| io_error(dir, &e))?;
        // The restored database is the record now, even where the lost one had more.
        folder::write_marker(dir, next_event)?;
    }
    let journal = Journal::open_as(dir, Opening::Read)?;
    // The file keeps what either holds: a suppression lifted after the backup is held
    // until lifted again, one set after it (`purged_since`) stays held.
    let purged_since = journal.listed_only()?;
    journal.list_sled_suppressions()?;
    Ok((
        journal,
        Restored {
            entries,
            purged_since,
        },
    ))
}

enum Record<'a> {
    Tree(&'a [u8]),
    Entry(&'a [u8], &'a [u8]),
}

/// Reads the backup `file` through, handing each record to `each`; fails on anything
/// but a whole backup, before `Z`'s digest matches nothing is trusted, so a caller that
/// writes must read it twice. Returns the entries.
fn read_backup(
    file: &Path,
    mut each: impl FnMut(Record<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let damaged = |why: &str| -> anyhow::Error {
        Error::Corrupt(format!(
            "{} is not a whole journal backup ({why}): nothing was restored; use another backup",
            file.display()
        ))
        .into()
    };
    let input = std::fs::File::open(file).map_err(|e| io_error(file, &e))?;
    let mut input = BufReader::new(input);
    let mut hasher = Sha256::new();
    let mut header = vec![0; HEADER.len()];
    input
        .read_exact(&mut header)
        .map_err(|_| damaged("no header"))?;
    if header != HEADER {
        return Err(damaged("no header"));
    }
    hasher.update(&header);
    let (mut key, mut value, mut entries, mut in_tree) = (Vec::new(), Vec::new(), 0u64, false);
    loop {
        let mut tag = [0u8];
        input
            .read_exact(&mut tag)
            .map_err(|_| damaged("it ends early"))?;
        match tag[0] {
            b'Z' => {
                let mut digest = [0u8; 32];
                input
                    .read_exact(&mut digest)
                    .map_err(|_| damaged("it ends early"))?;
                let mut rest = [0u8];
                let more = input.read(&mut rest).map_err(|e| io_error(file, &e))?;
                if digest[..] != hasher.finalize()[..] || more > 0 {
                    return Err(damaged("its checksum does not match"));
                }
                return Ok(entries);
            }
            b'T' => {
                hasher.update(tag);
                read_field(&mut input, &mut hasher, &mut key, MOST_NAME_BYTES)
                    .map_err(|_| damaged("a tree name is cut off or too long"))?;
                each(Record::Tree(&key))?;
                in_tree = true;
            }
            b'E' if in_tree => {
                hasher.update(tag);
                read_field(&mut input, &mut hasher, &mut key, MOST_KEY_BYTES)
                    .map_err(|_| damaged("a key is cut off or too long"))?;
                read_field(&mut input, &mut hasher, &mut value, MOST_VALUE_BYTES)
                    .map_err(|_| damaged("a value is cut off or too long"))?;
                each(Record::Entry(&key, &value))?;
                entries += 1;
            }
            _ => return Err(damaged("an unknown record")),
        }
    }
}

fn read_field(
    input: &mut impl Read,
    hasher: &mut Sha256,
    into: &mut Vec<u8>,
    most: usize,
) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > most {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    into.clear();
    // Read in place of reserving `n` up front: a lying length costs no memory.
    input.take(n as u64).read_to_end(into)?;
    if into.len() != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    hasher.update(len);
    hasher.update(&into[..]);
    Ok(())
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn record(&mut self, tag: u8, fields: &[&[u8]]) -> std::io::Result<()> {
        self.write_all(&[tag])?;
        for field in fields {
            let len = u32::try_from(field.len())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            self.write_all(&len.to_be_bytes())?;
            self.write_all(field)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::sample;

    #[test]
    fn a_backup_restores_every_entry_and_a_changed_byte_is_refused() {
        let (dir, j) = sample();
        let before = j.events(None, None).unwrap();
        drop(j);
        let file = dir.path().join("backup.ovs");
        let entries = backup(dir.path(), &file).unwrap();
        assert!(entries >= 6, "{entries}");

        let target = tempfile::tempdir().unwrap();
        let (restored, report) = restore(target.path(), &file).unwrap();
        assert_eq!(report.entries, entries);
        assert_eq!(restored.events(None, None).unwrap(), before);
        assert_eq!(restored.verify().unwrap().problems, vec![]);
        drop(restored);
        let e = restore(target.path(), &file).err().unwrap().to_string();
        assert!(e.contains("holds a journal"), "{e}");

        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let e = restore(elsewhere.path(), &file).err().unwrap();
        assert!(
            matches!(e.downcast_ref::<Error>(), Some(Error::Corrupt(_))),
            "{e}"
        );
        assert!(!elsewhere.path().join("sled").exists());
    }
}
