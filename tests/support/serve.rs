//! `ossa serve` on the tiny trained agent, and the clients the serve tests talk to it with:
//! curl, Server-Sent Events, and the official `openai` Python package.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use ossa_test_support::stdout_of_success;
use serde_json::Value;

use super::{ENGINE_FLAGS, SCENARIO_FLAGS, check_per_scenario, fixture_dir, or_skip};

/// What the server writes once its model is loaded: `MODEL listening on URL`.
const READY: &str = "listening on ";
/// What it writes once it has bound its port, before loading: `bound to URL; loading ...`.
const BOUND: &str = "bound to ";

/// `ossa serve` on a free loopback port, stopped when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    pub base: String,
    /// Every line the server wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
    _home: tempfile::TempDir,
    /// The folder of its response store, when it was given one of its own; removed after the
    /// server is stopped.
    store: Option<tempfile::TempDir>,
}

impl Server {
    /// Serves the tiny agent with python, greedy, as the scenarios were made.
    pub fn start(extra: &[&str]) -> Server {
        with_tiny_agent(extra, |args| Self::start_with(args, None))
    }

    /// Serves the tiny agent on the scenarios' date and reasoning effort, without python and
    /// with the server's default sampling (each request asks for its own).
    pub fn start_sampling() -> Server {
        let fixture = fixture_dir();
        let mut args = vec!["--model", fixture.to_str().expect("utf-8")];
        args.extend(ENGINE_FLAGS);
        args.extend(["--date", "2026-01-01", "-r", "low"]);
        Self::start_with(&args, None)
    }

    /// [`Server::start`] with a response store of its own (`--store-dir` in a temporary folder).
    pub fn start_storing(extra: &[&str]) -> Server {
        let store = tempfile::tempdir().expect("temp store");
        let mut server = Self::start_with_store(store.path(), extra);
        server.store = Some(store);
        server
    }

    /// [`Server::start`] with its response store in `store` (`--store-dir`).
    pub fn start_with_store(store: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--store-dir", store.to_str().expect("utf-8")];
        args.extend(extra);
        Self::start(&args)
    }

    /// [`Server::start`] for a test that talks to it with curl: `None` (the test is skipped)
    /// when curl is missing.
    pub fn start_for_curl(extra: &[&str]) -> Option<Server> {
        (!curl_missing()).then(|| Self::start(extra))
    }

    /// [`Server::start_storing`] for a test that talks to it with curl: `None` (the test is
    /// skipped) when curl is missing.
    pub fn start_storing_for_curl(extra: &[&str]) -> Option<Server> {
        (!curl_missing()).then(|| Self::start_storing(extra))
    }

    /// `ossa serve ARGS --port 0 --quiet`, with `config` (TOML) as its config file.
    pub fn start_with(args: &[&str], config: Option<&str>) -> Server {
        Self::start_with_env(args, config, &[])
    }

    /// [`Server::start_with`] with the prompt cache in `prompt_cache` (else a private empty
    /// one), so a restarted server can read what the one before it wrote.
    pub fn start_in(args: &[&str], config: Option<&str>, prompt_cache: Option<&Path>) -> Server {
        match Self::try_start_in(args, config, &[], prompt_cache) {
            Ok(server) => server,
            Err(early) => panic!("ossa serve did not start:\n{early}"),
        }
    }

    /// [`Server::start_with`] with `env` set for the server.
    pub fn start_with_env(args: &[&str], config: Option<&str>, env: &[(&str, &str)]) -> Server {
        match Self::try_start(args, config, env) {
            Ok(server) => server,
            Err(early) => panic!("ossa serve did not start:\n{early}"),
        }
    }

    /// Starts the server, or returns what it wrote before it exited without listening.
    /// What `ossa serve` with `args` said before it exited (it must not start).
    pub fn refused(args: &[&str]) -> String {
        match Self::try_start(args, None, &[]) {
            Ok(_) => panic!("ossa serve {args:?} started"),
            Err(early) => early,
        }
    }

    pub fn try_start(
        args: &[&str],
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        Self::try_start_in(args, config, env, None)
    }

    /// [`Server::start`] without `--quiet`: the server logs a line per request.
    pub fn start_logging(extra: &[&str]) -> Server {
        match with_tiny_agent(extra, |args| {
            Self::spawn_until(args, None, &[], None, false, READY)
        }) {
            Ok(server) => server,
            Err(early) => panic!("ossa serve did not start:\n{early}"),
        }
    }

    /// [`Server::try_start`] with the prompt cache in `prompt_cache` (else a private one).
    pub fn try_start_in(
        args: &[&str],
        config: Option<&str>,
        env: &[(&str, &str)],
        prompt_cache: Option<&Path>,
    ) -> Result<Server, String> {
        Self::spawn_until(args, config, env, prompt_cache, true, READY)
    }

    /// Serves the tiny agent with `extra` arguments and `env` set, returning as soon as the server has bound its
    /// port (its `bound to URL` line), before the model is loaded: with
    /// `OSSA_TEST_LOAD_GATE` in `env`, loading waits for that file.
    pub fn start_bound(extra: &[&str], env: &[(&str, &str)]) -> Server {
        match with_tiny_agent(extra, |args| {
            Self::spawn_until(args, None, env, None, true, BOUND)
        }) {
            Ok(server) => server,
            Err(early) => panic!("ossa serve did not bind:\n{early}"),
        }
    }

    /// Spawns the server and waits for the stderr line holding `marker` and its URL.
    fn spawn_until(
        args: &[&str],
        config: Option<&str>,
        env: &[(&str, &str)],
        prompt_cache: Option<&Path>,
        quiet: bool,
        marker: &'static str,
    ) -> Result<Server, String> {
        let (home, mut command) = super::isolated_ossa("serve", prompt_cache);
        command
            .args(args)
            .args(["--port", "0"])
            .args(quiet.then_some("--quiet"))
            .env_remove("OPENAI_API_KEY")
            .env_remove("OSSA_API_KEY")
            .envs(env.iter().copied());
        if let Some(config) = config {
            let path = home.path().join("test-config.toml");
            std::fs::write(&path, config).expect("config written");
            command.env("OSSA_CONFIG", path);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ossa serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_lines = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log_lines.lock().expect("log").push(line.clone());
                if !sent && let Some(rest) = line.split(marker).nth(1) {
                    let url = rest.split([';', ' ']).next().unwrap_or_default();
                    let _ = sender.send(Ok(url.to_string()));
                    sent = true;
                } else {
                    eprintln!("[ossa serve] {line}");
                    if !sent {
                        let _ = sender.send(Err(line));
                    }
                }
            }
        });
        let mut early = Vec::new();
        let base = loop {
            // Generous: the first run may fetch and compile the Python runtime.
            match receiver.recv_timeout(Duration::from_secs(1800)) {
                Ok(Ok(base)) => break base,
                Ok(Err(line)) => early.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(early.join("\n"));
                }
            }
        };
        Ok(Server {
            child,
            base,
            log,
            _home: home,
            store: None,
        })
    }

    /// Waits until the server writes a line holding `text` (a hang guard of `limit`, not a
    /// timing), and returns it.
    pub fn wait_for_line(&self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            assert!(
                start.elapsed() < limit,
                "no line with `{text}` in {limit:?}:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines the server wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the server exited, if it did within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's root (`http://127.0.0.1:PORT`).
    pub fn root(&self) -> &str {
        self.base.trim_end_matches("/v1")
    }
}

/// `f` of the arguments that serve the tiny agent as the scenarios were made (`--model`, the
/// engine and scenario flags), then `extra`.
fn with_tiny_agent<T>(extra: &[&str], f: impl FnOnce(&[&str]) -> T) -> T {
    let fixture = fixture_dir();
    let mut args = vec!["--model", fixture.to_str().expect("utf-8")];
    args.extend(ENGINE_FLAGS);
    args.extend(SCENARIO_FLAGS);
    args.extend(extra);
    f(&args)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Skips a real-client test whose client is missing, except in CI (`CI` set, as `.ci/run` is
/// run), where a missing client is a broken setup and the test fails instead of passing
/// without having checked anything.
fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set: the real-client tests must run)");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Whether `curl` is missing; says the test is skipped when it is.
pub fn curl_missing() -> bool {
    let installed = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        skip("curl is not installed");
    }
    !installed
}

/// `curl -sS ARGS`, which must run; returns (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let out = stdout_of_success("curl", &output);
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

/// `curl` a JSON body to `url`, unbuffered (streams come whole); returns (HTTP status, body).
pub fn curl_post(url: &str, body: &Value) -> (u16, String) {
    curl_post_raw(url, &body.to_string())
}

/// `curl` `body` to `url` as JSON, whatever it holds; returns (HTTP status, body).
pub fn curl_post_raw(url: &str, body: &str) -> (u16, String) {
    curl(&[
        "-N",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        url,
    ])
}

pub fn curl_get(url: &str) -> (u16, String) {
    curl(&[url])
}

/// The error body of a POST of `body` to `url` (curl), which must be refused with a 400 naming
/// `param`.
pub fn curl_refused(url: &str, body: &Value, param: &str) -> Value {
    let (status, text) = curl_post(url, body);
    assert_eq!(status, 400, "{body}: {text}");
    let error: Value = serde_json::from_str(&text).expect("JSON error");
    assert_eq!(error["error"]["param"], param, "{body}: {text}");
    error
}

/// The values of one field (`data:`, `event:`) of an SSE body, trimmed, in order.
fn sse_field<'a>(body: &'a str, field: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| l.strip_prefix(field))
        .map(str::trim)
        .collect()
}

/// The `data:` payloads of an SSE body, `[DONE]` excluded (and required last).
pub fn sse_data(body: &str) -> Vec<Value> {
    let data = sse_field(body, "data:");
    assert_eq!(
        data.last(),
        Some(&"[DONE]"),
        "stream must end with [DONE]:\n{body}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk not JSON ({e}): {d}")))
        .collect()
}

/// Python with the official `openai` package, installed with pip when missing; `None` (with
/// the reason printed) when it cannot be had.
pub fn python_with_openai() -> Option<&'static str> {
    let importable = || {
        Command::new("python3")
            .args(["-c", "import openai"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return Some("python3");
    }
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "openai"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && importable() {
        return Some("python3");
    }
    skip("the `openai` Python package is not importable and pip could not install it");
    None
}

/// What every `openai` client script starts with: `json`, `sys` and the `client` on the server's
/// base URL (`sys.argv[1]`), which does not retry (a retry would hide a failed request).
const SDK_PROLOGUE: &str = "import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=\"unused\", max_retries=0)
";
/// What every one ends with: the list of results it left in `out`, printed as JSON.
const SDK_EPILOGUE: &str = "\nprint(json.dumps(out))\n";

/// Runs an `openai` client `script` with `python` as `script BASE_URL INPUT_JSON`, between
/// [`SDK_PROLOGUE`] and [`SDK_EPILOGUE`]; it must succeed, leaving a list of results in `out`.
pub fn run_sdk_script(python: &str, script: &str, base: &str, input: &Value) -> Vec<Value> {
    let script = format!("{SDK_PROLOGUE}{script}{SDK_EPILOGUE}");
    let output = Command::new(python)
        .args(["-c", &script, base, &input.to_string()])
        .output()
        .expect("python runs");
    let printed = stdout_of_success("the SDK script", &output);
    serde_json::from_str(&printed).expect("the script prints JSON")
}

/// The `openai` Python SDK running `script` (see [`run_sdk_script`]) on every scenario against
/// the server `start` starts, each result checked by [`check_per_scenario`]; skipped without
/// the SDK.
pub fn check_python_sdk_per_scenario(
    script: &str,
    start: impl FnOnce() -> Server,
    expected: impl FnMut(&Value) -> Value,
) {
    let python = or_skip!(python_with_openai());
    let server = start();
    let client = |users: &Value| run_sdk_script(python, script, &server.base, users);
    check_per_scenario(client, expected);
}

/// The folder of the `openai` TypeScript SDK's test client (`tests/ts`), its pinned packages
/// installed with `npm ci` on first use; `None` (with the reason printed) when node or npm is
/// missing or the install fails. Installed once per test process.
pub fn node_with_openai() -> Option<&'static Path> {
    static READY: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let dir = ossa_test_support::workspace_root().join("tests/ts");
        let node = Command::new("node")
            .arg("--version")
            .output()
            .map_err(|e| format!("node is not installed ({e})"))?;
        if !node.status.success() {
            return Err("node --version failed".into());
        }
        if dir.join("node_modules/openai/package.json").is_file() {
            return Ok(dir);
        }
        // The lockfile's exact versions; no install scripts run.
        let installed = Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .status()
            .map_err(|e| format!("npm is not installed ({e})"))?;
        if !installed.success() || !dir.join("node_modules/openai/package.json").is_file() {
            return Err(format!("`npm ci` in {} failed", dir.display()));
        }
        Ok(dir)
    });
    match ready {
        Ok(dir) => Some(dir.as_path()),
        Err(reason) => {
            skip(&format!("the `openai` npm package cannot be had: {reason}"));
            None
        }
    }
}

/// Runs `tests/ts/sdk.mjs BASE MODE INPUT_JSON` (in `dir`, from [`node_with_openai`]); it must
/// succeed and print JSON.
pub fn run_ts_sdk(dir: &Path, base: &str, mode: &str, input: &Value) -> Value {
    let output = Command::new("node")
        .args(["sdk.mjs", base, mode, &input.to_string()])
        .current_dir(dir)
        .output()
        .expect("node runs");
    let printed = stdout_of_success("the TypeScript SDK client", &output);
    serde_json::from_str(&printed)
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}):\n{printed}"))
}

/// `<|return|>`'s token id, as `/v1/completions` reports it.
pub const RETURN: u64 = 200002;
/// `<|call|>`'s token id.
pub const CALL: u64 = 200012;

/// The token ids of a JSON array (`token_ids`, a prompt); empty when it is not one.
pub fn ids(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// The body of a POST of `body` (JSON) to `url`; an HTTP error fails the test with its body.
pub fn post_ok(url: &str, body: &Value) -> String {
    match ureq::post(url).send_json(body.clone()) {
        Ok(response) => response.into_string().expect("body"),
        Err(ureq::Error::Status(code, response)) => panic!(
            "HTTP {code} from {url}: {}",
            response.into_string().unwrap_or_default()
        ),
        Err(e) => panic!("{e}"),
    }
}

/// The status and JSON body of a POST of `body` (JSON) to `url`, errors included.
pub fn post_status(url: &str, body: &Value) -> (u16, Value) {
    let (status, text) = match ureq::post(url).send_json(body.clone()) {
        Ok(response) => (response.status(), response.into_string().expect("body")),
        Err(ureq::Error::Status(code, response)) => {
            (code, response.into_string().unwrap_or_default())
        }
        Err(e) => panic!("{e}"),
    };
    (status, serde_json::from_str(&text).expect("JSON"))
}

/// The events of a Responses stream: each `data:` payload, checked to have an `event:` line
/// naming its `type`.
pub fn response_events(body: &str) -> Vec<Value> {
    let names = sse_field(body, "event:");
    let events: Vec<Value> = sse_field(body, "data:")
        .into_iter()
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    assert_eq!(names.len(), events.len(), "{body}");
    for (event, name) in events.iter().zip(&names) {
        assert_eq!(event["type"].as_str(), Some(*name), "{event}");
    }
    events
}
