//! A tenant set up against the sandbox: the config (and the mapping beside it) that
//! points `sync` at the simulators, with the secrets it names.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::Sandbox;
use crate::error::{Error, Result};
use crate::sink::{eaccounting, Register};

/// The bundled Opter customers (also in `fixtures/customers.json`), embedded so that
/// `demo` and `sandbox` work from any folder.
pub const BUNDLED_CUSTOMERS: &str = include_str!("../../fixtures/customers.json");

pub fn bundled_customers() -> Vec<Value> {
    serde_json::from_str(BUNDLED_CUSTOMERS).expect("bundled fixtures are valid JSON")
}

/// Where the tenant's customers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenantSource {
    /// The sandbox's Opter API.
    #[default]
    OpterApi,
    /// Opter's Excel exports in `export/` beside the config.
    OpterExport,
}

/// What the sandbox serves for one register: how a tenant config points at it, and the
/// prefix of its control routes (`/_sandbox/{control}/customers`).
pub struct Simulator {
    pub register: &'static Register,
    pub control: &'static str,
    /// The product's `[sink]` keys for this sandbox, adding the secrets they name.
    pub config_section: fn(&Sandbox, &mut HashMap<String, String>) -> String,
    /// The customers the simulated register holds.
    pub customers: fn(&Sandbox) -> Vec<Value>,
}

/// The simulator of every register, in `REGISTERS` order.
static SIMULATORS: &[&Simulator] = &[
    &super::eaccounting::SIMULATOR,
    &super::visma_net::SIMULATOR,
    &super::economic::SIMULATOR,
];

/// The simulator of `register`.
pub fn simulator(register: &Register) -> &'static Simulator {
    SIMULATORS
        .iter()
        .copied()
        .find(|s| s.register == register)
        .expect("every register has a simulator")
}

/// Writes an eAccounting config (and the mapping beside it) pointing at `sandbox`;
/// returns the secrets it names, by env-var name. See `write_sandbox_config_for`.
pub fn write_sandbox_config(
    file: &Path,
    sandbox: &Sandbox,
    rate_limit: u32,
) -> Result<HashMap<String, String>> {
    write_sandbox_config_for(file, sandbox, &eaccounting::REGISTER, rate_limit)
}

/// Writes a config for `register` (and its bundled mapping beside it) pointing at
/// `sandbox`'s Opter API; returns the secrets it names, by env-var name.
///
/// `rate_limit` is the register's requests per minute (0: none), so the client-side
/// limit in the config matches it.
pub fn write_sandbox_config_for(
    file: &Path,
    sandbox: &Sandbox,
    register: &'static Register,
    rate_limit: u32,
) -> Result<HashMap<String, String>> {
    write_tenant_config(file, sandbox, register, rate_limit, TenantSource::OpterApi)
}

/// Writes a config for `register` reading from `source`; see `write_sandbox_config_for`.
pub fn write_tenant_config(
    file: &Path,
    sandbox: &Sandbox,
    register: &'static Register,
    rate_limit: u32,
    source: TenantSource,
) -> Result<HashMap<String, String>> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mapping_name = format!("{}-mapping.toml", register.name);
    let mapping = dir.join(&mapping_name);
    std::fs::write(&mapping, register.mapping)
        .with_context(|| format!("cannot write {}", mapping.display()))?;
    let mut secrets = HashMap::new();
    let source = match source {
        TenantSource::OpterApi => {
            secrets.insert(
                "OPTER_API_KEY".to_string(),
                sandbox.credentials().opter_api_key,
            );
            format!(
                "kind = \"opter-api\"\nbase_url = \"{}\"\ncustomers_path = \"/Customers\"\n\
                 api_key_env = \"OPTER_API_KEY\"\npage_size = 500",
                sandbox.opter_api_base()
            )
        }
        TenantSource::OpterExport => "kind = \"opter-export\"\n\
                                      customers = \"export/customers.xlsx\"\n\
                                      references = \"export/references.xlsx\""
            .to_string(),
    };
    let product = (simulator(register).config_section)(sandbox, &mut secrets);
    let text = format!(
        r#"# opter-visma-sync config for the local sandbox at {base}
tenant = "Sandbox Åkeri AB"

[source]
{source}

[sink]
kind = "{kind}"
{product}
mapping = "{mapping_name}"
concurrency = 4
requests_per_minute = {requests_per_minute}

[journal]
path = "journal"
"#,
        base = sandbox.base_url(),
        kind = register.name,
        requests_per_minute = if rate_limit == 0 {
            1_000_000
        } else {
            rate_limit
        },
    );
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(secrets)
}

/// Reads a tenant's customers file for `sandbox --fixtures`.
pub fn customers_file(dir: &Path) -> Result<Vec<Value>> {
    let file = dir.join("customers.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::config(format!("--fixtures: cannot read {}: {e}", file.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::config(format!(
            "--fixtures: {} is not a JSON array of Opter customers: {e}",
            file.display()
        ))
    })
}

/// The id of the `i`th (from 0) tenant of a folder `write_service_folder` writes, and
/// the name its sandbox is served under beside the others.
pub fn tenant_id(i: usize) -> String {
    format!("carrier-{}", i + 1)
}

/// Writes a folder `serve` can run: `service.toml`, one tenant config per sandbox in
/// `tenants/` (ids `carrier-1`, `carrier-2`, ...), and each tenant's mapping and
/// journal under `homes/ID/`. Each tenant's secrets get its id as a prefix
/// (`CARRIER_1_OPTER_API_KEY`), since one process holds them all; returns them.
pub fn write_service_folder(
    dir: &Path,
    tenants: &[(&Sandbox, &'static Register)],
    every: &str,
    rate_limit: u32,
) -> Result<HashMap<String, String>> {
    let tenants_dir = dir.join("tenants");
    std::fs::create_dir_all(&tenants_dir)
        .with_context(|| format!("cannot create {}", tenants_dir.display()))?;
    let service = dir.join("service.toml");
    std::fs::write(
        &service,
        format!(
            "# opter-visma-sync serve: {} sandbox tenants\n[service]\nlisten = \"127.0.0.1:8787\"\n\
             tenants = \"tenants\"\nrescan_secs = 5\nbackoff_secs = 5\nmax_backoff_secs = 60\n",
            tenants.len()
        ),
    )
    .with_context(|| format!("cannot write {}", service.display()))?;
    let mut all = HashMap::new();
    for (i, (sandbox, register)) in tenants.iter().enumerate() {
        let id = tenant_id(i);
        let prefix = id.to_ascii_uppercase().replace('-', "_");
        let home = dir.join("homes").join(&id);
        let staged = home.join("sync.toml");
        let secrets = write_sandbox_config_for(&staged, sandbox, register, rate_limit)?;
        let mut text = std::fs::read_to_string(&staged)
            .with_context(|| format!("cannot read {}", staged.display()))?;
        std::fs::remove_file(&staged)
            .with_context(|| format!("cannot remove {}", staged.display()))?;
        for (name, value) in secrets {
            let renamed = format!("{prefix}_{name}");
            text = text.replace(&format!("\"{name}\""), &format!("\"{renamed}\""));
            all.insert(renamed, value);
        }
        let mapping = format!("{}-mapping.toml", register.name);
        // Relative paths in a tenant file are relative to it.
        text = text
            .replace(
                &format!("mapping = \"{mapping}\""),
                &format!("mapping = \"../homes/{id}/{mapping}\""),
            )
            .replace(
                "path = \"journal\"",
                &format!("path = \"../homes/{id}/journal\""),
            );
        text.push_str(&format!("\n[schedule]\nevery = \"{every}\"\n"));
        let file = tenants_dir.join(format!("{id}.toml"));
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(all)
}
