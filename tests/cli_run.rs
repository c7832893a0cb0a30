//! `ossa run` as a script uses it: the tiny trained agent through the binary, with the python
//! tool in the real sandbox, must give OpenAI's transcripts exactly (`--json`), print the bare
//! answer without it, read tasks from stdin and from a JSONL batch, and fail clearly on bad input.
//! A second run reads the first one's prompt from the prompt cache on disk and still gives the
//! same transcript.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use support::scripted::{MODEL, ScriptedServer};
use support::{
    ENGINE_FLAGS, SCENARIO_FLAGS, check_all, final_text, fixture_dir, isolated_ossa, scenarios,
};

/// `ossa run` with the fixture's settings, isolated from the user's config.
fn ossa_run(extra: &[&str], stdin: Option<&str>) -> Output {
    ossa_run_model(&fixture_dir(), extra, stdin)
}

fn ossa_run_model(model: &Path, extra: &[&str], stdin: Option<&str>) -> Output {
    ossa_run_in(model, extra, stdin, None)
}

/// [`ossa_run_model`] with the prompt cache in `prompt_cache` (else a private empty one).
fn ossa_run_in(
    model: &Path,
    extra: &[&str],
    stdin: Option<&str>,
    prompt_cache: Option<&Path>,
) -> Output {
    let (_home, mut command) = isolated_ossa("run", prompt_cache);
    command
        .arg("--model")
        .arg(model)
        .args(ENGINE_FLAGS)
        .args(SCENARIO_FLAGS)
        .args(extra);
    ossa_test_support::run_with_stdin(&mut command, stdin)
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
    ossa_test_support::assert_contains_all(&err, &["bad.jsonl line 1", "`task`"]);

    let empty = ossa_run(&["-"], Some("   \n"));
    assert!(!empty.status.success());
    assert!(
        stderr(&empty).contains("the task is empty"),
        "{}",
        stderr(&empty)
    );
}

/// `ossa run --json` in `cache`, checked against its scenario: the transcript, the warnings and
/// the summary line.
fn cached_run(cache: &Path, scenario: &Value, extra: &[&str]) -> (Value, Vec<String>, String) {
    let name = scenario["name"].as_str().unwrap_or("?");
    let mut args = vec!["--json"];
    args.extend(extra);
    args.push(scenario["user"].as_str().expect("user"));
    let output = ossa_run_in(&fixture_dir(), &args, None, Some(cache));
    assert!(output.status.success(), "{name}: {}", stderr(&output));
    let transcript: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(transcript["messages"], scenario["expected"], "{name}");
    let warnings = stderr(&output)
        .lines()
        .filter(|l| l.contains("prompt cache"))
        .map(str::to_string)
        .collect();
    let summary = stderr(&output)
        .lines()
        .find(|l| l.contains("prefix cache hits"))
        .unwrap_or_else(|| panic!("{name}: no summary: {}", stderr(&output)))
        .to_string();
    (transcript, warnings, summary)
}

fn first_generation(transcript: &Value) -> (u64, u64) {
    let first = &transcript["timings"]["generations"][0];
    (
        first["prompt_tokens"].as_u64().expect("prompt tokens"),
        first["reused_tokens"].as_u64().expect("reused tokens"),
    )
}

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "kv"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The next process starts from the prompt cache on disk: the same task reads all its first
/// prompt but the last token, another task the shared tool preamble; the transcripts stay
/// exactly the scenarios'. Damaged files cost one warning line, not the answer;
/// `--no-prompt-cache` neither reads nor writes.
#[test]
fn the_next_run_reads_the_prompt_from_disk() {
    let all = scenarios();
    let (first, second) = (&all[0], &all[1]);
    let dir = tempfile::tempdir().expect("temp");
    let cache = dir.path().join("prompt-cache");

    let (cold, warnings, summary) = cached_run(&cache, first, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(first_generation(&cold).1, 0, "nothing on disk yet");
    assert_eq!(cold["prompt_cache"]["read_tokens"], 0);
    assert!(cold["prompt_cache"]["written_tokens"].as_u64() > Some(0));
    assert!(!cache_files(&cache).is_empty());
    assert!(!summary.contains("from disk"), "{summary}");

    // `ossa setup` says where the cache is and what it holds; `--help` names the flag and the
    // folder.
    let setup = Command::new(env!("CARGO_BIN_EXE_ossa"))
        .arg("setup")
        .env("XDG_CONFIG_HOME", dir.path())
        .env("OSSA_PROMPT_CACHE_DIR", &cache)
        .env_remove("OSSA_CONFIG")
        .output()
        .expect("ossa setup runs");
    assert!(setup.status.success(), "{}", stderr(&setup));
    let shown = stdout(&setup);
    let files = cache_files(&cache).len();
    assert!(
        shown.contains(&format!("Prompt cache: {}\n", cache.display()))
            && shown.contains(&format!(" in {files} files, bound 4096 MiB")),
        "{shown}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_ossa"))
        .args(["run", "--help"])
        .output()
        .expect("ossa run --help runs");
    let help = stdout(&help);
    ossa_test_support::assert_contains_all(&help, &["--no-prompt-cache", "ossa/prompt-cache"]);

    // The same task again: its whole first prompt but the last token comes from disk.
    let (again, warnings, summary) = cached_run(&cache, first, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let (prompt, reused) = first_generation(&again);
    assert_eq!(reused, prompt - 1);
    assert!(again["prompt_cache"]["read_tokens"].as_u64() >= Some(reused));
    assert!(again["prompt_cache"]["read_bytes"].as_u64() > Some(0));
    let read = again["prompt_cache"]["read_tokens"].as_u64().expect("read");
    assert!(
        summary.contains(&format!(" {read} from disk)")),
        "{summary}"
    );

    // Another task shares the tool preamble (system message) with it.
    let (other, warnings, _) = cached_run(&cache, second, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let (prompt, reused) = first_generation(&other);
    assert!(reused > 100 && reused < prompt - 1, "{reused}/{prompt}");
    assert_eq!(other["prompt_cache"]["read_tokens"].as_u64(), Some(reused));

    // A byte flipped in every file: one warning line, the transcript unchanged.
    for file in cache_files(&cache) {
        let mut bytes = std::fs::read(&file).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&file, bytes).expect("write");
    }
    let (damaged, warnings, _) = cached_run(&cache, first, &[]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("ignoring"), "{}", warnings[0]);
    assert_eq!(first_generation(&damaged).1, 0);

    // Off: nothing read from a full folder, nothing written to an empty one.
    let (off, _, _) = cached_run(&cache, first, &["--no-prompt-cache"]);
    assert_eq!(first_generation(&off).1, 0);
    assert_eq!(off["prompt_cache"], Value::Null);
    let empty = dir.path().join("unused");
    cached_run(&empty, first, &["--no-prompt-cache"]);
    assert!(cache_files(&empty).is_empty());
    assert!(!empty.exists(), "not even created");
}

/// A scripted model behind `--backend openai-completions` writes escape sequences in its
/// answer and has a tool print some: neither the progress on stderr nor the answer on stdout
/// carries them, and `--json` keeps them only as `\u` escapes (the same strings, unprintable).
#[test]
fn escape_sequences_are_not_printed() {
    let model = ScriptedServer::start();
    let answer = "Forty\x1b]52;c;aGk=\x07 two\x1b[2J\u{9b}2J.";
    let script = |model: &ScriptedServer| {
        model.script_python_then_answer("print('out\\x1b[2J\\x9b2Jput')", answer);
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
