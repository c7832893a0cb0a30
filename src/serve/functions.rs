//! The `functions` namespace of one API request: the client's function tools (answered by the
//! client, so a call to one ends the response) next to the server's own functions (MCP tools,
//! apply_patch), which run here.
//!
//! The agent loop runs every call it sees; a client's call is taken out of it by ending the
//! turn through its [`Cancel`] handle once the call is recorded. The loop then appends a
//! "cancelled" tool message, which [`ExternalCall::take`]'s caller drops.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ossa_agent::Cancel;
use ossa_tools::{
    FunctionTools, Placement, Tool, ToolCall, ToolDescription, ToolNamespaceConfig, ToolOutput,
    ToolSession,
};

/// The namespace the model calls functions in.
pub const NAMESPACE: &str = "functions";

/// Where a client function call is left for the server to return.
#[derive(Debug, Default)]
pub struct ExternalCall {
    call: Mutex<Option<ToolCall>>,
}

impl ExternalCall {
    pub fn take(&self) -> Option<ToolCall> {
        self.call
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set(&self, call: ToolCall) {
        *self.call.lock().unwrap_or_else(PoisonError::into_inner) = Some(call);
    }
}

/// The function name a `functions.NAME` recipient calls.
pub fn function_name(recipient: &str) -> Option<&str> {
    recipient.strip_prefix("functions.")
}

pub struct RequestFunctions {
    client: Vec<ToolDescription>,
    client_names: Arc<HashSet<String>>,
    server: Option<FunctionTools>,
    external: Arc<ExternalCall>,
    cancel: Cancel,
}

impl RequestFunctions {
    /// `client` are the request's functions, `server` the server's own (when it has any);
    /// `cancel` ends the turn when the model calls a client function.
    pub fn new(
        client: Vec<ToolDescription>,
        server: Option<FunctionTools>,
        external: Arc<ExternalCall>,
        cancel: Cancel,
    ) -> Self {
        let client_names = Arc::new(client.iter().map(|t| t.name.clone()).collect());
        Self {
            client,
            client_names,
            server,
            external,
            cancel,
        }
    }
}

impl Tool for RequestFunctions {
    fn name(&self) -> &str {
        NAMESPACE
    }

    fn namespace(&self) -> ToolNamespaceConfig {
        let mut tools = self.client.clone();
        if let Some(server) = &self.server {
            // A client function of the same name wins: the client asked for it.
            tools.extend(
                server
                    .namespace()
                    .tools
                    .into_iter()
                    .filter(|t| !self.client_names.contains(&t.name)),
            );
        }
        ToolNamespaceConfig::new(NAMESPACE, None, tools)
    }

    fn placement(&self) -> Placement {
        Placement::Developer
    }

    fn open_session(&self) -> Box<dyn ToolSession> {
        Box::new(RequestFunctionsSession {
            client_names: Arc::clone(&self.client_names),
            server: self.server.as_ref().map(|s| s.open_session()),
            external: Arc::clone(&self.external),
            cancel: self.cancel.clone(),
        })
    }
}

struct RequestFunctionsSession {
    client_names: Arc<HashSet<String>>,
    server: Option<Box<dyn ToolSession>>,
    external: Arc<ExternalCall>,
    cancel: Cancel,
}

#[async_trait]
impl ToolSession for RequestFunctionsSession {
    async fn call(&mut self, call: &ToolCall) -> Vec<ToolOutput> {
        let name = function_name(&call.recipient).unwrap_or(&call.recipient);
        if self.client_names.contains(name) {
            self.external.set(call.clone());
            self.cancel.cancel();
            // The loop sees the cancellation first and never gets here again.
            std::future::pending::<()>().await;
            return Vec::new();
        }
        match &mut self.server {
            Some(server) => server.call(call).await,
            None => vec![ToolOutput::text(
                call,
                call.recipient.clone(),
                format!("Error: there is no function `{name}`."),
            )],
        }
    }
}
