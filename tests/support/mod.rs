//! Shared by the root crate's integration tests (each includes it with `mod support;`): what
//! needs the root crate itself (its `ossa` binary, its server types). What every crate's tests
//! share (fixture paths, the scripted model, the sandbox, the pass/fail report of a conformance
//! loop) is in the `ossa-test-support` crate. Here: the tiny trained agent fixture, its
//! scenarios and the flags they were made with; `serve` starts `ossa serve` and talks to it;
//! `in_process` runs its server in the test process with a scripted backend; `scripted` serves
//! the scripted model over HTTP; `llama_stub` a llama.cpp `llama-server` look-alike for the
//! remote backend's tests.

#![allow(dead_code)]

pub mod in_process;
pub mod llama_stub;
pub mod scripted;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ossa::agent::harmony::{HarmonyEncoding, Message};
use ossa_test_support::scripted::{Script, sampled};

/// The client a test talks through (the `Some` of `$client`), or a return from the test when it
/// is missing: the helper that looked for it has said why (and in CI failed the test instead).
#[allow(unused_macros)]
macro_rules! or_skip {
    ($client:expr) => {
        match $client {
            Some(client) => client,
            None => return,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use or_skip;

// Each test binary uses some of what this module offers (as with `dead_code` above).
#[allow(unused_imports)]
pub use ossa_test_support::{assert_all_passed, check_all};
use serde_json::Value;

/// tests/fixtures/gpt-oss-tiny-agent: the model and its scenarios.
pub fn fixture_dir() -> PathBuf {
    ossa_test_support::fixtures().join("gpt-oss-tiny-agent")
}

/// The engine flags the scenarios need: f32, because a few of the tiny model's expert choices
/// are near-ties that bf16 rounding flips.
pub const ENGINE_FLAGS: [&str; 4] = ["--dtype", "f32", "--threads", "2"];

/// The conversation the scenarios were made with: their date, low reasoning, the python tool,
/// greedy sampling.
pub const SCENARIO_FLAGS: [&str; 7] = [
    "--date",
    "2026-01-01",
    "-r",
    "low",
    "--python",
    "--temperature",
    "0",
];

/// `ossa SUBCOMMAND` kept from the user's setup and from other tests: its config folder is a
/// fresh temporary home (returned, to keep it while the command runs), no `OSSA_CONFIG`, and a
/// prompt cache of its own, `prompt_cache` or else an empty one in that home, so that no run
/// reads another's (or the user's).
pub fn isolated_ossa(
    subcommand: &str,
    prompt_cache: Option<&Path>,
) -> (tempfile::TempDir, std::process::Command) {
    let home = tempfile::tempdir().expect("temp home");
    let prompt_cache =
        prompt_cache.map_or_else(|| home.path().join("prompt-cache"), Path::to_path_buf);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ossa"));
    command
        .arg(subcommand)
        .env("XDG_CONFIG_HOME", home.path())
        .env("OSSA_PROMPT_CACHE_DIR", prompt_cache)
        .env_remove("OSSA_CONFIG");
    (home, command)
}

/// `ossa run --quiet` on the tiny agent with the engine flags and `args`, its config and prompt
/// cache in `home` and no user config file: its output.
pub fn ossa_run_tiny(home: &Path, args: &[&str]) -> std::process::Output {
    let fixture = fixture_dir();
    std::process::Command::new(env!("CARGO_BIN_EXE_ossa"))
        .args([
            "run",
            "--quiet",
            "--model",
            fixture.to_str().expect("utf-8"),
        ])
        .args(ENGINE_FLAGS)
        .args(args)
        .env("XDG_CONFIG_HOME", home)
        .env("OSSA_PROMPT_CACHE_DIR", home.join("cache"))
        .env_remove("OSSA_CONFIG")
        .output()
        .expect("ossa runs")
}

/// What `ossa ARGS` wrote to stderr; it must fail.
pub fn ossa_refused(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ossa"))
        .args(args)
        .output()
        .expect("ossa starts");
    ossa_test_support::stderr_of_failure(&format!("ossa {args:?}"), &output)
}

/// The fixture's scenarios.
pub fn scenarios() -> Vec<Value> {
    scenarios_in(&fixture_dir())
}

/// The scenarios of a folder with a `scenarios.json` in the fixture's format.
pub fn scenarios_in(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("scenarios.json"))
        .unwrap_or_else(|e| panic!("reading {}/scenarios.json: {e}", dir.display()));
    serde_json::from_str(&text).expect("scenarios.json is a list")
}

/// The user messages of `scenarios`, as a JSON list.
pub fn users(scenarios: &[Value]) -> Value {
    scenarios
        .iter()
        .map(|s| s["user"].as_str().expect("user"))
        .collect::<Vec<_>>()
        .into()
}

/// The final answer of a scenario (its last expected message).
pub fn final_text(scenario: &Value) -> String {
    let last = scenario["expected"]
        .as_array()
        .and_then(|m| m.last())
        .expect("expected messages");
    assert_eq!(last["channel"], "final");
    last["content"][0]["text"]
        .as_str()
        .expect("text")
        .to_string()
}

/// [`check_all`] over the fixture's scenarios, each given with its id (for failure messages).
pub fn check_every_scenario(mut check: impl FnMut(&str, &Value) -> Result<(), String>) {
    check_all(scenarios(), |scenario| {
        let id = scenario["id"].as_str().unwrap_or("?").to_string();
        check(&id, &scenario)
    });
}

/// Hands every scenario's user message to a client (`client` gets them as a JSON list, see
/// [`users`], and returns its results in the scenarios' order) and checks what it got for each
/// scenario against what `expected` says the scenario wants; a failure names its scenario, with
/// both values.
pub fn check_per_scenario(
    client: impl FnOnce(&Value) -> Vec<Value>,
    mut expected: impl FnMut(&Value) -> Value,
) {
    let scenarios = scenarios();
    let results = client(&users(&scenarios));
    assert_eq!(results.len(), scenarios.len(), "one result per scenario");
    check_all(scenarios.iter().zip(results), |(scenario, got)| {
        let want = expected(scenario);
        if got == want {
            Ok(())
        } else {
            Err(format!("{}:\n got {got}\nwant {want}", scenario["id"]))
        }
    });
}

/// The analysis texts of a scenario (assistant messages without a recipient).
pub fn reasoning_texts(scenario: &Value) -> Vec<String> {
    scenario["expected"]
        .as_array()
        .expect("expected")
        .iter()
        .filter(|m| {
            m["role"] == "assistant" && m["channel"] == "analysis" && m.get("recipient").is_none()
        })
        .map(|m| m["content"][0]["text"].as_str().expect("text").to_string())
        .collect()
}

/// The python calls of a scenario: (code, output).
pub fn python_calls(scenario: &Value) -> Vec<(String, String)> {
    let messages = scenario["expected"].as_array().expect("expected");
    let mut calls = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m["recipient"] == "python" {
            let output = &messages[i + 1];
            assert_eq!(output["role"], "tool");
            calls.push((
                m["content"][0]["text"].as_str().expect("code").to_string(),
                output["content"][0]["text"]
                    .as_str()
                    .expect("output")
                    .to_string(),
            ));
        }
    }
    calls
}

/// The sandbox, opened once per test binary (see `ossa_test_support::sandbox`).
pub fn sandbox() -> ossa::sandbox::Sandbox {
    ossa_test_support::sandbox::sandbox().clone()
}

/// A scripted model behind an HTTP server on a free loopback port, until dropped: the common
/// part of the `scripted` server and the `llama_stub`, whose handlers share an `S` made around
/// the script.
pub struct ScriptedHttp<S> {
    pub script: Arc<Script>,
    pub encoding: HarmonyEncoding,
    /// `http://127.0.0.1:PORT`
    pub root: String,
    /// `http://127.0.0.1:PORT/v1`
    pub base: String,
    shared: Arc<S>,
    _runtime: tokio::runtime::Runtime,
}

impl<S: Send + Sync + 'static> ScriptedHttp<S> {
    /// Serves `routes` over the state `shared` makes of a fresh script.
    fn start_on_loopback(
        shared: impl FnOnce(Arc<Script>) -> S,
        routes: axum::Router<Arc<S>>,
    ) -> Self {
        let encoding = ossa_test_support::scripted::encoding().clone();
        let script = Arc::new(Script::default());
        let shared = Arc::new(shared(Arc::clone(&script)));
        let (address, runtime) = serve_on_loopback(routes.with_state(Arc::clone(&shared)));
        ScriptedHttp {
            script,
            encoding,
            root: format!("http://{address}"),
            base: format!("http://{address}/v1"),
            shared,
            _runtime: runtime,
        }
    }

    /// Scripts the model's next reply (harmony messages); returns its tokens.
    pub fn script(&self, messages: &[Message]) -> Vec<u32> {
        let tokens = sampled(&self.encoding, messages);
        self.script.push(tokens.clone());
        tokens
    }

    /// The prompts the model was given, decoded.
    pub fn prompt_texts(&self) -> Vec<String> {
        self.script
            .prompts()
            .iter()
            .map(|p| self.encoding.tokenizer().decode(p).expect("utf-8"))
            .collect()
    }
}

/// Serves `app` on a loopback port from a runtime of its own; the server stops when the
/// runtime is dropped.
pub fn serve_on_loopback(app: axum::Router) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address");
    runtime.spawn(async move { axum::serve(listener, app).await });
    (address, runtime)
}
