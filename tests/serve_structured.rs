//! Structured outputs, end to end: `ossa serve` on the tiny agent, driven by the official
//! `openai` Python package, must answer JSON that follows the request's schema at every
//! temperature, in Chat Completions and Responses, streamed and not; `strict` functions get
//! arguments that follow their parameters; schemas ossa cannot enforce are 400s; `ossa run
//! --schema` does the same for the CLI.

mod support;

use serde_json::{Value, json};
use support::or_skip;
use support::ossa_run_tiny;
use support::serve::{Server, curl_missing, curl_post, python_with_openai, run_sdk_script};

/// Bounded in every direction, so the tiny model (which was never trained to write JSON) ends
/// its answer within the token budget whatever it samples.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "greeting": {"type": "string", "maxLength": 12},
            "count": {"type": "integer", "minimum": 0, "maximum": 999},
            "mood": {"enum": ["happy", "calm", "busy"]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        },
        "required": ["greeting", "count", "mood", "tags"],
        "additionalProperties": false,
    })
}

/// The JSON `text` (what `what` answered), which must follow [`schema`].
fn follows_schema(what: &str, text: &str) -> Value {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(&schema()).expect("the test's schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {value} breaks the schema: {errors:?}"
    );
    value
}

/// For each case: the answer's text and how the response ended, through the SDK.
const SDK_FORMATS: &str = r#"
cases = json.loads(sys.argv[2])
out = []
for case in cases:
    api, stream, temperature, fmt = case["api"], case["stream"], case["temperature"], case["format"]
    seed = case.get("seed", 7)
    user = "Say hello in one word."
    if api == "chat":
        args = dict(model="tiny", messages=[{"role": "user", "content": user}],
                    temperature=temperature, seed=seed, max_tokens=400, response_format=fmt)
        if stream:
            text, finish = "", None
            for chunk in client.chat.completions.create(stream=True, **args):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
        else:
            r = client.chat.completions.create(**args)
            text, finish = r.choices[0].message.content or "", r.choices[0].finish_reason
    else:
        if fmt["type"] == "json_schema":
            fmt = dict(type="json_schema", **fmt["json_schema"])
        # `seed` is not a Responses parameter of OpenAI's; ossa honours it there too.
        args = dict(model="tiny", input=user, temperature=temperature, max_output_tokens=400,
                    text={"format": fmt}, extra_body={"seed": seed})
        if stream:
            text, finish = "", None
            for event in client.responses.create(stream=True, **args):
                if event.type == "response.output_text.delta":
                    text += event.delta
                elif event.type in ("response.completed", "response.incomplete"):
                    finish = event.response.status
        else:
            r = client.responses.create(**args)
            text, finish = r.output_text, r.status
    out.append({"text": text, "finish": finish})
"#;

#[test]
fn answers_follow_the_schema_at_every_temperature_in_both_apis_streamed_and_not() {
    let python = or_skip!(python_with_openai());
    let server = Server::start_sampling();
    let format = json!({"type": "json_schema",
        "json_schema": {"name": "greeting", "schema": schema(), "strict": true}});
    let mut cases = Vec::new();
    for api in ["chat", "responses"] {
        for stream in [false, true] {
            for temperature in [0.0, 0.7, 1.5] {
                cases.push(
                    json!({"api": api, "stream": stream, "temperature": temperature,
                    "format": format}),
                );
            }
        }
    }
    // Seeds that once let text outside the schema through at 1.5: after a message's end the
    // tiny model wrote text and ended it with a stop token (the lenient parser made an answer
    // of it), or the budget cut such text off.
    for (api, seed) in [
        ("responses", 6),
        ("responses", 8),
        ("responses", 115),
        ("responses", 153),
        ("chat", 115),
        ("chat", 159),
    ] {
        cases.push(
            json!({"api": api, "stream": false, "temperature": 1.5, "seed": seed,
            "format": format}),
        );
    }
    let results = run_sdk_script(python, SDK_FORMATS, &server.base, &json!(cases));
    assert_eq!(results.len(), cases.len());
    let mut answered = 0;
    for (case, result) in cases.iter().zip(&results) {
        let text = result["text"].as_str().expect("text");
        let finished = matches!(result["finish"].as_str(), Some("stop" | "completed"));
        if text.is_empty() && case["temperature"] != 0.0 {
            // Sampling, the tiny model may reason past its budget or stop without an answer
            // (the reasoning is free); what it does answer is checked below.
            continue;
        }
        if !finished && case["temperature"] != 0.0 {
            // The budget ended inside the answer: what it wrote is still JSON so far.
            assert!(json_prefix(text), "{case}: not the start of JSON: {text:?}");
            continue;
        }
        assert!(finished, "{case}: ended {result}");
        follows_schema(&case.to_string(), text);
        answered += 1;
    }
    // Greedy always answers (four cases); most sampled ones do too.
    assert!(answered >= 8, "only {answered} of {} answered", cases.len());
}

#[test]
fn json_object_answers_are_json_objects() {
    let python = or_skip!(python_with_openai());
    let server = Server::start_sampling();
    let cases: Vec<Value> = [("chat", false), ("chat", true), ("responses", false)]
        .iter()
        .map(|(api, stream)| {
            json!({"api": api, "stream": stream, "temperature": 0.0,
                "format": {"type": "json_object"}})
        })
        .collect();
    let results = run_sdk_script(python, SDK_FORMATS, &server.base, &json!(cases));
    for (case, result) in cases.iter().zip(&results) {
        let text = result["text"].as_str().expect("text");
        assert!(text.starts_with('{'), "{case}: {text:?}");
        if matches!(result["finish"].as_str(), Some("stop" | "completed")) {
            let answer: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {text:?}"));
            assert!(answer.is_object(), "{case}: {answer}");
        } else {
            // Any object may hold strings without end, and the tiny model writes one until
            // its token budget: what it wrote is still JSON so far.
            assert!(json_prefix(text), "{case}: not the start of JSON: {text:?}");
        }
    }
}

/// Whether `text` is the start of a JSON document: some completion (closing an open string,
/// finishing a literal or a pending value, closing the open brackets) makes it parse.
fn json_prefix(text: &str) -> bool {
    let (mut closers, mut in_string, mut escape) = (Vec::new(), false, false);
    for c in text.chars() {
        match (in_string, escape, c) {
            (true, true, _) => escape = false,
            (true, false, '\\') => escape = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '{') => closers.push('}'),
            (false, _, '[') => closers.push(']'),
            (false, _, '}' | ']') if closers.pop() != Some(c) => return false,
            _ => {}
        }
    }
    let open = match (in_string, escape) {
        (true, true) => "n\"",
        (true, false) => "\"",
        _ => "",
    };
    let close: String = closers.iter().rev().collect();
    [
        "",
        "0",
        "null",
        ":null",
        "\"k\":null",
        "rue",
        "ue",
        "e",
        "alse",
        "lse",
        "se",
        "ull",
        "ll",
        "l",
    ]
    .iter()
    .any(|fill| serde_json::from_str::<Value>(&format!("{text}{open}{fill}{close}")).is_ok())
}

#[test]
fn the_json_prefix_check_tells_json_starts_from_other_text() {
    for good in [
        r#"{"a": "unfini"#,
        r#"{"a": [1, 2."#,
        r#"{"a": tr"#,
        r#"{"a"#,
        r#"{"a": {"b": 1}, "#,
    ] {
        assert!(json_prefix(good), "{good}");
    }
    for bad in ["Hello {", r#"{"a": 1}}"#, r#"{"a" 1"#, r#"{"a": [1}"#] {
        assert!(!json_prefix(bad), "{bad}");
    }
}

const SDK_STRICT: &str = r#"
params = json.loads(sys.argv[2])
tool = {"type": "function", "function": {"name": "set_mood", "description": "Sets the mood.",
        "parameters": params, "strict": True}}
out = []
for temperature in [0, 0.7, 1.5]:
    r = client.chat.completions.create(model="tiny", temperature=temperature, max_tokens=400,
        seed=7, messages=[{"role": "user", "content": "Say hello in one word."}], tools=[tool],
        tool_choice={"type": "function", "function": {"name": "set_mood"}})
    calls = r.choices[0].message.tool_calls or []
    out.append([[c.function.name, c.function.arguments] for c in calls])
"#;

#[test]
fn strict_function_arguments_follow_the_parameters() {
    let python = or_skip!(python_with_openai());
    let server = Server::start_sampling();
    let results = run_sdk_script(python, SDK_STRICT, &server.base, &schema());
    assert_eq!(results.len(), 3);
    for (temperature, calls) in [0.0, 0.7, 1.5].iter().zip(&results) {
        let calls = calls.as_array().expect("calls");
        assert_eq!(calls.len(), 1, "temperature {temperature}: {calls:?}");
        assert_eq!(calls[0][0], "set_mood");
        let arguments = calls[0][1].as_str().expect("arguments");
        follows_schema(&format!("temperature {temperature}"), arguments);
    }
}

#[test]
fn schemas_that_cannot_be_enforced_are_400s_naming_the_parameter() {
    if curl_missing() {
        return;
    }
    let server = Server::start_sampling();
    let dangling = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/nowhere"}}});
    let chat = format!("{}/chat/completions", server.base);
    let responses = format!("{}/responses", server.base);
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            &chat,
            json!({"model": "m", "messages": user, "response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": dangling}}}),
            "response_format",
            "nowhere",
        ),
        (
            &chat,
            json!({"model": "m", "messages": user, "response_format": {"type": "yaml"}}),
            "response_format",
            "yaml",
        ),
        (
            &chat,
            json!({"model": "m", "messages": user, "response_format": {"type": "json_schema"}}),
            "response_format",
            "json_schema",
        ),
        (
            &responses,
            json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema",
                "name": "x", "schema": dangling}}}),
            "text.format",
            "nowhere",
        ),
        (
            &chat,
            json!({"model": "m", "messages": user, "tools": [{"type": "function",
                "function": {"name": "f", "strict": true, "parameters": dangling}}]}),
            "tools[0].function.parameters",
            "nowhere",
        ),
    ];
    for (url, body, param, named) in cases {
        let (status, text) = curl_post(url, &body);
        assert_eq!(status, 400, "{body}: {text}");
        let error: Value = serde_json::from_str(&text).expect("JSON error");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{text}");
        assert_eq!(error["error"]["param"], param, "{text}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(named), "{message}");
    }
    // The server keeps answering.
    let (status, text) = curl_post(
        &chat,
        &json!({"model": "m", "messages": user, "max_tokens": 20}),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn ossa_run_schema_answers_json_that_follows_the_file() {
    let home = tempfile::tempdir().expect("temp dir");
    let path = home.path().join("schema.json");
    std::fs::write(&path, schema().to_string()).expect("schema written");
    let output = ossa_run_tiny(
        home.path(),
        &[
            "--date",
            "2026-01-01",
            "-r",
            "low",
            "--temperature",
            "0",
            "--schema",
            path.to_str().expect("utf-8"),
            "Say hello in one word.",
        ],
    );
    let stdout = ossa_test_support::stdout_of_success("ossa run --schema", &output);
    follows_schema("ossa run --schema", stdout.trim());

    // A schema it cannot enforce fails before anything is generated, naming the file.
    let bad = home.path().join("bad.json");
    std::fs::write(
        &bad,
        r##"{"properties": {"a": {"$ref": "#/$defs/nowhere"}}}"##,
    )
    .expect("written");
    let output = ossa_run_tiny(
        home.path(),
        &["--schema", bad.to_str().expect("utf-8"), "hi"],
    );
    let stderr = ossa_test_support::stderr_of_failure("ossa run --schema bad.json", &output);
    ossa_test_support::assert_contains_all(&stderr, &["bad.json", "nowhere"]);
}
