//! `ossa serve`'s Chat Completions with real clients (curl, the official `openai` Python
//! package) against the tiny trained agent: every scenario's final answer, reasoning and
//! server-side python call (code and output) come through, streaming and not, exactly as
//! OpenAI's implementation produced them.

mod support;

use serde_json::{Value, json};
use support::or_skip;
use support::serve::{
    Server, check_python_sdk_per_scenario, curl, curl_get, curl_missing, curl_post, curl_post_raw,
    curl_refused, sse_data,
};
use support::{
    check_all, check_every_scenario, final_text, python_calls, reasoning_texts, scenarios,
};

fn chat_body(user: &str, stream: bool) -> Value {
    json!({
        "model": "whatever-the-client-calls-it",
        "messages": [{"role": "user", "content": user}],
        "temperature": 0,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

/// Checks one non-streamed answer against a scenario; a failure message when it differs.
fn check_message(name: &str, scenario: &Value, response: &Value) -> Option<String> {
    let choice = &response["choices"][0];
    let message = &choice["message"];
    let want_calls = python_calls(scenario);
    let got_calls: Vec<(String, String)> = message["server_tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    assert_eq!(c["type"], "code_interpreter", "{name}: {c}");
                    (
                        c["input"].as_str().unwrap_or_default().to_string(),
                        c["output"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let problems = [
        (message["content"] != json!(final_text(scenario))).then_some("content"),
        (message["reasoning_content"] != json!(reasoning_texts(scenario).join("\n\n")))
            .then_some("reasoning_content"),
        (message["reasoning"] != message["reasoning_content"]).then_some("reasoning"),
        (got_calls != want_calls).then_some("server_tool_calls"),
        (choice["finish_reason"] != "stop").then_some("finish_reason"),
        (message.get("tool_calls").is_some()).then_some("tool_calls (python runs on the server)"),
    ];
    let wrong: Vec<&str> = problems.into_iter().flatten().collect();
    (!wrong.is_empty()).then(|| {
        format!(
            "{name}: {} differ\n got {response}\nwant final {:?}, reasoning {:?}, calls {want_calls:?}",
            wrong.join(", "),
            final_text(scenario),
            reasoning_texts(scenario)
        )
    })
}

/// Reassembles a streamed chat completion into (content, reasoning, server calls,
/// finish_reason, usage).
fn assemble(chunks: &[Value]) -> (String, String, Vec<(String, String)>, Value, Value) {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for chunk in chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        // gpt-oss clients read `reasoning`, vLLM's `reasoning_content`: both, the same.
        assert_eq!(delta["reasoning"], delta["reasoning_content"], "{chunk}");
        if let Some(text) = delta["content"].as_str() {
            content.push_str(text);
        }
        if let Some(text) = delta["reasoning_content"].as_str() {
            reasoning.push_str(text);
        }
        for call in delta["server_tool_calls"].as_array().into_iter().flatten() {
            calls.push((
                call["input"].as_str().unwrap_or_default().to_string(),
                call["output"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    (content, reasoning, calls, finish, usage)
}

#[test]
fn chat_completions_through_curl_give_every_scenario() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let (status, body) = curl_get(&format!("{}/health", server.root()));
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl_get(&format!("{}/models", server.base));
    assert_eq!(status, 200, "{body}");
    let models: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(models["object"], "list");
    assert!(
        models["data"][0]["id"]
            .as_str()
            .is_some_and(|id| id.contains("gpt-oss-tiny-agent")),
        "{models}"
    );

    let url = format!("{}/chat/completions", server.base);
    check_every_scenario(|name, scenario| {
        let user = scenario["user"].as_str().expect("user");

        let (status, body) = curl_post(&url, &chat_body(user, false));
        let response: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!("{name}: HTTP {status}: {body}"));
        }
        assert_eq!(response["object"], "chat.completion");
        let generated: usize = scenario["generated_tokens"]
            .as_array()
            .expect("generated")
            .iter()
            .map(|g| g.as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(
            response["usage"]["completion_tokens"],
            json!(generated),
            "{name}: {response}"
        );
        if let Some(failure) = check_message(name, scenario, &response) {
            return Err(failure);
        }

        let (status, body) = curl_post(&url, &chat_body(user, true));
        if status != 200 {
            return Err(format!("{name} (stream): HTTP {status}: {body}"));
        }
        let (content, reasoning, calls, finish, usage) = assemble(&sse_data(&body));
        // The streamed reasoning is the analysis messages back to back.
        let want_reasoning: String = reasoning_texts(scenario).concat();
        if content != final_text(scenario)
            || reasoning != want_reasoning
            || calls != python_calls(scenario)
            || finish != "stop"
            || usage["completion_tokens"] != json!(generated)
        {
            return Err(format!(
                "{name} (stream): got content {content:?}, reasoning {reasoning:?}, calls {calls:?}, finish {finish}, usage {usage}"
            ));
        }
        Ok(())
    });
}

#[test]
fn bad_requests_get_openai_errors() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let url = format!("{}/chat/completions", server.base);
    let cases = [
        (json!({"messages": "hi"}), "messages"),
        (json!({"model": "m"}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "max"}),
            "reasoning_effort",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}, {"role": "user", "content": "hi"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
            "n",
        ),
    ];
    for (body, param) in cases {
        let error = curl_refused(&url, &body, param);
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, text) = curl_post_raw(&url, "{not json");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"invalid_request_error\""), "{text}");
    let (status, text) = curl_get(&format!("{}/nothing-here", server.base));
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("\"error\""), "{text}");
}

/// The client script: every scenario through `chat.completions.create`, streamed and not.
const SDK_CHAT: &str = r#"
out = []
for user in json.loads(sys.argv[2]):
    r = client.chat.completions.create(model="gpt-oss", messages=[{"role": "user", "content": user}], temperature=0)
    m = r.choices[0].message
    extra = m.model_extra or {}
    calls = [[c["input"], c["output"]] for c in (extra.get("server_tool_calls") or [])]
    content, reasoning, scalls, finish = "", "", [], None
    for chunk in client.chat.completions.create(model="gpt-oss", messages=[{"role": "user", "content": user}], temperature=0, stream=True):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        dx = d.model_extra or {}
        reasoning += dx.get("reasoning_content") or ""
        assert dx.get("reasoning") == dx.get("reasoning_content"), chunk
        scalls += [[c["input"], c["output"]] for c in (dx.get("server_tool_calls") or [])]
        finish = chunk.choices[0].finish_reason or finish
    assert extra.get("reasoning") == extra.get("reasoning_content"), r
    out.append({"content": m.content, "reasoning": extra.get("reasoning_content"), "calls": calls,
                "finish": r.choices[0].finish_reason,
                "stream": {"content": content, "reasoning": reasoning, "calls": scalls, "finish": finish}})
"#;

#[test]
fn openai_python_sdk_chat_gives_every_scenario() {
    check_python_sdk_per_scenario(
        SDK_CHAT,
        || Server::start(&[]),
        |scenario| {
            let calls: Vec<Value> = python_calls(scenario)
                .into_iter()
                .map(|(code, out)| json!([code, out]))
                .collect();
            json!({
                "content": final_text(scenario),
                "reasoning": reasoning_texts(scenario).join("\n\n"),
                "calls": calls,
                "finish": "stop",
                "stream": {
                    "content": final_text(scenario),
                    "reasoning": reasoning_texts(scenario).concat(),
                    "calls": calls,
                    "finish": "stop",
                },
            })
        },
    );
}

#[test]
fn concurrent_requests_share_one_engine_without_mixing_up() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let url = format!("{}/chat/completions", server.base);
    // Every scenario twice, all at once, streamed and not: each must get its own transcript
    // although their generations interleave on one engine and its prefix cache.
    let scenarios = scenarios();
    let handles: Vec<_> = scenarios
        .iter()
        .chain(scenarios.iter())
        .enumerate()
        .map(|(i, scenario)| {
            let url = url.clone();
            let scenario = scenario.clone();
            std::thread::spawn(move || {
                let user = scenario["user"].as_str().expect("user");
                let stream = i % 2 == 1;
                let (status, body) = curl_post(&url, &chat_body(user, stream));
                assert_eq!(status, 200, "{body}");
                let content = if stream {
                    assemble(&sse_data(&body)).0
                } else {
                    let response: Value = serde_json::from_str(&body).expect("JSON");
                    response["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                };
                (content, final_text(&scenario))
            })
        })
        .collect();
    check_all(handles, |handle| {
        let (got, want) = handle.join().expect("request thread");
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?}, want {want:?}"))
        }
    });
    let (status, body) = curl_get(&format!("{}/health", server.root()));
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        health["queue"],
        json!({"running": 0, "waiting": 0}),
        "{health}"
    );
}

/// The tiny model never calls functions by itself; a named `tool_choice` writes the call's
/// header for it. Arguments that are not JSON are never handed over (the model reads why and is
/// asked again, up to the tool-call limit), so what comes back is a call with JSON arguments or
/// no call at all, and never a server error.
#[test]
fn a_named_tool_choice_makes_the_real_model_call_it() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let user = scenarios()[0]["user"].as_str().expect("user").to_string();
    let function = json!({"name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let (status, body) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": user, "tools": [{"type": "function", "name": "get_weather",
                 "parameters": function["parameters"]}],
                "tool_choice": {"type": "function", "name": "get_weather"},
                "max_output_tokens": 48, "store": false}),
    );
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).expect("JSON");
    let output = response["output"].as_array().expect("output");
    assert!(
        output.iter().all(|i| i["type"] != "message"),
        "no answer before the call: {response}"
    );
    match output.iter().find(|i| i["type"] == "function_call") {
        Some(call) => {
            assert_eq!(call["name"], "get_weather", "{response}");
            let arguments = call["arguments"].as_str().expect("arguments");
            assert!(
                serde_json::from_str::<Value>(arguments).is_ok(),
                "{response}"
            );
        }
        None => assert_eq!(response["status"], "incomplete", "{response}"),
    }

    for stream in [false, true] {
        let (status, body) = curl_post(
            &format!("{}/chat/completions", server.base),
            &json!({"messages": [{"role": "user", "content": user}],
                    "tools": [{"type": "function", "function": function}],
                    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                    "max_tokens": 48, "stream": stream}),
        );
        assert_eq!(status, 200, "{body}");
        let (finish, name, content) = if stream {
            let (content, _, _, finish, _) = assemble(&sse_data(&body));
            let name = sse_data(&body)
                .iter()
                .flat_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
                .flatten()
                .filter_map(|c| c["function"]["name"].as_str().map(str::to_string))
                .collect::<String>();
            (finish, name, content)
        } else {
            let response: Value = serde_json::from_str(&body).expect("JSON");
            let choice = &response["choices"][0];
            (
                choice["finish_reason"].clone(),
                choice["message"]["tool_calls"][0]["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                choice["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        println!("stream {stream}: finish {finish}, name {name:?}, content {content:?}");
        assert_eq!(content, "", "no answer text: {body}");
        match finish.as_str() {
            // JSON arguments finished with <|call|>: the client gets the call.
            Some("tool_calls") => assert_eq!(name, "get_weather", "{body}"),
            // Cut off by max_tokens, or no JSON within the tool-call limit: no call.
            Some("length") => assert_eq!(name, "", "{body}"),
            other => panic!("finish {other:?}: {body}"),
        }
    }
}

#[test]
fn chat_stop_ends_the_answer_before_the_first_stop_string() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let url = format!("{}/chat/completions", server.base);
    let scenario = scenarios()
        .into_iter()
        .find(|s| s["id"] == "sumsq-22")
        .expect("the sumsq-22 scenario");
    let user = scenario["user"].as_str().expect("user text");
    let answer = final_text(&scenario);
    let before = |text: &str| answer[..answer.find(text).expect("in the answer")].to_string();
    let cases = [
        (json!(" is "), before(" is ")),
        // The earliest of several wins, whichever comes first in the list.
        (json!(["never said", " 22 ", " from 1"]), before(" from 1")),
        (json!("never said"), answer.clone()),
    ];
    for (stop, want) in cases {
        for stream in [false, true] {
            let mut body = chat_body(user, stream);
            body["stop"] = stop.clone();
            let (status, text) = curl_post(&url, &body);
            assert_eq!(status, 200, "{text}");
            let (content, reasoning, calls, finish) = if stream {
                let (content, reasoning, calls, finish, _) = assemble(&sse_data(&text));
                (json!(content), json!(reasoning), calls.len(), finish)
            } else {
                let response: Value = serde_json::from_str(&text).expect("JSON");
                let choice = &response["choices"][0];
                let calls = choice["message"]["server_tool_calls"]
                    .as_array()
                    .map_or(0, Vec::len);
                (
                    choice["message"]["content"].clone(),
                    choice["message"]["reasoning"].clone(),
                    calls,
                    choice["finish_reason"].clone(),
                )
            };
            let case = format!("stop {stop} (stream: {stream})");
            assert_eq!(content, json!(want), "{case}: {text}");
            assert_eq!(finish, "stop", "{case}");
            // Only the answer is cut: the reasoning and the python call before it are whole.
            assert_eq!(
                reasoning,
                json!(reasoning_texts(&scenario).concat()),
                "{case}"
            );
            assert_eq!(calls, 1, "{case}");
        }
    }

    // What cannot be honoured is refused, naming the parameter.
    let mut body = chat_body(user, false);
    body["stop"] = json!([7]);
    curl_refused(&url, &body, "stop");
    let error = curl_refused(
        &format!("{}/responses", server.base),
        &json!({"model": "gpt-oss", "input": user, "stop": ["."]}),
        "stop",
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/v1/chat/completions")),
        "{error}"
    );
}

/// The request lines the server wrote: (method, path, status, the rest), waiting up to 10 s for
/// `count` of them (a line is written once its response body is done).
fn request_lines(server: &Server, count: usize) -> Vec<(String, String, u16, String)> {
    let parse = |line: &String| {
        let rest = line.strip_prefix("ossa serve: ")?;
        let mut words = rest.splitn(4, ' ');
        let method = words.next()?.to_string();
        if !["GET", "POST", "DELETE", "OPTIONS"].contains(&method.as_str()) {
            return None;
        }
        let path = words.next()?.to_string();
        let status = words.next()?.parse().ok()?;
        Some((method, path, status, words.next()?.to_string()))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<_> = server.log().iter().filter_map(parse).collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `(tokens in, tokens out)` of a request line's rest, which must also give its time and queue
/// wait: `1.234 s, 498 tokens in, 56 out, queued 0.000 s`.
fn line_tokens(rest: &str) -> (usize, usize) {
    let fields: Vec<&str> = rest.split(", ").collect();
    assert_eq!(fields.len(), 4, "{rest}");
    let seconds = |text: &str| -> f64 {
        text.strip_suffix(" s")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a time in {rest}"))
    };
    assert!(seconds(fields[0]) >= 0.0);
    assert!(seconds(fields[3].strip_prefix("queued ").expect("queued")) >= 0.0);
    let number = |text: &str, suffix: &str| -> usize {
        text.strip_suffix(suffix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("`{suffix}` in {rest}"))
    };
    (number(fields[1], " tokens in"), number(fields[2], " out"))
}

#[test]
fn the_server_logs_one_line_per_request_unless_quiet() {
    if curl_missing() {
        return;
    }
    let server = Server::start_logging(&[]);
    let user = "Say hello in one word.";
    let (status, body) = curl_post(
        &format!("{}/chat/completions", server.base),
        &chat_body(user, false),
    );
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).expect("JSON");
    let (status, streamed) = curl_post(
        &format!("{}/chat/completions", server.base),
        &chat_body(user, true),
    );
    assert_eq!(status, 200, "{streamed}");
    let (status, body) = curl_post(
        &format!("{}/completions", server.base),
        &json!({"prompt": "Hello", "max_tokens": 3}),
    );
    assert_eq!(status, 200, "{body}");
    let completion: Value = serde_json::from_str(&body).expect("JSON");
    // A path that tries to write a line of its own stays on its line, percent-encoded.
    let (status, _) = curl_get(&format!(
        "{}/models/x%0aossa%20serve:%20GET%20/forged%20200",
        server.base
    ));
    assert_eq!(status, 404);
    // A request the guard refuses is logged too.
    let (status, _) = curl(&[
        "-H",
        "Host: evil.example",
        &format!("{}/models", server.base),
    ]);
    assert_eq!(status, 403);

    let lines = request_lines(&server, 5);
    let summary: Vec<(&str, &str, u16)> = lines
        .iter()
        .map(|(m, p, s, _)| (m.as_str(), p.as_str(), *s))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/v1/chat/completions", 200),
            ("POST", "/v1/chat/completions", 200),
            ("POST", "/v1/completions", 200),
            (
                "GET",
                "/v1/models/x%0aossa%20serve:%20GET%20/forged%20200",
                404
            ),
            ("GET", "/v1/models", 403),
        ],
        "{:?}",
        server.log()
    );
    // The tokens the responses report, in the line.
    let usage = &response["usage"];
    assert_eq!(
        line_tokens(&lines[0].3),
        (
            usage["prompt_tokens"].as_u64().expect("prompt") as usize,
            usage["completion_tokens"].as_u64().expect("completion") as usize
        ),
        "{}",
        lines[0].3
    );
    let streamed_usage = sse_data(&streamed)
        .into_iter()
        .rev()
        .find(|c| !c["usage"].is_null())
        .expect("a usage chunk")["usage"]
        .clone();
    assert_eq!(
        line_tokens(&lines[1].3),
        (
            streamed_usage["prompt_tokens"].as_u64().expect("prompt") as usize,
            streamed_usage["completion_tokens"]
                .as_u64()
                .expect("completion") as usize
        )
    );
    assert_eq!(
        line_tokens(&lines[2].3),
        (
            completion["usage"]["prompt_tokens"]
                .as_u64()
                .expect("prompt") as usize,
            completion["usage"]["completion_tokens"]
                .as_u64()
                .expect("completion") as usize
        ),
        "{}",
        lines[2].3
    );
    // Requests that generate nothing give their time only.
    for (_, _, _, rest) in &lines[3..] {
        assert!(rest.ends_with(" s") && !rest.contains("tokens"), "{rest}");
    }

    // `--quiet` (as every other test server runs): no request lines.
    let quiet = Server::start(&[]);
    let (status, _) = curl_get(&format!("{}/models", quiet.base));
    assert_eq!(status, 200);
    let (status, _) = curl_post(
        &format!("{}/chat/completions", quiet.base),
        &chat_body(user, false),
    );
    assert_eq!(status, 200);
    assert!(request_lines(&quiet, 1).is_empty(), "{:?}", quiet.log());
}
