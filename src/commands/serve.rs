//! `serve`: the tenants folder on schedules, with health, metrics and run-now over HTTP.

use std::path::Path;
use std::process::ExitCode;

use crate::error::{exit, Result};
use crate::service::{serve as run_service, ServiceConfig};

pub async fn serve(service_file: &Path) -> Result<ExitCode> {
    let config = ServiceConfig::load(service_file)?;
    run_service(config).await?;
    Ok(ExitCode::from(exit::OK))
}
