//! `ossa dev ...`: developer tools, owned by the engine work (issue 3).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Write a random checkpoint with the exact shapes of a real model.
    RandomCheckpoint {},
}

pub fn run(_cmd: DevCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ossa dev` is not built yet")
}
