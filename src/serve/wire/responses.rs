//! The Responses API (`/v1/responses`): the response object, its output items and content
//! parts, and the events of its stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::{
    Content, ContentPartParam, OneOrList, OneParam, ReasoningParam, TextFormat, ToolChoiceParam,
    ToolParam,
};
use super::{TokenLogprob, constant};

constant! {
    /// `"object": "response"`.
    ResponseTag = "response";
    /// `"object": "list"`.
    ListTag = "list";
    /// `"role": "assistant"`.
    AssistantRole = "assistant";
    /// `"type": "message"` of a listed input item.
    MessageTag = "message";
    /// `"tool_choice": "auto"`, echoed when the request gave none.
    AutoTag = "auto";
    /// `"type": "text"`: the plain answer format.
    TextTag = "text";
    /// `"truncation": "disabled"`: ossa never drops input to make it fit.
    TruncationDisabled = "disabled";
    /// `"container_id"` of code calls: the server's own sandbox.
    SandboxContainer = "ossa-sandbox";
}

/// A response's or an output item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

/// `POST /v1/responses`' answer, `GET /v1/responses/{id}`'s, and the `response` of the
/// lifecycle stream events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseObject {
    pub id: String,
    pub object: ResponseTag,
    pub created_at: u64,
    pub status: Status,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<usize>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Reasoning,
    pub store: bool,
    /// The sampling settings are `f32`s, widened: printed as the widened value (`0.7` is
    /// `0.699999988079071`), as the API always has.
    pub temperature: f64,
    /// The request's `text` (its `format`), as the client sent it.
    pub text: Value,
    /// The request's `tool_choice`, as the client sent it.
    pub tool_choice: Value,
    /// The request's `tools`, as the client sent them.
    pub tools: Vec<Value>,
    pub top_p: f64,
    pub truncation: TruncationDisabled,
    pub usage: Option<Usage>,
    /// The request's `metadata`, as the client sent it.
    pub metadata: Value,
}

/// Why a response `failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

/// Why a response is `incomplete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncompleteDetails {
    pub reason: IncompleteReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteReason {
    MaxOutputTokens,
}

/// The reasoning settings the response ran with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reasoning {
    /// `low`, `medium` or `high`.
    pub effort: String,
    /// Always null: ossa writes no reasoning summaries.
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTokensDetails {
    /// Always 0: ossa's prefix cache costs nothing to write, and it reports no writes (the
    /// `openai` SDK's type requires the field).
    pub cache_write_tokens: usize,
    /// Prompt tokens whose cache was reused from an earlier generation.
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
}

/// One item of a response's `output`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputItem {
    Message {
        id: String,
        role: AssistantRole,
        status: Status,
        content: Vec<ContentPart>,
    },
    Reasoning {
        id: String,
        /// Always empty: ossa writes no summaries.
        summary: Vec<ContentPart>,
        /// The chain of thought, as one `reasoning_text` part once the item is done.
        content: Vec<ContentPart>,
        status: Status,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: Status,
    },
    CodeInterpreterCall {
        id: String,
        code: String,
        container_id: SandboxContainer,
        /// Null until the call has run (or was closed unrun).
        outputs: Option<Vec<CodeOutput>>,
        status: Status,
    },
    WebSearchCall {
        id: String,
        status: Status,
        /// The item is added when the model's call is complete, with what it asked for.
        action: WebSearchAction,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. }
            | OutputItem::Reasoning { id, .. }
            | OutputItem::FunctionCall { id, .. }
            | OutputItem::CodeInterpreterCall { id, .. }
            | OutputItem::WebSearchCall { id, .. } => id,
        }
    }

    pub fn set_status(&mut self, new: Status) {
        match self {
            OutputItem::Message { status, .. }
            | OutputItem::Reasoning { status, .. }
            | OutputItem::FunctionCall { status, .. }
            | OutputItem::CodeInterpreterCall { status, .. }
            | OutputItem::WebSearchCall { status, .. } => *status = new,
        }
    }
}

/// A part of an item's `content`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    OutputText {
        text: String,
        annotations: Vec<Annotation>,
        logprobs: Vec<TokenLogprob>,
    },
    ReasoningText {
        text: String,
    },
}

/// A link in answer text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Annotation {
    UrlCitation {
        start_index: usize,
        end_index: usize,
        url: String,
        title: String,
    },
}

impl From<&ossa_tools::citations::Annotation> for Annotation {
    fn from(annotation: &ossa_tools::citations::Annotation) -> Self {
        Annotation::UrlCitation {
            start_index: annotation.start_index,
            end_index: annotation.end_index,
            url: annotation.url.clone(),
            title: annotation.title.clone(),
        }
    }
}

/// What a code call printed or drew.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CodeOutput {
    Logs {
        logs: String,
    },
    /// A figure the code wrote, as a `data:` URL.
    Image {
        url: String,
    },
}

/// What a browser call did. The fields are the model's arguments: null where the model left
/// one out (or wrote something other than a string). A `find`'s type is `find_in_page`, as
/// the `openai` SDKs type it (Python 3.63, TypeScript 6.49: their discriminated unions refuse
/// any other name); ossa sent `find` before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WebSearchAction {
    Search {
        query: Option<String>,
    },
    OpenPage {
        url: Option<String>,
    },
    FindInPage {
        /// Empty when the model gave none (the SDKs' type requires a string).
        pattern: String,
        /// The page searched; null only when the browser had no page open.
        url: Option<String>,
    },
}

/// One event of a streamed response, as its SSE `data` (less `sequence_number`, which
/// [`Sequenced`] adds as it is sent). Its `type` is also the SSE event's name. (The response
/// is boxed: it is many times the size of the other events.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ResponseStreamEvent {
    #[serde(rename = "response.created")]
    Created { response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<ResponseObject> },
    #[serde(rename = "response.completed")]
    Completed { response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: ContentPart,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: ContentPart,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<TokenLogprob>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    #[serde(rename = "response.output_text.annotation.added")]
    OutputTextAnnotationAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        annotation_index: usize,
        annotation: Annotation,
    },
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
    },
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        arguments: String,
    },
    #[serde(rename = "response.code_interpreter_call.in_progress")]
    CodeInterpreterCallInProgress {
        item_id: String,
        output_index: usize,
    },
    #[serde(rename = "response.code_interpreter_call_code.delta")]
    CodeInterpreterCallCodeDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.code_interpreter_call_code.done")]
    CodeInterpreterCallCodeDone {
        item_id: String,
        output_index: usize,
        code: String,
    },
    #[serde(rename = "response.code_interpreter_call.interpreting")]
    CodeInterpreterCallInterpreting {
        item_id: String,
        output_index: usize,
    },
    #[serde(rename = "response.code_interpreter_call.completed")]
    CodeInterpreterCallCompleted {
        item_id: String,
        output_index: usize,
    },
    #[serde(rename = "response.web_search_call.in_progress")]
    WebSearchCallInProgress {
        item_id: String,
        output_index: usize,
    },
    #[serde(rename = "response.web_search_call.searching")]
    WebSearchCallSearching {
        item_id: String,
        output_index: usize,
    },
    #[serde(rename = "response.web_search_call.completed")]
    WebSearchCallCompleted {
        item_id: String,
        output_index: usize,
    },
}

impl ResponseStreamEvent {
    /// The event's `type`, which is also its SSE event name.
    pub fn kind(&self) -> &'static str {
        use ResponseStreamEvent::*;
        match self {
            Created { .. } => "response.created",
            InProgress { .. } => "response.in_progress",
            Completed { .. } => "response.completed",
            Incomplete { .. } => "response.incomplete",
            Failed { .. } => "response.failed",
            OutputItemAdded { .. } => "response.output_item.added",
            OutputItemDone { .. } => "response.output_item.done",
            ContentPartAdded { .. } => "response.content_part.added",
            ContentPartDone { .. } => "response.content_part.done",
            OutputTextDelta { .. } => "response.output_text.delta",
            OutputTextDone { .. } => "response.output_text.done",
            OutputTextAnnotationAdded { .. } => "response.output_text.annotation.added",
            ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            ReasoningTextDone { .. } => "response.reasoning_text.done",
            FunctionCallArgumentsDelta { .. } => "response.function_call_arguments.delta",
            FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            CodeInterpreterCallInProgress { .. } => "response.code_interpreter_call.in_progress",
            CodeInterpreterCallCodeDelta { .. } => "response.code_interpreter_call_code.delta",
            CodeInterpreterCallCodeDone { .. } => "response.code_interpreter_call_code.done",
            CodeInterpreterCallInterpreting { .. } => "response.code_interpreter_call.interpreting",
            CodeInterpreterCallCompleted { .. } => "response.code_interpreter_call.completed",
            WebSearchCallInProgress { .. } => "response.web_search_call.in_progress",
            WebSearchCallSearching { .. } => "response.web_search_call.searching",
            WebSearchCallCompleted { .. } => "response.web_search_call.completed",
        }
    }
}

/// An event as sent: numbered in the order of its stream, from 0.
#[derive(Debug, Clone, Serialize)]
pub struct Sequenced<E> {
    #[serde(flatten)]
    pub event: E,
    pub sequence_number: u64,
}

/// `DELETE /v1/responses/{id}`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedResponse {
    pub id: String,
    pub object: ResponseTag,
    pub deleted: bool,
}

/// `GET /v1/responses/{id}/input_items`' answer: a page of the input items, as the request
/// gave them (each with an `id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputItemList {
    pub object: ListTag,
    pub data: Vec<Value>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// `POST /v1/responses`' body: the fields ossa reads (sampling and `stream` are read by
/// [`super::request::SamplingRequest`] from the same body). What the response echoes
/// (`tools`, `tool_choice`, `text`, `metadata`) is taken from the body as the client sent it.
#[derive(Debug, Deserialize)]
pub struct CreateResponseRequest {
    /// Required (a 400 naming it when missing).
    pub input: Option<OneOrList<InputItem>>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub tools: Option<Vec<ToolParam>>,
    pub tool_choice: Option<ToolChoiceParam>,
    pub text: Option<TextParam>,
    pub reasoning: Option<ReasoningParam>,
    pub max_output_tokens: Option<u64>,
    pub include: Option<Vec<String>>,
    pub top_logprobs: Option<u32>,
    pub store: Option<bool>,
}

/// `text`: the answer's format.
#[derive(Debug, Deserialize)]
pub struct TextParam {
    pub format: Option<OneParam<TextFormat>>,
}

/// One of `input`: a message (`type` may be left out when it has a `role`), `reasoning`,
/// `function_call`, `function_call_output`, `code_interpreter_call` or `web_search_call`.
/// One struct rather than an enum tagged by `type`, so that the path of an error inside an
/// item is kept (see [`super::request`]).
#[derive(Debug, Deserialize)]
pub struct InputItem {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: Option<String>,
    /// A message's text, or a reasoning item's parts.
    pub content: Option<Content>,
    /// A reasoning item's summary parts.
    pub summary: Option<Vec<ContentPartParam>>,
    pub name: Option<String>,
    pub arguments: Option<String>,
    pub call_id: Option<String>,
    /// A function's output: text, a list of text parts, or any JSON (taken as its text).
    pub output: Option<Value>,
    pub code: Option<String>,
    pub outputs: Option<Vec<CodeOutputParam>>,
}

/// One of a `code_interpreter_call`'s `outputs`: its `logs` are read back (images are not).
#[derive(Debug, Deserialize)]
pub struct CodeOutputParam {
    pub logs: Option<String>,
}

/// A string `input` as `GET /v1/responses/{id}/input_items` lists it: one user message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedMessage {
    #[serde(rename = "type")]
    pub kind: MessageTag,
    pub role: String,
    pub content: Vec<ListedText>,
    pub status: Status,
    pub id: String,
}

/// Message content given as a string, listed as one part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedText {
    #[serde(rename = "type")]
    pub kind: TextPartKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPartKind {
    InputText,
    /// An assistant message's.
    OutputText,
}

/// The `text` a response echoes when the request gave no format: `{"format": {"type":
/// "text"}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainText {
    pub format: PlainFormat,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainFormat {
    #[serde(rename = "type")]
    pub kind: TextTag,
}

/// `GET /v1/responses/{id}/input_items`' query: `order` (`asc`, `desc`), `limit` (1 to 100),
/// `after` (an item id). Strings: their values are checked by the handler, which names them.
#[derive(Debug, Default, Deserialize)]
pub struct InputItemsQuery {
    pub order: Option<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
}
