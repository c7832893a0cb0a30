//! `ossa generate` and `ossa bench`: owned by the engine work (issue 3).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run_generate(_args: GenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ossa generate` is not built yet")
}

pub fn run_bench(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ossa bench` is not built yet")
}
