//! Starting an agent from [`Settings`]: the model (fetched once from the hub, with progress
//! bars), the engine, the tools and the conversation settings. `ossa chat`, `ossa run` and
//! `ossa serve` all start here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ossa_agent::harmony::{HarmonyEncoding, Role};
use ossa_agent::remote::{RemoteBackend, RemoteError, RemoteOptions};
use ossa_agent::{Agent, AgentConfig, Backend, ConversationSettings, EngineBackend};
use ossa_engine::hub::DownloadProgress;
use ossa_engine::{Engine, EngineError};
use ossa_sandbox::Progress;

use crate::config::Settings;
use crate::toolset::{Toolset, ToolsetError, build_tools};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Model(Box<EngineError>),
    #[error("loading the model from {dir}: {source}")]
    Load {
        dir: PathBuf,
        #[source]
        source: Box<EngineError>,
    },
    #[error("the model's tokenizer lacks harmony's special tokens: {0}")]
    Encoding(#[from] ossa_agent::harmony::HarmonyError),
    #[error(transparent)]
    Tools(Box<ToolsetError>),
    #[error(transparent)]
    Remote(Box<RemoteError>),
    #[error("the loading thread failed: {0}")]
    Thread(String),
}

/// A started agent and what came with it.
pub struct App {
    pub agent: Arc<Agent>,
    /// The in-process engine; `None` with a remote backend.
    pub engine: Option<Arc<EngineBackend>>,
    pub toolset: Toolset,
    pub settings: Settings,
    /// What generates: the model directory, or the remote server's URL and model.
    pub model: String,
    pub load_time: Duration,
}

impl App {
    /// How new conversations start: effort, date, developer instructions (the user's, then the
    /// tools' own, e.g. how to use apply_patch).
    pub fn conversation_settings(&self) -> ConversationSettings {
        let mut instructions: Vec<String> =
            self.settings.developer_message.iter().cloned().collect();
        instructions.extend(self.toolset.instructions.iter().cloned());
        ConversationSettings {
            reasoning_effort: self.settings.reasoning_effort,
            conversation_start_date: Some(self.settings.date.clone()),
            model_identity: None,
            developer_instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
        }
    }
}

/// Limits of one turn (one task of `ossa run`, one message of `ossa chat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    pub max_tool_calls: usize,
    pub wall_time: Option<Duration>,
}

impl Default for TurnLimits {
    fn default() -> Self {
        let defaults = AgentConfig::default();
        Self {
            max_tool_calls: defaults.max_tool_calls,
            wall_time: defaults.wall_time,
        }
    }
}

/// Download bars and the runtime's steps on stderr while the model and tools load, unless
/// quiet (`--quiet`).
pub fn load_progress(quiet: bool) -> Progress {
    if quiet {
        Progress::Quiet
    } else {
        Progress::Stderr
    }
}

/// [`start_with`] the default turn limits.
pub async fn start(settings: Settings, progress: Progress) -> Result<App, StartError> {
    start_with(settings, progress, TurnLimits::default()).await
}

/// Fetches (first use) and loads the model, builds the tools, and makes the agent. Progress
/// goes to stderr unless `progress` is quiet.
pub async fn start_with(
    settings: Settings,
    progress: Progress,
    limits: TurnLimits,
) -> Result<App, StartError> {
    // The tools start while the model loads (or the server is reached).
    let toolset = build_tools(&settings.config, &settings.tools, progress);
    let (loaded, toolset) = tokio::join!(load_backend(&settings, progress), toolset);
    let Loaded {
        backend,
        engine,
        remote,
        encoding,
        model,
        load_time,
    } = loaded?;
    let toolset = toolset.map_err(|e| StartError::Tools(Box::new(e)))?;
    let config = AgentConfig {
        sampling: settings.sampling.clone(),
        max_tokens: settings.max_tokens,
        max_tool_calls: limits.max_tool_calls,
        wall_time: limits.wall_time,
        structured: None,
        logprobs: None,
    };
    let agent = Agent::new(backend, encoding, toolset.tools.clone(), config);
    let app = App {
        agent,
        engine,
        toolset,
        settings,
        model,
        load_time,
    };
    if let Some(remote) = remote {
        // A server too small for the conversation's start is refused now, not at its first
        // turn's limit.
        let preamble = app.agent.preamble(&app.conversation_settings());
        let start =
            app.agent
                .encoding()
                .render_conversation_for_completion(&preamble, Role::User, None)?;
        if let Err(e) = remote.check_context(start.len()) {
            app.toolset.shutdown().await;
            return Err(StartError::Remote(Box::new(e)));
        }
    }
    Ok(app)
}

struct Loaded {
    backend: Arc<dyn Backend>,
    engine: Option<Arc<EngineBackend>>,
    remote: Option<Arc<RemoteBackend>>,
    encoding: HarmonyEncoding,
    model: String,
    load_time: Duration,
}

/// Loads the engine (fetching the model on first use), or connects to the remote server.
async fn load_backend(settings: &Settings, progress: Progress) -> Result<Loaded, StartError> {
    let remote = settings.remote.clone();
    let sampling = settings.sampling.clone();
    let spec = settings.model.clone();
    let load_options = settings.load_options();
    let prompt_cache = settings.prompt_cache.clone();
    let context = settings.context;
    let bars = progress == Progress::Stderr;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        if let Some(remote) = remote {
            // The prompt is rendered here, so the tokenizer is ours: o200k_harmony.
            let encoding = HarmonyEncoding::gpt_oss()?;
            let mut options = RemoteOptions::new(remote.url.clone());
            options.model = remote.model.clone();
            options.kind = remote.kind;
            let backend = RemoteBackend::connect(&options, encoding.tokenizer().clone())
                .and_then(|backend| {
                    // Refused now rather than at the first generation.
                    backend.check_sampling(&sampling)?;
                    Ok(backend)
                })
                .map_err(|e| StartError::Remote(Box::new(e)))?;
            let model = backend.name();
            let backend = Arc::new(backend);
            return Ok(Loaded {
                backend: backend.clone(),
                engine: None,
                remote: Some(backend),
                encoding,
                model,
                load_time: started.elapsed(),
            });
        }
        let sink: Option<Arc<dyn DownloadProgress>> =
            bars.then(|| Arc::new(DownloadBars::default()) as Arc<dyn DownloadProgress>);
        let dir = ossa_engine::hub::resolve_model(&spec, sink)
            .map_err(|e| StartError::Model(Box::new(e)))?;
        let started = Instant::now();
        let mut engine = Engine::load(&dir, &load_options).map_err(|source| StartError::Load {
            dir: dir.clone(),
            source: Box::new(source),
        })?;
        if let Some(options) = &prompt_cache
            && let Err(error) = engine.set_prompt_cache(Some(options))
        {
            // A cache is an optimization: without one, everything still works.
            tracing::warn!("{error}; running without the prompt cache");
        }
        let encoding = match engine.tokenizer() {
            Some(tokenizer) => HarmonyEncoding::new(tokenizer.clone())?,
            None => HarmonyEncoding::gpt_oss()?,
        };
        let mut backend = EngineBackend::new(engine);
        if let Some(tokens) = context {
            backend = backend.with_context_limit(tokens);
        }
        let engine = Arc::new(backend);
        Ok(Loaded {
            backend: engine.clone(),
            engine: Some(engine),
            remote: None,
            encoding,
            model: dir.display().to_string(),
            load_time: started.elapsed(),
        })
    })
    .await
    .map_err(|e| StartError::Thread(e.to_string()))?
}

/// One progress bar per downloading file, on stderr (among the process's other spinners and
/// bars, `ossa_sandbox::terminal_progress`).
#[derive(Default)]
pub struct DownloadBars {
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl DownloadBars {
    fn bar(&self, file: &str) -> Option<indicatif::ProgressBar> {
        let mut bars = self.bars.lock().ok()?;
        let bar = bars.entry(file.to_string()).or_insert_with(|| {
            let bar = ossa_sandbox::terminal_progress().add(indicatif::ProgressBar::new(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:40} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(file.to_string());
            bar
        });
        Some(bar.clone())
    }
}

impl DownloadProgress for DownloadBars {
    fn update(&self, file: &str, done: u64, total: u64) {
        if let Some(bar) = self.bar(file) {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    fn finished(&self, file: &str) {
        if let Some(bar) = self.bar(file) {
            bar.finish();
            // Bars draw only on a terminal; elsewhere (logs, pipes) one line per file.
            if !std::io::stderr().is_terminal() {
                match bar.length() {
                    Some(total) if total > 0 => {
                        eprintln!("{file}: {} downloaded", indicatif::HumanBytes(total))
                    }
                    _ => eprintln!("{file}: already in the cache"),
                }
            }
        }
    }

    fn contacting(&self, endpoint: &str, repo_id: &str) {
        // Said before the first request, so a slow or silent hub is never a silent wait.
        let line = format!("Fetching {repo_id} from {endpoint}…");
        if std::io::stderr().is_terminal() {
            let _ = ossa_sandbox::terminal_progress().println(line);
        } else {
            eprintln!("{line}");
        }
    }
}
