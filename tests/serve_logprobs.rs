//! `logprobs` / `top_logprobs` (Chat Completions, Responses) and `seed`, end to end: `ossa
//! serve` on the tiny agent driven by the official `openai` Python package, and `ossa run
//! --seed`.

mod support;

use serde_json::{Value, json};
use support::or_skip;
use support::ossa_run_tiny;
use support::serve::{Server, curl_missing, curl_refused, python_with_openai, run_sdk_script};

const SDK_LOGPROBS: &str = r#"
user = "Say hello in one word."
entry = lambda e: {"token": e.token, "logprob": e.logprob, "bytes": e.bytes,
                   "top": [[t.token, t.logprob, t.bytes] for t in e.top_logprobs]}
out = {}
args = dict(model="tiny", messages=[{"role": "user", "content": user}], temperature=0,
            logprobs=True, top_logprobs=3)
r = client.chat.completions.create(**args)
out["chat"] = {"content": r.choices[0].message.content,
               "logprobs": [entry(e) for e in r.choices[0].logprobs.content]}
content, logprobs = "", []
for chunk in client.chat.completions.create(stream=True, **args):
    if chunk.choices:
        content += chunk.choices[0].delta.content or ""
        if chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            logprobs += [entry(e) for e in chunk.choices[0].logprobs.content]
out["chat_stream"] = {"content": content, "logprobs": logprobs}
r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": user}],
                                   temperature=0)
out["chat_without"] = r.choices[0].logprobs is None
args = dict(model="tiny", input=user, temperature=0, top_logprobs=3,
            include=["message.output_text.logprobs"])
r = client.responses.create(**args)
parts = [c for o in r.output if o.type == "message" for c in o.content]
out["responses"] = {"content": "".join(p.text for p in parts),
                    "logprobs": [entry(e) for p in parts for e in p.logprobs]}
content, logprobs, done = "", [], []
for event in client.responses.create(stream=True, **args):
    if event.type == "response.output_text.delta":
        content += event.delta
        logprobs += [entry(e) for e in event.logprobs or []]
    elif event.type == "response.output_text.done":
        done += [entry(e) for e in event.logprobs]
out["responses_stream"] = {"content": content, "logprobs": logprobs, "done": done}
out = [out]
"#;

/// Checks one answer's logprobs: they spell the content, greedy picked each position's most
/// likely token, and the alternatives are probabilities, most likely first.
fn check_answer(name: &str, answer: &Value) {
    let content = answer["content"].as_str().expect("content");
    let entries = answer["logprobs"].as_array().expect("logprobs");
    assert!(
        !content.is_empty() && !entries.is_empty(),
        "{name}: {answer}"
    );
    let mut bytes = Vec::new();
    for entry in entries {
        let token_bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .expect("bytes")
            .iter()
            .map(|b| b.as_u64().expect("byte") as u8)
            .collect();
        bytes.extend_from_slice(&token_bytes);
        let logprob = entry["logprob"].as_f64().expect("logprob");
        let top = entry["top"].as_array().expect("top");
        assert_eq!(top.len(), 3, "{name}: {entry}");
        // Greedy: the chosen token is the most likely one, with the same figure.
        assert_eq!(top[0][0], entry["token"], "{name}: {entry}");
        assert_eq!(top[0][1].as_f64(), Some(logprob), "{name}: {entry}");
        let mut previous = 0.0;
        let mut mass = 0.0;
        for alternative in top {
            let lp = alternative[1].as_f64().expect("logprob");
            assert!(lp <= previous, "{name}: not most likely first: {entry}");
            previous = lp;
            mass += lp.exp();
        }
        assert!(
            mass <= 1.0 + 1e-4,
            "{name}: alternatives hold {mass}: {entry}"
        );
    }
    assert_eq!(
        String::from_utf8(bytes).expect("utf-8"),
        content,
        "{name}: the tokens spell the answer"
    );
}

/// Whether two JSON values are equal but for numbers within 1e-3: a request that reuses the
/// cached prompt computes its last position apart, so its logits differ in the last bits.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().expect("number") - y.as_f64().expect("number")).abs() < 1e-3
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn logprobs_spell_the_answer_with_the_greedy_token_on_top_streamed_and_not() {
    let python = or_skip!(python_with_openai());
    let server = Server::start_sampling();
    let results = run_sdk_script(python, SDK_LOGPROBS, &server.base, &json!(null));
    let out = &results[0];
    for name in ["chat", "chat_stream", "responses", "responses_stream"] {
        check_answer(name, &out[name]);
    }
    assert!(close(&out["chat"], &out["chat_stream"]), "{out:#}");
    assert_eq!(out["chat"]["content"], out["responses"]["content"]);
    let responses = &out["responses"]["logprobs"];
    assert!(
        close(&out["responses_stream"]["done"], responses),
        "{out:#}"
    );
    assert!(
        close(&out["responses_stream"]["logprobs"], responses),
        "{out:#}"
    );
    assert_eq!(out["chat_without"], true, "logprobs only when asked for");
}

#[test]
fn bad_logprobs_parameters_are_400s() {
    if curl_missing() {
        return;
    }
    let server = Server::start_sampling();
    let chat = format!("{}/chat/completions", server.base);
    let user = json!([{"role": "user", "content": "hi"}]);
    for (body, param) in [
        (
            json!({"model": "m", "messages": user, "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            json!({"model": "m", "messages": user, "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            json!({"model": "m", "messages": user, "logprobs": "yes"}),
            "logprobs",
        ),
    ] {
        curl_refused(&chat, &body, param);
    }
}

const SDK_COMPLETIONS: &str = r#"
args = dict(model="tiny", temperature=0, max_tokens=12, logprobs=2,
            prompt="<|start|>user<|message|>Say hello in one word.<|end|><|start|>assistant")
r = client.completions.create(**args)
c = r.choices[0]
out = {"text": c.text, "usage": r.usage.completion_tokens, "logprobs": c.logprobs.model_dump()}
text, logprobs = "", {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
for chunk in client.completions.create(stream=True, **args):
    for choice in chunk.choices:
        text += choice.text
        if choice.logprobs:
            for k in logprobs:
                logprobs[k] += getattr(choice.logprobs, k) or []
out["stream"] = {"text": text, "logprobs": logprobs}
out = [out]
"#;

#[test]
fn completions_logprobs_in_the_legacy_shape_streamed_and_not() {
    let python = or_skip!(python_with_openai());
    let server = Server::start_sampling();
    let out = &run_sdk_script(python, SDK_COMPLETIONS, &server.base, &json!(null))[0];
    let logprobs = &out["logprobs"];
    let tokens = logprobs["tokens"].as_array().expect("tokens");
    assert_eq!(
        tokens.len() as u64,
        out["usage"].as_u64().expect("usage"),
        "{out}"
    );
    for (i, token) in tokens.iter().enumerate() {
        let top = logprobs["top_logprobs"][i].as_object().expect("top");
        assert!(top.len() <= 2 && !top.is_empty(), "{top:?}");
        // Greedy: the token is the most likely one.
        let best = top
            .iter()
            .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).expect("numbers"))
            .expect("one");
        assert_eq!(best.0, token.as_str().expect("text"), "{out}");
        assert_eq!(best.1.as_f64(), logprobs["token_logprobs"][i].as_f64());
    }
    // The text is the tokens' text, special tokens left out (`skip_special_tokens`).
    let spelled: String = tokens
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| !(t.starts_with("<|") && t.ends_with("|>")))
        .collect();
    assert_eq!(spelled, out["text"].as_str().expect("text"));
    assert_eq!(out["stream"]["text"], out["text"]);
    assert!(close(&out["stream"]["logprobs"], logprobs), "{out:#}");
}

const SDK_SEED: &str = r#"
out = []
for seed in json.loads(sys.argv[2]):
    r = client.chat.completions.create(model="tiny", temperature=1, seed=seed, max_tokens=60,
        messages=[{"role": "user", "content": "Say hello in one word."}])
    m = r.choices[0].message
    reasoning = getattr(m, "reasoning_content", None) or (m.model_extra or {}).get("reasoning_content")
    chat = [reasoning, m.content]
    r = client.responses.create(model="tiny", temperature=1, max_output_tokens=60,
        input="Say hello in one word.", extra_body={"seed": seed})
    responses = [[c.text for c in o.content] for o in r.output if getattr(o, "content", None)]
    r = client.completions.create(model="tiny", temperature=1, seed=seed, max_tokens=30,
        prompt="<|start|>user<|message|>Say hello in one word.<|end|><|start|>assistant")
    out.append({"seed": seed, "chat": chat, "responses": responses, "completions": r.choices[0].text})
"#;

#[test]
fn the_same_seed_gives_the_same_tokens_at_temperature_one_in_every_endpoint() {
    let python = or_skip!(python_with_openai());
    let server = Server::start_sampling();
    let seeds = json!([11, 11, 12, 13, 14, 15, 11]);
    let results = run_sdk_script(python, SDK_SEED, &server.base, &seeds);
    assert_eq!(results[0], results[1], "seed 11 twice");
    assert_eq!(results[0], results[6], "seed 11 after other seeds");
    // The equality means something: at temperature 1 other seeds sample other tokens.
    let distinct: std::collections::HashSet<String> = results
        .iter()
        .map(|r| json!([r["chat"], r["responses"], r["completions"]]).to_string())
        .collect();
    assert!(distinct.len() >= 3, "{results:#?}");
}

#[test]
fn ossa_run_with_a_seed_repeats_itself() {
    let home = tempfile::tempdir().expect("temp dir");
    let run = |seed: &str| {
        let output = ossa_run_tiny(
            home.path(),
            &[
                "--json",
                "--date",
                "2026-01-01",
                "-r",
                "low",
                "--temperature",
                "1.2",
                "--max-tokens",
                "80",
                "--seed",
                seed,
                "Say hello in one word.",
            ],
        );
        let transcript: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        transcript["messages"].clone()
    };
    let first = run("5");
    assert!(first.as_array().is_some_and(|m| !m.is_empty()), "{first}");
    assert_eq!(first, run("5"));
    let others: std::collections::HashSet<String> =
        ["6", "7", "8"].iter().map(|s| run(s).to_string()).collect();
    assert!(
        others.len() > 1 || !others.contains(&first.to_string()),
        "every seed gave the same run: {first}"
    );
}
