//! One agent turn for an API request: the conversation the request describes, the tools it
//! chose, run to a final answer, a client function call, or a limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ossa_agent::Backend;
use ossa_agent::harmony::{Conversation, Message, RenderConversationConfig, Role};
use ossa_agent::{
    Agent, AgentConfig, AgentError, AgentEvent, CancellationToken, Chat, ConversationSettings,
    ToolRequirement, TurnOutcome, TurnReport,
};
use ossa_tools::{Tool, ToolCall, ToolDescription};

use super::error::ApiError;
use super::functions::{NAMESPACE, RequestFunctions};
use super::log::{RequestLog, Usage};
use super::state::ServerState;

/// What a request asks the agent to do.
#[derive(Clone)]
pub struct TurnSpec {
    pub settings: ConversationSettings,
    /// The messages after the system and developer messages.
    pub history: Vec<Message>,
    /// Built-in tools (`browser`, `python`) the request uses.
    pub builtins: Vec<Arc<dyn Tool>>,
    /// The client's function tools.
    pub client_functions: Vec<ToolDescription>,
    pub config: AgentConfig,
    /// What the model must call (`tool_choice`).
    pub tool_requirement: ToolRequirement,
}

/// What the turn did.
pub struct TurnResult {
    /// The whole conversation afterwards (ending with a client call's message, if any).
    pub conversation: Conversation,
    /// Index of the first message the turn added.
    pub first_message: usize,
    /// The client function the model called, which ended the turn.
    pub external_call: Option<ToolCall>,
    pub report: TurnReport,
}

impl TurnResult {
    pub fn new_messages(&self) -> &[Message] {
        &self.conversation.messages[self.first_message.min(self.conversation.messages.len())..]
    }
}

/// A turn ready to run: its conversation renders and fits the model's context.
pub struct Turn {
    chat: Chat,
    cancel: CancellationToken,
    log: Option<Arc<RequestLog>>,
}

/// Builds the turn `spec` describes; a conversation that leaves the model no room to answer
/// is refused (`context_length_exceeded`, naming `param`), before anything runs.
pub fn prepare(
    state: &Arc<ServerState>,
    spec: TurnSpec,
    cancel: &CancellationToken,
    param: &str,
) -> Result<Turn, ApiError> {
    let mut tools = spec.builtins;
    let server_functions =
        (!state.settings.functions.is_empty()).then(|| state.settings.functions.clone());
    let mut client_recipients = Vec::new();
    if !spec.client_functions.is_empty() || server_functions.is_some() {
        tools.retain(|t| t.name() != NAMESPACE);
        let functions = RequestFunctions::new(spec.client_functions, server_functions);
        client_recipients = functions.client_recipients();
        tools.push(Arc::new(functions));
    }
    let agent = Agent::new(
        state.backend.clone(),
        state.settings.encoding.clone(),
        tools,
        spec.config,
    );
    let mut conversation = Conversation::from_messages(agent.preamble(&spec.settings));
    conversation.messages.extend(spec.history);
    let prompt = state
        .settings
        .encoding
        .render_conversation_for_completion(
            &conversation,
            Role::Assistant,
            Some(&RenderConversationConfig::default()),
        )
        .map_err(|e| {
            ApiError::invalid(None, format!("the conversation cannot be rendered: {e}"))
        })?;
    let context = state.backend.context_length();
    if prompt.len() >= context {
        return Err(ApiError::context(
            param,
            format!(
                "This model's maximum context length is {context} tokens. However, your \
                 conversation resulted in {} tokens, which leaves no room for an answer. Please \
                 reduce the length of the {param}.",
                prompt.len()
            ),
        ));
    }
    let mut chat = agent.chat_from(conversation);
    chat.set_tool_requirement(spec.tool_requirement);
    chat.set_client_functions(client_recipients);
    Ok(Turn {
        chat,
        cancel: cancel.clone(),
        log: None,
    })
}

impl Turn {
    /// The request's log line gets the turn's tokens and queue wait.
    pub fn log_to(mut self, log: Arc<RequestLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Runs the turn; `on_event` sees what happens as it happens (a cancelled call's
    /// placeholder result excluded).
    pub async fn run(
        self,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<TurnResult, ApiError> {
        let Turn {
            mut chat,
            cancel,
            log,
        } = self;
        // What each generation did not spend computing, it spent waiting for the engine.
        let mut queue_wait = Duration::ZERO;
        let mut generation_started = Instant::now();
        let mut filtered = |event: AgentEvent| {
            match &event {
                AgentEvent::GenerationStarted { .. } => generation_started = Instant::now(),
                AgentEvent::GenerationFinished(stats) => {
                    queue_wait += generation_started
                        .elapsed()
                        .saturating_sub(stats.prefill + stats.decode);
                }
                _ => {}
            }
            if let AgentEvent::ToolResult { .. } = &event
                && cancel.is_cancelled()
            {
                // The placeholder for a disconnected client's call: nobody reads it.
                return;
            }
            on_event(event);
        };
        let report = chat
            .run_turn(&cancel, &mut filtered)
            .await
            .map_err(agent_error)?;
        if let Some(log) = log {
            log.record(Usage {
                prompt_tokens: report.prompt_tokens(),
                completion_tokens: report.generated_tokens(),
                queue_wait,
            });
        }
        let external_call = match &report.outcome {
            // One call per turn: the loop ends at the first (`parallel_tool_calls` is false).
            TurnOutcome::FunctionCalls(calls) => calls.first().cloned(),
            _ => None,
        };
        Ok(TurnResult {
            conversation: chat.conversation().clone(),
            first_message: report.first_message,
            external_call,
            report,
        })
    }
}

fn agent_error(error: AgentError) -> ApiError {
    match error {
        AgentError::Harmony(e) => {
            ApiError::invalid(None, format!("the conversation cannot be rendered: {e}"))
        }
        AgentError::Backend(e) => ApiError::backend(&e),
        other => ApiError::server(other.to_string()),
    }
}

/// Why a turn ended, as OpenAI's `finish_reason`.
pub fn finish_reason(result: &TurnResult) -> &'static str {
    if result.external_call.is_some() {
        return "tool_calls";
    }
    match &result.report.outcome {
        TurnOutcome::Final | TurnOutcome::NoAnswer | TurnOutcome::Cancelled => "stop",
        TurnOutcome::FunctionCalls(_) => "tool_calls",
        TurnOutcome::Limit(_) => "length",
    }
}

/// The tool kind the API shows for a built-in call (`python` → code interpreter).
pub fn builtin_kind(recipient: &str) -> &'static str {
    if recipient == "python" || recipient.starts_with("python.") {
        "code_interpreter"
    } else if recipient.starts_with("browser.") {
        "web_search"
    } else {
        "function"
    }
}
