//! Checks of single config values, and where secrets come from. Kept apart from the
//! config's shape so each register's settings can use them.

use std::path::Path;

use secrecy::SecretString;

use crate::error::{Error, Result};

/// Where secrets come from: the process environment, or a map in tests and the demo.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads the secret named by `key` (a config key of `file` holding an env-var name).
pub fn secret(file: &Path, env: &dyn Env, key: &str, var: &str) -> Result<SecretString> {
    match env.var(var) {
        // A line break pasted along with a secret would break every request it is sent in.
        Some(v) if v.chars().any(char::is_control) => Err(Error::config(format!(
            "environment variable {var} ({}: {key} names it) holds a control character, \
             such as a line break copied along with it; set it to the value alone",
            file.display()
        ))),
        Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => Err(Error::config(format!(
            "environment variable {var} is not set ({}: {key} names it). Export it \
             before running, e.g. `export {var}=...`.",
            file.display()
        ))),
    }
}

pub fn check_url(value: &str) -> std::result::Result<(), String> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(_) => Err("is not an http(s) URL".into()),
        Err(e) => Err(format!("is not a URL ({e})")),
    }
}

pub fn check_env_name(value: &str) -> std::result::Result<(), String> {
    let ok = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !value.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(
            "is not an environment variable name; put the NAME of the variable \
             that holds the secret here (e.g. \"VISMA_CLIENT_SECRET\"), never the secret itself"
                .into(),
        )
    }
}

/// A value that must not be blank.
pub fn check_not_empty(value: &str) -> std::result::Result<(), String> {
    match value.trim().is_empty() {
        true => Err("must not be empty".into()),
        false => Ok(()),
    }
}
