//! `ossa tool NAME ARGS [NAME ARGS]...`: call tools directly, without a model, and print what
//! the model would read. For checking a setup (the search key, the sandbox, MCP servers) and for
//! seeing a tool's output exactly.
//!
//! The tools are built from the config file as `ossa chat` builds them (search service, browser
//! and Python limits, `apply_patch` workspace, MCP servers), with this command's flags on top.
//! Several calls in one invocation share one conversation: Python variables and the browser's
//! pages carry over, so `browser.open` then `browser.find` works.
//!
//! stdout gets the tool messages' text and nothing else, as the model reads it: byte for byte,
//! less control characters (the agent loop strips them too, so a page or a program cannot send
//! escape sequences to the terminal), with a newline added after a message that lacks one only
//! between messages or on a terminal; files, headers and notes go to stderr. The exit status is
//! 0 when every call ran, whatever its result said, and non-zero when one could not run at all
//! (no sandbox, no search key, bad arguments).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ossa::config::{Config, parse_backend};
use ossa::toolset::{ToolChoice, Toolset, build_tools};
use ossa_sandbox::{Progress, Sandbox, SandboxConfig};
use ossa_tools::browser::SearchBackendKind;
use ossa_tools::function::is_valid_function_name;
use ossa_tools::python::{PythonSession, PythonTool, model_output};
use ossa_tools::{FunctionTools, Tool, ToolCall, ToolSession, strip_controls};
use serde_json::Value;

const EXAMPLES: &str = "\
Examples:
  ossa tool python 'print(6*7)'
  ossa tool browser.search '{\"query\": \"gpt-oss\"}' browser.open '{\"id\": 1}'
  ossa tool browser.open '{\"id\": \"https://example.com\"}' browser.find '{\"pattern\": \"domain\"}'
  ossa tool --workspace . functions.apply_patch - < change.patch";

/// The built-in browser commands.
const BROWSER_COMMANDS: [&str; 3] = ["search", "open", "find"];

#[derive(Debug, clap::Args)]
#[command(
    after_help = EXAMPLES,
    override_usage = "ossa tool [OPTIONS] NAME ARGS [NAME ARGS]..."
)]
pub struct ToolArgs {
    /// A tool and its message, repeated for more calls in one conversation: `python CODE`,
    /// `browser.search|open|find JSON`, `functions.NAME JSON` (apply_patch takes the patch text).
    /// A message `-` is read from stdin.
    #[arg(value_names = ["NAME", "ARGS"], num_args = 1.., required = true)]
    calls: Vec<String>,
    /// Config file [default: $XDG_CONFIG_HOME/ossa/config.toml, else ~/.config/ossa/config.toml;
    /// OSSA_CONFIG names another].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Offer functions.apply_patch, confined to this folder (overrides the config's
    /// `apply_patch_workspace`).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Host folder the Python code sees at /mnt/data [default: a temporary folder, removed on
    /// exit].
    #[arg(long, value_name = "DIR")]
    mount: Option<PathBuf>,
    /// Wall-clock limit of a Python call, in seconds [default: the config's, else 120].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Search service: duckduckgo, exa, you, brave, tavily or searxng.
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    search_backend: Option<SearchBackendKind>,
    /// Let the browser open loopback and private-network addresses (refused by default, so a
    /// page cannot steer the model into the local network).
    #[arg(long)]
    allow_private_addresses: bool,
}

/// Which tool a call goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Python,
    Browser,
    /// The function's name, without `functions.`.
    Function(String),
}

#[derive(Debug)]
struct Call {
    target: Target,
    call: ToolCall,
}

pub fn run(args: ToolArgs) -> anyhow::Result<ExitCode> {
    let calls = parse_calls(&args.calls, &mut std::io::stdin().lock())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_calls(args, calls))
}

/// The calls from the command line, checked before anything starts: known tools, a message
/// each, JSON where the browser needs it, at most one message from stdin.
fn parse_calls(words: &[String], stdin: &mut dyn Read) -> anyhow::Result<Vec<Call>> {
    if !words.len().is_multiple_of(2) {
        bail!(
            "`{}` has no ARGS: each tool name is followed by its message (`-` reads it from stdin)",
            words[words.len() - 1]
        );
    }
    if words
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|m| *m == "-")
        .count()
        > 1
    {
        bail!("only one message can be read from stdin (`-`)");
    }
    let mut calls = Vec::new();
    for pair in words.chunks(2) {
        let (name, message) = (&pair[0], &pair[1]);
        let target = parse_target(name)?;
        let content = if message == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .context("cannot read the message from stdin (it must be UTF-8 text)")?;
            text
        } else {
            message.clone()
        };
        if target == Target::Browser {
            check_json_object(name, &content, true)?;
        }
        let (channel, content_type) = match target {
            Target::Python => ("analysis", Some("code")),
            Target::Browser => ("analysis", None),
            Target::Function(_) => ("commentary", Some("<|constrain|>json")),
        };
        calls.push(Call {
            target,
            call: ToolCall {
                recipient: name.clone(),
                channel: Some(channel.into()),
                content_type: content_type.map(str::to_string),
                content,
            },
        });
    }
    Ok(calls)
}

fn parse_target(name: &str) -> anyhow::Result<Target> {
    if name == "python" {
        return Ok(Target::Python);
    }
    if let Some(command) = name.strip_prefix("browser.") {
        if BROWSER_COMMANDS.contains(&command) {
            return Ok(Target::Browser);
        }
        bail!(
            "unknown browser command `{name}`: expected browser.search, browser.open or browser.find"
        );
    }
    if let Some(function) = name.strip_prefix("functions.") {
        if is_valid_function_name(function) {
            return Ok(Target::Function(function.to_string()));
        }
        bail!("`{function}` is not a valid function name");
    }
    bail!(
        "unknown tool `{name}`: expected python, browser.search, browser.open, browser.find or \
         functions.NAME"
    )
}

/// Checks that `content` is a JSON object (empty text counts as `{}` when `empty_ok`), so a typo
/// is reported here rather than passed on as the model's mistake.
fn check_json_object(name: &str, content: &str, empty_ok: bool) -> anyhow::Result<()> {
    if empty_ok && content.trim().is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(other) => bail!(
            "the ARGS of {name} must be a JSON object, got {}: `{content}`",
            json_kind(&other)
        ),
        Err(error) => bail!(
            "the ARGS of {name} are not valid JSON ({error}): `{content}`; give a JSON object, \
             e.g. '{{\"query\": \"...\"}}'"
        ),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The sessions of the tools the calls need, opened once for the whole invocation.
struct Tools {
    python: Option<PythonSession>,
    /// Files the Python code writes outlive the command (a mount was given).
    python_files_kept: bool,
    browser: Option<Box<dyn ToolSession>>,
    functions: FunctionTools,
    toolset: Option<Toolset>,
}

async fn run_calls(args: ToolArgs, calls: Vec<Call>) -> anyhow::Result<ExitCode> {
    let mut tools = open_tools(&args, &calls).await?;
    let result = tokio::select! {
        result = call_all(&mut tools, &calls) => result,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the running call cancels it (a Python cell is stopped).
            eprintln!("ossa: cancelled");
            Ok(ExitCode::from(130))
        }
    };
    if let Some(toolset) = &tools.toolset {
        toolset.shutdown().await;
    }
    result
}

async fn open_tools(args: &ToolArgs, calls: &[Call]) -> anyhow::Result<Tools> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(kind) = args.search_backend
        && config.search.backend != Some(kind)
    {
        // The file's key and URL belong to the file's backend, not to this one.
        config.search.backend = Some(kind);
        config.search.api_key = None;
        config.search.base_url = None;
    }
    if args.allow_private_addresses {
        config.browser.allow_private_addresses = Some(true);
    }
    if let Some(workspace) = &args.workspace {
        config.tools.apply_patch_workspace = Some(workspace.clone());
    }
    if let Some(mount) = &args.mount {
        config.python.mount = Some(mount.clone());
    }
    let needs = |f: fn(&Target) -> bool| calls.iter().any(|c| f(&c.target));
    let wants_python = needs(|t| *t == Target::Python);
    let wants_browser = needs(|t| *t == Target::Browser);
    let wants_functions = needs(|t| matches!(t, Target::Function(_)));

    let python = if wants_python {
        let mut limits = config.sandbox_limits();
        if let Some(seconds) = args.timeout {
            if !(seconds.is_finite() && seconds > 0.0) {
                bail!("--timeout must be a positive number of seconds, got {seconds}");
            }
            limits.call.deadline = Duration::from_secs_f64(seconds);
        }
        let mut sandbox_config = SandboxConfig::from_env()?;
        sandbox_config.limits = limits;
        sandbox_config.runtime.progress = Progress::Stderr;
        let sandbox = Sandbox::open_async(sandbox_config)
            .await
            .context("cannot start the Python sandbox")?;
        Some(PythonTool::new(sandbox, config.python_session_options()).session())
    } else {
        None
    };

    let (browser, functions, toolset) = if wants_browser || wants_functions {
        if !wants_functions {
            // Only the functions need the MCP servers started.
            config.mcp_servers.clear();
            config.tools.apply_patch_workspace = None;
        }
        let choice = ToolChoice {
            browser: wants_browser,
            python: false,
        };
        let toolset = build_tools(&config, &choice, Progress::Stderr).await?;
        for warning in &toolset.warnings {
            eprintln!("ossa: warning: {}", strip_controls(warning));
        }
        let browser = toolset
            .tools
            .iter()
            .find(|tool| tool.name() == "browser")
            .map(|tool| tool.open_session());
        let functions = toolset.functions.clone();
        (browser, functions, Some(toolset))
    } else {
        (None, FunctionTools::new(), None)
    };

    for call in calls {
        if let Target::Function(name) = &call.target {
            check_function(&functions, name, &call.call)?;
        }
    }
    Ok(Tools {
        python,
        python_files_kept: config.python.mount.is_some(),
        browser,
        functions,
        toolset,
    })
}

/// The function exists, and its arguments are a JSON object when its parameters are one.
fn check_function(functions: &FunctionTools, name: &str, call: &ToolCall) -> anyhow::Result<()> {
    let namespace = functions.namespace();
    let Some(description) = namespace.tools.iter().find(|t| t.name == name) else {
        let available = functions.names();
        let available = if available.is_empty() {
            "no functions are configured".to_string()
        } else {
            format!("the functions are {}", available.join(", "))
        };
        bail!(
            "no function `{name}`: {available} (apply_patch needs --workspace DIR; MCP tools come \
             from the config file's [[mcp_servers]])"
        );
    };
    let takes_object = description
        .parameters
        .as_ref()
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        == Some("object");
    if takes_object {
        check_json_object(&call.recipient, &call.content, false)?;
    }
    Ok(())
}

async fn call_all(tools: &mut Tools, calls: &[Call]) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal();
    for (index, call) in calls.iter().enumerate() {
        if calls.len() > 1 {
            eprintln!("==> {} <==", call.call.recipient);
        }
        let more = index + 1 < calls.len();
        match &call.target {
            Target::Python => {
                let Some(session) = tools.python.as_mut() else {
                    bail!("the Python tool is not open");
                };
                let out = session
                    .run(&call.call.content)
                    .await
                    .context("python: the code could not run")?;
                emit(&model_output(&out), more, terminal)?;
                for file in &out.files {
                    if tools.python_files_kept {
                        eprintln!(
                            "ossa: wrote {} ({} bytes): {}",
                            strip_controls(&file.guest_path),
                            file.bytes,
                            strip_controls(&file.host_path.display().to_string())
                        );
                    } else {
                        eprintln!(
                            "ossa: wrote {} ({} bytes; removed on exit, --mount DIR keeps files)",
                            strip_controls(&file.guest_path),
                            file.bytes
                        );
                    }
                }
                if out.files_omitted > 0 {
                    eprintln!("ossa: and {} more files", out.files_omitted);
                }
            }
            Target::Browser => {
                let Some(session) = tools.browser.as_mut() else {
                    bail!("the browser is not open");
                };
                let outputs = session.call(&call.call).await;
                let count = outputs.len();
                for (i, output) in outputs.iter().enumerate() {
                    emit(&output.content, more || i + 1 < count, terminal)?;
                }
            }
            Target::Function(_) => {
                let output = tools.functions.call(&call.call).await;
                emit(&output.content, more, terminal)?;
                for file in &output.files {
                    eprintln!("ossa: file {}", strip_controls(&file.display().to_string()));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a message's text as the model reads it (control characters removed); a newline
/// follows one that lacks it when more text follows or a person is reading.
fn emit(text: &str, more: bool, terminal: bool) -> anyhow::Result<()> {
    let text = strip_controls(text);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') && (more || terminal) {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn calls_are_checked_before_anything_runs() {
        let mut empty: &[u8] = b"";
        let calls = parse_calls(
            &words(&[
                "python",
                "print(1)",
                "browser.open",
                "",
                "functions.f",
                "{}",
            ]),
            &mut empty,
        )
        .unwrap();
        assert_eq!(
            calls.iter().map(|c| c.target.clone()).collect::<Vec<_>>(),
            vec![
                Target::Python,
                Target::Browser,
                Target::Function("f".into())
            ]
        );
        assert_eq!(calls[0].call.content_type.as_deref(), Some("code"));

        let error = |list: &[&str]| {
            let mut empty: &[u8] = b"";
            parse_calls(&words(list), &mut empty)
                .unwrap_err()
                .to_string()
        };
        assert!(error(&["python"]).contains("`python` has no ARGS"));
        assert!(error(&["browser.click", "{}"]).contains("unknown browser command"));
        assert!(error(&["shell", "ls"]).contains("unknown tool `shell`"));
        assert!(error(&["functions.a b", "{}"]).contains("not a valid function name"));
        assert!(error(&["python", "-", "python", "-"]).contains("only one message"));
        let bad = error(&["browser.search", "{query: 1}"]);
        assert!(bad.contains("are not valid JSON"), "{bad}");
        assert!(error(&["browser.open", "[1]"]).contains("must be a JSON object, got an array"));
    }

    #[test]
    fn a_dash_reads_the_message_from_stdin() {
        let mut stdin: &[u8] = b"print('from stdin')\n";
        let calls = parse_calls(&words(&["python", "-"]), &mut stdin).unwrap();
        assert_eq!(calls[0].call.content, "print('from stdin')\n");
    }
}
