//! Client function tools through both APIs, over real HTTP on loopback, with a backend that
//! replays scripted model output and records every prompt it is given. A call to a client
//! function ends the response (`tool_calls` / a `function_call` item) with the reasoning; when
//! the client sends the call, its reasoning and the function's output back, the next prompt
//! must extend the previous prompt plus exactly the tokens the model sampled: nothing lost or
//! re-rendered differently (the engine's prefix cache then reuses it all).

mod support;

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use ossa::agent::AgentConfig;
use ossa::agent::harmony::{HarmonyEncoding, Message};
use ossa::serve::store::StoreOptions;
use ossa_test_support::scripted::{
    ScriptedBackend, analysis, call, encoding, final_answer, sampled,
};
use serde_json::{Value, json};
use support::in_process::InProcessServer;
use support::serve::{post_ok, post_status};

/// The scripted model served in-process. An empty reply writes reasoning forever, a token
/// every few milliseconds, until the request is cancelled.
struct Fixture {
    server: InProcessServer,
    encoding: HarmonyEncoding,
    backend: Arc<ScriptedBackend>,
}

impl Fixture {
    fn start() -> Fixture {
        let backend = Arc::new(ScriptedBackend::new(8192).endless_when_empty());
        Fixture {
            server: InProcessServer::start(
                backend.clone(),
                "scripted",
                StoreOptions::DEFAULT_MAX_BYTES,
            ),
            encoding: encoding().clone(),
            backend,
        }
    }

    fn script(&self, messages: &[Message]) -> Vec<u32> {
        let tokens = sampled(&self.encoding, messages);
        self.backend.script.push(tokens.clone());
        tokens
    }

    fn post(&self, path: &str, body: Value) -> String {
        let _enter = self.server.runtime.enter();
        post_ok(&format!("{}{path}", self.server.base), &body)
    }

    fn post_json(&self, path: &str, body: Value) -> Value {
        serde_json::from_str(&self.post(path, body)).expect("JSON")
    }

    fn prompts(&self) -> Vec<Vec<u32>> {
        self.backend.script.prompts()
    }

    fn text(&self, tokens: &[u32]) -> String {
        self.encoding.tokenizer().decode(tokens).expect("utf-8")
    }
}

fn reasoning() -> Message {
    analysis("Need the weather.")
}

fn weather_call() -> Message {
    call("functions.get_weather", r#"{"city":"Paris"}"#)
}

fn answer() -> Message {
    final_answer("It is 20 degrees in Paris.")
}

fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    })
}

const USER: &str = "What is the weather in Paris?";

#[test]
fn chat_completions_return_function_calls_and_take_reasoning_back() {
    let fixture = Fixture::start();
    let first_reply = fixture.script(&[reasoning(), weather_call()]);
    let tools = json!([{"type": "function", "function": weather_tool()}]);
    let response = fixture.post_json(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}], "tools": tools}),
    );
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{response}");
    let message = &choice["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["reasoning_content"], "Need the weather.");
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    let call_id = call["id"].as_str().expect("id").to_string();

    let first_prompt = fixture.prompts()[0].clone();
    let text = fixture.text(&first_prompt);
    assert!(
        text.contains("Calls to these tools must go to the commentary channel: 'functions'."),
        "{text}"
    );
    assert!(text.contains("<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n// Current weather in a city.\ntype get_weather = (_: {\ncity: string,\n}) => any;\n\n} // namespace functions<|end|>"), "{text}");

    // The client answers the call, sending the reasoning back as it came.
    let second_reply = fixture.script(&[answer()]);
    let history = json!([
        {"role": "user", "content": USER},
        {"role": "assistant", "content": null, "reasoning_content": "Need the weather.",
         "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "{\"celsius\": 20}"},
    ]);
    let response = fixture.post_json(
        "/chat/completions",
        json!({"messages": history, "tools": tools}),
    );
    assert_eq!(
        response["choices"][0]["finish_reason"], "stop",
        "{response}"
    );
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "It is 20 degrees in Paris."
    );
    let second_prompt = fixture.prompts()[1].clone();
    let mut continued = first_prompt.clone();
    continued.extend(&first_reply);
    assert!(
        second_prompt.starts_with(&continued),
        "the second prompt must extend the first and the sampled call:\n{}\n---\n{}",
        fixture.text(&continued),
        fixture.text(&second_prompt)
    );
    assert_eq!(
        fixture.text(&second_prompt[continued.len()..]),
        "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{\"celsius\": 20}<|end|><|start|>assistant"
    );
    drop(second_reply);

    // Streamed: the call arrives as tool_calls deltas.
    fixture.script(&[reasoning(), weather_call()]);
    let body = fixture.post(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}], "tools": tools, "stream": true}),
    );
    let mut name = String::new();
    let mut arguments = String::new();
    let mut reasoning_text = String::new();
    let mut finish = Value::Null;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).expect("JSON");
        let delta = &chunk["choices"][0]["delta"];
        reasoning_text.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(call["index"], 0);
            name.push_str(call["function"]["name"].as_str().unwrap_or_default());
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
        if !chunk["choices"][0]["finish_reason"].is_null() {
            finish = chunk["choices"][0]["finish_reason"].clone();
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    assert_eq!(reasoning_text, "Need the weather.");
    assert_eq!(finish, "tool_calls");
}

#[test]
fn responses_return_function_call_items_and_continue_from_outputs() {
    let fixture = Fixture::start();
    let first_reply = fixture.script(&[reasoning(), weather_call()]);
    let mut tool = weather_tool();
    tool["type"] = json!("function");
    let tools = json!([tool]);
    let response = fixture.post_json("/responses", json!({"input": USER, "tools": tools}));
    assert_eq!(response["status"], "completed", "{response}");
    let output = response["output"].as_array().expect("output");
    assert_eq!(output.len(), 2, "{response}");
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[0]["content"][0]["text"], "Need the weather.");
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["name"], "get_weather");
    assert_eq!(output[1]["arguments"], r#"{"city":"Paris"}"#);
    let call_id = output[1]["call_id"].as_str().expect("call_id").to_string();
    let first_prompt = fixture.prompts()[0].clone();
    let mut continued = first_prompt.clone();
    continued.extend(&first_reply);
    let tool_message = "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{\"celsius\": 20}<|end|><|start|>assistant";

    // Continued from the stored response by its id: only the output goes back.
    fixture.script(&[answer()]);
    let next = fixture.post_json(
        "/responses",
        json!({
            "previous_response_id": response["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": call_id, "output": "{\"celsius\": 20}"}],
        }),
    );
    assert_eq!(next["output"][0]["type"], "message", "{next}");
    assert_eq!(
        next["output"][0]["content"][0]["text"],
        "It is 20 degrees in Paris."
    );
    let prompt = fixture.prompts()[1].clone();
    assert!(prompt.starts_with(&continued), "{}", fixture.text(&prompt));
    assert_eq!(fixture.text(&prompt[continued.len()..]), tool_message);

    // Stateless: the client sends every item back itself.
    fixture.script(&[answer()]);
    let mut items = vec![json!({"type": "message", "role": "user", "content": USER})];
    items.extend(output.iter().cloned());
    items.push(
        json!({"type": "function_call_output", "call_id": call_id, "output": "{\"celsius\": 20}"}),
    );
    let stateless = fixture.post_json(
        "/responses",
        json!({"input": items, "tools": tools, "store": false}),
    );
    assert_eq!(
        stateless["output"][0]["content"][0]["text"],
        "It is 20 degrees in Paris."
    );
    assert_eq!(fixture.prompts()[2], prompt);

    // Streamed: the call's arguments come as deltas, and the response completes with it.
    fixture.script(&[reasoning(), weather_call()]);
    let body = fixture.post(
        "/responses",
        json!({"input": USER, "tools": tools, "stream": true}),
    );
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON"))
        .collect();
    let arguments: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"][1]["type"], "function_call");
}

#[test]
fn malformed_model_output_is_not_a_server_error() {
    let fixture = Fixture::start();
    // Garbage: special tokens out of order, then a stop.
    let tokens = fixture.encoding.formatting_tokens();
    let garbage = vec![
        tokens.message,
        tokens.channel,
        tokens.end,
        12345,
        tokens.return_,
    ];
    fixture.backend.script.push(garbage.clone());
    let response = fixture.post_json(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}]}),
    );
    assert_eq!(response["object"], "chat.completion", "{response}");
    fixture.backend.script.push(garbage);
    let response = fixture.post_json("/responses", json!({"input": USER}));
    assert_eq!(response["object"], "response", "{response}");
}

#[test]
fn request_settings_shape_the_prompt() {
    let fixture = Fixture::start();
    fixture.script(&[answer()]);
    fixture.post_json(
        "/chat/completions",
        json!({"messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": USER},
        ], "reasoning_effort": "high"}),
    );
    fixture.script(&[answer()]);
    fixture.post_json(
        "/responses",
        json!({"input": USER, "instructions": "Answer in French.", "reasoning": {"effort": "medium"}}),
    );
    fixture.script(&[answer()]);
    fixture.post_json(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}]}),
    );
    let prompts = fixture.prompts();
    let texts: Vec<String> = prompts.iter().map(|p| fixture.text(p)).collect();
    let developer = "<|start|>developer<|message|># Instructions\n\nAnswer in French.<|end|>";
    assert!(
        texts[0].contains("Reasoning: high") && texts[0].contains(developer),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("Reasoning: medium") && texts[1].contains(developer),
        "{}",
        texts[1]
    );
    // Neither instructions nor functions: system and user only, as `ossa run` renders.
    assert!(
        texts[2].contains("Reasoning: low") && !texts[2].contains("<|start|>developer"),
        "{}",
        texts[2]
    );
    assert!(texts[2].ends_with(&format!(
        "<|start|>user<|message|>{USER}<|end|><|start|>assistant"
    )));
}

#[test]
fn a_client_that_goes_away_cancels_its_generation() {
    let fixture = Fixture::start();
    fixture.backend.script.push(Vec::new());
    let _enter = fixture.server.runtime.enter();
    let response = ureq::post(&format!("{}/chat/completions", fixture.server.base))
        .send_json(json!({"messages": [{"role": "user", "content": USER}], "stream": true}))
        .expect("stream starts");
    let mut lines = BufReader::new(response.into_reader()).lines();
    // Read until the reasoning is streaming, then hang up.
    let mut seen = 0;
    for line in lines.by_ref() {
        if line.expect("line").contains("thinking") {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    assert_eq!(fixture.backend.cancelled(), 0);
    drop(lines);
    // The generation stops: the server notices the closed connection on its next write.
    let mut waited = 0;
    while fixture.backend.cancelled() == 0 {
        assert!(waited < 60_000, "the generation was not cancelled");
        std::thread::sleep(Duration::from_millis(20));
        waited += 20;
    }
    // And the engine is free again for the next request.
    fixture.script(&[answer()]);
    let response = fixture.post_json(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}]}),
    );
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "It is 20 degrees in Paris."
    );
}

#[test]
fn a_waiting_request_is_told_its_place_and_runs_after() {
    let fixture = Fixture::start();
    fixture.backend.script.push(Vec::new());
    fixture.script(&[answer()]);
    let _enter = fixture.server.runtime.enter();
    let start = || {
        ureq::post(&format!("{}/chat/completions", fixture.server.base))
            .send_json(json!({"messages": [{"role": "user", "content": USER}], "stream": true}))
            .expect("stream starts")
    };
    let mut first = BufReader::new(start().into_reader()).lines();
    for line in first.by_ref() {
        if line.expect("line").contains("thinking") {
            break;
        }
    }
    let mut second = BufReader::new(start().into_reader()).lines();
    let mut note = None;
    for line in second.by_ref() {
        let line = line.expect("line");
        if line.starts_with(':') {
            note = Some(line);
            break;
        }
    }
    assert_eq!(note.as_deref(), Some(": queued: 1 generation(s) ahead"));
    // The first client leaves; the second gets the engine and its answer.
    drop(first);
    let mut content = String::new();
    for line in second {
        let line = line.expect("line");
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).expect("JSON");
        content.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    assert_eq!(content, "It is 20 degrees in Paris.");
    assert_eq!(fixture.backend.cancelled(), 1);
}

impl Fixture {
    /// Scripts a reply given as harmony text (special tokens allowed).
    fn script_text(&self, text: &str) {
        let tokens = self
            .encoding
            .tokenizer()
            .encode(text, true)
            .expect("tokens");
        self.backend.script.push(tokens);
    }

    /// (HTTP status, body) of a POST.
    fn post_status(&self, path: &str, body: Value) -> (u16, Value) {
        let _enter = self.server.runtime.enter();
        post_status(&format!("{}{path}", self.server.base), &body)
    }
}

/// A named function in `tool_choice` writes the call's header for the model: the prompt ends
/// with it, and the model's tokens are only the arguments, through both APIs.
#[test]
fn a_named_tool_choice_writes_the_call_header_for_the_model() {
    let fixture = Fixture::start();
    let forced = "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>";
    let other = json!({"name": "get_time", "description": "The time.", "parameters": {"type": "object", "properties": {}}});

    fixture.script_text(r#"{"city":"Oslo"}<|call|>"#);
    let tools = json!([{"type": "function", "function": other}, {"type": "function", "function": weather_tool()}]);
    let response = fixture.post_json(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}], "tools": tools,
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    );
    let prompt = fixture.text(&fixture.prompts()[0]);
    assert!(prompt.ends_with(forced), "{prompt}");
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{response}");
    let call = &choice["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city":"Oslo"}"#);

    // The Responses API's shape of the same choice. Arguments that are not JSON are not handed
    // over: the model reads why, the call's header is written for it again, and the call it
    // then makes is the one the client gets.
    fixture.script_text(r#"{"city": Oslo<|call|>"#);
    fixture.script_text(r#"{"city":"Oslo"}<|call|>"#);
    let mut tool = weather_tool();
    tool["type"] = json!("function");
    let mut other_tool = other.clone();
    other_tool["type"] = json!("function");
    let response = fixture.post_json(
        "/responses",
        json!({"input": USER, "tools": [other_tool, tool], "store": false,
               "tool_choice": {"type": "function", "name": "get_weather"}}),
    );
    let prompt = fixture.text(&fixture.prompts()[1]);
    assert!(prompt.ends_with(forced), "{prompt}");
    let retried = fixture.text(&fixture.prompts()[2]);
    assert!(retried.ends_with(forced), "forced again: {retried}");
    assert!(
        retried.contains("<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>[ERROR] The call was not made: its arguments are not valid JSON"),
        "{retried}"
    );
    assert_eq!(response["status"], "completed", "{response}");
    let output = response["output"].as_array().expect("output");
    assert_eq!(output.len(), 1, "only the call handed over: {response}");
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["name"], "get_weather");
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(output[0]["arguments"], r#"{"city":"Oslo"}"#);
}

/// A model that keeps writing arguments that are not JSON for a named function: each attempt
/// is answered to the model, and the turn ends at the tool-call limit without handing the
/// client anything it could not parse.
#[test]
fn arguments_that_never_parse_end_at_the_tool_call_limit() {
    let fixture = Fixture::start();
    let tools = json!([{"type": "function", "function": weather_tool()}]);
    for _ in 0..AgentConfig::default().max_tool_calls + 1 {
        fixture.script_text(r#"{"city": Oslo<|call|>"#);
    }
    let response = fixture.post_json(
        "/chat/completions",
        json!({"messages": [{"role": "user", "content": USER}], "tools": tools,
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    );
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{response}");
    assert!(choice["message"].get("tool_calls").is_none(), "{response}");
}

/// A client function call the model ends with `<|return|>` instead of `<|call|>` is not a
/// finished call: the client never sees it (in either API, streamed or not), the model reads
/// an error, and the turn goes on to its answer.
#[test]
fn a_function_call_not_ended_with_call_is_answered_to_the_model() {
    let fixture = Fixture::start();
    let unfinished = r#"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|return|>"#;
    let answer = "<|channel|>final<|message|>It is 20 degrees in Paris.<|return|>";
    let tools = json!([{"type": "function", "function": weather_tool()}]);
    let mut response_tool = weather_tool();
    response_tool["type"] = json!("function");
    let requests = [
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": USER}], "tools": tools}),
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": USER}], "tools": tools, "stream": true}),
        ),
        (
            "/responses",
            json!({"input": USER, "tools": [response_tool], "store": false}),
        ),
        (
            "/responses",
            json!({"input": USER, "tools": [response_tool], "store": false, "stream": true}),
        ),
    ];
    for (round, (path, body)) in requests.into_iter().enumerate() {
        fixture.script_text(unfinished);
        fixture.script_text(answer);
        let text = fixture.post(path, body.clone());
        let prompt = fixture.text(&fixture.prompts()[2 * round + 1]);
        assert!(
            prompt.contains("[ERROR] The call was not made: its message did not end with <|call|>"),
            "{prompt}"
        );
        // (Responses echo the request's tools: the call is looked for as an item.)
        let shown = [
            "\"tool_calls\"",
            "\"function_call\"",
            "\"type\":\"function_call",
        ];
        assert!(
            !shown.iter().any(|s| text.contains(s)),
            "{path} {body}: {text}"
        );
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("JSON"))
            .collect();
        let answer = match (path, body["stream"] == true) {
            ("/chat/completions", false) => response_text(&text, "/choices/0/message/content"),
            ("/chat/completions", true) => events
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                .collect(),
            (_, false) => response_text(&text, "/output/0/content/0/text"),
            (_, true) => {
                let added = events
                    .iter()
                    .filter(|e| e["type"] == "response.output_item.added");
                let done = events
                    .iter()
                    .filter(|e| e["type"] == "response.output_item.done");
                assert_eq!(added.count(), done.count(), "{text}");
                let last = events.last().expect("events");
                assert_eq!(last["type"], "response.completed", "{text}");
                response_text(&last["response"].to_string(), "/output/0/content/0/text")
            }
        };
        assert_eq!(
            answer, "It is 20 degrees in Paris.",
            "{path} {body}: {text}"
        );
    }
}

/// The string at `pointer` in the JSON `text`.
fn response_text(text: &str, pointer: &str) -> String {
    let value: Value = serde_json::from_str(text).expect("JSON");
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text at {pointer}: {text}"))
        .to_string()
}

/// `required`: the model reasons freely, but the answer it starts instead of a call is cut off
/// (none of it reaches the client) and it is sampled again from `to=functions.`.
#[test]
fn required_tool_choice_turns_an_answer_into_a_call() {
    let fixture = Fixture::start();
    let tools = json!([{"type": "function", "function": weather_tool()}]);
    for stream in [false, true] {
        let first = fixture.prompts().len();
        fixture.script(&[reasoning(), answer()]);
        fixture.script_text(r#"get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>"#);
        let body = fixture.post(
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": USER}], "tools": tools,
                   "tool_choice": "required", "stream": stream}),
        );
        let prompts = fixture.prompts();
        assert_eq!(prompts.len(), first + 2);
        let second = fixture.text(&prompts[first + 1]);
        assert!(
            second.ends_with(
                "<|start|>assistant<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions."
            ),
            "{second}"
        );
        assert!(
            !body.contains("20 degrees"),
            "the cut answer leaked: {body}"
        );
        if stream {
            assert!(body.contains(r#""finish_reason":"tool_calls""#), "{body}");
            assert!(body.contains(r#""name":"get_weather""#), "{body}");
            assert!(
                body.contains(r#"{"reasoning_content":" weather","reasoning":" weather"}"#),
                "{body}"
            );
        } else {
            let response: Value = serde_json::from_str(&body).expect("JSON");
            let message = &response["choices"][0]["message"];
            assert_eq!(response["choices"][0]["finish_reason"], "tool_calls");
            assert_eq!(message["content"], Value::Null, "{response}");
            assert_eq!(message["reasoning_content"], "Need the weather.");
            assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
            assert_eq!(
                message["tool_calls"][0]["function"]["arguments"],
                r#"{"city":"Paris"}"#
            );
        }
    }

    // A model that calls a function by itself is not interrupted.
    fixture.script(&[reasoning(), weather_call()]);
    let mut tool = weather_tool();
    tool["type"] = json!("function");
    let response = fixture.post_json(
        "/responses",
        json!({"input": USER, "tools": [tool], "tool_choice": "required", "store": false}),
    );
    let kinds: Vec<&str> = response["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter_map(|i| i["type"].as_str())
        .collect();
    assert_eq!(kinds, ["reasoning", "function_call"], "{response}");
    assert_eq!(fixture.backend.script.replies_left(), 0);
}

#[test]
fn bad_tool_choices_are_refused_naming_the_field() {
    let fixture = Fixture::start();
    let chat_tools = json!([{"type": "function", "function": weather_tool()}]);
    let mut tool = weather_tool();
    tool["type"] = json!("function");
    let cases = [
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": USER}], "tools": chat_tools,
                   "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
            "get_time",
        ),
        (
            "/responses",
            json!({"input": USER, "tools": [tool], "tool_choice": {"type": "function", "name": "nope"}}),
            "nope",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": USER}], "tool_choice": "required"}),
            "required",
        ),
        (
            "/responses",
            json!({"input": USER, "tool_choice": "sometimes"}),
            "sometimes",
        ),
    ];
    for (path, body, named) in cases {
        let (status, error) = fixture.post_status(path, body);
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["param"], "tool_choice", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(named), "{message}");
    }
    assert!(fixture.prompts().is_empty(), "nothing was generated");
}

/// Hosted-tool choices (as the OpenAI SDKs send them) are accepted and leave the decision to
/// the model: built-in calls are never forced. The prompt is the plain one.
#[test]
fn hosted_tool_choices_are_accepted() {
    let fixture = Fixture::start();
    for choice in [
        json!({"type": "web_search_preview"}),
        json!({"type": "code_interpreter"}),
        json!({"type": "allowed_tools", "mode": "auto", "tools": []}),
    ] {
        fixture.script(&[answer()]);
        let response =
            fixture.post_json("/responses", json!({"input": USER, "tool_choice": choice}));
        assert_eq!(response["status"], "completed", "{response}");
        assert_eq!(response["tool_choice"], choice, "echoed as sent");
        let prompt = fixture.text(fixture.prompts().last().expect("a prompt"));
        assert!(
            prompt.ends_with("<|start|>assistant"),
            "nothing forced: {prompt}"
        );
    }
}
