//! Chat Completions (`/v1/chat/completions`): the completion, the chunks of its stream.

use serde::{Deserialize, Serialize};

use super::request::{
    Content, OneParam, ReasoningParam, ResponseFormat, ToolChoiceParam, ToolParam,
};
pub use super::responses::AssistantRole;
use super::{TokenLogprob, constant};

constant! {
    /// `"object": "chat.completion"`.
    ChatCompletionTag = "chat.completion";
    /// `"object": "chat.completion.chunk"`.
    ChatCompletionChunkTag = "chat.completion.chunk";
    /// `"type": "function"` of a tool call.
    FunctionType = "function";
}

/// A non-streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletion {
    pub id: String,
    pub object: ChatCompletionTag,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub index: usize,
    pub message: ChatMessage,
    /// Null unless the request asked for `logprobs`.
    pub logprobs: Option<Logprobs>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: String,
}

/// The assistant's message. Fields ossa adds to OpenAI's are left out when empty.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: AssistantRole,
    /// The answer; null when there is none (a tool call).
    #[serialize_always]
    pub content: Option<String>,
    /// The chain of thought, under the name vLLM and DeepSeek clients read...
    pub reasoning_content: Option<String>,
    /// ...and under the one clients built for gpt-oss read.
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The built-in calls the server ran on the way (ossa's own field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_tool_calls: Vec<ServerToolCall>,
}

/// `logprobs` of a choice: the answer's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logprobs {
    pub content: Vec<TokenLogprob>,
    /// Always null: ossa's model writes no refusals.
    pub refusal: Option<Vec<TokenLogprob>>,
}

/// A call to one of the client's functions.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The call's place among the stream's calls (in chunks only).
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

/// A built-in call the server ran (ossa's own field, `server_tool_calls`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerToolCall {
    pub index: usize,
    pub id: String,
    /// `code_interpreter` or `web_search`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tool the model addressed (`python`, `browser.search`).
    pub recipient: String,
    /// What the model sent it.
    pub input: String,
    /// What it answered.
    pub output: String,
}

/// A link in the answer, in the shape of OpenAI's search models.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Annotation {
    UrlCitation { url_citation: UrlCitation },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlCitation {
    /// Character offsets into the message's content.
    pub start_index: usize,
    pub end_index: usize,
    pub title: String,
    pub url: String,
}

impl Annotation {
    /// `annotation` with its offsets moved by `offset` characters.
    pub fn new(annotation: &ossa_tools::citations::Annotation, offset: usize) -> Self {
        Annotation::UrlCitation {
            url_citation: UrlCitation {
                start_index: annotation.start_index + offset,
                end_index: annotation.end_index + offset,
                title: annotation.title.clone(),
                url: annotation.url.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose cache was reused from an earlier generation.
    pub cached_tokens: usize,
}

/// One `data:` event of a streamed answer.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: ChatCompletionChunkTag,
    pub created: u64,
    pub model: String,
    /// Empty in the last chunk, which carries `usage` (with `stream_options.include_usage`).
    pub choices: Vec<ChunkChoice>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<Logprobs>,
    /// Null until the last choice chunk.
    pub finish_reason: Option<String>,
}

/// What a chunk adds to the message: only the fields it has are sent.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delta {
    pub role: Option<AssistantRole>,
    pub content: Option<String>,
    pub reasoning_content: Option<String>,
    pub reasoning: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_tool_calls: Vec<ServerToolCall>,
}

/// `POST /v1/chat/completions`' body: the fields ossa reads (sampling, `stop` and `stream` are
/// read by [`super::request::SamplingRequest`] from the same body).
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Required (a 400 naming it when missing).
    pub messages: Option<Vec<MessageParam>>,
    pub tools: Option<Vec<ToolParam>>,
    pub tool_choice: Option<ToolChoiceParam>,
    pub response_format: Option<OneParam<ResponseFormat>>,
    pub reasoning_effort: Option<String>,
    /// OpenRouter's form of the effort, read when `reasoning_effort` is absent.
    pub reasoning: Option<ReasoningParam>,
    /// Wins over `max_tokens` (its older name).
    pub max_completion_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
}

/// One of `messages`.
#[derive(Debug, Deserialize)]
pub struct MessageParam {
    /// `system`, `developer`, `user`, `assistant`, `tool` (or `function`).
    pub role: String,
    pub content: Option<Content>,
    /// An assistant message's chain of thought, under vLLM's name...
    pub reasoning_content: Option<String>,
    /// ...or gpt-oss clients'.
    pub reasoning: Option<String>,
    pub tool_calls: Option<Vec<ToolCallParam>>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
    /// A tool message's function, when it has no `tool_call_id`.
    pub name: Option<String>,
}

/// A call in an assistant message's `tool_calls`.
#[derive(Debug, Deserialize)]
pub struct ToolCallParam {
    pub id: Option<String>,
    /// Required (a 400 naming the call when missing).
    pub function: Option<CalledFunction>,
}

#[derive(Debug, Deserialize)]
pub struct CalledFunction {
    pub name: Option<String>,
    /// JSON text, as OpenAI sends it; a JSON value some clients send instead is taken as its
    /// text.
    pub arguments: Option<serde_json::Value>,
}
