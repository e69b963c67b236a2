//! Errors that end a command, and the exit code each one means.

use std::process::ExitCode;

/// Exit codes, documented in the README: scripts rely on them.
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// The run could not finish (network down, register unreachable, journal unusable).
    pub const FAILED: u8 = 1;
    /// Configuration or usage error: fix the config or the command line.
    pub const CONFIG: u8 = 2;
    /// The run finished, but some customers were rejected or failed.
    pub const PARTIAL: u8 = 3;
    /// The register's authorization is gone: a person must log in again.
    pub const NEEDS_LOGIN: u8 = 4;
    /// `journal verify` found the journal changed after it was written.
    pub const VERIFY_FAILED: u8 = 5;
    /// The register's daily call budget is used up: the run stopped cleanly and can
    /// resume once calls leave the 24-hour window.
    pub const BUDGET: u8 = 6;
    /// The journal cannot be read whole (its files are damaged): nothing was written;
    /// restore it from a `journal backup`.
    pub const CORRUPT: u8 = 7;
    /// `journal verify` found a support action cut off half-way (a purge, say): run it
    /// again to complete it.
    pub const UNFINISHED: u8 = 8;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A wrong or missing configuration value; the message names the file and key.
    #[error("{0}")]
    Config(String),
    /// The register refused our stored grant; only a person can repair it.
    #[error("{0}")]
    NeedsLogin(String),
    /// The daily call budget is used up; the message says until when.
    #[error("{0}")]
    Budget(String),
    /// The journal cannot be read whole; the message names where and how to restore.
    #[error("{0}")]
    Corrupt(String),
    /// Anything else that stops the command.
    #[error(transparent)]
    Other(anyhow::Error),
}

/// An `Error` raised as it is where only `anyhow` travels (inside the journal, say) keeps
/// its class, and so its exit code; one given context since stays `Other`, as before.
impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        if e.chain().count() > 1 {
            return Error::Other(e);
        }
        match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => Error::Other(e),
        }
    }
}

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Error::Config(_) => exit::CONFIG,
            Error::NeedsLogin(_) => exit::NEEDS_LOGIN,
            Error::Budget(_) => exit::BUDGET,
            Error::Corrupt(_) => exit::CORRUPT,
            Error::Other(_) => exit::FAILED,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A serde (or TOML) message without the value it quotes: `invalid type: string "x",
/// expected a boolean` becomes `invalid type: string, expected a boolean`. What was
/// quoted may be a secret or personal data written in the wrong place; what is kept
/// (the kind of value, what was expected, the key and position) is enough to fix it.
pub fn without_values(message: &str) -> String {
    let mut text = message.trim().to_string();
    for lead in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(start) = text.find(lead) else {
            continue;
        };
        let from = start + lead.len();
        // What follows the value is serde's own text, so the last `, expected` ends it.
        let end = text[from..]
            .rfind(", expected")
            .map(|i| from + i)
            .unwrap_or(text.len());
        let quoted = &text[from..end];
        let kind = quoted
            .split(['"', '`', '\''])
            .next()
            .unwrap_or_default()
            .trim_end();
        let kind = match (lead, kind) {
            ("unknown variant ", _) => String::new(),
            (_, "") => "a value".to_string(),
            (_, kind) => kind.to_string(),
        };
        let lead = lead.trim_end();
        let joined = match kind.is_empty() {
            true => lead.to_string(),
            false => format!("{lead} {kind}"),
        };
        text = format!("{}{joined}{}", &text[..start], &text[end..]);
    }
    // Keys are named (they say where); a quoted key is shown escaped and short.
    for lead in ["unknown field `", "duplicate key `", "missing field `"] {
        if let Some(start) = text.find(lead) {
            let from = start + lead.len();
            if let Some(len) = text[from..].find('`') {
                let key: String = text[from..from + len].chars().take(64).collect();
                let key = crate::output::printable(&key).into_owned();
                text = format!("{}{key}{}", &text[..from], &text[from + len..]);
            }
        }
    }
    text
}

/// A TOML error as `FILE: line L, column C: what is wrong`, without the file's lines
/// (toml's own display quotes them, and a file given by mistake may hold a secret).
pub fn toml_error(file: &std::path::Path, text: &str, error: &toml::de::Error) -> String {
    // A key missing from the top level points at the file's start: no line says where.
    let top_level_missing = error.message().starts_with("missing field");
    let at = error
        .span()
        .filter(|span| !(top_level_missing && span.start == 0))
        .map(|span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            // The key the line sets, when it is a plain one: it says where, as a value
            // never could.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(key, _)| key.trim())
                .filter(|key| {
                    !key.is_empty()
                        && key.len() <= 64
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                })
                .map(|key| format!(" (`{key}`)"))
                .unwrap_or_default();
            format!("line {line}{key}, column {column}: ")
        })
        .unwrap_or_default();
    format!(
        "{}: {at}{}",
        file.display(),
        without_values(error.message())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_keep_the_kind_and_the_place_but_not_the_value() {
        for (message, kept) in [
            (
                "invalid type: string \"LEAK-19850101-1234\", expected a boolean at line 1 column 108",
                "invalid type: string, expected a boolean at line 1 column 108",
            ),
            (
                "invalid value: integer `4711`, expected u8",
                "invalid value: integer, expected u8",
            ),
            (
                "unknown variant `LEAK, expected x`, expected `eaccounting` or `economic`",
                "unknown variant, expected `eaccounting` or `economic`",
            ),
            (
                "invalid type: floating point `1.5`, expected a string",
                "invalid type: floating point, expected a string",
            ),
            (
                "unknown field `page_sise`, expected one of `base_url`",
                "unknown field `page_sise`, expected one of `base_url`",
            ),
        ] {
            assert_eq!(without_values(message), kept);
        }
    }

    #[test]
    fn toml_errors_name_the_line_and_never_quote_it() {
        let text = "tenant = \"a\"\n{\"refresh_token\": \"LEAK-TOKEN\"}\n";
        let error = toml::from_str::<toml::Table>(text).unwrap_err();
        let shown = toml_error(std::path::Path::new("x.toml"), text, &error);
        assert!(shown.starts_with("x.toml: line 2, column 1: "), "{shown}");
        assert!(!shown.contains("LEAK"), "{shown}");
    }
}
