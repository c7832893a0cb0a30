//! `ossa python`: owned by the sandbox work (issue 4).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct PythonArgs {}

pub fn run(_args: PythonArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ossa python` is not built yet")
}
