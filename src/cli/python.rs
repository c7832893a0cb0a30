//! `ossa python`: run Python inside the WebAssembly sandbox: `-c CODE`, a script file, or an
//! interactive session (a REPL whose state is kept across entries, as the model's tool is).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ossa_sandbox::{
    CallLimits, Program, ProgramOptions, ResetReason, RunOutput, Sandbox, SandboxConfig,
    SessionOptions, SessionState, Status,
};

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
        (None, None) => return repl(&sandbox, args.mount, &limits),
    };
    let options = ProgramOptions {
        args: program_args,
        mount: args.mount,
        limits: Some(limits),
        live: true,
    };
    let out = sandbox.run_program(&program, &options)?;
    if let Some(stop) = out.stop() {
        eprintln!("ossa: {stop}");
    }
    Ok(exit_code(&out.status))
}

fn exit_code(status: &Status) -> ExitCode {
    ExitCode::from(u8::try_from(status.exit_code() & 0xff).unwrap_or(1))
}

/// A line-based REPL on one session: entries are cells, so state carries over and a final
/// expression is echoed.
fn repl(
    sandbox: &Sandbox,
    mount: Option<PathBuf>,
    limits: &CallLimits,
) -> anyhow::Result<ExitCode> {
    let session = sandbox.session(SessionOptions {
        mount,
        limits: None,
    })?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        let runtime = sandbox.runtime();
        println!(
            "Python {} in ossa's WebAssembly sandbox; /mnt/data is {}. Ctrl-D to quit.",
            runtime.python_version,
            session.mount().display()
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut cell = String::new();
    loop {
        if interactive {
            print!("{}", if cell.is_empty() { ">>> " } else { "... " });
            std::io::stdout().flush()?;
        }
        let (line, eof) = match lines.next() {
            Some(line) => (line?, false),
            None if cell.trim().is_empty() => break,
            // End of input runs what is left of an open entry.
            None => (String::new(), true),
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
        let out = session.run_blocking(&cell, limits)?;
        cell.clear();
        show(&out);
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

fn show(out: &RunOutput) {
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
    if let Some(stop) = out.stop() {
        eprintln!("[ossa: {stop}]");
    }
    if let (SessionState::Reset(reason), false) =
        (&out.session, matches!(out.status, Status::Exit(_)))
    {
        eprintln!(
            "[ossa: the interpreter was reset ({reason}); variables were lost, files in /mnt/data are kept]"
        );
    }
}

/// Whether an entry continues on the next line: an open block (a line ending in `:` or `\`),
/// unclosed brackets or triple quotes, or a block that has not been ended by an empty line.
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
    // Inside a block (the entry has several lines) only an empty line ends it.
    let opens_block = cell.lines().any(|line| line.trim_end().ends_with(':'));
    cell.contains('\n') && opens_block && !last.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::needs_more;

    #[test]
    fn continuation_follows_blocks_brackets_and_quotes() {
        assert!(!needs_more("x = 1"));
        assert!(needs_more("for i in range(3):"));
        assert!(needs_more("for i in range(3):\n    print(i)"));
        assert!(!needs_more("for i in range(3):\n    print(i)\n"));
        assert!(needs_more("x = [1,\n 2"));
        assert!(!needs_more("x = [1,\n 2]"));
        assert!(needs_more("s = \"\"\"abc"));
        assert!(!needs_more("s = '(' # ("));
    }
}
