//! The browser inside `ossa serve`, end to end on loopback: the real binary drives a scripted
//! model over `--backend openai-completions`; the model searches (a SearXNG-like API), opens
//! the first result (a real HTML page), and answers citing it with `【1†L…】`. Both APIs must
//! report the searches (`web_search_call` items and events / `server_tool_calls`), hand the
//! page's real text to the model, and turn the citation into a link with a `url_citation`
//! annotation whose offsets point at it in the final text, streamed and not.

mod support;

use ossa::agent::harmony::Message;
use serde_json::{Value, json};
use support::scripted::{MODEL, ScriptedServer, analysis, call, final_answer};
use support::serve::{Server, post_ok};

const QUERY: &str = "ossa lighthouse height";
// Characters outside ASCII before the citation: offsets count characters, not bytes.
const ANSWER_HEAD: &str = "The Ossa lighthouse — “Fyrtårn Øst” — is 42 meters tall";
const CITATION: &str = "【1†L2-L3】";
const ANSWER_TAIL: &str = ". It was lit in 1911.";

struct Setup {
    model: ScriptedServer,
    server: Server,
    page_url: String,
}

fn setup() -> Setup {
    let model = ScriptedServer::start();
    let page_url = model.add_lighthouse();
    let server = model.serve_with_search(&["--browser"]);
    Setup {
        model,
        server,
        page_url,
    }
}

fn browser_call(function: &str, arguments: Value) -> Message {
    call(&format!("browser.{function}"), arguments)
}

/// The model's three replies: search, open the first result, answer citing the page.
fn script_browsing(model: &ScriptedServer) {
    model.script(&[
        analysis("I should search for this."),
        browser_call("search", json!({"query": QUERY})),
    ]);
    model.script(&[
        analysis("The first result looks right."),
        browser_call("open", json!({"id": 0})),
    ]);
    model.script(&[
        analysis("The page says 42 meters."),
        final_answer(&format!("{ANSWER_HEAD}{CITATION}{ANSWER_TAIL}")),
    ]);
}

/// The answer as the client must see it, and where its link is, worked out from the format
/// the reference's `normalize_citations` writes: ` ([domain](url)) ` in place of the citation,
/// offsets in characters.
fn expected_answer(page_url: &str) -> (String, usize, usize, String) {
    let domain = page_url.split('/').nth(2).expect("a domain").to_string();
    let link = format!(" ([{domain}]({page_url})) ");
    let start = ANSWER_HEAD.chars().count();
    let end = start + link.chars().count();
    (
        format!("{ANSWER_HEAD}{link}{ANSWER_TAIL}"),
        start,
        end,
        domain,
    )
}

/// The page reached the model: the prompt after the `open` call holds the browser's message
/// with the page's text, and the prompt after the search holds the result.
fn check_prompts(setup: &Setup, first_prompt: usize) {
    let prompts = setup.model.prompt_texts();
    assert_eq!(prompts.len(), first_prompt + 3, "three generations");
    let after_search = &prompts[first_prompt + 1];
    let after_open = &prompts[first_prompt + 2];
    for (prompt, holds) in [
        (after_search, "<|start|>browser.search to=assistant"),
        (after_search, "The Ossa lighthouse"),
        (after_open, "<|start|>browser.open to=assistant"),
        // The page's text reached the model.
        (after_open, "stands 42 meters tall on the northern cape"),
        (after_open, "first lit in 1911"),
    ] {
        assert!(prompt.contains(holds), "no {holds:?} in:\n{prompt}");
    }
    // The browser system prompt came with the request's tools.
    assert!(prompts[first_prompt].contains("namespace browser"));
    assert_eq!(
        setup.model.queries().last().map(String::as_str),
        Some(QUERY)
    );
    assert_eq!(setup.model.script.replies_left(), 0);
}

fn post(url: &str, body: Value) -> String {
    post_ok(url, &body)
}

/// The JSON payloads of an SSE body (the Responses API's have an `event:` line each).
fn sse_payloads(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}")))
        .collect()
}

/// Checks the output items of a finished response; returns the message's output index.
fn check_output(output: &Value, page_url: &str) -> usize {
    let items = output.as_array().expect("output items");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "reasoning",
            "web_search_call",
            "reasoning",
            "web_search_call",
            "reasoning",
            "message"
        ],
        "{output}"
    );
    assert_eq!(
        items[1]["action"],
        json!({"type": "search", "query": QUERY})
    );
    assert_eq!(
        items[3]["action"],
        json!({"type": "open_page", "url": page_url}),
        "the link id resolves to the page it opened"
    );
    for item in items {
        assert_eq!(item["status"], "completed", "{item}");
    }
    let (text, start, end, domain) = expected_answer(page_url);
    let part = &items[5]["content"][0];
    assert_eq!(part["type"], "output_text");
    assert_eq!(part["text"], text);
    assert_eq!(
        part["annotations"],
        json!([{"type": "url_citation", "start_index": start, "end_index": end,
                "url": page_url, "title": domain}])
    );
    // The offsets are characters of the text the client got.
    let linked: String = text.chars().skip(start).take(end - start).collect();
    assert_eq!(linked, format!(" ([{domain}]({page_url})) "));
    5
}

#[test]
fn responses_web_search_runs_the_browser_and_cites_pages() {
    let setup = setup();
    let url = format!("{}/responses", setup.server.base);
    let (text, start, end, domain) = expected_answer(&setup.page_url);

    // Not streamed.
    script_browsing(&setup.model);
    let body = post(
        &url,
        json!({"model": MODEL, "input": "How tall is the Ossa lighthouse?",
               "tools": [{"type": "web_search"}], "store": false}),
    );
    let response: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(response["status"], "completed", "{response}");
    check_output(&response["output"], &setup.page_url);
    check_prompts(&setup, 0);

    // Streamed: the same items, built by the reference server's events.
    script_browsing(&setup.model);
    let body = post(
        &url,
        json!({"model": MODEL, "input": "How tall is the Ossa lighthouse?",
               "tools": [{"type": "browser_search"}], "stream": true, "store": false}),
    );
    let events = sse_payloads(&body);
    check_prompts(&setup, 3);
    let completed = events.last().expect("events");
    assert_eq!(completed["type"], "response.completed", "{body}");
    let message_index = check_output(&completed["response"]["output"], &setup.page_url);

    // Each browser call: added, in_progress, searching, completed, done, in that order.
    for (output_index, action) in [
        (1, json!({"type": "search", "query": QUERY})),
        (3, json!({"type": "open_page", "url": setup.page_url})),
    ] {
        let sequence: Vec<&str> = events
            .iter()
            .filter(|e| e["output_index"] == output_index)
            .filter_map(|e| e["type"].as_str())
            .collect();
        assert_eq!(
            sequence,
            [
                "response.output_item.added",
                "response.web_search_call.in_progress",
                "response.web_search_call.searching",
                "response.web_search_call.completed",
                "response.output_item.done",
            ],
            "browser call at {output_index}"
        );
        let done = events
            .iter()
            .find(|e| e["type"] == "response.output_item.done" && e["output_index"] == output_index)
            .expect("done");
        assert_eq!(done["item"]["type"], "web_search_call");
        assert_eq!(done["item"]["action"], action);
    }

    // The answer: deltas add up to the normalized text, the annotation is announced once,
    // before the delta that carries its link, and matches the final part.
    let message_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["output_index"] == message_index)
        .collect();
    let item_id = message_events[0]["item"]["id"].clone();
    let mut streamed = String::new();
    let mut annotations = Vec::new();
    for event in &message_events {
        match event["type"].as_str() {
            Some("response.output_text.delta") => {
                streamed.push_str(event["delta"].as_str().expect("delta"))
            }
            Some("response.output_text.annotation.added") => {
                // Announced before any of the link's text went out.
                assert_eq!(streamed.chars().count(), start, "{event}");
                assert_eq!(event["item_id"], item_id);
                assert_eq!(event["content_index"], 0);
                assert_eq!(event["annotation_index"], annotations.len());
                annotations.push(event["annotation"].clone());
            }
            _ => {}
        }
    }
    assert_eq!(streamed, text);
    assert_eq!(
        annotations,
        [
            json!({"type": "url_citation", "start_index": start, "end_index": end,
                "url": setup.page_url, "title": domain})
        ]
    );
    let done = message_events
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .expect("output_text.done");
    assert_eq!(done["text"], text);
    let part_done = message_events
        .iter()
        .find(|e| e["type"] == "response.content_part.done")
        .expect("content_part.done");
    assert_eq!(part_done["part"]["annotations"], json!(annotations));
    let sequence: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().expect("sequence_number"))
        .collect();
    assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>());
}

#[test]
fn chat_completions_run_the_browser_and_cite_pages() {
    let setup = setup();
    let url = format!("{}/chat/completions", setup.server.base);
    let (text, start, end, domain) = expected_answer(&setup.page_url);
    let annotation = json!({"type": "url_citation", "url_citation": {
        "start_index": start, "end_index": end, "title": domain, "url": setup.page_url}});
    let messages = json!([{"role": "user", "content": "How tall is the Ossa lighthouse?"}]);

    script_browsing(&setup.model);
    let body = post(&url, json!({"model": MODEL, "messages": messages}));
    let response: Value = serde_json::from_str(&body).expect("JSON");
    check_prompts(&setup, 0);
    let message = &response["choices"][0]["message"];
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    assert_eq!(message["content"], text, "{response}");
    assert_eq!(message["annotations"], json!([annotation]));
    let calls = message["server_tool_calls"]
        .as_array()
        .expect("server calls");
    let recipients: Vec<&str> = calls
        .iter()
        .filter_map(|c| c["recipient"].as_str())
        .collect();
    assert_eq!(recipients, ["browser.search", "browser.open"]);
    assert!(calls.iter().all(|c| c["type"] == "web_search"));
    assert!(
        calls[1]["output"]
            .as_str()
            .expect("output")
            .contains("42 meters tall"),
        "{}",
        calls[1]
    );

    script_browsing(&setup.model);
    let body = post(
        &url,
        json!({"model": MODEL, "messages": messages, "stream": true}),
    );
    check_prompts(&setup, 3);
    let mut content = String::new();
    let mut annotations = Vec::new();
    for chunk in sse_payloads(&body) {
        let delta = &chunk["choices"][0]["delta"];
        if let Some(list) = delta["annotations"].as_array() {
            // The link is in this very delta: its offsets point into content so far + it.
            let with_delta: String = content.clone() + delta["content"].as_str().unwrap_or("");
            assert!(with_delta.chars().count() >= end, "{chunk}");
            annotations.extend(list.iter().cloned());
        }
        if let Some(piece) = delta["content"].as_str() {
            content.push_str(piece);
        }
    }
    assert_eq!(content, text);
    assert_eq!(annotations, [annotation]);
}
