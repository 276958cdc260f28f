//! `account-sync demo`: everything in one process.

use std::process::ExitCode;

use crate::shutdown::Shutdown;

/// Demo settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Events to produce.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
}

/// Runs the demo.
pub async fn run(_args: DemoArgs, _shutdown: Shutdown) -> Result<ExitCode, String> {
    Err("not yet".into())
}
