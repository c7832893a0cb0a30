//! `ossa serve` binds its port before it loads the model: a port in use is reported at once,
//! once, and while the model loads `/health` answers 503 `loading` and the API 503 with
//! `Retry-After`; a model that fails to load is reported once and the server exits non-zero.
//! Loading is held open by `OSSA_TEST_LOAD_GATE` (it waits for a file), so nothing is timed.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::serve::Server;
use support::{ENGINE_FLAGS, final_text, scenarios};

/// A hang guard, never a timing: each wait normally ends in well under a second.
const HANG: Duration = Duration::from_secs(600);

/// (status, Retry-After, JSON body) of a request.
fn request(method: &str, url: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
    let request = ureq::request(method, url);
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let retry = response.header("retry-after").map(str::to_string);
    let text = response.into_string().expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, retry, body)
}

/// The file `OSSA_TEST_LOAD_GATE` names: the server's model loads once it exists.
struct Gate(tempfile::TempDir);

impl Gate {
    fn path(&self) -> std::path::PathBuf {
        self.0.path().join("load")
    }

    /// Lets the model load.
    fn open(&self) {
        std::fs::write(self.path(), b"").expect("gate opened");
    }
}

/// `ossa serve` with `extra`, returned once bound; its model loads when the gate is opened.
fn start_gated(extra: &[&str]) -> (Server, Gate) {
    let gate = Gate(tempfile::tempdir().expect("temp"));
    let path = gate.path();
    let server = Server::start_bound(
        extra,
        &[("OSSA_TEST_LOAD_GATE", path.to_str().expect("utf-8"))],
    );
    (server, gate)
}

#[test]
fn health_says_loading_and_the_api_asks_to_retry_until_the_model_is_ready() {
    let (server, gate) = start_gated(&[]);
    let root = server.root().to_string();

    let (status, retry, health) = request("GET", &format!("{root}/health"), None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "loading", "{health}");
    assert_eq!(health["error"]["code"], "model_loading", "{health}");
    assert_eq!(retry.as_deref(), Some("5"));
    let user = scenarios()[0]["user"].clone();
    let calls = [
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"messages": [{"role": "user", "content": user}]})),
        ),
        ("POST", "/v1/responses", Some(json!({"input": user}))),
        ("POST", "/v1/completions", Some(json!({"prompt": "hi"}))),
        ("GET", "/v1/models", None),
    ];
    for (method, path, body) in calls.clone() {
        let (status, retry, error) = request(method, &format!("{root}{path}"), body);
        assert_eq!(status, 503, "{method} {path}: {error}");
        assert_eq!(retry.as_deref(), Some("5"), "{method} {path}");
        assert_eq!(error["error"]["type"], "server_error", "{error}");
        assert_eq!(error["error"]["code"], "model_loading", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("loading"))
        );
    }
    assert!(
        !server.log().iter().any(|l| l.contains("listening on")),
        "not ready before the gate opens: {:?}",
        server.log()
    );

    gate.open();
    let ready = server.wait_for_line("listening on", HANG);
    assert!(ready.contains(&server.base), "{ready}");
    let (status, _, health) = request("GET", &format!("{root}/health"), None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let (status, _, response) = request(
        "POST",
        &format!("{root}/v1/chat/completions"),
        calls[0].2.clone(),
    );
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        response["choices"][0]["message"]["content"],
        final_text(&scenarios()[0])
    );
}

/// `ossa serve ARGS` run to its end: (exit status, stderr lines).
fn run_serve(args: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let home = tempfile::tempdir().expect("temp home");
    let output = Command::new(env!("CARGO_BIN_EXE_ossa"))
        .arg("serve")
        .args(args)
        .arg("--quiet")
        .env("XDG_CONFIG_HOME", home.path())
        .env("OSSA_DATA_DIR", home.path())
        // Nothing is fetched: a model name would fail offline rather than download.
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("OSSA_CONFIG")
        .env_remove("OSSA_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("ossa serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status, stderr.lines().map(str::to_string).collect())
}

/// The port is taken: the server says so once and exits, before it looks at the model (which
/// here does not exist, so loading first would have failed with another error).
#[test]
fn a_port_in_use_is_reported_once_before_the_model_is_loaded() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("address").port().to_string();
    let missing = tempfile::tempdir().expect("temp");
    let model = missing.path().join("no-such-model");
    let (status, lines) = run_serve(&["--port", &port, "--model", model.to_str().expect("utf-8")]);
    assert!(!status.success(), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line, the error: {lines:?}");
    let line = &lines[0];
    assert!(
        line.starts_with(&format!("error: cannot listen on 127.0.0.1:{port}: ")),
        "{line}"
    );
    assert_eq!(line.matches("in use").count(), 1, "the cause once: {line}");
    drop(taken);
}

/// A model that cannot load: the server had bound its port (and said so), then reports the
/// failure once and exits non-zero.
#[test]
fn a_model_that_fails_to_load_is_reported_once_and_the_server_exits() {
    let empty = tempfile::tempdir().expect("temp");
    let mut args = vec![
        "--port",
        "0",
        "--model",
        empty.path().to_str().expect("utf-8"),
    ];
    args.extend(ENGINE_FLAGS);
    let (status, lines) = run_serve(&args);
    assert!(!status.success(), "{lines:?}");
    let bound = lines
        .iter()
        .position(|l| l.contains("bound to http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("bound first: {lines:?}"));
    let errors: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error: {lines:?}");
    assert!(errors[0] > bound, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("listening on")),
        "{lines:?}"
    );
}

/// Ctrl-C while the model loads stops the server at once, with a success status.
#[test]
fn an_interrupt_while_loading_stops_the_server() {
    let (mut server, _gate) = start_gated(&[]);
    let (status, _, health) = request("GET", &format!("{}/health", server.root()), None);
    assert_eq!(status, 503, "{health}");
    // SAFETY: a signal to the child process this test started.
    let sent = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0, "SIGINT sent");
    let exit = server.wait_exit(HANG).expect("the server exits");
    assert!(exit.success(), "{exit:?}: {:?}", server.log());
    assert!(
        !server.log().iter().any(|l| l.starts_with("error:")),
        "{:?}",
        server.log()
    );
}

/// The connection cap holds while the model loads: connections past it are refused with a 503
/// of their own, and the server goes on answering once they are gone.
#[test]
fn the_connection_cap_holds_while_loading() {
    use std::io::{Read, Write};
    let (server, _gate) = start_gated(&["--max-connections", "2"]);
    let address = server.root().trim_start_matches("http://").to_string();
    // Two idle connections take the two places.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
        .collect();
    let answer = |stream: &mut std::net::TcpStream| {
        stream
            .write_all(
                format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .expect("send");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    // The held connections are accepted before the next one, in order; the next is refused.
    let mut extra = std::net::TcpStream::connect(&address).expect("connect");
    let refused = answer(&mut extra);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    drop(held);
    // Its place back, a client gets the loading answer again (the freed places are noticed
    // once the server reads the closed connections: a refusal meanwhile is retried).
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        let text = answer(&mut stream);
        if text.contains("model_loading") {
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            assert!(text.contains("\"status\":\"loading\""), "{text}");
            break;
        }
        assert!(text.contains("too_many_connections"), "{text}");
        assert!(std::time::Instant::now() < deadline, "never answered again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Who may ask is checked while the model loads as after: a page on another site, a rebound
/// DNS name and a client without the key learn nothing, not even that the model is loading.
#[test]
fn the_loading_answers_check_who_is_asking() {
    let (server, gate) = start_gated(&["--api-key", "sesame"]);
    let root = server.root().to_string();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = ureq::get(&format!("{root}{path}"));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let status = response.status();
        let body: Value = response.into_json().expect("JSON");
        (status, body)
    };
    let key = ("Authorization", "Bearer sesame");

    let (status, body) = get("/v1/models", &[]);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("missing_api_key")),
        "{body}"
    );
    let (status, body) = get("/v1/models", &[("Authorization", "Bearer wrong")]);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("invalid_api_key")),
        "{body}"
    );
    let (status, body) = get("/health", &[("Host", "attacker.example")]);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("host_not_allowed")),
        "{body}"
    );
    let (status, body) = get("/v1/models", &[key, ("Origin", "http://evil.example")]);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("origin_not_allowed")),
        "{body}"
    );

    // The owner is told it is loading; /health needs no key, as after loading.
    let (status, body) = get("/v1/models", &[key]);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("model_loading")),
        "{body}"
    );
    let (status, body) = get("/health", &[]);
    assert_eq!(
        (status, body["status"].clone()),
        (503, json!("loading")),
        "{body}"
    );

    gate.open();
    server.wait_for_line("listening on", HANG);
    let (status, body) = get("/v1/models", &[key]);
    assert_eq!(status, 200, "{body}");
}
