//! `ossa serve`'s Responses API with curl and the official `openai` Python package against the
//! tiny trained agent: every scenario's reasoning, server-side python call (code and output)
//! and final answer come through as output items, streamed with the reference server's event
//! sequence; stored responses survive a restart and can be fetched, continued and deleted.

mod support;

use serde_json::{Value, json};
use support::or_skip;
use support::serve::{
    Server, check_python_sdk_per_scenario, curl, curl_get, curl_missing, curl_post,
    python_with_openai, run_sdk_script, sse_data,
};
use support::{check_every_scenario, final_text, python_calls, reasoning_texts, scenarios};

/// (reasoning texts, python calls, final text) of a response's output items.
fn summarize(output: &Value) -> (Vec<String>, Vec<(String, String)>, String) {
    let mut reasoning = Vec::new();
    let mut calls = Vec::new();
    let mut text = String::new();
    for item in output.as_array().expect("output items") {
        assert_eq!(item["status"], "completed", "{item}");
        match item["type"].as_str() {
            Some("reasoning") => reasoning.push(
                item["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            Some("code_interpreter_call") => calls.push((
                item["code"].as_str().unwrap_or_default().to_string(),
                item["outputs"][0]["logs"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )),
            Some("message") => {
                assert_eq!(item["role"], "assistant");
                text.push_str(item["content"][0]["text"].as_str().unwrap_or_default());
            }
            other => panic!("unexpected output item {other:?}: {item}"),
        }
    }
    (reasoning, calls, text)
}

fn want(scenario: &Value) -> (Vec<String>, Vec<(String, String)>, String) {
    (
        reasoning_texts(scenario),
        python_calls(scenario),
        final_text(scenario),
    )
}

#[test]
fn responses_through_curl_give_every_scenario_streamed_and_not() {
    let server = or_skip!(Server::start_storing_for_curl(&[]));
    let url = format!("{}/responses", server.base);
    check_every_scenario(|name, scenario| {
        let body = |stream: bool| {
            json!({
                "model": "gpt-oss", "input": scenario["user"], "temperature": 0,
                "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
                "reasoning": {"effort": "low"}, "stream": stream,
            })
        };
        let (status, text) = curl_post(&url, &body(false));
        let response: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 || response["status"] != "completed" {
            return Err(format!("{name}: HTTP {status}: {text}"));
        }
        assert_eq!(response["object"], "response");
        assert!(
            response["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("resp_"))
        );
        if summarize(&response["output"]) != want(scenario) {
            return Err(format!(
                "{name}: got {}\nwant {:?}",
                response["output"],
                want(scenario)
            ));
        }

        let (status, text) = curl_post(&url, &body(true));
        assert_eq!(status, 200, "{text}");
        // Every event names its type twice (the SSE event and `type`), numbered in order.
        let mut event_names = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("event:") {
                event_names.push(name.trim().to_string());
            }
        }
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).expect("event JSON"))
            .collect();
        assert_eq!(event_names.len(), events.len());
        for (i, (event, name)) in events.iter().zip(&event_names).enumerate() {
            assert_eq!(event["type"], json!(name), "{event}");
            assert_eq!(event["sequence_number"], json!(i), "{event}");
        }
        let kinds: Vec<&str> = event_names.iter().map(String::as_str).collect();
        assert_eq!(
            kinds[..3],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added"
            ],
            "{name}"
        );
        assert_eq!(kinds.last(), Some(&"response.completed"), "{name}");
        let concat = |kind: &str| -> String {
            events
                .iter()
                .filter(|e| e["type"] == kind)
                .filter_map(|e| e["delta"].as_str())
                .collect()
        };
        let (reasoning, calls, final_answer) = want(scenario);
        let code: String = calls.iter().map(|(c, _)| c.as_str()).collect();
        let completed = &events.last().expect("events")["response"];
        let ok = concat("response.reasoning_text.delta") == reasoning.concat()
            && concat("response.output_text.delta") == final_answer
            && concat("response.code_interpreter_call_code.delta") == code
            && summarize(&completed["output"]) == want(scenario)
            && kinds
                .iter()
                .filter(|k| **k == "response.code_interpreter_call.completed")
                .count()
                == calls.len()
            && kinds
                .iter()
                .filter(|k| **k == "response.output_item.added")
                .count()
                == kinds
                    .iter()
                    .filter(|k| **k == "response.output_item.done")
                    .count();
        if !ok {
            return Err(format!("{name} (stream): events {kinds:?}\n{text}"));
        }
        Ok(())
    });
}

#[test]
fn stored_responses_persist_continue_and_delete() {
    if curl_missing() {
        return;
    }
    let store = tempfile::tempdir().expect("temp");
    let hello = scenarios()
        .into_iter()
        .find(|s| s["name"] == "hello")
        .expect("hello scenario");
    let first = {
        let server = Server::start_with_store(store.path(), &[]);
        let (status, text) = curl_post(
            &format!("{}/responses", server.base),
            &json!({"input": hello["user"], "temperature": 0}),
        );
        assert_eq!(status, 200, "{text}");
        let response: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(response["store"], true);
        // Not stored when asked not to.
        let (status, text) = curl_post(
            &format!("{}/responses", server.base),
            &json!({"input": hello["user"], "temperature": 0, "store": false}),
        );
        assert_eq!(status, 200, "{text}");
        let unstored: Value = serde_json::from_str(&text).expect("JSON");
        let (status, _) = curl_get(&format!(
            "{}/responses/{}",
            server.base,
            unstored["id"].as_str().expect("id")
        ));
        assert_eq!(status, 404);
        response
    };
    // A new server process finds it on disk.
    let server = Server::start_with_store(store.path(), &[]);
    let id = first["id"].as_str().expect("id");
    let (status, text) = curl_get(&format!("{}/responses/{id}", server.base));
    assert_eq!(status, 200, "{text}");
    let fetched: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(fetched, first);
    assert_eq!(summarize(&fetched["output"]).2, final_text(&hello));

    // Continuing it: the earlier turn is in the prompt (more input tokens than the question
    // alone), and the new response points back at it.
    let (status, text) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": hello["user"], "temperature": 0, "max_output_tokens": 40,
                "previous_response_id": id}),
    );
    assert_eq!(status, 200, "{text}");
    let next: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(next["previous_response_id"], json!(id));
    let first_input = first["usage"]["input_tokens"].as_u64().expect("usage");
    let first_generations = 1;
    assert!(
        next["usage"]["input_tokens"].as_u64().expect("usage") > first_input / first_generations,
        "{next}"
    );

    let (status, text) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": "hi", "previous_response_id": "resp_doesnotexist"}),
    );
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("previous_response_id"), "{text}");

    let (status, text) = curl(&["-X", "DELETE", &format!("{}/responses/{id}", server.base)]);
    assert_eq!(status, 200, "{text}");
    let deleted: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response", "deleted": true})
    );
    let (status, _) = curl_get(&format!("{}/responses/{id}", server.base));
    assert_eq!(status, 404);
    let (status, _) = curl_get(&format!("{}/responses/..%2F..%2Fetc%2Fpasswd", server.base));
    assert_eq!(status, 404);

    // Asking for a built-in the server was not started with is a clear error.
    let (status, text) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": "hi", "tools": [{"type": "web_search"}]}),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("--browser"), "{text}");
}

const SDK_RESPONSES: &str = r#"
out = []
tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
for user in json.loads(sys.argv[2]):
    r = client.responses.create(model="gpt-oss", input=user, tools=tools, reasoning={"effort": "low"}, temperature=0)
    items = []
    for item in r.output:
        if item.type == "reasoning":
            items.append(["reasoning", item.content[0].text])
        elif item.type == "code_interpreter_call":
            items.append(["code", item.code, item.outputs[0].logs])
        elif item.type == "message":
            items.append(["message", item.content[0].text])
    kinds, text, reasoning, code = [], "", "", ""
    for event in client.responses.create(model="gpt-oss", input=user, tools=tools, temperature=0, stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.reasoning_text.delta":
            reasoning += event.delta
        elif event.type == "response.code_interpreter_call_code.delta":
            code += event.delta
        elif event.type == "response.completed":
            final = event.response.output_text
    out.append({"output_text": r.output_text, "items": items, "stream": {"text": text, "reasoning": reasoning, "code": code, "final": final, "first": kinds[0], "last": kinds[-1]}})
"#;

#[test]
fn openai_python_sdk_responses_give_every_scenario() {
    check_python_sdk_per_scenario(
        SDK_RESPONSES,
        || Server::start_storing(&[]),
        |scenario| {
            let mut items = Vec::new();
            let messages = scenario["expected"].as_array().expect("expected");
            for (i, m) in messages.iter().enumerate() {
                let text = m["content"][0]["text"].as_str().expect("text");
                if m["role"] != "assistant" {
                    continue;
                }
                if m["recipient"] == "python" {
                    items.push(json!(["code", text, messages[i + 1]["content"][0]["text"]]));
                } else if m["channel"] == "analysis" {
                    items.push(json!(["reasoning", text]));
                } else {
                    items.push(json!(["message", text]));
                }
            }
            let (reasoning, calls, final_answer) = want(scenario);
            json!({
                "output_text": final_answer,
                "items": items,
                "stream": {
                    "text": final_answer, "reasoning": reasoning.concat(),
                    "code": calls.iter().map(|(c, _)| c.as_str()).collect::<String>(),
                    "final": final_answer, "first": "response.created", "last": "response.completed",
                },
            })
        },
    );
}

#[test]
fn streamed_chunks_parse_as_sse() {
    // The helper the other tests use must reject a stream without its terminator.
    let result = std::panic::catch_unwind(|| sse_data("data: {}\n\n"));
    assert!(result.is_err());
    assert_eq!(
        sse_data("data: {\"a\":1}\n\ndata: [DONE]\n\n"),
        vec![json!({"a": 1})]
    );
}

/// The `openai` SDK's own calls for one model and a response's input items: `models.retrieve`
/// (and its NotFoundError), `responses.input_items.list` paging through `after` by itself.
const SDK_LOOKUPS: &str = r#"
import openai
args = json.loads(sys.argv[2])
model = client.models.retrieve(args["model"])
try:
    client.models.retrieve("no-such-model")
    missing = None
except openai.NotFoundError as e:
    missing = e.body
pages = client.responses.input_items.list(args["response"], order="asc", limit=2)
ids = [item.id for item in pages]
first = client.responses.input_items.list(args["response"], limit=1)
out = [{"model": model.id, "missing": missing, "asc": ids,
        "desc_first": [i.id for i in first.data], "more": first.has_more}]
"#;

#[test]
fn models_by_id_and_input_items_of_stored_responses() {
    let server = or_skip!(Server::start_storing_for_curl(&[]));

    // `GET /v1/models/{id}`: the entry `/v1/models` lists, or a 404 in OpenAI's shape.
    let (status, body) = curl_get(&format!("{}/models", server.base));
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    let entry = &listed["data"][0];
    let model_id = entry["id"].as_str().expect("model id").to_string();
    let (status, body) = curl_get(&format!("{}/models/{model_id}", server.base));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON"), *entry);
    for missing in ["gpt-4o", "openai/gpt-oss-120b", "%00%0a"] {
        let (status, body) = curl_get(&format!("{}/models/{missing}", server.base));
        assert_eq!(status, 404, "{missing}: {body}");
        let error: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(error["error"]["code"], "model_not_found", "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["param"], "model", "{body}");
    }

    // A response made from three input items, one of them given with its own id.
    let url = format!("{}/responses", server.base);
    let input = json!([
        {"role": "user", "content": "Hi."},
        {"type": "message", "role": "assistant", "id": "msg_given",
         "content": [{"type": "output_text", "text": "Hello!"}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Say hello in one word."}]},
    ]);
    let (status, body) = curl_post(
        &url,
        &json!({"model": "gpt-oss", "input": input, "max_output_tokens": 16}),
    );
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).expect("JSON");
    let id = response["id"].as_str().expect("id").to_string();
    let items_url = format!("{url}/{id}/input_items");
    let list = |query: &str| -> (u16, Value) {
        let (status, body) = curl_get(&format!("{items_url}{query}"));
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    };
    let (status, all) = list("?order=asc");
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["object"], "list");
    assert_eq!(all["has_more"], false);
    let data = all["data"].as_array().expect("data");
    let texts: Vec<(&str, &str)> = data
        .iter()
        .map(|item| {
            assert_eq!(item["type"], "message", "{item}");
            assert_eq!(item["status"], "completed", "{item}");
            (
                item["role"].as_str().expect("role"),
                item["content"][0]["text"].as_str().expect("text"),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "Hi."),
            ("assistant", "Hello!"),
            ("user", "Say hello in one word.")
        ]
    );
    // A string content is listed as a part, like the others.
    assert_eq!(data[0]["content"][0]["type"], "input_text");
    let ids: Vec<String> = data
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(ids[1], "msg_given");
    assert_eq!(all["first_id"], json!(ids[0]));
    assert_eq!(all["last_id"], json!(ids[2]));

    // Newest first by default; `limit` and `after` page through them.
    let (_, newest) = list("?limit=2");
    assert_eq!(newest["data"][0]["id"], json!(ids[2]));
    assert_eq!(newest["data"][1]["id"], json!(ids[1]));
    assert_eq!(newest["has_more"], true);
    let (_, rest) = list(&format!("?limit=2&after={}", ids[1]));
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["data"][0]["id"], json!(ids[0]));
    assert_eq!(rest["has_more"], false);

    // What cannot be honoured is refused, naming the parameter.
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=many", "limit"),
        ("?order=sideways", "order"),
        ("?after=msg_nowhere", "after"),
    ] {
        let (status, error) = list(query);
        assert_eq!(status, 400, "{query}: {error}");
        assert_eq!(error["error"]["param"], param, "{query}: {error}");
    }
    let (status, body) = curl_get(&format!("{url}/resp_unknown/input_items"));
    assert_eq!(status, 404, "{body}");

    // A string input is one user message.
    let (status, body) = curl_post(
        &url,
        &json!({"model": "gpt-oss", "input": "Say hello in one word.", "max_output_tokens": 16}),
    );
    assert_eq!(status, 200, "{body}");
    let second: Value = serde_json::from_str(&body).expect("JSON");
    let second_id = second["id"].as_str().expect("id");
    let (status, body) = curl_get(&format!("{url}/{second_id}/input_items"));
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        listed["data"][0]["content"],
        json!([{"type": "input_text", "text": "Say hello in one word."}])
    );

    // The official client reads both the way it reads OpenAI's.
    if let Some(python) = python_with_openai() {
        let got = run_sdk_script(
            python,
            SDK_LOOKUPS,
            &server.base,
            &json!({"model": model_id, "response": id}),
        );
        assert_eq!(got[0]["model"], json!(model_id), "{got:?}");
        assert_eq!(got[0]["missing"]["code"], "model_not_found", "{got:?}");
        assert_eq!(got[0]["asc"], json!(ids), "{got:?}");
        assert_eq!(got[0]["desc_first"], json!([ids[2]]), "{got:?}");
        assert_eq!(got[0]["more"], true, "{got:?}");
    }

    // A deleted response lists nothing.
    let (status, body) = curl(&["-X", "DELETE", &format!("{url}/{id}")]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl_get(&items_url);
    assert_eq!(status, 404, "{body}");
}
