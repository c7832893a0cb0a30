//! `POST /v1/chat/completions`.
//!
//! Messages map to harmony as gpt-oss expects: `system`/`developer` text becomes the developer
//! message's instructions; an assistant message's `reasoning_content` (or `reasoning`) its
//! `analysis` message, its `tool_calls` calls on the `commentary` channel to
//! `functions.NAME`, its `content` the `final` answer (a `commentary` preamble when it comes with
//! tool calls); a `tool` message the function's output.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use ossa_agent::harmony::{Author, Message, Role};
use ossa_agent::{AgentConfig, AgentEvent, CancellationToken};
use ossa_tools::citations::{Annotation, CitationStream, StreamChunk, normalize_citations};
use ossa_tools::{ToolCall, ToolDescription};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::ServerState;
use super::error::{ApiError, parse_body};
use super::functions::{ToolChoice, function_name};
use super::log::RequestLog;
use super::params::{
    ChatLogprobsParams, Fields, ResponseFormat, TextFormat, TokenLogprob, content_text,
    logprobs_request, new_id, now, parse_effort, strict_functions, structured_outputs, typed,
    with_format_section,
};
use super::queue::Slot;
use super::stop::{self, StopText};
use super::turn::{self, TurnResult, TurnSpec, builtin_kind};
use super::wire::chat::{
    self as wire, AssistantRole, ChatCompletion, ChatCompletionChunk, ChatCompletionChunkTag,
    ChatCompletionTag, ChatMessage, Choice, ChunkChoice, Delta, FunctionCall, FunctionType,
    Logprobs, PromptTokensDetails, ServerToolCall, Usage,
};

/// Cancels the turn when the response (or the handler) is dropped: the client went away.
pub(super) struct CancelOnDrop(pub CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A parsed request.
struct ChatRequest {
    stream: bool,
    include_usage: bool,
    client_names: Vec<String>,
    /// `stop`: the answer ends before the first of these.
    stop: Vec<String>,
    /// `logprobs: true`: the answer's tokens come with their log-probabilities.
    logprobs: bool,
}

pub async fn create(
    State(state): State<Arc<ServerState>>,
    Extension(log): Extension<Arc<RequestLog>>,
    body: Bytes,
) -> Response {
    let (request, spec) = match parse_body(&body).and_then(|body| parse_request(&state, &body)) {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let cancel = state.request_cancel();
    let guard = CancelOnDrop(cancel.clone());
    let started = turn::prepare(&state, spec, &cancel, "messages")
        .map(|turn| turn.log_to(log))
        .and_then(|prepared| Ok((prepared, state.admit()?)));
    let (prepared, slot) = match started {
        Ok(started) => started,
        Err(error) => return error.into_response(),
    };
    if request.stream {
        stream(state, request, prepared, guard, slot).into_response()
    } else {
        let response = complete(state, request, prepared, &cancel).await;
        drop((slot, guard));
        response
    }
}

fn parse_request(
    state: &ServerState,
    body: &Map<String, Value>,
) -> Result<(ChatRequest, TurnSpec), ApiError> {
    let fields = Fields(body);
    fields.check_single_choice()?;
    let messages = fields
        .array("messages")?
        .ok_or_else(|| ApiError::invalid("messages".to_string(), "`messages` is required"))?;
    let (instructions, history) = harmony_messages(messages)?;
    if !history.iter().any(|m| m.author.role == Role::User) {
        return Err(ApiError::invalid(
            "messages".to_string(),
            "`messages` needs at least one user message",
        ));
    }
    let tool_choice = ToolChoice::parse(fields.get("tool_choice"))?;
    let format = fields
        .get("response_format")
        .map(|v| typed::<ResponseFormat>("response_format", v))
        .transpose()?
        .map(TextFormat::from);
    let strict = match tool_choice {
        ToolChoice::None => Vec::new(),
        _ => strict_functions(fields.array("tools")?),
    };
    let (structured, format_section) =
        structured_outputs(state, "response_format", format, strict)?;
    let instructions = with_format_section(instructions, format_section);
    let mut settings = state.conversation_settings(instructions);
    if let Some(effort) = fields.get("reasoning_effort") {
        settings.reasoning_effort = parse_effort("reasoning_effort", effort)?;
    } else if let Some(effort) = fields.get("reasoning").and_then(|r| r.get("effort")) {
        settings.reasoning_effort = parse_effort("reasoning.effort", effort)?;
    }
    let client_functions = match fields.array("tools")? {
        Some(tools) if tool_choice != ToolChoice::None => function_tools(tools)?,
        _ => Vec::new(),
    };
    let tool_requirement = tool_choice.requirement(
        &state.function_names(&client_functions),
        !state.builtin_tools().is_empty(),
    )?;
    let defaults = &state.config;
    let max_tokens = match fields.count("max_completion_tokens")? {
        Some(n) => Some(n),
        None => fields.count("max_tokens")?,
    };
    let logprobs_params: ChatLogprobsParams = fields.typed_subset(&["logprobs", "top_logprobs"])?;
    if logprobs_params.top_logprobs.is_some() && logprobs_params.logprobs != Some(true) {
        return Err(ApiError::invalid(
            "top_logprobs".to_string(),
            "`top_logprobs` needs `logprobs: true`",
        ));
    }
    let logprobs = logprobs_request(
        state,
        "logprobs",
        logprobs_params.logprobs == Some(true),
        logprobs_params.top_logprobs,
    )?;
    let config = AgentConfig {
        sampling: fields.sampling(&defaults.sampling)?,
        max_tokens: state.max_tokens(max_tokens),
        structured,
        logprobs,
        ..defaults.clone()
    };
    let include_usage = fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let client_names = client_functions.iter().map(|t| t.name.clone()).collect();
    let spec = TurnSpec {
        settings,
        history,
        builtins: state.builtin_tools(),
        client_functions,
        config,
        tool_requirement,
    };
    let request = ChatRequest {
        stream: fields.bool("stream")?.unwrap_or(false),
        include_usage,
        client_names,
        stop: stop::parse(fields.get("stop"))?,
        logprobs: logprobs.is_some(),
    };
    Ok((request, spec))
}

/// The request's `tools`: function tools (`{type: function, function: {name, description,
/// parameters}}`).
pub(super) fn function_tools(tools: &[Value]) -> Result<Vec<ToolDescription>, ApiError> {
    let mut out: Vec<ToolDescription> = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("{param}.type"),
                    format!("tools of type `{other}` are not supported here (only `function`)"),
                ));
            }
            None => return Err(ApiError::invalid(param, "a tool needs a `type`")),
        }
        // Chat Completions nests the function; the Responses API does not.
        let function = tool.get("function").unwrap_or(tool);
        out.push(function_description(&param, function)?);
    }
    Ok(out)
}

pub(super) fn function_description(
    param: &str,
    function: &Value,
) -> Result<ToolDescription, ApiError> {
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid(format!("{param}.name"), "a function needs a `name`"))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::invalid(
            format!("{param}.name"),
            format!("function name `{name}` may hold only letters, digits, `_` and `-`"),
        ));
    }
    let description = function
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let parameters = function.get("parameters").filter(|p| !p.is_null()).cloned();
    Ok(ToolDescription::new(name, description, parameters))
}

/// The developer's instructions and the conversation, from Chat Completions messages.
fn harmony_messages(messages: &[Value]) -> Result<(Option<String>, Vec<Message>), ApiError> {
    let mut instructions: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(param.clone(), "a message needs a `role`"))?;
        let text = content_text(&format!("{param}.content"), message.get("content"))?;
        match role {
            "system" | "developer" => instructions.push(text),
            "user" => out.push(Message::from_role_and_content(Role::User, text)),
            "assistant" => {
                let reasoning = ["reasoning_content", "reasoning"]
                    .iter()
                    .find_map(|k| message.get(*k).and_then(Value::as_str))
                    .unwrap_or_default();
                if !reasoning.is_empty() {
                    out.push(
                        Message::from_role_and_content(Role::Assistant, reasoning)
                            .with_channel("analysis"),
                    );
                }
                let calls = match message.get("tool_calls") {
                    None | Some(Value::Null) => &[][..],
                    Some(Value::Array(calls)) => &calls[..],
                    Some(_) => {
                        return Err(ApiError::invalid(
                            format!("{param}.tool_calls"),
                            "`tool_calls` must be an array",
                        ));
                    }
                };
                if !text.is_empty() {
                    let channel = if calls.is_empty() {
                        "final"
                    } else {
                        "commentary"
                    };
                    out.push(
                        Message::from_role_and_content(Role::Assistant, text).with_channel(channel),
                    );
                }
                for (j, call) in calls.iter().enumerate() {
                    let param = format!("{param}.tool_calls[{j}]");
                    let function = call.get("function").ok_or_else(|| {
                        ApiError::invalid(param.clone(), "a tool call needs a `function`")
                    })?;
                    let name = function
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ApiError::invalid(format!("{param}.function.name"), "missing")
                        })?;
                    let arguments = match function.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        None | Some(Value::Null) => "{}".to_string(),
                        Some(other) => other.to_string(),
                    };
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id.to_string(), name.to_string());
                    }
                    out.push(function_call_message(name, arguments));
                }
            }
            "tool" | "function" => {
                let name = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| {
                        message
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("{param}.tool_call_id"),
                            "a tool message must answer a tool call of an earlier assistant message (by `tool_call_id`)",
                        )
                    })?;
                out.push(function_output_message(&name, text));
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{param}.role"),
                    format!("unknown role `{other}`"),
                ));
            }
        }
    }
    let instructions = (!instructions.is_empty()).then(|| instructions.join("\n\n"));
    Ok((instructions, out))
}

/// The assistant's call of a function, as gpt-oss writes it.
pub(super) fn function_call_message(name: &str, arguments: String) -> Message {
    Message::from_role_and_content(Role::Assistant, arguments)
        .with_channel("commentary")
        .with_recipient(format!("functions.{name}"))
        .with_content_type("<|constrain|>json")
}

/// A function's output, as the model reads it.
pub(super) fn function_output_message(name: &str, output: String) -> Message {
    Message::from_author_and_content(Author::new(Role::Tool, format!("functions.{name}")), output)
        .with_channel("commentary")
        .with_recipient("assistant")
}

fn usage(result: &TurnResult) -> Usage {
    let prompt = result.report.prompt_tokens();
    let completion = result.report.generated_tokens();
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: result.report.reused_tokens(),
        },
    }
}

/// A built-in call the server ran, as reported to the client.
fn server_tool_call(index: usize, call: &ToolCall, outputs: &[String]) -> ServerToolCall {
    ServerToolCall {
        index,
        id: new_id("stc_"),
        kind: builtin_kind(&call.recipient).to_string(),
        recipient: call.recipient.clone(),
        input: call.content.clone(),
        output: outputs.concat(),
    }
}

/// A citation as Chat Completions shows it (the shape of OpenAI's search models).
fn url_citation(annotation: &Annotation, offset: usize) -> wire::Annotation {
    wire::Annotation::new(annotation, offset)
}

/// A client function call, as Chat Completions shows it.
fn function_tool_call(index: Option<usize>, name: String, arguments: String) -> wire::ToolCall {
    wire::ToolCall {
        index,
        id: new_id("call_"),
        kind: FunctionType,
        function: FunctionCall { name, arguments },
    }
}

/// Applies `stop` to the answer's text: deltas cut at the first stop string (the text that may
/// start one held back until the message ends), and the turn cancelled once one is found.
/// Reasoning and tool calls are not searched: `stop` ends the answer the client reads.
fn apply_stop(
    stop: &mut StopText,
    cancel: &CancellationToken,
    event: AgentEvent,
) -> Vec<AgentEvent> {
    if stop.hit() {
        return Vec::new();
    }
    match event {
        AgentEvent::FinalDelta(d) | AgentEvent::CommentaryDelta(d) => {
            let shown = stop.push(&d);
            if stop.hit() {
                cancel.cancel();
            }
            if shown.is_empty() {
                Vec::new()
            } else {
                vec![AgentEvent::FinalDelta(shown)]
            }
        }
        AgentEvent::Message(message)
            if message.recipient.is_none() && message.channel.as_deref() != Some("analysis") =>
        {
            let rest = stop.end_message();
            let mut events = Vec::new();
            if !rest.is_empty() {
                events.push(AgentEvent::FinalDelta(rest));
            }
            events.push(AgentEvent::Message(message));
            events
        }
        other => vec![other],
    }
}

async fn complete(
    state: Arc<ServerState>,
    request: ChatRequest,
    prepared: turn::Turn,
    cancel: &CancellationToken,
) -> Response {
    let mut page_urls: Vec<String> = Vec::new();
    let mut stop = StopText::new(request.stop.clone());
    // The answer as the deltas showed it: the content when a stop string cut it (the message
    // it cut never completes).
    let mut shown = String::new();
    let mut logprobs = Vec::new();
    let tokenizer = state.encoding.tokenizer().clone();
    let mut on_event = |event: AgentEvent| {
        for event in apply_stop(&mut stop, cancel, event) {
            match event {
                AgentEvent::PageUrls(urls) => page_urls = urls,
                AgentEvent::FinalDelta(d) => shown.push_str(&d),
                AgentEvent::FinalLogprobs(l) => logprobs.push(TokenLogprob::new(&tokenizer, &l)),
                _ => {}
            }
        }
    };
    let result = match prepared.run(&mut on_event).await {
        Ok(result) => result,
        Err(error) => return error.into_response(),
    };
    let mut reasoning = Vec::new();
    let mut content: Vec<String> = Vec::new();
    // Browser citations become links, with offsets (in characters) into the whole content.
    let mut content_chars = 0;
    let mut annotations = Vec::new();
    let mut server_calls = Vec::new();
    let messages = result.new_messages();
    for (index, message) in messages.iter().enumerate() {
        if message.author.role != Role::Assistant {
            continue;
        }
        match message.recipient.as_deref().filter(|r| *r != "all") {
            None if message.channel.as_deref() == Some("analysis") => {
                reasoning.push(message.text());
            }
            None => {
                let normalized = normalize_citations(&message.text(), &page_urls, false);
                annotations.extend(
                    normalized
                        .annotations
                        .iter()
                        .map(|a| url_citation(a, content_chars)),
                );
                content_chars += normalized.text.chars().count();
                content.push(normalized.text);
            }
            Some(recipient) => {
                let is_client = function_name(recipient)
                    .is_some_and(|n| request.client_names.iter().any(|c| c == n));
                if is_client {
                    continue;
                }
                let call = ToolCall {
                    recipient: recipient.to_string(),
                    channel: message.channel.clone(),
                    content_type: message.content_type.clone(),
                    content: message.text(),
                };
                let outputs: Vec<String> = messages[index + 1..]
                    .iter()
                    .take_while(|m| m.author.role == Role::Tool)
                    .map(Message::text)
                    .collect();
                server_calls.push(server_tool_call(server_calls.len(), &call, &outputs));
            }
        }
    }
    if stop.hit() {
        let normalized = normalize_citations(&shown, &page_urls, false);
        annotations = normalized
            .annotations
            .iter()
            .map(|a| url_citation(a, 0))
            .collect();
        content = vec![normalized.text];
    }
    // Both names: vLLM and DeepSeek clients read `reasoning_content`, clients built for
    // gpt-oss (OpenAI's reference server, its test suite) read `reasoning`.
    let reasoning = (!reasoning.is_empty()).then(|| reasoning.join("\n\n"));
    let tool_calls = result
        .external_call
        .iter()
        .map(|call| {
            let name = function_name(&call.recipient).unwrap_or(&call.recipient);
            function_tool_call(None, name.to_string(), call.content.clone())
        })
        .collect();
    let message = ChatMessage {
        role: AssistantRole,
        content: (!content.is_empty()).then(|| content.concat()),
        reasoning_content: reasoning.clone(),
        reasoning,
        annotations,
        tool_calls,
        server_tool_calls: server_calls,
    };
    axum::Json(ChatCompletion {
        id: new_id("chatcmpl-"),
        object: ChatCompletionTag,
        created: now(),
        model: state.model_id.clone(),
        choices: vec![Choice {
            index: 0,
            message,
            logprobs: request.logprobs.then_some(Logprobs {
                content: logprobs,
                refusal: None,
            }),
            finish_reason: turn::finish_reason(&result).to_string(),
        }],
        usage: usage(&result),
    })
    .into_response()
}

/// Turns agent events into chunk deltas.
struct Chunker {
    client_names: Vec<String>,
    calls: usize,
    server_calls: usize,
    /// The browser's pages by cursor, for citations.
    page_urls: Vec<String>,
    /// Citations of the text message being streamed, turned into links as they complete.
    citations: Option<CitationStream>,
    /// Characters of content sent before the current message.
    content_chars: usize,
    /// Characters of content sent of the current message.
    message_chars: usize,
}

impl Chunker {
    fn new(client_names: Vec<String>) -> Self {
        Self {
            client_names,
            calls: 0,
            server_calls: 0,
            page_urls: Vec::new(),
            citations: None,
            content_chars: 0,
            message_chars: 0,
        }
    }

    /// A content delta (and the links it completes), `None` when all of it is held back. The
    /// stream's offsets count from its message's start.
    fn content(&mut self, chunk: StreamChunk) -> Option<Delta> {
        if chunk.text.is_empty() && chunk.annotations.is_empty() {
            return None;
        }
        self.message_chars += chunk.text.chars().count();
        Some(Delta {
            annotations: chunk
                .annotations
                .iter()
                .map(|a| url_citation(a, self.content_chars))
                .collect(),
            content: Some(chunk.text),
            ..Delta::default()
        })
    }

    /// Ends the text message being streamed: what was held back goes out.
    fn finish_text(&mut self) -> Option<Delta> {
        let stream = self.citations.take()?;
        let delta = self.content(stream.finish());
        self.content_chars += std::mem::take(&mut self.message_chars);
        delta
    }

    fn delta(&mut self, event: &AgentEvent) -> Option<Delta> {
        match event {
            AgentEvent::ReasoningDelta(d) => Some(Delta {
                reasoning_content: Some(d.clone()),
                reasoning: Some(d.clone()),
                ..Delta::default()
            }),
            AgentEvent::FinalDelta(d) | AgentEvent::CommentaryDelta(d) => {
                let stream = self
                    .citations
                    .get_or_insert_with(|| CitationStream::new(self.page_urls.clone()));
                let chunk = stream.push(d);
                self.content(chunk)
            }
            AgentEvent::PageUrls(urls) => {
                self.page_urls = urls.clone();
                None
            }
            // A client's call is sent whole when the agent hands it over (its `ToolCall`): one
            // it answers itself instead (unfinished, or its arguments not JSON) is never shown.
            AgentEvent::ToolCall(call) => {
                let name = self.client_function(&call.recipient)?;
                let index = self.calls;
                self.calls += 1;
                Some(Delta {
                    tool_calls: vec![function_tool_call(Some(index), name, call.content.clone())],
                    ..Delta::default()
                })
            }
            AgentEvent::ToolResult { call, output } => {
                if self.client_function(&call.recipient).is_some() {
                    return None;
                }
                let index = self.server_calls;
                self.server_calls += 1;
                Some(Delta {
                    server_tool_calls: vec![server_tool_call(
                        index,
                        call,
                        std::slice::from_ref(&output.content),
                    )],
                    ..Delta::default()
                })
            }
            AgentEvent::Message(message) => {
                if message.recipient.is_none() && message.channel.as_deref() != Some("analysis") {
                    return self.finish_text();
                }
                None
            }
            _ => None,
        }
    }

    fn client_function(&self, recipient: &str) -> Option<String> {
        function_name(recipient)
            .filter(|n| self.client_names.iter().any(|c| c == n))
            .map(str::to_string)
    }
}

fn stream(
    state: Arc<ServerState>,
    request: ChatRequest,
    prepared: turn::Turn,
    guard: CancelOnDrop,
    slot: Slot,
) -> impl IntoResponse {
    let (sender, receiver) = mpsc::unbounded_channel::<String>();
    let id = new_id("chatcmpl-");
    let created = now();
    let model = state.model_id.clone();
    // A chunk as the text of its `data:` event.
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
            json_text(&ChatCompletionChunk {
                id: id.clone(),
                object: ChatCompletionChunkTag,
                created,
                model: model.clone(),
                choices,
                usage,
            })
        }
    };
    let choice = |delta: Delta, logprobs: Option<Logprobs>, finish_reason: Option<String>| {
        vec![ChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason,
        }]
    };
    let task_cancel = guard.0.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let cancel = task_cancel;
        let send = |text: String| {
            if sender.send(text).is_err() {
                cancel.cancel();
            }
        };
        let opening = Delta {
            role: Some(AssistantRole),
            content: Some(String::new()),
            ..Delta::default()
        };
        send(chunk(choice(opening, None, None), None));
        if let Some(note) = state.queue_note() {
            send(format!(": {note}"));
        }
        let mut chunker = Chunker::new(request.client_names.clone());
        let mut stop = StopText::new(request.stop.clone());
        // The answer's tokens not yet sent: they go with the next content delta.
        let mut logprobs: Vec<TokenLogprob> = Vec::new();
        let tokenizer = state.encoding.tokenizer().clone();
        let take_logprobs = |delta: &Delta, logprobs: &mut Vec<TokenLogprob>| {
            (request.logprobs && (delta.content.is_some() || !logprobs.is_empty())).then(|| {
                Logprobs {
                    content: std::mem::take(logprobs),
                    refusal: None,
                }
            })
        };
        let mut on_event = |event: AgentEvent| {
            for event in apply_stop(&mut stop, &cancel, event) {
                if let AgentEvent::FinalLogprobs(l) = &event {
                    logprobs.push(TokenLogprob::new(&tokenizer, l));
                }
                if let Some(delta) = chunker.delta(&event) {
                    let logprobs = take_logprobs(&delta, &mut logprobs);
                    send(chunk(choice(delta, logprobs, None), None));
                }
            }
        };
        let outcome = prepared.run(&mut on_event).await;
        // A turn cut off mid-answer (limit, cancel) still sends the text held back as a
        // possible citation.
        let last = chunker.finish_text();
        if last.is_some() || !logprobs.is_empty() {
            let delta = last.unwrap_or_else(|| Delta {
                content: Some(String::new()),
                ..Delta::default()
            });
            let logprobs = take_logprobs(&delta, &mut logprobs);
            send(chunk(choice(delta, logprobs, None), None));
        }
        match outcome {
            Ok(result) => {
                let finish_reason = turn::finish_reason(&result).to_string();
                send(chunk(
                    choice(Delta::default(), None, Some(finish_reason)),
                    None,
                ));
                if request.include_usage {
                    send(chunk(Vec::new(), Some(usage(&result))));
                }
            }
            Err(error) => send(error.body().to_string()),
        }
        send("[DONE]".to_string());
    });
    sse(receiver, guard)
}

/// A wire value as JSON text (an SSE event's `data`).
pub(super) fn json_text(value: &impl serde::Serialize) -> String {
    // Not reached: the wire types hold nothing JSON cannot write (no maps with other keys
    // than strings, no floats that are not finite).
    serde_json::to_string(value).unwrap_or_else(|error| {
        tracing::error!("a wire value did not serialize: {error}");
        String::from("{}")
    })
}

/// An SSE response of `data:` lines (a text starting with `:` is a comment: JSON and
/// `[DONE]` never do); dropping it (the client went away) cancels `guard`'s cancel.
pub(super) fn sse(
    receiver: mpsc::UnboundedReceiver<String>,
    guard: CancelOnDrop,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let events = UnboundedReceiverStream::new(receiver).map(move |data| {
        let _ = &guard;
        Ok(match data.strip_prefix(": ") {
            Some(comment) => Event::default().comment(comment),
            None => Event::default().data(data),
        })
    });
    // Comments keep idle streams (a queued request, a long tool call) alive and let a closed
    // connection be noticed, which cancels the request.
    Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default())
}
