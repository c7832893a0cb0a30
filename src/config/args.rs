//! The flags `ossa chat`, `ossa run` and `ossa serve` share: [`ConfigArgs`], clap's low-level
//! view. A value with a range has its checked type (`values`), so a `ConfigArgs` built in
//! code cannot hold what the flag would refuse; [`ConfigArgs::resolve`] (in `settings`) merges them
//! over the file.

use std::path::PathBuf;

use ossa_agent::harmony::ReasoningEffort;
use ossa_agent::remote::RemoteKind;
use ossa_engine::DType;
use ossa_tools::browser::SearchBackendKind;

use super::values::{
    Count, Date, Temperature, TopP, parse_backend, parse_dtype, parse_effort, parse_remote_kind,
};

/// The flags `ossa chat`, `ossa run` and `ossa serve` share (`#[command(flatten)]`); each
/// overrides the config file's value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Config file [default: $XDG_CONFIG_HOME/ossa/config.toml, else
    /// ~/.config/ossa/config.toml; OSSA_CONFIG names another].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A model name (gpt-oss:20b, gpt-oss:120b; `ossa list` shows what is downloaded), a
    /// Hugging Face id fetched once, or a model directory [default: gpt-oss:20b].
    #[arg(long, value_name = "NAME|DIR")]
    pub model: Option<String>,
    /// Compute threads [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<Count>,
    /// Precision: f32 (exact), bf16, or q8 (int8 kernels, the fastest on a CPU) [default: q8].
    #[arg(long, value_name = "TYPE", value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// How hard the model thinks: low, medium or high [default: low].
    #[arg(short = 'r', long, value_name = "EFFORT", value_parser = parse_effort)]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Give the model the browser (web search and pages).
    #[arg(short = 'b', long, overrides_with = "no_browser")]
    pub browser: bool,
    /// No browser, even if the config file turns it on.
    #[arg(long, overrides_with = "browser")]
    pub no_browser: bool,
    /// Give the model Python in the sandbox.
    #[arg(short = 'p', long, overrides_with = "no_python")]
    pub python: bool,
    /// No Python, even if the config file turns it on.
    #[arg(long, overrides_with = "python")]
    pub no_python: bool,
    /// Instructions for the developer message.
    #[arg(long, value_name = "TEXT")]
    pub developer_message: Option<String>,
    /// The conversation's date, shown to the model [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<Date>,
    /// Tokens one model response may have at most [default: until the context is full].
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<Count>,
    /// Tokens a conversation may hold, which bounds the KV cache's memory; a turn that would
    /// go past it stops with an error [default: the model's context, 131072 for gpt-oss].
    #[arg(long, value_name = "N")]
    pub context: Option<Count>,
    /// Sampling temperature; 0 is greedy [default: 1].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<Temperature>,
    /// Nucleus sampling: keep the likeliest tokens up to this probability [default: 1, off].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<TopP>,
    /// Sampling seed, for repeatable runs.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Search service: duckduckgo, exa, you, brave, tavily or searxng.
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    pub search_backend: Option<SearchBackendKind>,
    /// Host folder the Python code sees at /mnt/data [default: a private temporary folder].
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Where tokens come from: `engine` (in this process) or `openai-completions` (a server
    /// such as vLLM, llama.cpp's llama-server or `ossa serve`, given by --url, sent token ids).
    #[arg(long, value_name = "KIND", value_parser = ["engine", "openai-completions"], default_value = "engine")]
    pub backend: String,
    /// The remote server's dialect: vllm (also `ossa serve`), llama-server or generic (any
    /// other OpenAI Completions API) [default: detected from the server].
    #[arg(long, value_name = "KIND", value_parser = parse_remote_kind)]
    pub remote_kind: Option<RemoteKind>,
    /// Base URL of the remote server's API, e.g. http://host:8000/v1.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The model name the remote server knows [default: the first it lists].
    #[arg(long, value_name = "NAME")]
    pub remote_model: Option<String>,
    /// Neither read nor write the prompt cache on disk (the keys and values of prompts seen
    /// before, so a new process starts without recomputing them; kept in
    /// $OSSA_DATA_DIR/prompt-cache, by default ~/.local/share/ossa/prompt-cache;
    /// OSSA_PROMPT_CACHE_DIR moves it).
    #[arg(long)]
    pub no_prompt_cache: bool,
}
