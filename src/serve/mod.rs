//! `ossa serve`: the OpenAI API over the agent.
//!
//! - `POST /v1/chat/completions` (streaming and not): function tools come back as `tool_calls`,
//!   the chain of thought as `reasoning_content` (and is read back from assistant messages, so
//!   it survives tool turns); built-in tools (`python`, `browser`) run here, inside the request,
//!   and are reported in `server_tool_calls`.
//! - `POST /v1/completions`: raw tokens, with token-id prompts and token ids returned the way
//!   vLLM does (`return_token_ids`); what [`ossa_agent::remote::RemoteBackend`] talks to.
//! - `POST /v1/responses` (streaming and not) with the reference server's event sequence,
//!   built-in tools run inside the response, function calls returned as `function_call` items;
//!   `store` + `previous_response_id` kept on disk; `GET`/`DELETE /v1/responses/{id}`.
//! - `GET /v1/models`, `GET /health`.
//!
//! One engine serves every request: generations take turns in arrival order ([`queue`]).

mod chat;
mod completions;
pub mod error;
pub mod functions;
mod params;
pub mod queue;
mod responses;
mod turn;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ossa_agent::harmony::HarmonyEncoding;
use ossa_agent::{AgentConfig, Backend, ConversationSettings};
use ossa_tools::{FunctionTools, Tool};
use serde_json::json;

use crate::app::App;
use error::ApiError;
use queue::FairBackend;

/// Where and as what the server listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind (`127.0.0.1`, `0.0.0.0`, `::`).
    pub host: String,
    /// 0 picks a free port (the bound address is printed).
    pub port: u16,
    /// The model id clients see in `/v1/models` and responses [default: the model setting].
    pub served_model_name: Option<String>,
    /// Where stored responses go [default: `responses` in ossa's data folder].
    pub store_dir: Option<PathBuf>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no folder for stored responses: {0}")]
    StoreDir(String),
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the server is made of, for [`ServerState::new`] ([`ServerState::from_app`] takes an
/// [`App`]'s).
pub struct ServerParts {
    /// Where tokens come from (queued fairly by the server).
    pub backend: Arc<dyn Backend>,
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
    /// Stored responses, one JSON file each.
    pub store_dir: PathBuf,
    /// Kept alive while the server runs (the tools' servers, the engine).
    pub app: Option<App>,
}

/// What every request shares.
pub struct ServerState {
    /// The backend, queued fairly.
    pub backend: Arc<FairBackend>,
    pub encoding: HarmonyEncoding,
    pub config: AgentConfig,
    pub conversation: ConversationSettings,
    pub tool_instructions: Vec<String>,
    pub builtins: Vec<Arc<dyn Tool>>,
    pub functions: FunctionTools,
    pub eos_tokens: Vec<u32>,
    pub model_id: String,
    pub created: u64,
    pub store_dir: PathBuf,
    _app: Option<App>,
}

impl ServerState {
    pub fn new(parts: ServerParts) -> Arc<Self> {
        Arc::new(Self {
            backend: Arc::new(FairBackend::new(parts.backend)),
            encoding: parts.encoding,
            config: parts.config,
            conversation: parts.conversation,
            tool_instructions: parts.tool_instructions,
            builtins: parts.builtins,
            functions: parts.functions,
            eos_tokens: parts.eos_tokens,
            model_id: parts.model_id,
            created: params::now(),
            store_dir: parts.store_dir,
            _app: parts.app,
        })
    }

    /// A server over a started [`App`]: its engine, tools and settings. The model id is
    /// `served_model_name`, else the model setting (a local folder by its name).
    pub fn from_app(app: App, served_model_name: Option<String>, store_dir: PathBuf) -> Arc<Self> {
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
            store_dir,
            app: Some(app),
        })
    }

    /// The server's conversation defaults; `instructions` replace its developer message (the
    /// tools' own instructions stay).
    pub fn conversation_settings(&self, instructions: Option<String>) -> ConversationSettings {
        let mut settings = self.conversation.clone();
        if let Some(instructions) = instructions {
            let mut parts = vec![instructions];
            parts.extend(self.tool_instructions.iter().cloned());
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
        if !self.functions.is_empty() {
            names.extend(self.functions.names());
        }
        names
    }

    /// The server's built-in tools (`browser`, `python`), those a request gets by default.
    pub fn builtin_tools(&self) -> Vec<Arc<dyn Tool>> {
        self.builtins.clone()
    }
}

/// The routes, over `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .fallback(not_found)
        .with_state(state)
}

/// Serves until `shutdown` resolves. Prints the address it listens on to stderr (with port 0,
/// the port picked).
pub async fn serve(
    app: App,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let address = format!("{}:{}", options.host, options.port);
    let bind_address = if options.host.contains(':') && !options.host.starts_with('[') {
        format!("[{}]:{}", options.host, options.port)
    } else {
        address.clone()
    };
    let listener = tokio::net::TcpListener::bind(&bind_address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let local: SocketAddr = listener.local_addr().map_err(ServeError::Serve)?;
    let store_dir = match &options.store_dir {
        Some(dir) => dir.clone(),
        None => ossa_sandbox::default_data_dir()
            .map_err(|e| ServeError::StoreDir(e.to_string()))?
            .join("responses"),
    };
    let state = ServerState::from_app(app, options.served_model_name.clone(), store_dir);
    eprintln!(
        "ossa serve: {} listening on http://{local}/v1",
        state.model_id
    );
    serve_on(listener, state, shutdown).await
}

/// Serves `state` on a bound listener until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let queue = state.backend.status();
    axum::Json(json!({
        "status": "ok",
        "model": state.model_id,
        "queue": {"running": queue.running, "waiting": queue.waiting},
    }))
    .into_response()
}

async fn models(State(state): State<Arc<ServerState>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.created,
            "owned_by": "ossa",
            "max_model_len": state.backend.context_length(),
        }],
    }))
    .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
}
