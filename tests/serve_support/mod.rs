//! Starting `ossa serve` on the tiny trained agent for the serve tests, and the fixture's
//! scenarios.

#![allow(dead_code)]

pub mod scripted;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt-oss-tiny-agent")
}

pub fn scenarios() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture_dir().join("scenarios.json")).expect("scenarios");
    serde_json::from_str(&text).expect("a list")
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

/// `ossa serve` on a free loopback port, stopped when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    pub base: String,
    _home: tempfile::TempDir,
}

impl Server {
    /// Serves the tiny agent with python, greedy, as the scenarios were made.
    pub fn start(extra: &[&str]) -> Server {
        let fixture = fixture_dir();
        let mut args = vec!["--model", fixture.to_str().expect("utf-8")];
        args.extend(["--dtype", "f32", "--threads", "2", "--date", "2026-01-01"]);
        args.extend(["-r", "low", "--python", "--temperature", "0"]);
        args.extend(extra);
        Self::start_with(&args, None)
    }

    /// `ossa serve ARGS --port 0 --quiet`, with `config` (TOML) as its config file.
    pub fn start_with(args: &[&str], config: Option<&str>) -> Server {
        let home = tempfile::tempdir().expect("temp home");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
        command
            .arg("serve")
            .args(args)
            .args(["--port", "0", "--quiet"])
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("OSSA_CONFIG")
            .env_remove("OPENAI_API_KEY");
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
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = sender.send(Ok(rest.trim().to_string()));
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
                    panic!("ossa serve did not start:\n{}", early.join("\n"));
                }
            }
        };
        Server {
            child,
            base,
            _home: home,
        }
    }

    /// The server's root (`http://127.0.0.1:PORT`).
    pub fn root(&self) -> &str {
        self.base.trim_end_matches("/v1")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `curl` is installed.
pub fn have_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `curl` a JSON body to `url`; returns (HTTP status, body).
pub fn curl_post(url: &str, body: &Value) -> (u16, String) {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", &body.to_string(), url])
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    split_status(&String::from_utf8_lossy(&output.stdout))
}

pub fn curl_get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    split_status(&String::from_utf8_lossy(&output.stdout))
}

fn split_status(out: &str) -> (u16, String) {
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

/// The `data:` payloads of an SSE body, `[DONE]` excluded (and required last).
pub fn sse_data(body: &str) -> Vec<Value> {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
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
    eprintln!(
        "SKIPPED: the `openai` Python package is not importable and pip could not install it"
    );
    None
}
