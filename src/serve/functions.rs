//! The `functions` namespace of one API request: the client's function tools (answered by the
//! client) next to the server's own functions (MCP tools, apply_patch), which run here.
//!
//! A call to a client function never reaches this tool: the agent loop ends the turn with it
//! ([`ossa_agent::TurnOutcome::FunctionCalls`], set up by `turn::prepare` through
//! [`ossa_agent::Chat::set_client_functions`]).

use std::collections::HashSet;
use std::sync::Arc;

use super::error::ApiError;
use super::wire::request::ToolChoiceParam;
use async_trait::async_trait;
use ossa_agent::ToolRequirement;
use ossa_tools::{
    FunctionTools, Placement, Tool, ToolCall, ToolDescription, ToolNamespaceConfig, ToolOutput,
    ToolSession,
};

/// The namespace the model calls functions in.
pub const NAMESPACE: &str = "functions";

/// A request's `tool_choice`, as far as it concerns functions (built-in tools are never
/// forced). Not [`crate::config::ToolChoice`], which picks the server's built-in tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionChoice {
    /// No functions: they are left out of the prompt.
    None,
    Auto,
    /// Some function must be called.
    Required,
    /// This function must be called.
    Function(String),
}

impl FunctionChoice {
    /// `none`, `auto`, `required`, or a function: `{"type": "function", "name": N}` (Responses)
    /// or `{"type": "function", "function": {"name": N}}` (Chat Completions).
    pub fn parse(value: Option<&ToolChoiceParam>) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::invalid("tool_choice".to_string(), message);
        match value {
            None => Ok(FunctionChoice::Auto),
            Some(ToolChoiceParam::Mode(choice)) => match choice.as_str() {
                "none" => Ok(FunctionChoice::None),
                "auto" => Ok(FunctionChoice::Auto),
                "required" => Ok(FunctionChoice::Required),
                other => Err(invalid(format!(
                    "`{other}` is not a tool choice (none, auto, required, or a function)"
                ))),
            },
            Some(ToolChoiceParam::Object(choice)) => {
                match choice.kind.as_deref() {
                    Some("function") => {}
                    // Built-in tools run server-side on the analysis channel; forcing them is
                    // not offered, so these choices leave the decision to the model.
                    Some(
                        "allowed_tools"
                        | "web_search"
                        | "web_search_preview"
                        | "web_search_preview_2025_03_11"
                        | "browser_search"
                        | "code_interpreter",
                    ) => return Ok(FunctionChoice::Auto),
                    Some(other) => {
                        return Err(invalid(format!(
                            "tool choices of type `{other}` are not supported (none, auto, required, a function, or a built-in tool)"
                        )));
                    }
                    None => return Err(invalid("a tool choice object needs a `type`".into())),
                }
                let name = choice
                    .name
                    .as_ref()
                    .or_else(|| choice.function.as_ref().and_then(|f| f.name.as_ref()))
                    .ok_or_else(|| {
                        invalid("a function tool choice needs the function's `name`".into())
                    })?;
                Ok(FunctionChoice::Function(name.clone()))
            }
        }
    }

    /// What the turn must call, given the functions the model has (`names`) and whether it
    /// has built-in tools (`required` with only those leaves the choice to the model: built-in
    /// calls are not forced).
    pub fn requirement(
        &self,
        names: &[String],
        has_builtins: bool,
    ) -> Result<ToolRequirement, ApiError> {
        let invalid = |message: String| ApiError::invalid("tool_choice".to_string(), message);
        match self {
            FunctionChoice::None | FunctionChoice::Auto => Ok(ToolRequirement::Auto),
            FunctionChoice::Required if names.is_empty() && has_builtins => {
                Ok(ToolRequirement::Auto)
            }
            FunctionChoice::Required if names.is_empty() => {
                Err(invalid("`required` needs tools in `tools`".into()))
            }
            FunctionChoice::Required => Ok(ToolRequirement::AnyIn(NAMESPACE.to_string())),
            FunctionChoice::Function(name) if names.iter().any(|n| n == name) => {
                Ok(ToolRequirement::Call(format!("{NAMESPACE}.{name}")))
            }
            FunctionChoice::Function(name) => Err(invalid(format!(
                "there is no function named `{name}` in `tools`"
            ))),
        }
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
}

impl RequestFunctions {
    /// `client` are the request's functions, `server` the server's own (when it has any).
    pub fn new(client: Vec<ToolDescription>, server: Option<FunctionTools>) -> Self {
        let client_names = Arc::new(client.iter().map(|t| t.name.clone()).collect());
        Self {
            client,
            client_names,
            server,
        }
    }

    /// The recipients (`functions.NAME`) the client answers.
    pub fn client_recipients(&self) -> Vec<String> {
        self.client
            .iter()
            .map(|t| format!("{NAMESPACE}.{}", t.name))
            .collect()
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
        })
    }
}

struct RequestFunctionsSession {
    client_names: Arc<HashSet<String>>,
    server: Option<Box<dyn ToolSession>>,
}

#[async_trait]
impl ToolSession for RequestFunctionsSession {
    async fn call(&mut self, call: &ToolCall) -> Vec<ToolOutput> {
        let name = function_name(&call.recipient).unwrap_or(&call.recipient);
        let text = if self.client_names.contains(name) {
            // The loop hands complete client calls to the client and answers the others
            // itself; only a call it refused to hand over could come here.
            format!("Error: the call to `{name}` was not made.")
        } else {
            match &mut self.server {
                Some(server) => return server.call(call).await,
                None => format!("Error: there is no function `{name}`."),
            }
        };
        vec![ToolOutput::text(call, call.recipient.clone(), text)]
    }
}
