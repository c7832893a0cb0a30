//! The programs in examples/ run as a user runs them: `cargo test` builds them, and each is
//! started here as its own process against a scripted model on loopback (their `--url` option,
//! the vLLM-like Completions API of `support::scripted`), with the real sandbox, the real
//! browser on loopback pages, and the real `openai` Python package for the client example.
//! The tiny trained agent runs `code_assistant` as a local model too.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ossa_test_support::stdout_of_success;
use serde_json::{Value, json};
use support::or_skip;
use support::scripted::{ScriptedServer, analysis, call, final_answer, python_call};
use support::serve::python_with_openai;

/// The example binary `name`, built by `cargo test` next to this test's own binary.
fn example(name: &str) -> Command {
    let test = std::env::current_exe().expect("the test binary");
    // target/<profile>/deps/examples-HASH → target/<profile>/examples/NAME
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples",
        path.display()
    );
    let mut command = Command::new(path);
    command
        .env_remove("OSSA_SEARCH_BACKEND")
        .env_remove("OPENAI_API_KEY")
        .env_remove("RUST_LOG");
    command
}

/// The examples' `--url URL --remote-model NAME` for the scripted model (they take no
/// `--backend`: a URL is a remote backend).
fn remote_args(model: &ScriptedServer) -> Vec<String> {
    model.backend_args().split_off(2)
}

/// The example `name` run on the scripted `model` with `args` and `env`: what it printed (it
/// must succeed).
fn run_scripted(name: &str, model: &ScriptedServer, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = example(name)
        .args(remote_args(model))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{name} does not run: {e}"));
    stdout_of_success(name, &output)
}

#[test]
fn research_answers_with_its_sources() {
    let model = ScriptedServer::start();
    let page = model.add_page(
        "lighthouse.html",
        "<html><head><title>The Ossa lighthouse</title></head><body>\
         <p>The Ossa lighthouse stands 42 meters tall.</p></body></html>",
    );
    model.set_search_results(vec![json!({"url": page, "title": "The Ossa lighthouse",
                                         "content": "Facts about the lighthouse."})]);
    model.script(&[
        analysis("Search first."),
        call("browser.search", json!({"query": "ossa lighthouse"})),
    ]);
    model.script(&[call("browser.open", json!({"id": 0}))]);
    model.script(&[final_answer("It is 42 meters tall【1†L1-L2】.")]);

    let stdout = run_scripted(
        "research",
        &model,
        &[
            "--allow-private-addresses",
            "How tall is the Ossa lighthouse?",
        ],
        &[
            ("OSSA_SEARCH_BACKEND", "searxng"),
            ("SEARXNG_URL", &model.root),
        ],
    );
    let domain = page.split('/').nth(2).expect("a domain");
    assert!(
        stdout.contains(&format!("It is 42 meters tall ([{domain}]({page})) .")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Sources:\n[1] {domain} — {page}")),
        "{stdout}"
    );
    // The page's text reached the model.
    let prompts = model.prompt_texts();
    assert!(
        prompts[2].contains("stands 42 meters tall"),
        "{}",
        prompts[2]
    );
}

#[test]
fn code_assistant_runs_python_and_patches_only_its_workspace() {
    let model = ScriptedServer::start();
    let workspace = tempfile::tempdir().expect("tempdir");
    std::fs::write(workspace.path().join("data.csv"), "a,b\n1,2\n3,4\n").expect("write");
    let outside = workspace
        .path()
        .parent()
        .expect("parent")
        .join(format!("escaped-{}.txt", std::process::id()));
    model.script(&[python_call(
        "print(len(open('/mnt/data/data.csv').read().splitlines()))",
    )]);
    let patch = "*** Begin Patch\n*** Add File: notes.md\n+three lines\n*** End Patch\n";
    model.script(&[call("functions.apply_patch", json!({"input": patch}))]);
    let escape = format!(
        "*** Begin Patch\n*** Add File: ../{}\n+out\n*** End Patch\n",
        outside.file_name().expect("name").to_string_lossy()
    );
    model.script(&[call("functions.apply_patch", json!({"input": escape}))]);
    model.script(&[final_answer("data.csv has 3 lines; noted in notes.md.")]);

    let stdout = run_scripted(
        "code_assistant",
        &model,
        &[
            "--workspace",
            workspace.path().to_str().expect("utf-8"),
            "How many lines has data.csv? Note it.",
        ],
        &[],
    );
    assert!(stdout.contains("data.csv has 3 lines"), "{stdout}");
    let prompts = model.prompt_texts();
    assert!(
        prompts[1].contains("<|start|>python to=assistant<|channel|>analysis<|message|>3\n"),
        "python read the workspace file: {}",
        prompts[1]
    );
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("notes.md")).expect("the patch wrote"),
        "three lines\n"
    );
    assert!(!outside.exists(), "a patch left the workspace");
    assert!(prompts[3].contains("Error"), "{}", prompts[3]);
}

#[test]
fn code_assistant_runs_on_the_tiny_agent() {
    let workspace = tempfile::tempdir().expect("tempdir");
    let fixture = support::fixture_dir();
    let output = example("code_assistant")
        .arg("--model")
        .arg(&fixture)
        // The tiny model knows its tasks only in the prompt it was trained with: its date and
        // Python alone.
        .args([
            "--dtype",
            "f32",
            "--no-patch",
            "--date",
            "2026-01-01",
            "--workspace",
        ])
        .arg(workspace.path())
        .arg("What is the sum of the squares of the integers from 1 to 22? Use python.")
        .output()
        .expect("code_assistant runs");
    let stdout = stdout_of_success("code_assistant on the tiny agent", &output);
    assert_eq!(
        stdout.trim(),
        "The sum of the squares from 1 to 22 is 3795.",
        "the trained answer"
    );
}

#[test]
fn custom_tools_check_arguments_and_search_only_the_notes() {
    let model = ScriptedServer::start();
    let notes = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        notes.path().join("tea.md"),
        "Tea notes\nSencha wants 70 degrees.\n",
    )
    .expect("write");
    std::fs::write(notes.path().join("coffee.md"), "Coffee notes\n").expect("write");
    model.script(&[call("functions.get_weather", json!({"city": 5}))]);
    model.script(&[call(
        "functions.get_weather",
        json!({"city": "Paris", "unit": "fahrenheit"}),
    )]);
    model.script(&[call("browser.search", json!({"query": "sencha"}))]);
    model.script(&[call("browser.open", json!({"id": 0}))]);
    model.script(&[call("browser.open", json!({"id": "notes:../secret.md"}))]);
    model.script(&[final_answer("Sencha at 70 degrees; Paris is clear.")]);

    let stdout = run_scripted(
        "custom_tools",
        &model,
        &[
            "--notes",
            notes.path().to_str().expect("utf-8"),
            "Tea temperature and the weather in Paris?",
        ],
        &[],
    );
    assert!(stdout.contains("Paris is clear"), "{stdout}");
    let prompts = model.prompt_texts();
    // Arguments that do not fit the Rust type's schema never reach the handler.
    assert!(
        prompts[1].contains("functions.get_weather to=assistant")
            && prompts[1].contains("invalid arguments")
            && !prompts[1].contains("\"temperature\""),
        "{}",
        prompts[1]
    );
    assert!(
        prompts[2]
            .contains(r#"{"city":"Paris","temperature":64.4,"unit":"fahrenheit","sky":"clear"}"#),
        "{}",
        prompts[2]
    );
    assert!(prompts[3].contains("tea.md") && !prompts[3].contains("coffee.md"));
    assert!(
        prompts[4].contains("Sencha wants 70 degrees."),
        "{}",
        prompts[4]
    );
    assert!(prompts[5].contains("no note named"), "{}", prompts[5]);
}

#[test]
fn the_openai_client_example_talks_to_ossa_serve() {
    let python = or_skip!(python_with_openai());
    let model = ScriptedServer::start();
    let server = model.serve(&["--python", "--temperature", "0"], None);
    model.script(&[final_answer("Hello")]);
    model.script(&[python_call("print(sum(i*i for i in range(1, 23)))")]);
    model.script(&[final_answer("The sum is 3795.")]);
    model.script(&[call("functions.get_weather", json!({"city": "Paris"}))]);
    model.script(&[final_answer("Paris is clear.")]);
    let script: PathBuf = ossa_test_support::workspace_root().join("examples/openai_client.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(&server.base)
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("python runs");
    let stdout = stdout_of_success("openai_client.py", &output);
    let lines: Vec<&str> = stdout.lines().collect();
    let models: Value = ureq::get(&format!("{}/models", server.base))
        .call()
        .expect("models")
        .into_json()
        .expect("JSON");
    let served = models["data"][0]["id"].as_str().expect("a model id");
    assert_eq!(
        lines,
        [
            format!("model: {served}").as_str(),
            "Hello",
            "python ran: 'print(sum(i*i for i in range(1, 23)))'",
            "The sum is 3795.",
            "Paris is clear.",
        ],
        "{stdout}"
    );
    // The client's function output reached the model.
    let prompts = model.prompt_texts();
    let last = prompts.last().expect("prompts");
    assert!(
        last.contains(r#"{"city": "Paris", "sky": "clear"}"#),
        "{last}"
    );
    // Python really ran: the model read its output.
    assert!(prompts[2].contains("3795"), "{}", prompts[2]);
}
