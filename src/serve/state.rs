//! What every request shares ([`ServerState`]), what it is made from ([`ServerParts`], its
//! unchanging [`ServerSettings`]) and what one client can take of it ([`Limits`]).

use std::sync::Arc;
use std::time::Duration;

use ossa_agent::harmony::HarmonyEncoding;
use ossa_agent::{AgentConfig, Backend, CancellationToken, ConversationSettings};
use ossa_tools::{FunctionTools, Tool};

use super::access::AccessPolicy;
use super::error::ApiError;
use super::functions;
use super::queue::{FairBackend, RequestSlots, Slot};
use super::store::ResponseStore;
use super::wire;
use crate::app::App;

/// What one client can take of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; one more gets a 503 and is closed.
    pub max_connections: usize,
    /// Requests waiting while one runs; one more gets a 429 with `Retry-After`.
    pub max_queue: usize,
    /// Most tokens one generation may be asked for (`max_tokens` and the like are cut to it);
    /// `None`: what the context has room for.
    pub max_tokens: Option<usize>,
    /// Largest request body; a larger one gets a 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers (and an idle connection stays open).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// How long shutting down waits for open connections.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_queue: 16,
            max_tokens: None,
            max_body_bytes: 16 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// What the server is made of, for [`ServerState::new`] ([`ServerState::from_app`] takes an
/// [`App`]'s).
pub struct ServerParts {
    /// Where tokens come from (queued fairly by the server).
    pub backend: Arc<dyn Backend>,
    /// What the server answers with, kept as given.
    pub settings: ServerSettings,
    /// Stored responses; `None`: none are kept.
    pub store: Option<ResponseStore>,
    /// Kept alive while the server runs (the tools' servers, the engine).
    pub app: Option<App>,
}

/// What the server answers with: its model, tools, defaults and limits, the same for its
/// whole life.
pub struct ServerSettings {
    pub encoding: HarmonyEncoding,
    /// Sampling and limits a request's own settings override.
    pub config: AgentConfig,
    /// How conversations start: effort, date, the default developer instructions.
    pub conversation: ConversationSettings,
    /// Developer instructions that come with the server's functions (kept when a request
    /// brings its own instructions).
    pub tool_instructions: Vec<String>,
    /// Built-in tools (`browser`, `python`) requests get by default.
    pub builtins: Vec<Arc<dyn Tool>>,
    /// The server's own functions (MCP tools, apply_patch), run on the server.
    pub functions: FunctionTools,
    /// The model's end-of-sequence tokens (`/v1/completions` stops on them, as vLLM does).
    pub eos_tokens: Vec<u32>,
    pub model_id: String,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// One line on stderr per request.
    pub log_requests: bool,
}

/// What every request shares.
pub struct ServerState {
    /// The backend, queued fairly.
    pub backend: Arc<FairBackend>,
    pub settings: ServerSettings,
    pub created: u64,
    pub store: Option<Arc<ResponseStore>>,
    /// Requests in progress, bounded.
    pub(super) slots: RequestSlots,
    /// Cancelled when the server shuts down: every request's own cancel follows it.
    pub(super) shutdown: CancellationToken,
    pub(super) _app: Option<App>,
}

impl ServerState {
    pub fn new(parts: ServerParts) -> Arc<Self> {
        Arc::new(Self {
            backend: Arc::new(FairBackend::new(parts.backend)),
            created: wire::now(),
            store: parts.store.map(Arc::new),
            slots: RequestSlots::new(parts.settings.limits.max_queue.saturating_add(1)),
            settings: parts.settings,
            shutdown: CancellationToken::new(),
            _app: parts.app,
        })
    }

    /// A server over a started [`App`]: its engine, tools and settings. The model id is
    /// `served_model_name`, else the model setting (a local folder by its name).
    pub fn from_app(
        app: App,
        served_model_name: Option<String>,
        store: Option<ResponseStore>,
        access: AccessPolicy,
        limits: Limits,
        log_requests: bool,
    ) -> Arc<Self> {
        let model_id = served_model_name.unwrap_or_else(|| {
            let model = &app.settings.model;
            let path = std::path::Path::new(model);
            match path.file_name() {
                Some(name) if path.is_dir() => name.to_string_lossy().into_owned(),
                _ => model.clone(),
            }
        });
        // A remote backend's server applies its own end-of-sequence tokens.
        let eos_tokens = app.engine.as_ref().map_or_else(Vec::new, |engine| {
            engine.with_engine(|engine| engine.config().eos_token_ids())
        });
        Self::new(ServerParts {
            backend: app.agent.backend().clone(),
            settings: ServerSettings {
                encoding: app.agent.encoding().clone(),
                config: app.agent.config().clone(),
                conversation: app.conversation_settings(),
                tool_instructions: app.toolset.instructions.clone(),
                builtins: app
                    .toolset
                    .tools
                    .iter()
                    .filter(|t| t.name() != functions::NAMESPACE)
                    .cloned()
                    .collect(),
                functions: app.toolset.functions.clone(),
                eos_tokens,
                model_id,
                access,
                limits,
                log_requests,
            },
            store,
            app: Some(app),
        })
    }

    /// The server's conversation defaults; `instructions` replace its developer message (the
    /// tools' own instructions stay).
    pub fn conversation_settings(&self, instructions: Option<String>) -> ConversationSettings {
        let mut settings = self.settings.conversation.clone();
        if let Some(instructions) = instructions {
            let mut parts = vec![instructions];
            parts.extend(self.settings.tool_instructions.iter().cloned());
            settings.developer_instructions = Some(parts.join("\n\n"));
        }
        settings
    }

    /// For a streamed response that has to wait: how many generations are ahead of it.
    pub fn queue_note(&self) -> Option<String> {
        let status = self.backend.status();
        let ahead = status.running + status.waiting;
        (ahead > 0).then(|| format!("queued: {ahead} generation(s) ahead"))
    }

    /// The functions the model can call in a request with `client` functions: the client's
    /// and the server's own.
    pub fn function_names(&self, client: &[ossa_tools::ToolDescription]) -> Vec<String> {
        let mut names: Vec<String> = client.iter().map(|t| t.name.clone()).collect();
        if !self.settings.functions.is_empty() {
            names.extend(self.settings.functions.names());
        }
        names
    }

    /// The server's built-in tools (`browser`, `python`), those a request gets by default.
    pub fn builtin_tools(&self) -> Vec<Arc<dyn Tool>> {
        self.settings.builtins.clone()
    }

    /// A place for a request that will generate, or a 429 when the queue is full.
    pub fn admit(&self) -> Result<Slot, ApiError> {
        self.slots.try_take().ok_or_else(|| {
            ApiError::busy(
                format!(
                    "the server is busy: {} requests are in progress or waiting for the model; \
                     try again shortly",
                    self.slots.taken()
                ),
                1,
            )
        })
    }

    /// A request's cancel: cancelled by the request's end (the client went away, or it is
    /// done) or by the server shutting down.
    pub fn request_cancel(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Tokens one generation may sample: what the request asked for (else the server's
    /// default), cut to the server's limit.
    pub fn max_tokens(&self, requested: Option<usize>) -> Option<usize> {
        match (
            requested.or(self.settings.config.max_tokens),
            self.settings.limits.max_tokens,
        ) {
            (Some(n), Some(limit)) => Some(n.min(limit)),
            (n, limit) => n.or(limit),
        }
    }

    /// The response store, or why there is none.
    pub fn store(&self) -> Result<&Arc<ResponseStore>, ApiError> {
        self.store.as_ref().ok_or_else(|| {
            ApiError::invalid(
                None,
                "this server keeps no responses (it was started with --no-store)",
            )
        })
    }
}
