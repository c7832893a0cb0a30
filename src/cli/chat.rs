//! `ossa chat` (the default command): the interactive REPL.
//!
//! A rustyline prompt with persistent history and multi-line input. Each turn streams as it
//! happens: reasoning dimmed, preambles and the answer as plain text with citations turned into
//! links, each tool call and result on one line (in full with `--show-tool-output`), files the
//! tools wrote with their host paths, and a status line at the end. Ctrl-C cancels the running
//! turn, not the program.

mod images;
mod render;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context as _, anyhow};
use ossa::agent::harmony::{Content, Conversation, Message, ReasoningEffort, Role};
use ossa::agent::{Agent, AgentConfig, AgentEvent, CancellationToken, Chat};
use ossa::app::{App, StartError};
use ossa::config::{ConfigArgs, parse_count, parse_effort, parse_temperature, parse_top_p};
use ossa::sandbox::Progress;
use ossa::tools::strip_controls;
use ossa::toolset::ToolsetError;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{
    ConditionalEventHandler, Editor, Event, EventContext, EventHandler, Helper, KeyEvent, Movement,
    RepeatCount,
};

use render::{Renderer, Tone, View, paint, truncate};

use super::prompt::{self, History};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Do not show the model's reasoning (shown dimmed by default).
    #[arg(long)]
    hide_reasoning: bool,
    /// Show tool calls and their results in full instead of one line each.
    #[arg(long)]
    show_tool_output: bool,
    /// Print the raw harmony text of every message instead of formatted output (`/raw`
    /// toggles it).
    #[arg(long)]
    raw: bool,
    /// The prompt's history file [default: chat_history in ossa's data folder,
    /// $OSSA_DATA_DIR or ~/.local/share/ossa].
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
}

impl ChatArgs {
    /// The first flag set that only chat uses, if any.
    pub fn chat_only_flag(&self) -> Option<&'static str> {
        [
            (self.hide_reasoning, "--hide-reasoning"),
            (self.show_tool_output, "--show-tool-output"),
            (self.raw, "--raw"),
            (self.history.is_some(), "--history"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }

    /// The model and tool settings, for a one-turn run.
    pub fn into_config(self) -> ConfigArgs {
        self.config
    }
}

const PROMPT: &str = ">>> ";
const HISTORY_FILE: &str = "chat_history";
/// Width for one-line summaries when the terminal does not say.
const DEFAULT_WIDTH: usize = 100;

const HELP: &str = "\
Type a message and press Enter. End a line with \\ to go on on the next line; text inside
``` fences may span lines. Start a message with // to send text that begins with /.

  /reset                   start a new conversation (the tools' state too)
  /effort low|medium|high  how hard the model thinks, from the next turn on
  /tools                   the tools the model has
  /set temperature T       sampling temperature (0: greedy), from the next turn on
  /set top_p P             nucleus sampling, in (0, 1]
  /set max_tokens N|none   most tokens of one model response
  /set developer [TEXT]    the developer message's instructions (none: removed)
  /show                    model, memory, context used, tools and settings
  /save FILE               save the conversation as JSON (openai-harmony's format)
  /load FILE               continue a saved conversation
  /raw                     show the raw harmony text of messages (toggle)
  /help                    this help
  /exit                    quit (also Ctrl-D)

Ctrl-C cancels a running turn; at the prompt it clears the line, and at an empty prompt
pressed twice it quits.";

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let settings = args.config.clone().resolve()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let tools: Vec<&str> = [
        (settings.tools.browser, "browser"),
        (settings.tools.python, "python"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let loading = format!(
        "Loading {}{}…",
        settings.model,
        if tools.is_empty() {
            String::new()
        } else {
            format!(" and {}", tools.join(", "))
        }
    );
    // Download bars and the runtime's steps draw among it (one MultiProgress).
    let spinner = ossa::sandbox::spinner(&loading);
    if spinner.is_none() {
        eprintln!("{loading}");
    }
    let started = runtime.block_on(ossa::app::start(settings, Progress::Stderr));
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let app = started.map_err(|e| anyhow!("{}", start_error_message(&e)))?;
    let result = Repl::new(&runtime, &app, &args).and_then(|mut repl| repl.run());
    runtime.block_on(app.toolset.shutdown());
    result
}

/// A start error with the fix a person needs.
fn start_error_message(error: &StartError) -> String {
    let hint = match error {
        StartError::Model(_) => {
            "pass --model with a model name (gpt-oss:20b, gpt-oss:120b; fetched once, or ahead \
             of time with `ossa pull`), a Hugging Face id, or a folder holding config.json and \
             model.safetensors"
        }
        StartError::Load { .. } => {
            "the folder must hold a gpt-oss checkpoint in the Hugging Face layout (config.json, \
             model.safetensors or its shards); fetch it again if a file is damaged"
        }
        // An unfit server's error says itself what to change.
        StartError::Remote(remote) if !remote.is_connection() => return error.to_string(),
        StartError::Remote(_) => {
            "check --url (the server's API base, e.g. http://host:8000/v1) and --remote-model; \
             the server must serve the OpenAI Completions API (vLLM, llama.cpp's llama-server, \
             `ossa serve`; --remote-kind names the dialect)"
        }
        StartError::Tools(tools) if is_sandbox(tools) => {
            "`ossa setup` prepares the Python runtime (fetched once with pip) and says what is \
             wrong; --no-python chats without Python"
        }
        StartError::Tools(_) | StartError::Encoding(_) | StartError::Thread(_) => {
            return error.to_string();
        }
    };
    format!("{error}\n  hint: {hint}")
}

fn is_sandbox(error: &ToolsetError) -> bool {
    matches!(error, ToolsetError::Sandbox(_))
}

/// Whether to use ANSI styles and links: stdout is a terminal, NO_COLOR is not set, TERM is
/// not `dumb`.
fn use_color() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// How this terminal draws figures (see `images`); a bad `OSSA_IMAGES` is one warning line.
fn image_protocol() -> Option<images::Graphics> {
    images::detect(|name| std::env::var(name).ok()).unwrap_or_else(|warning| {
        eprintln!("warning: {warning}");
        None
    })
}

struct Repl<'a> {
    runtime: &'a tokio::runtime::Runtime,
    app: &'a App,
    chat: Chat,
    /// Sampling and limits now (`/set` changes them for this conversation).
    config: AgentConfig,
    /// The developer message's instructions now.
    developer: Option<String>,
    effort: ReasoningEffort,
    view: View,
    editor: Editor<ReplHelper, FileHistory>,
    history: History,
}

impl<'a> Repl<'a> {
    fn new(
        runtime: &'a tokio::runtime::Runtime,
        app: &'a App,
        args: &ChatArgs,
    ) -> anyhow::Result<Self> {
        let color = use_color();
        let mut editor: Editor<ReplHelper, FileHistory> = prompt::editor(color)?;
        editor.set_helper(Some(ReplHelper::default()));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(ClearOrInterrupt)),
        );
        // Input from a pipe or file is not history.
        let history = if std::io::stdin().is_terminal() {
            History::open(&mut editor, args.history.clone(), HISTORY_FILE)
        } else {
            History::none()
        };
        Ok(Self {
            runtime,
            app,
            chat: app.agent.chat(&app.conversation_settings()),
            config: app.agent.config().clone(),
            developer: app.settings.developer_message.clone(),
            effort: app.settings.reasoning_effort,
            view: View {
                color,
                hide_reasoning: args.hide_reasoning,
                show_tool_output: args.show_tool_output,
                raw: args.raw,
                width: DEFAULT_WIDTH,
                images: if color { image_protocol() } else { None },
            },
            editor,
            history,
        })
    }

    fn run(&mut self) -> anyhow::Result<ExitCode> {
        for warning in &self.app.toolset.warnings {
            eprintln!("warning: {warning}");
        }
        println!("{}", self.banner());
        if self.view.raw {
            self.print_raw_conversation();
        }
        let prompt = ReplPrompt::new(self.view.color);
        let mut interrupts = 0;
        loop {
            let line = match self.editor.readline(&prompt) {
                Ok(line) => {
                    interrupts = 0;
                    line
                }
                Err(ReadlineError::Interrupted) => {
                    interrupts += 1;
                    if interrupts >= 2 {
                        break;
                    }
                    println!(
                        "{}",
                        self.paint(Tone::Dim, "(Ctrl-C again, Ctrl-D or /exit quits)")
                    );
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(anyhow!(e).context("reading the prompt")),
            };
            let input = join_lines(&line);
            let input = input.trim();
            if input.is_empty() {
                continue;
            }
            self.remember(&line);
            if !std::io::stdin().is_terminal() {
                // A transcript of piped input reads as the typed one would.
                println!("{PROMPT}{line}");
            }
            if let Some(text) = input.strip_prefix("//") {
                self.turn(&format!("/{text}"));
                continue;
            }
            if input.starts_with('/') {
                match parse_command(input) {
                    Ok(SlashCommand::Exit) => break,
                    Ok(command) => self.command(command),
                    Err(message) => println!("{}", self.paint(Tone::Warn, &message)),
                }
                continue;
            }
            self.turn(input);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn banner(&self) -> String {
        let app = self.app;
        let model = match app.engine {
            Some(_) => std::path::Path::new(&app.model).file_name().map_or_else(
                || app.settings.model.clone(),
                |n| n.to_string_lossy().into(),
            ),
            None => app.model.clone(),
        };
        let tools: Vec<&str> = app.agent.tools().iter().map(|t| t.name()).collect();
        let tools = if tools.is_empty() {
            "none".to_string()
        } else {
            tools.join(", ")
        };
        let memory = render::resident_memory()
            .map(|bytes| format!(" · {} resident", render::size(bytes)))
            .unwrap_or_default();
        format!(
            "ossa {} · model {model} (loaded in {:.1} s) · tools: {tools} · reasoning effort: \
             {}{memory}\n{}",
            env!("CARGO_PKG_VERSION"),
            app.load_time.as_secs_f64(),
            self.effort.as_str(),
            self.paint(
                Tone::Dim,
                "Type a message; /help for commands, Ctrl-D to quit."
            ),
        )
    }

    fn paint(&self, tone: Tone, text: &str) -> String {
        paint(self.view.color, tone, text)
    }

    /// Adds a line to the history, and the file.
    fn remember(&mut self, line: &str) {
        self.history.remember(&mut self.editor, line);
    }

    fn command(&mut self, command: SlashCommand) {
        match command {
            SlashCommand::Reset => {
                self.chat.reset();
                println!("New conversation.");
                if self.view.raw {
                    self.print_raw_conversation();
                }
            }
            SlashCommand::Effort(None) => {
                println!("Reasoning effort: {}", self.effort.as_str());
            }
            SlashCommand::Effort(Some(effort)) => {
                self.chat.set_reasoning_effort(effort);
                self.effort = effort;
                println!(
                    "Reasoning effort: {} (from the next turn on)",
                    effort.as_str()
                );
            }
            SlashCommand::Tools => {
                self.update_width();
                println!("{}", self.tools_text());
            }
            SlashCommand::Save(path) => match self.save(&path) {
                Ok(()) => println!(
                    "Saved {} messages to {}",
                    self.chat.conversation().messages.len(),
                    path.display()
                ),
                Err(e) => println!("{}", self.paint(Tone::Error, &format!("error: {e:#}"))),
            },
            SlashCommand::Load(path) => match load_conversation(&path) {
                Ok(conversation) => {
                    let count = conversation.messages.len();
                    if let Some(effort) = conversation_effort(&conversation) {
                        self.effort = effort;
                    }
                    self.chat = self.app.agent.chat_from(conversation);
                    println!(
                        "Loaded {count} messages from {} (reasoning effort: {}; the tools start afresh)",
                        path.display(),
                        self.effort.as_str()
                    );
                    if self.view.raw {
                        self.print_raw_conversation();
                    }
                }
                Err(e) => println!("{}", self.paint(Tone::Error, &format!("error: {e:#}"))),
            },
            SlashCommand::Raw => {
                self.view.raw = !self.view.raw;
                println!(
                    "Raw harmony output {}.",
                    if self.view.raw { "on" } else { "off" }
                );
                if self.view.raw {
                    self.print_raw_conversation();
                }
            }
            SlashCommand::Set(setting) => self.set(setting),
            SlashCommand::Show => println!("{}", self.show()),
            SlashCommand::Help => println!("{HELP}"),
            SlashCommand::Exit => {}
        }
    }

    /// `/set`: applies to this conversation from the next turn on.
    fn set(&mut self, setting: Setting) {
        let said = match setting {
            Setting::Temperature(t) => {
                self.config.sampling.temperature = t;
                format!("temperature {t}")
            }
            Setting::TopP(p) => {
                self.config.sampling.top_p = p;
                format!("top_p {p}")
            }
            Setting::MaxTokens(n) => {
                self.config.max_tokens = n;
                format!("max_tokens {}", n.map_or("none".into(), |n| n.to_string()))
            }
            Setting::Developer(text) => {
                self.chat.set_developer_instructions(text.clone());
                self.developer = text;
                match &self.developer {
                    Some(text) => format!("developer instructions: {text}"),
                    None => "no developer instructions".into(),
                }
            }
        };
        let agent = self.app.agent.as_ref();
        self.chat.set_agent(Agent::new(
            agent.backend().clone(),
            agent.encoding().clone(),
            agent.tools().to_vec(),
            self.config.clone(),
        ));
        println!("Set {said} (from the next turn on).");
    }

    /// `/show`: what this conversation runs on and with.
    fn show(&self) -> String {
        let app = self.app;
        let context = app.agent.backend().context_length();
        let used = app
            .agent
            .encoding()
            .render_conversation(self.chat.conversation(), None)
            .map_or_else(|e| format!("? ({e})"), |tokens| tokens.len().to_string());
        let memory = render::resident_memory().map_or_else(
            || "unknown".into(),
            |bytes| render::size(bytes) + " resident",
        );
        let tools: Vec<&str> = app.agent.tools().iter().map(|t| t.name()).collect();
        let sampling = &self.config.sampling;
        let max_tokens = self
            .config
            .max_tokens
            .map_or("none (until the context is full)".into(), |n| n.to_string());
        let developer = self.developer.as_deref().map_or_else(
            || "none".into(),
            |text| truncate(text, self.view.width.saturating_sub(16)),
        );
        [
            ("model", app.model.clone()),
            ("memory", memory),
            ("context", format!("{used} of {context} tokens used")),
            (
                "tools",
                if tools.is_empty() {
                    "none".into()
                } else {
                    tools.join(", ")
                },
            ),
            ("effort", self.effort.as_str().into()),
            ("temperature", sampling.temperature.to_string()),
            ("top_p", sampling.top_p.to_string()),
            ("max_tokens", max_tokens),
            ("developer", developer),
        ]
        .iter()
        .map(|(name, value)| format!("{name:<13}{}", strip_controls(value)))
        .collect::<Vec<_>>()
        .join("\n")
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let value: serde_json::Value = serde_json::from_str(&self.chat.conversation().to_json())
            .context("serializing the conversation")?;
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    fn tools_text(&self) -> String {
        let tools = self.app.agent.tools();
        if tools.is_empty() {
            return "No tools. Start with -p/--python or -b/--browser to give the model some."
                .into();
        }
        let mut out = String::new();
        for tool in tools {
            let namespace = tool.namespace();
            let about = namespace
                .description
                .as_deref()
                .and_then(|d| d.lines().next())
                .unwrap_or("");
            out.push_str(&format!(
                "{}  {}\n",
                self.paint(Tone::Tool, tool.name()),
                truncate(about, self.view.width.saturating_sub(tool.name().len() + 2))
            ));
            if tool.name() == "python" {
                let mount = match &self.app.settings.config.python.mount {
                    Some(dir) => dir.display().to_string(),
                    None => "a private temporary folder".into(),
                };
                out.push_str(&format!("    /mnt/data is {mount}\n"));
            }
            for function in &namespace.tools {
                let line = format!("{}: {}", function.name, function.description);
                out.push_str(&format!(
                    "    {}\n",
                    truncate(&line, self.view.width.saturating_sub(4))
                ));
            }
        }
        out.trim_end().to_string()
    }

    fn print_raw_conversation(&self) {
        let encoding = self.app.agent.encoding();
        let text = encoding
            .render_conversation(self.chat.conversation(), None)
            .map_err(|e| e.to_string())
            .and_then(|tokens| {
                encoding
                    .tokenizer()
                    .decode_lossy(&tokens)
                    .map_err(|e| e.to_string())
            });
        match text {
            Ok(text) => println!("{text}"),
            Err(e) => println!("{}", self.paint(Tone::Error, &format!("error: {e}"))),
        }
    }

    /// The terminal's width now (it may have been resized).
    fn update_width(&mut self) {
        self.view.width = self
            .editor
            .dimensions()
            .map_or(DEFAULT_WIDTH, |(columns, _)| usize::from(columns).max(20));
    }

    /// Sends `text` and shows the turn as it runs; Ctrl-C cancels it.
    fn turn(&mut self, text: &str) {
        self.update_width();
        let view = self.view;
        let renderer = Mutex::new(Renderer::new(
            Box::new(std::io::stdout()),
            self.app.agent.encoding().clone(),
            view,
            self.chat.citation_urls(),
        ));
        if view.raw {
            let user = Message::from_role_and_content(Role::User, text);
            lock(&renderer).raw_message(&user);
        }
        let cancel = CancellationToken::new();
        let chat = &mut self.chat;
        let result = self.runtime.block_on(async {
            let mut on_event = |event: AgentEvent| lock(&renderer).event(event);
            let turn = chat.send(text, &cancel, &mut on_event);
            tokio::pin!(turn);
            let mut interrupts = 0;
            let mut listening = true;
            loop {
                tokio::select! {
                    result = &mut turn => break result,
                    signal = tokio::signal::ctrl_c(), if listening => {
                        if signal.is_err() {
                            // No signal handling here: Ctrl-C keeps its default effect.
                            listening = false;
                            continue;
                        }
                        interrupts += 1;
                        if interrupts == 1 {
                            cancel.cancel();
                            lock(&renderer).cancelling("cancelling… (Ctrl-C again quits)");
                        } else {
                            lock(&renderer).notice("quit");
                            std::process::exit(130);
                        }
                    }
                }
            }
        });
        let urls = self.chat.citation_urls();
        let context_length = self.app.agent.backend().context_length();
        renderer
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .finish(&result, &urls, context_length);
    }
}

fn lock(renderer: &Mutex<Renderer>) -> MutexGuard<'_, Renderer> {
    renderer.lock().unwrap_or_else(PoisonError::into_inner)
}

fn load_conversation(path: &Path) -> anyhow::Result<Conversation> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let not_a_conversation = || {
        format!(
            "{} is not a saved conversation (openai-harmony JSON, or `ossa run --json` output)",
            path.display()
        )
    };
    let conversation = match Conversation::from_json(&text) {
        Ok(conversation) => conversation,
        // `ossa run --json` holds the conversation in its `conversation` field.
        Err(error) => match serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|mut v| v.get_mut("conversation").map(serde_json::Value::take))
        {
            Some(inner) => serde_json::from_value(inner).with_context(not_a_conversation)?,
            None => return Err(error).with_context(not_a_conversation),
        },
    };
    if conversation.messages.is_empty() {
        anyhow::bail!("{} holds no messages", path.display());
    }
    Ok(conversation)
}

/// The reasoning effort a conversation's system message asks for.
fn conversation_effort(conversation: &Conversation) -> Option<ReasoningEffort> {
    conversation
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .find_map(|c| match c {
            Content::SystemContent(system) => system.reasoning_effort,
            _ => None,
        })
}

/// A slash command typed at the prompt.
#[derive(Debug, Clone, PartialEq)]
enum SlashCommand {
    Reset,
    /// `None`: show the current effort.
    Effort(Option<ReasoningEffort>),
    Tools,
    Set(Setting),
    Show,
    Save(PathBuf),
    Load(PathBuf),
    Raw,
    Help,
    Exit,
}

/// What `/set` changes.
#[derive(Debug, Clone, PartialEq)]
enum Setting {
    Temperature(f32),
    TopP(f32),
    /// `None`: until the context is full.
    MaxTokens(Option<usize>),
    /// `None`: no instructions.
    Developer(Option<String>),
}

const SETTINGS: &[&str] = &["temperature", "top_p", "max_tokens", "developer"];

const COMMANDS: &[&str] = &[
    "/reset", "/effort", "/tools", "/set", "/show", "/save", "/load", "/raw", "/help", "/exit",
    "/quit",
];

fn parse_setting(argument: &str) -> Result<Setting, String> {
    let (name, value) = match argument.split_once(char::is_whitespace) {
        Some((name, value)) => (name, value.trim()),
        None => (argument, ""),
    };
    let needs = |what: &str| format!("/set {name} needs {what}");
    match name.replace('-', "_").as_str() {
        "temperature" if value.is_empty() => Err(needs("a value: /set temperature 0.7")),
        "temperature" => parse_temperature(value).map(Setting::Temperature),
        "top_p" if value.is_empty() => Err(needs("a value: /set top_p 0.9")),
        "top_p" => parse_top_p(value).map(Setting::TopP),
        "max_tokens" if value.is_empty() => Err(needs("a number or none: /set max_tokens 512")),
        "max_tokens" if matches!(value, "none" | "off") => Ok(Setting::MaxTokens(None)),
        "max_tokens" => parse_count(value).map(|n| Setting::MaxTokens(Some(n))),
        "developer" if matches!(value, "" | "none") => Ok(Setting::Developer(None)),
        "developer" => Ok(Setting::Developer(Some(value.to_owned()))),
        "" => Err(format!("/set needs a setting: {}", SETTINGS.join(", "))),
        _ => Err(format!(
            "/set: unknown setting {name}; settings: {}",
            SETTINGS.join(", ")
        )),
    }
    .map_err(|e| {
        if e.starts_with('/') {
            e
        } else {
            format!("/set {name}: {e}")
        }
    })
}

fn parse_command(input: &str) -> Result<SlashCommand, String> {
    let input = input.trim();
    let (name, argument) = match input.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (input, ""),
    };
    let no_argument = |command: SlashCommand| {
        if argument.is_empty() {
            Ok(command)
        } else {
            Err(format!("{name} takes no argument"))
        }
    };
    let file = |make: fn(PathBuf) -> SlashCommand| {
        if argument.is_empty() {
            Err(format!("{name} needs a file: {name} FILE"))
        } else {
            Ok(make(expand_home(argument)))
        }
    };
    match name {
        "/reset" | "/new" => no_argument(SlashCommand::Reset),
        "/effort" if argument.is_empty() => Ok(SlashCommand::Effort(None)),
        "/effort" => parse_effort(argument).map(|e| SlashCommand::Effort(Some(e))),
        "/tools" => no_argument(SlashCommand::Tools),
        "/set" => parse_setting(argument).map(SlashCommand::Set),
        "/show" => no_argument(SlashCommand::Show),
        "/save" => file(SlashCommand::Save),
        "/load" => file(SlashCommand::Load),
        "/raw" => no_argument(SlashCommand::Raw),
        "/help" | "/?" => Ok(SlashCommand::Help),
        "/exit" | "/quit" => no_argument(SlashCommand::Exit),
        _ => Err(format!(
            "unknown command {name}; /help lists the commands (start with // to send text beginning with /)"
        )),
    }
}

/// `~/x` → `$HOME/x`; anything else as typed.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Whether the typed text is a whole message: every ``` fence closed, and the last line not
/// ending in `\` outside a fence.
fn input_complete(text: &str) -> bool {
    let mut complete = true;
    for_lines(text, |line, in_fence| {
        complete = !in_fence && !line.ends_with('\\');
    });
    complete
}

/// The message typed: lines ending in `\` outside ``` fences lose the backslash.
fn join_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut first = true;
    for_lines(text, |line, in_fence| {
        if !first {
            out.push('\n');
        }
        first = false;
        match line.strip_suffix('\\') {
            Some(kept) if !in_fence => out.push_str(kept),
            _ => out.push_str(line),
        }
    });
    out
}

/// Calls `f` with each line and whether a ``` fence is open at its end (a fence opens or closes
/// at each ```, at the start of a line or within it).
fn for_lines(text: &str, mut f: impl FnMut(&str, bool)) {
    let mut in_fence = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.matches("```").count() % 2 == 1 {
            in_fence = !in_fence;
        }
        f(line, in_fence);
    }
}

/// Ctrl-C at the prompt: clears a line that has text; on an empty line, interrupts (so a
/// second one in a row can quit).
struct ClearOrInterrupt;

impl ConditionalEventHandler for ClearOrInterrupt {
    fn handle(
        &self,
        _event: &Event,
        _count: RepeatCount,
        _positive: bool,
        context: &EventContext,
    ) -> Option<rustyline::Cmd> {
        if context.line().is_empty() {
            Some(rustyline::Cmd::Interrupt)
        } else {
            Some(rustyline::Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// Completes slash commands and the files of `/save` and `/load`; keeps Enter from sending an
/// unfinished message.
#[derive(Default)]
struct ReplHelper {
    files: FilenameCompleter,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        context: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if !before.starts_with('/') {
            return Ok((0, Vec::new()));
        }
        match before.split_once(' ') {
            None => Ok((0, candidates(COMMANDS, before, " "))),
            Some(("/save" | "/load", _)) => self.files.complete(line, pos, context),
            Some(("/set", word)) if !word.contains(' ') => {
                Ok((pos - word.len(), candidates(SETTINGS, word, " ")))
            }
            Some(("/effort", word)) => Ok((
                pos - word.len(),
                candidates(&["low", "medium", "high"], word, ""),
            )),
            Some(_) => Ok((0, Vec::new())),
        }
    }
}

/// The words of `words` that begin with `typed`, each completed with `then` after it.
fn candidates(words: &[&str], typed: &str, then: &str) -> Vec<Pair> {
    words
        .iter()
        .filter(|w| w.starts_with(typed))
        .map(|w| Pair {
            display: w.to_string(),
            replacement: format!("{w}{then}"),
        })
        .collect()
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {
    fn validate(&self, context: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if input_complete(context.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Helper for ReplHelper {}

/// The prompt, bold when styles are on.
struct ReplPrompt {
    styled: String,
}

impl ReplPrompt {
    fn new(color: bool) -> Self {
        Self {
            styled: paint(color, Tone::Bold, PROMPT),
        }
    }
}

impl rustyline::Prompt for ReplPrompt {
    fn raw(&self) -> &str {
        PROMPT
    }

    fn styled(&self) -> &str {
        &self.styled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_parse_with_their_arguments() {
        assert_eq!(parse_command("/reset"), Ok(SlashCommand::Reset));
        assert_eq!(parse_command("/effort"), Ok(SlashCommand::Effort(None)));
        assert_eq!(
            parse_command("/effort  High "),
            Ok(SlashCommand::Effort(Some(ReasoningEffort::High)))
        );
        assert!(
            parse_command("/effort extreme")
                .unwrap_err()
                .contains("low, medium or high")
        );
        assert_eq!(
            parse_command("/save /tmp/a b.json"),
            Ok(SlashCommand::Save(PathBuf::from("/tmp/a b.json")))
        );
        assert!(parse_command("/load").unwrap_err().contains("/load FILE"));
        assert!(
            parse_command("/reset now")
                .unwrap_err()
                .contains("no argument")
        );
        assert_eq!(parse_command("/quit"), Ok(SlashCommand::Exit));
        assert_eq!(parse_command("/show"), Ok(SlashCommand::Show));
        assert_eq!(
            parse_command("/set temperature 0.5"),
            Ok(SlashCommand::Set(Setting::Temperature(0.5)))
        );
        assert_eq!(
            parse_command("/set top-p 0.9"),
            Ok(SlashCommand::Set(Setting::TopP(0.9)))
        );
        assert_eq!(
            parse_command("/set max_tokens none"),
            Ok(SlashCommand::Set(Setting::MaxTokens(None)))
        );
        assert_eq!(
            parse_command("/set max_tokens 64"),
            Ok(SlashCommand::Set(Setting::MaxTokens(Some(64))))
        );
        assert_eq!(
            parse_command("/set developer Answer in French.  "),
            Ok(SlashCommand::Set(Setting::Developer(Some(
                "Answer in French.".into()
            ))))
        );
        assert_eq!(
            parse_command("/set developer"),
            Ok(SlashCommand::Set(Setting::Developer(None)))
        );
        for (bad, says) in [
            ("/set temperature -1", "/set temperature: "),
            ("/set top_p 0", "/set top_p: "),
            ("/set top_p", "needs a value"),
            ("/set max_tokens many", "not a whole number"),
            ("/set colour red", "unknown setting colour"),
            ("/set", "temperature, top_p, max_tokens, developer"),
        ] {
            let error = parse_command(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(parse_command("/frobnicate").unwrap_err().contains("/help"));
    }

    #[test]
    fn backslash_and_open_fences_continue_the_message() {
        for (input, complete) in [
            ("hello", true),
            ("first line \\", false),
            ("first line \\\nsecond", true),
            ("look:\n```python\nx = 1", false),
            ("look:\n```python\nx = 1\n```", true),
            // Inside a fence a trailing backslash is code, not a continuation.
            ("```\nx = 1 + \\", false),
            ("```\nx = 1 + \\\n  2\n```", true),
            ("explain ```python", false),
            ("explain ```python\nprint(1)```", true),
            ("inline ```code``` is not a fence", true),
        ] {
            assert_eq!(input_complete(input), complete, "{input:?}");
        }

        assert_eq!(join_lines("first \\\nsecond"), "first \nsecond");
        assert_eq!(join_lines("\n\na\\\n\nb"), "\n\na\n\nb");
        assert_eq!(
            join_lines("run:\n```\nx = 1 + \\\n  2\n```"),
            "run:\n```\nx = 1 + \\\n  2\n```"
        );
    }
}
