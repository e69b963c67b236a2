//! Source adapters: read customers from Opter, keeping only the permitted fields.
//!
//! Architecture invariant: an adapter's wire types name only the fields the connector
//! may use; every other field of Opter's answer is skipped by the parser, never stored.
pub mod opter_api;

pub use opter_api::OpterApiSource;
