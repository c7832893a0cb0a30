//! `ossa serve`'s server in the test process, on a loopback port, generating with a backend
//! the test holds (a scripted model), so the test can see every prompt and cancellation.

use std::sync::Arc;

use ossa::agent::harmony::ReasoningEffort;
use ossa::agent::{AgentConfig, Backend, ConversationSettings};
use ossa::serve::security::AccessPolicy;
use ossa::serve::store::{ResponseStore, StoreOptions};
use ossa::serve::{Limits, ServerParts, ServerSettings, ServerState, serve_on};
use ossa::tools::FunctionTools;
use ossa_test_support::scripted::encoding;

/// The server, until dropped; its response store lives in a temporary folder.
pub struct InProcessServer {
    /// `http://127.0.0.1:PORT/v1`
    pub base: String,
    pub runtime: tokio::runtime::Runtime,
    _store: tempfile::TempDir,
}

impl InProcessServer {
    /// Serves `backend` as `model_id`, with low reasoning, the scenarios' date, no tools and a
    /// response store of at most `store_max_bytes`.
    pub fn start(backend: Arc<dyn Backend>, model_id: &str, store_max_bytes: u64) -> Self {
        let encoding = encoding().clone();
        let store = tempfile::tempdir().expect("temp");
        let store_options = StoreOptions {
            max_bytes: store_max_bytes,
            ..StoreOptions::new(store.path())
        };
        let state = ServerState::new(ServerParts {
            backend,
            settings: ServerSettings {
                eos_tokens: vec![encoding.formatting_tokens().return_],
                encoding,
                config: AgentConfig::default(),
                conversation: ConversationSettings {
                    reasoning_effort: ReasoningEffort::Low,
                    conversation_start_date: Some("2026-01-01".into()),
                    ..ConversationSettings::default()
                },
                tool_instructions: Vec::new(),
                builtins: Vec::new(),
                functions: FunctionTools::new(),
                model_id: model_id.into(),
                access: AccessPolicy::default(),
                limits: Limits::default(),
                log_requests: false,
            },
            store: Some(ResponseStore::open(&store_options).expect("store")),
            app: None,
        });
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = listener.local_addr().expect("address");
        runtime.spawn(serve_on(listener, state, std::future::pending()));
        InProcessServer {
            base: format!("http://{address}/v1"),
            runtime,
            _store: store,
        }
    }
}
