//! `ossa python`: run Python inside the WebAssembly sandbox: `-c CODE`, a script file, or an
//! interactive session (a REPL whose state is kept across entries, as the model's tool is).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ossa_sandbox::{
    CallLimits, Program, ProgramOptions, ResetReason, RunOutput, Sandbox, SandboxConfig,
    SessionOptions, SessionState, Status, Stop,
};
use rustyline::Editor;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;

use super::prompt::{self, History};

#[derive(Debug, clap::Args)]
pub struct PythonArgs {
    /// Program passed in as a string, as `python -c`.
    #[arg(short = 'c', value_name = "CODE")]
    code: Option<String>,
    /// A script file and its arguments (with -c: the program's arguments). None: an interactive
    /// session.
    #[arg(
        value_name = "FILE [ARGS]",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<String>,
    /// Wall-clock limit per program (or per REPL entry), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    timeout: f64,
    /// Memory limit of the interpreter, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: u64,
    /// Host folder the code sees at /mnt/data (read-write). Default: an empty temporary folder,
    /// removed afterwards.
    #[arg(long, value_name = "DIR")]
    mount: Option<PathBuf>,
    /// The interactive session's history file [default: python_history in ossa's data folder,
    /// ~/.local/share/ossa].
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
}

pub fn run(args: PythonArgs) -> anyhow::Result<ExitCode> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        anyhow::bail!(
            "--timeout must be a positive number of seconds, got {}",
            args.timeout
        );
    }
    let limits = CallLimits {
        deadline: Duration::from_secs_f64(args.timeout),
        memory_bytes: args.memory.saturating_mul(1 << 20),
        output_bytes: 64 << 20,
        fuel: None,
    };
    let mut config = SandboxConfig::from_env()?;
    config.limits.call = limits.clone();
    let sandbox = Sandbox::open(config)?;

    let (program, program_args) = match (args.code, args.rest.split_first()) {
        (Some(code), _) => (Program::Code(code), args.rest.clone()),
        (None, Some((file, rest))) => {
            let path = PathBuf::from(file);
            let source =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script.py".into());
            (Program::Script { name, source }, rest.to_vec())
        }
        (None, None) => return repl(&sandbox, args.mount, args.history, &limits),
    };
    let options = ProgramOptions {
        args: program_args,
        mount: args.mount.clone(),
        limits: Some(limits),
        live: true,
    };
    let out = sandbox.run_program(&program, &options)?;
    // The program's stderr went to the terminal as it came; its tail is kept for this.
    if let Some(hint) = mount_hint(&out.stderr, args.mount.as_deref()) {
        eprintln!("{hint}");
    }
    if let Some(stop) = out.stop() {
        eprintln!("ossa: {stop}");
    }
    Ok(exit_code(&out.status))
}

fn exit_code(status: &Status) -> ExitCode {
    ExitCode::from(u8::try_from(status.exit_code() & 0xff).unwrap_or(1))
}

/// Where the interactive session's lines come from: the line editor on a terminal, plain lines
/// from a pipe or file.
enum Input {
    Editor {
        editor: Box<Editor<(), FileHistory>>,
        history: History,
    },
    Lines(std::io::Lines<std::io::StdinLock<'static>>),
}

/// One read of [`Input`].
enum Read {
    Line(String),
    /// Ctrl-C at the prompt: the entry being typed is dropped.
    Interrupted,
    End,
}

impl Input {
    fn open(history: Option<PathBuf>) -> anyhow::Result<Self> {
        if !std::io::stdin().is_terminal() {
            return Ok(Self::Lines(std::io::stdin().lock().lines()));
        }
        let mut editor: Editor<(), FileHistory> = prompt::editor(false)?;
        // Tab indents, as in CPython's REPL.
        editor.bind_sequence(
            rustyline::KeyEvent(rustyline::KeyCode::Tab, rustyline::Modifiers::NONE),
            rustyline::Cmd::Insert(1, "    ".into()),
        );
        let history = History::open(&mut editor, history, HISTORY_FILE);
        Ok(Self::Editor {
            editor: Box::new(editor),
            history,
        })
    }

    fn interactive(&self) -> bool {
        matches!(self, Self::Editor { .. })
    }

    fn read(&mut self, prompt: &str) -> anyhow::Result<Read> {
        match self {
            Self::Lines(lines) => Ok(match lines.next() {
                Some(line) => Read::Line(line?),
                None => Read::End,
            }),
            Self::Editor { editor, history } => match editor.readline(prompt) {
                Ok(line) => {
                    history.remember(&mut **editor, &line);
                    Ok(Read::Line(line))
                }
                Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
                Err(ReadlineError::Eof) => Ok(Read::End),
                Err(e) => Err(anyhow::anyhow!(e).context("reading the prompt")),
            },
        }
    }
}

/// The REPL's history file in ossa's data folder.
const HISTORY_FILE: &str = "python_history";

/// A REPL on one session: entries are cells, so state carries over and a final expression is
/// echoed. On a terminal: line editing, history; Ctrl-C raises KeyboardInterrupt in a running entry (a second Ctrl-C, or code that does not
/// stop within [`INTERRUPT_GRACE`], stops it and puts the session back as it was before the
/// entry) or drops the one being typed, Ctrl-D quits.
fn repl(
    sandbox: &Sandbox,
    mount: Option<PathBuf>,
    history: Option<PathBuf>,
    limits: &CallLimits,
) -> anyhow::Result<ExitCode> {
    let session = sandbox.session(SessionOptions {
        mount,
        limits: None,
    })?;
    let mut input = Input::open(history)?;
    let interactive = input.interactive();
    if interactive {
        session.undo_on_cancel(true);
        let runtime = sandbox.runtime();
        println!(
            "Python {} in ossa's WebAssembly sandbox; the working folder /mnt/data is {}. \
             Ctrl-C interrupts an entry, Ctrl-D quits.",
            runtime.python_version,
            session.mount().display()
        );
    }
    // Ctrl-C while an entry runs arrives as a signal (the terminal is not in raw mode then).
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let mut cell = String::new();
    loop {
        let prompt = if cell.is_empty() { ">>> " } else { "... " };
        let (line, eof) = match input.read(prompt)? {
            Read::Line(line) => (line, false),
            Read::Interrupted => {
                eprintln!("KeyboardInterrupt");
                cell.clear();
                continue;
            }
            Read::End if cell.trim().is_empty() => break,
            // End of input runs what is left of an open entry.
            Read::End => (String::new(), true),
        };
        if cell.is_empty() && line.trim().is_empty() {
            continue;
        }
        if !cell.is_empty() {
            cell.push('\n');
        }
        cell.push_str(&line);
        if needs_more(&cell) && !eof {
            continue;
        }
        let mut stopping = Stopping::No;
        let out = signals.block_on(async {
            let run = session.run_with(&cell, limits);
            tokio::pin!(run);
            tokio::select! {
                out = &mut run => return out,
                Ok(()) = tokio::signal::ctrl_c() => {}
            }
            // Ctrl-C: KeyboardInterrupt in the guest, as in Python; a second one, or code that
            // does not take it in time, stops the entry and undoes it.
            if session.interrupt(INTERRUPT_GRACE) {
                stopping = Stopping::Interrupted;
                tokio::select! {
                    out = &mut run => return out,
                    Ok(()) = tokio::signal::ctrl_c() => stopping = Stopping::Again,
                }
            }
            session.cancel();
            run.await
        })?;
        cell.clear();
        show(&out, session.mount(), stopping);
        // As in Python's REPL, `exit(n)` ends the session with that status.
        if let Status::Exit(code) = out.status {
            session.close_blocking();
            return Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)));
        }
    }
    if interactive {
        println!();
    }
    session.close_blocking();
    Ok(ExitCode::SUCCESS)
}

/// How long an interrupted entry has to end (raising or catching KeyboardInterrupt) before it
/// is stopped and undone: code inside a long C call never sees the interrupt.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// What Ctrl-C asked of the entry that ran.
#[derive(Clone, Copy, PartialEq)]
enum Stopping {
    No,
    /// KeyboardInterrupt was raised in it.
    Interrupted,
    /// Ctrl-C again while it was being interrupted.
    Again,
}

fn show(out: &RunOutput, mount: &Path, stopping: Stopping) {
    if let Some(reason @ (ResetReason::IdleTimeout(_) | ResetReason::Lifetime(_))) =
        &out.started_fresh
    {
        eprintln!("[ossa: a fresh interpreter started ({reason}); variables were lost]");
    }
    print!("{}", out.stdout);
    if let Some(value) = &out.value {
        println!("{value}");
    }
    let _ = std::io::stdout().flush();
    eprint!("{}", out.stderr);
    if let Some(hint) = mount_hint(&out.stderr, Some(mount)) {
        eprintln!("{hint}");
    }
    match (out.stop(), &out.session) {
        (Some(Stop::Cancelled), SessionState::Restored) => {
            let why = match stopping {
                Stopping::Interrupted => format!(
                    "the entry did not stop at KeyboardInterrupt within {} s (a long call into C \
                     does not see it), so it ",
                    INTERRUPT_GRACE.as_secs()
                ),
                Stopping::Again | Stopping::No => "the entry ".into(),
            };
            eprintln!(
                "KeyboardInterrupt\n[ossa: {why}was stopped and undone: variables are as they \
                 were before it; files it wrote are kept]"
            )
        }
        (Some(stop), _) => eprintln!("[ossa: {stop}]"),
        (None, _) => {}
    }
    if let (SessionState::Reset(reason), false) =
        (&out.session, matches!(out.status, Status::Exit(_)))
    {
        eprintln!(
            "[ossa: the interpreter was reset ({reason}); variables were lost, files in /mnt/data are kept]"
        );
    }
}

/// When the code could not find or open a file outside the sandbox's folders, the line that
/// says why and how to give it a host folder: the guest sees only `/mnt/data` (and its own
/// `/tmp`). `mount`: the host folder at `/mnt/data`; `None`: a temporary one.
fn mount_hint(stderr: &str, mount: Option<&Path>) -> Option<String> {
    // The last line of the traceback, as CPython formats an OSError with a file name.
    let line = stderr.lines().rev().find(|line| !line.trim().is_empty())?;
    let denied = line.starts_with("PermissionError: [Errno ");
    if !(denied || line.starts_with("FileNotFoundError: [Errno ")) {
        return None;
    }
    let start = line.find(": '")? + 3;
    let path = line[start..].split('\'').next()?;
    let inside = |root: &str| path == root || path.starts_with(&format!("{root}/"));
    // The runtime's own read-only files refuse writes for their own reason.
    if inside("/tmp") || inside("/mnt/data") || (denied && inside("/usr/local/lib")) {
        return None;
    }
    let here = match mount {
        Some(mount) => format!("here {}", mount.display()),
        None => "here an empty temporary folder".to_owned(),
    };
    Some(format!(
        "[ossa: the code sees only /mnt/data ({here}) and /tmp, not this machine's files; to \
         work on a folder of yours, start with --mount DIR (DIR appears at /mnt/data)]"
    ))
}

/// Whether an entry continues on the next line: a line ending in `:` or `\`, unclosed
/// brackets or triple quotes, or a compound statement or block not yet ended by an empty line.
fn needs_more(cell: &str) -> bool {
    // The raw last line: empty when the entry ends with the empty line that closes a block.
    let last = cell.rsplit('\n').next().unwrap_or("");
    if last.trim_end().ends_with(':') || last.ends_with('\\') {
        return true;
    }
    if cell.matches("\"\"\"").count() % 2 == 1 || cell.matches("'''").count() % 2 == 1 {
        return true;
    }
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for line in cell.lines() {
        for c in line.chars() {
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '#' => break,
                    '\'' | '"' => quote = Some(c),
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                },
            }
        }
        quote = None;
    }
    if depth > 0 {
        return true;
    }
    // A compound statement, even on one line (`while True: pass`), or a block: only an empty
    // line ends it, as in CPython's REPL.
    let first = cell.trim_start();
    let keyword = first
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    let compound = first.starts_with('@') || COMPOUND.contains(&keyword);
    let opens_block = compound || cell.lines().any(|line| line.trim_end().ends_with(':'));
    opens_block && !last.trim().is_empty()
}

/// Keywords that start a compound statement.
const COMPOUND: &[&str] = &["if", "for", "while", "def", "class", "with", "try", "async"];

#[cfg(test)]
mod tests {
    use super::{mount_hint, needs_more};
    use std::path::Path;

    #[test]
    fn a_missing_host_file_names_mount() {
        let error = |path: &str| {
            format!(
                "Traceback (most recent call last):\n  File \"<turn 1>\", line 1\n\
                 FileNotFoundError: [Errno 44] No such file or directory: '{path}'\n"
            )
        };
        let mount = Some(Path::new("/tmp/ossa-x"));
        for path in ["/home/me/data.csv", "data.csv", "../x", "/Users/me/x.csv"] {
            let hint = mount_hint(&error(path), mount).expect(path);
            assert!(hint.contains("--mount DIR"), "{hint}");
            assert!(hint.contains("/tmp/ossa-x"), "{hint}");
        }
        for path in ["/mnt/data/gone.csv", "/tmp/gone", "/mnt/data"] {
            assert_eq!(mount_hint(&error(path), mount), None, "{path}");
        }
        assert_eq!(mount_hint("ValueError: x\n", mount), None);
        // Only the error the code ended with counts, not one handled earlier.
        let handled = format!("{}ValueError: later\n", error("/home/me/data.csv"));
        assert_eq!(mount_hint(&handled, mount), None);

        // A host path refused, and a one-off run's temporary folder.
        let denied = |path: &str| {
            format!("PermissionError: [Errno 76] Capabilities insufficient: '{path}'\n")
        };
        let hint = mount_hint(&denied("/home/me/out.csv"), None).expect("a hint");
        assert!(hint.contains("temporary folder"), "{hint}");
        assert!(hint.contains("--mount DIR"), "{hint}");
        for path in ["/usr/local/lib/python3.15/os.py", "/mnt/data/ro.csv"] {
            assert_eq!(mount_hint(&denied(path), None), None, "{path}");
        }
    }

    #[test]
    fn continuation_follows_blocks_brackets_and_quotes() {
        for (source, more) in [
            ("x = 1", false),
            ("for i in range(3):", true),
            ("for i in range(3):\n    print(i)", true),
            ("for i in range(3):\n    print(i)\n", false),
            ("x = [1,\n 2", true),
            ("x = [1,\n 2]", false),
            ("s = \"\"\"abc", true),
            ("s = '(' # (", false),
            ("while True: x = 0", true),
            ("while True: x = 0\n", false),
            ("@functools.cache", true),
            ("iffy = 3", false),
            ("print('for:')", false),
        ] {
            assert_eq!(needs_more(source), more, "{source:?}");
        }
    }
}
