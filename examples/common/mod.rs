#![allow(dead_code)] // each example uses part of this module
//! What the examples share: where tokens come from (the local model, or a server driven
//! token-exactly), and how a turn is shown.

use std::io::Write;
use std::sync::Arc;

use clap::Args;
use ossa::agent::harmony::HarmonyEncoding;
use ossa::agent::remote::{self, RemoteOptions};
use ossa::agent::{AgentEvent, Backend, EngineBackend, TurnOutcome, TurnReport};
use ossa::engine::{DType, Engine, LoadOptions, hub};

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A model name (`gpt-oss:20b`, `gpt-oss:120b`), a Hugging Face id or a model directory;
    /// a name is downloaded on first use (`ossa pull` does it ahead of time).
    #[arg(long, default_value = "gpt-oss:20b")]
    pub model: String,
    /// Precision of the local model: q8 (fast), bf16 or f32.
    #[arg(long, default_value = "q8")]
    pub dtype: DType,
    /// Generate on a server's Completions API instead (vLLM, llama.cpp's llama-server),
    /// e.g. `http://127.0.0.1:8000/v1`.
    #[arg(long)]
    pub url: Option<String>,
    /// The model name on that server (default: the first it lists).
    #[arg(long)]
    pub remote_model: Option<String>,
}

impl ModelArgs {
    /// The source of tokens and the harmony encoding that matches its tokenizer.
    pub fn backend(&self) -> anyhow::Result<(Arc<dyn Backend>, HarmonyEncoding)> {
        if let Some(url) = &self.url {
            let encoding = HarmonyEncoding::gpt_oss()?;
            let mut options = RemoteOptions::new(url.clone());
            options.model = self.remote_model.clone();
            let backend = remote::connect(&options, encoding.tokenizer().clone())?;
            return Ok((backend, encoding));
        }
        let dir = hub::resolve_model(&self.model, None)?;
        eprintln!("loading {} …", dir.display());
        let options = LoadOptions {
            dtype: self.dtype,
            ..LoadOptions::default()
        };
        let engine = Engine::load(&dir, &options)?;
        let encoding = match engine.tokenizer() {
            Some(tokenizer) => HarmonyEncoding::new(tokenizer.clone())?,
            None => HarmonyEncoding::gpt_oss()?,
        };
        Ok((Arc::new(EngineBackend::new(engine)), encoding))
    }
}

/// Shows a turn as it runs: reasoning dimmed on stderr, tool calls and results on stderr, the
/// answer on stdout.
pub fn show(event: AgentEvent) {
    match event {
        AgentEvent::ReasoningDelta(text) => eprint!("{text}"),
        AgentEvent::FinalDelta(text) => {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        AgentEvent::ToolCall(call) => eprintln!("\n→ {}: {}", call.recipient, call.content),
        AgentEvent::ToolResult { output, .. } => {
            eprintln!("← {}: {}", output.author, output.content.trim_end());
            for file in &output.files {
                eprintln!("  file: {}", file.display());
            }
        }
        _ => {}
    }
}

/// [`show`] without the answer, for examples that print it themselves.
pub fn show_reasoning_and_tools(event: AgentEvent) {
    if !matches!(event, AgentEvent::FinalDelta(_)) {
        show(event);
    }
}

/// The turn's end as an exit status: an answer, or an error saying why there is none.
pub fn finish(report: &TurnReport) -> anyhow::Result<()> {
    println!();
    match &report.outcome {
        TurnOutcome::Final => Ok(()),
        other => anyhow::bail!("no answer: {other:?}"),
    }
}
