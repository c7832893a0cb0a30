//! `ossa chat` used as a person uses it: the real binary in a pseudo-terminal, with the tiny
//! trained agent model (tests/fixtures/gpt-oss-tiny-agent) and the real Python sandbox. The test
//! types at the prompt, reads the screen, uses the slash commands, presses Ctrl-C, and quits.
//!
//! HOME and the XDG folders point into a temporary folder so no user file is read or written;
//! OSSA_DATA_DIR keeps the real data folder so the Python runtime is not fetched again, and
//! OSSA_PROMPT_CACHE_DIR moves the prompt cache out of it.

mod support;
#[path = "support/terminal.rs"]
mod terminal;

use std::path::Path;
use std::process::Output;

use ossa::agent::harmony::{Content, Conversation, ReasoningEffort, Role};
use ossa_test_support::{run_piped, stdout_of_success};
use serde_json::Value;
use support::scripted::{MODEL, ScriptedServer, analysis, call};
use support::{SCENARIO_FLAGS, fixture_dir};
use terminal::{Terminal, ossa, strip_escapes};

const SUMSQ: &str = "What is the sum of the squares of the integers from 1 to 22? Use python.";
const SUMSQ_CALL: &str = "→ python: print(sum(i*i for i in range(1, 22+1)))";
const SUMSQ_ANSWER: &str = "The sum of the squares from 1 to 22 is 3795.";
const HELLO: &str = "Say hello in one word.";

/// `ossa chat` (the fixture, the scenarios' flags, a history in `home`) with `extra` flags,
/// `stdin` piped in.
fn chat_piped(home: &Path, extra: &[&str], stdin: &str) -> Output {
    let args = chat_args(&home.join("history"));
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(extra);
    run_piped(&mut ossa(home, &args), stdin)
}

/// The flags that make the tiny model answer its trained tasks.
fn chat_args(history: &Path) -> Vec<String> {
    let model = fixture_dir();
    [
        "chat",
        "--model",
        model.to_str().expect("utf-8"),
        "--dtype",
        "f32",
    ]
    .into_iter()
    .chain(SCENARIO_FLAGS)
    .chain(["--history"])
    .map(String::from)
    .chain([history.display().to_string()])
    .collect()
}

/// The numbers in `· N/M` (the status line's `N/M prompt tokens cached`) at the end of
/// `text`.
fn cache_figures(text: &str) -> (usize, usize) {
    let line = text.lines().last().unwrap_or("");
    let figures = line
        .rsplit("· ")
        .next()
        .and_then(|f| f.trim().split_once('/'))
        .unwrap_or_else(|| panic!("no cache figures in {line:?}"));
    (
        figures.0.parse().expect("a number"),
        figures.1.parse().expect("a number"),
    )
}

fn load(path: &Path) -> (Value, Conversation) {
    let text = std::fs::read_to_string(path).expect("the saved conversation");
    let value: Value = serde_json::from_str(&text).expect("JSON");
    let conversation = Conversation::from_json(&text).expect("a harmony conversation");
    (value, conversation)
}

fn effort_of(conversation: &Conversation) -> Option<ReasoningEffort> {
    conversation.messages[0]
        .content
        .iter()
        .find_map(|c| match c {
            Content::SystemContent(system) => system.reasoning_effort,
            _ => None,
        })
}

#[test]
fn chat_in_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history");
    let args = chat_args(&history);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut term = Terminal::spawn(ossa(home.path(), &args));

    // Startup: the banner, then the prompt.
    let banner = term.expect("/help");
    assert!(banner.contains("model gpt-oss-tiny-agent"), "{banner}");
    assert!(banner.contains("tools: python"), "{banner}");
    assert!(banner.contains("reasoning effort: low"), "{banner}");
    term.expect(">>> ");

    // A task: reasoning, the python call on one line, its result, the answer, the status.
    term.enter(SUMSQ);
    term.expect("I'll compute it with python.");
    term.expect(SUMSQ_CALL);
    term.expect("← python: 3795");
    term.expect(SUMSQ_ANSWER);
    let status = term.expect(" prompt tokens cached");
    assert!(status.contains("tok/s"), "{status}");
    assert!(status.contains("/131072"), "{status}");
    let (reused, prompt) = cache_figures(&status);
    assert!(
        reused > 0 && reused < prompt,
        "the second generation reuses the first's tokens: {status}"
    );
    let status_end = term.expect("]");
    assert!(status_end.contains("1 tool call"), "{status_end}");
    term.expect(">>> ");
    // On a terminal, reasoning is dimmed.
    let raw = String::from_utf8_lossy(&term.raw()).into_owned();
    assert!(
        raw.contains("\x1b[2mI'll compute it with python."),
        "{raw:?}"
    );

    // /save writes openai-harmony's JSON of the whole conversation.
    let saved = home.path().join("sumsq.json");
    term.enter(&format!("/save {}", saved.display()));
    term.expect("Saved 6 messages");
    let (value, conversation) = load(&saved);
    assert_eq!(value["messages"].as_array().map(Vec::len), Some(6));
    let messages = &conversation.messages;
    assert_eq!(messages[0].author.role, Role::System);
    assert_eq!(effort_of(&conversation), Some(ReasoningEffort::Low));
    assert_eq!(messages[1].author.role, Role::User);
    assert_eq!(messages[1].text(), SUMSQ);
    assert_eq!(messages[3].recipient.as_deref(), Some("python"));
    assert_eq!(
        messages[3].text(),
        "print(sum(i*i for i in range(1, 22+1)))"
    );
    assert_eq!(messages[4].author.role, Role::Tool);
    assert_eq!(messages[4].text(), "3795\n");
    assert_eq!(messages[5].channel.as_deref(), Some("final"));
    assert_eq!(messages[5].text(), SUMSQ_ANSWER);

    // /effort changes the system message from the next turn on.
    term.enter("/effort medium");
    term.expect("Reasoning effort: medium");
    let medium = home.path().join("medium.json");
    term.enter(&format!("/save {}", medium.display()));
    term.expect("Saved 6 messages");
    assert_eq!(effort_of(&load(&medium).1), Some(ReasoningEffort::Medium));
    term.converse(&[
        ("/effort low", "Reasoning effort: low"),
        ("/effort extreme", "low, medium or high"),
    ]);

    // /reset: the model sees a fresh conversation and answers the greeting it was trained on
    // (after the sum-of-squares exchange it would not).
    term.converse(&[("/reset", "New conversation."), (HELLO, "Simple greeting.")]);
    term.expect("Hello!");
    let status = term.expect(" prompt tokens cached");
    let (reused, _) = cache_figures(&status);
    assert!(reused > 0, "the system message is still cached: {status}");
    term.expect(">>> ");
    let after_reset = home.path().join("hello.json");
    term.enter(&format!("/save {}", after_reset.display()));
    term.expect("Saved 4 messages");
    let (_, hello) = load(&after_reset);
    assert_eq!(hello.messages[1].text(), HELLO);
    assert_eq!(hello.messages[3].text(), "Hello!");

    // /load continues a saved conversation: saving it again gives the same JSON.
    term.enter(&format!("/load {}", saved.display()));
    term.expect("Loaded 6 messages");
    let reloaded = home.path().join("reloaded.json");
    term.enter(&format!("/save {}", reloaded.display()));
    term.expect("Saved 6 messages");
    assert_eq!(load(&reloaded).0, load(&saved).0);
    // Also the output of `ossa run --json`, which holds the conversation in a field.
    let run_output = home.path().join("run.json");
    let wrapped = serde_json::json!({"answer": SUMSQ_ANSWER, "conversation": load(&saved).0});
    std::fs::write(&run_output, wrapped.to_string()).unwrap();
    term.converse(&[
        (
            &format!("/load {}", run_output.display()),
            "Loaded 6 messages",
        ),
        ("/load /no/such/file.json", "cannot read /no/such/file.json"),
    ]);
    term.expect(">>> ");

    // Ctrl-C at the prompt clears the line: what was typed is not sent.
    term.send("half a thought");
    term.send("\x03");
    term.enter("/tools");
    let tools = term.expect("/mnt/data is");
    assert!(tools.contains("python"), "{tools}");
    term.expect(">>> ");

    // Ctrl-C during a turn cancels the turn, not the program. The tiny model generates in
    // milliseconds, so the key goes in once the python call is on screen: it lands during the
    // call (a fresh interpreter starts after /reset) or, on a fast machine, after the turn.
    term.converse(&[("/reset", "New conversation."), (SUMSQ, SUMSQ_CALL)]);
    term.send("\x03");
    // After the notice nothing of the turn streams; either it was cancelled or it had ended.
    let (which, _) = term.expect_any(&[
        "[cancelled]",
        SUMSQ_ANSWER,
        "[the turn had finished before the cancel",
    ]);
    let cancelled = which == 0;
    term.expect(" prompt tokens cached");
    term.expect(">>> ");
    let after_cancel = home.path().join("cancelled.json");
    term.enter(&format!("/save {}", after_cancel.display()));
    term.expect("Saved ");
    let (_, partial) = load(&after_cancel);
    let turn = &partial.messages[2..];
    let last = partial.messages.last().unwrap();
    let phase = if !cancelled {
        assert_eq!(last.text(), SUMSQ_ANSWER);
        "came after the turn had finished"
    } else {
        // No answer was kept, and a call that was made got an answer (so the conversation
        // stays well-formed): the interrupted call's own, or the tool's.
        assert!(
            turn.iter().all(|m| m.channel.as_deref() != Some("final")),
            "{turn:?}"
        );
        for (index, message) in turn.iter().enumerate() {
            if message.recipient.as_deref() == Some("python") {
                let answer = turn.get(index + 1).expect("the call's answer");
                assert_eq!(answer.author.role, Role::Tool, "{turn:?}");
            }
        }
        match (last.author.role, last.text()) {
            (Role::Tool, text) if text.contains("cancelled") => "cancelled the python call",
            (Role::Tool, text) => {
                assert_eq!(text, "3795\n");
                "cancelled the generation of the answer"
            }
            _ => "cancelled the generation of the call",
        }
    };
    eprintln!("Ctrl-C during the turn: {phase}");
    // Still alive and answering.
    term.converse(&[("/reset", "New conversation."), (HELLO, "Hello!")]);
    term.expect(">>> ");

    // Ctrl-C at an empty prompt explains how to quit; /exit quits cleanly.
    term.send("\x03");
    term.expect("Ctrl-C again");
    term.enter("/exit");
    let status = term.wait();
    assert!(status.success(), "{status:?}\n{}", term.screen());
    eprintln!("---- the screen ----\n{}", term.screen());

    // Every line typed went to the history file.
    let history = std::fs::read_to_string(&history).expect("the history file");
    assert!(history.contains(SUMSQ), "{history}");
    assert!(history.contains("/effort medium"), "{history}");
}

#[test]
fn multi_line_input_continues_after_a_backslash() {
    let home = tempfile::tempdir().unwrap();
    let args = chat_args(&home.path().join("history"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut term = Terminal::spawn(ossa(home.path(), &args));
    term.expect(">>> ");
    // Two lines joined into the trained message; only the second Enter sends it.
    term.enter("Say hello \\");
    term.enter("in one word.");
    term.expect("Hello!");
    term.expect(">>> ");
    let saved = home.path().join("hello.json");
    term.enter(&format!("/save {}", saved.display()));
    term.expect("Saved 4 messages");
    assert_eq!(
        load(&saved).1.messages[1].text(),
        "Say hello \nin one word."
    );
    // Ctrl-D quits, once the editor is reading again (a ^D typed while the terminal is still
    // in cooked mode is the kernel's end-of-file, which the editor never sees).
    term.expect(">>> ");
    term.send("\x04");
    assert!(term.wait().success());
}

#[test]
fn piped_chat_prints_plain_text() {
    let home = tempfile::tempdir().unwrap();
    let out = chat_piped(home.path(), &[], &format!("{HELLO}\n"));
    let stdout = stdout_of_success("ossa chat", &out);
    assert!(stdout.contains("Simple greeting.\nHello!\n"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no terminal styles in a pipe: {stdout:?}"
    );
}

#[test]
fn set_and_show_change_and_report_the_conversation() {
    let home = tempfile::tempdir().unwrap();
    let saved = home.path().join("after-set.json");
    let input = format!(
        "/show\n/set temperature 0.25\n/set top_p 0.5\n/set developer Answer briefly.\n\
         /set top_p 2\n/set max_tokens 1\n/show\n{HELLO}\n/save {}\n",
        saved.display()
    );
    let out = chat_piped(home.path(), &["--no-python"], &input);
    let stdout = stdout_of_success("ossa chat", &out);
    // The banner and /show name the resident memory; piped input is echoed after the prompt.
    assert!(
        stdout.lines().next().unwrap().contains(" resident"),
        "{stdout}"
    );
    assert!(stdout.contains(">>> /set temperature 0.25\n"), "{stdout}");
    let shows: Vec<&str> = stdout.split(">>> /show\n").skip(1).collect();
    assert_eq!(shows.len(), 2, "{stdout}");
    let (before, after) = (shows[0], shows[1]);
    for (show, temperature, top_p, max_tokens, developer) in [
        (
            before,
            "temperature  0\n",
            "top_p        1\n",
            "max_tokens   none",
            "developer    none",
        ),
        (
            after,
            "temperature  0.25\n",
            "top_p        0.5\n",
            "max_tokens   1\n",
            "developer    Answer briefly.",
        ),
    ] {
        for expected in [
            temperature,
            top_p,
            max_tokens,
            developer,
            "tools        none",
            " resident\n",
        ] {
            assert!(show.contains(expected), "{expected:?} in {show}");
        }
        assert!(show.contains("model        "), "{show}");
        let context = show
            .lines()
            .find(|l| l.starts_with("context"))
            .expect("context line");
        assert!(context.ends_with(" tokens used"), "{context}");
    }
    // A bad value is refused and changes nothing.
    assert!(stdout.contains("/set top_p: "), "{stdout}");
    // The settings reach the turn: one token, then the limit.
    assert!(
        stdout.contains("[stopped: reached the limit of 1 tokens in one generation]"),
        "{stdout}"
    );
    let (_, conversation) = load(&saved);
    let developer = conversation
        .messages
        .iter()
        .find(|m| m.author.role == Role::Developer)
        .expect("a developer message");
    assert!(
        serde_json::to_string(&developer.content)
            .unwrap()
            .contains("Answer briefly."),
        "{developer:?}"
    );
}

#[test]
fn a_turn_past_the_context_bound_is_stopped_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let out = chat_piped(
        home.path(),
        &["--no-python", "--context", "40"],
        &format!("{HELLO}\n"),
    );
    let stdout = stdout_of_success("ossa chat", &out);
    assert!(
        stdout.contains("[stopped: the conversation needs "),
        "{stdout}"
    );
    assert!(stdout.contains("context holds 40"), "{stdout}");
    assert!(stdout.contains("--context N"), "{stdout}");
    assert!(!stdout.contains("Hello!"), "{stdout}");

    // The config file's key does the same.
    let config = home.path().join("config.toml");
    std::fs::write(&config, "context = 40\n").unwrap();
    let config_arg = config.display().to_string();
    let out = chat_piped(
        home.path(),
        &["--no-python", "--config", &config_arg],
        &format!("{HELLO}\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("context holds 40"), "{stdout}");
    // A bound is a count of tokens.
    let out = chat_piped(home.path(), &["--context", "0"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--context"));
}

#[test]
fn a_prompt_without_a_command_runs_one_turn() {
    let home = tempfile::tempdir().unwrap();
    let model = support::fixture_dir();
    let mut args = vec!["--model", model.to_str().unwrap(), "--dtype", "f32"];
    args.extend(SCENARIO_FLAGS);
    args.extend(["Say", "hello", "in", "one", "word."]);
    let out = run_piped(&mut ossa(home.path(), &args), "");
    let stdout = stdout_of_success("ossa chat", &out);
    assert_eq!(stdout.trim_end(), "Hello!");

    // A mistyped command is an error, not a prompt; chat's flags before one are explained.
    for (args, says) in [
        (&["rn"][..], "similar subcommand exists: 'run'"),
        (&["pyhton"][..], "similar subcommand exists: 'python'"),
        (&["--model", "m", "list"][..], "'list' is a command"),
        (&["--raw", "hello", "there"][..], "--raw applies to chat"),
    ] {
        let out = run_piped(&mut ossa(home.path(), args), "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn chat_is_the_default_command() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/ossa");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!("model = \"{}\"\ndtype = \"f32\"\n", fixture_dir().display()),
    )
    .unwrap();
    // No tools, so the data folder can be a temporary one.
    let data = home.path().join("ossa-data");
    let out = run_piped(
        ossa(home.path(), &[]).env("OSSA_DATA_DIR", &data),
        "/tools\n/exit\n",
    );
    let stdout = stdout_of_success("ossa chat", &out);
    assert!(stdout.contains("model gpt-oss-tiny-agent"), "{stdout}");
    assert!(stdout.contains("tools: none"), "{stdout}");
    assert!(stdout.contains("No tools."), "{stdout}");
    // Piped input is not history.
    assert!(!data.join("chat_history").exists());
}

#[test]
fn a_missing_model_is_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-model-here");
    let out = run_piped(
        &mut ossa(home.path(), &["chat", "--model", missing.to_str().unwrap()]),
        "",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(stderr.contains("no-model-here"), "{stderr}");
    assert!(stderr.contains("hint: pass --model"), "{stderr}");

    let out = run_piped(&mut ossa(home.path(), &["chat", "--temperature", "-1"]), "");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--temperature"), "{stderr}");
}

/// The `N/M` of the first status line `[... · N/M prompt tokens cached · ...]` in `stdout`:
/// prompt tokens reused and processed in all the turn's generations.
fn first_cache_figures(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" prompt tokens cached"))
        .unwrap_or_else(|| panic!("no status line in {stdout}"));
    let figures = line
        .split(" · ")
        .find_map(|part| part.strip_suffix(" prompt tokens cached"))
        .and_then(|f| f.split_once('/'))
        .unwrap_or_else(|| panic!("no cache figures in {line:?}"));
    (
        figures.0.parse().expect("a number"),
        figures.1.parse().expect("a number"),
    )
}

/// The positions of each read from the prompt cache on disk, from its debug log lines.
fn disk_reads(stderr: &str) -> Vec<usize> {
    stderr
        .lines()
        .filter(|l| l.contains("prompt cache: read"))
        .map(|l| {
            l.split_once("positions=")
                .and_then(|(_, rest)| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no positions in {l:?}"))
        })
        .collect()
}

/// A chat saved by one process and `/load`ed by the next continues from the prompt cache on
/// disk: its first generation reads the first process's prompt from disk (the debug log says
/// how much), and the turn answers exactly as with `--no-prompt-cache`, which reads nothing.
#[test]
fn a_loaded_chat_starts_from_the_prompt_cache() {
    let home = tempfile::tempdir().unwrap();
    let args = chat_args(&home.path().join("history"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let saved = home.path().join("hello.json");
    let run = |extra: &[&str], stdin: &str| {
        let mut all = args.clone();
        all.extend(extra);
        let mut command = ossa(home.path(), &all);
        command.env("RUST_LOG", "warn,ossa_engine::prompt_cache=debug");
        let out = run_piped(&mut command, stdin);
        let stderr = strip_escapes(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("WARN"), "no warning: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };

    let (first, log) = run(&[], &format!("{HELLO}\n/save {}\n", saved.display()));
    assert!(first.contains("Simple greeting.\nHello!\n"), "{first}");
    let (reused, first_prompt) = first_cache_figures(&first);
    assert_eq!(reused, 0, "an empty cache: {first}");
    assert!(disk_reads(&log).is_empty(), "{log}");

    let again = format!("/load {}\n{HELLO}\n", saved.display());
    let (loaded, log) = run(&[], &again);
    let reads = disk_reads(&log);
    // The first process's prompt and the `<|channel|>` its answer began with; the saved
    // conversation differs from there (a past turn keeps only its final message).
    assert_eq!(reads.first(), Some(&(first_prompt + 1)), "{log}");
    let (reused, prompt) = first_cache_figures(&loaded);

    let (cold, log) = run(&["--no-prompt-cache"], &again);
    assert!(disk_reads(&log).is_empty(), "{log}");
    let from_disk: usize = reads.iter().sum();
    assert_eq!(
        first_cache_figures(&cold),
        (reused - from_disk, prompt),
        "{cold}"
    );
    let answer = |text: &str| -> Vec<String> {
        text.lines()
            // The banner says how long the load took, which differs from run to run.
            .filter(|l| !l.contains(" prompt tokens cached") && !l.contains("(loaded in "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(answer(&loaded), answer(&cold));
}

/// Escape sequences written by the model (its reasoning and answer) or returned by a tool (a
/// page, a program's output) reach neither the terminal nor the model: a scripted model behind
/// `--backend openai-completions` opens a hostile page and runs hostile Python. On the
/// terminal only ossa's own styles remain; the model reads the tool results without them.
#[test]
fn escape_sequences_never_reach_the_terminal() {
    let model = ScriptedServer::start();
    let page = model.add_page(
        "hostile.html",
        "<title>Hostile\x1b[2J page</title><p>clip\x1b]52;c;cm0gLXJmIH4=\x07 board\u{9b}2J text</p>",
    );
    model.script(&[
        analysis("Reading\x1b[2J the\u{9b}H page."),
        call("browser.open", format!("{{\"id\": \"{page}\"}}")),
    ]);
    model.script_python_then_answer(
        "print('py\\x1b]52;c;aGk=\\x07thon\\x9b2J')",
        "The answer\x1b]52;c;aGk=\x07 is\x1b[2J forty\u{9b}2J two\x1b]8;;http://evil.example\x1b\\.",
    );

    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/ossa");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!(
            "[search]\nbackend = \"searxng\"\nurl = \"{}\"\n\n[browser]\nallow_private_addresses = true\n",
            model.root
        ),
    )
    .unwrap();
    let url = format!("{}/v1", model.root);
    let history = home.path().join("history");
    let args = [
        "chat",
        "--backend",
        "openai-completions",
        "--url",
        &url,
        "--remote-model",
        MODEL,
        "--browser",
        "--python",
        "--history",
        history.to_str().unwrap(),
    ];
    let mut term = Terminal::spawn(ossa(home.path(), &args));
    term.expect(">>> ");
    term.enter("How tall is it?");
    term.expect("The answer]52;c;aGk= is[2J forty2J two]8;;http://evil.example\\.");
    term.expect(">>> ");
    term.enter("/exit");
    assert!(term.wait().success());

    let raw = String::from_utf8_lossy(&term.raw()).into_owned();
    // ossa's own styling is there: dim reasoning, and the line the tool call replaces.
    assert!(raw.contains("\x1b[2mReading[2J theH page."), "{raw:?}");
    for hostile in [
        "\x1b]52",
        "\x1b[2J",
        "\u{9b}",
        "\x07",
        "\x1b]8;;http://evil",
    ] {
        assert!(
            !raw.contains(hostile),
            "{hostile:?} reached the terminal: {raw:?}"
        );
    }
    assert!(
        raw.contains("← browser.open: [0] Hostile[2J page"),
        "{raw:?}"
    );
    assert!(raw.contains("← python: py]52;c;aGk=thon2J"), "{raw:?}");

    // The model read the page and the program's output without their control characters.
    let prompts = model.prompt_texts();
    assert_eq!(prompts.len(), 3);
    let tool_text = |prompt: &str, author: &str| {
        let start = prompt
            .rfind(&format!("<|start|>{author} to=assistant"))
            .unwrap_or_else(|| panic!("no {author} message in {prompt}"));
        let body = &prompt[start..];
        body[..body.find("<|end|>").expect("the message ends")].to_string()
    };
    let page_text = tool_text(&prompts[1], "browser.open");
    assert!(
        page_text.contains("clip]52;c;cm0gLXJmIH4= board2J text"),
        "{page_text:?}"
    );
    let python_text = tool_text(&prompts[2], "python");
    assert!(
        python_text.ends_with("<|message|>py]52;c;aGk=thon2J\n"),
        "{python_text:?}"
    );
    for text in [page_text, python_text] {
        assert!(
            !text.contains(|c: char| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }
}
