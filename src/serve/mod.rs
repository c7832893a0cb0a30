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
//!   `store` + `previous_response_id` kept in a database ([`store`]);
//!   `GET`/`DELETE /v1/responses/{id}`.
//! - `GET /v1/models`, `GET /health`.
//!
//! The server listens before its model is loaded ([`bind`]): until then every request gets a
//! 503 (`/health`: `{"status": "loading"}`).
//!
//! One engine serves every request: generations take turns in arrival order ([`queue`]).
//! Every request passes [`security::guard`] (host, origin, key, content type, body limits);
//! connections are capped and timed in [`listen`].

mod chat;
mod common;
mod completions;
pub mod error;
pub mod functions;
mod listen;
mod log;
mod params;
pub mod queue;
mod responses;
pub mod security;
mod stop;
pub mod store;
mod turn;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::CancellationToken;
use ossa_agent::harmony::HarmonyEncoding;
use ossa_agent::{AgentConfig, Backend, ConversationSettings};
use ossa_tools::{FunctionTools, Tool};

use crate::app::App;
use error::ApiError;
pub use listen::serve_on;
use queue::{FairBackend, RequestSlots, Slot};
use security::{AccessPolicy, ExposureError};
use store::{ResponseStore, StoreError, StoreOptions};

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
    /// Keep no responses (`store` is always false, `previous_response_id` refused).
    pub no_store: bool,
    /// Most bytes of stored responses.
    pub store_max_bytes: u64,
    /// Stored responses unused this long are deleted; `None`: never for their age.
    pub store_ttl: Option<Duration>,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// One line on stderr per request (off with `--quiet`).
    pub log_requests: bool,
}

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

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    // The cause is the source, printed after the message (`{:#}`): not in it too.
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no folder for stored responses: {0}")]
    StoreDir(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exposure(#[from] ExposureError),
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
    /// Stored responses; `None`: none are kept.
    pub store: Option<ResponseStore>,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// One line on stderr per request.
    pub log_requests: bool,
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
    pub store: Option<Arc<ResponseStore>>,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// One line on stderr per request.
    pub log_requests: bool,
    /// Requests in progress, bounded.
    slots: RequestSlots,
    /// Cancelled when the server shuts down: every request's own cancel follows it.
    shutdown: CancellationToken,
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
            store: parts.store.map(Arc::new),
            slots: RequestSlots::new(parts.limits.max_queue.saturating_add(1)),
            access: parts.access,
            limits: parts.limits,
            log_requests: parts.log_requests,
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
            store,
            access,
            limits,
            log_requests,
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
        match (requested.or(self.config.max_tokens), self.limits.max_tokens) {
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
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        // Model ids may hold slashes (`openai/gpt-oss-20b`).
        .route("/v1/models/{*id}", get(model))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read (and limited) by the guard.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            security::guard,
        ))
        // Outside the guard: refused requests are logged too.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            log::access_log,
        ))
        .with_state(state)
}

/// A server listening before its model is loaded: it answers 503 (`/health`:
/// `{"status": "loading"}`) until [`Loader::ready`] gives it the model. `ossa serve` binds
/// ([`bind`]), spawns [`Bound::run`], loads the model, then hands it over.
pub struct Bound {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    loaded: Arc<OnceLock<listen::Loaded>>,
    limits: Limits,
    /// Who may ask, checked by the loading answers too.
    access: Arc<AccessPolicy>,
    pending: Arc<Mutex<Option<Pending>>>,
}

/// What the server is built with once the model is loaded.
struct Pending {
    options: ServeOptions,
    access: AccessPolicy,
    store: Option<ResponseStore>,
}

/// Hands the loaded model to a [`Bound`] server (which may be serving already).
pub struct Loader {
    local: SocketAddr,
    loaded: Arc<OnceLock<listen::Loaded>>,
    pending: Arc<Mutex<Option<Pending>>>,
}

/// Binds the address `options` name and opens the response store, before any model is
/// loaded: a port in use or a store that cannot open is reported at once. Refuses to listen
/// anywhere but loopback without an API key.
pub async fn bind(options: &ServeOptions) -> Result<Bound, ServeError> {
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
    let mut access = options.access.clone();
    // The name the server was told to listen on is one it answers to.
    access.allowed_hosts.push(options.host.to_ascii_lowercase());
    access.check_exposure(local)?;
    let store = if options.no_store {
        None
    } else {
        let dir = match &options.store_dir {
            Some(dir) => dir.clone(),
            None => ossa_sandbox::default_data_dir()
                .map_err(|e| ServeError::StoreDir(e.to_string()))?
                .join("responses"),
        };
        let store = ResponseStore::open(&StoreOptions {
            dir: dir.clone(),
            max_bytes: options.store_max_bytes,
            ttl: options.store_ttl,
        })?;
        if let Some(migration) = store.migration() {
            eprintln!(
                "ossa serve: moved {} stored responses from the JSON files of an older ossa into \
                 {}{}",
                migration.moved,
                dir.join(store::DATABASE_FILE).display(),
                if migration.unreadable > 0 {
                    format!(
                        " ({} unreadable files set aside as *.json.unreadable in {})",
                        migration.unreadable,
                        dir.display()
                    )
                } else {
                    String::new()
                }
            );
        }
        Some(store)
    };
    Ok(Bound {
        listener,
        local,
        loaded: Arc::new(OnceLock::new()),
        limits: options.limits.clone(),
        access: Arc::new(access.clone()),
        pending: Arc::new(Mutex::new(Some(Pending {
            options: options.clone(),
            access,
            store,
        }))),
    })
}

impl Bound {
    /// The address listened on (with port 0, the port picked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What gives this server its model.
    pub fn loader(&self) -> Loader {
        Loader {
            local: self.local,
            loaded: Arc::clone(&self.loaded),
            pending: Arc::clone(&self.pending),
        }
    }

    /// Serves (the loading answers until the model is ready) until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        listen::serve_switch(
            self.listener,
            self.loaded,
            self.access,
            &self.limits,
            shutdown,
        )
        .await;
    }
}

impl Loader {
    /// The API over `app` from now on; prints the line saying so (`MODEL listening on URL`).
    /// Only the first call has an effect.
    pub fn ready(&self, app: App) {
        let Some(pending) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let state = ServerState::from_app(
            app,
            pending.options.served_model_name.clone(),
            pending.store,
            pending.access,
            pending.options.limits.clone(),
            pending.options.log_requests,
        );
        let model_id = state.model_id.clone();
        let _ = self.loaded.set(listen::Loaded::new(state));
        eprintln!(
            "ossa serve: {model_id} listening on http://{}/v1",
            self.local
        );
    }
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let queue = state.backend.status();
    let store = match &state.store {
        None => None,
        Some(store) => match store::run(store, |store| store.usage()).await {
            Ok(usage) => Some(wire::models::StoreSize {
                responses: usage.responses,
                bytes: usage.bytes,
            }),
            Err(error) => return error.api_error().into_response(),
        },
    };
    axum::Json(wire::models::Health {
        status: "ok".to_string(),
        model: state.model_id.clone(),
        queue: wire::models::Queue {
            running: queue.running,
            waiting: queue.waiting,
        },
        requests: state.slots.taken(),
        store,
    })
    .into_response()
}

fn model_object(state: &ServerState) -> wire::models::Model {
    wire::models::Model {
        id: state.model_id.clone(),
        object: wire::models::ModelTag,
        created: state.created,
        owned_by: wire::models::OwnedByOssa,
        max_model_len: state.backend.context_length(),
    }
}

async fn models(State(state): State<Arc<ServerState>>) -> Response {
    axum::Json(wire::models::ModelList {
        object: wire::models::ListTag,
        data: vec![model_object(&state)],
    })
    .into_response()
}

/// `GET /v1/models/{id}`: the model this server serves, by the id `/v1/models` lists.
async fn model(
    State(state): State<Arc<ServerState>>,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    match id {
        Ok(axum::extract::Path(id)) if id == state.model_id => {
            axum::Json(model_object(&state)).into_response()
        }
        Ok(axum::extract::Path(id)) => model_not_found(&id, &state.model_id),
        // An id that does not decode (not UTF-8) names no model either.
        Err(_) => model_not_found("", &state.model_id),
    }
}

/// A 404 in OpenAI's shape for a model id other than the served one.
fn model_not_found(id: &str, served: &str) -> Response {
    let shown: String = id.chars().filter(|c| !c.is_control()).take(100).collect();
    let mut error = ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "model_not_found",
        format!("The model `{shown}` does not exist; this server serves `{served}`."),
    );
    error.param = Some("model".into());
    error.into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
    .into_response()
}
