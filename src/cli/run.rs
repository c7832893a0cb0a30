//! `ossa run`: one task (or a batch of them) in, the final answer out, no prompt. For automated
//! research and scripts: `--json` gives the whole transcript with tool calls, sources and timings.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use std::sync::Arc;

use ossa::agent::{
    Agent, AgentEvent, CancellationToken, Chat, JsonSchema, StructuredOutputs, TurnOutcome,
    TurnReport,
};
use ossa::app::{App, TurnLimits};
use ossa::config::ConfigArgs;
use ossa::engine::PromptCacheStats;
use ossa::tools::citations::normalize_citations;
use ossa::tools::strip_controls;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The task; `-` reads it from stdin.
    #[arg(value_name = "TASK", required_unless_present = "batch")]
    task: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the whole transcript as JSON (messages, tool calls, sources, timings).
    #[arg(long)]
    json: bool,
    /// Run every task of a JSONL file (each line a JSON string, or an object with `task` and
    /// an optional `id`), each in a fresh conversation; one JSON result per line comes out.
    #[arg(long, value_name = "FILE", conflicts_with = "task")]
    batch: Option<PathBuf>,
    /// Where batch results go [default: stdout].
    #[arg(short, long, value_name = "FILE", requires = "batch")]
    output: Option<PathBuf>,
    /// Most tool calls one task may make.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_tool_calls: usize,
    /// Most seconds one task may take.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// No progress on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// The answer is JSON following this JSON schema (a file), enforced while sampling; the
    /// reasoning stays free. Needs the in-process engine.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
}

impl RunArgs {
    /// `ossa PROMPT`: one task with these settings and `run`'s defaults otherwise.
    pub fn prompt(task: String, config: ConfigArgs) -> anyhow::Result<Self> {
        use clap::{Args, FromArgMatches};
        let matches = Self::augment_args(clap::Command::new("run"))
            .try_get_matches_from(["run", "--", &task])?;
        let mut args = Self::from_arg_matches(&matches)?;
        args.config = config;
        Ok(args)
    }
}

/// One task of a batch.
struct Task {
    id: Option<Value>,
    text: String,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let wall_time = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--timeout: `{s}` is not a positive number of seconds"),
        None => None,
    };
    let tasks = read_tasks(&args)?;
    let schema = args.schema.clone().map(read_schema).transpose()?;
    let settings = args.config.clone().resolve()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let progress = ossa::app::load_progress(args.quiet);
        let limits = TurnLimits {
            max_tool_calls: args.max_tool_calls,
            wall_time,
        };
        // A spinner with the elapsed time while the model is fetched and loaded (only on a
        // terminal; `--quiet` and pipes stay silent).
        let spinner = if args.quiet {
            None
        } else {
            ossa::sandbox::spinner(&format!("Loading {}…", settings.model))
        };
        let started = ossa::app::start_with(settings, progress, limits).await;
        if let Some(spinner) = spinner {
            spinner.finish_and_clear();
        }
        let app = started?;
        for warning in &app.toolset.warnings {
            eprintln!("warning: {}", strip_controls(warning));
        }
        let agent = match &schema {
            Some((path, schema)) => structured_agent(&app, path, schema)?,
            None => Arc::clone(&app.agent),
        };
        let result = run_tasks(&app, &agent, &args, tasks).await;
        app.toolset.shutdown().await;
        result
    })
}

/// `--schema FILE`: read before the model loads, so a bad file fails at once.
fn read_schema(path: PathBuf) -> anyhow::Result<(PathBuf, Value)> {
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--schema: cannot read {}", path.display()))?;
    let schema = serde_json::from_str(&text)
        .with_context(|| format!("--schema: {} is not JSON", path.display()))?;
    Ok((path, schema))
}

/// The app's agent with its answers constrained to `schema`.
fn structured_agent(
    app: &App,
    path: &std::path::Path,
    schema: &Value,
) -> anyhow::Result<Arc<Agent>> {
    if !app.agent.backend().samples_locally() {
        bail!(
            "--schema needs the in-process engine: {} cannot constrain only the answer",
            app.model
        );
    }
    let answer =
        JsonSchema::compile(app.agent.encoding().tokenizer(), schema).with_context(|| {
            format!(
                "--schema: {} is not a schema ossa can enforce",
                path.display()
            )
        })?;
    Ok(app.agent.with_structured_outputs(StructuredOutputs {
        answer: Some(answer),
        ..StructuredOutputs::default()
    }))
}

fn read_tasks(args: &RunArgs) -> anyhow::Result<Vec<Task>> {
    if let Some(path) = &args.batch {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open the batch file {}", path.display()))?;
        let mut tasks = Vec::new();
        for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let where_ = || format!("{} line {}", path.display(), number + 1);
            let value: Value =
                serde_json::from_str(&line).with_context(|| format!("{}: not JSON", where_()))?;
            let task = match value {
                Value::String(text) => Task { id: None, text },
                Value::Object(mut object) => match object.remove("task") {
                    Some(Value::String(text)) => Task {
                        id: object.remove("id"),
                        text,
                    },
                    _ => bail!("{}: an object needs a string field `task`", where_()),
                },
                _ => bail!(
                    "{}: a task is a JSON string or an object with `task`",
                    where_()
                ),
            };
            tasks.push(task);
        }
        if tasks.is_empty() {
            bail!("{} holds no tasks", path.display());
        }
        return Ok(tasks);
    }
    let text = match args.task.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the task from stdin")?;
            text
        }
        Some(text) => text.to_string(),
        None => bail!("give a task, `-` to read it from stdin, or --batch FILE"),
    };
    if text.trim().is_empty() {
        bail!("the task is empty");
    }
    Ok(vec![Task {
        id: None,
        text: text.trim_end().to_string(),
    }])
}

async fn run_tasks(
    app: &App,
    agent: &Arc<Agent>,
    args: &RunArgs,
    tasks: Vec<Task>,
) -> anyhow::Result<ExitCode> {
    let batch = args.batch.is_some();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut failed = 0;
    let mut interrupted = false;
    for task in tasks {
        let mut chat = agent.chat(&app.conversation_settings());
        let cancel = CancellationToken::new();
        let ctrl_c = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            })
        };
        let quiet = args.quiet;
        let mut on_event = move |event: AgentEvent| {
            if !quiet {
                show_progress(&event);
            }
        };
        let disk_before = prompt_cache_stats(app);
        let result = chat.send(&task.text, &cancel, &mut on_event).await;
        let disk = prompt_cache_stats(app)
            .zip(disk_before)
            .map(|(after, before)| after.since(&before));
        ctrl_c.abort();
        let report = match result {
            Ok(report) => report,
            Err(error) if batch => {
                failed += 1;
                let line = json!({"id": task.id, "task": task.text, "error": error.to_string()});
                writeln!(out, "{}", escape_c1(&line.to_string()))?;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if !quiet {
            eprintln!("{}", summary(&report, app, disk.as_ref()));
        }
        if report.outcome != TurnOutcome::Final {
            failed += 1;
        }
        interrupted |= report.outcome == TurnOutcome::Cancelled;
        if batch || args.json {
            let transcript = transcript(app, &chat, &task, &report, disk.as_ref());
            let json = if batch {
                transcript.to_string()
            } else {
                serde_json::to_string_pretty(&transcript)?
            };
            writeln!(out, "{}", escape_c1(&json))?;
        } else {
            match answer(&chat, &report) {
                Some(answer) => writeln!(out, "{}", strip_controls(&answer))?,
                None => eprintln!("error: no answer: {}", outcome_text(&report.outcome)),
            }
        }
        out.flush()?;
        if interrupted {
            break;
        }
    }
    Ok(if interrupted {
        ExitCode::from(130)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The final answer with the browser's citations turned into links.
fn answer(chat: &Chat, report: &TurnReport) -> Option<String> {
    let raw = report.answer.as_deref()?;
    Some(normalize_citations(raw, &chat.citation_urls(), true).text)
}

fn outcome_text(outcome: &TurnOutcome) -> String {
    match outcome {
        TurnOutcome::Final => "final".into(),
        TurnOutcome::NoAnswer => "the model stopped without a final answer".into(),
        TurnOutcome::Cancelled => "cancelled".into(),
        TurnOutcome::Limit(limit) => limit.to_string(),
        // Only `ossa serve` declares client functions.
        TurnOutcome::FunctionCalls(_) => "the model called functions".into(),
    }
}

/// One line per tool call and result on stderr, so a long run shows what it is doing. What
/// the model or a tool wrote is shown without control characters (no escape sequences).
fn show_progress(event: &AgentEvent) {
    match event {
        AgentEvent::ToolCall(call) => {
            eprintln!(
                "→ {}: {}",
                strip_controls(&call.recipient),
                one_line(&call.content, 100)
            );
        }
        AgentEvent::ToolResult { output, .. } => {
            eprintln!(
                "← {}: {}",
                strip_controls(&output.author),
                one_line(&output.content, 100)
            );
            for file in &output.files {
                eprintln!("  file: {}", strip_controls(&file.display().to_string()));
            }
        }
        AgentEvent::Warning(warning) => eprintln!("warning: {}", strip_controls(warning)),
        _ => {}
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = strip_controls(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// The prompt cache's counters so far; `None` when it is off or the backend is remote.
fn prompt_cache_stats(app: &App) -> Option<PromptCacheStats> {
    app.engine.as_ref()?.with_engine(|e| e.prompt_cache_stats())
}

/// JSON text with the C1 control characters inside its strings written as `\u` escapes
/// (serde_json escapes only C0): the same value, and nothing a terminal would obey.
fn escape_c1(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn summary(report: &TurnReport, app: &App, disk: Option<&PromptCacheStats>) -> String {
    let speed = report
        .generations
        .iter()
        .rev()
        .find_map(|g| g.decode_tokens_per_second())
        .map_or(String::new(), |s| format!(", {s:.1} tok/s"));
    // Only a later call can hit the cache in memory; the first one can hit the one on disk.
    let read = disk.map_or(0, |d| d.read_tokens);
    let possible = report.generations.len().saturating_sub(1) + usize::from(read > 0);
    let from_disk = if read > 0 {
        format!(", {read} from disk")
    } else {
        String::new()
    };
    format!(
        "[{}; {} generation calls, {} tokens generated{speed}, {} tool calls, prefix cache hits {}/{} ({} prompt tokens reused{from_disk}); {:.1} s; model {}]",
        outcome_text(&report.outcome),
        report.generations.len(),
        report.generated_tokens(),
        report.tool_calls,
        report.cache_hits(),
        possible,
        report.reused_tokens(),
        report.elapsed.as_secs_f64(),
        app.model,
    )
}

/// Everything about one task, for `--json` and batch output.
fn transcript(
    app: &App,
    chat: &Chat,
    task: &Task,
    report: &TurnReport,
    disk: Option<&PromptCacheStats>,
) -> Value {
    let messages = &chat.conversation().messages[report.first_message..];
    let mut tool_calls = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let Some(recipient) = message.recipient.as_deref() else {
            continue;
        };
        if message.author.role != ossa::agent::harmony::Role::Assistant {
            continue;
        }
        let outputs: Vec<Value> = messages[index + 1..]
            .iter()
            .take_while(|m| m.author.role == ossa::agent::harmony::Role::Tool)
            .map(|m| json!({"author": m.author.name, "content": m.text()}))
            .collect();
        tool_calls.push(json!({
            "recipient": recipient,
            "channel": message.channel,
            "content_type": message.content_type,
            "arguments": message.text(),
            "outputs": outputs,
        }));
    }
    let urls = chat.citation_urls();
    let normalized = report
        .answer
        .as_deref()
        .map(|raw| normalize_citations(raw, &urls, true));
    let generations: Vec<Value> = report
        .generations
        .iter()
        .map(|g| {
            json!({
                "prompt_tokens": g.prompt_tokens,
                "reused_tokens": g.reused_tokens,
                "generated_tokens": g.generated_tokens,
                "prefill_s": g.prefill.as_secs_f64(),
                "decode_s": g.decode.as_secs_f64(),
                "decode_tokens_per_s": g.decode_tokens_per_second(),
            })
        })
        .collect();
    let conversation: Value =
        serde_json::from_str(&chat.conversation().to_json()).unwrap_or(Value::Null);
    json!({
        "id": task.id,
        "task": task.text,
        "outcome": match &report.outcome {
            TurnOutcome::Final => "final",
            TurnOutcome::NoAnswer => "no_answer",
            TurnOutcome::Cancelled => "cancelled",
            TurnOutcome::Limit(_) => "limit",
            TurnOutcome::FunctionCalls(_) => "function_calls",
        },
        "outcome_detail": outcome_text(&report.outcome),
        "answer": normalized.as_ref().map(|n| n.text.clone()),
        "raw_answer": report.answer,
        "citations": normalized.map(|n| n.annotations).unwrap_or_default(),
        "sources": urls,
        "messages": messages,
        "tool_calls": tool_calls,
        "timings": {
            "total_s": report.elapsed.as_secs_f64(),
            "generations": generations,
        },
        "cache_hits": report.cache_hits(),
        "reused_tokens": report.reused_tokens(),
        // What the prompt cache on disk did in this task; null when it is off.
        "prompt_cache": disk.map(|d| json!({
            "read_tokens": d.read_tokens,
            "read_bytes": d.read_bytes,
            "read_s": d.read_time.as_secs_f64(),
            "written_tokens": d.written_tokens,
            "written_bytes": d.written_bytes,
            "write_s": d.write_time.as_secs_f64(),
            "rejected_files": d.rejected_files,
            "evicted_files": d.evicted_files,
        })),
        "model": app.model,
        "date": app.settings.date,
        "reasoning_effort": app.settings.reasoning_effort.as_str(),
        "conversation": conversation,
    })
}
