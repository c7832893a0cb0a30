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

mod access;
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
mod routes;
pub mod security;
mod state;
mod stop;
pub mod store;
mod turn;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::app::App;
pub use listen::{ServeError, serve_on};
pub use routes::router;
use security::AccessPolicy;
pub use state::{Limits, ServerParts, ServerSettings, ServerState};
use store::{ResponseStore, StoreOptions};

/// Where and as what the server listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind (`127.0.0.1`, `0.0.0.0`, `::`).
    pub host: String,
    /// 0 picks a free port (the bound address is printed).
    pub port: u16,
    /// The model id clients see in `/v1/models` and responses [default: the model setting].
    pub served_model_name: Option<String>,
    /// The response store; `None`: keep no responses (`store` is always false,
    /// `previous_response_id` refused).
    pub store: Option<StoreOptions>,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// One line on stderr per request (off with `--quiet`).
    pub log_requests: bool,
}

/// Where stored responses go unless told otherwise: `responses` in ossa's data folder.
pub fn default_store_dir() -> Result<PathBuf, ServeError> {
    let data = ossa_sandbox::default_data_dir().map_err(|e| ServeError::StoreDir(e.to_string()))?;
    Ok(data.join("responses"))
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
    let store = if let Some(store_options) = &options.store {
        let dir = &store_options.dir;
        let store = ResponseStore::open(store_options)?;
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
    } else {
        None
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
        let model_id = state.settings.model_id.clone();
        let _ = self.loaded.set(listen::Loaded::new(state));
        eprintln!(
            "ossa serve: {model_id} listening on http://{}/v1",
            self.local
        );
    }
}
