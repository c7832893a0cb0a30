//! `ossa serve`'s Completions API as vLLM serves it (token-id prompts, `return_token_ids`,
//! `stop_token_ids`), with curl and the official `openai` package, and the remote backend
//! that drives it: the agent renders harmony, the server only samples, and every scenario's
//! transcript comes out exactly as OpenAI's implementation produced it.

mod support;

use std::sync::Arc;

use ossa::agent::harmony::{HarmonyEncoding, ReasoningEffort};
use ossa::agent::remote::{RemoteBackend, RemoteKind, RemoteOptions};
use ossa::agent::{Agent, AgentConfig, CancellationToken, ConversationSettings, TurnOutcome};
use ossa::sandbox::SessionOptions;
use ossa::tools::Tool;
use ossa::tools::python::PythonTool;
use serde_json::{Value, json};
use support::or_skip;
use support::serve::{
    CALL, RETURN, Server, curl_post, curl_refused, ids, python_with_openai, run_sdk_script,
    sse_data,
};
use support::{SCENARIO_FLAGS, check_all, check_every_scenario, sandbox, scenarios};

#[test]
fn token_id_prompts_return_the_oracle_tokens_through_curl() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let url = format!("{}/completions", server.base);
    check_every_scenario(|name, scenario| {
        let prompt = ids(&scenario["prompt_tokens"]);
        let want = ids(&scenario["generated_tokens"][0]);
        let body = |stream: bool| {
            json!({
                "model": "m", "prompt": prompt, "max_tokens": 200, "temperature": 0,
                "stop_token_ids": [RETURN, CALL], "return_token_ids": true,
                "skip_special_tokens": false, "include_stop_str_in_output": true,
                "stream": stream,
            })
        };
        let (status, text) = curl_post(&url, &body(false));
        let response: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let choice = &response["choices"][0];
        if status != 200 || ids(&choice["token_ids"]) != want {
            return Err(format!(
                "{name}: HTTP {status}\n got {text}\nwant token_ids {want:?}"
            ));
        }
        assert_eq!(ids(&choice["prompt_token_ids"]), prompt, "{name}");
        assert_eq!(choice["finish_reason"], "stop", "{name}");
        assert_eq!(choice["stop_reason"], json!(want.last()), "{name}");
        assert_eq!(response["usage"]["completion_tokens"], json!(want.len()));
        // The text keeps the special tokens, the stop token included, as asked.
        let text_out = choice["text"].as_str().expect("text");
        assert!(
            text_out.starts_with("<|channel|>analysis<|message|>"),
            "{text_out}"
        );
        assert!(
            text_out.ends_with("<|call|>") || text_out.ends_with("<|return|>"),
            "{text_out}"
        );

        let (status, text) = curl_post(&url, &body(true));
        assert_eq!(status, 200, "{text}");
        let chunks = sse_data(&text);
        let streamed: Vec<u64> = chunks
            .iter()
            .flat_map(|c| ids(&c["choices"][0]["token_ids"]))
            .collect();
        let streamed_text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        let finish = chunks
            .iter()
            .rev()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str());
        if streamed != want || streamed_text != text_out || finish != Some("stop") {
            return Err(format!(
                "{name} (stream): got {streamed:?} {streamed_text:?} {finish:?}"
            ));
        }
        assert_eq!(
            ids(&chunks[0]["choices"][0]["prompt_token_ids"]),
            prompt,
            "{name}"
        );
        Ok(())
    });
}

#[test]
fn completions_limits_text_prompts_and_errors() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let url = format!("{}/completions", server.base);
    let scenario = &scenarios()[0];
    let prompt = ids(&scenario["prompt_tokens"]);
    let want = ids(&scenario["generated_tokens"][0]);

    // A token limit: the first 3 tokens, finish_reason length; special tokens skipped from the
    // text by default, as vLLM does.
    let (status, text) = curl_post(
        &url,
        &json!({"prompt": prompt, "max_tokens": 3, "temperature": 0, "return_token_ids": true}),
    );
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(ids(&response["choices"][0]["token_ids"]), want[..3]);
    assert_eq!(response["choices"][0]["finish_reason"], "length");
    assert_eq!(response["choices"][0]["text"], "analysis");

    // The same prompt as text with its special tokens: the same tokens come back. Without
    // stop_token_ids the model's EOS (<|return|>) still ends it; `stop` strings work too.
    let prompt_text = "<|start|>system<|message|>";
    let (status, text) = curl_post(
        &url,
        &json!({"prompt": [prompt_text], "max_tokens": 1, "temperature": 0, "return_token_ids": true}),
    );
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        ids(&response["choices"][0]["prompt_token_ids"]),
        prompt[..3]
    );

    let (status, text) = curl_post(
        &url,
        &json!({"prompt": prompt, "max_tokens": 50, "temperature": 0, "stop": ["greet"],
                "skip_special_tokens": false}),
    );
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        response["choices"][0]["text"],
        "<|channel|>analysis<|message|>Simple "
    );
    assert_eq!(response["choices"][0]["stop_reason"], "greet");
    assert_eq!(response["choices"][0]["finish_reason"], "stop");

    for (body, param) in [
        (json!({"prompt": [1, 99999999]}), "prompt[1]"),
        (json!({"prompt": []}), "prompt"),
        (json!({"max_tokens": 5}), "prompt"),
        (json!({"prompt": "hi", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "hi", "max_tokens": 100000000}), "messages"),
        (
            json!({"prompt": "hi", "stop_token_ids": ["x"]}),
            "stop_token_ids[0]",
        ),
    ] {
        curl_refused(&url, &body, param);
    }
}

const SDK_COMPLETIONS: &str = r#"
out = []
for prompt in json.loads(sys.argv[2]):
    extra = {"stop_token_ids": [200002, 200012], "return_token_ids": True, "skip_special_tokens": False}
    r = client.completions.create(model="m", prompt=prompt, max_tokens=200, temperature=0, extra_body=extra)
    streamed = []
    for chunk in client.completions.create(model="m", prompt=prompt, max_tokens=200, temperature=0, extra_body=extra, stream=True):
        streamed += (chunk.choices[0].model_extra or {}).get("token_ids") or []
    out.append({"token_ids": r.choices[0].model_extra["token_ids"], "finish": r.choices[0].finish_reason, "streamed": streamed})
"#;

#[test]
fn openai_python_sdk_completions_return_token_ids() {
    let python = or_skip!(python_with_openai());
    let server = Server::start(&[]);
    let scenarios = scenarios();
    let prompts: Vec<Vec<u64>> = scenarios.iter().map(|s| ids(&s["prompt_tokens"])).collect();
    let results = run_sdk_script(python, SDK_COMPLETIONS, &server.base, &json!(prompts));
    check_all(scenarios.iter().zip(&results), |(scenario, got)| {
        let want = ids(&scenario["generated_tokens"][0]);
        if ids(&got["token_ids"]) == want
            && ids(&got["streamed"]) == want
            && got["finish"] == "stop"
        {
            Ok(())
        } else {
            Err(format!("{}: got {got}, want {want:?}", scenario["id"]))
        }
    });
}

#[test]
fn remote_backend_reproduces_every_transcript_over_http() {
    remote_transcripts(None);
}

/// The generic dialect (no `return_token_ids`): the text, special tokens kept, re-tokenized.
#[test]
fn remote_backend_without_token_ids_retokenizes_the_text() {
    remote_transcripts(Some(RemoteKind::Generic));
}

fn remote_transcripts(kind: Option<RemoteKind>) {
    let server = Server::start(&[]);
    let encoding = HarmonyEncoding::gpt_oss().expect("o200k_harmony");
    let mut options = RemoteOptions::new(server.base.clone());
    options.api_key = None;
    options.kind = kind;
    let backend = RemoteBackend::connect(&options, encoding.tokenizer().clone())
        .expect("the server answers /models");
    // `ossa serve` speaks vLLM's dialect.
    assert_eq!(backend.kind(), kind.unwrap_or(RemoteKind::Vllm));
    assert!(
        backend.model().contains("gpt-oss-tiny-agent"),
        "{}",
        backend.model()
    );
    let backend = Arc::new(backend);
    let python: Arc<dyn Tool> = Arc::new(PythonTool::new(sandbox(), SessionOptions::default()));
    let agent = Agent::new(backend, encoding, vec![python], AgentConfig::default());
    let settings = ConversationSettings {
        reasoning_effort: ReasoningEffort::Low,
        conversation_start_date: Some("2026-01-01".into()),
        ..ConversationSettings::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    check_every_scenario(|name, scenario| {
        let mut chat = agent.chat(&settings);
        let prompt = agent
            .encoding()
            .render_conversation_for_completion(
                &{
                    let mut c = chat.conversation().clone();
                    c.messages
                        .push(ossa::agent::harmony::Message::from_role_and_content(
                            ossa::agent::harmony::Role::User,
                            scenario["user"].as_str().expect("user"),
                        ));
                    c
                },
                ossa::agent::harmony::Role::Assistant,
                None,
            )
            .expect("renders");
        assert_eq!(
            json!(prompt),
            scenario["prompt_tokens"],
            "{name}: the first prompt"
        );
        let report = runtime
            .block_on(chat.send(
                scenario["user"].as_str().expect("user"),
                &CancellationToken::new(),
                &mut |_| {},
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages = json!(chat.conversation().messages[report.first_message..]);
        let calls = scenario["generated_tokens"].as_array().map_or(0, Vec::len);
        if report.outcome != TurnOutcome::Final
            || messages != scenario["expected"]
            || report.generations.len() != calls
        {
            return Err(format!(
                "{name}: {:?}, {} generations\n got {messages}\nwant {}",
                report.outcome,
                report.generations.len(),
                scenario["expected"]
            ));
        }
        Ok(())
    });
}

/// `ossa run --backend openai-completions` (the CLI path users take) against `ossa serve`: the
/// agent renders locally, the server samples, and the transcripts come out exactly.
#[test]
fn ossa_run_with_the_remote_backend_reproduces_the_transcripts() {
    let server = Server::start(&[]);
    check_all(scenarios(), |scenario| {
        let name = scenario["name"].as_str().unwrap_or("?").to_string();
        let home = tempfile::tempdir().expect("temp home");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ossa"))
            .args(["run", "--backend", "openai-completions", "--url"])
            .arg(&server.base)
            .args(SCENARIO_FLAGS)
            .args(["--quiet", "--json"])
            .arg(scenario["user"].as_str().expect("user"))
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("OSSA_CONFIG")
            .env_remove("OPENAI_API_KEY")
            .output()
            .expect("ossa run starts");
        if !output.status.success() {
            return Err(format!(
                "{name}: exit {:?}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let transcript: Value = match serde_json::from_slice(&output.stdout) {
            Ok(value) => value,
            Err(e) => {
                return Err(format!("{name}: not JSON: {e}"));
            }
        };
        if transcript["messages"] != scenario["expected"] {
            return Err(format!(
                "{name}: got {}\nwant {}",
                transcript["messages"], scenario["expected"]
            ));
        }
        Ok(())
    });

    // A remote backend without a URL is refused with the fix.
    let err = support::ossa_refused(&["run", "--backend", "openai-completions", "hi"]);
    assert!(err.contains("--url"), "{err}");
}
