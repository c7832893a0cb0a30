//! `POST /v1/chat/completions`.
//!
//! Messages map to harmony as gpt-oss expects: `system`/`developer` text becomes the developer
//! message's instructions; an assistant message's `reasoning_content` (or `reasoning`) its
//! `analysis` message, its `tool_calls` calls on the `commentary` channel to
//! `functions.NAME`, its `content` the `final` answer (a `commentary` preamble when it comes with
//! tool calls); a `tool` message the function's output.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use ossa_agent::AgentEvent;
use ossa_agent::harmony::{Message, Role};
use ossa_tools::citations::{Annotation, CitationStream, StreamChunk, normalize_citations};
use ossa_tools::{ToolCall, ToolDescription};

use super::common::{
    self, Admitted, Body, CancellationToken, Posted, content_text, count, function_call_message,
    function_description, function_output_message, json_text, parse_effort,
};
use super::error::ApiError;
use super::functions::{FunctionChoice, function_name};
use super::params::{
    TokenLogprob, logprobs_request, new_id, strict_functions, structured_outputs,
    with_format_section,
};
use super::state::ServerState;
use super::stop::StopText;
use super::turn::{self, TurnResult, TurnSpec, builtin_kind};
use super::wire::chat::{
    self as wire, AssistantRole, ChatCompletion, ChatCompletionChunk, ChatCompletionChunkTag,
    ChatCompletionRequest, ChatCompletionTag, ChatMessage, Choice, ChunkChoice, Delta,
    FunctionCall, FunctionType, Logprobs, MessageParam, PromptTokensDetails, ServerToolCall, Usage,
};
use super::wire::now;
use super::wire::request::{TextFormat, ToolParam};

/// A parsed request.
struct ChatRequest {
    include_usage: bool,
    client_names: Vec<String>,
    /// `stop`: the answer ends before the first of these.
    stop: Vec<String>,
    /// `logprobs: true`: the answer's tokens come with their log-probabilities.
    logprobs: bool,
}

pub async fn create(Posted { state, log, body }: Posted<ChatCompletionRequest>) -> Response {
    let streamed = body.shared.stream();
    let started = parse_request(&state, body)
        .and_then(|(request, spec)| common::start_turn(&state, request, spec, "messages", log));
    common::answer(&state, started, streamed, stream, complete).await
}

fn parse_request(
    state: &ServerState,
    body: Body<ChatCompletionRequest>,
) -> Result<(ChatRequest, TurnSpec), ApiError> {
    let Body {
        request: body,
        shared,
        ..
    } = body;
    shared.check_single_choice()?;
    let messages = body
        .messages
        .ok_or_else(|| ApiError::invalid("messages".to_string(), "`messages` is required"))?;
    let (instructions, history) = harmony_messages(&messages)?;
    if !history.iter().any(|m| m.author.role == Role::User) {
        return Err(ApiError::invalid(
            "messages".to_string(),
            "`messages` needs at least one user message",
        ));
    }
    let tool_choice = FunctionChoice::parse(body.tool_choice.as_ref())?;
    let format = body.response_format.map(|f| TextFormat::from(f.0));
    let tools = body.tools.unwrap_or_default();
    let strict = match tool_choice {
        FunctionChoice::None => Vec::new(),
        _ => strict_functions(&tools),
    };
    let (structured, format_section) =
        structured_outputs(state, "response_format", format, strict)?;
    let instructions = with_format_section(instructions, format_section);
    let mut settings = state.conversation_settings(instructions);
    if let Some(effort) = &body.reasoning_effort {
        settings.reasoning_effort = parse_effort("reasoning_effort", effort)?;
    } else if let Some(effort) = body.reasoning.as_ref().and_then(|r| r.effort.as_ref()) {
        settings.reasoning_effort = parse_effort("reasoning.effort", effort)?;
    }
    let client_functions = match tool_choice {
        FunctionChoice::None => Vec::new(),
        _ => function_tools(&tools)?,
    };
    let tool_requirement = tool_choice.requirement(
        &state.function_names(&client_functions),
        !state.builtin_tools().is_empty(),
    )?;
    let max_tokens = match count("max_completion_tokens", body.max_completion_tokens)? {
        Some(n) => Some(n),
        None => count("max_tokens", body.max_tokens)?,
    };
    if body.top_logprobs.is_some() && body.logprobs != Some(true) {
        return Err(ApiError::invalid(
            "top_logprobs".to_string(),
            "`top_logprobs` needs `logprobs: true`",
        ));
    }
    let logprobs = logprobs_request(
        state,
        "logprobs",
        body.logprobs == Some(true),
        body.top_logprobs,
    )?;
    let config = shared.agent_config(state, max_tokens, structured, logprobs)?;
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
        include_usage: shared.include_usage(),
        client_names,
        stop: shared.stop(),
        logprobs: logprobs.is_some(),
    };
    Ok((request, spec))
}

/// The request's `tools`: function tools (`{type: function, function: {name, description,
/// parameters}}`).
fn function_tools(tools: &[ToolParam]) -> Result<Vec<ToolDescription>, ApiError> {
    let mut out: Vec<ToolDescription> = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        match tool.kind.as_deref() {
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
        let (function, at) = tool.function();
        out.push(function_description(&format!("{param}{at}"), &function)?);
    }
    Ok(out)
}

/// The developer's instructions and the conversation, from Chat Completions messages.
fn harmony_messages(messages: &[MessageParam]) -> Result<(Option<String>, Vec<Message>), ApiError> {
    let mut instructions: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let text = content_text(&format!("{param}.content"), message.content.as_ref())?;
        match message.role.as_str() {
            "system" | "developer" => instructions.push(text),
            "user" => out.push(Message::from_role_and_content(Role::User, text)),
            "assistant" => {
                let reasoning = message
                    .reasoning_content
                    .as_deref()
                    .or(message.reasoning.as_deref())
                    .unwrap_or_default();
                if !reasoning.is_empty() {
                    out.push(
                        Message::from_role_and_content(Role::Assistant, reasoning)
                            .with_channel("analysis"),
                    );
                }
                let calls = message.tool_calls.as_deref().unwrap_or_default();
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
                    let function = call.function.as_ref().ok_or_else(|| {
                        ApiError::invalid(param.clone(), "a tool call needs a `function`")
                    })?;
                    let name = function.name.as_deref().ok_or_else(|| {
                        ApiError::invalid(format!("{param}.function.name"), "missing")
                    })?;
                    let arguments = match &function.arguments {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        None => "{}".to_string(),
                        Some(other) => other.to_string(),
                    };
                    if let Some(id) = &call.id {
                        call_names.insert(id.clone(), name.to_string());
                    }
                    out.push(function_call_message(name, arguments));
                }
            }
            "tool" | "function" => {
                let name = message
                    .tool_call_id
                    .as_ref()
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| message.name.clone())
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
    state: &Arc<ServerState>,
    (request, prepared): (ChatRequest, turn::Turn),
    cancel: CancellationToken,
) -> Response {
    let mut page_urls: Vec<String> = Vec::new();
    let mut stop = StopText::new(request.stop.clone());
    // The answer as the deltas showed it: the content when a stop string cut it (the message
    // it cut never completes).
    let mut shown = String::new();
    let mut logprobs = Vec::new();
    let tokenizer = state.settings.encoding.tokenizer().clone();
    let mut on_event = |event: AgentEvent| {
        for event in apply_stop(&mut stop, &cancel, event) {
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
        model: state.settings.model_id.clone(),
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
    (request, prepared): (ChatRequest, turn::Turn),
    admitted: Admitted,
) -> impl IntoResponse {
    let id = new_id("chatcmpl-");
    let created = now();
    let model = state.settings.model_id.clone();
    // A chunk as the text of its `data:` event.
    let chunk = move |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
        json_text(&ChatCompletionChunk {
            id: id.clone(),
            object: ChatCompletionChunkTag,
            created,
            model: model.clone(),
            choices,
            usage,
        })
    };
    let choice = |delta: Delta, logprobs: Option<Logprobs>, finish_reason: Option<String>| {
        vec![ChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason,
        }]
    };
    common::sse(admitted, move |sender, cancel| async move {
        let send = |text: String| sender.data(text);
        let opening = Delta {
            role: Some(AssistantRole),
            content: Some(String::new()),
            ..Delta::default()
        };
        send(chunk(choice(opening, None, None), None));
        sender.queue_note(&state);
        let mut chunker = Chunker::new(request.client_names.clone());
        let mut stop = StopText::new(request.stop.clone());
        // The answer's tokens not yet sent: they go with the next content delta.
        let mut logprobs: Vec<TokenLogprob> = Vec::new();
        let tokenizer = state.settings.encoding.tokenizer().clone();
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
            Err(error) => send(json_text(&error.body())),
        }
        send("[DONE]".to_string());
    })
}
