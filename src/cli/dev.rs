//! `ossa dev ...`: developer tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ossa_engine::random_checkpoint::{Preset, RandomCheckpointOptions, write_random_checkpoint};

#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Write a random checkpoint with the exact shapes, dtypes and tensor names of a released
    /// model (MXFP4 experts), to measure loading, memory and speed without a download.
    RandomCheckpoint(RandomCheckpointArgs),
}

#[derive(Debug, clap::Args)]
pub struct RandomCheckpointArgs {
    /// gpt-oss-20b or gpt-oss-120b.
    #[arg(long)]
    preset: Preset,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store experts as bf16 [E, in, out] instead of packed MXFP4 (about 3x larger).
    #[arg(long)]
    bf16_experts: bool,
    /// Largest shard in bytes.
    #[arg(long, default_value_t = 5_000_000_000)]
    max_shard_bytes: u64,
}

pub fn run(cmd: DevCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCommand::RandomCheckpoint(args) => random_checkpoint(args),
    }
}

fn random_checkpoint(args: RandomCheckpointArgs) -> anyhow::Result<ExitCode> {
    let options = RandomCheckpointOptions {
        seed: args.seed,
        mxfp4_experts: !args.bf16_experts,
        max_shard_bytes: args.max_shard_bytes.max(1),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = write_random_checkpoint(
        &args.preset.config_json(),
        &args.out,
        &options,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .with_context(|| format!("writing a random checkpoint to {}", args.out.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {} tensors, {:.2} GB of weights, to {}",
        summary.tensors,
        summary.total_bytes as f64 / 1e9,
        args.out.display()
    );
    for file in &summary.files {
        println!("  {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
