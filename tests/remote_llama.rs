//! `--backend openai-completions` on llama.cpp's `llama-server`: the tiny agent's scenarios come
//! out exactly, with the server's own figures, and a server that cannot be driven exactly is
//! refused at start with what to change.
//!
//! Two kinds of test:
//! - against `support::llama_stub`, a llama-server look-alike made from the real server's
//!   observed requests and answers (always run; fast);
//! - against the real `llama-server` serving the tiny agent converted to GGUF, when the binary
//!   is there (`OSSA_LLAMA_SERVER`, else where `scripts/llama-cpp` builds it); the model is
//!   converted on first need (see [`RealServer::paths`]). Without the binary (CI: building it
//!   takes about an hour on 2 cores) the `real_*` tests say SKIPPED and pass;
//!   `scripts/llama-cpp/llama_server_scenarios.sh` builds it and runs these tests.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ossa::agent::remote::{RemoteBackend, RemoteKind, RemoteOptions};
use ossa::agent::{Backend, Finish, GenerationRequest, GenerationStats};
use ossa::engine::tokenizer::{AllowedSpecial, Tokenizer};
use ossa::engine::{CancellationToken, SamplingParams};
use serde_json::{Value, json};
use support::llama_stub::{DECODE_MS_PER_TOKEN, LlamaStub, MODEL, PROMPT_MS_PER_TOKEN, StubSetup};
use support::serve::{Server, curl_missing, curl_post, sse_data};
use support::{
    SCENARIO_FLAGS, check_all, check_every_scenario, final_text, python_calls, reasoning_texts,
    scenarios,
};

const RETURN: u32 = 200_002;
const END: u32 = 200_007;
const CALL: u32 = 200_012;

/// The remote backend over `stub`, without an API key.
fn connect(stub: &LlamaStub) -> RemoteBackend {
    let options = RemoteOptions {
        api_key: None,
        ..RemoteOptions::new(stub.base.clone())
    };
    RemoteBackend::connect(&options, stub.encoding.tokenizer().clone()).expect("connects")
}

/// At most 100 tokens after `prompt` (harmony text), stopping at `stop_tokens`: the ids handed
/// on, and how the generation ended.
fn generate(
    backend: &RemoteBackend,
    tokenizer: &Tokenizer,
    prompt: &str,
    stop_tokens: &[u32],
) -> (Vec<u32>, GenerationStats) {
    let prompt = tokenizer
        .encode(prompt, AllowedSpecial::All)
        .expect("encodes");
    let mut got = Vec::new();
    let stats = backend
        .generate(
            &GenerationRequest {
                prompt: &prompt,
                max_tokens: 100,
                stop_tokens,
                sampling: SamplingParams::default(),
                cancel: CancellationToken::new(),
                mask: None,
                logprobs: None,
            },
            &mut |id| got.push(id),
        )
        .expect("generates");
    (got, stats)
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect()
        })
        .unwrap_or_default()
}

/// Each generation call's tokens in a scenario.
fn replies(scenario: &Value) -> Vec<Vec<u32>> {
    scenario["generated_tokens"]
        .as_array()
        .expect("generated_tokens")
        .iter()
        .map(ids)
        .collect()
}

/// `ossa run --backend openai-completions --url URL` with the scenarios' settings, `--json`.
fn ossa_run(url: &str, extra: &[&str], task: &str) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    Command::new(env!("CARGO_BIN_EXE_ossa"))
        .args(["run", "--backend", "openai-completions", "--url", url])
        .args(SCENARIO_FLAGS)
        .args(extra)
        .args(["--quiet", "--json", task])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("OSSA_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("ossa run starts")
}

/// Runs every scenario through `ossa run` against `url`; `before` scripts a stub (or does
/// nothing for a real server). Returns each scenario's `--json` transcript.
fn run_scenarios(url: &str, extra: &[&str], mut before: impl FnMut(&Value)) -> Vec<Value> {
    let mut transcripts = Vec::new();
    check_every_scenario(|name, scenario| {
        before(scenario);
        let output = ossa_run(url, extra, scenario["user"].as_str().expect("user"));
        if !output.status.success() {
            return Err(format!(
                "{name}: exit {:?}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let transcript: Value =
            serde_json::from_slice(&output.stdout).map_err(|e| format!("{name}: not JSON: {e}"))?;
        if transcript["messages"] != scenario["expected"] {
            return Err(format!(
                "{name}: got {}\nwant {}",
                transcript["messages"], scenario["expected"]
            ));
        }
        transcripts.push(transcript);
        Ok(())
    });
    transcripts
}

/// The refusal `ossa run` gives at start (exit status, stderr), with nothing generated.
fn refusal(url: &str, extra: &[&str]) -> String {
    let output = ossa_run(url, extra, "Say hello in one word.");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing answered: {stderr}");
    stderr
}

#[test]
fn llama_server_stub_gives_every_scenario_with_the_servers_figures() {
    let stub = LlamaStub::start(StubSetup::default());
    let transcripts = run_scenarios(&stub.base, &[], |scenario| {
        for reply in replies(scenario) {
            stub.script.push(reply);
        }
    });
    assert_eq!(stub.script.replies_left(), 0);

    // The requests: the vocabulary checked, then per generation the native endpoint with the
    // prompt as ids and the server's defaults overridden.
    let requests = stub.requests();
    assert_eq!(requests[0].0, "/tokenize", "{requests:?}");
    let generations = stub.generations();
    let scenario_prompts: Vec<Vec<u32>> = scenarios()
        .iter()
        .map(|s| ids(&s["prompt_tokens"]))
        .collect();
    for body in &generations {
        assert_eq!(body["stream"], true);
        assert_eq!(body["ignore_eos"], false, "{body}");
        assert_eq!(body["samplers"], json!(["temperature", "top_k", "top_p"]));
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["stop"], json!(["\u{0}"]));
        assert_eq!(body["cache_prompt"], true);
    }
    for prompt in &scenario_prompts {
        assert!(
            generations.iter().any(|b| ids(&b["prompt"]) == *prompt),
            "a scenario's first prompt goes out as its exact ids"
        );
    }
    // Each start's test generation is biased to <|return|>; everything else clears biases.
    let probes = generations
        .iter()
        .filter(|b| b["logit_bias"] == json!([[RETURN, 100.0]]))
        .count();
    assert_eq!(probes, scenarios().len());
    assert_eq!(
        generations.len(),
        probes + scenarios().iter().map(|s| replies(s).len()).sum::<usize>()
    );

    // The figures are the server's: its prompt time, its decode time, its cache.
    for (scenario, transcript) in scenarios().iter().zip(&transcripts) {
        let model_name = model_of(transcript);
        ossa_test_support::assert_contains_all(model_name, &[MODEL, "llama-server"]);
        let generations = transcript["timings"]["generations"]
            .as_array()
            .expect("generations");
        let replies = replies(scenario);
        assert_eq!(generations.len(), replies.len());
        for (i, (g, reply)) in generations.iter().zip(&replies).enumerate() {
            let n = reply.len();
            assert_eq!(g["generated_tokens"], json!(n), "{g}");
            let computed = g["prompt_tokens"].as_u64().expect("prompt") as f64
                - g["reused_tokens"].as_u64().expect("reused") as f64;
            let prefill = g["prefill_s"].as_f64().expect("prefill");
            let decode = g["decode_s"].as_f64().expect("decode");
            assert!(
                (prefill - computed * PROMPT_MS_PER_TOKEN / 1000.0).abs() < 1e-9,
                "{g}"
            );
            assert!(
                (decode - (n - 1) as f64 * DECODE_MS_PER_TOKEN / 1000.0).abs() < 1e-9,
                "{g}"
            );
            let speed = g["decode_tokens_per_s"].as_f64().expect("speed");
            assert!((speed - 1000.0 / DECODE_MS_PER_TOKEN).abs() < 1e-6, "{g}");
            if i > 0 {
                // The conversation so far is in the server's cache.
                assert!(g["reused_tokens"].as_u64() > Some(0), "{g}");
            }
        }
    }
}

#[test]
fn tokens_the_stream_leaves_out_mid_character_are_recovered() {
    let stub = LlamaStub::start(StubSetup::default());
    let encoding = stub.encoding.clone();
    let tokenizer = encoding.tokenizer().clone();
    let byte = |b: u8| {
        (0..tokenizer.vocab_size() as u32)
            .find(|&id| tokenizer.token_bytes(id) == Some(&[b][..]))
            .expect("a byte token")
    };
    let crab_pair = tokenizer.encode_ordinary("🦀").expect("encodes");
    assert_eq!(crab_pair.len(), 3, "🦀 is 0xF0 0x9F | 0xA6 | 0x80 in o200k");
    let header = tokenizer
        .encode("<|channel|>final<|message|>", AllowedSpecial::All)
        .expect("encodes");
    let ok = tokenizer.encode_ordinary(" ok é").expect("encodes");
    // Written byte by byte (what llama-server was seen to stream for a grammar of "🦀"), and in
    // o200k's own split.
    let bytewise: Vec<u32> = [0xF0, 0x9F, 0xA6, 0x80].into_iter().map(byte).collect();
    let backend = connect(&stub);
    assert_eq!(backend.kind(), RemoteKind::LlamaServer);
    for crab in [bytewise, crab_pair] {
        let reply: Vec<u32> = header
            .iter()
            .chain(&crab)
            .chain(&ok)
            .chain(&crab)
            .chain(&[RETURN])
            .copied()
            .collect();
        stub.script.push(reply.clone());
        let (got, stats) = generate(
            &backend,
            &tokenizer,
            "<|start|>user<|message|>A crab?<|end|><|start|>assistant",
            &[RETURN, CALL],
        );
        assert_eq!(got, reply, "every id, the left-out ones included");
        assert_eq!(stats.finish, Finish::Stop(RETURN));
        assert_eq!(stats.generated_tokens, reply.len());
        assert_eq!(
            tokenizer
                .decode(&got[header.len()..got.len() - 1])
                .expect("UTF-8"),
            "🦀 ok é🦀"
        );
    }
    // The stub did leave them out: fewer chunks than tokens.
    assert_eq!(stub.script.replies_left(), 0);
}

/// A stop token llama-server does not end on (`<|end|>`, which ends a message whose header
/// ossa wrote for the model) ends the generation here, with nothing after it handed on.
#[test]
fn a_stop_token_the_server_runs_past_ends_the_generation_here() {
    let stub = LlamaStub::start(StubSetup::default());
    let tokenizer = stub.encoding.tokenizer().clone();
    let backend = connect(&stub);
    let arguments = tokenizer
        .encode_ordinary("{\"city\": \"Oslo\"}")
        .expect("encodes");
    let after = tokenizer
        .encode(
            "<|start|>assistant<|channel|>final<|message|>Hi<|return|>",
            AllowedSpecial::All,
        )
        .expect("encodes");
    let reply: Vec<u32> = arguments
        .iter()
        .chain(&[END])
        .chain(&after)
        .copied()
        .collect();
    stub.script.push(reply);
    let (got, stats) = generate(
        &backend,
        &tokenizer,
        "<|start|>user<|message|>Weather?<|end|><|start|>assistant<|channel|>commentary \
         to=functions.get_weather <|constrain|>json<|message|>",
        &[RETURN, END, CALL],
    );
    let want: Vec<u32> = arguments.iter().chain(&[END]).copied().collect();
    assert_eq!(got, want);
    assert_eq!(stats.finish, Finish::Stop(END));
}

#[test]
fn settings_of_the_server_that_break_stops_are_overridden() {
    // Started with --ignore-eos (−∞ on <|return|> and <|call|>) and -r "compute" (a stop
    // string the scenarios' reasoning holds).
    let setup = StubSetup {
        ignore_eos: true,
        reverse_prompt: Some("compute".into()),
        ..StubSetup::default()
    };
    let stub = LlamaStub::start(setup.clone());
    // The stub does break a request that keeps the server's defaults: no stop, cut text.
    let scenario = &scenarios()[1];
    let reply = replies(scenario)[0].clone();
    stub.script.push(reply.clone());
    let (status, body) = curl_post(
        &format!("{}/completion", stub.root),
        &json!({"prompt": ids(&scenario["prompt_tokens"]), "n_predict": reply.len() + 10,
                "stream": true}),
    );
    assert_eq!(status, 200, "{body}");
    // The native stream has no [DONE]: its last event is the final chunk.
    let last: Value = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .and_then(|d| serde_json::from_str(d).ok())
        .expect("a final chunk");
    assert_eq!(last["stop"], true, "{last}");
    assert_ne!(last["stop_type"], "eos", "{last}");

    let stub = LlamaStub::start(setup);
    run_scenarios(&stub.base, &[], |scenario| {
        for reply in replies(scenario) {
            stub.script.push(reply);
        }
    });
}

#[test]
fn the_generic_dialect_reads_special_tokens_from_the_text() {
    let stub = LlamaStub::start(StubSetup {
        special: true,
        ..StubSetup::default()
    });
    let transcripts = run_scenarios(&stub.base, &["--remote-kind", "generic"], |scenario| {
        for reply in replies(scenario) {
            stub.script.push(reply);
        }
    });
    for transcript in &transcripts {
        let model_name = model_of(transcript);
        assert!(model_name.ends_with("(generic)"), "{model_name}");
        // llama.cpp's timings are read here too; the count is the server's.
        for g in transcript["timings"]["generations"]
            .as_array()
            .expect("generations")
        {
            let n = g["generated_tokens"].as_u64().expect("n") as f64;
            let decode = g["decode_s"].as_f64().expect("decode");
            assert!(
                (decode - (n - 1.0) * DECODE_MS_PER_TOKEN / 1000.0).abs() < 1e-9,
                "{g}"
            );
        }
    }
    let generations = stub.generations();
    assert!(
        generations.iter().all(|b| b.get("ignore_eos").is_none()),
        "{generations:?}"
    );
    assert!(
        generations
            .iter()
            .all(|b| b.get("return_token_ids").is_none() && b.get("top_k").is_none())
    );
}

#[test]
fn servers_that_cannot_be_driven_exactly_are_refused_at_start() {
    let cases: [(StubSetup, &[&str], &[&str]); 5] = [
        (
            StubSetup {
                foreign_vocabulary: true,
                ..StubSetup::default()
            },
            &[],
            &[
                "does not tokenize harmony text as gpt-oss does",
                "gpt-oss GGUF",
            ],
        ),
        (
            StubSetup {
                no_token_ids: true,
                ..StubSetup::default()
            },
            &[],
            &["streams `tokens`", "0c1e570"],
        ),
        // Without --special llama-server's text has no <|call|>: the generic dialect cannot work.
        (
            StubSetup::default(),
            &["--remote-kind", "generic"],
            &[
                "leave out harmony's special tokens",
                "--special",
                "--remote-kind llama-server",
            ],
        ),
        (
            StubSetup::default(),
            &["--seed", "4294967295"],
            &["32-bit", "4294967295"],
        ),
        // `-c 4096 -np 4`: 1024 tokens a slot, too few for the conversation's start and a turn.
        (
            StubSetup {
                n_ctx: 1024,
                ..StubSetup::default()
            },
            &[],
            &["its context holds 1024 tokens", "-c 2048", "-np 1"],
        ),
    ];
    for (setup, flags, words) in cases {
        let stub = LlamaStub::start(setup.clone());
        stub.script.push(vec![RETURN]);
        let stderr = refusal(&stub.base, flags);
        for word in words {
            assert!(stderr.contains(word), "{setup:?} {flags:?}: {stderr}");
        }
        assert_eq!(stub.script.replies_left(), 1, "nothing generated: {stderr}");
    }
    // --remote-kind belongs to the remote backend.
    let stderr = support::ossa_refused(&["run", "--remote-kind", "vllm", "hi"]);
    assert!(stderr.contains("--backend openai-completions"), "{stderr}");
    let stderr = support::ossa_refused(&[
        "run",
        "--backend",
        "openai-completions",
        "--url",
        "http://127.0.0.1:9/v1",
        "--remote-kind",
        "tgi",
        "hi",
    ]);
    assert!(stderr.contains("vllm, llama-server, generic"), "{stderr}");
}

/// What `ossa serve` answers for a scenario's user message in Chat Completions, checked
/// against the scenario (non-streamed and streamed).
fn check_chat(base: &str, scenario: &Value) -> Result<(), String> {
    let name = scenario["id"].as_str().unwrap_or("?");
    let user = scenario["user"].as_str().expect("user");
    let url = format!("{base}/chat/completions");
    let body = |stream: bool| {
        json!({"messages": [{"role": "user", "content": user}], "temperature": 0,
               "stream": stream})
    };
    let (status, text) = curl_post(&url, &body(false));
    let response: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = &response["choices"][0]["message"];
    let calls: Vec<(String, String)> = message["server_tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["input"].as_str().unwrap_or_default().to_string(),
                c["output"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if status != 200
        || message["content"] != json!(final_text(scenario))
        || message["reasoning_content"] != json!(reasoning_texts(scenario).join("\n\n"))
        || calls != python_calls(scenario)
    {
        return Err(format!("{name}: HTTP {status}: {text}"));
    }
    let (status, text) = curl_post(&url, &body(true));
    let content: String = sse_data(&text)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    if status != 200 || content != final_text(scenario) {
        return Err(format!("{name} (stream): HTTP {status}: {content:?}"));
    }
    Ok(())
}

/// The model a transcript names.
fn model_of(transcript: &Value) -> &str {
    transcript["model"]
        .as_str()
        .unwrap_or_else(|| panic!("a transcript without its model: {transcript}"))
}

/// `ossa serve` over the llama-server at `url` (`--backend openai-completions`), with the
/// scenarios' flags.
fn serve_over(url: &str) -> Server {
    let mut args = vec!["--backend", "openai-completions", "--url", url];
    args.extend(SCENARIO_FLAGS);
    Server::start_with(&args, None)
}

/// `ossa serve --backend openai-completions` over llama-server: the server's clients get the
/// scenarios' answers, python run on the ossa side.
#[test]
fn ossa_serve_over_the_llama_server_stub_answers_every_scenario() {
    if curl_missing() {
        return;
    }
    let stub = LlamaStub::start(StubSetup::default());
    let server = serve_over(&stub.base);
    check_all(scenarios(), |scenario| {
        // Twice: non-streamed and streamed.
        for _ in 0..2 {
            for reply in replies(&scenario) {
                stub.script.push(reply);
            }
        }
        check_chat(&server.base, &scenario)
    });
    assert_eq!(stub.script.replies_left(), 0);
}

/// The real llama-server, when `OSSA_LLAMA_SERVER` and `OSSA_LLAMA_GGUF` are set.
struct RealServer {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    base: String,
    _log: tempfile::NamedTempFile,
}

impl RealServer {
    /// The binary and the model, or `None` (the tests say SKIPPED) when there is no
    /// llama-server: `OSSA_LLAMA_SERVER`, else the one `scripts/llama-cpp` builds
    /// (`~/.cache/ossa/llama.cpp-build/bin/llama-server`). The model is `OSSA_LLAMA_GGUF`, else
    /// the tiny agent converted by `llama_server_scenarios.sh --convert-only` (again when the
    /// fixture or the converter is newer than the file).
    fn paths() -> Option<(PathBuf, PathBuf)> {
        let cache = std::env::var_os("OSSA_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ossa")))
            .unwrap_or_default();
        let server = std::env::var_os("OSSA_LLAMA_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("llama.cpp-build/bin/llama-server"));
        if !server.is_file() {
            eprintln!(
                "SKIPPED: no llama-server at {} (set OSSA_LLAMA_SERVER). Building it takes about \
                 an hour on 2 cores, more than CI affords: scripts/llama-cpp/llama_server_scenarios.sh \
                 builds it, converts the tiny agent and runs these tests against it.",
                server.display()
            );
            return None;
        }
        if let Some(gguf) = std::env::var_os("OSSA_LLAMA_GGUF") {
            return Some((server, gguf.into()));
        }
        // Converted once per test run (the tests run in parallel).
        static CONVERTED: OnceLock<PathBuf> = OnceLock::new();
        let gguf = CONVERTED.get_or_init(|| {
            let gguf = cache.join("gpt-oss-tiny-agent.gguf");
            let script = ossa_test_support::workspace_root()
                .join("scripts/llama-cpp/llama_server_scenarios.sh");
            let status = Command::new("bash")
                .arg(&script)
                .arg("--convert-only")
                .env("GGUF", &gguf)
                .status()
                .expect("bash runs");
            assert!(
                status.success(),
                "{} --convert-only failed ({status})",
                script.display()
            );
            gguf
        });
        Some((server, gguf.clone()))
    }

    /// `llama-server -m GGUF` on a free loopback port with `flags`, once it answers.
    fn start(server: &PathBuf, gguf: &PathBuf, flags: &[&str]) -> RealServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        // One thread: on a busy machine llama.cpp's spinning thread pool is much slower with two.
        let child = Command::new(server)
            .arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "8192", "-np", "1", "-t", "1"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("llama-server starts");
        let mut server = RealServer {
            child,
            base: format!("http://127.0.0.1:{port}/v1"),
            _log: log,
        };
        let health = format!("http://127.0.0.1:{port}/health");
        let started = Instant::now();
        loop {
            if ureq::get(&health).call().is_ok() {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "llama-server exited ({status}):\n{}",
                    std::fs::read_to_string(server._log.path()).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "llama-server did not load the model"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_llama_server_gives_every_scenario_through_ossa_run() {
    let Some((binary, gguf)) = RealServer::paths() else {
        return;
    };
    let server = RealServer::start(&binary, &gguf, &[]);
    let transcripts = run_scenarios(&server.base, &[], |_| {});
    for transcript in &transcripts {
        let model_name = model_of(transcript);
        assert!(model_name.ends_with("(llama-server)"), "{model_name}");
        let generations = transcript["timings"]["generations"]
            .as_array()
            .expect("generations");
        for (i, g) in generations.iter().enumerate() {
            println!("{g}");
            let n = g["generated_tokens"].as_f64().expect("n");
            let decode = g["decode_s"].as_f64().expect("decode");
            let speed = g["decode_tokens_per_s"].as_f64().expect("speed");
            // The server's own decode time: a speed that follows from it, not from how fast
            // the chunks crossed loopback.
            assert!(
                decode > 0.0 && ((n - 1.0) / decode - speed).abs() < 1e-6,
                "{g}"
            );
            if i > 0 {
                assert!(g["reused_tokens"].as_u64() > Some(0), "{g}");
            }
        }
    }
}

#[test]
fn real_llama_server_behind_ossa_serve_answers_every_scenario() {
    let Some((binary, gguf)) = RealServer::paths() else {
        return;
    };
    if curl_missing() {
        return;
    }
    let llama = RealServer::start(&binary, &gguf, &[]);
    let server = serve_over(&llama.base);
    check_all(scenarios(), |scenario| check_chat(&server.base, &scenario));

    // A named tool_choice: ossa writes the call's header, the model writes the arguments and
    // ends them with <|call|> or <|end|> (not a stop llama-server knows), or runs out of tokens.
    let user = scenarios()[0]["user"].as_str().expect("user").to_string();
    let function = json!({"name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let (status, body) = curl_post(
        &format!("{}/chat/completions", server.base),
        &json!({"messages": [{"role": "user", "content": user}],
                "tools": [{"type": "function", "function": function}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "max_tokens": 48}),
    );
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).expect("JSON");
    let choice = &response["choices"][0];
    println!("named tool_choice: {choice}");
    match choice["finish_reason"].as_str() {
        Some("tool_calls") => assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["name"], "get_weather",
            "{body}"
        ),
        Some("length") => {}
        other => panic!("finish {other:?}: {body}"),
    }
}

#[test]
fn real_llama_server_misconfigured_or_text_only() {
    let Some((binary, gguf)) = RealServer::paths() else {
        return;
    };
    // --ignore-eos and a stop string the scenarios' reasoning holds: overridden per request.
    let server = RealServer::start(&binary, &gguf, &["--ignore-eos", "-r", "compute"]);
    run_scenarios(&server.base, &[], |_| {});
    // The generic dialect reads llama-server's text, which holds <|call|> only with --special.
    let stderr = refusal(&server.base, &["--remote-kind", "generic"]);
    assert!(stderr.contains("--special"), "{stderr}");
    drop(server);
    let server = RealServer::start(&binary, &gguf, &["--special"]);
    run_scenarios(&server.base, &["--remote-kind", "generic"], |_| {});
    // Its seeds are 32-bit.
    let stderr = refusal(&server.base, &["--seed", "4294967296"]);
    assert!(stderr.contains("32-bit"), "{stderr}");
    drop(server);
    // Four slots of 1024 tokens: too few for the conversation's start and a turn.
    let server = RealServer::start(
        &binary,
        &gguf,
        &["-c", "4096", "-np", "4", "--no-kv-unified"],
    );
    let stderr = refusal(&server.base, &[]);
    ossa_test_support::assert_contains_all(&stderr, &["its context holds 1024 tokens", "-np 1"]);
}

/// The context is the slot's (`-c` over `-np`), not gpt-oss's 131072: a turn is limited by
/// what the server can hold, and says so.
#[test]
fn the_context_length_is_the_servers_slot_context() {
    let stub = LlamaStub::start(StubSetup {
        n_ctx: 3000,
        ..StubSetup::default()
    });
    let backend = connect(&stub);
    assert_eq!(backend.context_length(), 3000);
    // The start's test generation consumed no scripted reply.
    assert_eq!(stub.script.replies_left(), 0);
    assert_eq!(stub.generations().len(), 1);
}
