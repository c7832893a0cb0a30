//! Command-line definitions and dispatch. Each subcommand lives in its own module and owns its
//! flags; this file only wires them together.

mod chat;
mod dev;
mod eval;
mod generate;
mod models;
mod python;
mod run;
mod serve;
mod setup;
mod tool;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ossa",
    version,
    about = "Run OpenAI's gpt-oss as a tool-using agent on your own machine"
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do; without one, `ossa chat`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with the model in an interactive prompt (the default command).
    Chat(chat::ChatArgs),
    /// Generate raw tokens from a model (a look inside the engine).
    Generate(generate::GenerateArgs),
    /// Measure load time, prefill and decode speed, and peak memory.
    Bench(generate::BenchArgs),
    /// Run one task (or a batch) to its final answer, without a prompt.
    Run(run::RunArgs),
    /// Serve the OpenAI API (Responses, Chat Completions, Completions) on the local model.
    Serve(serve::ServeArgs),
    /// Run Python inside the WebAssembly sandbox.
    Python(python::PythonArgs),
    /// Download a model (gpt-oss:20b, gpt-oss:120b, a Hugging Face id) ahead of first use;
    /// run again to resume.
    Pull(models::PullArgs),
    /// List the downloaded models: name, size on disk, location.
    List(models::ListArgs),
    /// Remove a downloaded model's files.
    Rm(models::RmArgs),
    /// Show a model's configuration: layers, experts, context, quantization, size, location.
    Show(models::ShowArgs),
    /// Fetch and prepare everything ossa needs (the Python runtime).
    Setup(setup::SetupArgs),
    /// Invoke a tool directly and print what the model would receive.
    Tool(tool::ToolArgs),
    /// Measure a fast dtype's accuracy against f32 on a text (KL divergence, top-1 agreement).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Developer tools.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        return chat::run(chat::ChatArgs::default());
    };
    match command {
        Command::Chat(args) => chat::run(args),
        Command::Generate(args) => generate::run_generate(args),
        Command::Bench(args) => generate::run_bench(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Python(args) => python::run(args),
        Command::Pull(args) => models::pull(args),
        Command::List(args) => models::list(args),
        Command::Rm(args) => models::rm(args),
        Command::Show(args) => models::show(args),
        Command::Setup(args) => setup::run(args),
        Command::Dev(cmd) => dev::run(cmd),
        Command::Eval(cmd) => eval::run(cmd),
        Command::Tool(args) => tool::run(args),
    }
}
