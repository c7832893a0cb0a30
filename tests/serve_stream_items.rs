//! Every output item a Responses stream opens is closed, for each combination of tools a
//! request can offer (none, functions only, web search only, python): the real binary drives a
//! scripted model (`--backend openai-completions`) that calls `python`, then a recipient nobody
//! declared (`code`), then writes a `python` message it does not end with `<|call|>` before
//! answering. Each `response.output_item.added` must have its `response.output_item.done` with a
//! final status, `response.completed` must list no item `in_progress`, a call the request did not
//! offer must reach the model as an error tool message and never the client as an item, and an
//! offered python call that was not run must show as `incomplete` with a note as its logs.

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::scripted::{
    MODEL, ScriptedServer, analysis, call, final_answer, python_call, sampled,
};
use support::serve::{Server, post_ok as post, response_events as events};

/// The model's three replies: a python call, a call to `code` (a recipient nobody declared),
/// then a python message ended with `<|end|>` (so not a call) followed by the answer.
fn script_replies(model: &ScriptedServer) {
    model.script(&[analysis("I will compute it."), python_call("print(6 * 7)")]);
    model.script(&[
        analysis("Maybe a code tool."),
        call("code", r#"{"source": "6 * 7"}"#),
    ]);
    let encoding = &model.encoding;
    let mut tokens = sampled(
        encoding,
        &[analysis("Now I answer."), python_call("print(0)")],
    );
    let end = encoding.formatting_tokens().end;
    *tokens.last_mut().expect("tokens") = end;
    let mut answer = encoding
        .render(&final_answer("The answer is 42."), None)
        .expect("renders");
    *answer.last_mut().expect("tokens") = encoding.formatting_tokens().return_;
    tokens.extend(answer);
    model.script.push(tokens);
}

fn start() -> (ScriptedServer, Server) {
    let model = ScriptedServer::start();
    let server = model.serve_with_search(&["--python", "--browser"]);
    (model, server)
}

/// Each item as (type, status).
fn shape(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap_or("?").to_string(),
                i["status"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Checks a stream's items open and close in pairs; returns the finished response.
fn check_stream(name: &str, body: &str) -> Value {
    let events = events(body);
    let mut added: BTreeMap<u64, Value> = BTreeMap::new();
    let mut done: BTreeMap<u64, Value> = BTreeMap::new();
    for event in &events {
        let index = event["output_index"].as_u64();
        match event["type"].as_str() {
            Some("response.output_item.added") => {
                let index = index.expect("output_index");
                assert!(!added.contains_key(&index), "{name}: added twice: {event}");
                assert_eq!(event["item"]["status"], "in_progress", "{name}: {event}");
                added.insert(index, event["item"].clone());
            }
            Some("response.output_item.done") => {
                let index = index.expect("output_index");
                assert!(
                    added.contains_key(&index),
                    "{name}: done before added: {event}"
                );
                assert!(!done.contains_key(&index), "{name}: done twice: {event}");
                assert_eq!(event["item"]["id"], added[&index]["id"], "{name}: {event}");
                let status = event["item"]["status"].as_str().unwrap_or_default();
                assert!(
                    ["completed", "incomplete", "failed"].contains(&status),
                    "{name}: a done item's status is final: {event}"
                );
                done.insert(index, event["item"].clone());
            }
            Some(kind) if kind.contains(".delta") => {
                let index = index.expect("output_index");
                assert!(
                    added.contains_key(&index) && !done.contains_key(&index),
                    "{name}: a delta for an item that is not open: {event}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        added.keys().collect::<Vec<_>>(),
        done.keys().collect::<Vec<_>>(),
        "{name}: every added item is done:\n{body}"
    );
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.completed", "{name}: {last}");
    let response = last["response"].clone();
    let output = response["output"].as_array().expect("output").clone();
    assert_eq!(output, done.into_values().collect::<Vec<_>>(), "{name}");
    response
}

#[test]
fn responses_close_every_item_for_each_tool_combination() {
    let (model, server) = start();
    let url = format!("{}/responses", server.base);
    let weather = json!({"type": "function", "name": "get_weather",
                         "description": "The weather in a city.",
                         "parameters": {"type": "object",
                                        "properties": {"city": {"type": "string"}},
                                        "required": ["city"]}});
    let combinations = [
        ("none", json!([])),
        ("functions", json!([weather])),
        ("web search", json!([{"type": "web_search"}])),
        (
            "python",
            json!([{"type": "code_interpreter", "container": {"type": "auto"}}]),
        ),
    ];
    for (name, tools) in combinations {
        let offers_python = name == "python";
        let want = if offers_python {
            pairs(&[
                ("reasoning", "completed"),
                ("code_interpreter_call", "completed"),
                ("reasoning", "completed"),
                ("reasoning", "completed"),
                ("code_interpreter_call", "incomplete"),
                ("message", "completed"),
            ])
        } else {
            pairs(&[
                ("reasoning", "completed"),
                ("reasoning", "completed"),
                ("reasoning", "completed"),
                ("message", "completed"),
            ])
        };
        for stream in [true, false] {
            let case = format!("{name} (stream: {stream})");
            let first_prompt = model.prompt_texts().len();
            script_replies(&model);
            let body = json!({"model": MODEL, "input": "What is 6 times 7?", "tools": tools,
                              "stream": stream, "store": false});
            let text = post(&url, &body);
            let response = if stream {
                check_stream(&case, &text)
            } else {
                serde_json::from_str(&text).expect("JSON")
            };
            assert_eq!(response["status"], "completed", "{case}: {response}");
            let output = response["output"].as_array().expect("output");
            assert_eq!(shape(output), want, "{case}: {response}");
            assert_eq!(
                output.last().expect("items")["content"][0]["text"],
                "The answer is 42.",
                "{case}"
            );
            if offers_python {
                assert_eq!(
                    output[1]["outputs"],
                    json!([{"type": "logs", "logs": "42\n"}]),
                    "{case}"
                );
                assert_eq!(output[4]["code"], "print(0)", "{case}");
                let logs = output[4]["outputs"][0]["logs"].as_str().unwrap_or_default();
                assert!(logs.contains("not run"), "{case}: {}", output[4]);
            }

            // The model read an answer to each call: python's output, or an error naming the
            // tool that is not there.
            let prompts = model.prompt_texts();
            assert_eq!(prompts.len(), first_prompt + 3, "{case}: three generations");
            let after_python = &prompts[first_prompt + 1];
            let after_code = &prompts[first_prompt + 2];
            if offers_python {
                assert!(
                    after_python.contains("<|start|>python to=assistant"),
                    "{case}"
                );
                assert!(after_python.contains("42\n"), "{case}: {after_python}");
            } else {
                assert!(
                    after_python.contains("Error: there is no tool `python`"),
                    "{case}: {after_python}"
                );
            }
            assert!(
                after_code.contains("Error: there is no tool `code`"),
                "{case}: {after_code}"
            );
            assert_eq!(model.script.replies_left(), 0, "{case}");
        }
    }
}
