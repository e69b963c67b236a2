//! End to end: the real binary and the whole connector against the sandbox over
//! loopback HTTP.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod check;
mod cli;
mod console;
mod console_api;
mod console_browser;
mod console_sso;
mod console_tls;
mod exactly_once;
mod export_source;
mod fidelity;
mod first_impressions;
mod hostile_opter;
mod incremental;
mod journal_fixture;
mod journal_safety;
mod messages;
mod oauth;
mod onboarding;
mod privacy;
mod serve;
mod sinks;
mod support;
mod sync;
