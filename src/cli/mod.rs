//! Command-line definitions and dispatch. Each subcommand lives in its own module and owns its
//! flags; this file only wires them together.

mod chat;
mod dev;
mod eval;
mod generate;
mod models;
mod prompt;
mod python;
mod run;
mod serve;
mod setup;
mod tool;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ossa",
    version,
    about = "Run OpenAI's gpt-oss as a tool-using agent on your own machine",
    after_help = "Without a command: `ossa PROMPT` answers one prompt as `ossa run PROMPT` does; \
                  plain `ossa` (with chat's options) is `ossa chat`.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do; without one, `ossa chat`, or `ossa run PROMPT` when a prompt is given.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A prompt to answer in one turn, as `ossa run PROMPT` (its words may come unquoted).
    #[arg(value_name = "PROMPT", trailing_var_arg = true)]
    prompt: Vec<String>,

    #[command(flatten)]
    chat: chat::ChatArgs,
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

/// The subcommand a one-word prompt probably meant (`ossa rn`, `ossa pyhton`): close to a
/// subcommand's name, as a typo is, so it is refused rather than sent to the model.
fn mistyped_command(prompt: &str) -> Option<String> {
    if prompt.is_empty() || !prompt.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return None;
    }
    let word = prompt.to_ascii_lowercase();
    let allowed = if word.len() >= 6 { 2 } else { 1 };
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .find(|name| typo_distance(&word, name) <= allowed)
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment).
fn typo_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
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
        if cli.prompt.is_empty() {
            return chat::run(cli.chat);
        }
        let prompt = cli.prompt.join(" ");
        if let Some(command) = mistyped_command(&prompt) {
            let message = if command == prompt {
                // `ossa --model X list`: chat's options came before a command.
                format!(
                    "'{command}' is a command: its options go after it (ossa {command} \
                     [OPTIONS])\n\n  tip: to send it to the model as a prompt: ossa run \
                     {prompt}"
                )
            } else {
                format!(
                    "unrecognized subcommand '{prompt}'\n\n  tip: a similar subcommand \
                     exists: '{command}'\n  tip: to send it to the model as a prompt: ossa \
                     run {prompt}"
                )
            };
            Cli::command()
                .error(clap::error::ErrorKind::InvalidSubcommand, message)
                .exit();
        }
        if let Some(flag) = cli.chat.chat_only_flag() {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{flag} applies to chat, not to a one-turn prompt"),
                )
                .exit();
        }
        return run::run(run::RunArgs::prompt(prompt, cli.chat.into_config())?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_of_subcommands_are_told_apart_from_prompts() {
        for (typo, meant) in [
            ("rn", "run"),
            ("lst", "list"),
            ("pyhton", "python"),
            ("Chat", "chat"),
            ("servr", "serve"),
            ("bencch", "bench"),
        ] {
            assert_eq!(mistyped_command(typo).as_deref(), Some(meant), "{typo}");
        }
        for prompt in [
            "hello",
            "What is 2+2?",
            "summarize",
            "why",
            "-",
            "run the tests",
        ] {
            assert_eq!(mistyped_command(prompt), None, "{prompt}");
        }
    }

    #[test]
    fn a_prompt_or_chat_flags_without_a_command() {
        let cli = Cli::try_parse_from(["ossa", "What", "is", "2+2?"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.prompt.join(" "), "What is 2+2?");
        let cli = Cli::try_parse_from(["ossa", "--model", "gpt-oss:20b"]).unwrap();
        assert!(cli.command.is_none() && cli.prompt.is_empty());
        let cli = Cli::try_parse_from(["ossa", "run", "x"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run(_))));
        // Chat's flags belong before a prompt or to `ossa chat`, never to another command.
        let cli = Cli::try_parse_from(["ossa", "--model", "m", "list"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            mistyped_command(&cli.prompt.join(" ")).as_deref(),
            Some("list")
        );
        assert!(Cli::try_parse_from(["ossa", "--no-such-flag"]).is_err());
    }
}
