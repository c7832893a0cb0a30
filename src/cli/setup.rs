//! `ossa setup`: owned by the sandbox work (issue 4).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SetupArgs {}

pub fn run(_args: SetupArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ossa setup` is not built yet")
}
