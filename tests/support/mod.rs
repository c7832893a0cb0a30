//! Shared by the root crate's integration tests (each includes it with `mod support;`): the
//! tiny trained agent fixture, its scenarios and the flags they were made with, the Python
//! sandbox, and the pass/fail report of a conformance loop. `serve` starts `ossa serve` and
//! talks to it; `scripted` is a scripted model for the serve tests; `llama_stub` a llama.cpp
//! `llama-server` look-alike for the remote backend's tests.

#![allow(dead_code)]

pub mod llama_stub;
pub mod scripted;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ossa::sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

/// tests/fixtures/gpt-oss-tiny-agent: the model and its scenarios.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt-oss-tiny-agent")
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

/// The sandbox, opened once per test binary the way users open it (the Python runtime fetched
/// with pip into ossa's data folder on first use, then cached).
pub fn sandbox() -> Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let config = SandboxConfig::from_env().expect("a data folder for ossa");
            Sandbox::open(config).unwrap_or_else(|e| panic!("the sandbox did not open: {e}"))
        })
        .clone()
}

/// Prints the `N passed, M failed` line of a conformance loop and fails with every failure.
pub fn assert_all_passed(passed: usize, failures: &[String]) {
    println!("{passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Checks every item (`Err` says what differed), then prints `N passed, M failed` and fails
/// with every failure.
pub fn check_all<T>(
    items: impl IntoIterator<Item = T>,
    mut check: impl FnMut(T) -> Result<(), String>,
) {
    let mut passed = 0;
    let mut failures = Vec::new();
    for item in items {
        match check(item) {
            Ok(()) => passed += 1,
            Err(failure) => failures.push(failure),
        }
    }
    assert_all_passed(passed, &failures);
}
