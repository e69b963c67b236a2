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
