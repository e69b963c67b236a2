//! Sinks: write permitted customers into a Visma customer register.
//!
//! Architecture invariant: a sink only ever receives a `MappedRecord`, which the mapping
//! layer built from permitted fields and constants; it has no way to reach Opter data.
pub mod auth;
pub mod budget;
pub mod counters;
pub mod eaccounting;
pub mod economic;
pub mod http;
pub mod probe;
pub mod visma_net;

pub mod register;

pub use eaccounting::EAccountingSink;
pub use economic::EconomicSink;
pub use register::{Register, SinkContext, SinkSettings};
pub use visma_net::VismaNetSink;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::Error;
use crate::mapping::MappedRecord;

/// Every register, in the order the journal's stored name tables were frozen in: a new
/// register is appended.
pub static REGISTERS: &[&Register] = &[
    &eaccounting::REGISTER,
    &visma_net::REGISTER,
    &economic::REGISTER,
];

/// Why a write did not happen, in the classes the engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The register refused the content (400/404/409...): recorded, retried next run.
    #[error("rejected by the register (HTTP {status}{}): {message}", code.as_deref().map(|c| format!(", error {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Transient trouble that outlasted the retry budget: recorded, retried next run.
    #[error("failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Failed {
        status: Option<u16>,
        message: String,
    },
    /// Creating failed because the register already has a customer with this number
    /// (a lost journal, or a create whose answer never arrived): find it and adopt it.
    #[error("the register already has a customer with this number (HTTP {status}): {message}")]
    NumberTaken { status: u16, message: String },
    /// Transient trouble after the register refused the write itself, so nothing of it
    /// landed: recorded as failed, retried next run, and its intent closed.
    #[error("failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    NotSent {
        status: Option<u16>,
        message: String,
    },
    /// Not written: the register holds another customer under this number (held as a
    /// conflict by the run, with this reason, until a person decides).
    #[error("{0}")]
    Conflict(String),
    /// The register refused the setup itself (wrong tenant, unknown client): a person
    /// must fix the configuration; nothing is sent until then.
    #[error("{0}")]
    Config(String),
    /// The stored authorization is gone; nothing more can be sent until a person logs in.
    #[error("{0}")]
    NeedsLogin(String),
    /// Nothing more can be sent until the setup is repaired (client refused, disk full).
    #[error("{0}")]
    Fatal(String),
    /// The daily call budget is used up: nothing more is sent in this run.
    #[error("{0}")]
    Budget(String),
}

impl SinkError {
    /// Whether nothing more can be sent in this run: a person must act first.
    pub fn stops_the_run(&self) -> bool {
        matches!(
            self,
            SinkError::NeedsLogin(_)
                | SinkError::Config(_)
                | SinkError::Fatal(_)
                | SinkError::Budget(_)
        )
    }
}

/// The one way a sink's error becomes the command's error (and its exit code).
impl From<SinkError> for Error {
    fn from(e: SinkError) -> Error {
        match e {
            SinkError::NeedsLogin(m) => Error::NeedsLogin(m),
            SinkError::Config(m) => Error::Config(m),
            SinkError::Budget(m) => Error::Budget(m),
            other => Error::Other(anyhow::anyhow!("{other}")),
        }
    }
}

/// A successful write: the register's id of the customer and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub remote_id: String,
    pub status: u16,
}

/// A customer as the register holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The register's id: what `get`, `update` and `erase` take.
    pub id: String,
    /// The register's values for the fields a mapping can name, keyed by the mapping's
    /// register field names (dotted for nested ones, e.g. `mainContact.name`): compared
    /// with what we would send, so an adopted customer is only updated if it differs.
    pub fields: Value,
    /// The register's own record(s) as served, for a data subject's access export.
    pub record: Value,
}

/// One page of the register's customer list, for the register index.
#[derive(Debug, Clone, Default)]
pub struct CustomerPage {
    /// Each customer's number (the mapping's number field) and what the list shows of
    /// it. A list entry may leave out part of a customer (e-conomic's contact person):
    /// `Sink::complete` fills it in.
    pub customers: Vec<(String, Remote)>,
    /// Whether the register says more pages follow.
    pub more: bool,
}

/// What `erase` did to the customer in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    Deleted {
        status: u16,
    },
    /// The register refuses to delete it (it has transactions, or has no delete):
    /// personal fields were overwritten and the customer deactivated.
    Anonymised {
        status: u16,
    },
    NotPresent,
}

/// What kind of write is about to start, for `Sink::admit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Create,
    Update,
}

/// A write's admission: what it holds (reserved calls) until it ends.
#[derive(Default)]
pub struct Admission {
    /// Released (dropped) when the write ends.
    _held: Option<Box<dyn Send + Sync>>,
}

impl Admission {
    pub fn holding(what: impl Send + Sync + 'static) -> Admission {
        Admission {
            _held: Some(Box::new(what)),
        }
    }
}

/// The name a customer gets when its personal fields are overwritten.
pub const ERASED_NAME: &str = "Erased customer";

/// The register a tenant syncs to. Every register keeps the same contract:
/// - `create` answers `NumberTaken` when the number is in use, never a second customer;
/// - `update` answers `Rejected { status: 404 }` when the customer is gone;
/// - `find_by_number` says "cannot tell" (`Err`) rather than "not there" when the
///   register ignored the filter;
/// - `key` names this exact write (the journal's intent key): a register that honours
///   idempotency keys gets it, so a repeated request is answered, not redone.
pub trait Sink: Send + Sync {
    /// The register this sink writes to.
    fn register(&self) -> &'static Register;

    /// The register's customer with this number, if any. `Err` when that cannot be
    /// told for sure (a register that ignored the filter): never guess "not there".
    fn find_by_number<'a>(
        &'a self,
        number: &'a str,
    ) -> BoxFuture<'a, Result<Option<Remote>, SinkError>>;

    /// The register's customer by id; `None` when it is not there.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Remote>, SinkError>>;

    fn create<'a>(
        &'a self,
        record: &'a MappedRecord,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Written, SinkError>>;

    /// Page `page` (from 0) of the register's customers, in the register's order. An
    /// answer that cannot be read is an error, never an empty page.
    fn customers_page<'a>(&'a self, page: u32) -> BoxFuture<'a, Result<CustomerPage, SinkError>>;

    /// A listed customer with what its list entry leaves out, read from the register.
    fn complete<'a>(&'a self, listed: Remote) -> BoxFuture<'a, Result<Remote, SinkError>>;

    fn update<'a>(
        &'a self,
        id: &'a str,
        record: &'a MappedRecord,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Written, SinkError>>;

    /// Removes the customer's personal data from the register: deletes it where the
    /// register allows, else overwrites the personal fields and deactivates it.
    fn erase<'a>(&'a self, id: &'a str, key: &'a str) -> BoxFuture<'a, Result<Erased, SinkError>>;

    /// Asks to start a write of this kind: `Err(SinkError::Budget)` when the calls it
    /// needs would pass the register's call budget, so it must not start (nothing is
    /// sent for it). Registers without a budget admit every write.
    fn admit(&self, _kind: WriteKind) -> Result<Admission, SinkError> {
        Ok(Admission::default())
    }

    /// The register's name (`[sink] kind`), which also keys its journal entries.
    fn name(&self) -> &'static str {
        self.register().name
    }

    /// The product's name, for messages.
    fn product(&self) -> &'static str {
        self.register().rules.product
    }
}

/// Implements `Sink` for a type with inherent async methods of the same names.
macro_rules! sink_by_inherent_methods {
    ($type:ty, $register:expr) => {
        $crate::sink::sink_by_inherent_methods!($type, $register, {});
    };
    ($type:ty, $register:expr, admit) => {
        $crate::sink::sink_by_inherent_methods!($type, $register, {
            fn admit(
                &self,
                kind: $crate::sink::WriteKind,
            ) -> Result<$crate::sink::Admission, $crate::sink::SinkError> {
                <$type>::admit(self, kind)
            }
        });
    };
    ($type:ty, $register:expr, { $($extra:tt)* }) => {
        impl $crate::sink::Sink for $type {
            $($extra)*
            fn register(&self) -> &'static $crate::sink::Register {
                &$register
            }
            fn find_by_number<'a>(
                &'a self,
                number: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                Result<Option<$crate::sink::Remote>, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::find_by_number(self, number))
            }
            fn get<'a>(
                &'a self,
                id: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                Result<Option<$crate::sink::Remote>, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::get(self, id))
            }
            fn create<'a>(
                &'a self,
                record: &'a $crate::mapping::MappedRecord,
                key: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                Result<$crate::sink::Written, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::create(self, record, key))
            }
            fn customers_page<'a>(
                &'a self,
                page: u32,
            ) -> futures::future::BoxFuture<
                'a,
                Result<$crate::sink::CustomerPage, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::customers_page(self, page))
            }
            fn complete<'a>(
                &'a self,
                listed: $crate::sink::Remote,
            ) -> futures::future::BoxFuture<
                'a,
                Result<$crate::sink::Remote, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::complete(self, listed))
            }
            fn update<'a>(
                &'a self,
                id: &'a str,
                record: &'a $crate::mapping::MappedRecord,
                key: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                Result<$crate::sink::Written, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::update(self, id, record, key))
            }
            fn erase<'a>(
                &'a self,
                id: &'a str,
                key: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                Result<$crate::sink::Erased, $crate::sink::SinkError>,
            > {
                Box::pin(<$type>::erase(self, id, key))
            }
        }
    };
}
pub(crate) use sink_by_inherent_methods;
