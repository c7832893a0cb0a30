//! The wire format of the OpenAI-compatible APIs as typed serde values, one module per API:
//! what `ossa serve` reads (request bodies: `ChatCompletionRequest`, `CreateResponseRequest`,
//! `CompletionRequest`, and in [`request`] what they share) and what it answers (response
//! bodies and stream events). Handlers build these types; nothing answers with hand-built
//! JSON, so a misspelt field or a missing one is a compile error rather than a client's parse
//! error.
//!
//! Every answer type also deserializes, strictly (`deny_unknown_fields`): the tests parse each
//! body and event the server sends back into these types, so a field the server adds outside
//! them fails a test. Request types are lenient instead (fields ossa does not read are
//! ignored, as OpenAI-compatible servers do). What the server echoes from the request as the
//! client sent it (`tools`, `tool_choice`, `metadata`, `text`) stays a JSON value.

pub mod chat;
pub mod completions;
pub mod models;
pub mod request;
pub mod responses;

/// Seconds since the Unix epoch, as the APIs' `created` fields count time.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fields that always hold one string (`"object": "response"`), one type each: serializes as
/// that string, and deserializes only from it.
macro_rules! constant {
    ($($(#[$meta:meta])* $name:ident = $value:literal;)+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            pub const VALUE: &'static str = $value;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                if text == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::invalid_value(
                        serde::de::Unexpected::Str(&text),
                        &$value,
                    ))
                }
            }
        }
    )+};
}
pub(crate) use constant;

pub use super::params::{TokenLogprob, TopLogprob};

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::chat::{
        AssistantRole, ChatCompletionChunk, ChatCompletionChunkTag, ChatMessage, ChunkChoice,
        Delta, FunctionCall, FunctionType, PromptTokensDetails, ServerToolCall, ToolCall, Usage,
    };
    use super::completions::{Completion, CompletionChoice, StopReason, TextCompletionTag};
    use super::models::{ErrorBody, ErrorDetail};

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 1 },
        }
    }

    fn tool_call(index: Option<usize>) -> ToolCall {
        ToolCall {
            index,
            id: "call_1".into(),
            kind: FunctionType,
            function: FunctionCall {
                name: "f".into(),
                arguments: "{}".into(),
            },
        }
    }

    fn server_tool_call() -> ServerToolCall {
        ServerToolCall {
            index: 0,
            id: "ci_1".into(),
            kind: "code_interpreter".into(),
            recipient: "python".into(),
            input: "1+1".into(),
            output: "2".into(),
        }
    }

    fn completion_choice(tokens: Option<Vec<u32>>) -> CompletionChoice {
        CompletionChoice {
            index: 0,
            text: "hi".into(),
            logprobs: None,
            finish_reason: None,
            stop_reason: None,
            prompt_token_ids: tokens.clone(),
            token_ids: tokens,
        }
    }

    /// `value` is written as `want` to the letter, and `want` reads back into the same value.
    fn written<T: Serialize + DeserializeOwned>(name: &str, value: T, want: &str) {
        let text = |value: &T| serde_json::to_string(value).expect("serializes");
        assert_eq!(text(&value), want, "{name}");
        let read: T = serde_json::from_str(want).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(text(&read), want, "{name}, read back");
    }

    /// Each answer type with its optional fields all empty and all set, written to the letter:
    /// which fields are left out when empty and which are sent as `null` is part of the API.
    #[test]
    fn optional_fields_are_left_out_or_null_to_the_letter() {
        written(
            "message, nothing optional",
            ChatMessage {
                role: AssistantRole,
                content: None,
                reasoning_content: None,
                reasoning: None,
                annotations: vec![],
                tool_calls: vec![],
                server_tool_calls: vec![],
            },
            r#"{"role":"assistant","content":null}"#,
        );
        written(
            "message, everything",
            ChatMessage {
                role: AssistantRole,
                content: Some("a".into()),
                reasoning_content: Some("t".into()),
                reasoning: Some("t".into()),
                annotations: vec![],
                tool_calls: vec![tool_call(None)],
                server_tool_calls: vec![server_tool_call()],
            },
            concat!(
                r#"{"role":"assistant","content":"a","reasoning_content":"t","reasoning":"t","#,
                r#""tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}],"#,
                r#""server_tool_calls":[{"index":0,"id":"ci_1","type":"code_interpreter","recipient":"python","input":"1+1","output":"2"}]}"#
            ),
        );
        written("delta, empty", Delta::default(), "{}");
        written(
            "delta, everything",
            Delta {
                role: Some(AssistantRole),
                content: Some("a".into()),
                reasoning_content: Some("t".into()),
                reasoning: Some("u".into()),
                annotations: vec![],
                tool_calls: vec![tool_call(Some(2))],
                server_tool_calls: vec![],
            },
            concat!(
                r#"{"role":"assistant","content":"a","reasoning_content":"t","reasoning":"u","#,
                r#""tool_calls":[{"index":2,"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#
            ),
        );
        written(
            "chunk, no usage",
            ChatCompletionChunk {
                id: "c".into(),
                object: ChatCompletionChunkTag,
                created: 7,
                model: "m".into(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason: None,
                }],
                usage: None,
            },
            concat!(
                r#"{"id":"c","object":"chat.completion.chunk","created":7,"model":"m","#,
                r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}"#
            ),
        );
        written(
            "chunk, usage",
            ChatCompletionChunk {
                id: "c".into(),
                object: ChatCompletionChunkTag,
                created: 7,
                model: "m".into(),
                choices: vec![],
                usage: Some(usage()),
            },
            concat!(
                r#"{"id":"c","object":"chat.completion.chunk","created":7,"model":"m","choices":[],"#,
                r#""usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#
            ),
        );
        written(
            "completion, nothing optional",
            Completion {
                id: "t".into(),
                object: TextCompletionTag,
                created: 7,
                model: "m".into(),
                choices: vec![completion_choice(None)],
                usage: None,
            },
            concat!(
                r#"{"id":"t","object":"text_completion","created":7,"model":"m","#,
                r#""choices":[{"index":0,"text":"hi","logprobs":null,"finish_reason":null,"stop_reason":null}]}"#
            ),
        );
        written(
            "completion, everything",
            Completion {
                id: "t".into(),
                object: TextCompletionTag,
                created: 7,
                model: "m".into(),
                choices: vec![CompletionChoice {
                    finish_reason: Some("stop".into()),
                    stop_reason: Some(StopReason::Token(200002)),
                    ..completion_choice(Some(vec![1, 2]))
                }],
                usage: Some(usage()),
            },
            concat!(
                r#"{"id":"t","object":"text_completion","created":7,"model":"m","#,
                r#""choices":[{"index":0,"text":"hi","logprobs":null,"finish_reason":"stop","stop_reason":200002,"prompt_token_ids":[1,2],"token_ids":[1,2]}],"#,
                r#""usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#
            ),
        );
        written(
            "error, no status",
            ErrorBody {
                status: None,
                error: ErrorDetail {
                    message: "no".into(),
                    kind: "invalid_request_error".into(),
                    param: None,
                    code: None,
                },
            },
            r#"{"error":{"message":"no","type":"invalid_request_error","param":null,"code":null}}"#,
        );
        written(
            "error, status",
            ErrorBody {
                status: Some("loading".into()),
                error: ErrorDetail {
                    message: "no".into(),
                    kind: "server_error".into(),
                    param: Some("p".into()),
                    code: Some("c".into()),
                },
            },
            r#"{"status":"loading","error":{"message":"no","type":"server_error","param":"p","code":"c"}}"#,
        );
    }
}
