//! The agent loop: render the conversation, sample until the model acts, parse, run the tool it
//! called, append the result, and go again until it answers.
//!
//! [`Agent`] holds what conversations share (backend, encoding, tools, limits); a [`Chat`] is one
//! conversation with its tool sessions (browser page stack, Python interpreter).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossa_engine::{CancellationToken, SamplingParams, TokenLogprobs};
use ossa_tools::{Placement, Tool, ToolCall, ToolOutput, ToolSession};
use tokio::sync::mpsc;

use crate::backend::{
    Backend, BackendError, Finish, GenerationRequest, GenerationStats, LogprobSink,
};
use crate::harmony::{
    Author, Content, Conversation, DeveloperContent, HarmonyEncoding, HarmonyError, Message,
    ParseMode, ReasoningEffort, RenderConversationConfig, Role, StreamState, StreamableParser,
    SystemContent, ToolNamespaceConfig,
};
use crate::structured::{HarmonyMask, StructuredOutputs};

/// Limits and sampling shared by every conversation of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sampling: SamplingParams,
    /// Most tokens one generation call may sample; `None`: whatever the context has left.
    pub max_tokens: Option<usize>,
    /// Most tool calls in one turn (a runaway loop ends here).
    pub max_tool_calls: usize,
    /// Most time one turn may take, generation and tools together.
    pub wall_time: Option<Duration>,
    /// JSON the answer or a function's arguments must follow, enforced while sampling.
    pub structured: Option<Arc<StructuredOutputs>>,
    /// Report the answer's tokens' log-probabilities with this many alternatives each
    /// ([`AgentEvent::FinalLogprobs`]; backends that sample in this process only).
    pub logprobs: Option<usize>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::greedy(),
            max_tokens: None,
            max_tool_calls: 32,
            wall_time: None,
            structured: None,
            logprobs: None,
        }
    }
}

/// How a new conversation starts: the system message's settings and the developer's
/// instructions.
#[derive(Debug, Clone)]
pub struct ConversationSettings {
    pub reasoning_effort: ReasoningEffort,
    /// `YYYY-MM-DD`, rendered as `Current date: ...`.
    pub conversation_start_date: Option<String>,
    /// `None` keeps harmony's default identity.
    pub model_identity: Option<String>,
    pub developer_instructions: Option<String>,
}

impl Default for ConversationSettings {
    fn default() -> Self {
        Self {
            reasoning_effort: ReasoningEffort::Low,
            conversation_start_date: None,
            model_identity: None,
            developer_instructions: None,
        }
    }
}

/// Whether a turn must call a tool (OpenAI's `tool_choice`), enforced in harmony terms by
/// writing part of the assistant's message header for the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolRequirement {
    /// The model decides.
    #[default]
    Auto,
    /// The turn's first action calls this recipient (`functions.get_weather`): the header
    /// `<|channel|>commentary to=RECIPIENT <|constrain|>json<|message|>` is written for the
    /// model, which writes only the arguments.
    Call(String),
    /// The turn calls a tool of this namespace (`functions`) before it answers: the model
    /// reasons freely, but when it starts a `final` answer first, that message is cut off
    /// before any of its text and the model is sampled again from
    /// `<|channel|>commentary to=NAMESPACE.`, so it has to name one.
    AnyIn(String),
}

impl ToolRequirement {
    /// Whether a call of `recipient` meets the requirement.
    fn met_by(&self, recipient: &str) -> bool {
        match self {
            ToolRequirement::Auto => true,
            ToolRequirement::Call(wanted) => recipient == wanted,
            ToolRequirement::AnyIn(namespace) => recipient
                .strip_prefix(namespace.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }
}

/// What happens during a turn, in order, as it happens.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// A generation call begins with a prompt of this many tokens.
    GenerationStarted {
        prompt_tokens: usize,
    },
    /// Chain of thought (channel `analysis`).
    ReasoningDelta(String),
    /// A preamble to the user (channel `commentary`, no recipient).
    CommentaryDelta(String),
    /// The answer (channel `final`, or no channel).
    FinalDelta(String),
    /// The log-probabilities of one token of the answer (with [`AgentConfig::logprobs`]),
    /// sent before the [`AgentEvent::FinalDelta`] that carries its text (a token that ends
    /// mid-character shows its text with the next one).
    FinalLogprobs(TokenLogprobs),
    /// Arguments (JSON, or code for `python`) of a tool call being written.
    ToolArgumentsDelta {
        recipient: String,
        delta: String,
    },
    /// A complete message from the model.
    Message(Message),
    /// The model called a tool; the call runs now (a client function's call: the turn ends
    /// with it, [`TurnOutcome::FunctionCalls`]).
    ToolCall(ToolCall),
    /// A tool answered.
    ToolResult {
        call: ToolCall,
        output: ToolOutput,
    },
    GenerationFinished(GenerationStats),
    /// The URLs of the pages the browser has shown in this conversation, by cursor, after a
    /// call that may have opened one: what turns the answer's `【cursor†Lx-Ly】` citations into
    /// links while it streams.
    PageUrls(Vec<String>),
    /// Something went wrong that the turn recovered from (malformed output, a tool error).
    Warning(String),
}

/// A limit that ended a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    ToolCalls(usize),
    /// One generation sampled this many tokens without finishing its message.
    Tokens(usize),
    WallTime(Duration),
    /// The conversation no longer fits the model's context.
    Context {
        needed: usize,
        max: usize,
    },
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::ToolCalls(n) => write!(f, "reached the limit of {n} tool calls"),
            Limit::Tokens(n) => write!(f, "reached the limit of {n} tokens in one generation"),
            Limit::WallTime(d) => write!(f, "reached the time limit of {} s", d.as_secs()),
            Limit::Context { needed, max } => write!(
                f,
                "the conversation needs {needed} tokens but the model's context holds {max}"
            ),
        }
    }
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnOutcome {
    /// The model answered on the `final` channel.
    Final,
    /// The model called functions the caller runs itself ([`Chat::set_client_functions`]):
    /// the conversation ends with the call message, and the caller appends each call's result
    /// (a tool message) before the next turn.
    FunctionCalls(Vec<ToolCall>),
    /// The model stopped without a final answer (it ended on a preamble or produced nothing
    /// parseable).
    NoAnswer,
    Cancelled,
    Limit(Limit),
}

/// What a turn did.
#[derive(Debug, Clone)]
pub struct TurnReport {
    pub outcome: TurnOutcome,
    /// The text of the final message, when there is one.
    pub answer: Option<String>,
    /// Index of the first message this turn added to the conversation.
    pub first_message: usize,
    pub generations: Vec<GenerationStats>,
    pub tool_calls: usize,
    pub elapsed: Duration,
}

impl TurnReport {
    /// Generation calls whose prompt reused cached tokens.
    pub fn cache_hits(&self) -> usize {
        self.generations
            .iter()
            .filter(|g| g.reused_tokens > 0)
            .count()
    }

    pub fn prompt_tokens(&self) -> usize {
        self.generations.iter().map(|g| g.prompt_tokens).sum()
    }

    pub fn reused_tokens(&self) -> usize {
        self.generations.iter().map(|g| g.reused_tokens).sum()
    }

    pub fn generated_tokens(&self) -> usize {
        self.generations.iter().map(|g| g.generated_tokens).sum()
    }
}

/// Errors that end a turn (tool failures do not: the model reads them).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("rendering the conversation: {0}")]
    Harmony(#[from] HarmonyError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the generation thread failed: {0}")]
    Generation(String),
}

/// What conversations share: the backend, the encoding, the tools and the limits.
pub struct Agent {
    backend: Arc<dyn Backend>,
    encoding: HarmonyEncoding,
    tools: Vec<Arc<dyn Tool>>,
    config: AgentConfig,
}

impl Agent {
    pub fn new(
        backend: Arc<dyn Backend>,
        encoding: HarmonyEncoding,
        tools: Vec<Arc<dyn Tool>>,
        config: AgentConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            backend,
            encoding,
            tools,
            config,
        })
    }

    /// The same agent whose generations follow `outputs` (`ossa run --schema`).
    pub fn with_structured_outputs(&self, outputs: StructuredOutputs) -> Arc<Self> {
        let mut config = self.config.clone();
        config.structured = Some(Arc::new(outputs));
        Agent::new(
            Arc::clone(&self.backend),
            self.encoding.clone(),
            self.tools.clone(),
            config,
        )
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn encoding(&self) -> &HarmonyEncoding {
        &self.encoding
    }

    pub fn tools(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The system message, and a developer message when there are instructions or function
    /// tools: built-in namespaces go into the system message, functions into the developer's.
    pub fn preamble(&self, settings: &ConversationSettings) -> Vec<Message> {
        let mut system = SystemContent::new().with_reasoning_effort(settings.reasoning_effort);
        if let Some(date) = &settings.conversation_start_date {
            system = system.with_conversation_start_date(date.clone());
        }
        if let Some(identity) = &settings.model_identity {
            system = system.with_model_identity(identity.clone());
        }
        let mut developer_tools: Vec<ToolNamespaceConfig> = Vec::new();
        for tool in &self.tools {
            let namespace = tool.namespace();
            match tool.placement() {
                Placement::System => system = system.with_tools(namespace),
                Placement::Developer => {
                    // Several function providers (typed, MCP, apply_patch) share `functions`.
                    match developer_tools
                        .iter_mut()
                        .find(|n| n.name == namespace.name)
                    {
                        Some(existing) => existing.tools.extend(namespace.tools),
                        None => developer_tools.push(namespace),
                    }
                }
            }
        }
        let mut messages = vec![Message::from_role_and_content(Role::System, system)];
        if settings.developer_instructions.is_some() || !developer_tools.is_empty() {
            let mut developer = DeveloperContent::new();
            if let Some(instructions) = &settings.developer_instructions {
                developer = developer.with_instructions(instructions.clone());
            }
            for namespace in developer_tools {
                developer = developer.with_tools(namespace);
            }
            messages.push(Message::from_role_and_content(Role::Developer, developer));
        }
        messages
    }

    /// A new conversation.
    pub fn chat(self: &Arc<Self>, settings: &ConversationSettings) -> Chat {
        self.chat_from(Conversation::from_messages(self.preamble(settings)))
    }

    /// Continues a saved conversation (its system and developer messages are kept as saved).
    pub fn chat_from(self: &Arc<Self>, conversation: Conversation) -> Chat {
        Chat {
            agent: Arc::clone(self),
            conversation,
            sessions: HashMap::new(),
            requirement: ToolRequirement::Auto,
            client_functions: HashSet::new(),
        }
    }
}

/// One conversation and its tool sessions.
pub struct Chat {
    agent: Arc<Agent>,
    conversation: Conversation,
    sessions: HashMap<String, Box<dyn ToolSession>>,
    requirement: ToolRequirement,
    /// Recipients (`functions.get_weather`) the caller answers: a call to one ends the turn.
    client_functions: HashSet<String>,
}

/// Why the loop stopped a generation early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    Cancelled,
    Deadline,
    /// The model began a final answer while a tool call is required.
    AnswerBeforeCall,
}

impl Interrupt {
    /// The answer a call gets when this interrupt keeps it from running.
    fn call_note(self) -> &'static str {
        match self {
            Interrupt::Deadline => "[ERROR] The turn's time limit ended this call.",
            _ => "[ERROR] The user cancelled this call.",
        }
    }
}

impl Chat {
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Drops the messages after the system and developer messages and the tools' state.
    pub fn reset(&mut self) {
        self.conversation.messages.retain(|m| {
            matches!(m.author.role, Role::System | Role::Developer) && m.recipient.is_none()
        });
        self.sessions.clear();
    }

    /// Changes the reasoning effort from the next turn on.
    pub fn set_reasoning_effort(&mut self, effort: ReasoningEffort) {
        for message in &mut self.conversation.messages {
            for content in &mut message.content {
                if let Content::SystemContent(system) = content {
                    system.reasoning_effort = Some(effort);
                }
            }
        }
    }

    /// Continues with `agent` (the same backend and tools configured otherwise: sampling,
    /// limits), keeping the conversation and the tools' state.
    pub fn set_agent(&mut self, agent: Arc<Agent>) {
        self.agent = agent;
    }

    /// Replaces the developer's instructions from the next turn on (`None` removes them); the
    /// function tools of the developer message stay.
    pub fn set_developer_instructions(&mut self, instructions: Option<String>) {
        let developer = self
            .conversation
            .messages
            .iter_mut()
            .filter(|m| m.author.role == Role::Developer)
            .flat_map(|m| m.content.iter_mut())
            .find_map(|c| match c {
                Content::DeveloperContent(developer) => Some(developer),
                _ => None,
            });
        match (developer, instructions) {
            (Some(developer), instructions) => developer.instructions = instructions,
            (None, Some(instructions)) => {
                let after_system = self
                    .conversation
                    .messages
                    .iter()
                    .position(|m| m.author.role != Role::System)
                    .unwrap_or(self.conversation.messages.len());
                let content = DeveloperContent::new().with_instructions(instructions);
                self.conversation.messages.insert(
                    after_system,
                    Message::from_role_and_content(Role::Developer, content),
                );
            }
            (None, None) => {}
        }
    }

    /// What each following turn must call ([`ToolRequirement::Auto`] unless set).
    pub fn set_tool_requirement(&mut self, requirement: ToolRequirement) {
        self.requirement = requirement;
    }

    /// Recipients (`functions.get_weather`) the caller runs itself: a complete call to one ends
    /// the turn with [`TurnOutcome::FunctionCalls`] instead of running a tool. A call is complete
    /// when its message ends with `<|call|>` (or was begun for the model by a
    /// [`ToolRequirement::Call`]) and its arguments are JSON; any other call is answered to the
    /// model with an error tool message, and the turn goes on (within its tool-call limit).
    pub fn set_client_functions(&mut self, recipients: impl IntoIterator<Item = String>) {
        self.client_functions = recipients.into_iter().collect();
    }

    /// The tokens written for the model at the start of its message: the header up to the
    /// recipient (`Call`: up to the content) in the form gpt-oss samples it.
    fn forced_header(&self, requirement: &ToolRequirement) -> Result<Vec<u32>, AgentError> {
        let encoding = &self.agent.encoding;
        let t = encoding.formatting_tokens();
        let tokenizer = encoding.tokenizer();
        let mut tokens = vec![t.channel];
        match requirement {
            ToolRequirement::Auto => return Ok(Vec::new()),
            ToolRequirement::Call(recipient) => {
                tokenizer
                    .encode_ordinary_into(&format!("commentary to={recipient} "), &mut tokens)
                    .map_err(HarmonyError::from)?;
                tokens.push(t.constrain);
                tokenizer
                    .encode_ordinary_into("json", &mut tokens)
                    .map_err(HarmonyError::from)?;
                tokens.push(t.message);
            }
            ToolRequirement::AnyIn(namespace) => tokenizer
                .encode_ordinary_into(&format!("commentary to={namespace}."), &mut tokens)
                .map_err(HarmonyError::from)?,
        }
        Ok(tokens)
    }

    /// URLs of the pages the browser showed in this conversation, by cursor (for citations).
    pub fn citation_urls(&self) -> Vec<String> {
        self.sessions
            .values()
            .find_map(|s| s.citation_urls())
            .unwrap_or_default()
    }

    /// Adds the user's message and runs the turn to its end.
    pub async fn send(
        &mut self,
        text: &str,
        cancel: &CancellationToken,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<TurnReport, AgentError> {
        self.conversation
            .messages
            .push(Message::from_role_and_content(Role::User, text));
        self.run_turn(cancel, on_event).await
    }

    /// Lets the assistant act on the conversation as it stands (e.g. after appending tool
    /// results by hand or loading a saved conversation).
    pub async fn run_turn(
        &mut self,
        cancel: &CancellationToken,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<TurnReport, AgentError> {
        let started = Instant::now();
        let deadline = self
            .agent
            .config
            .wall_time
            .map(|d| tokio::time::Instant::now() + d);
        let mut requirement = self.requirement.clone();
        // `AnyIn`: the model started an answer instead of a call; its next message is forced.
        let mut force_call = false;
        let mut report = TurnReport {
            outcome: TurnOutcome::NoAnswer,
            answer: None,
            first_message: self.conversation.messages.len(),
            generations: Vec::new(),
            tool_calls: 0,
            elapsed: Duration::ZERO,
        };
        report.outcome = loop {
            let mut prompt = self.agent.encoding.render_conversation_for_completion(
                &self.conversation,
                Role::Assistant,
                Some(&RenderConversationConfig::default()),
            )?;
            let forced = match &requirement {
                ToolRequirement::Call(_) => self.forced_header(&requirement)?,
                ToolRequirement::AnyIn(_) if force_call => self.forced_header(&requirement)?,
                _ => Vec::new(),
            };
            prompt.extend_from_slice(&forced);
            let redirect_answers = matches!(requirement, ToolRequirement::AnyIn(_)) && !force_call;
            let context = self.agent.backend.context_length();
            if prompt.len() >= context {
                break TurnOutcome::Limit(Limit::Context {
                    needed: prompt.len() + 1,
                    max: context,
                });
            }
            let room = context - prompt.len();
            let max_tokens = self.agent.config.max_tokens.map_or(room, |m| m.min(room));
            // A generation cut off where the context ends is the context's limit, not the
            // response's.
            let token_limit = if max_tokens == room {
                Limit::Context {
                    needed: context + 1,
                    max: context,
                }
            } else {
                Limit::Tokens(max_tokens)
            };
            on_event(AgentEvent::GenerationStarted {
                prompt_tokens: prompt.len(),
            });
            let (messages, stats, interrupt) = self
                .generate(
                    prompt,
                    forced.len(),
                    max_tokens,
                    redirect_answers,
                    cancel,
                    deadline,
                    on_event,
                )
                .await?;
            report.generations.push(stats);
            on_event(AgentEvent::GenerationFinished(stats));
            let call = messages.last().and_then(as_tool_call);
            self.conversation.messages.extend(messages);
            match interrupt {
                Some(interrupt @ (Interrupt::Cancelled | Interrupt::Deadline)) => {
                    // The call may have been complete when the interrupt came.
                    if let Some(call) = &call {
                        self.answer_unrun_call(call, interrupt.call_note(), on_event);
                    }
                    break self.interrupted(interrupt);
                }
                Some(Interrupt::AnswerBeforeCall) => {
                    force_call = true;
                    continue;
                }
                None => {}
            }
            let client_call = call
                .as_ref()
                .is_some_and(|c| self.client_functions.contains(&c.recipient));
            let ended_call =
                stats.finish == Finish::Stop(self.agent.encoding.formatting_tokens().call);
            // Why a client's call cannot be handed over; the model reads it and may call again.
            let refusal = call.as_ref().filter(|_| client_call).and_then(|c| {
                if stats.finish == Finish::MaxTokens {
                    // Cut off: the token limit ends the turn below.
                    None
                } else if !ended_call && forced.is_empty() {
                    Some(
                        "[ERROR] The call was not made: its message did not end with <|call|>. \
                         End a function call with <|call|>."
                            .to_string(),
                    )
                } else {
                    serde_json::from_str::<serde_json::Value>(&c.content)
                        .err()
                        .map(|e| {
                            format!(
                                "[ERROR] The call was not made: its arguments are not valid \
                                 JSON ({e}). Call the function again with a JSON object."
                            )
                        })
                }
            });
            if refusal.is_none()
                && (!forced.is_empty()
                    || call
                        .as_ref()
                        .is_some_and(|c| requirement.met_by(&c.recipient)))
            {
                // Required once: what follows the call is up to the model.
                requirement = ToolRequirement::Auto;
                force_call = false;
            }
            if let Some(call) = call {
                if !ended_call && stats.finish == Finish::MaxTokens {
                    // A call cut off by the token limit: its arguments are incomplete.
                    break TurnOutcome::Limit(token_limit);
                }
                if client_call && refusal.is_none() {
                    on_event(AgentEvent::ToolCall(call.clone()));
                    break TurnOutcome::FunctionCalls(vec![call]);
                }
                if report.tool_calls >= self.agent.config.max_tool_calls {
                    self.answer_unrun_call(
                        &call,
                        "[ERROR] This turn reached its limit of tool calls.",
                        on_event,
                    );
                    break TurnOutcome::Limit(Limit::ToolCalls(self.agent.config.max_tool_calls));
                }
                report.tool_calls += 1;
                if let Some(refusal) = refusal {
                    self.answer_unrun_call(&call, &refusal, on_event);
                    continue;
                }
                on_event(AgentEvent::ToolCall(call.clone()));
                match self.call_tool(&call, cancel, deadline).await {
                    Ok(outputs) => {
                        for mut output in outputs {
                            // Pages, programs and servers may print escape sequences; neither
                            // the model nor a terminal showing the result gets them.
                            ossa_tools::strip_controls_in_place(&mut output.content);
                            self.conversation
                                .messages
                                .push(tool_message(&call, &output));
                            on_event(AgentEvent::ToolResult {
                                call: call.clone(),
                                output,
                            });
                        }
                        let urls = self.citation_urls();
                        if !urls.is_empty() {
                            on_event(AgentEvent::PageUrls(urls));
                        }
                    }
                    Err(interrupt) => {
                        self.answer_unrun_call(&call, interrupt.call_note(), on_event);
                        break self.interrupted(interrupt);
                    }
                }
                continue;
            }
            if stats.finish == Finish::MaxTokens {
                break TurnOutcome::Limit(token_limit);
            }
            let last = self.conversation.messages[report.first_message..]
                .iter()
                .rev()
                .find(|m| m.author.role == Role::Assistant);
            break match last {
                Some(message) if is_answer(message) => TurnOutcome::Final,
                _ => TurnOutcome::NoAnswer,
            };
        };
        if report.outcome == TurnOutcome::Final {
            report.answer = self
                .conversation
                .messages
                .last()
                .filter(|m| is_answer(m))
                .map(Message::text);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Gives a call that will not run an answer, so the conversation stays well-formed (every
    /// call is followed by its tool's message).
    fn answer_unrun_call(
        &mut self,
        call: &ToolCall,
        text: &str,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
    ) {
        let output = ToolOutput::text(call, call.recipient.clone(), text);
        self.conversation.messages.push(tool_message(call, &output));
        on_event(AgentEvent::ToolResult {
            call: call.clone(),
            output,
        });
    }

    fn interrupted(&self, interrupt: Interrupt) -> TurnOutcome {
        match interrupt {
            Interrupt::Deadline => wall_time_limit(&self.agent.config),
            _ => TurnOutcome::Cancelled,
        }
    }

    /// Samples one assistant action and parses it as it streams. The prompt's last `forced`
    /// tokens open the assistant's message (written for the model); with `redirect_answers`,
    /// the generation stops as soon as a `final` message's header is complete.
    #[allow(clippy::too_many_arguments)]
    async fn generate(
        &mut self,
        prompt: Vec<u32>,
        forced: usize,
        max_tokens: usize,
        redirect_answers: bool,
        cancel: &CancellationToken,
        deadline: Option<tokio::time::Instant>,
        on_event: &mut (dyn FnMut(AgentEvent) + Send),
    ) -> Result<(Vec<Message>, GenerationStats, Option<Interrupt>), AgentError> {
        let encoding = &self.agent.encoding;
        let stop = CancellationToken::new();
        // Stops the generation if the turn's future is dropped (a client went away).
        let _stop_on_drop = stop.clone().drop_guard();
        let backend = Arc::clone(&self.agent.backend);
        // A message begun for the model is the call: it ends with the message, whichever
        // end token the model picks.
        let stop_tokens = if forced > 0 {
            encoding.stop_tokens()
        } else {
            encoding.stop_tokens_for_assistant_actions()
        };
        let forced_tokens = prompt[prompt.len().saturating_sub(forced)..].to_vec();
        let sampling = self.agent.config.sampling.clone();
        let structured = self
            .agent
            .config
            .structured
            .clone()
            .filter(|s| !s.is_empty());
        let mask = structured
            .as_ref()
            .map(|s| HarmonyMask::new(encoding, Arc::clone(s), &forced_tokens).shared());
        let logprobs = self.agent.config.logprobs.map(LogprobSink::new);
        let generation_cancel = stop.clone();
        let (sender, mut tokens) = mpsc::unbounded_channel();
        let worker = tokio::task::spawn_blocking(move || {
            let request = GenerationRequest {
                prompt: &prompt,
                max_tokens,
                stop_tokens: &stop_tokens,
                sampling,
                cancel: generation_cancel,
                mask,
                logprobs,
            };
            backend.generate(&request, &mut |token| {
                let logprobs = request.logprobs.as_ref().and_then(LogprobSink::take);
                // The receiver is gone only when the turn was dropped, and then the
                // generation is being cancelled anyway.
                let _ = sender.send((token, logprobs));
            })
        });
        let mut parser =
            StreamableParser::new(encoding.clone(), Some(Role::Assistant), ParseMode::Lenient);
        for &token in &forced_tokens {
            if let Err(e) = parser.process(token) {
                on_event(AgentEvent::Warning(format!(
                    "unparseable forced header: {e}"
                )));
            }
        }
        let mut interrupt = None;
        let mut forced_done = false;
        let mut reported = 0;
        let deadline_sleep = until(deadline);
        tokio::pin!(deadline_sleep);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if interrupt.is_none() => {
                    interrupt = Some(Interrupt::Cancelled);
                    stop.cancel();
                }
                _ = &mut deadline_sleep, if interrupt.is_none() => {
                    interrupt = Some(Interrupt::Deadline);
                    stop.cancel();
                }
                token = tokens.recv() => {
                    let Some((token, logprobs)) = token else { break };
                    if interrupt == Some(Interrupt::AnswerBeforeCall) || forced_done {
                        // The answer being cut off, or what follows a forced call: nothing of
                        // it is shown.
                        continue;
                    }
                    // Lenient parsing never fails; an error here would be a parser bug, and
                    // the turn goes on with what was parsed.
                    if let Err(e) = parser.process(token) {
                        on_event(AgentEvent::Warning(format!("unparseable model output: {e}")));
                    }
                    for message in &parser.messages()[reported..] {
                        on_event(AgentEvent::Message(message.clone()));
                    }
                    reported = parser.messages().len();
                    if forced > 0 && reported > 0 {
                        // The message begun for the model is complete (however it ended, a
                        // lenient parse included): it is the call, and the action is over.
                        forced_done = true;
                        stop.cancel();
                        continue;
                    }
                    if redirect_answers
                        && interrupt.is_none()
                        && parser.current_recipient().is_none()
                        && parser.current_channel() == Some("final")
                    {
                        interrupt = Some(Interrupt::AnswerBeforeCall);
                        stop.cancel();
                        continue;
                    }
                    if let Some(logprobs) = logprobs
                        && parser.state() == StreamState::Content
                        && !encoding.tokenizer().is_special(token)
                        && parser.current_recipient().is_none()
                        && matches!(parser.current_channel(), None | Some("final"))
                    {
                        on_event(AgentEvent::FinalLogprobs(logprobs));
                    }
                    if let Some(delta) = parser.last_content_delta() {
                        on_event(delta_event(&parser, delta.to_string()));
                    }
                }
            }
        }
        let stats = worker
            .await
            .map_err(|e| AgentError::Generation(e.to_string()))??;
        // The mask keeps a header from ending in text shown outside the schema, but cannot
        // keep the budget from cutting it off: such a header is dropped, not recovered.
        let cut_header_escapes = structured.as_ref().is_some_and(|s| {
            parser
                .message_if_header_ended_by(None)
                .is_some_and(|m| s.escapes(&m, false))
        });
        if interrupt.is_none() && !forced_done && !cut_header_escapes {
            if let Err(e) = parser.process_eos() {
                on_event(AgentEvent::Warning(format!(
                    "unparseable model output: {e}"
                )));
            }
            for message in &parser.messages()[reported..] {
                on_event(AgentEvent::Message(message.clone()));
            }
        }
        // A cancelled message is left out: only complete messages enter the conversation.
        let messages = parser.into_messages();
        Ok((messages, stats, interrupt))
    }

    /// Runs a call on the tool its recipient names, or explains to the model why not.
    async fn call_tool(
        &mut self,
        call: &ToolCall,
        cancel: &CancellationToken,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<ToolOutput>, Interrupt> {
        let namespace = call
            .recipient
            .split_once('.')
            .map_or(call.recipient.as_str(), |(namespace, _)| namespace);
        let Some(tool) = self.agent.tools.iter().find(|t| t.name() == namespace) else {
            let available: Vec<&str> = self.agent.tools.iter().map(|t| t.name()).collect();
            let text = if available.is_empty() {
                format!(
                    "Error: there is no tool `{}`; no tools are available in this conversation. Answer without tools.",
                    call.recipient
                )
            } else {
                format!(
                    "Error: there is no tool `{}`. Available tools: {}.",
                    call.recipient,
                    available.join(", ")
                )
            };
            return Ok(vec![ToolOutput::text(call, call.recipient.clone(), text)]);
        };
        let session = self
            .sessions
            .entry(namespace.to_string())
            .or_insert_with(|| tool.open_session());
        let deadline_sleep = until(deadline);
        let mut outputs = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Interrupt::Cancelled),
            _ = deadline_sleep => return Err(Interrupt::Deadline),
            outputs = session.call(call) => outputs,
        };
        if outputs.is_empty() {
            outputs.push(ToolOutput::text(
                call,
                call.recipient.clone(),
                "[WARN] The tool returned nothing.",
            ));
        }
        Ok(outputs)
    }
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn wall_time_limit(config: &AgentConfig) -> TurnOutcome {
    TurnOutcome::Limit(Limit::WallTime(config.wall_time.unwrap_or_default()))
}

/// The event for a content delta of the message being parsed.
fn delta_event(parser: &StreamableParser, delta: String) -> AgentEvent {
    if let Some(recipient) = parser.current_recipient().filter(|r| *r != "all") {
        return AgentEvent::ToolArgumentsDelta {
            recipient: recipient.to_string(),
            delta,
        };
    }
    match parser.current_channel() {
        Some("analysis") => AgentEvent::ReasoningDelta(delta),
        Some("commentary") => AgentEvent::CommentaryDelta(delta),
        _ => AgentEvent::FinalDelta(delta),
    }
}

/// An assistant message addressed to a tool.
fn as_tool_call(message: &Message) -> Option<ToolCall> {
    if message.author.role != Role::Assistant {
        return None;
    }
    let recipient = message.recipient.as_deref().filter(|r| *r != "all")?;
    Some(ToolCall {
        recipient: recipient.to_string(),
        channel: message.channel.clone(),
        content_type: message.content_type.clone(),
        content: message.text(),
    })
}

/// A message that answers the user: the assistant's, on `final` (or with no channel).
fn is_answer(message: &Message) -> bool {
    message.author.role == Role::Assistant
        && message.recipient.is_none()
        && matches!(message.channel.as_deref(), Some("final") | None)
}

/// The harmony message carrying a tool's output back to the model (as the loop appends it).
pub fn tool_message(call: &ToolCall, output: &ToolOutput) -> Message {
    let mut message = Message::from_author_and_content(
        Author::new(Role::Tool, output.author.clone()),
        output.content.clone(),
    )
    .with_recipient("assistant");
    if let Some(channel) = output.channel.clone().or_else(|| call.channel.clone()) {
        message = message.with_channel(channel);
    }
    message
}
