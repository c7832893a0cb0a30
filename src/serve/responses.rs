//! `POST /v1/responses` (streaming and not), `GET`/`DELETE /v1/responses/{id}`.
//!
//! Input items map to harmony as in OpenAI's gpt-oss reference server: `message` items
//! (`system`/`developer` ones join `instructions` in the developer message), `reasoning` →
//! `analysis`, `function_call` → a call on `commentary` to `functions.NAME`,
//! `function_call_output` → the function's output, `code_interpreter_call` → a `python` call
//! and its output. Built-in tools (`code_interpreter` → python, `web_search` → browser) run on
//! the server inside the response; a call to a client function ends the response with a
//! `function_call` item. With `store` (the default) the response and the messages it added are
//! kept in the [`super::store`], and `previous_response_id` continues from them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use ossa_agent::harmony::{Author, Message, Role};
use ossa_agent::{AgentEvent, TurnOutcome};
use ossa_tools::Tool;
use ossa_tools::citations::{CitationStream, normalize_citations};
use serde_json::Value;

use super::common::{
    self, Admitted, Body, CancellationToken, Outgoing, Posted, content_text, count,
    function_call_message, function_description, function_output_message, json_text, parse_effort,
};
use super::error::ApiError;
use super::functions::{FunctionChoice, function_name};
use super::params::{
    INCLUDE_LOGPROBS, TokenLogprob, logprobs_request, new_id, strict_functions, structured_outputs,
    with_format_section,
};
use super::state::ServerState;
use super::store::{self, Continuation};
use super::turn::{self, TurnResult, TurnSpec};
use super::wire::now;
use super::wire::request::{self, OneOrList, ToolParam};
use super::wire::responses::{
    Annotation, AssistantRole, AutoTag, CodeOutput, ContentPart, CreateResponseRequest,
    DeletedResponse, IncompleteDetails, IncompleteReason, InputItem, InputItemList,
    InputItemsQuery, InputTokensDetails, ListTag, ListedMessage, ListedText, MessageTag,
    OutputItem, OutputTokensDetails, PlainText, Reasoning, ResponseError, ResponseObject,
    ResponseStreamEvent, ResponseTag, SandboxContainer, Sequenced, Status, TextPartKind,
    TruncationDisabled, Usage, WebSearchAction,
};

/// A parsed request.
struct ResponsesRequest {
    /// Kept in the store (asked for, and the server has one).
    store: bool,
    /// The response this one continues.
    previous: Option<String>,
    /// How many conversation messages came from `previous` (the rest are this response's).
    inherited: usize,
    client_names: Vec<String>,
    /// What the model may call in this request.
    callable: Callable,
    /// The input as `GET /v1/responses/{id}/input_items` lists it.
    input_items: Vec<Value>,
    /// What the response object echoes back.
    echo: Echo,
    /// `include: ["message.output_text.logprobs"]`: the answer's tokens' log-probabilities.
    logprobs: bool,
}

/// Request settings the response object repeats.
#[derive(Clone)]
struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<usize>,
    previous_response_id: Option<String>,
    effort: &'static str,
    temperature: f32,
    top_p: f32,
    tools: Vec<Value>,
    tool_choice: Value,
    metadata: Value,
    /// `text` (its `format`), as the request gave it.
    text: Value,
}

pub async fn create(Posted { state, log, body }: Posted<CreateResponseRequest>) -> Response {
    let continuation = match previous_response(&state, &body.request).await {
        Ok(continuation) => continuation,
        Err(mut error) => {
            error.param = Some("previous_response_id".into());
            return error.into_response();
        }
    };
    let streamed = body.shared.stream();
    let started = parse_request(&state, body, continuation)
        .and_then(|(request, spec)| common::start_turn(&state, request, spec, "input", log));
    common::answer(&state, started, streamed, stream, complete).await
}

/// The stored conversation `previous_response_id` names, if the request has one.
async fn previous_response(
    state: &ServerState,
    request: &CreateResponseRequest,
) -> Result<Option<(String, Continuation)>, ApiError> {
    let Some(id) = request.previous_response_id.clone() else {
        return Ok(None);
    };
    let store = state.store()?;
    if !valid_id(&id) {
        return Err(no_such_response(&id));
    }
    let continuation = lookup(store, &id, store::ResponseStore::continuation).await?;
    Ok(Some((id, continuation)))
}

pub async fn get(
    State(state): State<Arc<ServerState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let (store, id) = stored_id(&state, id)?;
    lookup(store, &id, store::ResponseStore::get)
        .await
        .map(axum::Json)
}

pub async fn delete(
    State(state): State<Arc<ServerState>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<axum::Json<DeletedResponse>, ApiError> {
    let (store, id) = stored_id(&state, id)?;
    lookup(store, &id, |store, id| Ok(store.delete(id)?.then_some(()))).await?;
    Ok(axum::Json(DeletedResponse {
        id,
        object: ResponseTag,
        deleted: true,
    }))
}

/// `GET /v1/responses/{id}/input_items`: the input a stored response was made from, in
/// OpenAI's list shape, paged with `order` (`desc`, the default, or `asc`), `limit` (1 to
/// 100, 20 by default) and `after` (the id of the item the page starts after).
pub async fn input_items(
    State(state): State<Arc<ServerState>>,
    id: Result<UrlPath<String>, PathRejection>,
    query: Result<Query<InputItemsQuery>, QueryRejection>,
) -> Result<axum::Json<InputItemList>, ApiError> {
    let (store, id) = stored_id(&state, id)?;
    let Query(query) = query.map_err(|rejection| {
        ApiError::invalid(None, format!("the query does not fit: {rejection}"))
    })?;
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "order".to_string(),
                format!("`order` is `asc` or `desc`, not `{other}`"),
            ));
        }
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
        Some(_) => {
            return Err(ApiError::invalid(
                "limit".to_string(),
                "`limit` is a number from 1 to 100",
            ));
        }
    };
    let mut items = lookup(store, &id, store::ResponseStore::input_items).await?;
    if !ascending {
        items.reverse();
    }
    let start = match &query.after {
        None => 0,
        Some(after) => match items.iter().position(|item| item["id"] == after.as_str()) {
            Some(at) => at + 1,
            None => {
                let shown: String = after
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(100)
                    .collect();
                return Err(ApiError::invalid(
                    "after".to_string(),
                    format!("response `{id}` has no input item `{shown}`"),
                ));
            }
        },
    };
    let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < items.len();
    let item_id = |item: Option<&Value>| {
        item.and_then(|item| item["id"].as_str())
            .map(str::to_string)
    };
    Ok(axum::Json(InputItemList {
        object: ListTag,
        first_id: item_id(page.first()),
        last_id: item_id(page.last()),
        data: page,
        has_more,
    }))
}

/// The request's `input` as the API lists it: a string is one user message; message content
/// given as a string becomes a list of parts; every item gets an `id` (its own if it has one).
///
/// The items stay JSON values: they are the client's, fields ossa does not read included; only
/// what the listing adds is typed ([`ListedMessage`], [`ListedText`]).
fn listed_input(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(text)) => vec![wire_value(&ListedMessage {
            kind: MessageTag,
            role: "user".to_string(),
            content: vec![ListedText {
                kind: TextPartKind::InputText,
                text: text.clone(),
            }],
            status: Status::Completed,
            id: new_id("msg_"),
        })],
        Some(Value::Array(items)) => items
            .iter()
            .cloned()
            .map(|mut item| {
                let Some(fields) = item.as_object_mut() else {
                    return item;
                };
                if !fields.contains_key("type") && fields.contains_key("role") {
                    fields.insert("type".into(), MessageTag::VALUE.into());
                }
                let is_message =
                    fields.get("type").and_then(Value::as_str) == Some(MessageTag::VALUE);
                if is_message {
                    if let Some(Value::String(text)) = fields.get("content") {
                        let assistant = fields.get("role").and_then(Value::as_str)
                            == Some(AssistantRole::VALUE);
                        let part = ListedText {
                            kind: if assistant {
                                TextPartKind::OutputText
                            } else {
                                TextPartKind::InputText
                            },
                            text: text.clone(),
                        };
                        fields.insert("content".into(), wire_value(&vec![part]));
                    }
                    fields
                        .entry("status")
                        .or_insert_with(|| wire_value(&Status::Completed));
                }
                if !fields.get("id").is_some_and(Value::is_string) {
                    let prefix = if is_message { "msg_" } else { "item_" };
                    fields.insert("id".into(), new_id(prefix).into());
                }
                item
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A wire value as JSON, to join values the client sent (not reached: these types always
/// serialize).
fn wire_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The store and an id of the form it gives out; a 404 for anything else (an id that is not
/// UTF-8, a server without a store).
fn stored_id(
    state: &ServerState,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<(&Arc<store::ResponseStore>, String), ApiError> {
    match (state.store.as_ref(), id) {
        (Some(store), Ok(UrlPath(id))) if valid_id(&id) => Ok((store, id)),
        _ => Err(ApiError::not_found("no such stored response")),
    }
}

/// `query` of the stored response `id`, run on the store's worker: a 404 naming `id` when
/// there is no such response.
async fn lookup<T: Send + 'static>(
    store: &Arc<store::ResponseStore>,
    id: &str,
    query: impl FnOnce(&store::ResponseStore, &str) -> Result<Option<T>, store::StoreError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let key = id.to_string();
    store::run(store, move |store| query(store, &key))
        .await
        .map_err(|error| error.api_error())?
        .ok_or_else(|| no_such_response(id))
}

/// Ids this server gives out: `resp_` and letters, digits, `_`, `-`.
fn valid_id(id: &str) -> bool {
    id.starts_with("resp_")
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn no_such_response(id: &str) -> ApiError {
    let shown: String = id.chars().filter(|c| !c.is_control()).take(100).collect();
    ApiError::not_found(format!("no stored response with id `{shown}`"))
}

fn parse_request(
    state: &ServerState,
    body: Body<CreateResponseRequest>,
    previous: Option<(String, Continuation)>,
) -> Result<(ResponsesRequest, TurnSpec), ApiError> {
    let Body {
        json,
        request: body,
        shared,
    } = body;
    if shared.stop.is_some() {
        // OpenAI's Responses API has no `stop`; ignoring it would answer past the client's end.
        return Err(ApiError::invalid(
            "stop".to_string(),
            "the Responses API has no `stop` parameter; use /v1/chat/completions or \
             /v1/completions, which honour it",
        ));
    }
    let mut history: Vec<Message> = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    let previous_response_id = match previous {
        None => None,
        Some((id, continuation)) => {
            history.extend(continuation.messages);
            for item in continuation.response["output"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let (Some(call_id), Some(name)) = (
                    item.get("call_id").and_then(Value::as_str),
                    item.get("name").and_then(Value::as_str),
                ) {
                    call_names.insert(call_id.to_string(), name.to_string());
                }
            }
            Some(id)
        }
    };
    let inherited = history.len();
    let mut instructions: Vec<String> = body.instructions.iter().cloned().collect();
    match &body.input {
        None => {
            return Err(ApiError::invalid(
                "input".to_string(),
                "`input` is required",
            ));
        }
        Some(OneOrList::One(text)) => {
            history.push(Message::from_role_and_content(Role::User, text.clone()))
        }
        Some(OneOrList::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(
                    &format!("input[{i}]"),
                    item,
                    &mut history,
                    &mut instructions,
                    &mut call_names,
                )?;
            }
        }
    }
    if history.is_empty() {
        return Err(ApiError::invalid("input".to_string(), "`input` is empty"));
    }
    let instructions_text = (!instructions.is_empty()).then(|| instructions.join("\n\n"));
    let tool_choice = FunctionChoice::parse(body.tool_choice.as_ref())?;
    let format = body.text.and_then(|t| t.format).map(|f| f.0);
    let strict = match tool_choice {
        FunctionChoice::None => Vec::new(),
        _ => strict_functions(body.tools.as_deref().unwrap_or_default()),
    };
    let (structured, format_section) = structured_outputs(state, "text.format", format, strict)?;
    let instructions_text = with_format_section(instructions_text, format_section);
    let mut settings = state.conversation_settings(instructions_text);
    if let Some(effort) = body.reasoning.as_ref().and_then(|r| r.effort.as_ref()) {
        settings.reasoning_effort = parse_effort("reasoning.effort", effort)?;
    }
    let (builtins, client_functions) = match &body.tools {
        None => (state.builtin_tools(), Vec::new()),
        Some(tools) => request_tools(state, tools)?,
    };
    let client_functions = if tool_choice == FunctionChoice::None {
        Vec::new()
    } else {
        client_functions
    };
    let tool_requirement = tool_choice.requirement(
        &state.function_names(&client_functions),
        !builtins.is_empty(),
    )?;
    let max_output_tokens = count("max_output_tokens", body.max_output_tokens)?;
    let include_logprobs = body.include.iter().flatten().any(|i| i == INCLUDE_LOGPROBS);
    let logprobs = logprobs_request(
        state,
        "include",
        include_logprobs || body.top_logprobs.is_some_and(|n| n > 0),
        body.top_logprobs,
    )?;
    let config = shared.agent_config(state, max_output_tokens, structured, logprobs)?;
    // Echoed as the client sent them.
    let sent = |name: &str| json.get(name).filter(|v| !v.is_null()).cloned();
    let echo = Echo {
        instructions: body.instructions,
        max_output_tokens,
        previous_response_id: previous_response_id.clone(),
        effort: settings.reasoning_effort.as_str(),
        temperature: config.sampling.temperature,
        top_p: config.sampling.top_p,
        tools: match sent("tools") {
            Some(Value::Array(tools)) => tools,
            _ => Vec::new(),
        },
        tool_choice: sent("tool_choice").unwrap_or_else(|| AutoTag::VALUE.into()),
        metadata: sent("metadata").unwrap_or_else(|| Value::Object(Default::default())),
        text: sent("text")
            .filter(|t| t.get("format").is_some_and(|f| !f.is_null()))
            .unwrap_or_else(|| wire_value(&PlainText::default())),
    };
    let client_names = client_functions.iter().map(|t| t.name.clone()).collect();
    let callable = Callable {
        builtins: builtins.iter().map(|t| t.name().to_string()).collect(),
        functions: state.function_names(&client_functions),
    };
    let spec = TurnSpec {
        settings,
        history,
        builtins,
        client_functions,
        config,
        tool_requirement,
    };
    let request = ResponsesRequest {
        store: body.store.unwrap_or(true) && state.store.is_some(),
        previous: previous_response_id,
        inherited,
        client_names,
        callable,
        input_items: listed_input(json.get("input")),
        echo,
        logprobs: logprobs.is_some(),
    };
    Ok((request, spec))
}

/// Built-in tools and client functions.
type RequestTools = (Vec<Arc<dyn Tool>>, Vec<ossa_tools::ToolDescription>);

/// The request's tools: built-ins the server has, and the client's functions.
fn request_tools(state: &ServerState, tools: &[ToolParam]) -> Result<RequestTools, ApiError> {
    let available = state.builtin_tools();
    let mut builtins: Vec<Arc<dyn Tool>> = Vec::new();
    let mut functions = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        let kind = tool
            .kind
            .as_deref()
            .ok_or_else(|| ApiError::invalid(param.clone(), "a tool needs a `type`"))?;
        let (builtin, flag) = match kind {
            "function" => {
                // The Responses API's functions are flat: `{type, name, parameters}`.
                functions.push(function_description(&param, &tool.flat_function())?);
                continue;
            }
            "code_interpreter" => ("python", "--python"),
            "web_search" | "web_search_preview" | "browser_search" => ("browser", "--browser"),
            other => {
                return Err(ApiError::invalid(
                    format!("{param}.type"),
                    format!(
                        "tools of type `{other}` are not supported (function, code_interpreter, web_search)"
                    ),
                ));
            }
        };
        let tool = available
            .iter()
            .find(|t| t.name() == builtin)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("{param}.type"),
                    format!("`{kind}` is not available: start ossa serve with {flag}"),
                )
            })?;
        if !builtins.iter().any(|t| t.name() == builtin) {
            builtins.push(Arc::clone(tool));
        }
    }
    // The system message lists built-ins in the server's order (browser, then python).
    builtins.sort_by_key(|t| available.iter().position(|a| a.name() == t.name()));
    Ok((builtins, functions))
}

fn input_item(
    param: &str,
    item: &InputItem,
    history: &mut Vec<Message>,
    instructions: &mut Vec<String>,
    call_names: &mut HashMap<String, String>,
) -> Result<(), ApiError> {
    let kind = item
        .kind
        .as_deref()
        .unwrap_or(if item.role.is_some() { "message" } else { "" });
    match kind {
        "message" => {
            let role = item.role.as_deref().unwrap_or_default();
            let text = content_text(&format!("{param}.content"), item.content.as_ref())?;
            match role {
                "user" => history.push(Message::from_role_and_content(Role::User, text)),
                "system" | "developer" => instructions.push(text),
                "assistant" => history.push(
                    Message::from_role_and_content(Role::Assistant, text).with_channel("final"),
                ),
                other => {
                    return Err(ApiError::invalid(
                        format!("{param}.role"),
                        format!("unknown role `{other}`"),
                    ));
                }
            }
        }
        "reasoning" => {
            let content = match &item.content {
                Some(OneOrList::List(parts)) => &parts[..],
                _ => &[],
            };
            let summary = item.summary.as_deref().unwrap_or_default();
            let parts = if content.is_empty() { summary } else { content };
            let text: String = parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n\n");
            if !text.is_empty() {
                history.push(
                    Message::from_role_and_content(Role::Assistant, text).with_channel("analysis"),
                );
            }
        }
        "function_call" => {
            let name = item.name.as_deref().ok_or_else(|| {
                ApiError::invalid(format!("{param}.name"), "a function call needs a `name`")
            })?;
            let arguments = item.arguments.clone().unwrap_or_else(|| "{}".to_string());
            if let Some(call_id) = &item.call_id {
                call_names.insert(call_id.clone(), name.to_string());
            }
            history.push(function_call_message(name, arguments));
        }
        "function_call_output" => {
            let call_id = item.call_id.as_deref().unwrap_or_default();
            let name = call_names.get(call_id).ok_or_else(|| {
                ApiError::invalid(
                    format!("{param}.call_id"),
                    format!("`{call_id}` answers no function call of this conversation"),
                )
            })?;
            let output = match &item.output {
                Some(Value::String(s)) => s.clone(),
                Some(parts @ Value::Array(_)) => {
                    let at = format!("{param}.output");
                    let parts: request::Content = request::parse(&at, parts)?;
                    content_text(&at, Some(&parts))?
                }
                Some(other) => other.to_string(),
                None => String::new(),
            };
            history.push(function_output_message(name, output));
        }
        "code_interpreter_call" => {
            let code = item.code.as_deref().unwrap_or_default();
            history.push(
                Message::from_role_and_content(Role::Assistant, code)
                    .with_channel("analysis")
                    .with_recipient("python")
                    .with_content_type("code"),
            );
            let logs: String = item
                .outputs
                .iter()
                .flatten()
                .filter_map(|o| o.logs.as_deref())
                .collect();
            history.push(
                Message::from_author_and_content(Author::new(Role::Tool, "python"), logs)
                    .with_channel("analysis")
                    .with_recipient("assistant"),
            );
        }
        "web_search_call" => {
            // The reference server keeps no record of searches in the prompt either.
        }
        other => {
            return Err(ApiError::invalid(
                format!("{param}.type"),
                format!("input items of type `{other}` are not supported"),
            ));
        }
    }
    Ok(())
}

/// What a request lets the model call. A call to anything else (a built-in the request did not
/// offer, a recipient the model invented) is answered inside the server with an error tool
/// message the model reads, and never shown to the client as an output item.
#[derive(Clone, Default)]
struct Callable {
    /// Built-in tools by name (`python`, `browser`).
    builtins: Vec<String>,
    /// Functions: the client's and the server's own.
    functions: Vec<String>,
}

/// What the output item being streamed is.
#[derive(Debug, Clone, PartialEq)]
enum Open {
    Reasoning,
    Text,
    Function { name: String, call_id: String },
    Code,
    Search,
}

/// The result a code call that did not run shows.
const UNRUN_NOTE: &str = "The call was not run: the model did not end its message with a call.";

/// Builds the output items from agent events, and the stream's events when streaming.
struct Builder {
    client_names: Vec<String>,
    callable: Callable,
    items: Vec<OutputItem>,
    /// The item being written: its kind and index in `items`.
    open: Option<(Open, usize)>,
    /// The text streamed into the open item so far (what it shows if it is cut off).
    open_text: String,
    /// A built-in call waiting for its result: index in `items`.
    pending_builtin: Option<usize>,
    /// Whether the agent ran the pending call (a complete message addressed to a tool is
    /// only run when it ends the model's reply).
    pending_ran: bool,
    /// A client's call the model wrote, shown once the agent hands it over (a call it answers
    /// with an error instead, unfinished or not JSON, is never shown).
    pending_client: Option<Message>,
    events: Vec<ResponseStreamEvent>,
    /// The browser's pages by cursor, for citations (empty until the browser showed one).
    page_urls: Vec<String>,
    /// Citations of the text item being streamed, turned into links as they complete.
    citations: Option<CitationStream>,
    /// Annotations streamed for the open text item so far.
    streamed_annotations: usize,
    /// A browser call that has its result, waiting for the browser's pages.
    unfinished_search: Option<usize>,
    /// With logprobs asked for: the tokenizer that names the tokens.
    tokenizer: Option<ossa_engine::Tokenizer>,
    /// The open text item's tokens not yet streamed with a delta.
    pending_logprobs: Vec<TokenLogprob>,
    /// All the open text item's tokens.
    text_logprobs: Vec<TokenLogprob>,
}

impl Builder {
    fn new(client_names: Vec<String>, callable: Callable) -> Self {
        Self {
            client_names,
            callable,
            items: Vec::new(),
            open: None,
            open_text: String::new(),
            pending_builtin: None,
            pending_ran: false,
            pending_client: None,
            events: Vec::new(),
            page_urls: Vec::new(),
            citations: None,
            streamed_annotations: 0,
            unfinished_search: None,
            tokenizer: None,
            pending_logprobs: Vec::new(),
            text_logprobs: Vec::new(),
        }
    }

    /// Reports the answer's tokens' log-probabilities, named by `tokenizer`.
    fn with_logprobs(mut self, tokenizer: Option<ossa_engine::Tokenizer>) -> Self {
        self.tokenizer = tokenizer;
        self
    }

    /// Streams a piece of answer text with its citations turned into links: like the reference
    /// server, each citation's `response.output_text.annotation.added` comes before the delta
    /// holding its link, and text that may be the start of a citation waits until it is whole.
    fn text_delta(&mut self, index: usize, delta: &str) {
        let stream = self
            .citations
            .get_or_insert_with(|| CitationStream::new(self.page_urls.clone()));
        let chunk = stream.push(delta);
        self.emit_text_chunk(index, chunk);
    }

    fn emit_text_chunk(&mut self, index: usize, chunk: ossa_tools::citations::StreamChunk) {
        let id = self.items[index].id().to_string();
        for annotation in &chunk.annotations {
            // The annotation's place in the part's `annotations` (counted from 0, as OpenAI's
            // API defines it; the reference server counts from 1).
            let annotation_index = self.streamed_annotations;
            self.streamed_annotations += 1;
            self.emit(ResponseStreamEvent::OutputTextAnnotationAdded {
                item_id: id.clone(),
                output_index: index,
                content_index: 0,
                annotation_index,
                annotation: annotation.into(),
            });
        }
        if !chunk.text.is_empty() {
            let logprobs = std::mem::take(&mut self.pending_logprobs);
            self.emit(ResponseStreamEvent::OutputTextDelta {
                item_id: id,
                output_index: index,
                content_index: 0,
                delta: chunk.text,
                logprobs,
            });
        }
    }

    fn emit(&mut self, event: ResponseStreamEvent) {
        self.events.push(event);
    }

    /// The item a message shows as; `None` for a call to something the request did not offer,
    /// which the agent answers with an error the model reads and the client never sees.
    fn kind_of(&self, recipient: Option<&str>, channel: Option<&str>) -> Option<Open> {
        let offers = |builtin: &str| self.callable.builtins.iter().any(|b| b == builtin);
        match recipient {
            None => Some(match channel {
                Some("analysis") => Open::Reasoning,
                _ => Open::Text,
            }),
            Some(r) if r == "python" || r.starts_with("python.") => {
                offers("python").then_some(Open::Code)
            }
            Some(r) if r.starts_with("browser.") => offers("browser").then_some(Open::Search),
            Some(r) => {
                let name = function_name(r)?;
                self.callable
                    .functions
                    .iter()
                    .any(|f| f == name)
                    .then(|| Open::Function {
                        name: name.to_string(),
                        call_id: new_id("call_"),
                    })
            }
        }
    }

    /// What a complete browser call asks for, from its recipient and arguments: a URL given as
    /// the `id` of an `open` (a link id or cursor is resolved to the page it opened once the
    /// call has run, see `finish_search`); the page a `find` searches (its `cursor`, else the
    /// current page).
    fn search_action(&self, recipient: Option<&str>, arguments: &str) -> WebSearchAction {
        let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
        let string = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_string);
        match recipient {
            Some("browser.search") => WebSearchAction::Search {
                query: string("query"),
            },
            Some("browser.open") => WebSearchAction::OpenPage { url: string("id") },
            _ => {
                let page = match args.get("cursor").and_then(Value::as_i64) {
                    Some(cursor) if cursor >= 0 => usize::try_from(cursor)
                        .ok()
                        .and_then(|c| self.page_urls.get(c)),
                    _ => self.page_urls.last(),
                };
                WebSearchAction::FindInPage {
                    pattern: string("pattern").unwrap_or_default(),
                    url: page.cloned(),
                }
            }
        }
    }

    /// Opens an item of `kind` (closing nothing: the caller closed the last one); a search
    /// with its `action`.
    fn open_item(&mut self, kind: Open, action: Option<WebSearchAction>) -> usize {
        let index = self.items.len();
        let status = Status::InProgress;
        let item = match &kind {
            Open::Reasoning => OutputItem::Reasoning {
                id: new_id("rs_"),
                summary: Vec::new(),
                content: Vec::new(),
                status,
            },
            Open::Text => OutputItem::Message {
                id: new_id("msg_"),
                role: AssistantRole,
                status,
                content: Vec::new(),
            },
            Open::Function { name, call_id } => OutputItem::FunctionCall {
                id: new_id("fc_"),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: String::new(),
                status,
            },
            Open::Code => OutputItem::CodeInterpreterCall {
                id: new_id("ci_"),
                code: String::new(),
                container_id: SandboxContainer,
                outputs: None,
                status,
            },
            Open::Search => OutputItem::WebSearchCall {
                id: new_id("ws_"),
                status,
                action: action.unwrap_or(WebSearchAction::Search { query: None }),
            },
        };
        let item_id = item.id().to_string();
        self.items.push(item.clone());
        self.emit(ResponseStreamEvent::OutputItemAdded {
            output_index: index,
            item,
        });
        let output_index = index;
        match &kind {
            Open::Reasoning => self.emit(ResponseStreamEvent::ContentPartAdded {
                item_id,
                output_index,
                content_index: 0,
                part: ContentPart::ReasoningText {
                    text: String::new(),
                },
            }),
            Open::Text => self.emit(ResponseStreamEvent::ContentPartAdded {
                item_id,
                output_index,
                content_index: 0,
                part: ContentPart::OutputText {
                    text: String::new(),
                    annotations: Vec::new(),
                    logprobs: Vec::new(),
                },
            }),
            Open::Code => self.emit(ResponseStreamEvent::CodeInterpreterCallInProgress {
                item_id,
                output_index,
            }),
            Open::Search => self.emit(ResponseStreamEvent::WebSearchCallInProgress {
                item_id,
                output_index,
            }),
            Open::Function { .. } => {}
        }
        self.open = Some((kind, index));
        self.open_text.clear();
        index
    }

    fn delta(&mut self, kind: Option<Open>, delta: &str) {
        // A search's item is added when the call is complete, with its action (the SDKs'
        // type requires one); its arguments stream as no event.
        let Some(kind) = kind.filter(|k| *k != Open::Search) else {
            return;
        };
        let same = matches!(
            (&self.open, &kind),
            (Some((Open::Function { name: a, .. }, _)), Open::Function { name: b, .. }) if a == b
        ) || self.open.as_ref().is_some_and(|(k, _)| *k == kind);
        let index = match (&self.open, same) {
            (Some((_, index)), true) => *index,
            _ => self.open_item(kind.clone(), None),
        };
        self.open_text.push_str(delta);
        let item_id = self.items[index].id().to_string();
        let (output_index, delta) = (index, delta.to_string());
        match kind {
            Open::Reasoning => self.emit(ResponseStreamEvent::ReasoningTextDelta {
                item_id,
                output_index,
                content_index: 0,
                delta,
            }),
            Open::Text => self.text_delta(index, &delta),
            Open::Function { .. } => self.emit(ResponseStreamEvent::FunctionCallArgumentsDelta {
                item_id,
                output_index,
                delta,
            }),
            Open::Code => self.emit(ResponseStreamEvent::CodeInterpreterCallCodeDelta {
                item_id,
                output_index,
                delta,
            }),
            Open::Search => {}
        }
    }

    /// A complete message: finishes its item.
    fn message(&mut self, message: &Message) {
        let recipient = message.recipient.as_deref().filter(|r| *r != "all");
        let Some(kind) = self.kind_of(recipient, message.channel.as_deref()) else {
            return;
        };
        let matches = match (&self.open, &kind) {
            (Some((Open::Function { name: a, .. }, _)), Open::Function { name: b, .. }) => a == b,
            (Some((k, _)), kind) => k == kind,
            (None, _) => false,
        };
        let action = (kind == Open::Search).then(|| self.search_action(recipient, &message.text()));
        let index = match (&self.open, matches) {
            (Some((_, index)), true) => *index,
            _ => self.open_item(kind, action),
        };
        let (kind, _) = self.open.take().unwrap_or((Open::Text, index));
        self.done(kind, index, message.text(), Status::Completed);
    }

    /// Sends an item's closing events; a call is finished when its result comes.
    fn done(&mut self, kind: Open, index: usize, text: String, status: Status) {
        let item_id = self.items[index].id().to_string();
        let output_index = index;
        match kind {
            Open::Reasoning => {
                let part = ContentPart::ReasoningText { text: text.clone() };
                self.emit(ResponseStreamEvent::ReasoningTextDone {
                    item_id,
                    output_index,
                    content_index: 0,
                    text,
                });
                self.finish_part(index, part, status);
            }
            Open::Text => {
                if let Some(stream) = self.citations.take() {
                    // Text held back as a possible citation start goes out as it is.
                    let rest = stream.finish();
                    self.emit_text_chunk(index, rest);
                }
                self.streamed_annotations = 0;
                // The whole text normalized at once: the same text and annotations whether the
                // response streamed or not.
                let normalized = normalize_citations(&text, &self.page_urls, false);
                let text = normalized.text;
                let annotations: Vec<Annotation> = normalized
                    .annotations
                    .iter()
                    .map(Annotation::from)
                    .collect();
                self.pending_logprobs.clear();
                let logprobs = std::mem::take(&mut self.text_logprobs);
                let part = ContentPart::OutputText {
                    text: text.clone(),
                    annotations,
                    logprobs: logprobs.clone(),
                };
                self.emit(ResponseStreamEvent::OutputTextDone {
                    item_id,
                    output_index,
                    content_index: 0,
                    text,
                    logprobs,
                });
                self.finish_part(index, part, status);
            }
            Open::Function { name, .. } => {
                self.set_arguments(index, &text);
                self.emit(ResponseStreamEvent::FunctionCallArgumentsDone {
                    item_id,
                    output_index,
                    arguments: text,
                });
                if self.client_names.contains(&name) {
                    self.finish_item(index, status);
                } else {
                    // A server function (MCP): it runs here, like a built-in.
                    self.pending_builtin = Some(index);
                    self.pending_ran = false;
                }
            }
            Open::Code => {
                self.set_code(index, &text);
                self.emit(ResponseStreamEvent::CodeInterpreterCallCodeDone {
                    item_id,
                    output_index,
                    code: text,
                });
                self.pending_builtin = Some(index);
                self.pending_ran = false;
            }
            Open::Search => {
                self.pending_builtin = Some(index);
                self.pending_ran = false;
            }
        }
    }

    fn tool_call(&mut self, call: &ossa_tools::ToolCall) {
        if let Some(message) = self.pending_client.take() {
            // Handed to the client: its item, arguments and all, at once.
            let kind = self.kind_of(message.recipient.as_deref(), None);
            self.delta(kind, &message.text());
            self.message(&message);
            return;
        }
        let Some(index) = self.pending_builtin else {
            return;
        };
        self.pending_ran = true;
        let item_id = self.items[index].id().to_string();
        let output_index = index;
        if call.recipient == "python" {
            self.emit(ResponseStreamEvent::CodeInterpreterCallInterpreting {
                item_id,
                output_index,
            });
        } else if call.recipient.starts_with("browser.") {
            self.emit(ResponseStreamEvent::WebSearchCallSearching {
                item_id,
                output_index,
            });
        }
    }

    fn tool_result(&mut self, output: &ossa_tools::ToolOutput) {
        let Some(index) = self.pending_builtin.take() else {
            return;
        };
        if !self.pending_ran {
            // Answered without running (the turn's limit of tool calls).
            self.close_unrun(index, &output.content);
            return;
        }
        let item_id = self.items[index].id().to_string();
        let output_index = index;
        match &mut self.items[index] {
            OutputItem::CodeInterpreterCall { outputs, .. } => {
                let mut shown = vec![CodeOutput::Logs {
                    logs: output.content.clone(),
                }];
                shown.extend(image_outputs(&output.files));
                *outputs = Some(shown);
                self.emit(ResponseStreamEvent::CodeInterpreterCallCompleted {
                    item_id,
                    output_index,
                });
            }
            OutputItem::WebSearchCall { .. } => {
                self.emit(ResponseStreamEvent::WebSearchCallCompleted {
                    item_id,
                    output_index,
                });
                // Finished when the page it opened is known (the next event).
                self.unfinished_search = Some(index);
                return;
            }
            _ => {}
        }
        self.finish_item(index, Status::Completed);
    }

    /// Closes a call that did not run, with `why` where the client shows its result: a code
    /// call is `incomplete` with `why` as its logs, a search `failed`, a function `incomplete`.
    fn close_unrun(&mut self, index: usize, why: &str) {
        let status = match &mut self.items[index] {
            OutputItem::CodeInterpreterCall { outputs, .. } => {
                *outputs = Some(vec![CodeOutput::Logs {
                    logs: why.to_string(),
                }]);
                Status::Incomplete
            }
            OutputItem::WebSearchCall { .. } => Status::Failed,
            _ => Status::Incomplete,
        };
        self.finish_item(index, status);
    }

    /// A call the agent will not run (the model wrote more after it): closed as unrun.
    fn close_unrun_pending(&mut self) {
        self.pending_client = None;
        if !self.pending_ran
            && let Some(index) = self.pending_builtin.take()
        {
            self.close_unrun(index, UNRUN_NOTE);
        }
    }

    /// Closes whatever the turn left open (cut off by a limit, a cancellation or an error):
    /// every item added is done, none stays `in_progress`.
    fn close_all(&mut self) {
        self.pending_client = None;
        self.finish_search(None);
        if let Some(index) = self.pending_builtin.take() {
            let why = if self.pending_ran {
                "The call was interrupted before it returned."
            } else {
                UNRUN_NOTE
            };
            self.close_unrun(index, why);
        }
        if let Some((kind, index)) = self.open.take() {
            let text = std::mem::take(&mut self.open_text);
            match kind {
                Open::Reasoning | Open::Text => self.done(kind, index, text, Status::Incomplete),
                Open::Function { .. } => {
                    self.set_arguments(index, &text);
                    self.finish_item(index, Status::Incomplete);
                }
                Open::Code => {
                    self.set_code(index, &text);
                    self.close_unrun(index, "The call was cut off before it was complete.");
                }
                Open::Search => self.close_unrun(index, ""),
            }
        }
    }

    /// Finishes the browser call whose result came last; `page_urls` are the browser's pages
    /// after it: an `open_page` without a URL gets the page it opened (the newest, if the
    /// call added one: a failed open adds none).
    fn finish_search(&mut self, page_urls: Option<&[String]>) {
        let Some(index) = self.unfinished_search.take() else {
            return;
        };
        let grew = page_urls.is_some_and(|urls| urls.len() > self.page_urls.len());
        if let OutputItem::WebSearchCall {
            action: WebSearchAction::OpenPage { url },
            ..
        } = &mut self.items[index]
            && url.is_none()
            && grew
        {
            *url = page_urls.and_then(|urls| urls.last()).cloned();
        }
        self.finish_item(index, Status::Completed);
    }

    /// Whether `recipient` is one of the client's functions (and offered).
    fn is_client(&self, recipient: &str) -> bool {
        function_name(recipient).is_some_and(|name| {
            self.client_names.iter().any(|c| c == name)
                && self.callable.functions.iter().any(|f| f == name)
        })
    }

    /// Closes a reasoning or message item with its one content part.
    fn finish_part(&mut self, index: usize, part: ContentPart, status: Status) {
        self.emit(ResponseStreamEvent::ContentPartDone {
            item_id: self.items[index].id().to_string(),
            output_index: index,
            content_index: 0,
            part: part.clone(),
        });
        if let OutputItem::Reasoning { content, .. } | OutputItem::Message { content, .. } =
            &mut self.items[index]
        {
            *content = vec![part];
        }
        self.finish_item(index, status);
    }

    fn finish_item(&mut self, index: usize, status: Status) {
        self.items[index].set_status(status);
        let item = self.items[index].clone();
        self.emit(ResponseStreamEvent::OutputItemDone {
            output_index: index,
            item,
        });
    }

    /// A function call's arguments, as far as the model wrote them.
    fn set_arguments(&mut self, index: usize, text: &str) {
        if let OutputItem::FunctionCall { arguments, .. } = &mut self.items[index] {
            *arguments = text.to_string();
        }
    }

    /// A code call's code, as far as the model wrote it.
    fn set_code(&mut self, index: usize, text: &str) {
        if let OutputItem::CodeInterpreterCall { code, .. } = &mut self.items[index] {
            *code = text.to_string();
        }
    }

    fn event(&mut self, event: &AgentEvent) {
        if let AgentEvent::PageUrls(urls) = event {
            self.finish_search(Some(urls));
            self.page_urls = urls.clone();
            return;
        }
        self.finish_search(None);
        if matches!(
            event,
            AgentEvent::ReasoningDelta(_)
                | AgentEvent::FinalDelta(_)
                | AgentEvent::CommentaryDelta(_)
                | AgentEvent::ToolArgumentsDelta { .. }
                | AgentEvent::Message(_)
        ) {
            self.close_unrun_pending();
        }
        match event {
            AgentEvent::ReasoningDelta(d) => self.delta(Some(Open::Reasoning), d),
            AgentEvent::FinalDelta(d) | AgentEvent::CommentaryDelta(d) => {
                self.delta(Some(Open::Text), d)
            }
            AgentEvent::ToolArgumentsDelta { recipient, .. } if self.is_client(recipient) => {}
            AgentEvent::Message(message)
                if message
                    .recipient
                    .as_deref()
                    .is_some_and(|r| self.is_client(r)) =>
            {
                self.pending_client = Some(message.clone());
            }
            AgentEvent::ToolArgumentsDelta { recipient, delta } => {
                let kind = match &self.open {
                    Some((open @ Open::Function { name, .. }, _))
                        if function_name(recipient) == Some(name.as_str()) =>
                    {
                        Some(open.clone())
                    }
                    _ => self.kind_of(Some(recipient), None),
                };
                self.delta(kind, delta)
            }
            AgentEvent::FinalLogprobs(logprobs) => {
                if let Some(tokenizer) = &self.tokenizer {
                    let entry = TokenLogprob::new(tokenizer, logprobs);
                    self.pending_logprobs.push(entry.clone());
                    self.text_logprobs.push(entry);
                }
            }
            AgentEvent::Message(message) => self.message(message),
            AgentEvent::ToolCall(call) => self.tool_call(call),
            // A client's call the agent answered itself is dropped unseen.
            AgentEvent::ToolResult { .. } if self.pending_client.take().is_some() => {}
            AgentEvent::ToolResult { output, .. } => self.tool_result(output),
            _ => {}
        }
    }
}

/// Most figures a code call shows as images, and the largest file shown: a call that writes
/// hundreds of images or a huge one cannot make the response (and its stored copy) unbounded.
const MAX_IMAGES_PER_CALL: usize = 8;
const MAX_IMAGE_BYTES: u64 = 4 << 20;

/// The images among the files a code call wrote, as OpenAI's `{"type": "image", "url"}` outputs
/// with data URLs. The type comes from the file's first bytes, not its name: a file named
/// `plot.png` holding HTML is not handed to a client as an image.
fn image_outputs(files: &[std::path::PathBuf]) -> Vec<CodeOutput> {
    let mut outputs = Vec::new();
    for path in files {
        if outputs.len() == MAX_IMAGES_PER_CALL {
            tracing::warn!(
                "a code call wrote more than {MAX_IMAGES_PER_CALL} files; later images are not returned"
            );
            break;
        }
        // Not following links: the sandbox reports regular files, and a link swapped in since
        // is not read.
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_IMAGE_BYTES {
            continue;
        }
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let mime = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            "image/png"
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            "image/jpeg"
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            "image/gif"
        } else {
            continue;
        };
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        outputs.push(CodeOutput::Image {
            url: format!("data:{mime};base64,{data}"),
        });
    }
    outputs
}

#[allow(clippy::too_many_arguments)]
fn response_object(
    state: &ServerState,
    id: &str,
    created: u64,
    echo: &Echo,
    store: bool,
    status: Status,
    output: Vec<OutputItem>,
    result: Option<&TurnResult>,
) -> ResponseObject {
    let usage = result.map(|r| {
        let input = r.report.prompt_tokens();
        let output = r.report.generated_tokens();
        Usage {
            input_tokens: input,
            input_tokens_details: InputTokensDetails {
                cache_write_tokens: 0,
                cached_tokens: r.report.reused_tokens(),
            },
            output_tokens: output,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
            },
            total_tokens: input + output,
        }
    });
    let incomplete_details = result.and_then(|r| match &r.report.outcome {
        TurnOutcome::Limit(_) if r.external_call.is_none() => Some(IncompleteDetails {
            reason: IncompleteReason::MaxOutputTokens,
        }),
        _ => None,
    });
    ResponseObject {
        id: id.to_string(),
        object: ResponseTag,
        created_at: created,
        status,
        error: None,
        incomplete_details,
        instructions: echo.instructions.clone(),
        max_output_tokens: echo.max_output_tokens,
        model: state.settings.model_id.clone(),
        output,
        parallel_tool_calls: false,
        previous_response_id: echo.previous_response_id.clone(),
        reasoning: Reasoning {
            effort: echo.effort.to_string(),
            summary: None,
        },
        store,
        temperature: f64::from(echo.temperature),
        text: echo.text.clone(),
        tool_choice: echo.tool_choice.clone(),
        tools: echo.tools.clone(),
        top_p: f64::from(echo.top_p),
        truncation: TruncationDisabled,
        usage,
        metadata: echo.metadata.clone(),
    }
}

/// The finished response, stored when asked (and `store: false` when it could not be).
async fn finish(
    state: &ServerState,
    id: &str,
    created: u64,
    request: &ResponsesRequest,
    builder: &Builder,
    result: &TurnResult,
) -> ResponseObject {
    let status = match &result.report.outcome {
        TurnOutcome::Limit(_) if result.external_call.is_none() => Status::Incomplete,
        _ => Status::Completed,
    };
    let mut response = response_object(
        state,
        id,
        created,
        &request.echo,
        request.store,
        status,
        builder.items.clone(),
        Some(result),
    );
    if let (true, Some(store)) = (request.store, &state.store) {
        // The preamble is rebuilt from each request's own instructions and tools; what came
        // from the previous response is stored with it already.
        let added: Vec<Message> = result
            .conversation
            .messages
            .iter()
            .filter(|m| !matches!(m.author.role, Role::System | Role::Developer))
            .skip(request.inherited)
            .cloned()
            .collect();
        let (id, previous, stored) = (id.to_string(), request.previous.clone(), response.clone());
        let input = request.input_items.clone();
        let saved = store::run(store, move |store| {
            store.put(&id, previous.as_deref(), &stored, &input, &added)
        })
        .await;
        if let Err(error) = saved {
            error.log();
            response.store = false;
        }
    }
    response
}

/// The whole response (the turn holds the request's cancel already: no stop string ends a
/// response early).
async fn complete(
    state: &Arc<ServerState>,
    (request, prepared): (ResponsesRequest, turn::Turn),
    _cancel: CancellationToken,
) -> Response {
    let id = new_id("resp_");
    let created = now();
    let mut builder = Builder::new(request.client_names.clone(), request.callable.clone())
        .with_logprobs(
            request
                .logprobs
                .then(|| state.settings.encoding.tokenizer().clone()),
        );
    let result = match prepared.run(&mut |e| builder.event(&e)).await {
        Ok(result) => result,
        Err(error) => return error.into_response(),
    };
    builder.close_all();
    axum::Json(finish(state, &id, created, &request, &builder, &result).await).into_response()
}

fn stream(
    state: Arc<ServerState>,
    (request, prepared): (ResponsesRequest, turn::Turn),
    admitted: Admitted,
) -> impl IntoResponse {
    common::sse(admitted, move |sender, _cancel| async move {
        let id = new_id("resp_");
        let created = now();
        // Each event named by its type and numbered as sent.
        let mut sequence_number = 0u64;
        let mut send = |event: ResponseStreamEvent| {
            let name = event.kind();
            let data = json_text(&Sequenced {
                event,
                sequence_number,
            });
            sequence_number += 1;
            sender.send(Outgoing::Named { name, data });
        };
        let initial = response_object(
            &state,
            &id,
            created,
            &request.echo,
            request.store,
            Status::InProgress,
            Vec::new(),
            None,
        );
        let initial = Box::new(initial);
        send(ResponseStreamEvent::Created {
            response: initial.clone(),
        });
        send(ResponseStreamEvent::InProgress { response: initial });
        // An SSE comment: clients show nothing, curl shows it.
        sender.queue_note(&state);
        let mut builder = Builder::new(request.client_names.clone(), request.callable.clone())
            .with_logprobs(
                request
                    .logprobs
                    .then(|| state.settings.encoding.tokenizer().clone()),
            );
        let result = {
            let mut on_event = |event: AgentEvent| {
                builder.event(&event);
                for event in builder.events.drain(..) {
                    send(event);
                }
            };
            prepared.run(&mut on_event).await
        };
        builder.close_all();
        for event in builder.events.drain(..) {
            send(event);
        }
        let last = match result {
            Ok(result) => {
                let response =
                    Box::new(finish(&state, &id, created, &request, &builder, &result).await);
                if response.status == Status::Incomplete {
                    ResponseStreamEvent::Incomplete { response }
                } else {
                    ResponseStreamEvent::Completed { response }
                }
            }
            Err(error) => {
                let mut failed = response_object(
                    &state,
                    &id,
                    created,
                    &request.echo,
                    request.store,
                    Status::Failed,
                    builder.items.clone(),
                    None,
                );
                failed.error = Some(ResponseError {
                    code: "server_error".to_string(),
                    message: error.message,
                });
                ResponseStreamEvent::Failed {
                    response: Box::new(failed),
                }
            }
        };
        send(last);
    })
}
