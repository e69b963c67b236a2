//! opter-visma-sync: keeps a Visma customer register in step with Opter, sending only
//! customer name, contact person name and contact email. See ARCHITECTURE.md.
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod hash;
pub mod journal;
pub mod mapping;
pub mod output;
pub mod privacy;
pub mod record;
pub mod retry;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod service;
pub mod sink;
pub mod source;
pub mod support;
pub mod sync;
