//! `ossa run` as a script uses it: the tiny trained agent through the binary, with the python
//! tool in the real sandbox, must give OpenAI's transcripts exactly (`--json`), print the bare
//! answer without it, read tasks from stdin and from a JSONL batch, and fail clearly on bad input.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ossa::agent::harmony::{Message, Role};
use serde_json::{Value, json};
use support::scripted::{MODEL, ScriptedServer};
use support::{ENGINE_FLAGS, SCENARIO_FLAGS, check_all, final_text, fixture_dir, scenarios};

/// `ossa run` with the fixture's settings, isolated from the user's config.
fn ossa_run(extra: &[&str], stdin: Option<&str>) -> Output {
    ossa_run_model(&fixture_dir(), extra, stdin)
}

fn ossa_run_model(model: &Path, extra: &[&str], stdin: Option<&str>) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
    command
        .arg("run")
        .arg("--model")
        .arg(model)
        .args(ENGINE_FLAGS)
        .args(SCENARIO_FLAGS)
        .args(extra)
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("OSSA_CONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("ossa starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("ossa ends")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn json_transcripts_match_every_scenario() {
    check_all(scenarios(), |scenario| {
        let name = scenario["name"].as_str().unwrap_or("?").to_string();
        let task = scenario["user"].as_str().expect("user");
        let output = ossa_run(&["--json", task], None);
        if !output.status.success() {
            return Err(format!(
                "{name}: exit {:?}\n{}",
                output.status,
                stderr(&output)
            ));
        }
        let transcript: Value = match serde_json::from_str(&stdout(&output)) {
            Ok(value) => value,
            Err(e) => {
                return Err(format!(
                    "{name}: stdout is not JSON: {e}\n{}",
                    stdout(&output)
                ));
            }
        };
        if transcript["messages"] != scenario["expected"] {
            return Err(format!(
                "{name}: messages differ\n got {}\nwant {}",
                transcript["messages"], scenario["expected"]
            ));
        }
        assert_eq!(transcript["answer"], json!(final_text(&scenario)), "{name}");
        assert_eq!(transcript["outcome"], "final", "{name}");
        let calls = scenario["generated_tokens"].as_array().map_or(0, Vec::len);
        assert_eq!(
            transcript["timings"]["generations"]
                .as_array()
                .map(Vec::len),
            Some(calls),
            "{name}"
        );
        assert_eq!(
            transcript["cache_hits"].as_u64(),
            Some(calls as u64 - 1),
            "{name}"
        );
        assert_eq!(
            transcript["tool_calls"].as_array().map(Vec::len),
            Some(calls - 1),
            "{name}"
        );
        Ok(())
    });
}

#[test]
fn plain_output_is_the_answer_and_stdin_gives_the_task() {
    let output = ossa_run(
        &["-"],
        Some("What is the sum of the squares of the integers from 1 to 410? Use python.\n"),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "The sum of the squares from 1 to 410 is 23057785.\n"
    );
    // Progress on stderr: the call, its output, and the cache report.
    let err = stderr(&output);
    assert!(
        err.contains("→ python: print(sum(i*i for i in range(1, 410+1)))"),
        "{err}"
    );
    assert!(err.contains("← python: 23057785"), "{err}");
    assert!(err.contains("prefix cache hits 1/1"), "{err}");
}

#[test]
fn batch_of_tasks_gives_one_result_per_line() {
    let dir = tempfile::tempdir().expect("temp");
    let batch = dir.path().join("tasks.jsonl");
    std::fs::write(
        &batch,
        "\"Say hello in one word.\"\n\n{\"id\": 7, \"task\": \"What is the sum of the squares of the integers from 1 to 22? Use python.\"}\n",
    )
    .expect("write batch");
    let results = dir.path().join("results.jsonl");
    let output = ossa_run(
        &[
            "--quiet",
            "--batch",
            batch.to_str().expect("utf-8"),
            "-o",
            results.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&results).expect("results written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["answer"], "Hello!");
    assert_eq!(lines[0]["id"], Value::Null);
    assert_eq!(lines[1]["id"], 7);
    assert_eq!(
        lines[1]["answer"],
        "The sum of the squares from 1 to 22 is 3795."
    );
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let missing = ossa_run_model(Path::new("/nonexistent/model-dir"), &["hi"], None);
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("/nonexistent/model-dir"), "{err}");

    let dir = tempfile::tempdir().expect("temp");
    let batch = dir.path().join("bad.jsonl");
    std::fs::write(&batch, "{\"id\": 1}\n").expect("write");
    let bad = ossa_run(&["--batch", batch.to_str().expect("utf-8")], None);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("bad.jsonl line 1") && err.contains("`task`"),
        "{err}"
    );

    let empty = ossa_run(&["-"], Some("   \n"));
    assert!(!empty.status.success());
    assert!(
        stderr(&empty).contains("the task is empty"),
        "{}",
        stderr(&empty)
    );
}

/// A scripted model behind `--backend openai-completions` writes escape sequences in its
/// answer and has a tool print some: neither the progress on stderr nor the answer on stdout
/// carries them, and `--json` keeps them only as `\u` escapes (the same strings, unprintable).
#[test]
fn escape_sequences_are_not_printed() {
    let model = ScriptedServer::start();
    let answer = "Forty\x1b]52;c;aGk=\x07 two\x1b[2J\u{9b}2J.";
    let script = |model: &ScriptedServer| {
        model.script(&[Message::from_role_and_content(
            Role::Assistant,
            "print('out\\x1b[2J\\x9b2Jput')",
        )
        .with_channel("analysis")
        .with_recipient("python")
        .with_content_type("code")]);
        model.script(&[
            Message::from_role_and_content(Role::Assistant, answer).with_channel("final")
        ]);
    };
    let url = format!("{}/v1", model.root);
    let run = |extra: &[&str]| {
        let home = tempfile::tempdir().expect("temp home");
        Command::new(env!("CARGO_BIN_EXE_ossa"))
            .args(["run", "--backend", "openai-completions", "--url", &url])
            .args(["--remote-model", MODEL, "--python"])
            .args(extra)
            .arg("How many?")
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("OSSA_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("ossa ran")
    };
    let printable = |text: &str| !text.contains(|c: char| c.is_control() && c != '\n');

    script(&model);
    let out = run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Forty]52;c;aGk= two[2J2J.\n");
    let progress = stderr(&out);
    assert!(printable(&progress), "{progress:?}");
    assert!(progress.contains("← python: out[2J2Jput"), "{progress}");
    // The model read the program's output without them.
    let prompts = model.prompt_texts();
    assert!(
        prompts[1].ends_with("<|start|>python to=assistant<|channel|>analysis<|message|>out[2J2Jput\n<|end|><|start|>assistant"),
        "{:?}",
        prompts[1]
    );

    script(&model);
    let out = run(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(printable(&text), "{text:?}");
    let transcript: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(transcript["raw_answer"], answer);
}
