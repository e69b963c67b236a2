//! The journal folder's own files beside sled: the marker that says a journal lives
//! here, the suppression file, owner-only modes, atomic writes, and I/O errors that name
//! the path and what to do.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Written at a journal's first open and never removed: a folder holding it whose
/// database is gone lost its journal, and must not silently start a new one. It also
/// records how far the database had got when last closed: sled drops everything after
/// a damaged spot of its log when it opens, and the journal would look whole without it.
pub(super) const MARKER: &str = "journal.marker";
/// The customer codes suppressed after a purge, one per line, beside sled so that an
/// erasure survives a lost database.
pub(super) const SUPPRESSIONS: &str = "suppressions";

const MARKER_TEXT: &str = "# An opter-visma-sync journal lives in this folder. Back up the \
whole folder (or `journal backup FILE`); if sled/ is lost, restore it with `journal restore \
FILE`, or start over with --new-journal.\n";
const NEXT_EVENT: &str = "next event: ";

const SUPPRESSIONS_HEADER: &str =
    "# customers suppressed after a purge (codes only): sync never sends them\n";

/// A suppression file larger than this is not one this connector wrote.
const MOST_SUPPRESSION_BYTES: u64 = 16 * 1024 * 1024;

/// An I/O error at `path`, saying what happened and what to do; never a value.
pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::*;
    let (what, todo) = match e.kind() {
        StorageFull | QuotaExceeded => ("no space left on the device", "free space and run again"),
        ReadOnlyFilesystem => (
            "the file system is read-only",
            "make it writable and run again",
        ),
        PermissionDenied => (
            "permission denied",
            "run as the journal's owner, or give the folder back to them (owner-only, 0700)",
        ),
        NotADirectory | AlreadyExists if path.exists() && !path.is_dir() => (
            "a file stands where a folder belongs",
            "move it away, or set [journal] path to a folder",
        ),
        NotADirectory => (
            "a file stands where a folder belongs on the way to it",
            "check [journal] path",
        ),
        _ => {
            return anyhow::anyhow!(
                "journal folder {}: {e}; check the folder and run again",
                path.display()
            )
        }
    };
    anyhow::anyhow!("journal folder {}: {what}; {todo}", path.display())
}

/// Like `io_error`, for an error sled reported: I/O errors name the path, anything else
/// says the files cannot be read.
pub(super) fn sled_error(path: &Path, e: &sled::Error) -> anyhow::Error {
    match e {
        sled::Error::Io(io) => io_error(path, io),
        other => anyhow::anyhow!("journal {}: {other}", path.display()),
    }
}

/// Creates `dir` (owner-only), naming it in any error.
pub(super) fn create_folder(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(io_error(
            dir,
            &std::io::Error::from(std::io::ErrorKind::NotADirectory),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
    super::owner_only(dir, 0o700)
}

/// Writes `bytes` to `path` whole or not at all: a temporary file (owner-only), fsync,
/// rename, fsync of the folder.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let write = || -> std::io::Result<()> {
        let mut file = owner_only_file(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        sync_folder(path.parent().unwrap_or(Path::new(".")))
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        io_error(path, &e)
    })
}

/// Creates (truncating) a file readable and writable by its owner only.
pub(super) fn owner_only_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

pub(super) fn sync_folder(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether the folder once held a journal: its marker, or a suppression file.
pub(super) fn held_a_journal(dir: &Path) -> bool {
    dir.join(MARKER).exists() || dir.join(SUPPRESSIONS).exists()
}

/// Records in the marker that the database holds the events before `next_event`.
pub(super) fn write_marker(dir: &Path, next_event: u64) -> anyhow::Result<()> {
    let text = format!("{MARKER_TEXT}{NEXT_EVENT}{next_event}\n");
    write_atomically(&dir.join(MARKER), text.as_bytes())
}

/// The next event the marker recorded (0 when there is no marker, or it records none).
pub(super) fn recorded_next_event(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join(MARKER);
    let text = match std::fs::read(&path) {
        Ok(bytes) if bytes.len() <= 64 * 1024 => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => anyhow::bail!("{}: too large to be the journal's marker", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(&path, &e)),
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(NEXT_EVENT))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// Tightens what is under the journal folder to its owner: folders 0700, files 0600
/// (a grant file copied in at 0644, or files an older version or sled created).
pub(super) fn tighten(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(folder) = stack.pop() {
            let entries = std::fs::read_dir(&folder).map_err(|e| io_error(&folder, &e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error(&folder, &e))?;
                let path = entry.path();
                // Not followed: a link's target is not the journal's.
                let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, &e))?;
                let mode = if meta.is_dir() {
                    stack.push(path.clone());
                    0o700
                } else if meta.is_file() {
                    0o600
                } else {
                    continue;
                };
                if meta.permissions().mode() & 0o777 != mode {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| io_error(&path, &e))?;
                }
            }
        }
    }
    let _ = dir;
    Ok(())
}

/// The codes in the suppression file; `None` when there is none.
pub(super) fn read_suppressions(dir: &Path) -> anyhow::Result<Option<BTreeSet<String>>> {
    let path = dir.join(SUPPRESSIONS);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, &e)),
    };
    let size = file.metadata().map_err(|e| io_error(&path, &e))?.len();
    if size > MOST_SUPPRESSION_BYTES {
        anyhow::bail!(
            "{}: {size} bytes, more than a suppression file holds ({MOST_SUPPRESSION_BYTES}): \
             restore it from a backup",
            path.display()
        );
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, size), &mut text).with_context(
        || {
            format!(
                "{}: not the connector's suppression file (not UTF-8)",
                path.display()
            )
        },
    )?;
    let mut codes = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.chars().any(char::is_control) {
            anyhow::bail!(
                "{} line {}: a control character in a customer code",
                path.display(),
                n + 1
            );
        }
        codes.insert(line.to_string());
    }
    Ok(Some(codes))
}

/// Writes the suppression file whole (atomically).
pub(super) fn write_suppressions(dir: &Path, codes: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut text = String::from(SUPPRESSIONS_HEADER);
    for code in codes {
        text.push_str(code);
        text.push('\n');
    }
    write_atomically(&dir.join(SUPPRESSIONS), text.as_bytes())
}

/// A customer code the suppression file can hold: one line, no control characters.
pub(super) fn check_code(code: &str) -> anyhow::Result<()> {
    if code.is_empty() || code.starts_with('#') || code.chars().any(char::is_control) {
        return Err(crate::error::Error::config(
            "a customer code must not be empty, start with '#' or hold a control character",
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_names_the_folder_and_what_to_do() {
        let e = io_error(
            Path::new("/srv/j"),
            &std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert_eq!(
            e.to_string(),
            "journal folder /srv/j: no space left on the device; free space and run again"
        );
    }

    #[test]
    fn the_suppression_file_round_trips_and_refuses_what_it_never_holds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_suppressions(dir.path()).unwrap(), None);
        let codes: BTreeSet<String> = ["K1".into(), "K 2".into()].into();
        write_suppressions(dir.path(), &codes).unwrap();
        assert_eq!(read_suppressions(dir.path()).unwrap(), Some(codes));
        std::fs::write(dir.path().join(SUPPRESSIONS), "K1\nK\u{1b}2\n").unwrap();
        let e = read_suppressions(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("K\u{1b}2"), "{e}");
        assert!(check_code("K\n2").is_err() && check_code("#K").is_err());
    }
}
