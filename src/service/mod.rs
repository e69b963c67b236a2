//! `serve`: one process for many tenants. Reads a folder of tenant configs (the same
//! files `sync` takes), runs each on its `[schedule]` through `app::Connector`, and
//! answers health, metrics and run-now requests over HTTP.
//!
//! Architecture invariant: a tenant's journal is open only while a run of it is under
//! way (sled keeps a thread per open database, and a CLI command on the tenant must be
//! able to take the journal's lock between runs). The table of tenants is one `Mutex`,
//! never held across an `.await`.

pub mod alerts;
pub mod config;
pub mod console;
mod http;
pub mod metrics;
mod scheduler;
pub mod shard;
pub mod tenants;
pub mod tls;

pub use config::ServiceConfig;
pub use scheduler::{serve, serve_with};
