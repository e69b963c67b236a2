//! `serve`: the tenants folder on schedules, with health, metrics and run-now over HTTP;
//! `shard-of`: which shard of `serve --shard` runs a tenant.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{ServeArgs, ShardOfArgs};
use crate::error::{exit, Error, Result};
use crate::service::shard::{self, Shard, MOST_SHARDS};
use crate::service::tenants::valid_id;
use crate::service::{serve as run_service, ServiceConfig};

pub async fn serve(service_file: &Path, args: &ServeArgs) -> Result<ExitCode> {
    let mut config = ServiceConfig::load(service_file)?;
    if let Some(text) = &args.shard {
        let shard = Shard::parse(text, shard::hostname)
            .map_err(|why| Error::config(format!("--shard: {why}")))?;
        config.shard = Some(shard);
    }
    run_service(config).await?;
    Ok(ExitCode::from(exit::OK))
}

pub fn shard_of(args: &ShardOfArgs) -> Result<ExitCode> {
    if !valid_id(&args.tenant) {
        return Err(Error::config(
            "TENANT: a tenant id is letters, digits, '-' or '_' (at most 64): its file's \
             name without .toml"
                .to_string(),
        ));
    }
    if !(1..=MOST_SHARDS).contains(&args.count) {
        return Err(Error::config(format!("--count: use 1 to {MOST_SHARDS}")));
    }
    let index = shard::shard_of(&args.tenant, args.count);
    let text = match args.json {
        true => serde_json::json!({ "tenant": args.tenant, "count": args.count, "shard": index })
            .to_string(),
        false => index.to_string(),
    };
    println!("{text}");
    Ok(ExitCode::from(exit::OK))
}
