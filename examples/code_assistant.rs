//! A code-execution assistant: the model runs Python in the sandbox and edits files with
//! `apply_patch`, both inside one workspace folder, the only host files it can see or change
//! (Python sees it as `/mnt/data`).
//!
//! ```sh
//! mkdir -p work && cp data.csv work/
//! cargo run --release --example code_assistant -- --workspace work "Which column of data.csv has the largest mean? Use python."
//! ```

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ossa::agent::harmony::ReasoningEffort;
use ossa::agent::{Agent, AgentConfig, CancellationToken, ConversationSettings};
use ossa::sandbox::{Sandbox, SandboxConfig, SessionOptions};
use ossa::tools::apply_patch::{self, ApplyPatch};
use ossa::tools::python::PythonTool;
use ossa::tools::{FunctionTools, Tool};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    /// The folder the model may read and change (created if missing).
    #[arg(long, default_value = "workspace")]
    workspace: PathBuf,
    /// Only read and run: no `apply_patch`, so files change only through Python.
    #[arg(long)]
    no_patch: bool,
    /// The conversation's date, YYYY-MM-DD (default: none given to the model).
    #[arg(long)]
    date: Option<String>,
    /// What to do.
    task: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.workspace)?;
    let workspace = args.workspace.canonicalize()?;
    let (backend, encoding) = args.model.backend()?;

    // The Python runtime is fetched and compiled on first use (minutes, with progress lines).
    let sandbox = Sandbox::open_async(SandboxConfig::from_env()?).await?;
    let python = PythonTool::new(
        sandbox,
        SessionOptions {
            mount: Some(workspace.clone()),
            ..SessionOptions::default()
        },
    );
    let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(python)];
    if !args.no_patch {
        let mut functions = FunctionTools::new();
        functions.add(ApplyPatch::new(&workspace)?)?;
        tools.push(Arc::new(functions));
    }

    let agent = Agent::new(backend, encoding, tools, AgentConfig::default());
    let settings = ConversationSettings {
        reasoning_effort: ReasoningEffort::Low,
        conversation_start_date: args.date,
        // How to write a patch: gpt-oss learns it from these instructions.
        developer_instructions: (!args.no_patch).then(|| apply_patch::INSTRUCTIONS.to_string()),
        ..ConversationSettings::default()
    };
    let mut chat = agent.chat(&settings);
    let report = chat
        .send(&args.task, &CancellationToken::new(), &mut common::show)
        .await?;
    common::finish(&report)
}
