//! `ossa serve` attacked the way a hostile web page, a hostile client or a broken disk would:
//! one test per attack, each showing the refusal or the cap and that the server goes on
//! serving a legitimate request meanwhile.
//!
//! Most tests run the real `ossa serve` binary on the tiny trained agent and talk to it over
//! loopback with raw HTTP (to send what browsers and slow clients send), curl and the `openai`
//! package. Tests that need a generation that never ends on its own, or a tiny context, serve a
//! scripted backend in-process over real HTTP.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossa_test_support::scripted::{Reply, ScriptedBackend, tokens};
use serde_json::{Value, json};
use support::in_process::InProcessServer;
use support::or_skip;
use support::serve::{Server, curl_get, curl_missing, curl_post, post_status, python_with_openai};
use support::{final_text, scenarios};

/// The header of a JSON body.
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Long enough for anything under test to happen on a slow, shared machine.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/// A response read off a socket.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// An error in OpenAI's shape with this code; returns its message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        openai_error(&self.json(), code)
    }
}

/// Checks `{"error": {"message", "type", "param", "code"}}`; returns the message.
fn openai_error(body: &Value, code: &str) -> String {
    let error = &body["error"];
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
    error["message"].as_str().expect("message").to_string()
}

/// `127.0.0.1:PORT` of a server root or base URL.
fn address(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .to_string()
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream
}

/// Reads one response: its head, then a `Content-Length` body, or whatever comes until the
/// server closes.
fn read_response(stream: &mut TcpStream) -> Raw {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buffer).expect("response head");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = data[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut buffer).expect("response body");
                assert!(n > 0, "closed mid-body");
                body.extend_from_slice(&buffer[..n]);
            }
        }
        None if status == 204 => {}
        None => loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buffer[..n]),
            }
        },
    }
    Raw {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

/// Sends a [`request`] for `path` to `address` on a new connection; the response.
fn send(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    raw(address, &request(method, path, address, headers, body))
}

/// `ossa serve` with `extra` for a test that talks raw HTTP and curl to it, and its address;
/// `None` (the test is skipped) when curl is missing.
fn serve_raw(extra: &[&str]) -> Option<(Server, String)> {
    let server = Server::start_for_curl(extra)?;
    let address = address(&server.base);
    Some((server, address))
}

/// Sends `request` as it is on a new connection; the response.
fn raw(address: &str, request: &str) -> Raw {
    let mut stream = connect(address);
    stream.write_all(request.as_bytes()).expect("send");
    read_response(&mut stream)
}

/// A request with `headers` (a `Host` of the server's own address unless one is given) and
/// `Content-Length` for the body.
fn request(
    method: &str,
    path: &str,
    address: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.push_str(body);
    text
}

/// Whether the server closes `stream` (without sending anything) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Polls `check` until it holds, for up to [`PATIENCE`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The real server

fn hello() -> (String, String) {
    let scenario = scenarios()
        .into_iter()
        .find(|s| s["name"] == "hello")
        .expect("hello scenario");
    (
        scenario["user"].as_str().expect("user").to_string(),
        final_text(&scenario),
    )
}

fn chat_body(user: &str) -> Value {
    json!({"messages": [{"role": "user", "content": user}], "temperature": 0})
}

/// A legitimate client (curl) gets the scenario's answer.
fn assert_serves(server: &Server, extra: &[&str]) {
    let (user, want) = hello();
    let mut args = vec!["-H", "Content-Type: application/json"];
    args.extend(extra);
    let body = chat_body(&user).to_string();
    let url = format!("{}/chat/completions", server.base);
    args.extend(["--data-binary", body.as_str(), url.as_str()]);
    let (status, text) = support::serve::curl(&args);
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(response["choices"][0]["message"]["content"], json!(want));
}

fn health(server: &Server) -> Value {
    let (status, text) = curl_get(&format!("{}/health", server.root()));
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

/// A streamed completion that runs until the client leaves: the end-of-sequence token ignored
/// and room for ~100k tokens. Returns the connection once its stream has begun (a first chunk,
/// or the note that it waits for the engine).
fn endless_completion(address: &str) -> TcpStream {
    let body = json!({"prompt": "Count:", "max_tokens": 100_000, "ignore_eos": true,
                      "temperature": 0, "stream": true})
    .to_string();
    let mut stream = connect(address);
    let text = request("POST", "/v1/completions", address, &[JSON], &body);
    stream.write_all(text.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !["data:", ": queued"]
        .iter()
        .any(|start| String::from_utf8_lossy(&seen).contains(start))
    {
        let n = stream.read(&mut buffer).expect("stream");
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    stream
}

fn interrupt(server: &Server) {
    // SAFETY: a signal to the child process this test started.
    let result = unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGINT) };
    assert_eq!(result, 0, "SIGINT sent");
}

#[test]
fn an_api_key_once_set_is_required() {
    if curl_missing() {
        return;
    }
    let key = "sk-local-test-8d2f";
    let fixture = support::fixture_dir();
    let mut args = vec!["--model", fixture.to_str().expect("utf-8")];
    args.extend(support::ENGINE_FLAGS);
    args.extend(support::SCENARIO_FLAGS);
    let server = Server::start_with_env(&args, None, &[("OSSA_API_KEY", key)]);
    let address = address(&server.base);
    let body = chat_body("hi").to_string();
    let post = |headers: &[(&str, &str)]| {
        let mut all = vec![JSON];
        all.extend_from_slice(headers);
        send(&address, "POST", "/v1/chat/completions", &all, &body)
    };
    let missing = post(&[]);
    missing.error(401, "missing_api_key");
    let wrong = post(&[("Authorization", "Bearer sk-local-test-8d2e")]);
    wrong.error(401, "invalid_api_key");
    assert!(!wrong.body.contains(key), "{}", wrong.body);
    let prefix = post(&[("Authorization", "Bearer sk-local")]);
    prefix.error(401, "invalid_api_key");
    let models = send(&address, "GET", "/v1/models", &[], "");
    models.error(401, "missing_api_key");
    // Probes need no key.
    assert_eq!(health(&server)["status"], "ok");

    let bearer = format!("Authorization: Bearer {key}");
    assert_serves(&server, &["-H", &bearer]);

    // The official client, with the key and with another.
    let python = or_skip!(python_with_openai());
    let script = r#"
import sys, openai
good = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
bad = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
ids = [m.id for m in good.models.list()]
try:
    bad.models.list()
    print("no error")
except openai.AuthenticationError as e:
    print(ids, e.status_code, e.code)
"#;
    let output = std::process::Command::new(python)
        .args(["-c", script, &server.base, key])
        .output()
        .expect("python runs");
    let printed = ossa_test_support::stdout_of_success("the client script", &output);
    assert!(printed.contains("401 invalid_api_key"), "{printed}");
}

#[test]
fn listening_beyond_loopback_without_a_key_is_refused() {
    for args in [
        &["--host", "0.0.0.0"][..],
        &["--host", "::"][..],
        &["--cors-origin", "*"][..],
        &["--allowed-host", "*"][..],
    ] {
        let early = Server::refused(args);
        assert!(
            early.contains("--api-key") && early.contains("OSSA_API_KEY"),
            "{args:?}: {early}"
        );
    }
}

/// The Python interpreters all clients share are bounded by `--max-interpreters` (what a budget
/// does past its limit is tested against the real sandbox in sandbox/tests/limits.rs); a bound
/// that cannot work is refused at start, naming the flag.
#[test]
fn the_interpreter_budget_is_checked_at_start() {
    for bad in ["0", "1025", "many"] {
        let early = Server::refused(&["--python", "--max-interpreters", bad]);
        assert!(early.contains("--max-interpreters"), "{bad}: {early}");
    }
}

#[test]
fn a_web_page_cannot_post_simple_requests_or_from_its_origin() {
    let server = or_skip!(Server::start_storing_for_curl(&[]));
    let address = address(&server.base);
    // A page may send these without a CORS preflight; the body is valid JSON all the same.
    let body = json!({"input": "Say hello in one word.", "store": true}).to_string();
    for content_type in [
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("Content-Type", c)])
            .unwrap_or_default();
        let refused = send(&address, "POST", "/v1/responses", &headers, &body);
        refused.error(415, "unsupported_media_type");
    }
    // A page's fetch with JSON carries its origin.
    let from_page = send(
        &address,
        "POST",
        "/v1/responses",
        &[JSON, ("Origin", "https://evil.example")],
        &body,
    );
    from_page.error(403, "origin_not_allowed");
    assert!(from_page.header("access-control-allow-origin").is_none());
    // Nothing ran and nothing was stored.
    assert_eq!(health(&server)["store"]["responses"], 0);

    let (status, text) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": "Say hello in one word.", "temperature": 0}),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(health(&server)["store"]["responses"], 1);
}

#[test]
fn rebound_host_names_are_refused() {
    let (server, address) = or_skip!(serve_raw(&["--allowed-host", "ossa.test"]));
    let port = address.rsplit(':').next().expect("port");
    let evil = format!("evil.example:{port}");
    // After rebinding, the page's requests are same-origin: a GET carries no Origin at all.
    let models = send(&address, "GET", "/v1/models", &[("Host", &evil)], "");
    let message = models.error(403, "host_not_allowed");
    assert!(message.contains("--allowed-host"), "{message}");
    let chat = send(
        &address,
        "POST",
        "/v1/chat/completions",
        &[("Host", &evil), JSON, ("Origin", &format!("http://{evil}"))],
        &chat_body("hi").to_string(),
    );
    chat.error(403, "host_not_allowed");
    // The absolute form names the host in the request line.
    let absolute = raw(
        &address,
        &format!(
            "GET http://{evil}/v1/models HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        ),
    );
    absolute.error(403, "host_not_allowed");
    for host in [
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "ossa.test.evil.example",
    ] {
        let refused = send(&address, "GET", "/v1/models", &[("Host", host)], "");
        refused.error(403, "host_not_allowed");
    }
    // The names the server answers to.
    for host in [
        address.clone(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("OSSA.test:{port}"),
    ] {
        let models = send(&address, "GET", "/v1/models", &[("Host", &host)], "");
        assert_eq!(models.status, 200, "{host}: {}", models.body);
    }
    assert_serves(&server, &[]);
}

#[test]
fn foreign_origins_are_refused_and_allowed_ones_get_cors() {
    if curl_missing() {
        return;
    }
    let app = "http://localhost:3000";
    let server = Server::start(&["--cors-origin", app]);
    let address = address(&server.base);
    let preflight = |origin: &str| {
        send(
            &address,
            "OPTIONS",
            "/v1/chat/completions",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type, x-stainless-os",
                ),
            ],
            "",
        )
    };
    let allowed = preflight(app);
    assert_eq!(allowed.status, 204, "{}", allowed.body);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(app));
    assert!(
        allowed
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );
    assert!(
        allowed
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("x-stainless-os") && h.contains("authorization"))
    );
    preflight("https://evil.example").error(403, "origin_not_allowed");
    preflight("null").error(403, "origin_not_allowed");

    let (user, want) = hello();
    let post = |origin: &str| {
        send(
            &address,
            "POST",
            "/v1/chat/completions",
            &[JSON, ("Origin", origin)],
            &chat_body(&user).to_string(),
        )
    };
    let from_app = post(app);
    assert_eq!(from_app.status, 200, "{}", from_app.body);
    assert_eq!(from_app.header("access-control-allow-origin"), Some(app));
    assert_eq!(
        from_app.json()["choices"][0]["message"]["content"],
        json!(want)
    );
    let from_elsewhere = post("http://localhost:3001");
    from_elsewhere.error(403, "origin_not_allowed");
    assert!(
        from_elsewhere
            .header("access-control-allow-origin")
            .is_none()
    );
    let models = send(
        &address,
        "GET",
        "/v1/models",
        &[("Origin", "https://evil.example")],
        "",
    );
    models.error(403, "origin_not_allowed");
    assert_serves(&server, &[]);
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let (server, address) = or_skip!(serve_raw(&["--header-timeout", "1", "--body-timeout", "1"]));
    // Slowloris: headers that never end; a connection that never says anything; a body that
    // never arrives.
    let mut slow_headers = connect(&address);
    slow_headers
        .write_all(
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nX-Wait: ").as_bytes(),
        )
        .expect("send");
    let mut idle = connect(&address);
    let mut slow_body = connect(&address);
    slow_body
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"messages\":"
            )
            .as_bytes(),
        )
        .expect("send");
    assert_serves(&server, &[]);
    assert!(
        closed_within(&mut slow_headers, PATIENCE),
        "slow headers kept"
    );
    assert!(closed_within(&mut idle, PATIENCE), "idle connection kept");
    let timed_out = read_response(&mut slow_body);
    timed_out.error(408, "request_timeout");
    assert_serves(&server, &[]);
}

#[test]
fn connections_past_the_cap_are_turned_away() {
    let (server, address) = or_skip!(serve_raw(&[
        "--max-connections",
        "2",
        "--header-timeout",
        "120"
    ]));
    let held: Vec<TcpStream> = (0..2).map(|_| connect(&address)).collect();
    let turned_away = send(&address, "GET", "/v1/models", &[], "");
    turned_away.error(503, "too_many_connections");
    assert_eq!(turned_away.header("retry-after"), Some("1"));
    drop(held);
    // Their places come back once the server has seen them close.
    eventually("a place frees up", || {
        send(&address, "GET", "/v1/models", &[], "").status == 200
    });
    assert_serves(&server, &[]);
}

#[test]
fn requests_past_the_queue_get_429_with_retry_after() {
    let (server, address) = or_skip!(serve_raw(&["--max-queue", "1"]));
    // One generating, one waiting for the engine.
    let running = endless_completion(&address);
    let waiting = endless_completion(&address);
    let body = json!({"prompt": "hi", "max_tokens": 1}).to_string();
    let refused = send(&address, "POST", "/v1/completions", &[JSON], &body);
    refused.error(429, "rate_limit_exceeded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The chat endpoints are admitted the same way.
    let chat = send(
        &address,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        &chat_body("hi").to_string(),
    );
    chat.error(429, "rate_limit_exceeded");
    drop((running, waiting));
    eventually("the queue empties", || health(&server)["requests"] == 0);
    assert_serves(&server, &[]);
}

#[test]
fn huge_max_tokens_cannot_wrap_the_context_check() {
    let server = or_skip!(Server::start_for_curl(&[]));
    let huge = u64::MAX;
    let (status, text) = curl_post(
        &format!("{}/completions", server.base),
        &json!({"prompt": "hi", "max_tokens": huge}),
    );
    assert_eq!(status, 400, "{text}");
    let message = openai_error(
        &serde_json::from_str(&text).expect("JSON"),
        "context_length_exceeded",
    );
    assert!(message.contains("maximum context length"), "{message}");
    // The chat endpoints take it as "as much as fits" and answer as usual.
    let (user, want) = hello();
    let mut body = chat_body(&user);
    body["max_tokens"] = json!(huge);
    let (status, text) = curl_post(&format!("{}/chat/completions", server.base), &body);
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(response["choices"][0]["message"]["content"], json!(want));
    let (status, text) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": user, "temperature": 0, "max_output_tokens": huge, "store": false}),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        health(&server)["queue"],
        json!({"running": 0, "waiting": 0})
    );
}

#[test]
fn the_server_cuts_max_tokens_to_its_limit() {
    let server = or_skip!(Server::start_for_curl(&["--max-tokens-limit", "3"]));
    let (status, text) = curl_post(
        &format!("{}/completions", server.base),
        &json!({"prompt": "Count:", "max_tokens": 50, "ignore_eos": true, "temperature": 0,
                "return_token_ids": true}),
    );
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        response["choices"][0]["token_ids"].as_array().map(Vec::len),
        Some(3),
        "{response}"
    );
    assert_eq!(response["choices"][0]["finish_reason"], "length");
    let mut body = chat_body("Say hello in one word.");
    body["max_tokens"] = json!(1000);
    let (status, text) = curl_post(&format!("{}/chat/completions", server.base), &body);
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        response["choices"][0]["finish_reason"], "length",
        "{response}"
    );
    assert!(
        response["usage"]["completion_tokens"]
            .as_u64()
            .expect("usage")
            <= 3
    );
}

#[test]
fn bodies_past_the_limit_get_413() {
    let (server, address) = or_skip!(serve_raw(&["--max-body-mb", "1"]));
    let limit = 1 << 20;
    // Declared too large: refused before any of it is read.
    let mut stream = connect(&address);
    stream
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                2 * limit
            )
            .as_bytes(),
        )
        .expect("send");
    let message = read_response(&mut stream).error(413, "request_too_large");
    assert!(message.contains("--max-body-mb"), "{message}");
    // Chunked, with no length said: cut off at the limit.
    let mut stream = connect(&address);
    stream
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send");
    // Exactly one byte too many, so the server has read all of it when it answers.
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..limit / chunk.len() {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .expect("send");
        stream.write_all(&chunk).expect("send");
        stream.write_all(b"\r\n").expect("send");
    }
    stream.write_all(b"1\r\n \r\n0\r\n\r\n").expect("send");
    read_response(&mut stream).error(413, "request_too_large");
    assert_serves(&server, &[]);
}

#[test]
fn a_non_streamed_completion_stops_when_its_client_leaves() {
    let (server, address) = or_skip!(serve_raw(&[]));
    let body = json!({"prompt": "Count:", "max_tokens": 100_000, "ignore_eos": true,
                      "temperature": 0})
    .to_string();
    let mut stream = connect(&address);
    stream
        .write_all(request("POST", "/v1/completions", &address, &[JSON], &body).as_bytes())
        .expect("send");
    eventually("the generation runs", || {
        health(&server)["queue"]["running"] == 1
    });
    drop(stream);
    eventually("the generation stops", || {
        let health = health(&server);
        health["queue"]["running"] == 0 && health["requests"] == 0
    });
    assert_serves(&server, &[]);
}

/// A chat request whose body never comes: the server has said `100 Continue` and waits for it
/// (up to `--body-timeout`), holding the connection open.
fn held_request(address: &str) -> TcpStream {
    let mut stream = connect(address);
    stream
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("100 Continue") {
        let n = stream.read(&mut buffer).expect("100 Continue");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    stream.write_all(b"{").expect("send");
    stream
}

/// Reads a stream to its end; asserts it ended with `[DONE]`.
fn assert_stream_ends(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("data: [DONE]"),
        "{}",
        &rest[rest.len().saturating_sub(500)..]
    );
}

#[test]
fn ctrl_c_ends_open_streams_and_exits_by_its_deadline() {
    // The held request would keep the server for ten minutes; the shutdown deadline is 2 s.
    let mut server = Server::start(&["--body-timeout", "600", "--shutdown-timeout", "2"]);
    let address = address(&server.base);
    let mut stream = endless_completion(&address);
    let held = held_request(&address);
    interrupt(&server);
    // The stream is cancelled: it ends (with its last chunk and [DONE]) and the server exits.
    assert_stream_ends(&mut stream);
    let status = server.wait_exit(PATIENCE).expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert!(server.log().iter().any(|l| l.contains("shutting down")));
    drop(held);
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let mut server = Server::start(&["--body-timeout", "600", "--shutdown-timeout", "600"]);
    let address = address(&server.base);
    let stream = endless_completion(&address);
    // Holds the graceful shutdown for its ten minutes.
    let held = held_request(&address);
    interrupt(&server);
    eventually("the first Ctrl-C is seen", || {
        server.log().iter().any(|l| l.contains("shutting down"))
    });
    assert!(
        server.wait_exit(Duration::from_secs(1)).is_none(),
        "the server waits for the open request"
    );
    // The stream's client has not read its end yet: the second Ctrl-C does not wait for it.
    interrupt(&server);
    let status = server.wait_exit(PATIENCE).expect("the second Ctrl-C exits");
    assert_eq!(status.code(), Some(130), "{status:?}");
    drop((stream, held));
}

#[test]
fn every_error_is_in_openai_shape() {
    let (server, address) = or_skip!(serve_raw(&[]));
    send(&address, "GET", "/v1/nothing", &[], "").error(404, "not_found");
    send(&address, "GET", "/v1/chat/completions", &[], "").error(405, "method_not_allowed");
    send(&address, "PUT", "/v1/responses/resp_x", &[], "").error(405, "method_not_allowed");
    send(&address, "GET", "/v1/responses/resp_%FF%FE", &[], "").error(404, "not_found");
    let bad_json = send(&address, "POST", "/v1/chat/completions", &[JSON], "{");
    assert_eq!(bad_json.status, 400);
    assert!(bad_json.json()["error"]["message"].is_string());
    assert_serves(&server, &[]);
}

// ---------------------------------------------------------------------------------------------
// The response store, on the real server

fn create_response(server: &Server, body: Value) -> Value {
    let (status, text) = curl_post(&format!("{}/responses", server.base), &body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_store_is_private_durable_and_ages_out() {
    if curl_missing() {
        return;
    }
    let root = tempfile::tempdir().expect("temp");
    let dir = root.path().join("fresh/store");
    let first = {
        let server = Server::start_with_store(&dir, &["--store-ttl", "1s"]);
        let response = create_response(
            &server,
            json!({"input": "Say hello in one word.", "temperature": 0}),
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("responses.sqlite3")), 0o600);
            let wal = dir.join("responses.sqlite3-wal");
            if wal.exists() {
                assert_eq!(mode(&wal), 0o600);
            }
        }
        response
        // Killed (SIGKILL) here: what was answered is on disk.
    };
    let server = Server::start_with_store(&dir, &[]);
    let id = first["id"].as_str().expect("id");
    let (status, text) = curl_get(&format!("{}/responses/{id}", server.base));
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON"), first);
    drop(server);

    // Unused for longer than its age limit, it goes when the next one is stored.
    let server = Server::start_with_store(&dir, &["--store-ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    create_response(
        &server,
        json!({"input": "Say hello in one word.", "temperature": 0}),
    );
    let (status, text) = curl_get(&format!("{}/responses/{id}", server.base));
    assert_eq!(status, 404, "{text}");
    assert_eq!(health(&server)["store"]["responses"], 1);
}

#[test]
fn a_damaged_store_gives_clear_errors_without_paths() {
    if curl_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().to_str().expect("utf-8").to_string();
    let server = Server::start_with_store(dir.path(), &[]);
    let hello = json!({"input": "Say hello in one word.", "temperature": 0});
    let damaged = create_response(&server, hello.clone());
    let id = damaged["id"].as_str().expect("id").to_string();
    {
        let db = rusqlite::Connection::open(dir.path().join("responses.sqlite3")).expect("open");
        db.busy_timeout(PATIENCE).expect("busy timeout");
        let changed = db
            .execute(
                "UPDATE responses SET response = '{\"id\": ', items = 'not json' WHERE id = ?1",
                [&id],
            )
            .expect("damaged");
        assert_eq!(changed, 1);
    }
    let (status, text) = curl_get(&format!("{}/responses/{id}", server.base));
    assert_eq!(status, 500, "{text}");
    let message = openai_error(
        &serde_json::from_str(&text).expect("JSON"),
        "stored_response_damaged",
    );
    assert!(message.contains(&id), "{message}");
    assert!(!text.contains(&path), "{text}");
    let mut continued = hello.clone();
    continued["previous_response_id"] = json!(id);
    let (status, text) = curl_post(&format!("{}/responses", server.base), &continued);
    assert_eq!(status, 500, "{text}");
    openai_error(
        &serde_json::from_str(&text).expect("JSON"),
        "stored_response_damaged",
    );
    assert!(!text.contains(&path), "{text}");
    // The rest of the store and the server are fine.
    let other = create_response(&server, hello.clone());
    let (status, _) = curl_get(&format!(
        "{}/responses/{}",
        server.base,
        other["id"].as_str().expect("id")
    ));
    assert_eq!(status, 200);
    assert_serves(&server, &[]);
    drop(server);

    // A database file that is not one: the server says which file and what to do.
    let broken = tempfile::tempdir().expect("temp");
    std::fs::write(broken.path().join("responses.sqlite3"), vec![0x5a; 8192]).expect("write");
    let fixture = support::fixture_dir();
    let mut args = vec!["--model", fixture.to_str().expect("utf-8")];
    args.extend(support::ENGINE_FLAGS);
    args.extend(["--store-dir", broken.path().to_str().expect("utf-8")]);
    let early = Server::refused(&args);
    ossa_test_support::assert_contains_all(&early, &["responses.sqlite3", "--no-store"]);
}

#[test]
fn an_old_json_store_is_moved_in_once() {
    if curl_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp");
    let response = json!({"id": "resp_old", "object": "response", "created_at": 1_700_000_000,
                          "status": "completed", "output": [], "store": true});
    let conversation = json!([
        {"role": "user", "content": [{"type": "text", "text": "Say hello in one word."}]},
        {"role": "assistant", "channel": "final", "content": [{"type": "text", "text": "Hello"}]},
    ]);
    let old = dir.path().join("resp_old.json");
    std::fs::write(
        &old,
        json!({"response": response, "conversation": conversation}).to_string(),
    )
    .expect("write");
    let bad = dir.path().join("resp_bad.json");
    std::fs::write(&bad, "{not json").expect("write");
    let partial = dir.path().join(".resp_gone.json.partial");
    std::fs::write(&partial, "{").expect("write");
    let server = Server::start_with_store(dir.path(), &[]);
    let said: Vec<String> = server
        .log()
        .into_iter()
        .filter(|l| l.contains("older ossa"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("moved 1 stored responses") && said[0].contains("1 unreadable"),
        "{said:?}"
    );
    assert!(!old.exists() && !partial.exists() && !bad.exists());
    assert!(dir.path().join("resp_bad.json.unreadable").exists());
    let (status, text) = curl_get(&format!("{}/responses/resp_old", server.base));
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("JSON"),
        response
    );
    let next = create_response(
        &server,
        json!({"input": "Say hello in one word.", "previous_response_id": "resp_old",
               "temperature": 0, "max_output_tokens": 20}),
    );
    assert_eq!(next["previous_response_id"], "resp_old");
    drop(server);
    // Once: the next start has nothing to say.
    let server = Server::start_with_store(dir.path(), &[]);
    assert!(!server.log().iter().any(|l| l.contains("older ossa")));
}

#[test]
fn no_store_keeps_nothing() {
    let server = or_skip!(Server::start_for_curl(&["--no-store"]));
    let response = create_response(
        &server,
        json!({"input": "Say hello in one word.", "temperature": 0}),
    );
    assert_eq!(response["store"], false);
    let id = response["id"].as_str().expect("id");
    let (status, _) = curl_get(&format!("{}/responses/{id}", server.base));
    assert_eq!(status, 404);
    let (status, text) = curl_post(
        &format!("{}/responses", server.base),
        &json!({"input": "hi", "previous_response_id": id}),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("--no-store"), "{text}");
    assert_eq!(health(&server)["store"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// A scripted backend in-process: generations that never end, a small context

/// Where the scripted model says it was loaded from (what a backend's errors name).
const MODEL_PATH: &str = "/home/someone/models/gpt-oss-20b";

/// Answers `ok` to every prompt, except that a prompt holding `ENDLESS` gets reasoning that
/// goes on until the generation is cancelled, and one holding `FAIL` fails.
fn endless(context: usize) -> ScriptedBackend {
    let answer = tokens("<|channel|>final<|message|>ok<|return|>");
    ScriptedBackend::answering(context, move |prompt| {
        if prompt.contains("FAIL") {
            Reply::Fail {
                backend: MODEL_PATH.into(),
                message: "the model ran out of memory".into(),
            }
        } else if prompt.contains("ENDLESS") {
            Reply::ThinkUntilCancelled
        } else {
            Reply::Tokens(answer.clone())
        }
    })
}

struct Fixture {
    base: String,
    backend: Arc<ScriptedBackend>,
    _server: InProcessServer,
}

impl Fixture {
    fn start(context: usize, store_max_bytes: u64) -> Fixture {
        let backend = Arc::new(endless(context));
        let server = InProcessServer::start(backend.clone(), "endless", store_max_bytes);
        Fixture {
            base: server.base.clone(),
            backend,
            _server: server,
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        post_status(&format!("{}{path}", self.base), body)
    }

    fn health(&self) -> Value {
        let root = self.base.trim_end_matches("/v1");
        ureq::get(&format!("{root}/health"))
            .call()
            .expect("health")
            .into_json()
            .expect("JSON")
    }

    fn stored(&self) -> (u64, u64) {
        let store = &self.health()["store"];
        (
            store["responses"].as_u64().expect("count"),
            store["bytes"].as_u64().expect("bytes"),
        )
    }

    /// The legitimate request that must keep working.
    fn assert_serves(&self) {
        let (status, response) = self.post(
            "/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["choices"][0]["message"]["content"], "ok");
    }
}

#[test]
fn every_endpoint_stops_generating_when_its_client_leaves() {
    let fixture = Fixture::start(8192, 1 << 20);
    let address = address(&fixture.base);
    let cases = [
        (
            "/v1/completions",
            json!({"prompt": "ENDLESS", "max_tokens": 4000}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "ENDLESS", "max_tokens": 4000, "stream": true}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "ENDLESS"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "ENDLESS"}], "stream": true}),
        ),
        ("/v1/responses", json!({"input": "ENDLESS"})),
        ("/v1/responses", json!({"input": "ENDLESS", "stream": true})),
    ];
    for (i, (path, body)) in cases.iter().enumerate() {
        let generations = fixture.backend.calls();
        let mut stream = connect(&address);
        stream
            .write_all(request("POST", path, &address, &[JSON], &body.to_string()).as_bytes())
            .expect("send");
        eventually("the generation starts", || {
            fixture.backend.calls() > generations
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(fixture.backend.cancelled(), i, "{path} {body}");
        drop(stream);
        eventually(&format!("{path} {body} is cancelled"), || {
            fixture.backend.cancelled() == i + 1
        });
        fixture.assert_serves();
    }
    eventually("every request is done", || {
        fixture.health()["requests"] == 0
    });
}

#[test]
fn input_longer_than_the_context_is_refused_before_anything_runs() {
    let fixture = Fixture::start(2048, 1 << 20);
    let long = "word ".repeat(3000);
    let (status, first) = fixture.post("/responses", &json!({"input": "hi"}));
    assert_eq!(status, 200, "{first}");
    let generations = fixture.backend.calls();
    for (path, body, param) in [
        ("/responses", json!({"input": long}), "input"),
        (
            "/responses",
            json!({"input": long, "stream": true}),
            "input",
        ),
        (
            "/responses",
            json!({"input": long, "previous_response_id": first["id"]}),
            "input",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": long}]}),
            "messages",
        ),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": long}], "stream": true}),
            "messages",
        ),
        ("/completions", json!({"prompt": long}), "messages"),
    ] {
        let (status, error) = fixture.post(path, &body);
        assert_eq!(status, 400, "{path}: {error}");
        let message = openai_error(&error, "context_length_exceeded");
        assert!(message.contains("2048"), "{message}");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    assert_eq!(fixture.backend.calls(), generations);
    assert_eq!(fixture.stored().0, 1);
    fixture.assert_serves();
}

#[test]
fn chained_responses_grow_the_store_linearly() {
    let fixture = Fixture::start(131_072, 512 << 20);
    let turns = 40;
    let mut previous = Value::Null;
    let mut sizes = vec![0];
    for turn in 0..turns {
        let (status, response) = fixture.post(
            "/responses",
            &json!({"input": format!("turn {turn}: {}", "filler ".repeat(50)),
                    "previous_response_id": previous}),
        );
        assert_eq!(status, 200, "{response}");
        previous = response["id"].clone();
        sizes.push(fixture.stored().1);
    }
    // Each response adds about the same (its own input and answer), whatever came before:
    // copying the conversation into each would make the last add 40 times the first.
    let growth: Vec<u64> = sizes.windows(2).map(|w| w[1] - w[0]).collect();
    let first = growth[1];
    let last = growth[turns - 1];
    assert!(last < 2 * first, "store growth per response: {growth:?}");
    // And the whole conversation is still there for the model.
    let prompts = fixture.backend.prompt_texts();
    let last_prompt = prompts.last().expect("prompt");
    for turn in [0, turns / 2, turns - 1] {
        assert!(
            last_prompt.contains(&format!("turn {turn}:")),
            "turn {turn} missing"
        );
    }
}

#[test]
fn the_store_keeps_within_its_size_dropping_the_least_recently_used() {
    let fixture = Fixture::start(131_072, 30_000);
    let filler = "x".repeat(2000);
    let mut ids = Vec::new();
    for i in 0..40 {
        let (status, response) =
            fixture.post("/responses", &json!({"input": format!("{i} {filler}")}));
        assert_eq!(status, 200, "{response}");
        ids.push(response["id"].as_str().expect("id").to_string());
        assert!(fixture.stored().1 <= 30_000, "{:?}", fixture.stored());
    }
    let get = |id: &str| match ureq::get(&format!("{}/responses/{id}", fixture.base)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(get(&ids[0]), 404);
    assert_eq!(get(&ids[39]), 200);
    // What is left can be continued.
    let (status, response) = fixture.post(
        "/responses",
        &json!({"input": "more", "previous_response_id": ids[39]}),
    );
    assert_eq!(status, 200, "{response}");
    fixture.assert_serves();
}

#[test]
fn a_failing_model_is_a_server_error_without_the_servers_paths() {
    let fixture = Fixture::start(8192, 1 << 20);
    for (path, body) in [
        ("/completions", json!({"prompt": "FAIL"})),
        (
            "/chat/completions",
            json!({"messages": [{"role": "user", "content": "FAIL"}]}),
        ),
        ("/responses", json!({"input": "FAIL"})),
    ] {
        let (status, error) = fixture.post(path, &body);
        assert_eq!(status, 500, "{path}: {error}");
        assert_eq!(error["error"]["type"], "server_error", "{error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains("out of memory"), "{message}");
        assert!(!error.to_string().contains("/home/someone"), "{error}");
    }
    // Streamed, the error comes as an event.
    let address = address(&fixture.base);
    let body = json!({"messages": [{"role": "user", "content": "FAIL"}], "stream": true});
    let streamed = send(
        &address,
        "POST",
        "/v1/chat/completions",
        &[JSON],
        &body.to_string(),
    );
    assert!(streamed.body.contains("out of memory"), "{}", streamed.body);
    assert!(
        !streamed.body.contains("/home/someone"),
        "{}",
        streamed.body
    );
    fixture.assert_serves();
}
