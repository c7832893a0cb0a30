//! The typed request parsing of `ossa serve` attacked: values of the wrong kind nested deep,
//! numbers too large or negative, strings where lists go, JSON nested past any sense. Each is
//! a 400 in OpenAI's shape whose `param` is the exact path of the field the client got wrong,
//! and the server goes on answering good requests.

mod support;

use serde_json::{Value, json};
use support::or_skip;
use support::serve::{Server, curl_post, curl_post_raw, curl_refused};

/// Three input items, the last one's content given by `content`.
fn responses_input(content: Value) -> Value {
    json!([
        {"role": "user", "content": "first"},
        {"type": "message", "role": "assistant", "content": "second"},
        {"role": "user", "content": content},
    ])
}

fn user() -> Value {
    json!([{"role": "user", "content": "hi"}])
}

#[test]
fn malformed_requests_are_refused_naming_the_exact_field() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let chat = format!("{}/chat/completions", server.base);
    let responses = format!("{}/responses", server.base);
    let completions = format!("{}/completions", server.base);
    let function = |name: &str| json!({"type": "function", "function": {"name": name}});
    let cases = [
        // Wrong kinds, nested deep.
        (
            &responses,
            json!({"input": responses_input(json!([{"type": 7, "text": "x"}]))}),
            "input[2].content[0].type",
        ),
        (
            &responses,
            json!({"input": responses_input(json!([{"type": "input_image", "image_url": "x"}]))}),
            "input[2].content[0].type",
        ),
        (
            &responses,
            json!({"input": responses_input(json!([{"type": "input_text"}, {"type": "input_text", "text": ["x"]}]))}),
            "input[2].content[1].text",
        ),
        (
            &responses,
            json!({"input": [{"type": "reasoning", "summary": "thought"}, {"role": "user", "content": "hi"}]}),
            "input[0].summary",
        ),
        (
            &responses,
            json!({"input": "hi", "tools": [
                {"type": "function", "name": "a"},
                {"type": "function", "name": "b", "parameters": [1, 2]}]}),
            "tools[1].parameters",
        ),
        (
            &chat,
            json!({"messages": user(), "tools": [function("a"),
                {"type": "function", "function": {"name": "b", "parameters": "an object"}}]}),
            "tools[1].function.parameters",
        ),
        (
            &chat,
            json!({"messages": user(), "tool_choice": {"type": "function", "function": {"name": 5}}}),
            "tool_choice.function.name",
        ),
        (
            &chat,
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                {"type": "text", "text": 5}]}]}),
            "messages[0].content[1].text",
        ),
        (
            &chat,
            json!({"messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": "call"}, {"role": "user", "content": "go"}]}),
            "messages[1].tool_calls",
        ),
        (
            &responses,
            json!({"input": "hi", "reasoning": {"effort": 3}}),
            "reasoning.effort",
        ),
        (
            &chat,
            json!({"messages": user(), "stream": true, "stream_options": {"include_usage": "yes"}}),
            "stream_options.include_usage",
        ),
        // Numbers too large, negative, or not whole.
        (
            &chat,
            json!({"messages": user(), "max_tokens": 1e300}),
            "max_tokens",
        ),
        (
            &chat,
            json!({"messages": user(), "max_completion_tokens": 18446744073709551616_f64}),
            "max_completion_tokens",
        ),
        (
            &chat,
            json!({"messages": user(), "max_tokens": -5}),
            "max_tokens",
        ),
        (
            &completions,
            json!({"prompt": "hi", "max_tokens": -1}),
            "max_tokens",
        ),
        (
            &chat,
            json!({"messages": user(), "logprobs": true, "top_logprobs": 4294967296_u64}),
            "top_logprobs",
        ),
        (
            &chat,
            json!({"messages": user(), "temperature": 1e39}),
            "temperature",
        ),
        (&chat, json!({"messages": user(), "seed": 1.5}), "seed"),
        (
            &responses,
            json!({"input": "hi", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            &completions,
            json!({"prompt": "hi", "stop_token_ids": [1, -3]}),
            "stop_token_ids[1]",
        ),
        (&chat, json!({"messages": user(), "n": -1}), "n"),
        // Strings where lists go, objects where strings go.
        (
            &chat,
            json!({"messages": user(), "tools": "get_weather"}),
            "tools",
        ),
        (
            &responses,
            json!({"input": "hi", "include": "message.output_text.logprobs"}),
            "include",
        ),
        (&completions, json!({"prompt": {"text": "hi"}}), "prompt"),
        (&responses, json!({"input": {"role": "user"}}), "input"),
        (
            &responses,
            json!({"input": "hi", "instructions": ["be brief"]}),
            "instructions",
        ),
        // Structured outputs: a schema's name left out is the format's error.
        (
            &responses,
            json!({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}),
            "text.format",
        ),
    ];
    for (url, body, param) in &cases {
        let error = curl_refused(url, body, param);
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(!message.is_empty() && !message.contains("/home"), "{error}");
    }

    // JSON nested past serde_json's depth limit is refused as JSON, not a crash.
    let deep = format!(
        "{{\"input\": {}\"hi\"{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let (status, text) = curl_post_raw(&responses, &deep);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_request_error"), "{text}");

    // Values that look odd but are valid are still accepted: a negative seed, `top_k: -1`,
    // `stop` as one string, a null field.
    let (status, text) = curl_post(
        &chat,
        &json!({"messages": user(), "max_tokens": 4, "seed": -7, "top_k": -1, "stop": "\n",
                "tools": null, "temperature": 0}),
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) = curl_post(
        &responses,
        &json!({"input": responses_input(json!("third")), "max_output_tokens": 4, "store": false}),
    );
    assert_eq!(status, 200, "{text}");
}
