//! The register sinks against the simulated registers and Visma's published specs.

#[path = "../common/mod.rs"]
mod common;

mod eaccounting_spec;
mod economic_sandbox;
mod economic_spec;
mod visma_net_sandbox;
