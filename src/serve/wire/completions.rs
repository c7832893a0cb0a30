//! Legacy Completions (`/v1/completions`, with vLLM's additions): the completion, the chunks of
//! its stream.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::chat::Usage;
use super::constant;

constant! {
    /// `"object": "text_completion"` (the answer and its chunks alike).
    TextCompletionTag = "text_completion";
}

/// The answer, and (one choice at a time) each chunk of a streamed one.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub id: String,
    pub object: TextCompletionTag,
    pub created: u64,
    pub model: String,
    /// Empty in a stream's last chunk, which carries `usage` (with
    /// `stream_options.include_usage`).
    pub choices: Vec<CompletionChoice>,
    /// Always in the answer; in a stream only in its last chunk.
    pub usage: Option<Usage>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    /// Null unless the request asked for `logprobs`.
    #[serialize_always]
    pub logprobs: Option<Logprobs>,
    /// `stop`, `length` or `abort`; null until the stream's last choice.
    #[serialize_always]
    pub finish_reason: Option<String>,
    /// vLLM's: what stopped the generation.
    #[serialize_always]
    pub stop_reason: Option<StopReason>,
    /// vLLM's `return_token_ids`: the prompt's tokens (in a stream, with the first chunk).
    pub prompt_token_ids: Option<Vec<u32>>,
    /// vLLM's `return_token_ids`: the tokens of `text`.
    pub token_ids: Option<Vec<u32>>,
}

/// What ended a generation that stopped early.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopReason {
    /// One of the request's `stop` strings.
    Text(String),
    /// One of its `stop_token_ids`.
    Token(u32),
}

/// The legacy `logprobs` object: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    /// `f32`s widened: printed as the widened values, as the API always has.
    pub token_logprobs: Vec<f64>,
    /// Each position's alternatives, token text → logprob.
    pub top_logprobs: Vec<Map<String, Value>>,
    /// Where each token's text starts in the completion's text (bytes).
    pub text_offset: Vec<usize>,
}

/// `POST /v1/completions`' body: the fields ossa reads, vLLM's included (sampling, `stop`
/// and `stream` are read by [`super::request::SamplingRequest`] from the same body).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Text, token ids, or a batch of one of either (required: a 400 naming it when
    /// missing). The elements stay JSON values: a list mixes kinds only in ways
    /// `/v1/completions` refuses by name.
    pub prompt: Option<super::request::OneOrList<Value>>,
    pub max_tokens: Option<u64>,
    pub stop_token_ids: Option<Vec<u32>>,
    /// The number of alternatives per token (OpenAI allows up to 5).
    pub logprobs: Option<u64>,
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub include_stop_str_in_output: Option<bool>,
    pub return_token_ids: Option<bool>,
    /// Refused when given: ossa has no fill-in-the-middle.
    pub suffix: Option<Value>,
    /// Refused when true: ask for `return_token_ids`.
    pub echo: Option<bool>,
}
