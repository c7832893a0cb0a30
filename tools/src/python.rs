//! The built-in `python` tool: each conversation gets a notebook-like interpreter in the
//! WebAssembly sandbox ([`ossa_sandbox`]), and each call is one cell.
//!
//! What the model reads follows OpenAI's reference tool on its stateful Jupyter backend
//! (`gpt_oss/tools/python_docker/docker_tool.py`, `LocalJupyterSession.execute`), the behaviour
//! the `python` namespace text promises:
//!
//! - stdout, then the `repr` of the cell's final expression when it has a value (Jupyter's
//!   `execute_result`), ending in `\n`;
//! - when stderr (warnings, tracebacks) is not empty: that text with trailing whitespace removed,
//!   `\n`, then stderr;
//! - when all of it is blank: `[WARN] No output available. Use print() to output anything to
//!   stdout to receive the output`.
//!
//! Beyond the reference, which loses a cell's output when its kernel times out: when a limit
//! stops the code, what it printed stays and an `[ERROR] ...` line names the limit; a
//! `[NOTE] ...` line says when the interpreter's state was lost (a stop, `exit()`, a restart the
//! model cannot know about), so the model does not reach for variables that are gone.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use ossa_sandbox::{
    ResetReason, RunOutput, Sandbox, SandboxError, Session, SessionOptions, SessionState, Status,
    Stop,
};

use crate::spec::ToolNamespaceConfig;
use crate::tool::{Placement, Tool, ToolCall, ToolOutput, ToolSession};

/// The tool's name, its namespace and the author of its messages.
pub const NAME: &str = "python";

/// The reference's text for a cell that showed nothing.
pub const NO_OUTPUT_WARNING: &str =
    "[WARN] No output available. Use print() to output anything to stdout to receive the output";

/// What is lost, and what is kept, when an interpreter is replaced.
const STATE_LOST: &str = "variables and imports are gone; files in /mnt/data are kept.";

/// The `python` tool: a sandbox shared by every conversation and the options of their sessions.
///
/// The namespace text is OpenAI's verbatim (it promises a 120 s timeout, the sandbox's default
/// deadline); set other limits in [`SessionOptions::limits`] knowing the model is not told.
#[derive(Clone, Debug)]
pub struct PythonTool {
    sandbox: Sandbox,
    options: SessionOptions,
}

impl PythonTool {
    /// Each conversation gets a session of `sandbox` opened with `options` (`mount: None` gives
    /// every conversation its own private `/mnt/data`, removed when the conversation ends).
    pub fn new(sandbox: Sandbox, options: SessionOptions) -> Self {
        Self { sandbox, options }
    }

    /// A new conversation's interpreter (started on its first call).
    pub fn session(&self) -> PythonSession {
        PythonSession {
            sandbox: self.sandbox.clone(),
            options: self.options.clone(),
            session: None,
        }
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Tool for PythonTool {
    fn name(&self) -> &str {
        NAME
    }

    fn namespace(&self) -> ToolNamespaceConfig {
        ToolNamespaceConfig::python()
    }

    fn placement(&self) -> Placement {
        Placement::System
    }

    fn open_session(&self) -> Box<dyn ToolSession> {
        Box::new(self.session())
    }
}

/// One conversation's interpreter. The sandbox session is opened on the first call, so a
/// conversation that never runs Python costs nothing.
#[derive(Debug)]
pub struct PythonSession {
    sandbox: Sandbox,
    options: SessionOptions,
    session: Option<Session>,
}

impl PythonSession {
    /// Runs `code` as the next cell. `Err` only when the code could not run at all (the
    /// sandbox failed); what the code did, limits included, is in the [`RunOutput`].
    ///
    /// Dropping the future (an agent interrupted with Ctrl-C) stops the code: the sandbox's
    /// `run` sets the call's cancel flag when its future is dropped, so the interpreter thread
    /// does not run on; the next call then starts a fresh interpreter and says so.
    pub async fn run(&mut self, code: &str) -> Result<RunOutput, SandboxError> {
        let session = match &mut self.session {
            Some(session) => session,
            empty => empty.insert(self.sandbox.session(self.options.clone())?),
        };
        session.run(code).await
    }

    /// The host folder the code sees at `/mnt/data`, once the first call has opened it.
    pub fn mount(&self) -> Option<&Path> {
        self.session.as_ref().map(Session::mount)
    }
}

#[async_trait]
impl ToolSession for PythonSession {
    async fn call(&mut self, call: &ToolCall) -> Vec<ToolOutput> {
        let output = match self.run(&call.content).await {
            Ok(out) => {
                tracing::debug!(
                    status = ?out.status,
                    elapsed_ms = out.elapsed.as_millis() as u64,
                    files = out.files.len(),
                    "python call"
                );
                if out.files_omitted > 0 {
                    tracing::warn!(
                        omitted = out.files_omitted,
                        "python call wrote more files than are listed"
                    );
                }
                ToolOutput {
                    files: out.files.iter().map(|f| f.host_path.clone()).collect(),
                    ..ToolOutput::text(call, NAME, model_output(&out))
                }
            }
            Err(error) => {
                tracing::warn!(%error, "python call could not run");
                ToolOutput::text(call, NAME, unavailable_message(&error))
            }
        };
        vec![output]
    }
}

/// What the model reads when the sandbox itself failed (no runtime, no thread, ...).
pub fn unavailable_message(error: &SandboxError) -> String {
    format!("[ERROR] The Python tool could not run the code: {error}")
}

/// The text the model reads for one run (see the module documentation).
pub fn model_output(out: &RunOutput) -> String {
    let mut shown = out.stdout.clone();
    if let Some(value) = out.value.as_deref().filter(|v| !v.is_empty()) {
        shown.push_str(value);
        if !value.ends_with('\n') {
            shown.push('\n');
        }
    }
    let mut text = if out.stderr.is_empty() {
        shown
    } else if shown.is_empty() {
        out.stderr.clone()
    } else {
        format!("{}\n{}", py_rstrip(&shown), out.stderr)
    };

    let restarted = matches!(out.session, SessionState::Reset(_));
    match &out.status {
        Status::Stopped(stop) => append_line(&mut text, &format!("[ERROR] {}", describe(stop))),
        Status::Exit(code) if restarted => append_line(
            &mut text,
            &format!(
                "[NOTE] The code exited the interpreter (status {code}), so it was restarted: {STATE_LOST}"
            ),
        ),
        Status::Exit(code) => append_line(
            &mut text,
            &format!("[NOTE] The code exited the interpreter (status {code})."),
        ),
        Status::Ok | Status::Error => {
            if is_blank(&text) {
                text = NO_OUTPUT_WARNING.to_string();
            }
        }
    }
    if restarted && !matches!(out.status, Status::Exit(_)) {
        append_line(
            &mut text,
            &format!("[NOTE] The Python interpreter was restarted: {STATE_LOST}"),
        );
    }
    if let Some(reason) = out.started_fresh.as_ref().filter(|r| unannounced(r)) {
        text = format!(
            "[NOTE] This code ran in a fresh Python interpreter ({}): {STATE_LOST}\n{text}",
            reason_text(reason)
        );
    }
    text
}

/// Whether the model has not been told of this restart: a stop or an exit was reported in the
/// output of the call that caused it, but a cancelled call's output never reached the model
/// and idle or age limits act between calls.
fn unannounced(reason: &ResetReason) -> bool {
    match reason {
        ResetReason::Stopped(Stop::Cancelled) => true,
        ResetReason::Stopped(_) | ResetReason::Exited(_) => false,
        ResetReason::IdleTimeout(_)
        | ResetReason::Lifetime(_)
        | ResetReason::Requested
        | ResetReason::Evicted(_) => true,
    }
}

fn reason_text(reason: &ResetReason) -> String {
    match reason {
        ResetReason::Stopped(Stop::Cancelled) => "the previous call was cancelled".into(),
        ResetReason::IdleTimeout(idle) => {
            format!("the previous one was unused for {}", duration(*idle))
        }
        ResetReason::Lifetime(lifetime) => {
            format!(
                "the previous one reached its {} lifetime",
                duration(*lifetime)
            )
        }
        ResetReason::Requested => "the previous one was reset".into(),
        ResetReason::Evicted(idle) => format!(
            "the previous one, unused for {}, was ended to make room for another conversation",
            duration(*idle)
        ),
        other => other.to_string(),
    }
}

/// A limit that stopped the code, in plain words.
fn describe(stop: &Stop) -> String {
    match stop {
        Stop::Deadline(limit) => format!("Execution timed out after {}", duration(*limit)),
        Stop::Memory(limit) => format!(
            "Execution stopped: the code needed more than the {} MiB memory limit",
            limit >> 20
        ),
        Stop::MemoryBudget(budget) => format!(
            "Execution stopped: the code needed more memory while the Python sandbox's {} MiB, \
             shared by all conversations, was in use",
            budget >> 20
        ),
        Stop::Fuel(limit) => format!(
            "Execution stopped: the code used up its compute budget ({limit} units of fuel)"
        ),
        Stop::Stack => {
            "Execution stopped: the interpreter's stack overflowed (recursion too deep)".into()
        }
        Stop::Cancelled => "Execution was cancelled".into(),
        Stop::Crashed(message) => format!("The Python interpreter crashed: {message}"),
    }
}

/// `120 s`, `1.5 s`, `300 ms`, `30 min`, `12 h`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_nanos() != 0 {
        format!("{secs:.1} s")
    } else if secs >= 3600.0 && d.as_secs().is_multiple_of(3600) {
        format!("{} h", d.as_secs() / 3600)
    } else if secs > 120.0 && d.as_secs().is_multiple_of(60) {
        format!("{} min", d.as_secs() / 60)
    } else {
        format!("{} s", d.as_secs())
    }
}

/// `line` on a line of its own after `text` (whose trailing whitespace goes, as the reference
/// does before its error line), or alone when `text` is blank.
fn append_line(text: &mut String, line: &str) {
    *text = if is_blank(text) {
        line.to_string()
    } else {
        format!("{}\n{line}", py_rstrip(text))
    };
}

/// Python's `str.isspace` for one character: Unicode White_Space plus the four ASCII
/// information separators.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.rstrip()`.
fn py_rstrip(text: &str) -> &str {
    text.trim_end_matches(py_space)
}

/// Python's `not text.strip()`.
fn is_blank(text: &str) -> bool {
    text.chars().all(py_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, value: Option<&str>, stderr: &str, status: Status) -> RunOutput {
        RunOutput {
            stdout: stdout.into(),
            stderr: stderr.into(),
            value: value.map(str::to_string),
            status,
            truncated: Vec::new(),
            files: Vec::new(),
            files_omitted: 0,
            session: SessionState::Kept,
            started_fresh: None,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn stdout_then_value_then_stderr_after_a_stripped_newline() {
        let out = output("a\n\n", Some("3"), "Warning: x\n", Status::Ok);
        assert_eq!(model_output(&out), "a\n\n3\nWarning: x\n");
        let out = output("a  \n\n", None, "Traceback\n", Status::Error);
        assert_eq!(model_output(&out), "a\nTraceback\n");
        let out = output("", None, "Traceback\n", Status::Error);
        assert_eq!(model_output(&out), "Traceback\n");
        let out = output("", Some("'x\\n'"), "", Status::Ok);
        assert_eq!(model_output(&out), "'x\\n'\n");
    }

    #[test]
    fn blank_output_is_the_reference_warning() {
        for stdout in ["", " \n\t", "\u{1f}\u{a0}"] {
            let out = output(stdout, Some(""), "", Status::Ok);
            assert_eq!(
                model_output(&out),
                "[WARN] No output available. Use print() to output anything to stdout to receive the output"
            );
        }
    }

    #[test]
    fn python_whitespace_is_stripped_like_rstrip() {
        assert_eq!(py_rstrip("x\u{1c}\u{3000} \n"), "x");
        assert_eq!(py_rstrip("x\u{200b}"), "x\u{200b}");
    }

    #[test]
    fn stops_keep_the_output_and_name_the_limit() {
        let mut out = output(
            "started\n",
            None,
            "",
            Status::Stopped(Stop::Deadline(Duration::from_secs(120))),
        );
        out.session = SessionState::Reset(ResetReason::Stopped(Stop::Deadline(
            Duration::from_secs(120),
        )));
        assert_eq!(
            model_output(&out),
            "started\n[ERROR] Execution timed out after 120 s\n[NOTE] The Python interpreter was \
             restarted: variables and imports are gone; files in /mnt/data are kept."
        );
        let stops = [
            (
                "MemoryError\n",
                Stop::Memory(512 << 20),
                "MemoryError\n[ERROR] Execution stopped: the code needed more than the 512 MiB \
                 memory limit",
            ),
            (
                "MemoryError\n",
                Stop::MemoryBudget(8 << 30),
                "MemoryError\n[ERROR] Execution stopped: the code needed more memory while the \
                 Python sandbox's 8192 MiB, shared by all conversations, was in use",
            ),
            ("", Stop::Cancelled, "[ERROR] Execution was cancelled"),
        ];
        for (stderr, stop, expected) in stops {
            let out = output("", None, stderr, Status::Stopped(stop.clone()));
            assert_eq!(model_output(&out), expected, "{stop:?}");
        }
    }

    #[test]
    fn a_sandbox_at_capacity_is_a_tool_error_the_model_can_act_on() {
        let error = SandboxError::AtCapacity {
            what: "all 16 Python interpreters it may run at once are in use".into(),
            waited: Duration::from_secs(10),
        };
        let text = unavailable_message(&error);
        assert!(text.starts_with("[ERROR] "), "{text}");
        assert!(text.contains("all 16 Python interpreters"), "{text}");
        assert!(text.contains("Try again"), "{text}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_secs(120)), "120 s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(duration(Duration::from_millis(300)), "300 ms");
        assert_eq!(duration(Duration::from_secs(1800)), "30 min");
        assert_eq!(duration(Duration::from_secs(12 * 3600)), "12 h");
    }

    #[test]
    fn restarts_between_calls_are_announced_once() {
        let mut out = output("1\n", None, "", Status::Ok);
        out.started_fresh = Some(ResetReason::IdleTimeout(Duration::from_secs(1800)));
        assert_eq!(
            model_output(&out),
            "[NOTE] This code ran in a fresh Python interpreter (the previous one was unused for \
             30 min): variables and imports are gone; files in /mnt/data are kept.\n1\n"
        );
        out.started_fresh = Some(ResetReason::Evicted(Duration::from_secs(90)));
        assert_eq!(
            model_output(&out),
            "[NOTE] This code ran in a fresh Python interpreter (the previous one, unused for \
             90 s, was ended to make room for another conversation): variables and imports are \
             gone; files in /mnt/data are kept.\n1\n"
        );
        out.started_fresh = Some(ResetReason::Stopped(Stop::Deadline(Duration::from_secs(
            120,
        ))));
        assert_eq!(model_output(&out), "1\n");
    }

    #[test]
    fn exit_is_reported_with_the_reset() {
        let mut out = output("bye\n", None, "", Status::Exit(3));
        out.session = SessionState::Reset(ResetReason::Exited(3));
        assert_eq!(
            model_output(&out),
            "bye\n[NOTE] The code exited the interpreter (status 3), so it was restarted: \
             variables and imports are gone; files in /mnt/data are kept."
        );
    }
}
