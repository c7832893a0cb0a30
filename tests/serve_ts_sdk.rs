//! `ossa serve` driven by the official `openai` TypeScript SDK (the npm package, pinned in
//! tests/ts/package.json and installed with `npm ci` on first use) against the tiny trained
//! agent: Chat Completions streamed and not, Responses streamed with every item added closed,
//! and a function-calling round trip in both APIs. Skipped without node and npm, except in CI.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::or_skip;
use support::serve::{Server, node_with_openai, run_ts_sdk};
use support::{check_per_scenario, final_text, reasoning_texts, scenarios};

/// The TypeScript client in `mode` on `server`, as [`check_per_scenario`] runs clients.
fn ts_client<'a>(
    sdk: &'a Path,
    server: &'a Server,
    mode: &'a str,
) -> impl FnOnce(&Value) -> Vec<Value> + 'a {
    move |users| serde_json::from_value(run_ts_sdk(sdk, &server.base, mode, users)).expect("a list")
}

#[test]
fn typescript_sdk_chat_gives_every_scenario() {
    let sdk = or_skip!(node_with_openai());
    let server = Server::start(&[]);
    check_per_scenario(ts_client(sdk, &server, "chat"), |scenario| {
        json!({
            "content": final_text(scenario),
            "reasoning": reasoning_texts(scenario).join("\n\n"),
            "finish": "stop",
            "stream": {
                "content": final_text(scenario),
                "reasoning": reasoning_texts(scenario).concat(),
                "finish": "stop",
            },
        })
    });
}

/// Streamed with python offered: the client checks that every `output_item.added` has its
/// `output_item.done` and that the completed response lists the items done; the items are the
/// scenario's messages.
#[test]
fn typescript_sdk_responses_stream_closes_every_item() {
    let sdk = or_skip!(node_with_openai());
    let server = Server::start_storing(&[]);
    check_per_scenario(ts_client(sdk, &server, "responses"), |scenario| {
        let kinds: Vec<&str> = scenario["expected"]
            .as_array()
            .expect("expected")
            .iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| {
                if m["recipient"] == "python" {
                    "code_interpreter_call"
                } else if m["channel"] == "analysis" {
                    "reasoning"
                } else {
                    "message"
                }
            })
            .collect();
        let answer = final_text(scenario);
        json!({
            "text": answer, "output_text": answer, "status": "completed", "kinds": kinds,
            "last": "response.completed",
        })
    });
}

/// A function-calling round trip in both APIs through the SDK's types: a call the model hands
/// over (asked for by `tool_choice`) has JSON arguments, and the client's answer to a call is
/// taken back: the conversation goes on, and the stored response's input lists the call and its
/// output.
#[test]
fn typescript_sdk_function_round_trip() {
    let sdk = or_skip!(node_with_openai());
    let server = Server::start_storing(&[]);
    let user = scenarios()[0]["user"].clone();
    let got = run_ts_sdk(
        sdk,
        &server.base,
        "functions",
        &json!({"user": user, "output": "{\"temperature_c\": 20}"}),
    );
    println!("{got}");
    // The tiny model writes no JSON arguments: a call is then never handed over, and the turn
    // ends at its limit; a call it does hand over was checked (JSON) by the client.
    let chat_first = &got["chat_first"];
    let want_finish = if chat_first["made"] == true {
        "tool_calls"
    } else {
        "length"
    };
    assert_eq!(chat_first["finish"], want_finish, "{got}");
    let want_status = if got["responses_first"]["made"] == true {
        "completed"
    } else {
        "incomplete"
    };
    assert_eq!(got["responses_first"]["status"], want_status, "{got}");
    assert!(
        matches!(
            got["chat_second"]["finish"].as_str(),
            Some("stop" | "length" | "tool_calls")
        ),
        "{got}"
    );
    assert!(
        matches!(
            got["responses_second"]["status"].as_str(),
            Some("completed" | "incomplete")
        ),
        "{got}"
    );
    assert_eq!(
        got["responses_second"]["input_items"],
        json!(["message", "function_call", "function_call_output"]),
        "{got}"
    );
}
