//! `service.toml`: where `serve` listens, the folder of tenant configs, and how it
//! schedules them. Errors name the file and key, never the value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::alerts::{AlertsConfig, RawAlerts};
use super::console::{ConsoleConfig, RawConsole};
use super::shard::Shard;
use crate::config::values::{Env, ProcessEnv};
use crate::error::{toml_error, Error, Result};

/// Loopback, so that nothing outside the machine sees the endpoints unless asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The largest `service.toml` or tenant config read.
pub const MOST_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub file: PathBuf,
    pub listen: SocketAddr,
    /// The folder whose `*.toml` files are the tenants, one each.
    pub tenants: PathBuf,
    /// Runs at once, across all tenants.
    pub workers: usize,
    /// How long SIGTERM waits for runs under way.
    pub shutdown_grace: Duration,
    /// How often the tenants folder is read again (SIGHUP reads it at once).
    pub rescan: Duration,
    /// The wait after a tenant's first failed run; it doubles with each failure after.
    pub backoff: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    pub alerts: AlertsConfig,
    /// How often a tenant's run ends with `journal verify` (its first run after the
    /// service starts does too); `None`: never.
    pub verify_every: Option<Duration>,
    /// Only the tenants of this shard run here (`serve --shard`); all when `None`.
    pub shard: Option<Shard>,
    /// The web console, when `[console]` is in the file.
    pub console: Option<ConsoleConfig>,
    /// TLS of its own, when `tls_cert` and `tls_key` are set.
    pub tls: Option<super::tls::Tls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    service: RawService,
    #[serde(default)]
    alerts: RawAlerts,
    console: Option<RawConsole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default = "default_listen")]
    listen: String,
    tenants: PathBuf,
    #[serde(default = "default_workers")]
    workers: u64,
    #[serde(default = "default_shutdown_grace_secs")]
    shutdown_grace_secs: u64,
    #[serde(default = "default_rescan_secs")]
    rescan_secs: u64,
    #[serde(default = "default_backoff_secs")]
    backoff_secs: u64,
    #[serde(default = "default_max_backoff_secs")]
    max_backoff_secs: u64,
    #[serde(default = "default_verify_every_secs")]
    verify_every_secs: u64,
    /// PEM certificate chain and private key, relative to this file: serve HTTPS.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_workers() -> u64 {
    4
}
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_rescan_secs() -> u64 {
    10
}
fn default_backoff_secs() -> u64 {
    30
}
fn default_verify_every_secs() -> u64 {
    86_400
}
fn default_max_backoff_secs() -> u64 {
    3600
}

impl ServiceConfig {
    pub fn load(file: &Path) -> Result<ServiceConfig> {
        let size = std::fs::metadata(file)
            .map_err(|e| {
                Error::config(format!(
                    "cannot read service config {}: {e}. Pass --config service.toml.",
                    file.display()
                ))
            })?
            .len();
        if size > MOST_FILE_BYTES {
            return Err(Error::config(format!(
                "{}: larger than {MOST_FILE_BYTES} bytes; is it the service config?",
                file.display()
            )));
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::config(format!(
                "cannot read service config {}: {e}",
                file.display()
            ))
        })?;
        Self::parse(&text, file, &ProcessEnv)
    }

    /// `env` gives the secrets `[alerts]` names.
    pub fn parse(text: &str, file: &Path, env: &dyn Env) -> Result<ServiceConfig> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| Error::config(toml_error(file, text, &e)))?;
        let alerts = raw.alerts.resolve(file, env)?;
        let console = raw.console;
        let raw = raw.service;
        let bad = |key: &str, why: &str| {
            Error::config(format!("{}: [service] {key}: {why}", file.display()))
        };
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            bad(
                "listen",
                "is not an address and port such as \"127.0.0.1:8787\"",
            )
        })?;
        let range =
            |key: &str, value: u64, least: u64, most: u64| match (least..=most).contains(&value) {
                true => Ok(value),
                false => Err(bad(key, &format!("is {value}; use {least} to {most}"))),
            };
        let workers = range("workers", raw.workers, 1, 64)?;
        let grace = range("shutdown_grace_secs", raw.shutdown_grace_secs, 1, 3600)?;
        let rescan = range("rescan_secs", raw.rescan_secs, 1, 3600)?;
        let backoff = range("backoff_secs", raw.backoff_secs, 1, 86_400)?;
        let max_backoff = range("max_backoff_secs", raw.max_backoff_secs, backoff, 604_800)?;
        // 0 turns it off; otherwise at least a minute, at most a year.
        let verify_every = match raw.verify_every_secs {
            0 => None,
            secs => Some(Duration::from_secs(range(
                "verify_every_secs",
                secs,
                60,
                31_536_000,
            )?)),
        };
        let base = file.parent().unwrap_or(Path::new("."));
        let tls = match (raw.tls_cert, raw.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                super::tls::Tls::load(base.join(cert), base.join(key))
                    .map_err(|why| Error::config(format!("{}: {why}", file.display())))?,
            ),
            (Some(_), None) => return Err(bad("tls_key", "is needed with tls_cert")),
            (None, Some(_)) => return Err(bad("tls_cert", "is needed with tls_key")),
        };
        let console = console
            .map(|c| c.resolve(file, listen, tls.is_some(), env))
            .transpose()?;
        let tenants = base.join(&raw.tenants);
        if !tenants.is_dir() {
            return Err(bad(
                "tenants",
                &format!("{} is not a folder", tenants.display()),
            ));
        }
        Ok(ServiceConfig {
            file: file.to_path_buf(),
            listen,
            tenants,
            workers: workers as usize,
            shutdown_grace: Duration::from_secs(grace),
            rescan: Duration::from_secs(rescan),
            backoff: Duration::from_secs(backoff),
            max_backoff: Duration::from_secs(max_backoff),
            alerts,
            verify_every,
            shard: None,
            console,
            tls,
        })
    }

    /// The wait after `failures` failed runs in a row: doubling, capped.
    pub fn backoff_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServiceConfig> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tenants")).unwrap();
        let env = std::collections::HashMap::new();
        ServiceConfig::parse(text, &dir.path().join("service.toml"), &env)
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let c = parse("[service]\ntenants = \"tenants\"\n").unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.workers, 4);
        assert_eq!(c.verify_every, Some(Duration::from_secs(86_400)));
        let never = parse("[service]\ntenants = \"tenants\"\nverify_every_secs = 0\n").unwrap();
        assert_eq!(never.verify_every, None);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c =
            parse("[service]\ntenants = \"tenants\"\nbackoff_secs = 2\nmax_backoff_secs = 10\n")
                .unwrap();
        let waits: Vec<u64> = (1..=5).map(|n| c.backoff_after(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
        assert_eq!(c.backoff_after(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        for (text, key) in [
            (
                "[service]\ntenants = \"tenants\"\nlisten = \"LEAK\"",
                "[service] listen",
            ),
            (
                "[service]\ntenants = \"tenants\"\nworkers = 0",
                "[service] workers",
            ),
            (
                "[service]\ntenants = \"tenants\"\nshutdown_grace_secs = 99999",
                "[service] shutdown_grace_secs",
            ),
            (
                "[service]\ntenants = \"tenants\"\nbackoff_secs = 60\nmax_backoff_secs = 10",
                "[service] max_backoff_secs",
            ),
            (
                "[service]\ntenants = \"tenants\"\nverify_every_secs = 59",
                "[service] verify_every_secs",
            ),
            ("[service]\ntenants = \"nowhere\"", "[service] tenants"),
            ("[service]\ntenants = \"tenants\"\nworkers = -1", "workers"),
            ("[service]\nlisten = \"127.0.0.1:1\"", "tenants"),
            ("[servce]\n", "servce"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, Error::Config(_)));
            let e = e.to_string();
            assert!(e.contains(key) && e.contains("service.toml"), "{text}: {e}");
            assert!(!e.contains("LEAK"), "{e}");
        }
    }
}
